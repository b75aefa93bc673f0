/* Huffman codec (src/compress/huffman.c): round trips over many distributions with the fast
 * decoder held against the bit-by-bit reference; code lengths against Kraft, HUF_MAX_LEN, the
 * optimal (unlimited) Huffman cost and the entropy; hand-built malformed streams, each rejected
 * by both decoders with NZ_ERR_CORRUPT; a printed (not asserted) decode throughput. Never compares
 * encoder bytes to a golden file: only properties of the streams. */
#include <stdint.h>
#include <time.h>

#include "compress/huffman.h"
#include "testlib.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(void) { return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0); }

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* n symbols drawn from weights w[0..n_sym-1] (inverse CDF by binary search) */
static void sample(uint16_t *syms, size_t n, const double *w, int n_sym) {
    double *cdf = malloc((size_t)n_sym * sizeof *cdf), acc = 0;
    for (int s = 0; s < n_sym; s++) cdf[s] = (acc += w[s]);
    for (size_t i = 0; i < n; i++) {
        double u = rng_unit() * acc;
        int lo = 0, hi = n_sym - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (cdf[mid] > u) hi = mid;
            else lo = mid + 1;
        }
        syms[i] = (uint16_t)lo;
    }
    free(cdf);
}

enum { DIST_UNIFORM, DIST_GEOMETRIC, DIST_ZIPF, DIST_SPIKE };

static void weights(double *w, int n_sym, int kind, double param) {
    for (int s = 0; s < n_sym; s++) {
        switch (kind) {
        case DIST_UNIFORM: w[s] = 1; break;
        case DIST_GEOMETRIC: w[s] = pow(param, s); break;
        case DIST_ZIPF: w[s] = 1.0 / pow(s + 1, param); break;
        default: w[s] = s == 0 ? param : 1; break; /* one dominant symbol */
        }
    }
}

static double entropy_bits(const uint16_t *syms, size_t n, int n_sym) {
    double *f = calloc((size_t)n_sym, sizeof *f), h = 0;
    for (size_t i = 0; i < n; i++) f[syms[i]]++;
    for (int s = 0; s < n_sym; s++)
        if (f[s] > 0) h -= f[s] * log2(f[s] / (double)n);
    free(f);
    return h;
}

/* Optimal unlimited Huffman cost (sum of merged weights) and depth, by a plain O(m^2) merge of
 * explicit nodes: an independent check of the encoder's Moffat-Katajainen lengths. */
static void optimal_huffman(const uint16_t *syms, size_t n, int n_sym, uint64_t *cost,
                            int *depth) {
    uint64_t *wt = calloc((size_t)n_sym, sizeof *wt);
    for (size_t i = 0; i < n; i++) wt[syms[i]]++;
    int m = 0;
    for (int s = 0; s < n_sym; s++)
        if (wt[s]) wt[m++] = wt[s];
    int *dep = calloc((size_t)m + 1, sizeof *dep); /* max depth under each live node */
    *cost = 0;
    *depth = m == 1 ? 1 : 0;
    while (m > 1) {
        int a = -1, b = -1; /* two lightest */
        for (int i = 0; i < m; i++) {
            if (a < 0 || wt[i] < wt[a]) {
                b = a;
                a = i;
            } else if (b < 0 || wt[i] < wt[b]) {
                b = i;
            }
        }
        uint64_t sum = wt[a] + wt[b];
        int d = 1 + (dep[a] > dep[b] ? dep[a] : dep[b]);
        *cost += sum;
        int lo = a < b ? a : b, hi = a < b ? b : a;
        wt[lo] = sum;
        dep[lo] = d;
        wt[hi] = wt[m - 1];
        dep[hi] = dep[m - 1];
        m--;
        *depth = d;
    }
    if (m == 1 && *cost == 0) *cost = wt[0]; /* one symbol: 1 bit each */
    free(dep);
    free(wt);
}

static size_t length_section_bytes(const uint8_t *lens, int n_sym) {
    size_t bits = 0;
    for (int s = 0; s < n_sym;) {
        int run = 0;
        while (s + run < n_sym && lens[s + run] == 0) run++;
        if (run >= 4) {
            bits += 17;
            s += run;
        } else {
            bits += 5;
            s++;
        }
    }
    return (bits + 7) / 8;
}

#define SENTINEL 0xBEEF
#define GUARD 4

typedef struct {
    nz_status st;
    nz_error err;
} result;

/* decodes with both decoders into guarded buffers; checks the guards, that they agree, and that
 * any error is one line starting "huffman: " with the matching code */
static void decode_both(const uint8_t *in, size_t len, size_t n, int n_sym_max, uint16_t **fast_out,
                        result *rf, result *rr, const char *what) {
    uint16_t *a = malloc((n + GUARD) * sizeof *a), *b = malloc((n + GUARD) * sizeof *b);
    for (size_t i = 0; i < n + GUARD; i++) a[i] = b[i] = SENTINEL;
    memset(rf, 0, sizeof *rf);
    memset(rr, 0, sizeof *rr);
    rf->st = huf_decode(in, len, a, n, n_sym_max, &rf->err);
    rr->st = huf_decode_ref(in, len, b, n, n_sym_max, &rr->err);
    int guards_ok = 1;
    for (size_t i = n; i < n + GUARD; i++) guards_ok &= a[i] == SENTINEL && b[i] == SENTINEL;
    CHECK(guards_ok, "%s: a decoder wrote past n_expected", what);
    CHECK(rf->st == rr->st, "%s: fast %d vs reference %d (%s | %s)", what, rf->st, rr->st,
          rf->st ? rf->err.msg : "", rr->st ? rr->err.msg : "");
    if (rf->st == NZ_OK && rr->st == NZ_OK)
        CHECK(n == 0 || memcmp(a, b, n * sizeof *a) == 0, "%s: decoders disagree on output", what);
    for (int k = 0; k < 2; k++) {
        result *r = k ? rr : rf;
        if (r->st == NZ_OK) continue;
        CHECK(r->err.code == r->st && strncmp(r->err.msg, "huffman: ", 9) == 0 &&
                  !strchr(r->err.msg, '\n'),
              "%s: bad error record '%s'", what, r->err.msg);
    }
    free(b);
    if (fast_out) *fast_out = a;
    else free(a);
}

static void expect_corrupt(const uint8_t *in, size_t len, size_t n, int n_sym_max,
                           const char *what) {
    /* exact-size heap copy, so ASan sees any read past the end */
    uint8_t *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, in, len);
    result rf, rr;
    decode_both(copy, len, n, n_sym_max, NULL, &rf, &rr, what);
    CHECK(rf.st == NZ_ERR_CORRUPT && rr.st == NZ_ERR_CORRUPT, "%s: not rejected (%d, %d)", what,
          rf.st, rr.st);
    free(copy);
}

/* Round trip with every property the stream must have. Returns the stream size. */
static size_t roundtrip(const uint16_t *syms, size_t n, int n_sym, const char *what) {
    uint8_t *buf = NULL;
    size_t len = 0;
    nz_error err;
    nz_status st = huf_encode(syms, n, n_sym, &buf, &len, &err);
    CHECK(st == NZ_OK, "%s: encode failed: %s", what, err.msg);
    if (st) return 0;

    uint8_t *lens = malloc((size_t)n_sym);
    CHECK(huf_code_lengths(syms, n, n_sym, lens, &err) == NZ_OK, "%s: lengths", what);
    uint64_t *freq = calloc((size_t)n_sym, sizeof *freq);
    for (size_t i = 0; i < n; i++) freq[syms[i]]++;
    int distinct = 0, max_len = 0, len_ok = 1;
    uint64_t kraft = 0, bits = 0; /* in units of 2^-15 */
    for (int s = 0; s < n_sym; s++) {
        distinct += freq[s] > 0;
        len_ok &= (freq[s] > 0) == (lens[s] > 0);
        if (lens[s] > max_len) max_len = lens[s];
        if (lens[s]) kraft += 1u << (HUF_MAX_LEN - lens[s]);
        bits += freq[s] * lens[s];
    }
    CHECK(len_ok, "%s: a symbol's length disagrees with its presence", what);
    CHECK(max_len <= HUF_MAX_LEN, "%s: length %d > %d", what, max_len, HUF_MAX_LEN);
    uint64_t want_kraft = distinct == 0 ? 0 : distinct == 1 ? 1u << (HUF_MAX_LEN - 1)
                                                             : 1u << HUF_MAX_LEN;
    CHECK(kraft == want_kraft, "%s: Kraft sum %llu/32768, want %llu", what,
          (unsigned long long)kraft, (unsigned long long)want_kraft);
    CHECK(distinct != 1 || max_len == 1, "%s: a lone symbol gets %d bits", what, max_len);
    CHECK(huf_encoded_bits(syms, n, n_sym) == bits, "%s: huf_encoded_bits %zu != %llu", what,
          huf_encoded_bits(syms, n, n_sym), (unsigned long long)bits);
    CHECK(len == HUF_HEADER_SIZE + length_section_bytes(lens, n_sym) + (bits + 7) / 8,
          "%s: stream of %zu bytes, layout says otherwise", what, len);

    /* against the optimal unlimited Huffman code: equal unless the limit had to act */
    uint64_t opt;
    int depth;
    optimal_huffman(syms, n, n_sym, &opt, &depth);
    if (depth <= HUF_MAX_LEN)
        CHECK(bits == opt, "%s: %llu bits, optimal Huffman %llu", what, (unsigned long long)bits,
              (unsigned long long)opt);
    else
        CHECK(bits >= opt && (double)bits <= 1.05 * (double)opt,
              "%s: limited code %llu bits vs unlimited %llu", what, (unsigned long long)bits,
              (unsigned long long)opt);
    CHECK((double)bits >= entropy_bits(syms, n, n_sym) - 1e-6 * (double)n,
          "%s: below the entropy", what);

    uint16_t *out;
    result rf, rr;
    decode_both(buf, len, n, n_sym, &out, &rf, &rr, what);
    CHECK(rf.st == NZ_OK, "%s: decode: %s", what, rf.err.msg);
    CHECK(rr.st == NZ_OK, "%s: reference decode: %s", what, rr.err.msg);
    if (rf.st == NZ_OK)
        CHECK(n == 0 || memcmp(out, syms, n * sizeof *syms) == 0, "%s: round trip differs", what);
    free(out);
    /* a caller with a larger alphabet bound reads the same stream */
    if (n_sym < HUF_MAX_SYMS) {
        decode_both(buf, len, n, HUF_MAX_SYMS, &out, &rf, &rr, what);
        CHECK(rf.st == NZ_OK && (n == 0 || memcmp(out, syms, n * sizeof *syms) == 0),
              "%s: decode with n_sym_max %d", what, HUF_MAX_SYMS);
        free(out);
    }
    free(freq);
    free(lens);
    free(buf);
    return len;
}

/* ---------------------------------------------------------------- round trips */

static void test_distributions(void) {
    static const struct {
        int kind;
        double param;
    } dists[] = {{DIST_UNIFORM, 0},   {DIST_GEOMETRIC, 0.5}, {DIST_GEOMETRIC, 0.8},
                 {DIST_GEOMETRIC, 0.95}, {DIST_ZIPF, 1.0},  {DIST_ZIPF, 1.5},
                 {DIST_SPIKE, 1000}, {DIST_GEOMETRIC, 0.3}};
    static const int alphabets[] = {1, 2, 3, 5, 16, 32, 33, 256, 1000, 4096};
    static const size_t sizes[] = {0, 1, 2, 7, 100, 5000};
    uint16_t *syms = malloc(5000 * sizeof *syms);
    double *w = malloc(HUF_MAX_SYMS * sizeof *w);
    char what[128];
    for (size_t d = 0; d < sizeof dists / sizeof dists[0]; d++)
        for (size_t a = 0; a < sizeof alphabets / sizeof alphabets[0]; a++)
            for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
                int n_sym = alphabets[a];
                weights(w, n_sym, dists[d].kind, dists[d].param);
                sample(syms, sizes[z], w, n_sym);
                snprintf(what, sizeof what, "dist %zu n_sym %d n %zu", d, n_sym, sizes[z]);
                roundtrip(syms, sizes[z], n_sym, what);
            }
    free(w);
    free(syms);
}

static void test_degenerate(void) {
    uint16_t syms[HUF_MAX_SYMS];
    CHECK(roundtrip(NULL, 0, 1, "empty, n_sym 1") == HUF_HEADER_SIZE + 1, "empty stream size");
    roundtrip(NULL, 0, HUF_MAX_SYMS, "empty, n_sym 4096");
    for (int i = 0; i < 20; i++) syms[i] = 0;
    roundtrip(syms, 20, 1, "n_sym 1");
    for (int i = 0; i < 17; i++) syms[i] = 4095;
    roundtrip(syms, 17, HUF_MAX_SYMS, "one symbol (4095) of 4096");
    for (int i = 0; i < 9; i++) syms[i] = (uint16_t)(i & 1 ? 7 : 3);
    roundtrip(syms, 9, 8, "two symbols");
    for (int i = 0; i < 1000; i++) syms[i] = (uint16_t)(i % 10 ? 1 : 0);
    roundtrip(syms, 1000, 2, "two symbols, skewed");
    for (int i = 0; i < HUF_MAX_SYMS; i++) syms[i] = (uint16_t)(HUF_MAX_SYMS - 1 - i);
    CHECK(huf_encoded_bits(syms, HUF_MAX_SYMS, HUF_MAX_SYMS) == 12 * HUF_MAX_SYMS,
          "4096 distinct symbols take 12 bits each");
    roundtrip(syms, HUF_MAX_SYMS, HUF_MAX_SYMS, "all 4096 distinct");
    for (int i = 0; i < 3000; i++) syms[i] = (uint16_t)(rng_next() % 3000 + 1000);
    roundtrip(syms, 3000, HUF_MAX_SYMS, "sparse use of a 4096 alphabet");
}

/* frequencies that make the optimal tree deeper than HUF_MAX_LEN */
static void test_length_limit(void) {
    static const int counts[] = {20, 25, 30, 40};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        int m = counts[c];
        uint64_t f[64], total = 0;
        f[0] = f[1] = 1;
        for (int i = 2; i < m; i++) f[i] = f[i - 1] + f[i - 2];
        for (int i = 0; i < m; i++) total += f[i];
        if (total > 3000000) { /* cap the stream; the shape stays Fibonacci-like */
            double scale = 3000000.0 / (double)total;
            total = 0;
            for (int i = 0; i < m; i++) {
                f[i] = (uint64_t)((double)f[i] * scale);
                if (f[i] == 0) f[i] = 1;
                total += f[i];
            }
        }
        uint16_t *syms = malloc(total * sizeof *syms);
        size_t n = 0;
        for (int i = 0; i < m; i++)
            for (uint64_t k = 0; k < f[i]; k++) syms[n++] = (uint16_t)(i * 3); /* spread out */
        for (size_t i = n - 1; i > 0; i--) { /* shuffle */
            size_t j = rng_next() % (i + 1);
            uint16_t t = syms[i];
            syms[i] = syms[j];
            syms[j] = t;
        }
        uint64_t opt;
        int depth;
        optimal_huffman(syms, n, m * 3, &opt, &depth);
        CHECK(depth > HUF_MAX_LEN, "Fibonacci %d: tree depth %d should exceed the limit", m,
              depth);
        char what[64];
        snprintf(what, sizeof what, "Fibonacci-like, %d symbols", m);
        roundtrip(syms, n, m * 3, what);
        free(syms);
    }
    /* random heavy-tailed weights over many symbols, some deeper than the limit */
    for (int t = 0; t < 20; t++) {
        int n_sym = 50 + (int)(rng_next() % 2000);
        double *w = malloc((size_t)n_sym * sizeof *w);
        for (int s = 0; s < n_sym; s++) w[s] = pow(rng_unit(), 12.0);
        size_t n = 20000;
        uint16_t *syms = malloc(n * sizeof *syms);
        sample(syms, n, w, n_sym);
        roundtrip(syms, n, n_sym, "heavy-tailed random");
        free(syms);
        free(w);
    }
}

/* large skewed streams: payload within 1% of the entropy, plus the header */
static void test_entropy_bound(void) {
    static const struct {
        int kind;
        double param;
        int n_sym;
    } cases[] = {{DIST_GEOMETRIC, 0.85, 32}, {DIST_ZIPF, 1.1, 32}, {DIST_ZIPF, 1.0, 256},
                 {DIST_GEOMETRIC, 0.97, 256}, {DIST_UNIFORM, 0, 4096}};
    size_t n = 1000000;
    uint16_t *syms = malloc(n * sizeof *syms);
    double *w = malloc(HUF_MAX_SYMS * sizeof *w);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        weights(w, cases[c].n_sym, cases[c].kind, cases[c].param);
        sample(syms, n, w, cases[c].n_sym);
        double h = entropy_bits(syms, n, cases[c].n_sym);
        char what[64];
        snprintf(what, sizeof what, "1e6 symbols, case %zu", c);
        size_t len = roundtrip(syms, n, cases[c].n_sym, what);
        size_t header = HUF_HEADER_SIZE + ((size_t)cases[c].n_sym * 5 + 7) / 8;
        CHECK((double)len * 8 <= 1.01 * h + 8.0 * (double)header,
              "%s: %zu bytes vs entropy %.0f bytes", what, len, h / 8);
    }
    free(w);
    free(syms);
}

/* ---------------------------------------------------------------- malformed streams */

typedef struct {
    uint8_t b[256];
    size_t len;
    uint64_t buf;
    unsigned n;
} stream_builder;

static void sb_header(stream_builder *s, unsigned n_sym, uint32_t count) {
    memset(s, 0, sizeof *s);
    s->b[0] = (uint8_t)n_sym;
    s->b[1] = (uint8_t)(n_sym >> 8);
    for (int i = 0; i < 4; i++) s->b[2 + i] = (uint8_t)(count >> (8 * i));
    s->len = 6;
}

static void sb_bits(stream_builder *s, uint32_t v, unsigned nbits) {
    s->buf |= (uint64_t)v << s->n;
    s->n += nbits;
    while (s->n >= 8) {
        s->b[s->len++] = (uint8_t)s->buf;
        s->buf >>= 8;
        s->n -= 8;
    }
}

static void sb_align(stream_builder *s) {
    if (s->n) sb_bits(s, 0, 8 - s->n);
}

/* a header with these 5-bit length items, then the given payload bits (LSB-first) */
static size_t build(stream_builder *s, unsigned n_sym, uint32_t count, const int *items,
                    int n_items, uint32_t payload, unsigned payload_bits) {
    sb_header(s, n_sym, count);
    for (int i = 0; i < n_items; i++) sb_bits(s, (uint32_t)items[i], 5);
    sb_align(s);
    sb_bits(s, payload, payload_bits);
    sb_align(s);
    return s->len;
}

static void test_malformed(void) {
    stream_builder s;
    result rf, rr;

    /* a well-formed hand-built stream first, so the builder itself is trusted: lengths {1,2,2}
     * give codes 0, 10, 11; symbols 0 1 2 0 are the bits 0 1 0 1 1 0, first bit in bit 0 */
    int ok3[] = {1, 2, 2};
    build(&s, 3, 4, ok3, 3, 0x1A, 6);
    uint16_t *out;
    decode_both(s.b, s.len, 4, 3, &out, &rf, &rr, "hand-built valid");
    CHECK(rf.st == NZ_OK && out[0] == 0 && out[1] == 1 && out[2] == 2 && out[3] == 0,
          "hand-built valid stream: %s", rf.err.msg);
    free(out);

    int over1[] = {1, 1, 1};
    build(&s, 3, 1, over1, 3, 0, 1);
    expect_corrupt(s.b, s.len, 1, 3, "over-subscribed {1,1,1}");
    int over2[] = {1, 2, 2, 2};
    build(&s, 4, 1, over2, 4, 0, 1);
    expect_corrupt(s.b, s.len, 1, 4, "over-subscribed {1,2,2,2}");
    int over3[] = {1, 1, 15};
    build(&s, 3, 1, over3, 3, 0, 1);
    expect_corrupt(s.b, s.len, 1, 3, "over-subscribed {1,1,15}");
    int inc1[] = {1, 2, 0};
    build(&s, 3, 1, inc1, 3, 0, 1);
    expect_corrupt(s.b, s.len, 1, 3, "incomplete {1,2,0}");
    int inc2[] = {2, 2, 2};
    build(&s, 3, 1, inc2, 3, 0, 2);
    expect_corrupt(s.b, s.len, 1, 3, "incomplete {2,2,2}");
    int lone2[] = {0, 2};
    build(&s, 2, 3, lone2, 2, 0, 6);
    expect_corrupt(s.b, s.len, 3, 2, "lone symbol with length 2");
    int lone15[] = {15};
    build(&s, 1, 1, lone15, 1, 0, 15);
    expect_corrupt(s.b, s.len, 1, 1, "lone symbol with length 15");

    /* the one incomplete code accepted: a lone symbol of length 1, code 0 */
    int lone1[] = {0, 1, 0};
    build(&s, 3, 10, lone1, 3, 0, 10);
    decode_both(s.b, s.len, 10, 3, &out, &rf, &rr, "lone symbol");
    CHECK(rf.st == NZ_OK && out[0] == 1 && out[9] == 1, "lone symbol: %s", rf.err.msg);
    free(out);
    build(&s, 3, 10, lone1, 3, 1u << 4, 10);
    expect_corrupt(s.b, s.len, 10, 3, "lone symbol, a 1 bit (no such code)");
    build(&s, 3, 10, lone1, 3, 1u << 9, 10);
    expect_corrupt(s.b, s.len, 10, 3, "lone symbol, 1 in the last code");
    build(&s, 3, 10, lone1, 3, 1u << 12, 16);
    expect_corrupt(s.b, s.len, 10, 3, "lone symbol, non-zero padding");
    build(&s, 3, 10, lone1, 3, 0, 17);
    expect_corrupt(s.b, s.len, 10, 3, "lone symbol, trailing byte");

    /* lengths above 15 (items 16..30) and zero runs */
    for (int bad = 16; bad <= 30; bad += 7) {
        int items[] = {1, bad};
        build(&s, 2, 1, items, 2, 0, 1);
        expect_corrupt(s.b, s.len, 1, 2, "code length > 15");
    }
    sb_header(&s, 8, 2); /* a lone symbol of length 1 followed by a zero run of 7 */
    sb_bits(&s, 1, 5);
    sb_bits(&s, 31, 5);
    sb_bits(&s, 6, 12);
    sb_align(&s);
    sb_bits(&s, 0, 2);
    sb_align(&s);
    decode_both(s.b, s.len, 2, 8, &out, &rf, &rr, "lone symbol, zero run");
    CHECK(rf.st == NZ_OK && out[0] == 0 && out[1] == 0, "lone symbol, zero run: %s", rf.err.msg);
    free(out);
    sb_header(&s, 8, 2);
    sb_bits(&s, 1, 5);
    sb_bits(&s, 1, 5);
    sb_bits(&s, 31, 5);
    sb_bits(&s, 6, 12); /* run of 7 from symbol 2: passes 8 */
    sb_align(&s);
    sb_bits(&s, 2, 2);
    sb_align(&s);
    expect_corrupt(s.b, s.len, 2, 8, "zero run past n_sym");
    sb_header(&s, 8, 2);
    sb_bits(&s, 1, 5);
    sb_bits(&s, 1, 5);
    sb_bits(&s, 31, 5);
    sb_bits(&s, 5, 12); /* run of 6: exactly to the end */
    sb_align(&s);
    sb_bits(&s, 2, 2);
    sb_align(&s);
    decode_both(s.b, s.len, 2, 8, &out, &rf, &rr, "zero run to the end");
    CHECK(rf.st == NZ_OK && out[0] == 0 && out[1] == 1, "zero run to the end: %s", rf.err.msg);
    free(out);

    /* header fields against the caller's expectations */
    int two[] = {1, 1};
    build(&s, 2, 3, two, 2, 0x5, 3); /* symbols 1 0 1 */
    decode_both(s.b, s.len, 3, 2, &out, &rf, &rr, "two symbols");
    CHECK(rf.st == NZ_OK && out[0] == 1 && out[1] == 0 && out[2] == 1, "two symbols: %s",
          rf.err.msg);
    free(out);
    expect_corrupt(s.b, s.len, 3, 1, "n_sym 2 > n_sym_max 1");
    expect_corrupt(s.b, s.len, 2, 2, "count 3, expected 2");
    expect_corrupt(s.b, s.len, 4, 2, "count 3, expected 4");
    s.b[s.len - 1] |= 0x80;
    expect_corrupt(s.b, s.len, 3, 2, "non-zero padding bit");
    s.b[s.len - 1] &= 0x7F;
    s.b[6] |= 0x80; /* the length section's padding: items take 10 bits */
    expect_corrupt(s.b, s.len, 3, 2, "non-zero padding after the lengths");
    s.b[6] &= 0x7F;
    s.b[s.len++] = 0;
    expect_corrupt(s.b, s.len, 3, 2, "trailing zero byte");
    s.len--;
    build(&s, 0, 0, NULL, 0, 0, 0);
    expect_corrupt(s.b, s.len, 0, 10, "n_sym 0");
    int big[] = {31, 0xFFF};
    build(&s, HUF_MAX_SYMS + 1, 0, big, 1, 0, 0);
    expect_corrupt(s.b, s.len, 0, 65535, "n_sym 4097");
    build(&s, 2, 0, two, 2, 0, 0);
    expect_corrupt(s.b, s.len, 0, 2, "empty stream with code lengths");
    int none[] = {0, 0};
    build(&s, 2, 1, none, 2, 0, 1);
    expect_corrupt(s.b, s.len, 1, 2, "symbols without code lengths");
    build(&s, 2, 100, two, 2, 0, 8);
    expect_corrupt(s.b, s.len, 100, 2, "count beyond the payload bits");
    build(&s, 2, 8, two, 2, 0xAA, 8);
    expect_corrupt(s.b, s.len, 9, 2, "n_expected beyond");
    expect_corrupt(s.b, 0, 0, 2, "empty input");
    expect_corrupt(s.b, 5, 0, 2, "input shorter than the header");

    /* arguments (not input) errors */
    uint16_t o[4];
    nz_error err;
    CHECK(huf_decode(s.b, s.len, o, 8, 0, &err) == NZ_ERR_ARG, "n_sym_max 0");
    CHECK(huf_decode_ref(s.b, s.len, NULL, 8, 2, &err) == NZ_ERR_ARG, "no output");
    uint8_t *buf;
    size_t len;
    uint16_t in[2] = {0, 5};
    CHECK(huf_encode(in, 2, 5, &buf, &len, &err) == NZ_ERR_ARG, "encode: symbol >= n_sym");
    CHECK(huf_encode(in, 2, 0, &buf, &len, &err) == NZ_ERR_ARG, "encode: n_sym 0");
    CHECK(huf_encode(in, 2, HUF_MAX_SYMS + 1, &buf, &len, &err) == NZ_ERR_ARG, "encode: 4097");
    CHECK(huf_encoded_bits(in, 2, 5) == SIZE_MAX, "encoded_bits: symbol >= n_sym");
}

/* every proper prefix of valid streams is rejected; flipped bits never split the decoders */
static void test_truncation_and_flips(void) {
    uint16_t syms[600];
    double w[64];
    char what[96];
    for (int c = 0; c < 4; c++) {
        int n_sym = c == 0 ? 1 : c == 1 ? 5 : c == 2 ? 64 : 40;
        size_t n = c == 3 ? 600 : 200;
        weights(w, n_sym, DIST_GEOMETRIC, c == 3 ? 0.7 : 0.8);
        sample(syms, n, w, n_sym);
        if (c == 3) /* long codes in a short stream: symbol = trailing zeros of i+1 */
            for (size_t i = 0; i < n; i++) syms[i] = (uint16_t)__builtin_ctzll(i + 1);
        uint8_t *buf;
        size_t len;
        nz_error err;
        if (huf_encode(syms, n, n_sym, &buf, &len, &err)) {
            CHECK(0, "encode: %s", err.msg);
            continue;
        }
        for (size_t cut = 0; cut < len; cut++) {
            snprintf(what, sizeof what, "case %d truncated to %zu of %zu", c, cut, len);
            expect_corrupt(buf, cut, n, n_sym, what);
        }
        for (int t = 0; t < 400; t++) {
            size_t bit = rng_next() % (len * 8);
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            uint8_t *copy = malloc(len);
            memcpy(copy, buf, len);
            result rf, rr;
            snprintf(what, sizeof what, "case %d bit %zu flipped", c, bit);
            decode_both(copy, len, n, n_sym, NULL, &rf, &rr, what);
            CHECK(rf.st == NZ_OK || rf.st == NZ_ERR_CORRUPT, "%s: status %d", what, rf.st);
            free(copy);
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        free(buf);
    }
    /* random bytes behind a plausible header: the decoders agree and never crash */
    for (int t = 0; t < 3000; t++) {
        uint8_t b[64];
        size_t len = 6 + rng_next() % 58;
        for (size_t i = 0; i < len; i++) b[i] = (uint8_t)rng_next();
        unsigned n_sym = 1 + (unsigned)(rng_next() % 8);
        uint32_t count = (uint32_t)(rng_next() % 100);
        b[0] = (uint8_t)n_sym;
        b[1] = 0;
        for (int i = 0; i < 4; i++) b[2 + i] = (uint8_t)(count >> (8 * i));
        uint8_t *copy = malloc(len);
        memcpy(copy, b, len);
        result rf, rr;
        decode_both(copy, len, count, 8, NULL, &rf, &rr, "random payload");
        free(copy);
    }
}

/* ---------------------------------------------------------------- throughput */

/* 1e7 symbols of a 5-bit alphabet; prints encode/decode MB/s of uint16 output (not asserted:
 * machines differ) and checks both decoders on the way */
static void throughput(const char *name, const double *w) {
    size_t n = 10000000;
    int n_sym = 32;
    uint16_t *syms = malloc(n * sizeof *syms), *out = malloc(n * sizeof *out);
    sample(syms, n, w, n_sym);
    uint8_t *buf;
    size_t len;
    nz_error err;
    double t0 = now_sec();
    nz_status st = huf_encode(syms, n, n_sym, &buf, &len, &err);
    double t_enc = now_sec() - t0;
    CHECK(st == NZ_OK, "throughput encode: %s", err.msg);
    if (st) goto done;
    uint8_t lens[32];
    huf_code_lengths(syms, n, n_sym, lens, &err);
    int max_len = 0;
    for (int s = 0; s < n_sym; s++) max_len = lens[s] > max_len ? lens[s] : max_len;
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        t0 = now_sec();
        st = huf_decode(buf, len, out, n, n_sym, &err);
        double t = now_sec() - t0;
        if (t < best) best = t;
    }
    CHECK(st == NZ_OK && memcmp(out, syms, n * sizeof *out) == 0, "throughput round trip");
    t0 = now_sec();
    st = huf_decode_ref(buf, len, out, n, n_sym, &err);
    double t_ref = now_sec() - t0;
    CHECK(st == NZ_OK && memcmp(out, syms, n * sizeof *out) == 0, "throughput reference");
    double mb = (double)n * sizeof *out / 1e6;
    printf("huffman: %s: 1e7 symbols, entropy %.3f bits, coded %.3f bits/symbol, max length %d: "
           "encode %.0f MB/s, decode %.0f MB/s (%.0f Msym/s), reference decode %.0f MB/s\n",
           name, entropy_bits(syms, n, n_sym) / (double)n, (double)(len * 8) / (double)n, max_len,
           mb / t_enc, mb / best, (double)n / best / 1e6, mb / t_ref);
    free(buf);
done:
    free(out);
    free(syms);
}

static void test_throughput(void) {
    double w[32];
    /* quantized weights: a bell over the 32 centroids */
    for (int s = 0; s < 32; s++) w[s] = exp(-0.5 * pow((s - 15.5) / 4.0, 2)) + 0.002;
    throughput("bell-shaped indices", w);
    /* relative indices: geometric, most gaps short */
    weights(w, 32, DIST_GEOMETRIC, 0.7);
    throughput("geometric(0.7) gaps", w);
}

int main(void) {
    test_degenerate();
    test_distributions();
    test_length_limit();
    test_entropy_bound();
    test_malformed();
    test_truncation_and_flips();
    test_throughput();
    return tl_finish("test_huffman");
}
