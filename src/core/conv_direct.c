/* Direct 3x3 / stride 1 / pad 1 convolution (see conv_direct.h).
 *
 * Layout. Each input plane (H, W) is copied into a zero-bordered plane of width Wp = W + 2 and
 * H + 2 rows, followed by zeros up to S floats (at least one vector past the end). In these
 * "padded coordinates" output pixel (oh, ow) sits at p = oh * Wp + ow and its tap (kh, kw) reads
 * input p + kh * Wp + kw: every tap is one constant shift of the flat plane, so a vector of VL
 * consecutive p is one unaligned load per tap. The two columns p with ow >= W per row are
 * computed and thrown away (W / Wp of the work is useful: 94% at 32x32, 89% at 16x16, 80% at
 * 8x8).
 *
 * Forward: a register tile of OCB output channels x NV vectors of pixels accumulates over input
 * channels and the 9 taps (one load per vector and tap, one broadcast weight per channel and
 * tap), weights repacked as [oc block][c][tap][OCB]. Tiles go to a padded-coordinate row buffer,
 * then to NCHW with the bias, the optional relu, or an add (din).
 *
 * Backward data is the same kernel: din = conv3x3/s1/p1(dout, W') with W'[c][oc][kh][kw] =
 * W[oc][c][2-kh][2-kw] (in/out channels swapped, taps flipped), run on the padded dout.
 *
 * Backward weights: dW[oc][c][kh][kw] = sum_p dout[oc][p] x[c][p + kh Wp + kw]. For one (c, kh)
 * a tile of OCB output channels x 3 kw accumulates vectors over every pixel of a group of
 * samples; the dout plane is read at offset Wp + 1 of its padded copy, whose zero border makes
 * the thrown-away columns contribute nothing. One horizontal sum per accumulator and group.
 *
 * Threads: forward over (sample, output-channel block) pairs, each thread padding the samples it
 * works on; backward over samples, dW and db into per-thread partials reduced in a fixed order
 * (as the im2col path does), so a given thread count always gives the same bits.
 *
 * The kernels are written with GCC vector extensions; FMA comes from intrinsics under
 * __AVX512F__ (16 lanes) or __AVX2__ + __FMA__ (8 lanes), else plain multiply-add on 4 lanes
 * (the portable build: same results up to rounding). */
#include "core/conv_direct.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VL 16 /* floats per vector */
#define OCB 8 /* output channels per register tile */
#define NV 3  /* pixel vectors per forward tile: OCB * NV = 24 of 32 registers accumulate */
typedef float vf __attribute__((vector_size(64)));
static inline vf vfma(vf a, vf b, vf c) {
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
}
static inline vf vset1(float s) { return (vf)_mm512_set1_ps(s); }
static inline float vhsum(vf v) { return _mm512_reduce_add_ps((__m512)v); }
#elif defined(__AVX2__) && defined(__FMA__)
#define VL 8
#define OCB 4
#define NV 3 /* 12 accumulators of 16 registers */
typedef float vf __attribute__((vector_size(32)));
static inline vf vfma(vf a, vf b, vf c) {
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
}
static inline vf vset1(float s) { return (vf)_mm256_set1_ps(s); }
static inline float vhsum(vf v) {
    float s = 0;
    for (int l = 0; l < VL; l++) s += v[l];
    return s;
}
#else
#define VL 4
#define OCB 4
#define NV 2
typedef float vf __attribute__((vector_size(16)));
static inline vf vfma(vf a, vf b, vf c) { return a * b + c; }
static inline vf vset1(float s) { return (vf){s, s, s, s}; }
static inline float vhsum(vf v) { return (v[0] + v[1]) + (v[2] + v[3]); }
#endif

/* unaligned, aliasing-safe vector access to float arrays */
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4), may_alias));
static inline vf vload(const float *p) { return *(const vfu *)p; }
static inline void vstore(float *p, vf v) { *(vfu *)p = v; }

/* Pixels per backward group: dW accumulates over this many (padded) pixels of consecutive
 * samples before its horizontal sums, so small maps (8x8: 78 pixels) still run long loops. */
#define GROUP_PX 1024
#define GROUP_MAX 16

typedef struct {
    int H, W, Wp; /* image (= output) size, padded row width */
    size_t S;     /* floats per padded plane */
    int nvec;     /* vectors covering the P = (H-1) Wp + W padded-coordinate outputs */
    size_t ldo;   /* nvec * VL: floats per row-buffer channel */
} geom;

static geom geom_of(const conv_dims *d) {
    geom g;
    g.H = d->H;
    g.W = d->W;
    g.Wp = d->W + 2;
    /* reads go up to nvec*VL - 1 + 2 Wp + 2 < (H + 2) Wp + VL */
    const size_t s = (size_t)(d->H + 2) * g.Wp + VL;
    g.S = (s + VL - 1) / VL * VL;
    const int P = (d->H - 1) * g.Wp + d->W;
    g.nvec = (P + VL - 1) / VL;
    g.ldo = (size_t)g.nvec * VL;
    return g;
}

static int round_up(int n, int m) { return (n + m - 1) / m * m; }

/* samples per backward group */
static int group_of(const geom *g) {
    const int px = (g->H - 1) * g->Wp + g->W;
    int n = (GROUP_PX + px - 1) / px;
    return n < 1 ? 1 : n > GROUP_MAX ? GROUP_MAX : n;
}

int conv_direct_supported(const conv_dims *d) {
    return d->KH == 3 && d->KW == 3 && d->stride == 1 && d->pad == 1 && d->OH == d->H &&
           d->OW == d->W && d->C >= 1 && d->OC >= 1 && d->H >= 1 && d->W >= 1;
}

/* packed weights, shared by the threads: forward [OCpad/OCB][C][9][OCB] or backward-data
 * [Cpad/OCB][OC][9][OCB] */
static size_t shared_floats(const conv_dims *d) {
    const size_t a = (size_t)round_up(d->OC, OCB) * d->C, b = (size_t)round_up(d->C, OCB) * d->OC;
    return 9 * (a > b ? a : b);
}

/* one thread's buffers: backward (a group of padded inputs and padded douts, OC rounded up to
 * OCB planes per sample, and a row buffer) covers forward (one padded input and a row buffer) */
static size_t thread_floats(const conv_dims *d) {
    const geom g = geom_of(d);
    const size_t G = (size_t)group_of(&g);
    return G * ((size_t)d->C + (size_t)round_up(d->OC, OCB)) * g.S + (size_t)OCB * g.ldo +
           4 * VL; /* room to align the three buffers (and shift the douts, see below) */
}

/* p rounded up to a whole vector (VL * 4 bytes) */
static float *align_up(float *p) {
    const uintptr_t a = VL * sizeof(float);
    return (float *)(((uintptr_t)p + a - 1) & ~(a - 1));
}

size_t conv_direct_scratch_per_thread(const conv_dims *d) {
    if (!conv_direct_supported(d)) return 0;
    /* the shared block counted in full, so T * this covers shared + T threads for any T >= 1 */
    return shared_floats(d) + thread_floats(d);
}

/* n planes (H, W) -> padded planes of S floats; sums[i % nsum] += plane i's sum when sums */
static void pad_planes(float *dst, const float *src, int n, const geom *g, float *sums, int nsum) {
    const int H = g->H, W = g->W, Wp = g->Wp;
    for (int i = 0; i < n; i++, dst += g->S, src += (size_t)H * W) {
        memset(dst, 0, sizeof(float) * (size_t)(Wp + 1));
        float s = 0;
        for (int h = 0; h < H; h++) {
            float *r = dst + (size_t)(h + 1) * Wp + 1;
            const float *x = src + (size_t)h * W;
            memcpy(r, x, sizeof(float) * (size_t)W);
            r[W] = 0.0f;     /* right border */
            r[W + 1] = 0.0f; /* left border of the next row */
            if (sums)
                for (int w = 0; w < W; w++) s += x[w];
        }
        const size_t tail = (size_t)(H + 1) * Wp + 1;
        memset(dst + tail, 0, sizeof(float) * (g->S - tail));
        if (sums) sums[i % nsum] += s;
    }
}

/* Forward register tile: o[i * ldo + j * VL + l] = sum over c < C and the 9 taps of
 * w[(c * 9 + tap) * OCB + i] * x[c * S + kh * Wp + kw + j * VL + l], for i < OCB, j < nv. */
static inline __attribute__((always_inline)) void tile(float *o, size_t ldo, const float *x,
                                                       size_t S, int Wp, const float *w, int C,
                                                       const int nv) {
    vf acc[OCB][NV];
    const vf z = vset1(0.0f);
    for (int i = 0; i < OCB; i++)
        for (int j = 0; j < NV; j++) acc[i][j] = z;
    for (int c = 0; c < C; c++, x += S, w += 9 * OCB)
        for (int kh = 0; kh < 3; kh++)
            for (int kw = 0; kw < 3; kw++) {
                const float *xp = x + kh * Wp + kw;
                const float *wt = w + (kh * 3 + kw) * OCB;
                vf xv[NV];
                for (int j = 0; j < nv; j++) xv[j] = vload(xp + j * VL);
                for (int i = 0; i < OCB; i++) {
                    const vf wv = vset1(wt[i]);
                    for (int j = 0; j < nv; j++) acc[i][j] = vfma(wv, xv[j], acc[i][j]);
                }
            }
    for (int i = 0; i < OCB; i++)
        for (int j = 0; j < nv; j++) vstore(o + i * ldo + (size_t)j * VL, acc[i][j]);
}

static void tile_full(float *o, size_t ldo, const float *x, size_t S, int Wp, const float *w,
                      int C) {
    tile(o, ldo, x, S, Wp, w, C, NV);
}

static void tile_one(float *o, size_t ldo, const float *x, size_t S, int Wp, const float *w,
                     int C) {
    tile(o, ldo, x, S, Wp, w, C, 1);
}

/* row buffer ob (OCB, ldo) = one output-channel block over every padded-coordinate pixel of one
 * sample: x padded (C, S), w packed [C][9][OCB] */
static void conv_block(float *ob, const float *x, const float *w, int C, const geom *g) {
    int v = 0;
    for (; v + NV <= g->nvec; v += NV)
        tile_full(ob + (size_t)v * VL, g->ldo, x + (size_t)v * VL, g->S, g->Wp, w, C);
    for (; v < g->nvec; v++)
        tile_one(ob + (size_t)v * VL, g->ldo, x + (size_t)v * VL, g->S, g->Wp, w, C);
}

enum { EMIT_BIAS, EMIT_BIAS_RELU, EMIT_SET, EMIT_ADD };

/* y (H, W) from a padded-coordinate row */
static void emit(float *y, const float *o, const geom *g, int mode, float bias) {
    const int W = g->W;
    for (int h = 0; h < g->H; h++, y += W, o += g->Wp) {
        switch (mode) {
        case EMIT_BIAS:
            for (int w = 0; w < W; w++) y[w] = o[w] + bias;
            break;
        case EMIT_BIAS_RELU:
            for (int w = 0; w < W; w++) y[w] = fmaxf(o[w] + bias, 0.0f);
            break;
        case EMIT_SET:
            memcpy(y, o, sizeof(float) * (size_t)W);
            break;
        default:
            for (int w = 0; w < W; w++) y[w] += o[w];
        }
    }
}

/* wp [OCpad/OCB][C][9][OCB] from W (OC, C, 3, 3); zeros past OC */
static void pack_forward(float *wp, const float *W, int C, int OC) {
    for (int cb = 0; cb < OC; cb += OCB)
        for (int c = 0; c < C; c++)
            for (int t = 0; t < 9; t++)
                for (int i = 0; i < OCB; i++, wp++) {
                    const int oc = cb + i;
                    *wp = oc < OC ? W[((size_t)oc * C + c) * 9 + t] : 0.0f;
                }
}

/* wp [Cpad/OCB][OC][9][OCB] = W'[c][oc][t] = W[oc][c][8 - t] (swapped, flipped); zeros past C */
static void pack_backward(float *wp, const float *W, int C, int OC) {
    for (int cb = 0; cb < C; cb += OCB)
        for (int oc = 0; oc < OC; oc++)
            for (int t = 0; t < 9; t++)
                for (int i = 0; i < OCB; i++, wp++) {
                    const int c = cb + i;
                    *wp = c < C ? W[((size_t)oc * C + c) * 9 + (8 - t)] : 0.0f;
                }
}

void conv_direct_forward(float *out, const float *in, const float *W, const float *b, int B,
                         const conv_dims *d, float *scratch) {
    const geom g = geom_of(d);
    const int C = d->C, OC = d->OC, nblk = (OC + OCB - 1) / OCB;
    const size_t shared = shared_floats(d), per = thread_floats(d);
    const size_t in_sz = (size_t)C * g.H * g.W, plane = (size_t)g.H * g.W;
    float *wp = scratch;
    pack_forward(wp, W, C, OC);
    const long items = (long)B * nblk;
    int T = d->threads < 1 ? 1 : d->threads;
    if (T > items) T = (int)items;
    const int mode = d->out_relu ? EMIT_BIAS_RELU : EMIT_BIAS;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const long lo = items * t / nt, hi = items * (t + 1) / nt;
        float *xp = align_up(scratch + shared + per * (size_t)t);
        float *ob = align_up(xp + (size_t)C * g.S);
        long cur = -1;
        for (long it = lo; it < hi; it++) {
            const long n = it / nblk;
            const int blk = (int)(it % nblk);
            if (n != cur) {
                pad_planes(xp, in + in_sz * (size_t)n, C, &g, NULL, 1);
                cur = n;
            }
            conv_block(ob, xp, wp + (size_t)blk * C * 9 * OCB, C, &g);
            for (int i = 0; i < OCB && blk * OCB + i < OC; i++) {
                const int oc = blk * OCB + i;
                emit(out + ((size_t)n * OC + oc) * plane, ob + (size_t)i * g.ldo, &g, mode, b[oc]);
            }
        }
    }
}

/* pw[((oc * C + c) * 9) + kh * 3 + kw] += sum over the m samples' pixels of
 * dout[oc][p] x[c][p + kh Wp + kw]: xs (m, C, S) and ds (m, OCpad, S) padded */
static void dw_group(float *pw, const float *xs, const float *ds, int m, int C, int OC,
                     const geom *g) {
    const int OCp = round_up(OC, OCB), Wp = g->Wp;
    const size_t S = g->S, n = g->ldo;
    for (int cb = 0; cb < OC; cb += OCB) {
        const int live = OC - cb < OCB ? OC - cb : OCB;
        for (int c = 0; c < C; c++)
            for (int kh = 0; kh < 3; kh++) {
                vf acc[OCB][3];
                const vf z = vset1(0.0f);
                for (int i = 0; i < OCB; i++) acc[i][0] = acc[i][1] = acc[i][2] = z;
                for (int j = 0; j < m; j++) {
                    const float *x = xs + ((size_t)j * C + c) * S + (size_t)kh * Wp;
                    const float *dd = ds + ((size_t)j * OCp + cb) * S + Wp + 1;
                    for (size_t q = 0; q < n; q += VL) {
                        const vf x0 = vload(x + q), x1 = vload(x + q + 1), x2 = vload(x + q + 2);
                        for (int i = 0; i < OCB; i++) {
                            vf dv = vload(dd + i * S + q);
                            /* one load, three uses: keeps GCC from folding it into each FMA */
                            __asm__("" : "+v"(dv));
                            acc[i][0] = vfma(dv, x0, acc[i][0]);
                            acc[i][1] = vfma(dv, x1, acc[i][1]);
                            acc[i][2] = vfma(dv, x2, acc[i][2]);
                        }
                    }
                }
                for (int i = 0; i < live; i++) {
                    float *r = pw + ((size_t)(cb + i) * C + c) * 9 + kh * 3;
                    r[0] += vhsum(acc[i][0]);
                    r[1] += vhsum(acc[i][1]);
                    r[2] += vhsum(acc[i][2]);
                }
            }
    }
}

void conv_direct_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                          const float *W, int B, const conv_dims *d, float *scratch,
                          float *dW_partial) {
    const geom g = geom_of(d);
    const int C = d->C, OC = d->OC, OCp = round_up(OC, OCB), G = group_of(&g);
    const size_t shared = shared_floats(d), per = thread_floats(d);
    const size_t plane = (size_t)g.H * g.W, in_sz = (size_t)C * plane, out_sz = (size_t)OC * plane;
    const size_t wsz = (size_t)OC * C * 9, part = wsz + (size_t)OC;
    float *wp = scratch;
    if (din) pack_backward(wp, W, C, OC);
    int T = d->threads < 1 ? 1 : d->threads;
    if (T > B) T = B;
    const int mode = d->din_set ? EMIT_SET : EMIT_ADD;
    int used = 1; /* threads OpenMP actually started (may be fewer than T) */
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        if (t == 0) used = nt;
        const int lo = (int)((long)B * t / nt), hi = (int)((long)B * (t + 1) / nt);
        float *xs = align_up(scratch + shared + per * (size_t)t);
        /* dW reads each dout plane from offset Wp + 1: shifted so those loads are aligned */
        float *ds = align_up(xs + (size_t)G * C * g.S) + (VL - (g.Wp + 1) % VL) % VL;
        float *ob = align_up(ds + (size_t)G * OCp * g.S);
        float *pw = dW_partial + part * (size_t)t, *pb = pw + wsz;
        memset(pw, 0, sizeof(float) * part);
        for (int n0 = lo; n0 < hi; n0 += G) {
            const int m = hi - n0 < G ? hi - n0 : G;
            pad_planes(xs, in + in_sz * (size_t)n0, m * C, &g, NULL, 1);
            for (int j = 0; j < m; j++) {
                float *dj = ds + (size_t)j * OCp * g.S;
                pad_planes(dj, dout + out_sz * (size_t)(n0 + j), OC, &g, pb, OC);
                memset(dj + (size_t)OC * g.S, 0, sizeof(float) * (size_t)(OCp - OC) * g.S);
            }
            dw_group(pw, xs, ds, m, C, OC, &g);
            if (!din) continue;
            for (int j = 0; j < m; j++) {
                const float *dj = ds + (size_t)j * OCp * g.S;
                float *dx = din + in_sz * (size_t)(n0 + j);
                for (int cb = 0; cb < C; cb += OCB) {
                    conv_block(ob, dj, wp + (size_t)cb * OC * 9, OC, &g);
                    for (int i = 0; i < OCB && cb + i < C; i++)
                        emit(dx + (size_t)(cb + i) * plane, ob + (size_t)i * g.ldo, &g, mode, 0.0f);
                }
            }
        }
    }
    /* fixed-order reduction: the same thread count gives the same bits */
    for (int t = 0; t < used; t++) {
        const float *pw = dW_partial + part * (size_t)t, *pb = pw + wsz;
        for (size_t i = 0; i < wsz; i++) dW[i] += pw[i];
        for (int oc = 0; oc < OC; oc++) db[oc] += pb[oc];
    }
}
