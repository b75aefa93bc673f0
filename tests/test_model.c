/* Model-level tests: zoo shapes and parameter counts, validation, deterministic training,
 * loss going down, save/load round trip with bit-identical outputs. Residual networks and
 * VGG-16: parameter counts derived from the architectures (not from the builder), node kinds
 * and shapes, which slots are buffers, a tiny ResNet whose loss falls under SGD, and batch
 * norm's eval and training modes checked by hand through the model. */
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

/* ---------------------------------------------------------------- residual networks and VGG */

static size_t count_op(const nz_model *m, nz_op op) {
    size_t c = 0;
    for (int i = 0; i < m->n_nodes; i++) c += m->nodes[i].op == op;
    return c;
}

/* trainable values (not buffers) and buffer values */
static void count_params(const nz_model *m, size_t *trainable, size_t *buffers) {
    *trainable = *buffers = 0;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_params; k++)
            *(nz_param_is_buffer(&m->nodes[i], k) ? buffers : trainable) +=
                nz_param_numel(&m->nodes[i].params[k]);
}

/* nz_param_is_buffer marks slots 2 and 3 of batch norm nodes (running statistics) and nothing
 * else (every slot index checked, used or not). */
static void check_buffer_slots(const nz_model *m, const char *name) {
    int ok = 1, marked = 0;
    for (int j = 0; j < m->n_nodes; j++) {
        const nz_node *n = &m->nodes[j];
        for (int k = 0; k < NZ_MAX_PARAMS; k++) {
            const int want = n->op == NZ_OP_BATCHNORM && (k == 2 || k == 3);
            ok &= !!nz_param_is_buffer(n, k) == want;
            marked += want;
        }
        if (n->op == NZ_OP_BATCHNORM) ok &= n->n_params == 4;
    }
    CHECK(ok, "%s: nz_param_is_buffer marks other slots than batch norm's 2 and 3", name);
    CHECK(marked == 2 * (int)count_op(m, NZ_OP_BATCHNORM), "%s: %d buffer slots", name, marked);
}

/* conv 3x3 with bias, then BN: trainable 9 cin cout + cout + 2 cout, buffers 2 cout */
static size_t conv_bn_trainable(size_t cin, size_t cout) { return 9 * cin * cout + cout + 2 * cout; }

/* ResNet-(6n+2) for CIFAR (He et al. 2016, option A: parameter-free shortcuts), counted from the
 * architecture: stem 3->16; stage 1: 2n convs 16->16; stage 2: 16->32 then 2n-1 32->32; stage 3:
 * 32->64 then 2n-1 64->64; fc 64->10. Without the conv biases nnzip adds, these are the figures
 * the literature quotes (0.27M, 0.46M, 0.85M: 269,722 / 464,154 / 853,018). */
static void test_zoo_resnet(void) {
    static const struct {
        const char *name;
        int n;
        size_t published;
    } nets[] = {{"resnet20", 3, 269722}, {"resnet32", 5, 464154}, {"resnet56", 9, 853018}};
    for (size_t i = 0; i < sizeof nets / sizeof nets[0]; i++) {
        const size_t n = (size_t)nets[i].n;
        const size_t trainable = conv_bn_trainable(3, 16) + 2 * n * conv_bn_trainable(16, 16) +
                                 conv_bn_trainable(16, 32) + (2 * n - 1) * conv_bn_trainable(32, 32) +
                                 conv_bn_trainable(32, 64) + (2 * n - 1) * conv_bn_trainable(64, 64) +
                                 64 * 10 + 10;
        const size_t bn_channels = 16 + 2 * n * (16 + 32 + 64); /* = conv biases */
        nz_model m;
        nz_error e = {0};
        if (nz_zoo_build(&m, nets[i].name, (nz_shape){3, 32, 32}, 10, &e) != NZ_OK) {
            CHECK(0, "%s: %s", nets[i].name, e.msg);
            continue;
        }
        CHECK(nz_model_validate(&m, &e) == NZ_OK, "%s: %s", nets[i].name, e.msg);
        size_t tr, buf;
        count_params(&m, &tr, &buf);
        CHECK(tr == trainable && buf == 2 * bn_channels && m.n_params == tr + buf,
              "%s: %zu trainable + %zu buffer values (total %zu), want %zu + %zu", nets[i].name, tr,
              buf, m.n_params, trainable, 2 * bn_channels);
        CHECK(trainable - bn_channels == nets[i].published,
              "%s: without conv biases %zu, the literature's count is %zu", nets[i].name,
              trainable - bn_channels, nets[i].published);
        CHECK(count_op(&m, NZ_OP_CONV2D) == 6 * n + 1 && count_op(&m, NZ_OP_BATCHNORM) == 6 * n + 1 &&
                  count_op(&m, NZ_OP_ADD) == 3 * n && count_op(&m, NZ_OP_SHORTCUT) == 2 &&
                  count_op(&m, NZ_OP_RELU) == 6 * n + 1 && count_op(&m, NZ_OP_GAP) == 1 &&
                  count_op(&m, NZ_OP_DENSE) == 1 && count_op(&m, NZ_OP_MAXPOOL) == 0,
              "%s: node kinds (conv %zu, bn %zu, add %zu, shortcut %zu, relu %zu)", nets[i].name,
              count_op(&m, NZ_OP_CONV2D), count_op(&m, NZ_OP_BATCHNORM), count_op(&m, NZ_OP_ADD),
              count_op(&m, NZ_OP_SHORTCUT), count_op(&m, NZ_OP_RELU));
        /* shortcuts enter stages 2 and 3; adds join equal shapes from earlier nodes */
        int shorts_ok = 1, adds_ok = 1, k = 0;
        static const nz_shape short_out[2] = {{32, 16, 16}, {64, 8, 8}};
        for (int j = 1; j < m.n_nodes; j++) {
            const nz_node *nd = &m.nodes[j];
            if (nd->op == NZ_OP_SHORTCUT) {
                const nz_shape s = m.nodes[nd->inputs[0]].out;
                shorts_ok &= k < 2 && nd->stride == 2 && s.c * 2 == nd->units &&
                             memcmp(&nd->out, &short_out[k], sizeof(nz_shape)) == 0;
                k++;
            }
            if (nd->op == NZ_OP_ADD) {
                const nz_shape a = m.nodes[nd->inputs[0]].out, b = m.nodes[nd->inputs[1]].out;
                adds_ok &= nd->n_inputs == 2 && nd->inputs[0] < j && nd->inputs[1] < j &&
                           nd->inputs[0] != nd->inputs[1] && memcmp(&a, &b, sizeof a) == 0 &&
                           m.nodes[nd->inputs[0]].op == NZ_OP_BATCHNORM;
            }
        }
        CHECK(shorts_ok && k == 2, "%s: option-A shortcuts not 16->32 and 32->64 at stride 2",
              nets[i].name);
        CHECK(adds_ok, "%s: an add does not join a BN output with a same-shaped earlier node",
              nets[i].name);
        const nz_node *last = &m.nodes[m.n_nodes - 1];
        const int g = m.n_nodes - 3;
        CHECK(last->op == NZ_OP_DENSE && last->out.c == 10 && m.nodes[g].op == NZ_OP_GAP &&
                  m.nodes[g].out.c == 64 && m.nodes[g].out.h == 1 &&
                  m.nodes[m.nodes[g].inputs[0]].out.h == 8,
              "%s: tail is not gap(64 x 8x8) -> flatten -> fc(10)", nets[i].name);
        CHECK(nz_zoo_default_lr(nets[i].name) > 0, "%s: no default lr", nets[i].name);
        check_buffer_slots(&m, nets[i].name);
        nz_model_free(&m);
    }
}

/* VGG-16 (13 conv3x3-BN-ReLU, 64-64-M-128-128-M-256x3-M-512x3-M-512x3-M, fc): a 2x2 max pool
 * only where the map is >= 2 pixels (28x28 reaches 1x1 after four), a GAP only if more than 1
 * pixel is left (none here). Two builds only: each allocates 15M parameters, seconds under ASan. */
static void test_zoo_vgg16(void) {
    static const int cfg[13] = {64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512};
    static const struct {
        nz_shape in;
        size_t pools, gaps;
        int forward;
    } cases[] = {{{3, 32, 32}, 5, 0, 0}, {{1, 28, 28}, 4, 0, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const nz_shape in = cases[i].in;
        size_t trainable = 512 * 10 + 10, bn = 0, cin = (size_t)in.c;
        for (int j = 0; j < 13; j++) {
            trainable += conv_bn_trainable(cin, (size_t)cfg[j]);
            bn += (size_t)cfg[j];
            cin = (size_t)cfg[j];
        }
        nz_model m;
        nz_error e = {0};
        if (nz_zoo_build(&m, "vgg16", in, 10, &e) != NZ_OK) {
            CHECK(0, "vgg16 on %dx%dx%d: %s", in.c, in.h, in.w, e.msg);
            continue;
        }
        CHECK(nz_model_validate(&m, &e) == NZ_OK, "vgg16: %s", e.msg);
        size_t tr, buf;
        count_params(&m, &tr, &buf);
        CHECK(tr == trainable && buf == 2 * bn,
              "vgg16 on %dx%dx%d: %zu trainable + %zu buffer values, want %zu + %zu", in.c, in.h,
              in.w, tr, buf, trainable, 2 * bn);
        CHECK(count_op(&m, NZ_OP_CONV2D) == 13 && count_op(&m, NZ_OP_BATCHNORM) == 13 &&
                  count_op(&m, NZ_OP_MAXPOOL) == cases[i].pools &&
                  count_op(&m, NZ_OP_GAP) == cases[i].gaps && count_op(&m, NZ_OP_DENSE) == 1,
              "vgg16 on %dx%dx%d: %zu pools (want %zu), %zu GAP (want %zu)", in.c, in.h, in.w,
              count_op(&m, NZ_OP_MAXPOOL), cases[i].pools, count_op(&m, NZ_OP_GAP),
              cases[i].gaps);
        const nz_node *last = &m.nodes[m.n_nodes - 1];
        CHECK(last->op == NZ_OP_DENSE && nz_shape_size(last->out) == 10 &&
                  nz_shape_size(m.nodes[last->inputs[0]].out) == 512,
              "vgg16: the classifier is not fc(512 -> 10)");
        check_buffer_slots(&m, "vgg16");
        if (cases[i].forward) { /* one image through the initialised net, eval mode */
            nz_rng r;
            nz_rng_seed(&r, 5);
            nz_model_init_params(&m, &r);
            const size_t nx = nz_shape_size(in);
            float *x = malloc(sizeof(float) * nx);
            for (size_t j = 0; j < nx; j++) x[j] = nz_rng_normal(&r);
            nz_ws *ws = nz_ws_new(&m, 1, &e);
            int finite = ws != NULL;
            if (ws) {
                const float *z = nz_forward(&m, ws, x, 1, 0, NULL);
                for (int j = 0; j < 10; j++) finite &= isfinite(z[j]);
            }
            CHECK(finite, "vgg16 on %dx%dx%d: forward gives non-finite logits", in.c, in.h,
                  in.w);
            nz_ws_free(ws);
            free(x);
        }
        nz_model_free(&m);
    }
}


/* A tiny ResNet for 1x28x28: avgpool 4 (7x7) -> conv 8 -> bn -> relu -> [conv-bn-relu-conv-bn + x,
 * relu] -> [the same at 16 channels, stride 2, option-A shortcut] -> gap -> flatten -> fc. */
static int build_tiny_resnet(nz_model *m, nz_error *e) {
    if (nz_model_init(m, "tiny-resnet", (nz_shape){1, 28, 28}, 10, e)) return -1;
    int x = nz_model_add_avgpool(m, "pool", 0, 4, 4, e), stem, b1, y, sc;
    if (x >= 0) x = nz_model_add_conv2d(m, "stem_conv", x, 8, 3, 1, 1, e);
    if (x >= 0) x = nz_model_add_batchnorm(m, "stem_bn", x, e);
    if (x >= 0) x = nz_model_add_relu(m, "stem_relu", x, e);
    stem = x;
    if (x >= 0) x = nz_model_add_conv2d(m, "b1a_conv", x, 8, 3, 1, 1, e);
    if (x >= 0) x = nz_model_add_batchnorm(m, "b1a_bn", x, e);
    if (x >= 0) x = nz_model_add_relu(m, "b1a_relu", x, e);
    if (x >= 0) x = nz_model_add_conv2d(m, "b1b_conv", x, 8, 3, 1, 1, e);
    if (x >= 0) x = nz_model_add_batchnorm(m, "b1b_bn", x, e);
    if (x >= 0) x = nz_model_add_add(m, "b1_add", x, stem, e);
    if (x >= 0) x = nz_model_add_relu(m, "b1_relu", x, e);
    b1 = x;
    if (x >= 0) x = nz_model_add_conv2d(m, "b2a_conv", x, 16, 3, 2, 1, e);
    if (x >= 0) x = nz_model_add_batchnorm(m, "b2a_bn", x, e);
    if (x >= 0) x = nz_model_add_relu(m, "b2a_relu", x, e);
    if (x >= 0) x = nz_model_add_conv2d(m, "b2b_conv", x, 16, 3, 1, 1, e);
    y = x >= 0 ? nz_model_add_batchnorm(m, "b2b_bn", x, e) : -1;
    sc = y >= 0 ? nz_model_add_shortcut(m, "b2_short", b1, 16, 2, e) : -1;
    x = sc >= 0 ? nz_model_add_add(m, "b2_add", y, sc, e) : -1;
    if (x >= 0) x = nz_model_add_relu(m, "b2_relu", x, e);
    if (x >= 0) x = nz_model_add_gap(m, "gap", x, e);
    if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, e);
    if (x >= 0) x = nz_model_add_dense(m, "fc", x, 10, e);
    if (x < 0) {
        nz_model_free(m);
        return -1;
    }
    return 0;
}

static int find_node(const nz_model *m, const char *name) {
    for (int i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].name, name) == 0) return i;
    return -1;
}

/* BN node `bn`'s output for channel c against gamma (x - mu) / sqrt(var + eps) + beta in double,
 * x the node's input activations; returns the max relative error. */
static double bn_channel_err(const nz_model *m, const nz_ws *ws, int bn, int c, int B, double mu,
                             double var) {
    const nz_node *n = &m->nodes[bn];
    const nz_shape s = n->out;
    const size_t HW = (size_t)s.h * s.w;
    const float *in = nz_ws_act(ws, n->inputs[0]), *out = nz_ws_act(ws, bn);
    const double g = m->params[n->params[0].off + c], be = m->params[n->params[1].off + c];
    double worst = 0;
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < HW; i++) {
            const size_t j = ((size_t)b * s.c + c) * HW + i;
            const double want = g * (in[j] - mu) / sqrt(var + NZ_BN_EPS) + be;
            worst = fmax(worst, fabs(want - out[j]) / fmax(fabs(want), 1.0));
        }
    return worst;
}

/* channel c of BN node bn's input: mean and biased variance in double */
static void bn_input_stats(const nz_model *m, const nz_ws *ws, int bn, int c, int B, double *mu,
                           double *var) {
    const nz_node *n = &m->nodes[bn];
    const size_t HW = (size_t)n->out.h * n->out.w;
    const float *in = nz_ws_act(ws, n->inputs[0]);
    double s = 0, ss = 0;
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < HW; i++) s += in[((size_t)b * n->out.c + c) * HW + i];
    *mu = s / ((double)B * HW);
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < HW; i++) {
            const double d = in[((size_t)b * n->out.c + c) * HW + i] - *mu;
            ss += d * d;
        }
    *var = ss / ((double)B * HW);
}

/* 20 SGD steps (lr 0.1, momentum 0.9, weight decay 5e-4, buffers skipped) of a tiny ResNet on
 * one fixed synthetic batch of 32: the loss must fall clearly, to < 0.3 x its start (from ~2.37,
 * chance; 0.12..0.29 after 20 steps over 8 initialisations), and be lower at the end than
 * halfway. The optimizer must leave the running statistics alone. Then batch
 * norm's two modes, by hand on one channel of the first BN: eval uses the running statistics
 * (and its logits differ from training mode's on the same batch); training uses the batch's
 * and moves the running statistics by momentum 0.1 towards them, with the unbiased variance. */
static void test_tiny_resnet_training(void) {
    nz_dataset ds;
    make_synthetic(&ds, 32, 21);
    nz_model m;
    nz_error e = {0};
    if (build_tiny_resnet(&m, &e) != 0 || nz_model_validate(&m, &e) != NZ_OK) {
        CHECK(0, "tiny resnet: %s", e.msg);
        nz_dataset_free(&ds);
        return;
    }
    nz_rng r;
    nz_rng_seed(&r, 17);
    nz_model_init_params(&m, &r);
    m.pre.mean[0] = 0.2f;
    m.pre.std[0] = 0.3f;
    const int B = 32, steps = 20;
    float *x = malloc(sizeof(float) * 784 * B), *dl = malloc(sizeof(float) * 10 * B);
    uint8_t y[32];
    int32_t idx[32];
    for (int i = 0; i < B; i++) idx[i] = i;
    nz_batch_fill(&ds, &m.pre, idx, B, x, y);
    nz_ws *ws = nz_ws_new(&m, B, &e);
    nz_sgd opt;
    int ok = ws && nz_sgd_init(&opt, m.n_params, 0.9f, 5e-4f, 0, &e) == NZ_OK &&
             nz_sgd_use_model(&opt, &m, &e) == NZ_OK;
    CHECK(ok, "tiny resnet setup: %s", e.msg);
    float loss[20];
    int buffers_kept = 1, finite = 1;
    float *before = malloc(sizeof(float) * m.n_params);
    for (int t = 0; ok && t < steps; t++) {
        const float *z = nz_forward(&m, ws, x, B, 1, NULL);
        loss[t] = nz_softmax_xent(z, y, B, 10, dl, NULL);
        finite &= isfinite(loss[t]);
        nz_ws_zero_grads(ws);
        nz_backward(&m, ws, dl, B);
        memcpy(before, m.params, sizeof(float) * m.n_params);
        nz_sgd_step(&opt, m.params, nz_ws_grads(ws), 0.1f);
        for (int i = 0; i < m.n_nodes; i++)
            for (int k = 0; k < m.nodes[i].n_params; k++) {
                const nz_param *p = &m.nodes[i].params[k];
                if (nz_param_is_buffer(&m.nodes[i], k))
                    buffers_kept &= memcmp(m.params + p->off, before + p->off,
                                           sizeof(float) * p->n) == 0;
            }
    }
    if (ok) {
        /* the backward hands buffers between nodes (an add's gradient to its input): a second
         * pass over the same batch gives the same gradients bit for bit, in eval mode (no
         * running statistics change between the two) */
        float *g1 = malloc(sizeof(float) * m.n_params);
        for (int pass = 0; pass < 3; pass++) {
            nz_forward(&m, ws, x, B, 0, NULL);
            nz_ws_zero_grads(ws);
            nz_backward(&m, ws, dl, B);
            if (pass == 0) memcpy(g1, nz_ws_grads(ws), sizeof(float) * m.n_params);
        }
        CHECK(memcmp(g1, nz_ws_grads(ws), sizeof(float) * m.n_params) == 0,
              "tiny resnet: repeated backward passes give different gradients");
        free(g1);
        nz_sgd_free(&opt);
        printf("tiny resnet: loss %.4f -> %.4f -> %.4f over %d SGD steps on one batch\n",
               (double)loss[0], (double)loss[steps / 2], (double)loss[steps - 1], steps);
        CHECK(finite, "tiny resnet: non-finite loss");
        CHECK(loss[steps - 1] < 0.3f * loss[0] && loss[steps - 1] < loss[steps / 2],
              "tiny resnet: loss %.4f -> %.4f -> %.4f does not decrease clearly", (double)loss[0],
              (double)loss[steps / 2], (double)loss[steps - 1]);
        CHECK(buffers_kept, "tiny resnet: the optimizer changed running statistics");
    }

    /* eval mode: running statistics, by hand on channel 0 of stem_bn */
    const int bn = find_node(&m, "stem_bn");
    if (ok && bn > 0) {
        const nz_node *n = &m.nodes[bn];
        const float rm = m.params[n->params[2].off], rv = m.params[n->params[3].off];
        CHECK(rm != 0.0f && rv != 1.0f, "tiny resnet: running statistics never updated (%g, %g)",
              (double)rm, (double)rv);
        float *ze = malloc(sizeof(float) * 10 * B);
        memcpy(ze, nz_forward(&m, ws, x, B, 0, NULL), sizeof(float) * 10 * B);
        /* stem_bn feeds only stem_relu: they ran as one kernel and the bn output was not kept;
         * keeping every activation runs them apart, with the same logits bit for bit */
        CHECK(nz_ws_act(ws, bn) == NULL, "tiny resnet: stem_bn + stem_relu did not run fused");
        /* so did each residual add and the relu reading it */
        const int add = find_node(&m, "b1_add");
        CHECK(add > 0 && nz_ws_act(ws, add) == NULL,
              "tiny resnet: b1_add + its relu did not run fused");
        /* and b1b_bn with that add and relu (its other input, stem, comes first), but not
         * b2b_bn, whose shortcut is computed after it */
        const int bnb = find_node(&m, "b1b_bn"), bnb2 = find_node(&m, "b2b_bn");
        CHECK(bnb > 0 && nz_ws_act(ws, bnb) == NULL && bnb2 > 0 && nz_ws_act(ws, bnb2) != NULL,
              "tiny resnet: b1b_bn + b1_add + b1_relu did not run fused (or b2b_bn did)");
        float *gf = malloc(sizeof(float) * m.n_params);
        nz_ws_zero_grads(ws);
        nz_backward(&m, ws, dl, B);
        memcpy(gf, nz_ws_grads(ws), sizeof(float) * m.n_params);
        nz_ws_keep_acts(ws, 1);
        const float *zk = nz_forward(&m, ws, x, B, 0, NULL);
        CHECK(nz_ws_act(ws, bn) != NULL && memcmp(zk, ze, sizeof(float) * 10 * B) == 0,
              "tiny resnet: logits with every activation kept differ from the fused run");
        nz_ws_zero_grads(ws);
        nz_backward(&m, ws, dl, B);
        CHECK(memcmp(gf, nz_ws_grads(ws), sizeof(float) * m.n_params) == 0,
              "tiny resnet: gradients with every activation kept differ from the fused run");
        free(gf);
        zk = nz_forward(&m, ws, x, B, 0, NULL);
        if (add > 0) {
            /* kept apart: the add's output, and the relu's equal to max(add, 0) */
            const float *a = nz_ws_act(ws, add), *ra = nz_ws_act(ws, add + 1);
            const size_t na = nz_shape_size(m.nodes[add].out) * (size_t)B;
            int same = a && ra && m.nodes[add + 1].op == NZ_OP_RELU;
            for (size_t i = 0; same && i < na; i++) same = ra[i] == (a[i] > 0.0f ? a[i] : 0.0f);
            CHECK(same, "tiny resnet: b1_add kept apart is not the relu's input");
        }
        double mu, var;
        bn_input_stats(&m, ws, bn, 0, B, &mu, &var);
        const double e_run = bn_channel_err(&m, ws, bn, 0, B, rm, rv);
        const double e_batch = bn_channel_err(&m, ws, bn, 0, B, mu, var);
        CHECK(e_run < 1e-5, "tiny resnet eval: stem_bn channel 0 is not gamma (x - running_mean) "
                            "/ sqrt(running_var + eps) + beta (err %.3g)", e_run);
        CHECK(e_batch > 1e-3, "tiny resnet eval: stem_bn channel 0 matches batch statistics "
                              "(err %.3g): running stats not used?", e_batch);
        float *params = malloc(sizeof(float) * m.n_params);
        memcpy(params, m.params, sizeof(float) * m.n_params);
        /* training mode on the same batch: batch statistics, running statistics updated */
        const float *zt = nz_forward(&m, ws, x, B, 1, NULL);
        double diff = 0;
        for (int i = 0; i < 10 * B; i++) diff = fmax(diff, fabs((double)zt[i] - ze[i]));
        CHECK(diff > 1e-3, "tiny resnet: eval and training logits agree (max diff %.3g)", diff);
        bn_input_stats(&m, ws, bn, 0, B, &mu, &var);
        const double e_train = bn_channel_err(&m, ws, bn, 0, B, mu, var);
        CHECK(e_train < 1e-5, "tiny resnet training: stem_bn channel 0 is not the batch "
                              "normalisation (err %.3g)", e_train);
        const double N = (double)B * n->out.h * n->out.w;
        const double rm2 = 0.9 * rm + 0.1 * mu, rv2 = 0.9 * rv + 0.1 * var * N / (N - 1);
        const float grm = m.params[n->params[2].off], grv = m.params[n->params[3].off];
        CHECK(fabs(grm - rm2) <= 1e-6 * fmax(fabs(rm2), 1.0) && fabs(grv - rv2) <= 1e-6 * rv2,
              "tiny resnet: running mean/var %.7g/%.7g after a training forward, want %.7g/%.7g",
              (double)grm, (double)grv, rm2, rv2);
        /* and only the running statistics changed */
        int others = 1;
        for (int i = 0; i < m.n_nodes; i++)
            for (int k = 0; k < m.nodes[i].n_params; k++)
                if (!nz_param_is_buffer(&m.nodes[i], k)) {
                    const nz_param *p = &m.nodes[i].params[k];
                    others &= memcmp(m.params + p->off, params + p->off, sizeof(float) * p->n) == 0;
                }
        CHECK(others, "tiny resnet: a training forward changed trainable parameters");
        free(params);
        free(ze);
    }
    free(before);
    free(x);
    free(dl);
    nz_ws_free(ws);
    nz_model_free(&m);
    nz_dataset_free(&ds);
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
    test_zoo_resnet();
    test_zoo_vgg16();
    test_lr_schedule();
    test_training();
    test_tiny_resnet_training();
    return tl_finish("test_model");
}
