/* tokenizer.h - the engine's tokenizers, one API for two kinds:
 *
 * SentencePiece-style BPE (llama2.c tokenizer files and GGUF "llama"
 * vocabularies; tokenizer.c). Encoding follows SentencePiece's BPE model as
 * llama.cpp's SPM tokenizer runs it: a leading space is added
 * (add_space_prefix), spaces become U+2581, the text is split into UTF-8
 * characters, adjacent pieces are merged best-score-first while the merged
 * piece is in the vocabulary, and a character with no token is emitted as
 * its UTF-8 bytes through the <0xNN> byte-fallback tokens.
 *
 * Byte-level BPE as GPT-2 defines it (GGUF "gpt2" vocabularies: GPT-2,
 * GPT-NeoX/Pythia, MPT, OPT, GPT-J, Cerebras-GPT; Hugging Face's
 * encoder.json + vocab.bpe; tokenizer_bpe.c). Control and user-defined
 * tokens ("<|endoftext|>", "<CL>", MPT's runs of spaces) are matched whole
 * in the text first (leftmost, longest), as Hugging Face's tokenizers do;
 * the rest is split by the pre-tokenizer regex tokenizer.ggml.pre names
 * ("gpt-2", "mpt", "gpt-neox"; absent means gpt-2) and each word, one
 * symbol per byte, is merged by the rank of tokenizer.ggml.merges. No space
 * is added in front, and any bytes (invalid UTF-8 too) encode and decode
 * back to themselves. The pre-tokenizers of today's instruction models are
 * there too (llama-bpe for Llama 3 with its ignore_merges rule, qwen2 with
 * NFC first, deepseek-llm, falcon, starcoder, refact, command-r; see
 * tokenizer_pre.c). */
#ifndef KV_TOKENIZER_H
#define KV_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct kv_tokenizer kv_tokenizer; /* opaque */

/* llama2.c tokenizer .bin (int32 max_token_length, then per token: f32
 * score, int32 length, bytes). vocab_size comes from the model header. Its
 * pieces use ' ' where GGUF vocabularies use U+2581; both are handled. */
int kv_tokenizer_load_llama2c(const char *path, int32_t vocab_size, kv_tokenizer **out);

/* From the tokenizer.ggml.* keys of an opened GGUF file (model "llama" or
 * "gpt2"). KV_EUNSUPPORTED names any other tokenizer model or an unknown
 * tokenizer.ggml.pre; a malformed vocabulary or merge list is KV_EFORMAT
 * naming the file and the key. The tokenizer keeps no pointer into g. */
int kv_tokenizer_from_gguf(const kv_gguf *g, kv_tokenizer **out);

/* Hugging Face / OpenAI GPT-2 files: encoder.json (token -> id) and
 * vocab.bpe (merges, one "a b" a line after "#version"). <|endoftext|> is
 * the control token and BOS/EOS. */
int kv_tokenizer_load_gpt2(const char *encoder_json, const char *vocab_bpe, kv_tokenizer **out);

/* Any of the above by what path is: a folder holding a Hugging Face
 * tokenizer.json (and tokenizer_config.json: BOS, EOS, add_bos; byte-level
 * BPE such as Llama 3 and Qwen2/3, or SentencePiece-style BPE over U+2581
 * with byte fallback such as Llama 2 and Gemma 3; anything else is
 * KV_EUNSUPPORTED naming the model type, normalizer or pre-tokenizer), a
 * folder holding encoder.json and vocab.bpe, a GGUF file (by its magic;
 * vocabulary-only files too), or else a llama2.c tokenizer .bin of
 * vocab_size tokens. */
int kv_tokenizer_load(const char *path, int32_t vocab_size, kv_tokenizer **out);

void kv_tokenizer_free(kv_tokenizer *t);

int32_t kv_tokenizer_n_vocab(const kv_tokenizer *t);
int32_t kv_tokenizer_bos(const kv_tokenizer *t); /* -1 if none */
int32_t kv_tokenizer_eos(const kv_tokenizer *t); /* -1 if none */
/* Whether the vocabulary asks for BOS in front (tokenizer.ggml.add_bos_token,
 * tokenizer_config.json add_bos_token or its post-processor); -1: not said. */
int kv_tokenizer_add_bos(const kv_tokenizer *t);
/* Whether a SentencePiece-style vocabulary puts U+2581 in front of each
 * text fragment (add_dummy_prefix; Llama 2 does, Gemma 3 does not). */
int kv_tokenizer_add_space_prefix(const kv_tokenizer *t);

/* What a vocabulary is, for writing it out (kv_export_tokenizer): the
 * tokenizer.ggml.pre name of a byte-level BPE vocabulary (NULL for
 * SentencePiece-style ones), whether its symbols are bytes, whether it
 * normalises to NFC and ignores merges for words that are tokens, each
 * token's GGUF type (1 normal .. 6 byte), and its merges by rank. */
const char *kv_tokenizer_pre(const kv_tokenizer *t);
int kv_tokenizer_byte_level(const kv_tokenizer *t);
int kv_tokenizer_nfc(const kv_tokenizer *t);
int kv_tokenizer_ignore_merges(const kv_tokenizer *t);
int kv_tokenizer_token_type(const kv_tokenizer *t, int32_t tok);
int64_t kv_tokenizer_n_merges(const kv_tokenizer *t); /* 0 for SentencePiece (scores) */
int kv_tokenizer_merge(const kv_tokenizer *t, int64_t i, int32_t *left, int32_t *right);

/* What a GGUF tokenizer.ggml.pre name means beyond its regexes: whether
 * kvbench knows it, and whether a vocabulary loaded under it normalises to
 * NFC first and ignores merges for words that are tokens. */
typedef struct kv_pre_info { int known, nfc, ignore_merges; } kv_pre_info;
kv_pre_info kv_pre_info_of(const char *name);

/* Encodes text[0..len). Writes at most `cap` ids to out and sets *n_out to
 * the number the full encoding has (so a caller can retry with a larger
 * buffer when *n_out > cap). add_bos prepends the BOS id. */
int kv_tokenizer_encode(const kv_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t *out, size_t cap, size_t *n_out);

/* The bytes token `tok` stands for when printed after token `prev`
 * (byte tokens give their byte, U+2581 gives ' ', and a leading space
 * is dropped right after BOS as SentencePiece does; byte-level BPE tokens
 * give the bytes their code points stand for, user-defined ones their
 * text, and nothing depends on prev). Control tokens give "".
 * The result is valid until the tokenizer is freed. */
const char *kv_tokenizer_piece(const kv_tokenizer *t, int32_t prev, int32_t tok, size_t *len);

/* The id of the vocabulary entry spelled exactly `text` (a raw entry, as
 * kv_tokenizer_token_text gives it: "<CL>", "\xe2\x96\x81the", "\xc4\xa0the"), or -1. */
int32_t kv_tokenizer_find(const kv_tokenizer *t, const char *text);

/* The tokens that end generation: EOS, the GGUF's end-of-turn and
 * end-of-message ids (tokenizer.ggml.eot_token_id / eom_token_id) when it
 * has them, and each of <|eot_id|>, <|eom_id|>, <|end_of_text|>,
 * <|im_end|>, <|endoftext|>, <|end|>, <end_of_turn> that is one token of
 * the vocabulary (the texts llama.cpp also ends a turn at). Writes at most
 * cap distinct ids, in that order, and returns how many there are. */
int kv_tokenizer_end_tokens(const kv_tokenizer *t, int32_t *ids, int cap);

/* The raw vocabulary entry of `tok` (for listings and tests). */
const char *kv_tokenizer_token_text(const kv_tokenizer *t, int32_t tok, size_t *len);
float kv_tokenizer_token_score(const kv_tokenizer *t, int32_t tok);

#endif
