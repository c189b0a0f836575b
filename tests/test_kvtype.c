/* test_kvtype.c - KV caches stored as f16 and q8_0: the typed attention
 * kernels (every ISA this CPU has) against float64 references, and a
 * synthetic model's logits and greedy continuation with f16 / q8_0 caches
 * against an f32 cache. */
#include "test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "context.h"
#include "kernels.h"
#include "kv_error.h"
#include "kvcache.h"
#include "model.h"
#include "quant.h"
#include "sampler.h"
#include "test_synth.h"

static const double EPS32 = 0x1p-24; /* fp32 unit roundoff */

static float frand(uint64_t *s) { return (float)tu_unit_normal(s); }

/* n rows of d values: the floats, their stored form in t, and what the
 * stored form reads back as. */
typedef struct rows {
    float *x, *back;
    uint8_t *stored;
} rows;

static void rows_make(rows *r, kv_dtype t, int64_t n, int64_t d, uint64_t *seed) {
    r->x = malloc((size_t)(n * d) * sizeof *r->x);
    r->back = malloc((size_t)(n * d) * sizeof *r->back);
    r->stored = malloc(kv_dtype_bytes(t, d) * (size_t)n);
    assert_true(r->x && r->back && r->stored);
    for (int64_t i = 0; i < n * d; i++) r->x[i] = 3.0f * frand(seed);
    for (int64_t i = 0; i < n; i++) {
        uint8_t *row = r->stored + kv_dtype_bytes(t, d) * (size_t)i;
        assert_int_equal(kv_quantize(t, r->x + i * d, row, d), KV_OK);
        assert_int_equal(kv_dequantize(t, row, r->back + i * d, d), KV_OK);
    }
}

static void rows_free(rows *r) {
    free(r->x);
    free(r->back);
    free(r->stored);
}

/* The largest error the format's rounding allows for value i of a row:
 * f16 rounds to nearest, 2^-11 relative (normal range: |x| here is far
 * above 2^-14); q8_0 stores d = amax/127 as fp16 (2^-11 relative) and
 * q = round(x/d), so |x - d'q| <= d/2 + 127 d 2^-11 < 0.57 d. */
static double format_err(kv_dtype t, const float *row, int64_t i) {
    if (t == KV_F16) return fabs((double)row[i]) * 0x1p-11;
    double amax = 0;
    for (int64_t j = i / 32 * 32; j < i / 32 * 32 + 32; j++) amax = fmax(amax, fabs((double)row[j]));
    return 0.57 * amax / 127.0;
}

/* kv_dots_kv and kv_wsum_kv, per ISA, against float64 sums:
 * - over the values the stored rows read back as (what attention reads),
 *   only fp32 arithmetic differs: the kernels sum d products (or n
 *   weighted values) in another order, and q8_0's dot multiplies d once
 *   per block instead of per value, so |error| <= (terms + 2) * 2^-24 *
 *   sum of |terms| (the classic bound for a float sum of products);
 * - over the original floats, the format's rounding adds at most
 *   sum |q_i| * format_err(i) to a dot, sum |w_t| * format_err(t, c) to a
 *   weighted sum.
 * The portable reference (kv_*_kv_ref) is held to the same bounds. */
static void check_kernels(kv_dtype t, int64_t n, int64_t d, uint64_t seed) {
    rows K, V;
    rows_make(&K, t, n, d, &seed);
    rows_make(&V, t, n, d, &seed);
    float *q = malloc((size_t)d * sizeof *q), *w = malloc((size_t)n * sizeof *w);
    float *dots = malloc((size_t)n * sizeof *dots), *o = malloc((size_t)d * sizeof *o);
    assert_true(q && w && dots && o);
    for (int64_t i = 0; i < d; i++) q[i] = frand(&seed);
    for (int64_t j = 0; j < n; j++) w[j] = j % 5 == 3 ? 0.0f : fabsf(frand(&seed)); /* zeros are skipped */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0) kv_dots_kv(t, q, K.stored, n, d, dots), kv_wsum_kv(t, o, w, V.stored, n, d);
        else kv_dots_kv_ref(t, q, K.stored, n, d, dots), kv_wsum_kv_ref(t, o, w, V.stored, n, d);
        for (int64_t j = 0; j < n; j++) {
            double exact = 0, orig = 0, mag = 0, fmt = 0;
            for (int64_t i = 0; i < d; i++) {
                exact += (double)q[i] * K.back[j * d + i];
                orig += (double)q[i] * K.x[j * d + i];
                mag += fabs((double)q[i] * K.back[j * d + i]);
                fmt += fabs((double)q[i]) * format_err(t, K.x + j * d, i);
            }
            const double arith = (double)(d + 2) * EPS32 * mag;
            if (!(fabs(dots[j] - exact) <= arith) || !(fabs(dots[j] - orig) <= arith + fmt))
                fail_msg("%s dot, isa %s, pass %d, n %lld d %lld row %lld: got %.9g, exact %.9g (bound %g), "
                         "unrounded %.9g (bound %g)", kv_dtype_name(t), kv_isa_name(kv_kernels_isa()), pass,
                         (long long)n, (long long)d, (long long)j, dots[j], exact, arith, orig, arith + fmt);
        }
        for (int64_t c = 0; c < d; c++) {
            double exact = 0, orig = 0, mag = 0, fmt = 0;
            for (int64_t j = 0; j < n; j++) {
                exact += (double)w[j] * V.back[j * d + c];
                orig += (double)w[j] * V.x[j * d + c];
                mag += fabs((double)w[j] * V.back[j * d + c]);
                fmt += fabs((double)w[j]) * format_err(t, V.x + j * d, c);
            }
            const double arith = (double)(n + 2) * EPS32 * mag;
            if (!(fabs(o[c] - exact) <= arith) || !(fabs(o[c] - orig) <= arith + fmt))
                fail_msg("%s weighted sum, isa %s, pass %d, n %lld d %lld column %lld: got %.9g, exact %.9g (bound "
                         "%g), unrounded %.9g (bound %g)", kv_dtype_name(t), kv_isa_name(kv_kernels_isa()), pass,
                         (long long)n, (long long)d, (long long)c, o[c], exact, arith, orig, arith + fmt);
        }
    }
    free(q), free(w), free(dots), free(o);
    rows_free(&K);
    rows_free(&V);
}

static kv_isa g_best;

/* The best ISA back after test_kernels, even when it failed midway. */
static int restore_isa(void **state) {
    (void)state;
    return kv_kernels_set_isa(g_best) == KV_OK ? 0 : -1;
}

static void test_kernels(void **state) {
    (void)state;
    g_best = kv_kernels_isa();
    int isas = 0;
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        isas++;
        const int64_t dims[4] = {32, 64, 128, 256}, lens[4] = {1, 3, 37, 300};
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) {
                check_kernels(KV_F16, lens[b], dims[a], 7 + (uint64_t)(a * 4 + b));
                check_kernels(KV_Q8_0, lens[b], dims[a], 101 + (uint64_t)(a * 4 + b));
            }
        check_kernels(KV_F16, 9, 40, 5); /* f16 rows need not be whole vectors: the tails */
        check_kernels(KV_F16, 9, 12, 6);
        check_kernels(KV_Q8_0, 9, 96, 8); /* an odd number of blocks: the weighted sum's last pass has one */
    }
    assert_true(isas >= 1);
}

/* ------------------------------------------------ a model's logits */

enum { DIM = 128, HIDDEN = 256, LAYERS = 3, HEADS = 4, KV_HEADS = 2, VOCAB = 512, CTX = 512, N_PROMPT = 200,
       GEN = 24 };

static char g_tmp[256];
static kv_model *g_model;

static int setup(void **state) {
    (void)state;
    if (!tu_mkdtemp(g_tmp, sizeof g_tmp)) return -1;
    char p[512];
    snprintf(p, sizeof p, "%s/model.gguf", g_tmp);
    tu_write_llama(p, &(tu_llama_shape){DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB, CTX, 21}); /* head_dim 32 */
    kv_model_params mp = kv_model_default_params();
    mp.no_tokenizer = 1;
    return kv_model_load(p, &mp, &g_model) == KV_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    kv_model_free(g_model);
    tu_rmdir(g_tmp);
    return 0;
}

/* The prompt in one call, then GEN greedy steps: logits [1 + GEN][VOCAB]
 * (after the prompt, then after each step), the tokens chosen, and the
 * cache's bytes after the prompt. */
static void run(kv_cache_type t, float *logits, int32_t *toks, size_t *bytes) {
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = 2;
    cp.kv_type = t;
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(g_model, &cp, &c), KV_OK);
    int32_t prompt[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++) prompt[i] = (int32_t)((i * 37 + 5) % VOCAB);
    assert_int_equal(kv_ctx_eval(c, prompt, N_PROMPT, logits, 0), KV_OK);
    *bytes = kv_cache_bytes(kv_ctx_cache(c));
    for (int s = 0; s < GEN; s++) {
        toks[s] = kv_argmax(logits + (size_t)s * VOCAB, VOCAB);
        assert_int_equal(kv_ctx_eval(c, &toks[s], 1, logits + (size_t)(s + 1) * VOCAB, 0), KV_OK);
    }
    kv_ctx_free(c);
}

/* The same tokens in one prefill call (all logits), so that each step's
 * logits come from the float path over the stored rows instead of the
 * typed decode kernels: rows [GEN][VOCAB], those after each of toks. */
static void run_prefill(kv_cache_type t, const int32_t *toks, float *rows) {
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = 2;
    cp.kv_type = t;
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(g_model, &cp, &c), KV_OK);
    int32_t all[N_PROMPT + GEN];
    for (int i = 0; i < N_PROMPT; i++) all[i] = (int32_t)((i * 37 + 5) % VOCAB);
    memcpy(all + N_PROMPT, toks, GEN * sizeof *toks);
    float *lg = malloc((size_t)(N_PROMPT + GEN) * VOCAB * sizeof *lg);
    assert_non_null(lg);
    assert_int_equal(kv_ctx_eval(c, all, N_PROMPT + GEN, lg, 1), KV_OK);
    memcpy(rows, lg + (size_t)N_PROMPT * VOCAB, (size_t)GEN * VOCAB * sizeof *rows);
    free(lg);
    kv_ctx_free(c);
}

/* Largest |a - b| over the rows relative to the largest |a|. */
static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)a[i]));
    }
    return d / m;
}

/* f16 and q8_0 caches against an f32 cache on the same tokens: the prompt
 * (prefill reads the cache converted to floats) and GEN greedy decode steps
 * (the typed kernels). Each stored key and value carries its format's
 * rounding and nothing else: f16 2^-11 = 4.9e-4 relative; q8_0 up to
 * half a quantum, amax/254 of its block (0.4% of the block's largest
 * value, relatively more for the small values). This synthetic model's
 * queries and keys are scaled up (test_synth.h: attention is peaked), so
 * a score moves by up to that relative error times sum |q_i k_i|, which is
 * large, and the softmax passes it on: the logits move by a few times the
 * per-value error. Measured here: f16 2.0e-3 of the largest logit (3e-3 on
 * the prompt's row), q8_0 7e-2. Bounds: f16 1e-2 (20 times its per-value
 * error), q8_0 0.2 (50 times); the kernels themselves are held to fp32
 * rounding above, so these bound the format, not the arithmetic. Greedy
 * decoding must choose the same GEN tokens with f16 (its error stays far
 * below the margins between the top logits here); q8_0 may part (it does
 * after 2 tokens), and only the logits up to there are compared. The bytes
 * are exact: rows of 128, 64 and 34 bytes for head_dim 32. The check is
 * not vacuous: the types do change the logits (q8_0 more than f16).
 * Then the decode steps against the same tokens through prefill, which
 * reads the stored rows converted to floats: the typed kernels must agree
 * with that path to fp32 arithmetic, plus the rare key or value that the
 * decode's matrix-vector products and prefill's sgemm make a rounding
 * step apart (see test_prefill.c): measured 6e-6 (f16) and 2e-6 (q8_0) of
 * the largest logit, bounded at 1e-4 (a score left out of the decode dots
 * moves it by 6e-4 and 0.13). */
static void test_logits_against_f32(void **state) {
    (void)state;
    const size_t nl = (size_t)(1 + GEN) * VOCAB;
    float *ref = malloc(nl * sizeof *ref), *got = malloc(nl * sizeof *got);
    int32_t ref_tok[GEN], tok[GEN];
    size_t bytes[3];
    assert_true(ref && got);
    run(KV_CACHE_F32, ref, ref_tok, &bytes[0]);
    double diff[3] = {0, 0, 0};
    for (int t = 1; t < 3; t++) {
        run((kv_cache_type)t, got, tok, &bytes[t]);
        /* teacher-forced comparison needs the same tokens: compare the
         * prompt's logits always, the steps while the tokens agree */
        int agree = 0;
        while (agree < GEN && tok[agree] == ref_tok[agree]) agree++;
        diff[t] = rel_diff(ref, got, (size_t)(1 + agree) * VOCAB);
        print_message("kv_type %s: max |logit diff| / max |logit| %g over %d steps; greedy agrees for %d of %d "
                      "tokens; %zu bytes after the prompt (f32 %zu)\n", kv_cache_type_name((kv_cache_type)t),
                      diff[t], agree, agree, GEN, bytes[t], bytes[0]);
        if (t == KV_CACHE_F16) assert_int_equal(agree, GEN);
        float *pre = malloc((size_t)GEN * VOCAB * sizeof *pre);
        assert_non_null(pre);
        run_prefill((kv_cache_type)t, tok, pre);
        const double dp = rel_diff(pre, got + VOCAB, (size_t)GEN * VOCAB);
        print_message("kv_type %s: decode kernels against prefill's float path: %g\n",
                      kv_cache_type_name((kv_cache_type)t), dp);
        assert_true(dp <= 1e-4);
        free(pre);
    }
    assert_true(diff[1] > 0 && diff[1] <= 1e-2);
    assert_true(diff[2] > diff[1] && diff[2] <= 0.2);
    /* every head holds N_PROMPT slots: the bytes scale with the row size */
    const size_t slots_cap = bytes[0] / (2 * 32 * 4 + 4);
    assert_int_equal(bytes[0], slots_cap * (2 * 128 + 4));
    assert_int_equal(bytes[1], slots_cap * (2 * 64 + 4));
    assert_int_equal(bytes[2], slots_cap * (2 * 34 + 4));
    free(ref);
    free(got);
}

/* A q8_0 cache for a model whose head_dim is not whole blocks is refused
 * when the context is made, naming head_dim. */
static void test_q8_0_refused(void **state) {
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/hd24.gguf", g_tmp);
    tu_write_llama(p, &(tu_llama_shape){96, 128, 1, 4, 2, 64, 64, 3}); /* head_dim 24 */
    kv_model_params mp = kv_model_default_params();
    mp.no_tokenizer = 1;
    kv_model *m;
    assert_int_equal(kv_model_load(p, &mp, &m), KV_OK);
    kv_ctx_params cp = kv_ctx_default_params();
    cp.kv_type = KV_CACHE_Q8_0;
    kv_ctx *c = NULL;
    assert_int_equal(kv_ctx_new(m, &cp, &c), KV_EINVAL);
    assert_null(c);
    assert_non_null(strstr(kv_last_error(), "head_dim is 24"));
    cp.kv_type = KV_CACHE_F16;
    assert_int_equal(kv_ctx_new(m, &cp, &c), KV_OK);
    kv_ctx_free(c);
    kv_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_kernels, restore_isa),
        cmocka_unit_test(test_logits_against_f32),
        cmocka_unit_test(test_q8_0_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
