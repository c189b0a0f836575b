/* kernels_avx2.c - AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma
 * -mf16c; called only when the CPU has them). The same structure as the
 * AVX-512 file, eight lanes wide. */
#include <immintrin.h>
#include <math.h>
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

/* KV_MV_STREAMS rows at a time, each from its own contiguous part of
 * [r0, r1), as in the AVX-512 file (two: sixteen YMM registers hold two
 * rows' four accumulators and the four x vectors). Each row's sum is formed
 * exactly as a one-row loop forms it. */
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
            __m256 a[KV_MV_STREAMS][4];                                                                 \
            for (int k = 0; k < K; k++) {                                                               \
                w[k] = base + (r + k * part + i) * n;                                                   \
                a[k][0] = a[k][1] = a[k][2] = a[k][3] = _mm256_setzero_ps();                            \
            }                                                                                           \
            int64_t c = 0;                                                                              \
            for (; c + 32 <= n; c += 32) {                                                              \
                const __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8),              \
                             x2 = _mm256_loadu_ps(x + c + 16), x3 = _mm256_loadu_ps(x + c + 24);        \
                for (int k = 0; k < K; k++) {                                                           \
                    a[k][0] = _mm256_fmadd_ps(LD(w[k] + c), x0, a[k][0]);                               \
                    a[k][1] = _mm256_fmadd_ps(LD(w[k] + c + 8), x1, a[k][1]);                           \
                    a[k][2] = _mm256_fmadd_ps(LD(w[k] + c + 16), x2, a[k][2]);                          \
                    a[k][3] = _mm256_fmadd_ps(LD(w[k] + c + 24), x3, a[k][3]);                          \
                }                                                                                       \
            }                                                                                           \
            for (; c + 8 <= n; c += 8) {                                                                \
                const __m256 x0 = _mm256_loadu_ps(x + c);                                               \
                for (int k = 0; k < K; k++) a[k][0] = _mm256_fmadd_ps(LD(w[k] + c), x0, a[k][0]);       \
            }                                                                                           \
            for (int k = 0; k < K; k++) {                                                               \
                float s = hsum(_mm256_add_ps(_mm256_add_ps(a[k][0], a[k][1]), _mm256_add_ps(a[k][2], a[k][3]))); \
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

/* KV_MV_STREAMS rows at a time (as above), two blocks per step into two
 * accumulators per row. */
#define BLOCK_MATVEC(NAME, BLOCK, BYTES)                                                                 \
    KV_INLINE void NAME##_k(const uint8_t *base, size_t rb, int64_t nb, const float *x, float *y, int64_t r, \
                            int64_t part, int64_t cnt, const int K) {                                   \
        for (int64_t i = 0; i < cnt; i++) {                                                             \
            const uint8_t *p[KV_MV_STREAMS];                                                            \
            __m256 a0[KV_MV_STREAMS], a1[KV_MV_STREAMS], v[4];                                          \
            for (int k = 0; k < K; k++) {                                                               \
                p[k] = base + (size_t)(r + k * part + i) * rb;                                          \
                a0[k] = a1[k] = _mm256_setzero_ps();                                                    \
            }                                                                                           \
            int64_t b = 0;                                                                              \
            for (; b + 2 <= nb; b += 2) {                                                               \
                for (int k = 0; k < K; k++) {                                                           \
                    const uint8_t *k0 = p[k] + (size_t)b * (BYTES), *k1 = k0 + (BYTES);                 \
                    BLOCK(k0, v);                                                                       \
                    a0[k] = _mm256_fmadd_ps(_mm256_set1_ps(blk_scale(k0)), block_dot(v, x + b * KV_QK), a0[k]); \
                    BLOCK(k1, v);                                                                       \
                    a1[k] = _mm256_fmadd_ps(_mm256_set1_ps(blk_scale(k1)), block_dot(v, x + (b + 1) * KV_QK), a1[k]); \
                }                                                                                       \
            }                                                                                           \
            if (b < nb) {                                                                               \
                for (int k = 0; k < K; k++) {                                                           \
                    const uint8_t *k0 = p[k] + (size_t)b * (BYTES);                                     \
                    BLOCK(k0, v);                                                                       \
                    a0[k] = _mm256_fmadd_ps(_mm256_set1_ps(blk_scale(k0)), block_dot(v, x + b * KV_QK), a0[k]); \
                }                                                                                       \
            }                                                                                           \
            for (int k = 0; k < K; k++) y[r + k * part + i] = hsum(_mm256_add_ps(a0[k], a1[k]));        \
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

/* ------------------------------------------------------------- K-quants
 *
 * As in the AVX-512 file (the sum over runs of 16 of d_g * (q_g . x_g),
 * less the offsets times the per-16 sums of x), eight lanes wide: a
 * quarter of a super-block is eight vectors. */

#define KQ_MAX_COLS 65536 /* per-16 sums of x on the stack; longer rows take the portable path */

static inline __m256i zx8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
static inline __m256i srl(__m256i v, int n) { return _mm256_srli_epi32(v, n); }
static inline __m256i and_(__m256i v, int m) { return _mm256_and_si256(v, _mm256_set1_epi32(m)); }

/* Values 64h .. 64h+63 of super-block blk as eight vectors (8 each, in order). */
KV_INLINE void kq_quarter(const kv_dtype t, const uint8_t *blk, const int h, __m256 q[8]) {
    const int c = h / 2, j0 = 2 * (h & 1), j1 = j0 + 1;
    __m256i v[8];
    if (t == KV_Q4_K || t == KV_Q5_K) {
        const uint8_t *qs = blk + (t == KV_Q4_K ? 16 : 48) + 32 * h;
        for (int k = 0; k < 4; k++) {
            const __m256i a = zx8(qs + 8 * k);
            v[k] = and_(a, 15), v[k + 4] = srl(a, 4);
            if (t == KV_Q5_K) { /* fifth bit: qh[l] bit 2h (low nibbles) or 2h+1 (high) */
                const __m256i hb = zx8(blk + 16 + 8 * k);
                v[k] = _mm256_add_epi32(v[k], _mm256_slli_epi32(and_(srl(hb, 2 * h), 1), 4));
                v[k + 4] = _mm256_add_epi32(v[k + 4], _mm256_slli_epi32(and_(srl(hb, 2 * h + 1), 1), 4));
            }
        }
    } else if (t == KV_Q2_K || t == KV_Q3_K) { /* 2-bit fields 2j of qs[32c + l] */
        const uint8_t *qs = blk + (t == KV_Q2_K ? 16 : 32) + 32 * c;
        for (int k = 0; k < 4; k++) {
            const __m256i a = zx8(qs + 8 * k);
            v[k] = and_(srl(a, 2 * j0), 3), v[k + 4] = and_(srl(a, 2 * j1), 3);
            if (t == KV_Q3_K) { /* minus 4 unless hmask[l] has bit 4c+j */
                const __m256i hb = zx8(blk + 8 * k), four = _mm256_set1_epi32(4);
                v[k] = _mm256_sub_epi32(_mm256_add_epi32(v[k], _mm256_slli_epi32(and_(srl(hb, 4 * c + j0), 1), 2)), four);
                v[k + 4] =
                    _mm256_sub_epi32(_mm256_add_epi32(v[k + 4], _mm256_slli_epi32(and_(srl(hb, 4 * c + j1), 1), 2)), four);
            }
        }
    } else { /* Q6_K: low nibble 4(h&1) of ql[64c + l] / ql[64c + 32 + l], 2-bit field 2j of qh[32c + l] */
        const uint8_t *ql = blk + 64 * c, *qh = blk + 128 + 32 * c;
        const int s = 4 * (h & 1);
        const __m256i off = _mm256_set1_epi32(32);
        for (int k = 0; k < 4; k++) {
            const __m256i g = zx8(qh + 8 * k);
            v[k] = _mm256_or_si256(and_(srl(zx8(ql + 8 * k), s), 15), _mm256_slli_epi32(and_(srl(g, 2 * j0), 3), 4));
            v[k + 4] = _mm256_or_si256(and_(srl(zx8(ql + 32 + 8 * k), s), 15), _mm256_slli_epi32(and_(srl(g, 2 * j1), 3), 4));
            v[k] = _mm256_sub_epi32(v[k], off), v[k + 4] = _mm256_sub_epi32(v[k + 4], off);
        }
    }
    for (int k = 0; k < 8; k++) q[k] = _mm256_cvtepi32_ps(v[k]);
}

/* 16 scale or min bytes from kq_scale_ints' words (Q4_K/Q5_K: each repeated). */
KV_INLINE __m128i kq_bytes(const kv_dtype t, const uint32_t w[4]) {
    if (t == KV_Q4_K || t == KV_Q5_K) {
        const __m128i v = _mm_set_epi32(0, 0, (int)w[1], (int)w[0]);
        return _mm_unpacklo_epi8(v, v);
    }
    return _mm_set_epi32((int)w[3], (int)w[2], (int)w[1], (int)w[0]);
}

/* The 16 scales d[g] and offsets m[g] of a super-block. */
KV_INLINE void kq_scales(const kv_dtype t, const uint8_t *blk, float d[16], float m[16]) {
    uint32_t sc[4], mn[4];
    uint16_t dm[2];
    kq_scale_ints(t, blk, sc, mn, dm);
    const __m256 dd = _mm256_set1_ps(_cvtsh_ss(dm[0])), dmin = _mm256_set1_ps(_cvtsh_ss(dm[1]));
    const __m128i s = kq_bytes(t, sc), n = kq_bytes(t, mn);
    _mm256_storeu_ps(d, _mm256_mul_ps(dd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s))));
    _mm256_storeu_ps(d + 8, _mm256_mul_ps(dd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(s, 8)))));
    _mm256_storeu_ps(m, _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(n))));
    _mm256_storeu_ps(m + 8, _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(n, 8)))));
}

/* One super-block of one row into its accumulators. */
KV_INLINE void kq_block(const kv_dtype t, const uint8_t *blk, const float *x, const float *xs, __m256 acc[2], __m256 *macc) {
    float d[16], m[16];
    __m256 q[8];
    kq_scales(t, blk, d, m);
    if (t == KV_Q2_K || t == KV_Q4_K || t == KV_Q5_K) {
        *macc = _mm256_fmadd_ps(_mm256_loadu_ps(m), _mm256_loadu_ps(xs), *macc);
        *macc = _mm256_fmadd_ps(_mm256_loadu_ps(m + 8), _mm256_loadu_ps(xs + 8), *macc);
    }
    for (int h = 0; h < 4; h++) {
        kq_quarter(t, blk, h, q);
        const float *xh = x + 64 * h;
        for (int k = 0; k < 4; k++) { /* a run of 16: vectors 2k, 2k+1 */
            __m256 s = _mm256_fmadd_ps(q[2 * k + 1], _mm256_loadu_ps(xh + 16 * k + 8), _mm256_mul_ps(q[2 * k], _mm256_loadu_ps(xh + 16 * k)));
            acc[k & 1] = _mm256_fmadd_ps(_mm256_set1_ps(d[4 * h + k]), s, acc[k & 1]);
        }
    }
}

/* Rows r + k*part + i (k < K, i < cnt), as the other kernels walk them. */
KV_INLINE void kq_rows(const kv_dtype t, const uint8_t *base, size_t rb, int64_t nb, const float *x, const float *xs,
                       float *y, int64_t r, int64_t part, int64_t cnt, const int K) {
    const size_t bb = kv_dtype_block_bytes(t);
    for (int64_t i = 0; i < cnt; i++) {
        const uint8_t *p[KV_MV_STREAMS];
        __m256 acc[KV_MV_STREAMS][2], macc[KV_MV_STREAMS];
        for (int k = 0; k < K; k++) {
            p[k] = base + (size_t)(r + k * part + i) * rb;
            acc[k][0] = acc[k][1] = macc[k] = _mm256_setzero_ps();
        }
        for (int64_t b = 0; b < nb; b++)
            for (int k = 0; k < K; k++) kq_block(t, p[k] + (size_t)b * bb, x + b * 256, xs + b * 16, acc[k], &macc[k]);
        for (int k = 0; k < K; k++) y[r + k * part + i] = hsum(_mm256_sub_ps(_mm256_add_ps(acc[k][0], acc[k][1]), macc[k]));
    }
}

/* Per-16 sums of x, each as two vectors added and reduced. */
static void kq_xsums(const float *x, int64_t n, float *xs) {
    for (int64_t g = 0; g < n / 16; g++) xs[g] = hsum(_mm256_add_ps(_mm256_loadu_ps(x + 16 * g), _mm256_loadu_ps(x + 16 * g + 8)));
}

#define KQ_MATVEC(NAME, T)                                                                              \
    static void NAME(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {           \
        float xs[KQ_MAX_COLS / 16];                                                                     \
        const int64_t nb = W->cols / 256, part = (r1 - r0) / KV_MV_STREAMS, rest = r0 + part * KV_MV_STREAMS; \
        const size_t rb = (size_t)nb * kv_dtype_block_bytes(T);                                         \
        kq_xsums(x, W->cols, xs);                                                                       \
        if (part > 0) kq_rows(T, (const uint8_t *)W->data, rb, nb, x, xs, y, r0, part, part, KV_MV_STREAMS); \
        kq_rows(T, (const uint8_t *)W->data, rb, nb, x, xs, y, rest, 0, r1 - rest, 1);                  \
    }

KQ_MATVEC(matvec_q2_k, KV_Q2_K)
KQ_MATVEC(matvec_q3_k, KV_Q3_K)
KQ_MATVEC(matvec_q4_k, KV_Q4_K)
KQ_MATVEC(matvec_q5_k, KV_Q5_K)
KQ_MATVEC(matvec_q6_k, KV_Q6_K)

/* n/256 super-blocks into fp32, bit-identical to the portable decoder. */
KV_INLINE void kq_dequant(const kv_dtype t, const uint8_t *src, int64_t nb, float *out) {
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = src + (size_t)b * kv_dtype_block_bytes(t);
        float d[16], m[16];
        __m256 q[8];
        kq_scales(t, blk, d, m);
        for (int h = 0; h < 4; h++) {
            kq_quarter(t, blk, h, q);
            for (int k = 0; k < 8; k++)
                _mm256_storeu_ps(out + b * 256 + 64 * h + 8 * k, _mm256_sub_ps(_mm256_mul_ps(q[k], _mm256_set1_ps(d[4 * h + k / 2])),
                                                                              _mm256_set1_ps(m[4 * h + k / 2])));
        }
    }
}

static int kq_matvec_rows(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {
    if (W->cols > KQ_MAX_COLS) return -1;
    switch (W->type) {
    case KV_Q2_K: matvec_q2_k(W, x, y, r0, r1); return 0;
    case KV_Q3_K: matvec_q3_k(W, x, y, r0, r1); return 0;
    case KV_Q4_K: matvec_q4_k(W, x, y, r0, r1); return 0;
    case KV_Q5_K: matvec_q5_k(W, x, y, r0, r1); return 0;
    case KV_Q6_K: matvec_q6_k(W, x, y, r0, r1); return 0;
    default: return -1;
    }
}

static int kq_dequant_rows(const kv_tensor *W, int64_t r0, int64_t r1, float *out) {
    const uint8_t *src = (const uint8_t *)W->data + (size_t)r0 * kv_row_bytes(W);
    const int64_t nb = (r1 - r0) * W->cols / 256;
    switch (W->type) {
    case KV_Q2_K: kq_dequant(KV_Q2_K, src, nb, out); return 0;
    case KV_Q3_K: kq_dequant(KV_Q3_K, src, nb, out); return 0;
    case KV_Q4_K: kq_dequant(KV_Q4_K, src, nb, out); return 0;
    case KV_Q5_K: kq_dequant(KV_Q5_K, src, nb, out); return 0;
    case KV_Q6_K: kq_dequant(KV_Q6_K, src, nb, out); return 0;
    default: return -1;
    }
}

static int avx2_matvec_rows(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {
    switch (W->type) {
    case KV_F32: matvec_f32(W, x, y, r0, r1); return 0;
    case KV_F16: matvec_f16(W, x, y, r0, r1); return 0;
    case KV_BF16: matvec_bf16(W, x, y, r0, r1); return 0;
    case KV_Q8_0: matvec_q8_0(W, x, y, r0, r1); return 0;
    case KV_Q4_0: matvec_q4_0(W, x, y, r0, r1); return 0;
    default: return kq_matvec_rows(W, x, y, r0, r1);
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
    default: return kq_dequant_rows(W, r0, r1, out);
    }
}

static inline float avx2_dot(const float *a, const float *b, int64_t n) {
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

/* kv_exp_f32 in 8 lanes: the same operations, in the same order. */
static inline __m256 avx2_exp(__m256 x) {
    const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(KV_EXP_MIN), _CMP_LT_OQ);
    x = _mm256_min_ps(x, _mm256_set1_ps(KV_EXP_MAX));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(KV_EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(KV_EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(KV_EXP_LN2_LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(KV_EXP_C7), r, _mm256_set1_ps(KV_EXP_C6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KV_EXP_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KV_EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KV_EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KV_EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* Lanes [0, left) of 8 on (all from 8 up). */
static inline __m256i avx2_tail(int64_t left) {
    const int64_t m = left < 0 ? 0 : left > 8 ? 8 : left;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* x[i, i+8), lanes past n as `fill`. */
static inline __m256 avx2_load_tail(const float *x, int64_t left, __m256 fill) {
    if (left >= 8) return _mm256_loadu_ps(x);
    const __m256i m = avx2_tail(left);
    return _mm256_blendv_ps(fill, _mm256_maskload_ps(x, m), _mm256_castsi256_ps(m));
}

static inline void avx2_store_tail(float *x, int64_t left, __m256 v) {
    if (left >= 8) _mm256_storeu_ps(x, v);
    else if (left > 0) _mm256_maskstore_ps(x, avx2_tail(left), v);
}

/* The portable softmax's arithmetic (kernels.c): element i in lane i % 16,
 * lanes 0-7 in lo and 8-15 in hi. */
static void avx2_softmax(float *x, int64_t n) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 mv = ninf;
    for (int64_t i = 0; i < n; i += 8) mv = _mm256_max_ps(mv, avx2_load_tail(x + i, n - i, ninf));
    float m8[8], mx = -INFINITY;
    _mm256_storeu_ps(m8, mv);
    for (int k = 0; k < 8; k++) mx = m8[k] > mx ? m8[k] : mx;
    const __m256 mxv = _mm256_set1_ps(mx);
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    for (int64_t i = 0; i < n; i += 16) {
        const __m256 e0 = avx2_exp(_mm256_sub_ps(avx2_load_tail(x + i, n - i, ninf), mxv));
        avx2_store_tail(x + i, n - i, e0);
        lo = _mm256_add_ps(lo, e0);
        if (i + 8 >= n) break;
        const __m256 e1 = avx2_exp(_mm256_sub_ps(avx2_load_tail(x + i + 8, n - i - 8, ninf), mxv));
        avx2_store_tail(x + i + 8, n - i - 8, e1);
        hi = _mm256_add_ps(hi, e1);
    }
    float lanes[KV_SOFTMAX_LANES];
    _mm256_storeu_ps(lanes, lo);
    _mm256_storeu_ps(lanes + 8, hi);
    const __m256 inv = _mm256_set1_ps(1.0f / kv_sum_lanes(lanes));
    for (int64_t i = 0; i < n; i += 8) avx2_store_tail(x + i, n - i, _mm256_mul_ps(avx2_load_tail(x + i, n - i, inv), inv));
}

/* hsum of four registers at once, [hsum a, hsum b, hsum c, hsum d], by
 * hsum's tree: 128-bit halves, then lanes {0,1} + {2,3}, then 0 + 1. */
static inline __m128 avx2_hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 ab = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
    const __m256 cd = _mm256_add_ps(_mm256_permute2f128_ps(c, d, 0x20), _mm256_permute2f128_ps(c, d, 0x31));
    /* per 128-bit lane: [a0+a2, a1+a3, c0+c2, c1+c3] and the same of b, d */
    const __m256 z = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 r = _mm256_add_ps(_mm256_shuffle_ps(z, z, _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm256_shuffle_ps(z, z, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm_unpacklo_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
}

/* Four keys per pass, each key's products and adds exactly as avx2_dot
 * makes them (the scalar tail after the horizontal sum included). */
static void avx2_dots(const float *q, const float *K, int64_t n, int64_t d, float *out) {
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
        const float *k[4] = {K + (size_t)t * d, K + (size_t)(t + 1) * d, K + (size_t)(t + 2) * d,
                             K + (size_t)(t + 3) * d};
        __m256 s0[4], s1[4];
        for (int j = 0; j < 4; j++) s0[j] = s1[j] = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 16 <= d; i += 16) {
            const __m256 x0 = _mm256_loadu_ps(q + i), x1 = _mm256_loadu_ps(q + i + 8);
            for (int j = 0; j < 4; j++) {
                s0[j] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k[j] + i), s0[j]);
                s1[j] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(k[j] + i + 8), s1[j]);
            }
        }
        for (; i + 8 <= d; i += 8) {
            const __m256 x0 = _mm256_loadu_ps(q + i);
            for (int j = 0; j < 4; j++) s0[j] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k[j] + i), s0[j]);
        }
        float r[4];
        _mm_storeu_ps(r, avx2_hsum4(_mm256_add_ps(s0[0], s1[0]), _mm256_add_ps(s0[1], s1[1]),
                                    _mm256_add_ps(s0[2], s1[2]), _mm256_add_ps(s0[3], s1[3])));
        for (int j = 0; j < 4; j++) {
            float s = r[j];
            for (int64_t e = i; e < d; e++) s += q[e] * k[j][e];
            out[t + j] = s;
        }
    }
    for (; t < n; t++) out[t] = avx2_dot(q, K + (size_t)t * d, d);
}

/* o in chunks of 32 floats held in four registers across all t (the
 * d % 8 tail in scalars, written as avx2_axpy's tail is): the same
 * arithmetic per element, in the same order, as avx2_axpy into a zeroed o.
 * Rows of type T, 8 values loaded as floats by LD, one by SC: avx2_wsum
 * over float rows, wsum_f16 over f16 rows (F16C) for kv_wsum_kv. */
#define PLAIN_WSUM(NAME, T, LD, SC)                                                                     \
    static void NAME(float *o, const float *w, const T *K, int64_t n, int64_t d) {                      \
        const int64_t d8 = d / 8 * 8;                                                                   \
        for (int64_t c = 0; c < d8; c += 32) {                                                          \
            const int nv = (int)((d8 - c < 32 ? d8 - c : 32) / 8);                                      \
            __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()}; \
            for (int64_t t = 0; t < n; t++) {                                                           \
                if (w[t] == 0.0f) continue;                                                             \
                const __m256 av = _mm256_set1_ps(w[t]);                                                 \
                const T *x = K + (size_t)t * d + c;                                                     \
                for (int k = 0; k < nv; k++) a[k] = _mm256_fmadd_ps(av, LD(x + 8 * k), a[k]);          \
            }                                                                                           \
            for (int k = 0; k < nv; k++) _mm256_storeu_ps(o + c + 8 * k, a[k]);                         \
        }                                                                                               \
        for (int64_t i = d8; i < d; i++) {                                                              \
            float y = 0.0f;                                                                             \
            for (int64_t t = 0; t < n; t++)                                                             \
                if (w[t] != 0.0f) y += w[t] * SC(K + (size_t)t * d + i);                                \
            o[i] = y;                                                                                   \
        }                                                                                               \
    }
PLAIN_WSUM(avx2_wsum, float, ld_f32, sc_f32)
PLAIN_WSUM(wsum_f16, uint16_t, ld_f16, sc_f16)

/* Over q8_0 rows (d a multiple of 32): two blocks of o (eight registers)
 * across all t per pass, so a head of 64 values reads each row once; each
 * value is d * q in fp32 (as kv_dequantize gives it) before the
 * multiply-add, so the sum is the float path's over the dequantized rows. */
static void wsum_q8_0(float *o, const float *w, const uint8_t *V, int64_t n, int64_t d) {
    const int64_t nb = d / KV_QK;
    const size_t rb = (size_t)nb * sizeof(kv_block_q8_0);
    for (int64_t b = 0; b < nb; b += 2) {
        const int m = nb - b >= 2 ? 2 : 1; /* blocks this pass */
        __m256 a[8], v[4];
        for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
        for (int64_t t = 0; t < n; t++) {
            if (w[t] == 0.0f) continue;
            const __m256 av = _mm256_set1_ps(w[t]);
            for (int i = 0; i < m; i++) {
                const uint8_t *blk = V + (size_t)t * rb + (size_t)(b + i) * sizeof(kv_block_q8_0);
                const __m256 dv = _mm256_set1_ps(blk_scale(blk));
                q8_0_block(blk, v);
                for (int k = 0; k < 4; k++) a[4 * i + k] = _mm256_fmadd_ps(av, _mm256_mul_ps(v[k], dv), a[4 * i + k]);
            }
        }
        for (int k = 0; k < 4 * m; k++) _mm256_storeu_ps(o + b * KV_QK + 8 * k, a[k]);
    }
}

int kv_avx2_wsum_kv(kv_dtype t, float *o, const float *w, const void *V, int64_t n, int64_t d) {
    if (t == KV_F16) wsum_f16(o, w, V, n, d);
    else if (t == KV_Q8_0 && d % KV_QK == 0) wsum_q8_0(o, w, V, n, d);
    else return -1;
    return 0;
}

/* ------------------------------------------------------ integer path
 *
 * As in the AVX-512 file (kernels_avx512_q8.h says how the products are
 * formed and why no int16 sum saturates), eight lanes wide: vpmaddubsw,
 * then vpmaddwd with the scales, into int32 lanes per block, converted and
 * scaled into per-row fp32 lanes. */

/* kv_quantize_act, bit for bit (see the AVX-512 quantizer), 32 values at
 * a time: the packs interleave 128-bit lanes, which the permute undoes. */
static void avx2_quant_act(const float *x, int64_t n, int32_t blk, float *d, int8_t *q, int16_t *s16) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < n / blk; b++) {
        const float *xb = x + b * blk;
        __m256 m = _mm256_setzero_ps();
        for (int32_t i = 0; i < blk; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + i)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        d[b] = kv_act_scale(amax, blk);
        const __m256 id = _mm256_set1_ps(amax == 0 ? 0 : 127.0f / amax);
        for (int32_t i = 0; i < blk; i += 32) {
            __m256i v[4];
            for (int k = 0; k < 4; k++) v[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8 * k), id));
            const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
            _mm256_storeu_si256((__m256i *)(q + b * blk + i), _mm256_permutevar8x32_epi32(p, order));
            for (int h = 0; h < 2; h++) {
                const __m256i t = _mm256_add_epi32(v[2 * h], v[2 * h + 1]);
                __m128i u = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
                u = _mm_add_epi32(u, _mm_shuffle_epi32(u, 0x4e));
                u = _mm_add_epi32(u, _mm_shuffle_epi32(u, 0xb1));
                s16[(b * blk + i) / 16 + h] = (int16_t)_mm_cvtsi128_si32(u);
            }
        }
    }
}

/* One Q8_0 / Q4_0 block's partial sums against 32 activations (Q4_0's
 * quants at their stored 0..15). */
KV_INLINE __m256i q40_dot(const int q8, const uint8_t *blk, const int8_t *x) {
    const __m256i a = _mm256_loadu_si256((const __m256i *)x), ones = _mm256_set1_epi16(1);
    if (q8) { /* |w| times x carrying w's sign */
        const __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
        return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w)), ones);
    }
    const __m128i v = _mm_loadu_si128((const __m128i *)(blk + 2)), m = _mm_set1_epi8(0x0f);
    const __m256i w = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(v, m)),
                                              _mm_and_si128(_mm_srli_epi16(v, 4), m), 1);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones);
}

/* Rows r + k*part + i (k < K, i < cnt) of a Q8_0 / Q4_0 weight. */
KV_INLINE void q40_rows(const int q8, const uint8_t *base, size_t rb, const kv_q8_act *a, float *y, int64_t r,
                        int64_t part, int64_t cnt, const int K) {
    const size_t bb = q8 ? 34 : 18;
    const int64_t nb = a->n / KV_QK;
    for (int64_t i = 0; i < cnt; i++) {
        const uint8_t *p[KV_Q8_STREAMS];
        __m256 acc[KV_Q8_STREAMS];
        float off[KV_Q8_STREAMS]; /* Q4_0: sum of scale * activation sum, times 8 at the end */
        for (int k = 0; k < K; k++) {
            p[k] = base + (size_t)(r + k * part + i) * rb;
            acc[k] = _mm256_setzero_ps();
            off[k] = 0;
        }
        for (int64_t b = 0; b < nb; b++)
            for (int k = 0; k < K; k++) {
                const uint8_t *blk = p[k] + (size_t)b * bb;
                const float s = blk_scale(blk) * a->d[b];
                acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q40_dot(q8, blk, a->q + b * KV_QK)), _mm256_set1_ps(s), acc[k]);
                if (!q8) off[k] += s * (float)(a->s16[2 * b] + a->s16[2 * b + 1]);
            }
        for (int k = 0; k < K; k++) y[r + k * part + i] = hsum(acc[k]) - 8 * off[k];
    }
}

/* vpshufb control picking int16 word w0 in the low 128-bit lane, w1 in the high. */
static inline __m256i pick2(int w0, int w1) {
    const short c0 = (short)((2 * w0 + 1) << 8 | 2 * w0), c1 = (short)((2 * w1 + 1) << 8 | 2 * w1);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(c0)), _mm_set1_epi16(c1), 1);
}

/* Q5_K's fifth bit: 16 where bit `bit` of qh[l] is set. */
static inline __m256i q5_bit(__m256i qh, int bit) {
    const __m256i m = _mm256_set1_epi8((char)(1 << bit));
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m), m), _mm256_set1_epi8(16));
}

/* The mins of a Q4_K / Q5_K super-block times its activation sums, into
 * four lanes as llama.cpp's AVX2 dot forms them (each lane two runs of 32:
 * min times the sum of the run's two sums of 16), scaled by ndm = -dmin *
 * dx: with the scales' eight lanes (kq8_sum) a row's sum is then llama.cpp's
 * bit for bit, so int8 logits stay on its side of every rounding boundary. */
KV_INLINE __m128 kq_mins(const uint32_t mn[4], const int16_t *xs, float ndm, __m128 macc) {
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)mn[1], (int)mn[0]));
    const __m128i s32 = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)xs), _mm_loadu_si128((const __m128i *)(xs + 8)));
    return _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_madd_epi16(m8, s32)), _mm_set1_ps(ndm), macc);
}

/* A row's sum from its eight scale lanes and four min lanes (llama.cpp's
 * order: the eight, then the four, then their sum). */
KV_INLINE float kq8_sum(__m256 acc, __m128 macc) {
    macc = _mm_add_ps(macc, _mm_movehl_ps(macc, macc));
    macc = _mm_add_ss(macc, _mm_movehdup_ps(macc));
    return hsum(acc) + _mm_cvtss_f32(macc);
}

/* One Q4_K / Q5_K super-block (see kernels_avx512_q8.h). */
KV_INLINE void q45k_block(const kv_dtype t, const uint8_t *blk, const int8_t *x, const int16_t *xs, float dx,
                          __m256 *acc, __m128 *macc) {
    uint32_t sc[4], mn[4];
    uint16_t dm[2];
    kq_scale_ints(t, blk, sc, mn, dm);
    *macc = kq_mins(mn, xs, -dx * _cvtsh_ss(dm[1]), *macc);
    const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)sc[1], (int)sc[0])));
    const uint8_t *qs = blk + (t == KV_Q4_K ? 16 : 48);
    const __m256i m15 = _mm256_set1_epi8(0x0f);
    const __m256i qh = t == KV_Q5_K ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
    __m256i sum = _mm256_setzero_si256();
    for (int h = 0; h < 4; h++) { /* runs 2h (low nibbles of qs[32h..]) and 2h+1 (high) */
        const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
        __m256i lo = _mm256_and_si256(v, m15), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
        if (t == KV_Q5_K) {
            lo = _mm256_or_si256(lo, q5_bit(qh, 2 * h));
            hi = _mm256_or_si256(hi, q5_bit(qh, 2 * h + 1));
        }
        const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x + 64 * h)));
        const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 64 * h + 32)));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(plo, _mm256_shuffle_epi8(scales, pick2(2 * h, 2 * h))));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(phi, _mm256_shuffle_epi8(scales, pick2(2 * h + 1, 2 * h + 1))));
    }
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(dx * _cvtsh_ss(dm[0])), *acc);
}

/* One Q6_K super-block, quants as stored (q + 32): 32 times the sum of
 * scale * activation sums subtracted in int32. */
KV_INLINE void q6k_block(const uint8_t *blk, const int8_t *x, const int16_t *xs, float dx, __m256 *acc) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
    __m256i sum = _mm256_sub_epi32(_mm256_setzero_si256(),
                                   _mm256_slli_epi32(_mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)xs)), 5));
    const __m256i m15 = _mm256_set1_epi8(0x0f), m48 = _mm256_set1_epi8(0x30);
    for (int c = 0; c < 2; c++) { /* values 128c..128c+127 in runs of 32 */
        const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(blk + 64 * c));
        const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(blk + 64 * c + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * c));
        const __m256i scales = _mm256_broadcastsi128_si256(c ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16));
        const __m256i v[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, m15), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m48)),
            _mm256_or_si256(_mm256_and_si256(ql1, m15), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m48)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m15), _mm256_and_si256(qh, m48)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15), _mm256_and_si256(_mm256_srli_epi16(qh, 2), m48))};
        for (int k = 0; k < 4; k++) {
            const __m256i p = _mm256_maddubs_epi16(v[k], _mm256_loadu_si256((const __m256i *)(x + 128 * c + 32 * k)));
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(scales, pick2(2 * k, 2 * k + 1))));
        }
    }
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(dx * blk_scale(blk + 208)), *acc);
}

/* One Q2_K super-block into *acc: the mins times the activation sums
 * first (scaled by -dmin * dx), then quants 0..3 times the scale of their
 * run of 16 (scaled by d * dx), in one accumulator and in the int32 lanes
 * of llama.cpp's AVX2 dot (ggml's vec_dot_q2_K_q8_K), so that a row's sum
 * is its sum bit for bit and int8 logits stay on llama.cpp's side of
 * every rounding boundary. Value 128c + 32j + l is bits 2j of qs[32c + l],
 * run 8c + 2j (l < 16) or 8c + 2j + 1. */
KV_INLINE void q2k_block(const uint8_t *blk, const int8_t *x, const int16_t *xs, float dx, __m256 *acc) {
    const __m128i sb = _mm_loadu_si128((const __m128i *)blk), m4 = _mm_set1_epi8(0x0f);
    const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(sb, m4));
    const __m256i mins = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sb, 4), m4)),
                                           _mm256_loadu_si256((const __m256i *)xs));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_set1_ps(-dx * blk_scale(blk + 82)), *acc);
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i sum = _mm256_setzero_si256();
    for (int c = 0; c < 2; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c));
        const __m256i scales = _mm256_broadcastsi128_si256(c ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16));
        for (int j = 0; j < 4; j++) {
            const __m256i v = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
            const __m256i p = _mm256_maddubs_epi16(v, _mm256_loadu_si256((const __m256i *)(x + 128 * c + 32 * j)));
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(scales, pick2(2 * j, 2 * j + 1))));
        }
    }
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(dx * blk_scale(blk + 80)), *acc);
}

/* One Q3_K super-block into *acc: per 32 values the two low bits times x
 * less 4 times x where the hmask bit is clear (both unsigned, as vpmaddubsw
 * needs), times the signed scales: the int32 lanes of llama.cpp's AVX2 dot
 * (ggml's vec_dot_q3_K_q8_K), as for Q2_K. Value 128c + 32j + l: bits 2j
 * of qs[32c + l], hmask[l] bit 4c + j. */
KV_INLINE void q3k_block(const uint8_t *blk, const int8_t *x, float dx, __m256 *acc) {
    uint32_t sc[4], mn[4];
    uint16_t dm[2];
    kq_scale_ints(KV_Q3_K, blk, sc, mn, dm);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_set_epi32((int)sc[3], (int)sc[2], (int)sc[1], (int)sc[0]));
    const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4), hm = _mm256_loadu_si256((const __m256i *)blk);
    __m256i sum = _mm256_setzero_si256();
    for (int c = 0; c < 2; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 32 + 32 * c));
        const __m256i scales = _mm256_broadcastsi128_si256(c ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16));
        for (int j = 0; j < 4; j++) {
            const __m256i bit = _mm256_set1_epi8((char)(1 << (4 * c + j)));
            const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
            const __m256i neg = _mm256_andnot_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit), four);
            const __m256i xb = _mm256_loadu_si256((const __m256i *)(x + 128 * c + 32 * j));
            const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(lo, xb), _mm256_maddubs_epi16(neg, xb));
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(scales, pick2(2 * j, 2 * j + 1))));
        }
    }
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(dx * _cvtsh_ss(dm[0])), *acc);
}

/* One super-block of any K-quant into *acc and *macc (only Q4_K and Q5_K
 * keep their mins apart). */
KV_INLINE void kq8_block(const kv_dtype t, const uint8_t *blk, const int8_t *x, const int16_t *xs, float dx,
                         __m256 *acc, __m128 *macc) {
    if (t == KV_Q6_K) q6k_block(blk, x, xs, dx, acc);
    else if (t == KV_Q3_K) q3k_block(blk, x, dx, acc);
    else if (t == KV_Q2_K) q2k_block(blk, x, xs, dx, acc);
    else q45k_block(t, blk, x, xs, dx, acc, macc);
}

/* Rows r + k*part + i (k < K, i < cnt) of a Q4_K / Q5_K / Q6_K weight. */
KV_INLINE void kq8_rows(const kv_dtype t, const uint8_t *base, size_t rb, const kv_q8_act *a, float *y, int64_t r,
                        int64_t part, int64_t cnt, const int K) {
    const size_t bb = kv_dtype_block_bytes(t);
    const int64_t nb = a->n / KV_QK_K;
    for (int64_t i = 0; i < cnt; i++) {
        const uint8_t *p[KV_Q8_STREAMS];
        __m256 acc[KV_Q8_STREAMS];
        __m128 macc[KV_Q8_STREAMS];
        for (int k = 0; k < K; k++) {
            p[k] = base + (size_t)(r + k * part + i) * rb;
            acc[k] = _mm256_setzero_ps();
            macc[k] = _mm_setzero_ps();
        }
        for (int64_t b = 0; b < nb; b++)
            for (int k = 0; k < K; k++) {
                kq8_block(t, p[k] + (size_t)b * bb, a->q + b * KV_QK_K, a->s16 + 16 * b, a->d[b], &acc[k], &macc[k]);
            }
        for (int k = 0; k < K; k++) y[r + k * part + i] = kq8_sum(acc[k], macc[k]);
    }
}

/* One row against T tokens (a[0..T)), each token's sums formed as
 * q40_rows forms a row's (one stream), so each output is decode's bit for
 * bit. The tokens share the row's bytes, and with T constant the compiler
 * decodes each block once for all of them. */
KV_INLINE void q40_row_tokens(const int q8, const uint8_t *row, const kv_q8_act *a, const int T, float *y, int64_t ldy) {
    const size_t bb = q8 ? 34 : 18;
    const int64_t nb = a[0].n / KV_QK;
    __m256 acc[4];
    float off[4];
    for (int k = 0; k < T; k++) {
        acc[k] = _mm256_setzero_ps();
        off[k] = 0;
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * bb;
        for (int k = 0; k < T; k++) {
            const float s = blk_scale(blk) * a[k].d[b];
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q40_dot(q8, blk, a[k].q + b * KV_QK)), _mm256_set1_ps(s), acc[k]);
            if (!q8) off[k] += s * (float)(a[k].s16[2 * b] + a[k].s16[2 * b + 1]);
        }
    }
    for (int k = 0; k < T; k++) y[k * ldy] = hsum(acc[k]) - 8 * off[k];
}

/* The same for a Q4_K / Q5_K / Q6_K row (kq8_rows' sums). */
KV_INLINE void kq8_row_tokens(const kv_dtype t, const uint8_t *row, const kv_q8_act *a, const int T, float *y,
                              int64_t ldy) {
    const size_t bb = kv_dtype_block_bytes(t);
    const int64_t nb = a[0].n / KV_QK_K;
    __m256 acc[4];
    __m128 macc[4];
    for (int k = 0; k < T; k++) {
        acc[k] = _mm256_setzero_ps();
        macc[k] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * bb;
        for (int k = 0; k < T; k++) kq8_block(t, blk, a[k].q + b * KV_QK_K, a[k].s16 + 16 * b, a[k].d[b], &acc[k], &macc[k]);
    }
    for (int k = 0; k < T; k++) y[k * ldy] = kq8_sum(acc[k], macc[k]);
}

/* Tokens four at a time (the rest one by one), rows in order within. */
#define Q8_TOKENS(ROW)                                                                                   \
    do {                                                                                                 \
        int t0 = 0;                                                                                      \
        for (; t0 + 4 <= n; t0 += 4)                                                                     \
            for (int64_t r = r0; r < r1; r++) ROW(r, a + t0, 4, Y + (size_t)t0 * ldy + r);               \
        for (; t0 < n; t0++)                                                                             \
            for (int64_t r = r0; r < r1; r++) ROW(r, a + t0, 1, Y + (size_t)t0 * ldy + r);               \
    } while (0)

int kv_avx2_matmul_q8(const kv_tensor *W, const kv_q8_act *a, int n, float *Y, int64_t ldy, int64_t r0, int64_t r1) {
    const uint8_t *base = (const uint8_t *)W->data;
    const size_t rb = kv_row_bytes(W);
#define Q8_R80(r, at, T, y) q40_row_tokens(1, base + (size_t)(r) * rb, at, T, y, ldy)
#define Q8_R40(r, at, T, y) q40_row_tokens(0, base + (size_t)(r) * rb, at, T, y, ldy)
#define Q8_R4K(r, at, T, y) kq8_row_tokens(KV_Q4_K, base + (size_t)(r) * rb, at, T, y, ldy)
#define Q8_R5K(r, at, T, y) kq8_row_tokens(KV_Q5_K, base + (size_t)(r) * rb, at, T, y, ldy)
#define Q8_R6K(r, at, T, y) kq8_row_tokens(KV_Q6_K, base + (size_t)(r) * rb, at, T, y, ldy)
#define Q8_R2K(r, at, T, y) kq8_row_tokens(KV_Q2_K, base + (size_t)(r) * rb, at, T, y, ldy)
#define Q8_R3K(r, at, T, y) kq8_row_tokens(KV_Q3_K, base + (size_t)(r) * rb, at, T, y, ldy)
    switch (W->type) {
    case KV_Q2_K: Q8_TOKENS(Q8_R2K); return 0;
    case KV_Q3_K: Q8_TOKENS(Q8_R3K); return 0;
    case KV_Q8_0: Q8_TOKENS(Q8_R80); return 0;
    case KV_Q4_0: Q8_TOKENS(Q8_R40); return 0;
    case KV_Q4_K: Q8_TOKENS(Q8_R4K); return 0;
    case KV_Q5_K: Q8_TOKENS(Q8_R5K); return 0;
    case KV_Q6_K: Q8_TOKENS(Q8_R6K); return 0;
    default: return -1;
    }
#undef Q8_R80
#undef Q8_R40
#undef Q8_R4K
#undef Q8_R5K
#undef Q8_R6K
#undef Q8_R2K
#undef Q8_R3K
}

#define Q8_SPLIT(CALL)                                                                                   \
    do {                                                                                                 \
        const int64_t part = (r1 - r0) / KV_Q8_STREAMS, rest = r0 + part * KV_Q8_STREAMS;                \
        if (part > 0) CALL(r0, part, part, KV_Q8_STREAMS);                                               \
        CALL(rest, 0, r1 - rest, 1);                                                                     \
    } while (0)

int kv_avx2_matvec_q8(const kv_tensor *W, const kv_q8_act *a, float *y, int64_t r0, int64_t r1) {
    const uint8_t *base = (const uint8_t *)W->data;
    const size_t rb = kv_row_bytes(W);
#define Q8_Q80(r, part, cnt, K) q40_rows(1, base, rb, a, y, r, part, cnt, K)
#define Q8_Q40(r, part, cnt, K) q40_rows(0, base, rb, a, y, r, part, cnt, K)
#define Q8_Q4K(r, part, cnt, K) kq8_rows(KV_Q4_K, base, rb, a, y, r, part, cnt, K)
#define Q8_Q5K(r, part, cnt, K) kq8_rows(KV_Q5_K, base, rb, a, y, r, part, cnt, K)
#define Q8_Q6K(r, part, cnt, K) kq8_rows(KV_Q6_K, base, rb, a, y, r, part, cnt, K)
#define Q8_Q2K(r, part, cnt, K) kq8_rows(KV_Q2_K, base, rb, a, y, r, part, cnt, K)
#define Q8_Q3K(r, part, cnt, K) kq8_rows(KV_Q3_K, base, rb, a, y, r, part, cnt, K)
    switch (W->type) {
    case KV_Q2_K: Q8_SPLIT(Q8_Q2K); return 0;
    case KV_Q3_K: Q8_SPLIT(Q8_Q3K); return 0;
    case KV_Q8_0: Q8_SPLIT(Q8_Q80); return 0;
    case KV_Q4_0: Q8_SPLIT(Q8_Q40); return 0;
    case KV_Q4_K: Q8_SPLIT(Q8_Q4K); return 0;
    case KV_Q5_K: Q8_SPLIT(Q8_Q5K); return 0;
    case KV_Q6_K: Q8_SPLIT(Q8_Q6K); return 0;
    default: return -1;
    }
#undef Q8_Q80
#undef Q8_Q40
#undef Q8_Q4K
#undef Q8_Q5K
#undef Q8_Q6K
#undef Q8_Q2K
#undef Q8_Q3K
}

/* kv_silu_mul, 8 lanes (kv_exp_f32's operations), the tail as the portable loop. */
static void avx2_silu_mul(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = avx2_exp(_mm256_xor_ps(x, sign));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + kv_exp_f32(-g[i])) * u[i];
}

/* vcvtps2ph rounds to nearest even, as kv_fp32_to_fp16 does (subnormals,
 * infinities and quiet NaNs alike); the tail goes through it. */
void kv_avx2_f32_to_f16(const float *x, uint16_t *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = kv_fp32_to_fp16(x[i]);
}

void kv_avx2_f16_to_f32(const uint16_t *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, ld_f16(x + i));
    for (; i < n; i++) y[i] = kv_fp16_to_fp32(x[i]);
}

/* kv_masked_sum: lanes 4a..4a+3 in accumulator a; the tail as the portable loop. */
static double avx2_masked_sum(const float *x, const float *m, int64_t n) {
    __m256d a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_pd();
    int64_t j = 0;
    for (; j + KV_MSUM_LANES <= n; j += KV_MSUM_LANES)
        for (int i = 0; i < 8; i++)
            a[i] = _mm256_add_pd(a[i], _mm256_cvtps_pd(_mm_mul_ps(_mm_loadu_ps(x + j + 4 * i), _mm_loadu_ps(m + j + 4 * i))));
    double acc[KV_MSUM_LANES];
    for (int i = 0; i < 8; i++) _mm256_storeu_pd(acc + 4 * i, a[i]);
    for (int l = 0; j < n; j++, l++) acc[l] += (double)(x[j] * m[j]);
    return kv_fold_f64(acc, KV_MSUM_LANES);
}

/* 2^k for integral k in [-1022, 1023] (4 lanes): k + 1.5 * 2^52 holds k in
 * its low mantissa bits, so its bits less the constant's are k as an int64. */
static inline __m256d avx2_pow2_f64(__m256d k) {
    const __m256d magic = _mm256_set1_pd(6755399441055744.0);
    const __m256i ki = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(k, magic)), _mm256_castpd_si256(magic));
    return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(ki, _mm256_set1_epi64x(1023)), 52));
}

/* kv_exp_f64 on 4 lanes: the same operations; out-of-range lanes computed
 * on a clamped t, then replaced (0, +inf, the NaN itself). */
static inline __m256d avx2_exp64(__m256d t) {
    const __m256d lo = _mm256_set1_pd(KV_EXP64_MIN), hi = _mm256_set1_pd(KV_EXP64_MAX);
    const __m256d nan = _mm256_cmp_pd(t, t, _CMP_UNORD_Q);
    const __m256d under = _mm256_cmp_pd(t, lo, _CMP_LT_OQ), over = _mm256_cmp_pd(t, hi, _CMP_GT_OQ);
    const __m256d x = _mm256_min_pd(_mm256_max_pd(t, lo), hi);
    const __m256d k = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(KV_EXP64_LOG2E)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(k, _mm256_set1_pd(KV_EXP64_LN2_HI), x);
    r = _mm256_fnmadd_pd(k, _mm256_set1_pd(KV_EXP64_LN2_LO), r);
    __m256d p = _mm256_set1_pd(kv_exp64_c[13]);
    for (int i = 12; i >= 0; i--) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(kv_exp64_c[i]));
    const __m256d k1 = _mm256_round_pd(_mm256_mul_pd(k, _mm256_set1_pd(0.5)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256d y = _mm256_mul_pd(_mm256_mul_pd(p, avx2_pow2_f64(k1)), avx2_pow2_f64(_mm256_sub_pd(k, k1)));
    y = _mm256_blendv_pd(y, _mm256_setzero_pd(), under);
    y = _mm256_blendv_pd(y, _mm256_set1_pd(INFINITY), over);
    return _mm256_blendv_pd(y, t, nan);
}

/* kv_sum_exp_f64: lanes 4a..4a+3 in accumulator a; the tail as the portable loop. */
static double avx2_sum_exp_f64(const float *x, int64_t n, double shift) {
    __m256d a[4];
    for (int i = 0; i < 4; i++) a[i] = _mm256_setzero_pd();
    const __m256d sh = _mm256_set1_pd(shift);
    int64_t i = 0;
    for (; i + KV_SEXP_LANES <= n; i += KV_SEXP_LANES)
        for (int q = 0; q < 4; q++)
            a[q] = _mm256_add_pd(a[q], avx2_exp64(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * q)), sh)));
    double acc[KV_SEXP_LANES];
    for (int q = 0; q < 4; q++) _mm256_storeu_pd(acc + 4 * q, a[q]);
    for (int l = 0; i < n; i++, l++) acc[l] += kv_exp_f64((double)x[i] - shift);
    return kv_fold_f64(acc, KV_SEXP_LANES);
}

const kv_kernel_table kv_kernels_avx2 = {
    .matvec_rows = avx2_matvec_rows, .dequant_rows = avx2_dequant_rows, .dot = avx2_dot, .axpy = avx2_axpy,
    .dots = avx2_dots, .wsum = avx2_wsum, .quant_act = avx2_quant_act, .matvec_q8 = kv_avx2_matvec_q8, .matmul_q8 = kv_avx2_matmul_q8,
    .wsum_kv = kv_avx2_wsum_kv, .softmax = avx2_softmax, .f32_to_f16 = kv_avx2_f32_to_f16,
    .f16_to_f32 = kv_avx2_f16_to_f32, .silu_mul = avx2_silu_mul, .masked_sum = avx2_masked_sum,
    .sum_exp_f64 = avx2_sum_exp_f64};
