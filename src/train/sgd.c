/* SGD with momentum, weight decay and optional Nesterov, matching torch.optim.SGD, over the
 * trainable spans of the parameter array. */
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

nz_status nz_sgd_use_model(nz_sgd *opt, const nz_model *m, nz_error *err) {
    if (m->n_params != opt->n)
        return nz_fail(err, NZ_ERR_ARG, "optimizer holds %zu parameters, the model %zu", opt->n,
                       m->n_params);
    int cap = 0;
    for (int i = 0; i < m->n_nodes; i++) cap += m->nodes[i].n_params;
    nz_span *spans = malloc(sizeof(nz_span) * (size_t)(cap ? cap : 1));
    if (!spans) return nz_fail(err, NZ_ERR_NOMEM, "out of memory for the optimizer");
    int n = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const nz_node *nd = &m->nodes[i];
        for (int k = 0; k < nd->n_params; k++) {
            const nz_param *p = &nd->params[k];
            if (p->n == 0 || p->sparse || nz_param_is_buffer(nd, k)) continue;
            if (p->off > opt->n || p->n > opt->n - p->off) {
                free(spans);
                return nz_fail(err, NZ_ERR_ARG, "layer '%s': parameter %d lies outside the array",
                               nd->name, k);
            }
            /* tensors are laid out in node order, so neighbours usually merge */
            if (n > 0 && spans[n - 1].off + spans[n - 1].n == p->off)
                spans[n - 1].n += p->n;
            else
                spans[n++] = (nz_span){p->off, p->n};
        }
    }
    free(opt->spans);
    opt->spans = spans;
    opt->n_spans = n;
    return NZ_OK;
}

void nz_sgd_free(nz_sgd *opt) {
    free(opt->velocity);
    free(opt->spans);
    opt->velocity = NULL;
    opt->spans = NULL;
    opt->n_spans = 0;
}

/* One span; restrict lets the compiler vectorise. The arithmetic is per element, so splitting
 * the array into spans never changes a value. */
static void sgd_range(float *restrict params, const float *restrict grads, float *restrict v,
                      size_t n, float mu, float wd, float lr, int nesterov) {
    if (nesterov) {
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

void nz_sgd_step(nz_sgd *opt, float *params, const float *grads, float lr) {
    const float mu = opt->momentum, wd = opt->weight_decay;
    if (!opt->spans) {
        sgd_range(params, grads, opt->velocity, opt->n, mu, wd, lr, opt->nesterov);
        return;
    }
    for (int s = 0; s < opt->n_spans; s++) {
        const size_t off = opt->spans[s].off;
        sgd_range(params + off, grads + off, opt->velocity + off, opt->spans[s].n, mu, wd, lr,
                  opt->nesterov);
    }
}
