/* model_impl.h - a loaded model's weights, for the engine's own code (the
 * forward pass, the exporter) and the model's unit tests. The harness and
 * the policies see a model through model.h only (tests/check_layers.py
 * checks the harness), so that the weight layout can change without them.
 *
 * Weights stay in their stored type: GGUF and legacy llama2.c tensors point
 * into a mapping of the file; 1-D norm vectors are fp32. */
#ifndef KV_MODEL_IMPL_H
#define KV_MODEL_IMPL_H

#include <stddef.h>

#include "kernels.h"
#include "model.h"

/* One transformer block's weights. Shapes are [rows][cols] = [out][in].
 * MPT: wq, wk, wv are row slices of the fused wqkv; there is no w_gate
 * (rows = cols = 0); the norms may have biases. */
typedef struct kv_layer_weights {
    const float *attn_norm; /* [dim] */
    kv_tensor wq;           /* [n_heads*head_dim][dim] */
    kv_tensor wk;           /* [n_kv_heads*head_dim][dim] */
    kv_tensor wv;           /* [n_kv_heads*head_dim][dim] */
    kv_tensor wo;           /* [dim][n_heads*head_dim] */
    const float *ffn_norm;  /* [dim] */
    kv_tensor w_gate;       /* [hidden][dim]  (llama2.c w1) */
    kv_tensor w_down;       /* [dim][hidden]  (llama2.c w2) */
    kv_tensor w_up;         /* [hidden][dim]  (llama2.c w3) */
    kv_tensor wqkv;         /* MPT: [(n_heads + 2*n_kv_heads)*head_dim][dim], rows Q, K, V */
    const float *attn_norm_b; /* MPT: [dim] LayerNorm bias, or NULL */
    const float *ffn_norm_b;  /* MPT: [dim] LayerNorm bias, or NULL */
    const float *bq, *bk, *bv;  /* qwen2: projection biases [qd], [kvd], [kvd]; else NULL */
    const float *q_norm, *k_norm; /* qwen3, gemma3: per-head RMSNorm weights [head_dim]; else NULL */
    const float *post_attn_norm;  /* gemma: RMSNorm of the attention output before the residual; else NULL */
    const float *post_ffn_norm;   /* gemma: the same for the MLP output */
    int swa;                      /* a sliding-window layer (info.swa_window) */
} kv_layer_weights;

/* Weights, for the forward pass and the converter. */
const kv_tensor *kv_model_tok_embd(const kv_model *m);     /* [vocab][dim] */
const kv_layer_weights *kv_model_layer(const kv_model *m, int l);
const float *kv_model_out_norm(const kv_model *m);         /* [dim] */
const float *kv_model_out_norm_bias(const kv_model *m);    /* [dim] MPT LayerNorm bias, or NULL */
const kv_tensor *kv_model_output(const kv_model *m);       /* [vocab][dim] */

/* Bytes a weight occupies as held (Q8_G: values plus scales). */
size_t kv_tensor_bytes(const kv_tensor *t);

#endif
