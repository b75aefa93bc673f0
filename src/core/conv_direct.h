/* Direct 3x3 / pad 1 / stride 1 or 2 convolution: no im2col matrix and no GEMM packing. Used by
 * conv2d_forward / conv2d_backward (layers.c) where it measures faster; see conv_algo_pick
 * there for the rule. Private to the library and its tests. */
#ifndef NNZIP_CONV_DIRECT_H
#define NNZIP_CONV_DIRECT_H

#include <stddef.h>

#include "core/layers.h"

/* 1 if the direct kernels can compute d (3x3, pad 1, stride 1 or 2) */
int conv_direct_supported(const conv_dims *d);
/* floats of scratch the direct kernels need for d->threads threads, divided by d->threads and
 * rounded up (so conv_scratch_per_thread can take the larger of this and im2col's); 0 when
 * unsupported */
size_t conv_direct_scratch_per_thread(const conv_dims *d);
/* as conv2d_forward / conv2d_backward (same arguments and flags), for supported shapes */
void conv_direct_forward(float *out, const float *in, const float *W, const float *b, int B,
                         const conv_dims *d, float *scratch);
void conv_direct_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                          const float *W, int B, const conv_dims *d, float *scratch,
                          float *dW_partial);

#endif
