/* Helpers the compression passes share: sorting magnitudes and values (thresholds, k-means), and
 * a training hook that holds removed weights at zero through retraining. */
#include <stdlib.h>

#include "compress/mask.h"

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void nz_sort_floats(float *v, size_t n) {
    if (n > 1) qsort(v, n, sizeof(float), cmp_float);
}

int nz_mask_hold_step(nz_model *m, void *user) {
    nz_mask_hold *h = user;
    const unsigned char *mask = h->mask;
    float *p = m->params;
#pragma omp parallel for simd schedule(static) if (m->n_params > 262144)
    for (size_t i = 0; i < m->n_params; i++)
        if (!mask[i]) p[i] = 0.0f;
    if (h->outer && h->outer->after_step) return h->outer->after_step(m, h->outer->hook_user);
    return 0;
}

nz_train_hooks nz_mask_hold_hooks(nz_mask_hold *h) {
    nz_train_hooks th = {0};
    if (h->outer) th = *h->outer;
    th.after_step = nz_mask_hold_step;
    th.hook_user = h;
    return th;
}
