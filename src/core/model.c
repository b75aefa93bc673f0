/* The model graph: building, shape inference and validation, initialisation, the zoo. */
#include "nnzip/model.h"
#include "nnzip/compress.h"
#include "core/model_infer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[NZ_OP__COUNT] = {
    "input",   "dense", "conv2d",  "maxpool", "relu", "flatten",  "dropout",
    "ndense",  "nconv2d", "batchnorm", "add",   "avgpool", "gap", "shortcut",
    "select"};

const char *nz_op_name(nz_op op) {
    return (op >= 0 && op < NZ_OP__COUNT) ? op_names[op] : "unknown";
}

/* Largest per-sample activation and parameter tensor we accept; guards file-driven shapes. */
#define NZ_MAX_ELEMS ((size_t)1 << 31)

/* Output shape and expected parameter dims of node n given its inputs' shapes. */
nz_status model_node_infer(const nz_model *m, const nz_node *n, nz_shape *out, int *np,
                           nz_param expect[NZ_MAX_PARAMS], nz_error *err) {
    nz_shape s = {0, 0, 0};
    *np = 0;
    memset(expect, 0, sizeof(nz_param) * NZ_MAX_PARAMS);
    if (n->op == NZ_OP_INPUT) {
        *out = m->in;
        return NZ_OK;
    }
    int need = n->op == NZ_OP_ADD ? 2 : 1;
    if (n->n_inputs != need)
        return nz_fail(err, NZ_ERR_FORMAT, "node '%s': %s takes %d input(s), has %d", n->name,
                       nz_op_name(n->op), need, n->n_inputs);
    s = m->nodes[n->inputs[0]].out;
    if (s.c <= 0 || s.h <= 0 || s.w <= 0)
        return nz_fail(err, NZ_ERR_SHAPE, "node '%s': input has no shape", n->name);
    switch (n->op) {
    case NZ_OP_NDENSE:
    case NZ_OP_DENSE: {
        size_t fan_in = nz_shape_size(s);
        if (n->units <= 0 || fan_in > (size_t)1 << 30 ||
            (size_t)n->units * fan_in > NZ_MAX_ELEMS)
            return nz_fail(err, NZ_ERR_SHAPE, "node '%s': bad dense size %d x %zu", n->name,
                           n->units, fan_in);
        *np = 2;
        expect[0].ndim = 2;
        expect[0].dims[0] = n->units;
        expect[0].dims[1] = (int)fan_in;
        expect[1].ndim = 1;
        expect[1].dims[0] = n->units;
        if (n->op == NZ_OP_NDENSE) { /* V, g, b */
            *np = 3;
            expect[2] = expect[1];
        }
        *out = (nz_shape){n->units, 1, 1};
        return NZ_OK;
    }
    case NZ_OP_NCONV2D:
    case NZ_OP_CONV2D: {
        if (n->units <= 0 || n->units > 65536 || n->kh <= 0 || n->kh > 64 || n->kw != n->kh ||
            n->stride <= 0 || n->stride > 64 || n->pad < 0 || n->pad > 64)
            return nz_fail(err, NZ_ERR_SHAPE, "node '%s': bad conv attributes", n->name);
        int oh = (s.h + 2 * n->pad - n->kh) / n->stride + 1;
        int ow = (s.w + 2 * n->pad - n->kw) / n->stride + 1;
        if (s.h + 2 * n->pad < n->kh || s.w + 2 * n->pad < n->kw || oh <= 0 || ow <= 0)
            return nz_fail(err, NZ_ERR_SHAPE, "node '%s': %dx%d kernel larger than %dx%d input",
                           n->name, n->kh, n->kw, s.h, s.w);
        *np = 2;
        expect[0].ndim = 4;
        expect[0].dims[0] = n->units;
        expect[0].dims[1] = s.c;
        expect[0].dims[2] = n->kh;
        expect[0].dims[3] = n->kw;
        expect[1].ndim = 1;
        expect[1].dims[0] = n->units;
        if (n->op == NZ_OP_NCONV2D) { /* V, g [oc, ic], b */
            *np = 3;
            expect[2] = expect[1];
            expect[1].ndim = 2;
            expect[1].dims[0] = n->units;
            expect[1].dims[1] = s.c;
        }
        *out = (nz_shape){n->units, oh, ow};
        break;
    }
    case NZ_OP_AVGPOOL:
    case NZ_OP_MAXPOOL: {
        if (n->kh <= 0 || n->kw <= 0 || n->stride <= 0 || n->kh > s.h || n->kw > s.w)
            return nz_fail(err, NZ_ERR_SHAPE, "node '%s': bad pool window %dx%d on %dx%d",
                           n->name, n->kh, n->kw, s.h, s.w);
        *out = (nz_shape){s.c, (s.h - n->kh) / n->stride + 1, (s.w - n->kw) / n->stride + 1};
        break;
    }
    case NZ_OP_RELU:
        *out = s;
        break;
    case NZ_OP_DROPOUT:
        if (!(n->p >= 0.0f && n->p < 1.0f))
            return nz_fail(err, NZ_ERR_SHAPE, "node '%s': dropout p=%g not in [0,1)", n->name,
                           (double)n->p);
        *out = s;
        break;
    case NZ_OP_FLATTEN:
        *out = (nz_shape){(int)nz_shape_size(s), 1, 1};
        break;
    case NZ_OP_BATCHNORM:
        if (!(n->p > 0.0f && n->p <= 1.0f))
            return nz_fail(err, NZ_ERR_SHAPE, "node '%s': batch norm momentum %g not in (0,1]",
                           n->name, (double)n->p);
        *np = 4; /* gamma, beta, running mean, running var */
        for (int k = 0; k < 4; k++) {
            expect[k].ndim = 1;
            expect[k].dims[0] = s.c;
        }
        *out = s;
        break;
    case NZ_OP_ADD: {
        nz_shape t = m->nodes[n->inputs[1]].out;
        if (t.c != s.c || t.h != s.h || t.w != s.w)
            return nz_fail(err, NZ_ERR_SHAPE, "node '%s': adds %dx%dx%d to %dx%dx%d", n->name,
                           s.c, s.h, s.w, t.c, t.h, t.w);
        *out = s;
        break;
    }
    case NZ_OP_GAP:
        *out = (nz_shape){s.c, 1, 1};
        break;
    case NZ_OP_SELECT:
        if (n->units <= 0 || (size_t)n->units > nz_shape_size(s))
            return nz_fail(err, NZ_ERR_SHAPE, "node '%s': selects %d of %zu features", n->name,
                           n->units, nz_shape_size(s));
        *np = 1;
        expect[0].ndim = 1;
        expect[0].dims[0] = n->units;
        *out = (nz_shape){n->units, 1, 1};
        break;
    case NZ_OP_SHORTCUT:
        if (n->units < s.c || n->units > 65536 || n->stride <= 0 || n->stride > 64)
            return nz_fail(err, NZ_ERR_SHAPE, "node '%s': bad shortcut %d -> %d channels, stride %d",
                           n->name, s.c, n->units, n->stride);
        *out = (nz_shape){n->units, (s.h - 1) / n->stride + 1, (s.w - 1) / n->stride + 1};
        break;
    default:
        return nz_fail(err, NZ_ERR_UNSUPPORTED, "node '%s': unknown op %d", n->name, (int)n->op);
    }
    if (nz_shape_size(*out) > NZ_MAX_ELEMS)
        return nz_fail(err, NZ_ERR_SHAPE, "node '%s': activation too large", n->name);
    return NZ_OK;
}

size_t nz_param_numel(const nz_param *p) {
    size_t c = 1;
    for (int i = 0; i < p->ndim; i++) c *= (size_t)p->dims[i];
    return c;
}

static size_t param_count(const nz_param *p) { return nz_param_numel(p); }

nz_status nz_model_init(nz_model *m, const char *arch, nz_shape in, int n_classes,
                        nz_error *err) {
    memset(m, 0, sizeof *m);
    if (in.c <= 0 || in.h <= 0 || in.w <= 0 || in.c > 4 || in.h > 4096 || in.w > 4096)
        return nz_fail(err, NZ_ERR_SHAPE, "bad input shape %dx%dx%d", in.c, in.h, in.w);
    if (n_classes < 2 || n_classes > 100000)
        return nz_fail(err, NZ_ERR_SHAPE, "bad class count %d", n_classes);
    snprintf(m->arch, sizeof m->arch, "%s", arch ? arch : "custom");
    m->in = in;
    m->n_classes = n_classes;
    m->pre.scale = 1.0f / 255.0f;
    m->pre.n_ch = in.c;
    for (int c = 0; c < 4; c++) {
        m->pre.mean[c] = 0.0f;
        m->pre.std[c] = 1.0f;
    }
    m->cap_nodes = 16;
    m->nodes = calloc((size_t)m->cap_nodes, sizeof(nz_node));
    if (!m->nodes) return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    nz_node *n0 = &m->nodes[0];
    n0->op = NZ_OP_INPUT;
    snprintf(n0->name, sizeof n0->name, "input");
    n0->out = in;
    n0->inputs[0] = n0->inputs[1] = -1;
    m->n_nodes = 1;
    return NZ_OK;
}

void nz_model_free(nz_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_nodes && m->nodes; i++)
        for (int k = 0; k < m->nodes[i].n_params; k++) nz_sparse_free(m->nodes[i].params[k].sparse);
    free(m->nodes);
    free(m->params);
    memset(m, 0, sizeof *m);
}

/* Appends node (attributes filled by the caller), infers its shape and allocates its params. */
static int add_node(nz_model *m, nz_node *n, nz_error *err) {
    for (int k = 0; k < n->n_inputs; k++)
        if (n->inputs[k] < 0 || n->inputs[k] >= m->n_nodes) {
            nz_fail(err, NZ_ERR_ARG, "node '%s': input %d does not exist", n->name, n->inputs[k]);
            return -1;
        }
    int np;
    nz_param expect[NZ_MAX_PARAMS];
    if (model_node_infer(m, n, &n->out, &np, expect, err) != NZ_OK) return -1;
    size_t add = 0;
    for (int i = 0; i < np; i++) add += param_count(&expect[i]);
    if (add) {
        float *p = realloc(m->params, sizeof(float) * (m->n_params + add));
        if (!p) {
            nz_fail(err, NZ_ERR_NOMEM, "out of memory");
            return -1;
        }
        memset(p + m->n_params, 0, sizeof(float) * add);
        m->params = p;
    }
    n->n_params = np;
    for (int i = 0; i < np; i++) {
        n->params[i] = expect[i];
        n->params[i].off = m->n_params;
        n->params[i].n = param_count(&expect[i]);
        m->n_params += n->params[i].n;
    }
    if (m->n_nodes == m->cap_nodes) {
        nz_node *nn = realloc(m->nodes, sizeof(nz_node) * (size_t)m->cap_nodes * 2);
        if (!nn) {
            nz_fail(err, NZ_ERR_NOMEM, "out of memory");
            return -1;
        }
        m->nodes = nn;
        m->cap_nodes *= 2;
    }
    m->nodes[m->n_nodes] = *n;
    return m->n_nodes++;
}

static nz_node node_new(nz_op op, const char *name, int input) {
    nz_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    snprintf(n.name, sizeof n.name, "%.*s", NZ_NAME_MAX - 1, name); /* names are truncated */
    n.n_inputs = 1;
    n.inputs[0] = input;
    n.inputs[1] = -1;
    return n;
}

int nz_model_add_dense(nz_model *m, const char *name, int input, int units, nz_error *err) {
    nz_node n = node_new(NZ_OP_DENSE, name, input);
    n.units = units;
    return add_node(m, &n, err);
}

int nz_model_add_conv2d(nz_model *m, const char *name, int input, int out_ch, int k, int stride,
                        int pad, nz_error *err) {
    nz_node n = node_new(NZ_OP_CONV2D, name, input);
    n.units = out_ch;
    n.kh = n.kw = k;
    n.stride = stride;
    n.pad = pad;
    return add_node(m, &n, err);
}

int nz_model_add_maxpool(nz_model *m, const char *name, int input, int k, int stride,
                         nz_error *err) {
    nz_node n = node_new(NZ_OP_MAXPOOL, name, input);
    n.kh = n.kw = k;
    n.stride = stride;
    return add_node(m, &n, err);
}

int nz_model_add_relu(nz_model *m, const char *name, int input, nz_error *err) {
    nz_node n = node_new(NZ_OP_RELU, name, input);
    return add_node(m, &n, err);
}

int nz_model_add_flatten(nz_model *m, const char *name, int input, nz_error *err) {
    nz_node n = node_new(NZ_OP_FLATTEN, name, input);
    return add_node(m, &n, err);
}

int nz_model_add_ndense(nz_model *m, const char *name, int input, int units, nz_error *err) {
    nz_node n = node_new(NZ_OP_NDENSE, name, input);
    n.units = units;
    return add_node(m, &n, err);
}

int nz_model_add_nconv2d(nz_model *m, const char *name, int input, int out_ch, int k, int stride,
                         int pad, nz_error *err) {
    nz_node n = node_new(NZ_OP_NCONV2D, name, input);
    n.units = out_ch;
    n.kh = n.kw = k;
    n.stride = stride;
    n.pad = pad;
    return add_node(m, &n, err);
}

int nz_model_add_dropout(nz_model *m, const char *name, int input, float p, nz_error *err) {
    nz_node n = node_new(NZ_OP_DROPOUT, name, input);
    n.p = p;
    return add_node(m, &n, err);
}

int nz_model_add_batchnorm(nz_model *m, const char *name, int input, nz_error *err) {
    nz_node n = node_new(NZ_OP_BATCHNORM, name, input);
    n.p = NZ_BN_MOMENTUM;
    int id = add_node(m, &n, err);
    if (id >= 0) { /* identity until trained: gamma 1, beta 0, running var 1 */
        const nz_node *b = &m->nodes[id];
        for (int c = 0; c < b->params[0].dims[0]; c++) {
            m->params[b->params[0].off + c] = 1.0f;
            m->params[b->params[3].off + c] = 1.0f;
        }
    }
    return id;
}

int nz_model_add_add(nz_model *m, const char *name, int a, int b, nz_error *err) {
    nz_node n = node_new(NZ_OP_ADD, name, a);
    n.n_inputs = 2;
    n.inputs[1] = b;
    return add_node(m, &n, err);
}

int nz_model_add_avgpool(nz_model *m, const char *name, int input, int k, int stride,
                         nz_error *err) {
    nz_node n = node_new(NZ_OP_AVGPOOL, name, input);
    n.kh = n.kw = k;
    n.stride = stride;
    return add_node(m, &n, err);
}

int nz_model_add_gap(nz_model *m, const char *name, int input, nz_error *err) {
    nz_node n = node_new(NZ_OP_GAP, name, input);
    return add_node(m, &n, err);
}

int nz_model_add_shortcut(nz_model *m, const char *name, int input, int out_ch, int stride,
                          nz_error *err) {
    nz_node n = node_new(NZ_OP_SHORTCUT, name, input);
    n.units = out_ch;
    n.stride = stride;
    return add_node(m, &n, err);
}

int nz_model_add_select(nz_model *m, const char *name, int input, const int *index, int k,
                        nz_error *err) {
    nz_node n = node_new(NZ_OP_SELECT, name, input);
    n.units = k;
    nz_store store = NZ_STORE_F32;
    if (input >= 0 && input < m->n_nodes) {
        const size_t F = nz_shape_size(m->nodes[input].out);
        for (int j = 0; j < k; j++)
            if (index[j] < 0 || (size_t)index[j] >= F || (j && index[j] <= index[j - 1])) {
                nz_fail(err, NZ_ERR_ARG, "node '%s': feature numbers must increase below %zu",
                        name, F);
                return -1;
            }
        /* integers up to 2048 are exact in binary16 */
        if (F <= 2048) store = NZ_STORE_F16;
    }
    int id = add_node(m, &n, err);
    if (id < 0) return -1;
    nz_node *s = &m->nodes[id];
    s->params[0].store = store;
    for (int j = 0; j < k; j++) m->params[s->params[0].off + j] = (float)index[j];
    return id;
}

int nz_param_is_buffer(const nz_node *n, int k) {
    return (n->op == NZ_OP_BATCHNORM && k >= 2) || n->op == NZ_OP_SELECT;
}

/* A select node's feature numbers: integers, increasing, below its input's size. */
static nz_status check_select(const nz_model *m, const nz_node *n, nz_error *err) {
    const size_t F = nz_shape_size(m->nodes[n->inputs[0]].out);
    const float *ix = m->params + n->params[0].off;
    for (int j = 0; j < n->units; j++)
        if (!(ix[j] >= 0.0f && ix[j] < (float)F && ix[j] == floorf(ix[j]) &&
              (j == 0 || ix[j] > ix[j - 1])))
            return nz_fail(err, NZ_ERR_FORMAT, "node '%s': feature number %d (%g) is not an "
                           "increasing integer below %zu", n->name, j, (double)ix[j], F);
    return NZ_OK;
}

nz_status nz_model_validate(const nz_model *m, nz_error *err) {
    if (m->n_nodes < 2 || m->nodes[0].op != NZ_OP_INPUT)
        return nz_fail(err, NZ_ERR_FORMAT, "graph must start with an input node and have layers");
    if (m->in.c <= 0 || m->in.h <= 0 || m->in.w <= 0 || m->in.c > 4 || m->in.h > 4096 ||
        m->in.w > 4096)
        return nz_fail(err, NZ_ERR_SHAPE, "bad input shape %dx%dx%d", m->in.c, m->in.h, m->in.w);
    if (m->n_classes < 2 || m->n_classes > 100000)
        return nz_fail(err, NZ_ERR_SHAPE, "bad class count %d", m->n_classes);
    if (!(m->pre.scale > 0.0f) || m->pre.n_ch < 0 || m->pre.n_ch > 4)
        return nz_fail(err, NZ_ERR_FORMAT, "bad preprocessing");
    for (int c = 0; c < m->pre.n_ch; c++)
        if (!(m->pre.std[c] > 0.0f) || !isfinite(m->pre.mean[c]))
            return nz_fail(err, NZ_ERR_FORMAT, "bad preprocessing for channel %d", c);
    for (int i = 0; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        if (memchr(n->name, 0, sizeof n->name) == NULL)
            return nz_fail(err, NZ_ERR_FORMAT, "node %d: name not terminated", i);
        if ((n->op == NZ_OP_INPUT) != (i == 0))
            return nz_fail(err, NZ_ERR_FORMAT, "node %d: input node out of place", i);
        if (n->n_inputs < 0 || n->n_inputs > NZ_MAX_INPUTS)
            return nz_fail(err, NZ_ERR_FORMAT, "node '%s': bad input count", n->name);
        for (int k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] < 0 || n->inputs[k] >= i)
                return nz_fail(err, NZ_ERR_FORMAT, "node '%s': input %d is not an earlier node",
                               n->name, n->inputs[k]);
        nz_shape s;
        int np;
        nz_param expect[NZ_MAX_PARAMS];
        nz_status st = model_node_infer(m, n, &s, &np, expect, err);
        if (st) return st;
        if (s.c != n->out.c || s.h != n->out.h || s.w != n->out.w)
            return nz_fail(err, NZ_ERR_SHAPE, "node '%s': stored shape %dx%dx%d, expected %dx%dx%d",
                           n->name, n->out.c, n->out.h, n->out.w, s.c, s.h, s.w);
        if (np != n->n_params)
            return nz_fail(err, NZ_ERR_FORMAT, "node '%s': %d parameter tensors, expected %d",
                           n->name, n->n_params, np);
        for (int k = 0; k < np; k++) {
            const nz_param *p = &n->params[k];
            if (p->ndim != expect[k].ndim ||
                memcmp(p->dims, expect[k].dims, sizeof(int) * (size_t)p->ndim) != 0)
                return nz_fail(err, NZ_ERR_SHAPE, "node '%s': parameter %d has the wrong shape",
                               n->name, k);
            if (p->sparse) {
                size_t rows = (size_t)p->dims[0];
                if (p->n != 0 || (size_t)p->sparse->rows != rows ||
                    (size_t)p->sparse->cols != param_count(p) / rows)
                    return nz_fail(err, NZ_ERR_SHAPE,
                                   "node '%s': sparse parameter %d has the wrong shape", n->name,
                                   k);
                continue;
            }
            if (p->n != param_count(p) || p->off > m->n_params || p->n > m->n_params - p->off)
                return nz_fail(err, NZ_ERR_FORMAT, "node '%s': parameter %d out of range",
                               n->name, k);
            if ((unsigned)p->store > NZ_STORE_F16)
                return nz_fail(err, NZ_ERR_FORMAT, "node '%s': parameter %d: bad storage",
                               n->name, k);
        }
        if (n->op == NZ_OP_SELECT) {
            if (n->params[0].sparse)
                return nz_fail(err, NZ_ERR_FORMAT, "node '%s': sparse feature numbers", n->name);
            if ((st = check_select(m, n, err))) return st;
        }
    }
    const nz_node *last = &m->nodes[m->n_nodes - 1];
    if (nz_shape_size(last->out) != (size_t)m->n_classes)
        return nz_fail(err, NZ_ERR_SHAPE, "last node '%s' gives %zu outputs for %d classes",
                       last->name, nz_shape_size(last->out), m->n_classes);
    return NZ_OK;
}

void nz_model_init_params(nz_model *m, nz_rng *rng) {
    for (int i = 0; i < m->n_nodes; i++) {
        nz_node *n = &m->nodes[i];
        if (n->op == NZ_OP_BATCHNORM) {
            for (int k = 0; k < 4; k++)
                for (size_t j = 0; j < n->params[k].n; j++)
                    m->params[n->params[k].off + j] = (k == 0 || k == 3) ? 1.0f : 0.0f;
            continue;
        }
        if (n->op != NZ_OP_DENSE && n->op != NZ_OP_CONV2D) continue;
        if (n->params[0].sparse || n->params[1].sparse) continue;
        /* PyTorch: kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(fan_in); the bias too */
        size_t fan_in = n->params[0].n / (size_t)n->params[0].dims[0];
        float bound = 1.0f / sqrtf((float)fan_in);
        for (int k = 0; k < 2; k++) {
            float *p = m->params + n->params[k].off;
            for (size_t j = 0; j < n->params[k].n; j++) p[j] = nz_rng_range(rng, -bound, bound);
        }
    }
}

nz_status nz_model_copy(nz_model *dst, const nz_model *src, nz_error *err) {
    *dst = *src;
    dst->nodes = malloc(sizeof(nz_node) * (size_t)src->cap_nodes);
    dst->params = malloc(sizeof(float) * (src->n_params ? src->n_params : 1));
    if (!dst->nodes || !dst->params) {
        free(dst->nodes);
        free(dst->params);
        memset(dst, 0, sizeof *dst);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    memcpy(dst->nodes, src->nodes, sizeof(nz_node) * (size_t)src->n_nodes);
    if (src->n_params) memcpy(dst->params, src->params, sizeof(float) * src->n_params);
    for (int i = 0; i < dst->n_nodes; i++)
        for (int k = 0; k < dst->nodes[i].n_params; k++) dst->nodes[i].params[k].sparse = NULL;
    for (int i = 0; i < dst->n_nodes; i++)
        for (int k = 0; k < dst->nodes[i].n_params; k++)
            if (src->nodes[i].params[k].sparse &&
                nz_sparse_clone(&dst->nodes[i].params[k].sparse, src->nodes[i].params[k].sparse,
                                err)) {
                nz_model_free(dst);
                return err ? err->code : NZ_ERR_NOMEM;
            }
    return NZ_OK;
}

size_t nz_node_param_count(const nz_node *n) {
    size_t c = 0;
    for (int k = 0; k < n->n_params; k++) c += nz_param_numel(&n->params[k]);
    return c;
}

size_t nz_model_flops(const nz_model *m) {
    size_t f = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        if (n->op == NZ_OP_DENSE || n->op == NZ_OP_NDENSE) f += nz_param_numel(&n->params[0]);
        if (n->op == NZ_OP_CONV2D || n->op == NZ_OP_NCONV2D)
            f += nz_param_numel(&n->params[0]) * (size_t)n->out.h * (size_t)n->out.w;
    }
    return f;
}

/* ---------------------------------------------------------------- zoo */

const char *nz_zoo_names(void) {
    return "lenet300, lenet500, lenet5, resnet20, resnet32, resnet56, vgg16";
}

float nz_zoo_default_lr(const char *name) { return strcmp(name, "lenet5") == 0 ? 0.05f : 0.1f; }

static nz_status build_mlp(nz_model *m, const int *hidden, int nh, nz_error *err) {
    int x = nz_model_add_flatten(m, "flatten", 0, err);
    char name[NZ_NAME_MAX];
    for (int i = 0; i < nh && x >= 0; i++) {
        snprintf(name, sizeof name, "fc%d", i + 1);
        x = nz_model_add_dense(m, name, x, hidden[i], err);
        snprintf(name, sizeof name, "relu%d", i + 1);
        if (x >= 0) x = nz_model_add_relu(m, name, x, err);
    }
    snprintf(name, sizeof name, "fc%d", nh + 1);
    if (x >= 0) x = nz_model_add_dense(m, name, x, m->n_classes, err);
    return x >= 0 ? NZ_OK : err->code;
}

/* conv k x k (padding k/2) -> batch norm [-> relu]; returns the last node or -1 */
static int conv_bn(nz_model *m, const char *prefix, int x, int ch, int k, int stride, int relu,
                   nz_error *err) {
    char name[NZ_NAME_MAX];
    snprintf(name, sizeof name, "%.20s_conv", prefix);
    if (x >= 0) x = nz_model_add_conv2d(m, name, x, ch, k, stride, k / 2, err);
    snprintf(name, sizeof name, "%.20s_bn", prefix);
    if (x >= 0) x = nz_model_add_batchnorm(m, name, x, err);
    snprintf(name, sizeof name, "%.20s_relu", prefix);
    if (x >= 0 && relu) x = nz_model_add_relu(m, name, x, err);
    return x;
}

/* He et al. (2016) CIFAR ResNet-(6n+2): 3x3 conv 16, then three stages of n basic blocks with
 * 16, 32, 64 channels (stride 2 entering stages 2 and 3), global average pool, fc. Shortcuts are
 * the paper's option A (identity; strided subsampling plus zero channels where the shape
 * changes): parameter-free, so the parameter counts (0.27M / 0.46M / 0.85M) are the ones the
 * compression papers quote ratios against. */
static nz_status build_resnet(nz_model *m, int n, nz_error *err) {
    char pre[40], name[NZ_NAME_MAX];
    int x = conv_bn(m, "stem", 0, 16, 3, 1, 1, err);
    int ch = 16;
    for (int stage = 0; stage < 3 && x >= 0; stage++) {
        int out_ch = 16 << stage;
        for (int b = 0; b < n && x >= 0; b++) {
            int stride = (stage > 0 && b == 0) ? 2 : 1;
            snprintf(pre, sizeof pre, "s%db%d_a", stage + 1, b + 1);
            int y = conv_bn(m, pre, x, out_ch, 3, stride, 1, err);
            snprintf(pre, sizeof pre, "s%db%d_b", stage + 1, b + 1);
            y = conv_bn(m, pre, y, out_ch, 3, 1, 0, err);
            int skip = x;
            if (y >= 0 && (stride != 1 || out_ch != ch)) {
                snprintf(name, sizeof name, "s%db%d_short", stage + 1, b + 1);
                skip = nz_model_add_shortcut(m, name, x, out_ch, stride, err);
            }
            snprintf(name, sizeof name, "s%db%d_add", stage + 1, b + 1);
            if (y >= 0 && skip >= 0) y = nz_model_add_add(m, name, y, skip, err);
            else y = -1;
            snprintf(name, sizeof name, "s%db%d_relu", stage + 1, b + 1);
            x = y >= 0 ? nz_model_add_relu(m, name, y, err) : -1;
            ch = out_ch;
        }
    }
    if (x >= 0) x = nz_model_add_gap(m, "gap", x, err);
    if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, err);
    if (x >= 0) x = nz_model_add_dense(m, "fc", x, m->n_classes, err);
    return x >= 0 ? NZ_OK : err->code;
}

/* VGG-16 for small images (as in the CIFAR slimming literature): 13 conv3x3-BN-ReLU layers,
 * 64-64-M-128-128-M-256x3-M-512x3-M-512x3-M, one fc to the classes. A 2x2 max pool is skipped
 * where the map is already 1 pixel (28x28 inputs reach 1x1 after four pools); a global average
 * pool reduces whatever is left (nothing for 32x32 inputs). */
static nz_status build_vgg16(nz_model *m, nz_error *err) {
    static const int cfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0,
                              512, 512, 512, 0};
    char pre[40];
    int x = 0, conv = 0, pool = 0;
    for (size_t i = 0; i < sizeof cfg / sizeof *cfg && x >= 0; i++) {
        if (cfg[i]) {
            snprintf(pre, sizeof pre, "conv%d", ++conv);
            x = conv_bn(m, pre, x, cfg[i], 3, 1, 1, err);
        } else if (m->nodes[x].out.h >= 2 && m->nodes[x].out.w >= 2) {
            snprintf(pre, sizeof pre, "pool%d", ++pool);
            x = nz_model_add_maxpool(m, pre, x, 2, 2, err);
        }
    }
    if (x >= 0 && (m->nodes[x].out.h > 1 || m->nodes[x].out.w > 1))
        x = nz_model_add_gap(m, "gap", x, err);
    if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, err);
    if (x >= 0) x = nz_model_add_dense(m, "fc", x, m->n_classes, err);
    return x >= 0 ? NZ_OK : err->code;
}

nz_status nz_zoo_build(nz_model *m, const char *name, nz_shape in, int n_classes, nz_error *err) {
    nz_error local;
    if (!err) err = &local;
    nz_status st = nz_model_init(m, name, in, n_classes, err);
    if (st) return st;
    if (strcmp(name, "lenet300") == 0) {
        static const int h[] = {300, 100};
        st = build_mlp(m, h, 2, err);
    } else if (strcmp(name, "lenet500") == 0) {
        static const int h[] = {500, 300};
        st = build_mlp(m, h, 2, err);
    } else if (strcmp(name, "lenet5") == 0) {
        /* Caffe's LeNet (Han et al.'s LeNet-5): conv20-pool-conv50-pool-fc500-relu-fc10 */
        int x = nz_model_add_conv2d(m, "conv1", 0, 20, 5, 1, 0, err);
        if (x >= 0) x = nz_model_add_maxpool(m, "pool1", x, 2, 2, err);
        if (x >= 0) x = nz_model_add_conv2d(m, "conv2", x, 50, 5, 1, 0, err);
        if (x >= 0) x = nz_model_add_maxpool(m, "pool2", x, 2, 2, err);
        if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, err);
        if (x >= 0) x = nz_model_add_dense(m, "fc1", x, 500, err);
        if (x >= 0) x = nz_model_add_relu(m, "relu1", x, err);
        if (x >= 0) x = nz_model_add_dense(m, "fc2", x, n_classes, err);
        st = x >= 0 ? NZ_OK : err->code;
    } else if (strcmp(name, "resnet20") == 0) {
        st = build_resnet(m, 3, err);
    } else if (strcmp(name, "resnet32") == 0) {
        st = build_resnet(m, 5, err);
    } else if (strcmp(name, "resnet56") == 0) {
        st = build_resnet(m, 9, err);
    } else if (strcmp(name, "vgg16") == 0) {
        st = build_vgg16(m, err);
    } else {
        st = nz_fail(err, NZ_ERR_ARG, "unknown model '%s' (expected %s)", name, nz_zoo_names());
    }
    if (st) nz_model_free(m);
    return st;
}
