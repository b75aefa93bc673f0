/* Shape inference shared by the model builder and the file reader: one definition of what each
 * op outputs and which parameter tensors it owns. Private to the library. */
#ifndef NNZIP_MODEL_INFER_H
#define NNZIP_MODEL_INFER_H

#include "nnzip/model.h"

/* Output shape of node n from its inputs' shapes (m->nodes[inputs].out, m->in), and the
 * parameter tensors it must own (dims only). Fails on nonsense attributes or shapes. */
nz_status model_node_infer(const nz_model *m, const nz_node *n, nz_shape *out, int *np,
                           nz_param expect[NZ_MAX_PARAMS], nz_error *err);

#endif
