/* Writes the seed files for fuzz/fuzz_sparse.c: a few small valid sparse payloads, each after
 * the target's 4-byte prefix (rows - 1 and cols - 1 as u16 LE), covering f32 and codebook
 * values, packed and Huffman streams, filler entries, an all-zero matrix, and column-major
 * positions (flag bit 3).
 *
 *   gcc -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -fopenmp -Iinclude -Isrc \
 *       -I/usr/include/x86_64-linux-gnu/openblas-openmp fuzz/make_sparse_corpus.c \
 *       $LIB_SOURCES -L/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm \
 *       -o /tmp/make_sparse_corpus        (LIB_SOURCES: every src/<module>/<file>.c)
 *   /tmp/make_sparse_corpus fuzz/corpus/sparse */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnzip/compress.h"

static int seed(const char *dir, const char *name, const float *W, int rows, int cols,
                const float *cb, int k, int index_bits, int huffman, int col_major) {
    nz_sparse *s;
    nz_error err;
    uint8_t *buf;
    size_t len;
    if (nz_sparse_from_dense(&s, W, rows, cols, cb, k, index_bits, &err) != NZ_OK) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return 1;
    }
    s->huffman = huffman;
    s->col_major = col_major;
    nz_status st = nz_sparse_encode(s, &buf, &len, &err);
    nz_sparse_free(s);
    if (st != NZ_OK) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return 1;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const uint8_t head[4] = {(uint8_t)(rows - 1), (uint8_t)((rows - 1) >> 8), (uint8_t)(cols - 1),
                             (uint8_t)((cols - 1) >> 8)};
    FILE *f = fopen(path, "wb");
    int bad = !f || fwrite(head, 1, 4, f) != 4 || fwrite(buf, 1, len, f) != len;
    if (f && fclose(f) != 0) bad = 1;
    if (bad) fprintf(stderr, "cannot write %s\n", path);
    free(buf);
    return bad;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "fuzz/corpus/sparse";
    int bad = 0;
    static float W[16 * 24];
    const float cb[5] = {0.0f, -1.5f, -0.25f, 0.5f, 2.0f};

    /* 6x10 f32, packed 3-bit gaps: fillers, an empty row, the last position set */
    memset(W, 0, sizeof W);
    const int pos[] = {0, 3, 4, 17, 18, 40, 41, 42, 59};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) W[pos[i]] = cb[1 + i % 4] * 1.25f;
    bad += seed(dir, "f32_packed", W, 6, 10, NULL, 0, 3, 0, 0);

    /* the same positions with codebook values, 2-bit gaps, packed and Huffman */
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) W[pos[i]] = cb[1 + i % 4];
    bad += seed(dir, "codebook_packed", W, 6, 10, cb, 5, 2, 0, 0);
    /* column-major: gaps 1 4 6 6 2 6 19 6 10 down the columns, fillers at 3 bits */
    bad += seed(dir, "col_codebook_packed", W, 6, 10, cb, 5, 3, 0, 1);

    /* 16x24 at about 20% codebook values, Huffman streams, 4-bit gaps */
    memset(W, 0, sizeof W);
    unsigned x = 12345;
    for (int i = 0; i < 16 * 24; i++) {
        x = x * 1103515245u + 12345u;
        if ((x >> 16) % 5 == 0) W[i] = cb[1 + (x >> 8) % 4];
    }
    bad += seed(dir, "codebook_huffman", W, 16, 24, cb, 5, 4, 1, 0);
    bad += seed(dir, "col_codebook_huffman", W, 16, 24, cb, 5, 4, 1, 1);
    /* f32 values column-major, with whole empty columns */
    for (int i = 0; i < 16 * 24; i++)
        if ((i % 24) % 5 == 2) W[i] = 0.0f;
    for (int i = 0; i < 16 * 24; i++) W[i] *= 1.25f;
    bad += seed(dir, "col_f32_huffman", W, 16, 24, NULL, 0, 3, 1, 1);

    /* an all-zero 3x7 matrix, f32, Huffman */
    memset(W, 0, sizeof W);
    bad += seed(dir, "empty_huffman", W, 3, 7, NULL, 0, 5, 1, 0);
    return bad ? 1 : 0;
}
