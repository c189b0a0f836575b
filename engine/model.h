/* model.h - a loaded transformer: its hyper-parameters, its weights in one
 * in-memory layout whatever the file format, and its tokenizer.
 *
 * Formats (detected from the first bytes, see kv_model_load):
 *   - GGUF v3/v2, architectures "llama" and "mpt" (F32, F16, BF16, Q8_0,
 *     Q4_0 tensors);
 *   - llama2.c legacy fp32 checkpoints (7 x int32 header);
 *   - llama2.c version-2 "ak42" Q8 checkpoints (int8 + fp32 group scales).
 * Weights stay in their stored type: GGUF and legacy llama2.c tensors point
 * into a read-only mapping of the file; nothing is silently widened to fp32
 * except 1-D norm vectors, which the forward pass reads as fp32. */
#ifndef KV_MODEL_H
#define KV_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "filemap.h"
#include "kernels.h"
#include "tokenizer.h"

/* LLAMA: RMSNorm, rotary embeddings, SwiGLU MLP (llama2.c and GGUF "llama").
 * MPT: LayerNorm (optional bias), fused Q,K,V, ALiBi instead of rotary
 * embeddings, GELU MLP (GGUF "mpt", as llama.cpp's converter writes it). */
typedef enum kv_arch { KV_ARCH_LLAMA = 0, KV_ARCH_MPT = 1 } kv_arch;

/* The GELU of MPT's MLP. TANH is the tanh approximation
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), what llama.cpp runs for
 * MPT (the default); ERF is the exact 0.5 x (1 + erf(x / sqrt 2)) of
 * Hugging Face's MPT (nn.GELU()). */
typedef enum kv_gelu { KV_GELU_TANH = 0, KV_GELU_ERF = 1 } kv_gelu;

typedef enum kv_model_format {
    KV_FORMAT_GGUF = 0,
    KV_FORMAT_LLAMA2C = 1,    /* legacy fp32 */
    KV_FORMAT_LLAMA2C_Q8 = 2, /* "ak42" version 2 */
} kv_model_format;

typedef struct kv_model_info {
    kv_arch arch;
    kv_model_format format;
    int32_t dim;        /* embedding width */
    int32_t hidden_dim; /* MLP width */
    int32_t n_layers;
    int32_t n_heads;    /* query heads */
    int32_t n_kv_heads; /* key/value heads (GQA when < n_heads) */
    int32_t head_dim;   /* dim / n_heads */
    int32_t vocab_size;
    int32_t ctx_len;    /* trained context length */
    int32_t n_rot;      /* rotary dims per head (<= head_dim); 0 for ALiBi models */
    float rope_base;    /* rotary frequency base (0 for ALiBi models) */
    float norm_eps;     /* RMSNorm epsilon (MPT: LayerNorm epsilon) */
    float max_alibi_bias; /* MPT: ALiBi slopes 2^(-max_alibi_bias * k / n) (default 8); 0 otherwise */
    float clamp_kqv;    /* MPT: q, k, v clamped to [-clamp_kqv, clamp_kqv]; 0 = none */
    kv_gelu gelu;       /* MPT: the MLP's GELU */
    int tied_output;    /* classifier shares the embedding table */
    kv_dtype wtype;     /* type of the attention/MLP matrices */
    int64_t n_params;   /* parameters, counting tied weights once */
    size_t weight_bytes;/* bytes of weights as held in memory */
} kv_model_info;

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
} kv_layer_weights;

typedef struct kv_model kv_model; /* opaque */

typedef struct kv_model_params {
    /* Tokenizer for llama2.c checkpoints (GGUF files carry their own), as
     * kv_tokenizer_load reads it: a llama2.c .bin, a GGUF file, or a folder
     * with GPT-2's encoder.json + vocab.bpe. NULL: look beside the model for
     * tok<vocab>.bin, then tokenizer.bin. */
    const char *tokenizer_path;
    int no_tokenizer; /* load weights only (tests, converters) */
    /* Architecture overrides (0: as the file says): the rotary frequency base,
     * the context length the harness plans prompts with, RMSNorm's epsilon.
     * For experiments such as a longer context with a scaled base. */
    float rope_base;
    int32_t ctx_len;
    float norm_eps;
    /* MPT's GELU (default KV_GELU_TANH, what llama.cpp runs); ignored by
     * other architectures. */
    kv_gelu gelu;
    /* 0 (default): the file is read into anonymous memory in 2 MB huge
     * pages, which decode streams faster (filemap.h); 1: the weights are
     * read from the file's mapping (no copy, page cache shared between
     * processes: for models close to the machine's memory). */
    int weights_mmap;
} kv_model_params;

kv_model_params kv_model_default_params(void);

/* Loads a model. Returns KV_OK, or KV_EIO / KV_EFORMAT / KV_EUNSUPPORTED
 * with a message naming the file, the offset and what was expected. */
int kv_model_load(const char *path, const kv_model_params *params, kv_model **out);
void kv_model_free(kv_model *m);

const kv_model_info *kv_model_get_info(const kv_model *m);
const kv_tokenizer *kv_model_tokenizer(const kv_model *m); /* NULL if none */
const char *kv_model_path(const kv_model *m);
/* How the model's file is held (mode, size, and kv_filemap_huge_bytes). */
const kv_filemap *kv_model_file(const kv_model *m);

/* Weights, for the forward pass and the converter. */
const kv_tensor *kv_model_tok_embd(const kv_model *m);     /* [vocab][dim] */
const kv_layer_weights *kv_model_layer(const kv_model *m, int l);
const float *kv_model_out_norm(const kv_model *m);         /* [dim] */
const float *kv_model_out_norm_bias(const kv_model *m);    /* [dim] MPT LayerNorm bias, or NULL */
const kv_tensor *kv_model_output(const kv_model *m);       /* [vocab][dim] */

/* Bytes a weight occupies as held (Q8_G: values plus scales). */
size_t kv_tensor_bytes(const kv_tensor *t);

/* "gguf", "llama2c", "llama2c-q8". */
const char *kv_model_format_name(kv_model_format f);

/* "llama", "mpt"; "tanh", "erf". kv_gelu_parse returns KV_OK or KV_EINVAL. */
const char *kv_arch_name(kv_arch a);
const char *kv_gelu_name(kv_gelu g);
int kv_gelu_parse(const char *name, kv_gelu *out);

/* The ALiBi slope of query head h (0 <= h < n_heads) for a maximum bias b,
 * as BLOOM and llama.cpp define it for any head count: with n2 the largest
 * power of two <= n_heads, m0 = 2^(-b/n2), m1 = 2^(-(b/2)/n2), the slope is
 * m0^(h+1) for h < n2, else m1^(2(h-n2)+1). (For a power of two this is the
 * ALiBi paper's geometric sequence 2^(-b(h+1)/n_heads).) */
double kv_alibi_slope(int n_heads, double max_bias, int h);

#endif
