/* The training loop: shuffled minibatches, SGD, LR schedule, per-epoch evaluation, hooks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "nnzip/train.h"

void nz_train_cfg_default(nz_train_cfg *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->epochs = 10;
    cfg->batch = 64;
    cfg->lr = 0.1f;
    cfg->momentum = 0.9f;
    cfg->weight_decay = 5e-4f;
    cfg->sched = NZ_SCHED_COSINE;
    cfg->step_epochs = 10;
    cfg->step_gamma = 0.1f;
    cfg->seed = 1;
    cfg->eval_every = 1;
}

float nz_train_lr(const nz_train_cfg *cfg, double pos) {
    double lr = cfg->lr;
    if (cfg->warmup_epochs > 0 && pos < cfg->warmup_epochs) return (float)(lr * (pos + 1e-3) / cfg->warmup_epochs);
    switch (cfg->sched) {
    case NZ_SCHED_STEP:
        if (cfg->step_epochs > 0) lr *= pow(cfg->step_gamma, floor(pos / cfg->step_epochs));
        break;
    case NZ_SCHED_COSINE: {
        double span = cfg->epochs - cfg->warmup_epochs;
        double t = span > 0 ? (pos - cfg->warmup_epochs) / span : 1.0;
        if (t > 1) t = 1;
        lr *= 0.5 * (1.0 + cos(3.14159265358979323846 * t));
        break;
    }
    case NZ_SCHED_CONST:
    default:
        break;
    }
    return (float)lr;
}

nz_status nz_evaluate(const nz_model *m, const nz_dataset *ds, int batch, nz_eval_result *res,
                      nz_error *err) {
    memset(res, 0, sizeof *res);
    if (ds->shape.c != m->in.c || ds->shape.h != m->in.h || ds->shape.w != m->in.w)
        return nz_fail(err, NZ_ERR_SHAPE, "%s: images are %dx%dx%d, the model takes %dx%dx%d",
                       ds->name, ds->shape.c, ds->shape.h, ds->shape.w, m->in.c, m->in.h, m->in.w);
    if (batch <= 0) batch = 256;
    double t0 = nz_now_s();
    nz_ws *ws = nz_ws_new(m, batch, err);
    float *x = malloc(sizeof(float) * nz_shape_size(m->in) * (size_t)batch);
    uint8_t *y = malloc((size_t)batch);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)batch);
    if (!ws || !x || !y || !idx) {
        nz_ws_free(ws);
        free(x);
        free(y);
        free(idx);
        return ws ? nz_fail(err, NZ_ERR_NOMEM, "out of memory") : err->code;
    }
    double loss = 0;
    long correct = 0;
    for (int start = 0; start < ds->n; start += batch) {
        int B = ds->n - start < batch ? ds->n - start : batch;
        for (int b = 0; b < B; b++) idx[b] = start + b;
        nz_batch_fill(ds, &m->pre, idx, B, x, y);
        const float *logits = nz_forward(m, ws, x, B, 0, NULL);
        int c;
        loss += (double)nz_softmax_xent(logits, y, B, m->n_classes, NULL, &c) * B;
        correct += c;
    }
    res->n = ds->n;
    res->correct = (int)correct;
    res->loss = ds->n ? (float)(loss / ds->n) : 0.0f;
    res->error = ds->n ? (float)(100.0 * (double)(ds->n - correct) / ds->n) : 0.0f;
    res->seconds = nz_now_s() - t0;
    nz_ws_free(ws);
    free(x);
    free(y);
    free(idx);
    return NZ_OK;
}

nz_status nz_train(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                   const nz_train_cfg *cfg, const nz_train_hooks *hooks, nz_train_result *res,
                   nz_error *err) {
    nz_train_hooks none;
    memset(&none, 0, sizeof none);
    if (!hooks) hooks = &none;
    memset(res, 0, sizeof *res);
    res->test_err = -1;
    if (train->shape.c != m->in.c || train->shape.h != m->in.h || train->shape.w != m->in.w)
        return nz_fail(err, NZ_ERR_SHAPE, "%s: images are %dx%dx%d, the model takes %dx%dx%d",
                       train->name, train->shape.c, train->shape.h, train->shape.w, m->in.c,
                       m->in.h, m->in.w);
    if (train->n_classes > m->n_classes)
        return nz_fail(err, NZ_ERR_SHAPE, "%s: %d classes, the model has %d", train->name,
                       train->n_classes, m->n_classes);
    if (cfg->batch <= 0 || cfg->epochs < 0 || !(cfg->lr >= 0))
        return nz_fail(err, NZ_ERR_ARG, "bad training settings (batch %d, epochs %d)", cfg->batch,
                       cfg->epochs);
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_params; k++)
            if (m->nodes[i].params[k].sparse)
                return nz_fail(err, NZ_ERR_ARG,
                               "layer '%s' is stored sparse: expand it (nz_model_densify) to train",
                               m->nodes[i].name);
    const int batch = cfg->batch;
    nz_status st = NZ_OK;
    nz_sgd opt;
    memset(&opt, 0, sizeof opt);
    nz_ws *ws = nz_ws_new(m, batch, err);
    float *x = malloc(sizeof(float) * nz_shape_size(m->in) * (size_t)batch);
    float *dlogits = malloc(sizeof(float) * (size_t)m->n_classes * (size_t)batch);
    uint8_t *y = malloc((size_t)batch);
    int32_t *order = malloc(sizeof(int32_t) * (size_t)(train->n ? train->n : 1));
    if (!ws) {
        st = err->code;
        goto done;
    }
    if (!x || !dlogits || !y || !order) {
        st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = nz_sgd_init(&opt, m->n_params, cfg->momentum, cfg->weight_decay, cfg->nesterov,
                          err)))
        goto done;
    /* two streams: data order and dropout, so changing one does not shift the other */
    nz_rng shuffle_rng, drop_rng;
    nz_rng_seed(&shuffle_rng, cfg->seed);
    nz_rng_seed(&drop_rng, cfg->seed ^ 0x5DEECE66Dull);
    for (int i = 0; i < train->n; i++) order[i] = i;
    const long steps = (train->n + batch - 1) / batch;
    const double t0 = nz_now_s();
    long images = 0;
    for (int epoch = 0; epoch < cfg->epochs; epoch++) {
        nz_rng_shuffle(&shuffle_rng, order, (size_t)train->n);
        double loss_sum = 0;
        long seen = 0, correct = 0;
        nz_progress pr;
        memset(&pr, 0, sizeof pr);
        pr.epoch = epoch + 1;
        pr.epochs = cfg->epochs;
        pr.steps = steps;
        pr.test_err = -1;
        for (long s = 0; s < steps; s++) {
            int start = (int)(s * batch);
            int B = train->n - start < batch ? train->n - start : batch;
            float lr = nz_train_lr(cfg, epoch + (double)s / steps);
            nz_batch_fill(train, &m->pre, order + start, B, x, y);
            nz_ws_zero_grads(ws);
            const float *logits = nz_forward(m, ws, x, B, 1, &drop_rng);
            int c;
            float loss = nz_softmax_xent(logits, y, B, m->n_classes, dlogits, &c);
            if (!isfinite(loss)) {
                st = nz_fail(err, NZ_ERR_ARG,
                             "training diverged (loss %g at epoch %d step %ld); lower --lr",
                             (double)loss, epoch + 1, s + 1);
                goto done;
            }
            nz_backward(m, ws, dlogits, B);
            if (hooks->lr_out) *hooks->lr_out = lr;
            if (hooks->before_step && hooks->before_step(m, nz_ws_grads(ws), hooks->hook_user)) {
                st = nz_fail(err, NZ_ERR_INTERRUPTED, "stopped by a training hook");
                goto done;
            }
            nz_sgd_step(&opt, m->params, nz_ws_grads(ws), lr);
            if (hooks->after_step && hooks->after_step(m, hooks->hook_user)) {
                st = nz_fail(err, NZ_ERR_INTERRUPTED, "stopped by a training hook");
                goto done;
            }
            loss_sum += (double)loss * B;
            seen += B;
            correct += c;
            images += B;
            if (hooks->progress) {
                pr.step = s + 1;
                pr.loss = (float)(loss_sum / seen);
                pr.train_err = (float)(100.0 * (double)(seen - correct) / seen);
                pr.lr = lr;
                pr.elapsed = nz_now_s() - t0;
                pr.images_per_s = images / (pr.elapsed > 0 ? pr.elapsed : 1e-9);
                hooks->progress(&pr, hooks->progress_user);
            }
            if (hooks->stop && *hooks->stop) {
                st = nz_fail(err, NZ_ERR_INTERRUPTED, "interrupted");
                goto done;
            }
        }
        res->final_loss = seen ? (float)(loss_sum / seen) : 0.0f;
        res->train_err = seen ? (float)(100.0 * (double)(seen - correct) / seen) : 0.0f;
        res->epochs_done = epoch + 1;
        int last = epoch + 1 == cfg->epochs;
        if (test && (last || (cfg->eval_every > 0 && (epoch + 1) % cfg->eval_every == 0))) {
            nz_eval_result ev;
            if ((st = nz_evaluate(m, test, 256, &ev, err))) goto done;
            res->test_err = ev.error;
            pr.test_err = ev.error;
        }
        if (hooks->progress) {
            pr.step = steps;
            pr.loss = res->final_loss;
            pr.train_err = res->train_err;
            pr.elapsed = nz_now_s() - t0;
            pr.images_per_s = images / (pr.elapsed > 0 ? pr.elapsed : 1e-9);
            pr.epoch_done = 1;
            hooks->progress(&pr, hooks->progress_user);
        }
    }
    res->seconds = nz_now_s() - t0;
    res->images_per_s = images / (res->seconds > 0 ? res->seconds : 1e-9);
done:
    nz_sgd_free(&opt);
    nz_ws_free(ws);
    free(x);
    free(dlogits);
    free(y);
    free(order);
    return st;
}
