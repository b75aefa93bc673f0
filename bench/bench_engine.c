/* Engine throughput: training steps (forward + backward + SGD) and inference of the zoo models
 * on in-memory inputs, so only compute is timed. bench/engine_vs_torch.sh runs this and the
 * PyTorch script with the same model, batch and threads, and prints the ratio.
 * Usage: bench_engine MODEL BATCH THREADS [train_steps] [infer_images] -> one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "nnzip/model.h"
#include "nnzip/train.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_engine MODEL BATCH THREADS [train_steps] [infer_images]\n");
        return 2;
    }
    const char *name = argv[1];
    int B = atoi(argv[2]), threads = atoi(argv[3]);
    int steps = argc > 4 ? atoi(argv[4]) : 300;
    int infer_n = argc > 5 ? atoi(argv[5]) : 10000;
    nz_set_threads(threads);
    nz_model m;
    nz_error e = {0};
    if (nz_zoo_build(&m, name, (nz_shape){1, 28, 28}, 10, &e)) {
        fprintf(stderr, "bench_engine: %s\n", e.msg);
        return 1;
    }
    nz_rng r;
    nz_rng_seed(&r, 1);
    nz_model_init_params(&m, &r);
    const size_t in = nz_shape_size(m.in);
    float *x = malloc(sizeof(float) * in * (size_t)B);
    float *dl = malloc(sizeof(float) * 10 * (size_t)B);
    uint8_t *y = malloc((size_t)B);
    for (size_t i = 0; i < in * (size_t)B; i++) x[i] = nz_rng_uniform(&r);
    for (int i = 0; i < B; i++) y[i] = (uint8_t)nz_rng_below(&r, 10);
    nz_ws *ws = nz_ws_new(&m, B, &e);
    nz_sgd opt;
    nz_sgd_init(&opt, m.n_params, 0.9f, 5e-4f, 0, &e);
    double t_train = 0;
    for (int pass = 0; pass < 2; pass++) { /* pass 0 warms caches and thread pools */
        int n = pass ? steps : steps / 10 + 1;
        double t0 = now_s();
        for (int s = 0; s < n; s++) {
            nz_ws_zero_grads(ws);
            const float *lg = nz_forward(&m, ws, x, B, 1, &r);
            nz_softmax_xent(lg, y, B, 10, dl, NULL);
            nz_backward(&m, ws, dl, B);
            nz_sgd_step(&opt, m.params, nz_ws_grads(ws), 0.01f);
        }
        t_train = now_s() - t0;
    }
    double train_ips = (double)steps * B / t_train;
    double t_inf = 0;
    for (int pass = 0; pass < 2; pass++) {
        double t0 = now_s();
        for (int done = 0; done < infer_n; done += B) {
            int b = infer_n - done < B ? infer_n - done : B;
            nz_forward(&m, ws, x, b, 0, NULL);
        }
        t_inf = now_s() - t0;
    }
    double infer_ips = infer_n / t_inf;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"impl\": \"nnzip\", \"model\": \"%s\", \"batch\": %d, \"threads\": %d, "
           "\"train_images_per_s\": %.1f, \"infer_images_per_s\": %.1f, \"max_rss_mb\": %.1f}\n",
           name, B, threads, train_ips, infer_ips, ru.ru_maxrss / 1024.0);
    nz_sgd_free(&opt);
    nz_ws_free(ws);
    free(x);
    free(dl);
    free(y);
    nz_model_free(&m);
    return 0;
}
