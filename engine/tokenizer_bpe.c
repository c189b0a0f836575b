/* tokenizer_bpe.c - byte-level BPE as GPT-2 defines it (GGUF vocabularies
 * with tokenizer.ggml.model "gpt2", and Hugging Face's encoder.json +
 * vocab.bpe). See tokenizer.h for what encoding does.
 *
 * Every byte stands for one printable code point (GPT-2's bytes_to_unicode
 * table: the printable Latin-1 bytes for themselves, the other 68 for
 * U+0100..U+0143), so the vocabulary and the merges are UTF-8 strings over
 * those code points ("Ġ" is a space). A text is cut into fragments at the
 * control and user-defined tokens (matched whole, leftmost-longest, as
 * Hugging Face's added-token splitter does), each fragment is cut into
 * words by the pre-tokenizer regex that tokenizer.ggml.pre names (PCRE2,
 * for its Unicode classes \p{L} and \p{N}), and each word starts as one
 * symbol per byte and is merged lowest-rank-first (leftmost among equal
 * ranks) while a merge for the adjacent pair exists. Bytes that are not
 * valid UTF-8 match no regex class; they form words of their own, so any
 * byte string encodes and decodes back to itself. */
#define _POSIX_C_SOURCE 200809L
#define PCRE2_CODE_UNIT_WIDTH 8

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "tokenizer_impl.h"

/* GPT-2's pattern (openai/gpt-2 encoder.py; Hugging Face's ByteLevel
 * pre-tokenizer uses the same). GPT-NeoX, Pythia, MPT, OPT, GPT-J and
 * Cerebras-GPT inherit it. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static const struct { const char *name, *regex; } PRE[] = {
    {"gpt-2", RE_GPT2},
    {"mpt", RE_GPT2},
    {"gpt-neox", RE_GPT2},
};
#define N_PRE (sizeof PRE / sizeof PRE[0])

struct merge {
    uint64_t key;              /* left id << 32 | right id; UINT64_MAX empty */
    int32_t rank, res;         /* rank (index in the merge list) and the merged token */
};

struct kv_bpe {
    pcre2_code *re;
    const char *pre;           /* PRE[].name */
    struct merge *merges;      /* open addressing on (left id, right id) */
    uint32_t mmask;
    int32_t byte_id[256];      /* token of the code point that stands for each byte */
    int32_t *special;          /* control and user-defined tokens, by first byte, longest first */
    int32_t special_at[257];   /* special[special_at[c] .. special_at[c + 1]) start with byte c */
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
    pcre2_code_free(b->re);
    free(b->merges);
    free(b->special);
    free(b);
}

/* Where a merge list comes from, for messages: a GGUF key or lines of a file. */
typedef struct merge_src {
    const char *path;
    const char *key;      /* "tokenizer.ggml.merges", or NULL: line numbers of a vocab.bpe */
    const uint64_t *line; /* [n] line numbers when key is NULL */
} merge_src;

static int merge_error(const merge_src *src, uint64_t i, const char *m, size_t ml, const char *fmt, const char *a,
                       size_t al) {
    char what[256];
    snprintf(what, sizeof what, fmt, (int)(al > 64 ? 64 : al), a);
    if (src->key)
        return kv_errorf(KV_EFORMAT, "%s: %s[%llu] \"%.*s\": %s", src->path, src->key, (unsigned long long)i,
                         (int)(ml > 64 ? 64 : ml), m, what);
    return kv_errorf(KV_EFORMAT, "%s: line %llu \"%.*s\": %s", src->path, (unsigned long long)src->line[i],
                     (int)(ml > 64 ? 64 : ml), m, what);
}

/* Fills the merge table from merges[i] = "left right" (rank i). */
static int build_merges(kv_tokenizer *t, const char *const *ms, const size_t *ml, uint64_t n, const merge_src *src) {
    kv_bpe *b = t->bpe;
    uint32_t cap = 16;
    while (cap < n * 2 + 2) cap <<= 1;
    b->merges = malloc(cap * sizeof *b->merges);
    if (!b->merges) return kv_errorf(KV_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < cap; i++) b->merges[i].key = UINT64_MAX;
    b->mmask = cap - 1;
    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = KV_OK;
    for (uint64_t i = 0; i < n && !rc; i++) {
        const char *m = ms[i];
        size_t len = ml[i], sp = 1;
        while (sp < len && m[sp] != ' ') sp++; /* as llama.cpp: the first space after the first byte */
        if (len < 3 || sp >= len - 1) {
            rc = merge_error(src, i, m, len, "expected two tokens separated by a space%.*s", "", 0);
            break;
        }
        int32_t l = kv_tok_lookup(t, m, sp), r = kv_tok_lookup(t, m + sp + 1, len - sp - 1);
        if (l < 0 || r < 0) {
            const char *bad = l < 0 ? m : m + sp + 1;
            size_t bl = l < 0 ? sp : len - sp - 1;
            rc = merge_error(src, i, m, len, "\"%.*s\" is not in the vocabulary", bad, bl);
            break;
        }
        if (len > cat_cap) {
            free(cat);
            cat_cap = len * 2;
            if (!(cat = malloc(cat_cap))) {
                rc = kv_errorf(KV_ENOMEM, "out of memory");
                break;
            }
        }
        memcpy(cat, m, sp);
        memcpy(cat + sp, m + sp + 1, len - sp - 1);
        int32_t res = kv_tok_lookup(t, cat, len - 1);
        if (res < 0) {
            rc = merge_error(src, i, m, len, "the merged token \"%.*s\" is not in the vocabulary", cat, len - 1);
            break;
        }
        uint64_t k = pair_key(l, r);
        uint32_t h = pair_hash(k) & b->mmask;
        while (b->merges[h].key != UINT64_MAX && b->merges[h].key != k) h = (h + 1) & b->mmask;
        if (b->merges[h].key == k) continue; /* a repeated merge keeps its first (best) rank */
        b->merges[h] = (struct merge){k, (int32_t)i, res};
    }
    free(cat);
    return rc;
}

/* --------------------------------------------------------------- building */

typedef struct spec { uint8_t first; uint32_t len; int32_t id; } spec;

/* by first byte, then longest first, then id */
static int spec_cmp(const void *pa, const void *pb) {
    const spec *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* Everything after the tokens, types, bos and eos are set: the lookup
 * table, byte tokens, merges, printed forms, the special-token index and
 * the regex. */
static int bpe_finish(kv_tokenizer *t, const char *path, const char *tokens_key, const char *pre,
                      const char *const *ms, const size_t *ml, uint64_t nm, const merge_src *src) {
    byte_table bt;
    byte_table_fill(&bt);
    kv_bpe *b = t->bpe;
    int rc = kv_tok_index(t);
    if (rc) return rc;
    for (int c = 0; c < 256; c++) {
        char u[4];
        size_t ul = utf8_put(bt.cp[c], u);
        b->byte_id[c] = kv_tok_lookup(t, u, ul);
        /* bytes that never occur in UTF-8 may be missing (GPT-NeoX's vocabulary has no 0xC0, 0xC1, 0xF5..0xFF):
         * they encode as U+FFFD, as llama.cpp reads invalid UTF-8 */
        int never_utf8 = c == 0xC0 || c == 0xC1 || c >= 0xF5;
        if (b->byte_id[c] < 0 && !never_utf8)
            return kv_errorf(KV_EFORMAT, "%s: %s: no token for byte 0x%02x (\"%.*s\"), which UTF-8 text can hold",
                             path, tokens_key, c, (int)ul, u);
        t->byte_tok[c] = -1; /* SentencePiece's <0xNN> tokens: none here */
    }
    if ((rc = build_merges(t, ms, ml, nm, src))) return rc;
    /* printed forms: each code point of the table back to its byte */
    int32_t n_special = 0;
    for (int32_t i = 0; i < t->n; i++) {
        uint8_t ty = t->type[i];
        if (ty == TT_CONTROL || ty == TT_UNKNOWN || ty == TT_UNUSED) {
            if (!(t->out[i] = calloc(1, 1))) return kv_errorf(KV_ENOMEM, "out of memory");
            if (ty == TT_CONTROL && t->len[i] > 0) n_special++;
            continue;
        }
        char *o = malloc(t->len[i] + 1);
        if (!o) return kv_errorf(KV_ENOMEM, "out of memory");
        size_t k = 0;
        if (ty == TT_USER) { /* added tokens are stored as they appear in text */
            memcpy(o, t->text[i], t->len[i]);
            k = t->len[i];
            if (t->len[i] > 0) n_special++;
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
    /* control and user-defined tokens are matched whole in the text */
    b->special = malloc(((size_t)n_special + 1) * sizeof *b->special);
    spec *sp = malloc(((size_t)n_special + 1) * sizeof *sp);
    if (!b->special || !sp) {
        free(sp);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    int32_t k = 0;
    for (int32_t i = 0; i < t->n; i++)
        if ((t->type[i] == TT_CONTROL || t->type[i] == TT_USER) && t->len[i] > 0)
            sp[k++] = (spec){(uint8_t)t->text[i][0], t->len[i], i};
    qsort(sp, (size_t)k, sizeof *sp, spec_cmp);
    for (int32_t j = 0; j < k; j++) b->special[j] = sp[j].id;
    free(sp);
    for (int c = 0, j = 0; c <= 256; c++) {
        while (j < k && (uint8_t)t->text[b->special[j]][0] < c) j++;
        b->special_at[c] = c == 256 ? k : j;
    }
    /* the pre-tokenizer */
    const char *regex = NULL;
    for (size_t i = 0; i < N_PRE; i++)
        if (!strcmp(pre, PRE[i].name)) {
            regex = PRE[i].regex;
            b->pre = PRE[i].name;
        }
    if (!regex)
        return kv_errorf(KV_EUNSUPPORTED, "%s: pre-tokenizer '%.64s' (tokenizer.ggml.pre) is not supported (supported: gpt-2, mpt, gpt-neox)",
                         path, pre);
    int err;
    PCRE2_SIZE eoff;
    b->re = pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                          &err, &eoff, NULL);
    if (!b->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return kv_errorf(KV_EUNSUPPORTED, "pre-tokenizer '%s': PCRE2 cannot compile its regex: %s", pre, (char *)msg);
    }
    pcre2_jit_compile(b->re, PCRE2_JIT_COMPLETE); /* the interpreter runs it where JIT is unavailable */
    return KV_OK;
}

static int bpe_alloc(int32_t n, kv_tokenizer **out) {
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

static int set_token(kv_tokenizer *t, int32_t i, const char *s, size_t len) {
    char *c = malloc(len + 1);
    if (!c) return kv_errorf(KV_ENOMEM, "out of memory");
    memcpy(c, s, len);
    c[len] = 0;
    t->text[i] = c;
    t->len[i] = (uint32_t)len;
    return KV_OK;
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
    if ((rc = bpe_alloc((int32_t)n, &t))) return rc;
    const char **ms = malloc((nm + 1) * sizeof *ms);
    size_t *ml = malloc((nm + 1) * sizeof *ml);
    if (!ms || !ml) {
        rc = kv_errorf(KV_ENOMEM, "out of memory");
        goto done;
    }
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if ((rc = kv_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &len))) goto done;
        if ((rc = set_token(t, (int32_t)i, s, len))) goto done;
        int32_t ty = TT_NORMAL;
        if (types) memcpy(&ty, (const char *)types + 4 * i, 4);
        t->type[i] = (uint8_t)(ty >= 1 && ty <= 6 ? ty : TT_NORMAL);
        if (t->type[i] == TT_BYTE) t->type[i] = TT_NORMAL; /* byte-level vocabularies have no <0xNN> tokens */
    }
    for (uint64_t i = 0; i < nm; i++)
        if ((rc = kv_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &ms[i], &ml[i]))) goto done;
    int64_t v;
    t->bos = kv_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) == KV_OK && v >= 0 && v < (int64_t)n ? (int32_t)v : -1;
    t->eos = kv_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) == KV_OK && v >= 0 && v < (int64_t)n ? (int32_t)v : -1;
    t->unk = kv_gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &v) == KV_OK && v >= 0 && v < (int64_t)n ? (int32_t)v : -1;
    merge_src src = {path, "tokenizer.ggml.merges", NULL};
    rc = bpe_finish(t, path, "tokenizer.ggml.tokens", pre, ms, ml, nm, &src);
done:
    free(ms);
    free(ml);
    if (rc) kv_tokenizer_free(t);
    else *out = t;
    return rc;
}

/* ------------------------------------------------- Hugging Face GPT-2 files */

static char *read_all(const char *path, size_t *len, int *rc) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        *rc = kv_errorf(KV_EIO, "%s: cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap + 1);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(b, 2 * cap + 1);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!b) {
        *rc = kv_errorf(KV_ENOMEM, "out of memory");
        return NULL;
    }
    if (bad) {
        free(b);
        *rc = kv_errorf(KV_EIO, "%s: read error", path);
        return NULL;
    }
    b[n] = 0;
    *len = n;
    *rc = KV_OK;
    return b;
}

int kv_bpe_load_hf(const char *encoder_json, const char *vocab_bpe, kv_tokenizer **out) {
    *out = NULL;
    int rc;
    size_t jl, vl;
    char *js = read_all(encoder_json, &jl, &rc);
    if (!js) return rc;
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
    const char **ms = NULL;
    size_t *ml = NULL;
    uint64_t *lines = NULL;
    if (n == 0) {
        rc = kv_errorf(KV_EFORMAT, "%s: no tokens", encoder_json);
        goto done;
    }
    if ((rc = bpe_alloc(n, &t))) goto done;
    for (const cJSON *e = root->child; e; e = e->next) {
        int32_t id = (int32_t)e->valuedouble;
        if (t->text[id]) {
            rc = kv_errorf(KV_EFORMAT, "%s: tokens \"%.64s\" and \"%.64s\" share id %d", encoder_json, t->text[id],
                           e->string, id);
            goto done;
        }
        if ((rc = set_token(t, id, e->string, strlen(e->string)))) goto done;
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
    if (!(vb = read_all(vocab_bpe, &vl, &rc))) goto done;
    uint64_t cap = 1;
    for (size_t i = 0; i < vl; i++) cap += vb[i] == '\n';
    ms = malloc(cap * sizeof *ms);
    ml = malloc(cap * sizeof *ml);
    lines = malloc(cap * sizeof *lines);
    if (!ms || !ml || !lines) {
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
            ms[nm] = p;
            ml[nm] = len;
            lines[nm] = line;
            nm++;
        }
        p = e + 1;
    }
    merge_src src = {vocab_bpe, NULL, lines};
    rc = bpe_finish(t, encoder_json, "encoder.json", "gpt-2", ms, ml, nm, &src);
done:
    cJSON_Delete(root);
    free(vb);
    free(ms);
    free(ml);
    free(lines);
    if (rc) kv_tokenizer_free(t);
    else *out = t;
    return rc;
}

/* --------------------------------------------------------------- encoding */

typedef struct cand { int32_t rank, l, r, lid, rid, res; } cand;

typedef struct work {
    int32_t *id, *prev, *next; /* one symbol per byte of a word; id -1 once merged into its left neighbour */
    size_t cap;
    cand *h; /* min-heap by rank, then position */
    size_t hn, hcap;
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

static void emit(int32_t *out, size_t cap, size_t *n, int32_t id) {
    if (*n < cap) out[*n] = id;
    (*n)++;
}

static int bpe_word(const kv_bpe *b, work *w, const uint8_t *s, size_t n, int32_t *out, size_t cap, size_t *n_out);

/* A word with bytes the vocabulary has no token for: each becomes U+FFFD. */
static int bpe_word_replaced(const kv_bpe *b, work *w, const uint8_t *s, size_t n, int32_t *out, size_t cap,
                             size_t *n_out) {
    uint8_t *r = malloc(3 * n);
    if (!r) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (b->byte_id[s[i]] >= 0) {
            r[k++] = s[i];
        } else {
            memcpy(r + k, "\xef\xbf\xbd", 3);
            k += 3;
        }
    }
    int rc = bpe_word(b, w, r, k, out, cap, n_out);
    free(r);
    return rc;
}

/* Encodes one word (bytes s[0..n)). */
static int bpe_word(const kv_bpe *b, work *w, const uint8_t *s, size_t n, int32_t *out, size_t cap, size_t *n_out) {
    for (size_t i = 0; i < n; i++)
        if (b->byte_id[s[i]] < 0) return bpe_word_replaced(b, w, s, n, out, cap, n_out);
    if (n == 1) {
        emit(out, cap, n_out, b->byte_id[s[0]]);
        return KV_OK;
    }
    if (n > w->cap) {
        size_t c = n > 2 * w->cap ? n : 2 * w->cap;
        int32_t *id = realloc(w->id, c * sizeof *id);
        if (id) w->id = id;
        int32_t *pv = realloc(w->prev, c * sizeof *pv);
        if (pv) w->prev = pv;
        int32_t *nx = realloc(w->next, c * sizeof *nx);
        if (nx) w->next = nx;
        if (!id || !pv || !nx) return -1;
        w->cap = c;
    }
    for (size_t i = 0; i < n; i++) {
        w->id[i] = b->byte_id[s[i]];
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    w->hn = 0;
    for (size_t i = 1; i < n; i++)
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
    for (int32_t i = 0; i >= 0; i = w->next[i]) emit(out, cap, n_out, w->id[i]);
    return KV_OK;
}

/* Splits fragment s[0..n) (no special tokens in it) into words. */
static int pretokenize(const kv_bpe *b, work *w, pcre2_match_data *md, const char *s, size_t n, int32_t *out, size_t cap,
                       size_t *n_out) {
    size_t off = 0;
    while (off < n) {
        int m = pcre2_match(b->re, (PCRE2_SPTR)s, n, off, 0, md, NULL);
        if (m == PCRE2_ERROR_JIT_STACKLIMIT || m == PCRE2_ERROR_MATCHLIMIT || m == PCRE2_ERROR_HEAPLIMIT ||
            m == PCRE2_ERROR_NOMEMORY)
            m = pcre2_match(b->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_JIT, md, NULL);
        size_t ms = n, me = n;
        if (m >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            ms = ov[0];
            me = ov[1];
        } else if (m != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof msg);
            return kv_errorf(KV_EINVAL, "pre-tokenizer '%s': matching at byte %zu failed: %s", b->pre, off, (char *)msg);
        }
        if (ms > off && bpe_word(b, w, (const uint8_t *)s + off, ms - off, out, cap, n_out)) /* bytes no pattern takes */
            return kv_errorf(KV_ENOMEM, "out of memory tokenizing");
        if (me <= ms) { /* an empty match (not in these patterns): take one byte */
            if (ms >= n) break;
            me = ms + 1;
        }
        if (me > ms && bpe_word(b, w, (const uint8_t *)s + ms, me - ms, out, cap, n_out))
            return kv_errorf(KV_ENOMEM, "out of memory tokenizing");
        off = me;
    }
    return KV_OK;
}

/* The longest control or user-defined token at s[0..n), or -1. */
static int32_t special_at(const kv_tokenizer *t, const char *s, size_t n) {
    const kv_bpe *b = t->bpe;
    uint8_t c = (uint8_t)s[0];
    for (int32_t j = b->special_at[c]; j < b->special_at[c + 1]; j++) {
        int32_t id = b->special[j];
        uint32_t l = t->len[id];
        if (l <= n && (l == 1 || t->text[id][1] == s[1]) && !memcmp(t->text[id], s, l)) return id;
    }
    return -1;
}

int kv_bpe_encode(const kv_tokenizer *t, const char *text, size_t len, int32_t *out, size_t cap, size_t *n_out) {
    const kv_bpe *b = t->bpe;
    if (len == 0) return KV_OK;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(b->re, NULL);
    if (!md) return kv_errorf(KV_ENOMEM, "out of memory");
    work w = {0};
    int rc = KV_OK;
    size_t frag = 0;
    for (size_t i = 0; i < len && !rc;) {
        int32_t sp = b->special_at[(uint8_t)text[i]] < b->special_at[(uint8_t)text[i] + 1] ? special_at(t, text + i, len - i) : -1;
        if (sp < 0) {
            i++;
            continue;
        }
        if (i > frag) rc = pretokenize(b, &w, md, text + frag, i - frag, out, cap, n_out);
        emit(out, cap, n_out, sp);
        i += t->len[sp];
        frag = i;
    }
    if (!rc && len > frag) rc = pretokenize(b, &w, md, text + frag, len - frag, out, cap, n_out);
    pcre2_match_data_free(md);
    free(w.id);
    free(w.prev);
    free(w.next);
    free(w.h);
    return rc;
}
