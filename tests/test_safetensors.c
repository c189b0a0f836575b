/* test_safetensors.c - the safetensors parser (engine/safetensors.c): a
 * small file's tensors read back exactly, every truncation of it refused,
 * each malformed header refused with its own message naming the file and
 * the tensor, and sharded folders checked against their weight_map. */
#include "test_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "kv_error.h"
#include "safetensors.h"

static char g_tmp[256];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_tmp, sizeof g_tmp) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tu_rmdir(g_tmp);
    return 0;
}

/* A file: 8-byte length, the header JSON padded with spaces to `pad`, then `data`. */
static uint8_t *make_file(const char *header, size_t pad, const uint8_t *data, size_t n_data, size_t *size) {
    size_t h = strlen(header), hl = h > pad ? h : pad;
    uint8_t *b = malloc(8 + hl + n_data);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, h);
    memset(b + 8 + h, ' ', hl - h);
    memcpy(b + 8 + hl, data, n_data);
    *size = 8 + hl + n_data;
    return b;
}

/* Two F32 values of "b", three BF16 of "a" (stored after), metadata ignored. */
static const char *k_header = "{\"__metadata__\":{\"format\":\"pt\"},"
                              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                              "\"a\":{\"dtype\":\"BF16\",\"shape\":[1,3],\"data_offsets\":[8,14]}}";
static const uint8_t k_data[14] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0x80, 0x3f, 0, 0x40, 0x40, 0x40};

static void test_parse(void **state) {
    (void)state;
    size_t size;
    uint8_t *b = make_file(k_header, 200, k_data, sizeof k_data, &size);
    kv_st_tensor *t;
    int64_t n;
    assert_int_equal(kv_st_parse("x.safetensors", b, size, &t, &n), KV_OK);
    assert_int_equal(n, 2);
    assert_string_equal(t[0].name, "a"); /* sorted by name */
    assert_int_equal(t[0].type, KV_BF16);
    assert_int_equal(t[0].n_dims, 2);
    assert_int_equal(t[0].shape[0], 1);
    assert_int_equal(t[0].shape[1], 3);
    assert_int_equal(t[0].n_elems, 3);
    assert_int_equal(t[0].n_bytes, 6);
    assert_int_equal(t[0].offset, 8 + 200 + 8);
    assert_ptr_equal(t[0].data, b + 8 + 200 + 8);
    assert_string_equal(t[1].name, "b");
    assert_int_equal(t[1].type, KV_F32);
    float f[2];
    memcpy(f, t[1].data, 8);
    assert_true(f[0] == 1.0f && f[1] == -2.0f);
    kv_st_tensors_free(t, n);
    free(b);
}

/* Every proper prefix of a valid file is refused, never read past. */
static void test_every_truncation(void **state) {
    (void)state;
    size_t size;
    uint8_t *b = make_file(k_header, 0, k_data, sizeof k_data, &size);
    for (size_t cut = 0; cut < size; cut++) {
        uint8_t *p = malloc(cut + 1); /* exactly cut bytes: ASan sees any overread */
        memcpy(p, b, cut);
        kv_st_tensor *t = (kv_st_tensor *)1;
        int64_t n = -1;
        assert_int_equal(kv_st_parse("cut.safetensors", p, cut, &t, &n), KV_EFORMAT);
        assert_null(t);
        assert_int_equal(n, 0);
        assert_non_null(strstr(kv_last_error(), "cut.safetensors"));
        free(p);
    }
    free(b);
}

typedef struct bad_case {
    const char *header; /* over k_data */
    int code;
    const char *want[2]; /* substrings of the message */
} bad_case;

static void test_malformed(void **state) {
    (void)state;
    static const bad_case cases[] = {
        {"[1,2]", KV_EFORMAT, {"offset 8", "JSON object"}},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", KV_EFORMAT, {"only padding", NULL}},
        {"{\"a\":{\"dtype\":\"I8\",\"shape\":[14],\"data_offsets\":[0,14]}}", KV_EUNSUPPORTED, {"'a'", "dtype I8"}},
        {"{\"a\":{\"dtype\":\"Q9\",\"shape\":[14],\"data_offsets\":[0,14]}}", KV_EFORMAT, {"'a'", "unknown dtype 'Q9'"}},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[6],\"data_offsets\":[0,14]}}", KV_EFORMAT, {"'a'", "needs 12"}},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[-7],\"data_offsets\":[0,14]}}", KV_EFORMAT, {"'a'", "shape[0]"}},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[7],\"data_offsets\":[0,16]}}", KV_EFORMAT, {"'a'", "out of range"}},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[7],\"data_offsets\":[14,0]}}", KV_EFORMAT, {"'a'", "out of range"}},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[7]}}", KV_EFORMAT, {"'a'", "[begin, end]"}},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[6,12]}}",
         KV_EFORMAT, {"'b'", "overlap"}},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[8,14]}}",
         KV_EFORMAT, {"'b'", "unused"}},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]}}", KV_EFORMAT, {"end at data byte 6", NULL}},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[7],\"data_offsets\":[0,14]},"
         "\"a\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[14,14]}}",
         KV_EFORMAT, {"'a'", "twice"}},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[1,1,1,1,1,1,1,1,7],\"data_offsets\":[0,14]}}", KV_EFORMAT, {"'a'", "at most 8"}},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,14]}}", KV_EFORMAT,
         {"'a'", "overflows"}},
        {"{\"a\":7}", KV_EFORMAT, {"'a'", "expected an object"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t size;
        uint8_t *b = make_file(cases[i].header, 0, k_data, sizeof k_data, &size);
        kv_st_tensor *t;
        int64_t n;
        int rc = kv_st_parse("bad.safetensors", b, size, &t, &n);
        if (rc != cases[i].code) fail_msg("case %zu: rc %d, expected %d (%s)", i, rc, cases[i].code, kv_last_error());
        for (int k = 0; k < 2; k++)
            if (cases[i].want[k] && !strstr(kv_last_error(), cases[i].want[k]))
                fail_msg("case %zu: '%s' lacks '%s'", i, kv_last_error(), cases[i].want[k]);
        assert_non_null(strstr(kv_last_error(), "bad.safetensors"));
        free(b);
    }
    /* a header length past the file */
    uint8_t b[16] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'};
    kv_st_tensor *t;
    int64_t n;
    assert_int_equal(kv_st_parse("len.safetensors", b, sizeof b, &t, &n), KV_EFORMAT);
    assert_non_null(strstr(kv_last_error(), "header length 4294967295"));
}

static void put(const char *dir, const char *name, const char *header, const uint8_t *data, size_t n) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    size_t size;
    uint8_t *b = data ? make_file(header, 0, data, n, &size) : NULL;
    assert_int_equal(tu_write(p, b ? (const void *)b : header, b ? size : strlen(header)), 0);
    free(b);
}

/* A folder of two shards and its index: found, checked, and refused when
 * the index and the shards disagree. */
static void test_sharded(void **state) {
    (void)state;
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/sharded", g_tmp);
    assert_int_equal(mkdir(dir, 0700), 0);
    const uint8_t d1[8] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}, d2[2] = {0x80, 0x3f};
    put(dir, "m-1.safetensors", "{\"x.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d1, 8);
    put(dir, "m-2.safetensors", "{\"y.w\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]}}", d2, 2);
    const uint8_t d4[10] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0x80, 0x3f};
    put(dir, "m-4.safetensors",
        "{\"x.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"z.w\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[8,10]}}",
        d4, 10);
    put(dir, "model.safetensors.index.json", "{\"weight_map\":{\"y.w\":\"m-2.safetensors\",\"x.w\":\"m-1.safetensors\"}}",
        NULL, 0);
    kv_safetensors *s;
    assert_int_equal(kv_safetensors_open(dir, &s), KV_OK);
    assert_int_equal(kv_safetensors_n_tensors(s), 2);
    const kv_st_tensor *y = kv_safetensors_find(s, "y.w");
    assert_non_null(y);
    assert_int_equal(y->type, KV_BF16);
    assert_non_null(strstr(y->file, "m-2.safetensors"));
    assert_null(kv_safetensors_find(s, "z.w"));
    kv_safetensors_close(s);

    static const char *const bad[][2] = {
        {"{\"weight_map\":{\"y.w\":\"m-1.safetensors\",\"x.w\":\"m-1.safetensors\"}}", "lacks it"},
        {"{\"weight_map\":{\"x.w\":\"m-1.safetensors\",\"y.w\":\"m-2.safetensors\",\"q\":\"m-2.safetensors\"}}",
         "'q'"},
        {"{\"weight_map\":{\"x.w\":\"m-4.safetensors\",\"y.w\":\"m-2.safetensors\"}}", "'z.w' is not in the weight_map"},
        {"{\"weight_map\":{\"x.w\":\"m-1.safetensors\",\"z.w\":\"m-4.safetensors\"}}", "'x.w'"},
        {"{\"weight_map\":{\"x.w\":\"../m-1.safetensors\"}}", "file name in this folder"},
        {"{\"weight_map\":{\"x.w\":\"m-3.safetensors\"}}", "m-3.safetensors"},
        {"{\"weight_map\":{}}", "non-empty \"weight_map\""},
        {"not json", "weight_map"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put(dir, "model.safetensors.index.json", bad[i][0], NULL, 0);
        int rc = kv_safetensors_open(dir, &s);
        if (rc == KV_OK || !strstr(kv_last_error(), bad[i][1]))
            fail_msg("index %zu: rc %d, '%s' lacks '%s'", i, rc, kv_last_error(), bad[i][1]);
        assert_null(s);
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    unlink(p);
    assert_int_equal(kv_safetensors_open(dir, &s), KV_ENOTFOUND);
    assert_non_null(strstr(kv_last_error(), "model.safetensors"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_sharded),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
