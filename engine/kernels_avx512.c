/* kernels_avx512.c - AVX-512 kernels (compiled with -mavx512f -mavx512bw
 * -mavx512vl -mavx512dq -mfma -mf16c; called only when the CPU has them).
 *
 * Matrix-vector products stream each row once, convert the stored type to
 * fp32 in registers
 * (vcvtph2ps for F16, a 16-bit shift for BF16, sign/zero extension for the
 * int8/int4 blocks) and accumulate in fp32. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels_impl.h"
#include "quant.h"

static inline __m512 ld_f32(const float *p) { return _mm512_loadu_ps(p); }
static inline __m512 ld_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline __m512 ld_bf16(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/* A register's horizontal sum by a fixed tree (halves of 256 bits, then of
 * 128, then lanes {0,1} + {2,3}, then 0 + 1: GCC's _mm512_reduce_add_ps),
 * written out so that avx512_hsum4 matches it whatever the compiler. */
static inline float avx512_hsum(__m512 v) {
    const __m256 h = _mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_castps512_ps256(v));
    const __m128 q = _mm_add_ps(_mm256_extractf128_ps(h, 1), _mm256_castps256_ps128(h));
    const __m128 p = _mm_add_ps(q, _mm_shuffle_ps(q, q, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(_mm_add_ss(p, _mm_shuffle_ps(p, p, _MM_SHUFFLE(2, 3, 0, 1))));
}

/* The horizontal sums of four registers at once, [sum a, sum b, sum c,
 * sum d], each by avx512_hsum's tree: halves of 256 bits, then of 128,
 * then lanes {0,1}+{2,3}, then 0+1.
 * Shuffles gather the four registers' pieces so each step is one add. */
static inline __m128 avx512_hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)),
                                    _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)));
    const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)),
                                    _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)));
    /* [a 0..7 | b 0..7], [c | d] -> quarters [a, b, c, d] of 4 lanes */
    const __m512 z = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)),
                                   _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)));
    const __m512 w = _mm512_add_ps(z, _mm512_permute_ps(z, _MM_SHUFFLE(1, 0, 3, 2)));
    const __m512 r = _mm512_add_ps(w, _mm512_permute_ps(w, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), r));
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
/* Rows this short (floats) are taken four at a time with one reduction
 * tree for the four (avx512_hsum4): a row of 64 is 4 products and a
 * 15-step reduction, which then dominates (stories260K's decode). */
#define KV_MV_SHORT 256
#define KV_INLINE static inline __attribute__((always_inline))

/* Rows r + k*part + i of W (k < K <= 4, i < cnt) into y; K a constant. Four
 * consecutive rows of a length that is a multiple of 16 (K = 4, part = 1)
 * share one reduction tree (avx512_hsum4: the same sums as four). */
#define PLAIN_MATVEC(NAME, T, LD, SC)                                                                    \
    KV_INLINE void NAME##_k(const T *base, int64_t n, const float *x, float *y, int64_t r, int64_t part,  \
                            int64_t cnt, const int K) {                                                 \
        for (int64_t i = 0; i < cnt; i++) {                                                             \
            const T *w[4];                                                                              \
            __m512 a[4][4];                                                                             \
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
            if (K == 4 && part == 1 && c == n) { /* four rows in a row: one tree for their sums */      \
                __m512 t[4];                                                                            \
                for (int k = 0; k < 4; k++)                                                             \
                    t[k] = _mm512_add_ps(_mm512_add_ps(a[k][0], a[k][1]), _mm512_add_ps(a[k][2], a[k][3])); \
                _mm_storeu_ps(y + r + i, avx512_hsum4(t[0], t[1], t[2], t[3]));                         \
                continue;                                                                               \
            }                                                                                           \
            for (int k = 0; k < K; k++) {                                                               \
                float s = avx512_hsum(                                                                  \
                    _mm512_add_ps(_mm512_add_ps(a[k][0], a[k][1]), _mm512_add_ps(a[k][2], a[k][3])));    \
                for (int64_t t = c; t < n; t++) s += SC(w[k] + t) * x[t];                               \
                y[r + k * part + i] = s;                                                                \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    static void NAME(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {           \
        if (W->cols % 16 == 0 && W->cols <= KV_MV_SHORT) { /* the reductions cost as much as the products */ \
            for (; r0 + 4 <= r1; r0 += 4) NAME##_k((const T *)W->data, W->cols, x, y, r0, 1, 1, 4);      \
            if (r0 == r1) return;                                                                       \
        }                                                                                               \
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

/* ------------------------------------------------------------- K-quants
 *
 * A super-block of 256 values is walked in quarters of 64 (four vectors of
 * 16 integer quants, converted to fp32); each run of 16 values has its own
 * scale d_g and offset m_g (kq_scale_ints). A row's sum is
 *   sum_g d_g * (q_g . x_g)  -  sum_g m_g * (sum of x_g),
 * the second term from the per-16 sums of x (KQ_XS), formed once per call:
 * the offsets then cost one multiply-add per super-block instead of one per
 * value. Each row is still summed the same way wherever it falls in the
 * range, so results do not depend on the thread split. */

#define KQ_MAX_COLS 65536 /* per-16 sums of x on the stack; longer rows take the portable path */

static inline __m512i zx16(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }
static inline __m512 i2f(__m512i v) { return _mm512_cvtepi32_ps(v); }

/* Values 64h .. 64h+63 of super-block blk as four vectors (16 each, in order). */
KV_INLINE void kq_quarter(const kv_dtype t, const uint8_t *blk, const int h, __m512 q[4]) {
    const __m512i m3 = _mm512_set1_epi32(3), m15 = _mm512_set1_epi32(15), one = _mm512_set1_epi32(1);
    const int c = h / 2, j0 = 2 * (h & 1), j1 = j0 + 1;
    if (t == KV_Q4_K || t == KV_Q5_K) {
        const uint8_t *qs = blk + (t == KV_Q4_K ? 16 : 48) + 32 * h;
        __m512i v[4], a0 = zx16(qs), a1 = zx16(qs + 16);
        v[0] = _mm512_and_si512(a0, m15), v[1] = _mm512_and_si512(a1, m15);
        v[2] = _mm512_srli_epi32(a0, 4), v[3] = _mm512_srli_epi32(a1, 4);
        if (t == KV_Q5_K) { /* fifth bit: qh[l] bit 2h (low nibbles) or 2h+1 (high) */
            const __m512i h0 = zx16(blk + 16), h1 = zx16(blk + 32);
            v[0] = _mm512_add_epi32(v[0], _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h0, 2 * h), one), 4));
            v[1] = _mm512_add_epi32(v[1], _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h1, 2 * h), one), 4));
            v[2] = _mm512_add_epi32(v[2], _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h0, 2 * h + 1), one), 4));
            v[3] = _mm512_add_epi32(v[3], _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h1, 2 * h + 1), one), 4));
        }
        for (int k = 0; k < 4; k++) q[k] = i2f(v[k]);
    } else if (t == KV_Q2_K || t == KV_Q3_K) { /* 2-bit fields 2j of qs[32c + l] */
        const uint8_t *qs = blk + (t == KV_Q2_K ? 16 : 32) + 32 * c;
        const __m512i a0 = zx16(qs), a1 = zx16(qs + 16);
        __m512i v[4] = {_mm512_and_si512(_mm512_srli_epi32(a0, 2 * j0), m3), _mm512_and_si512(_mm512_srli_epi32(a1, 2 * j0), m3),
                        _mm512_and_si512(_mm512_srli_epi32(a0, 2 * j1), m3), _mm512_and_si512(_mm512_srli_epi32(a1, 2 * j1), m3)};
        if (t == KV_Q3_K) { /* minus 4 unless hmask[l] has bit 4c+j */
            const __m512i h0 = zx16(blk), h1 = zx16(blk + 16), four = _mm512_set1_epi32(4);
            const __m512i hb[4] = {_mm512_srli_epi32(h0, 4 * c + j0), _mm512_srli_epi32(h1, 4 * c + j0),
                                   _mm512_srli_epi32(h0, 4 * c + j1), _mm512_srli_epi32(h1, 4 * c + j1)};
            for (int k = 0; k < 4; k++)
                v[k] = _mm512_sub_epi32(_mm512_add_epi32(v[k], _mm512_slli_epi32(_mm512_and_si512(hb[k], one), 2)), four);
        }
        for (int k = 0; k < 4; k++) q[k] = i2f(v[k]);
    } else { /* Q6_K: low nibble 4(h&1) of ql[64c + l] / ql[64c + 32 + l], 2-bit field 2j of qh[32c + l] */
        const uint8_t *ql = blk + 64 * c, *qh = blk + 128 + 32 * c;
        const int s = 4 * (h & 1);
        const __m512i g0 = zx16(qh), g1 = zx16(qh + 16), off = _mm512_set1_epi32(32);
        const __m512i lo[4] = {zx16(ql), zx16(ql + 16), zx16(ql + 32), zx16(ql + 48)};
        const __m512i hi[4] = {_mm512_srli_epi32(g0, 2 * j0), _mm512_srli_epi32(g1, 2 * j0), _mm512_srli_epi32(g0, 2 * j1),
                               _mm512_srli_epi32(g1, 2 * j1)};
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(lo[k], s), m15),
                                        _mm512_slli_epi32(_mm512_and_si512(hi[k], m3), 4));
            q[k] = i2f(_mm512_sub_epi32(v, off));
        }
    }
}

/* 16 scale or min bytes from kq_scale_ints' words (Q4_K/Q5_K: each repeated). */
KV_INLINE __m128i kq_bytes(const kv_dtype t, const uint32_t w[4]) {
    if (t == KV_Q4_K || t == KV_Q5_K) {
        const __m128i v = _mm_set_epi32(0, 0, (int)w[1], (int)w[0]);
        return _mm_unpacklo_epi8(v, v);
    }
    return _mm_set_epi32((int)w[3], (int)w[2], (int)w[1], (int)w[0]);
}

/* The 16 scales d_g and offsets m_g of a super-block. */
KV_INLINE void kq_scales(const kv_dtype t, const uint8_t *blk, __m512 *d, __m512 *m) {
    uint32_t sc[4], mn[4];
    uint16_t dm[2];
    kq_scale_ints(t, blk, sc, mn, dm);
    *d = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(dm[0])), i2f(_mm512_cvtepi8_epi32(kq_bytes(t, sc))));
    *m = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(dm[1])), i2f(_mm512_cvtepi8_epi32(kq_bytes(t, mn))));
}

/* One super-block of one row into its accumulators. */
KV_INLINE void kq_block(const kv_dtype t, const uint8_t *blk, const float *x, const float *xs, __m512 acc[2], __m512 *macc) {
    __m512 dv, mv, q[4];
    kq_scales(t, blk, &dv, &mv);
    float d[16] __attribute__((aligned(64)));
    _mm512_store_ps(d, dv);
    if (t == KV_Q2_K || t == KV_Q4_K || t == KV_Q5_K) *macc = _mm512_fmadd_ps(mv, _mm512_loadu_ps(xs), *macc);
    for (int h = 0; h < 4; h++) {
        kq_quarter(t, blk, h, q);
        const float *xh = x + 64 * h;
        if (t == KV_Q4_K || t == KV_Q5_K) { /* runs of 32 share a scale */
            __m512 t0 = _mm512_fmadd_ps(q[1], _mm512_loadu_ps(xh + 16), _mm512_mul_ps(q[0], _mm512_loadu_ps(xh)));
            __m512 t1 = _mm512_fmadd_ps(q[3], _mm512_loadu_ps(xh + 48), _mm512_mul_ps(q[2], _mm512_loadu_ps(xh + 32)));
            acc[0] = _mm512_fmadd_ps(_mm512_set1_ps(d[4 * h]), t0, acc[0]);
            acc[1] = _mm512_fmadd_ps(_mm512_set1_ps(d[4 * h + 2]), t1, acc[1]);
        } else {
            for (int k = 0; k < 4; k++)
                acc[k & 1] = _mm512_fmadd_ps(_mm512_set1_ps(d[4 * h + k]), _mm512_mul_ps(q[k], _mm512_loadu_ps(xh + 16 * k)),
                                             acc[k & 1]);
        }
    }
}

/* Rows r + k*part + i (k < K, i < cnt), as the other kernels walk them. */
KV_INLINE void kq_rows(const kv_dtype t, const uint8_t *base, size_t rb, int64_t nb, const float *x, const float *xs,
                       float *y, int64_t r, int64_t part, int64_t cnt, const int K) {
    const size_t bb = kv_dtype_block_bytes(t);
    for (int64_t i = 0; i < cnt; i++) {
        const uint8_t *p[KV_MV_STREAMS];
        __m512 acc[KV_MV_STREAMS][2], macc[KV_MV_STREAMS];
        for (int k = 0; k < K; k++) {
            p[k] = base + (size_t)(r + k * part + i) * rb;
            acc[k][0] = acc[k][1] = macc[k] = _mm512_setzero_ps();
        }
        for (int64_t b = 0; b < nb; b++)
            for (int k = 0; k < K; k++) kq_block(t, p[k] + (size_t)b * bb, x + b * 256, xs + b * 16, acc[k], &macc[k]);
        for (int k = 0; k < K; k++)
            y[r + k * part + i] = _mm512_reduce_add_ps(_mm512_sub_ps(_mm512_add_ps(acc[k][0], acc[k][1]), macc[k]));
    }
}

/* Per-16 sums of x, each as one reduction of 16 lanes. */
static void kq_xsums(const float *x, int64_t n, float *xs) {
    for (int64_t g = 0; g < n / 16; g++) xs[g] = _mm512_reduce_add_ps(_mm512_loadu_ps(x + 16 * g));
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

/* n/256 super-blocks into fp32: d_g*q - m_g rounded at each step, as the
 * portable decoder (bit-identical to it). */
KV_INLINE void kq_dequant(const kv_dtype t, const uint8_t *src, int64_t nb, float *out) {
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = src + (size_t)b * kv_dtype_block_bytes(t);
        __m512 dv, mv, q[4];
        float d[16] __attribute__((aligned(64))), m[16] __attribute__((aligned(64)));
        kq_scales(t, blk, &dv, &mv);
        _mm512_store_ps(d, dv);
        _mm512_store_ps(m, mv);
        for (int h = 0; h < 4; h++) {
            kq_quarter(t, blk, h, q);
            for (int k = 0; k < 4; k++)
                _mm512_storeu_ps(out + b * 256 + 64 * h + 16 * k,
                                 _mm512_sub_ps(_mm512_mul_ps(q[k], _mm512_set1_ps(d[4 * h + k])), _mm512_set1_ps(m[4 * h + k])));
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

static int avx512_matvec_rows(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {
    switch (W->type) {
    case KV_F32: matvec_f32(W, x, y, r0, r1); return 0;
    case KV_F16: matvec_f16(W, x, y, r0, r1); return 0;
    case KV_BF16: matvec_bf16(W, x, y, r0, r1); return 0;
    case KV_Q8_0: matvec_q8_0(W, x, y, r0, r1); return 0;
    case KV_Q4_0: matvec_q4_0(W, x, y, r0, r1); return 0;
    default: return kq_matvec_rows(W, x, y, r0, r1);
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
    default: return kq_dequant_rows(W, r0, r1, out);
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
    return avx512_hsum(_mm512_add_ps(s0, s1));
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

/* kv_gemm_nt: 8 weight rows x 2 tiles of 16 tokens per step, 16
 * accumulators, each lane one fused chain over k; the weight values are
 * broadcast from their rows, the tokens' come packed k-major. Token tiles
 * go in groups of at most KV_GEMM_GROUP_BYTES (their packed values stay in
 * L2 while every weight row of the block passes). */
#define KV_GEMM_GROUP_BYTES ((size_t)256 << 10)
static void avx512_gemm_nt(const float *Xp, int64_t n, int64_t K, const float *W, int64_t ldw, int64_t rows, float *Y,
                           int64_t ldy) {
    const int64_t tiles = kv_gemm_pack_tiles(n);
    int64_t group = (int64_t)(KV_GEMM_GROUP_BYTES / ((size_t)K * KV_GEMM_TILE * sizeof(float))) / 2 * 2;
    if (group < 2) group = 2;
    float acc[8][2 * KV_GEMM_TILE];
    for (int64_t g0 = 0; g0 < tiles; g0 += group) {
        const int64_t g1 = g0 + group < tiles ? g0 + group : tiles;
        for (int64_t r0 = 0; r0 < rows; r0 += 8) {
            const int nr = rows - r0 < 8 ? (int)(rows - r0) : 8;
            const float *w[8];
            for (int i = 0; i < 8; i++) w[i] = W + (size_t)(r0 + (i < nr ? i : 0)) * (size_t)ldw;
            for (int64_t tb = g0; tb < g1; tb += 2) {
                const float *x0 = Xp + (size_t)tb * (size_t)K * KV_GEMM_TILE, *x1 = x0 + (size_t)K * KV_GEMM_TILE;
                __m512 c0[8], c1[8];
                for (int i = 0; i < 8; i++) c0[i] = c1[i] = _mm512_setzero_ps();
                int64_t k = 0;
                for (; k + 4 <= K; k += 4) /* four steps a pass: the row pointers move once per four */
                    for (int u = 0; u < 4; u++) {
                        const __m512 a0 = _mm512_loadu_ps(x0 + (k + u) * KV_GEMM_TILE),
                                     a1 = _mm512_loadu_ps(x1 + (k + u) * KV_GEMM_TILE);
                        for (int i = 0; i < 8; i++) {
                            const __m512 b = _mm512_set1_ps(w[i][k + u]);
                            c0[i] = _mm512_fmadd_ps(a0, b, c0[i]);
                            c1[i] = _mm512_fmadd_ps(a1, b, c1[i]);
                        }
                    }
                for (; k < K; k++) {
                    const __m512 a0 = _mm512_loadu_ps(x0 + k * KV_GEMM_TILE), a1 = _mm512_loadu_ps(x1 + k * KV_GEMM_TILE);
                    for (int i = 0; i < 8; i++) {
                        const __m512 b = _mm512_set1_ps(w[i][k]);
                        c0[i] = _mm512_fmadd_ps(a0, b, c0[i]);
                        c1[i] = _mm512_fmadd_ps(a1, b, c1[i]);
                    }
                }
                for (int i = 0; i < nr; i++) {
                    _mm512_storeu_ps(acc[i], c0[i]);
                    _mm512_storeu_ps(acc[i] + KV_GEMM_TILE, c1[i]);
                }
                for (int j = 0; j < 2 * KV_GEMM_TILE && tb * KV_GEMM_TILE + j < n; j++)
                    for (int i = 0; i < nr; i++) Y[(size_t)(tb * KV_GEMM_TILE + j) * (size_t)ldy + (size_t)(r0 + i)] = acc[i][j];
            }
        }
    }
}

/* kv_gemm_pack_range with a gather per k: the tile's 16 rows at once, the
 * rows past n as zeros (the same floats as the portable loop). */
static void avx512_gemm_pack(const float *X, int64_t n, int64_t K, int64_t ldx, float *Xp, int64_t tb0, int64_t tb1) {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)ldx));
    for (int64_t tb = tb0; tb < tb1; tb++) {
        float *p = Xp + (size_t)tb * (size_t)K * KV_GEMM_TILE;
        const int64_t left = n - tb * KV_GEMM_TILE;
        const __mmask16 m = left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
        const float *x = X + (size_t)(tb * KV_GEMM_TILE) * (size_t)ldx;
        for (int64_t k = 0; k < K; k++)
            _mm512_storeu_ps(p + k * KV_GEMM_TILE, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, x + k, 4));
    }
}

/* kv_gemm_pv: 4 query rows x 64 values a pass (16 accumulators), each
 * lane one fused chain over the keys j in order; V's row j read once for
 * the four rows, each row's P[t][j] broadcast. Fewer than 64 values left
 * (d a multiple of 16): one to three registers per row. */
static void avx512_gemm_pv(const float *P, int64_t ldp, int64_t n, int64_t kl, const float *V, int64_t d, float *O,
                           int64_t ldo) {
    for (int64_t c0 = 0; c0 < d; c0 += 64) {
        const int nv = d - c0 >= 64 ? 4 : (int)((d - c0) / 16);
        int64_t t = 0;
        for (; nv == 4 && t + 4 <= n; t += 4) {
            const float *p0 = P + (size_t)t * (size_t)ldp, *p1 = p0 + ldp, *p2 = p1 + ldp, *p3 = p2 + ldp;
            __m512 a[4][4];
            for (int r = 0; r < 4; r++) a[r][0] = a[r][1] = a[r][2] = a[r][3] = _mm512_setzero_ps();
            for (int64_t j = 0; j < kl; j++) {
                const float *v = V + (size_t)j * (size_t)d + c0;
                const __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16), v2 = _mm512_loadu_ps(v + 32),
                             v3 = _mm512_loadu_ps(v + 48);
                const __m512 b[4] = {_mm512_set1_ps(p0[j]), _mm512_set1_ps(p1[j]), _mm512_set1_ps(p2[j]),
                                     _mm512_set1_ps(p3[j])};
                for (int r = 0; r < 4; r++) {
                    a[r][0] = _mm512_fmadd_ps(v0, b[r], a[r][0]);
                    a[r][1] = _mm512_fmadd_ps(v1, b[r], a[r][1]);
                    a[r][2] = _mm512_fmadd_ps(v2, b[r], a[r][2]);
                    a[r][3] = _mm512_fmadd_ps(v3, b[r], a[r][3]);
                }
            }
            for (int r = 0; r < 4; r++)
                for (int i = 0; i < 4; i++) _mm512_storeu_ps(O + (size_t)(t + r) * (size_t)ldo + c0 + 16 * i, a[r][i]);
        }
        for (; t < n; t++) { /* one row: the same chains */
            const float *p = P + (size_t)t * (size_t)ldp;
            __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            for (int64_t j = 0; j < kl; j++) {
                const __m512 b = _mm512_set1_ps(p[j]);
                for (int i = 0; i < nv; i++)
                    a[i] = _mm512_fmadd_ps(_mm512_loadu_ps(V + (size_t)j * (size_t)d + c0 + 16 * i), b, a[i]);
            }
            for (int i = 0; i < nv; i++) _mm512_storeu_ps(O + (size_t)t * (size_t)ldo + c0 + 16 * i, a[i]);
        }
    }
}

/* kv_exp_f32 in 16 lanes: the same operations, in the same order. */
static inline __m512 avx512_exp(__m512 x) {
    const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(KV_EXP_MIN), _CMP_LT_OQ);
    x = _mm512_min_ps(x, _mm512_set1_ps(KV_EXP_MAX));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(KV_EXP_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(KV_EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(KV_EXP_LN2_LO), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(KV_EXP_C7), r, _mm512_set1_ps(KV_EXP_C6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KV_EXP_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KV_EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KV_EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KV_EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mov_ps((__mmask16)~tiny, _mm512_mul_ps(p, _mm512_castsi512_ps(e)));
}

static inline __mmask16 avx512_tail(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* kv_silu_mul, 16 lanes (kv_exp_f32's operations), the tail masked. */
static void avx512_silu_mul(float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), sign = _mm512_set1_ps(-0.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = avx512_tail(n - i);
        const __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 e = avx512_exp(_mm512_xor_ps(x, sign));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

/* kv_masked_sum: lanes 8a..8a+7 in accumulator a; the tail's lanes added
 * under a mask, so a lane past it is left as the portable loop leaves it. */
static double avx512_masked_sum(const float *x, const float *m, int64_t n) {
    __m512d a[4];
    for (int i = 0; i < 4; i++) a[i] = _mm512_setzero_pd();
    for (int64_t j = 0; j < n; j += KV_MSUM_LANES) {
        for (int h = 0; h < 2; h++) {
            const int64_t o = j + 16 * h;
            const __mmask16 k = o < n ? avx512_tail(n - o) : 0;
            const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + o), _mm512_maskz_loadu_ps(k, m + o));
            a[2 * h] = _mm512_mask_add_pd(a[2 * h], (__mmask8)k, a[2 * h], _mm512_cvtps_pd(_mm512_castps512_ps256(p)));
            a[2 * h + 1] = _mm512_mask_add_pd(a[2 * h + 1], (__mmask8)(k >> 8), a[2 * h + 1],
                                              _mm512_cvtps_pd(_mm512_extractf32x8_ps(p, 1)));
        }
    }
    double acc[KV_MSUM_LANES];
    for (int i = 0; i < 4; i++) _mm512_storeu_pd(acc + 8 * i, a[i]);
    return kv_fold_f64(acc, KV_MSUM_LANES);
}

/* kv_exp_f64 on 8 lanes: the same operations; the out-of-range lanes are
 * computed on a clamped t, then replaced (0, +inf, the NaN itself). */
static inline __m512d avx512_exp64(__m512d t) {
    const __m512d lo = _mm512_set1_pd(KV_EXP64_MIN), hi = _mm512_set1_pd(KV_EXP64_MAX);
    const __mmask8 nan = _mm512_cmp_pd_mask(t, t, _CMP_UNORD_Q);
    const __mmask8 under = _mm512_cmp_pd_mask(t, lo, _CMP_LT_OQ), over = _mm512_cmp_pd_mask(t, hi, _CMP_GT_OQ);
    const __m512d x = _mm512_min_pd(_mm512_max_pd(t, lo), hi);
    const __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(KV_EXP64_LOG2E)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(k, _mm512_set1_pd(KV_EXP64_LN2_HI), x);
    r = _mm512_fnmadd_pd(k, _mm512_set1_pd(KV_EXP64_LN2_LO), r);
    __m512d p = _mm512_set1_pd(kv_exp64_c[13]);
    for (int i = 12; i >= 0; i--) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(kv_exp64_c[i]));
    const __m512d k1 = _mm512_roundscale_pd(_mm512_mul_pd(k, _mm512_set1_pd(0.5)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512i bias = _mm512_set1_epi64(1023);
    const __m512d s1 = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(_mm512_cvtpd_epi64(k1), bias), 52));
    const __m512d s2 =
        _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(_mm512_cvtpd_epi64(_mm512_sub_pd(k, k1)), bias), 52));
    __m512d y = _mm512_mul_pd(_mm512_mul_pd(p, s1), s2);
    y = _mm512_mask_blend_pd(under, y, _mm512_setzero_pd());
    y = _mm512_mask_blend_pd(over, y, _mm512_set1_pd(INFINITY));
    return _mm512_mask_blend_pd(nan, y, t);
}

/* kv_sum_exp_f64: lanes 0-7 and 8-15 in two accumulators; the tail's lanes
 * added under a mask (a lane past it stays as the portable loop leaves it). */
static double avx512_sum_exp_f64(const float *x, int64_t n, double shift) {
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    const __m512d sh = _mm512_set1_pd(shift);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = avx512_tail(n - i);
        const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        const __m512d e0 = avx512_exp64(_mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), sh));
        const __m512d e1 = avx512_exp64(_mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)), sh));
        a0 = _mm512_mask_add_pd(a0, (__mmask8)k, a0, e0);
        a1 = _mm512_mask_add_pd(a1, (__mmask8)(k >> 8), a1, e1);
    }
    double acc[KV_SEXP_LANES];
    _mm512_storeu_pd(acc, a0);
    _mm512_storeu_pd(acc + 8, a1);
    return kv_fold_f64(acc, KV_SEXP_LANES);
}

/* The portable softmax's arithmetic (kernels.c): element i in lane i % 16. */
static void avx512_softmax(float *x, int64_t n) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 mv = ninf;
    for (int64_t i = 0; i < n; i += 16) mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(ninf, avx512_tail(n - i), x + i));
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = avx512_tail(n - i);
        const __m512 e = avx512_exp(_mm512_sub_ps(_mm512_mask_loadu_ps(ninf, m, x + i), mx));
        _mm512_mask_storeu_ps(x + i, m, e);
        acc = _mm512_add_ps(acc, e);
    }
    float lanes[KV_SOFTMAX_LANES];
    _mm512_storeu_ps(lanes, acc);
    const __m512 inv = _mm512_set1_ps(1.0f / kv_sum_lanes(lanes));
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = avx512_tail(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}

/* Four keys per pass: each key's products and adds exactly as avx512_dot
 * makes them (s0 and s1 in the same order), the query loaded once for
 * the four, and one shuffle tree for their four horizontal sums instead
 * of four. */
static void avx512_dots(const float *q, const float *K, int64_t n, int64_t d, float *out) {
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
        const float *k0 = K + (size_t)t * d, *k1 = k0 + d, *k2 = k1 + d, *k3 = k2 + d;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int64_t i = 0;
        for (; i + 32 <= d; i += 32) {
            const __m512 x = _mm512_loadu_ps(q + i), y = _mm512_loadu_ps(q + i + 16);
            a0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(k0 + i), a0);
            b0 = _mm512_fmadd_ps(y, _mm512_loadu_ps(k0 + i + 16), b0);
            a1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(k1 + i), a1);
            b1 = _mm512_fmadd_ps(y, _mm512_loadu_ps(k1 + i + 16), b1);
            a2 = _mm512_fmadd_ps(x, _mm512_loadu_ps(k2 + i), a2);
            b2 = _mm512_fmadd_ps(y, _mm512_loadu_ps(k2 + i + 16), b2);
            a3 = _mm512_fmadd_ps(x, _mm512_loadu_ps(k3 + i), a3);
            b3 = _mm512_fmadd_ps(y, _mm512_loadu_ps(k3 + i + 16), b3);
        }
        if (i + 16 <= d) {
            const __m512 x = _mm512_loadu_ps(q + i);
            a0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(k0 + i), a0);
            a1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(k1 + i), a1);
            a2 = _mm512_fmadd_ps(x, _mm512_loadu_ps(k2 + i), a2);
            a3 = _mm512_fmadd_ps(x, _mm512_loadu_ps(k3 + i), a3);
            i += 16;
        }
        if (i < d) {
            const __mmask16 m = (__mmask16)((1u << (d - i)) - 1);
            const __m512 x = _mm512_maskz_loadu_ps(m, q + i);
            b0 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, k0 + i), b0);
            b1 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, k1 + i), b1);
            b2 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, k2 + i), b2);
            b3 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, k3 + i), b3);
        }
        _mm_storeu_ps(out + t, avx512_hsum4(_mm512_add_ps(a0, b0), _mm512_add_ps(a1, b1), _mm512_add_ps(a2, b2),
                                            _mm512_add_ps(a3, b3)));
    }
    for (; t < n; t++) out[t] = avx512_dot(q, K + (size_t)t * d, d);
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

/* ------------------------------------------------------ integer path */

/* kv_quantize_act, bit for bit: the largest magnitude is exact in any
 * order, x * (127/amax) is one multiply, and vcvtps2dq rounds to nearest
 * even (the default MXCSR mode, as nearbyintf's). */
static void avx512_quant_act(const float *x, int64_t n, int32_t blk, float *d, int8_t *q, int16_t *s16) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / blk; b++) {
        const float *xb = x + b * blk;
        __m512 m = _mm512_setzero_ps();
        for (int32_t i = 0; i < blk; i += 16) m = _mm512_max_ps(m, _mm512_andnot_ps(sign, _mm512_loadu_ps(xb + i)));
        const float amax = _mm512_reduce_max_ps(m);
        d[b] = kv_act_scale(amax, blk);
        const __m512 id = _mm512_set1_ps(amax == 0 ? 0 : 127.0f / amax);
        for (int32_t i = 0; i < blk; i += 16) {
            const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + i), id));
            _mm_storeu_si128((__m128i *)(q + b * blk + i), _mm512_cvtsepi32_epi8(v));
            s16[(b * blk + i) / 16] = (int16_t)_mm512_reduce_add_epi32(v);
        }
    }
}

#define Q8_SUFFIX bw
#define Q8_TARGET
#define Q8_DOT16(acc, p, s) _mm512_add_epi32((acc), _mm512_madd_epi16((p), (s)))
#include "kernels_avx512_q8.h"
#undef Q8_SUFFIX
#undef Q8_TARGET
#undef Q8_DOT16

#define Q8_SUFFIX vnni
#define Q8_TARGET __attribute__((target("avx512vnni")))
#define Q8_DOT16(acc, p, s) _mm512_dpwssd_epi32((acc), (p), (s))
#include "kernels_avx512_q8.h"
#undef Q8_SUFFIX
#undef Q8_TARGET
#undef Q8_DOT16

const kv_kernel_table kv_kernels_avx512 = {
    .matvec_rows = avx512_matvec_rows, .dequant_rows = avx512_dequant_rows, .dot = avx512_dot, .axpy = avx512_axpy,
    .dots = avx512_dots, .wsum = avx512_wsum, .quant_act = avx512_quant_act, .matvec_q8 = avx512_matvec_q8_bw,
    .matmul_q8 = avx512_matmul_q8_bw,
    .wsum_kv = kv_avx2_wsum_kv, .softmax = avx512_softmax, .gemm_nt = avx512_gemm_nt,
    .gemm_pack = avx512_gemm_pack, .gemm_pv = avx512_gemm_pv, .f32_to_f16 = kv_avx2_f32_to_f16,
    .f16_to_f32 = kv_avx2_f16_to_f32, .silu_mul = avx512_silu_mul, .masked_sum = avx512_masked_sum,
    .sum_exp_f64 = avx512_sum_exp_f64};

/* Chosen only when CPUID reports AVX512_VNNI (kernels.c). */
const kv_kernel_table kv_kernels_avx512_vnni = {
    .matvec_rows = avx512_matvec_rows, .dequant_rows = avx512_dequant_rows, .dot = avx512_dot, .axpy = avx512_axpy,
    .dots = avx512_dots, .wsum = avx512_wsum, .quant_act = avx512_quant_act, .matvec_q8 = avx512_matvec_q8_vnni,
    .matmul_q8 = avx512_matmul_q8_vnni,
    .wsum_kv = kv_avx2_wsum_kv, .softmax = avx512_softmax, .gemm_nt = avx512_gemm_nt,
    .gemm_pack = avx512_gemm_pack, .gemm_pv = avx512_gemm_pv, .f32_to_f16 = kv_avx2_f32_to_f16,
    .f16_to_f32 = kv_avx2_f16_to_f32, .silu_mul = avx512_silu_mul, .masked_sum = avx512_masked_sum,
    .sum_exp_f64 = avx512_sum_exp_f64};
