/* test_quant.c - fp16/bf16 conversions (exhaustive where possible) and the
 * Q8_0 / Q4_0 block encodings against hand-worked blocks; the K-quant
 * quantizer's round-trip error (their layouts are checked bit for bit
 * against numpy in tests/reference/kquant_ref.py). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kv_error.h"
#include "quant.h"

static float bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Every half converts to float and back to itself (NaNs stay NaN). */
static void test_fp16_exhaustive(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kv_fp16_to_fp32((uint16_t)h);
        uint16_t back = kv_fp32_to_fp16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            assert_true(isnan(f));
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
        } else {
            assert_int_equal(back, h);
        }
    }
    assert_true(kv_fp16_to_fp32(0x3c00) == 1.0f);
    assert_true(kv_fp16_to_fp32(0xc000) == -2.0f);
    assert_true(kv_fp16_to_fp32(0x0001) == 0x1p-24f); /* smallest subnormal */
    assert_true(kv_fp16_to_fp32(0x7bff) == 65504.0f);
}

static void test_fp16_rounding(void **state) {
    (void)state;
    /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0) */
    assert_int_equal(kv_fp32_to_fp16(1.0f + 0x1p-11f), 0x3c00);
    /* 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even) */
    assert_int_equal(kv_fp32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);
    /* just above halfway rounds up */
    assert_int_equal(kv_fp32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    /* overflow to infinity at 65520, not below */
    assert_int_equal(kv_fp32_to_fp16(65519.0f), 0x7bff);
    assert_int_equal(kv_fp32_to_fp16(65520.0f), 0x7c00);
    assert_int_equal(kv_fp32_to_fp16(-1e10f), 0xfc00);
    /* subnormals: 1.5 * 2^-24 ties to even (2 * 2^-24), 0.5 * 2^-24 to 0 */
    assert_int_equal(kv_fp32_to_fp16(1.5f * 0x1p-24f), 0x0002);
    assert_int_equal(kv_fp32_to_fp16(0.5f * 0x1p-24f), 0x0000);
    assert_int_equal(kv_fp32_to_fp16(-0.0f), 0x8000);
    assert_int_equal(kv_fp32_to_fp16(INFINITY), 0x7c00);
    assert_true((kv_fp32_to_fp16(NAN) & 0x7fff) > 0x7c00);
}

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kv_bf16_to_fp32((uint16_t)h);
        if (isnan(f)) continue;
        assert_int_equal(kv_fp32_to_bf16(f), h);
    }
    /* ties to even on the 16 dropped bits */
    assert_int_equal(kv_fp32_to_bf16(bits(0x3f808000u)), 0x3f80);
    assert_int_equal(kv_fp32_to_bf16(bits(0x3f818000u)), 0x3f82);
    assert_int_equal(kv_fp32_to_bf16(bits(0x3f808001u)), 0x3f81);
}

/* Q8_0 of 0..31 scaled: d = 31/127 * s; hand-worked values. */
static void test_q8_0_block(void **state) {
    (void)state;
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16) * 0.5f; /* -8 .. 7.5 */
    kv_block_q8_0 b;
    assert_int_equal(kv_quantize(KV_Q8_0, x, &b, 32), KV_OK);
    /* amax = 8, d = 8/127; q = round(x * 127/8) */
    assert_int_equal(b.d, kv_fp32_to_fp16(8.0f / 127.0f));
    assert_int_equal(b.qs[0], -127);
    assert_int_equal(b.qs[16], 0);
    assert_int_equal(b.qs[17], 8);  /* 0.5 * 15.875 = 7.94 -> 8 */
    assert_int_equal(b.qs[31], 119); /* 7.5 * 15.875 = 119.06 */
    float y[32];
    assert_int_equal(kv_dequantize(KV_Q8_0, &b, y, 32), KV_OK);
    for (int i = 0; i < 32; i++) assert_true(fabsf(y[i] - x[i]) <= 0.5f * 8.0f / 127.0f * 1.01f);
    /* all zeros: d = 0, q = 0 */
    memset(x, 0, sizeof x);
    assert_int_equal(kv_quantize(KV_Q8_0, x, &b, 32), KV_OK);
    assert_int_equal(b.d, 0);
    for (int i = 0; i < 32; i++) assert_int_equal(b.qs[i], 0);
}

static void test_q4_0_block(void **state) {
    (void)state;
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16); /* -16 .. 15: the extreme is -16 */
    kv_block_q4_0 b;
    assert_int_equal(kv_quantize(KV_Q4_0, x, &b, 32), KV_OK);
    /* max = -16 (sign kept), d = -16/-8 = 2, q = min(15, floor(x/2 + 8.5)) */
    assert_true(kv_fp16_to_fp32(b.d) == 2.0f);
    /* byte j holds element j (low nibble) and j+16 (high nibble) */
    assert_int_equal(b.qs[0], 0 | (8 << 4));  /* x0 = -16 -> 0; x16 = 0 -> 8 */
    assert_int_equal(b.qs[15], 8 | (15 << 4)); /* x15 = -1 -> floor(8.0) = 8; x31 = 15 -> min(15, 16) */
    float y[32];
    assert_int_equal(kv_dequantize(KV_Q4_0, &b, y, 32), KV_OK);
    assert_true(y[0] == -16.0f && y[16] == 0.0f && y[31] == 14.0f);
    for (int i = 0; i < 32; i++) assert_true(fabsf(y[i] - x[i]) <= 2.0f);
    assert_int_equal(kv_quantize(KV_Q4_0, x, &b, 31), KV_EINVAL); /* not whole blocks */
    assert_int_equal(kv_quantize(KV_Q8_G, x, &b, 32), KV_EINVAL);
}

static float lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / (float)0x1000000 - 0.5f;
}

/* Round trip through each K-quant on gaussian-like rows (sum of uniforms),
 * one large outlier per row: the RMS error relative to the data's RMS must
 * fall with the bits, under bounds set at ~1.5x what this quantizer gives
 * (Q2_K 0.357, Q3_K 0.178, Q4_K 0.086, Q5_K 0.040, Q6_K 0.022 measured; a
 * uniform b-bit grid over a sub-block's range gives roughly 1/(2^b sqrt 3)
 * of the range / RMS: of that order). Zeros stay exact zeros, and lengths
 * that are no whole super-blocks are refused. */
static void test_kquant_roundtrip(void **state) {
    (void)state;
    enum { N = 4096 };
    static float x[N], y[N];
    static uint8_t q[N];
    const kv_dtype types[5] = {KV_Q2_K, KV_Q3_K, KV_Q4_K, KV_Q5_K, KV_Q6_K};
    const double bound[5] = {0.54, 0.27, 0.13, 0.06, 0.033};
    uint64_t s = 42;
    for (int i = 0; i < N; i++) x[i] = lcg(&s) + lcg(&s) + lcg(&s) + (i % 700 == 5 ? 6.0f : 0.0f);
    double prev = 1e9;
    for (int t = 0; t < 5; t++) {
        assert_int_equal(kv_quantize(types[t], x, q, N), KV_OK);
        assert_int_equal(kv_dequantize(types[t], q, y, N), KV_OK);
        double e2 = 0, x2 = 0;
        for (int i = 0; i < N; i++) e2 += (double)(y[i] - x[i]) * (y[i] - x[i]), x2 += (double)x[i] * x[i];
        const double rel = sqrt(e2 / x2);
        printf("%s: relative RMS error %.4f\n", kv_dtype_name(types[t]), rel);
        assert_true(rel < bound[t]);
        assert_true(rel < prev); /* more bits, less error */
        prev = rel;
        static const float zeros[256];
        assert_int_equal(kv_quantize(types[t], zeros, q, 256), KV_OK);
        assert_int_equal(kv_dequantize(types[t], q, y, 256), KV_OK);
        for (int i = 0; i < 256; i++) assert_true(y[i] == 0.0f);
        assert_int_equal(kv_quantize(types[t], x, q, 255), KV_EINVAL);
        assert_int_equal(kv_dequantize(types[t], q, y, 512 + 32), KV_EINVAL);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_exhaustive), cmocka_unit_test(test_fp16_rounding), cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_q8_0_block),      cmocka_unit_test(test_q4_0_block),
        cmocka_unit_test(test_kquant_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
