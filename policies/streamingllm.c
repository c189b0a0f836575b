/* streamingllm.c - attention sinks + recent window (Xiao et al., StreamingLLM;
 * mit-han-lab/streaming-llm StartRecentKVCache, METHODS.md A3): keep the
 * first `sinks` tokens and the most recent budget - sinks, evicting after
 * every attention. The paper's in-cache positions ("pos shift") are
 * --set positions=cache; the default is original positions. */
#include "kv_error.h"
#include "policy.h"

static const pol_param_def params[] = {
    {"sinks", 4, 0, 1 << 20, 1, "initial tokens always kept (start_size)", NULL},
};

static int streaming_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    if (p->hold) return KV_OK; /* the prompt is still being read */
    for (int g = 0; g < v->n_kv_heads; g++) {
        int rc = pol_keep_sinks_recent(c, kv_cache_head_at(c, v->layer, g), (int32_t)p->param[0], p->limit);
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
