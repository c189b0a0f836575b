/* dtype.h - element types of weight tensors.
 *
 * The numeric values are GGUF's ggml_type ids, so a GGUF tensor's type field
 * maps 1:1. KV_Q8_G is kvbench's own id for llama2.c "ak42" version-2
 * weights: int8 values with one fp32 scale per group of G values, the scales
 * kept in a separate array (see kv_tensor in kernels.h). */
#ifndef KV_DTYPE_H
#define KV_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum kv_dtype {
    KV_F32  = 0,
    KV_F16  = 1,
    KV_Q4_0 = 2,  /* blocks of 32: {f16 d; u8 qs[16]}, 18 bytes */
    KV_Q8_0 = 8,  /* blocks of 32: {f16 d; i8 qs[32]}, 34 bytes */
    KV_BF16 = 30,
    KV_Q8_G = 1000, /* not a GGUF id: int8 + separate fp32 scale per group */
} kv_dtype;

#define KV_QK 32 /* values per Q8_0 / Q4_0 block */

/* Block layouts, packed exactly as in GGUF files. */
typedef struct { uint16_t d; int8_t qs[KV_QK]; } kv_block_q8_0;        /* 34 bytes */
typedef struct { uint16_t d; uint8_t qs[KV_QK / 2]; } kv_block_q4_0;   /* 18 bytes */

/* Values per block (1 for plain types, 32 for Q8_0/Q4_0, 1 for Q8_G whose
 * values are plain int8 bytes). */
static inline int64_t kv_dtype_block_elems(kv_dtype t) {
    return (t == KV_Q4_0 || t == KV_Q8_0) ? KV_QK : 1;
}

/* Bytes per block; 0 for an unknown type. */
static inline size_t kv_dtype_block_bytes(kv_dtype t) {
    switch (t) {
    case KV_F32: return 4;
    case KV_F16: return 2;
    case KV_BF16: return 2;
    case KV_Q8_0: return sizeof(kv_block_q8_0);
    case KV_Q4_0: return sizeof(kv_block_q4_0);
    case KV_Q8_G: return 1;
    default: return 0;
    }
}

/* Bytes of n elements (n must be a multiple of the block size). */
static inline size_t kv_dtype_bytes(kv_dtype t, int64_t n) {
    return (size_t)(n / kv_dtype_block_elems(t)) * kv_dtype_block_bytes(t);
}

/* "f32", "f16", "bf16", "q8_0", "q4_0", "q8_g", or NULL. */
const char *kv_dtype_name(kv_dtype t);
/* Parses a name as above (case-insensitive); returns 0 and sets *out, or KV_EINVAL. */
int kv_dtype_parse(const char *name, kv_dtype *out);

#endif
