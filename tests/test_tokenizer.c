/* test_tokenizer.c - the SentencePiece tokenizer against llama.cpp's
 * conformance vectors for the Llama vocabulary (from the GGUF file and from
 * the llama2.c tokenizer.bin of the same vocabulary), round trips with the
 * stories260K vocabulary, byte fallback, and corrupt tokenizer files. */
#define _GNU_SOURCE /* memmem */
#include "test_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "clock.h"
#include "gguf.h"
#include "kv_error.h"
#include "export.h"
#include "tokenizer.h"

/* Runs every vector of ggml-vocab-<vocab>.gguf.inp/.out through t; returns
 * failures. With roundtrip, also checks that the pieces of each encoding
 * spell the text again. */
static int run_vectors_of(const char *vocab, const kv_tokenizer *t, int *n_vectors, int roundtrip) {
    char pi[1024], po[1024], rel[256];
    snprintf(rel, sizeof rel, "tokenizers/gguf-vocab/ggml-vocab-%s.gguf.inp", vocab);
    if (!tu_model_path(rel, pi, sizeof pi)) return -1;
    snprintf(rel, sizeof rel, "tokenizers/gguf-vocab/ggml-vocab-%s.gguf.out", vocab);
    if (!tu_model_path(rel, po, sizeof po)) return -1;
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
            fprintf(stderr, "%s vector %d [%.*s]:\n  got %s\n want %s\n", vocab, *n_vectors, (int)(e - p), p, got, o);
        }
        if (roundtrip) {
            char back[8192];
            size_t bl = 0;
            for (size_t i = 0; i < n && i < 2048; i++) {
                size_t pl;
                const char *piece = kv_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], &pl);
                assert_true(bl + pl < sizeof back);
                memcpy(back + bl, piece, pl);
                bl += pl;
            }
            if (bl != (size_t)(e - p) || memcmp(back, p, bl) != 0) {
                fails++;
                fprintf(stderr, "%s vector %d [%.*s]: decodes to [%.*s]\n", vocab, *n_vectors, (int)(e - p), p, (int)bl,
                        back);
            }
        }
        (*n_vectors)++;
        o = eol + 1;
    }
    free(inp);
    free(out);
    return fails;
}

static int run_vectors(const kv_tokenizer *t, int *n_vectors) { return run_vectors_of("llama-spm", t, n_vectors, 0); }

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

/* ------------------------------------------------------ byte-level BPE */

/* The GGUF vocabulary ggml-vocab-<vocab>.gguf, or NULL (skip) when absent. */
static kv_tokenizer *load_vocab(const char *vocab) {
    char p[1024], rel[256];
    snprintf(rel, sizeof rel, "tokenizers/gguf-vocab/ggml-vocab-%s.gguf", vocab);
    if (!tu_model_path(rel, p, sizeof p)) return NULL;
    kv_gguf *g;
    kv_tokenizer *t;
    assert_int_equal(kv_gguf_open(p, &g), KV_OK);
    int rc = kv_tokenizer_from_gguf(g, &t);
    if (rc) fprintf(stderr, "%s\n", kv_last_error());
    assert_int_equal(rc, KV_OK);
    kv_gguf_close(g);
    return t;
}

static void check_bpe_vectors(const char *vocab, const char *vectors, int32_t n_vocab, int32_t bos) {
    kv_tokenizer *t = load_vocab(vocab);
    if (!t) skip();
    assert_int_equal(kv_tokenizer_n_vocab(t), n_vocab);
    assert_int_equal(kv_tokenizer_bos(t), bos);
    int n;
    int fails = run_vectors_of(vectors, t, &n, 1);
    printf("%s GGUF vocabulary: %d of %d %s conformance vectors match (and decode back)\n", vocab, n - fails, n, vectors);
    assert_true(n >= 40);
    assert_int_equal(fails, 0);
    kv_tokenizer_free(t);
}

static void test_conformance_gpt2(void **state) {
    (void)state;
    check_bpe_vectors("gpt-2", "gpt-2", 50257, 50256);
}

static void test_conformance_mpt(void **state) {
    (void)state;
    check_bpe_vectors("mpt", "mpt", 50432, 0);
}

/* GPT-NeoX-20B's file predates tokenizer.ggml.pre (so GPT-2's regex) and
 * holds the vocabulary and merges MPT reuses: MPT's vectors hold for it. */
static void test_conformance_gpt_neox(void **state) {
    (void)state;
    check_bpe_vectors("gpt-neox", "mpt", 50432, 0);
}

/* OpenAI's encoder.json + vocab.bpe encode GPT-2's vectors as the GGUF does. */
static void test_conformance_gpt2_files(void **state) {
    (void)state;
    char dir[1024];
    if (!tu_model_path("tokenizers/gpt2/encoder.json", dir, sizeof dir)) skip();
    *strrchr(dir, '/') = 0;
    kv_tokenizer *t;
    int rc = kv_tokenizer_load(dir, 0, &t);
    if (rc) fprintf(stderr, "%s\n", kv_last_error());
    assert_int_equal(rc, KV_OK);
    assert_int_equal(kv_tokenizer_n_vocab(t), 50257);
    assert_int_equal(kv_tokenizer_bos(t), 50256);
    assert_int_equal(kv_tokenizer_eos(t), 50256);
    int n;
    int fails = run_vectors_of("gpt-2", t, &n, 1);
    printf("gpt2 encoder.json + vocab.bpe: %d of %d gpt-2 conformance vectors match\n", n - fails, n);
    assert_true(n >= 40);
    assert_int_equal(fails, 0);
    kv_tokenizer_free(t);
}

/* The pre-tokenizers of today's models, on llama.cpp's vocabulary files. */
static void test_conformance_falcon(void **state) {
    (void)state;
    check_bpe_vectors("falcon", "falcon", 65024, 11);
}

static void test_conformance_deepseek_llm(void **state) {
    (void)state;
    check_bpe_vectors("deepseek-llm", "deepseek-llm", 102400, 100000);
}

static void test_conformance_starcoder(void **state) {
    (void)state;
    check_bpe_vectors("starcoder", "starcoder", 49152, 0);
}

static void test_conformance_refact(void **state) {
    (void)state;
    check_bpe_vectors("refact", "refact", 49216, 0);
}

/* Phi-3's vocabulary is SentencePiece-style ("llama"): the same code as Llama's. */
static void test_conformance_phi3(void **state) {
    (void)state;
    char p[1024];
    if (!tu_model_path("tokenizers/gguf-vocab/ggml-vocab-phi-3.gguf", p, sizeof p)) skip();
    kv_tokenizer *t;
    assert_int_equal(kv_tokenizer_load(p, 0, &t), KV_OK);
    int n;
    int fails = run_vectors_of("phi-3", t, &n, 0);
    printf("phi-3 GGUF vocabulary: %d of %d conformance vectors match\n", n - fails, n);
    assert_true(n >= 40);
    assert_int_equal(fails, 0);
    /* a chat template's control tokens are matched whole, each text fragment
     * after one getting the dummy prefix (llama.cpp: <|user|> ▁ \n Hi <|end|>) */
    const char *chat = "<|user|>\nHi<|end|>";
    int32_t ids[16];
    size_t m;
    assert_int_equal(kv_tokenizer_encode(t, chat, strlen(chat), 0, ids, 16, &m), KV_OK);
    const int32_t want[] = {32010, 29871, 13, 18567, 32007};
    assert_int_equal(m, 5);
    for (size_t i = 0; i < m; i++) assert_int_equal(ids[i], want[i]);
    kv_tokenizer_free(t);
}

/* A Hugging Face tokenizer folder under tokenizers/hf/, loaded directly, or NULL (skip). */
static kv_tokenizer *load_hf(const char *name) {
    char p[1024], rel[256];
    snprintf(rel, sizeof rel, "tokenizers/hf/%s/tokenizer.json", name);
    if (!tu_model_path(rel, p, sizeof p)) return NULL;
    *strrchr(p, '/') = 0;
    kv_tokenizer *t;
    int rc = kv_tokenizer_load(p, 0, &t);
    if (rc) fprintf(stderr, "%s\n", kv_last_error());
    assert_int_equal(rc, KV_OK);
    return t;
}

/* Llama 3 and Qwen2 vectors through vocabulary-only GGUFs written from the
 * tokenizer.json folders by the converter's code (kv_export_vocab_gguf),
 * and through the folders themselves. */
static void check_hf_vectors(const char *hf, const char *const *vectors, const char *pre, int32_t n_vocab, int32_t bos,
                             int32_t eos, int add_bos) {
    kv_tokenizer *j = load_hf(hf);
    if (!j) skip();
    char tmp[256], path[512];
    assert_non_null(tu_mkdtemp(tmp, sizeof tmp));
    snprintf(path, sizeof path, "%s/%s.gguf", tmp, hf);
    assert_int_equal(kv_export_vocab_gguf(j, hf, path), KV_OK);
    kv_tokenizer *g;
    assert_int_equal(kv_tokenizer_load(path, 0, &g), KV_OK);
    const kv_tokenizer *both[2] = {j, g};
    for (int k = 0; k < 2; k++) {
        const kv_tokenizer *t = both[k];
        assert_int_equal(kv_tokenizer_n_vocab(t), n_vocab);
        assert_int_equal(kv_tokenizer_bos(t), bos);
        assert_int_equal(kv_tokenizer_eos(t), eos);
        assert_int_equal(kv_tokenizer_add_bos(t), add_bos);
        assert_string_equal(kv_tokenizer_pre(t), pre);
        assert_int_equal(kv_tokenizer_n_merges(t), kv_tokenizer_n_merges(j));
        for (int v = 0; vectors[v]; v++) {
            int n;
            int fails = run_vectors_of(vectors[v], t, &n, !kv_tokenizer_nfc(t));
            printf("%s %s: %d of %d %s conformance vectors match\n", hf, k ? "vocabulary GGUF" : "tokenizer.json",
                   n - fails, n, vectors[v]);
            assert_true(n >= 40);
            assert_int_equal(fails, 0);
        }
    }
    kv_tokenizer_free(g);
    kv_tokenizer_free(j);
    tu_rmdir(tmp);
}

static void test_conformance_llama3(void **state) {
    (void)state;
    static const char *const v[] = {"llama-bpe", NULL};
    check_hf_vectors("llama3_1", v, "llama-bpe", 128256, 128000, 128009, 1);
}

/* DeepSeek-R1's Qwen distills keep Qwen2.5's vocabulary: their vectors hold for Qwen3's too. */
static void test_conformance_qwen(void **state) {
    (void)state;
    static const char *const v[] = {"qwen2", "deepseek-r1-qwen", NULL};
    check_hf_vectors("qwen3", v, "qwen2", 151669, -1, 151645, 0);
}

/* Concatenates the pieces of ids[0..n) into a malloc'd buffer. */
static char *decode_all(const kv_tokenizer *t, const int32_t *ids, size_t n, size_t *len) {
    size_t cap = 64, k = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = kv_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], &pl);
        while (k + pl + 1 > cap) {
            cap *= 2;
            b = realloc(b, cap);
            assert_non_null(b);
        }
        memcpy(b + k, p, pl);
        k += pl;
    }
    b[k] = 0;
    *len = k;
    return b;
}

static int32_t *encode_all(const kv_tokenizer *t, const char *text, size_t len, size_t *n) {
    size_t cap = len + 8;
    int32_t *ids = malloc(cap * sizeof *ids);
    assert_non_null(ids);
    assert_int_equal(kv_tokenizer_encode(t, text, len, 0, ids, cap, n), KV_OK);
    assert_true(*n <= cap); /* byte-level BPE never needs more ids than bytes */
    return ids;
}

/* Encodes and decodes text; with exact, the bytes must come back. */
static void roundtrip(const kv_tokenizer *t, const char *text, size_t len, int exact) {
    size_t n, bl;
    int32_t *ids = encode_all(t, text, len, &n);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] >= 0 && ids[i] < kv_tokenizer_n_vocab(t));
    char *back = decode_all(t, ids, n, &bl);
    if (exact) {
        assert_int_equal(bl, len);
        assert_memory_equal(back, text, len);
    }
    free(back);
    free(ids);
}

/* FNV-1a 64 of the ids as little-endian int32 (what tests/reference/bpe/ref.mjs prints). */
static uint64_t ids_hash(const int32_t *ids, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) h = (h ^ (((uint32_t)ids[i] >> (8 * k)) & 255u)) * 0x100000001b3ull;
    return h;
}

/* The first 200 KB (cut back to a UTF-8 boundary) of real text: the ids
 * match Hugging Face's tokenizers (Tokenizers.js; for GPT-2 also OpenAI's
 * encoder.py as gpt-3-encoder ports it), recorded as a count and a hash by
 * tests/reference/bpe/ref.mjs, and decode back to the text. Speed printed. */
static void test_bpe_real_text(void **state) {
    (void)state;
    static const struct { const char *vocab, *file; size_t tokens; uint64_t hash; } ref[] = {
        {"gpt-2", "wikitext/wikitext2_test.txt", 44642, 0x41839a1acaf00e6cull},
        {"gpt-2", "pg19/10146.txt", 49570, 0x14baf8d288c98200ull},
        {"mpt", "wikitext/wikitext2_test.txt", 44863, 0x072bde05af4f2d14ull},
        {"mpt", "pg19/10146.txt", 47622, 0x3046a1b8bd44c72cull},
    };
    const char *data = getenv("KVBENCH_DATA");
    if (!data || !*data) data = "../shared/data";
    int ran = 0;
    for (size_t k = 0; k < sizeof ref / sizeof ref[0]; k++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", data, ref[k].file);
        size_t len;
        char *text = tu_read(p, &len);
        kv_tokenizer *t = load_vocab(ref[k].vocab);
        if (!text || !t) {
            free(text);
            kv_tokenizer_free(t);
            continue;
        }
        if (len > 200000) len = 200000;
        while (len > 0 && ((uint8_t)text[len] & 0xC0) == 0x80) len--;
        size_t n, bl;
        double a = kv_now_s();
        int32_t *ids = encode_all(t, text, len, &n);
        double b = kv_now_s();
        double s = b - a;
        uint64_t h = ids_hash(ids, n);
        printf("%s, first %zu bytes of %s: %zu tokens, hash %016llx (want %zu, %016llx), %.1f MB/s\n", ref[k].vocab, len,
               ref[k].file, n, (unsigned long long)h, ref[k].tokens, (unsigned long long)ref[k].hash, len / s / 1e6);
        assert_int_equal(n, ref[k].tokens);
        assert_true(h == ref[k].hash);
        char *back = decode_all(t, ids, n, &bl);
        assert_int_equal(bl, len);
        assert_memory_equal(back, text, len);
        free(back);
        free(ids);
        free(text);
        kv_tokenizer_free(t);
        ran++;
    }
    if (!ran) skip();
}

/* The text of one reference input: the first max bytes of a data file (cut
 * back to a UTF-8 boundary), the articles of the first 40 CNN/DailyMail
 * records joined by blank lines (as ref.mjs --cnndm), or unicode.txt. */
static char *reference_text(const char *what, size_t *len) {
    const char *data = getenv("KVBENCH_DATA");
    if (!data || !*data) data = "../shared/data";
    char p[1024];
    if (!strcmp(what, "unicode")) {
        const char *src = getenv("KVBENCH_SOURCE_ROOT");
        snprintf(p, sizeof p, "%s/tests/reference/bpe/unicode.txt", src && *src ? src : "..");
        return tu_read(p, len);
    }
    if (strcmp(what, "cnndm")) {
        snprintf(p, sizeof p, "%s/%s", data, what);
        char *t = tu_read(p, len);
        if (!t) return NULL;
        if (*len > 200000) *len = 200000;
        while (*len > 0 && ((uint8_t)t[*len] & 0xC0) == 0x80) (*len)--;
        t[*len] = 0;
        return t;
    }
    snprintf(p, sizeof p, "%s/cnn_dailymail/cnndm_test_500.jsonl", data);
    char *j = tu_read(p, NULL);
    if (!j) return NULL;
    size_t cap = 1 << 20, k = 0;
    char *out = malloc(cap), *line = j;
    for (int r = 0; r < 40 && line && *line; r++) {
        char *e = strchr(line, '\n');
        if (e) *e = 0;
        cJSON *o = cJSON_Parse(line);
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "article");
        assert_true(cJSON_IsString(a));
        size_t al = strlen(a->valuestring);
        assert_true(k + al + 2 < cap);
        if (r) {
            memcpy(out + k, "\n\n", 2);
            k += 2;
        }
        memcpy(out + k, a->valuestring, al);
        k += al;
        cJSON_Delete(o);
        line = e ? e + 1 : NULL;
    }
    free(j);
    out[k] = 0;
    *len = k;
    return out;
}

/* Pieces, but control and unknown tokens give their text (for round trips
 * of texts that spell them). */
static char *decode_raw(const kv_tokenizer *t, const int32_t *ids, size_t n, size_t *len) {
    size_t cap = 64, k = 0;
    char *b = malloc(cap);
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        int ty = kv_tokenizer_token_type(t, ids[i]);
        const char *p = ty == 2 || ty == 3 ? kv_tokenizer_token_text(t, ids[i], &pl)
                                           : kv_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], &pl);
        while (k + pl + 1 > cap) b = realloc(b, cap *= 2);
        memcpy(b + k, p, pl);
        k += pl;
    }
    b[k] = 0;
    *len = k;
    return b;
}

/* Hugging Face tokenizer.json folders on real text and on unicode.txt: the
 * ids equal Tokenizers.js's (counts and hashes recorded by
 * tests/reference/bpe/make_reference_hf.sh), and the text decodes back: as
 * it is, NFC for Qwen, with the U+2581 Llama 2 puts in front (which it also
 * puts after each control token, so unicode.txt is not compared there). */
static void test_hf_real_text(void **state) {
    (void)state;
    static const struct { const char *hf, *text; size_t tokens; uint64_t hash; } ref[] = {
        {"llama3_1", "wikitext/wikitext2_test.txt", 45568, 0x509e1e435101fad7ull},
        {"llama3_1", "pg19/10146.txt", 45909, 0x03063d57e09eda25ull},
        {"llama3_1", "cnndm", 25195, 0x2df5dfcf11d4f908ull},
        {"llama3_1", "unicode", 407, 0x4fe6fe357b4139f1ull},
        {"qwen3", "wikitext/wikitext2_test.txt", 47561, 0x3b6b38a98d4ed11dull},
        {"qwen3", "pg19/10146.txt", 46389, 0x46ac104162663954ull},
        {"qwen3", "cnndm", 25589, 0x7517dc0547633229ull},
        {"qwen3", "unicode", 406, 0x63be765a5b0e7508ull},
        {"llama2", "wikitext/wikitext2_test.txt", 52573, 0xe1d8c3418565dc74ull},
        {"llama2", "pg19/10146.txt", 51276, 0x6280390ac5074eefull},
        {"llama2", "cnndm", 28253, 0x8ece1d2550e19cfcull},
        {"llama2", "unicode", 580, 0x337a860bb0de62e8ull},
        {"gemma3", "wikitext/wikitext2_test.txt", 46871, 0xff9bf2fb8e23f79full},
        {"gemma3", "pg19/10146.txt", 46154, 0xb2aaa49d769067a9ull},
        {"gemma3", "cnndm", 25555, 0x509b80281972373cull},
        {"gemma3", "unicode", 404, 0x4b0d60483ef2780dull},
    };
    int ran = 0, fails = 0;
    kv_tokenizer *t = NULL;
    const char *loaded = "";
    for (size_t k = 0; k < sizeof ref / sizeof ref[0]; k++) {
        if (strcmp(loaded, ref[k].hf)) {
            kv_tokenizer_free(t);
            t = load_hf(ref[k].hf);
            loaded = ref[k].hf;
        }
        size_t len, n, bl;
        char *text = reference_text(ref[k].text, &len);
        if (!t || !text) {
            free(text);
            continue;
        }
        double a = kv_now_s();
        int32_t *ids = encode_all(t, text, len, &n);
        double b = kv_now_s();
        double sec = b - a;
        uint64_t h = ids_hash(ids, n);
        int ok = n == ref[k].tokens && h == ref[k].hash;
        fails += !ok;
        printf("%-8s %-28s %6zu bytes: %6zu tokens, hash %016llx (Tokenizers.js %zu, %016llx) %s, %.1f MB/s\n",
               ref[k].hf, ref[k].text, len, n, (unsigned long long)h, ref[k].tokens, (unsigned long long)ref[k].hash,
               ok ? "equal" : "DIFFERENT", len / sec / 1e6);
        char *back = decode_raw(t, ids, n, &bl);
        const char *want = text;
        size_t wl = len;
        char *nfc = NULL;
        if (kv_tokenizer_nfc(t)) {
            nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)text);
            want = nfc;
            wl = strlen(nfc);
        }
        int spm_prefix = !kv_tokenizer_byte_level(t) && !strcmp(ref[k].hf, "llama2");
        if (spm_prefix && strcmp(ref[k].text, "unicode")) { /* " " + text */
            assert_true(bl == wl + 1 && back[0] == ' ');
            assert_memory_equal(back + 1, want, wl);
        } else if (!spm_prefix) {
            assert_int_equal(bl, wl);
            assert_memory_equal(back, want, wl);
        }
        free(nfc);
        free(back);
        free(ids);
        free(text);
        ran++;
    }
    kv_tokenizer_free(t);
    if (!ran) skip();
    assert_int_equal(fails, 0);
}

/* Whether a and b give the same ids for text; prints where they part. */
static int same_ids(const char *what, const kv_tokenizer *a, const kv_tokenizer *b, const char *text, size_t len) {
    size_t na, nb;
    int32_t *ia = encode_all(a, text, len, &na), *ib = encode_all(b, text, len, &nb);
    size_t i = 0;
    while (i < na && i < nb && ia[i] == ib[i]) i++;
    int same = na == nb && i == na;
    printf("  %-44s %6zu bytes: %6zu and %6zu tokens, %s", what, len, na, nb, same ? "equal\n" : "DIFFERENT");
    if (!same) {
        size_t tl, ul;
        const char *ta = i < na ? kv_tokenizer_token_text(a, ia[i], &tl) : "", *tb = i < nb ? kv_tokenizer_token_text(b, ib[i], &ul) : "";
        printf(" at id %zu: %d [%s] vs %d [%s]\n", i, i < na ? ia[i] : -1, ta, i < nb ? ib[i] : -1, tb);
    }
    free(ia);
    free(ib);
    return same;
}

/* The text of check_spm_gguf's inputs: reference_text's, or "spaces":
 * 1..40 spaces, then 1..40 newlines, between letters. */
static char *spm_text(const char *what, size_t *len) {
    if (!strcmp(what, "spans")) { /* Gemma 3's token ">\xe2\x96\x81</" spans a space */
        static const char sp[] = "x> </y <p>a</p> </div>\n> </ > </x";
        *len = sizeof sp - 1;
        return strdup(sp);
    }
    if (strcmp(what, "spaces")) return reference_text(what, len);
    char *text = malloc(4096), nl[41];
    assert_non_null(text);
    memset(nl, '\n', 40);
    nl[40] = 0;
    *len = 0;
    for (int r = 1; r <= 40; r++) *len += (size_t)sprintf(text + *len, "a%*sb", r, "");
    for (int r = 1; r <= 40; r++) *len += (size_t)sprintf(text + *len, "c%.*sd", r, nl);
    return text;
}

/* A SentencePiece-style tokenizer.json j written as a GGUF "llama"
 * vocabulary (scores derived from the merge ranks: export.c) encodes real
 * text, unicode.txt (emoji, CJK, combining marks, runs of spaces and
 * newlines, control-token strings) and runs of every space and newline
 * count exactly as j does, and as each of `others` does (the same
 * vocabulary with SentencePiece's own scores). */
static void check_spm_gguf(const char *name, const kv_tokenizer *j, int add_space_prefix, const kv_tokenizer *const *others,
                           const char *const *other_names, int n_others, const char *vectors) {
    char tmp[256], path[512];
    assert_non_null(tu_mkdtemp(tmp, sizeof tmp));
    snprintf(path, sizeof path, "%s/%s.gguf", tmp, name);
    assert_int_equal(kv_export_vocab_gguf(j, name, path), KV_OK);
    kv_tokenizer *g;
    assert_int_equal(kv_tokenizer_load(path, 0, &g), KV_OK);
    assert_int_equal(kv_tokenizer_n_merges(g), 0); /* scores, not merges */
    assert_int_equal(kv_tokenizer_byte_level(g), 0);
    assert_int_equal(kv_tokenizer_n_vocab(g), kv_tokenizer_n_vocab(j));
    assert_int_equal(kv_tokenizer_add_space_prefix(g), add_space_prefix);
    assert_int_equal(kv_tokenizer_bos(g), kv_tokenizer_bos(j));
    assert_int_equal(kv_tokenizer_eos(g), kv_tokenizer_eos(j));
    assert_int_equal(kv_tokenizer_add_bos(g), kv_tokenizer_add_bos(j));
    for (int32_t i = 0; i < kv_tokenizer_n_vocab(j); i++)
        assert_int_equal(kv_tokenizer_token_type(g, i), kv_tokenizer_token_type(j, i));
    static const char *const texts[] = {"wikitext/wikitext2_test.txt", "pg19/10146.txt", "cnndm", "unicode", "spaces",
                                        "spans"};
    int differ = 0;
    printf("%s: its tokenizer.json vs the GGUF written from it%s\n", name, n_others ? " and the other files" : "");
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        size_t len = 0;
        char *text = spm_text(texts[k], &len);
        if (!text) continue;
        differ += !same_ids(texts[k], j, g, text, len);
        for (int o = 0; o < n_others; o++) {
            char what[128];
            snprintf(what, sizeof what, "%s, %s", texts[k], other_names[o]);
            differ += !same_ids(what, g, others[o], text, len);
        }
        free(text);
    }
    assert_int_equal(differ, 0);
    if (vectors) { /* the same vocabulary: llama.cpp's vectors hold for the GGUF too */
        int n, fails = run_vectors_of(vectors, g, &n, 0);
        printf("%s vocabulary GGUF: %d of %d %s conformance vectors match\n", name, n - fails, n, vectors);
        assert_true(n >= 40);
        assert_int_equal(fails, 0);
    }
    kv_tokenizer_free(g);
    tu_rmdir(tmp);
}

/* tokenizers/hf/llama2 (which, by its ids, is not the vocabulary of
 * tokenizers/llama2: only the 259 control and byte tokens share ids) and
 * Gemma 3 (no space in front; 262,145 tokens with <image_soft_token>). */
static void test_spm_gguf_hf(void **state) {
    (void)state;
    static const struct { const char *hf; int prefix; } v[] = {{"llama2", 1}, {"gemma3", 0}};
    int ran = 0;
    for (int k = 0; k < 2; k++) {
        kv_tokenizer *j = load_hf(v[k].hf);
        if (!j) continue;
        check_spm_gguf(v[k].hf, j, v[k].prefix, NULL, NULL, 0, NULL);
        if (!strcmp(v[k].hf, "gemma3")) { /* text is not split where a token spans a space (as Tokenizers.js) */
            int32_t ids[8];
            size_t n;
            const int32_t want[] = {236781, 107068, 236762}; /* x >\xe2\x96\x81</ y */
            assert_int_equal(kv_tokenizer_encode(j, "x> </y", 6, 0, ids, 8, &n), KV_OK);
            assert_int_equal(n, 3);
            for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], want[i]);
        }
        kv_tokenizer_free(j);
        ran++;
    }
    if (!ran) skip();
}

/* A piece of a llama2.c vocabulary as a tokenizer.json holds it (U+2581 for ' '). */
static char *sp_piece(const kv_tokenizer *t, int32_t i) {
    size_t n;
    const char *s = kv_tokenizer_token_text(t, i, &n);
    char *p = malloc(3 * n + 1);
    size_t k = 0;
    for (size_t c = 0; c < n; c++) {
        if (s[c] == ' ') {
            memcpy(p + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            p[k++] = s[c];
        }
    }
    p[k] = 0;
    return p;
}

typedef struct sp_merge { float score; int32_t piece, l, r; } sp_merge;

static int sp_merge_cmp(const void *pa, const void *pb) {
    const sp_merge *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->piece != b->piece) return a->piece < b->piece ? -1 : 1;
    if (a->l != b->l) return a->l < b->l ? -1 : 1;
    return (a->r > b->r) - (a->r < b->r);
}

/* Writes dir/tokenizer.json for a SentencePiece vocabulary with scores, as
 * Hugging Face's converter does: merges are every split of a piece into two
 * pieces (at character boundaries), by the piece's score, highest first,
 * then by the ids of the two sides; Prepend(U+2581) + Replace(" ") and byte
 * fallback. */
static void write_sp_json(const kv_tokenizer *t, const char *dir) {
    int32_t n = kv_tokenizer_n_vocab(t);
    char **piece = malloc((size_t)n * sizeof *piece);
    size_t cap = 1 << 16, nm = 0;
    sp_merge *m = malloc(cap * sizeof *m);
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab"), *merges = cJSON_AddArrayToObject(model, "merges");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int32_t i = 0; i < n; i++) {
        piece[i] = sp_piece(t, i);
        cJSON_AddNumberToObject(vocab, piece[i], i);
        int ty = kv_tokenizer_token_type(t, i);
        if (ty == 2 || ty == 3 || ty == 4) { /* user-defined ones are added tokens that are not special */
            cJSON *a = cJSON_CreateObject();
            cJSON_AddNumberToObject(a, "id", i);
            cJSON_AddStringToObject(a, "content", piece[i]);
            cJSON_AddBoolToObject(a, "special", ty != 4);
            cJSON_AddItemToArray(added, a);
        }
    }
    for (int32_t i = 0; i < n; i++) {
        if (kv_tokenizer_token_type(t, i) != 1) continue;
        size_t len = strlen(piece[i]);
        for (size_t c = 1; c < len; c++) {
            if (((uint8_t)piece[i][c] & 0xC0) == 0x80) continue; /* inside a character */
            char *l = strndup(piece[i], c);
            int32_t li = kv_tokenizer_find(t, l), ri = kv_tokenizer_find(t, piece[i] + c);
            free(l);
            if (li < 0 || ri < 0) continue;
            if (nm == cap) m = realloc(m, (cap *= 2) * sizeof *m);
            m[nm++] = (sp_merge){kv_tokenizer_token_score(t, i), i, li, ri};
        }
    }
    qsort(m, nm, sizeof *m, sp_merge_cmp);
    for (size_t k = 0; k < nm; k++) {
        char *s = malloc(strlen(piece[m[k].l]) + strlen(piece[m[k].r]) + 2);
        sprintf(s, "%s %s", piece[m[k].l], piece[m[k].r]);
        cJSON_AddItemToArray(merges, cJSON_CreateString(s));
        free(s);
    }
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON_AddBoolToObject(model, "byte_fallback", 1);
    cJSON_AddBoolToObject(model, "fuse_unk", 1);
    cJSON *norm = cJSON_Parse("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},"
                              "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]}");
    cJSON_AddItemToObject(root, "normalizer", norm);
    char *js = cJSON_PrintUnformatted(root), path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(tu_write(path, js, strlen(js)), 0);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    const char *cfg = "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_bos_token\": true}";
    assert_int_equal(tu_write(path, cfg, strlen(cfg)), 0);
    printf("wrote a tokenizer.json of %d pieces and %zu merges\n", n, nm);
    free(js);
    cJSON_Delete(root);
    for (int32_t i = 0; i < n; i++) free(piece[i]);
    free(piece);
    free(m);
}

/* Real SentencePiece vocabularies with their scores (Llama 2: the
 * llama2.c tokenizer.bin made from tokenizer.model, and llama.cpp's
 * llama-spm GGUF; Phi-3: llama.cpp's phi-3 GGUF, with its chat tokens as
 * user-defined and control tokens) turned into a tokenizer.json as Hugging
 * Face's converter turns them, loaded, and written as a GGUF with scores
 * derived from the merges: the GGUF, the tokenizer.json and the files with
 * SentencePiece's scores give the same ids, and the GGUF passes llama.cpp's
 * conformance vectors of that vocabulary. */
static void test_spm_gguf_sentencepiece(void **state) {
    (void)state;
    char p[1024], tmp[256];
    int ran = 0;
    for (int k = 0; k < 2; k++) {
        kv_tokenizer *sp = NULL, *j, *others[2] = {NULL, NULL};
        const char *names[2];
        int n = 0;
        if (k == 0) {
            if (tu_model_path("tokenizers/llama2/tokenizer.bin", p, sizeof p)) {
                assert_int_equal(kv_tokenizer_load_llama2c(p, 32000, &others[n]), KV_OK);
                names[n++] = "llama2.c tokenizer.bin";
            }
            if ((others[n] = load_vocab("llama-spm"))) names[n++] = "gguf-vocab llama-spm";
        } else if ((others[n] = load_vocab("phi-3"))) {
            names[n++] = "gguf-vocab phi-3";
        }
        if (!n) continue;
        sp = others[0];
        assert_non_null(tu_mkdtemp(tmp, sizeof tmp));
        write_sp_json(sp, tmp);
        int rc = kv_tokenizer_load(tmp, 0, &j);
        if (rc) fprintf(stderr, "%s\n", kv_last_error());
        assert_int_equal(rc, KV_OK);
        check_spm_gguf(k ? "phi-3-sentencepiece" : "llama2-sentencepiece", j, 1, (const kv_tokenizer *const *)others,
                       names, n, k ? "phi-3" : "llama-spm");
        kv_tokenizer_free(others[0]);
        kv_tokenizer_free(others[1]);
        kv_tokenizer_free(j);
        tu_rmdir(tmp);
        ran++;
    }
    if (!ran) skip();
}

/* A few KB of mixed text: unicode.txt (emoji, CJK, combining marks both
 * ways, runs of spaces, tabs, newlines and CRLF, control-token strings),
 * then the starts of WikiText-2 and a PG-19 book. Without control, the
 * unicode.txt lines that spell control tokens are left out. */
static char *mixed_text(int control, size_t *len) {
    size_t ul, wl, pl;
    char *u = reference_text("unicode", &ul), *w = reference_text("wikitext/wikitext2_test.txt", &wl),
         *b = reference_text("pg19/10146.txt", &pl);
    if (!u || !w || !b) {
        free(u), free(w), free(b);
        return NULL;
    }
    char *out = malloc(ul + 6000), *c = strstr(u, "Control strings:"), *d = strstr(u, "Digits:");
    assert_true(out && c && d);
    size_t k = 0;
    if (control) {
        memcpy(out, u, ul);
        k = ul;
    } else {
        memcpy(out, u, (size_t)(c - u));
        k = (size_t)(c - u);
        memcpy(out + k, d, ul - (size_t)(d - u));
        k += ul - (size_t)(d - u);
    }
    memcpy(out + k, w, 3000); /* both are plain ASCII there */
    k += 3000;
    memcpy(out + k, b, 2000);
    k += 2000;
    out[k] = 0;
    *len = k;
    free(u), free(w), free(b);
    return out;
}

/* decode(encode(x)) for every tokenizer in tokenizers/hf, with control
 * tokens decoded to their text (as Hugging Face's decode does unless told
 * to skip them):
 *   - Llama 3.1 and Gemma 3: x exactly, control-token strings included.
 *   - Qwen3 normalises to NFC first: NFC(x), which differs from x where x
 *     has decomposed marks; NFC text comes back exactly.
 *   - Llama 2 puts U+2581 in front of the text and after every control
 *     token: x comes back exactly when it spells no control token and BOS
 *     is in front (the space after BOS is dropped, as SentencePiece and
 *     Hugging Face's Strip decoder do); after a control-token string a
 *     space is added, which no decoder can tell from one in the text. */
static void test_hf_roundtrip(void **state) {
    (void)state;
    static const char *const hf[] = {"llama3_1", "qwen3", "llama2", "gemma3"};
    int ran = 0;
    for (int k = 0; k < 4; k++) {
        kv_tokenizer *t = load_hf(hf[k]);
        if (!t) continue;
        int prefix = !kv_tokenizer_byte_level(t) && kv_tokenizer_add_space_prefix(t);
        size_t len, n, bl;
        char *x = mixed_text(!prefix, &len);
        if (!x) {
            kv_tokenizer_free(t);
            continue;
        }
        char *want = kv_tokenizer_nfc(t) ? (char *)utf8proc_NFC((const utf8proc_uint8_t *)x) : strdup(x);
        size_t wl = strlen(want);
        if (kv_tokenizer_nfc(t)) assert_true(wl != len || memcmp(want, x, len)); /* unicode.txt is not NFC */
        /* x, and then its expected decoding, which must be a fixed point */
        const char *in[2] = {x, want};
        size_t inl[2] = {len, wl};
        for (int r = 0; r < 2; r++) {
            size_t cap = inl[r] + 8;
            int32_t *ids = malloc(cap * sizeof *ids);
            assert_int_equal(kv_tokenizer_encode(t, in[r], inl[r], prefix, ids, cap, &n), KV_OK);
            assert_true(n <= cap);
            char *back = decode_raw(t, ids, n, &bl), *b = back;
            if (prefix) { /* BOS decodes to its text: skip it */
                size_t sl;
                const char *bos = kv_tokenizer_token_text(t, kv_tokenizer_bos(t), &sl);
                assert_true(bl >= sl && !memcmp(back, bos, sl));
                b += sl, bl -= sl;
            }
            assert_int_equal(bl, wl);
            assert_memory_equal(b, want, wl);
            free(back);
            free(ids);
        }
        printf("%-8s %zu bytes%s: decode(encode(x)) == %s\n", hf[k], len, prefix ? " (no control strings, BOS first)" : "",
               kv_tokenizer_nfc(t) ? "NFC(x) != x, and NFC(x) comes back exactly" : "x");
        free(want);
        free(x);
        kv_tokenizer_free(t);
        ran++;
    }
    if (!ran) skip();
}

/* Bytes that are not UTF-8 encode (as byte tokens) and decode back, for
 * GPT-2 whose vocabulary has every byte; GPT-NeoX/MPT's lacks the bytes
 * UTF-8 never uses (0xC0, 0xC1, 0xF5..0xFF), which come back as U+FFFD. */
static void test_bpe_invalid_utf8(void **state) {
    (void)state;
    kv_tokenizer *g = load_vocab("gpt-2"), *m = load_vocab("mpt");
    if (!g || !m) skip();
    static const char *const bad[] = {
        "\xff", "abc\xc0\x80" "def", "caf\xe9 au lait", "\xe2\x82", "end \xf0\x9f\xa6", "\x80\x80\x80 lone continuations",
        "\xed\xa0\x80 surrogate", "\xf8\x88\x80\x80\x80 five bytes", " \xfe\xff BOM-ish", "mixed \xc3\xa9\xc3 \xa9 x",
        "nul \0 inside",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        size_t len = strlen(bad[k]) + (k == 10 ? 7 : 0);
        roundtrip(g, bad[k], len, 1);
        roundtrip(m, bad[k], len, 0);
    }
    /* every single byte, and random byte strings */
    char one[1];
    for (int c = 0; c < 256; c++) {
        one[0] = (char)c;
        roundtrip(g, one, 1, 1);
        roundtrip(m, one, 1, !(c == 0xC0 || c == 0xC1 || c >= 0xF5));
    }
    uint64_t x = 42;
    char buf[96];
    for (int r = 0; r < 3000; r++) {
        size_t len = 0;
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        len = (size_t)(x >> 58) + 1; /* 1..64 */
        for (size_t i = 0; i < len; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            /* bias toward ASCII letters, spaces and UTF-8 lead/continuation bytes */
            unsigned v = (unsigned)(x >> 33);
            const char pool[] = " a\n'sZ9\xc3\xa9\xe2\x80\x99\xf0\x9f\x98\x81<|endoftext|>";
            buf[i] = (v & 3) ? pool[v % (sizeof pool - 1)] : (char)(v >> 8);
        }
        roundtrip(g, buf, len, memmem(buf, len, "<|endoftext|>", 13) == NULL);
        roundtrip(m, buf, len, 0);
    }
    /* MPT: 0xFF is U+FFFD */
    size_t n, bl;
    int32_t *ids = encode_all(m, "a\xff" "b", 3, &n);
    char *back = decode_all(m, ids, n, &bl);
    assert_string_equal(back, "a\xef\xbf\xbd" "b");
    free(back);
    free(ids);
    kv_tokenizer_free(g);
    kv_tokenizer_free(m);
}

/* Long runs one regex alternative takes whole (spaces, letters,
 * punctuation, newlines, digits, bytes that are not UTF-8) encode in
 * O(n log n) without a PCRE2 limit error, and come back. */
static void test_bpe_long_runs(void **state) {
    (void)state;
    kv_tokenizer *g = load_vocab("gpt-2"), *m = load_vocab("mpt");
    if (!g || !m) skip();
    static const char *const unit[] = {" ", "a", "!", "\n", "7", "\xff", "\xc3\xa9", " \t", "ab ", "\xe2\x80\x99"};
    size_t len = 200000;
    char *text = malloc(len + 1);
    for (size_t k = 0; k < sizeof unit / sizeof unit[0]; k++) {
        size_t ul = strlen(unit[k]), n = len - len % ul;
        for (size_t i = 0; i < n; i++) text[i] = unit[k][i % ul];
        double a = kv_now_s();
        roundtrip(g, text, n, 1);
        roundtrip(m, text, n, unit[k][0] != '\xff');
        double b = kv_now_s();
        printf("200 KB of \"%s\" x n: %.3f s (gpt-2 and mpt, both ways)\n", k == 3 ? "\\n" : unit[k], b - a);
    }
    /* MPT's added tokens: a run of spaces is 24-space tokens and the rest */
    size_t n;
    memset(text, ' ', 50);
    int32_t *ids = encode_all(m, text, 50, &n);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 50254); /* 24 spaces */
    assert_int_equal(ids[1], 50254);
    assert_int_equal(ids[2], 50276); /* 2 spaces */
    free(ids);
    free(text);
    kv_tokenizer_free(g);
    kv_tokenizer_free(m);
}

/* Control tokens are matched whole in the text and print as nothing;
 * user-defined ones print as their text; lookups use the raw entries. */
static void test_bpe_special_tokens(void **state) {
    (void)state;
    kv_tokenizer *g = load_vocab("gpt-2");
    if (!g) skip();
    const char *s = "Hello<|endoftext|>world<|endoftext";
    int32_t ids[16];
    size_t n;
    assert_int_equal(kv_tokenizer_encode(g, s, strlen(s), 1, ids, 16, &n), KV_OK);
    int32_t want[] = {50256, 15496, 50256, 6894, 27, 91, 437, 1659, 5239};
    for (size_t i = 0; i < n && i < 16; i++) printf(" %d", ids[i]);
    printf("\n");
    assert_int_equal(n, sizeof want / sizeof want[0]);
    assert_memory_equal(ids, want, sizeof want);
    size_t pl;
    kv_tokenizer_piece(g, 15496, 50256, &pl);
    assert_int_equal(pl, 0);
    assert_int_equal(kv_tokenizer_find(g, "<|endoftext|>"), 50256);
    assert_int_equal(kv_tokenizer_find(g, "\xc4\xa0world"), 995); /* Ġworld */
    const char *tt = kv_tokenizer_token_text(g, 995, &pl);
    assert_memory_equal(tt, "\xc4\xa0world", pl);
    const char *piece = kv_tokenizer_piece(g, 15496, 995, &pl);
    assert_int_equal(pl, 6);
    assert_memory_equal(piece, " world", 6);
    /* no space is added in front, after BOS or not */
    assert_int_equal(kv_tokenizer_encode(g, "Hello", 5, 1, ids, 16, &n), KV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], 15496);
    piece = kv_tokenizer_piece(g, 50256, 18435, &pl); /* " Hello" after BOS keeps its space */
    assert_int_equal(pl, 6);
    kv_tokenizer_free(g);
    kv_tokenizer *m = load_vocab("mpt");
    if (!m) return;
    piece = kv_tokenizer_piece(m, 0, 50276, &pl); /* user-defined "  " */
    assert_int_equal(pl, 2);
    assert_memory_equal(piece, "  ", 2);
    kv_tokenizer_piece(m, 0, 1, &pl); /* <|padding|> */
    assert_int_equal(pl, 0);
    kv_tokenizer_free(m);
}

/* ---------------------------------------- small synthetic BPE vocabularies */

/* GPT-2's byte -> code point table, written independently of the engine's. */
static void byte_char(int b, char out[3]) {
    int cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) {
        cp = b;
    } else {
        int k = 0;
        for (int c = 0; c < b; c++)
            if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174)) k++;
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

typedef struct synth {
    const char *model, *pre;  /* NULL: key absent */
    const char *extra[8];     /* tokens after the 256 bytes */
    int32_t extra_type[8];    /* 0: normal */
    const char *merges[8];
    int merges_as_i32;        /* write merges with the wrong element type */
    int no_merges, tokens_as_f32, short_types;
} synth;

/* Writes a vocabulary-only GGUF: the 256 byte tokens, then s->extra. */
static void write_synth(const char *path, const synth *s) {
    kv_gguf_writer *w = kv_gguf_writer_new();
    assert_non_null(w);
    char *tok[270];
    size_t len[270];
    int32_t ty[270];
    int n = 0;
    for (int b = 0; b < 256; b++, n++) {
        tok[n] = malloc(3);
        byte_char(b, tok[n]);
        len[n] = strlen(tok[n]);
        ty[n] = 1;
    }
    for (int k = 0; k < 8 && s->extra[k]; k++, n++) {
        tok[n] = strdup(s->extra[k]);
        len[n] = strlen(tok[n]);
        ty[n] = s->extra_type[k] ? s->extra_type[k] : 1;
    }
    if (s->model) assert_int_equal(kv_gguf_writer_set_str(w, "tokenizer.ggml.model", s->model), KV_OK);
    if (s->pre) assert_int_equal(kv_gguf_writer_set_str(w, "tokenizer.ggml.pre", s->pre), KV_OK);
    if (s->tokens_as_f32) {
        float f[4] = {0};
        assert_int_equal(kv_gguf_writer_set_arr_f32(w, "tokenizer.ggml.tokens", f, 4), KV_OK);
    } else {
        assert_int_equal(kv_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, len, (uint64_t)n), KV_OK);
    }
    assert_int_equal(kv_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", ty, (uint64_t)(s->short_types ? n - 1 : n)), KV_OK);
    int nm = 0;
    size_t ml[8];
    while (nm < 8 && s->merges[nm]) {
        ml[nm] = strlen(s->merges[nm]);
        nm++;
    }
    if (s->merges_as_i32) {
        int32_t v[2] = {1, 2};
        assert_int_equal(kv_gguf_writer_set_arr_i32(w, "tokenizer.ggml.merges", v, 2), KV_OK);
    } else if (!s->no_merges) {
        assert_int_equal(kv_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", s->merges, ml, (uint64_t)nm), KV_OK);
    }
    assert_int_equal(kv_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 256), KV_OK);
    assert_int_equal(kv_gguf_writer_write(w, path), KV_OK);
    kv_gguf_writer_free(w);
    for (int i = 0; i < n; i++) free(tok[i]);
}

/* Loads path's tokenizer: the status, and the message in msg. */
static int load_synth(const char *path, kv_tokenizer **t, char *msg, size_t cap) {
    kv_gguf *g;
    *t = NULL;
    int rc = kv_gguf_open(path, &g);
    if (rc == KV_OK) {
        rc = kv_tokenizer_from_gguf(g, t);
        kv_gguf_close(g);
    }
    snprintf(msg, cap, "%s", rc ? kv_last_error() : "");
    return rc;
}

static void expect_ids(const kv_tokenizer *t, const char *text, const int32_t *want, size_t n_want) {
    int32_t ids[32];
    size_t n;
    assert_int_equal(kv_tokenizer_encode(t, text, strlen(text), 0, ids, 32, &n), KV_OK);
    if (n != n_want || (n && memcmp(ids, want, n * sizeof *ids))) {
        fprintf(stderr, "[%s]: got", text);
        for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    assert_int_equal(n, n_want);
    if (n) assert_memory_equal(ids, want, n * sizeof *ids);
}

/* Writes dir/tokenizer.json: GPT-2's 256 byte tokens, "ab" (256) and
 * "\xc3\xa9" as one token (257, bytes C3 A9 spelled in code points), merges
 * "a b" and "Ã ©"; then the JSON fragments given (NULL: the default). */
static void write_hf(const char *dir, const char *model_type, const char *normalizer, const char *pre,
                     const char *added) {
    char path[512], tok[3];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"model\": {\"type\": \"%s\", \"vocab\": {", model_type ? model_type : "BPE");
    for (int b = 0; b < 256; b++) {
        byte_char(b, tok);
        fprintf(f, "\"%s%s\": %d, ", b == '"' || b == '\\' ? "\\" : "", tok, b);
    }
    fprintf(f, "\"ab\": 256, \"\xc3\x83\xc2\xa9\": 257}, \"merges\": [\"a b\", [\"\xc3\x83\", \"\xc2\xa9\"]]},\n");
    fprintf(f, "\"normalizer\": %s,\n", normalizer ? normalizer : "null");
    fprintf(f, "\"pre_tokenizer\": %s,\n",
            pre ? pre : "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}");
    fprintf(f, "\"added_tokens\": [%s]}\n",
            added ? added : "{\"id\": 258, \"content\": \"<|end|>\", \"special\": true}");
    fclose(f);
}

/* tokenizer.json shapes kvbench does not read are refused naming the part;
 * NFC composes before merging; the converter refuses a vocabulary its GGUF
 * pre name would encode differently. */
static void test_hf_json_shapes(void **state) {
    (void)state;
    char tmp[256], msg[1024];
    assert_non_null(tu_mkdtemp(tmp, sizeof tmp));
    static const struct { const char *model, *norm, *pre, *added, *pat; } bad[] = {
        {"Unigram", NULL, NULL, NULL, "model type 'Unigram' is not supported"},
        {NULL, "{\"type\": \"NFKC\"}", NULL, NULL, "normalizer 'NFKC' is not supported"},
        {NULL, NULL,
         "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\d+\"}, "
         "\"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}",
         NULL, "pre_tokenizer Split(\\d+, Isolated) is not one kvbench knows"},
        {NULL, NULL, "{\"type\": \"Whitespace\"}", NULL, "pre_tokenizer 'Whitespace' is not supported"},
        {NULL, NULL, NULL, "{\"id\": 258, \"content\": \"<x>\", \"special\": false, \"lstrip\": true}",
         "added token 258 \"<x>\": lstrip is not supported"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        write_hf(tmp, bad[k].model, bad[k].norm, bad[k].pre, bad[k].added);
        kv_tokenizer *t = (kv_tokenizer *)0x1;
        int rc = kv_tokenizer_load(tmp, 0, &t);
        snprintf(msg, sizeof msg, "%s", rc ? kv_last_error() : "");
        printf("%s\n", msg);
        assert_int_equal(rc, KV_EUNSUPPORTED);
        assert_null(t);
        assert_non_null(strstr(msg, "tokenizer.json"));
        assert_non_null(strstr(msg, bad[k].pat));
    }
    /* the default loads; added tokens are matched whole */
    write_hf(tmp, NULL, NULL, NULL, NULL);
    kv_tokenizer *t;
    assert_int_equal(kv_tokenizer_load(tmp, 0, &t), KV_OK);
    assert_string_equal(kv_tokenizer_pre(t), "gpt-2");
    expect_ids(t, "ab<|end|>\xc3\xa9", (int32_t[]){256, 258, 257}, 3);
    expect_ids(t, "e\xcc\x81", (int32_t[]){'e', 0xCC, 0x81}, 3); /* no NFC: e, then U+0301's bytes */
    kv_tokenizer_free(t);
    /* NFC: e + U+0301 is U+00E9, one token */
    write_hf(tmp, NULL, "{\"type\": \"NFC\"}", NULL, NULL);
    assert_int_equal(kv_tokenizer_load(tmp, 0, &t), KV_OK);
    assert_int_equal(kv_tokenizer_nfc(t), 1);
    expect_ids(t, "ab e\xcc\x81<|end|>e\xcc\x81", (int32_t[]){256, ' ', 257, 258, 257}, 5);
    char path[512];
    snprintf(path, sizeof path, "%s/v.gguf", tmp);
    assert_int_equal(kv_export_vocab_gguf(t, "x", path), KV_EUNSUPPORTED);
    printf("%s\n", kv_last_error());
    assert_non_null(strstr(kv_last_error(), "would encode differently"));
    kv_tokenizer_free(t);
    tu_rmdir(tmp);
}

/* Merges apply by rank (their order in the list), not by length or id;
 * added tokens are matched whole before the regex; no pre is GPT-2's. */
static void test_bpe_merge_rank(void **state) {
    (void)state;
    char tmp[256], path[512], msg[1024];
    assert_non_null(tu_mkdtemp(tmp, sizeof tmp));
    snprintf(path, sizeof path, "%s/v.gguf", tmp);
    kv_tokenizer *t;
    /* 256: "ab", 257: "bc", 258: "abc", 259: "<CL>" (user-defined), 260: "<|end|>" (control) */
    synth s = {.model = "gpt2", .pre = "gpt-2", .extra = {"ab", "bc", "abc", "<CL>", "<|end|>"},
               .extra_type = {0, 0, 0, 4, 3}, .merges = {"b c", "a b", "ab c"}};
    write_synth(path, &s);
    assert_int_equal(load_synth(path, &t, msg, sizeof msg), KV_OK);
    /* "b c" ranks first: a + bc, and no merge makes abc from a + bc */
    expect_ids(t, "abc", (int32_t[]){'a', 257}, 2); /* byte b is token b here */
    expect_ids(t, "ab", (int32_t[]){256}, 1);
    expect_ids(t, "x<CL>abc<|end|>", (int32_t[]){'x', 259, 'a', 257, 260}, 5);
    kv_tokenizer_free(t);
    /* "a b" first: ab, then ab + c */
    synth s2 = s;
    s2.merges[0] = "a b";
    s2.merges[1] = "b c";
    s2.pre = NULL;
    write_synth(path, &s2);
    assert_int_equal(load_synth(path, &t, msg, sizeof msg), KV_OK);
    expect_ids(t, "abc", (int32_t[]){258}, 1);
    expect_ids(t, "abcbc", (int32_t[]){258, 257}, 2);
    /* the regex splits before merging: " ab" is Ġ + ab, "ab!" is ab + ! */
    expect_ids(t, " ab!", (int32_t[]){' ', 256, '!'}, 3);
    kv_tokenizer_free(t);
    tu_rmdir(tmp);
}

/* A malformed gpt2 vocabulary is KV_EFORMAT naming the file and the key
 * (an unknown model or pre-tokenizer KV_EUNSUPPORTED naming it), never a crash. */
static void test_bpe_corrupt(void **state) {
    (void)state;
    char tmp[256], path[512], msg[1024];
    assert_non_null(tu_mkdtemp(tmp, sizeof tmp));
    snprintf(path, sizeof path, "%s/v.gguf", tmp);
    const synth good = {.model = "gpt2", .pre = "gpt-2", .extra = {"ab"}, .merges = {"a b"}};
    static const struct { const char *what; int rc; const char *pat; } cases[] = {
        {"merge names an unknown token", KV_EFORMAT, "tokenizer.ggml.merges[0] \"a zz\": \"zz\" is not in the vocabulary"},
        {"merged token unknown", KV_EFORMAT, "tokenizer.ggml.merges[1] \"b a\": the merged token \"ba\" is not in the vocabulary"},
        {"merge without a space", KV_EFORMAT, "tokenizer.ggml.merges[0] \"ab\": expected two tokens"},
        {"merge with an empty side", KV_EFORMAT, "tokenizer.ggml.merges[0] \"a \": expected two tokens"},
        {"missing merges", KV_EFORMAT, "missing metadata key 'tokenizer.ggml.merges'"},
        {"merges of i32", KV_EFORMAT, "'tokenizer.ggml.merges': expected an array of strings"},
        {"tokens of f32", KV_EFORMAT, "'tokenizer.ggml.tokens': expected an array of strings"},
        {"token_type too short", KV_EFORMAT, "'tokenizer.ggml.token_type': expected 257 i32 values"},
        {"unknown pre", KV_EUNSUPPORTED, "pre-tokenizer 'llama3-ish' \\(tokenizer.ggml.pre\\) is not supported"},
        {"unknown model", KV_EUNSUPPORTED, "tokenizer model 'bert' is not supported \\(supported: llama, gpt2\\)"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        synth s = good;
        switch (k) {
        case 0: s.merges[0] = "a zz"; break;
        case 1: s.merges[1] = "b a"; break;
        case 2: s.merges[0] = "ab"; break;
        case 3: s.merges[0] = "a "; break;
        case 4: s.no_merges = 1; break;
        case 5: s.merges_as_i32 = 1; break;
        case 6: s.tokens_as_f32 = 1; break;
        case 7: s.short_types = 1; break;
        case 8: s.pre = "llama3-ish"; break;
        case 9: s.model = "bert"; break;
        }
        write_synth(path, &s);
        kv_tokenizer *t = (kv_tokenizer *)0x1;
        int rc = load_synth(path, &t, msg, sizeof msg);
        printf("%-30s -> %s\n", cases[k].what, msg);
        assert_int_equal(rc, cases[k].rc);
        assert_null(t);
        assert_non_null(strstr(msg, path));
        char pat[256];
        snprintf(pat, sizeof pat, "%s", cases[k].pat);
        /* the patterns escape ( ) for readability as regexes; compare plainly */
        char plain[256];
        size_t j = 0;
        for (size_t i = 0; pat[i]; i++)
            if (pat[i] != '\\') plain[j++] = pat[i];
        plain[j] = 0;
        assert_non_null(strstr(msg, plain));
    }
    /* the good one loads */
    write_synth(path, &good);
    kv_tokenizer *t;
    assert_int_equal(load_synth(path, &t, msg, sizeof msg), KV_OK);
    kv_tokenizer_free(t);
    /* a byte with no token (Falcon lacks 0x03, StarCoder 0xF1) loads, and the
     * byte is dropped from the text, as Hugging Face and llama.cpp do */
    synth nob = {.model = "gpt2", .pre = "gpt-2", .extra = {"bb"}, .merges = {"b b"}};
    write_synth(path, &nob);
    size_t n;
    char *d = tu_read(path, &n);
    char *at = memmem(d, n, "\x01\0\0\0\0\0\0\0a", 9); /* rename token 'a' (byte 0x61) */
    assert_non_null(at);
    at[8] = '\x7f'; /* DEL: no byte-level token spells it */
    assert_int_equal(tu_write(path, d, n), 0);
    free(d);
    assert_int_equal(load_synth(path, &t, msg, sizeof msg), KV_OK);
    expect_ids(t, "bab", (int32_t[]){256}, 1);
    expect_ids(t, "a", NULL, 0);
    kv_tokenizer_free(t);
    tu_rmdir(tmp);
}

/* Bytes flipped anywhere in a real gpt2 vocabulary: loads or fails with an
 * error, and what loads encodes a text without crashing. */
static void test_bpe_mutated_file(void **state) {
    (void)state;
    char p[1024], tmp[256], path[512];
    if (!tu_model_path("tokenizers/gguf-vocab/ggml-vocab-gpt-2.gguf", p, sizeof p)) skip();
    size_t n;
    char *d = tu_read(p, &n);
    assert_non_null(tu_mkdtemp(tmp, sizeof tmp));
    snprintf(path, sizeof path, "%s/m.gguf", tmp);
    uint64_t x = 7;
    int loaded = 0, failed = 0;
    for (int r = 0; r < 60; r++) {
        char *c = malloc(n);
        memcpy(c, d, n);
        for (int f = 0; f < 4; f++) {
            size_t at;
            do { /* most flips land in string contents (printable bytes), a few anywhere */
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                at = (size_t)(x >> 20) % n;
            } while (r % 10 != 0 && (c[at] < 0x21 || c[at] > 0x7e));
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            c[at] = r % 3 == 0 ? (char)' ' : (char)(x >> 40); /* spaces split merges and tokens */
        }
        assert_int_equal(tu_write(path, c, n), 0);
        free(c);
        kv_tokenizer *t;
        char msg[1024];
        int rc = load_synth(path, &t, msg, sizeof msg);
        if (rc == KV_OK) {
            loaded++;
            roundtrip(t, "Hello, world! caf\xc3\xa9 \xff 123", 22, 0);
            kv_tokenizer_free(t);
        } else {
            failed++;
            if (failed <= 5) printf("  %s\n", msg);
            assert_true(rc == KV_EFORMAT || rc == KV_EUNSUPPORTED);
            assert_non_null(strstr(msg, path));
        }
    }
    printf("mutated gpt-2 vocabularies: %d loaded, %d refused with an error\n", loaded, failed);
    free(d);
    tu_rmdir(tmp);
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
    double a = kv_now_s();
    assert_int_equal(kv_tokenizer_encode(t, text, len, 1, ids, cap, &n), KV_OK);
    double b = kv_now_s();
    printf("encoded %zu bytes into %zu tokens in %.3f s\n", len, n, b - a);
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
        cmocka_unit_test(test_conformance_gpt2),    cmocka_unit_test(test_conformance_mpt),
        cmocka_unit_test(test_conformance_gpt_neox), cmocka_unit_test(test_conformance_gpt2_files),
        cmocka_unit_test(test_bpe_real_text),       cmocka_unit_test(test_bpe_invalid_utf8),
        cmocka_unit_test(test_bpe_long_runs),       cmocka_unit_test(test_bpe_special_tokens),
        cmocka_unit_test(test_bpe_merge_rank),      cmocka_unit_test(test_bpe_corrupt),
        cmocka_unit_test(test_bpe_mutated_file),
        cmocka_unit_test(test_conformance_falcon),  cmocka_unit_test(test_conformance_deepseek_llm),
        cmocka_unit_test(test_conformance_starcoder), cmocka_unit_test(test_conformance_refact),
        cmocka_unit_test(test_conformance_phi3),    cmocka_unit_test(test_conformance_llama3),
        cmocka_unit_test(test_conformance_qwen),    cmocka_unit_test(test_hf_real_text),
        cmocka_unit_test(test_hf_json_shapes),
        cmocka_unit_test(test_spm_gguf_hf),         cmocka_unit_test(test_spm_gguf_sentencepiece),
        cmocka_unit_test(test_hf_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
