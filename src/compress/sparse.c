/* Sparse weight tensors: the runtime form (CSR rows, columns, codebook codes, and for dense
 * layers the same entries by column), its compute kernels, and the stream encoding of Deep
 * Compression (relative indices with filler entries, packed or Huffman-coded, positions row- or
 * column-major). Layout of the encoded payload: include/nnzip/format.h. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "compress/huffman.h"
#include "core/half.h"
#include "core/simd.h"
#include "nnzip/compress.h"
#include "nnzip/format.h"

#define SPARSE_MAX_ROWS (1 << 24)
#define SPARSE_FLAG_CODEBOOK 1u
#define SPARSE_FLAG_HUFFMAN 2u
#define SPARSE_FLAG_CB_F16 4u
#define SPARSE_FLAG_COLMAJOR 8u
#define SPARSE_FLAGS_ALL 15u
#define SPARSE_HEADER_BYTES 16u

void nz_sparse_drop_csc(nz_sparse *s) {
    free(s->col_ptr);
    free(s->row);
    free(s->cval);
    s->col_ptr = s->row = NULL;
    s->cval = NULL;
}

void nz_sparse_drop_panels(nz_sparse *s) {
    free(s->pan);
    s->pan = NULL;
    s->pan_rows = 0;
}

void nz_sparse_free(nz_sparse *s) {
    if (!s) return;
    nz_sparse_drop_csc(s);
    nz_sparse_drop_panels(s);
    free(s->row_ptr);
    free(s->col);
    free(s->codebook);
    free(s->code);
    free(s->val);
    free(s);
}

static nz_sparse *sparse_alloc(int rows, int cols, uint32_t nnz, int n_codebook) {
    nz_sparse *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->rows = rows;
    s->cols = cols;
    s->nnz = nnz;
    s->n_codebook = n_codebook;
    s->row_ptr = calloc((size_t)rows + 1, sizeof(uint32_t));
    s->col = malloc(sizeof(uint32_t) * (nnz ? nnz : 1));
    if (n_codebook) {
        s->codebook = calloc((size_t)n_codebook, sizeof(float));
        s->code = malloc(nnz ? nnz : 1);
    } else {
        s->val = malloc(sizeof(float) * (nnz ? nnz : 1));
    }
    if (!s->row_ptr || !s->col || (n_codebook && (!s->codebook || !s->code)) ||
        (!n_codebook && !s->val)) {
        nz_sparse_free(s);
        return NULL;
    }
    return s;
}

/* The column-form arrays for s->nnz entries; 0 on success (else nothing is left allocated). */
static int csc_alloc(nz_sparse *s) {
    const size_t n = s->nnz ? s->nnz : 1;
    s->col_ptr = malloc(sizeof(uint32_t) * ((size_t)s->cols + 1));
    s->row = malloc(sizeof(uint32_t) * n);
    s->cval = malloc(sizeof(float) * n);
    if (!s->col_ptr || !s->row || !s->cval) {
        nz_sparse_drop_csc(s);
        return -1;
    }
    return 0;
}

/* Counting-sort transpose of a compressed index: ptr [n_major + 1] and idx [nnz] (the minor
 * index of each entry) give tptr [n_minor + 1], tidx [nnz] (major indices, ascending inside a
 * minor because majors are visited in order) and perm [nnz] (the source entry of each). */
static void transpose_index(int n_major, int n_minor, const uint32_t *ptr, const uint32_t *idx,
                            uint32_t *tptr, uint32_t *tidx, uint32_t *perm) {
    memset(tptr, 0, sizeof(uint32_t) * ((size_t)n_minor + 1));
    const uint32_t nnz = ptr[n_major];
    for (uint32_t j = 0; j < nnz; j++) tptr[idx[j] + 1]++;
    for (int i = 0; i < n_minor; i++) tptr[i + 1] += tptr[i];
    for (int m = 0; m < n_major; m++) /* tptr[i] is the next free slot of minor i */
        for (uint32_t j = ptr[m]; j < ptr[m + 1]; j++) {
            const uint32_t k = tptr[idx[j]]++;
            tidx[k] = (uint32_t)m;
            perm[k] = j;
        }
    for (int i = n_minor; i > 0; i--) tptr[i] = tptr[i - 1]; /* back to starts */
    tptr[0] = 0;
}

nz_status nz_sparse_build_csc(nz_sparse *s, nz_error *err) {
    nz_sparse_drop_csc(s);
    uint32_t *perm = malloc(sizeof(uint32_t) * (s->nnz ? s->nnz : 1));
    if (!perm || csc_alloc(s)) {
        free(perm);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    transpose_index(s->rows, s->cols, s->row_ptr, s->col, s->col_ptr, s->row, perm);
    for (uint32_t k = 0; k < s->nnz; k++) s->cval[k] = nz_sparse_value(s, perm[k]);
    free(perm);
    return NZ_OK;
}

nz_status nz_sparse_build_panels(nz_sparse *s, nz_error *err) {
    nz_sparse_drop_panels(s);
    if (s->rows > NZ_PANEL_MAX_ROWS || s->n_codebook < 1 || s->n_codebook > 32) return NZ_OK;
    const int pr = (s->rows + 15) / 16 * 16;
    const size_t bytes = (size_t)s->cols * (size_t)pr;
    if (bytes > 16u * (size_t)s->nnz + 4096) return NZ_OK; /* too sparse: the columns win */
    s->pan = calloc(bytes, 1);
    if (!s->pan) return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    s->pan_rows = pr;
    for (int r = 0; r < s->rows; r++)
        for (uint32_t j = s->row_ptr[r]; j < s->row_ptr[r + 1]; j++)
            s->pan[(size_t)s->col[j] * pr + r] = s->code[j];
    return NZ_OK;
}

int nz_sparse_panels_pay(void) {
#ifdef __AVX512F__
    return 1;
#else
    /* The look-up is one permute of 16 codes with AVX-512; with AVX2 a 32-entry codebook takes
     * four permutes and three blends per 8 codes, and the portable loop is scalar: on an AVX2
     * machine (2026-11-25) the panels ran LeNet-300-100's fc1 at batch 1 in 31 us against 8 us
     * by columns, and at batch 64 23x slower than sgemm. There the rows and columns win. */
    return 0;
#endif
}

nz_status nz_sparse_prepare(nz_sparse *s, nz_op op, nz_error *err) {
    if (op == NZ_OP_DENSE) {
        nz_status st = nz_sparse_build_csc(s, err);
        if (st || !nz_sparse_panels_pay()) return st;
        return nz_sparse_build_panels(s, err);
    }
    nz_sparse_drop_csc(s); /* conv layers compute from the rows only (im2col matmul) */
    nz_sparse_drop_panels(s);
    return NZ_OK;
}

nz_status nz_sparse_from_dense(nz_sparse **out, const float *W, int rows, int cols,
                               const float *codebook, int n_codebook, int index_bits,
                               nz_error *err) {
    *out = NULL;
    if (rows <= 0 || cols <= 0 || rows > SPARSE_MAX_ROWS || index_bits < 1 || index_bits > 12 ||
        (codebook && (n_codebook < 2 || n_codebook > 256)))
        return nz_fail(err, NZ_ERR_ARG, "sparse: bad shape %dx%d, index bits %d or codebook %d",
                       rows, cols, index_bits, n_codebook);
    if (codebook && codebook[0] != 0.0f)
        return nz_fail(err, NZ_ERR_ARG, "sparse: codebook[0] must be 0 (the filler value)");
    size_t total = (size_t)rows * (size_t)cols, nnz = 0;
    for (size_t i = 0; i < total; i++) nnz += W[i] != 0.0f;
    if (nnz > UINT32_MAX) return nz_fail(err, NZ_ERR_ARG, "sparse: too many entries");
    nz_sparse *s = sparse_alloc(rows, cols, (uint32_t)nnz, codebook ? n_codebook : 0);
    if (!s) return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    if (codebook) memcpy(s->codebook, codebook, sizeof(float) * (size_t)n_codebook);
    s->index_bits = index_bits;
    uint32_t j = 0;
    for (int r = 0; r < rows; r++) {
        s->row_ptr[r] = j;
        const float *w = W + (size_t)r * cols;
        for (int c = 0; c < cols; c++) {
            if (w[c] == 0.0f) continue;
            s->col[j] = (uint32_t)c;
            if (codebook) {
                int k = 1;
                while (k < n_codebook && codebook[k] != w[c]) k++;
                if (k == n_codebook) {
                    nz_sparse_free(s);
                    return nz_fail(err, NZ_ERR_ARG,
                                   "sparse: weight %g at (%d, %d) is not in the codebook",
                                   (double)w[c], r, c);
                }
                s->code[j] = (uint8_t)k;
            } else {
                s->val[j] = w[c];
            }
            j++;
        }
    }
    s->row_ptr[rows] = j;
    if (codebook) {
        int b = 1;
        while ((1 << b) < n_codebook) b++;
        s->code_bits = b;
    }
    *out = s;
    return NZ_OK;
}

nz_status nz_sparse_clone(nz_sparse **out, const nz_sparse *s, nz_error *err) {
    nz_sparse *c = sparse_alloc(s->rows, s->cols, s->nnz, s->n_codebook);
    if (!c) {
        *out = NULL;
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    uint32_t *rp = c->row_ptr, *col = c->col;
    float *cb = c->codebook, *val = c->val;
    uint8_t *code = c->code;
    *c = *s;
    c->row_ptr = rp;
    c->col = col;
    c->codebook = cb;
    c->val = val;
    c->code = code;
    c->col_ptr = c->row = NULL;
    c->cval = NULL;
    c->pan = s->pan ? malloc((size_t)s->cols * (size_t)s->pan_rows) : NULL;
    if (s->pan && !c->pan) {
        c->pan_rows = 0;
        nz_sparse_free(c);
        *out = NULL;
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    if (c->pan) memcpy(c->pan, s->pan, (size_t)s->cols * (size_t)s->pan_rows);
    if (s->col_ptr && csc_alloc(c)) {
        nz_sparse_free(c);
        *out = NULL;
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    memcpy(c->row_ptr, s->row_ptr, sizeof(uint32_t) * ((size_t)s->rows + 1));
    if (s->nnz) memcpy(c->col, s->col, sizeof(uint32_t) * s->nnz);
    if (s->n_codebook) {
        memcpy(c->codebook, s->codebook, sizeof(float) * (size_t)s->n_codebook);
        if (s->nnz) memcpy(c->code, s->code, s->nnz);
    } else if (s->nnz) {
        memcpy(c->val, s->val, sizeof(float) * s->nnz);
    }
    if (s->col_ptr) {
        memcpy(c->col_ptr, s->col_ptr, sizeof(uint32_t) * ((size_t)s->cols + 1));
        if (s->nnz) {
            memcpy(c->row, s->row, sizeof(uint32_t) * s->nnz);
            memcpy(c->cval, s->cval, sizeof(float) * s->nnz);
        }
    }
    *out = c;
    return NZ_OK;
}

void nz_sparse_to_dense(const nz_sparse *s, float *W) {
    memset(W, 0, sizeof(float) * (size_t)s->rows * (size_t)s->cols);
    for (int r = 0; r < s->rows; r++)
        for (uint32_t j = s->row_ptr[r]; j < s->row_ptr[r + 1]; j++)
            W[(size_t)r * s->cols + s->col[j]] = nz_sparse_value(s, j);
}

/* ---------------------------------------------------------------- kernels */

/* One row of Y = S X: each stored weight adds a scaled row of X (contiguous: vectorizes). */
static inline void matmul_row(const nz_sparse *s, int r, const float *X, int N, float *Y,
                              int accumulate) {
    const uint32_t *rp = s->row_ptr, *col = s->col;
    float *y = Y + (size_t)r * N;
    if (!accumulate) memset(y, 0, sizeof(float) * (size_t)N);
    for (uint32_t j = rp[r]; j < rp[r + 1]; j++) {
        const float w = nz_sparse_value(s, j);
        const float *x = X + (size_t)col[j] * N;
#pragma omp simd
        for (int n = 0; n < N; n++) y[n] += w * x[n];
    }
}

void nz_sparse_matmul(const nz_sparse *s, const float *X, int N, float *Y, int accumulate) {
    /* threads only when there is enough work to pay for waking them; a parallel region with a
     * false if() clause still costs a libgomp call, so the serial path avoids it entirely */
    if ((double)s->nnz * N > 65536.0 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < s->rows; r++) matmul_row(s, r, X, N, Y, accumulate);
    } else {
        for (int r = 0; r < s->rows; r++) matmul_row(s, r, X, N, Y, accumulate);
    }
}

/* One row of y = S x. Four accumulators break the add-latency chain of a single sum. */
static inline float matvec_row(const nz_sparse *s, int r, const float *x) {
    const uint32_t *col = s->col;
    uint32_t j = s->row_ptr[r];
    const uint32_t end = s->row_ptr[r + 1];
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    if (s->n_codebook) {
        const float *cb = s->codebook;
        const uint8_t *code = s->code;
        for (; j + 4 <= end; j += 4) {
            a0 += cb[code[j]] * x[col[j]];
            a1 += cb[code[j + 1]] * x[col[j + 1]];
            a2 += cb[code[j + 2]] * x[col[j + 2]];
            a3 += cb[code[j + 3]] * x[col[j + 3]];
        }
        for (; j < end; j++) a0 += cb[code[j]] * x[col[j]];
    } else {
        const float *v = s->val;
        for (; j + 4 <= end; j += 4) {
            a0 += v[j] * x[col[j]];
            a1 += v[j + 1] * x[col[j + 1]];
            a2 += v[j + 2] * x[col[j + 2]];
            a3 += v[j + 3] * x[col[j + 3]];
        }
        for (; j < end; j++) a0 += v[j] * x[col[j]];
    }
    return (a0 + a1) + (a2 + a3);
}

/* A batch-1 product over a small structure first requests every cache line it will read: from
 * a cold cache (a model called now and then) the misses overlap instead of arriving one after
 * the other as the walk reaches them. Past this many bytes the hardware prefetcher keeps up on
 * its own and the requests would only cost time. */
#define PREFETCH_ALL_MAX (64u << 10)

static void prefetch_lines(const void *p, size_t bytes) {
    const uintptr_t a = (uintptr_t)p, end = a + bytes;
    for (uintptr_t l = a & ~(uintptr_t)63; l < end; l += 64) __builtin_prefetch((const void *)l);
}

static void prefetch_rows_form(const nz_sparse *s, const float *x) {
    const size_t entry = s->n_codebook ? sizeof(uint32_t) + 1 : sizeof(uint32_t) + sizeof(float);
    const size_t bytes = (size_t)s->nnz * entry + sizeof(uint32_t) * ((size_t)s->rows + 1) +
                         sizeof(float) * ((size_t)s->cols + (size_t)s->n_codebook);
    if (bytes > PREFETCH_ALL_MAX) return;
    prefetch_lines(x, sizeof(float) * (size_t)s->cols);
    prefetch_lines(s->row_ptr, sizeof(uint32_t) * ((size_t)s->rows + 1));
    prefetch_lines(s->col, sizeof(uint32_t) * (size_t)s->nnz);
    if (s->n_codebook) {
        prefetch_lines(s->code, s->nnz);
        prefetch_lines(s->codebook, sizeof(float) * (size_t)s->n_codebook);
    } else {
        prefetch_lines(s->val, sizeof(float) * (size_t)s->nnz);
    }
}

void nz_sparse_matvec_rows(const nz_sparse *s, const float *x, float *y) {
    prefetch_rows_form(s, x);
    if (s->nnz > 8192 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < s->rows; r++) y[r] = matvec_row(s, r, x);
    } else {
        for (int r = 0; r < s->rows; r++) y[r] = matvec_row(s, r, x);
    }
}

/* First entry in row[lo, hi) (ascending) whose row is >= r. */
static inline uint32_t lower_row(const uint32_t *row, uint32_t lo, uint32_t hi, uint32_t r) {
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (row[mid] < r)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Writes the nonzero inputs' columns to list (no branch per column: zero and nonzero inputs
 * alternate unpredictably); returns how many. */
static int nonzero_columns(const float *x, int cols, int *list) {
    int n = 0, c = 0;
#ifdef __AVX512F__
    /* 16 at a time: compare, compress the indices of the nonzeros, store all 16 (list has room:
     * callers size it by cols) and advance by the count */
    const __m512i step = _mm512_set1_epi32(16);
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; c + 16 <= cols; c += 16) {
        const __mmask16 nz =
            _mm512_cmp_ps_mask(_mm512_loadu_ps(x + c), _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_storeu_si512(list + n, _mm512_maskz_compress_epi32(nz, idx));
        n += __builtin_popcount(nz);
        idx = _mm512_add_epi32(idx, step);
    }
#elif defined(__AVX2__) && defined(__BMI2__)
    /* 8 at a time: the compare's mask picks the nonzeros' lane numbers out of 0..7 (one byte
     * each) with pext; widened and offset, all 8 are stored and n advances by the count. The
     * scalar loop below waits ~5 cycles a column on its own count (a third of fc2's time) */
    for (; c + 8 <= cols; c += 8) {
        const unsigned nz = (unsigned)_mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_loadu_ps(x + c), _mm256_setzero_ps(), _CMP_NEQ_UQ));
        const uint64_t lanes = _pext_u64(0x0706050403020100ull, _pdep_u64(nz, 0x0101010101010101ull) * 0xFF);
        const __m256i idx = _mm256_add_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)lanes)),
                                             _mm256_set1_epi32(c));
        _mm256_storeu_si256((__m256i *)(list + n), idx);
        n += __builtin_popcount(nz);
    }
#endif
    for (; c < cols; c++) {
        list[n] = c;
        n += x[c] != 0.0f;
    }
    return n;
}

/* Columns are listed this many at a time: a fixed stack buffer, no allocation per call. */
#define COL_CHUNK 1024

/* Rows [r0, r1) of y = S x from the column form: y += x[c] * column c for each nonzero x[c], so
 * a zero input costs no work on its column (a weight times 0 adds nothing; only a non-finite
 * weight could tell). The nonzero columns are listed first without a branch per column (zero
 * and nonzero inputs alternate unpredictably), then each adds its entries: rows are distinct
 * inside a column, so the four updates of an unrolled step are independent; the values are
 * already resolved from the codebook (one load less per entry; 12% faster on LeNet-300's fc1
 * than looking codes up). Scalar on purpose: AVX-512 gather/scatter and mask-expand versions
 * measured slower on the machine this was tuned on (AMD Zen). A thread owning a row range finds
 * its part of each column by binary search, so each y[r] gets its terms in the same order
 * whatever the thread count. */
static void matvec_cols_range(const nz_sparse *s, const float *x, float *y, int r0, int r1) {
    const uint32_t *cp = s->col_ptr, *row = s->row;
    const float *v = s->cval;
    const int whole = r0 == 0 && r1 == s->rows;
    int list[COL_CHUNK];
    for (int c0 = 0; c0 < s->cols; c0 += COL_CHUNK) {
        const int c1 = s->cols - c0 < COL_CHUNK ? s->cols : c0 + COL_CHUNK;
        const int n = nonzero_columns(x + c0, c1 - c0, list);
        for (int t = 0; t < n; t++) list[t] += c0;
        /* the start of every listed column requested at once: from a cold cache the misses
         * overlap instead of coming one column at a time (the hardware prefetcher follows
         * each column from there) */
        for (int t = 0; t < n; t++) {
            __builtin_prefetch(row + cp[list[t]]);
            __builtin_prefetch(v + cp[list[t]]);
        }
        if (c0 == 0) memset(y + r0, 0, sizeof(float) * (size_t)(r1 - r0)); /* under the misses */
        for (int t = 0; t < n; t++) {
            const int c = list[t];
            const float xc = x[c];
            uint32_t lo = cp[c], hi = cp[c + 1];
            if (!whole) {
                lo = lower_row(row, lo, hi, (uint32_t)r0);
                hi = lower_row(row, lo, hi, (uint32_t)r1);
            }
            const uint32_t *rj = row + lo, *re = row + hi; /* pointers: no index widening */
            const float *vj = v + lo;
            for (; re - rj >= 4; rj += 4, vj += 4) {
                y[rj[0]] += xc * vj[0];
                y[rj[1]] += xc * vj[1];
                y[rj[2]] += xc * vj[2];
                y[rj[3]] += xc * vj[3];
            }
            for (; rj < re; rj++, vj++) y[*rj] += xc * *vj;
        }
    }
}

/* Threads for the column kernel only past this many entries of nonzero inputs: below, waking a
 * team (microseconds) costs more than the work. */
#define COLS_PARALLEL_MIN 65536u

/* What a column walk reads first (the inputs and the column pointers), requested up front. */
static void prefetch_cols_head(const nz_sparse *s, const float *x) {
    if (sizeof(float) * (size_t)s->cols > PREFETCH_ALL_MAX) return;
    prefetch_lines(x, sizeof(float) * (size_t)s->cols);
    prefetch_lines(s->col_ptr, sizeof(uint32_t) * ((size_t)s->cols + 1));
}

/* The column kernel once x and the column pointers are requested. */
static void matvec_cols(const nz_sparse *s, const float *x, float *y) {
    uint64_t work = 0; /* entries the nonzero inputs touch */
    if (s->nnz > COLS_PARALLEL_MIN && !omp_in_parallel() && omp_get_max_threads() > 1)
        for (int c = 0; c < s->cols; c++)
            work += x[c] != 0.0f ? s->col_ptr[c + 1] - s->col_ptr[c] : 0;
    if (work > COLS_PARALLEL_MIN) {
#pragma omp parallel
        {
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
            matvec_cols_range(s, x, y, (int)((long)s->rows * t / nt),
                              (int)((long)s->rows * (t + 1) / nt));
        }
    } else {
        matvec_cols_range(s, x, y, 0, s->rows);
    }
}

void nz_sparse_matvec_cols(const nz_sparse *s, const float *x, float *y) {
    if (!s->col_ptr) { /* no column form (a conv weight): the same product by rows */
        nz_sparse_matvec_rows(s, x, y);
        return;
    }
    prefetch_cols_head(s, x);
    matvec_cols(s, x, y);
}

#ifdef __AVX512F__

/* Entries [from, from + 16) of a codebook of n_cb <= 32 entries, zeros past its end (codes never
 * point there): the permute tables of the panel kernels. */
static inline __m512 codebook_half(const float *cb, int n_cb, int from) {
    const int n = n_cb - from;
    return _mm512_maskz_loadu_ps((__mmask16)(n >= 16 ? 0xFFFFu : n <= 0 ? 0u : (1u << n) - 1u),
                                 cb + from);
}

/* y = S x over the listed columns from the panels, for a strip of NB <= 8 blocks of 16 rows
 * (pan and y start at the strip, columns are stride bytes apart, rows counts from the strip's
 * first row): per column, 16 codes at a time widen to lanes, one permute looks all 16 up in
 * the codebook (32 entries in two registers, entry 0 the zero), one FMA adds them times x[c].
 * The strip's blocks stay in registers; U interleaved columns with their own accumulators hide
 * the FMA latency when NB is small. Inlined with constant NB and U, the loops unroll fully. */
static inline __attribute__((always_inline)) void panels_avx512(
    const uint8_t *pan, int stride, const float *cb, int n_cb, const int *list, int n,
    const float *x, float *y, int rows, const int NB, const int U, const int CB16) {
    const __m512 lo = codebook_half(cb, n_cb, 0), hi = codebook_half(cb, n_cb, 16);
    __m512 acc[4][8];
#pragma GCC unroll 4
    for (int u = 0; u < U; u++)
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) acc[u][b] = _mm512_setzero_ps();
    int t = 0;
    for (; t + U <= n; t += U) {
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) {
            const int c = list[t + u];
            const __m512 xv = _mm512_set1_ps(x[c]);
            const uint8_t *p = pan + (size_t)c * (size_t)stride;
#pragma GCC unroll 8
            for (int b = 0; b < NB; b++) {
                const __m512i k =
                    _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16 * b)));
                const __m512 w = CB16 ? _mm512_permutexvar_ps(k, lo) : _mm512_permutex2var_ps(lo, k, hi);
                acc[u][b] = _mm512_fmadd_ps(w, xv, acc[u][b]);
            }
        }
    }
    for (; t < n; t++) {
        const int c = list[t];
        const __m512 xv = _mm512_set1_ps(x[c]);
        const uint8_t *p = pan + (size_t)c * (size_t)stride;
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            const __m512i k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16 * b)));
            const __m512 w = CB16 ? _mm512_permutexvar_ps(k, lo) : _mm512_permutex2var_ps(lo, k, hi);
            acc[0][b] = _mm512_fmadd_ps(w, xv, acc[0][b]);
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        __m512 a = acc[0][b];
#pragma GCC unroll 4
        for (int u = 1; u < U; u++) a = _mm512_add_ps(a, acc[u][b]);
        const int left = rows - 16 * b;
        if (left >= 16)
            _mm512_storeu_ps(y + 16 * b, a);
        else
            _mm512_mask_storeu_ps(y + 16 * b, (__mmask16)((1u << left) - 1u), a);
    }
}

/* Y [S, rows] = X [S, cols] S^T for S samples at once from the panels, every column, one
 * block of 16 rows at a time: each column's 16 weights are looked up once (a widening load and
 * a permute, the shuffle unit's work) and serve S samples (S FMAs), so with S = 8 the FMAs,
 * not the look-ups, set the pace. */
static inline __attribute__((always_inline)) void panels_batch_avx512(
    const nz_sparse *s, const float *X, float *Y, const int S, const int CB16) {
    const int n_cb = s->n_codebook, cols = s->cols, rows = s->rows, pr = s->pan_rows;
    const float *cb = s->codebook;
    const __m512 lo = codebook_half(cb, n_cb, 0), hi = codebook_half(cb, n_cb, 16);
    for (int b = 0; b < pr / 16; b++) {
        __m512 acc[8];
#pragma GCC unroll 8
        for (int q = 0; q < S; q++) acc[q] = _mm512_setzero_ps();
        const uint8_t *p = s->pan + 16 * b;
        for (int c = 0; c < cols; c++, p += pr) {
            const __m512i k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
            const __m512 w = CB16 ? _mm512_permutexvar_ps(k, lo) : _mm512_permutex2var_ps(lo, k, hi);
#pragma GCC unroll 8
            for (int q = 0; q < S; q++)
                acc[q] = _mm512_fmadd_ps(w, _mm512_set1_ps(X[(size_t)q * cols + c]), acc[q]);
        }
        const int left = rows - 16 * b;
        const __mmask16 m = (__mmask16)(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
#pragma GCC unroll 8
        for (int q = 0; q < S; q++) _mm512_mask_storeu_ps(Y + (size_t)q * rows + 16 * b, m, acc[q]);
    }
}

/* Samples [n0, n1) of nz_sparse_matmul_panels: passes of 8, then one at a time (a sample's
 * sums are the same either way). */
static void panels_batch_range(const nz_sparse *s, const float *X, float *Y, int n0, int n1) {
    const int cb16 = s->n_codebook <= 16;
    for (int n = n0; n < n1;) {
        const int S = n1 - n >= 8 ? 8 : 1;
        const float *x = X + (size_t)n * s->cols;
        float *y = Y + (size_t)n * s->rows;
        if (S == 8)
            cb16 ? panels_batch_avx512(s, x, y, 8, 1) : panels_batch_avx512(s, x, y, 8, 0);
        else
            cb16 ? panels_batch_avx512(s, x, y, 1, 1) : panels_batch_avx512(s, x, y, 1, 0);
        n += S;
    }
}
#endif

/* Columns of the panel kernel listed at a time (a stack buffer). */
#define PAN_CHUNK 512

void nz_sparse_matvec_panels(const nz_sparse *s, const float *x, float *y) {
    if (!s->pan) {
        nz_sparse_matvec(s, x, y);
        return;
    }
    const int pr = s->pan_rows;
    int list[PAN_CHUNK];
    float part[NZ_PANEL_MAX_ROWS];
    for (int c0 = 0; c0 < s->cols; c0 += PAN_CHUNK) {
        const int nc = s->cols - c0 < PAN_CHUNK ? s->cols - c0 : PAN_CHUNK;
        const int n = nonzero_columns(x + c0, nc, list);
        float *out = c0 == 0 ? y : part; /* later chunks add their part */
        const uint8_t *pan = s->pan + (size_t)c0 * (size_t)pr;
#ifdef __AVX512F__
        /* a codebook of up to 16 entries fits one register: a one-source permute (cheaper) */
        const float *cb = s->codebook;
        const int ncb = s->n_codebook;
        const int *l = list;
        const float *xc = x + c0;
        for (int b0 = 0; b0 < pr / 16; b0 += 8) { /* strips of up to 8 blocks */
            const uint8_t *ps = pan + 16 * b0;
            float *ys = out + 16 * b0;
            const int nr = s->rows - 16 * b0;
            const int nb = pr / 16 - b0 < 8 ? pr / 16 - b0 : 8;
#define PAN_CASE(NB, U)                                                                      \
    case NB:                                                                                 \
        if (ncb <= 16)                                                                       \
            panels_avx512(ps, pr, cb, ncb, l, n, xc, ys, nr, NB, U, 1);                      \
        else                                                                                 \
            panels_avx512(ps, pr, cb, ncb, l, n, xc, ys, nr, NB, U, 0);                      \
        break
            switch (nb) {
                PAN_CASE(1, 4);
                PAN_CASE(2, 2);
                PAN_CASE(3, 2);
                PAN_CASE(4, 1);
                PAN_CASE(5, 1);
                PAN_CASE(6, 1);
                PAN_CASE(7, 1);
                PAN_CASE(8, 1);
            }
#undef PAN_CASE
        }
#else
        /* portable: the same sums column by column */
        memset(out, 0, sizeof(float) * (size_t)s->rows);
        for (int t = 0; t < n; t++) {
            const int c = list[t];
            const float xc = x[c0 + c];
            const uint8_t *p = pan + (size_t)c * (size_t)pr;
            for (int r = 0; r < s->rows; r++) out[r] += s->codebook[p[r]] * xc;
        }
#endif
        if (c0 > 0)
            for (int r = 0; r < s->rows; r++) y[r] += part[r];
    }
}

void nz_sparse_matmul_panels(const nz_sparse *s, const float *X, int B, float *Y) {
#ifdef __AVX512F__
    if ((double)B * s->cols * s->pan_rows > 1048576.0 && !omp_in_parallel()) {
        /* a thread's share in whole passes of 8 samples, so the split never changes a sum */
#pragma omp parallel
        {
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
            const int groups = (B + 7) / 8;
            const int n0 = groups * t / nt * 8, n1 = groups * (t + 1) / nt * 8;
            panels_batch_range(s, X, Y, n0, n1 < B ? n1 : B);
        }
    } else {
        panels_batch_range(s, X, Y, 0, B);
    }
#else
    for (int n = 0; n < B; n++) {
        float *y = Y + (size_t)n * s->rows;
        const float *x = X + (size_t)n * s->cols;
        memset(y, 0, sizeof(float) * (size_t)s->rows);
        for (int c = 0; c < s->cols; c++) {
            const uint8_t *p = s->pan + (size_t)c * (size_t)s->pan_rows;
            for (int r = 0; r < s->rows; r++) y[r] += s->codebook[p[r]] * x[c];
        }
    }
#endif
}

/* dst[c * R + r] = src[r * C + c]: VL x VL blocks transposed in registers (vtranspose), 6-10x
 * faster than the scalar loop on 64 x 100 to 64 x 784 batches with AVX2; the edges scalar. */
static void transpose(float *dst, const float *src, int R, int C) {
    int r0 = 0;
    for (; r0 + VL <= R; r0 += VL) {
        int c0 = 0;
        for (; c0 + VL <= C; c0 += VL) {
            vf b[VL];
            for (int i = 0; i < VL; i++) b[i] = vload(src + (size_t)(r0 + i) * C + c0);
            vtranspose(b);
            for (int i = 0; i < VL; i++) vstore(dst + (size_t)(c0 + i) * R + r0, b[i]);
        }
        for (int r = r0; r < r0 + VL; r++)
            for (int c = c0; c < C; c++) dst[(size_t)c * R + r] = src[(size_t)r * C + c];
    }
    for (int r = r0; r < R; r++)
        for (int c = 0; c < C; c++) dst[(size_t)c * R + r] = src[(size_t)r * C + c];
}

void nz_sparse_matmul_batch(const nz_sparse *s, const float *X, int B, float *Y,
                            float *scratch) {
    if (B == 1) {
        nz_sparse_matvec(s, X, Y);
        return;
    }
    if (s->pan) { /* small layer: straight from the row-major batch */
        nz_sparse_matmul_panels(s, X, B, Y);
        return;
    }
    float *XT = scratch, *YT = scratch + (size_t)s->cols * B;
    /* the scalar transposes took most of LeNet-300's fc3 (a 250-entry product) */
    transpose(XT, X, B, s->cols);
    nz_sparse_matmul(s, XT, B, YT, 0);
    transpose(Y, YT, s->rows, B);
}

/* Per nonzero input column the column kernel pays about this many entries' worth of fixed cost
 * (listing, the loop's unpredictable exit), measured against the row kernel on LeNet-300 with
 * real inputs: fc1 on MNIST pixels (42% of its entries under nonzero inputs, 55 per column) runs
 * 2x faster by columns on both machines; fc3 (3 entries per nonzero input) faster by rows. fc2
 * (11 per column) ran faster by rows on the AVX-512 machine and, once the AVX2 listing took
 * 8 inputs a step, faster by columns on the AVX2 one (2026-11-25, `bench_sparse`: 1.39 us by
 * columns, 1.75 by rows, ~9 ns = ~14 entries a column). */
#ifdef __AVX512F__
#define COL_OVERHEAD_ENTRIES 24u
#else
#define COL_OVERHEAD_ENTRIES 14u
#endif

void nz_sparse_matvec(const nz_sparse *s, const float *x, float *y) {
    if (s->pan) {
        nz_sparse_matvec_panels(s, x, y);
        return;
    }
    if (s->col_ptr) {
        /* the cheaper kernel for this input: a function of x and the structure only, so the
         * result stays deterministic */
        prefetch_cols_head(s, x); /* the cost below reads them first */
        uint64_t cost = 0;
        for (int c = 0; c < s->cols; c++)
            cost += x[c] != 0.0f ? s->col_ptr[c + 1] - s->col_ptr[c] + COL_OVERHEAD_ENTRIES : 0;
        if (cost < s->nnz) {
            matvec_cols(s, x, y);
            return;
        }
    }
    nz_sparse_matvec_rows(s, x, y);
}

/* ---------------------------------------------------------------- bit packing */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    uint64_t acc;
    int nacc;
    int oom;
} bit_writer;

static void bw_put(bit_writer *w, uint32_t v, int bits) {
    w->acc |= (uint64_t)v << w->nacc;
    w->nacc += bits;
    while (w->nacc >= 8) {
        if (w->len == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 256;
            uint8_t *b = realloc(w->buf, cap);
            if (!b) {
                w->oom = 1;
                w->nacc = 0;
                return;
            }
            w->buf = b;
            w->cap = cap;
        }
        w->buf[w->len++] = (uint8_t)w->acc;
        w->acc >>= 8;
        w->nacc -= 8;
    }
}

static void bw_flush(bit_writer *w) {
    if (w->nacc > 0) bw_put(w, 0, 8 - w->nacc);
}

/* Reads n values of `bits` bits, LSB-first; the stream must be exactly ceil(n*bits/8) bytes
 * with zero padding. */
static nz_status unpack_fixed(const uint8_t *in, size_t len, uint16_t *out, size_t n, int bits,
                              nz_error *err) {
    uint64_t need = ((uint64_t)n * (uint64_t)bits + 7) / 8;
    if (len != need)
        return nz_fail(err, NZ_ERR_CORRUPT, "packed stream is %zu bytes, %llu expected", len,
                       (unsigned long long)need);
    uint64_t acc = 0;
    int nacc = 0;
    size_t pos = 0;
    const uint32_t mask = (1u << bits) - 1;
    for (size_t i = 0; i < n; i++) {
        while (nacc < bits) {
            acc |= (uint64_t)in[pos++] << nacc;
            nacc += 8;
        }
        out[i] = (uint16_t)(acc & mask);
        acc >>= bits;
        nacc -= bits;
    }
    if (acc != 0) return nz_fail(err, NZ_ERR_CORRUPT, "non-zero padding bits");
    return NZ_OK;
}

/* ---------------------------------------------------------------- encode / decode */

static void put_u32le(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The entry streams: relative index symbols (gap - 1) and values, with a filler entry
 * (value 0) wherever a gap exceeds 2^index_bits. Positions run through the rows, or,
 * column-major, through the columns of a transposed index (perm maps its entries back). */
static nz_status sparse_streams(const nz_sparse *s, uint16_t **gaps, uint16_t **codes,
                                float **vals, uint32_t *n_entries, nz_error *err) {
    const int cm = s->col_major;
    uint32_t *tptr = NULL, *tidx = NULL, *perm = NULL;
    *gaps = *codes = NULL;
    *vals = NULL;
    if (cm) {
        tptr = malloc(sizeof(uint32_t) * ((size_t)s->cols + 1));
        tidx = malloc(sizeof(uint32_t) * (s->nnz ? s->nnz : 1));
        perm = malloc(sizeof(uint32_t) * (s->nnz ? s->nnz : 1));
        if (!tptr || !tidx || !perm) {
            free(tptr);
            free(tidx);
            free(perm);
            return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        }
        transpose_index(s->rows, s->cols, s->row_ptr, s->col, tptr, tidx, perm);
    }
    const int n_major = cm ? s->cols : s->rows;
    const uint64_t n_minor = (uint64_t)(cm ? s->rows : s->cols);
    const uint32_t *ptr = cm ? tptr : s->row_ptr, *idx = cm ? tidx : s->col;
    const uint64_t span = 1ull << s->index_bits;
    nz_status st = NZ_OK;
    uint64_t n = 0, prev = (uint64_t)-1;
    for (int m = 0; m < n_major; m++)
        for (uint32_t k = ptr[m]; k < ptr[m + 1]; k++) {
            uint64_t pos = (uint64_t)m * n_minor + idx[k];
            uint64_t gap = pos - prev;
            n += (gap - 1) / span + 1;
            prev = pos;
        }
    if (n > UINT32_MAX) {
        st = nz_fail(err, NZ_ERR_ARG, "sparse: too many entries to encode");
        goto done;
    }
    *gaps = malloc(sizeof(uint16_t) * (n ? n : 1));
    *codes = s->n_codebook ? malloc(sizeof(uint16_t) * (n ? n : 1)) : NULL;
    *vals = s->n_codebook ? NULL : malloc(sizeof(float) * (n ? n : 1));
    if (!*gaps || (s->n_codebook ? !*codes : !*vals)) {
        free(*gaps);
        free(*codes);
        free(*vals);
        *gaps = *codes = NULL;
        *vals = NULL;
        st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        goto done;
    }
    uint64_t e = 0;
    prev = (uint64_t)-1;
    for (int m = 0; m < n_major; m++)
        for (uint32_t k = ptr[m]; k < ptr[m + 1]; k++) {
            const uint32_t j = cm ? perm[k] : k; /* the entry in the rows */
            uint64_t pos = (uint64_t)m * n_minor + idx[k];
            uint64_t gap = pos - prev;
            while (gap > span) { /* filler: a zero weight span positions ahead */
                (*gaps)[e] = (uint16_t)(span - 1);
                if (s->n_codebook)
                    (*codes)[e] = 0;
                else
                    (*vals)[e] = 0.0f;
                e++;
                gap -= span;
            }
            (*gaps)[e] = (uint16_t)(gap - 1);
            if (s->n_codebook)
                (*codes)[e] = s->code[j];
            else
                (*vals)[e] = s->val[j];
            e++;
            prev = pos;
        }
    *n_entries = (uint32_t)n;
done:
    free(tptr);
    free(tidx);
    free(perm);
    return st;
}

static nz_status symbols_encode(const uint16_t *sym, size_t n, int bits, int huffman,
                                uint8_t **out, size_t *len, nz_error *err) {
    if (huffman) return huf_encode(sym, n, 1 << bits, out, len, err);
    bit_writer w = {0};
    for (size_t i = 0; i < n; i++) bw_put(&w, sym[i], bits);
    bw_flush(&w);
    if (w.oom) {
        free(w.buf);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    *out = w.buf ? w.buf : malloc(1);
    *len = w.len;
    return *out ? NZ_OK : nz_fail(err, NZ_ERR_NOMEM, "out of memory");
}

nz_status nz_sparse_encode(nz_sparse *s, uint8_t **out, size_t *out_len, nz_error *err) {
    *out = NULL;
    *out_len = 0;
    uint16_t *gaps = NULL, *codes = NULL;
    float *vals = NULL;
    uint8_t *gs = NULL, *vs = NULL;
    size_t gl = 0, vl = 0;
    uint32_t n = 0;
    nz_status st = sparse_streams(s, &gaps, &codes, &vals, &n, err);
    if (st) return st;
    st = symbols_encode(gaps, n, s->index_bits, s->huffman, &gs, &gl, err);
    if (!st && s->n_codebook) st = symbols_encode(codes, n, s->code_bits, s->huffman, &vs, &vl, err);
    if (!st && !s->n_codebook) {
        vl = (size_t)n * 4;
        vs = malloc(vl ? vl : 1);
        if (!vs)
            st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        else
            for (uint32_t i = 0; i < n; i++) {
                uint32_t u;
                memcpy(&u, &vals[i], 4);
                put_u32le(vs + 4 * (size_t)i, u);
            }
    }
    const size_t cb_width = s->codebook_f16 ? 2 : 4;
    size_t cb_bytes = 2 + cb_width * (size_t)s->n_codebook;
    size_t total = SPARSE_HEADER_BYTES + cb_bytes + 4 + gl + 4 + vl;
    uint8_t *buf = st ? NULL : malloc(total);
    if (!st && !buf) st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    if (!st) {
        uint8_t *p = buf;
        p[0] = (uint8_t)((s->n_codebook ? SPARSE_FLAG_CODEBOOK : 0) |
                         (s->huffman ? SPARSE_FLAG_HUFFMAN : 0) |
                         (s->n_codebook && s->codebook_f16 ? SPARSE_FLAG_CB_F16 : 0) |
                         (s->col_major ? SPARSE_FLAG_COLMAJOR : 0));
        p[1] = (uint8_t)s->index_bits;
        p[2] = (uint8_t)s->code_bits;
        p[3] = 0;
        put_u32le(p + 4, n);
        put_u32le(p + 8, s->nnz);
        put_u32le(p + 12, 0);
        p += SPARSE_HEADER_BYTES;
        p[0] = (uint8_t)s->n_codebook;
        p[1] = (uint8_t)(s->n_codebook >> 8);
        p += 2;
        for (int k = 0; k < s->n_codebook; k++) {
            if (s->codebook_f16) {
                uint16_t h = nz_f32_to_f16(s->codebook[k]);
                p[0] = (uint8_t)h;
                p[1] = (uint8_t)(h >> 8);
                p += 2;
            } else {
                uint32_t u;
                memcpy(&u, &s->codebook[k], 4);
                put_u32le(p, u);
                p += 4;
            }
        }
        put_u32le(p, (uint32_t)gl);
        memcpy(p + 4, gs, gl);
        p += 4 + gl;
        put_u32le(p, (uint32_t)vl);
        memcpy(p + 4, vs, vl);
        *out = buf;
        *out_len = total;
        s->n_entries = n;
        s->index_stream_bytes = gl;
        s->value_stream_bytes = vl;
        s->codebook_bytes = cb_bytes;
    }
    free(gaps);
    free(codes);
    free(vals);
    free(gs);
    free(vs);
    return st;
}

/* One safety check for every read of the payload. */
#define NEED(cond, ...)                                                                        \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            st = nz_fail(err, NZ_ERR_CORRUPT, __VA_ARGS__);                                    \
            goto fail;                                                                         \
        }                                                                                      \
    } while (0)

nz_status nz_sparse_decode(const uint8_t *in, size_t len, int rows, int cols, nz_sparse **out,
                           nz_error *err) {
    nz_status st = NZ_OK;
    uint16_t *gaps = NULL, *codes = NULL;
    uint8_t *tcode = NULL; /* column-major with a codebook: codes in column order */
    uint32_t *perm = NULL;
    nz_sparse *s = NULL;
    *out = NULL;
    NEED(rows > 0 && cols > 0 && rows <= SPARSE_MAX_ROWS, "sparse tensor: bad shape %dx%d", rows,
         cols);
    NEED(len >= SPARSE_HEADER_BYTES + 2, "sparse tensor: payload too short");
    const unsigned flags = in[0], index_bits = in[1], code_bits = in[2];
    const uint32_t n = get_u32le(in + 4), nnz_hdr = get_u32le(in + 8);
    NEED(flags <= SPARSE_FLAGS_ALL && in[3] == 0 && get_u32le(in + 12) == 0,
         "sparse tensor: bad flags");
    NEED(!(flags & SPARSE_FLAG_CB_F16) || (flags & SPARSE_FLAG_CODEBOOK),
         "sparse tensor: f16 codebook flag without a codebook");
    NEED(index_bits >= 1 && index_bits <= 12, "sparse tensor: index width %u not in 1..12",
         index_bits);
    const int has_cb = flags & SPARSE_FLAG_CODEBOOK, huff = (flags & SPARSE_FLAG_HUFFMAN) != 0;
    const int cm = (flags & SPARSE_FLAG_COLMAJOR) != 0;
    NEED(has_cb ? (code_bits >= 1 && code_bits <= 8) : code_bits == 0,
         "sparse tensor: codebook index width %u out of range", code_bits);
    size_t off = SPARSE_HEADER_BYTES;
    const int n_cb = in[off] | in[off + 1] << 8;
    off += 2;
    NEED(has_cb ? (n_cb >= 2 && n_cb <= (1 << code_bits)) : n_cb == 0,
         "sparse tensor: codebook size %d does not fit %u-bit indices", n_cb, code_bits);
    const size_t cb_width = (flags & SPARSE_FLAG_CB_F16) ? 2 : 4;
    NEED(len - off >= cb_width * (size_t)n_cb + 4, "sparse tensor: codebook runs past the end");
    const uint8_t *cbp = in + off;
    off += cb_width * (size_t)n_cb;
    const size_t gl = get_u32le(in + off);
    off += 4;
    NEED(gl <= len - off && len - off - gl >= 4, "sparse tensor: index stream runs past the end");
    const uint8_t *gs = in + off;
    off += gl;
    const size_t vl = get_u32le(in + off);
    off += 4;
    NEED(vl == len - off, "sparse tensor: value stream is %zu bytes, %zu remain", vl, len - off);
    const uint8_t *vs = in + off;
    /* every entry costs at least one bit of the index stream: bounds the allocation */
    NEED((uint64_t)n <= (uint64_t)gl * 8 && (uint64_t)n <= (uint64_t)rows * (uint64_t)cols,
         "sparse tensor: %u entries cannot fit", n);
    NEED(nnz_hdr <= n, "sparse tensor: %u nonzeros in %u entries", nnz_hdr, n);
    gaps = malloc(sizeof(uint16_t) * (n ? n : 1));
    if (!gaps) {
        st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    nz_error inner = {0};
    st = huff ? huf_decode(gs, gl, gaps, n, 1 << index_bits, &inner)
              : unpack_fixed(gs, gl, gaps, n, (int)index_bits, &inner);
    if (st) {
        st = nz_fail(err, NZ_ERR_CORRUPT, "sparse tensor: index stream: %s", inner.msg);
        goto fail;
    }
    if (has_cb) {
        codes = malloc(sizeof(uint16_t) * (n ? n : 1));
        if (!codes) {
            st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
            goto fail;
        }
        st = huff ? huf_decode(vs, vl, codes, n, 1 << code_bits, &inner)
                  : unpack_fixed(vs, vl, codes, n, (int)code_bits, &inner);
        if (st) {
            st = nz_fail(err, NZ_ERR_CORRUPT, "sparse tensor: value stream: %s", inner.msg);
            goto fail;
        }
    } else {
        NEED(vl == (size_t)n * 4, "sparse tensor: %zu value bytes for %u entries", vl, n);
    }
    s = sparse_alloc(rows, cols, nnz_hdr, has_cb ? n_cb : 0);
    if (cm && s && !csc_alloc(s)) {
        tcode = has_cb ? malloc(nnz_hdr ? nnz_hdr : 1) : NULL;
        perm = malloc(sizeof(uint32_t) * (nnz_hdr ? nnz_hdr : 1));
    }
    if (!s || (cm && (!s->col_ptr || (has_cb && !tcode) || !perm))) {
        st = nz_fail(err, NZ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int k = 0; k < n_cb; k++) {
        if (cb_width == 2) {
            s->codebook[k] = nz_f16_to_f32((uint16_t)(cbp[2 * k] | cbp[2 * k + 1] << 8));
        } else {
            uint32_t u = get_u32le(cbp + 4 * (size_t)k);
            memcpy(&s->codebook[k], &u, 4);
        }
        NEED(isfinite(s->codebook[k]), "sparse tensor: codebook entry %d is not finite", k);
    }
    NEED(!has_cb || (cb_width == 2 ? (cbp[0] | cbp[1]) == 0 : get_u32le(cbp) == 0),
         "sparse tensor: codebook[0] is not +0");
    s->codebook_f16 = cb_width == 2;
    s->index_bits = (int)index_bits;
    s->code_bits = (int)code_bits;
    s->huffman = huff;
    s->col_major = cm;
    s->n_entries = n;
    s->index_stream_bytes = gl;
    s->value_stream_bytes = vl;
    s->codebook_bytes = 2 + cb_width * (size_t)n_cb;
    const uint64_t total = (uint64_t)rows * (uint64_t)cols;
    /* entries arrive in stored order: into the rows, or straight into the column form, whose
     * transpose gives the rows afterwards */
    const int n_major = cm ? cols : rows;
    const uint64_t n_minor = (uint64_t)(cm ? rows : cols);
    uint32_t *ptr = cm ? s->col_ptr : s->row_ptr, *idx = cm ? s->row : s->col;
    uint8_t *code = cm ? tcode : s->code;
    float *val = cm ? s->cval : s->val;
    ptr[0] = 0;
    uint64_t pos = (uint64_t)-1;
    uint32_t j = 0;
    int r = 0;
    for (uint32_t e = 0; e < n; e++) {
        pos += (uint64_t)gaps[e] + 1;
        NEED(pos < total, "sparse tensor: entry %u indexes past the end of the %dx%d matrix", e,
             rows, cols);
        float v = 0.0f;
        int filler;
        if (has_cb) {
            NEED(codes[e] < n_cb, "sparse tensor: codebook index %u out of range (%d entries)",
                 codes[e], n_cb);
            filler = codes[e] == 0;
        } else {
            uint32_t u = get_u32le(vs + 4 * (size_t)e);
            memcpy(&v, &u, 4);
            NEED(u != 0x80000000u, "sparse tensor: entry %u is -0", e);
            filler = u == 0;
        }
        if (filler) { /* canonical: a filler only bridges a full-width gap to a later entry */
            NEED(gaps[e] == (1u << index_bits) - 1 && e + 1 < n,
                 "sparse tensor: entry %u is a zero that bridges no gap", e);
            continue;
        }
        NEED(j < nnz_hdr, "sparse tensor: more nonzeros than the %u declared", nnz_hdr);
        const int major = (int)(pos / n_minor);
        while (r < major) ptr[++r] = j;
        idx[j] = (uint32_t)(pos % n_minor);
        if (has_cb)
            code[j] = (uint8_t)codes[e];
        else
            val[j] = v;
        j++;
    }
    NEED(j == nnz_hdr, "sparse tensor: %u nonzeros, %u declared", j, nnz_hdr);
    while (r < n_major) ptr[++r] = j;
    if (cm) {
        transpose_index(cols, rows, s->col_ptr, s->row, s->row_ptr, s->col, perm);
        for (uint32_t k = 0; k < j; k++) {
            if (has_cb)
                s->code[k] = tcode[perm[k]];
            else
                s->val[k] = s->cval[perm[k]];
        }
        if (has_cb)
            for (uint32_t k = 0; k < j; k++) s->cval[k] = s->codebook[tcode[k]];
    }
    free(gaps);
    free(codes);
    free(tcode);
    free(perm);
    *out = s;
    return NZ_OK;
fail:
    free(gaps);
    free(codes);
    free(tcode);
    free(perm);
    nz_sparse_free(s);
    return st;
}

/* ---------------------------------------------------------------- model-level */

nz_status nz_model_densify(nz_model *m, nz_error *err) {
    size_t add = 0;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_params; k++)
            if (m->nodes[i].params[k].sparse) add += nz_param_numel(&m->nodes[i].params[k]);
    if (!add) return NZ_OK;
    float *p = realloc(m->params, sizeof(float) * (m->n_params + add));
    if (!p) return nz_fail(err, NZ_ERR_NOMEM, "out of memory expanding sparse weights");
    m->params = p;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_params; k++) {
            nz_param *q = &m->nodes[i].params[k];
            if (!q->sparse) continue;
            q->off = m->n_params;
            q->n = nz_param_numel(q);
            nz_sparse_to_dense(q->sparse, m->params + q->off);
            m->n_params += q->n;
            nz_sparse_free(q->sparse);
            q->sparse = NULL;
        }
    return NZ_OK;
}

nz_status nz_model_sparsify_param(nz_model *m, int node, const float *codebook, int n_codebook,
                                  int index_bits, nz_error *err) {
    if (node <= 0 || node >= m->n_nodes || !nz_node_is_weighted(&m->nodes[node]))
        return nz_fail(err, NZ_ERR_ARG, "node %d has no weights to sparsify", node);
    nz_param *p = &m->nodes[node].params[0];
    if (p->sparse) return nz_fail(err, NZ_ERR_ARG, "node '%s' is already sparse", m->nodes[node].name);
    int rows = p->dims[0];
    int cols = (int)(nz_param_numel(p) / (size_t)rows);
    nz_sparse *s;
    nz_status st = nz_sparse_from_dense(&s, m->params + p->off, rows, cols, codebook, n_codebook,
                                        index_bits, err);
    if (!st && (st = nz_sparse_prepare(s, m->nodes[node].op, err))) nz_sparse_free(s);
    if (st) return st;
    /* compact the dense buffer: drop this tensor's floats and shift later offsets */
    const size_t off = p->off, n = p->n;
    memmove(m->params + off, m->params + off + n, sizeof(float) * (m->n_params - off - n));
    m->n_params -= n;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_params; k++) {
            nz_param *q = &m->nodes[i].params[k];
            if (!q->sparse && q != p && q->off > off) q->off -= n;
        }
    p->sparse = s;
    p->off = 0;
    p->n = 0;
    return NZ_OK;
}

size_t nz_param_stored_bytes(const nz_model *m, const nz_param *p) {
    if (!p->sparse) return nz_dense_stored_bytes(m, p); /* F32, F16 or KERNELS, as nz_save writes it */
    uint8_t *buf;
    size_t len;
    if (nz_sparse_encode(p->sparse, &buf, &len, NULL)) return 0;
    free(buf);
    return 16 + len;
}
