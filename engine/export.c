/* export.c - see export.h. */
#define _POSIX_C_SOURCE 200809L
#include "export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv_error.h"
#include "model_impl.h" /* the exporter writes the weights */
#include "quant.h"

int kv_export_llama_meta(kv_gguf_writer *w, const kv_model_info *i, const char *name) {
    int rc;
    if ((rc = kv_gguf_writer_set_str(w, "general.architecture", "llama")) ||
        (rc = kv_gguf_writer_set_str(w, "general.name", name ? name : "kvbench")) ||
        (rc = kv_gguf_writer_set_u32(w, "llama.context_length", (uint32_t)i->ctx_len)) ||
        (rc = kv_gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)i->dim)) ||
        (rc = kv_gguf_writer_set_u32(w, "llama.block_count", (uint32_t)i->n_layers)) ||
        (rc = kv_gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)i->hidden_dim)) ||
        (rc = kv_gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)i->n_heads)) ||
        (rc = kv_gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)i->n_kv_heads)) ||
        (rc = kv_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", i->norm_eps)) ||
        (rc = kv_gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)i->n_rot)) ||
        (rc = kv_gguf_writer_set_f32(w, "llama.rope.freq_base", i->rope_base)))
        return rc;
    return KV_OK;
}

int kv_export_mpt_meta(kv_gguf_writer *w, const kv_model_info *i, const char *name) {
    int rc;
    if ((rc = kv_gguf_writer_set_str(w, "general.architecture", "mpt")) ||
        (rc = kv_gguf_writer_set_str(w, "general.name", name ? name : "kvbench")) ||
        (rc = kv_gguf_writer_set_u32(w, "mpt.context_length", (uint32_t)i->ctx_len)) ||
        (rc = kv_gguf_writer_set_u32(w, "mpt.embedding_length", (uint32_t)i->dim)) ||
        (rc = kv_gguf_writer_set_u32(w, "mpt.block_count", (uint32_t)i->n_layers)) ||
        (rc = kv_gguf_writer_set_u32(w, "mpt.feed_forward_length", (uint32_t)i->hidden_dim)) ||
        (rc = kv_gguf_writer_set_u32(w, "mpt.attention.head_count", (uint32_t)i->n_heads)) ||
        (rc = kv_gguf_writer_set_u32(w, "mpt.attention.head_count_kv", (uint32_t)i->n_kv_heads)) ||
        (rc = kv_gguf_writer_set_f32(w, "mpt.attention.layer_norm_epsilon", i->norm_eps)) ||
        (rc = kv_gguf_writer_set_f32(w, "mpt.attention.max_alibi_bias", i->max_alibi_bias)))
        return rc;
    if (i->clamp_kqv > 0 && (rc = kv_gguf_writer_set_f32(w, "mpt.attention.clamp_kqv", i->clamp_kqv))) return rc;
    return KV_OK;
}

/* Is the piece "<0xNN>"? */
static int is_byte_piece(const char *s, size_t n) {
    return n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>';
}

/* The merges of a byte-level vocabulary as "left right" strings, by rank. */
static int export_merges(kv_gguf_writer *w, const kv_tokenizer *t) {
    int64_t nm = kv_tokenizer_n_merges(t);
    char **m = calloc((size_t)nm + 1, sizeof *m);
    size_t *ml = calloc((size_t)nm + 1, sizeof *ml);
    int rc = KV_OK;
    if (!m || !ml) rc = kv_errorf(KV_ENOMEM, "out of memory");
    for (int64_t i = 0; i < nm && !rc; i++) {
        int32_t l, r;
        size_t ll, rl;
        kv_tokenizer_merge(t, i, &l, &r);
        const char *ls = kv_tokenizer_token_text(t, l, &ll), *rs = kv_tokenizer_token_text(t, r, &rl);
        if (!(m[i] = malloc(ll + rl + 2))) {
            rc = kv_errorf(KV_ENOMEM, "out of memory");
            break;
        }
        memcpy(m[i], ls, ll);
        m[i][ll] = ' ';
        memcpy(m[i] + ll + 1, rs, rl);
        ml[i] = ll + rl + 1;
    }
    if (!rc) rc = kv_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)m, ml, (uint64_t)nm);
    for (int64_t i = 0; m && i < nm; i++) free(m[i]);
    free(m);
    free(ml);
    return rc;
}

/* The keys llama.cpp's converter writes for a byte-level BPE ("gpt2")
 * vocabulary: model, pre, tokens, token types, merges, BOS/EOS/UNK ids and
 * add_bos_token. llama.cpp decides NFC and ignore_merges from the pre name,
 * so a vocabulary that differs from its pre-tokenizer's row is refused
 * rather than written to encode differently. */
static int export_byte_level(kv_gguf_writer *w, const kv_tokenizer *t) {
    const char *pre = kv_tokenizer_pre(t);
    const kv_pre_info info = kv_pre_info_of(pre);
    if (!info.known) return kv_errorf(KV_EUNSUPPORTED, "pre-tokenizer '%s' has no GGUF name", pre ? pre : "?");
    if (info.nfc != kv_tokenizer_nfc(t) || info.ignore_merges != kv_tokenizer_ignore_merges(t))
        return kv_errorf(KV_EUNSUPPORTED,
                         "this vocabulary %s NFC and %s merges for whole-token words, but llama.cpp and "
                         "kvbench read GGUF pre-tokenizer '%s' as %s NFC, %s: the GGUF would encode differently",
                         kv_tokenizer_nfc(t) ? "applies" : "skips", kv_tokenizer_ignore_merges(t) ? "ignores" : "keeps",
                         pre, info.nfc ? "with" : "without", info.ignore_merges ? "ignoring merges" : "keeping merges");
    int32_t n = kv_tokenizer_n_vocab(t);
    const char **tok = malloc((size_t)n * sizeof *tok);
    size_t *len = malloc((size_t)n * sizeof *len);
    int32_t *types = malloc((size_t)n * sizeof *types);
    int rc = KV_OK;
    if (!tok || !len || !types) rc = kv_errorf(KV_ENOMEM, "out of memory");
    for (int32_t i = 0; i < n && !rc; i++) {
        tok[i] = kv_tokenizer_token_text(t, i, &len[i]);
        types[i] = kv_tokenizer_token_type(t, i);
    }
    if (!rc && !((rc = kv_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2")) ||
                 (rc = kv_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre)) ||
                 (rc = kv_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tok, len, (uint64_t)n)) ||
                 (rc = kv_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)n)) ||
                 (rc = export_merges(w, t)))) {
        int32_t bos = kv_tokenizer_bos(t), eos = kv_tokenizer_eos(t);
        if (bos >= 0) rc = kv_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
        if (!rc && eos >= 0) rc = kv_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
        if (!rc && kv_tokenizer_add_bos(t) >= 0)
            rc = kv_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", kv_tokenizer_add_bos(t));
    }
    free(tok);
    free(len);
    free(types);
    return rc;
}

/* SentencePiece scores for a SentencePiece-style tokenizer.json, which has
 * merges instead. llama.cpp's SPM tokenizer merges the adjacent pair of
 * highest score whose concatenation is a token; Hugging Face's BPE merges
 * the pair of lowest rank. Llama 2's and Gemma 3's merge lists hold every
 * split of every token into two tokens (Hugging Face's SentencePiece
 * extractor writes them so), so scoring a token by minus the rank of its
 * first merge gives the same preference. Tokens no merge makes (single
 * characters, which no pair can become) score below every merge, in id
 * order as SentencePiece models do; byte, control and other special
 * tokens score 0, as in SentencePiece models. llama.cpp's converter reads
 * scores from tokenizer.model instead and, without one, writes the same
 * placeholder for every token (gguf-py LlamaHfVocab), which would merge
 * leftmost-first. */
static int spm_scores_from_merges(const kv_tokenizer *t, float *scores) {
    int32_t n = kv_tokenizer_n_vocab(t);
    int64_t nm = kv_tokenizer_n_merges(t);
    char *buf = NULL;
    size_t cap = 0;
    for (int32_t i = 0; i < n; i++) scores[i] = kv_tokenizer_token_type(t, i) == 1 ? -(float)(nm + i) : 0.0f;
    for (int64_t m = nm - 1; m >= 0; m--) { /* the lowest rank writes last */
        int32_t l, r;
        size_t ll, rl;
        kv_tokenizer_merge(t, m, &l, &r);
        const char *ls = kv_tokenizer_token_text(t, l, &ll), *rs = kv_tokenizer_token_text(t, r, &rl);
        if (ll + rl + 1 > cap) {
            char *b = realloc(buf, cap = 2 * (ll + rl + 1));
            if (!b) {
                free(buf);
                return kv_errorf(KV_ENOMEM, "out of memory");
            }
            buf = b;
        }
        memcpy(buf, ls, ll);
        memcpy(buf + ll, rs, rl);
        buf[ll + rl] = 0;
        int32_t id = kv_tokenizer_find(t, buf);
        if (id >= 0) scores[id] = -(float)m;
    }
    free(buf);
    return KV_OK;
}

/* Piece i as a GGUF "llama" vocabulary holds it: spaces as U+2581. */
static char *spm_piece(const kv_tokenizer *t, int32_t i, size_t *out_len) {
    size_t len;
    const char *s = kv_tokenizer_token_text(t, i, &len);
    char *p = malloc(len * 3 + 1);
    if (!p) return NULL;
    size_t k = 0;
    for (size_t j = 0; j < len; j++) {
        if (s[j] == ' ') {
            memcpy(p + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            p[k++] = s[j];
        }
    }
    *out_len = k;
    return p;
}

/* The keys of a SentencePiece-style ("llama") vocabulary: tokens, scores
 * (the vocabulary's own, or derived from a tokenizer.json's merges), token
 * types, BOS/EOS ids, add_bos_token and, when the vocabulary adds no
 * space in front (Gemma 3), add_space_prefix = false. */
static int export_spm(kv_gguf_writer *w, const kv_tokenizer *t) {
    int32_t n = kv_tokenizer_n_vocab(t), bos = kv_tokenizer_bos(t), eos = kv_tokenizer_eos(t);
    char **pieces = calloc((size_t)n, sizeof *pieces);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    float *scores = malloc((size_t)n * sizeof *scores);
    int32_t *types = malloc((size_t)n * sizeof *types);
    int rc = KV_OK;
    if (!pieces || !lens || !scores || !types) {
        rc = kv_errorf(KV_ENOMEM, "out of memory");
        goto out;
    }
    for (int32_t i = 0; i < n; i++) {
        if (!(pieces[i] = spm_piece(t, i, &lens[i]))) {
            rc = kv_errorf(KV_ENOMEM, "out of memory");
            goto out;
        }
        scores[i] = kv_tokenizer_token_score(t, i);
        types[i] = kv_tokenizer_token_type(t, i);
        if (!types[i]) /* not said: from the piece, as before types were kept */
            types[i] = (i == bos || i == eos) ? 3 : is_byte_piece(pieces[i], lens[i]) ? 6
                       : (lens[i] == 5 && !memcmp(pieces[i], "<unk>", 5)) ? 2 : 1;
    }
    if (kv_tokenizer_n_merges(t) > 0 && (rc = spm_scores_from_merges(t, scores))) goto out;
    int add_bos = kv_tokenizer_add_bos(t);
    if ((rc = kv_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama")) ||
        (rc = kv_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)pieces, lens, (uint64_t)n)) ||
        (rc = kv_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, (uint64_t)n)) ||
        (rc = kv_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)n)))
        goto out;
    if (bos >= 0 && (rc = kv_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos))) goto out;
    if (eos >= 0 && (rc = kv_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos))) goto out;
    if (!kv_tokenizer_add_space_prefix(t) &&
        (rc = kv_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", 0)))
        goto out;
    rc = kv_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", add_bos >= 0 ? add_bos : 1);
out:
    if (pieces)
        for (int32_t i = 0; i < n; i++) free(pieces[i]);
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    return rc;
}

int kv_export_tokenizer(kv_gguf_writer *w, const kv_tokenizer *t) {
    return kv_tokenizer_byte_level(t) ? export_byte_level(w, t) : export_spm(w, t);
}

int kv_export_vocab_gguf(const kv_tokenizer *t, const char *name, const char *path) {
    kv_gguf_writer *w = kv_gguf_writer_new();
    if (!w) return kv_errorf(KV_ENOMEM, "out of memory");
    int rc = kv_gguf_writer_set_str(w, "general.name", name ? name : "kvbench");
    if (!rc) rc = kv_export_tokenizer(w, t);
    if (!rc) rc = kv_gguf_writer_write(w, path);
    kv_gguf_writer_free(w);
    return rc;
}

int kv_export_matrix(kv_gguf_writer *w, const char *name, const kv_tensor *W, kv_dtype type,
                     kv_dtype *written_type) {
    if (kv_dtype_is_kquant(type) && W->cols % KV_QK_K != 0) type = KV_Q8_0;
    if ((type == KV_Q8_0 || type == KV_Q4_0) && W->cols % KV_QK != 0) type = KV_F32;
    if (written_type) *written_type = type;
    uint64_t ne[2] = {(uint64_t)W->cols, (uint64_t)W->rows};
    if (W->type == type) return kv_gguf_writer_add_tensor(w, name, type, 2, ne, W->data);
    size_t n = (size_t)(W->rows * W->cols);
    float *f = malloc(n * sizeof *f);
    void *q = malloc(kv_dtype_bytes(type, (int64_t)n));
    int rc;
    if (!f || !q) {
        rc = kv_errorf(KV_ENOMEM, "out of memory converting %s", name);
    } else {
        kv_dequant_rows(W, 0, W->rows, f);
        rc = kv_quantize(type, f, q, (int64_t)n);
        if (!rc) rc = kv_gguf_writer_add_tensor(w, name, type, 2, ne, q);
    }
    free(f);
    free(q);
    return rc;
}

static int add_vector(kv_gguf_writer *w, const char *name, const float *v, int64_t n) {
    uint64_t ne[1] = {(uint64_t)n};
    return kv_gguf_writer_add_tensor(w, name, KV_F32, 1, ne, v);
}

typedef struct mix_ctx { kv_quant_mix mix; int n_layers, tied; } mix_ctx;

/* kv_export_matrix with the type the recipe gives `name`. */
static int put_matrix(const mix_ctx *mx, kv_gguf_writer *w, const char *name, const kv_tensor *W, kv_dtype type,
                      kv_dtype *written) {
    return kv_export_matrix(w, name, W, kv_quant_mix_type(mx->mix, type, name, mx->n_layers, mx->tied), written);
}

int kv_quant_mix_parse(const char *name, kv_quant_mix *mix, kv_dtype *base) {
    if (!strcasecmp(name, "q4_k_m")) return *mix = KV_MIX_Q4_K_M, *base = KV_Q4_K, KV_OK;
    if (!strcasecmp(name, "q5_k_m")) return *mix = KV_MIX_Q5_K_M, *base = KV_Q5_K, KV_OK;
    return KV_EINVAL;
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and
 * every third one between them. */
static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

kv_dtype kv_quant_mix_type(kv_quant_mix mix, kv_dtype base, const char *name, int n_layers, int tied) {
    if (mix == KV_MIX_NONE) return base;
    if (!strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight"))) return KV_Q6_K;
    int layer, end = 0;
    char role[32];
    if (sscanf(name, "blk.%d.%31[^.].weight%n", &layer, role, &end) == 2 && end > 0 && name[end] == '\0' &&
        (!strcmp(role, "attn_v") || !strcmp(role, "attn_qkv") || !strcmp(role, "ffn_down")) &&
        use_more_bits(layer, n_layers))
        return KV_Q6_K;
    return base;
}

static int export_type_ok(kv_dtype type) {
    return type == KV_F32 || type == KV_F16 || type == KV_BF16 || type == KV_Q8_0 || type == KV_Q4_0 ||
           kv_dtype_is_kquant(type);
}

int kv_model_export_gguf(const kv_model *m, const char *path, kv_dtype type) {
    return kv_model_export_gguf_mix(m, path, type, KV_MIX_NONE);
}

int kv_model_export_gguf_mix(const kv_model *m, const char *path, kv_dtype type, kv_quant_mix mix) {
    const kv_model_info *i = kv_model_get_info(m);
    if (!export_type_ok(type))
        return kv_errorf(KV_EINVAL, "convert: cannot write tensors of type %s", kv_dtype_name(type));
    /* the writer knows llama's and mpt's keys and tensors only: anything
     * else would be written without what makes it that architecture */
    if ((i->arch != KV_ARCH_LLAMA && i->arch != KV_ARCH_MPT) || i->rope_freq_factors ||
        i->rope_scaling != KV_ROPE_SCALING_NONE)
        return kv_errorf(KV_EUNSUPPORTED, "convert: %s: re-writing a %s model%s is not supported (only llama "
                         "without rope scaling, and mpt)", kv_model_path(m), kv_arch_name(i->arch),
                         i->rope_freq_factors || i->rope_scaling ? " with rope scaling" : "");
    kv_gguf_writer *w = kv_gguf_writer_new();
    if (!w) return kv_errorf(KV_ENOMEM, "out of memory");
    const mix_ctx mx = {mix, i->n_layers, i->tied_output};
    const char *base = strrchr(kv_model_path(m), '/');
    const int mpt = i->arch == KV_ARCH_MPT;
    int rc = (mpt ? kv_export_mpt_meta : kv_export_llama_meta)(w, i, base ? base + 1 : kv_model_path(m));
    if (!rc && kv_model_tokenizer(m)) rc = kv_export_tokenizer(w, kv_model_tokenizer(m));
    if (!rc) rc = put_matrix(&mx, w, "token_embd.weight", kv_model_tok_embd(m), type, NULL);
    if (!rc) rc = add_vector(w, "output_norm.weight", kv_model_out_norm(m), i->dim);
    if (!rc && kv_model_out_norm_bias(m)) rc = add_vector(w, "output_norm.bias", kv_model_out_norm_bias(m), i->dim);
    if (!rc && !i->tied_output) rc = put_matrix(&mx, w, "output.weight", kv_model_output(m), type, NULL);
    char name[96];
    for (int l = 0; l < i->n_layers && !rc; l++) {
        const kv_layer_weights *L = kv_model_layer(m, l);
#define NAME(s) (snprintf(name, sizeof name, "blk.%d." s ".weight", l), name)
#define BIAS(s) (snprintf(name, sizeof name, "blk.%d." s ".bias", l), name)
        if (mpt) {
            if ((rc = add_vector(w, NAME("attn_norm"), L->attn_norm, i->dim)) ||
                (L->attn_norm_b && (rc = add_vector(w, BIAS("attn_norm"), L->attn_norm_b, i->dim))) ||
                (rc = put_matrix(&mx, w, NAME("attn_qkv"), &L->wqkv, type, NULL)) ||
                (rc = put_matrix(&mx, w, NAME("attn_output"), &L->wo, type, NULL)) ||
                (rc = add_vector(w, NAME("ffn_norm"), L->ffn_norm, i->dim)) ||
                (L->ffn_norm_b && (rc = add_vector(w, BIAS("ffn_norm"), L->ffn_norm_b, i->dim))) ||
                (rc = put_matrix(&mx, w, NAME("ffn_up"), &L->w_up, type, NULL)) ||
                (rc = put_matrix(&mx, w, NAME("ffn_down"), &L->w_down, type, NULL)))
                break;
            continue;
        }
        if ((rc = add_vector(w, NAME("attn_norm"), L->attn_norm, i->dim)) ||
            (rc = add_vector(w, NAME("ffn_norm"), L->ffn_norm, i->dim)) ||
            (rc = put_matrix(&mx, w, NAME("attn_q"), &L->wq, type, NULL)) ||
            (rc = put_matrix(&mx, w, NAME("attn_k"), &L->wk, type, NULL)) ||
            (rc = put_matrix(&mx, w, NAME("attn_v"), &L->wv, type, NULL)) ||
            (rc = put_matrix(&mx, w, NAME("attn_output"), &L->wo, type, NULL)) ||
            (rc = put_matrix(&mx, w, NAME("ffn_gate"), &L->w_gate, type, NULL)) ||
            (rc = put_matrix(&mx, w, NAME("ffn_down"), &L->w_down, type, NULL)) ||
            (rc = put_matrix(&mx, w, NAME("ffn_up"), &L->w_up, type, NULL)))
            break;
#undef NAME
#undef BIAS
    }
    if (!rc) rc = kv_gguf_writer_write(w, path);
    kv_gguf_writer_free(w);
    return rc;
}
