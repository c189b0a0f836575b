/* test_gguf.c - the GGUF reader and writer: a full round trip, every
 * truncation of a small file, corrupted fields one at a time (each must give
 * its own precise error naming the file and offset), and the real
 * vocabulary-only GGUF files from llama.cpp. */
#include "test_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "gguf.h"
#include "kv_error.h"
#include "quant.h"

static char g_tmp[256], g_file[512];

static int setup(void **state) {
    (void)state;
    if (!tu_mkdtemp(g_tmp, sizeof g_tmp)) return -1;
    snprintf(g_file, sizeof g_file, "%s/small.gguf", g_tmp);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tu_rmdir(g_tmp);
    return 0;
}

/* A file with every metadata kind the writer makes and one tensor per type. */
static void write_small(const char *path) {
    kv_gguf_writer *w = kv_gguf_writer_new();
    assert_non_null(w);
    const char *strs[3] = {"a", "\xe2\x96\x81" "bc", ""};
    float f[3] = {1.5f, -2.0f, 0.25f};
    int32_t i[3] = {-7, 0, 123456};
    assert_int_equal(kv_gguf_writer_set_str(w, "general.architecture", "llama"), KV_OK);
    assert_int_equal(kv_gguf_writer_set_u32(w, "test.u32", 4000000000u), KV_OK);
    assert_int_equal(kv_gguf_writer_set_i32(w, "test.i32", -5), KV_OK);
    assert_int_equal(kv_gguf_writer_set_f32(w, "test.f32", 0.125f), KV_OK);
    assert_int_equal(kv_gguf_writer_set_bool(w, "test.bool", 1), KV_OK);
    assert_int_equal(kv_gguf_writer_set_arr_str(w, "test.strs", strs, NULL, 3), KV_OK);
    assert_int_equal(kv_gguf_writer_set_arr_f32(w, "test.f32s", f, 3), KV_OK);
    assert_int_equal(kv_gguf_writer_set_arr_i32(w, "test.i32s", i, 3), KV_OK);
    assert_int_equal(kv_gguf_writer_set_i32(w, "test.i32", -6), KV_OK); /* replaces */
    float x[64 * 3];
    for (int k = 0; k < 64 * 3; k++) x[k] = (float)(k % 17) * 0.1f - 0.8f;
    const kv_dtype types[5] = {KV_F32, KV_F16, KV_BF16, KV_Q8_0, KV_Q4_0};
    const char *names[5] = {"t.f32", "t.f16", "t.bf16", "t.q8_0", "t.q4_0"};
    for (int t = 0; t < 5; t++) {
        uint8_t buf[64 * 3 * 4];
        assert_int_equal(kv_quantize(types[t], x, buf, 64 * 3), KV_OK);
        uint64_t ne[3] = {64, 3, 1};
        assert_int_equal(kv_gguf_writer_add_tensor(w, names[t], types[t], t == 0 ? 3 : 2, ne, buf), KV_OK);
    }
    uint64_t bad_ne[2] = {48, 2};
    assert_int_equal(kv_gguf_writer_add_tensor(w, "t.bad", KV_Q8_0, 2, bad_ne, x), KV_EINVAL); /* 48 % 32 */
    assert_int_equal(kv_gguf_writer_add_tensor(w, "t.f32", KV_F32, 2, bad_ne, x), KV_EINVAL); /* duplicate */
    assert_int_equal(kv_gguf_writer_write(w, path), KV_OK);
    kv_gguf_writer_free(w);
}

static void test_roundtrip(void **state) {
    (void)state;
    write_small(g_file);
    kv_gguf *g;
    assert_int_equal(kv_gguf_open(g_file, &g), KV_OK);
    assert_int_equal(kv_gguf_version(g), 3);
    assert_int_equal(kv_gguf_alignment(g), 32);
    int64_t v;
    double d;
    int b;
    const char *s;
    size_t n = 0;
    assert_int_equal(kv_gguf_get_int(g, "test.u32", &v), KV_OK);
    assert_int_equal(v, 4000000000LL);
    assert_int_equal(kv_gguf_get_int(g, "test.i32", &v), KV_OK);
    assert_int_equal(v, -6);
    assert_int_equal(kv_gguf_get_float(g, "test.f32", &d), KV_OK);
    assert_true(d == 0.125);
    assert_int_equal(kv_gguf_get_bool(g, "test.bool", &b), KV_OK);
    assert_int_equal(b, 1);
    assert_int_equal(kv_gguf_get_str(g, "general.architecture", &s, &n), KV_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "llama", 5);
    kv_gguf_type et;
    uint64_t cnt;
    assert_int_equal(kv_gguf_get_arr_info(g, "test.strs", &et, &cnt), KV_OK);
    assert_int_equal(et, KV_GGUF_STRING);
    assert_int_equal(cnt, 3);
    assert_int_equal(kv_gguf_get_arr_str(g, "test.strs", 1, &s, &n), KV_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "\xe2\x96\x81" "bc", 5);
    assert_int_equal(kv_gguf_get_arr_str(g, "test.strs", 2, &s, &n), KV_OK);
    assert_int_equal(n, 0);
    assert_int_equal(kv_gguf_get_arr_str(g, "test.strs", 3, &s, &n), KV_EINVAL);
    const void *data;
    assert_int_equal(kv_gguf_get_arr_data(g, "test.i32s", &data), KV_OK);
    int32_t i2;
    memcpy(&i2, (const char *)data + 8, 4);
    assert_int_equal(i2, 123456);
    /* wrong type and missing key */
    assert_int_equal(kv_gguf_get_str(g, "test.u32", &s, &n), KV_ETYPE);
    assert_non_null(strstr(kv_last_error(), "test.u32"));
    assert_int_equal(kv_gguf_get_int(g, "test.nope", &v), KV_ENOTFOUND);
    assert_int_equal(kv_gguf_get_int(g, "test.strs", &v), KV_ETYPE);
    assert_int_equal(kv_gguf_get_arr_data(g, "test.strs", &data), KV_ETYPE);

    assert_int_equal(kv_gguf_n_tensors(g), 5);
    float x[64 * 3];
    for (int k = 0; k < 64 * 3; k++) x[k] = (float)(k % 17) * 0.1f - 0.8f;
    const kv_dtype types[5] = {KV_F32, KV_F16, KV_BF16, KV_Q8_0, KV_Q4_0};
    const char *names[5] = {"t.f32", "t.f16", "t.bf16", "t.q8_0", "t.q4_0"};
    for (int t = 0; t < 5; t++) {
        const kv_gguf_tensor *ti = kv_gguf_find_tensor(g, names[t]);
        assert_non_null(ti);
        assert_int_equal(ti->type, types[t]);
        assert_int_equal(ti->ne[0], 64);
        assert_int_equal(ti->ne[1], 3);
        assert_int_equal(ti->n_dims, t == 0 ? 3 : 2);
        assert_int_equal((uintptr_t)ti->data % 32, 0);
        uint8_t want[64 * 3 * 4];
        kv_quantize(types[t], x, want, 64 * 3);
        assert_int_equal(ti->nbytes, kv_dtype_bytes(types[t], 64 * 3));
        assert_memory_equal(ti->data, want, ti->nbytes);
    }
    assert_null(kv_gguf_find_tensor(g, "t.none"));
    kv_gguf_close(g);
}

/* Every prefix of the file fails cleanly with a message naming the file and
 * an offset (the complete file opens). */
static void test_every_truncation(void **state) {
    (void)state;
    write_small(g_file);
    size_t n = 0;
    char *data = tu_read(g_file, &n);
    assert_non_null(data);
    char cut[512];
    snprintf(cut, sizeof cut, "%s/cut.gguf", g_tmp);
    for (size_t len = 0; len < n; len++) {
        assert_int_equal(tu_write(cut, data, len), 0);
        kv_gguf *g = (kv_gguf *)0x1;
        int rc = kv_gguf_open(cut, &g);
        if (rc != KV_EFORMAT) fprintf(stderr, "cut at %zu: rc %d: %s\n", len, rc, kv_last_error());
        assert_int_equal(rc, KV_EFORMAT);
        assert_null(g);
        assert_non_null(strstr(kv_last_error(), cut));
        assert_non_null(strstr(kv_last_error(), "offset"));
    }
    free(data);
}

/* Overwrites `len` bytes at `off` of the small file, expects `want`, and a
 * message containing `needle`. */
static void corrupt(size_t off, const void *bytes, size_t len, int want, const char *needle) {
    write_small(g_file);
    size_t n = 0;
    char *data = tu_read(g_file, &n);
    assert_true(off + len <= n);
    memcpy(data + off, bytes, len);
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad.gguf", g_tmp);
    assert_int_equal(tu_write(bad, data, n), 0);
    free(data);
    kv_gguf *g;
    int rc = kv_gguf_open(bad, &g);
    if (rc != want || !strstr(kv_last_error(), needle))
        fprintf(stderr, "corrupt at %zu: rc %d: %s\n", off, rc, kv_last_error());
    assert_int_equal(rc, want);
    assert_non_null(strstr(kv_last_error(), needle));
    assert_non_null(strstr(kv_last_error(), "offset"));
}

/* Offset of the first occurrence of a byte string in the small file. */
static size_t find(const char *s, size_t len) {
    size_t n = 0;
    char *data = tu_read(g_file, &n);
    for (size_t i = 0; i + len <= n; i++)
        if (memcmp(data + i, s, len) == 0) {
            free(data);
            return i;
        }
    free(data);
    fail_msg("pattern not found");
    return 0;
}

static void test_corrupt_fields(void **state) {
    (void)state;
    write_small(g_file);
    uint32_t u32;
    uint64_t u64;
    corrupt(0, "GGUX", 4, KV_EFORMAT, "magic");
    u32 = 1;
    corrupt(4, &u32, 4, KV_EUNSUPPORTED, "version");
    u32 = 4;
    corrupt(4, &u32, 4, KV_EUNSUPPORTED, "version");
    u64 = 1ull << 62;
    corrupt(8, &u64, 8, KV_EFORMAT, "tensors cannot fit");
    corrupt(16, &u64, 8, KV_EFORMAT, "metadata entries cannot fit");
    /* the first key's length: huge */
    corrupt(24, &u64, 8, KV_EFORMAT, "length");
    /* the first value's type (after "general.architecture"): unknown */
    size_t k = find("general.architecture", 20) + 20;
    u32 = 99;
    corrupt(k, &u32, 4, KV_EFORMAT, "value type");
    /* the string array's count: absurd */
    size_t a = find("test.strs", 9) + 9 + 4 + 4;
    corrupt(a, &u64, 8, KV_EFORMAT, "cannot fit");
    /* tensor infos: n_dims 5, a zero dimension, an unknown type, a misaligned
     * offset, an offset past the end, a duplicate name */
    size_t t = find("t.f16", 5) + 5;
    u32 = 5;
    corrupt(t, &u32, 4, KV_EFORMAT, "dimensions");
    u64 = 0;
    corrupt(t + 4, &u64, 8, KV_EFORMAT, "dimension 0");
    u32 = 99;
    corrupt(t + 4 + 16, &u32, 4, KV_EUNSUPPORTED, "type 99");
    u64 = 48; /* not a whole number of Q8_0 blocks */
    corrupt(find("t.q8_0", 6) + 6 + 4, &u64, 8, KV_EFORMAT, "block size");
    size_t off_at = t + 4 + 16 + 4;
    u64 = 7;
    corrupt(off_at, &u64, 8, KV_EFORMAT, "alignment");
    u64 = 1ull << 40;
    corrupt(off_at, &u64, 8, KV_EFORMAT, "past the end");
    corrupt(find("t.bf16", 6), "t.f16\0", 6, KV_EFORMAT, "name"); /* a NUL inside a name */
    corrupt(find("t.q4_0", 6), "t.q8_0", 6, KV_EFORMAT, "duplicate tensor");
}

/* The real vocabulary-only GGUF files open and read correctly. */
static void test_real_vocab_files(void **state) {
    (void)state;
    const char *files[4] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf", "ggml-vocab-gpt-neox.gguf",
                            "ggml-vocab-mpt.gguf"};
    const char *models[4] = {"llama", "gpt2", "gpt2", "gpt2"};
    for (int i = 0; i < 4; i++) {
        char rel[256], p[1024];
        snprintf(rel, sizeof rel, "tokenizers/gguf-vocab/%s", files[i]);
        if (!tu_model_path(rel, p, sizeof p)) skip();
        kv_gguf *g;
        assert_int_equal(kv_gguf_open(p, &g), KV_OK);
        const char *s;
        size_t n = 0;
        assert_int_equal(kv_gguf_get_str(g, "tokenizer.ggml.model", &s, &n), KV_OK);
        assert_int_equal(n, strlen(models[i]));
        assert_memory_equal(s, models[i], n);
        kv_gguf_type et;
        uint64_t cnt;
        assert_int_equal(kv_gguf_get_arr_info(g, "tokenizer.ggml.tokens", &et, &cnt), KV_OK);
        assert_int_equal(et, KV_GGUF_STRING);
        if (i == 0) {
            assert_int_equal(cnt, 32000);
            assert_int_equal(kv_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 1, &s, &n), KV_OK);
            assert_int_equal(n, 3);
            assert_memory_equal(s, "<s>", 3);
        }
        if (i == 1) assert_int_equal(cnt, 50257);
        assert_int_equal(kv_gguf_n_tensors(g), 0);
        kv_gguf_close(g);
    }
}

static void test_missing_file(void **state) {
    (void)state;
    kv_gguf *g;
    assert_int_equal(kv_gguf_open("/nonexistent/x.gguf", &g), KV_EIO);
    assert_non_null(strstr(kv_last_error(), "/nonexistent/x.gguf"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),      cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_corrupt_fields), cmocka_unit_test(test_real_vocab_files),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
