/* quant.h - scalar conversions between fp32 and the stored weight types.
 * Used by loaders, the converter, the synthetic model writer and tests;
 * the hot paths use the vectorised kernels in kernels.h instead. */
#ifndef KV_QUANT_H
#define KV_QUANT_H

#include <stdint.h>

#include "dtype.h"

float kv_fp16_to_fp32(uint16_t h);  /* exact; a NaN comes back quiet (as F16C converts it) */
uint16_t kv_fp32_to_fp16(float f);  /* round to nearest even, handles inf/nan/subnormals */
float kv_bf16_to_fp32(uint16_t h);
uint16_t kv_fp32_to_bf16(float f);  /* round to nearest even */

/* Encodes n fp32 values (n a multiple of the block size) into `type`.
 * F32, F16, BF16, Q8_0, Q4_0 as llama.cpp's reference quantizers do:
 * Q8_0: d = amax/127, q = round(x/d); Q4_0: d = max/-8 where max is the
 * value of largest magnitude (sign kept), q = clamp(round(x/d)+8, 0, 15).
 * The K-quants (Q2_K..Q6_K) with a simple one-pass quantizer: each
 * sub-block's scale (and min) from its range, the scales quantized against
 * the super-block's largest, then each value rounded to the nearest level
 * the stored scales give. It writes valid blocks that every reader decodes
 * alike, but not llama.cpp's blocks: llama-quantize searches scales to
 * minimise a weighted error, so its blocks (and errors) differ.
 * Returns KV_EINVAL for another type or a bad n. */
int kv_quantize(kv_dtype type, const float *x, void *out, int64_t n);

/* Decodes n values of `type` (not Q8_G) into fp32. */
int kv_dequantize(kv_dtype type, const void *in, float *out, int64_t n);

/* One K-quant super-block (`blk`, 256 values of type t) as the two halves
 * every reader of it combines: the integer quants q[256] (Q2_K 0..3,
 * Q3_K -4..3, Q4_K 0..15, Q5_K 0..31, Q6_K -32..31) and, per run of 16
 * values g, the scale d[g] and offset m[g] (0 for Q3_K and Q6_K), so that
 * value e is d[e/16] * q[e] - m[e/16], rounded to fp32 at each step, as
 * llama.cpp's dequantize_row_q*_K computes it. The vector kernels use the
 * same scales. */
void kv_kquant_scales(kv_dtype t, const uint8_t *blk, float d[16], float m[16]);
void kv_kquant_ints(kv_dtype t, const uint8_t *blk, int8_t q[256]);

/* Activations for the integer kernels: n values (n a multiple of blk, 32
 * or 256) in blocks of blk, each with the scale d = kv_act_scale(amax, blk)
 * (amax its largest magnitude; 0 for a block of zeros) and q = x *
 * (127/amax) rounded to the nearest integer, ties to even, in [-127, 127];
 * s16[g] is the sum of q over values 16g..16g+15 (the K-quants' offsets and
 * Q4_0's -8 need it). Symmetric, so |x - d*q| <= d/2 (plus d's own
 * rounding) for every value. The vector kernels' quantizers give these
 * same bits (tests/test_kernels.c checks it). */
void kv_quantize_act(const float *x, int64_t n, int32_t blk, float *d, int8_t *q, int16_t *s16);
/* A block's scale as llama.cpp's CPU backend keeps it, so that the integer
 * kernels multiply the same numbers: for blocks of 32 (its Q8_0
 * activations, for Q8_0 and Q4_0 weights) amax/127 rounded to fp16, as
 * block_q8_0 stores it; for blocks of 256 (Q8_K, for the K-quants) the
 * reciprocal of the fp32 multiplier 127/amax, as quantize_row_q8_K
 * computes it (its q and d carry the block maximum's sign, which cancels
 * in d*q). The fp16 rounding alone moves the logits of a 2-layer synthetic
 * Q8_0 model by 1.7e-2 of their largest, so it is not left out. */
float kv_act_scale(float amax, int32_t blk);

#endif
