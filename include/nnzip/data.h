/* nnzip datasets: idx (MNIST, Fashion-MNIST; plain or gzip) and CIFAR-10 binary readers that
 * validate magic, dims and sizes before trusting them, batch assembly with the model's stored
 * preprocessing, and training augmentation.
 * A dataset owns its image and label arrays; free with nz_dataset_free. */
#ifndef NNZIP_DATA_H
#define NNZIP_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char name[64];     /* the spec that opened it ("mnist", "cifar10:DIR", a path), reopenable */
    int n;             /* examples */
    nz_shape shape;    /* per example, e.g. 1x28x28 */
    int n_classes;
    uint8_t *images;   /* [n, c, h, w] raw pixels */
    uint8_t *labels;   /* [n], each < n_classes */
} nz_dataset;

/* Reads an idx3 image file and an idx1 label file (either may be gzip-compressed; detected by
 * content, not name). Fails with a message naming the file on wrong magic, dims, truncation,
 * or a count mismatch between the two. */
nz_status nz_idx_load(const char *images_path, const char *labels_path, nz_dataset *ds,
                      nz_error *err);

/* spec: "mnist", "fashion-mnist", "cifar10:DIR" or "cifar10" (= DATA_DIR/cifar10, see
 * nz_cifar10_load), or a directory holding the four idx files
 * ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]). Named sets are looked up under data_dir
 * (NULL: $NNZIP_DATA_DIR, else ~/.cache/nnzip/data) in a subdirectory of that name; Debian's
 * /usr/share/datasets/fashion-mnist is a fallback for fashion-mnist. */
nz_status nz_data_open(const char *spec, const char *data_dir, int train, nz_dataset *ds,
                       nz_error *err);

/* Reads CIFAR-10 binary batches (cifar-10-batches-bin) from dir: train = data_batch_1.bin,
 * data_batch_2.bin, ... up to _5, in that order, stopping at the first one missing (so
 * data_batch_1.bin alone is a valid, smaller training set; a missing data_batch_1.bin fails);
 * test = test_batch.bin. Each record is 1 label byte (< 10) + 3072 pixel bytes (1024 R, 1024 G,
 * 1024 B, row-major 32x32), giving shape 3x32x32, 10 classes, name "cifar10". A missing file, a
 * file whose size is zero or not a multiple of 3073, or a label >= 10 fails with a message
 * naming the file (and its size, or the record index). On failure ds is left empty.
 * nz_data_open accepts "cifar10:DIR" for it. */
nz_status nz_cifar10_load(const char *dir, int train, nz_dataset *ds, nz_error *err);

/* Per-channel mean and population standard deviation of pixel * scale (e.g. scale 1/255) over
 * the whole dataset, computed in double; sets pre->scale = scale, pre->n_ch = ds->shape.c
 * (at most 4: further channels get no stats), mean and std. A constant channel gets std 1e-6;
 * an empty dataset mean 0, std 1. What `nnzip train` stores in a new model. */
void nz_dataset_channel_stats(const nz_dataset *ds, float scale, nz_preproc *pre);

/* Training augmentation applied to an already preprocessed batch x [B, C, H, W], in place:
 * random crop with `crop_pad` pixels of padding on each side (torchvision's RandomCrop(size,
 * padding=pad): the padding is a raw zero pixel, i.e. ((float)0 * scale - mean[c]) / std[c]
 * once preprocessed, as nz_batch_fill computes it; 0 for channels without stats or pre NULL),
 * then, if flip, a horizontal flip with probability 1/2. Draws from rng in a fixed order, per
 * sample: dy = nz_rng_below(rng, 2*pad+1), then dx likewise (both only if pad > 0), then
 * flip = nz_rng_below(rng, 2) (only if flip); out[y][x] = padded[y + dy][x + dx], mirrored if
 * flip = 1. So a seed reproduces it. pad 0 and flip 0 leave x unchanged and draw nothing. */
typedef struct {
    int crop_pad;
    int flip;
} nz_augment;

void nz_augment_batch(float *x, int B, nz_shape s, const nz_preproc *pre, const nz_augment *aug,
                      nz_rng *rng);

/* The directory nz_data_open would use for a named set (for messages and scripts). */
void nz_data_default_dir(char *buf, size_t n);

void nz_dataset_free(nz_dataset *ds);

/* Keeps only the first n examples (n < ds->n); for quick runs. */
void nz_dataset_limit(nz_dataset *ds, int n);

/* Holds out a validation set: val receives copies of the last n_val examples (caller frees it
 * with nz_dataset_free) and ds keeps the first ds->n - n_val. 0 < n_val < ds->n. */
nz_status nz_dataset_split(nz_dataset *ds, int n_val, nz_dataset *val, nz_error *err);

/* Writes preprocessed inputs x [B, C, H, W] and labels y [B] for the examples idx[0..B). */
void nz_batch_fill(const nz_dataset *ds, const nz_preproc *pre, const int32_t *idx, int B,
                   float *x, uint8_t *y);

#ifdef __cplusplus
}
#endif
#endif
