/* knorm.c - a floor from kvpress's KnormPress: keep the keys with the
 * smallest L2 norm (low-norm keys tend to draw high attention). */
#include <math.h>
#include <stdlib.h>

#include "kv_error.h"
#include "policy.h"

static int knorm_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    const int hd = kv_cache_head_dim(c);
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        if (h->len <= p->limit) continue;
        float *s = malloc((size_t)h->len * sizeof *s);
        int32_t *idx = malloc((size_t)p->limit * sizeof *idx);
        int rc = !s || !idx ? kv_errorf(KV_ENOMEM, "out of memory") : KV_OK;
        for (int32_t j = 0; j < h->len && !rc; j++) {
            double n2 = 0;
            for (int d = 0; d < hd; d++) n2 += (double)h->k[(size_t)j * hd + d] * h->k[(size_t)j * hd + d];
            s[j] = -(float)sqrt(n2);
        }
        if (!rc) rc = pol_top_k(s, h->len, p->limit, idx);
        if (!rc) rc = pol_keep_slots(c, h, idx, p->limit, NULL);
        free(s);
        free(idx);
        if (rc) return rc;
    }
    return KV_OK;
}

const pol_ops pol_knorm_ops = {
    .name = "knorm",
    .summary = "keep the lowest-norm keys (kvpress KnormPress; a floor)",
    .on_layer = knorm_on_layer,
};
