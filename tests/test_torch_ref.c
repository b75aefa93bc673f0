/* nnzip against PyTorch: every layer kernel and a whole LeNet-5 training step.
 *
 * The norm x direction layers (NZ_OP_NDENSE, NZ_OP_NCONV2D with k3 s1 p1 and k5 s1 p0) are
 * compared both as kernels and through nz_forward / nz_backward, against torch's
 * W = g V / V.norm() with autograd's gradients of x, V, g and b.
 *
 * Residual networks' layers: BatchNorm2d (training and eval) and BatchNorm1d (training, on a
 * [B, C] input) as kernels and as one-node models (outputs, input and affine gradients, running
 * statistics after the forward: momentum 0.1, unbiased variance); AvgPool2d, AdaptiveAvgPool2d(1)
 * (nnzip's GAP), the option-A shortcut and the input feature select (bit-exact: copies). Then one training step of a tiny
 * ResNet built node by node (stem, an identity block, a strided block with an option-A shortcut,
 * GAP, fc): activations, logits, loss, all gradients, running statistics, and one SGD step over
 * the trainable tensors only (buffers must come out of the optimizer untouched). Conv biases in
 * front of a training-mode BN have a zero gradient in exact arithmetic, so both sides are
 * rounding noise: they are judged against the scale of the same conv's weight gradient (and
 * their update against the weight update). Last, the zoo's resnet20 in eval mode with torch's
 * weights and calibrated running statistics: pooled features and logits of two 32x32 images
 * (error ~2e-7 after 19 convs; the common 1e-4 bound holds). Parameters are matched by node name
 * and slot ("<prefix>.<node>.<W|b|gamma|beta|running_mean|running_var>"), and the number of
 * such records must equal the model's slot count, so nothing is silently left at its default.
 *
 * scripts/torch_ref.py writes inputs, weights, outputs, upstream gradients and autograd's
 * gradients for each layer kind and for one LeNet-5 step (format in that script's docstring:
 * magic "NZTREF01", then records of u32 name length, name, u32 ndim, u32 dims, f32 data, all
 * little-endian). This test feeds the same inputs and weights through nnzip's kernels and through
 * nz_forward / nz_softmax_xent / nz_backward / nz_sgd_step, and compares every tensor by
 *     err = max|nnzip - torch| / max(max|torch|, 1e-30) <= 1e-4.
 * A missing or malformed reference file is a failure, never a skip.
 *
 * Usage: test_torch_ref [REF]      (default build/torch_ref.bin)
 * Generate: scripts/torch_ref.py build/torch_ref.bin */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/layers.h"
#include "nnzip/model.h"
#include "nnzip/rng.h"
#include "nnzip/train.h"
#include "testlib.h"

#define REF_DEFAULT "build/torch_ref.bin"
#define REF_TOL 1e-4
#define REF_MAX_BYTES ((long)1 << 30)
#define REF_MAX_DIM (1u << 24)

/* ---------------------------------------------------------------- the reference file */

typedef struct {
    char name[256];
    int ndim;
    int dims[4];
    size_t n;
    float *data;
} ref_tensor;

typedef struct {
    ref_tensor *t;
    size_t count, cap;
} ref_file;

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void ref_free(ref_file *rf) {
    for (size_t i = 0; i < rf->count; i++) free(rf->t[i].data);
    free(rf->t);
    memset(rf, 0, sizeof *rf);
}

/* Reads and validates the whole file; on failure returns -1 with a message in msg. */
static int ref_load(ref_file *rf, const char *path, char *msg, size_t msglen) {
    memset(rf, 0, sizeof *rf);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(msg, msglen, "cannot open: %s", strerror(errno));
        return -1;
    }
    unsigned char *buf = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || size > REF_MAX_BYTES || fseek(f, 0, SEEK_SET) != 0) {
        snprintf(msg, msglen, "cannot get its size, or larger than %ld bytes", REF_MAX_BYTES);
        fclose(f);
        return -1;
    }
    buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        snprintf(msg, msglen, "cannot read %ld bytes", size);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    const size_t len = (size_t)size;
    size_t pos = 8;
    int ok = len >= 8 && memcmp(buf, "NZTREF01", 8) == 0;
    if (!ok) snprintf(msg, msglen, "bad magic (expected NZTREF01)");
    while (ok && pos < len) {
        ref_tensor t;
        memset(&t, 0, sizeof t);
        uint32_t nl;
        if (len - pos < 4 || (nl = le32(buf + pos)) == 0 || nl > 255 || len - pos - 4 < nl) {
            snprintf(msg, msglen, "record %zu at byte %zu: bad name length", rf->count, pos);
            ok = 0;
            break;
        }
        memcpy(t.name, buf + pos + 4, nl);
        t.name[nl] = 0;
        pos += 4 + nl;
        uint32_t nd;
        if (len - pos < 4 || (nd = le32(buf + pos)) < 1 || nd > 4 || len - pos - 4 < 4 * nd) {
            snprintf(msg, msglen, "record '%.64s': bad dimension count", t.name);
            ok = 0;
            break;
        }
        pos += 4;
        t.ndim = (int)nd;
        t.n = 1;
        for (uint32_t d = 0; d < nd; d++, pos += 4) {
            uint32_t v = le32(buf + pos);
            /* each dim < 2^24 and the product bounded by the bytes left: no overflow */
            if (v < 1 || v > REF_MAX_DIM) {
                snprintf(msg, msglen, "record '%.64s': bad dimension %u", t.name, v);
                ok = 0;
                break;
            }
            /* the product stays below the bytes left (< 2^30), so it cannot overflow */
            if (t.n * v > (len - pos) / 4 + 1) {
                snprintf(msg, msglen, "record '%.64s': data runs past the end of the file",
                         t.name);
                ok = 0;
                break;
            }
            t.dims[d] = (int)v;
            t.n *= v;
        }
        if (!ok) break;
        if ((len - pos) / 4 < t.n) {
            snprintf(msg, msglen, "record '%.64s': %zu floats past the end of the file", t.name,
                     t.n);
            ok = 0;
            break;
        }
        t.data = malloc(sizeof(float) * t.n);
        if (!t.data) {
            snprintf(msg, msglen, "out of memory");
            ok = 0;
            break;
        }
        for (size_t i = 0; i < t.n; i++, pos += 4) {
            uint32_t u = le32(buf + pos);
            memcpy(&t.data[i], &u, 4);
        }
        if (rf->count == rf->cap) {
            size_t cap = rf->cap ? 2 * rf->cap : 64;
            ref_tensor *nt = realloc(rf->t, sizeof(ref_tensor) * cap);
            if (!nt) {
                free(t.data);
                snprintf(msg, msglen, "out of memory");
                ok = 0;
                break;
            }
            rf->t = nt;
            rf->cap = cap;
        }
        rf->t[rf->count++] = t;
    }
    free(buf);
    if (ok && rf->count == 0) {
        snprintf(msg, msglen, "no records");
        ok = 0;
    }
    if (!ok) ref_free(rf);
    return ok ? 0 : -1;
}

static const ref_file *g_ref;

/* The record `name`; a missing one is a failure. */
static const ref_tensor *ref_get(const char *name) {
    for (size_t i = 0; i < g_ref->count; i++)
        if (strcmp(g_ref->t[i].name, name) == 0) return &g_ref->t[i];
    CHECK(0, "reference record '%s' missing (regenerate with scripts/torch_ref.py)", name);
    return NULL;
}

static const ref_tensor *ref_getf(const char *fmt, const char *a, const char *b) {
    char name[256];
    snprintf(name, sizeof name, fmt, a, b);
    return ref_get(name);
}

static int ref_shape_is(const ref_tensor *t, int ndim, const int *dims) {
    if (!t || t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->dims[i] != dims[i]) return 0;
    return 1;
}

static void shape_str(char *s, size_t sz, const ref_tensor *t) {
    int k = snprintf(s, sz, "(");
    for (int i = 0; i < t->ndim && k > 0 && (size_t)k < sz; i++)
        k += snprintf(s + k, sz - (size_t)k, i ? ", %d" : "%d", t->dims[i]);
    if (k > 0 && (size_t)k < sz) snprintf(s + k, sz - (size_t)k, ")");
}

/* Checks a record's shape; reports and returns 0 on a mismatch. */
static int expect_shape(const ref_tensor *t, int ndim, const int *dims) {
    if (!t) return 0;
    if (ref_shape_is(t, ndim, dims)) return 1;
    char s[96];
    shape_str(s, sizeof s, t);
    CHECK(0, "reference '%s' has shape %s, not the one nnzip computes", t->name, s);
    return 0;
}

/* ---------------------------------------------------------------- comparing */

#define MAX_GROUPS 64
static struct {
    char name[32];
    double worst;
} g_groups[MAX_GROUPS];
static int g_n_groups;

static void group_record(const char *name, double err) {
    char g[32];
    snprintf(g, sizeof g, "%s", name);
    char *dot = strchr(g, '.');
    if (dot) *dot = 0;
    if (strcmp(g, "lenet") == 0 || strcmp(g, "rn") == 0) {
        const char *base = g[0] == 'l' ? "lenet" : "rn";
        if (strstr(name, ".grad.")) snprintf(g, sizeof g, "%s grads", base);
        if (strstr(name, ".after.")) snprintf(g, sizeof g, "%s running stats", base);
        if (strstr(name, ".step.")) snprintf(g, sizeof g, "%s sgd step", base);
        if (strstr(name, ".update.")) snprintf(g, sizeof g, "%s sgd update", base);
    }
    for (int i = 0; i < g_n_groups; i++)
        if (strcmp(g_groups[i].name, g) == 0) {
            if (err > g_groups[i].worst || err != err) g_groups[i].worst = err;
            return;
        }
    if (g_n_groups == MAX_GROUPS) return;
    snprintf(g_groups[g_n_groups].name, sizeof g_groups[0].name, "%s", g);
    g_groups[g_n_groups++].worst = err;
}

/* max|got - ref| / max(max|ref|, tiny) */
static double norm_err(const float *got, const float *ref, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)ref[i]);
        if (e > d || e != e) d = e != e ? INFINITY : e;
        if (fabs((double)ref[i]) > m) m = fabs((double)ref[i]);
    }
    return d / (m > 1e-30 ? m : 1e-30);
}

/* Compares n values of nnzip's `got` with record ref (label: what nnzip computed, e.g. with
 * the thread count); prints one line per tensor. */
static void compare(const char *label, const float *got, const ref_tensor *ref, size_t n) {
    if (!ref) return;
    if (ref->n != n) {
        CHECK(0, "%s: nnzip has %zu values, reference '%s' %zu", label, n, ref->name, ref->n);
        return;
    }
    double e = norm_err(got, ref->data, n);
    printf("  %-34s %8zu values  err %.2e\n", label, n, e);
    CHECK(e <= REF_TOL, "%s: normalized max error %.3g > %.0e vs PyTorch", label, e, REF_TOL);
    group_record(label, e);
}

/* compare() with the normalization max(max|ref|, floor_): for tensors that are zero in exact
 * arithmetic, judged against the scale of a related tensor. */
static void compare_floor(const char *label, const float *got, const ref_tensor *ref, size_t n,
                          double floor_, const char *why) {
    if (!ref) return;
    if (ref->n != n) {
        CHECK(0, "%s: nnzip has %zu values, reference '%s' %zu", label, n, ref->name, ref->n);
        return;
    }
    double d = 0, m = floor_;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - (double)ref->data[i]);
        if (e > d || e != e) d = e != e ? INFINITY : e;
        m = fmax(m, fabs((double)ref->data[i]));
    }
    const double e = d / (m > 1e-30 ? m : 1e-30);
    printf("  %-34s %8zu values  err %.2e (%s)\n", label, n, e, why);
    CHECK(e <= REF_TOL, "%s: normalized max error %.3g > %.0e vs PyTorch (%s)", label, e,
          REF_TOL, why);
    group_record(label, e);
}

static float *zalloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ---------------------------------------------------------------- layers */

static void check_linear(void) {
    const ref_tensor *x = ref_get("linear.x"), *W = ref_get("linear.W"), *b = ref_get("linear.b"),
                     *out = ref_get("linear.out"), *dout = ref_get("linear.dout"),
                     *dx = ref_get("linear.dx"), *dW = ref_get("linear.dW"),
                     *db = ref_get("linear.db");
    if (!x || !W || !b || !out || !dout || !dx || !dW || !db || x->ndim != 2 || W->ndim != 2)
        return;
    const int B = x->dims[0], NI = x->dims[1], NO = W->dims[0];
    if (!expect_shape(W, 2, (int[]){NO, NI}) || !expect_shape(b, 1, (int[]){NO}) ||
        !expect_shape(out, 2, (int[]){B, NO}) || !expect_shape(dout, 2, (int[]){B, NO}))
        return;
    float *y = zalloc((size_t)B * NO), *gx = zalloc((size_t)B * NI), *gW = zalloc(W->n),
          *gb = zalloc(b->n);
    dense_forward(y, x->data, W->data, b->data, B, NI, NO);
    dense_backward(gx, gW, gb, dout->data, x->data, W->data, B, NI, NO);
    compare("linear.out", y, out, (size_t)B * NO);
    compare("linear.dx", gx, dx, (size_t)B * NI);
    compare("linear.dW", gW, dW, W->n);
    compare("linear.db", gb, db, b->n);
    free(y), free(gx), free(gW), free(gb);
}

/* conv{i} (prefix "conv") or dconv{i} ("dconv"), through both kernels where the direct one
 * applies (src/core/conv_direct.c: 3x3, stride 1, pad 1) */
static void check_conv(const char *prefix, int i, int threads) {
    nz_set_threads(threads);
    char p[16];
    snprintf(p, sizeof p, "%s%d", prefix, i);
    const ref_tensor *cfg = ref_getf("%s.%s", p, "cfg"), *x = ref_getf("%s.%s", p, "x"),
                     *W = ref_getf("%s.%s", p, "W"), *b = ref_getf("%s.%s", p, "b"),
                     *out = ref_getf("%s.%s", p, "out"), *dout = ref_getf("%s.%s", p, "dout"),
                     *dx = ref_getf("%s.%s", p, "dx"), *dW = ref_getf("%s.%s", p, "dW"),
                     *db = ref_getf("%s.%s", p, "db");
    if (!cfg || !x || !W || !b || !out || !dout || !dx || !dW || !db) return;
    if (!expect_shape(cfg, 1, (int[]){7}) || x->ndim != 4) return;
    int c[7];
    for (int k = 0; k < 7; k++) c[k] = (int)cfg->data[k];
    if (c[0] < 1 || c[1] < 1 || c[2] < 1 || c[3] < 1 || c[4] < 1 || c[5] < 1 || c[6] < 0 ||
        c[1] + 2 * c[6] < c[4] || c[2] + 2 * c[6] < c[4]) {
        CHECK(0, "%s.cfg: bad configuration", p);
        return;
    }
    const int B = x->dims[0];
    conv_dims d = conv_dims_make(c[0], c[1], c[2], c[3], c[4], c[5], c[6]);
    if (!expect_shape(x, 4, (int[]){B, d.C, d.H, d.W}) ||
        !expect_shape(W, 4, (int[]){d.OC, d.C, d.KH, d.KW}) ||
        !expect_shape(b, 1, (int[]){d.OC}) || !expect_shape(out, 4, (int[]){B, d.OC, d.OH, d.OW}) ||
        !expect_shape(dout, 4, (int[]){B, d.OC, d.OH, d.OW}))
        return;
    const size_t T = (size_t)(layers_threads() > 0 ? layers_threads() : 1);
    float *scratch = zalloc(conv_scratch_per_thread(&d) * T);
    float *partial = zalloc((W->n + b->n) * T); /* |W| + OC per thread, see conv2d_backward */
    float *y = zalloc(out->n), *gx = zalloc(x->n), *gW = zalloc(W->n), *gb = zalloc(b->n);
    static const int algos[3] = {CONV_ALGO_IM2COL, CONV_ALGO_DIRECT, CONV_ALGO_WINOGRAD};
    static const char *const algo_names[3] = {"im2col", "direct", "winograd"};
    for (int a = 0; a < 3; a++) {
        d.algo = algos[a];
        /* shapes the direct / Winograd kernels do not take */
        if (a == 1 && !conv_uses_direct(&d, 0)) continue;
        if (a == 2 && !conv_uses_winograd(&d, 0)) continue;
        memset(gx, 0, sizeof(float) * x->n);
        memset(gW, 0, sizeof(float) * W->n);
        memset(gb, 0, sizeof(float) * b->n);
        conv2d_forward(y, x->data, W->data, b->data, B, &d, scratch);
        conv2d_backward(gx, gW, gb, dout->data, x->data, W->data, B, &d, scratch, partial);
        char label[96];
        const char *names[4] = {"out", "dx", "dW", "db"};
        const float *got[4] = {y, gx, gW, gb};
        const ref_tensor *refs[4] = {out, dx, dW, db};
        for (int k = 0; k < 4; k++) {
            snprintf(label, sizeof label, "%s.%s %dx%dx%dx%d->%d k%d s%d p%d %dt %s", p, names[k],
                     B, d.C, d.H, d.W, d.OC, c[4], c[5], c[6], threads, algo_names[a]);
            compare(label, got[k], refs[k], refs[k]->n);
        }
    }
    free(scratch), free(partial), free(y), free(gx), free(gW), free(gb);
}

static void check_pool(int i) {
    char p[16];
    snprintf(p, sizeof p, "pool%d", i);
    const ref_tensor *cfg = ref_getf("%s.%s", p, "cfg"), *x = ref_getf("%s.%s", p, "x"),
                     *out = ref_getf("%s.%s", p, "out"), *dout = ref_getf("%s.%s", p, "dout"),
                     *dx = ref_getf("%s.%s", p, "dx");
    if (!cfg || !x || !out || !dout || !dx || !expect_shape(cfg, 1, (int[]){2}) || x->ndim != 4)
        return;
    const int k = (int)cfg->data[0], s = (int)cfg->data[1];
    const int B = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    if (k < 1 || s < 1 || k > H || k > W) {
        CHECK(0, "%s.cfg: bad configuration", p);
        return;
    }
    const int OH = (H - k) / s + 1, OW = (W - k) / s + 1;
    if (!expect_shape(out, 4, (int[]){B, C, OH, OW}) ||
        !expect_shape(dout, 4, (int[]){B, C, OH, OW}))
        return;
    float *y = zalloc(out->n), *gx = zalloc(x->n);
    int32_t *am = malloc(sizeof(int32_t) * out->n);
    maxpool_forward(y, am, x->data, B, C, H, W, k, k, s, OH, OW);
    maxpool_backward(gx, dout->data, am, B, C, H, W, OH, OW);
    char label[64];
    snprintf(label, sizeof label, "%s.out %dx%d/%d", p, k, k, s);
    compare(label, y, out, out->n);
    snprintf(label, sizeof label, "%s.dx %dx%d/%d", p, k, k, s);
    compare(label, gx, dx, dx->n);
    free(y), free(gx), free(am);
}

static void check_relu(void) {
    const ref_tensor *x = ref_get("relu.x"), *out = ref_get("relu.out"),
                     *dout = ref_get("relu.dout"), *dx = ref_get("relu.dx");
    if (!x || !out || !dout || !dx || out->n != x->n || dout->n != x->n) {
        CHECK(x && out && dout && dx, "relu records incomplete");
        return;
    }
    float *y = zalloc(x->n), *gx = zalloc(x->n);
    relu_forward(y, x->data, x->n);
    relu_backward(gx, dout->data, y, x->n);
    compare("relu.out", y, out, x->n);
    compare("relu.dx", gx, dx, x->n);
    free(y), free(gx);
}

/* labels stored as floats: integers in [0, K) */
static int labels_from(const ref_tensor *t, int B, int K, uint8_t *y) {
    if (!expect_shape(t, 1, (int[]){B})) return 0;
    for (int b = 0; b < B; b++) {
        float v = t->data[b];
        if (!(v >= 0 && v < (float)K && v == (float)(int)v)) {
            CHECK(0, "%s[%d] = %g is not a class in 0..%d", t->name, b, (double)v, K - 1);
            return 0;
        }
        y[b] = (uint8_t)v;
    }
    return 1;
}

static void check_xent(void) {
    const ref_tensor *z = ref_get("xent.logits"), *lab = ref_get("xent.labels"),
                     *loss = ref_get("xent.loss"), *dz = ref_get("xent.dlogits");
    if (!z || !lab || !loss || !dz || z->ndim != 2 || z->dims[0] > 256 || z->dims[1] > 256)
        return;
    const int B = z->dims[0], K = z->dims[1];
    uint8_t y[256];
    if (!labels_from(lab, B, K, y) || !expect_shape(loss, 1, (int[]){1}) ||
        !expect_shape(dz, 2, (int[]){B, K}))
        return;
    float *g = zalloc(z->n);
    float L = nz_softmax_xent(z->data, y, B, K, g, NULL);
    compare("xent.loss", &L, loss, 1);
    compare("xent.dlogits", g, dz, z->n);
    free(g);
}

/* ---------------------------------------------------------------- norm x direction layers */

/* NZ_OP_NDENSE / NZ_OP_NCONV2D (W = g V/||V|| per neuron row / per conv kernel) two ways:
 *  - the kernels: normdir_weights, dense/conv forward and backward, normdir_backward (out and
 *    the x, V, g, b gradients);
 *  - a one-layer model through nz_forward / nz_backward (out and the V, g, b gradients; the
 *    layer reads the data node, which gets no gradient). */

typedef struct {
    const ref_tensor *x, *V, *g, *b, *out, *dout, *dx, *dV, *dg, *db;
} nd_refs;

static int nd_refs_get(nd_refs *r, const char *p) {
    r->x = ref_getf("%s.%s", p, "x"), r->V = ref_getf("%s.%s", p, "V");
    r->g = ref_getf("%s.%s", p, "g"), r->b = ref_getf("%s.%s", p, "b");
    r->out = ref_getf("%s.%s", p, "out"), r->dout = ref_getf("%s.%s", p, "dout");
    r->dx = ref_getf("%s.%s", p, "dx"), r->dV = ref_getf("%s.%s", p, "dV");
    r->dg = ref_getf("%s.%s", p, "dg"), r->db = ref_getf("%s.%s", p, "db");
    return r->x && r->V && r->g && r->b && r->out && r->dout && r->dx && r->dV && r->dg && r->db;
}

/* The same layer as a model (node reads the data node): its V, g, b set from the references;
 * out and the parameter gradients compared as "<prefix>.<tensor><suffix>". */
static void nd_model_check(const char *prefix, const char *suffix, nz_model *m, int node,
                           const nd_refs *r, int B) {
    nz_error err;
    const nz_node *n = &m->nodes[node];
    const ref_tensor *src[3] = {r->V, r->g, r->b}, *grad[3] = {r->dV, r->dg, r->db};
    for (int k = 0; k < 3; k++) {
        if (!expect_shape(src[k], n->params[k].ndim, n->params[k].dims)) return;
        memcpy(m->params + n->params[k].off, src[k]->data, sizeof(float) * n->params[k].n);
    }
    nz_ws *ws = nz_ws_new(m, B, &err);
    if (!ws) {
        CHECK(0, "%s: nz_ws_new: %s", prefix, err.msg);
        return;
    }
    char l[80];
    const float *z = nz_forward(m, ws, r->x->data, B, 0, NULL);
    snprintf(l, sizeof l, "%s.out%s", prefix, suffix);
    compare(l, z, r->out, nz_shape_size(n->out) * (size_t)B);
    nz_ws_zero_grads(ws);
    nz_backward(m, ws, r->dout->data, B);
    static const char *const pn[3] = {"dV", "dg", "db"};
    for (int k = 0; k < 3; k++) {
        snprintf(l, sizeof l, "%s.%s%s", prefix, pn[k], suffix);
        compare(l, nz_ws_grads(ws) + n->params[k].off, grad[k], n->params[k].n);
    }
    nz_ws_free(ws);
}

static void check_ndense(void) {
    nd_refs r;
    if (!nd_refs_get(&r, "ndense") || r.x->ndim != 2 || r.V->ndim != 2) return;
    const int B = r.x->dims[0], NI = r.x->dims[1], NO = r.V->dims[0];
    if (!expect_shape(r.V, 2, (int[]){NO, NI}) || !expect_shape(r.g, 1, (int[]){NO}) ||
        !expect_shape(r.b, 1, (int[]){NO}) || !expect_shape(r.out, 2, (int[]){B, NO}) ||
        !expect_shape(r.dout, 2, (int[]){B, NO}))
        return;
    float *W = zalloc(r.V->n), *dW = zalloc(r.V->n), *y = zalloc(r.out->n), *gx = zalloc(r.x->n),
          *gV = zalloc(r.V->n), *gg = zalloc(r.g->n), *gb = zalloc(r.b->n);
    normdir_weights(W, r.V->data, r.g->data, NO, NI);
    dense_forward(y, r.x->data, W, r.b->data, B, NI, NO);
    dense_backward(gx, dW, gb, r.dout->data, r.x->data, W, B, NI, NO);
    normdir_backward(gV, gg, dW, r.V->data, r.g->data, NO, NI);
    compare("ndense.out", y, r.out, r.out->n);
    compare("ndense.dx", gx, r.dx, r.x->n);
    compare("ndense.dV", gV, r.dV, r.V->n);
    compare("ndense.dg", gg, r.dg, r.g->n);
    compare("ndense.db", gb, r.db, r.b->n);
    free(W), free(dW), free(y), free(gx), free(gV), free(gg), free(gb);

    /* the graph: the input is NI features (1 x 1 x NI), NO classes */
    nz_model m;
    nz_error err;
    int id = -1;
    if (nz_model_init(&m, "ref-ndense", (nz_shape){1, 1, NI}, NO, &err) == NZ_OK)
        id = nz_model_add_ndense(&m, "nfc", 0, NO, &err);
    if (id < 0 || nz_model_validate(&m, &err) != NZ_OK)
        CHECK(0, "ndense model: %s", err.msg);
    else
        nd_model_check("ndense-model", "", &m, id, &r, B);
    nz_model_free(&m);
}

static void check_nconv(int i, int threads) {
    nz_set_threads(threads);
    char p[24];
    snprintf(p, sizeof p, "nconv%d", i);
    nd_refs r;
    const ref_tensor *cfg = ref_getf("%s.%s", p, "cfg");
    if (!cfg || !nd_refs_get(&r, p)) return;
    if (!expect_shape(cfg, 1, (int[]){7}) || r.x->ndim != 4) return;
    int c[7];
    for (int k = 0; k < 7; k++) c[k] = (int)cfg->data[k];
    if (c[0] < 1 || c[0] > 4 || c[1] < 1 || c[2] < 1 || c[3] < 1 || c[4] < 1 || c[5] < 1 ||
        c[6] < 0 || c[1] + 2 * c[6] < c[4] || c[2] + 2 * c[6] < c[4]) {
        CHECK(0, "%s.cfg: bad configuration", p);
        return;
    }
    const int B = r.x->dims[0];
    const conv_dims d = conv_dims_make(c[0], c[1], c[2], c[3], c[4], c[5], c[6]);
    if (!expect_shape(r.x, 4, (int[]){B, d.C, d.H, d.W}) ||
        !expect_shape(r.V, 4, (int[]){d.OC, d.C, d.KH, d.KW}) ||
        !expect_shape(r.g, 2, (int[]){d.OC, d.C}) || !expect_shape(r.b, 1, (int[]){d.OC}) ||
        !expect_shape(r.out, 4, (int[]){B, d.OC, d.OH, d.OW}) ||
        !expect_shape(r.dout, 4, (int[]){B, d.OC, d.OH, d.OW}))
        return;
    const int G = d.OC * d.C, S = d.KH * d.KW;
    const size_t T = (size_t)(layers_threads() > 0 ? layers_threads() : 1);
    float *scratch = zalloc(conv_scratch_per_thread(&d) * T);
    float *partial = zalloc((r.V->n + r.b->n) * T);
    float *W = zalloc(r.V->n), *dW = zalloc(r.V->n), *y = zalloc(r.out->n), *gx = zalloc(r.x->n),
          *gV = zalloc(r.V->n), *gg = zalloc(r.g->n), *gb = zalloc(r.b->n);
    normdir_weights(W, r.V->data, r.g->data, G, S);
    conv2d_forward(y, r.x->data, W, r.b->data, B, &d, scratch);
    conv2d_backward(gx, dW, gb, r.dout->data, r.x->data, W, B, &d, scratch, partial);
    normdir_backward(gV, gg, dW, r.V->data, r.g->data, G, S);
    char label[80];
    const char *names[5] = {"out", "dx", "dV", "dg", "db"};
    const float *got[5] = {y, gx, gV, gg, gb};
    const ref_tensor *refs[5] = {r.out, r.dx, r.dV, r.dg, r.db};
    for (int k = 0; k < 5; k++) {
        snprintf(label, sizeof label, "%s.%s k%d s%d p%d %dt", p, names[k], c[4], c[5], c[6],
                 threads);
        compare(label, got[k], refs[k], refs[k]->n);
    }
    free(scratch), free(partial), free(W), free(dW), free(y), free(gx), free(gV), free(gg),
        free(gb);

    /* the graph (the class count is not used by forward/backward) */
    nz_model m;
    nz_error err;
    int id = -1;
    if (nz_model_init(&m, "ref-nconv", (nz_shape){d.C, d.H, d.W}, 2, &err) == NZ_OK)
        id = nz_model_add_nconv2d(&m, "nconv", 0, d.OC, d.KH, d.stride, d.pad, &err);
    if (id < 0) {
        CHECK(0, "%s model: %s", p, err.msg);
    } else {
        char pre[40];
        snprintf(pre, sizeof pre, "%s-model", p);
        snprintf(label, sizeof label, " k%d s%d p%d %dt", c[4], c[5], c[6], threads);
        nd_model_check(pre, label, &m, id, &r, B);
    }
    nz_model_free(&m);
}

/* ---------------------------------------------------------------- LeNet-5 */

static int node_id(const nz_model *m, const char *name) {
    for (int i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].name, name) == 0) return i;
    return -1;
}

static const char *const LENET_PARAMS[] = {"conv1", "conv2", "fc1", "fc2"};
static const char *const LENET_ACTS[] = {"conv1", "pool1", "conv2", "pool2", "fc1", "relu1"};

/* Copies torch's lenet.<p>.{W,b} into the model's parameter views (same layouts). */
static int lenet_load_params(nz_model *m) {
    for (size_t i = 0; i < sizeof LENET_PARAMS / sizeof LENET_PARAMS[0]; i++) {
        int id = node_id(m, LENET_PARAMS[i]);
        if (id < 0) {
            CHECK(0, "zoo lenet5 has no node '%s'", LENET_PARAMS[i]);
            return 0;
        }
        const nz_node *n = &m->nodes[id];
        for (int k = 0; k < 2; k++) {
            const ref_tensor *t = ref_getf("lenet.%s.%s", LENET_PARAMS[i], k ? "b" : "W");
            const nz_param *p = &n->params[k];
            if (!expect_shape(t, p->ndim, p->dims)) return 0;
            memcpy(m->params + p->off, t->data, sizeof(float) * p->n);
        }
    }
    return 1;
}

static void check_lenet(int threads) {
    nz_set_threads(threads);
    nz_model m;
    nz_error err;
    if (nz_zoo_build(&m, "lenet5", (nz_shape){1, 28, 28}, 10, &err) != NZ_OK) {
        CHECK(0, "nz_zoo_build lenet5: %s", err.msg);
        return;
    }
    const ref_tensor *x = ref_get("lenet.x"), *lab = ref_get("lenet.labels"),
                     *logits = ref_get("lenet.logits"), *loss = ref_get("lenet.loss");
    uint8_t y[64];
    nz_ws *ws = NULL;
    if (!x || !lab || !logits || !loss || x->ndim != 4 || x->dims[0] > 64 ||
        !expect_shape(x, 4, (int[]){x->dims[0], 1, 28, 28}) ||
        !labels_from(lab, x->dims[0], 10, y) || !lenet_load_params(&m))
        goto done;
    const int B = x->dims[0];
    /* the workspace after nz_set_threads: its scratch is sized for the thread count */
    ws = nz_ws_new(&m, B, &err);
    if (!ws) {
        CHECK(0, "nz_ws_new: %s", err.msg);
        goto done;
    }
    nz_rng r;
    nz_rng_seed(&r, 1);
    const float *z = nz_forward(&m, ws, x->data, B, 1, &r);
    char label[80];
    for (size_t i = 0; i < sizeof LENET_ACTS / sizeof LENET_ACTS[0]; i++) {
        int id = node_id(&m, LENET_ACTS[i]);
        const ref_tensor *t = ref_getf("lenet.act.%s%s", LENET_ACTS[i], "");
        if (id < 0 || !t) {
            CHECK(id >= 0, "zoo lenet5 has no node '%s'", LENET_ACTS[i]);
            continue;
        }
        snprintf(label, sizeof label, "lenet.act.%s %dt", LENET_ACTS[i], threads);
        compare(label, nz_ws_act(ws, id), t, nz_shape_size(m.nodes[id].out) * (size_t)B);
    }
    snprintf(label, sizeof label, "lenet.logits %dt", threads);
    compare(label, z, logits, (size_t)B * 10);
    float *dl = zalloc((size_t)B * 10);
    float L = nz_softmax_xent(z, y, B, 10, dl, NULL);
    snprintf(label, sizeof label, "lenet.loss %dt", threads);
    compare(label, &L, loss, 1);
    nz_ws_zero_grads(ws);
    nz_backward(&m, ws, dl, B);
    const float *G = nz_ws_grads(ws);
    for (size_t i = 0; i < sizeof LENET_PARAMS / sizeof LENET_PARAMS[0]; i++) {
        const nz_node *n = &m.nodes[node_id(&m, LENET_PARAMS[i])];
        for (int k = 0; k < 2; k++) {
            const ref_tensor *t = ref_getf("lenet.grad.%s.%s", LENET_PARAMS[i], k ? "b" : "W");
            snprintf(label, sizeof label, "lenet.grad.%s.%s %dt", LENET_PARAMS[i], k ? "b" : "W",
                     threads);
            compare(label, G + n->params[k].off, t, n->params[k].n);
        }
    }

    /* one SGD step (momentum buffer empty, as torch.optim.SGD's first step) from nnzip's own
     * gradients, which match torch's to ~1e-6 */
    const ref_tensor *hp = ref_get("lenet.sgd");
    if (expect_shape(hp, 1, (int[]){3})) {
        nz_sgd opt;
        if (nz_sgd_init(&opt, m.n_params, hp->data[1], hp->data[2], 0, &err) != NZ_OK) {
            CHECK(0, "nz_sgd_init: %s", err.msg);
        } else {
            float *before = malloc(sizeof(float) * m.n_params);
            memcpy(before, m.params, sizeof(float) * m.n_params);
            nz_sgd_step(&opt, m.params, G, hp->data[0]);
            nz_sgd_free(&opt);
            for (size_t i = 0; i < sizeof LENET_PARAMS / sizeof LENET_PARAMS[0]; i++) {
                const nz_node *n = &m.nodes[node_id(&m, LENET_PARAMS[i])];
                for (int k = 0; k < 2; k++) {
                    const char *wb = k ? "b" : "W";
                    const nz_param *pp = &n->params[k];
                    const ref_tensor *t = ref_getf("lenet.step.%s.%s", LENET_PARAMS[i], wb);
                    const ref_tensor *t0 = ref_getf("lenet.%s.%s", LENET_PARAMS[i], wb);
                    snprintf(label, sizeof label, "lenet.step.%s.%s %dt", LENET_PARAMS[i], wb,
                             threads);
                    compare(label, m.params + pp->off, t, pp->n);
                    /* The update itself, p_after - p_before, normalized by its own size: the
                     * parameters barely move in one step, so comparing them alone would miss
                     * e.g. a dropped weight decay term (lr * wd * p ~ 5e-5 |p|). The float
                     * differences are exact (Sterbenz). */
                    if (!t || !t0 || t->n != pp->n || t0->n != pp->n) continue;
                    float *mine = zalloc(pp->n), *theirs = zalloc(pp->n);
                    for (size_t j = 0; j < pp->n; j++) {
                        mine[j] = m.params[pp->off + j] - before[pp->off + j];
                        theirs[j] = t->data[j] - t0->data[j];
                    }
                    ref_tensor d = *t;
                    snprintf(d.name, sizeof d.name, "lenet.update.%s.%s", LENET_PARAMS[i], wb);
                    d.data = theirs;
                    snprintf(label, sizeof label, "lenet.update.%s.%s %dt", LENET_PARAMS[i], wb,
                             threads);
                    compare(label, mine, &d, pp->n);
                    free(mine), free(theirs);
                }
            }
            free(before);
        }
    }
    free(dl);
done:
    nz_ws_free(ws);
    nz_model_free(&m);
}

/* ---------------------------------------------------------------- batch norm, pools, shortcut */

/* BatchNorm2d / BatchNorm1d (a [B, C] input is C channels of 1 x 1) in training and eval mode:
 * the kernels (out, dx, dgamma, dbeta, running statistics after the forward), and the same
 * layer as a one-node model through nz_forward / nz_backward (out, the running statistics the
 * forward writes into the model, dgamma, dbeta), which also checks the node's momentum. */
static void check_bn(const char *p, int training) {
    const char *names[12] = {"x", "gamma", "beta", "rm0", "rv0", "out",
                             "dout", "dx", "dgamma", "dbeta", "rm", "rv"};
    const ref_tensor *t[12];
    for (int k = 0; k < 12; k++)
        if (!(t[k] = ref_getf("%s.%s", p, names[k]))) return;
    const ref_tensor *x = t[0];
    if (x->ndim != 2 && x->ndim != 4) {
        CHECK(0, "%s.x: %d dims", p, x->ndim);
        return;
    }
    const int B = x->dims[0], C = x->dims[1];
    const int H = x->ndim == 4 ? x->dims[2] : 1, W = x->ndim == 4 ? x->dims[3] : 1;
    for (int k = 1; k < 12; k++) {
        if (k == 5 || k == 6 || k == 7) {
            if (!expect_shape(t[k], x->ndim, x->dims)) return;
        } else if (!expect_shape(t[k], 1, (int[]){C})) {
            return;
        }
    }
    const size_t n = x->n, nc = (size_t)C;
    float *y = zalloc(n), *gx = zalloc(n), *gg = zalloc(nc), *gb = zalloc(nc), *rm = zalloc(nc),
          *rv = zalloc(nc), *mu = zalloc(nc), *is = zalloc(nc);
    memcpy(rm, t[3]->data, sizeof(float) * nc);
    memcpy(rv, t[4]->data, sizeof(float) * nc);
    batchnorm_forward(y, x->data, t[1]->data, t[2]->data, rm, rv, mu, is, B, C, H * W,
                      NZ_BN_MOMENTUM, NZ_BN_EPS, training);
    batchnorm_backward(gx, gg, gb, t[6]->data, x->data, t[1]->data, mu, is, B, C, H * W,
                       training);
    char label[80];
    const float *got[7] = {y, gx, gg, gb, rm, rv};
    const int ref_of[6] = {5, 7, 8, 9, 10, 11};
    for (int k = 0; k < 6; k++) {
        snprintf(label, sizeof label, "%s.%s", p, names[ref_of[k]]);
        compare(label, got[k], t[ref_of[k]], t[ref_of[k]]->n);
    }
    if (!training)
        CHECK(memcmp(rm, t[3]->data, sizeof(float) * nc) == 0 &&
                  memcmp(rv, t[4]->data, sizeof(float) * nc) == 0,
              "%s: eval forward changed the running statistics", p);

    /* the graph: a [B, C] input is fed as (1, 1, C) and flattened to (C, 1, 1) */
    nz_model m;
    nz_error err;
    int id = -1;
    const nz_shape in = x->ndim == 4 ? (nz_shape){C, H, W} : (nz_shape){1, 1, C};
    if (nz_model_init(&m, "ref-bn", in, 2, &err) == NZ_OK) {
        id = x->ndim == 4 ? 0 : nz_model_add_flatten(&m, "flatten", 0, &err);
        if (id >= 0) id = nz_model_add_batchnorm(&m, "bn", id, &err);
    }
    nz_ws *ws = id >= 0 ? nz_ws_new(&m, B, &err) : NULL;
    if (!ws) {
        CHECK(0, "%s model: %s", p, err.msg);
    } else {
        const nz_node *nd = &m.nodes[id];
        for (int k = 0; k < 4; k++)
            memcpy(m.params + nd->params[k].off, t[k + 1]->data, sizeof(float) * nc);
        const float *z = nz_forward(&m, ws, x->data, B, training, NULL);
        snprintf(label, sizeof label, "%s-model.out", p);
        compare(label, z, t[5], n);
        snprintf(label, sizeof label, "%s-model.rm", p);
        compare(label, m.params + nd->params[2].off, t[10], nc);
        snprintf(label, sizeof label, "%s-model.rv", p);
        compare(label, m.params + nd->params[3].off, t[11], nc);
        nz_ws_zero_grads(ws);
        nz_backward(&m, ws, t[6]->data, B);
        snprintf(label, sizeof label, "%s-model.dgamma", p);
        compare(label, nz_ws_grads(ws) + nd->params[0].off, t[8], nc);
        snprintf(label, sizeof label, "%s-model.dbeta", p);
        compare(label, nz_ws_grads(ws) + nd->params[1].off, t[9], nc);
    }
    nz_ws_free(ws);
    nz_model_free(&m);
    free(y), free(gx), free(gg), free(gb), free(rm), free(rv), free(mu), free(is);
}

/* nn.AvgPool2d(k, s) (prefix avgpool{i}, cfg [k, s]) or nn.AdaptiveAvgPool2d(1) (prefix gap:
 * the window is the whole plane, as nz_forward runs NZ_OP_GAP) */
static void check_avgpool_ref(const char *p) {
    const int gap = strcmp(p, "gap") == 0;
    const ref_tensor *cfg = gap ? NULL : ref_getf("%s.%s", p, "cfg"),
                     *x = ref_getf("%s.%s", p, "x"), *out = ref_getf("%s.%s", p, "out"),
                     *dout = ref_getf("%s.%s", p, "dout"), *dx = ref_getf("%s.%s", p, "dx");
    if ((!gap && !expect_shape(cfg, 1, (int[]){2})) || !x || !out || !dout || !dx ||
        x->ndim != 4 || !expect_shape(dx, 4, x->dims))
        return;
    const int B = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    const int kh = gap ? H : (int)cfg->data[0], kw = gap ? W : (int)cfg->data[0],
              s = gap ? 1 : (int)cfg->data[1];
    if (kh < 1 || kw < 1 || s < 1 || kh > H || kw > W) {
        CHECK(0, "%s.cfg: bad configuration", p);
        return;
    }
    const int OH = (H - kh) / s + 1, OW = (W - kw) / s + 1;
    if (!expect_shape(out, 4, (int[]){B, C, OH, OW}) ||
        !expect_shape(dout, 4, (int[]){B, C, OH, OW}))
        return;
    float *y = zalloc(out->n), *gx = zalloc(x->n);
    avgpool_forward(y, x->data, B, C, H, W, kh, kw, s, OH, OW);
    avgpool_backward(gx, dout->data, B, C, H, W, kh, kw, s, OH, OW);
    char label[64];
    snprintf(label, sizeof label, "%s.out %dx%d/%d", p, kh, kw, s);
    compare(label, y, out, out->n);
    snprintf(label, sizeof label, "%s.dx %dx%d/%d", p, kh, kw, s);
    compare(label, gx, dx, dx->n);
    free(y), free(gx);
}

/* option-A shortcut against F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, lo, OC - C - lo)) */
static void check_shortcut_ref(int i) {
    char p[24];
    snprintf(p, sizeof p, "shortcut%d", i);
    const ref_tensor *cfg = ref_getf("%s.%s", p, "cfg"), *x = ref_getf("%s.%s", p, "x"),
                     *out = ref_getf("%s.%s", p, "out"), *dout = ref_getf("%s.%s", p, "dout"),
                     *dx = ref_getf("%s.%s", p, "dx");
    if (!expect_shape(cfg, 1, (int[]){3}) || !x || !out || !dout || !dx || x->ndim != 4 ||
        !expect_shape(dx, 4, x->dims))
        return;
    const int B = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    const int OC = (int)cfg->data[1], s = (int)cfg->data[2];
    if ((int)cfg->data[0] != C || OC < C || s < 1) {
        CHECK(0, "%s.cfg: bad configuration", p);
        return;
    }
    const int OH = (H - 1) / s + 1, OW = (W - 1) / s + 1;
    if (!expect_shape(out, 4, (int[]){B, OC, OH, OW}) ||
        !expect_shape(dout, 4, (int[]){B, OC, OH, OW}))
        return;
    float *y = zalloc(out->n), *gx = zalloc(x->n);
    shortcut_forward(y, x->data, B, C, H, W, OC, s, OH, OW);
    shortcut_backward(gx, dout->data, B, C, H, W, OC, s, OH, OW);
    char label[64];
    snprintf(label, sizeof label, "%s.out %d->%d s%d %dx%d", p, C, OC, s, H, W);
    compare(label, y, out, out->n);
    snprintf(label, sizeof label, "%s.dx %d->%d s%d %dx%d", p, C, OC, s, H, W);
    compare(label, gx, dx, dx->n);
    /* a copy and a scatter: exact */
    CHECK(memcmp(y, out->data, sizeof(float) * out->n) == 0 &&
              memcmp(gx, dx->data, sizeof(float) * dx->n) == 0,
          "%s: option-A shortcut is not bit-exact", p);
    free(y), free(gx);
}

/* input feature selection against torch.index_select(x.flatten(1), 1, index): bit-exact */
static void check_select_ref(void) {
    const ref_tensor *x = ref_get("select.x"), *ix = ref_get("select.index"),
                     *out = ref_get("select.out"), *dout = ref_get("select.dout"),
                     *dx = ref_get("select.dx");
    if (!x || !ix || !out || !dout || !dx || x->ndim != 4 || ix->ndim != 1 ||
        !expect_shape(dx, 4, x->dims))
        return;
    const int B = x->dims[0], F = (int)(x->n / (size_t)B), K = ix->dims[0];
    if (!expect_shape(out, 2, (int[]){B, K}) || !expect_shape(dout, 2, (int[]){B, K})) return;
    for (int k = 0; k < K; k++)
        if (!(ix->data[k] >= 0 && ix->data[k] < (float)F)) {
            CHECK(0, "select.index: %g out of range", (double)ix->data[k]);
            return;
        }
    float *y = zalloc(out->n), *gx = zalloc(x->n);
    select_forward(y, x->data, ix->data, B, F, K);
    select_backward(gx, dout->data, ix->data, B, F, K);
    compare("select.out", y, out, out->n);
    compare("select.dx", gx, dx, dx->n);
    CHECK(memcmp(y, out->data, sizeof(float) * out->n) == 0 &&
              memcmp(gx, dx->data, sizeof(float) * dx->n) == 0,
          "select: not bit-exact against index_select");
    free(y), free(gx);
}

/* ---------------------------------------------------------------- residual networks */

static const char *slot_name(const nz_node *n, int k) {
    static const char *const wb[] = {"W", "b"},
                             *const bn[] = {"gamma", "beta", "running_mean", "running_var"};
    return n->op == NZ_OP_BATCHNORM ? bn[k] : wb[k];
}

/* Copies "<prefix>.<node>.<slot>" into every parameter slot of m. */
static int load_params(nz_model *m, const char *prefix) {
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        for (int k = 0; k < n->n_params; k++) {
            char name[128];
            snprintf(name, sizeof name, "%s.%s.%s", prefix, n->name, slot_name(n, k));
            const ref_tensor *t = ref_get(name);
            const nz_param *pp = &n->params[k];
            if (!expect_shape(t, pp->ndim, pp->dims)) return 0;
            memcpy(m->params + pp->off, t->data, sizeof(float) * pp->n);
        }
    }
    return 1;
}

/* number of records named "<prefix>.<x>.<y>" (exactly two dots after the prefix's) */
static size_t count_param_records(const char *prefix) {
    size_t c = 0, pl = strlen(prefix);
    for (size_t i = 0; i < g_ref->count; i++) {
        const char *nm = g_ref->t[i].name;
        if (strncmp(nm, prefix, pl) || nm[pl] != '.') continue;
        const char *d1 = strchr(nm + pl + 1, '.');
        if (d1 && !strchr(d1 + 1, '.') && strncmp(nm + pl + 1, "act.", 4) != 0) c++;
    }
    return c;
}

static size_t count_param_slots(const nz_model *m) {
    size_t c = 0;
    for (int i = 0; i < m->n_nodes; i++) c += (size_t)m->nodes[i].n_params;
    return c;
}

/* A conv in front of a training-mode batch norm: its bias has an exactly zero gradient. */
static int bias_before_bn(const nz_model *m, int node, int k) {
    if (m->nodes[node].op != NZ_OP_CONV2D || k != 1) return 0;
    for (int j = node + 1; j < m->n_nodes; j++)
        if (m->nodes[j].n_inputs == 1 && m->nodes[j].inputs[0] == node)
            return m->nodes[j].op == NZ_OP_BATCHNORM;
    return 0;
}

/* The tiny ResNet of scripts/torch_ref.py (TinyResNet), built with the same node names. */
static int build_tiny_resnet(nz_model *m, nz_error *err) {
    if (nz_model_init(m, "tiny-resnet", (nz_shape){3, 8, 8}, 10, err)) return -1;
    int x = nz_model_add_conv2d(m, "stem_conv", 0, 4, 3, 1, 1, err), stem, b1, y, sc;
    if (x >= 0) x = nz_model_add_batchnorm(m, "stem_bn", x, err);
    if (x >= 0) x = nz_model_add_relu(m, "stem_relu", x, err);
    stem = x;
    if (x >= 0) x = nz_model_add_conv2d(m, "b1a_conv", x, 4, 3, 1, 1, err);
    if (x >= 0) x = nz_model_add_batchnorm(m, "b1a_bn", x, err);
    if (x >= 0) x = nz_model_add_relu(m, "b1a_relu", x, err);
    if (x >= 0) x = nz_model_add_conv2d(m, "b1b_conv", x, 4, 3, 1, 1, err);
    if (x >= 0) x = nz_model_add_batchnorm(m, "b1b_bn", x, err);
    if (x >= 0) x = nz_model_add_add(m, "b1_add", x, stem, err);
    if (x >= 0) x = nz_model_add_relu(m, "b1_relu", x, err);
    b1 = x;
    if (x >= 0) x = nz_model_add_conv2d(m, "b2a_conv", x, 8, 3, 2, 1, err);
    if (x >= 0) x = nz_model_add_batchnorm(m, "b2a_bn", x, err);
    if (x >= 0) x = nz_model_add_relu(m, "b2a_relu", x, err);
    if (x >= 0) x = nz_model_add_conv2d(m, "b2b_conv", x, 8, 3, 1, 1, err);
    y = x >= 0 ? nz_model_add_batchnorm(m, "b2b_bn", x, err) : -1;
    sc = y >= 0 ? nz_model_add_shortcut(m, "b2_short", b1, 8, 2, err) : -1;
    x = sc >= 0 ? nz_model_add_add(m, "b2_add", y, sc, err) : -1;
    if (x >= 0) x = nz_model_add_relu(m, "b2_relu", x, err);
    if (x >= 0) x = nz_model_add_gap(m, "gap", x, err);
    if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, err);
    if (x >= 0) x = nz_model_add_dense(m, "fc", x, 10, err);
    if (x < 0) {
        nz_model_free(m);
        return -1;
    }
    return nz_model_validate(m, err) == NZ_OK ? 0 : (nz_model_free(m), -1);
}

/* One training step of the tiny ResNet: activations, logits, loss, every gradient, the running
 * statistics the forward leaves, and one SGD step restricted to the trainable tensors
 * (nz_sgd_use_model: buffers are neither decayed nor moved) against torch.optim.SGD.
 * The conv biases in front of a BN have a zero gradient in exact arithmetic; both libraries
 * give rounding noise (~1e-9), so those are compared against the scale of the same conv's
 * weight gradient instead of their own, and their SGD update (weight decay only) likewise
 * against the weight update. */
static void check_tiny_resnet(int threads) {
    nz_set_threads(threads);
    nz_model m;
    nz_error err;
    if (build_tiny_resnet(&m, &err) != 0) {
        CHECK(0, "tiny resnet: %s", err.msg);
        return;
    }
    const ref_tensor *x = ref_get("rn.x"), *lab = ref_get("rn.labels"),
                     *logits = ref_get("rn.logits"), *loss = ref_get("rn.loss");
    uint8_t y[64];
    nz_ws *ws = NULL;
    float *dl = NULL;
    if (!x || !lab || !logits || !loss || x->ndim != 4 || x->dims[0] > 64 ||
        !expect_shape(x, 4, (int[]){x->dims[0], 3, 8, 8}) ||
        !labels_from(lab, x->dims[0], 10, y) || !load_params(&m, "rn"))
        goto done;
    CHECK(count_param_records("rn") == count_param_slots(&m),
          "rn: %zu parameter records, the model has %zu slots", count_param_records("rn"),
          count_param_slots(&m));
    const int B = x->dims[0];
    if (!(ws = nz_ws_new(&m, B, &err))) {
        CHECK(0, "nz_ws_new: %s", err.msg);
        goto done;
    }
    const float *z = nz_forward(&m, ws, x->data, B, 1, NULL);
    char label[96];
    static const char *const acts[] = {"stem_relu", "b1_relu", "b2_short", "b2_relu", "gap"};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        const int id = node_id(&m, acts[i]);
        snprintf(label, sizeof label, "rn.act.%s %dt", acts[i], threads);
        compare(label, nz_ws_act(ws, id), ref_getf("rn.act.%s%s", acts[i], ""),
                nz_shape_size(m.nodes[id].out) * (size_t)B);
    }
    snprintf(label, sizeof label, "rn.logits %dt", threads);
    compare(label, z, logits, (size_t)B * 10);
    dl = zalloc((size_t)B * 10);
    float L = nz_softmax_xent(z, y, B, 10, dl, NULL);
    snprintf(label, sizeof label, "rn.loss %dt", threads);
    compare(label, &L, loss, 1);
    nz_ws_zero_grads(ws);
    nz_backward(&m, ws, dl, B);
    const float *G = nz_ws_grads(ws);
    for (int i = 1; i < m.n_nodes; i++) {
        const nz_node *n = &m.nodes[i];
        for (int k = 0; k < n->n_params; k++) {
            const nz_param *pp = &n->params[k];
            if (nz_param_is_buffer(n, k)) {
                const ref_tensor *t = ref_getf("rn.after.%s.%s", n->name, slot_name(n, k));
                snprintf(label, sizeof label, "rn.after.%s.%s %dt", n->name, slot_name(n, k),
                         threads);
                compare(label, m.params + pp->off, t, pp->n);
                int zero = 1;
                for (size_t j = 0; j < pp->n; j++) zero &= G[pp->off + j] == 0.0f;
                CHECK(zero, "rn: %s.%s (a buffer) got a gradient", n->name, slot_name(n, k));
                continue;
            }
            const ref_tensor *t = ref_getf("rn.grad.%s.%s", n->name, slot_name(n, k));
            snprintf(label, sizeof label, "rn.grad.%s.%s %dt", n->name, slot_name(n, k),
                     threads);
            if (!t || t->n != pp->n) {
                CHECK(t != NULL, "rn: no gradient record for %s", label);
                continue;
            }
            if (bias_before_bn(&m, i, k)) {
                const nz_param *pw = &n->params[0];
                double scale = 0, mine = 0;
                for (size_t j = 0; j < pw->n; j++) scale = fmax(scale, fabs(G[pw->off + j]));
                for (size_t j = 0; j < pp->n; j++) mine = fmax(mine, fabs(G[pp->off + j]));
                compare_floor(label, G + pp->off, t, pp->n, scale, "of max|dW|: zero gradient");
                CHECK(mine <= 1e-5 * scale, "%s: bias before a BN: gradient %.3g, max|dW| %.3g",
                      label, mine, scale);
                continue;
            }
            compare(label, G + pp->off, t, pp->n);
        }
    }

    /* one SGD step over the trainable tensors; buffers untouched */
    const ref_tensor *hp = ref_get("rn.sgd");
    nz_sgd opt;
    if (!expect_shape(hp, 1, (int[]){3})) goto done;
    if (nz_sgd_init(&opt, m.n_params, hp->data[1], hp->data[2], 0, &err) != NZ_OK ||
        nz_sgd_use_model(&opt, &m, &err) != NZ_OK) {
        CHECK(0, "nz_sgd: %s", err.msg);
        goto done;
    }
    float *before = malloc(sizeof(float) * m.n_params);
    memcpy(before, m.params, sizeof(float) * m.n_params);
    nz_sgd_step(&opt, m.params, G, hp->data[0]);
    nz_sgd_free(&opt);
    for (int i = 1; i < m.n_nodes; i++) {
        const nz_node *n = &m.nodes[i];
        for (int k = 0; k < n->n_params; k++) {
            const nz_param *pp = &n->params[k];
            const char *sn = slot_name(n, k);
            const ref_tensor *t = ref_getf("rn.step.%s.%s", n->name, sn);
            snprintf(label, sizeof label, "rn.step.%s.%s %dt", n->name, sn, threads);
            compare(label, m.params + pp->off, t, pp->n);
            if (nz_param_is_buffer(n, k)) {
                CHECK(memcmp(m.params + pp->off, before + pp->off, sizeof(float) * pp->n) == 0,
                      "rn: the optimizer changed %s.%s (a buffer)", n->name, sn);
                continue;
            }
            /* the update itself, normalized by its own size (as for LeNet) */
            const ref_tensor *t0 = ref_getf("rn.%s.%s", n->name, sn);
            if (!t || !t0 || t->n != pp->n || t0->n != pp->n) continue;
            float *mine = zalloc(pp->n), *theirs = zalloc(pp->n);
            for (size_t j = 0; j < pp->n; j++) {
                mine[j] = m.params[pp->off + j] - before[pp->off + j];
                theirs[j] = t->data[j] - t0->data[j];
            }
            ref_tensor d = *t;
            snprintf(d.name, sizeof d.name, "rn.update.%s.%s", n->name, sn);
            d.data = theirs;
            snprintf(label, sizeof label, "rn.update.%s.%s %dt", n->name, sn, threads);
            if (bias_before_bn(&m, i, k)) {
                /* weight decay plus a rounding-noise gradient: against the W update's scale */
                const nz_param *pw = &n->params[0];
                double scale = 0;
                for (size_t j = 0; j < pw->n; j++)
                    scale = fmax(scale, fabs(m.params[pw->off + j] - before[pw->off + j]));
                compare_floor(label, mine, &d, pp->n, scale, "of max|W update|");
            } else {
                compare(label, mine, &d, pp->n);
            }
            free(mine), free(theirs);
        }
    }
    free(before);
done:
    free(dl);
    nz_ws_free(ws);
    nz_model_free(&m);
}

/* The zoo's resnet20 in eval mode with PyTorch's weights and calibrated running statistics:
 * logits and the pooled features of two 32x32 images. Every parameter slot is matched by node
 * name and slot, and every "r20.<node>.<slot>" record must be used. */
static void check_resnet20(int threads) {
    nz_set_threads(threads);
    nz_model m;
    nz_error err;
    if (nz_zoo_build(&m, "resnet20", (nz_shape){3, 32, 32}, 10, &err) != NZ_OK) {
        CHECK(0, "nz_zoo_build resnet20: %s", err.msg);
        return;
    }
    const ref_tensor *x = ref_get("r20.x"), *logits = ref_get("r20.logits"),
                     *gap = ref_get("r20.act.gap");
    nz_ws *ws = NULL;
    if (!x || !logits || !gap || x->ndim != 4 || !expect_shape(x, 4, (int[]){x->dims[0], 3, 32, 32}) ||
        !load_params(&m, "r20"))
        goto done;
    CHECK(count_param_records("r20") == count_param_slots(&m),
          "r20: %zu parameter records, the zoo model has %zu slots", count_param_records("r20"),
          count_param_slots(&m));
    const int B = x->dims[0];
    if (!(ws = nz_ws_new(&m, B, &err))) {
        CHECK(0, "nz_ws_new: %s", err.msg);
        goto done;
    }
    const float *z = nz_forward(&m, ws, x->data, B, 0, NULL);
    char label[64];
    const int g = node_id(&m, "gap");
    snprintf(label, sizeof label, "r20.act.gap %dt", threads);
    if (g >= 0) compare(label, nz_ws_act(ws, g), gap, gap->n);
    snprintf(label, sizeof label, "r20.logits %dt", threads);
    compare(label, z, logits, (size_t)B * 10);
done:
    nz_ws_free(ws);
    nz_model_free(&m);
}

/* ---------------------------------------------------------------- main */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : REF_DEFAULT;
    double t0 = now();
    ref_file rf;
    char msg[256];
    if (ref_load(&rf, path, msg, sizeof msg) != 0) {
        CHECK(0, "reference file %s: %s\n  generate it with: scripts/torch_ref.py %s\n"
                 "  (needs python3-torch: apt-get install python3-torch)",
              path, msg, path);
        return tl_finish("test_torch_ref");
    }
    g_ref = &rf;
    printf("reference %s: %zu tensors; tolerance %.0e (max|a-b| / max|b| per tensor)\n", path,
           rf.count, REF_TOL);
    nz_set_threads(2);
    check_linear();
    for (int t = 1; t <= 2; t++)
        for (int i = 0; i < 5; i++) check_conv("conv", i, t);
    for (int t = 1; t <= 2; t++)
        for (int i = 0; i < 6; i++) check_conv("dconv", i, t);
    nz_set_threads(2);
    check_pool(0);
    check_pool(1);
    check_relu();
    check_xent();
    check_lenet(2);
    check_lenet(1);
    nz_set_threads(2);
    check_ndense();
    for (int t = 1; t <= 2; t++)
        for (int i = 0; i < 2; i++) check_nconv(i, t);
    nz_set_threads(2);
    check_bn("bn2d", 1);
    check_bn("bn2d_eval", 0);
    check_bn("bn1d", 1);
    check_avgpool_ref("avgpool0");
    check_avgpool_ref("avgpool1");
    check_avgpool_ref("gap");
    for (int i = 0; i < 3; i++) check_shortcut_ref(i);
    check_select_ref();
    check_tiny_resnet(2);
    check_tiny_resnet(1);
    check_resnet20(2);
    check_resnet20(1);
    nz_set_threads(2);

    printf("worst normalized error per layer:\n");
    for (int i = 0; i < g_n_groups; i++)
        printf("  %-16s %.2e\n", g_groups[i].name, g_groups[i].worst);
    printf("  time %.2f s\n", now() - t0);
    ref_free(&rf);
    return tl_finish("test_torch_ref");
}
