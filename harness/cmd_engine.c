/* cmd_engine.c - the subcommands that run the engine directly: info,
 * tokenize, generate, logits, perplexity and bench. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../datasets/dataset.h"
#include "../engine/context.h"
#include "../engine/kernels.h"
#include "../base/file.h"
#include "../base/kv_error.h"
#include "../engine/model.h"
#include "../engine/sampler.h"
#include "../metrics/kld.h"
#include "../metrics/stats.h"
#include "../policies/policy.h"
#include "../policies/sentinel_proxy.h"
#include "../base/clock.h"
#include "commands.h"
#include "driver.h"
#include "opts.h"
#include "membw.h"
#include "paths.h"
#include "record.h"


/* Options every engine command shares. */
typedef struct model_args {
    const char *model;
    const char *tokenizer;
    int threads;
    const char *gelu; /* MPT's GELU: tanh (default) or erf */
    const char *kernels; /* float (default) or int8 */
    const char *kv_type; /* the cache's storage: f32 (default), f16, q8_0 */
    kv_cache_type kvt;   /* kv_type parsed by load_model */
} model_args;

#define MODEL_OPTS(a)                                                                         \
    {"model", 'm', HX_OPT_STR, &(a).model, "PATH", "model file (GGUF or llama2.c .bin)"},     \
    {"tokenizer", 'z', HX_OPT_STR, &(a).tokenizer, "PATH", "tokenizer: llama2.c .bin, GGUF, or a folder with GPT-2's encoder.json + vocab.bpe"}, \
    {"threads", 't', HX_OPT_INT, &(a).threads, "N", "threads (default: all cores; one for a model under 8 MB of weights)"},          \
    {"gelu", 0, HX_OPT_STR, &(a).gelu, "tanh|erf", "MPT models: GELU form (default tanh, as llama.cpp; erf as HF)"}, \
    {"kernels", 0, HX_OPT_STR, &(a).kernels, "int8|float", "Q8_0/Q4_0/K-quant products: fp32 activations (default) or int8 activation blocks as llama.cpp (decode about 2x faster on K-quants, prefill slower on Q8_0/Q4_0: each prompt token computed as a decode step, so chunking changes nothing; KVBENCH_KERNELS sets the default)"}

/* --kv-type, for the commands that run the model over a cache. */
#define KV_TYPE_OPT(a)                                                                              \
    {"kv-type", 0, HX_OPT_STR, &(a).kv_type, "f32|f16|q8_0",                                        \
     "KV cache storage, as llama.cpp's --cache-type-k/v (default f32; q8_0 needs head_dim % 32 == 0)"}

/* need_tokenizer: 1 required, 0 not loaded, 2 loaded when the model has
 * one (a policy may look tokens up: sentinel's <CL>, <CR>). */
static int load_model(const char *cmd, model_args *a, int need_tokenizer, kv_model **m) {
    if (!a->model) {
        fprintf(stderr, "kvbench %s: --model PATH is required\n", cmd);
        return -1;
    }
    char mp[4096], tp[4096];
    kv_model_params p = kv_model_default_params();
    if (a->tokenizer) p.tokenizer_path = hx_resolve_model(a->tokenizer, tp, sizeof tp);
    p.no_tokenizer = !need_tokenizer && !a->tokenizer;
    if (a->gelu && kv_gelu_parse(a->gelu, &p.gelu)) {
        fprintf(stderr, "kvbench %s: --%s\n", cmd, kv_last_error());
        return -1;
    }
    if (a->kv_type && kv_cache_type_parse(a->kv_type, &a->kvt)) {
        fprintf(stderr, "kvbench %s: --%s\n", cmd, kv_last_error());
        return -1;
    }
    kv_kernel_mode km;
    if (kv_kernels_env_mode(&km)) {
        fprintf(stderr, "kvbench %s: %s\n", cmd, kv_last_error());
        return -1;
    }
    if (a->kernels) {
        if (kv_kernel_mode_parse(a->kernels, &km)) {
            fprintf(stderr, "kvbench %s: --%s\n", cmd, kv_last_error());
            return -1;
        }
        kv_kernels_set_mode(km);
    }
    if (hx_weights_mmap(&p.weights_mmap)) {
        fprintf(stderr, "kvbench %s: %s\n", cmd, kv_last_error());
        return -1;
    }
    int rc = kv_model_load(hx_resolve_model(a->model, mp, sizeof mp), &p, m);
    if (rc) {
        fprintf(stderr, "kvbench %s: %s\n", cmd, kv_last_error());
        return -1;
    }
    if (need_tokenizer == 1 && !kv_model_tokenizer(*m)) {
        fprintf(stderr, "kvbench %s: %s has no tokenizer; give one with --tokenizer\n", cmd, mp);
        kv_model_free(*m);
        return -1;
    }
    return 0;
}

static int new_ctx_ext(const char *cmd, const kv_model *m, int threads, kv_cache_type kvt, int swa_keep, kv_ctx **c) {
    kv_ctx_params p = kv_ctx_default_params();
    p.n_threads = threads;
    p.kv_type = kvt;
    p.swa_keep = swa_keep;
    if (kv_ctx_new(m, &p, c)) {
        fprintf(stderr, "kvbench %s: %s\n", cmd, kv_last_error());
        return -1;
    }
    return 0;
}

static int new_ctx(const char *cmd, const kv_model *m, int threads, kv_cache_type kvt, kv_ctx **c) {
    return new_ctx_ext(cmd, m, threads, kvt, 0, c);
}

/* The KV policy options shared by generate and logits. */
typedef struct policy_args {
    const char *name;   /* default "full" */
    const char *budget; /* "512", "60%", "none" */
    const char *set;    /* "k=v,k=v" */
    uint64_t seed;
} policy_args;

#define POLICY_OPTS(a)                                                                                  \
    {"policy", 0, HX_OPT_STR, &(a).name, "NAME", "KV cache policy (see 'kvbench list policies'; default full)"}, \
    {"budget", 'b', HX_OPT_STR, &(a).budget, "B", "KV budget: tokens per layer and KV head (512) or % of the prompt (60%)"}, \
    {"set", 0, HX_OPT_STR, &(a).set, "K=V,...", "policy parameters, comma-separated"}

/* Creates the policy (NULL for full without a budget). Prints the error. */
static int make_policy(const char *cmd, const policy_args *a, const kv_model *m, kv_policy **out) {
    *out = NULL;
    const char *name = a->name ? a->name : "full";
    pol_budget b = {POL_BUDGET_NONE, 0};
    if (a->budget && pol_budget_parse(a->budget, &b)) goto fail;
    const char *set[POL_MAX_PARAMS];
    int n_set = 0;
    char buf[512] = "";
    if (a->set) {
        snprintf(buf, sizeof buf, "%s", a->set);
        for (char *tok = strtok(buf, ","); tok && n_set < POL_MAX_PARAMS; tok = strtok(NULL, ",")) set[n_set++] = tok;
    }
    if (pol_new(name, set, n_set, &b, a->seed, kv_model_get_info(m), out)) goto fail;
    if (pol_check_model(*out, m)) {
        pol_free(*out);
        *out = NULL;
        goto fail;
    }
    return 0;
fail:
    fprintf(stderr, "kvbench %s: %s\n", cmd, kv_last_error());
    return -1;
}

/* Encodes text (the driver's tokenizing). *ids is malloc'd, also on failure. */
static int encode(const kv_tokenizer *t, const char *text, size_t len, int bos, int32_t **ids, size_t *n) {
    hx_tokbuf tb = {.tok = t};
    int64_t k = hx_tokbuf_encode(&tb, text, len, bos);
    *ids = tb.buf;
    *n = k < 0 ? 0 : (size_t)k;
    return k < 0 ? (int)k : KV_OK;
}

/* Reads a whole file (base/file.h's reader: one implementation). */
static char *read_file(const char *path, size_t *len) {
    char *b;
    kv_read_file(path, &b, len);
    return b;
}

/* ------------------------------------------------------------------ info */

/* The rotary settings of `kvbench info`: pairing, scaling, per-layer
 * windows, soft caps, the query scale. */
static void print_rotary(const kv_model *m) {
    const kv_model_info *i = kv_model_get_info(m);
    char swa[256];
    kv_model_swa_layers(m, swa, sizeof swa);
    printf("n_rot         %d\nrope_base     %g\nrope_pairing  %s\n", i->n_rot, (double)i->rope_base,
           kv_rope_pair_name(i->rope_pair));
    printf("rope_scaling  %s", kv_rope_scaling_name(i->rope_scaling));
    if (i->rope_scaling) printf(" (factor %g, original context %d)", (double)i->rope_factor, i->rope_orig_ctx);
    printf("%s\n", i->rope_freq_factors ? ", per-pair factors" : "");
    if (i->rope_attn_factor != 1.0f) printf("rope_attn_factor %g\n", (double)i->rope_attn_factor);
    if (i->n_swa_layers)
        printf("sliding_window %d tokens on %d of %d layers (%s; base %g)\n", i->swa_window, i->n_swa_layers,
               i->n_layers, swa, (double)i->rope_base_swa);
    printf("attn_scale    %g\n", (double)i->attn_scale);
    if (i->attn_softcap > 0 || i->final_softcap > 0)
        printf("softcap       attention %g, output %g\n", (double)i->attn_softcap, (double)i->final_softcap);
    if (i->embd_scale != 1.0f) printf("embd_scale    %g\n", (double)i->embd_scale);
    printf("mlp           %s\n", i->ffn_act == KV_ACT_GELU ? "geglu (gelu tanh)" : "swiglu");
}

int hx_cmd_info(int argc, char **argv, int help) {
    model_args a = {0};
    hx_opt opts[] = {MODEL_OPTS(a)};
    if (help) {
        printf("usage: kvbench info --model PATH\n\nPrints the architecture, sizes, parameter count and bytes of a model.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("info", argc, argv, opts, N_OPTS(opts), pos, 1, &np)) return 2;
    if (np == 1 && !a.model) a.model = pos[0];
    kv_model *m;
    if (load_model("info", &a, 0, &m)) return 1;
    const kv_model_info *i = kv_model_get_info(m);
    printf("file          %s\n", kv_model_path(m));
    printf("format        %s\n", kv_model_format_name(i->format));
    printf("architecture  %s\n", kv_arch_name(i->arch));
    printf("dim           %d\nhidden_dim    %d\nn_layers      %d\nn_heads       %d\nn_kv_heads    %d\n",
           i->dim, i->hidden_dim, i->n_layers, i->n_heads, i->n_kv_heads);
    printf("head_dim      %d\nvocab_size    %d\nctx_len       %d\n", i->head_dim, i->vocab_size, i->ctx_len);
    if (i->arch == KV_ARCH_MPT)
        printf("positions     alibi (max_alibi_bias %g)\nclamp_kqv     %g\ngelu          %s\nnorm          layernorm\n",
               (double)i->max_alibi_bias, (double)i->clamp_kqv, kv_gelu_name(i->gelu));
    else
        print_rotary(m);
    printf("norm_eps      %g\n", (double)i->norm_eps);
    printf("tied_output   %s\nweight_type   %s\nparameters    %lld\nweight_bytes  %zu\n", i->tied_output ? "yes" : "no",
           kv_dtype_name(i->wtype), (long long)i->n_params, i->weight_bytes);
    const kv_filemap *fm = kv_model_file(m);
    printf("file_held     %s (%zu bytes, %zu in 2 MB pages)\n", kv_filemap_mode_name(fm->mode), fm->size,
           kv_filemap_huge_bytes(fm));
    kv_model_free(m);
    return 0;
}

/* -------------------------------------------------------------- tokenize */

/* Whether path starts with the GGUF magic. */
static int is_gguf(const char *path) {
    char magic[4];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int yes = fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;
    fclose(f);
    return yes;
}

/* CPU seconds this thread has run: what a pass costs one core, however
 * busy the machine is. */
static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* `tokenize --bench FILE`: encode speed on one thread. The file is encoded
 * whole, at least 3 times and for at least a second of CPU time; the
 * fastest pass is reported, by the thread's CPU time (MB per second of one
 * core) and by the wall clock (lower when other work shares the core). */
static int tokenize_bench(const kv_tokenizer *t, const char *path) {
    size_t len;
    char *text = read_file(path, &len);
    if (!text) {
        fprintf(stderr, "kvbench tokenize: %s\n", kv_last_error());
        return 1;
    }
    double best_cpu = 0, best_wall = 0, total = 0;
    size_t n = 0;
    int passes = 0;
    for (; passes < 3 || total < 1.0; passes++) {
        int32_t *ids;
        double w0 = kv_now_s(), c0 = thread_cpu_s();
        int rc = encode(t, text, len, 0, &ids, &n);
        double cpu = thread_cpu_s() - c0, wall = kv_now_s() - w0;
        if (rc) {
            fprintf(stderr, "kvbench tokenize: %s\n", kv_last_error());
            free(text);
            return 1;
        }
        free(ids);
        total += cpu;
        if (passes == 0 || cpu < best_cpu) best_cpu = cpu;
        if (passes == 0 || wall < best_wall) best_wall = wall;
    }
    printf("%s: %zu bytes, %zu tokens (%.2f bytes/token)\n", path, len, n, n ? (double)len / (double)n : 0.0);
    printf("encode: %.2f MB/s per core (fastest of %d passes: %.4f s of CPU), %.2f MB/s by the wall clock\n",
           best_cpu > 0 ? len / best_cpu / 1e6 : 0.0, passes, best_cpu, best_wall > 0 ? len / best_wall / 1e6 : 0.0);
    free(text);
    return 0;
}

int hx_cmd_tokenize(int argc, char **argv, int help) {
    model_args a = {0};
    const char *text = NULL, *bench = NULL;
    int bos = 0;
    hx_opt opts[] = {MODEL_OPTS(a), {"text", 0, HX_OPT_STR, &text, "TEXT", "text to encode"},
                     {"bos", 0, HX_OPT_FLAG, &bos, NULL, "prepend BOS"},
                     {"bench", 0, HX_OPT_STR, &bench, "FILE", "print encode speed (MB/s, one thread) on FILE instead"}};
    if (help) {
        printf("usage: kvbench tokenize --model PATH --text TEXT [--bos]\n"
               "       kvbench tokenize --tokenizer PATH --text TEXT [--bos]\n"
               "       kvbench tokenize --tokenizer PATH --bench FILE\n\n"
               "Prints one line per token: id and vocabulary entry. A GGUF file needs only its\n"
               "tokenizer (vocabulary-only files work); --tokenizer alone reads a GGUF file, a\n"
               "Hugging Face tokenizer.json folder or a folder with GPT-2's encoder.json +\n"
               "vocab.bpe. --bench encodes FILE whole, at least 3 times and for at least a\n"
               "CPU second, on one thread, and prints the fastest pass in MB/s per core (CPU\n"
               "time) and by the wall clock.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("tokenize", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    if (!text == !bench) {
        fprintf(stderr, "kvbench tokenize: give --text TEXT or --bench FILE\n");
        return 2;
    }
    kv_model *m = NULL;
    kv_tokenizer *own = NULL;
    char mp[4096], tp[4096];
    const char *tok_only = NULL; /* a file to read just the tokenizer from */
    if (a.tokenizer && !a.model) tok_only = hx_resolve_model(a.tokenizer, tp, sizeof tp);
    else if (a.model && !a.tokenizer && is_gguf(hx_resolve_model(a.model, mp, sizeof mp))) tok_only = mp;
    if (tok_only) {
        if (kv_tokenizer_load(tok_only, 0, &own)) {
            fprintf(stderr, "kvbench tokenize: %s%s\n", kv_last_error(),
                    a.tokenizer && !a.model ? " (a llama2.c tokenizer needs --model for its size)" : "");
            return 1;
        }
    } else if (load_model("tokenize", &a, 1, &m)) {
        return 1;
    }
    const kv_tokenizer *t = own ? own : kv_model_tokenizer(m);
    int32_t *ids;
    size_t n;
    int rc = 0;
    if (bench) {
        rc = tokenize_bench(t, bench);
    } else if (encode(t, text, strlen(text), bos, &ids, &n)) {
        fprintf(stderr, "kvbench tokenize: %s\n", kv_last_error());
        rc = 1;
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *p = kv_tokenizer_token_text(t, ids[i], &len);
            printf("%d\t%.*s\n", ids[i], (int)len, p);
        }
        free(ids);
    }
    kv_tokenizer_free(own);
    kv_model_free(m);
    return rc;
}

/* -------------------------------------------------------------- generate */

/* Each generated piece as it comes. */
static void print_piece(void *user, const char *piece, size_t len) {
    (void)user;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
}

/* The statistics line of `kvbench generate` (stderr). */
static void print_gen_stats(const hx_engine *en, const kv_policy *pol, size_t n_prompt, const hx_gen_result *g) {
    kv_cache *cache = kv_ctx_cache(en->ctx);
    double t_prefill = g->prefill_ms / 1e3, t_decode = g->decode_ms / 1e3;
    char bs[32], lim[32];
    if (pol_limit(pol) == INT32_MAX) snprintf(lim, sizeof lim, "unlimited");
    else snprintf(lim, sizeof lim, "%d", pol_limit(pol));
    fprintf(stderr,
            "kvbench: prompt %zu tokens (%.1f tok/s), generated %d tokens (%.1f tok/s), "
            "policy %s budget %s (%s slots per layer and KV head), KV cache %lld slots (at most %d in one head), "
            "%zu bytes held (peak %zu)\n",
            n_prompt, n_prompt / (t_prefill > 0 ? t_prefill : 1e-9), g->n,
            g->n > 1 ? (g->n - 1) / (t_decode > 0 ? t_decode : 1e-9) : 0.0, pol_name(pol),
            pol_budget_str(pol_get_budget(pol), bs, sizeof bs), lim,
            (long long)kv_cache_total_slots(cache), kv_cache_max_len(cache), kv_cache_bytes(cache),
            kv_cache_peak_bytes(cache));
}

int hx_cmd_generate(int argc, char **argv, int help) {
    model_args a = {0};
    const char *prompt = "";
    int n_new = 256;
    kv_sampler_params sp = kv_sampler_default_params();
    int quiet = 0;
    policy_args pa = {0};
    hx_opt opts[] = {
        MODEL_OPTS(a),
        KV_TYPE_OPT(a),
        POLICY_OPTS(pa),
        {"prompt", 'p', HX_OPT_STR, &prompt, "TEXT", "prompt (default: empty, i.e. start from BOS)"},
        {"n", 'n', HX_OPT_INT, &n_new, "N", "tokens to generate at most (default 256)"},
        {"temp", 0, HX_OPT_FLOAT, &sp.temperature, "T", "temperature (default 0 = greedy)"},
        {"top-k", 0, HX_OPT_INT, &sp.top_k, "K", "keep the K most likely tokens (0 = off)"},
        {"top-p", 0, HX_OPT_FLOAT, &sp.top_p, "P", "nucleus sampling mass (1 = off)"},
        {"seed", 's', HX_OPT_U64, &sp.seed, "S", "random seed (default 42)"},
        {"quiet", 'q', HX_OPT_FLAG, &quiet, NULL, "print only the generated text"},
    };
    if (help) {
        printf("usage: kvbench generate --model PATH [--prompt TEXT] [-n N] [--temp T --top-k K --top-p P --seed S]\n\n"
               "Prints the prompt and its continuation; statistics (speed, KV bytes held) go to stderr.\n"
               "Generation stops after N tokens or at an end-of-sequence (or BOS) token.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("generate", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    if (n_new < 0) {
        fprintf(stderr, "kvbench generate: -n: expected a value >= 0, got %d\n", n_new);
        return 2;
    }
    kv_model *m;
    if (load_model("generate", &a, 1, &m)) return 1;
    hx_engine en;
    kv_sampler *s = NULL;
    kv_policy *pol = NULL;
    hx_tokbuf tb = {.tok = kv_model_tokenizer(m)};
    hx_gen_result g = {0};
    int status = 1;
    pa.seed = sp.seed;
    if (hx_engine_open(&en, m, a.threads, a.kvt)) {
        fprintf(stderr, "kvbench generate: %s\n", kv_last_error());
        goto out;
    }
    if (make_policy("generate", &pa, m, &pol)) goto out;
    /* generate stops where run's tasks do: at BOS and at every end token
     * the vocabulary marks (EOS, and a chat model's end of turn), as
     * llama.cpp stops at its end-of-generation tokens */
    int64_t n_prompt = hx_tokbuf_encode(&tb, prompt, strlen(prompt), 1);
    if (n_prompt < 0 || kv_sampler_new(&sp, en.mi->vocab_size, &s)) {
        fprintf(stderr, "kvbench generate: %s\n", kv_last_error());
        goto out;
    }
    if (!quiet) fputs(prompt, stdout);
    hx_gen_params gp = {.max_new = n_new, .stop_id = -1, .sampler = s, .on_piece = print_piece};
    if (hx_drv_generate(&en, pol, tb.buf, (int32_t)n_prompt, &gp, &g)) {
        fprintf(stderr, "\nkvbench generate: %s\n", kv_last_error());
        goto out;
    }
    printf("\n");
    fflush(stdout);
    print_gen_stats(&en, pol, (size_t)n_prompt, &g);
    status = 0;
out:
    hx_gen_free(&g);
    free(tb.buf);
    kv_sampler_free(s);
    hx_engine_close(&en);
    pol_free(pol);
    kv_model_free(m);
    return status;
}

/* ---------------------------------------------------------------- logits */

static int parse_tokens(const char *s, int32_t **out, int32_t *n) {
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    while (v && *s) {
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (end == s || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return kv_errorf(KV_EINVAL, "--tokens: expected comma-separated token ids at '%.20s'", s);
        }
        if (k == cap) {
            int32_t *b = realloc(v, (cap *= 2) * sizeof *v);
            if (!b) free(v);
            v = b;
            if (!v) break;
        }
        v[k++] = (int32_t)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            free(v);
            return kv_errorf(KV_EINVAL, "--tokens: unexpected '%c'", *end);
        }
    }
    if (!v) return kv_errorf(KV_ENOMEM, "out of memory");
    *out = v;
    *n = (int32_t)k;
    return KV_OK;
}

int hx_cmd_logits(int argc, char **argv, int help) {
    model_args a = {0};
    const char *tokens = NULL, *text = NULL, *mode = "prefill", *outp = NULL, *record = NULL;
    hx_recorder rec = {0};
    policy_args pa = {.seed = 42};
    int32_t n_prompt = 0;
    int swa_keep = 0, stats = 0;
    hx_opt opts[] = {
        MODEL_OPTS(a),
        KV_TYPE_OPT(a),
        POLICY_OPTS(pa),
        {"swa-keep", 0, HX_OPT_FLAG, &swa_keep, NULL, "sliding-window layers keep the slots their window no longer "
         "sees (default: freed; for checking that freeing them changes nothing)"},
        {"stats", 0, HX_OPT_FLAG, &stats, NULL, "print the cache's slots and bytes at the end and at its peak"},
        {"prompt-len", 0, HX_OPT_INT, &n_prompt, "N", "tokens that count as the prompt for % budgets (default: all)"},
        {"record", 0, HX_OPT_STR, &record, "FILE", "record what the policy saw and kept at every layer call"},
        {"tokens", 0, HX_OPT_STR, &tokens, "IDS", "comma-separated token ids"},
        {"text", 0, HX_OPT_STR, &text, "TEXT", "text to tokenize (with BOS) instead of --tokens"},
        {"mode", 0, HX_OPT_STR, &mode, "MODE", "prefill (one call), decode (one token per call) or chunk:N"},
        {"out", 'o', HX_OPT_STR, &outp, "FILE", "output: float32 little-endian [n_tokens][vocab]"},
    };
    if (help) {
        printf("usage: kvbench logits --model PATH (--tokens IDS | --text TEXT) [--mode MODE] --out FILE\n\n"
               "Writes the logits of every position, for checking the engine against a reference.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("logits", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    int chunk;
    if (strcmp(mode, "prefill") == 0) chunk = 0;
    else if (strcmp(mode, "decode") == 0) chunk = 1;
    else if (strncmp(mode, "chunk:", 6) == 0 && (chunk = atoi(mode + 6)) > 0) {
    } else {
        fprintf(stderr, "kvbench logits: --mode: expected prefill, decode or chunk:N, got '%s'\n", mode);
        return 2;
    }
    if (!outp || (!tokens == !text)) {
        fprintf(stderr, "kvbench logits: --out and one of --tokens or --text are required\n");
        return 2;
    }
    kv_model *m;
    if (load_model("logits", &a, text != NULL ? 1 : pa.name ? 2 : 0, &m)) return 1;
    const kv_model_info *mi = kv_model_get_info(m);
    int32_t *ids = NULL, n = 0;
    float *logits = NULL;
    kv_policy *pol = NULL;
    kv_ctx *c = NULL;
    int status = 1;
    size_t nz = 0;
    int rc = tokens ? parse_tokens(tokens, &ids, &n) : encode(kv_model_tokenizer(m), text, strlen(text), 1, &ids, &nz);
    if (rc) {
        fprintf(stderr, "kvbench logits: %s\n", kv_last_error());
        goto out;
    }
    if (!tokens) n = (int32_t)nz;
    if (n == 0) {
        fprintf(stderr, "kvbench logits: no tokens\n");
        goto out;
    }
    if (new_ctx_ext("logits", m, a.threads, a.kvt, swa_keep, &c) || make_policy("logits", &pa, m, &pol)) goto out;
    logits = malloc((size_t)n * mi->vocab_size * sizeof *logits);
    if (!logits) goto out;
    pol_begin(pol, n_prompt > 0 ? n_prompt : n);
    if (record) {
        if (hx_record_attach(&rec, record, pol, c)) goto out;
    } else {
        pol_attach(pol, c);
    }
    int32_t step = chunk ? chunk : n, first = 0;
    if (pol_has_own_prompt_eval(pol)) { /* the method reads the prompt its own way: its last row, then decode */
        if (n_prompt < 1 || n_prompt > n) {
            fprintf(stderr, "kvbench logits: policy %s evaluates the prompt itself: --prompt-len N (1..%d) is "
                    "needed\n", pol_name(pol), n);
            goto out;
        }
        for (size_t i = 0; i < (size_t)(n_prompt - 1) * mi->vocab_size; i++) logits[i] = NAN;
        if (pol_eval_prompt(pol, c, ids, n_prompt, logits + (size_t)(n_prompt - 1) * mi->vocab_size)) {
            fprintf(stderr, "kvbench logits: %s\n", kv_last_error());
            goto out;
        }
        first = n_prompt;
        step = 1;
    }
    int32_t n_spans;
    const int32_t *span_end = pol_sentinel_spans(pol, &n_spans);
    if (span_end) { /* what a reference needs to replay the spans */
        printf("spans");
        for (int32_t i = 0; i < n_spans; i++)
            if (span_end[i] >= 0 && (i == 0 || span_end[i - 1] != span_end[i])) printf(" %d-%d", i, span_end[i]);
        printf("\n");
    }
    for (int32_t i = first; i < n; i += step) {
        int32_t len = n - i < step ? n - i : step;
        if (kv_ctx_eval(c, ids + i, len, logits + (size_t)i * mi->vocab_size, 1)) {
            fprintf(stderr, "kvbench logits: %s\n", kv_last_error());
            goto out;
        }
    }
    FILE *f = fopen(outp, "wb");
    if (!f || fwrite(logits, sizeof *logits, (size_t)n * mi->vocab_size, f) != (size_t)n * mi->vocab_size) {
        fprintf(stderr, "kvbench logits: %s: cannot write: %s\n", outp, strerror(errno));
        if (f) fclose(f);
        goto out;
    }
    if (fclose(f)) {
        fprintf(stderr, "kvbench logits: %s: cannot write: %s\n", outp, strerror(errno));
        goto out;
    }
    if (hx_record_close(&rec)) goto out;
    if (stats) {
        const kv_cache *kc = kv_ctx_cache(c);
        printf("kv_slots %lld\nkv_max_head_slots %d\nkv_bytes %zu\nkv_bytes_peak %zu\n",
               (long long)kv_cache_total_slots(kc), kv_cache_max_len(kc), kv_cache_bytes(kc), kv_cache_peak_bytes(kc));
    }
    status = 0;
out:
    hx_record_close(&rec);
    free(ids);
    free(logits);
    kv_ctx_free(c);
    pol_free(pol);
    kv_model_free(m);
    return status;
}

/* ------------------------------------------------------------ perplexity */

/* What every perplexity protocol reads: the tokenized text and a context. */
typedef struct ppl_input {
    const kv_model *m;
    const kv_model_info *mi;
    const char *path; /* the resolved file, as printed */
    const int32_t *ids;
    size_t n_tok;
    kv_ctx *c;
    hx_engine *en; /* the driver's view of the model and c */
} ppl_input;

/* " policy=P budget=B[ positions=M]": how a policy run is labelled. */
static const char *policy_desc(const kv_policy *pol, char *buf, size_t cap) {
    char bs[32];
    snprintf(buf, cap, " policy=%s budget=%s%s%s", pol_name(pol), pol_budget_str(pol_get_budget(pol), bs, sizeof bs),
             pol_positions(pol) != KV_POS_ORIGINAL ? " positions=" : "",
             pol_positions(pol) != KV_POS_ORIGINAL ? kv_pos_mode_name(pol_positions(pol)) : "");
    return buf;
}

/* --curve: each scored token's position and NLL. */
static void curve_line(void *user, int32_t pos, double nll) { fprintf(user, "%ld %.6f\n", (long)pos, nll); }

/* StreamingLLM's protocol: one token at a time through a single cache that
 * the policy keeps within its budget; every token but the first scored. */
static int ppl_stream(const ppl_input *in, kv_policy *pol, int bos, const char *curve) {
    FILE *cf = NULL;
    int rc = -1;
    if (curve && !(cf = fopen(curve, "w"))) {
        fprintf(stderr, "kvbench perplexity: %s: cannot create: %s\n", curve, strerror(errno));
        return -1;
    }
    hx_nll_params np = {.chunk = 1, .every = 1, .on_nll = cf ? curve_line : NULL, .user = cf};
    double nll, dt;
    if (hx_drv_stream_nll(in->en, pol, in->ids, (int32_t)in->n_tok, &np, &nll, &dt, NULL)) {
        fprintf(stderr, "kvbench perplexity: %s\n", kv_last_error());
        goto out;
    }
    size_t n = in->n_tok - 1;
    char pd[128];
    printf("file %s\ntokens %zu\nscored %zu\nprotocol stream%s%s\n", in->path, in->n_tok, n,
           policy_desc(pol, pd, sizeof pd), bos ? " bos" : "");
    printf("nll %.6f\nppl %.4f\nseconds %.2f\ntokens_per_second %.1f\nkv_bytes_peak %zu\n", nll, exp(nll), dt, n / dt,
           kv_cache_peak_bytes(kv_ctx_cache(in->c)));
    rc = 0;
out:
    if (cf && fclose(cf) != 0 && rc == 0) {
        fprintf(stderr, "kvbench perplexity: %s: write failed\n", curve);
        rc = -1;
    }
    return rc;
}

/* Sliding windows of ctx_len tokens every `stride` tokens, each from an
 * empty cache, scoring only the tokens no earlier window scored. */
static int ppl_sliding(const ppl_input *in, int ctx_len, int stride, int bos) {
    int32_t nv = in->mi->vocab_size;
    float *logits = malloc((size_t)ctx_len * nv * sizeof *logits);
    if (!logits) {
        fprintf(stderr, "kvbench perplexity: out of memory\n");
        return -1;
    }
    double nll = 0, t0 = kv_now_s();
    size_t scored = 0, evaluated = 0, prev_end = 1;
    for (size_t begin = 0;; begin += (size_t)stride) {
        size_t end = begin + (size_t)ctx_len < in->n_tok ? begin + (size_t)ctx_len : in->n_tok;
        kv_ctx_reset(in->c);
        if (kv_ctx_eval(in->c, in->ids + begin, (int32_t)(end - begin), logits, 1)) {
            fprintf(stderr, "kvbench perplexity: %s\n", kv_last_error());
            free(logits);
            return -1;
        }
        evaluated += end - begin;
        for (size_t t = prev_end > begin + 1 ? prev_end : begin + 1; t < end; t++, scored++)
            nll += met_nll(logits + (t - 1 - begin) * (size_t)nv, nv, in->ids[t]);
        prev_end = end;
        if (end == in->n_tok) break;
    }
    double dt = kv_now_s() - t0;
    printf("file %s\ntokens %zu\nscored %zu\nprotocol sliding-window ctx=%d stride=%d%s\n", in->path, in->n_tok,
           scored, ctx_len, stride, bos ? " bos" : "");
    printf("nll %.6f\nppl %.4f\nseconds %.2f\ntokens_per_second %.1f\n", nll / (double)scored,
           exp(nll / (double)scored), dt, evaluated / dt);
    free(logits);
    return 0;
}

/* llama-perplexity's protocol (llama.cpp tools/perplexity/perplexity.cpp,
 * perplexity() and kl_divergence()): the text tokenized once with BOS, cut
 * into non-overlapping chunks of n_ctx tokens; each chunk evaluated from an
 * empty cache with its first token replaced by BOS; the logits at
 * positions first = n_ctx/2 .. n_ctx-2 scored against the tokens
 * first+1 .. n_ctx-1 (the second half: every scored token has at least
 * n_ctx/2 tokens of context). With a policy, positions 0..first are the
 * prompt (the policy compresses it) and the rest are fed one at a time
 * through the policy's cache. */
typedef struct lc_run {
    const ppl_input *in;
    int32_t n_ctx, first, n_scored, nv, bos;
    kv_policy *pol;   /* NULL: the chunk in one pass, no policy */
    kv_ctx *c_base;   /* --kl-divergence: the full cache, one pass (else NULL) */
    int32_t *chunk;   /* [n_ctx] the chunk's tokens, BOS first */
    float *rows;      /* [n_ctx][nv] one-pass logits: the base's, or the result without a policy */
    float *q;         /* [n_scored][nv] the policy's logits at first .. n_ctx-2 */
    met_kld *kld;     /* --kl-divergence statistics */
    double nll, nll2; /* sums over scored tokens, llama.cpp's final estimate */
    size_t count;
    size_t kv_peak; /* the policy's largest cache over chunks */
} lc_run;

/* The whole chunk from an empty cache, every position's logits. */
static int lc_one_pass(lc_run *r, kv_ctx *c) {
    kv_ctx_reset(c);
    return kv_ctx_eval(c, r->chunk, r->n_ctx, r->rows, 1);
}

/* Positions 0..first as the policy's prompt, then first+1 .. n_ctx-2 one
 * at a time; row k of r->q holds the logits at position first + k. */
static int lc_policy_pass(lc_run *r) {
    kv_ctx *c = r->in->c;
    kv_ctx_reset(c);
    pol_begin(r->pol, r->first + 1);
    pol_attach(r->pol, c);
    int rc = pol_eval_prompt(r->pol, c, r->chunk, r->first + 1, r->q);
    for (int32_t k = 1; rc == KV_OK && k < r->n_scored; k++)
        rc = kv_ctx_eval(c, r->chunk + r->first + k, 1, r->q + (size_t)k * r->nv, 0);
    size_t peak = kv_cache_peak_bytes(kv_ctx_cache(c));
    if (peak > r->kv_peak) r->kv_peak = peak;
    return rc;
}

/* Scores the chunk's positions first .. n_ctx-2: q [n_scored][nv] are the
 * logits scored, base [n_scored][nv] the full cache's (NULL without KL). */
static int lc_score(lc_run *r, const float *q, const float *base) {
    for (int32_t k = 0; k < r->n_scored; k++) {
        int32_t target = r->chunk[r->first + k + 1]; /* never the BOS slot: first + 1 >= 1 */
        const float *row = q + (size_t)k * r->nv;
        double v = met_nll(row, r->nv, target);
        r->nll += v;
        r->nll2 += v * v;
        r->count++;
        if (base) {
            int rc = met_kld_add(r->kld, base + (size_t)k * r->nv, row, r->nv, target);
            if (rc) return rc;
        }
    }
    return KV_OK;
}

/* Chunk i: its tokens, the passes its mode needs, its scores. */
static int lc_chunk(lc_run *r, int i) {
    memcpy(r->chunk, r->in->ids + (size_t)i * r->n_ctx, (size_t)r->n_ctx * sizeof *r->chunk);
    if (r->bos >= 0) r->chunk[0] = r->bos;
    int rc;
    if (!r->pol) {
        if ((rc = lc_one_pass(r, r->in->c))) return rc;
        return lc_score(r, r->rows + (size_t)r->first * r->nv, NULL);
    }
    if ((rc = lc_policy_pass(r))) return rc;
    if (r->c_base && (rc = lc_one_pass(r, r->c_base))) return rc;
    return lc_score(r, r->q, r->c_base ? r->rows + (size_t)r->first * r->nv : NULL);
}

/* llama.cpp's timing line after the first chunk. */
static void lc_print_eta(double t_chunk, int n_chunk) {
    printf("perplexity: %.2f seconds per pass - ETA ", t_chunk);
    int total = (int)(t_chunk * n_chunk);
    if (total >= 3600) {
        printf("%d hours ", total / 3600);
        total %= 3600;
    }
    printf("%.2f minutes\n", total / 60.0);
}

/* After chunk i: llama.cpp's running line, "[i]ppl," or a KL table row. */
static void lc_print_running(const lc_run *r, int i) {
    if (r->kld) {
        met_kld_summary s;
        met_kld_moments(r->kld, &s);
        met_kld_print_chunk(stdout, i + 1, &s);
    } else {
        printf("[%d]%.4f,", i + 1, exp(r->nll / (double)r->count));
    }
    fflush(stdout);
}

/* The end: llama.cpp's final estimate, ppl ± ppl · sqrt(var(nll) / (n - 1)),
 * or the --kl-divergence blocks. */
static int lc_print_final(const lc_run *r) {
    printf("\n");
    if (r->kld) {
        met_kld_summary s;
        if (met_kld_summarize(r->kld, &s)) {
            fprintf(stderr, "kvbench perplexity: %s\n", kv_last_error());
            return -1;
        }
        met_kld_print(stdout, &s);
        return 0;
    }
    double n = (double)r->count, mean = r->nll / n, var = r->nll2 / n - mean * mean, ppl = exp(mean);
    if (var > 0) printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, sqrt(var / (n - 1)) * ppl);
    else printf("Final estimate: PPL = %.4f (the log-probabilities do not vary: no error)\n", ppl);
    return 0;
}

/* The buffers and contexts a run needs. */
static int lc_setup(lc_run *r, int threads, int kl) {
    r->chunk = malloc((size_t)r->n_ctx * sizeof *r->chunk);
    r->rows = malloc((size_t)r->n_ctx * r->nv * sizeof *r->rows);
    if (r->pol) r->q = malloc((size_t)r->n_scored * r->nv * sizeof *r->q);
    if (kl) r->kld = met_kld_new();
    if (!r->chunk || !r->rows || (r->pol && !r->q) || (kl && !r->kld)) {
        fprintf(stderr, "kvbench perplexity: out of memory\n");
        return -1;
    }
    return kl ? new_ctx("perplexity", r->in->m, threads, r->in->en->kv_type, &r->c_base) : 0;
}

static void lc_free(lc_run *r) {
    free(r->chunk);
    free(r->rows);
    free(r->q);
    met_kld_free(r->kld);
    kv_ctx_free(r->c_base);
}

static int ppl_llamacpp(const ppl_input *in, kv_policy *pol, int n_ctx, int max_chunks, int kl, int threads) {
    if ((size_t)n_ctx * 2 > in->n_tok) {
        fprintf(stderr, "kvbench perplexity: %s: %zu tokens; the llama.cpp protocol needs at least 2 x ctx = %d\n",
                in->path, in->n_tok, 2 * n_ctx);
        return -1;
    }
    lc_run r = {.in = in, .n_ctx = n_ctx, .first = n_ctx / 2, .nv = in->mi->vocab_size, .pol = pol,
                .bos = kv_tokenizer_bos(kv_model_tokenizer(in->m))};
    r.n_scored = n_ctx - 1 - r.first;
    int n_chunk = (int)(in->n_tok / (size_t)n_ctx), rc = -1;
    if (max_chunks > 0 && max_chunks < n_chunk) n_chunk = max_chunks;
    if (lc_setup(&r, threads, kl)) goto out;
    char pd[128] = "";
    printf("file %s\ntokens %zu\nprotocol llama.cpp ctx=%d chunks=%d scored=%d..%d%s%s\n", in->path, in->n_tok,
           n_ctx, n_chunk, r.first + 1, n_ctx - 1, pol ? policy_desc(pol, pd, sizeof pd) : "",
           kl ? " kl-divergence" : "");
    printf("perplexity: calculating perplexity over %d chunks, n_ctx=%d\n", n_chunk, n_ctx);
    double t0 = kv_now_s();
    for (int i = 0; i < n_chunk; i++) {
        if (lc_chunk(&r, i)) {
            fprintf(stderr, "kvbench perplexity: chunk %d: %s\n", i + 1, kv_last_error());
            goto out;
        }
        if (i == 0) lc_print_eta(kv_now_s() - t0, n_chunk);
        if (i == 0 && kl) {
            printf("\n");
            met_kld_print_chunk_header(stdout);
        }
        lc_print_running(&r, i);
    }
    double dt = kv_now_s() - t0;
    if (lc_print_final(&r)) goto out;
    printf("scored %zu\nseconds %.2f\n", r.count, dt);
    if (pol) printf("kv_bytes_peak %zu\n", r.kv_peak);
    rc = 0;
out:
    lc_free(&r);
    return rc;
}

/* The usage text of `kvbench perplexity`. */
static void ppl_help(const hx_opt *opts, int n_opts) {
    printf("usage: kvbench perplexity --model PATH --file TEXT [--ctx N --stride S]\n"
           "       kvbench perplexity --model PATH --file TEXT --stream --policy P --budget B [--curve FILE]\n"
           "       kvbench perplexity --model PATH --file TEXT --protocol llama.cpp --ctx N [--chunks K]\n"
           "                          [--policy P --budget B [--set K=V,...] [--kl-divergence]]\n\n"
           "Sliding-window perplexity (the default): windows of N tokens start every S tokens; each\n"
           "window starts from an empty cache and scores only the tokens not scored by an earlier\n"
           "window (the first window scores all its tokens but the first).\n"
           "--stream: StreamingLLM's protocol - one token at a time through a single cache that\n"
           "the policy keeps within its budget (a token count), scoring every token.\n"
           "--protocol llama.cpp: llama-perplexity's protocol - the file tokenized once with BOS,\n"
           "min(K, tokens/N) non-overlapping chunks of N tokens, each from an empty cache with its\n"
           "first token replaced by BOS, only the second half scored (positions N/2 .. N-2 predict\n"
           "tokens N/2+1 .. N-1); prints [chunk]ppl, and 'Final estimate: PPL = x +/- e' with\n"
           "llama.cpp's standard error. With a policy, each chunk's first N/2+1 tokens are the\n"
           "prompt it compresses and the rest are fed one at a time through its cache.\n"
           "--kl-divergence (llama.cpp protocol, with a policy): the full cache on the same chunks\n"
           "is the base; prints llama-perplexity's --kl-divergence table and statistics (PPL ratio,\n"
           "KL divergence and Δp percentiles, RMS Δp, same top token) with its formulas.\n\n");
    hx_opts_print(opts, n_opts);
}

/* The options' combinations that make no sense; prints why. */
static int ppl_check_args(const policy_args *pa, const kv_policy *pol, int llamacpp, int stream, int kl,
                          int stride, const char *curve) {
    const char *why = NULL;
    if (llamacpp && stream) why = "--stream and --protocol llama.cpp are two protocols: give one";
    else if (llamacpp && (stride > 0 || curve)) why = "--stride and --curve go with the sliding-window and --stream protocols";
    else if (!llamacpp && kl) why = "--kl-divergence goes with --protocol llama.cpp";
    else if (kl && !pa->name && !pa->budget) why = "--kl-divergence compares a policy with the full cache: give --policy (and --budget)";
    else if (!stream && !llamacpp && (pa->name || pa->budget)) why = "--policy and --budget go with --stream or --protocol llama.cpp";
    else if (stream && pol_get_budget(pol)->kind == POL_BUDGET_FRACTION)
        why = "--stream needs a budget in tokens (a stream has no prompt to take a percentage of)";
    if (why) fprintf(stderr, "kvbench perplexity: %s\n", why);
    return why ? -1 : 0;
}

int hx_cmd_perplexity(int argc, char **argv, int help) {
    model_args a = {0};
    const char *file = NULL, *curve = NULL, *protocol = NULL;
    int ctx_len = 0, stride = 0, bos = 0, max_tokens = 0, stream = 0, chunks = 0, kl = 0;
    policy_args pa = {.seed = 42};
    hx_opt opts[] = {
        MODEL_OPTS(a),
        KV_TYPE_OPT(a),
        POLICY_OPTS(pa),
        {"protocol", 0, HX_OPT_STR, &protocol, "NAME", "sliding (default) or llama.cpp (llama-perplexity's chunks, second half scored)"},
        {"stream", 0, HX_OPT_FLAG, &stream, NULL, "feed one token at a time through one cache (the policy evicting as it goes) and score every token"},
        {"curve", 0, HX_OPT_STR, &curve, "FILE", "with --stream: write 'position nll' per scored token"},
        {"file", 'f', HX_OPT_STR, &file, "PATH", "text file (relative paths also tried under $KVBENCH_DATA)"},
        {"ctx", 'c', HX_OPT_INT, &ctx_len, "N", "window (llama.cpp: chunk) length in tokens (default: the model's context)"},
        {"stride", 0, HX_OPT_INT, &stride, "S", "window stride (default ctx/2)"},
        {"chunks", 0, HX_OPT_INT, &chunks, "K", "llama.cpp protocol: at most K chunks (default all)"},
        {"kl-divergence", 0, HX_OPT_FLAG, &kl, NULL, "llama.cpp protocol with a policy: statistics against the full cache"},
        {"bos", 0, HX_OPT_FLAG, &bos, NULL, "prepend BOS to the text (the llama.cpp protocol always does)"},
        {"max-tokens", 0, HX_OPT_INT, &max_tokens, "N", "score only the first N tokens of the text"},
    };
    if (help) {
        ppl_help(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("perplexity", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    if (!file) {
        fprintf(stderr, "kvbench perplexity: --file PATH is required\n");
        return 2;
    }
    int llamacpp = protocol && strcmp(protocol, "llama.cpp") == 0;
    if (protocol && !llamacpp && strcmp(protocol, "sliding") != 0) {
        fprintf(stderr, "kvbench perplexity: --protocol: expected sliding or llama.cpp, got '%s'\n", protocol);
        return 2;
    }
    kv_model *m;
    if (load_model("perplexity", &a, 1, &m)) return 1;
    const kv_model_info *mi = kv_model_get_info(m);
    if (ctx_len <= 0) ctx_len = mi->ctx_len;
    int explicit_stride = stride;
    if (stride <= 0) stride = ctx_len / 2 > 0 ? ctx_len / 2 : 1;
    int status = 1;
    char fp[4096];
    size_t len, n_tok;
    int32_t *ids = NULL;
    hx_engine en = {0};
    kv_policy *pol = NULL;
    char *text = read_file(hx_resolve_data(file, fp, sizeof fp), &len);
    if (make_policy("perplexity", &pa, m, &pol)) goto out;
    if (ppl_check_args(&pa, pol, llamacpp, stream, kl, explicit_stride, curve)) goto out;
    if (llamacpp ? ctx_len < 3 : (ctx_len < 2 || stride > ctx_len - 1)) {
        if (llamacpp) fprintf(stderr, "kvbench perplexity: expected --ctx >= 3, got %d\n", ctx_len);
        else fprintf(stderr, "kvbench perplexity: expected --ctx >= 2 and 1 <= --stride < ctx, got %d and %d\n", ctx_len, stride);
        goto out;
    }
    if (!text || encode(kv_model_tokenizer(m), text, len, bos || llamacpp, &ids, &n_tok)) {
        fprintf(stderr, "kvbench perplexity: %s\n", kv_last_error());
        goto out;
    }
    if (max_tokens > 0 && (size_t)max_tokens < n_tok) n_tok = (size_t)max_tokens;
    if (n_tok < 2) {
        fprintf(stderr, "kvbench perplexity: %s: fewer than 2 tokens\n", fp);
        goto out;
    }
    if (hx_engine_open(&en, m, a.threads, a.kvt)) {
        fprintf(stderr, "kvbench perplexity: %s\n", kv_last_error());
        goto out;
    }
    ppl_input in = {m, mi, fp, ids, n_tok, en.ctx, &en};
    int rc;
    if (llamacpp) rc = ppl_llamacpp(&in, pa.name || pa.budget ? pol : NULL, ctx_len, chunks, kl, a.threads);
    else if (stream) rc = ppl_stream(&in, pol, bos, curve);
    else rc = ppl_sliding(&in, ctx_len, stride, bos);
    status = rc ? 1 : 0;
out:
    pol_free(pol);
    free(text);
    free(ids);
    hx_engine_close(&en);
    kv_model_free(m);
    return status;
}

/* ----------------------------------------------------------------- bench */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The process's resident high-water mark (getrusage): weights, cache,
 * scratch and everything else it touched, the probe's buffer included. */
static void print_peak_rss(int probe_mb) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return;
    printf("peak resident    %.1f MB", ru.ru_maxrss / 1024.0);
    if (probe_mb > 0) printf(" (with the %d MB bandwidth probe; --membw 0 leaves it out)", probe_mb);
    printf("\n");
}

/* The cache's storage as bench left it: bytes per cached token (keys,
 * values and the position of every layer and KV head) and what the cache
 * really holds (its allocations, kv_cache_bytes) over the tokens it holds. */
static void print_kv_held(kv_ctx *c, int n_seen) {
    const kv_cache *kc = kv_ctx_cache(c);
    const size_t heads = (size_t)kv_cache_n_layers(kc) * (size_t)kv_cache_n_kv_heads(kc);
    const size_t per_token = heads * (2 * kv_cache_row_bytes(kc) + sizeof(int32_t));
    const double held = (double)kv_cache_total_slots(kc) / (double)heads;
    printf("kv cache         %s: %zu bytes per token (%zu-byte rows); holds %.2f MB for %.0f of %d tokens = %.0f "
           "bytes per held token\n", kv_cache_type_name(kv_cache_get_type(kc)), per_token, kv_cache_row_bytes(kc),
           kv_cache_bytes(kc) / 1e6, held, n_seen, held > 0 ? (double)kv_cache_bytes(kc) / held : 0.0);
}

int hx_cmd_bench(int argc, char **argv, int help) {
    model_args a = {0};
    int n_prompt = 128, n_gen = 64, reps = 5, membw_mb = 128;
    policy_args pa = {.seed = 42};
    hx_opt opts[] = {
        MODEL_OPTS(a),
        KV_TYPE_OPT(a),
        POLICY_OPTS(pa),
        {"prompt", 'p', HX_OPT_INT, &n_prompt, "N", "prompt tokens for prefill (default 128)"},
        {"gen", 'n', HX_OPT_INT, &n_gen, "N", "decoded tokens per run (default 64)"},
        {"reps", 'r', HX_OPT_INT, &reps, "N", "runs; medians are reported (default 5)"},
        {"membw", 0, HX_OPT_INT, &membw_mb, "MB", "measure the memory read bandwidth on a buffer this large around each run (default 128, four times the last-level cache here; 0: skip)"},
    };
    if (help) {
        printf("usage: kvbench bench --model PATH [--threads N] [--prompt N] [--gen N] [--reps N]\n\n"
               "Times prefill of a random prompt and greedy decoding after it, from an empty\n"
               "cache each run, and prints median tokens/s and the bytes read per decoded token.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("bench", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    if (n_prompt < 1 || n_gen < 1 || reps < 1 || membw_mb < 0) {
        fprintf(stderr, "kvbench bench: --prompt, --gen and --reps must be >= 1, --membw >= 0\n");
        return 2;
    }
    kv_model *m;
    if (load_model("bench", &a, pa.name ? 2 : 0, &m)) return 1;
    const kv_model_info *mi = kv_model_get_info(m);
    kv_ctx *c = NULL;
    int status = 1;
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    float *logits = malloc((size_t)mi->vocab_size * sizeof *logits);
    double *pf = malloc((size_t)reps * sizeof *pf), *dc = malloc((size_t)reps * sizeof *dc);
    double *mem = calloc((size_t)reps + 1, sizeof *mem), *share = calloc((size_t)reps, sizeof *share);
    kv_policy *pol = NULL;
    hx_membw *probe = NULL;
    if (!prompt || !logits || !pf || !dc || !mem || !share || new_ctx("bench", m, a.threads, a.kvt, &c) || make_policy("bench", &pa, m, &pol))
        goto out;
    if (membw_mb && !(probe = hx_membw_new(kv_ctx_n_threads(c), (size_t)membw_mb << 20))) {
        fprintf(stderr, "kvbench bench: out of memory for a %d MB bandwidth probe (--membw 0 skips it)\n", membw_mb);
        goto out;
    }
    pol_attach(pol, c);
    uint64_t x = 88172645463325252ull; /* fixed xorshift seed: the same prompt every run */
    for (int i = 0; i < n_prompt; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        prompt[i] = (int32_t)(x % (uint64_t)mi->vocab_size);
    }
    size_t kv_read = 0;
    const size_t wb = kv_model_decode_bytes(m);
    /* run -1 is a warm-up (page faults of the mapped weights, thread start),
     * not counted */
    for (int r = -1; r < reps; r++) {
        /* the memory's read bandwidth right before each run (and after
         * the last): decode is bound by it, and it moves */
        if (probe && r >= 0) mem[r] = hx_membw_measure(probe, 3);
        kv_ctx_reset(c);
        pol_begin(pol, n_prompt);
        double t0 = kv_now_s();
        if (pol_eval_prompt(pol, c, prompt, n_prompt, logits)) goto fail;
        double t_pf = kv_now_s() - t0;
        double t1 = kv_now_s();
        for (int g = 0; g < n_gen; g++) {
            int32_t next = kv_argmax(logits, mi->vocab_size);
            if (kv_ctx_eval(c, &next, 1, logits, 0)) goto fail;
        }
        double t_dc = kv_now_s() - t1;
        if (r < 0) continue;
        pf[r] = n_prompt / t_pf;
        dc[r] = n_gen / t_dc;
        /* KV bytes read per decoded token: keys and values of the live
         * slots (the cache as the last step left it) */
        kv_read = (size_t)kv_cache_total_slots(kv_ctx_cache(c)) * 2 * kv_cache_row_bytes(kv_ctx_cache(c));
    }
    if (probe) {
        mem[reps] = hx_membw_measure(probe, 3);
        for (int r = 0; r < reps; r++) /* each run's decode bandwidth over the memory's around it */
            share[r] = (double)(wb + kv_read) * dc[r] / 1e9 / ((mem[r] + mem[r + 1]) / 2);
        qsort(mem, (size_t)reps + 1, sizeof *mem, cmp_double);
        qsort(share, (size_t)reps, sizeof *share, cmp_double);
    }
    qsort(pf, (size_t)reps, sizeof *pf, cmp_double);
    qsort(dc, (size_t)reps, sizeof *dc, cmp_double);
    double pfm = pf[reps / 2], dcm = dc[reps / 2];
    printf("model            %s\n", kv_model_path(m));
    printf("params           %lld (%s, %.1f MB)\n", (long long)mi->n_params, kv_dtype_name(mi->wtype),
           mi->weight_bytes / 1e6);
    const kv_filemap *fm = kv_model_file(m);
    printf("weights held     %s: %.1f of %.1f MB in 2 MB pages (KVBENCH_WEIGHTS=copy|mmap)\n",
           fm->mode == KV_FILEMAP_COPY ? "copied" : "mapped", kv_filemap_huge_bytes(fm) / 1e6, fm->size / 1e6);
    char bs[32];
    printf("threads          %d (kernels: %s, %s; prefill products: %s)\n", kv_ctx_n_threads(c),
           kv_isa_name(kv_kernels_isa()), kv_kernel_mode_name(kv_kernels_mode()),
           kv_kernels_mode() == KV_KERNELS_INT8 ? "decode's, token by token in arithmetic"
           : kv_gemm_available()                 ? "kvbench's AVX-512 kernel"
                                                 : "OpenBLAS sgemm");
    printf("policy           %s, budget %s\n", pol_name(pol), pol_budget_str(pol_get_budget(pol), bs, sizeof bs));
    /* two decimals below 10 tok/s (a 7B model's decode), one above */
    const int pd = pfm < 10 ? 2 : 1, dd = dcm < 10 ? 2 : 1;
    printf("prefill          %d tokens: %.*f tok/s (median of %d; min %.*f, max %.*f)\n", n_prompt, pd, pfm, reps, pd,
           pf[0], pd, pf[reps - 1]);
    printf("decode           %d tokens after the prompt: %.*f tok/s (median of %d; min %.*f, max %.*f)\n", n_gen, dd,
           dcm, reps, dd, dc[0], dd, dc[reps - 1]);
    print_kv_held(c, n_prompt + n_gen);
    printf("bytes per token  %.2f MB weights + %.2f MB KV cache = %.2f MB\n", wb / 1e6, kv_read / 1e6,
           (wb + kv_read) / 1e6);
    printf("decode bandwidth %.1f GB/s\n", (wb + kv_read) * dcm / 1e9);
    if (probe) {
        printf("memory read      %.1f GB/s (median; min %.1f, max %.1f: %d MB read by %d threads before each run)\n",
               mem[reps / 2], mem[0], mem[reps], membw_mb, kv_ctx_n_threads(c));
        printf("decode share     %.0f%% of the memory read bandwidth (median of the runs; min %.0f%%, max %.0f%%)\n",
               100 * share[reps / 2], 100 * share[0], 100 * share[reps - 1]);
    }
    printf("decode step      %.3f ms (median)\n", 1e3 / dcm);
    print_peak_rss(probe ? membw_mb : 0);
    status = 0;
    goto out;
fail:
    fprintf(stderr, "kvbench bench: %s\n", kv_last_error());
out:
    free(prompt);
    free(logits);
    free(pf);
    free(dc);
    free(mem);
    free(share);
    hx_membw_free(probe);
    kv_ctx_free(c);
    pol_free(pol);
    kv_model_free(m);
    return status;
}
