/* Internal to the compression passes: shared sorting and the zero-holding training hook. */
#ifndef NZ_COMPRESS_MASK_H
#define NZ_COMPRESS_MASK_H

#include <stddef.h>

#include "nnzip/model.h"
#include "nnzip/train.h"

/* Ascending sort (magnitude thresholds, 1-D k-means on sorted values). */
void nz_sort_floats(float *v, size_t n);

/* Retraining with weights removed: after every SGD step the masked entries (mask[i] == 0, over
 * the model's whole parameter array) are set back to zero, then the caller's own hook runs. */
typedef struct {
    const unsigned char *mask;
    const nz_train_hooks *outer; /* may be NULL */
} nz_mask_hold;

int nz_mask_hold_step(nz_model *m, void *user);
/* The caller's hooks (h->outer) with after_step replaced by nz_mask_hold_step on h. */
nz_train_hooks nz_mask_hold_hooks(nz_mask_hold *h);

#endif
