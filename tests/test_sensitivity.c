/* Sensitivity analysis and target-ratio allocation (src/compress/sensitivity.c), on LeNet-300-100
 * briefly trained on the synthetic set:
 *
 *  - nz_sensitivity: sparsity 0 gives the baseline exactly; a cell equals an independent
 *    prune-one-layer-and-evaluate (so the sweep prunes only that layer and restores it); 95% is
 *    never better than 0%; the model given is not changed; a sparsity below a layer's existing
 *    one reuses the baseline; the stop flag and bad settings are refused.
 *  - nz_sensitivity_svg: well-formed text (<svg ... </svg>, one polyline per layer, balanced
 *    groups, the title escaped), nothing left behind, a bad path fails without a file.
 *  - nz_estimate_layer_bytes: fewer bytes for more sparsity and fewer bits.
 *  - nz_sensitivity_allocate: reaches the target estimate; the estimate holds against the real
 *    pipeline (prune, quantize, encode, save: the file within 10%); more sparsity on the flat
 *    curve in both orders of a constructed case; monotone in the target; fixed widths stay; an
 *    unreachable target is reported, not failed; bad settings are refused.
 *
 * Usage: test_sensitivity [anything]   (run_tests.sh passes the torch reference path; ignored) */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nnzip/compress.h"
#include "nnzip/data.h"
#include "nnzip/format.h"
#include "nnzip/model.h"
#include "nnzip/train.h"
#include "synthetic.h"
#include "testlib.h"

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int node_named(const nz_model *m, const char *name) {
    for (int i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].name, name) == 0) return i;
    return -1;
}

static float eval_pct(const nz_model *m, const nz_dataset *ds) {
    nz_eval_result ev;
    nz_error e = {0};
    if (nz_evaluate(m, ds, 256, &ev, &e) != NZ_OK) {
        CHECK(0, "evaluate: %s", e.msg);
        return -1;
    }
    return ev.error;
}

/* Test error of m with only layer `node` pruned to sparsity (independently of the sweep). */
static float prune_one_eval(const nz_model *m, int node, float sparsity, const nz_dataset *ds) {
    nz_model c;
    nz_error e = {0};
    if (nz_model_copy(&c, m, &e) != NZ_OK) {
        CHECK(0, "copy: %s", e.msg);
        return -1;
    }
    const nz_param *p = &c.nodes[node].params[0];
    nz_prune_layer_to_sparsity(c.params + p->off, p->n, sparsity);
    float r = eval_pct(&c, ds);
    nz_model_free(&c);
    return r;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        *len = (size_t)n;
    }
    return b;
}

static int count_str(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static int dir_has_tmp(const char *dir) {
    DIR *d = opendir(dir);
    int found = 0;
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));) found |= strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return found;
}

/* ---------------------------------------------------------------- the sweep */

static void test_sweep(const nz_model *m, const nz_dataset *test, nz_sensitivity_result *keep) {
    nz_error e = {0};
    nz_sensitivity_cfg sc;
    nz_sensitivity_cfg_default(&sc);
    sc.n_bits = 3;
    sc.bits[0] = 8;
    sc.bits[1] = 4;
    sc.bits[2] = 2;
    float *before = malloc(sizeof(float) * m->n_params);
    memcpy(before, m->params, sizeof(float) * m->n_params);
    nz_sensitivity_result r;
    CHECK(nz_sensitivity(m, test, &sc, &r, &e) == NZ_OK, "sensitivity: %s", e.msg);
    CHECK(memcmp(before, m->params, sizeof(float) * m->n_params) == 0, "the model given changed");
    free(before);
    CHECK(r.n_layers == 3 && strcmp(r.name[0], "fc1") == 0 && strcmp(r.name[2], "fc3") == 0,
          "layers: %d (%s ...)", r.n_layers, r.name[0]);
    CHECK(r.n_sparsity == 11 && r.n_bits == 3 && r.n_images == test->n, "grid %d x %d, %d images",
          r.n_sparsity, r.n_bits, r.n_images);
    const float base = eval_pct(m, test);
    CHECK(r.baseline_err == base, "baseline %g, evaluate says %g", (double)r.baseline_err, (double)base);
    int k50 = -1, k95 = -1;
    for (int k = 0; k < r.n_sparsity; k++) {
        if (fabsf(r.sparsity[k] - 0.5f) < 1e-6f) k50 = k;
        if (fabsf(r.sparsity[k] - 0.95f) < 1e-6f) k95 = k;
    }
    CHECK(k50 > 0 && k95 > 0, "default grid holds 50%% and 95%%");
    int rising = 0;
    for (int l = 0; l < r.n_layers && k95 > 0; l++) {
        CHECK(nz_sens_prune_err(&r, l, 0) == r.baseline_err, "%s at sparsity 0: %g != baseline %g",
              r.name[l], (double)nz_sens_prune_err(&r, l, 0), (double)r.baseline_err);
        CHECK(nz_sens_prune_err(&r, l, k95) >= nz_sens_prune_err(&r, l, 0),
              "%s: 95%% (%g) better than 0%% (%g)", r.name[l], (double)nz_sens_prune_err(&r, l, k95),
              (double)nz_sens_prune_err(&r, l, 0));
        rising += nz_sens_prune_err(&r, l, k95) >= nz_sens_prune_err(&r, l, k50);
        /* an independent prune of that layer alone gives the same cell, bit for bit */
        float ind = prune_one_eval(m, r.node[l], 0.5f, test);
        CHECK(ind == nz_sens_prune_err(&r, l, k50), "%s at 50%%: sweep %g, independent %g",
              r.name[l], (double)nz_sens_prune_err(&r, l, k50), (double)ind);
        float q8 = nz_sens_quant_err(&r, l, 0), q2 = nz_sens_quant_err(&r, l, 2);
        CHECK(fabsf(q8 - r.baseline_err) <= 1.0f, "%s at 8 bits: %g vs baseline %g", r.name[l],
              (double)q8, (double)r.baseline_err);
        CHECK(q2 >= 0 && q2 <= 100, "%s at 2 bits: %g", r.name[l], (double)q2);
    }
    CHECK(rising >= 2, "95%% at least as bad as 50%% in only %d of 3 layers", rising);
    /* the classifier (1000 weights) pruned to 95% must hurt */
    CHECK(k95 < 0 || nz_sens_prune_err(&r, 2, k95) > r.baseline_err, "fc3 at 95%%: %g, baseline %g",
          (double)nz_sens_prune_err(&r, 2, k95), (double)r.baseline_err);
    CHECK(r.evaluations >= 1 + r.n_layers * (r.n_sparsity - 1), "evaluations %d", r.evaluations);
    *keep = r;
}

static void test_sweep_edges(const nz_model *m, const nz_dataset *test) {
    nz_error e = {0};
    nz_sensitivity_cfg sc;
    nz_sensitivity_result r;
    /* fc2 already half zero: 30% changes nothing there and reuses the baseline */
    nz_model c;
    CHECK(nz_model_copy(&c, m, &e) == NZ_OK, "copy");
    const int fc2 = node_named(&c, "fc2");
    nz_prune_layer_to_sparsity(c.params + c.nodes[fc2].params[0].off, c.nodes[fc2].params[0].n, 0.5f);
    nz_sensitivity_cfg_default(&sc);
    sc.n_sparsity = 3;
    sc.sparsity[0] = 0.0f;
    sc.sparsity[1] = 0.3f;
    sc.sparsity[2] = 0.6f;
    sc.only[fc2] = 1;
    CHECK(nz_sensitivity(&c, test, &sc, &r, &e) == NZ_OK, "sensitivity fc2: %s", e.msg);
    CHECK(r.n_layers == 1 && r.node[0] == fc2, "--layers fc2 only: %d layers", r.n_layers);
    CHECK(r.prune_err && nz_sens_prune_err(&r, 0, 1) == r.baseline_err && r.evaluations == 2,
          "below the existing sparsity: %g vs %g, %d evaluations",
          (double)(r.prune_err ? nz_sens_prune_err(&r, 0, 1) : -1), (double)r.baseline_err,
          r.evaluations);
    nz_sensitivity_result_free(&r);
    /* a sparse (encoded) model is analysed from a densified copy */
    CHECK(nz_model_sparsify_param(&c, fc2, NULL, 0, 8, &e) == NZ_OK, "sparsify: %s", e.msg);
    CHECK(nz_sensitivity(&c, test, &sc, &r, &e) == NZ_OK, "sensitivity on a sparse model: %s", e.msg);
    CHECK(c.nodes[fc2].params[0].sparse != NULL, "the sparse model given was densified");
    nz_sensitivity_result_free(&r);
    nz_model_free(&c);

    volatile int stop = 1;
    nz_sensitivity_cfg_default(&sc);
    sc.stop = &stop;
    CHECK(nz_sensitivity(m, test, &sc, &r, &e) == NZ_ERR_INTERRUPTED, "stop flag: %d", e.code);
    nz_sensitivity_result_free(&r);
    nz_sensitivity_cfg_default(&sc);
    sc.sparsity[3] = sc.sparsity[2];
    CHECK(nz_sensitivity(m, test, &sc, &r, &e) == NZ_ERR_ARG, "repeated sparsity accepted");
    nz_sensitivity_result_free(&r);
    nz_sensitivity_cfg_default(&sc);
    sc.n_bits = 1;
    sc.bits[0] = 9;
    CHECK(nz_sensitivity(m, test, &sc, &r, &e) == NZ_ERR_ARG, "9 bits accepted");
    nz_sensitivity_result_free(&r);
    nz_sensitivity_cfg_default(&sc);
    sc.only[node_named(m, "relu1") > 0 ? node_named(m, "relu1") : 2] = 1;
    CHECK(nz_sensitivity(m, test, &sc, &r, &e) == NZ_ERR_ARG, "a layer without weights accepted");
    nz_sensitivity_result_free(&r);
}

/* ---------------------------------------------------------------- the plot */

static void test_svg(const nz_sensitivity_result *r, const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/sens.svg", dir);
    nz_error e = {0};
    CHECK(nz_sensitivity_svg(r, path, "lenet300 <synthetic> & \"test\"", &e) == NZ_OK, "svg: %s", e.msg);
    size_t len = 0;
    char *s = read_all(path, &len);
    CHECK(s != NULL, "svg not written");
    if (s) {
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == ' ')) s[--len] = 0;
        CHECK(strncmp(s, "<svg", 4) == 0, "svg starts with '%.10s'", s);
        CHECK(len >= 6 && strcmp(s + len - 6, "</svg>") == 0, "svg ends with '%s'", len > 10 ? s + len - 10 : s);
        CHECK(count_str(s, "<polyline") == r->n_layers, "%d polylines for %d layers",
              count_str(s, "<polyline"), r->n_layers);
        CHECK(count_str(s, "<g") == count_str(s, "</g>"), "unbalanced groups");
        CHECK(count_str(s, "<svg") == 1 && count_str(s, "</svg>") == 1, "one svg element");
        CHECK(strstr(s, "&lt;synthetic&gt; &amp; &quot;test&quot;") != NULL, "title not escaped");
        CHECK(strstr(s, "<synthetic>") == NULL, "raw title in the markup");
        for (int l = 0; l < r->n_layers; l++) {
            char want[64];
            snprintf(want, sizeof want, ">%s</text>", r->name[l]);
            CHECK(strstr(s, want) != NULL, "legend lacks %s", r->name[l]);
        }
        CHECK(strstr(s, "nan") == NULL && strstr(s, "inf") == NULL, "non-finite coordinates");
        free(s);
    }
    CHECK(!dir_has_tmp(dir), "temporary file left behind");
    unlink(path);
    snprintf(path, sizeof path, "%s/no/such/dir/sens.svg", dir);
    CHECK(nz_sensitivity_svg(r, path, "x", &e) == NZ_ERR_IO, "bad path: %d", e.code);
    CHECK(strstr(e.msg, path) != NULL, "error names the path: %s", e.msg);
    nz_sensitivity_result empty;
    memset(&empty, 0, sizeof empty);
    CHECK(nz_sensitivity_svg(&empty, path, "x", &e) == NZ_ERR_ARG, "empty result plotted");
}

/* ---------------------------------------------------------------- sizes and allocation */

static void test_estimate(const nz_model *m) {
    const int fc2 = node_named(m, "fc2");
    const nz_param *p = &m->nodes[fc2].params[0];
    const float *W = m->params + p->off;
    const int rows = p->dims[0], cols = (int)(p->n / (size_t)rows);
    size_t b0, b5, b9, b9_3bits, b9_f32;
    nz_error e = {0};
    CHECK(nz_estimate_layer_bytes(W, rows, cols, 0.0f, 5, NZ_KMEANS_LINEAR, &b0, &e) == NZ_OK &&
              nz_estimate_layer_bytes(W, rows, cols, 0.5f, 5, NZ_KMEANS_LINEAR, &b5, &e) == NZ_OK &&
              nz_estimate_layer_bytes(W, rows, cols, 0.9f, 5, NZ_KMEANS_LINEAR, &b9, &e) == NZ_OK &&
              nz_estimate_layer_bytes(W, rows, cols, 0.9f, 3, NZ_KMEANS_LINEAR, &b9_3bits, &e) == NZ_OK &&
              nz_estimate_layer_bytes(W, rows, cols, 0.9f, 0, NZ_KMEANS_LINEAR, &b9_f32, &e) == NZ_OK,
          "estimate: %s", e.msg);
    CHECK(b0 > b5 && b5 > b9, "bytes by sparsity 0/50/90%%: %zu %zu %zu", b0, b5, b9);
    CHECK(b9_3bits < b9 && b9 < b9_f32, "bytes at 90%% by width 3/5/f32: %zu %zu %zu", b9_3bits, b9, b9_f32);
    /* 10% of 30000 weights with f32 values and one index byte each, plus headers */
    CHECK(b9_f32 >= 3000 * 5 && b9_f32 < 3000 * 5 + 200, "f32 at 90%%: %zu bytes", b9_f32);
    CHECK(nz_estimate_layer_bytes(W, rows, cols, 1.0f, 5, NZ_KMEANS_LINEAR, &b0, &e) == NZ_ERR_ARG,
          "sparsity 1 accepted");
}

/* A result with hand-made curves for the three layers of m: err = baseline + slope[l] * s^2. */
static void fake_result(const nz_model *m, const float *slope, nz_sensitivity_result *r) {
    memset(r, 0, sizeof *r);
    static const float grid[] = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 0.9f, 0.95f, 0.99f};
    r->n_sparsity = (int)(sizeof grid / sizeof *grid);
    memcpy(r->sparsity, grid, sizeof grid);
    r->baseline_err = 2.0f;
    r->n_images = 1000;
    for (int i = 1; i < m->n_nodes; i++) {
        if (!nz_node_is_weighted(&m->nodes[i])) continue;
        int l = r->n_layers++;
        r->node[l] = i;
        snprintf(r->name[l], NZ_NAME_MAX, "%s", m->nodes[i].name);
        r->weights[l] = nz_param_numel(&m->nodes[i].params[0]);
    }
    r->prune_err = malloc(sizeof(float) * (size_t)r->n_layers * (size_t)r->n_sparsity);
    for (int l = 0; l < r->n_layers; l++)
        for (int k = 0; k < r->n_sparsity; k++)
            r->prune_err[l * r->n_sparsity + k] = r->baseline_err + slope[l] * grid[k] * grid[k];
}

static double total_sparsity(const nz_alloc_result *a, const nz_model *m) {
    double removed = 0, total = 0;
    for (int l = 0; l < a->n_layers; l++) {
        double n = (double)nz_param_numel(&m->nodes[a->node[l]].params[0]);
        removed += n * a->sparsity[l];
        total += n;
    }
    return removed / total;
}

static void test_allocate_constructed(const nz_model *m) {
    nz_error e = {0};
    nz_alloc_cfg ac;
    nz_alloc_result a;
    nz_sensitivity_result r;
    const int fc1 = 0, fc2 = 1; /* layer indices */
    /* fc1 steep, fc2 and fc3 flat: the flat ones go first and furthest */
    const float steep_fc1[3] = {80.0f, 0.5f, 0.5f}, steep_fc2[3] = {0.5f, 80.0f, 0.5f};
    fake_result(m, steep_fc1, &r);
    nz_alloc_cfg_default(&ac);
    ac.target_ratio = 12.0f;
    CHECK(nz_sensitivity_allocate(m, &r, &ac, &a, &e) == NZ_OK, "allocate: %s", e.msg);
    CHECK(a.reached && a.est_ratio >= 12.0 && a.est_ratio < 12.0 * 1.1, "fc1 steep: estimated %.2fx",
          a.est_ratio);
    CHECK(a.sparsity[fc2] > a.sparsity[fc1], "fc1 steep: fc1 %.3f, fc2 %.3f", (double)a.sparsity[fc1],
          (double)a.sparsity[fc2]);
    CHECK(a.bits[fc1] == 5 && a.bits[2] == 5, "no quantization sweep: the default fc width, got %d",
          a.bits[fc1]);
    nz_sensitivity_result_free(&r);
    fake_result(m, steep_fc2, &r);
    CHECK(nz_sensitivity_allocate(m, &r, &ac, &a, &e) == NZ_OK, "allocate: %s", e.msg);
    CHECK(a.reached && a.est_ratio >= 12.0, "fc2 steep: estimated %.2fx", a.est_ratio);
    CHECK(a.sparsity[fc1] > a.sparsity[fc2], "fc2 steep: fc1 %.3f, fc2 %.3f", (double)a.sparsity[fc1],
          (double)a.sparsity[fc2]);
    size_t sum = a.fixed_bytes;
    for (int l = 0; l < a.n_layers; l++) sum += a.est_bytes[l];
    CHECK(sum >= a.est_file_bytes - 3 && sum <= a.est_file_bytes + 3, "parts %zu, total %zu", sum,
          a.est_file_bytes);
    /* a larger target never prunes less */
    nz_alloc_result b;
    ac.target_ratio = 24.0f;
    CHECK(nz_sensitivity_allocate(m, &r, &ac, &b, &e) == NZ_OK, "allocate 24x: %s", e.msg);
    int mono = 1;
    for (int l = 0; l < a.n_layers; l++) mono &= b.sparsity[l] >= a.sparsity[l];
    CHECK(mono && b.est_ratio >= 24.0, "24x: estimated %.2fx, monotone %d", b.est_ratio, mono);
    /* a fixed width stays; prune-only storage (f32) */
    ac.target_ratio = 12.0f;
    ac.fixed_bits[a.node[fc1]] = 6;
    CHECK(nz_sensitivity_allocate(m, &r, &ac, &b, &e) == NZ_OK && b.bits[fc1] == 6,
          "fixed width: %d", b.bits[fc1]);
    nz_alloc_cfg_default(&ac);
    ac.quantized = 0;
    ac.target_ratio = 6.0f;
    CHECK(nz_sensitivity_allocate(m, &r, &ac, &b, &e) == NZ_OK, "allocate f32: %s", e.msg);
    CHECK(b.reached && b.bits[fc1] == 0 && total_sparsity(&b, m) > 0.8,
          "f32 6x: %.2fx, %d bits, %.3f removed", b.est_ratio, b.bits[fc1], total_sparsity(&b, m));
    /* out of reach: reported, every layer at the cap */
    nz_alloc_cfg_default(&ac);
    ac.target_ratio = 1e5f;
    CHECK(nz_sensitivity_allocate(m, &r, &ac, &b, &e) == NZ_OK, "allocate 1e5: %s", e.msg);
    CHECK(!b.reached && b.est_ratio < 1e5, "1e5x reached? %.1fx", b.est_ratio);
    for (int l = 0; l < b.n_layers; l++)
        CHECK(fabsf(b.sparsity[l] - 0.99f) < 1e-6f, "1e5x: %s at %.4f", r.name[l], (double)b.sparsity[l]);
    /* refusals */
    ac.target_ratio = 0.5f;
    CHECK(nz_sensitivity_allocate(m, &r, &ac, &b, &e) == NZ_ERR_ARG, "ratio 0.5 accepted");
    ac.target_ratio = 10.0f;
    r.n_layers = 2; /* no curve for fc3 */
    CHECK(nz_sensitivity_allocate(m, &r, &ac, &b, &e) == NZ_ERR_ARG && strstr(e.msg, "fc3"),
          "a missing curve: %s", e.msg);
    r.n_layers = 3;
    nz_sensitivity_result_free(&r);
}

/* The real curves, then the real pipeline with the plan: the file must be within 10% of the
 * estimate (no retraining here, so no neuron dies and the masks are exactly the planned ones). */
static void test_allocate_real(const nz_model *m, const nz_sensitivity_result *sens, const char *dir) {
    nz_error e = {0};
    nz_alloc_cfg ac;
    nz_alloc_result a;
    nz_alloc_cfg_default(&ac);
    ac.target_ratio = 20.0f;
    CHECK(nz_sensitivity_allocate(m, sens, &ac, &a, &e) == NZ_OK, "allocate: %s", e.msg);
    CHECK(a.reached && a.est_ratio >= 20.0 && a.est_ratio < 23.0, "20x: estimated %.2fx", a.est_ratio);
    for (int l = 0; l < a.n_layers; l++)
        CHECK(a.bits[l] >= 3 && a.bits[l] <= 8 && a.sparsity[l] >= 0 && a.sparsity[l] <= 0.95f,
              "layer %d: %.3f, %d bits", l, (double)a.sparsity[l], a.bits[l]);
    nz_model c;
    CHECK(nz_model_copy(&c, m, &e) == NZ_OK, "copy");
    nz_prune_cfg pc;
    nz_prune_cfg_default(&pc, &c);
    pc.schedule = NZ_PRUNE_ONESHOT;
    pc.epochs_per_round = 0;
    pc.remove_dead_neurons = 0;
    nz_quant_cfg qc;
    nz_quant_cfg_default(&qc);
    qc.finetune_epochs = 0;
    for (int l = 0; l < a.n_layers; l++) {
        pc.sparsity[a.node[l]] = a.sparsity[l];
        qc.bits[a.node[l]] = a.bits[l];
    }
    nz_prune_result pr;
    nz_quant_result qr;
    nz_encode_cfg ec;
    nz_encode_cfg_default(&ec);
    char path[512];
    snprintf(path, sizeof path, "%s/planned.nnz", dir);
    nz_meta meta;
    memset(&meta, 0, sizeof meta);
    nz_meta_set(&meta, "data", "synthetic");
    nz_meta_set(&meta, "stage", "compressed");
    int ok = nz_prune(&c, NULL, NULL, &pc, NULL, &pr, &e) == NZ_OK &&
             nz_quantize(&c, NULL, NULL, &qc, NULL, &qr, &e) == NZ_OK &&
             nz_encode(&c, &ec, &e) == NZ_OK && nz_save(&c, &meta, path, &e) == NZ_OK;
    CHECK(ok, "pipeline: %s", e.msg);
    if (ok) {
        struct stat st;
        stat(path, &st);
        double ratio = (double)a.reference_bytes / (double)st.st_size;
        printf("  planned 20x: estimated %.2fx (%zu bytes), file %.2fx (%lld bytes)\n", a.est_ratio,
               a.est_file_bytes, ratio, (long long)st.st_size);
        CHECK(fabs(ratio / a.est_ratio - 1.0) < 0.10, "file ratio %.2fx vs estimated %.2fx", ratio,
              a.est_ratio);
        nz_layer_size rows[8];
        int n = nz_size_table(&c, rows, 8);
        for (int l = 0; l < n && l < a.n_layers; l++) {
            /* the node's sections: the weights (estimated) and the f16 bias (16 + 2 x units) */
            double want = (double)a.est_bytes[l] + 16.0 + 2.0 * c.nodes[a.node[l]].units;
            CHECK(fabs((double)rows[l].stored_bytes / want - 1.0) < 0.10,
                  "%s: stored %zu, estimated %.0f", rows[l].name, rows[l].stored_bytes, want);
        }
    }
    unlink(path);
    nz_model_free(&c);
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    nz_set_threads(1);
    const double t0 = now_sec();
    char dir[] = "/tmp/nnzip-test-sens-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    nz_dataset train, test;
    make_synthetic(&train, 2000, 31);
    make_synthetic(&test, 600, 32);
    nz_model m;
    nz_error e = {0};
    if (nz_zoo_build(&m, "lenet300", train.shape, 10, &e) != NZ_OK) {
        CHECK(0, "build: %s", e.msg);
        return tl_finish("test_sensitivity");
    }
    nz_rng r;
    nz_rng_seed(&r, 33);
    nz_model_init_params(&m, &r);
    nz_train_cfg tc;
    nz_train_cfg_default(&tc);
    tc.epochs = 1;
    tc.seed = 1;
    tc.lr = 0.02f; /* under-trained on purpose (about 13% test error): curves with some slope */
    nz_train_result tr;
    CHECK(nz_train(&m, &train, NULL, &tc, NULL, &tr, &e) == NZ_OK, "train: %s", e.msg);
    printf("  trained: %.2f s, test error %.2f%%\n", now_sec() - t0, (double)eval_pct(&m, &test));
    nz_sensitivity_result sens;
    memset(&sens, 0, sizeof sens);
    double t = now_sec();
    test_sweep(&m, &test, &sens);
    printf("  sweep: %.2f s\n", now_sec() - t);
    t = now_sec();
    test_sweep_edges(&m, &test);
    printf("  sweep edges: %.2f s\n", now_sec() - t);
    if (sens.prune_err) {
        test_svg(&sens, dir);
        t = now_sec();
        test_allocate_real(&m, &sens, dir);
        printf("  allocation on the real curves: %.2f s\n", now_sec() - t);
    }
    t = now_sec();
    test_estimate(&m);
    test_allocate_constructed(&m);
    printf("  constructed allocations: %.2f s\n", now_sec() - t);
    nz_sensitivity_result_free(&sens);
    nz_model_free(&m);
    nz_dataset_free(&train);
    nz_dataset_free(&test);
    rmdir(dir);
    printf("  total %.2f s\n", now_sec() - t0);
    return tl_finish("test_sensitivity");
}
