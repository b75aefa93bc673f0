/* nnzip models: a DAG of nodes over batch-major NCHW float32 activations.
 *
 * Ownership: an nz_model owns its nodes and its one contiguous parameter buffer; every parameter
 * tensor is a named view (offset, count, dims) into model->params, so the optimizer, the file
 * writer and the compression passes all work on one array. Free with nz_model_free.
 *
 * nz_op values are stored in .nnz files: the enum only grows at the end. */
#ifndef NNZIP_MODEL_H
#define NNZIP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    NZ_OP_INPUT = 0,
    NZ_OP_DENSE = 1,   /* params: W [out, in], b [out] */
    NZ_OP_CONV2D = 2,  /* params: W [oc, ic, kh, kw], b [oc]; stride, pad */
    NZ_OP_MAXPOOL = 3, /* kh x kw window, stride, no padding (floor) */
    NZ_OP_RELU = 4,
    NZ_OP_FLATTEN = 5, /* [C,H,W] -> [C*H*W, 1, 1]; shares its input's memory */
    NZ_OP_DROPOUT = 6, /* inverted dropout with probability p; identity in eval */
    NZ_OP_NDENSE = 7,  /* norm x direction dense: W[o,:] = g[o] V[o,:] / ||V[o,:]||;
                          params: V [out, in], g [out], b [out] */
    NZ_OP_NCONV2D = 8, /* norm x direction conv, one norm per kernel (output, input channel):
                          W[o,i] = g[o,i] V[o,i] / ||V[o,i]||_F; params: V [oc, ic, kh, kw],
                          g [oc, ic], b [oc]; stride, pad */
    NZ_OP_BATCHNORM = 9, /* per channel (2-D on [C,H,W], 1-D on [C,1,1]) as PyTorch's BatchNorm:
                            params gamma [C], beta [C], running_mean [C], running_var [C] (the
                            last two are buffers: updated by a training forward, never by the
                            optimizer); p = momentum (0.1), eps = NZ_BN_EPS */
    NZ_OP_ADD = 10,      /* two inputs of the same shape: out = a + b (residual join) */
    NZ_OP_AVGPOOL = 11,  /* kh x kw window, stride, no padding (floor) */
    NZ_OP_GAP = 12,      /* global average pool: [C,H,W] -> [C,1,1] */
    NZ_OP_SHORTCUT = 13, /* He et al.'s option-A shortcut: x[:, :, ::stride, ::stride] with
                            zero channels padded equally on both sides up to `units` channels */
    NZ_OP_SELECT = 14,   /* keeps `units` of the input's C*H*W features: out [units, 1, 1];
                            param: index [units] (a buffer), increasing feature numbers, stored
                            as floats (exact below 2^24) */
    NZ_OP__COUNT
} nz_op;

const char *nz_op_name(nz_op op);

/* per-sample shape; dense activations are [n, 1, 1] */
typedef struct {
    int c, h, w;
} nz_shape;

static inline size_t nz_shape_size(nz_shape s) { return (size_t)s.c * (size_t)s.h * (size_t)s.w; }

#define NZ_MAX_INPUTS 2
#define NZ_BN_EPS 1e-5f
#define NZ_BN_MOMENTUM 0.1f
#define NZ_MAX_PARAMS 4
#define NZ_MAX_DIMS 4
#define NZ_NAME_MAX 32

struct nz_sparse; /* pruned/quantized runtime form, see compress.h */

/* How a dense tensor is stored on save (append only: stored in files as an encoding). */
typedef enum { NZ_STORE_F32 = 0, NZ_STORE_F16 = 1 } nz_store;

typedef struct {
    size_t off, n;            /* view into model->params; n == 0 when sparse */
    int ndim;
    int dims[NZ_MAX_DIMS];
    struct nz_sparse *sparse; /* owned; non-NULL: the tensor lives in sparse form only */
    nz_store store;           /* encoding of a dense tensor on save */
} nz_param;

/* elements of a parameter tensor (its dense size, whatever its storage) */
size_t nz_param_numel(const nz_param *p);

typedef struct {
    nz_op op;
    char name[NZ_NAME_MAX];
    int n_inputs;
    int inputs[NZ_MAX_INPUTS]; /* node ids, always smaller than this node's id */
    nz_shape out;
    int units;                 /* dense: out features; conv: out channels */
    int kh, kw, stride, pad;   /* conv and pool */
    float p;                   /* dropout probability */
    int n_params;
    nz_param params[NZ_MAX_PARAMS];
} nz_node;

/* Input preprocessing stored with the model, so every command feeds the same values:
 * x = (pixel * scale - mean[c]) / std[c]. */
typedef struct {
    float scale;
    int n_ch;
    float mean[4], std[4];
} nz_preproc;

typedef struct {
    char arch[NZ_NAME_MAX];
    nz_shape in;
    int n_classes;
    nz_preproc pre;
    int n_nodes, cap_nodes;
    nz_node *nodes;
    size_t n_params;
    float *params;
} nz_model;

/* ---- building ---- */
nz_status nz_model_init(nz_model *m, const char *arch, nz_shape in, int n_classes, nz_error *err);
void nz_model_free(nz_model *m);
/* Each add returns the new node id, or -1 (err set) on failure. */
int nz_model_add_dense(nz_model *m, const char *name, int input, int units, nz_error *err);
int nz_model_add_conv2d(nz_model *m, const char *name, int input, int out_ch, int k, int stride,
                        int pad, nz_error *err);
int nz_model_add_maxpool(nz_model *m, const char *name, int input, int k, int stride, nz_error *err);
int nz_model_add_relu(nz_model *m, const char *name, int input, nz_error *err);
int nz_model_add_flatten(nz_model *m, const char *name, int input, nz_error *err);
int nz_model_add_dropout(nz_model *m, const char *name, int input, float p, nz_error *err);
int nz_model_add_batchnorm(nz_model *m, const char *name, int input, nz_error *err);
int nz_model_add_add(nz_model *m, const char *name, int a, int b, nz_error *err);
int nz_model_add_avgpool(nz_model *m, const char *name, int input, int k, int stride, nz_error *err);
int nz_model_add_gap(nz_model *m, const char *name, int input, nz_error *err);
int nz_model_add_shortcut(nz_model *m, const char *name, int input, int out_ch, int stride,
                          nz_error *err);
/* index: k increasing feature numbers below the input's size (copied) */
int nz_model_add_select(nz_model *m, const char *name, int input, const int *index, int k,
                        nz_error *err);
/* 1 if parameter slot k of node n is a buffer (batch norm running statistics): saved with the
 * model, updated by the forward pass, skipped by the optimizer and by compression passes. */
int nz_param_is_buffer(const nz_node *n, int k);
int nz_model_add_ndense(nz_model *m, const char *name, int input, int units, nz_error *err);
int nz_model_add_nconv2d(nz_model *m, const char *name, int input, int out_ch, int k, int stride,
                         int pad, nz_error *err);
/* Recomputes node output shapes from attributes and checks them against parameter dims and the
 * class count; used after loading a file. */
nz_status nz_model_validate(const nz_model *m, nz_error *err);
/* Kaiming-uniform as PyTorch's nn.Linear/nn.Conv2d default: W, b ~ U(-1/sqrt(fan_in), +). */
void nz_model_init_params(nz_model *m, nz_rng *rng);
/* Deep copy; dst must be uninitialised or freed. */
nz_status nz_model_copy(nz_model *dst, const nz_model *src, nz_error *err);

/* ---- the model zoo ---- */
/* name: lenet300 | lenet500 | lenet5 | resnet20 | resnet32 | resnet56 | vgg16. Input shape and
 * classes come from the dataset. */
nz_status nz_zoo_build(nz_model *m, const char *name, nz_shape in, int n_classes, nz_error *err);
const char *nz_zoo_names(void); /* "lenet300, lenet500, lenet5" for help text */
/* The peak SGD learning rate the zoo recipe uses for an architecture (cosine schedule, batch 64,
 * momentum 0.9): 0.1 for the MLPs; 0.05 for lenet5, whose convs have no ReLU between them and
 * diverge at 0.1. */
float nz_zoo_default_lr(const char *name);

/* number of weights (params of kind W) and biases, for info */
size_t nz_node_param_count(const nz_node *n);
size_t nz_model_flops(const nz_model *m); /* multiply-adds per sample */

/* ---- running ---- */
/* Workspace for a batch size: activations, activation gradients, parameter gradients (same
 * layout as model->params), im2col scratch, pooling indices and dropout masks. */
typedef struct nz_ws nz_ws;

nz_ws *nz_ws_new(const nz_model *m, int max_batch, nz_error *err);
void nz_ws_free(nz_ws *ws);
float *nz_ws_grads(nz_ws *ws);   /* [model->n_params] */
void nz_ws_zero_grads(nz_ws *ws);
/* node's output of the last forward; NULL for a batch norm or an add whose only reader is a
 * relu: the two run as one kernel that stores only the relu's output, unless
 * nz_ws_keep_acts(ws, 1) */
const float *nz_ws_act(const nz_ws *ws, int node);
void nz_ws_keep_acts(nz_ws *ws, int keep);

/* x: [B, C, H, W] preprocessed input. Returns logits [B, n_classes] owned by ws.
 * training != 0 enables dropout (drawing from rng) and makes batch norm use batch statistics and
 * update its running statistics in m->params (the one write a forward does to the model). */
const float *nz_forward(const nz_model *m, nz_ws *ws, const float *x, int B, int training,
                        nz_rng *rng);
/* Inference: the same logits as nz_forward(..., training 0, ...) up to float rounding, faster:
 * a conv followed by its batch norm (and relu) runs as one conv with the batch norm folded into
 * its weights. Activations of the fused nodes are not kept, so nz_backward must not follow. */
const float *nz_infer(const nz_model *m, nz_ws *ws, const float *x, int B);

/* Back-propagates dlogits [B, n_classes] through the last forward; parameter gradients are
 * *added* into nz_ws_grads(ws). */
void nz_backward(const nz_model *m, nz_ws *ws, const float *dlogits, int B);

/* Mean softmax cross-entropy over the batch; writes dlogits (already divided by B) if non-NULL
 * and the number of correct argmax predictions if non-NULL. */
float nz_softmax_xent(const float *logits, const uint8_t *labels, int B, int K, float *dlogits,
                      int *n_correct);

/* ---- threads ---- */
/* Sets OpenMP and OpenBLAS thread counts (n <= 0: all cores). */
void nz_set_threads(int n);
int nz_get_threads(void);

#ifdef __cplusplus
}
#endif
#endif
