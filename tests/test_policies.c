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
#include "policy_impl.h" /* unit tests of the methods: their vtables and fields */
#include "sampler.h"
#include "snap.h"

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

enum { MAX_LAYERS = 16 };

/* The most slots holding prompt tokens in one KV head of layer l. */
static int32_t prompt_slots(kv_cache *c, int l) {
    int32_t most = 0;
    for (int g = 0; g < kv_cache_n_kv_heads(c); g++) {
        const kv_cache_head *h = kv_cache_head_at(c, l, g);
        int32_t n = 0;
        for (int32_t j = 0; j < h->len; j++) n += h->pos[j] < PROMPT;
        if (n > most) most = n;
    }
    return most;
}

/* Prompt tokens (seeded by `salt`), prefilled in one call, then GEN greedy
 * decode steps; logits of every step into out [1 + GEN][V]. After each
 * call, checks the budget held and records the most slots seen (per layer
 * in seen_layer when given). A one-shot policy (POL_ONE_SHOT) holds at most
 * its layer's budget of prompt tokens and every generated token. */
static void run_layers(kv_ctx *c, kv_policy *p, int salt, float *out, int32_t *max_seen, size_t *bytes_end,
                       int32_t *seen_layer) {
    int32_t t[PROMPT];
    for (int i = 0; i < PROMPT; i++) t[i] = (int32_t)((i * 37 + salt * 101 + 3) % V);
    kv_ctx_reset(c);
    pol_begin(p, PROMPT);
    pol_attach(p, c);
    *max_seen = 0;
    const int one_shot = (p->flags & POL_ONE_SHOT) != 0;
    kv_cache *cache = kv_ctx_cache(c);
    if (seen_layer)
        for (int l = 0; l < p->n_layers; l++) seen_layer[l] = 0;
    if (pol_eval_prompt(p, c, t, PROMPT, out) != KV_OK) fail_msg("%s: %s", p->ops->name, kv_last_error());
    for (int s = 0; s <= GEN; s++) {
        int32_t held = kv_cache_max_len(cache);
        for (int l = 0; l < p->n_layers; l++) {
            int32_t pl = prompt_slots(cache, l), limit = p->layer_limit[l];
            int32_t n = one_shot ? pl : 0;
            for (int g = 0; g < kv_cache_n_kv_heads(cache) && !one_shot; g++)
                if (kv_cache_head_at(cache, l, g)->len > n) n = kv_cache_head_at(cache, l, g)->len;
            if (limit != INT32_MAX && n > limit)
                fail_msg("%s: layer %d holds %d %sslots in one head, budget %d (step %d)", p->ops->name, l, n,
                         one_shot ? "prompt " : "", limit, s);
            if (one_shot)
                for (int g = 0; g < kv_cache_n_kv_heads(cache); g++) { /* every generated token is kept */
                    const kv_cache_head *h = kv_cache_head_at(cache, l, g);
                    int32_t gen = 0; /* (heads may hold different numbers of prompt slots: Ada-KV) */
                    for (int32_t j = 0; j < h->len; j++) gen += h->pos[j] >= PROMPT;
                    assert_int_equal(gen, s);
                }
            if (seen_layer && n > seen_layer[l]) seen_layer[l] = n;
            if (one_shot && pl > *max_seen) *max_seen = pl;
        }
        if (!one_shot && held > *max_seen) *max_seen = held;
        if (s == GEN) break;
        int32_t next = kv_argmax(out + (size_t)s * V, V);
        assert_int_equal(kv_ctx_eval(c, &next, 1, out + (size_t)(s + 1) * V, 0), KV_OK);
    }
    if (bytes_end) *bytes_end = kv_cache_bytes(kv_ctx_cache(c));
}

static void run(kv_ctx *c, kv_policy *p, int salt, float *out, int32_t *max_seen, size_t *bytes_end) {
    run_layers(c, p, salt, out, max_seen, bytes_end, NULL);
}

static kv_policy *make_set(const char *name, const char *budget, const char *setting) {
    pol_budget b;
    assert_int_equal(pol_budget_parse(budget, &b), KV_OK);
    kv_policy *p;
    char buf[256] = "";
    const char *s[8];
    int n = 0; /* "k=v,k=v": one setting each */
    if (setting) {
        snprintf(buf, sizeof buf, "%s", setting);
        for (char *t = buf; n < 8;) {
            s[n++] = t;
            char *comma = strchr(t, ',');
            if (!comma) break;
            *comma = 0;
            t = comma + 1;
        }
    }
    int rc = pol_new(name, n ? s : NULL, n, &b, 7, kv_model_get_info(g_model), &p);
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
         * the true ones, so every position mode matches the full cache exactly */
        const char *settings[3] = {NULL, "positions=cache", "positions=rerotate"};
        for (int k = 0; k < 3; k++) {
            /* stories260K has no <CL>/<CR>: the sentinel method is told two ids */
            const int sentinel = strcmp(pol_at(i)->name, "sentinel") == 0;
            if (sentinel && k) break; /* it sets its own positions */
            kv_policy *p = make_set(pol_at(i)->name, "71", sentinel ? "cl=510,cr=511" : settings[k]);
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

typedef struct pol_cfg { const char *name, *set; } pol_cfg;
static int all_configs(pol_cfg *cfg);
static int counts_next_token(const kv_policy *p);

/* positions=rerotate gives keys the positions positions=cache gives them
 * (their index in the cache, the query at its own slot's), reached by
 * rotating each kept key by R(new - old) at every eviction instead of from
 * scratch at every attention: the logits must agree to float rounding for
 * every policy, with evictions at every step (budget 17 of a 40-token
 * prompt). The merge proxy averages keys, rotated or not, so its two modes
 * differ by design. */
static void test_rerotate_matches_cache(void **state) {
    (void)state;
    if (!g_model) skip();
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(g_model, NULL, &c), KV_OK);
    float *a = malloc((1 + GEN) * V * sizeof(float)), *b = malloc((1 + GEN) * V * sizeof(float));
    pol_cfg cfg[64];
    int n = all_configs(cfg);
    for (int i = 0; i < n; i++) {
        if (strcmp(cfg[i].name, "sentinel") == 0) continue; /* sets its own positions (original only) */
        if (cfg[i].set && strstr(cfg[i].set, "sim=1")) continue; /* h2o sim=1 refuses rerotate (h2o.c) */
        char set[2][200];
        const char *mode[2] = {"cache", "rerotate"};
        float *out[2] = {a, b};
        int32_t seen;
        for (int k = 0; k < 2; k++) {
            snprintf(set[k], sizeof set[k], "%s%spositions=%s", cfg[i].set ? cfg[i].set : "", cfg[i].set ? "," : "",
                     mode[k]);
            kv_policy *p = make_set(cfg[i].name, "17", set[k]);
            run(c, p, 3, out[k], &seen, NULL);
            pol_free(p);
        }
        double dmax = 0, amax = 0;
        for (size_t j = 0; j < (size_t)(1 + GEN) * V; j++) {
            double d = fabs((double)a[j] - b[j]);
            if (d > dmax) dmax = d;
            if (fabs((double)a[j]) > amax) amax = fabs((double)a[j]);
        }
        if (!(dmax <= 1e-4 * amax))
            fail_msg("%s (%s): rerotate differs from cache by %g (max |logit| %g)", cfg[i].name,
                     cfg[i].set ? cfg[i].set : "defaults", dmax, amax);
    }
    /* and it is not the original positions' result (the check can fail) */
    kv_policy *p = make_set("streamingllm", "17", "positions=original");
    int32_t seen;
    run(c, p, 3, a, &seen, NULL);
    pol_free(p);
    double dmax = 0;
    for (size_t j = 0; j < (size_t)(1 + GEN) * V; j++)
        if (fabs((double)a[j] - b[j]) > dmax) dmax = fabs((double)a[j] - b[j]);
    assert_true(dmax > 1e-2);
    free(a);
    free(b);
    kv_ctx_free(c);
}

/* Every policy with its defaults, then the new methods' other settings. */

static int all_configs(pol_cfg *cfg) {
    int n = 0;
    for (int i = 1; i < pol_count(); i++) /* (stories260K has no <CL>/<CR>: sentinel is told two ids) */
        cfg[n++] = (pol_cfg){pol_at(i)->name, strcmp(pol_at(i)->name, "sentinel") ? NULL : "cl=510,cr=511"};
    cfg[n++] = (pol_cfg){"keyformer", "noise=gaussian"};
    cfg[n++] = (pol_cfg){"keyformer", "noise=none"};
    cfg[n++] = (pol_cfg){"snapkv", "window=4"};
    cfg[n++] = (pol_cfg){"pyramidkv", "window=4"};
    cfg[n++] = (pol_cfg){"pyramidkv", "alloc=factory"};
    cfg[n++] = (pol_cfg){"adakv", "window=4"};
    cfg[n++] = (pol_cfg){"adakv", "window=2,floor=0.5,normalize=1"};
    cfg[n++] = (pol_cfg){"adakv", "window=4,layers=pyramid"};
    cfg[n++] = (pol_cfg){"adakv", "window=2,alloc=factory,floor=0"};
    cfg[n++] = (pol_cfg){"zigzag", "window=4"};
    cfg[n++] = (pol_cfg){"zigzag", "window=2,bound=0,threshold=0.5"};
    cfg[n++] = (pol_cfg){"zigzag", "window=4,alloc=kvpress"};
    cfg[n++] = (pol_cfg){"cascade", "positions=original"};
    cfg[n++] = (pol_cfg){"cascade", "head_reduction=mean"};
    cfg[n++] = (pol_cfg){"cascade", "stride=7"};
    cfg[n++] = (pol_cfg){"cascade", "eager_fill=0"};
    cfg[n++] = (pol_cfg){"streamingllm", "positions=rerotate"};
    cfg[n++] = (pol_cfg){"h2o", "positions=rerotate"};
    cfg[n++] = (pol_cfg){"zigzag", "window=4,positions=rerotate"};
    cfg[n++] = (pol_cfg){"knorm", "schedule=every_step"};
    cfg[n++] = (pol_cfg){"knorm", "recent=4"};
    cfg[n++] = (pol_cfg){"random", "schedule=every_step,recent=3"};
    cfg[n++] = (pol_cfg){"random", "recent=4"};
    cfg[n++] = (pol_cfg){"h2o", "sim=1"};
    cfg[n++] = (pol_cfg){"h2o", "sim=1,recent=0.3"};
    cfg[n++] = (pol_cfg){"cascade", "budget_counts=total"};
    /* the snap family per query head (each KV head the union of its group's picks) */
    cfg[n++] = (pol_cfg){"snapkv", "window=4,granularity=query_head"};
    cfg[n++] = (pol_cfg){"pyramidkv", "window=4,granularity=query_head"};
    cfg[n++] = (pol_cfg){"adakv", "window=4,granularity=query_head"};
    cfg[n++] = (pol_cfg){"zigzag", "window=4,granularity=query_head"};
    cfg[n++] = (pol_cfg){"snapkv", "window=4,kernel=3,pooling=avg"};
    return n;
}

/* Prompt slots held by head (l, g), and by the whole cache. */
static int32_t head_prompt_slots(kv_cache *c, int l, int g) {
    const kv_cache_head *h = kv_cache_head_at(c, l, g);
    int32_t n = 0;
    for (int32_t j = 0; j < h->len; j++) n += h->pos[j] < PROMPT;
    return n;
}

static int64_t prompt_total(kv_cache *c) {
    int64_t n = 0;
    for (int l = 0; l < kv_cache_n_layers(c); l++)
        for (int g = 0; g < kv_cache_n_kv_heads(c); g++) n += head_prompt_slots(c, l, g);
    return n;
}

/* Ada-KV's ragged heads after the cut: each holds exactly its own limit of
 * prompt slots (its cap + w), and (alloc=exact) a layer's heads together
 * hold Hkv x the layer's base budget (B, or with layers=pyramid PyramidKV's
 * cap + w), what that layer holds with uniform heads. */
static void check_adakv_heads(const kv_policy *p, kv_cache *c, int exact, const char *set, const char *budget) {
    const int32_t w = (int32_t)p->param[0] < p->limit ? (int32_t)p->param[0] : p->limit; /* window */
    int32_t base[MAX_LAYERS];
    const int union_heads = set && strstr(set, "query_head"); /* the heads hold unions: no fixed sum */
    if (p->param[4] == 1) /* layers=pyramid, beta */
        snap_pyramid_caps(PROMPT, p->limit, w, p->n_layers, (int32_t)p->param[5], exact, base);
    else
        for (int l = 0; l < p->n_layers; l++) base[l] = p->limit - w;
    int differ = 0;
    for (int l = 0; l < p->n_layers; l++) {
        int64_t sum = 0;
        for (int g = 0; g < p->n_kv_heads; g++) {
            int32_t n = head_prompt_slots(c, l, g);
            if (n != adakv_head_limit(p, l, g))
                fail_msg("adakv %s budget %s: layer %d head %d holds %d prompt slots, its limit is %d", set ? set : "",
                         budget, l, g, n, adakv_head_limit(p, l, g));
            differ |= n != head_prompt_slots(c, l, 0);
            sum += n;
        }
        if (exact && !union_heads && sum != (int64_t)p->n_kv_heads * (base[l] + w))
            fail_msg("adakv %s budget %s: layer %d holds %lld prompt slots, expected %lld", set ? set : "", budget, l,
                     (long long)sum, (long long)p->n_kv_heads * (base[l] + w));
    }
    if (w < p->limit && !differ && !union_heads)
        fail_msg("adakv %s budget %s: every head kept the same", set ? set : "", budget);
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
    pol_cfg cfg[64];
    const int n_cfg = all_configs(cfg);
    int32_t seen_layer[MAX_LAYERS];
    for (int i = 0; i < n_cfg; i++)
        for (int k = 0; k < 3; k++) {
            kv_policy *p = make_set(cfg[i].name, budgets[k], cfg[i].set);
            assert_true(p->n_layers <= MAX_LAYERS);
            size_t bytes;
            run_layers(c, p, 2, out, &seen, &bytes, seen_layer);
            if (p->flags & POL_ONE_SHOT) {
                /* each layer's prompt slots fill up to that layer's budget,
                 * and (alloc=exact) the layers together spend L x budget */
                int64_t total = 0;
                for (int l = 0; l < p->n_layers; l++) {
                    if (seen_layer[l] != p->layer_limit[l])
                        fail_msg("%s %s budget %s: layer %d holds %d prompt slots, its budget is %d", cfg[i].name,
                                 cfg[i].set ? cfg[i].set : "", budgets[k], l, seen_layer[l], p->layer_limit[l]);
                    total += p->layer_limit[l];
                }
                const int exact = !cfg[i].set || (!strstr(cfg[i].set, "factory") && !strstr(cfg[i].set, "kvpress"));
                /* granularity=query_head: each KV head holds the union of its query
                 * heads' picks, between B and G (B - w) + w (snapkv: checked here) */
                const int union_heads = cfg[i].set && strstr(cfg[i].set, "query_head");
                if (strcmp(cfg[i].name, "adakv") == 0) /* ragged heads: checked below */
                    check_adakv_heads(p, kv_ctx_cache(c), exact, cfg[i].set, budgets[k]);
                else if (exact && !union_heads) assert_int_equal(total, (int64_t)p->n_layers * p->limit);
                /* the same total as the uniform budget: L x Hkv x B prompt slots */
                if (exact && !union_heads)
                    assert_int_equal(prompt_total(kv_ctx_cache(c)), (int64_t)p->n_layers * p->n_kv_heads * p->limit);
                if (union_heads && strcmp(cfg[i].name, "snapkv") == 0) {
                    const int32_t w = (int32_t)p->param[0] < p->limit ? (int32_t)p->param[0] : p->limit;
                    const int32_t G = p->n_heads / p->n_kv_heads, hi = G * (p->limit - w) + w;
                    int wider = 0;
                    for (int l = 0; l < p->n_layers; l++)
                        for (int g = 0; g < p->n_kv_heads; g++) {
                            int32_t n = head_prompt_slots(kv_ctx_cache(c), l, g);
                            if (n < p->limit || n > (hi < PROMPT ? hi : PROMPT))
                                fail_msg("snapkv query_head budget %s: layer %d head %d holds %d prompt slots, "
                                         "expected %d..%d", budgets[k], l, g, n, p->limit, hi);
                            wider |= n > p->limit;
                        }
                    assert_true(wider); /* the query heads of a group do not all pick alike */
                }
                assert_true(bytes < full_bytes); /* the generated tokens stay, the prompt was cut */
            } else {
                /* the cache fills up to the budget and stays there; Keyformer's
                 * kept set counts the token about to be generated */
                int32_t want = p->limit - (strcmp(cfg[i].name, "keyformer") == 0 || counts_next_token(p));
                if (seen != want)
                    fail_msg("%s %s budget %s: at most %d slots held, expected %d", cfg[i].name,
                             cfg[i].set ? cfg[i].set : "", budgets[k], seen, want);
                assert_true(bytes < full_bytes / 2); /* memory is freed for real */
            }
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
    pol_cfg cfg[64];
    const int n_cfg = all_configs(cfg);
    cfg[n_cfg] = (pol_cfg){"full", NULL};
    for (int i = 0; i <= n_cfg; i++) {
        kv_ctx *c1, *c2;
        assert_int_equal(kv_ctx_new(g_model, NULL, &c1), KV_OK);
        assert_int_equal(kv_ctx_new(g_model, NULL, &c2), KV_OK);
        kv_policy *p1 = make_set(cfg[i].name, "12", cfg[i].set), *p2 = make_set(cfg[i].name, "12", cfg[i].set);
        run(c1, p1, 5, fresh, &seen, NULL);
        run(c2, p2, 9, after, &seen, NULL); /* another sample first */
        run(c2, p2, 5, after, &seen, NULL);
        if (memcmp(fresh, after, (1 + GEN) * V * sizeof(float)) != 0)
            fail_msg("%s %s: a second sample differs from the same sample run fresh", cfg[i].name,
                     cfg[i].set ? cfg[i].set : "");
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
    assert_int_equal(kv_cache_new(1, 1, 2, KV_CACHE_F32, &c), KV_OK);
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
        assert_true(((const float *)h->kb)[2 * j] == (float)h->pos[j]); /* the key moved with its position */
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

    /* knorm: test_floors_by_hand */
}

/* A one-layer policy with two settings (hand_policy takes one). */
static kv_policy *hand_policy2(const char *name, int32_t limit, const char *s1, const char *s2) {
    kv_model_info mi = {.n_layers = 1, .n_heads = 2, .n_kv_heads = 1};
    pol_budget b = {POL_BUDGET_TOKENS, limit};
    kv_policy *p;
    const char *s[2] = {s1, s2};
    assert_int_equal(pol_new(name, s, 2, &b, 1, &mi, &p), KV_OK);
    pol_begin(p, 100);
    return p;
}

/* Whether the head holds position pos. */
static int holds(kv_cache *c, int32_t pos) {
    const kv_cache_head *h = kv_cache_head_at(c, 0, 0);
    for (int32_t j = 0; j < h->len; j++)
        if (h->pos[j] == pos) return 1;
    return 0;
}

/* Keyformer's selection on given scores, both readings, and its score of one row. */
static void test_keyformer_by_hand(void **state) {
    (void)state;
    /* budget 6, recent=50: w = 3; the kept set counts the next token, so
     * 5 are kept: the w - 1 = 2 newest (8, 9) and the 3 best of the others
     * by the sum over both query heads: 2 (.4), 5 (.25), then 1 and 4 tie
     * (.2): the older, 1. The authors' rule leaves 7 out of the running
     * (N - w, leaving the window); it scores .15, so both agree here */
    for (int sel = 0; sel < 2; sel++) {
        kv_cache *c = hand_cache(10);
        kv_policy *p = hand_policy2("keyformer", 6, "recent=50", sel ? "selection=paper" : "selection=authors");
        double red[2][10] = {{0.1, 0, 0.3, 0, 0.2, 0, 0, 0.05, 0.9, 0.9}, {0, 0.2, 0.1, 0, 0, 0.25, 0, 0.1, 0, 0}};
        kv_attn_view v = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 1, .pos0 = 9, .stride = 10,
                          .needs = KV_NEED_LOGITS, .reduced = &red[0][0]};
        assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
        expect_positions(c, (int32_t[]){1, 2, 5, 8, 9}, 5);
        /* scores travel with their slots: position 1 gets a whole row more;
         * recent = {9, 10}. paper: 8 (.9), leaving the window, competes and
         * beats 5 (.25): 1 2 8. authors: 8 is dropped as it leaves the
         * window and the key set 1 2 5 stays */
        float k[2] = {10, 1}, vv[2] = {0, 0};
        assert_int_equal(kv_cache_append(c, kv_cache_head_at(c, 0, 0), k, vv, 10), KV_OK);
        double red2[2][6] = {{0}};
        red2[0][slot_of(c, 1)] = 1.0;
        v.reduced = &red2[0][0];
        v.stride = 6;
        v.pos0 = 10;
        kv_attn_plan pl = {.layer = 0, .pos0 = 10, .n_new = 1, .needs = KV_NEED_LOGITS};
        p->ops->plan(p, &pl);
        assert_int_equal(pl.needs, sel ? KV_NEED_LOGITS : 0); /* authors: frozen, no logits needed */
        assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
        if (sel) expect_positions(c, (int32_t[]){1, 2, 8, 9, 10}, 5);
        else expect_positions(c, (int32_t[]){1, 2, 5, 9, 10}, 5);
        /* authors: whatever the scores, the key set stays and the window
         * slides (9 is the heaviest and goes) */
        if (!sel) {
            float k3[2] = {11, 1};
            assert_int_equal(kv_cache_append(c, kv_cache_head_at(c, 0, 0), k3, vv, 11), KV_OK);
            double red3[2][6] = {{0}};
            red3[0][slot_of(c, 9)] = red3[1][slot_of(c, 9)] = 5.0;
            v.reduced = &red3[0][0];
            v.pos0 = 11;
            assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
            expect_positions(c, (int32_t[]){1, 2, 5, 10, 11}, 5);
        }
        /* a new sequence forgets the selection: logits are asked for again */
        pol_begin(p, 100);
        pl = (kv_attn_plan){.layer = 0, .pos0 = 0, .n_new = 1, .needs = KV_NEED_LOGITS};
        p->ops->plan(p, &pl);
        assert_int_equal(pl.needs, KV_NEED_LOGITS);
        pol_free(p);
        kv_cache_free(c);
    }
    /* authors: nothing is chosen until more than k tokens have been seen
     * (N = 6 = k: 6 held, the attention sees 7); paper keeps k - 1 */
    for (int sel = 0; sel < 2; sel++) {
        kv_cache *c = hand_cache(6);
        kv_policy *p = hand_policy2("keyformer", 6, "recent=50", sel ? "selection=paper" : "selection=authors");
        double red[2][6] = {{0}};
        kv_attn_view v = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 1, .pos0 = 5, .stride = 6,
                          .needs = KV_NEED_LOGITS, .reduced = &red[0][0]};
        assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
        assert_int_equal(kv_cache_head_at(c, 0, 0)->len, sel ? 5 : 6);
        pol_free(p);
        kv_cache_free(c);
    }
    /* authors, recent=0: no window, the k best of every position are kept
     * (k = 4 of 10: 3 .9, 6 .8, 0 .5, 9 .4) */
    {
        kv_cache *c = hand_cache(10);
        kv_policy *p = hand_policy2("keyformer", 4, "recent=0", "selection=authors");
        double red[2][10] = {{0.5, 0, 0, 0.9, 0, 0, 0.8, 0, 0, 0.4}, {0}};
        kv_attn_view v = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 1, .pos0 = 9, .stride = 10,
                          .needs = KV_NEED_LOGITS, .reduced = &red[0][0]};
        assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
        expect_positions(c, (int32_t[]){0, 3, 6, 9}, 4);
        kv_attn_plan pl = {.layer = 0, .pos0 = 10, .n_new = 1, .needs = KV_NEED_LOGITS};
        p->ops->plan(p, &pl);
        assert_int_equal(pl.needs, KV_NEED_LOGITS); /* no window: the kept set can change */
        pol_free(p);
        kv_cache_free(c);
    }
    /* the integer split: a 70% budget of 90 tokens is int(90 * 70 / 100) = 63
     * (90 * 0.7 truncates to 62), and recent=70 of k = 90 is w = 63: with
     * equal scores 62 newest (38..99) + the 27 oldest of 0..36; 37 leaves */
    {
        pol_budget x;
        assert_int_equal(pol_budget_parse("70%", &x), KV_OK);
        assert_int_equal(pol_budget_tokens(&x, 90), 63);
        assert_int_equal(pol_budget_tokens(&x, 170), 119);
        kv_cache *c = hand_cache(100);
        kv_policy *p = hand_policy("keyformer", 90, "recent=70");
        double red[2][100] = {{0}};
        kv_attn_view v = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 1, .pos0 = 99, .stride = 100,
                          .needs = KV_NEED_LOGITS, .reduced = &red[0][0]};
        assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
        assert_int_equal(kv_cache_head_at(c, 0, 0)->len, 89);
        for (int32_t t = 0; t < 100; t++)
            if (holds(c, t) != (t < 27 || t >= 38)) fail_msg("recent=70 of 90: position %d %s", t, holds(c, t) ? "held" : "dropped");
        pol_free(p);
        kv_cache_free(c);
    }
    kv_policy *p;

    /* the score of one row: noise=none is softmax(x) */
    const float x[3] = {0, logf(2), -INFINITY};
    const int32_t kpos[3] = {0, 1, 2};
    double acc[3], tmp[3];
    kv_logit_row r = {.layer = 0, .head = 1, .qpos = 50, .len = 3, .x = x, .kpos = kpos, .acc = acc, .tmp = tmp};
    p = hand_policy("keyformer", 6, "noise=none"); /* prompt of 100 tokens */
    memset(acc, 0, sizeof acc);
    p->ops->reduce_row(p, &r);
    assert_true(fabs(acc[0] - 1.0 / 3) < 1e-7 && fabs(acc[1] - 2.0 / 3) < 1e-7 && acc[2] == 0);
    pol_free(p);
    /* constant noise cancels: softmax(x / tau), tau_init 1 in the prompt,
     * tau_init + 5 (tau_end - tau_init) / 10 = 1.5 at position 104 (itr 5),
     * held at tau_end = 2 past `steps` */
    const kv_model_info mi = {.n_layers = 1, .n_heads = 2, .n_kv_heads = 1};
    const pol_budget b6 = {POL_BUDGET_TOKENS, 6};
    const char *cst[2] = {"noise=constant", "steps=10"};
    assert_int_equal(pol_new("keyformer", cst, 2, &b6, 1, &mi, &p), KV_OK);
    pol_begin(p, 100);
    const int32_t qpos[3] = {50, 104, 500};
    const double tau[3] = {1.0, 1.5, 2.0};
    for (int i = 0; i < 3; i++) {
        memset(acc, 0, sizeof acc);
        r.qpos = qpos[i];
        p->ops->reduce_row(p, &r);
        double e = pow(2.0, 1.0 / tau[i]);
        assert_true(fabs(acc[1] - e / (1 + e)) < 1e-7);
    }
    pol_free(p);

    /* Gumbel noise: over many queries, log(f0 / f1) of two equal logits is
     * g0 - g1, a Logistic(0, 1) (mean 0, variance pi^2/3, excess kurtosis
     * 1.2); the gaussian ablation has the same mean and variance but no
     * excess kurtosis; the draws repeat for a seed and change with it */
    const char *noises[2] = {"noise=gumbel", "noise=gaussian"};
    const float x2[2] = {0, 0};
    enum { NQ = 20000 };
    for (int kind = 0; kind < 2; kind++) {
        kv_policy *p1 = hand_policy("keyformer", 6, noises[kind]), *p2 = hand_policy("keyformer", 6, noises[kind]);
        pol_set_sample_seed(p2, 2); /* another sample */
        kv_logit_row r2 = {.layer = 0, .head = 0, .len = 2, .x = x2, .kpos = kpos, .tmp = tmp};
        double m1 = 0, m2 = 0, m4 = 0, d[NQ], a1[2], a2[2], a3[2];
        int differ = 0;
        for (int q = 0; q < NQ; q++) {
            r2.qpos = q % 100; /* prompt positions: tau = 1 */
            r2.layer = q / 100;
            memset(a1, 0, sizeof a1), memset(a2, 0, sizeof a2), memset(a3, 0, sizeof a3);
            r2.acc = a1;
            p1->ops->reduce_row(p1, &r2);
            r2.acc = a2;
            p1->ops->reduce_row(p1, &r2);
            r2.acc = a3;
            p2->ops->reduce_row(p2, &r2);
            assert_true(a1[0] == a2[0] && a1[1] == a2[1]);
            differ += a1[0] != a3[0];
            d[q] = log(a1[0] / a1[1]);
            m1 += d[q];
        }
        m1 /= NQ;
        for (int q = 0; q < NQ; q++) m2 += (d[q] - m1) * (d[q] - m1), m4 += pow(d[q] - m1, 4);
        m2 /= NQ;
        m4 /= NQ;
        double kurt = m4 / (m2 * m2) - 3;
        if (fabs(m1) > 0.06 || fabs(m2 - 3.14159265358979 * 3.14159265358979 / 3) > 0.25 || (kind == 0 ? kurt < 0.8 : fabs(kurt) > 0.3))
            fail_msg("%s: g0 - g1 has mean %g, variance %g, excess kurtosis %g", noises[kind], m1, m2, kurt);
        assert_true(differ > NQ * 0.99);
        pol_free(p1);
        pol_free(p2);
    }

    /* the per-sample seed: without a call the draws are the seed's; a call
     * makes them mix(seed ^ mix(sample)), the same for the same sample
     * whatever ran before, another for another sample */
    kv_policy *pa = hand_policy("keyformer", 6, NULL), *pb = hand_policy("keyformer", 6, NULL);
    assert_true(pa->draw_seed == pa->seed);
    uint64_t z = 77;
    for (int i = 0; i < 2; i++) { /* mix(77), then mix(seed ^ that) */
        z += 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        if (i == 0) z ^= pa->seed;
    }
    pol_set_sample_seed(pa, 5);
    pol_set_sample_seed(pa, 77);
    pol_set_sample_seed(pb, 77);
    assert_true(pa->draw_seed == z && pb->draw_seed == z);
    pol_begin(pa, 100); /* a new sequence keeps it */
    assert_true(pa->draw_seed == z);
    const float x3[2] = {0, 0};
    double s1[2] = {0}, s2[2] = {0}, s3[2] = {0};
    kv_logit_row r3 = {.layer = 0, .head = 0, .qpos = 3, .len = 2, .x = x3, .kpos = kpos, .tmp = tmp, .acc = s1};
    pa->ops->reduce_row(pa, &r3);
    r3.acc = s2;
    pb->ops->reduce_row(pb, &r3);
    pol_set_sample_seed(pb, 78);
    r3.acc = s3;
    pb->ops->reduce_row(pb, &r3);
    assert_true(s1[0] == s2[0] && s1[0] != s3[0]);
    pol_free(pa);
    pol_free(pb);
}

/* SnapKV's one-shot compression on given window rows (prompt of 10,
 * budget 5, window 2: the 3 best of the prefix 0..7 + 8, 9), whole or in
 * two calls, and PyramidKV's caps. */
static void test_snapkv_by_hand(void **state) {
    (void)state;
    const kv_model_info mi = {.n_layers = 1, .n_heads = 2, .n_kv_heads = 1};
    const pol_budget b5 = {POL_BUDGET_TOKENS, 5};
    /* votes per query head, each split over the two window queries */
    const float v0[8] = {0, 0, 0.9f, 0, 0.8f, 0, 0, 0.3f}, v1[8] = {0.4f, 0, 0, 0, 0, 0, 0.7f, 0};
    float rows[2][2][10] = {{{0}}};
    for (int j = 0; j < 8; j++) {
        rows[0][0][j] = rows[0][1][j] = v0[j] / 2;
        rows[1][0][j] = rows[1][1][j] = v1[j] / 2;
    }
    /* kv_head: the group's votes summed (.4 0 .9 0 .8 0 .7 .3), then pooled;
     * query_head: each query head's pooled and selecting its own 3, the KV
     * head keeping the union (8 slots where kv_head keeps 5) */
    struct { const char *set[4]; int32_t want[8], n; } cases[6] = {
        /* avg is linear: pooling then summing is the same, .13 .43 .3 .57 .27 .5 .33 .33 */
        {{"window=2", "kernel=3", "pooling=avg", "granularity=kv_head"}, {1, 3, 5, 8, 9}, 5},
        /* max of the sum: .4 .9 .9 .9 .8 .8 .7 .7, ties to the older (the sum of
         * each head's max, .4 1.3 .9 .9 .8 1.5 1 1, would keep 1 5 6) */
        {{"window=2", "kernel=3", "pooling=max", "granularity=kv_head"}, {1, 2, 3, 8, 9}, 5},
        {{"window=2", "kernel=1", "pooling=max", "granularity=kv_head"}, {2, 4, 6, 8, 9}, 5}, /* the votes themselves */
        /* head 0: 0 .3 .3 .57 .27 .27 .1 .1 -> 1 2 3; head 1: .13 .13 0 0 0 .23 .23 .23 -> 5 6 7 */
        {{"window=2", "kernel=3", "pooling=avg", "granularity=query_head"}, {1, 2, 3, 5, 6, 7, 8, 9}, 8},
        /* head 0: 0 .9 .9 .9 .8 .8 .3 .3 -> 1 2 3; head 1: .4 .4 0 0 0 .7 .7 .7 -> 5 6 7 */
        {{"window=2", "kernel=3", "pooling=max", "granularity=query_head"}, {1, 2, 3, 5, 6, 7, 8, 9}, 8},
        /* head 0: 2 4 7; head 1: 6 0, then the oldest zero, 1 */
        {{"window=2", "kernel=1", "pooling=max", "granularity=query_head"}, {0, 1, 2, 4, 6, 7, 8, 9}, 8},
    };
    for (int k = 0; k < 6; k++)
        for (int split = 0; split < 2; split++) {
            kv_policy *p;
            assert_int_equal(pol_new("snapkv", cases[k].set, 4, &b5, 1, &mi, &p), KV_OK);
            pol_begin(p, 10);
            kv_cache *c = hand_cache(10);
            kv_attn_plan pl = {.layer = 0, .pos0 = 0, .n_new = 10, .needs = KV_NEED_WINDOW};
            p->ops->plan(p, &pl);
            assert_int_equal(pl.needs, KV_NEED_WINDOW);
            assert_int_equal(pl.win_pos0, 8);
            assert_int_equal(pl.win_n, 2);
            float w9[2][1][10]; /* the rows of query 9 alone */
            for (int h = 0; h < 2; h++) memcpy(w9[h][0], rows[h][1], sizeof w9[h][0]);
            kv_attn_view v = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 10, .pos0 = 0, .stride = 10,
                              .needs = KV_NEED_WINDOW, .win_pos0 = 8, .win_n = 2, .window = &rows[0][0][0]};
            if (split) { /* the prompt in two calls: 0..8 (window query 8), then 9 */
                float w8[2][1][10];
                for (int h = 0; h < 2; h++) memcpy(w8[h][0], rows[h][0], sizeof w8[h][0]);
                kv_attn_view a = v;
                a.n_new = 9, a.win_n = 1, a.window = &w8[0][0][0];
                assert_int_equal(p->ops->on_layer(p, c, &a), KV_OK);
                assert_int_equal(kv_cache_head_at(c, 0, 0)->len, 10); /* nothing before the prompt's end */
                v.n_new = 1, v.pos0 = 9, v.win_pos0 = 9, v.win_n = 1, v.window = &w9[0][0][0];
            }
            assert_int_equal(p->layer_limit[0], 2 + (k < 3 ? 3 : 6)); /* before the cut: w + min(m, G (B - w)) */
            assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
            expect_positions(c, cases[k].want, cases[k].n);
            assert_int_equal(p->layer_limit[0], cases[k].n); /* the head as held */
            /* decode: nothing asked, nothing evicted */
            pl = (kv_attn_plan){.layer = 0, .pos0 = 10, .n_new = 1, .needs = KV_NEED_WINDOW};
            p->ops->plan(p, &pl);
            assert_int_equal(pl.needs, 0);
            float k2[2] = {10, 1}, vv[2] = {0, 0};
            assert_int_equal(kv_cache_append(c, kv_cache_head_at(c, 0, 0), k2, vv, 10), KV_OK);
            kv_attn_view d = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 1, .pos0 = 10, .stride = 6};
            assert_int_equal(p->ops->on_layer(p, c, &d), KV_OK);
            assert_int_equal(kv_cache_head_at(c, 0, 0)->len, cases[k].n + 1);
            pol_free(p);
            kv_cache_free(c);
        }
    /* the defaults: SnapKV's LongBench configuration (window 32, kernel 7,
     * max pooling), per KV head */
    {
        kv_policy *p;
        assert_int_equal(pol_new("snapkv", NULL, 0, &b5, 1, &mi, &p), KV_OK);
        assert_true(p->param[SNAP_P_WINDOW] == 32 && p->param[SNAP_P_KERNEL] == 7 &&
                    p->param[SNAP_P_POOLING] == SNAP_POOL_MAX && p->param[3] == SNAP_GRAN_KV_HEAD);
        pol_free(p);
        /* query_head needs whole groups */
        const kv_model_info odd = {.n_layers = 1, .n_heads = 3, .n_kv_heads = 2};
        const char *qh[1] = {"granularity=query_head"};
        assert_int_equal(pol_new("snapkv", qh, 1, &b5, 1, &odd, &p), KV_EINVAL);
        assert_non_null(strstr(kv_last_error(), "multiple"));
    }
    /* an even kernel is refused */
    const char *even[1] = {"kernel=4"};
    kv_policy *p;
    assert_int_equal(pol_new("snapkv", even, 1, &b5, 1, &mi, &p), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "odd"));

    /* PyramidKV's caps (METHODS.md A8) */
    int32_t cap[8];
    assert_int_equal(snap_pyramid_caps(40, 17, 8, 5, 20, 1, cap), 2); /* min 0, max 18, line 18 13.5 9 4.5 0 */
    assert_memory_equal(cap, ((int32_t[]){18, 14, 9, 4, 0}), 5 * sizeof(int32_t));
    assert_int_equal(snap_pyramid_caps(40, 17, 8, 5, 20, 0, cap), 2); /* steps 18 // 4 = 4 */
    assert_memory_equal(cap, ((int32_t[]){18, 14, 10, 6, 2}), 5 * sizeof(int32_t));
    assert_int_equal(snap_pyramid_caps(33, 20, 4, 5, 20, 1, cap), 2); /* max 32 >= n - w = 29: max 29, min 3 */
    assert_memory_equal(cap, ((int32_t[]){29, 23, 16, 9, 3}), 5 * sizeof(int32_t));
    assert_int_equal(snap_pyramid_caps(33, 20, 4, 5, 20, 0, cap), 2);
    assert_memory_equal(cap, ((int32_t[]){29, 23, 17, 11, 5}), 5 * sizeof(int32_t));
    assert_int_equal(snap_pyramid_caps(30, 20, 4, 5, 20, 1, cap), 1); /* n < 2 (B - w): uniform */
    assert_memory_equal(cap, ((int32_t[]){16, 16, 16, 16, 16}), 5 * sizeof(int32_t));
    assert_int_equal(snap_pyramid_caps(20, 20, 4, 5, 20, 1, cap), 0); /* n <= B: all */
    assert_int_equal(cap[0], -1);
    /* exact: the caps sum to L (B - w), do not increase with depth, fit the prefix */
    for (int32_t n = 2; n < 300; n += 7)
        for (int32_t B = 2; B < 120; B += 5)
            for (int32_t w = 1; w <= B && w < 40; w += 6)
                for (int L = 2; L <= 8; L += 3)
                    for (int32_t beta = 1; beta <= 40; beta *= 3) {
                        if (snap_pyramid_caps(n, B, w, L, beta, 1, cap) != 2) continue;
                        int64_t sum = 0;
                        for (int l = 0; l < L; l++) {
                            sum += cap[l];
                            assert_true(cap[l] >= 0 && cap[l] <= n - w);
                            if (l) assert_true(cap[l] <= cap[l - 1]);
                        }
                        assert_int_equal(sum, (int64_t)L * (B - w));
                    }
}

/* L layers of n_kv KV heads, each holding positions 0..n-1 (key = position). */
static kv_cache *hand_cache_heads(int L, int n_kv, int32_t n) {
    kv_cache *c;
    assert_int_equal(kv_cache_new(L, n_kv, 2, KV_CACHE_F32, &c), KV_OK);
    for (int l = 0; l < L; l++)
        for (int g = 0; g < n_kv; g++)
            for (int32_t t = 0; t < n; t++) {
                float k[2] = {(float)t, 1.0f}, v[2] = {0, 0};
                assert_int_equal(kv_cache_append(c, kv_cache_head_at(c, l, g), k, v, t), KV_OK);
            }
    return c;
}

/* Head (l, g) holds exactly these positions, each with its own key. */
static void expect_head(kv_cache *c, int l, int g, const int32_t *want, int32_t n) {
    kv_cache_head *h = kv_cache_head_at(c, l, g);
    if (h->len != n) fail_msg("layer %d head %d holds %d slots, expected %d", l, g, h->len, n);
    int32_t got[64];
    for (int32_t j = 0; j < n; j++) {
        got[j] = h->pos[j];
        assert_true(((const float *)h->kb)[2 * j] == (float)h->pos[j]);
    }
    qsort(got, (size_t)n, sizeof *got, cmp_i32);
    for (int32_t j = 0; j < n; j++)
        if (got[j] != want[j]) fail_msg("layer %d head %d: held positions differ at %d: %d, expected %d", l, g, j, got[j],
                                        want[j]);
}

/* Ada-KV (METHODS.md A9): the head budgets, then the policy on a hand-made
 * layer of two KV heads. */
static void test_adakv_by_hand(void **state) {
    (void)state;
    int32_t cap[4];
    /* two heads, 6 prefix keys, b = 3: of the 6 best of 12 scores, 0.9 0.8 0.7
     * 0.6 0.1 are head 0's and 0.3 head 1's: counts 5, 1 */
    const double s[2][6] = {{0.9, 0.1, 0.8, 0.05, 0.7, 0.6}, {0.3, 0.02, 0.01, 0.04, 0.0, 0.03}};
    struct { double alpha; int exact; int32_t want[2]; } cases[] = {
        {0.0, 1, {5, 1}}, /* no floor: the counts themselves */
        {0.2, 1, {5, 1}}, /* f = int(0.6) = 0 */
        {0.5, 1, {4, 2}}, /* f = 1: 1 + 2*5/3 = 4.33, 1 + 2/3 = 1.67: floors 4 1, the spare slot to 1.67 */
        {1.0, 1, {3, 3}}, /* f = b: uniform */
        {0.5, 0, {4, 2}}, /* AdaKV: round(2.5 + 1) = 4 (half to even), round(0.5 + 1) = 2 */
        {0.2, 0, {4, 1}}, /* round(4.0), round(0.8): 5 slots of 6, AdaKV's rounding loses one */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        assert_int_equal(snap_ada_caps(2, 6, 3, cases[k].alpha, cases[k].exact, 0, &s[0][0], cap), KV_OK);
        if (cap[0] != cases[k].want[0] || cap[1] != cases[k].want[1])
            fail_msg("alpha %g exact %d: caps %d %d, expected %d %d", cases[k].alpha, cases[k].exact, cap[0], cap[1],
                     cases[k].want[0], cases[k].want[1]);
    }
    /* normalize: head 0's mass is spread (its 2 best hold 1/3 of it), head 1's
     * concentrated (0.65 / 0.85): scaled, head 1's 0.45 and 0.2 (0.34, 0.15)
     * pass head 0's 0.3s (0.1), so b = 2 splits 3 1 -> 2 2 */
    const double t[2][6] = {{0.3, 0.3, 0.3, 0.3, 0.3, 0.3}, {0.45, 0.2, 0.05, 0.05, 0.05, 0.05}};
    assert_int_equal(snap_ada_caps(2, 6, 2, 0, 1, 0, &t[0][0], cap), KV_OK);
    assert_memory_equal(cap, ((int32_t[]){3, 1}), 2 * sizeof(int32_t));
    assert_int_equal(snap_ada_caps(2, 6, 2, 0, 1, 1, &t[0][0], cap), KV_OK);
    assert_memory_equal(cap, ((int32_t[]){2, 2}), 2 * sizeof(int32_t));
    /* ties: the older position, then the lower head (b = 1: positions 0 of
     * heads 1 and 2 beat position 1 of head 0) */
    const double u[3][2] = {{0.1, 0.5}, {0.5, 0.1}, {0.5, 0.5}};
    assert_int_equal(snap_ada_caps(3, 2, 1, 0, 1, 0, &u[0][0], cap), KV_OK);
    assert_memory_equal(cap, ((int32_t[]){1, 1, 1}), 3 * sizeof(int32_t));
    assert_int_equal(snap_ada_caps(3, 2, 2, 0, 1, 0, &u[0][0], cap), KV_OK); /* 6 of 6 */
    assert_memory_equal(cap, ((int32_t[]){2, 2, 2}), 3 * sizeof(int32_t));
    /* exact: the caps sum to n_kv b, each between the floor and m */
    uint64_t r = 12345;
    double rs[4 * 40];
    for (int it = 0; it < 400; it++) {
        const int n_kv = 1 + it % 4;
        const int32_t m = 1 + (int32_t)(it * 7 % 40), b = (int32_t)(it * 13 % (m + 1));
        const double alpha = (it % 5) / 4.0;
        for (int i = 0; i < n_kv * m; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            rs[i] = (double)(r >> 40) / (double)(1 << 24) * (it % 3 ? 1.0 : (i % 2 ? 1e-3 : 1.0));
        }
        assert_int_equal(snap_ada_caps(n_kv, m, b, alpha, 1, it % 2, rs, cap), KV_OK);
        int64_t sum = 0;
        for (int g = 0; g < n_kv; g++) {
            sum += cap[g];
            assert_true(cap[g] >= (int32_t)(alpha * b) && cap[g] <= m);
        }
        assert_int_equal(sum, (int64_t)n_kv * b);
    }

    /* the policy: prompt 10, budget 5, window 2, kernel 1 (the votes
     * themselves): b = 3, m = 8. Votes (one query head per KV head):
     * head 0: 0.875 @2, 0.75 @4, 0.25 @7; head 1: 0.5 @0, 0.625 @6. The 6 best of
     * 16: those 5, then the zeros, oldest first: head 0's position 0. Counts
     * 4, 2; floor 0.2: f = 0, caps 4 2: head 0 keeps 0 2 4 7 + 8 9, head 1 keeps
     * 0 6 + 8 9, 10 slots in all as two heads of 5 */
    const kv_model_info mi = {.n_layers = 1, .n_heads = 2, .n_kv_heads = 2};
    const pol_budget b5 = {POL_BUDGET_TOKENS, 5};
    const float v0[8] = {0, 0, 0.875f, 0, 0.75f, 0, 0, 0.25f}, v1[8] = {0.5f, 0, 0, 0, 0, 0, 0.625f, 0};
    float rows[2][2][10] = {{{0}}};
    for (int j = 0; j < 8; j++) {
        rows[0][0][j] = rows[0][1][j] = v0[j] / 2;
        rows[1][0][j] = rows[1][1][j] = v1[j] / 2;
    }
    const char *set[3] = {"window=2", "kernel=1", NULL};
    for (int factory = 0; factory < 2; factory++) {
        set[2] = factory ? "alloc=factory" : "alloc=exact";
        kv_policy *p;
        assert_int_equal(pol_new("adakv", set, 3, &b5, 1, &mi, &p), KV_OK);
        pol_begin(p, 10);
        assert_int_equal(p->layer_limit[0], 2 + 6); /* before the cut: w + min(m, f + (b - f) Hkv) */
        kv_cache *c = hand_cache_heads(1, 2, 10);
        kv_attn_plan pl = {.layer = 0, .pos0 = 0, .n_new = 10, .needs = KV_NEED_WINDOW};
        p->ops->plan(p, &pl);
        assert_int_equal(pl.needs, KV_NEED_WINDOW);
        assert_int_equal(pl.win_pos0, 8);
        kv_attn_view v = {.layer = 0, .n_heads = 2, .n_kv_heads = 2, .n_new = 10, .pos0 = 0, .stride = 10,
                          .needs = KV_NEED_WINDOW, .win_pos0 = 8, .win_n = 2, .window = &rows[0][0][0]};
        assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
        if (!factory) {
            expect_head(c, 0, 0, (int32_t[]){0, 2, 4, 7, 8, 9}, 6);
            expect_head(c, 0, 1, (int32_t[]){0, 6, 8, 9}, 4);
            assert_int_equal(adakv_head_limit(p, 0, 0), 6);
            assert_int_equal(adakv_head_limit(p, 0, 1), 4);
        } else { /* round(4 * 0.8) = 3, round(2 * 0.8) = 2: one slot short */
            expect_head(c, 0, 0, (int32_t[]){2, 4, 7, 8, 9}, 5);
            expect_head(c, 0, 1, (int32_t[]){0, 6, 8, 9}, 4);
        }
        assert_int_equal(p->layer_limit[0], factory ? 5 : 6); /* the longest head */
        /* decode: nothing asked, nothing evicted */
        pl = (kv_attn_plan){.layer = 0, .pos0 = 10, .n_new = 1, .needs = KV_NEED_WINDOW};
        p->ops->plan(p, &pl);
        assert_int_equal(pl.needs, 0);
        kv_attn_view d = {.layer = 0, .n_heads = 2, .n_kv_heads = 2, .n_new = 1, .pos0 = 10, .stride = 6};
        assert_int_equal(p->ops->on_layer(p, c, &d), KV_OK);
        assert_int_equal(kv_cache_head_at(c, 0, 1)->len, 4);
        pol_free(p);
        kv_cache_free(c);
    }

    /* GQA: 2 KV heads of 2 query heads, prompt 10, budget 5, window 2,
     * kernel 3, max pooling, floor 0: b = 3, m = 8.
     * Query heads 0 1 (KV head 0): the snapkv case's votes; 2 3 (KV head 1):
     * .2 @0 and .1 @7.
     * kv_head: KV head 0 scores max3(sum) = .4 .9 .9 .9 .8 .8 .7 .7, KV head 1
     * .2 .2 0 0 0 0 .1 .1: the 6 best are all head 0's: caps 6 0, head 0
     * keeps 1..6 (pooling each query head first and summing, .4 1.3 .9 .9 .8
     * 1.5 1 1, would keep 1 2 3 5 6 7).
     * query_head: pooled per query head, q0 0 .9 .9 .9 .8 .8 .3 .3, q1 .4 .4 0
     * 0 0 .7 .7 .7, q2 .2 .2 0..., q3 ... .1 .1; the 12 best are q0's 7 and q1's 5:
     * q0 keeps 1..7, q1 0 1 5 6 7, KV head 0 the union 0..7, KV head 1 none */
    const kv_model_info gqa = {.n_layers = 1, .n_heads = 4, .n_kv_heads = 2};
    float grows[4][2][10] = {{{0}}};
    for (int j = 0; j < 8; j++) {
        grows[0][0][j] = grows[0][1][j] = (float[]){0, 0, 0.9f, 0, 0.8f, 0, 0, 0.3f}[j] / 2;
        grows[1][0][j] = grows[1][1][j] = (float[]){0.4f, 0, 0, 0, 0, 0, 0.7f, 0}[j] / 2;
    }
    grows[2][0][0] = grows[2][1][0] = 0.1f;
    grows[3][0][7] = grows[3][1][7] = 0.05f;
    for (int qh = 0; qh < 2; qh++) {
        const char *gset[5] = {"window=2", "kernel=3", "pooling=max", "floor=0",
                               qh ? "granularity=query_head" : "granularity=kv_head"};
        kv_policy *p;
        assert_int_equal(pol_new("adakv", gset, 5, &b5, 1, &gqa, &p), KV_OK);
        pol_begin(p, 10);
        /* before the cut: w + min(m, upk min(m, f + (b - f) units)): 2 + min(8, 0 + 3 * 2)
         * per KV head, 2 + min(8, 2 min(8, 3 * 4)) per query head */
        assert_int_equal(p->layer_limit[0], qh ? 10 : 8);
        kv_cache *c = hand_cache_heads(1, 2, 10);
        kv_attn_view v = {.layer = 0, .n_heads = 4, .n_kv_heads = 2, .n_new = 10, .pos0 = 0, .stride = 10,
                          .needs = KV_NEED_WINDOW, .win_pos0 = 8, .win_n = 2, .window = &grows[0][0][0]};
        assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
        if (!qh) {
            expect_head(c, 0, 0, (int32_t[]){1, 2, 3, 4, 5, 6, 8, 9}, 8);
            assert_int_equal(adakv_head_limit(p, 0, 0), 8);
        } else {
            expect_head(c, 0, 0, (int32_t[]){0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 10);
            assert_int_equal(adakv_head_limit(p, 0, 0), 10);
        }
        expect_head(c, 0, 1, (int32_t[]){8, 9}, 2);
        assert_int_equal(adakv_head_limit(p, 0, 1), 2);
        assert_int_equal(p->layer_limit[0], qh ? 10 : 8);
        pol_free(p);
        kv_cache_free(c);
    }
}

/* ZigZagKV (METHODS.md A12): LMBA, the layer budgets, then the policy on two
 * hand-made layers, the first cut only when the second has seen the prompt. */
static void test_zigzag_by_hand(void **state) {
    (void)state;
    /* sorted 0.5 0.25 0.125 0.125, running sums 0.5 0.75 0.875 1 */
    const double s[4] = {0.5, 0.125, 0.25, 0.125};
    assert_int_equal(snap_lmba(s, 4, 0.75), 2);
    assert_int_equal(snap_lmba(s, 4, 0.875), 3);
    assert_int_equal(snap_lmba(s, 4, 1.0), 4);
    assert_int_equal(snap_lmba(s, 4, 0.5), 1);
    assert_int_equal(snap_lmba(s, 4, 0.0), 1);

    int32_t cap[8];
    /* b = 8, bound 0.25: bb = 2, 3 * 6 = 18 shared 2:4:6 -> 3 6 9 */
    assert_int_equal(snap_zigzag_caps(3, (int64_t[]){2, 4, 6}, 20, 8, 0.25, 1, cap), KV_OK);
    assert_memory_equal(cap, ((int32_t[]){5, 8, 11}), 3 * sizeof(int32_t));
    /* m = 10: the third held at 10, its excess (18 - 8 = 10 left) shared 2:4 ->
     * 3.33 6.67: floors 5 8, the spare slot to the larger remainder */
    assert_int_equal(snap_zigzag_caps(3, (int64_t[]){2, 4, 6}, 10, 8, 0.25, 1, cap), KV_OK);
    assert_memory_equal(cap, ((int32_t[]){5, 9, 10}), 3 * sizeof(int32_t));
    assert_int_equal(snap_zigzag_caps(3, (int64_t[]){2, 4, 6}, 10, 8, 0.25, 0, cap), KV_OK); /* kvpress: clipped */
    assert_memory_equal(cap, ((int32_t[]){5, 8, 10}), 3 * sizeof(int32_t));
    /* 15 shared 1:1:2 = 3.75 3.75 7.5: exact 4 4 7; kvpress rounds 7.5 to 8 (16 in all) */
    assert_int_equal(snap_zigzag_caps(3, (int64_t[]){1, 1, 2}, 20, 5, 0, 1, cap), KV_OK);
    assert_memory_equal(cap, ((int32_t[]){4, 4, 7}), 3 * sizeof(int32_t));
    assert_int_equal(snap_zigzag_caps(3, (int64_t[]){1, 1, 2}, 20, 5, 0, 0, cap), KV_OK);
    assert_memory_equal(cap, ((int32_t[]){4, 4, 8}), 3 * sizeof(int32_t));
    /* bound 1: uniform whatever the LMBA */
    assert_int_equal(snap_zigzag_caps(3, (int64_t[]){1, 7, 2}, 20, 5, 1, 1, cap), KV_OK);
    assert_memory_equal(cap, ((int32_t[]){5, 5, 5}), 3 * sizeof(int32_t));
    /* exact: the caps sum to L b, lie in [bb, m], and never decrease with LMBA */
    uint64_t r = 777;
    for (int it = 0; it < 2000; it++) {
        const int L = 1 + it % 8;
        const int32_t m = 2 + (int32_t)(it * 11 % 60), b = (int32_t)(it * 17 % m); /* b < m */
        const double bound = (it % 6) / 5.0;
        int64_t lm[8];
        for (int l = 0; l < L; l++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            lm[l] = 1 + (int64_t)((r >> 33) % (uint64_t)(it % 4 ? 4 * m : 3));
        }
        assert_int_equal(snap_zigzag_caps(L, lm, m, b, bound, 1, cap), KV_OK);
        int64_t sum = 0;
        for (int l = 0; l < L; l++) {
            sum += cap[l];
            assert_true(cap[l] >= (int32_t)(bound * b) && cap[l] <= m);
            for (int k = 0; k < L; k++)
                if (lm[k] < lm[l]) assert_true(cap[k] <= cap[l]);
        }
        assert_int_equal(sum, (int64_t)L * b);
    }

    /* the policy: 2 layers of one KV head (one query head), prompt 10, budget
     * 5, window 2, kernel 1, bound 0: b = 3, m = 8. Layer 0's votes are
     * concentrated (0.75 @0, 0.25 @7: LMBA 2 at 0.9), layer 1's spread (0.125 on
     * each of 0..7: LMBA 8). 6 slots shared 2:8 = 1.2 4.8 -> 1 5: layer 0 keeps
     * 0 + 8 9, layer 1 the 5 oldest of its equal scores + 8 9 */
    const kv_model_info mi = {.n_layers = 2, .n_heads = 1, .n_kv_heads = 1};
    const pol_budget b5 = {POL_BUDGET_TOKENS, 5};
    float rows[2][1][2][10] = {{{{0}}}}; /* [layer][head][window query][key] */
    for (int r2 = 0; r2 < 2; r2++) {
        rows[0][0][r2][0] = 0.375f, rows[0][0][r2][7] = 0.125f;
        for (int j = 0; j < 8; j++) rows[1][0][r2][j] = 0.0625f;
    }
    const char *set[3] = {"window=2", "kernel=1", "bound=0"};
    kv_policy *p;
    assert_int_equal(pol_new("zigzag", set, 3, &b5, 1, &mi, &p), KV_OK);
    for (int sample = 0; sample < 2; sample++) { /* twice: nothing is left from the first */
        pol_begin(p, 10);
        assert_int_equal(p->layer_limit[0], 2 + 6); /* before the cut: w + min(m, bb + L (b - bb)) */
        kv_cache *c = hand_cache_heads(2, 1, 10);
        for (int l = 0; l < 2; l++) {
            kv_attn_plan pl = {.layer = l, .pos0 = 0, .n_new = 10, .needs = KV_NEED_WINDOW};
            p->ops->plan(p, &pl);
            assert_int_equal(pl.needs, KV_NEED_WINDOW);
            kv_attn_view v = {.layer = l, .n_heads = 1, .n_kv_heads = 1, .n_new = 10, .pos0 = 0, .stride = 10,
                              .needs = KV_NEED_WINDOW, .win_pos0 = 8, .win_n = 2, .window = &rows[l][0][0][0]};
            assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
            if (l == 0) assert_int_equal(kv_cache_head_at(c, 0, 0)->len, 10); /* waits for the last layer */
        }
        expect_head(c, 0, 0, (int32_t[]){0, 8, 9}, 3);
        expect_head(c, 1, 0, (int32_t[]){0, 1, 2, 3, 4, 8, 9}, 7);
        assert_int_equal(p->layer_limit[0], 3);
        assert_int_equal(p->layer_limit[1], 7);
        kv_attn_plan pl = {.layer = 0, .pos0 = 10, .n_new = 1, .needs = KV_NEED_WINDOW};
        p->ops->plan(p, &pl);
        assert_int_equal(pl.needs, 0);
        kv_cache_free(c);
    }
    pol_free(p);
}

/* With the floor (Ada-KV) or the bound (ZigZagKV) at 1 every head and layer
 * keeps the uniform b: both are SnapKV, bit for bit, on the real model. */
static void test_adaptive_at_uniform_is_snapkv(void **state) {
    (void)state;
    if (!g_model) skip();
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(g_model, NULL, &c), KV_OK);
    float *ref = malloc((1 + GEN) * V * sizeof(float)), *got = malloc((1 + GEN) * V * sizeof(float));
    int32_t seen;
    const char *budgets[2] = {"12", "25%"};
    for (int k = 0; k < 2; k++) {
        pol_budget b;
        assert_int_equal(pol_budget_parse(budgets[k], &b), KV_OK);
        const char *snap_set[3] = {"window=4", "kernel=3", "pooling=max"};
        kv_policy *snap;
        assert_int_equal(pol_new("snapkv", snap_set, 3, &b, 7, kv_model_get_info(g_model), &snap), KV_OK);
        run(c, snap, 3, ref, &seen, NULL);
        const char *ada_set[4] = {"window=4", "kernel=3", "pooling=max", "floor=1"};
        const char *zz_set[4] = {"window=4", "kernel=3", "pooling=max", "bound=1"};
        const char *const *sets[2] = {ada_set, zz_set};
        const char *names[2] = {"adakv", "zigzag"};
        for (int i = 0; i < 2; i++) {
            kv_policy *p;
            assert_int_equal(pol_new(names[i], sets[i], 4, &b, 7, kv_model_get_info(g_model), &p), KV_OK);
            run(c, p, 3, got, &seen, NULL);
            if (memcmp(got, ref, (1 + GEN) * V * sizeof(float)) != 0)
                fail_msg("%s at its uniform setting differs from snapkv (budget %s)", names[i], budgets[k]);
            pol_free(p);
        }
        pol_free(snap);
    }
    free(ref);
    free(got);
    kv_ctx_free(c);
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

/* KV_NEED_LOGITS and KV_NEED_WINDOW: a reducer that takes the plain softmax
 * of each raw row gives the column sums; the window rows are the decode
 * rows of the same positions; the reduction does not depend on the thread
 * count; a plan that asks for nothing gets nothing. */
typedef struct stat_rec {
    int layer;
    int32_t plan_pos0, plan_n; /* plan_n > 0: the window the plan asks for */
    unsigned plan_needs;       /* what the plan asks for */
    int planned;
    unsigned needs;
    int32_t n, win_pos0, win_n;
    double reduced[8][64];
    float colsum[8][64], window[8][8][64];
    float last_at[64][8][64]; /* the newest query's row, by its position */
} stat_rec;

static void softmax_rows(void *user, const kv_logit_row *r) {
    (void)user;
    double mx = -INFINITY, sum = 0;
    for (int32_t j = 0; j < r->len; j++) mx = r->x[j] > mx ? r->x[j] : mx;
    for (int32_t j = 0; j < r->len; j++) sum += r->tmp[j] = r->x[j] == -INFINITY ? 0 : exp(r->x[j] - mx);
    for (int32_t j = 0; j < r->len; j++) r->acc[j] += r->tmp[j] / sum;
}

static void stat_plan(void *user, kv_attn_plan *pl) {
    stat_rec *s = user;
    s->planned++;
    pl->needs = s->plan_needs;
    if (s->plan_n > 0) pl->win_pos0 = s->plan_pos0, pl->win_n = s->plan_n;
}

static int stat_layer(void *user, kv_cache *c, const kv_attn_view *v) {
    (void)c;
    stat_rec *s = user;
    if (v->layer != s->layer) return KV_OK;
    s->needs = v->needs;
    s->n = v->stride;
    s->win_pos0 = v->win_pos0;
    s->win_n = v->win_n;
    if (!(v->needs & KV_NEED_LOGITS) && v->reduced) return KV_EINVAL;
    if (!(v->needs & KV_NEED_WINDOW) && v->window) return KV_EINVAL;
    if (!(v->needs & KV_NEED_COLSUM) && v->colsum) return KV_EINVAL;
    for (int h = 0; h < v->n_heads; h++)
        for (int32_t j = 0; j < v->stride; j++) {
            if (v->reduced) s->reduced[h][j] = v->reduced[(size_t)h * v->stride + j];
            if (v->colsum) s->colsum[h][j] = v->colsum[(size_t)h * v->stride + j];
            if (v->last_row) s->last_at[v->pos0 + v->n_new - 1][h][j] = v->last_row[(size_t)h * v->stride + j];
            for (int32_t r = 0; r < v->win_n && v->window; r++)
                s->window[h][r][j] = v->window[((size_t)h * v->win_n + r) * v->stride + j];
        }
    return KV_OK;
}

static void test_logit_and_window_statistics(void **state) {
    (void)state;
    if (!g_model) skip();
    enum { N = 50 };
    int32_t t[N];
    for (int i = 0; i < N; i++) t[i] = (int32_t)((i * 53 + 7) % V);
    const unsigned all = KV_NEED_LOGITS | KV_NEED_COLSUM | KV_NEED_WINDOW | KV_NEED_LAST_ROW;
    for (int layer = 0; layer < 5; layer += 4) {
        stat_rec *dec = calloc(1, sizeof *dec), *pre[3];
        dec->layer = layer;
        kv_ctx *c;
        assert_int_equal(kv_ctx_new(g_model, NULL, &c), KV_OK);
        kv_ctx_hook hook = {.user = dec, .needs = KV_NEED_LAST_ROW, .on_layer = stat_layer};
        kv_ctx_set_hook(c, &hook);
        for (int i = 0; i < N; i++) assert_int_equal(kv_ctx_eval(c, &t[i], 1, NULL, 0), KV_OK);
        kv_ctx_free(c);
        /* prefill: (0) last 4 queries of the call, 1 thread; (1) the same,
         * 3 threads; (2) a plan placing the window at 10..12 */
        for (int k = 0; k < 3; k++) {
            pre[k] = calloc(1, sizeof *pre[k]);
            pre[k]->layer = layer;
            pre[k]->plan_needs = all;
            if (k == 2) pre[k]->plan_pos0 = 10, pre[k]->plan_n = 3;
            kv_ctx_params cp = kv_ctx_default_params();
            cp.n_threads = k == 1 ? 3 : 1;
            assert_int_equal(kv_ctx_new(g_model, &cp, &c), KV_OK);
            hook = (kv_ctx_hook){.user = pre[k], .needs = all, .window = 4, .on_layer = stat_layer,
                                 .plan = k == 2 ? stat_plan : NULL, .reduce_row = softmax_rows};
            kv_ctx_set_hook(c, &hook);
            assert_int_equal(kv_ctx_eval(c, t, N, NULL, 0), KV_OK);
            kv_ctx_free(c);
            assert_int_equal(pre[k]->needs, all);
            assert_int_equal(pre[k]->n, N);
        }
        assert_int_equal(pre[0]->win_pos0, N - 4);
        assert_int_equal(pre[0]->win_n, 4);
        assert_int_equal(pre[2]->win_pos0, 10);
        assert_int_equal(pre[2]->win_n, 3);
        assert_memory_equal(pre[0]->reduced, pre[1]->reduced, sizeof pre[0]->reduced); /* any thread count */
        for (int h = 0; h < 8; h++)
            for (int32_t j = 0; j < N; j++) {
                assert_true(fabs(pre[0]->reduced[h][j] - pre[0]->colsum[h][j]) < 1e-4);
                for (int r = 0; r < 4; r++) assert_true(fabsf(pre[0]->window[h][r][j] - dec->last_at[N - 4 + r][h][j]) < 1e-5f);
                for (int r = 0; r < 3; r++) assert_true(fabsf(pre[2]->window[h][r][j] - dec->last_at[10 + r][h][j]) < 1e-5f);
            }
        /* a plan asking for nothing: nothing computed, on every layer */
        stat_rec *none = calloc(1, sizeof *none);
        none->layer = layer;
        assert_int_equal(kv_ctx_new(g_model, NULL, &c), KV_OK);
        hook = (kv_ctx_hook){.user = none, .needs = all, .window = 4, .on_layer = stat_layer, .plan = stat_plan,
                             .reduce_row = softmax_rows};
        kv_ctx_set_hook(c, &hook);
        assert_int_equal(kv_ctx_eval(c, t, N, NULL, 0), KV_OK);
        assert_int_equal(kv_ctx_eval(c, t, 1, NULL, 0), KV_OK);
        assert_int_equal(none->needs, 0);
        assert_int_equal(none->planned, 2 * 5);
        kv_ctx_free(c);
        free(none);
        for (int k = 0; k < 3; k++) free(pre[k]);
        free(dec);
    }
}

/* ------------------------------------------------- cascade by hand */

/* A cascade policy on one layer with one KV head and two query heads (the
 * hand caches), for a sequence with an n_prompt-token prompt. */
static kv_policy *cascade_policy(int32_t budget, const char *const *set, int n_set, int32_t n_prompt) {
    kv_model_info mi = {.n_layers = 1, .n_heads = 2, .n_kv_heads = 1};
    pol_budget b = {POL_BUDGET_TOKENS, budget};
    kv_policy *p;
    if (pol_new("cascade", set, n_set, &b, 1, &mi, &p)) fail_msg("%s", kv_last_error());
    pol_begin(p, n_prompt);
    return p;
}

/* Appends positions pos0 .. pos0 + n - 1 (keys (t, 1)) to the hand cache
 * and runs the policy on them as one layer call whose decayed column sums
 * are, at the slot holding position t, d0[t] (query head 0) and d1[t]
 * (query head 1; d1 NULL: the same as d0); 0 from position 64. */
static void cascade_call(kv_policy *p, kv_cache *c, int32_t pos0, int32_t n, const float *d0, const float *d1) {
    kv_cache_head *h = kv_cache_head_at(c, 0, 0);
    for (int32_t t = pos0; t < pos0 + n; t++) {
        float k[2] = {(float)t, 1.0f}, v[2] = {0, 0};
        assert_int_equal(kv_cache_append(c, h, k, v, t), KV_OK);
    }
    float d[2 * 64] = {0};
    assert_true(h->len <= 64);
    for (int32_t j = 0; j < h->len; j++) {
        d[j] = h->pos[j] < 64 ? d0[h->pos[j]] : 0;
        d[h->len + j] = h->pos[j] < 64 ? (d1 ? d1 : d0)[h->pos[j]] : 0;
    }
    kv_attn_view v = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = n, .pos0 = pos0, .stride = h->len,
                      .needs = KV_NEED_DECAYED_COLSUM, .dcolsum = d};
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    for (int32_t j = 1; j < h->len; j++) assert_true(h->pos[j - 1] < h->pos[j]); /* slot order = position order */
}

static void test_cascade_by_hand(void **state) {
    (void)state;
    /* geometry: W = budget / C slots per sub-cache, the limit counts the sinks */
    const char *s1[] = {"sinks=1", "cascades=2"}, *s4[] = {"sinks=4"}, *s0[] = {"sinks=0", "cascades=4"};
    kv_policy *p = cascade_policy(4, s1, 2, 0);
    assert_int_equal(p->limit, 5);
    assert_int_equal(p->layer_limit[0], 5);
    assert_int_equal(p->positions, KV_POS_CACHE); /* the authors' default */
    pol_free(p);
    p = cascade_policy(9, s4, 1, 0); /* C = 4, W = 2: 8 + 4 */
    assert_int_equal(p->limit, 12);
    pol_free(p);
    p = cascade_policy(3, s0, 2, 0); /* fewer slots than cascades: 3 of 1 */
    assert_int_equal(p->limit, 3);
    pol_free(p);
    const char *orig[] = {"positions=original"};
    p = cascade_policy(8, orig, 1, 0);
    assert_int_equal(p->positions, KV_POS_ORIGINAL);
    pol_free(p);

    /* the chunks the engine is asked to stop at: stride 8, a 10-token prompt */
    const char *st8[] = {"stride=8"};
    p = cascade_policy(8, st8, 1, 10);
    assert_int_equal(p->ops->split(p, 0, 10), 8);
    assert_int_equal(p->ops->split(p, 3, 100), 5);
    assert_int_equal(p->ops->split(p, 8, 5), 2);  /* the prompt's end */
    assert_int_equal(p->ops->split(p, 10, 5), 1); /* decoding: one at a time */
    assert_int_equal(p->ops->split(p, 0, 3), 3);
    pol_begin(p, 0); /* no prompt known: stride only */
    assert_int_equal(p->ops->split(p, 5, 20), 3);
    assert_int_equal(p->ops->split(p, 16, 20), 8);
    pol_free(p);

    /* S = 1, C = 2, W = 2, beta = 1/2, one token per call (decoding), no eager
     * fill: sub-cache 0 takes every token, sub-cache 1 those with (t - 1) even.
     * New token t's own column: d0[t], d1[t] (all else 0), so its score is
     * (1 - beta) red(d[t]) and halves at every later step.
     *   t=1,2  sub-cache 0 = [1 2]
     *   t=3    1 pushed down into sub-cache 1 (accepting, empty): [2 3] [1]
     *   t=4    2 pushed down, sub-cache 1 not accepting: 2 (score .3/8) against
     *          its newest, 1 (max .8/16 = .05; mean .5/16 = .03125):
     *          max keeps 1 and drops 2, mean replaces 1 by 2
     *   t=5    3 pushed down, accepted: [4 5] [1|2 3]
     *   t=6    4 pushed down, not accepting: 4 (.25/8) ties 3 (.5/16): the carry
     *          wins, 3 dropped: [5 6] [1|2 4]
     *   t=7    5 pushed down, accepted, full: its oldest (1|2) pushed out of the
     *          last sub-cache and dropped: [6 7] [4 5] */
    const float d0[8] = {0, 0.8f, 0.3f, 0.5f, 0.25f, 0, 0, 0}, d1[8] = {0, 0.2f, 0.3f, 0.5f, 0.25f, 0, 0, 0};
    for (int mean = 0; mean < 2; mean++) {
        const char *set[] = {"sinks=1", "cascades=2", "beta=0.5", "eager_fill=0",
                             mean ? "head_reduction=mean" : "head_reduction=max"};
        p = cascade_policy(4, set, 5, 0);
        kv_cache *c;
        assert_int_equal(kv_cache_new(1, 1, 2, KV_CACHE_F32, &c), KV_OK);
        const int32_t a = mean ? 2 : 1; /* the one of 1 and 2 that stays at t = 4 */
        const int32_t want[8][5] = {{0}, {0, 1}, {0, 1, 2}, {0, 1, 2, 3}, {0, a, 3, 4}, {0, a, 3, 4, 5},
                                    {0, a, 4, 5, 6}, {0, 4, 5, 6, 7}};
        const int32_t n_want[8] = {1, 2, 3, 4, 4, 5, 5, 5};
        for (int32_t t = 0; t < 8; t++) {
            float own0[64] = {0}, own1[64] = {0}; /* only the new token's column */
            own0[t] = d0[t], own1[t] = d1[t];
            cascade_call(p, c, t, 1, own0, own1);
            expect_positions(c, want[t], n_want[t]);
        }
        pol_free(p);
        kv_cache_free(c);
    }

    /* eager fill: every sub-cache takes every token while t <= N + S = 5, so
     * the cache fills at t = 4 and, at t = 5, 1 is pushed out of the last one;
     * from t = 6 the schedule: 4 against 3 (a tie: the carry wins) */
    {
        const char *set[] = {"sinks=1", "cascades=2", "beta=0.5"};
        p = cascade_policy(4, set, 3, 0);
        kv_cache *c;
        assert_int_equal(kv_cache_new(1, 1, 2, KV_CACHE_F32, &c), KV_OK);
        const int32_t want[7][5] = {{0}, {0, 1}, {0, 1, 2}, {0, 1, 2, 3}, {0, 1, 2, 3, 4}, {0, 2, 3, 4, 5}, {0, 2, 4, 5, 6}};
        const int32_t n_want[7] = {1, 2, 3, 4, 5, 5, 5};
        for (int32_t t = 0; t < 7; t++) {
            float own0[64] = {0}, own1[64] = {0};
            own0[t] = d0[t], own1[t] = d1[t];
            cascade_call(p, c, t, 1, own0, own1);
            expect_positions(c, want[t], n_want[t]);
        }
        pol_free(p);
        kv_cache_free(c);
    }
    /* ... up to t = N + S itself: S = 0, C = 3, W = 1: at t = 3, sub-cache 2
     * (every 4th token) takes 1 and drops 0 (without eager fill, sub-cache 1
     * would not take 2, and 0 would stay) */
    {
        const char *set[] = {"sinks=0", "cascades=3"};
        p = cascade_policy(3, set, 2, 0);
        kv_cache *c;
        assert_int_equal(kv_cache_new(1, 1, 2, KV_CACHE_F32, &c), KV_OK);
        const float none[64] = {0};
        for (int32_t t = 0; t < 3; t++) cascade_call(p, c, t, 1, none, NULL);
        expect_positions(c, (int32_t[]){0, 1, 2}, 3);
        cascade_call(p, c, 3, 1, none, NULL);
        expect_positions(c, (int32_t[]){1, 2, 3}, 3);
        pol_free(p);
        kv_cache_free(c);
    }

    /* strided prefill: a 10-token prompt, stride 8. Chunk 0..7 is inserted
     * after its attention, token by token, with scores (1 - beta) red(v[t]):
     * v = 0 .5 .25 .5 .5 .125 .25 0 -> scores 0 .25 .125 .25 .25 .0625 .125 0
     *   t=3  1 pushed into sub-cache 1: [2 3] [1]
     *   t=4  2 (.125) against 1 (.25): 2 dropped: [3 4] [1]
     *   t=5  3 pushed down, accepted: [4 5] [1 3]
     *   t=6  4 (.25) ties 3 (.25): 3 dropped: [5 6] [1 4]
     *   t=7  5 pushed down, accepted, full: 1 out: [6 7] [4 5]
     * Fed in one call, or in three (0..2, 3..5, 6..7: nothing evicted before
     * the chunk's end, the sums carried over as P <- beta^n P + D), the result
     * is the same; so are the steps after it. */
    const float v[8] = {0, 0.5f, 0.25f, 0.5f, 0.5f, 0.125f, 0.25f, 0};
    float one[64] = {0}, pa[64] = {0}, pb[64] = {0}, pc[64] = {0}, t89[64] = {0}, t10[64] = {0};
    for (int t = 0; t < 8; t++) {
        one[t] = v[t];
        /* P = D_a / 32 + D_b / 4 + D_c (beta^(3+2), beta^2, 1) */
        if (t < 3) pa[t] = 16 * v[t], pc[t] = v[t] / 2;
        else if (t < 6) pb[t] = 2 * v[t], pc[t] = v[t] / 2;
        else pc[t] = v[t];
    }
    t89[8] = 1, t89[9] = 0.5f, t89[5] = 0.0625f, t10[10] = 0.5f; /* the calls after the chunk */
    for (int split = 0; split < 2; split++) {
        const char *set[] = {"sinks=1", "cascades=2", "beta=0.5", "eager_fill=0", "stride=8"};
        p = cascade_policy(4, set, 5, 10);
        kv_cache *c;
        assert_int_equal(kv_cache_new(1, 1, 2, KV_CACHE_F32, &c), KV_OK);
        if (split) {
            cascade_call(p, c, 0, 3, pa, NULL);
            assert_int_equal(kv_cache_head_at(c, 0, 0)->len, 3);
            cascade_call(p, c, 3, 3, pb, NULL);
            assert_int_equal(kv_cache_head_at(c, 0, 0)->len, 6); /* over the limit inside a chunk */
            cascade_call(p, c, 6, 2, pc, NULL);
        } else {
            cascade_call(p, c, 0, 8, one, NULL);
        }
        expect_positions(c, (int32_t[]){0, 4, 5, 6, 7}, 5);
        /* the prompt's last chunk, 8..9, whose queries also attend to 5
         * (columns 8: 1, 9: .5, 5: .0625): scores 4 .0625, 5 .015625 + .03125,
         * 6 .03125, 7 0 (beta^2 = 1/4 of theirs, + (1 - beta) D), 8 .5, 9 .25.
         * 8 pushes 6 down; t - 1 = 7 is odd: 6 (.03125) loses to the newest,
         * 5 (.046875), and is dropped: [7 8] [4 5]; 9 pushes 7 down into the
         * accepting, full sub-cache 1, whose oldest, 4, is dropped: [8 9] [5 7] */
        cascade_call(p, c, 8, 2, t89, NULL);
        expect_positions(c, (int32_t[]){0, 5, 7, 8, 9}, 5);
        /* decoding: 10 pushes 8 down, t - 1 = 9 is odd: 8 (.25) beats 7 (0) */
        cascade_call(p, c, 10, 1, t10, NULL);
        expect_positions(c, (int32_t[]){0, 5, 8, 9, 10}, 5);
        pol_free(p);
        kv_cache_free(c);
    }
}

/* KV_NEED_DECAYED_COLSUM: a prefill's decayed column sums equal the newest
 * rows of one-token steps weighted decay^(n-1-t) (decay 1: the column sums);
 * and a hook's split stops the forwards at its boundaries. */
typedef struct dec_rec {
    int32_t n, pieces, pos0[64], n_new[64];
    float dcol[8][64], col[8][64], last_at[64][8][64];
} dec_rec;

static int dec_layer(void *user, kv_cache *c, const kv_attn_view *v) {
    (void)c;
    dec_rec *r = user;
    if (v->layer != 0) return KV_OK;
    if (r->pieces < 64) r->pos0[r->pieces] = v->pos0, r->n_new[r->pieces] = v->n_new;
    r->pieces++;
    r->n = v->stride;
    for (int h = 0; h < v->n_heads; h++)
        for (int32_t j = 0; j < v->stride; j++) {
            if (v->dcolsum) r->dcol[h][j] = v->dcolsum[(size_t)h * v->stride + j];
            if (v->colsum) r->col[h][j] = v->colsum[(size_t)h * v->stride + j];
            if (v->last_row) r->last_at[v->pos0][h][j] = v->last_row[(size_t)h * v->stride + j];
        }
    return KV_OK;
}

static int32_t split7(void *user, int32_t pos0, int32_t n) {
    (void)user;
    int32_t m = 7 - pos0 % 7;
    return n < m ? n : m;
}

static void test_decayed_colsum_and_split(void **state) {
    (void)state;
    if (!g_model) skip();
    enum { N = 40 };
    int32_t t[N];
    for (int i = 0; i < N; i++) t[i] = (int32_t)((i * 53 + 7) % V);
    dec_rec *dec = calloc(1, sizeof *dec), *pre = calloc(1, sizeof *pre);
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(g_model, NULL, &c), KV_OK);
    kv_ctx_hook hook = {.user = dec, .needs = KV_NEED_LAST_ROW, .on_layer = dec_layer};
    kv_ctx_set_hook(c, &hook);
    for (int i = 0; i < N; i++) assert_int_equal(kv_ctx_eval(c, &t[i], 1, NULL, 0), KV_OK);
    const double decays[3] = {0.5, 0.9, 1.0};
    for (int k = 0; k < 3; k++) {
        memset(pre, 0, sizeof *pre);
        kv_ctx_reset(c);
        hook = (kv_ctx_hook){.user = pre, .needs = KV_NEED_DECAYED_COLSUM | KV_NEED_COLSUM, .decay = decays[k],
                             .on_layer = dec_layer};
        kv_ctx_set_hook(c, &hook);
        assert_int_equal(kv_ctx_eval(c, t, N, NULL, 0), KV_OK);
        assert_int_equal(pre->pieces, 1);
        for (int h = 0; h < 8; h++)
            for (int32_t j = 0; j < N; j++) {
                double want = 0;
                for (int q = 0; q < N; q++) want += pow(decays[k], N - 1 - q) * dec->last_at[q][h][j];
                assert_true(fabs(pre->dcol[h][j] - want) < 1e-4);
                if (k == 2) assert_true(fabsf(pre->dcol[h][j] - pre->col[h][j]) < 1e-5f);
            }
        /* one token: the row itself (weight 1) */
        assert_int_equal(kv_ctx_eval(c, t, 1, NULL, 0), KV_OK);
        for (int h = 0; h < 8; h++)
            for (int32_t j = 0; j <= N; j++) assert_true(pre->dcol[h][j] == pre->col[h][j]);
    }
    /* split: forwards of at most 7 tokens, never across a multiple of 7 */
    memset(pre, 0, sizeof *pre);
    kv_ctx_reset(c);
    hook = (kv_ctx_hook){.user = pre, .on_layer = dec_layer, .split = split7};
    kv_ctx_set_hook(c, &hook);
    assert_int_equal(kv_ctx_eval(c, t, 3, NULL, 0), KV_OK);
    assert_int_equal(kv_ctx_eval(c, t + 3, N - 3, NULL, 0), KV_OK);
    const int32_t want0[8] = {0, 3, 7, 14, 21, 28, 35}, want_n[8] = {3, 4, 7, 7, 7, 7, 5};
    assert_int_equal(pre->pieces, 7);
    for (int i = 0; i < 7; i++) {
        assert_int_equal(pre->pos0[i], want0[i]);
        assert_int_equal(pre->n_new[i], want_n[i]);
    }
    assert_int_equal(kv_ctx_pos(c), N);
    kv_ctx_free(c);
    free(dec);
    free(pre);
}

/* ------------------------- knorm, random and h2o sim=1 (issue 11, section 2) */

/* h2o sim=1 holds heavy + recent - 1 slots between steps (the next token
 * counts against its budget, as Keyformer's kept set does). */
static int counts_next_token(const kv_policy *p) { return strcmp(p->ops->name, "h2o") == 0 && p->param[1] == 1; }

/* A policy on the hand-made one-layer cache with "k=v,k=v" settings, a
 * budget (tokens, or "N%"), and a prompt of n_prompt tokens. */
static kv_policy *floor_policy(const char *name, const char *budget, const char *set, int32_t n_prompt) {
    kv_model_info mi = {.n_layers = 1, .n_heads = 2, .n_kv_heads = 1};
    pol_budget b;
    assert_int_equal(pol_budget_parse(budget, &b), KV_OK);
    char buf[128];
    const char *s[8];
    int n = 0;
    snprintf(buf, sizeof buf, "%s", set ? set : "");
    for (char *t = strtok(buf, ","); t && n < 8; t = strtok(NULL, ",")) s[n++] = t;
    kv_policy *p;
    if (pol_new(name, s, n, &b, 1, &mi, &p)) fail_msg("%s", kv_last_error());
    pol_begin(p, n_prompt);
    return p;
}

static void append_pos(kv_cache *c, int32_t t) {
    float k[2] = {(float)t, 1.0f}, v[2] = {0, 0};
    assert_int_equal(kv_cache_append(c, kv_cache_head_at(c, 0, 0), k, v, t), KV_OK);
}

static void test_floors_by_hand(void **state) {
    (void)state;
    kv_attn_view v = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 1, .stride = 16};
    /* knorm schedule=prompt (default, one-shot), budget 2 of a 5-token prompt;
     * keys (t, 1) have norms growing with t: keep 0 and 1, at the prompt's end only */
    kv_cache *c = hand_cache(5);
    kv_policy *p = floor_policy("knorm", "2", NULL, 5);
    assert_true(p->flags & POL_ONE_SHOT);
    v.pos0 = 3; /* position 3's call: the prompt goes on */
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    expect_positions(c, (int32_t[]){0, 1, 2, 3, 4}, 5);
    v.pos0 = 4;
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    expect_positions(c, (int32_t[]){0, 1}, 2);
    append_pos(c, 5); /* generated tokens are appended, never evicted */
    v.pos0 = 5;
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    expect_positions(c, (int32_t[]){0, 1, 5}, 3);
    pol_free(p);
    kv_cache_free(c);

    /* recent=1 with schedule=prompt: the prompt's last token and the best 2 others */
    c = hand_cache(5);
    p = floor_policy("knorm", "3", "recent=1", 5);
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    expect_positions(c, (int32_t[]){0, 1, 4}, 3);
    pol_free(p);
    kv_cache_free(c);

    /* every_step (not one-shot): the newest token always stays (window 1 by
     * default), the lowest norm of the others fills the budget */
    c = hand_cache(5);
    p = floor_policy("knorm", "2", "schedule=every_step", 5);
    assert_false(p->flags & POL_ONE_SHOT);
    v.pos0 = 4;
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    expect_positions(c, (int32_t[]){0, 4}, 2);
    append_pos(c, 5);
    v.pos0 = 5;
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    expect_positions(c, (int32_t[]){0, 5}, 2);
    pol_free(p);
    kv_cache_free(c);

    /* random: prompt schedule keeps recent + a random subset once; every_step
     * keeps the newest and drops each older slot about equally often */
    c = hand_cache(6);
    p = floor_policy("random", "3", "recent=2", 6);
    v.pos0 = 5;
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    kv_cache_head *h = kv_cache_head_at(c, 0, 0);
    assert_int_equal(h->len, 3);
    assert_true(slot_of(c, 4) >= 0 && slot_of(c, 5) >= 0);
    append_pos(c, 6);
    v.pos0 = 6;
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
    assert_int_equal(h->len, 4);
    pol_free(p);
    kv_cache_free(c);
    int kept[10] = {0};
    for (int seed = 0; seed < 300; seed++) {
        c = hand_cache(10);
        p = floor_policy("random", "3", "schedule=every_step", 10);
        p->seed = (uint64_t)seed;
        pol_begin(p, 10);
        v.pos0 = 9;
        assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
        h = kv_cache_head_at(c, 0, 0);
        assert_int_equal(h->len, 3);
        for (int32_t j = 0; j < h->len; j++) kept[h->pos[j]]++;
        pol_free(p);
        kv_cache_free(c);
    }
    assert_int_equal(kept[9], 300);
    for (int t = 0; t < 9; t++) /* 2 of 9 kept: 66.7 expected of 300 */
        if (kept[t] < 35 || kept[t] > 100) fail_msg("random every_step kept position %d %d times of 300", t, kept[t]);

    /* flags per instance: prompt refuses a streaming prefill, every_step takes it */
    kv_model_info mi = {.n_layers = 1, .n_heads = 2, .n_kv_heads = 1};
    pol_budget b = {POL_BUDGET_TOKENS, 8};
    const char *stream[3] = {"prefill=streaming", "schedule=every_step", "chunk=4"};
    assert_int_equal(pol_new("knorm", stream, 1, &b, 0, &mi, &p), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "compresses the prompt once"));
    assert_int_equal(pol_new("random", stream, 3, &b, 0, &mi, &p), KV_OK);
    assert_false(p->flags & POL_ONE_SHOT);
    pol_free(p);
}

/* Column sums [2 heads][16] giving slot j of the head score[j] in head 0. */
static void sim_step(kv_policy *p, kv_cache *c, int32_t pos0, const float *score_by_pos) {
    static float colsum[2][16];
    memset(colsum, 0, sizeof colsum);
    const kv_cache_head *h = kv_cache_head_at(c, 0, 0);
    for (int32_t j = 0; j < h->len; j++) colsum[0][j] = score_by_pos[h->pos[j]];
    kv_attn_view v = {.layer = 0, .n_heads = 2, .n_kv_heads = 1, .n_new = 1, .pos0 = pos0, .stride = 16,
                      .colsum = &colsum[0][0]};
    assert_int_equal(p->ops->on_layer(p, c, &v), KV_OK);
}

static void test_h2o_sim_by_hand(void **state) {
    (void)state;
    /* budget 6, recent 0.5: heavy 3, recent 3. After the 8-token prompt
     * (K = 8 > 6) the next step sees the new token and 6, 7; position 5 is
     * held out for one step although it scores most; heavy: the best 3 of 0..4 */
    kv_cache *c = hand_cache(8);
    kv_policy *p = floor_policy("h2o", "6", "sim=1", 8);
    assert_int_equal(p->limit, 6);
    float s1[16] = {0.1f, 0.5f, 0.2f, 0.6f, 0.7f, 5.0f, 0.1f, 0.1f};
    sim_step(p, c, 0, s1);
    expect_positions(c, (int32_t[]){0, 1, 2, 3, 4, 5, 6, 7}, 8); /* the prompt goes on: masked nowhere */
    float none[16] = {0};
    sim_step(p, c, 7, none);
    expect_positions(c, (int32_t[]){1, 3, 4, 6, 7}, 5);
    /* the next step: 8 appended; 6 is held out, 5 comes back (its key with
     * it) and with 3 (0.6 + 0.1 of this step) and 4 (0.7) beats 1 (0.5) */
    append_pos(c, 8);
    float s2[16] = {[3] = 0.1f, [8] = 0.2f};
    sim_step(p, c, 8, s2);
    expect_positions(c, (int32_t[]){3, 4, 5, 7, 8}, 5);
    /* and 6, held out (0.1), lost to 5, 4 and 3: it is gone for good */
    append_pos(c, 9);
    sim_step(p, c, 9, none);
    expect_positions(c, (int32_t[]){3, 4, 5, 8, 9}, 5);
    pol_free(p);
    kv_cache_free(c);

    /* utils_hh's arithmetic: 60% of 103 with recent 0.5: heavy = int(0.3 x 103)
     * = 30 and recent = 30, so 60 - not int(0.6 x 103) = 61 split 30/31 */
    p = floor_policy("h2o", "60%", "sim=1", 103);
    assert_int_equal(p->limit, 60);
    assert_true(p->param[2] == 0.3 && p->param[3] == 0.3); /* the ratios, recorded */
    pol_free(p);
    p = floor_policy("h2o", "20%", "sim=1,heavy_ratio=0.15,recent_ratio=0.05", 103);
    assert_int_equal(p->limit, 15 + 5);
    pol_free(p);
    p = floor_policy("h2o", "60%", NULL, 103); /* real drop: the budget as it was */
    assert_int_equal(p->limit, 61);
    pol_free(p);

    kv_model_info mi = {.n_layers = 1, .n_heads = 2, .n_kv_heads = 1};
    pol_budget b20;
    assert_int_equal(pol_budget_parse("20%", &b20), KV_OK);
    const char *bad[][2] = {{"sim=1", "heavy_ratio=0.3"}, {"sim=1", "positions=rerotate"},
                            {"sim=1", "prefill=streaming"}, {"sim=1", "recent=0"}, {"heavy_ratio=0.1", "recent=0.5"}};
    const char *why[] = {"must equal the budget", "rerotate", "streaming", "needs recent", "sim=1's"};
    for (int i = 0; i < 5; i++) {
        kv_policy *q;
        assert_int_equal(pol_new("h2o", bad[i], 2, &b20, 0, &mi, &q), KV_EINVAL);
        if (!strstr(kv_last_error(), why[i])) fail_msg("h2o %s,%s: %s", bad[i][0], bad[i][1], kv_last_error());
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
    const char *badnoise[1] = {"noise=uniform"}, *noise_idx[1] = {"noise=3"}, *noise_name[1] = {"noise=gaussian"};
    assert_int_equal(pol_new("keyformer", badnoise, 1, &b, 0, &mi, &p), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "expected one of gumbel|gaussian|constant|none, got 'uniform'"));
    assert_int_equal(pol_new("keyformer", noise_idx, 1, &b, 0, &mi, &p), KV_OK); /* a stored index reads back */
    char buf[32];
    assert_string_equal(pol_param_str(p, 4, buf, sizeof buf), "none");
    pol_free(p);
    assert_int_equal(pol_new("keyformer", noise_name, 1, &b, 0, &mi, &p), KV_OK);
    assert_true(p->param[4] == 1);
    assert_string_equal(pol_param_str(p, 0, buf, sizeof buf), "30");
    pol_free(p);
    const char *badpos[1] = {"positions=shifted"};
    assert_int_equal(pol_new("window", badpos, 1, &b, 0, &mi, &p), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "expected original, cache or rerotate"));
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

/* What the harness reads through policy.h's accessors is what the fields of
 * policy_impl.h hold, and pol_swap exchanges two instances in place. */
static void test_accessors(void **state) {
    (void)state;
    const kv_model_info mi = {.n_layers = 3, .n_heads = 2, .n_kv_heads = 1, .head_dim = 8, .dim = 16, .ctx_len = 512};
    pol_budget b;
    assert_int_equal(pol_budget_parse("40", &b), KV_OK);
    const char *win[1] = {"window=8"};
    kv_policy *p, *q;
    assert_int_equal(pol_new("pyramidkv", win, 1, &b, 5, &mi, &p), KV_OK);
    pol_begin(p, 100);
    assert_string_equal(pol_name(p), "pyramidkv");
    assert_ptr_equal(pol_ops_of(p), pol_find("pyramidkv"));
    assert_string_equal(pol_ops_name(pol_ops_of(p)), "pyramidkv");
    assert_true(pol_is_one_shot(p));
    assert_false(pol_has_own_prompt_eval(p));
    assert_int_equal(pol_limit(p), p->limit);
    assert_int_equal(pol_n_layers(p), 3);
    assert_int_equal(pol_n_prompt(p), 100);
    assert_ptr_equal(pol_layer_limits(p), p->layer_limit);
    for (int l = 0; l < 3; l++) assert_int_equal(pol_layer_limit(p, l), p->layer_limit[l]);
    assert_true(pol_get_budget(p)->kind == POL_BUDGET_TOKENS && pol_get_budget(p)->value == 40);
    assert_int_equal(pol_positions(p), p->positions);
    assert_int_equal(pol_n_params(p), p->ops->n_params);
    int w = -1;
    for (int i = 0; i < pol_n_params(p); i++) {
        assert_string_equal(pol_param_name(p, i), pol_ops_param(pol_ops_of(p), i)->name);
        if (!strcmp(pol_param_name(p, i), "window")) w = i;
    }
    assert_true(w >= 0 && pol_param_value(p, w) == 8);

    /* one-shot is the instance's, not the method's: knorm's schedule decides */
    const char *every[1] = {"schedule=every_step"}, *prompt[1] = {"schedule=prompt"};
    assert_int_equal(pol_new("knorm", every, 1, &b, 5, &mi, &q), KV_OK);
    assert_false(pol_is_one_shot(q));
    pol_free(q);
    assert_int_equal(pol_new("knorm", prompt, 1, &b, 5, &mi, &q), KV_OK);
    assert_true(pol_is_one_shot(q));
    pol_free(q);
    const char *sent[2] = {"cl=510", "cr=511"};
    assert_int_equal(pol_new("sentinel", sent, 2, &b, 5, &mi, &q), KV_OK);
    assert_true(pol_has_own_prompt_eval(q));
    pol_free(q);

    assert_int_equal(pol_new("h2o", NULL, 0, &b, 6, &mi, &q), KV_OK);
    pol_set_sample_seed(p, 11);
    const uint64_t dp = pol_draw_seed(p), dq = pol_draw_seed(q);
    assert_true(dp != 5 && dq == 6);
    pol_swap(p, q);
    assert_string_equal(pol_name(p), "h2o");
    assert_string_equal(pol_name(q), "pyramidkv");
    assert_true(pol_draw_seed(p) == dq && pol_draw_seed(q) == dp && pol_n_prompt(q) == 100);
    pol_set_draw_seed(p, 77);
    assert_true(pol_draw_seed(p) == 77 && p->draw_seed == 77);
    pol_free(p);
    pol_free(q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_budget_is_full), cmocka_unit_test(test_budget_never_exceeded),
        cmocka_unit_test(test_rerotate_matches_cache),
        cmocka_unit_test(test_no_state_leak),        cmocka_unit_test(test_rules_by_hand),
        cmocka_unit_test(test_attention_statistics),
        cmocka_unit_test(test_keyformer_by_hand),    cmocka_unit_test(test_snapkv_by_hand),
        cmocka_unit_test(test_adakv_by_hand),        cmocka_unit_test(test_zigzag_by_hand),
        cmocka_unit_test(test_adaptive_at_uniform_is_snapkv),
        cmocka_unit_test(test_logit_and_window_statistics),
        cmocka_unit_test(test_cascade_by_hand),      cmocka_unit_test(test_decayed_colsum_and_split),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_floors_by_hand),       cmocka_unit_test(test_h2o_sim_by_hand),
        cmocka_unit_test(test_accessors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
