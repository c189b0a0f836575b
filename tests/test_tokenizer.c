/* test_tokenizer.c - the SentencePiece tokenizer against llama.cpp's
 * conformance vectors for the Llama vocabulary (from the GGUF file and from
 * the llama2.c tokenizer.bin of the same vocabulary), round trips with the
 * stories260K vocabulary, byte fallback, and corrupt tokenizer files. */
#include "test_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <time.h>

#include "gguf.h"
#include "kv_error.h"
#include "tokenizer.h"

/* Runs every vector of the .inp/.out pair through t; returns failures. */
static int run_vectors(const kv_tokenizer *t, int *n_vectors) {
    char pi[1024], po[1024];
    if (!tu_model_path("tokenizers/gguf-vocab/ggml-vocab-llama-spm.gguf.inp", pi, sizeof pi) ||
        !tu_model_path("tokenizers/gguf-vocab/ggml-vocab-llama-spm.gguf.out", po, sizeof po))
        return -1;
    char *inp = tu_read(pi, NULL), *out = tu_read(po, NULL);
    assert_non_null(inp);
    assert_non_null(out);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *p = inp, *o = out;
    int fails = 0;
    *n_vectors = 0;
    for (char *e; (e = strstr(p, sep)); p = e + strlen(sep)) {
        char *eol = strchr(o, '\n');
        assert_non_null(eol);
        *eol = 0;
        int32_t ids[2048];
        size_t n;
        assert_int_equal(kv_tokenizer_encode(t, p, (size_t)(e - p), 0, ids, 2048, &n), KV_OK);
        char got[16384] = "";
        for (size_t i = 0; i < n && i < 2048; i++) snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids[i]);
        if (strcmp(got, o) != 0) {
            fails++;
            fprintf(stderr, "vector %d [%.*s]:\n  got %s\n want %s\n", *n_vectors, (int)(e - p), p, got, o);
        }
        (*n_vectors)++;
        o = eol + 1;
    }
    free(inp);
    free(out);
    return fails;
}

static void test_conformance_gguf(void **state) {
    (void)state;
    char p[1024];
    if (!tu_model_path("tokenizers/gguf-vocab/ggml-vocab-llama-spm.gguf", p, sizeof p)) skip();
    kv_gguf *g;
    kv_tokenizer *t;
    assert_int_equal(kv_gguf_open(p, &g), KV_OK);
    assert_int_equal(kv_tokenizer_from_gguf(g, &t), KV_OK);
    kv_gguf_close(g); /* the tokenizer owns copies */
    assert_int_equal(kv_tokenizer_n_vocab(t), 32000);
    assert_int_equal(kv_tokenizer_bos(t), 1);
    assert_int_equal(kv_tokenizer_eos(t), 2);
    int n;
    int fails = run_vectors(t, &n);
    printf("llama-spm GGUF vocabulary: %d of %d conformance vectors match\n", n - fails, n);
    assert_true(n >= 40);
    assert_int_equal(fails, 0);
    kv_tokenizer_free(t);
}

static void test_conformance_llama2c(void **state) {
    (void)state;
    char p[1024];
    if (!tu_model_path("tokenizers/llama2/tokenizer.bin", p, sizeof p)) skip();
    kv_tokenizer *t;
    assert_int_equal(kv_tokenizer_load_llama2c(p, 32000, &t), KV_OK);
    int n;
    int fails = run_vectors(t, &n);
    printf("llama2.c tokenizer.bin (same vocabulary): %d of %d conformance vectors match\n", n - fails, n);
    assert_int_equal(fails, 0);
    kv_tokenizer_free(t);
}

/* Decoding pieces after BOS gives back the text exactly. */
static void test_roundtrip_tok512(void **state) {
    (void)state;
    char p[1024];
    if (!tu_model_path("stories260K/tok512.bin", p, sizeof p)) skip();
    kv_tokenizer *t;
    assert_int_equal(kv_tokenizer_load_llama2c(p, 512, &t), KV_OK);
    const char *texts[] = {
        "Once upon a time, there was a little girl named Lily.",
        "She said, \"I'm sorry, mom.\"\nHer mom said: don't worry!",
        "caf\xc3\xa9 \xf0\x9f\xa6\x99 naïve", /* bytes outside the 512-token vocabulary: byte fallback */
        "  two leading spaces and trailing  ",
    };
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        int32_t ids[512];
        size_t n;
        assert_int_equal(kv_tokenizer_encode(t, texts[k], strlen(texts[k]), 1, ids, 512, &n), KV_OK);
        assert_true(n > 1 && n < 512);
        assert_int_equal(ids[0], 1);
        char buf[1024] = "";
        size_t len = 0;
        for (size_t i = 1; i < n; i++) {
            size_t pl;
            const char *piece = kv_tokenizer_piece(t, ids[i - 1], ids[i], &pl);
            memcpy(buf + len, piece, pl);
            len += pl;
        }
        buf[len] = 0;
        assert_string_equal(buf, texts[k]);
    }
    /* the emoji is not in a 512-token vocabulary: its 4 bytes are byte tokens */
    int32_t ids[16];
    size_t n;
    assert_int_equal(kv_tokenizer_encode(t, "\xf0\x9f\xa6\x99", 4, 0, ids, 16, &n), KV_OK);
    assert_true(n >= 4);
    size_t pl;
    assert_memory_equal(kv_tokenizer_piece(t, ids[n - 4], ids[n - 3], &pl), "\x9f", 1);
    /* an empty text is no tokens at all; a too-small buffer reports the size */
    assert_int_equal(kv_tokenizer_encode(t, "", 0, 0, ids, 16, &n), KV_OK);
    assert_int_equal(n, 0);
    const char *lily = "Once upon a time, there was a little girl named Lily.";
    assert_int_equal(kv_tokenizer_encode(t, lily, strlen(lily), 0, ids, 2, &n), KV_OK);
    assert_true(n > 2);
    kv_tokenizer_free(t);
}

static void test_truncated_tokenizer(void **state) {
    (void)state;
    char p[1024], tmp[256], cut[512];
    if (!tu_model_path("stories260K/tok512.bin", p, sizeof p)) skip();
    size_t n = 0;
    char *data = tu_read(p, &n);
    assert_non_null(tu_mkdtemp(tmp, sizeof tmp));
    snprintf(cut, sizeof cut, "%s/tok.bin", tmp);
    for (size_t len = 0; len < n; len += (len < 64 ? 1 : 97)) {
        assert_int_equal(tu_write(cut, data, len), 0);
        kv_tokenizer *t = (kv_tokenizer *)0x1;
        assert_int_equal(kv_tokenizer_load_llama2c(cut, 512, &t), KV_EFORMAT);
        assert_null(t);
        assert_non_null(strstr(kv_last_error(), cut));
        assert_non_null(strstr(kv_last_error(), "offset"));
    }
    /* a negative piece length */
    int32_t neg = -5;
    memcpy(data + 8, &neg, 4);
    assert_int_equal(tu_write(cut, data, n), 0);
    kv_tokenizer *t;
    assert_int_equal(kv_tokenizer_load_llama2c(cut, 512, &t), KV_EFORMAT);
    assert_non_null(strstr(kv_last_error(), "offset 8"));
    free(data);
    tu_rmdir(tmp);
}

/* A long document encodes in O(n log n): time printed, not asserted. */
static void test_long_input(void **state) {
    (void)state;
    char p[1024];
    if (!tu_model_path("tokenizers/llama2/tokenizer.bin", p, sizeof p)) skip();
    kv_tokenizer *t;
    assert_int_equal(kv_tokenizer_load_llama2c(p, 32000, &t), KV_OK);
    size_t len = 200000;
    char *text = malloc(len + 1);
    const char *words = "the quick brown fox jumps over the lazy dog; Grüße, naïve café! ";
    for (size_t i = 0; i < len; i++) text[i] = words[i % strlen(words)];
    text[len] = 0;
    size_t cap = len + 8, n;
    int32_t *ids = malloc(cap * sizeof *ids);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(kv_tokenizer_encode(t, text, len, 1, ids, cap, &n), KV_OK);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("encoded %zu bytes into %zu tokens in %.3f s\n", len, n, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9);
    assert_true(n > len / 10 && n < len);
    free(ids);
    free(text);
    kv_tokenizer_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conformance_gguf),    cmocka_unit_test(test_conformance_llama2c),
        cmocka_unit_test(test_roundtrip_tok512),    cmocka_unit_test(test_truncated_tokenizer),
        cmocka_unit_test(test_long_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
