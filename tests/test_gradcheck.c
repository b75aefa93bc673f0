/* Finite-difference gradient checks for every layer kind and for whole models.
 *
 * Kernels: a scalar loss L = sum(out * R) with a fixed random R, accumulated in double, so the
 * analytic backward runs with dout = R. Each input and parameter element is compared with the
 * central difference (L(x + e) - L(x - e)) / (2e) by
 *     rel = |analytic - numeric| / max(|analytic|, |numeric|, 1e-3) <= 1e-2.
 * The step e is chosen per layer kind from what limits the numeric estimate:
 *  - dense and conv2d are affine in each single input or parameter, so the central difference is
 *    exact for any step and only float rounding of `out` matters (noise ~ ulp / e): e = 0.25.
 *  - maxpool and relu are piecewise linear: their inputs are kept far from the kinks (distinct
 *    values >= 0.05 apart; |x| >= 0.1) and e = 1e-2 never changes the branch taken.
 *  - softmax cross-entropy is smooth; nz_softmax_xent returns a float loss, so e = 2e-2 keeps
 *    the rounding term (<= ulp(L) / 2e ~ 3e-6) and the truncation term (e^2 f''' / 6) small.
 *
 * Whole models (conv -> relu -> maxpool -> flatten [-> dropout] -> dense -> relu -> dense): the
 * analytic gradient is nz_forward, nz_softmax_xent's dlogits, nz_backward. A conv weight moves
 * hundreds of relu pre-activations and pooling windows, so almost any step of a useful size
 * crosses a kink somewhere, and a step small enough not to is swamped by float rounding of the
 * forward pass (~1e-8 in L). Two checks therefore:
 *  1. strict, every parameter: the model's function with its branches (relu on/off, maxpool
 *     argmax, dropout mask) frozen at the evaluation point, built from the same kernels in node
 *     order and checked to reproduce nz_forward's logits bit for bit there. It equals the real
 *     loss around the point, has the same gradient, and is smooth (logits are affine in any one
 *     parameter), so any step is allowed: a 5-point central difference (error O(e^4)) with
 *     e = 1/8 balances truncation against rounding noise (~1e-8 / e); the worst relative error
 *     is ~1e-3 over hundreds of seeds, where e = 1e-3 would give ~1e-2. Its loss is the mean
 *     cross-entropy of the logits in double: the formula of nz_softmax_xent (checked against it
 *     above), without the float rounding of its result, which would add ~1e-7 / e of noise.
 *  2. literal, through nz_forward and nz_softmax_xent's float loss: central differences with
 *     e = 1e-2 on every parameter whose steps leave all branches unchanged (detected by hashing
 *     relu signs and pool argmaxes); the float loss needs a floor of 1e-2 here.
 * The checker is itself tested ("mutation" checks): a gradient with one typical element scaled
 * by 1.05, or with the bias gradient dropped, must be reported as a mismatch. Backward must
 * accumulate: calling it twice doubles every gradient. Conv runs at 1 and 2 threads (both
 * partitions of the batch), through each of its kernels (im2col + GEMM; the direct 3x3/s1/p1
 * kernels, also on odd shapes), and the two kernels are compared with each other on random
 * shapes and every backward mode. Buffers carry sentinel guards to catch out-of-bounds writes.
 *
 * Norm x direction layers (NZ_OP_NDENSE, NZ_OP_NCONV2D: W = g V/||V|| per neuron row or conv
 * kernel): the kernels normdir_weights/normdir_backward composed with dense/conv (input, V, g and
 * b gradients; groups with unit, large and small ||V||, g = 0, g < 0 and V = 0), the threaded
 * path of a 300 x 784 layer against double formulas, and a smooth model (no relu/pool) through
 * nz_forward/nz_backward; see the section's comment for steps. Mutations include the plausible
 * mistakes: dV without the tangent projection, dg = <dW, V> (right only at ||V|| = 1), and a
 * backward that skips g = 0 groups.
 *
 * Residual networks' layers: batch norm (2-D and 1-D in training mode, where it is smooth but
 * not affine in x: a 5-point difference per channel with a step from the channel's batch
 * standard deviation, and a raised floor FLOOR_BN for the rounding of its float coefficients;
 * eval mode is affine), average pool and GAP, the option-A shortcut (odd sizes, odd channel
 * padding) and add; their OpenMP paths against double formulas at 1 and 2 threads. Then a tiny
 * CIFAR-style ResNet through nz_forward/nz_backward in training and eval mode (the frozen-branch
 * check with batch norm included; buffers must get no gradient; the BN backward with its batch
 * statistics as constants must be caught), add nodes giving both inputs their gradient (also
 * one node as both inputs, and the data as one), and a DAG whose nodes feed several consumers,
 * so every order of gradient overwrite/accumulation in nz_backward is exercised. See each
 * section's comment for its steps and floors. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/conv_winograd.h"
#include "core/layers.h"
#include "nnzip/model.h"
#include "nnzip/rng.h"
#include "testlib.h"

#define GC_TOL 1e-2
#define GC_FLOOR 1e-3
#define EPS_AFFINE 0.25f
#define EPS_PIECEWISE 1e-2f
#define EPS_XENT 2e-2f
#define EPS_MODEL (1.0f / 8) /* strict check: frozen branches, 5-point stencil */
#define EPS_MODEL_FWD 1e-2f    /* literal check through nz_forward */
#define FLOOR_FLOAT_LOSS 1e-2  /* floor for differences of nz_softmax_xent's float loss */
#define FLOOR_BN 1e-2          /* floor where training-mode batch norm is differenced (see there) */
#define MODEL_SEED 6000

/* ---------------------------------------------------------------- summary of worst errors */

#define MAX_SECTIONS 64
static struct {
    char name[48];
    double worst;
} g_sections[MAX_SECTIONS];
static int g_n_sections;

static void section_record(const char *name, double err) {
    for (int i = 0; i < g_n_sections; i++)
        if (strcmp(g_sections[i].name, name) == 0) {
            if (err > g_sections[i].worst || err != err) g_sections[i].worst = err;
            return;
        }
    if (g_n_sections == MAX_SECTIONS) return;
    snprintf(g_sections[g_n_sections].name, sizeof g_sections[0].name, "%s", name);
    g_sections[g_n_sections++].worst = err;
}

/* ---------------------------------------------------------------- guarded buffers */

#define GUARD 16
static const float GUARD_VAL = -12345.678f;

/* n zeroed floats with GUARD sentinels on each side */
static float *galloc(size_t n) {
    float *p = n < ((size_t)1 << 30) ? malloc(sizeof(float) * (n + 2 * GUARD)) : NULL;
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i < GUARD; i++) p[i] = p[GUARD + n + i] = GUARD_VAL;
    memset(p + GUARD, 0, sizeof(float) * n);
    return p + GUARD;
}

static int guards_ok(const float *p, size_t n) {
    for (size_t i = 1; i <= GUARD; i++)
        if (p[-(ptrdiff_t)i] != GUARD_VAL || p[n + i - 1] != GUARD_VAL) return 0;
    return 1;
}

static void gfree(float *p) {
    if (p) free(p - GUARD);
}

static void fill_normal(float *x, size_t n, nz_rng *r, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * nz_rng_normal(r);
}

/* n distinct values 0.05 apart in random order, centred on 0 */
static void fill_distinct(float *x, size_t n, nz_rng *r) {
    int32_t *perm = malloc(sizeof(int32_t) * n);
    for (size_t i = 0; i < n; i++) perm[i] = (int32_t)i;
    nz_rng_shuffle(r, perm, n);
    for (size_t i = 0; i < n; i++) x[perm[i]] = 0.05f * ((float)i - (float)n / 2);
    free(perm);
}

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
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

/* ---------------------------------------------------------------- the checker */

typedef double (*loss_fn)(void *ctx);

/* Optional: non-zero if the last loss evaluation took a different branch (relu/maxpool/...)
 * than the reference evaluation. */
typedef int (*kink_fn)(void *ctx);

typedef struct {
    double worst;
    size_t worst_i;
    size_t n_bad, n_compared;
} gc_report;

/* numeric[i] = dL/dx[i] by central differences; x is perturbed in place and restored.
 * skipped[i] (with a kink test) = 1 where a step crossed a kink: the difference means nothing. */
/* Finite differences evaluate at 1 thread: thousands of tiny parallel regions cost seconds on
 * a loaded 2-core machine. The analytic side runs at the thread count under test. */
static int fd_threads_begin(void) {
    int t = nz_get_threads();
    nz_set_threads(1);
    return t;
}

static double *numeric_grad(float *x, size_t n, float eps, loss_fn f, kink_fn kink, void *ctx,
                            unsigned char *skipped) {
    const int threads = fd_threads_begin();
    double *g = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        const float x0 = x[i], xp = x0 + eps, xm = x0 - eps;
        x[i] = xp;
        const double lp = f(ctx);
        int crossed = kink ? kink(ctx) : 0;
        x[i] = xm;
        const double lm = f(ctx);
        crossed |= kink ? kink(ctx) : 0;
        x[i] = x0;
        /* divide by the step actually taken in float */
        g[i] = (lp - lm) / ((double)xp - (double)xm);
        if (skipped) skipped[i] = (unsigned char)crossed;
    }
    if (kink) f(ctx); /* leave the context as at x */
    nz_set_threads(threads);
    return g;
}

/* 5-point central difference (8 (L(e) - L(-e)) - (L(2e) - L(-2e))) / 12e, error O(e^4 L^(5)),
 * for smooth L. With e a power of two, x +- e and x +- 2e are exact in float unless they change
 * binade (then the step is off by an ulp of x: a relative 1e-6 for e = 1/8). */
static double *numeric_grad5(float *x, size_t n, float eps, loss_fn f, void *ctx) {
    const int threads = fd_threads_begin();
    double *g = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        const float x0 = x[i];
        const float steps[4] = {x0 + eps, x0 - eps, x0 + 2 * eps, x0 - 2 * eps};
        double l[4];
        for (int k = 0; k < 4; k++) {
            x[i] = steps[k];
            l[k] = f(ctx);
        }
        x[i] = x0;
        g[i] = (8 * (l[0] - l[1]) - (l[2] - l[3])) / (12.0 * (double)eps);
    }
    nz_set_threads(threads);
    return g;
}

static double rel_err(double a, double n, double floor_) {
    double s = fabs(a);
    if (fabs(n) > s) s = fabs(n);
    if (s < floor_) s = floor_;
    double e = fabs(a - n) / s;
    return e == e ? e : INFINITY;
}

/* Compares analytic with numeric; elements with skip[i] set are ignored. */
static gc_report grad_compare_floor(const float *ana, const double *num, size_t n,
                                    const unsigned char *skip, double floor_) {
    gc_report r = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        if (skip && skip[i]) continue;
        r.n_compared++;
        double e = rel_err(ana[i], num[i], floor_);
        if (!(e <= GC_TOL)) r.n_bad++;
        if (e > r.worst) {
            r.worst = e;
            r.worst_i = i;
        }
    }
    return r;
}

static gc_report grad_compare(const float *ana, const double *num, size_t n,
                              const unsigned char *skip) {
    return grad_compare_floor(ana, num, n, skip, GC_FLOOR);
}

static void report_match(const char *section, const char *what, const float *ana,
                         const double *num, gc_report r) {
    CHECK(r.n_bad == 0,
          "%s %s: %zu of %zu elements off, worst rel err %.3g at %zu (analytic %.7g, numeric %.7g)",
          section, what, r.n_bad, r.n_compared, r.worst, r.worst_i, (double)ana[r.worst_i],
          num[r.worst_i]);
    section_record(section, r.worst);
}

static void expect_match(const char *section, const char *what, const float *ana,
                         const double *num, size_t n, const unsigned char *skip) {
    report_match(section, what, ana, num, grad_compare(ana, num, n, skip));
}

/* The checker must flag a corrupted gradient, at the floor the real comparison uses. */
static void expect_mismatch_floor(const char *what, const float *ana, const double *num, size_t n,
                                  double floor_) {
    gc_report r = grad_compare_floor(ana, num, n, NULL, floor_);
    CHECK(r.n_bad > 0, "mutation '%s' went unnoticed (worst rel err %.3g)", what, r.worst);
}

static void expect_mismatch(const char *what, const float *ana, const double *num, size_t n) {
    expect_mismatch_floor(what, ana, num, n, GC_FLOOR);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Scales the analytic gradient of the element of median |numeric| among those >= 10 x the
 * floor (a typical one, not the largest) by 1.05 and expects the checker to report it. With a
 * raised floor (noisy differences) the elements >= that floor qualify: a 5% change of one is
 * still a >= 4.8% relative error there. */
static void mutate_scale_one_floor(const char *what, const float *ana, const double *num,
                                   size_t n, double floor_) {
    const double least = fmax(10 * GC_FLOOR, floor_);
    double *mag = malloc(sizeof(double) * (n ? n : 1));
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(num[i]) >= least) mag[m++] = fabs(num[i]);
    if (m == 0) {
        CHECK(0, "mutation '%s': no gradient element above %g", what, least);
        free(mag);
        return;
    }
    qsort(mag, m, sizeof(double), cmp_double);
    double med = mag[m / 2];
    free(mag);
    size_t k = 0;
    while (k < n && fabs(num[k]) != med) k++;
    float *bad = malloc(sizeof(float) * n);
    memcpy(bad, ana, sizeof(float) * n);
    bad[k] *= 1.05f;
    char label[160];
    snprintf(label, sizeof label, "%s[%zu] x 1.05 (|g| = %.3g)", what, k, med);
    expect_mismatch_floor(label, bad, num, n, floor_);
    free(bad);
}

static void mutate_scale_one(const char *what, const float *ana, const double *num, size_t n) {
    mutate_scale_one_floor(what, ana, num, n, GC_FLOOR);
}

/* Drops a whole gradient (as if backward forgot it) and expects the checker to report it. */
static void mutate_drop(const char *what, const double *num, size_t n) {
    float *zero = calloc(n, sizeof(float));
    char label[160];
    snprintf(label, sizeof label, "%s dropped", what);
    expect_mismatch(label, zero, num, n);
    free(zero);
}

/* a (second call) == 2 * b (first call) up to rounding of the re-accumulation */
static void expect_doubled(const char *what, const float *twice, const float *once, size_t n) {
    float *two = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) two[i] = 2.0f * once[i];
    double e = norm_err(twice, two, n);
    CHECK(e <= 1e-5, "%s: backward twice is not 2x backward once (norm err %.3g)", what, e);
    free(two);
}

/* ---------------------------------------------------------------- dense */

typedef struct {
    int B, NI, NO;
    float *x, *W, *b, *R, *out;
} dense_ctx;

static double dense_loss(void *p) {
    dense_ctx *c = p;
    dense_forward(c->out, c->x, c->W, c->b, c->B, c->NI, c->NO);
    return dot_d(c->out, c->R, (size_t)c->B * c->NO);
}

static void check_dense(void) {
    const char *S = "dense";
    dense_ctx c = {.B = 4, .NI = 13, .NO = 7};
    const size_t nx = (size_t)c.B * c.NI, nw = (size_t)c.NO * c.NI, nb = (size_t)c.NO,
                 no = (size_t)c.B * c.NO;
    nz_rng r;
    nz_rng_seed(&r, 101);
    c.x = galloc(nx), c.W = galloc(nw), c.b = galloc(nb), c.R = galloc(no), c.out = galloc(no);
    fill_normal(c.x, nx, &r, 1.0f);
    fill_normal(c.W, nw, &r, 0.5f);
    fill_normal(c.b, nb, &r, 0.5f);
    fill_normal(c.R, no, &r, 1.0f);

    /* forward against a double reference */
    dense_loss(&c);
    double worst = 0;
    for (int n = 0; n < c.B; n++)
        for (int o = 0; o < c.NO; o++) {
            double s = c.b[o];
            for (int i = 0; i < c.NI; i++) s += (double)c.x[n * c.NI + i] * c.W[o * c.NI + i];
            double e = fabs(s - c.out[n * c.NO + o]) / (fabs(s) > 1 ? fabs(s) : 1);
            if (e > worst) worst = e;
        }
    CHECK(worst < 1e-5, "dense forward vs double reference: %.3g", worst);

    float *dx = galloc(nx), *dW = galloc(nw), *db = galloc(nb);
    dense_backward(dx, dW, db, c.R, c.x, c.W, c.B, c.NI, c.NO);
    double *gx = numeric_grad(c.x, nx, EPS_AFFINE, dense_loss, NULL, &c, NULL);
    double *gW = numeric_grad(c.W, nw, EPS_AFFINE, dense_loss, NULL, &c, NULL);
    double *gb = numeric_grad(c.b, nb, EPS_AFFINE, dense_loss, NULL, &c, NULL);
    expect_match(S, "dx", dx, gx, nx, NULL);
    expect_match(S, "dW", dW, gW, nw, NULL);
    expect_match(S, "db", db, gb, nb, NULL);
    mutate_scale_one("dense dx", dx, gx, nx);
    mutate_scale_one("dense dW", dW, gW, nw);
    mutate_drop("dense db", gb, nb);

    /* accumulation */
    float *dx1 = malloc(sizeof(float) * nx), *dW1 = malloc(sizeof(float) * nw),
          *db1 = malloc(sizeof(float) * nb);
    memcpy(dx1, dx, sizeof(float) * nx);
    memcpy(dW1, dW, sizeof(float) * nw);
    memcpy(db1, db, sizeof(float) * nb);
    dense_backward(dx, dW, db, c.R, c.x, c.W, c.B, c.NI, c.NO);
    expect_doubled("dense dx", dx, dx1, nx);
    expect_doubled("dense dW", dW, dW1, nw);
    expect_doubled("dense db", db, db1, nb);
    /* din may be NULL */
    memset(dW, 0, sizeof(float) * nw);
    memset(db, 0, sizeof(float) * nb);
    dense_backward(NULL, dW, db, c.R, c.x, c.W, c.B, c.NI, c.NO);
    CHECK(norm_err(dW, dW1, nw) == 0 && norm_err(db, db1, nb) == 0,
          "dense backward with din = NULL changes dW/db");
    CHECK(guards_ok(c.out, no) && guards_ok(dx, nx) && guards_ok(dW, nw) && guards_ok(db, nb),
          "dense wrote outside its buffers");

    free(dx1), free(dW1), free(db1), free(gx), free(gW), free(gb);
    gfree(dx), gfree(dW), gfree(db);
    gfree(c.x), gfree(c.W), gfree(c.b), gfree(c.R), gfree(c.out);
}

/* ---------------------------------------------------------------- conv2d */

typedef struct {
    int B;
    conv_dims d;
    float *x, *W, *b, *R, *out, *scratch;
} conv_ctx;

static double conv_loss(void *p) {
    conv_ctx *c = p;
    conv2d_forward(c->out, c->x, c->W, c->b, c->B, &c->d, c->scratch);
    return dot_d(c->out, c->R, (size_t)c->B * c->d.OC * c->d.OH * c->d.OW);
}

/* direct convolution in double, the definition */
static double conv_forward_err(const conv_ctx *c) {
    const conv_dims *d = &c->d;
    double worst = 0;
    for (int n = 0; n < c->B; n++)
        for (int oc = 0; oc < d->OC; oc++)
            for (int oh = 0; oh < d->OH; oh++)
                for (int ow = 0; ow < d->OW; ow++) {
                    double s = c->b[oc];
                    for (int ic = 0; ic < d->C; ic++)
                        for (int kh = 0; kh < d->KH; kh++)
                            for (int kw = 0; kw < d->KW; kw++) {
                                int ih = oh * d->stride - d->pad + kh,
                                    iw = ow * d->stride - d->pad + kw;
                                if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W) continue;
                                s += (double)c->x[((n * d->C + ic) * d->H + ih) * d->W + iw] *
                                     c->W[((oc * d->C + ic) * d->KH + kh) * d->KW + kw];
                            }
                    float y = c->out[((n * d->OC + oc) * d->OH + oh) * d->OW + ow];
                    double e = fabs(s - y) / (fabs(s) > 1 ? fabs(s) : 1);
                    if (e > worst || e != e) worst = (e != e) ? INFINITY : e;
                }
    return worst;
}

/* Analytic gradients of one conv config at the current thread count, into dx/dW/db. */
static void conv_analytic(conv_ctx *c, float *dx, float *dW, float *db, float *partial) {
    conv2d_backward(dx, dW, db, c->R, c->x, c->W, c->B, &c->d, c->scratch, partial);
}

/* algo: CONV_ALGO_* forced on the conv (DIRECT only where the shape allows it); shape sz =
 * {B, C, H, W, OC} */
static void check_conv(int k, int s, int pad, int threads, int algo, const int sz[5]) {
    nz_set_threads(threads);
    char S[96];
    snprintf(S, sizeof S, "conv2d k%d s%d p%d %dx%dx%dx%d->%d %s", k, s, pad, sz[0], sz[1], sz[2],
             sz[3], sz[4],
             algo == CONV_ALGO_DIRECT ? "direct" : algo == CONV_ALGO_WINOGRAD ? "winograd" : "im2col");
    const int lt = layers_threads();
    CHECK(lt == threads, "%s: nz_set_threads(%d) gives %d kernel threads", S, threads, lt);
    const size_t T = lt > 0 && lt < 256 ? (size_t)lt : 1;

    conv_ctx c = {.B = sz[0]};
    c.d = conv_dims_make(sz[1], sz[2], sz[3], sz[4], k, s, pad);
    c.d.algo = algo;
    CHECK(conv_uses_direct(&c.d, 0) == (algo == CONV_ALGO_DIRECT) &&
              conv_uses_direct(&c.d, 1) == (algo == CONV_ALGO_DIRECT) &&
              conv_uses_winograd(&c.d, 0) == (algo == CONV_ALGO_WINOGRAD) &&
              conv_uses_winograd(&c.d, 1) == (algo == CONV_ALGO_WINOGRAD),
          "%s: path not taken", S);
    const conv_dims *d = &c.d;
    const size_t nx = (size_t)c.B * d->C * d->H * d->W, nw = (size_t)d->OC * d->C * d->KH * d->KW,
                 nb = (size_t)d->OC, no = (size_t)c.B * d->OC * d->OH * d->OW;
    /* dW_partial per thread holds |W| + OC floats (see conv2d_backward) */
    const size_t nscratch = conv_scratch_per_thread(d) * T, npart = (nw + nb) * T;
    nz_rng r;
    nz_rng_seed(&r, 1000u + (unsigned)(k * 100 + s * 10 + pad));
    c.x = galloc(nx), c.W = galloc(nw), c.b = galloc(nb), c.R = galloc(no), c.out = galloc(no);
    c.scratch = galloc(nscratch);
    float *partial = galloc(npart);
    fill_normal(c.x, nx, &r, 1.0f);
    fill_normal(c.W, nw, &r, 0.5f);
    fill_normal(c.b, nb, &r, 0.5f);
    fill_normal(c.R, no, &r, 1.0f);

    conv_loss(&c);
    double fe = conv_forward_err(&c);
    /* Winograd's transforms cost a few more ulps (see check_conv_fast_vs_im2col) */
    const double ftol = algo == CONV_ALGO_WINOGRAD ? 5e-5 : 1e-5;
    CHECK(fe < ftol, "%s (%d threads) forward vs direct double convolution: %.3g", S, threads, fe);
    section_record("conv2d forward vs direct", fe);

    float *dx = galloc(nx), *dW = galloc(nw), *db = galloc(nb);
    conv_analytic(&c, dx, dW, db, partial);
    double *gx = numeric_grad(c.x, nx, EPS_AFFINE, conv_loss, NULL, &c, NULL);
    double *gW = numeric_grad(c.W, nw, EPS_AFFINE, conv_loss, NULL, &c, NULL);
    double *gb = numeric_grad(c.b, nb, EPS_AFFINE, conv_loss, NULL, &c, NULL);
    expect_match(S, "dx", dx, gx, nx, NULL);
    expect_match(S, "dW", dW, gW, nw, NULL);
    expect_match(S, "db", db, gb, nb, NULL);
    char what[128];
    snprintf(what, sizeof what, "%s dx", S);
    mutate_scale_one(what, dx, gx, nx);
    snprintf(what, sizeof what, "%s dW", S);
    mutate_scale_one(what, dW, gW, nw);
    snprintf(what, sizeof what, "%s db", S);
    mutate_drop(what, gb, nb);

    /* accumulation, including into a dirty dW_partial */
    float *dx1 = malloc(sizeof(float) * nx), *dW1 = malloc(sizeof(float) * nw),
          *db1 = malloc(sizeof(float) * nb);
    memcpy(dx1, dx, sizeof(float) * nx);
    memcpy(dW1, dW, sizeof(float) * nw);
    memcpy(db1, db, sizeof(float) * nb);
    for (size_t i = 0; i < npart; i++) partial[i] = 1e6f;
    conv_analytic(&c, dx, dW, db, partial);
    snprintf(what, sizeof what, "%s dx", S);
    expect_doubled(what, dx, dx1, nx);
    snprintf(what, sizeof what, "%s dW", S);
    expect_doubled(what, dW, dW1, nw);
    snprintf(what, sizeof what, "%s db", S);
    expect_doubled(what, db, db1, nb);
    /* din may be NULL */
    memset(dW, 0, sizeof(float) * nw);
    memset(db, 0, sizeof(float) * nb);
    conv2d_backward(NULL, dW, db, c.R, c.x, c.W, c.B, d, c.scratch, partial);
    CHECK(norm_err(dW, dW1, nw) == 0 && norm_err(db, db1, nb) == 0,
          "%s: backward with din = NULL changes dW/db", S);
    CHECK(guards_ok(c.out, no) && guards_ok(dx, nx) && guards_ok(dW, nw) && guards_ok(db, nb) &&
              guards_ok(c.scratch, nscratch) && guards_ok(partial, npart),
          "%s (%d threads) wrote outside its buffers", S, threads);

    free(dx1), free(dW1), free(db1), free(gx), free(gW), free(gb);
    gfree(dx), gfree(dW), gfree(db), gfree(partial);
    gfree(c.x), gfree(c.W), gfree(c.b), gfree(c.R), gfree(c.out), gfree(c.scratch);
}

/* The fast 3x3 kernels against im2col + GEMM: direct (src/core/conv_direct.c, pad 1, stride 1
 * and 2) and Winograd (src/core/conv_winograd.c, stride 1 only), on fixed and random shapes (1
 * channel, channel counts off the register block and the vector, H and W off the vector width
 * and the Winograd tile and odd, 1x1 to 40x40 maps, batch 1..4 and batches over several blocks),
 * at 1 and 2 threads: forward with the fused relu; backward adding into a nonzero din,
 * overwriting a NaN-filled din (din_set), and with din = NULL; dW and db accumulated onto
 * nonzero values. Both paths' buffers carry guards. The paths sum in different orders:
 * max|fast - im2col| / max|im2col| <= 1e-5 per tensor for direct; Winograd's transforms scale
 * partial sums by up to 8 and 1/24 before they cancel, so it gets 3e-5 (measured worst 1.5e-5). */
#define DIRECT_TOL 1e-5
#define WINOGRAD_TOL 3e-5
static void check_conv_fast_vs_im2col(int algo) {
    const int wino = algo == CONV_ALGO_WINOGRAD;
    const double tol = wino ? WINOGRAD_TOL : DIRECT_TOL;
    /* B, C, H, W, OC, stride */
    static const int fixed[][6] = {
        {1, 1, 1, 1, 1, 1},    {2, 16, 32, 32, 16, 1}, {3, 8, 16, 15, 24, 1}, {1, 20, 4, 4, 9, 1},
        {4, 5, 2, 2, 7, 1},    {2, 64, 8, 8, 64, 1},   {1, 3, 31, 33, 16, 1}, {5, 17, 7, 7, 10, 1},
        {2, 32, 16, 16, 32, 1}, {3, 1, 28, 28, 6, 1},  {1, 1, 1, 1, 1, 2},    {2, 16, 32, 32, 32, 2},
        {2, 32, 16, 16, 64, 2}, {3, 7, 9, 13, 9, 2},   {1, 4, 2, 3, 5, 2},    {2, 5, 35, 34, 3, 2},
        /* batches over several backward groups of samples, and a partial one */
        {20, 6, 5, 5, 7, 1},    {19, 3, 9, 9, 5, 2},    {37, 2, 2, 3, 3, 1},
        /* Winograd: blocks of images over 4x4, 2x2 and 1x1 maps, channels past a vector */
        {70, 17, 4, 4, 33, 1},  {140, 20, 2, 2, 18, 1}, {3, 40, 1, 1, 24, 1}, {2, 19, 12, 10, 40, 1},
        /* ... and over many blocks; wide layers, where Winograd's rounding grows with the
         * channel count */
        {18, 8, 30, 31, 9, 1},  {2, 300, 5, 6, 200, 1}, {2, 512, 2, 2, 512, 1}};
    const int nfixed = (int)(sizeof fixed / sizeof fixed[0]), nrand = 40;
    nz_rng r;
    nz_rng_seed(&r, 4242);
    double worst = 0;
    int n_direct = 0;
    for (int it = 0; it < nfixed + nrand; it++) {
        int sz[6];
        if (it < nfixed) {
            memcpy(sz, fixed[it], sizeof sz);
        } else {
            sz[0] = 1 + (int)nz_rng_below(&r, 4);
            for (int k = 1; k < 5; k++) sz[k] = 1 + (int)nz_rng_below(&r, 40);
            sz[5] = 1 + (int)nz_rng_below(&r, 2);
        }
        if (wino) sz[5] = 1;
        const int threads = 1 + it % 2, B = sz[0];
        nz_set_threads(threads);
        const size_t T = (size_t)layers_threads();
        conv_dims da = conv_dims_make(sz[1], sz[2], sz[3], sz[4], 3, sz[5], 1), dd = da;
        da.algo = CONV_ALGO_IM2COL;
        dd.algo = algo;
        n_direct += (wino ? conv_uses_winograd(&dd, 0) && conv_uses_winograd(&dd, 1)
                          : conv_uses_direct(&dd, 0) && conv_uses_direct(&dd, 1)) &&
                    !conv_uses_direct(&da, 0) && !conv_uses_direct(&da, 1) &&
                    !conv_uses_winograd(&da, 0) && !conv_uses_winograd(&da, 1);
        char S[80];
        snprintf(S, sizeof S, "conv %s vs im2col %dx%dx%dx%d->%d s%d %dt",
                 wino ? "winograd" : "direct", B, sz[1], sz[2], sz[3], sz[4], sz[5], threads);
        const size_t nx = (size_t)B * da.C * da.H * da.W, nw = (size_t)da.OC * da.C * 9,
                     nb = (size_t)da.OC, no = (size_t)B * da.OC * da.OH * da.OW,
                     ns = conv_scratch_per_thread(&da) * T, np = (nw + nb) * T;
        float *x = galloc(nx), *W = galloc(nw), *bias = galloc(nb), *dout = galloc(no);
        float *o[2], *dx[2], *dW[2], *db[2], *scr[2], *part[2];
        for (int a = 0; a < 2; a++) {
            o[a] = galloc(no), dx[a] = galloc(nx), dW[a] = galloc(nw), db[a] = galloc(nb);
            scr[a] = galloc(ns), part[a] = galloc(np);
        }
        fill_normal(x, nx, &r, 1.0f);
        fill_normal(W, nw, &r, 0.5f);
        fill_normal(bias, nb, &r, 0.5f);
        fill_normal(dout, no, &r, 1.0f);
        fill_normal(dx[0], nx, &r, 1.0f);
        fill_normal(dW[0], nw, &r, 1.0f);
        fill_normal(db[0], nb, &r, 1.0f);
        memcpy(dx[1], dx[0], sizeof(float) * nx);
        memcpy(dW[1], dW[0], sizeof(float) * nw);
        memcpy(db[1], db[0], sizeof(float) * nb);
        double e[9];
        const conv_dims *dm[2] = {&da, &dd};
        /* forward, then forward with relu */
        for (int a = 0; a < 2; a++) conv2d_forward(o[a], x, W, bias, B, dm[a], scr[a]);
        e[0] = norm_err(o[1], o[0], no);
        da.out_relu = dd.out_relu = 1;
        for (int a = 0; a < 2; a++) conv2d_forward(o[a], x, W, bias, B, dm[a], scr[a]);
        e[1] = norm_err(o[1], o[0], no);
        int relu_ok = 1;
        for (size_t i = 0; i < no; i++) relu_ok &= o[1][i] >= 0.0f;
        da.out_relu = dd.out_relu = 0;
        /* backward accumulating into nonzero din, dW, db */
        for (int a = 0; a < 2; a++)
            conv2d_backward(dx[a], dW[a], db[a], dout, x, W, B, dm[a], scr[a], part[a]);
        e[2] = norm_err(dx[1], dx[0], nx);
        e[3] = norm_err(dW[1], dW[0], nw);
        e[4] = norm_err(db[1], db[0], nb);
        /* din_set over NaN garbage (and dirty dW partials) */
        da.din_set = dd.din_set = 1;
        for (int a = 0; a < 2; a++) {
            for (size_t i = 0; i < nx; i++) dx[a][i] = NAN;
            for (size_t i = 0; i < np; i++) part[a][i] = NAN;
            conv2d_backward(dx[a], dW[a], db[a], dout, x, W, B, dm[a], scr[a], part[a]);
        }
        e[5] = norm_err(dx[1], dx[0], nx);
        e[6] = norm_err(dW[1], dW[0], nw);
        da.din_set = dd.din_set = 0;
        /* din = NULL */
        for (int a = 0; a < 2; a++)
            conv2d_backward(NULL, dW[a], db[a], dout, x, W, B, dm[a], scr[a], part[a]);
        e[7] = norm_err(dW[1], dW[0], nw);
        e[8] = norm_err(db[1], db[0], nb);
        double w = 0;
        for (int k = 0; k < 9; k++)
            if (e[k] > w || e[k] != e[k]) w = e[k] != e[k] ? INFINITY : e[k];
        CHECK(w <= tol,
              "%s: out %.2g relu %.2g dx %.2g dW %.2g db %.2g; din_set dx %.2g dW %.2g; "
              "din NULL dW %.2g db %.2g",
              S, e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8]);
        CHECK(relu_ok, "%s: fused relu left a negative output", S);
        if (w > worst || w != w) worst = w != w ? INFINITY : w;
        int guards = guards_ok(x, nx) && guards_ok(W, nw) && guards_ok(bias, nb) &&
                     guards_ok(dout, no);
        for (int a = 0; a < 2; a++)
            guards = guards && guards_ok(o[a], no) && guards_ok(dx[a], nx) &&
                     guards_ok(dW[a], nw) && guards_ok(db[a], nb) && guards_ok(scr[a], ns) &&
                     guards_ok(part[a], np);
        CHECK(guards, "%s: wrote outside its buffers", S);
        gfree(x), gfree(W), gfree(bias), gfree(dout);
        for (int a = 0; a < 2; a++)
            gfree(o[a]), gfree(dx[a]), gfree(dW[a]), gfree(db[a]), gfree(scr[a]), gfree(part[a]);
    }
    CHECK(n_direct == nfixed + nrand, "%s vs im2col: only %d of %d cases compared two paths",
          wino ? "winograd" : "direct", n_direct, nfixed + nrand);
    section_record(wino ? "conv2d winograd vs im2col" : "conv2d direct vs im2col", worst);
    nz_set_threads(2);
}

/* Winograd's results do not depend on the thread count: the same bits at 1 and 2 threads for
 * the forward pass, the input gradient and the weight and bias gradients, on a shape of many
 * blocks and two of few (4x4 and 2x2 maps) */
static void check_winograd_threads(void) {
    static const int shapes[][5] = {{18, 8, 30, 31, 9}, {70, 17, 4, 4, 33}, {140, 20, 2, 2, 18}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int *sz = shapes[k], B = sz[0];
        conv_dims d = conv_dims_make(sz[1], sz[2], sz[3], sz[4], 3, 1, 1);
        d.algo = CONV_ALGO_WINOGRAD;
        const size_t nx = (size_t)B * d.C * d.H * d.W, nw = (size_t)d.OC * d.C * 9,
                     no = (size_t)B * d.OC * d.H * d.W, nb = (size_t)d.OC;
        nz_rng r;
        nz_rng_seed(&r, 99u + (unsigned)k);
        float *x = galloc(nx), *W = galloc(nw), *b = galloc(nb), *dout = galloc(no);
        fill_normal(x, nx, &r, 1.0f);
        fill_normal(W, nw, &r, 0.5f);
        fill_normal(b, nb, &r, 0.5f);
        fill_normal(dout, no, &r, 1.0f);
        float *o[2], *dx[2], *dW[2], *db[2];
        for (int t = 0; t < 2; t++) {
            nz_set_threads(t + 1);
            d.threads = layers_threads();
            d.din_set = 1;
            float *scr = galloc(conv_scratch_per_thread(&d) * (size_t)d.threads);
            float *part = galloc((nw + nb) * (size_t)d.threads);
            o[t] = galloc(no), dx[t] = galloc(nx), dW[t] = galloc(nw), db[t] = galloc(nb);
            memset(dW[t], 0, sizeof(float) * nw);
            memset(db[t], 0, sizeof(float) * nb);
            conv2d_forward(o[t], x, W, b, B, &d, scr);
            conv2d_backward(dx[t], dW[t], db[t], dout, x, W, B, &d, scr, part);
            gfree(scr), gfree(part);
        }
        CHECK(memcmp(o[0], o[1], sizeof(float) * no) == 0 &&
                  memcmp(dx[0], dx[1], sizeof(float) * nx) == 0 &&
                  memcmp(dW[0], dW[1], sizeof(float) * nw) == 0 &&
                  memcmp(db[0], db[1], sizeof(float) * nb) == 0,
              "winograd %dx%dx%dx%d->%d: 1 and 2 threads give different bits", B, sz[1], sz[2],
              sz[3], sz[4]);
        for (int t = 0; t < 2; t++) gfree(o[t]), gfree(dx[t]), gfree(dW[t]), gfree(db[t]);
        gfree(x), gfree(W), gfree(b), gfree(dout);
    }
    nz_set_threads(2);
}

/* conv_kernel's automatic choice (rule in src/core/layers.c): Winograd for wide stride-1
 * layers at batches that give it >= 64 tiles, direct for narrow ones and for stride 2, im2col
 * for shapes neither takes; a forced kernel regardless of the batch */
static void check_conv_picks(void) {
    const conv_dims wide = conv_dims_make(512, 4, 4, 512, 3, 1, 1),
                    narrow = conv_dims_make(16, 32, 32, 16, 3, 1, 1),
                    s2 = conv_dims_make(64, 16, 16, 128, 3, 2, 1),
                    k5 = conv_dims_make(8, 12, 12, 8, 5, 1, 0);
    CHECK(conv_kernel(&wide, 0, 128) == CONV_ALGO_WINOGRAD &&
              conv_kernel(&wide, 1, 128) == CONV_ALGO_WINOGRAD,
          "512x4x4 at batch 128 should run Winograd");
    CHECK(conv_kernel(&wide, 0, 1) != CONV_ALGO_WINOGRAD &&
              conv_kernel(&wide, 0, 63) != CONV_ALGO_WINOGRAD &&
              conv_kernel(&wide, 0, 64) == CONV_ALGO_WINOGRAD,
          "512x4x4: Winograd from 64 tiles (batch 64) only");
    CHECK(conv_kernel(&narrow, 0, 128) ==
              (conv_winograd_min_channels(0) <= 16 ? CONV_ALGO_WINOGRAD : CONV_ALGO_DIRECT),
          "16 channels should run %s", conv_winograd_min_channels(0) <= 16 ? "Winograd" : "direct");
    CHECK(conv_kernel(&s2, 0, 128) == CONV_ALGO_DIRECT &&
              conv_kernel(&s2, 1, 128) != CONV_ALGO_WINOGRAD,
          "stride 2 never runs Winograd");
    CHECK(conv_kernel(&k5, 0, 128) == CONV_ALGO_IM2COL, "5x5 runs im2col");
    conv_dims f = wide;
    f.algo = CONV_ALGO_WINOGRAD;
    CHECK(conv_kernel(&f, 0, 1) == CONV_ALGO_WINOGRAD, "a forced Winograd ignores the batch");
    f = s2;
    f.algo = CONV_ALGO_WINOGRAD;
    CHECK(conv_kernel(&f, 0, 128) == CONV_ALGO_IM2COL, "a forced Winograd on stride 2 falls back");
}

/* ---------------------------------------------------------------- maxpool */

typedef struct {
    int B, C, H, W, k, s, OH, OW;
    float *x, *R, *out;
    int32_t *argmax;
} pool_ctx;

static double pool_loss(void *p) {
    pool_ctx *c = p;
    maxpool_forward(c->out, c->argmax, c->x, c->B, c->C, c->H, c->W, c->k, c->k, c->s, c->OH,
                    c->OW);
    return dot_d(c->out, c->R, (size_t)c->B * c->C * c->OH * c->OW);
}

static void check_maxpool(int k, int s) {
    char S[48];
    snprintf(S, sizeof S, "maxpool %dx%d/%d", k, k, s);
    /* 7x7 also checks the floor rule: the last row/column is dropped for 2x2/2 */
    pool_ctx c = {.B = 2, .C = 3, .H = 7, .W = 7, .k = k, .s = s};
    c.OH = (c.H - k) / s + 1;
    c.OW = (c.W - k) / s + 1;
    const size_t nx = (size_t)c.B * c.C * c.H * c.W, no = (size_t)c.B * c.C * c.OH * c.OW;
    nz_rng r;
    nz_rng_seed(&r, 2000u + (unsigned)(k * 10 + s));
    c.x = galloc(nx), c.R = galloc(no), c.out = galloc(no);
    c.argmax = malloc(sizeof(int32_t) * no);
    fill_distinct(c.x, nx, &r);
    fill_normal(c.R, no, &r, 1.0f);

    pool_loss(&c);
    int ok = 1;
    for (int p = 0; p < c.B * c.C; p++)
        for (int oh = 0; oh < c.OH; oh++)
            for (int ow = 0; ow < c.OW; ow++) {
                float best = -FLT_MAX;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) {
                        float v = c.x[(size_t)p * c.H * c.W + (oh * s + i) * c.W + ow * s + j];
                        if (v > best) best = v;
                    }
                if (c.out[((size_t)p * c.OH + oh) * c.OW + ow] != best) ok = 0;
            }
    CHECK(ok, "%s forward is not the window maximum", S);

    float *dx = galloc(nx);
    maxpool_backward(dx, c.R, c.argmax, c.B, c.C, c.H, c.W, c.OH, c.OW);
    double *gx = numeric_grad(c.x, nx, EPS_PIECEWISE, pool_loss, NULL, &c, NULL);
    expect_match(S, "dx", dx, gx, nx, NULL);
    /* a gradient routed to the wrong element of a window */
    {
        float *bad = malloc(sizeof(float) * nx);
        memcpy(bad, dx, sizeof(float) * nx);
        size_t i = 0;
        while (i + 1 < nx && bad[i] == 0.0f) i++; /* stays inside when all are zero */
        size_t j = i + 1 < nx ? i + 1 : i - 1;
        float t = bad[i];
        bad[i] = bad[j];
        bad[j] = t;
        expect_mismatch("maxpool dx routed to a neighbour", bad, gx, nx);
        free(bad);
    }
    float *dx1 = malloc(sizeof(float) * nx);
    memcpy(dx1, dx, sizeof(float) * nx);
    maxpool_backward(dx, c.R, c.argmax, c.B, c.C, c.H, c.W, c.OH, c.OW);
    expect_doubled(S, dx, dx1, nx);
    CHECK(guards_ok(c.out, no) && guards_ok(dx, nx), "%s wrote outside its buffers", S);

    free(dx1), free(gx), free(c.argmax);
    gfree(dx), gfree(c.x), gfree(c.R), gfree(c.out);
}

/* ---------------------------------------------------------------- relu */

typedef struct {
    size_t n;
    float *x, *R, *out;
} relu_ctx;

static double relu_loss(void *p) {
    relu_ctx *c = p;
    relu_forward(c->out, c->x, c->n);
    return dot_d(c->out, c->R, c->n);
}

static void check_relu(void) {
    const char *S = "relu";
    relu_ctx c = {.n = 300};
    nz_rng r;
    nz_rng_seed(&r, 3000);
    c.x = galloc(c.n), c.R = galloc(c.n), c.out = galloc(c.n);
    for (size_t i = 0; i < c.n; i++) {
        float m = 0.1f + nz_rng_uniform(&r); /* away from the kink at 0 */
        c.x[i] = nz_rng_uniform(&r) < 0.5f ? -m : m;
    }
    fill_normal(c.R, c.n, &r, 1.0f);
    relu_loss(&c);
    int ok = 1;
    for (size_t i = 0; i < c.n; i++) ok &= c.out[i] == (c.x[i] > 0 ? c.x[i] : 0.0f);
    CHECK(ok, "relu forward is not max(x, 0)");
    float *dx = galloc(c.n);
    relu_backward(dx, c.R, c.out, c.n);
    double *gx = numeric_grad(c.x, c.n, EPS_PIECEWISE, relu_loss, NULL, &c, NULL);
    expect_match(S, "dx", dx, gx, c.n, NULL);
    float *dx1 = malloc(sizeof(float) * c.n);
    memcpy(dx1, dx, sizeof(float) * c.n);
    relu_backward(dx, c.R, c.out, c.n);
    expect_doubled(S, dx, dx1, c.n);
    /* large n takes the OpenMP path */
    {
        const size_t n = 200000;
        float *x = galloc(n), *y = galloc(n), *g = galloc(n), *dn = galloc(n);
        fill_normal(x, n, &r, 1.0f);
        fill_normal(g, n, &r, 1.0f);
        relu_forward(y, x, n);
        relu_backward(dn, g, y, n);
        int ok2 = 1;
        for (size_t i = 0; i < n; i++)
            ok2 &= y[i] == (x[i] > 0 ? x[i] : 0.0f) && dn[i] == (x[i] > 0 ? g[i] : 0.0f);
        CHECK(ok2 && guards_ok(y, n) && guards_ok(dn, n), "relu on %zu elements (threaded)", n);
        gfree(x), gfree(y), gfree(g), gfree(dn);
    }
    CHECK(guards_ok(c.out, c.n) && guards_ok(dx, c.n), "relu wrote outside its buffers");
    free(dx1), free(gx);
    gfree(dx), gfree(c.x), gfree(c.R), gfree(c.out);
}

/* ---------------------------------------------------------------- dropout */

typedef struct {
    size_t n;
    float p;
    uint64_t seed;
    float *x, *R, *out, *mask;
} drop_ctx;

/* the same seed every call: a fixed mask */
static double drop_loss(void *pc) {
    drop_ctx *c = pc;
    nz_rng r;
    nz_rng_seed(&r, c->seed);
    dropout_forward(c->out, c->mask, c->x, c->n, c->p, &r);
    return dot_d(c->out, c->R, c->n);
}

static void check_dropout(void) {
    const char *S = "dropout";
    drop_ctx c = {.n = 256, .p = 0.3f, .seed = 4242};
    nz_rng r;
    nz_rng_seed(&r, 4000);
    c.x = galloc(c.n), c.R = galloc(c.n), c.out = galloc(c.n), c.mask = galloc(c.n);
    for (size_t i = 0; i < c.n; i++) {
        float m = 0.5f + nz_rng_uniform(&r);
        c.x[i] = nz_rng_uniform(&r) < 0.5f ? -m : m;
    }
    fill_normal(c.R, c.n, &r, 1.0f);
    drop_loss(&c);
    const float keep = 1.0f / (1.0f - c.p);
    int ok = 1;
    size_t zeros = 0;
    for (size_t i = 0; i < c.n; i++) {
        ok &= (c.mask[i] == 0.0f || c.mask[i] == keep) && c.out[i] == c.x[i] * c.mask[i];
        zeros += c.mask[i] == 0.0f;
    }
    CHECK(ok, "dropout: mask values not in {0, 1/(1-p)} or out != in * mask");
    CHECK(zeros > 0 && zeros < c.n, "dropout mask has %zu zeros of %zu", zeros, c.n);

    /* backward is exactly mask * dout, and accumulates */
    float *dx = galloc(c.n);
    dropout_backward(dx, c.R, c.mask, c.n);
    int exact = 1;
    for (size_t i = 0; i < c.n; i++) exact &= dx[i] == c.R[i] * c.mask[i];
    CHECK(exact, "dropout backward != mask * dout");
    double *gx = numeric_grad(c.x, c.n, EPS_PIECEWISE, drop_loss, NULL, &c, NULL);
    expect_match(S, "dx (fixed mask)", dx, gx, c.n, NULL);
    float *dx1 = malloc(sizeof(float) * c.n);
    memcpy(dx1, dx, sizeof(float) * c.n);
    dropout_backward(dx, c.R, c.mask, c.n);
    expect_doubled(S, dx, dx1, c.n);

    /* E[out] = in: mean over draws of each element. Per element the mask has mean 1 and
     * variance p/(1-p), so the draw-mean's standard deviation is sqrt(p/(1-p)/draws). */
    const int draws = 4000;
    double *sum = calloc(c.n, sizeof(double));
    size_t total_zero = 0;
    nz_rng dr;
    nz_rng_seed(&dr, 77);
    for (int t = 0; t < draws; t++) {
        dropout_forward(c.out, c.mask, c.x, c.n, c.p, &dr);
        for (size_t i = 0; i < c.n; i++) {
            sum[i] += c.out[i];
            total_zero += c.mask[i] == 0.0f;
        }
    }
    const double sd = sqrt(c.p / (1.0 - c.p) / draws);
    double worst = 0;
    for (size_t i = 0; i < c.n; i++) {
        double e = fabs(sum[i] / draws / c.x[i] - 1.0);
        if (e > worst) worst = e;
    }
    CHECK(worst < 5.5 * sd, "dropout E[out]/in off by %.4f (> 5.5 sd = %.4f)", worst, 5.5 * sd);
    const double frac = (double)total_zero / ((double)draws * c.n);
    const double fsd = sqrt(c.p * (1 - c.p) / ((double)draws * c.n));
    CHECK(fabs(frac - c.p) < 5 * fsd, "dropout drops %.4f of units, p = %.2f", frac, (double)c.p);
    printf("  dropout: E[out]/in worst dev %.4f (sd %.4f), drop rate %.4f\n", worst, sd, frac);
    CHECK(guards_ok(c.out, c.n) && guards_ok(c.mask, c.n) && guards_ok(dx, c.n),
          "dropout wrote outside its buffers");

    free(sum), free(dx1), free(gx);
    gfree(dx), gfree(c.x), gfree(c.R), gfree(c.out), gfree(c.mask);
}

/* ---------------------------------------------------------------- softmax cross-entropy */

/* mean over the batch of logsumexp(z) - z[label], in double */
static double xent_double(const float *z, const uint8_t *y, int B, int K) {
    double loss = 0;
    for (int b = 0; b < B; b++) {
        const float *zb = z + (size_t)b * K;
        double mx = zb[0];
        for (int k = 1; k < K; k++)
            if (zb[k] > mx) mx = zb[k];
        double s = 0;
        for (int k = 0; k < K; k++) s += exp((double)zb[k] - mx);
        loss += mx + log(s) - zb[y[b]];
    }
    return loss / B;
}

typedef struct {
    int B, K;
    float *z;
    uint8_t *y;
} xent_ctx;

static double xent_loss(void *p) {
    xent_ctx *c = p;
    return nz_softmax_xent(c->z, c->y, c->B, c->K, NULL, NULL);
}

/* nz_softmax_xent's loss, n_correct and dlogits against the double-precision definition */
static void xent_exact(const char *what, const float *z, const uint8_t *y, int B, int K) {
    const size_t n = (size_t)B * K;
    float *dz = galloc(n);
    int correct = -1;
    float L = nz_softmax_xent(z, y, B, K, dz, &correct);
    double Lref = xent_double(z, y, B, K);
    CHECK(fabs(L - Lref) <= 1e-6 * fabs(Lref), "%s: xent loss %.9g vs double %.9g", what,
          (double)L, Lref);
    int cref = 0;
    for (int b = 0; b < B; b++) {
        int arg = 0;
        for (int k = 1; k < K; k++)
            if (z[b * K + k] > z[b * K + arg]) arg = k;
        cref += arg == y[b];
    }
    CHECK(correct == cref, "%s: xent n_correct %d, expected %d", what, correct, cref);
    /* dlogits = (softmax - onehot) / B */
    double worst = 0, rowsum = 0;
    for (int b = 0; b < B; b++) {
        const float *zb = z + (size_t)b * K;
        double mx = zb[0], s = 0, rs = 0;
        for (int k = 1; k < K; k++)
            if (zb[k] > mx) mx = zb[k];
        for (int k = 0; k < K; k++) s += exp((double)zb[k] - mx);
        for (int k = 0; k < K; k++) {
            double g = (exp((double)zb[k] - mx) / s - (k == y[b])) / B;
            double e = fabs(g - dz[b * K + k]);
            if (e > worst || e != e) worst = e != e ? INFINITY : e;
            rs += dz[b * K + k];
        }
        if (fabs(rs) > rowsum) rowsum = fabs(rs);
    }
    CHECK(worst < 1e-7, "%s: xent dlogits vs (softmax - onehot)/B: max abs err %.3g", what, worst);
    CHECK(rowsum < 1e-6, "%s: xent dlogits rows do not sum to 0 (%.3g)", what, rowsum);
    CHECK(guards_ok(dz, n), "%s: xent wrote outside dlogits", what);
    CHECK(nz_softmax_xent(z, y, B, K, NULL, NULL) == L, "%s: xent loss depends on outputs", what);
    gfree(dz);
}

static void check_xent(void) {
    const char *S = "softmax xent";
    /* Moderate logits with the label favoured, so the loss is < 1 and its float rounding
     * (<= ulp(L)/2 per side) costs at most ~3e-6 in the difference quotient. */
    xent_ctx c = {.B = 4, .K = 10};
    const size_t n = (size_t)c.B * c.K;
    nz_rng r;
    nz_rng_seed(&r, 5000);
    c.z = galloc(n);
    c.y = malloc((size_t)c.B);
    fill_normal(c.z, n, &r, 1.0f);
    for (int b = 0; b < c.B; b++) {
        c.y[b] = (uint8_t)nz_rng_below(&r, (uint64_t)c.K);
        c.z[b * c.K + c.y[b]] += 3.0f;
    }
    xent_exact("moderate logits", c.z, c.y, c.B, c.K);
    float *dz = galloc(n);
    nz_softmax_xent(c.z, c.y, c.B, c.K, dz, NULL);
    double *gz = numeric_grad(c.z, n, EPS_XENT, xent_loss, NULL, &c, NULL);
    expect_match(S, "dlogits", dz, gz, n, NULL);
    mutate_scale_one("xent dlogits", dz, gz, n);
    free(gz);
    gfree(dz);

    /* large logits must not overflow; wrong and right predictions */
    float big[3 * 4] = {60, 0, -5, 1, -80, -81, -79.5f, -90, 1e-3f, 0, 0, 0};
    uint8_t ybig[3] = {2, 2, 1};
    xent_exact("large logits", big, ybig, 3, 4);

    free(c.y);
    gfree(c.z);
}

/* ---------------------------------------------------------------- whole models */

/* Builds conv -> relu -> maxpool -> flatten [-> dropout] -> dense -> relu -> dense. */
static int build_small(nz_model *m, float dropout_p) {
    nz_error err;
    if (nz_model_init(m, "gradcheck", (nz_shape){2, 8, 8}, 5, &err)) return -1;
    int x = nz_model_add_conv2d(m, "conv", 0, 3, 3, 1, 1, &err);
    if (x >= 0) x = nz_model_add_relu(m, "relu1", x, &err);
    if (x >= 0) x = nz_model_add_maxpool(m, "pool", x, 2, 2, &err);
    if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, &err);
    if (x >= 0 && dropout_p >= 0) x = nz_model_add_dropout(m, "drop", x, dropout_p, &err);
    if (x >= 0) x = nz_model_add_dense(m, "fc1", x, 16, &err);
    if (x >= 0) x = nz_model_add_relu(m, "relu2", x, &err);
    if (x >= 0) x = nz_model_add_dense(m, "fc2", x, 5, &err);
    if (x < 0) {
        fprintf(stderr, "build_small: %s\n", err.msg);
        nz_model_free(m);
        return -1;
    }
    return 0;
}

static const nz_param *model_param(const nz_model *m, const char *node, int k) {
    for (int i = 1; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].name, node) == 0 && k < m->nodes[i].n_params)
            return &m->nodes[i].params[k];
    return NULL;
}

/* ---- the literal check: nz_forward + nz_softmax_xent */

typedef struct {
    nz_model *m;
    nz_ws *ws;
    const float *x;
    const uint8_t *y;
    int B, training;
    uint64_t seed;     /* dropout rng, reseeded every forward: a fixed mask */
    uint64_t pattern0; /* branch pattern of the unperturbed forward */
    uint64_t pattern;  /* of the last forward */
} model_ctx;

static uint64_t fnv(uint64_t h, uint32_t v) {
    for (int i = 0; i < 4; i++) {
        h ^= (v >> (8 * i)) & 0xffu;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* maxpool argmax of window (oh, ow) of one (H, W) plane, with the kernel's tie rule */
static int32_t window_argmax(const float *plane, int W, int k, int stride, int oh, int ow) {
    float best = -FLT_MAX;
    int32_t bi = (oh * stride) * W + ow * stride;
    for (int u = 0; u < k; u++)
        for (int v = 0; v < k; v++) {
            int idx = (oh * stride + u) * W + ow * stride + v;
            if (plane[idx] > best) {
                best = plane[idx];
                bi = idx;
            }
        }
    return bi;
}

/* Hash of every branch the last forward took: relu signs and maxpool window argmaxes. */
static uint64_t branch_pattern(const model_ctx *c) {
    uint64_t h = 0xcbf29ce484222325ull;
    const nz_model *m = c->m;
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        if (n->op == NZ_OP_RELU) {
            const float *a = nz_ws_act(c->ws, i);
            size_t sz = nz_shape_size(n->out) * (size_t)c->B;
            for (size_t j = 0; j < sz; j++) h = fnv(h, a[j] > 0.0f);
        } else if (n->op == NZ_OP_MAXPOOL) {
            const nz_shape s = m->nodes[n->inputs[0]].out;
            const float *a = nz_ws_act(c->ws, n->inputs[0]);
            for (int p = 0; p < c->B * s.c; p++)
                for (int oh = 0; oh < n->out.h; oh++)
                    for (int ow = 0; ow < n->out.w; ow++)
                        h = fnv(h, (uint32_t)window_argmax(a + (size_t)p * s.h * s.w, s.w,
                                                           n->kh, n->stride, oh, ow));
        }
    }
    return h;
}

static double model_loss(void *p) {
    model_ctx *c = p;
    nz_rng r;
    nz_rng_seed(&r, c->seed);
    const float *z = nz_forward(c->m, c->ws, c->x, c->B, c->training, &r);
    c->pattern = branch_pattern(c);
    return nz_softmax_xent(z, c->y, c->B, c->m->n_classes, NULL, NULL);
}

static int model_kink(void *p) {
    model_ctx *c = p;
    return c->pattern != c->pattern0;
}

/* ---- the strict check: the same function with its branches frozen */

typedef struct {
    const nz_model *m;
    const float *x;
    const uint8_t *y;
    int B, training;
    uint64_t seed;
    float **act;            /* per node (B, out); flatten aliases its input */
    unsigned char **relu_on;/* per relu node, frozen signs */
    int32_t **pool_idx;     /* per maxpool node, frozen argmax within each plane */
    float *drop_mask;
    float *scratch;         /* conv im2col, per thread */
    float *bn_buf;          /* batch norm: running-stat copies, mean, invstd (4 x max C) */
} frozen_ctx;

static void frozen_free(frozen_ctx *f) {
    if (!f->act) return;
    for (int i = 1; i < f->m->n_nodes; i++) {
        if (f->m->nodes[i].op != NZ_OP_FLATTEN) free(f->act[i]);
        free(f->relu_on[i]);
        free(f->pool_idx[i]);
    }
    free(f->act), free(f->relu_on), free(f->pool_idx), free(f->drop_mask), free(f->scratch);
    free(f->bn_buf);
    f->act = NULL;
}

static int frozen_init(frozen_ctx *f) {
    const nz_model *m = f->m;
    f->act = calloc((size_t)m->n_nodes, sizeof(float *));
    f->relu_on = calloc((size_t)m->n_nodes, sizeof(unsigned char *));
    f->pool_idx = calloc((size_t)m->n_nodes, sizeof(int32_t *));
    size_t biggest = 1, scratch = 1, max_c = 1;
    int ok = f->act && f->relu_on && f->pool_idx;
    for (int i = 1; ok && i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        const size_t sz = nz_shape_size(n->out) * (size_t)f->B;
        if (sz > biggest) biggest = sz;
        if ((size_t)n->out.c > max_c) max_c = (size_t)n->out.c;
        if (n->op != NZ_OP_FLATTEN) ok &= (f->act[i] = malloc(sizeof(float) * sz)) != NULL;
        if (n->op == NZ_OP_RELU) ok &= (f->relu_on[i] = malloc(sz)) != NULL;
        if (n->op == NZ_OP_MAXPOOL) ok &= (f->pool_idx[i] = malloc(sizeof(int32_t) * sz)) != NULL;
        if (n->op == NZ_OP_CONV2D) {
            const nz_shape s = m->nodes[n->inputs[0]].out;
            conv_dims d = conv_dims_make(s.c, s.h, s.w, n->units, n->kh, n->stride, n->pad);
            const int t = layers_threads();
            size_t c = conv_scratch_per_thread(&d) * (size_t)(t > 0 ? t : 1);
            if (c > scratch) scratch = c;
        }
    }
    ok = ok && (f->drop_mask = malloc(sizeof(float) * biggest)) != NULL &&
         (f->scratch = malloc(sizeof(float) * scratch)) != NULL &&
         (f->bn_buf = malloc(sizeof(float) * 4 * max_c)) != NULL;
    if (!ok) frozen_free(f);
    return ok ? 0 : -1;
}

/* The forward pass over the node list with the layer kernels. record != 0: take the branches
 * from the values (and remember them), else replay the remembered ones. Returns the logits. */
static const float *frozen_forward(frozen_ctx *f, int record) {
    const nz_model *m = f->m;
    const float *P = m->params;
    const int B = f->B;
    nz_rng r;
    nz_rng_seed(&r, f->seed);
    f->act[0] = (float *)f->x;
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        const nz_shape s = m->nodes[n->inputs[0]].out;
        const float *in = f->act[n->inputs[0]];
        float *out = f->act[i];
        const size_t sz = nz_shape_size(n->out) * (size_t)B;
        switch (n->op) {
        case NZ_OP_DENSE:
            dense_forward(out, in, P + n->params[0].off, P + n->params[1].off, B,
                          (int)nz_shape_size(s), n->units);
            break;
        case NZ_OP_CONV2D: {
            conv_dims d = conv_dims_make(s.c, s.h, s.w, n->units, n->kh, n->stride, n->pad);
            conv2d_forward(out, in, P + n->params[0].off, P + n->params[1].off, B, &d,
                           f->scratch);
            break;
        }
        case NZ_OP_RELU:
            for (size_t j = 0; j < sz; j++) {
                if (record) f->relu_on[i][j] = in[j] > 0.0f;
                out[j] = f->relu_on[i][j] ? in[j] : 0.0f;
            }
            break;
        case NZ_OP_MAXPOOL:
            for (int p = 0; p < B * s.c; p++) {
                const float *plane = in + (size_t)p * s.h * s.w;
                for (int oh = 0; oh < n->out.h; oh++)
                    for (int ow = 0; ow < n->out.w; ow++) {
                        size_t o = ((size_t)p * n->out.h + oh) * n->out.w + ow;
                        if (record)
                            f->pool_idx[i][o] = window_argmax(plane, s.w, n->kh, n->stride, oh, ow);
                        out[o] = plane[f->pool_idx[i][o]];
                    }
            }
            break;
        case NZ_OP_FLATTEN:
            f->act[i] = f->act[n->inputs[0]];
            break;
        case NZ_OP_DROPOUT:
            /* the mask depends only on the rng, reseeded every pass */
            if (f->training && n->p > 0.0f)
                dropout_forward(out, f->drop_mask, in, sz, n->p, &r);
            else
                memcpy(out, in, sizeof(float) * sz);
            break;
        case NZ_OP_BATCHNORM: {
            /* smooth (batch statistics) or affine (running statistics): nothing to freeze. The
             * running statistics are copied so the function never writes the model. */
            float *rm = f->bn_buf, *rv = rm + s.c, *mu = rv + s.c, *is = mu + s.c;
            memcpy(rm, P + n->params[2].off, sizeof(float) * (size_t)s.c);
            memcpy(rv, P + n->params[3].off, sizeof(float) * (size_t)s.c);
            batchnorm_forward(out, in, P + n->params[0].off, P + n->params[1].off, rm, rv, mu, is,
                              B, s.c, s.h * s.w, n->p, NZ_BN_EPS, f->training);
            break;
        }
        case NZ_OP_ADD:
            add_forward(out, in, f->act[n->inputs[1]], sz);
            break;
        case NZ_OP_AVGPOOL:
            avgpool_forward(out, in, B, s.c, s.h, s.w, n->kh, n->kw, n->stride, n->out.h,
                            n->out.w);
            break;
        case NZ_OP_GAP:
            avgpool_forward(out, in, B, s.c, s.h, s.w, s.h, s.w, 1, 1, 1);
            break;
        case NZ_OP_SHORTCUT:
            shortcut_forward(out, in, B, s.c, s.h, s.w, n->units, n->stride, n->out.h, n->out.w);
            break;
        case NZ_OP_SELECT:
            select_forward(out, in, P + n->params[0].off, B, (int)nz_shape_size(s), n->units);
            break;
        default:
            break;
        }
    }
    return f->act[m->n_nodes - 1];
}

static double frozen_loss(void *p) {
    frozen_ctx *f = p;
    return xent_double(frozen_forward(f, 0), f->y, f->B, f->m->n_classes);
}

/* Scales a typical compared element of tensor pp by 1.05 and expects a mismatch. */
static void mutate_model_tensor(const char *label, const nz_param *pp, const float *ana,
                                const double *num) {
    mutate_scale_one(label, ana + pp->off, num + pp->off, pp->n);
}

/* Gradient-checks every parameter tensor of a small model. dropout_p < 0: no dropout node. */
static void check_model(const char *S, float dropout_p, int training, uint64_t seed,
                        int threads) {
    nz_set_threads(threads);
    nz_model m;
    if (build_small(&m, dropout_p) != 0) {
        CHECK(0, "%s: cannot build the model", S);
        return;
    }
    nz_error err;
    nz_rng r;
    nz_rng_seed(&r, seed);
    nz_model_init_params(&m, &r);
    const int B = 3;
    const size_t nx = (size_t)B * nz_shape_size(m.in), nl = (size_t)B * m.n_classes;
    float *x = galloc(nx), *dlogits = galloc(nl);
    uint8_t y[3];
    fill_normal(x, nx, &r, 1.0f);
    for (int b = 0; b < B; b++) y[b] = (uint8_t)nz_rng_below(&r, (uint64_t)m.n_classes);
    nz_ws *ws = nz_ws_new(&m, B, &err);
    frozen_ctx fz = {.m = &m, .x = x, .y = y, .B = B, .training = training, .seed = 99};
    if (!ws || frozen_init(&fz) != 0) {
        CHECK(0, "%s: out of memory", S);
        nz_ws_free(ws);
        nz_model_free(&m);
        gfree(x), gfree(dlogits);
        return;
    }
    model_ctx c = {.m = &m, .ws = ws, .x = x, .y = y, .B = B, .training = training, .seed = 99};

    /* analytic: nz_forward, nz_softmax_xent, nz_backward */
    {
        nz_rng dr;
        nz_rng_seed(&dr, c.seed);
        const float *z = nz_forward(&m, ws, x, B, training, &dr);
        nz_softmax_xent(z, y, B, m.n_classes, dlogits, NULL);
        nz_ws_zero_grads(ws);
        nz_backward(&m, ws, dlogits, B);
        /* the frozen function is nz_forward's at this point, bit for bit */
        const float *zf = frozen_forward(&fz, 1);
        CHECK(memcmp(z, zf, sizeof(float) * nl) == 0,
              "%s: layer-by-layer forward differs from nz_forward (norm err %.3g)", S,
              norm_err(zf, z, nl));
    }
    float *ana = malloc(sizeof(float) * m.n_params);
    memcpy(ana, nz_ws_grads(ws), sizeof(float) * m.n_params);
    /* the differences run at 1 thread (see fd_threads_begin), the branch pattern of the literal
     * check too; the gradient under test was computed at `threads` */
    nz_set_threads(1);

    /* 1. strict: every parameter against the frozen-branch function */
    double *num = numeric_grad5(m.params, m.n_params, EPS_MODEL, frozen_loss, &fz);
    for (int i = 1; i < m.n_nodes; i++) {
        const nz_node *n = &m.nodes[i];
        for (int k = 0; k < n->n_params; k++) {
            const nz_param *pp = &n->params[k];
            char what[64];
            snprintf(what, sizeof what, "%s.%s", n->name, k == 0 ? "W" : "b");
            expect_match(S, what, ana + pp->off, num + pp->off, pp->n, NULL);
        }
    }
    /* mutations on the whole-model gradient */
    {
        char label[96];
        snprintf(label, sizeof label, "%s fc1.W", S);
        mutate_model_tensor(label, model_param(&m, "fc1", 0), ana, num);
        snprintf(label, sizeof label, "%s conv.W", S);
        mutate_model_tensor(label, model_param(&m, "conv", 0), ana, num);
        const nz_param *bias = model_param(&m, "conv", 1);
        snprintf(label, sizeof label, "%s conv.b", S);
        mutate_drop(label, num + bias->off, bias->n);
    }

    /* 2. literal: nz_forward + nz_softmax_xent where no step crosses a kink */
    {
        model_loss(&c);
        c.pattern0 = c.pattern;
        unsigned char *skip = calloc(m.n_params, 1);
        double *num2 =
            numeric_grad(m.params, m.n_params, EPS_MODEL_FWD, model_loss, model_kink, &c, skip);
        gc_report rep = grad_compare_floor(ana, num2, m.n_params, skip, FLOOR_FLOAT_LOSS);
        char sec[64];
        snprintf(sec, sizeof sec, "%s via nz_forward", S);
        report_match(sec, "all params", ana, num2, rep);
        CHECK(rep.n_compared * 2 >= m.n_params, "%s: only %zu of %zu parameters clear of kinks",
              sec, rep.n_compared, m.n_params);
        printf("  %s: %zu params, all checked with frozen branches; %zu also through nz_forward "
               "(the rest cross a relu/pool kink at e = %g)\n",
               S, m.n_params, rep.n_compared, (double)EPS_MODEL_FWD);
        free(num2), free(skip);
    }

    /* accumulation: two backward passes double every parameter gradient */
    nz_set_threads(threads);
    {
        nz_rng dr;
        nz_rng_seed(&dr, c.seed);
        nz_forward(&m, ws, x, B, training, &dr);
    }
    nz_backward(&m, ws, dlogits, B);
    expect_doubled(S, nz_ws_grads(ws), ana, m.n_params);
    CHECK(guards_ok(x, nx) && guards_ok(dlogits, nl), "%s wrote outside its buffers", S);

    free(ana), free(num);
    gfree(x), gfree(dlogits);
    frozen_free(&fz);
    nz_ws_free(ws);
    nz_model_free(&m);
}

/* A dropout node that is inactive (eval mode, or p = 0) is the identity both ways: the model's
 * parameter gradients equal those of the same model without the node, bit for bit. */
static void check_dropout_inactive(void) {
    static const struct {
        const char *what;
        float p;
        int training;
    } cases[] = {{"dropout(0.5) in eval mode", 0.5f, 0}, {"dropout(0) in training", 0.0f, 1}};
    nz_model plain;
    if (build_small(&plain, -1.0f) != 0) {
        CHECK(0, "cannot build the model");
        return;
    }
    nz_rng r;
    nz_rng_seed(&r, MODEL_SEED);
    nz_model_init_params(&plain, &r);
    const int B = 3;
    const size_t nx = (size_t)B * nz_shape_size(plain.in), nl = (size_t)B * plain.n_classes;
    float *x = galloc(nx), *dl = galloc(nl);
    uint8_t y[3] = {0, 3, 4};
    fill_normal(x, nx, &r, 1.0f);
    nz_error err;
    nz_ws *ws = nz_ws_new(&plain, B, &err);
    nz_rng dr;
    nz_rng_seed(&dr, 1);
    const float *z = nz_forward(&plain, ws, x, B, 1, &dr);
    nz_softmax_xent(z, y, B, plain.n_classes, dl, NULL);
    nz_ws_zero_grads(ws);
    nz_backward(&plain, ws, dl, B);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        nz_model m;
        if (build_small(&m, cases[k].p) != 0) continue;
        CHECK(m.n_params == plain.n_params, "dropout changes the parameter count");
        memcpy(m.params, plain.params, sizeof(float) * m.n_params);
        nz_ws *w2 = nz_ws_new(&m, B, &err);
        /* leave non-trivial values in the mask buffer, as a previous training step would */
        nz_rng_seed(&dr, 2);
        nz_forward(&m, w2, x, B, 1, &dr);
        nz_rng_seed(&dr, 1);
        const float *z2 = nz_forward(&m, w2, x, B, cases[k].training, &dr);
        CHECK(memcmp(z, z2, sizeof(float) * nl) == 0, "%s: forward is not the identity",
              cases[k].what);
        nz_ws_zero_grads(w2);
        nz_backward(&m, w2, dl, B);
        double e = norm_err(nz_ws_grads(w2), nz_ws_grads(ws), m.n_params);
        CHECK(e == 0, "%s: backward is not the identity: parameter gradients differ from the "
                      "model without dropout (norm err %.3g)",
              cases[k].what, e);
        nz_ws_free(w2);
        nz_model_free(&m);
    }
    gfree(x), gfree(dl);
    nz_ws_free(ws);
    nz_model_free(&plain);
}

/* ---------------------------------------------------------------- norm x direction layers */

/* NZ_OP_NDENSE / NZ_OP_NCONV2D: W = g V / ||V|| per group (an fc neuron's row, a conv kernel
 * W[o, i]), then the plain dense/conv kernel. Group roles, so the math is checked for any
 * ||V|| and at g = 0 (a pruned group whose norm can grow back: dg must be exact there):
 *   0 unit-norm V (as after nz_normdir_convert)      1 ||V|| = 3.7
 *   2 ||V|| = 0.25                                    3 g = 0 (V non-zero, not unit)
 *   4 g < 0                                           5 V = 0, g != 0 (kernel level only)
 *   others: V ~ N(0, 1) (||V|| ~ sqrt(S)), g ~ N(0, 1).
 * The loss is affine in x, b and g (W is linear in g), so those use e = 0.25 as dense/conv do.
 * In V it is smooth but not affine: a 5-point central difference per group with e the power of
 * two <= ||V_j|| / 16 (so x +- e is exact and the O((e/||V||)^4) truncation is ~1e-5).
 * At V = 0 the direction V/||V|| is undefined (W is discontinuous there): its dV is not
 * compared; the kernel's convention (no direction to move, dV = 0) is checked exactly, and dg
 * (W stays 0 whatever g is) must be 0. */
enum { ND_UNIT, ND_LONG, ND_SHORT, ND_GZERO, ND_GNEG, ND_VZERO, ND_N_ROLES };

static double group_norm(const float *v, int S) {
    double ss = 0;
    for (int q = 0; q < S; q++) ss += (double)v[q] * v[q];
    return sqrt(ss);
}

static void scale_to_norm(float *v, int S, double norm) {
    double n0 = group_norm(v, S);
    for (int q = 0; q < S; q++) v[q] = (float)(v[q] * (norm / n0));
}

/* Random V, g with the roles above on the first groups; with_vzero = 0 skips role 5. */
static void fill_groups(float *V, float *g, int G, int S, nz_rng *r, int with_vzero) {
    fill_normal(V, (size_t)G * S, r, 1.0f);
    for (int j = 0; j < G; j++) {
        float *v = V + (size_t)j * S;
        g[j] = nz_rng_normal(r);
        if (fabsf(g[j]) < 0.2f) g[j] = g[j] < 0 ? -0.5f : 0.5f; /* role 3 is the only g = 0 */
        switch (j) {
        case ND_UNIT: scale_to_norm(v, S, 1.0); g[j] = 0.8f; break;
        case ND_LONG: scale_to_norm(v, S, 3.7); break;
        case ND_SHORT: scale_to_norm(v, S, 0.25); break;
        case ND_GZERO: g[j] = 0.0f; break;
        case ND_GNEG: g[j] = -1.3f; break;
        case ND_VZERO:
            if (with_vzero) {
                memset(v, 0, sizeof(float) * (size_t)S);
                g[j] = 1.1f;
            }
            break;
        default: break;
        }
    }
}

static float pow2_floor(double x) { return (float)ldexp(1.0, (int)floor(log2(x))); }

/* numeric dL/dV group by group (5-point, e = pow2 <= ||V_j|| / 16); V = 0 groups: skip = 1 */
static double *numeric_grad_groups(float *V, size_t G, size_t S, loss_fn f, void *ctx,
                                   unsigned char *skip) {
    double *num = calloc(G * S + 1, sizeof(double));
    for (size_t j = 0; j < G; j++) {
        float *v = V + j * S;
        const double norm = group_norm(v, (int)S);
        for (size_t q = 0; q < S; q++) skip[j * S + q] = norm == 0;
        if (norm == 0) continue;
        double *gj = numeric_grad5(v, S, pow2_floor(norm / 16), f, ctx);
        memcpy(num + j * S, gj, sizeof(double) * S);
        free(gj);
    }
    return num;
}

typedef struct {
    int conv;      /* 0: NDENSE, 1: NCONV2D */
    int B, NI, NO; /* dense sizes */
    conv_dims d;   /* conv sizes */
    int G, S;      /* groups and group size */
    size_t nx, nw, nb, no;
    float *x, *V, *g, *b, *R, *W, *out, *scratch;
} nd_ctx;

static double nd_loss(void *p) {
    nd_ctx *c = p;
    normdir_weights(c->W, c->V, c->g, c->G, c->S);
    if (c->conv)
        conv2d_forward(c->out, c->x, c->W, c->b, c->B, &c->d, c->scratch);
    else
        dense_forward(c->out, c->x, c->W, c->b, c->B, c->NI, c->NO);
    return dot_d(c->out, c->R, c->no);
}

/* k = 0: NDENSE (B 4, 13 -> 7); else NCONV2D k/s/pad on (3, 2, 7, 7) -> 4 channels */
static void check_normdir(int k, int s, int pad) {
    char S[48];
    nd_ctx c;
    memset(&c, 0, sizeof c);
    if (k == 0) {
        snprintf(S, sizeof S, "ndense");
        c.B = 4, c.NI = 13, c.NO = 7;
        c.G = c.NO, c.S = c.NI;
        c.nx = (size_t)c.B * c.NI, c.nb = (size_t)c.NO, c.no = (size_t)c.B * c.NO;
    } else {
        snprintf(S, sizeof S, "nconv2d k%d s%d p%d", k, s, pad);
        c.conv = 1, c.B = 3;
        c.d = conv_dims_make(2, 7, 7, 4, k, s, pad);
        c.G = c.d.OC * c.d.C, c.S = k * k;
        c.nx = (size_t)c.B * c.d.C * c.d.H * c.d.W, c.nb = (size_t)c.d.OC;
        c.no = (size_t)c.B * c.d.OC * c.d.OH * c.d.OW;
    }
    c.nw = (size_t)c.G * c.S;
    const size_t T = layers_threads() > 0 && layers_threads() < 256 ? (size_t)layers_threads() : 1;
    const size_t nscratch = c.conv ? conv_scratch_per_thread(&c.d) * T : 1,
                 npart = (c.nw + c.nb) * T;
    nz_rng r;
    nz_rng_seed(&r, 7000u + (unsigned)(k * 100 + s * 10 + pad));
    c.x = galloc(c.nx), c.V = galloc(c.nw), c.g = galloc((size_t)c.G), c.b = galloc(c.nb);
    c.R = galloc(c.no), c.W = galloc(c.nw), c.out = galloc(c.no), c.scratch = galloc(nscratch);
    float *partial = galloc(npart);
    fill_normal(c.x, c.nx, &r, 1.0f);
    fill_groups(c.V, c.g, c.G, c.S, &r, 1);
    fill_normal(c.b, c.nb, &r, 0.5f);
    fill_normal(c.R, c.no, &r, 1.0f);

    /* the effective weights against the definition in double; zero groups exactly zero */
    nd_loss(&c);
    {
        double worst = 0;
        int zeros_ok = 1;
        for (int j = 0; j < c.G; j++) {
            const double n = group_norm(c.V + (size_t)j * c.S, c.S);
            for (int q = 0; q < c.S; q++) {
                const size_t i = (size_t)j * c.S + q;
                if (n == 0 || c.g[j] == 0.0f) {
                    zeros_ok &= c.W[i] == 0.0f;
                    continue;
                }
                const double w = (double)c.g[j] * c.V[i] / n;
                const double e = fabs(c.W[i] - w) / fabs(w);
                if (e > worst || e != e) worst = e != e ? INFINITY : e;
            }
        }
        CHECK(worst <= 1e-6, "%s: W = g V/||V|| off by %.3g (relative, per element)", S, worst);
        CHECK(zeros_ok, "%s: a group with g = 0 or V = 0 has non-zero weights", S);
        section_record("normdir weights vs double", worst);
    }

    float *dx = galloc(c.nx), *dW = galloc(c.nw), *dV = galloc(c.nw), *dg = galloc((size_t)c.G),
          *db = galloc(c.nb);
    if (c.conv)
        conv2d_backward(dx, dW, db, c.R, c.x, c.W, c.B, &c.d, c.scratch, partial);
    else
        dense_backward(dx, dW, db, c.R, c.x, c.W, c.B, c.NI, c.NO);
    normdir_backward(dV, dg, dW, c.V, c.g, c.G, c.S);

    unsigned char *skipV = calloc(c.nw, 1);
    double *gx = numeric_grad(c.x, c.nx, EPS_AFFINE, nd_loss, NULL, &c, NULL);
    double *gg = numeric_grad(c.g, (size_t)c.G, EPS_AFFINE, nd_loss, NULL, &c, NULL);
    double *gb = numeric_grad(c.b, c.nb, EPS_AFFINE, nd_loss, NULL, &c, NULL);
    double *gV = numeric_grad_groups(c.V, (size_t)c.G, (size_t)c.S, nd_loss, &c, skipV);
    nd_loss(&c); /* W as at the evaluation point */
    expect_match(S, "dx", dx, gx, c.nx, NULL);
    expect_match(S, "dV", dV, gV, c.nw, skipV);
    expect_match(S, "dg", dg, gg, (size_t)c.G, NULL);
    expect_match(S, "db", db, gb, c.nb, NULL);
    /* the roles, one by one: a wrong dg at g = 0 or at ||V|| != 1 would hide in a max */
    static const char *const role_name[ND_N_ROLES] = {"unit ||V||", "||V|| = 3.7", "||V|| = 0.25",
                                                      "g = 0", "g < 0", "V = 0"};
    for (int j = 0; j < ND_N_ROLES && j < c.G; j++) {
        double e = rel_err(dg[j], gg[j], GC_FLOOR);
        CHECK(e <= GC_TOL, "%s dg of the %s group: analytic %.7g, numeric %.7g", S, role_name[j],
              (double)dg[j], gg[j]);
    }
    CHECK(fabs(gg[ND_GZERO]) >= 10 * GC_FLOOR,
          "%s: the g = 0 group's dg (%.3g) is too small to test anything", S, gg[ND_GZERO]);
    CHECK(dg[ND_VZERO] == 0.0f && gg[ND_VZERO] == 0.0,
          "%s: V = 0 group: dg %.3g (numeric %.3g), want 0", S, (double)dg[ND_VZERO],
          gg[ND_VZERO]);
    {
        int zero = 1;
        for (int q = 0; q < c.S; q++) zero &= dV[(size_t)ND_VZERO * c.S + q] == 0.0f;
        CHECK(zero, "%s: V = 0 group has a non-zero dV", S);
    }

    /* mutations: generic ones, and the plausible normdir mistakes */
    char what[96];
    snprintf(what, sizeof what, "%s dx", S);
    mutate_scale_one(what, dx, gx, c.nx);
    snprintf(what, sizeof what, "%s dV", S);
    mutate_scale_one(what, dV, gV, c.nw);
    snprintf(what, sizeof what, "%s dg", S);
    mutate_scale_one(what, dg, gg, (size_t)c.G);
    snprintf(what, sizeof what, "%s db", S);
    mutate_drop(what, gb, c.nb);
    {
        float *bad = malloc(sizeof(float) * c.nw), *badg = malloc(sizeof(float) * (size_t)c.G);
        /* dV without the projection: g/||V|| dW (misses - <dW,u> u g/||V||) */
        for (int j = 0; j < c.G; j++) {
            const double n = group_norm(c.V + (size_t)j * c.S, c.S);
            double dot = 0;
            for (int q = 0; q < c.S; q++) {
                const size_t i = (size_t)j * c.S + q;
                bad[i] = n > 0 ? (float)(c.g[j] / n * dW[i]) : 0.0f;
                dot += (double)dW[i] * c.V[i];
            }
            badg[j] = (float)dot; /* dg = <dW, V>: right only where ||V|| = 1 */
        }
        snprintf(what, sizeof what, "%s dV without the tangent projection", S);
        expect_mismatch(what, bad, gV, c.nw);
        snprintf(what, sizeof what, "%s dg = <dW, V> (unnormalized)", S);
        expect_mismatch(what, badg, gg, (size_t)c.G);
        CHECK(rel_err(badg[ND_UNIT], gg[ND_UNIT], GC_FLOOR) <= GC_TOL,
              "%s: on the unit-norm group <dW, V> is dg (mutation sanity)", S);
        /* a backward that skips g = 0 groups (as if they were removed) */
        memcpy(badg, dg, sizeof(float) * (size_t)c.G);
        badg[ND_GZERO] = 0.0f;
        snprintf(what, sizeof what, "%s dg of the g = 0 group dropped", S);
        expect_mismatch(what, badg, gg, (size_t)c.G);
        free(bad), free(badg);
    }

    /* normdir_backward accumulates */
    {
        float *dV1 = malloc(sizeof(float) * c.nw), *dg1 = malloc(sizeof(float) * (size_t)c.G);
        memcpy(dV1, dV, sizeof(float) * c.nw);
        memcpy(dg1, dg, sizeof(float) * (size_t)c.G);
        normdir_backward(dV, dg, dW, c.V, c.g, c.G, c.S);
        snprintf(what, sizeof what, "%s dV", S);
        expect_doubled(what, dV, dV1, c.nw);
        snprintf(what, sizeof what, "%s dg", S);
        expect_doubled(what, dg, dg1, (size_t)c.G);
        free(dV1), free(dg1);
    }
    CHECK(guards_ok(c.x, c.nx) && guards_ok(c.V, c.nw) && guards_ok(c.g, (size_t)c.G) &&
              guards_ok(c.W, c.nw) && guards_ok(c.out, c.no) && guards_ok(dx, c.nx) &&
              guards_ok(dW, c.nw) && guards_ok(dV, c.nw) && guards_ok(dg, (size_t)c.G) &&
              guards_ok(db, c.nb) && guards_ok(c.scratch, nscratch) && guards_ok(partial, npart),
          "%s wrote outside its buffers", S);

    free(skipV), free(gx), free(gg), free(gb), free(gV);
    gfree(dx), gfree(dW), gfree(dV), gfree(dg), gfree(db), gfree(partial);
    gfree(c.x), gfree(c.V), gfree(c.g), gfree(c.b), gfree(c.R), gfree(c.W), gfree(c.out);
    gfree(c.scratch);
}

/* normdir_weights/backward on a large layer (G S > 65536: the OpenMP path) against the formulas
 * in double, and bit-identical at 1 and 2 threads (each group is computed alone). */
static void check_normdir_large(void) {
    const int G = 300, S = 784;
    const size_t n = (size_t)G * S;
    nz_rng r;
    nz_rng_seed(&r, 7777);
    float *V = galloc(n), *g = galloc((size_t)G), *dW = galloc(n);
    float *W[2], *dV[2], *dg[2];
    fill_groups(V, g, G, S, &r, 1);
    fill_normal(dW, n, &r, 1.0f);
    for (int t = 0; t < 2; t++) {
        nz_set_threads(t + 1);
        W[t] = galloc(n), dV[t] = galloc(n), dg[t] = galloc((size_t)G);
        normdir_weights(W[t], V, g, G, S);
        normdir_backward(dV[t], dg[t], dW, V, g, G, S);
    }
    nz_set_threads(2);
    double ew = 0, ev = 0, eg = 0;
    for (int j = 0; j < G; j++) {
        const float *v = V + (size_t)j * S, *dw = dW + (size_t)j * S;
        const double nrm = group_norm(v, S);
        double dot = 0;
        for (int q = 0; q < S; q++) dot += (double)dw[q] * v[q];
        const double gu = nrm > 0 ? dot / nrm : 0; /* <dW, u> */
        eg = fmax(eg, rel_err(dg[1][j], gu, 1e-6));
        double vmax = 0, dmax = 0;
        for (int q = 0; q < S; q++) {
            const double w = nrm > 0 ? g[j] * v[q] / nrm : 0;
            ew = fmax(ew, rel_err(W[1][(size_t)j * S + q], w, 1e-30));
            const double d = nrm > 0 ? g[j] / nrm * (dw[q] - gu * v[q] / nrm) : 0;
            if (fabs(d) > vmax) vmax = fabs(d);
            dmax = fmax(dmax, fabs(dV[1][(size_t)j * S + q] - d));
        }
        if (vmax > 0) ev = fmax(ev, dmax / vmax);
        else ev = fmax(ev, dmax == 0 ? 0 : INFINITY);
    }
    CHECK(ew <= 1e-6, "normdir %dx%d: W vs double, rel err %.3g", G, S, ew);
    CHECK(eg <= 1e-5, "normdir %dx%d: dg vs double, rel err %.3g", G, S, eg);
    CHECK(ev <= 1e-5, "normdir %dx%d: dV vs double, norm err per group %.3g", G, S, ev);
    CHECK(memcmp(W[0], W[1], sizeof(float) * n) == 0 &&
              memcmp(dV[0], dV[1], sizeof(float) * n) == 0 &&
              memcmp(dg[0], dg[1], sizeof(float) * (size_t)G) == 0,
          "normdir %dx%d: 1 and 2 threads differ", G, S);
    section_record("normdir 300x784 vs double", fmax(ew, fmax(eg, ev)));
    int ok = guards_ok(V, n) && guards_ok(g, (size_t)G) && guards_ok(dW, n);
    for (int t = 0; t < 2; t++) {
        ok &= guards_ok(W[t], n) && guards_ok(dV[t], n) && guards_ok(dg[t], (size_t)G);
        gfree(W[t]), gfree(dV[t]), gfree(dg[t]);
    }
    CHECK(ok, "normdir %dx%d wrote outside its buffers", G, S);
    gfree(V), gfree(g), gfree(dW);
}

/* Through the graph: conv0 (plain 1x1) -> nconv (k3 s2 p1) -> flatten -> nfc1 -> nfc2, no
 * relu/pool, so the loss is smooth in every parameter and nz_forward itself is differenced
 * (xent in double of its logits, 5-point, e = 1/8; V per group as above). conv0's gradient
 * checks nconv's input gradient, nconv's checks nfc1's (through flatten); nfc2 is the
 * classifier. V = 0 groups are left out here (non-differentiable). */
typedef struct {
    const nz_model *m;
    nz_ws *ws;
    const float *x;
    const uint8_t *y;
    int B;
} ndm_ctx;

static double ndm_loss(void *p) {
    ndm_ctx *c = p;
    const float *z = nz_forward(c->m, c->ws, c->x, c->B, 0, NULL);
    return xent_double(z, c->y, c->B, c->m->n_classes);
}

static void check_normdir_model(int threads) {
    char S[48];
    snprintf(S, sizeof S, "normdir model %d thread%s", threads, threads > 1 ? "s" : "");
    nz_set_threads(threads);
    nz_model m;
    nz_error err;
    int x = -1;
    if (nz_model_init(&m, "gradcheck-nd", (nz_shape){2, 7, 7}, 5, &err) == NZ_OK) {
        x = nz_model_add_conv2d(&m, "conv0", 0, 3, 1, 1, 0, &err);
        if (x >= 0) x = nz_model_add_nconv2d(&m, "nconv", x, 4, 3, 2, 1, &err);
        if (x >= 0) x = nz_model_add_flatten(&m, "flatten", x, &err);
        if (x >= 0) x = nz_model_add_ndense(&m, "nfc1", x, 8, &err);
        if (x >= 0) x = nz_model_add_ndense(&m, "nfc2", x, 5, &err);
    }
    if (x < 0 || nz_model_validate(&m, &err) != NZ_OK) {
        CHECK(0, "%s: cannot build the model: %s", S, err.msg);
        nz_model_free(&m);
        return;
    }
    nz_rng r;
    nz_rng_seed(&r, 7100);
    nz_model_init_params(&m, &r); /* conv0 */
    for (int i = 1; i < m.n_nodes; i++) {
        const nz_node *n = &m.nodes[i];
        if (n->op != NZ_OP_NDENSE && n->op != NZ_OP_NCONV2D) continue;
        const int G = (int)n->params[1].n, Sz = (int)(n->params[0].n / n->params[1].n);
        fill_groups(m.params + n->params[0].off, m.params + n->params[1].off, G, Sz, &r, 0);
        fill_normal(m.params + n->params[2].off, n->params[2].n, &r, 0.3f);
    }
    const int B = 3;
    const size_t nx = (size_t)B * nz_shape_size(m.in), nl = (size_t)B * m.n_classes;
    float *xin = galloc(nx), *dl = galloc(nl);
    uint8_t y[3];
    fill_normal(xin, nx, &r, 1.0f);
    for (int b = 0; b < B; b++) y[b] = (uint8_t)nz_rng_below(&r, (uint64_t)m.n_classes);
    nz_ws *ws = nz_ws_new(&m, B, &err);
    if (!ws) {
        CHECK(0, "%s: nz_ws_new: %s", S, err.msg);
        gfree(xin), gfree(dl);
        nz_model_free(&m);
        return;
    }
    ndm_ctx c = {.m = &m, .ws = ws, .x = xin, .y = y, .B = B};
    const float *z = nz_forward(&m, ws, xin, B, 0, NULL);
    nz_softmax_xent(z, y, B, m.n_classes, dl, NULL);
    nz_ws_zero_grads(ws);
    nz_backward(&m, ws, dl, B);
    float *ana = malloc(sizeof(float) * m.n_params);
    memcpy(ana, nz_ws_grads(ws), sizeof(float) * m.n_params);

    double *num = calloc(m.n_params, sizeof(double));
    unsigned char *skip = calloc(m.n_params, 1);
    for (int i = 1; i < m.n_nodes; i++) {
        const nz_node *n = &m.nodes[i];
        const int nd = n->op == NZ_OP_NDENSE || n->op == NZ_OP_NCONV2D;
        for (int k = 0; k < n->n_params; k++) {
            const nz_param *pp = &n->params[k];
            double *g;
            if (nd && k == 0)
                g = numeric_grad_groups(m.params + pp->off, n->params[1].n,
                                        pp->n / n->params[1].n, ndm_loss, &c, skip + pp->off);
            else
                g = numeric_grad5(m.params + pp->off, pp->n, EPS_MODEL, ndm_loss, &c);
            memcpy(num + pp->off, g, sizeof(double) * pp->n);
            free(g);
            static const char *const plain[] = {"W", "b"}, *const normdir[] = {"V", "g", "b"};
            char what[64];
            snprintf(what, sizeof what, "%s.%s", n->name, nd ? normdir[k] : plain[k]);
            expect_match(S, what, ana + pp->off, num + pp->off, pp->n, skip + pp->off);
        }
    }
    {
        char label[96];
        const nz_param *p;
        snprintf(label, sizeof label, "%s nconv.V", S);
        if ((p = model_param(&m, "nconv", 0))) mutate_model_tensor(label, p, ana, num);
        snprintf(label, sizeof label, "%s nfc1.g", S);
        if ((p = model_param(&m, "nfc1", 1))) mutate_model_tensor(label, p, ana, num);
        snprintf(label, sizeof label, "%s nfc1.b", S);
        if ((p = model_param(&m, "nfc1", 2))) mutate_drop(label, num + p->off, p->n);
        snprintf(label, sizeof label, "%s conv0.W (nconv's input gradient)", S);
        if ((p = model_param(&m, "conv0", 0))) mutate_model_tensor(label, p, ana, num);
        /* the g = 0 neuron of nfc1 and kernel of nconv: their dg must be there */
        static const char *const nodes[] = {"nfc1", "nconv"};
        for (int k = 0; k < 2; k++) {
            if (!(p = model_param(&m, nodes[k], 1))) continue;
            /* above the floor: compared relatively, and a dropped dg is a relative error of 1 */
            CHECK(m.params[p->off + ND_GZERO] == 0.0f && fabs(num[p->off + ND_GZERO]) >= GC_FLOOR,
                  "%s %s: the g = 0 group is not set up (g %g, numeric dg %.3g)", S, nodes[k],
                  (double)m.params[p->off + ND_GZERO], num[p->off + ND_GZERO]);
            float *bad = malloc(sizeof(float) * p->n);
            memcpy(bad, ana + p->off, sizeof(float) * p->n);
            bad[ND_GZERO] = 0.0f;
            snprintf(label, sizeof label, "%s %s dg of the g = 0 group dropped", S, nodes[k]);
            expect_mismatch(label, bad, num + p->off, p->n);
            free(bad);
        }
    }
    /* two backward passes double every parameter gradient */
    nz_forward(&m, ws, xin, B, 0, NULL);
    nz_backward(&m, ws, dl, B);
    expect_doubled(S, nz_ws_grads(ws), ana, m.n_params);
    CHECK(guards_ok(xin, nx) && guards_ok(dl, nl), "%s wrote outside its buffers", S);

    free(ana), free(num), free(skip);
    gfree(xin), gfree(dl);
    nz_ws_free(ws);
    nz_model_free(&m);
}

/* ---------------------------------------------------------------- batch norm */

/* batchnorm_forward/backward on x (B, C, HW), PyTorch semantics (NZ_BN_MOMENTUM, NZ_BN_EPS).
 * Channels get different means (-2..2) and scales (0.5..2), gamma one negative value, and random
 * running statistics, so no formula holds by accident of zero mean or unit variance.
 *  - forward against the definition in double: out, the saved mean/invstd, and the running
 *    statistics (r = 0.9 r + 0.1 stat with the *unbiased* variance in training; untouched in
 *    eval, bit for bit). The check is shown able to tell the biased from the unbiased variance.
 *  - gradients: the loss is affine in gamma and beta in both modes, and in x in eval mode
 *    (e = EPS_AFFINE, 2-point). In training mode it is smooth but not affine in x: xhat moves
 *    with the batch mean and variance, on the scale of the channel's batch standard deviation
 *    s_c. A 5-point difference per channel with e_c the power of two <= s_c / 8 keeps the
 *    truncation small (larger steps lose to it on the 1-D case, whose N = 8 values make each
 *    one weigh on the statistics). What limits the check is rounding: the kernel folds each
 *    channel into float coefficients y = x a + b, and their rounding, shared by the N outputs,
 *    moves L by ~1e-6 whatever the step; divided by 12 e_c / 8 that is an absolute error
 *    ~3e-5 on gradients of size |gamma|/s_c ~ 1. Compared with the 1e-3 floor a near-zero
 *    element fails (worst 2.4e-2 over 200 seeds); with FLOOR_BN = 1e-2, the floor the literal
 *    model check uses for its noisy float loss, the worst over 200 seeds is 5e-3 (2-D) and
 *    1e-3 (1-D). The mutations of dx are judged at that floor too.
 *  - mutations: the plausible mistakes of a BN backward: the batch statistics treated as
 *    constants in training (both mean-gradient terms dropped: the eval formula), each of the two
 *    terms dropped alone, and the training formula used in eval mode. */
typedef struct {
    int B, C, HW, training;
    size_t n;
    float *x, *gamma, *beta, *rm, *rv, *rm0, *rv0, *mean, *invstd, *R, *out;
} bn_ctx;

static double bn_loss(void *p) {
    bn_ctx *c = p;
    memcpy(c->rm, c->rm0, sizeof(float) * (size_t)c->C);
    memcpy(c->rv, c->rv0, sizeof(float) * (size_t)c->C);
    batchnorm_forward(c->out, c->x, c->gamma, c->beta, c->rm, c->rv, c->mean, c->invstd, c->B,
                      c->C, c->HW, NZ_BN_MOMENTUM, NZ_BN_EPS, c->training);
    return dot_d(c->out, c->R, c->n);
}

/* per channel mean and biased variance of x (B, C, HW) in double */
static void bn_stats_d(const float *x, int B, int C, int HW, double *mean, double *var) {
    for (int ch = 0; ch < C; ch++) {
        double s = 0, ss = 0;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < HW; i++) s += x[((size_t)b * C + ch) * HW + i];
        const double m = s / ((double)B * HW);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < HW; i++) {
                const double d = x[((size_t)b * C + ch) * HW + i] - m;
                ss += d * d;
            }
        mean[ch] = m;
        var[ch] = ss / ((double)B * HW);
    }
}

/* dx of a BN backward built in the test: terms selects which of the two mean-gradient terms
 * are kept (bit 0: - mean(dy), bit 1: - xhat mean(dy xhat)) */
static void bn_dx_terms(float *dx, const bn_ctx *c, int terms) {
    const double N = (double)c->B * c->HW;
    for (int ch = 0; ch < c->C; ch++) {
        double sdy = 0, sdyx = 0;
        for (int b = 0; b < c->B; b++)
            for (int i = 0; i < c->HW; i++) {
                const size_t j = ((size_t)b * c->C + ch) * c->HW + i;
                sdy += c->R[j];
                sdyx += c->R[j] * ((c->x[j] - c->mean[ch]) * c->invstd[ch]);
            }
        for (int b = 0; b < c->B; b++)
            for (int i = 0; i < c->HW; i++) {
                const size_t j = ((size_t)b * c->C + ch) * c->HW + i;
                const double xh = (c->x[j] - c->mean[ch]) * c->invstd[ch];
                double g = c->R[j];
                if (terms & 1) g -= sdy / N;
                if (terms & 2) g -= xh * sdyx / N;
                dx[j] = (float)(c->gamma[ch] * c->invstd[ch] * g);
            }
    }
}

static void check_batchnorm(int B, int C, int H, int W, int training) {
    char S[64];
    snprintf(S, sizeof S, "batchnorm %s (%d, %d, %dx%d)", training ? "train" : "eval", B, C, H,
             W);
    bn_ctx c = {.B = B, .C = C, .HW = H * W, .training = training};
    c.n = (size_t)B * C * c.HW;
    const size_t nc = (size_t)C;
    nz_rng r;
    nz_rng_seed(&r, 8000u + (unsigned)(B * 1000 + C * 100 + H * 10 + training));
    c.x = galloc(c.n), c.R = galloc(c.n), c.out = galloc(c.n);
    c.gamma = galloc(nc), c.beta = galloc(nc), c.rm = galloc(nc), c.rv = galloc(nc);
    c.rm0 = galloc(nc), c.rv0 = galloc(nc), c.mean = galloc(nc), c.invstd = galloc(nc);
    for (int ch = 0; ch < C; ch++) {
        const float mu = nz_rng_range(&r, -2.0f, 2.0f), sd = nz_rng_range(&r, 0.5f, 2.0f);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < c.HW; i++)
                c.x[((size_t)b * C + ch) * c.HW + i] = mu + sd * nz_rng_normal(&r);
        c.gamma[ch] = nz_rng_range(&r, 0.5f, 1.5f);
        c.beta[ch] = 0.5f * nz_rng_normal(&r);
        c.rm0[ch] = 0.5f * nz_rng_normal(&r);
        c.rv0[ch] = nz_rng_range(&r, 0.5f, 2.0f);
    }
    c.gamma[C > 1 ? 1 : 0] = -0.7f;
    fill_normal(c.R, c.n, &r, 1.0f);

    /* forward against the definition */
    bn_loss(&c);
    {
        double *m = malloc(sizeof(double) * nc), *v = malloc(sizeof(double) * nc);
        bn_stats_d(c.x, B, C, c.HW, m, v);
        const double N = (double)B * c.HW;
        double eo = 0, es = 0, er = 0, ebias = INFINITY;
        int untouched = 1;
        for (int ch = 0; ch < C; ch++) {
            const double mu = training ? m[ch] : c.rm0[ch];
            const double var = training ? v[ch] : c.rv0[ch];
            const double is = 1.0 / sqrt(var + NZ_BN_EPS);
            for (int b = 0; b < B; b++)
                for (int i = 0; i < c.HW; i++) {
                    const size_t j = ((size_t)b * C + ch) * c.HW + i;
                    const double y = c.gamma[ch] * (c.x[j] - mu) * is + c.beta[ch];
                    eo = fmax(eo, fabs(y - c.out[j]) / fmax(fabs(y), 1.0));
                }
            es = fmax(es, fmax(fabs(c.mean[ch] - mu) / fmax(fabs(mu), 1.0),
                               fabs(c.invstd[ch] - is) / is));
            if (training) {
                const double rm = 0.9 * c.rm0[ch] + 0.1 * m[ch];
                const double rv = 0.9 * c.rv0[ch] + 0.1 * v[ch] * N / (N - 1);
                const double rv_biased = 0.9 * c.rv0[ch] + 0.1 * v[ch];
                er = fmax(er, fmax(fabs(c.rm[ch] - rm) / fmax(fabs(rm), 1.0),
                                   fabs(c.rv[ch] - rv) / rv));
                ebias = fmin(ebias, fabs(rv_biased - rv) / rv);
            } else {
                untouched &= memcmp(&c.rm[ch], &c.rm0[ch], 4) == 0 &&
                             memcmp(&c.rv[ch], &c.rv0[ch], 4) == 0;
            }
        }
        CHECK(eo < 1e-5, "%s forward vs double definition: %.3g", S, eo);
        CHECK(es < 1e-6, "%s: saved mean/invstd vs double: %.3g", S, es);
        section_record("batchnorm forward vs double", fmax(eo, es));
        if (training) {
            CHECK(er < 1e-6, "%s: running mean/var (momentum %g, unbiased var) vs double: %.3g",
                  S, (double)NZ_BN_MOMENTUM, er);
            /* the check above would see the biased variance in the running estimate */
            CHECK(ebias > 100 * 1e-6, "%s: biased vs unbiased running var differ by only %.3g", S,
                  ebias);
            section_record("batchnorm running stats vs double", er);
        } else {
            CHECK(untouched, "%s: eval forward changed the running statistics", S);
        }
        free(m), free(v);
    }

    float *dx = galloc(c.n), *dg = galloc(nc), *db = galloc(nc);
    batchnorm_backward(dx, dg, db, c.R, c.x, c.gamma, c.mean, c.invstd, B, C, c.HW, training);
    double *gx;
    const double xfloor = training ? FLOOR_BN : GC_FLOOR;
    if (training) {
        /* per (sample, channel) plane, the channel's step */
        float *step = malloc(sizeof(float) * nc);
        for (int ch = 0; ch < C; ch++) step[ch] = pow2_floor(1.0 / c.invstd[ch] / 8);
        gx = malloc(sizeof(double) * c.n);
        for (int b = 0; b < B; b++)
            for (int ch = 0; ch < C; ch++) {
                const size_t o = ((size_t)b * C + ch) * c.HW;
                double *g = numeric_grad5(c.x + o, (size_t)c.HW, step[ch], bn_loss, &c);
                memcpy(gx + o, g, sizeof(double) * (size_t)c.HW);
                free(g);
            }
        free(step);
    } else {
        gx = numeric_grad(c.x, c.n, EPS_AFFINE, bn_loss, NULL, &c, NULL);
    }
    double *gg = numeric_grad(c.gamma, nc, EPS_AFFINE, bn_loss, NULL, &c, NULL);
    double *gb = numeric_grad(c.beta, nc, EPS_AFFINE, bn_loss, NULL, &c, NULL);
    bn_loss(&c); /* mean/invstd as at the evaluation point */
    report_match(S, "dx", dx, gx, grad_compare_floor(dx, gx, c.n, NULL, xfloor));
    expect_match(S, "dgamma", dg, gg, nc, NULL);
    expect_match(S, "dbeta", db, gb, nc, NULL);
    char what[128];
    snprintf(what, sizeof what, "%s dx", S);
    mutate_scale_one_floor(what, dx, gx, c.n, xfloor);
    snprintf(what, sizeof what, "%s dgamma", S);
    mutate_scale_one(what, dg, gg, nc);
    snprintf(what, sizeof what, "%s dbeta", S);
    mutate_drop(what, gb, nc);
    {
        float *bad = galloc(c.n), *t1 = galloc(nc), *t2 = galloc(nc);
        /* the test's own formula with both terms reproduces the kernel (sanity) */
        bn_dx_terms(bad, &c, training ? 3 : 0);
        CHECK(norm_err(bad, dx, c.n) < 1e-5, "%s: dx vs the test's formula: %.3g", S,
              norm_err(bad, dx, c.n));
        if (training) {
            memset(bad, 0, sizeof(float) * c.n);
            batchnorm_backward(bad, t1, t2, c.R, c.x, c.gamma, c.mean, c.invstd, B, C, c.HW, 0);
            snprintf(what, sizeof what, "%s dx with batch statistics as constants", S);
            expect_mismatch_floor(what, bad, gx, c.n, xfloor);
            bn_dx_terms(bad, &c, 2);
            snprintf(what, sizeof what, "%s dx without - mean(dy)", S);
            expect_mismatch_floor(what, bad, gx, c.n, xfloor);
            bn_dx_terms(bad, &c, 1);
            snprintf(what, sizeof what, "%s dx without - xhat mean(dy xhat)", S);
            expect_mismatch_floor(what, bad, gx, c.n, xfloor);
        } else {
            memset(bad, 0, sizeof(float) * c.n);
            batchnorm_backward(bad, t1, t2, c.R, c.x, c.gamma, c.mean, c.invstd, B, C, c.HW, 1);
            snprintf(what, sizeof what, "%s dx with the training formula", S);
            expect_mismatch_floor(what, bad, gx, c.n, xfloor);
        }
        gfree(bad), gfree(t1), gfree(t2);
    }

    /* accumulation; din may be NULL */
    float *dx1 = malloc(sizeof(float) * c.n), *dg1 = malloc(sizeof(float) * nc),
          *db1 = malloc(sizeof(float) * nc);
    memcpy(dx1, dx, sizeof(float) * c.n);
    memcpy(dg1, dg, sizeof(float) * nc);
    memcpy(db1, db, sizeof(float) * nc);
    batchnorm_backward(dx, dg, db, c.R, c.x, c.gamma, c.mean, c.invstd, B, C, c.HW, training);
    snprintf(what, sizeof what, "%s dx", S);
    expect_doubled(what, dx, dx1, c.n);
    snprintf(what, sizeof what, "%s dgamma", S);
    expect_doubled(what, dg, dg1, nc);
    snprintf(what, sizeof what, "%s dbeta", S);
    expect_doubled(what, db, db1, nc);
    memset(dg, 0, sizeof(float) * nc);
    memset(db, 0, sizeof(float) * nc);
    batchnorm_backward(NULL, dg, db, c.R, c.x, c.gamma, c.mean, c.invstd, B, C, c.HW, training);
    CHECK(norm_err(dg, dg1, nc) == 0 && norm_err(db, db1, nc) == 0,
          "%s: backward with din = NULL changes dgamma/dbeta", S);
    CHECK(guards_ok(c.x, c.n) && guards_ok(c.out, c.n) && guards_ok(dx, c.n) &&
              guards_ok(dg, nc) && guards_ok(db, nc) && guards_ok(c.rm, nc) &&
              guards_ok(c.rv, nc) && guards_ok(c.mean, nc) && guards_ok(c.invstd, nc),
          "%s wrote outside its buffers", S);

    free(dx1), free(dg1), free(db1), free(gx), free(gg), free(gb);
    gfree(dx), gfree(dg), gfree(db);
    gfree(c.x), gfree(c.R), gfree(c.out), gfree(c.gamma), gfree(c.beta), gfree(c.rm), gfree(c.rv);
    gfree(c.rm0), gfree(c.rv0), gfree(c.mean), gfree(c.invstd);
}

/* batchnorm_relu_forward/backward (the fused kernel the graph runs for a relu that only reads
 * a batch norm) against the two kernels composed: relu(batchnorm(x)) forward, and
 * relu_backward_set then batchnorm_backward(_set) for the gradients, in both modes and with din
 * overwritten or accumulated. The same float operations run in both, so they agree to rounding
 * (1e-6 relative). A fused backward that forgets the relu mask is shown to fail. */
static void check_batchnorm_relu(int B, int C, int HW, int training) {
    char S[64], what[96];
    snprintf(S, sizeof S, "batchnorm+relu %s (%d, %d, %d)", training ? "train" : "eval", B, C, HW);
    const size_t n = (size_t)B * C * HW, nc = (size_t)C;
    nz_rng r;
    nz_rng_seed(&r, 9100u + (unsigned)(B * 100 + C * 10 + training));
    float *x = galloc(n), *g = galloc(n), *y1 = galloc(n), *y2 = galloc(n), *t = galloc(n);
    float *gamma = galloc(nc), *beta = galloc(nc), *rm1 = galloc(nc), *rv1 = galloc(nc);
    float *rm2 = galloc(nc), *rv2 = galloc(nc), *mu1 = galloc(nc), *is1 = galloc(nc);
    float *mu2 = galloc(nc), *is2 = galloc(nc);
    fill_normal(x, n, &r, 1.5f);
    fill_normal(g, n, &r, 1.0f);
    for (size_t c = 0; c < nc; c++) {
        gamma[c] = nz_rng_range(&r, -1.0f, 1.5f), beta[c] = 0.5f * nz_rng_normal(&r);
        rm1[c] = rm2[c] = 0.3f * nz_rng_normal(&r), rv1[c] = rv2[c] = nz_rng_range(&r, 0.5f, 2.0f);
    }
    batchnorm_forward(t, x, gamma, beta, rm1, rv1, mu1, is1, B, C, HW, NZ_BN_MOMENTUM, NZ_BN_EPS,
                      training);
    relu_forward(y1, t, n);
    batchnorm_relu_forward(y2, x, gamma, beta, rm2, rv2, mu2, is2, B, C, HW, NZ_BN_MOMENTUM,
                           NZ_BN_EPS, training);
    CHECK(norm_err(y2, y1, n) == 0 && norm_err(rm2, rm1, nc) == 0 && norm_err(rv2, rv1, nc) == 0,
          "%s: forward differs from batchnorm then relu", S);
    {   /* with a residual input: max(0, bn(x) + skip) in the batch norm's pass, the same bits
         * as the batch norm, then add_relu_forward */
        float *sk = galloc(n), *y3 = galloc(n), *y4 = galloc(n);
        fill_normal(sk, n, &r, 1.0f);
        float *rm3 = galloc(nc), *rv3 = galloc(nc), *mu3 = galloc(nc), *is3 = galloc(nc);
        memcpy(rm3, rm2, sizeof(float) * nc), memcpy(rv3, rv2, sizeof(float) * nc);
        batchnorm_forward(t, x, gamma, beta, rm2, rv2, mu2, is2, B, C, HW, NZ_BN_MOMENTUM,
                          NZ_BN_EPS, training);
        add_relu_forward(y3, t, sk, n);
        batchnorm_forward_pre(y4, x, gamma, beta, rm3, rv3, mu3, is3, B, C, HW, NZ_BN_MOMENTUM,
                              NZ_BN_EPS, training, 0, NULL, sk);
        CHECK(memcmp(y3, y4, sizeof(float) * n) == 0 && memcmp(mu2, mu3, sizeof(float) * nc) == 0,
              "%s: bn + add + relu in one pass differs from the three apart", S);
        memcpy(rm2, rm1, sizeof(float) * nc), memcpy(rv2, rv1, sizeof(float) * nc);
        gfree(sk), gfree(y3), gfree(y4), gfree(rm3), gfree(rv3), gfree(mu3), gfree(is3);
    }
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) pos += y1[i] > 0;
    CHECK(pos > n / 5 && pos < n - n / 5, "%s: test data leaves %zu of %zu outputs positive", S,
          pos, n);
    for (int set = 0; set <= 1; set++) {
        float *dx1 = galloc(n), *dx2 = galloc(n), *dg1 = galloc(nc), *dg2 = galloc(nc);
        float *db1 = galloc(nc), *db2 = galloc(nc);
        fill_normal(dx1, n, &r, 1.0f); /* accumulation starts from the same nonzero values */
        memcpy(dx2, dx1, sizeof(float) * n);
        relu_backward_set(t, g, y1, n);
        (set ? batchnorm_backward_set : batchnorm_backward)(dx1, dg1, db1, t, x, gamma, mu1, is1,
                                                            B, C, HW, training);
        batchnorm_relu_backward(dx2, dg2, db2, g, x, gamma, beta, mu2, is2, B, C, HW, training, 1,
                                set);
        snprintf(what, sizeof what, "%s backward %s", S, set ? "set" : "add");
        CHECK(norm_err(dx2, dx1, n) < 1e-6 && norm_err(dg2, dg1, nc) < 1e-6 &&
                  norm_err(db2, db1, nc) < 1e-6,
              "%s: dx %.3g dgamma %.3g dbeta %.3g vs the composed kernels", what,
              norm_err(dx2, dx1, n), norm_err(dg2, dg1, nc), norm_err(db2, db1, nc));
        /* mutation: the batch norm gradient without the relu mask */
        memset(dg2, 0, sizeof(float) * nc), memset(db2, 0, sizeof(float) * nc);
        batchnorm_backward_set(dx2, dg2, db2, g, x, gamma, mu2, is2, B, C, HW, training);
        CHECK(norm_err(dg2, dg1, nc) > 1e-3, "%s: a missing relu mask goes unnoticed", what);
        gfree(dx1), gfree(dx2), gfree(dg1), gfree(dg2), gfree(db1), gfree(db2);
    }
    CHECK(guards_ok(x, n) && guards_ok(y1, n) && guards_ok(y2, n) && guards_ok(t, n) &&
              guards_ok(rm2, nc) && guards_ok(rv2, nc) && guards_ok(mu2, nc) && guards_ok(is2, nc),
          "%s wrote outside its buffers", S);
    gfree(x), gfree(g), gfree(y1), gfree(y2), gfree(t), gfree(gamma), gfree(beta);
    gfree(rm1), gfree(rv1), gfree(rm2), gfree(rv2), gfree(mu1), gfree(is1), gfree(mu2), gfree(is2);
}

/* A Winograd conv's output sums (conv_dims' out_stats) give a batch norm the same statistics as
 * its own two passes: the outputs, the saved mean and 1/std and the running estimates agree to
 * float rounding, with a bias 100x the outputs' spread (the shift keeps the squares from
 * cancelling) and a partial last block (B = 70). The sums are the same bits at 1 and 2 threads,
 * and the direct kernel (stride 2) says it left them unfilled. */
static void check_conv_bn_stats(void) {
    const int B = 70, C = 16, H = 9, W = 10, K = 24;
    conv_dims d = conv_dims_make(C, H, W, K, 3, 1, 1);
    d.algo = CONV_ALGO_WINOGRAD;
    const size_t nx = (size_t)B * C * H * W, no = (size_t)B * K * H * W, nw = (size_t)K * C * 9;
    nz_rng r;
    nz_rng_seed(&r, 4711);
    float *x = galloc(nx), *Wt = galloc(nw), *b = galloc(K), *y = galloc(no);
    float *st[2] = {galloc((size_t)B * K * 3), galloc((size_t)B * K * 3)};
    fill_normal(x, nx, &r, 1.0f);
    fill_normal(Wt, nw, &r, 0.1f);
    for (int k = 0; k < K; k++) b[k] = (k % 2 ? 100.0f : -3.0f) + nz_rng_normal(&r);
    for (int t = 0; t < 2; t++) {
        nz_set_threads(t + 1);
        d.threads = layers_threads();
        d.out_stats = st[t];
        float *scr = galloc(conv_scratch_per_thread(&d) * (size_t)d.threads);
        CHECK(conv2d_forward(y, x, Wt, b, B, &d, scr) == 1, "winograd conv: out_stats not filled");
        gfree(scr);
    }
    CHECK(memcmp(st[0], st[1], sizeof(float) * (size_t)B * K * 3) == 0,
          "winograd conv: out_stats differ between 1 and 2 threads");
    float *g = galloc(K), *be = galloc(K), *y1 = galloc(no), *y2 = galloc(no);
    float *rm1 = galloc(K), *rv1 = galloc(K), *rm2 = galloc(K), *rv2 = galloc(K);
    float *mu1 = galloc(K), *is1 = galloc(K), *mu2 = galloc(K), *is2 = galloc(K);
    for (int k = 0; k < K; k++) {
        g[k] = nz_rng_range(&r, 0.5f, 1.5f), be[k] = nz_rng_normal(&r);
        rm1[k] = rm2[k] = 0.1f, rv1[k] = rv2[k] = 1.0f;
    }
    for (int relu = 0; relu <= 1; relu++) {
        batchnorm_forward_pre(y1, y, g, be, rm1, rv1, mu1, is1, B, K, H * W, NZ_BN_MOMENTUM,
                              NZ_BN_EPS, 1, relu, NULL, NULL);
        batchnorm_forward_pre(y2, y, g, be, rm2, rv2, mu2, is2, B, K, H * W, NZ_BN_MOMENTUM,
                              NZ_BN_EPS, 1, relu, st[0], NULL);
        const double e = norm_err(y2, y1, no), em = norm_err(mu2, mu1, K),
                     ei = norm_err(is2, is1, K), ev = norm_err(rv2, rv1, K);
        /* outputs: a mean near 100 is known to float rounding (~6e-6), a few 1e-6 of the
         * normalized spread */
        CHECK(e < 1e-5 && em < 1e-6 && ei < 1e-6 && ev < 1e-6 && norm_err(rm2, rm1, K) < 1e-6,
              "batch norm from conv sums (relu %d): out %.3g mean %.3g invstd %.3g run_var %.3g "
              "vs two passes", relu, e, em, ei, ev);
    }
    /* mutation: sums of another batch give other statistics */
    batchnorm_forward_pre(y2, y, g, be, rm2, rv2, mu2, is2, B - 1, K, H * W, NZ_BN_MOMENTUM,
                          NZ_BN_EPS, 1, 0, st[0] + K * 3, NULL);
    CHECK(norm_err(is2, is1, K) > 1e-4, "batch norm ignores the conv sums it is given");
    conv_dims ds = conv_dims_make(C, 2 * H, 2 * W, K, 3, 2, 1);
    ds.algo = CONV_ALGO_DIRECT;
    ds.out_stats = st[1];
    float *scr = galloc(conv_scratch_per_thread(&ds) * (size_t)ds.threads);
    float *ys = galloc((size_t)B * K * ds.OH * ds.OW), *xs = galloc((size_t)B * C * 4 * H * W);
    fill_normal(xs, (size_t)B * C * 4 * H * W, &r, 1.0f);
    CHECK(conv2d_forward(ys, xs, Wt, b, B, &ds, scr) == 0, "direct conv claims out_stats");
    gfree(scr), gfree(ys), gfree(xs);
    gfree(x), gfree(Wt), gfree(b), gfree(y), gfree(st[0]), gfree(st[1]), gfree(g), gfree(be);
    gfree(y1), gfree(y2), gfree(rm1), gfree(rv1), gfree(rm2), gfree(rv2), gfree(mu1), gfree(is1);
    gfree(mu2), gfree(is2);
}

/* ---------------------------------------------------------------- average pool */

/* avgpool_forward/backward: the loss is linear in x, so e = EPS_AFFINE. GAP is the same kernel
 * with the window the whole (non-square) plane and stride 1, as nz_forward calls it. 7x7 with
 * 2x2/2 checks the floor rule (the last row and column get no gradient). */
typedef struct {
    int B, C, H, W, kh, kw, s, OH, OW;
    float *x, *R, *out;
} avg_ctx;

static double avg_loss(void *p) {
    avg_ctx *c = p;
    avgpool_forward(c->out, c->x, c->B, c->C, c->H, c->W, c->kh, c->kw, c->s, c->OH, c->OW);
    return dot_d(c->out, c->R, (size_t)c->B * c->C * c->OH * c->OW);
}

static void check_avgpool(const char *S, int H, int W, int kh, int kw, int s) {
    avg_ctx c = {.B = 2, .C = 3, .H = H, .W = W, .kh = kh, .kw = kw, .s = s};
    c.OH = (H - kh) / s + 1;
    c.OW = (W - kw) / s + 1;
    const size_t nx = (size_t)c.B * c.C * H * W, no = (size_t)c.B * c.C * c.OH * c.OW;
    nz_rng r;
    nz_rng_seed(&r, 8500u + (unsigned)(kh * 100 + kw * 10 + s));
    c.x = galloc(nx), c.R = galloc(no), c.out = galloc(no);
    fill_normal(c.x, nx, &r, 1.0f);
    fill_normal(c.R, no, &r, 1.0f);
    avg_loss(&c);
    double worst = 0;
    for (int p = 0; p < c.B * c.C; p++)
        for (int oh = 0; oh < c.OH; oh++)
            for (int ow = 0; ow < c.OW; ow++) {
                double sum = 0;
                for (int i = 0; i < kh; i++)
                    for (int j = 0; j < kw; j++)
                        sum += c.x[(size_t)p * H * W + (size_t)(oh * s + i) * W + ow * s + j];
                const double y = sum / (kh * kw);
                worst = fmax(worst, fabs(y - c.out[((size_t)p * c.OH + oh) * c.OW + ow]) /
                                        fmax(fabs(y), 1.0));
            }
    CHECK(worst < 1e-6, "%s forward vs the window mean in double: %.3g", S, worst);
    section_record("avgpool forward vs double", worst);
    float *dx = galloc(nx);
    avgpool_backward(dx, c.R, c.B, c.C, H, W, kh, kw, s, c.OH, c.OW);
    double *gx = numeric_grad(c.x, nx, EPS_AFFINE, avg_loss, NULL, &c, NULL);
    expect_match(S, "dx", dx, gx, nx, NULL);
    char what[96];
    snprintf(what, sizeof what, "%s dx", S);
    mutate_scale_one(what, dx, gx, nx);
    {
        float *bad = malloc(sizeof(float) * nx);
        for (size_t i = 0; i < nx; i++) bad[i] = dx[i] * (float)(kh * kw);
        snprintf(what, sizeof what, "%s dx not divided by the window size", S);
        expect_mismatch(what, bad, gx, nx);
        free(bad);
    }
    float *dx1 = malloc(sizeof(float) * nx);
    memcpy(dx1, dx, sizeof(float) * nx);
    avgpool_backward(dx, c.R, c.B, c.C, H, W, kh, kw, s, c.OH, c.OW);
    expect_doubled(S, dx, dx1, nx);
    CHECK(guards_ok(c.out, no) && guards_ok(dx, nx) && guards_ok(c.x, nx),
          "%s wrote outside its buffers", S);
    free(dx1), free(gx);
    gfree(dx), gfree(c.x), gfree(c.R), gfree(c.out);
}

/* ---------------------------------------------------------------- option-A shortcut */

/* shortcut_forward/backward: out = x[:, :, ::s, ::s] with (OC - C) / 2 zero channels before and
 * the rest after. Linear in x: e = EPS_AFFINE. The forward is a copy, so it is checked exactly,
 * padded channels included (the output buffer starts dirty). Odd sizes: 7x7 at stride 2 keeps
 * the last row (ceil, not floor), 5 - 2 = 3 padded channels split 1 / 2. */
typedef struct {
    int B, C, H, W, OC, s, OH, OW;
    float *x, *R, *out;
} sc_ctx;

static double sc_loss(void *p) {
    sc_ctx *c = p;
    shortcut_forward(c->out, c->x, c->B, c->C, c->H, c->W, c->OC, c->s, c->OH, c->OW);
    return dot_d(c->out, c->R, (size_t)c->B * c->OC * c->OH * c->OW);
}

/* dx of the shortcut computed in the test, with the channel offset lo */
static void sc_dx(float *dx, const sc_ctx *c, int lo) {
    memset(dx, 0, sizeof(float) * (size_t)c->B * c->C * c->H * c->W);
    for (int b = 0; b < c->B; b++)
        for (int ch = 0; ch < c->C; ch++) {
            const int oc = ch + lo;
            if (oc < 0 || oc >= c->OC) continue;
            for (int oh = 0; oh < c->OH; oh++)
                for (int ow = 0; ow < c->OW; ow++)
                    dx[(((size_t)b * c->C + ch) * c->H + oh * c->s) * c->W + ow * c->s] +=
                        c->R[(((size_t)b * c->OC + oc) * c->OH + oh) * c->OW + ow];
        }
}

static void check_shortcut(int C, int OC, int H, int W, int s) {
    char S[64];
    snprintf(S, sizeof S, "shortcut %d->%d s%d %dx%d", C, OC, s, H, W);
    sc_ctx c = {.B = 2, .C = C, .H = H, .W = W, .OC = OC, .s = s};
    c.OH = (H - 1) / s + 1;
    c.OW = (W - 1) / s + 1;
    const size_t nx = (size_t)c.B * C * H * W, no = (size_t)c.B * OC * c.OH * c.OW;
    const int lo = (OC - C) / 2;
    nz_rng r;
    nz_rng_seed(&r, 8700u + (unsigned)(C * 100 + OC * 10 + s));
    c.x = galloc(nx), c.R = galloc(no), c.out = galloc(no);
    fill_normal(c.x, nx, &r, 1.0f);
    fill_normal(c.R, no, &r, 1.0f);
    for (size_t i = 0; i < no; i++) c.out[i] = 7.0f;
    sc_loss(&c);
    int exact = 1;
    for (int b = 0; b < c.B; b++)
        for (int oc = 0; oc < OC; oc++)
            for (int oh = 0; oh < c.OH; oh++)
                for (int ow = 0; ow < c.OW; ow++) {
                    const int ch = oc - lo;
                    const float want =
                        ch < 0 || ch >= C
                            ? 0.0f
                            : c.x[(((size_t)b * C + ch) * H + oh * s) * W + ow * s];
                    exact &= c.out[(((size_t)b * OC + oc) * c.OH + oh) * c.OW + ow] == want;
                }
    CHECK(exact, "%s forward is not x[:, :, ::%d, ::%d] padded with %d zero channels before", S,
          s, s, lo);
    float *dx = galloc(nx), *ref = galloc(nx);
    shortcut_backward(dx, c.R, c.B, C, H, W, OC, s, c.OH, c.OW);
    sc_dx(ref, &c, lo);
    CHECK(memcmp(dx, ref, sizeof(float) * nx) == 0, "%s backward is not the exact scatter", S);
    double *gx = numeric_grad(c.x, nx, EPS_AFFINE, sc_loss, NULL, &c, NULL);
    expect_match(S, "dx", dx, gx, nx, NULL);
    char what[160];
    snprintf(what, sizeof what, "%s dx", S);
    mutate_scale_one(what, dx, gx, nx);
    if (OC > C) {
        sc_dx(ref, &c, lo == 0 ? 1 : 0);
        snprintf(what, sizeof what, "%s dx read from channel offset %d (not %d)", S,
                 lo == 0 ? 1 : 0, lo);
        expect_mismatch(what, ref, gx, nx);
    }
    {
        /* a sampled pixel's gradient routed to its right-hand neighbour */
        float *bad = malloc(sizeof(float) * nx);
        memcpy(bad, dx, sizeof(float) * nx);
        bad[1] = bad[0];
        bad[0] = 0.0f;
        snprintf(what, sizeof what, "%s dx routed to a neighbour", S);
        expect_mismatch(what, bad, gx, nx);
        free(bad);
    }
    float *dx1 = malloc(sizeof(float) * nx);
    memcpy(dx1, dx, sizeof(float) * nx);
    shortcut_backward(dx, c.R, c.B, C, H, W, OC, s, c.OH, c.OW);
    expect_doubled(S, dx, dx1, nx);
    CHECK(guards_ok(c.out, no) && guards_ok(dx, nx) && guards_ok(c.x, nx),
          "%s wrote outside its buffers", S);
    free(dx1), free(gx);
    gfree(dx), gfree(ref), gfree(c.x), gfree(c.R), gfree(c.out);
}

/* ---------------------------------------------------------------- select */

/* select_forward/backward: y[b][k] = x[b][index[k]]. A copy: the forward is checked exactly;
 * the backward adds into dx (features not selected get nothing) and is checked by finite
 * differences. */
typedef struct {
    int B, F, K;
    const float *ix;
    float *x, *R, *out;
} sel_ctx;

static double sel_loss(void *p) {
    sel_ctx *c = p;
    select_forward(c->out, c->x, c->ix, c->B, c->F, c->K);
    return dot_d(c->out, c->R, (size_t)c->B * c->K);
}

static void check_select(int F, int K) {
    char S[64];
    snprintf(S, sizeof S, "select %d of %d", K, F);
    nz_rng r;
    nz_rng_seed(&r, 9100u + (unsigned)(F * 10 + K));
    float *ix = malloc(sizeof(float) * (size_t)K);
    for (int k = 0, j = 0; k < K; j++) /* increasing, every feature kept with chance K/F */
        if (F - j == K - k || nz_rng_range(&r, 0.0f, 1.0f) < (float)K / (float)F) ix[k++] = (float)j;
    sel_ctx c = {.B = 3, .F = F, .K = K, .ix = ix};
    const size_t nx = (size_t)c.B * F, no = (size_t)c.B * K;
    c.x = galloc(nx), c.R = galloc(no), c.out = galloc(no);
    fill_normal(c.x, nx, &r, 1.0f);
    fill_normal(c.R, no, &r, 1.0f);
    sel_loss(&c);
    int exact = 1;
    for (int b = 0; b < c.B; b++)
        for (int k = 0; k < K; k++)
            exact &= c.out[(size_t)b * K + k] == c.x[(size_t)b * F + (size_t)ix[k]];
    CHECK(exact, "%s forward is not x[:, index]", S);
    float *dx = galloc(nx);
    memset(dx, 0, sizeof(float) * nx);
    select_backward(dx, c.R, ix, c.B, F, K);
    double *gx = numeric_grad(c.x, nx, EPS_AFFINE, sel_loss, NULL, &c, NULL);
    expect_match(S, "dx", dx, gx, nx, NULL);
    char what[160];
    snprintf(what, sizeof what, "%s dx", S);
    mutate_scale_one(what, dx, gx, nx);
    float *dx1 = malloc(sizeof(float) * nx);
    memcpy(dx1, dx, sizeof(float) * nx);
    select_backward(dx, c.R, ix, c.B, F, K);
    expect_doubled(S, dx, dx1, nx);
    CHECK(guards_ok(c.out, no) && guards_ok(dx, nx) && guards_ok(c.x, nx),
          "%s wrote outside its buffers", S);
    free(dx1), free(gx), free(ix);
    gfree(dx), gfree(c.x), gfree(c.R), gfree(c.out);
}

/* ---------------------------------------------------------------- add */

typedef struct {
    size_t n;
    float *a, *b, *R, *out;
} add_ctx;

static double add_loss(void *p) {
    add_ctx *c = p;
    add_forward(c->out, c->a, c->b, c->n);
    return dot_d(c->out, c->R, c->n);
}

static void check_add(void) {
    const char *S = "add";
    add_ctx c = {.n = 150};
    nz_rng r;
    nz_rng_seed(&r, 8900);
    c.a = galloc(c.n), c.b = galloc(c.n), c.R = galloc(c.n), c.out = galloc(c.n);
    fill_normal(c.a, c.n, &r, 1.0f);
    fill_normal(c.b, c.n, &r, 1.0f);
    fill_normal(c.R, c.n, &r, 1.0f);
    add_loss(&c);
    int ok = 1;
    for (size_t i = 0; i < c.n; i++) ok &= c.out[i] == c.a[i] + c.b[i];
    CHECK(ok, "add forward is not a + b");
    float *da = galloc(c.n), *db = galloc(c.n);
    add_backward(da, c.R, c.n);
    add_backward(db, c.R, c.n);
    double *ga = numeric_grad(c.a, c.n, EPS_AFFINE, add_loss, NULL, &c, NULL);
    double *gb = numeric_grad(c.b, c.n, EPS_AFFINE, add_loss, NULL, &c, NULL);
    expect_match(S, "da", da, ga, c.n, NULL);
    expect_match(S, "db", db, gb, c.n, NULL);
    mutate_scale_one("add da", da, ga, c.n);
    float *da1 = malloc(sizeof(float) * c.n);
    memcpy(da1, da, sizeof(float) * c.n);
    add_backward(da, c.R, c.n);
    expect_doubled(S, da, da1, c.n);
    CHECK(guards_ok(c.out, c.n) && guards_ok(da, c.n) && guards_ok(db, c.n),
          "add wrote outside its buffers");
    free(da1), free(ga), free(gb);
    gfree(da), gfree(db), gfree(c.a), gfree(c.b), gfree(c.R), gfree(c.out);
}

/* The OpenMP paths of the new kernels (sizes past their parallel thresholds): bit-identical at
 * 1 and 2 threads (every channel / plane / element is computed alone) and equal to the
 * definitions in double. */
static void check_new_kernels_threaded(void) {
    const char *S = "bn/avgpool/shortcut/add threaded";
    const int B = 5, C = 16, H = 32, W = 32, HW = H * W;
    const size_t n = (size_t)B * C * HW;
    nz_rng r;
    nz_rng_seed(&r, 9100);
    float *x = galloc(n), *g = galloc(n), *gamma = galloc(C), *beta = galloc(C);
    fill_normal(x, n, &r, 1.5f);
    fill_normal(g, n, &r, 1.0f);
    for (int c = 0; c < C; c++) gamma[c] = nz_rng_range(&r, 0.5f, 1.5f), beta[c] = nz_rng_normal(&r);
    for (size_t i = 0; i < n; i++) x[i] += (float)(i / HW % C) * 0.25f; /* channel means */
    /* outputs at 1 and 2 threads: bn out, dx, dgamma, dbeta; avg out, dx; sc out, dx; add */
    const int OH = H / 2, OW = W / 2, OC = 64; /* B OC OH OW > 65536 */
    const size_t nav = (size_t)B * C * OH * OW, nsc = (size_t)B * OC * OH * OW;
    float *o[2][9];
    for (int t = 0; t < 2; t++) {
        nz_set_threads(t + 1);
        float *rm = galloc(C), *rv = galloc(C), *mu = galloc(C), *is = galloc(C);
        for (int c = 0; c < C; c++) rv[c] = 1.0f;
        o[t][0] = galloc(n), o[t][1] = galloc(n), o[t][2] = galloc(C), o[t][3] = galloc(C);
        batchnorm_forward(o[t][0], x, gamma, beta, rm, rv, mu, is, B, C, HW, NZ_BN_MOMENTUM,
                          NZ_BN_EPS, 1);
        batchnorm_backward(o[t][1], o[t][2], o[t][3], g, x, gamma, mu, is, B, C, HW, 1);
        o[t][4] = galloc(nav), o[t][5] = galloc(n);
        avgpool_forward(o[t][4], x, B, C, H, W, 2, 2, 2, OH, OW);
        avgpool_backward(o[t][5], g, B, C, H, W, 2, 2, 2, OH, OW);
        o[t][6] = galloc(nsc), o[t][7] = galloc(n);
        shortcut_forward(o[t][6], x, B, C, H, W, OC, 2, OH, OW);
        shortcut_backward(o[t][7], g, B, C, H, W, OC, 2, OH, OW); /* g as (B, 64, 16, 16) */
        o[t][8] = galloc(n);
        add_forward(o[t][8], x, g, n);
        add_backward(o[t][8], g, n);
        gfree(rm), gfree(rv), gfree(mu), gfree(is);
    }
    nz_set_threads(2);
    const size_t sizes[9] = {n, n, (size_t)C, (size_t)C, nav, n, nsc, n, n};
    int same = 1, guards = 1;
    for (int k = 0; k < 9; k++) {
        same &= memcmp(o[0][k], o[1][k], sizeof(float) * sizes[k]) == 0;
        guards &= guards_ok(o[0][k], sizes[k]) && guards_ok(o[1][k], sizes[k]);
    }
    CHECK(same, "%s: 1 and 2 threads differ", S);
    CHECK(guards, "%s: wrote outside its buffers", S);
    /* against double: bn out and dx, avgpool, shortcut, add */
    double *m = malloc(sizeof(double) * C), *v = malloc(sizeof(double) * C);
    bn_stats_d(x, B, C, HW, m, v);
    const double N = (double)B * HW;
    double ebn = 0, edx = 0, eav = 0;
    for (int c = 0; c < C; c++) {
        const double is = 1.0 / sqrt(v[c] + NZ_BN_EPS);
        double sdy = 0, sdyx = 0, dxmax = 0, dxerr = 0;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < HW; i++) {
                const size_t j = ((size_t)b * C + c) * HW + i;
                const double xh = (x[j] - m[c]) * is;
                ebn = fmax(ebn, fabs(gamma[c] * xh + beta[c] - o[1][0][j]) /
                                    fmax(fabs(gamma[c] * xh + beta[c]), 1.0));
                sdy += g[j];
                sdyx += g[j] * xh;
            }
        for (int b = 0; b < B; b++)
            for (int i = 0; i < HW; i++) {
                const size_t j = ((size_t)b * C + c) * HW + i;
                const double xh = (x[j] - m[c]) * is;
                const double d = gamma[c] * is * (g[j] - sdy / N - xh * sdyx / N);
                dxmax = fmax(dxmax, fabs(d));
                dxerr = fmax(dxerr, fabs(d - o[1][1][j]));
            }
        edx = fmax(edx, dxerr / dxmax);
    }
    for (size_t p = 0; p < (size_t)B * C; p++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                const float *q = x + p * HW + (size_t)(2 * oh) * W + 2 * ow;
                const double y = ((double)q[0] + q[1] + q[W] + q[W + 1]) / 4;
                eav = fmax(eav, fabs(y - o[1][4][(p * OH + oh) * OW + ow]) / fmax(fabs(y), 1.0));
            }
    int sc_ok = 1, add_ok = 1;
    for (int b = 0; b < B; b++)
        for (int oc = 0; oc < OC; oc++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    const int c = oc - (OC - C) / 2;
                    const float want =
                        c < 0 || c >= C ? 0.0f : x[(((size_t)b * C + c) * H + 2 * oh) * W + 2 * ow];
                    sc_ok &= o[1][6][(((size_t)b * OC + oc) * OH + oh) * OW + ow] == want;
                }
    for (size_t i = 0; i < n; i++) add_ok &= o[1][8][i] == (x[i] + g[i]) + g[i];
    CHECK(ebn < 1e-5 && edx < 1e-5, "%s: batchnorm out %.3g, dx %.3g vs double", S, ebn, edx);
    CHECK(eav < 1e-6, "%s: avgpool vs double %.3g", S, eav);
    CHECK(sc_ok, "%s: shortcut forward not exact", S);
    CHECK(add_ok, "%s: add forward/backward not exact", S);
    section_record("bn/avgpool threaded vs double", fmax(fmax(ebn, edx), eav));
    free(m), free(v);
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < 9; k++) gfree(o[t][k]);
    gfree(x), gfree(g), gfree(gamma), gfree(beta);
}

/* ---------------------------------------------------------------- a residual model */

/* A tiny CIFAR-style ResNet through nz_forward / nz_backward:
 *   stem: conv 2->4 -> bn -> relu
 *   b1:   conv -> bn -> relu -> conv -> bn, add(., stem), relu         (identity shortcut)
 *   b2:   conv 4->8 s2 -> bn -> relu -> conv -> bn, add(., shortcut(b1, 8, s2)), relu
 *   gap -> flatten -> fc (5 classes)
 * on (2, 7, 7) inputs (odd: the strided conv and the shortcut must agree on 4x4).
 * Strict check as for the plain model (relu branches frozen, 5-point differences of the double
 * cross-entropy of the frozen function, which reproduces nz_forward bit for bit), with two
 * differences in training mode, where the function is no longer affine in a parameter (batch
 * norm divides by the batch's standard deviation):
 *  - the step: one conv weight moves a whole channel whose pre-BN spread is ~0.3 here, so
 *    e = 1/8 is a large fraction of the function's scale (errors ~0.1-0.5 over 12 seeds), 1/32
 *    still loses to truncation (up to 4e-2), 1/128 to rounding; e = EPS_BN_MODEL = 1/64.
 *  - the floor: the rounding of the BN kernels' float coefficients (see the batch norm
 *    section) makes the frozen loss noisy at ~1e-7, ~6e-6 in a difference at e = 1/64, so the
 *    floor is FLOOR_BN: over 12 seeds the worst error is then 6e-4 (4e-3 at the 1e-3 floor),
 *    with 60-75% of the elements above the floor, compared relatively.
 * Eval mode is affine in each parameter again (e = EPS_MODEL, the 1e-3 floor); its running
 * statistics are calibrated as a trained model's would be (one training forward with momentum 1
 * on a copy, then perturbed by ~10%), so activations keep their scale through the layers.
 * Parameter tensors only: the running statistics (buffers) must get an exactly zero gradient.
 * Conv biases in front of a training-mode BN have an exactly zero true gradient (the mean
 * subtraction cancels them); both sides are rounding noise there and the floor covers it.
 * Literal check through nz_forward and nz_softmax_xent as for the plain model; in training mode
 * most steps cross a relu kink somewhere (a weight moves its channel's whole BN output), so at
 * least a quarter of the parameters must be clear of kinks there.
 * Mutations: generic ones, plus the batch-norm backward with its batch statistics treated as
 * constants (the two mean-gradient terms dropped), obtained from the library itself: the same
 * model in eval mode with its running statistics set to each BN's batch mean and biased variance
 * computes the same logits, and its backward is exactly that wrong gradient; it must be caught
 * on the convs in front of a BN (their biases included: zero true gradient, not zero there). */
#define EPS_BN_MODEL (1.0f / 64)

static int build_resnet_tiny(nz_model *m) {
    nz_error err;
    if (nz_model_init(m, "gradcheck-resnet", (nz_shape){2, 7, 7}, 5, &err)) return -1;
    int x = nz_model_add_conv2d(m, "stem_conv", 0, 4, 3, 1, 1, &err), stem, b1, y, sc;
    if (x >= 0) x = nz_model_add_batchnorm(m, "stem_bn", x, &err);
    if (x >= 0) x = nz_model_add_relu(m, "stem_relu", x, &err);
    stem = x;
    if (x >= 0) x = nz_model_add_conv2d(m, "b1a_conv", x, 4, 3, 1, 1, &err);
    if (x >= 0) x = nz_model_add_batchnorm(m, "b1a_bn", x, &err);
    if (x >= 0) x = nz_model_add_relu(m, "b1a_relu", x, &err);
    if (x >= 0) x = nz_model_add_conv2d(m, "b1b_conv", x, 4, 3, 1, 1, &err);
    if (x >= 0) x = nz_model_add_batchnorm(m, "b1b_bn", x, &err);
    if (x >= 0) x = nz_model_add_add(m, "b1_add", x, stem, &err);
    if (x >= 0) x = nz_model_add_relu(m, "b1_relu", x, &err);
    b1 = x;
    if (x >= 0) x = nz_model_add_conv2d(m, "b2a_conv", x, 8, 3, 2, 1, &err);
    if (x >= 0) x = nz_model_add_batchnorm(m, "b2a_bn", x, &err);
    if (x >= 0) x = nz_model_add_relu(m, "b2a_relu", x, &err);
    if (x >= 0) x = nz_model_add_conv2d(m, "b2b_conv", x, 8, 3, 1, 1, &err);
    y = x >= 0 ? nz_model_add_batchnorm(m, "b2b_bn", x, &err) : -1;
    sc = y >= 0 ? nz_model_add_shortcut(m, "b2_short", b1, 8, 2, &err) : -1;
    x = sc >= 0 ? nz_model_add_add(m, "b2_add", y, sc, &err) : -1;
    if (x >= 0) x = nz_model_add_relu(m, "b2_relu", x, &err);
    if (x >= 0) x = nz_model_add_gap(m, "gap", x, &err);
    if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, &err);
    if (x >= 0) x = nz_model_add_dense(m, "fc", x, 5, &err);
    if (x < 0 || nz_model_validate(m, &err) != NZ_OK) {
        fprintf(stderr, "build_resnet_tiny: %s\n", err.msg);
        nz_model_free(m);
        return -1;
    }
    return 0;
}

/* Kaiming-uniform convs and fc, then random BN affine parameters and running statistics. */
static void init_resnet_params(nz_model *m, nz_rng *r) {
    nz_model_init_params(m, r);
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        if (n->op != NZ_OP_BATCHNORM) continue;
        float *P = m->params;
        for (int c = 0; c < n->out.c; c++) {
            P[n->params[0].off + c] = nz_rng_range(r, 0.5f, 1.5f);
            P[n->params[1].off + c] = 0.3f * nz_rng_normal(r);
            P[n->params[2].off + c] = 0.2f * nz_rng_normal(r);
            P[n->params[3].off + c] = nz_rng_range(r, 0.5f, 1.5f);
        }
    }
}

/* Running statistics as after training: every BN's batch statistics on x (one training forward
 * of a copy with momentum 1), the mean moved by ~0.1 standard deviation and the variance scaled
 * by 0.8..1.25. */
static void calibrate_bn(nz_model *m, const float *x, int B, nz_rng *r) {
    nz_model c;
    nz_error err;
    if (nz_model_copy(&c, m, &err) != NZ_OK) return;
    for (int i = 1; i < c.n_nodes; i++)
        if (c.nodes[i].op == NZ_OP_BATCHNORM) c.nodes[i].p = 1.0f;
    nz_ws *ws = nz_ws_new(&c, B, &err);
    if (ws) {
        nz_forward(&c, ws, x, B, 1, NULL);
        for (int i = 1; i < m->n_nodes; i++) {
            const nz_node *n = &m->nodes[i];
            if (n->op != NZ_OP_BATCHNORM) continue;
            for (int ch = 0; ch < n->out.c; ch++) {
                const float v = c.params[n->params[3].off + ch];
                m->params[n->params[2].off + ch] =
                    c.params[n->params[2].off + ch] + 0.1f * sqrtf(v) * nz_rng_normal(r);
                m->params[n->params[3].off + ch] = v * nz_rng_range(r, 0.8f, 1.25f);
            }
        }
        nz_ws_free(ws);
    }
    nz_model_free(&c);
}

static const char *slot_name(const nz_node *n, int k) {
    static const char *const wb[] = {"W", "b"}, *const bn[] = {"gamma", "beta", "running_mean",
                                                               "running_var"};
    return n->op == NZ_OP_BATCHNORM ? bn[k] : wb[k];
}

/* The same point in eval mode with every BN's running statistics set to its batch mean and
 * biased variance (from ws's training forward): same logits, and its backward is the gradient
 * with the batch statistics taken as constants. Returns that gradient (malloc'd) or NULL. */
static float *bn_constant_stats_grad(const nz_model *m, const nz_ws *ws, const float *x,
                                     const uint8_t *y, int B, const float *z_train) {
    nz_model m2;
    nz_error err;
    if (nz_model_copy(&m2, m, &err) != NZ_OK) return NULL;
    for (int i = 1; i < m2.n_nodes; i++) {
        const nz_node *n = &m2.nodes[i];
        if (n->op != NZ_OP_BATCHNORM) continue;
        const nz_shape s = m2.nodes[n->inputs[0]].out;
        double mean[64], var[64];
        if (s.c > 64) continue;
        bn_stats_d(nz_ws_act(ws, n->inputs[0]), B, s.c, s.h * s.w, mean, var);
        for (int c = 0; c < s.c; c++) {
            m2.params[n->params[2].off + c] = (float)mean[c];
            m2.params[n->params[3].off + c] = (float)var[c];
        }
    }
    nz_ws *w2 = nz_ws_new(&m2, B, &err);
    float *g = NULL;
    if (w2) {
        const size_t nl = (size_t)B * m2.n_classes;
        const float *z = nz_forward(&m2, w2, x, B, 0, NULL);
        const double e = norm_err(z, z_train, nl);
        CHECK(e < 1e-5, "eval mode with running stats = batch stats: logits differ by %.3g", e);
        float *dl = malloc(sizeof(float) * nl);
        nz_softmax_xent(z, y, B, m2.n_classes, dl, NULL);
        nz_ws_zero_grads(w2);
        nz_backward(&m2, w2, dl, B);
        g = malloc(sizeof(float) * m2.n_params);
        memcpy(g, nz_ws_grads(w2), sizeof(float) * m2.n_params);
        free(dl);
        nz_ws_free(w2);
    }
    nz_model_free(&m2);
    return g;
}

static void check_resnet_model(const char *S, int training, int threads, uint64_t seed) {
    nz_set_threads(threads);
    nz_model m;
    if (build_resnet_tiny(&m) != 0) {
        CHECK(0, "%s: cannot build the model", S);
        return;
    }
    nz_error err;
    nz_rng r;
    nz_rng_seed(&r, seed);
    init_resnet_params(&m, &r);
    const int B = 3;
    const size_t nx = (size_t)B * nz_shape_size(m.in), nl = (size_t)B * m.n_classes;
    float *x = galloc(nx), *dlogits = galloc(nl);
    uint8_t y[3];
    fill_normal(x, nx, &r, 1.0f);
    for (int b = 0; b < B; b++) y[b] = (uint8_t)nz_rng_below(&r, (uint64_t)m.n_classes);
    if (!training) calibrate_bn(&m, x, B, &r);
    const double floor_ = training ? FLOOR_BN : GC_FLOOR;
    nz_ws *ws = nz_ws_new(&m, B, &err);
    frozen_ctx fz = {.m = &m, .x = x, .y = y, .B = B, .training = training, .seed = 99};
    if (!ws || frozen_init(&fz) != 0) {
        CHECK(0, "%s: out of memory", S);
        nz_ws_free(ws);
        nz_model_free(&m);
        gfree(x), gfree(dlogits);
        return;
    }
    model_ctx c = {.m = &m, .ws = ws, .x = x, .y = y, .B = B, .training = training, .seed = 99};
    float *ana = malloc(sizeof(float) * m.n_params), *constant_stats = NULL;
    {
        const float *z = nz_forward(&m, ws, x, B, training, NULL);
        nz_softmax_xent(z, y, B, m.n_classes, dlogits, NULL);
        nz_ws_zero_grads(ws);
        nz_backward(&m, ws, dlogits, B);
        memcpy(ana, nz_ws_grads(ws), sizeof(float) * m.n_params);
        const float *zf = frozen_forward(&fz, 1);
        CHECK(memcmp(z, zf, sizeof(float) * nl) == 0,
              "%s: layer-by-layer forward differs from nz_forward (norm err %.3g)", S,
              norm_err(zf, z, nl));
        if (training) constant_stats = bn_constant_stats_grad(&m, ws, x, y, B, z);
    }
    nz_set_threads(1);

    /* 1. strict, per trainable tensor; buffers get exactly zero */
    double *num = calloc(m.n_params, sizeof(double));
    int buffers_zero = 1;
    for (int i = 1; i < m.n_nodes; i++) {
        const nz_node *n = &m.nodes[i];
        for (int k = 0; k < n->n_params; k++) {
            const nz_param *pp = &n->params[k];
            if (nz_param_is_buffer(n, k)) {
                for (size_t j = 0; j < pp->n; j++) buffers_zero &= ana[pp->off + j] == 0.0f;
                continue;
            }
            double *g = numeric_grad5(m.params + pp->off, pp->n, training ? EPS_BN_MODEL
                                                                          : EPS_MODEL,
                                      frozen_loss, &fz);
            memcpy(num + pp->off, g, sizeof(double) * pp->n);
            free(g);
            char what[64];
            snprintf(what, sizeof what, "%s.%s", n->name, slot_name(n, k));
            report_match(S, what, ana + pp->off, num + pp->off,
                         grad_compare_floor(ana + pp->off, num + pp->off, pp->n, NULL, floor_));
        }
    }
    CHECK(buffers_zero, "%s: running statistics received a gradient", S);
    {
        char label[128];
        static const struct {
            const char *node;
            int k;
        } scaled[] = {{"stem_conv", 0}, {"b1a_bn", 0}, {"b2b_bn", 1}, {"b2a_conv", 0}};
        for (size_t j = 0; j < sizeof scaled / sizeof scaled[0]; j++) {
            const nz_param *p = model_param(&m, scaled[j].node, scaled[j].k);
            const nz_node *nd = &m.nodes[0];
            for (int i = 1; i < m.n_nodes; i++)
                if (strcmp(m.nodes[i].name, scaled[j].node) == 0) nd = &m.nodes[i];
            snprintf(label, sizeof label, "%s %s.%s", S, scaled[j].node, slot_name(nd, scaled[j].k));
            if (p) mutate_scale_one_floor(label, ana + p->off, num + p->off, p->n, floor_);
        }
        const nz_param *fb = model_param(&m, "fc", 1);
        snprintf(label, sizeof label, "%s fc.b", S);
        if (fb) {
            float *zero = calloc(fb->n, sizeof(float));
            snprintf(label, sizeof label, "%s fc.b dropped", S);
            expect_mismatch_floor(label, zero, num + fb->off, fb->n, floor_);
            free(zero);
        }
        if (training) {
            CHECK(constant_stats != NULL, "%s: the constant-statistics gradient failed", S);
            static const char *const nodes[] = {"stem_conv", "b1a_conv", "b2a_conv"};
            for (size_t j = 0; constant_stats && j < 3; j++)
                for (int k = 0; k < 2; k++) {
                    const nz_param *p = model_param(&m, nodes[j], k);
                    if (!p) continue;
                    snprintf(label, sizeof label, "%s %s.%s with BN batch stats as constants", S,
                             nodes[j], k ? "b" : "W");
                    expect_mismatch_floor(label, constant_stats + p->off, num + p->off, p->n,
                                          floor_);
                }
        }
    }

    /* 2. literal: nz_forward + nz_softmax_xent where no step crosses a relu kink */
    {
        model_loss(&c);
        c.pattern0 = c.pattern;
        unsigned char *skip = calloc(m.n_params, 1);
        double *num2 = calloc(m.n_params, sizeof(double));
        for (int i = 1; i < m.n_nodes; i++) {
            const nz_node *n = &m.nodes[i];
            for (int k = 0; k < n->n_params; k++) {
                const nz_param *pp = &n->params[k];
                if (nz_param_is_buffer(n, k)) {
                    memset(skip + pp->off, 1, pp->n);
                    continue;
                }
                double *g = numeric_grad(m.params + pp->off, pp->n, EPS_MODEL_FWD, model_loss,
                                         model_kink, &c, skip + pp->off);
                memcpy(num2 + pp->off, g, sizeof(double) * pp->n);
                free(g);
            }
        }
        gc_report rep = grad_compare_floor(ana, num2, m.n_params, skip, FLOOR_FLOAT_LOSS);
        char sec[80];
        snprintf(sec, sizeof sec, "%s via nz_forward", S);
        report_match(sec, "all params", ana, num2, rep);
        size_t n_buf = 0;
        for (int i = 1; i < m.n_nodes; i++)
            for (int k = 0; k < m.nodes[i].n_params; k++)
                if (nz_param_is_buffer(&m.nodes[i], k)) n_buf += m.nodes[i].params[k].n;
        const size_t trainable = m.n_params - n_buf;
        printf("  %s: %zu trainable params (+%zu buffer values), all checked with frozen "
               "branches; %zu also through nz_forward (the rest cross a relu kink at e = %g)\n",
               S, trainable, n_buf, rep.n_compared, (double)EPS_MODEL_FWD);
        CHECK(rep.n_compared * 4 >= trainable, "%s: only %zu of %zu parameters clear of kinks",
              sec, rep.n_compared, trainable);
        free(num2), free(skip);
    }

    /* accumulation: two backward passes double every parameter gradient */
    nz_set_threads(threads);
    nz_forward(&m, ws, x, B, training, NULL);
    nz_backward(&m, ws, dlogits, B);
    expect_doubled(S, nz_ws_grads(ws), ana, m.n_params);
    CHECK(guards_ok(x, nx) && guards_ok(dlogits, nl), "%s wrote outside its buffers", S);

    free(ana), free(num), free(constant_stats);
    gfree(x), gfree(dlogits);
    frozen_free(&fz);
    nz_ws_free(ws);
    nz_model_free(&m);
}

/* An add node passes the gradient to both its inputs. Two conv branches of the input with
 * identical weights feed add(convA, convB) -> flatten -> fc: both convs must get the same,
 * non-zero gradient, bit for bit. add(x, x) (one node as both inputs) must give x twice the
 * gradient: the model fc(flatten(add(c, c))) against fc'(flatten(c)) with fc'.W = 2 fc.W has
 * bit-identical conv gradients, and fc.W's gradient is twice fc'.W's (all scalings by 2 are
 * exact in float). An add whose second input is the data node runs (the data gets none). */
static void check_add_inputs(void) {
    const char *S = "add in the graph";
    nz_error err;
    nz_model m, dup, ref, dat;
    int ok = nz_model_init(&m, "two-branch", (nz_shape){2, 5, 5}, 3, &err) == NZ_OK;
    int a = ok ? nz_model_add_conv2d(&m, "convA", 0, 2, 3, 1, 1, &err) : -1;
    int b = a >= 0 ? nz_model_add_conv2d(&m, "convB", 0, 2, 3, 1, 1, &err) : -1;
    int x = b >= 0 ? nz_model_add_add(&m, "add", a, b, &err) : -1;
    if (x >= 0) x = nz_model_add_flatten(&m, "flatten", x, &err);
    if (x >= 0) x = nz_model_add_dense(&m, "fc", x, 3, &err);
    ok = x >= 0 && nz_model_init(&dup, "dup", (nz_shape){2, 5, 5}, 3, &err) == NZ_OK;
    x = ok ? nz_model_add_conv2d(&dup, "conv", 0, 2, 3, 1, 1, &err) : -1;
    if (x >= 0) x = nz_model_add_add(&dup, "add", x, x, &err);
    if (x >= 0) x = nz_model_add_flatten(&dup, "flatten", x, &err);
    if (x >= 0) x = nz_model_add_dense(&dup, "fc", x, 3, &err);
    ok = x >= 0 && nz_model_init(&ref, "ref", (nz_shape){2, 5, 5}, 3, &err) == NZ_OK;
    x = ok ? nz_model_add_conv2d(&ref, "conv", 0, 2, 3, 1, 1, &err) : -1;
    if (x >= 0) x = nz_model_add_flatten(&ref, "flatten", x, &err);
    if (x >= 0) x = nz_model_add_dense(&ref, "fc", x, 3, &err);
    ok = x >= 0 && nz_model_init(&dat, "data", (nz_shape){2, 5, 5}, 3, &err) == NZ_OK;
    x = ok ? nz_model_add_conv2d(&dat, "conv", 0, 2, 3, 1, 1, &err) : -1;
    if (x >= 0) x = nz_model_add_add(&dat, "add", x, 0, &err);
    if (x >= 0) x = nz_model_add_flatten(&dat, "flatten", x, &err);
    if (x >= 0) x = nz_model_add_dense(&dat, "fc", x, 3, &err);
    if (x < 0) {
        CHECK(0, "%s: cannot build the models: %s", S, err.msg);
        return;
    }
    nz_rng r;
    nz_rng_seed(&r, 9300);
    nz_model_init_params(&m, &r);
    const nz_param *wa = model_param(&m, "convA", 0), *wb = model_param(&m, "convB", 0),
                   *fc = model_param(&m, "fc", 0);
    /* convB = convA; dup, ref and dat take convA and fc (ref: 2 fc.W) */
    memcpy(m.params + wb->off, m.params + wa->off, sizeof(float) * (wa->n + m.nodes[1].params[1].n));
    nz_model *others[3] = {&dup, &ref, &dat};
    for (int k = 0; k < 3; k++) {
        nz_model *o = others[k];
        const nz_param *oc = model_param(o, "conv", 0), *of = model_param(o, "fc", 0);
        memcpy(o->params + oc->off, m.params + wa->off, sizeof(float) * (wa->n + 2));
        memcpy(o->params + of->off, m.params + fc->off, sizeof(float) * (fc->n + 3));
        if (o == &ref)
            for (size_t j = 0; j < of->n; j++) o->params[of->off + j] *= 2.0f;
    }
    const int B = 2;
    const size_t nx = (size_t)B * 50;
    float *xin = galloc(nx);
    fill_normal(xin, nx, &r, 1.0f);
    uint8_t y[2] = {1, 2};
    float *g[4] = {NULL, NULL, NULL, NULL};
    nz_model *all[4] = {&m, &dup, &ref, &dat};
    for (int k = 0; k < 4; k++) {
        nz_ws *ws = nz_ws_new(all[k], B, &err);
        if (!ws) continue;
        float dl[6];
        const float *z = nz_forward(all[k], ws, xin, B, 1, NULL);
        nz_softmax_xent(z, y, B, 3, dl, NULL);
        nz_ws_zero_grads(ws);
        nz_backward(all[k], ws, dl, B);
        g[k] = malloc(sizeof(float) * all[k]->n_params);
        memcpy(g[k], nz_ws_grads(ws), sizeof(float) * all[k]->n_params);
        nz_ws_free(ws);
    }
    if (g[0] && g[1] && g[2] && g[3]) {
        const size_t nconv = wa->n + 2; /* W and b */
        double mag = 0;
        for (size_t j = 0; j < nconv; j++) mag = fmax(mag, fabs(g[0][wa->off + j]));
        CHECK(mag > 0 && memcmp(g[0] + wa->off, g[0] + wb->off, sizeof(float) * nconv) == 0,
              "%s: add(convA, convB) gives its inputs different gradients (max |dA| %.3g)", S,
              mag);
        const nz_param *dc = model_param(&dup, "conv", 0), *rc = model_param(&ref, "conv", 0);
        const nz_param *df = model_param(&dup, "fc", 0), *rf = model_param(&ref, "fc", 0);
        CHECK(memcmp(g[1] + dc->off, g[2] + rc->off, sizeof(float) * nconv) == 0,
              "%s: add(c, c): conv gradient is not that of 2 c", S);
        int twice = 1;
        for (size_t j = 0; j < df->n + 3; j++)
            twice &= g[1][df->off + j] == (j < df->n ? 2.0f : 1.0f) * g[2][rf->off + j];
        CHECK(twice, "%s: add(c, c): fc gradient is not twice that of fc(c)", S);
        double mag3 = 0;
        const nz_param *tc = model_param(&dat, "conv", 0);
        for (size_t j = 0; j < nconv; j++) mag3 = fmax(mag3, fabs(g[3][tc->off + j]));
        CHECK(mag3 > 0 && isfinite(mag3), "%s: add(conv, data): conv gradient %.3g", S, mag3);
    } else {
        CHECK(0, "%s: out of memory", S);
    }
    for (int k = 0; k < 4; k++) free(g[k]), nz_model_free(all[k]);
    gfree(xin);
}


/* Gradient accumulation through a DAG: nz_backward may overwrite a node's gradient only when no
 * consumer has written it yet, and must add otherwise. No relu or BN, so the loss is smooth and
 * affine in each parameter: 5-point differences of nz_forward's double cross-entropy with
 * e = EPS_MODEL, as the strict model check.
 *   a = conv(x), b = conv(x), s = add(a, b), t = add(s, a)   a feeds two adds and a shortcut
 *   u = add(t, t)                                            one node as both inputs
 *   q = shortcut(a, 4, s2), p = avgpool(u, 2, 2),
 *   r = shortcut(p, 4, s1)                                   channel padding only
 *   v = add(r, q) -> flatten -> fc
 * In reverse order a's gradient is written by the shortcut q first, then added to by t and s;
 * a backward that overwrote it at either add would drop the other contributions. */
static void check_dag_model(int threads) {
    char S[48];
    snprintf(S, sizeof S, "dag model %d thread%s", threads, threads > 1 ? "s" : "");
    nz_set_threads(threads);
    nz_model m;
    nz_error err;
    int x = -1;
    if (nz_model_init(&m, "gradcheck-dag", (nz_shape){2, 6, 6}, 3, &err) == NZ_OK) {
        int a = nz_model_add_conv2d(&m, "a", 0, 2, 3, 1, 1, &err);
        int b = a >= 0 ? nz_model_add_conv2d(&m, "b", 0, 2, 3, 1, 1, &err) : -1;
        int s = b >= 0 ? nz_model_add_add(&m, "s", a, b, &err) : -1;
        int t = s >= 0 ? nz_model_add_add(&m, "t", s, a, &err) : -1;
        int u = t >= 0 ? nz_model_add_add(&m, "u", t, t, &err) : -1;
        int q = u >= 0 ? nz_model_add_shortcut(&m, "q", a, 4, 2, &err) : -1;
        int p = q >= 0 ? nz_model_add_avgpool(&m, "p", u, 2, 2, &err) : -1;
        int r = p >= 0 ? nz_model_add_shortcut(&m, "r", p, 4, 1, &err) : -1;
        x = r >= 0 ? nz_model_add_add(&m, "v", r, q, &err) : -1;
        if (x >= 0) x = nz_model_add_flatten(&m, "flatten", x, &err);
        if (x >= 0) x = nz_model_add_dense(&m, "fc", x, 3, &err);
    }
    if (x < 0 || nz_model_validate(&m, &err) != NZ_OK) {
        CHECK(0, "%s: cannot build the model: %s", S, err.msg);
        nz_model_free(&m);
        return;
    }
    nz_rng r;
    nz_rng_seed(&r, 9500);
    nz_model_init_params(&m, &r);
    const int B = 2;
    const size_t nx = (size_t)B * nz_shape_size(m.in), nl = (size_t)B * m.n_classes;
    float *xin = galloc(nx), *dl = galloc(nl);
    uint8_t y[2] = {2, 0};
    fill_normal(xin, nx, &r, 1.0f);
    nz_ws *ws = nz_ws_new(&m, B, &err);
    if (!ws) {
        CHECK(0, "%s: nz_ws_new: %s", S, err.msg);
        gfree(xin), gfree(dl);
        nz_model_free(&m);
        return;
    }
    ndm_ctx c = {.m = &m, .ws = ws, .x = xin, .y = y, .B = B};
    const float *z = nz_forward(&m, ws, xin, B, 1, NULL);
    nz_softmax_xent(z, y, B, m.n_classes, dl, NULL);
    nz_ws_zero_grads(ws);
    nz_backward(&m, ws, dl, B);
    float *ana = malloc(sizeof(float) * m.n_params);
    memcpy(ana, nz_ws_grads(ws), sizeof(float) * m.n_params);
    double *num = numeric_grad5(m.params, m.n_params, EPS_MODEL, ndm_loss, &c);
    static const char *const nodes[] = {"a", "b", "fc"};
    for (int j = 0; j < 3; j++)
        for (int k = 0; k < 2; k++) {
            const nz_param *pp = model_param(&m, nodes[j], k);
            char what[32];
            snprintf(what, sizeof what, "%s.%s", nodes[j], k ? "b" : "W");
            if (pp) expect_match(S, what, ana + pp->off, num + pp->off, pp->n, NULL);
        }
    {
        char label[96];
        const nz_param *pa = model_param(&m, "a", 0);
        snprintf(label, sizeof label, "%s a.W", S);
        if (pa) mutate_model_tensor(label, pa, ana, num);
    }
    nz_forward(&m, ws, xin, B, 1, NULL);
    nz_backward(&m, ws, dl, B);
    expect_doubled(S, nz_ws_grads(ws), ana, m.n_params);
    free(ana), free(num);
    gfree(xin), gfree(dl);
    nz_ws_free(ws);
    nz_model_free(&m);
}

/* ---------------------------------------------------------------- main */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void) {
    double t0 = now();
    nz_set_threads(2);
    check_dense();
    static const int convs[][3] = {{3, 1, 1}, {3, 2, 1}, {5, 1, 0}, {1, 1, 0}, {1, 2, 0}};
    static const int small[5] = {3, 2, 7, 7, 4}; /* B, C, H, W, OC */
    for (int t = 1; t <= 2; t++)
        for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
            check_conv(convs[i][0], convs[i][1], convs[i][2], t, CONV_ALGO_IM2COL, small);
    /* the direct 3x3 kernels (src/core/conv_direct.c): the same case, then odd sizes (H != W,
     * W not a multiple of the vector, channels not multiples of the register block, batch 1) */
    static const int direct[][5] = {{3, 2, 7, 7, 4}, {2, 3, 5, 9, 11}, {1, 1, 1, 18, 1},
                                    {1, 9, 3, 2, 17}, {2, 1, 6, 1, 3}, {2, 3, 8, 6, 5}};
    for (int t = 1; t <= 2; t++)
        for (int s = 1; s <= 2; s++)
            for (size_t i = 0; i < sizeof direct / sizeof direct[0]; i++)
                check_conv(3, s, 1, t, CONV_ALGO_DIRECT, direct[i]);
    check_conv_fast_vs_im2col(CONV_ALGO_DIRECT);
    /* Winograd: finite differences on the odd shapes at stride 1, then against im2col */
    for (int t = 1; t <= 2; t++)
        for (size_t i = 0; i < sizeof direct / sizeof direct[0]; i++)
            check_conv(3, 1, 1, t, CONV_ALGO_WINOGRAD, direct[i]);
    check_conv_fast_vs_im2col(CONV_ALGO_WINOGRAD);
    check_conv_picks();
    check_winograd_threads();
    check_conv_bn_stats();
    nz_set_threads(2);
    check_maxpool(2, 2);
    check_maxpool(3, 2);
    check_relu();
    check_dropout();
    check_xent();
    check_model("model 2 threads", -1.0f, 1, MODEL_SEED, 2);
    check_model("model 1 thread", -1.0f, 1, MODEL_SEED, 1);
    check_model("model+dropout(0.5) train", 0.5f, 1, MODEL_SEED, 2);
    /* an inactive dropout node (eval mode, p = 0) must be the identity, for backward too */
    check_dropout_inactive();
    /* norm x direction layers: kernels (dense, conv at three geometries), the threaded path,
     * and through nz_forward/nz_backward at 1 and 2 threads */
    nz_set_threads(2);
    check_normdir(0, 0, 0);
    check_normdir(3, 1, 1);
    check_normdir(5, 1, 0);
    check_normdir(3, 2, 1);
    check_normdir_large();
    check_normdir_model(2);
    check_normdir_model(1);
    nz_set_threads(2);
    /* batch norm (2-D and 1-D, training and eval), average pool and GAP, option-A shortcut,
     * add; their threaded paths; a residual model through nz_forward/nz_backward */
    check_batchnorm(3, 4, 5, 5, 1);
    check_batchnorm(8, 5, 1, 1, 1);
    check_batchnorm(3, 4, 5, 5, 0);
    check_batchnorm_relu(3, 4, 25, 1);
    check_batchnorm_relu(4, 3, 100, 0);
    check_batchnorm_relu(16, 5, 1, 1);
    check_batchnorm_relu(64, 8, 64, 1); /* the threaded path (> 32768 values) */
    check_avgpool("avgpool 2x2/2", 7, 7, 2, 2, 2);
    check_avgpool("avgpool 3x3/1", 7, 7, 3, 3, 1);
    check_avgpool("gap 5x6", 5, 6, 5, 6, 1);
    check_shortcut(4, 8, 7, 7, 2);
    check_shortcut(2, 5, 6, 6, 2);
    check_shortcut(3, 3, 5, 5, 1);
    check_select(13, 5);
    check_select(784, 300);
    check_select(6, 6);
    check_add();
    check_new_kernels_threaded();
    /* (1 vs 2 threads only changes the conv batch split, checked by the plain model above; the
     * BN kernels go parallel above 32768 values, checked in check_new_kernels_threaded) */
    check_resnet_model("resnet train", 1, 2, MODEL_SEED + 1);
    check_resnet_model("resnet eval", 0, 2, MODEL_SEED + 1);
    check_add_inputs();
    check_dag_model(2);
    check_dag_model(1);
    nz_set_threads(2);

    printf("worst relative error per section (limit %.0e):\n", GC_TOL);
    for (int i = 0; i < g_n_sections; i++)
        printf("  %-40s %.2e\n", g_sections[i].name, g_sections[i].worst);
    printf("  time %.2f s\n", now() - t0);
    return tl_finish("test_gradcheck");
}
