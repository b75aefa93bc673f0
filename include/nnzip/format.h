/* The .nnz container, version 1.
 *
 * All integers little-endian with explicit widths; floats IEEE-754 binary32 little-endian.
 *
 *   header   (24 bytes)
 *     0  u8[8]  magic  89 'N' 'N' 'Z' 0D 0A 1A 0A   (PNG-style: catches text-mode mangling)
 *     8  u32    format version (1)
 *    12  u32    section count S (1 <= S <= NZF_MAX_SECTIONS)
 *    16  u32    flags (0)
 *    20  u32    CRC32 of the section table
 *   section table (S x 32 bytes), section i:
 *     0  u32    kind (nzf_section_kind)
 *     4  u32    flags: bit 0 (META and GRAPH only) = the payload is u32 raw length + a zlib
 *               stream of the section (small models: the graph is mostly zero bytes)
 *     8  u64    offset from the start of the file
 *    16  u64    length in bytes
 *    24  u32    CRC32 (zlib) of the section's bytes
 *    28  u32    reserved (0)
 *   section payloads, in table order, non-overlapping, inside the file.
 *
 * Section kinds (append only):
 *   1 META    u32 count, then count x (u16 key length, key bytes, u32 value length, value bytes):
 *             UTF-8 strings: arch, created_by, and free-form training facts (test_error, ...)
 *   2 GRAPH   model input and nodes:
 *             u32 in_c, in_h, in_w, n_classes; f32 scale; u32 n_ch; f32 mean[4]; f32 std[4];
 *             u32 n_nodes; per node: u32 op, u8[32] name (NUL padded), u32 n_inputs,
 *             i32 inputs[2], u32 units, kh, kw, stride, pad; f32 p; u32 n_params;
 *             per param: u32 ndim, u32 dims[4]
 *   3 TENSOR  one per parameter tensor: u32 node, u32 slot, u32 encoding, u32 reserved,
 *             then the encoding's payload (count = the product of the GRAPH's dims for the slot):
 *     encoding 0 F32     count x f32
 *     encoding 1 F16     count x IEEE binary16 (round to nearest even)
 *     encoding 2 SPARSE  a pruned / quantized matrix W [rows = dims[0], cols = count / rows],
 *                        seen as one sequence of positions: row-major, position r * cols + c
 *                        (Deep Compression's CSR with relative indices), or with flag bit 3
 *                        column-major, position c * rows + r (CSC, as EIE stores it):
 *         u8  flags (bit 0: values are codebook indices, else f32; bit 1: streams Huffman-coded;
 *             bit 2: codebook stored as binary16; bit 3: positions run column-major. Files
 *             without bit 3 read as before; readers predating it refuse it as bad flags)
 *         u8  index_bits b (1..12): each entry stores gap-1 where gap (1..2^b) is its distance
 *             from the previous entry's position (the first from position -1); a larger gap is
 *             bridged by filler entries of gap 2^b and value 0
 *         u8  code_bits (1..8 with a codebook, else 0)
 *         u8  0
 *         u32 entries n (fillers included), u32 nonzeros (fillers excluded), u32 0
 *         u16 codebook size k (0 without a codebook; k <= 2^code_bits), codebook[k] as f32
 *             (or f16 with flag bit 2) with codebook[0] = +0, the value of fillers
 *         u32 length, index stream: n symbols, b bits each packed LSB-first, or Huffman
 *             (src/compress/huffman.h)
 *         u32 length, value stream: n codes (code_bits each, packed or Huffman), or n x f32
 *     Stream lengths must match exactly; positions must stay inside the matrix; codes < k. 
 *     encoding 3 KERNELS a conv weight W [O, I, kh, kw] (slot 0 of a CONV2D node; nothing else)
 *                        without its all-zero kh x kw kernels (structured slimming zeroes whole
 *                        kernels inside surviving channels); kernel j = o * I + i:
 *         u32 kh, u32 kw (equal to the GRAPH's dims[2], dims[3]; kh * kw <= 256)
 *         u32 kept kernels K (<= O * I)
 *         u8  value type (0: f32, 1: binary16 as F16), u8[3] 0
 *         bitmap, ceil(O * I / 8) bytes: bit j (byte j / 8, bit j % 8, LSB first) set = kernel j
 *             is stored; exactly K bits set; the padding bits past O * I are 0
 *         K x kh x kw values: the kept kernels in order, each row-major
 *     The length must be exactly 16 + ceil(O * I / 8) + K * kh * kw * (4 or 2). Kernels left out
 *     read back as +0.0. The reader expands the tensor to dense floats: like F16 it is a storage
 *     form only (the area bound keeps a bitmap bit from standing for more than 1 KiB of floats).
 *     nz_save uses it for a dense conv weight whenever it is smaller than F32 / F16 storage, in
 *     the tensor's own precision; a kernel counts as zero when all its values are +0.0 or -0.0.
 *   4 STATE   a checkpoint's training state (nz_train_state; at most one, written last; a file
 *             with it is still a model: nz_load validates the state, then ignores it):
 *             u32 state version (1); u32 epoch (completed); u64 step (completed steps of the
 *             next epoch, 0 at an epoch boundary), u64 steps per epoch;
 *             settings: u32 epochs, batch; f32 lr, momentum, weight_decay; u32 nesterov,
 *             schedule (nz_sched), step_epochs; f32 gamma; u32 warmup_epochs, n_milestones,
 *             milestones[8] (unused ones 0); f32 label_smoothing; u32 crop_pad, flip;
 *             u64 seed; u32 eval_every;
 *             progress: f32 last_loss, last_train_err, last_test_err, best_test_err (-1: none);
 *             f64 epoch_loss_sum, u64 epoch_seen, u64 epoch_correct (the epoch in progress);
 *             RNG: u64[4] xoshiro256** state for each of shuffle, dropout, augmentation;
 *             u64 n_params (must equal the model's), f32 velocity[n_params];
 *             u32 n_order, u32 order[n_order] (a permutation of 0..n_order-1).
 *             Every length is exact; settings must pass nz_train_cfg_check; step <= steps =
 *             ceil(n_order / batch); epoch <= epochs; no RNG state is all zero.
 *   Unknown section kinds are an error (never silently skipped), so an older reader refuses a
 *   newer file cleanly rather than running a half-read model.
 *
 * Writers write a temporary file in the destination directory and rename it into place, so a
 * failed run never leaves a half-written file nor clobbers an existing one. Readers check every
 * length against the file size before reading, and name the file and section in errors. */
#ifndef NNZIP_FORMAT_H
#define NNZIP_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "train.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NZF_VERSION 1u
#define NZF_HEADER_SIZE 24u
#define NZF_ENTRY_SIZE 32u
#define NZF_MAX_SECTIONS 65536u
#define NZF_MAX_NODES 4096u
#define NZF_MAX_META 256u
#define NZF_SECFLAG_DEFLATE 1u
#define NZF_MAX_INFLATED (16u << 20) /* largest META/GRAPH section once inflated */

typedef enum {
    NZF_SEC_META = 1,
    NZF_SEC_GRAPH = 2,
    NZF_SEC_TENSOR = 3,
    NZF_SEC_STATE = 4,
    NZF_SEC__END
} nzf_section_kind;

typedef enum {
    NZF_ENC_F32 = 0,
    NZF_ENC_F16 = 1,
    NZF_ENC_SPARSE = 2,
    NZF_ENC_KERNELS = 3,
    NZF_ENC__END
} nzf_encoding;

/* largest element count of one tensor */
#define NZF_MAX_TENSOR_ELEMS ((uint64_t)1 << 31)
/* largest kernel (kh * kw values) encoding KERNELS holds */
#define NZF_KERNELS_MAX_AREA 256u

/* Free-form key/value facts stored in META (training settings, measured error, ...). */
typedef struct {
    int n;
    char key[NZF_MAX_META][32];
    char val[NZF_MAX_META][128];
} nz_meta;

void nz_meta_set(nz_meta *meta, const char *key, const char *val);
const char *nz_meta_get(const nz_meta *meta, const char *key);

/* meta may be NULL. */
nz_status nz_save(const nz_model *m, const nz_meta *meta, const char *path, nz_error *err);
/* m must be uninitialised; meta may be NULL. On failure nothing needs freeing. */
nz_status nz_load(const char *path, nz_model *m, nz_meta *meta, nz_error *err);

/* A checkpoint: the model and meta as nz_save writes them, plus a STATE section holding st
 * (st->n_params must be m->n_params). Atomic like nz_save. */
nz_status nz_save_checkpoint(const nz_model *m, const nz_meta *meta, const nz_train_state *st,
                             const char *path, nz_error *err);
/* Loads a checkpoint: m and meta as nz_load, st filled with owned arrays (free with
 * nz_model_free and nz_train_state_free). A file without a STATE section is refused (it is a
 * finished model, not a checkpoint). On failure nothing needs freeing. */
nz_status nz_load_checkpoint(const char *path, nz_model *m, nz_meta *meta, nz_train_state *st,
                             nz_error *err);
nz_status nz_load_checkpoint_buffer(const uint8_t *buf, size_t size, const char *name,
                                    nz_model *m, nz_meta *meta, nz_train_state *st,
                                    nz_error *err);

/* Parses a whole file image already in memory (what nz_load does after reading; also the
 * fuzz entry point). name is used in error messages. */
nz_status nz_load_buffer(const uint8_t *buf, size_t size, const char *name, nz_model *m,
                         nz_meta *meta, nz_error *err);

typedef struct {
    uint32_t version;
    uint32_t n_sections;
    uint64_t file_size;
    uint64_t bytes_by_kind[NZF_SEC__END];
} nz_file_stats;

nz_status nz_file_stats_read(const char *path, nz_file_stats *st, nz_error *err);

/* Kernel-level sparsity of node's conv weight: *kept = kernels with a nonzero value (a kernel
 * of +0.0 / -0.0 only is zero), *total = O * I. 0 and 0 for anything but a dense CONV2D W. */
void nz_conv_kernels(const nz_model *m, int node, size_t *kept, size_t *total);
/* Bytes of the TENSOR section nz_save writes for p, a dense tensor of m (16-byte header
 * included): F32 or F16 by p->store, or KERNELS where that is smaller. p must point into m's
 * nodes to be recognised as a conv weight; m may be NULL (then F32/F16). */
size_t nz_dense_stored_bytes(const nz_model *m, const nz_param *p);

#ifdef __cplusplus
}
#endif
#endif
