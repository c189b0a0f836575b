/* quant.c - scalar conversions between fp32 and the stored weight types. */
#include "quant.h"

#include <math.h>
#include <string.h>

#include "kv_error.h"

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float kv_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) /* inf; a nan comes back quiet, as F16C's vcvtph2ps returns it */
        return bits_f32(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in fp32 */
        float v = (float)man * 0x1.0p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t kv_fp32_to_fp16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* inf or nan (keep nan quiet and non-zero) */
        return (uint16_t)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0));
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (abs < 0x38800000u) {
        /* result is subnormal (or zero) in fp16: value / 2^-24, rounded to nearest even */
        float a = bits_f32(abs) * 0x1.0p24f; /* exact: scaling by a power of two */
        float r = nearbyintf(a);             /* default rounding mode: ties to even */
        return (uint16_t)(sign | (uint16_t)r);
    }
    /* normal: drop 13 mantissa bits with round-to-nearest-even */
    uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return (uint16_t)(sign | (uint16_t)((rounded - 0x38000000u) >> 13));
}

float kv_bf16_to_fp32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t kv_fp32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet nan */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void quantize_q8_0(const float *x, kv_block_q8_0 *b) {
    float amax = 0;
    for (int j = 0; j < KV_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kv_fp32_to_fp16(d);
    for (int j = 0; j < KV_QK; j++) b->qs[j] = (int8_t)roundf(x[j] * id);
}

static void quantize_q4_0(const float *x, kv_block_q4_0 *b) {
    float amax = 0, max = 0;
    for (int j = 0; j < KV_QK; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kv_fp32_to_fp16(d);
    for (int j = 0; j < KV_QK / 2; j++) {
        float a = x[j] * id + 8.5f, c = x[j + KV_QK / 2] * id + 8.5f;
        uint8_t lo = (uint8_t)(a < 15.0f ? (int)a : 15), hi = (uint8_t)(c < 15.0f ? (int)c : 15);
        b->qs[j] = (uint8_t)(lo | (hi << 4));
    }
}

/* ------------------------------------------------------------- K-quants
 *
 * Layouts (GGUF / ggml-common.h). Value e of a 256-value super-block, with
 * c = e / 128, j = (e % 128) / 32, l = e % 32 where a layout walks 128 at a
 * time, and g = e / 64, h = (e % 64) / 32 where it walks 64 at a time:
 *   Q2_K  q = (qs[32c + l] >> 2j) & 3; scales[e/16]: low nibble scale x d,
 *         high nibble min x dmin; value = d*sc*q - dmin*mn.
 *   Q3_K  q = ((qs[32c + l] >> 2j) & 3) - (hmask[l] bit 4c+j ? 0 : 4);
 *         scales: 16 6-bit values stored +32 (low 4 bits in bytes 0..7,
 *         scale k < 8 in the low nibble of byte k, k >= 8 in the high
 *         nibble of byte k-8; high 2 bits in byte 8 + k%4 at bit 2(k/4));
 *         value = d*(sc-32)*q.
 *   Q4_K  q = (qs[32g + l] >> 4h) & 15; sub-block 2g+h of 32 values has a
 *         6-bit scale and min (scale_min below); value = d*sc*q - dmin*mn.
 *   Q5_K  as Q4_K, plus 16 when qh[l] has bit 2g+h.
 *   Q6_K  q = ((ql[64c + 32(j&1) + l] >> 4(j>>1)) & 15
 *             | ((qh[32c + l] >> 2j) & 3) << 4) - 32; value = d*scales[e/16]*q. */

static uint16_t rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* Q4_K / Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 bytes s. */
static void scale_min(int j, const uint8_t *s, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q3_K: the signed 6-bit scale k (0..15) from the 12 bytes s. */
static int q3_scale(int k, const uint8_t *s) {
    int lo = k < 8 ? s[k] & 0xF : s[k - 8] >> 4;
    int hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

void kv_kquant_scales(kv_dtype t, const uint8_t *blk, float d[16], float m[16]) {
    switch (t) {
    case KV_Q2_K: {
        float dd = kv_fp16_to_fp32(rd16(blk + 80)), dm = kv_fp16_to_fp32(rd16(blk + 82));
        for (int g = 0; g < 16; g++) d[g] = dd * (blk[g] & 0xF), m[g] = dm * (blk[g] >> 4);
        return;
    }
    case KV_Q3_K: {
        float dd = kv_fp16_to_fp32(rd16(blk + 108));
        for (int g = 0; g < 16; g++) d[g] = dd * q3_scale(g, blk + 96), m[g] = 0.0f;
        return;
    }
    case KV_Q4_K:
    case KV_Q5_K: {
        float dd = kv_fp16_to_fp32(rd16(blk)), dm = kv_fp16_to_fp32(rd16(blk + 2));
        for (int j = 0; j < 8; j++) {
            int sc, mn;
            scale_min(j, blk + 4, &sc, &mn);
            d[2 * j] = d[2 * j + 1] = dd * sc;
            m[2 * j] = m[2 * j + 1] = dm * mn;
        }
        return;
    }
    case KV_Q6_K: {
        float dd = kv_fp16_to_fp32(rd16(blk + 208));
        for (int g = 0; g < 16; g++) d[g] = dd * (int8_t)blk[192 + g], m[g] = 0.0f;
        return;
    }
    default: return;
    }
}

/* Q2_K, Q3_K, Q6_K: value e = 128c + 32j + l. */
static void ints_by_128(kv_dtype t, const uint8_t *blk, int8_t *q) {
    for (int c = 0; c < 2; c++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                int v;
                if (t == KV_Q2_K) v = (blk[16 + 32 * c + l] >> (2 * j)) & 3;
                else if (t == KV_Q3_K) v = ((blk[32 + 32 * c + l] >> (2 * j)) & 3) - ((blk[l] >> (4 * c + j)) & 1 ? 0 : 4);
                else v = (((blk[64 * c + 32 * (j & 1) + l] >> (4 * (j >> 1))) & 15) |
                          (((blk[128 + 32 * c + l] >> (2 * j)) & 3) << 4)) - 32;
                q[128 * c + 32 * j + l] = (int8_t)v;
            }
}

/* Q4_K, Q5_K: value e = 64g + 32h + l. */
static void ints_by_64(kv_dtype t, const uint8_t *blk, int8_t *q) {
    const uint8_t *qs = blk + (t == KV_Q4_K ? 16 : 48), *qh = blk + 16;
    for (int g = 0; g < 4; g++)
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                int v = (qs[32 * g + l] >> (4 * h)) & 15;
                if (t == KV_Q5_K) v += ((qh[l] >> (2 * g + h)) & 1) << 4;
                q[64 * g + 32 * h + l] = (int8_t)v;
            }
}

void kv_kquant_ints(kv_dtype t, const uint8_t *blk, int8_t q[256]) {
    switch (t) {
    case KV_Q2_K: ints_by_128(KV_Q2_K, blk, q); return;
    case KV_Q3_K: ints_by_128(KV_Q3_K, blk, q); return;
    case KV_Q6_K: ints_by_128(KV_Q6_K, blk, q); return;
    case KV_Q4_K: ints_by_64(KV_Q4_K, blk, q); return;
    case KV_Q5_K: ints_by_64(KV_Q5_K, blk, q); return;
    default: memset(q, 0, 256); return;
    }
}

static void dequantize_kquant(kv_dtype t, const uint8_t *blk, float *out) {
    float d[16], m[16];
    int8_t q[256];
    kv_kquant_scales(t, blk, d, m);
    kv_kquant_ints(t, blk, q);
    for (int e = 0; e < 256; e++) out[e] = d[e / 16] * q[e] - m[e / 16];
}

/* -- the quantizer (one pass, no search; see quant.h) */

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
static int nearest(float v) { return (int)lrintf(v); }

/* The value of largest magnitude among x[0..n), sign kept. */
static float signed_amax(const float *x, int n) {
    float amax = 0, v = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), v = x[i];
    return v;
}

/* Packs L[256] (each < 4) two bits at a time, as Q2_K/Q3_K store them. */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    memset(qs, 0, 64);
    for (int e = 0; e < 256; e++) qs[32 * (e / 128) + e % 32] |= (uint8_t)(L[e] << (2 * ((e % 128) / 32)));
}

/* Q2_K, Q4_K, Q5_K: value = d*sc*q - dmin*mn with q in 0..nmax, sub-blocks
 * of `sub` values, scales and mins of `sbits` bits. Each sub-block's range
 * [min(x, 0), max(x)] gives its scale and min; the super-block's largest
 * set d and dmin; the values are then rounded against the stored ones. */
static void quantize_affine(const float *x, int sub, int nmax, int sbits, float *d_out, float *dm_out,
                            uint8_t *ls, uint8_t *lm, uint8_t *L) {
    const int ns = 256 / sub, smax = (1 << sbits) - 1;
    float sc[16], mn[16], max_sc = 0, max_mn = 0;
    for (int j = 0; j < ns; j++) {
        float lo = 0, hi = x[j * sub];
        for (int i = 0; i < sub; i++) lo = fminf(lo, x[j * sub + i]), hi = fmaxf(hi, x[j * sub + i]);
        sc[j] = hi > lo ? (hi - lo) / nmax : 0.0f;
        mn[j] = -lo;
        max_sc = fmaxf(max_sc, sc[j]);
        max_mn = fmaxf(max_mn, mn[j]);
    }
    float d = kv_fp16_to_fp32(kv_fp32_to_fp16(max_sc / smax)), dm = kv_fp16_to_fp32(kv_fp32_to_fp16(max_mn / smax));
    *d_out = d, *dm_out = dm;
    for (int j = 0; j < ns; j++) {
        ls[j] = (uint8_t)(d > 0 ? clampi(nearest(sc[j] / d), 0, smax) : 0);
        /* the min rounded up: the lowest values stay representable */
        lm[j] = (uint8_t)(dm > 0 ? clampi((int)ceilf(mn[j] / dm), 0, smax) : 0);
        const float ds = d * ls[j], ms = dm * lm[j];
        for (int i = 0; i < sub; i++)
            L[j * sub + i] = (uint8_t)(ds > 0 ? clampi(nearest((x[j * sub + i] + ms) / ds), 0, nmax) : 0);
    }
}

static void quantize_q2_k(const float *x, uint8_t *blk) {
    uint8_t ls[16], lm[16], L[256];
    float d, dm;
    quantize_affine(x, 16, 3, 4, &d, &dm, ls, lm, L);
    for (int j = 0; j < 16; j++) blk[j] = (uint8_t)(ls[j] | (lm[j] << 4));
    pack_2bit(L, blk + 16);
    uint16_t h[2] = {kv_fp32_to_fp16(d), kv_fp32_to_fp16(dm)};
    memcpy(blk + 80, h, 4);
}

/* Q4_K / Q5_K: the 12 scale bytes, the inverse of scale_min. */
static void pack_scale_min(const uint8_t *ls, const uint8_t *lm, uint8_t *s) {
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

static void quantize_q45_k(const float *x, uint8_t *blk, int five) {
    uint8_t ls[8], lm[8], L[256];
    float d, dm;
    quantize_affine(x, 32, five ? 31 : 15, 6, &d, &dm, ls, lm, L);
    uint16_t h[2] = {kv_fp32_to_fp16(d), kv_fp32_to_fp16(dm)};
    memcpy(blk, h, 4);
    pack_scale_min(ls, lm, blk + 4);
    uint8_t *qh = blk + 16, *qs = blk + (five ? 48 : 16);
    if (five) memset(qh, 0, 32);
    for (int e = 0; e < 256; e++) {
        const int g = e / 64, hf = (e % 64) / 32, l = e % 32;
        if (hf == 0) qs[32 * g + l] = (uint8_t)(L[e] & 15);
        else qs[32 * g + l] |= (uint8_t)((L[e] & 15) << 4);
        if (five && L[e] > 15) qh[l] |= (uint8_t)(1u << (2 * g + hf));
    }
}

/* Q3_K and Q6_K: symmetric, q in [-half, half), sub-blocks of 16 with
 * signed scales of `sbits` bits against one fp16 d. Each sub-block's scale
 * maps its value of largest magnitude to -half (the one level without a
 * positive twin), as llama.cpp's reference quantizers do for Q4_0. */
static float quantize_symmetric(const float *x, int half, int sbits, int *lsc, int8_t *L) {
    const int shalf = 1 << (sbits - 1);
    float sc[16], max_sc = 0;
    for (int j = 0; j < 16; j++) {
        sc[j] = signed_amax(x + 16 * j, 16) / -half;
        if (fabsf(sc[j]) > fabsf(max_sc)) max_sc = sc[j];
    }
    if (max_sc == 0.0f) {
        memset(lsc, 0, 16 * sizeof *lsc);
        memset(L, 0, 256);
        return 0.0f;
    }
    const float iscale = -shalf / max_sc;
    const float d = kv_fp16_to_fp32(kv_fp32_to_fp16(1.0f / iscale));
    for (int j = 0; j < 16; j++) {
        lsc[j] = clampi(nearest(iscale * sc[j]), -shalf, shalf - 1);
        const float ds = d * lsc[j];
        for (int i = 0; i < 16; i++)
            L[16 * j + i] = (int8_t)(ds != 0.0f ? clampi(nearest(x[16 * j + i] / ds), -half, half - 1) : 0);
    }
    return d;
}

static void quantize_q3_k(const float *x, uint8_t *blk) {
    int lsc[16];
    int8_t L[256];
    uint8_t u[256];
    float d = quantize_symmetric(x, 4, 6, lsc, L);
    uint8_t *hmask = blk, *s = blk + 96;
    memset(hmask, 0, 32);
    memset(s, 0, 12);
    for (int k = 0; k < 16; k++) {
        const int v = lsc[k] + 32;
        s[k % 8] |= (uint8_t)((v & 0xF) << (k < 8 ? 0 : 4));
        s[8 + k % 4] |= (uint8_t)((v >> 4) << (2 * (k / 4)));
    }
    for (int e = 0; e < 256; e++) {
        const int v = L[e] + 4; /* 0..7: bit 2 in hmask, set for q >= 0 */
        if (v > 3) hmask[e % 32] |= (uint8_t)(1u << (e / 32));
        u[e] = (uint8_t)(v & 3);
    }
    pack_2bit(u, blk + 32);
    uint16_t h = kv_fp32_to_fp16(d);
    memcpy(blk + 108, &h, 2);
}

static void quantize_q6_k(const float *x, uint8_t *blk) {
    int lsc[16];
    int8_t L[256];
    float d = quantize_symmetric(x, 32, 8, lsc, L);
    memset(blk, 0, 192);
    for (int e = 0; e < 256; e++) {
        const int c = e / 128, j = (e % 128) / 32, l = e % 32, v = L[e] + 32;
        blk[64 * c + 32 * (j & 1) + l] |= (uint8_t)((v & 15) << (4 * (j >> 1)));
        blk[128 + 32 * c + l] |= (uint8_t)((v >> 4) << (2 * j));
    }
    for (int k = 0; k < 16; k++) blk[192 + k] = (uint8_t)(int8_t)lsc[k];
    uint16_t h = kv_fp32_to_fp16(d);
    memcpy(blk + 208, &h, 2);
}

static void quantize_kquant(kv_dtype t, const float *x, uint8_t *blk) {
    switch (t) {
    case KV_Q2_K: quantize_q2_k(x, blk); return;
    case KV_Q3_K: quantize_q3_k(x, blk); return;
    case KV_Q4_K: quantize_q45_k(x, blk, 0); return;
    case KV_Q5_K: quantize_q45_k(x, blk, 1); return;
    case KV_Q6_K: quantize_q6_k(x, blk); return;
    default: return;
    }
}

int kv_quantize(kv_dtype type, const float *x, void *out, int64_t n) {
    if (n < 0 || n % kv_dtype_block_elems(type) != 0)
        return kv_errorf(KV_EINVAL, "quantize: %lld values is not a whole number of %s blocks", (long long)n,
                         kv_dtype_name(type) ? kv_dtype_name(type) : "?");
    uint8_t *o8 = out; /* may be unaligned */
    uint16_t h;
    switch (type) {
    case KV_F32: memcpy(out, x, (size_t)n * sizeof(float)); return KV_OK;
    case KV_F16:
        for (int64_t i = 0; i < n; i++) h = kv_fp32_to_fp16(x[i]), memcpy(o8 + 2 * i, &h, 2);
        return KV_OK;
    case KV_BF16:
        for (int64_t i = 0; i < n; i++) h = kv_fp32_to_bf16(x[i]), memcpy(o8 + 2 * i, &h, 2);
        return KV_OK;
    case KV_Q8_0:
        for (int64_t i = 0; i < n / KV_QK; i++) { /* built in place, copied out: `out` may be unaligned */
            kv_block_q8_0 b;
            quantize_q8_0(x + i * KV_QK, &b);
            memcpy(o8 + (size_t)i * sizeof b, &b, sizeof b);
        }
        return KV_OK;
    case KV_Q4_0:
        for (int64_t i = 0; i < n / KV_QK; i++) {
            kv_block_q4_0 b;
            quantize_q4_0(x + i * KV_QK, &b);
            memcpy(o8 + (size_t)i * sizeof b, &b, sizeof b);
        }
        return KV_OK;
    case KV_Q2_K:
    case KV_Q3_K:
    case KV_Q4_K:
    case KV_Q5_K:
    case KV_Q6_K: {
        const size_t bytes = kv_dtype_block_bytes(type);
        for (int64_t i = 0; i < n / KV_QK_K; i++) quantize_kquant(type, x + i * KV_QK_K, o8 + (size_t)i * bytes);
        return KV_OK;
    }
    default: return kv_errorf(KV_EINVAL, "quantize: cannot encode type %d", (int)type);
    }
}

int kv_dequantize(kv_dtype type, const void *in, float *out, int64_t n) {
    if (n < 0 || n % kv_dtype_block_elems(type) != 0)
        return kv_errorf(KV_EINVAL, "dequantize: %lld values is not a whole number of blocks", (long long)n);
    const uint8_t *b8 = in; /* may be unaligned: 16-bit values are read with memcpy */
    uint16_t h;
    switch (type) {
    case KV_F32: memcpy(out, in, (size_t)n * sizeof(float)); return KV_OK;
    case KV_F16:
        for (int64_t i = 0; i < n; i++) memcpy(&h, b8 + 2 * i, 2), out[i] = kv_fp16_to_fp32(h);
        return KV_OK;
    case KV_BF16:
        for (int64_t i = 0; i < n; i++) memcpy(&h, b8 + 2 * i, 2), out[i] = kv_bf16_to_fp32(h);
        return KV_OK;
    case KV_Q8_0:
        for (int64_t i = 0; i < n / KV_QK; i++) {
            kv_block_q8_0 b;
            memcpy(&b, (const char *)in + i * sizeof b, sizeof b);
            float d = kv_fp16_to_fp32(b.d);
            for (int j = 0; j < KV_QK; j++) out[i * KV_QK + j] = b.qs[j] * d;
        }
        return KV_OK;
    case KV_Q4_0:
        for (int64_t i = 0; i < n / KV_QK; i++) {
            kv_block_q4_0 b;
            memcpy(&b, (const char *)in + i * sizeof b, sizeof b);
            float d = kv_fp16_to_fp32(b.d);
            for (int j = 0; j < KV_QK / 2; j++) {
                out[i * KV_QK + j] = ((b.qs[j] & 0xf) - 8) * d;
                out[i * KV_QK + j + KV_QK / 2] = ((b.qs[j] >> 4) - 8) * d;
            }
        }
        return KV_OK;
    case KV_Q2_K:
    case KV_Q3_K:
    case KV_Q4_K:
    case KV_Q5_K:
    case KV_Q6_K: {
        const size_t bytes = kv_dtype_block_bytes(type);
        for (int64_t i = 0; i < n / KV_QK_K; i++) dequantize_kquant(type, b8 + (size_t)i * bytes, out + i * KV_QK_K);
        return KV_OK;
    }
    default: return kv_errorf(KV_EINVAL, "dequantize: cannot decode type %d", (int)type);
    }
}

float kv_act_scale(float amax, int32_t blk) {
    if (amax == 0) return 0;
    return blk == KV_QK ? kv_fp16_to_fp32(kv_fp32_to_fp16(amax / 127.0f)) : 1.0f / (127.0f / amax);
}

/* One block of activations (see quant.h). The product x * (127/amax) is
 * one rounding, as the vector quantizers compute it, and nearbyintf rounds
 * ties to even as their conversion instructions do. */
static void quantize_act_block(const float *x, int32_t blk, float *d, int8_t *q) {
    float amax = 0;
    for (int32_t i = 0; i < blk; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    if (amax == 0) {
        *d = 0;
        memset(q, 0, (size_t)blk);
        return;
    }
    const float id = 127.0f / amax;
    *d = kv_act_scale(amax, blk);
    for (int32_t i = 0; i < blk; i++) q[i] = (int8_t)nearbyintf(x[i] * id);
}

void kv_quantize_act(const float *x, int64_t n, int32_t blk, float *d, int8_t *q, int16_t *s16) {
    for (int64_t b = 0; b < n / blk; b++) quantize_act_block(x + b * blk, blk, d + b, q + b * blk);
    for (int64_t g = 0; g < n / 16; g++) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += q[16 * g + i];
        s16[g] = (int16_t)s;
    }
}
