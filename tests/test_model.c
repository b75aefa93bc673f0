/* Model-level tests: zoo shapes and parameter counts, validation, deterministic training,
 * loss going down, save/load round trip with bit-identical outputs. */
#include <stdint.h>
#include <unistd.h>

#include "nnzip/data.h"
#include "nnzip/format.h"
#include "nnzip/model.h"
#include "nnzip/train.h"
#include "synthetic.h"
#include "testlib.h"

static void test_zoo(void) {
    const struct {
        const char *name;
        size_t params;
    } want[] = {{"lenet300", 266610}, {"lenet500", 545810}, {"lenet5", 431080}};
    for (int i = 0; i < 3; i++) {
        nz_model m;
        nz_error e = {0};
        CHECK(nz_zoo_build(&m, want[i].name, (nz_shape){1, 28, 28}, 10, &e) == NZ_OK, "%s", e.msg);
        CHECK(m.n_params == want[i].params, "%s: %zu params, want %zu", want[i].name, m.n_params,
              want[i].params);
        CHECK(nz_model_validate(&m, &e) == NZ_OK, "%s: %s", want[i].name, e.msg);
        nz_model_free(&m);
    }
    nz_model m;
    nz_error e = {0};
    CHECK(nz_zoo_build(&m, "nosuch", (nz_shape){1, 28, 28}, 10, &e) == NZ_ERR_ARG, "unknown");
    CHECK(strstr(e.msg, "nosuch") != NULL, "message names the model: %s", e.msg);
    /* lenet5 on a too-small input must be refused, not crash */
    CHECK(nz_zoo_build(&m, "lenet5", (nz_shape){1, 8, 8}, 10, &e) != NZ_OK, "8x8 lenet5");
}

static void train_once(nz_model *m, const nz_dataset *ds, int epochs, nz_train_result *res) {
    nz_error e = {0};
    nz_zoo_build(m, "lenet5", ds->shape, 10, &e);
    nz_rng r;
    nz_rng_seed(&r, 7);
    nz_model_init_params(m, &r);
    nz_train_cfg cfg;
    nz_train_cfg_default(&cfg);
    cfg.epochs = epochs;
    cfg.batch = 32;
    cfg.lr = 0.05f;
    cfg.seed = 3;
    CHECK(nz_train(m, ds, NULL, &cfg, NULL, res, &e) == NZ_OK, "train: %s", e.msg);
}

static void test_training(void) {
    nz_dataset ds;
    make_synthetic(&ds, 512, 11);
    nz_set_threads(1);
    nz_model a, b;
    nz_train_result ra, rb;
    train_once(&a, &ds, 4, &ra);
    train_once(&b, &ds, 4, &rb);
    CHECK(a.n_params == b.n_params &&
              memcmp(a.params, b.params, sizeof(float) * a.n_params) == 0,
          "same seed, 1 thread: parameters differ");
    /* loss decreases: the synthetic task is easy */
    nz_eval_result ev;
    nz_error e = {0};
    CHECK(nz_evaluate(&a, &ds, 100, &ev, &e) == NZ_OK, "%s", e.msg);
    CHECK(ev.loss < 0.5f * 2.302585f, "loss after training %.4f (chance 2.30)", (double)ev.loss);
    CHECK(ev.error < 20.0f, "train-set error after 4 epochs %.2f%%", (double)ev.error);
    nz_model_free(&b);

    /* save -> load -> identical logits, bit for bit */
    char dir[] = "/tmp/nnzip-test-model-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/m.nnz", dir);
    nz_meta meta;
    memset(&meta, 0, sizeof meta);
    nz_meta_set(&meta, "data", "synthetic");
    CHECK(nz_save(&a, &meta, path, &e) == NZ_OK, "save: %s", e.msg);
    nz_model c;
    nz_meta meta2;
    CHECK(nz_load(path, &c, &meta2, &e) == NZ_OK, "load: %s", e.msg);
    if (e.code == NZ_OK) {
        CHECK(strcmp(nz_meta_get(&meta2, "data") ? nz_meta_get(&meta2, "data") : "", "synthetic") == 0, "meta");
        float *x = malloc(sizeof(float) * 784 * 64);
        uint8_t y[64];
        int32_t idx[64];
        for (int i = 0; i < 64; i++) idx[i] = i;
        nz_batch_fill(&ds, &a.pre, idx, 64, x, y);
        nz_ws *wa = nz_ws_new(&a, 64, &e), *wc = nz_ws_new(&c, 64, &e);
        const float *la = nz_forward(&a, wa, x, 64, 0, NULL);
        const float *lc = nz_forward(&c, wc, x, 64, 0, NULL);
        CHECK(memcmp(la, lc, sizeof(float) * 640) == 0, "logits differ after a round trip");
        nz_ws_free(wa);
        nz_ws_free(wc);
        free(x);
        nz_model_free(&c);
    }
    unlink(path);
    rmdir(dir);
    nz_model_free(&a);
    nz_dataset_free(&ds);
    nz_set_threads(0);
}

static void test_lr_schedule(void) {
    nz_train_cfg cfg;
    nz_train_cfg_default(&cfg);
    cfg.epochs = 10;
    cfg.lr = 0.1f;
    CHECK(fabsf(nz_train_lr(&cfg, 0) - 0.1f) < 1e-6f, "cosine start");
    CHECK(fabsf(nz_train_lr(&cfg, 5) - 0.05f) < 1e-6f, "cosine middle");
    CHECK(nz_train_lr(&cfg, 10) < 1e-6f, "cosine end");
    cfg.sched = NZ_SCHED_STEP;
    cfg.step_epochs = 3;
    cfg.step_gamma = 0.1f;
    CHECK(fabsf(nz_train_lr(&cfg, 2.9) - 0.1f) < 1e-6f, "step before");
    CHECK(fabsf(nz_train_lr(&cfg, 3.0) - 0.01f) < 1e-6f, "step after");
}

int main(void) {
    test_zoo();
    test_lr_schedule();
    test_training();
    return tl_finish("test_model");
}
