/* sentinel_proxy.c - TRAINING-FREE PROXIES for sentinel-token context
 * compression (Ren, Jia, Zhu, EMNLP 2023; METHODS.md A11). NOT the paper's
 * method: that one fine-tunes a model (LoRA, new <CL>/<CR> embeddings, a
 * custom attention mask) so that tokens after "<CL> span <CR>" attend only
 * to <CR>, whose KV then stands for the span. Without that training these
 * proxies give the same memory footprint and nothing more:
 *   mode=last   each span's KV collapses to its last token's (the rest freed)
 *   mode=merge  each span's keys and values are averaged into the slot of its
 *               last token (keys as stored, i.e. rotated at their positions)
 * Spans are built as the paper builds its training spans, in tokens instead
 * of words: non-overlapping, lengths uniform in [2, max_span], at random
 * places (seeded) in the prompt but outside its first token (BOS, the
 * attention sink) and, when asked, its last `recent` tokens (a question or
 * answer cue), until the prompt's slots fit the budget - a span
 * of L tokens frees L - 1 slots; the last span is shortened to land exactly
 * on the budget. The same spans in every layer and head (spans are about the
 * text). One-shot: applied when a layer has seen the whole prompt; generated
 * tokens are appended without eviction. Positions are untouched (the merged
 * slot keeps its last token's position). */
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "sampler.h"
#include "policy_impl.h"
#include "sentinel_proxy.h"
#include "spans.h"

enum { P_MODE, P_MAX_SPAN, P_RECENT };

static const pol_param_def params[] = {
    {"mode", 0, 0, 1, 1, "what a span becomes: its last token's KV, or the mean of its KV in that slot", "last|merge"},
    {"max_span", 25, 2, 4096, 1, "longest span in tokens (the paper's max_span_length, in words)", NULL},
    {"recent", 0, 0, 1 << 20, 1, "last prompt tokens never put in a span (e.g. a question or answer cue)", NULL},
};

typedef struct sent_state {
    int32_t *span_end; /* [cap] prompt position -> last position of its span, or -1 */
    int32_t n, cap;    /* prompt positions described */
    uint8_t *done;     /* [n_layers] the layer's prompt is compressed */
    int32_t *keep;     /* [cap] scratch: slot indices kept */
    int32_t *slot_of;  /* [cap] scratch: position -> slot */
    float *row;        /* [2][head_dim] scratch: a key and value as floats; allocated on first merge */
    double *acc;       /* [2][head_dim] scratch: their sums over a span */
} sent_state;

static int sent_init(kv_policy *p) {
    sent_state *st = calloc(1, sizeof *st);
    if (st) st->done = calloc((size_t)(p->n_layers > 0 ? p->n_layers : 1), 1);
    p->state = st;
    if (!st || !st->done) return kv_errorf(KV_ENOMEM, "out of memory");
    return KV_OK;
}

static void sent_free(kv_policy *p) {
    sent_state *st = p->state;
    if (!st) return;
    free(st->span_end);
    free(st->done);
    free(st->keep);
    free(st->slot_of);
    free(st->row);
    free(st->acc);
    free(st);
}

/* pol_clone: the spans and which layers are compressed (scratch sized
 * alongside the spans). */
static int sent_clone(const kv_policy *src, kv_policy *dst) {
    const sent_state *s = src->state;
    const size_t L = (size_t)(src->n_layers > 0 ? src->n_layers : 1), cap = (size_t)s->cap;
    sent_state *d = calloc(1, sizeof *d);
    dst->state = d;
    if (!d || !(d->done = malloc(L))) return KV_ENOMEM;
    memcpy(d->done, s->done, L);
    if (!cap) return KV_OK;
    d->span_end = malloc(cap * sizeof *d->span_end);
    d->keep = malloc(cap * sizeof *d->keep);
    d->slot_of = malloc(cap * sizeof *d->slot_of);
    if (!d->span_end || !d->keep || !d->slot_of) return KV_ENOMEM;
    memcpy(d->span_end, s->span_end, (size_t)s->n * sizeof *d->span_end);
    d->n = s->n;
    d->cap = s->cap;
    return KV_OK;
}

/* Lays the spans out over a prompt of n tokens so that n - limit slots go. */
static int plan_spans(kv_policy *p, int32_t n) {
    sent_state *st = p->state;
    if (n > st->cap) {
        int32_t *a = realloc(st->span_end, (size_t)n * sizeof *a);
        if (a) st->span_end = a;
        int32_t *b = realloc(st->keep, (size_t)n * sizeof *b);
        if (b) st->keep = b;
        int32_t *c = realloc(st->slot_of, (size_t)n * sizeof *c);
        if (c) st->slot_of = c;
        if (!a || !b || !c) return kv_errorf(KV_ENOMEM, "out of memory");
        st->cap = n;
    }
    st->n = n;
    for (int32_t i = 0; i < n; i++) st->span_end[i] = -1;
    int32_t region = n - (int32_t)p->param[P_RECENT]; /* spans live in [0, region) */
    int64_t to_free = (int64_t)n - (p->limit < n ? p->limit : n);
    pol_plan_spans(p->seed, region, to_free, (int32_t)p->param[P_MAX_SPAN], st->span_end);
    /* to_free > 0 here only when the budget is below what spans can reach
     * (region/2 slots at best): the prompt then keeps more than its budget. */
    return KV_OK;
}

static void sent_reset(kv_policy *p) {
    sent_state *st = p->state;
    memset(st->done, 0, (size_t)p->n_layers);
    st->n = 0;
    /* layer_limit stays the budget: a budget the spans cannot reach (below
     * 1 + recent + one slot per span) shows up as held over budget */
    if (p->n_prompt > 0) plan_spans(p, p->n_prompt);
}

/* The mean of the keys and of the values held for positions s..e (their
 * slots in st->slot_of) into position e's slot, summed in double in
 * position order, read and written as floats (an f16 / q8_0 cache rounds
 * the means as it stores them). */
static int merge_span(sent_state *st, kv_cache *c, kv_cache_head *h, int32_t s, int32_t e) {
    const size_t hd = (size_t)kv_cache_head_dim(c);
    if (!st->row && !(st->row = malloc(2 * hd * sizeof *st->row))) return kv_errorf(KV_ENOMEM, "out of memory");
    if (!st->acc && !(st->acc = malloc(2 * hd * sizeof *st->acc))) return kv_errorf(KV_ENOMEM, "out of memory");
    memset(st->acc, 0, 2 * hd * sizeof *st->acc);
    int32_t cnt = 0;
    for (int32_t q = s; q <= e; q++) {
        int32_t j = st->slot_of[q];
        if (j < 0) continue;
        kv_cache_key_row(c, h, j, st->row);
        kv_cache_value_row(c, h, j, st->row + hd);
        for (size_t d = 0; d < 2 * hd; d++) st->acc[d] += st->row[d];
        cnt++;
    }
    for (size_t d = 0; d < 2 * hd; d++) st->row[d] = (float)(st->acc[d] / cnt);
    kv_cache_set_row(c, h, st->slot_of[e], st->row, st->row + hd);
    return KV_OK;
}

static int sent_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    sent_state *st = p->state;
    if (st->done[v->layer]) return KV_OK;
    if (st->n == 0) { /* prompt length unknown: the first call is the prompt */
        int rc = plan_spans(p, v->pos0 + v->n_new);
        if (rc) return rc;
    }
    if (v->pos0 + v->n_new < st->n) return KV_OK; /* the prompt is still coming */
    st->done[v->layer] = 1;
    int merge = (int)p->param[P_MODE] == 1;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        for (int32_t i = 0; i < st->n; i++) st->slot_of[i] = -1;
        for (int32_t j = 0; j < h->len; j++)
            if (h->pos[j] >= 0 && h->pos[j] < st->n) st->slot_of[h->pos[j]] = j;
        if (merge) /* each span's mean into its last slot */
            for (int32_t e = 0; e < st->n; e++) {
                if (st->span_end[e] != e || st->slot_of[e] < 0) continue;
                int32_t s = e;
                while (s > 0 && st->span_end[s - 1] == e) s--;
                int rc = merge_span(st, c, h, s, e);
                if (rc) return rc;
            }
        /* keep every slot outside a span or at a span's end, in order */
        int32_t n_keep = 0;
        for (int32_t j = 0; j < h->len; j++) {
            int32_t q = h->pos[j];
            if (q >= st->n || st->span_end[q] < 0 || st->span_end[q] == q) st->keep[n_keep++] = j;
        }
        if (n_keep < h->len) {
            int rc = kv_cache_keep(c, h, st->keep, n_keep);
            if (rc) return rc;
        }
    }
    return KV_OK;
}

extern const pol_ops pol_sentinel_ops, pol_sentinel_proxy_ops;
const int32_t *pol_sentinel_method_spans(const kv_policy *p, int32_t *n); /* sentinel.c */

const int32_t *pol_sentinel_spans(const kv_policy *p, int32_t *n) {
    *n = 0;
    if (p->ops == &pol_sentinel_ops) return pol_sentinel_method_spans(p, n);
    if (p->ops != &pol_sentinel_proxy_ops) return NULL;
    const sent_state *st = p->state;
    *n = st ? st->n : 0;
    return st && st->n ? st->span_end : NULL;
}

const pol_ops pol_sentinel_proxy_ops = {
    .name = "sentinel_proxy",
    .summary = "one-shot, TRAINING-FREE PROXY for sentinel-token compression: each prompt span -> its last token "
               "(or merged); not the fine-tuned method (METHODS.md A11)",
    .params = params,
    .n_params = 3,
    .flags = POL_ONE_SHOT,
    .init = sent_init,
    .on_layer = sent_on_layer,
    .reset = sent_reset,
    .free = sent_free,
    .clone_state = sent_clone,
    .on_trim = pol_trim_stateless, /* spans by position: a freed slot is skipped */
};
