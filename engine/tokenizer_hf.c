/* tokenizer_hf.c - a Hugging Face tokenizer.json (with tokenizer_config.json
 * beside it for BOS, EOS and add_bos) loaded directly.
 *
 * Two shapes are read, both BPE models: byte-level BPE (a ByteLevel
 * pre-tokenizer, alone as GPT-2 has it or after a Split whose regex is one
 * of the pre-tokenizer table's: Llama 3, Qwen2/2.5/3), with no normaliser
 * or NFC; and SentencePiece-style BPE over U+2581 (a normaliser that turns
 * spaces into U+2581, prepending one or not: Llama 2, Gemma 3) with byte
 * fallback. Anything else is refused naming the part that is not
 * supported, so a tokenizer never silently encodes differently from its
 * model's. Added tokens are matched whole in the raw text (special ones
 * become control tokens, the others user-defined), as Hugging Face does
 * for added tokens that are not normalised and strip nothing. */
#define _POSIX_C_SOURCE 200809L

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "kv_error.h"
#include "tokenizer_impl.h"

#define SPACE_MARK "\xe2\x96\x81" /* U+2581 */

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jtrue(const cJSON *o, const char *key) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key)); }

static int jtype_is(const cJSON *o, const char *type) {
    const char *t = jstr(o, "type");
    return t && !strcmp(t, type);
}

static const char *jtype(const cJSON *o) {
    const char *t = jstr(o, "type");
    return t ? t : "(no type)";
}

/* A Replace normaliser of " " by U+2581, or a Prepend of U+2581. */
static int is_replace_space(const cJSON *n) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
    const char *s = jstr(pat, "String"), *c = jstr(n, "content");
    return jtype_is(n, "Replace") && s && c && !strcmp(s, " ") && !strcmp(c, SPACE_MARK);
}

static int is_prepend_mark(const cJSON *n) {
    const char *p = jstr(n, "prepend");
    return jtype_is(n, "Prepend") && p && !strcmp(p, SPACE_MARK);
}

/* What the tokenizer.json asks for, as kv_bpe_opts (o->pre set from the table). */
typedef struct hf_shape { int spm; } hf_shape;

/* The normaliser: none, NFC, Replace(" " -> U+2581), or Prepend(U+2581) then that Replace. */
static int read_normalizer(const char *path, const cJSON *n, kv_bpe_opts *o, hf_shape *sh) {
    if (!n || cJSON_IsNull(n)) return KV_OK;
    if (jtype_is(n, "NFC")) {
        o->nfc = 1;
        return KV_OK;
    }
    if (is_replace_space(n)) {
        sh->spm = 1;
        return KV_OK;
    }
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
    if (jtype_is(n, "Sequence") && cJSON_GetArraySize(seq) == 2 && is_prepend_mark(cJSON_GetArrayItem(seq, 0)) &&
        is_replace_space(cJSON_GetArrayItem(seq, 1))) {
        sh->spm = 1;
        o->prepend_space = 1;
        return KV_OK;
    }
    const cJSON *first = jtype_is(n, "Sequence") ? cJSON_GetArrayItem(seq, 0) : n;
    return kv_errorf(KV_EUNSUPPORTED,
                     "%s: normalizer '%s'%s%s is not supported (supported: none, NFC, Replace(\" \" -> U+2581), "
                     "Sequence[Prepend(U+2581), Replace(\" \" -> U+2581)])",
                     path, jtype(n), first != n ? " starting with " : "", first != n ? jtype(first) : "");
}

static int bytelevel_plain(const cJSON *p, int use_regex) {
    const cJSON *ur = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
    int regex = ur ? cJSON_IsTrue(ur) : 1; /* Hugging Face's default: the GPT-2 regex */
    return jtype_is(p, "ByteLevel") && !jtrue(p, "add_prefix_space") && regex == use_regex;
}

/* The pre-tokenizer: ByteLevel (GPT-2's regex), Sequence[Split(regex of the
 * table), ByteLevel without regex], or for SentencePiece-style vocabularies
 * none or Split(" ", MergedWithPrevious). */
static int read_pre(const char *path, const cJSON *p, kv_bpe_opts *o, const hf_shape *sh) {
    if (sh->spm) {
        if (!p || cJSON_IsNull(p)) return KV_OK;
        const char *s = jstr(cJSON_GetObjectItemCaseSensitive(p, "pattern"), "String"), *bh = jstr(p, "behavior");
        /* Gemma 3's split on " " finds none: the normaliser already made every space U+2581 */
        if (jtype_is(p, "Split") && s && !strcmp(s, " ") && bh && !strcmp(bh, "MergedWithPrevious")) return KV_OK;
        return kv_errorf(KV_EUNSUPPORTED, "%s: pre_tokenizer '%s' after a U+2581 normalizer is not supported", path,
                         jtype(p));
    }
    if (bytelevel_plain(p, 1)) {
        o->byte_level = 1;
        o->pre = "gpt-2";
        return KV_OK;
    }
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
    const cJSON *split = cJSON_GetArrayItem(seq, 0), *bl = cJSON_GetArrayItem(seq, 1);
    if (jtype_is(p, "Sequence") && cJSON_GetArraySize(seq) == 2 && jtype_is(split, "Split") && bytelevel_plain(bl, 0)) {
        const char *re = jstr(cJSON_GetObjectItemCaseSensitive(split, "pattern"), "Regex"), *bh = jstr(split, "behavior");
        const kv_pre_def *def = re ? kv_pre_find_hf(re) : NULL;
        if (!def || !bh || strcmp(bh, "Isolated") || jtrue(split, "invert"))
            return kv_errorf(KV_EUNSUPPORTED,
                             "%s: pre_tokenizer Split(%.120s, %s) is not one kvbench knows (known: the Llama 3 "
                             "and Qwen2 regexes, Isolated)",
                             path, re ? re : "(no regex)", bh ? bh : "?");
        o->byte_level = 1;
        o->pre = def->names[0];
        return KV_OK;
    }
    char what[256] = "";
    if (jtype_is(p, "Sequence"))
        for (const cJSON *e = seq ? seq->child : NULL; e; e = e->next)
            snprintf(what + strlen(what), sizeof what - strlen(what), "%s%s", e == seq->child ? "" : ", ", jtype(e));
    return kv_errorf(KV_EUNSUPPORTED, "%s: pre_tokenizer '%s%s%s%s' is not supported (supported: ByteLevel, "
                                      "Sequence[Split(Llama 3 or Qwen2 regex), ByteLevel])",
                     path, p ? jtype(p) : "none", *what ? "[" : "", what, *what ? "]" : "");
}

/* The model: BPE with nothing per-word that kvbench does not do. */
static int read_model(const char *path, const cJSON *m, kv_bpe_opts *o) {
    if (!cJSON_IsObject(m)) return kv_errorf(KV_EFORMAT, "%s: no \"model\" object", path);
    if (!jtype_is(m, "BPE"))
        return kv_errorf(KV_EUNSUPPORTED, "%s: model type '%s' is not supported (supported: BPE)", path, jtype(m));
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (cJSON_IsNumber(d) && d->valuedouble != 0)
        return kv_errorf(KV_EUNSUPPORTED, "%s: BPE dropout %g is not supported", path, d->valuedouble);
    static const char *const affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *s = jstr(m, affix[i]);
        if (s && *s) return kv_errorf(KV_EUNSUPPORTED, "%s: BPE %s '%s' is not supported", path, affix[i], s);
    }
    o->ignore_merges = jtrue(m, "ignore_merges");
    o->byte_fallback = jtrue(m, "byte_fallback");
    o->fuse_unk = jtrue(m, "fuse_unk");
    return KV_OK;
}

/* The largest id of model.vocab and added_tokens, checking their shapes. */
static int count_ids(const char *path, const cJSON *vocab, const cJSON *added, int32_t *n) {
    *n = 0;
    if (!cJSON_IsObject(vocab)) return kv_errorf(KV_EFORMAT, "%s: model.vocab: expected an object of token -> id", path);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 22) ||
            e->valuedouble != (double)(int32_t)e->valuedouble)
            return kv_errorf(KV_EFORMAT, "%s: model.vocab \"%.64s\": expected an id in 0..2^22", path, e->string);
        if ((int32_t)e->valuedouble >= *n) *n = (int32_t)e->valuedouble + 1;
    }
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 22) || !jstr(a, "content"))
            return kv_errorf(KV_EFORMAT, "%s: added_tokens: expected objects with an id in 0..2^22 and a content", path);
        if ((int32_t)id->valuedouble >= *n) *n = (int32_t)id->valuedouble + 1;
    }
    return *n > 0 ? KV_OK : kv_errorf(KV_EFORMAT, "%s: model.vocab is empty", path);
}

/* The vocabulary, then the added tokens over it; holes become unused [PADn]. */
static int read_tokens(const char *path, kv_tokenizer *t, const cJSON *vocab, const cJSON *added, const kv_bpe_opts *o) {
    int rc;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id = (int32_t)e->valuedouble;
        if (t->text[id])
            return kv_errorf(KV_EFORMAT, "%s: model.vocab: \"%.64s\" and \"%.64s\" share id %d", path, t->text[id],
                             e->string, id);
        if ((rc = kv_bpe_set_token(t, id, e->string, strlen(e->string)))) return rc;
        size_t l = strlen(e->string);
        int is_byte = !o->byte_level && l == 6 && !strncmp(e->string, "<0x", 3) && e->string[5] == '>';
        t->type[id] = is_byte ? TT_BYTE : TT_NORMAL;
    }
    static const char *const unsupported[] = {"lstrip", "rstrip", "single_word", "normalized"};
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(a, "id")->valuedouble;
        const char *c = jstr(a, "content");
        for (int k = 0; k < 4; k++)
            if (jtrue(a, unsupported[k]))
                return kv_errorf(KV_EUNSUPPORTED, "%s: added token %d \"%.64s\": %s is not supported", path, id, c,
                                 unsupported[k]);
        if (t->text[id] && strcmp(t->text[id], c))
            return kv_errorf(KV_EFORMAT, "%s: added token %d \"%.64s\" is \"%.64s\" in model.vocab", path, id, c,
                             t->text[id]);
        if ((rc = kv_bpe_set_token(t, id, c, strlen(c)))) return rc;
        t->type[id] = jtrue(a, "special") ? TT_CONTROL : TT_USER;
    }
    for (int32_t i = 0; i < t->n; i++)
        if (!t->text[i]) { /* as llama.cpp's converter pads a vocabulary */
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", i);
            if ((rc = kv_bpe_set_token(t, i, pad, strlen(pad)))) return rc;
            t->type[i] = TT_UNUSED;
        }
    return KV_OK;
}

/* model.merges: "left right" strings or [left, right] pairs. */
static int read_merges(const char *path, const cJSON *merges, kv_merge_str **out, uint64_t *nm) {
    int n = cJSON_GetArraySize(merges);
    *out = NULL;
    *nm = 0;
    if (!cJSON_IsArray(merges)) return kv_errorf(KV_EFORMAT, "%s: model.merges: expected an array", path);
    kv_merge_str *m = malloc(((size_t)n + 1) * sizeof *m);
    if (!m) return kv_errorf(KV_ENOMEM, "out of memory");
    int i = 0;
    for (const cJSON *e = merges->child; e; e = e->next, i++) {
        if (cJSON_IsString(e)) {
            m[i] = kv_merge_split(e->valuestring, strlen(e->valuestring));
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            const char *l = e->child->valuestring, *r = e->child->next->valuestring;
            m[i] = (kv_merge_str){l, r, strlen(l), strlen(r)};
        } else {
            free(m);
            return kv_errorf(KV_EFORMAT, "%s: model.merges[%d]: expected \"left right\" or [left, right]", path, i);
        }
    }
    *out = m;
    *nm = (uint64_t)i;
    return KV_OK;
}

/* The id of a token named by a string or {"content": ...}, or -1. */
static int32_t token_named(const kv_tokenizer *t, const cJSON *v) {
    const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
    return s ? kv_tok_lookup(t, s, strlen(s)) : -1;
}

/* BOS when the post-processor puts a special token in front of a single
 * sequence (Llama 3.1's TemplateProcessing), or -1. */
static int32_t template_bos(const kv_tokenizer *t, const cJSON *pp) {
    if (jtype_is(pp, "Sequence")) {
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(pp, "processors");
        for (const cJSON *e = ps ? ps->child : NULL; e; e = e->next) {
            int32_t id = template_bos(t, e);
            if (id >= 0) return id;
        }
        return -1;
    }
    if (!jtype_is(pp, "TemplateProcessing")) return -1;
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "single"), 0);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    return st ? token_named(t, cJSON_GetObjectItemCaseSensitive(st, "id")) : -1;
}

/* BOS, EOS, UNK and add_bos from tokenizer_config.json (when there) and the post-processor. */
static int read_specials(const char *dir, kv_tokenizer *t, const cJSON *root) {
    t->unk = token_named(t, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "model"), "unk_token"));
    if (t->unk >= 0) t->type[t->unk] = TT_UNKNOWN;
    int32_t tbos = template_bos(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"));
    t->bos = tbos;
    t->add_bos = tbos >= 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return KV_OK; /* optional */
    fclose(f);
    size_t len;
    char *js;
    int rc = kv_read_file(path, &js, &len);
    if (rc) return rc;
    cJSON *c = cJSON_ParseWithLength(js, len);
    free(js);
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return kv_errorf(KV_EFORMAT, "%s: expected a JSON object", path);
    }
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(c, "bos_token"))) t->bos = cJSON_IsNull(v) ? -1 : token_named(t, v);
    if ((v = cJSON_GetObjectItemCaseSensitive(c, "eos_token"))) t->eos = cJSON_IsNull(v) ? -1 : token_named(t, v);
    if ((v = cJSON_GetObjectItemCaseSensitive(c, "add_bos_token"))) t->add_bos = cJSON_IsTrue(v);
    if (t->bos < 0) t->add_bos = 0;
    cJSON_Delete(c);
    return KV_OK;
}

/* Everything read from the parsed tokenizer.json. */
static int hf_from_json(const char *dir, const char *path, const cJSON *root, kv_tokenizer **out) {
    kv_bpe_opts o = {0};
    hf_shape sh = {0};
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    int rc;
    if ((rc = read_model(path, model, &o)) ||
        (rc = read_normalizer(path, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), &o, &sh)) ||
        (rc = read_pre(path, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &o, &sh)))
        return rc;
    if (o.byte_level && o.prepend_space)
        return kv_errorf(KV_EUNSUPPORTED, "%s: a U+2581 normalizer with a ByteLevel pre-tokenizer is not supported", path);
    if (!o.byte_level && o.nfc) return kv_errorf(KV_EUNSUPPORTED, "%s: NFC without a ByteLevel pre-tokenizer", path);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    int32_t n;
    if ((rc = count_ids(path, vocab, added, &n))) return rc;
    kv_tokenizer *t = NULL;
    kv_merge_str *ms = NULL;
    uint64_t nm = 0;
    if ((rc = kv_bpe_alloc(n, &t))) return rc;
    if ((rc = read_tokens(path, t, vocab, added, &o)) ||
        (rc = read_merges(path, cJSON_GetObjectItemCaseSensitive(model, "merges"), &ms, &nm)))
        goto done;
    t->add_space_prefix = o.prepend_space;
    if ((rc = kv_bpe_build(t, path, "model.merges", NULL, &o, ms, nm))) goto done;
    rc = read_specials(dir, t, root);
done:
    free(ms);
    if (rc) kv_tokenizer_free(t);
    else *out = t;
    return rc;
}

int kv_tokenizer_load_hf_json(const char *dir, kv_tokenizer **out) {
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    size_t len;
    char *js;
    int rc = kv_read_file(path, &js, &len);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(js, len);
    const char *err = root ? NULL : cJSON_GetErrorPtr();
    size_t at = err && err >= js && err <= js + len ? (size_t)(err - js) : len;
    free(js);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return kv_errorf(KV_EFORMAT, "%s: byte %zu: expected a JSON object (tokenizer.json)", path, at);
    }
    rc = hf_from_json(dir, path, root, out);
    cJSON_Delete(root);
    return rc;
}
