/* Tensor encoding KERNELS (layout in include/nnzip/format.h): a conv weight without its all-zero
 * kernels. The writer's choice and encoder, the reader's check and expansion; private to the
 * library (nnz_write.c and nnz_read.c call these). */
#ifndef NNZIP_FORMAT_KERNELS_H
#define NNZIP_FORMAT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "nnzip/error.h"
#include "nnzip/model.h"

/* The writer's decision and payload for tensor (node, slot) of m: *out = the KERNELS payload
 * (malloc'd, *len bytes) when that encoding is used, else *out = NULL (store F32 / F16). */
nz_status nz_kernels_encode(const nz_model *m, int node, int slot, uint8_t **out, size_t *len,
                            nz_error *err);

/* Checks a KERNELS payload in[len] for parameter `slot` of node n, whose dims come from the
 * GRAPH; *store = the value type. The message names the problem only (the caller adds the file
 * and section). */
nz_status nz_kernels_check(const uint8_t *in, size_t len, const nz_node *n, int slot,
                           nz_store *store, nz_error *err);

/* Expands a payload nz_kernels_check accepted for p into dst[p->n]. */
void nz_kernels_expand(const uint8_t *in, const nz_param *p, float *dst);

#endif
