/* hf_convert.c - see hf_convert.h.
 *
 * What is written, and where llama.cpp's convert_hf_to_gguf.py says so:
 *   - TextModel.set_gguf_parameters: context_length, embedding_length,
 *     block_count, feed_forward_length, attention.head_count(_kv),
 *     rope.freq_base, attention.layer_norm_rms_epsilon, key_length and
 *     value_length when config.json gives head_dim, general.file_type.
 *   - LlamaModel: vocab_size, rope.dimension_count, linear rope scaling, the
 *     q/k row permutation, and rope_freqs.weight for rope_type llama3.
 *   - Qwen2Model: YaRN rope scaling keys.
 *   - Gemma2Model: key/value length, attn and final logit softcapping,
 *     attention.sliding_window, norm weights + 1, lm_head.weight skipped.
 *     (Gemma2Model writes no rope.freq_base; kvbench writes rope_theta when
 *     config.json has one, the value llama.cpp assumes anyway.) */
#define _POSIX_C_SOURCE 200809L
#include "hf_convert.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../base/file.h"
#include "../base/kv_error.h"
#include "../engine/gguf.h"
#include "../engine/quant.h"
#include "../engine/safetensors.h"
#include "../engine/tokenizer.h"

typedef enum hf_rope { HF_ROPE_NONE = 0, HF_ROPE_LINEAR, HF_ROPE_YARN, HF_ROPE_LLAMA3 } hf_rope;

/* config.json, as the converter needs it. */
typedef struct hf_cfg {
    char path[4096];         /* config.json, for messages */
    char model_type[32];
    const char *arch;        /* the GGUF architecture */
    int permute;             /* llama / mistral: q, k rows to interleaved pairs */
    int biases;              /* q/k/v biases (qwen2; llama's attention_bias) */
    int qk_norm;             /* qwen3 */
    int gemma2;
    int tied;
    int head_dim_given;
    int64_t dim, hidden, n_layers, n_heads, n_kv_heads, head_dim, vocab, ctx;
    double rope_theta, eps;
    int rope_theta_given;
    hf_rope rope;
    double rope_factor, low_freq, high_freq;
    int64_t rope_orig_ctx;
    double attn_softcap, final_softcap;
    int64_t sliding_window;
} hf_cfg;

/* ------------------------------------------------------------ config.json */

static const cJSON *jget(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static int jabsent(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* An integer key in [lo, hi]; absent keys take *out as their default unless required. */
static int cfg_int(const hf_cfg *c, const cJSON *o, const char *key, int required, int64_t lo, int64_t hi,
                   int64_t *out) {
    const cJSON *v = jget(o, key);
    if (jabsent(v)) {
        if (required) return kv_errorf(KV_EFORMAT, "%s: \"%s\" is missing: expected an integer", c->path, key);
        return KV_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)lo ||
        v->valuedouble > (double)hi)
        return kv_errorf(KV_EFORMAT, "%s: \"%s\": expected an integer in [%lld, %lld]", c->path, key, (long long)lo,
                         (long long)hi);
    *out = (int64_t)v->valuedouble;
    return KV_OK;
}

/* A positive number key; absent keys keep *out (the default) and clear *given. */
static int cfg_num(const hf_cfg *c, const cJSON *o, const char *key, double *out, int *given) {
    const cJSON *v = jget(o, key);
    if (given) *given = 0;
    if (jabsent(v)) return KV_OK;
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || !isfinite(v->valuedouble))
        return kv_errorf(KV_EFORMAT, "%s: \"%s\": expected a positive number", c->path, key);
    *out = v->valuedouble;
    if (given) *given = 1;
    return KV_OK;
}

static int cfg_bool(const hf_cfg *c, const cJSON *o, const char *key, int *out) {
    const cJSON *v = jget(o, key);
    if (jabsent(v)) return KV_OK;
    if (!cJSON_IsBool(v)) return kv_errorf(KV_EFORMAT, "%s: \"%s\": expected true or false", c->path, key);
    *out = cJSON_IsTrue(v);
    return KV_OK;
}

/* model_type: the GGUF architecture and what differs between them. The
 * tie_word_embeddings defaults are the transformers config classes'. */
static int cfg_model_type(hf_cfg *c, const cJSON *root) {
    const cJSON *mt = jget(root, "model_type");
    if (!cJSON_IsString(mt))
        return kv_errorf(KV_EFORMAT, "%s: \"model_type\": expected a string (llama, mistral, qwen2, qwen3, gemma2)",
                         c->path);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt->valuestring);
    const char *t = mt->valuestring;
    if (!strcmp(t, "llama") || !strcmp(t, "mistral")) {
        c->arch = "llama";
        c->permute = 1;
    } else if (!strcmp(t, "qwen2")) {
        c->arch = "qwen2";
        c->biases = 1;
    } else if (!strcmp(t, "qwen3")) {
        c->arch = "qwen3";
        c->qk_norm = 1;
    } else if (!strcmp(t, "gemma2")) {
        c->arch = "gemma2";
        c->gemma2 = 1;
        c->tied = 1;
    } else {
        return kv_errorf(KV_EUNSUPPORTED, "%s: model_type '%.40s' is not supported (supported: llama, mistral, qwen2, "
                                          "qwen3, gemma2)",
                         c->path, t);
    }
    return KV_OK;
}

/* The sizes every model type has. */
static int cfg_sizes(hf_cfg *c, const cJSON *r) {
    const int64_t big = (int64_t)1 << 30;
    int rc;
    if ((rc = cfg_int(c, r, "hidden_size", 1, 1, big, &c->dim)) ||
        (rc = cfg_int(c, r, "intermediate_size", 1, 1, big, &c->hidden)) ||
        (rc = cfg_int(c, r, "num_hidden_layers", 1, 1, 4096, &c->n_layers)) ||
        (rc = cfg_int(c, r, "num_attention_heads", 1, 1, 4096, &c->n_heads)) ||
        (rc = cfg_int(c, r, "vocab_size", 1, 1, 1 << 22, &c->vocab)) ||
        (rc = cfg_int(c, r, "max_position_embeddings", 1, 1, big, &c->ctx)))
        return rc;
    c->n_kv_heads = c->n_heads;
    if ((rc = cfg_int(c, r, "num_key_value_heads", 0, 1, 4096, &c->n_kv_heads))) return rc;
    c->head_dim = c->dim / c->n_heads;
    c->head_dim_given = !jabsent(jget(r, "head_dim"));
    if ((rc = cfg_int(c, r, "head_dim", 0, 2, 65536, &c->head_dim))) return rc;
    if (c->n_heads % c->n_kv_heads || c->head_dim % 2 || (!c->head_dim_given && c->dim % c->n_heads))
        return kv_errorf(KV_EFORMAT, "%s: expected num_attention_heads (%lld) a multiple of num_key_value_heads (%lld) "
                                     "and an even head size (head_dim, or hidden_size / num_attention_heads: %lld)",
                         c->path, (long long)c->n_heads, (long long)c->n_kv_heads, (long long)c->head_dim);
    c->eps = 1e-6; /* the transformers configs' default */
    c->rope_theta = 10000.0;
    if ((rc = cfg_num(c, r, "rms_norm_eps", &c->eps, NULL)) ||
        (rc = cfg_num(c, r, "rope_theta", &c->rope_theta, &c->rope_theta_given)) ||
        (rc = cfg_bool(c, r, "tie_word_embeddings", &c->tied)))
        return rc;
    return KV_OK;
}

/* rope_scaling: null, linear, yarn or llama3; anything else is refused by
 * name, since a file that silently dropped it would run another model. */
static int cfg_rope_scaling(hf_cfg *c, const cJSON *r) {
    const cJSON *rs = jget(r, "rope_scaling");
    if (jabsent(rs)) return KV_OK;
    if (!cJSON_IsObject(rs)) return kv_errorf(KV_EFORMAT, "%s: \"rope_scaling\": expected an object or null", c->path);
    const cJSON *ty = jget(rs, "rope_type");
    if (jabsent(ty)) ty = jget(rs, "type");
    const char *t = cJSON_IsString(ty) ? ty->valuestring : NULL;
    if (!t) return kv_errorf(KV_EFORMAT, "%s: rope_scaling: expected a \"rope_type\" (or \"type\") string", c->path);
    if (!strcmp(t, "default")) return KV_OK;
    c->rope_factor = 0;
    int rc = cfg_num(c, rs, "factor", &c->rope_factor, NULL);
    if (rc) return rc;
    if (!(c->rope_factor > 0)) return kv_errorf(KV_EFORMAT, "%s: rope_scaling %s: \"factor\" is missing", c->path, t);
    if (!strcmp(t, "linear")) {
        c->rope = HF_ROPE_LINEAR;
        return KV_OK;
    }
    if (!strcmp(t, "yarn")) {
        /* llama.cpp derives YaRN's attention factor and betas itself (its
         * defaults are Hugging Face's): an explicit value would be lost */
        static const char *const lost[] = {"attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"};
        for (int i = 0; i < 5; i++)
            if (!jabsent(jget(rs, lost[i])))
                return kv_errorf(KV_EUNSUPPORTED, "%s: rope_scaling yarn with \"%s\" is not supported (GGUF has no key "
                                                  "that llama.cpp reads for it)",
                                 c->path, lost[i]);
        c->rope = HF_ROPE_YARN;
        return cfg_int(c, rs, "original_max_position_embeddings", 1, 1, (int64_t)1 << 30, &c->rope_orig_ctx);
    }
    if (!strcmp(t, "llama3")) {
        if (c->permute == 0)
            return kv_errorf(KV_EUNSUPPORTED, "%s: rope_scaling llama3 on model_type %s is not supported", c->path,
                             c->model_type);
        c->rope = HF_ROPE_LLAMA3;
        c->low_freq = 1.0;
        c->high_freq = 4.0;
        c->rope_orig_ctx = 8192;
        if ((rc = cfg_num(c, rs, "low_freq_factor", &c->low_freq, NULL)) ||
            (rc = cfg_num(c, rs, "high_freq_factor", &c->high_freq, NULL)) ||
            (rc = cfg_int(c, rs, "original_max_position_embeddings", 0, 1, (int64_t)1 << 30, &c->rope_orig_ctx)))
            return rc;
        if (c->low_freq == c->high_freq)
            return kv_errorf(KV_EFORMAT, "%s: rope_scaling llama3: expected low_freq_factor != high_freq_factor",
                             c->path);
        return KV_OK;
    }
    return kv_errorf(KV_EUNSUPPORTED, "%s: rope_scaling type '%.40s' is not supported (supported: linear, yarn, llama3)",
                     c->path, t);
}

/* What only some model types have, and what kvbench refuses. */
static int cfg_arch_extras(hf_cfg *c, const cJSON *r) {
    int rc, flag = 0;
    if (c->permute) {
        if ((rc = cfg_bool(c, r, "attention_bias", &c->biases))) return rc;
        if ((rc = cfg_bool(c, r, "mlp_bias", &flag))) return rc;
        if (flag) return kv_errorf(KV_EUNSUPPORTED, "%s: mlp_bias true is not supported", c->path);
        int64_t sw = 0;
        if (!strcmp(c->model_type, "mistral") && !(rc = cfg_int(c, r, "sliding_window", 0, 1, (int64_t)1 << 40, &sw)) &&
            sw > 0 && sw < c->ctx)
            fprintf(stderr, "kvbench convert: note: %s has sliding_window %lld; llama.cpp's converter drops it and so "
                            "does kvbench (attention is full past %lld tokens)\n",
                    c->path, (long long)sw, (long long)sw);
        return rc;
    }
    if (!strcmp(c->arch, "qwen2") || !strcmp(c->arch, "qwen3")) {
        if (!strcmp(c->arch, "qwen3") && (rc = cfg_bool(c, r, "attention_bias", &c->biases))) return rc;
        if ((rc = cfg_bool(c, r, "use_sliding_window", &flag))) return rc;
        if (flag)
            return kv_errorf(KV_EUNSUPPORTED, "%s: use_sliding_window true is not supported (llama.cpp's %s has no "
                                              "sliding-window layers)",
                             c->path, c->arch);
        return KV_OK;
    }
    /* gemma2: llama.cpp skips lm_head.weight whatever the config says */
    c->tied = 1;
    c->attn_softcap = 50.0; /* Gemma2Config's defaults */
    c->final_softcap = 30.0;
    c->sliding_window = 4096;
    double qpas = (double)c->head_dim;
    if ((rc = cfg_num(c, r, "attn_logit_softcapping", &c->attn_softcap, NULL)) ||
        (rc = cfg_num(c, r, "final_logit_softcapping", &c->final_softcap, NULL)) ||
        (rc = cfg_int(c, r, "sliding_window", 0, 1, (int64_t)1 << 40, &c->sliding_window)) ||
        (rc = cfg_num(c, r, "query_pre_attn_scalar", &qpas, NULL)))
        return rc;
    if (qpas != (double)c->head_dim && qpas != (double)c->dim / (double)c->n_heads)
        return kv_errorf(KV_EUNSUPPORTED, "%s: query_pre_attn_scalar %g is neither head_dim (%lld) nor hidden_size / "
                                          "num_attention_heads, the two scales llama.cpp's gemma2 knows",
                         c->path, qpas, (long long)c->head_dim);
    return KV_OK;
}

/* config.json's text (len bytes; `path` names it in messages) into c. */
static int cfg_parse(const char *path, const char *js, size_t len, hf_cfg *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    cJSON *r = cJSON_ParseWithLength(js, len);
    const char *err = r ? NULL : cJSON_GetErrorPtr();
    size_t at = err && err >= js && err <= js + len ? (size_t)(err - js) : len;
    int rc = KV_OK;
    if (!cJSON_IsObject(r)) rc = kv_errorf(KV_EFORMAT, "%s: byte %zu: expected a JSON object", c->path, at);
    if (!rc) rc = cfg_model_type(c, r);
    if (!rc) rc = cfg_sizes(c, r);
    if (!rc) rc = cfg_rope_scaling(c, r);
    if (!rc) rc = cfg_arch_extras(c, r);
    cJSON_Delete(r);
    return rc;
}

static int cfg_read(const char *dir, hf_cfg *c) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *js = NULL;
    size_t len = 0;
    int rc = kv_read_file(path, &js, &len);
    if (rc) return rc;
    rc = cfg_parse(path, js, len, c);
    free(js);
    return rc;
}

int hx_hf_config_check(const char *path, const char *text, size_t len) {
    hf_cfg c;
    return cfg_parse(path, text, len, &c);
}

/* ------------------------------------------------------------ tensors */

typedef struct hf_conv {
    const hf_cfg *c;
    const char *dir;
    kv_safetensors *st;
    uint8_t *used;           /* [n tensors]: converted or deliberately skipped */
    kv_gguf_writer *w;
    kv_dtype type;
    kv_quant_mix mix;
} hf_conv;

/* The tensor `hf` with the shape config.json implies (cols 0: a vector). */
static int take(hf_conv *cv, const char *hf, int64_t rows, int64_t cols, const kv_st_tensor **out) {
    const kv_st_tensor *t = kv_safetensors_find(cv->st, hf);
    if (!t)
        return kv_errorf(KV_EFORMAT, "%s: tensor '%s' is missing (model_type %s with %lld layers has one)", cv->dir, hf,
                         cv->c->model_type, (long long)cv->c->n_layers);
    int ok = cols ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols : t->n_dims == 1 && t->shape[0] == rows;
    if (!ok) {
        char got[128] = "";
        for (int d = 0; d < t->n_dims && strlen(got) < 100; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        char want[64];
        if (cols) snprintf(want, sizeof want, "[%lld, %lld]", (long long)rows, (long long)cols);
        else snprintf(want, sizeof want, "[%lld]", (long long)rows);
        return kv_errorf(KV_EFORMAT, "%s: tensor '%s' has shape [%s], but %s implies %s", t->file, hf, got,
                         cv->c->path, want);
    }
    cv->used[t - kv_safetensors_at(cv->st, 0)] = 1;
    *out = t;
    return KV_OK;
}

/* Rows regrouped per head from Hugging Face's halves (rotate_half pairs
 * dimension i with i + d/2) to GGUF llama's adjacent pairs (2i, 2i+1):
 * llama.cpp's LlamaModel.permute, reshape(heads, 2, d/2, ...).swapaxes(1, 2). */
static void permute_rows(const uint8_t *src, uint8_t *dst, int64_t rows, size_t row_bytes, int64_t heads) {
    const int64_t hd = rows / heads, half = hd / 2;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++)
                memcpy(dst + (size_t)(h * hd + 2 * i + j) * row_bytes, src + (size_t)(h * hd + j * half + i) * row_bytes,
                       row_bytes);
}

static size_t st_elem_bytes(kv_dtype t) { return t == KV_F32 ? 4 : 2; }

/* A 2-D weight: permuted when asked (heads > 0), then in the output type. */
static int put_matrix(hf_conv *cv, const char *gguf, const char *hf, int64_t rows, int64_t cols, int64_t heads) {
    const kv_st_tensor *t;
    int rc = take(cv, hf, rows, cols, &t);
    if (rc) return rc;
    uint8_t *perm = NULL;
    const size_t rb = (size_t)cols * st_elem_bytes(t->type);
    if (heads > 0) {
        if (!(perm = malloc(t->n_bytes ? t->n_bytes : 1))) return kv_errorf(KV_ENOMEM, "out of memory for %s", hf);
        permute_rows(t->data, perm, rows, rb, heads);
    }
    kv_tensor W = {.type = t->type, .rows = rows, .cols = cols, .data = perm ? perm : t->data};
    const kv_dtype ty = kv_quant_mix_type(cv->mix, cv->type, gguf, (int)cv->c->n_layers, cv->c->tied);
    rc = kv_export_matrix(cv->w, gguf, &W, ty, NULL);
    free(perm);
    return rc;
}

/* A 1-D tensor in F32, plus `add` (Gemma's 1 + w), permuted when asked. */
static int put_vector(hf_conv *cv, const char *gguf, const char *hf, int64_t n, float add, int64_t heads) {
    const kv_st_tensor *t;
    int rc = take(cv, hf, n, 0, &t);
    if (rc) return rc;
    float *f = malloc((size_t)n * sizeof *f * 2 + 1);
    if (!f) return kv_errorf(KV_ENOMEM, "out of memory for %s", hf);
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *p = t->data + (size_t)i * st_elem_bytes(t->type);
        uint16_t h;
        float v;
        if (t->type == KV_F32) {
            memcpy(&v, p, 4);
        } else {
            memcpy(&h, p, 2);
            v = t->type == KV_F16 ? kv_fp16_to_fp32(h) : kv_bf16_to_fp32(h);
        }
        f[i] = v + add;
    }
    float *out = f;
    if (heads > 0) {
        permute_rows((const uint8_t *)f, (uint8_t *)(f + n), n, sizeof *f, heads);
        out = f + n;
    }
    uint64_t ne[1] = {(uint64_t)n};
    rc = kv_gguf_writer_add_tensor(cv->w, gguf, KV_F32, 1, ne, out);
    free(f);
    return rc;
}

/* One block's tensors, Hugging Face name -> GGUF name. */
static int put_layer(hf_conv *cv, int l) {
    const hf_cfg *c = cv->c;
    const int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    const int64_t ph = c->permute ? c->n_heads : 0, pk = c->permute ? c->n_kv_heads : 0;
    const float one = c->gemma2 ? 1.0f : 0.0f;
    char g[96], h[160];
#define G(s) (snprintf(g, sizeof g, "blk.%d." s, l), g)
#define H(s) (snprintf(h, sizeof h, "model.layers.%d." s, l), h)
    int rc;
    if ((rc = put_vector(cv, G("attn_norm.weight"), H("input_layernorm.weight"), c->dim, one, 0)) ||
        (rc = put_matrix(cv, G("attn_q.weight"), H("self_attn.q_proj.weight"), qd, c->dim, ph)) ||
        (rc = put_matrix(cv, G("attn_k.weight"), H("self_attn.k_proj.weight"), kvd, c->dim, pk)) ||
        (rc = put_matrix(cv, G("attn_v.weight"), H("self_attn.v_proj.weight"), kvd, c->dim, 0)) ||
        (rc = put_matrix(cv, G("attn_output.weight"), H("self_attn.o_proj.weight"), c->dim, qd, 0)))
        return rc;
    if (c->biases && ((rc = put_vector(cv, G("attn_q.bias"), H("self_attn.q_proj.bias"), qd, 0, ph)) ||
                      (rc = put_vector(cv, G("attn_k.bias"), H("self_attn.k_proj.bias"), kvd, 0, pk)) ||
                      (rc = put_vector(cv, G("attn_v.bias"), H("self_attn.v_proj.bias"), kvd, 0, 0))))
        return rc;
    if (c->qk_norm && ((rc = put_vector(cv, G("attn_q_norm.weight"), H("self_attn.q_norm.weight"), c->head_dim, 0, 0)) ||
                       (rc = put_vector(cv, G("attn_k_norm.weight"), H("self_attn.k_norm.weight"), c->head_dim, 0, 0))))
        return rc;
    if (c->gemma2) {
        if ((rc = put_vector(cv, G("post_attention_norm.weight"), H("post_attention_layernorm.weight"), c->dim, 1, 0)) ||
            (rc = put_vector(cv, G("ffn_norm.weight"), H("pre_feedforward_layernorm.weight"), c->dim, 1, 0)) ||
            (rc = put_vector(cv, G("post_ffw_norm.weight"), H("post_feedforward_layernorm.weight"), c->dim, 1, 0)))
            return rc;
    } else if ((rc = put_vector(cv, G("ffn_norm.weight"), H("post_attention_layernorm.weight"), c->dim, 0, 0))) {
        return rc;
    }
    if ((rc = put_matrix(cv, G("ffn_gate.weight"), H("mlp.gate_proj.weight"), c->hidden, c->dim, 0)) ||
        (rc = put_matrix(cv, G("ffn_up.weight"), H("mlp.up_proj.weight"), c->hidden, c->dim, 0)) ||
        (rc = put_matrix(cv, G("ffn_down.weight"), H("mlp.down_proj.weight"), c->dim, c->hidden, 0)))
        return rc;
#undef G
#undef H
    return KV_OK;
}

/* Llama 3's per-pair frequency divisors, computed as llama.cpp's
 * LlamaModel.generate_extra_tensors does (float32 frequencies, factor for
 * long wavelengths, 1 for short ones, a smooth blend between). llama.cpp
 * reads original_max_position_embeddings from the top level of
 * config.json (default 8192); Hugging Face reads it from rope_scaling,
 * which kvbench follows when it is there (on every Llama 3.x release both
 * are 8192). */
static int put_rope_freqs(hf_conv *cv) {
    const hf_cfg *c = cv->c;
    const int64_t n = c->head_dim / 2;
    float *f = malloc((size_t)n * sizeof *f);
    if (!f) return kv_errorf(KV_ENOMEM, "out of memory");
    const float old_ctx = (float)c->rope_orig_ctx;
    const float lo_wl = old_ctx / (float)c->low_freq, hi_wl = old_ctx / (float)c->high_freq;
    for (int64_t i = 0; i < n; i++) {
        float freq = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)c->head_dim);
        float wl = (float)(2.0 * 3.14159265358979323846) / freq;
        if (wl < hi_wl) {
            f[i] = 1.0f;
        } else if (wl > lo_wl) {
            f[i] = (float)c->rope_factor;
        } else {
            float smooth = (old_ctx / wl - (float)c->low_freq) / (float)(c->high_freq - c->low_freq);
            f[i] = 1.0f / ((1.0f - smooth) / (float)c->rope_factor + smooth);
        }
    }
    uint64_t ne[1] = {(uint64_t)n};
    int rc = kv_gguf_writer_add_tensor(cv->w, "rope_freqs.weight", KV_F32, 1, ne, f);
    free(f);
    return rc;
}

/* Tensors nobody reads (rotary caches) and the output a tied model ignores. */
static int skippable(const hf_cfg *c, const char *name) {
    size_t n = strlen(name), s = strlen("rotary_emb.inv_freq");
    if (n >= s && !strcmp(name + n - s, "rotary_emb.inv_freq")) return 1;
    return c->tied && !strcmp(name, "lm_head.weight");
}

static int put_all(hf_conv *cv) {
    const hf_cfg *c = cv->c;
    int rc;
    if ((rc = put_matrix(cv, "token_embd.weight", "model.embed_tokens.weight", c->vocab, c->dim, 0))) return rc;
    if (c->rope == HF_ROPE_LLAMA3 && (rc = put_rope_freqs(cv))) return rc;
    for (int l = 0; l < c->n_layers; l++)
        if ((rc = put_layer(cv, l))) return rc;
    if ((rc = put_vector(cv, "output_norm.weight", "model.norm.weight", c->dim, c->gemma2 ? 1.0f : 0.0f, 0))) return rc;
    if (!c->tied && (rc = put_matrix(cv, "output.weight", "lm_head.weight", c->vocab, c->dim, 0))) return rc;
    /* a tensor left over is one this converter does not understand: refuse
     * rather than write a model that silently lacks it */
    for (int64_t i = 0; i < kv_safetensors_n_tensors(cv->st); i++) {
        const kv_st_tensor *t = kv_safetensors_at(cv->st, i);
        if (!cv->used[i] && !skippable(c, t->name))
            return kv_errorf(KV_EUNSUPPORTED, "%s: tensor '%s' is not one a %s model (config.json) has", t->file,
                             t->name, c->model_type);
    }
    return KV_OK;
}

/* ------------------------------------------------------------ metadata */

static int set_u32(kv_gguf_writer *w, const char *arch, const char *key, int64_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return kv_gguf_writer_set_u32(w, k, (uint32_t)v);
}

static int set_f32(kv_gguf_writer *w, const char *arch, const char *key, double v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return kv_gguf_writer_set_f32(w, k, (float)v);
}

/* llama.cpp's LlamaFileType of the 2-D weights' type. */
static uint32_t file_type(kv_dtype t, kv_quant_mix mix) {
    if (mix == KV_MIX_Q4_K_M) return 15;
    if (mix == KV_MIX_Q5_K_M) return 17;
    switch (t) {
    case KV_F32: return 0;
    case KV_F16: return 1;
    case KV_Q4_0: return 2;
    case KV_Q8_0: return 7;
    case KV_Q2_K: return 10;
    case KV_Q3_K: return 11; /* Q3_K_S: Q3_K throughout */
    case KV_Q4_K: return 14; /* Q4_K_S */
    case KV_Q5_K: return 16; /* Q5_K_S */
    case KV_Q6_K: return 18;
    case KV_BF16: return 32;
    default: return 0;
    }
}

static int put_rope_keys(kv_gguf_writer *w, const hf_cfg *c) {
    const char *a = c->arch;
    int rc = KV_OK;
    if (c->rope == HF_ROPE_LINEAR || c->rope == HF_ROPE_YARN) {
        char k[128];
        snprintf(k, sizeof k, "%s.rope.scaling.type", a);
        if ((rc = kv_gguf_writer_set_str(w, k, c->rope == HF_ROPE_LINEAR ? "linear" : "yarn")) ||
            (rc = set_f32(w, a, "rope.scaling.factor", c->rope_factor)))
            return rc;
    }
    if (c->rope == HF_ROPE_YARN) rc = set_u32(w, a, "rope.scaling.original_context_length", c->rope_orig_ctx);
    return rc;
}

static int put_meta(kv_gguf_writer *w, const hf_cfg *c, const char *name, kv_dtype type, kv_quant_mix mix) {
    const char *a = c->arch;
    int rc;
    if ((rc = kv_gguf_writer_set_str(w, "general.architecture", a)) ||
        (rc = kv_gguf_writer_set_str(w, "general.name", name)) ||
        (rc = kv_gguf_writer_set_u32(w, "general.file_type", file_type(type, mix))) ||
        (rc = kv_gguf_writer_set_u32(w, "general.quantization_version", 2)) ||
        (rc = set_u32(w, a, "context_length", c->ctx)) || (rc = set_u32(w, a, "embedding_length", c->dim)) ||
        (rc = set_u32(w, a, "block_count", c->n_layers)) || (rc = set_u32(w, a, "feed_forward_length", c->hidden)) ||
        (rc = set_u32(w, a, "attention.head_count", c->n_heads)) ||
        (rc = set_u32(w, a, "attention.head_count_kv", c->n_kv_heads)) ||
        (rc = set_f32(w, a, "attention.layer_norm_rms_epsilon", c->eps)))
        return rc;
    if ((c->rope_theta_given || !c->gemma2) && (rc = set_f32(w, a, "rope.freq_base", c->rope_theta))) return rc;
    if ((c->head_dim_given || c->gemma2) && ((rc = set_u32(w, a, "attention.key_length", c->head_dim)) ||
                                             (rc = set_u32(w, a, "attention.value_length", c->head_dim))))
        return rc;
    if (c->permute && ((rc = set_u32(w, a, "vocab_size", c->vocab)) ||
                       (rc = set_u32(w, a, "rope.dimension_count", c->head_dim))))
        return rc;
    if (c->gemma2 && ((rc = set_f32(w, a, "attn_logit_softcapping", c->attn_softcap)) ||
                      (rc = set_f32(w, a, "final_logit_softcapping", c->final_softcap)) ||
                      (rc = set_u32(w, a, "attention.sliding_window", c->sliding_window))))
        return rc;
    return put_rope_keys(w, c);
}

/* ------------------------------------------------------------ tokenizer */

/* A byte-level vocabulary shorter than vocab_size, padded as llama.cpp's
 * get_vocab_base pads it: "[PADn]" tokens of type UNUSED (Qwen2's
 * token_embd has rows no token uses). Rewrites the two arrays. */
static int pad_vocab(kv_gguf_writer *w, const kv_tokenizer *t, int64_t n) {
    const int32_t nt = kv_tokenizer_n_vocab(t);
    const char **tok = calloc((size_t)n, sizeof *tok);
    char *pads = malloc((size_t)(n - nt) * 24 + 1);
    size_t *len = calloc((size_t)n, sizeof *len);
    int32_t *ty = calloc((size_t)n, sizeof *ty);
    int rc = KV_OK;
    if (!tok || !pads || !len || !ty) rc = kv_errorf(KV_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n && !rc; i++) {
        if (i < nt) {
            tok[i] = kv_tokenizer_token_text(t, (int32_t)i, &len[i]);
            ty[i] = kv_tokenizer_token_type(t, (int32_t)i);
        } else {
            char *p = pads + (i - nt) * 24;
            len[i] = (size_t)snprintf(p, 24, "[PAD%lld]", (long long)i);
            tok[i] = p;
            ty[i] = 5;
        }
    }
    if (!rc && !(rc = kv_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tok, len, (uint64_t)n)))
        rc = kv_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", ty, (uint64_t)n);
    free(tok);
    free(pads);
    free(len);
    free(ty);
    return rc;
}

/* The tokenizer keys: the folder's tokenizer.json, or the one given. A
 * SentencePiece-style tokenizer.json (merges, no scores) cannot be a GGUF
 * "llama" vocabulary; then only --tokenizer can say what the scores are. */
static int put_tokenizer(kv_gguf_writer *w, const hf_cfg *c, const char *dir, const char *given) {
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    struct stat st;
    if (!given && stat(p, &st) != 0)
        return kv_errorf(KV_ENOTFOUND, "%s: no tokenizer.json: pass --tokenizer with a GGUF or llama2.c tokenizer", dir);
    kv_tokenizer *t;
    int rc = kv_tokenizer_load(given ? given : dir, (int32_t)c->vocab, &t);
    if (rc) return rc;
    const int32_t n = kv_tokenizer_n_vocab(t);
    if ((rc = kv_export_tokenizer(w, t)) == KV_EUNSUPPORTED && !given && !kv_tokenizer_byte_level(t))
        rc = kv_errorf(KV_EUNSUPPORTED, "%s: a SentencePiece-style tokenizer.json has merges but no scores, which a "
                                        "GGUF 'llama' vocabulary needs: pass --tokenizer with a GGUF or llama2.c "
                                        "tokenizer of this model",
                       p);
    else if (!rc && (n > c->vocab || (n < c->vocab && !kv_tokenizer_byte_level(t))))
        rc = kv_errorf(KV_EFORMAT, "%s: the tokenizer has %d tokens but %s has vocab_size %lld", given ? given : p, n,
                       c->path, (long long)c->vocab);
    else if (!rc && n < c->vocab)
        rc = pad_vocab(w, t, c->vocab);
    kv_tokenizer_free(t);
    return rc;
}

/* tokenizer.chat_template as llama.cpp's SpecialVocab writes it: the
 * folder's chat_template.jinja, else tokenizer_config.json's chat_template
 * (a string; or a list of {name, template}: "default" becomes
 * tokenizer.chat_template, the others tokenizer.chat_template.NAME). */
static int put_chat_template(kv_gguf_writer *w, const char *dir) {
    char p[4096], *js = NULL;
    size_t len = 0;
    struct stat st;
    int rc;
    snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
    if (stat(p, &st) == 0) {
        if ((rc = kv_read_file(p, &js, &len))) return rc;
        char *t = realloc(js, len + 1);
        if (!t) {
            free(js);
            return kv_errorf(KV_ENOMEM, "out of memory");
        }
        t[len] = '\0';
        rc = kv_gguf_writer_set_str(w, "tokenizer.chat_template", t);
        free(t);
        return rc;
    }
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    if (stat(p, &st) != 0) return KV_OK;
    if ((rc = kv_read_file(p, &js, &len))) return rc;
    cJSON *r = cJSON_ParseWithLength(js, len);
    free(js);
    if (!cJSON_IsObject(r)) {
        cJSON_Delete(r);
        return kv_errorf(KV_EFORMAT, "%s: expected a JSON object", p);
    }
    const cJSON *ct = jget(r, "chat_template");
    if (cJSON_IsString(ct)) rc = kv_gguf_writer_set_str(w, "tokenizer.chat_template", ct->valuestring);
    for (const cJSON *e = cJSON_IsArray(ct) ? ct->child : NULL; e && !rc; e = e->next) {
        const cJSON *n = jget(e, "name"), *t = jget(e, "template");
        if (!cJSON_IsString(n) || !cJSON_IsString(t)) {
            rc = kv_errorf(KV_EFORMAT, "%s: chat_template: expected a string or a list of {name, template}", p);
            break;
        }
        char key[192];
        snprintf(key, sizeof key, "tokenizer.chat_template%s%.128s", strcmp(n->valuestring, "default") ? "." : "",
                 strcmp(n->valuestring, "default") ? n->valuestring : "");
        rc = kv_gguf_writer_set_str(w, key, t->valuestring);
    }
    cJSON_Delete(r);
    return rc;
}

/* ------------------------------------------------------------ entry */

int hx_is_hf_dir(const char *dir) {
    char p[4096];
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    snprintf(p, sizeof p, "%s/config.json", dir);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int hx_convert_hf(const char *dir, const char *out, kv_dtype type, kv_quant_mix mix, const char *tokenizer) {
    hf_cfg c;
    int rc = cfg_read(dir, &c);
    if (rc) return rc;
    hf_conv cv = {.c = &c, .dir = dir, .type = type, .mix = mix};
    if (!(cv.w = kv_gguf_writer_new())) return kv_errorf(KV_ENOMEM, "out of memory");
    char name[256]; /* general.name: the folder's own name */
    snprintf(name, sizeof name, "%s", dir);
    for (size_t n = strlen(name); n > 1 && name[n - 1] == '/'; n--) name[n - 1] = '\0';
    const char *slash = strrchr(name, '/');
    if (slash && slash[1]) memmove(name, slash + 1, strlen(slash + 1) + 1);
    if (!(rc = put_meta(cv.w, &c, name, type, mix)) && !(rc = put_tokenizer(cv.w, &c, dir, tokenizer)) &&
        !(rc = put_chat_template(cv.w, dir)) &&
        !(rc = kv_safetensors_open(dir, &cv.st))) {
        cv.used = calloc((size_t)kv_safetensors_n_tensors(cv.st) + 1, 1);
        rc = cv.used ? put_all(&cv) : kv_errorf(KV_ENOMEM, "out of memory");
    }
    if (!rc) rc = kv_gguf_writer_write(cv.w, out);
    free(cv.used);
    kv_safetensors_close(cv.st);
    kv_gguf_writer_free(cv.w);
    return rc;
}
