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
    int add_bos;      /* the vocabulary asks for BOS in front (-1: it does not say) */
    int32_t *table;   /* open addressing: token ids, -1 empty */
    uint32_t table_mask;
    kv_bpe *bpe;      /* non-NULL: a byte-level BPE vocabulary (tokenizer_bpe.c encodes and prints it) */
    int32_t eot, eom; /* GGUF end-of-turn / end-of-message ids, -1 if none (kv_tokenizer_end_tokens) */
    uint8_t mark_join[32]; /* SentencePiece: bytes some token has right before a U+2581 (kv_tok_mark_joins) */
    /* control, user-defined and unknown tokens, matched whole in the text
     * before BPE (by first byte, longest first), as llama.cpp's special-token
     * partition does: kv_tok_special_index */
    int32_t *special;
    int32_t special_at[257];
};

/* tokenizer.c */
kv_tokenizer *kv_tok_alloc(int32_t n);
/* The special-token index (t->special, t->special_at) of a loaded vocabulary,
 * and the longest special token text[0..len) starts with (-1: none). */
int kv_tok_special_index(kv_tokenizer *t);
int32_t kv_tok_special_at(const kv_tokenizer *t, const char *text, size_t len);
/* Walks text: each stretch between special tokens to on_text (a non-zero
 * return stops the walk and is returned), each special token to on_special. */
typedef int (*kv_frag_fn)(void *ctx, const char *s, size_t n);
typedef void (*kv_special_fn)(void *ctx, int32_t id);
int kv_tok_partition(const kv_tokenizer *t, const char *text, size_t len, kv_frag_fn on_text,
                     kv_special_fn on_special, void *ctx);
int32_t kv_tok_lookup(const kv_tokenizer *t, const char *s, size_t n);
int kv_tok_index(kv_tokenizer *t); /* builds t->table; the first of duplicate entries wins */
/* The set (a bitmap) of bytes that some token has right before a U+2581.
 * Where the byte before a U+2581 in the text is not in it, no token, and
 * so no merge, spans that place: SentencePiece-style text can be split
 * there into stretches that merge alone to the same ids. */
void kv_tok_mark_joins(kv_tokenizer *t);
/* Whether s[i..) starts with a U+2581 at which text may be split so. */
int kv_tok_mark_splits(const kv_tokenizer *t, const char *s, size_t n, size_t i);

/* tokenizer_pre.c: the pre-tokenizer table, llama.cpp's regexes for each
 * tokenizer.ggml.pre name, applied in sequence. */
typedef struct kv_pre_def {
    const char *names[4];   /* tokenizer.ggml.pre names; names[0] is the one written */
    const char *hf_regex;   /* the Split pattern of the models' tokenizer.json, or NULL */
    const char *regex[6];   /* llama.cpp's regexes, applied in sequence */
    int ignore_merges;      /* a word that is itself a token is not merged (Llama 3) */
    int nfc;                /* the models' tokenizer.json normalises to NFC first */
} kv_pre_def;
typedef struct kv_pre kv_pre;
typedef int (*kv_word_fn)(void *ctx, const char *s, size_t n);
const kv_pre_def *kv_pre_find(const char *name);       /* by tokenizer.ggml.pre name, or NULL */
const kv_pre_def *kv_pre_find_hf(const char *pattern); /* by tokenizer.json Split pattern, or NULL */
void kv_pre_names(char *buf, size_t cap);              /* "gpt-2, mpt, ..." for messages */
int kv_pre_new(const kv_pre_def *def, kv_pre **out);
void kv_pre_free(kv_pre *p);
const char *kv_pre_name(const kv_pre *p);
void *kv_pre_match_data(void); /* scratch for kv_pre_split, one per thread; NULL if out of memory */
void kv_pre_match_data_free(void *md);
/* Hands each word of s[0..n) to fn, in order; a non-zero return stops it. */
int kv_pre_split(const kv_pre *p, void *md, const char *s, size_t n, kv_word_fn fn, void *ctx);
/* NFC of s[0..n) into *buf (grown as needed, *cap its size), *out_n bytes. */
int kv_nfc(const char *s, size_t n, char **buf, size_t *cap, size_t *out_n);

/* tokenizer_bpe.c */
/* How a vocabulary's text becomes symbols before merging. */
typedef struct kv_bpe_opts {
    const char *pre;   /* pre-tokenizer name (kv_pre_find), or NULL: each fragment is one word */
    int byte_level;    /* 1: GPT-2's byte -> code point symbols; 0: UTF-8 characters over U+2581 (SentencePiece-style) */
    int ignore_merges; /* a word that is itself a token is not merged */
    int nfc;           /* normalise each fragment to NFC first */
    int prepend_space; /* SentencePiece-style: U+2581 in front of each fragment */
    int byte_fallback; /* SentencePiece-style: a character with no token becomes its <0xNN> tokens */
    int fuse_unk;      /* adjacent unknown symbols become one <unk> */
} kv_bpe_opts;
/* One merge, "left right" split. */
typedef struct kv_merge_str { const char *l, *r; size_t ll, rl; } kv_merge_str;
/* "left right" split at the first space after the first byte, as llama.cpp
 * reads GGUF merges (r is NULL when there is no such space). */
kv_merge_str kv_merge_split(const char *m, size_t len);
int kv_bpe_alloc(int32_t n, kv_tokenizer **out);
int kv_bpe_set_token(kv_tokenizer *t, int32_t i, const char *s, size_t len);
/* Everything after the tokens, types, bos and eos are set: the lookup
 * table, printed forms, merges, special-token index and pre-tokenizer.
 * Messages name path and merge i as "merges_key[i]" (or, with
 * merges_key NULL, "line lines[i]"). */
int kv_bpe_build(kv_tokenizer *t, const char *path, const char *merges_key,
                 const uint64_t *lines, const kv_bpe_opts *o, const kv_merge_str *m, uint64_t nm);
int kv_bpe_from_gguf(const kv_gguf *g, kv_tokenizer **out);
int kv_bpe_load_hf(const char *encoder_json, const char *vocab_bpe, kv_tokenizer **out);
void kv_bpe_free(kv_bpe *b);
/* Appends the ids of text[0..len) (counting past cap, as kv_tokenizer_encode). */
int kv_bpe_encode(const kv_tokenizer *t, const char *text, size_t len, int32_t *out, size_t cap, size_t *n_out);
const char *kv_bpe_pre(const kv_bpe *b);
int kv_bpe_byte_level(const kv_bpe *b);
int kv_bpe_nfc(const kv_bpe *b);
int kv_bpe_ignore_merges(const kv_bpe *b);
int64_t kv_bpe_n_merges(const kv_bpe *b);
void kv_bpe_merge(const kv_bpe *b, int64_t i, int32_t *l, int32_t *r);

/* tokenizer_hf.c: a folder holding a Hugging Face tokenizer.json (and
 * tokenizer_config.json). */
int kv_tokenizer_load_hf_json(const char *dir, kv_tokenizer **out);

#endif
