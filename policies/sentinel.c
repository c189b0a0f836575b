/* sentinel.c - sentinel-token context compression (Ren, Jia, Zhu, EMNLP
 * 2023, arXiv 2310.08152; METHODS.md A11; the authors' code is
 * DRSY/KV_Compression, run_clm_kv_compression.py), for a model FINE-TUNED
 * with the two sentinel tokens <CL> and <CR>. Spans of the prompt are
 * wrapped as "<CL> span <CR>"; the fine-tuned model folds each span into its
 * <CR>, whose KV then stands for the span, and the KV of the span and of
 * <CL> is freed.
 *
 * The attention mask of the authors' training (group_texts), per query:
 *   <CL>            sees only itself;
 *   a span token    sees the ordinary tokens and the <CR>s before it and the
 *                   earlier tokens of its own span (not its <CL>);
 *   <CR>            sees only its <CL>, its span and itself;
 *   ordinary token  sees every earlier ordinary token and every earlier <CR>
 *                   (never a span token, never a <CL>).
 * Position ids: a sentinel takes the position of the token before it; the
 * other tokens count on, so the prompt's tokens keep their own positions.
 *
 * Evaluation (pol_eval_prompt): the ordinary stretches go through plain
 * kv_ctx_eval calls; each "<CL> span <CR>" is one kv_ctx_eval_ext call with
 * the mask above (the slots held before it are ordinary tokens and <CR>s,
 * which the span tokens see and the sentinels do not), and in every layer's
 * hook, right after that layer's attention, the <CL> and span slots are
 * freed: once <CR> is computed no later query may see them, so dropping
 * them is the mask for every later token, and the memory really goes.
 * Generated tokens are ordinary tokens.
 *
 * Spans are laid out as the paper samples its training spans (spans.h), in
 * tokens instead of words, until the prompt's slots fit the budget (a span
 * of L tokens leaves one <CR> slot: L - 1 freed net): never the first token
 * and never the last `recent` tokens (at least the last one, whose logits
 * predict the first generated token). One-shot: generated tokens are kept.
 *
 * The two tokens must be in the model's vocabulary ("<CL>" and "<CR>", or
 * ids given as cl= and cr=). Without a checkpoint fine-tuned with them the
 * figures mean nothing: `sentinel_proxy` holds the training-free stand-ins. */
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"
#include "spans.h"
#include "tokenizer.h"

enum { P_MAX_SPAN, P_RECENT, P_CL, P_CR };

static const pol_param_def params[] = {
    {"max_span", 25, 2, 256, 1, "longest span in tokens (the paper's max_span_length, in words)", NULL},
    {"recent", 1, 1, 1 << 20, 1, "last prompt tokens never put in a span (at least the last)", NULL},
    {"cl", -1, -1, 2147483647.0, 1, "token id of <CL> (-1: the vocabulary entry \"<CL>\")", NULL},
    {"cr", -1, -1, 2147483647.0, 1, "token id of <CR> (-1: the vocabulary entry \"<CR>\")", NULL},
};

typedef struct sen_state {
    int32_t *span_end; /* [cap] prompt index -> last index of its span, or -1 */
    int32_t n, cap;    /* prompt tokens described */
    int32_t drop;      /* during a span's call: its slots to free (<CL> + span), else 0 */
    int32_t *keep;     /* [keep_cap] scratch: slot indices kept */
    int32_t keep_cap;
    /* one "<CL> span <CR>" call: tokens, positions, masks */
    int32_t *tok, *pos;
    uint8_t *sees_cached, *sees;
    int32_t call_cap;
} sen_state;

static int sen_init(kv_policy *p) {
    p->state = calloc(1, sizeof(sen_state));
    return p->state ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

static void sen_free(kv_policy *p) {
    sen_state *st = p->state;
    if (!st) return;
    free(st->span_end);
    free(st->keep);
    free(st->tok);
    free(st->pos);
    free(st->sees_cached);
    free(st->sees);
    free(st);
}

/* pol_clone: the spans (the span call's buffers are scratch, and between
 * calls nothing is being dropped). */
static int sen_clone(const kv_policy *src, kv_policy *dst) {
    const sen_state *s = src->state;
    sen_state *d = calloc(1, sizeof *d);
    dst->state = d;
    if (!d) return KV_ENOMEM;
    if (!s->cap) return KV_OK;
    if (!(d->span_end = malloc((size_t)s->cap * sizeof *d->span_end))) return KV_ENOMEM;
    memcpy(d->span_end, s->span_end, (size_t)s->n * sizeof *d->span_end);
    d->n = s->n;
    d->cap = s->cap;
    d->drop = s->drop;
    return KV_OK;
}

/* The ids of <CL> and <CR> in model m's vocabulary (or as given). */
static int sentinel_ids(const kv_policy *p, const kv_model *m, int32_t ids[2]) {
    static const char *const names[2] = {"<CL>", "<CR>"};
    const kv_tokenizer *t = kv_model_tokenizer(m);
    const int32_t V = kv_model_get_info(m)->vocab_size;
    for (int k = 0; k < 2; k++) {
        double given = p->param[P_CL + k];
        ids[k] = given >= 0 ? (int32_t)given : t ? kv_tokenizer_find(t, names[k]) : -1;
        if (ids[k] < 0)
            return kv_errorf(KV_EINVAL,
                             "policy sentinel: model %s has no %s token in its vocabulary: the method needs a "
                             "checkpoint fine-tuned with <CL> and <CR> (Ren et al. 2023); give their ids as cl= and "
                             "cr=, or use sentinel_proxy (training-free proxies)",
                             kv_model_path(m), names[k]);
        if (ids[k] >= V)
            return kv_errorf(KV_EINVAL, "policy sentinel: %s = %d is outside the vocabulary [0, %d)", k ? "cr" : "cl",
                             ids[k], V);
    }
    if (ids[0] == ids[1]) return kv_errorf(KV_EINVAL, "policy sentinel: <CL> and <CR> are the same token %d", ids[0]);
    return KV_OK;
}

static int sen_check_positions(const kv_policy *p) {
    if (p->positions == KV_POS_ORIGINAL) return KV_OK;
    return kv_errorf(KV_EINVAL, "policy sentinel: positions=%s: the method sets its own position ids "
                     "(only positions=original)", kv_pos_mode_name(p->positions));
}

static int sen_check_model(const kv_policy *p, const kv_model *m) {
    int32_t ids[2];
    int rc = sen_check_positions(p);
    return rc ? rc : sentinel_ids(p, m, ids);
}

static int grow_i32(int32_t **a, int32_t n) {
    int32_t *b = realloc(*a, (size_t)(n > 0 ? n : 1) * sizeof *b);
    if (!b) return kv_errorf(KV_ENOMEM, "out of memory");
    *a = b;
    return KV_OK;
}

/* Spans over a prompt of n tokens so that n - limit slots go. */
static int plan(kv_policy *p, int32_t n) {
    sen_state *st = p->state;
    if (n > st->cap) {
        if (grow_i32(&st->span_end, n)) return KV_ENOMEM;
        st->cap = n;
    }
    st->n = n;
    for (int32_t i = 0; i < n; i++) st->span_end[i] = -1;
    int64_t to_free = (int64_t)n - (p->limit < n ? p->limit : n);
    /* left > 0: a budget below what spans reach (about half the prompt)
     * holds more than the budget, which the harness's check reports */
    pol_plan_spans(p->seed, n - (int32_t)p->param[P_RECENT], to_free, (int32_t)p->param[P_MAX_SPAN], st->span_end);
    return KV_OK;
}

static void sen_reset(kv_policy *p) {
    sen_state *st = p->state;
    st->n = 0;
    st->drop = 0;
    if (p->n_prompt > 0) plan(p, p->n_prompt);
}

/* Right after a span call's attention in this layer: its <CL> and span
 * slots (the call's slots but its last, the <CR>) go. */
static int sen_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    sen_state *st = p->state;
    if (!st->drop) return KV_OK;
    if (v->n_new != st->drop + 1)
        return kv_errorf(KV_EINVAL, "policy sentinel: internal: a span call of %d tokens, expected %d", v->n_new,
                         st->drop + 1);
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        if (h->len > st->keep_cap) {
            if (grow_i32(&st->keep, h->len)) return KV_ENOMEM;
            st->keep_cap = h->len;
        }
        int32_t n_keep = 0;
        for (int32_t j = 0; j < h->len - st->drop - 1; j++) st->keep[n_keep++] = j;
        st->keep[n_keep++] = h->len - 1;
        int rc = kv_cache_keep(c, h, st->keep, n_keep);
        if (rc) return rc;
    }
    return KV_OK;
}

/* Room for a "<CL> span <CR>" call of m tokens. */
static int call_reserve(sen_state *st, int32_t m) {
    if (m <= st->call_cap) return KV_OK;
    uint8_t *a = realloc(st->sees_cached, (size_t)m), *b = a ? realloc(st->sees, (size_t)m * (size_t)m) : NULL;
    if (a) st->sees_cached = a;
    if (b) st->sees = b;
    if (!a || !b || grow_i32(&st->tok, m) || grow_i32(&st->pos, m)) return kv_errorf(KV_ENOMEM, "out of memory");
    st->call_cap = m;
    return KV_OK;
}

static int sen_eval_prompt(kv_policy *p, kv_ctx *ctx, const int32_t *tokens, int32_t n, float *logits) {
    sen_state *st = p->state;
    int32_t ids[2];
    int rc = sen_check_positions(p);
    if (rc || (rc = sentinel_ids(p, kv_ctx_model(ctx), ids))) return rc;
    if (n < 1) return kv_errorf(KV_EINVAL, "policy sentinel: an empty prompt");
    if (st->n != n && (rc = plan(p, n))) return rc;
    const int32_t pos0 = kv_ctx_pos(ctx);
    for (int32_t i = 0; i < n;) {
        int32_t s = i;
        while (s < n && st->span_end[s] < 0) s++;
        if (s > i) { /* an ordinary stretch: plain causal attention at the next positions */
            if ((rc = kv_ctx_eval(ctx, tokens + i, s - i, s == n ? logits : NULL, 0))) return rc;
            i = s;
            continue;
        }
        const int32_t e = st->span_end[s], L = e - s + 1, m = L + 2;
        if ((rc = call_reserve(st, m))) return rc;
        st->tok[0] = ids[0];
        st->pos[0] = pos0 + s - 1; /* spans start after the first token */
        memcpy(st->tok + 1, tokens + s, (size_t)L * sizeof *st->tok);
        for (int32_t k = 0; k < L; k++) st->pos[1 + k] = pos0 + s + k;
        st->tok[m - 1] = ids[1];
        st->pos[m - 1] = pos0 + e;
        memset(st->sees, 0, (size_t)m * (size_t)m);
        for (int32_t t = 0; t < m; t++) st->sees_cached[t] = t > 0 && t < m - 1;
        for (int32_t t = 1; t <= L; t++) /* span tokens: earlier span tokens, not <CL> */
            for (int32_t j = 1; j <= t; j++) st->sees[(size_t)t * m + j] = 1;
        memset(st->sees + (size_t)(m - 1) * m, 1, (size_t)m); /* <CR>: <CL>, the span, itself */
        kv_eval_layout lay = {st->pos, st->sees_cached, st->sees};
        st->drop = m - 1;
        rc = kv_ctx_eval_ext(ctx, st->tok, m, &lay, NULL, 0);
        st->drop = 0;
        if (rc) return rc;
        i = e + 1;
    }
    return KV_OK;
}

const int32_t *pol_sentinel_method_spans(const kv_policy *p, int32_t *n); /* sentinel_proxy.h */
const int32_t *pol_sentinel_method_spans(const kv_policy *p, int32_t *n) {
    const sen_state *st = p->state;
    *n = st ? st->n : 0;
    return st && st->n ? st->span_end : NULL;
}

const pol_ops pol_sentinel_ops = {
    .name = "sentinel",
    .summary = "one-shot sentinel-token compression (Ren et al. 2023): <CL> span <CR> with the authors' mask and "
               "positions, span KV freed; NEEDS a model fine-tuned with <CL>/<CR> (METHODS.md A11)",
    .params = params,
    .n_params = 4,
    .flags = POL_ONE_SHOT,
    .init = sen_init,
    .on_layer = sen_on_layer,
    .reset = sen_reset,
    .free = sen_free,
    .eval_prompt = sen_eval_prompt,
    .check_model = sen_check_model,
    .clone_state = sen_clone,
    /* no per-slot state between calls; a span's call (an explicit layout)
     * is never trimmed, so its slot arithmetic holds */
    .on_trim = pol_trim_stateless,
};
