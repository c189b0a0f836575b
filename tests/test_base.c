/* test_base.c - base/ on its own (the executable links kvbase and nothing
 * else of the project): splitmix64 and FNV-1a against their published test
 * values, the xoshiro256** stream against an independent Python rendering of
 * the algorithm, the whole-file reader on large, binary, empty and missing
 * files, growing arrays, and the monotonic clock. */
#include "test_util.h" /* first: it sets _POSIX_C_SOURCE */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <time.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/file.h"
#include "../base/hash.h"
#include "../base/kv_error.h"
#include "../base/rng.h"

/* The first outputs of splitmix64 from state 0, as in the reference
 * implementation's published sequence (Vigna's splitmix64.c). */
static void test_splitmix64(void **state) {
    (void)state;
    uint64_t s = 0;
    assert_int_equal(kv_splitmix64(&s), 0xe220a8397b1dcdafull);
    assert_int_equal(kv_splitmix64(&s), 0x6e789e6aa1b965f4ull);
    assert_int_equal(kv_splitmix64(&s), 0x06c45d188009454full);
    assert_int_equal(s, 3 * 0x9e3779b97f4a7c15ull); /* the counter advanced three steps */
}

/* Seed 42 (the sampler's default). The expected values come from a Python
 * transcription of splitmix64 seeding and xoshiro256**'s next() written
 * from Blackman and Vigna's paper, not from this C. */
static void test_xoshiro_stream(void **state) {
    (void)state;
    kv_rng r;
    kv_rng_seed(&r, 42);
    assert_int_equal(kv_rng_next(&r), 0x15780b2e0c2ec716ull);
    assert_int_equal(kv_rng_next(&r), 0x6104d9866d113a7eull);
    double u = kv_rng_uniform(&r); /* third output 0xae17533239e499a1, top 53 bits */
    assert_true(u == (double)(0xae17533239e499a1ull >> 11) * 0x1.0p-53);
    assert_true(u > 0.68004341102813 && u < 0.68004341102814);
    /* The state's last word enters an output only from the fourth on. */
    assert_int_equal(kv_rng_next(&r), 0xecb8ad4703b360a1ull);
    assert_int_equal(kv_rng_next(&r), 0xfde6dc7fe2ec5e64ull);
    uint64_t x = 0;
    for (int i = 5; i < 1000; i++) x = kv_rng_next(&r);
    assert_int_equal(x, 0x8de5848c61ab8968ull); /* the 1000th */
    kv_rng_seed(&r, 42); /* reseeding restarts the stream */
    assert_int_equal(kv_rng_next(&r), 0x15780b2e0c2ec716ull);
}

/* FNV-1a 64 test vectors (Fowler, Noll, Vo's published table), and a chain
 * of calls equal to one call over the concatenation. */
static void test_fnv1a64(void **state) {
    (void)state;
    assert_int_equal(kv_fnv1a64(KV_FNV1A64_INIT, "", 0), 0xcbf29ce484222325ull);
    assert_int_equal(kv_fnv1a64(KV_FNV1A64_INIT, "a", 1), 0xaf63dc4c8601ec8cull);
    assert_int_equal(kv_fnv1a64(KV_FNV1A64_INIT, "foobar", 6), 0x85944171f73967e8ull);
    assert_int_equal(kv_fnv1a64(kv_fnv1a64(KV_FNV1A64_INIT, "foo", 3), "bar", 3), 0x85944171f73967e8ull);
}

/* 200000 bytes with NULs in them: past the reader's first buffer (64 KB)
 * and its first doubling, read back byte for byte with a NUL after. */
static void test_read_file_large(void **state) {
    (void)state;
    char dir[64], path[128];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/big.bin", dir);
    const size_t n = 200000;
    char *want = malloc(n);
    assert_non_null(want);
    for (size_t i = 0; i < n; i++) want[i] = (char)(i * 7 % 251); /* a NUL every 251 bytes */
    assert_int_equal(tu_write(path, want, n), 0);
    char *got = (char *)0x1;
    size_t len = 0;
    assert_int_equal(kv_read_file(path, &got, &len), KV_OK);
    assert_int_equal(len, n);
    assert_memory_equal(got, want, n);
    assert_int_equal(got[n], 0);
    free(got);
    free(want);
    tu_rmdir(dir);
}

/* An empty file is "" of length 0; len may be NULL. */
static void test_read_file_empty(void **state) {
    (void)state;
    char dir[64], path[128];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/empty.txt", dir);
    assert_int_equal(tu_write(path, "", 0), 0);
    char *got = NULL;
    size_t len = 99;
    assert_int_equal(kv_read_file(path, &got, &len), KV_OK);
    assert_int_equal(len, 0);
    assert_string_equal(got, "");
    free(got);
    assert_int_equal(kv_read_file(path, &got, NULL), KV_OK);
    free(got);
    tu_rmdir(dir);
}

/* A missing file and a folder: KV_EIO, *out NULL, the message naming the
 * path and what failed. */
static void test_read_file_errors(void **state) {
    (void)state;
    char dir[64], path[128];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/absent.json", dir);
    char *got = (char *)0x1;
    assert_int_equal(kv_read_file(path, &got, NULL), KV_EIO);
    assert_null(got);
    assert_non_null(strstr(kv_last_error(), path));
    assert_non_null(strstr(kv_last_error(), "cannot open"));
    got = (char *)0x1;
    assert_int_equal(kv_read_file(dir, &got, NULL), KV_EIO); /* opens, but reading a folder fails */
    assert_null(got);
    assert_non_null(strstr(kv_last_error(), dir));
    assert_non_null(strstr(kv_last_error(), "read failed"));
    tu_rmdir(dir);
}

/* KV_RESERVE: 16 from nothing, then doublings; the elements already there
 * kept; no change when the room is there; a size that cannot be held is
 * KV_ENOMEM with the array untouched. */
static void test_reserve(void **state) {
    (void)state;
    int64_t *a = NULL;
    size_t cap = 0;
    assert_int_equal(KV_RESERVE(a, cap, 1), KV_OK);
    assert_int_equal(cap, 16);
    for (int64_t i = 0; i < 16; i++) a[i] = i * i;
    assert_int_equal(KV_RESERVE(a, cap, 16), KV_OK);
    assert_int_equal(cap, 16);
    assert_int_equal(KV_RESERVE(a, cap, 100), KV_OK);
    assert_int_equal(cap, 128);
    for (int64_t i = 0; i < 16; i++) assert_int_equal(a[i], i * i);
    int64_t *before = a;
    assert_int_equal(KV_RESERVE(a, cap, SIZE_MAX / 4), KV_ENOMEM);
    assert_ptr_equal(a, before);
    assert_int_equal(cap, 128);
    assert_non_null(strstr(kv_last_error(), "out of memory"));
    assert_int_equal(a[15], 225);
    free(a);
}

/* The clock moves forward across a 20 ms sleep, by about that much. */
static void test_clock(void **state) {
    (void)state;
    double t0 = kv_now_s();
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    double dt = kv_now_s() - t0;
    assert_true(dt >= 0.019);
    assert_true(dt < 5.0); /* loose: a loaded machine may be slow to wake us */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splitmix64),       cmocka_unit_test(test_xoshiro_stream),
        cmocka_unit_test(test_fnv1a64),          cmocka_unit_test(test_read_file_large),
        cmocka_unit_test(test_read_file_empty),  cmocka_unit_test(test_read_file_errors),
        cmocka_unit_test(test_reserve),          cmocka_unit_test(test_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
