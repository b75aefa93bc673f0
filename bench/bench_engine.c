/* Engine throughput: training steps (forward + backward + SGD) and inference of the zoo models
 * on in-memory inputs, so only compute is timed. bench/engine_vs_torch.sh and
 * bench/convnets_vs_torch.sh run this and bench/torch_engine.py with the same model, input
 * shape, batch and threads, and print the ratios.
 * Usage: bench_engine [--shape CxHxW] MODEL BATCH THREADS [train_steps] [infer_images]
 *   --shape  input shape (default 1x28x28; 3x32x32 for the CIFAR ResNets and VGG-16)
 *   train_steps (default 300) are timed after steps/10 + 1 warm-up steps; infer_images (default
 *   10000) are timed after a warm-up of max(BATCH, infer_images/10) images. -> one JSON line.
 * Inference runs nz_infer, the path `nnzip eval` takes (each conv + batch norm folded into one
 * conv, its relu fused); "plain_infer_images_per_s" is nz_forward in eval mode, node by node. */
#include <cblas.h>
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

static int usage(void) {
    fprintf(stderr, "usage: bench_engine [--shape CxHxW] MODEL BATCH THREADS [train_steps] "
                    "[infer_images]\n");
    return 2;
}

static int parse_shape(const char *s, nz_shape *out) {
    int c, h, w;
    char tail;
    if (sscanf(s, "%dx%dx%d%c", &c, &h, &w, &tail) != 3 || c <= 0 || h <= 0 || w <= 0) return -1;
    *out = (nz_shape){c, h, w};
    return 0;
}

int main(int argc, char **argv) {
    nz_shape shape = {1, 28, 28};
    const char *pos[5];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--shape") == 0) {
            if (++i >= argc) return usage();
            v = argv[i];
        } else if (strncmp(argv[i], "--shape=", 8) == 0) {
            v = argv[i] + 8;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            return usage();
        } else if (npos < 5) {
            pos[npos++] = argv[i];
            continue;
        } else {
            return usage();
        }
        if (parse_shape(v, &shape)) {
            fprintf(stderr, "bench_engine: bad shape '%s' (expected CxHxW, e.g. 3x32x32)\n", v);
            return 2;
        }
    }
    if (npos < 3) return usage();
    const char *name = pos[0];
    int B = atoi(pos[1]), threads = atoi(pos[2]);
    int steps = npos > 3 ? atoi(pos[3]) : 300;
    int infer_n = npos > 4 ? atoi(pos[4]) : 10000;
    if (B <= 0 || steps <= 0 || infer_n <= 0) return usage();
    nz_set_threads(threads);
    nz_model m;
    nz_error e = {0};
    if (nz_zoo_build(&m, name, shape, 10, &e)) {
        fprintf(stderr, "bench_engine: %s\n", e.msg);
        return 1;
    }
    nz_rng r;
    nz_rng_seed(&r, 1);
    nz_model_init_params(&m, &r);
    size_t trainable = 0;
    for (int i = 0; i < m.n_nodes; i++)
        for (int k = 0; k < m.nodes[i].n_params; k++)
            if (!nz_param_is_buffer(&m.nodes[i], k)) trainable += nz_param_numel(&m.nodes[i].params[k]);
    const size_t in = nz_shape_size(m.in);
    float *x = malloc(sizeof(float) * in * (size_t)B);
    float *dl = malloc(sizeof(float) * 10 * (size_t)B);
    uint8_t *y = malloc((size_t)B);
    nz_ws *ws = x && dl && y ? nz_ws_new(&m, B, &e) : NULL;
    if (!ws) {
        fprintf(stderr, "bench_engine: %s\n", x && dl && y ? e.msg : "out of memory");
        return 1;
    }
    for (size_t i = 0; i < in * (size_t)B; i++) x[i] = nz_rng_uniform(&r);
    for (int i = 0; i < B; i++) y[i] = (uint8_t)nz_rng_below(&r, 10);
    nz_sgd opt;
    /* momentum 0.9, weight decay 5e-4 on the trainable tensors only (not batch-norm running
     * statistics), as torch.optim.SGD does in torch_engine.py */
    if (nz_sgd_init(&opt, m.n_params, 0.9f, 5e-4f, 0, &e) || nz_sgd_use_model(&opt, &m, &e)) {
        fprintf(stderr, "bench_engine: %s\n", e.msg);
        return 1;
    }
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
    double ips[2]; /* nz_infer, then nz_forward in eval mode */
    for (int path = 0; path < 2; path++) {
        double t_inf = 0;
        for (int pass = 0; pass < 2; pass++) {
            int n = pass ? infer_n : (infer_n / 10 > B ? infer_n / 10 : B);
            double t0 = now_s();
            for (int done = 0; done < n; done += B) {
                int b = n - done < B ? n - done : B;
                if (path == 0) nz_infer(&m, ws, x, b);
                else nz_forward(&m, ws, x, b, 0, NULL);
            }
            t_inf = now_s() - t0;
        }
        ips[path] = infer_n / t_inf;
    }
    double infer_ips = ips[0];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("{\"impl\": \"nnzip\", \"model\": \"%s\", \"shape\": \"%dx%dx%d\", \"batch\": %d, "
           "\"threads\": %d, \"train_steps\": %d, \"infer_images\": %d, \"params\": %zu, "
           "\"macs_per_image\": %zu, \"train_images_per_s\": %.1f, \"infer_images_per_s\": %.1f, "
           "\"plain_infer_images_per_s\": %.1f, "
           "\"max_rss_mb\": %.1f, \"openblas_coretype\": \"%s\", \"openblas_core\": \"%s\"}\n",
           name, shape.c, shape.h, shape.w, B, threads, steps, infer_n, trainable,
           nz_model_flops(&m), train_ips, infer_ips, ips[1], ru.ru_maxrss / 1024.0,
           ct && *ct ? ct : "auto", openblas_get_corename());
    nz_sgd_free(&opt);
    nz_ws_free(ws);
    free(x);
    free(dl);
    free(y);
    nz_model_free(&m);
    return 0;
}
