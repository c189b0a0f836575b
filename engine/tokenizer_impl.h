/* tokenizer_impl.h - what tokenizer.c (SentencePiece, the public entry
 * points) and tokenizer_bpe.c (byte-level BPE) share. Not a public header:
 * everything outside engine/tokenizer*.c uses tokenizer.h. */
#ifndef KV_TOKENIZER_IMPL_H
#define KV_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

enum tok_type { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

typedef struct kv_bpe kv_bpe; /* tokenizer_bpe.c */

struct kv_tokenizer {
    int32_t n;
    char **text;      /* [n] raw vocabulary entries, NUL-terminated (U+2581 for spaces in SentencePiece ones) */
    uint32_t *len;    /* [n] */
    float *score;     /* [n] */
    uint8_t *type;    /* [n] enum tok_type */
    char **out;       /* [n] what the token prints as (bytes for byte tokens, ' ' for U+2581) */
    uint32_t *out_len;
    int32_t byte_tok[256]; /* id of <0xNN>, or -1 */
    int32_t bos, eos, unk;
    int add_space_prefix;
    int32_t *table;   /* open addressing: token ids, -1 empty */
    uint32_t table_mask;
    kv_bpe *bpe;      /* non-NULL: a byte-level BPE vocabulary (tokenizer_bpe.c encodes and prints it) */
    int32_t eot, eom; /* GGUF end-of-turn / end-of-message ids, -1 if none (kv_tokenizer_end_tokens) */
};

/* tokenizer.c */
kv_tokenizer *kv_tok_alloc(int32_t n);
int32_t kv_tok_lookup(const kv_tokenizer *t, const char *s, size_t n);
int kv_tok_index(kv_tokenizer *t); /* builds t->table; the first of duplicate entries wins */

/* tokenizer_bpe.c */
int kv_bpe_from_gguf(const kv_gguf *g, kv_tokenizer **out);
int kv_bpe_load_hf(const char *encoder_json, const char *vocab_bpe, kv_tokenizer **out);
void kv_bpe_free(kv_bpe *b);
/* Appends the ids of text[0..len) (counting past cap, as kv_tokenizer_encode). */
int kv_bpe_encode(const kv_tokenizer *t, const char *text, size_t len, int32_t *out, size_t cap, size_t *n_out);

#endif
