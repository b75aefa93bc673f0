/* Layer kernels (see layers.h). GEMMs go through OpenBLAS; convolution is im2col + GEMM per
 * sample, with OpenMP over the batch because LeNet-sized GEMMs are too small to thread well. */
#include "core/layers.h"

#include <cblas.h>
#include <float.h>
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
    return d;
}

static int conv_is_pointwise(const conv_dims *d) {
    return d->KH == 1 && d->KW == 1 && d->stride == 1 && d->pad == 0;
}

size_t conv_scratch_per_thread(const conv_dims *d) {
    /* cols and dcols, each (C*KH*KW, OH*OW) */
    return 2 * (size_t)d->C * d->KH * d->KW * (size_t)d->OH * d->OW;
}

/* cols (C*KH*KW, OH*OW) from one sample's in (C, H, W); zero outside the image */
void conv_im2col(float *cols, const float *in, const conv_dims *d) {
    const int OHW = d->OH * d->OW;
    for (int c = 0; c < d->C; c++)
        for (int kh = 0; kh < d->KH; kh++)
            for (int kw = 0; kw < d->KW; kw++) {
                float *row = cols + ((size_t)(c * d->KH + kh) * d->KW + kw) * OHW;
                const float *plane = in + (size_t)c * d->H * d->W;
                for (int oh = 0; oh < d->OH; oh++) {
                    int ih = oh * d->stride - d->pad + kh;
                    float *r = row + oh * d->OW;
                    if (ih < 0 || ih >= d->H) {
                        memset(r, 0, sizeof(float) * (size_t)d->OW);
                        continue;
                    }
                    const float *src = plane + (size_t)ih * d->W;
                    if (d->stride == 1) {
                        int iw0 = -d->pad + kw;
                        for (int ow = 0; ow < d->OW; ow++) {
                            int iw = iw0 + ow;
                            r[ow] = (iw >= 0 && iw < d->W) ? src[iw] : 0.0f;
                        }
                    } else {
                        for (int ow = 0; ow < d->OW; ow++) {
                            int iw = ow * d->stride - d->pad + kw;
                            r[ow] = (iw >= 0 && iw < d->W) ? src[iw] : 0.0f;
                        }
                    }
                }
            }
}

/* din (C, H, W) += scatter of dcols (C*KH*KW, OH*OW) */
static void col2im_add(float *din, const float *dcols, const conv_dims *d) {
    const int OHW = d->OH * d->OW;
    for (int c = 0; c < d->C; c++)
        for (int kh = 0; kh < d->KH; kh++)
            for (int kw = 0; kw < d->KW; kw++) {
                const float *row = dcols + ((size_t)(c * d->KH + kh) * d->KW + kw) * OHW;
                float *plane = din + (size_t)c * d->H * d->W;
                for (int oh = 0; oh < d->OH; oh++) {
                    int ih = oh * d->stride - d->pad + kh;
                    if (ih < 0 || ih >= d->H) continue;
                    float *dst = plane + (size_t)ih * d->W;
                    const float *r = row + oh * d->OW;
                    for (int ow = 0; ow < d->OW; ow++) {
                        int iw = ow * d->stride - d->pad + kw;
                        if (iw >= 0 && iw < d->W) dst[iw] += r[ow];
                    }
                }
            }
}

void conv2d_forward(float *out, const float *in, const float *W, const float *b, int B,
                    const conv_dims *d, float *scratch) {
    const int K = d->C * d->KH * d->KW, OHW = d->OH * d->OW;
    const size_t in_sz = (size_t)d->C * d->H * d->W, out_sz = (size_t)d->OC * OHW;
    const size_t per = conv_scratch_per_thread(d);
    const int T = B < d->threads ? B : d->threads;
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num(), lo, hi;
        split_range(B, t, omp_get_num_threads(), &lo, &hi);
        float *cols = scratch + per * (size_t)t;
        for (int n = lo; n < hi; n++) {
            const float *x = in + in_sz * n;
            float *y = out + out_sz * n;
            for (int oc = 0; oc < d->OC; oc++)
                for (int i = 0; i < OHW; i++) y[(size_t)oc * OHW + i] = b[oc];
            const float *src = x;
            if (!conv_is_pointwise(d)) {
                conv_im2col(cols, x, d);
                src = cols;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->OC, OHW, K, 1.0f, W, K, src,
                        OHW, 1.0f, y, OHW);
        }
    }
}

void conv2d_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                     const float *W, int B, const conv_dims *d, float *scratch,
                     float *dW_partial) {
    const int K = d->C * d->KH * d->KW, OHW = d->OH * d->OW;
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
        float *cols = scratch + per * (size_t)t, *dcols = cols + per / 2;
        float *pw = dW_partial + part * (size_t)t, *pb = pw + wsz;
        memset(pw, 0, sizeof(float) * part);
        for (int n = lo; n < hi; n++) {
            const float *x = in + in_sz * n;
            const float *g = dout + out_sz * n;
            const float *src = x;
            if (!conv_is_pointwise(d)) {
                conv_im2col(cols, x, d);
                src = cols;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->OC, K, OHW, 1.0f, g, OHW, src,
                        OHW, 1.0f, pw, K);
            for (int oc = 0; oc < d->OC; oc++) {
                const float *gr = g + (size_t)oc * OHW;
                float s = 0;
                for (int i = 0; i < OHW; i++) s += gr[i];
                pb[oc] += s;
            }
            if (din) {
                float *dx = din + in_sz * n;
                if (conv_is_pointwise(d)) {
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, OHW, d->OC, 1.0f, W, K,
                                g, OHW, 1.0f, dx, OHW);
                } else {
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, OHW, d->OC, 1.0f, W, K,
                                g, OHW, 0.0f, dcols, OHW);
                    col2im_add(dx, dcols, d);
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
