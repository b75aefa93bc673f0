/* libFuzzer target for the Huffman codec (src/compress/huffman.c). The first byte picks a mode:
 *
 *   even: decode. Bytes 1..4 = n_expected (u32 LE, at most 1<<20: larger values are reduced
 *         modulo 1<<20 + 1, and modulo 8 * stream bytes + 1 if above that, since no valid stream
 *         holds more symbols than bits; this keeps the output buffers, and the fuzzer, fast),
 *         bytes 5..6 = n_sym_max (u16 LE), the rest is the stream. Both decoders run; they must
 *         agree on the status and, on success, on every symbol; an error must be a one-line
 *         "huffman: ..." record with the status as its code.
 *   odd:  round trip. Bytes 1..2 give the alphabet size (1 + u16 % 4096); the rest are symbols
 *         (mod the alphabet size), one per byte or, if bit 1 of the first byte is set, one per
 *         u16 LE. Encode, decode with both decoders, compare, check huf_encoded_bits against
 *         the stream and that one symbol more or fewer is rejected.
 *
 * Any disagreement traps. Seeds: fuzz/corpus/huffman (from fuzz/make_huffman_corpus.c).
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
 *       fuzz/fuzz_huffman.c src/compress/huffman.c src/core/error.c -o /tmp/fh
 *   cp -r fuzz/corpus/huffman /tmp/huf_corpus && /tmp/fh -max_total_time=60 /tmp/huf_corpus */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compress/huffman.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_EXPECTED (1u << 20)

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void check_error(nz_status st, const nz_error *err) {
    if (st == NZ_OK) return;
    if (err->code != st || strncmp(err->msg, "huffman: ", 9) != 0 || strchr(err->msg, '\n'))
        __builtin_trap();
}

static void fuzz_decode(const uint8_t *data, size_t size) {
    if (size < 7) return;
    const uint8_t *in = data + 7;
    size_t len = size - 7;
    size_t n = rd32(data + 1);
    if (n > FUZZ_MAX_EXPECTED) n %= FUZZ_MAX_EXPECTED + 1;
    if (n > 8 * len) n %= 8 * len + 1;
    int n_sym_max = data[5] | data[6] << 8;
    /* exact-size copy: ASan flags any read past the stream */
    uint8_t *copy = malloc(len ? len : 1);
    uint16_t *a = malloc((n ? n : 1) * sizeof *a), *b = malloc((n ? n : 1) * sizeof *b);
    if (!copy || !a || !b) goto done;
    if (len) memcpy(copy, in, len);
    nz_error ea, eb;
    nz_status sa = huf_decode(copy, len, a, n, n_sym_max, &ea);
    nz_status sb = huf_decode_ref(copy, len, b, n, n_sym_max, &eb);
    if (sa != sb) __builtin_trap();
    check_error(sa, &ea);
    check_error(sb, &eb);
    if (sa == NZ_OK) {
        if (n && memcmp(a, b, n * sizeof *a) != 0) __builtin_trap();
        for (size_t i = 0; i < n; i++)
            if (a[i] >= n_sym_max) __builtin_trap();
    }
done:
    free(b);
    free(a);
    free(copy);
}

static void fuzz_roundtrip(const uint8_t *data, size_t size) {
    if (size < 3) return;
    int n_sym = 1 + (data[1] | data[2] << 8) % HUF_MAX_SYMS;
    int wide = data[0] & 2;
    size_t n = wide ? (size - 3) / 2 : size - 3;
    uint16_t *syms = malloc((n + 1) * sizeof *syms);
    uint16_t *a = malloc((n + 1) * sizeof *a), *b = malloc((n + 1) * sizeof *b);
    uint8_t *buf = NULL;
    size_t len = 0;
    nz_error err;
    if (!syms || !a || !b) goto done;
    for (size_t i = 0; i < n; i++) {
        unsigned v = wide ? (unsigned)(data[3 + 2 * i] | data[4 + 2 * i] << 8) : data[3 + i];
        syms[i] = (uint16_t)(v % (unsigned)n_sym);
    }
    if (huf_encode(syms, n, n_sym, &buf, &len, &err) != NZ_OK) __builtin_trap();
    size_t bits = huf_encoded_bits(syms, n, n_sym);
    if (bits == SIZE_MAX || len < HUF_HEADER_SIZE + (bits + 7) / 8) __builtin_trap();
    if (huf_decode(buf, len, a, n, n_sym, &err) != NZ_OK) __builtin_trap();
    if (huf_decode_ref(buf, len, b, n, n_sym, &err) != NZ_OK) __builtin_trap();
    if (n && (memcmp(a, syms, n * sizeof *a) != 0 || memcmp(b, syms, n * sizeof *b) != 0))
        __builtin_trap();
    /* one symbol more or fewer than the stream holds is always an error */
    if (huf_decode(buf, len, a, n + 1, n_sym, &err) != NZ_ERR_CORRUPT) __builtin_trap();
    if (n && huf_decode(buf, len, a, n - 1, n_sym, &err) != NZ_ERR_CORRUPT) __builtin_trap();
done:
    free(buf);
    free(b);
    free(a);
    free(syms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] & 1) fuzz_roundtrip(data, size);
    else fuzz_decode(data, size);
    return 0;
}
