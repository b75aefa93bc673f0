/* Winograd convolution F(m x m, 3 x 3) for 3x3 / pad 1 / stride 1 layers (m = 4, or 2 on maps
 * of at most 2x2): 36 (16) multiplies per m x m outputs and channel pair instead of 144 (36).
 * Used by conv2d_forward and conv2d_backward (both gradients) in layers.c where it measures
 * faster; see winograd_pick there. Private to the library and its tests. */
#ifndef NNZIP_CONV_WINOGRAD_H
#define NNZIP_CONV_WINOGRAD_H

#include <stddef.h>

#include "core/layers.h"

/* 1 if the Winograd kernels can compute d (3x3, pad 1, stride 1) */
int conv_winograd_supported(const conv_dims *d);
/* The fewest channels (min of in and out) at which Winograd beats the direct kernel in this
 * build (it depends on the vector width): forward, or backward when backward != 0. */
int conv_winograd_min_channels(int backward);
/* floats of scratch per thread: callers allocate d->threads times this. The block shared by
 * the threads (the transformed kernels, or for the weight gradient dU and one block's
 * transforms) is counted in full in it, as conv_direct_scratch_per_thread does, so any thread
 * count up to d->threads fits; 0 when unsupported */
size_t conv_winograd_scratch_per_thread(const conv_dims *d);
/* as conv2d_forward (bias, optional fused relu), for supported shapes */
void conv_winograd_forward(float *out, const float *in, const float *W, const float *b, int B,
                           const conv_dims *d, float *scratch);
/* din (B, C, H, W) = (d->din_set) or += the input gradient of the conv, from dout (B, OC, H, W):
 * the same transform on dout with W's taps flipped and its channels swapped */
void conv_winograd_backward_data(float *din, const float *dout, const float *W, int B,
                                 const conv_dims *d, float *scratch);

/* dW (OC, C, 3, 3) += and db (OC) += the weight and bias gradients: the products run on the
 * transformed input and output gradient (dU = V^T dM per point, dW = G^T dU G); the same bits
 * for any thread count */
void conv_winograd_backward_weights(float *dW, float *db, const float *dout, const float *in,
                                    int B, const conv_dims *d, float *scratch);

#endif
