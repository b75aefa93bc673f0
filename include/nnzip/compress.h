/* nnzip compression: Deep Compression (Han, Mao, Dally 2016) as passes over a model.
 *
 *   prune     per-layer magnitude pruning (threshold = quality x std, or a target sparsity),
 *             one-shot or iterative, retraining the survivors with the mask held
 *   quantize  per-layer 1-D k-means weight sharing on the survivors (exact Lloyd on sorted values),
 *             then centroid fine-tuning (a centroid's gradient is the sum of its members')
 *   encode    sparse positions (row- or column-major) as relative indices of a fixed width with
 *             filler entries on overflow, codebook indices packed, both Huffman-coded per layer
 *
 * A pruned or quantized weight tensor lives in the model as an nz_sparse (nz_param.sparse): the
 * runtime form the kernels compute from (CSR rows, column indices, codebook codes; dense layers
 * also carry the same entries column by column for the batch-1 kernel). Loading a compressed
 * file decodes the streams into this form; dense weights are never rebuilt unless
 * nz_model_densify is called (for fine-tuning). */
#ifndef NNZIP_COMPRESS_H
#define NNZIP_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"
#include "error.h"
#include "model.h"
#include "train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* per-node settings and results are arrays indexed by node id */
#define NZ_MAX_PASS_NODES 512

/* ---------------------------------------------------------------- sparse runtime form */

/* A weight tensor W viewed as a matrix [rows = dims[0], cols = product of the other dims]. */
struct nz_sparse {
    int rows, cols;
    uint32_t nnz;        /* stored entries (filler entries are dropped when decoding) */
    uint32_t *row_ptr;   /* [rows + 1] */
    uint32_t *col;       /* [nnz] column of each entry */
    int n_codebook;      /* 0: values are f32 in val[]; else codes into codebook[] */
    float *codebook;     /* [n_codebook], codebook[0] == 0 is reserved for fillers */
    uint8_t *code;       /* [nnz] when n_codebook > 0 */
    float *val;          /* [nnz] when n_codebook == 0 */
    /* how it is (or will be) stored */
    int index_bits;      /* width of a relative index: gaps 1..2^index_bits, fillers beyond */
    int code_bits;       /* width of a codebook index (0 for f32 values) */
    int huffman;         /* 1: both streams Huffman-coded */
    int codebook_f16;    /* 1: the codebook is stored as binary16 (values already rounded) */
    int col_major;       /* 1: positions are stored column-major (SPARSE flag bit 3) */
    /* sizes measured when last encoded or decoded (for the paper's table) */
    uint32_t n_entries;  /* entries including fillers */
    uint64_t index_stream_bytes, value_stream_bytes, codebook_bytes;
    /* Column form (CSC) of the same entries, or all NULL: what nz_sparse_matvec walks to skip
     * the columns whose input is 0 (an MNIST image, a ReLU output). Dense layers get it when
     * they become sparse or are loaded (nz_sparse_prepare); conv layers never use it. Values
     * are resolved from the codebook: rebuild it (nz_sparse_build_csc) after changing one. */
    uint32_t *col_ptr;   /* [cols + 1] */
    uint32_t *row;       /* [nnz] row of each entry, ascending inside a column */
    float *cval;         /* [nnz] value of each entry */
    /* Column panels, or NULL: for a dense layer of at most NZ_PANEL_MAX_ROWS rows with a
     * codebook of at most 32 entries, the code of every (row, column) slot, column after
     * column, each column padded to pan_rows = a multiple of 16 rows (code 0: no weight).
     * One byte a slot and never float weights: with AVX-512, what nz_sparse_matvec and the
     * batched dense path compute from, 16 rows a vector step, where per-entry index work
     * would cost more than the zero slots (nz_sparse_build_panels). */
    uint8_t *pan;        /* [cols * pan_rows] */
    int pan_rows;
};
#define NZ_PANEL_MAX_ROWS 512
typedef struct nz_sparse nz_sparse;

/* Builds the sparse form of a dense matrix [rows, cols], keeping entries != 0. codebook may be
 * NULL (f32 values); else every nonzero must equal one of codebook[1..k-1] exactly. */
nz_status nz_sparse_from_dense(nz_sparse **out, const float *W, int rows, int cols,
                               const float *codebook, int n_codebook, int index_bits,
                               nz_error *err);
void nz_sparse_free(nz_sparse *s);
nz_status nz_sparse_clone(nz_sparse **out, const nz_sparse *s, nz_error *err);
/* W [rows, cols] = the dense matrix (zeros elsewhere). */
void nz_sparse_to_dense(const nz_sparse *s, float *W);
static inline float nz_sparse_value(const nz_sparse *s, uint32_t j) {
    return s->n_codebook ? s->codebook[s->code[j]] : s->val[j];
}
/* (Re)builds the column form from the rows; O(nnz + cols), 8 bytes per entry, stays sparse. */
nz_status nz_sparse_build_csc(nz_sparse *s, nz_error *err);
void nz_sparse_drop_csc(nz_sparse *s);
/* (Re)builds the column panels when the layer qualifies (see pan above) and they take at most
 * twice the bytes of the column form; else leaves pan NULL. Rebuild after changing codes. */
nz_status nz_sparse_build_panels(nz_sparse *s, nz_error *err);
void nz_sparse_drop_panels(nz_sparse *s);
/* 1 when this build's panel kernels beat the row and column kernels (AVX-512), else 0. */
int nz_sparse_panels_pay(void);
/* The runtime forms a weight of an op needs: NZ_OP_DENSE keeps (or builds) the column form and,
 * where they pay, the panels; other ops drop both. Called wherever a model's tensor becomes
 * sparse (sparsify, load). */
nz_status nz_sparse_prepare(nz_sparse *s, nz_op op, nz_error *err);

/* Serialization of the tensor payload (encoding NZF_ENC_SPARSE; layout in format.h). */
nz_status nz_sparse_encode(nz_sparse *s, uint8_t **out, size_t *out_len, nz_error *err);
nz_status nz_sparse_decode(const uint8_t *in, size_t len, int rows, int cols, nz_sparse **out,
                           nz_error *err);

/* Y [rows, N] (+)= S X, X [cols, N] (row-major). accumulate = 0 overwrites Y.
 * The compute kernel of every sparse layer: dense layers pass X = input^T, conv layers im2col. */
void nz_sparse_matmul(const nz_sparse *s, const float *X, int N, float *Y, int accumulate);
/* y [rows] = S x: the batch-1 path. With the column form, per call the cheaper of the two
 * kernels below for this x (a choice made from x and the structure alone: deterministic). */
void nz_sparse_matvec(const nz_sparse *s, const float *x, float *y);
/* By rows: a gather dot product per row, every entry touched. */
void nz_sparse_matvec_rows(const nz_sparse *s, const float *x, float *y);
/* By columns: x[c] times column c for the nonzero x[c] only, so zero inputs (image background,
 * ReLU outputs) cost no work (without the column form: by rows). Results do not depend on the
 * thread count. */
void nz_sparse_matvec_cols(const nz_sparse *s, const float *x, float *y);
/* From the column panels (without them: nz_sparse_matvec): codebook look-up by a vector
 * permute, 16 rows a step, the columns of nonzero inputs only. */
void nz_sparse_matvec_panels(const nz_sparse *s, const float *x, float *y);
/* Y [B, rows] = X [B, cols] S^T, what a sparse dense layer computes (row-major batches): batch
 * 1 by nz_sparse_matvec, the panels where built, else the row kernel over the transposed batch
 * (scratch: (cols + rows) x B floats). */
void nz_sparse_matmul_batch(const nz_sparse *s, const float *X, int B, float *Y, float *scratch);
/* Y [B, rows] = X [B, cols] S^T from the column panels (s->pan must be set): the batched path
 * of small dense layers, no transposes; each looked-up column serves several samples. A
 * sample's sums do not depend on B or the thread count. */
void nz_sparse_matmul_panels(const nz_sparse *s, const float *X, int B, float *Y);

/* Model-level conversions. */
/* Expands every sparse tensor to dense storage (for fine-tuning). */
nz_status nz_model_densify(nz_model *m, nz_error *err);
/* Moves tensor (node, slot 0) into sparse form, dropping zeros; codebook optional. */
nz_status nz_model_sparsify_param(nz_model *m, int node, const float *codebook, int n_codebook,
                                  int index_bits, nz_error *err);
/* Stored bytes of a tensor as it would be saved (encodes sparse ones to measure). */
size_t nz_param_stored_bytes(const nz_model *m, const nz_param *p);

/* Weight tensors the passes act on: the W of dense and conv2d nodes. */
static inline int nz_node_is_weighted(const nz_node *n) {
    return n->op == NZ_OP_DENSE || n->op == NZ_OP_CONV2D;
}

/* ---------------------------------------------------------------- pruning */

typedef enum { NZ_PRUNE_ONESHOT = 0, NZ_PRUNE_ITERATIVE = 1 } nz_prune_schedule;

typedef struct {
    /* per weighted node (indexed by node id; < 0 = unset): target fraction of weights removed.
     * If unset, quality x std thresholding is used with quality[node] (or the global quality). */
    float sparsity[NZ_MAX_PASS_NODES];
    float quality[NZ_MAX_PASS_NODES];
    float global_quality;      /* used where neither is set; <= 0: use default sparsities */
    nz_prune_schedule schedule;
    int rounds;                /* iterative: prune-retrain rounds (the target is reached in the last) */
    int epochs_per_round;      /* retraining epochs after each round */
    nz_train_cfg train;        /* retraining settings (lr typically 1/10 of the original) */
    int remove_dead_neurons;   /* drop fc neurons left with no inputs or no outputs */
} nz_prune_cfg;

void nz_prune_cfg_default(nz_prune_cfg *cfg, const nz_model *m);

/* Han et al.'s per-layer defaults for a layer: fraction removed by layer kind and size. */
float nz_prune_default_sparsity(const nz_model *m, int node);

typedef struct {
    int n_layers;
    int node[NZ_MAX_PASS_NODES];
    size_t total[NZ_MAX_PASS_NODES], kept[NZ_MAX_PASS_NODES];
    float test_err_before, test_err_after; /* % */
    double seconds;
} nz_prune_result;

/* Prunes m in place (its weights end with exact zeros where pruned), retraining on train. */
nz_status nz_prune(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                   const nz_prune_cfg *cfg, const nz_train_hooks *hooks, nz_prune_result *res,
                   nz_error *err);

/* Zeroes every weight with |w| below the threshold that removes `sparsity` of the layer's
 * weights (already-zero weights count as removed). Returns the number kept. */
size_t nz_prune_layer_to_sparsity(float *W, size_t n, float sparsity);
/* The same, given mag = the magnitudes |W| sorted ascending (one sort, many sparsities). */
size_t nz_prune_sorted(float *W, size_t n, const float *mag, float sparsity);

/* ---------------------------------------------------------------- quantization */

typedef enum {
    NZ_KMEANS_LINEAR = 0,  /* evenly spaced between min and max (the paper's best) */
    NZ_KMEANS_DENSITY = 1, /* spaced by the CDF of the weights */
    NZ_KMEANS_FORGY = 2,   /* random weights */
    NZ_KMEANS_PLUSPLUS = 3 /* k-means++ seeding */
} nz_kmeans_init;

/* 1-D k-means (Lloyd) on values x[n]: centroids [k] sorted, assign[n] in 0..k-1.
 * Exact on sorted data: clusters are contiguous ranges, updated with prefix sums. */
nz_status nz_kmeans_1d(const float *x, size_t n, int k, nz_kmeans_init init, int max_iter,
                       nz_rng *rng, float *centroids, int32_t *assign, nz_error *err);

typedef struct {
    int bits[NZ_MAX_PASS_NODES];  /* per node; <= 0: use fc_bits / conv_bits */
    int fc_bits, conv_bits;         /* defaults 5 and 8, as the paper */
    nz_kmeans_init init;
    int finetune_epochs;
    nz_train_cfg train;             /* fine-tuning settings */
} nz_quant_cfg;

void nz_quant_cfg_default(nz_quant_cfg *cfg);

typedef struct {
    int n_layers;
    int node[NZ_MAX_PASS_NODES];
    int bits[NZ_MAX_PASS_NODES];
    float test_err_before_finetune, test_err_after; /* % */
    double seconds;
} nz_quant_result;

/* Quantizes the weighted layers of m (pruned zeros stay zero), fine-tunes the centroids on train,
 * and leaves every weighted layer in sparse codebook form. */
nz_status nz_quantize(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                      const nz_quant_cfg *cfg, const nz_train_hooks *hooks, nz_quant_result *res,
                      nz_error *err);

/* ---------------------------------------------------------------- structured slimming */

/* Rewrites every dense/conv2d node as its norm x direction form (NZ_OP_NDENSE/NZ_OP_NCONV2D):
 * g = ||W row|| (per fc neuron) or ||W[o,i]||_F (per conv kernel), V = W / g. Exact. */
nz_status nz_normdir_convert(nz_model *m, nz_error *err);
/* Back to plain dense/conv2d with W = g V / ||V||; zero norms give exact zero groups. */
nz_status nz_normdir_restore(nz_model *m, nz_error *err);

typedef enum { NZ_SLIM_PROXIMAL = 0, NZ_SLIM_SUBGRADIENT = 1 } nz_slim_method;
enum { NZ_SLIM_COST_UNIFORM = 0, NZ_SLIM_COST_STATIC = 1, NZ_SLIM_COST_LIVE = 2 };

typedef struct {
    float lambda[NZ_MAX_PASS_NODES]; /* per node; < 0: global_lambda */
    float global_lambda;             /* L1 strength on the norms */
    nz_slim_method method;           /* proximal soft threshold (exact zeros) or subgradient */
    int ramp_epochs;                 /* lambda grows linearly from 0 over these epochs */
    int epochs;                      /* training with the penalty */
    int finetune_epochs;             /* after removal, without the penalty */
    nz_train_cfg train, finetune;
    int penalize_last;               /* also penalize the classifier's neurons (default 0) */
    float subgrad_eps;               /* subgradient: norms below this count as zero */
    int cost_weighted;               /* scale each layer's lambda by the parameters one of its
                                        groups controls (incoming + outgoing), relative to the
                                        mean: the penalty then tracks the parameters removed.
                                        NZ_SLIM_COST_STATIC (default): the counts of the model
                                        given; NZ_SLIM_COST_LIVE: recounted every step over the
                                        neighbours still alive; NZ_SLIM_COST_UNIFORM (0): the
                                        same lambda everywhere */
    const nz_dataset *val;           /* NULL (default) or held-out examples: fine-tuning then
                                        keeps the epoch (0 = right after removal) with the
                                        lowest error on them; the test set is never used to
                                        choose. They must be images the model was not trained
                                        on, or the choice favours epoch 0 (the model right
                                        after removal still fits them) */
    float distill_alpha;             /* > 0: the fine-tune learns the model given (the teacher)
                                        as well as the labels (nz_distill); 0 (default): off */
    float distill_temp;              /* its temperature (default 4) */
    int distill_penalized;           /* 1: also during the penalized training */
    float input_lambda;              /* L1 strength on each input feature's outgoing weights
                                        (the columns of a dense layer, not the last, that
                                        reads the data),
                                        cost-weighted like the neurons; features at zero are
                                        dropped by a select node. Default 3e-3 (the global
                                        lambda, 2e-2, shrinks rows and columns together: as
                                        strong a column penalty removed 97% of the MLP at +1.2
                                        points); 0: off; < 0: global_lambda */
    int rebalance;                   /* 1: nz_rebalance after removal, before the fine-tune
                                        (the penalized layers shrink while their neighbours
                                        grow; one fine-tuning rate then suits neither) */
} nz_slim_cfg;

void nz_slim_cfg_default(nz_slim_cfg *cfg);

typedef struct {
    int n_layers;
    int node[NZ_MAX_PASS_NODES];         /* node ids in the slimmed model */
    char name[NZ_MAX_PASS_NODES][NZ_NAME_MAX];
    int units_before[NZ_MAX_PASS_NODES], units_after[NZ_MAX_PASS_NODES];
    size_t kernels_before[NZ_MAX_PASS_NODES], kernels_after[NZ_MAX_PASS_NODES]; /* conv only */
    int fanin_before[NZ_MAX_PASS_NODES], fanin_after[NZ_MAX_PASS_NODES]; /* dense: inputs read */
    size_t params_before, params_after, macs_before, macs_after;
    int inputs_before, inputs_after; /* input features read (a select node drops the rest) */
    float test_err_before, test_err_penalized, test_err_after; /* % */
    float val_err;          /* % of the kept fine-tuning epoch on cfg->val (-1 without) */
    int finetune_kept;      /* that epoch: 0 = the model right after removal */
    double seconds;
} nz_slim_result;

/* Train with an L1 penalty on the norms, remove zero-norm neurons/channels (and the matching
 * inputs of the next layer), fine-tune. m is replaced by the smaller model (plain dense/conv). */
nz_status nz_slim(nz_model *m, const nz_dataset *train, const nz_dataset *test,
                  const nz_slim_cfg *cfg, const nz_train_hooks *hooks, nz_slim_result *res,
                  nz_error *err);

/* Removes every dense neuron whose weights are all zero and every conv output channel whose
 * kernels are all zero, with the matching inputs of the next weighted layer; their constant
 * outputs are folded into the next layer's bias (exact for fc and unpadded conv). m must be plain
 * dense/conv2d with relu/maxpool/dropout/flatten between. The classifier keeps all outputs. */
nz_status nz_slim_remove(nz_model *m, nz_error *err);

/* Rescales every unit (fc neuron, conv output channel) of a dense/conv layer whose outputs
 * reach the next dense/conv layer only through relu/maxpool/avgpool/dropout/flatten: incoming
 * weights and bias x a, the next layer's weights that read the unit x 1/a, with a chosen so
 * the two have the same L2 norm. The function is unchanged (up to float rounding); what
 * changes is the scale one learning rate and one per-layer pruning threshold see. Layers
 * before a batch norm or an add, and sparse layers, are left alone. Returns the number of
 * layer pairs balanced. */
int nz_rebalance(nz_model *m);

/* ---------------------------------------------------------------- encoding */

/* Order the positions of a sparse tensor are stored in (the runtime builds whatever form its
 * kernels need at load, so this only decides the file's size). */
typedef enum {
    NZ_ORDER_AUTO = 0, /* per layer, whichever payload is smaller (ties: row) */
    NZ_ORDER_ROW = 1,  /* row-major: Deep Compression's CSR */
    NZ_ORDER_COL = 2   /* column-major: CSC, as EIE stores it */
} nz_sparse_order;

typedef struct {
    int index_bits[NZ_MAX_PASS_NODES]; /* per node; <= 0: the width giving the smallest stream */
    nz_sparse_order order;             /* position order (default auto) */
    int huffman;                       /* Huffman-code index and value streams (default 1) */
    int f16_biases;                    /* store biases as binary16 (default 1) */
    int f16_codebooks;                 /* store codebooks as binary16 (default 1) */
    float sparse_min;                  /* dense weights with at least this fraction of zeros are
                                          stored sparse with f32 values (default 0.5) */
} nz_encode_cfg;

void nz_encode_cfg_default(nz_encode_cfg *cfg);
/* Sets every weighted layer's storage for saving: sparse streams (relative-index width,
 * Huffman), f16 biases. Changes no value except biases' f16 rounding. */
nz_status nz_encode(nz_model *m, const nz_encode_cfg *cfg, nz_error *err);

/* One row of the paper's per-layer table. */
typedef struct {
    char name[NZ_NAME_MAX];
    int node;
    size_t weights, nonzeros, entries; /* entries include filler entries */
    int sparse, huffman, code_bits, index_bits;
    int col_major;                         /* positions stored column-major */
    double value_bits, index_bits_stored; /* average stored bits per entry (after Huffman) */
    size_t stored_bytes;                   /* all of the node's tensor sections */
    size_t dense_bytes;                    /* the node's parameters as float32 */
} nz_layer_size;

/* Fills up to max rows for the weighted layers; returns the number of rows. */
int nz_size_table(const nz_model *m, nz_layer_size *rows, int max);

/* ---------------------------------------------------------------- sensitivity analysis */

/* Per-layer sensitivity (Han et al. 2015, Fig. 5): for each weighted layer alone, the test error
 * after magnitude-pruning that layer to each sparsity, and (optionally) after k-means quantizing
 * that layer to each width, without retraining; every other layer keeps its weights. Used to
 * pick per-layer thresholds by hand, or by nz_sensitivity_allocate for a target size. */

#define NZ_SENS_MAX_POINTS 64

typedef struct {
    int n_sparsity;
    float sparsity[NZ_SENS_MAX_POINTS]; /* fractions removed, strictly increasing, in [0, 1) */
    int n_bits;                         /* 0: no quantization sweep */
    int bits[NZ_SENS_MAX_POINTS];       /* widths in 1..8 (2^bits - 1 shared values + the 0) */
    unsigned char only[NZ_MAX_PASS_NODES]; /* per node: nonzero = analyse it; all zero: every
                                              weighted layer */
    nz_kmeans_init init;                /* quantization sweep: centroid init (default linear) */
    uint64_t seed;                      /* for the random k-means inits */
    int batch;                          /* evaluation batch (default 256) */
    /* called after every evaluation with (done, total) */
    void (*progress)(int done, int total, const char *layer, void *user);
    void *progress_user;
    volatile int *stop;                 /* non-zero: stop with NZ_ERR_INTERRUPTED */
} nz_sensitivity_cfg;

/* Sparsities 0, 10, ..., 90, 95 %; no quantization sweep; all weighted layers. */
void nz_sensitivity_cfg_default(nz_sensitivity_cfg *cfg);

typedef struct {
    int n_layers;
    int node[NZ_MAX_PASS_NODES];
    char name[NZ_MAX_PASS_NODES][NZ_NAME_MAX];
    int conv[NZ_MAX_PASS_NODES];         /* 1: conv2d, 0: dense */
    size_t weights[NZ_MAX_PASS_NODES];
    int n_sparsity, n_bits;
    float sparsity[NZ_SENS_MAX_POINTS];
    int bits[NZ_SENS_MAX_POINTS];
    float baseline_err;                  /* % test error of the model as given */
    float *prune_err;                    /* [n_layers x n_sparsity] % (owned) */
    float *quant_err;                    /* [n_layers x n_bits] % (owned; NULL if n_bits 0) */
    int n_images;                        /* examples evaluated */
    int evaluations;                     /* forward passes over the set actually run (a prune
                                            that changes no weight reuses the baseline) */
    double seconds;
} nz_sensitivity_result;

/* m is not changed (a densified copy is pruned). data: the images to evaluate (the test split,
 * or a subset of it). res must be freed with nz_sensitivity_result_free, also on failure. */
nz_status nz_sensitivity(const nz_model *m, const nz_dataset *data, const nz_sensitivity_cfg *cfg,
                         nz_sensitivity_result *res, nz_error *err);
void nz_sensitivity_result_free(nz_sensitivity_result *res);
static inline float nz_sens_prune_err(const nz_sensitivity_result *r, int layer, int k) {
    return r->prune_err[(size_t)layer * (size_t)r->n_sparsity + (size_t)k];
}
static inline float nz_sens_quant_err(const nz_sensitivity_result *r, int layer, int k) {
    return r->quant_err[(size_t)layer * (size_t)r->n_bits + (size_t)k];
}

/* Writes the pruning curves as a self-contained SVG: x = sparsity %, y = test accuracy %, one
 * polyline with markers per layer, a legend, the baseline dashed; title (may be NULL) on top.
 * Atomic: written to PATH.tmp.XXXXXX and renamed, so a failure never leaves a partial file. */
nz_status nz_sensitivity_svg(const nz_sensitivity_result *r, const char *path, const char *title,
                             nz_error *err);

/* ---------------------------------------------------------------- size targets */

/* Per-layer sparsities and widths for a target compression ratio, from sensitivity curves.
 *
 * Size model: each layer's stored bytes are measured, not guessed: for every measured sparsity
 * (and every candidate width), the layer is magnitude-pruned, k-means quantized (linear init,
 * 2^bits - 1 shared values, f16 codebook) and run through the real encoder (relative indices
 * with fillers, both streams Huffman-coded, the index width giving the smallest payload, as
 * nz_encode picks it, positions row-major: its default auto order can only be smaller);
 * between measured sparsities the bytes are interpolated linearly. Biases count as f16 and
 * every other tensor as f32, plus the file's header, section table, graph and metadata
 * (estimated). Retraining keeps the masks and the code assignments, so the file is
 * usually within a few % of the estimate (fewer bytes when dead neurons are removed).
 *
 * Accuracy model: a layer's cost is its own curve's increase over the baseline (the running
 * maximum of the measured errors, so noise never makes more pruning look free of cost, linearly
 * interpolated), pruning and quantization costs add, and layers add (the usual independence
 * assumption of sensitivity-based allocation).
 *
 * Greedy: every layer starts at sparsity 0 and the widest candidate width; while the estimated
 * file is above dense_bytes / target_ratio, take the move with the least estimated error
 * increase per byte saved (ties: the most bytes): raise one layer's sparsity by `step`, or
 * lower one layer's width by 1 bit. */
typedef struct {
    float target_ratio;          /* reference bytes / estimated file bytes, > 1 */
    size_t reference_bytes;      /* the bytes the ratio is of (0: m's float32 parameters) */
    int quantized;               /* 1: stored as `compress --method deep` stores (codebook,
                                    Huffman, f16 biases); 0: as `prune` stores (f32 values,
                                    8-bit packed relative indices, f32 biases), widths unused */
    int fixed_bits[NZ_MAX_PASS_NODES]; /* per node: > 0 fixes the width; else searched */
    int fc_bits_min, fc_bits_max;      /* width search ranges (defaults 3..8, 4..8), within */
    int conv_bits_min, conv_bits_max;  /* the widths the quantization sweep measured */
    int default_fc_bits, default_conv_bits; /* without a quantization sweep (5 and 8) */
    float max_sparsity;          /* cap (default 0.99; also at most the largest measured) */
    float step;                  /* sparsity step of the greedy (default 0.005) */
    nz_kmeans_init init;
} nz_alloc_cfg;

void nz_alloc_cfg_default(nz_alloc_cfg *cfg);

typedef struct {
    int n_layers;
    int node[NZ_MAX_PASS_NODES];
    float sparsity[NZ_MAX_PASS_NODES]; /* fraction removed */
    int bits[NZ_MAX_PASS_NODES];       /* 0 when not quantized */
    size_t est_bytes[NZ_MAX_PASS_NODES]; /* the layer's weight tensor as stored */
    float est_err_increase[NZ_MAX_PASS_NODES]; /* percentage points, from the curves */
    size_t reference_bytes, fixed_bytes, est_file_bytes;
    double est_ratio;
    float est_err;               /* baseline + the increases (an untrained, pessimistic guess) */
    int reached;                 /* 1: est_ratio >= target_ratio */
    int moves;
} nz_alloc_result;

/* m: the model sens was computed on (its weights size the layers); sens must cover every
 * weighted layer. Fails with NZ_ERR_ARG on a bad configuration; an unreachable target is not an
 * error (reached = 0, every layer at its limit). */
nz_status nz_sensitivity_allocate(const nz_model *m, const nz_sensitivity_result *sens,
                                  const nz_alloc_cfg *cfg, nz_alloc_result *res, nz_error *err);

/* The measured stored bytes of one weight matrix W [rows, cols] pruned to sparsity and stored
 * with `bits`-wide codes (0: f32 values, 8-bit packed indices), the TENSOR section header
 * included: the size model above, for one point. */
nz_status nz_estimate_layer_bytes(const float *W, int rows, int cols, float sparsity, int bits,
                                  nz_kmeans_init init, size_t *bytes, nz_error *err);

#ifdef __cplusplus
}
#endif
#endif
