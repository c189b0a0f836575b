/* kernels_avx2.c - AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma
 * -mf16c; called only when the CPU has them). The same structure as the
 * AVX-512 file, eight lanes wide. */
#include <immintrin.h>
#include <string.h>

#include "kernels_impl.h"
#include "quant.h"

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 ld_f32(const float *p) { return _mm256_loadu_ps(p); }
static inline __m256 ld_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256 ld_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/* One row at a time (sequential streaming), four accumulators. */
#define PLAIN_MATVEC(NAME, T, LD, SC)                                                                    \
    static void NAME(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {           \
        const int64_t n = W->cols;                                                                      \
        for (int64_t r = r0; r < r1; r++) {                                                             \
            const T *w = (const T *)W->data + r * n;                                                    \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),        \
                   a3 = _mm256_setzero_ps();                                                            \
            int64_t c = 0;                                                                              \
            for (; c + 32 <= n; c += 32) {                                                              \
                a0 = _mm256_fmadd_ps(LD(w + c), _mm256_loadu_ps(x + c), a0);                            \
                a1 = _mm256_fmadd_ps(LD(w + c + 8), _mm256_loadu_ps(x + c + 8), a1);                    \
                a2 = _mm256_fmadd_ps(LD(w + c + 16), _mm256_loadu_ps(x + c + 16), a2);                  \
                a3 = _mm256_fmadd_ps(LD(w + c + 24), _mm256_loadu_ps(x + c + 24), a3);                  \
            }                                                                                           \
            for (; c + 8 <= n; c += 8) a0 = _mm256_fmadd_ps(LD(w + c), _mm256_loadu_ps(x + c), a0);     \
            float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));                \
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

static inline __m256 i8x8(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* The 32 values of a Q8_0 block as four fp32 vectors. */
static inline void q8_0_block(const uint8_t *blk, __m256 v[4]) {
    for (int k = 0; k < 4; k++) v[k] = i8x8(blk + 2 + 8 * k);
}

/* Q4_0: bytes 0..15 hold elements j (low nibble) and j+16 (high nibble). */
static inline void q4_0_block(const uint8_t *blk, __m256 v[4]) {
    const __m256i eight = _mm256_set1_epi32(8), mask = _mm256_set1_epi32(0xf);
    for (int h = 0; h < 2; h++) {
        __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * h)));
        v[h] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(b, mask), eight));
        v[h + 2] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(b, 4), eight));
    }
}

static inline __m256 block_dot(const __m256 v[4], const float *x) {
    __m256 t = _mm256_mul_ps(v[0], _mm256_loadu_ps(x));
    t = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(x + 8), t);
    t = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(x + 16), t);
    return _mm256_fmadd_ps(v[3], _mm256_loadu_ps(x + 24), t);
}

/* One row at a time, two blocks per step into two accumulators. */
#define BLOCK_MATVEC(NAME, BLOCK, BYTES)                                                              \
    static void NAME(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {        \
        const int64_t nb = W->cols / KV_QK;                                                          \
        const size_t rb = (size_t)nb * (BYTES);                                                      \
        for (int64_t r = r0; r < r1; r++) {                                                          \
            const uint8_t *p = (const uint8_t *)W->data + (size_t)r * rb;                            \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), v[4];                         \
            int64_t b = 0;                                                                           \
            for (; b + 2 <= nb; b += 2) {                                                            \
                const uint8_t *k0 = p + (size_t)b * (BYTES), *k1 = k0 + (BYTES);                     \
                BLOCK(k0, v);                                                                        \
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(blk_scale(k0)), block_dot(v, x + b * KV_QK), a0); \
                BLOCK(k1, v);                                                                        \
                a1 = _mm256_fmadd_ps(_mm256_set1_ps(blk_scale(k1)), block_dot(v, x + (b + 1) * KV_QK), a1); \
            }                                                                                        \
            if (b < nb) {                                                                            \
                const uint8_t *k0 = p + (size_t)b * (BYTES);                                         \
                BLOCK(k0, v);                                                                        \
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(blk_scale(k0)), block_dot(v, x + b * KV_QK), a0); \
            }                                                                                        \
            y[r] = hsum(_mm256_add_ps(a0, a1));                                                      \
        }                                                                                            \
    }

BLOCK_MATVEC(matvec_q8_0, q8_0_block, 34)
BLOCK_MATVEC(matvec_q4_0, q4_0_block, 18)

static int avx2_matvec_rows(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {
    switch (W->type) {
    case KV_F32: matvec_f32(W, x, y, r0, r1); return 0;
    case KV_F16: matvec_f16(W, x, y, r0, r1); return 0;
    case KV_BF16: matvec_bf16(W, x, y, r0, r1); return 0;
    case KV_Q8_0: matvec_q8_0(W, x, y, r0, r1); return 0;
    case KV_Q4_0: matvec_q4_0(W, x, y, r0, r1); return 0;
    default: return -1;
    }
}

static int avx2_dequant_rows(const kv_tensor *W, int64_t r0, int64_t r1, float *out) {
    const int64_t total = (r1 - r0) * W->cols;
    const uint8_t *src = (const uint8_t *)W->data + (size_t)r0 * kv_row_bytes(W);
    int64_t i = 0;
    switch (W->type) {
    case KV_F32: memcpy(out, src, (size_t)total * sizeof(float)); return 0;
    case KV_F16:
        for (; i + 8 <= total; i += 8) _mm256_storeu_ps(out + i, ld_f16((const uint16_t *)src + i));
        for (; i < total; i++) out[i] = sc_f16((const uint16_t *)src + i);
        return 0;
    case KV_BF16:
        for (; i + 8 <= total; i += 8) _mm256_storeu_ps(out + i, ld_bf16((const uint16_t *)src + i));
        for (; i < total; i++) out[i] = sc_bf16((const uint16_t *)src + i);
        return 0;
    case KV_Q8_0:
    case KV_Q4_0: {
        const size_t bytes = W->type == KV_Q8_0 ? 34 : 18;
        for (int64_t b = 0; b < total / KV_QK; b++) {
            const uint8_t *blk = src + (size_t)b * bytes;
            __m256 v[4], d = _mm256_set1_ps(blk_scale(blk));
            if (W->type == KV_Q8_0) q8_0_block(blk, v);
            else q4_0_block(blk, v);
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(out + b * KV_QK + 8 * k, _mm256_mul_ps(v[k], d));
        }
        return 0;
    }
    default: return -1;
    }
}

static float avx2_dot(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void avx2_axpy(float *y, float a, const float *x, int64_t n) {
    __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

const kv_kernel_table kv_kernels_avx2 = {avx2_matvec_rows, avx2_dequant_rows, avx2_dot, avx2_axpy};
