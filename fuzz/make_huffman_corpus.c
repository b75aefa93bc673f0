/* Writes the seed files for fuzz/fuzz_huffman.c: a few small valid streams wrapped for its decode
 * mode (mode byte 0, n_expected u32, n_sym_max u16, stream) and a few round-trip inputs.
 *
 *   gcc -std=c11 -Iinclude -Isrc fuzz/make_huffman_corpus.c src/compress/huffman.c \
 *       src/core/error.c -o /tmp/make_huffman_corpus
 *   /tmp/make_huffman_corpus fuzz/corpus/huffman */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/huffman.h"

static int write_file(const char *dir, const char *name, const uint8_t *p, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    return 0;
}

/* encodes syms and writes a decode-mode seed */
static int decode_seed(const char *dir, const char *name, const uint16_t *syms, size_t n,
                       int n_sym) {
    uint8_t *buf, seed[4096];
    size_t len;
    nz_error err;
    if (huf_encode(syms, n, n_sym, &buf, &len, &err) != NZ_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (len + 7 > sizeof seed) {
        free(buf);
        return 1;
    }
    seed[0] = 0;
    for (int i = 0; i < 4; i++) seed[1 + i] = (uint8_t)(n >> (8 * i));
    seed[5] = (uint8_t)n_sym;
    seed[6] = (uint8_t)(n_sym >> 8);
    memcpy(seed + 7, buf, len);
    free(buf);
    return write_file(dir, name, seed, len + 7);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "fuzz/corpus/huffman";
    uint16_t syms[300];
    int bad = 0;

    /* skewed 5-bit indices: symbol = trailing zeros of i+1, so lengths reach ~8 bits */
    for (int i = 0; i < 300; i++) syms[i] = (uint16_t)__builtin_ctz((unsigned)i + 1);
    bad += decode_seed(dir, "skewed32", syms, 300, 32);
    /* a lone symbol (the one accepted incomplete code) */
    for (int i = 0; i < 20; i++) syms[i] = 3;
    bad += decode_seed(dir, "lone", syms, 20, 8);
    /* empty stream over a large alphabet (one zero run) */
    bad += decode_seed(dir, "empty4096", syms, 0, HUF_MAX_SYMS);
    /* a sparse, wide alphabet */
    for (int i = 0; i < 64; i++) syms[i] = (uint16_t)((i * 37) % 50 * 61 + 7);
    bad += decode_seed(dir, "sparse4096", syms, 64, HUF_MAX_SYMS);

    /* round-trip mode: mode byte 1, alphabet size, then symbols */
    uint8_t rt[64] = {1, 15, 0}; /* 16 symbols, one per byte */
    for (int i = 3; i < 64; i++) rt[i] = (uint8_t)(i * i % 11);
    bad += write_file(dir, "roundtrip16", rt, sizeof rt);
    return bad ? 1 : 0;
}
