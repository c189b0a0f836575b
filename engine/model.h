/* model.h - a loaded transformer, as its users see it: its hyper-parameters,
 * its tokenizer, and loading. Its weights, in one in-memory layout whatever
 * the file format, are the engine's own (model_impl.h: the forward pass,
 * the exporter and the model's unit tests read them).
 *
 * Formats (detected from the first bytes, see kv_model_load):
 *   - GGUF v3/v2, architectures "llama" (Llama 1-3, Mistral), "qwen2",
 *     "qwen3", "phi3", "gemma2", "gemma3" and "mpt" (F32, F16, BF16, Q8_0,
 *     Q4_0 and K-quant tensors);
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
typedef enum kv_arch {
    KV_ARCH_LLAMA = 0,
    KV_ARCH_MPT = 1,
    KV_ARCH_QWEN2 = 2,  /* llama + q/k/v biases, NEOX pairing */
    KV_ARCH_QWEN3 = 3,  /* llama + per-head RMSNorm of q and k, NEOX pairing */
    KV_ARCH_PHI3 = 4,   /* fused qkv and gate/up, NEOX pairing, rope factors */
    KV_ARCH_GEMMA2 = 5, /* scaled embeddings, post-norms, GeGLU, soft-capping, SWA every other layer */
    KV_ARCH_GEMMA3 = 6, /* gemma2 without soft-capping, q/k norms, 5 SWA layers : 1 global, two rope bases */
} kv_arch;

/* How rotary embeddings pair a head's dimensions, as llama.cpp chooses per
 * architecture: NORM rotates adjacent pairs (2i, 2i+1) (llama, the GGUF
 * llama files whose q/k rows the converter permuted); NEOX rotates i with
 * i + n_rot/2 (GPT-NeoX, and the Hugging Face rotate_half of qwen2, qwen3,
 * phi3, gemma). */
typedef enum kv_rope_pair { KV_ROPE_NORM = 0, KV_ROPE_NEOX = 1 } kv_rope_pair;

/* Rope scaling ({arch}.rope.scaling.type): LINEAR divides positions by the
 * factor; YARN blends interpolated and extrapolated frequencies per pair
 * (Peng et al. 2023) and scales cos/sin by 1 + 0.1 ln(factor). Llama 3's
 * scaling arrives as the rope_freqs.weight tensor (per-pair divisors),
 * phi3's as rope_factors_long/short; both combine with any type. */
typedef enum kv_rope_scaling { KV_ROPE_SCALING_NONE = 0, KV_ROPE_SCALING_LINEAR = 1, KV_ROPE_SCALING_YARN = 2 } kv_rope_scaling;

/* The gated MLP's activation: SiLU (SwiGLU: llama, qwen, phi3) or GELU's
 * tanh form (GeGLU: gemma). */
typedef enum kv_ffn_act { KV_ACT_SILU = 0, KV_ACT_GELU = 1 } kv_ffn_act;

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
    int32_t head_dim;   /* per head: dim / n_heads, or {arch}.attention.key_length (qwen3, gemma) */
    int32_t vocab_size;
    int32_t ctx_len;    /* trained context length */
    int32_t n_rot;      /* rotary dims per head (<= head_dim); 0 for ALiBi models */
    float rope_base;    /* rotary frequency base (0 for ALiBi models) */
    float rope_base_swa;/* the base of sliding-window layers (gemma3: 10000; else rope_base) */
    kv_rope_pair rope_pair;
    kv_rope_scaling rope_scaling;
    float rope_factor;  /* LINEAR/YARN factor (1: none); gemma3: global layers only */
    int32_t rope_orig_ctx; /* YARN: the context the model was trained at */
    float rope_attn_factor; /* cos/sin multiplier (1; phi3 and YaRN files may set it) */
    int rope_freq_factors; /* 1: per-pair divisors from rope_freqs / rope_factors_* */
    float attn_scale;   /* query scale: 1/sqrt(head_dim) unless the architecture says otherwise */
    float attn_softcap; /* gemma2: attention logits -> cap tanh(s / cap); 0: none */
    float final_softcap;/* gemma2: output logits likewise; 0: none */
    float embd_scale;   /* gemma: embeddings multiplied by sqrt(dim); 1 otherwise */
    int32_t swa_window; /* sliding-window layers attend to their last swa_window positions; 0: none */
    int32_t n_swa_layers; /* how many layers are windowed (kv_layer_weights.swa, model_impl.h) */
    kv_ffn_act ffn_act;
    float norm_eps;     /* RMSNorm epsilon (MPT: LayerNorm epsilon) */
    float max_alibi_bias; /* MPT: ALiBi slopes 2^(-max_alibi_bias * k / n) (default 8); 0 otherwise */
    float clamp_kqv;    /* MPT: q, k, v clamped to [-clamp_kqv, clamp_kqv]; 0 = none */
    kv_gelu gelu;       /* MPT: the MLP's GELU */
    int tied_output;    /* classifier shares the embedding table */
    kv_dtype wtype;     /* type of the attention/MLP matrices */
    int64_t n_params;   /* parameters, counting tied weights once */
    size_t weight_bytes;/* bytes of weights as held in memory */
} kv_model_info;

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

/* Weight bytes one decoded token reads: every matrix once, the norms, one
 * embedding row and the classifier (what `kvbench bench` divides by time). */
size_t kv_model_decode_bytes(const kv_model *m);

/* The effective inverse frequency of each rotary pair i < n_rot/2 of a
 * global (swa = 0) or sliding-window (swa = 1) layer, with the base, the
 * scaling type, Llama 3's and phi3's per-pair factors folded in, and the
 * cos/sin multiplier (*mscale). Positions rotate by p * inv_freq[i]. */
void kv_model_rope_freqs(const kv_model *m, int swa, double *inv_freq, double *mscale);

/* The sliding-window layers as ranges ("0-4,6-10"; "" when none), cut to
 * fit buf. */
void kv_model_swa_layers(const kv_model *m, char *buf, size_t cap);

/* "norm", "neox"; "none", "linear", "yarn". */
const char *kv_rope_pair_name(kv_rope_pair p);
const char *kv_rope_scaling_name(kv_rope_scaling s);

/* "gguf", "llama2c", "llama2c-q8". */
const char *kv_model_format_name(kv_model_format f);

/* "llama", "mpt", "qwen2", ...; "tanh", "erf". kv_gelu_parse returns KV_OK or KV_EINVAL. */
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
