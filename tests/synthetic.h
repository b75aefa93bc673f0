/* A learnable synthetic dataset for tests that train: class k lights up a k-dependent block
 * of pixels on top of noise, so a few epochs of any zoo model learn it. */
#ifndef NNZIP_TEST_SYNTHETIC_H
#define NNZIP_TEST_SYNTHETIC_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnzip/data.h"
#include "nnzip/rng.h"
#include "nnzip/train.h"

static void make_synthetic(nz_dataset *ds, int n, uint64_t seed) {
    memset(ds, 0, sizeof *ds);
    snprintf(ds->name, sizeof ds->name, "synthetic");
    ds->n = n;
    ds->shape = (nz_shape){1, 28, 28};
    ds->n_classes = 10;
    ds->images = malloc((size_t)n * 784);
    ds->labels = malloc((size_t)n);
    nz_rng r;
    nz_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        int k = (int)nz_rng_below(&r, 10);
        ds->labels[i] = (uint8_t)k;
        uint8_t *im = ds->images + (size_t)i * 784;
        for (int p = 0; p < 784; p++) im[p] = (uint8_t)nz_rng_below(&r, 60);
        int r0 = (k / 5) * 12 + 2, c0 = (k % 5) * 5 + 1;
        for (int y = r0; y < r0 + 10; y++)
            for (int x = c0; x < c0 + 4; x++) im[y * 28 + x] = (uint8_t)(180 + nz_rng_below(&r, 70));
    }
}

/* Mean T^2 KL (T 2) of b's eval-mode outputs from a's on the first n images of ds: how far a
 * student is from its teacher. -1 when out of memory. */
static inline double outputs_kl(const nz_model *a, const nz_model *b, const nz_dataset *ds,
                                int n) {
    nz_error e = {0};
    nz_ws *wa = nz_ws_new(a, n, &e), *wb = nz_ws_new(b, n, &e);
    float *x = malloc(sizeof(float) * nz_shape_size(ds->shape) * (size_t)n);
    uint8_t *y = malloc((size_t)n);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)n);
    double kl = -1;
    if (wa && wb && x && y && idx) {
        for (int i = 0; i < n; i++) idx[i] = i;
        nz_batch_fill(ds, &a->pre, idx, n, x, y);
        const float *la = nz_forward(a, wa, x, n, 0, NULL);
        const float *lb = nz_forward(b, wb, x, n, 0, NULL);
        nz_distill d = {a, 1.0f, 2.0f};
        kl = nz_distill_xent(lb, la, y, n, a->n_classes, 0.0f, &d, NULL, NULL);
    }
    nz_ws_free(wa);
    nz_ws_free(wb);
    free(x);
    free(y);
    free(idx);
    return kl;
}

#endif
