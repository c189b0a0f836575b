/* test_mpt.c - the MPT architecture (GGUF "mpt": LayerNorm, fused Q,K,V,
 * ALiBi, GELU) on small synthetic models written here:
 *  - loading: sizes, parameter count, weights kept quantized; a missing or
 *    wrong-shaped tensor, a bad hyper-parameter, a tensor of an unsupported
 *    variant are errors naming the file and what was expected;
 *  - the ALiBi slopes for power-of-two and other head counts;
 *  - prefill, chunked prefill and decode compute the same function, and so do
 *    the three position modes while nothing is evicted;
 *  - every policy with a budget above the sequence equals the full cache bit
 *    for bit, in every position mode;
 *  - in-cache positions do not depend on slot order (kv_cache_drop vs
 *    kv_cache_keep of the same slots), per KV head; rerotate equals cache
 *    bit for bit (nothing to rotate);
 *  - explicit positions (kv_ctx_eval_ext) are the ones the bias sees;
 *  - the raw logits handed to reduce_row include the bias exactly as the
 *    softmax sees it;
 *  - converting to GGUF keeps the model (identical logits).
 * Logits against the numpy reference: tests/reference/check_engine.py. */
#include "test_util.h"

#include <math.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "context.h"
#include "export.h"
#include "gguf.h"
#include "kv_error.h"
#include "model_impl.h" /* the MPT weights as loaded (fused qkv slices, LayerNorm biases) */
#include "policy.h"
#include "quant.h"
#include "sampler.h"

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

/* ------------------------------------------------------ synthetic models */

typedef struct mpt_spec {
    int dim, hidden, layers, heads, kv_heads, vocab;
    kv_dtype type;          /* 2-D weights (F32 or Q8_0) */
    int biases, untied;
    float clamp;            /* > 0: mpt.attention.clamp_kqv */
    float max_bias;         /* written when != 0 (0: absent, the default 8) */
    const char *skip;       /* a tensor or key not written */
    const char *bad_shape;  /* a matrix written with one row too many */
    const char *extra;      /* an extra [dim] tensor */
} mpt_spec;

static const mpt_spec SPEC = {.dim = 96, .hidden = 192, .layers = 2, .heads = 6, .kv_heads = 6, .vocab = 64,
                              .type = KV_F32, .biases = 1, .untied = 0};

static uint64_t g_rng;
static float urand(void) { /* splitmix64, uniform in [-1, 1) */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) * 0x1.0p-52 - 1.0);
}

static void add(kv_gguf_writer *w, const mpt_spec *s, const char *name, int64_t rows, int64_t cols, float scale,
                float offset) {
    if (s->skip && !strcmp(s->skip, name)) return;
    if (s->bad_shape && !strcmp(s->bad_shape, name)) rows++;
    size_t n = (size_t)(rows * cols);
    float *f = malloc(n * sizeof *f);
    assert_non_null(f);
    for (size_t i = 0; i < n; i++) f[i] = offset + scale * urand();
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    kv_dtype t = rows > 1 && s->type == KV_Q8_0 ? KV_Q8_0 : KV_F32;
    if (t == KV_F32) {
        assert_int_equal(kv_gguf_writer_add_tensor(w, name, KV_F32, rows > 1 ? 2 : 1, ne, f), KV_OK);
    } else {
        void *q = malloc(kv_dtype_bytes(t, (int64_t)n));
        assert_int_equal(kv_quantize(t, f, q, (int64_t)n), KV_OK);
        assert_int_equal(kv_gguf_writer_add_tensor(w, name, t, 2, ne, q), KV_OK);
        free(q);
    }
    free(f);
}

static void set_u32(kv_gguf_writer *w, const mpt_spec *s, const char *key, uint32_t v) {
    if (!s->skip || strcmp(s->skip, key)) assert_int_equal(kv_gguf_writer_set_u32(w, key, v), KV_OK);
}

static void write_mpt(const char *path, const mpt_spec *s, uint64_t seed) {
    g_rng = seed;
    kv_gguf_writer *w = kv_gguf_writer_new();
    assert_non_null(w);
    const int hd = s->dim / s->heads;
    assert_int_equal(kv_gguf_writer_set_str(w, "general.architecture", "mpt"), KV_OK);
    set_u32(w, s, "mpt.context_length", 512);
    set_u32(w, s, "mpt.embedding_length", (uint32_t)s->dim);
    set_u32(w, s, "mpt.block_count", (uint32_t)s->layers);
    set_u32(w, s, "mpt.feed_forward_length", (uint32_t)s->hidden);
    set_u32(w, s, "mpt.attention.head_count", (uint32_t)s->heads);
    if (s->kv_heads != s->heads) set_u32(w, s, "mpt.attention.head_count_kv", (uint32_t)s->kv_heads);
    assert_int_equal(kv_gguf_writer_set_f32(w, "mpt.attention.layer_norm_epsilon", 1e-5f), KV_OK);
    if (s->max_bias != 0) assert_int_equal(kv_gguf_writer_set_f32(w, "mpt.attention.max_alibi_bias", s->max_bias), KV_OK);
    if (s->clamp != 0) assert_int_equal(kv_gguf_writer_set_f32(w, "mpt.attention.clamp_kqv", s->clamp), KV_OK);
    const float wd = sqrtf(3.0f / s->dim), wh = sqrtf(3.0f / s->hidden);
    add(w, s, "token_embd.weight", s->vocab, s->dim, 1.7f, 0);
    add(w, s, "output_norm.weight", 1, s->dim, 0.3f, 1.0f);
    if (s->biases) add(w, s, "output_norm.bias", 1, s->dim, 0.1f, 0);
    if (s->untied) add(w, s, "output.weight", s->vocab, s->dim, wd, 0);
    char name[96];
    for (int l = 0; l < s->layers; l++) {
#define NAME(x) (snprintf(name, sizeof name, "blk.%d." x, l), name)
        add(w, s, NAME("attn_norm.weight"), 1, s->dim, 0.3f, 1.0f);
        if (s->biases) add(w, s, NAME("attn_norm.bias"), 1, s->dim, 0.1f, 0);
        add(w, s, NAME("attn_qkv.weight"), (int64_t)(s->heads + 2 * s->kv_heads) * hd, s->dim, wd, 0);
        add(w, s, NAME("attn_output.weight"), s->dim, s->dim, wd, 0);
        add(w, s, NAME("ffn_norm.weight"), 1, s->dim, 0.3f, 1.0f);
        if (s->biases) add(w, s, NAME("ffn_norm.bias"), 1, s->dim, 0.1f, 0);
        add(w, s, NAME("ffn_up.weight"), s->hidden, s->dim, wd, 0);
        add(w, s, NAME("ffn_down.weight"), s->dim, s->hidden, wh, 0);
#undef NAME
    }
    if (s->extra) add(w, s, s->extra, 1, s->dim, 0.1f, 0);
    assert_int_equal(kv_gguf_writer_write(w, path), KV_OK);
    kv_gguf_writer_free(w);
}

static kv_model *load_spec(const mpt_spec *s, const char *file) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", g_tmp, file);
    write_mpt(path, s, 42);
    kv_model *m = NULL;
    int rc = kv_model_load(path, NULL, &m);
    if (rc) fail_msg("%s", kv_last_error());
    return m;
}

/* ---------------------------------------------------------------- tests */

static void test_load(void **state) {
    (void)state;
    kv_model *m = load_spec(&SPEC, "f32.gguf");
    const kv_model_info *i = kv_model_get_info(m);
    assert_int_equal(i->arch, KV_ARCH_MPT);
    assert_string_equal(kv_arch_name(i->arch), "mpt");
    assert_int_equal(i->dim, 96);
    assert_int_equal(i->n_heads, 6);
    assert_int_equal(i->n_kv_heads, 6);
    assert_int_equal(i->head_dim, 16);
    assert_int_equal(i->n_rot, 0);
    assert_int_equal(i->vocab_size, 64);
    assert_true(i->tied_output);
    assert_true(i->max_alibi_bias == 8.0f); /* the default */
    assert_true(i->clamp_kqv == 0.0f);
    assert_int_equal(i->gelu, KV_GELU_TANH);
    /* embedding + per layer (qkv, out, up, down, two norms with biases) + final norm with bias */
    const int64_t per_layer = 3 * 96 * 96 + 96 * 96 + 2 * 192 * 96 + 4 * 96;
    assert_int_equal(i->n_params, 64 * 96 + 2 * per_layer + 2 * 96);
    assert_int_equal(i->weight_bytes, (size_t)i->n_params * 4);
    const kv_layer_weights *w = kv_model_layer(m, 1);
    assert_int_equal(w->wqkv.rows, 3 * 96);
    assert_ptr_equal(w->wk.data, (const char *)w->wqkv.data + 96 * 96 * 4); /* views into the fused matrix */
    assert_non_null(w->attn_norm_b);
    assert_non_null(kv_model_out_norm_bias(m));
    kv_model_free(m);

    /* Q8_0 stays Q8_0: 34 bytes per 32 weights; untied; clamp and bias read */
    mpt_spec q = SPEC;
    q.type = KV_Q8_0;
    q.untied = 1;
    q.clamp = 0.5f;
    q.max_bias = 12.0f;
    q.biases = 0;
    m = load_spec(&q, "q8.gguf");
    i = kv_model_get_info(m);
    assert_int_equal(i->wtype, KV_Q8_0);
    assert_false(i->tied_output);
    assert_true(i->clamp_kqv == 0.5f);
    assert_true(i->max_alibi_bias == 12.0f);
    assert_null(kv_model_layer(m, 0)->attn_norm_b);
    const int64_t mats = 2 * (3 * 96 * 96 + 96 * 96 + 2 * 192 * 96) + 64 * 96; /* blocks and the output matrix */
    assert_int_equal(i->n_params, mats + 64 * 96 + 2 * 2 * 96 + 96);
    assert_true(i->weight_bytes < (size_t)i->n_params * 4 / 3);
    kv_model_free(m);

    /* the GELU form is chosen at load time */
    char path[512];
    snprintf(path, sizeof path, "%s/f32.gguf", g_tmp);
    kv_model_params mp = kv_model_default_params();
    assert_int_equal(kv_gelu_parse("erf", &mp.gelu), KV_OK);
    assert_int_equal(kv_model_load(path, &mp, &m), KV_OK);
    assert_int_equal(kv_model_get_info(m)->gelu, KV_GELU_ERF);
    kv_model_free(m);
    assert_int_equal(kv_gelu_parse("exact", &mp.gelu), KV_EINVAL);
}

/* Loads a spec that must fail with `want_rc`, the file's path and `needle` in the message. */
static void expect_error(const mpt_spec *s, int want_rc, const char *needle) {
    char path[512];
    snprintf(path, sizeof path, "%s/bad.gguf", g_tmp);
    write_mpt(path, s, 1);
    kv_model *m = (kv_model *)0x1;
    int rc = kv_model_load(path, NULL, &m);
    if (rc != want_rc || !strstr(kv_last_error(), needle) || !strstr(kv_last_error(), path))
        fail_msg("rc %d (want %d): '%s' (want '%s')", rc, want_rc, kv_last_error(), needle);
    assert_null(m);
}

static void test_errors(void **state) {
    (void)state;
    mpt_spec s = SPEC;
    s.skip = "blk.1.ffn_down.weight";
    expect_error(&s, KV_EFORMAT, "missing tensor 'blk.1.ffn_down.weight'");
    s.skip = "blk.0.attn_norm.weight";
    expect_error(&s, KV_EFORMAT, "missing tensor 'blk.0.attn_norm.weight'");
    s.skip = "mpt.block_count";
    expect_error(&s, KV_EFORMAT, "missing metadata key 'mpt.block_count'");
    s.skip = NULL;
    s.bad_shape = "blk.1.attn_qkv.weight";
    expect_error(&s, KV_EFORMAT, "tensor 'blk.1.attn_qkv.weight' (data offset");
    expect_error(&s, KV_EFORMAT, "expected shape [96, 288]");
    s.bad_shape = "blk.0.ffn_up.weight";
    expect_error(&s, KV_EFORMAT, "blk.0.ffn_up.weight");
    s.bad_shape = NULL;
    s.max_bias = -1.0f;
    expect_error(&s, KV_EFORMAT, "mpt.attention.max_alibi_bias");
    s.max_bias = 0;
    s.clamp = -2.0f;
    expect_error(&s, KV_EFORMAT, "mpt.attention.clamp_kqv");
    s.clamp = 0;
    s.heads = 5; /* dim 96 is not a multiple */
    expect_error(&s, KV_EFORMAT, "not a multiple of n_heads");
    s.heads = 6;
    s.kv_heads = 4;
    expect_error(&s, KV_EFORMAT, "not a multiple of n_kv_heads");
    s.kv_heads = 6;
    /* variants this forward pass does not compute are refused, not ignored */
    s.extra = "blk.0.attn_qkv.bias";
    expect_error(&s, KV_EUNSUPPORTED, "'blk.0.attn_qkv.bias'");
    s.extra = "position_embd.weight";
    expect_error(&s, KV_EUNSUPPORTED, "'position_embd.weight'");
    s.extra = "blk.1.attn_q_norm.weight";
    expect_error(&s, KV_EUNSUPPORTED, "'blk.1.attn_q_norm.weight'");
    s.extra = "blk.2.attn_norm.weight"; /* a block past block_count */
    expect_error(&s, KV_EUNSUPPORTED, "'blk.2.attn_norm.weight'");
}

static void test_slopes(void **state) {
    (void)state;
    for (int h = 0; h < 8; h++) assert_true(kv_alibi_slope(8, 8.0, h) == ldexp(1.0, -(h + 1)));
    for (int h = 0; h < 4; h++) assert_true(kv_alibi_slope(4, 8.0, h) == ldexp(1.0, -2 * (h + 1)));
    /* 6 heads: those of 4, then every other one of 8 (ALiBi's interleaving) */
    const double six[6] = {0x1p-2, 0x1p-4, 0x1p-6, 0x1p-8, 0x1p-1, 0x1p-3};
    for (int h = 0; h < 6; h++) assert_true(fabs(kv_alibi_slope(6, 8.0, h) - six[h]) < 1e-15);
    /* 12 heads, max bias 16: 8 at 2^(-2(h+1)), then 2^-1, 2^-3, 2^-5, 2^-7 */
    for (int h = 0; h < 8; h++) assert_true(fabs(kv_alibi_slope(12, 16.0, h) - ldexp(1.0, -2 * (h + 1))) < 1e-15);
    for (int h = 8; h < 12; h++) assert_true(fabs(kv_alibi_slope(12, 16.0, h) - ldexp(1.0, -(2 * (h - 8) + 1))) < 1e-15);
}

enum { V = 64 };

static void eval_all(kv_ctx *c, const int32_t *t, int n, int step, float *out) {
    for (int i = 0; i < n; i += step) {
        int len = n - i < step ? n - i : step;
        int rc = kv_ctx_eval(c, t + i, len, out + (size_t)i * V, 1);
        if (rc) fail_msg("%s", kv_last_error());
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

/* Prefill (split by max_batch), chunks and decode agree to fp32 rounding;
 * without eviction, in-cache positions (cache, rerotate) are the true ones,
 * bit for bit. */
static void test_prefill_decode_agree(void **state) {
    (void)state;
    mpt_spec specs[2] = {SPEC, SPEC};
    specs[1].type = KV_Q8_0;
    specs[1].clamp = 0.6f;
    specs[1].untied = 1;
    specs[1].kv_heads = 2;
    for (int k = 0; k < 2; k++) {
        kv_model *m = load_spec(&specs[k], "agree.gguf");
        enum { N = 70 };
        int32_t t[N];
        for (int i = 0; i < N; i++) t[i] = (int32_t)((i * 37 + 11) % V);
        float *ref = malloc(N * V * sizeof(float)), *got = malloc(N * V * sizeof(float));
        kv_ctx *c;
        kv_ctx_params cp = kv_ctx_default_params();
        cp.n_threads = 3;
        cp.max_batch = 32;
        assert_int_equal(kv_ctx_new(m, &cp, &c), KV_OK);
        eval_all(c, t, N, N, ref);
        const int steps[3] = {1, 7, 33};
        for (int s = 0; s < 3; s++) {
            kv_ctx_reset(c);
            eval_all(c, t, N, steps[s], got);
            double rel = max_rel_diff(got, ref, (size_t)N * V);
            if (!(rel < 1e-5)) fail_msg("spec %d step %d: rel %g", k, steps[s], rel);
        }
        const int all_steps[4] = {N, 1, 7, 33};
        for (int s = 0; s < 4; s++) {
            float *orig = malloc(N * V * sizeof(float));
            kv_ctx_reset(c);
            eval_all(c, t, N, all_steps[s], orig);
            for (int md = KV_POS_CACHE; md <= KV_POS_REROTATE; md++) {
                kv_ctx_hook h = {.positions = (kv_pos_mode)md};
                kv_ctx_set_hook(c, &h);
                kv_ctx_reset(c);
                eval_all(c, t, N, all_steps[s], got);
                kv_ctx_set_hook(c, NULL);
                assert_memory_equal(got, orig, (size_t)N * V * sizeof(float));
            }
            free(orig);
        }
        kv_ctx_free(c);
        free(ref);
        free(got);
        kv_model_free(m);
    }
}

/* Every policy, with a budget above the sequence, equals the full cache bit
 * for bit in every position mode (as test_policies checks for Llama). */
static void test_large_budget_is_full(void **state) {
    (void)state;
    kv_model *m = load_spec(&SPEC, "budget.gguf");
    enum { PROMPT = 30, GEN = 20 };
    int32_t t[PROMPT];
    for (int i = 0; i < PROMPT; i++) t[i] = (int32_t)((i * 29 + 3) % V);
    float *ref = malloc((1 + GEN) * V * sizeof(float)), *got = malloc((1 + GEN) * V * sizeof(float));
    kv_ctx *c;
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = 2;
    assert_int_equal(kv_ctx_new(m, &cp, &c), KV_OK);
    for (int i = -1; i < pol_count(); i++) { /* -1: full without a budget, the reference */
        const char *settings[3] = {NULL, "positions=cache", "positions=rerotate"};
        for (int k = 0; k < 3; k++) {
            if (i < 0 && k) break;
            pol_budget b;
            assert_int_equal(pol_budget_parse(i < 0 ? "none" : "51", &b), KV_OK);
            kv_policy *p;
            const char *name = i < 0 ? "full" : pol_ops_name(pol_at(i));
            int rc = pol_new(name, settings[k] ? &settings[k] : NULL, settings[k] ? 1 : 0, &b, 7, kv_model_get_info(m),
                             &p);
            if (rc) fail_msg("%s", kv_last_error());
            float *out = i < 0 ? ref : got;
            kv_ctx_reset(c);
            pol_begin(p, PROMPT);
            pol_attach(p, c);
            assert_int_equal(kv_ctx_eval(c, t, PROMPT, out, 0), KV_OK);
            for (int s = 0; s < GEN; s++) {
                int32_t next = kv_argmax(out + (size_t)s * V, V);
                assert_int_equal(kv_ctx_eval(c, &next, 1, out + (size_t)(s + 1) * V, 0), KV_OK);
            }
            if (i >= 0 && memcmp(got, ref, (1 + GEN) * V * sizeof(float)) != 0)
                fail_msg("%s (%s) with a budget above the length differs from the full cache", pol_name(p),
                         settings[k] ? settings[k] : "original positions");
            pol_attach(NULL, c);
            pol_free(p);
        }
    }
    free(ref);
    free(got);
    kv_ctx_free(c);
    kv_model_free(m);
}

/* A hook that evicts, after each layer's attention, the same positions with
 * kv_cache_keep (slot order kept) or kv_cache_drop (holes filled from the
 * end: slots out of position order), per KV head differently: head g keeps
 * the first 2 positions, drops those p with (p + g) % 3 == 1 among the
 * older ones, and keeps the newest 5. */
typedef struct evict_rec { int use_drop, saw_unsorted; } evict_rec;

static int evict_layer(void *user, kv_cache *cache, const kv_attn_view *v) {
    evict_rec *r = user;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(cache, v->layer, g);
        int32_t newest = -1;
        for (int32_t j = 0; j < h->len; j++) newest = h->pos[j] > newest ? h->pos[j] : newest;
        uint8_t keep[256];
        int32_t idx[256], n_keep = 0, n_drop = 0;
        assert_true(h->len <= 256);
        for (int32_t j = 0; j < h->len; j++) {
            int32_t p = h->pos[j];
            keep[j] = p < 2 || p > newest - 5 || (p + g) % 3 != 1;
            n_drop += !keep[j];
        }
        if (!n_drop) continue;
        if (r->use_drop) {
            assert_int_equal(kv_cache_drop(cache, h, keep, NULL), KV_OK);
        } else {
            for (int32_t j = 0; j < h->len; j++)
                if (keep[j]) idx[n_keep++] = j;
            assert_int_equal(kv_cache_keep(cache, h, idx, n_keep), KV_OK);
        }
        for (int32_t j = 1; j < h->len; j++) r->saw_unsorted |= h->pos[j - 1] > h->pos[j];
    }
    return KV_OK;
}

static void test_slot_order(void **state) {
    (void)state;
    mpt_spec s = SPEC;
    s.kv_heads = 3; /* two query heads per KV head, heads evicting differently */
    kv_model *m = load_spec(&s, "order.gguf");
    enum { N = 40 };
    int32_t t[N];
    for (int i = 0; i < N; i++) t[i] = (int32_t)((i * 13 + 5) % V);
    float *a = malloc(N * V * sizeof(float)), *b = malloc(N * V * sizeof(float)), *o = malloc(N * V * sizeof(float)),
          *r = malloc(N * V * sizeof(float));
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(m, NULL, &c), KV_OK);
    const int steps[2] = {1, 6};
    for (int k = 0; k < 2; k++) {
        kv_pos_mode modes[3] = {KV_POS_CACHE, KV_POS_ORIGINAL, KV_POS_REROTATE};
        float *by_mode[3] = {a, o, r};
        for (int md = 0; md < 3; md++) {
            evict_rec keep = {0, 0}, drop = {1, 0};
            kv_ctx_hook h = {.user = &keep, .positions = modes[md], .on_layer = evict_layer};
            kv_ctx_set_hook(c, &h);
            kv_ctx_reset(c);
            eval_all(c, t, N, steps[k], by_mode[md]);
            h.user = &drop;
            kv_ctx_set_hook(c, &h);
            kv_ctx_reset(c);
            eval_all(c, t, N, steps[k], b);
            assert_false(keep.saw_unsorted);
            assert_true(drop.saw_unsorted);
            double rel = max_rel_diff(b, by_mode[md], (size_t)N * V);
            if (!(rel < 1e-5)) fail_msg("step %d mode %d: kept and dropped slots differ by %g", steps[k], md, rel);
        }
        /* with gaps in the cache in-cache and true distances differ; rerotate
         * is cache (no rotation to round) */
        assert_true(max_rel_diff(a, o, (size_t)N * V) > 1e-3);
        assert_memory_equal(a, r, (size_t)N * V * sizeof(float));
    }
    kv_ctx_set_hook(c, NULL);
    kv_ctx_free(c);
    free(a);
    free(b);
    free(o);
    free(r);
    kv_model_free(m);
}

/* kv_ctx_eval_ext: ALiBi depends on distances only, so positions shifted by
 * a constant give the same logits bit for bit, and a causal mask spelled
 * out changes nothing; a gap between the keys' positions changes them. */
static void test_layout_positions(void **state) {
    (void)state;
    kv_model *m = load_spec(&SPEC, "layout.gguf");
    enum { N = 24 };
    int32_t t[N], shifted[N], gapped[N];
    uint8_t sees[N * N];
    for (int i = 0; i < N; i++) {
        t[i] = (int32_t)((i * 11 + 4) % V);
        shifted[i] = 100 + i;
        gapped[i] = i < N / 2 ? i : i + 40;
    }
    memset(sees, 1, sizeof sees);
    float *ref = malloc(N * V * sizeof(float)), *got = malloc(N * V * sizeof(float));
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(m, NULL, &c), KV_OK);
    eval_all(c, t, N, N, ref);
    kv_eval_layout lay = {.pos = shifted};
    kv_ctx_reset(c);
    assert_int_equal(kv_ctx_eval_ext(c, t, N, &lay, got, 1), KV_OK);
    assert_int_equal(kv_ctx_pos(c), 100 + N);
    assert_memory_equal(got, ref, N * V * sizeof(float));
    /* then decoding on from the shifted positions, one explicit position per call */
    kv_ctx_reset(c);
    for (int i = 0; i < N; i++) {
        kv_eval_layout one = {.pos = &shifted[i]};
        assert_int_equal(kv_ctx_eval_ext(c, &t[i], 1, &one, got + (size_t)i * V, 1), KV_OK);
    }
    assert_true(max_rel_diff(got, ref, (size_t)N * V) < 1e-5);
    lay = (kv_eval_layout){.sees = sees};
    kv_ctx_reset(c);
    assert_int_equal(kv_ctx_eval_ext(c, t, N, &lay, got, 1), KV_OK);
    assert_memory_equal(got, ref, N * V * sizeof(float));
    lay = (kv_eval_layout){.pos = gapped};
    kv_ctx_reset(c);
    assert_int_equal(kv_ctx_eval_ext(c, t, N, &lay, got, 1), KV_OK);
    assert_memory_equal(got, ref, (size_t)N / 2 * V * sizeof(float)); /* before the gap: the same */
    assert_true(max_rel_diff(got + (size_t)N / 2 * V, ref + (size_t)N / 2 * V, (size_t)N / 2 * V) > 1e-3);
    kv_ctx_free(c);
    free(ref);
    free(got);
    kv_model_free(m);
}

/* reduce_row's raw rows, softmaxed by the hook, give the engine's own
 * softmax rows (decode: the last row; prefill: the column sums) in both
 * position modes, with eviction: the bias is in the raw logits exactly as
 * the softmax sees it. */
typedef struct stats_rec { int checked; double worst; evict_rec ev; } stats_rec;

static void softmax_rows(void *user, const kv_logit_row *r) {
    (void)user;
    double mx = -INFINITY, sum = 0;
    for (int32_t j = 0; j < r->len; j++) mx = r->x[j] > mx ? r->x[j] : mx;
    for (int32_t j = 0; j < r->len; j++) sum += r->tmp[j] = r->x[j] == -INFINITY ? 0 : exp(r->x[j] - mx);
    for (int32_t j = 0; j < r->len; j++) r->acc[j] += r->tmp[j] / sum;
}

static int stats_layer(void *user, kv_cache *cache, const kv_attn_view *v) {
    stats_rec *s = user;
    const float *mine = v->n_new == 1 ? v->last_row : v->colsum;
    assert_non_null(mine);
    assert_non_null(v->reduced);
    for (int h = 0; h < v->n_heads; h++)
        for (int32_t j = 0; j < v->stride; j++) {
            double d = fabs(v->reduced[(size_t)h * v->stride + j] - mine[(size_t)h * v->stride + j]);
            s->worst = d > s->worst ? d : s->worst;
        }
    s->checked++;
    return evict_layer(&s->ev, cache, v);
}

static void test_raw_logits_include_bias(void **state) {
    (void)state;
    kv_model *m = load_spec(&SPEC, "stats.gguf");
    enum { N = 36 };
    int32_t t[N];
    for (int i = 0; i < N; i++) t[i] = (int32_t)((i * 7 + 2) % V);
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(m, NULL, &c), KV_OK);
    for (int md = 0; md < 2; md++) {
        stats_rec s = {.ev = {1, 0}};
        kv_ctx_hook h = {.user = &s, .needs = KV_NEED_LOGITS | KV_NEED_LAST_ROW | KV_NEED_COLSUM,
                         .positions = md ? KV_POS_CACHE : KV_POS_ORIGINAL, .on_layer = stats_layer,
                         .reduce_row = softmax_rows};
        kv_ctx_set_hook(c, &h);
        kv_ctx_reset(c);
        assert_int_equal(kv_ctx_eval(c, t, 12, NULL, 0), KV_OK); /* prefill, then decode */
        for (int i = 12; i < N; i++) assert_int_equal(kv_ctx_eval(c, &t[i], 1, NULL, 0), KV_OK);
        assert_int_equal(s.checked, 2 * (1 + N - 12));
        if (!(s.worst < 1e-5)) fail_msg("mode %d: raw logits' softmax differs from the engine's by %g", md, s.worst);
    }
    kv_ctx_set_hook(c, NULL);
    kv_ctx_free(c);
    kv_model_free(m);
}

/* kvbench convert writes MPT as MPT: the same logits from the copy. */
static void test_convert_roundtrip(void **state) {
    (void)state;
    mpt_spec s = SPEC;
    s.clamp = 0.8f;
    s.max_bias = 6.0f;
    kv_model *a = load_spec(&s, "conv-in.gguf");
    char out[512];
    snprintf(out, sizeof out, "%s/conv-out.gguf", g_tmp);
    assert_int_equal(kv_model_export_gguf(a, out, KV_F32), KV_OK);
    kv_model *b;
    assert_int_equal(kv_model_load(out, NULL, &b), KV_OK);
    const kv_model_info *ia = kv_model_get_info(a), *ib = kv_model_get_info(b);
    assert_int_equal(ib->arch, KV_ARCH_MPT);
    assert_int_equal(ib->n_params, ia->n_params);
    assert_true(ib->clamp_kqv == 0.8f && ib->max_alibi_bias == 6.0f);
    enum { N = 20 };
    int32_t t[N];
    for (int i = 0; i < N; i++) t[i] = (int32_t)((i * 5 + 1) % V);
    float *la = malloc(N * V * sizeof(float)), *lb = malloc(N * V * sizeof(float));
    kv_ctx *ca, *cb;
    assert_int_equal(kv_ctx_new(a, NULL, &ca), KV_OK);
    assert_int_equal(kv_ctx_new(b, NULL, &cb), KV_OK);
    eval_all(ca, t, N, 4, la);
    eval_all(cb, t, N, 4, lb);
    assert_memory_equal(la, lb, N * V * sizeof(float));
    /* to Q8_0: a quantized MPT of the same shape */
    assert_int_equal(kv_model_export_gguf(a, out, KV_Q8_0), KV_OK);
    kv_model *q;
    assert_int_equal(kv_model_load(out, NULL, &q), KV_OK);
    assert_int_equal(kv_model_get_info(q)->wtype, KV_Q8_0);
    assert_int_equal(kv_model_get_info(q)->n_params, ia->n_params);
    kv_model_free(q);
    kv_ctx_free(ca);
    kv_ctx_free(cb);
    free(la);
    free(lb);
    kv_model_free(a);
    kv_model_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_slopes),
        cmocka_unit_test(test_prefill_decode_agree),
        cmocka_unit_test(test_large_budget_is_full),
        cmocka_unit_test(test_slot_order),
        cmocka_unit_test(test_layout_positions),
        cmocka_unit_test(test_raw_logits_include_bias),
        cmocka_unit_test(test_convert_roundtrip),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
