/* nnzip datasets: idx (MNIST, Fashion-MNIST; plain or gzip) readers that validate magic, dims and
 * sizes before trusting them, and batch assembly with the model's stored preprocessing.
 * A dataset owns its image and label arrays; free with nz_dataset_free. */
#ifndef NNZIP_DATA_H
#define NNZIP_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char name[64];     /* "mnist", "fashion-mnist" or the path given */
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

/* spec: "mnist", "fashion-mnist", or a directory holding the four idx files
 * ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]). Named sets are looked up under data_dir
 * (NULL: $NNZIP_DATA_DIR, else ~/.cache/nnzip/data) in a subdirectory of that name; Debian's
 * /usr/share/datasets/fashion-mnist is a fallback for fashion-mnist. */
nz_status nz_data_open(const char *spec, const char *data_dir, int train, nz_dataset *ds,
                       nz_error *err);

/* The directory nz_data_open would use for a named set (for messages and scripts). */
void nz_data_default_dir(char *buf, size_t n);

void nz_dataset_free(nz_dataset *ds);

/* Keeps only the first n examples (n < ds->n); for quick runs. */
void nz_dataset_limit(nz_dataset *ds, int n);

/* Writes preprocessed inputs x [B, C, H, W] and labels y [B] for the examples idx[0..B). */
void nz_batch_fill(const nz_dataset *ds, const nz_preproc *pre, const int32_t *idx, int B,
                   float *x, uint8_t *y);

#ifdef __cplusplus
}
#endif
#endif
