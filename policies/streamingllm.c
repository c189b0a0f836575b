/* streamingllm.c - attention sinks + recent window (Xiao et al., StreamingLLM;
 * mit-han-lab/streaming-llm StartRecentKVCache, METHODS.md A3): keep the
 * first `sinks` tokens and the most recent budget - sinks, evicting after
 * every attention. Positions: original (keys rotated at their true
 * position); the paper's in-cache positions come with the position modes. */
#include <stdlib.h>

#include "kv_error.h"
#include "policy.h"

static const pol_param_def params[] = {
    {"sinks", 4, 0, 1 << 20, 1, "initial tokens always kept (start_size)"},
};

static int streaming_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    int32_t sinks = (int32_t)p->param[0];
    if (sinks > p->limit) sinks = p->limit;
    int32_t recent = p->limit - sinks;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        if (h->len <= p->limit) continue;
        int32_t *keep = malloc((size_t)p->limit * sizeof *keep);
        if (!keep) return kv_errorf(KV_ENOMEM, "out of memory");
        for (int32_t j = 0; j < sinks; j++) keep[j] = j;
        for (int32_t j = 0; j < recent; j++) keep[sinks + j] = h->len - recent + j;
        int rc = kv_cache_keep(c, h, keep, p->limit);
        free(keep);
        if (rc) return rc;
    }
    return KV_OK;
}

const pol_ops pol_streamingllm_ops = {
    .name = "streamingllm",
    .summary = "attention sinks + recent window (StreamingLLM; METHODS.md A3)",
    .params = params,
    .n_params = 1,
    .on_layer = streaming_on_layer,
};
