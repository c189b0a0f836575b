/* tokenizer.c - SentencePiece-style BPE tokenizer, and the public entry
 * points for both kinds (byte-level BPE: tokenizer_bpe.c). See tokenizer.h.
 *
 * Pieces are held as SentencePiece writes them (U+2581 for a space);
 * llama2.c vocabularies, which store ' ', are converted on load so both
 * sources encode identically. Encoding keeps a doubly linked list of
 * symbols and a max-heap of candidate merges (highest score first, then
 * leftmost), so a document of n characters costs O(n log n). */
#define _POSIX_C_SOURCE 200809L
#include "tokenizer.h"

#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "tokenizer_impl.h"

#define SPACE_MARK "\xe2\x96\x81" /* U+2581 */

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

int32_t kv_tok_lookup(const kv_tokenizer *t, const char *s, size_t n) {
    for (uint32_t i = hash_bytes(s, n) & t->table_mask;; i = (i + 1) & t->table_mask) {
        int32_t id = t->table[i];
        if (id < 0) return -1;
        if (t->len[id] == n && memcmp(t->text[id], s, n) == 0) return id;
    }
}

int32_t kv_tokenizer_find(const kv_tokenizer *t, const char *text) { return kv_tok_lookup(t, text, strlen(text)); }

void kv_tokenizer_free(kv_tokenizer *t) {
    if (!t) return;
    for (int32_t i = 0; t->text && i < t->n; i++) free(t->text[i]);
    for (int32_t i = 0; t->out && i < t->n; i++) free(t->out[i]);
    free(t->text);
    free(t->out);
    free(t->len);
    free(t->out_len);
    free(t->score);
    free(t->type);
    free(t->table);
    free(t->special);
    kv_bpe_free(t->bpe);
    free(t);
}

kv_tokenizer *kv_tok_alloc(int32_t n) {
    kv_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n = n;
    t->text = calloc((size_t)n, sizeof *t->text);
    t->out = calloc((size_t)n, sizeof *t->out);
    t->len = calloc((size_t)n, sizeof *t->len);
    t->out_len = calloc((size_t)n, sizeof *t->out_len);
    t->score = calloc((size_t)n, sizeof *t->score);
    t->type = calloc((size_t)n, sizeof *t->type);
    t->bos = t->eos = t->unk = t->eot = t->eom = -1;
    t->add_space_prefix = 1;
    t->add_bos = -1;
    if (!t->text || !t->out || !t->len || !t->out_len || !t->score || !t->type) {
        kv_tokenizer_free(t);
        return NULL;
    }
    return t;
}

/* Stores piece i (taking ownership of s). */
static void set_piece(kv_tokenizer *t, int32_t i, char *s, size_t n, float score) {
    t->text[i] = s;
    t->len[i] = (uint32_t)n;
    t->score[i] = score;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Exactly two hex digits: strtoul would also take "-3", " 3" or "+3" and
 * give a value outside 0..255 (found by tests/fuzz/fuzz_vocab). */
static int is_byte_piece(const char *s, size_t n, int *byte) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return 0;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    if (hi < 0 || lo < 0) return 0;
    *byte = hi * 16 + lo;
    return 1;
}

int kv_tok_index(kv_tokenizer *t) {
    uint32_t cap = 1;
    while (cap < (uint32_t)t->n * 2u + 2u) cap <<= 1;
    t->table = malloc(cap * sizeof *t->table);
    if (!t->table) return kv_errorf(KV_ENOMEM, "out of memory");
    memset(t->table, 0xff, cap * sizeof *t->table);
    t->table_mask = cap - 1;
    for (int32_t i = 0; i < t->n; i++) {
        /* first occurrence wins for duplicate pieces */
        if (kv_tok_lookup(t, t->text[i], t->len[i]) < 0) {
            uint32_t h = hash_bytes(t->text[i], t->len[i]) & t->table_mask;
            while (t->table[h] >= 0) h = (h + 1) & t->table_mask;
            t->table[h] = i;
        }
    }
    return KV_OK;
}

/* Control, user-defined and unknown tokens are matched whole in the text
 * (a chat template's <|user|>, [INST], <start_of_turn>; Hugging Face's
 * added tokens), as llama.cpp partitions text before either kind of BPE
 * runs: indexed by first byte, longest first (so <|im_end|> wins over
 * <|im|>), then by id. */
static int is_special(const kv_tokenizer *t, int32_t i) {
    return (t->type[i] == TT_CONTROL || t->type[i] == TT_USER || t->type[i] == TT_UNKNOWN) && t->len[i] > 0;
}

typedef struct spec { uint8_t first; uint32_t len; int32_t id; } spec;

static int spec_cmp(const void *pa, const void *pb) {
    const spec *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

int kv_tok_special_index(kv_tokenizer *t) {
    int32_t k = 0;
    for (int32_t i = 0; i < t->n; i++) k += is_special(t, i);
    free(t->special);
    t->special = malloc(((size_t)k + 1) * sizeof *t->special);
    spec *sp = malloc(((size_t)k + 1) * sizeof *sp);
    if (!t->special || !sp) {
        free(sp);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    k = 0;
    for (int32_t i = 0; i < t->n; i++)
        if (is_special(t, i)) sp[k++] = (spec){(uint8_t)t->text[i][0], t->len[i], i};
    qsort(sp, (size_t)k, sizeof *sp, spec_cmp);
    for (int32_t j = 0; j < k; j++) t->special[j] = sp[j].id;
    free(sp);
    for (int c = 0, j = 0; c <= 256; c++) {
        while (j < k && (uint8_t)t->text[t->special[j]][0] < c) j++;
        t->special_at[c] = c == 256 ? k : j;
    }
    return KV_OK;
}

int kv_tok_partition(const kv_tokenizer *t, const char *text, size_t len, kv_frag_fn on_text,
                     kv_special_fn on_special, void *ctx) {
    int rc = KV_OK;
    size_t frag = 0;
    for (size_t i = 0; i < len && !rc;) {
        int32_t sp = kv_tok_special_at(t, text + i, len - i);
        if (sp < 0) {
            i++;
            continue;
        }
        if (i > frag) rc = on_text(ctx, text + frag, i - frag);
        on_special(ctx, sp);
        i += t->len[sp];
        frag = i;
    }
    if (!rc && len > frag) rc = on_text(ctx, text + frag, len - frag);
    return rc;
}

int32_t kv_tok_special_at(const kv_tokenizer *t, const char *text, size_t len) {
    uint8_t c = (uint8_t)text[0];
    if (!t->special) return -1;
    for (int32_t j = t->special_at[c]; j < t->special_at[c + 1]; j++) {
        int32_t id = t->special[j];
        if (t->len[id] <= len && memcmp(text, t->text[id], t->len[id]) == 0) return id;
    }
    return -1;
}

void kv_tok_mark_joins(kv_tokenizer *t) {
    memset(t->mark_join, 0, sizeof t->mark_join);
    for (int32_t i = 0; i < t->n; i++)
        for (uint32_t j = 1; j + 3 <= t->len[i]; j++)
            if (!memcmp(t->text[i] + j, SPACE_MARK, 3)) {
                uint8_t c = (uint8_t)t->text[i][j - 1];
                t->mark_join[c >> 3] |= (uint8_t)(1u << (c & 7));
            }
}

int kv_tok_mark_splits(const kv_tokenizer *t, const char *s, size_t n, size_t i) {
    if (i == 0 || i + 3 > n || memcmp(s + i, SPACE_MARK, 3)) return 0;
    uint8_t c = (uint8_t)s[i - 1];
    return !(t->mark_join[c >> 3] >> (c & 7) & 1);
}

/* Builds the lookup table and the printed form of each token. */
static int tok_finish(kv_tokenizer *t, const char *path) {
    int rc = kv_tok_index(t);
    if (rc) return rc;
    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;
    for (int32_t i = 0; i < t->n; i++) {
        int byte;
        if (t->type[i] == TT_BYTE && is_byte_piece(t->text[i], t->len[i], &byte)) {
            if (t->byte_tok[byte] < 0) t->byte_tok[byte] = i;
            t->out[i] = malloc(2);
            if (!t->out[i]) return kv_errorf(KV_ENOMEM, "out of memory");
            t->out[i][0] = (char)byte;
            t->out[i][1] = 0;
            t->out_len[i] = 1;
            continue;
        }
        if (t->type[i] == TT_CONTROL || t->type[i] == TT_UNKNOWN || t->type[i] == TT_UNUSED) {
            t->out[i] = calloc(1, 1);
            if (!t->out[i]) return kv_errorf(KV_ENOMEM, "out of memory");
            continue;
        }
        /* U+2581 prints as a space */
        char *o = malloc(t->len[i] + 1);
        if (!o) return kv_errorf(KV_ENOMEM, "out of memory");
        size_t k = 0;
        for (size_t j = 0; j < t->len[i];) {
            if (t->len[i] - j >= 3 && memcmp(t->text[i] + j, SPACE_MARK, 3) == 0) {
                o[k++] = ' ';
                j += 3;
            } else {
                o[k++] = t->text[i][j++];
            }
        }
        o[k] = 0;
        t->out[i] = o;
        t->out_len[i] = (uint32_t)k;
    }
    (void)path;
    kv_tok_mark_joins(t);
    return kv_tok_special_index(t);
}

int kv_tokenizer_load_llama2c(const char *path, int32_t vocab_size, kv_tokenizer **out) {
    *out = NULL;
    if (vocab_size < 1) return kv_errorf(KV_EINVAL, "%s: vocabulary size %d", path, vocab_size);
    FILE *f = fopen(path, "rb");
    if (!f) return kv_errorf(KV_EIO, "%s: cannot open: %s", path, strerror(errno));
    kv_tokenizer *t = kv_tok_alloc(vocab_size);
    int rc = KV_OK;
    long off = 0;
    int32_t max_len;
    if (!t) {
        rc = kv_errorf(KV_ENOMEM, "out of memory");
        goto done;
    }
    if (fread(&max_len, 4, 1, f) != 1) {
        rc = kv_errorf(KV_EFORMAT, "%s: offset 0: expected the int32 max_token_length", path);
        goto done;
    }
    off = 4;
    for (int32_t i = 0; i < vocab_size; i++) {
        float score;
        int32_t len;
        if (fread(&score, 4, 1, f) != 1 || fread(&len, 4, 1, f) != 1) {
            rc = kv_errorf(KV_EFORMAT, "%s: offset %ld: expected the score and length of token %d of %d", path, off,
                           i, vocab_size);
            goto done;
        }
        if (len < 0 || len > 65536) {
            rc = kv_errorf(KV_EFORMAT, "%s: offset %ld: token %d: expected a length in 0..65536, got %d", path,
                           off + 4, i, len);
            goto done;
        }
        off += 8;
        char *raw = malloc((size_t)len + 1);
        if (!raw) {
            rc = kv_errorf(KV_ENOMEM, "out of memory");
            goto done;
        }
        if (fread(raw, 1, (size_t)len, f) != (size_t)len) {
            free(raw);
            rc = kv_errorf(KV_EFORMAT, "%s: offset %ld: expected %d bytes of token %d, the file ends first", path, off,
                           len, i);
            goto done;
        }
        off += len;
        raw[len] = 0;
        /* llama2.c's export wrote BOS/EOS as "\n<s>\n" / "\n</s>\n" and ' ' for U+2581 */
        const char *fixed = i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : NULL;
        char *s;
        size_t n;
        if (fixed) {
            free(raw);
            s = strdup(fixed);
            n = s ? strlen(s) : 0;
        } else {
            size_t spaces = 0;
            for (int32_t j = 0; j < len; j++) spaces += raw[j] == ' ';
            s = malloc((size_t)len + 2 * spaces + 1);
            n = 0;
            if (s)
                for (int32_t j = 0; j < len; j++) {
                    if (raw[j] == ' ') {
                        memcpy(s + n, SPACE_MARK, 3);
                        n += 3;
                    } else {
                        s[n++] = raw[j];
                    }
                }
            if (s) s[n] = 0;
            free(raw);
        }
        if (!s) {
            rc = kv_errorf(KV_ENOMEM, "out of memory");
            goto done;
        }
        set_piece(t, i, s, n, score);
        int b;
        t->type[i] = i == 0 ? TT_UNKNOWN : i <= 2 ? TT_CONTROL : is_byte_piece(s, n, &b) ? TT_BYTE : TT_NORMAL;
    }
    t->unk = 0;
    t->bos = vocab_size > 1 ? 1 : -1;
    t->eos = vocab_size > 2 ? 2 : -1;
    rc = tok_finish(t, path);
done:
    fclose(f);
    if (rc) kv_tokenizer_free(t);
    else *out = t;
    return rc;
}

/* The vocabulary of a GGUF file, either kind (kv_tokenizer_from_gguf adds the end ids). */
static int gguf_vocab(const kv_gguf *g, kv_tokenizer **out) {
    *out = NULL;
    const char *path = kv_gguf_path(g), *model;
    size_t mlen;
    int rc = kv_gguf_get_str(g, "tokenizer.ggml.model", &model, &mlen);
    if (rc) return rc == KV_ENOTFOUND ? kv_errorf(KV_EFORMAT, "%s: missing metadata key 'tokenizer.ggml.model'", path) : rc;
    if (mlen == 4 && memcmp(model, "gpt2", 4) == 0) return kv_bpe_from_gguf(g, out);
    if (mlen != 5 || memcmp(model, "llama", 5) != 0)
        return kv_errorf(KV_EUNSUPPORTED, "%s: tokenizer model '%.*s' is not supported (supported: llama, gpt2)", path,
                         (int)(mlen > 32 ? 32 : mlen), model);
    kv_gguf_type et;
    uint64_t n, ns = 0, nt = 0;
    if ((rc = kv_gguf_get_arr_info(g, "tokenizer.ggml.tokens", &et, &n))) return rc;
    if (et != KV_GGUF_STRING || n == 0 || n > (1u << 22))
        return kv_errorf(KV_EFORMAT, "%s: tokenizer.ggml.tokens: expected 1..2^22 strings", path);
    const void *scores = NULL, *types = NULL;
    if (kv_gguf_get_arr_info(g, "tokenizer.ggml.scores", &et, &ns) == KV_OK) {
        if (et != KV_GGUF_F32 || ns != n)
            return kv_errorf(KV_EFORMAT, "%s: tokenizer.ggml.scores: expected %llu f32 values", path, (unsigned long long)n);
        kv_gguf_get_arr_data(g, "tokenizer.ggml.scores", &scores);
    }
    if (kv_gguf_get_arr_info(g, "tokenizer.ggml.token_type", &et, &nt) == KV_OK) {
        if ((et != KV_GGUF_I32 && et != KV_GGUF_U32) || nt != n)
            return kv_errorf(KV_EFORMAT, "%s: tokenizer.ggml.token_type: expected %llu i32 values", path,
                             (unsigned long long)n);
        kv_gguf_get_arr_data(g, "tokenizer.ggml.token_type", &types);
    }
    kv_tokenizer *t = kv_tok_alloc((int32_t)n);
    if (!t) return kv_errorf(KV_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if ((rc = kv_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &len))) goto fail;
        char *c = malloc(len + 1);
        if (!c) {
            rc = kv_errorf(KV_ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(c, s, len);
        c[len] = 0;
        float sc = 0;
        if (scores) memcpy(&sc, (const char *)scores + 4 * i, 4);
        set_piece(t, (int32_t)i, c, len, sc);
        int32_t ty = TT_NORMAL;
        int b;
        if (types) memcpy(&ty, (const char *)types + 4 * i, 4);
        else if (is_byte_piece(c, len, &b)) ty = TT_BYTE;
        t->type[i] = (uint8_t)(ty >= 1 && ty <= 6 ? ty : TT_NORMAL);
    }
    int64_t v;
    t->bos = kv_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) == KV_OK && v >= 0 && v < (int64_t)n ? (int32_t)v : -1;
    t->eos = kv_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) == KV_OK && v >= 0 && v < (int64_t)n ? (int32_t)v : -1;
    t->unk = kv_gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &v) == KV_OK && v >= 0 && v < (int64_t)n ? (int32_t)v : -1;
    if (t->unk < 0)
        for (uint64_t i = 0; i < n; i++)
            if (t->type[i] == TT_UNKNOWN) {
                t->unk = (int32_t)i;
                break;
            }
    int flag;
    if (kv_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &flag) == KV_OK) t->add_space_prefix = flag;
    if (kv_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &flag) == KV_OK) t->add_bos = flag;
    if ((rc = tok_finish(t, path))) goto fail;
    *out = t;
    return KV_OK;
fail:
    kv_tokenizer_free(t);
    return rc;
}

/* A GGUF token id key as an id of t, or -1 when absent or out of range. */
static int32_t gguf_token_id(const kv_gguf *g, const char *key, const kv_tokenizer *t) {
    int64_t v;
    return kv_gguf_get_int(g, key, &v) == KV_OK && v >= 0 && v < t->n ? (int32_t)v : -1;
}

int kv_tokenizer_from_gguf(const kv_gguf *g, kv_tokenizer **out) {
    int rc = gguf_vocab(g, out);
    if (rc) return rc;
    (*out)->eot = gguf_token_id(g, "tokenizer.ggml.eot_token_id", *out);
    (*out)->eom = gguf_token_id(g, "tokenizer.ggml.eom_token_id", *out);
    return KV_OK;
}

/* The end-of-turn texts llama.cpp also stops at (llama-vocab.cpp's
 * end-of-generation set) when the vocabulary holds them as one token. */
static const char *const END_TEXTS[] = {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>",
                                        "<|endoftext|>", "<|end|>", "<end_of_turn>"};

int kv_tokenizer_end_tokens(const kv_tokenizer *t, int32_t *ids, int cap) {
    int32_t cand[3 + sizeof END_TEXTS / sizeof END_TEXTS[0]];
    int nc = 0, n = 0;
    cand[nc++] = t->eos;
    cand[nc++] = t->eot;
    cand[nc++] = t->eom;
    for (size_t i = 0; i < sizeof END_TEXTS / sizeof END_TEXTS[0]; i++) cand[nc++] = kv_tokenizer_find(t, END_TEXTS[i]);
    for (int i = 0; i < nc; i++) {
        int seen = cand[i] < 0;
        for (int k = 0; k < i && !seen; k++) seen = cand[k] == cand[i];
        if (seen) continue;
        if (n < cap) ids[n] = cand[i];
        n++;
    }
    return n;
}

int kv_tokenizer_load_gpt2(const char *encoder_json, const char *vocab_bpe, kv_tokenizer **out) {
    return kv_bpe_load_hf(encoder_json, vocab_bpe, out);
}

int kv_tokenizer_load(const char *path, int32_t vocab_size, kv_tokenizer **out) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        char ej[4096], vb[4096], tj[4096];
        snprintf(tj, sizeof tj, "%s/tokenizer.json", path);
        if (access(tj, F_OK) == 0) return kv_tokenizer_load_hf_json(path, out);
        snprintf(ej, sizeof ej, "%s/encoder.json", path);
        snprintf(vb, sizeof vb, "%s/vocab.bpe", path);
        return kv_bpe_load_hf(ej, vb, out);
    }
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (f) {
        size_t got = fread(magic, 1, 4, f);
        fclose(f);
        if (got == 4 && memcmp(magic, "GGUF", 4) == 0) {
            kv_gguf *g;
            int rc = kv_gguf_open(path, &g);
            if (rc) return rc;
            if (kv_gguf_find_key(g, "tokenizer.ggml.tokens") < 0) {
                kv_gguf_close(g);
                return kv_errorf(KV_EFORMAT, "%s: a GGUF file without a tokenizer (no tokenizer.ggml.tokens)", path);
            }
            rc = kv_tokenizer_from_gguf(g, out);
            kv_gguf_close(g);
            return rc;
        }
    }
    return kv_tokenizer_load_llama2c(path, vocab_size, out);
}

int32_t kv_tokenizer_n_vocab(const kv_tokenizer *t) { return t->n; }
int32_t kv_tokenizer_bos(const kv_tokenizer *t) { return t->bos; }
int32_t kv_tokenizer_eos(const kv_tokenizer *t) { return t->eos; }
int kv_tokenizer_add_bos(const kv_tokenizer *t) { return t->add_bos; }
int kv_tokenizer_add_space_prefix(const kv_tokenizer *t) { return t->add_space_prefix; }
const char *kv_tokenizer_pre(const kv_tokenizer *t) { return t->bpe ? kv_bpe_pre(t->bpe) : NULL; }
int kv_tokenizer_byte_level(const kv_tokenizer *t) { return t->bpe && kv_bpe_byte_level(t->bpe); }
int kv_tokenizer_nfc(const kv_tokenizer *t) { return t->bpe && kv_bpe_nfc(t->bpe); }
int kv_tokenizer_ignore_merges(const kv_tokenizer *t) { return t->bpe && kv_bpe_ignore_merges(t->bpe); }
int kv_tokenizer_token_type(const kv_tokenizer *t, int32_t tok) { return tok >= 0 && tok < t->n ? t->type[tok] : 0; }
int64_t kv_tokenizer_n_merges(const kv_tokenizer *t) { return t->bpe ? kv_bpe_n_merges(t->bpe) : 0; }
int kv_tokenizer_merge(const kv_tokenizer *t, int64_t i, int32_t *left, int32_t *right) {
    if (!t->bpe || i < 0 || i >= kv_bpe_n_merges(t->bpe)) return KV_EINVAL;
    kv_bpe_merge(t->bpe, i, left, right);
    return KV_OK;
}

const char *kv_tokenizer_token_text(const kv_tokenizer *t, int32_t tok, size_t *len) {
    if (tok < 0 || tok >= t->n) {
        *len = 0;
        return "";
    }
    *len = t->len[tok];
    return t->text[tok];
}

float kv_tokenizer_token_score(const kv_tokenizer *t, int32_t tok) {
    return tok >= 0 && tok < t->n ? t->score[tok] : 0.0f;
}

const char *kv_tokenizer_piece(const kv_tokenizer *t, int32_t prev, int32_t tok, size_t *len) {
    if (tok < 0 || tok >= t->n) {
        *len = 0;
        return "";
    }
    const char *s = t->out[tok];
    *len = t->out_len[tok];
    /* SentencePiece drops the space that starts the first word */
    if ((!t->bpe || t->add_space_prefix) && prev == t->bos && *len > 0 && s[0] == ' ' && t->type[tok] != TT_BYTE) {
        s++;
        (*len)--;
    }
    return s;
}

/* ------------------------------------------------------------ encoding */

typedef struct sym { int32_t prev, next; size_t off, n; } sym;
typedef struct bigram { float score; int32_t left, right; size_t n; } bigram;
typedef struct heap { bigram *b; size_t n, cap; } heap;

/* a outranks b: higher score, then the leftmost */
static int outranks(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(heap *h, bigram x) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        bigram *b = realloc(h->b, cap * sizeof *b);
        if (!b) return -1;
        h->b = b;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0 && outranks(&x, &h->b[(i - 1) / 2])) {
        h->b[i] = h->b[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->b[i] = x;
    return 0;
}

static bigram heap_pop(heap *h) {
    bigram top = h->b[0], last = h->b[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const bigram *best = &last;
        if (l < h->n && outranks(&h->b[l], best)) m = l, best = &h->b[l];
        if (r < h->n && outranks(&h->b[r], best)) m = r;
        if (m == i) break;
        h->b[i] = h->b[m];
        i = m;
    }
    if (h->n) h->b[i] = last;
    return top;
}

static int try_bigram(const kv_tokenizer *t, const char *s, const sym *sy, heap *h, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    size_t n = sy[l].n + sy[r].n;
    int32_t id = kv_tok_lookup(t, s + sy[l].off, n);
    if (id < 0) return 0;
    bigram b = {t->score[id], l, r, n};
    return heap_push(h, b);
}

static size_t utf8_len(uint8_t c) {
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

/* Appends id to out (counting past cap). */
static void emit(int32_t *out, size_t cap, size_t *n, int32_t id) {
    if (*n < cap) out[*n] = id;
    (*n)++;
}

/* Best-score-first merging of s[0..n) (normalised text, one symbol per
 * UTF-8 character to start), then its ids (byte fallback for what has no
 * token). */
static int spm_merge(const kv_tokenizer *t, const char *s, size_t n, sym *sy, heap *h, int32_t *out, size_t cap,
                     size_t *n_out) {
    /* one symbol per UTF-8 character (a stray byte is a character of its own) */
    int32_t ns = 0;
    for (size_t off = 0; off < n;) {
        size_t cl = utf8_len((uint8_t)s[off]);
        if (cl > n - off) cl = n - off;
        sy[ns] = (sym){ns - 1, ns + 1, off, cl};
        ns++;
        off += cl;
    }
    sy[ns - 1].next = -1;
    h->n = 0;
    int rc = KV_OK;
    for (int32_t i = 1; i < ns && !rc; i++) rc = try_bigram(t, s, sy, h, i - 1, i);
    while (h->n && !rc) {
        bigram b = heap_pop(h);
        sym *l = &sy[b.left], *r = &sy[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.n) continue; /* stale: one side merged since */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sy[r->next].prev = b.left;
        rc = try_bigram(t, s, sy, h, l->prev, b.left);
        if (!rc) rc = try_bigram(t, s, sy, h, b.left, l->next);
    }
    if (rc) return kv_errorf(KV_ENOMEM, "out of memory tokenizing %zu bytes", n);
    for (int32_t i = 0; i >= 0; i = sy[i].next) {
        int32_t id = kv_tok_lookup(t, s + sy[i].off, sy[i].n);
        if (id >= 0) {
            emit(out, cap, n_out, id);
            continue;
        }
        for (size_t j = 0; j < sy[i].n; j++) { /* byte fallback */
            int32_t bt = t->byte_tok[(uint8_t)s[sy[i].off + j]];
            emit(out, cap, n_out, bt >= 0 ? bt : t->unk >= 0 ? t->unk : 0);
        }
    }
    return KV_OK;
}

/* SentencePiece-style BPE of one fragment (no special token in it); with
 * `prefix`, a space in front (the vocabulary's dummy prefix). Split at each
 * U+2581 that no token spans (kv_tok_mark_splits): each stretch merges
 * alone, to the same ids, with a small heap. */
static int spm_fragment(const kv_tokenizer *t, const char *text, size_t len, int prefix, int32_t *out, size_t cap,
                        size_t *n_out) {
    if (len == 0) return KV_OK;
    /* normalise: optional leading space, then every ' ' becomes U+2581 */
    size_t spaces = 0;
    for (size_t i = 0; i < len; i++) spaces += text[i] == ' ';
    size_t n = len + 2 * spaces + (prefix ? 3 : 0); /* U+2581 is 3 bytes */
    char *s = malloc(n + 1);
    sym *sy = malloc((n + 1) * sizeof *sy);
    heap h = {0};
    if (!s || !sy) {
        free(s);
        free(sy);
        return kv_errorf(KV_ENOMEM, "out of memory tokenizing %zu bytes", len);
    }
    size_t k = 0;
    if (prefix) {
        memcpy(s, SPACE_MARK, 3);
        k = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s + k, SPACE_MARK, 3);
            k += 3;
        } else {
            s[k++] = text[i];
        }
    }
    int rc = KV_OK;
    size_t start = 0;
    for (size_t i = 1; i + 3 <= n && !rc; i++) {
        if (!kv_tok_mark_splits(t, s, n, i)) continue;
        rc = spm_merge(t, s + start, i - start, sy, &h, out, cap, n_out);
        start = i;
        i += 2;
    }
    if (!rc) rc = spm_merge(t, s + start, n - start, sy, &h, out, cap, n_out);
    free(h.b);
    free(sy);
    free(s);
    return rc;
}

/* What a SentencePiece encode writes into (kv_tok_partition's context). */
typedef struct spm_out { const kv_tokenizer *t; int32_t *out; size_t cap, *n; } spm_out;

/* Each fragment between special tokens gets the dummy prefix (llama.cpp's
 * SentencePiece session per fragment: a text fragment always comes first or
 * right after a special token, and both get the prefix). */
static int spm_on_text(void *ctx, const char *s, size_t n) {
    spm_out *o = ctx;
    return spm_fragment(o->t, s, n, o->t->add_space_prefix, o->out, o->cap, o->n);
}

static void spm_on_special(void *ctx, int32_t id) {
    spm_out *o = ctx;
    emit(o->out, o->cap, o->n, id);
}

int kv_tokenizer_encode(const kv_tokenizer *t, const char *text, size_t len, int add_bos, int32_t *out, size_t cap,
                        size_t *n_out) {
    *n_out = 0;
    if (add_bos && t->bos >= 0) emit(out, cap, n_out, t->bos);
    if (t->bpe) return kv_bpe_encode(t, text, len, out, cap, n_out);
    spm_out o = {t, out, cap, n_out};
    return kv_tok_partition(t, text, len, spm_on_text, spm_on_special, &o);
}
