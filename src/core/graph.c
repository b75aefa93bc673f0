/* Running a model: the workspace, forward and backward over the node list, the loss. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/layers.h"
#include "nnzip/compress.h"
#include "nnzip/model.h"

struct nz_ws {
    int max_batch, n_nodes;
    float **act;      /* per node (B, out) */
    float **dact;     /* per node (B, out); NULL for the input */
    int32_t **argmax; /* maxpool nodes */
    float **mask;     /* dropout nodes */
    unsigned char *owns; /* 1 where act/dact are this node's own memory (0: aliases its input) */
    unsigned char *fresh; /* backward: 1 while a node's gradient buffer is unwritten */
    unsigned char *drop_on; /* dropout: 1 if the last forward dropped (mask valid);
                               batch norm: 1 if it used batch statistics */
    float *grads;     /* (n_params) */
    size_t n_params;
    float *scratch;   /* im2col, per thread */
    float *dw_partial;/* conv per-thread weight-gradient partials */
    float *sp_scratch;/* sparse dense layers: input^T and output^T */
    float **weff;     /* norm-direction nodes: the effective W and its gradient, (2, |W|) */
    float **bnstat;   /* batch-norm nodes: mean and 1/std used by the last forward, (2, C) */
    int *consumers;   /* per node: how many nodes read its output */
    float *fold;      /* nz_infer: a conv's weights and bias with its batch norm folded in */
    float *convstats; /* training: a conv's per-sample output sums for its batch norm, (B, C, 3) */
    int stats_for;    /* the batch-norm node convstats was filled for, or -1 */
    int add_done;     /* the add whose relu's output a batch norm already wrote, or -1 */
    unsigned char *bnrelu; /* batch-norm nodes whose only reader is the relu right after them */
    unsigned char *addrelu; /* the same for adds (fused in the forward pass only) */
    unsigned char *bnadd; /* batch-norm nodes whose only reader is the fused add + relu right
                             after them, whose other input comes earlier (forward only) */
    unsigned char *shared; /* nodes whose buffers another node aliases (flatten) */
    int keep_acts;    /* 1: every node's output is stored (no batch norm + relu fusion) */
    int threads;
    int last_B;
};

static int aliases_input(const nz_node *n) { return n->op == NZ_OP_FLATTEN; }

void nz_ws_free(nz_ws *ws) {
    if (!ws) return;
    for (int i = 0; i < ws->n_nodes; i++) {
        if (ws->owns && ws->owns[i]) {
            free(ws->act[i]);
            free(ws->dact[i]);
        }
        if (ws->argmax) free(ws->argmax[i]);
        if (ws->mask) free(ws->mask[i]);
        if (ws->weff) free(ws->weff[i]);
        if (ws->bnstat) free(ws->bnstat[i]);
    }
    free(ws->bnstat);
    free(ws->consumers);
    free(ws->fold);
    free(ws->convstats);
    free(ws->act);
    free(ws->dact);
    free(ws->argmax);
    free(ws->mask);
    free(ws->weff);
    free(ws->owns);
    free(ws->drop_on);
    free(ws->fresh);
    free(ws->grads);
    free(ws->scratch);
    free(ws->dw_partial);
    free(ws->sp_scratch);
    free(ws->bnrelu);
    free(ws->addrelu);
    free(ws->bnadd);
    free(ws->shared);
    free(ws);
}

nz_ws *nz_ws_new(const nz_model *m, int max_batch, nz_error *err) {
    nz_ws *ws = calloc(1, sizeof *ws);
    if (!ws) goto oom;
    ws->max_batch = max_batch;
    ws->n_nodes = m->n_nodes;
    ws->threads = omp_get_max_threads();
    ws->act = calloc((size_t)m->n_nodes, sizeof(float *));
    ws->dact = calloc((size_t)m->n_nodes, sizeof(float *));
    ws->argmax = calloc((size_t)m->n_nodes, sizeof(int32_t *));
    ws->mask = calloc((size_t)m->n_nodes, sizeof(float *));
    ws->owns = calloc((size_t)m->n_nodes, 1);
    ws->weff = calloc((size_t)m->n_nodes, sizeof(float *));
    ws->bnstat = calloc((size_t)m->n_nodes, sizeof(float *));
    ws->consumers = calloc((size_t)m->n_nodes, sizeof(int));
    ws->drop_on = calloc((size_t)m->n_nodes, 1);
    ws->fresh = calloc((size_t)m->n_nodes, 1);
    ws->bnrelu = calloc((size_t)m->n_nodes, 1);
    ws->addrelu = calloc((size_t)m->n_nodes, 1);
    ws->bnadd = calloc((size_t)m->n_nodes, 1);
    ws->shared = calloc((size_t)m->n_nodes, 1);
    ws->n_params = m->n_params;
    ws->grads = calloc(m->n_params ? m->n_params : 1, sizeof(float));
    if (!ws->act || !ws->dact || !ws->argmax || !ws->mask || !ws->owns || !ws->drop_on || !ws->fresh || !ws->weff || !ws->bnstat || !ws->consumers ||
        !ws->bnrelu || !ws->addrelu || !ws->bnadd || !ws->shared || !ws->grads)
        goto oom;
    size_t scratch = 0, partial = 0, sp = 0, fold = 0, cstats = 0;
    ws->stats_for = -1;
    ws->add_done = -1;
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        for (int k = 0; k < n->n_inputs; k++) ws->consumers[n->inputs[k]]++;
        size_t sz = nz_shape_size(n->out) * (size_t)max_batch;
        if (aliases_input(n)) {
            ws->shared[n->inputs[0]] = 1;
            ws->act[i] = ws->act[n->inputs[0]];
            ws->dact[i] = ws->dact[n->inputs[0]];
        } else {
            ws->owns[i] = 1;
            ws->act[i] = malloc(sizeof(float) * sz);
            ws->dact[i] = malloc(sizeof(float) * sz);
            if (!ws->act[i] || !ws->dact[i]) goto oom;
        }
        if (n->op == NZ_OP_MAXPOOL && !(ws->argmax[i] = malloc(sizeof(int32_t) * sz))) goto oom;
        if (n->op == NZ_OP_DROPOUT && !(ws->mask[i] = malloc(sizeof(float) * sz))) goto oom;
        if (n->op == NZ_OP_BATCHNORM && !(ws->bnstat[i] = malloc(sizeof(float) * 2 * (size_t)n->out.c)))
            goto oom;
        if (n->op == NZ_OP_BATCHNORM && 3 * (size_t)n->out.c * (size_t)max_batch > cstats)
            cstats = 3 * (size_t)n->out.c * (size_t)max_batch;
        if ((n->op == NZ_OP_NDENSE || n->op == NZ_OP_NCONV2D) &&
            !(ws->weff[i] = malloc(sizeof(float) * 2 * nz_param_numel(&n->params[0]))))
            goto oom;
        if (n->op == NZ_OP_CONV2D || n->op == NZ_OP_NCONV2D) {
            nz_shape s = m->nodes[n->inputs[0]].out;
            conv_dims d = conv_dims_make(s.c, s.h, s.w, n->units, n->kh, n->stride, n->pad);
            size_t c = conv_scratch_per_thread(&d);
            if (c > scratch) scratch = c;
            size_t p = nz_param_numel(&n->params[0]) + (size_t)n->units;
            if (p > partial) partial = p;
            if (p > fold) fold = p;
        }
        if (n->op == NZ_OP_DENSE || n->op == NZ_OP_NDENSE) {
            size_t c = (nz_shape_size(m->nodes[n->inputs[0]].out) + (size_t)n->units) *
                       (size_t)max_batch;
            if (c > sp) sp = c;
        }
    }
    for (int i = 1; i + 1 < m->n_nodes; i++) {
        const int relu_next = m->nodes[i + 1].op == NZ_OP_RELU && m->nodes[i + 1].inputs[0] == i &&
                              ws->consumers[i] == 1;
        ws->bnrelu[i] = relu_next && m->nodes[i].op == NZ_OP_BATCHNORM;
        ws->addrelu[i] = relu_next && m->nodes[i].op == NZ_OP_ADD;
    }
    for (int i = 1; i + 1 < m->n_nodes; i++) {
        const nz_node *a = &m->nodes[i + 1];
        ws->bnadd[i] = m->nodes[i].op == NZ_OP_BATCHNORM && a->op == NZ_OP_ADD &&
                       a->inputs[0] == i && a->inputs[1] < i && ws->consumers[i] == 1 &&
                       ws->addrelu[i + 1];
    }
    if (scratch && !(ws->scratch = malloc(sizeof(float) * scratch * (size_t)ws->threads))) goto oom;
    if (sp && !(ws->sp_scratch = malloc(sizeof(float) * sp))) goto oom;
    if (fold && !(ws->fold = malloc(sizeof(float) * fold))) goto oom;
    if (cstats && !(ws->convstats = malloc(sizeof(float) * cstats))) goto oom;
    if (partial && !(ws->dw_partial = malloc(sizeof(float) * partial * (size_t)ws->threads)))
        goto oom;
    return ws;
oom:
    nz_ws_free(ws);
    nz_fail(err, NZ_ERR_NOMEM, "out of memory for a batch of %d", max_batch);
    return NULL;
}

float *nz_ws_grads(nz_ws *ws) { return ws->grads; }

void nz_ws_zero_grads(nz_ws *ws) { memset(ws->grads, 0, sizeof(float) * ws->n_params); }

const float *nz_ws_act(const nz_ws *ws, int node) {
    return (ws->bnrelu[node] || ws->addrelu[node] || ws->bnadd[node]) && !ws->keep_acts
               ? NULL
               : ws->act[node];
}

void nz_ws_keep_acts(nz_ws *ws, int keep) { ws->keep_acts = keep != 0; }

static conv_dims node_conv_dims(const nz_model *m, const nz_node *n, const nz_ws *ws) {
    nz_shape s = m->nodes[n->inputs[0]].out;
    conv_dims d = conv_dims_make(s.c, s.h, s.w, n->units, n->kh, n->stride, n->pad);
    if (d.threads > ws->threads) d.threads = ws->threads; /* scratch was sized for ws->threads */
    return d;
}

/* out (B, O) = in (B, I) S^T + b, computed from the sparse form (nz_sparse_matmul_batch). */
static void sparse_dense_forward(float *out, const float *in, const nz_sparse *S, const float *b,
                                 int B, float *scratch) {
    const int n_out = S->rows;
    nz_sparse_matmul_batch(S, in, B, out, scratch);
    for (int n = 0; n < B; n++)
        for (int o = 0; o < n_out; o++) out[(size_t)n * n_out + o] += b[o];
}

/* Sparse conv: im2col per sample, then the sparse matrix times the columns. */
static void sparse_conv2d_forward(float *out, const float *in, const nz_sparse *S,
                                  const float *b, int B, const conv_dims *d, float *scratch) {
    const int OHW = d->OH * d->OW;
    const size_t in_sz = (size_t)d->C * d->H * d->W, out_sz = (size_t)d->OC * OHW;
    const size_t per = conv_scratch_per_thread(d);
    const int T = B < d->threads ? B : d->threads;
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        float *cols = scratch + per * (size_t)t;
        for (int n = (int)((long)B * t / nt); n < (int)((long)B * (t + 1) / nt); n++) {
            float *y = out + out_sz * n;
            conv_im2col(cols, in + in_sz * n, d);
            for (int oc = 0; oc < d->OC; oc++)
                for (int i = 0; i < OHW; i++) y[(size_t)oc * OHW + i] = b[oc];
            nz_sparse_matmul(S, cols, OHW, y, 1);
        }
    }
}

/* Node i + 1 if node i is an add whose only reader is the relu i + 1, else -1. The add then
 * writes the relu's output directly (one pass instead of two); the backward pass runs the
 * relu as usual, from that output. */
static int add_relu_fused(const nz_ws *ws, int i) {
    return i > 0 && ws->addrelu[i] && !ws->keep_acts ? i + 1 : -1;
}

/* Node i + 1 if node i is a batch norm whose only reader is the relu i + 1, else -1. The two
 * then run as one kernel, forward and backward: the batch norm's output and the gradient that
 * the relu would pass back are never stored (two full passes over memory saved). */

static int bn_relu_fused(const nz_ws *ws, int i) {
    return i > 0 && ws->bnrelu[i] && !ws->keep_acts ? i + 1 : -1;
}

/* Node i + 1 if node i is a batch norm whose only reader is the add i + 1, itself fused with
 * its relu i + 2, and the add's other input is computed before node i (a residual block's
 * second batch norm); else -1. The batch norm then writes the relu's output, max(0, bn + skip),
 * in its normalizing pass: neither its own output nor the add's is stored (the backward pass
 * reads neither). */
static int bn_add_fused(const nz_ws *ws, int i) {
    return i > 0 && ws->bnadd[i] && !ws->keep_acts ? i + 1 : -1;
}

/* Node i+1 if it is a batch norm reading only node i, which nobody else reads; else -1. */
static int fusable_bn(const nz_model *m, const nz_ws *ws, int i) {
    const nz_node *n = &m->nodes[i];
    if (n->op != NZ_OP_CONV2D || n->params[0].sparse || i + 1 >= m->n_nodes) return -1;
    const nz_node *b = &m->nodes[i + 1];
    if (b->op != NZ_OP_BATCHNORM || b->inputs[0] != i || ws->consumers[i] != 1) return -1;
    return i + 1;
}

/* Runs nodes [from, to) of the forward pass. */
static void nz_forward_range(const nz_model *m, nz_ws *ws, int B, int training, nz_rng *rng,
                             int from, int to) {
    for (int i = from; i < to; i++) {
        const nz_node *n = &m->nodes[i];
        const nz_shape s = m->nodes[n->inputs[0]].out;
        const float *in = ws->act[n->inputs[0]];
        float *out = ws->act[i];
        const float *P = m->params;
        size_t sz = nz_shape_size(n->out) * (size_t)B;
        switch (n->op) {
        case NZ_OP_DENSE:
            if (n->params[0].sparse)
                sparse_dense_forward(out, in, n->params[0].sparse, P + n->params[1].off, B,
                                     ws->sp_scratch);
            else
                dense_forward(out, in, P + n->params[0].off, P + n->params[1].off, B,
                              (int)nz_shape_size(s), n->units);
            break;
        case NZ_OP_CONV2D: {
            conv_dims d = node_conv_dims(m, n, ws);
            if (n->params[0].sparse) {
                sparse_conv2d_forward(out, in, n->params[0].sparse, P + n->params[1].off, B, &d,
                                      ws->scratch);
                break;
            }
            /* a batch norm that is this conv's only reader takes its batch statistics from
             * sums the conv makes while its outputs are in cache: two passes over them saved */
            const int j = training ? fusable_bn(m, ws, i) : -1;
            d.out_stats = j >= 0 ? ws->convstats : NULL;
            if (conv2d_forward(out, in, P + n->params[0].off, P + n->params[1].off, B, &d,
                               ws->scratch))
                ws->stats_for = j;
            break;
        }
        case NZ_OP_NDENSE: {
            const int G = n->units, S = (int)nz_shape_size(s);
            normdir_weights(ws->weff[i], P + n->params[0].off, P + n->params[1].off, G, S);
            dense_forward(out, in, ws->weff[i], P + n->params[2].off, B, S, G);
            break;
        }
        case NZ_OP_NCONV2D: {
            conv_dims d = node_conv_dims(m, n, ws);
            normdir_weights(ws->weff[i], P + n->params[0].off, P + n->params[1].off,
                            n->units * s.c, n->kh * n->kw);
            conv2d_forward(out, in, ws->weff[i], P + n->params[2].off, B, &d, ws->scratch);
            break;
        }
        case NZ_OP_MAXPOOL:
            maxpool_forward(out, ws->argmax[i], in, B, s.c, s.h, s.w, n->kh, n->kw, n->stride,
                            n->out.h, n->out.w);
            break;
        case NZ_OP_RELU:
            if (bn_relu_fused(ws, n->inputs[0]) < 0 && add_relu_fused(ws, n->inputs[0]) < 0)
                relu_forward(out, in, sz);
            break; /* else the batch norm or the add wrote it */
        case NZ_OP_DROPOUT:
            ws->drop_on[i] = training && n->p > 0.0f;
            if (ws->drop_on[i])
                dropout_forward(out, ws->mask[i], in, sz, n->p, rng);
            else
                memcpy(out, in, sizeof(float) * sz);
            break;
        case NZ_OP_FLATTEN:
            ws->act[i] = ws->act[n->inputs[0]];
            break;
        case NZ_OP_BATCHNORM: {
            /* the one place a forward writes the model: running statistics in training */
            float *Pw = m->params;
            const int r = bn_relu_fused(ws, i), a = bn_add_fused(ws, i);
            ws->drop_on[i] = training != 0;
            batchnorm_forward_pre(r >= 0 ? ws->act[r] : a >= 0 ? ws->act[a + 1] : out, in,
                                  P + n->params[0].off, P + n->params[1].off,
                                  Pw + n->params[2].off, Pw + n->params[3].off, ws->bnstat[i],
                                  ws->bnstat[i] + s.c, B, s.c, s.h * s.w, n->p, NZ_BN_EPS,
                                  training, r >= 0,
                                  training && ws->stats_for == i ? ws->convstats : NULL,
                                  a >= 0 ? ws->act[m->nodes[a].inputs[1]] : NULL);
            ws->add_done = a;
            ws->stats_for = -1;
            break;
        }
        case NZ_OP_ADD: {
            const int r = add_relu_fused(ws, i); /* backward runs the relu as usual */
            if (ws->add_done == i) { /* the batch norm wrote the relu's output (not when
                                        nz_infer folded it into its conv) */
                ws->add_done = -1;
                break;
            }
            if (r < 0) add_forward(out, in, ws->act[n->inputs[1]], sz);
            else add_relu_forward(ws->act[r], in, ws->act[n->inputs[1]], sz);
            break;
        }
        case NZ_OP_AVGPOOL:
            avgpool_forward(out, in, B, s.c, s.h, s.w, n->kh, n->kw, n->stride, n->out.h,
                            n->out.w);
            break;
        case NZ_OP_GAP:
            avgpool_forward(out, in, B, s.c, s.h, s.w, s.h, s.w, 1, 1, 1);
            break;
        case NZ_OP_SHORTCUT:
            shortcut_forward(out, in, B, s.c, s.h, s.w, n->units, n->stride, n->out.h, n->out.w);
            break;
        case NZ_OP_SELECT:
            select_forward(out, in, P + n->params[0].off, B, (int)nz_shape_size(s), n->units);
            break;
        default:
            break;
        }
    }
}

const float *nz_forward(const nz_model *m, nz_ws *ws, const float *x, int B, int training,
                        nz_rng *rng) {
    ws->act[0] = (float *)x; /* the input is read, never written */
    ws->last_B = B;
    nz_forward_range(m, ws, B, training, rng, 1, m->n_nodes);
    return ws->act[m->n_nodes - 1];
}

const float *nz_infer(const nz_model *m, nz_ws *ws, const float *x, int B) {
    ws->act[0] = (float *)x;
    ws->last_B = B;
    int i = 1;
    while (i < m->n_nodes) {
        const int j = fusable_bn(m, ws, i);
        if (j < 0) { /* one node the ordinary way */
            nz_forward_range(m, ws, B, 0, NULL, i, i + 1);
            i++;
            continue;
        }
        /* y = gamma (W x + b - mean) / sqrt(var + eps) + beta = (a W) x + a (b - mean) + beta */
        const nz_node *n = &m->nodes[i], *bn = &m->nodes[j];
        const float *P = m->params;
        const size_t per = nz_param_numel(&n->params[0]) / (size_t)n->units;
        float *Wf = ws->fold, *bf = ws->fold + per * (size_t)n->units;
        for (int o = 0; o < n->units; o++) {
            const float a = P[bn->params[0].off + o] / sqrtf(P[bn->params[3].off + o] + NZ_BN_EPS);
            const float *w = P + n->params[0].off + (size_t)o * per;
            for (size_t q = 0; q < per; q++) Wf[(size_t)o * per + q] = w[q] * a;
            bf[o] = (P[n->params[1].off + o] - P[bn->params[2].off + o]) * a +
                    P[bn->params[1].off + o];
        }
        int last = j; /* and a relu that only reads the batch norm */
        if (j + 1 < m->n_nodes && m->nodes[j + 1].op == NZ_OP_RELU &&
            m->nodes[j + 1].inputs[0] == j && ws->consumers[j] == 1)
            last = j + 1;
        conv_dims d = node_conv_dims(m, n, ws);
        d.out_relu = last != j;
        conv2d_forward(ws->act[last], ws->act[n->inputs[0]], Wf, bf, B, &d, ws->scratch);
        i = last + 1;
    }
    return ws->act[m->n_nodes - 1];
}

/* The node whose buffer node i's gradient lives in (flatten shares its input's). */
static int grad_owner(const nz_model *m, const nz_ws *ws, int i) {
    while (i > 0 && !ws->owns[i]) i = m->nodes[i].inputs[0];
    return i;
}

/* Gradient buffers start the backward pass unwritten ("fresh"). The first consumer to reach a
 * buffer overwrites it when its kernel can (relu, batch norm, add, conv), which saves zeroing
 * every activation gradient each step; any other writer zeroes it first and accumulates. */
static float *grad_for_add(const nz_model *m, nz_ws *ws, int src, int B) {
    const int o = grad_owner(m, ws, src);
    if (ws->fresh[o]) {
        memset(ws->dact[o], 0, sizeof(float) * nz_shape_size(m->nodes[o].out) * (size_t)B);
        ws->fresh[o] = 0;
    }
    return ws->dact[src];
}

/* 1 if the caller may overwrite src's gradient (and it is now marked written) */
static int grad_take_fresh(const nz_model *m, nz_ws *ws, int src) {
    const int o = grad_owner(m, ws, src);
    if (!ws->fresh[o]) return 0;
    ws->fresh[o] = 0;
    return 1;
}

void nz_backward(const nz_model *m, nz_ws *ws, const float *dlogits, int B) {
    const int last = m->n_nodes - 1;
    for (int i = 1; i < m->n_nodes; i++) ws->fresh[i] = ws->owns[i];
    memcpy(ws->dact[last], dlogits, sizeof(float) * nz_shape_size(m->nodes[last].out) * B);
    ws->fresh[grad_owner(m, ws, last)] = 0;
    for (int i = last; i >= 1; i--) {
        const nz_node *n = &m->nodes[i];
        const int src = n->inputs[0];
        const nz_shape s = m->nodes[src].out;
        size_t sz = nz_shape_size(n->out) * (size_t)B;
        if (n->op == NZ_OP_FLATTEN) continue; /* shares its input's gradient buffer */
        const int fused = n->op == NZ_OP_BATCHNORM ? bn_relu_fused(ws, i) : -1;
        const int gi = fused < 0 ? i : fused; /* whose gradient this node reads */
        if (ws->fresh[grad_owner(m, ws, gi)]) (void)grad_for_add(m, ws, gi, B); /* no consumer */
        if (n->op == NZ_OP_RELU && bn_relu_fused(ws, src) == i) continue; /* in the bn's */
        const float *dout = ws->dact[gi];
        const float *P = m->params;
        float *G = ws->grads;
        /* no gradient for the data; otherwise overwrite where the kernel allows (set) */
        int set = 0;
        float *din = NULL;
        if (src != 0) {
            int can_set = n->op == NZ_OP_RELU || n->op == NZ_OP_BATCHNORM ||
                          n->op == NZ_OP_ADD || n->op == NZ_OP_CONV2D;
            set = can_set && grad_take_fresh(m, ws, src);
            din = set ? ws->dact[src] : grad_for_add(m, ws, src, B);
        }
        switch (n->op) {
        case NZ_OP_DENSE:
            dense_backward(din, G + n->params[0].off, G + n->params[1].off, dout, ws->act[src],
                           P + n->params[0].off, B, (int)nz_shape_size(s), n->units);
            break;
        case NZ_OP_CONV2D: {
            conv_dims d = node_conv_dims(m, n, ws);
            d.din_set = set;
            conv2d_backward(din, G + n->params[0].off, G + n->params[1].off, dout, ws->act[src],
                            P + n->params[0].off, B, &d, ws->scratch, ws->dw_partial);
            break;
        }
        case NZ_OP_NDENSE:
        case NZ_OP_NCONV2D: {
            /* backward through W = g V/||V|| as computed by the forward */
            const size_t wn = nz_param_numel(&n->params[0]);
            float *W = ws->weff[i], *dW = W + wn;
            float *db = G + n->params[2].off;
            memset(dW, 0, sizeof(float) * wn);
            int groups, gsize;
            if (n->op == NZ_OP_NDENSE) {
                groups = n->units;
                gsize = (int)nz_shape_size(s);
                dense_backward(din, dW, db, dout, ws->act[src], W, B, gsize, groups);
            } else {
                conv_dims d = node_conv_dims(m, n, ws);
                groups = n->units * s.c;
                gsize = n->kh * n->kw;
                conv2d_backward(din, dW, db, dout, ws->act[src], W, B, &d, ws->scratch,
                                ws->dw_partial);
            }
            normdir_backward(G + n->params[0].off, G + n->params[1].off, dW,
                             P + n->params[0].off, P + n->params[1].off, groups, gsize);
            break;
        }
        case NZ_OP_MAXPOOL:
            if (din)
                maxpool_backward(din, dout, ws->argmax[i], B, s.c, s.h, s.w, n->out.h, n->out.w);
            break;
        case NZ_OP_RELU:
            if (set) relu_backward_set(din, dout, ws->act[i], sz);
            else if (din) relu_backward(din, dout, ws->act[i], sz);
            break;
        case NZ_OP_DROPOUT:
            if (din && ws->drop_on[i])
                dropout_backward(din, dout, ws->mask[i], sz);
            else if (din)
                for (size_t j = 0; j < sz; j++) din[j] += dout[j];
            break;
        case NZ_OP_BATCHNORM:
            batchnorm_relu_backward(din, G + n->params[0].off, G + n->params[1].off, dout,
                                    ws->act[src], P + n->params[0].off, P + n->params[1].off,
                                    ws->bnstat[i], ws->bnstat[i] + s.c, B, s.c, s.h * s.w,
                                    ws->drop_on[i], fused >= 0, set);
            break;
        case NZ_OP_ADD:
            if (set && ws->owns[src] && !ws->shared[src] && !ws->shared[i]) {
                /* the add's gradient is read by nobody after this node: hand its buffer to
                 * the input instead of copying (both are the add's shape, for max_batch) */
                float *t = ws->dact[src];
                ws->dact[src] = ws->dact[i];
                ws->dact[i] = t;
            } else if (set)
                memcpy(din, dout, sizeof(float) * sz);
            else if (din)
                add_backward(din, dout, sz);
            if (n->inputs[1] != 0) {
                if (grad_take_fresh(m, ws, n->inputs[1]))
                    memcpy(ws->dact[n->inputs[1]], dout, sizeof(float) * sz);
                else
                    add_backward(grad_for_add(m, ws, n->inputs[1], B), dout, sz);
            }
            break;
        case NZ_OP_AVGPOOL:
            if (din)
                avgpool_backward(din, dout, B, s.c, s.h, s.w, n->kh, n->kw, n->stride, n->out.h,
                                 n->out.w);
            break;
        case NZ_OP_GAP:
            if (din) avgpool_backward(din, dout, B, s.c, s.h, s.w, s.h, s.w, 1, 1, 1);
            break;
        case NZ_OP_SHORTCUT:
            if (din)
                shortcut_backward(din, dout, B, s.c, s.h, s.w, n->units, n->stride, n->out.h,
                                  n->out.w);
            break;
        case NZ_OP_SELECT:
            if (din) select_backward(din, dout, P + n->params[0].off, B, (int)nz_shape_size(s),
                                     n->units);
            break;
        default:
            break;
        }
    }
}

float nz_softmax_xent(const float *logits, const uint8_t *labels, int B, int K, float *dlogits,
                      int *n_correct) {
    double loss = 0;
    int correct = 0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * K;
        float mx = z[0];
        int arg = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > mx) {
                mx = z[k];
                arg = k;
            }
        double sum = 0;
        for (int k = 0; k < K; k++) sum += exp((double)(z[k] - mx));
        double lse = mx + log(sum);
        loss += lse - z[labels[b]];
        if (arg == labels[b]) correct++;
        if (dlogits) {
            float *g = dlogits + (size_t)b * K;
            for (int k = 0; k < K; k++)
                g[k] = (float)(exp((double)z[k] - lse) / B) - (k == labels[b] ? 1.0f / B : 0.0f);
        }
    }
    if (n_correct) *n_correct = correct;
    return (float)(loss / B);
}

void nz_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int nz_get_threads(void) { return omp_get_max_threads(); }
