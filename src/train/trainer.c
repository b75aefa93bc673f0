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

const char *nz_sched_name(nz_sched s) {
    switch (s) {
    case NZ_SCHED_CONST: return "const";
    case NZ_SCHED_STEP: return "step";
    case NZ_SCHED_COSINE: return "cosine";
    case NZ_SCHED_MULTISTEP: return "multistep";
    default: return "unknown";
    }
}

static int finite_in(float x, float lo, float hi) { return isfinite(x) && x >= lo && x <= hi; }

nz_status nz_train_cfg_check(const nz_train_cfg *c, nz_error *err) {
    if (c->epochs < 0 || c->batch <= 0)
        return nz_fail(err, NZ_ERR_ARG, "bad training settings (batch %d, epochs %d)", c->batch,
                       c->epochs);
    if (!finite_in(c->lr, 0, 1e6f) || !finite_in(c->momentum, 0, 1) ||
        !finite_in(c->weight_decay, 0, 1e6f) || !finite_in(c->step_gamma, 0, 1e6f))
        return nz_fail(err, NZ_ERR_ARG,
                       "bad training settings (lr %g, momentum %g, weight decay %g, gamma %g)",
                       (double)c->lr, (double)c->momentum, (double)c->weight_decay,
                       (double)c->step_gamma);
    if ((unsigned)c->sched >= NZ_SCHED__COUNT)
        return nz_fail(err, NZ_ERR_ARG, "unknown LR schedule %d", (int)c->sched);
    if (c->step_epochs < 0 || c->warmup_epochs < 0 || c->eval_every < 0 ||
        (c->nesterov != 0 && c->nesterov != 1))
        return nz_fail(err, NZ_ERR_ARG,
                       "bad training settings (step epochs %d, warm-up %d, eval every %d, "
                       "nesterov %d)",
                       c->step_epochs, c->warmup_epochs, c->eval_every, c->nesterov);
    if (c->n_milestones < 0 || c->n_milestones > NZ_MAX_MILESTONES)
        return nz_fail(err, NZ_ERR_ARG, "%d LR milestones (at most %d)", c->n_milestones,
                       NZ_MAX_MILESTONES);
    for (int i = 0; i < c->n_milestones; i++)
        if (c->milestones[i] < 1 || (i > 0 && c->milestones[i] <= c->milestones[i - 1]))
            return nz_fail(err, NZ_ERR_ARG,
                           "LR milestones must be increasing epochs >= 1 (milestone %d is %d)",
                           i + 1, c->milestones[i]);
    if (!finite_in(c->label_smoothing, 0, 1) || c->label_smoothing >= 1)
        return nz_fail(err, NZ_ERR_ARG, "label smoothing %g not in [0, 1)",
                       (double)c->label_smoothing);
    if (c->augment.crop_pad < 0 || c->augment.crop_pad > NZ_MAX_CROP_PAD ||
        (c->augment.flip != 0 && c->augment.flip != 1))
        return nz_fail(err, NZ_ERR_ARG, "bad augmentation (crop padding %d, flip %d)",
                       c->augment.crop_pad, c->augment.flip);
    return NZ_OK;
}

float nz_train_lr(const nz_train_cfg *cfg, double pos) {
    double lr = cfg->lr;
    if (cfg->warmup_epochs > 0 && pos < cfg->warmup_epochs) return (float)(lr * (pos + 1e-3) / cfg->warmup_epochs);
    switch (cfg->sched) {
    case NZ_SCHED_STEP:
        if (cfg->step_epochs > 0) lr *= pow(cfg->step_gamma, floor(pos / cfg->step_epochs));
        break;
    case NZ_SCHED_MULTISTEP: {
        /* milestones are whole epochs, so within an epoch the LR is constant, as with
         * MultiStepLR stepped once per epoch */
        int passed = 0;
        for (int i = 0; i < cfg->n_milestones; i++)
            if (pos >= cfg->milestones[i]) passed++;
        lr *= pow(cfg->step_gamma, passed);
        break;
    }
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

void nz_train_state_free(nz_train_state *st) {
    if (!st) return;
    free(st->velocity);
    free(st->order);
    memset(st, 0, sizeof *st);
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
        const float *logits = nz_infer(m, ws, x, B);
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

/* The first setting (besides epochs and eval_every) in which a differs from b, or NULL. */
static const char *cfg_differs(const nz_train_cfg *a, const nz_train_cfg *b) {
    if (a->batch != b->batch) return "batch";
    if (a->lr != b->lr) return "lr";
    if (a->momentum != b->momentum) return "momentum";
    if (a->weight_decay != b->weight_decay) return "weight decay";
    if (a->nesterov != b->nesterov) return "nesterov";
    if (a->sched != b->sched) return "schedule";
    if (a->step_epochs != b->step_epochs) return "step epochs";
    if (a->step_gamma != b->step_gamma) return "gamma";
    if (a->warmup_epochs != b->warmup_epochs) return "warm-up";
    if (a->seed != b->seed) return "seed";
    if (a->n_milestones != b->n_milestones) return "milestones";
    for (int i = 0; i < a->n_milestones; i++)
        if (a->milestones[i] != b->milestones[i]) return "milestones";
    if (a->label_smoothing != b->label_smoothing) return "label smoothing";
    if (a->augment.crop_pad != b->augment.crop_pad || a->augment.flip != b->augment.flip)
        return "augmentation";
    return NULL;
}

static nz_status check_resume(const nz_model *m, const nz_dataset *train, const nz_train_cfg *cfg,
                              const nz_train_state *from, long steps, nz_error *err) {
    if (from->n_params != m->n_params || !from->velocity)
        return nz_fail(err, NZ_ERR_ARG,
                       "cannot resume: the checkpoint's optimizer holds %zu parameters, the model "
                       "%zu",
                       from->n_params, m->n_params);
    if (from->n_order != train->n || (train->n > 0 && !from->order))
        return nz_fail(err, NZ_ERR_ARG,
                       "cannot resume: the checkpoint was trained on %d images, %s has %d (use the "
                       "same data and --limit)",
                       from->n_order, train->name, train->n);
    const char *what = cfg_differs(cfg, &from->cfg);
    if (what)
        return nz_fail(err, NZ_ERR_ARG,
                       "cannot resume: the %s differs from the checkpoint's (a resumed run keeps "
                       "its settings; only the epochs may grow)",
                       what);
    if (from->epoch < 0 || cfg->epochs < from->epoch)
        return nz_fail(err, NZ_ERR_ARG,
                       "cannot resume: the checkpoint is past epoch %d, more than the %d asked",
                       from->epoch, cfg->epochs);
    /* indices feed nz_batch_fill: a hand-made state must not read outside the dataset */
    for (int i = 0; i < from->n_order; i++)
        if (from->order[i] < 0 || from->order[i] >= train->n)
            return nz_fail(err, NZ_ERR_ARG, "cannot resume: data order entry %d is %d", i,
                           (int)from->order[i]);
    if (from->steps != steps || from->step < 0 || from->step > steps)
        return nz_fail(err, NZ_ERR_ARG,
                       "cannot resume: the checkpoint is at step %ld of %ld, this run has %ld "
                       "steps per epoch",
                       from->step, from->steps, steps);
    return NZ_OK;
}

/* Hands the position (epoch, step) of run to the checkpoint hook unless it was the last one
 * handed over (a stop right after an epoch's save, or before the first step of a resumed run). */
static nz_status checkpoint_at(const nz_train_hooks *hooks, const nz_model *m,
                               nz_train_state *run, int epoch, long step, int *saved_epoch,
                               long *saved_step, nz_error *err) {
    if (!hooks->checkpoint || (epoch == *saved_epoch && step == *saved_step)) return NZ_OK;
    nz_train_state snap = *run;
    snap.epoch = epoch;
    snap.step = step;
    if (step == 0) { /* a boundary has no epoch in progress */
        snap.epoch_loss_sum = 0;
        snap.epoch_seen = snap.epoch_correct = 0;
    }
    nz_status st = hooks->checkpoint(m, &snap, hooks->checkpoint_user, err);
    if (!st) {
        *saved_epoch = epoch;
        *saved_step = step;
    }
    return st;
}

nz_status nz_train(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                   const nz_train_cfg *cfg, const nz_train_hooks *hooks, nz_train_result *res,
                   nz_error *err) {
    return nz_train_resume(m, train, test, cfg, hooks, NULL, res, err);
}

nz_status nz_train_resume(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                          const nz_train_cfg *cfg, const nz_train_hooks *hooks,
                          const nz_train_state *from, nz_train_result *res, nz_error *err) {
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
    nz_status st = nz_train_cfg_check(cfg, err);
    if (st) return st;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_params; k++)
            if (m->nodes[i].params[k].sparse)
                return nz_fail(err, NZ_ERR_ARG,
                               "layer '%s' is stored sparse: expand it (nz_model_densify) to train",
                               m->nodes[i].name);
    const nz_distill *dist = hooks->distill && hooks->distill->alpha > 0 ? hooks->distill : NULL;
    if (dist) {
        const nz_model *t = dist->teacher;
        if (!t || t->in.c != m->in.c || t->in.h != m->in.h || t->in.w != m->in.w ||
            t->n_classes != m->n_classes || memcmp(&t->pre, &m->pre, sizeof m->pre))
            return nz_fail(err, NZ_ERR_ARG,
                           "the distillation teacher does not take the student's inputs or give "
                           "its classes");
        if (!(dist->alpha <= 1.0f) || !(dist->temperature > 0.0f && dist->temperature <= 100.0f))
            return nz_fail(err, NZ_ERR_ARG, "bad distillation (alpha %g, temperature %g)",
                           (double)dist->alpha, (double)dist->temperature);
    }
    const int batch = cfg->batch;
    const long steps = (train->n + batch - 1) / batch;
    if (from && (st = check_resume(m, train, cfg, from, steps, err))) return st;
    nz_sgd opt;
    memset(&opt, 0, sizeof opt);
    nz_ws *ws = nz_ws_new(m, batch, err);
    nz_ws *tws = dist && ws ? nz_ws_new(dist->teacher, batch, err) : NULL;
    float *x = malloc(sizeof(float) * nz_shape_size(m->in) * (size_t)batch);
    float *dlogits = malloc(sizeof(float) * (size_t)m->n_classes * (size_t)batch);
    uint8_t *y = malloc((size_t)batch);
    int32_t *order = malloc(sizeof(int32_t) * (size_t)(train->n ? train->n : 1));
    if (!ws || (dist && !tws)) {
        st = err->code;
        goto done;
    }
    if (!x || !dlogits || !y || !order) {
        st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = nz_sgd_init(&opt, m->n_params, cfg->momentum, cfg->weight_decay, cfg->nesterov,
                          err)) ||
        (st = nz_sgd_use_model(&opt, m, err)))
        goto done;

    /* The run's mutable state lives in `run`, whose arrays are views of the optimizer's velocity
     * and of order, so a checkpoint is a snapshot of it and a resume a copy into it. Three RNG
     * streams (data order, dropout, augmentation), so changing one does not shift the others
     * and runs without augmentation keep their old results. */
    nz_train_state run;
    memset(&run, 0, sizeof run);
    run.cfg = *cfg;
    run.steps = steps;
    run.n_params = m->n_params;
    run.velocity = opt.velocity;
    run.n_order = train->n;
    run.order = order;
    run.last_test_err = run.best_test_err = -1;
    nz_rng_seed(&run.shuffle_rng, cfg->seed);
    nz_rng_seed(&run.drop_rng, cfg->seed ^ 0x5DEECE66Dull);
    nz_rng_seed(&run.aug_rng, cfg->seed ^ 0xA0761D6478BD642Full);
    for (int i = 0; i < train->n; i++) order[i] = i;
    int saved_epoch = -1; /* the last position handed to hooks->checkpoint */
    long saved_step = -1;
    if (from) {
        memcpy(opt.velocity, from->velocity, sizeof(float) * m->n_params);
        if (train->n) memcpy(order, from->order, sizeof(int32_t) * (size_t)train->n);
        run.epoch = from->epoch;
        run.step = from->step;
        run.epoch_loss_sum = from->epoch_loss_sum;
        run.epoch_seen = from->epoch_seen;
        run.epoch_correct = from->epoch_correct;
        run.last_loss = from->last_loss;
        run.last_train_err = from->last_train_err;
        run.last_test_err = from->last_test_err;
        run.best_test_err = from->best_test_err;
        run.shuffle_rng = from->shuffle_rng;
        run.drop_rng = from->drop_rng;
        run.aug_rng = from->aug_rng;
        res->final_loss = from->last_loss;
        res->train_err = from->last_train_err;
        res->test_err = from->last_test_err;
        res->epochs_done = from->epoch;
        saved_epoch = from->epoch;
        saved_step = from->step;
    }
    const int augmenting = cfg->augment.crop_pad > 0 || cfg->augment.flip;
    const int start_epoch = run.epoch;
    const long start_step = run.step;
    const long steps_before = (long)start_epoch * steps + start_step;
    const double t0 = nz_now_s();
    long images = 0;
    for (int epoch = start_epoch; epoch < cfg->epochs; epoch++) {
        long s0 = 0;
        if (epoch == start_epoch && start_step > 0) {
            s0 = start_step; /* mid-epoch: order and running sums are the checkpoint's */
        } else {
            if (hooks->stop && *hooks->stop) { /* before the shuffle: a clean boundary */
                if (!(st = checkpoint_at(hooks, m, &run, epoch, 0, &saved_epoch, &saved_step,
                                         err)))
                    st = nz_fail(err, NZ_ERR_INTERRUPTED, "interrupted");
                goto done;
            }
            nz_rng_shuffle(&run.shuffle_rng, order, (size_t)train->n);
            run.epoch_loss_sum = 0;
            run.epoch_seen = run.epoch_correct = 0;
        }
        nz_progress pr;
        memset(&pr, 0, sizeof pr);
        pr.epoch = epoch + 1;
        pr.epochs = cfg->epochs;
        pr.steps = steps;
        pr.test_err = -1;
        pr.steps_before = steps_before;
        for (long s = s0; s < steps; s++) {
            int start = (int)(s * batch);
            int B = train->n - start < batch ? train->n - start : batch;
            float lr = nz_train_lr(cfg, epoch + (double)s / steps);
            nz_batch_fill(train, &m->pre, order + start, B, x, y);
            if (augmenting) nz_augment_batch(x, B, m->in, &m->pre, &cfg->augment, &run.aug_rng);
            nz_ws_zero_grads(ws);
            const float *logits = nz_forward(m, ws, x, B, 1, &run.drop_rng);
            int c;
            /* the teacher runs in eval mode on the same augmented batch */
            const float *tlogits = dist ? nz_forward(dist->teacher, tws, x, B, 0, NULL) : NULL;
            float loss = nz_distill_xent(logits, tlogits, y, B, m->n_classes,
                                         cfg->label_smoothing, dist, dlogits, &c);
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
            run.epoch_loss_sum += (double)loss * B;
            run.epoch_seen += B;
            run.epoch_correct += c;
            images += B;
            if (hooks->progress) {
                pr.step = s + 1;
                pr.loss = (float)(run.epoch_loss_sum / run.epoch_seen);
                pr.train_err = (float)(100.0 * (double)(run.epoch_seen - run.epoch_correct) /
                                       run.epoch_seen);
                pr.lr = lr;
                pr.elapsed = nz_now_s() - t0;
                pr.images_per_s = images / (pr.elapsed > 0 ? pr.elapsed : 1e-9);
                hooks->progress(&pr, hooks->progress_user);
            }
            if (hooks->stop && *hooks->stop) { /* after a complete step: exact mid-epoch resume */
                if (!(st = checkpoint_at(hooks, m, &run, epoch, s + 1, &saved_epoch,
                                         &saved_step, err)))
                    st = nz_fail(err, NZ_ERR_INTERRUPTED, "interrupted");
                goto done;
            }
        }
        const long seen = run.epoch_seen;
        res->final_loss = seen ? (float)(run.epoch_loss_sum / seen) : 0.0f;
        res->train_err = seen ? (float)(100.0 * (double)(seen - run.epoch_correct) / seen) : 0.0f;
        res->epochs_done = epoch + 1;
        int last = epoch + 1 == cfg->epochs;
        if (test && (last || (cfg->eval_every > 0 && (epoch + 1) % cfg->eval_every == 0))) {
            nz_eval_result ev;
            if ((st = nz_evaluate(m, test, 256, &ev, err))) goto done;
            res->test_err = ev.error;
            pr.test_err = ev.error;
            if (run.best_test_err < 0 || ev.error < run.best_test_err) run.best_test_err = ev.error;
        }
        run.last_loss = res->final_loss;
        run.last_train_err = res->train_err;
        run.last_test_err = res->test_err;
        if ((st = checkpoint_at(hooks, m, &run, epoch + 1, 0, &saved_epoch, &saved_step, err)))
            goto done;
        if (hooks->progress) {
            if (s0 == steps && steps > 0) /* resumed after the last step: no step set it */
                pr.lr = nz_train_lr(cfg, epoch + (double)(steps - 1) / steps);
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
    nz_ws_free(tws);
    free(x);
    free(dlogits);
    free(y);
    free(order);
    return st;
}
