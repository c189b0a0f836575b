/* window.c - local attention: keep the most recent `budget` tokens of each
 * layer, evicting after every attention (prefill and decode). METHODS.md A2:
 * H2O's code with heavy_ratio = 0. */
#include <stdlib.h>

#include "kv_error.h"
#include "policy.h"

static int window_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        if (h->len <= p->limit) continue;
        int32_t drop = h->len - p->limit;
        int32_t *keep = malloc((size_t)p->limit * sizeof *keep);
        if (!keep) return kv_errorf(KV_ENOMEM, "out of memory");
        for (int32_t j = 0; j < p->limit; j++) keep[j] = drop + j;
        int rc = kv_cache_keep(c, h, keep, p->limit);
        free(keep);
        if (rc) return rc;
    }
    return KV_OK;
}

const pol_ops pol_window_ops = {
    .name = "window",
    .summary = "the most recent tokens only (local attention; METHODS.md A2)",
    .on_layer = window_on_layer,
};
