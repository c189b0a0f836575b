/* tova.c - Token Omission Via Attention (Oren et al., "Transformers are
 * Multi-State RNNs"; schwartz-lab-NLP/TOVA TOVACache.reduce, METHODS.md A6):
 * after each attention, when a layer holds more than the budget, score each
 * slot by the newest query's attention averaged over heads and keep the
 * top `budget` - the same indices for every KV head of the layer. No score
 * is carried between steps. */
#include <stdint.h>
#include <stdlib.h>

#include "kv_error.h"
#include "policy_impl.h"

/* Mean over query heads q0..q1 of the newest query's row, slots [0, len). */
static void mean_row(const kv_attn_view *v, int q0, int q1, int32_t len, float *s) {
    for (int32_t j = 0; j < len; j++) s[j] = 0;
    for (int q = q0; q < q1; q++) {
        const float *row = v->last_row + (size_t)q * v->stride;
        for (int32_t j = 0; j < len; j++) s[j] += row[j];
    }
    for (int32_t j = 0; j < len; j++) s[j] /= (float)(q1 - q0);
}

static int tova_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    if (p->hold) return KV_OK; /* no score is carried: only the prompt's last row counts */
    int32_t len = kv_cache_head_at(c, v->layer, 0)->len;
    int shared = 1; /* heads aligned: always, under TOVA alone */
    for (int g = 1; g < v->n_kv_heads; g++) shared &= kv_cache_head_at(c, v->layer, g)->len == len;
    if (shared && len <= p->limit) return KV_OK;
    const int group = v->n_heads / v->n_kv_heads;
    float *s = malloc((size_t)v->stride * sizeof *s), *t = malloc((size_t)v->stride * sizeof *t);
    int rc = !s || !t ? kv_errorf(KV_ENOMEM, "out of memory") : KV_OK;
    if (!rc && shared) mean_row(v, 0, v->n_heads, len, s); /* once for the layer */
    for (int g = 0; g < v->n_kv_heads && !rc; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        if (h->len <= p->limit) continue;
        float *score = s;
        if (!shared) {
            mean_row(v, g * group, (g + 1) * group, h->len, t);
            score = t;
        }
        rc = pol_keep_top(c, h, score, INT32_MAX, p->limit, 0);
    }
    free(s);
    free(t);
    return rc;
}

const pol_ops pol_tova_ops = {
    .name = "tova",
    .summary = "keep the tokens the newest query attends to most, averaged over heads (TOVA; METHODS.md A6)",
    .needs = KV_NEED_LAST_ROW,
    .on_layer = tova_on_layer,
    .on_trim = pol_trim_stateless,
};
