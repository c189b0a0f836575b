/* driver.c - the engine driver (driver.h): generation, streaming NLL and
 * fidelity's lockstep, shared by `kvbench run`, `generate` and
 * `perplexity`. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "../metrics/stats.h"
#include "../base/clock.h"
#include "driver.h"
#include "../base/buf.h"
#include "../base/hash.h"
#include "../engine/kernels.h"

/* ---------------------------------------------------------- tokenizing */

/* Encodes text into tc->buf (grown as needed); returns the count or < 0. */
int64_t hx_tokbuf_encode(hx_tokbuf *tc, const char *text, size_t len, int bos) {
    size_t need = len + 16, n = 0;
    if (need > tc->cap) {
        int32_t *b = realloc(tc->buf, need * sizeof *b);
        if (!b) return kv_errorf(KV_ENOMEM, "out of memory");
        tc->buf = b;
        tc->cap = need;
    }
    int rc = kv_tokenizer_encode(tc->tok, text, len, bos, tc->buf, tc->cap, &n);
    if (rc) return rc;
    if (n > tc->cap) { /* cannot happen with len + 16, but stay safe */
        int32_t *b = realloc(tc->buf, n * sizeof *b);
        if (!b) return kv_errorf(KV_ENOMEM, "out of memory");
        tc->buf = b;
        tc->cap = n;
        if ((rc = kv_tokenizer_encode(tc->tok, text, len, bos, tc->buf, tc->cap, &n))) return rc;
    }
    return (int64_t)n;
}

int64_t hx_tokbuf_count(void *tb, const char *text, size_t len) { return hx_tokbuf_encode(tb, text, len, 0); }

/* ---------------------------------------------------------- generation */

void hx_gen_free(hx_gen_result *g) {
    free(g->tokens);
    free(g->text);
    free(g->logits);
    free(g->base);
    free(g->base_p);
    free(g->step_ms);
    free(g->trace_pos);
    free(g->trace_bytes);
    memset(g, 0, sizeof *g);
}

static int text_add(hx_gen_result *g, const char *p, size_t n) {
    int rc = KV_RESERVE(g->text, g->text_cap, g->text_len + n + 1);
    if (rc) return rc;
    memcpy(g->text + g->text_len, p, n);
    g->text_len += n;
    g->text[g->text_len] = 0;
    return KV_OK;
}

/* *out, made when first needed, a context like every other of en's: its
 * thread count and cache storage (so fidelity measures what the policy
 * loses with that storage). */
static int ctx_make(hx_engine *en, kv_ctx **out) {
    if (*out) return KV_OK;
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = en->threads;
    cp.kv_type = en->kv_type;
    return kv_ctx_new(en->model, &cp, out);
}

/* ctx reset, and checked empty: nothing of a sample before reaches the next. */
static int reset_checked(kv_ctx *ctx) {
    kv_ctx_reset(ctx);
    kv_cache *c = kv_ctx_cache(ctx);
    if (kv_cache_total_slots(c) != 0 || kv_cache_bytes(c) != 0 || kv_ctx_pos(ctx) != 0)
        return kv_errorf(KV_EINVAL, "internal: the cache is not empty at the start of a sample (%lld slots, %zu bytes)",
                         (long long)kv_cache_total_slots(c), kv_cache_bytes(c));
    return KV_OK;
}

/* Starts a sample: an empty cache (checked) and the policy's budget fixed
 * for this prompt. */
static int begin_sample(hx_engine *en, kv_policy *pol, int32_t n_prompt) {
    int rc = reset_checked(en->ctx);
    if (rc) return rc;
    pol_begin(pol, n_prompt);
    pol_attach(pol, en->ctx);
    return KV_OK;
}

/* The most slots one head may hold now: the budget, or for a one-shot
 * policy (SnapKV, PyramidKV: the prompt is cut once, generated tokens are
 * all kept) its largest layer limit plus the tokens since the prompt. */
static int32_t allowed_slots(const kv_policy *pol, int32_t pos) {
    if (pol_limit(pol) == INT32_MAX) return INT32_MAX;
    if (!pol_is_one_shot(pol)) return pol_limit(pol);
    int32_t most = 0;
    for (int l = 0; l < pol_n_layers(pol); l++)
        if (pol_layer_limit(pol, l) > most) most = pol_layer_limit(pol, l);
    const int32_t n_prompt = pol_n_prompt(pol);
    return most + (pos > n_prompt ? pos - n_prompt : 0);
}

/* After every evaluation: the largest head against what the policy may hold
 * (the budget check) and, every `every` positions, the bytes held (the
 * memory trace). */
static void track(hx_engine *en, const kv_policy *pol, hx_gen_result *g, int every) {
    kv_cache *c = kv_ctx_cache(en->ctx);
    if (kv_cache_bytes(c) > g->bytes_steady_peak) g->bytes_steady_peak = kv_cache_bytes(c);
    int32_t m = kv_cache_max_len(c);
    if (m > g->slots_max) g->slots_max = m;
    if (m > allowed_slots(pol, kv_ctx_pos(en->ctx))) g->over_budget = 1;
    int32_t pos = kv_ctx_pos(en->ctx);
    if (every > 1 && g->n_trace > 0 && g->trace_pos[g->n_trace - 1] / every == pos / every) return;
    if (g->n_trace == g->trace_cap) {
        int cap = g->trace_cap ? g->trace_cap * 2 : 256;
        int32_t *p = realloc(g->trace_pos, (size_t)cap * sizeof *p);
        if (p) g->trace_pos = p;
        double *b = realloc(g->trace_bytes, (size_t)cap * sizeof *b);
        if (b) g->trace_bytes = b;
        if (!p || !b) return; /* the trace is a convenience: stop recording */
        g->trace_cap = cap;
    }
    g->trace_pos[g->n_trace] = pos;
    g->trace_bytes[g->n_trace++] = (double)kv_cache_bytes(c);
}

/* Whether generation ends at token `id`: one of the model's end tokens, or
 * a BOS (a new document). */
static int is_end(const hx_engine *en, int32_t id) {
    if (id == kv_tokenizer_bos(en->tok)) return 1;
    for (int i = 0; i < en->n_end; i++)
        if (en->end_ids[i] == id) return 1;
    return 0;
}

void hx_snap_free(hx_ctx_snap *s) {
    kv_ctx_free(s->ctx);
    pol_free(s->pol);
    free(s->logits);
    memset(s, 0, sizeof *s);
}

/* Keeps the sequence and the policy as they are now. */
static int snap_take(hx_engine *en, kv_policy *pol, uint64_t key, hx_ctx_snap *s) {
    kv_policy *copy;
    int rc = pol_clone(pol, &copy);
    if (rc) return rc;
    if ((rc = ctx_make(en, &s->ctx))) {
        pol_free(copy);
        return rc;
    }
    if ((rc = kv_ctx_fork(en->ctx, s->ctx))) {
        pol_free(copy);
        return rc;
    }
    pol_free(s->pol);
    s->pol = copy;
    s->key = key;
    return KV_OK;
}

/* The run's policy instance takes the kept state (its address stays: the
 * context's hook points at it), the context the kept sequence. */
static int snap_resume(hx_engine *en, kv_policy *pol, const hx_ctx_snap *s) {
    kv_policy *copy;
    int rc = pol_clone(s->pol, &copy);
    if (rc) return rc;
    pol_swap(pol, copy);
    pol_set_draw_seed(pol, pol_draw_seed(copy)); /* draws from here on are this sample's own */
    pol_free(copy);
    if ((rc = kv_ctx_fork(s->ctx, en->ctx))) return rc;
    pol_attach(pol, en->ctx);
    return KV_OK;
}

/* Keeps the sequence, the policy and the next-token logits right after a
 * prompt (fidelity reads the same prompt with the same policy again: it
 * resumes from here; its timing is the generation's). */
static int snap_prompt(hx_engine *en, kv_policy *pol, hx_ctx_snap *s) {
    size_t bytes = (size_t)en->mi->vocab_size * sizeof(float);
    if (!s->logits && !(s->logits = malloc(bytes))) return kv_errorf(KV_ENOMEM, "out of memory");
    memcpy(s->logits, en->logits, bytes);
    return snap_take(en, pol, 1, s);
}

/* The context's tokens as a key (never 0). */
static uint64_t context_key(const int32_t *ids, int32_t n) {
    uint64_t h = kv_fnv1a64(KV_FNV1A64_INIT, &n, sizeof n);
    h = kv_fnv1a64(h, ids, (size_t)n * sizeof *ids);
    return h ? h : 1;
}

/* Which member of pass pol is, for this prompt, while its cache is not
 * taken; -1 if none. */
static int pass_member(const hx_prompt_pass *pp, const kv_policy *pol, const int32_t *prompt, int32_t n_ctx) {
    if (pp->n_ctx != n_ctx || pp->key != context_key(prompt, n_ctx)) return -1;
    for (int i = 0; i < pp->n; i++)
        if (pp->pol[i] == pol && pp->cache[i]) return i;
    return -1;
}

/* The sequence as member i's own prompt pass would have left it; its cache
 * is freed once copied. The policy is in its state after the prompt. */
static int pass_resume(hx_engine *en, kv_policy *pol, hx_prompt_pass *pp, int i) {
    int rc = kv_ctx_fork_cache(en->pass_ctx, pp->cache[i], en->ctx);
    if (rc) return rc;
    kv_cache_free(pp->cache[i]);
    pp->cache[i] = NULL;
    memcpy(en->logits, pp->logits, (size_t)en->mi->vocab_size * sizeof *en->logits);
    pol_attach(pol, en->ctx);
    return KV_OK;
}

void hx_prompt_pass_free(hx_prompt_pass *pp) {
    for (int i = 0; pp->cache && i < pp->n; i++) kv_cache_free(pp->cache[i]);
    free(pp->cache);
    free(pp->pol);
    free(pp->logits);
    memset(pp, 0, sizeof *pp);
}

/* The pass's context, empty (checked, as a sample's). */
static int pass_ctx_ready(hx_engine *en) {
    int rc = ctx_make(en, &en->pass_ctx);
    return rc ? rc : reset_checked(en->pass_ctx);
}

int hx_drv_prompt_pass(hx_engine *en, kv_policy *const *pols, int n, const int32_t *prompt, int32_t n_ctx,
                       hx_prompt_pass *out) {
    memset(out, 0, sizeof *out);
    int rc = pass_ctx_ready(en);
    if (rc) return rc;
    const kv_cache *shape = kv_ctx_cache(en->pass_ctx);
    out->pol = malloc((size_t)n * sizeof *out->pol);
    out->cache = calloc((size_t)n, sizeof *out->cache);
    out->logits = malloc((size_t)en->mi->vocab_size * sizeof *out->logits);
    if (!out->pol || !out->cache || !out->logits) rc = kv_errorf(KV_ENOMEM, "out of memory");
    out->n = n;
    for (int i = 0; i < n && !rc; i++) {
        out->pol[i] = pols[i];
        pol_begin(pols[i], n_ctx);
        rc = kv_cache_new(kv_cache_n_layers(shape), kv_cache_n_kv_heads(shape), kv_cache_head_dim(shape),
                          kv_cache_get_type(shape), &out->cache[i]);
    }
    pol_fanout *f = NULL;
    if (!rc) rc = pol_fanout_new(pols, out->cache, n, &f);
    if (!rc) {
        pol_fanout_attach(f, en->pass_ctx);
        double t0 = kv_now_s();
        rc = kv_ctx_eval(en->pass_ctx, prompt, n_ctx, out->logits, 0);
        out->seconds = kv_now_s() - t0;
        kv_ctx_set_hook(en->pass_ctx, NULL);
    }
    for (int i = 0; i < n && !rc; i++) { /* each member's peak, as its own pass would have held it */
        kv_cache_reset_peak(out->cache[i]);
        kv_cache_raise_peak(out->cache[i], pol_fanout_prompt_peak(f, i));
    }
    pol_fanout_free(f);
    out->key = context_key(prompt, n_ctx);
    out->n_ctx = n_ctx;
    if (rc) hx_prompt_pass_free(out);
    return rc;
}

int32_t hx_drv_pass_tokens(int32_t n_prompt, int32_t q_split) {
    return q_split > 0 && q_split < n_prompt ? q_split : n_prompt;
}

int hx_drv_snap_holds(const hx_ctx_snap *snap, const int32_t *prompt, int32_t n_prompt, int32_t q_split) {
    const int32_t n_ctx = hx_drv_pass_tokens(n_prompt, q_split);
    return snap && snap->key && n_ctx < n_prompt && snap->key == context_key(prompt, n_ctx);
}

/* A sample's prompt through the policy, leaving the next-token logits in
 * en->logits. q_split 0: the prompt is one prompt. q_split > 0 (the
 * question asked after compression): its first q_split tokens are the
 * prompt the policy compresses, and the rest, the question, is read as one
 * more forward with the compressed cache. g (may be NULL) gets the
 * prompt-phase peak and the first point of the trace.
 * A member of the sample's shared pass resumes from it. */
static int read_prompt(hx_engine *en, kv_policy *pol, const int32_t *prompt, int32_t n_prompt, int32_t q_split,
                       hx_gen_result *g, hx_ctx_snap *snap, hx_prompt_pass *pass) {
    int32_t n_ctx = hx_drv_pass_tokens(n_prompt, q_split);
    const uint64_t key = snap && n_ctx < n_prompt ? context_key(prompt, n_ctx) : 0;
    int rc;
    const int member = pass ? pass_member(pass, pol, prompt, n_ctx) : -1;
    if (key && snap->key == key) { /* the same context as a sample before: its compressed cache */
        rc = snap_resume(en, pol, snap);
        if (!rc && g) g->context_reused = 1;
    } else if (member >= 0) { /* the sample's shared pass */
        rc = pass_resume(en, pol, pass, member);
        if (!rc && g) g->prompt_shared = pass->n;
        if (!rc && key) rc = snap_take(en, pol, key, snap);
    } else {
        rc = begin_sample(en, pol, n_ctx);
        if (!rc) rc = pol_eval_prompt(pol, en->ctx, prompt, n_ctx, en->logits);
        if (!rc && key) rc = snap_take(en, pol, key, snap);
    }
    if (rc) return rc;
    if (g) {
        g->bytes_prompt_peak = kv_cache_peak_bytes(kv_ctx_cache(en->ctx));
        track(en, pol, g, 1);
    }
    if (n_ctx < n_prompt) {
        rc = kv_ctx_eval(en->ctx, prompt + n_ctx, n_prompt - n_ctx, en->logits, 0);
        if (!rc && g) track(en, pol, g, 1);
    }
    return rc;
}

/* LongBench's samsum (pred.py): stop_id is one more end token, kept in the
 * output as Hugging Face's generate keeps the token it stops at, and
 * min_length = prompt + 1 keeps every end token and stop_id from being the
 * first token. The first step's argmax skips them; the logits stay the
 * model's (the fidelity figures compare models, not logits processors). */
static int32_t first_token(const hx_engine *en, int32_t stop_id) {
    const int32_t V = en->mi->vocab_size, bos = kv_tokenizer_bos(en->tok);
    int32_t best = -1;
    for (int32_t v = 0; v < V; v++) {
        int barred = v == stop_id || v == bos;
        for (int i = 0; i < en->n_end && !barred; i++) barred = en->end_ids[i] == v;
        if (!barred && (best < 0 || en->logits[v] > en->logits[best])) best = v;
    }
    return best < 0 ? kv_argmax(en->logits, V) : best;
}

/* A logit row's log-normalizer and first top index (and, p given, its
 * probabilities), as met_kld_base_of defines them, with the engine's
 * vectorised double exponential: fidelity computes one per step of every
 * policy, a vocabulary of exponentials each. */
static void norm_of(const float *x, int32_t V, double *p, met_kld_base *out) {
    out->top = kv_argmax(x, V);
    const double mx = x[out->top];
    out->lse = mx + log(kv_sum_exp_f64(x, V, mx));
    out->p = p;
    if (p)
        for (int32_t i = 0; i < V; i++) p[i] = kv_exp_f64_one((double)x[i] - out->lse);
}

/* The reference's probabilities are kept up to this size (a 128K
 * vocabulary and 64 new tokens: 68 MB); past it each use recomputes them. */
#define HX_BASE_P_MAX ((size_t)96 << 20)

/* The buffers one generation fills. */
static int gen_alloc(hx_gen_result *g, int max_new, int32_t V, int keep_logits) {
    g->tokens = malloc(((size_t)max_new + 1) * sizeof *g->tokens);
    g->step_ms = malloc(((size_t)max_new + 1) * sizeof *g->step_ms);
    if (keep_logits) {
        g->logits = malloc(((size_t)max_new + 1) * (size_t)V * sizeof *g->logits);
        g->base = malloc(((size_t)max_new + 1) * sizeof *g->base);
        /* each policy's fidelity step then skips vocab exponentials */
        const size_t pb = ((size_t)max_new + 1) * (size_t)V * sizeof *g->base_p;
        if (pb <= HX_BASE_P_MAX) g->base_p = malloc(pb);
    }
    if (!g->tokens || !g->step_ms || (keep_logits && (!g->logits || !g->base)) || text_add(g, "", 0))
        return kv_errorf(KV_ENOMEM, "out of memory");
    return KV_OK;
}

/* The next token from en->logits: the sampler's draw, else the argmax
 * (LongBench's first step skips the end tokens and stop_id). */
static int32_t next_token(const hx_engine *en, const hx_gen_params *p, int i) {
    if (p->sampler) return kv_sampler_sample(p->sampler, en->logits);
    return i == 0 && p->stop_id >= 0 ? first_token(en, p->stop_id) : kv_argmax(en->logits, en->mi->vocab_size);
}

/* Step i's token `next` after `prev`: 1 when generation ends before it
 * (g->stop says why), else kept (and passed on), then 2 when it ends
 * after it (stop_id), 0 to go on; < 0 on error. */
static int gen_take(hx_engine *en, const hx_gen_params *p, int32_t prev, int32_t next, hx_gen_result *g) {
    const int32_t V = en->mi->vocab_size;
    if (is_end(en, next)) { /* the model's end of turn (eos, eot, <|im_end|>, ...) or a BOS */
        size_t tl;
        const char *tt = kv_tokenizer_token_text(en->tok, next, &tl);
        snprintf(g->stop, sizeof g->stop, "end %.*s", (int)(tl < 40 ? tl : 40), tt ? tt : "");
        return 1;
    }
    size_t len;
    const char *piece = kv_tokenizer_piece(en->tok, prev, next, &len);
    if (p->stop_newline && memchr(piece, '\n', len) && g->n > 0) {
        snprintf(g->stop, sizeof g->stop, "newline");
        return 1;
    }
    if (p->keep_logits) {
        memcpy(g->logits + (size_t)g->n * V, en->logits, (size_t)V * sizeof(float));
        norm_of(en->logits, V, g->base_p ? g->base_p + (size_t)g->n * V : NULL, &g->base[g->n]);
    }
    g->tokens[g->n++] = next;
    int rc = text_add(g, piece, len);
    if (rc) return rc;
    if (p->on_piece) p->on_piece(p->user, piece, len);
    if (next == p->stop_id) {
        snprintf(g->stop, sizeof g->stop, "stop token");
        return 2;
    }
    return 0;
}

/* Fidelity during a generation (defined with hx_drv_fidelity below). */
static int fid_online_token(hx_engine *en, kv_policy *pol, hx_fid_online *fo, hx_ctx_snap *after, int i, int32_t next);
static int fid_online_fed(hx_engine *en, hx_fid_online *fo, int i);
static double fid_online_seconds(const hx_fid_online *fo);
/* The reference's recording (hx_drv_ref_record_begin): its prompt read, a step evaluated. */
static void rec_prompt_done(hx_engine *en, const kv_policy *pol);
static void rec_step_done(hx_engine *en, const kv_policy *pol);

/* Generation of up to max_new tokens after the prompt (greedy unless a
 * sampler is given), stopping at an end token or BOS (and at a newline
 * when asked, or after token stop_id when it is >= 0: LongBench's
 * samsum). keep_logits stores every step's distribution (the full-cache
 * reference for fidelity). */
int hx_drv_generate(hx_engine *en, kv_policy *pol, const int32_t *prompt, int32_t n_prompt, const hx_gen_params *p,
                    hx_gen_result *g) {
    memset(g, 0, sizeof *g);
    int rc = gen_alloc(g, p->max_new, en->mi->vocab_size, p->keep_logits);
    if (rc) return rc;
    hx_fid_online *fo = p->after ? p->fid : NULL;
    double t0 = kv_now_s();
    rc = read_prompt(en, pol, prompt, n_prompt, p->q_split, g, p->snap, p->pass);
    if (!rc && p->after && !fo) rc = snap_prompt(en, pol, p->after);
    if (rc) return rc;
    rec_prompt_done(en, pol);
    int32_t prev = prompt[n_prompt - 1];
    double t_step = kv_now_s();
    /* a shared pass read the prompt for this policy too: its time counts */
    if (g->prompt_shared) t0 -= p->pass->seconds;
    g->prefill_ms = (t_step - t0) * 1e3;
    snprintf(g->stop, sizeof g->stop, "max_new_tokens");
    for (int i = 0; i < p->max_new; i++) {
        int32_t next = next_token(en, p, i);
        if (i == 0) g->ttft_ms = (kv_now_s() - t0) * 1e3;
        if (fo && (rc = fid_online_token(en, pol, fo, p->after, i, next))) return rc;
        if ((rc = gen_take(en, p, prev, next, g))) break;
        prev = next;
        if (i + 1 < p->max_new) {
            double t = kv_now_s();
            if ((rc = kv_ctx_eval(en->ctx, &next, 1, en->logits, 0))) return rc;
            g->step_ms[g->n - 1] = (kv_now_s() - t) * 1e3;
            rec_step_done(en, pol);
            track(en, pol, g, 1);
            if (fo && (rc = fid_online_fed(en, fo, i))) return rc;
        }
    }
    if (rc < 0) return rc;
    /* fidelity's share of the loop is not the generation's time */
    g->decode_ms = (kv_now_s() - t_step - (fo ? fid_online_seconds(fo) : 0)) * 1e3;
    kv_cache *c = kv_ctx_cache(en->ctx);
    g->bytes_peak = kv_cache_peak_bytes(c);
    g->bytes_final = kv_cache_bytes(c);
    return KV_OK;
}

/* The attention mass the full cache puts on tokens a policy no longer
 * holds: the hook of a full-cache context evaluated in lockstep with the
 * policy's, after the policy's own evaluation (and eviction) of the same
 * tokens. Per (layer, query head) and evaluation: the sum of the newest
 * query's softmax row over the slots whose position the policy's cache
 * lacks in that layer and KV head. */
typedef struct lost_state {
    kv_cache *pol;     /* the policy's cache */
    float *absent;     /* [cap] 1 where the full cache's slot holds a position the policy lacks, else 0 */
    int32_t cap;
    double sum;
    long count;
    int rc;
} lost_state;

/* The lost mass of KV head g's query heads in one layer call: rows
 * [group][stride] of the full cache's newest query over its slots
 * 0..rlen-1, slot j holding position j (the full cache never evicts);
 * the policy's positions below `need` count as held. Each row's sum is
 * kv_masked_sum's (fixed lanes: the same bits on every ISA), a stream
 * through the row that the prefetcher keeps up with (prefix sums read at
 * the runs' ends were slower: one cache miss per run). */
static int lost_add(lost_state *ls, int layer, int g, int group, const float *rows, size_t stride, int32_t rlen,
                    int32_t need) {
    kv_cache_head *ph = kv_cache_head_at(ls->pol, layer, g);
    if (rlen > ls->cap) {
        float *a = realloc(ls->absent, (size_t)rlen * sizeof *a);
        if (!a) return ls->rc = kv_errorf(KV_ENOMEM, "out of memory");
        ls->absent = a;
        ls->cap = rlen;
    }
    float *ab = ls->absent;
    for (int32_t j = 0; j < rlen; j++) ab[j] = 1.0f;
    for (int32_t j = 0; j < ph->len; j++) {
        const int32_t p = ph->pos[j];
        if (p >= 0 && p < need && p < rlen) ab[p] = 0.0f;
    }
    for (int q = 0; q < group; q++) ls->sum += kv_masked_sum(rows + (size_t)q * stride, ab, rlen);
    ls->count += group;
    return KV_OK;
}

static int lost_on_layer(void *user, kv_cache *ref, const kv_attn_view *v) {
    lost_state *ls = user;
    int group = v->n_heads / v->n_kv_heads;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *rh = kv_cache_head_at(ref, v->layer, g);
        /* positions only grow as a full cache appends: the last at len - 1 means slot j holds j */
        if (rh->len && rh->pos[rh->len - 1] != rh->len - 1)
            return ls->rc = kv_errorf(KV_EINVAL, "internal: the full cache of fidelity holds position %d in slot %d",
                                      rh->pos[rh->len - 1], rh->len - 1);
        int rc = lost_add(ls, v->layer, g, group, v->last_row + (size_t)(g * group) * v->stride, (size_t)v->stride,
                          rh->len, v->pos0 + v->n_new + 1);
        if (rc) return rc;
    }
    return KV_OK;
}

/* The full cache right after a sample's prompt, shared by every policy's
 * fidelity run of that sample: the forked sequence, and the newest query
 * rows the prompt's layer calls produced (what lost_on_layer reads then),
 * replayed against each policy's cache. The full cache holds positions
 * 0..len-1 in order, so a call's rows need only their length. The full
 * cache's teacher-forced steps over the reference continuation are the
 * same for every policy too: their calls follow the prompt's, step by
 * step, when they fit in HX_REF_ROWS_MAX floats, and then no policy after
 * the first runs the full cache at all. */
typedef struct ref_call { int layer; int32_t len, need; size_t off; } ref_call;
#define HX_REF_ROWS_MAX ((size_t)64 << 20) /* 256 MB of rows at most */
typedef struct hx_ref_snap {
    kv_ctx *ctx;
    uint64_t key;       /* the prompt's tokens (0: nothing kept) */
    ref_call *calls;    /* the prompt's, then the steps' */
    int n_calls, cap_calls;
    float *rows;        /* per call [n_heads][len] */
    size_t n_rows, cap_rows;
    int ok;             /* the prompt's recording is complete (else: recompute) */
    int n_prompt_calls; /* calls [0, n_prompt_calls) are the prompt's */
    size_t n_prompt_rows;
    int *step_end;      /* step i's calls end at step_end[i] */
    int n_steps, cap_steps;
    int in_steps;       /* recording the steps (their failures clear steps_ok) */
    int steps_ok;
    uint64_t steps_key; /* the prompt and continuation recorded (0: none) */
    /* recorded from the reference's own run (hx_drv_ref_record_begin) */
    uint64_t ctx_key;         /* the prompt whose full cache ctx holds (0: none) */
    const kv_policy *rec_pol; /* the reference's policy while recording, else NULL */
    uint64_t rec_key;         /* its prompt's key */
} hx_ref_snap;

static void ref_snap_free(hx_ref_snap *r) {
    if (!r) return;
    kv_ctx_free(r->ctx);
    free(r->calls);
    free(r->rows);
    free(r->step_end);
    free(r);
}

typedef struct rec_state { lost_state *ls; hx_ref_snap *r; } rec_state;

/* Keeps a full-cache layer call's newest-query rows: a failure (a cache
 * not in position order, out of memory, the steps over HX_REF_ROWS_MAX)
 * marks the recording incomplete, never the evaluation. */
static void ref_record(hx_ref_snap *r, kv_cache *ref, const kv_attn_view *v) {
    int *ok = r->in_steps ? &r->steps_ok : &r->ok;
    int32_t len = kv_cache_head_at(ref, v->layer, 0)->len;
    /* a full cache only appends, in position order: its last slot holding
     * len - 1 means slot j holds position j (as lost_on_layer checks) */
    for (int g = 0; g < v->n_kv_heads; g++) {
        const kv_cache_head *rh = kv_cache_head_at(ref, v->layer, g);
        if (rh->len != len || (len && rh->pos[len - 1] != len - 1)) *ok = 0;
    }
    size_t need = (size_t)v->n_heads * (size_t)len;
    if (r->in_steps && r->n_rows + need > HX_REF_ROWS_MAX) *ok = 0;
    if (*ok && r->n_calls == r->cap_calls) {
        int cap = r->cap_calls ? 2 * r->cap_calls : 64;
        ref_call *c = realloc(r->calls, (size_t)cap * sizeof *c);
        if (c) r->calls = c, r->cap_calls = cap;
        else *ok = 0;
    }
    if (*ok && r->n_rows + need > r->cap_rows) {
        size_t cap = (r->n_rows + need) * 2;
        float *b = realloc(r->rows, cap * sizeof *b);
        if (b) r->rows = b, r->cap_rows = cap;
        else *ok = 0;
    }
    if (*ok) {
        r->calls[r->n_calls++] = (ref_call){v->layer, len, v->pos0 + v->n_new + 1, r->n_rows};
        for (int h = 0; h < v->n_heads; h++)
            memcpy(r->rows + r->n_rows + (size_t)h * len, v->last_row + (size_t)h * v->stride, (size_t)len * sizeof(float));
        r->n_rows += need;
    }
}

/* lost_on_layer, also keeping the call's rows for the other policies. */
static int record_on_layer(void *user, kv_cache *ref, const kv_attn_view *v) {
    rec_state *st = user;
    ref_record(st->r, ref, v);
    return lost_on_layer(st->ls, ref, v);
}

/* The end of a recorded step: its calls end here. */
static void ref_step_mark(hx_ref_snap *r) {
    if (!r->steps_ok) return;
    if (r->n_steps == r->cap_steps) {
        int cap = r->cap_steps ? 2 * r->cap_steps : 64, *b = realloc(r->step_end, (size_t)cap * sizeof *b);
        if (!b) {
            r->steps_ok = 0;
            return;
        }
        r->step_end = b;
        r->cap_steps = cap;
    }
    r->step_end[r->n_steps++] = r->n_calls;
}

/* Recorded calls [c0, c1)'s lost mass against this policy's cache, in
 * the order lost_on_layer met them. */
static int ref_replay(const hx_ref_snap *r, int c0, int c1, lost_state *ls, int n_heads, int n_kv_heads) {
    const int group = n_heads / n_kv_heads;
    for (int c = c0; c < c1; c++) {
        const ref_call *rc = &r->calls[c];
        for (int g = 0; g < n_kv_heads; g++) {
            int e = lost_add(ls, rc->layer, g, group, r->rows + rc->off + (size_t)(g * group) * rc->len,
                             (size_t)rc->len, rc->len, rc->need);
            if (e) return e;
        }
    }
    return KV_OK;
}

/* The full cache after the prompt in en->ref_ctx, with the prompt calls'
 * lost mass added to ls: forked from the sample's snapshot when there is
 * one, else computed (and kept when sharing). */
static uint64_t prompt_key(const int32_t *prompt, int32_t n_prompt) {
    return kv_fnv1a64(kv_fnv1a64(KV_FNV1A64_INIT, &n_prompt, sizeof n_prompt), prompt, (size_t)n_prompt * sizeof *prompt);
}

/* A prompt's key and the full cache's continuation after it. */
static uint64_t continuation_key(uint64_t prompt_key, const hx_gen_result *ref) {
    return kv_fnv1a64(kv_fnv1a64(prompt_key, &ref->n, sizeof ref->n), ref->tokens, (size_t)ref->n * sizeof *ref->tokens);
}

/* en->ref_snap emptied for a new recording (made when first needed);
 * NULL when out of memory. ctx and ctx_key stay: they name their prompt. */
static hx_ref_snap *ref_snap_reset(hx_engine *en) {
    hx_ref_snap *r = en->ref_snap;
    if (!r && !(r = en->ref_snap = calloc(1, sizeof *r))) {
        kv_errorf(KV_ENOMEM, "out of memory");
        return NULL;
    }
    r->key = r->steps_key = 0;
    r->n_calls = r->n_prompt_calls = 0;
    r->n_rows = r->n_prompt_rows = 0;
    r->n_steps = 0;
    r->ok = r->steps_ok = 1;
    r->in_steps = 0;
    r->rec_pol = NULL;
    return r;
}

/* The reference's rows, layer call by layer call, as its run makes them. */
static int rec_observe(void *user, kv_cache *c, const kv_attn_view *v) {
    ref_record(user, c, v);
    return KV_OK;
}

int hx_drv_ref_record_begin(hx_engine *en, kv_policy *full, const int32_t *prompt, int32_t n_prompt,
                            int32_t q_split) {
    /* a prompt read in two parts has calls that the lockstep's one read lacks */
    if (!en->share || hx_drv_pass_tokens(n_prompt, q_split) < n_prompt) return KV_OK;
    hx_ref_snap *r = ref_snap_reset(en);
    if (!r) return KV_ENOMEM;
    r->rec_pol = full;
    r->rec_key = prompt_key(prompt, n_prompt);
    pol_set_observer(full, KV_NEED_LAST_ROW, rec_observe, r);
    return KV_OK;
}

/* Called by the generation of pol: the prompt read (steps follow), or
 * step i's token evaluated. */
static void rec_prompt_done(hx_engine *en, const kv_policy *pol) {
    hx_ref_snap *r = en->ref_snap;
    if (!r || !r->rec_pol || r->rec_pol != pol || r->in_steps) return;
    r->n_prompt_calls = r->n_calls;
    r->n_prompt_rows = r->n_rows;
    r->key = r->ok ? r->rec_key : 0;
    r->in_steps = 1;
}

static void rec_step_done(hx_engine *en, const kv_policy *pol) {
    hx_ref_snap *r = en->ref_snap;
    if (r && r->rec_pol && r->rec_pol == pol && r->in_steps) ref_step_mark(r);
}

void hx_drv_ref_record_end(hx_engine *en, kv_policy *full, const hx_gen_result *ref) {
    pol_set_observer(full, 0, NULL, NULL);
    hx_ref_snap *r = en->ref_snap;
    if (!r || !r->rec_pol || r->rec_pol != full) return;
    /* the steps fidelity replays are 0 .. n - 2 */
    const int complete = ref && r->in_steps && r->ok && r->steps_ok && r->n_steps >= ref->n - 1;
    if (!r->in_steps || !r->ok) r->key = 0;
    r->steps_key = complete ? continuation_key(r->key, ref) : 0;
    r->in_steps = 0;
    r->rec_pol = NULL;
}

static int ref_prompt(hx_engine *en, const int32_t *prompt, int32_t n_prompt, lost_state *ls) {
    const uint64_t key = prompt_key(prompt, n_prompt);
    hx_ref_snap *r = en->ref_snap;
    if (en->share && r && r->ok && r->key == key && r->ctx && r->ctx_key == key) {
        int rc = kv_ctx_fork(r->ctx, en->ref_ctx);
        return rc ? rc : ref_replay(r, 0, r->n_prompt_calls, ls, en->mi->n_heads, en->mi->n_kv_heads);
    }
    kv_ctx_hook hook = {.user = ls, .needs = KV_NEED_LAST_ROW, .positions = KV_POS_ORIGINAL, .on_layer = lost_on_layer};
    rec_state st = {ls, r};
    if (en->share) {
        if (!(r = ref_snap_reset(en))) return KV_ENOMEM;
        st.r = r;
        hook.user = &st;
        hook.on_layer = record_on_layer;
    }
    kv_ctx_set_hook(en->ref_ctx, &hook);
    int rc = kv_ctx_eval(en->ref_ctx, prompt, n_prompt, NULL, 0);
    kv_ctx_set_hook(en->ref_ctx, NULL);
    if (rc || !en->share || !r->ok) return rc;
    if ((rc = ctx_make(en, &r->ctx))) return rc;
    if ((rc = kv_ctx_fork(en->ref_ctx, r->ctx))) return rc;
    r->key = r->ctx_key = key;
    r->n_prompt_calls = r->n_calls;
    r->n_prompt_rows = r->n_rows;
    return KV_OK;
}

/* Fidelity's full-cache side for one policy: the recorded steps of the
 * reference continuation (replay), else the full cache run in lockstep,
 * recording its steps for the policies after it when sharing. */
typedef struct ref_side {
    hx_engine *en;
    hx_ref_snap *r;
    lost_state *ls;
    int replay, record;
    uint64_t key;       /* prompt and continuation */
} ref_side;

static int ref_side_begin(ref_side *rs, const int32_t *prompt, int32_t n_prompt, const hx_gen_result *ref) {
    hx_engine *en = rs->en;
    hx_ref_snap *r = en->ref_snap;
    const uint64_t pkey = prompt_key(prompt, n_prompt);
    rs->key = continuation_key(pkey, ref);
    rs->r = r;
    rs->replay = en->share && r && r->ok && r->key == pkey && r->steps_key == rs->key;
    if (rs->replay) return ref_replay(r, 0, r->n_prompt_calls, rs->ls, en->mi->n_heads, en->mi->n_kv_heads);
    kv_ctx_reset(en->ref_ctx);
    int rc = ref_prompt(en, prompt, n_prompt, rs->ls);
    r = rs->r = en->ref_snap;
    rs->record = !rc && en->share && r && r->ok && r->key == pkey;
    if (rs->record) { /* the steps of another continuation make way */
        r->n_calls = r->n_prompt_calls;
        r->n_rows = r->n_prompt_rows;
        r->n_steps = 0;
        r->steps_key = 0;
        r->steps_ok = r->in_steps = 1;
    }
    return rc;
}

/* The full cache's step over token *tok: replayed, or evaluated. */
static int ref_side_step(ref_side *rs, int step, const int32_t *tok) {
    hx_ref_snap *r = rs->r;
    const kv_model_info *mi = rs->en->mi;
    if (rs->replay)
        return ref_replay(r, step ? r->step_end[step - 1] : r->n_prompt_calls, r->step_end[step], rs->ls, mi->n_heads,
                          mi->n_kv_heads);
    int rc = kv_ctx_eval(rs->en->ref_ctx, tok, 1, NULL, 0);
    if (!rc && rs->record) ref_step_mark(r);
    return rc;
}

static void ref_side_end(ref_side *rs, int completed) {
    if (rs->record) {
        rs->r->in_steps = 0;
        if (completed && rs->r->steps_ok) rs->r->steps_key = rs->key;
    }
    kv_ctx_set_hook(rs->en->ref_ctx, NULL);
    kv_ctx_reset(rs->en->ref_ctx);
}

/* The per-step statistics of fidelity: step i's distribution against the
 * full cache's, in step order. */
typedef struct fid_acc {
    double kl;
    int agree;
} fid_acc;

static int fid_step(hx_engine *en, const hx_gen_result *ref, int i, met_kld *kld, fid_acc *a) {
    const int32_t V = en->mi->vocab_size;
    double kl = 0;
    met_kld_base q;
    norm_of(en->logits, V, NULL, &q);
    int rc = met_kld_add_base(kld, ref->logits + (size_t)i * V, &ref->base[i], en->logits, &q, V, ref->tokens[i], &kl);
    a->kl += kl;
    a->agree += q.top == ref->tokens[i];
    return rc;
}

struct hx_fid_online {
    const hx_gen_result *ref;
    met_kld *kld;
    hx_ref_snap *r;   /* the recorded rows of the prompt and ref's steps */
    lost_state ls;
    fid_acc acc;
    int32_t d;        /* steps 0..d-1 done: their statistics and lost mass */
    int active, pending, diverged;
    double seconds;   /* spent here, inside the generation's loop */
};

hx_fid_online *hx_fid_online_new(hx_engine *en, const int32_t *prompt, int32_t n_prompt, const hx_gen_result *ref,
                                 met_kld *kld) {
    hx_ref_snap *r = en->ref_snap;
    const uint64_t pkey = prompt_key(prompt, n_prompt);
    const uint64_t skey = continuation_key(pkey, ref);
    if (!en->share || !r || !r->ok || r->key != pkey || r->steps_key != skey || !ref->logits || ref->n < 1) return NULL;
    hx_fid_online *fo = calloc(1, sizeof *fo);
    if (!fo) return NULL;
    *fo = (hx_fid_online){.ref = ref, .kld = kld, .r = r, .ls = {.pol = kv_ctx_cache(en->ctx)}, .active = 1};
    return fo;
}

void hx_fid_online_free(hx_fid_online *fo) {
    if (!fo) return;
    free(fo->ls.absent);
    free(fo);
}

static double fid_online_seconds(const hx_fid_online *fo) { return fo->seconds; }

/* Step i of the generation, its token `next` chosen: while it is ref's,
 * the step's statistics (its lost mass follows the token's evaluation);
 * where it is not, the state is kept for hx_drv_fidelity to resume. The
 * prompt's lost mass first. */
static int fid_online_token(hx_engine *en, kv_policy *pol, hx_fid_online *fo, hx_ctx_snap *after, int i, int32_t next) {
    if (!fo->active) return KV_OK;
    const double t0 = kv_now_s();
    const hx_gen_result *ref = fo->ref;
    int rc = i == 0 ? ref_replay(fo->r, 0, fo->r->n_prompt_calls, &fo->ls, en->mi->n_heads, en->mi->n_kv_heads) : KV_OK;
    if (!rc && i >= ref->n) {
        fo->active = 0;
    } else if (!rc && next != ref->tokens[i]) {
        rc = snap_prompt(en, pol, after);
        fo->d = i;
        fo->diverged = 1;
        fo->active = 0;
    } else if (!rc && !(rc = fid_step(en, ref, i, fo->kld, &fo->acc))) {
        fo->pending = i + 1 < ref->n;
        if (!fo->pending) fo->d = ref->n, fo->active = 0;
    }
    fo->seconds += kv_now_s() - t0;
    return rc ? rc : fo->ls.rc;
}

/* After the generation evaluated step i's token (ref's): that step's lost
 * mass, from the recorded rows against the policy's cache. */
static int fid_online_fed(hx_engine *en, hx_fid_online *fo, int i) {
    if (!fo->active || !fo->pending) return KV_OK;
    const double t0 = kv_now_s();
    hx_ref_snap *r = fo->r;
    int rc = ref_replay(r, i ? r->step_end[i - 1] : r->n_prompt_calls, r->step_end[i], &fo->ls, en->mi->n_heads,
                        en->mi->n_kv_heads);
    fo->pending = 0;
    fo->d = i + 1;
    fo->seconds += kv_now_s() - t0;
    return rc;
}

/* Teacher-forced drift from the full cache: the policy reads the prompt and
 * then the full cache's own continuation; at each step its next-token
 * distribution is compared with the full cache's (into `kld`: llama-
 * perplexity's statistics with the full cache as the base and the full
 * cache's token as the target), and the full cache fed the same tokens in
 * lockstep (or its recorded rows) measures the attention mass the policy
 * lost. Steps its generation did (fo) are not done again. */
int hx_drv_fidelity(hx_engine *en, kv_policy *pol, const int32_t *prompt, int32_t n_prompt, int32_t q_split,
                    hx_ctx_snap *snap, const hx_ctx_snap *after, hx_fid_online *fo, const hx_gen_result *ref,
                    met_kld *kld, hx_fid_result *out) {
    int32_t V = en->mi->vocab_size;
    int rc0 = ctx_make(en, &en->ref_ctx);
    if (rc0) return rc0;
    if (fo && (fo->active || (!fo->diverged && fo->d != ref->n) || !after || (fo->diverged && !after->key)))
        return kv_errorf(KV_EINVAL, "internal: fidelity's online steps ended without a state to resume");
    lost_state ls0 = {.pol = kv_ctx_cache(en->ctx)}, *ls = fo ? &fo->ls : &ls0;
    fid_acc acc = fo ? fo->acc : (fid_acc){0, 0};
    int i = fo ? fo->d : 0, rc = KV_OK;
    ref_side rs = {.en = en, .ls = ls};
    if (fo) { /* where the generation left ref: its state, and the recorded rows from there */
        if (fo->diverged && !(rc = snap_resume(en, pol, after))) memcpy(en->logits, after->logits, (size_t)V * sizeof(float));
        rs.r = fo->r;
        rs.replay = 1;
    } else {
        /* the policy's state right after the prompt: kept by its generation
         * run (the same computation), else read again */
        rc = after && after->key ? snap_resume(en, pol, after) : read_prompt(en, pol, prompt, n_prompt, q_split, NULL, snap, NULL);
        if (!rc && after && after->key) memcpy(en->logits, after->logits, (size_t)V * sizeof(float));
        if (!rc) rc = ref_side_begin(&rs, prompt, n_prompt, ref);
    }
    rec_state st = {ls, rs.r};
    kv_ctx_hook hook = {.user = rs.record ? (void *)&st : (void *)ls, .needs = KV_NEED_LAST_ROW,
                        .positions = KV_POS_ORIGINAL, .on_layer = rs.record ? record_on_layer : lost_on_layer};
    if (!rs.replay) kv_ctx_set_hook(en->ref_ctx, &hook);
    for (; !rc && i < ref->n; i++) {
        if ((rc = fid_step(en, ref, i, kld, &acc))) break;
        if (i + 1 < ref->n) {
            rc = kv_ctx_eval(en->ctx, &ref->tokens[i], 1, en->logits, 0);
            if (!rc) rc = ref_side_step(&rs, i, &ref->tokens[i]);
        }
    }
    ref_side_end(&rs, !rc && i == ref->n);
    free(ls0.absent);
    if (rc) return rc;
    if (ls->rc) return ls->rc;
    out->kl_mean = ref->n ? acc.kl / ref->n : 0;
    out->top1 = ref->n ? (double)acc.agree / ref->n : 1;
    out->mass_lost = ls->count ? ls->sum / (double)ls->count : 0;
    return KV_OK;
}

/* Streaming NLL: every token through one cache the policy keeps within
 * its budget; each scored token's NLL to p->on_nll. */
int hx_drv_stream_nll(hx_engine *en, kv_policy *pol, const int32_t *ids, int32_t n, const hx_nll_params *p,
                      double *nll_mean, double *seconds, hx_gen_result *g) {
    int rc = begin_sample(en, pol, 0);
    if (rc) return rc;
    const int32_t V = en->mi->vocab_size, chunk = p->chunk > 1 ? p->chunk : 1;
    float *logits = chunk > 1 ? malloc((size_t)chunk * V * sizeof *logits) : en->logits;
    if (!logits) return kv_errorf(KV_ENOMEM, "out of memory");
    double total = 0, t0 = kv_now_s();
    /* chunk tokens per evaluation (1: StreamingLLM's token at a time); the
     * policy evicts inside each evaluation, layer by layer */
    for (int32_t t = 0; t + 1 < n && !rc; t += chunk) {
        int32_t m = n - 1 - t < chunk ? n - 1 - t : chunk;
        if ((rc = kv_ctx_eval(en->ctx, ids + t, m, logits, chunk > 1))) break;
        if (g) track(en, pol, g, p->every);
        for (int32_t i = 0; i < m; i++) {
            double x = met_nll(logits + (size_t)i * V, V, ids[t + i + 1]);
            total += x;
            if (p->on_nll) p->on_nll(p->user, t + i + 1, x);
        }
    }
    if (chunk > 1) free(logits);
    if (rc) return rc;
    *seconds = kv_now_s() - t0;
    *nll_mean = total / (double)(n - 1);
    if (g) {
        kv_cache *c = kv_ctx_cache(en->ctx);
        g->bytes_peak = kv_cache_peak_bytes(c);
        g->bytes_final = kv_cache_bytes(c);
    }
    return KV_OK;
}

/* ---------------------------------------------------------------- setup */

int hx_engine_open(hx_engine *en, kv_model *model, int threads, kv_cache_type kv_type) {
    memset(en, 0, sizeof *en);
    en->model = model;
    en->mi = kv_model_get_info(model);
    en->tok = kv_model_tokenizer(model);
    en->threads = threads;
    en->kv_type = kv_type;
    if (en->tok) {
        en->n_end = kv_tokenizer_end_tokens(en->tok, en->end_ids, 16);
        if (en->n_end > 16) en->n_end = 16;
    }
    int rc = ctx_make(en, &en->ctx);
    if (rc) return rc;
    en->logits = malloc((size_t)en->mi->vocab_size * sizeof *en->logits);
    return en->logits ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

void hx_engine_close(hx_engine *en) {
    free(en->logits);
    kv_ctx_free(en->ctx);
    kv_ctx_free(en->ref_ctx);
    kv_ctx_free(en->pass_ctx);
    ref_snap_free(en->ref_snap);
    memset(en, 0, sizeof *en);
}
