/* cmd_convert.c - `kvbench convert` (any loadable model to GGUF) and
 * `kvbench synth` (a Llama or MPT GGUF with seeded random weights, for tests
 * and benchmarks at sizes no real model here has). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/export.h"
#include "../engine/kv_error.h"
#include "../engine/model.h"
#include "../engine/quant.h"
#include "../engine/tokenizer.h"
#include "commands.h"
#include "opts.h"
#include "paths.h"

#define N_OPTS(a) (int)(sizeof(a) / sizeof((a)[0]))

/* `convert --vocab-only`: any tokenizer kv_tokenizer_load reads (a
 * tokenizer.json folder above all) as a vocabulary-only GGUF. */
static int convert_vocab(const char *in, const char *out) {
    char ip[4096];
    kv_tokenizer *t;
    const char *path = hx_resolve_model(in, ip, sizeof ip);
    if (kv_tokenizer_load(path, 0, &t)) {
        fprintf(stderr, "kvbench convert: %s\n", kv_last_error());
        return 1;
    }
    const char *base = strrchr(path, '/');
    int rc = kv_export_vocab_gguf(t, base && base[1] ? base + 1 : path, out);
    if (rc) fprintf(stderr, "kvbench convert: %s\n", kv_last_error());
    else if (kv_tokenizer_byte_level(t))
        printf("wrote %s (vocabulary only: %d tokens, %lld merges, pre-tokenizer %s)\n", out, kv_tokenizer_n_vocab(t),
               (long long)kv_tokenizer_n_merges(t), kv_tokenizer_pre(t) ? kv_tokenizer_pre(t) : "none");
    else /* SentencePiece-style: scores, from the merges when the input had them (export.c) */
        printf("wrote %s (vocabulary only: %d tokens, SentencePiece scores%s)\n", out, kv_tokenizer_n_vocab(t),
               kv_tokenizer_n_merges(t) > 0 ? " derived from the merge ranks" : "");
    kv_tokenizer_free(t);
    return rc ? 1 : 0;
}

#define TYPE_LIST "f32, f16, bf16, q8_0, q4_0, q2_k, q3_k, q4_k, q5_k, q6_k, q4_k_m or q5_k_m"

/* --type: a stored type, or a mixed recipe (q4_k_m, q5_k_m: export.h). */
static int parse_type(const char *cmd, const char *name, kv_dtype *type, kv_quant_mix *mix) {
    *mix = KV_MIX_NONE;
    if (kv_quant_mix_parse(name, mix, type) == KV_OK) return 0;
    if (kv_dtype_parse(name, type) || *type == KV_Q8_G) {
        fprintf(stderr, "kvbench %s: --type: expected " TYPE_LIST ", got '%s'\n", cmd, name);
        return 2;
    }
    return 0;
}

int hx_cmd_convert(int argc, char **argv, int help) {
    const char *type_name = "f32", *tokenizer = NULL;
    int vocab_only = 0;
    hx_opt opts[] = {
        {"type", 0, HX_OPT_STR, &type_name, "TYPE", "type of the 2-D weights: " TYPE_LIST " (default f32)"},
        {"tokenizer", 'z', HX_OPT_STR, &tokenizer, "PATH", "tokenizer for llama2.c input (default: found beside it)"},
        {"vocab-only", 0, HX_OPT_FLAG, &vocab_only, NULL,
         "IN is a tokenizer (a Hugging Face tokenizer.json folder, ...): write its vocabulary alone"},
    };
    if (help) {
        printf("usage: kvbench convert IN OUT.gguf [--type TYPE]\n"
               "       kvbench convert --vocab-only TOKENIZER_DIR OUT.gguf\n\n"
               "Writes IN (GGUF or llama2.c) as a GGUF llama model with its tokenizer. With\n"
               "--type f32 an fp32 input keeps every weight bit for bit. With --vocab-only,\n"
               "writes the tokenizer.ggml.* keys llama.cpp writes (model, pre, tokens,\n"
               "token_type, merges, bos/eos ids, add_bos_token) and no tensors.\n"
               "K-quant rows must hold a multiple of 256 values (others are written Q8_0 or\n"
               "F32). q4_k_m / q5_k_m mix Q4_K / Q5_K with Q6_K as llama.cpp's recipes do:\n"
               "output (or the tied embedding) and attn_v / ffn_down of the first and last\n"
               "eighth of the layers and every third between them in Q6_K.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[2];
    int np;
    if (hx_opts_parse("convert", argc, argv, opts, N_OPTS(opts), pos, 2, &np)) return 2;
    if (np != 2) {
        fprintf(stderr, "kvbench convert: expected IN and OUT paths\n");
        return 2;
    }
    if (vocab_only) return convert_vocab(pos[0], pos[1]);
    kv_dtype type;
    kv_quant_mix mix;
    if (parse_type("convert", type_name, &type, &mix)) return 2;
    char ip[4096], tp[4096];
    kv_model_params p = kv_model_default_params();
    if (tokenizer) p.tokenizer_path = hx_resolve_model(tokenizer, tp, sizeof tp);
    p.weights_mmap = 1; /* each weight is read once: no copy */
    kv_model *m;
    if (kv_model_load(hx_resolve_model(pos[0], ip, sizeof ip), &p, &m)) {
        fprintf(stderr, "kvbench convert: %s\n", kv_last_error());
        return 1;
    }
    int rc = kv_model_export_gguf_mix(m, pos[1], type, mix);
    if (rc) fprintf(stderr, "kvbench convert: %s\n", kv_last_error());
    else
        printf("wrote %s (%s weights, %lld parameters)\n", pos[1], mix ? type_name : kv_dtype_name(type),
               (long long)kv_model_get_info(m)->n_params);
    kv_model_free(m);
    return rc ? 1 : 0;
}

/* ------------------------------------------------------------------ synth */

typedef struct rng { uint64_t s; } rng;

static uint64_t rng_next(rng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_normal(rng *r) { /* Box-Muller */
    double u = ((rng_next(r) >> 11) + 0.5) * 0x1.0p-53, v = (rng_next(r) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u)) * cos(2.0 * 3.14159265358979323846 * v);
}

/* The 2-D weights' type and recipe, and what the recipe needs to know. */
typedef struct synth_types { kv_dtype type; kv_quant_mix mix; int n_layers, tied; } synth_types;

static int synth_matrix(kv_gguf_writer *w, const char *name, int64_t rows, int64_t cols, const synth_types *st,
                        float std, rng *r) {
    const kv_dtype type = kv_quant_mix_type(st->mix, st->type, name, st->n_layers, st->tied);
    float *f = malloc((size_t)(rows * cols) * sizeof *f);
    if (!f) return kv_errorf(KV_ENOMEM, "out of memory for %s", name);
    for (int64_t i = 0; i < rows * cols; i++) f[i] = (float)(rng_normal(r) * std);
    kv_tensor t = {.type = KV_F32, .rows = rows, .cols = cols, .data = f};
    int rc = kv_export_matrix(w, name, &t, type, NULL);
    free(f);
    return rc;
}

static int synth_norm(kv_gguf_writer *w, const char *name, int64_t n, rng *r) {
    float *f = malloc((size_t)n * sizeof *f);
    if (!f) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) f[i] = (float)(1.0 + 0.1 * rng_normal(r));
    uint64_t ne[1] = {(uint64_t)n};
    int rc = kv_gguf_writer_add_tensor(w, name, KV_F32, 1, ne, f);
    free(f);
    return rc;
}

/* <unk>, <s>, </s>, the 256 byte tokens when they fit, then made-up pieces. */
static int synth_vocab(kv_gguf_writer *w, int32_t n) {
    char **p = calloc((size_t)n, sizeof *p);
    size_t *len = calloc((size_t)n, sizeof *len);
    float *sc = malloc((size_t)n * sizeof *sc);
    int32_t *ty = malloc((size_t)n * sizeof *ty);
    int rc = KV_OK;
    if (!p || !len || !sc || !ty) {
        rc = kv_errorf(KV_ENOMEM, "out of memory");
        goto out;
    }
    int bytes = n >= 259 + 16;
    for (int32_t i = 0; i < n; i++) {
        char buf[32];
        if (i < 3) snprintf(buf, sizeof buf, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else if (bytes && i < 259) snprintf(buf, sizeof buf, "<0x%02X>", i - 3);
        else snprintf(buf, sizeof buf, "\xe2\x96\x81t%d", (int)i);
        p[i] = strdup(buf);
        if (!p[i]) {
            rc = kv_errorf(KV_ENOMEM, "out of memory");
            goto out;
        }
        len[i] = strlen(buf);
        sc[i] = -(float)i;
        ty[i] = i == 0 ? 2 : i < 3 ? 3 : (bytes && i < 259) ? 6 : 1;
    }
    if ((rc = kv_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama")) ||
        (rc = kv_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)p, len, (uint64_t)n)) ||
        (rc = kv_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", sc, (uint64_t)n)) ||
        (rc = kv_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", ty, (uint64_t)n)) ||
        (rc = kv_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1)) ||
        (rc = kv_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2)))
        goto out;
out:
    if (p)
        for (int32_t i = 0; i < n; i++) free(p[i]);
    free(p);
    free(len);
    free(sc);
    free(ty);
    return rc;
}

int hx_cmd_synth(int argc, char **argv, int help) {
    kv_model_info i = {.dim = 768, .hidden_dim = 0, .n_layers = 12, .n_heads = 12, .n_kv_heads = 0,
                       .vocab_size = 32000, .ctx_len = 2048, .rope_base = 10000.0f, .norm_eps = 1e-5f,
                       .max_alibi_bias = 8.0f};
    const char *type_name = "f32", *arch = "llama";
    uint64_t seed = 1;
    int untied = 0;
    float std = 0.02f;
    hx_opt opts[] = {
        {"dim", 0, HX_OPT_INT, &i.dim, "N", "embedding width (default 768)"},
        {"arch", 0, HX_OPT_STR, &arch, "A", "llama (default) or mpt (LayerNorm, ALiBi, GELU MLP, fused QKV)"},
        {"hidden", 0, HX_OPT_INT, &i.hidden_dim, "N", "MLP width (default 2048; mpt: 4 x dim)"},
        {"layers", 0, HX_OPT_INT, &i.n_layers, "N", "blocks (default 12)"},
        {"heads", 0, HX_OPT_INT, &i.n_heads, "N", "query heads (default 12)"},
        {"kv-heads", 0, HX_OPT_INT, &i.n_kv_heads, "N", "key/value heads (default: = heads)"},
        {"vocab", 0, HX_OPT_INT, &i.vocab_size, "N", "vocabulary (default 32000)"},
        {"ctx", 0, HX_OPT_INT, &i.ctx_len, "N", "context length (default 2048)"},
        {"rope-base", 0, HX_OPT_FLOAT, &i.rope_base, "F", "rotary base (default 10000)"},
        {"alibi-max", 0, HX_OPT_FLOAT, &i.max_alibi_bias, "F", "mpt: max_alibi_bias (default 8)"},
        {"clamp-kqv", 0, HX_OPT_FLOAT, &i.clamp_kqv, "F", "mpt: clamp_kqv (default 0: none)"},
        {"type", 0, HX_OPT_STR, &type_name, "TYPE", "2-D weight type: " TYPE_LIST},
        {"untied", 0, HX_OPT_FLAG, &untied, NULL, "separate output matrix (default: tied)"},
        {"std", 0, HX_OPT_FLOAT, &std, "F", "weight standard deviation (default 0.02)"},
        {"seed", 's', HX_OPT_U64, &seed, "S", "random seed (default 1)"},
    };
    if (help) {
        printf("usage: kvbench synth OUT.gguf [--arch llama|mpt --dim N --hidden N --layers N --heads N --kv-heads N\n"
               "                    --vocab N --type T]\n\n"
               "Writes a Llama (or MPT) GGUF with seeded random weights (defaults: the\n"
               "110M-parameter benchmark model) and a placeholder vocabulary.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("synth", argc, argv, opts, N_OPTS(opts), pos, 1, &np)) return 2;
    if (np != 1) {
        fprintf(stderr, "kvbench synth: expected the OUT path\n");
        return 2;
    }
    kv_dtype type;
    kv_quant_mix mix;
    if (parse_type("synth", type_name, &type, &mix)) return 2;
    const int mpt = !strcmp(arch, "mpt");
    if (!mpt && strcmp(arch, "llama")) {
        fprintf(stderr, "kvbench synth: --arch: expected llama or mpt, got '%s'\n", arch);
        return 2;
    }
    if (mpt && (!(i.max_alibi_bias > 0) || !(i.clamp_kqv >= 0))) {
        fprintf(stderr, "kvbench synth: expected --alibi-max > 0 and --clamp-kqv >= 0\n");
        return 2;
    }
    if (i.hidden_dim == 0) i.hidden_dim = mpt ? 4 * i.dim : 2048;
    if (i.n_kv_heads == 0) i.n_kv_heads = i.n_heads;
    if (i.dim < 1 || i.hidden_dim < 1 || i.n_layers < 1 || i.n_heads < 1 || i.n_kv_heads < 1 || i.vocab_size < 3 ||
        i.dim % i.n_heads || i.n_heads % i.n_kv_heads || (i.dim / i.n_heads) % 2) {
        fprintf(stderr, "kvbench synth: expected positive sizes, dim a multiple of heads, heads a multiple of "
                        "kv-heads and an even head size\n");
        return 2;
    }
    i.head_dim = i.dim / i.n_heads;
    i.n_rot = i.head_dim;
    i.tied_output = !untied;
    rng r = {seed};
    const synth_types st = {type, mix, i.n_layers, !untied}, *T = &st;
    kv_gguf_writer *w = kv_gguf_writer_new();
    if (!w) return 1;
    int64_t qd = (int64_t)i.n_heads * i.head_dim, kvd = (int64_t)i.n_kv_heads * i.head_dim;
    int rc = (mpt ? kv_export_mpt_meta : kv_export_llama_meta)(w, &i, "kvbench-synthetic");
    if (!rc) rc = synth_vocab(w, i.vocab_size);
    if (!rc) rc = synth_matrix(w, "token_embd.weight", i.vocab_size, i.dim, T, std, &r);
    if (!rc) rc = synth_norm(w, "output_norm.weight", i.dim, &r);
    if (!rc && untied) rc = synth_matrix(w, "output.weight", i.vocab_size, i.dim, T, std, &r);
    char name[96];
    for (int l = 0; l < i.n_layers && !rc; l++) {
#define NAME(s) (snprintf(name, sizeof name, "blk.%d." s ".weight", l), name)
        if (mpt) { /* fused Q, K, V rows; no gate; norms without biases (as MPT-7B) */
            if ((rc = synth_norm(w, NAME("attn_norm"), i.dim, &r)) ||
                (rc = synth_matrix(w, NAME("attn_qkv"), qd + 2 * kvd, i.dim, T, std, &r)) ||
                (rc = synth_matrix(w, NAME("attn_output"), i.dim, qd, T, std, &r)) ||
                (rc = synth_norm(w, NAME("ffn_norm"), i.dim, &r)) ||
                (rc = synth_matrix(w, NAME("ffn_up"), i.hidden_dim, i.dim, T, std, &r)) ||
                (rc = synth_matrix(w, NAME("ffn_down"), i.dim, i.hidden_dim, T, std, &r)))
                break;
            continue;
        }
        if ((rc = synth_norm(w, NAME("attn_norm"), i.dim, &r)) || (rc = synth_norm(w, NAME("ffn_norm"), i.dim, &r)) ||
            (rc = synth_matrix(w, NAME("attn_q"), qd, i.dim, T, std, &r)) ||
            (rc = synth_matrix(w, NAME("attn_k"), kvd, i.dim, T, std, &r)) ||
            (rc = synth_matrix(w, NAME("attn_v"), kvd, i.dim, T, std, &r)) ||
            (rc = synth_matrix(w, NAME("attn_output"), i.dim, qd, T, std, &r)) ||
            (rc = synth_matrix(w, NAME("ffn_gate"), i.hidden_dim, i.dim, T, std, &r)) ||
            (rc = synth_matrix(w, NAME("ffn_down"), i.dim, i.hidden_dim, T, std, &r)) ||
            (rc = synth_matrix(w, NAME("ffn_up"), i.hidden_dim, i.dim, T, std, &r)))
            break;
#undef NAME
    }
    if (!rc) rc = kv_gguf_writer_write(w, pos[0]);
    kv_gguf_writer_free(w);
    if (rc) {
        fprintf(stderr, "kvbench synth: %s\n", kv_last_error());
        return 1;
    }
    printf("wrote %s\n", pos[0]);
    return 0;
}
