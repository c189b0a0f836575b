/* tokenizer.h - SentencePiece-style tokenizers (llama2.c tokenizer files and
 * GGUF "llama" vocabularies).
 *
 * Encoding follows SentencePiece's BPE model as llama.cpp's SPM tokenizer
 * runs it: a leading space is added (add_space_prefix), spaces become U+2581,
 * the text is split into UTF-8 characters, adjacent pieces are merged
 * best-score-first while the merged piece is in the vocabulary, and a
 * character with no token is emitted as its UTF-8 bytes through the <0xNN>
 * byte-fallback tokens. */
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

/* From the tokenizer.ggml.* keys of an opened GGUF file (model "llama").
 * KV_EUNSUPPORTED names any other tokenizer model. */
int kv_tokenizer_from_gguf(const kv_gguf *g, kv_tokenizer **out);

void kv_tokenizer_free(kv_tokenizer *t);

int32_t kv_tokenizer_n_vocab(const kv_tokenizer *t);
int32_t kv_tokenizer_bos(const kv_tokenizer *t); /* -1 if none */
int32_t kv_tokenizer_eos(const kv_tokenizer *t); /* -1 if none */

/* Encodes text[0..len). Writes at most `cap` ids to out and sets *n_out to
 * the number the full encoding has (so a caller can retry with a larger
 * buffer when *n_out > cap). add_bos prepends the BOS id. */
int kv_tokenizer_encode(const kv_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t *out, size_t cap, size_t *n_out);

/* The bytes token `tok` stands for when printed after token `prev`
 * (byte tokens give their byte, U+2581 gives ' ', and a leading space
 * is dropped right after BOS as SentencePiece does). Control tokens give "".
 * The result is valid until the tokenizer is freed. */
const char *kv_tokenizer_piece(const kv_tokenizer *t, int32_t prev, int32_t tok, size_t *len);

/* The id of the vocabulary entry spelled exactly `text` (a raw entry, as
 * kv_tokenizer_token_text gives it: "<CL>", "\xe2\x96\x81the"), or -1. */
int32_t kv_tokenizer_find(const kv_tokenizer *t, const char *text);

/* The raw vocabulary entry of `tok` (for listings and tests). */
const char *kv_tokenizer_token_text(const kv_tokenizer *t, int32_t tok, size_t *len);
float kv_tokenizer_token_score(const kv_tokenizer *t, int32_t tok);

#endif
