/* kernels_impl.h - private: the per-ISA kernel tables behind kernels.h. */
#ifndef KV_KERNELS_IMPL_H
#define KV_KERNELS_IMPL_H

#include <string.h>

#include "kernels.h"
#include "quant.h"

/* One ISA's kernels. A NULL entry falls back to the portable one. */
typedef struct kv_kernel_table {
    /* y[r] for r in [r0, r1) of a weight of type F32/F16/BF16/Q8_0/Q4_0;
     * returns 0 when it handled the type, -1 to fall back. */
    int (*matvec_rows)(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1);
    int (*dequant_rows)(const kv_tensor *W, int64_t r0, int64_t r1, float *out);
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);
    /* out[t] = dot(q, K[t]) for t < n, each bit-identical to dot's */
    void (*dots)(const float *q, const float *K, int64_t n, int64_t d, float *out);
    /* o = sum over t < n with w[t] != 0 of w[t] K[t], bit-identical to
     * zeroing o and calling axpy for each t in order */
    void (*wsum)(float *o, const float *w, const float *K, int64_t n, int64_t d);
} kv_kernel_table;

extern const kv_kernel_table kv_kernels_scalar;
#if defined(KV_X86_DISPATCH)
extern const kv_kernel_table kv_kernels_avx2;
extern const kv_kernel_table kv_kernels_avx512;
#endif

/* One element (the vector kernels' tails), read with memcpy: rows may be unaligned. */
static inline float sc_f32(const float *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}
static inline float sc_f16(const uint16_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return kv_fp16_to_fp32(v);
}
static inline float sc_bf16(const uint16_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return kv_bf16_to_fp32(v);
}

/* Bytes of one row of W. */
static inline size_t kv_row_bytes(const kv_tensor *W) { return kv_dtype_bytes(W->type, W->cols); }

#endif
