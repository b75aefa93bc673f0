/* CIFAR-10 binary reader (cifar-10-batches-bin) and per-channel dataset statistics.
 *
 * The binary files have no header: each is a run of 3073-byte records, a label byte followed by
 * the 3x32x32 image already in our [c, h, w] layout (1024 R, 1024 G, 1024 B, row-major). So
 * the structure to check is the file size (a whole, non-zero number of records) and each label.
 * Sizes come from fstat on the open file (no separate stat that could race), the arrays are
 * sized once from them, and every fread is checked, so a file that changes under us fails. */
#include "nnzip/data.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CIFAR_SIDE 32
#define CIFAR_CH 3
#define CIFAR_PIXELS (CIFAR_CH * CIFAR_SIDE * CIFAR_SIDE) /* 3072 */
#define CIFAR_RECORD (1 + CIFAR_PIXELS)                   /* 3073 */
#define CIFAR_CLASSES 10
#define CIFAR_TRAIN_FILES 5
#define CIFAR_PATH_MAX 4200

typedef struct {
    char path[CIFAR_PATH_MAX];
    FILE *f;
    size_t records;
} cifar_file;

/* Opens dir/base and counts its records. An optional file that does not exist is not an error:
 * it returns NZ_OK with cf->f == NULL (and leaves err alone). On failure cf->f is NULL. */
static nz_status cifar_open(cifar_file *cf, const char *dir, const char *base, int optional,
                            nz_error *err) {
    cf->f = NULL;
    cf->records = 0;
    int len = snprintf(cf->path, sizeof cf->path, "%s/%s", dir, base);
    if (len < 0 || (size_t)len >= sizeof cf->path)
        return nz_fail(err, NZ_ERR_ARG, "cifar10: directory path too long (%zu bytes)",
                       strlen(dir));
    FILE *f = fopen(cf->path, "rb");
    if (!f) {
        int e = errno;
        if (optional && e == ENOENT) return NZ_OK;
        return nz_fail(err, NZ_ERR_IO, "%s: %s%s", cf->path, strerror(e),
                       e == ENOENT ? " (expected the CIFAR-10 binary version, cifar-10-batches-bin)"
                                   : "");
    }
    struct stat st;
    nz_status s = NZ_OK;
    if (fstat(fileno(f), &st) != 0) {
        s = nz_fail(err, NZ_ERR_IO, "%s: %s", cf->path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        s = nz_fail(err, NZ_ERR_IO, "%s: %s", cf->path,
                    S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
    } else if (st.st_size <= 0 || st.st_size % CIFAR_RECORD != 0) {
        s = nz_fail(err, NZ_ERR_FORMAT,
                    "%s: size %lld bytes is not a positive multiple of the %d-byte CIFAR-10 "
                    "record (1 label + %d pixels)",
                    cf->path, (long long)st.st_size, CIFAR_RECORD, CIFAR_PIXELS);
    } else if (st.st_size / CIFAR_RECORD > INT_MAX) {
        s = nz_fail(err, NZ_ERR_FORMAT, "%s: size %lld bytes is too many records", cf->path,
                    (long long)st.st_size);
    }
    if (s) {
        fclose(f);
        return s;
    }
    cf->f = f;
    cf->records = (size_t)(st.st_size / CIFAR_RECORD);
    return NZ_OK;
}

/* Reads all of cf's records into images [records, 3, 32, 32] and labels [records]. */
static nz_status cifar_read(const cifar_file *cf, uint8_t *images, uint8_t *labels,
                            nz_error *err) {
    for (size_t r = 0; r < cf->records; r++) {
        if (fread(labels + r, 1, 1, cf->f) != 1 ||
            fread(images + r * CIFAR_PIXELS, 1, CIFAR_PIXELS, cf->f) != CIFAR_PIXELS) {
            if (ferror(cf->f))
                return nz_fail(err, NZ_ERR_IO, "%s: read failed in record %zu: %s", cf->path, r,
                               strerror(errno));
            return nz_fail(err, NZ_ERR_CORRUPT,
                           "%s: truncated in record %zu of %zu (file shrank while reading?)",
                           cf->path, r, cf->records);
        }
        if (labels[r] >= CIFAR_CLASSES)
            return nz_fail(err, NZ_ERR_FORMAT,
                           "%s: label %d in record %zu is out of range (%d classes)", cf->path,
                           labels[r], r, CIFAR_CLASSES);
    }
    if (fgetc(cf->f) != EOF)
        return nz_fail(err, NZ_ERR_FORMAT, "%s: more data than the %zu records its size gave "
                       "(file grew while reading?)", cf->path, cf->records);
    if (ferror(cf->f))
        return nz_fail(err, NZ_ERR_IO, "%s: read failed: %s", cf->path, strerror(errno));
    return NZ_OK;
}

nz_status nz_cifar10_load(const char *dir, int train, nz_dataset *ds, nz_error *err) {
    memset(ds, 0, sizeof *ds);
    if (!dir || !*dir) return nz_fail(err, NZ_ERR_ARG, "cifar10: no directory given");
    cifar_file files[CIFAR_TRAIN_FILES];
    int nf = 0;
    uint8_t *images = NULL, *labels = NULL;
    nz_status st = NZ_OK;

    /* Open (and size) every file first, so the arrays are allocated once and a bad size in a
     * later batch fails before reading 150 MB. */
    if (train) {
        for (int i = 0; i < CIFAR_TRAIN_FILES; i++) {
            char base[32];
            snprintf(base, sizeof base, "data_batch_%d.bin", i + 1);
            /* data_batch_1 is required; the list ends at the first missing one, so a subset
             * (e.g. only batch 1 for quick runs) is a valid training set. */
            if ((st = cifar_open(&files[nf], dir, base, i > 0, err))) goto out;
            if (!files[nf].f) break;
            nf++;
        }
    } else {
        if ((st = cifar_open(&files[0], dir, "test_batch.bin", 0, err))) goto out;
        nf = 1;
    }

    size_t total = 0;
    for (int i = 0; i < nf; i++) total += files[i].records; /* each <= INT_MAX, at most 5 */
    if (total > INT_MAX) {
        st = nz_fail(err, NZ_ERR_FORMAT, "cifar10: %s: %zu records is too many", dir, total);
        goto out;
    }
    images = malloc(total * CIFAR_PIXELS);
    labels = malloc(total);
    if (!images || !labels) {
        st = nz_fail(err, NZ_ERR_NOMEM, "cifar10: cannot allocate %zu images", total);
        goto out;
    }
    size_t at = 0;
    for (int i = 0; i < nf; i++) {
        if ((st = cifar_read(&files[i], images + at * CIFAR_PIXELS, labels + at, err))) goto out;
        at += files[i].records;
    }

    snprintf(ds->name, sizeof ds->name, "cifar10");
    ds->n = (int)total;
    ds->shape = (nz_shape){CIFAR_CH, CIFAR_SIDE, CIFAR_SIDE};
    ds->n_classes = CIFAR_CLASSES;
    ds->images = images;
    ds->labels = labels;
    images = labels = NULL;
out:
    for (int i = 0; i < nf; i++) fclose(files[i].f);
    free(images);
    free(labels);
    return st;
}

void nz_dataset_channel_stats(const nz_dataset *ds, float scale, nz_preproc *pre) {
    const int C = ds->shape.c < 4 ? (ds->shape.c > 0 ? ds->shape.c : 0) : 4;
    const size_t hw = (size_t)ds->shape.h * (size_t)ds->shape.w;
    const size_t per = nz_shape_size(ds->shape);
    memset(pre, 0, sizeof *pre);
    pre->scale = scale;
    pre->n_ch = C;
    /* Pixels are bytes, so one pass filling a 256-bin histogram per channel gives exact counts;
     * mean and the (population) variance about it then cost 256 steps each, in double, with
     * no cancellation from summing squares of 150M values. */
    uint64_t hist[4][256];
    memset(hist, 0, sizeof hist);
    for (int i = 0; i < ds->n; i++) {
        const uint8_t *img = ds->images + (size_t)i * per;
        for (int c = 0; c < C; c++) {
            const uint8_t *p = img + (size_t)c * hw;
            uint64_t *h = hist[c];
            for (size_t j = 0; j < hw; j++) h[p[j]]++;
        }
    }
    const double count = (double)ds->n * (double)hw;
    for (int c = 0; c < C; c++) {
        if (count <= 0) { /* no pixels: leave inputs as scaled pixels */
            pre->mean[c] = 0.0f;
            pre->std[c] = 1.0f;
            continue;
        }
        double sum = 0, ss = 0;
        for (int v = 0; v < 256; v++) sum += (double)hist[c][v] * ((double)v * scale);
        const double mean = sum / count;
        for (int v = 0; v < 256; v++) {
            const double d = (double)v * scale - mean;
            ss += (double)hist[c][v] * d * d;
        }
        double sd = sqrt(ss / count);
        if (!(sd >= 1e-6)) sd = 1e-6; /* a constant channel must not divide by zero */
        pre->mean[c] = (float)mean;
        pre->std[c] = (float)sd;
    }
}
