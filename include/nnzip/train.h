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

/* A contiguous range [off, off + n) of model->params that the optimizer updates. */
typedef struct {
    size_t off, n;
} nz_span;

/* SGD with momentum and weight decay, with PyTorch's semantics:
 * g = grad + wd * p;  v = mu * v + g;  p -= lr * (nesterov ? g + mu * v : v).
 * Only the spans are touched (all of [0, n) when there are none): buffers such as batch-norm
 * running statistics are neither updated nor decayed, and their velocity stays 0. */
typedef struct {
    float momentum, weight_decay;
    int nesterov;
    size_t n;
    float *velocity; /* [n], owned */
    int n_spans;
    nz_span *spans;  /* [n_spans], owned; NULL: the whole array is trainable */
} nz_sgd;

nz_status nz_sgd_init(nz_sgd *opt, size_t n_params, float momentum, float weight_decay,
                      int nesterov, nz_error *err);
/* Restricts the optimizer to m's trainable tensors: skips buffers (nz_param_is_buffer) and
 * sparse tensors (no dense storage). Adjacent tensors merge into one span, so a model without
 * buffers keeps a single vectorised loop. opt->n must be m->n_params. */
nz_status nz_sgd_use_model(nz_sgd *opt, const nz_model *m, nz_error *err);
void nz_sgd_free(nz_sgd *opt);
void nz_sgd_step(nz_sgd *opt, float *params, const float *grads, float lr);

/* Stored in checkpoints: append only. */
typedef enum {
    NZ_SCHED_CONST = 0,
    NZ_SCHED_STEP = 1,
    NZ_SCHED_COSINE = 2,
    NZ_SCHED_MULTISTEP = 3,
    NZ_SCHED__COUNT
} nz_sched;

const char *nz_sched_name(nz_sched s); /* "const", "step", "cosine", "multistep" */

#define NZ_MAX_MILESTONES 8
#define NZ_MAX_CROP_PAD 64

typedef struct {
    int epochs;
    int batch;
    float lr;
    float momentum;
    float weight_decay;   /* L2, applied to weights and biases as PyTorch's SGD does */
    nz_sched sched;
    int step_epochs;      /* NZ_SCHED_STEP: multiply lr by step_gamma every step_epochs */
    float step_gamma;     /* also the factor of NZ_SCHED_MULTISTEP */
    int warmup_epochs;    /* linear warm-up (0: none) */
    int nesterov;
    uint64_t seed;
    int eval_every;       /* evaluate on the test set every N epochs (0: only at the end) */
    /* NZ_SCHED_MULTISTEP (PyTorch's MultiStepLR): lr * step_gamma^(milestones <= epoch);
     * strictly increasing epochs >= 1 */
    int n_milestones;
    int milestones[NZ_MAX_MILESTONES];
    float label_smoothing; /* in [0, 1); see nz_softmax_xent_smooth */
    nz_augment augment;    /* applied to training batches only (crop_pad <= NZ_MAX_CROP_PAD) */
} nz_train_cfg;

/* Defaults used by `nnzip train` (batch 64, lr 0.1, momentum 0.9, wd 5e-4, cosine). */
void nz_train_cfg_default(nz_train_cfg *cfg);

/* Checks every field's range (what nz_train accepts and a checkpoint may hold); the message
 * names the field. */
nz_status nz_train_cfg_check(const nz_train_cfg *cfg, nz_error *err);

/* LR for a position in training (epoch + fraction). */
float nz_train_lr(const nz_train_cfg *cfg, double epoch_pos);

/* Mean softmax cross-entropy with label smoothing eps, as PyTorch's
 * CrossEntropyLoss(label_smoothing=eps): per example (1 - eps) * -log p[y] + eps * mean over the
 * K classes of -log p[k]. dlogits (if non-NULL) receives the gradient divided by B:
 * p - (1 - eps) * onehot(y) - eps / K. n_correct counts argmax hits. eps 0 is nz_softmax_xent
 * exactly (same bits). */
float nz_softmax_xent_smooth(const float *logits, const uint8_t *labels, int B, int K, float eps,
                             float *dlogits, int *n_correct);

/* Knowledge distillation (Hinton, Vinyals, Dean 2015): the loss becomes
 * (1 - alpha) * CE(z, y) + alpha * T^2 * KL(softmax(t / T) || softmax(z / T)), t the teacher's
 * logits on the same (augmented) batch, computed in eval mode. The T^2 keeps the soft term's
 * gradient on the scale of the hard one's. */
typedef struct {
    const nz_model *teacher; /* same input shape, preprocessing and classes as the student */
    float alpha;             /* in [0, 1]; 0: plain labels */
    float temperature;       /* > 0 */
} nz_distill;

/* nz_softmax_xent_smooth plus the distillation term of d (NULL or alpha 0: exactly the plain
 * loss); dlogits (if non-NULL) receives the gradient divided by B. */
float nz_distill_xent(const float *logits, const float *teacher, const uint8_t *labels, int B,
                      int K, float eps, const nz_distill *d, float *dlogits, int *n_correct);

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
    long steps_before;       /* steps done before this call started (a resumed run), so ETAs
                                use only the steps timed by elapsed */
} nz_progress;

typedef void (*nz_progress_fn)(const nz_progress *p, void *user);
/* Called after every optimizer step; a compression pass re-applies masks or proximal steps here.
 * Returning non-zero stops training with NZ_ERR_INTERRUPTED. */
typedef int (*nz_step_hook)(nz_model *m, void *user);

/* Called after backward, before the optimizer step: may rewrite the gradients (e.g. tie the
 * weights of a codebook cluster). Non-zero stops training with NZ_ERR_INTERRUPTED. */
typedef int (*nz_grad_hook)(nz_model *m, float *grads, void *user);

/* Everything besides the model's parameters that a run needs to continue exactly where it
 * stopped: a checkpoint's STATE section (format.h). Positions: at an epoch boundary (step 0) the
 * shuffle stream is the one that will shuffle epoch `epoch` + 1 and order is the previous
 * epoch's (each epoch reshuffles the previous order in place); mid-epoch (step > 0) order is
 * the epoch in progress's and the streams are where that step left them.
 * Ownership: filled by nz_load_checkpoint, velocity and order are owned (nz_train_state_free);
 * passed to a checkpoint callback, they point into the trainer and live only for the call. */
typedef struct {
    nz_train_cfg cfg;            /* the run's settings */
    int epoch;                   /* epochs completed */
    long step, steps;            /* steps completed of the next epoch; steps per epoch */
    double epoch_loss_sum;       /* running sums of the epoch in progress (step > 0), so its */
    long epoch_seen, epoch_correct; /* reported loss and error are the uninterrupted run's */
    float last_loss, last_train_err; /* of the last completed epoch (0 before the first) */
    float last_test_err, best_test_err; /* %; -1 when not evaluated yet */
    nz_rng shuffle_rng, drop_rng, aug_rng;
    size_t n_params;
    float *velocity;             /* [n_params] SGD momentum buffer */
    int n_order;                 /* training examples */
    int32_t *order;              /* [n_order] the data order (see above) */
} nz_train_state;

/* Frees an owned state's arrays and zeroes it. */
void nz_train_state_free(nz_train_state *st);

/* Called with the state to save (m holds the matching parameters) after every completed epoch
 * and, mid-epoch, when training stops through *stop. A failure ends the run with that error. */
typedef nz_status (*nz_checkpoint_fn)(const nz_model *m, const nz_train_state *st, void *user,
                                      nz_error *err);

typedef struct {
    nz_progress_fn progress;
    void *progress_user;
    nz_grad_hook before_step;
    nz_step_hook after_step;
    void *hook_user;           /* passed to before_step and after_step */
    volatile int *stop;      /* set non-zero (e.g. from SIGINT) to stop after the current step */
    float *lr_out;           /* if set, receives the step's learning rate before the hooks run
                                (proximal steps scale with it) */
    nz_checkpoint_fn checkpoint; /* NULL: no checkpoints */
    void *checkpoint_user;
    const nz_distill *distill;   /* NULL: train on the labels only */
} nz_train_hooks;

typedef struct {
    float final_loss;
    float train_err;         /* % over the last epoch */
    float test_err;          /* % after the last epoch (-1 without a test set) */
    double seconds;
    double images_per_s;
    int epochs_done;
} nz_train_result;

/* Trains m in place. Stopped through hooks->stop, it finishes the current step, hands a
 * mid-epoch state to hooks->checkpoint and fails with NZ_ERR_INTERRUPTED; stopped by a step hook
 * or by divergence it saves nothing (the state would not be one to continue from). */
nz_status nz_train(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                   const nz_train_cfg *cfg, const nz_train_hooks *hooks, nz_train_result *res,
                   nz_error *err);

/* nz_train continuing from a checkpoint's state (from NULL: a fresh start). m must hold the
 * checkpoint's parameters and train must have from->n_order examples (the same data, in the same
 * order); cfg must equal from->cfg except for epochs (>= from->epoch; more extends the run, which
 * changes a cosine schedule's remaining LRs) and eval_every. With the same epochs and threads 1
 * the result is bit-for-bit the uninterrupted run's. res covers the whole run (epochs_done
 * counts the checkpoint's epochs too). */
nz_status nz_train_resume(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                          const nz_train_cfg *cfg, const nz_train_hooks *hooks,
                          const nz_train_state *from, nz_train_result *res, nz_error *err);

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
