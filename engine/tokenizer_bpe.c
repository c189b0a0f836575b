/* tokenizer_bpe.c - byte-level BPE as GPT-2 defines it (GGUF vocabularies
 * with tokenizer.ggml.model "gpt2", and Hugging Face's encoder.json +
 * vocab.bpe). See tokenizer.h for what encoding does.
 *
 * Every byte stands for one printable code point (GPT-2's bytes_to_unicode
 * table: the printable Latin-1 bytes for themselves, the other 68 for
 * U+0100..U+0143), so the vocabulary and the merges are UTF-8 strings over
 * those code points ("Ġ" is a space). A text is cut into fragments at the
 * control and user-defined tokens (matched whole, leftmost-longest, as
 * Hugging Face's added-token splitter does), each fragment is normalised
 * to NFC where the vocabulary asks for it, cut into words by the
 * pre-tokenizer tokenizer.ggml.pre names (tokenizer_pre.c), and each word
 * starts as one symbol per byte and is merged lowest-rank-first (leftmost
 * among equal ranks) while a merge for the adjacent pair exists; with
 * ignore_merges (Llama 3) a word that is itself a token is that token.
 * Bytes that are not valid UTF-8 match no regex class; they form words of
 * their own, so any byte string encodes and decodes back to itself.
 *
 * The same merge engine runs Hugging Face's SentencePiece-style BPE
 * (tokenizer.json of Llama 2, Gemma 3): spaces become U+2581 (and one is
 * put in front where the normaliser says so), each fragment is one word
 * whose symbols are UTF-8 characters, and a character with no token
 * becomes its <0xNN> byte tokens (byte fallback) before merging. */
#define _POSIX_C_SOURCE 200809L

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "file.h"
#include "kv_error.h"
#include "tokenizer_impl.h"

struct merge {
    uint64_t key;              /* left id << 32 | right id; UINT64_MAX empty */
    int32_t rank, res;         /* rank (index in the merge list) and the merged token */
};

struct kv_bpe {
    kv_pre *pre;               /* NULL: each fragment is one word */
    kv_bpe_opts o;             /* o.pre is NULL once built: pre says it */
    struct merge *merges;      /* open addressing on (left id, right id) */
    uint32_t mmask;
    int32_t *ml, *mr;          /* [nm] the merges by rank, for writing them out */
    int64_t nm;
    int32_t byte_id[256];      /* token of the code point that stands for each byte */
};

/* ------------------------------------------------------- bytes_to_unicode */

/* GPT-2's table: byte -> code point, and back (code points < 324; -1 for none).
 * Filled by each load (no shared state: loads may run on several threads). */
typedef struct byte_table { uint32_t cp[256]; int16_t byte[324]; } byte_table;

static void byte_table_fill(byte_table *bt) {
    uint32_t next = 256;
    for (int cp = 0; cp < 324; cp++) bt->byte[cp] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        bt->cp[b] = printable ? (uint32_t)b : next++;
        bt->byte[bt->cp[b]] = (int16_t)b;
    }
}

static size_t utf8_put(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The code point at s[0..n) and its length; a malformed sequence is one
 * byte with code point UINT32_MAX. */
static size_t utf8_get(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t c = s[0];
    size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (k == 0 || k > n) {
        *cp = UINT32_MAX;
        return 1;
    }
    uint32_t v = k == 1 ? c : k == 2 ? (c & 0x1Fu) : k == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = UINT32_MAX;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    *cp = v;
    return k;
}

/* ----------------------------------------------------------------- merges */

static uint32_t pair_hash(uint64_t k) { return (uint32_t)((k * 0x9E3779B97F4A7C15ull) >> 32); }

static uint64_t pair_key(int32_t l, int32_t r) { return (uint64_t)(uint32_t)l << 32 | (uint32_t)r; }

/* The merge of tokens l and r: its rank, or -1 (and *res) */
static int32_t merge_rank(const kv_bpe *b, int32_t l, int32_t r, int32_t *res) {
    uint64_t k = pair_key(l, r);
    for (uint32_t i = pair_hash(k) & b->mmask;; i = (i + 1) & b->mmask) {
        const struct merge *m = &b->merges[i];
        if (m->key == k) {
            *res = m->res;
            return m->rank;
        }
        if (m->key == UINT64_MAX) return -1;
    }
}

void kv_bpe_free(kv_bpe *b) {
    if (!b) return;
    kv_pre_free(b->pre);
    free(b->merges);
    free(b->ml);
    free(b->mr);
    free(b);
}

/* Names merge i in messages: "path: key[i] "l r"" or, for a vocab.bpe,
 * "path: line N "l r"". */
typedef struct merge_src {
    const char *path;
    const char *key;      /* "tokenizer.ggml.merges", "model.merges", or NULL: line numbers */
    const uint64_t *line; /* [n] line numbers when key is NULL */
} merge_src;

static int merge_error(const merge_src *src, uint64_t i, const kv_merge_str *m, const char *fmt, const char *a,
                       size_t al) {
    char what[256], ms[160];
    snprintf(what, sizeof what, fmt, (int)(al > 64 ? 64 : al), a);
    snprintf(ms, sizeof ms, "%.*s%s%.*s", (int)(m->ll > 64 ? 64 : m->ll), m->l, m->r ? " " : "",
             (int)(m->rl > 64 ? 64 : m->rl), m->r ? m->r : "");
    if (src->key)
        return kv_errorf(KV_EFORMAT, "%s: %s[%llu] \"%s\": %s", src->path, src->key, (unsigned long long)i, ms, what);
    return kv_errorf(KV_EFORMAT, "%s: line %llu \"%s\": %s", src->path, (unsigned long long)src->line[i], ms, what);
}

/* Fills the merge table from m[i] (rank i). */
static int build_merges(kv_tokenizer *t, const kv_merge_str *m, uint64_t n, const merge_src *src) {
    kv_bpe *b = t->bpe;
    uint32_t cap = 16;
    while (cap < n * 2 + 2) cap <<= 1;
    b->merges = malloc(cap * sizeof *b->merges);
    b->ml = malloc((n + 1) * sizeof *b->ml);
    b->mr = malloc((n + 1) * sizeof *b->mr);
    if (!b->merges || !b->ml || !b->mr) return kv_errorf(KV_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < cap; i++) b->merges[i].key = UINT64_MAX;
    b->mmask = cap - 1;
    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = KV_OK;
    for (uint64_t i = 0; i < n && !rc; i++) {
        const kv_merge_str *e = &m[i];
        if (!e->r || e->ll == 0 || e->rl == 0) {
            rc = merge_error(src, i, e, "expected two tokens separated by a space%.*s", "", 0);
            break;
        }
        int32_t l = kv_tok_lookup(t, e->l, e->ll), r = kv_tok_lookup(t, e->r, e->rl);
        if (l < 0 || r < 0) {
            rc = merge_error(src, i, e, "\"%.*s\" is not in the vocabulary", l < 0 ? e->l : e->r, l < 0 ? e->ll : e->rl);
            break;
        }
        if (e->ll + e->rl > cat_cap) {
            free(cat);
            cat_cap = 2 * (e->ll + e->rl);
            if (!(cat = malloc(cat_cap))) {
                rc = kv_errorf(KV_ENOMEM, "out of memory");
                break;
            }
        }
        memcpy(cat, e->l, e->ll);
        memcpy(cat + e->ll, e->r, e->rl);
        int32_t res = kv_tok_lookup(t, cat, e->ll + e->rl);
        if (res < 0) {
            rc = merge_error(src, i, e, "the merged token \"%.*s\" is not in the vocabulary", cat, e->ll + e->rl);
            break;
        }
        uint64_t k = pair_key(l, r);
        uint32_t h = pair_hash(k) & b->mmask;
        while (b->merges[h].key != UINT64_MAX && b->merges[h].key != k) h = (h + 1) & b->mmask;
        if (b->merges[h].key == k) continue; /* a repeated merge keeps its first (best) rank */
        b->merges[h] = (struct merge){k, (int32_t)i, res};
        b->ml[b->nm] = l;
        b->mr[b->nm] = r;
        b->nm++;
    }
    free(cat);
    return rc;
}

/* --------------------------------------------------------------- building */

/* Byte-level: the token of each byte's code point, and each token's bytes.
 * A vocabulary may lack some bytes (Falcon has no token for 0x03,
 * StarCoder none for 0xF1): Hugging Face and llama.cpp drop such a byte
 * from the text, and so does kvbench, except that a byte UTF-8 never uses
 * stands for U+FFFD, as llama.cpp reads invalid UTF-8 (GPT-NeoX's
 * vocabulary has no 0xC0, 0xC1, 0xF5..0xFF). */
static int byte_level_forms(kv_tokenizer *t) {
    byte_table bt;
    byte_table_fill(&bt);
    kv_bpe *b = t->bpe;
    for (int c = 0; c < 256; c++) {
        char u[4];
        size_t ul = utf8_put(bt.cp[c], u);
        b->byte_id[c] = kv_tok_lookup(t, u, ul);
    }
    for (int32_t i = 0; i < t->n; i++) {
        uint8_t ty = t->type[i];
        if (ty == TT_CONTROL || ty == TT_UNKNOWN || ty == TT_UNUSED) {
            if (!(t->out[i] = calloc(1, 1))) return kv_errorf(KV_ENOMEM, "out of memory");
            continue;
        }
        char *o = malloc(t->len[i] + 1);
        if (!o) return kv_errorf(KV_ENOMEM, "out of memory");
        size_t k = 0;
        if (ty == TT_USER) { /* added tokens are stored as they appear in text */
            memcpy(o, t->text[i], t->len[i]);
            k = t->len[i];
        } else {
            const uint8_t *s = (const uint8_t *)t->text[i];
            for (size_t j = 0; j < t->len[i];) {
                uint32_t cp;
                size_t cl = utf8_get(s + j, t->len[i] - j, &cp);
                if (cp < 324 && bt.byte[cp] >= 0) o[k++] = (char)bt.byte[cp];
                else for (size_t q = 0; q < cl; q++) o[k++] = (char)s[j + q]; /* outside the table: as is */
                j += cl;
            }
        }
        o[k] = 0;
        t->out[i] = o;
        t->out_len[i] = (uint32_t)k;
    }
    return KV_OK;
}

/* Is s[0..n) "<0xNN>"? Its byte in *byte. */
static int byte_piece(const char *s, size_t n, int *byte) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return 0;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return 0;
        v = v * 16 + d;
    }
    *byte = v;
    return 1;
}

/* SentencePiece-style: <0xNN> tokens print as their byte, U+2581 as a space. */
static int spm_forms(kv_tokenizer *t) {
    for (int c = 0; c < 256; c++) t->byte_tok[c] = -1;
    for (int32_t i = 0; i < t->n; i++) {
        uint8_t ty = t->type[i];
        int byte;
        if (ty == TT_CONTROL || ty == TT_UNKNOWN || ty == TT_UNUSED) {
            if (!(t->out[i] = calloc(1, 1))) return kv_errorf(KV_ENOMEM, "out of memory");
            continue;
        }
        char *o = malloc(t->len[i] + 1);
        if (!o) return kv_errorf(KV_ENOMEM, "out of memory");
        size_t k = 0;
        if (ty == TT_BYTE && byte_piece(t->text[i], t->len[i], &byte)) {
            if (t->byte_tok[byte] < 0) t->byte_tok[byte] = i;
            o[k++] = (char)byte;
        } else {
            for (size_t j = 0; j < t->len[i];) {
                if (t->len[i] - j >= 3 && !memcmp(t->text[i] + j, "\xe2\x96\x81", 3)) {
                    o[k++] = ' ';
                    j += 3;
                } else {
                    o[k++] = t->text[i][j++];
                }
            }
        }
        o[k] = 0;
        t->out[i] = o;
        t->out_len[i] = (uint32_t)k;
    }
    return KV_OK;
}

int kv_bpe_build(kv_tokenizer *t, const char *path, const char *merges_key,
                 const uint64_t *lines, const kv_bpe_opts *o, const kv_merge_str *m, uint64_t nm) {
    kv_bpe *b = t->bpe;
    b->o = *o;
    b->o.pre = NULL;
    int rc = kv_tok_index(t);
    if (rc) return rc;
    for (int c = 0; c < 256; c++) {
        t->byte_tok[c] = -1; /* SentencePiece's <0xNN> tokens: spm_forms finds them */
        b->byte_id[c] = -1;
    }
    merge_src src = {path, merges_key, lines};
    if ((rc = o->byte_level ? byte_level_forms(t) : spm_forms(t))) return rc;
    if ((rc = build_merges(t, m, nm, &src))) return rc;
    if ((rc = kv_tok_special_index(t))) return rc;
    kv_tok_mark_joins(t);
    if (!o->pre) {
        if (o->byte_level) return kv_errorf(KV_EUNSUPPORTED, "%s: a byte-level vocabulary needs a pre-tokenizer", path);
        return KV_OK;
    }
    const kv_pre_def *def = kv_pre_find(o->pre);
    if (!def) {
        char names[512];
        kv_pre_names(names, sizeof names);
        return kv_errorf(KV_EUNSUPPORTED, "%s: pre-tokenizer '%.64s' (tokenizer.ggml.pre) is not supported (supported: %s)",
                         path, o->pre, names);
    }
    return kv_pre_new(def, &b->pre);
}

int kv_bpe_alloc(int32_t n, kv_tokenizer **out) {
    kv_tokenizer *t = kv_tok_alloc(n);
    if (!t) return kv_errorf(KV_ENOMEM, "out of memory");
    t->bpe = calloc(1, sizeof *t->bpe);
    if (!t->bpe) {
        kv_tokenizer_free(t);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    t->add_space_prefix = 0;
    *out = t;
    return KV_OK;
}

int kv_bpe_set_token(kv_tokenizer *t, int32_t i, const char *s, size_t len) {
    char *c = malloc(len + 1);
    if (!c) return kv_errorf(KV_ENOMEM, "out of memory");
    memcpy(c, s, len);
    c[len] = 0;
    free(t->text[i]);
    t->text[i] = c;
    t->len[i] = (uint32_t)len;
    return KV_OK;
}

const char *kv_bpe_pre(const kv_bpe *b) { return b->pre ? kv_pre_name(b->pre) : NULL; }
int kv_bpe_byte_level(const kv_bpe *b) { return b->o.byte_level; }
int kv_bpe_nfc(const kv_bpe *b) { return b->o.nfc; }
int kv_bpe_ignore_merges(const kv_bpe *b) { return b->o.ignore_merges; }
int64_t kv_bpe_n_merges(const kv_bpe *b) { return b->nm; }
void kv_bpe_merge(const kv_bpe *b, int64_t i, int32_t *l, int32_t *r) {
    *l = b->ml[i];
    *r = b->mr[i];
}

/* Splits a GGUF / vocab.bpe merge "left right" at the first space after its
 * first byte, as llama.cpp does (a token may itself be a space). */
kv_merge_str kv_merge_split(const char *m, size_t len) {
    size_t sp = 1;
    while (sp < len && m[sp] != ' ') sp++;
    if (len < 3 || sp >= len - 1) return (kv_merge_str){m, NULL, len, 0};
    return (kv_merge_str){m, m + sp + 1, sp, len - sp - 1};
}
/* A string-array key that must be there, as KV_EFORMAT naming file and key. */
static int str_array(const kv_gguf *g, const char *key, uint64_t max, uint64_t *n) {
    const char *path = kv_gguf_path(g);
    kv_gguf_type et;
    int rc = kv_gguf_get_arr_info(g, key, &et, n);
    if (rc == KV_ENOTFOUND)
        return kv_errorf(KV_EFORMAT, "%s: missing metadata key '%s' (a gpt2 tokenizer needs it)", path, key);
    if (rc == KV_ETYPE) return kv_errorf(KV_EFORMAT, "%s: metadata key '%s': expected an array of strings", path, key);
    if (rc) return rc;
    if (et != KV_GGUF_STRING)
        return kv_errorf(KV_EFORMAT, "%s: metadata key '%s': expected an array of strings, got an array of type %d",
                         path, key, (int)et);
    if (*n > max)
        return kv_errorf(KV_EFORMAT, "%s: metadata key '%s': %llu strings, at most %llu expected", path, key,
                         (unsigned long long)*n, (unsigned long long)max);
    return KV_OK;
}

int kv_bpe_from_gguf(const kv_gguf *g, kv_tokenizer **out) {
    *out = NULL;
    const char *path = kv_gguf_path(g);
    uint64_t n, nm;
    int rc;
    if ((rc = str_array(g, "tokenizer.ggml.tokens", 1u << 22, &n))) return rc;
    if (n == 0) return kv_errorf(KV_EFORMAT, "%s: metadata key 'tokenizer.ggml.tokens': empty", path);
    if ((rc = str_array(g, "tokenizer.ggml.merges", 1u << 24, &nm))) return rc;
    /* the pre-tokenizer: files from before the key existed meant GPT-2's */
    char pre[65] = "gpt-2";
    const char *ps;
    size_t pl;
    rc = kv_gguf_get_str(g, "tokenizer.ggml.pre", &ps, &pl);
    if (rc == KV_ETYPE) return kv_errorf(KV_EFORMAT, "%s: metadata key 'tokenizer.ggml.pre': expected a string", path);
    if (rc == KV_OK) snprintf(pre, sizeof pre, "%.*s", (int)(pl > 64 ? 64 : pl), ps);
    if (rc == KV_OK && (pl > 64 || memchr(ps, 0, pl)))
        return kv_errorf(KV_EUNSUPPORTED, "%s: pre-tokenizer '%s...' (tokenizer.ggml.pre) is not supported", path, pre);
    const void *types = NULL;
    kv_gguf_type et;
    uint64_t nt;
    rc = kv_gguf_get_arr_info(g, "tokenizer.ggml.token_type", &et, &nt);
    if (rc == KV_OK) {
        if ((et != KV_GGUF_I32 && et != KV_GGUF_U32) || nt != n)
            return kv_errorf(KV_EFORMAT, "%s: metadata key 'tokenizer.ggml.token_type': expected %llu i32 values", path,
                             (unsigned long long)n);
        if ((rc = kv_gguf_get_arr_data(g, "tokenizer.ggml.token_type", &types))) return rc;
    } else if (rc == KV_ETYPE) {
        return kv_errorf(KV_EFORMAT, "%s: metadata key 'tokenizer.ggml.token_type': expected an array of i32", path);
    }
    kv_tokenizer *t = NULL;
    if ((rc = kv_bpe_alloc((int32_t)n, &t))) return rc;
    kv_merge_str *ms = malloc((nm + 1) * sizeof *ms);
    if (!ms) {
        rc = kv_errorf(KV_ENOMEM, "out of memory");
        goto done;
    }
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if ((rc = kv_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &len))) goto done;
        if ((rc = kv_bpe_set_token(t, (int32_t)i, s, len))) goto done;
        int32_t ty = TT_NORMAL;
        if (types) memcpy(&ty, (const char *)types + 4 * i, 4);
        t->type[i] = (uint8_t)(ty >= 1 && ty <= 6 ? ty : TT_NORMAL);
        if (t->type[i] == TT_BYTE) t->type[i] = TT_NORMAL; /* byte-level vocabularies have no <0xNN> tokens */
    }
    for (uint64_t i = 0; i < nm; i++) {
        const char *s;
        size_t len;
        if ((rc = kv_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &s, &len))) goto done;
        ms[i] = kv_merge_split(s, len);
    }
    int64_t v;
    t->bos = kv_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) == KV_OK && v >= 0 && v < (int64_t)n ? (int32_t)v : -1;
    t->eos = kv_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) == KV_OK && v >= 0 && v < (int64_t)n ? (int32_t)v : -1;
    t->unk = kv_gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &v) == KV_OK && v >= 0 && v < (int64_t)n ? (int32_t)v : -1;
    int flag;
    if (kv_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &flag) == KV_OK) t->add_bos = flag;
    /* what the pre-tokenizer's models ask for besides its regexes (ignore_merges, NFC) */
    const kv_pre_def *def = kv_pre_find(pre);
    kv_bpe_opts o = {.pre = pre, .byte_level = 1, .ignore_merges = def && def->ignore_merges, .nfc = def && def->nfc};
    rc = kv_bpe_build(t, path, "tokenizer.ggml.merges", NULL, &o, ms, nm);
done:
    free(ms);
    if (rc) kv_tokenizer_free(t);
    else *out = t;
    return rc;
}

/* ------------------------------------------------- Hugging Face GPT-2 files */

int kv_bpe_load_hf(const char *encoder_json, const char *vocab_bpe, kv_tokenizer **out) {
    *out = NULL;
    int rc;
    size_t jl, vl;
    char *js;
    if ((rc = kv_read_file(encoder_json, &js, &jl))) return rc;
    cJSON *root = cJSON_ParseWithLength(js, jl);
    free(js);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return kv_errorf(KV_EFORMAT, "%s: expected a JSON object mapping each token to its id", encoder_json);
    }
    int32_t n = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 22) ||
            e->valuedouble != (double)(int32_t)e->valuedouble) {
            rc = kv_errorf(KV_EFORMAT, "%s: token \"%.64s\": expected an id in 0..2^22", encoder_json, e->string);
            cJSON_Delete(root);
            return rc;
        }
        if ((int32_t)e->valuedouble >= n) n = (int32_t)e->valuedouble + 1;
    }
    kv_tokenizer *t = NULL;
    char *vb = NULL;
    kv_merge_str *ms = NULL;
    uint64_t *lines = NULL;
    if (n == 0) {
        rc = kv_errorf(KV_EFORMAT, "%s: no tokens", encoder_json);
        goto done;
    }
    if ((rc = kv_bpe_alloc(n, &t))) goto done;
    for (const cJSON *e = root->child; e; e = e->next) {
        int32_t id = (int32_t)e->valuedouble;
        if (t->text[id]) {
            rc = kv_errorf(KV_EFORMAT, "%s: tokens \"%.64s\" and \"%.64s\" share id %d", encoder_json, t->text[id],
                           e->string, id);
            goto done;
        }
        if ((rc = kv_bpe_set_token(t, id, e->string, strlen(e->string)))) goto done;
        t->type[id] = TT_NORMAL;
    }
    for (int32_t i = 0; i < n; i++)
        if (!t->text[i]) {
            rc = kv_errorf(KV_EFORMAT, "%s: no token has id %d (ids must be 0..%d)", encoder_json, i, n - 1);
            goto done;
        }
    /* GPT-2's one special token */
    for (int32_t i = 0; i < n; i++)
        if (t->len[i] == 13 && !memcmp(t->text[i], "<|endoftext|>", 13)) {
            t->type[i] = TT_CONTROL;
            t->bos = t->eos = i;
            break;
        }
    if ((rc = kv_read_file(vocab_bpe, &vb, &vl))) goto done;
    uint64_t cap = 1;
    for (size_t i = 0; i < vl; i++) cap += vb[i] == '\n';
    ms = malloc(cap * sizeof *ms);
    lines = malloc(cap * sizeof *lines);
    if (!ms || !lines) {
        rc = kv_errorf(KV_ENOMEM, "out of memory");
        goto done;
    }
    uint64_t nm = 0, line = 0;
    for (char *p = vb; p < vb + vl;) {
        char *e = memchr(p, '\n', (size_t)(vb + vl - p));
        if (!e) e = vb + vl;
        size_t len = (size_t)(e - p);
        if (len && p[len - 1] == '\r') len--;
        line++;
        if (len && !(line == 1 && !strncmp(p, "#version", 8))) {
            ms[nm] = kv_merge_split(p, len);
            lines[nm] = line;
            nm++;
        }
        p = e + 1;
    }
    kv_bpe_opts o = {.pre = "gpt-2", .byte_level = 1};
    rc = kv_bpe_build(t, vocab_bpe, NULL, lines, &o, ms, nm);
done:
    cJSON_Delete(root);
    free(vb);
    free(ms);
    free(lines);
    if (rc) kv_tokenizer_free(t);
    else *out = t;
    return rc;
}

/* --------------------------------------------------------------- encoding */

typedef struct cand { int32_t rank, l, r, lid, rid, res; } cand;

/* A word's ids, remembered for the rest of one encode call: English text
 * repeats its words, and looking one up costs far less than merging it
 * (Hugging Face's tokenizers keep such a cache too). Direct-mapped: a word
 * evicts whichever had its slot. Only words and encodings that fit. */
enum { WC_BYTES = 30, WC_IDS = 14 };
typedef struct wc_entry {
    uint32_t hash;
    uint8_t len, n_ids; /* len 0: empty */
    char w[WC_BYTES];
    int32_t ids[WC_IDS];
} wc_entry;

/* One encode call's state: the symbols of the current word, the heap of
 * candidate merges, buffers for normalised text, and where ids go. */
typedef struct work {
    const kv_tokenizer *t;
    int32_t *id, *prev, *next; /* one symbol per byte (or character) of a word; id -1 once merged into its left neighbour */
    size_t cap;
    cand *h; /* min-heap by rank, then position */
    size_t hn, hcap;
    char *norm, *word; /* the fragment after NFC / U+2581; a word spelled in code points (ignore_merges) */
    size_t norm_cap, word_cap;
    int32_t *out;
    size_t out_cap, *n_out;
    void *md; /* the pre-tokenizer's match data (NULL: none) */
    wc_entry *wc; /* the word cache (NULL: none) */
    uint32_t wc_mask;
} work;

static int cand_less(const cand *a, const cand *b) { return a->rank < b->rank || (a->rank == b->rank && a->l < b->l); }

static int heap_push(work *w, cand c) {
    if (w->hn == w->hcap) {
        size_t cap = w->hcap ? 2 * w->hcap : 64;
        cand *h = realloc(w->h, cap * sizeof *h);
        if (!h) return -1;
        w->h = h;
        w->hcap = cap;
    }
    size_t i = w->hn++;
    while (i > 0 && cand_less(&c, &w->h[(i - 1) / 2])) {
        w->h[i] = w->h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->h[i] = c;
    return 0;
}

static cand heap_pop(work *w) {
    cand top = w->h[0], last = w->h[--w->hn];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *best = &last;
        if (l < w->hn && cand_less(&w->h[l], best)) m = l, best = &w->h[l];
        if (r < w->hn && cand_less(&w->h[r], best)) m = r;
        if (m == i) break;
        w->h[i] = w->h[m];
        i = m;
    }
    if (w->hn) w->h[i] = last;
    return top;
}

static int try_pair(const kv_bpe *b, work *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    int32_t res, rank = merge_rank(b, w->id[l], w->id[r], &res);
    if (rank < 0) return 0;
    cand c = {rank, l, r, w->id[l], w->id[r], res};
    return heap_push(w, c);
}

static void emit(work *w, int32_t id) {
    if (*w->n_out < w->out_cap) w->out[*w->n_out] = id;
    (*w->n_out)++;
}

static int work_reserve(work *w, size_t n) {
    if (n <= w->cap) return 0;
    size_t c = n > 2 * w->cap ? n : 2 * w->cap;
    int32_t *id = realloc(w->id, c * sizeof *id);
    if (id) w->id = id;
    int32_t *pv = realloc(w->prev, c * sizeof *pv);
    if (pv) w->prev = pv;
    int32_t *nx = realloc(w->next, c * sizeof *nx);
    if (nx) w->next = nx;
    if (!id || !pv || !nx) return -1;
    w->cap = c;
    return 0;
}

/* Merges the ns symbols in w->id, lowest rank first, and emits the result. */
static int merge_word(const kv_bpe *b, work *w, size_t ns) {
    for (size_t i = 0; i < ns; i++) {
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    w->hn = 0;
    for (size_t i = 1; i < ns; i++)
        if (try_pair(b, w, (int32_t)i - 1, (int32_t)i)) return -1;
    while (w->hn) {
        cand c = heap_pop(w);
        /* stale: either side merged (or was absorbed) since it was queued */
        if (w->id[c.l] != c.lid || w->id[c.r] != c.rid || w->next[c.l] != c.r) continue;
        w->id[c.l] = c.res;
        w->id[c.r] = -1;
        w->next[c.l] = w->next[c.r];
        if (w->next[c.r] >= 0) w->prev[w->next[c.r]] = c.l;
        if (try_pair(b, w, w->prev[c.l], c.l) || try_pair(b, w, c.l, w->next[c.l])) return -1;
    }
    for (int32_t i = 0; i >= 0; i = w->next[i]) emit(w, w->id[i]);
    return 0;
}

/* Llama 3's ignore_merges: the vocabulary token spelled like the whole word
 * (in GPT-2's code points), or -1. */
static int32_t whole_word(const kv_tokenizer *t, work *w, const uint8_t *s, size_t n) {
    const kv_bpe *b = t->bpe;
    if (KV_RESERVE(w->word, w->word_cap, 2 * n)) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = b->byte_id[s[i]];
        if (id < 0) return -1;
        memcpy(w->word + k, t->text[id], t->len[id]);
        k += t->len[id];
    }
    int32_t id = kv_tok_lookup(t, w->word, k);
    return id >= 0 && t->type[id] == TT_NORMAL ? id : -1;
}

static int byte_word(const kv_tokenizer *t, work *w, const uint8_t *s, size_t n);

/* A word with bytes the vocabulary has no token for: one UTF-8 never uses
 * becomes U+FFFD, any other is dropped (see byte_level_forms). */
static int byte_word_replaced(const kv_tokenizer *t, work *w, const uint8_t *s, size_t n) {
    const int32_t *id = t->bpe->byte_id;
    int fffd = id[0xEF] >= 0 && id[0xBF] >= 0 && id[0xBD] >= 0;
    uint8_t *r = malloc(3 * n);
    if (!r) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int never_utf8 = s[i] == 0xC0 || s[i] == 0xC1 || s[i] >= 0xF5;
        if (id[s[i]] >= 0) {
            r[k++] = s[i];
        } else if (never_utf8 && fffd) {
            memcpy(r + k, "\xef\xbf\xbd", 3);
            k += 3;
        }
    }
    int rc = k ? byte_word(t, w, r, k) : 0;
    free(r);
    return rc;
}

static uint32_t word_hash(const uint8_t *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

/* The cache slot of the word of hash h (wc_holds: whether it holds that word). */
static wc_entry *wc_slot(const work *w, uint32_t h) { return &w->wc[(h ^ h >> 15) & w->wc_mask]; }

static int wc_holds(const wc_entry *e, const uint8_t *s, size_t n, uint32_t h) {
    return e->len == n && e->hash == h && memcmp(e->w, s, n) == 0;
}

/* Remembers the ids emitted since `from` as word s's (when they were all stored and fit). */
static void wc_store(work *w, wc_entry *e, const uint8_t *s, size_t n, uint32_t h, size_t from) {
    size_t k = *w->n_out - from;
    if (k > WC_IDS || *w->n_out > w->out_cap) return;
    e->hash = h;
    e->len = (uint8_t)n;
    e->n_ids = (uint8_t)k;
    memcpy(e->w, s, n);
    memcpy(e->ids, w->out + from, k * sizeof *e->ids);
}

typedef int (*word_fn)(const kv_tokenizer *t, work *w, const uint8_t *s, size_t n);

/* fn's ids for word s, from the word cache when it holds them (and kept there). */
static int cached_word(const kv_tokenizer *t, work *w, const uint8_t *s, size_t n, word_fn fn) {
    if (!w->wc || n > WC_BYTES) return fn(t, w, s, n);
    uint32_t h = word_hash(s, n);
    wc_entry *e = wc_slot(w, h);
    if (wc_holds(e, s, n, h)) {
        for (int i = 0; i < e->n_ids; i++) emit(w, e->ids[i]);
        return 0;
    }
    size_t from = *w->n_out;
    if (fn(t, w, s, n)) return -1;
    wc_store(w, e, s, n, h, from);
    return 0;
}

/* A byte-level word of bytes that all have tokens: the whole word's token
 * (ignore_merges), or one symbol per byte, merged. */
static int byte_word_merge(const kv_tokenizer *t, work *w, const uint8_t *s, size_t n) {
    const kv_bpe *b = t->bpe;
    int32_t id = b->o.ignore_merges ? whole_word(t, w, s, n) : -1;
    if (id >= 0) {
        emit(w, id);
        return 0;
    }
    if (work_reserve(w, n)) return -1;
    for (size_t i = 0; i < n; i++) w->id[i] = b->byte_id[s[i]];
    return merge_word(b, w, n);
}

/* Byte-level: one symbol per byte, through the word cache when there is one. */
static int byte_word(const kv_tokenizer *t, work *w, const uint8_t *s, size_t n) {
    const kv_bpe *b = t->bpe;
    for (size_t i = 0; i < n; i++)
        if (b->byte_id[s[i]] < 0) return byte_word_replaced(t, w, s, n);
    if (n == 1) {
        emit(w, b->byte_id[s[0]]);
        return 0;
    }
    return cached_word(t, w, s, n, byte_word_merge);
}

/* SentencePiece-style: one symbol per UTF-8 character (a stray byte is one
 * of its own); a character with no token becomes its <0xNN> tokens, or the
 * unknown token (adjacent ones fused when fuse_unk). */
static int char_word(const kv_tokenizer *t, work *w, const uint8_t *s, size_t n) {
    const kv_bpe *b = t->bpe;
    if (work_reserve(w, n)) return -1;
    size_t ns = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t cl = utf8_get(s + i, n - i, &cp);
        int32_t id = kv_tok_lookup(t, (const char *)s + i, cl);
        if (id >= 0) {
            w->id[ns++] = id;
        } else {
            int all = b->o.byte_fallback;
            for (size_t j = 0; j < cl && all; j++) all = t->byte_tok[s[i + j]] >= 0;
            if (all) {
                for (size_t j = 0; j < cl; j++) w->id[ns++] = t->byte_tok[s[i + j]];
            } else if (!(b->o.fuse_unk && ns > 0 && w->id[ns - 1] == t->unk && t->unk >= 0)) {
                w->id[ns++] = t->unk >= 0 ? t->unk : 0;
            }
        }
        i += cl;
    }
    if (ns == 0) return 0;
    return merge_word(b, w, ns);
}

/* A SentencePiece-style fragment, split at each U+2581 that no token spans
 * (kv_tok_mark_splits: no merge can join across it, so each part merges
 * alone to the same ids), each part through the word cache. */
static int mark_words(const kv_tokenizer *t, work *w, const uint8_t *s, size_t n) {
    size_t start = 0;
    for (size_t i = 1; i + 3 <= n; i++) {
        if (!kv_tok_mark_splits(t, (const char *)s, n, i)) continue;
        if (cached_word(t, w, s + start, i - start, char_word)) return -1;
        start = i;
        i += 2;
    }
    return cached_word(t, w, s + start, n - start, char_word);
}

static int on_word(void *ctx, const char *s, size_t n) {
    work *w = ctx;
    int rc = w->t->bpe->o.byte_level ? byte_word(w->t, w, (const uint8_t *)s, n) : mark_words(w->t, w, (const uint8_t *)s, n);
    return rc ? kv_errorf(KV_ENOMEM, "out of memory tokenizing") : KV_OK;
}

/* SentencePiece-style normalisation: U+2581 in front (when asked) and for each space. */
static int spm_normalize(work *w, const char *s, size_t n, int prepend, size_t *out_n) {
    size_t spaces = 0;
    for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    if (KV_RESERVE(w->word, w->word_cap, n + 2 * spaces + 3)) return -1;
    size_t k = 0;
    if (prepend) {
        memcpy(w->word, "\xe2\x96\x81", 3);
        k = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(w->word + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            w->word[k++] = s[i];
        }
    }
    *out_n = k;
    return 0;
}

/* Encodes fragment s[0..n) (no special tokens in it). */
static int encode_fragment(const kv_tokenizer *t, work *w, void *md, const char *s, size_t n) {
    const kv_bpe *b = t->bpe;
    int rc;
    if (b->o.nfc) {
        size_t k;
        if ((rc = kv_nfc(s, n, &w->norm, &w->norm_cap, &k))) return rc;
        s = w->norm;
        n = k;
    }
    if (!b->o.byte_level) {
        size_t k;
        if (spm_normalize(w, s, n, b->o.prepend_space, &k)) return kv_errorf(KV_ENOMEM, "out of memory tokenizing");
        /* the word buffer now holds the fragment: char_word does not use it */
        return on_word(w, w->word, k);
    }
    if (!b->pre) return on_word(w, s, n);
    return kv_pre_split(b->pre, md, s, n, on_word, w);
}


static int bpe_on_text(void *ctx, const char *s, size_t n) {
    work *w = ctx;
    return encode_fragment(w->t, w, w->md, s, n);
}

static void bpe_on_special(void *ctx, int32_t id) { emit(ctx, id); }

int kv_bpe_encode(const kv_tokenizer *t, const char *text, size_t len, int32_t *out, size_t cap, size_t *n_out) {
    const kv_bpe *b = t->bpe;
    if (len == 0) return KV_OK;
    void *md = b->pre ? kv_pre_match_data() : NULL;
    if (b->pre && !md) return kv_errorf(KV_ENOMEM, "out of memory");
    work w = {.t = t, .out = out, .out_cap = cap, .n_out = n_out, .md = md};
    if (len >= 1024) { /* a cache pays for itself on a page of text, sized to it */
        uint32_t slots = 256;
        while (slots < 8192 && slots < len / 8) slots <<= 1;
        w.wc = calloc(slots, sizeof *w.wc); /* none (slower, same ids) if this fails */
        w.wc_mask = slots - 1;
    }
    int rc = kv_tok_partition(t, text, len, bpe_on_text, bpe_on_special, &w);
    free(w.wc);
    if (md) kv_pre_match_data_free(md);
    free(w.id);
    free(w.prev);
    free(w.next);
    free(w.h);
    free(w.norm);
    free(w.word);
    return rc;
}
