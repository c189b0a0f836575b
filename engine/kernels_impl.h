/* kernels_impl.h - private: the per-ISA kernel tables behind kernels.h. */
#ifndef KV_KERNELS_IMPL_H
#define KV_KERNELS_IMPL_H

#include <math.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"

/* Activations quantized by kv_quantize_act for one matrix-vector product:
 * n values in blocks of blk (32 for Q8_0/Q4_0 weights, 256 for the
 * K-quants), d[n/blk] scales, q[n] int8 values, s16[n/16] sums of q. */
typedef struct kv_q8_act {
    int64_t n;
    int32_t blk;
    const float *d;
    const int8_t *q;
    const int16_t *s16;
} kv_q8_act;

/* One ISA's kernels. A NULL entry falls back to the portable one. */
typedef struct kv_kernel_table {
    /* y[r] for r in [r0, r1) of a weight of type F32/F16/BF16/Q8_0/Q4_0/Q2_K..Q6_K;
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
    /* kv_quantize_act, bit for bit */
    void (*quant_act)(const float *x, int64_t n, int32_t blk, float *d, int8_t *q, int16_t *s16);
    /* y[r] for r in [r0, r1) from activations quantized in blocks of
     * kv_int8_block(W->type): integer products per block, scaled in fp32
     * (the sums the portable rows of kernels.c define, to float rounding); returns 0
     * when it handled the type, -1 to fall back. */
    int (*matvec_q8)(const kv_tensor *W, const kv_q8_act *a, float *y, int64_t r0, int64_t r1);
    /* Y[t * ldy + r] for t < n, r in [r0, r1): token t's activations a[t],
     * each output bit for bit matvec_q8's (a prompt's products in int8 mode);
     * returns 0 when it handled the type, -1 to fall back. */
    int (*matmul_q8)(const kv_tensor *W, const kv_q8_act *a, int n, float *Y, int64_t ldy, int64_t r0, int64_t r1);
    /* kv_wsum_kv for a cache of type t (F16 or Q8_0); returns 0 when it
     * handled the type, -1 to fall back. */
    int (*wsum_kv)(kv_dtype t, float *o, const float *w, const void *V, int64_t n, int64_t d);
    /* kv_softmax_f32, bit for bit the portable one (see kv_exp_f32) */
    void (*softmax)(float *x, int64_t n);
    /* kv_gemm_nt on packed X, or NULL (no such kernel: sgemm then) */
    void (*gemm_nt)(const float *Xp, int64_t n, int64_t K, const float *W, int64_t ldw, int64_t rows, float *Y,
                    int64_t ldy);
    /* kv_f32_to_f16 / kv_f16_to_f32 (F16C), the portable converters' bits, or NULL */
    void (*f32_to_f16)(const float *x, uint16_t *y, int64_t n);
    void (*f16_to_f32)(const uint16_t *x, float *y, int64_t n);
    /* kv_silu_mul, bit for bit the portable one */
    void (*silu_mul)(float *g, const float *u, int64_t n);
    /* kv_gemm_pack_range, the same floats, or NULL (the portable loop) */
    void (*gemm_pack)(const float *X, int64_t n, int64_t K, int64_t ldx, float *Xp, int64_t tb0, int64_t tb1);
    /* kv_gemm_pv (d a multiple of 16), or NULL (sgemm then) */
    void (*gemm_pv)(const float *P, int64_t ldp, int64_t n, int64_t kl, const float *V, int64_t d, float *O,
                    int64_t ldo);
    /* kv_masked_sum, bit for bit the portable one */
    double (*masked_sum)(const float *x, const float *m, int64_t n);
    /* kv_sum_exp_f64, bit for bit the portable one */
    double (*sum_exp_f64)(const float *x, int64_t n, double shift);
} kv_kernel_table;

extern const kv_kernel_table kv_kernels_scalar;
#if defined(KV_X86_DISPATCH)
extern const kv_kernel_table kv_kernels_avx2;
extern const kv_kernel_table kv_kernels_avx512;
extern const kv_kernel_table kv_kernels_avx512_vnni;
/* The AVX2 integer matvec, which the AVX-512 tables use for Q8_0 and Q4_0. */
int kv_avx2_matvec_q8(const kv_tensor *W, const kv_q8_act *a, float *y, int64_t r0, int64_t r1);
int kv_avx2_matmul_q8(const kv_tensor *W, const kv_q8_act *a, int n, float *Y, int64_t ldy, int64_t r0, int64_t r1);
/* The AVX2 weighted sums over f16 / q8_0 rows, which the AVX-512 tables
 * use too: a head's rows are short (64..256 values), so eight lanes keep
 * up with the memory they stream. */
int kv_avx2_wsum_kv(kv_dtype t, float *o, const float *w, const void *V, int64_t n, int64_t d);
/* F16C conversions, eight values a step (the AVX-512 table takes them too). */
void kv_avx2_f32_to_f16(const float *x, uint16_t *y, int64_t n);
void kv_avx2_f16_to_f32(const uint16_t *x, float *y, int64_t n);
#endif

/* Rows the integer kernels walk together, each from its own contiguous
 * part of [r0, r1) (as the float kernels walk KV_MV_STREAMS): their
 * blocks are quick to multiply, so more far-apart streams are needed to
 * keep enough memory requests in flight (measured below, kernels_avx2.c). */
#ifndef KV_Q8_STREAMS
#define KV_Q8_STREAMS 4
#endif

/* Activation block size of W's type on the integer path: 32 (Q8_0, Q4_0),
 * 256 (the K-quants), 0 for the
 * types that stay on the float path. */
static inline int32_t kv_int8_block(kv_dtype t) {
    switch (t) {
    case KV_Q8_0:
    case KV_Q4_0: return KV_QK;
    case KV_Q2_K:
    case KV_Q3_K:
    case KV_Q4_K:
    case KV_Q5_K:
    case KV_Q6_K: return KV_QK_K;
    default: return 0;
    }
}

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

/* K-quants: the integer scale (int8, signed for Q3_K and Q6_K) and min of
 * each run of 16 values of a super-block, as 16 bytes in four 32-bit words
 * (for Q4_K/Q5_K, whose eight scales and mins cover 32 values each, the
 * eight in words 0 and 1: the caller repeats each byte), and the fp16 bits
 * of d and dmin (0 where the type has none): value e = d*sc[e/16]*q -
 * dmin*mn[e/16], as kv_kquant_scales. Unpacked with 32-bit word operations,
 * four scales at a time (the bit layouts are spelled out in quant.c), and
 * handed over as words so that the vector code builds its registers from
 * them without a store and a wider reload (which would not be forwarded). */
static inline uint32_t kq_word(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void kq_scale_ints(kv_dtype t, const uint8_t *blk, uint32_t sc[4], uint32_t mn[4], uint16_t dm[2]) {
    dm[1] = 0;
    for (int k = 0; k < 4; k++) sc[k] = mn[k] = 0;
    switch (t) {
    case KV_Q2_K:
        for (int k = 0; k < 4; k++) {
            const uint32_t w = kq_word(blk + 4 * k);
            sc[k] = w & 0x0f0f0f0fu, mn[k] = (w >> 4) & 0x0f0f0f0fu;
        }
        memcpy(dm, blk + 80, 4);
        return;
    case KV_Q3_K: { /* 6-bit scales: low nibbles in bytes 0..7, high pairs in 8..11; stored +32 */
        const uint32_t a0 = kq_word(blk + 96), a1 = kq_word(blk + 100), hi = kq_word(blk + 104);
        sc[0] = (a0 & 0x0f0f0f0fu) | ((hi << 4) & 0x30303030u);
        sc[1] = (a1 & 0x0f0f0f0fu) | ((hi << 2) & 0x30303030u);
        sc[2] = ((a0 >> 4) & 0x0f0f0f0fu) | (hi & 0x30303030u);
        sc[3] = ((a1 >> 4) & 0x0f0f0f0fu) | ((hi >> 2) & 0x30303030u);
        /* minus 32 in each byte, as int8, without borrows between bytes: 0x80 + v - 32, top bit flipped */
        for (int k = 0; k < 4; k++) sc[k] = (sc[k] | 0x80808080u) - 0x20202020u, sc[k] ^= 0x80808080u;
        memcpy(dm, blk + 108, 2);
        return;
    }
    case KV_Q4_K:
    case KV_Q5_K: { /* 6-bit scales and mins: 0..3 whole in bytes 0..7, 4..7 split */
        const uint32_t a0 = kq_word(blk + 4), a1 = kq_word(blk + 8), a2 = kq_word(blk + 12);
        sc[0] = a0 & 0x3f3f3f3fu;
        sc[1] = (a2 & 0x0f0f0f0fu) | ((a0 >> 2) & 0x30303030u);
        mn[0] = a1 & 0x3f3f3f3fu;
        mn[1] = ((a2 >> 4) & 0x0f0f0f0fu) | ((a1 >> 2) & 0x30303030u);
        memcpy(dm, blk, 4);
        return;
    }
    case KV_Q6_K:
        for (int k = 0; k < 4; k++) sc[k] = kq_word(blk + 192 + 4 * k);
        memcpy(dm, blk + 208, 2);
        return;
    default: return;
    }
}

/* Bytes of one row of W. */
static inline size_t kv_row_bytes(const kv_tensor *W) { return kv_dtype_bytes(W->type, W->cols); }

/* kv_gemm_pack's layout: tiles of KV_GEMM_TILE tokens, X[t][k] at
 * Xp[(t / 16) * K * 16 + k * 16 + t % 16], an even number of tiles. */
#define KV_GEMM_TILE 16

/* ------------------------------------------------ softmax's exponential */

/* e^x as every ISA computes it in softmax, lane by lane with the same
 * operations, so that the vector kernels equal the portable one bit for
 * bit: x = k ln2 + r with k = rint(x log2(e)) and r found in two fused
 * steps (ln2 split into a short head and a tail, as Cephes does), e^r from
 * its Taylor series to degree 7 in fused Horner steps (the series' first
 * omitted term is below 5.1e-9 for |r| <= ln2/2), then times 2^k built in
 * the exponent bits. Below KV_EXP_MIN, where e^x is subnormal, it is 0;
 * above 88 (never in softmax, whose inputs are <= 0) x is taken as 88, as
 * is NaN (the vector min's rule). Within 2 ulp of e^x (test_kernels). */
#define KV_EXP_MIN (-87.33654475f) /* ln(FLT_MIN) */
#define KV_EXP_MAX 88.0f
#define KV_EXP_LOG2E 1.44269504088896341f
#define KV_EXP_LN2_HI 0.693359375f     /* 8 significant bits: k * hi is exact */
#define KV_EXP_LN2_LO (-2.12194440e-4f) /* ln2 - hi */
#define KV_EXP_C7 (1.0f / 5040.0f)
#define KV_EXP_C6 (1.0f / 720.0f)
#define KV_EXP_C5 (1.0f / 120.0f)
#define KV_EXP_C4 (1.0f / 24.0f)
#define KV_EXP_C3 (1.0f / 6.0f)
#define KV_EXP_C2 0.5f

static inline float kv_exp_f32(float x) {
    if (x < KV_EXP_MIN) return 0.0f;
    if (!(x <= KV_EXP_MAX)) x = KV_EXP_MAX;
    const float k = rintf(x * KV_EXP_LOG2E);
    float r = fmaf(-k, KV_EXP_LN2_HI, x);
    r = fmaf(-k, KV_EXP_LN2_LO, r);
    float p = fmaf(KV_EXP_C7, r, KV_EXP_C6);
    p = fmaf(p, r, KV_EXP_C5);
    p = fmaf(p, r, KV_EXP_C4);
    p = fmaf(p, r, KV_EXP_C3);
    p = fmaf(p, r, KV_EXP_C2);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    union { uint32_t u; float f; } two_k = {.u = (uint32_t)((int32_t)k + 127) << 23};
    return p * two_k.f;
}

/* e^t in double for the metrics' log-sum-exp, by kv_exp_f32's method
 * with double constants: k = rint(t log2(e)), r = t - k ln2 in two fused
 * steps (fdlibm's split of ln2), e^r from its Taylor series to degree 13
 * in fused Horner steps (the first omitted term is below 5e-18 for |r| <=
 * ln2/2), times 2^k as 2^k1 2^k2 (k1 = floor(k/2)), so a subnormal result
 * rounds like the vector kernels'. NaN gives NaN, t above KV_EXP64_MAX
 * +inf, below KV_EXP64_MIN 0. Within 1 ulp of libm's exp (test_kernels);
 * every ISA computes the same bits. */
#define KV_EXP64_MIN (-745.2)
#define KV_EXP64_MAX 709.782712893384
#define KV_EXP64_LOG2E 1.4426950408889634
#define KV_EXP64_LN2_HI 6.93147180369123816490e-01
#define KV_EXP64_LN2_LO 1.90821492927058770002e-10
static const double kv_exp64_c[14] = {1.0,
                                      1.0,
                                      1.0 / 2,
                                      1.0 / 6,
                                      1.0 / 24,
                                      1.0 / 120,
                                      1.0 / 720,
                                      1.0 / 5040,
                                      1.0 / 40320,
                                      1.0 / 362880,
                                      1.0 / 3628800,
                                      1.0 / 39916800,
                                      1.0 / 479001600,
                                      1.0 / 6227020800.0};

/* 2^k for an integral k in [-1022, 1023], from the exponent bits. */
static inline double kv_pow2_f64(double k) {
    union { uint64_t u; double d; } v = {.u = (uint64_t)((int64_t)k + 1023) << 52};
    return v.d;
}

static inline double kv_exp_f64(double t) {
    if (t != t) return t;
    if (t > KV_EXP64_MAX) return INFINITY;
    if (t < KV_EXP64_MIN) return 0.0;
    const double k = nearbyint(t * KV_EXP64_LOG2E);
    double r = fma(-k, KV_EXP64_LN2_HI, t);
    r = fma(-k, KV_EXP64_LN2_LO, r);
    double p = kv_exp64_c[13];
    for (int i = 12; i >= 0; i--) p = fma(p, r, kv_exp64_c[i]);
    const double k1 = floor(k * 0.5);
    return p * kv_pow2_f64(k1) * kv_pow2_f64(k - k1);
}

/* kv_sum_exp_f64's lanes: element i in lane i % 16 (kv_fold_f64). */
#define KV_SEXP_LANES 16

/* Softmax's sum: element i goes to lane i % 16 (one AVX-512 register, two
 * AVX2 ones, an array in the portable path), and the lanes are added in
 * this fixed tree, so every ISA's sum is the same. */
#define KV_SOFTMAX_LANES 16
static inline float kv_sum_lanes(const float lanes[KV_SOFTMAX_LANES]) {
    float a[KV_SOFTMAX_LANES];
    memcpy(a, lanes, sizeof a);
    for (int w = KV_SOFTMAX_LANES / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++) a[i] += a[i + w];
    return a[0];
}

/* The double sums' lanes (n a power of two, at most 32), folded in
 * halves: lane i += lane i + n/2, and so on down to lane 0. */
static inline double kv_fold_f64(const double *lanes, int n) {
    double a[32];
    memcpy(a, lanes, (size_t)n * sizeof *a);
    for (int w = n / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++) a[i] += a[i + w];
    return a[0];
}

/* kv_masked_sum's lanes: element j in lane j % KV_MSUM_LANES (32 doubles:
 * four 8-wide accumulators keep AVX-512's adds busy). */
#define KV_MSUM_LANES 32

#endif
