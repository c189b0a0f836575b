/* test_kvcache.c - slot storage: appends, evictions in order, ragged
 * heads, and memory that really goes down when slots are removed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "kv_error.h"
#include "kvcache.h"

enum { HD = 8 };

static void fill(float *k, float *v, int32_t tag) {
    for (int i = 0; i < HD; i++) {
        k[i] = (float)tag + 0.01f * (float)i;
        v[i] = -(float)tag - 0.01f * (float)i;
    }
}

static void check_slot(const kv_cache_head *h, int32_t slot, int32_t tag) {
    float k[HD], v[HD];
    fill(k, v, tag);
    assert_int_equal(h->pos[slot], tag);
    assert_memory_equal(h->k + (size_t)slot * HD, k, sizeof k);
    assert_memory_equal(h->v + (size_t)slot * HD, v, sizeof v);
}

static void test_append_and_keep(void **state) {
    (void)state;
    kv_cache *c;
    assert_int_equal(kv_cache_new(2, 3, HD, &c), KV_OK);
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
    assert_int_equal(kv_cache_new(1, 1, HD, &c), KV_OK);
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
    assert_int_equal(kv_cache_new(3, 2, HD, &c), KV_OK);
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
        for (int g = 0; g < 2; g++) expect += (size_t)kv_cache_head_at(c, l, g)->cap * (2 * HD * 4 + 4);
    assert_int_equal(kv_cache_bytes(c), expect);
    kv_cache_clear(c);
    assert_int_equal(kv_cache_bytes(c), 0);
    assert_int_equal(kv_cache_total_slots(c), 0);
    for (int l = 0; l < 3; l++)
        for (int g = 0; g < 2; g++) {
            assert_null(kv_cache_head_at(c, l, g)->k);
            assert_int_equal(kv_cache_head_at(c, l, g)->cap, 0);
        }
    kv_cache_free(c);
}

/* A cache held at a fixed budget (one in, one out) keeps a bounded
 * allocation: no growth across thousands of steps. */
static void test_fixed_budget_is_bounded(void **state) {
    (void)state;
    kv_cache *c;
    assert_int_equal(kv_cache_new(1, 1, HD, &c), KV_OK);
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
    assert_true(max_bytes <= (size_t)(64 + 16 + 1) * (2 * HD * 4 + 4));
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
    assert_int_equal(kv_cache_new(1, 1, HD, &c), KV_OK);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_keep),
        cmocka_unit_test(test_bad_keep_lists),
        cmocka_unit_test(test_ragged_and_clear),
        cmocka_unit_test(test_fixed_budget_is_bounded),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
