/* Sensitivity analysis (Han et al. 2015, "Learning both Weights and Connections", Fig. 5) and
 * the per-layer sparsity/width allocation for a target size built on it.
 *
 * nz_sensitivity prunes (or quantizes) one layer at a time of a densified copy of the model,
 * evaluates, and puts the layer's weights back: one copy of the model and one layer's worth of
 * backup, whatever the grid. A prune that removes no weight (a sparsity below the layer's
 * existing one) reuses the baseline instead of evaluating again: the model is then the same.
 *
 * nz_sensitivity_allocate turns the curves into per-layer settings for a target compression
 * ratio; the size and accuracy models and the greedy are documented in compress.h. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compress/mask.h"
#include "core/clock.h"
#include "nnzip/compress.h"
#include "nnzip/format.h"

/* ---------------------------------------------------------------- configuration */

void nz_sensitivity_cfg_default(nz_sensitivity_cfg *cfg) {
    memset(cfg, 0, sizeof *cfg);
    static const float sp[] = {0.0f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 0.95f};
    cfg->n_sparsity = (int)(sizeof sp / sizeof *sp);
    memcpy(cfg->sparsity, sp, sizeof sp);
    cfg->n_bits = 0;
    cfg->init = NZ_KMEANS_LINEAR;
    cfg->seed = 1;
    cfg->batch = 256;
}

void nz_sensitivity_result_free(nz_sensitivity_result *res) {
    if (!res) return;
    free(res->prune_err);
    free(res->quant_err);
    res->prune_err = NULL;
    res->quant_err = NULL;
}

static nz_status check_cfg(const nz_sensitivity_cfg *cfg, nz_error *err) {
    if (cfg->n_sparsity < 1 || cfg->n_sparsity > NZ_SENS_MAX_POINTS)
        return nz_fail(err, NZ_ERR_ARG, "sensitivity: %d sparsities (1..%d)", cfg->n_sparsity,
                       NZ_SENS_MAX_POINTS);
    for (int k = 0; k < cfg->n_sparsity; k++) {
        float s = cfg->sparsity[k];
        if (!(s >= 0.0f && s < 1.0f))
            return nz_fail(err, NZ_ERR_ARG, "sensitivity: sparsity %g is outside [0, 1)", (double)s);
        if (k > 0 && !(s > cfg->sparsity[k - 1]))
            return nz_fail(err, NZ_ERR_ARG, "sensitivity: sparsities must increase (%g after %g)",
                           (double)s, (double)cfg->sparsity[k - 1]);
    }
    if (cfg->n_bits < 0 || cfg->n_bits > NZ_SENS_MAX_POINTS)
        return nz_fail(err, NZ_ERR_ARG, "sensitivity: %d widths (0..%d)", cfg->n_bits,
                       NZ_SENS_MAX_POINTS);
    for (int k = 0; k < cfg->n_bits; k++)
        if (cfg->bits[k] < 1 || cfg->bits[k] > 8)
            return nz_fail(err, NZ_ERR_ARG, "sensitivity: %d bits (1..8 supported)", cfg->bits[k]);
    return NZ_OK;
}

/* ---------------------------------------------------------------- one-layer edits */

/* Replaces the nonzero weights of W[n] by their k-means centroid (2^bits - 1 shared values, as
 * nz_quantize before fine-tuning). *changed = whether any weight moved. */
static nz_status quantize_layer(float *W, size_t n, int bits, nz_kmeans_init init, nz_rng *rng,
                                int *changed, nz_error *err) {
    *changed = 0;
    size_t nz = 0;
    for (size_t i = 0; i < n; i++) nz += W[i] != 0.0f;
    if (nz == 0) return NZ_OK;
    int k = (1 << bits) - 1;
    if ((size_t)k > nz) k = (int)nz;
    float *vals = malloc(sizeof(float) * nz), *cent = malloc(sizeof(float) * (size_t)k);
    int32_t *asg = malloc(sizeof(int32_t) * nz);
    nz_status st = NZ_OK;
    if (!vals || !cent || !asg) {
        st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t t = 0;
    for (size_t i = 0; i < n; i++)
        if (W[i] != 0.0f) vals[t++] = W[i];
    if ((st = nz_kmeans_1d(vals, nz, k, init, 300, rng, cent, asg, err))) goto done;
    t = 0;
    for (size_t i = 0; i < n; i++) {
        if (W[i] == 0.0f) continue;
        float v = cent[asg[t++]];
        if (v != W[i]) *changed = 1;
        W[i] = v;
    }
done:
    free(vals);
    free(cent);
    free(asg);
    return st;
}

static nz_status eval_err(const nz_model *m, const nz_dataset *data, int batch, float *out,
                          nz_error *err) {
    nz_eval_result ev;
    nz_status st = nz_evaluate(m, data, batch, &ev, err);
    if (!st) *out = ev.error;
    return st;
}

/* ---------------------------------------------------------------- the sweep */

nz_status nz_sensitivity(const nz_model *m, const nz_dataset *data, const nz_sensitivity_cfg *cfg,
                         nz_sensitivity_result *res, nz_error *err) {
    memset(res, 0, sizeof *res);
    const double t0 = nz_now_s();
    nz_status st = check_cfg(cfg, err);
    if (st) return st;
    if (m->n_nodes > NZ_MAX_PASS_NODES)
        return nz_fail(err, NZ_ERR_ARG, "model has %d nodes; sensitivity analysis handles %d",
                       m->n_nodes, NZ_MAX_PASS_NODES);
    if (!data || data->n <= 0)
        return nz_fail(err, NZ_ERR_ARG, "sensitivity: no images to evaluate");
    int any_only = 0;
    for (int i = 0; i < NZ_MAX_PASS_NODES; i++) any_only |= cfg->only[i] != 0;
    for (int i = 0; i < NZ_MAX_PASS_NODES && any_only; i++)
        if (cfg->only[i] && (i >= m->n_nodes || !nz_node_is_weighted(&m->nodes[i])))
            return nz_fail(err, NZ_ERR_ARG, "sensitivity: node %d is not a weighted layer", i);
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        if (!nz_node_is_weighted(n) || (any_only && !cfg->only[i])) continue;
        int l = res->n_layers++;
        res->node[l] = i;
        snprintf(res->name[l], NZ_NAME_MAX, "%s", n->name);
        res->conv[l] = n->op == NZ_OP_CONV2D;
        res->weights[l] = nz_param_numel(&n->params[0]);
    }
    if (res->n_layers == 0) return nz_fail(err, NZ_ERR_ARG, "sensitivity: no weighted layers");
    res->n_sparsity = cfg->n_sparsity;
    res->n_bits = cfg->n_bits;
    memcpy(res->sparsity, cfg->sparsity, sizeof(float) * (size_t)cfg->n_sparsity);
    memcpy(res->bits, cfg->bits, sizeof(int) * (size_t)cfg->n_bits);
    res->n_images = data->n;
    res->prune_err = calloc((size_t)res->n_layers * (size_t)res->n_sparsity, sizeof(float));
    if (cfg->n_bits) res->quant_err = calloc((size_t)res->n_layers * (size_t)cfg->n_bits, sizeof(float));
    if (!res->prune_err || (cfg->n_bits && !res->quant_err)) {
        nz_sensitivity_result_free(res);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }

    nz_model w;
    if ((st = nz_model_copy(&w, m, err))) return st;
    float *backup = NULL;
    if ((st = nz_model_densify(&w, err))) goto done;
    size_t max_n = 0;
    for (int l = 0; l < res->n_layers; l++)
        if (w.nodes[res->node[l]].params[0].n > max_n) max_n = w.nodes[res->node[l]].params[0].n;
    backup = malloc(sizeof(float) * (max_n ? max_n : 1));
    if (!backup) {
        st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        goto done;
    }
    const int batch = cfg->batch > 0 ? cfg->batch : 256;
    if ((st = eval_err(&w, data, batch, &res->baseline_err, err))) goto done;
    res->evaluations = 1;
    const int total = res->n_layers * (cfg->n_sparsity + cfg->n_bits);
    int done_n = 0;
    nz_rng rng;
    nz_rng_seed(&rng, cfg->seed ^ 0x5E45171Eull);
    for (int l = 0; l < res->n_layers && !st; l++) {
        const nz_param *p = &w.nodes[res->node[l]].params[0];
        float *W = w.params + p->off;
        const size_t n = p->n;
        memcpy(backup, W, sizeof(float) * n);
        size_t nz0 = 0;
        for (size_t i = 0; i < n; i++) nz0 += W[i] != 0.0f;
        for (int k = 0; k < cfg->n_sparsity && !st; k++) {
            if (cfg->stop && *cfg->stop) {
                st = nz_fail(err, NZ_ERR_INTERRUPTED, "interrupted");
                break;
            }
            memcpy(W, backup, sizeof(float) * n);
            /* pruning only zeroes weights: the same count kept is the same layer */
            size_t kept = nz_prune_layer_to_sparsity(W, n, cfg->sparsity[k]);
            float e = res->baseline_err;
            if (kept != nz0) {
                st = eval_err(&w, data, batch, &e, err);
                res->evaluations++;
            }
            res->prune_err[(size_t)l * (size_t)res->n_sparsity + (size_t)k] = e;
            if (cfg->progress) cfg->progress(++done_n, total, res->name[l], cfg->progress_user);
        }
        for (int k = 0; k < cfg->n_bits && !st; k++) {
            if (cfg->stop && *cfg->stop) {
                st = nz_fail(err, NZ_ERR_INTERRUPTED, "interrupted");
                break;
            }
            memcpy(W, backup, sizeof(float) * n);
            int changed = 0;
            float e = res->baseline_err;
            st = quantize_layer(W, n, cfg->bits[k], cfg->init, &rng, &changed, err);
            if (!st && changed) {
                st = eval_err(&w, data, batch, &e, err);
                res->evaluations++;
            }
            res->quant_err[(size_t)l * (size_t)res->n_bits + (size_t)k] = e;
            if (cfg->progress) cfg->progress(++done_n, total, res->name[l], cfg->progress_user);
        }
        memcpy(W, backup, sizeof(float) * n);
    }
done:
    free(backup);
    nz_model_free(&w);
    res->seconds = nz_now_s() - t0;
    return st;
}

/* ---------------------------------------------------------------- SVG plot */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int k = vsnprintf(b->buf ? b->buf + b->len : NULL, b->buf ? room : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->buf && (size_t)k < room) {
            b->len += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= (size_t)k) cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->oom = 1;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
}

/* text with the five XML special characters escaped (control characters dropped) */
static void sb_xml(strbuf *b, const char *s) {
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '&': sb_printf(b, "&amp;"); break;
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        case '\'': sb_printf(b, "&apos;"); break;
        default:
            if (c >= 0x20 || c == '\t') sb_printf(b, "%c", c);
        }
    }
}

/* A "nice" tick step (1, 2 or 5 x 10^k) giving about `want` intervals over span. */
static double nice_step(double span, int want) {
    double raw = span / want, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f <= 1.0 ? 1.0 : f <= 2.0 ? 2.0 : f <= 5.0 ? 5.0 : 10.0) * mag;
}

/* Writes data to path through a temporary file in the same directory and a rename. */
static nz_status write_atomic(const char *path, const char *data, size_t len, nz_error *err) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof ".tmp.XXXXXX");
    if (!tmp) return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    int fd = mkstemp(tmp);
    if (fd < 0) {
        nz_status st = nz_fail(err, NZ_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    (void)fchmod(fd, 0644); /* mkstemp makes 0600; a plot is an ordinary shareable output */
    size_t off = 0;
    int e = 0;
    while (off < len) {
        ssize_t k = write(fd, data + off, len - off);
        if (k < 0) {
            if (errno == EINTR) continue;
            e = errno;
            break;
        }
        off += (size_t)k;
    }
    if (!e && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (!e && rename(tmp, path) != 0) e = errno;
    if (e) {
        unlink(tmp);
        free(tmp);
        return nz_fail(err, NZ_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    free(tmp);
    return NZ_OK;
}

nz_status nz_sensitivity_svg(const nz_sensitivity_result *r, const char *path, const char *title,
                             nz_error *err) {
    if (!r || !path || !*path || r->n_layers <= 0 || r->n_sparsity <= 0 || !r->prune_err)
        return nz_fail(err, NZ_ERR_ARG, "sensitivity plot: nothing to plot or no path");
    /* colours: Tableau 10, then repeating with other markers */
    static const char *colour[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                   "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
    const int n_col = (int)(sizeof colour / sizeof *colour);
    const int legend_rows = r->n_layers + 1;
    const double W = 760, left = 70, right = 170, top = 56, bottom = 62;
    const double H = fmax(460.0, top + bottom + 18.0 * legend_rows + 40.0);
    const double pw = W - left - right, ph = H - top - bottom;
    /* x: 0 .. the largest sparsity, rounded up to a multiple of 10 % */
    double xmax = 100.0 * r->sparsity[r->n_sparsity - 1];
    xmax = fmax(10.0, ceil(xmax / 10.0 - 1e-9) * 10.0);
    if (xmax > 100.0) xmax = 100.0;
    /* y: accuracy; from a nice value under the lowest point to one over the highest */
    double lo = 100.0 - r->baseline_err, hi = lo;
    for (size_t i = 0; i < (size_t)r->n_layers * (size_t)r->n_sparsity; i++) {
        double a = 100.0 - r->prune_err[i];
        if (a < lo) lo = a;
        if (a > hi) hi = a;
    }
    double span = hi - lo < 1.0 ? 1.0 : hi - lo;
    double ystep = nice_step(span, 6);
    double ymin = floor(lo / ystep) * ystep, ymax = ceil(hi / ystep) * ystep;
    if (ymax - ymin < ystep) ymax = ymin + ystep;
    if (ymin < 0) ymin = 0;
    if (ymax > 100) ymax = 100;
    if (ymax <= ymin) ymin = ymax - ystep;
#define PX(x) (left + (x) / xmax * pw)
#define PY(y) (top + (ymax - (y)) / (ymax - ymin) * ph)
    strbuf b = {0};
    sb_printf(&b,
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
              "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" "
              "font-size=\"12\">\n",
              W, H, W, H);
    sb_printf(&b, "<title>");
    sb_xml(&b, title ? title : "sensitivity");
    sb_printf(&b, "</title>\n<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n",
              W, H);
    sb_printf(&b, "<text x=\"%.1f\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" "
                  "font-weight=\"bold\">", left + pw / 2);
    sb_xml(&b, title ? title : "Sensitivity");
    sb_printf(&b, "</text>\n<text x=\"%.1f\" y=\"42\" text-anchor=\"middle\" fill=\"#555555\">"
                  "each layer pruned alone, without retraining; %d images</text>\n",
              left + pw / 2, r->n_images);
    /* grid and ticks */
    sb_printf(&b, "<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n");
    for (double x = 0; x <= xmax + 1e-9; x += 10.0)
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", PX(x), top, PX(x),
                  top + ph);
    for (double y = ymin; y <= ymax + 1e-9 * ystep; y += ystep)
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", left, PY(y),
                  left + pw, PY(y));
    sb_printf(&b, "</g>\n<g fill=\"#333333\">\n");
    for (double x = 0; x <= xmax + 1e-9; x += 10.0)
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", PX(x),
                  top + ph + 16, x);
    const int ydec = ystep >= 1.0 ? 0 : ystep >= 0.1 ? 1 : 2;
    for (double y = ymin; y <= ymax + 1e-9 * ystep; y += ystep)
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.*f</text>\n", left - 6,
                  PY(y) + 4, ydec, y);
    sb_printf(&b, "</g>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                  "stroke=\"#333333\"/>\n",
              left, top, pw, ph);
    sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">sparsity (%% of the layer's "
                  "weights removed)</text>\n",
              left + pw / 2, H - 18);
    sb_printf(&b, "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">"
                  "test accuracy (%%)</text>\n",
              top + ph / 2, top + ph / 2);
    /* baseline */
    const double base = 100.0 - r->baseline_err;
    sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#777777\" "
                  "stroke-dasharray=\"5 4\"/>\n",
              left, PY(base), left + pw, PY(base));
    /* curves */
    for (int l = 0; l < r->n_layers; l++) {
        const char *c = colour[l % n_col];
        sb_printf(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
        for (int k = 0; k < r->n_sparsity; k++)
            sb_printf(&b, "%s%.1f,%.1f", k ? " " : "", PX(100.0 * r->sparsity[k]),
                      PY(100.0 - nz_sens_prune_err(r, l, k)));
        sb_printf(&b, "\"/>\n<g fill=\"%s\">\n", c);
        for (int k = 0; k < r->n_sparsity; k++) {
            double x = PX(100.0 * r->sparsity[k]), y = PY(100.0 - nz_sens_prune_err(r, l, k));
            if ((l / n_col) % 2 == 0)
                sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\"/>\n", x, y);
            else
                sb_printf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\"/>\n", x - 3.5,
                          y - 3.5);
        }
        sb_printf(&b, "</g>\n");
    }
    /* legend */
    const double lx = left + pw + 16;
    sb_printf(&b, "<g>\n");
    for (int l = 0; l < r->n_layers; l++) {
        double y = top + 8 + 18.0 * l;
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                      "stroke-width=\"2\"/>\n",
                  lx, y, lx + 22, y, colour[l % n_col]);
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\">", lx + 28, y + 4);
        sb_xml(&b, r->name[l]);
        sb_printf(&b, "</text>\n");
    }
    double y = top + 8 + 18.0 * r->n_layers;
    sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#777777\" "
                  "stroke-dasharray=\"5 4\"/>\n<text x=\"%.1f\" y=\"%.1f\">baseline %.2f%%</text>\n",
              lx, y, lx + 22, y, lx + 28, y + 4, base);
    sb_printf(&b, "</g>\n</svg>\n");
#undef PX
#undef PY
    if (b.oom) {
        free(b.buf);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    nz_status st = write_atomic(path, b.buf, b.len, err);
    free(b.buf);
    return st;
}

/* ---------------------------------------------------------------- size model */

void nz_alloc_cfg_default(nz_alloc_cfg *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->quantized = 1;
    for (int i = 0; i < NZ_MAX_PASS_NODES; i++) cfg->fixed_bits[i] = -1;
    cfg->fc_bits_min = 3;
    cfg->fc_bits_max = 8;
    cfg->conv_bits_min = 4;
    cfg->conv_bits_max = 8;
    cfg->default_fc_bits = 5;
    cfg->default_conv_bits = 8;
    cfg->max_sparsity = 0.99f;
    cfg->step = 0.005f;
    cfg->init = NZ_KMEANS_LINEAR;
}

#define KMEANS_FIT 16384

/* The sparse form of W (already pruned) with codes from k-means at `bits` (0: f32 values). */
static nz_status build_sparse(const float *W, int rows, int cols, int bits, nz_kmeans_init init,
                              nz_sparse **out, nz_error *err) {
    *out = NULL;
    const size_t n = (size_t)rows * (size_t)cols;
    size_t nz = 0;
    for (size_t i = 0; i < n; i++) nz += W[i] != 0.0f;
    nz_sparse *s = calloc(1, sizeof *s);
    if (!s) return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    s->rows = rows;
    s->cols = cols;
    s->row_ptr = calloc((size_t)rows + 1, sizeof(uint32_t));
    s->col = malloc(sizeof(uint32_t) * (nz ? nz : 1));
    float *vals = NULL, *cent = NULL;
    int32_t *asg = NULL;
    int code_of[256];
    nz_status st = NZ_OK;
    if (!s->row_ptr || !s->col) goto oom;
    if (bits > 0) {
        int k = (1 << bits) - 1;
        if ((size_t)k > nz) k = nz > 0 ? (int)nz : 1;
        vals = malloc(sizeof(float) * (nz ? nz : 1));
        asg = malloc(sizeof(int32_t) * (nz ? nz : 1));
        cent = malloc(sizeof(float) * (size_t)k);
        s->codebook = malloc(sizeof(float) * 257);
        s->code = malloc(nz ? nz : 1);
        if (!vals || !asg || !cent || !s->codebook || !s->code) goto oom;
        /* centroids from at most KMEANS_FIT survivors (every stride-th in position order), then
         * every survivor to its nearest centroid: the code histogram the streams are sized by,
         * at a fraction of the cost of sorting every survivor for every point of the table */
        const size_t stride = (nz + KMEANS_FIT - 1) / KMEANS_FIT > 1 ? (nz + KMEANS_FIT - 1) / KMEANS_FIT : 1;
        size_t t = 0, nsub = 0;
        for (size_t i = 0; i < n; i++)
            if (W[i] != 0.0f && t++ % stride == 0) vals[nsub++] = W[i];
        nz_rng rng;
        nz_rng_seed(&rng, 0xC0DEB00Cull);
        if (nz > 0) {
            if ((size_t)k > nsub) k = (int)nsub;
            if ((st = nz_kmeans_1d(vals, nsub, k, init, 300, &rng, cent, NULL, err))) goto fail;
            /* centroids come sorted: the nearest is found between midpoints */
            t = 0;
            for (size_t i = 0; i < n; i++) {
                if (W[i] == 0.0f) continue;
                int lo = 0, hi = k - 1;
                while (lo < hi) {
                    int mid = (lo + hi) / 2;
                    if ((double)W[i] < 0.5 * ((double)cent[mid] + cent[mid + 1]))
                        hi = mid;
                    else
                        lo = mid + 1;
                }
                asg[t++] = lo;
            }
        }
        /* codebook[0] = 0; a centroid at exactly 0 joins the pruned (as nz_quantize does) */
        int ncb = 1;
        s->codebook[0] = 0.0f;
        for (int j = 0; j < k; j++) {
            code_of[j] = 0;
            if (nz == 0 || cent[j] == 0.0f) continue;
            int found = 0;
            for (int q = 1; q < ncb && !found; q++)
                if (s->codebook[q] == cent[j]) found = code_of[j] = q;
            if (!found) {
                s->codebook[ncb] = cent[j];
                code_of[j] = ncb++;
            }
        }
        if (ncb < 2) s->codebook[ncb++] = 1.0f; /* an all-zero layer still needs a codebook */
        s->n_codebook = ncb;
        s->code_bits = bits;
        while ((1 << s->code_bits) < ncb) s->code_bits++;
        s->huffman = 1;
        s->codebook_f16 = 1;
    } else {
        s->val = malloc(sizeof(float) * (nz ? nz : 1));
        if (!s->val) goto oom;
    }
    uint32_t j = 0;
    size_t t = 0;
    for (int r = 0; r < rows; r++) {
        s->row_ptr[r] = j;
        const float *w = W + (size_t)r * cols;
        for (int c = 0; c < cols; c++) {
            if (w[c] == 0.0f) continue;
            if (bits > 0) {
                int code = code_of[asg[t++]];
                if (!code) continue;
                s->code[j] = (uint8_t)code;
            } else {
                s->val[j] = w[c];
            }
            s->col[j++] = (uint32_t)c;
        }
    }
    s->row_ptr[rows] = j;
    s->nnz = j;
    s->index_bits = 8;
    free(vals);
    free(asg);
    free(cent);
    *out = s;
    return NZ_OK;
oom:
    st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
fail:
    free(vals);
    free(asg);
    free(cent);
    nz_sparse_free(s);
    return st;
}

/* Encoded payload bytes (+ the TENSOR section's own header, as nz_param_stored_bytes) at the
 * smallest of index widths lo..hi; *best_w receives that width. */
static nz_status sparse_bytes(nz_sparse *s, int lo, int hi, size_t *bytes, int *best_w,
                              nz_error *err) {
    size_t best = SIZE_MAX;
    for (int b = lo; b <= hi; b++) {
        s->index_bits = b;
        uint8_t *buf;
        size_t len;
        nz_status st = nz_sparse_encode(s, &buf, &len, err);
        if (st) return st;
        free(buf);
        if (len < best) {
            best = len;
            *best_w = b;
        }
    }
    *bytes = 16 + best;
    return NZ_OK;
}

/* out = W pruned to `sparsity` (one sort of the magnitudes serves every sparsity) */
static void prune_sorted(float *out, const float *W, size_t n, const float *mag, float sparsity) {
    memcpy(out, W, sizeof(float) * n);
    if (n) nz_prune_sorted(out, n, mag, sparsity);
}

/* Stored bytes of W [rows, cols] at every (width k, sparsity g): out[k * n_grid + g]. Width 0:
 * f32 values with 8-bit packed indices (`nnzip prune`'s storage). The index width is searched
 * over 2..10 at the first width of a sparsity and over that best width +-1 for the others (the
 * best width depends on the positions, hardly on the codes). */
static nz_status layer_size_table(const float *W, int rows, int cols, const float *grid, int n_grid,
                                  const int *widths, int n_w, nz_kmeans_init init, double *out,
                                  nz_error *err) {
    const size_t n = (size_t)rows * (size_t)cols;
    float *mag = malloc(sizeof(float) * (n ? n : 1)), *pw = malloc(sizeof(float) * (n ? n : 1));
    if (!mag || !pw) {
        free(mag);
        free(pw);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) mag[i] = fabsf(W[i]);
    nz_sort_floats(mag, n);
    nz_status st = NZ_OK;
    for (int g = 0; g < n_grid && !st; g++) {
        prune_sorted(pw, W, n, mag, grid[g]);
        int wbest = 8;
        for (int k = 0; k < n_w && !st; k++) {
            nz_sparse *sp;
            if ((st = build_sparse(pw, rows, cols, widths[k], init, &sp, err))) break;
            size_t by = 0;
            int lo = 8, hi = 8;
            if (widths[k] > 0) {
                lo = k == 0 ? 2 : (wbest > 2 ? wbest - 1 : 2);
                hi = k == 0 ? 10 : (wbest < 10 ? wbest + 1 : 10);
            }
            st = sparse_bytes(sp, lo, hi, &by, &wbest, err);
            nz_sparse_free(sp);
            out[(size_t)k * (size_t)n_grid + (size_t)g] = (double)by;
        }
    }
    free(mag);
    free(pw);
    return st;
}

nz_status nz_estimate_layer_bytes(const float *W, int rows, int cols, float sparsity, int bits,
                                  nz_kmeans_init init, size_t *bytes, nz_error *err) {
    if (rows <= 0 || cols <= 0 || bits < 0 || bits > 8 || !(sparsity >= 0.0f && sparsity < 1.0f))
        return nz_fail(err, NZ_ERR_ARG, "size estimate: shape %dx%d, %d bits, sparsity %g", rows,
                       cols, bits, (double)sparsity);
    double b = 0;
    nz_status st = layer_size_table(W, rows, cols, &sparsity, 1, &bits, 1, init, &b, err);
    if (!st) *bytes = (size_t)b;
    return st;
}

/* ---------------------------------------------------------------- allocation */

/* One layer's tables for the greedy. */
typedef struct {
    int node, rows, cols, conv;
    int n_grid;           /* grid: sparsity 0 first, then the measured points up to the cap */
    float *grid;          /* [n_grid] */
    double *perr;         /* [n_grid] error increase (pp), non-decreasing */
    int n_w;              /* candidate widths, widest first (one entry 0 when not quantized) */
    int w[9];
    double qerr[9];       /* error increase (pp) of each width, non-decreasing along w[] */
    double *bytes;        /* [n_w x n_grid] */
    int st, wi, max_st;   /* state: sparsity step, width index */
} alloc_layer;

static double interp(const float *x, const double *y, int n, double at) {
    if (at <= x[0]) return y[0];
    for (int i = 1; i < n; i++)
        if (at <= x[i]) {
            double f = (at - x[i - 1]) / ((double)x[i] - x[i - 1]);
            return y[i - 1] + f * (y[i] - y[i - 1]);
        }
    return y[n - 1];
}

static double layer_sparsity(const alloc_layer *L, const nz_alloc_cfg *cfg, int st) {
    double s = (double)st * cfg->step, cap = L->grid[L->n_grid - 1];
    return s < cap ? s : cap;
}
static double layer_bytes(const alloc_layer *L, const nz_alloc_cfg *cfg, int st, int wi) {
    return interp(L->grid, L->bytes + (size_t)wi * L->n_grid, L->n_grid, layer_sparsity(L, cfg, st));
}
static double layer_perr(const alloc_layer *L, const nz_alloc_cfg *cfg, int st) {
    return interp(L->grid, L->perr, L->n_grid, layer_sparsity(L, cfg, st));
}

/* The quantization error increase at width b from the sweep: running maximum from the widest
 * measured width down, linear between measured widths, the widest measured value above it. */
static double quant_cost(const nz_sensitivity_result *r, int l, int b) {
    double env[9] = {0};
    int have[9] = {0};
    for (int k = 0; k < r->n_bits; k++) {
        int w = r->bits[k];
        double e = (double)nz_sens_quant_err(r, l, k) - r->baseline_err;
        if (!have[w] || e > env[w]) env[w] = e;
        have[w] = 1;
    }
    double run = 0;
    int seen = 0;
    for (int w = 8; w >= 1; w--)
        if (have[w]) {
            if (!seen || env[w] > run) run = env[w];
            if (run < 0) run = 0;
            env[w] = run;
            seen = 1;
        }
    if (have[b]) return env[b];
    int up = 0, dn = 0;
    for (int w = b + 1; w <= 8 && !up; w++)
        if (have[w]) up = w;
    for (int w = b - 1; w >= 1 && !dn; w--)
        if (have[w]) dn = w;
    if (!up && !dn) return 0;
    if (!dn) return env[up];
    if (!up) return env[dn];
    return env[dn] + (env[up] - env[dn]) * (double)(b - dn) / (double)(up - dn);
}

static void free_layers(alloc_layer *L, int n) {
    for (int i = 0; i < n; i++) {
        free(L[i].grid);
        free(L[i].perr);
        free(L[i].bytes);
    }
    free(L);
}

/* File bytes besides the allocated weight tensors: the other tensors as stored, the header and
 * section table, and the META and GRAPH sections (zlib-compressed; an estimate from node count). */
static size_t fixed_bytes(const nz_model *m, int quantized) {
    size_t bytes = NZF_HEADER_SIZE, sections = 2;
    for (int i = 0; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        for (int k = 0; k < n->n_params; k++) {
            sections++;
            if (k == 0 && nz_node_is_weighted(n)) continue;
            const nz_param *p = &n->params[k];
            int width = quantized && nz_node_is_weighted(n) && k == 1 ? 2 : 4;
            bytes += 16 + nz_param_numel(p) * (size_t)width;
        }
    }
    return bytes + sections * NZF_ENTRY_SIZE + 640 + 24 * (size_t)m->n_nodes;
}

nz_status nz_sensitivity_allocate(const nz_model *m, const nz_sensitivity_result *sens,
                                  const nz_alloc_cfg *cfg, nz_alloc_result *res, nz_error *err) {
    memset(res, 0, sizeof *res);
    if (!(cfg->target_ratio > 1.0f) || !(cfg->step > 0.0f && cfg->step <= 0.5f) ||
        !(cfg->max_sparsity >= 0.0f && cfg->max_sparsity < 1.0f))
        return nz_fail(err, NZ_ERR_ARG, "allocation: target ratio %g (> 1), step %g, max sparsity %g",
                       (double)cfg->target_ratio, (double)cfg->step, (double)cfg->max_sparsity);
    if (cfg->quantized && (cfg->fc_bits_min < 1 || cfg->fc_bits_max > 8 ||
                           cfg->fc_bits_min > cfg->fc_bits_max || cfg->conv_bits_min < 1 ||
                           cfg->conv_bits_max > 8 || cfg->conv_bits_min > cfg->conv_bits_max ||
                           cfg->default_fc_bits < 1 || cfg->default_fc_bits > 8 ||
                           cfg->default_conv_bits < 1 || cfg->default_conv_bits > 8))
        return nz_fail(err, NZ_ERR_ARG, "allocation: width ranges must lie in 1..8");
    if (m->n_nodes > NZ_MAX_PASS_NODES)
        return nz_fail(err, NZ_ERR_ARG, "model has %d nodes; allocation handles %d", m->n_nodes,
                       NZ_MAX_PASS_NODES);
    /* every weighted layer, in node order, must have a curve */
    int L_n = 0, sl[NZ_MAX_PASS_NODES];
    for (int i = 1; i < m->n_nodes; i++) {
        if (!nz_node_is_weighted(&m->nodes[i])) continue;
        int found = -1;
        for (int l = 0; l < sens->n_layers; l++)
            if (sens->node[l] == i) found = l;
        if (found < 0)
            return nz_fail(err, NZ_ERR_ARG, "allocation: no sensitivity curve for layer '%s'",
                           m->nodes[i].name);
        if (sens->weights[found] != nz_param_numel(&m->nodes[i].params[0]))
            return nz_fail(err, NZ_ERR_ARG, "allocation: layer '%s' differs from the analysed one",
                           m->nodes[i].name);
        sl[L_n++] = found;
    }
    if (L_n == 0) return nz_fail(err, NZ_ERR_ARG, "allocation: no weighted layers");
    if (sens->n_sparsity < 1 || !sens->prune_err)
        return nz_fail(err, NZ_ERR_ARG, "allocation: empty sensitivity result");

    nz_model w;
    nz_status st = nz_model_copy(&w, m, err);
    if (st) return st;
    alloc_layer *L = calloc((size_t)L_n, sizeof *L);
    if (!L) {
        nz_model_free(&w);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    if ((st = nz_model_densify(&w, err))) goto done;
    const double cap = cfg->max_sparsity;
    for (int l = 0, i = 1; i < w.n_nodes; i++) {
        const nz_node *n = &w.nodes[i];
        if (!nz_node_is_weighted(n)) continue;
        alloc_layer *A = &L[l];
        const int s = sl[l++];
        A->node = i;
        A->conv = n->op == NZ_OP_CONV2D;
        A->rows = n->params[0].dims[0];
        A->cols = (int)(nz_param_numel(&n->params[0]) / (size_t)A->rows);
        /* grid: 0 (the baseline), then the measured sparsities up to the cap */
        A->grid = malloc(sizeof(float) * ((size_t)sens->n_sparsity + 2));
        A->perr = malloc(sizeof(double) * ((size_t)sens->n_sparsity + 2));
        if (!A->grid || !A->perr) {
            st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
            goto done;
        }
        A->grid[0] = 0.0f;
        A->perr[0] = 0.0;
        A->n_grid = 1;
        double run = 0;
        for (int k = 0; k < sens->n_sparsity; k++) {
            double sp = sens->sparsity[k];
            double e = (double)nz_sens_prune_err(sens, s, k) - sens->baseline_err;
            if (e > run) run = e;
            if (sp > cap + 1e-7) {
                /* the cap between two measured points: interpolate there, then stop */
                double prev_s = A->grid[A->n_grid - 1], prev_e = A->perr[A->n_grid - 1];
                if (cap > prev_s + 1e-7) {
                    double f = (cap - prev_s) / (sp - prev_s);
                    A->grid[A->n_grid] = (float)cap;
                    A->perr[A->n_grid++] = prev_e + f * (run - prev_e);
                }
                break;
            }
            if (sp <= 0.0) {
                A->perr[0] = run;
                continue;
            }
            A->grid[A->n_grid] = (float)sp;
            A->perr[A->n_grid++] = run;
        }
        /* candidate widths, widest first */
        if (!cfg->quantized) {
            A->n_w = 1;
            A->w[0] = 0;
        } else if (i < NZ_MAX_PASS_NODES && cfg->fixed_bits[i] > 0) {
            if (cfg->fixed_bits[i] > 8) {
                st = nz_fail(err, NZ_ERR_ARG, "allocation: layer '%s': %d bits (1..8)", n->name,
                             cfg->fixed_bits[i]);
                goto done;
            }
            A->n_w = 1;
            A->w[0] = cfg->fixed_bits[i];
        } else if (sens->n_bits > 0 && sens->quant_err) {
            int lo = A->conv ? cfg->conv_bits_min : cfg->fc_bits_min;
            int hi = A->conv ? cfg->conv_bits_max : cfg->fc_bits_max;
            int mmin = 8;
            for (int k = 0; k < sens->n_bits; k++)
                if (sens->bits[k] < mmin) mmin = sens->bits[k];
            if (lo < mmin) lo = mmin;
            if (hi < lo) hi = lo;
            A->n_w = 0;
            for (int b = hi; b >= lo; b--) A->w[A->n_w++] = b;
        } else {
            A->n_w = 1;
            A->w[0] = A->conv ? cfg->default_conv_bits : cfg->default_fc_bits;
        }
        for (int k = 0; k < A->n_w; k++)
            A->qerr[k] = cfg->quantized && sens->n_bits > 0 && sens->quant_err
                             ? quant_cost(sens, s, A->w[k]) : 0.0;
        for (int k = 1; k < A->n_w; k++)
            if (A->qerr[k] < A->qerr[k - 1]) A->qerr[k] = A->qerr[k - 1];
        /* measured bytes at every (width, grid point); monotone: never more bytes for a higher
         * sparsity or a narrower width */
        A->bytes = malloc(sizeof(double) * (size_t)A->n_w * (size_t)A->n_grid);
        if (!A->bytes) {
            st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
            goto done;
        }
        const float *W = w.params + n->params[0].off;
        if ((st = layer_size_table(W, A->rows, A->cols, A->grid, A->n_grid, A->w, A->n_w, cfg->init,
                                   A->bytes, err)))
            goto done;
        for (int k = 0; k < A->n_w; k++)
            for (int g = 0; g < A->n_grid; g++) {
                double *v = &A->bytes[(size_t)k * A->n_grid + g];
                if (g > 0 && *v > v[-1]) *v = v[-1];
                if (k > 0 && *v > v[-A->n_grid]) *v = v[-A->n_grid];
            }
        A->max_st = (int)ceil((double)A->grid[A->n_grid - 1] / cfg->step - 1e-6);
        A->st = 0;
        A->wi = 0;
    }

    res->reference_bytes = cfg->reference_bytes;
    if (!res->reference_bytes)
        for (int i = 0; i < m->n_nodes; i++) res->reference_bytes += nz_node_param_count(&m->nodes[i]) * 4;
    res->fixed_bytes = fixed_bytes(m, cfg->quantized);
    const double target = (double)res->reference_bytes / cfg->target_ratio;
    double total = (double)res->fixed_bytes;
    for (int l = 0; l < L_n; l++) total += layer_bytes(&L[l], cfg, 0, 0);
    while (total > target) {
        int best_l = -1, best_kind = 0, best_st = 0;
        double best_cost = 0, best_save = 0;
        for (int l = 0; l < L_n; l++) {
            alloc_layer *A = &L[l];
            const double cur = layer_bytes(A, cfg, A->st, A->wi);
            /* raise the sparsity: the next step that saves bytes */
            int ns = A->st + 1;
            while (ns < A->max_st && layer_bytes(A, cfg, ns, A->wi) >= cur) ns++;
            for (int kind = 0; kind < 2; kind++) {
                double save, cost;
                if (kind == 0) {
                    if (ns > A->max_st) continue;
                    save = cur - layer_bytes(A, cfg, ns, A->wi);
                    cost = layer_perr(A, cfg, ns) - layer_perr(A, cfg, A->st);
                } else {
                    if (A->wi + 1 >= A->n_w) continue;
                    save = cur - layer_bytes(A, cfg, A->st, A->wi + 1);
                    cost = A->qerr[A->wi + 1] - A->qerr[A->wi];
                }
                if (!(save > 0)) continue;
                double per = cost / save;
                if (best_l < 0 || per < best_cost - 1e-15 ||
                    (per <= best_cost + 1e-15 && save > best_save)) {
                    best_l = l;
                    best_kind = kind;
                    best_st = ns;
                    best_cost = per;
                    best_save = save;
                }
            }
        }
        if (best_l < 0) break; /* every layer at its limit */
        alloc_layer *A = &L[best_l];
        if (best_kind == 0)
            A->st = best_st;
        else
            A->wi++;
        total -= best_save;
        res->moves++;
    }
    /* the result, with the total recomputed from the final state */
    total = (double)res->fixed_bytes;
    res->est_err = sens->baseline_err;
    res->n_layers = L_n;
    for (int l = 0; l < L_n; l++) {
        const alloc_layer *A = &L[l];
        double b = layer_bytes(A, cfg, A->st, A->wi);
        res->node[l] = A->node;
        res->sparsity[l] = (float)layer_sparsity(A, cfg, A->st);
        res->bits[l] = A->w[A->wi];
        res->est_bytes[l] = (size_t)(b + 0.5);
        res->est_err_increase[l] = (float)(layer_perr(A, cfg, A->st) + A->qerr[A->wi]);
        res->est_err += res->est_err_increase[l];
        total += b;
    }
    res->est_file_bytes = (size_t)(total + 0.5);
    res->est_ratio = (double)res->reference_bytes / (total > 0 ? total : 1);
    res->reached = res->est_ratio >= (double)cfg->target_ratio * (1 - 1e-9);
done:
    free_layers(L, L_n);
    nz_model_free(&w);
    return st;
}
