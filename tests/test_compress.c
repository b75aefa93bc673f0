/* Deep Compression (src/compress/): the sparse runtime form and its payload encoding (round trips
 * over shapes, index widths, f32 and codebook values, packed and Huffman streams, row- and
 * column-major positions), the sparse kernels (rows and columns) held against a plain dense
 * reference, model-level sparsify / encode / save / load /
 * densify, magnitude pruning, 1-D k-means held against a brute-force Lloyd, trained quantization
 * on a small synthetic problem, and malformed payloads and files (each must be refused cleanly).
 * Never compares encoder bytes to a golden file: only properties of the streams. */
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "nnzip/compress.h"
#include "nnzip/data.h"
#include "nnzip/format.h"
#include "nnzip/model.h"
#include "nnzip/train.h"
#include "synthetic.h"
#include "filebytes.h"
#include "testlib.h"

/* ---------------------------------------------------------------- helpers */

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* max |a-b| / max |b|: sparse kernels reorder sums, so logits are compared against the scale
 * of the whole vector, not element by element (a logit near 0 has no meaningful relative error) */
static double norm_rel_err(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > d || e != e) d = e != e ? INFINITY : e;
        if (fabs((double)b[i]) > s) s = fabs((double)b[i]);
    }
    return d / (s > 1e-30 ? s : 1e-30);
}

/* A random matrix: each position nonzero with probability density; values f32 normal, or
 * codebook[1..k-1] (never 0). */
static void random_matrix(float *W, int rows, int cols, double density, const float *codebook,
                          int k, nz_rng *r) {
    for (size_t i = 0; i < (size_t)rows * cols; i++) {
        W[i] = 0.0f;
        if (nz_rng_uniform(r) >= density) continue;
        if (codebook) {
            W[i] = codebook[1 + nz_rng_below(r, (uint64_t)(k - 1))];
        } else {
            float v = nz_rng_normal(r);
            W[i] = v != 0.0f ? v : 1.0f;
        }
    }
}

/* codebook[0] = 0, then k-1 distinct nonzero values */
static void make_codebook(float *cb, int k, nz_rng *r) {
    cb[0] = 0.0f;
    for (int j = 1; j < k; j++) {
        float v;
        int dup;
        do {
            v = nz_rng_range(r, -2.0f, 2.0f);
            dup = v == 0.0f;
            for (int t = 1; t < j && !dup; t++) dup = cb[t] == v;
        } while (dup);
        cb[j] = v;
    }
}

static int csc_valid(const nz_sparse *s);

/* CSR invariants of a decoded (or built) sparse form: row_ptr monotone from 0 to nnz, columns
 * strictly increasing inside a row and < cols, codes in 1..k-1 (0 is the filler code, never
 * stored), f32 values never 0; and the column form, when present, holding the same entries.
 * Returns 1 if all hold. */
static int sparse_valid(const nz_sparse *s) {
    if (s && s->col_ptr && !csc_valid(s)) return 0;
    if (!s || s->rows <= 0 || s->cols <= 0 || s->row_ptr[0] != 0 || s->row_ptr[s->rows] != s->nnz)
        return 0;
    for (int r = 0; r < s->rows; r++) {
        if (s->row_ptr[r] > s->row_ptr[r + 1]) return 0;
        for (uint32_t j = s->row_ptr[r]; j < s->row_ptr[r + 1]; j++) {
            if (s->col[j] >= (uint32_t)s->cols) return 0;
            if (j > s->row_ptr[r] && s->col[j] <= s->col[j - 1]) return 0;
            if (s->n_codebook) {
                if (s->code[j] == 0 || s->code[j] >= s->n_codebook) return 0;
            } else if (s->val[j] == 0.0f) {
                return 0;
            }
        }
    }
    return 1;
}

/* The column form: col_ptr monotone from 0 to nnz, rows strictly increasing inside a column and
 * < rows, and every entry (row, column, value bits) equal to the CSR's (codebook values
 * resolved): both scattered into dense tables that must match. */
static int csc_valid(const nz_sparse *s) {
    if (s->col_ptr[0] != 0 || s->col_ptr[s->cols] != s->nnz || !s->row || !s->cval) return 0;
    const size_t total = (size_t)s->rows * (size_t)s->cols;
    /* per cell: 0 = no entry, else 2^32 | the value's bits */
    uint64_t *a = calloc(total, sizeof(uint64_t)), *b = calloc(total, sizeof(uint64_t));
    int ok = a && b;
    for (int r = 0; r < s->rows && ok; r++)
        for (uint32_t j = s->row_ptr[r]; j < s->row_ptr[r + 1]; j++) {
            const float v = nz_sparse_value(s, j);
            uint32_t u;
            memcpy(&u, &v, 4);
            a[(size_t)r * s->cols + s->col[j]] = 1ull << 32 | u;
        }
    for (int c = 0; c < s->cols && ok; c++) {
        ok = s->col_ptr[c] <= s->col_ptr[c + 1];
        for (uint32_t j = s->col_ptr[c]; j < s->col_ptr[c + 1] && ok; j++) {
            ok = s->row[j] < (uint32_t)s->rows && (j == s->col_ptr[c] || s->row[j] > s->row[j - 1]);
            uint32_t u;
            memcpy(&u, &s->cval[j], 4);
            if (ok) b[(size_t)s->row[j] * s->cols + (size_t)c] = 1ull << 32 | u;
        }
    }
    ok = ok && memcmp(a, b, sizeof(uint64_t) * total) == 0;
    free(a);
    free(b);
    return ok;
}

/* Entries (fillers included) that relative indices of width b need: a gap g from the previous
 * stored position costs ceil(g / 2^b) entries; positions run row-major, or column-major.
 * Written apart from the encoder's own count. */
static uint64_t expected_entries(const float *W, int rows, int cols, int b, int col_major) {
    uint64_t n = 0, span = 1ull << b;
    int64_t prev = -1;
    const size_t total = (size_t)rows * (size_t)cols;
    for (size_t i = 0; i < total; i++) {
        /* i walks the stored order; w is the matrix cell at that position */
        const size_t w = col_major ? (i % (size_t)rows) * (size_t)cols + i / (size_t)rows : i;
        if (W[w] == 0.0f) continue;
        uint64_t g = (uint64_t)((int64_t)i - prev);
        n += (g + span - 1) / span;
        prev = (int64_t)i;
    }
    return n;
}

/* ---------------------------------------------------------------- payload round trips */

static int rt_count, rt_filler_cases, rt_col_filler_cases;

/* from_dense -> encode -> decode -> to_dense must give W back exactly, in either order. */
static void roundtrip(const float *W, int rows, int cols, const float *cb, int k, int index_bits,
                      int huffman, int col_major, const char *what) {
    nz_error e = {0};
    nz_sparse *s = NULL, *d = NULL;
    size_t total = (size_t)rows * cols, nnz = 0;
    for (size_t i = 0; i < total; i++) nnz += W[i] != 0.0f;
    nz_status st = nz_sparse_from_dense(&s, W, rows, cols, cb, k, index_bits, &e);
    CHECK(st == NZ_OK, "%s: from_dense: %s", what, e.msg);
    if (st) return;
    rt_count++;
    CHECK(s->nnz == nnz && sparse_valid(s), "%s: built form: nnz %u, want %zu", what, s->nnz, nnz);
    s->huffman = huffman;
    s->col_major = col_major;
    uint8_t *buf = NULL;
    size_t len = 0;
    st = nz_sparse_encode(s, &buf, &len, &e);
    CHECK(st == NZ_OK, "%s: encode: %s", what, e.msg);
    if (st) {
        nz_sparse_free(s);
        return;
    }
    /* row-major payloads keep the flags readers before column-major storage accept */
    CHECK((buf[0] & 8) == (col_major ? 8 : 0) && buf[0] < 16, "%s: flags 0x%x", what, buf[0]);
    CHECK(!s->col_ptr, "%s: encoding left a column form behind", what);
    const uint64_t want_entries = expected_entries(W, rows, cols, index_bits, col_major);
    CHECK(s->n_entries == want_entries, "%s: %u entries, want %llu", what, s->n_entries,
          (unsigned long long)want_entries);
    if (want_entries > nnz) {
        rt_filler_cases++;
        rt_col_filler_cases += col_major;
        CHECK(s->n_entries > s->nnz, "%s: fillers expected", what);
    }
    if (!huffman) { /* packed streams have exactly determined lengths */
        uint64_t ib = ((uint64_t)s->n_entries * (uint64_t)index_bits + 7) / 8;
        uint64_t vb = cb ? ((uint64_t)s->n_entries * (uint64_t)s->code_bits + 7) / 8
                         : (uint64_t)s->n_entries * 4;
        CHECK(s->index_stream_bytes == ib && s->value_stream_bytes == vb,
              "%s: packed streams %llu + %llu bytes, want %llu + %llu", what,
              (unsigned long long)s->index_stream_bytes,
              (unsigned long long)s->value_stream_bytes, (unsigned long long)ib,
              (unsigned long long)vb);
    }
    CHECK(len == 16 + s->codebook_bytes + 8 + s->index_stream_bytes + s->value_stream_bytes,
          "%s: payload %zu bytes does not add up", what, len);
    st = nz_sparse_decode(buf, len, rows, cols, &d, &e);
    CHECK(st == NZ_OK, "%s: decode: %s", what, e.msg);
    if (!st) {
        CHECK(sparse_valid(d), "%s: decoded form breaks CSR invariants", what);
        CHECK(d->nnz == s->nnz && d->n_entries == s->n_entries && d->index_bits == index_bits &&
                  d->huffman == huffman && d->n_codebook == (cb ? k : 0) &&
                  d->code_bits == s->code_bits && d->col_major == col_major,
              "%s: decoded header fields differ", what);
        /* a column-major payload decodes straight into the column form (and the rows) */
        CHECK(!d->col_ptr == !col_major, "%s: column form %s", what,
              d->col_ptr ? "present" : "missing");
        if (!col_major) { /* built from the rows it matches them (sparse_valid compares) */
            CHECK(nz_sparse_build_csc(d, &e) == NZ_OK && d->col_ptr && sparse_valid(d),
                  "%s: column form built from the rows", what);
        }
        if (cb && d->n_codebook == k)
            CHECK(memcmp(d->codebook, cb, sizeof(float) * (size_t)k) == 0, "%s: codebook", what);
        float *back = malloc(sizeof(float) * total);
        nz_sparse_to_dense(d, back);
        CHECK(memcmp(back, W, sizeof(float) * total) == 0, "%s: round trip differs", what);
        /* a clone is an independent equal copy */
        nz_sparse *c = NULL;
        CHECK(nz_sparse_clone(&c, d, &e) == NZ_OK, "%s: clone", what);
        if (c) {
            CHECK(c->col_ptr && c->col_ptr != d->col_ptr && sparse_valid(c),
                  "%s: the clone's column form", what);
            nz_sparse_free(d);
            d = NULL;
            memset(back, 0xff, sizeof(float) * total);
            nz_sparse_to_dense(c, back);
            CHECK(memcmp(back, W, sizeof(float) * total) == 0, "%s: clone differs", what);
            nz_sparse_free(c);
        }
        free(back);
    }
    nz_sparse_free(d);
    nz_sparse_free(s);
    free(buf);
}

static void test_roundtrips(void) {
    static const int widths[] = {1, 2, 3, 5, 8, 12};
    static const struct {
        int rows, cols;
        double density;
        const char *name;
    } shapes[] = {
        {8, 13, 0.3, "8x13 30%"},      {40, 50, 0.1, "40x50 10%"}, {17, 33, 1.0, "dense 17x33"},
        {9, 21, 0.0, "all zeros"},     {1, 300, 0.05, "1x300"},    {300, 1, 0.05, "300x1"},
        {1, 1, 1.0, "1x1"},            {12, 700, 0.02, "12x700 2%"},
    };
    nz_rng r;
    nz_rng_seed(&r, 101);
    float cbs[3][256];
    static const int ks[3] = {2, 5, 256}; /* code widths 1, 3, 8 */
    for (int c = 0; c < 3; c++) make_codebook(cbs[c], ks[c], &r);
    char what[160];
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int rows = shapes[si].rows, cols = shapes[si].cols;
        float *W = malloc(sizeof(float) * (size_t)rows * cols);
        for (int v = -1; v < 3; v++) { /* -1: f32 values; else codebook v */
            const float *cb = v < 0 ? NULL : cbs[v];
            const int k = v < 0 ? 0 : ks[v];
            random_matrix(W, rows, cols, shapes[si].density, cb, k, &r);
            if (si == 0) W[0] = W[0] != 0.0f ? W[0] : (cb ? cb[1] : 1.5f); /* first position */
            for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++)
                for (int h = 0; h < 2; h++)
                    for (int cm = 0; cm < 2; cm++) {
                        snprintf(what, sizeof what, "%s, %s, index %d bits, %s, %s",
                                 shapes[si].name, cb ? "codebook" : "f32", widths[wi],
                                 h ? "huffman" : "packed", cm ? "col-major" : "row-major");
                        roundtrip(W, rows, cols, cb, k, widths[wi], h, cm, what);
                    }
        }
        free(W);
    }
    /* empty rows between full ones, empty columns between full ones, and a single entry in
     * the last position, in both orders */
    {
        const int rows = 30, cols = 40;
        float *W = calloc((size_t)rows * cols, sizeof(float));
        for (int rr = 0; rr < rows; rr += 7)
            for (int cc = 0; cc < cols; cc++) W[rr * cols + cc] = (float)(rr + 1) * 0.5f + cc;
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++)
            for (int h = 0; h < 2; h++)
                for (int cm = 0; cm < 2; cm++) {
                    snprintf(what, sizeof what, "empty rows, index %d bits, %s, %s", widths[wi],
                             h ? "huffman" : "packed", cm ? "col-major" : "row-major");
                    roundtrip(W, rows, cols, NULL, 0, widths[wi], h, cm, what);
                }
        memset(W, 0, sizeof(float) * (size_t)rows * cols);
        for (int cc = 3; cc < cols; cc += 9) /* columns 3, 12, 21, 30, 39; the rest empty */
            for (int rr = 0; rr < rows; rr++)
                if ((rr + cc) % 4) W[rr * cols + cc] = cbs[2][1 + (rr * 7 + cc) % 255];
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++)
            for (int h = 0; h < 2; h++)
                for (int cm = 0; cm < 2; cm++) {
                    snprintf(what, sizeof what, "empty columns, index %d bits, %s, %s",
                             widths[wi], h ? "huffman" : "packed", cm ? "col-major" : "row-major");
                    roundtrip(W, rows, cols, cbs[2], 256, widths[wi], h, cm, what);
                }
        memset(W, 0, sizeof(float) * (size_t)rows * cols);
        W[rows * cols - 1] = cbs[2][255];
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++)
            for (int h = 0; h < 2; h++)
                for (int cm = 0; cm < 2; cm++) {
                    snprintf(what, sizeof what, "last position only, index %d bits, %s, %s",
                             widths[wi], h ? "huffman" : "packed", cm ? "col-major" : "row-major");
                    roundtrip(W, rows, cols, NULL, 0, widths[wi], h, cm, what);
                    roundtrip(W, rows, cols, cbs[2], 256, widths[wi], h, cm, what);
                }
        free(W);
    }
    /* a layer of realistic size: 300x784 at 8% (LeNet-300's ip1) */
    {
        float *W = malloc(sizeof(float) * 300 * 784);
        random_matrix(W, 300, 784, 0.08, cbs[2], 256, &r);
        roundtrip(W, 300, 784, cbs[2], 256, 5, 1, 0, "300x784 8%, codebook, 5 bits, huffman");
        roundtrip(W, 300, 784, cbs[2], 256, 5, 1, 1, "300x784 8%, codebook, 5 bits, huffman, col");
        random_matrix(W, 300, 784, 0.08, NULL, 0, &r);
        roundtrip(W, 300, 784, NULL, 0, 4, 0, 0, "300x784 8%, f32, 4 bits, packed");
        roundtrip(W, 300, 784, NULL, 0, 4, 0, 1, "300x784 8%, f32, 4 bits, packed, col");
        free(W);
    }
    CHECK(rt_filler_cases > 50, "only %d round trips exercised filler entries", rt_filler_cases);
    CHECK(rt_col_filler_cases > 50, "only %d column-major round trips exercised filler entries",
          rt_col_filler_cases);

    /* bad arguments to from_dense: refused with NZ_ERR_ARG and no output */
    nz_error e = {0};
    nz_sparse *s = (nz_sparse *)&e;
    float W4[4] = {0, 1.0f, 0, 2.0f}, cb3[3] = {0, 1.0f, 2.0f}, cbbad[3] = {0.5f, 1.0f, 2.0f};
    CHECK(nz_sparse_from_dense(&s, W4, 2, 2, NULL, 0, 0, &e) == NZ_ERR_ARG && !s, "index bits 0");
    CHECK(nz_sparse_from_dense(&s, W4, 2, 2, NULL, 0, 13, &e) == NZ_ERR_ARG && !s, "index bits 13");
    CHECK(nz_sparse_from_dense(&s, W4, 0, 4, NULL, 0, 4, &e) == NZ_ERR_ARG && !s, "0 rows");
    CHECK(nz_sparse_from_dense(&s, W4, 2, 2, cbbad, 3, 4, &e) == NZ_ERR_ARG && !s, "codebook[0]");
    CHECK(nz_sparse_from_dense(&s, W4, 2, 2, cb3, 1, 4, &e) == NZ_ERR_ARG && !s, "codebook of 1");
    CHECK(nz_sparse_from_dense(&s, W4, 2, 2, cb3, 257, 4, &e) == NZ_ERR_ARG && !s, "codebook 257");
    W4[1] = 1.5f;
    CHECK(nz_sparse_from_dense(&s, W4, 2, 2, cb3, 3, 4, &e) == NZ_ERR_ARG && !s,
          "a weight outside the codebook");
}

/* ---------------------------------------------------------------- kernels */

static void test_kernels(void) {
    static const struct {
        int rows, cols;
        double density;
    } shapes[] = {{1, 1, 1.0}, {5, 9, 0.4}, {37, 1, 0.5}, {64, 70, 0.0}, {300, 1200, 0.1},
                  {10, 100, 0.25}, {17, 24, 0.5}};
    static const int Ns[] = {1, 7, 64, 9, 16};
    nz_rng r;
    nz_rng_seed(&r, 202);
    float cb[32];
    make_codebook(cb, 32, &r);
    for (int threads = 1; threads <= 2; threads++) {
        nz_set_threads(threads);
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const int rows = shapes[si].rows, cols = shapes[si].cols;
            float *W = malloc(sizeof(float) * (size_t)rows * cols);
            for (int use_cb = 0; use_cb < 2; use_cb++) {
                random_matrix(W, rows, cols, shapes[si].density, use_cb ? cb : NULL, 32, &r);
                nz_sparse *s = NULL;
                nz_error e = {0};
                if (nz_sparse_from_dense(&s, W, rows, cols, use_cb ? cb : NULL, use_cb ? 32 : 0,
                                         5, &e) != NZ_OK) {
                    CHECK(0, "from_dense: %s", e.msg);
                    continue;
                }
                for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++) {
                    const int N = Ns[ni];
                    float *X = malloc(sizeof(float) * (size_t)cols * N);
                    float *Y = malloc(sizeof(float) * (size_t)rows * N);
                    float *Y0 = malloc(sizeof(float) * (size_t)rows * N);
                    float *ref = malloc(sizeof(float) * (size_t)rows * N);
                    for (size_t i = 0; i < (size_t)cols * N; i++) X[i] = nz_rng_normal(&r);
                    for (size_t i = 0; i < (size_t)rows * N; i++) Y0[i] = nz_rng_normal(&r);
                    for (int acc = 0; acc < 2; acc++) {
                        /* plain dense reference in double */
                        for (int i = 0; i < rows; i++)
                            for (int n = 0; n < N; n++) {
                                double sum = acc ? Y0[(size_t)i * N + n] : 0.0;
                                for (int c = 0; c < cols; c++)
                                    sum += (double)W[(size_t)i * cols + c] * X[(size_t)c * N + n];
                                ref[(size_t)i * N + n] = (float)sum;
                            }
                        if (acc)
                            memcpy(Y, Y0, sizeof(float) * (size_t)rows * N);
                        else
                            for (size_t i = 0; i < (size_t)rows * N; i++) Y[i] = NAN;
                        nz_sparse_matmul(s, X, N, Y, acc);
                        double err = tl_max_rel_err(Y, ref, (size_t)rows * N, 1.0);
                        /* float sums of ~120 terms against double: a few 1e-5 at worst */
                        CHECK(err < 5e-5, "matmul %dx%d %s N=%d acc=%d threads=%d: err %g", rows,
                              cols, use_cb ? "codebook" : "f32", N, acc, threads, err);
                    }
                    {
                        /* the layer's batched path: row-major batches, transposed around the
                         * row kernel (8 x 8 register blocks and scalar edges) */
                        float *XB = malloc(sizeof(float) * (size_t)cols * N);
                        float *YB = malloc(sizeof(float) * (size_t)rows * N);
                        float *scr = malloc(sizeof(float) * (size_t)(rows + cols) * N);
                        for (int n = 0; n < N; n++)
                            for (int c = 0; c < cols; c++)
                                XB[(size_t)n * cols + c] = X[(size_t)c * N + n];
                        for (size_t i = 0; i < (size_t)rows * N; i++) YB[i] = NAN;
                        nz_sparse_matmul_batch(s, XB, N, YB, scr);
                        double worst = 0;
                        for (int i = 0; i < rows; i++)
                            for (int n = 0; n < N; n++) {
                                double sum = 0;
                                for (int c = 0; c < cols; c++)
                                    sum += (double)W[(size_t)i * cols + c] * X[(size_t)c * N + n];
                                const double d = fabs(YB[(size_t)n * rows + i] - sum) /
                                                 fmax(1.0, fabs(sum));
                                worst = d > worst || d != d ? (d != d ? INFINITY : d) : worst;
                            }
                        CHECK(worst < 5e-5, "matmul_batch %dx%d %s B=%d threads=%d: err %g", rows,
                              cols, use_cb ? "codebook" : "f32", N, threads, worst);
                        free(XB), free(YB), free(scr);
                    }
                    if (N == 1) {
                        for (int i = 0; i < rows; i++) Y[i] = NAN;
                        nz_sparse_matvec(s, X, Y);
                        for (int i = 0; i < rows; i++) { /* ref holds acc = 1: recompute */
                            double sum = 0;
                            for (int c = 0; c < cols; c++)
                                sum += (double)W[(size_t)i * cols + c] * X[c];
                            ref[i] = (float)sum;
                        }
                        double err = tl_max_rel_err(Y, ref, (size_t)rows, 1.0);
                        CHECK(err < 1e-5, "matvec %dx%d %s threads=%d: err %g", rows, cols,
                              use_cb ? "codebook" : "f32", threads, err);
                    }
                    free(X);
                    free(Y);
                    free(Y0);
                    free(ref);
                }
                nz_sparse_free(s);
            }
            free(W);
        }
    }
    nz_set_threads(0);
}

/* The panel kernels (small dense layers with a codebook of <= 32 entries) against a dense
 * reference: batch 1 on inputs with no, some and only zeros; batches that are and are not
 * multiples of the 8-sample pass, where each sample must come out the same bits as alone and
 * with 1 or 2 threads; codebooks that fit one register (<= 16) and two; shapes with a partial
 * last block of rows, more than one strip of 8 blocks, and more columns than one list chunk. Which layers get panels, too. */
static void test_panel_kernels(void) {
    static const struct {
        int rows, cols, k;
        double density;
    } shapes[] = {{1, 1, 2, 1.0},     {10, 100, 16, 0.25}, {16, 33, 17, 0.5}, {17, 5, 32, 0.9},
                  {100, 300, 32, 0.09}, {128, 600, 5, 0.3}, {127, 1100, 32, 0.2},
                  {300, 784, 32, 0.08}, {145, 60, 16, 0.5}, {512, 40, 9, 0.4}};
    static const double zero_frac[] = {0.0, 0.5, 1.0};
    static const int Bs[] = {64, 1, 3, 8, 13}; /* 64 first: the others compare to it */
    nz_rng r;
    nz_rng_seed(&r, 4242);
    nz_error e = {0};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int rows = shapes[si].rows, cols = shapes[si].cols, k = shapes[si].k;
        float cb[32];
        make_codebook(cb, k, &r);
        float *W = malloc(sizeof(float) * (size_t)rows * cols);
        float *X = malloc(sizeof(float) * (size_t)cols * 64);
        float *Y = malloc(sizeof(float) * (size_t)rows * 64), *Y2 = malloc(sizeof(float) * (size_t)rows * 64);
        float *y1 = malloc(sizeof(float) * (size_t)rows), *ref = malloc(sizeof(float) * (size_t)rows * 64);
        random_matrix(W, rows, cols, shapes[si].density, cb, k, &r);
        nz_sparse *s = NULL, *c = NULL;
        /* prepare builds panels only where they pay (AVX-512); the kernels are tested in
         * every build */
        int prepared_pan = -1;
        if (nz_sparse_from_dense(&s, W, rows, cols, cb, k, 5, &e) ||
            nz_sparse_prepare(s, NZ_OP_DENSE, &e) || ((prepared_pan = s->pan != NULL), 0) ||
            nz_sparse_build_panels(s, &e) || nz_sparse_clone(&c, s, &e)) {
            CHECK(0, "panels %dx%d: %s", rows, cols, e.msg);
            nz_sparse_free(s);
            goto next;
        }
        CHECK(prepared_pan == nz_sparse_panels_pay(), "panels %dx%d: prepare built %s", rows,
              cols, prepared_pan ? "them (they do not pay here)" : "none");
        CHECK(s->pan && s->pan_rows == (rows + 15) / 16 * 16 && c->pan &&
                  memcmp(s->pan, c->pan, (size_t)cols * s->pan_rows) == 0,
              "panels %dx%d: not built or not cloned", rows, cols);
        if (!s->pan) goto done;
        for (size_t zi = 0; zi < sizeof zero_frac / sizeof zero_frac[0]; zi++) {
            for (size_t i = 0; i < (size_t)cols * 64; i++)
                X[i] = nz_rng_uniform(&r) < zero_frac[zi] ? 0.0f : nz_rng_normal(&r);
            for (int n = 0; n < 64; n++)
                for (int i = 0; i < rows; i++) {
                    double sum = 0;
                    for (int j = 0; j < cols; j++)
                        sum += (double)W[(size_t)i * cols + j] * X[(size_t)n * cols + j];
                    ref[(size_t)n * rows + i] = (float)sum;
                }
            for (int i = 0; i < rows; i++) y1[i] = NAN; /* every output must be written */
            nz_sparse_matvec(c, X, y1); /* the clone's panels */
            double err = tl_max_rel_err(y1, ref, (size_t)rows, 1.0);
            CHECK(err < 1e-5, "panel matvec %dx%d k=%d, zeros %.1f: err %g", rows, cols, k,
                  zero_frac[zi], err);
            if (zero_frac[zi] == 1.0) {
                int all0 = 1;
                for (int i = 0; i < rows; i++) all0 &= y1[i] == 0.0f;
                CHECK(all0, "panel matvec %dx%d: zero input, nonzero output", rows, cols);
            }
            for (int th = 1; th <= 2; th++) {
                nz_set_threads(th);
                for (size_t bi = 0; bi < sizeof Bs / sizeof Bs[0]; bi++) {
                    const int B = Bs[bi];
                    for (size_t i = 0; i < (size_t)rows * B; i++) Y[i] = NAN;
                    nz_sparse_matmul_panels(s, X, B, Y);
                    err = tl_max_rel_err(Y, ref, (size_t)rows * B, 1.0);
                    CHECK(err < 1e-5, "panel matmul %dx%d k=%d B=%d threads %d: err %g", rows,
                          cols, k, B, th, err);
                    /* each sample the same bits in any batch, with 1 or 2 threads */
                    if (B == 64 && th == 1)
                        memcpy(Y2, Y, sizeof(float) * (size_t)rows * 64);
                    else
                        CHECK(memcmp(Y, Y2, sizeof(float) * (size_t)rows * B) == 0,
                              "panel matmul %dx%d: batch %d, %d threads changes a sample's sums",
                              rows, cols, B, th);
                }
            }
            nz_set_threads(0);
        }
    done:
        nz_sparse_free(s);
        nz_sparse_free(c);
    next:
        free(W);
        free(X);
        free(Y);
        free(Y2);
        free(y1);
        free(ref);
    }
    /* no panels: too many rows, a codebook past 32 entries, f32 values, or too sparse */
    static const struct {
        int rows, cols, k;
        double density;
    } none[] = {{513, 10, 16, 0.5}, {20, 20, 33, 0.5}, {20, 20, 0, 0.5}, {100, 2000, 16, 0.002}};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        float cb[40];
        make_codebook(cb, none[i].k ? none[i].k : 2, &r);
        float *W = malloc(sizeof(float) * (size_t)none[i].rows * none[i].cols);
        random_matrix(W, none[i].rows, none[i].cols, none[i].density, none[i].k ? cb : NULL,
                      none[i].k, &r);
        nz_sparse *s = NULL;
        if (nz_sparse_from_dense(&s, W, none[i].rows, none[i].cols, none[i].k ? cb : NULL,
                                 none[i].k, 5, &e) == NZ_OK &&
            nz_sparse_prepare(s, NZ_OP_DENSE, &e) == NZ_OK)
            CHECK(!s->pan && s->col_ptr, "panels built for %dx%d k=%d density %g", none[i].rows,
                  none[i].cols, none[i].k, none[i].density);
        else
            CHECK(0, "no-panel case %zu: %s", i, e.msg);
        nz_sparse_free(s);
        free(W);
    }
}

/* The column kernel against a dense reference and the row kernel, on inputs without zeros, with
 * some or most zero (skipped columns) and all zero; the largest shape is past the threading
 * threshold. The row split of the threads keeps each output's order of terms, so 1 and 2
 * threads must agree bit for bit. nz_sparse_matvec gives exactly what one of the two gives. */
static void test_csc_kernel(void) {
    static const struct {
        int rows, cols;
        double density;
    } shapes[] = {{1, 1, 1.0},   {5, 9, 0.4},     {37, 1, 0.5},       {1, 37, 0.5},
                  {64, 70, 0.0}, {40, 50, 1.0},   {300, 784, 0.08},   {700, 600, 0.4}};
    static const double zero_frac[] = {0.0, 0.5, 0.9, 1.0};
    nz_rng r;
    nz_rng_seed(&r, 909);
    float cb[32];
    make_codebook(cb, 32, &r);
    int csc_calls = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int rows = shapes[si].rows, cols = shapes[si].cols;
        float *W = malloc(sizeof(float) * (size_t)rows * cols);
        float *x = malloc(sizeof(float) * (size_t)cols);
        float *yr = malloc(sizeof(float) * (size_t)rows), *y1 = malloc(sizeof(float) * (size_t)rows);
        float *y2 = malloc(sizeof(float) * (size_t)rows), *ref = malloc(sizeof(float) * (size_t)rows);
        float *ya = malloc(sizeof(float) * (size_t)rows);
        for (int use_cb = 0; use_cb < 2; use_cb++) {
            random_matrix(W, rows, cols, shapes[si].density, use_cb ? cb : NULL, 32, &r);
            nz_sparse *s = NULL;
            nz_error e = {0};
            if (nz_sparse_from_dense(&s, W, rows, cols, use_cb ? cb : NULL, use_cb ? 32 : 0, 5,
                                     &e) != NZ_OK) {
                CHECK(0, "from_dense: %s", e.msg);
                continue;
            }
            for (size_t zi = 0; zi < sizeof zero_frac / sizeof zero_frac[0]; zi++) {
                int zeros = 0;
                for (int c = 0; c < cols; c++) {
                    x[c] = nz_rng_uniform(&r) < zero_frac[zi] ? 0.0f : nz_rng_normal(&r);
                    zeros += x[c] == 0.0f;
                }
                if (zi == 2 && cols > 1) x[0] = -0.0f; /* a negative zero is a zero too */
                for (int i = 0; i < rows; i++) {
                    double sum = 0;
                    for (int c = 0; c < cols; c++) sum += (double)W[(size_t)i * cols + c] * x[c];
                    ref[i] = (float)sum;
                    yr[i] = y1[i] = y2[i] = ya[i] = NAN; /* every output must be written */
                }
                nz_set_threads(1);
                nz_sparse_matvec(s, x, ya); /* no column form: the row kernel */
                nz_sparse_matvec_rows(s, x, yr);
                CHECK(!s->col_ptr && memcmp(ya, yr, sizeof(float) * (size_t)rows) == 0,
                      "matvec without a column form is the row kernel");
                CHECK(nz_sparse_build_csc(s, &e) == NZ_OK && s->col_ptr, "build_csc: %s", e.msg);
                nz_sparse_matvec_cols(s, x, y1);
                nz_sparse_matvec(s, x, ya);
                nz_set_threads(2);
                nz_sparse_matvec_cols(s, x, y2);
                nz_set_threads(0);
                CHECK(memcmp(ya, y1, sizeof(float) * (size_t)rows) == 0 ||
                          memcmp(ya, yr, sizeof(float) * (size_t)rows) == 0,
                      "matvec %dx%d: neither kernel's result", rows, cols);
                /* no zero input: every column costs its entries and more, rows are cheaper;
                 * fc1-like with 90% zero inputs: columns */
                if (zeros == 0)
                    CHECK(memcmp(ya, yr, sizeof(float) * (size_t)rows) == 0,
                          "matvec %dx%d, no zeros: not the row kernel", rows, cols);
                if (rows == 300 && zi == 2)
                    CHECK(memcmp(ya, y1, sizeof(float) * (size_t)rows) == 0,
                          "matvec %dx%d, %d zeros: not the column kernel", rows, cols, zeros);
                csc_calls++;
                const char *kind = use_cb ? "codebook" : "f32";
                double err = tl_max_rel_err(y1, ref, (size_t)rows, 1.0);
                CHECK(err < 1e-5, "csc matvec %dx%d %s, %d of %d inputs zero: err %g vs dense",
                      rows, cols, kind, zeros, cols, err);
                err = tl_max_rel_err(y1, yr, (size_t)rows, 1.0);
                CHECK(err < 1e-5, "csc matvec %dx%d %s, %d zeros: err %g vs the row kernel", rows,
                      cols, kind, zeros, err);
                CHECK(memcmp(y1, y2, sizeof(float) * (size_t)rows) == 0,
                      "csc matvec %dx%d %s, %d zeros: 1 and 2 threads differ", rows, cols, kind,
                      zeros);
                if (zeros == cols) {
                    int all0 = 1;
                    for (int i = 0; i < rows; i++) all0 &= y1[i] == 0.0f;
                    CHECK(all0, "csc matvec %dx%d %s: zero input, nonzero output", rows, cols,
                          kind);
                }
                nz_sparse_drop_csc(s);
                CHECK(!s->col_ptr && !s->row && !s->cval, "drop_csc left arrays");
            }
            nz_sparse_free(s);
        }
        free(W);
        free(x);
        free(yr);
        free(y1);
        free(y2);
        free(ya);
        free(ref);
    }
    CHECK(csc_calls == 64, "%d column-kernel cases run", csc_calls);
}

/* ---------------------------------------------------------------- model level */

#define MAX_LAYERS 16
#define MODEL_CB 32

/* logits of a forward at batch B, copied out of the workspace */
static void logits_of(const nz_model *m, const float *x, int B, float *out) {
    nz_error e = {0};
    nz_ws *ws = nz_ws_new(m, B, &e);
    CHECK(ws != NULL, "workspace: %s", e.msg);
    if (!ws) {
        memset(out, 0, sizeof(float) * (size_t)B * m->n_classes);
        return;
    }
    const float *l = nz_forward(m, ws, x, B, 0, NULL);
    memcpy(out, l, sizeof(float) * (size_t)B * m->n_classes);
    nz_ws_free(ws);
}

/* snaps every nonzero weight to the nearest of cb[1..k-1] (never to 0) */
static void snap_to_codebook(float *W, size_t n, const float *cb, int k) {
    for (size_t i = 0; i < n; i++) {
        if (W[i] == 0.0f) continue;
        int best = 1;
        for (int j = 2; j < k; j++)
            if (fabsf(W[i] - cb[j]) < fabsf(W[i] - cb[best])) best = j;
        W[i] = cb[best];
    }
}

/* Payload bytes of s at an index width and order (its own settings are restored). */
static size_t payload_bytes(nz_sparse *s, int bits, int col_major) {
    const int kb = s->index_bits, kc = s->col_major;
    s->index_bits = bits;
    s->col_major = col_major;
    uint8_t *buf = NULL;
    size_t len = 0;
    nz_error e = {0};
    CHECK(nz_sparse_encode(s, &buf, &len, &e) == NZ_OK, "encode: %s", e.msg);
    free(buf);
    s->index_bits = kb;
    s->col_major = kc;
    return len;
}

static void test_model_level(const char *arch, int use_cb, const char *dir) {
    char what[96];
    snprintf(what, sizeof what, "%s %s", arch, use_cb ? "codebook" : "f32");
    nz_error e = {0};
    nz_model ref, sp, ld;
    if (nz_zoo_build(&ref, arch, (nz_shape){1, 28, 28}, 10, &e) != NZ_OK) {
        CHECK(0, "%s: build: %s", what, e.msg);
        return;
    }
    nz_rng r;
    nz_rng_seed(&r, 303);
    nz_model_init_params(&ref, &r);
    float cb[MAX_LAYERS][MODEL_CB];
    int layer_node[MAX_LAYERS], n_layers = 0;
    size_t weights = 0;
    for (int i = 0; i < ref.n_nodes; i++) {
        if (!nz_node_is_weighted(&ref.nodes[i]) || n_layers == MAX_LAYERS) continue;
        const nz_param *p = &ref.nodes[i].params[0];
        float *W = ref.params + p->off;
        size_t kept = nz_prune_layer_to_sparsity(W, p->n, 0.9f);
        CHECK(kept == p->n - (size_t)(0.9 * p->n + 0.5), "%s: layer %d kept %zu of %zu", what,
              i, kept, p->n);
        if (use_cb) { /* linear codebook over the layer's range, then snap */
            float lo = 0, hi = 0;
            for (size_t j = 0; j < p->n; j++) {
                lo = W[j] < lo ? W[j] : lo;
                hi = W[j] > hi ? W[j] : hi;
            }
            cb[n_layers][0] = 0.0f;
            for (int j = 1; j < MODEL_CB; j++) {
                float v = lo + (hi - lo) * (float)(j - 1) / (MODEL_CB - 2);
                cb[n_layers][j] = v != 0.0f ? v : 1e-3f;
            }
            snap_to_codebook(W, p->n, cb[n_layers], MODEL_CB);
        }
        weights += p->n;
        layer_node[n_layers++] = i;
    }
    if (nz_model_copy(&sp, &ref, &e) != NZ_OK) {
        CHECK(0, "%s: copy: %s", what, e.msg);
        nz_model_free(&ref);
        return;
    }
    /* f32: the last layer stays dense here; nz_encode must make it sparse (90% zeros) */
    const int n_manual = use_cb ? n_layers : n_layers - 1;
    for (int l = 0; l < n_manual; l++) {
        nz_status st = nz_model_sparsify_param(&sp, layer_node[l], use_cb ? cb[l] : NULL,
                                               use_cb ? MODEL_CB : 0, 5, &e);
        CHECK(st == NZ_OK, "%s: sparsify node %d: %s", what, layer_node[l], e.msg);
    }
    if (!use_cb) weights -= ref.nodes[layer_node[n_layers - 1]].params[0].n;
    CHECK(sp.n_params == ref.n_params - weights, "%s: %zu dense floats left, want %zu", what,
          sp.n_params, ref.n_params - weights);
    CHECK(nz_model_validate(&sp, &e) == NZ_OK, "%s: sparse model invalid: %s", what, e.msg);
    /* sparsifying twice is refused; so is a node without weights */
    CHECK(nz_model_sparsify_param(&sp, layer_node[0], NULL, 0, 5, &e) == NZ_ERR_ARG,
          "%s: second sparsify accepted", what);
    CHECK(nz_model_sparsify_param(&sp, 0, NULL, 0, 5, &e) == NZ_ERR_ARG, "%s: input node", what);

    float *x = malloc(sizeof(float) * 5 * 784);
    for (int i = 0; i < 5 * 784; i++) x[i] = nz_rng_normal(&r);
    float a[50], b[50], c[50];
    for (int B = 1; B <= 5; B += 4) {
        logits_of(&ref, x, B, a);
        logits_of(&sp, x, B, b);
        double err = norm_rel_err(b, a, (size_t)B * 10);
        CHECK(err < 1e-5, "%s: sparse vs dense logits at B=%d: rel err %g", what, B, err);
    }

    /* encode (f16 biases, chosen widths, Huffman or packed), save, load: bit-identical */
    nz_encode_cfg ec;
    nz_encode_cfg_default(&ec);
    if (use_cb) { /* fixed narrow widths, packed streams, f32 codebooks (exact densify) */
        ec.huffman = 0;
        ec.f16_codebooks = 0;
        for (int l = 0; l < n_layers; l++) ec.index_bits[layer_node[l]] = 3;
    }
    CHECK(nz_encode(&sp, &ec, &e) == NZ_OK, "%s: encode: %s", what, e.msg);
    for (int l = 0; l < n_layers; l++) {
        const nz_sparse *s = sp.nodes[layer_node[l]].params[0].sparse;
        CHECK(s && s->huffman == ec.huffman && (!use_cb || s->index_bits == 3),
              "%s: encode settings not applied to node %d", what, layer_node[l]);
        CHECK(sp.nodes[layer_node[l]].params[1].store == NZ_STORE_F16, "%s: f16 bias", what);
    }
    /* the per-layer size table agrees with the sparse forms */
    nz_layer_size rows[MAX_LAYERS];
    int nr = nz_size_table(&sp, rows, MAX_LAYERS);
    CHECK(nr == n_layers, "%s: size table has %d rows, want %d", what, nr, n_layers);
    for (int l = 0; l < nr && l < n_layers; l++) {
        const nz_sparse *s = sp.nodes[layer_node[l]].params[0].sparse;
        if (!s) continue;
        CHECK(rows[l].node == layer_node[l] && rows[l].sparse && rows[l].nonzeros == s->nnz &&
                  rows[l].entries == s->n_entries && rows[l].entries >= rows[l].nonzeros &&
                  rows[l].index_bits == s->index_bits &&
                  rows[l].code_bits == (use_cb ? s->code_bits : 32) &&
                  rows[l].stored_bytes > 0 && rows[l].stored_bytes < rows[l].dense_bytes,
              "%s: size table row %d (%zu of %zu bytes)", what, l, rows[l].stored_bytes,
              rows[l].dense_bytes);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/%s-%s.nnz", dir, arch, use_cb ? "cb" : "f32");
    CHECK(nz_save(&sp, NULL, path, &e) == NZ_OK, "%s: save: %s", what, e.msg);
    if (nz_load(path, &ld, NULL, &e) != NZ_OK) {
        CHECK(0, "%s: load: %s", what, e.msg);
    } else {
        for (int l = 0; l < n_layers; l++) {
            const nz_sparse *s0 = sp.nodes[layer_node[l]].params[0].sparse;
            const nz_sparse *s1 = ld.nodes[layer_node[l]].params[0].sparse;
            CHECK(s1 && s0 && s1->nnz == s0->nnz && s1->n_codebook == s0->n_codebook &&
                      s1->index_bits == s0->index_bits && s1->huffman == s0->huffman,
                  "%s: node %d not loaded as the same sparse form", what, layer_node[l]);
        }
        for (int B = 1; B <= 5; B += 4) {
            logits_of(&sp, x, B, b);
            logits_of(&ld, x, B, c);
            CHECK(memcmp(b, c, sizeof(float) * (size_t)B * 10) == 0,
                  "%s: loaded model's logits differ at B=%d", what, B);
        }
        /* densify: weights identical to the pre-sparsify dense ones (biases are f16 now) */
        CHECK(nz_model_densify(&ld, &e) == NZ_OK, "%s: densify: %s", what, e.msg);
        CHECK(nz_model_validate(&ld, &e) == NZ_OK, "%s: densified model invalid: %s", what,
              e.msg);
        for (int l = 0; l < n_layers; l++) {
            const nz_param *p0 = &ref.nodes[layer_node[l]].params[0];
            const nz_param *p1 = &ld.nodes[layer_node[l]].params[0];
            CHECK(!p1->sparse && p1->n == p0->n &&
                      memcmp(ld.params + p1->off, ref.params + p0->off, sizeof(float) * p0->n) ==
                          0,
                  "%s: densified weights of node %d differ", what, layer_node[l]);
        }
        for (int B = 1; B <= 5; B += 4) {
            logits_of(&sp, x, B, b);
            logits_of(&ld, x, B, c);
            double err = norm_rel_err(c, b, (size_t)B * 10);
            CHECK(err < 1e-5, "%s: densified vs sparse logits at B=%d: rel err %g", what, B, err);
        }
        nz_model_free(&ld);
    }
    unlink(path);

    /* order auto (the default): per layer no other (order, width) gives a smaller payload */
    for (int l = 0; l < n_layers; l++) {
        nz_sparse *s = sp.nodes[layer_node[l]].params[0].sparse;
        if (!s) continue;
        const size_t chosen = payload_bytes(s, s->index_bits, s->col_major);
        for (int cm = 0; cm < 2; cm++)
            for (int bits = use_cb ? 3 : 2; bits <= (use_cb ? 3 : 10); bits++)
                CHECK(payload_bytes(s, bits, cm) >= chosen,
                      "%s: node %d: %s at %d bits is %zu bytes, auto chose %zu (%s, %d bits)",
                      what, layer_node[l], cm ? "col" : "row", bits, payload_bytes(s, bits, cm),
                      chosen, s->col_major ? "col" : "row", s->index_bits);
    }
    /* column-major storage: the same model back, the column form decoded directly for dense
     * layers (conv layers keep only rows), the same logits bit for bit */
    nz_encode_cfg ecc = ec;
    ecc.order = NZ_ORDER_COL;
    CHECK(nz_encode(&sp, &ecc, &e) == NZ_OK, "%s: encode col-major: %s", what, e.msg);
    snprintf(path, sizeof path, "%s/%s-%s-col.nnz", dir, arch, use_cb ? "cb" : "f32");
    CHECK(nz_save(&sp, NULL, path, &e) == NZ_OK, "%s: save col-major: %s", what, e.msg);
    if (nz_load(path, &ld, NULL, &e) != NZ_OK) {
        CHECK(0, "%s: load col-major: %s", what, e.msg);
    } else {
        for (int l = 0; l < n_layers; l++) {
            const nz_node *nd = &ld.nodes[layer_node[l]];
            const nz_sparse *s1 = nd->params[0].sparse;
            CHECK(s1 && s1->col_major && sp.nodes[layer_node[l]].params[0].sparse->col_major &&
                      !s1->col_ptr == (nd->op != NZ_OP_DENSE) && sparse_valid(s1),
                  "%s: node %d loaded from column-major storage", what, layer_node[l]);
        }
        for (int B = 1; B <= 5; B += 4) {
            logits_of(&sp, x, B, b);
            logits_of(&ld, x, B, c);
            CHECK(memcmp(b, c, sizeof(float) * (size_t)B * 10) == 0,
                  "%s: column-major model's logits differ at B=%d", what, B);
        }
        nz_model_free(&ld);
    }
    unlink(path);
    free(x);
    nz_model_free(&sp);
    nz_model_free(&ref);
}

/* ---------------------------------------------------------------- pruning */

static void test_prune_layer(void) {
    nz_rng r;
    nz_rng_seed(&r, 404);
    const size_t n = 1000;
    float *W = malloc(sizeof(float) * n), *orig = malloc(sizeof(float) * n);
    static const float sps[] = {0.0f, 0.1f, 0.37f, 0.9f, 0.99f, 0.999f, 1.0f};
    for (size_t si = 0; si < sizeof sps / sizeof sps[0]; si++) {
        /* distinct magnitudes (i+1)/n in a random order, random signs */
        for (size_t i = 0; i < n; i++) orig[i] = (float)(i + 1) / (float)n;
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = (size_t)nz_rng_below(&r, i + 1);
            float t = orig[i];
            orig[i] = orig[j];
            orig[j] = t;
        }
        for (size_t i = 0; i < n; i++)
            if (nz_rng_below(&r, 2)) orig[i] = -orig[i];
        memcpy(W, orig, sizeof(float) * n);
        size_t kept = nz_prune_layer_to_sparsity(W, n, sps[si]);
        size_t want = (size_t)lround((1.0 - (double)sps[si]) * (double)n), nonzero = 0;
        float min_kept = INFINITY, max_cut = 0;
        int changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (W[i] != 0.0f) {
                nonzero++;
                changed |= W[i] != orig[i];
                min_kept = fminf(min_kept, fabsf(W[i]));
            } else {
                max_cut = fmaxf(max_cut, fabsf(orig[i]));
            }
        }
        CHECK(kept == want && nonzero == want, "sparsity %g: kept %zu (%zu nonzero), want %zu",
              (double)sps[si], kept, nonzero, want);
        CHECK(!changed, "sparsity %g: a kept weight changed value", (double)sps[si]);
        CHECK(nonzero == 0 || nonzero == n || min_kept > max_cut,
              "sparsity %g: kept %g is smaller than removed %g", (double)sps[si],
              (double)min_kept, (double)max_cut);
    }
    /* already-zero weights count as removed */
    for (size_t i = 0; i < n; i++) W[i] = i % 10 < 3 ? 0.0f : (float)(i + 1);
    CHECK(nz_prune_layer_to_sparsity(W, n, 0.2f) == 700, "30%% zeros at sparsity 0.2 keep 700");
    CHECK(nz_prune_layer_to_sparsity(W, n, 0.5f) == 500, "30%% zeros at sparsity 0.5 keep 500");
    size_t nz = 0;
    for (size_t i = 0; i < n; i++) nz += W[i] != 0.0f;
    CHECK(nz == 500, "%zu nonzero after 0.5", nz);
    /* ties: all magnitudes equal, exactly the requested count survives */
    for (size_t i = 0; i < n; i++) W[i] = i % 2 ? 1.0f : -1.0f;
    CHECK(nz_prune_layer_to_sparsity(W, n, 0.75f) == 250, "ties at sparsity 0.75");
    nz = 0;
    for (size_t i = 0; i < n; i++) nz += W[i] != 0.0f;
    CHECK(nz == 250, "ties: %zu nonzero, want 250", nz);
    free(W);
    free(orig);
}

/* ---------------------------------------------------------------- k-means */

/* Brute-force Lloyd from given initial centroids: O(nk) nearest search (ties to the higher
 * centroid, as a value exactly at a midpoint is given to the upper cluster), empty clusters keep
 * their centroid, until no assignment changes. Returns the iterations used. */
static int lloyd_brute(const float *x, size_t n, int k, double *c, int32_t *asg, int max_iter) {
    double *sum = malloc(sizeof(double) * (size_t)k);
    size_t *cnt = malloc(sizeof(size_t) * (size_t)k);
    int it;
    for (it = 0; it < max_iter; it++) {
        memset(sum, 0, sizeof(double) * (size_t)k);
        memset(cnt, 0, sizeof(size_t) * (size_t)k);
        int changed = it == 0;
        for (size_t i = 0; i < n; i++) {
            int best = 0;
            double bd = INFINITY;
            for (int j = 0; j < k; j++) {
                double d = fabs((double)x[i] - c[j]);
                if (d <= bd) {
                    bd = d;
                    best = j;
                }
            }
            changed |= asg[i] != best;
            asg[i] = best;
            sum[best] += x[i];
            cnt[best]++;
        }
        if (!changed) break;
        for (int j = 0; j < k; j++)
            if (cnt[j]) c[j] = sum[j] / (double)cnt[j];
    }
    free(sum);
    free(cnt);
    return it;
}

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* the library's documented starting points, for the deterministic inits */
static void init_ref(const float *x, size_t n, int k, nz_kmeans_init init, double *c) {
    float *s = malloc(sizeof(float) * n);
    memcpy(s, x, sizeof(float) * n);
    qsort(s, n, sizeof(float), cmp_f);
    const double lo = s[0], hi = s[n - 1];
    for (int j = 0; j < k; j++) {
        if (init == NZ_KMEANS_LINEAR) {
            c[j] = k == 1 ? (lo + hi) / 2 : lo + (hi - lo) * j / (k - 1);
        } else {
            size_t idx = (size_t)(((double)j + 0.5) / k * (double)n);
            c[j] = s[idx < n ? idx : n - 1];
        }
    }
    free(s);
}

/* properties any converged result must have: sorted centroids inside [min, max], every value
 * assigned to a nearest centroid, every non-empty cluster's centroid its members' mean */
static void kmeans_properties(const float *x, size_t n, int k, const float *cent,
                              const int32_t *asg, const char *what) {
    float lo = x[0], hi = x[0];
    for (size_t i = 1; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    int sorted = 1, inside = 1, nearest = 1, in_range = 1, mean_ok = 1;
    for (int j = 0; j < k; j++) {
        if (j && cent[j] < cent[j - 1]) sorted = 0;
        if (!(cent[j] >= lo && cent[j] <= hi)) inside = 0;
    }
    const double scale = (double)hi - (double)lo + 1e-30;
    for (size_t i = 0; i < n && nearest && in_range; i++) {
        if (asg[i] < 0 || asg[i] >= k) {
            in_range = 0;
            break;
        }
        double d = fabs((double)x[i] - cent[asg[i]]);
        for (int j = 0; j < k; j++)
            if (fabs((double)x[i] - cent[j]) < d - 1e-6 * scale) nearest = 0;
    }
    if (in_range) {
        double *sum = calloc((size_t)k, sizeof(double));
        size_t *cnt = calloc((size_t)k, sizeof(size_t));
        for (size_t i = 0; i < n; i++) {
            sum[asg[i]] += x[i];
            cnt[asg[i]]++;
        }
        for (int j = 0; j < k; j++)
            if (cnt[j] && fabs(sum[j] / cnt[j] - cent[j]) > 1e-5 * (fabs(cent[j]) + 1e-3 * scale))
                mean_ok = 0;
        free(sum);
        free(cnt);
    }
    CHECK(sorted, "%s: centroids not sorted", what);
    CHECK(inside, "%s: a centroid outside [%g, %g]", what, (double)lo, (double)hi);
    CHECK(in_range, "%s: an assignment out of 0..%d", what, k - 1);
    CHECK(nearest, "%s: a value not assigned to a nearest centroid", what);
    CHECK(mean_ok, "%s: a centroid is not its cluster's mean (not converged)", what);
}

static void test_kmeans(void) {
    static const int ks[] = {1, 2, 3, 16, 31, 255};
    static const char *init_name[] = {"linear", "density", "forgy", "kmeans++"};
    nz_rng r;
    nz_rng_seed(&r, 505);
    char what[128];
    for (int dist = 0; dist < 3; dist++) {
        const size_t n = dist == 2 ? 600 : 1500;
        float *x = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) {
            if (dist == 0) /* uniform */
                x[i] = nz_rng_range(&r, -1.0f, 1.0f);
            else if (dist == 1) /* heavy-tailed: a log-normal scale mixture of normals */
                x[i] = nz_rng_normal(&r) * expf(1.5f * nz_rng_normal(&r)) * 0.05f;
            else /* bimodal like pruned weights: no values near 0 */
                x[i] = (nz_rng_below(&r, 2) ? 1.0f : -1.0f) * (0.1f + fabsf(nz_rng_normal(&r)));
        }
        const char *dname = dist == 0 ? "uniform" : dist == 1 ? "heavy-tailed" : "bimodal";
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            const int k = ks[ki];
            float *cent = malloc(sizeof(float) * (size_t)k);
            double *c = malloc(sizeof(double) * (size_t)k);
            int32_t *asg = malloc(sizeof(int32_t) * n), *asg_ref = malloc(sizeof(int32_t) * n);
            for (int init = 0; init < 4; init++) {
                snprintf(what, sizeof what, "k-means %s k=%d %s init", dname, k, init_name[init]);
                nz_error e = {0};
                nz_rng kr;
                nz_rng_seed(&kr, 99 + (uint64_t)init);
                nz_status st = nz_kmeans_1d(x, n, k, (nz_kmeans_init)init, 100000, &kr, cent,
                                            asg, &e);
                CHECK(st == NZ_OK, "%s: %s", what, e.msg);
                if (st) continue;
                kmeans_properties(x, n, k, cent, asg, what);
                if (init > NZ_KMEANS_DENSITY) continue;
                /* deterministic inits: the same fixed point as a brute-force Lloyd */
                init_ref(x, n, k, (nz_kmeans_init)init, c);
                int its = lloyd_brute(x, n, k, c, asg_ref, 100000);
                CHECK(its < 100000, "%s: brute force did not converge", what);
                /* plain Lloyd keeps empty clusters; nnzip re-seeds them. Where the reference
                 * ended with no empty cluster both must reach the same fixed point; otherwise
                 * nnzip's quantization error must be no worse. */
                int ref_empty = 0;
                for (int j = 0; j < k; j++) {
                    size_t cnt = 0;
                    for (size_t i = 0; i < n; i++) cnt += asg_ref[i] == j;
                    ref_empty |= cnt == 0;
                }
                if (!ref_empty) {
                    double worst = 0;
                    for (int j = 0; j < k; j++) {
                        double d = fabs(cent[j] - c[j]) / fmax(fabs(c[j]), 1e-3);
                        worst = fmax(worst, d);
                    }
                    CHECK(worst < 1e-5, "%s: centroids differ from brute-force Lloyd by %g", what,
                          worst);
                } else {
                    double sse = 0, sse_ref = 0;
                    for (size_t i = 0; i < n; i++) {
                        sse += ((double)x[i] - cent[asg[i]]) * ((double)x[i] - cent[asg[i]]);
                        sse_ref += ((double)x[i] - c[asg_ref[i]]) * ((double)x[i] - c[asg_ref[i]]);
                    }
                    CHECK(sse <= sse_ref * (1 + 1e-6), "%s: SSE %g worse than plain Lloyd's %g",
                          what, sse, sse_ref);
                }
            }
            free(cent);
            free(c);
            free(asg);
            free(asg_ref);
        }
        free(x);
    }
    /* linear init: data sitting exactly on k evenly spaced points converges to those points,
     * the documented starting points lo + (hi - lo) j / (k - 1) */
    {
        const int k = 9;
        float x[9 * 5], cent[9];
        int32_t asg[9 * 5];
        for (int j = 0; j < k; j++)
            for (int t = 0; t < 5; t++) x[j * 5 + t] = -2.0f + 0.5f * (float)j;
        nz_error e = {0};
        CHECK(nz_kmeans_1d(x, 45, k, NZ_KMEANS_LINEAR, 100, NULL, cent, asg, &e) == NZ_OK, "%s",
              e.msg);
        int ok = 1;
        for (int j = 0; j < k; j++) ok &= cent[j] == -2.0f + 0.5f * (float)j;
        for (int i = 0; i < 45; i++) ok &= asg[i] == i / 5;
        CHECK(ok, "linear init on evenly spaced data does not stay put");
        /* k = 1: the mean */
        CHECK(nz_kmeans_1d(x, 45, 1, NZ_KMEANS_LINEAR, 100, NULL, cent, asg, &e) == NZ_OK &&
                  fabsf(cent[0] - 0.0f) < 1e-6f,
              "k = 1 gives %g, want the mean 0", (double)cent[0]);
        /* constant data */
        for (int i = 0; i < 45; i++) x[i] = 0.25f;
        CHECK(nz_kmeans_1d(x, 45, 4, NZ_KMEANS_DENSITY, 100, NULL, cent, asg, &e) == NZ_OK &&
                  cent[0] == 0.25f && cent[3] == 0.25f,
              "constant data");
        /* bad arguments */
        CHECK(nz_kmeans_1d(x, 0, 4, NZ_KMEANS_LINEAR, 100, NULL, cent, asg, &e) == NZ_ERR_ARG,
              "n = 0");
        CHECK(nz_kmeans_1d(x, 45, 0, NZ_KMEANS_LINEAR, 100, NULL, cent, asg, &e) == NZ_ERR_ARG,
              "k = 0");
    }
}

/* ---------------------------------------------------------------- trained quantization */

static void test_quantize(void) {
    nz_dataset ds;
    make_synthetic(&ds, 512, 606);
    nz_error e = {0};
    nz_model m;
    if (nz_zoo_build(&m, "lenet300", ds.shape, 10, &e) != NZ_OK) {
        CHECK(0, "build: %s", e.msg);
        nz_dataset_free(&ds);
        return;
    }
    nz_rng r;
    nz_rng_seed(&r, 607);
    nz_model_init_params(&m, &r);
    nz_train_cfg tc;
    nz_train_cfg_default(&tc);
    tc.epochs = 2;
    tc.batch = 32;
    tc.seed = 1;
    nz_train_result tr;
    double t0 = now_sec();
    CHECK(nz_train(&m, &ds, NULL, &tc, NULL, &tr, &e) == NZ_OK, "train: %s", e.msg);
    double t1 = now_sec();

    nz_prune_cfg pc;
    nz_prune_cfg_default(&pc, &m);
    pc.rounds = 2;
    pc.epochs_per_round = 1;
    pc.train.batch = 32;
    nz_prune_result pr;
    CHECK(nz_prune(&m, &ds, NULL, &pc, NULL, &pr, &e) == NZ_OK, "prune: %s", e.msg);
    double t2 = now_sec();
    CHECK(pr.n_layers == 3, "prune: %d layers", pr.n_layers);
    for (int l = 0; l < pr.n_layers; l++) {
        double kept = (double)pr.kept[l] / (double)pr.total[l];
        double want = 1.0 - nz_prune_default_sparsity(&m, pr.node[l]);
        CHECK(kept <= want + 1e-3, "prune: layer %d keeps %.3f, target %.3f", pr.node[l], kept,
              want);
    }
    nz_eval_result ev_pruned, ev0, ev1;
    CHECK(nz_evaluate(&m, &ds, 128, &ev_pruned, &e) == NZ_OK, "%s", e.msg);

    nz_model q0, q1;
    CHECK(nz_model_copy(&q0, &m, &e) == NZ_OK && nz_model_copy(&q1, &m, &e) == NZ_OK, "copy");
    nz_quant_cfg qc;
    nz_quant_cfg_default(&qc);
    qc.fc_bits = 4;
    qc.bits[m.n_nodes - 1] = 3; /* the classifier: a per-node override */
    qc.train.batch = 32;
    qc.finetune_epochs = 0;
    nz_quant_result qr0, qr1;
    CHECK(nz_quantize(&q0, &ds, NULL, &qc, NULL, &qr0, &e) == NZ_OK, "quantize: %s", e.msg);
    qc.finetune_epochs = 1;
    double t3 = now_sec();
    CHECK(nz_quantize(&q1, &ds, NULL, &qc, NULL, &qr1, &e) == NZ_OK, "quantize+ft: %s", e.msg);
    printf("quantize: train %.2f s, prune %.2f s, quantize %.2f s, quantize + fine-tune %.2f s\n",
           t1 - t0, t2 - t1, t3 - t2, now_sec() - t3);

    const nz_model *qs[2] = {&q0, &q1};
    for (int v = 0; v < 2; v++) {
        const nz_model *q = qs[v];
        for (int i = 0; i < q->n_nodes; i++) {
            if (!nz_node_is_weighted(&q->nodes[i])) continue;
            const int bits = i == m.n_nodes - 1 ? 3 : 4;
            const nz_sparse *s = q->nodes[i].params[0].sparse;
            const nz_param *pm = &m.nodes[i].params[0];
            CHECK(s != NULL, "quantize %d: node %d is not sparse", v, i);
            if (!s) continue;
            CHECK(s->n_codebook >= 2 && s->n_codebook <= (1 << bits) && s->code_bits == bits &&
                      s->codebook[0] == 0.0f,
                  "quantize %d: node %d: %d codebook entries, %d code bits (want <= %d, %d)", v,
                  i, s->n_codebook, s->code_bits, 1 << bits, bits);
            CHECK(sparse_valid(s), "quantize %d: node %d breaks CSR invariants", v, i);
            /* the zero pattern is the pruned one */
            float *W = malloc(sizeof(float) * pm->n);
            nz_sparse_to_dense(s, W);
            size_t differ = 0;
            for (size_t j = 0; j < pm->n; j++)
                differ += (W[j] == 0.0f) != (m.params[pm->off + j] == 0.0f);
            CHECK(differ == 0, "quantize %d: node %d: zero pattern differs at %zu positions", v,
                  i, differ);
            free(W);
        }
        CHECK(nz_model_validate(q, &e) == NZ_OK, "quantized model invalid: %s", e.msg);
    }
    CHECK(nz_evaluate(&q0, &ds, 128, &ev0, &e) == NZ_OK, "%s", e.msg);
    CHECK(nz_evaluate(&q1, &ds, 128, &ev1, &e) == NZ_OK, "%s", e.msg);
    printf("quantize: train loss pruned %.4f, quantized %.4f, fine-tuned %.4f\n",
           (double)ev_pruned.loss, (double)ev0.loss, (double)ev1.loss);
    CHECK(ev1.loss <= ev0.loss + 0.02f, "fine-tuning raised the train loss %.4f -> %.4f",
          (double)ev0.loss, (double)ev1.loss);
    CHECK(ev0.loss <= ev_pruned.loss + 0.25f, "4-bit quantization: loss %.4f -> %.4f",
          (double)ev_pruned.loss, (double)ev0.loss);
    nz_model_free(&q0);
    nz_model_free(&q1);
    nz_model_free(&m);
    nz_dataset_free(&ds);
}

/* a layer pruned to nothing still quantizes to a valid (empty) sparse form that saves and
 * loads; a layer with fewer survivors than 2^bits - 1 gets one code per distinct value */
static void test_quantize_edge(const char *dir) {
    nz_error e = {0};
    nz_model m, ld;
    if (nz_model_init(&m, "edge", (nz_shape){1, 4, 4}, 3, &e)) return;
    int x = nz_model_add_flatten(&m, "flatten", 0, &e);
    int fc1 = x >= 0 ? nz_model_add_dense(&m, "fc1", x, 8, &e) : -1;
    x = fc1 >= 0 ? nz_model_add_relu(&m, "relu1", fc1, &e) : -1;
    int fc2 = x >= 0 ? nz_model_add_dense(&m, "fc2", x, 3, &e) : -1;
    CHECK(fc2 > 0, "edge model: %s", e.msg);
    if (fc2 <= 0) return;
    nz_rng r;
    nz_rng_seed(&r, 909);
    nz_model_init_params(&m, &r);
    nz_param *p1 = &m.nodes[fc1].params[0], *p2 = &m.nodes[fc2].params[0];
    memset(m.params + p2->off, 0, sizeof(float) * p2->n);
    nz_prune_layer_to_sparsity(m.params + p1->off, p1->n, 1.0f - 5.0f / (float)p1->n);
    float before[8 * 16], after[8 * 16];
    memcpy(before, m.params + p1->off, sizeof before);
    nz_quant_cfg qc;
    nz_quant_cfg_default(&qc);
    qc.finetune_epochs = 0;
    nz_quant_result qr;
    CHECK(nz_quantize(&m, NULL, NULL, &qc, NULL, &qr, &e) == NZ_OK, "quantize: %s", e.msg);
    const nz_sparse *s1 = m.nodes[fc1].params[0].sparse, *s2 = m.nodes[fc2].params[0].sparse;
    CHECK(s2 && s2->nnz == 0 && s2->n_codebook >= 2 && s2->codebook[0] == 0.0f,
          "all-zero layer after quantization");
    /* 5 survivors and 2^5 - 1 shared values: quantization can (and must) be exact */
    CHECK(s1 && s1->nnz == 5, "5 survivors: %u nonzeros", s1 ? s1->nnz : 0);
    if (s1) {
        nz_sparse_to_dense(s1, after);
        int exact = memcmp(before, after, sizeof before) == 0;
        CHECK(exact, "5 survivors with 31 codes are not kept exactly: %d shared values used "
                     "(k-means left clusters empty)", s1->n_codebook - 1);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/edge.nnz", dir);
    CHECK(nz_save(&m, NULL, path, &e) == NZ_OK, "save: %s", e.msg);
    if (nz_load(path, &ld, NULL, &e) == NZ_OK) {
        float xin[16], a[3], b[3];
        for (int i = 0; i < 16; i++) xin[i] = nz_rng_normal(&r);
        logits_of(&m, xin, 1, a);
        logits_of(&ld, xin, 1, b);
        CHECK(memcmp(a, b, sizeof a) == 0, "edge model: loaded logits differ");
        nz_model_free(&ld);
    } else {
        CHECK(0, "load: %s", e.msg);
    }
    unlink(path);
    nz_model_free(&m);
}

/* ---------------------------------------------------------------- malformed payloads */

typedef struct {
    size_t ncb_off, gl_off, vl_off; /* offsets of the u16 codebook size and the two u32 lengths */
    size_t gs_off, vs_off;          /* stream starts */
    uint32_t n, nnz, gl, vl;
} layout;

static layout layout_of(const uint8_t *p) {
    layout L;
    L.n = get32(p + 4);
    L.nnz = get32(p + 8);
    L.ncb_off = 16;
    int k = p[16] | p[17] << 8;
    L.gl_off = 18 + 4 * (size_t)k;
    L.gl = get32(p + L.gl_off);
    L.gs_off = L.gl_off + 4;
    L.vl_off = L.gs_off + L.gl;
    L.vl = get32(p + L.vl_off);
    L.vs_off = L.vl_off + 4;
    return L;
}

/* writes a bits-wide value at bit position pos of a LSB-first stream */
static void set_bits(uint8_t *p, size_t pos, int bits, uint32_t v) {
    for (int b = 0; b < bits; b++) {
        size_t q = pos + (size_t)b;
        if (v >> b & 1)
            p[q / 8] |= (uint8_t)(1u << (q % 8));
        else
            p[q / 8] &= (uint8_t)~(1u << (q % 8));
    }
}

/* decode must refuse with NZ_ERR_CORRUPT (or NZ_ERR_ARG for bad shapes), set no output, and
 * leave a one-line message. The exact-size copy lets ASan see any read past the end. */
static void expect_refused(const uint8_t *buf, size_t len, int rows, int cols, const char *what) {
    uint8_t *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, buf, len);
    nz_sparse *s = (nz_sparse *)copy;
    nz_error e = {0};
    nz_status st = nz_sparse_decode(copy, len, rows, cols, &s, &e);
    CHECK(st == NZ_ERR_CORRUPT && s == NULL && e.code == st && e.msg[0] && !strchr(e.msg, '\n'),
          "%s: decode returned %d (%s)", what, (int)st, e.msg);
    if (st == NZ_OK) nz_sparse_free(s);
    free(copy);
}

/* Decode a possibly damaged payload: it must be refused, or accepted with valid invariants and
 * re-encode to the same matrix. Returns the status. */
static nz_status decode_any(const uint8_t *buf, size_t len, int rows, int cols, const char *what) {
    uint8_t *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, buf, len);
    nz_sparse *s = NULL, *t = NULL;
    nz_error e = {0};
    nz_status st = nz_sparse_decode(copy, len, rows, cols, &s, &e);
    if (st) {
        CHECK(s == NULL && e.code == st && e.msg[0], "%s: error %d without a message", what,
              (int)st);
    } else {
        CHECK(sparse_valid(s) && s->rows == rows && s->cols == cols, "%s: accepted but invalid",
              what);
        uint8_t *re = NULL;
        size_t rl = 0;
        CHECK(nz_sparse_encode(s, &re, &rl, &e) == NZ_OK, "%s: re-encode: %s", what, e.msg);
        if (re && nz_sparse_decode(re, rl, rows, cols, &t, &e) == NZ_OK) {
            float *a = malloc(sizeof(float) * (size_t)rows * cols);
            float *b = malloc(sizeof(float) * (size_t)rows * cols);
            nz_sparse_to_dense(s, a);
            nz_sparse_to_dense(t, b);
            CHECK(memcmp(a, b, sizeof(float) * (size_t)rows * cols) == 0,
                  "%s: re-encoding changes the matrix", what);
            free(a);
            free(b);
        } else {
            CHECK(0, "%s: re-encoded payload refused: %s", what, e.msg);
        }
        free(re);
    }
    nz_sparse_free(s);
    nz_sparse_free(t);
    free(copy);
    return st;
}

static uint8_t *encode_matrix(const float *W, int rows, int cols, const float *cb, int k,
                              int index_bits, int huffman, int col_major, size_t *len) {
    nz_sparse *s = NULL;
    uint8_t *buf = NULL;
    nz_error e = {0};
    *len = 0;
    if (nz_sparse_from_dense(&s, W, rows, cols, cb, k, index_bits, &e) != NZ_OK) {
        CHECK(0, "from_dense: %s", e.msg);
        return NULL;
    }
    s->huffman = huffman;
    s->col_major = col_major;
    if (nz_sparse_encode(s, &buf, len, &e) != NZ_OK) CHECK(0, "encode: %s", e.msg);
    nz_sparse_free(s);
    return buf;
}

static void test_malformed(void) {
    /* 6x10 with a gap larger than 2^3 (fillers), empty rows and the last position set */
    enum { R = 6, C = 10 };
    float W[R * C] = {0}, cb[5] = {0.0f, -1.5f, -0.25f, 0.5f, 2.0f};
    const int pos[] = {0, 3, 4, 17, 18, 40, 41, 42, 59};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) W[pos[i]] = cb[1 + i % 4];
    /* column-major, the positions run (0,0) (4,0) (4,1) (4,2) (0,3) (0,4) (1,7) (1,8) (5,9):
     * gaps 1 4 6 6 2 6 19 6 10, so fillers at 2 and 3 bits too */
    struct {
        const char *name;
        int use_cb, huffman, index_bits, col_major;
        uint8_t *buf;
        size_t len;
    } base[] = {{"f32 packed", 0, 0, 3, 0, NULL, 0},
                {"codebook packed", 1, 0, 2, 0, NULL, 0},
                {"codebook huffman", 1, 1, 3, 0, NULL, 0},
                {"f32 huffman", 0, 1, 4, 0, NULL, 0},
                {"col f32 packed", 0, 0, 3, 1, NULL, 0},
                {"col codebook packed", 1, 0, 3, 1, NULL, 0},
                {"col codebook huffman", 1, 1, 2, 1, NULL, 0}};
    const int nb = (int)(sizeof base / sizeof base[0]);
    for (int b = 0; b < nb; b++) {
        base[b].buf = encode_matrix(W, R, C, base[b].use_cb ? cb : NULL, base[b].use_cb ? 5 : 0,
                                    base[b].index_bits, base[b].huffman, base[b].col_major,
                                    &base[b].len);
        if (!base[b].buf) return;
        CHECK(decode_any(base[b].buf, base[b].len, R, C, base[b].name) == NZ_OK,
              "%s: the valid base payload is refused", base[b].name);
    }
    char what[160];
    uint8_t *p = malloc(4096);
    for (int b = 0; b < nb; b++) {
        const uint8_t *v = base[b].buf;
        const size_t len = base[b].len;
        const layout L = layout_of(v);
        const char *bn = base[b].name;
#define PATCHED(desc, stmt)                                                                   \
    do {                                                                                      \
        memcpy(p, v, len);                                                                    \
        stmt;                                                                                 \
        snprintf(what, sizeof what, "%s: %s", bn, desc);                                      \
        expect_refused(p, len, R, C, what);                                                   \
    } while (0)
        /* shapes the positions do not fit */
        snprintf(what, sizeof what, "%s: one row too few", bn);
        expect_refused(v, len, R - 1, C, what);
        snprintf(what, sizeof what, "%s: one column too few", bn);
        expect_refused(v, len, R, C - 1, what);
        snprintf(what, sizeof what, "%s: 1x1", bn);
        expect_refused(v, len, 1, 1, what);
        snprintf(what, sizeof what, "%s: rows 0", bn);
        expect_refused(v, len, 0, C, what);
        snprintf(what, sizeof what, "%s: cols -1", bn);
        expect_refused(v, len, R, -1, what);
        /* header fields */
        PATCHED("n_entries + 1", put32(p + 4, L.n + 1));
        PATCHED("n_entries - 1", put32(p + 4, L.n - 1));
        PATCHED("n_entries + 8", put32(p + 4, L.n + 8));
        PATCHED("n_entries 2^32-1", put32(p + 4, 0xFFFFFFFFu));
        PATCHED("n_entries 0", put32(p + 4, 0));
        PATCHED("nonzeros + 1", put32(p + 8, L.nnz + 1));
        PATCHED("nonzeros - 1", put32(p + 8, L.nnz - 1));
        PATCHED("nonzeros 0", put32(p + 8, 0));
        PATCHED("nonzeros > entries", put32(p + 8, L.n + 1));
        PATCHED("nonzeros 2^32-1", put32(p + 8, 0xFFFFFFFFu));
        for (int bit = 2; bit < 8; bit++) {
            char d[32];
            if (bit == 3) continue; /* the order: either value is valid (below) */
            snprintf(d, sizeof d, "flag bit %d", bit);
            PATCHED(d, p[0] |= (uint8_t)(1u << bit));
        }
        {
            /* the other order reads the same positions as other cells: the last entry stays in
             * place (position 59 is (5,9) either way), the matrix must differ */
            memcpy(p, v, len);
            p[0] ^= 8;
            nz_sparse *a = NULL, *t = NULL;
            nz_error e = {0};
            CHECK(nz_sparse_decode(v, len, R, C, &a, &e) == NZ_OK &&
                      nz_sparse_decode(p, len, R, C, &t, &e) == NZ_OK && sparse_valid(t) &&
                      t->col_major == !base[b].col_major,
                  "%s: order flag toggled: %s", bn, e.msg);
            if (a && t) {
                float da[R * C], dt[R * C];
                nz_sparse_to_dense(a, da);
                nz_sparse_to_dense(t, dt);
                CHECK(memcmp(da, W, sizeof W) == 0 && memcmp(dt, W, sizeof W) != 0 &&
                          dt[R * C - 1] == W[R * C - 1],
                      "%s: order flag toggled: the matrix", bn);
            }
            nz_sparse_free(a);
            nz_sparse_free(t);
        }
        PATCHED("codebook flag toggled", p[0] ^= 1);
        PATCHED("reserved byte 3", p[3] = 1);
        for (int i = 12; i < 16; i++) PATCHED("reserved u32", p[i] = 0x80);
        PATCHED("index_bits 0", p[1] = 0);
        PATCHED("index_bits 13", p[1] = 13);
        PATCHED("index_bits 255", p[1] = 255);
        if (base[b].use_cb) {
            PATCHED("code_bits 9", p[2] = 9);
            PATCHED("code_bits 0", p[2] = 0);
            PATCHED("code_bits 2 (< 5 entries)", p[2] = 2);
            PATCHED("codebook size 1", p[16] = 1);
            PATCHED("codebook size 0", p[16] = 0);
            PATCHED("codebook size 9 > 2^3", p[16] = 9);
            PATCHED("codebook size 4", p[16] = 4);
            PATCHED("codebook size 0x105", p[16] = 5; p[17] = 1);
            PATCHED("codebook[0] = 1", put32(p + 18, 0x3F800000u));
            PATCHED("codebook[0] = -1e-45", put32(p + 18, 0x80000001u));
            PATCHED("codebook[2] NaN", put32(p + 18 + 8, 0x7FC00000u));
            PATCHED("codebook[3] inf", put32(p + 18 + 12, 0x7F800000u));
        } else {
            PATCHED("code_bits 1 without a codebook", p[2] = 1);
            PATCHED("codebook size 2 without a codebook", p[16] = 2);
        }
        /* stream lengths */
        PATCHED("index length + 1", put32(p + L.gl_off, L.gl + 1));
        PATCHED("index length - 1", put32(p + L.gl_off, L.gl - 1));
        PATCHED("index length 2^32-1", put32(p + L.gl_off, 0xFFFFFFFFu));
        PATCHED("index length = payload", put32(p + L.gl_off, (uint32_t)len));
        PATCHED("value length + 1", put32(p + L.vl_off, L.vl + 1));
        PATCHED("value length - 1", put32(p + L.vl_off, L.vl - 1));
        PATCHED("value length 2^32-1", put32(p + L.vl_off, 0xFFFFFFFFu));
        PATCHED("value length 0", put32(p + L.vl_off, 0));
        if (!base[b].huffman) {
            const int ib = base[b].index_bits;
            /* the last entry (the last position) pushed further: past the end */
            PATCHED("last gap maximal", set_bits(p + L.gs_off, (size_t)ib * (L.n - 1), ib,
                                                 (1u << ib) - 1));
            /* the first entry moved by the largest gap 2^b repeatedly: positions past the end
             * show up once every gap is maximal */
            PATCHED("every gap maximal", for (uint32_t q = 0; q < L.n; q++)
                                             set_bits(p + L.gs_off, (size_t)ib * q, ib,
                                                      (1u << ib) - 1));
            if (base[b].use_cb) {
                PATCHED("code 5 >= k", set_bits(p + L.vs_off, 0, 3, 5));
                PATCHED("code 7 >= k", set_bits(p + L.vs_off, 3 * (L.n - 1), 3, 7));
                /* a filler turned into a nonzero: more nonzeros than declared */
                int filler = -1;
                for (uint32_t q = 0; q < L.n && filler < 0; q++) {
                    uint32_t code = 0;
                    for (uint32_t t = 0; t < 3; t++)
                        code |= (uint32_t)(v[L.vs_off + (3 * q + t) / 8] >> ((3 * q + t) % 8) & 1)
                                << t;
                    if (code == 0) filler = (int)q;
                }
                CHECK(filler >= 0, "%s: no filler entry to patch", bn);
                if (filler >= 0)
                    PATCHED("filler given a code", set_bits(p + L.vs_off, 3 * (size_t)filler, 3, 2));
                if (3 * (size_t)L.n % 8)
                    PATCHED("non-zero code padding bits", p[L.vs_off + L.vl - 1] |= 0x80);
            } else {
                /* an f32 filler value made nonzero */
                int filler = -1;
                for (uint32_t q = 0; q < L.n && filler < 0; q++)
                    if (get32(v + L.vs_off + 4 * (size_t)q) == 0) filler = (int)q;
                CHECK(filler >= 0, "%s: no filler entry to patch", bn);
                if (filler >= 0)
                    PATCHED("filler given a value",
                            put32(p + L.vs_off + 4 * (size_t)filler, 0x3F800000u));
                PATCHED("a nonzero turned into 0", put32(p + L.vs_off + 4 * (size_t)(L.n - 1), 0));
            }
            if ((size_t)ib * L.n % 8)
                PATCHED("non-zero index padding bits", p[L.gs_off + L.gl - 1] |= 0x80);
        }
#undef PATCHED
        /* every truncation, and one byte too many */
        for (size_t t = 0; t < len; t++) {
            snprintf(what, sizeof what, "%s: truncated to %zu of %zu bytes", bn, t, len);
            expect_refused(v, t, R, C, what);
        }
        memcpy(p, v, len);
        p[len] = 0;
        snprintf(what, sizeof what, "%s: one trailing byte", bn);
        expect_refused(p, len + 1, R, C, what);
        /* every single-bit flip: never a crash or leak; structural fields must be refused; in
         * the streams a flip may give another valid matrix (only the file CRC catches that) */
        int accepted = 0;
        for (size_t bit = 0; bit < 8 * len; bit++) {
            memcpy(p, v, len);
            p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            const size_t byte = bit / 8;
            /* flag bits 1 (Huffman) and 3 (order) may give another valid reading */
            const int structural = (byte == 0 && bit % 8 != 1 && bit % 8 != 3) ||
                                   (byte >= 3 && byte < 18) ||
                                   /* codebook[0] must stay 0 (its sign bit gives -0 == 0) */
                                   (base[b].use_cb && byte >= 18 && bit < 8 * 22 - 1) ||
                                   (byte >= L.gl_off && byte < L.gl_off + 4) ||
                                   (byte >= L.vl_off && byte < L.vl_off + 4);
            snprintf(what, sizeof what, "%s: bit %zu flipped", bn, bit);
            if (structural)
                expect_refused(p, len, R, C, what);
            else
                accepted += decode_any(p, len, R, C, what) == NZ_OK;
        }
        printf("%s: %zu-byte payload, %d of %zu non-structural bit flips still decode\n", bn, len,
               accepted, 8 * len);
    }
    /* random multi-byte damage: must never crash; accepted results must be consistent */
    nz_rng r;
    nz_rng_seed(&r, 707);
    for (int it = 0; it < 4000; it++) {
        const int b = it % nb;
        const size_t len = base[b].len;
        memcpy(p, base[b].buf, len);
        int nmut = 1 + (int)nz_rng_below(&r, 4);
        for (int q = 0; q < nmut; q++) p[nz_rng_below(&r, len)] = (uint8_t)nz_rng_below(&r, 256);
        snprintf(what, sizeof what, "%s: random damage %d", base[b].name, it);
        decode_any(p, len, R, C, what);
    }
    free(p);
    for (int b = 0; b < nb; b++) free(base[b].buf);
}

/* Backward compatibility: a payload written before column-major storage existed (bytes of
 * fuzz/corpus/sparse/codebook_packed, the 6x10 matrix of test_malformed, 2-bit gaps, packed)
 * still decodes to that matrix, row-major, and today's encoder writes the same bytes back. */
static void test_old_payload(void) {
    static const uint8_t old[60] = {
        0x01, 0x02, 0x03, 0x00, 0x15, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xbf, 0x00, 0x00, 0x80, 0xbe,
        0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x00, 0x40, 0x06, 0x00, 0x00, 0x00, 0xc8, 0x0f, 0xff,
        0x07, 0xff, 0x00, 0x08, 0x00, 0x00, 0x00, 0xd1, 0x00, 0x30, 0x00, 0x00, 0x8d, 0x00, 0x10};
    enum { R = 6, C = 10 };
    float W[R * C] = {0}, back[R * C];
    const float cb[5] = {0.0f, -1.5f, -0.25f, 0.5f, 2.0f};
    const int pos[] = {0, 3, 4, 17, 18, 40, 41, 42, 59};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) W[pos[i]] = cb[1 + i % 4];
    nz_sparse *s = NULL;
    nz_error e = {0};
    CHECK(nz_sparse_decode(old, sizeof old, R, C, &s, &e) == NZ_OK, "old payload: %s", e.msg);
    if (!s) return;
    nz_sparse_to_dense(s, back);
    CHECK(!s->col_major && !s->col_ptr && sparse_valid(s) && memcmp(back, W, sizeof W) == 0,
          "old payload: decoded matrix");
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(nz_sparse_encode(s, &buf, &len, &e) == NZ_OK && len == sizeof old &&
              memcmp(buf, old, len) == 0,
          "old payload: re-encoded bytes differ (%zu bytes)", len);
    free(buf);
    nz_sparse_free(s);
}

/* ---------------------------------------------------------------- .nnz files with sparse tensors */


/* tiny mlp: flatten -> fc1 (8) -> relu -> fc2 (3), both weights sparse */
static int tiny_sparse_model(nz_model *m, nz_error *e) {
    if (nz_model_init(m, "tiny", (nz_shape){1, 4, 4}, 3, e)) return -1;
    int x = nz_model_add_flatten(m, "flatten", 0, e);
    int fc1 = x >= 0 ? nz_model_add_dense(m, "fc1", x, 8, e) : -1;
    x = fc1 >= 0 ? nz_model_add_relu(m, "relu1", fc1, e) : -1;
    int fc2 = x >= 0 ? nz_model_add_dense(m, "fc2", x, 3, e) : -1;
    if (fc2 < 0) return -1;
    nz_rng r;
    nz_rng_seed(&r, 808);
    nz_model_init_params(m, &r);
    nz_param *p = &m->nodes[fc1].params[0];
    nz_prune_layer_to_sparsity(m->params + p->off, p->n, 0.7f);
    if (nz_model_sparsify_param(m, fc1, NULL, 0, 3, e)) return -1;
    m->nodes[fc1].params[0].sparse->huffman = 1;
    float cb[4] = {0.0f, -0.5f, 0.25f, 0.75f};
    p = &m->nodes[fc2].params[0];
    float *W = m->params + p->off;
    for (size_t j = 0; j < p->n; j++) W[j] = j % 3 == 0 ? 0.0f : cb[1 + j % 3];
    if (nz_model_sparsify_param(m, fc2, cb, 4, 2, e)) return -1;
    return fc1;
}

static void test_files(const char *dir) {
    nz_error e = {0};
    nz_model m, ld;
    int fc1 = tiny_sparse_model(&m, &e);
    CHECK(fc1 > 0, "tiny model: %s", e.msg);
    if (fc1 <= 0) return;
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.nnz", dir);
    CHECK(nz_save(&m, NULL, path, &e) == NZ_OK, "save: %s", e.msg);
    size_t len = 0;
    uint8_t *file = read_all(path, &len);
    CHECK(file && len > 100, "read back %zu bytes", len);
    if (!file) {
        nz_model_free(&m);
        return;
    }
    CHECK(nz_load_buffer(file, len, "tiny.nnz", &ld, NULL, &e) == NZ_OK, "load: %s", e.msg);
    if (e.code == NZ_OK) nz_model_free(&ld);
    uint8_t *p = malloc(len + 1);
    int bad_trunc = 0, bad_flip = 0;
    for (size_t t = 0; t < len; t++) {
        memcpy(p, file, t);
        if (nz_load_buffer(p, t, "tiny.nnz", &ld, NULL, &e) == NZ_OK) {
            bad_trunc++;
            nz_model_free(&ld);
        }
    }
    for (size_t bit = 0; bit < 8 * len; bit++) {
        memcpy(p, file, len);
        p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        if (nz_load_buffer(p, len, "tiny.nnz", &ld, NULL, &e) == NZ_OK) {
            bad_flip++;
            nz_model_free(&ld);
        }
    }
    CHECK(bad_trunc == 0, "%d truncations of a sparse .nnz accepted", bad_trunc);
    CHECK(bad_flip == 0, "%d single-bit flips of a sparse .nnz accepted", bad_flip);
    free(p);
    free(file);
    unlink(path);

    /* a SPARSE encoding on a bias slot is refused by the reader */
    nz_param *b = &m.nodes[fc1].params[1];
    nz_sparse *sb = NULL;
    CHECK(nz_sparse_from_dense(&sb, m.params + b->off, b->dims[0], 1, NULL, 0, 4, &e) == NZ_OK,
          "bias sparse form: %s", e.msg);
    b->sparse = sb;
    b->n = 0;
    b->off = 0;
    snprintf(path, sizeof path, "%s/bias.nnz", dir);
    nz_status st = nz_save(&m, NULL, path, &e);
    if (st == NZ_OK) {
        st = nz_load(path, &ld, NULL, &e);
        CHECK(st == NZ_ERR_FORMAT && strstr(e.msg, "fc1.b"),
              "a sparse bias loaded: status %d (%s)", (int)st, e.msg);
        if (st == NZ_OK) nz_model_free(&ld);
        unlink(path);
    } else { /* the writer refusing it is fine too */
        printf("sparse bias: refused by the writer: %s\n", e.msg);
    }
    nz_model_free(&m);
}

/* A codebook stored as binary16: values representable in f16 survive exactly; the flag is
 * refused without a codebook. */
static void test_f16_codebook(void) {
    const float cb[4] = {0.0f, -0.5f, 0.25f, 1.5f};
    float W[6 * 7];
    for (int i = 0; i < 42; i++) W[i] = (i % 5 == 0) ? cb[1 + i % 3] : 0.0f;
    nz_sparse *s = NULL, *d = NULL;
    nz_error e = {0};
    CHECK(nz_sparse_from_dense(&s, W, 6, 7, cb, 4, 3, &e) == NZ_OK, "%s", e.msg);
    if (!s) return;
    s->codebook_f16 = 1;
    s->huffman = 1;
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(nz_sparse_encode(s, &buf, &len, &e) == NZ_OK, "%s", e.msg);
    CHECK(nz_sparse_decode(buf, len, 6, 7, &d, &e) == NZ_OK, "f16 codebook decode: %s", e.msg);
    if (d) {
        float back[42];
        nz_sparse_to_dense(d, back);
        CHECK(memcmp(back, W, sizeof W) == 0, "f16 codebook round trip differs");
        CHECK(d->codebook_f16 == 1, "f16 flag lost");
        nz_sparse_free(d);
        d = NULL;
    }
    if (buf) {
        buf[0] = 4 | 2; /* f16 codebook flag without the codebook flag */
        CHECK(nz_sparse_decode(buf, len, 6, 7, &d, &e) != NZ_OK, "f16 flag without codebook accepted");
        nz_sparse_free(d);
    }
    free(buf);
    nz_sparse_free(s);
}

/* The column form caches codebook values: a dense layer gets it when sparsified, and encoding
 * with a binary16 codebook (which rounds the codebook in memory) must refresh it. */
static void test_csc_follows_codebook(void) {
    nz_error e = {0};
    nz_model m;
    CHECK(nz_model_init(&m, "t", (nz_shape){1, 4, 4}, 5, &e) == NZ_OK, "%s", e.msg);
    int x = nz_model_add_flatten(&m, "flatten", 0, &e);
    int fc = x >= 0 ? nz_model_add_dense(&m, "fc", x, 5, &e) : -1;
    CHECK(fc > 0, "model: %s", e.msg);
    if (fc <= 0) {
        nz_model_free(&m);
        return;
    }
    const float cb[4] = {0.0f, 0.1f, -0.3f, 0.7f}; /* none exact in binary16 */
    nz_param *p = &m.nodes[fc].params[0];
    for (size_t j = 0; j < p->n; j++) m.params[p->off + j] = j % 4 ? cb[j % 4] : 0.0f;
    CHECK(nz_model_sparsify_param(&m, fc, cb, 4, 3, &e) == NZ_OK, "sparsify: %s", e.msg);
    nz_sparse *s = m.nodes[fc].params[0].sparse;
    CHECK(s && s->col_ptr && sparse_valid(s), "a sparsified dense layer has its column form");
    if (s && s->col_ptr) CHECK(s->cval[0] == 0.1f || s->cval[0] == -0.3f || s->cval[0] == 0.7f,
                               "column values are the codebook's");
    nz_encode_cfg ec;
    nz_encode_cfg_default(&ec);
    CHECK(nz_encode(&m, &ec, &e) == NZ_OK, "encode: %s", e.msg);
    s = m.nodes[fc].params[0].sparse;
    CHECK(s && s->codebook_f16 && s->codebook[1] != 0.1f, "the codebook was rounded to binary16");
    CHECK(s && s->col_ptr && sparse_valid(s), "the column form follows the rounded codebook");
    float in[16], y1[5], y2[5];
    for (int i = 0; i < 16; i++) in[i] = i % 3 ? 0.0f : 1.0f + (float)i;
    if (s) {
        nz_sparse_matvec_cols(s, in, y1);
        nz_sparse_matvec_rows(s, in, y2);
        CHECK(tl_max_rel_err(y1, y2, 5, 1.0) < 1e-6, "columns and rows agree after rounding");
    }
    nz_model_free(&m);
}

/* Codebooks outside binary16's range stay f32 (a large shared weight used to become infinity in
 * the file, which the reader then refused), biases too; a non-finite codebook is refused by the
 * encoder instead of written. */
static void test_encode_large_values(const char *dir) {
    nz_model m;
    nz_error e;
    if (nz_zoo_build(&m, "lenet300", (nz_shape){1, 28, 28}, 10, &e) != NZ_OK) {
        CHECK(0, "build: %s", e.msg);
        return;
    }
    int fc = -1;
    for (int i = 0; i < m.n_nodes && fc < 0; i++)
        if (m.nodes[i].op == NZ_OP_DENSE) fc = i;
    const float cb[4] = {0.0f, -1.5f, 0.25f, 1.0e6f};
    float *W = m.params + m.nodes[fc].params[0].off;
    for (size_t j = 0; j < m.nodes[fc].params[0].n; j++) W[j] = cb[j % 7 < 4 ? j % 7 : 0];
    float *b = m.params + m.nodes[fc].params[1].off;
    b[0] = 7.0e4f; /* beyond binary16 */
    CHECK(nz_model_sparsify_param(&m, fc, cb, 4, 5, &e) == NZ_OK, "sparsify: %s", e.msg);
    nz_model copy;
    CHECK(nz_model_copy(&copy, &m, &e) == NZ_OK, "copy: %s", e.msg);
    nz_encode_cfg ec;
    nz_encode_cfg_default(&ec);
    CHECK(nz_encode(&m, &ec, &e) == NZ_OK, "encode with a 1e6 shared weight: %s", e.msg);
    const nz_sparse *s = m.nodes[fc].params[0].sparse;
    CHECK(s && !s->codebook_f16 && s->codebook[3] == 1.0e6f, "the 1e6 codebook went to f16");
    CHECK(m.nodes[fc].params[1].store != NZ_STORE_F16, "a bias of 7e4 stored as f16");
    char path[512];
    snprintf(path, sizeof path, "%s/large.nnz", dir);
    CHECK(nz_save(&m, NULL, path, &e) == NZ_OK, "save: %s", e.msg);
    nz_model ld;
    if (nz_load(path, &ld, NULL, &e) != NZ_OK) {
        CHECK(0, "load of a model with a 1e6 shared weight: %s", e.msg);
    } else {
        const nz_sparse *t = ld.nodes[fc].params[0].sparse;
        CHECK(t && t->n_codebook == s->n_codebook && t->codebook[3] == 1.0e6f &&
                  ld.params[ld.nodes[fc].params[1].off] == 7.0e4f,
              "large values changed by save/load");
        nz_model_free(&ld);
    }
    unlink(path);
    /* NaN in a codebook: refused with the layer's name */
    nz_sparse *cs = copy.nodes[fc].params[0].sparse;
    cs->codebook[2] = NAN;
    CHECK(nz_encode(&copy, &ec, &e) == NZ_ERR_ARG && strstr(e.msg, copy.nodes[fc].name) &&
              strstr(e.msg, "not finite"),
          "a NaN shared weight was not refused: '%s'", e.msg);
    nz_model_free(&copy);
    nz_model_free(&m);
}

int main(void) {
    char dir[] = "/tmp/nnzip-test-compress-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    double t0 = now_sec(), t;
#define TIMED(call)                                                                           \
    do {                                                                                      \
        t = now_sec();                                                                        \
        call;                                                                                 \
        printf("  %-40s %.2f s\n", #call, now_sec() - t);                                     \
    } while (0)
    TIMED(test_roundtrips());
    TIMED(test_kernels());
    TIMED(test_csc_kernel());
    TIMED(test_panel_kernels());
    TIMED(test_model_level("lenet300", 0, dir));
    TIMED(test_model_level("lenet300", 1, dir));
    TIMED(test_model_level("lenet5", 0, dir));
    TIMED(test_model_level("lenet5", 1, dir));
    TIMED(test_prune_layer());
    TIMED(test_kmeans());
    TIMED(test_quantize());
    TIMED(test_quantize_edge(dir));
    TIMED(test_malformed());
    TIMED(test_old_payload());
    TIMED(test_csc_follows_codebook());
    TIMED(test_files(dir));
    TIMED(test_encode_large_values(dir));
    printf("round trips: %d (%d with filler entries); total %.2f s\n", rt_count, rt_filler_cases,
           now_sec() - t0);
    rmdir(dir);
    test_f16_codebook();
    return tl_finish("test_compress");
}
