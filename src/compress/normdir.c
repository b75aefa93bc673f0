/* Structured slimming by norm x direction factoring (the 2019 thesis, mission.md section 3).
 *
 * Every fc neuron's weight row and every conv kernel is g x V/||V||. An L1 penalty on g, applied
 * as a proximal soft threshold after each SGD step (g <- sign(g) max(|g| - lr*lambda, 0)), drives
 * whole groups to exactly zero; since |g| is the group's L2 norm this is a group lasso. Groups at
 * zero are removed: a neuron (row) leaves its layer and its column leaves the next layer; a conv
 * channel whose kernels are all zero leaves the layer and the next layer's input channels. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/mask.h"
#include "compress/normdir.h"
#include "core/clock.h"
#include "core/layers.h"
#include "nnzip/compress.h"
#include "nnzip/format.h"

void nz_slim_cfg_default(nz_slim_cfg *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < NZ_MAX_PASS_NODES; i++) cfg->lambda[i] = -1.0f;
    /* chosen on 784-500-300-10 / MNIST (docs/results.md): with the input features' penalty
     * (3e-3) and a 40-epoch fine-tune at 2e-3, five seeds leave ~510-104-29-10 (-89.1% to
     * -89.8%) at +0.02 to +0.13 points of error, +0.06 on average */
    cfg->global_lambda = 2e-2f;
    cfg->method = NZ_SLIM_PROXIMAL;
    cfg->ramp_epochs = 5;
    cfg->epochs = 30;
    cfg->finetune_epochs = 40; /* 20 at 1e-3 averaged +0.11 over four seeds */
    nz_train_cfg_default(&cfg->train);
    cfg->train.lr = 0.05f;
    cfg->train.weight_decay = 0.0f; /* the L1 penalty replaces weight decay on the norms */
    nz_train_cfg_default(&cfg->finetune);
    cfg->finetune.lr = 2e-3f; /* 0.01 undid part of the converged model in 10 epochs */
    cfg->subgrad_eps = 1e-3f;
    cfg->cost_weighted = NZ_SLIM_COST_STATIC;
    cfg->distill_temp = 4.0f;
    cfg->input_lambda = 3e-3f;
}

/* The next weighted node fed by node i through element-wise, pooling or flatten nodes. */
static int next_weighted(const nz_model *m, int i) {
    int cur = i;
    for (int j = i + 1; j < m->n_nodes; j++) {
        const nz_node *n = &m->nodes[j];
        if (n->inputs[0] != cur) continue;
        switch (n->op) {
        case NZ_OP_RELU:
        case NZ_OP_MAXPOOL:
        case NZ_OP_DROPOUT:
        case NZ_OP_FLATTEN: cur = j; continue;
        case NZ_OP_DENSE:
        case NZ_OP_CONV2D:
        case NZ_OP_NDENSE:
        case NZ_OP_NCONV2D: return j;
        default: return -1;
        }
    }
    return -1;
}

/* Parameters one group of node i controls: its own weights and bias, plus (for a neuron or a
 * channel) the next layer's weights that read it. A conv kernel controls only itself. */
static double group_cost(const nz_model *m, int i) {
    const nz_node *n = &m->nodes[i];
    const size_t G = n->params[1].n, S = n->params[0].n / G;
    if (n->op == NZ_OP_NCONV2D) return (double)S;
    double c = (double)S + 1.0;
    int j = next_weighted(m, i);
    if (j >= 0) c += (double)nz_param_numel(&m->nodes[j].params[0]) / (double)n->units;
    return c;
}

/* The weighted node that feeds node i through element-wise, pooling or flatten nodes; -1 for
 * the data (or anything else, e.g. an add, which mixes two sources). */
static int prev_weighted(const nz_model *m, int i) {
    int j = m->nodes[i].inputs[0];
    while (j > 0) {
        const nz_node *n = &m->nodes[j];
        switch (n->op) {
        case NZ_OP_RELU:
        case NZ_OP_MAXPOOL:
        case NZ_OP_DROPOUT:
        case NZ_OP_FLATTEN:
        case NZ_OP_AVGPOOL:
        case NZ_OP_BATCHNORM: j = n->inputs[0]; break;
        case NZ_OP_NDENSE:
        case NZ_OP_NCONV2D: return j;
        default: return -1;
        }
    }
    return -1;
}

/* Fraction of node i's outputs still alive (a neuron with a nonzero norm; a conv channel with
 * any nonzero kernel); 1 for nodes that are not norm x direction. */
static double alive_frac(const nz_model *m, int i) {
    if (i < 0) return 1.0;
    const nz_node *n = &m->nodes[i];
    if (n->op != NZ_OP_NDENSE && n->op != NZ_OP_NCONV2D) return 1.0;
    const float *g = m->params + n->params[1].off;
    const size_t per = n->params[1].n / (size_t)n->units; /* groups per output unit */
    size_t alive = 0;
    for (int u = 0; u < n->units; u++) {
        size_t k = 0;
        while (k < per && g[(size_t)u * per + k] == 0.0f) k++;
        alive += k < per;
    }
    return (double)alive / (double)n->units;
}

/* group_cost counting only what is still alive: the inputs from live units of the layer
 * before and the outgoing weights to live units of the layer after. As neighbours die, a
 * group's removal saves less, and its penalty falls with it. */
static double group_cost_live(const nz_model *m, int i) {
    const nz_node *n = &m->nodes[i];
    const size_t G = n->params[1].n, S = n->params[0].n / G;
    if (n->op == NZ_OP_NCONV2D) return (double)S;
    double c = (double)S * alive_frac(m, prev_weighted(m, i)) + 1.0;
    int j = next_weighted(m, i);
    if (j >= 0)
        c += (double)nz_param_numel(&m->nodes[j].params[0]) / (double)n->units *
             alive_frac(m, j);
    return c;
}

/* ---------------------------------------------------------------- conversion */

/* Installs new_nodes (same count, changed param lists) with a fresh params buffer laid out
 * contiguously in node order. The old buffer and node list are handed back for the caller to
 * copy values from and free; on failure m is unchanged. */
static nz_status relayout(nz_model *m, const nz_node *new_nodes, float **old_params,
                          nz_node **old_nodes, nz_error *err) {
    const size_t nsz = sizeof(nz_node) * (size_t)m->n_nodes;
    size_t total = 0;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < new_nodes[i].n_params; k++)
            total += nz_param_numel(&new_nodes[i].params[k]);
    float *p = calloc(total ? total : 1, sizeof(float));
    nz_node *on = malloc(nsz);
    if (!p || !on) {
        free(p);
        free(on);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    memcpy(on, m->nodes, nsz);
    *old_nodes = on;
    *old_params = m->params;
    m->params = p;
    m->n_params = total;
    size_t off = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        m->nodes[i] = new_nodes[i];
        for (int k = 0; k < m->nodes[i].n_params; k++) {
            m->nodes[i].params[k].off = off;
            m->nodes[i].params[k].n = nz_param_numel(&m->nodes[i].params[k]);
            off += m->nodes[i].params[k].n;
        }
    }
    return NZ_OK;
}

/* Copies every parameter of a node whose layout did not change. */
static void copy_node_params(nz_model *m, const float *old, const nz_node *o, const nz_node *n) {
    for (int k = 0; k < n->n_params; k++)
        memcpy(m->params + n->params[k].off, old + o->params[k].off,
               sizeof(float) * n->params[k].n);
}

static int is_normdir(const nz_node *n) { return n->op == NZ_OP_NDENSE || n->op == NZ_OP_NCONV2D; }

nz_status nz_normdir_convert(nz_model *m, nz_error *err) {
    nz_status st = nz_model_densify(m, err);
    if (st) return st;
    nz_node *nn = malloc(sizeof(nz_node) * (size_t)m->n_nodes), *old_nodes;
    float *old;
    if (!nn) return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    memcpy(nn, m->nodes, sizeof(nz_node) * (size_t)m->n_nodes);
    for (int i = 0; i < m->n_nodes; i++) {
        nz_node *n = &nn[i];
        if (n->op != NZ_OP_DENSE && n->op != NZ_OP_CONV2D) continue;
        nz_param V = n->params[0], b = n->params[1], g;
        memset(&g, 0, sizeof g);
        if (n->op == NZ_OP_DENSE) {
            g.ndim = 1;
            g.dims[0] = n->units;
            n->op = NZ_OP_NDENSE;
        } else {
            g.ndim = 2;
            g.dims[0] = V.dims[0];
            g.dims[1] = V.dims[1];
            n->op = NZ_OP_NCONV2D;
        }
        n->n_params = 3;
        n->params[0] = V;
        n->params[1] = g;
        n->params[2] = b;
    }
    st = relayout(m, nn, &old, &old_nodes, err);
    free(nn);
    if (st) return st;
    for (int i = 0; i < m->n_nodes; i++) {
        const nz_node *o = &old_nodes[i];
        nz_node *n = &m->nodes[i];
        if (!is_normdir(n)) {
            copy_node_params(m, old, o, n);
            continue;
        }
        const float *W = old + o->params[0].off;
        float *V = m->params + n->params[0].off, *g = m->params + n->params[1].off;
        const size_t G = n->params[1].n, S = n->params[0].n / G;
        for (size_t j = 0; j < G; j++) {
            double ss = 0;
            for (size_t q = 0; q < S; q++) ss += (double)W[j * S + q] * W[j * S + q];
            double norm = sqrt(ss);
            g[j] = (float)norm;
            for (size_t q = 0; q < S; q++)
                V[j * S + q] = norm > 0 ? (float)(W[j * S + q] / norm) : 0.0f;
        }
        memcpy(m->params + n->params[2].off, old + o->params[1].off,
               sizeof(float) * n->params[2].n);
    }
    free(old);
    free(old_nodes);
    return NZ_OK;
}

nz_status nz_normdir_restore(nz_model *m, nz_error *err) {
    nz_node *nn = malloc(sizeof(nz_node) * (size_t)m->n_nodes), *old_nodes;
    float *old;
    if (!nn) return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    memcpy(nn, m->nodes, sizeof(nz_node) * (size_t)m->n_nodes);
    for (int i = 0; i < m->n_nodes; i++) {
        nz_node *n = &nn[i];
        if (!is_normdir(n)) continue;
        n->op = n->op == NZ_OP_NDENSE ? NZ_OP_DENSE : NZ_OP_CONV2D;
        n->n_params = 2;
        n->params[1] = n->params[2];
        memset(&n->params[2], 0, sizeof n->params[2]);
    }
    nz_status st = relayout(m, nn, &old, &old_nodes, err);
    free(nn);
    if (st) return st;
    for (int i = 0; i < m->n_nodes; i++) {
        const nz_node *o = &old_nodes[i];
        const nz_node *n = &m->nodes[i];
        if (!is_normdir(o)) {
            copy_node_params(m, old, o, n);
            continue;
        }
        /* W = g V / ||V||, the forward's own computation (zero norms give zero groups) */
        const size_t G = o->params[1].n;
        normdir_weights(m->params + n->params[0].off, old + o->params[0].off,
                        old + o->params[1].off, (int)G, (int)(o->params[0].n / G));
        memcpy(m->params + n->params[1].off, old + o->params[2].off,
               sizeof(float) * n->params[1].n);
    }
    free(old);
    free(old_nodes);
    return NZ_OK;
}

/* ---------------------------------------------------------------- penalized training */

typedef struct {
    const nz_slim_cfg *cfg;
    float lambda[NZ_MAX_PASS_NODES];
    float base[NZ_MAX_PASS_NODES]; /* live cost weighting: lambda / the mean cost at the start */
    float lr;
    long step, ramp_steps;
    const nz_train_hooks *outer;
    /* column groups: per dense node, the penalty on each input feature's outgoing weights
     * (0: none); col_base: the same / its cost, for live cost weighting */
    float col_lambda[NZ_MAX_PASS_NODES], col_base[NZ_MAX_PASS_NODES];
} slim_state;

/* Is dense node d's input a set of features whose columns make groups: the data, or conv
 * features (through pooling, relu, batch norm, flatten, ...), not another dense layer's
 * neurons (those already have their own groups, the rows that produce them)? */
static int column_layer(const nz_model *m, int d) {
    const nz_node *n = &m->nodes[d];
    if (n->op != NZ_OP_DENSE && n->op != NZ_OP_NDENSE) return 0;
    for (int j = n->inputs[0]; j > 0; j = m->nodes[j].inputs[0]) {
        const nz_op op = m->nodes[j].op;
        if (op == NZ_OP_DENSE || op == NZ_OP_NDENSE) return 0;
        if (op == NZ_OP_SELECT) return 0; /* its columns were chosen already */
        if (op == NZ_OP_CONV2D || op == NZ_OP_NCONV2D || op == NZ_OP_ADD) return 1;
    }
    return 1;
}

/* Does node i read the data, through flatten, dropout, ... but no weighted node? */
static int reads_data(const nz_model *m, int i) {
    int j = m->nodes[i].inputs[0];
    while (j > 0 && m->nodes[j].n_inputs == 1 && !nz_node_is_weighted(&m->nodes[j]) &&
           !is_normdir(&m->nodes[j]) && m->nodes[j].op != NZ_OP_SELECT)
        j = m->nodes[j].inputs[0];
    return j == 0;
}


/* The input features' group lasso (see normdir.h). Three passes over V, vectorized over
 * columns and threaded over rows or column ranges; every sum has an order fixed by the shape,
 * so the result does not depend on the thread count. */
int nz_slim_column_prox(nz_model *m, int i, float t) {
    const nz_node *n = &m->nodes[i];
    float *V = m->params + n->params[0].off, *g = m->params + n->params[1].off;
    const int R = n->units, F = (int)(n->params[0].n / (size_t)R);
    float *col = malloc(sizeof(float) * (size_t)F), *rs = malloc(sizeof(float) * (size_t)R);
    if (!col || !rs) {
        free(col);
        free(rs);
        return -1;
    }
#pragma omp parallel if ((long)R * F > 65536)
    {
        /* rs[r] = (g / ||v||)^2: the scale of row r's squared entries in W */
#pragma omp for schedule(static)
        for (int r = 0; r < R; r++) {
            const float *v = V + (size_t)r * F;
            float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
            for (int j = 0; j < F; j++) ss += v[j] * v[j];
            rs[r] = ss > 0.0f ? g[r] * g[r] / ss : 0.0f;
        }
        /* column norms, then each column's factor max(0, 1 - t / ||column||) */
#pragma omp for schedule(static)
        for (int j0 = 0; j0 < F; j0 += 64) {
            const int j1 = j0 + 64 < F ? j0 + 64 : F;
            for (int j = j0; j < j1; j++) col[j] = 0.0f;
            for (int r = 0; r < R; r++) {
                const float *v = V + (size_t)r * F;
                const float a = rs[r];
#pragma omp simd
                for (int j = j0; j < j1; j++) col[j] += a * v[j] * v[j];
            }
            for (int j = j0; j < j1; j++) {
                const float c = sqrtf(col[j]);
                col[j] = c > t ? 1.0f - t / c : 0.0f;
            }
        }
        /* W row r = (g / ||v||) (v * col): its norm goes to g, v back to unit length */
#pragma omp for schedule(static)
        for (int r = 0; r < R; r++) {
            float *v = V + (size_t)r * F;
            float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
            for (int j = 0; j < F; j++) {
                const float x = v[j] * col[j];
                /* a dying column passes through subnormal values, which make every GEMM on
                 * this layer ~40x slower (measured): they go to zero */
                v[j] = fabsf(x) < FLT_MIN ? 0.0f : x;
                ss += v[j] * v[j];
            }
            if (ss > 0.0f) {
                g[r] = copysignf(sqrtf(rs[r] * ss), g[r]);
                const float inv = 1.0f / sqrtf(ss);
#pragma omp simd
                for (int j = 0; j < F; j++) v[j] *= inv;
            } else {
                g[r] = 0.0f;
            }
        }
    }
    free(col);
    free(rs);
    return 0;
}

/* After each SGD step: the proximal (or subgradient) L1 step on the norms, then directions back
 * to unit norm so that g alone carries each group's magnitude. */
static int prox_step(nz_model *m, void *user) {
    slim_state *s = user;
    s->step++;
    double ramp = s->ramp_steps > 0 ? (double)s->step / (double)s->ramp_steps : 1.0;
    if (ramp > 1) ramp = 1;
    if (s->cfg->cost_weighted == NZ_SLIM_COST_LIVE)
        for (int i = 0; i < m->n_nodes; i++)
            if (s->base[i] > 0) s->lambda[i] = s->base[i] * (float)group_cost_live(m, i);
    for (int i = 0; i < m->n_nodes; i++) {
        if (!(s->col_lambda[i] > 0)) continue;
        if (s->cfg->cost_weighted == NZ_SLIM_COST_LIVE)
            /* a feature controls one weight per live unit of the layer */
            s->col_lambda[i] =
                s->col_base[i] * (float)(alive_frac(m, i) * (double)m->nodes[i].units);
        /* out of memory: the step is skipped (the next one catches up) */
        (void)nz_slim_column_prox(m, i, (float)(s->lr * s->col_lambda[i] * ramp));
    }
    for (int i = 0; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        if (!is_normdir(n)) continue;
        float *V = m->params + n->params[0].off, *g = m->params + n->params[1].off;
        const size_t G = n->params[1].n, S = n->params[0].n / G;
        const float t = (float)(s->lr * s->lambda[i] * ramp);
        for (size_t j = 0; j < G; j++) {
            if (t > 0) {
                if (s->cfg->method == NZ_SLIM_PROXIMAL) {
                    float a = fabsf(g[j]) - t;
                    g[j] = a > 0 ? copysignf(a, g[j]) : 0.0f;
                } else if (g[j] != 0.0f) {
                    g[j] -= copysignf(t, g[j]);
                }
            }
            float *v = V + j * S;
            double ss = 0;
            for (size_t q = 0; q < S; q++) ss += (double)v[q] * v[q];
            if (ss > 0) {
                float inv = (float)(1.0 / sqrt(ss));
                for (size_t q = 0; q < S; q++) v[q] *= inv;
            }
        }
    }
    if (s->outer && s->outer->after_step) return s->outer->after_step(m, s->outer->hook_user);
    return 0;
}

/* ---------------------------------------------------------------- removal */

static int is_weighted_plain(const nz_node *n) {
    return n->op == NZ_OP_DENSE || n->op == NZ_OP_CONV2D;
}

/* Ops a removed channel passes through as a per-channel constant. */
static int is_channel_wise(nz_op op) {
    return op == NZ_OP_RELU || op == NZ_OP_MAXPOOL || op == NZ_OP_AVGPOOL || op == NZ_OP_GAP ||
           op == NZ_OP_DROPOUT || op == NZ_OP_FLATTEN || op == NZ_OP_BATCHNORM;
}

/* Can node i's output channels shrink? Only if every consumer, through channel-wise ops, is a
 * weighted layer that can drop the matching inputs. A residual add or shortcut fixes the
 * channel count of everything that reaches it (the skip path carries all channels), so in a
 * ResNet only the inner conv of each block shrinks. */
static int shrinkable(const nz_model *m, int i) {
    for (int j = i + 1; j < m->n_nodes; j++) {
        const nz_node *n = &m->nodes[j];
        int uses = 0;
        for (int k = 0; k < n->n_inputs; k++) uses |= n->inputs[k] == i;
        if (!uses) continue;
        if (is_weighted_plain(n)) continue;
        if (!is_channel_wise(n->op) || !shrinkable(m, j)) return 0;
    }
    return 1;
}

/* Appends to out a node like n (same op and attributes) reading in0 (and in1), with `units`
 * units for a dense/conv node. Parameters are left to the caller, except a select node's
 * feature numbers (taken from n in m). */
static int add_like(nz_model *out, const nz_model *m, const nz_node *n, int in0, int in1,
                    int units, nz_error *err) {
    int id = -1;
    switch (n->op) {
    case NZ_OP_DENSE: id = nz_model_add_dense(out, n->name, in0, units, err); break;
    case NZ_OP_CONV2D:
        id = nz_model_add_conv2d(out, n->name, in0, units, n->kh, n->stride, n->pad, err);
        break;
    case NZ_OP_RELU: id = nz_model_add_relu(out, n->name, in0, err); break;
    case NZ_OP_MAXPOOL: id = nz_model_add_maxpool(out, n->name, in0, n->kh, n->stride, err); break;
    case NZ_OP_DROPOUT: id = nz_model_add_dropout(out, n->name, in0, n->p, err); break;
    case NZ_OP_FLATTEN: id = nz_model_add_flatten(out, n->name, in0, err); break;
    case NZ_OP_AVGPOOL: id = nz_model_add_avgpool(out, n->name, in0, n->kh, n->stride, err); break;
    case NZ_OP_GAP: id = nz_model_add_gap(out, n->name, in0, err); break;
    case NZ_OP_BATCHNORM: id = nz_model_add_batchnorm(out, n->name, in0, err); break;
    case NZ_OP_ADD: id = nz_model_add_add(out, n->name, in0, in1, err); break;
    case NZ_OP_SHORTCUT:
        id = nz_model_add_shortcut(out, n->name, in0, n->units, n->stride, err);
        break;
    case NZ_OP_SELECT: {
        int *ix = malloc(sizeof(int) * (size_t)n->units);
        if (!ix) return nz_fail(err, NZ_ERR_NOMEM, "out of memory"), -1;
        for (int k = 0; k < n->units; k++) ix[k] = (int)m->params[n->params[0].off + k];
        id = nz_model_add_select(out, n->name, in0, ix, n->units, err);
        free(ix);
        break;
    }
    default: nz_fail(err, NZ_ERR_UNSUPPORTED, "slim: cannot rebuild a %s node ('%s')",
                     nz_op_name(n->op), n->name);
    }
    if (id >= 0) out->nodes[id].p = n->p;
    return id;
}

/* Dense node d without its input features whose columns are all zero (as the input features'
 * penalty leaves them): a select node inserted in front of d keeps the others, and d keeps only
 * their columns. Exact. Node ids from d on shift by one. */
static nz_status drop_columns(nz_model *m, int d, nz_error *err) {
    const nz_node *dn = &m->nodes[d];
    const int R = dn->units, F = (int)(dn->params[0].n / (size_t)R);
    const float *W = m->params + dn->params[0].off;
    int *ix = malloc(sizeof(int) * (size_t)F);
    int *map = malloc(sizeof(int) * (size_t)m->n_nodes);
    if (!ix || !map) {
        free(ix);
        free(map);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    int k = 0;
    for (int j = 0; j < F; j++) {
        int any = 0;
        for (int r = 0; r < R && !any; r++) any = W[(size_t)r * F + j] != 0.0f;
        if (any) ix[k++] = j;
    }
    if (k == 0) ix[k++] = 0; /* the layer keeps one (zero) column to read */
    nz_status st = NZ_OK;
    nz_model out;
    memset(&out, 0, sizeof out);
    if (k == F) goto done;
    if ((st = nz_model_init(&out, m->arch, m->in, m->n_classes, err))) goto done;
    map[0] = 0;
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        int in0 = map[n->inputs[0]];
        if (i == d) {
            char name[NZ_NAME_MAX];
            snprintf(name, sizeof name, "%.*s_in", NZ_NAME_MAX - 4, n->name);
            if ((in0 = nz_model_add_select(&out, name, in0, ix, k, err)) < 0) break;
        }
        const int in1 = n->n_inputs > 1 ? map[n->inputs[1]] : -1;
        const int id = add_like(&out, m, n, in0, in1, n->units, err);
        if (id < 0) break;
        map[i] = id;
        const nz_node *o = &out.nodes[id];
        for (int q = 0; q < n->n_params && n->op != NZ_OP_SELECT; q++) {
            float *dst = out.params + o->params[q].off;
            const float *src = m->params + n->params[q].off;
            out.nodes[id].params[q].store = n->params[q].store;
            if (i != d || q != 0) {
                memcpy(dst, src, sizeof(float) * n->params[q].n);
                continue;
            }
            for (int r = 0; r < R; r++)
                for (int j = 0; j < k; j++) dst[(size_t)r * k + j] = src[(size_t)r * F + ix[j]];
        }
    }
    if (out.n_nodes != m->n_nodes + 1) {
        st = err && err->code ? err->code : NZ_ERR_SHAPE;
        nz_model_free(&out);
        goto done;
    }
    out.pre = m->pre;
    nz_model_free(m);
    *m = out;
done:
    free(ix);
    free(map);
    return st;
}

/* Every dense layer but the last whose input features make column groups (column_layer)
 * drops the features it no longer reads. */
static nz_status drop_zero_columns(nz_model *m, nz_error *err) {
    int last = -1;
    for (int i = 0; i < m->n_nodes; i++)
        if (is_weighted_plain(&m->nodes[i])) last = i;
    for (int d = 1; d < last; d++) {
        if (m->nodes[d].op != NZ_OP_DENSE || !column_layer(m, d)) continue;
        const int n0 = m->n_nodes;
        nz_status st = drop_columns(m, d, err);
        if (st) return st;
        if (m->n_nodes != n0) { /* a select went in front of d */
            d++;
            last++;
        }
    }
    return NZ_OK;
}

nz_status nz_slim_remove(nz_model *m, nz_error *err) {
    const int N = m->n_nodes;
    int last = -1;
    for (int i = 0; i < N; i++) {
        const nz_node *n = &m->nodes[i];
        if (n->op == NZ_OP_NDENSE || n->op == NZ_OP_NCONV2D || (n->n_params && n->params[0].sparse))
            return nz_fail(err, NZ_ERR_ARG, "slim: node '%s' must be plain dense/conv2d first", n->name);
        if (is_weighted_plain(n)) last = i;
    }
    /* keep[i][c]: is channel c of node i's output kept; cval[i][c]: the constant a removed
     * channel outputs (a removed unit emits its bias, through relu/pool/flatten) */
    const size_t nn = N > 0 ? (size_t)N : 1;
    unsigned char **keep = calloc(nn, sizeof *keep);
    float **cval = calloc(nn, sizeof *cval);
    nz_status st = NZ_OK;
    if (!keep || !cval) {
        free(keep);
        free(cval);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < N && !st; i++) {
        const nz_node *n = &m->nodes[i];
        const int C = n->out.c > 0 ? n->out.c : 1;
        keep[i] = malloc((size_t)C);
        cval[i] = calloc((size_t)C, sizeof(float));
        if (!keep[i] || !cval[i]) {
            st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
            break;
        }
        memset(keep[i], 1, (size_t)C);
        if (i == 0) continue;
        const int src = n->inputs[0];
        const nz_shape s = m->nodes[src].out;
        switch (n->op) {
        case NZ_OP_DENSE:
        case NZ_OP_CONV2D: {
            if (i == last || !shrinkable(m, i)) break;
            const float *W = m->params + n->params[0].off, *b = m->params + n->params[1].off;
            const size_t S = n->params[0].n / (size_t)C;
            for (int o = 0; o < C; o++) {
                int any = 0;
                for (size_t q = 0; q < S && !any; q++) any = W[(size_t)o * S + q] != 0.0f;
                if (!any) {
                    keep[i][o] = 0;
                    cval[i][o] = b[o];
                }
            }
            /* a layer never vanishes: keep one (zero-weight) unit to carry its bias */
            if (!memchr(keep[i], 1, (size_t)C)) {
                keep[i][0] = 1;
                cval[i][0] = 0.0f;
            }
            break;
        }
        case NZ_OP_RELU:
            for (int c = 0; c < C; c++) {
                keep[i][c] = keep[src][c];
                cval[i][c] = cval[src][c] > 0 ? cval[src][c] : 0.0f;
            }
            break;
        case NZ_OP_MAXPOOL:
        case NZ_OP_AVGPOOL:
        case NZ_OP_GAP:
        case NZ_OP_DROPOUT:
            memcpy(keep[i], keep[src], (size_t)C);
            memcpy(cval[i], cval[src], sizeof(float) * (size_t)C);
            break;
        case NZ_OP_BATCHNORM: { /* a constant channel leaves eval-mode BN as a constant */
            const float *P = m->params;
            for (int c = 0; c < C; c++) {
                keep[i][c] = keep[src][c];
                float a = P[n->params[0].off + c] / sqrtf(P[n->params[3].off + c] + NZ_BN_EPS);
                cval[i][c] = (cval[src][c] - P[n->params[2].off + c]) * a + P[n->params[1].off + c];
            }
            break;
        }
        case NZ_OP_ADD: /* never shrinks (see shrinkable): both inputs keep every channel */
        case NZ_OP_SHORTCUT:
        case NZ_OP_SELECT: /* its features are removed by drop_zero_columns */
            break;
        case NZ_OP_FLATTEN: {
            const int hw = s.h * s.w;
            for (int c = 0; c < C; c++) {
                keep[i][c] = keep[src][c / hw];
                cval[i][c] = cval[src][c / hw];
            }
            break;
        }
        default:
            st = nz_fail(err, NZ_ERR_UNSUPPORTED, "slim: cannot remove through a %s node ('%s')",
                         nz_op_name(n->op), n->name);
        }
    }
    /* build the smaller model: same nodes, fewer units; weights gathered, constants folded */
    nz_model out;
    memset(&out, 0, sizeof out);
    if (!st) st = nz_model_init(&out, m->arch, m->in, m->n_classes, err);
    for (int i = 1; i < N && !st; i++) {
        const nz_node *n = &m->nodes[i];
        int units = 0;
        for (int c = 0; c < n->out.c; c++) units += keep[i][c];
        const int id = add_like(&out, m, n, n->inputs[0], n->inputs[1], units, err);
        if (id < 0) {
            st = err ? err->code : NZ_ERR_SHAPE;
            break;
        }
        if (n->op == NZ_OP_BATCHNORM) { /* gather the kept channels' four vectors */
            out.nodes[id].p = n->p;
            const nz_node *o = &out.nodes[id];
            for (int k = 0; k < 4; k++) {
                int c2 = 0;
                for (int c = 0; c < n->out.c; c++)
                    if (keep[i][c])
                        out.params[o->params[k].off + c2++] = m->params[n->params[k].off + c];
            }
            continue;
        }
        if (!is_weighted_plain(n)) continue;
        const nz_node *o = &out.nodes[id];
        const int src = n->inputs[0];
        const nz_shape s = m->nodes[src].out;
        const int C_in = s.c, KK = n->op == NZ_OP_CONV2D ? n->kh * n->kw : 1;
        /* keep/cval of the input are per channel; a dense layer reading a [C, H, W] input
         * directly (no flatten) sees H*W features per channel */
        const int hw = n->op == NZ_OP_DENSE ? s.h * s.w : 1;
        const int in_feat = n->op == NZ_OP_DENSE ? (int)nz_shape_size(s) : C_in;
        const float *W = m->params + n->params[0].off, *b = m->params + n->params[1].off;
        float *W2 = out.params + o->params[0].off, *b2 = out.params + o->params[1].off;
        const int in_kept = o->op == NZ_OP_DENSE ? (int)(o->params[0].n / (size_t)o->units)
                                                 : o->params[0].dims[1];
        (void)in_kept;
        int r2 = 0;
        for (int r = 0; r < n->out.c; r++) {
            if (!keep[i][r]) continue;
            const float *wr = W + (size_t)r * in_feat * KK;
            double bias = b[r];
            int c2 = 0;
            for (int c = 0; c < in_feat; c++) {
                const float *wk = wr + (size_t)c * KK;
                if (keep[src][c / hw]) {
                    memcpy(W2 + ((size_t)r2 * in_kept + c2) * KK, wk, sizeof(float) * KK);
                    c2++;
                } else {
                    /* a removed input is a constant: its contribution joins the bias */
                    for (int q = 0; q < KK; q++) bias += (double)wk[q] * cval[src][c / hw];
                }
            }
            b2[r2] = (float)bias;
            r2++;
        }
    }
    for (int i = 0; i < N; i++) {
        if (keep) free(keep[i]);
        if (cval) free(cval[i]);
    }
    free(keep);
    free(cval);
    if (st) {
        nz_model_free(&out);
        return st;
    }
    out.pre = m->pre;
    nz_model_free(m);
    *m = out;
    return drop_zero_columns(m, err);
}

/* ---------------------------------------------------------------- the pass */

static void count_units(const nz_model *m, int *units, size_t *kernels) {
    for (int i = 0; i < m->n_nodes && i < NZ_MAX_PASS_NODES; i++) {
        const nz_node *n = &m->nodes[i];
        units[i] = n->units;
        size_t total;
        nz_conv_kernels(m, i, &kernels[i], &total); /* the kernels a .nnz file stores */
    }
}

/* Inputs one unit of node i reads: features for a dense layer, channels for a conv. */
static int fanin_of(const nz_model *m, int i) {
    const nz_node *n = &m->nodes[i];
    if (n->op == NZ_OP_DENSE || n->op == NZ_OP_NDENSE)
        return (int)(nz_param_numel(&n->params[0]) / (size_t)n->units);
    if (n->op == NZ_OP_CONV2D || n->op == NZ_OP_NCONV2D) return n->params[0].dims[1];
    return 0;
}

static size_t total_params(const nz_model *m) {
    size_t t = 0;
    for (int i = 0; i < m->n_nodes; i++) t += nz_node_param_count(&m->nodes[i]);
    return t;
}

/* Fine-tuning with a validation set: after every epoch, the parameters are kept if they are the
 * best so far on it (a slimmed net fine-tuned without the penalty can overfit: measured on
 * LeNet-5, 0.75% test error right after removal, 0.89% after 20 epochs). */
typedef struct {
    const nz_dataset *val;
    float *best;      /* [n_params] */
    float best_err;
    int best_epoch;
    const nz_train_hooks *outer;
} keep_best;

static nz_status keep_best_epoch(const nz_model *m, const nz_train_state *st, void *user,
                                 nz_error *err) {
    keep_best *k = user;
    nz_status s;
    if (k->outer && k->outer->checkpoint &&
        (s = k->outer->checkpoint(m, st, k->outer->checkpoint_user, err)))
        return s;
    if (st->step != 0) return NZ_OK; /* a stop mid-epoch, not an epoch's end */
    nz_eval_result ev;
    if ((s = nz_evaluate(m, k->val, 256, &ev, err))) return s;
    if (ev.error < k->best_err) {
        k->best_err = ev.error;
        k->best_epoch = (int)st->epoch;
        memcpy(k->best, m->params, sizeof(float) * m->n_params);
    }
    return NZ_OK;
}

static nz_status slim_run(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                          const nz_slim_cfg *cfg, const nz_train_hooks *hooks,
                          nz_slim_result *res, const nz_distill *dist,
                          const int *units0, const size_t *kern0,
                          char (*names0)[NZ_NAME_MAX], const nz_op *ops0, int n0,
                          nz_error *err);

nz_status nz_slim(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                  const nz_slim_cfg *cfg, const nz_train_hooks *hooks, nz_slim_result *res,
                  nz_error *err) {
    memset(res, 0, sizeof *res);
    res->val_err = -1.0f;
    double t0 = nz_now_s();
    if (m->n_nodes > NZ_MAX_PASS_NODES)
        return nz_fail(err, NZ_ERR_ARG, "model has %d nodes; slimming handles %d", m->n_nodes,
                       NZ_MAX_PASS_NODES);
    nz_status st = nz_model_densify(m, err);
    if (st) return st;
    nz_eval_result ev;
    if (test && (st = nz_evaluate(m, test, 256, &ev, err))) return st;
    res->test_err_before = test ? ev.error : -1.0f;
    res->params_before = total_params(m);
    res->macs_before = nz_model_flops(m);
    int units0[NZ_MAX_PASS_NODES];
    size_t kern0[NZ_MAX_PASS_NODES];
    count_units(m, units0, kern0);
    char names0[NZ_MAX_PASS_NODES][NZ_NAME_MAX];
    nz_op ops0[NZ_MAX_PASS_NODES];
    int n0 = m->n_nodes;
    for (int i = 0; i < n0; i++) {
        memcpy(names0[i], m->nodes[i].name, NZ_NAME_MAX);
        ops0[i] = m->nodes[i].op;
    }

    /* the teacher is the model as given: a copy before any change */
    nz_model teacher;
    memset(&teacher, 0, sizeof teacher);
    nz_distill dist = {&teacher, cfg->distill_alpha, cfg->distill_temp};
    if (cfg->distill_alpha > 0 && (st = nz_model_copy(&teacher, m, err))) return st;
    st = slim_run(m, train, test, cfg, hooks, res, cfg->distill_alpha > 0 ? &dist : NULL, units0,
                  kern0, names0, ops0, n0, err);
    nz_model_free(&teacher);
    if (!st) res->seconds = nz_now_s() - t0;
    return st;
}

/* nz_slim after its bookkeeping: convert, penalized training, removal, fine-tune, report. */
static nz_status slim_run(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                          const nz_slim_cfg *cfg, const nz_train_hooks *hooks,
                          nz_slim_result *res, const nz_distill *dist,
                          const int *units0, const size_t *kern0,
                          char (*names0)[NZ_NAME_MAX], const nz_op *ops0, int n0,
                          nz_error *err) {
    nz_status st;
    nz_eval_result ev;
    int fanin0[NZ_MAX_PASS_NODES];
    for (int i = 0; i < n0; i++) fanin0[i] = fanin_of(m, i);
    if ((st = nz_normdir_convert(m, err))) return st;
    slim_state s;
    memset(&s, 0, sizeof s);
    s.cfg = cfg;
    s.outer = hooks;
    int last = -1;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == NZ_OP_NDENSE || m->nodes[i].op == NZ_OP_NCONV2D) last = i;
    double cost_sum = 0, groups = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        s.lambda[i] = 0.0f;
        const nz_node *n = &m->nodes[i];
        if (n->op != NZ_OP_NDENSE && n->op != NZ_OP_NCONV2D) continue;
        s.lambda[i] = cfg->lambda[i] >= 0 ? cfg->lambda[i] : cfg->global_lambda;
        if (i == last && !cfg->penalize_last) s.lambda[i] = 0.0f;
        if (s.lambda[i] > 0) {
            cost_sum += group_cost(m, i) * (double)n->params[1].n;
            groups += (double)n->params[1].n;
        }
    }
    /* input features: the columns of a dense layer that reads the data. (Penalizing the columns
     * of LeNet-5's fc1, which reads conv features, too was measured: at the default strength
     * it removed 24-41 of 800 features and cost 0.2-0.3 points of error; docs/results.md.) */
    for (int i = 0; i < m->n_nodes; i++)
        s.col_lambda[i] = m->nodes[i].op == NZ_OP_NDENSE && i != last && reads_data(m, i)
                              ? (cfg->input_lambda >= 0 ? cfg->input_lambda : cfg->global_lambda)
                              : 0.0f;
    if (cfg->cost_weighted && groups > 0) {
        for (int i = 0; i < m->n_nodes; i++) {
            if (s.lambda[i] <= 0) continue;
            s.base[i] = s.lambda[i] / (float)(cost_sum / groups);
            s.lambda[i] *= (float)(group_cost(m, i) / (cost_sum / groups));
        }
        /* a column controls one weight per unit of its layer */
        for (int i = 0; i < m->n_nodes; i++) {
            if (!(s.col_lambda[i] > 0)) continue;
            s.col_base[i] = s.col_lambda[i] / (float)(cost_sum / groups);
            s.col_lambda[i] = s.col_base[i] * (float)m->nodes[i].units;
        }
    }
    const long steps_per_epoch = (train->n + cfg->train.batch - 1) / cfg->train.batch;
    s.ramp_steps = (long)cfg->ramp_epochs * steps_per_epoch;
    nz_train_hooks th;
    memset(&th, 0, sizeof th);
    if (hooks) th = *hooks;
    th.after_step = prox_step;
    th.hook_user = &s;
    th.lr_out = &s.lr;
    if (cfg->distill_penalized) th.distill = dist;
    nz_train_cfg tc = cfg->train;
    tc.epochs = cfg->epochs;
    tc.eval_every = 0;
    nz_train_result tr;
    if (cfg->epochs > 0 && (st = nz_train(m, train, test, &tc, &th, &tr, err))) return st;
    /* subgradient steps never land on zero: count small norms as zero */
    if (cfg->method == NZ_SLIM_SUBGRADIENT)
        for (int i = 0; i < m->n_nodes; i++) {
            const nz_node *n = &m->nodes[i];
            if (n->op != NZ_OP_NDENSE && n->op != NZ_OP_NCONV2D) continue;
            if (s.lambda[i] <= 0) continue;
            float *g = m->params + n->params[1].off;
            for (size_t j = 0; j < n->params[1].n; j++)
                if (fabsf(g[j]) < cfg->subgrad_eps) g[j] = 0.0f;
        }
    if ((st = nz_normdir_restore(m, err))) return st;
    if (test && (st = nz_evaluate(m, test, 256, &ev, err))) return st;
    res->test_err_penalized = test ? ev.error : -1.0f;
    if ((st = nz_slim_remove(m, err))) return st;
    if (cfg->rebalance) nz_rebalance(m);

    if (cfg->finetune_epochs > 0) {
        unsigned char *mask = malloc(m->n_params ? m->n_params : 1);
        if (!mask) return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < m->n_params; i++) mask[i] = 1;
        for (int i = 0; i < m->n_nodes; i++) {
            const nz_node *n = &m->nodes[i];
            if (n->op != NZ_OP_CONV2D) continue;
            const float *W = m->params + n->params[0].off;
            for (size_t j = 0; j < n->params[0].n; j++) mask[n->params[0].off + j] = W[j] != 0.0f;
        }
        /* fine-tuning keeps removed conv kernels (inside surviving channels) at zero */
        nz_mask_hold h = {mask, hooks};
        nz_train_hooks fh = nz_mask_hold_hooks(&h);
        fh.distill = dist;
        keep_best kb = {cfg->val, NULL, 0.0f, 0, hooks};
        if (cfg->val) {
            kb.best = malloc(sizeof(float) * (m->n_params ? m->n_params : 1));
            if (!kb.best) {
                free(mask);
                return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
            }
            memcpy(kb.best, m->params, sizeof(float) * m->n_params);
            if (!(st = nz_evaluate(m, cfg->val, 256, &ev, err))) kb.best_err = ev.error;
            fh.checkpoint = keep_best_epoch;
            fh.checkpoint_user = &kb;
        }
        nz_train_cfg fc = cfg->finetune;
        fc.epochs = cfg->finetune_epochs;
        fc.eval_every = 0;
        if (!st) st = nz_train(m, train, test, &fc, &fh, &tr, err);
        if (!st && cfg->val) {
            memcpy(m->params, kb.best, sizeof(float) * m->n_params);
            res->val_err = kb.best_err;
            res->finetune_kept = kb.best_epoch;
        }
        free(kb.best);
        free(mask);
        if (st) return st;
    } else if (cfg->val) {
        if ((st = nz_evaluate(m, cfg->val, 256, &ev, err))) return st;
        res->val_err = ev.error;
    }
    if (test && (st = nz_evaluate(m, test, 256, &ev, err))) return st;
    res->test_err_after = test ? ev.error : -1.0f;
    res->params_after = total_params(m);
    res->macs_after = nz_model_flops(m);
    int units1[NZ_MAX_PASS_NODES];
    size_t kern1[NZ_MAX_PASS_NODES];
    count_units(m, units1, kern1);
    /* removal may have inserted a select node: layers are matched by name */
    for (int i = 0; i < n0; i++) {
        if (ops0[i] != NZ_OP_DENSE && ops0[i] != NZ_OP_CONV2D) continue;
        int j = 0;
        while (j < m->n_nodes && j < NZ_MAX_PASS_NODES && strcmp(m->nodes[j].name, names0[i]))
            j++;
        if (j == m->n_nodes || j == NZ_MAX_PASS_NODES) continue;
        int r = res->n_layers++;
        res->node[r] = j;
        memcpy(res->name[r], names0[i], NZ_NAME_MAX);
        res->units_before[r] = units0[i];
        res->units_after[r] = units1[j];
        res->kernels_before[r] = kern0[i];
        res->kernels_after[r] = kern1[j];
        res->fanin_before[r] = fanin0[i];
        res->fanin_after[r] = fanin_of(m, j);
    }
    /* the data's features still read: a select fed by the data through flatten nodes */
    res->inputs_before = res->inputs_after = (int)nz_shape_size(m->in);
    for (int j = 1; j < m->n_nodes; j++) {
        if (m->nodes[j].op != NZ_OP_SELECT) continue;
        int u = m->nodes[j].inputs[0];
        while (u > 0 && m->nodes[u].op == NZ_OP_FLATTEN) u = m->nodes[u].inputs[0];
        if (u == 0) res->inputs_after = m->nodes[j].units;
    }
    return NZ_OK;
}
