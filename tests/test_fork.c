/* test_fork.c - one prefill, one compression, many continuations.
 *
 * A 60-token prompt is read through a policy (budget 40%); the context and
 * the policy are then forked (kv_ctx_fork, pol_clone, pol_attach) into two
 * contexts of other thread counts (and batch), one of which held another
 * sequence before. Fork 1 reads question A (10 tokens) and generates 8 greedy
 * tokens, fork 2 question B; the source, continued after the forks, reads
 * A. Each must match a from-scratch run of prompt + question on a fresh
 * context bit for bit: the logits (memcmp), and after every step each
 * head's slots (positions, keys and values, in slot order), the next
 * position, the cache's bytes and peak, and the policy's limits. Fork 2
 * runs after the source and its policy are freed, so under ASan anything
 * the fork shares with its source is a use after free. Every policy with
 * its defaults, and variants of scoring, schedule, granularity, prefill
 * chunks and position modes (rerotate's per-head records travel with the
 * fork). A synthetic Llama model with grouped-query attention (4 query
 * heads on 2 KV heads) is written here. */
#include "test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_synth.h"

#include "context.h"
#include "export.h"
#include "gguf.h"
#include "kv_error.h"
#include "model.h"
#include "policy_impl.h" /* the clone refusal test swaps a method's clone_state out */
#include "sampler.h"

enum { DIM = 64, HIDDEN = 128, LAYERS = 3, HEADS = 4, KV_HEADS = 2, VOCAB = 1024, CTX = 1024 };
enum { PROMPT = 60, QLEN = 10, GEN = 8, STEPS = 1 + GEN };

static char g_tmp[256];
static char g_path[512];
static kv_model *g_model;
/* The same shape with sliding-window layers (gemma2: layers 0 and 2
 * windowed at 16 tokens; meson writes it with `kvbench synth`): forks and
 * shared passes must carry the window layers' trims (each policy's state
 * follows its slots) exactly as a pass alone does. */
static const char *g_swa_path;
static kv_model *g_swa, *g_llama;

static int setup(void **state) {
    (void)state;
    if (!tu_mkdtemp(g_tmp, sizeof g_tmp)) return -1;
    snprintf(g_path, sizeof g_path, "%s/model.gguf", g_tmp);
    tu_write_llama(g_path, &(tu_llama_shape){DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB, CTX, 23});
    kv_model_params mp = kv_model_default_params();
    mp.no_tokenizer = 1;
    if (!g_swa_path || kv_model_load(g_swa_path, &mp, &g_swa) != KV_OK) {
        fprintf(stderr, "test_fork: expected the sliding-window model's path as the argument\n");
        return -1;
    }
    const kv_model_info *si = kv_model_get_info(g_swa);
    if (si->n_layers != LAYERS || si->n_kv_heads != KV_HEADS || si->vocab_size != VOCAB || si->n_swa_layers != 2)
        return -1;
    if (kv_model_load(g_path, &mp, &g_model) != KV_OK) return -1;
    g_llama = g_model;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    kv_model_free(g_llama);
    kv_model_free(g_swa);
    tu_rmdir(g_tmp);
    return 0;
}

/* ------------------------------------------------------------ records */

/* A growing byte record of what a run showed at each step. */
typedef struct rec { unsigned char *b; size_t n, cap; } rec;

static void rec_put(rec *r, const void *p, size_t n) {
    if (r->n + n > r->cap) {
        r->cap = (r->n + n) * 2;
        r->b = realloc(r->b, r->cap);
        assert_non_null(r->b);
    }
    if (n) memcpy(r->b + r->n, p, n);
    r->n += n;
}

/* The sequence state: next position, bytes and peak, every head's slots in
 * slot order (position, key, value), and the policy's limits. */
static void rec_state(rec *r, kv_ctx *c, const kv_policy *p) {
    kv_cache *kc = kv_ctx_cache(c);
    int32_t pos = kv_ctx_pos(c);
    size_t bytes[2] = {kv_cache_bytes(kc), kv_cache_peak_bytes(kc)};
    rec_put(r, &pos, sizeof pos);
    rec_put(r, bytes, sizeof bytes);
    for (int l = 0; l < LAYERS; l++)
        for (int g = 0; g < KV_HEADS; g++) {
            const kv_cache_head *h = kv_cache_head_at(kc, l, g);
            rec_put(r, &h->len, sizeof h->len);
            rec_put(r, h->pos, (size_t)h->len * sizeof *h->pos);
            rec_put(r, h->kb, (size_t)h->len * kv_cache_row_bytes(kc));
            rec_put(r, h->vb, (size_t)h->len * kv_cache_row_bytes(kc));
        }
    if (!p) return;
    const int32_t limit = pol_limit(p);
    rec_put(r, &limit, sizeof limit);
    rec_put(r, pol_layer_limits(p), LAYERS * sizeof(int32_t));
}

/* What a continuation showed: per step, the logits and then the state. */
typedef struct trace { rec logits[STEPS], state[STEPS]; } trace;

static void trace_free(trace *t) {
    for (int s = 0; s < STEPS; s++) free(t->logits[s].b), free(t->state[s].b);
    memset(t, 0, sizeof *t);
}

/* Fails naming the first step where `got` differs from `want`. */
static void trace_check(const trace *want, const trace *got, const char *what) {
    for (int s = 0; s < STEPS; s++) {
        const rec *a = &want->logits[s], *b = &got->logits[s];
        if (a->n != b->n || memcmp(a->b, b->b, a->n))
            fail_msg("%s: logits differ from a from-scratch run at step %d (0: after the question)", what, s);
        a = &want->state[s], b = &got->state[s];
        if (a->n != b->n || memcmp(a->b, b->b, a->n))
            fail_msg("%s: cache or policy state differs from a from-scratch run at step %d", what, s);
    }
}

/* -------------------------------------------------------------- runs */

static int32_t g_prompt[PROMPT], g_qa[QLEN], g_qb[QLEN];

static void make_tokens(void) {
    for (int i = 0; i < PROMPT; i++) g_prompt[i] = (int32_t)((i * 131 + 17) % VOCAB); /* distinct: no exact ties */
    for (int i = 0; i < QLEN; i++) {
        g_qa[i] = (int32_t)((i * 37 + 901) % VOCAB);
        g_qb[i] = (int32_t)((i * 53 + 400) % VOCAB);
    }
}

static kv_ctx *ctx_new_batch(int threads, int32_t batch) {
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = threads;
    cp.max_batch = batch;
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(g_model, &cp, &c), KV_OK);
    return c;
}

static kv_ctx *ctx_new(int threads) { return ctx_new_batch(threads, 0); }

/* "a=1,b=2" as pol_new's settings, 40% of the prompt (full: none). */
static kv_policy *make(const char *name, const char *set) {
    kv_policy *p = tu_policy(g_model, name, strcmp(name, "full") ? "40%" : "none", set, 5);
    if (pol_check_model(p, g_model)) fail_msg("%s %s: %s", name, set, kv_last_error());
    pol_set_sample_seed(p, 77); /* Keyformer's noise: the sample's own draws */
    return p;
}

/* The prompt through a new instance of the policy (NULL name: no policy). */
static kv_policy *read_prompt(kv_ctx *c, const char *name, const char *set) {
    kv_policy *p = name ? make(name, set) : NULL;
    kv_ctx_reset(c);
    if (p) pol_begin(p, PROMPT);
    pol_attach(p, c);
    if (pol_eval_prompt(p, c, g_prompt, PROMPT, NULL)) fail_msg("%s %s: prompt: %s", name, set, kv_last_error());
    return p;
}

static int argmax(const float *x) {
    int best = 0;
    for (int i = 1; i < VOCAB; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* The question, then GEN greedy tokens, recording every step. */
static void cont(kv_ctx *c, const kv_policy *p, const int32_t *q, trace *t) {
    float logits[VOCAB];
    memset(t, 0, sizeof *t);
    for (int s = 0; s < STEPS; s++) {
        int32_t tok = s ? argmax(logits) : 0;
        if (kv_ctx_eval(c, s ? &tok : q, s ? 1 : QLEN, logits, 0))
            fail_msg("%s: step %d: %s", p ? pol_name(p) : "no policy", s, kv_last_error());
        rec_put(&t->logits[s], logits, sizeof logits);
        rec_state(&t->state[s], c, p);
    }
}

/* prompt + question from scratch on a fresh context. */
static void scratch(const char *name, const char *set, const int32_t *q, trace *t) {
    kv_ctx *c = ctx_new(1);
    kv_policy *p = read_prompt(c, name, set);
    cont(c, p, q, t);
    pol_free(p);
    kv_ctx_free(c);
}

/* dst takes src's sequence and a clone of its policy (NULL: none). */
static kv_policy *fork_into(const kv_ctx *src, const kv_policy *p, kv_ctx *dst) {
    if (kv_ctx_fork(src, dst)) fail_msg("kv_ctx_fork: %s", kv_last_error());
    kv_policy *q = NULL;
    if (p && pol_clone(p, &q)) fail_msg("pol_clone: %s", kv_last_error());
    pol_attach(q, dst);
    return q;
}

/* The whole protocol for one configuration (see the file's comment). */
static void check_fork(const char *name, const char *set) {
    char what[160];
    trace ref_a, ref_b, got;
    scratch(name, set, g_qa, &ref_a);
    scratch(name, set, g_qb, &ref_b);
    kv_ctx *src = ctx_new(1), *f1 = ctx_new(2), *f2 = ctx_new_batch(3, 16); /* every later call fits 16 */
    kv_policy *p = read_prompt(src, name, set);
    const int full = !name || !strcmp(name, "full");
    if (full != (kv_cache_max_len(kv_ctx_cache(src)) == PROMPT)) /* a compressed prompt, or the full one */
        fail_msg("%s %s: the prompt's cache holds %d of %d slots", name ? name : "(no policy)", set,
                 kv_cache_max_len(kv_ctx_cache(src)), PROMPT);
    int32_t stale[30]; /* f2 held another sequence: the fork replaces it */
    for (int i = 0; i < 30; i++) stale[i] = (int32_t)((i * 7 + 3) % VOCAB);
    assert_int_equal(kv_ctx_eval(f2, stale, 30, NULL, 0), KV_OK);
    kv_policy *p1 = fork_into(src, p, f1), *p2 = fork_into(src, p, f2);
    rec a = {0}, b = {0};
    rec_state(&a, src, p);
    rec_state(&b, f1, p1);
    snprintf(what, sizeof what, "%s %s: right after the fork", name ? name : "(no policy)", set);
    if (a.n != b.n || memcmp(a.b, b.b, a.n)) fail_msg("%s: the fork's state differs from its source's", what);
    free(a.b), free(b.b);
    snprintf(what, sizeof what, "%s %s: fork 1 (2 threads), question A", name ? name : "(no policy)", set);
    cont(f1, p1, g_qa, &got);
    trace_check(&ref_a, &got, what);
    trace_free(&got);
    snprintf(what, sizeof what, "%s %s: the source continued after the forks, question A", name ? name : "(no policy)", set);
    cont(src, p, g_qa, &got);
    trace_check(&ref_a, &got, what);
    trace_free(&got);
    pol_free(p); /* the second fork must own everything it uses */
    kv_ctx_free(src);
    snprintf(what, sizeof what, "%s %s: fork 2 (3 threads, batch 16), question B", name ? name : "(no policy)", set);
    cont(f2, p2, g_qb, &got);
    trace_check(&ref_b, &got, what);
    trace_free(&got);
    pol_free(p1), pol_free(p2);
    kv_ctx_free(f1), kv_ctx_free(f2);
    trace_free(&ref_a), trace_free(&ref_b);
}

/* ------------------------------------------------------------- tests */

static void test_fork_every_policy(void **state) {
    (void)state;
    make_tokens();
    int n = 0;
    for (int i = 0; i < pol_count(); i++, n++) /* stories-less: the sentinel method is told two ids */
        check_fork(pol_ops_name(pol_at(i)), strcmp(pol_ops_name(pol_at(i)), "sentinel") ? "" : "cl=1022,cr=1023");
    const char *variants[][2] = {
        {"keyformer", "selection=paper"},
        {"keyformer", "positions=cache"},
        {"keyformer", "positions=rerotate"},
        {"h2o", "sim=1"},
        {"h2o", "positions=rerotate"},
        {"h2o", "prefill=streaming,chunk=16"},
        /* rerotate with evictions synced before the fork: the records are no longer the identity */
        {"h2o", "prefill=streaming,chunk=16,positions=rerotate"},
        {"window", "prefill=streaming,chunk=16,positions=rerotate"},
        {"cascade", "stride=16,positions=rerotate"},
        {"knorm", "schedule=every_step"},
        {"random", "schedule=every_step,recent=2"},
        {"snapkv", "window=8,granularity=query_head"},
        {"snapkv", "window=8,positions=rerotate"},
        {"pyramidkv", "granularity=query_head"},
        {"adakv", "window=8"},
        {"zigzag", "window=8,positions=rerotate"},
        {"cascade", "stride=16"},
        {"cascade", "stride=16,positions=original"},
        {"window", "positions=rerotate"},
        {"streamingllm", "positions=rerotate"},
        {"tova", "positions=cache"},
        {"sentinel_proxy", "mode=merge"},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++, n++) check_fork(variants[i][0], variants[i][1]);
    assert_int_equal(n, pol_count() + (int)(sizeof variants / sizeof variants[0]));
}

/* No policy: the full cache, no hook. */
static void test_fork_no_policy(void **state) {
    (void)state;
    make_tokens();
    check_fork(NULL, "");
}

/* One sequence fed in fixed calls (the prompt as 55 + 5, the question,
 * then single tokens) to a context, forked after call `at` into another
 * (2 threads); both go on with the same calls and must stay bit-identical,
 * call after call. */
static void fork_at(const char *name, const char *set, int at) {
    static const int32_t calls[] = {55, 5, QLEN, 1, 1, 1, 1, 1, 1};
    enum { N_CALLS = sizeof calls / sizeof calls[0] };
    int32_t seq[PROMPT + QLEN + 6];
    memcpy(seq, g_prompt, sizeof g_prompt);
    memcpy(seq + PROMPT, g_qa, sizeof g_qa);
    memcpy(seq + PROMPT + QLEN, g_qb, 6 * sizeof *g_qb);
    kv_ctx *a = ctx_new(1), *b = ctx_new(2);
    kv_policy *p = make(name, set), *q = NULL;
    pol_begin(p, PROMPT);
    pol_attach(p, a);
    int32_t done = 0;
    for (int k = 0; k < N_CALLS; done += calls[k++]) {
        float want[VOCAB], got[VOCAB];
        if (k == at) q = fork_into(a, p, b);
        assert_int_equal(kv_ctx_eval(a, seq + done, calls[k], want, 0), KV_OK);
        if (k < at) continue;
        assert_int_equal(kv_ctx_eval(b, seq + done, calls[k], got, 0), KV_OK);
        if (memcmp(want, got, sizeof want)) fail_msg("%s %s: forked before call %d, call %d: the logits differ", name, set, at, k);
        rec ra = {0}, rb = {0};
        rec_state(&ra, a, p);
        rec_state(&rb, b, q);
        if (ra.n != rb.n || memcmp(ra.b, rb.b, ra.n))
            fail_msg("%s %s: forked before call %d, call %d: the states differ", name, set, at, k);
        free(ra.b), free(rb.b);
    }
    pol_free(p), pol_free(q);
    kv_ctx_free(a), kv_ctx_free(b);
}

/* Forks anywhere: mid-prompt (55 of 60 read: cascade's open chunk [48, 60)
 * and its partial sums, snapkv's and zigzag's votes mid-window, scores
 * still held), after the prompt, after the question, mid-generation (h2o
 * sim=1's parked token, back each step). Every policy that reads its
 * prompt through kv_ctx_eval, and variants. */
static void test_fork_anywhere(void **state) {
    (void)state;
    make_tokens();
    const char *cfg[40][2];
    int n = 0;
    for (int i = 0; i < pol_count(); i++) {
        const char *name = pol_ops_name(pol_at(i));
        if (strcmp(name, "sentinel")) cfg[n][0] = name, cfg[n++][1] = ""; /* its own prompt calls */
    }
    const char *more[][2] = {{"cascade", "stride=16"}, {"snapkv", "window=8"}, {"zigzag", "window=8"},
                             {"h2o", "sim=1"}, {"keyformer", "selection=paper"},
                             {"random", "schedule=every_step"}, {"knorm", "schedule=every_step"},
                             {"window", "prefill=streaming,chunk=16,positions=rerotate"}};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) cfg[n][0] = more[i][0], cfg[n++][1] = more[i][1];
    const int points[] = {1, 2, 3, 4, 5, 7}; /* before call: the prompt's end, the question, decode steps */
    for (int k = 0; k < n; k++)
        for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) fork_at(cfg[k][0], cfg[k][1], points[i]);
}

/* ------------------------------------------------ one pass, several policies */

typedef struct member { const char *name, *set, *budget; } member;

static kv_policy *make_budget(const member *m) {
    kv_policy *p = tu_policy(g_model, m->name, m->budget, m->set, 5);
    if (pol_check_model(p, g_model)) fail_msg("%s %s: %s", m->name, m->set, kv_last_error());
    pol_set_sample_seed(p, 77);
    return p;
}

/* The members read the prompt in one pass (pol_fanout) on a context whose
 * forwards take `batch` tokens, so that the prompt spans several calls;
 * each then continues on its own context. Each must equal its own pass
 * (same batch) bit for bit: the logits after the prompt, the cache (slots,
 * keys, values, bytes and the peak while the prompt was read), the
 * policy's limits, and the question and generation after it. */
static void check_fanout(const member *ms, int n, int32_t batch) {
    kv_ctx *shared = ctx_new_batch(2, batch);
    kv_policy *pols[16];
    kv_cache *caches[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        pols[i] = make_budget(&ms[i]);
        pol_begin(pols[i], PROMPT);
        assert_int_equal(kv_cache_new(LAYERS, KV_HEADS, DIM / HEADS, KV_CACHE_F32, &caches[i]), KV_OK);
    }
    pol_fanout *f;
    if (pol_fanout_new(pols, caches, n, &f)) fail_msg("pol_fanout_new: %s", kv_last_error());
    pol_fanout_attach(f, shared);
    float got[VOCAB], want[VOCAB];
    if (kv_ctx_eval(shared, g_prompt, PROMPT, got, 0)) fail_msg("the shared pass: %s", kv_last_error());
    kv_ctx_set_hook(shared, NULL);
    assert_int_equal(kv_cache_max_len(kv_ctx_cache(shared)), PROMPT); /* nothing was evicted from it */
    for (int i = 0; i < n; i++) {
        char what[160];
        snprintf(what, sizeof what, "%s %s budget %s (of %d sharing, batch %d)", ms[i].name, ms[i].set, ms[i].budget,
                 n, batch);
        kv_cache_reset_peak(caches[i]);
        kv_cache_raise_peak(caches[i], pol_fanout_prompt_peak(f, i));
        kv_ctx *mine = ctx_new(1), *alone = ctx_new_batch(1, batch);
        if (kv_ctx_fork_cache(shared, caches[i], mine)) fail_msg("%s: kv_ctx_fork_cache: %s", what, kv_last_error());
        pol_attach(pols[i], mine);
        kv_policy *p = make_budget(&ms[i]);
        pol_begin(p, PROMPT);
        pol_attach(p, alone);
        if (kv_ctx_eval(alone, g_prompt, PROMPT, want, 0)) fail_msg("%s: alone: %s", what, kv_last_error());
        if (memcmp(got, want, sizeof got)) fail_msg("%s: the logits after the prompt differ from its own pass", what);
        rec a = {0}, b = {0};
        rec_state(&a, alone, p);
        rec_state(&b, mine, pols[i]);
        if (a.n != b.n || memcmp(a.b, b.b, a.n))
            fail_msg("%s: after the prompt the cache (or its bytes, peak, limits) differs from its own pass", what);
        free(a.b), free(b.b);
        trace ta, tb;
        cont(alone, p, g_qa, &ta);
        cont(mine, pols[i], g_qa, &tb);
        trace_check(&ta, &tb, what);
        trace_free(&ta), trace_free(&tb);
        pol_free(p);
        kv_ctx_free(mine), kv_ctx_free(alone);
        kv_cache_free(caches[i]);
        pol_free(pols[i]);
    }
    pol_fanout_free(f);
    kv_ctx_free(shared);
}

/* Groups as a sweep forms them: every method that can share at two
 * budgets (Keyformer's reduction serving both), each positions= mode, and
 * windows of several sizes in one union. Batches 16 (the prompt in 4
 * calls, SnapKV's window straddling two) and 512 (one call). */
static void test_fanout(void **state) {
    (void)state;
    make_tokens();
    const member original[] = {
        {"full", "", "none"}, {"window", "", "40%"}, {"h2o", "", "40%"}, {"h2o", "sim=1", "24"},
        {"tova", "", "24"}, {"random", "", "40%"}, {"knorm", "", "24"}, {"keyformer", "", "40%"},
        {"keyformer", "", "24"}, {"snapkv", "", "24"}, {"snapkv", "window=8", "40%"},
        {"pyramidkv", "granularity=query_head", "40%"}, {"adakv", "window=8", "24"}, {"zigzag", "", "40%"},
        {"sentinel_proxy", "mode=merge", "40%"}, {"snapkv", "window=60", "50"},
    };
    const member in_cache[] = {{"streamingllm", "", "24"}, {"tova", "positions=cache", "40%"},
                               {"keyformer", "positions=cache,selection=paper", "24"}};
    const member rerotate[] = {{"h2o", "positions=rerotate", "24"}, {"snapkv", "window=8,positions=rerotate", "40%"},
                               {"zigzag", "window=8,positions=rerotate", "24"}, {"window", "positions=rerotate", "40%"},
                               {"knorm", "schedule=every_step,positions=rerotate", "24"}};
    const int32_t batches[] = {16, 512};
    for (int b = 0; b < 2; b++) {
        check_fanout(original, (int)(sizeof original / sizeof original[0]), batches[b]);
        check_fanout(in_cache, (int)(sizeof in_cache / sizeof in_cache[0]), batches[b]);
        check_fanout(rerotate, (int)(sizeof rerotate / sizeof rerotate[0]), batches[b]);
    }
}

/* What cannot share a pass is refused, by policy and by pair. */
static void test_fanout_refusals(void **state) {
    (void)state;
    const member alone[] = {{"cascade", "", "24"}, {"h2o", "prefill=streaming,chunk=16", "24"},
                            {"sentinel", "cl=1022,cr=1023", "40%"}};
    for (size_t i = 0; i < sizeof alone / sizeof alone[0]; i++) {
        kv_policy *p = make_budget(&alone[i]);
        if (pol_shares_prompt(p)) fail_msg("%s %s: said to share a prompt pass", alone[i].name, alone[i].set);
        pol_free(p);
    }
    const member pairs[][2] = {
        {{"keyformer", "", "24"}, {"keyformer", "noise=constant", "24"}}, /* two reductions */
        {{"h2o", "", "24"}, {"h2o", "positions=rerotate", "24"}},         /* keys stored otherwise */
        {{"window", "", "24"}, {"streamingllm", "", "24"}},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        kv_policy *p[2] = {make_budget(&pairs[i][0]), make_budget(&pairs[i][1])};
        if (pol_share_compatible(p[0], p[1])) fail_msg("%s %s with %s %s: said to be compatible", pairs[i][0].name,
                                                       pairs[i][0].set, pairs[i][1].name, pairs[i][1].set);
        kv_cache *c[2];
        assert_int_equal(kv_cache_new(LAYERS, KV_HEADS, DIM / HEADS, KV_CACHE_F32, &c[0]), KV_OK);
        assert_int_equal(kv_cache_new(LAYERS, KV_HEADS, DIM / HEADS, KV_CACHE_F32, &c[1]), KV_OK);
        pol_begin(p[0], PROMPT), pol_begin(p[1], PROMPT);
        pol_fanout *f = NULL;
        assert_int_equal(pol_fanout_new(p, c, 2, &f), KV_EINVAL);
        assert_null(f);
        assert_non_null(strstr(kv_last_error(), "cannot share a prompt pass"));
        kv_cache_free(c[0]), kv_cache_free(c[1]);
        pol_free(p[0]), pol_free(p[1]);
    }
    /* members begun for other prompt lengths */
    const member m = {"h2o", "", "24"};
    kv_policy *p[2] = {make_budget(&m), make_budget(&m)};
    pol_begin(p[0], PROMPT), pol_begin(p[1], PROMPT - 1);
    kv_cache *c[2] = {NULL, NULL};
    pol_fanout *f = NULL;
    assert_int_equal(pol_fanout_new(p, c, 2, &f), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "prompt tokens"));
    pol_free(p[0]), pol_free(p[1]);
}

/* kv_cache_copy lays a head out as its source (capacity, offset), shares
 * nothing, and both then evolve alike. */
static void test_cache_copy(void **state) {
    (void)state;
    kv_cache *a, *b, *odd;
    assert_int_equal(kv_cache_new(2, 2, 4, KV_CACHE_F32, &a), KV_OK);
    assert_int_equal(kv_cache_new(2, 2, 4, KV_CACHE_F32, &b), KV_OK);
    assert_int_equal(kv_cache_new(2, 3, 4, KV_CACHE_F32, &odd), KV_OK);
    float k[4], v[4];
    for (int t = 0; t < 58; t++) { /* 48 slots (exactly a capacity) in layer 0, 10 in layer 1 */
        for (int d = 0; d < 4; d++) k[d] = (float)(t * 4 + d), v[d] = -k[d];
        assert_int_equal(kv_cache_append(a, kv_cache_head_at(a, t < 48 ? 0 : 1, 0), k, v, t), KV_OK);
    }
    int32_t keep[44];
    for (int j = 0; j < 44; j++) keep[j] = 4 + j; /* the first 4 go: the live range starts later */
    assert_int_equal(kv_cache_keep(a, kv_cache_head_at(a, 0, 0), keep, 44), KV_OK);
    assert_int_equal(kv_cache_head_at(a, 0, 0)->off, 4);
    assert_int_equal(kv_cache_append(b, kv_cache_head_at(b, 1, 1), k, v, 0), KV_OK); /* replaced */
    assert_int_equal(kv_cache_copy(b, a), KV_OK);
    assert_int_equal(kv_cache_bytes(b), kv_cache_bytes(a));
    assert_int_equal(kv_cache_peak_bytes(b), kv_cache_peak_bytes(a));
    assert_int_equal(kv_cache_head_at(b, 1, 1)->len, 0);
    for (int l = 0; l < 2; l++) {
        const kv_cache_head *x = kv_cache_head_at(a, l, 0), *y = kv_cache_head_at(b, l, 0);
        assert_int_equal(x->len, y->len);
        assert_int_equal(x->cap, y->cap);
        assert_int_equal(x->off, y->off);
        assert_true(x->kb != y->kb && x->vb != y->vb && x->pos != y->pos);
        assert_memory_equal(x->kb, y->kb, (size_t)x->len * 4 * sizeof(float));
        assert_memory_equal(x->vb, y->vb, (size_t)x->len * 4 * sizeof(float));
        assert_memory_equal(x->pos, y->pos, (size_t)x->len * sizeof(int32_t));
    }
    /* both evolve alike, and the copy survives its source */
    for (int t = 50; t < 90; t++)
        for (int i = 0; i < 2; i++) {
            kv_cache *c = i ? b : a;
            assert_int_equal(kv_cache_append(c, kv_cache_head_at(c, 0, 0), k, v, t), KV_OK);
        }
    const int32_t few[5] = {0, 1, 20, 21, 24};
    assert_int_equal(kv_cache_keep(a, kv_cache_head_at(a, 0, 0), few, 5), KV_OK);
    assert_int_equal(kv_cache_keep(b, kv_cache_head_at(b, 0, 0), few, 5), KV_OK);
    assert_int_equal(kv_cache_bytes(b), kv_cache_bytes(a));
    assert_int_equal(kv_cache_peak_bytes(b), kv_cache_peak_bytes(a));
    kv_cache_free(a);
    assert_int_equal(kv_cache_head_at(b, 0, 0)->pos[2], 24);
    assert_int_equal(((const float *)kv_cache_head_at(b, 0, 0)->kb)[2 * 4 + 1], 24 * 4 + 1);
    assert_int_equal(kv_cache_copy(odd, b), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "2 x 2 x 4"));
    assert_int_equal(kv_cache_bytes(odd), 0);
    kv_cache_free(b);
    kv_cache_free(odd);
}

/* Misuse is refused with a message; a method with state and no clone_state
 * is never copied shallowly. */
static void test_refusals(void **state) {
    (void)state;
    kv_ctx *a = ctx_new(1);
    assert_int_equal(kv_ctx_fork(a, a), KV_EINVAL);
    kv_model_params mp = kv_model_default_params();
    mp.no_tokenizer = 1;
    kv_model *other;
    assert_int_equal(kv_model_load(g_path, &mp, &other), KV_OK);
    kv_ctx *b;
    assert_int_equal(kv_ctx_new(other, NULL, &b), KV_OK);
    assert_int_equal(kv_ctx_fork(a, b), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "another model"));
    kv_ctx_free(b);
    kv_model_free(other);
    kv_ctx_free(a);

    kv_policy dummy, *p = make("h2o", ""), *q = &dummy;
    pol_ops shallow = *p->ops;
    shallow.clone_state = NULL;
    const pol_ops *real = p->ops;
    p->ops = &shallow;
    assert_int_equal(pol_clone(p, &q), KV_EINVAL);
    assert_null(q);
    assert_non_null(strstr(kv_last_error(), "policy h2o has state but no clone_state"));
    p->ops = real;
    pol_free(p);
    p = make("tova", ""); /* no state: nothing to clone */
    assert_int_equal(pol_clone(p, &q), KV_OK);
    assert_true(q->ops == p->ops && q->state == NULL && q->layer_limit != p->layer_limit);
    pol_free(q);
    pol_free(p);
}

/* The fork and fanout checks on the sliding-window model. */
static void test_fork_anywhere_swa(void **state) {
    g_model = g_swa;
    test_fork_anywhere(state);
    g_model = g_llama;
}

static void test_fanout_swa(void **state) {
    g_model = g_swa;
    test_fanout(state);
    g_model = g_llama;
}

int main(int argc, char **argv) {
    g_swa_path = argc > 1 ? argv[1] : NULL;
    const struct CMUnitTest tests[] = {

        cmocka_unit_test(test_cache_copy),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_fork_no_policy),
        cmocka_unit_test(test_fork_anywhere),
        cmocka_unit_test(test_fork_every_policy),
        cmocka_unit_test(test_fanout),
        cmocka_unit_test(test_fanout_refusals),
        cmocka_unit_test(test_fork_anywhere_swa),
        cmocka_unit_test(test_fanout_swa),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
