/* tokenizer_pre.c - the byte-level BPE pre-tokenizers and Unicode NFC.
 *
 * A pre-tokenizer cuts a fragment of text (no special tokens in it) into
 * words that BPE then merges separately. Each one is a short list of
 * regexes applied in sequence, as llama.cpp's llm_tokenizer_bpe does
 * (src/llama-vocab.cpp; unicode_regex_split in src/unicode.cpp): the first
 * regex cuts the fragment into its matches and the gaps between them, the
 * second cuts each of those pieces the same way, and so on. Gaps are words
 * too, so no byte is ever lost. The regexes are llama.cpp's for each
 * tokenizer.ggml.pre name (its rewrites of the Hugging Face patterns, e.g.
 * "(?i:'s|...)" spelled "'[sS]|..."), compiled with PCRE2 in UTF mode with
 * Unicode properties. */
#define _POSIX_C_SOURCE 200809L
#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "kv_error.h"
#include "tokenizer_impl.h"

#define MAX_RE 6

/* llama.cpp's GPT-2 pattern (no trailing "|\s+": whitespace it leaves is a
 * gap, which is a word of its own anyway). */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
/* Llama 3 and Qwen2: the same pattern but for the digits (1..3 or one). */
#define RE_L3(DIGITS)                                                                                                  \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" DIGITS            \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define HF_L3(DIGITS)                                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" DIGITS                                          \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* DeepSeek LLM's cased letters (Unicode Lu, Ll, Lt), as llama.cpp lists them. */
#define DS_CASED                                                                                                       \
    "A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}"     \
    "\\x{370}-\\x{373}\\x{376}-\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}"      \
    "\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}"        \
    "\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}" \
    "\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}" \
    "\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}" \
    "\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}" \
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}"  \
    "\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}-\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}" \
    "\\x{2CEB}-\\x{2CEE}\\x{2CF2}-\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}" \
    "\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}" \
    "\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}"         \
    "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}"

/* One row per pre-tokenizer: the names tokenizer.ggml.pre gives it, the
 * pattern a Hugging Face tokenizer.json Split holds for it (NULL: none we
 * recognise), llama.cpp's regexes, and what llama.cpp or the models'
 * tokenizer.json ask for besides. Source: llama.cpp src/llama-vocab.cpp
 * (llm_tokenizer_bpe and the tokenizer_pre names in load()). */
static const kv_pre_def PRE[] = {
    {{"gpt-2"}, NULL, {RE_GPT2}, 0, 0},
    {{"mpt"}, NULL, {RE_GPT2}, 0, 0},
    {{"gpt-neox"}, NULL, {RE_GPT2}, 0, 0},
    /* Llama 3: llama.cpp sets ignore_merges, as its tokenizer.json does */
    {{"llama-bpe", "llama3", "llama-v3"}, HF_L3("{1,3}"), {RE_L3("{1,3}")}, 1, 0},
    /* Qwen2/2.5/3 and the DeepSeek-R1 Qwen distills: their tokenizer.json
     * normalises to NFC first (llama.cpp does not) */
    {{"qwen2", "deepseek-r1-qwen"}, HF_L3(""), {RE_L3("")}, 0, 1},
    {{"deepseek-llm"},
     NULL,
     {"[\\r\\n]", "\\s?[" DS_CASED "]+",
      "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+", "\\s+$",
      "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}+"},
     0, 0},
    {{"falcon"}, NULL, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}, 0, 0},
    {{"starcoder"}, NULL, {"\\p{N}", RE_GPT2}, 0, 0},
    {{"refact"}, NULL, {"\\p{N}", RE_GPT2}, 0, 0},
    {{"command-r"}, NULL, {"\\p{N}", RE_GPT2}, 0, 0},
};
#define N_PRE (sizeof PRE / sizeof PRE[0])

struct kv_pre {
    const kv_pre_def *def;
    const char *name; /* the row's first name */
    pcre2_code *re[MAX_RE];
    int n_re;
};

const kv_pre_def *kv_pre_find(const char *name) {
    for (size_t i = 0; i < N_PRE; i++)
        for (int k = 0; k < 4 && PRE[i].names[k]; k++)
            if (!strcmp(name, PRE[i].names[k])) return &PRE[i];
    return NULL;
}

const kv_pre_def *kv_pre_find_hf(const char *pattern) {
    for (size_t i = 0; i < N_PRE; i++)
        if (PRE[i].hf_regex && !strcmp(pattern, PRE[i].hf_regex)) return &PRE[i];
    return NULL;
}

kv_pre_info kv_pre_info_of(const char *name) {
    const kv_pre_def *d = name ? kv_pre_find(name) : NULL;
    return d ? (kv_pre_info){1, d->nfc, d->ignore_merges} : (kv_pre_info){0, 0, 0};
}

void kv_pre_names(char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; i < N_PRE; i++)
        for (int j = 0; j < 4 && PRE[i].names[j] && k < cap; j++)
            k += (size_t)snprintf(buf + k, cap - k, "%s%s", k ? ", " : "", PRE[i].names[j]);
}

void kv_pre_free(kv_pre *p) {
    if (!p) return;
    for (int i = 0; i < p->n_re; i++) pcre2_code_free(p->re[i]);
    free(p);
}

int kv_pre_new(const kv_pre_def *def, kv_pre **out) {
    *out = NULL;
    kv_pre *p = calloc(1, sizeof *p);
    if (!p) return kv_errorf(KV_ENOMEM, "out of memory");
    p->def = def;
    p->name = def->names[0];
    for (int i = 0; i < MAX_RE && def->regex[i]; i++) {
        int err;
        PCRE2_SIZE eoff;
        /* DOLLAR_ENDONLY: "$" is the end of the piece, as in std::regex, not before a final newline */
        p->re[i] = pcre2_compile((PCRE2_SPTR)def->regex[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY, &err, &eoff,
                                 NULL);
        if (!p->re[i]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            kv_pre_free(p);
            return kv_errorf(KV_EUNSUPPORTED, "pre-tokenizer '%s': PCRE2 cannot compile regex %d at offset %zu: %s",
                             def->names[0], i, (size_t)eoff, (char *)msg);
        }
        pcre2_jit_compile(p->re[i], PCRE2_JIT_COMPLETE); /* the interpreter runs it where JIT is unavailable */
        p->n_re = i + 1;
    }
    *out = p;
    return KV_OK;
}

const char *kv_pre_name(const kv_pre *p) { return p->name; }

/* One match of regex k in s[0..n) from off: its start and end, or n, n. */
static int pre_match(const kv_pre *p, int k, void *md, const char *s, size_t n, size_t off, size_t *ms, size_t *me) {
    pcre2_match_data *m = md;
    int rc = pcre2_match(p->re[k], (PCRE2_SPTR)s, n, off, 0, m, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT ||
        rc == PCRE2_ERROR_NOMEMORY)
        rc = pcre2_match(p->re[k], (PCRE2_SPTR)s, n, off, PCRE2_NO_JIT, m, NULL);
    *ms = *me = n;
    if (rc >= 0) { /* 0: matched, the ovector too small for the groups (only the whole match is read) */
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m);
        *ms = ov[0];
        *me = ov[1];
        return KV_OK;
    }
    if (rc == PCRE2_ERROR_NOMATCH) return KV_OK;
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return kv_errorf(KV_EINVAL, "pre-tokenizer '%s': regex %d failed at byte %zu: %s", p->name, k, off, (char *)msg);
}

/* Cuts s[0..n) with regex k and hands each match and gap to regex k + 1;
 * past the last regex, to fn as a word. Each piece is its own subject, so
 * "$" and look-aheads see the piece's end, as llama.cpp's split does. */
static int pre_split_at(const kv_pre *p, int k, void *md, const char *s, size_t n, kv_word_fn fn, void *ctx) {
    if (k == p->n_re) return fn(ctx, s, n);
    size_t off = 0;
    int rc = KV_OK;
    while (off < n && !rc) {
        size_t ms, me;
        if ((rc = pre_match(p, k, md, s, n, off, &ms, &me))) break;
        if (ms > off && (rc = pre_split_at(p, k + 1, md, s + off, ms - off, fn, ctx))) break;
        if (me <= ms) { /* an empty match: no word, step one byte on */
            if (ms >= n) break;
            rc = pre_split_at(p, k + 1, md, s + ms, 1, fn, ctx);
            off = ms + 1;
            continue;
        }
        rc = pre_split_at(p, k + 1, md, s + ms, me - ms, fn, ctx);
        off = me;
    }
    return rc;
}

/* One ovector pair is all the split reads, for every regex. */
void *kv_pre_match_data(void) { return pcre2_match_data_create(1, NULL); }

void kv_pre_match_data_free(void *md) { pcre2_match_data_free(md); }

int kv_pre_split(const kv_pre *p, void *md, const char *s, size_t n, kv_word_fn fn, void *ctx) {
    return pre_split_at(p, 0, md, s, n, fn, ctx);
}

/* ------------------------------------------------------------------- NFC */

/* Can the character at s start a run NFC leaves alone? Only ASCII is that
 * cheap to tell: an ASCII character never composes with the one before it. */
static int ascii_at(const char *s) { return (unsigned char)*s < 0x80; }

/* NFC of s[0..n) into *buf (realloc'd; *cap its size) and its length in
 * *out_n. Runs of ASCII are copied; each stretch from the character before
 * non-ASCII bytes up to the next ASCII byte goes through utf8proc. A stretch
 * that is not valid UTF-8 is kept as it is (Hugging Face never sees such
 * bytes: its strings are Unicode). */
int kv_nfc(const char *s, size_t n, char **buf, size_t *cap, size_t *out_n) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && ascii_at(s + j)) j++;
        /* the last ASCII character may compose with what follows (e + U+0301) */
        size_t plain = j < n && j > i ? j - 1 : j;
        size_t end = j;
        while (end < n && !ascii_at(s + end)) end++;
        size_t need = k + (plain - i) + 4 * (end - plain) + 16;
        if (need > *cap) {
            size_t c = need * 2;
            char *b = realloc(*buf, c);
            if (!b) return kv_errorf(KV_ENOMEM, "out of memory normalising %zu bytes", n);
            *buf = b;
            *cap = c;
        }
        memcpy(*buf + k, s + i, plain - i);
        k += plain - i;
        if (end > plain) {
            utf8proc_uint8_t *o = NULL;
            utf8proc_ssize_t ol = utf8proc_map((const utf8proc_uint8_t *)s + plain, (utf8proc_ssize_t)(end - plain), &o,
                                               UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (ol < 0 || (size_t)ol > 4 * (end - plain) + 16) { /* invalid UTF-8: as it is */
                memcpy(*buf + k, s + plain, end - plain);
                k += end - plain;
            } else {
                memcpy(*buf + k, o, (size_t)ol);
                k += (size_t)ol;
            }
            free(o);
        }
        i = end;
    }
    *out_n = k;
    return KV_OK;
}
