/* Direct 3x3 / pad 1 / stride 1 or 2 convolution (see conv_direct.h).
 *
 * Layout. Each input plane is copied into "padded coordinates" (see plan below): at stride 1 a
 * zero-bordered plane of row width R = W + 2, at stride 2 four phase planes (even/odd rows x
 * even/odd columns of the zero-bordered image) of row width R = OW + 1. Output pixel (oh, ow)
 * sits at p = oh * R + ow and every tap (kh, kw) reads its input at p plus a constant offset, so
 * a vector of VL consecutive p is one unaligned load per tap. The R - OW columns past OW are
 * computed and thrown away (OW / R of the work is useful: 94% at 32x32, 89% at 16x16, 80% at
 * 8x8 outputs).
 *
 * Forward: a register tile of OCB output channels x NV vectors of pixels accumulates over input
 * channels and the 9 taps (one load per vector and tap, one broadcast weight per channel and
 * tap), weights repacked as [oc block][c][tap][OCB]. Tiles go to a padded-coordinate row buffer,
 * then to NCHW with the bias and the optional fused relu.
 *
 * Backward data is the same kernel run on the zero-bordered dout, din channels as outputs:
 * stride 1, din = conv3x3/s1/p1(dout, W') with W'[c][oc][kh][kw] = W[oc][c][2-kh][2-kw] (in/out
 * channels swapped, taps flipped); stride 2, one pass per phase of din (the taps of matching
 * parity: 4, 2, 2 and 1 of them), whose outputs are interleaved into din rows.
 *
 * Backward weights: dW[oc][c][kh][kw] = sum_p dout[oc][p] x[c][p + offset(kh, kw)]. For one
 * (c, kh) a tile of OCB output channels x 3 kw accumulates vectors over every pixel of a group
 * of samples; dout is read from its zero-bordered copy, whose zeros make the thrown-away
 * columns contribute nothing. One horizontal sum per accumulator and group.
 *
 * Threads: forward over (sample, output-channel block) pairs, each thread padding the samples it
 * works on; backward over samples, dW and db into per-thread partials reduced in a fixed order
 * (as the im2col path does), so a given thread count always gives the same bits.
 *
 * The kernels are written with the vector type of core/simd.h (AVX-512, AVX2 + FMA or portable
 * code from the same source). */
#include "core/conv_direct.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "core/simd.h"

#if VL == 16
#define OCB 8 /* output channels per register tile */
#define NV 3  /* pixel vectors per forward tile: OCB * NV = 24 of 32 registers accumulate */
#elif VL == 8
#define OCB 4
#define NV 3 /* 12 accumulators of 16 registers */
#else
#define OCB 4
#define NV 2
#endif

/* lane patterns for shuffles of two vectors a, b (lanes 0..VL-1 of a, VL.. of b) */
#if VL == 16
#define SH_EVEN {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}
#define SH_ODD {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}
#define SH_LO {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23}
#define SH_HI {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31}
#elif VL == 8
#define SH_EVEN {0, 2, 4, 6, 8, 10, 12, 14}
#define SH_ODD {1, 3, 5, 7, 9, 11, 13, 15}
#define SH_LO {0, 8, 1, 9, 2, 10, 3, 11}
#define SH_HI {4, 12, 5, 13, 6, 14, 7, 15}
#else
#define SH_EVEN {0, 2, 4, 6}
#define SH_ODD {1, 3, 5, 7}
#define SH_LO {0, 4, 1, 5}
#define SH_HI {2, 6, 3, 7}
#endif

/* Samples per backward group: dW accumulates over every pixel of a group before its horizontal
 * sums, so small maps (8x8: 80 lanes) still run long loops; the group's OCB dout planes, which
 * dW re-reads 3 C times, are kept to about half of a 48 KB L1. Measured (dW + padding, batch 32,
 * 1 thread): 64x8x8 1.52 ms with 13 samples (53 KB), 1.31 with 6; 128x4x4 2.8 ms with 16, 2.3
 * with 12; 64x5x5 1.0 ms with 16, 0.8 with 9; quarter or two thirds of L1 were slower overall. */
#ifndef DW_L1_FLOATS
#define DW_L1_FLOATS 6144
#endif
#define GROUP_MAX 16

/* Where everything sits for one conv shape. "Padded coordinates": output pixel (oh, ow) is
 * p = oh * R + ow; the R - OW columns past OW are computed and dropped.
 *  stride 1: one plane per input channel, the image with a zero border: R = W + 2, image pixel
 *            (h, w) at (h + 1) R + w + 1; tap (kh, kw) reads p + kh R + kw.
 *  stride 2: four phase planes per input channel, phase (a, b) holding padded-image pixels
 *            (2i + a, 2j + b) at i R + j, i <= OH, j <= OW, R = OW + 1; tap (kh, kw) reads
 *            phase (kh % 2, kw % 2) at p + (kh / 2) R + kw / 2.
 * A padded output-gradient plane (either stride): OH + 2 rows of R, dout (oh, ow) at
 * (oh + 1) R + ow + 1, zeros elsewhere; every plane is followed by zeros (>= one vector). */
typedef struct {
    int s, H, W, OH, OW, R;
    size_t Sx;    /* floats per input (phase) plane */
    size_t cs;    /* floats per input channel: Sx or 4 Sx */
    size_t Sd;    /* floats per padded dout plane */
    int off[9];   /* forward tap (kh * 3 + kw) offsets from a channel's start */
    int nvec;     /* vectors covering the P = (OH - 1) R + OW forward outputs */
    int nvec_b;   /* stride 2 backward data: vectors covering (OH + 1) R phase outputs */
    size_t ldo;   /* row-buffer floats per channel, >= both */
} plan;

static size_t round_vec(size_t n) { return (n + VL - 1) / VL * VL; }

static plan plan_of(const conv_dims *d) {
    plan g;
    g.s = d->stride;
    g.H = d->H, g.W = d->W, g.OH = d->OH, g.OW = d->OW;
    g.R = d->OW + (g.s == 1 ? 2 : 1);
    const int P = (g.OH - 1) * g.R + g.OW;
    g.nvec = (P + VL - 1) / VL;
    g.nvec_b = g.s == 1 ? g.nvec : ((g.OH + 1) * g.R + VL - 1) / VL;
    g.ldo = (size_t)(g.nvec > g.nvec_b ? g.nvec : g.nvec_b) * VL;
    /* reads stay below: forward and dW x (OH + 1) R + VL (stride 2) or (OH + 2) R + VL
     * (stride 1); dout (OH + 2) R + VL + 1 (stride-2 backward data) */
    g.Sd = round_vec((size_t)(g.OH + 2) * g.R + VL + 1);
    g.Sx = g.s == 1 ? g.Sd : round_vec((size_t)(g.OH + 1) * g.R + VL);
    g.cs = g.s == 1 ? g.Sx : 4 * g.Sx;
    for (int kh = 0; kh < 3; kh++)
        for (int kw = 0; kw < 3; kw++)
            g.off[kh * 3 + kw] = g.s == 1 ? kh * g.R + kw
                                          : (int)(((kh % 2) * 2 + kw % 2) * g.Sx) +
                                                (kh / 2) * g.R + kw / 2;
    return g;
}

static int round_up(int n, int m) { return (n + m - 1) / m * m; }

/* samples per backward group */
static int group_of(const plan *g) {
    const int n = (int)(DW_L1_FLOATS / ((size_t)OCB * g->Sd));
    return n < 1 ? 1 : n > GROUP_MAX ? GROUP_MAX : n;
}

int conv_direct_supported(const conv_dims *d) {
    return d->KH == 3 && d->KW == 3 && (d->stride == 1 || d->stride == 2) && d->pad == 1 &&
           d->OH == (d->H - 1) / d->stride + 1 && d->OW == (d->W - 1) / d->stride + 1 &&
           d->C >= 1 && d->OC >= 1 && d->H >= 1 && d->W >= 1;
}

/* packed weights, shared by the threads: forward [OCpad/OCB][C][9][OCB] or backward-data
 * [Cpad/OCB][OC][9][OCB] (stride 2: per phase, [phase][Cpad/OCB][OC][taps][OCB]) */
static size_t shared_floats(const conv_dims *d) {
    const size_t a = (size_t)round_up(d->OC, OCB) * d->C, b = (size_t)round_up(d->C, OCB) * d->OC;
    return 9 * (a > b ? a : b);
}

/* one thread's buffers: backward (a group of padded inputs and padded douts, OC rounded up to
 * OCB planes per sample, and a row buffer, one per phase at stride 2) covers forward (one padded
 * input and a row buffer) */
static size_t thread_floats(const conv_dims *d) {
    const plan g = plan_of(d);
    const size_t G = (size_t)group_of(&g);
    return G * ((size_t)d->C * g.cs + (size_t)round_up(d->OC, OCB) * g.Sd) +
           (size_t)(g.s == 1 ? 1 : 4) * OCB * g.ldo + 4 * VL; /* room to align the three buffers (and shift the
                                            douts, see conv_direct_backward) */
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

/* sum of n floats (a multiple of VL), in vector lanes */
static float vsum(const float *p, size_t n) {
    vf a0 = vset1(0.0f), a1 = a0;
    size_t i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        a0 += vload(p + i);
        a1 += vload(p + i + VL);
    }
    for (; i < n; i += VL) a0 += vload(p + i);
    return vhsum(a0 + a1);
}

/* n planes (H, W) -> padded planes (OH + 2 rows of R, image at (h + 1) R + w + 1, zeros
 * elsewhere) of S floats each; the stride-1 input layout and the dout layout of both strides.
 * sums[i % nsum] += plane i's sum when sums. */
static void pad_planes(float *dst, const float *src, int n, int H, int W, int R, size_t S,
                       float *sums, int nsum) {
    for (int i = 0; i < n; i++, dst += S, src += (size_t)H * W) {
        memset(dst, 0, sizeof(float) * (size_t)(R + 1));
        for (int h = 0; h < H; h++) {
            float *r = dst + (size_t)(h + 1) * R + 1;
            memcpy(r, src + (size_t)h * W, sizeof(float) * (size_t)W);
            for (int w = W; w < R; w++) r[w] = 0.0f; /* right border, next row's left one */
        }
        const size_t tail = (size_t)(H + 1) * R + 1;
        memset(dst + tail, 0, sizeof(float) * (S - tail));
        if (sums) sums[i % nsum] += vsum(dst, S); /* zeros around the image add nothing */
    }
}

/* n input planes -> each channel's layout of g (stride 1: pad_planes; stride 2: four phases) */
static void pad_input(float *dst, const float *src, int n, const plan *g) {
    if (g->s == 1) {
        pad_planes(dst, src, n, g->H, g->W, g->R, g->Sx, NULL, 1);
        return;
    }
    /* input row h goes to phase row i = (h + 1) / 2 of phases a = (h + 1) % 2: its even
     * columns w = 2k to phase (a, 1) at j = k, its odd ones w = 2k + 1 to (a, 0) at j = k + 1 */
    const int H = g->H, W = g->W, R = g->R;
    const vmask even = SH_EVEN, odd = SH_ODD;
    for (int c = 0; c < n; c++, src += (size_t)H * W, dst += g->cs) {
        memset(dst, 0, sizeof(float) * g->cs);
        for (int h = 0; h < H; h++) {
            const int a = (h + 1) & 1, i = (h + 1) >> 1;
            float *r0 = dst + (size_t)(2 * a) * g->Sx + (size_t)i * R + 1, *r1 = r0 + g->Sx - 1;
            const float *x = src + (size_t)h * W;
            int k = 0;
            for (; 2 * k + 2 * VL <= W; k += VL) {
                const vf lo = vload(x + 2 * k), hi = vload(x + 2 * k + VL);
                vstore(r1 + k, VSHUFFLE(lo, hi, even));
                vstore(r0 + k, VSHUFFLE(lo, hi, odd));
            }
            for (int w = 2 * k; w < W; w++) {
                if (w & 1) r0[w >> 1] = x[w];
                else r1[w >> 1] = x[w];
            }
        }
    }
}

/* Register tile: o[i * ldo + j * VL + l] = sum over c < C and t < ntap of
 * w[(c * ntap + t) * OCB + i] * x[c * cs + off[t] + j * VL + l], for i < OCB, j < nv. */
static inline __attribute__((always_inline)) void tile(float *o, size_t ldo, const float *x,
                                                       size_t cs, const int *off, const int ntap,
                                                       const float *w, int C, const int nv) {
    vf acc[OCB][NV];
    const vf z = vset1(0.0f);
    for (int i = 0; i < OCB; i++)
        for (int j = 0; j < NV; j++) acc[i][j] = z;
    for (int c = 0; c < C; c++, x += cs, w += ntap * OCB)
#pragma GCC unroll 9
        for (int t = 0; t < ntap; t++) {
            const float *xp = x + off[t];
            vf xv[NV];
            for (int j = 0; j < nv; j++) xv[j] = vload(xp + j * VL);
            for (int i = 0; i < OCB; i++) {
                const vf wv = vset1(w[t * OCB + i]);
                for (int j = 0; j < nv; j++) acc[i][j] = vfma(wv, xv[j], acc[i][j]);
            }
        }
    for (int i = 0; i < OCB; i++)
        for (int j = 0; j < nv; j++) vstore(o + i * ldo + (size_t)j * VL, acc[i][j]);
}

/* the 9-tap case with its offsets in registers (the forward and stride-1 backward data) */
static inline __attribute__((always_inline)) void tile9(float *o, size_t ldo, const float *x,
                                                        size_t cs, const int *off9,
                                                        const float *w, int C, const int nv) {
    const int off[9] = {off9[0], off9[1], off9[2], off9[3], off9[4],
                        off9[5], off9[6], off9[7], off9[8]};
    tile(o, ldo, x, cs, off, 9, w, C, nv);
}

static void tile9_full(float *o, size_t ldo, const float *x, size_t cs, const int *off,
                       const float *w, int C) {
    tile9(o, ldo, x, cs, off, w, C, NV);
}

static void tile9_one(float *o, size_t ldo, const float *x, size_t cs, const int *off,
                      const float *w, int C) {
    tile9(o, ldo, x, cs, off, w, C, 1);
}

#if NV > 2
static void tile9_two(float *o, size_t ldo, const float *x, size_t cs, const int *off,
                      const float *w, int C) {
    tile9(o, ldo, x, cs, off, w, C, 2);
}

static void tilen_two(float *o, size_t ldo, const float *x, size_t cs, const int *off, int ntap,
                      const float *w, int C) {
    tile(o, ldo, x, cs, off, ntap, w, C, 2);
}
#endif

static void tilen_full(float *o, size_t ldo, const float *x, size_t cs, const int *off, int ntap,
                       const float *w, int C) {
    tile(o, ldo, x, cs, off, ntap, w, C, NV);
}

static void tilen_one(float *o, size_t ldo, const float *x, size_t cs, const int *off, int ntap,
                      const float *w, int C) {
    tile(o, ldo, x, cs, off, ntap, w, C, 1);
}

/* row buffer ob (OCB, ldo) over nvec vectors of padded-coordinate outputs for one block of
 * output channels: x (C channels of cs floats), w packed [C][ntap][OCB] */
static void conv_block(float *ob, size_t ldo, int nvec, const float *x, size_t cs,
                       const int *off, int ntap, const float *w, int C) {
    int v = 0;
    if (ntap == 9) {
        for (; v + NV <= nvec; v += NV)
            tile9_full(ob + (size_t)v * VL, ldo, x + (size_t)v * VL, cs, off, w, C);
#if NV > 2
        if (v + 2 <= nvec) {
            tile9_two(ob + (size_t)v * VL, ldo, x + (size_t)v * VL, cs, off, w, C);
            v += 2;
        }
#endif
        for (; v < nvec; v++) tile9_one(ob + (size_t)v * VL, ldo, x + (size_t)v * VL, cs, off, w, C);
        return;
    }
    for (; v + NV <= nvec; v += NV)
        tilen_full(ob + (size_t)v * VL, ldo, x + (size_t)v * VL, cs, off, ntap, w, C);
#if NV > 2
    if (v + 2 <= nvec) {
        tilen_two(ob + (size_t)v * VL, ldo, x + (size_t)v * VL, cs, off, ntap, w, C);
        v += 2;
    }
#endif
    for (; v < nvec; v++)
        tilen_one(ob + (size_t)v * VL, ldo, x + (size_t)v * VL, cs, off, ntap, w, C);
}

enum { EMIT_BIAS, EMIT_BIAS_RELU, EMIT_SET, EMIT_ADD };

/* y (H, W) from padded-coordinate rows of R floats */
static void emit(float *y, const float *o, int H, int W, int R, int mode, float bias) {
    for (int h = 0; h < H; h++, y += W, o += R) {
        switch (mode) {
        case EMIT_BIAS:
            for (int w = 0; w < W; w++) y[w] = o[w] + bias;
            break;
        case EMIT_BIAS_RELU:
            for (int w = 0; w < W; w++) { /* not fmaxf: GCC calls libm for it */
                const float v = o[w] + bias;
                y[w] = v > 0.0f ? v : 0.0f;
            }
            break;
        case EMIT_SET:
            memcpy(y, o, sizeof(float) * (size_t)W);
            break;
        default:
            for (int w = 0; w < W; w++) y[w] += o[w];
        }
    }
}

/* stride 2 backward data: y (H, W) from the four phase row buffers o[ph * ph_stride] of one
 * channel. Row h = 2i + a - 1 interleaves phase (a, 1) (even w = 2k: j = k) with phase (a, 0)
 * (odd w = 2k + 1: j = k + 1), both at row i. */
static void emit_phases(float *y, const float *o, size_t ph_stride, const plan *g, int mode) {
    const int W = g->W;
    const vmask lo_m = SH_LO, hi_m = SH_HI;
    for (int h = 0; h < g->H; h++, y += W) {
        const int a = (h + 1) & 1, i = (h + 1) >> 1;
        const float *p0 = o + (size_t)(2 * a) * ph_stride + (size_t)i * g->R + 1;
        const float *p1 = p0 + ph_stride - 1;
        int k = 0;
        for (; 2 * k + 2 * VL <= W; k += VL) {
            const vf e = vload(p1 + k), od = vload(p0 + k);
            const vf lo = VSHUFFLE(e, od, lo_m), hi = VSHUFFLE(e, od, hi_m);
            if (mode == EMIT_SET) {
                vstore(y + 2 * k, lo);
                vstore(y + 2 * k + VL, hi);
            } else {
                vstore(y + 2 * k, vload(y + 2 * k) + lo);
                vstore(y + 2 * k + VL, vload(y + 2 * k + VL) + hi);
            }
        }
        for (int w = 2 * k; w < W; w++) {
            const float v = w & 1 ? p0[w >> 1] : p1[w >> 1];
            if (mode == EMIT_SET) y[w] = v;
            else y[w] += v;
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

/* Backward data as a convolution of the padded dout, din channels as outputs.
 * Stride 1: one pass, W'[c][oc][t] = W[oc][c][8 - t] (swapped, flipped), offsets as forward.
 * Stride 2: din pixel (h, w) = padded (2i + a, 2j + b) collects the taps with kh % 2 = a,
 * kw % 2 = b, from dout (i - kh / 2, j - kw / 2): one pass per phase (a, b) over (i, j) with
 * those taps at offsets (1 - kh / 2) R + 1 - kw / 2 of the padded dout. */
typedef struct {
    int ntap[4], off[4][9], tap[4][9]; /* per pass: taps, their dout offsets and kernel index */
    size_t wofs[4];                    /* packed weights of each pass */
    int npass;
} bwd_taps;

static bwd_taps bwd_taps_of(const plan *g, int C, int OC) {
    bwd_taps bt;
    memset(&bt, 0, sizeof bt);
    size_t ofs = 0;
    if (g->s == 1) {
        bt.npass = 1;
        bt.ntap[0] = 9;
        for (int t = 0; t < 9; t++) {
            bt.off[0][t] = g->off[t];
            bt.tap[0][t] = 8 - t;
        }
        return bt;
    }
    bt.npass = 4;
    for (int ph = 0; ph < 4; ph++) {
        const int a = ph >> 1, b = ph & 1;
        bt.wofs[ph] = ofs;
        for (int kh = a; kh < 3; kh += 2)
            for (int kw = b; kw < 3; kw += 2) {
                const int n = bt.ntap[ph]++;
                bt.off[ph][n] = (1 - kh / 2) * g->R + 1 - kw / 2;
                bt.tap[ph][n] = kh * 3 + kw;
            }
        ofs += (size_t)round_up(C, OCB) * OC * bt.ntap[ph];
    }
    return bt;
}

/* per pass: wp + wofs [Cpad/OCB][OC][ntap][OCB] = W[oc][c][tap]; zeros past C */
static void pack_backward(float *wp, const float *W, int C, int OC, const bwd_taps *bt) {
    for (int ps = 0; ps < bt->npass; ps++) {
        float *w = wp + bt->wofs[ps];
        for (int cb = 0; cb < C; cb += OCB)
            for (int oc = 0; oc < OC; oc++)
                for (int t = 0; t < bt->ntap[ps]; t++)
                    for (int i = 0; i < OCB; i++, w++) {
                        const int c = cb + i;
                        *w = c < C ? W[((size_t)oc * C + c) * 9 + bt->tap[ps][t]] : 0.0f;
                    }
    }
}

void conv_direct_forward(float *out, const float *in, const float *W, const float *b, int B,
                         const conv_dims *d, float *scratch) {
    const plan g = plan_of(d);
    const int C = d->C, OC = d->OC, nblk = (OC + OCB - 1) / OCB;
    const size_t shared = shared_floats(d), per = thread_floats(d);
    const size_t in_sz = (size_t)C * g.H * g.W, plane = (size_t)g.OH * g.OW;
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
        float *ob = align_up(xp + (size_t)C * g.cs);
        long cur = -1;
        for (long it = lo; it < hi; it++) {
            const long n = it / nblk;
            const int blk = (int)(it % nblk);
            if (n != cur) {
                pad_input(xp, in + in_sz * (size_t)n, C, &g);
                cur = n;
            }
            conv_block(ob, g.ldo, g.nvec, xp, g.cs, g.off, 9, wp + (size_t)blk * C * 9 * OCB, C);
            for (int i = 0; i < OCB && blk * OCB + i < OC; i++) {
                const int oc = blk * OCB + i;
                emit(out + ((size_t)n * OC + oc) * plane, ob + (size_t)i * g.ldo, g.OH, g.OW, g.R,
                     mode, b[oc]);
            }
        }
    }
}

/* pw[((oc * C + c) * 9) + kh * 3 + kw] += sum over the m samples' output pixels p of
 * dout[oc][p] x[c][p + off[kh * 3 + kw]]: xs (m, C, cs) and ds (m, OCpad, Sd) padded */
static void dw_group(float *pw, const float *xs, const float *ds, int m, int C, int OC,
                     const plan *g) {
    const int OCp = round_up(OC, OCB);
    const size_t S = g->Sd, n = (size_t)g->nvec * VL, d0 = (size_t)g->R + 1;
    for (int cb = 0; cb < OC; cb += OCB) {
        const int live = OC - cb < OCB ? OC - cb : OCB;
        for (int c = 0; c < C; c++)
            for (int kh = 0; kh < 3; kh++) {
                vf acc[OCB][3];
                const vf z = vset1(0.0f);
                for (int i = 0; i < OCB; i++) acc[i][0] = acc[i][1] = acc[i][2] = z;
                for (int j = 0; j < m; j++) {
                    const float *x = xs + ((size_t)j * C + c) * g->cs;
                    const float *xa = x + g->off[kh * 3], *xb = x + g->off[kh * 3 + 1],
                                *xc = x + g->off[kh * 3 + 2];
                    const float *dd = ds + ((size_t)j * OCp + cb) * S + d0;
                    for (size_t q = 0; q < n; q += VL) {
                        const vf x0 = vload(xa + q), x1 = vload(xb + q), x2 = vload(xc + q);
                        for (int i = 0; i < OCB; i++) {
                            vf dv = vload(dd + i * S + q);
                            /* one load, three uses: keeps GCC from folding it into each FMA */
                            KEEP_IN_REG(dv);
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
    const plan g = plan_of(d);
    const int C = d->C, OC = d->OC, OCp = round_up(OC, OCB), G = group_of(&g);
    const size_t shared = shared_floats(d), per = thread_floats(d);
    const size_t plane = (size_t)g.H * g.W, in_sz = (size_t)C * plane;
    const size_t out_sz = (size_t)OC * g.OH * g.OW;
    const size_t wsz = (size_t)OC * C * 9, part = wsz + (size_t)OC;
    const bwd_taps bt = bwd_taps_of(&g, C, OC);
    float *wp = scratch;
    if (din) pack_backward(wp, W, C, OC, &bt);
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
        /* dW reads each dout plane from offset R + 1: shifted so those loads are aligned */
        float *ds = align_up(xs + (size_t)G * C * g.cs) + (VL - (g.R + 1) % VL) % VL;
        float *ob = align_up(ds + (size_t)G * OCp * g.Sd);
        float *pw = dW_partial + part * (size_t)t, *pb = pw + wsz;
        memset(pw, 0, sizeof(float) * part);
        for (int n0 = lo; n0 < hi; n0 += G) {
            const int m = hi - n0 < G ? hi - n0 : G;
            pad_input(xs, in + in_sz * (size_t)n0, m * C, &g);
            for (int j = 0; j < m; j++) {
                float *dj = ds + (size_t)j * OCp * g.Sd;
                pad_planes(dj, dout + out_sz * (size_t)(n0 + j), OC, g.OH, g.OW, g.R, g.Sd, pb,
                           OC);
                memset(dj + (size_t)OC * g.Sd, 0, sizeof(float) * (size_t)(OCp - OC) * g.Sd);
            }
            dw_group(pw, xs, ds, m, C, OC, &g);
            if (!din) continue;
            for (int j = 0; j < m; j++) {
                const float *dj = ds + (size_t)j * OCp * g.Sd;
                float *dx = din + in_sz * (size_t)(n0 + j);
                for (int cb = 0; cb < C; cb += OCB) {
                    /* one row buffer per pass (phase) */
                    const size_t ph_stride = (size_t)OCB * g.ldo;
                    for (int ps = 0; ps < bt.npass; ps++) {
                        const int ntap = bt.ntap[ps];
                        conv_block(ob + ph_stride * ps, g.ldo, g.nvec_b, dj, g.Sd, bt.off[ps],
                                   ntap, wp + bt.wofs[ps] + (size_t)cb * OC * ntap, OC);
                    }
                    for (int i = 0; i < OCB && cb + i < C; i++) {
                        float *y = dx + (size_t)(cb + i) * plane;
                        const float *o = ob + (size_t)i * g.ldo;
                        if (g.s == 1) emit(y, o, g.H, g.W, g.R, mode, 0.0f);
                        else emit_phases(y, o, ph_stride, &g, mode);
                    }
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
