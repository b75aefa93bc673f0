/* Runtime speed of a compressed .nnz against the same weights dense, in one run:
 *   per sparse dense layer, random inputs without zeros: batch 1 (nz_sparse_matvec, and its row
 *   and column kernels alone, vs cblas_sgemv) and batch 64 (sparse matmul vs cblas_sgemm);
 *   per sparse dense layer at batch 1 on real inputs: the test images of --data for the first
 *   layer, this model's own hidden activations on those images for the others; the fraction of
 *   zero inputs; warm cache (the same weights call after call) and cold cache (every cache
 *   evicted before each call by touching a 64 MB buffer, not timed);
 *   the whole model's forward at batch 1 (random and real images) and 64; Huffman/stream
 *   decode throughput and file load time.
 * Warm times are per-call means over the inputs, each chunk of 10 calls timed in every round
 * with the methods interleaved and its median over 7 rounds kept, so another job sharing the
 * CPU shifts all methods alike and a preempted chunk does not count. Cold times are means over
 * one call per input, less the cost of an empty timed region after an eviction, dropping calls
 * over 20x the median (a preemption: the count is printed).
 * Usage: bench_sparse COMPRESSED.nnz [threads] [--data SET] [--data-dir DIR] [--images N]
 *        [--cold-images N] [--evict-mb MB]
 * -> tables, and a JSON line after each row. */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nnzip/compress.h"
#include "nnzip/data.h"
#include "nnzip/format.h"
#include "nnzip/model.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median-of-5 time per call of fn over enough repetitions to take ~50 ms. */
typedef void (*bench_fn)(void *);
static double time_it(bench_fn fn, void *arg) {
    int reps = 1;
    for (;;) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++) fn(arg);
        double dt = now_s() - t0;
        if (dt > 0.05 || reps > (1 << 24)) break;
        reps *= 2;
    }
    double t[5];
    for (int k = 0; k < 5; k++) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++) fn(arg);
        t[k] = (now_s() - t0) / reps;
    }
    qsort(t, 5, sizeof(double), cmp_double);
    return t[2];
}

/* ---------------------------------------------------------------- one layer */

typedef struct {
    const nz_sparse *S;
    const float *W; /* the same weights dense, [rows, cols] */
    float *y;
    int rows, cols;
} layer;

/* One batch-1 call on the input x. */
typedef void (*vec_fn)(const layer *l, const float *x);
static void vec_dense(const layer *l, const float *x) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, l->rows, l->cols, 1.0f, l->W, l->cols, x, 1, 0.0f,
                l->y, 1);
}
static void vec_rows(const layer *l, const float *x) { nz_sparse_matvec_rows(l->S, x, l->y); }
static void vec_cols(const layer *l, const float *x) { nz_sparse_matvec_cols(l->S, x, l->y); }
static void vec_auto(const layer *l, const float *x) { nz_sparse_matvec(l->S, x, l->y); }

#define N_METHODS 4
static const vec_fn methods[N_METHODS] = {vec_dense, vec_rows, vec_cols, vec_auto};

typedef struct {
    const layer *l;
    vec_fn fn;
    const float *x;
} call_arg;
static void run_call(void *p) {
    call_arg *a = p;
    a->fn(a->l, a->x);
}

/* Warm: out[m] = mean time per call of method m over the n inputs X [n, cols] (see the top). */
#define CHUNK 10
#define ROUNDS 7
static void time_warm(const layer *l, const float *X, int n, double out[N_METHODS]) {
    const int n_chunks = (n + CHUNK - 1) / CHUNK;
    double *t = malloc(sizeof(double) * N_METHODS * ROUNDS * (size_t)n_chunks);
    if (!t) exit(1);
    for (int r = 0; r < ROUNDS; r++)
        for (int c = 0; c < n_chunks; c++)
            for (int k = 0; k < N_METHODS; k++) {
                const int m = (k + r + c) % N_METHODS; /* no method always runs first */
                const int i1 = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
                double t0 = now_s();
                for (int i = c * CHUNK; i < i1; i++) methods[m](l, X + (size_t)i * l->cols);
                t[((size_t)m * ROUNDS + r) * n_chunks + c] = now_s() - t0;
            }
    for (int m = 0; m < N_METHODS; m++) {
        double sum = 0, v[ROUNDS];
        for (int c = 0; c < n_chunks; c++) {
            for (int r = 0; r < ROUNDS; r++) v[r] = t[((size_t)m * ROUNDS + r) * n_chunks + c];
            qsort(v, ROUNDS, sizeof(double), cmp_double);
            sum += v[ROUNDS / 2];
        }
        out[m] = sum / n;
    }
    free(t);
}

/* Evicts the caches: a read-modify-write of each line of a buffer larger than the last-level
 * cache a core sees (64 MB by default). */
static unsigned char *evict_buf;
static size_t evict_len;
static volatile unsigned evict_sink;
static void evict(void) {
    unsigned acc = 0;
    for (size_t i = 0; i < evict_len; i += 64) {
        evict_buf[i]++;
        acc += evict_buf[i];
    }
    evict_sink = acc;
}

static double mean_without_preemptions(double *t, int n, int *dropped) {
    double *s = malloc(sizeof(double) * (size_t)n);
    if (!s) exit(1);
    memcpy(s, t, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    const double limit = 20 * s[n / 2];
    double sum = 0;
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (t[i] <= limit) {
            sum += t[i];
            kept++;
        }
    *dropped += n - kept;
    free(s);
    return sum / kept;
}

/* The cost of an empty timed region right after an eviction (the clock's own misses). */
static double timer_overhead(int n) {
    double *t = malloc(sizeof(double) * (size_t)n);
    if (!t) exit(1);
    for (int i = 0; i < n; i++) {
        evict();
        double t0 = now_s();
        t[i] = now_s() - t0;
    }
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    double med = t[n / 2];
    free(t);
    return med;
}

/* Cold: out[m] = mean time of one call of method m with every cache evicted first. */
static void time_cold(const layer *l, const float *X, int n, double overhead,
                      double out[N_METHODS], int *dropped) {
    double *t = malloc(sizeof(double) * N_METHODS * (size_t)n);
    if (!t) exit(1);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < N_METHODS; k++) {
            const int m = (k + i) % N_METHODS;
            evict();
            double t0 = now_s();
            methods[m](l, X + (size_t)i * l->cols);
            t[(size_t)m * n + i] = now_s() - t0;
        }
    for (int m = 0; m < N_METHODS; m++)
        out[m] = mean_without_preemptions(t + (size_t)m * n, n, dropped) - overhead;
    free(t);
}

/* ---------------------------------------------------------------- the whole model */

typedef struct {
    const nz_model *m;
    nz_ws *ws;
    const float *x;
    int B;
} model_arg;
static void run_model(void *p) {
    model_arg *a = p;
    nz_forward(a->m, a->ws, a->x, a->B, 0, NULL);
}

typedef struct {
    const nz_model *m;
    nz_ws *ws;
    const float *X; /* n images */
    int n;
} model_sweep_arg;
static void run_model_sweep(void *p) { /* batch 1, each image once */
    model_sweep_arg *a = p;
    const size_t in = nz_shape_size(a->m->in);
    for (int i = 0; i < a->n; i++) nz_forward(a->m, a->ws, a->X + in * (size_t)i, 1, 0, NULL);
}

typedef struct {
    const nz_sparse *S;
    const float *W, *x;
    float *y, *xT, *yT;
    int rows, cols, B;
} batch_arg;
static void run_sparse_mat(void *p) {
    batch_arg *a = p; /* what the layer does: panels, or transposes around the row kernel */
    nz_sparse_matmul_batch(a->S, a->x, a->B, a->y, a->xT);
}
static void run_dense_mat(void *p) {
    batch_arg *a = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->B, a->rows, a->cols, 1.0f, a->x,
                a->cols, a->W, a->cols, 0.0f, a->y, a->rows);
}

typedef struct {
    const uint8_t *buf;
    size_t len;
    int rows, cols;
} decode_arg;
static void run_decode(void *p) {
    decode_arg *a = p;
    nz_sparse *s;
    if (nz_sparse_decode(a->buf, a->len, a->rows, a->cols, &s, NULL) == NZ_OK) nz_sparse_free(s);
}

typedef struct {
    const char *path;
} load_arg;
static void run_load(void *p) {
    load_arg *a = p;
    nz_model m;
    if (nz_load(a->path, &m, NULL, NULL) == NZ_OK) nz_model_free(&m);
}

/* ---------------------------------------------------------------- sections */

static const float *dense_weights(const nz_model *d, int node) {
    return d->params + d->nodes[node].params[0].off;
}

/* Random inputs without zeros: batch 1 and 64 per layer. */
static void bench_random(const nz_model *m, const nz_model *d) {
    printf("# random inputs (no zeros), warm; b1: nz_sparse_matvec (auto), its row and column "
           "kernels, cblas_sgemv; us per call\n");
    printf("%-8s %6s %9s %9s %9s %9s %8s %12s %12s %8s\n", "layer", "kept", "b1_auto", "b1_rows",
           "b1_cols", "b1_sgemv", "speedup", "b64_sparse", "b64_sgemm", "speedup");
    const int B = 64;
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        if (n->op != NZ_OP_DENSE || !n->params[0].sparse) continue;
        const nz_sparse *S = n->params[0].sparse;
        float *x = malloc(sizeof(float) * (size_t)S->cols * B);
        batch_arg b = {S, dense_weights(d, i), x, malloc(sizeof(float) * (size_t)S->rows * B),
                       malloc(sizeof(float) * (size_t)(S->cols + S->rows) * B),
                       malloc(sizeof(float) * (size_t)S->rows * B), S->rows, S->cols, B};
        if (!x || !b.y || !b.xT || !b.yT) exit(1);
        for (size_t k = 0; k < (size_t)S->cols * B; k++) x[k] = (float)(k % 7) * 0.1f + 0.05f;
        layer l = {S, dense_weights(d, i), b.y, S->rows, S->cols};
        double t1[N_METHODS];
        for (int k = 0; k < N_METHODS; k++) {
            call_arg a = {&l, methods[k], x};
            t1[k] = time_it(run_call, &a);
        }
        double s64 = time_it(run_sparse_mat, &b), d64 = time_it(run_dense_mat, &b);
        printf("%-8s %5.1f%% %9.3f %9.3f %9.3f %9.3f %7.2fx %12.2f %12.2f %7.2fx\n", n->name,
               100.0 * S->nnz / ((double)S->rows * S->cols), t1[3] * 1e6, t1[1] * 1e6,
               t1[2] * 1e6, t1[0] * 1e6, t1[0] / t1[3], s64 * 1e6, d64 * 1e6, d64 / s64);
        printf("{\"layer\": \"%s\", \"b1_sparse_us\": %.3f, \"b1_rows_us\": %.3f, \"b1_cols_us\": "
               "%.3f, \"b1_dense_us\": %.3f, \"b64_sparse_us\": %.3f, \"b64_dense_us\": %.3f}\n",
               n->name, t1[3] * 1e6, t1[1] * 1e6, t1[2] * 1e6, t1[0] * 1e6, s64 * 1e6, d64 * 1e6);
        free(x);
        free(b.y);
        free(b.xT);
        free(b.yT);
    }
    for (int bb = 1; bb <= 64; bb *= 64) {
        float *x = malloc(sizeof(float) * nz_shape_size(m->in) * (size_t)bb);
        if (!x) exit(1);
        for (size_t k = 0; k < nz_shape_size(m->in) * (size_t)bb; k++) x[k] = (float)(k % 11) * 0.05f;
        nz_error e = {0};
        model_arg ms = {m, nz_ws_new(m, bb, &e), x, bb}, md = {d, nz_ws_new(d, bb, &e), x, bb};
        double ts = time_it(run_model, &ms), td = time_it(run_model, &md);
        printf("model forward, batch %2d, random x: compressed %.2f us, dense %.2f us: %.2fx\n", bb,
               ts * 1e6, td * 1e6, td / ts);
        printf("{\"model_batch\": %d, \"compressed_us\": %.3f, \"dense_us\": %.3f}\n", bb,
               ts * 1e6, td * 1e6);
        nz_ws_free(ms.ws);
        nz_ws_free(md.ws);
        free(x);
    }
}

/* Real inputs at batch 1: the first n test images through the model, each layer timed on the
 * inputs it sees there. */
static void bench_real(const nz_model *m, const nz_model *d, const nz_dataset *ds, int n,
                       int n_cold) {
    const size_t in = nz_shape_size(m->in);
    float *X = malloc(sizeof(float) * in * (size_t)n);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)n);
    uint8_t *lab = malloc((size_t)n);
    nz_error e = {0};
    nz_ws *ws = nz_ws_new(m, n, &e);
    if (!X || !idx || !lab || !ws) {
        fprintf(stderr, "bench_sparse: out of memory for %d images\n", n);
        exit(1);
    }
    for (int i = 0; i < n; i++) idx[i] = i;
    nz_batch_fill(ds, &m->pre, idx, n, X, lab);
    nz_forward(m, ws, X, n, 0, NULL); /* every layer's input, for all n images at once */
    if (n_cold > n) n_cold = n;
    const double ovh = timer_overhead(n_cold);
    printf("\n# batch 1 on real inputs: %d %s test images (first layer), this model's activations "
           "on them (the others); us per call\n", n, ds->name);
    printf("# warm: weights stay cached; cold: caches evicted (%zu MB touched) before each of %d "
           "calls, %.3f us timer cost subtracted\n", evict_len >> 20, n_cold, ovh * 1e6);
    printf("# auto = nz_sparse_matvec (what the model runs); x = sgemv time / that time\n");
    printf("%-6s %5s %6s | %7s %7s %7s %7s %6s %6s | %7s %7s %7s %7s %6s %6s\n", "layer", "in",
           "zeros", "sgemv", "rows", "cols", "auto", "x_cols", "x_auto", "sgemv", "rows", "cols",
           "auto", "x_cols", "x_auto");
    int dropped = 0;
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *nd = &m->nodes[i];
        if (nd->op != NZ_OP_DENSE || !nd->params[0].sparse) continue;
        const nz_sparse *S = nd->params[0].sparse;
        if (!S->col_ptr) continue; /* every loaded dense layer has it; not otherwise */
        const float *Xl = nz_ws_act(ws, nd->inputs[0]);
        float *y = malloc(sizeof(float) * (size_t)S->rows);
        if (!y) exit(1);
        size_t zeros = 0;
        for (size_t k = 0; k < (size_t)S->cols * (size_t)n; k++) zeros += Xl[k] == 0.0f;
        const double zf = (double)zeros / ((double)S->cols * n);
        double touched = 0; /* entries under nonzero inputs, per call: the column kernel's work */
        for (int k = 0; k < n; k++)
            for (int cc = 0; cc < S->cols; cc++)
                if (Xl[(size_t)k * S->cols + cc] != 0.0f)
                    touched += S->col_ptr[cc + 1] - S->col_ptr[cc];
        touched /= n;
        layer l = {S, dense_weights(d, i), y, S->rows, S->cols};
        double w[N_METHODS], c[N_METHODS];
        time_warm(&l, Xl, n, w);
        time_cold(&l, Xl, n_cold, ovh, c, &dropped);
        printf("%-6s %5d %5.1f%% | %7.3f %7.3f %7.3f %7.3f %5.2fx %5.2fx | %7.3f %7.3f %7.3f %7.3f "
               "%5.2fx %5.2fx\n",
               nd->name, S->cols, 100.0 * zf, w[0] * 1e6, w[1] * 1e6, w[2] * 1e6, w[3] * 1e6,
               w[0] / w[2], w[0] / w[3], c[0] * 1e6, c[1] * 1e6, c[2] * 1e6, c[3] * 1e6,
               c[0] / c[2], c[0] / c[3]);
        printf("{\"layer\": \"%s\", \"real_inputs\": %d, \"zero_input_frac\": %.4f, "
               "\"entries\": %u, \"entries_touched\": %.1f, \"warm_sgemv_us\": %.4f, \"warm_rows_us\": %.4f, \"warm_cols_us\": %.4f, "
               "\"warm_auto_us\": %.4f, \"cold_sgemv_us\": %.4f, \"cold_rows_us\": %.4f, "
               "\"cold_cols_us\": %.4f, \"cold_auto_us\": %.4f}\n",
               nd->name, n, zf, S->nnz, touched, w[0] * 1e6, w[1] * 1e6, w[2] * 1e6,
               w[3] * 1e6, c[0] * 1e6, c[1] * 1e6, c[2] * 1e6, c[3] * 1e6);
        free(y);
    }
    printf("# cold calls dropped as preempted (> 20x the median): %d\n", dropped);
    /* the whole model at batch 1 on the same images */
    nz_ws *wm = nz_ws_new(m, 1, &e), *wd = nz_ws_new(d, 1, &e);
    model_sweep_arg ms = {m, wm, X, n}, md = {d, wd, X, n};
    const double tm = time_it(run_model_sweep, &ms) / n, td = time_it(run_model_sweep, &md) / n;
    printf("model forward, batch 1, real images: compressed %.2f us, dense %.2f us: %.2fx\n",
           tm * 1e6, td * 1e6, td / tm);
    printf("{\"model_batch\": 1, \"real_images\": %d, \"compressed_us\": %.3f, \"dense_us\": "
           "%.3f}\n", n, tm * 1e6, td * 1e6);
    nz_ws_free(wm);
    nz_ws_free(wd);
    nz_ws_free(ws);
    free(X);
    free(idx);
    free(lab);
}

static void usage(void) {
    fprintf(stderr, "usage: bench_sparse COMPRESSED.nnz [threads] [--data SET] [--data-dir DIR] "
                    "[--images N] [--cold-images N] [--evict-mb MB]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *path = NULL, *data = "mnist", *data_dir = NULL;
    int threads = 0, n_img = 1000, n_cold = 1000;
    long evict_mb = 64;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--data") == 0 && v) data = argv[++i];
        else if (strcmp(argv[i], "--data-dir") == 0 && v) data_dir = argv[++i];
        else if (strcmp(argv[i], "--images") == 0 && v) n_img = atoi(argv[++i]);
        else if (strcmp(argv[i], "--cold-images") == 0 && v) n_cold = atoi(argv[++i]);
        else if (strcmp(argv[i], "--evict-mb") == 0 && v) evict_mb = atol(argv[++i]);
        else if (argv[i][0] == '-') usage();
        else if (!path) path = argv[i];
        else threads = atoi(argv[i]);
    }
    if (!path || n_img < 1 || n_cold < 1 || evict_mb < 1) usage();
    nz_set_threads(threads);
    nz_model m, d;
    nz_error e = {0};
    if (nz_load(path, &m, NULL, &e) || nz_model_copy(&d, &m, &e) || nz_model_densify(&d, &e)) {
        fprintf(stderr, "bench_sparse: %s\n", e.msg);
        return 1;
    }
    evict_len = (size_t)evict_mb << 20;
    evict_buf = calloc(evict_len, 1);
    if (!evict_buf) {
        fprintf(stderr, "bench_sparse: out of memory\n");
        return 1;
    }
    printf("# %s, %d threads\n", path, nz_get_threads());
    bench_random(&m, &d);
    nz_dataset ds;
    memset(&ds, 0, sizeof ds);
    if (nz_data_open(data, data_dir, 0, &ds, &e) != NZ_OK) {
        printf("\n# real inputs skipped: %s (scripts/fetch_data.sh fetches MNIST)\n", e.msg);
    } else {
        if (n_img > ds.n) n_img = ds.n;
        bench_real(&m, &d, &ds, n_img, n_cold);
        nz_dataset_free(&ds);
    }
    printf("\n");
    /* decode throughput: every sparse tensor's payload decoded back into the runtime form */
    double bytes = 0, secs = 0, entries = 0;
    for (int i = 1; i < m.n_nodes; i++) {
        nz_sparse *S = m.nodes[i].n_params ? m.nodes[i].params[0].sparse : NULL;
        if (!S) continue;
        uint8_t *buf;
        size_t len;
        if (nz_sparse_encode(S, &buf, &len, &e)) continue;
        decode_arg a = {buf, len, S->rows, S->cols};
        secs += time_it(run_decode, &a);
        bytes += (double)len;
        entries += S->n_entries;
        free(buf);
    }
    if (secs > 0) {
        printf("decode: %.0f encoded bytes, %.0f entries in %.1f us: %.1f MB/s in, %.1f M entries/s\n",
               bytes, entries, secs * 1e6, bytes / secs / 1e6, entries / secs / 1e6);
        printf("{\"decode_mb_per_s\": %.2f, \"decode_mentries_per_s\": %.2f}\n", bytes / secs / 1e6, entries / secs / 1e6);
    }
    load_arg la = {path};
    double tl = time_it(run_load, &la);
    printf("load %s: %.1f us\n{\"load_us\": %.2f}\n", path, tl * 1e6, tl * 1e6);
    nz_model_free(&m);
    nz_model_free(&d);
    free(evict_buf);
    return 0;
}
