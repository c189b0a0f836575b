/* kernels_avx512.c - AVX-512 kernels (compiled with -mavx512f -mavx512bw
 * -mavx512vl -mavx512dq -mfma -mf16c; called only when the CPU has them).
 *
 * Matrix-vector products stream each row once, convert the stored type to
 * fp32 in registers
 * (vcvtph2ps for F16, a 16-bit shift for BF16, sign/zero extension for the
 * int8/int4 blocks) and accumulate in fp32. */
#include <immintrin.h>
#include <string.h>

#include "kernels_impl.h"
#include "quant.h"

static inline __m512 ld_f32(const float *p) { return _mm512_loadu_ps(p); }
static inline __m512 ld_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline __m512 ld_bf16(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/* One row at a time, so the weights stream strictly sequentially through
 * memory (the hardware prefetcher keeps one long stream going; walking
 * several rows at once measured 20-40% slower here), with four independent
 * accumulators to hide the FMA latency. */
#define PLAIN_MATVEC(NAME, T, LD, SC)                                                                    \
    static void NAME(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {           \
        const int64_t n = W->cols;                                                                      \
        for (int64_t r = r0; r < r1; r++) {                                                             \
            const T *w = (const T *)W->data + r * n;                                                    \
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),        \
                   a3 = _mm512_setzero_ps();                                                            \
            int64_t c = 0;                                                                              \
            for (; c + 64 <= n; c += 64) {                                                              \
                a0 = _mm512_fmadd_ps(LD(w + c), _mm512_loadu_ps(x + c), a0);                            \
                a1 = _mm512_fmadd_ps(LD(w + c + 16), _mm512_loadu_ps(x + c + 16), a1);                  \
                a2 = _mm512_fmadd_ps(LD(w + c + 32), _mm512_loadu_ps(x + c + 32), a2);                  \
                a3 = _mm512_fmadd_ps(LD(w + c + 48), _mm512_loadu_ps(x + c + 48), a3);                  \
            }                                                                                           \
            for (; c + 16 <= n; c += 16) a0 = _mm512_fmadd_ps(LD(w + c), _mm512_loadu_ps(x + c), a0);   \
            float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))); \
            for (; c < n; c++) s += SC(w + c) * x[c];                                                    \
            y[r] = s;                                                                                   \
        }                                                                                               \
    }

PLAIN_MATVEC(matvec_f32, float, ld_f32, sc_f32)
PLAIN_MATVEC(matvec_f16, uint16_t, ld_f16, sc_f16)
PLAIN_MATVEC(matvec_bf16, uint16_t, ld_bf16, sc_bf16)

static inline float blk_scale(const uint8_t *blk) {
    uint16_t d;
    memcpy(&d, blk, 2);
    return _cvtsh_ss(d);
}

/* The 32 values of a Q8_0 block as two fp32 vectors. */
static inline void q8_0_block(const uint8_t *blk, __m512 *lo, __m512 *hi) {
    *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2))));
    *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18))));
}

/* The 32 values of a Q4_0 block: low nibbles are elements 0..15, high 16..31. */
static inline void q4_0_block(const uint8_t *blk, __m512 *lo, __m512 *hi) {
    __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)));
    const __m512i eight = _mm512_set1_epi32(8), mask = _mm512_set1_epi32(0xf);
    *lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(v, mask), eight));
    *hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(v, 4), eight));
}

/* One row at a time (sequential streaming, as above), two blocks per
 * step into two accumulators: sum over blocks of d * (q . x). */
#define BLOCK_MATVEC(NAME, BLOCK, BYTES)                                                                 \
    static void NAME(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {           \
        const int64_t nb = W->cols / KV_QK;                                                             \
        const size_t rb = (size_t)nb * (BYTES);                                                         \
        for (int64_t r = r0; r < r1; r++) {                                                             \
            const uint8_t *p = (const uint8_t *)W->data + (size_t)r * rb;                               \
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), lo, hi;                          \
            int64_t b = 0;                                                                              \
            for (; b + 2 <= nb; b += 2) {                                                               \
                const uint8_t *k0 = p + (size_t)b * (BYTES), *k1 = k0 + (BYTES);                        \
                const float *xb = x + b * KV_QK;                                                        \
                BLOCK(k0, &lo, &hi);                                                                    \
                __m512 t0 = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb + 16), _mm512_mul_ps(lo, _mm512_loadu_ps(xb))); \
                BLOCK(k1, &lo, &hi);                                                                    \
                __m512 t1 = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb + 48), _mm512_mul_ps(lo, _mm512_loadu_ps(xb + 32))); \
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(blk_scale(k0)), t0, a0);                            \
                a1 = _mm512_fmadd_ps(_mm512_set1_ps(blk_scale(k1)), t1, a1);                            \
            }                                                                                           \
            if (b < nb) {                                                                               \
                const uint8_t *k0 = p + (size_t)b * (BYTES);                                            \
                const float *xb = x + b * KV_QK;                                                        \
                BLOCK(k0, &lo, &hi);                                                                    \
                __m512 t0 = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb + 16), _mm512_mul_ps(lo, _mm512_loadu_ps(xb))); \
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(blk_scale(k0)), t0, a0);                            \
            }                                                                                           \
            y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));                                         \
        }                                                                                               \
    }

BLOCK_MATVEC(matvec_q8_0, q8_0_block, 34)
BLOCK_MATVEC(matvec_q4_0, q4_0_block, 18)

static int avx512_matvec_rows(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {
    switch (W->type) {
    case KV_F32: matvec_f32(W, x, y, r0, r1); return 0;
    case KV_F16: matvec_f16(W, x, y, r0, r1); return 0;
    case KV_BF16: matvec_bf16(W, x, y, r0, r1); return 0;
    case KV_Q8_0: matvec_q8_0(W, x, y, r0, r1); return 0;
    case KV_Q4_0: matvec_q4_0(W, x, y, r0, r1); return 0;
    default: return -1;
    }
}

static int avx512_dequant_rows(const kv_tensor *W, int64_t r0, int64_t r1, float *out) {
    const int64_t n = W->cols, total = (r1 - r0) * n;
    const uint8_t *src = (const uint8_t *)W->data + (size_t)r0 * kv_row_bytes(W);
    int64_t i = 0;
    switch (W->type) {
    case KV_F32: memcpy(out, src, (size_t)total * sizeof(float)); return 0;
    case KV_F16:
        for (; i + 16 <= total; i += 16) _mm512_storeu_ps(out + i, ld_f16((const uint16_t *)src + i));
        for (; i < total; i++) out[i] = sc_f16((const uint16_t *)src + i);
        return 0;
    case KV_BF16:
        for (; i + 16 <= total; i += 16) _mm512_storeu_ps(out + i, ld_bf16((const uint16_t *)src + i));
        for (; i < total; i++) out[i] = sc_bf16((const uint16_t *)src + i);
        return 0;
    case KV_Q8_0:
    case KV_Q4_0: {
        const size_t bytes = W->type == KV_Q8_0 ? 34 : 18;
        for (int64_t b = 0; b < total / KV_QK; b++) {
            const uint8_t *blk = src + (size_t)b * bytes;
            __m512 lo, hi, d = _mm512_set1_ps(blk_scale(blk));
            if (W->type == KV_Q8_0) q8_0_block(blk, &lo, &hi);
            else q4_0_block(blk, &lo, &hi);
            _mm512_storeu_ps(out + b * KV_QK, _mm512_mul_ps(lo, d));
            _mm512_storeu_ps(out + b * KV_QK + 16, _mm512_mul_ps(hi, d));
        }
        return 0;
    }
    default: return -1;
    }
}

static float avx512_dot(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static void avx512_axpy(float *y, float a, const float *x, int64_t n) {
    __m512 av = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

const kv_kernel_table kv_kernels_avx512 = {avx512_matvec_rows, avx512_dequant_rows, avx512_dot, avx512_axpy};
