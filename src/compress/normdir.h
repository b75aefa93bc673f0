/* Internal to slimming (normdir.c), exposed for its tests. */
#ifndef NZ_COMPRESS_NORMDIR_H
#define NZ_COMPRESS_NORMDIR_H

#include "nnzip/model.h"

/* The input features' proximal step on norm x direction dense node i: each column of
 * W = g V/||V|| (one input feature's outgoing weights) is scaled by max(0, 1 - t/||column||),
 * and the result written back as norm x direction (rows of V unit length, g carrying the norm,
 * subnormal entries flushed to zero). 0 on success, -1 out of memory (the model unchanged). */
int nz_slim_column_prox(nz_model *m, int i, float t);

#endif
