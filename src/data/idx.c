/* idx dataset reader (MNIST, Fashion-MNIST) and batch assembly.
 *
 * Files are read through zlib, which passes plain files through unchanged, so .gz and plain idx
 * files take the same path. Nothing in a header is trusted before it is checked: magic, dims,
 * and then that the file holds exactly the promised bytes (buffers grow as data actually arrives,
 * so a lying header cannot make us allocate gigabytes for a 16-byte file). */
#include "nnzip/data.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u /* ubyte, 3 dims */
#define IDX_MAGIC_LABELS 0x00000801u /* ubyte, 1 dim */
#define IDX_MAX_SIDE 4096u
#define IDX_MAX_COUNT 100000000u
#define FASHION_SYSTEM_DIR "/usr/share/datasets/fashion-mnist"

typedef struct {
    const char *path;
    gzFile gz;
} idx_file;

static nz_status idx_open(idx_file *f, const char *path, nz_error *err) {
    f->path = path;
    f->gz = NULL;
    /* open(2) first: gzopen does not reliably leave errno set, and we want strerror. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nz_fail(err, NZ_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return nz_fail(err, NZ_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) { /* a directory or fifo would fail later with a vaguer message */
        close(fd);
        return nz_fail(err, NZ_ERR_IO, "%s: %s", path,
                       S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
    }
    f->gz = gzdopen(fd, "rb");
    if (!f->gz) {
        close(fd);
        return nz_fail(err, NZ_ERR_NOMEM, "%s: cannot set up zlib reader", path);
    }
    gzbuffer(f->gz, 1u << 18); /* fewer syscalls/inflate calls on the 47 MB train set */
    return NZ_OK;
}

static void idx_close(idx_file *f) {
    if (f->gz) gzclose_r(f->gz);
    f->gz = NULL;
}

/* Reads up to n bytes; returns bytes read (short only at end of data) or -1 (err set). */
static long long idx_read(idx_file *f, void *buf, size_t n, nz_error *err) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got;
        if (want > (1u << 30)) want = 1u << 30; /* gzread takes an unsigned length */
        int r = gzread(f->gz, (char *)buf + got, (unsigned)want);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(f->gz, &zerr);
            /* zlib prefixes its own name for the stream ("<fd:3>: "); we name the path. */
            const char *colon = strncmp(msg, "<fd:", 4) == 0 ? strstr(msg, ": ") : NULL;
            if (colon) msg = colon + 2;
            nz_fail(err, NZ_ERR_CORRUPT, "%s: read failed: %s", f->path,
                    zerr == Z_ERRNO ? strerror(errno) : msg);
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    /* A gzip stream cut short reads as a clean short read plus a latched error; report it as
     * truncation by the caller rather than as an I/O error. */
    return (long long)got;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads the header of an idx file: magic plus ndim big-endian uint32 dims, each checked. */
static nz_status idx_header(idx_file *f, uint32_t magic, const char *what, int ndim,
                            uint32_t *dims, nz_error *err) {
    uint8_t h[16];
    size_t hn = 4 + 4 * (size_t)ndim;
    long long r = idx_read(f, h, hn, err);
    if (r < 0) return NZ_ERR_CORRUPT; /* the only failure idx_read reports */
    if (r < 4) return nz_fail(err, NZ_ERR_FORMAT, "%s: too short for an idx header (%lld bytes)",
                              f->path, r);
    uint32_t m = be32(h);
    if (m != magic)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: wrong idx magic 0x%08x (expected %s, 0x%08x)",
                       f->path, (unsigned)m, what, (unsigned)magic);
    if ((size_t)r < hn)
        return nz_fail(err, NZ_ERR_CORRUPT, "%s: truncated idx header (%lld of %zu bytes)",
                       f->path, r, hn);
    for (int i = 0; i < ndim; i++) {
        dims[i] = be32(h + 4 + 4 * i);
        uint32_t lim = i == 0 ? IDX_MAX_COUNT : IDX_MAX_SIDE;
        if (dims[i] == 0 || dims[i] > lim)
            return nz_fail(err, NZ_ERR_FORMAT, "%s: idx dim %d is %u (expected 1..%u)", f->path,
                           i, (unsigned)dims[i], (unsigned)lim);
    }
    return NZ_OK;
}

/* Reads exactly n payload bytes into a new buffer, then insists on end of file. */
static nz_status idx_payload(idx_file *f, size_t n, uint8_t **out, nz_error *err) {
    *out = NULL;
    size_t cap = n < (1u << 20) ? n : (1u << 20), have = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) return nz_fail(err, NZ_ERR_NOMEM, "%s: cannot allocate %zu bytes", f->path, cap);
    nz_status st = NZ_ERR_CORRUPT; /* what idx_read failures are */
    int zerr;
    for (;;) {
        long long r = idx_read(f, buf + have, cap - have, err);
        if (r < 0) goto fail;
        have += (size_t)r;
        if (have < cap) { /* end of data before the header's promise */
            gzerror(f->gz, &zerr);
            st = nz_fail(err, NZ_ERR_CORRUPT,
                         "%s: truncated: header promises %zu data bytes, file has %zu%s", f->path,
                         n, have, zerr == Z_BUF_ERROR ? " (gzip stream cut short)" : "");
            goto fail;
        }
        if (have == n) break;
        size_t ncap = cap > n / 2 ? n : cap * 2;
        uint8_t *nb = realloc(buf, ncap);
        if (!nb) {
            st = nz_fail(err, NZ_ERR_NOMEM, "%s: cannot allocate %zu bytes", f->path, ncap);
            goto fail;
        }
        buf = nb;
        cap = ncap;
    }
    uint8_t extra[64];
    long long r = idx_read(f, extra, sizeof extra, err);
    if (r < 0) goto fail;
    if (r > 0) {
        st = nz_fail(err, NZ_ERR_FORMAT,
                     "%s: %s%lld trailing bytes after the %zu data bytes the header promises",
                     f->path, r == (long long)sizeof extra ? "at least " : "", r, n);
        goto fail;
    }
    /* All data arrived but the gzip trailer (CRC, length) may be missing: zlib reports that
     * only as a soft error at end of stream. */
    gzerror(f->gz, &zerr);
    if (zerr == Z_BUF_ERROR) {
        st = nz_fail(err, NZ_ERR_CORRUPT, "%s: truncated: gzip stream cut short after the data",
                     f->path);
        goto fail;
    }
    *out = buf;
    return NZ_OK;
fail:
    free(buf);
    return st;
}

/* n_classes: 0 = infer as max label + 1; else every label must be < n_classes. */
static nz_status load_pair(const char *images_path, const char *labels_path, int n_classes,
                           nz_dataset *ds, nz_error *err) {
    memset(ds, 0, sizeof *ds);
    idx_file f = {0};
    uint8_t *images = NULL, *labels = NULL;
    uint32_t idims[3] = {0}, ldims[1] = {0};
    nz_status st;

    /* Labels first: a small file, so a count mismatch fails before inflating 47 MB. */
    if ((st = idx_open(&f, labels_path, err))) goto out;
    if ((st = idx_header(&f, IDX_MAGIC_LABELS, "labels", 1, ldims, err))) goto out;
    if ((st = idx_payload(&f, ldims[0], &labels, err))) goto out;
    idx_close(&f);

    if ((st = idx_open(&f, images_path, err))) goto out;
    if ((st = idx_header(&f, IDX_MAGIC_IMAGES, "images", 3, idims, err))) goto out;
    if (idims[0] != ldims[0]) {
        st = nz_fail(err, NZ_ERR_FORMAT, "%s: %u images but %s has %u labels", images_path,
                     (unsigned)idims[0], labels_path, (unsigned)ldims[0]);
        goto out;
    }
    if ((st = idx_payload(&f, (size_t)idims[0] * idims[1] * idims[2], &images, err))) goto out;
    idx_close(&f);

    int max_label = 0;
    for (uint32_t i = 0; i < ldims[0]; i++) {
        if (n_classes > 0 && labels[i] >= n_classes) {
            st = nz_fail(err, NZ_ERR_FORMAT, "%s: label %d at index %u is out of range (%d classes)",
                         labels_path, labels[i], (unsigned)i, n_classes);
            goto out;
        }
        if (labels[i] > max_label) max_label = labels[i];
    }

    snprintf(ds->name, sizeof ds->name, "%s", images_path);
    ds->n = (int)idims[0];
    ds->shape = (nz_shape){1, (int)idims[1], (int)idims[2]};
    ds->n_classes = n_classes > 0 ? n_classes : max_label + 1;
    ds->images = images;
    ds->labels = labels;
    return NZ_OK;
out:
    idx_close(&f);
    free(images);
    free(labels);
    return st;
}

nz_status nz_idx_load(const char *images_path, const char *labels_path, nz_dataset *ds,
                      nz_error *err) {
    return load_pair(images_path, labels_path, 0, ds, err);
}

void nz_data_default_dir(char *buf, size_t n) {
    const char *d = getenv("NNZIP_DATA_DIR");
    if (d && *d) {
        snprintf(buf, n, "%s", d);
        return;
    }
    /* XDG says relative values are to be ignored. */
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && x[0] == '/') {
        snprintf(buf, n, "%s/nnzip/data", x);
        return;
    }
    const char *h = getenv("HOME");
    snprintf(buf, n, "%s/.cache/nnzip/data", h && *h ? h : ".");
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Finds base or base.gz in dir; writes the path found (or the plain path if neither). */
static int find_idx(const char *dir, const char *base, char *out, size_t n) {
    snprintf(out, n, "%s/%s", dir, base);
    if (is_file(out)) return 1;
    snprintf(out, n, "%s/%s.gz", dir, base);
    if (is_file(out)) return 1;
    snprintf(out, n, "%s/%s", dir, base);
    return 0;
}

/* 0: neither file, 1: only one (missing one's path in the err), 2: both. */
static int find_pair(const char *dir, int train, char *img, char *lab, size_t n) {
    const char *pre = train ? "train" : "t10k";
    char b[32];
    snprintf(b, sizeof b, "%s-images-idx3-ubyte", pre);
    int hi = find_idx(dir, b, img, n);
    snprintf(b, sizeof b, "%s-labels-idx1-ubyte", pre);
    int hl = find_idx(dir, b, lab, n);
    return hi + hl;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

nz_status nz_data_open(const char *spec, const char *data_dir, int train, nz_dataset *ds,
                       nz_error *err) {
    memset(ds, 0, sizeof *ds);
    if (!spec || !*spec) return nz_fail(err, NZ_ERR_ARG, "no dataset given");
    const char *split = train ? "train" : "t10k";
    char dir[4096], img[4200], lab[4200];
    int named = strcmp(spec, "mnist") == 0 || strcmp(spec, "fashion-mnist") == 0;

    /* CIFAR-10 has its own reader: "cifar10:DIR", or plain "cifar10" for DATA_DIR/cifar10 */
    if (strncmp(spec, "cifar10:", 8) == 0 || strcmp(spec, "cifar10") == 0) {
        if (spec[7] == ':' && !spec[8])
            return nz_fail(err, NZ_ERR_ARG, "cifar10: no directory given (expected cifar10:DIR)");
        char base[4000];
        if (spec[7] == ':')
            snprintf(dir, sizeof dir, "%s", spec + 8);
        else {
            if (data_dir && *data_dir)
                snprintf(base, sizeof base, "%s", data_dir);
            else
                nz_data_default_dir(base, sizeof base);
            snprintf(dir, sizeof dir, "%s/cifar10", base);
        }
        nz_status st = nz_cifar10_load(dir, train, ds, err);
        /* the spec as given, so a model's stored data name reopens the same files */
        if (!st && strlen(spec) < sizeof ds->name) snprintf(ds->name, sizeof ds->name, "%s", spec);
        return st;
    }

    if (named) {
        char base[4000];
        if (data_dir && *data_dir)
            snprintf(base, sizeof base, "%s", data_dir);
        else
            nz_data_default_dir(base, sizeof base);
        snprintf(dir, sizeof dir, "%s/%s", base, spec);
    } else if (is_dir(spec)) {
        snprintf(dir, sizeof dir, "%s", spec);
    } else {
        return nz_fail(err, NZ_ERR_ARG,
                       "unknown dataset '%s' (expected mnist, fashion-mnist, cifar10[:DIR] or a "
                       "directory of idx files)",
                       spec);
    }

    int found = find_pair(dir, train, img, lab, sizeof img);
    if (found < 2 && strcmp(spec, "fashion-mnist") == 0) {
        /* Debian's dataset-fashion-mnist package; only used if it is complete. */
        char simg[sizeof img], slab[sizeof lab];
        if (find_pair(FASHION_SYSTEM_DIR, train, simg, slab, sizeof simg) == 2) {
            memcpy(img, simg, sizeof img);
            memcpy(lab, slab, sizeof lab);
            found = 2;
        } else if (found == 0) {
            return nz_fail(err, NZ_ERR_IO,
                           "fashion-mnist: no %s idx files in %s or %s (run scripts/setup.sh, or "
                           "pass --data-dir)", split, dir, FASHION_SYSTEM_DIR);
        }
    }
    if (found == 0)
        return nz_fail(err, NZ_ERR_IO,
                       "%s: no %s idx files in %s (run scripts/setup.sh, or pass --data-dir)",
                       named ? spec : "dataset", split, dir);
    if (found == 1) {
        /* find_idx left the plain name in the missing slot */
        const char *miss = is_file(img) ? lab : img;
        return nz_fail(err, NZ_ERR_IO, "%s[.gz]: not found (its partner file is there)", miss);
    }

    nz_status st = load_pair(img, lab, named ? 10 : 0, ds, err);
    if (st) return st;
    snprintf(ds->name, sizeof ds->name, "%s", spec);
    return NZ_OK;
}

void nz_dataset_free(nz_dataset *ds) {
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    ds->images = NULL;
    ds->labels = NULL;
    ds->n = 0;
}

void nz_dataset_limit(nz_dataset *ds, int n) {
    if (n <= 0 || n >= ds->n) return;
    ds->n = n;
    /* Give the memory back; if the shrink fails the old block is still valid. */
    uint8_t *p = realloc(ds->images, (size_t)n * nz_shape_size(ds->shape));
    if (p) ds->images = p;
    p = realloc(ds->labels, (size_t)n);
    if (p) ds->labels = p;
}

nz_status nz_dataset_split(nz_dataset *ds, int n_val, nz_dataset *val, nz_error *err) {
    memset(val, 0, sizeof *val);
    if (n_val <= 0 || n_val >= ds->n)
        return nz_fail(err, NZ_ERR_ARG, "%s: cannot hold out %d of %d examples for validation",
                       ds->name, n_val, ds->n);
    const size_t per = nz_shape_size(ds->shape), keep = (size_t)(ds->n - n_val);
    *val = *ds;
    val->n = n_val;
    val->images = malloc(per * (size_t)n_val);
    val->labels = malloc((size_t)n_val);
    if (!val->images || !val->labels) {
        nz_dataset_free(val);
        return nz_fail(err, NZ_ERR_NOMEM, "out of memory");
    }
    memcpy(val->images, ds->images + keep * per, per * (size_t)n_val);
    memcpy(val->labels, ds->labels + keep, (size_t)n_val);
    nz_dataset_limit(ds, (int)keep);
    return NZ_OK;
}

void nz_batch_fill(const nz_dataset *ds, const nz_preproc *pre, const int32_t *idx, int B,
                   float *x, uint8_t *y) {
    const int C = ds->shape.c;
    const size_t hw = (size_t)ds->shape.h * (size_t)ds->shape.w;
    const size_t per = (size_t)C * hw;
    const float scale = pre->scale;
    for (int b = 0; b < B; b++) {
        assert(idx[b] >= 0 && idx[b] < ds->n);
        const uint8_t *src = ds->images + (size_t)idx[b] * per;
        float *dst = x + (size_t)b * per;
        for (int c = 0; c < C; c++) {
            const int has = c < pre->n_ch && c < 4;
            const float m = has ? pre->mean[c] : 0.0f;
            const float s = has ? pre->std[c] : 1.0f;
            const uint8_t *sp = src + (size_t)c * hw;
            float *dp = dst + (size_t)c * hw;
            /* The documented formula verbatim (divide, not multiply by 1/std) so every command
             * and any reference implementation get bit-identical inputs. */
            for (size_t i = 0; i < hw; i++) dp[i] = ((float)sp[i] * scale - m) / s;
        }
        if (y) y[b] = ds->labels[idx[b]];
    }
}
