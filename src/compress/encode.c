/* Deep Compression stage 3 settings: which tensors are stored sparse, the relative-index width
 * and position order per layer, Huffman coding of both streams, f16 biases; and the per-layer
 * size table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "nnzip/compress.h"

void nz_encode_cfg_default(nz_encode_cfg *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->huffman = 1;
    cfg->order = NZ_ORDER_AUTO;
    cfg->f16_biases = 1;
    cfg->f16_codebooks = 1;
    cfg->sparse_min = 0.5f;
}

/* Bytes of the encoded payload at a given index width and order. */
static size_t encoded_size(nz_sparse *s, int bits, int col_major) {
    const int keep = s->index_bits, keep_cm = s->col_major;
    s->index_bits = bits;
    s->col_major = col_major;
    uint8_t *buf;
    size_t len = 0;
    if (nz_sparse_encode(s, &buf, &len, NULL) == NZ_OK)
        free(buf);
    else
        len = SIZE_MAX;
    s->index_bits = keep;
    s->col_major = keep_cm;
    return len;
}

/* binary16 storage only where every value survives it finite (|x| <= 65504) */
static int fits_f16_all(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(x[i]) <= NZ_F16_MAX)) return 0;
    return 1;
}

nz_status nz_encode(nz_model *m, const nz_encode_cfg *cfg, nz_error *err) {
    for (int i = 0; i < m->n_nodes; i++) {
        nz_node *n = &m->nodes[i];
        if (!nz_node_is_weighted(n)) continue;
        nz_param *w = &n->params[0];
        if (!w->sparse) {
            size_t zeros = 0;
            const float *W = m->params + w->off;
            for (size_t j = 0; j < w->n; j++) zeros += W[j] == 0.0f;
            if (w->n == 0 || (double)zeros < (double)cfg->sparse_min * (double)w->n) continue;
            nz_status st = nz_model_sparsify_param(m, i, NULL, 0, 8, err);
            if (st) return st;
        }
        nz_sparse *s = n->params[0].sparse;
        s->huffman = cfg->huffman != 0;
        /* the reader refuses non-finite codebooks: fail here rather than write a file that
         * cannot be read (a diverged training run is the usual cause) */
        int fits_f16 = 1;
        for (int k = 0; k < s->n_codebook; k++) {
            if (!isfinite(s->codebook[k]))
                return nz_fail(err, NZ_ERR_ARG,
                               "layer '%s': shared weight %d is not finite (did training diverge?)",
                               n->name, k);
            fits_f16 &= fabsf(s->codebook[k]) <= NZ_F16_MAX;
        }
        if (cfg->f16_codebooks && s->n_codebook && !s->codebook_f16 && fits_f16) {
            /* round now, so the model in memory computes what the file will hold */
            for (int k = 0; k < s->n_codebook; k++)
                s->codebook[k] = nz_f16_to_f32(nz_f32_to_f16(s->codebook[k]));
            s->codebook_f16 = 1;
            nz_status st = s->col_ptr ? nz_sparse_build_csc(s, err) : NZ_OK; /* its values */
            if (st) return st;
        }
        int want = i < NZ_MAX_PASS_NODES ? cfg->index_bits[i] : 0;
        if (want > 12) return nz_fail(err, NZ_ERR_ARG, "layer '%s': index width %d (1..12)", n->name, want);
        if ((unsigned)cfg->order > NZ_ORDER_COL)
            return nz_fail(err, NZ_ERR_ARG, "bad position order %d", (int)cfg->order);
        /* the (order, width) making the smallest payload: narrow widths need many fillers, wide
         * ones waste bits (Huffman narrows the gap but not entirely); which order gives shorter
         * gaps depends on where the layer's survivors cluster. Ties keep row-major, the order
         * readers before column-major storage understand. */
        const int cm_lo = cfg->order == NZ_ORDER_COL, cm_hi = cfg->order != NZ_ORDER_ROW;
        const int b_lo = want > 0 ? want : 2, b_hi = want > 0 ? want : 10;
        size_t best = SIZE_MAX;
        int best_bits = b_lo, best_cm = cm_lo;
        for (int cm = cm_lo; cm <= cm_hi; cm++)
            for (int b = b_lo; b <= b_hi; b++) {
                size_t sz = encoded_size(s, b, cm);
                if (sz < best) {
                    best = sz;
                    best_bits = b;
                    best_cm = cm;
                }
            }
        s->index_bits = best_bits;
        s->col_major = best_cm;
        if (cfg->f16_biases && n->n_params > 1 && !n->params[1].sparse &&
            fits_f16_all(m->params + n->params[1].off, n->params[1].n))
            n->params[1].store = NZ_STORE_F16;
    }
    /* apply the f16 rounding now, so the model in memory computes what the file will hold */
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_params; k++) {
            nz_param *p = &m->nodes[i].params[k];
            if (p->sparse || p->store != NZ_STORE_F16) continue;
            for (size_t j = 0; j < p->n; j++) {
                /* round trip through binary16 (same rounding as the writer) */
                m->params[p->off + j] = nz_f16_to_f32(nz_f32_to_f16(m->params[p->off + j]));
            }
        }
    return NZ_OK;
}

int nz_size_table(const nz_model *m, nz_layer_size *rows, int max) {
    int r = 0;
    for (int i = 0; i < m->n_nodes && r < max; i++) {
        const nz_node *n = &m->nodes[i];
        if (!nz_node_is_weighted(n)) continue;
        nz_layer_size *row = &rows[r++];
        memset(row, 0, sizeof *row);
        snprintf(row->name, sizeof row->name, "%s", n->name);
        row->node = i;
        const nz_param *w = &n->params[0];
        row->weights = nz_param_numel(w);
        for (int k = 0; k < n->n_params; k++) {
            row->stored_bytes += nz_param_stored_bytes(m, &n->params[k]);
            row->dense_bytes += nz_param_numel(&n->params[k]) * 4;
        }
        if (w->sparse) {
            nz_sparse *s = w->sparse; /* stored_bytes encoded it: the stream sizes are fresh */
            row->sparse = 1;
            row->nonzeros = s->nnz;
            row->entries = s->n_entries;
            row->huffman = s->huffman;
            row->code_bits = s->n_codebook ? s->code_bits : 32;
            row->index_bits = s->index_bits;
            row->col_major = s->col_major;
            if (s->n_entries) {
                row->value_bits = 8.0 * (double)s->value_stream_bytes / s->n_entries;
                row->index_bits_stored = 8.0 * (double)s->index_stream_bytes / s->n_entries;
            }
        } else {
            const float *W = m->params + w->off;
            for (size_t j = 0; j < w->n; j++) row->nonzeros += W[j] != 0.0f;
            row->entries = w->n;
            row->code_bits = w->store == NZ_STORE_F16 ? 16 : 32;
            row->value_bits = row->code_bits;
        }
    }
    return r;
}
