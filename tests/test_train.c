/* Trainer features: checkpoints (STATE section round trip, corruption refused), exact resume
 * (at an epoch boundary and mid-epoch, bit for bit at 1 thread), the multistep schedule, label
 * smoothing, and SGD skipping batch-norm buffers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "nnzip/format.h"
#include "nnzip/train.h"
#include "synthetic.h"
#include "filebytes.h"
#include "testlib.h"

static char g_dir[64]; /* scratch directory of this run (the one test-wide global) */

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", g_dir, name); }

/* conv -> batch norm -> relu -> pool -> dropout -> dense: BN buffers, dropout and augmentation
 * all take part, so a resume has to restore every RNG stream and the running statistics. */
static int build_small(nz_model *m, uint64_t seed) {
    nz_error e = {0};
    if (nz_model_init(m, "custom", (nz_shape){1, 28, 28}, 10, &e)) return 0;
    int x = nz_model_add_conv2d(m, "conv", 0, 4, 3, 2, 1, &e);
    if (x >= 0) x = nz_model_add_batchnorm(m, "bn", x, &e);
    if (x >= 0) x = nz_model_add_relu(m, "relu", x, &e);
    if (x >= 0) x = nz_model_add_maxpool(m, "pool", x, 2, 2, &e);
    if (x >= 0) x = nz_model_add_dropout(m, "drop", x, 0.2f, &e);
    if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, &e);
    if (x >= 0) x = nz_model_add_dense(m, "fc", x, 10, &e);
    CHECK(x >= 0, "build: %s", e.msg);
    if (x < 0) return 0;
    nz_rng r;
    nz_rng_seed(&r, seed);
    nz_model_init_params(m, &r);
    return 1;
}

static void small_cfg(nz_train_cfg *cfg) {
    nz_train_cfg_default(cfg);
    cfg->epochs = 3;
    cfg->batch = 32;
    cfg->lr = 0.05f;
    cfg->seed = 9;
    cfg->label_smoothing = 0.1f;
    cfg->augment.crop_pad = 2;
    cfg->augment.flip = 1;
}

/* ---------------------------------------------------------------- resume */

typedef struct {
    volatile int stop;
    int at_epoch;  /* stop when this 1-based epoch... */
    long at_step;  /* ...reaches this step (0: at its end, after its checkpoint) */
    const char *path;
    int saves;
} stopper;

static void stop_progress(const nz_progress *p, void *user) {
    stopper *s = user;
    if (p->epoch == s->at_epoch && (s->at_step ? p->step == s->at_step && !p->epoch_done
                                               : p->epoch_done))
        s->stop = 1;
}

static nz_status save_cb(const nz_model *m, const nz_train_state *st, void *user, nz_error *err) {
    stopper *s = user;
    s->saves++;
    return nz_save_checkpoint(m, NULL, st, s->path, err);
}

/* Trains straight, then again stopped at (epoch, step) and resumed from the checkpoint file;
 * parameters (BN running statistics included) must match bit for bit. */
static void check_resume_at(const nz_dataset *ds, int at_epoch, long at_step, const char *what) {
    nz_error e = {0};
    nz_train_cfg cfg;
    small_cfg(&cfg);
    nz_model a, b;
    if (!build_small(&a, 5) || !build_small(&b, 5)) return;
    nz_train_result ra, rb;
    CHECK(nz_train(&a, ds, ds, &cfg, NULL, &ra, &e) == NZ_OK, "straight: %s", e.msg);

    char path[128];
    path_in(path, sizeof path, "resume.ckpt.nnz");
    stopper s = {.at_epoch = at_epoch, .at_step = at_step, .path = path};
    nz_train_hooks h = {.progress = stop_progress, .progress_user = &s, .stop = &s.stop,
                        .checkpoint = save_cb, .checkpoint_user = &s};
    nz_status st = nz_train(&b, ds, ds, &cfg, &h, &rb, &e);
    CHECK(st == NZ_ERR_INTERRUPTED, "%s: stopped run: %d %s", what, st, e.msg);
    nz_model_free(&b);

    nz_model c;
    nz_meta meta;
    nz_train_state from;
    st = nz_load_checkpoint(path, &c, &meta, &from, &e);
    CHECK(st == NZ_OK, "%s: load checkpoint: %s", what, e.msg);
    if (st) {
        nz_model_free(&a);
        return;
    }
    CHECK(at_step ? from.epoch == at_epoch - 1 && from.step == at_step
                  : from.epoch == at_epoch && from.step == 0,
          "%s: at %d/%ld", what, from.epoch, from.step);
    /* a second stop request before the first step must not write the same position again */
    s.saves = 0;
    s.stop = 0;
    s.at_epoch = -1;
    nz_train_result rc;
    CHECK(nz_train_resume(&c, ds, ds, &cfg, &h, &from, &rc, &e) == NZ_OK, "%s: resume: %s", what,
          e.msg);
    CHECK(s.saves == cfg.epochs - from.epoch, "%s: %d saves after resuming", what, s.saves);
    CHECK(c.n_params == a.n_params &&
              memcmp(c.params, a.params, sizeof(float) * a.n_params) == 0,
          "%s: resumed parameters differ from the uninterrupted run's", what);
    CHECK(rc.epochs_done == ra.epochs_done && rc.final_loss == ra.final_loss &&
              rc.train_err == ra.train_err && rc.test_err == ra.test_err,
          "%s: results differ (loss %g vs %g)", what, (double)rc.final_loss,
          (double)ra.final_loss);
    nz_train_state_free(&from);
    nz_model_free(&c);
    nz_model_free(&a);
    unlink(path);
}

static void test_resume(void) {
    nz_dataset ds;
    make_synthetic(&ds, 200, 3); /* 7 steps of 32, the last one short */
    nz_set_threads(1);
    check_resume_at(&ds, 1, 0, "epoch boundary");
    check_resume_at(&ds, 2, 3, "mid-epoch");
    check_resume_at(&ds, 3, 7, "after the last step");

    /* the trainer refuses states that do not fit the run */
    nz_error e = {0};
    nz_train_cfg cfg;
    small_cfg(&cfg);
    nz_model m;
    if (!build_small(&m, 5)) return;
    char path[128];
    path_in(path, sizeof path, "fit.ckpt.nnz");
    stopper s = {.at_epoch = 1, .at_step = 2, .path = path};
    nz_train_hooks h = {.progress = stop_progress, .progress_user = &s, .stop = &s.stop,
                        .checkpoint = save_cb, .checkpoint_user = &s};
    nz_train_result r;
    nz_train(&m, &ds, NULL, &cfg, &h, &r, &e);
    nz_model_free(&m);
    nz_train_state from;
    nz_meta meta;
    if (nz_load_checkpoint(path, &m, &meta, &from, &e)) {
        CHECK(0, "load: %s", e.msg);
        return;
    }
    nz_dataset small;
    make_synthetic(&small, 100, 3);
    CHECK(nz_train_resume(&m, &small, NULL, &cfg, NULL, &from, &r, &e) == NZ_ERR_ARG &&
              strstr(e.msg, "200 images"),
          "other data size: %s", e.msg);
    nz_train_cfg other = cfg;
    other.lr = 0.5f;
    CHECK(nz_train_resume(&m, &ds, NULL, &other, NULL, &from, &r, &e) == NZ_ERR_ARG &&
              strstr(e.msg, "lr"),
          "other lr: %s", e.msg);
    other = cfg;
    other.batch = 16;
    CHECK(nz_train_resume(&m, &ds, NULL, &other, NULL, &from, &r, &e) == NZ_ERR_ARG &&
              strstr(e.msg, "batch"),
          "other batch: %s", e.msg);
    /* more epochs: allowed (extends the run) */
    other = cfg;
    other.epochs = 4;
    CHECK(nz_train_resume(&m, &ds, NULL, &other, NULL, &from, &r, &e) == NZ_OK &&
              r.epochs_done == 4,
          "extended run: %s", e.msg);
    nz_train_state_free(&from);
    nz_model_free(&m);
    nz_dataset_free(&small);
    nz_dataset_free(&ds);
    unlink(path);
}

/* ---------------------------------------------------------------- format */

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return b;
}


/* Index of the STATE entry in the table, its payload offset and length. */
static int find_state(const uint8_t *b, size_t n, size_t *off, size_t *len) {
    uint32_t ns = rd32(b + 12);
    for (uint32_t i = 0; i < ns && 24 + 32 * (size_t)(i + 1) <= n; i++) {
        const uint8_t *e = b + 24 + 32 * (size_t)i;
        if (rd32(e) == NZF_SEC_STATE) {
            *off = (size_t)rd64(e + 8);
            *len = (size_t)rd64(e + 16);
            return (int)i;
        }
    }
    return -1;
}

/* After editing a STATE payload: fixes its CRC (and length) and the table's, so only the state's
 * own checks can refuse it. */
static void reseal(uint8_t *b, int idx, size_t off, size_t len) {
    uint8_t *e = b + 24 + 32 * (size_t)idx;
    wr64(e + 16, len);
    wr32(e + 24, (uint32_t)crc32(0, b + off, (uInt)len));
    uint32_t ns = rd32(b + 12);
    wr32(b + 20, (uint32_t)crc32(0, b + 24, 32 * ns));
}

static void fill_state(nz_train_state *st, const nz_model *m, int n_order) {
    memset(st, 0, sizeof *st);
    small_cfg(&st->cfg);
    st->cfg.sched = NZ_SCHED_MULTISTEP;
    st->cfg.n_milestones = 2;
    st->cfg.milestones[0] = 2;
    st->cfg.milestones[1] = 3;
    st->cfg.nesterov = 1;
    st->cfg.seed = 0x123456789abcdefull;
    st->epoch = 1;
    st->steps = (n_order + st->cfg.batch - 1) / st->cfg.batch;
    st->step = 2;
    st->epoch_loss_sum = 12.5;
    st->epoch_seen = 64;
    st->epoch_correct = 40;
    st->last_loss = 0.75f;
    st->last_train_err = 20.5f;
    st->last_test_err = 18.25f;
    st->best_test_err = 17.0f;
    nz_rng_seed(&st->shuffle_rng, 1);
    nz_rng_seed(&st->drop_rng, 2);
    nz_rng_seed(&st->aug_rng, 3);
    st->n_params = m->n_params;
    st->velocity = malloc(sizeof(float) * m->n_params);
    for (size_t i = 0; i < m->n_params; i++) st->velocity[i] = (float)i * 1e-3f - 0.5f;
    st->n_order = n_order;
    st->order = malloc(sizeof(int32_t) * (size_t)n_order);
    for (int i = 0; i < n_order; i++) st->order[i] = (i * 7) % n_order; /* n_order prime to 7 */
}

static void test_checkpoint_format(void) {
    nz_error e = {0};
    nz_model m;
    if (!build_small(&m, 1)) return;
    nz_train_state st;
    fill_state(&st, &m, 100);
    char path[128], plain[128];
    path_in(path, sizeof path, "rt.ckpt.nnz");
    path_in(plain, sizeof plain, "rt.nnz");
    nz_meta meta;
    memset(&meta, 0, sizeof meta);
    nz_meta_set(&meta, "data", "synthetic");
    CHECK(nz_save_checkpoint(&m, &meta, &st, path, &e) == NZ_OK, "save: %s", e.msg);
    CHECK(nz_save(&m, &meta, plain, &e) == NZ_OK, "save plain: %s", e.msg);

    /* round trip: every field */
    nz_model m2;
    nz_meta meta2;
    nz_train_state s2;
    CHECK(nz_load_checkpoint(path, &m2, &meta2, &s2, &e) == NZ_OK, "load: %s", e.msg);
    if (!e.code) {
        CHECK(m2.n_params == m.n_params &&
                  memcmp(m2.params, m.params, sizeof(float) * m.n_params) == 0,
              "model params");
        CHECK(memcmp(&s2.cfg, &st.cfg, sizeof st.cfg) == 0, "settings");
        CHECK(s2.epoch == 1 && s2.step == 2 && s2.steps == st.steps, "position");
        CHECK(s2.epoch_loss_sum == 12.5 && s2.epoch_seen == 64 && s2.epoch_correct == 40,
              "running sums");
        CHECK(s2.last_loss == 0.75f && s2.last_train_err == 20.5f && s2.last_test_err == 18.25f &&
                  s2.best_test_err == 17.0f,
              "progress");
        CHECK(memcmp(&s2.shuffle_rng, &st.shuffle_rng, sizeof(nz_rng)) == 0 &&
                  memcmp(&s2.drop_rng, &st.drop_rng, sizeof(nz_rng)) == 0 &&
                  memcmp(&s2.aug_rng, &st.aug_rng, sizeof(nz_rng)) == 0,
              "RNG states");
        CHECK(s2.n_params == st.n_params &&
                  memcmp(s2.velocity, st.velocity, sizeof(float) * st.n_params) == 0,
              "velocity");
        CHECK(s2.n_order == 100 && memcmp(s2.order, st.order, sizeof(int32_t) * 100) == 0,
              "order");
        CHECK(nz_meta_get(&meta2, "data") && strcmp(nz_meta_get(&meta2, "data"), "synthetic") == 0,
              "meta");
        nz_train_state_free(&s2);
        nz_model_free(&m2);
    }
    /* nz_load reads a checkpoint as a model */
    CHECK(nz_load(path, &m2, NULL, &e) == NZ_OK, "nz_load on a checkpoint: %s", e.msg);
    if (!e.code) {
        CHECK(memcmp(m2.params, m.params, sizeof(float) * m.n_params) == 0, "nz_load params");
        nz_model_free(&m2);
    }
    nz_file_stats fs;
    CHECK(nz_file_stats_read(path, &fs, &e) == NZ_OK &&
              fs.bytes_by_kind[NZF_SEC_STATE] == 268 + 4 * m.n_params + 4 + 4 * 100,
          "state bytes %llu", (unsigned long long)fs.bytes_by_kind[NZF_SEC_STATE]);
    /* a finished model is not a checkpoint */
    CHECK(nz_load_checkpoint(plain, &m2, NULL, &s2, &e) == NZ_ERR_FORMAT &&
              strstr(e.msg, "not a checkpoint") && s2.velocity == NULL,
          "plain model as a checkpoint: %s", e.msg);
    /* the writer refuses a state that does not belong to the model */
    st.n_params--;
    CHECK(nz_save_checkpoint(&m, NULL, &st, path, &e) == NZ_ERR_ARG, "n_params mismatch saved");
    st.n_params++;

    /* corruption: each edit keeps the CRCs valid, so the STATE checks must catch it, with one
     * message naming the section, from both nz_load and nz_load_checkpoint */
    size_t n;
    uint8_t *good = slurp(path, &n);
    size_t off = 0, len = 0;
    int idx = good ? find_state(good, n, &off, &len) : -1;
    CHECK(idx >= 0 && off + len == n, "state section found last");
    if (idx < 0) {
        free(good);
        nz_train_state_free(&st);
        nz_model_free(&m);
        return;
    }
    const size_t vel = off + 268, nord = vel + 4 * m.n_params, ord = nord + 4;
    enum { VERSION, NPARAMS, SHORT, LONG, DUP, RANGE, ZERO_RNG, STEP, EPOCH, SCHED, NAN_V, MS, N_CASES };
    const char *names[N_CASES] = {"version",  "n_params",     "truncated", "trailing byte",
                                  "dup order", "order range", "zero RNG",  "step > steps",
                                  "epoch > epochs", "schedule", "NaN velocity", "milestones"};
    uint8_t *b = malloc(n + 1);
    for (int c = 0; c < N_CASES; c++) {
        memcpy(b, good, n);
        size_t l = len;
        switch (c) {
        case VERSION: wr32(b + off, 2); break;
        case NPARAMS: wr64(b + vel - 8, m.n_params + 1); break;
        case SHORT: l -= 4; break;
        case LONG: b[n] = 0; l += 1; break;
        case DUP: wr32(b + ord, rd32(b + ord + 4)); break;
        case RANGE: wr32(b + ord, 100); break;
        case ZERO_RNG: memset(b + off + 164 + 32, 0, 32); break;
        case STEP: wr64(b + off + 8, 99); break;
        case EPOCH: wr32(b + off + 4, 4); break;
        case SCHED: wr32(b + off + 24 + 24, 9); break;
        case NAN_V: wr32(b + vel + 8, 0x7fc00000u); break;
        case MS: wr32(b + off + 24 + 44, 0); break; /* milestones 0,3: not >= 1 */
        }
        reseal(b, idx, off, l);
        size_t fn = off + l;
        nz_model x;
        nz_train_state xs;
        nz_status s1 = nz_load_buffer(b, fn, "bad.nnz", &x, NULL, &e);
        int one_line = strchr(e.msg, '\n') == NULL;
        CHECK(s1 != NZ_OK && strstr(e.msg, "bad.nnz") && strstr(e.msg, "(state)") && one_line,
              "%s: nz_load: %d '%s'", names[c], s1, e.msg);
        nz_status s2s = nz_load_checkpoint_buffer(b, fn, "bad.nnz", &x, NULL, &xs, &e);
        CHECK(s2s != NZ_OK && strstr(e.msg, "(state)") && xs.velocity == NULL && x.params == NULL,
              "%s: nz_load_checkpoint: %d '%s'", names[c], s2s, e.msg);
    }
    /* a flipped payload byte fails the section CRC */
    memcpy(b, good, n);
    b[vel + 3] ^= 0x10;
    nz_model x;
    CHECK(nz_load_buffer(b, n, "flip.nnz", &x, NULL, &e) == NZ_ERR_CORRUPT &&
              strstr(e.msg, "(state) fails its CRC32"),
          "flipped state byte: %s", e.msg);
    free(b);
    free(good);
    nz_train_state_free(&st);
    nz_model_free(&m);
    unlink(path);
    unlink(plain);
}

/* ---------------------------------------------------------------- schedules */

static int near(float a, double b) { return fabs((double)a - b) <= 1e-6 * (fabs(b) + 1e-6); }

static void test_schedules(void) {
    nz_train_cfg c;
    nz_train_cfg_default(&c);
    c.lr = 1.0f;
    c.epochs = 6;
    c.sched = NZ_SCHED_MULTISTEP;
    c.n_milestones = 2;
    c.milestones[0] = 2;
    c.milestones[1] = 4;
    c.step_gamma = 0.1f;
    const double pos[] = {0, 1.5, 1.999, 2, 3.9, 4, 5.99};
    const double want[] = {1, 1, 1, 0.1, 0.1, 0.01, 0.01};
    for (int i = 0; i < 7; i++)
        CHECK(near(nz_train_lr(&c, pos[i]), want[i]), "multistep at %g: %g, want %g", pos[i],
              (double)nz_train_lr(&c, pos[i]), want[i]);
    nz_error e = {0};
    CHECK(nz_train_cfg_check(&c, &e) == NZ_OK, "valid multistep: %s", e.msg);
    c.milestones[1] = 2;
    CHECK(nz_train_cfg_check(&c, &e) == NZ_ERR_ARG && strstr(e.msg, "milestone"),
          "non-increasing milestones: %s", e.msg);
    c.milestones[1] = 4;
    /* warm-up first, then the milestones */
    c.warmup_epochs = 1;
    CHECK(near(nz_train_lr(&c, 0.5), 0.501), "warm-up: %g", (double)nz_train_lr(&c, 0.5));
    CHECK(near(nz_train_lr(&c, 2.5), 0.1), "after warm-up: %g", (double)nz_train_lr(&c, 2.5));
    /* the others unchanged */
    c.warmup_epochs = 0;
    c.sched = NZ_SCHED_STEP;
    c.step_epochs = 3;
    CHECK(near(nz_train_lr(&c, 2.9), 1) && near(nz_train_lr(&c, 3), 0.1), "step");
    c.sched = NZ_SCHED_COSINE;
    CHECK(near(nz_train_lr(&c, 0), 1) && near(nz_train_lr(&c, 3), 0.5) &&
              fabs((double)nz_train_lr(&c, 6)) < 1e-7,
          "cosine");
    c.sched = NZ_SCHED_CONST;
    CHECK(near(nz_train_lr(&c, 5), 1), "const");
    CHECK(strcmp(nz_sched_name(NZ_SCHED_MULTISTEP), "multistep") == 0, "name");
    c.label_smoothing = 1.0f;
    CHECK(nz_train_cfg_check(&c, &e) == NZ_ERR_ARG, "label smoothing 1 accepted");
}

/* ---------------------------------------------------------------- label smoothing */

/* Largest gap between g and central finite differences (step 1e-2) of the float loss
 * nz_distill_xent (with d NULL: the label loss alone) at logits z [B, K] (B * K <= 64). */
static double fd_worst(const float *z, const float *t, const uint8_t *y, int B, int K, float eps,
                       const nz_distill *d, const float *g) {
    float zz[64];
    memcpy(zz, z, sizeof(float) * (size_t)(B * K));
    double worst = 0;
    for (int i = 0; i < B * K; i++) {
        const float h = 1e-2f;
        zz[i] = z[i] + h;
        double lp = nz_distill_xent(zz, t, y, B, K, eps, d, NULL, NULL);
        zz[i] = z[i] - h;
        double lm = nz_distill_xent(zz, t, y, B, K, eps, d, NULL, NULL);
        zz[i] = z[i];
        worst = fmax(worst, fabs((lp - lm) / (2.0 * h) - g[i]));
    }
    return worst;
}

static void test_label_smoothing(void) {
    enum { B = 3, K = 5 };
    const float z[B * K] = {0.3f, -1.2f, 2.0f, 0.0f, 0.7f,  1.5f, 1.4f, -0.3f,
                            0.2f, -2.0f, -0.5f, 0.1f, 0.2f, 3.0f, -1.0f};
    const uint8_t y[B] = {2, 0, 4};
    float g0[B * K], g1[B * K];
    int c0, c1;
    /* eps 0: the engine's loss, bit for bit */
    float l0 = nz_softmax_xent(z, y, B, K, g0, &c0);
    float l1 = nz_softmax_xent_smooth(z, y, B, K, 0.0f, g1, &c1);
    CHECK(l0 == l1 && memcmp(g0, g1, sizeof g0) == 0 && c0 == c1, "eps 0 differs");
    /* eps 0.2 against the closed form in double */
    const double eps = 0.2;
    double want = 0;
    double gw[B * K];
    for (int b = 0; b < B; b++) {
        double mx = -1e30, s = 0;
        for (int k = 0; k < K; k++) mx = z[b * K + k] > mx ? z[b * K + k] : mx;
        for (int k = 0; k < K; k++) s += exp(z[b * K + k] - mx);
        double lse = mx + log(s), mean_nll = 0;
        for (int k = 0; k < K; k++) mean_nll += (lse - z[b * K + k]) / K;
        want += ((1 - eps) * (lse - z[b * K + y[b]]) + eps * mean_nll) / B;
        for (int k = 0; k < K; k++)
            gw[b * K + k] = (exp(z[b * K + k] - lse) - eps / K - (k == y[b] ? 1 - eps : 0)) / B;
    }
    float g[B * K];
    int correct;
    float l = nz_softmax_xent_smooth(z, y, B, K, (float)eps, g, &correct);
    CHECK(fabs(l - want) < 1e-6 * fabs(want), "loss %.9g, want %.9g", (double)l, want);
    double worst = 0;
    for (int i = 0; i < B * K; i++) worst = fmax(worst, fabs(g[i] - gw[i]));
    CHECK(worst < 1e-7, "gradient off by %g", worst);
    CHECK(correct == 2, "correct %d (argmax hits on examples 0 and 2)", correct);
    /* finite differences of the float loss, central, step 1e-2 */
    worst = fd_worst(z, NULL, y, B, K, (float)eps, NULL, g);
    CHECK(worst < 2e-4, "finite differences off by %g", worst);
}

/* ---------------------------------------------------------------- distillation */

/* T^2 KL(softmax(t/T) || softmax(z/T)), mean over the batch, and its gradient, in double. */
static double distill_ref(const float *z, const float *t, int B, int K, double T, double *g) {
    double kl = 0;
    for (int b = 0; b < B; b++) {
        double zs = 0, ts = 0;
        for (int k = 0; k < K; k++) {
            zs += exp(z[b * K + k] / T);
            ts += exp(t[b * K + k] / T);
        }
        for (int k = 0; k < K; k++) {
            double q = exp(z[b * K + k] / T) / zs, p = exp(t[b * K + k] / T) / ts;
            kl += p * log(p / q);
            g[b * K + k] = T * (q - p) / B;
        }
    }
    return T * T * kl / B;
}

static void test_distill(void) {
    enum { B = 3, K = 5 };
    const float z[B * K] = {0.3f, -1.2f, 2.0f, 0.0f, 0.7f,  1.5f, 1.4f, -0.3f,
                            0.2f, -2.0f, -0.5f, 0.1f, 0.2f, 3.0f, -1.0f};
    const float t[B * K] = {1.3f, -0.2f, 0.5f, 0.4f, -0.7f, 2.5f, 0.4f, -1.3f,
                            0.9f, 0.0f, 0.5f, -0.1f, 1.2f, 2.0f, -3.0f};
    const uint8_t y[B] = {2, 0, 4};
    const float eps = 0.1f, alpha = 0.6f, T = 3.0f;
    float g0[B * K], g1[B * K];
    int c0, c1;
    /* alpha 0 (and no distillation at all): the label loss, bit for bit */
    nz_distill off = {NULL, 0.0f, T};
    float l0 = nz_softmax_xent_smooth(z, y, B, K, eps, g0, &c0);
    float l1 = nz_distill_xent(z, t, y, B, K, eps, &off, g1, &c1);
    CHECK(l0 == l1 && memcmp(g0, g1, sizeof g0) == 0 && c0 == c1, "alpha 0 differs");
    l1 = nz_distill_xent(z, NULL, y, B, K, eps, NULL, g1, &c1);
    CHECK(l0 == l1 && memcmp(g0, g1, sizeof g0) == 0, "no distillation differs");
    /* the closed form in double */
    nz_distill d = {NULL, alpha, T};
    double gk[B * K];
    const double kl = distill_ref(z, t, B, K, T, gk);
    float g[B * K];
    float l = nz_distill_xent(z, t, y, B, K, eps, &d, g, &c1);
    const double want = (1 - alpha) * (double)l0 + alpha * kl;
    CHECK(fabs(l - want) < 1e-6 * fabs(want), "loss %.9g, want %.9g", (double)l, want);
    double worst = 0;
    for (int i = 0; i < B * K; i++)
        worst = fmax(worst, fabs(g[i] - ((1 - alpha) * g0[i] + alpha * gk[i])));
    CHECK(worst < 1e-7, "gradient off by %g", worst);
    /* finite differences of the float loss */
    worst = fd_worst(z, t, y, B, K, eps, &d, g);
    CHECK(worst < 2e-4, "finite differences off by %g", worst);
    /* a teacher that agrees with the student adds nothing but the (1 - alpha) scale */
    l = nz_distill_xent(z, z, y, B, K, eps, &d, g, NULL);
    CHECK(fabs(l - (1 - alpha) * l0) < 1e-6, "self-distillation loss %g", (double)l);
    worst = 0;
    for (int i = 0; i < B * K; i++) worst = fmax(worst, fabs(g[i] - (1 - alpha) * g0[i]));
    CHECK(worst < 1e-8, "self-distillation gradient off by %g", worst);

    /* training with alpha 1 pulls the student's outputs to the teacher's */
    nz_error e = {0};
    nz_dataset ds;
    make_synthetic(&ds, 200, 3);
    nz_model teacher, student;
    if (!build_small(&teacher, 7) || !build_small(&student, 5)) return;
    nz_train_cfg cfg;
    small_cfg(&cfg);
    cfg.augment.crop_pad = 0; /* the KL below is measured on the plain images */
    cfg.augment.flip = 0;
    cfg.label_smoothing = 0.0f;
    cfg.weight_decay = 0.0f;
    cfg.epochs = 6;
    const double before = outputs_kl(&teacher, &student, &ds, 200);
    nz_distill dd = {&teacher, 1.0f, 2.0f};
    nz_train_hooks h = {.distill = &dd};
    nz_train_result r;
    CHECK(nz_train(&student, &ds, NULL, &cfg, &h, &r, &e) == NZ_OK, "train: %s", e.msg);
    const double after = outputs_kl(&teacher, &student, &ds, 200);
    CHECK(before > 0 && after < 0.3 * before, "KL to the teacher %g -> %g", before, after);
    /* a teacher for other classes is refused */
    nz_model other;
    CHECK(nz_model_init(&other, "other", (nz_shape){1, 28, 28}, 7, &e) == NZ_OK, "init");
    dd.teacher = &other;
    CHECK(nz_train(&student, &ds, NULL, &cfg, &h, &r, &e) == NZ_ERR_ARG &&
              strstr(e.msg, "teacher"),
          "mismatched teacher: %s", e.msg);
    dd.teacher = &teacher;
    dd.temperature = 0.0f;
    CHECK(nz_train(&student, &ds, NULL, &cfg, &h, &r, &e) == NZ_ERR_ARG, "temperature 0 accepted");
    nz_model_free(&other);
    nz_model_free(&teacher);
    nz_model_free(&student);
    nz_dataset_free(&ds);
}

/* ---------------------------------------------------------------- SGD spans */

static void test_sgd_spans(void) {
    nz_error e = {0};
    nz_model m;
    if (!build_small(&m, 2)) return;
    nz_sgd opt;
    CHECK(nz_sgd_init(&opt, m.n_params, 0.9f, 0.1f, 0, &e) == NZ_OK, "init");
    CHECK(nz_sgd_use_model(&opt, &m, &e) == NZ_OK, "spans: %s", e.msg);
    /* conv W, b and bn gamma, beta merge; the running stats split them from fc W, b */
    CHECK(opt.n_spans == 2, "%d spans, want 2", opt.n_spans);
    float *g = malloc(sizeof(float) * m.n_params);
    float *before = malloc(sizeof(float) * m.n_params);
    for (size_t i = 0; i < m.n_params; i++) {
        m.params[i] = 1.0f; /* wd alone would move every value */
        g[i] = 0.5f;
    }
    memcpy(before, m.params, sizeof(float) * m.n_params);
    nz_sgd_step(&opt, m.params, g, 0.1f);
    nz_sgd_step(&opt, m.params, g, 0.1f);
    for (int i = 0; i < m.n_nodes; i++) {
        const nz_node *n = &m.nodes[i];
        for (int k = 0; k < n->n_params; k++) {
            const nz_param *p = &n->params[k];
            int moved = 0, vel = 0;
            for (size_t j = p->off; j < p->off + p->n; j++) {
                moved += m.params[j] != before[j];
                vel += opt.velocity[j] != 0;
            }
            if (nz_param_is_buffer(n, k))
                CHECK(moved == 0 && vel == 0, "buffer %s.%d updated (%d values)", n->name, k,
                      moved);
            else
                CHECK(moved == (int)p->n, "%s.%d: %d of %zu values updated", n->name, k, moved,
                      p->n);
        }
    }
    nz_sgd_free(&opt);
    /* a model without buffers keeps one span */
    nz_model plain;
    nz_zoo_build(&plain, "lenet300", (nz_shape){1, 28, 28}, 10, &e);
    CHECK(nz_sgd_init(&opt, plain.n_params, 0.9f, 0, 0, &e) == NZ_OK &&
              nz_sgd_use_model(&opt, &plain, &e) == NZ_OK && opt.n_spans == 1 &&
              opt.spans[0].off == 0 && opt.spans[0].n == plain.n_params,
          "lenet300: %d spans", opt.n_spans);
    nz_sgd_free(&opt);
    nz_model_free(&plain);
    free(g);
    free(before);
    nz_model_free(&m);
}

/* A failing checkpoint callback ends the run with its error. */
static nz_status failing_cb(const nz_model *m, const nz_train_state *st, void *user,
                            nz_error *err) {
    (void)m;
    (void)st;
    (void)user;
    return nz_fail(err, NZ_ERR_IO, "disk full");
}

static void test_checkpoint_failure(void) {
    nz_dataset ds;
    make_synthetic(&ds, 64, 4);
    nz_model m;
    if (!build_small(&m, 3)) return;
    nz_train_cfg cfg;
    small_cfg(&cfg);
    nz_train_hooks h = {.checkpoint = failing_cb};
    nz_train_result r;
    nz_error e = {0};
    CHECK(nz_train(&m, &ds, NULL, &cfg, &h, &r, &e) == NZ_ERR_IO && strstr(e.msg, "disk full"),
          "checkpoint failure: %s", e.msg);
    nz_model_free(&m);
    nz_dataset_free(&ds);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/nnzip-train-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_schedules();
    test_label_smoothing();
    test_distill();
    test_sgd_spans();
    test_checkpoint_format();
    test_checkpoint_failure();
    test_resume();
    rmdir(g_dir);
    return tl_finish("test_train");
}
