/* Layer kernels: one forward/backward pair per layer kind, over plain pointers and sizes.
 * Shapes are given in comments as (B, ...); all buffers are batch-major NCHW float32.
 * Backward functions *add* into parameter gradients (dW, db); input gradients (din) are
 * added into as well, so a node feeding several consumers sums their contributions.
 * Zeroing is the caller's visible job. Private to the library and its tests. */
#ifndef NNZIP_LAYERS_H
#define NNZIP_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "nnzip/rng.h"

/* out (B, n_out) = in (B, n_in) W^T (n_out, n_in) + b (n_out) */
void dense_forward(float *out, const float *in, const float *W, const float *b, int B, int n_in,
                   int n_out);
/* din (B, n_in) += dout W; dW (n_out, n_in) += dout^T in; db (n_out) += sum_b dout. din may be NULL. */
void dense_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                    const float *W, int B, int n_in, int n_out);

typedef struct {
    int C, H, W;      /* input channels, height, width */
    int OC, KH, KW;   /* output channels, kernel */
    int stride, pad;
    int OH, OW;       /* output size */
    int threads;      /* at most this many threads (scratch is sized for it); set by make */
    int din_set;      /* backward: 1 = overwrite din instead of adding to it (0 by make) */
    int out_relu;     /* forward: 1 = apply relu to the output (inference fusion; 0 by make) */
    int algo;         /* CONV_ALGO_*: AUTO by make; tests force a path to compare them */
    /* forward: NULL by make; else (B, OC, 3) floats that a kernel which can (conv2d_forward
     * returns 1) fills with each sample's per-channel output sums {y0, sum (y - y0),
     * sum (y - y0)^2} for a following batch norm (batchnorm_forward_pre) */
    float *out_stats;
} conv_dims;

/* Which kernel conv2d_forward/backward run: AUTO picks by shape and batch (conv_kernel in
 * layers.c); DIRECT (3x3, pad 1, stride 1 or 2 only), WINOGRAD (3x3, pad 1, stride 1 only) and
 * IM2COL force one whatever the batch; a forced path the shape does not allow falls back to
 * IM2COL. */
enum { CONV_ALGO_AUTO, CONV_ALGO_IM2COL, CONV_ALGO_DIRECT, CONV_ALGO_WINOGRAD };
/* The kernel (CONV_ALGO_IM2COL, DIRECT or WINOGRAD) conv2d_forward (backward 0) /
 * conv2d_backward (1) run on d for a batch of B */
int conv_kernel(const conv_dims *d, int backward, int B);
/* 1 if they would run the direct kernels (src/core/conv_direct.c) / the Winograd kernels
 * (src/core/conv_winograd.c) on d at a large batch */
int conv_uses_direct(const conv_dims *d, int backward);
int conv_uses_winograd(const conv_dims *d, int backward);

conv_dims conv_dims_make(int C, int H, int W, int OC, int K, int stride, int pad);
/* threads = layers_threads() at the time of the call; callers whose scratch was sized for fewer
 * threads lower it. */
/* floats of scratch one thread needs (im2col or direct, whichever path is larger) */
size_t conv_scratch_per_thread(const conv_dims *d);
/* cols (C*KH*KW, OH*OW) from one sample's input (C, H, W); zero outside the image */
void conv_im2col(float *cols, const float *in, const conv_dims *d);
/* out (B, OC, OH, OW) = conv(in (B, C, H, W), W (OC, C, KH, KW)) + b (OC).
 * scratch: nthreads * conv_scratch_per_thread floats. Returns 1 if it filled d->out_stats
 * (the Winograd kernel does), else 0. */
int conv2d_forward(float *out, const float *in, const float *W, const float *b, int B,
                   const conv_dims *d, float *scratch);
/* din (B, C, H, W) += ...; dW, db += ...; din may be NULL. dW_partial: threads * (|W| + OC) floats of
 * per-thread accumulators (reduced in a fixed order, so results do not depend on scheduling). */
void conv2d_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                     const float *W, int B, const conv_dims *d, float *scratch, float *dW_partial);

/* out (B, C, OH, OW) = max over k x k windows with stride s; argmax (B, C, OH, OW) records the
 * winning input offset within its (C, H, W) plane for backward. */
void maxpool_forward(float *out, int32_t *argmax, const float *in, int B, int C, int H, int W,
                     int kh, int kw, int stride, int OH, int OW);
void maxpool_backward(float *din, const float *dout, const int32_t *argmax, int B, int C, int H,
                      int W, int OH, int OW);

void relu_forward(float *out, const float *in, size_t n);
/* din += dout where out > 0 */
void relu_backward(float *din, const float *dout, const float *out, size_t n);
/* din = dout where out > 0, else 0: the first gradient into din, no zeroing pass needed */
void relu_backward_set(float *din, const float *dout, const float *out, size_t n);

/* Inverted dropout: mask[i] = 0 or 1/(1-p); out = in * mask. */
void dropout_forward(float *out, float *mask, const float *in, size_t n, float p, nz_rng *rng);
void dropout_backward(float *din, const float *dout, const float *mask, size_t n);

/* Norm x direction weights (weight normalisation per group: an fc neuron's row, a conv kernel):
 * W (G, S) = g (G) * V (G, S) / ||V_i||; a zero-norm direction gives a zero group. */
void normdir_weights(float *W, const float *V, const float *g, int G, int S);
/* From dW (G, S): dg += <dW_i, u_i>, dV += g_i / ||V_i|| (dW_i - <dW_i, u_i> u_i), u = V/||V||. */
void normdir_backward(float *dV, float *dg, const float *dW, const float *V, const float *g,
                      int G, int S);

/* Batch norm over x (B, C, HW), per channel c with N = B*HW values.
 * Training: mean/var from the batch (biased var for normalizing), saved as mean[c], invstd[c]
 * = 1/sqrt(var + eps) for backward; running stats updated as PyTorch does (unbiased var):
 * r = (1 - momentum) r + momentum * stat. Eval (training 0): running stats, nothing updated;
 * mean/invstd still receive the values used, so backward works in both modes. */
void batchnorm_forward(float *out, const float *in, const float *gamma, const float *beta,
                       float *run_mean, float *run_var, float *mean, float *invstd, int B, int C,
                       int HW, float momentum, float eps, int training);
/* din += ..., dgamma += sum(dout * xhat), dbeta += sum(dout). training selects the gradient of
 * batch statistics (1) or of a fixed affine map (0). din may be NULL. */
void batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                        const float *in, const float *gamma, const float *mean,
                        const float *invstd, int B, int C, int HW, int training);

/* as batchnorm_backward, but din = ... (overwrites) */
void batchnorm_backward_set(float *din, float *dgamma, float *dbeta, const float *dout,
                            const float *in, const float *gamma, const float *mean,
                            const float *invstd, int B, int C, int HW, int training);

/* Batch norm then relu in one pass, for a relu that is the batch norm's only reader (training
 * and eval): out = max(0, bn(in)); the batch norm's own output is never stored. */
void batchnorm_relu_forward(float *out, const float *in, const float *gamma, const float *beta,
                            float *run_mean, float *run_var, float *mean, float *invstd, int B,
                            int C, int HW, float momentum, float eps, int training);
/* batchnorm_forward (relu 0) or batchnorm_relu_forward (relu 1) whose batch statistics, in
 * training, come from pre: per sample and channel {y0, sum (x - y0), sum (x - y0)^2} over the
 * HW values (conv_dims' out_stats), combined in sample order in double (Chan et al.'s pairwise
 * update), instead of two passes over in. NULL pre: the two passes. With skip (the shape of
 * in): out = max(0, bn(in) + skip), a residual add and its relu in the same pass, the same
 * bits as add_relu_forward(out, bn(in), skip). */
void batchnorm_forward_pre(float *out, const float *in, const float *gamma, const float *beta,
                           float *run_mean, float *run_var, float *mean, float *invstd, int B,
                           int C, int HW, float momentum, float eps, int training, int relu,
                           const float *pre, const float *skip);
/* Backward of batchnorm_relu_forward (relu = 1; relu = 0: a batch norm alone, as
 * batchnorm_backward(_set)): dout is the gradient of its output; din += or (set) = the
 * gradient of in. The relu's mask is recomputed from in, gamma, beta and the forward's mean
 * and invstd, so they must be the ones the forward used. */
void batchnorm_relu_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                             const float *in, const float *gamma, const float *beta,
                             const float *mean, const float *invstd, int B, int C, int HW,
                             int training, int relu, int set);

/* out (B, C, OH, OW) = mean over k x k windows with stride s (no padding) */
void avgpool_forward(float *out, const float *in, int B, int C, int H, int W, int kh, int kw,
                     int stride, int OH, int OW);
void avgpool_backward(float *din, const float *dout, int B, int C, int H, int W, int kh, int kw,
                      int stride, int OH, int OW);

/* Option-A shortcut: out (B, OC, OH, OW) = in (B, C, H, W) sampled every `stride` pixels, with
 * (OC - C) / 2 zero channels before and the rest after. */
void shortcut_forward(float *out, const float *in, int B, int C, int H, int W, int OC, int stride,
                      int OH, int OW);
void shortcut_backward(float *din, const float *dout, int B, int C, int H, int W, int OC,
                       int stride, int OH, int OW);
/* y[b][k] = x[b][index[k]] over F input features; backward adds dy into dx */
void select_forward(float *out, const float *in, const float *index, int B, int F, int K);
void select_backward(float *din, const float *dout, const float *index, int B, int F, int K);

/* out = a + b */
void add_forward(float *out, const float *a, const float *b, size_t n);
/* out = max(a + b, 0): an add whose only reader is a relu, in one pass */
void add_relu_forward(float *out, const float *a, const float *b, size_t n);
/* d += dout */
void add_backward(float *d, const float *dout, size_t n);

/* thread count the kernels partition work over (OpenMP max threads) */
int layers_threads(void);

#endif
