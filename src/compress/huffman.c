/* Huffman codec for symbol streams (stream layout in huffman.h).
 *
 * Encoder: symbol frequencies -> optimal code lengths (Moffat-Katajainen in-place algorithm on
 * sorted weights) -> limited to HUF_MAX_LEN by moving Kraft mass from over-long codes to the
 * deepest short ones (the zlib/miniz repair, which always ends with a complete code) ->
 * canonical codes, written LSB-first.
 *
 * Decoders: both share one header parser, which is the only place code lengths are trusted; it
 * rejects over-subscribed and incomplete codes before any table is built. The fast decoder
 * looks up the next max_len bits in a flat table of (symbol, length) entries and refills a 64-bit
 * bit buffer with one unaligned load per several symbols; the reference decoder reads one bit at
 * a time with the canonical first-code walk (as in zlib's puff.c). Every check on input goes
 * through HUF_REQUIRE. */
#include "compress/huffman.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The one check for untrusted input: on failure, return NZ_ERR_CORRUPT with a one-line message
 * (no file name: the caller prefixes it). Needs `err` in scope. */
#define HUF_REQUIRE(cond, ...)                                                                 \
    do {                                                                                       \
        if (!(cond)) return nz_fail(err, NZ_ERR_CORRUPT, "huffman: " __VA_ARGS__);             \
    } while (0)

#define HUF_ITEM_BITS 5    /* one code-length item */
#define HUF_ITEM_ZRUN 31u  /* item: a run of zero lengths follows */
#define HUF_ZRUN_BITS 12   /* run length - 1 */
#define HUF_ZRUN_MIN 4     /* shorter runs are cheaper as literal zeros (4*5 > 5+12) */
#define HUF_SYM_BITS 12    /* fast table entry: symbol in the low 12 bits, length above */
#define HUF_SYM_MASK ((1u << HUF_SYM_BITS) - 1)

_Static_assert(HUF_MAX_SYMS <= (1 << HUF_SYM_BITS), "symbols must fit a table entry");
_Static_assert(HUF_MAX_SYMS <= (1 << HUF_ZRUN_BITS), "one zero run must cover the alphabet");
_Static_assert(HUF_MAX_LEN < 16 && HUF_MAX_LEN < (int)HUF_ITEM_ZRUN, "lengths must fit items");

/* ---------------------------------------------------------------- bytes and bits */

static uint16_t get_u16le(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u16le(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32le(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t load_u64le(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* the low len bits of code, reversed (canonical codes are MSB-first, the stream is LSB-first) */
static uint32_t reverse_bits(uint32_t code, int len) {
    uint32_t r = 0;
    for (int i = 0; i < len; i++) r |= ((code >> i) & 1u) << (len - 1 - i);
    return r;
}

/* Bit writer into a buffer sized exactly beforehand. */
typedef struct {
    uint8_t *p;
    uint64_t buf;
    unsigned n; /* bits in buf, < 32 between calls */
} bit_writer;

static inline void bw_put(bit_writer *w, uint32_t bits, unsigned nbits) {
    w->buf |= (uint64_t)bits << w->n;
    w->n += nbits;
    if (w->n >= 32) {
        put_u32le(w->p, (uint32_t)w->buf);
        w->p += 4;
        w->buf >>= 32;
        w->n -= 32;
    }
}

/* writes the remaining bits, zero-padded to a byte boundary */
static void bw_flush(bit_writer *w) {
    while (w->n > 0) {
        *w->p++ = (uint8_t)w->buf;
        w->buf >>= 8;
        w->n = w->n >= 8 ? w->n - 8 : 0;
    }
}

/* Plain bit reader for the code-length section and the reference decoder. */
typedef struct {
    const uint8_t *p;
    uint64_t pos, end; /* in bits */
} bit_reader;

/* next nbits (<= 16) as a value, or -1 past the end (the position is left unchanged) */
static int32_t br_bits(bit_reader *r, unsigned nbits) {
    if (nbits > r->end - r->pos) return -1;
    uint32_t v = 0;
    for (unsigned i = 0; i < nbits; i++, r->pos++)
        v |= (uint32_t)((r->p[r->pos >> 3] >> (r->pos & 7)) & 1u) << i;
    return (int32_t)v;
}

/* ---------------------------------------------------------------- code lengths (encoder) */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Moffat & Katajainen, "In-place calculation of minimum-redundancy codes" (1995). On entry
 * a[0..n-1] are weights in non-decreasing order (n >= 2); on return a[i] is the optimal code
 * length of the i-th weight (non-increasing in i). Weights must not overflow when summed. */
static void min_redundancy_lengths(uint64_t *a, int n) {
    int root = 0, leaf = 2, next;
    a[0] += a[1];
    /* first pass, left to right: internal node weights, then parent pointers */
    for (next = 1; next < n - 1; next++) {
        if (leaf >= n || a[root] < a[leaf]) {
            a[next] = a[root];
            a[root++] = (uint64_t)next;
        } else {
            a[next] = a[leaf++];
        }
        if (leaf >= n || (root < next && a[root] < a[leaf])) {
            a[next] += a[root];
            a[root++] = (uint64_t)next;
        } else {
            a[next] += a[leaf++];
        }
    }
    /* second pass, right to left: internal node depths */
    a[n - 2] = 0;
    for (next = n - 3; next >= 0; next--) a[next] = a[a[next]] + 1;
    /* third pass, right to left: leaf depths */
    int avbl = 1, used = 0, dpth = 0;
    root = n - 2;
    next = n - 1;
    while (avbl > 0) {
        while (root >= 0 && a[root] == (uint64_t)dpth) {
            used++;
            root--;
        }
        while (avbl > used) {
            a[next--] = (uint64_t)dpth;
            avbl--;
        }
        avbl = 2 * used;
        dpth++;
        used = 0;
    }
}

/* Limits a complete code given as counts per length (len_count[1..max_depth], longer codes
 * already folded into len_count[HUF_MAX_LEN]) to HUF_MAX_LEN. Folding raised the Kraft sum
 * above 1; each step removes one code at HUF_MAX_LEN and splits the deepest shorter leaf into
 * two, which lowers the sum by exactly 2^-HUF_MAX_LEN and keeps the number of codes. The codes
 * above HUF_MAX_LEN never have a Kraft sum of 1 on their own (some slot at HUF_MAX_LEN held the
 * deep subtree), so a code at HUF_MAX_LEN is always there to remove, and the loop ends with a
 * complete code. */
static void limit_lengths(uint32_t *len_count) {
    uint32_t total = 0;
    for (int l = 1; l <= HUF_MAX_LEN; l++) total += len_count[l] << (HUF_MAX_LEN - l);
    while (total != (1u << HUF_MAX_LEN)) {
        len_count[HUF_MAX_LEN]--;
        for (int l = HUF_MAX_LEN - 1; l > 0; l--) {
            if (len_count[l]) {
                len_count[l]--;
                len_count[l + 1] += 2;
                break;
            }
        }
        total--;
    }
}

/* Code lengths (<= HUF_MAX_LEN, a complete code, or length 1 for a lone symbol) from
 * frequencies. Deterministic: ties are broken by symbol. */
static nz_status lengths_from_freqs(const uint64_t *freq, int n_sym, uint8_t *lens, nz_error *err) {
    memset(lens, 0, (size_t)n_sym);
    int m = 0;
    for (int s = 0; s < n_sym; s++) m += freq[s] > 0;
    if (m == 0) return NZ_OK;
    if (m == 1) {
        for (int s = 0; s < n_sym; s++)
            if (freq[s]) lens[s] = 1;
        return NZ_OK;
    }
    /* key = freq << 12 | symbol: sorts by frequency, then symbol (freq < 2^32 fits) */
    uint64_t *key = malloc((size_t)m * sizeof *key);
    uint64_t *a = malloc((size_t)m * sizeof *a);
    if (!key || !a) {
        free(key);
        free(a);
        return nz_fail(err, NZ_ERR_NOMEM, "huffman: out of memory for %d code lengths", m);
    }
    for (int s = 0, i = 0; s < n_sym; s++)
        if (freq[s]) key[i++] = freq[s] << HUF_SYM_BITS | (uint64_t)s;
    qsort(key, (size_t)m, sizeof *key, cmp_u64);
    for (int i = 0; i < m; i++) a[i] = key[i] >> HUF_SYM_BITS;
    min_redundancy_lengths(a, m);

    uint32_t len_count[HUF_MAX_LEN + 2] = {0};
    for (int i = 0; i < m; i++) len_count[a[i] > HUF_MAX_LEN ? HUF_MAX_LEN : a[i]]++;
    limit_lengths(len_count);
    /* most frequent (end of key[]) get the shortest lengths */
    int l = 1;
    for (int i = m - 1; i >= 0; i--) {
        while (len_count[l] == 0) l++;
        len_count[l]--;
        lens[key[i] & HUF_SYM_MASK] = (uint8_t)l;
    }
    free(key);
    free(a);
    return NZ_OK;
}

/* canonical MSB-first codes: shorter first, within a length by increasing symbol */
static void canonical_codes(const uint8_t *lens, int n_sym, uint32_t *codes) {
    uint32_t len_count[HUF_MAX_LEN + 1] = {0}, next[HUF_MAX_LEN + 1];
    for (int s = 0; s < n_sym; s++) len_count[lens[s]]++;
    len_count[0] = 0;
    uint32_t code = 0;
    for (int l = 1; l <= HUF_MAX_LEN; l++) {
        code = (code + len_count[l - 1]) << 1;
        next[l] = code;
    }
    for (int s = 0; s < n_sym; s++) codes[s] = lens[s] ? next[lens[s]]++ : 0;
}

/* counts symbols per value; NZ_ERR_ARG on a symbol >= n_sym */
static nz_status count_freqs(const uint16_t *syms, size_t n, int n_sym, uint64_t *freq,
                             nz_error *err) {
    memset(freq, 0, (size_t)n_sym * sizeof *freq);
    for (size_t i = 0; i < n; i++) {
        if (syms[i] >= n_sym)
            return nz_fail(err, NZ_ERR_ARG, "huffman: symbol %u at %zu is not below %d",
                           (unsigned)syms[i], i, n_sym);
        freq[syms[i]]++;
    }
    return NZ_OK;
}

static nz_status check_encode_args(const uint16_t *syms, size_t n, int n_sym, nz_error *err) {
    if (n_sym < 1 || n_sym > HUF_MAX_SYMS)
        return nz_fail(err, NZ_ERR_ARG, "huffman: alphabet size %d not in 1..%d", n_sym,
                       HUF_MAX_SYMS);
    if ((uint64_t)n > UINT32_MAX)
        return nz_fail(err, NZ_ERR_ARG, "huffman: %zu symbols exceed the u32 count", n);
    if (n > 0 && !syms) return nz_fail(err, NZ_ERR_ARG, "huffman: no symbols given");
    return NZ_OK;
}

nz_status huf_code_lengths(const uint16_t *syms, size_t n, int n_sym, uint8_t *lens,
                           nz_error *err) {
    uint64_t freq[HUF_MAX_SYMS];
    nz_status st = check_encode_args(syms, n, n_sym, err);
    if (!st && !lens) st = nz_fail(err, NZ_ERR_ARG, "huffman: no lengths array");
    if (!st) st = count_freqs(syms, n, n_sym, freq, err);
    if (!st) st = lengths_from_freqs(freq, n_sym, lens, err);
    return st;
}

size_t huf_encoded_bits(const uint16_t *syms, size_t n, int n_sym) {
    uint64_t freq[HUF_MAX_SYMS];
    uint8_t lens[HUF_MAX_SYMS];
    if (check_encode_args(syms, n, n_sym, NULL) || count_freqs(syms, n, n_sym, freq, NULL) ||
        lengths_from_freqs(freq, n_sym, lens, NULL))
        return SIZE_MAX;
    uint64_t bits = 0;
    for (int s = 0; s < n_sym; s++) bits += freq[s] * lens[s];
    return bits > SIZE_MAX ? SIZE_MAX : (size_t)bits;
}

/* ---------------------------------------------------------------- encoder */

/* writes the code-length items (or, with w == NULL, only counts their bits) */
static uint64_t write_lengths(const uint8_t *lens, int n_sym, bit_writer *w) {
    uint64_t bits = 0;
    for (int s = 0; s < n_sym;) {
        int run = 0;
        while (s + run < n_sym && lens[s + run] == 0) run++;
        if (run >= HUF_ZRUN_MIN) {
            if (w) {
                bw_put(w, HUF_ITEM_ZRUN, HUF_ITEM_BITS);
                bw_put(w, (uint32_t)(run - 1), HUF_ZRUN_BITS);
            }
            bits += HUF_ITEM_BITS + HUF_ZRUN_BITS;
            s += run;
        } else {
            if (w) bw_put(w, lens[s], HUF_ITEM_BITS);
            bits += HUF_ITEM_BITS;
            s++;
        }
    }
    return bits;
}

nz_status huf_encode(const uint16_t *syms, size_t n, int n_sym, uint8_t **out, size_t *out_len,
                     nz_error *err) {
    uint64_t freq[HUF_MAX_SYMS];
    uint8_t lens[HUF_MAX_SYMS];
    uint32_t codes[HUF_MAX_SYMS];
    if (!out || !out_len) return nz_fail(err, NZ_ERR_ARG, "huffman: no output pointers");
    *out = NULL;
    *out_len = 0;
    nz_status st = check_encode_args(syms, n, n_sym, err);
    if (!st) st = count_freqs(syms, n, n_sym, freq, err);
    if (!st) st = lengths_from_freqs(freq, n_sym, lens, err);
    if (st) return st;
    canonical_codes(lens, n_sym, codes);

    uint64_t payload_bits = 0;
    for (int s = 0; s < n_sym; s++) payload_bits += freq[s] * lens[s];
    uint64_t size = HUF_HEADER_SIZE + (write_lengths(lens, n_sym, NULL) + 7) / 8 +
                    (payload_bits + 7) / 8;
    if (size > SIZE_MAX) return nz_fail(err, NZ_ERR_NOMEM, "huffman: stream too large");
    uint8_t *buf = malloc((size_t)size);
    if (!buf) return nz_fail(err, NZ_ERR_NOMEM, "huffman: out of memory for %llu bytes",
                             (unsigned long long)size);

    put_u16le(buf, (uint16_t)n_sym);
    put_u32le(buf + 2, (uint32_t)n);
    bit_writer w = {buf + HUF_HEADER_SIZE, 0, 0};
    write_lengths(lens, n_sym, &w);
    bw_flush(&w);
    for (int s = 0; s < n_sym; s++) codes[s] = reverse_bits(codes[s], lens[s]); /* LSB-first */
    for (size_t i = 0; i < n; i++) bw_put(&w, codes[syms[i]], lens[syms[i]]);
    bw_flush(&w);
    *out = buf;
    *out_len = (size_t)size;
    return NZ_OK;
}

/* ---------------------------------------------------------------- header (both decoders) */

typedef struct {
    int n_sym;
    uint32_t count;
    uint8_t lens[HUF_MAX_SYMS];
    uint32_t len_count[HUF_MAX_LEN + 1]; /* codes per length; [0] unused */
    int n_used;                          /* symbols with a code */
    int max_len;
    int lone_sym; /* the symbol of a one-symbol code (length 1, code 0), else -1 */
    const uint8_t *payload;
    size_t payload_len;
} huf_header;

/* Parses and validates everything before the payload: sizes against the caller's expectations,
 * the code-length items, and the Kraft sum of the lengths. */
static nz_status parse_header(const uint8_t *in, size_t len, const uint16_t *syms,
                              size_t n_expected, int n_sym_max, huf_header *h, nz_error *err) {
    if (n_sym_max < 1) return nz_fail(err, NZ_ERR_ARG, "huffman: n_sym_max %d < 1", n_sym_max);
    if (n_expected > 0 && !syms) return nz_fail(err, NZ_ERR_ARG, "huffman: no output array");
    if (!in && len > 0) return nz_fail(err, NZ_ERR_ARG, "huffman: no input");
    HUF_REQUIRE(len >= HUF_HEADER_SIZE, "stream of %zu bytes is shorter than its %u-byte header",
                len, HUF_HEADER_SIZE);
    h->n_sym = get_u16le(in);
    h->count = get_u32le(in + 2);
    HUF_REQUIRE(h->n_sym >= 1 && h->n_sym <= HUF_MAX_SYMS, "alphabet size %d not in 1..%d",
                h->n_sym, HUF_MAX_SYMS);
    HUF_REQUIRE(h->n_sym <= n_sym_max, "alphabet size %d exceeds the expected %d", h->n_sym,
                n_sym_max);
    HUF_REQUIRE((uint64_t)h->count == (uint64_t)n_expected, "%lu symbols, expected %zu",
                (unsigned long)h->count, n_expected);

    bit_reader r = {in + HUF_HEADER_SIZE, 0, (uint64_t)(len - HUF_HEADER_SIZE) * 8};
    memset(h->len_count, 0, sizeof h->len_count);
    for (int s = 0; s < h->n_sym;) {
        int32_t item = br_bits(&r, HUF_ITEM_BITS);
        HUF_REQUIRE(item >= 0, "code lengths end at symbol %d of %d", s, h->n_sym);
        if ((uint32_t)item == HUF_ITEM_ZRUN) {
            int32_t run = br_bits(&r, HUF_ZRUN_BITS);
            HUF_REQUIRE(run >= 0, "code lengths end in a zero run at symbol %d", s);
            HUF_REQUIRE(run + 1 <= h->n_sym - s, "zero run of %d at symbol %d passes %d symbols",
                        (int)run + 1, s, h->n_sym);
            memset(h->lens + s, 0, (size_t)run + 1);
            s += (int)run + 1;
        } else {
            HUF_REQUIRE(item <= HUF_MAX_LEN, "code length %d of symbol %d exceeds %d", (int)item,
                        s, HUF_MAX_LEN);
            h->lens[s++] = (uint8_t)item;
            h->len_count[item]++;
        }
    }
    /* the section ends at the next byte boundary, padded with zero bits */
    uint64_t pad = (8 - (r.pos & 7)) & 7;
    HUF_REQUIRE(br_bits(&r, (unsigned)pad) == 0, "non-zero padding after the code lengths");
    h->payload = in + HUF_HEADER_SIZE + r.pos / 8;
    h->payload_len = len - HUF_HEADER_SIZE - (size_t)(r.pos / 8);

    h->n_used = 0;
    h->max_len = 0;
    for (int l = 1; l <= HUF_MAX_LEN; l++) {
        h->n_used += (int)h->len_count[l];
        if (h->len_count[l]) h->max_len = l;
    }
    h->lone_sym = -1;
    if (h->count == 0) {
        HUF_REQUIRE(h->n_used == 0, "empty stream with %d code lengths", h->n_used);
        return NZ_OK;
    }
    HUF_REQUIRE(h->n_used > 0, "%lu symbols but no code lengths", (unsigned long)h->count);
    /* Kraft sum in units of 2^-l, level by level (puff.c): negative = over-subscribed */
    int64_t left = 1;
    for (int l = 1; l <= HUF_MAX_LEN; l++) {
        left = 2 * left - (int64_t)h->len_count[l];
        HUF_REQUIRE(left >= 0, "over-subscribed code lengths (too many codes of length %d)", l);
    }
    if (left > 0) {
        HUF_REQUIRE(h->n_used == 1 && h->len_count[1] == 1,
                    "incomplete code lengths (Kraft sum below 1)");
        for (int s = 0; s < h->n_sym; s++)
            if (h->lens[s]) h->lone_sym = s;
    }
    /* every symbol takes at least one bit: bounds the work a short stream can ask for */
    HUF_REQUIRE((uint64_t)h->count <= (uint64_t)h->payload_len * 8,
                "%lu symbols cannot fit in %zu payload bytes", (unsigned long)h->count,
                h->payload_len);
    return NZ_OK;
}

/* After decoding: the payload must end in the byte holding the last consumed bit, and the
 * bits after it must be zero. */
static nz_status check_payload_end(const huf_header *h, uint64_t consumed_bits, nz_error *err) {
    uint64_t need = (consumed_bits + 7) / 8;
    HUF_REQUIRE(need == h->payload_len, "%llu trailing bytes after the last symbol",
                (unsigned long long)(h->payload_len - need));
    unsigned used = (unsigned)(consumed_bits & 7);
    HUF_REQUIRE(used == 0 || (h->payload[h->payload_len - 1] >> used) == 0,
                "non-zero padding bits after the last symbol");
    return NZ_OK;
}

/* ---------------------------------------------------------------- reference decoder */

nz_status huf_decode_ref(const uint8_t *in, size_t len, uint16_t *syms, size_t n_expected,
                         int n_sym_max, nz_error *err) {
    huf_header h;
    nz_status st = parse_header(in, len, syms, n_expected, n_sym_max, &h, err);
    if (st) return st;
    /* symbols in canonical order: by length, then by symbol */
    uint16_t sorted[HUF_MAX_SYMS];
    uint32_t offs[HUF_MAX_LEN + 2] = {0};
    for (int l = 1; l <= HUF_MAX_LEN; l++) offs[l + 1] = offs[l] + h.len_count[l];
    for (int s = 0; s < h.n_sym; s++)
        if (h.lens[s]) sorted[offs[h.lens[s]]++] = (uint16_t)s;

    bit_reader r = {h.payload, 0, (uint64_t)h.payload_len * 8};
    for (size_t i = 0; i < n_expected; i++) {
        /* walk the canonical code one bit at a time: code - first indexes the codes of this
         * length, index counts the codes of all shorter lengths */
        int32_t code = 0, first = 0, index = 0;
        int l;
        for (l = 1; l <= HUF_MAX_LEN; l++) {
            int32_t bit = br_bits(&r, 1);
            HUF_REQUIRE(bit >= 0, "payload ends in symbol %zu of %zu", i, n_expected);
            code |= bit;
            int32_t count = (int32_t)h.len_count[l];
            if (code - first < count) {
                syms[i] = sorted[index + code - first];
                break;
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        HUF_REQUIRE(l <= HUF_MAX_LEN, "invalid code in symbol %zu", i);
    }
    return check_payload_end(&h, r.pos, err);
}

/* ---------------------------------------------------------------- fast decoder */

/* Flat table indexed by the next table_bits stream bits: entry = symbol | length << 12. Built
 * only from lengths parse_header accepted (a complete code, so every entry gets filled); even
 * from bad lengths it could not write outside the table (indices stay below its size). */
static void decode_table_build(const huf_header *h, int table_bits, uint16_t *table) {
    uint32_t codes[HUF_MAX_SYMS];
    canonical_codes(h->lens, h->n_sym, codes);
    uint32_t size = 1u << table_bits;
    for (int s = 0; s < h->n_sym; s++) {
        int l = h->lens[s];
        if (!l) continue;
        uint16_t e = (uint16_t)((unsigned)s | (unsigned)l << HUF_SYM_BITS);
        for (uint32_t i = reverse_bits(codes[s], l); i < size; i += 1u << l) table[i] = e;
    }
}

/* The hot loop, written for a constant k = symbols per refill (inlined per k, so the inner
 * loop unrolls). Each refill tops the buffer up to >= 56 bits with one 8-byte load; k codes of
 * <= table_bits each fit (k * table_bits <= 56). Stops with >= 8 input bytes or k symbols left
 * unread; returns the symbols decoded. Bits above bitcount are either zero or copies of the
 * bytes at *pp, so OR-ing a later load over them is harmless (libdeflate's refill). */
static inline __attribute__((always_inline)) size_t
decode_fast_loop(const uint16_t *table, uint32_t mask, const uint8_t **pp, const uint8_t *end,
                 uint64_t *bitbufp, unsigned *bitcountp, uint16_t *syms, size_t n, const int k) {
    const uint8_t *p = *pp;
    uint64_t bitbuf = *bitbufp;
    unsigned bitcount = *bitcountp;
    size_t i = 0;
    while (n - i >= (size_t)k && end - p >= 8) {
        bitbuf |= load_u64le(p) << bitcount;
        p += (63 - bitcount) >> 3;
        bitcount |= 56;
        for (int j = 0; j < k; j++) {
            unsigned e = table[bitbuf & mask];
            syms[i + (size_t)j] = (uint16_t)(e & HUF_SYM_MASK);
            bitbuf >>= e >> HUF_SYM_BITS;
            bitcount -= e >> HUF_SYM_BITS;
        }
        i += (size_t)k;
    }
    *pp = p;
    *bitbufp = bitbuf;
    *bitcountp = bitcount;
    return i;
}

static nz_status decode_lone_symbol(const huf_header *h, uint16_t *syms, nz_error *err) {
    /* every symbol is the single bit 0: the payload is ceil(count/8) zero bytes */
    uint64_t need = ((uint64_t)h->count + 7) / 8;
    HUF_REQUIRE(need == h->payload_len, "%zu payload bytes for %lu one-bit symbols",
                h->payload_len, (unsigned long)h->count);
    for (size_t i = 0; i < h->payload_len; i++)
        HUF_REQUIRE(h->payload[i] == 0, "invalid code in byte %zu of a one-symbol payload", i);
    for (size_t i = 0; i < h->count; i++) syms[i] = (uint16_t)h->lone_sym;
    return NZ_OK;
}

nz_status huf_decode(const uint8_t *in, size_t len, uint16_t *syms, size_t n_expected,
                     int n_sym_max, nz_error *err) {
    huf_header h;
    nz_status st = parse_header(in, len, syms, n_expected, n_sym_max, &h, err);
    if (st) return st;
    if (n_expected == 0) return check_payload_end(&h, 0, err);
    if (h.lone_sym >= 0) return decode_lone_symbol(&h, syms, err);

    int tb = h.max_len;
    uint16_t *table = malloc(((size_t)1 << tb) * sizeof *table);
    if (!table) return nz_fail(err, NZ_ERR_NOMEM, "huffman: out of memory for a decode table");
    decode_table_build(&h, tb, table);
    uint32_t mask = (1u << tb) - 1;

    const uint8_t *p = h.payload, *end = h.payload + h.payload_len;
    uint64_t bitbuf = 0;
    unsigned bitcount = 0;
    size_t n = n_expected, i;
    int k = 56 / tb;
    if (k >= 8) i = decode_fast_loop(table, mask, &p, end, &bitbuf, &bitcount, syms, n, 8);
    else if (k == 7) i = decode_fast_loop(table, mask, &p, end, &bitbuf, &bitcount, syms, n, 7);
    else if (k == 6) i = decode_fast_loop(table, mask, &p, end, &bitbuf, &bitcount, syms, n, 6);
    else if (k == 5) i = decode_fast_loop(table, mask, &p, end, &bitbuf, &bitcount, syms, n, 5);
    else if (k == 4) i = decode_fast_loop(table, mask, &p, end, &bitbuf, &bitcount, syms, n, 4);
    else i = decode_fast_loop(table, mask, &p, end, &bitbuf, &bitcount, syms, n, 3);

    /* the last few symbols: refill byte by byte, check each code against the bits left. Once
     * the input is used up the bits above bitcount are zero, so a lookup that needs more bits
     * than remain shows it by its length. */
    for (; i < n; i++) {
        while (bitcount <= 56 && p < end) {
            bitbuf |= (uint64_t)*p++ << bitcount;
            bitcount += 8;
        }
        unsigned e = table[bitbuf & mask], l = e >> HUF_SYM_BITS;
        if (l > bitcount) {
            free(table);
            HUF_REQUIRE(false, "payload ends in symbol %zu of %zu", i, n);
        }
        syms[i] = (uint16_t)(e & HUF_SYM_MASK);
        bitbuf >>= l;
        bitcount -= l;
    }
    free(table);
    return check_payload_end(&h, (uint64_t)(p - h.payload) * 8 - bitcount, err);
}
