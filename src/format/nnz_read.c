/* .nnz reader (layout in include/nnzip/format.h).
 *
 * The file is untrusted input. Every read goes through one cursor whose only bounds check is
 * fits(); counts are checked against the bytes left before anything is allocated, so a hostile
 * file can make the reader allocate no more than about its own size (KERNELS tensors excepted:
 * their bitmap bits stand for up to 1 KiB of zeros each). Errors name the file and, where one is
 * involved, the section. */
#include "nnzip/format.h"
#include "core/model_infer.h"
#include "nnzip/compress.h"
#include "core/half.h"
#include "format/kernels.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

static const uint8_t nzf_magic[8] = {0x89, 'N', 'N', 'Z', 0x0D, 0x0A, 0x1A, 0x0A};

/* byte sizes of fixed GRAPH records, used to bound counts before allocating */
#define GRAPH_HEAD_SIZE 60u
#define GRAPH_NODE_SIZE 76u
#define GRAPH_PARAM_SIZE 20u
#define TENSOR_HEAD_SIZE 16u
#define META_ENTRY_MIN 6u
#define STATE_HEAD_SIZE 268u /* STATE up to and including n_params */
#define STATE_VERSION 1u

/* ---------------------------------------------------------------- bounds and bytes */

/* The one bounds check: do count items of elem bytes fit in avail bytes? Division, so no
 * product can overflow. */
static bool fits(uint64_t avail, uint64_t count, uint64_t elem) {
    return elem == 0 || count <= avail / elem;
}

typedef struct {
    const uint8_t *p;
    size_t left;
    bool overrun; /* sticky: set by the first read past the end; later reads return zeros */
} cursor;

static cursor cur_make(const uint8_t *p, size_t n) { return (cursor){p, n, false}; }

static const uint8_t *cur_take(cursor *c, size_t n) {
    if (c->overrun || !fits(c->left, n, 1)) {
        c->overrun = true;
        c->left = 0;
        return NULL;
    }
    const uint8_t *p = c->p;
    c->p += n;
    c->left -= n;
    return p;
}

static uint16_t get_u16le(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64le(const uint8_t *p) {
    return (uint64_t)get_u32le(p) | (uint64_t)get_u32le(p + 4) << 32;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t cur_u16(cursor *c) {
    const uint8_t *p = cur_take(c, 2);
    return p ? get_u16le(p) : 0;
}

static uint32_t cur_u32(cursor *c) {
    const uint8_t *p = cur_take(c, 4);
    return p ? get_u32le(p) : 0;
}

static uint64_t cur_u64(cursor *c) {
    const uint8_t *p = cur_take(c, 8);
    return p ? get_u64le(p) : 0;
}

static int32_t cur_i32(cursor *c) {
    uint32_t u = cur_u32(c);
    int32_t v;
    memcpy(&v, &u, sizeof v); /* two's complement reinterpretation without implementation-
                                 defined conversion */
    return v;
}

static float cur_f32(cursor *c) { return bits_f32(cur_u32(c)); }

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t crc = 0;
    while (n > 0) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, p, k);
        p += k;
        n -= k;
    }
    return crc;
}

/* ---------------------------------------------------------------- container */

typedef struct {
    uint32_t kind, flags, crc, reserved;
    uint64_t off, len;
} sec_entry;

typedef struct {
    const uint8_t *buf;
    size_t size;
    const char *name;
    uint32_t n_sec;
    sec_entry *sec;
    int meta_idx, graph_idx, state_idx;
} container;

static const char *kind_name(uint32_t kind) {
    switch (kind) {
    case NZF_SEC_META: return "meta";
    case NZF_SEC_GRAPH: return "graph";
    case NZF_SEC_TENSOR: return "tensor";
    case NZF_SEC_STATE: return "state";
    default: return "unknown";
    }
}

/* Checks header and table: magic, version, counts, table CRC, section kinds and bounds.
 * Sections' own CRCs are checked when each is parsed. */
static nz_status container_open(container *ct, const uint8_t *buf, size_t size, const char *name,
                                nz_error *err) {
    memset(ct, 0, sizeof *ct);
    ct->buf = buf;
    ct->size = size;
    ct->name = name;
    ct->meta_idx = ct->graph_idx = ct->state_idx = -1;
    size_t mlen = size < 8 ? size : 8;
    if (memcmp(buf, nzf_magic, mlen) != 0)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: not an nnzip file (bad magic)", name);
    if (size < NZF_HEADER_SIZE)
        return nz_fail(err, NZ_ERR_CORRUPT,
                       "%s: file is truncated (%zu bytes; the header alone needs %u)", name, size,
                       NZF_HEADER_SIZE);
    cursor c = cur_make(buf + 8, NZF_HEADER_SIZE - 8);
    uint32_t version = cur_u32(&c);
    uint32_t n_sec = cur_u32(&c);
    uint32_t flags = cur_u32(&c);
    uint32_t table_crc = cur_u32(&c);
    if (version > NZF_VERSION)
        return nz_fail(err, NZ_ERR_UNSUPPORTED,
                       "%s: format version %u is newer than this nnzip (%u)", name, version,
                       NZF_VERSION);
    if (version != NZF_VERSION)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: bad format version %u", name, version);
    if (flags != 0)
        return nz_fail(err, NZ_ERR_UNSUPPORTED, "%s: unknown header flags 0x%x", name, flags);
    if (n_sec < 1 || n_sec > NZF_MAX_SECTIONS)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: section count %u not in 1..%u", name, n_sec,
                       NZF_MAX_SECTIONS);
    if (!fits(size - NZF_HEADER_SIZE, n_sec, NZF_ENTRY_SIZE))
        return nz_fail(err, NZ_ERR_CORRUPT,
                       "%s: file is truncated: the table of %u sections needs %llu bytes, the "
                       "file has %zu",
                       name, n_sec,
                       (unsigned long long)NZF_HEADER_SIZE + (unsigned long long)n_sec * 32u,
                       size);
    size_t table_len = (size_t)n_sec * NZF_ENTRY_SIZE;
    if (crc32_of(buf + NZF_HEADER_SIZE, table_len) != table_crc)
        return nz_fail(err, NZ_ERR_CORRUPT,
                       "%s: the section table fails its CRC32 check: file is corrupt", name);

    ct->sec = malloc(sizeof(sec_entry) * n_sec);
    if (!ct->sec) return nz_fail(err, NZ_ERR_NOMEM, "%s: out of memory", name);
    ct->n_sec = n_sec;
    c = cur_make(buf + NZF_HEADER_SIZE, table_len);
    uint64_t prev_end = NZF_HEADER_SIZE + (uint64_t)table_len;
    for (uint32_t i = 0; i < n_sec; i++) {
        sec_entry *s = &ct->sec[i];
        s->kind = cur_u32(&c);
        s->flags = cur_u32(&c);
        s->off = cur_u64(&c);
        s->len = cur_u64(&c);
        s->crc = cur_u32(&c);
        s->reserved = cur_u32(&c);
        if (s->kind < 1 || s->kind >= NZF_SEC__END)
            return nz_fail(err, NZ_ERR_UNSUPPORTED,
                           "%s: section %u has unknown kind %u (written by a newer nnzip?)", name,
                           i, s->kind);
        if (s->flags != 0 && !(s->flags == NZF_SECFLAG_DEFLATE &&
                               (s->kind == NZF_SEC_META || s->kind == NZF_SEC_GRAPH)))
            return nz_fail(err, NZ_ERR_UNSUPPORTED, "%s: section %u (%s) has unknown flags 0x%x",
                           name, i, kind_name(s->kind), s->flags);
        if (s->reserved != 0)
            return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (%s): reserved field is not 0",
                           name, i, kind_name(s->kind));
        if (s->off > size || !fits(size - s->off, s->len, 1))
            return nz_fail(err, NZ_ERR_CORRUPT,
                           "%s: section %u (%s) at offset %llu, %llu bytes, extends past the end "
                           "of the %zu-byte file: file is truncated or corrupt",
                           name, i, kind_name(s->kind), (unsigned long long)s->off,
                           (unsigned long long)s->len, size);
        if (s->off < prev_end)
            return nz_fail(err, NZ_ERR_FORMAT,
                           "%s: section %u (%s) overlaps the table or the previous section",
                           name, i, kind_name(s->kind));
        prev_end = s->off + s->len;
        int *slot = s->kind == NZF_SEC_META    ? &ct->meta_idx
                    : s->kind == NZF_SEC_GRAPH ? &ct->graph_idx
                    : s->kind == NZF_SEC_STATE ? &ct->state_idx
                                               : NULL;
        if (slot) {
            if (*slot >= 0)
                return nz_fail(err, NZ_ERR_FORMAT, "%s: sections %d and %u are both %s", name,
                               *slot, i, kind_name(s->kind));
            *slot = (int)i;
        }
    }
    if (ct->meta_idx < 0 || ct->graph_idx < 0)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: no %s section", name,
                       ct->meta_idx < 0 ? "meta" : "graph");
    return NZ_OK;
}

static void container_close(container *ct) {
    free(ct->sec);
    ct->sec = NULL;
}

static const uint8_t *sec_data(const container *ct, uint32_t i) {
    return ct->buf + ct->sec[i].off; /* in bounds: checked by container_open */
}

static nz_status sec_check_crc(const container *ct, uint32_t i, const char *desc,
                               nz_error *err) {
    if (crc32_of(sec_data(ct, i), (size_t)ct->sec[i].len) != ct->sec[i].crc)
        return nz_fail(err, NZ_ERR_CORRUPT,
                       "%s: section %u (%s) fails its CRC32 check: file is corrupt", ct->name, i,
                       desc);
    return NZ_OK;
}

/* ---------------------------------------------------------------- META */

/* A META or GRAPH section's bytes, inflated if stored deflated (*owned: caller frees). The raw
 * length is bounded, and zlib must produce exactly that many bytes. */
static nz_status sec_payload(const container *ct, uint32_t si, const char *desc,
                             const uint8_t **out, size_t *len, uint8_t **owned, nz_error *err) {
    *owned = NULL;
    nz_status st = sec_check_crc(ct, si, desc, err);
    if (st) return st;
    const uint8_t *p = sec_data(ct, si);
    size_t n = (size_t)ct->sec[si].len;
    if (!(ct->sec[si].flags & NZF_SECFLAG_DEFLATE)) {
        *out = p;
        *len = n;
        return NZ_OK;
    }
    if (n < 4)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (%s) is too short", ct->name, si, desc);
    uint32_t raw = get_u32le(p);
    /* zlib cannot expand more than about 1032:1 */
    if (raw > NZF_MAX_INFLATED || (uint64_t)raw > (uint64_t)(n - 4) * 1032u + 64u)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (%s): implausible size %u", ct->name,
                       si, desc, raw);
    uint8_t *buf = malloc(raw ? raw : 1);
    if (!buf) return nz_fail(err, NZ_ERR_NOMEM, "%s: out of memory", ct->name);
    uLongf got = raw;
    if (uncompress(buf, &got, p + 4, (uLong)(n - 4)) != Z_OK || got != raw) {
        free(buf);
        return nz_fail(err, NZ_ERR_CORRUPT, "%s: section %u (%s) does not inflate to its %u bytes",
                       ct->name, si, desc, raw);
    }
    *out = buf;
    *len = raw;
    *owned = buf;
    return NZ_OK;
}

static nz_status meta_parse_bytes(const container *ct, const uint8_t *data, size_t len,
                                  nz_model *m, nz_meta *meta, nz_error *err);
static nz_status graph_parse_bytes(const container *ct, const uint8_t *data, size_t len,
                                   nz_model *m, nz_error *err);

static nz_status meta_parse(const container *ct, nz_model *m, nz_meta *meta, nz_error *err) {
    const uint8_t *d = NULL;
    size_t n = 0;
    uint8_t *owned = NULL;
    nz_status st = sec_payload(ct, (uint32_t)ct->meta_idx, "meta", &d, &n, &owned, err);
    if (!st) st = meta_parse_bytes(ct, d, n, m, meta, err);
    free(owned);
    return st;
}

static nz_status graph_parse(const container *ct, nz_model *m, nz_error *err) {
    const uint8_t *d = NULL;
    size_t n = 0;
    uint8_t *owned = NULL;
    nz_status st = sec_payload(ct, (uint32_t)ct->graph_idx, "graph", &d, &n, &owned, err);
    if (!st) st = graph_parse_bytes(ct, d, n, m, err);
    free(owned);
    return st;
}

static nz_status meta_parse_bytes(const container *ct, const uint8_t *data, size_t len,
                                  nz_model *m, nz_meta *meta, nz_error *err) {
    uint32_t si = (uint32_t)ct->meta_idx;
    nz_status st = NZ_OK;
    const char *name = ct->name;
    cursor c = cur_make(data, len);
    uint32_t count = cur_u32(&c);
    if (c.overrun || count > NZF_MAX_META || !fits(c.left, count, META_ENTRY_MIN))
        return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (meta): bad entry count %u", name, si,
                       count);
    bool have_arch = false;
    /* keys are collected here even when the caller passed no meta, to reject duplicates */
    nz_meta *tmp = meta ? meta : calloc(1, sizeof *tmp);
    if (!tmp) return nz_fail(err, NZ_ERR_NOMEM, "%s: out of memory", name);
    tmp->n = 0;
    for (uint32_t i = 0; i < count && !st; i++) {
        uint16_t kl = cur_u16(&c);
        const uint8_t *k = cur_take(&c, kl);
        uint32_t vl = cur_u32(&c);
        const uint8_t *v = cur_take(&c, vl);
        if (c.overrun) {
            st = nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (meta): entry %u runs past the end",
                         name, si, i);
        } else if (kl == 0 || kl >= sizeof tmp->key[0] || vl >= sizeof tmp->val[0] ||
                   memchr(k, 0, kl) || memchr(v, 0, vl)) {
            st = nz_fail(err, NZ_ERR_FORMAT,
                         "%s: section %u (meta): entry %u has a bad key or value (lengths %u, "
                         "%u; at most %zu, %zu, no NUL bytes)",
                         name, si, i, kl, vl, sizeof tmp->key[0] - 1, sizeof tmp->val[0] - 1);
        } else {
            memcpy(tmp->key[tmp->n], k, kl);
            tmp->key[tmp->n][kl] = 0;
            memcpy(tmp->val[tmp->n], v, vl);
            tmp->val[tmp->n][vl] = 0;
            for (int j = 0; j < tmp->n && !st; j++)
                if (strcmp(tmp->key[j], tmp->key[tmp->n]) == 0)
                    st = nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (meta): duplicate key '%s'",
                                 name, si, tmp->key[j]);
            if (!st && strcmp(tmp->key[tmp->n], "arch") == 0) {
                if (vl >= sizeof m->arch)
                    st = nz_fail(err, NZ_ERR_FORMAT,
                                 "%s: section %u (meta): arch longer than %zu bytes", name, si,
                                 sizeof m->arch - 1);
                else
                    memcpy(m->arch, tmp->val[tmp->n], (size_t)vl + 1);
                have_arch = true;
            }
            tmp->n++;
        }
    }
    if (!st && c.left != 0)
        st = nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (meta): %zu trailing bytes", name, si,
                     c.left);
    if (!st && !have_arch) snprintf(m->arch, sizeof m->arch, "custom");
    if (tmp != meta) free(tmp);
    return st;
}

/* ---------------------------------------------------------------- GRAPH */

/* Output shape of node n from its (already parsed) inputs, by the same inference the builder
 * uses; nz_model_validate re-derives and compares everything afterwards, so here a failure only
 * has to give {0,0,0}, which validate always rejects with its own message. */
static nz_shape infer_out(const nz_model *m, const nz_node *n) {
    const nz_shape none = {0, 0, 0};
    nz_shape out;
    int np;
    nz_param expect[NZ_MAX_PARAMS];
    nz_error e;
    if (model_node_infer(m, n, &out, &np, expect, &e) != NZ_OK) return none;
    return out;
}

/* u32 attribute that must fit a non-negative int */
static bool u32_to_int(uint32_t u, int *out) {
    if (u > INT32_MAX) return false;
    *out = (int)u;
    return true;
}

static nz_status graph_parse_bytes(const container *ct, const uint8_t *data, size_t len,
                                   nz_model *m, nz_error *err) {
    uint32_t si = (uint32_t)ct->graph_idx;
    const char *name = ct->name;
    cursor c = cur_make(data, len);
    uint32_t in_c = cur_u32(&c), in_h = cur_u32(&c), in_w = cur_u32(&c);
    uint32_t n_classes = cur_u32(&c);
    m->pre.scale = cur_f32(&c);
    uint32_t n_ch = cur_u32(&c);
    for (int k = 0; k < 4; k++) m->pre.mean[k] = cur_f32(&c);
    for (int k = 0; k < 4; k++) m->pre.std[k] = cur_f32(&c);
    uint32_t n_nodes = cur_u32(&c);
    if (c.overrun)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (graph) is too short (%llu bytes)",
                       name, si, (unsigned long long)ct->sec[si].len);
    if (!u32_to_int(in_c, &m->in.c) || !u32_to_int(in_h, &m->in.h) ||
        !u32_to_int(in_w, &m->in.w) || !u32_to_int(n_classes, &m->n_classes) || n_ch > 4)
        return nz_fail(err, NZ_ERR_FORMAT,
                       "%s: section %u (graph): input shape, class count or channel count out "
                       "of range",
                       name, si);
    m->pre.n_ch = (int)n_ch;
    if (n_nodes < 1 || n_nodes > NZF_MAX_NODES || !fits(c.left, n_nodes, GRAPH_NODE_SIZE))
        return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (graph): bad node count %u", name, si,
                       n_nodes);
    m->nodes = calloc(n_nodes, sizeof(nz_node));
    if (!m->nodes) return nz_fail(err, NZ_ERR_NOMEM, "%s: out of memory", name);
    m->cap_nodes = (int)n_nodes;

    /* dims are capped per tensor here; the dense allocation is bounded by the file size later,
     * once the encodings are known (a sparse tensor may be far larger than its bytes) */
    const uint64_t max_floats = NZF_MAX_TENSOR_ELEMS;
    for (uint32_t i = 0; i < n_nodes; i++) {
        nz_node *n = &m->nodes[i];
        uint32_t op = cur_u32(&c);
        const uint8_t *nm = cur_take(&c, NZ_NAME_MAX);
        uint32_t n_in = cur_u32(&c);
        int32_t in0 = cur_i32(&c), in1 = cur_i32(&c);
        uint32_t units = cur_u32(&c), kh = cur_u32(&c), kw = cur_u32(&c);
        uint32_t stride = cur_u32(&c), pad = cur_u32(&c);
        n->p = cur_f32(&c);
        uint32_t n_par = cur_u32(&c);
        if (c.overrun)
            return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (graph): node %u runs past the end",
                           name, si, i);
        const uint8_t *nul = memchr(nm, 0, NZ_NAME_MAX);
        if (!nul)
            return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (graph): node %u: name is not "
                           "NUL-terminated", name, si, i);
        for (const uint8_t *q = nul; q < nm + NZ_NAME_MAX; q++)
            if (*q)
                return nz_fail(err, NZ_ERR_FORMAT,
                               "%s: section %u (graph): node %u: name is not NUL padded", name,
                               si, i);
        memcpy(n->name, nm, NZ_NAME_MAX);
        if (op >= NZ_OP__COUNT)
            return nz_fail(err, NZ_ERR_UNSUPPORTED,
                           "%s: section %u (graph): node %u ('%s') has unknown op %u", name, si, i,
                           n->name, op);
        n->op = (nz_op)op;
        if (n_in > NZ_MAX_INPUTS)
            return nz_fail(err, NZ_ERR_FORMAT,
                           "%s: section %u (graph): node %u ('%s') has %u inputs", name, si, i,
                           n->name, n_in);
        n->n_inputs = (int)n_in;
        n->inputs[0] = in0;
        n->inputs[1] = in1;
        for (uint32_t k = 0; k < NZ_MAX_INPUTS; k++) {
            bool ok = k < n_in ? (n->inputs[k] >= 0 && (uint32_t)n->inputs[k] < i)
                               : n->inputs[k] == -1;
            if (!ok)
                return nz_fail(err, NZ_ERR_FORMAT,
                               "%s: section %u (graph): node %u ('%s'): bad input %u (%d)", name,
                               si, i, n->name, k, n->inputs[k]);
        }
        if (!u32_to_int(units, &n->units) || !u32_to_int(kh, &n->kh) ||
            !u32_to_int(kw, &n->kw) || !u32_to_int(stride, &n->stride) ||
            !u32_to_int(pad, &n->pad))
            return nz_fail(err, NZ_ERR_FORMAT,
                           "%s: section %u (graph): node %u ('%s'): attribute out of range", name,
                           si, i, n->name);
        if (n_par > NZ_MAX_PARAMS || !fits(c.left, n_par, GRAPH_PARAM_SIZE))
            return nz_fail(err, NZ_ERR_FORMAT,
                           "%s: section %u (graph): node %u ('%s'): bad parameter count %u", name,
                           si, i, n->name, n_par);
        n->n_params = (int)n_par;
        for (uint32_t k = 0; k < n_par; k++) {
            nz_param *p = &n->params[k];
            uint32_t ndim = cur_u32(&c);
            uint32_t dims[NZ_MAX_DIMS];
            for (int d = 0; d < NZ_MAX_DIMS; d++) dims[d] = cur_u32(&c);
            if (ndim < 1 || ndim > NZ_MAX_DIMS)
                return nz_fail(err, NZ_ERR_FORMAT,
                               "%s: section %u (graph): node '%s' parameter %u: ndim %u not in "
                               "1..%d",
                               name, si, n->name, k, ndim, NZ_MAX_DIMS);
            p->ndim = (int)ndim;
            uint64_t count = 1;
            for (uint32_t d = 0; d < NZ_MAX_DIMS; d++) {
                bool ok = d < ndim ? dims[d] > 0 && dims[d] <= INT32_MAX &&
                                         fits(max_floats, count, dims[d])
                                   : dims[d] == 0;
                if (!ok)
                    return nz_fail(err, NZ_ERR_FORMAT,
                                   "%s: section %u (graph): node '%s' parameter %u: bad dims "
                                   "(%u x %u x %u x %u, ndim %u) for a %zu-byte file",
                                   name, si, n->name, k, dims[0], dims[1], dims[2], dims[3], ndim,
                                   ct->size);
                if (d < ndim) {
                    p->dims[d] = (int)dims[d];
                    count *= dims[d];
                }
            }
            p->off = 0;
            p->n = (size_t)count; /* element count until tensors_parse assigns storage */
        }
        m->n_nodes = (int)i + 1;
        n->out = infer_out(m, n);
    }
    if (c.left != 0)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (graph): %zu trailing bytes", name, si,
                       c.left);
    return NZ_OK;
}

/* ---------------------------------------------------------------- TENSOR */

static const char *slot_name(int slot, char *buf, size_t n) {
    if (slot == 0) return "W";
    if (slot == 1) return "b";
    snprintf(buf, n, "p%d", slot);
    return buf;
}

/* Two passes: the first checks every TENSOR section's header and CRC and records its
 * encoding; then dense storage is allocated (bounded by the payload bytes, so by the file size)
 * in node order, as model.c's add_node assigns it; the second pass decodes the payloads. */
static nz_status tensors_parse(const container *ct, nz_model *m, nz_error *err) {
    const char *name = ct->name;
    /* per (node, slot): 1 + the section index that holds it, 0 if none yet */
    uint32_t *where = calloc((size_t)m->n_nodes * NZ_MAX_PARAMS, sizeof(uint32_t));
    if (!where) return nz_fail(err, NZ_ERR_NOMEM, "%s: out of memory", name);
    nz_status st = NZ_OK;
    uint64_t dense_bytes = 0;
    char desc[96], sb[16];
    for (uint32_t si = 0; si < ct->n_sec && !st; si++) {
        if (ct->sec[si].kind != NZF_SEC_TENSOR) continue;
        cursor c = cur_make(sec_data(ct, si), (size_t)ct->sec[si].len);
        uint32_t node = cur_u32(&c), slot = cur_u32(&c);
        uint32_t enc = cur_u32(&c), reserved = cur_u32(&c);
        /* name the tensor in messages, even in a CRC failure, when the ids make sense */
        bool known = !c.overrun && node < (uint32_t)m->n_nodes &&
                     slot < (uint32_t)m->nodes[node].n_params;
        if (known)
            snprintf(desc, sizeof desc, "tensor %s.%s", m->nodes[node].name,
                     slot_name((int)slot, sb, sizeof sb));
        else
            snprintf(desc, sizeof desc, "tensor");
        st = sec_check_crc(ct, si, desc, err);
        if (st) break;
        if (c.overrun) {
            st = nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (%s) is too short (%llu bytes)",
                         name, si, desc, (unsigned long long)ct->sec[si].len);
        } else if (!known) {
            st = nz_fail(err, NZ_ERR_FORMAT,
                         "%s: section %u (%s) is for node %u slot %u, which has no such parameter",
                         name, si, desc, node, slot);
        } else if (enc >= NZF_ENC__END) {
            st = nz_fail(err, NZ_ERR_UNSUPPORTED,
                         "%s: section %u (%s) has unknown encoding %u (written by a newer nnzip?)",
                         name, si, desc, enc);
        } else if (reserved != 0) {
            st = nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (%s): reserved field is not 0",
                         name, si, desc);
        } else if (where[(size_t)node * NZ_MAX_PARAMS + slot]) {
            st = nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (%s): a second copy of this tensor",
                         name, si, desc);
        } else {
            nz_param *p = &m->nodes[node].params[slot];
            const size_t count = p->n, width = enc == NZF_ENC_F16 ? 2 : 4;
            nz_store store = enc == NZF_ENC_F16 ? NZ_STORE_F16 : NZ_STORE_F32;
            nz_error inner = {0};
            if (enc == NZF_ENC_SPARSE && slot != 0) {
                st = nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (%s): only weights can be sparse",
                             name, si, desc);
            } else if (enc == NZF_ENC_KERNELS &&
                       nz_kernels_check(c.p, c.left, &m->nodes[node], (int)slot, &store, &inner)) {
                st = nz_fail(err, inner.code, "%s: section %u (%s): %s", name, si, desc, inner.msg);
            } else if ((enc == NZF_ENC_F32 || enc == NZF_ENC_F16) &&
                       (!fits(c.left, count, width) || c.left != count * width)) {
                /* count <= 2^31, so count * width cannot overflow */
                st = nz_fail(err, NZ_ERR_SHAPE,
                             "%s: section %u (%s): payload is %zu bytes, the graph's shape needs "
                             "%zu values (%zu bytes)",
                             name, si, desc, c.left, count, count * width);
            } else {
                if (enc != NZF_ENC_SPARSE) dense_bytes += (uint64_t)count * 4;
                p->store = store;
                where[(size_t)node * NZ_MAX_PARAMS + slot] = si + 1;
            }
        }
    }
    for (int i = 0; i < m->n_nodes && !st; i++)
        for (int k = 0; k < m->nodes[i].n_params && !st; k++)
            if (!where[(size_t)i * NZ_MAX_PARAMS + (size_t)k])
                st = nz_fail(err, NZ_ERR_FORMAT, "%s: no tensor section for %s.%s", name,
                             m->nodes[i].name, slot_name(k, sb, sizeof sb));
    /* dense storage: every dense float came from at least 2 payload bytes of this file, or from
     * one bitmap bit of a KERNELS tensor (standing for at most NZF_KERNELS_MAX_AREA floats) */
    if (!st) {
        m->params = malloc(dense_bytes ? (size_t)dense_bytes : 1);
        if (!m->params) st = nz_fail(err, NZ_ERR_NOMEM, "%s: out of memory", name);
    }
    size_t total = 0;
    for (int i = 0; i < m->n_nodes && !st; i++)
        for (int k = 0; k < m->nodes[i].n_params && !st; k++) {
            nz_param *p = &m->nodes[i].params[k];
            uint32_t si = where[(size_t)i * NZ_MAX_PARAMS + (size_t)k] - 1;
            cursor c = cur_make(sec_data(ct, si) + TENSOR_HEAD_SIZE,
                                (size_t)ct->sec[si].len - TENSOR_HEAD_SIZE);
            uint32_t enc = get_u32le(sec_data(ct, si) + 8);
            snprintf(desc, sizeof desc, "tensor %s.%s", m->nodes[i].name,
                     slot_name(k, sb, sizeof sb));
            if (enc == NZF_ENC_SPARSE) {
                int rows = p->dims[0];
                int cols = (int)(p->n / (size_t)rows);
                nz_error inner = {0};
                if (nz_sparse_decode(c.p, c.left, rows, cols, &p->sparse, &inner) ||
                    nz_sparse_prepare(p->sparse, m->nodes[i].op, &inner)) {
                    st = nz_fail(err, inner.code, "%s: section %u (%s): %s", name, si, desc,
                                 inner.msg);
                    break;
                }
                p->off = 0;
                p->n = 0;
                continue;
            }
            p->off = total;
            float *dst = m->params + total;
            const uint8_t *src = c.p;
            if (enc == NZF_ENC_KERNELS)
                nz_kernels_expand(src, p, dst);
            else if (enc == NZF_ENC_F16)
                for (size_t j = 0; j < p->n; j++) dst[j] = nz_f16_to_f32(get_u16le(src + 2 * j));
            else
                for (size_t j = 0; j < p->n; j++) dst[j] = bits_f32(get_u32le(src + 4 * j));
            total += p->n;
        }
    m->n_params = total;
    free(where);
    return st;
}

/* ---------------------------------------------------------------- STATE */

static bool rng_nonzero(const nz_rng *r) { return (r->s[0] | r->s[1] | r->s[2] | r->s[3]) != 0; }

/* Checks a checkpoint's STATE section against the loaded model and, if out is non-NULL, fills
 * it (owned arrays). Every inconsistency is one message naming the section. */
static nz_status state_parse(const container *ct, const nz_model *m, nz_train_state *out,
                             nz_error *err) {
    const uint32_t si = (uint32_t)ct->state_idx;
    const char *name = ct->name;
    nz_status st = sec_check_crc(ct, si, "state", err);
    if (st) return st;
    cursor c = cur_make(sec_data(ct, si), (size_t)ct->sec[si].len);
    if (c.left < STATE_HEAD_SIZE)
        return nz_fail(err, NZ_ERR_FORMAT,
                       "%s: section %u (state) is too short (%zu bytes; its head alone needs %u)",
                       name, si, c.left, STATE_HEAD_SIZE);
    uint32_t version = cur_u32(&c);
    if (version != STATE_VERSION)
        return nz_fail(err, NZ_ERR_UNSUPPORTED,
                       "%s: section %u (state): state version %u (this nnzip reads %u)", name, si,
                       version, STATE_VERSION);
    nz_train_state s;
    memset(&s, 0, sizeof s);
    nz_train_cfg *cf = &s.cfg;
    uint32_t epoch = cur_u32(&c);
    uint64_t step = cur_u64(&c), steps = cur_u64(&c);
    uint32_t epochs = cur_u32(&c), batch = cur_u32(&c);
    cf->lr = cur_f32(&c);
    cf->momentum = cur_f32(&c);
    cf->weight_decay = cur_f32(&c);
    uint32_t nesterov = cur_u32(&c), sched = cur_u32(&c), step_epochs = cur_u32(&c);
    cf->step_gamma = cur_f32(&c);
    uint32_t warmup = cur_u32(&c), n_ms = cur_u32(&c), ms[NZ_MAX_MILESTONES];
    for (int i = 0; i < NZ_MAX_MILESTONES; i++) ms[i] = cur_u32(&c);
    cf->label_smoothing = cur_f32(&c);
    uint32_t crop = cur_u32(&c), flip = cur_u32(&c);
    cf->seed = cur_u64(&c);
    uint32_t eval_every = cur_u32(&c);
    s.last_loss = cur_f32(&c);
    s.last_train_err = cur_f32(&c);
    s.last_test_err = cur_f32(&c);
    s.best_test_err = cur_f32(&c);
    uint64_t sum_bits = cur_u64(&c);
    memcpy(&s.epoch_loss_sum, &sum_bits, sizeof sum_bits);
    uint64_t seen = cur_u64(&c), correct = cur_u64(&c);
    nz_rng *r[3] = {&s.shuffle_rng, &s.drop_rng, &s.aug_rng};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 4; i++) r[k]->s[i] = cur_u64(&c);
    uint64_t n_params = cur_u64(&c);

    /* integers into ints; out-of-range values become -1, which the checks below refuse */
    int iv[8];
    const uint32_t uv[8] = {epoch, epochs, batch, nesterov, step_epochs, warmup, crop, flip};
    for (int i = 0; i < 8; i++)
        if (!u32_to_int(uv[i], &iv[i])) iv[i] = -1;
    s.epoch = iv[0];
    cf->epochs = iv[1];
    cf->batch = iv[2];
    cf->nesterov = iv[3];
    cf->step_epochs = iv[4];
    cf->warmup_epochs = iv[5];
    cf->augment.crop_pad = iv[6];
    cf->augment.flip = iv[7];
    cf->sched = sched < NZ_SCHED__COUNT ? (nz_sched)sched : NZ_SCHED__COUNT;
    cf->eval_every = eval_every <= INT32_MAX ? (int)eval_every : -1;
    cf->n_milestones = n_ms <= NZ_MAX_MILESTONES ? (int)n_ms : NZ_MAX_MILESTONES + 1;
    bool ms_ok = true;
    for (int i = 0; i < NZ_MAX_MILESTONES; i++) {
        if (i < cf->n_milestones)
            ms_ok = ms_ok && ms[i] <= INT32_MAX;
        else
            ms_ok = ms_ok && ms[i] == 0; /* one canonical form */
        cf->milestones[i] = ms[i] <= INT32_MAX ? (int)ms[i] : -1;
    }
    nz_error ce;
    if (!ms_ok || nz_train_cfg_check(cf, &ce) != NZ_OK)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (state): bad training settings: %s",
                       name, si, ms_ok ? ce.msg : "unused milestone slots are not 0");
    if (s.epoch < 0 || s.epoch > cf->epochs)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (state): epoch %u of %d", name, si,
                       epoch, cf->epochs);
    if (!isfinite(s.last_loss) || !isfinite(s.last_train_err) || !isfinite(s.last_test_err) ||
        !isfinite(s.best_test_err) || !isfinite(s.epoch_loss_sum) || s.epoch_loss_sum < 0)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (state): non-finite progress values",
                       name, si);
    for (int k = 0; k < 3; k++)
        if (!rng_nonzero(r[k]))
            return nz_fail(err, NZ_ERR_FORMAT, "%s: section %u (state): RNG state %d is all zero",
                           name, si, k);
    if (n_params != (uint64_t)m->n_params)
        return nz_fail(err, NZ_ERR_SHAPE,
                       "%s: section %u (state): optimizer state for %llu parameters, the model "
                       "has %zu",
                       name, si, (unsigned long long)n_params, m->n_params);
    /* the arrays: n_params floats, the order count, n_order u32, nothing after */
    if (!fits(c.left, n_params, 4) || c.left - n_params * 4 < 4)
        return nz_fail(err, NZ_ERR_FORMAT,
                       "%s: section %u (state): %zu bytes left for %llu optimizer values", name,
                       si, c.left, (unsigned long long)n_params);
    const uint8_t *vel = cur_take(&c, (size_t)n_params * 4);
    uint32_t n_order = cur_u32(&c);
    if (n_order > INT32_MAX || !fits(c.left, n_order, 4) || c.left != (size_t)n_order * 4)
        return nz_fail(err, NZ_ERR_FORMAT,
                       "%s: section %u (state): %zu bytes left for an order of %u examples", name,
                       si, c.left, n_order);
    const uint8_t *ord = c.p;
    uint64_t want_steps = n_order ? ((uint64_t)n_order + (uint64_t)cf->batch - 1) / (uint64_t)cf->batch : 0;
    if (steps != want_steps || step > steps || seen > n_order || correct > seen ||
        (step == 0 && (seen != 0 || s.epoch_loss_sum != 0)))
        return nz_fail(err, NZ_ERR_FORMAT,
                       "%s: section %u (state): position step %llu of %llu (%llu seen) does not "
                       "fit %u examples in batches of %d",
                       name, si, (unsigned long long)step, (unsigned long long)steps,
                       (unsigned long long)seen, n_order, cf->batch);
    s.step = (long)step;
    s.steps = (long)steps;
    s.epoch_seen = (long)seen;
    s.epoch_correct = (long)correct;
    s.n_params = (size_t)n_params;
    s.n_order = (int)n_order;
    for (size_t j = 0; j < (size_t)n_params; j++)
        if (!isfinite(bits_f32(get_u32le(vel + 4 * j))))
            return nz_fail(err, NZ_ERR_FORMAT,
                           "%s: section %u (state): optimizer value %zu is not finite", name, si,
                           j);
    /* the order must be a permutation: each index once (the bitmap is n_order / 8 bytes, less
     * than the section holds) */
    uint8_t *seen_bits = calloc((size_t)n_order / 8 + 1, 1);
    if (!seen_bits) return nz_fail(err, NZ_ERR_NOMEM, "%s: out of memory", name);
    for (uint32_t j = 0; j < n_order; j++) {
        uint32_t v = get_u32le(ord + 4 * (size_t)j);
        if (v >= n_order || (seen_bits[v / 8] >> (v % 8) & 1)) {
            free(seen_bits);
            return nz_fail(err, NZ_ERR_FORMAT,
                           "%s: section %u (state): the data order is not a permutation of %u "
                           "examples (entry %u is %u)",
                           name, si, n_order, j, v);
        }
        seen_bits[v / 8] |= (uint8_t)(1u << (v % 8));
    }
    free(seen_bits);
    if (!out) return NZ_OK;
    s.velocity = malloc(sizeof(float) * (s.n_params ? s.n_params : 1));
    s.order = malloc(sizeof(int32_t) * (n_order ? n_order : 1));
    if (!s.velocity || !s.order) {
        nz_train_state_free(&s);
        return nz_fail(err, NZ_ERR_NOMEM, "%s: out of memory", name);
    }
    for (size_t j = 0; j < s.n_params; j++) s.velocity[j] = bits_f32(get_u32le(vel + 4 * j));
    for (uint32_t j = 0; j < n_order; j++) s.order[j] = (int32_t)get_u32le(ord + 4 * (size_t)j);
    *out = s;
    return NZ_OK;
}

/* ---------------------------------------------------------------- entry points */

/* The one parser behind every load. state NULL: a STATE section, if any, is validated and
 * ignored; else it is required and returned. */
static nz_status load_impl(const uint8_t *buf, size_t size, const char *name, nz_model *m,
                           nz_meta *meta, nz_train_state *state, nz_error *err) {
    if (!name) name = "(buffer)";
    if (meta) memset(meta, 0, sizeof *meta);
    if (state) memset(state, 0, sizeof *state);
    if (!m) return nz_fail(err, NZ_ERR_ARG, "%s: no model to load into", name);
    memset(m, 0, sizeof *m);
    if (!buf && size) return nz_fail(err, NZ_ERR_ARG, "%s: no buffer", name);
    if (!buf) buf = (const uint8_t *)"";
    container ct;
    nz_status st = container_open(&ct, buf, size, name, err);
    if (!st) st = graph_parse(&ct, m, err);
    if (!st) st = meta_parse(&ct, m, meta, err);
    if (!st) st = tensors_parse(&ct, m, err);
    if (!st) {
        nz_error verr;
        st = nz_model_validate(m, &verr);
        if (st) nz_fail(err, st, "%s: section %d (graph): %s", name, ct.graph_idx, verr.msg);
    }
    if (!st && ct.state_idx >= 0) st = state_parse(&ct, m, state, err);
    else if (!st && state)
        st = nz_fail(err, NZ_ERR_FORMAT,
                     "%s: not a checkpoint (no training state section): a finished model", name);
    container_close(&ct);
    if (st) {
        nz_model_free(m);
        if (meta) memset(meta, 0, sizeof *meta);
        if (state) nz_train_state_free(state);
    }
    return st;
}

nz_status nz_load_buffer(const uint8_t *buf, size_t size, const char *name, nz_model *m,
                         nz_meta *meta, nz_error *err) {
    return load_impl(buf, size, name, m, meta, NULL, err);
}

nz_status nz_load_checkpoint_buffer(const uint8_t *buf, size_t size, const char *name,
                                    nz_model *m, nz_meta *meta, nz_train_state *st,
                                    nz_error *err) {
    if (!st) return nz_fail(err, NZ_ERR_ARG, "%s: no state to load into", name ? name : "(buffer)");
    return load_impl(buf, size, name, m, meta, st, err);
}

/* Reads a whole regular file into memory. */
static nz_status read_file(const char *path, uint8_t **out, size_t *out_size, nz_error *err) {
    *out = NULL;
    *out_size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return nz_fail(err, NZ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        int e = errno;
        fclose(f);
        return nz_fail(err, NZ_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        fclose(f);
        return nz_fail(err, NZ_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        fclose(f);
        return nz_fail(err, NZ_ERR_IO, "%s: file too large to load", path);
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        fclose(f);
        return nz_fail(err, NZ_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, size);
    }
    errno = 0;
    size_t got = size ? fread(buf, 1, size, f) : 0;
    int e = errno;
    bool bad = got != size || ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return nz_fail(err, NZ_ERR_IO, "%s: cannot read: %s", path,
                       e ? strerror(e) : "file shrank while reading");
    }
    *out = buf;
    *out_size = size;
    return NZ_OK;
}

nz_status nz_load(const char *path, nz_model *m, nz_meta *meta, nz_error *err) {
    if (m) memset(m, 0, sizeof *m);
    if (meta) memset(meta, 0, sizeof *meta);
    if (!path) return nz_fail(err, NZ_ERR_ARG, "(no path): no file to load");
    uint8_t *buf;
    size_t size;
    nz_status st = read_file(path, &buf, &size, err);
    if (st) return st;
    st = nz_load_buffer(buf, size, path, m, meta, err);
    free(buf);
    return st;
}

nz_status nz_load_checkpoint(const char *path, nz_model *m, nz_meta *meta, nz_train_state *st,
                             nz_error *err) {
    if (m) memset(m, 0, sizeof *m);
    if (meta) memset(meta, 0, sizeof *meta);
    if (st) memset(st, 0, sizeof *st);
    if (!path) return nz_fail(err, NZ_ERR_ARG, "(no path): no file to load");
    uint8_t *buf;
    size_t size;
    nz_status rs = read_file(path, &buf, &size, err);
    if (rs) return rs;
    rs = nz_load_checkpoint_buffer(buf, size, path, m, meta, st, err);
    free(buf);
    return rs;
}

nz_status nz_file_stats_read(const char *path, nz_file_stats *stats, nz_error *err) {
    if (!path || !stats) return nz_fail(err, NZ_ERR_ARG, "(no path): bad arguments");
    memset(stats, 0, sizeof *stats);
    uint8_t *buf;
    size_t size;
    nz_status st = read_file(path, &buf, &size, err);
    if (st) return st;
    container ct;
    st = container_open(&ct, buf, size, path, err);
    for (uint32_t i = 0; !st && i < ct.n_sec; i++) {
        st = sec_check_crc(&ct, i, kind_name(ct.sec[i].kind), err);
        if (!st) stats->bytes_by_kind[ct.sec[i].kind] += ct.sec[i].len;
    }
    if (!st) {
        stats->version = NZF_VERSION;
        stats->n_sections = ct.n_sec;
        stats->file_size = size;
    } else {
        memset(stats, 0, sizeof *stats);
    }
    container_close(&ct);
    free(buf);
    return st;
}
