/* Winograd convolution F(m x m, 3 x 3), stride 1, pad 1 (see conv_winograd.h; Lavin and Gray,
 * "Fast Algorithms for Convolutional Neural Networks", 2016).
 *
 * The output is cut into m x m tiles; tile (i, j) reads the a x a input patch (a = m + 2) at
 * rows i m - 1 .., columns j m - 1 .. of the image (zeros outside). For one channel pair,
 *   y = A^T [ (G g G^T) .* (B^T d B) ] A,
 * so with U = G g G^T per kernel and V = B^T d B per patch and input channel, each of the a^2
 * transform points xi is an ordinary matrix product over channels:
 *   M[xi][tile][k] = sum_c V[xi][tile][c] U[xi][c][k],
 * and the outputs are A^T M A per tile and output channel. F(4,3) (a = 6, points 0, +-1, +-2,
 * infinity) does 36 multiplies for 16 outputs where the direct conv does 144; F(2,3) (a = 4)
 * serves maps of at most 2x2, where a 4x4 tile would be mostly padding.
 *
 * Layout: every vector runs over channels. Each image is copied into a zero-bordered
 * channel-last buffer X[h][w][c] (c padded to a whole vector), so a tile's patch for VL channels
 * is a^2 vector loads and the input transform is vector arithmetic. The products run over a
 * block of tiles (several images when the maps are small, ~128 tiles) with a register tile of
 * TB tiles x KV vectors of output channels; the output transform writes a channel-last image
 * Y[h][w][k], with the bias and relu, which is then copied out to NCHW.
 *
 * The input gradient is the same computation on dout (W's taps flipped, channels swapped). The
 * weight gradient transforms dout by A (dM = A dY A^T per tile), takes dU[xi] = V[xi]^T dM[xi]
 * summed over the tiles, and maps back with dW = G^T dU G.
 *
 * Threads: blocks of images go to whichever thread is free, each with its own buffers; U is
 * built once per call, shared. The weight gradient's blocks are transformed by all threads,
 * then each transform point's product is summed by one thread in tile order. So no result
 * depends on the thread count. Rounding differs from the direct conv by a few ulps of the
 * largest partial sums: the transforms scale by up to 8 (A) and 1/24 (G). An infinite input
 * turns its whole tile into NaN (inf - inf in the transform) where the direct conv gives inf. */
#include "core/conv_winograd.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "core/simd.h"

/* register tile of the products: ACC accumulators = TB(kv) tiles x kv vectors, kv <= KVMAX */
#if VL == 16
#define ACC 24
#define KVMAX 4
#elif VL == 8
#define ACC 12
#define KVMAX 2
#else
#define ACC 8
#define KVMAX 2
#endif

#define TILES_PER_BLOCK 128 /* product rows per block: U (C x Kp per point) is reused that often */
/* the weight gradient (see dw_groups): blocks of a run, blocks split by point, most runs, and
 * most floats of the runs' partial sums together */
#define DW_RUN_TILES 128
#define DW_POINT_TILES 512
#define DW_GROUPS 8
#define DW_GROUPS_MAX_FLOATS (2u << 20)

typedef struct {
    int m, a, A2;      /* output tile side, patch side, transform points */
    int C, K, H, W;    /* input channels, output channels, map (same in and out) */
    int TH, TW, Timg;  /* tiles per column, per row, per image */
    int Cp, Kp;        /* channels rounded up to whole vectors */
    int Hp, Wp;        /* the zero-bordered input: TH m + 2 rows of TW m + 2 */
    int nb, NTp;       /* images per block and product rows per block (a multiple of ACC) */
} wplan;

static int round_up(int n, int m) { return (n + m - 1) / m * m; }

static wplan wplan_blocks(int C, int K, int H, int W, int tiles_per_block) {
    wplan p;
    p.m = H <= 2 && W <= 2 ? 2 : 4;
    p.a = p.m + 2;
    p.A2 = p.a * p.a;
    p.C = C, p.K = K, p.H = H, p.W = W;
    p.TH = (H + p.m - 1) / p.m;
    p.TW = (W + p.m - 1) / p.m;
    p.Timg = p.TH * p.TW;
    p.Cp = round_up(C, VL);
    p.Kp = round_up(K, VL);
    p.Hp = p.TH * p.m + 2;
    p.Wp = p.TW * p.m + 2;
    p.nb = (tiles_per_block + p.Timg - 1) / p.Timg;
    if (p.nb > 64) p.nb = 64;
    p.NTp = round_up(p.nb * p.Timg, ACC);
    return p;
}

static wplan wplan_of(int C, int K, int H, int W) {
    return wplan_blocks(C, K, H, W, TILES_PER_BLOCK);
}

/* The weight gradient has two schemes. Runs (small dU): the blocks of the batch are split into
 * ng runs of consecutive blocks, ng a power of two <= DW_GROUPS that depends on the shape and
 * the batch only. Each run is one thread's from start to end: it transforms a block and at once
 * sums the products of every point into the run's own dU while V and dM are still in its
 * cache; the runs' dU are added in run order at the end. Points (dU too large to keep ng
 * copies, or a single block): all threads transform a block, then each point's products run on
 * one thread. Either way no result depends on the thread count. On ResNet-20's shapes (AVX2)
 * runs took 0.75-0.9x the time of points. */
static int dw_groups(int C, int K, int H, int W, int B) {
    const wplan p = wplan_blocks(C, K, H, W, DW_RUN_TILES);
    const size_t u = (size_t)p.A2 * p.Cp * p.Kp;
    const int nblocks = (B + p.nb - 1) / p.nb;
    int ng = DW_GROUPS;
    while (ng > 1 && (ng > nblocks || (size_t)ng * u > DW_GROUPS_MAX_FLOATS)) ng /= 2;
    return ng;
}

int conv_winograd_min_channels(int backward) {
#if VL >= 16
    (void)backward;
    return backward ? 48 : 32; /* AVX-512: see winograd_pick in layers.c */
#else
    /* 8 (or 4) lanes: the direct kernel's register tile shrinks with the vectors while the
     * Winograd transforms' cost per channel does not grow, so Winograd wins from 16 channels.
     * AVX2 machine, 2026-11-25, `build/bench/bench_conv 128 2 winograd` vs the AVX-512 picks,
     * ms forward / backward: 16x32x32 3.92 / 10.1 vs 6.55 / 13.6 (direct); 32x16x16 backward
     * 7.33 vs 13.7 (direct); ResNet-20's convs per training step 210 vs 267 ms. */
    (void)backward;
    return 16;
#endif
}

int conv_winograd_supported(const conv_dims *d) {
    return d->KH == 3 && d->KW == 3 && d->stride == 1 && d->pad == 1 && d->OH == d->H &&
           d->OW == d->W && d->C >= 1 && d->OC >= 1 && d->H >= 1 && d->W >= 1;
}

/* the transformed kernels and the padded bias, shared by the threads */
static size_t shared_floats(const wplan *p) { return (size_t)p->A2 * p->C * p->Kp + p->Kp + VL; }

/* one thread: X (one image), V and M (a block), Y (one image), each aligned */
static size_t thread_floats(const wplan *p) {
    return (size_t)p->Hp * p->Wp * p->Cp + (size_t)p->A2 * p->NTp * (p->Cp + p->Kp) +
           (size_t)p->TH * p->m * p->TW * p->m * p->Kp + 5 * VL;
}

/* weight gradient by runs: the runs' dU and bias sums shared; per thread an input image in X,
 * an output-gradient image in the Y layout, one block's V and dM and its images' bias sums */
static size_t dw_runs_floats(const wplan *p, int ng) {
    return (size_t)ng * (p->A2 * p->Cp + 1) * p->Kp + (size_t)p->Hp * p->Wp * p->Cp +
           (size_t)p->TH * p->m * p->TW * p->m * p->Kp + (size_t)p->A2 * p->NTp * (p->Cp + p->Kp) +
           (size_t)p->nb * p->Kp + 8 * VL;
}

/* weight gradient by points: dU, one block's V, dM and bias sums and the batch's bias sum
 * shared (dw_points_shared); per thread X and Y as above */
static size_t dw_points_shared(const wplan *p) {
    return (size_t)p->A2 * p->Cp * p->Kp + (size_t)p->A2 * p->NTp * (p->Cp + p->Kp) +
           (size_t)(p->nb + 1) * p->Kp + 6 * VL;
}

static size_t dw_points_floats(const wplan *p) {
    return dw_points_shared(p) + (size_t)p->Hp * p->Wp * p->Cp +
           (size_t)p->TH * p->m * p->TW * p->m * p->Kp + 3 * VL;
}

size_t conv_winograd_scratch_per_thread(const conv_dims *d) {
    if (!conv_winograd_supported(d)) return 0;
    /* all three: forward C -> OC, input gradient OC -> C, weight gradient */
    const wplan f = wplan_of(d->C, d->OC, d->H, d->W), b = wplan_of(d->OC, d->C, d->H, d->W);
    const size_t sf = shared_floats(&f) + thread_floats(&f);
    const size_t sb = shared_floats(&b) + thread_floats(&b);
    const wplan wr = wplan_blocks(d->C, d->OC, d->H, d->W, DW_RUN_TILES);
    const wplan wp = wplan_blocks(d->C, d->OC, d->H, d->W, DW_POINT_TILES);
    const size_t sr = dw_runs_floats(&wr, dw_groups(d->C, d->OC, d->H, d->W, 1 << 30));
    const size_t spt = dw_points_floats(&wp), sw = sr > spt ? sr : spt;
    const size_t m = sf > sb ? sf : sb;
    return m > sw ? m : sw;
}

static float *align_up(float *p) {
    const uintptr_t a = VL * sizeof(float);
    return (float *)(((uintptr_t)p + a - 1) & ~(a - 1));
}

/* ---------------------------------------------------------------- the three transforms */

/* F(4,3): o[i * so] = (B^T d)[i], d[i * sd], 6 points */
static inline __attribute__((always_inline)) void bt6(vf *o, int so, const vf *d, int sd) {
    const vf d0 = d[0], d1 = d[sd], d2 = d[2 * sd], d3 = d[3 * sd], d4 = d[4 * sd],
             d5 = d[5 * sd];
    const vf four = vset1(4.0f), m5 = vset1(-5.0f), two = vset1(2.0f);
    const vf s12 = d1 + d2, s34 = d3 + d4, t12 = d1 - d2, t43 = d4 - d3;
    const vf u = d4 - d2, w = d3 - d1;
    o[0] = vfma(four, d0, vfma(m5, d2, d4));
    o[so] = s34 - four * s12;
    o[2 * so] = vfma(four, t12, t43);
    o[3 * so] = vfma(two, w, u);
    o[4 * so] = u - two * w;
    o[5 * so] = vfma(four, d1, vfma(m5, d3, d5));
}

/* F(4,3): o[i * so] = (A^T m)[i], 4 outputs from 6 points */
static inline __attribute__((always_inline)) void at6(vf *o, int so, const vf *x, int sx) {
    const vf m0 = x[0], m1 = x[sx], m2 = x[2 * sx], m3 = x[3 * sx], m4 = x[4 * sx],
             m5 = x[5 * sx];
    const vf p12 = m1 + m2, q12 = m1 - m2, p34 = m3 + m4, q34 = m3 - m4;
    const vf two = vset1(2.0f), four = vset1(4.0f), eight = vset1(8.0f);
    o[0] = m0 + p12 + p34;
    o[so] = vfma(two, q34, q12);
    o[2 * so] = vfma(four, p34, p12);
    o[3 * so] = vfma(eight, q34, q12) + m5;
}

/* F(2,3): B^T d, 4 points */
static inline __attribute__((always_inline)) void bt4(vf *o, int so, const vf *d, int sd) {
    const vf d0 = d[0], d1 = d[sd], d2 = d[2 * sd], d3 = d[3 * sd];
    o[0] = d0 - d2;
    o[so] = d1 + d2;
    o[2 * so] = d2 - d1;
    o[3 * so] = d1 - d3;
}

/* F(2,3): A^T m, 2 outputs from 4 points */
static inline __attribute__((always_inline)) void at4(vf *o, int so, const vf *x, int sx) {
    const vf m0 = x[0], m1 = x[sx], m2 = x[2 * sx], m3 = x[3 * sx];
    o[0] = m0 + m1 + m2;
    o[so] = m1 - m2 - m3;
}

/* F(4,3): o[i * so] = (A y)[i], 6 points from 4 output-gradient values (the transpose of at6) */
static inline __attribute__((always_inline)) void a6(vf *o, int so, const vf *y, int sy) {
    const vf y0 = y[0], y1 = y[sy], y2 = y[2 * sy], y3 = y[3 * sy];
    const vf two = vset1(2.0f), four = vset1(4.0f), eight = vset1(8.0f);
    const vf e = y0 + y2, f = y1 + y3, g = vfma(four, y2, y0), h = vfma(eight, y3, two * y1);
    o[0] = y0;
    o[so] = e + f;
    o[2 * so] = e - f;
    o[3 * so] = g + h;
    o[4 * so] = g - h;
    o[5 * so] = y3;
}

/* F(2,3): A y, 4 points from 2 values */
static inline __attribute__((always_inline)) void a4(vf *o, int so, const vf *y, int sy) {
    const vf y0 = y[0], y1 = y[sy];
    o[0] = y0;
    o[so] = y0 + y1;
    o[2 * so] = y0 - y1;
    o[3 * so] = vset1(0.0f) - y1;
}

/* G^T h: 3 kernel-tap gradients from a transform points (the transpose of gk) */
static inline __attribute__((always_inline)) void gkt(vf *o, int os, const vf *h, int hs, int a) {
    if (a == 4) {
        const vf half = vset1(0.5f), s = half * (h[hs] + h[2 * hs]);
        o[0] = h[0] + s;
        o[os] = half * (h[hs] - h[2 * hs]);
        o[2 * os] = s + h[3 * hs];
        return;
    }
    const vf h0 = h[0], h1 = h[hs], h2 = h[2 * hs], h3 = h[3 * hs], h4 = h[4 * hs],
             h5 = h[5 * hs];
    const vf c4 = vset1(0.25f), c6 = vset1(1.0f / 6.0f), c12 = vset1(1.0f / 12.0f),
             c24 = vset1(1.0f / 24.0f);
    const vf p12 = h1 + h2, q12 = h2 - h1, p34 = h3 + h4, q34 = h3 - h4;
    o[0] = vfma(c4, h0, vfma(c24, p34, (vset1(0.0f) - c6) * p12));
    o[os] = vfma(c6, q12, c12 * q34);
    o[2 * os] = vfma(c6, p34 - p12, h5);
}

/* G g for one column of 3 kernel taps g[0], g[gs], g[2 gs] -> a values o[i * os] */
static inline __attribute__((always_inline)) void gk(vf *o, int os, const vf *g, int gs, int a) {
    const vf g0 = g[0], g1 = g[gs], g2 = g[2 * gs];
    if (a == 4) {
        const vf h = vset1(0.5f), s = g0 + g2;
        o[0] = g0;
        o[os] = h * (s + g1);
        o[2 * os] = h * (s - g1);
        o[3 * os] = g2;
        return;
    }
    const vf q = vset1(0.25f), sx = vset1(-1.0f / 6.0f);
    const vf c24 = vset1(1.0f / 24.0f), c12 = vset1(1.0f / 12.0f), c6 = vset1(1.0f / 6.0f);
    const vf s = g0 + g2;
    const vf e = vfma(c24, g0, c6 * g2);
    o[0] = q * g0;
    o[os] = sx * (s + g1);
    o[2 * os] = sx * (s - g1);
    o[3 * os] = vfma(c12, g1, e);
    o[4 * os] = e - c12 * g1;
    o[5 * os] = g2;
}

/* U[xi][c][k] (k < Kp; zeros past K) for input channels c < C of the plan, kernels from W:
 * forward (swap 0) g(k, c) = W[k][c], backward data (swap 1) g(k, c) = W[c][k] flipped, W then
 * being (C_plan, K_plan, 3, 3) i.e. (OC, C) of the layer. Vectors over k. */
static void pack_kernels(float *U, const float *W, const wplan *p, int swap, int threads) {
    const int C = p->C, K = p->K, Kp = p->Kp, a = p->a;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int c = 0; c < C; c++)
        for (int k0 = 0; k0 < Kp; k0 += VL) {
            vf g[9], t[18], u[36];
            for (int tp = 0; tp < 9; tp++) {
                float lane[VL];
                for (int l = 0; l < VL; l++) {
                    const int k = k0 + l;
                    lane[l] = k >= K ? 0.0f
                              : swap ? W[((size_t)c * K + k) * 9 + 8 - tp]
                                     : W[((size_t)k * C + c) * 9 + tp];
                }
                g[tp] = vload(lane);
            }
            for (int j = 0; j < 3; j++) gk(t + j, 3, g + j, 3, a); /* G g: a x 3 */
            for (int i = 0; i < a; i++) gk(u + i * a, 1, t + i * 3, 1, a); /* (G g) G^T */
            for (int x = 0; x < a * a; x++) vstore(U + ((size_t)x * C + c) * Kp + k0, u[x]);
        }
}

/* dst + h * rw + w * np + c = src[c][h][w] for an H x W image of n channels, channels n .. np
 * (np a multiple of VL) set to zero. Pixels are taken VL at a time in plane order (across rows
 * when W < VL), VL channels by VL pixels transposed in registers; rw >= W np. With csum, also
 * csum[c] = the sum of channel c's plane (np entries): the bias gradient, made while the
 * plane passes through registers instead of in a pass of its own. */
static inline __attribute__((always_inline)) void channel_last_m(float *dst, size_t rw,
                                                                 const float *src, int n, int np,
                                                                 int H, int W, float *csum) {
    const int HW = H * W;
    const vf z = vset1(0.0f);
    for (int cb = 0; cb < np; cb += VL) {
        int q = 0;
        vf acc = z;
        for (; q + VL <= HW; q += VL) {
            vf r[VL];
            for (int i = 0; i < VL; i++)
                r[i] = cb + i < n ? vload(src + (size_t)(cb + i) * HW + q) : z;
            vtranspose(r);
            float *x = dst + (size_t)(q / W) * rw + (size_t)(q % W) * np + cb;
            for (int i = 0, w = q % W; i < VL; i++) {
                vstore(x, r[i]);
                x += np;
                if (++w == W) w = 0, x += rw - (size_t)W * np; /* next row */
            }
            if (csum) {
                vf t = r[0];
                for (int i = 1; i < VL; i++) t += r[i];
                acc += t;
            }
        }
        if (csum) vstore(csum + cb, acc);
        for (; q < HW; q++) {
            float *x = dst + (size_t)(q / W) * rw + (size_t)(q % W) * np + cb;
            for (int i = 0; i < VL; i++) x[i] = cb + i < n ? src[(size_t)(cb + i) * HW + q] : 0.0f;
            if (csum)
                for (int i = 0; i < VL; i++) csum[cb + i] += x[i];
        }
    }
}

static void to_channel_last(float *dst, size_t rw, const float *src, int n, int np, int H,
                            int W) {
    channel_last_m(dst, rw, src, n, np, H, W, NULL);
}

static void to_channel_last_sum(float *dst, size_t rw, const float *src, int n, int np, int H,
                                int W, float *csum) {
    channel_last_m(dst, rw, src, n, np, H, W, csum);
}

/* X[(h + 1)][(w + 1)][c] = in[c][h][w], zeros elsewhere (the border, the rows and columns past
 * the last whole tile, channels past C) */
static void to_tiles_layout(float *X, const float *in, const wplan *p) {
    const int Cp = p->Cp, Wp = p->Wp, H = p->H, W = p->W;
    const size_t row = (size_t)Wp * Cp;
    memset(X, 0, sizeof(float) * row);
    memset(X + (size_t)(H + 1) * row, 0, sizeof(float) * (size_t)(p->Hp - H - 1) * row);
    for (int h = 0; h < H; h++) {
        float *x = X + (size_t)(h + 1) * row;
        memset(x, 0, sizeof(float) * (size_t)Cp);
        memset(x + (size_t)(W + 1) * Cp, 0, sizeof(float) * (size_t)(Wp - W - 1) * Cp);
    }
    to_channel_last(X + row + Cp, row, in, p->C, Cp, H, W);
}

/* V rows t0 .. t0 + Timg - 1 of every point, from one image in X */
static inline __attribute__((always_inline)) void input_transform_m(float *V, const float *X,
                                                                     const wplan *p, int t0,
                                                                     const int m) {
    const int a = m + 2, Cp = p->Cp;
    const size_t pstride = (size_t)p->NTp * Cp;
    for (int ti = 0; ti < p->TH; ti++)
        for (int tj = 0; tj < p->TW; tj++) {
            const int t = t0 + ti * p->TW + tj;
            for (int cv = 0; cv < Cp; cv += VL) {
                vf d[36], e[36], v[36];
                const float *x = X + ((size_t)ti * m * p->Wp + (size_t)tj * m) * Cp + cv;
                for (int r = 0; r < a; r++)
                    for (int s = 0; s < a; s++) d[r * a + s] = vload(x + ((size_t)r * p->Wp + s) * Cp);
                for (int s = 0; s < a; s++) {
                    if (a == 6) bt6(e + s, a, d + s, a);
                    else bt4(e + s, a, d + s, a);
                }
                for (int r = 0; r < a; r++) {
                    if (a == 6) bt6(v + r * a, 1, e + r * a, 1);
                    else bt4(v + r * a, 1, e + r * a, 1);
                }
                float *o = V + (size_t)t * Cp + cv;
                for (int xi = 0; xi < a * a; xi++) vstore(o + xi * pstride, v[xi]);
            }
        }
}

static void input_transform(float *V, const float *X, const wplan *p, int t0) {
    if (p->m == 4) input_transform_m(V, X, p, t0, 4);
    else input_transform_m(V, X, p, t0, 2);
}

enum { OUT_BIAS, OUT_BIAS_RELU, OUT_SET, OUT_ADD };

/* Y[h][w][k] (rows of TW m) for one image from M rows t0 .., + bias (Kp), relu when asked */
static inline __attribute__((always_inline)) void output_transform_m(float *Y, const float *M,
                                                                      const float *bias,
                                                                      const wplan *p, int t0,
                                                                      int relu, const int m) {
    const int a = m + 2, Kp = p->Kp;
    const size_t pstride = (size_t)p->NTp * Kp, yw = (size_t)p->TW * m;
    for (int ti = 0; ti < p->TH; ti++)
        for (int tj = 0; tj < p->TW; tj++) {
            const int t = t0 + ti * p->TW + tj;
            for (int kv = 0; kv < Kp; kv += VL) {
                vf x[36], e[24], y[16];
                const float *mp = M + (size_t)t * Kp + kv;
                for (int xi = 0; xi < a * a; xi++) x[xi] = vload(mp + xi * pstride);
                for (int s = 0; s < a; s++) { /* columns: e (m x a) */
                    if (a == 6) at6(e + s, a, x + s, a);
                    else at4(e + s, a, x + s, a);
                }
                for (int r = 0; r < m; r++) { /* rows: y (m x m) */
                    if (a == 6) at6(y + r * m, 1, e + r * a, 1);
                    else at4(y + r * m, 1, e + r * a, 1);
                }
                const vf bv = vload(bias + kv);
                float *o = Y + ((size_t)ti * m * yw + (size_t)tj * m) * Kp + kv;
                for (int r = 0; r < m; r++)
                    for (int s = 0; s < m; s++) {
                        vf v = y[r * m + s] + bv;
                        if (relu) v = vrelu(v);
                        vstore(o + ((size_t)r * yw + s) * Kp, v);
                    }
            }
        }
}

static void output_transform(float *Y, const float *M, const float *bias, const wplan *p, int t0,
                             int relu) {
    if (p->m == 4) {
        if (relu) output_transform_m(Y, M, bias, p, t0, 1, 4);
        else output_transform_m(Y, M, bias, p, t0, 0, 4);
    } else {
        if (relu) output_transform_m(Y, M, bias, p, t0, 1, 2);
        else output_transform_m(Y, M, bias, p, t0, 0, 2);
    }
}

/* out[k][h][w] = (or +=) Y[h][w][k], VL pixels (in plane order) by VL channels transposed in
 * registers */
static void from_tiles_layout(float *out, const float *Y, const wplan *p, int add) {
    const int K = p->K, Kp = p->Kp, H = p->H, W = p->W, HW = H * W;
    const size_t yw = (size_t)p->TW * p->m;
    for (int kb = 0; kb < K; kb += VL) {
        const int nk = K - kb < VL ? K - kb : VL;
        int q = 0;
        for (; q + VL <= HW; q += VL) {
            vf r[VL];
            const float *y = Y + ((size_t)(q / W) * yw + q % W) * Kp + kb;
            for (int i = 0, w = q % W; i < VL; i++) {
                r[i] = vload(y);
                y += Kp;
                if (++w == W) w = 0, y += (yw - (size_t)W) * Kp; /* next row */
            }
            vtranspose(r);
            for (int j = 0; j < nk; j++) {
                float *o = out + (size_t)(kb + j) * HW + q;
                vstore(o, add ? vload(o) + r[j] : r[j]);
            }
        }
        for (; q < HW; q++) {
            const float *y = Y + ((size_t)(q / W) * yw + q % W) * Kp + kb;
            for (int j = 0; j < nk; j++) {
                float *o = out + (size_t)(kb + j) * HW + q;
                *o = add ? *o + y[j] : y[j];
            }
        }
    }
}

/* ---------------------------------------------------------------- the products */

/* Mo[i * ldm + j VL ..] (+)= sum over r < n of V[i * si + r * sr] U[r * ldu + j VL ..], for
 * i < tb, j < kv: forward rows are tiles (si = row length, sr = 1, r runs over channels); the
 * weight gradient's rows are input channels (si = 1, sr = row length, r runs over tiles) */
static inline __attribute__((always_inline)) void mtile(float *Mo, size_t ldm, const float *V,
                                                        size_t si, size_t sr, const float *U,
                                                        size_t ldu, int n, const int tb,
                                                        const int kv, const int add) {
    /* Every loop over the accumulators is unrolled by pragma: unrolled later by GCC's own
     * pass, acc stayed a stack array outside the main loop (a memset call on entry, a spill and
     * reload of every accumulator on exit; 3% of a ResNet-20 step in memset alone) */
    vf acc[ACC];
    const vf z = vset1(0.0f);
#pragma GCC unroll 32
    for (int i = 0; i < tb * kv; i++) acc[i] = z;
    for (int r = 0; r < n; r++, U += ldu, V += sr) {
        vf u[KVMAX];
#pragma GCC unroll 4
        for (int j = 0; j < kv; j++) u[j] = vload(U + j * VL);
#pragma GCC unroll 32
        for (int i = 0; i < tb; i++) {
            const vf v = vset1(V[i * si]);
#pragma GCC unroll 4
            for (int j = 0; j < kv; j++) acc[i * kv + j] = vfma(v, u[j], acc[i * kv + j]);
        }
    }
#pragma GCC unroll 32
    for (int i = 0; i < tb; i++)
#pragma GCC unroll 4
        for (int j = 0; j < kv; j++) {
            float *o = Mo + i * ldm + (size_t)j * VL;
            vstore(o, add ? vload(o) + acc[i * kv + j] : acc[i * kv + j]);
        }
}

static void mtile_kvmax(float *Mo, size_t ldm, const float *V, size_t ldv, const float *U,
                        size_t ldu, int C) {
    mtile(Mo, ldm, V, ldv, 1, U, ldu, C, ACC / KVMAX, KVMAX, 0);
}

#if KVMAX > 2
static void mtile_kv2(float *Mo, size_t ldm, const float *V, size_t ldv, const float *U,
                      size_t ldu, int C) {
    mtile(Mo, ldm, V, ldv, 1, U, ldu, C, ACC / 2, 2, 0);
}
#endif

static void mtile_kv1(float *Mo, size_t ldm, const float *V, size_t ldv, const float *U,
                      size_t ldu, int C) {
    mtile(Mo, ldm, V, ldv, 1, U, ldu, C, ACC, 1, 0);
}

/* M[xi] = V[xi] U[xi] for every point, rows < nt (a multiple of ACC) */
static void products(float *M, const float *V, const float *U, const wplan *p, int nt) {
    const size_t ldv = (size_t)p->Cp, ldm = (size_t)p->Kp, ldu = (size_t)p->Kp;
    const int nkv = p->Kp / VL;
    for (int xi = 0; xi < p->A2; xi++) {
        const float *Vx = V + (size_t)xi * p->NTp * ldv, *Ux = U + (size_t)xi * p->C * ldu;
        float *Mx = M + (size_t)xi * p->NTp * ldm;
        int j = 0;
        for (; j + KVMAX <= nkv; j += KVMAX)
            for (int t = 0; t < nt; t += ACC / KVMAX)
                mtile_kvmax(Mx + t * ldm + j * VL, ldm, Vx + t * ldv, ldv, Ux + j * VL, ldu, p->C);
#if KVMAX > 2
        for (; j + 2 <= nkv; j += 2)
            for (int t = 0; t < nt; t += ACC / 2)
                mtile_kv2(Mx + t * ldm + j * VL, ldm, Vx + t * ldv, ldv, Ux + j * VL, ldu, p->C);
#endif
        for (; j < nkv; j++)
            for (int t = 0; t < nt; t += ACC)
                mtile_kv1(Mx + t * ldm + j * VL, ldm, Vx + t * ldv, ldv, Ux + j * VL, ldu, p->C);
    }
}

/* ---------------------------------------------------------------- driver */

/* out (B, K, H, W) from in (B, C, H, W), U and bias already in shared (U then Kp bias) */
/* st[k][0..2] = {y0, sum (y - y0), sum (y - y0)^2} over the H x W outputs of channel k in Y, y0
 * its first output: what a following batch norm's statistics are made of (see conv_dims'
 * out_stats). The shift keeps sum (y - y0)^2 - (sum (y - y0))^2 / HW from cancelling; four
 * partial sums per channel vector break the add latency chain. */
static void output_stats(float *st, const float *Y, const wplan *p) {
    const int K = p->K, Kp = p->Kp, H = p->H, W = p->W;
    const size_t yw = (size_t)p->TW * p->m;
    for (int kv = 0; kv < Kp; kv += VL) {
        const vf y0 = vload(Y + kv), z = vset1(0.0f);
        vf s[4] = {z, z, z, z}, q[4] = {z, z, z, z};
        int i = 0;
        for (int h = 0; h < H; h++) {
            const float *y = Y + (size_t)h * yw * Kp + kv;
            for (int w = 0; w < W; w++, i = (i + 1) & 3) {
                const vf v = vload(y + (size_t)w * Kp) - y0;
                s[i] += v;
                q[i] = vfma(v, v, q[i]);
            }
        }
        const vf ss = (s[0] + s[1]) + (s[2] + s[3]), qq = (q[0] + q[1]) + (q[2] + q[3]);
        for (int l = 0; l < VL && kv + l < K; l++) {
            float *o = st + (size_t)(kv + l) * 3;
            o[0] = y0[l], o[1] = ss[l], o[2] = qq[l];
        }
    }
}

static void run(float *out, const float *in, const float *U, const float *bias, int B,
                const wplan *p, int mode, int threads, float *tscratch, size_t per,
                float *stats) {
    int T = threads < 1 ? 1 : threads;
    if (T > B) T = B;
    const size_t in_sz = (size_t)p->C * p->H * p->W, out_sz = (size_t)p->K * p->H * p->W;
    /* Blocks handed out as threads come free: the two cores of the machine this was tuned on
     * run at different speeds (a static half each left one idle ~15% of the time). At least
     * 4 blocks per thread where that keeps >= 64 tiles per block (U's reuse). */
    int nb = p->nb;
    const int want = (B + 4 * T - 1) / (4 * T), floor_nb = (64 + p->Timg - 1) / p->Timg;
    if (want < nb) nb = want > floor_nb ? want : floor_nb < nb ? floor_nb : nb;
    const int nblocks = (B + nb - 1) / nb;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        float *X = align_up(tscratch + per * (size_t)t);
        float *V = align_up(X + (size_t)p->Hp * p->Wp * p->Cp);
        float *M = align_up(V + (size_t)p->A2 * p->NTp * p->Cp);
        float *Y = align_up(M + (size_t)p->A2 * p->NTp * p->Kp);
#pragma omp for schedule(dynamic, 1)
        for (int blk = 0; blk < nblocks; blk++) {
            const int n0 = blk * nb, m = B - n0 < nb ? B - n0 : nb;
            const int nt_used = m * p->Timg, ntr = round_up(nt_used, ACC);
            for (int j = 0; j < m; j++) {
                to_tiles_layout(X, in + in_sz * (size_t)(n0 + j), p);
                input_transform(V, X, p, j * p->Timg);
            }
            if (ntr > nt_used) /* rows the register tiles compute and nobody reads */
                for (int xi = 0; xi < p->A2; xi++)
                    memset(V + ((size_t)xi * p->NTp + nt_used) * p->Cp, 0,
                           sizeof(float) * (size_t)(ntr - nt_used) * p->Cp);
            products(M, V, U, p, ntr);
            for (int j = 0; j < m; j++) {
                output_transform(Y, M, bias, p, j * p->Timg, mode == OUT_BIAS_RELU);
                if (stats) output_stats(stats + (size_t)(n0 + j) * p->K * 3, Y, p);
                from_tiles_layout(out + out_sz * (size_t)(n0 + j), Y, p, mode == OUT_ADD);
            }
        }
    }
}

void conv_winograd_forward(float *out, const float *in, const float *W, const float *b, int B,
                           const conv_dims *d, float *scratch) {
    const wplan p = wplan_of(d->C, d->OC, d->H, d->W);
    float *U = align_up(scratch), *bias = align_up(U + (size_t)p.A2 * p.C * p.Kp);
    const int T = d->threads < 1 ? 1 : d->threads;
    pack_kernels(U, W, &p, 0, T);
    for (int k = 0; k < p.Kp; k++) bias[k] = k < p.K ? b[k] : 0.0f;
    const size_t per = conv_winograd_scratch_per_thread(d) - (shared_floats(&p) + VL);
    run(out, in, U, bias, B, &p, d->out_relu ? OUT_BIAS_RELU : OUT_BIAS, T,
        scratch + shared_floats(&p) + VL, per, d->out_stats);
}

void conv_winograd_backward_data(float *din, const float *dout, const float *W, int B,
                                 const conv_dims *d, float *scratch) {
    const wplan p = wplan_of(d->OC, d->C, d->H, d->W);
    float *U = align_up(scratch), *zero = align_up(U + (size_t)p.A2 * p.C * p.Kp);
    const int T = d->threads < 1 ? 1 : d->threads;
    pack_kernels(U, W, &p, 1, T);
    memset(zero, 0, sizeof(float) * (size_t)p.Kp);
    const size_t per = conv_winograd_scratch_per_thread(d) - (shared_floats(&p) + VL);
    run(din, dout, U, zero, B, &p, d->din_set ? OUT_SET : OUT_ADD, T,
        scratch + shared_floats(&p) + VL, per, NULL);
}

/* ---------------------------------------------------------------- weight gradient */

/* Y-layout image (rows of TW m, zeros past H and W and channels past K) of one sample's output
 * gradient */
static void grad_to_tiles_layout(float *Yg, const float *dout, const wplan *p, float *csum) {
    const size_t yw = (size_t)p->TW * p->m;
    if ((size_t)p->W < yw || p->H < p->TH * p->m)
        memset(Yg, 0, sizeof(float) * (size_t)p->TH * p->m * yw * p->Kp);
    to_channel_last_sum(Yg, yw * p->Kp, dout, p->K, p->Kp, p->H, p->W, csum);
}

/* dM[xi][t][k] = (A dY A^T)[xi] of each tile's m x m output gradient, rows t0 .. */
static inline __attribute__((always_inline)) void grad_transform_m(float *dM, const float *Yg,
                                                                    const wplan *p, int t0,
                                                                    const int m) {
    const int a = m + 2, Kp = p->Kp;
    const size_t pstride = (size_t)p->NTp * Kp, yw = (size_t)p->TW * m;
    for (int ti = 0; ti < p->TH; ti++)
        for (int tj = 0; tj < p->TW; tj++) {
            const int t = t0 + ti * p->TW + tj;
            for (int kv = 0; kv < Kp; kv += VL) {
                vf y[16], e[24], x[36];
                const float *yp = Yg + ((size_t)ti * m * yw + (size_t)tj * m) * Kp + kv;
                for (int r = 0; r < m; r++)
                    for (int c = 0; c < m; c++) y[r * m + c] = vload(yp + ((size_t)r * yw + c) * Kp);
                for (int c = 0; c < m; c++) { /* columns: e (a x m) */
                    if (a == 6) a6(e + c, m, y + c, m);
                    else a4(e + c, m, y + c, m);
                }
                for (int r = 0; r < a; r++) { /* rows: x (a x a) */
                    if (a == 6) a6(x + r * a, 1, e + r * m, 1);
                    else a4(x + r * a, 1, e + r * m, 1);
                }
                float *o = dM + (size_t)t * Kp + kv;
                for (int xi = 0; xi < a * a; xi++) vstore(o + xi * pstride, x[xi]);
            }
        }
}

static void grad_transform(float *dM, const float *Yg, const wplan *p, int t0) {
    if (p->m == 4) grad_transform_m(dM, Yg, p, t0, 4);
    else grad_transform_m(dM, Yg, p, t0, 2);
}

/* register tile of the weight-gradient products: DACC accumulators = tb input channels x kv
 * vectors of output channels with tb = DACC / kv dividing Cp (a whole number of vectors) */
#if VL == 16
#define DACC 16
#elif VL == 8
#define DACC 8
#else
#define DACC 4
#endif

static void dutile_kvmax(float *dU, size_t ldu, const float *V, size_t ldv, const float *dM,
                         size_t ldm, int nt) {
    mtile(dU, ldu, V, 1, ldv, dM, ldm, nt, DACC / KVMAX, KVMAX, 1);
}

#if VL == 8
/* AVX2: 6 input channels x 2 vectors, the forward's 12 accumulators (with the 2 loads and a
 * broadcast they fill the 16 registers); Cp = 8 j leaves 0, 2 or 4 channels for the 4 x 2 tile.
 * 8 accumulators left the FMAs waiting on loads: the weight gradient ran at 1.5-1.7x the
 * forward's time */
static void dutile_6x2(float *dU, size_t ldu, const float *V, size_t ldv, const float *dM,
                       size_t ldm, int nt) {
    mtile(dU, ldu, V, 1, ldv, dM, ldm, nt, 6, 2, 1);
}
static void dutile_2x2(float *dU, size_t ldu, const float *V, size_t ldv, const float *dM,
                       size_t ldm, int nt) {
    mtile(dU, ldu, V, 1, ldv, dM, ldm, nt, 2, 2, 1);
}
#endif

#if KVMAX > 2
static void dutile_kv2(float *dU, size_t ldu, const float *V, size_t ldv, const float *dM,
                       size_t ldm, int nt) {
    mtile(dU, ldu, V, 1, ldv, dM, ldm, nt, DACC / 2, 2, 1);
}
#endif

static void dutile_kv1(float *dU, size_t ldu, const float *V, size_t ldv, const float *dM,
                       size_t ldm, int nt) {
    mtile(dU, ldu, V, 1, ldv, dM, ldm, nt, DACC, 1, 1);
}

/* dU[xi] (Cp x Kp) += V[xi]^T dM[xi] over tiles < nt */
static void dw_products(float *dU, const float *V, const float *dM, const wplan *p, int xi,
                        int nt) {
    const size_t ldv = (size_t)p->Cp, ldm = (size_t)p->Kp, ldu = (size_t)p->Kp;
    const float *Vx = V + (size_t)xi * p->NTp * ldv, *Mx = dM + (size_t)xi * p->NTp * ldm;
    float *Ux = dU + (size_t)xi * p->Cp * ldu;
    const int nkv = p->Kp / VL;
    int j = 0;
#if VL == 8
    for (; j + 2 <= nkv; j += 2) {
        int c = 0;
        for (; c + 6 <= p->Cp; c += 6)
            dutile_6x2(Ux + c * ldu + j * VL, ldu, Vx + c, ldv, Mx + j * VL, ldm, nt);
        if (p->Cp - c == 4)
            dutile_kvmax(Ux + c * ldu + j * VL, ldu, Vx + c, ldv, Mx + j * VL, ldm, nt);
        else if (p->Cp - c == 2)
            dutile_2x2(Ux + c * ldu + j * VL, ldu, Vx + c, ldv, Mx + j * VL, ldm, nt);
    }
#else
    for (; j + KVMAX <= nkv; j += KVMAX)
        for (int c = 0; c < p->Cp; c += DACC / KVMAX)
            dutile_kvmax(Ux + c * ldu + j * VL, ldu, Vx + c, ldv, Mx + j * VL, ldm, nt);
#endif
#if KVMAX > 2
    for (; j + 2 <= nkv; j += 2)
        for (int c = 0; c < p->Cp; c += DACC / 2)
            dutile_kv2(Ux + c * ldu + j * VL, ldu, Vx + c, ldv, Mx + j * VL, ldm, nt);
#endif
    for (; j < nkv; j++)
        for (int c = 0; c < p->Cp; c += DACC)
            dutile_kv1(Ux + c * ldu + j * VL, ldu, Vx + c, ldv, Mx + j * VL, ldm, nt);
}

/* dW[k][c] += G^T dU[.][c][k] G (3 x 3 of each a x a), vectors over k, where dU is the sum of
 * the ng runs' partial sums (ustride floats apart), added in run order */
static void unpack_gradients(float *dW, const float *dU, size_t ustride, int ng, const wplan *p,
                             int threads) {
    const int C = p->C, K = p->K, Kp = p->Kp, Cp = p->Cp, a = p->a;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int c = 0; c < C; c++)
        for (int k0 = 0; k0 < Kp; k0 += VL) {
            vf u[36], t[18], g[9];
            for (int x = 0; x < a * a; x++) {
                const float *q = dU + ((size_t)x * Cp + c) * Kp + k0;
                u[x] = vload(q);
                for (int r = 1; r < ng; r++) u[x] += vload(q + ustride * (size_t)r);
            }
            for (int j = 0; j < a; j++) gkt(t + j, a, u + j, a, a);      /* G^T dU: 3 x a */
            for (int i = 0; i < 3; i++) gkt(g + i * 3, 1, t + i * a, 1, a); /* (G^T dU) G */
            for (int tp = 0; tp < 9; tp++)
                for (int l = 0; l < VL && k0 + l < K; l++)
                    dW[((size_t)(k0 + l) * C + c) * 9 + tp] += g[tp][l];
        }
}

/* image n0 + j's transforms into V and dM (tile rows from j Timg) through the calling thread's
 * image buffers X and Yg, and its bias-gradient sums into sums + j Kp */
static void dw_transform_image(float *V, float *dM, float *X, float *Yg, float *sums,
                               const float *in, const float *dout, int n0, int j,
                               const wplan *p) {
    const size_t in_sz = (size_t)p->C * p->H * p->W, out_sz = (size_t)p->K * p->H * p->W;
    to_tiles_layout(X, in + in_sz * (size_t)(n0 + j), p);
    input_transform(V, X, p, j * p->Timg);
    grad_to_tiles_layout(Yg, dout + out_sz * (size_t)(n0 + j), p, sums + (size_t)j * p->Kp);
    grad_transform(dM, Yg, p, j * p->Timg);
}

static void dw_runs(float *dW, float *db, const float *dout, const float *in, int B, int ng,
                    const conv_dims *d, float *scratch) {
    const wplan p = wplan_blocks(d->C, d->OC, d->H, d->W, DW_RUN_TILES);
    const size_t ustride = (size_t)p.A2 * p.Cp * p.Kp; /* a multiple of VL */
    const size_t per = conv_winograd_scratch_per_thread(d);
    const int T = d->threads < 1 ? 1 : d->threads;
    const int nblocks = (B + p.nb - 1) / p.nb;
    /* thread 0's share is large enough for all runs' dU and bias sums */
    float *dU = align_up(scratch), *dbr = align_up(dU + ustride * (size_t)ng);
    memset(dU, 0, sizeof(float) * ustride * (size_t)ng);
    memset(dbr, 0, sizeof(float) * (size_t)ng * p.Kp);
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        float *X = align_up(t ? scratch + per * (size_t)t : dbr + (size_t)ng * p.Kp);
        float *Yg = align_up(X + (size_t)p.Hp * p.Wp * p.Cp);
        float *V = align_up(Yg + (size_t)p.TH * p.m * p.TW * p.m * p.Kp);
        float *dM = align_up(V + (size_t)p.A2 * p.NTp * p.Cp);
        float *sums = align_up(dM + (size_t)p.A2 * p.NTp * p.Kp);
#pragma omp for schedule(static)
        for (int g = 0; g < ng; g++) {
            float *dUg = dU + ustride * (size_t)g, *dbg = dbr + (size_t)g * p.Kp;
            const int b1 = (int)((long)nblocks * (g + 1) / ng);
            for (int blk = (int)((long)nblocks * g / ng); blk < b1; blk++) {
                const int n0 = blk * p.nb, nb = B - n0 < p.nb ? B - n0 : p.nb;
                for (int j = 0; j < nb; j++)
                    dw_transform_image(V, dM, X, Yg, sums, in, dout, n0, j, &p);
                for (int xi = 0; xi < p.A2; xi++) dw_products(dUg, V, dM, &p, xi, nb * p.Timg);
                for (int j = 0; j < nb; j++) /* the run's bias sum, in sample order */
                    for (int k = 0; k < p.Kp; k++) dbg[k] += sums[(size_t)j * p.Kp + k];
            }
        }
    }
    for (int k = 0; k < p.K; k++) {
        float s = 0;
        for (int g = 0; g < ng; g++) s += dbr[(size_t)g * p.Kp + k];
        db[k] += s;
    }
    unpack_gradients(dW, dU, ustride, ng, &p, T);
}

static void dw_points(float *dW, float *db, const float *dout, const float *in, int B,
                      const conv_dims *d, float *scratch) {
    const wplan p = wplan_blocks(d->C, d->OC, d->H, d->W, DW_POINT_TILES);
    const size_t ustride = (size_t)p.A2 * p.Cp * p.Kp;
    float *dU = align_up(scratch);
    float *V = align_up(dU + ustride);
    float *dM = align_up(V + (size_t)p.A2 * p.NTp * p.Cp);
    float *sums = align_up(dM + (size_t)p.A2 * p.NTp * p.Kp);
    float *dbs = align_up(sums + (size_t)p.nb * p.Kp);
    float *tbase = scratch + dw_points_shared(&p);
    const size_t per = conv_winograd_scratch_per_thread(d) - dw_points_shared(&p);
    const int T = d->threads < 1 ? 1 : d->threads;
    memset(dU, 0, sizeof(float) * ustride);
    memset(dbs, 0, sizeof(float) * (size_t)p.Kp);
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        float *X = align_up(tbase + per * (size_t)t);
        float *Yg = align_up(X + (size_t)p.Hp * p.Wp * p.Cp);
        for (int n0 = 0; n0 < B; n0 += p.nb) {
            const int nb = B - n0 < p.nb ? B - n0 : p.nb;
#pragma omp for schedule(static)
            for (int j = 0; j < nb; j++)
                dw_transform_image(V, dM, X, Yg, sums, in, dout, n0, j, &p);
#pragma omp single nowait
            for (int j = 0; j < nb; j++) /* the bias sum, in sample order */
                for (int k = 0; k < p.Kp; k++) dbs[k] += sums[(size_t)j * p.Kp + k];
            /* each point's products on one thread, in tile order: the same bits for any count */
#pragma omp for schedule(dynamic, 1)
            for (int xi = 0; xi < p.A2; xi++) dw_products(dU, V, dM, &p, xi, nb * p.Timg);
        }
    }
    for (int k = 0; k < p.K; k++) db[k] += dbs[k];
    unpack_gradients(dW, dU, ustride, 1, &p, T);
}

void conv_winograd_backward_weights(float *dW, float *db, const float *dout, const float *in,
                                    int B, const conv_dims *d, float *scratch) {
    const int ng = dw_groups(d->C, d->OC, d->H, d->W, B);
    if (ng >= 2) dw_runs(dW, db, dout, in, B, ng, d, scratch);
    else dw_points(dW, db, dout, in, B, d, scratch);
}
