/* export.h - writing models as GGUF ("llama" and "mpt" architectures).
 *
 * Used by `kvbench convert` (any loadable model to GGUF, optionally
 * requantized) and `kvbench synth` (synthetic models for tests and
 * benchmarks). A model converted with type KV_F32 from an fp32 file keeps
 * every weight bit-identical, so both files give identical logits. */
#ifndef KV_EXPORT_H
#define KV_EXPORT_H

#include "gguf.h"
#include "model.h"

/* general.architecture, general.name and the llama.* hyper-parameters. */
int kv_export_llama_meta(kv_gguf_writer *w, const kv_model_info *i, const char *name);
/* The same for "mpt": mpt.* sizes, LayerNorm epsilon, max_alibi_bias and,
 * when set, clamp_kqv (as llama.cpp's converter writes them). */
int kv_export_mpt_meta(kv_gguf_writer *w, const kv_model_info *i, const char *name);

/* The tokenizer.ggml.* keys: for a byte-level BPE vocabulary those
 * llama.cpp's converter writes (model gpt2, pre, tokens, token_type,
 * merges, bos/eos ids, add_bos_token); for a SentencePiece-style one model
 * llama (pieces with U+2581 for spaces, scores, token types, bos/eos ids,
 * add_bos_token, add_space_prefix when false). A SentencePiece-style
 * tokenizer.json has merges, not scores: scores are derived from the merge
 * ranks so that llama.cpp's SPM tokenizer encodes as the merges do. */
int kv_export_tokenizer(kv_gguf_writer *w, const kv_tokenizer *t);

/* A vocabulary-only GGUF (no tensors): general.name and the tokenizer keys. */
int kv_export_vocab_gguf(const kv_tokenizer *t, const char *name, const char *path);

/* Adds W as a tensor of `type`: copied when the types agree, else
 * dequantized and requantized. Q8_0/Q4_0 need cols % 32 == 0 and the
 * K-quants cols % 256 == 0: a K-quant row of another length is written as
 * Q8_0 when it can be (llama.cpp likewise falls back to a 32-block type),
 * other shapes as F32 (and *written_type says so). */
int kv_export_matrix(kv_gguf_writer *w, const char *name, const kv_tensor *W, kv_dtype type,
                     kv_dtype *written_type);

/* The whole model: 2-D weights in `type`, norm vectors (and MPT's norm
 * biases) in F32, under the tensor names of its architecture. */
int kv_model_export_gguf(const kv_model *m, const char *path, kv_dtype type);

/* Mixed K-quant recipes, after llama.cpp's Q4_K_M and Q5_K_M
 * (llama_tensor_get_type in src/llama-quant.cpp): the base type (Q4_K or
 * Q5_K) everywhere but
 *   - output.weight (or token_embd.weight when the output is tied to it): Q6_K;
 *   - attn_v and ffn_down (MPT: attn_qkv, which holds V, and ffn_down) of
 *     layer i of n: Q6_K when i < n/8, i >= 7n/8 or (i - n/8) % 3 == 2
 *     (llama.cpp's use_more_bits), else the base type.
 * llama.cpp's special cases by model size (70B, mixture of experts, GQA
 * factor) and its importance-matrix variants are left out. */
typedef enum kv_quant_mix { KV_MIX_NONE = 0, KV_MIX_Q4_K_M, KV_MIX_Q5_K_M } kv_quant_mix;

/* "q4_k_m" / "q5_k_m" (any case): sets *mix and *base (Q4_K / Q5_K) and
 * returns 0; anything else returns KV_EINVAL without setting an error. */
int kv_quant_mix_parse(const char *name, kv_quant_mix *mix, kv_dtype *base);

/* The type the recipe gives the GGUF tensor `name` ("blk.N.attn_v.weight",
 * "output.weight", ...) of a model with n_layers blocks; `tied`: whether
 * token_embd.weight also serves as the output. KV_MIX_NONE: base. */
kv_dtype kv_quant_mix_type(kv_quant_mix mix, kv_dtype base, const char *name, int n_layers, int tied);

/* kv_model_export_gguf with each 2-D weight's type from the recipe. */
int kv_model_export_gguf_mix(const kv_model *m, const char *path, kv_dtype type, kv_quant_mix mix);

#endif
