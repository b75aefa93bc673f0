/* SGD with momentum, weight decay and optional Nesterov, matching torch.optim.SGD. */
#include <stdlib.h>
#include <string.h>

#include "nnzip/train.h"

nz_status nz_sgd_init(nz_sgd *opt, size_t n_params, float momentum, float weight_decay,
                      int nesterov, nz_error *err) {
    memset(opt, 0, sizeof *opt);
    opt->momentum = momentum;
    opt->weight_decay = weight_decay;
    opt->nesterov = nesterov;
    opt->n = n_params;
    opt->velocity = calloc(n_params ? n_params : 1, sizeof(float));
    if (!opt->velocity) return nz_fail(err, NZ_ERR_NOMEM, "out of memory for the optimizer");
    return NZ_OK;
}

void nz_sgd_free(nz_sgd *opt) {
    free(opt->velocity);
    opt->velocity = NULL;
}

void nz_sgd_step(nz_sgd *opt, float *params, const float *grads, float lr) {
    const float mu = opt->momentum, wd = opt->weight_decay;
    float *v = opt->velocity;
    const size_t n = opt->n;
    if (opt->nesterov) {
#pragma omp parallel for simd schedule(static) if (n > 262144)
        for (size_t i = 0; i < n; i++) {
            float g = grads[i] + wd * params[i];
            v[i] = mu * v[i] + g;
            params[i] -= lr * (g + mu * v[i]);
        }
    } else {
#pragma omp parallel for simd schedule(static) if (n > 262144)
        for (size_t i = 0; i < n; i++) {
            float g = grads[i] + wd * params[i];
            v[i] = mu * v[i] + g;
            params[i] -= lr * v[i];
        }
    }
}
