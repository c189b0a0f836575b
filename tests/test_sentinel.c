/* test_sentinel.c - the training-free sentinel-token proxies on the real
 * stories260K model: the spans (lengths, placement, exact budget, seeded),
 * what each mode keeps (the span ends, in order, with the full cache's keys
 * and values for mode=last and the span means for mode=merge), one-shot
 * behaviour in decode, and nothing carried between sequences. Then the
 * engine's explicit layouts (kv_ctx_eval_ext) and what the sentinel method
 * leaves in the cache (its logits are checked against numpy in
 * tests/reference/check_sentinel.py). */
#include "test_util.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "context.h"
#include "kv_error.h"
#include "model.h"
#include "policy_impl.h" /* unit tests of the sentinel methods */
#include "sentinel_proxy.h"

static kv_model *g_model;

static int setup(void **state) {
    (void)state;
    char p[1024];
    if (!tu_model_path("stories260K/stories260K.bin", p, sizeof p)) return 0;
    kv_model_params mp = kv_model_default_params();
    mp.no_tokenizer = 1;
    return kv_model_load(p, &mp, &g_model) == KV_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    kv_model_free(g_model);
    return 0;
}

enum { N = 120, BUDGET = 50, RECENT = 8, MAX_SPAN = 10 };

static void prompt_tokens(int32_t *t, int n, int salt) {
    for (int i = 0; i < n; i++) t[i] = i == 0 ? 1 : 3 + (i * 37 + salt * 101) % 500;
}

static kv_policy *make(const char *mode, uint64_t seed) {
    char m[32], ms[32], r[32];
    snprintf(m, sizeof m, "mode=%s", mode);
    snprintf(ms, sizeof ms, "max_span=%d", MAX_SPAN);
    snprintf(r, sizeof r, "recent=%d", RECENT);
    const char *set[] = {m, ms, r};
    pol_budget b = {POL_BUDGET_TOKENS, BUDGET};
    kv_policy *p = NULL;
    assert_int_equal(pol_new("sentinel_proxy", set, 3, &b, seed, kv_model_get_info(g_model), &p), KV_OK);
    return p;
}

/* The spans cover [1, N - RECENT), are 2..MAX_SPAN long, contiguous, and free
 * exactly N - BUDGET slots; the same seed lays them out the same way. */
static void test_spans(void **state) {
    (void)state;
    if (!g_model) skip();
    kv_policy *p = make("last", 7), *q = make("last", 7), *r = make("last", 8);
    pol_begin(p, N);
    pol_begin(q, N);
    pol_begin(r, N);
    int32_t n, nq, nr;
    const int32_t *se = pol_sentinel_spans(p, &n), *sq = pol_sentinel_spans(q, &nq), *sr = pol_sentinel_spans(r, &nr);
    assert_int_equal(n, N);
    assert_int_equal(nq, N);
    assert_memory_equal(se, sq, N * sizeof *se);
    assert_true(memcmp(se, sr, N * sizeof *se) != 0); /* another seed, other spans */
    assert_int_equal(se[0], -1);                       /* BOS stays */
    int freed = 0;
    for (int i = 0; i < N;) {
        if (se[i] < 0) { i++; continue; }
        int e = se[i], len = e - i + 1;
        assert_true(len >= 2 && len <= MAX_SPAN);
        assert_true(e < N - RECENT);
        for (int k = i; k <= e; k++) assert_int_equal(se[k], e);
        freed += len - 1;
        i = e + 1;
    }
    assert_int_equal(freed, N - BUDGET);
    for (int l = 0; l < p->n_layers; l++) assert_int_equal(p->layer_limit[l], BUDGET);
    pol_free(p);
    pol_free(q);
    pol_free(r);
}

/* The slots of a full-cache run of the same prompt, for comparison. */
static kv_ctx *full_run(const int32_t *t) {
    kv_ctx *c;
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = 1;
    cp.max_batch = 32; /* the same chunks as the policy's run: the same arithmetic */
    assert_int_equal(kv_ctx_new(g_model, &cp, &c), KV_OK);
    assert_int_equal(kv_ctx_eval(c, t, N, NULL, 0), KV_OK);
    return c;
}

static void check_mode(const char *mode) {
    int32_t t[N];
    prompt_tokens(t, N, 1);
    kv_ctx *ref = full_run(t);
    kv_ctx *c;
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = 1;
    cp.max_batch = 32; /* the prompt arrives in chunks: compression waits for its end */
    assert_int_equal(kv_ctx_new(g_model, &cp, &c), KV_OK);
    kv_policy *p = make(mode, 3);
    pol_begin(p, N);
    pol_attach(p, c);
    assert_int_equal(kv_ctx_eval(c, t, N, NULL, 0), KV_OK);
    int32_t n;
    const int32_t *se = pol_sentinel_spans(p, &n);
    kv_cache *pc = kv_ctx_cache(c), *rc = kv_ctx_cache(ref);
    int hd = kv_cache_head_dim(pc), merge = !strcmp(mode, "merge");
    for (int l = 0; l < kv_cache_n_layers(pc); l++)
        for (int g = 0; g < kv_cache_n_kv_heads(pc); g++) {
            kv_cache_head *h = kv_cache_head_at(pc, l, g), *f = kv_cache_head_at(rc, l, g);
            assert_int_equal(h->len, BUDGET);
            int32_t j = 0;
            for (int32_t pos = 0; pos < N; pos++) {
                if (se[pos] >= 0 && se[pos] != pos) continue; /* inside a span: gone */
                assert_true(j < h->len);
                assert_int_equal(h->pos[j], pos); /* in order */
                int s = pos;
                if (merge && se[pos] == pos)
                    while (s > 0 && se[s - 1] == pos) s--;
                for (int d = 0; d < hd; d++) {
                    double ks = 0, vs = 0;
                    for (int q = s; q <= pos; q++) ks += ((const float *)f->kb)[(size_t)q * hd + d], vs += ((const float *)f->vb)[(size_t)q * hd + d];
                    ks /= pos - s + 1;
                    vs /= pos - s + 1;
                    assert_true(fabs(((const float *)h->kb)[(size_t)j * hd + d] - ks) <= 1e-6 * (1 + fabs(ks)));
                    assert_true(fabs(((const float *)h->vb)[(size_t)j * hd + d] - vs) <= 1e-6 * (1 + fabs(vs)));
                }
                j++;
            }
            assert_int_equal(j, h->len);
        }
    /* decode: one-shot, every generated token kept */
    int32_t tok = 42;
    for (int i = 0; i < 5; i++) assert_int_equal(kv_ctx_eval(c, &tok, 1, NULL, 0), KV_OK);
    assert_int_equal(kv_cache_max_len(pc), BUDGET + 5);
    /* a new sequence starts from nothing and compresses again */
    kv_ctx_reset(c);
    prompt_tokens(t, N, 2);
    pol_begin(p, N);
    assert_int_equal(kv_ctx_eval(c, t, N, NULL, 0), KV_OK);
    assert_int_equal(kv_cache_max_len(pc), BUDGET);
    assert_int_equal(kv_cache_total_slots(pc), (int64_t)BUDGET * kv_cache_n_layers(pc) * kv_cache_n_kv_heads(pc));
    pol_free(p);
    kv_ctx_free(c);
    kv_ctx_free(ref);
}

static void test_last(void **state) {
    (void)state;
    if (!g_model) skip();
    check_mode("last");
}

static void test_merge(void **state) {
    (void)state;
    if (!g_model) skip();
    check_mode("merge");
}

/* Labelled as a proxy wherever it is listed. */
/* A layout of the next positions and no masks is the causal rule:
 * bit-identical to kv_ctx_eval; bad layouts are refused, naming why. */
static void test_eval_layout(void **state) {
    (void)state;
    if (!g_model) skip();
    const int32_t V = kv_model_get_info(g_model)->vocab_size;
    int32_t t[N], pos[N];
    prompt_tokens(t, N, 5);
    for (int i = 0; i < N; i++) pos[i] = i;
    float *a = malloc((size_t)N * V * sizeof(float)), *b = malloc((size_t)N * V * sizeof(float));
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(g_model, NULL, &c), KV_OK);
    assert_int_equal(kv_ctx_eval(c, t, N, a, 1), KV_OK);
    kv_ctx_reset(c);
    kv_eval_layout lay = {pos, NULL, NULL};
    assert_int_equal(kv_ctx_eval_ext(c, t, N, &lay, b, 1), KV_OK);
    assert_memory_equal(a, b, (size_t)N * V * sizeof(float));
    assert_int_equal(kv_ctx_pos(c), N);
    /* a query that sees nothing but itself gives other logits than causal */
    uint8_t none[N];
    memset(none, 0, sizeof none);
    kv_ctx_reset(c);
    kv_eval_layout alone = {pos, none, none};
    uint8_t *sees0 = calloc((size_t)N * N, 1);
    alone.sees = sees0;
    assert_int_equal(kv_ctx_eval_ext(c, t, N, &alone, b, 1), KV_OK);
    assert_memory_equal(a, b, (size_t)V * sizeof(float)); /* the first token sees only itself anyway */
    assert_memory_not_equal(a + (size_t)(N - 1) * V, b + (size_t)(N - 1) * V, (size_t)V * sizeof(float));
    free(sees0);
    /* refused: decreasing positions, more than one batch, in-cache positions */
    kv_ctx_reset(c);
    pos[3] = 1;
    assert_int_equal(kv_ctx_eval_ext(c, t, 8, &lay, NULL, 0), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "non-decreasing"));
    pos[3] = 3;
    int32_t *many = calloc(600, sizeof *many), *mpos = calloc(600, sizeof *mpos);
    for (int i = 0; i < 600; i++) mpos[i] = i, many[i] = 5;
    kv_eval_layout big = {mpos, NULL, NULL};
    assert_int_equal(kv_ctx_eval_ext(c, many, 600, &big, NULL, 0), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "one forward"));
    kv_ctx_hook h = {.positions = KV_POS_CACHE};
    kv_ctx_set_hook(c, &h);
    assert_int_equal(kv_ctx_eval_ext(c, t, 8, &lay, NULL, 0), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "positions=original"));
    free(many);
    free(mpos);
    free(a);
    free(b);
    kv_ctx_free(c);
}

/* The method on stories260K with two stand-in ids (its vocabulary has no
 * sentinels, so only the mechanics are checked here): after the prompt
 * every head holds the ordinary tokens and one <CR> slot per span at the
 * span's last position, with the budget's count; generated tokens are
 * appended; a second prompt starts from nothing. */
static void test_method_cache(void **state) {
    (void)state;
    if (!g_model) skip();
    const char *set[] = {"cl=510", "cr=511", "max_span=10"};
    pol_budget bud = {POL_BUDGET_TOKENS, BUDGET};
    kv_policy *p = NULL;
    assert_int_equal(pol_new("sentinel", set, 3, &bud, 3, kv_model_get_info(g_model), &p), KV_OK);
    assert_int_equal(pol_check_model(p, g_model), KV_OK);
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(g_model, NULL, &c), KV_OK);
    int32_t t[N];
    for (int round = 0; round < 2; round++) {
        prompt_tokens(t, N, round);
        kv_ctx_reset(c);
        pol_begin(p, N);
        pol_attach(p, c);
        assert_int_equal(pol_eval_prompt(p, c, t, N, NULL), KV_OK);
        assert_int_equal(kv_ctx_pos(c), N); /* the sentinels take no position */
        int32_t n_sp;
        const int32_t *span_end = pol_sentinel_spans(p, &n_sp);
        assert_non_null(span_end);
        assert_int_equal(n_sp, N);
        kv_cache *cache = kv_ctx_cache(c);
        for (int l = 0; l < kv_cache_n_layers(cache); l++)
            for (int g = 0; g < kv_cache_n_kv_heads(cache); g++) {
                const kv_cache_head *h = kv_cache_head_at(cache, l, g);
                assert_int_equal(h->len, BUDGET);
                for (int32_t j = 0; j < h->len; j++) { /* in order: outside spans, or a span's end (its <CR>) */
                    int32_t q = h->pos[j];
                    assert_true(q >= 0 && q < N);
                    assert_true(span_end[q] < 0 || span_end[q] == q);
                    if (j) assert_true(h->pos[j - 1] < q);
                }
            }
        int32_t next = 7;
        assert_int_equal(kv_ctx_eval(c, &next, 1, NULL, 0), KV_OK);
        assert_int_equal(kv_cache_max_len(cache), BUDGET + 1);
    }
    kv_ctx_free(c);
    pol_free(p);
}

static void test_labelled(void **state) {
    (void)state;
    const pol_ops *o = pol_find("sentinel_proxy");
    assert_non_null(o);
    assert_non_null(strstr(o->summary, "PROXY"));
    assert_true(o->flags & POL_ONE_SHOT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spans),
        cmocka_unit_test(test_last),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_labelled),
        cmocka_unit_test(test_eval_layout),
        cmocka_unit_test(test_method_cache),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
