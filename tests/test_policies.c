/* test_policies.c - properties every KV policy must have, on the real
 * stories260K model, and each selection rule on hand-made caches:
 *  - with a budget at or above the sequence length, logits equal the full
 *    cache's bit for bit;
 *  - after every step no (layer, KV head) holds more than the budget, and
 *    the physical bytes held go down with the budget;
 *  - nothing survives from one sample to the next;
 *  - bad policy names, parameters and budgets are errors naming them. */
#include "test_util.h"

#include <math.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "context.h"
#include "kv_error.h"
#include "model.h"
#include "policy.h"
#include "sampler.h"

static kv_model *g_model;

static int setup(void **state) {
    (void)state;
    char p[1024];
    if (!tu_model_path("stories260K/stories260K.bin", p, sizeof p)) return 0; /* tests skip */
    kv_model_params mp = kv_model_default_params();
    mp.no_tokenizer = 1;
    return kv_model_load(p, &mp, &g_model) == KV_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    kv_model_free(g_model);
    return 0;
}

enum { V = 512, PROMPT = 40, GEN = 30 };

/* Prompt tokens (seeded by `salt`), prefilled in one call, then GEN greedy
 * decode steps; logits of every step into out [1 + GEN][V]. After each
 * call, checks the budget held and records the most slots seen. */
static void run(kv_ctx *c, kv_policy *p, int salt, float *out, int32_t *max_seen, size_t *bytes_end) {
    int32_t t[PROMPT];
    for (int i = 0; i < PROMPT; i++) t[i] = (int32_t)((i * 37 + salt * 101 + 3) % V);
    kv_ctx_reset(c);
    pol_begin(p, PROMPT);
    pol_attach(p, c);
    *max_seen = 0;
    assert_int_equal(kv_ctx_eval(c, t, PROMPT, out, 0), KV_OK);
    for (int s = 0; s <= GEN; s++) {
        int32_t held = kv_cache_max_len(kv_ctx_cache(c));
        if (held > *max_seen) *max_seen = held;
        if (p->limit != INT32_MAX && held > p->limit)
            fail_msg("%s: %d slots held in one head, budget %d (step %d)", p->ops->name, held, p->limit, s);
        if (s == GEN) break;
        int32_t next = kv_argmax(out + (size_t)s * V, V);
        assert_int_equal(kv_ctx_eval(c, &next, 1, out + (size_t)(s + 1) * V, 0), KV_OK);
    }
    if (bytes_end) *bytes_end = kv_cache_bytes(kv_ctx_cache(c));
}

static kv_policy *make_set(const char *name, const char *budget, const char *setting) {
    pol_budget b;
    assert_int_equal(pol_budget_parse(budget, &b), KV_OK);
    kv_policy *p;
    const char *s[1] = {setting};
    int rc = pol_new(name, setting ? s : NULL, setting ? 1 : 0, &b, 7, kv_model_get_info(g_model), &p);
    if (rc) fail_msg("%s", kv_last_error());
    return p;
}

static kv_policy *make(const char *name, const char *budget) { return make_set(name, budget, NULL); }

static void test_large_budget_is_full(void **state) {
    (void)state;
    if (!g_model) skip();
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(g_model, NULL, &c), KV_OK);
    float *ref = malloc((1 + GEN) * V * sizeof(float)), *got = malloc((1 + GEN) * V * sizeof(float));
    int32_t seen;
    kv_policy *full = make("full", "none");
    run(c, full, 1, ref, &seen, NULL);
    assert_int_equal(seen, PROMPT + GEN);
    pol_free(full);
    for (int i = 0; i < pol_count(); i++) {
        /* PROMPT + GEN + 1 slots: never evicts; in-cache positions then equal
         * the true ones, so both position modes match the full cache exactly */
        const char *settings[2] = {NULL, "positions=cache"};
        for (int k = 0; k < 2; k++) {
            kv_policy *p = make_set(pol_at(i)->name, "71", settings[k]);
            run(c, p, 1, got, &seen, NULL);
            if (memcmp(got, ref, (1 + GEN) * V * sizeof(float)) != 0)
                fail_msg("%s (%s) with a budget above the length differs from the full cache", p->ops->name,
                         settings[k] ? settings[k] : "original positions");
            pol_free(p);
        }
    }
    free(ref);
    free(got);
    kv_ctx_free(c);
}

static void test_budget_never_exceeded(void **state) {
    (void)state;
    if (!g_model) skip();
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(g_model, NULL, &c), KV_OK);
    float *out = malloc((1 + GEN) * V * sizeof(float));
    int32_t seen;
    size_t full_bytes;
    kv_policy *full = make("full", "none");
    run(c, full, 2, out, &seen, &full_bytes);
    pol_free(full);
    const char *budgets[3] = {"8", "17", "25%"};
    for (int i = 1; i < pol_count(); i++)
        for (int k = 0; k < 3; k++) {
            kv_policy *p = make(pol_at(i)->name, budgets[k]);
            size_t bytes;
            run(c, p, 2, out, &seen, &bytes);
            assert_int_equal(seen, p->limit); /* the cache fills up to the budget and stays there */
            assert_true(bytes < full_bytes / 2); /* memory is freed for real */
            pol_free(p);
        }
    free(out);
    kv_ctx_free(c);
}

/* Sample B after sample A in one context and one policy instance equals
 * sample B in fresh ones, bit for bit. */
static void test_no_state_leak(void **state) {
    (void)state;
    if (!g_model) skip();
    float *fresh = malloc((1 + GEN) * V * sizeof(float)), *after = malloc((1 + GEN) * V * sizeof(float));
    int32_t seen;
    for (int i = 0; i < pol_count(); i++) {
        kv_ctx *c1, *c2;
        assert_int_equal(kv_ctx_new(g_model, NULL, &c1), KV_OK);
        assert_int_equal(kv_ctx_new(g_model, NULL, &c2), KV_OK);
        kv_policy *p1 = make(pol_at(i)->name, "12"), *p2 = make(pol_at(i)->name, "12");
        run(c1, p1, 5, fresh, &seen, NULL);
        run(c2, p2, 9, after, &seen, NULL); /* another sample first */
        run(c2, p2, 5, after, &seen, NULL);
        if (memcmp(fresh, after, (1 + GEN) * V * sizeof(float)) != 0)
            fail_msg("%s: a second sample differs from the same sample run fresh", pol_at(i)->name);
        pol_free(p1);
        pol_free(p2);
        kv_ctx_free(c1);
        kv_ctx_free(c2);
    }
    free(fresh);
    free(after);
}

/* ------------------------------------------- selection rules by hand */

/* One layer, one KV head, two query heads; slots hold positions 0..n-1. */
static kv_cache *hand_cache(int32_t n) {
    kv_cache *c;
    assert_int_equal(kv_cache_new(1, 1, 2, &c), KV_OK);
    for (int32_t t = 0; t < n; t++) {
        float k[2] = {(float)t, 1.0f}, v[2] = {0, 0};
        assert_int_equal(kv_cache_append(c, kv_cache_head_at(c, 0, 0), k, v, t), KV_OK);
    }
    return c;
}

static int cmp_i32(const void *a, const void *b) {
    return (*(const int32_t *)a > *(const int32_t *)b) - (*(const int32_t *)a < *(const int32_t *)b);
}

/* The head holds exactly these positions (in any slot order), each with
 * the key it was appended with. */
static void expect_positions(kv_cache *c, const int32_t *want, int32_t n) {
    kv_cache_head *h = kv_cache_head_at(c, 0, 0);
    assert_int_equal(h->len, n);
    int32_t got[64];
    for (int32_t j = 0; j < n; j++) {
        got[j] = h->pos[j];
        assert_true(h->k[2 * j] == (float)h->pos[j]); /* the key moved with its position */
    }
    qsort(got, (size_t)n, sizeof *got, cmp_i32);
    for (int32_t j = 0; j < n; j++)
        if (got[j] != want[j]) fail_msg("held positions differ at %d: %d, expected %d", j, got[j], want[j]);
}

/* The slot holding position `pos`. */
static int32_t slot_of(kv_cache *c, int32_t pos) {
    kv_cache_head *h = kv_cache_head_at(c, 0, 0);
    for (int32_t j = 0; j < h->len; j++)
        if (h->pos[j] == pos) return j;
    fail_msg("position %d not held", pos);
    return -1;
}

static kv_policy *hand_policy(const char *name, int32_t limit, const char *set) {
    kv_model_info mi = {.n_layers = 1, .n_heads = 2, .n_kv_heads = 1};
    pol_budget b = {POL_BUDGET_TOKENS, limit};
    kv_policy *p;
    const char *s[1] = {set};
    assert_int_equal(pol_new(name, set ? s : NULL, set ? 1 : 0, &b, 1, &mi, &p), KV_OK);
    pol_begin(p, 100);
    return p;
}

static void test_rules_by_hand(void **state) {
    (void)state;
    /* window 4 of 10: positions 6..9 */
    kv_cache *c = hand_cache(10);
    kv_policy *p = hand_policy("window", 4, NULL);
    kv_attn_view v = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 1, .stride = 10};
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    expect_positions(c, (int32_t[]){6, 7, 8, 9}, 4);
    pol_free(p);
    kv_cache_free(c);

    /* streamingllm 6 with 2 sinks of 10: 0, 1, 6..9 */
    c = hand_cache(10);
    p = hand_policy("streamingllm", 6, "sinks=2");
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    expect_positions(c, (int32_t[]){0, 1, 6, 7, 8, 9}, 6);
    pol_free(p);
    kv_cache_free(c);

    /* h2o budget 4, recent 0.5: 2 recent (8, 9) + the 2 best of 0..7 by the
     * sum over both query heads: slot 3 (0.3 + 0.2) and slot 5 (0.1 + 0.5) */
    c = hand_cache(10);
    p = hand_policy("h2o", 4, "recent=0.5");
    float colsum[2][10] = {{0.1f, 0, 0, 0.3f, 0, 0.1f, 0.2f, 0, 0.2f, 0.1f},
                           {0.0f, 0.1f, 0, 0.2f, 0, 0.5f, 0, 0.1f, 0, 0.1f}};
    kv_attn_view hv = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 1, .stride = 10, .colsum = &colsum[0][0]};
    assert_int_equal(p->ops->on_layer(p, c, &hv), KV_OK);
    expect_positions(c, (int32_t[]){3, 5, 8, 9}, 4);
    /* scores travel with their slots: a new token, all attention on
     * position 8's slot (now slot 2) makes it the heaviest; recent = {9, 10} */
    float k[2] = {10, 1}, vv[2] = {0, 0};
    assert_int_equal(kv_cache_append(c, kv_cache_head_at(c, 0, 0), k, vv, 10), KV_OK);
    float colsum2[2][5] = {{0}};
    colsum2[0][slot_of(c, 8)] = colsum2[1][slot_of(c, 8)] = 1.0f;
    hv.colsum = &colsum2[0][0];
    hv.stride = 5;
    assert_int_equal(p->ops->on_layer(p, c, &hv), KV_OK);
    expect_positions(c, (int32_t[]){5, 8, 9, 10}, 4); /* 8 (2.0+0.2) and 5 (0.6) beat 3 (0.5) */
    pol_free(p);
    kv_cache_free(c);

    /* tova budget 3: mean over heads of the last row */
    c = hand_cache(6);
    p = hand_policy("tova", 3, NULL);
    float last[2][6] = {{0.5f, 0, 0.1f, 0.1f, 0.3f, 0}, {0.1f, 0.1f, 0.5f, 0, 0.1f, 0.2f}};
    kv_attn_view tv = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 1, .stride = 6, .last_row = &last[0][0]};
    assert_int_equal(p->ops->on_layer(p, c, &tv), KV_OK);
    expect_positions(c, (int32_t[]){0, 2, 4}, 3); /* means .3 .05 .3 .05 .2 .1 */
    pol_free(p);
    kv_cache_free(c);

    /* knorm budget 2: keys (t, 1) have norms growing with t: keep 0 and 1 */
    c = hand_cache(5);
    p = hand_policy("knorm", 2, NULL);
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    expect_positions(c, (int32_t[]){0, 1}, 2);
    pol_free(p);
    kv_cache_free(c);
}

/* The engine's statistics, two ways: the column sums of a prefill equal the
 * sums of the newest-query rows seen one token at a time, and each row is a
 * distribution. */
typedef struct recorder {
    int layer;
    int32_t n;                      /* slots seen */
    float colsum[8][64], last[8][64], summed[8][64];
} recorder;

static int record(void *user, kv_cache *c, const kv_attn_view *v) {
    (void)c;
    recorder *r = user;
    if (v->layer != r->layer) return KV_OK;
    r->n = v->stride;
    for (int h = 0; h < v->n_heads; h++)
        for (int32_t j = 0; j < v->stride; j++) {
            r->colsum[h][j] = v->colsum[(size_t)h * v->stride + j];
            r->last[h][j] = v->last_row[(size_t)h * v->stride + j];
            r->summed[h][j] += v->last_row[(size_t)h * v->stride + j];
        }
    return KV_OK;
}

static void test_attention_statistics(void **state) {
    (void)state;
    if (!g_model) skip();
    enum { N = 50 };
    int32_t t[N];
    for (int i = 0; i < N; i++) t[i] = (int32_t)((i * 53 + 7) % V);
    for (int layer = 0; layer < 5; layer += 4) {
        recorder *pre = calloc(1, sizeof *pre), *dec = calloc(1, sizeof *dec);
        pre->layer = dec->layer = layer;
        kv_ctx *c;
        assert_int_equal(kv_ctx_new(g_model, NULL, &c), KV_OK);
        kv_ctx_hook hook = {.user = pre, .needs = KV_NEED_COLSUM | KV_NEED_LAST_ROW, .on_layer = record};
        kv_ctx_set_hook(c, &hook);
        assert_int_equal(kv_ctx_eval(c, t, N, NULL, 0), KV_OK);
        kv_ctx_reset(c);
        hook.user = dec;
        kv_ctx_set_hook(c, &hook);
        for (int i = 0; i < N; i++) assert_int_equal(kv_ctx_eval(c, &t[i], 1, NULL, 0), KV_OK);
        assert_int_equal(pre->n, N);
        assert_int_equal(dec->n, N);
        for (int h = 0; h < 8; h++) {
            double row_sum = 0, col_total = 0;
            for (int32_t j = 0; j < N; j++) {
                assert_true(fabsf(pre->colsum[h][j] - dec->summed[h][j]) < 1e-4f);
                assert_true(fabsf(pre->last[h][j] - dec->last[h][j]) < 1e-5f);
                row_sum += pre->last[h][j];
                col_total += pre->colsum[h][j];
            }
            assert_true(fabs(row_sum - 1.0) < 1e-5);
            assert_true(fabs(col_total - N) < 1e-3); /* N rows of mass 1 */
        }
        kv_ctx_free(c);
        free(pre);
        free(dec);
    }
}

static void test_errors(void **state) {
    (void)state;
    kv_model_info mi = {.n_layers = 1, .n_heads = 2, .n_kv_heads = 1};
    pol_budget b = {POL_BUDGET_TOKENS, 8}, none = {POL_BUDGET_NONE, 0};
    kv_policy *p;
    assert_int_equal(pol_new("nope", NULL, 0, &b, 0, &mi, &p), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "unknown policy 'nope'"));
    const char *bad_key[1] = {"sink=4"}, *bad_val[1] = {"sinks=x"}, *range[1] = {"recent=1.5"}, *noeq[1] = {"sinks"};
    assert_int_equal(pol_new("streamingllm", bad_key, 1, &b, 0, &mi, &p), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "unknown parameter 'sink'"));
    assert_int_equal(pol_new("streamingllm", bad_val, 1, &b, 0, &mi, &p), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "sinks"));
    assert_int_equal(pol_new("h2o", range, 1, &b, 0, &mi, &p), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "outside [0, 1]"));
    assert_int_equal(pol_new("streamingllm", noeq, 1, &b, 0, &mi, &p), KV_EINVAL);
    const char *badpos[1] = {"positions=shifted"};
    assert_int_equal(pol_new("window", badpos, 1, &b, 0, &mi, &p), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "expected original or cache"));
    assert_int_equal(pol_new("h2o", NULL, 0, &none, 0, &mi, &p), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "needs a budget"));
    pol_budget x;
    assert_int_equal(pol_budget_parse("60%", &x), KV_OK);
    assert_int_equal(x.kind, POL_BUDGET_FRACTION);
    assert_int_equal(pol_budget_tokens(&x, 1000), 600);
    assert_int_equal(pol_budget_tokens(&x, 1), 1);
    assert_int_equal(pol_budget_parse("512", &x), KV_OK);
    assert_int_equal(pol_budget_tokens(&x, 10), 512);
    const char *bad[] = {"0", "-5", "12.5", "150%", "0%", "abc", "5x", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(pol_budget_parse(bad[i], &x), KV_EINVAL);
        assert_non_null(strstr(kv_last_error(), "budget"));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_budget_is_full), cmocka_unit_test(test_budget_never_exceeded),
        cmocka_unit_test(test_no_state_leak),        cmocka_unit_test(test_rules_by_hand),
        cmocka_unit_test(test_attention_statistics),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
