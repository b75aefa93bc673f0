/* Layer kernels (see layers.h). GEMMs go through OpenBLAS; convolution is im2col + GEMM per
 * sample, with OpenMP over the batch because LeNet-sized GEMMs are too small to thread well,
 * except for the 3x3 pad-1 shapes conv_algo_pick and winograd_pick send to the direct kernels
 * (conv_direct.c, stride 1 and 2) or to Winograd (conv_winograd.c, stride 1). */
#include "core/layers.h"

#include "core/conv_direct.h"
#include "core/conv_winograd.h"

#include <cblas.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <string.h>

int layers_threads(void) { return omp_get_max_threads(); }

/* ---------------------------------------------------------------- dense */

/* samples [lo, hi) of thread t out of T */
static void split_range(int n, int t, int T, int *lo, int *hi) {
    *lo = (int)((long)n * t / T);
    *hi = (int)((long)n * (t + 1) / T);
}

void dense_forward(float *out, const float *in, const float *W, const float *b, int B, int n_in,
                   int n_out) {
    if (B == 1) { /* GEMV: OpenBLAS's GEMM packs its operands, a waste for one row */
        memcpy(out, b, sizeof(float) * (size_t)n_out);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n_out, n_in, 1.0f, W, n_in, in, 1, 1.0f, out, 1);
        return;
    }
    /* Splitting the batch over threads, each running a single-threaded GEMM, beats OpenBLAS's
     * own threading at LeNet sizes (measured in bench/bench_engine.c). */
    const int T = B >= 16 ? (B / 8 < layers_threads() ? B / 8 : layers_threads()) : 1;
#pragma omp parallel num_threads(T) if (T > 1)
    {
        int lo, hi;
        split_range(B, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        for (int n = lo; n < hi; n++)
            memcpy(out + (size_t)n * n_out, b, sizeof(float) * (size_t)n_out);
        if (hi > lo)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, n_out, n_in, 1.0f,
                        in + (size_t)lo * n_in, n_in, W, n_in, 1.0f, out + (size_t)lo * n_out,
                        n_out);
    }
}

void dense_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                    const float *W, int B, int n_in, int n_out) {
    if (din)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n_in, n_out, 1.0f, dout, n_out, W, n_in, 1.0f,
                    din, n_in);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, B, 1.0f, dout, n_out, in, n_in, 1.0f, dW,
                n_in);
    for (int n = 0; n < B; n++) {
        const float *g = dout + (size_t)n * n_out;
        for (int o = 0; o < n_out; o++) db[o] += g[o];
    }
}

/* ---------------------------------------------------------------- conv2d */

conv_dims conv_dims_make(int C, int H, int W, int OC, int K, int stride, int pad) {
    conv_dims d;
    d.C = C;
    d.H = H;
    d.W = W;
    d.OC = OC;
    d.KH = K;
    d.KW = K;
    d.stride = stride;
    d.pad = pad;
    d.OH = (H + 2 * pad - K) / stride + 1;
    d.OW = (W + 2 * pad - K) / stride + 1;
    d.threads = layers_threads();
    d.din_set = 0;
    d.out_relu = 0;
    d.algo = CONV_ALGO_AUTO;
    d.out_stats = NULL;
    return d;
}

/* The dispatch rule between the direct 3x3 kernels (pad 1, stride 1 or 2) and im2col + GEMM,
 * per direction. Measured per layer shape (1 thread, batch 32, process CPU time so the other
 * jobs on the machine drop out; OpenBLAS Haswell kernels at ~100 GFLOP/s on sgemm; direct vs
 * im2col ms, forward / backward with din):
 *  - output maps >= 5x5: direct always wins, 1.4-3x forward, 1.05-3x backward: 16x32x32 0.96
 *    vs 2.88 / 1.96 vs 6.52; 64x8x8 1.06 vs 2.24 / 2.62 vs 5.01; 64x7x7 0.84 vs 1.99 / 2.14 vs
 *    4.46; 512x8x8 66.7 vs 104 / 196 vs 235; 256x5x5 9.4 vs 13.5 / 24.8 vs 26.4; stride 2
 *    16x32x32->32 0.49 vs 1.43 / 1.18 vs 3.10, 32x16x16->64 0.65 vs 1.15 / 1.67 vs 2.50,
 *    64x10x10->128 1.04 vs 1.64 / 3.09 vs 3.61.
 *  - 3x3 and 4x4 outputs (a padded row wastes 2 of W + 2 lanes, the last vector is mostly
 *    empty): forward still wins (512x4x4 25.3 vs 31.2, 512x3x3 16.5 vs 19.5, stride 2
 *    128x8x8->256 3.3 vs 3.9); backward at stride 1 up to 128 channels (128x4x4 4.9 vs 5.6,
 *    128x3x3 2.6 vs 3.1) but not beyond (256x4x4 18.2-21.1 vs 17.8, 512x3x3 53.8 vs 37.6),
 *    at stride 2 not (128x8x8->128 5.3 vs 5.0).
 *  - 2x2 and 1x1 outputs: im2col (128x2x2 1.03 vs 0.80, 256x1x1 3.8 vs 1.0).
 *  - tiny layers (C * OC <= 32 * 32) go direct at any size (16x2x2 0.02 vs 0.06, stride 2
 *    32x8x8->32 0.15 vs 0.26 / 0.33 vs 0.50). */
static int conv_algo_pick(const conv_dims *d, int backward) {
    const long cc = (long)d->C * d->OC;
    if ((d->OH >= 5 && d->OW >= 5) || cc <= 32L * 32) return 1;
    if (d->OH * d->OW < 9) return 0;
    return !backward || (d->stride == 1 && cc <= 128L * 128);
}

/* Winograd (stride 1 only) against the direct kernels, per layer of ResNet-20 and VGG-16
 * (`build/bench/bench_conv 128 2 winograd` vs `... direct`, 2 threads, quiet machine,
 * 2026-11-25; ms, forward / backward with din):
 *  - 16x32x32: 2.60 / 8.70 vs 1.72 / 4.12 (direct wins: the transforms cost as much as the
 *    products at 16 channels); 3 input channels: 1.72 / 5.84 vs 0.43 / 0.50;
 *  - 32x16x16: 1.37 / 4.68 vs 1.74 / 4.19 (Winograd forward only);
 *  - 64x8x8: 1.11 / 3.38 vs 1.95 / 4.71; 64x32x32 15.6 / 49 vs 26.1 / 55; 128x16x16 13.0 / 35
 *    vs 27.1 / 60; 256x8x8 11.9 / 28 vs 30.1 / 74; 512x4x4 12.9 / 31 vs 48.7 / 145 (im2col:
 *    51 / 126); 512x2x2 6.2 / 13 vs 31.9 / 98 (im2col: 18 / 39).
 * So with AVX-512, Winograd from 32 channels (in and out) forward and from 48 backward, at any
 * map size; with AVX2 from 16 (conv_winograd_min_channels).
 * Small batches stay off Winograd: its products run over blocks padded to 24 tiles and it
 * transforms every kernel per call, so it needs >= 64 tiles per call (batch 1 at 32x32, 64 at
 * 4x4 and 2x2 maps) to pay. */
static int winograd_pick(const conv_dims *d, int backward, int B) {
    const int lo = d->C < d->OC ? d->C : d->OC;
    const long long tiles = (long long)B * ((d->OH + 3) / 4) * ((d->OW + 3) / 4);
    return lo >= conv_winograd_min_channels(backward) && tiles >= 64;
}

int conv_kernel(const conv_dims *d, int backward, int B) {
    const int forced = d->algo;
    if (forced == CONV_ALGO_IM2COL) return CONV_ALGO_IM2COL;
    if (forced == CONV_ALGO_WINOGRAD)
        return conv_winograd_supported(d) ? CONV_ALGO_WINOGRAD : CONV_ALGO_IM2COL;
    if (forced == CONV_ALGO_DIRECT)
        return conv_direct_supported(d) ? CONV_ALGO_DIRECT : CONV_ALGO_IM2COL;
    if (conv_winograd_supported(d) && winograd_pick(d, backward, B)) return CONV_ALGO_WINOGRAD;
    if (conv_direct_supported(d) && conv_algo_pick(d, backward)) return CONV_ALGO_DIRECT;
    return CONV_ALGO_IM2COL;
}

int conv_uses_winograd(const conv_dims *d, int backward) {
    return conv_kernel(d, backward, INT_MAX) == CONV_ALGO_WINOGRAD;
}

int conv_uses_direct(const conv_dims *d, int backward) {
    return conv_kernel(d, backward, INT_MAX) == CONV_ALGO_DIRECT;
}

/* Samples one GEMM covers: enough columns (~2048) that the GEMM runs near OpenBLAS's peak even
 * for 8x8 maps, where one sample alone would give a 64-column product. */
static int conv_chunk(const conv_dims *d) {
    const int ohw = d->OH * d->OW;
    int nb = (2048 + ohw - 1) / ohw;
    return nb < 1 ? 1 : nb > 64 ? 64 : nb;
}

size_t conv_scratch_per_thread(const conv_dims *d) {
    /* cols and dcols (K, nb*OHW), and the output or its gradient in GEMM layout (OC, nb*OHW) */
    const size_t K = (size_t)d->C * d->KH * d->KW, N = (size_t)conv_chunk(d) * d->OH * d->OW;
    const size_t im2col = (2 * K + (size_t)d->OC) * N, direct = conv_direct_scratch_per_thread(d);
    const size_t wino = conv_winograd_scratch_per_thread(d);
    /* any path, so d->algo may be changed later */
    const size_t m = im2col > direct ? im2col : direct;
    return m > wino ? m : wino;
}

/* cols rows (C*KH*KW) of OH*OW values, row r at cols + r * ld, from one sample (C, H, W); zero
 * outside the image. Stride 1 copies the valid span of each row in one go. */
static void im2col_ld(float *cols, size_t ld, const float *in, const conv_dims *d) {
    for (int c = 0; c < d->C; c++)
        for (int kh = 0; kh < d->KH; kh++)
            for (int kw = 0; kw < d->KW; kw++) {
                float *row = cols + ((size_t)(c * d->KH + kh) * d->KW + kw) * ld;
                const float *plane = in + (size_t)c * d->H * d->W;
                /* output columns whose input column iw = ow*stride - pad + kw is inside */
                int lo = d->pad - kw > 0 ? (d->pad - kw + d->stride - 1) / d->stride : 0;
                int hi = (d->W - 1 + d->pad - kw) / d->stride + 1;
                if (d->W - 1 + d->pad - kw < 0) hi = 0;
                if (hi > d->OW) hi = d->OW;
                if (lo > hi) lo = hi;
                for (int oh = 0; oh < d->OH; oh++) {
                    int ih = oh * d->stride - d->pad + kh;
                    float *r = row + oh * d->OW;
                    if (ih < 0 || ih >= d->H) {
                        memset(r, 0, sizeof(float) * (size_t)d->OW);
                        continue;
                    }
                    const float *src = plane + (size_t)ih * d->W - d->pad + kw;
                    for (int ow = 0; ow < lo; ow++) r[ow] = 0.0f;
                    if (d->stride == 1)
                        memcpy(r + lo, src + lo, sizeof(float) * (size_t)(hi - lo));
                    else
                        for (int ow = lo; ow < hi; ow++) r[ow] = src[ow * d->stride];
                    for (int ow = hi; ow < d->OW; ow++) r[ow] = 0.0f;
                }
            }
}

void conv_im2col(float *cols, const float *in, const conv_dims *d) {
    im2col_ld(cols, (size_t)d->OH * d->OW, in, d);
}

/* din (C, H, W) += scatter of dcols (rows of OH*OW at stride ld) */
static void col2im_add(float *din, const float *dcols, size_t ld, const conv_dims *d) {
    for (int c = 0; c < d->C; c++)
        for (int kh = 0; kh < d->KH; kh++)
            for (int kw = 0; kw < d->KW; kw++) {
                const float *row = dcols + ((size_t)(c * d->KH + kh) * d->KW + kw) * ld;
                float *plane = din + (size_t)c * d->H * d->W;
                int lo = d->pad - kw > 0 ? (d->pad - kw + d->stride - 1) / d->stride : 0;
                int hi = (d->W - 1 + d->pad - kw) / d->stride + 1;
                if (d->W - 1 + d->pad - kw < 0) hi = 0;
                if (hi > d->OW) hi = d->OW;
                for (int oh = 0; oh < d->OH; oh++) {
                    int ih = oh * d->stride - d->pad + kh;
                    if (ih < 0 || ih >= d->H) continue;
                    float *dst = plane + (size_t)ih * d->W - d->pad + kw;
                    const float *r = row + oh * d->OW;
                    if (d->stride == 1)
                        for (int ow = lo; ow < hi; ow++) dst[ow] += r[ow];
                    else
                        for (int ow = lo; ow < hi; ow++) dst[ow * d->stride] += r[ow];
                }
            }
}

/* Each thread takes a contiguous share of the batch and walks it in chunks of conv_chunk
 * samples: im2col of the chunk side by side, one GEMM, then the result is copied out to NCHW
 * with the bias. Per-sample GEMMs were 3-4x slower on ResNet-20's 16-channel layers. */
int conv2d_forward(float *out, const float *in, const float *W, const float *b, int B,
                   const conv_dims *d, float *scratch) {
    const int kernel = conv_kernel(d, 0, B);
    if (kernel == CONV_ALGO_WINOGRAD) { /* the only kernel that fills out_stats (while the
                                           outputs are still in cache) */
        conv_winograd_forward(out, in, W, b, B, d, scratch);
        return d->out_stats != NULL;
    }
    if (kernel == CONV_ALGO_DIRECT) {
        conv_direct_forward(out, in, W, b, B, d, scratch);
        return 0;
    }
    const int K = d->C * d->KH * d->KW, OHW = d->OH * d->OW, nb = conv_chunk(d);
    const size_t in_sz = (size_t)d->C * d->H * d->W, out_sz = (size_t)d->OC * OHW;
    const size_t per = conv_scratch_per_thread(d);
    const int T = B < d->threads ? B : d->threads;
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num(), lo, hi;
        split_range(B, t, omp_get_num_threads(), &lo, &hi);
        float *cols = scratch + per * (size_t)t;
        float *tmp = cols + 2 * (size_t)K * nb * OHW;
        for (int n0 = lo; n0 < hi; n0 += nb) {
            const int m = hi - n0 < nb ? hi - n0 : nb;
            const size_t N = (size_t)m * OHW;
            for (int j = 0; j < m; j++) im2col_ld(cols + (size_t)j * OHW, N, in + in_sz * (n0 + j), d);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->OC, (int)N, K, 1.0f, W, K,
                        cols, (int)N, 0.0f, tmp, (int)N);
            for (int j = 0; j < m; j++) {
                float *y = out + out_sz * (n0 + j);
                for (int oc = 0; oc < d->OC; oc++) {
                    const float *src = tmp + (size_t)oc * N + (size_t)j * OHW;
                    float *dst = y + (size_t)oc * OHW;
                    const float bo = b[oc];
                    if (d->out_relu) /* not fmaxf: GCC calls libm for it, one value at a time */
                        for (int i = 0; i < OHW; i++) {
                            const float v = src[i] + bo;
                            dst[i] = v > 0.0f ? v : 0.0f;
                        }
                    else
                        for (int i = 0; i < OHW; i++) dst[i] = src[i] + bo;
                }
            }
        }
    }
    return 0;
}

void conv2d_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                     const float *W, int B, const conv_dims *d, float *scratch,
                     float *dW_partial) {
    const int kernel = conv_kernel(d, 1, B);
    if (kernel == CONV_ALGO_WINOGRAD) {
        (void)dW_partial; /* the weight gradient reduces in its own scratch */
        conv_winograd_backward_weights(dW, db, dout, in, B, d, scratch);
        if (din) conv_winograd_backward_data(din, dout, W, B, d, scratch);
        return;
    }
    if (kernel == CONV_ALGO_DIRECT) {
        conv_direct_backward(din, dW, db, dout, in, W, B, d, scratch, dW_partial);
        return;
    }
    const int K = d->C * d->KH * d->KW, OHW = d->OH * d->OW, nb = conv_chunk(d);
    const size_t in_sz = (size_t)d->C * d->H * d->W, out_sz = (size_t)d->OC * OHW;
    const size_t per = conv_scratch_per_thread(d), wsz = (size_t)d->OC * K;
    const int T = B < d->threads ? B : d->threads;
    /* each thread owns wsz + OC floats of partial sums: dW then db */
    const size_t part = wsz + (size_t)d->OC;
    int used = 1; /* threads OpenMP actually started (may be fewer than T) */
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num(), lo, hi;
        if (t == 0) used = omp_get_num_threads();
        split_range(B, t, omp_get_num_threads(), &lo, &hi);
        float *cols = scratch + per * (size_t)t;
        float *dcols = cols + (size_t)K * nb * OHW, *g = dcols + (size_t)K * nb * OHW;
        float *pw = dW_partial + part * (size_t)t, *pb = pw + wsz;
        memset(pw, 0, sizeof(float) * part);
        for (int n0 = lo; n0 < hi; n0 += nb) {
            const int m = hi - n0 < nb ? hi - n0 : nb;
            const size_t N = (size_t)m * OHW;
            for (int j = 0; j < m; j++) {
                im2col_ld(cols + (size_t)j * OHW, N, in + in_sz * (n0 + j), d);
                const float *gs = dout + out_sz * (n0 + j);
                for (int oc = 0; oc < d->OC; oc++) { /* gather into GEMM layout + bias sum */
                    const float *src = gs + (size_t)oc * OHW;
                    float *dst = g + (size_t)oc * N + (size_t)j * OHW;
                    float s = 0;
                    for (int i = 0; i < OHW; i++) {
                        dst[i] = src[i];
                        s += src[i];
                    }
                    pb[oc] += s;
                }
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->OC, K, (int)N, 1.0f, g,
                        (int)N, cols, (int)N, 1.0f, pw, K);
            if (din) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, (int)N, d->OC, 1.0f, W, K,
                            g, (int)N, 0.0f, dcols, (int)N);
                for (int j = 0; j < m; j++) {
                    float *dx = din + in_sz * (n0 + j);
                    if (d->din_set) memset(dx, 0, sizeof(float) * in_sz); /* cache-hot */
                    col2im_add(dx, dcols + (size_t)j * OHW, N, d);
                }
            }
        }
    }
    /* fixed-order reduction: the same thread count gives the same bits */
    for (int t = 0; t < used; t++) {
        const float *pw = dW_partial + part * (size_t)t, *pb = pw + wsz;
        for (size_t i = 0; i < wsz; i++) dW[i] += pw[i];
        for (int oc = 0; oc < d->OC; oc++) db[oc] += pb[oc];
    }
}

/* ---------------------------------------------------------------- maxpool */

void maxpool_forward(float *out, int32_t *argmax, const float *in, int B, int C, int H, int W,
                     int kh, int kw, int stride, int OH, int OW) {
    const long planes = (long)B * C;
#pragma omp parallel for schedule(static) if ((long)planes * H * W > 65536)
    for (long p = 0; p < planes; p++) {
        const float *x = in + (size_t)p * H * W;
        float *y = out + (size_t)p * OH * OW;
        int32_t *am = argmax + (size_t)p * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int h0 = oh * stride, w0 = ow * stride;
                float best = -FLT_MAX;
                int32_t bi = h0 * W + w0;
                for (int i = 0; i < kh; i++)
                    for (int j = 0; j < kw; j++) {
                        int idx = (h0 + i) * W + (w0 + j);
                        if (x[idx] > best) {
                            best = x[idx];
                            bi = idx;
                        }
                    }
                y[oh * OW + ow] = best;
                am[oh * OW + ow] = bi;
            }
    }
}

void maxpool_backward(float *din, const float *dout, const int32_t *argmax, int B, int C, int H,
                      int W, int OH, int OW) {
    const long planes = (long)B * C;
#pragma omp parallel for schedule(static) if ((long)planes * H * W > 65536)
    for (long p = 0; p < planes; p++) {
        float *dx = din + (size_t)p * H * W;
        const float *g = dout + (size_t)p * OH * OW;
        const int32_t *am = argmax + (size_t)p * OH * OW;
        for (int i = 0; i < OH * OW; i++) dx[am[i]] += g[i];
    }
}

/* ---------------------------------------------------------------- relu, dropout */

void relu_forward(float *out, const float *in, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

void relu_backward(float *din, const float *dout, const float *out, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) din[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

void relu_backward_set(float *din, const float *dout, const float *out, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) din[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

void dropout_forward(float *out, float *mask, const float *in, size_t n, float p, nz_rng *rng) {
    const float keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) mask[i] = nz_rng_uniform(rng) < p ? 0.0f : keep;
    for (size_t i = 0; i < n; i++) out[i] = in[i] * mask[i];
}

void dropout_backward(float *din, const float *dout, const float *mask, size_t n) {
    for (size_t i = 0; i < n; i++) din[i] += dout[i] * mask[i];
}

/* ---------------------------------------------------------------- norm x direction */

void normdir_weights(float *W, const float *V, const float *g, int G, int S) {
#pragma omp parallel for schedule(static) if ((long)G * S > 65536)
    for (int i = 0; i < G; i++) {
        const float *v = V + (size_t)i * S;
        float *w = W + (size_t)i * S;
        double ss = 0;
        for (int j = 0; j < S; j++) ss += (double)v[j] * v[j];
        float scale = ss > 0 ? (float)(g[i] / sqrt(ss)) : 0.0f;
        for (int j = 0; j < S; j++) w[j] = v[j] * scale;
    }
}

void normdir_backward(float *dV, float *dg, const float *dW, const float *V, const float *g,
                      int G, int S) {
#pragma omp parallel for schedule(static) if ((long)G * S > 65536)
    for (int i = 0; i < G; i++) {
        const float *v = V + (size_t)i * S, *dw = dW + (size_t)i * S;
        float *dv = dV + (size_t)i * S;
        double ss = 0, dot = 0;
        for (int j = 0; j < S; j++) {
            ss += (double)v[j] * v[j];
            dot += (double)dw[j] * v[j];
        }
        if (ss <= 0) continue; /* a removed group: no direction to move */
        double norm = sqrt(ss);
        double gu = dot / norm; /* <dW, u> */
        dg[i] += (float)gu;
        float a = (float)(g[i] / norm), c = (float)(gu / norm);
        for (int j = 0; j < S; j++) dv[j] += a * (dw[j] - c * v[j]);
    }
}

/* ---------------------------------------------------------------- batch norm */

/* Channels are independent, so threads split them. A channel's sums are float within one HW
 * plane (vectorized; <= ~10^3 values) and double across its B planes (N up to ~10^5 values,
 * where float would lose ~3 digits). The variance is a second pass over (x - mean)^2: the
 * plane is still in cache, and there is no E[x^2] - m^2 cancellation. */
static float plane_sum(const float *x, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += x[i];
    return s;
}

static float plane_sqdev(const float *x, int n, float mu) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += (x[i] - mu) * (x[i] - mu);
    return s;
}

static void bn_forward(float *out, const float *in, const float *gamma, const float *beta,
                       float *run_mean, float *run_var, float *mean, float *invstd, int B, int C,
                       int HW, float momentum, float eps, int training, int relu,
                       const float *pre, const float *skip) {
    const size_t plane = (size_t)HW, stride = (size_t)C * HW;
    const double N = (double)B * HW;
#pragma omp parallel for schedule(static) if ((long)B * C * HW > 32768)
    for (int c = 0; c < C; c++) {
        float mu, is;
        if (training) {
            double v;
            if (pre) { /* merge the samples' (count, mean, M2) one after the other */
                double na = 0, ma = 0, m2 = 0;
                for (int n = 0; n < B; n++) {
                    const float *q = pre + ((size_t)n * C + c) * 3;
                    const double nb = HW, d = q[1], mb = q[0] + d / nb, m2b = q[2] - d * d / nb;
                    const double delta = mb - ma, nt = na + nb;
                    ma += delta * nb / nt;
                    m2 += m2b + delta * delta * na * nb / nt;
                    na = nt;
                }
                mu = (float)ma;
                v = m2 > 0 ? m2 / N : 0.0;
            } else {
                double s = 0;
                for (int n = 0; n < B; n++) s += plane_sum(in + n * stride + c * plane, HW);
                mu = (float)(s / N);
                double s2 = 0;
                for (int n = 0; n < B; n++)
                    s2 += plane_sqdev(in + n * stride + c * plane, HW, mu);
                v = s2 / N;
            }
            is = (float)(1.0 / sqrt(v + eps));
            /* PyTorch keeps the unbiased variance in its running estimate */
            double unbiased = N > 1 ? v * N / (N - 1) : v;
            run_mean[c] = (1.0f - momentum) * run_mean[c] + momentum * mu;
            run_var[c] = (1.0f - momentum) * run_var[c] + momentum * (float)unbiased;
        } else {
            mu = run_mean[c];
            is = 1.0f / sqrtf(run_var[c] + eps);
        }
        mean[c] = mu;
        invstd[c] = is;
        const float a = gamma[c] * is, b = beta[c] - mu * a;
        for (int n = 0; n < B; n++) {
            const float *x = in + n * stride + c * plane;
            float *y = out + n * stride + c * plane;
            if (skip) { /* the batch norm's output rounded, then the add's, as apart */
                const float *r = skip + n * stride + c * plane;
#pragma omp simd
                for (int i = 0; i < HW; i++) {
                    const float v = x[i] * a + b, u = v + r[i];
                    y[i] = u > 0.0f ? u : 0.0f;
                }
            } else if (relu)
#pragma omp simd
                for (int i = 0; i < HW; i++) {
                    const float v = x[i] * a + b;
                    y[i] = v > 0.0f ? v : 0.0f;
                }
            else
#pragma omp simd
                for (int i = 0; i < HW; i++) y[i] = x[i] * a + b;
        }
    }
}

void batchnorm_forward(float *out, const float *in, const float *gamma, const float *beta,
                       float *run_mean, float *run_var, float *mean, float *invstd, int B, int C,
                       int HW, float momentum, float eps, int training) {
    bn_forward(out, in, gamma, beta, run_mean, run_var, mean, invstd, B, C, HW, momentum, eps,
               training, 0, NULL, NULL);
}

void batchnorm_relu_forward(float *out, const float *in, const float *gamma, const float *beta,
                            float *run_mean, float *run_var, float *mean, float *invstd, int B,
                            int C, int HW, float momentum, float eps, int training) {
    bn_forward(out, in, gamma, beta, run_mean, run_var, mean, invstd, B, C, HW, momentum, eps,
               training, 1, NULL, NULL);
}

void batchnorm_forward_pre(float *out, const float *in, const float *gamma, const float *beta,
                           float *run_mean, float *run_var, float *mean, float *invstd, int B,
                           int C, int HW, float momentum, float eps, int training, int relu,
                           const float *pre, const float *skip) {
    bn_forward(out, in, gamma, beta, run_mean, run_var, mean, invstd, B, C, HW, momentum, eps,
               training, relu || skip, pre, skip);
}

/* relu: dout is the gradient of relu(bn(x)), so the batch norm's own gradient is dout where
 * bn(x) > 0 and 0 elsewhere. That mask is recomputed from x with the forward's own arithmetic
 * (the same a and b, the same operations, so the same bits) instead of read from the relu's
 * output: both passes read x anyway, and on the 32x32 maps of a ResNet at batch 128 the
 * kernel is bound by memory (7 tensor passes become 5). */
static void bn_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                        const float *in, const float *gamma, const float *beta,
                        const float *mean, const float *invstd, int B, int C, int HW,
                        int training, int relu, int set) {
    const size_t plane = (size_t)HW, stride = (size_t)C * HW;
    const double N = (double)B * HW;
#pragma omp parallel for schedule(static) if ((long)B * C * HW > 32768)
    for (int c = 0; c < C; c++) {
        const float mu = mean[c], is = invstd[c];
        const float fa = relu ? gamma[c] * is : 0.0f, fb = relu ? beta[c] - mu * fa : 0.0f;
        double sdy = 0, sdyx = 0; /* sum dout, sum dout * xhat */
        for (int n = 0; n < B; n++) {
            const size_t o = n * stride + c * plane;
            const float *x = in + o, *g = dout + o;
            float s = 0.0f, sx = 0.0f;
            if (relu) {
#pragma omp simd reduction(+ : s, sx)
                for (int i = 0; i < HW; i++) {
                    const float gi = x[i] * fa + fb > 0.0f ? g[i] : 0.0f;
                    s += gi;
                    sx += gi * (x[i] - mu);
                }
            } else {
#pragma omp simd reduction(+ : s, sx)
                for (int i = 0; i < HW; i++) {
                    s += g[i];
                    sx += g[i] * (x[i] - mu);
                }
            }
            sdy += s;
            sdyx += (double)sx * is;
        }
        dgamma[c] += (float)sdyx;
        dbeta[c] += (float)sdy;
        if (!din) continue;
        const float k = gamma[c] * is;
        /* training: dx = k (dy - mean(dy) - xhat mean(dy xhat)); eval: dx = k dy */
        const float a = training ? (float)(sdy / N) : 0.0f;
        const float bb = training ? (float)(sdyx / N) * is : 0.0f;
        for (int n = 0; n < B; n++) {
            const size_t o = n * stride + c * plane;
            const float *x = in + o, *g = dout + o;
            float *dx = din + o;
            if (relu && set)
#pragma omp simd
                for (int i = 0; i < HW; i++)
                    dx[i] = k * ((x[i] * fa + fb > 0.0f ? g[i] : 0.0f) - a - (x[i] - mu) * bb);
            else if (relu)
#pragma omp simd
                for (int i = 0; i < HW; i++)
                    dx[i] += k * ((x[i] * fa + fb > 0.0f ? g[i] : 0.0f) - a - (x[i] - mu) * bb);
            else if (set)
#pragma omp simd
                for (int i = 0; i < HW; i++) dx[i] = k * (g[i] - a - (x[i] - mu) * bb);
            else
#pragma omp simd
                for (int i = 0; i < HW; i++) dx[i] += k * (g[i] - a - (x[i] - mu) * bb);
        }
    }
}

void batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                        const float *in, const float *gamma, const float *mean,
                        const float *invstd, int B, int C, int HW, int training) {
    bn_backward(din, dgamma, dbeta, dout, in, gamma, NULL, mean, invstd, B, C, HW, training, 0,
                0);
}

void batchnorm_backward_set(float *din, float *dgamma, float *dbeta, const float *dout,
                            const float *in, const float *gamma, const float *mean,
                            const float *invstd, int B, int C, int HW, int training) {
    bn_backward(din, dgamma, dbeta, dout, in, gamma, NULL, mean, invstd, B, C, HW, training, 0,
                1);
}

void batchnorm_relu_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                             const float *in, const float *gamma, const float *beta,
                             const float *mean, const float *invstd, int B, int C, int HW,
                             int training, int relu, int set) {
    bn_backward(din, dgamma, dbeta, dout, in, gamma, beta, mean, invstd, B, C, HW, training, relu,
                set);
}

/* ---------------------------------------------------------------- average pool, shortcut, add */

void avgpool_forward(float *out, const float *in, int B, int C, int H, int W, int kh, int kw,
                     int stride, int OH, int OW) {
    const long planes = (long)B * C;
    const float inv = 1.0f / (float)(kh * kw);
#pragma omp parallel for schedule(static) if ((long)planes * H * W > 65536)
    for (long p = 0; p < planes; p++) {
        const float *x = in + (size_t)p * H * W;
        float *y = out + (size_t)p * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float s = 0;
                for (int i = 0; i < kh; i++) {
                    const float *r = x + (size_t)(oh * stride + i) * W + ow * stride;
                    for (int j = 0; j < kw; j++) s += r[j];
                }
                y[oh * OW + ow] = s * inv;
            }
    }
}

void avgpool_backward(float *din, const float *dout, int B, int C, int H, int W, int kh, int kw,
                      int stride, int OH, int OW) {
    const long planes = (long)B * C;
    const float inv = 1.0f / (float)(kh * kw);
#pragma omp parallel for schedule(static) if ((long)planes * H * W > 65536)
    for (long p = 0; p < planes; p++) {
        float *dx = din + (size_t)p * H * W;
        const float *g = dout + (size_t)p * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                const float v = g[oh * OW + ow] * inv;
                for (int i = 0; i < kh; i++) {
                    float *r = dx + (size_t)(oh * stride + i) * W + ow * stride;
                    for (int j = 0; j < kw; j++) r[j] += v;
                }
            }
    }
}

void shortcut_forward(float *out, const float *in, int B, int C, int H, int W, int OC, int stride,
                      int OH, int OW) {
    const int lo = (OC - C) / 2;
#pragma omp parallel for schedule(static) if ((long)B * OC * OH * OW > 65536)
    for (int n = 0; n < B; n++)
        for (int oc = 0; oc < OC; oc++) {
            float *y = out + ((size_t)n * OC + oc) * OH * OW;
            const int c = oc - lo;
            if (c < 0 || c >= C) {
                memset(y, 0, sizeof(float) * (size_t)OH * OW);
                continue;
            }
            const float *x = in + ((size_t)n * C + c) * H * W;
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++)
                    y[oh * OW + ow] = x[(size_t)oh * stride * W + (size_t)ow * stride];
        }
}

void shortcut_backward(float *din, const float *dout, int B, int C, int H, int W, int OC,
                       int stride, int OH, int OW) {
    const int lo = (OC - C) / 2;
#pragma omp parallel for schedule(static) if ((long)B * OC * OH * OW > 65536)
    for (int n = 0; n < B; n++)
        for (int c = 0; c < C; c++) {
            const float *g = dout + ((size_t)n * OC + c + lo) * OH * OW;
            float *dx = din + ((size_t)n * C + c) * H * W;
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++)
                    dx[(size_t)oh * stride * W + (size_t)ow * stride] += g[oh * OW + ow];
        }
}

void select_forward(float *out, const float *in, const float *index, int B, int F, int K) {
    for (int b = 0; b < B; b++) {
        const float *x = in + (size_t)b * F;
        float *y = out + (size_t)b * K;
        for (int k = 0; k < K; k++) y[k] = x[(size_t)index[k]];
    }
}

void select_backward(float *din, const float *dout, const float *index, int B, int F, int K) {
    for (int b = 0; b < B; b++) {
        float *dx = din + (size_t)b * F;
        const float *dy = dout + (size_t)b * K;
        for (int k = 0; k < K; k++) dx[(size_t)index[k]] += dy[k];
    }
}

void add_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void add_relu_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        const float v = a[i] + b[i];
        out[i] = v > 0.0f ? v : 0.0f; /* not fmaxf: GCC calls libm for it */
    }
}

void add_backward(float *d, const float *dout, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) d[i] += dout[i];
}
