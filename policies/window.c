/* window.c - local attention: keep the most recent `budget` tokens of each
 * layer, evicting after every attention (prefill and decode). METHODS.md A2:
 * H2O's code with heavy_ratio = 0, i.e. StreamingLLM without sinks. */
#include "kv_error.h"
#include "policy_impl.h"

static int window_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    if (p->hold) return KV_OK; /* the prompt is still being read */
    for (int g = 0; g < v->n_kv_heads; g++) {
        int rc = pol_keep_sinks_recent(c, kv_cache_head_at(c, v->layer, g), 0, p->limit);
        if (rc) return rc;
    }
    return KV_OK;
}

const pol_ops pol_window_ops = {
    .name = "window",
    .summary = "the most recent tokens only (local attention; METHODS.md A2)",
    .on_layer = window_on_layer,
    .on_trim = pol_trim_stateless,
};
