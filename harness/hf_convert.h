/* hf_convert.h - `kvbench convert HFDIR OUT.gguf`: a Hugging Face model
 * folder (config.json, safetensors, tokenizer.json) to GGUF, with the keys
 * and tensor names llama.cpp's convert_hf_to_gguf.py writes, so that
 * llama.cpp loads the file and kvbench loads llama.cpp's.
 *
 * model_type llama and mistral (GGUF "llama": q_proj and k_proj rows
 * permuted from Hugging Face's rotate_half pairing to GGUF's interleaved
 * pairs, as llama.cpp's LlamaModel.permute does), qwen2, qwen3 and gemma2
 * (not permuted: llama.cpp runs them with NEOX pairing, which is Hugging
 * Face's). Gemma's RMSNorm weights are stored as 1 + w, as llama.cpp's
 * Gemma2Model.modify_tensors writes them. Rope scaling: linear and YaRN as
 * keys, Llama 3's as the rope_freqs.weight tensor; any other is refused. */
#ifndef HX_HF_CONVERT_H
#define HX_HF_CONVERT_H

#include "../engine/dtype.h"
#include "../engine/export.h"

/* Does `dir` look like a Hugging Face model folder (it holds config.json)? */
int hx_is_hf_dir(const char *dir);

/* Converts `dir` into `out` (written to out.tmp, then renamed: a failure
 * leaves nothing). 2-D weights in `type` (or the mix's recipe), vectors in
 * F32. tokenizer: NULL (the folder's tokenizer.json) or a GGUF / llama2.c
 * tokenizer to use instead. Returns 0 or a kv_status with kv_last_error set. */
int hx_convert_hf(const char *dir, const char *out, kv_dtype type, kv_quant_mix mix, const char *tokenizer);

/* Internal (tests/fuzz/fuzz_hfconfig.c): checks config.json's text, len
 * bytes, as hx_convert_hf reads it before any tensor, `path` naming it in
 * messages. Returns 0 or the kv_status hx_convert_hf would return for it. */
int hx_hf_config_check(const char *path, const char *text, size_t len);

#endif
