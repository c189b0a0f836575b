/* tova.c - Token Omission Via Attention (Oren et al., "Transformers are
 * Multi-State RNNs"; schwartz-lab-NLP/TOVA TOVACache.reduce, METHODS.md A6):
 * after each attention, when a layer holds more than the budget, score each
 * slot by the newest query's attention averaged over heads and keep the
 * top `budget` - the same indices for every KV head of the layer. No score
 * is carried between steps. */
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy.h"

static int tova_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    int32_t len = kv_cache_head_at(c, v->layer, 0)->len;
    int shared = 1;
    for (int g = 1; g < v->n_kv_heads; g++) shared &= kv_cache_head_at(c, v->layer, g)->len == len;
    const int group = v->n_heads / v->n_kv_heads;
    int rc = KV_OK;
    /* mean over all heads when the layer's heads are aligned (always, under
     * TOVA alone); over each KV head's group otherwise */
    for (int g = 0; g < v->n_kv_heads && !rc; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        if (h->len <= p->limit) continue;
        float *s = calloc((size_t)h->len, sizeof *s);
        int32_t *idx = malloc((size_t)p->limit * sizeof *idx);
        if (!s || !idx) rc = kv_errorf(KV_ENOMEM, "out of memory");
        int q0 = shared ? 0 : g * group, q1 = shared ? v->n_heads : (g + 1) * group;
        for (int q = q0; q < q1 && !rc; q++)
            for (int32_t j = 0; j < h->len; j++) s[j] += v->last_row[(size_t)q * v->stride + j] / (float)(q1 - q0);
        if (!rc) rc = pol_top_k(s, h->len, p->limit, idx);
        if (!rc) rc = pol_keep_slots(c, h, idx, p->limit, NULL);
        free(s);
        free(idx);
    }
    return rc;
}

const pol_ops pol_tova_ops = {
    .name = "tova",
    .summary = "keep the tokens the newest query attends to most, averaged over heads (TOVA; METHODS.md A6)",
    .needs = KV_NEED_LAST_ROW,
    .on_layer = tova_on_layer,
};
