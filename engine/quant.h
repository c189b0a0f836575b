/* quant.h - scalar conversions between fp32 and the stored weight types.
 * Used by loaders, the converter, the synthetic model writer and tests;
 * the hot paths use the vectorised kernels in kernels.h instead. */
#ifndef KV_QUANT_H
#define KV_QUANT_H

#include <stdint.h>

#include "dtype.h"

float kv_fp16_to_fp32(uint16_t h);
uint16_t kv_fp32_to_fp16(float f);  /* round to nearest even, handles inf/nan/subnormals */
float kv_bf16_to_fp32(uint16_t h);
uint16_t kv_fp32_to_bf16(float f);  /* round to nearest even */

/* Encodes n fp32 values (n a multiple of the block size) into `type`
 * (F32, F16, BF16, Q8_0, Q4_0) as llama.cpp's reference quantizers do:
 * Q8_0: d = amax/127, q = round(x/d); Q4_0: d = max/-8 where max is the
 * value of largest magnitude (sign kept), q = clamp(round(x/d)+8, 0, 15).
 * Returns KV_EINVAL for another type or a bad n. */
int kv_quantize(kv_dtype type, const float *x, void *out, int64_t n);

/* Decodes n values of `type` (not Q8_G) into fp32. */
int kv_dequantize(kv_dtype type, const void *in, float *out, int64_t n);

#endif
