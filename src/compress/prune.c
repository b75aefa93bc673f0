/* Magnitude pruning with retraining (Han et al. 2015, Deep Compression stage 1).
 *
 * Each round lowers every weighted layer to its round's target (a kept fraction falling
 * geometrically to the final one, so early rounds remove the clearly useless weights and the
 * survivors adapt before the harder cuts), then retrains with the mask held: after every SGD
 * step pruned weights are put back to exactly zero. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/mask.h"
#include "core/clock.h"
#include "nnzip/compress.h"

/* Is this the network's last weighted layer (the classifier)? */
static int is_last_weighted(const nz_model *m, int node) {
    for (int i = node + 1; i < m->n_nodes; i++)
        if (nz_node_is_weighted(&m->nodes[i])) return 0;
    return 1;
}

static int is_first_weighted(const nz_model *m, int node) {
    for (int i = 1; i < node; i++)
        if (nz_node_is_weighted(&m->nodes[i])) return 0;
    return 1;
}

float nz_prune_default_sparsity(const nz_model *m, int node) {
    const nz_node *n = &m->nodes[node];
    size_t numel = nz_param_numel(&n->params[0]);
    /* the kept fractions of Han et al.'s LeNet tables: first conv 66%, other convs 12%, large fc
     * 8%, the classifier 19-26% */
    if (n->op == NZ_OP_CONV2D) return is_first_weighted(m, node) ? 0.34f : 0.88f;
    if (is_last_weighted(m, node)) return 0.75f;
    return numel >= 100000 ? 0.92f : 0.91f;
}

void nz_prune_cfg_default(nz_prune_cfg *cfg, const nz_model *m) {
    (void)m;
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < NZ_MAX_PASS_NODES; i++) {
        cfg->sparsity[i] = -1.0f;
        cfg->quality[i] = -1.0f;
    }
    cfg->global_quality = 0.0f;
    cfg->schedule = NZ_PRUNE_ITERATIVE;
    cfg->rounds = 4;
    cfg->epochs_per_round = 4;
    nz_train_cfg_default(&cfg->train);
    cfg->train.lr = 0.01f; /* 1/10 of the original rate, as Han et al. retrain LeNets */
    cfg->remove_dead_neurons = 1;
}

size_t nz_prune_sorted(float *W, size_t n, const float *mag, float sparsity) {
    size_t kept = 0;
    if (sparsity <= 0.0f) {
        for (size_t i = 0; i < n; i++) kept += W[i] != 0.0f;
        return kept;
    }
    size_t cut = (size_t)((double)sparsity * (double)n + 0.5);
    if (cut >= n) cut = n;
    /* keep exactly n - cut weights: those strictly above the cut magnitude, then ties in order */
    float thr = cut > 0 ? mag[cut - 1] : -1.0f;
    size_t above = 0;
    for (size_t i = 0; i < n; i++) above += fabsf(W[i]) > thr;
    size_t ties_keep = (n - cut) > above ? (n - cut) - above : 0;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(W[i]);
        if (a > thr && a != 0.0f) {
            kept++;
        } else if (a == thr && a != 0.0f && ties_keep > 0) {
            ties_keep--;
            kept++;
        } else {
            W[i] = 0.0f;
        }
    }
    return kept;
}

size_t nz_prune_layer_to_sparsity(float *W, size_t n, float sparsity) {
    if (n == 0) return 0;
    if (sparsity <= 0.0f) return nz_prune_sorted(W, n, NULL, sparsity);
    float *mag = malloc(sizeof(float) * n);
    if (!mag) return 0;
    for (size_t i = 0; i < n; i++) mag[i] = fabsf(W[i]);
    nz_sort_floats(mag, n);
    size_t kept = nz_prune_sorted(W, n, mag, sparsity);
    free(mag);
    return kept;
}

/* Zeroes |w| < thr; returns the number kept. */
static size_t prune_layer_threshold(float *W, size_t n, float thr) {
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabsf(W[i]) < thr)
            W[i] = 0.0f;
        else
            kept += W[i] != 0.0f;
    }
    return kept;
}

static float layer_std(const float *W, size_t n) {
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s += W[i];
        s2 += (double)W[i] * W[i];
    }
    double mean = s / (double)n;
    double var = s2 / (double)n - mean * mean;
    return (float)sqrt(var > 0 ? var : 0);
}

/* Dense nodes feeding, through element-wise ops only (relu, dropout), another dense node. */
static int next_dense(const nz_model *m, int node) {
    int cur = node;
    for (int i = node + 1; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        if (n->inputs[0] != cur || n->n_inputs != 1) continue;
        if (n->op == NZ_OP_RELU || n->op == NZ_OP_DROPOUT) {
            cur = i;
            continue;
        }
        return n->op == NZ_OP_DENSE ? i : -1;
    }
    return -1;
}

/* Neurons left with no inputs or no outputs (Han et al.): a neuron whose incoming weights are
 * all pruned outputs the constant relu(b): fold that constant into the next layer's bias and
 * cut its outgoing weights; a neuron whose outgoing weights are all pruned is useless: cut its
 * incoming weights and bias. Exact: the network computes the same function. Returns the number
 * of neurons removed. */
static int remove_dead_neurons(nz_model *m, unsigned char *mask) {
    int removed = 0;
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *a = &m->nodes[i];
        if (a->op != NZ_OP_DENSE) continue;
        int j = next_dense(m, i);
        if (j < 0) continue;
        const nz_node *bnode = &m->nodes[j];
        /* only relu between them (dropout is the identity at inference) */
        int relu = 0;
        for (int k = i + 1; k < j; k++) relu |= m->nodes[k].op == NZ_OP_RELU;
        const int n_in = (int)(nz_param_numel(&a->params[0]) / (size_t)a->units), n_mid = a->units,
                  n_out = bnode->units;
        float *Wa = m->params + a->params[0].off, *ba = m->params + a->params[1].off;
        float *Wb = m->params + bnode->params[0].off, *bb = m->params + bnode->params[1].off;
        unsigned char *ma = mask + a->params[0].off, *mb = mask + bnode->params[0].off;
        for (int o = 0; o < n_mid; o++) {
            int has_in = 0, has_out = 0;
            for (int c = 0; c < n_in && !has_in; c++) has_in = Wa[(size_t)o * n_in + c] != 0.0f;
            for (int r = 0; r < n_out && !has_out; r++) has_out = Wb[(size_t)r * n_mid + o] != 0.0f;
            if (has_in && has_out) continue;
            if (!has_in && !has_out && ba[o] == 0.0f) continue; /* already gone */
            if (!has_in) {
                float v = relu ? (ba[o] > 0 ? ba[o] : 0.0f) : ba[o];
                for (int r = 0; r < n_out; r++) bb[r] += Wb[(size_t)r * n_mid + o] * v;
            }
            for (int c = 0; c < n_in; c++) {
                Wa[(size_t)o * n_in + c] = 0.0f;
                ma[(size_t)o * n_in + c] = 0;
            }
            for (int r = 0; r < n_out; r++) {
                Wb[(size_t)r * n_mid + o] = 0.0f;
                mb[(size_t)r * n_mid + o] = 0;
            }
            ba[o] = 0.0f;
            removed++;
        }
    }
    return removed;
}

nz_status nz_prune(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                   const nz_prune_cfg *cfg, const nz_train_hooks *hooks, nz_prune_result *res,
                   nz_error *err) {
    memset(res, 0, sizeof *res);
    double t0 = nz_now_s();
    nz_status st = nz_model_densify(m, err);
    if (st) return st;
    if (m->n_nodes > NZ_MAX_PASS_NODES)
        return nz_fail(err, NZ_ERR_ARG, "model has %d nodes; pruning handles %d", m->n_nodes,
                       NZ_MAX_PASS_NODES);
    unsigned char *mask = malloc(m->n_params ? m->n_params : 1);
    if (!mask) return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    memset(mask, 1, m->n_params);
    nz_eval_result ev;
    if (test) {
        if ((st = nz_evaluate(m, test, 256, &ev, err))) goto done;
        res->test_err_before = ev.error;
    }
    /* per layer: final target sparsity, or a threshold from quality x std of the original */
    float target[NZ_MAX_PASS_NODES], thr[NZ_MAX_PASS_NODES];
    for (int i = 0; i < m->n_nodes; i++) {
        target[i] = -1.0f;
        thr[i] = -1.0f;
        if (!nz_node_is_weighted(&m->nodes[i])) continue;
        const nz_param *w = &m->nodes[i].params[0];
        float q = cfg->quality[i] > 0 ? cfg->quality[i] : cfg->global_quality;
        if (cfg->sparsity[i] >= 0.0f)
            target[i] = cfg->sparsity[i];
        else if (q > 0.0f)
            thr[i] = q * layer_std(m->params + w->off, w->n);
        else
            target[i] = nz_prune_default_sparsity(m, i);
        if (target[i] > 0.999f) target[i] = 0.999f;
    }
    const int rounds = cfg->schedule == NZ_PRUNE_ITERATIVE && cfg->rounds > 1 ? cfg->rounds : 1;
    nz_mask_hold hold = {mask, hooks}; /* mask: 0 = pruned */
    nz_train_hooks th = nz_mask_hold_hooks(&hold);
    for (int r = 1; r <= rounds; r++) {
        const double frac = (double)r / rounds;
        for (int i = 0; i < m->n_nodes; i++) {
            if (!nz_node_is_weighted(&m->nodes[i])) continue;
            const nz_param *w = &m->nodes[i].params[0];
            float *W = m->params + w->off;
            if (target[i] >= 0.0f) {
                /* kept fraction falls geometrically: kept_r = kept^(r/R) */
                double kept = pow(1.0 - target[i], frac);
                nz_prune_layer_to_sparsity(W, w->n, (float)(1.0 - kept));
            } else {
                prune_layer_threshold(W, w->n, (float)(thr[i] * frac));
            }
            for (size_t j = 0; j < w->n; j++) mask[w->off + j] = W[j] != 0.0f;
        }
        if (cfg->remove_dead_neurons) remove_dead_neurons(m, mask);
        if (cfg->epochs_per_round > 0) {
            nz_train_cfg tc = cfg->train;
            tc.epochs = cfg->epochs_per_round;
            tc.seed = cfg->train.seed + (uint64_t)r * 7919u;
            tc.eval_every = r == rounds ? 1 : 0;
            nz_train_result tr;
            if ((st = nz_train(m, train, r == rounds ? test : NULL, &tc, &th, &tr, err))) goto done;
        }
    }
    if (cfg->remove_dead_neurons) remove_dead_neurons(m, mask);
    res->n_layers = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        if (!nz_node_is_weighted(&m->nodes[i])) continue;
        const nz_param *w = &m->nodes[i].params[0];
        size_t kept = 0;
        for (size_t j = 0; j < w->n; j++) kept += m->params[w->off + j] != 0.0f;
        res->node[res->n_layers] = i;
        res->total[res->n_layers] = w->n;
        res->kept[res->n_layers] = kept;
        res->n_layers++;
    }
    if (test) {
        if ((st = nz_evaluate(m, test, 256, &ev, err))) goto done;
        res->test_err_after = ev.error;
    }
    res->seconds = nz_now_s() - t0;
done:
    free(mask);
    return st;
}
