/* test_driver.c - the engine driver (harness/driver.c) on stories260K:
 * generation's stop conditions and streaming, the streaming NLL loop
 * against a one-pass evaluation, and fidelity's figures at their bounds
 * (the full cache against itself: no divergence, every top token agrees,
 * no attention mass lost; a small window: mass lost). */
#include "test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "kv_error.h"
#include "../harness/driver.h"
#include "../metrics/stats.h"

static const char TEXT[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
    "friends. One day, she saw a big red ball under a tree. She wanted to play with it, but it was too high. "
    "Lily asked her mom for help, and her mom got the ball down. Lily was very happy and said thank you.";

typedef struct fixture {
    kv_model *m;
    hx_engine en;
    hx_tokbuf tb;
} fixture;

static int setup(void **state) {
    char p[1024], t[1024];
    if (!tu_model_path("stories260K/stories260K.bin", p, sizeof p) ||
        !tu_model_path("stories260K/tok512.bin", t, sizeof t)) {
        *state = NULL;
        return 0;
    }
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    kv_model_params mp = kv_model_default_params();
    mp.tokenizer_path = t;
    assert_int_equal(kv_model_load(p, &mp, &f->m), KV_OK);
    assert_int_equal(hx_engine_open(&f->en, f->m, 1, KV_CACHE_F32), KV_OK);
    f->tb.tok = f->en.tok;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    if (!f) return 0;
    hx_engine_close(&f->en);
    kv_model_free(f->m);
    free(f->tb.buf);
    free(f);
    return 0;
}

static kv_policy *new_policy(const fixture *f, const char *name, int budget) {
    pol_budget b = {budget ? POL_BUDGET_TOKENS : POL_BUDGET_NONE, budget};
    kv_policy *pol = NULL;
    assert_int_equal(pol_new(name, NULL, 0, &b, 1, f->en.mi, &pol), KV_OK);
    return pol;
}

/* The prompt's ids (BOS first), copied. */
static int32_t *prompt_ids(fixture *f, const char *text, int32_t *n) {
    int64_t k = hx_tokbuf_encode(&f->tb, text, strlen(text), 1);
    assert_true(k > 1);
    int32_t *ids = malloc((size_t)k * sizeof *ids);
    assert_non_null(ids);
    memcpy(ids, f->tb.buf, (size_t)k * sizeof *ids);
    *n = (int32_t)k;
    return ids;
}

typedef struct sink { char text[4096]; size_t len; int calls; } sink;

static void collect(void *user, const char *piece, size_t len) {
    sink *s = user;
    assert_true(s->len + len < sizeof s->text);
    memcpy(s->text + s->len, piece, len);
    s->len += len;
    s->calls++;
}

static void test_generate_stops(void **state) {
    fixture *f = *state;
    if (!f) skip();
    int32_t n;
    int32_t *ids = prompt_ids(f, "Once upon a time", &n);
    kv_policy *pol = new_policy(f, "full", 0);
    /* free generation: every piece streamed, in order, is the text */
    sink sk = {0};
    hx_gen_params gp = {.max_new = 40, .stop_id = -1, .on_piece = collect, .user = &sk};
    hx_gen_result a;
    assert_int_equal(hx_drv_generate(&f->en, pol, ids, n, &gp, &a), KV_OK);
    assert_true(a.n > 5);
    assert_int_equal(sk.calls, a.n);
    assert_int_equal(sk.len, a.text_len);
    assert_memory_equal(sk.text, a.text, a.text_len);
    if (a.n == 40) assert_string_equal(a.stop, "max_new_tokens");
    /* a stop token after the first step: kept, and generation ends there */
    int k = 1;
    while (k < a.n) {
        int seen = 0;
        for (int j = 0; j < k; j++) seen |= a.tokens[j] == a.tokens[k];
        if (!seen) break;
        k++;
    }
    assert_true(k < a.n);
    hx_gen_params gs = {.max_new = 40, .stop_id = a.tokens[k]};
    hx_gen_result b;
    assert_int_equal(hx_drv_generate(&f->en, pol, ids, n, &gs, &b), KV_OK);
    assert_int_equal(b.n, k + 1);
    assert_memory_equal(b.tokens, a.tokens, (size_t)b.n * sizeof *b.tokens);
    assert_string_equal(b.stop, "stop token");
    /* nothing asked, nothing generated */
    hx_gen_params g0 = {.max_new = 0, .stop_id = -1};
    hx_gen_result c;
    assert_int_equal(hx_drv_generate(&f->en, pol, ids, n, &g0, &c), KV_OK);
    assert_int_equal(c.n, 0);
    assert_string_equal(c.stop, "max_new_tokens");
    hx_gen_free(&a);
    hx_gen_free(&b);
    hx_gen_free(&c);
    pol_free(pol);
    free(ids);
}

typedef struct nll_log { int32_t next; double sum; int bad; } nll_log;

static void log_nll(void *user, int32_t pos, double nll) {
    nll_log *l = user;
    if (pos != l->next) l->bad = 1;
    l->next = pos + 1;
    l->sum += nll;
}

static void test_stream_nll(void **state) {
    fixture *f = *state;
    if (!f) skip();
    int32_t n;
    int32_t *ids = prompt_ids(f, TEXT, &n);
    kv_policy *pol = new_policy(f, "full", 0);
    /* the reference: one pass, every position's logits */
    const int32_t V = f->en.mi->vocab_size;
    float *rows = malloc((size_t)n * V * sizeof *rows);
    assert_non_null(rows);
    kv_ctx_reset(f->en.ctx);
    assert_int_equal(kv_ctx_eval(f->en.ctx, ids, n, rows, 1), KV_OK);
    double want = 0;
    for (int32_t t = 0; t + 1 < n; t++) want += met_nll(rows + (size_t)t * V, V, ids[t + 1]);
    want /= n - 1;
    for (int chunk = 1; chunk <= 16; chunk += 15) {
        nll_log lg = {.next = 1};
        hx_nll_params np = {.chunk = chunk, .every = 1, .on_nll = log_nll, .user = &lg};
        double mean = 0, secs = 0;
        hx_gen_result g = {0};
        assert_int_equal(hx_drv_stream_nll(&f->en, pol, ids, n, &np, &mean, &secs, &g), KV_OK);
        assert_false(lg.bad);
        assert_int_equal(lg.next, n); /* every token but the first, once, in order */
        assert_true(fabs(lg.sum / (n - 1) - mean) < 1e-12);
        assert_true(fabs(mean - want) < 1e-4);
        assert_true(g.bytes_peak > 0);
        hx_gen_free(&g);
    }
    free(rows);
    pol_free(pol);
    free(ids);
}

/* ref: the full cache's greedy run with its logits kept. */
static void fidelity_of(fixture *f, const char *policy, int budget, const int32_t *ids, int32_t n,
                        const hx_gen_result *ref, hx_fid_result *out) {
    kv_policy *pol = new_policy(f, policy, budget);
    met_kld *kld = met_kld_new();
    assert_non_null(kld);
    assert_int_equal(hx_drv_fidelity(&f->en, pol, ids, n, 0, NULL, NULL, NULL, ref, kld, out), KV_OK);
    met_kld_free(kld);
    pol_free(pol);
}

static void test_fidelity_bounds(void **state) {
    fixture *f = *state;
    if (!f) skip();
    int32_t n;
    int32_t *ids = prompt_ids(f, TEXT, &n);
    kv_policy *full = new_policy(f, "full", 0);
    hx_gen_params gp = {.max_new = 24, .stop_id = -1, .keep_logits = 1};
    hx_gen_result ref;
    assert_int_equal(hx_drv_generate(&f->en, full, ids, n, &gp, &ref), KV_OK);
    assert_true(ref.n > 1);
    pol_free(full);
    hx_fid_result same, small;
    fidelity_of(f, "full", 0, ids, n, &ref, &same);
    assert_true(fabs(same.kl_mean) < 1e-6);
    assert_true(same.top1 == 1.0);
    assert_true(same.mass_lost == 0.0);
    fidelity_of(f, "window", 16, ids, n, &ref, &small);
    assert_true(small.mass_lost > 0.0 && small.mass_lost <= 1.0);
    assert_true(small.kl_mean > 0.0);
    assert_true(small.top1 >= 0.0 && small.top1 <= 1.0);
    hx_gen_free(&ref);
    free(ids);
}

/* The mass lost by a window of W, computed here from a full-cache pass of
 * its own: each layer call's newest-query rows, summed over the positions
 * below len - W (the window holds the last W after its eviction). */
typedef struct lost_ref { int W; double sum; long count; } lost_ref;

static int lost_ref_on_layer(void *user, kv_cache *c, const kv_attn_view *v) {
    lost_ref *lr = user;
    const int group = v->n_heads / v->n_kv_heads;
    for (int h = 0; h < v->n_heads; h++) {
        const int32_t len = kv_cache_head_at(c, v->layer, h / group)->len;
        double s = 0;
        for (int32_t j = 0; j < len - lr->W; j++) s += v->last_row[(size_t)h * v->stride + (size_t)j];
        lr->sum += s;
        lr->count++;
    }
    return KV_OK;
}

static double window_lost_mass(fixture *f, const int32_t *ids, int32_t n, const hx_gen_result *ref, int W) {
    kv_ctx_params cp = kv_ctx_default_params();
    kv_ctx *ctx = NULL;
    assert_int_equal(kv_ctx_new(f->m, &cp, &ctx), KV_OK);
    lost_ref lr = {.W = W};
    kv_ctx_hook hook = {.user = &lr, .needs = KV_NEED_LAST_ROW, .positions = KV_POS_ORIGINAL,
                        .on_layer = lost_ref_on_layer};
    kv_ctx_set_hook(ctx, &hook);
    assert_int_equal(kv_ctx_eval(ctx, ids, n, NULL, 0), KV_OK);
    for (int i = 0; i + 1 < ref->n; i++) assert_int_equal(kv_ctx_eval(ctx, &ref->tokens[i], 1, NULL, 0), KV_OK);
    kv_ctx_free(ctx);
    return lr.sum / (double)lr.count;
}

/* Fidelity's attention mass lost against the figure computed above: with
 * the full cache run in lockstep (no sharing), and replayed from the rows
 * the reference's own run recorded (hx_drv_ref_record_begin). */
static void test_fidelity_lost_mass(void **state) {
    fixture *f = *state;
    if (!f) skip();
    int32_t n;
    int32_t *ids = prompt_ids(f, TEXT, &n);
    const int W = 16;
    for (int share = 0; share <= 1; share++) {
        f->en.share = share;
        kv_policy *full = new_policy(f, "full", 0);
        if (share) assert_int_equal(hx_drv_ref_record_begin(&f->en, full, ids, n, 0), KV_OK);
        hx_gen_params gp = {.max_new = 24, .stop_id = -1, .keep_logits = 1};
        hx_gen_result ref;
        assert_int_equal(hx_drv_generate(&f->en, full, ids, n, &gp, &ref), KV_OK);
        if (share) hx_drv_ref_record_end(&f->en, full, &ref);
        pol_free(full);
        assert_true(ref.n > 8);
        const double want = window_lost_mass(f, ids, n, &ref, W);
        assert_true(want > 1e-3);
        hx_fid_result got;
        fidelity_of(f, "window", W, ids, n, &ref, &got);
        if (fabs(got.mass_lost - want) > 1e-12 * want)
            fail_msg("share=%d: mass lost %.17g, the full cache's own pass gives %.17g", share, got.mass_lost, want);
        hx_gen_free(&ref);
    }
    f->en.share = 0;
    free(ids);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_stops),
        cmocka_unit_test(test_stream_nll),
        cmocka_unit_test(test_fidelity_bounds),
        cmocka_unit_test(test_fidelity_lost_mass),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
