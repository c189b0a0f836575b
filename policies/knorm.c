/* knorm.c - a floor from kvpress's KnormPress (NVIDIA/kvpress
 * kvpress/presses/knorm_press.py; Devoto et al. 2024): keep the keys with the
 * smallest L2 norm (low-norm keys tend to draw high attention). A key never
 * changes, so its score is computed once, when its slot first appears, and
 * travels with the slot.
 *
 * schedule=prompt (the default) is kvpress's: its presses compress in the
 * prefill forward only (BasePress.forward_hook returns early once not
 * prefilling), so the prompt is cut once, at its end, to the budget, and
 * generated tokens are appended without eviction (a one-shot instance:
 * POL_ONE_SHOT); KnormPress keeps no window (recent=0). The prompt ends at
 * pol_begin's n_prompt (or, when 0, with the first call), and a call that
 * holds tokens past it keeps those. schedule=every_step evicts after every
 * call once over the budget, keeping the newest max(recent, 1) tokens so the
 * token just written is never the one dropped. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "kv_error.h"
#include "policy_impl.h"
#include "schedule.h"

static const pol_param_def params[] = {
    {"schedule", POL_SCHED_PROMPT, 0, 1, 1,
     "prompt: cut the prompt once at its end, no eviction after (kvpress KnormPress); every_step: evict every call",
     "prompt|every_step"},
    {"recent", 0, 0, 1 << 20, 1,
     "newest tokens never dropped (kvpress: none; every_step keeps at least 1, the token just written)", NULL},
};

typedef struct knorm_state {
    pol_scores *score;
    pol_sched sched;
    float *row; /* [head_dim] a key as floats; allocated on first use */
} knorm_state;

static int knorm_init(kv_policy *p) {
    knorm_state *st = calloc(1, sizeof *st);
    p->state = st;
    if (!st || !(st->score = pol_scores_new(p->n_layers, p->n_kv_heads))) return kv_errorf(KV_ENOMEM, "out of memory");
    return pol_sched_init(p, &st->sched, (int)p->param[0], (int32_t)p->param[1]);
}

static void knorm_reset(kv_policy *p) {
    knorm_state *st = p->state;
    pol_scores_reset(st->score);
    pol_sched_reset(p, &st->sched);
}

static void knorm_free(kv_policy *p) {
    knorm_state *st = p->state;
    if (!st) return;
    pol_scores_free(st->score);
    pol_sched_free(&st->sched);
    free(st->row);
    free(st);
}

/* pol_clone: the norms of the held keys, and the schedule. */
static int knorm_clone(const kv_policy *src, kv_policy *dst) {
    const knorm_state *s = src->state;
    knorm_state *d = calloc(1, sizeof *d);
    dst->state = d;
    if (!d || !(d->score = pol_scores_clone(s->score))) return KV_ENOMEM;
    return pol_sched_clone(src, &s->sched, &d->sched);
}

static int knorm_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    knorm_state *st = p->state;
    const int hd = kv_cache_head_dim(c);
    const int cut = pol_sched_cut(p, &st->sched, v);
    if (!st->row && !(st->row = malloc((size_t)hd * sizeof *st->row))) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        int32_t fresh, from, keep;
        float *score = pol_scores_sync(st->score, v->layer, g, h, &fresh);
        if (!score) return KV_ENOMEM;
        for (int32_t j = fresh; j < h->len; j++) { /* the slots new since the last call */
            double n2 = 0;
            kv_cache_key_row(c, h, j, st->row); /* the key attention reads (f16 / q8_0 as stored) */
            for (int d = 0; d < hd; d++) n2 += (double)st->row[d] * st->row[d];
            score[j] = -(float)sqrt(n2);
        }
        if (!cut || !pol_sched_span(p, &st->sched, h, &from, &keep)) continue;
        int rc = pol_keep_top(c, h, score, from, keep, 1);
        if (rc) return rc;
        pol_scores_sync(st->score, v->layer, g, h, &fresh); /* record the new length */
    }
    return KV_OK;
}

/* A window layer's head lost what its window no longer sees: the
 * scores follow their slots. */
static int knorm_on_trim(kv_policy *p, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos) {
    (void)min_pos;
    pol_scores_trim(((knorm_state *)p->state)->score, layer, kv_head, keep, n_keep);
    return KV_OK;
}

const pol_ops pol_knorm_ops = {
    .name = "knorm",
    .summary = "one-shot by default (schedule=prompt, as kvpress runs it): keep the lowest-norm keys (kvpress KnormPress; a floor)",
    .params = params,
    .n_params = 2,
    .init = knorm_init,
    .on_layer = knorm_on_layer,
    .reset = knorm_reset,
    .free = knorm_free,
    .clone_state = knorm_clone,
    .on_trim = knorm_on_trim,
};
