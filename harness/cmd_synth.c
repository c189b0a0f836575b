/* cmd_synth.c - `kvbench synth`: a GGUF with seeded random weights and a
 * placeholder vocabulary, in any architecture the engine reads, with the
 * keys and tensor names llama.cpp writes (so both engines load the same
 * file: benchmarks and logit comparisons on models no one can download
 * here). One table says what each architecture adds to Llama's tensors. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "../engine/export.h"
#include "../engine/gguf.h"
#include "../engine/model.h"
#include "commands.h"
#include "opts.h"

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

/* What an architecture adds to Llama's blocks (llama.cpp's tensors). */
enum {
    SY_BIAS = 1u << 0,    /* attn_q/k/v.bias */
    SY_QK_NORM = 1u << 1, /* attn_q_norm, attn_k_norm [head_dim] */
    SY_FUSED = 1u << 2,   /* attn_qkv, ffn_up [2 hidden] (no ffn_gate) */
    SY_POST = 1u << 3,    /* post_attention_norm, post_ffw_norm */
    SY_CAPS = 1u << 4,    /* gemma2's soft-capping keys */
    SY_MPT = 1u << 5,     /* MPT: LayerNorm, fused qkv, GELU MLP without gate, ALiBi */
};

typedef struct synth_arch {
    const char *name;
    unsigned flags;
    int32_t swa; /* default sliding window (0: none) */
} synth_arch;

static const synth_arch ARCHS[] = {
    {"llama", 0, 0},
    {"qwen2", SY_BIAS, 0},
    {"qwen3", SY_QK_NORM, 0},
    {"phi3", SY_FUSED, 0},
    {"gemma2", SY_POST | SY_CAPS, 4096},
    {"gemma3", SY_POST | SY_QK_NORM, 1024},
    {"mpt", SY_MPT, 0},
};

/* The 2-D weights' type and recipe, and what the recipe needs to know. */
typedef struct synth_ctx {
    kv_gguf_writer *w;
    kv_dtype type;
    kv_quant_mix mix;
    int n_layers, tied;
    float std;
    rng r;
} synth_ctx;

static int synth_matrix(synth_ctx *s, const char *name, int64_t rows, int64_t cols) {
    const kv_dtype type = kv_quant_mix_type(s->mix, s->type, name, s->n_layers, s->tied);
    float *f = malloc((size_t)(rows * cols) * sizeof *f);
    if (!f) return kv_errorf(KV_ENOMEM, "out of memory for %s", name);
    for (int64_t i = 0; i < rows * cols; i++) f[i] = (float)(rng_normal(&s->r) * s->std);
    kv_tensor t = {.type = KV_F32, .rows = rows, .cols = cols, .data = f};
    int rc = kv_export_matrix(s->w, name, &t, type, NULL);
    free(f);
    return rc;
}

/* A 1-D F32 vector: base + spread * N(0, 1) (norms: 1 + 0.1 N; biases 0 + 0.02 N). */
static int synth_vector(synth_ctx *s, const char *name, int64_t n, double base, double spread) {
    float *f = malloc((size_t)n * sizeof *f);
    if (!f) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) f[i] = (float)(base + spread * rng_normal(&s->r));
    uint64_t ne[1] = {(uint64_t)n};
    int rc = kv_gguf_writer_add_tensor(s->w, name, KV_F32, 1, ne, f);
    free(f);
    return rc;
}

/* Llama 3.1's rope_freqs.weight for a given factor, as Hugging Face's
 * llama3 rope type defines it (low_freq_factor 1, high_freq_factor 4,
 * original context 8192): 1 for short wavelengths, the factor for long
 * ones, a smooth blend between. */
static int synth_rope_freqs(synth_ctx *s, int n_rot, double base, double factor) {
    const double low = 1.0, high = 4.0, orig = 8192.0, pi = 3.14159265358979323846;
    float *f = malloc((size_t)(n_rot / 2) * sizeof *f);
    if (!f) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int i = 0; i < n_rot / 2; i++) {
        double freq = pow(base, -2.0 * i / n_rot), wavelen = 2 * pi / freq;
        if (wavelen < orig / high) f[i] = 1.0f;
        else if (wavelen > orig / low) f[i] = (float)factor;
        else {
            double smooth = (orig / wavelen - low) / (high - low);
            f[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
    uint64_t ne[1] = {(uint64_t)(n_rot / 2)};
    int rc = kv_gguf_writer_add_tensor(s->w, "rope_freqs.weight", KV_F32, 1, ne, f);
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

static int set_key_u32(kv_gguf_writer *w, const char *arch, const char *key, uint32_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return kv_gguf_writer_set_u32(w, k, v);
}

static int set_key_f32(kv_gguf_writer *w, const char *arch, const char *key, float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return kv_gguf_writer_set_f32(w, k, v);
}

/* The {arch}.* keys of a rotary architecture as llama.cpp's converter writes them. */
static int rotary_meta(kv_gguf_writer *w, const synth_arch *a, const kv_model_info *i) {
    const char *n = a->name;
    int rc;
    if ((rc = kv_gguf_writer_set_str(w, "general.architecture", n)) ||
        (rc = kv_gguf_writer_set_str(w, "general.name", "kvbench-synthetic")) ||
        (rc = set_key_u32(w, n, "context_length", (uint32_t)i->ctx_len)) ||
        (rc = set_key_u32(w, n, "embedding_length", (uint32_t)i->dim)) ||
        (rc = set_key_u32(w, n, "block_count", (uint32_t)i->n_layers)) ||
        (rc = set_key_u32(w, n, "feed_forward_length", (uint32_t)i->hidden_dim)) ||
        (rc = set_key_u32(w, n, "attention.head_count", (uint32_t)i->n_heads)) ||
        (rc = set_key_u32(w, n, "attention.head_count_kv", (uint32_t)i->n_kv_heads)) ||
        (rc = set_key_f32(w, n, "attention.layer_norm_rms_epsilon", i->norm_eps)) ||
        (rc = set_key_f32(w, n, "rope.freq_base", i->rope_base)) ||
        (rc = set_key_u32(w, n, "rope.dimension_count", (uint32_t)i->n_rot)))
        return rc;
    if (i->head_dim * i->n_heads != i->dim &&
        ((rc = set_key_u32(w, n, "attention.key_length", (uint32_t)i->head_dim)) ||
         (rc = set_key_u32(w, n, "attention.value_length", (uint32_t)i->head_dim))))
        return rc;
    if (i->swa_window > 0 && (rc = set_key_u32(w, n, "attention.sliding_window", (uint32_t)i->swa_window))) return rc;
    if (a->flags & SY_CAPS && ((rc = set_key_f32(w, n, "attn_logit_softcapping", 50.0f)) ||
                               (rc = set_key_f32(w, n, "final_logit_softcapping", 30.0f))))
        return rc;
    return KV_OK;
}

/* One block's tensors. */
static int synth_block(synth_ctx *s, const synth_arch *a, const kv_model_info *i, int l) {
    const int64_t dim = i->dim, hid = i->hidden_dim, hd = i->head_dim;
    const int64_t qd = (int64_t)i->n_heads * hd, kvd = (int64_t)i->n_kv_heads * hd;
    char name[96];
    int rc;
#define NAME(x) (snprintf(name, sizeof name, "blk.%d." x, l), name)
    if (a->flags & SY_MPT) /* fused Q, K, V rows; no gate; norms without biases (as MPT-7B) */
        return (rc = synth_vector(s, NAME("attn_norm.weight"), dim, 1, 0.1)) ||
                       (rc = synth_matrix(s, NAME("attn_qkv.weight"), qd + 2 * kvd, dim)) ||
                       (rc = synth_matrix(s, NAME("attn_output.weight"), dim, qd)) ||
                       (rc = synth_vector(s, NAME("ffn_norm.weight"), dim, 1, 0.1)) ||
                       (rc = synth_matrix(s, NAME("ffn_up.weight"), hid, dim)) ||
                       (rc = synth_matrix(s, NAME("ffn_down.weight"), dim, hid))
                   ? rc
                   : KV_OK;
    if ((rc = synth_vector(s, NAME("attn_norm.weight"), dim, 1, 0.1)) ||
        (rc = synth_vector(s, NAME("ffn_norm.weight"), dim, 1, 0.1)) ||
        (rc = synth_matrix(s, NAME("attn_output.weight"), dim, qd)) ||
        (rc = synth_matrix(s, NAME("ffn_down.weight"), dim, hid)))
        return rc;
    if (a->flags & SY_FUSED) {
        if ((rc = synth_matrix(s, NAME("attn_qkv.weight"), qd + 2 * kvd, dim)) ||
            (rc = synth_matrix(s, NAME("ffn_up.weight"), 2 * hid, dim)))
            return rc;
    } else if ((rc = synth_matrix(s, NAME("attn_q.weight"), qd, dim)) ||
               (rc = synth_matrix(s, NAME("attn_k.weight"), kvd, dim)) ||
               (rc = synth_matrix(s, NAME("attn_v.weight"), kvd, dim)) ||
               (rc = synth_matrix(s, NAME("ffn_gate.weight"), hid, dim)) ||
               (rc = synth_matrix(s, NAME("ffn_up.weight"), hid, dim))) {
        return rc;
    }
    if (a->flags & SY_BIAS && ((rc = synth_vector(s, NAME("attn_q.bias"), qd, 0, 0.02)) ||
                               (rc = synth_vector(s, NAME("attn_k.bias"), kvd, 0, 0.02)) ||
                               (rc = synth_vector(s, NAME("attn_v.bias"), kvd, 0, 0.02))))
        return rc;
    if (a->flags & SY_QK_NORM && ((rc = synth_vector(s, NAME("attn_q_norm.weight"), hd, 1, 0.1)) ||
                                  (rc = synth_vector(s, NAME("attn_k_norm.weight"), hd, 1, 0.1))))
        return rc;
    if (a->flags & SY_POST && ((rc = synth_vector(s, NAME("post_attention_norm.weight"), dim, 1, 0.1)) ||
                               (rc = synth_vector(s, NAME("post_ffw_norm.weight"), dim, 1, 0.1))))
        return rc;
#undef NAME
    return KV_OK;
}

typedef struct synth_opts {
    kv_model_info i;
    const char *type_name, *arch;
    uint64_t seed;
    int untied;
    float std, rope_freqs;
} synth_opts;

/* Checks the sizes and fills in what follows from them. */
static int synth_check(synth_opts *o, const synth_arch *a) {
    kv_model_info *i = &o->i;
    const int mpt = (a->flags & SY_MPT) != 0;
    if (mpt && (!(i->max_alibi_bias > 0) || !(i->clamp_kqv >= 0))) {
        fprintf(stderr, "kvbench synth: expected --alibi-max > 0 and --clamp-kqv >= 0\n");
        return 2;
    }
    if (i->hidden_dim == 0) i->hidden_dim = mpt ? 4 * i->dim : 2048;
    if (i->n_kv_heads == 0) i->n_kv_heads = i->n_heads;
    if (i->head_dim == 0) i->head_dim = i->n_heads > 0 ? i->dim / i->n_heads : 0;
    if (i->swa_window < 0) i->swa_window = a->swa;
    if (i->dim < 1 || i->hidden_dim < 1 || i->n_layers < 1 || i->n_heads < 1 || i->n_kv_heads < 1 || i->vocab_size < 3 ||
        i->head_dim < 2 || i->n_heads % i->n_kv_heads || i->head_dim % 2 ||
        ((mpt || !strcmp(a->name, "llama")) && i->head_dim * i->n_heads != i->dim)) {
        fprintf(stderr, "kvbench synth: expected positive sizes, heads a multiple of kv-heads, an even head size and "
                        "(llama, mpt) dim = heads x head size\n");
        return 2;
    }
    if (o->rope_freqs != 0 && (strcmp(a->name, "llama") || o->rope_freqs < 1)) {
        fprintf(stderr, "kvbench synth: --rope-freqs: a llama factor >= 1 (Llama 3.1: 8)\n");
        return 2;
    }
    i->n_rot = i->head_dim;
    i->tied_output = !o->untied;
    return 0;
}

static int synth_write(const synth_opts *o, const synth_arch *a, kv_dtype type, kv_quant_mix mix, const char *out) {
    const kv_model_info *i = &o->i;
    synth_ctx s = {kv_gguf_writer_new(), type, mix, i->n_layers, !o->untied, o->std, {o->seed}};
    if (!s.w) return kv_errorf(KV_ENOMEM, "out of memory");
    int rc = a->flags & SY_MPT ? kv_export_mpt_meta(s.w, i, "kvbench-synthetic") : rotary_meta(s.w, a, i);
    if (!rc) rc = synth_vocab(s.w, i->vocab_size);
    if (!rc) rc = synth_matrix(&s, "token_embd.weight", i->vocab_size, i->dim);
    if (!rc) rc = synth_vector(&s, "output_norm.weight", i->dim, 1, 0.1);
    if (!rc && o->untied) rc = synth_matrix(&s, "output.weight", i->vocab_size, i->dim);
    if (!rc && o->rope_freqs > 0) rc = synth_rope_freqs(&s, i->n_rot, i->rope_base, o->rope_freqs);
    for (int l = 0; l < i->n_layers && !rc; l++) rc = synth_block(&s, a, i, l);
    if (!rc) rc = kv_gguf_writer_write(s.w, out);
    kv_gguf_writer_free(s.w);
    return rc;
}

int hx_cmd_synth(int argc, char **argv, int help) {
    synth_opts o = {.i = {.dim = 768, .n_layers = 12, .n_heads = 12, .vocab_size = 32000, .ctx_len = 2048,
                          .rope_base = 10000.0f, .norm_eps = 1e-5f, .max_alibi_bias = 8.0f, .swa_window = -1},
                    .type_name = "f32", .arch = "llama", .seed = 1, .std = 0.02f};
    kv_model_info *i = &o.i;
    hx_opt opts[] = {
        {"dim", 0, HX_OPT_INT, &i->dim, "N", "embedding width (default 768)"},
        {"arch", 0, HX_OPT_STR, &o.arch, "A", "llama (default), qwen2, qwen3, phi3, gemma2, gemma3 or mpt"},
        {"hidden", 0, HX_OPT_INT, &i->hidden_dim, "N", "MLP width (default 2048; mpt: 4 x dim)"},
        {"layers", 0, HX_OPT_INT, &i->n_layers, "N", "blocks (default 12)"},
        {"heads", 0, HX_OPT_INT, &i->n_heads, "N", "query heads (default 12)"},
        {"kv-heads", 0, HX_OPT_INT, &i->n_kv_heads, "N", "key/value heads (default: = heads)"},
        {"head-dim", 0, HX_OPT_INT, &i->head_dim, "N", "head size (default dim / heads; qwen3, gemma: key_length)"},
        {"vocab", 0, HX_OPT_INT, &i->vocab_size, "N", "vocabulary (default 32000)"},
        {"ctx", 0, HX_OPT_INT, &i->ctx_len, "N", "context length (default 2048)"},
        {"rope-base", 0, HX_OPT_FLOAT, &i->rope_base, "F", "rotary base (default 10000)"},
        {"rope-freqs", 0, HX_OPT_FLOAT, &o.rope_freqs, "F", "llama: Llama 3.1's rope_freqs.weight for factor F (8)"},
        {"swa", 0, HX_OPT_INT, &i->swa_window, "N", "gemma: sliding window (default 4096 gemma2, 1024 gemma3)"},
        {"alibi-max", 0, HX_OPT_FLOAT, &i->max_alibi_bias, "F", "mpt: max_alibi_bias (default 8)"},
        {"clamp-kqv", 0, HX_OPT_FLOAT, &i->clamp_kqv, "F", "mpt: clamp_kqv (default 0: none)"},
        {"type", 0, HX_OPT_STR, &o.type_name, "TYPE", "2-D weight type: " TYPE_LIST},
        {"untied", 0, HX_OPT_FLAG, &o.untied, NULL, "separate output matrix (default: tied)"},
        {"std", 0, HX_OPT_FLOAT, &o.std, "F", "weight standard deviation (default 0.02)"},
        {"seed", 's', HX_OPT_U64, &o.seed, "S", "random seed (default 1)"},
    };
    if (help) {
        printf("usage: kvbench synth OUT.gguf [--arch A --dim N --hidden N --layers N --heads N --kv-heads N\n"
               "                    --head-dim N --vocab N --type T --rope-freqs F --swa N]\n\n"
               "Writes a GGUF with seeded random weights (defaults: the 110M-parameter Llama\n"
               "benchmark model) and a placeholder vocabulary, with the keys and tensors\n"
               "llama.cpp writes for the architecture.\n\n");
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
    if (hx_parse_weight_type("synth", o.type_name, &type, &mix)) return 2;
    const synth_arch *a = NULL;
    for (size_t k = 0; k < sizeof ARCHS / sizeof *ARCHS; k++)
        if (!strcmp(ARCHS[k].name, o.arch)) a = &ARCHS[k];
    if (!a) {
        fprintf(stderr, "kvbench synth: --arch: expected llama, qwen2, qwen3, phi3, gemma2, gemma3 or mpt, got '%s'\n",
                o.arch);
        return 2;
    }
    if (synth_check(&o, a)) return 2;
    if (synth_write(&o, a, type, mix, pos[0])) {
        fprintf(stderr, "kvbench synth: %s\n", kv_last_error());
        return 1;
    }
    printf("wrote %s\n", pos[0]);
    return 0;
}
