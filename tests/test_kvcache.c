/* test_kvcache.c - slot storage: appends, evictions in order, ragged
 * heads, and memory that really goes down when slots are removed; each in
 * every storage type (f32, f16, q8_0), whose rows must move bit for bit
 * and hold exactly their type's bytes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <math.h>

#include "kv_error.h"
#include "kvcache.h"
#include "quant.h"

enum { HD = 64 }; /* two q8_0 blocks per row */

/* The type the tests below run with (each runs once per type). */
static kv_cache_type g_type = KV_CACHE_F32;
static const kv_dtype g_dtype[] = {KV_F32, KV_F16, KV_Q8_0};
/* Bytes of one row: 4 per value, 2 per value, 34 per block of 32. */
static const size_t g_row_bytes[] = {HD * 4, HD * 2, HD / 32 * 34};

static size_t slot_bytes(void) { return 2 * g_row_bytes[g_type] + sizeof(int32_t); }

/* Distinct values per tag and element, spread over a block's range (so
 * that q8_0 keeps them apart). */
static void fill(float *k, float *v, int32_t tag) {
    for (int i = 0; i < HD; i++) {
        k[i] = (float)(tag % 97) + 0.37f * (float)i - 9.0f;
        v[i] = -(float)(tag % 89) - 0.21f * (float)((i * 7) % HD);
    }
}

/* What a row of x reads back as: through the type's stored form. */
static void rounded(const float *x, float *out) {
    uint8_t buf[HD * 4];
    assert_int_equal(kv_quantize(g_dtype[g_type], x, buf, HD), KV_OK);
    assert_int_equal(kv_dequantize(g_dtype[g_type], buf, out, HD), KV_OK);
}

static void check_slot_c(const kv_cache *c, const kv_cache_head *h, int32_t slot, int32_t tag) {
    float k[HD], v[HD], ek[HD], ev[HD], gk[HD], gv[HD];
    fill(k, v, tag);
    rounded(k, ek);
    rounded(v, ev);
    assert_int_equal(h->pos[slot], tag);
    kv_cache_key_row(c, h, slot, gk);
    kv_cache_value_row(c, h, slot, gv);
    assert_memory_equal(gk, ek, sizeof ek);
    assert_memory_equal(gv, ev, sizeof ev);
}
#define check_slot(h, slot, tag) check_slot_c(c, h, slot, tag)

static void test_append_and_keep(void **state) {
    (void)state;
    kv_cache *c;
    assert_int_equal(kv_cache_new(2, 3, HD, g_type, &c), KV_OK);
    kv_cache_head *h = kv_cache_head_at(c, 1, 2);
    float k[HD], v[HD];
    for (int32_t t = 0; t < 100; t++) {
        fill(k, v, t);
        assert_int_equal(kv_cache_append(c, h, k, v, t), KV_OK);
    }
    assert_int_equal(h->len, 100);
    assert_int_equal(kv_cache_total_slots(c), 100);
    assert_int_equal(kv_cache_max_len(c), 100);
    for (int32_t t = 0; t < 100; t++) check_slot(h, t, t);

    /* keep sinks 0..3 and the last 10: order is preserved */
    int32_t keep[14];
    for (int i = 0; i < 4; i++) keep[i] = i;
    for (int i = 0; i < 10; i++) keep[4 + i] = 90 + i;
    size_t before = kv_cache_bytes(c);
    assert_int_equal(kv_cache_keep(c, h, keep, 14), KV_OK);
    assert_int_equal(h->len, 14);
    for (int i = 0; i < 14; i++) check_slot(h, i, keep[i]);
    /* physical memory went down: capacity shrank to near the live slots */
    assert_true(kv_cache_bytes(c) < before / 2);
    assert_true(h->cap >= h->len);
    assert_true(kv_cache_peak_bytes(c) >= before);

    /* remove from the middle */
    assert_int_equal(kv_cache_remove(c, h, 5), KV_OK);
    assert_int_equal(h->len, 13);
    check_slot(h, 4, 90);
    check_slot(h, 5, 92);
    kv_cache_free(c);
}

static void test_bad_keep_lists(void **state) {
    (void)state;
    kv_cache *c;
    assert_int_equal(kv_cache_new(1, 1, HD, g_type, &c), KV_OK);
    kv_cache_head *h = kv_cache_head_at(c, 0, 0);
    float k[HD], v[HD];
    for (int32_t t = 0; t < 5; t++) {
        fill(k, v, t);
        assert_int_equal(kv_cache_append(c, h, k, v, t), KV_OK);
    }
    int32_t unsorted[2] = {3, 1}, out_of_range[2] = {0, 5}, dup[2] = {2, 2};
    assert_int_equal(kv_cache_keep(c, h, unsorted, 2), KV_EINVAL);
    assert_int_equal(kv_cache_keep(c, h, out_of_range, 2), KV_EINVAL);
    assert_int_equal(kv_cache_keep(c, h, dup, 2), KV_EINVAL);
    assert_int_equal(kv_cache_remove(c, h, 5), KV_EINVAL);
    assert_int_equal(kv_cache_remove(c, h, -1), KV_EINVAL);
    assert_int_equal(h->len, 5); /* nothing changed */
    for (int32_t t = 0; t < 5; t++) check_slot(h, t, t);
    kv_cache_free(c);
}

static void test_ragged_and_clear(void **state) {
    (void)state;
    kv_cache *c;
    assert_int_equal(kv_cache_new(3, 2, HD, g_type, &c), KV_OK);
    float k[HD], v[HD];
    for (int l = 0; l < 3; l++)
        for (int g = 0; g < 2; g++) {
            kv_cache_head *h = kv_cache_head_at(c, l, g);
            for (int32_t t = 0; t < 10 * (l + 1) + g; t++) {
                fill(k, v, t);
                assert_int_equal(kv_cache_append(c, h, k, v, t), KV_OK);
            }
        }
    assert_int_equal(kv_cache_max_len(c), 31);
    assert_int_equal(kv_cache_total_slots(c), 10 + 11 + 20 + 21 + 30 + 31);
    /* bytes are exactly the capacity's */
    size_t expect = 0;
    for (int l = 0; l < 3; l++)
        for (int g = 0; g < 2; g++) expect += (size_t)kv_cache_head_at(c, l, g)->cap * slot_bytes();
    assert_int_equal(kv_cache_bytes(c), expect);
    kv_cache_clear(c);
    assert_int_equal(kv_cache_bytes(c), 0);
    assert_int_equal(kv_cache_total_slots(c), 0);
    for (int l = 0; l < 3; l++)
        for (int g = 0; g < 2; g++) {
            assert_null(kv_cache_head_at(c, l, g)->kb);
            assert_int_equal(kv_cache_head_at(c, l, g)->cap, 0);
        }
    kv_cache_free(c);
}

/* A cache held at a fixed budget (one in, one out) keeps a bounded
 * allocation: no growth across thousands of steps. */
static void test_fixed_budget_is_bounded(void **state) {
    (void)state;
    kv_cache *c;
    assert_int_equal(kv_cache_new(1, 1, HD, g_type, &c), KV_OK);
    kv_cache_head *h = kv_cache_head_at(c, 0, 0);
    float k[HD], v[HD];
    size_t max_bytes = 0;
    for (int32_t t = 0; t < 5000; t++) {
        fill(k, v, t);
        assert_int_equal(kv_cache_append(c, h, k, v, t), KV_OK);
        if (h->len > 64) assert_int_equal(kv_cache_remove(c, h, 4), KV_OK); /* keep 4 sinks */
        assert_true(h->len <= 64);
        if (kv_cache_bytes(c) > max_bytes) max_bytes = kv_cache_bytes(c);
    }
    assert_true(max_bytes <= (size_t)(64 + 16 + 1) * slot_bytes());
    check_slot(h, 0, 0);
    check_slot(h, 63, 4999);
    kv_cache_free(c);
}

/* Random appends and random keep lists against a plain list of positions:
 * both compaction directions, runs of every length, the front offset and
 * its reuse. */
static void test_random_against_model(void **state) {
    (void)state;
    kv_cache *c;
    assert_int_equal(kv_cache_new(1, 1, HD, g_type, &c), KV_OK);
    kv_cache_head *h = kv_cache_head_at(c, 0, 0);
    int32_t model[600], n = 0, next_pos = 0, keep[600];
    uint64_t r = 12345;
    float k[HD], v[HD];
    for (int step = 0; step < 3000; step++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int add = (int)((r >> 33) % 5);
        for (int a = 0; a < add && n < 500; a++) {
            fill(k, v, next_pos);
            assert_int_equal(kv_cache_append(c, h, k, v, next_pos), KV_OK);
            model[n++] = next_pos++;
        }
        if ((r >> 20) % 3 == 0 && n > 0) { /* keep a random subset, in order */
            int32_t m = 0;
            uint64_t bits = r;
            for (int32_t j = 0; j < n; j++) {
                bits = bits * 2862933555777941757ull + 3037000493ull;
                if ((bits >> 40) % 8 != 0) keep[m++] = j; /* drop about one in eight */
            }
            assert_int_equal(kv_cache_keep(c, h, keep, m), KV_OK);
            for (int32_t j = 0; j < m; j++) model[j] = model[keep[j]];
            n = m;
        } else if ((r >> 20) % 3 == 1 && n > 0) { /* drop a random subset, order not kept */
            uint8_t mask[600];
            int32_t src[600], m = 0, old[600];
            uint64_t bits = r;
            for (int32_t j = 0; j < n; j++) {
                bits = bits * 2862933555777941757ull + 3037000493ull;
                mask[j] = (bits >> 40) % 6 != 0;
                m += mask[j];
                old[j] = model[j];
            }
            assert_int_equal(kv_cache_drop(c, h, mask, src), KV_OK);
            for (int32_t j = 0; j < m; j++) {
                assert_true(mask[src[j]]);
                model[j] = old[src[j]];
            }
            n = m;
        }
        assert_int_equal(h->len, n);
        for (int32_t j = 0; j < n; j++) check_slot(h, j, model[j]);
        assert_true(h->off + h->len <= h->cap);
    }
    kv_cache_free(c);
}

/* The stored rows against the format's rounding, independently of
 * quant.c: f16 rounds to nearest, so |x - r| <= 2^-11 |x| (normal range);
 * q8_0 stores d = amax/127 as fp16 (relative error <= 2^-11) and q =
 * round(x/d), so |x - d'q| <= d/2 + 127 d 2^-11 < 0.57 d per value. */
static void test_rounding_bounds(void **state) {
    (void)state;
    kv_cache *c;
    assert_int_equal(kv_cache_new(1, 1, HD, g_type, &c), KV_OK);
    kv_cache_head *h = kv_cache_head_at(c, 0, 0);
    float k[HD], v[HD], got[HD];
    fill(k, v, 41);
    assert_int_equal(kv_cache_append(c, h, k, v, 0), KV_OK);
    kv_cache_key_row(c, h, 0, got);
    for (int b = 0; b < HD / 32; b++) {
        float amax = 0;
        for (int i = 32 * b; i < 32 * b + 32; i++) amax = fmaxf(amax, fabsf(k[i]));
        for (int i = 32 * b; i < 32 * b + 32; i++) {
            const float err = fabsf(got[i] - k[i]);
            if (g_type == KV_CACHE_F32) assert_true(err == 0.0f);
            else if (g_type == KV_CACHE_F16) assert_true(err <= fabsf(k[i]) * 0x1p-11f);
            else assert_true(err <= 0.57f * amax / 127.0f);
        }
    }
    /* set_row rounds as append does */
    kv_cache_set_row(c, h, 0, v, NULL);
    float want[HD];
    rounded(v, want);
    kv_cache_key_row(c, h, 0, got);
    assert_memory_equal(got, want, sizeof want);
    kv_cache_free(c);
}

/* Exact bytes per type, copies keep the type, and q8_0 refuses a head_dim
 * that is not whole blocks. */
static void test_bytes_and_copy(void **state) {
    (void)state;
    kv_cache *c, *d, *other;
    assert_int_equal(kv_cache_new(2, 2, HD, g_type, &c), KV_OK);
    assert_int_equal(kv_cache_row_bytes(c), g_row_bytes[g_type]);
    assert_int_equal(kv_cache_type_row_bytes(g_type, HD), g_row_bytes[g_type]);
    float k[HD], v[HD];
    for (int32_t t = 0; t < 40; t++) {
        fill(k, v, t);
        assert_int_equal(kv_cache_append(c, kv_cache_head_at(c, 1, 0), k, v, t), KV_OK);
    }
    assert_int_equal(kv_cache_bytes(c), (size_t)kv_cache_head_at(c, 1, 0)->cap * slot_bytes());
    assert_int_equal(kv_cache_new(2, 2, HD, g_type, &d), KV_OK);
    assert_int_equal(kv_cache_copy(d, c), KV_OK);
    assert_int_equal(kv_cache_bytes(d), kv_cache_bytes(c));
    for (int32_t t = 0; t < 40; t++) check_slot_c(d, kv_cache_head_at(d, 1, 0), t, t);
    assert_int_equal(kv_cache_new(2, 2, HD, (kv_cache_type)((g_type + 1) % 3), &other), KV_OK);
    assert_int_equal(kv_cache_copy(other, c), KV_EINVAL); /* another type */
    kv_cache_free(other);
    kv_cache_free(d);
    kv_cache_free(c);
}

static void test_q8_0_needs_blocks(void **state) {
    (void)state;
    kv_cache *c = NULL;
    assert_int_equal(kv_cache_new(1, 1, 48, KV_CACHE_Q8_0, &c), KV_EINVAL);
    assert_null(c);
    assert_non_null(strstr(kv_last_error(), "head_dim is 48"));
    assert_int_equal(kv_cache_new(1, 1, 48, KV_CACHE_F16, &c), KV_OK);
    kv_cache_free(c);
    kv_cache_type t;
    assert_int_equal(kv_cache_type_parse("q8_0", &t), KV_OK);
    assert_int_equal(t, KV_CACHE_Q8_0);
    assert_int_equal(kv_cache_type_parse("q4_0", &t), KV_EINVAL);
}

static int set_f32(void **state) { (void)state; g_type = KV_CACHE_F32; return 0; }
static int set_f16(void **state) { (void)state; g_type = KV_CACHE_F16; return 0; }
static int set_q8_0(void **state) { (void)state; g_type = KV_CACHE_Q8_0; return 0; }

#define ALL_TESTS(SETUP)                                                                        \
    cmocka_unit_test_setup(test_append_and_keep, SETUP), cmocka_unit_test_setup(test_bad_keep_lists, SETUP), \
    cmocka_unit_test_setup(test_ragged_and_clear, SETUP),                                       \
    cmocka_unit_test_setup(test_fixed_budget_is_bounded, SETUP),                                \
    cmocka_unit_test_setup(test_random_against_model, SETUP),                                   \
    cmocka_unit_test_setup(test_rounding_bounds, SETUP), cmocka_unit_test_setup(test_bytes_and_copy, SETUP)

int main(void) {
    const struct CMUnitTest tests[] = {
        ALL_TESTS(set_f32), ALL_TESTS(set_f16), ALL_TESTS(set_q8_0),
        cmocka_unit_test(test_q8_0_needs_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
