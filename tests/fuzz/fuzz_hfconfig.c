/* fuzz_hfconfig.c - any bytes, as a Hugging Face config.json, are read by
 * `kvbench convert` (harness/hf_convert.h) or refused with an error naming
 * the file, never crash or read out of bounds. The first byte chooses
 * (byte % 4):
 *   0: the rest is parsed from memory only (hx_hf_config_check: an
 *      exact-size copy, so any overread shows);
 *   1, 2: the rest is config.json of a folder beside a tiny valid model
 *      (1: llama tensors, 2: qwen3's, which add q_norm/k_norm), converted
 *      with a llama2.c tokenizer of 8 tokens, so that the consistency
 *      checks between config and tensors run. Promises: a config the
 *      check refuses is refused by the conversion with the same status;
 *      a conversion that fails leaves no output (nor out.gguf.tmp); one
 *      that succeeds leaves a GGUF that opens, of the architecture asked;
 *   3: the rest is the folder's tokenizer_config.json, beside the tiny
 *      llama model and its config: the converter copies its chat_template
 *      (a string, or a list of {name, template}) into the GGUF, where a
 *      string must arrive unchanged.
 * Corpus: tests/fuzz/corpus/fuzz_hfconfig/ (configs of each model_type,
 * matching the tiny model or not; truncated, wrong types, huge and
 * negative sizes, missing keys, rope_scaling of each kind; tokenizer
 * configs with templates as a string, a list, and wrong). */
#define _DEFAULT_SOURCE
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "gguf.h"
#include "hf_convert.h"
#include "kv_error.h"

/* The tiny model: vocab 8, hidden 4, intermediate 8, 1 layer, 2 heads of
 * 2, 1 KV head (the seeds' matching configs say the same). */
typedef struct fz_t {
    const char *name;
    int rows, cols; /* cols 0: a vector */
} fz_t;

static const fz_t FZ_LLAMA[] = {
    {"lm_head.weight", 8, 4},
    {"model.embed_tokens.weight", 8, 4},
    {"model.layers.0.input_layernorm.weight", 4, 0},
    {"model.layers.0.mlp.down_proj.weight", 4, 8},
    {"model.layers.0.mlp.gate_proj.weight", 8, 4},
    {"model.layers.0.mlp.up_proj.weight", 8, 4},
    {"model.layers.0.post_attention_layernorm.weight", 4, 0},
    {"model.layers.0.self_attn.k_proj.weight", 2, 4},
    {"model.layers.0.self_attn.o_proj.weight", 4, 4},
    {"model.layers.0.self_attn.q_proj.weight", 4, 4},
    {"model.layers.0.self_attn.v_proj.weight", 2, 4},
    {"model.norm.weight", 4, 0},
    {"model.layers.0.self_attn.k_norm.weight", 2, 0}, /* qwen3 only: the last two */
    {"model.layers.0.self_attn.q_norm.weight", 2, 0},
};

/* model.safetensors with the first n tensors of FZ_LLAMA, F32. */
static int fz_write_model(const char *path, int n) {
    char h[4096] = "{";
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const fz_t *t = &FZ_LLAMA[i];
        const size_t bytes = (size_t)t->rows * (size_t)(t->cols ? t->cols : 1) * 4;
        char shape[32];
        if (t->cols) snprintf(shape, sizeof shape, "[%d,%d]", t->rows, t->cols);
        else snprintf(shape, sizeof shape, "[%d]", t->rows);
        snprintf(h + strlen(h), sizeof h - strlen(h),
                 "%s\"%s\":{\"dtype\":\"F32\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}", i ? "," : "", t->name, shape,
                 off, off + bytes);
        off += bytes;
    }
    strcat(h, "}");
    const size_t hl = strlen(h);
    uint8_t *f = calloc(8 + hl + off, 1);
    if (!f) return -1;
    for (int i = 0; i < 8; i++) f[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(f + 8, h, hl);
    float *w = (float *)(void *)(f + 8 + hl);
    for (size_t i = 0; i < off / 4; i++) {
        const float v = 0.01f * (float)(i % 17) - 0.08f;
        memcpy(w + i, &v, 4); /* unaligned: the header's length is any */
    }
    const int rc = fz_write(path, f, 8 + hl + off);
    free(f);
    return rc;
}

/* A llama2.c tokenizer: max_token_length, then score, length, bytes each. */
static int fz_write_tokenizer(const char *path) {
    static const char *const tok[8] = {"<unk>", "<s>", "</s>", "a", "b", " a", "ab", "\xc3\xa9"};
    uint8_t f[256];
    size_t n = 0;
    const int32_t max = 8;
    memcpy(f, &max, 4), n = 4;
    for (int i = 0; i < 8; i++) {
        const float score = -(float)i;
        const int32_t len = (int32_t)strlen(tok[i]);
        memcpy(f + n, &score, 4), memcpy(f + n + 4, &len, 4), memcpy(f + n + 8, tok[i], (size_t)len);
        n += 8 + (size_t)len;
    }
    return fz_write(path, f, n);
}

/* The output's promises after hx_convert_hf returned rc. */
static void fz_check_output(const char *out, int rc, const char *arch_of_config) {
    char tmp[4400];
    struct stat st;
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    if (stat(tmp, &st) == 0) abort();
    if (rc) {
        if (stat(out, &st) == 0 || !kv_last_error()[0]) abort();
        return;
    }
    kv_gguf *g = NULL;
    const char *arch = NULL;
    size_t len = 0;
    if (kv_gguf_open(out, &g) || kv_gguf_get_str(g, "general.architecture", &arch, &len)) abort();
    if (strncmp(arch, arch_of_config, len) || arch_of_config[len]) abort();
    kv_gguf_close(g);
    unlink(out);
}

/* The GGUF architecture of the config's model_type (cJSON reads the first
 * of duplicate keys, as the converter does): mistral is written as llama. */
static void fz_arch(const uint8_t *text, size_t n, char *arch, size_t cap) {
    cJSON *r = cJSON_ParseWithLength((const char *)text, n);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "model_type");
    const char *s = cJSON_IsString(t) ? t->valuestring : "?";
    snprintf(arch, cap, "%s", strcmp(s, "mistral") ? s : "llama");
    cJSON_Delete(r);
}

/* The target's folder (fz_util removes flat names only) holding the tiny
 * model asked for (qwen3 or llama) and tok.bin; its path into dir. */
static void fz_folder(char *dir, size_t cap, int qwen3) {
    static int have = -1; /* which model the folder holds */
    char p[4300];
    fz_path(dir, cap, ".");
    if (have == qwen3) return;
    if (fz_write_model(fz_path(p, sizeof p, "model.safetensors"), qwen3 ? 14 : 12) ||
        fz_write_tokenizer(fz_path(p, sizeof p, "tok.bin")))
        abort();
    have = qwen3;
}

/* tokenizer_config.json's chat_template, if a string, is the GGUF's
 * tokenizer.chat_template (cJSON reads it to its first \u0000, as the
 * converter does). */
static void fz_check_template(const char *out, const uint8_t *text, size_t n) {
    cJSON *r = cJSON_ParseWithLength((const char *)text, n);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "chat_template");
    if (cJSON_IsString(t)) {
        kv_gguf *g = NULL;
        const char *s = NULL;
        size_t len = 0;
        if (kv_gguf_open(out, &g) || kv_gguf_get_str(g, "tokenizer.chat_template", &s, &len) ||
            len != strlen(t->valuestring) || memcmp(s, t->valuestring, len))
            abort();
        kv_gguf_close(g);
    }
    cJSON_Delete(r);
}

/* Converts the folder (config.json written, the rest as it is); returns
 * hx_convert_hf's status after checking what it left. tc: the folder's
 * tokenizer_config.json (tc_n bytes), or NULL when it has none. */
static int fz_run(const char *dir, const char *arch, const uint8_t *tc, size_t tc_n) {
    char tok[4300], out[4300];
    fz_path(tok, sizeof tok, "tok.bin");
    fz_path(out, sizeof out, "out.gguf");
    const int rc = hx_convert_hf(dir, out, KV_F32, KV_MIX_NONE, tok);
    if (!rc && tc) fz_check_template(out, tc, tc_n);
    fz_check_output(out, rc, arch);
    return rc;
}

/* config.json = cfg[0..n) beside the tiny model. */
static void fz_convert(const uint8_t *cfg, size_t n, int qwen3) {
    char dir[4200], p[4300], arch[64];
    fz_folder(dir, sizeof dir, qwen3);
    if (fz_write(fz_path(p, sizeof p, "config.json"), cfg, n)) return;
    const int check = hx_hf_config_check(p, (const char *)cfg, n);
    fz_arch(cfg, n, arch, sizeof arch);
    const int rc = fz_run(dir, arch, NULL, 0);
    if (check && rc != check) abort();
    unlink(p);
}

/* The tiny llama model's config.json (the seed "llama" says the same). */
static const char FZ_LLAMA_CONFIG[] =
    "{\"model_type\":\"llama\",\"vocab_size\":8,\"hidden_size\":4,\"intermediate_size\":8,"
    "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,"
    "\"max_position_embeddings\":64}";

/* tokenizer_config.json = text[0..n) beside the tiny llama model and its config. */
static void fz_tokenizer_config(const uint8_t *text, size_t n) {
    char dir[4200], cfg[4300], p[4300];
    fz_folder(dir, sizeof dir, 0);
    fz_path(cfg, sizeof cfg, "config.json");
    fz_path(p, sizeof p, "tokenizer_config.json");
    if (!fz_write(cfg, FZ_LLAMA_CONFIG, strlen(FZ_LLAMA_CONFIG)) && !fz_write(p, text, n))
        fz_run(dir, "llama", text, n);
    unlink(p);
    unlink(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *rest = data + 1;
    const size_t n = size - 1;
    fz_quiet(); /* mistral's sliding_window note goes to stderr */
    if (data[0] % 4 == 3) {
        fz_tokenizer_config(rest, n);
    } else if (data[0] % 4 == 0) {
        char *buf = malloc(n ? n : 1);
        if (buf) {
            memcpy(buf, rest, n);
            if (hx_hf_config_check("config.json", buf, n) && !strstr(kv_last_error(), "config.json")) abort();
            free(buf);
        }
    } else {
        fz_convert(rest, n, data[0] % 4 == 2);
    }
    fz_unquiet();
    return 0;
}
