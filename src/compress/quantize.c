/* Trained quantization (Deep Compression stage 2): per-layer 1-D k-means weight sharing on the
 * surviving weights, then fine-tuning of the shared values, where a centroid's gradient is the
 * sum of its members' gradients and the assignments stay fixed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/mask.h"
#include "core/clock.h"
#include "nnzip/compress.h"

void nz_quant_cfg_default(nz_quant_cfg *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < NZ_MAX_PASS_NODES; i++) cfg->bits[i] = -1;
    cfg->fc_bits = 5;
    cfg->conv_bits = 8;
    cfg->init = NZ_KMEANS_LINEAR;
    cfg->finetune_epochs = 3;
    nz_train_cfg_default(&cfg->train);
    /* summed cluster gradients are large: the step must be small */
    cfg->train.lr = 1e-4f;
    cfg->train.weight_decay = 0.0f;
}

/* first index in sorted v[0..n) with v[i] >= x */
static size_t lower_bound(const float *v, size_t n, double x) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((double)v[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void init_centroids(const float *sorted, size_t n, int k, nz_kmeans_init init, nz_rng *rng,
                           double *c) {
    const double lo = sorted[0], hi = sorted[n - 1];
    switch (init) {
    case NZ_KMEANS_DENSITY: /* evenly spaced in the CDF */
        for (int j = 0; j < k; j++) {
            size_t idx = (size_t)(((double)j + 0.5) / k * (double)n);
            c[j] = sorted[idx < n ? idx : n - 1];
        }
        break;
    case NZ_KMEANS_FORGY: /* k random weights */
        for (int j = 0; j < k; j++) c[j] = sorted[nz_rng_below(rng, n)];
        break;
    case NZ_KMEANS_PLUSPLUS: { /* D^2 sampling */
        double *d2 = malloc(sizeof(double) * n);
        c[0] = sorted[nz_rng_below(rng, n)];
        for (int j = 1; j < k; j++) {
            double tot = 0;
            for (size_t i = 0; i < n; i++) {
                double best = INFINITY;
                for (int q = 0; q < j; q++) {
                    double d = sorted[i] - c[q];
                    if (d * d < best) best = d * d;
                }
                if (d2) d2[i] = best;
                tot += best;
            }
            double u = (double)nz_rng_uniform(rng) * tot, acc = 0;
            size_t pick = n - 1;
            for (size_t i = 0; i < n && d2; i++) {
                acc += d2[i];
                if (acc >= u) {
                    pick = i;
                    break;
                }
            }
            c[j] = sorted[pick];
        }
        free(d2);
        break;
    }
    case NZ_KMEANS_LINEAR: /* evenly spaced between min and max: keeps the rare large weights */
    default:
        for (int j = 0; j < k; j++) c[j] = k == 1 ? (lo + hi) / 2 : lo + (hi - lo) * j / (k - 1);
        break;
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

nz_status nz_kmeans_1d(const float *x, size_t n, int k, nz_kmeans_init init, int max_iter,
                       nz_rng *rng, float *centroids, int32_t *assign, nz_error *err) {
    if (n == 0 || k < 1) return nz_fail(err, NZ_ERR_ARG, "k-means: %zu values, k = %d", n, k);
    float *s = malloc(sizeof(float) * n);
    double *pre = malloc(sizeof(double) * (n + 1));
    double *c = malloc(sizeof(double) * (size_t)k);
    size_t *start = malloc(sizeof(size_t) * ((size_t)k + 1));
    if (!s || !pre || !c || !start) {
        free(s);
        free(pre);
        free(c);
        free(start);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    memcpy(s, x, sizeof(float) * n);
    nz_sort_floats(s, n);
    pre[0] = 0;
    for (size_t i = 0; i < n; i++) pre[i + 1] = pre[i] + s[i];
    /* no more distinct values than clusters: they are the exact answer */
    size_t distinct = 1;
    for (size_t i = 1; i < n; i++) distinct += s[i] != s[i - 1];
    if (distinct <= (size_t)k) {
        int j = 0;
        for (size_t i = 0; i < n; i++)
            if (i == 0 || s[i] != s[i - 1]) c[j++] = s[i];
        while (j < k) { /* surplus clusters sit on the largest value and stay empty */
            c[j] = c[j - 1];
            j++;
        }
        max_iter = -1;
    } else {
        init_centroids(s, n, k, init, rng, c);
        qsort(c, (size_t)k, sizeof(double), cmp_double);
    }
    /* Lloyd on sorted data: cluster j is the contiguous range between the midpoints to its
     * neighbours, found by binary search; its mean comes from the prefix sums. Exact. */
    int reseeds = 0;
    for (int it = 0; it < (max_iter > 0 ? max_iter : max_iter < 0 ? 0 : 300); it++) {
        start[0] = 0;
        for (int j = 1; j < k; j++) start[j] = lower_bound(s, n, 0.5 * (c[j - 1] + c[j]));
        start[k] = n;
        int changed = 0, empty = -1;
        for (int j = 0; j < k; j++) {
            size_t a = start[j], b = start[j + 1];
            if (b <= a) { /* empty: remember it, keep its centroid for now */
                empty = j;
                continue;
            }
            double mean = (pre[b] - pre[a]) / (double)(b - a);
            if (mean != c[j]) changed = 1;
            c[j] = mean;
        }
        /* an empty cluster wastes a code: move it to the value farthest from its centroid
         * (there are more distinct values than clusters, so such a value exists) */
        if (empty >= 0 && reseeds < 4 * k) {
            double far = -1, at = c[empty];
            for (int j = 0; j < k; j++) {
                size_t a = start[j], b = start[j + 1];
                if (b <= a) continue;
                double d0 = fabs(s[a] - c[j]), d1 = fabs(s[b - 1] - c[j]);
                if (d0 > far) { far = d0; at = s[a]; }
                if (d1 > far) { far = d1; at = s[b - 1]; }
            }
            if (far > 0) {
                c[empty] = at;
                qsort(c, (size_t)k, sizeof(double), cmp_double);
                reseeds++;
                changed = 1;
            }
        }
        if (!changed) break;
    }
    for (int j = 0; j < k; j++) centroids[j] = (float)c[j];
    if (assign) {
        float *mid = malloc(sizeof(float) * (size_t)k);
        if (!mid) {
            free(s);
            free(pre);
            free(c);
            free(start);
            return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        }
        for (int j = 0; j + 1 < k; j++) mid[j] = (float)(0.5 * (c[j] + c[j + 1]));
        for (size_t i = 0; i < n; i++)
            assign[i] = (int32_t)lower_bound(mid, (size_t)(k - 1), (double)x[i]);
        free(mid);
    }
    free(s);
    free(pre);
    free(c);
    free(start);
    return NZ_OK;
}

/* ---------------------------------------------------------------- fine-tuning */

typedef struct {
    int n_layers;
    int node[NZ_MAX_PASS_NODES];
    int k[NZ_MAX_PASS_NODES];
    int32_t *cluster[NZ_MAX_PASS_NODES]; /* per weight: centroid id, -1 for pruned */
    double *gsum;                        /* scratch [max k] */
    const nz_train_hooks *outer;
} quant_state;

/* Replaces each weight's gradient by its cluster's summed gradient: every member then takes the
 * same step, so the shared value moves by lr x (sum of member gradients), as in the paper. */
static int tie_gradients(nz_model *m, float *grads, void *user) {
    quant_state *q = user;
    for (int l = 0; l < q->n_layers; l++) {
        const nz_param *w = &m->nodes[q->node[l]].params[0];
        float *g = grads + w->off;
        const int32_t *cl = q->cluster[l];
        double *sum = q->gsum;
        memset(sum, 0, sizeof(double) * (size_t)q->k[l]);
        for (size_t i = 0; i < w->n; i++)
            if (cl[i] >= 0) sum[cl[i]] += g[i];
        for (size_t i = 0; i < w->n; i++) g[i] = cl[i] >= 0 ? (float)sum[cl[i]] : 0.0f;
    }
    if (q->outer && q->outer->before_step)
        return q->outer->before_step(m, grads, q->outer->hook_user);
    return 0;
}

/* Members of a cluster start equal and take identical steps; re-snapping to the first member's
 * value makes that exact whatever the optimizer's rounding, and keeps pruned weights at zero. */
static int snap_weights(nz_model *m, void *user) {
    quant_state *q = user;
    float val[256];
    for (int l = 0; l < q->n_layers; l++) {
        const nz_param *w = &m->nodes[q->node[l]].params[0];
        float *W = m->params + w->off;
        const int32_t *cl = q->cluster[l];
        unsigned char seen[256] = {0};
        for (size_t i = 0; i < w->n; i++) {
            if (cl[i] < 0) {
                W[i] = 0.0f;
                continue;
            }
            if (!seen[cl[i]]) {
                seen[cl[i]] = 1;
                val[cl[i]] = W[i];
            }
            W[i] = val[cl[i]];
        }
    }
    if (q->outer && q->outer->after_step) return q->outer->after_step(m, q->outer->hook_user);
    return 0;
}

/* Bits of a layer's codebook index: as configured per layer, else the fc/conv default capped
 * for small layers so that the codebook (2^bits values) stays small next to the codes it
 * serves: at most one shared value per 8 surviving weights. */
static int layer_bits(const nz_quant_cfg *cfg, const nz_node *n, int node, size_t survivors) {
    if (node < NZ_MAX_PASS_NODES && cfg->bits[node] > 0) return cfg->bits[node];
    int bits = n->op == NZ_OP_CONV2D ? cfg->conv_bits : cfg->fc_bits;
    int cap = 2;
    while (cap < bits && ((size_t)1 << (cap + 1)) * 8 <= survivors) cap++;
    /* few enough survivors to keep them all exactly: the width that does */
    if (survivors < ((size_t)1 << bits)) {
        int exact = 1;
        while (((size_t)1 << exact) - 1 < survivors) exact++;
        if (exact > cap) cap = exact;
    }
    return bits < cap ? bits : cap;
}

nz_status nz_quantize(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                      const nz_quant_cfg *cfg, const nz_train_hooks *hooks, nz_quant_result *res,
                      nz_error *err) {
    memset(res, 0, sizeof *res);
    double t0 = nz_now_s();
    nz_status st = nz_model_densify(m, err);
    if (st) return st;
    if (m->n_nodes > NZ_MAX_PASS_NODES)
        return nz_fail(err, NZ_ERR_ARG, "model has %d nodes; quantization handles %d",
                       m->n_nodes, NZ_MAX_PASS_NODES);
    quant_state q;
    memset(&q, 0, sizeof q);
    q.outer = hooks;
    q.gsum = malloc(sizeof(double) * 256);
    if (!q.gsum) return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    nz_rng rng;
    nz_rng_seed(&rng, cfg->train.seed ^ 0xC0DEB00Cull);
    float *vals = NULL, *cent = NULL;
    int32_t *asg = NULL;
    for (int i = 0; i < m->n_nodes && !st; i++) {
        const nz_node *n = &m->nodes[i];
        if (!nz_node_is_weighted(n)) continue;
        const nz_param *w = &m->nodes[i].params[0];
        float *W = m->params + w->off;
        size_t survivors = 0;
        for (size_t j = 0; j < w->n; j++) survivors += W[j] != 0.0f;
        int bits = layer_bits(cfg, n, i, survivors);
        if (bits < 1 || bits > 8) {
            st = nz_fail(err, NZ_ERR_ARG, "layer '%s': %d bits (1..8 supported)", n->name, bits);
            break;
        }
        int32_t *cl = malloc(sizeof(int32_t) * w->n);
        vals = malloc(sizeof(float) * w->n);
        asg = malloc(sizeof(int32_t) * w->n);
        if (!cl || !vals || !asg) {
            free(cl);
            st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
            break;
        }
        size_t nz = 0;
        for (size_t j = 0; j < w->n; j++)
            if (W[j] != 0.0f) vals[nz++] = W[j];
        /* code 0 is the zero of pruned positions and fillers: 2^bits - 1 shared values */
        int k = (1 << bits) - 1;
        if ((size_t)k > nz) k = nz > 0 ? (int)nz : 1;
        cent = malloc(sizeof(float) * (size_t)k);
        if (!cent) {
            free(cl);
            st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
            break;
        }
        if (nz > 0) st = nz_kmeans_1d(vals, nz, k, cfg->init, 300, &rng, cent, asg, err);
        if (st) {
            free(cl);
            break;
        }
        size_t t = 0;
        for (size_t j = 0; j < w->n; j++) {
            if (W[j] == 0.0f) {
                cl[j] = -1;
            } else {
                cl[j] = asg[t++];
                W[j] = cent[cl[j]];
                if (W[j] == 0.0f) cl[j] = -1; /* a centroid exactly at 0 joins the pruned */
            }
        }
        q.node[q.n_layers] = i;
        q.k[q.n_layers] = k;
        q.cluster[q.n_layers] = cl;
        res->node[q.n_layers] = i;
        res->bits[q.n_layers] = bits;
        q.n_layers++;
        free(vals);
        free(asg);
        free(cent);
        vals = NULL;
        asg = NULL;
        cent = NULL;
    }
    free(vals);
    free(asg);
    free(cent);
    res->n_layers = q.n_layers;
    nz_eval_result ev;
    if (!st && test && !(st = nz_evaluate(m, test, 256, &ev, err))) {
        res->test_err_before_finetune = ev.error;
        res->test_err_after = ev.error;
    }
    if (!st && cfg->finetune_epochs > 0) {
        nz_train_hooks th;
        memset(&th, 0, sizeof th);
        if (hooks) th = *hooks;
        th.before_step = tie_gradients;
        th.after_step = snap_weights;
        th.hook_user = &q;
        nz_train_cfg tc = cfg->train;
        tc.epochs = cfg->finetune_epochs;
        tc.eval_every = 0;
        nz_train_result tr;
        st = nz_train(m, train, test, &tc, &th, &tr, err);
        if (!st) res->test_err_after = tr.test_err;
    }
    /* move every quantized layer into sparse codebook form: codebook[0] = 0, then the shared
     * values as they ended fine-tuning */
    for (int l = 0; l < q.n_layers && !st; l++) {
        const int i = q.node[l];
        const nz_param *w = &m->nodes[i].params[0];
        const float *W = m->params + w->off;
        float cb[257];
        int ncb = 1;
        cb[0] = 0.0f;
        unsigned char seen[256] = {0};
        for (size_t j = 0; j < w->n; j++) {
            int c = q.cluster[l][j];
            if (c < 0 || seen[c]) continue;
            seen[c] = 1;
            /* two clusters can meet at the same value: they share a code */
            int found = 0;
            for (int t = 1; t < ncb && !found; t++) found = cb[t] == W[j];
            if (!found) cb[ncb++] = W[j];
        }
        int bits = res->bits[l];
        if (ncb < 2) cb[ncb++] = 1.0f; /* an all-zero layer still needs a valid codebook */
        int index_bits = m->nodes[i].op == NZ_OP_CONV2D ? 8 : 5; /* the paper's widths */
        st = nz_model_sparsify_param(m, i, cb, ncb, index_bits, err);
        if (!st) {
            nz_sparse *sp = m->nodes[i].params[0].sparse;
            sp->code_bits = bits; /* the configured width, even if fewer values were used */
            while ((1 << sp->code_bits) < ncb) sp->code_bits++;
        }
    }
    for (int l = 0; l < q.n_layers; l++) free(q.cluster[l]);
    free(q.gsum);
    res->seconds = nz_now_s() - t0;
    return st;
}
