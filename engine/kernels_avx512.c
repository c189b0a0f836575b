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

/* Rows are walked KV_MV_STREAMS at a time, each from its own contiguous part
 * of [r0, r1): every part is still read strictly in order (walking adjacent
 * rows together measured 20-40% slower here: the prefetcher loses the
 * stream), but several far-apart streams keep more memory requests in
 * flight per core than one. Each row's sum is formed exactly as a one-row
 * loop forms it (four accumulators over 64 columns, then 16, then scalar),
 * so results do not depend on the number of streams or threads. */
#ifndef KV_MV_STREAMS
#define KV_MV_STREAMS 2
#endif
#define KV_INLINE static inline __attribute__((always_inline))

/* Rows r + k*part + i of W (k < K, i < cnt) into y; K a constant. */
#define PLAIN_MATVEC(NAME, T, LD, SC)                                                                    \
    KV_INLINE void NAME##_k(const T *base, int64_t n, const float *x, float *y, int64_t r, int64_t part,  \
                            int64_t cnt, const int K) {                                                 \
        for (int64_t i = 0; i < cnt; i++) {                                                             \
            const T *w[KV_MV_STREAMS];                                                                  \
            __m512 a[KV_MV_STREAMS][4];                                                                 \
            for (int k = 0; k < K; k++) {                                                               \
                w[k] = base + (r + k * part + i) * n;                                                   \
                a[k][0] = a[k][1] = a[k][2] = a[k][3] = _mm512_setzero_ps();                            \
            }                                                                                           \
            int64_t c = 0;                                                                              \
            for (; c + 64 <= n; c += 64) {                                                              \
                const __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16),             \
                             x2 = _mm512_loadu_ps(x + c + 32), x3 = _mm512_loadu_ps(x + c + 48);        \
                for (int k = 0; k < K; k++) {                                                           \
                    a[k][0] = _mm512_fmadd_ps(LD(w[k] + c), x0, a[k][0]);                               \
                    a[k][1] = _mm512_fmadd_ps(LD(w[k] + c + 16), x1, a[k][1]);                          \
                    a[k][2] = _mm512_fmadd_ps(LD(w[k] + c + 32), x2, a[k][2]);                          \
                    a[k][3] = _mm512_fmadd_ps(LD(w[k] + c + 48), x3, a[k][3]);                          \
                }                                                                                       \
            }                                                                                           \
            for (; c + 16 <= n; c += 16) {                                                              \
                const __m512 x0 = _mm512_loadu_ps(x + c);                                               \
                for (int k = 0; k < K; k++) a[k][0] = _mm512_fmadd_ps(LD(w[k] + c), x0, a[k][0]);       \
            }                                                                                           \
            for (int k = 0; k < K; k++) {                                                               \
                float s = _mm512_reduce_add_ps(                                                         \
                    _mm512_add_ps(_mm512_add_ps(a[k][0], a[k][1]), _mm512_add_ps(a[k][2], a[k][3])));    \
                for (int64_t t = c; t < n; t++) s += SC(w[k] + t) * x[t];                               \
                y[r + k * part + i] = s;                                                                \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    static void NAME(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {           \
        const int64_t part = (r1 - r0) / KV_MV_STREAMS, rest = r0 + part * KV_MV_STREAMS;               \
        if (part > 0) NAME##_k((const T *)W->data, W->cols, x, y, r0, part, part, KV_MV_STREAMS);       \
        NAME##_k((const T *)W->data, W->cols, x, y, rest, 0, r1 - rest, 1);                             \
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

/* KV_MV_STREAMS rows at a time (as above), two blocks per step into two
 * accumulators per row: sum over blocks of d * (q . x). */
#define BLOCK_MATVEC(NAME, BLOCK, BYTES)                                                                 \
    KV_INLINE void NAME##_k(const uint8_t *base, size_t rb, int64_t nb, const float *x, float *y, int64_t r, \
                            int64_t part, int64_t cnt, const int K) {                                   \
        for (int64_t i = 0; i < cnt; i++) {                                                             \
            const uint8_t *p[KV_MV_STREAMS];                                                            \
            __m512 a0[KV_MV_STREAMS], a1[KV_MV_STREAMS];                                                \
            for (int k = 0; k < K; k++) {                                                               \
                p[k] = base + (size_t)(r + k * part + i) * rb;                                          \
                a0[k] = a1[k] = _mm512_setzero_ps();                                                    \
            }                                                                                           \
            int64_t b = 0;                                                                              \
            for (; b + 2 <= nb; b += 2) {                                                               \
                const float *xb = x + b * KV_QK;                                                        \
                const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16),                   \
                             x2 = _mm512_loadu_ps(xb + 32), x3 = _mm512_loadu_ps(xb + 48);              \
                for (int k = 0; k < K; k++) {                                                           \
                    const uint8_t *k0 = p[k] + (size_t)b * (BYTES), *k1 = k0 + (BYTES);                 \
                    __m512 lo, hi;                                                                      \
                    BLOCK(k0, &lo, &hi);                                                                \
                    __m512 t0 = _mm512_fmadd_ps(hi, x1, _mm512_mul_ps(lo, x0));                         \
                    BLOCK(k1, &lo, &hi);                                                                \
                    __m512 t1 = _mm512_fmadd_ps(hi, x3, _mm512_mul_ps(lo, x2));                         \
                    a0[k] = _mm512_fmadd_ps(_mm512_set1_ps(blk_scale(k0)), t0, a0[k]);                  \
                    a1[k] = _mm512_fmadd_ps(_mm512_set1_ps(blk_scale(k1)), t1, a1[k]);                  \
                }                                                                                       \
            }                                                                                           \
            if (b < nb) {                                                                               \
                const float *xb = x + b * KV_QK;                                                        \
                const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);                   \
                for (int k = 0; k < K; k++) {                                                           \
                    const uint8_t *k0 = p[k] + (size_t)b * (BYTES);                                     \
                    __m512 lo, hi;                                                                      \
                    BLOCK(k0, &lo, &hi);                                                                \
                    __m512 t0 = _mm512_fmadd_ps(hi, x1, _mm512_mul_ps(lo, x0));                         \
                    a0[k] = _mm512_fmadd_ps(_mm512_set1_ps(blk_scale(k0)), t0, a0[k]);                  \
                }                                                                                       \
            }                                                                                           \
            for (int k = 0; k < K; k++) y[r + k * part + i] = _mm512_reduce_add_ps(_mm512_add_ps(a0[k], a1[k])); \
        }                                                                                               \
    }                                                                                                   \
    static void NAME(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {           \
        const int64_t nb = W->cols / KV_QK, part = (r1 - r0) / KV_MV_STREAMS, rest = r0 + part * KV_MV_STREAMS; \
        const size_t rb = (size_t)nb * (BYTES);                                                         \
        if (part > 0) NAME##_k((const uint8_t *)W->data, rb, nb, x, y, r0, part, part, KV_MV_STREAMS);  \
        NAME##_k((const uint8_t *)W->data, rb, nb, x, y, rest, 0, r1 - rest, 1);                        \
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

static inline float avx512_dot(const float *a, const float *b, int64_t n) {
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

static void avx512_dots(const float *q, const float *K, int64_t n, int64_t d, float *out) {
    for (int64_t t = 0; t < n; t++) out[t] = avx512_dot(q, K + (size_t)t * d, d);
}

/* o in chunks of 64 floats held in four registers across all t: the same
 * fused multiply-add per element, in the same order, as avx512_axpy into
 * a zeroed o, without reloading and storing o for every t. */
static void avx512_wsum(float *o, const float *w, const float *K, int64_t n, int64_t d) {
    for (int64_t c = 0; c < d; c += 64) {
        const int64_t m = d - c < 64 ? d - c : 64;
        __mmask16 mk[4];
        for (int k = 0; k < 4; k++) {
            int64_t lanes = m - 16 * k;
            mk[k] = lanes >= 16 ? (__mmask16)0xffff : lanes > 0 ? (__mmask16)((1u << lanes) - 1) : 0;
        }
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t t = 0; t < n; t++) {
            if (w[t] == 0.0f) continue;
            const __m512 av = _mm512_set1_ps(w[t]);
            const float *x = K + (size_t)t * d + c;
            a0 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mk[0], x), a0);
            if (mk[1]) a1 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mk[1], x + 16), a1);
            if (mk[2]) a2 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mk[2], x + 32), a2);
            if (mk[3]) a3 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mk[3], x + 48), a3);
        }
        _mm512_mask_storeu_ps(o + c, mk[0], a0);
        _mm512_mask_storeu_ps(o + c + 16, mk[1], a1);
        _mm512_mask_storeu_ps(o + c + 32, mk[2], a2);
        _mm512_mask_storeu_ps(o + c + 48, mk[3], a3);
    }
}

const kv_kernel_table kv_kernels_avx512 = {avx512_matvec_rows, avx512_dequant_rows, avx512_dot,
                                           avx512_axpy,        avx512_dots,         avx512_wsum};
