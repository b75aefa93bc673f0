/* libFuzzer target for the .nnz reader: any input must be rejected or loaded cleanly, without
 * crashes, leaks or undefined behaviour. Seeds: fuzz/corpus/nnz (from fuzz/make_corpus.c).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc fuzz/fuzz_nnz.c \
 *       src/format/{meta,nnz_read,nnz_write,kernels}.c src/core/model.c src/core/error.c \
 *       src/core/rng.c -lz -lm -o /tmp/fuzz_nnz
 *   cp -r fuzz/corpus/nnz /tmp/nnz_corpus && /tmp/fuzz_nnz -max_total_time=60 /tmp/nnz_corpus */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "nnzip/format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes whatever CRCs lie inside the buffer. A mutated byte almost never comes with a
 * matching CRC, so without this nearly every input would stop at the checksum and the parsers
 * behind it would go unfuzzed. */
static void fix_crcs(uint8_t *f, size_t size) {
    if (size < NZF_HEADER_SIZE) return;
    uint32_t n = rd32(f + 12);
    if (n > NZF_MAX_SECTIONS || (uint64_t)n * NZF_ENTRY_SIZE > size - NZF_HEADER_SIZE) return;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *e = f + NZF_HEADER_SIZE + (size_t)i * NZF_ENTRY_SIZE;
        uint64_t off = rd64(e + 8), len = rd64(e + 16);
        if (off <= size && len <= size - off)
            wr32(e + 24, (uint32_t)crc32(0L, f + off, (uInt)len));
    }
    wr32(f + 20, (uint32_t)crc32(0L, f + NZF_HEADER_SIZE, (uInt)n * NZF_ENTRY_SIZE));
}

static void load_one(const uint8_t *data, size_t size, nz_meta *meta) {
    nz_model m;
    nz_error err;
    nz_status st = nz_load_buffer(data, size, "fuzz.nnz", &m, meta, &err);
    if (st == NZ_OK) {
        /* a loaded model must be one the library accepts everywhere else */
        if (nz_model_validate(&m, &err) != NZ_OK) abort();
        nz_model_free(&m);
    } else if (strncmp(err.msg, "fuzz.nnz: ", 10) != 0 || err.code != st) {
        abort(); /* every error names the file */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nz_meta *meta = malloc(sizeof *meta); /* 40 KB: keep it off the stack */
    uint8_t *fixed = malloc(size ? size : 1);
    if (meta && fixed) {
        load_one(data, size, meta); /* as given: exercises the checksum paths */
        memcpy(fixed, data, size);
        fix_crcs(fixed, size);
        load_one(fixed, size, meta); /* with valid CRCs: exercises the parsers */
    }
    free(fixed);
    free(meta);
    return 0;
}
