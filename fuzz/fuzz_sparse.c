/* libFuzzer target for the sparse tensor payload (encoding SPARSE of include/nnzip/format.h,
 * decoded by nz_sparse_decode in src/compress/sparse.c). Input layout:
 *
 *   bytes 0..1  rows (u16 LE), used as 1 + value % 4096
 *   bytes 2..3  cols (u16 LE), used as 1 + value % 4096; if rows * cols > 2^20, cols is cut to
 *               2^20 / rows (bounds the memory and time of one run)
 *   rest        the payload, passed in an exact-size copy (ASan sees any read past it)
 *
 * Any input must be refused (a status with a one-line message, no output) or decoded into a
 * form that keeps the CSR invariants (row_ptr monotone from 0 to nnz, columns strictly rising
 * inside a row and < cols, codes in 1..k-1, f32 values non-zero), that has the column form
 * exactly when the positions are stored column-major (with the same invariants by column and
 * the same entries as the rows), and that re-encodes, with its own settings, into a payload
 * decoding to the same entries. Any violation traps.
 * Seeds: fuzz/corpus/sparse (from fuzz/make_sparse_corpus.c).
 *
 * Built and run by scripts/run_fuzz.sh (clang, libFuzzer, ASan+UBSan, every library source file
 * linked in), or by hand with the same flags:
 *
 *   clang -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 -fopenmp \
 *       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iinclude -Isrc \
 *       -I/usr/include/x86_64-linux-gnu/openblas-openmp fuzz/fuzz_sparse.c $LIB_SOURCES \
 *       -L/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm -o /tmp/fuzz_sparse
 *   (LIB_SOURCES: every src/<module>/<file>.c)
 *   cp -r fuzz/corpus/sparse /tmp/sparse_corpus && /tmp/fuzz_sparse -max_total_time=60 \
 *       /tmp/sparse_corpus */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nnzip/compress.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_CELLS (1u << 20)
#define FUZZ_DENSE_COMPARE (1u << 16) /* also compare dense matrices up to this many cells */

static void check(int ok) {
    if (!ok) __builtin_trap();
}

static void check_error(nz_status st, const nz_error *err, const nz_sparse *out) {
    check(out == NULL && err->code == st && err->msg[0] != 0 && !strchr(err->msg, '\n'));
}

static void check_invariants(const nz_sparse *s, int rows, int cols) {
    check(s->rows == rows && s->cols == cols);
    check(s->row_ptr[0] == 0 && s->row_ptr[rows] == s->nnz);
    check(s->nnz <= (uint64_t)rows * (uint64_t)cols && s->n_entries >= s->nnz);
    check(s->index_bits >= 1 && s->index_bits <= 12);
    if (s->n_codebook) {
        check(s->n_codebook >= 2 && s->n_codebook <= 256 && s->codebook[0] == 0.0f);
        check(s->code_bits >= 1 && s->code_bits <= 8 && s->n_codebook <= (1 << s->code_bits));
    } else {
        check(s->code_bits == 0);
    }
    for (int r = 0; r < rows; r++) {
        check(s->row_ptr[r] <= s->row_ptr[r + 1]);
        for (uint32_t j = s->row_ptr[r]; j < s->row_ptr[r + 1]; j++) {
            check(s->col[j] < (uint32_t)cols);
            check(j == s->row_ptr[r] || s->col[j] > s->col[j - 1]);
            if (s->n_codebook)
                check(s->code[j] != 0 && s->code[j] < s->n_codebook);
            else
                check(s->val[j] != 0.0f); /* NaN passes: it is a stored value */
        }
    }
    check(!s->col_ptr == !s->col_major);
    if (!s->col_ptr) return;
    check(s->col_ptr[0] == 0 && s->col_ptr[cols] == s->nnz);
    /* the columns hold the rows' entries: walking the columns in order, each entry is found in
     * its row at a cursor that only moves forward (columns rise inside a row) */
    uint32_t *cur = malloc(sizeof(uint32_t) * (size_t)rows);
    check(cur != NULL);
    memcpy(cur, s->row_ptr, sizeof(uint32_t) * (size_t)rows);
    for (int c = 0; c < cols; c++) {
        check(s->col_ptr[c] <= s->col_ptr[c + 1]);
        for (uint32_t j = s->col_ptr[c]; j < s->col_ptr[c + 1]; j++) {
            const uint32_t r = s->row[j];
            check(r < (uint32_t)rows);
            check(j == s->col_ptr[c] || r > s->row[j - 1]);
            const uint32_t k = cur[r]++;
            check(k < s->row_ptr[r + 1] && s->col[k] == (uint32_t)c);
            const float v = nz_sparse_value(s, k);
            check(memcmp(&s->cval[j], &v, 4) == 0);
        }
    }
    for (int r = 0; r < rows; r++) check(cur[r] == s->row_ptr[r + 1]);
    free(cur);
}

/* same entries, same values (bit for bit), same codebook */
static void check_same(const nz_sparse *a, const nz_sparse *b) {
    check(a->rows == b->rows && a->cols == b->cols && a->nnz == b->nnz);
    /* n_entries may differ: a decoder-accepted payload may carry more filler entries than the
     * encoder writes */
    check(a->n_codebook == b->n_codebook && a->col_major == b->col_major);
    check(memcmp(a->row_ptr, b->row_ptr, sizeof(uint32_t) * ((size_t)a->rows + 1)) == 0);
    check(a->nnz == 0 || memcmp(a->col, b->col, sizeof(uint32_t) * a->nnz) == 0);
    if (a->n_codebook) {
        check(memcmp(a->codebook, b->codebook, sizeof(float) * (size_t)a->n_codebook) == 0);
        check(a->nnz == 0 || memcmp(a->code, b->code, a->nnz) == 0);
    } else {
        check(a->nnz == 0 || memcmp(a->val, b->val, sizeof(float) * a->nnz) == 0);
    }
    size_t cells = (size_t)a->rows * (size_t)a->cols;
    if (cells <= FUZZ_DENSE_COMPARE) {
        float *da = malloc(sizeof(float) * cells), *db = malloc(sizeof(float) * cells);
        if (da && db) {
            nz_sparse_to_dense(a, da);
            nz_sparse_to_dense(b, db);
            check(memcmp(da, db, sizeof(float) * cells) == 0);
        }
        free(da);
        free(db);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    const int rows = 1 + (data[0] | data[1] << 8) % 4096;
    int cols = 1 + (data[2] | data[3] << 8) % 4096;
    if ((size_t)rows * (size_t)cols > FUZZ_MAX_CELLS) cols = (int)(FUZZ_MAX_CELLS / (size_t)rows);
    const size_t len = size - 4;
    uint8_t *in = malloc(len ? len : 1);
    if (!in) return 0;
    if (len) memcpy(in, data + 4, len);
    nz_sparse *s = (nz_sparse *)in, *t = NULL;
    nz_error err;
    memset(&err, 0, sizeof err);
    nz_status st = nz_sparse_decode(in, len, rows, cols, &s, &err);
    if (st != NZ_OK) {
        check_error(st, &err, s);
        free(in);
        return 0;
    }
    check_invariants(s, rows, cols);
    /* re-encode with the decoded settings (width, Huffman, code width), decode again */
    uint8_t *re = NULL;
    size_t re_len = 0;
    check(nz_sparse_encode(s, &re, &re_len, &err) == NZ_OK);
    st = nz_sparse_decode(re, re_len, rows, cols, &t, &err);
    check(st == NZ_OK);
    check_invariants(t, rows, cols);
    check_same(s, t);
    /* the re-encoded payload is canonical: encoding it again gives the same bytes */
    uint8_t *re2 = NULL;
    size_t re2_len = 0;
    check(nz_sparse_encode(t, &re2, &re2_len, &err) == NZ_OK);
    check(re2_len == re_len && memcmp(re, re2, re_len) == 0);
    free(re2);
    free(re);
    nz_sparse_free(t);
    nz_sparse_free(s);
    free(in);
    return 0;
}
