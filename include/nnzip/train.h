/* nnzip training: minibatch SGD with momentum, weight decay and LR schedules, evaluation, and
 * hooks that compression passes use (called after each optimizer step). */
#ifndef NNZIP_TRAIN_H
#define NNZIP_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"
#include "error.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SGD with momentum and weight decay, with PyTorch's semantics:
 * g = grad + wd * p;  v = mu * v + g;  p -= lr * (nesterov ? g + mu * v : v). */
typedef struct {
    float momentum, weight_decay;
    int nesterov;
    size_t n;
    float *velocity; /* [n], owned */
} nz_sgd;

nz_status nz_sgd_init(nz_sgd *opt, size_t n_params, float momentum, float weight_decay,
                      int nesterov, nz_error *err);
void nz_sgd_free(nz_sgd *opt);
void nz_sgd_step(nz_sgd *opt, float *params, const float *grads, float lr);

typedef enum { NZ_SCHED_CONST = 0, NZ_SCHED_STEP = 1, NZ_SCHED_COSINE = 2 } nz_sched;

typedef struct {
    int epochs;
    int batch;
    float lr;
    float momentum;
    float weight_decay;   /* L2, applied to weights and biases as PyTorch's SGD does */
    nz_sched sched;
    int step_epochs;      /* NZ_SCHED_STEP: multiply lr by step_gamma every step_epochs */
    float step_gamma;
    int warmup_epochs;    /* linear warm-up (0: none) */
    int nesterov;
    uint64_t seed;
    int eval_every;       /* evaluate on the test set every N epochs (0: only at the end) */
} nz_train_cfg;

/* Defaults used by `nnzip train` (batch 64, lr 0.1, momentum 0.9, wd 5e-4, cosine). */
void nz_train_cfg_default(nz_train_cfg *cfg);

/* LR for a position in training (epoch + fraction). */
float nz_train_lr(const nz_train_cfg *cfg, double epoch_pos);

typedef struct {
    int epoch, epochs;       /* 1-based epoch in progress */
    long step, steps;        /* step within the epoch */
    float loss;              /* running mean loss of the epoch so far */
    float train_err;         /* running train error (%) of the epoch so far */
    float test_err;          /* % after an epoch's evaluation, else < 0 */
    float lr;
    double elapsed;          /* seconds since the start */
    double images_per_s;
    int epoch_done;          /* 1 when called at the end of an epoch */
} nz_progress;

typedef void (*nz_progress_fn)(const nz_progress *p, void *user);
/* Called after every optimizer step; a compression pass re-applies masks or proximal steps here.
 * Returning non-zero stops training with NZ_ERR_INTERRUPTED. */
typedef int (*nz_step_hook)(nz_model *m, void *user);

/* Called after backward, before the optimizer step: may rewrite the gradients (e.g. tie the
 * weights of a codebook cluster). Non-zero stops training with NZ_ERR_INTERRUPTED. */
typedef int (*nz_grad_hook)(nz_model *m, float *grads, void *user);

typedef struct {
    nz_progress_fn progress;
    void *progress_user;
    nz_grad_hook before_step;
    nz_step_hook after_step;
    void *hook_user;           /* passed to before_step and after_step */
    volatile int *stop;      /* set non-zero (e.g. from SIGINT) to stop after the current step */
    float *lr_out;           /* if set, receives the step's learning rate before the hooks run
                                (proximal steps scale with it) */
} nz_train_hooks;

typedef struct {
    float final_loss;
    float train_err;         /* % over the last epoch */
    float test_err;          /* % after the last epoch (-1 without a test set) */
    double seconds;
    double images_per_s;
    int epochs_done;
} nz_train_result;

nz_status nz_train(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                   const nz_train_cfg *cfg, const nz_train_hooks *hooks, nz_train_result *res,
                   nz_error *err);

typedef struct {
    int n;
    int correct;
    float loss;     /* mean cross-entropy */
    float error;    /* % */
    double seconds;
} nz_eval_result;

nz_status nz_evaluate(const nz_model *m, const nz_dataset *ds, int batch, nz_eval_result *res,
                      nz_error *err);

#ifdef __cplusplus
}
#endif
#endif
