/* Tensor encoding KERNELS (src/format/kernels.c): conv weights stored without their all-zero
 * kernels.
 *
 *  - round trips: 1x1, 3x3 and 5x5 kernels, O * I odd and even (bitmap padding bits), no / some
 *    / all kernels zero, some zero kernels written as -0.0, f32 and f16 values: the writer
 *    picks KERNELS exactly when its payload is smaller than F32 / F16 (the size computed here
 *    independently), the section has that length, nz_dense_stored_bytes agrees, the weights
 *    read back bit for bit (dropped kernels as +0.0, f16 as binary16 rounding), the logits of
 *    the loaded model equal the original's, and saving the loaded model gives the same file;
 *  - the boundary: a payload exactly as large as dense storage stays F32; kernels larger than
 *    16x16, sparse conv weights, fc weights and biases never become KERNELS;
 *  - a slimmed LeNet-5 (channels removed, random kernels zeroed): same logits after save/load;
 *  - corrupt payloads (CRCs fixed so the parser sees them): wrong popcount, wrong kept count,
 *    truncations at every length, nonzero padding bits, wrong kernel size, too large kernels,
 *    unknown value type, reserved bytes, KERNELS on a non-conv tensor, and every single-bit
 *    flip of the header and bitmap: each one error naming the file and tensor, no crash.
 *
 * Usage: test_kernels [anything]   (run_tests.sh passes the torch reference path; ignored) */
#include <stdint.h>
#include <unistd.h>
#include <zlib.h>

#include "core/half.h"
#include "nnzip/compress.h"
#include "nnzip/format.h"
#include "nnzip/model.h"
#include "nnzip/rng.h"
#include "filebytes.h"
#include "testlib.h"

#define NAME "k.nnz" /* the name buffers are loaded under: every error must start with it */

static char g_dir[512];

/* ---------------------------------------------------------------- file surgery */


typedef struct {
    uint32_t kind, flags;
    uint8_t *data;
    size_t len;
} sec;

#define MAX_SEC 64

/* Owned copies of a valid file's sections, as stored (flags kept). */
static int split(const uint8_t *f, sec *out) {
    int n = (int)rd32(f + 12);
    for (int i = 0; i < n && i < MAX_SEC; i++) {
        const uint8_t *e = f + NZF_HEADER_SIZE + NZF_ENTRY_SIZE * (size_t)i;
        out[i].kind = rd32(e);
        out[i].flags = rd32(e + 4);
        out[i].len = (size_t)rd64(e + 16);
        out[i].data = calloc(1, out[i].len + 64);
        memcpy(out[i].data, f + rd64(e + 8), out[i].len);
    }
    return n;
}

static void free_split(sec *s, int n) {
    for (int i = 0; i < n; i++) free(s[i].data);
}

/* An independent writer of the container: sections back to back, every CRC computed. */
static uint8_t *assemble(const sec *s, int n, size_t *size) {
    size_t head = NZF_HEADER_SIZE + (size_t)n * NZF_ENTRY_SIZE, total = head;
    for (int i = 0; i < n; i++) total += s[i].len;
    uint8_t *f = calloc(1, total);
    static const uint8_t magic[8] = {0x89, 'N', 'N', 'Z', 0x0D, 0x0A, 0x1A, 0x0A};
    memcpy(f, magic, 8);
    wr32(f + 8, 1);
    wr32(f + 12, (uint32_t)n);
    size_t off = head;
    for (int i = 0; i < n; i++) {
        uint8_t *e = f + NZF_HEADER_SIZE + NZF_ENTRY_SIZE * (size_t)i;
        wr32(e, s[i].kind);
        wr32(e + 4, s[i].flags);
        wr64(e + 8, off);
        wr64(e + 16, s[i].len);
        wr32(e + 24, (uint32_t)crc32(0L, s[i].data, (uInt)s[i].len));
        memcpy(f + off, s[i].data, s[i].len);
        off += s[i].len;
    }
    wr32(f + 20, (uint32_t)crc32(0L, f + NZF_HEADER_SIZE, (uInt)((size_t)n * NZF_ENTRY_SIZE)));
    *size = total;
    return f;
}

/* Index of the TENSOR section holding (node, slot), -1 if none. */
static int find_tensor(const sec *s, int n, int node, int slot) {
    for (int i = 0; i < n; i++)
        if (s[i].kind == NZF_SEC_TENSOR && s[i].len >= 16 && rd32(s[i].data) == (uint32_t)node &&
            rd32(s[i].data + 4) == (uint32_t)slot)
            return i;
    return -1;
}

static int is_zero(const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

/* Loading buf fails with status want (NZ_OK: any error), one message starting with the file
 * name and containing every needle, and the model left zeroed. */
static int load_fails(const uint8_t *buf, size_t n, nz_status want, const char *needle,
                      const char *needle2, char *msg, size_t msgn) {
    nz_model m;
    memset(&m, 0x5a, sizeof m);
    nz_error err = {0};
    nz_status st = nz_load_buffer(buf, n, NAME, &m, NULL, &err);
    int ok = st != NZ_OK && (want == NZ_OK || st == want) && err.code == st &&
             strncmp(err.msg, NAME ": ", strlen(NAME) + 2) == 0 &&
             (!needle || strstr(err.msg, needle)) && (!needle2 || strstr(err.msg, needle2)) &&
             is_zero(&m, sizeof m);
    snprintf(msg, msgn, "status %s (want %s): %s", nz_status_name(st),
             want ? nz_status_name(want) : "any error", err.msg);
    if (st == NZ_OK) nz_model_free(&m);
    return ok;
}

#define EXPECT_FAIL(what, buf, n, want, needle)                                                \
    do {                                                                                       \
        char msg_[700];                                                                        \
        int ok_ = load_fails(buf, n, want, needle, "tensor conv1.W", msg_, sizeof msg_);       \
        CHECK(ok_, "%s: %s", what, msg_);                                                      \
    } while (0)

/* ---------------------------------------------------------------- models */

/* input 2 x 6 x 6 -> conv0 (I channels, 1x1) -> conv1 (O, k x k, same padding) -> relu ->
 * flatten -> fc (3 classes); returns conv1's node id (fc is 3 nodes later) */
static int conv_model(nz_model *m, int O, int I, int k, uint64_t seed) {
    nz_error err;
    if (nz_model_init(m, "kernels", (nz_shape){2, 6, 6}, 3, &err)) {
        CHECK(0, "init: %s", err.msg);
        return -1;
    }
    int x = nz_model_add_conv2d(m, "conv0", 0, I, 1, 1, 0, &err);
    if (x >= 0) x = nz_model_add_conv2d(m, "conv1", x, O, k, 1, k / 2, &err);
    if (x >= 0) x = nz_model_add_relu(m, "relu1", x, &err);
    if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, &err);
    if (x >= 0) x = nz_model_add_dense(m, "fc", x, 3, &err);
    if (x < 0) {
        CHECK(0, "build: %s", err.msg);
        nz_model_free(m);
        return -1;
    }
    nz_rng r;
    nz_rng_seed(&r, seed);
    nz_model_init_params(m, &r);
    /* biases nonzero so a zero kernel's output channel is not trivially zero */
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].n_params > 1) {
            const nz_param *b = &m->nodes[i].params[1];
            for (size_t j = 0; j < b->n; j++) m->params[b->off + j] = 0.05f * nz_rng_normal(&r);
        }
    return 2; /* conv1 */
}

/* Zeroes a random share `frac` of node's kernels (every third one as -0.0); returns how many. */
static size_t zero_kernels(nz_model *m, int node, double frac, uint64_t seed) {
    const nz_param *p = &m->nodes[node].params[0];
    const size_t area = (size_t)p->dims[2] * p->dims[3], total = (size_t)p->dims[0] * p->dims[1];
    nz_rng r;
    nz_rng_seed(&r, seed);
    size_t zeroed = 0;
    for (size_t j = 0; j < total; j++) {
        if (!(nz_rng_uniform(&r) < frac)) continue;
        float z = zeroed % 3 == 2 ? -0.0f : 0.0f;
        for (size_t q = 0; q < area; q++) m->params[p->off + j * area + q] = z;
        zeroed++;
    }
    return zeroed;
}

static float *logits(const nz_model *m, int B, uint64_t seed) {
    nz_error err;
    nz_ws *ws = nz_ws_new(m, B, &err);
    if (!ws) {
        CHECK(0, "nz_ws_new: %s", err.msg);
        return NULL;
    }
    const size_t nx = (size_t)B * nz_shape_size(m->in), nz = (size_t)B * m->n_classes;
    float *x = malloc(sizeof(float) * nx), *z = malloc(sizeof(float) * nz);
    nz_rng r;
    nz_rng_seed(&r, seed);
    for (size_t i = 0; i < nx; i++) x[i] = nz_rng_normal(&r);
    memcpy(z, nz_forward(m, ws, x, B, 0, NULL), sizeof(float) * nz);
    nz_ws_free(ws);
    free(x);
    return z;
}

/* Saves m, reads the file back; returns the bytes (caller frees) and loads it into *ld. */
static uint8_t *save_load(const nz_model *m, nz_model *ld, size_t *n, const char *what) {
    char path[700];
    snprintf(path, sizeof path, "%s/m.nnz", g_dir);
    nz_error err = {0};
    *n = 0;
    if (nz_save(m, NULL, path, &err) != NZ_OK) {
        CHECK(0, "%s: save: %s", what, err.msg);
        return NULL;
    }
    uint8_t *f = read_all(path, n);
    unlink(path);
    if (!f || nz_load_buffer(f, *n, NAME, ld, NULL, &err) != NZ_OK) {
        CHECK(0, "%s: load: %s", what, err.msg);
        free(f);
        return NULL;
    }
    return f;
}

/* ---------------------------------------------------------------- round trips */

/* The payload size of KERNELS, computed here from the format's description. */
static size_t kernels_bytes(size_t total, size_t kept, size_t area, size_t width) {
    return 16 + (total + 7) / 8 + kept * area * width;
}

static void round_trip(int O, int I, int k, double frac, int f16, uint64_t seed) {
    char what[96];
    snprintf(what, sizeof what, "%dx%d kernels %dx%d, %.0f%% zeroed, %s", O, I, k, k, frac * 100,
             f16 ? "f16" : "f32");
    nz_model m, ld;
    int cv = conv_model(&m, O, I, k, seed);
    if (cv < 0) return;
    nz_param *w = &m.nodes[cv].params[0];
    if (f16) w->store = NZ_STORE_F16;
    const size_t total = (size_t)O * I, area = (size_t)k * k, width = f16 ? 2 : 4;
    size_t zeroed = frac >= 1.0 ? total : zero_kernels(&m, cv, frac, seed + 1);
    if (frac >= 1.0) memset(m.params + w->off, 0, sizeof(float) * w->n);
    size_t kept, tot;
    nz_conv_kernels(&m, cv, &kept, &tot);
    CHECK(tot == total && kept == total - zeroed, "%s: nz_conv_kernels %zu / %zu, want %zu / %zu",
          what, kept, tot, total - zeroed, total);
    const size_t kb = kernels_bytes(total, kept, area, width), dense = w->n * width;
    const int want_kernels = kb < dense;
    /* what the weights must read back as: dropped kernels +0.0, values as stored */
    float *want = malloc(sizeof(float) * w->n);
    for (size_t j = 0; j < w->n; j++) {
        float v = m.params[w->off + j];
        want[j] = f16 ? nz_f16_to_f32(nz_f32_to_f16(v)) : v;
    }
    if (want_kernels)
        for (size_t j = 0; j < w->n; j++)
            if (want[j] == 0.0f) want[j] = 0.0f; /* turns -0.0 into +0.0 (zero kernels only:
                                                    random normal values are never 0) */
    size_t n;
    uint8_t *f = save_load(&m, &ld, &n, what);
    if (!f) {
        free(want);
        nz_model_free(&m);
        return;
    }
    sec s[MAX_SEC];
    int ns = split(f, s);
    int si = find_tensor(s, ns, cv, 0);
    uint32_t enc = si >= 0 ? rd32(s[si].data + 8) : 99;
    CHECK(enc == (want_kernels ? NZF_ENC_KERNELS : f16 ? NZF_ENC_F16 : NZF_ENC_F32),
          "%s: encoding %u (KERNELS %zu bytes vs dense %zu)", what, enc, kb, dense);
    size_t want_len = 16 + (want_kernels ? kb : dense);
    CHECK(si >= 0 && s[si].len == want_len, "%s: section of %zu bytes, want %zu", what,
          si >= 0 ? s[si].len : 0, want_len);
    CHECK(nz_dense_stored_bytes(&m, w) == want_len, "%s: nz_dense_stored_bytes %zu, want %zu",
          what, nz_dense_stored_bytes(&m, w), want_len);
    /* the other tensors keep their encodings */
    for (int i = 0; i < ns; i++)
        if (s[i].kind == NZF_SEC_TENSOR && i != si)
            CHECK(rd32(s[i].data + 8) == NZF_ENC_F32, "%s: section %d encoding %u", what, i,
                  rd32(s[i].data + 8));
    const nz_param *lw = &ld.nodes[cv].params[0];
    CHECK(lw->store == w->store, "%s: store %d, want %d", what, (int)lw->store, (int)w->store);
    CHECK(memcmp(ld.params + lw->off, want, sizeof(float) * w->n) == 0,
          "%s: weights not read back bit for bit", what);
    /* everything but the conv weight is untouched; the logits are equal (the original's f16
     * weights are rounded when written, so compare against a model holding the rounded ones) */
    memcpy(m.params + w->off, want, sizeof(float) * w->n);
    CHECK(m.n_params == ld.n_params &&
              memcmp(m.params, ld.params, sizeof(float) * m.n_params) == 0,
          "%s: parameters differ", what);
    float *a = logits(&m, 4, seed), *b = logits(&ld, 4, seed);
    if (a && b) {
        int same = 1;
        for (int j = 0; j < 4 * 3; j++) same &= a[j] == b[j];
        CHECK(same, "%s: logits differ after save/load", what);
    }
    free(a);
    free(b);
    /* saving what was loaded gives the same file */
    size_t n2;
    nz_model ld2;
    uint8_t *f2 = save_load(&ld, &ld2, &n2, what);
    CHECK(f2 && n2 == n && memcmp(f, f2, n) == 0, "%s: re-saved file differs", what);
    if (f2) nz_model_free(&ld2);
    free(f2);
    free_split(s, ns);
    free(f);
    free(want);
    nz_model_free(&ld);
    nz_model_free(&m);
}

static void test_round_trips(void) {
    /* O x I: 5 x 3 = 15 kernels (1 padding bit), 7 x 1 (1), 4 x 4 (none), 9 x 7 = 63 (1) */
    const int shapes[4][2] = {{5, 3}, {7, 1}, {4, 4}, {9, 7}};
    const int ks[3] = {1, 3, 5};
    const double fracs[4] = {0.0, 0.3, 0.8, 1.0};
    uint64_t seed = 100;
    for (int s = 0; s < 4; s++)
        for (int k = 0; k < 3; k++)
            for (int f = 0; f < 4; f++)
                for (int h = 0; h < 2; h++)
                    round_trip(shapes[s][0], shapes[s][1], ks[k], fracs[f], h, seed++);
}

/* Which tensors may become KERNELS, and the exact size boundary. */
static void test_choice(void) {
    nz_model m, ld;
    size_t n;
    /* 1x1 kernels, 32 of them (4 bitmap bytes): 16 + 4 + 4 * kept < 4 * 32 needs kept < 27 */
    for (int zeros = 4; zeros <= 6; zeros++) {
        int cv = conv_model(&m, 32, 1, 1, 7);
        if (cv < 0) return;
        for (int j = 0; j < zeros; j++) m.params[m.nodes[cv].params[0].off + (size_t)j * 5] = 0.0f;
        uint8_t *f = save_load(&m, &ld, &n, "1x1 boundary");
        if (f) {
            sec s[MAX_SEC];
            int ns = split(f, s);
            int si = find_tensor(s, ns, cv, 0);
            uint32_t enc = si >= 0 ? rd32(s[si].data + 8) : 99;
            /* zeros 5: 16 + 4 + 108 = 128 bytes, the same as dense: stays F32 */
            CHECK(enc == (zeros >= 6 ? NZF_ENC_KERNELS : NZF_ENC_F32),
                  "1x1, %d of 32 kernels zero: encoding %u", zeros, enc);
            free_split(s, ns);
            free(f);
            nz_model_free(&ld);
        }
        nz_model_free(&m);
    }

    /* 17x17 kernels (more than 256 values): never KERNELS, even all zero */
    int cv = conv_model(&m, 2, 1, 17, 8);
    if (cv < 0) return;
    memset(m.params + m.nodes[cv].params[0].off, 0, sizeof(float) * m.nodes[cv].params[0].n);
    uint8_t *f = save_load(&m, &ld, &n, "17x17");
    if (f) {
        sec s[MAX_SEC];
        int ns = split(f, s);
        int si = find_tensor(s, ns, cv, 0);
        CHECK(si >= 0 && rd32(s[si].data + 8) == NZF_ENC_F32, "17x17 zero kernels: not F32");
        /* and a hand-made KERNELS payload for it is refused */
        if (si >= 0) {
            sec t[MAX_SEC];
            memcpy(t, s, sizeof(sec) * (size_t)ns);
            /* section: node, slot, encoding, reserved; kh, kw, kept 0, type 0; 1 bitmap byte */
            uint8_t secb[16 + 17];
            memcpy(secb, s[si].data, 8);
            wr32(secb + 8, NZF_ENC_KERNELS);
            wr32(secb + 12, 0);
            memset(secb + 16, 0, 17);
            wr32(secb + 16, 17);
            wr32(secb + 20, 17);
            t[si].data = secb;
            t[si].len = sizeof secb;
            size_t bn;
            uint8_t *bad = assemble(t, ns, &bn);
            EXPECT_FAIL("17x17 as kernels", bad, bn, NZ_ERR_FORMAT, "at most 256");
            free(bad);
        }
        free_split(s, ns);
        free(f);
        nz_model_free(&ld);
    }
    nz_model_free(&m);

    /* fc rows of zeros, zero biases and a sparse conv weight: none become KERNELS */
    cv = conv_model(&m, 4, 2, 3, 9);
    if (cv < 0) return;
    int fc = cv + 3;
    const nz_param *fw = &m.nodes[fc].params[0];
    memset(m.params + fw->off, 0, sizeof(float) * fw->n / 2);
    memset(m.params + m.nodes[cv].params[1].off, 0, sizeof(float) * m.nodes[cv].params[1].n);
    const nz_param *cw = &m.nodes[cv].params[0];
    memset(m.params + cw->off, 0, sizeof(float) * cw->n / 2);
    nz_error err = {0};
    CHECK(nz_model_sparsify_param(&m, cv, NULL, 0, 4, &err) == NZ_OK, "sparsify: %s", err.msg);
    f = save_load(&m, &ld, &n, "sparse conv");
    if (f) {
        sec s[MAX_SEC];
        int ns = split(f, s);
        for (int i = 0; i < ns; i++) {
            if (s[i].kind != NZF_SEC_TENSOR) continue;
            uint32_t node = rd32(s[i].data), slot = rd32(s[i].data + 4), e = rd32(s[i].data + 8);
            uint32_t want = node == (uint32_t)cv && slot == 0 ? NZF_ENC_SPARSE : NZF_ENC_F32;
            CHECK(e == want, "node %u slot %u: encoding %u, want %u", node, slot, e, want);
        }
        free_split(s, ns);
        free(f);
        nz_model_free(&ld);
    }
    nz_model_free(&m);
}

/* A LeNet-5 slimmed by hand: whole channels removed, then kernels zeroed in the survivors. */
static void test_lenet5(void) {
    nz_model m, ld;
    nz_error err = {0};
    if (nz_zoo_build(&m, "lenet5", (nz_shape){1, 28, 28}, 10, &err) != NZ_OK) {
        CHECK(0, "lenet5: %s", err.msg);
        return;
    }
    nz_rng r;
    nz_rng_seed(&r, 5);
    nz_model_init_params(&m, &r);
    int conv[2], nc = 0;
    for (int i = 0; i < m.n_nodes && nc < 2; i++)
        if (m.nodes[i].op == NZ_OP_CONV2D) conv[nc++] = i;
    CHECK(nc == 2, "lenet5 has %d conv layers", nc);
    if (nc < 2) {
        nz_model_free(&m);
        return;
    }
    /* conv1: channels 3..19 all zero (removed); conv2: channels 10..49 too */
    const nz_param *p1 = &m.nodes[conv[0]].params[0], *p2 = &m.nodes[conv[1]].params[0];
    memset(m.params + p1->off + 3 * 25, 0, sizeof(float) * (p1->n - 3 * 25));
    memset(m.params + p2->off + 10 * 20 * 25, 0, sizeof(float) * (p2->n - 10 * 20 * 25));
    CHECK(nz_slim_remove(&m, &err) == NZ_OK, "nz_slim_remove: %s", err.msg);
    zero_kernels(&m, conv[1], 0.6, 11);
    size_t kept, total;
    nz_conv_kernels(&m, conv[1], &kept, &total);
    CHECK(total == 30 && kept > 0 && kept < total, "conv2 after removal: %zu / %zu kernels", kept,
          total);
    size_t n;
    uint8_t *f = save_load(&m, &ld, &n, "lenet5");
    if (!f) {
        nz_model_free(&m);
        return;
    }
    sec s[MAX_SEC];
    int ns = split(f, s);
    int si = find_tensor(s, ns, conv[1], 0);
    CHECK(si >= 0 && rd32(s[si].data + 8) == NZF_ENC_KERNELS && s[si].len == 16 +
              kernels_bytes(total, kept, 25, 4),
          "lenet5 conv2: encoding %u, %zu bytes", si >= 0 ? rd32(s[si].data + 8) : 99,
          si >= 0 ? s[si].len : 0);
    float *a = logits(&m, 8, 3), *b = logits(&ld, 8, 3);
    if (a && b) {
        int same = 1;
        for (int j = 0; j < 8 * 10; j++) same &= a[j] == b[j];
        CHECK(same, "lenet5: logits differ after save/load");
    }
    free(a);
    free(b);
    free_split(s, ns);
    free(f);
    nz_model_free(&ld);
    nz_model_free(&m);
}

/* ---------------------------------------------------------------- corrupt payloads */

static void test_corrupt(void) {
    nz_model m, ld;
    /* 5 x 3 = 15 kernels of 3x3: a 2-byte bitmap with one padding bit */
    int cv = conv_model(&m, 5, 3, 3, 21);
    if (cv < 0) return;
    const nz_param *w = &m.nodes[cv].params[0];
    for (int j = 0; j < 15; j += 2) memset(m.params + w->off + (size_t)j * 9, 0, 9 * sizeof(float));
    size_t n;
    uint8_t *f = save_load(&m, &ld, &n, "corrupt base");
    nz_model_free(&m);
    if (!f) return;
    nz_model_free(&ld);
    sec s[MAX_SEC], t[MAX_SEC];
    int ns = split(f, s);
    int si = find_tensor(s, ns, cv, 0), fc = find_tensor(s, ns, cv + 3, 0);
    CHECK(si >= 0 && fc >= 0 && rd32(s[si].data + 8) == NZF_ENC_KERNELS, "base file layout");
    if (si < 0 || fc < 0) {
        free_split(s, ns);
        free(f);
        return;
    }
    /* payload: 16 header + 2 bitmap + 7 kernels x 9 x 4 = 270 bytes */
    const size_t plen = s[si].len - 16, head = 16, map = 2;
    CHECK(plen == 16 + 2 + 7 * 36, "payload %zu bytes", plen);
    uint8_t *orig = malloc(s[si].len);
    memcpy(orig, s[si].data, s[si].len);
    uint8_t *pay = s[si].data + 16;
    CHECK(pay[16] == 0xaa && pay[17] == 0x2a, "bitmap %02x %02x (kernels 1, 3, ..., 13 kept)",
          pay[16], pay[17]);
    uint8_t *bad;
    size_t bn;
#define TRY(what, want, needle)                                                                \
    do {                                                                                       \
        bad = assemble(s, ns, &bn);                                                            \
        EXPECT_FAIL(what, bad, bn, want, needle);                                              \
        free(bad);                                                                             \
        s[si].len = plen + 16;                                                                 \
        memcpy(s[si].data, orig, s[si].len);                                                   \
    } while (0)

    pay[16] |= 1; /* kernel 0 marked kept too: 8 bits set, header says 7 */
    TRY("popcount", NZ_ERR_FORMAT, "the bitmap marks 8 kernels, the header says 7");
    pay[17] &= 0x0f; /* kernel 13 dropped */
    TRY("popcount low", NZ_ERR_FORMAT, "the bitmap marks 6 kernels");
    wr32(pay + 8, 8); /* kept count disagrees with the payload length */
    TRY("kept count", NZ_ERR_FORMAT, "need 306");
    wr32(pay + 8, 16); /* more kept than kernels */
    TRY("kept > kernels", NZ_ERR_FORMAT, "16 kept of 15");
    pay[17] |= 0x80; /* padding bit (kernel 15 of 15) */
    TRY("padding", NZ_ERR_FORMAT, "padding bits");
    wr32(pay, 5); /* kernel size */
    TRY("kh", NZ_ERR_SHAPE, "kernels of 5x3, the graph's weights are 5x3x3x3");
    wr32(pay + 4, 1);
    TRY("kw", NZ_ERR_SHAPE, "kernels of 3x1");
    pay[12] = 2;
    TRY("value type", NZ_ERR_UNSUPPORTED, "unknown value type 2");
    pay[12] = 1; /* f16: a valid type, but the length is that of f32 values */
    TRY("f16 length", NZ_ERR_FORMAT, "f16 need 144");
    pay[14] = 1;
    TRY("reserved", NZ_ERR_FORMAT, "reserved header bytes");
    s[si].len = 16 + 10;
    TRY("short header", NZ_ERR_FORMAT, "shorter than its 16-byte header");
    /* every truncation of the payload, and one byte too many */
    int accepted = 0;
    for (size_t len = 0; len <= plen + 1; len++) {
        if (len == plen) continue;
        s[si].len = 16 + len;
        bad = assemble(s, ns, &bn);
        char msg[700];
        accepted += !load_fails(bad, bn, NZ_OK, "tensor conv1.W", NULL, msg, sizeof msg);
        if (len == plen - 1) CHECK(strstr(msg, "payload is 269 bytes"), "truncated: %s", msg);
        free(bad);
    }
    s[si].len = plen + 16;
    CHECK(accepted == 0, "%d truncated / extended payloads accepted", accepted);
    /* every single-bit flip of header and bitmap is refused; flips in values load */
    int flip_ok = 0, value_bad = 0;
    for (size_t bit = 0; bit < 8 * plen; bit++) {
        pay[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        bad = assemble(s, ns, &bn);
        pay[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        nz_error err = {0};
        nz_status st = nz_load_buffer(bad, bn, NAME, &ld, NULL, &err);
        if (st == NZ_OK) nz_model_free(&ld);
        if (bit / 8 < head + map)
            flip_ok += st == NZ_OK || strncmp(err.msg, NAME ": ", strlen(NAME) + 2) != 0;
        else
            value_bad += st != NZ_OK;
        free(bad);
    }
    CHECK(flip_ok == 0, "%d bit flips of header or bitmap accepted (or unnamed)", flip_ok);
    CHECK(value_bad == 0, "%d bit flips of values refused", value_bad);
    /* KERNELS on tensors it is not for: the fc weights and the conv bias */
    memcpy(t, s, sizeof(sec) * (size_t)ns);
    uint8_t *fsec = malloc(s[si].len);
    memcpy(fsec, s[si].data, s[si].len);
    wr32(fsec, (uint32_t)cv + 3); /* conv1.W's payload presented as fc.W */
    t[fc].data = fsec;
    t[fc].len = s[si].len;
    bad = assemble(t, ns, &bn);
    {
        char msg[700];
        int ok = load_fails(bad, bn, NZ_ERR_FORMAT, "tensor fc.W", "only for the weights of a "
                            "conv2d layer", msg, sizeof msg);
        CHECK(ok, "kernels on fc.W: %s", msg);
    }
    free(bad);
    memcpy(t, s, sizeof(sec) * (size_t)ns);
    int cb = find_tensor(s, ns, cv, 1);
    wr32(fsec, (uint32_t)cv);
    wr32(fsec + 4, 1);
    t[cb].data = fsec;
    bad = assemble(t, ns, &bn);
    {
        char msg[700];
        int ok = load_fails(bad, bn, NZ_ERR_FORMAT, "tensor conv1.b", "only for the weights",
                            msg, sizeof msg);
        CHECK(ok, "kernels on conv1.b: %s", msg);
    }
    free(bad);
    free(fsec);
    /* and the untouched sections still load */
    bad = assemble(s, ns, &bn);
    nz_error err = {0};
    CHECK(nz_load_buffer(bad, bn, NAME, &ld, NULL, &err) == NZ_OK, "reassembled: %s", err.msg);
    if (err.code == NZ_OK) nz_model_free(&ld);
    free(bad);
#undef TRY
    free(orig);
    free_split(s, ns);
    free(f);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/nnz_test_kernels.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trips();
    test_choice();
    test_lenet5();
    test_corrupt();
    CHECK(rmdir(g_dir) == 0, "test directory not empty");
    return tl_finish("test_kernels");
}
