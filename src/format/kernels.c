/* Encoding KERNELS (layout in include/nnzip/format.h): kernel-level sparsity of conv weights.
 *
 * Structured slimming (src/compress/normdir.c) drives whole kh x kw kernels to zero inside the
 * output channels it keeps; this encoding leaves them out of the file, one bitmap bit each.
 *
 * A kernel is zero when every value is +0.0 or -0.0 (the definition slimming counts with), and
 * it reads back as +0.0. That changes no model output: a conv sums products, and s + (+-0) == s
 * for every nonzero s, so a weight's zero sign can only change the sign of an output that is
 * exactly zero, which compares equal (and stays zero through relu, pooling, batch norm and the
 * next layers). Keeping -0.0 kernels instead would store many of slimming's zero kernels, whose
 * weights come out as sign(g) * 0 * direction.
 *
 * It is a storage form only, like F16: loading expands to the dense tensor and conv layers keep
 * computing with im2col + dense GEMM. A kernel-skipping conv would need a gather per output
 * channel instead of one OpenBLAS GEMM, which does not pay at slimming's kernel sparsities
 * (tens of percent of the kernels kept, not a few). */
#include "format/kernels.h"

#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "nnzip/format.h"

#define HEAD_SIZE 16u

static void put_u32le(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int kernel_is_zero(const float *k, size_t area) {
    for (size_t q = 0; q < area; q++)
        if (k[q] != 0.0f) return 0; /* -0.0f == 0.0f: both signs are zero */
    return 1;
}

/* The dense conv weight of node, or NULL. */
static const nz_param *conv_weight(const nz_model *m, int node) {
    if (!m || node < 0 || node >= m->n_nodes) return NULL;
    const nz_node *n = &m->nodes[node];
    const nz_param *p = &n->params[0];
    if (n->op != NZ_OP_CONV2D || n->n_params < 1 || p->sparse || p->ndim != 4 ||
        p->n != nz_param_numel(p))
        return NULL;
    return p;
}

void nz_conv_kernels(const nz_model *m, int node, size_t *kept, size_t *total) {
    *kept = *total = 0;
    const nz_param *p = conv_weight(m, node);
    if (!p) return;
    const size_t area = (size_t)p->dims[2] * (size_t)p->dims[3];
    *total = (size_t)p->dims[0] * (size_t)p->dims[1];
    const float *W = m->params + p->off;
    for (size_t j = 0; j < *total; j++) *kept += !kernel_is_zero(W + j * area, area);
}

/* The one place the writer decides: returns the KERNELS payload length of (node, slot) when
 * that encoding is used (a conv weight whose payload is smaller than F32 / F16 storage), else 0. */
static size_t kernels_payload(const nz_model *m, int node, int slot) {
    const nz_param *p = slot == 0 ? conv_weight(m, node) : NULL;
    if (!p) return 0;
    const size_t area = (size_t)p->dims[2] * (size_t)p->dims[3];
    if (area > NZF_KERNELS_MAX_AREA) return 0;
    size_t kept, total;
    nz_conv_kernels(m, node, &kept, &total);
    const size_t width = p->store == NZ_STORE_F16 ? 2 : 4;
    /* total * area = p->n <= 2^31 (the format's tensor bound), so nothing here overflows */
    const size_t bytes = HEAD_SIZE + (total + 7) / 8 + kept * area * width;
    return bytes < p->n * width ? bytes : 0;
}

size_t nz_dense_stored_bytes(const nz_model *m, const nz_param *p) {
    for (int i = 0; m && i < m->n_nodes; i++)
        if (p == &m->nodes[i].params[0]) {
            size_t k = kernels_payload(m, i, 0);
            if (k) return 16 + k;
        }
    return 16 + p->n * (p->store == NZ_STORE_F16 ? 2 : 4);
}

nz_status nz_kernels_encode(const nz_model *m, int node, int slot, uint8_t **out, size_t *len,
                            nz_error *err) {
    *out = NULL;
    *len = 0;
    const size_t n = kernels_payload(m, node, slot);
    if (!n) return NZ_OK;
    const nz_param *p = &m->nodes[node].params[0];
    const size_t area = (size_t)p->dims[2] * (size_t)p->dims[3];
    const size_t total = (size_t)p->dims[0] * (size_t)p->dims[1];
    const int f16 = p->store == NZ_STORE_F16;
    uint8_t *buf = calloc(1, n); /* calloc: unset bitmap bits, padding included, are 0 */
    if (!buf) return nz_fail(err, NZ_ERR_NOMEM, "out of memory encoding '%s' as kernels",
                             m->nodes[node].name);
    size_t kept, t;
    nz_conv_kernels(m, node, &kept, &t);
    put_u32le(buf, (uint32_t)p->dims[2]);
    put_u32le(buf + 4, (uint32_t)p->dims[3]);
    put_u32le(buf + 8, (uint32_t)kept);
    buf[12] = (uint8_t)f16;
    uint8_t *bits = buf + HEAD_SIZE, *v = bits + (total + 7) / 8;
    const float *W = m->params + p->off;
    for (size_t j = 0; j < total; j++) {
        const float *k = W + j * area;
        if (kernel_is_zero(k, area)) continue;
        bits[j / 8] |= (uint8_t)(1u << (j % 8));
        for (size_t q = 0; q < area; q++) {
            if (f16) {
                uint16_t h = nz_f32_to_f16(k[q]);
                v[0] = (uint8_t)h;
                v[1] = (uint8_t)(h >> 8);
                v += 2;
            } else {
                uint32_t u;
                memcpy(&u, &k[q], 4); /* bit copy: NaN payloads survive */
                put_u32le(v, u);
                v += 4;
            }
        }
    }
    *out = buf;
    *len = n;
    return NZ_OK;
}

static int popcount8(uint8_t b) {
    int c = 0;
    for (; b; b &= (uint8_t)(b - 1)) c++;
    return c;
}

nz_status nz_kernels_check(const uint8_t *in, size_t len, const nz_node *n, int slot,
                           nz_store *store, nz_error *err) {
    const nz_param *p = &n->params[slot];
    if (n->op != NZ_OP_CONV2D || slot != 0 || p->ndim != 4)
        return nz_fail(err, NZ_ERR_FORMAT,
                       "encoding %u (kernels) is only for the weights of a conv2d layer",
                       (unsigned)NZF_ENC_KERNELS);
    if (len < HEAD_SIZE)
        return nz_fail(err, NZ_ERR_FORMAT, "kernels payload of %zu bytes is shorter than its "
                       "%u-byte header", len, HEAD_SIZE);
    const uint32_t kh = get_u32le(in), kw = get_u32le(in + 4), kept = get_u32le(in + 8);
    if (kh != (uint32_t)p->dims[2] || kw != (uint32_t)p->dims[3])
        return nz_fail(err, NZ_ERR_SHAPE,
                       "kernels of %ux%u, the graph's weights are %dx%dx%dx%d", kh, kw,
                       p->dims[0], p->dims[1], p->dims[2], p->dims[3]);
    const uint64_t area = (uint64_t)kh * kw;
    if (area > NZF_KERNELS_MAX_AREA)
        return nz_fail(err, NZ_ERR_FORMAT, "kernels of %ux%u values (at most %u values in this "
                       "encoding)", kh, kw, NZF_KERNELS_MAX_AREA);
    if (in[12] > 1)
        return nz_fail(err, NZ_ERR_UNSUPPORTED, "kernels: unknown value type %u", in[12]);
    if (in[13] | in[14] | in[15])
        return nz_fail(err, NZ_ERR_FORMAT, "kernels: reserved header bytes are not 0");
    const uint64_t total = (uint64_t)p->dims[0] * (uint64_t)p->dims[1];
    const uint64_t width = in[12] ? 2 : 4, map = (total + 7) / 8;
    if (kept > total)
        return nz_fail(err, NZ_ERR_FORMAT, "kernels: %u kept of %llu kernels", kept,
                       (unsigned long long)total);
    /* kept <= total <= 2^31 and area <= 256: no overflow */
    const uint64_t want = HEAD_SIZE + map + (uint64_t)kept * area * width;
    if ((uint64_t)len != want)
        return nz_fail(err, NZ_ERR_FORMAT,
                       "kernels payload is %zu bytes; a %llu-kernel bitmap and %u kept %ux%u "
                       "kernels of %s need %llu",
                       len, (unsigned long long)total, kept, kh, kw, width == 2 ? "f16" : "f32",
                       (unsigned long long)want);
    const uint8_t *bits = in + HEAD_SIZE;
    if (total % 8 && bits[map - 1] >> (total % 8))
        return nz_fail(err, NZ_ERR_FORMAT, "kernels: bitmap padding bits past kernel %llu are "
                       "not 0", (unsigned long long)total);
    uint64_t set = 0;
    for (uint64_t b = 0; b < map; b++) set += (uint64_t)popcount8(bits[b]);
    if (set != kept)
        return nz_fail(err, NZ_ERR_FORMAT, "kernels: the bitmap marks %llu kernels, the header "
                       "says %u are kept", (unsigned long long)set, kept);
    *store = width == 2 ? NZ_STORE_F16 : NZ_STORE_F32;
    return NZ_OK;
}

void nz_kernels_expand(const uint8_t *in, const nz_param *p, float *dst) {
    const size_t area = (size_t)p->dims[2] * (size_t)p->dims[3];
    const size_t total = (size_t)p->dims[0] * (size_t)p->dims[1];
    const int f16 = in[12] != 0;
    const uint8_t *bits = in + HEAD_SIZE, *v = bits + (total + 7) / 8;
    for (size_t j = 0; j < total; j++) {
        float *k = dst + j * area;
        if (!(bits[j / 8] >> (j % 8) & 1)) {
            for (size_t q = 0; q < area; q++) k[q] = 0.0f;
            continue;
        }
        for (size_t q = 0; q < area; q++) {
            if (f16) {
                k[q] = nz_f16_to_f32((uint16_t)(v[0] | v[1] << 8));
                v += 2;
            } else {
                uint32_t u = get_u32le(v);
                memcpy(&k[q], &u, 4);
                v += 4;
            }
        }
    }
}
