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
 * merges, bos/eos ids, add_bos_token); for a SentencePiece-style one
 * (pieces written with U+2581 for spaces, token types from the pieces)
 * model llama with scores. A SentencePiece-style tokenizer.json (merges,
 * no scores) is KV_EUNSUPPORTED. */
int kv_export_tokenizer(kv_gguf_writer *w, const kv_tokenizer *t);

/* A vocabulary-only GGUF (no tensors): general.name and the tokenizer keys. */
int kv_export_vocab_gguf(const kv_tokenizer *t, const char *name, const char *path);

/* Adds W as a tensor of `type`: copied when the types agree, else
 * dequantized and requantized. Q8_0/Q4_0 need cols % 32 == 0: other
 * shapes are written as F32 (and *written_type says so). */
int kv_export_matrix(kv_gguf_writer *w, const char *name, const kv_tensor *W, kv_dtype type,
                     kv_dtype *written_type);

/* The whole model: 2-D weights in `type`, norm vectors (and MPT's norm
 * biases) in F32, under the tensor names of its architecture. */
int kv_model_export_gguf(const kv_model *m, const char *path, kv_dtype type);

#endif
