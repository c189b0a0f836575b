/* h2o.c - Heavy-Hitter Oracle (Zhang et al., H2O), the real-drop variant of
 * its authors' code (FMInference/H2O utils_real_drop, H2OKVCache_LayerWise;
 * METHODS.md A4 (b)): each slot's score is the attention it has received,
 * summed over every query since it entered the cache (prompt and decode)
 * and over the query heads that share its KV head; once a layer holds more
 * than the budget, it keeps the `recent` share of the budget as the newest
 * tokens and the rest as the highest-scoring older ones, and drops the
 * others for real (their scores go with them).
 * With sim=1 it is the mask-simulation variant (utils_hh, METHODS.md A4 (a))
 * that Keyformer compares against, used with a percentage budget: there the
 * kept set is chosen for the next step and counts the token about to be
 * generated in its recent window, so each step's attention sees exactly the
 * budget: the cache is cut to budget - 1 and the recent window to recent - 1. */
#include <stdlib.h>

#include "kv_error.h"
#include "policy.h"

static const pol_param_def params[] = {
    {"recent", 0.5, 0, 1, 0, "share of the budget kept as the most recent tokens (H2O: recent = heavy)", NULL},
    {"sim", 0, 0, 1, 1, "1: the mask-simulation variant (the next token counts against budget and window)", NULL},
};

static int h2o_init(kv_policy *p) {
    p->state = pol_scores_new(p->n_layers, p->n_kv_heads);
    return p->state ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

static void h2o_reset(kv_policy *p) { pol_scores_reset(p->state); }
static void h2o_free(kv_policy *p) { pol_scores_free(p->state); }

static int h2o_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    const int group = v->n_heads / v->n_kv_heads;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        int32_t fresh;
        float *score = pol_scores_sync(p->state, v->layer, g, h, &fresh);
        if (!score) return KV_ENOMEM;
        for (int q = g * group; q < (g + 1) * group; q++) {
            const float *row = v->colsum + (size_t)q * v->stride;
            for (int32_t j = 0; j < h->len; j++) score[j] += row[j];
        }
        /* sim: the slot of the token about to be generated is counted in */
        const int32_t next = (int32_t)p->param[1], limit = p->limit - next;
        if (p->hold || h->len <= limit) continue;
        /* the recent window: the newest `recent` positions (tokens are
         * never evicted while inside it, so these are all present) */
        int32_t recent = (int32_t)(p->limit * p->param[0]), heavy = p->limit - recent;
        recent = recent - next > 0 ? recent - next : 0;
        int32_t from = recent > 0 ? pol_max_pos(h) - recent + 1 : INT32_MAX;
        int rc = pol_keep_top(c, h, score, from, heavy < limit ? heavy : limit, 1);
        if (rc) return rc;
        pol_scores_sync(p->state, v->layer, g, h, &fresh); /* record the new length */
    }
    return KV_OK;
}

const pol_ops pol_h2o_ops = {
    .name = "h2o",
    .summary = "heavy hitters by accumulated attention + recent window (H2O: real drop, or sim=1 the mask simulation; METHODS.md A4)",
    .params = params,
    .n_params = 2,
    .needs = KV_NEED_COLSUM,
    .init = h2o_init,
    .on_layer = h2o_on_layer,
    .reset = h2o_reset,
    .free = h2o_free,
};
