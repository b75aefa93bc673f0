/* .nnz writer (layout in include/nnzip/format.h).
 *
 * Every field goes through an explicit little-endian byte writer, so the file is the same on any
 * host. The file is written to "<path>.tmp.XXXXXX" in the destination directory, synced, and
 * renamed over path: readers see either the old file or the complete new one, never a mix. */
#include "nnzip/format.h"
#include "nnzip/compress.h"
#include "core/half.h"
#include "format/kernels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

static const uint8_t nzf_magic[8] = {0x89, 'N', 'N', 'Z', 0x0D, 0x0A, 0x1A, 0x0A};

/* ---------------------------------------------------------------- little-endian bytes */

static void put_u16le(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32le(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64le(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u); /* bit copy: NaN payloads and -0 survive the round trip */
    return u;
}

/* zlib's crc32 takes a uInt length; feed large buffers in pieces. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    while (n > 0) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, p, k);
        p += k;
        n -= k;
    }
    return crc;
}

/* ---------------------------------------------------------------- growable byte buffer */

/* META and GRAPH are built in memory (they are small); a failed allocation is sticky and
 * checked once at the end. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
    int oom;
} byte_buf;

static uint8_t *buf_grow(byte_buf *b, size_t n) {
    if (b->oom) return NULL;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return NULL;
            }
            cap *= 2;
        }
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            b->oom = 1;
            return NULL;
        }
        b->data = d;
        b->cap = cap;
    }
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}

static void buf_u16(byte_buf *b, uint16_t v) {
    uint8_t *p = buf_grow(b, 2);
    if (p) put_u16le(p, v);
}

static void buf_u32(byte_buf *b, uint32_t v) {
    uint8_t *p = buf_grow(b, 4);
    if (p) put_u32le(p, v);
}

static void buf_u64(byte_buf *b, uint64_t v) {
    uint8_t *p = buf_grow(b, 8);
    if (p) put_u64le(p, v);
}

static void buf_i32(byte_buf *b, int32_t v) { buf_u32(b, (uint32_t)v); }

static void buf_f32(byte_buf *b, float v) { buf_u32(b, f32_bits(v)); }

static void buf_f64(byte_buf *b, double v) {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    buf_u64(b, u);
}

static void buf_bytes(byte_buf *b, const void *src, size_t n) {
    uint8_t *p = buf_grow(b, n);
    if (p && n) memcpy(p, src, n);
}

/* ---------------------------------------------------------------- sections */

static void meta_entry(byte_buf *b, const char *key, const char *val, size_t val_len) {
    size_t kl = strlen(key);
    buf_u16(b, (uint16_t)kl);
    buf_bytes(b, key, kl);
    buf_u32(b, (uint32_t)val_len);
    buf_bytes(b, val, val_len);
}

/* arch and created_by are written from the model and this library; the caller's entries with
 * those keys are skipped so a loaded-then-saved meta never duplicates them. */
static int meta_is_reserved(const char *key) {
    return strcmp(key, "arch") == 0 || strcmp(key, "created_by") == 0;
}

static nz_status meta_build(byte_buf *b, const nz_model *m, const nz_meta *meta,
                            const char *path, nz_error *err) {
    uint32_t count = 2;
    int n = meta ? meta->n : 0;
    if (n < 0 || n > (int)NZF_MAX_META)
        return nz_fail(err, NZ_ERR_ARG, "%s: cannot save: meta count %d out of range", path, n);
    for (int i = 0; i < n; i++) {
        if (!memchr(meta->key[i], 0, sizeof meta->key[i]) ||
            !memchr(meta->val[i], 0, sizeof meta->val[i]) || meta->key[i][0] == 0)
            return nz_fail(err, NZ_ERR_ARG, "%s: cannot save: meta entry %d is malformed", path,
                           i);
        if (!meta_is_reserved(meta->key[i])) count++;
    }
    if (count > NZF_MAX_META)
        return nz_fail(err, NZ_ERR_ARG, "%s: cannot save: %u meta entries (at most %u)", path,
                       count, NZF_MAX_META);
    buf_u32(b, count);
    size_t al = strnlen(m->arch, sizeof m->arch);
    meta_entry(b, "arch", m->arch, al);
    meta_entry(b, "created_by", "nnzip", 5);
    for (int i = 0; i < n; i++)
        if (!meta_is_reserved(meta->key[i]))
            meta_entry(b, meta->key[i], meta->val[i], strlen(meta->val[i]));
    return NZ_OK;
}

static void graph_build(byte_buf *b, const nz_model *m) {
    buf_u32(b, (uint32_t)m->in.c);
    buf_u32(b, (uint32_t)m->in.h);
    buf_u32(b, (uint32_t)m->in.w);
    buf_u32(b, (uint32_t)m->n_classes);
    buf_f32(b, m->pre.scale);
    buf_u32(b, (uint32_t)m->pre.n_ch);
    for (int c = 0; c < 4; c++) buf_f32(b, m->pre.mean[c]);
    for (int c = 0; c < 4; c++) buf_f32(b, m->pre.std[c]);
    buf_u32(b, (uint32_t)m->n_nodes);
    for (int i = 0; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        buf_u32(b, (uint32_t)n->op);
        /* NUL padded: copy only up to the terminator so stale bytes never reach the file */
        uint8_t name[NZ_NAME_MAX] = {0};
        memcpy(name, n->name, strnlen(n->name, sizeof n->name));
        buf_bytes(b, name, sizeof name);
        buf_u32(b, (uint32_t)n->n_inputs);
        /* unused input slots are written as -1 whatever the struct holds: one canonical form */
        for (int k = 0; k < NZ_MAX_INPUTS; k++)
            buf_i32(b, k < n->n_inputs ? (int32_t)n->inputs[k] : -1);
        buf_u32(b, (uint32_t)n->units);
        buf_u32(b, (uint32_t)n->kh);
        buf_u32(b, (uint32_t)n->kw);
        buf_u32(b, (uint32_t)n->stride);
        buf_u32(b, (uint32_t)n->pad);
        buf_f32(b, n->p);
        buf_u32(b, (uint32_t)n->n_params);
        for (int k = 0; k < n->n_params; k++) {
            const nz_param *p = &n->params[k];
            buf_u32(b, (uint32_t)p->ndim);
            for (int d = 0; d < NZ_MAX_DIMS; d++)
                buf_u32(b, d < p->ndim ? (uint32_t)p->dims[d] : 0u);
        }
    }
}

/* ---------------------------------------------------------------- output file */

typedef struct {
    FILE *f;
    int err; /* first errno seen; 0 while all writes succeed */
} out_file;

static void out_write(out_file *o, const void *p, size_t n) {
    if (o->err || n == 0) return;
    errno = 0;
    if (fwrite(p, 1, n, o->f) != n) o->err = errno ? errno : EIO;
}

/* Streams one tensor section (16-byte header + payload) and returns its CRC and length.
 * Dense tensors are converted through a small stack buffer, so saving never doubles the model's
 * memory; sparse ones are encoded (relative indices, codebook codes, Huffman) first, and so are
 * conv weights stored as KERNELS (smaller than their dense form by construction). */
static uint32_t tensor_write(out_file *o, const nz_model *m, int node, int slot, uint64_t *len,
                             nz_status *st, nz_error *err) {
    const nz_param *p = &m->nodes[node].params[slot];
    uint8_t chunk[4096 * 4];
    uint8_t *kbuf = NULL; /* a conv weight without its zero kernels, when that is smaller */
    size_t klen = 0;
    if (!p->sparse && (*st = nz_kernels_encode(m, node, slot, &kbuf, &klen, err))) return 0;
    uint32_t enc = p->sparse ? NZF_ENC_SPARSE
                   : kbuf    ? NZF_ENC_KERNELS
                   : p->store == NZ_STORE_F16 ? NZF_ENC_F16
                                              : NZF_ENC_F32;
    put_u32le(chunk, (uint32_t)node);
    put_u32le(chunk + 4, (uint32_t)slot);
    put_u32le(chunk + 8, enc);
    put_u32le(chunk + 12, 0);
    uint32_t crc = crc32_update((uint32_t)crc32(0L, Z_NULL, 0), chunk, 16);
    out_write(o, chunk, 16);
    *len = 16;
    if (enc == NZF_ENC_SPARSE || enc == NZF_ENC_KERNELS) {
        uint8_t *buf = kbuf;
        size_t n = klen;
        if (enc == NZF_ENC_SPARSE && (*st = nz_sparse_encode(p->sparse, &buf, &n, err))) return 0;
        crc = crc32_update(crc, buf, n);
        out_write(o, buf, n);
        free(buf);
        *len += n;
        return crc;
    }
    const float *src = m->params + p->off;
    const size_t width = enc == NZF_ENC_F16 ? 2 : 4;
    for (size_t i = 0; i < p->n;) {
        size_t k = p->n - i < 4096 ? p->n - i : 4096;
        if (width == 2)
            for (size_t j = 0; j < k; j++) put_u16le(chunk + 2 * j, nz_f32_to_f16(src[i + j]));
        else
            for (size_t j = 0; j < k; j++) put_u32le(chunk + 4 * j, f32_bits(src[i + j]));
        crc = crc32_update(crc, chunk, width * k);
        out_write(o, chunk, width * k);
        i += k;
    }
    *len += (uint64_t)p->n * width;
    return crc;
}

/* The fixed-size head of a STATE section (everything before the velocity array). */
static void state_head_build(byte_buf *b, const nz_train_state *st) {
    const nz_train_cfg *c = &st->cfg;
    buf_u32(b, 1); /* state version */
    buf_u32(b, (uint32_t)st->epoch);
    buf_u64(b, (uint64_t)st->step);
    buf_u64(b, (uint64_t)st->steps);
    buf_u32(b, (uint32_t)c->epochs);
    buf_u32(b, (uint32_t)c->batch);
    buf_f32(b, c->lr);
    buf_f32(b, c->momentum);
    buf_f32(b, c->weight_decay);
    buf_u32(b, (uint32_t)c->nesterov);
    buf_u32(b, (uint32_t)c->sched);
    buf_u32(b, (uint32_t)c->step_epochs);
    buf_f32(b, c->step_gamma);
    buf_u32(b, (uint32_t)c->warmup_epochs);
    buf_u32(b, (uint32_t)c->n_milestones);
    for (int i = 0; i < NZ_MAX_MILESTONES; i++)
        buf_u32(b, i < c->n_milestones ? (uint32_t)c->milestones[i] : 0u);
    buf_f32(b, c->label_smoothing);
    buf_u32(b, (uint32_t)c->augment.crop_pad);
    buf_u32(b, (uint32_t)c->augment.flip);
    buf_u64(b, c->seed);
    buf_u32(b, (uint32_t)c->eval_every);
    buf_f32(b, st->last_loss);
    buf_f32(b, st->last_train_err);
    buf_f32(b, st->last_test_err);
    buf_f32(b, st->best_test_err);
    buf_f64(b, st->epoch_loss_sum);
    buf_u64(b, (uint64_t)st->epoch_seen);
    buf_u64(b, (uint64_t)st->epoch_correct);
    const nz_rng *r[3] = {&st->shuffle_rng, &st->drop_rng, &st->aug_rng};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 4; i++) buf_u64(b, r[k]->s[i]);
    buf_u64(b, (uint64_t)st->n_params);
}

/* The reader's structural checks, made at save time too: a caller's inconsistent state fails
 * here, naming the file, rather than when someone tries to resume from it. */
static nz_status state_check(const nz_model *m, const nz_train_state *st, const char *path,
                             nz_error *err) {
    nz_error ce;
    if (nz_train_cfg_check(&st->cfg, &ce))
        return nz_fail(err, NZ_ERR_ARG, "%s: cannot save the training state: %s", path, ce.msg);
    long want_steps = st->n_order > 0 ? (st->n_order + (long)st->cfg.batch - 1) / st->cfg.batch : 0;
    if (st->n_params != m->n_params || !st->velocity || st->n_order < 0 ||
        (st->n_order > 0 && !st->order) || st->epoch < 0 || st->epoch > st->cfg.epochs ||
        st->steps != want_steps || st->step < 0 || st->step > st->steps || st->epoch_seen < 0 ||
        st->epoch_correct < 0)
        return nz_fail(err, NZ_ERR_ARG,
                       "%s: cannot save: inconsistent training state (%zu parameters for a model "
                       "of %zu, epoch %d of %d, step %ld of %ld)",
                       path, st->n_params, m->n_params, st->epoch, st->cfg.epochs, st->step,
                       st->steps);
    return NZ_OK;
}

/* Streams a STATE section and returns its CRC and length. */
static uint32_t state_write(out_file *o, const nz_train_state *st, const byte_buf *head,
                            uint64_t *len) {
    uint8_t chunk[4096 * 4];
    uint32_t crc = crc32_update(0, head->data, head->len);
    out_write(o, head->data, head->len);
    *len = head->len;
    for (size_t i = 0; i < st->n_params;) {
        size_t k = st->n_params - i < 4096 ? st->n_params - i : 4096;
        for (size_t j = 0; j < k; j++) put_u32le(chunk + 4 * j, f32_bits(st->velocity[i + j]));
        crc = crc32_update(crc, chunk, 4 * k);
        out_write(o, chunk, 4 * k);
        i += k;
    }
    put_u32le(chunk, (uint32_t)st->n_order);
    crc = crc32_update(crc, chunk, 4);
    out_write(o, chunk, 4);
    for (size_t i = 0; i < (size_t)st->n_order;) {
        size_t k = (size_t)st->n_order - i < 4096 ? (size_t)st->n_order - i : 4096;
        for (size_t j = 0; j < k; j++) put_u32le(chunk + 4 * j, (uint32_t)st->order[i + j]);
        crc = crc32_update(crc, chunk, 4 * k);
        out_write(o, chunk, 4 * k);
        i += k;
    }
    *len += 4 * (uint64_t)st->n_params + 4 + 4 * (uint64_t)st->n_order;
    return crc;
}

/* Replaces b's bytes by u32 raw length + zlib stream when that is smaller; returns the flag. */
static uint32_t deflate_section(byte_buf *b) {
    if (b->oom || b->len < 64) return 0;
    uLongf cap = compressBound((uLong)b->len);
    uint8_t *z = malloc(4 + (size_t)cap);
    if (!z) return 0;
    if (compress2(z + 4, &cap, b->data, (uLong)b->len, 9) != Z_OK || 4 + (size_t)cap >= b->len) {
        free(z);
        return 0;
    }
    put_u32le(z, (uint32_t)b->len);
    free(b->data);
    b->data = z;
    b->len = 4 + (size_t)cap;
    b->cap = b->len;
    return NZF_SECFLAG_DEFLATE;
}

static void entry_put(uint8_t *e, uint32_t kind, uint32_t flags, uint64_t off, uint64_t len,
                      uint32_t crc) {
    put_u32le(e, kind);
    put_u32le(e + 4, flags);
    put_u64le(e + 8, off);
    put_u64le(e + 16, len);
    put_u32le(e + 24, crc);
    put_u32le(e + 28, 0);
}

/* Best effort: makes the rename itself durable. The new file is already complete and in place,
 * so a failure here is not reported. */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = NULL;
    if (!slash) {
        dir = strdup(".");
    } else if (slash == path) {
        dir = strdup("/");
    } else {
        dir = malloc((size_t)(slash - path) + 1);
        if (dir) {
            memcpy(dir, path, (size_t)(slash - path));
            dir[slash - path] = 0;
        }
    }
    if (!dir) return;
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* nz_save, plus a STATE section when state is non-NULL (a checkpoint). */
static nz_status save_impl(const nz_model *m, const nz_meta *meta, const nz_train_state *state,
                           const char *path, nz_error *err) {
    if (!m || !path || !*path)
        return nz_fail(err, NZ_ERR_ARG, "%s: cannot save: no model or path",
                       path && *path ? path : "(no path)");
    nz_error verr;
    nz_status st = nz_model_validate(m, &verr);
    if (st) return nz_fail(err, st, "%s: cannot save an invalid model: %s", path, verr.msg);
    if ((unsigned)m->n_nodes > NZF_MAX_NODES)
        return nz_fail(err, NZ_ERR_ARG, "%s: cannot save: %d nodes (the format allows %u)", path,
                       m->n_nodes, NZF_MAX_NODES);

    if (state && (st = state_check(m, state, path, err))) return st;
    /* section table: META, GRAPH, then one TENSOR per (node, slot) in node order, then STATE */
    uint32_t n_sec = state ? 3 : 2;
    for (int i = 0; i < m->n_nodes; i++) n_sec += (uint32_t)m->nodes[i].n_params;
    if (n_sec > NZF_MAX_SECTIONS)
        return nz_fail(err, NZ_ERR_ARG, "%s: cannot save: %u sections (at most %u)", path, n_sec,
                       NZF_MAX_SECTIONS);

    byte_buf metab = {0}, graphb = {0}, stateb = {0};
    uint8_t *head = NULL;
    char *tmp = NULL;
    FILE *f = NULL;
    int fd = -1;
    st = meta_build(&metab, m, meta, path, err);
    if (st) goto done;
    graph_build(&graphb, m);
    if (state) state_head_build(&stateb, state);
    size_t head_len = NZF_HEADER_SIZE + (size_t)n_sec * NZF_ENTRY_SIZE;
    head = calloc(1, head_len);
    size_t plen = strlen(path);
    tmp = malloc(plen + sizeof ".tmp.XXXXXX");
    if (metab.oom || graphb.oom || stateb.oom || !head || !tmp) {
        st = nz_fail(err, NZ_ERR_NOMEM, "%s: cannot save: out of memory", path);
        goto done;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");

    fd = mkstemp(tmp);
    if (fd < 0) {
        st = nz_fail(err, NZ_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        free(tmp); /* nothing was created: skip the unlink below */
        tmp = NULL;
        goto done;
    }
    /* mkstemp creates 0600; a model file is an ordinary shareable output. Failure (e.g. on
     * filesystems without permissions) leaves a private but valid file, so it is ignored. */
    (void)fchmod(fd, 0644);
    f = fdopen(fd, "wb");
    if (!f) {
        st = nz_fail(err, NZ_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        close(fd);
        goto done;
    }
    fd = -1; /* owned by f now */

    out_file o = {f, 0};
    /* the header and table hold CRCs of what follows: write a placeholder, stream the
     * sections, then seek back and fill it in */
    out_write(&o, head, head_len);
    uint64_t off = head_len;
    uint8_t *e = head + NZF_HEADER_SIZE;
    uint32_t meta_flags = deflate_section(&metab), graph_flags = deflate_section(&graphb);
    entry_put(e, NZF_SEC_META, meta_flags, off, metab.len, crc32_update(0, metab.data, metab.len));
    out_write(&o, metab.data, metab.len);
    off += metab.len;
    e += NZF_ENTRY_SIZE;
    entry_put(e, NZF_SEC_GRAPH, graph_flags, off, graphb.len,
              crc32_update(0, graphb.data, graphb.len));
    out_write(&o, graphb.data, graphb.len);
    off += graphb.len;
    e += NZF_ENTRY_SIZE;
    for (int i = 0; i < m->n_nodes; i++) {
        for (int k = 0; k < m->nodes[i].n_params; k++) {
            uint64_t len;
            nz_status tst = NZ_OK;
            uint32_t crc = tensor_write(&o, m, i, k, &len, &tst, err);
            if (tst) {
                st = tst;
                goto done;
            }
            entry_put(e, NZF_SEC_TENSOR, 0, off, len, crc);
            off += len;
            e += NZF_ENTRY_SIZE;
        }
    }
    if (state) {
        uint64_t len;
        uint32_t crc = state_write(&o, state, &stateb, &len);
        entry_put(e, NZF_SEC_STATE, 0, off, len, crc);
        off += len;
        e += NZF_ENTRY_SIZE;
    }
    memcpy(head, nzf_magic, 8);
    put_u32le(head + 8, NZF_VERSION);
    put_u32le(head + 12, n_sec);
    put_u32le(head + 16, 0);
    put_u32le(head + 20, crc32_update(0, head + NZF_HEADER_SIZE, head_len - NZF_HEADER_SIZE));
    if (!o.err && fseek(f, 0, SEEK_SET) != 0) o.err = errno ? errno : EIO;
    out_write(&o, head, head_len);
    if (!o.err && fflush(f) != 0) o.err = errno ? errno : EIO;
    if (!o.err && fsync(fileno(f)) != 0) o.err = errno ? errno : EIO;
    errno = 0;
    if (fclose(f) != 0 && !o.err) o.err = errno ? errno : EIO;
    f = NULL;
    if (o.err) {
        st = nz_fail(err, NZ_ERR_IO, "%s: cannot write: %s", path, strerror(o.err));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        st = nz_fail(err, NZ_ERR_IO, "%s: cannot write: cannot rename %s into place: %s", path,
                     tmp, strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL; /* renamed: nothing to clean up */
    sync_parent_dir(path);
    st = NZ_OK;

done:
    if (f) fclose(f);
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(head);
    free(metab.data);
    free(graphb.data);
    free(stateb.data);
    return st;
}

nz_status nz_save(const nz_model *m, const nz_meta *meta, const char *path, nz_error *err) {
    return save_impl(m, meta, NULL, path, err);
}

nz_status nz_save_checkpoint(const nz_model *m, const nz_meta *meta, const nz_train_state *st,
                             const char *path, nz_error *err) {
    if (!st)
        return nz_fail(err, NZ_ERR_ARG, "%s: cannot save a checkpoint: no training state",
                       path && *path ? path : "(no path)");
    return save_impl(m, meta, st, path, err);
}
