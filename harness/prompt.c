/* prompt.c - see prompt.h. */
#define _POSIX_C_SOURCE 200809L
#include "prompt.h"

#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"

/* The chat template around one user message (after the system message,
 * when given), with the generation prompt; BOS is left out of the text. */
static int wrap(const hx_prompt_spec *ps, const char *content, char **out) {
    ds_chat_msg m[2];
    int n = 0;
    if (ps->system) m[n++] = (ds_chat_msg){"system", ps->system};
    m[n++] = (ds_chat_msg){"user", content};
    ds_chat_opts o = ds_chat_default_opts();
    o.add_generation_prompt = 1;
    o.bos = "";
    o.jinja = ps->jinja; /* Mistral v7 Tekken's default system message */
    size_t len;
    return ds_chat_render(ps->chat, m, n, &o, out, &len);
}

static int64_t count(const hx_prompt_spec *ps, const char *s) { return ps->count(ps->user, s, strlen(s)); }

/* The last occurrence of needle in hay, or NULL. */
static const char *last_of(const char *hay, const char *needle) {
    const char *best = NULL;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) best = p;
    return best;
}

/* Where the question begins in the final text: the template's question
 * part, found in the user message as the chat template wrote it (templates
 * may trim a message's ends, so the part is searched without its
 * surrounding white space). */
static int locate_question(const hx_prompt_spec *ps, const ds_sample *s, const char *content, hx_prompt *p) {
    size_t at;
    int rc = ds_template_question_at(ps->tp, s, content, &at);
    if (rc || !ps->chat) {
        p->question_at = at;
        return rc;
    }
    const char *q = content + at;
    while (*q == ' ' || *q == '\n' || *q == '\t') q++;
    size_t n = strlen(q);
    while (n > 0 && (q[n - 1] == ' ' || q[n - 1] == '\n' || q[n - 1] == '\t')) n--;
    char *part = strndup(q, n);
    if (!part) return kv_errorf(KV_ENOMEM, "out of memory");
    const char *hit = n ? last_of(p->text, part) : NULL;
    free(part);
    if (!hit)
        return kv_errorf(KV_EINVAL, "sample %s: the chat template's text does not hold the question as written",
                         s->id);
    p->question_at = (size_t)(hit - p->text);
    return KV_OK;
}

/* text + suffix (NULL: none) into a malloc'd string. */
static int with_suffix(const char *text, const char *suffix, char **out) {
    size_t a = strlen(text), b = suffix ? strlen(suffix) : 0;
    if (!(*out = malloc(a + b + 1))) return kv_errorf(KV_ENOMEM, "out of memory");
    memcpy(*out, text, a);
    if (b) memcpy(*out + a, suffix, b);
    (*out)[a + b] = 0;
    return KV_OK;
}

/* The template's text cut to `budget` tokens, then wrapped; the budget is
 * lowered by what a wrapped text still exceeds (joins may tokenize
 * differently from their parts), a few times at most. */
static int render_fit(const hx_prompt_spec *ps, const ds_sample *s, int64_t budget, char **content, hx_prompt *p) {
    const char *suffix = ps->suffix_field ? ds_sample_field(s, ps->suffix_field) : NULL;
    int64_t suffix_tokens = suffix && *suffix ? count(ps, suffix) : 0;
    if (suffix_tokens < 0) return (int)suffix_tokens;
    const int64_t limit = ps->max_tokens - 1 - suffix_tokens; /* BOS, the suffix */
    budget -= suffix_tokens;
    for (int attempt = 0; attempt < 4; attempt++) {
        if (budget < 1)
            return kv_errorf(KV_EINVAL, "sample %s: the chat template leaves no room for the prompt within %d tokens",
                             s->id, ps->max_tokens);
        int rc = ds_template_render(ps->tp, s, (int32_t)budget, ps->count, ps->user, content, &p->cut_chars);
        if (rc) return rc;
        if (!ps->chat) return with_suffix(*content, suffix, &p->text);
        if ((rc = wrap(ps, *content, &p->text))) return rc;
        int64_t n = count(ps, p->text);
        if (n < 0) return (int)n;
        if (n <= limit) {
            char *w = p->text;
            rc = with_suffix(w, suffix, &p->text);
            free(w);
            return rc;
        }
        budget -= n - limit;
        free(*content);
        free(p->text);
        *content = p->text = NULL;
    }
    return kv_errorf(KV_EINVAL, "sample %s: the wrapped prompt does not fit %d tokens", s->id, ps->max_tokens);
}

int hx_prompt_render(const hx_prompt_spec *ps, const ds_sample *s, hx_prompt *out) {
    memset(out, 0, sizeof *out);
    int64_t overhead = 0;
    if (ps->chat) { /* what the wrap costs with an empty message */
        char *w;
        int rc = wrap(ps, "", &w);
        if (rc) return rc;
        overhead = count(ps, w);
        free(w);
        if (overhead < 0) return (int)overhead;
    }
    char *content = NULL;
    int rc = render_fit(ps, s, ps->max_tokens - 1 - overhead, &content, out);
    if (!rc && ps->chat) {
        int64_t a = count(ps, out->text), b = count(ps, content);
        if (a < 0 || b < 0) rc = a < 0 ? (int)a : (int)b;
        else out->wrap_tokens = (int32_t)(a - b);
    }
    if (!rc && ps->want_question) rc = locate_question(ps, s, content, out);
    free(content);
    if (rc) hx_prompt_free(out);
    return rc;
}

/* Code points in s[0..n) (bytes that are not UTF-8 continuation bytes). */
static size_t code_points(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

int hx_prompt_longbench(const hx_prompt_spec *ps, const ds_lb_task *t, const ds_sample *s, const ds_lb_codec *c,
                        hx_prompt *out) {
    memset(out, 0, sizeof *out);
    char *raw = NULL, *cut = NULL;
    int64_t n_raw = 0;
    int truncated = 0;
    int rc = ds_lb_format(t, s, &raw);
    if (!rc) rc = ds_lb_truncate(c, raw, ps->max_tokens, &cut, &n_raw, &truncated);
    if (!rc && truncated) {
        size_t a = code_points(raw, strlen(raw)), b = code_points(cut, strlen(cut));
        out->cut_chars = a > b ? a - b : 0;
    }
    if (!rc && (t->no_chat || !ps->chat)) { /* pred.py: trec, triviaqa, samsum, lsht, lcc, repobench-p */
        out->text = cut;
        cut = NULL;
    } else if (!rc) {
        rc = wrap(ps, cut, &out->text);
        int64_t a = rc ? 0 : count(ps, out->text), b = rc ? 0 : count(ps, cut);
        if (!rc && (a < 0 || b < 0)) rc = a < 0 ? (int)a : (int)b;
        if (!rc) out->wrap_tokens = (int32_t)(a - b);
    }
    free(raw);
    free(cut);
    if (rc) hx_prompt_free(out);
    return rc;
}

void hx_prompt_free(hx_prompt *p) {
    free(p->text);
    memset(p, 0, sizeof *p);
}
