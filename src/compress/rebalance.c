/* Rebalancing a ReLU net's layers without changing its function.
 *
 * relu(a z) = a relu(z) and maxpool(a z) = a maxpool(z) for a > 0, so scaling one unit's
 * incoming weights and bias by a and the next layer's weights that read it by 1/a leaves every
 * output as it was. Training can leave the scales far apart: slimming penalizes one layer's
 * norms while the next grows to make up for it, and then one learning rate is too large for
 * one layer and too small for the other, and per-layer magnitude pruning ranks a unit's weights
 * by a scale that is an accident of training. Rebalancing picks, per unit, the a that makes its
 * incoming and outgoing weights equally large (L2): a^2 = |out| / |in|. */
#include <math.h>
#include <stddef.h>

#include "nnzip/compress.h"
#include "nnzip/model.h"

/* The weighted node reading node i through relu/maxpool/avgpool/dropout/flatten only, where
 * every node on the way has that one reader; -1 if there is none (batch norm renormalizes, an
 * add mixes units, a sparse tensor has no dense weights to scale). */
static int balanced_successor(const nz_model *m, int i) {
    int cur = i;
    for (;;) {
        int reader = -1, readers = 0;
        for (int j = cur + 1; j < m->n_nodes; j++)
            for (int k = 0; k < m->nodes[j].n_inputs; k++)
                if (m->nodes[j].inputs[k] == cur) {
                    reader = j;
                    readers++;
                }
        if (readers != 1) return -1;
        const nz_node *n = &m->nodes[reader];
        switch (n->op) {
        case NZ_OP_RELU:
        case NZ_OP_MAXPOOL:
        case NZ_OP_AVGPOOL:
        case NZ_OP_DROPOUT:
        case NZ_OP_FLATTEN: cur = reader; break;
        case NZ_OP_DENSE:
        case NZ_OP_CONV2D: return n->params[0].sparse ? -1 : reader;
        default: return -1;
        }
    }
}

int nz_rebalance(nz_model *m) {
    int pairs = 0;
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *a = &m->nodes[i];
        if ((a->op != NZ_OP_DENSE && a->op != NZ_OP_CONV2D) || a->params[0].sparse) continue;
        const int j = balanced_successor(m, i);
        if (j < 0) continue;
        const nz_node *b = &m->nodes[j];
        const size_t U = (size_t)a->units, per_in = a->params[0].n / U;
        /* what one unit of a feeds in b: a plane of span values (flatten: its H x W map; conv:
         * one input channel's kernel of every output channel) */
        size_t rows, stride, span;
        if (b->op == NZ_OP_DENSE) {
            rows = (size_t)b->units;
            stride = b->params[0].n / rows; /* b's row length = U * span */
            span = stride / U;
        } else {
            rows = (size_t)b->units;
            span = (size_t)b->kh * b->kw;
            stride = U * span;
        }
        if (span == 0 || stride != U * span || rows * stride != b->params[0].n) continue;
        float *Wa = m->params + a->params[0].off, *ba = m->params + a->params[1].off;
        float *Wb = m->params + b->params[0].off;
        for (size_t u = 0; u < U; u++) {
            double in = 0, out = 0;
            for (size_t q = 0; q < per_in; q++) in += (double)Wa[u * per_in + q] * Wa[u * per_in + q];
            in += (double)ba[u] * ba[u];
            for (size_t r = 0; r < rows; r++)
                for (size_t q = 0; q < span; q++) {
                    const float w = Wb[r * stride + u * span + q];
                    out += (double)w * w;
                }
            if (in <= 0 || out <= 0) continue; /* a dead unit: nothing to balance */
            const float s = (float)sqrt(sqrt(out / in)), inv = 1.0f / s;
            for (size_t q = 0; q < per_in; q++) Wa[u * per_in + q] *= s;
            ba[u] *= s;
            for (size_t r = 0; r < rows; r++)
                for (size_t q = 0; q < span; q++) Wb[r * stride + u * span + q] *= inv;
        }
        pairs++;
    }
    return pairs;
}
