/* Huffman coding of symbol streams (Deep Compression stage 3: quantized weight indices and
 * sparse relative indices). Private to the library; prefix huf_.
 *
 * Stream layout (little-endian, explicit widths; bit fields are packed LSB-first, deflate-like:
 * the first bit of a stream is bit 0 of its first byte):
 *
 *   offset 0   u16  n_sym     alphabet size, 1..HUF_MAX_SYMS
 *   offset 2   u32  count     number of coded symbols
 *   offset 6   code-length section, a bit field, zero-padded to the next byte boundary:
 *              a sequence of 5-bit items giving the code lengths of symbols 0..n_sym-1 in order:
 *                0..15   the code length of the next symbol (0: symbol does not occur)
 *                16..30  invalid (a length above HUF_MAX_LEN)
 *                31      a run of zero lengths: followed by a 12-bit field r, run = r + 1
 *              the items cover exactly n_sym symbols (a run may not go past n_sym).
 *   then       payload: the canonical code of each symbol, first code bit first (codes are
 *              therefore stored bit-reversed, as in deflate), zero-padded to a byte boundary;
 *              the payload ends exactly at the end of the stream.
 *
 * Canonical codes: shorter codes first, within one length in increasing symbol order (deflate's
 * rule). The lengths must form a complete prefix code (Kraft sum exactly 1), with two
 * exceptions: count == 0 requires all lengths 0, and a stream of one distinct symbol gives that
 * symbol length 1 and no other symbol a length (its code is the single bit 0). Everything else
 * (over-subscribed or incomplete codes, reading past the end, trailing bytes, non-zero padding
 * bits) is rejected, so an accepted payload is the only encoding of its symbols under its code
 * lengths. (The code-length items are not unique: a zero run may also be spelled as zeros.)
 * Stream size: 6 + ceil(item bits / 8) + ceil(payload bits / 8) bytes.
 *
 * Ownership: huf_encode's *out is malloc'd and the caller frees it. Decoders write exactly
 * n_expected symbols into syms, which the caller provides (contents unspecified on failure). */
#ifndef NNZIP_COMPRESS_HUFFMAN_H
#define NNZIP_COMPRESS_HUFFMAN_H

#include <stddef.h>
#include <stdint.h>

#include "nnzip/error.h"

#define HUF_MAX_SYMS 4096
#define HUF_MAX_LEN 15
#define HUF_HEADER_SIZE 6u /* n_sym u16 + count u32 */

/* Encodes n symbols (each < n_sym, 1 <= n_sym <= HUF_MAX_SYMS, n <= UINT32_MAX) into a
 * self-contained stream: returns NZ_OK and sets *out (malloc'd, caller frees) and *out_len.
 * Bad arguments give NZ_ERR_ARG, allocation failure NZ_ERR_NOMEM. */
nz_status huf_encode(const uint16_t *syms, size_t n, int n_sym, uint8_t **out, size_t *out_len,
                     nz_error *err);

/* Decodes a stream produced by huf_encode; expects exactly n_expected symbols, each < n_sym_max
 * (the caller knows both from its own header; n_sym_max >= 1). Rejects anything else with
 * NZ_ERR_CORRUPT and a one-line message without a file name (the caller prefixes it). Never reads
 * outside [in, in+len). Fast path: table-driven, 64-bit bit buffer. */
nz_status huf_decode(const uint8_t *in, size_t len, uint16_t *syms, size_t n_expected,
                     int n_sym_max, nz_error *err);

/* The plain bit-by-bit canonical decoder: same contract, same accepted streams; the reference
 * huf_decode is tested (and fuzzed) against. */
nz_status huf_decode_ref(const uint8_t *in, size_t len, uint16_t *syms, size_t n_expected,
                         int n_sym_max, nz_error *err);

/* Payload bits huf_encode would write for these symbols (the 6-byte header and the code-length
 * section not included), without building the stream. SIZE_MAX on bad arguments. */
size_t huf_encoded_bits(const uint16_t *syms, size_t n, int n_sym);

/* Code lengths huf_encode would use: lens[0..n_sym-1] (0 for absent symbols), each <=
 * HUF_MAX_LEN. For tests and size estimates. Returns NZ_ERR_ARG on bad arguments. */
nz_status huf_code_lengths(const uint16_t *syms, size_t n, int n_sym, uint8_t *lens,
                           nz_error *err);

#endif
