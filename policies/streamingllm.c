/* streamingllm.c - attention sinks + recent window (Xiao et al., StreamingLLM;
 * mit-han-lab/streaming-llm StartRecentKVCache, METHODS.md A3): keep the
 * first `sinks` tokens and the most recent budget - sinks, evicting after
 * every attention. Positions: the authors' code's, in-cache ("pos shift",
 * enable_streaming_llm.py turns it on for Llama, GPT-NeoX and Falcon), which
 * is positions=cache here (keys rotated by their index in the cache, so a
 * model runs past its trained context); positions=original rotates them at
 * their true positions instead. */
#include "kv_error.h"
#include "policy_impl.h"

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
    .summary = "attention sinks + recent window, in-cache positions by default (StreamingLLM: mit-han-lab/streaming-llm StartRecentKVCache, pos shift; METHODS.md A3)",
    .params = params,
    .n_params = 1,
    .on_layer = streaming_on_layer,
    .positions = KV_POS_CACHE, /* the authors' pos shift */
    .on_trim = pol_trim_stateless,
};
