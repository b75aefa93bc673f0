/* Inference speed of saved models against each other, in one run: e.g. a slimmed model against
 * the model it came from. Each file is loaded and run with nz_infer on the same random inputs
 * (batch 1 and batch B), alternating between the files over 5 rounds; the median time is kept.
 * Prints images/s, multiply-adds per image and, for every file after the first, the speed-up
 * and the MAC ratio against the first: a smaller dense model should track its MAC ratio.
 * Usage: bench_models [--batch B] [--threads T] FILE.nnz FILE.nnz [...] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "nnzip/format.h"
#include "nnzip/model.h"

#define MAX_FILES 8
#define ROUNDS 5

typedef struct {
    const char *path;
    nz_model m;
    nz_ws *ws;
    float *x;
    double t[2][ROUNDS]; /* [batch 1, batch B][round] seconds per image */
} entry;

/* seconds per image of nz_infer at batch b, over >= 50 ms */
static double time_infer(entry *e, int b) {
    int reps = 1;
    double dt;
    for (;;) {
        double t0 = nz_now_s();
        for (int i = 0; i < reps; i++) nz_infer(&e->m, e->ws, e->x, b);
        dt = nz_now_s() - t0;
        if (dt > 0.05 || reps > (1 << 22)) break;
        reps *= 2;
    }
    return dt / ((double)reps * b);
}

static double median(double *v, int n) {
    for (int a = 0; a < n; a++)
        for (int c = a + 1; c < n; c++)
            if (v[c] < v[a]) {
                double t = v[a];
                v[a] = v[c];
                v[c] = t;
            }
    return v[n / 2];
}

int main(int argc, char **argv) {
    int B = 64, threads = 2, n = 0;
    entry *e = calloc(MAX_FILES, sizeof *e);
    if (!e) return 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) B = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (n < MAX_FILES) e[n++].path = argv[i];
        else {
            fprintf(stderr, "bench_models: at most %d files\n", MAX_FILES);
            return 2;
        }
    }
    if (n < 1 || B < 1 || threads < 1) {
        fprintf(stderr, "usage: bench_models [--batch B] [--threads T] FILE.nnz [FILE.nnz ...]\n");
        return 2;
    }
    nz_set_threads(threads);
    nz_rng r;
    nz_rng_seed(&r, 1);
    for (int k = 0; k < n; k++) {
        nz_error err;
        if (nz_load(e[k].path, &e[k].m, NULL, &err)) {
            fprintf(stderr, "bench_models: %s\n", err.msg);
            return 1;
        }
        if (k > 0 && nz_shape_size(e[k].m.in) != nz_shape_size(e[0].m.in)) {
            fprintf(stderr, "bench_models: %s: input differs from %s\n", e[k].path, e[0].path);
            return 1;
        }
        const size_t nx = nz_shape_size(e[k].m.in) * (size_t)B;
        e[k].x = malloc(sizeof(float) * nx);
        e[k].ws = nz_ws_new(&e[k].m, B, &err);
        if (!e[k].x || !e[k].ws) {
            fprintf(stderr, "bench_models: %s: out of memory\n", e[k].path);
            return 1;
        }
        nz_rng_seed(&r, 1); /* the same inputs for every file */
        for (size_t i = 0; i < nx; i++) e[k].x[i] = nz_rng_range(&r, -1.0f, 1.0f);
        nz_infer(&e[k].m, e[k].ws, e[k].x, B); /* warm-up */
    }
    for (int round = 0; round < ROUNDS; round++)
        for (int k = 0; k < n; k++) {
            e[k].t[0][round] = time_infer(&e[k], 1);
            e[k].t[1][round] = time_infer(&e[k], B);
        }
    printf("# bench_models, %d threads, batch 1 and %d, median of %d alternating rounds\n", threads,
           B, ROUNDS);
    printf("%-48s %10s %12s %12s %9s %9s %9s\n", "file", "params", "MACs/img", "img/s b1",
           "img/s bB", "speedup", "MACratio");
    double base1 = 0, baseB = 0, basem = 0;
    for (int k = 0; k < n; k++) {
        double s1 = 1.0 / median(e[k].t[0], ROUNDS), sB = 1.0 / median(e[k].t[1], ROUNDS);
        double macs = (double)nz_model_flops(&e[k].m);
        if (k == 0) base1 = s1, baseB = sB, basem = macs;
        printf("%-48s %10zu %12.0f %12.0f %9.0f %4.2f/%4.2f %9.2f\n", e[k].path, e[k].m.n_params,
               macs, s1, sB, s1 / base1, sB / baseB, basem / macs);
        printf("{\"file\": \"%s\", \"threads\": %d, \"batch\": %d, \"params\": %zu, \"macs\": %.0f, "
               "\"images_per_s_b1\": %.1f, \"images_per_s_batch\": %.1f}\n",
               e[k].path, threads, B, e[k].m.n_params, macs, s1, sB);
    }
    for (int k = 0; k < n; k++) {
        nz_ws_free(e[k].ws);
        free(e[k].x);
        nz_model_free(&e[k].m);
    }
    free(e);
    return 0;
}
