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
    /* K-quants: super-blocks of 256 values (layouts below) */
    KV_Q2_K = 10,
    KV_Q3_K = 11,
    KV_Q4_K = 12,
    KV_Q5_K = 13,
    KV_Q6_K = 14,
    KV_BF16 = 30,
    KV_Q8_G = 1000, /* not a GGUF id: int8 + separate fp32 scale per group */
} kv_dtype;

#define KV_QK 32   /* values per Q8_0 / Q4_0 block */
#define KV_QK_K 256 /* values per K-quant super-block */

/* Block layouts, packed exactly as in GGUF files. */
typedef struct { uint16_t d; int8_t qs[KV_QK]; } kv_block_q8_0;        /* 34 bytes */
typedef struct { uint16_t d; uint8_t qs[KV_QK / 2]; } kv_block_q4_0;   /* 18 bytes */

/* K-quant super-blocks, as GGUF stores them (ggml-common.h's block_q*_K).
 * A value is d_s * q - m_s, d_s and m_s its sub-block's scale and offset
 * (quant.c spells out each layout). "d" fields are fp16 super-block scales. */
typedef struct {            /* 2.625 bits: 16 sub-blocks of 16 */
    uint8_t scales[16];     /* low nibble: scale, high nibble: min, both x d / dmin */
    uint8_t qs[64];         /* 2-bit quants */
    uint16_t d, dmin;
} kv_block_q2_k;            /* 84 bytes */
typedef struct {            /* 3.4375 bits: 16 sub-blocks of 16, no min */
    uint8_t hmask[32];      /* third bit of each quant */
    uint8_t qs[64];         /* low 2 bits */
    uint8_t scales[12];     /* 16 6-bit scales, stored +32 */
    uint16_t d;
} kv_block_q3_k;            /* 110 bytes */
typedef struct {            /* 4.5 bits: 8 sub-blocks of 32 */
    uint16_t d, dmin;
    uint8_t scales[12];     /* 8 6-bit scales and 8 6-bit mins */
    uint8_t qs[128];        /* 4-bit quants */
} kv_block_q4_k;            /* 144 bytes */
typedef struct {            /* 5.5 bits: 8 sub-blocks of 32 */
    uint16_t d, dmin;
    uint8_t scales[12];     /* as Q4_K */
    uint8_t qh[32];         /* fifth bit of each quant */
    uint8_t qs[128];        /* low 4 bits */
} kv_block_q5_k;            /* 176 bytes */
typedef struct {            /* 6.5625 bits: 16 sub-blocks of 16, no min */
    uint8_t ql[128];        /* low 4 bits */
    uint8_t qh[64];         /* high 2 bits */
    int8_t scales[16];      /* 8-bit scales */
    uint16_t d;
} kv_block_q6_k;            /* 210 bytes */

_Static_assert(sizeof(kv_block_q2_k) == 84, "Q2_K block size");
_Static_assert(sizeof(kv_block_q3_k) == 110, "Q3_K block size");
_Static_assert(sizeof(kv_block_q4_k) == 144, "Q4_K block size");
_Static_assert(sizeof(kv_block_q5_k) == 176, "Q5_K block size");
_Static_assert(sizeof(kv_block_q6_k) == 210, "Q6_K block size");

/* A K-quant type (Q2_K..Q6_K)? */
static inline int kv_dtype_is_kquant(kv_dtype t) { return t >= KV_Q2_K && t <= KV_Q6_K; }

/* Values per block (1 for plain types, 32 for Q8_0/Q4_0, 256 for the
 * K-quants, 1 for Q8_G whose values are plain int8 bytes). */
static inline int64_t kv_dtype_block_elems(kv_dtype t) {
    return (t == KV_Q4_0 || t == KV_Q8_0) ? KV_QK : kv_dtype_is_kquant(t) ? KV_QK_K : 1;
}

/* Bytes per block; 0 for an unknown type. */
static inline size_t kv_dtype_block_bytes(kv_dtype t) {
    switch (t) {
    case KV_F32: return 4;
    case KV_F16: return 2;
    case KV_BF16: return 2;
    case KV_Q8_0: return sizeof(kv_block_q8_0);
    case KV_Q4_0: return sizeof(kv_block_q4_0);
    case KV_Q2_K: return sizeof(kv_block_q2_k);
    case KV_Q3_K: return sizeof(kv_block_q3_k);
    case KV_Q4_K: return sizeof(kv_block_q4_k);
    case KV_Q5_K: return sizeof(kv_block_q5_k);
    case KV_Q6_K: return sizeof(kv_block_q6_k);
    case KV_Q8_G: return 1;
    default: return 0;
    }
}

/* Bytes of n elements (n must be a multiple of the block size). */
static inline size_t kv_dtype_bytes(kv_dtype t, int64_t n) {
    return (size_t)(n / kv_dtype_block_elems(t)) * kv_dtype_block_bytes(t);
}

/* "f32", "f16", "bf16", "q8_0", "q4_0", "q2_k".."q6_k", "q8_g", or NULL. */
const char *kv_dtype_name(kv_dtype t);
/* Parses a name as above (case-insensitive); returns 0 and sets *out, or KV_EINVAL. */
int kv_dtype_parse(const char *name, kv_dtype *out);

#endif
