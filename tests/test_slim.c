/* Structured slimming (src/compress/normdir.c, the 2019-thesis method): every fc neuron's row
 * W[o,:] = g[o] V[o,:]/||V[o,:]|| and every conv kernel W[o,i] = g[o,i] V[o,i]/||V[o,i]||_F.
 *
 *  - nz_normdir_convert / nz_normdir_restore on lenet300 and lenet5: the logits do not change
 *    (1e-5 relative), every direction has unit norm, g is the group's norm, zero groups give
 *    g = 0 and come back exactly zero, and the round trip restores W within 1e-6.
 *  - nz_slim_remove is exact: whole fc rows and conv output channels zeroed (their biases
 *    non-zero, so the constant they emit must be folded into the next layer's bias) leave a
 *    smaller model with the expected unit counts and the same logits (1e-4 relative); the
 *    classifier keeps all outputs; a layer with every row zeroed keeps one unit. A dense layer
 *    reading a conv's [C, H, W] output without a flatten, or the raw image, runs in a child
 *    process (a heap overflow there must fail one check, not the whole binary).
 *  - nz_slim end to end on a synthetic set (lenet300, strong lambda, few epochs): the proximal
 *    method removes neurons (exact zeros), the result validates, saves and loads bit for bit and
 *    still classifies; the subgradient method runs.
 *  - refusals: a norm x direction model or a sparse tensor is NZ_ERR_ARG, the model unchanged.
 *
 * Usage: test_slim [anything]   (run_tests.sh passes the torch reference path; ignored) */
#include <spawn.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compress/normdir.h"
#include "nnzip/compress.h"
#include "nnzip/data.h"
#include "nnzip/format.h"
#include "nnzip/model.h"
#include "nnzip/train.h"
#include "synthetic.h"
#include "testlib.h"

extern char **environ;

#define CONVERT_TOL 1e-5 /* logits before/after nz_normdir_convert, max|a-b| / max|b| */
#define RESTORE_TOL 1e-6 /* W after convert + restore, per element relative */
#define REMOVE_TOL 1e-4  /* logits before/after nz_slim_remove, max|a-b| / max|b| */
#define BATCH 16

/* ---------------------------------------------------------------- helpers */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* max|a - b| / max(max|b|, tiny) */
static double norm_err(const float *a, const float *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > d || e != e) d = (e != e) ? INFINITY : e;
        if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
    }
    return d / (m > 1e-30 ? m : 1e-30);
}

/* B inputs in [0, 1) (what the stored preprocessing gives for pixels) */
static float *random_inputs(const nz_model *m, int B, uint64_t seed) {
    const size_t n = (size_t)B * nz_shape_size(m->in);
    float *x = malloc(sizeof(float) * n);
    nz_rng r;
    nz_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = nz_rng_uniform(&r);
    return x;
}

/* logits [B, n_classes] of an eval-mode forward (malloc'ed copy), NULL on failure */
static float *logits_of(const nz_model *m, const float *x, int B) {
    nz_error err;
    nz_ws *ws = nz_ws_new(m, B, &err);
    if (!ws) {
        CHECK(0, "nz_ws_new: %s", err.msg);
        return NULL;
    }
    const size_t n = (size_t)B * m->n_classes;
    float *z = malloc(sizeof(float) * n);
    memcpy(z, nz_forward(m, ws, x, B, 0, NULL), sizeof(float) * n);
    nz_ws_free(ws);
    return z;
}

static int node_id(const nz_model *m, const char *name) {
    for (int i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].name, name) == 0) return i;
    return -1;
}

static const float *param_of(const nz_model *m, const char *node, int k) {
    int id = node_id(m, node);
    return id < 0 ? NULL : m->params + m->nodes[id].params[k].off;
}

static int build(nz_model *m, const char *arch, uint64_t seed) {
    nz_error err;
    if (nz_zoo_build(m, arch, (nz_shape){1, 28, 28}, 10, &err) != NZ_OK) {
        CHECK(0, "nz_zoo_build %s: %s", arch, err.msg);
        return -1;
    }
    nz_rng r;
    nz_rng_seed(&r, seed);
    nz_model_init_params(m, &r);
    return 0;
}

static int is_plain(const nz_model *m) {
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == NZ_OP_NDENSE || m->nodes[i].op == NZ_OP_NCONV2D) return 0;
    return 1;
}

/* dst = a copy of m; on failure m is freed and -1 returned */
static int copy_or_free(nz_model *dst, nz_model *m) {
    nz_error err;
    if (nz_model_copy(dst, m, &err) == NZ_OK) return 0;
    CHECK(0, "nz_model_copy: %s", err.msg);
    nz_model_free(m);
    return -1;
}

/* ---------------------------------------------------------------- convert / restore */

/* Zeroes the weights (not the bias) of group j of a plain weighted node: an fc row, or one conv
 * kernel W[o, i] (j = o * C_in + i). */
static void zero_kernel(nz_model *m, const char *node, int j) {
    const nz_node *n = &m->nodes[node_id(m, node)];
    const size_t S = n->op == NZ_OP_CONV2D ? (size_t)n->kh * n->kw
                                           : n->params[0].n / (size_t)n->units;
    memset(m->params + n->params[0].off + (size_t)j * S, 0, sizeof(float) * S);
}

static void test_convert(const char *arch) {
    nz_model m, orig;
    nz_error err;
    if (build(&m, arch, 101) != 0) return;
    /* one zero group per weighted layer kind: restore must give it back exactly zero */
    if (strcmp(arch, "lenet5") == 0) {
        zero_kernel(&m, "conv2", 3 * 20 + 7); /* kernel (3, 7) */
        zero_kernel(&m, "fc1", 5);
    } else {
        zero_kernel(&m, "fc1", 5);
    }
    if (copy_or_free(&orig, &m) != 0) return;
    float *x = random_inputs(&m, BATCH, 5);
    float *z0 = logits_of(&m, x, BATCH);
    const nz_status st = nz_normdir_convert(&m, &err);
    CHECK(st == NZ_OK, "%s: nz_normdir_convert: %s", arch, err.msg);
    if (st != NZ_OK || !z0) goto done;
    CHECK(nz_model_validate(&m, &err) == NZ_OK, "%s converted: %s", arch, err.msg);
    CHECK(m.n_nodes == orig.n_nodes, "%s: convert changed the node count", arch);

    double worst_unit = 0, worst_g = 0;
    int layers = 0, zero_ok = 1, bias_ok = 1;
    for (int i = 0; i < m.n_nodes; i++) {
        const nz_node *n = &m.nodes[i], *o = &orig.nodes[i];
        if (o->op != NZ_OP_DENSE && o->op != NZ_OP_CONV2D) {
            CHECK(n->op == o->op, "%s: node '%s' changed kind", arch, n->name);
            continue;
        }
        layers++;
        const nz_op want = o->op == NZ_OP_DENSE ? NZ_OP_NDENSE : NZ_OP_NCONV2D;
        CHECK(n->op == want && n->n_params == 3, "%s: node '%s' is %s with %d tensors", arch,
              n->name, nz_op_name(n->op), n->n_params);
        if (n->op != want || n->n_params != 3) continue;
        /* one norm per fc neuron / per conv kernel (oc x ic) */
        const size_t G = o->op == NZ_OP_DENSE ? (size_t)o->units
                                              : (size_t)o->params[0].dims[0] * o->params[0].dims[1];
        CHECK(n->params[1].n == G, "%s '%s': %zu norms, want %zu", arch, n->name, n->params[1].n,
              G);
        if (n->params[1].n != G || n->params[0].n != o->params[0].n) continue;
        const size_t S = n->params[0].n / G;
        const float *V = m.params + n->params[0].off, *g = m.params + n->params[1].off;
        const float *W = orig.params + o->params[0].off;
        for (size_t j = 0; j < G; j++) {
            double vv = 0, ww = 0;
            for (size_t q = 0; q < S; q++) {
                vv += (double)V[j * S + q] * V[j * S + q];
                ww += (double)W[j * S + q] * W[j * S + q];
            }
            if (ww == 0) {
                zero_ok &= g[j] == 0.0f && vv == 0;
                continue;
            }
            worst_unit = fmax(worst_unit, fabs(sqrt(vv) - 1.0));
            worst_g = fmax(worst_g, fabs(g[j] - sqrt(ww)) / sqrt(ww));
        }
        bias_ok &= memcmp(m.params + n->params[2].off, orig.params + o->params[1].off,
                          sizeof(float) * o->params[1].n) == 0;
    }
    const int want_layers = strcmp(arch, "lenet5") == 0 ? 4 : 3;
    CHECK(layers == want_layers, "%s: %d weighted layers, want %d", arch, layers, want_layers);
    CHECK(worst_unit <= 1e-6, "%s: a direction's norm is off 1 by %.3g", arch, worst_unit);
    CHECK(worst_g <= 1e-6, "%s: g differs from the group norm by %.3g (relative)", arch, worst_g);
    CHECK(zero_ok, "%s: a zero group did not become g = 0, V = 0", arch);
    CHECK(bias_ok, "%s: biases changed in the conversion", arch);

    float *z1 = logits_of(&m, x, BATCH);
    const double ec = z1 ? norm_err(z1, z0, (size_t)BATCH * 10) : INFINITY;
    CHECK(ec <= CONVERT_TOL, "%s: logits after convert differ by %.3g (> %.0e)", arch, ec,
          CONVERT_TOL);
    free(z1);

    const nz_status rs = nz_normdir_restore(&m, &err);
    CHECK(rs == NZ_OK, "%s: nz_normdir_restore: %s", arch, err.msg);
    double er = INFINITY;
    if (rs == NZ_OK) {
        CHECK(nz_model_validate(&m, &err) == NZ_OK, "%s restored: %s", arch, err.msg);
        CHECK(is_plain(&m) && m.n_params == orig.n_params, "%s: restore gives %zu params, had %zu",
              arch, m.n_params, orig.n_params);
        int same_layout = m.n_params == orig.n_params;
        for (int i = 0; i < m.n_nodes && same_layout; i++) {
            same_layout &= m.nodes[i].op == orig.nodes[i].op &&
                           m.nodes[i].n_params == orig.nodes[i].n_params;
            for (int k = 0; k < m.nodes[i].n_params && same_layout; k++)
                same_layout &= m.nodes[i].params[k].off == orig.nodes[i].params[k].off &&
                               m.nodes[i].params[k].n == orig.nodes[i].params[k].n;
        }
        CHECK(same_layout, "%s: restore does not give the original layout back", arch);
        if (same_layout) {
            er = 0;
            int exact_zero = 1;
            for (size_t i = 0; i < m.n_params; i++) {
                if (orig.params[i] == 0.0f) {
                    exact_zero &= m.params[i] == 0.0f;
                    continue;
                }
                er = fmax(er, fabs((double)m.params[i] - orig.params[i]) / fabs(orig.params[i]));
            }
            CHECK(er <= RESTORE_TOL, "%s: restored weights off by %.3g (relative, > %.0e)", arch,
                  er, RESTORE_TOL);
            CHECK(exact_zero, "%s: zero weights are not exactly zero after restore", arch);
        }
        float *z2 = logits_of(&m, x, BATCH);
        const double e2 = z2 ? norm_err(z2, z0, (size_t)BATCH * 10) : INFINITY;
        CHECK(e2 <= CONVERT_TOL, "%s: logits after restore differ by %.3g", arch, e2);
        free(z2);
    }
    printf("  convert %-8s logits err %.2e, ||V|| - 1 <= %.2e, g rel err %.2e, restore W rel err "
           "%.2e\n",
           arch, ec, worst_unit, worst_g, er);
done:
    free(x), free(z0);
    nz_model_free(&orig);
    nz_model_free(&m);
}

/* ---------------------------------------------------------------- removal */

/* Zeroes the weights of output units `units` of a plain weighted node and gives them biases of
 * alternating sign (+0.3, -0.2: a positive one survives a relu and must be folded forward). */
static void remove_units(nz_model *m, const char *node, const int *units, int n_units) {
    const nz_node *n = &m->nodes[node_id(m, node)];
    const size_t S = n->params[0].n / (size_t)n->units;
    float *W = m->params + n->params[0].off, *b = m->params + n->params[1].off;
    for (int k = 0; k < n_units; k++) {
        memset(W + (size_t)units[k] * S, 0, sizeof(float) * S);
        b[units[k]] = k % 2 == 0 ? 0.3f : -0.2f;
    }
}

static int range_units(int *u, int lo, int hi) {
    int n = 0;
    for (int i = lo; i < hi; i++) u[n++] = i;
    return n;
}

static int expect_dims(const nz_model *m, const char *node, int k, int ndim, const int *dims) {
    int id = node_id(m, node);
    if (id < 0) {
        CHECK(0, "slimmed model has no node '%s'", node);
        return 0;
    }
    const nz_param *p = &m->nodes[id].params[k];
    int ok = p->ndim == ndim;
    for (int i = 0; i < ndim && ok; i++) ok = p->dims[i] == dims[i];
    CHECK(ok, "'%s' tensor %d: %d dims [%d, %d, %d, %d], want [%d, %d, %d, %d]", node, k, p->ndim,
          p->dims[0], ndim > 1 ? p->dims[1] : 0, ndim > 2 ? p->dims[2] : 0,
          ndim > 3 ? p->dims[3] : 0, dims[0], ndim > 1 ? dims[1] : 0, ndim > 2 ? dims[2] : 0,
          ndim > 3 ? dims[3] : 0);
    return ok;
}

/* Runs nz_slim_remove on m and compares logits with the unslimmed model's. Returns the status. */
static nz_status remove_and_compare(const char *what, nz_model *m, double *err_out) {
    nz_error err;
    float *x = random_inputs(m, BATCH, 9);
    float *z0 = logits_of(m, x, BATCH);
    const size_t params0 = m->n_params;
    const nz_status st = nz_slim_remove(m, &err);
    CHECK(st == NZ_OK, "%s: nz_slim_remove: %s", what, err.msg);
    *err_out = INFINITY;
    if (st == NZ_OK) {
        CHECK(nz_model_validate(m, &err) == NZ_OK, "%s: slimmed model: %s", what, err.msg);
        CHECK(is_plain(m) && m->n_params < params0, "%s: %zu params after, %zu before", what,
              m->n_params, params0);
        CHECK(m->n_classes == 10 && m->nodes[m->n_nodes - 1].units == 10,
              "%s: the classifier lost outputs (%d)", what, m->nodes[m->n_nodes - 1].units);
        float *z1 = logits_of(m, x, BATCH);
        *err_out = z0 && z1 ? norm_err(z1, z0, (size_t)BATCH * 10) : INFINITY;
        CHECK(*err_out <= REMOVE_TOL, "%s: logits after removal differ by %.3g (> %.0e)", what,
              *err_out, REMOVE_TOL);
        free(z1);
    }
    free(x), free(z0);
    return st;
}

static void test_remove_mlp(void) {
    const char *what = "lenet500 remove";
    nz_model m, orig;
    if (build(&m, "lenet500", 202) != 0) return;
    int u1[600], u2[400];
    int n1 = range_units(u1, 100, 150); /* 50 rows of fc1 ... */
    u1[n1++] = 0, u1[n1++] = 7, u1[n1++] = 499;
    int n2 = range_units(u2, 50, 100); /* ... and 53 of fc2 (and its first) */
    u2[n2++] = 0, u2[n2++] = 1, u2[n2++] = 299;
    remove_units(&m, "fc1", u1, n1);
    remove_units(&m, "fc2", u2, n2);
    if (copy_or_free(&orig, &m) != 0) return;
    double e;
    if (remove_and_compare(what, &m, &e) == NZ_OK) {
        const int k1 = 500 - n1, k2 = 300 - n2;
        expect_dims(&m, "fc1", 0, 2, (int[]){k1, 784});
        expect_dims(&m, "fc1", 1, 1, (int[]){k1});
        expect_dims(&m, "fc2", 0, 2, (int[]){k2, k1});
        expect_dims(&m, "fc2", 1, 1, (int[]){k2});
        expect_dims(&m, "fc3", 0, 2, (int[]){10, k2});
        /* the kept rows of fc1 are the original rows, in order, with their biases */
        const float *W = param_of(&m, "fc1", 0), *b = param_of(&m, "fc1", 1);
        const float *W0 = param_of(&orig, "fc1", 0), *b0 = param_of(&orig, "fc1", 1);
        int gathered = W && b && m.nodes[node_id(&m, "fc1")].units == k1;
        for (int r = 0, r2 = 0; r < 500 && gathered; r++) {
            int removed = 0;
            for (int k = 0; k < n1; k++) removed |= u1[k] == r;
            if (removed) continue;
            gathered &= memcmp(W + (size_t)r2 * 784, W0 + (size_t)r * 784, sizeof(float) * 784) ==
                            0 &&
                        b[r2] == b0[r];
            r2++;
        }
        CHECK(gathered, "%s: fc1's kept rows are not the original rows in order", what);
        printf("  %s: fc1 500 -> %d, fc2 300 -> %d, logits err %.2e\n", what, k1, k2, e);
    }
    nz_model_free(&orig);
    nz_model_free(&m);
}

static void test_remove_conv(void) {
    const char *what = "lenet5 remove";
    nz_model m;
    if (build(&m, "lenet5", 303) != 0) return;
    /* conv1: 3 of 20 channels; conv2: 5 of 50 (all 20 input kernels each); fc1: 40 rows */
    int c1[] = {2, 5, 19}, c2[] = {0, 13, 14, 27, 49}, f1[64];
    int nf = range_units(f1, 200, 240);
    remove_units(&m, "conv1", c1, 3);
    remove_units(&m, "conv2", c2, 5);
    remove_units(&m, "fc1", f1, nf);
    /* a kernel zeroed inside a surviving channel must not remove anything */
    zero_kernel(&m, "conv2", 1 * 20 + 4);
    double e;
    if (remove_and_compare(what, &m, &e) == NZ_OK) {
        const int k1 = 17, k2 = 45, kf = 500 - nf;
        expect_dims(&m, "conv1", 0, 4, (int[]){k1, 1, 5, 5});
        expect_dims(&m, "conv2", 0, 4, (int[]){k2, k1, 5, 5});
        expect_dims(&m, "conv2", 1, 1, (int[]){k2});
        /* flatten -> fc1 loses H x W = 4 x 4 columns per removed conv2 channel */
        expect_dims(&m, "fc1", 0, 2, (int[]){kf, k2 * 16});
        expect_dims(&m, "fc2", 0, 2, (int[]){10, kf});
        int fl = node_id(&m, "flatten");
        CHECK(fl >= 0 && m.nodes[fl].out.c == k2 * 16, "lenet5: flatten gives %d features",
              fl >= 0 ? m.nodes[fl].out.c : -1);
        printf("  %s: conv1 20 -> %d, conv2 50 -> %d, fc1 500 -> %d (%d inputs), logits err "
               "%.2e\n",
               what, k1, k2, kf, k2 * 16, e);
    }
    nz_model_free(&m);
}

/* A layer whose rows are all zero keeps exactly one unit, which carries its bias. */
/* Input features: fc1 columns zeroed (the border of the image and a block inside) leave the
 * model through a select node after the input; fc1 keeps only the other columns, in order, and
 * the logits do not change. Then the slimmed model saves and loads bit for bit, and rejects a
 * select whose feature numbers do not increase. */
static void test_remove_inputs(void) {
    const char *what = "lenet300 input columns";
    nz_model m, orig;
    nz_error err;
    if (build(&m, "lenet300", 303) != 0) return;
    const nz_node *fc1 = &m.nodes[node_id(&m, "fc1")];
    float *W = m.params + fc1->params[0].off;
    unsigned char dead[784] = {0};
    int n_dead = 0;
    for (int p = 0; p < 784; p++) {
        const int y = p / 28, x = p % 28;
        dead[p] = y < 2 || y > 25 || x < 3 || x > 24 || (y >= 10 && y < 14 && x >= 10 && x < 20);
        n_dead += dead[p];
        for (int r = 0; r < 300 && dead[p]; r++) W[(size_t)r * 784 + p] = 0.0f;
    }
    if (copy_or_free(&orig, &m) != 0) return;
    double e;
    if (remove_and_compare(what, &m, &e) == NZ_OK) {
        const int k = 784 - n_dead, sel = node_id(&m, "fc1_in");
        CHECK(sel > 0 && m.nodes[sel].op == NZ_OP_SELECT && m.nodes[sel].units == k &&
                  m.nodes[sel].inputs[0] == node_id(&m, "flatten") &&
                  m.nodes[node_id(&m, "fc1")].inputs[0] == sel && m.n_nodes == orig.n_nodes + 1,
              "%s: no select node of %d features between flatten and fc1", what, k);
        expect_dims(&m, "fc1", 0, 2, (int[]){300, k});
        const float *ix = sel >= 0 ? m.params + m.nodes[sel].params[0].off : NULL;
        const float *W1 = param_of(&m, "fc1", 0), *W0 = param_of(&orig, "fc1", 0);
        int ok = ix && W1 && W0;
        for (int p = 0, j = 0; p < 784 && ok; p++) {
            if (dead[p]) continue;
            ok &= ix[j] == (float)p;
            for (int r = 0; r < 300 && ok; r++) ok &= W1[(size_t)r * k + j] == W0[(size_t)r * 784 + p];
            j++;
        }
        CHECK(ok, "%s: the kept features or fc1's kept columns are not the original ones", what);
        printf("  %s: 784 -> %d features, logits err %.2e\n", what, k, e);
        /* save -> load -> the same logits; a file whose select is out of order is refused */
        char dir[] = "/tmp/nnzip-test-slim-XXXXXX";
        if (sel > 0 && mkdtemp(dir)) {
            char path[256];
            snprintf(path, sizeof path, "%s/sel.nnz", dir);
            nz_model l;
            CHECK(nz_save(&m, NULL, path, &err) == NZ_OK, "%s: save: %s", what, err.msg);
            if (nz_load(path, &l, NULL, &err) != NZ_OK) {
                CHECK(0, "%s: load: %s", what, err.msg);
            } else {
                float *x = random_inputs(&m, BATCH, 5);
                float *za = logits_of(&m, x, BATCH), *zb = logits_of(&l, x, BATCH);
                CHECK(za && zb && memcmp(za, zb, sizeof(float) * BATCH * 10) == 0,
                      "%s: logits differ after save/load", what);
                CHECK(sel > 0 && l.nodes[sel].params[0].store == NZ_STORE_F16,
                      "%s: feature numbers not stored as binary16", what);
                free(x), free(za), free(zb);
                nz_model_free(&l);
            }
            float *ixw = m.params + m.nodes[sel > 0 ? sel : 1].params[0].off;
            const float keep = ixw[1];
            ixw[1] = ixw[0];
            CHECK(nz_model_validate(&m, &err) == NZ_ERR_FORMAT && strstr(err.msg, "increasing"),
                  "%s: a select with a repeated feature validated", what);
            ixw[1] = keep;
            unlink(path);
            rmdir(dir);
        }
    }
    nz_model_free(&orig);
    nz_model_free(&m);
}

/* LeNet-5's fc1 reads conv features (50 channels x 4 x 4): columns zeroed there leave through
 * a select node between flatten and fc1, exactly; conv2 keeps all its channels. */
static void test_remove_conv_columns(void) {
    const char *what = "lenet5 fc1 columns";
    nz_model m;
    if (build(&m, "lenet5", 505) != 0) return;
    const nz_node *fc1 = &m.nodes[node_id(&m, "fc1")];
    const int F = (int)(fc1->params[0].n / (size_t)fc1->units);
    float *W = m.params + fc1->params[0].off;
    int n_dead = 0;
    for (int j = 0; j < F; j++)
        if (j % 3 == 1 || j % 16 == 0) { /* never all 16 positions of a channel */
            n_dead++;
            for (int r = 0; r < fc1->units; r++) W[(size_t)r * F + j] = 0.0f;
        }
    double e;
    if (remove_and_compare(what, &m, &e) == NZ_OK) {
        const int sel = node_id(&m, "fc1_in");
        CHECK(sel > 0 && m.nodes[sel].units == F - n_dead &&
                  m.nodes[node_id(&m, "conv2")].units == 50,
              "%s: want %d of %d features kept and conv2 whole", what, F - n_dead, F);
        printf("  %s: %d -> %d features, logits err %.2e\n", what, F,
               sel > 0 ? m.nodes[sel].units : -1, e);
    }
    nz_model_free(&m);
}

/* nz_slim_column_prox is the group soft threshold of W's columns: on lenet300's fc1 (as norm x
 * direction, some rows scaled up so that column norms spread), W after the step equals each
 * column of W before times max(0, 1 - t/||column||) (1e-5 relative), columns under t are
 * exactly zero, and V's rows keep unit norm. */
static void test_column_prox(void) {
    nz_model m;
    nz_error err;
    if (build(&m, "lenet300", 707) != 0) return;
    if (nz_normdir_convert(&m, &err) != NZ_OK) {
        CHECK(0, "convert: %s", err.msg);
        nz_model_free(&m);
        return;
    }
    const int i = node_id(&m, "fc1");
    const nz_node *n = &m.nodes[i];
    const int R = n->units, F = 784;
    float *V = m.params + n->params[0].off, *g = m.params + n->params[1].off;
    for (int j = 0; j < F; j += 7) /* some columns much stronger than the rest */
        for (int r = 0; r < R; r++) V[(size_t)r * F + j] *= 4.0f;
    for (int r = 0; r < R; r += 3) g[r] = -g[r]; /* negative norms keep their sign */
    double *W0 = malloc(sizeof(double) * (size_t)R * F), *cn = calloc((size_t)F, sizeof(double));
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int j = 0; j < F; j++) ss += (double)V[(size_t)r * F + j] * V[(size_t)r * F + j];
        for (int j = 0; j < F; j++) {
            W0[(size_t)r * F + j] = g[r] * V[(size_t)r * F + j] / sqrt(ss);
            cn[j] += W0[(size_t)r * F + j] * W0[(size_t)r * F + j];
        }
    }
    /* t between the weak and the strong columns' norms */
    double weak = 0, strong = 1e30;
    for (int j = 0; j < F; j++) {
        cn[j] = sqrt(cn[j]);
        if (j % 7) weak = cn[j] > weak ? cn[j] : weak;
        else strong = cn[j] < strong ? cn[j] : strong;
    }
    const float t = (float)(0.5 * (weak + strong));
    CHECK(weak < strong, "column prox: strong columns %g not above weak %g", strong, weak);
    CHECK(nz_slim_column_prox(&m, i, t) == 0, "column prox: out of memory");
    double worst = 0, unit = 0, maxw = 0;
    int zero_ok = 1, kept = 0;
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int j = 0; j < F; j++) ss += (double)V[(size_t)r * F + j] * V[(size_t)r * F + j];
        unit = fmax(unit, fabs(sqrt(ss) - 1.0));
        for (int j = 0; j < F; j++) {
            const double want = W0[(size_t)r * F + j] * (cn[j] > t ? 1.0 - t / cn[j] : 0.0);
            const double got = (double)g[r] * V[(size_t)r * F + j];
            worst = fmax(worst, fabs(got - want));
            maxw = fmax(maxw, fabs(want));
            if (cn[j] <= t) zero_ok &= V[(size_t)r * F + j] == 0.0f;
        }
    }
    for (int j = 0; j < F; j++) kept += cn[j] > t;
    printf("  column prox: %d of %d columns kept, W err %.2e, | ||v|| - 1 | <= %.1e\n", kept, F,
           worst / maxw, unit);
    CHECK(worst <= 1e-5 * maxw, "column prox: W after the step off by %g (max %g)", worst, maxw);
    CHECK(zero_ok && kept == (F + 6) / 7, "column prox: %d columns kept, want the %d strong ones "
          "(and the rest exactly zero)", kept, (F + 6) / 7);
    CHECK(unit <= 1e-5, "column prox: a row of V off unit norm by %g", unit);
    free(W0), free(cn);
    nz_model_free(&m);
}

static void test_remove_whole_layer(void) {
    const char *what = "lenet300 fc2 all zero";
    nz_model m;
    if (build(&m, "lenet300", 404) != 0) return;
    int u[100];
    int n = range_units(u, 0, 100);
    remove_units(&m, "fc2", u, n);
    double e;
    if (remove_and_compare(what, &m, &e) == NZ_OK) {
        expect_dims(&m, "fc1", 0, 2, (int[]){300, 784});
        expect_dims(&m, "fc2", 0, 2, (int[]){1, 300});
        expect_dims(&m, "fc3", 0, 2, (int[]){10, 1});
        printf("  %s: fc2 100 -> %d, logits err %.2e\n", what,
               node_id(&m, "fc2") >= 0 ? m.nodes[node_id(&m, "fc2")].units : -1, e);
    }
    nz_model_free(&m);
    /* nothing to remove: the model stays as it is */
    if (build(&m, "lenet300", 405) != 0) return;
    nz_error err;
    const size_t before = m.n_params;
    float *x = random_inputs(&m, BATCH, 3), *z0 = logits_of(&m, x, BATCH);
    CHECK(nz_slim_remove(&m, &err) == NZ_OK, "nothing to remove: %s", err.msg);
    float *z1 = logits_of(&m, x, BATCH);
    CHECK(m.n_params == before && z0 && z1 &&
              memcmp(z0, z1, sizeof(float) * BATCH * 10) == 0,
          "nothing to remove: the model changed (%zu -> %zu params)", before, m.n_params);
    free(x), free(z0), free(z1);
    nz_model_free(&m);
}

/* ResNet-20 (batch norm, option-A shortcuts, residual adds): channels of a block's inner conv
 * are removed together with its batch norm entries and the next conv's input channels; the conv
 * feeding a residual add keeps all its channels even when some are zero (the skip carries them).
 * Removed channels are given BN constants that end <= 0 after the relu, so removal is exact
 * despite the next conv's zero padding (a positive constant would only fold exactly into an
 * unpadded conv). */
static void set_dead_channels(nz_model *m, const char *conv, const char *bn, const int *ch,
                              int n_ch) {
    remove_units(m, conv, ch, n_ch);
    const nz_node *c = &m->nodes[node_id(m, conv)], *b = &m->nodes[node_id(m, bn)];
    for (int k = 0; k < n_ch; k++) {
        float bias = m->params[c->params[1].off + ch[k]];
        m->params[b->params[0].off + ch[k]] = 0.7f;  /* gamma */
        m->params[b->params[1].off + ch[k]] = -0.5f; /* beta: the constant ends at -0.5 */
        m->params[b->params[2].off + ch[k]] = bias;  /* running mean = the constant input */
    }
}

static void test_remove_resnet(void) {
    const char *what = "resnet20 remove";
    nz_model m;
    if (build(&m, "resnet20", 606) != 0) return;
    nz_rng r;
    nz_rng_seed(&r, 607);
    for (int i = 0; i < m.n_nodes; i++) { /* non-trivial eval-mode batch norms */
        const nz_node *n = &m.nodes[i];
        if (n->op != NZ_OP_BATCHNORM) continue;
        for (int c = 0; c < n->out.c; c++) {
            m.params[n->params[0].off + c] = nz_rng_range(&r, 0.5f, 1.5f);
            m.params[n->params[1].off + c] = nz_rng_range(&r, -0.2f, 0.2f);
            m.params[n->params[2].off + c] = nz_rng_range(&r, -0.2f, 0.2f);
            m.params[n->params[3].off + c] = nz_rng_range(&r, 0.5f, 2.0f);
        }
    }
    int a1[] = {2, 5}, a2[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, b1[] = {3};
    set_dead_channels(&m, "s1b1_a_conv", "s1b1_a_bn", a1, 2);
    set_dead_channels(&m, "s2b2_a_conv", "s2b2_a_bn", a2, 10);
    set_dead_channels(&m, "s1b1_b_conv", "s1b1_b_bn", b1, 1); /* feeds an add: stays */
    double e;
    if (remove_and_compare(what, &m, &e) == NZ_OK) {
        expect_dims(&m, "s1b1_a_conv", 0, 4, (int[]){14, 16, 3, 3});
        expect_dims(&m, "s1b1_a_bn", 3, 1, (int[]){14});
        expect_dims(&m, "s1b1_b_conv", 0, 4, (int[]){16, 14, 3, 3});
        expect_dims(&m, "s2b2_a_conv", 0, 4, (int[]){22, 32, 3, 3});
        expect_dims(&m, "s2b2_b_conv", 0, 4, (int[]){32, 22, 3, 3});
        expect_dims(&m, "s3b1_a_conv", 0, 4, (int[]){64, 32, 3, 3});
        printf("  %s: s1b1 16 -> 14, s2b2 32 -> 22 inner channels, logits err %.2e\n", what, e);
    }
    nz_model_free(&m);
}

/* Dense layers reading a [C, H, W] activation directly (no flatten node): after a conv + relu,
 * and on the raw image. Within nz_slim_remove's contract (plain layers with relu between), so
 * it must either remove exactly or refuse cleanly. Run in a child process by main. */
static int child_noflatten(const char *which) {
    nz_model m;
    nz_error err;
    const int conv = strcmp(which, "conv") == 0;
    int x = -1;
    if (nz_model_init(&m, "noflatten", (nz_shape){1, 8, 8}, 3, &err) == NZ_OK) {
        if (conv) {
            x = nz_model_add_conv2d(&m, "conv", 0, 4, 3, 1, 0, &err);
            if (x >= 0) x = nz_model_add_relu(&m, "relu", x, &err);
            if (x >= 0) x = nz_model_add_dense(&m, "fc", x, 3, &err);
        } else {
            x = nz_model_add_dense(&m, "fc1", 0, 6, &err);
            if (x >= 0) x = nz_model_add_relu(&m, "relu", x, &err);
            if (x >= 0) x = nz_model_add_dense(&m, "fc2", x, 3, &err);
        }
    }
    if (x < 0) {
        fprintf(stderr, "child %s: cannot build: %s\n", which, err.msg);
        return 2;
    }
    nz_rng r;
    nz_rng_seed(&r, 17);
    nz_model_init_params(&m, &r);
    /* remove conv channel 1 (bias > 0) / fc1 unit 2 */
    const nz_node *n = &m.nodes[1];
    const size_t S = n->params[0].n / (size_t)n->units;
    const int u = conv ? 1 : 2, want_units = n->units - 1;
    memset(m.params + n->params[0].off + (size_t)u * S, 0, sizeof(float) * S);
    m.params[n->params[1].off + (size_t)u] = 0.3f;
    const size_t before = m.n_params;
    float *xin = random_inputs(&m, BATCH, 4), *z0 = logits_of(&m, xin, BATCH);
    nz_status st = nz_slim_remove(&m, &err);
    int rc = 0;
    if (st != NZ_OK) {
        /* a refusal is fine if it is clean */
        if (m.n_params != before || !err.msg[0]) {
            fprintf(stderr, "child %s: refused (%d) without a message or changed the model\n",
                    which, (int)st);
            rc = 1;
        } else {
            printf("  no-flatten %s: refused: %s\n", which, err.msg);
        }
    } else {
        const int units = m.nodes[1].units;
        float *z1 = logits_of(&m, xin, BATCH);
        const double e = z0 && z1 ? norm_err(z1, z0, (size_t)BATCH * 3) : INFINITY;
        if (nz_model_validate(&m, &err) != NZ_OK || units != want_units || e > REMOVE_TOL) {
            fprintf(stderr, "child %s: removal wrong: %d units left (want %d), logits err %.3g\n",
                    which, units, want_units, e);
            rc = 1;
        } else {
            printf("  no-flatten %s: removed exactly, logits err %.2e\n", which, e);
        }
        free(z1);
    }
    free(xin), free(z0);
    nz_model_free(&m);
    return rc;
}

/* Runs this binary as "--child WHICH"; the child's exit status is one check. */
static void run_child(const char *self, const char *which) {
    char *argv[] = {(char *)self, "--child", (char *)which, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, self, NULL, NULL, argv, environ);
    CHECK(rc == 0, "posix_spawn %s: %s", self, strerror(rc));
    if (rc != 0) return;
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "nz_slim_remove on a dense layer reading a %s without a flatten node: %s %d (expected "
          "an exact removal or a clean refusal; see the child's output above)",
          strcmp(which, "conv") == 0 ? "conv's [C, H, W] output" : "raw [1, 8, 8] image",
          WIFEXITED(status) ? "child exited with" : "child killed by signal",
          WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* ---------------------------------------------------------------- refusals */

static void test_refusals(void) {
    nz_model m;
    nz_error err;
    if (build(&m, "lenet300", 505) != 0) return;
    int u[] = {3};
    remove_units(&m, "fc1", u, 1);
    CHECK(nz_normdir_convert(&m, &err) == NZ_OK, "convert: %s", err.msg);
    const size_t np = m.n_params;
    err.msg[0] = 0;
    nz_status st = nz_slim_remove(&m, &err);
    CHECK(st == NZ_ERR_ARG, "slim_remove on an ndense model: status %d, want NZ_ERR_ARG (%d)",
          (int)st, (int)NZ_ERR_ARG);
    CHECK(strstr(err.msg, "fc1") != NULL, "the refusal names the node: '%s'", err.msg);
    CHECK(m.n_params == np && m.nodes[node_id(&m, "fc1")].op == NZ_OP_NDENSE,
          "a refused removal changed the model");
    nz_model_free(&m);

    /* a sparse weight tensor: densify first */
    if (build(&m, "lenet300", 506) != 0) return;
    remove_units(&m, "fc2", u, 1);
    CHECK(nz_model_sparsify_param(&m, node_id(&m, "fc2"), NULL, 0, 4, &err) == NZ_OK,
          "sparsify: %s", err.msg);
    err.msg[0] = 0;
    st = nz_slim_remove(&m, &err);
    CHECK(st == NZ_ERR_ARG, "slim_remove with a sparse tensor: status %d, want NZ_ERR_ARG",
          (int)st);
    CHECK(err.msg[0] != 0, "the refusal has a message");
    CHECK(m.nodes[node_id(&m, "fc2")].params[0].sparse != NULL,
          "a refused removal changed the model");
    nz_model_free(&m);
}

/* ---------------------------------------------------------------- nz_slim end to end */

static int count_zero_groups(const nz_model *m, const char *node) {
    const nz_node *n = &m->nodes[node_id(m, node)];
    const size_t S = n->params[0].n / (size_t)n->units;
    const float *W = m->params + n->params[0].off;
    int z = 0;
    for (int o = 0; o < n->units; o++) {
        int any = 0;
        for (size_t q = 0; q < S && !any; q++) any = W[(size_t)o * S + q] != 0.0f;
        z += !any;
    }
    return z;
}

/* ---------------------------------------------------------------- rebalance */

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double w = 0;
    for (size_t i = 0; i < n; i++)
        w = fmax(w, fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), 1e-3));
    return w;
}

/* L2 norms of unit u of node a (incoming weights + bias) and of what reads it in node b */
static void unit_norms(const nz_model *m, int a, int b, int u, int span, double *in,
                       double *out) {
    const nz_node *na = &m->nodes[a], *nb = &m->nodes[b];
    const size_t per = na->params[0].n / (size_t)na->units;
    const float *Wa = m->params + na->params[0].off, *Wb = m->params + nb->params[0].off;
    double si = (double)m->params[na->params[1].off + u] * m->params[na->params[1].off + u];
    for (size_t q = 0; q < per; q++) si += (double)Wa[u * per + q] * Wa[u * per + q];
    const size_t stride = nb->params[0].n / (size_t)nb->units;
    double so = 0;
    for (int r = 0; r < nb->units; r++)
        for (int q = 0; q < span; q++) {
            const float w = Wb[(size_t)r * stride + (size_t)u * span + q];
            so += (double)w * w;
        }
    *in = sqrt(si), *out = sqrt(so);
}

/* nz_rebalance keeps the function and equalizes the norms of the last pair it balances (one
 * sweep from the input: balancing a pair moves the outgoing norms of the pair before it). The
 * scales are first pulled apart the way slimming does (a layer x 0.05, the next x 20),
 * the check is shown to notice a scaling that forgets the bias, and a ResNet (every conv
 * feeds a batch norm) is left bit for bit alone. */
static void test_rebalance(void) {
    static const struct {
        const char *arch, *a, *b;
        int pairs, span;
    } cases[] = {{"lenet300", "fc2", "fc3", 2, 1}, {"lenet5", "fc1", "fc2", 3, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nz_model m;
        if (build(&m, cases[c].arch, 77) != 0) return;
        const int a = node_id(&m, cases[c].a), b = node_id(&m, cases[c].b);
        const nz_node *na = &m.nodes[a], *nb = &m.nodes[b];
        for (size_t q = 0; q < na->params[0].n; q++) m.params[na->params[0].off + q] *= 0.05f;
        for (size_t q = 0; q < na->params[1].n; q++) m.params[na->params[1].off + q] = 0.01f;
        for (size_t q = 0; q < nb->params[0].n; q++) m.params[nb->params[0].off + q] *= 20.0f;
        const int B = 8;
        float *x = random_inputs(&m, B, 5), *z0 = logits_of(&m, x, B);
        const size_t nz = (size_t)B * 10;
        double in0, out0, in1, out1;
        unit_norms(&m, a, b, 3, cases[c].span, &in0, &out0);
        const int pairs = nz_rebalance(&m);
        float *z1 = logits_of(&m, x, B);
        unit_norms(&m, a, b, 3, cases[c].span, &in1, &out1);
        CHECK(pairs == cases[c].pairs, "rebalance %s: %d layer pairs, want %d", cases[c].arch,
              pairs, cases[c].pairs);
        CHECK(z0 && z1 && max_rel_diff(z1, z0, nz) < 1e-4,
              "rebalance %s changed the logits (%.3g)", cases[c].arch,
              z0 && z1 ? max_rel_diff(z1, z0, nz) : -1.0);
        CHECK(out0 > 20 * in0 && fabs(in1 - out1) < 1e-3 * out1,
              "rebalance %s: %s unit 3 norms in/out %.4g/%.4g -> %.4g/%.4g", cases[c].arch,
              cases[c].a, in0, out0, in1, out1);
        /* mutation: scale a unit's weights but not its bias -> the function changes */
        for (size_t q = 0; q < na->params[0].n; q++) m.params[na->params[0].off + q] *= 2.0f;
        for (size_t q = 0; q < nb->params[0].n; q++) m.params[nb->params[0].off + q] *= 0.5f;
        float *z2 = logits_of(&m, x, B);
        CHECK(z2 && max_rel_diff(z2, z0, nz) > 1e-3,
              "rebalance %s: a scaling that forgets the bias goes unnoticed", cases[c].arch);
        free(x), free(z0), free(z1), free(z2);
        nz_model_free(&m);
    }
    nz_model m;
    if (build(&m, "resnet20", 78) != 0) return;
    float *before = malloc(sizeof(float) * m.n_params);
    memcpy(before, m.params, sizeof(float) * m.n_params);
    const int pairs = nz_rebalance(&m);
    CHECK(pairs == 0 && memcmp(before, m.params, sizeof(float) * m.n_params) == 0,
          "rebalance resnet20: %d pairs changed (batch norms follow every conv)", pairs);
    free(before);
    nz_model_free(&m);
}

/* The short LeNet-300-100 slimming the end-to-end tests run: 8 penalized epochs (ramp 1) at the
 * zoo's learning rate, batch 64, seed 1. */
static void short_slim_cfg(nz_slim_cfg *cfg, float lambda, int finetune_epochs) {
    nz_slim_cfg_default(cfg);
    cfg->global_lambda = lambda;
    cfg->epochs = 8;
    cfg->ramp_epochs = 1;
    cfg->finetune_epochs = finetune_epochs;
    cfg->train.lr = nz_zoo_default_lr("lenet300");
    cfg->train.batch = 64;
    cfg->train.seed = 1;
    cfg->input_lambda = 0.0f; /* input features: test_slim_inputs */
}

static void test_slim_e2e(nz_slim_method method, const nz_dataset *train, const nz_dataset *test) {
    const char *mname = method == NZ_SLIM_PROXIMAL ? "proximal" : "subgradient";
    nz_model m;
    nz_error err;
    if (build(&m, "lenet300", 606) != 0) return;
    /* Strong enough to zero neurons in a few epochs: each of the 16 steps an epoch shrinks |g|
     * by at most lr(t) x lambda (x the layer's cost weight), so the sum over training must
     * exceed the initial row norms (~0.58 for fc1): lambda = 0.05 removes nothing at these
     * lengths. Measured (cost-weighted default, lr 0.1): lambda 0.1-0.15 at 6-10 epochs leaves
     * 28-163 of fc1's 300 neurons at 0% test error; 0.2 starts to hurt (19-40%). 0.15 x 8 epochs
     * (50 left) is in the middle. */
    nz_slim_cfg cfg;
    short_slim_cfg(&cfg, 0.15f, 1);
    cfg.method = method;
    cfg.finetune.batch = 64;
    cfg.finetune.seed = 2;
    nz_slim_result res;
    const double t0 = now();
    nz_status st = nz_slim(&m, train, test, &cfg, NULL, &res, &err);
    CHECK(st == NZ_OK, "nz_slim %s: %s", mname, err.msg);
    if (st != NZ_OK) {
        nz_model_free(&m);
        return;
    }
    CHECK(nz_model_validate(&m, &err) == NZ_OK, "slim %s: result: %s", mname, err.msg);
    CHECK(is_plain(&m), "slim %s: result still has norm x direction layers", mname);
    CHECK(res.n_layers == 3, "slim %s: %d layers reported", mname, res.n_layers);
    int before = 0, after = 0, consistent = 1;
    for (int k = 0; k < res.n_layers; k++) {
        before += res.units_before[k];
        after += res.units_after[k];
        const int id = res.node[k];
        consistent &= id > 0 && id < m.n_nodes && m.nodes[id].units == res.units_after[k] &&
                      strcmp(m.nodes[id].name, res.name[k]) == 0 &&
                      res.units_after[k] <= res.units_before[k];
    }
    CHECK(consistent, "slim %s: the result's layer table does not match the model", mname);
    CHECK(res.units_after[res.n_layers - 1] == 10 && m.nodes[m.n_nodes - 1].units == 10,
          "slim %s: the classifier has %d outputs", mname, m.nodes[m.n_nodes - 1].units);
    size_t total = 0;
    for (int i = 0; i < m.n_nodes; i++) total += nz_node_param_count(&m.nodes[i]);
    CHECK(res.params_after == total, "slim %s: params_after %zu, model has %zu", mname,
          res.params_after, total);
    CHECK(res.params_before == 266610, "slim %s: params_before %zu", mname, res.params_before);
    nz_eval_result ev;
    CHECK(nz_evaluate(&m, test, 256, &ev, &err) == NZ_OK, "evaluate: %s", err.msg);
    CHECK(fabsf(ev.error - res.test_err_after) < 1e-3f,
          "slim %s: test_err_after %.2f, evaluate %.2f", mname, (double)res.test_err_after,
          (double)ev.error);
    printf("  slim %-11s units %d -> %d (fc1 %d, fc2 %d), params %zu -> %zu, test err %.1f%% -> "
           "%.1f%% (penalized %.1f%%), %.1f s\n",
           mname, before, after, res.units_after[0], res.units_after[1], res.params_before,
           res.params_after, (double)res.test_err_before, (double)ev.error,
           (double)res.test_err_penalized, now() - t0);

    if (method == NZ_SLIM_PROXIMAL) {
        /* the soft threshold lands on exact zeros: neurons really leave */
        CHECK(after < before && res.params_after < res.params_before,
              "slim proximal: nothing removed (units %d -> %d, params %zu -> %zu)", before, after,
              res.params_before, res.params_after);
        CHECK(res.macs_after < res.macs_before, "slim proximal: MACs %zu -> %zu",
              res.macs_before, res.macs_after);
        CHECK(ev.error < 20.0f, "slim proximal: test error %.2f%% (>= 20%%)", (double)ev.error);
        /* no zero neuron is left behind in the hidden layers (one may carry a bias if a layer
         * emptied) */
        CHECK(count_zero_groups(&m, "fc1") <= (res.units_after[0] == 1) &&
                  count_zero_groups(&m, "fc2") <= (res.units_after[1] == 1),
              "slim proximal: zero neurons left in the model (fc1 %d, fc2 %d)",
              count_zero_groups(&m, "fc1"), count_zero_groups(&m, "fc2"));

        /* save -> load -> the same logits, bit for bit */
        char dir[] = "/tmp/nnzip-test-slim-XXXXXX";
        if (!mkdtemp(dir)) {
            CHECK(0, "mkdtemp");
        } else {
            char path[256];
            snprintf(path, sizeof path, "%s/slim.nnz", dir);
            nz_meta meta;
            memset(&meta, 0, sizeof meta);
            nz_meta_set(&meta, "slim", mname);
            CHECK(nz_save(&m, &meta, path, &err) == NZ_OK, "save: %s", err.msg);
            nz_model l;
            nz_meta meta2;
            if (nz_load(path, &l, &meta2, &err) != NZ_OK) {
                CHECK(0, "load: %s", err.msg);
            } else {
                CHECK(nz_model_validate(&l, &err) == NZ_OK, "loaded: %s", err.msg);
                CHECK(l.n_params == m.n_params, "loaded %zu params, saved %zu", l.n_params,
                      m.n_params);
                float *x = malloc(sizeof(float) * 784 * 64);
                uint8_t y[64];
                int32_t idx[64];
                for (int i = 0; i < 64; i++) idx[i] = i;
                nz_batch_fill(test, &m.pre, idx, 64, x, y);
                float *za = logits_of(&m, x, 64), *zb = logits_of(&l, x, 64);
                CHECK(za && zb && memcmp(za, zb, sizeof(float) * 640) == 0,
                      "slimmed model: logits differ after save/load");
                free(x), free(za), free(zb);
                nz_model_free(&l);
            }
            unlink(path);
            rmdir(dir);
        }
    } else {
        CHECK(after <= before, "slim subgradient: units %d -> %d", before, after);
        CHECK(ev.error < 20.0f, "slim subgradient: test error %.2f%% (>= 20%%)", (double)ev.error);
    }
    nz_model_free(&m);
}

/* Fine-tuning with a validation set keeps its best epoch: an outer checkpoint hook records the
 * validation error of every epoch's end, and the model returned must be the minimum of those and
 * of the model right after removal (epoch 0). A fine-tuning rate high enough to hurt makes the
 * epochs differ. */
typedef struct {
    const nz_dataset *val;
    float err[16];
    int n;
} epoch_log;

static nz_status log_epoch(const nz_model *m, const nz_train_state *st, void *user,
                           nz_error *err) {
    epoch_log *l = user;
    nz_eval_result ev;
    nz_status s = nz_evaluate(m, l->val, 256, &ev, err);
    if (!s && st->step == 0 && l->n < 16) l->err[l->n++] = ev.error;
    return s;
}

static void test_slim_val(const nz_dataset *train_all) {
    nz_dataset train = *train_all, val;
    nz_error err;
    /* a copy: nz_dataset_split shrinks the set it is given */
    train.images = malloc(nz_shape_size(train.shape) * (size_t)train.n);
    train.labels = malloc((size_t)train.n);
    memcpy(train.images, train_all->images, nz_shape_size(train.shape) * (size_t)train.n);
    memcpy(train.labels, train_all->labels, (size_t)train.n);
    CHECK(nz_dataset_split(&train, train.n, &val, &err) != NZ_OK, "split of everything accepted");
    CHECK(nz_dataset_split(&train, 0, &val, &err) != NZ_OK, "split of nothing accepted");
    if (nz_dataset_split(&train, 300, &val, &err) != NZ_OK) {
        CHECK(0, "split: %s", err.msg);
        nz_dataset_free(&train);
        return;
    }
    const size_t px = nz_shape_size(train.shape);
    CHECK(train.n == train_all->n - 300 && val.n == 300, "split sizes %d + %d", train.n, val.n);
    CHECK(memcmp(val.images, train_all->images + (size_t)train.n * px, px * 300) == 0 &&
              memcmp(val.labels, train_all->labels + train.n, 300) == 0 &&
              memcmp(train.images, train_all->images, px * (size_t)train.n) == 0,
          "split: the held-out examples are not the last ones");

    nz_model m;
    if (build(&m, "lenet300", 607) != 0) {
        nz_dataset_free(&train);
        nz_dataset_free(&val);
        return;
    }
    nz_slim_cfg cfg;
    nz_slim_cfg_default(&cfg);
    cfg.global_lambda = 0.15f;
    cfg.epochs = 4;
    cfg.ramp_epochs = 1;
    cfg.finetune_epochs = 4;
    cfg.train.lr = nz_zoo_default_lr("lenet300");
    cfg.finetune.lr = 2.0f; /* hurts: the epochs' validation errors differ */
    cfg.finetune.sched = NZ_SCHED_CONST;
    cfg.val = &val;
    epoch_log lg = {&val, {0}, 0};
    nz_train_hooks hooks;
    memset(&hooks, 0, sizeof hooks);
    hooks.checkpoint = log_epoch;
    hooks.checkpoint_user = &lg;
    nz_slim_result res;
    nz_status st = nz_slim(&m, &train, NULL, &cfg, &hooks, &res, &err);
    CHECK(st == NZ_OK, "nz_slim with validation: %s", err.msg);
    if (st == NZ_OK) {
        CHECK(lg.n == 4 + 4, "%d epoch ends seen by the caller's hook (want 8: 4 penalized + 4 fine-tuning)",
              lg.n);
        nz_eval_result ev;
        CHECK(nz_evaluate(&m, &val, 256, &ev, &err) == NZ_OK, "evaluate: %s", err.msg);
        CHECK(fabsf(ev.error - res.val_err) < 1e-4f, "returned model: val %.2f%%, reported %.2f%%",
              (double)ev.error, (double)res.val_err);
        float best = 1e9f;
        for (int k = 4; k < lg.n; k++) best = fminf(best, lg.err[k]);
        CHECK(res.val_err <= best + 1e-4f && res.finetune_kept >= 0 && res.finetune_kept <= 4 &&
                  (res.finetune_kept == 0 || fabsf(lg.err[3 + res.finetune_kept] - res.val_err) < 1e-4f),
              "kept epoch %d at %.2f%%; fine-tuning epochs %.2f %.2f %.2f %.2f", res.finetune_kept,
              (double)res.val_err, (double)lg.err[4], (double)lg.err[5], (double)lg.err[6],
              (double)lg.err[7]);
        printf("  slim --val: fine-tuning epochs' val error %.1f %.1f %.1f %.1f%%, kept epoch %d "
               "(%.1f%%)\n",
               (double)lg.err[4], (double)lg.err[5], (double)lg.err[6], (double)lg.err[7],
               res.finetune_kept, (double)res.val_err);
    }
    nz_model_free(&m);
    nz_dataset_free(&train);
    nz_dataset_free(&val);
}

/* ---------------------------------------------------------------- main */

/* --cost live against static on the same run. 270 of fc1's 300 neurons are dead from the
 * start, so an fc2 neuron reads 30 live inputs: static weighting still charges it for 300 and
 * (fc2's lambda raised to 0.3) removes about half of fc2; live weighting charges it ~10x less
 * and keeps it whole (measured: fc1 30 in both, fc2 54 static, 100 live). Also: the default is
 * static. */
static void test_slim_cost_live(const nz_dataset *train, const nz_dataset *test) {
    nz_slim_cfg cfg;
    short_slim_cfg(&cfg, 0.05f, 0);
    CHECK(cfg.cost_weighted == NZ_SLIM_COST_STATIC, "slim: default cost weighting %d",
          cfg.cost_weighted);
    int fc1[2], fc2[2];
    for (int live = 0; live <= 1; live++) {
        nz_model m;
        nz_error err;
        if (build(&m, "lenet300", 606) != 0) return;
        cfg.cost_weighted = live ? NZ_SLIM_COST_LIVE : NZ_SLIM_COST_STATIC;
        for (int i = 0; i < m.n_nodes; i++) {
            if (strcmp(m.nodes[i].name, "fc2") == 0) cfg.lambda[i] = 0.3f;
            if (strcmp(m.nodes[i].name, "fc1") == 0)
                for (int u = 30; u < m.nodes[i].units; u++)
                    memset(m.params + m.nodes[i].params[0].off + (size_t)u * 784, 0,
                           sizeof(float) * 784);
        }
        nz_slim_result res;
        nz_status st = nz_slim(&m, train, test, &cfg, NULL, &res, &err);
        CHECK(st == NZ_OK, "nz_slim cost %d: %s", live, st ? err.msg : "");
        if (st) {
            nz_model_free(&m);
            return;
        }
        fc1[live] = res.units_after[0], fc2[live] = res.units_after[1];
        nz_model_free(&m);
    }
    printf("  slim cost static: fc1 %d fc2 %d; live: fc1 %d fc2 %d\n", fc1[0], fc2[0], fc1[1],
           fc2[1]);
    CHECK(fc1[0] <= 30 && fc1[1] <= 30, "slim cost: dead fc1 neurons came back (%d, %d)", fc1[0],
          fc1[1]);
    CHECK(fc2[1] >= fc2[0] + 20 && fc2[1] * 4 >= fc1[1],
          "slim --cost live keeps fc2 %d (fc1 %d), static %d (fc1 %d)", fc2[1], fc1[1], fc2[0],
          fc1[0]);
}

/* The input features' penalty on the synthetic set, whose classes differ only in ten 10x4
 * blocks (the rest is noise): the features kept are mostly block pixels, and the model still
 * classifies. The neurons' penalty is off, so what is removed is inputs only. */
static void test_slim_inputs(const nz_dataset *train, const nz_dataset *test) {
    nz_model m;
    nz_error err;
    if (build(&m, "lenet300", 606) != 0) return;
    nz_slim_cfg cfg;
    short_slim_cfg(&cfg, 0.0f, 1);
    cfg.input_lambda = 0.1f; /* measured: 0.3 leaves 1 feature, 0.03 none removed */
    nz_slim_result res;
    nz_status st = nz_slim(&m, train, test, &cfg, NULL, &res, &err);
    CHECK(st == NZ_OK, "nz_slim inputs: %s", st ? err.msg : "");
    if (st) {
        nz_model_free(&m);
        return;
    }
    const int sel = node_id(&m, "fc1_in");
    int in_block = 0, k = sel >= 0 ? m.nodes[sel].units : 784;
    for (int j = 0; j < k && sel >= 0; j++) {
        const int p = (int)m.params[m.nodes[sel].params[0].off + j], y = p / 28, x = p % 28;
        in_block += ((y >= 2 && y < 12) || (y >= 14 && y < 24)) && x >= 1 && x < 25 &&
                    (x - 1) % 5 < 4;
    }
    printf("  slim inputs: 784 -> %d features (%d in the class blocks of 400), units %d %d, "
           "test err %.1f%%\n", res.inputs_after, in_block, res.units_after[0],
           res.units_after[1], (double)res.test_err_after);
    CHECK(sel > 0 && res.inputs_after == k && k < 784 && k > 0,
          "slim inputs: %d features kept (select node %d)", res.inputs_after, sel);
    CHECK(in_block >= 0.8 * k, "slim inputs: only %d of the %d features kept are informative",
          in_block, k);
    CHECK(res.units_after[0] == 300 && res.test_err_after < 20.0f,
          "slim inputs: fc1 %d units, test error %.2f%%", res.units_after[0],
          (double)res.test_err_after);
    nz_model_free(&m);
}

/* --distill: the fine-tune learns the model given. With alpha 1 its outputs end closer to the
 * original model's than a fine-tune on the labels alone leaves them. */
static void test_slim_distill(const nz_dataset *train, const nz_dataset *test) {
    double kl[2];
    for (int on = 0; on <= 1; on++) {
        nz_model m, orig;
        nz_error err;
        if (build(&m, "lenet300", 606) != 0) return;
        if (nz_model_copy(&orig, &m, &err)) {
            CHECK(0, "copy: %s", err.msg);
            nz_model_free(&m);
            return;
        }
        nz_slim_cfg cfg;
        short_slim_cfg(&cfg, 0.15f, 3);
        cfg.finetune.lr = 0.05f;
        cfg.distill_alpha = on ? 1.0f : 0.0f;
        cfg.distill_temp = 2.0f;
        nz_slim_result res;
        nz_status st = nz_slim(&m, train, test, &cfg, NULL, &res, &err);
        CHECK(st == NZ_OK, "nz_slim distill %d: %s", on, st ? err.msg : "");
        kl[on] = st ? -1 : outputs_kl(&orig, &m, test, 500);
        nz_model_free(&m);
        nz_model_free(&orig);
    }
    printf("  slim distill: KL to the original %.4f on labels, %.4f distilled\n", kl[0], kl[1]);
    CHECK(kl[0] > 0 && kl[1] >= 0 && kl[1] < 0.7 * kl[0],
          "slim --distill: KL to the original model %g, without %g", kl[1], kl[0]);
}

/* --rebalance: after removal the model computes the same function (a fine-tune at lr 0 then
 * changes nothing, so the logits match the run without it), but each surviving fc2 unit's
 * incoming weights (with its bias) and the fc3 weights that read it now have equal norms (the
 * last pair balanced; balancing fc2's units rescales the fc1 pair's outgoing side again). */
static void test_slim_rebalance(const nz_dataset *train, const nz_dataset *test) {
    float *z[2] = {NULL, NULL};
    float *x = malloc(sizeof(float) * 784 * 64);
    uint8_t y[64];
    int32_t idx[64];
    for (int i = 0; i < 64; i++) idx[i] = i;
    double worst_ratio[2] = {0, 0};
    for (int on = 0; on <= 1; on++) {
        nz_model m;
        nz_error err;
        if (build(&m, "lenet300", 606) != 0) break;
        nz_slim_cfg cfg;
        short_slim_cfg(&cfg, 0.15f, 1);
        cfg.finetune.lr = 0.0f;
        cfg.rebalance = on;
        nz_slim_result res;
        nz_status st = nz_slim(&m, train, test, &cfg, NULL, &res, &err);
        CHECK(st == NZ_OK, "nz_slim rebalance %d: %s", on, st ? err.msg : "");
        if (!st) {
            nz_batch_fill(test, &m.pre, idx, 64, x, y);
            z[on] = logits_of(&m, x, 64);
            const int a = node_id(&m, "fc2"), b = node_id(&m, "fc3");
            const nz_node *na = &m.nodes[a], *nb = &m.nodes[b];
            const size_t U = (size_t)na->units, in = na->params[0].n / U;
            const float *Wa = m.params + na->params[0].off, *ba = m.params + na->params[1].off;
            const float *Wb = m.params + nb->params[0].off;
            for (size_t u = 0; u < U; u++) {
                double si = (double)ba[u] * ba[u], so = 0;
                for (size_t q = 0; q < in; q++) si += (double)Wa[u * in + q] * Wa[u * in + q];
                for (int r = 0; r < nb->units; r++) so += (double)Wb[r * U + u] * Wb[r * U + u];
                const double ratio = fabs(log(sqrt(so / si)));
                if (ratio > worst_ratio[on]) worst_ratio[on] = ratio;
            }
        }
        nz_model_free(&m);
    }
    CHECK(worst_ratio[1] < 1e-3 && worst_ratio[0] > 0.1,
          "slim --rebalance: worst |log(out/in norm)| of fc2's units %g with, %g without",
          worst_ratio[1], worst_ratio[0]);
    if (z[0] && z[1]) {
        double d = 0, mx = 0;
        for (int i = 0; i < 640; i++) {
            d = fmax(d, fabs(z[0][i] - z[1][i]));
            mx = fmax(mx, fabs(z[0][i]));
        }
        printf("  slim rebalance: logits max|diff| %.3g of max %.3g\n", d, mx);
        CHECK(d <= 1e-4 * mx, "slim --rebalance changed the logits: %g of %g", d, mx);
    }
    free(z[0]), free(z[1]), free(x);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--child") == 0) return child_noflatten(argv[2]);
    const double t0 = now();
    nz_set_threads(2);
    test_convert("lenet300");
    test_convert("lenet5");
    test_remove_mlp();
    test_remove_conv();
    test_remove_whole_layer();
    test_remove_inputs();
    test_column_prox();
    test_remove_conv_columns();
    test_remove_resnet();
    test_refusals();
    test_rebalance();

    nz_dataset train, test;
    make_synthetic(&train, 1000, 21);
    make_synthetic(&test, 500, 22);
    test_slim_e2e(NZ_SLIM_PROXIMAL, &train, &test);
    test_slim_e2e(NZ_SLIM_SUBGRADIENT, &train, &test);
    test_slim_val(&train);
    test_slim_cost_live(&train, &test);
    test_slim_inputs(&train, &test);
    test_slim_distill(&train, &test);
    test_slim_rebalance(&train, &test);
    nz_dataset_free(&train);
    nz_dataset_free(&test);

    /* last: a child that may crash (its stderr shows why) */
    fflush(stdout);
    run_child("/proc/self/exe", "conv");
    run_child("/proc/self/exe", "input");
    printf("  time %.2f s\n", now() - t0);
    return tl_finish("test_slim");
}
