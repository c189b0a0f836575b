/* test_model.c - loading stories260K in both llama2.c formats, rejecting
 * corrupt files with a message that names the file and offset, the GGUF
 * converter's bit-exact round trip, and the context's state discipline
 * (reset leaves nothing behind; prefill, chunked and decode agree). */
#include "test_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "context.h"
#include "export.h"
#include "gguf.h"
#include "kv_error.h"
#include "model.h"

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

static kv_model *load_or_skip(const char *rel, int tokenizer) {
    char p[1024];
    if (!tu_model_path(rel, p, sizeof p)) return NULL;
    kv_model_params mp = kv_model_default_params();
    mp.no_tokenizer = !tokenizer;
    kv_model *m = NULL;
    int rc = kv_model_load(p, &mp, &m);
    if (rc) fprintf(stderr, "load %s: %s\n", p, kv_last_error());
    assert_int_equal(rc, KV_OK);
    return m;
}

static void test_stories_info(void **state) {
    (void)state;
    kv_model *m = load_or_skip("stories260K/stories260K.bin", 1);
    if (!m) skip();
    const kv_model_info *i = kv_model_get_info(m);
    assert_int_equal(i->dim, 64);
    assert_int_equal(i->hidden_dim, 172);
    assert_int_equal(i->n_layers, 5);
    assert_int_equal(i->n_heads, 8);
    assert_int_equal(i->n_kv_heads, 4);
    assert_int_equal(i->vocab_size, 512);
    assert_int_equal(i->ctx_len, 512);
    assert_true(i->tied_output);
    assert_int_equal(i->n_params, 260032); /* the model card's count */
    assert_int_equal(i->weight_bytes, 260032 * 4);
    /* A decoded token reads every weight once, the tied classifier being the
     * embedding table, plus one embedding row (64 fp32). */
    assert_int_equal(kv_model_decode_bytes(m), 260032 * 4 + 64 * 4);
    assert_non_null(kv_model_tokenizer(m));
    kv_model_free(m);

    /* the Q8 file stays quantized: int8 values + fp32 scales + fp32 norms */
    kv_model *q = load_or_skip("stories260K/stories260K_q8.bin", 0);
    assert_non_null(q);
    const kv_model_info *qi = kv_model_get_info(q);
    assert_int_equal(qi->wtype, KV_Q8_G);
    assert_int_equal(qi->n_params, 260032);
    /* everything after the 256-byte header is weights, held as stored
     * (int8 values plus one fp32 scale per group of 4): no widening */
    char qp[1024];
    size_t qsize = 0;
    free(tu_read(tu_model_path("stories260K/stories260K_q8.bin", qp, sizeof qp), &qsize));
    assert_int_equal(qi->weight_bytes, qsize - 256);
    assert_true(qi->weight_bytes < 260032 * 4 * 0.55);
    kv_model_free(q);
}

/* Writes the first `len` bytes of `data` (plus `extra` appended) and
 * expects kv_model_load to fail cleanly with a message naming the file
 * and an offset. */
static void expect_corrupt(const char *data, size_t len, const char *extra, size_t extra_len, int want_rc) {
    char path[512];
    snprintf(path, sizeof path, "%s/corrupt.bin", g_tmp);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    if (extra_len) assert_int_equal(fwrite(extra, 1, extra_len, f), extra_len);
    fclose(f);
    kv_model_params mp = kv_model_default_params();
    mp.no_tokenizer = 1;
    kv_model *m = (kv_model *)0x1;
    int rc = kv_model_load(path, &mp, &m);
    if (rc != want_rc) fprintf(stderr, "len %zu: rc %d (%s)\n", len, rc, kv_last_error());
    assert_int_equal(rc, want_rc);
    assert_null(m);
    assert_non_null(strstr(kv_last_error(), path));
    if (len > 0 && want_rc == KV_EFORMAT && !strstr(kv_last_error(), "header"))
        assert_non_null(strstr(kv_last_error(), "offset"));
}

static void test_truncated_llama2c(void **state) {
    (void)state;
    char p[1024];
    const char *files[2] = {"stories260K/stories260K.bin", "stories260K/stories260K_q8.bin"};
    for (int k = 0; k < 2; k++) {
        if (!tu_model_path(files[k], p, sizeof p)) skip();
        size_t n = 0;
        char *data = tu_read(p, &n);
        assert_non_null(data);
        /* every cut in the header, then a dense sweep over the body */
        for (size_t cut = 0; cut < 300 && cut < n; cut++) expect_corrupt(data, cut, NULL, 0, KV_EFORMAT);
        for (size_t cut = 300; cut < n; cut += 997) expect_corrupt(data, cut, NULL, 0, KV_EFORMAT);
        expect_corrupt(data, n - 1, NULL, 0, KV_EFORMAT);
        expect_corrupt(data, n, "junk", 4, KV_EFORMAT); /* trailing bytes */
        free(data);
    }
}

static void test_bad_llama2c_header(void **state) {
    (void)state;
    char p[1024];
    if (!tu_model_path("stories260K/stories260K.bin", p, sizeof p)) skip();
    size_t n = 0;
    char *data = tu_read(p, &n);
    assert_non_null(data);
    const struct { int field; int32_t value; } bad[] = {
        {0, -64}, {0, 0}, {0, 1 << 30}, {1, 0}, {2, 0}, {2, 100000}, {3, 0}, {3, 7}, /* dim % heads */
        {4, 3},   /* heads % kv_heads */ {4, 0}, {5, 0}, {5, 1 << 30}, {6, 0}, {6, -5},
    };
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        int32_t saved;
        memcpy(&saved, data + 4 * bad[b].field, 4);
        memcpy(data + 4 * bad[b].field, &bad[b].value, 4);
        expect_corrupt(data, n, NULL, 0, KV_EFORMAT);
        memcpy(data + 4 * bad[b].field, &saved, 4);
    }
    free(data);
}

static void eval_all(kv_ctx *c, const int32_t *t, int n, int step, float *out, int vocab) {
    for (int i = 0; i < n; i += step) {
        int len = n - i < step ? n - i : step;
        assert_int_equal(kv_ctx_eval(c, t + i, len, out + (size_t)i * vocab, 1), KV_OK);
    }
}

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs((double)b[i]));
    }
    return d / mx;
}

/* Converting to GGUF f32 keeps every weight, so the logits are identical
 * bit for bit; the GGUF tokenizer encodes like the llama2.c one. */
static void test_convert_roundtrip(void **state) {
    (void)state;
    kv_model *a = load_or_skip("stories260K/stories260K.bin", 1);
    if (!a) skip();
    char out[512];
    snprintf(out, sizeof out, "%s/stories260K.gguf", g_tmp);
    assert_int_equal(kv_model_export_gguf(a, out, KV_F32), KV_OK);
    kv_model *b;
    kv_model_params mp = kv_model_default_params();
    int rc = kv_model_load(out, &mp, &b);
    if (rc) fprintf(stderr, "%s\n", kv_last_error());
    assert_int_equal(rc, KV_OK);
    assert_int_equal(kv_model_get_info(b)->n_params, 260032);
    assert_int_equal(kv_model_get_info(b)->format, KV_FORMAT_GGUF);

    const char *text = "Once upon a time, there was a little girl named Lily. She loved to play.";
    int32_t ta[128], tb[128];
    size_t na, nb;
    assert_int_equal(kv_tokenizer_encode(kv_model_tokenizer(a), text, strlen(text), 1, ta, 128, &na), KV_OK);
    assert_int_equal(kv_tokenizer_encode(kv_model_tokenizer(b), text, strlen(text), 1, tb, 128, &nb), KV_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(ta, tb, na * sizeof(int32_t));

    const int V = 512;
    float *la = malloc(na * V * sizeof(float)), *lb = malloc(na * V * sizeof(float));
    kv_ctx *ca, *cb;
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = 2;
    assert_int_equal(kv_ctx_new(a, &cp, &ca), KV_OK);
    assert_int_equal(kv_ctx_new(b, &cp, &cb), KV_OK);
    for (int step = 1; step <= (int)na; step = step == 1 ? (int)na : (int)na + 1) {
        kv_ctx_reset(ca);
        kv_ctx_reset(cb);
        eval_all(ca, ta, (int)na, step, la, V);
        eval_all(cb, tb, (int)na, step, lb, V);
        assert_memory_equal(la, lb, na * V * sizeof(float));
    }
    kv_ctx_free(ca);
    kv_ctx_free(cb);
    free(la);
    free(lb);
    kv_model_free(a);
    kv_model_free(b);
}

/* Prefill, chunked prefill and one-token decode compute the same function. */
static void test_prefill_decode_agree(void **state) {
    (void)state;
    kv_model *m = load_or_skip("stories260K/stories260K.bin", 0);
    if (!m) skip();
    enum { N = 100, V = 512 };
    int32_t t[N];
    for (int i = 0; i < N; i++) t[i] = (i * 37 + 11) % V;
    float *ref = malloc(N * V * sizeof(float)), *got = malloc(N * V * sizeof(float));
    kv_ctx *c;
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = 2;
    cp.max_batch = 64; /* forces a split of the 100-token prefill */
    assert_int_equal(kv_ctx_new(m, &cp, &c), KV_OK);
    eval_all(c, t, N, N, ref, V);
    const int steps[3] = {1, 7, 33};
    for (int s = 0; s < 3; s++) {
        kv_ctx_reset(c);
        eval_all(c, t, N, steps[s], got, V);
        double rel = max_rel_diff(got, ref, (size_t)N * V);
        assert_true(rel < 1e-5);
        assert_int_equal(kv_ctx_pos(c), N);
        assert_int_equal(kv_cache_total_slots(kv_ctx_cache(c)), (int64_t)N * 5 * 4);
    }
    kv_ctx_free(c);
    free(ref);
    free(got);
    kv_model_free(m);
}

/* A reset context gives bit-identical logits to a fresh one: nothing from
 * the previous sample survives. */
static void test_no_state_leak(void **state) {
    (void)state;
    kv_model *m = load_or_skip("stories260K/stories260K.bin", 0);
    if (!m) skip();
    enum { V = 512 };
    int32_t a[40], b[25];
    for (int i = 0; i < 40; i++) a[i] = (i * 13 + 5) % V;
    for (int i = 0; i < 25; i++) b[i] = (i * 29 + 1) % V;
    float *fresh = malloc(25 * V * sizeof(float)), *after = malloc(25 * V * sizeof(float)),
          *scratch = malloc(40 * V * sizeof(float));
    kv_ctx *c1, *c2;
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = 2;
    assert_int_equal(kv_ctx_new(m, &cp, &c1), KV_OK);
    assert_int_equal(kv_ctx_new(m, &cp, &c2), KV_OK);
    eval_all(c1, b, 25, 25, fresh, V);
    eval_all(c2, a, 40, 3, scratch, V); /* another sample first, partly decoded */
    kv_ctx_reset(c2);
    assert_int_equal(kv_ctx_pos(c2), 0);
    assert_int_equal(kv_cache_bytes(kv_ctx_cache(c2)), 0);
    eval_all(c2, b, 25, 25, after, V);
    assert_memory_equal(fresh, after, 25 * V * sizeof(float));
    kv_ctx_free(c1);
    kv_ctx_free(c2);
    free(fresh);
    free(after);
    free(scratch);
    kv_model_free(m);
}

static void test_bad_tokens(void **state) {
    (void)state;
    kv_model *m = load_or_skip("stories260K/stories260K.bin", 0);
    if (!m) skip();
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(m, NULL, &c), KV_OK);
    int32_t t[3] = {1, 512, 3};
    assert_int_equal(kv_ctx_eval(c, t, 3, NULL, 0), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "512"));
    t[1] = -1;
    assert_int_equal(kv_ctx_eval(c, t, 3, NULL, 0), KV_EINVAL);
    assert_int_equal(kv_ctx_pos(c), 0);
    kv_ctx_free(c);
    kv_model_free(m);
}

/* GGUF model-level checks: wrong architecture, a missing tensor, a
 * tensor of the wrong shape. */
static void write_tiny_gguf(const char *path, const char *arch, const char *skip_tensor, int bad_shape) {
    kv_gguf_writer *w = kv_gguf_writer_new();
    assert_non_null(w);
    kv_model_info i = {.dim = 32, .hidden_dim = 64, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                       .ctx_len = 64, .n_rot = 16, .rope_base = 10000.0f, .norm_eps = 1e-5f};
    assert_int_equal(kv_export_llama_meta(w, &i, "tiny"), KV_OK);
    assert_int_equal(kv_gguf_writer_set_str(w, "general.architecture", arch), KV_OK);
    static float zeros[64 * 64];
    const struct { const char *name; uint64_t ne0, ne1; } t[] = {
        {"token_embd.weight", 32, 64},        {"output_norm.weight", 32, 1}, {"blk.0.attn_norm.weight", 32, 1},
        {"blk.0.ffn_norm.weight", 32, 1},     {"blk.0.attn_q.weight", 32, 32}, {"blk.0.attn_k.weight", 32, 16},
        {"blk.0.attn_v.weight", 32, 16},      {"blk.0.attn_output.weight", 32, 32},
        {"blk.0.ffn_gate.weight", 32, 64},    {"blk.0.ffn_down.weight", 64, 32}, {"blk.0.ffn_up.weight", 32, 64},
    };
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        if (skip_tensor && !strcmp(t[k].name, skip_tensor)) continue;
        uint64_t ne[2] = {t[k].ne0, t[k].ne1};
        if (bad_shape && !strcmp(t[k].name, "blk.0.attn_k.weight")) ne[1] = 32;
        assert_int_equal(kv_gguf_writer_add_tensor(w, t[k].name, KV_F32, t[k].ne1 == 1 ? 1 : 2, ne, zeros), KV_OK);
    }
    assert_int_equal(kv_gguf_writer_write(w, path), KV_OK);
    kv_gguf_writer_free(w);
}

static void test_gguf_model_errors(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.gguf", g_tmp);
    kv_model *m;
    write_tiny_gguf(path, "llama", NULL, 0);
    assert_int_equal(kv_model_load(path, NULL, &m), KV_OK);
    assert_int_equal(kv_model_get_info(m)->vocab_size, 64);
    assert_null(kv_model_tokenizer(m)); /* weights-only file */
    kv_model_free(m);

    write_tiny_gguf(path, "gpt2", NULL, 0);
    assert_int_equal(kv_model_load(path, NULL, &m), KV_EUNSUPPORTED);
    assert_non_null(strstr(kv_last_error(), "gpt2"));

    write_tiny_gguf(path, "llama", "blk.0.ffn_up.weight", 0);
    assert_int_equal(kv_model_load(path, NULL, &m), KV_EFORMAT);
    assert_non_null(strstr(kv_last_error(), "blk.0.ffn_up.weight"));
    assert_non_null(strstr(kv_last_error(), path));

    write_tiny_gguf(path, "llama", NULL, 1);
    assert_int_equal(kv_model_load(path, NULL, &m), KV_EFORMAT);
    assert_non_null(strstr(kv_last_error(), "blk.0.attn_k.weight"));
    assert_non_null(strstr(kv_last_error(), "offset"));
}

/* Weights copied into huge pages (the default) or read from the file's
 * mapping give identical logits, for llama2.c and GGUF files; the model
 * says how its file is held. */
static void test_weights_copy_or_mmap(void **state) {
    (void)state;
    char bin[1024], gg[512];
    if (!tu_model_path("stories260K/stories260K.bin", bin, sizeof bin)) skip();
    kv_model *src = load_or_skip("stories260K/stories260K.bin", 0);
    snprintf(gg, sizeof gg, "%s/held.gguf", g_tmp);
    assert_int_equal(kv_model_export_gguf(src, gg, KV_Q8_0), KV_OK);
    kv_model_free(src);
    enum { N = 24, V = 512 };
    int32_t t[N];
    for (int i = 0; i < N; i++) t[i] = (i * 29 + 5) % V;
    const char *paths[2] = {bin, gg};
    for (int f = 0; f < 2; f++) {
        float *out[2];
        for (int mm = 0; mm < 2; mm++) {
            kv_model_params mp = kv_model_default_params();
            mp.no_tokenizer = 1;
            mp.weights_mmap = mm;
            kv_model *m;
            assert_int_equal(kv_model_load(paths[f], &mp, &m), KV_OK);
            const kv_filemap *fm = kv_model_file(m);
            assert_int_equal(fm->mode, mm ? KV_FILEMAP_MMAP : KV_FILEMAP_COPY);
            assert_true(fm->size > 0 && fm->data != NULL);
            if (!mm) assert_int_equal((uintptr_t)fm->data % (2u << 20), 0); /* on a huge-page boundary */
            kv_ctx *c;
            assert_int_equal(kv_ctx_new(m, NULL, &c), KV_OK);
            out[mm] = malloc((size_t)N * V * sizeof(float));
            eval_all(c, t, N, N, out[mm], V);
            kv_ctx_free(c);
            kv_model_free(m);
        }
        assert_memory_equal(out[0], out[1], (size_t)N * V * sizeof(float));
        free(out[0]);
        free(out[1]);
    }
}

/* A copy that would take more than half of the available memory is mapped
 * instead (a sparse file: no disk, no memory used). */
static void test_large_copy_is_mapped(void **state) {
    (void)state;
    unsigned long kb = 0;
    char line[128];
    FILE *mi = fopen("/proc/meminfo", "r");
    if (!mi) skip();
    while (fgets(line, sizeof line, mi) && sscanf(line, "MemAvailable: %lu kB", &kb) != 1) {}
    fclose(mi);
    if (!kb) skip();
    char p[512];
    snprintf(p, sizeof p, "%s/sparse.bin", g_tmp);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fclose(f);
    off_t big = (off_t)kb * 1024 / 10 * 6; /* 60% of what is available */
    if (truncate(p, big) != 0) skip();
    kv_filemap fm;
    assert_int_equal(kv_filemap_open(p, KV_FILEMAP_COPY, "anything", &fm), KV_OK);
    assert_int_equal(fm.mode, KV_FILEMAP_MMAP);
    assert_true(fm.size == (size_t)big && fm.data[0] == 0 && fm.data[fm.size - 1] == 0);
    kv_filemap_close(&fm);
    /* a small file is copied as asked */
    assert_int_equal(truncate(p, 4096), 0);
    assert_int_equal(kv_filemap_open(p, KV_FILEMAP_COPY, "anything", &fm), KV_OK);
    assert_int_equal(fm.mode, KV_FILEMAP_COPY);
    kv_filemap_close(&fm);
    unlink(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_info),       cmocka_unit_test(test_truncated_llama2c),
        cmocka_unit_test(test_bad_llama2c_header), cmocka_unit_test(test_convert_roundtrip),
        cmocka_unit_test(test_prefill_decode_agree), cmocka_unit_test(test_no_state_leak),
        cmocka_unit_test(test_bad_tokens),         cmocka_unit_test(test_gguf_model_errors),
        cmocka_unit_test(test_weights_copy_or_mmap), cmocka_unit_test(test_large_copy_is_mapped),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
