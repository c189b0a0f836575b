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
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf, nan */
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
    default: return kv_errorf(KV_EINVAL, "dequantize: cannot decode type %d", (int)type);
    }
}
