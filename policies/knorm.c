/* knorm.c - a floor from kvpress's KnormPress: keep the keys with the
 * smallest L2 norm (low-norm keys tend to draw high attention). A key never
 * changes, so its score is computed once, when its slot first appears, and
 * travels with the slot. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "kv_error.h"
#include "policy.h"

static int knorm_init(kv_policy *p) {
    p->state = pol_scores_new(p->n_layers, p->n_kv_heads);
    return p->state ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

static void knorm_reset(kv_policy *p) { pol_scores_reset(p->state); }
static void knorm_free(kv_policy *p) { pol_scores_free(p->state); }

static int knorm_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    const int hd = kv_cache_head_dim(c);
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        int32_t fresh;
        float *score = pol_scores_sync(p->state, v->layer, g, h, &fresh);
        if (!score) return KV_ENOMEM;
        for (int32_t j = fresh; j < h->len; j++) { /* the slots new since the last call */
            double n2 = 0;
            for (int d = 0; d < hd; d++) n2 += (double)h->k[(size_t)j * hd + d] * h->k[(size_t)j * hd + d];
            score[j] = -(float)sqrt(n2);
        }
        if (p->hold || h->len <= p->limit) continue;
        int rc = pol_keep_top(c, h, score, INT32_MAX, p->limit, 1);
        if (rc) return rc;
        pol_scores_sync(p->state, v->layer, g, h, &fresh); /* record the new length */
    }
    return KV_OK;
}

const pol_ops pol_knorm_ops = {
    .name = "knorm",
    .summary = "keep the lowest-norm keys (kvpress KnormPress; a floor)",
    .init = knorm_init,
    .on_layer = knorm_on_layer,
    .reset = knorm_reset,
    .free = knorm_free,
};
