/* text.c - plain text sets (for fidelity and streaming perplexity) and
 * RULER's JSONL: its input whole (ds_load_ruler) or split into context,
 * question and answer prefix (ds_ruler_load, also kvpress's layout). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/file.h"
#include "../base/kv_error.h"
#include "internal.h"
#include "json_util.h"
#include "ruler.h"

/* user: non-NULL for RULER's layout (input, outputs). */
static int text_object(void *user, const ds_load_params *p, ds_set *out, long line, const cJSON *o) {
    int ruler = user != NULL;
    int rc = KV_OK;
    ds_str ref = {0};
    const char *key = ruler ? "input" : (p->doc_field ? p->doc_field : "text");
    const char *doc = ds_json_string(o, key);
    if (!doc || !*doc) {
        rc = ds_bad_row(p, out, line, "field '%s' is missing, empty or not a string", key);
        goto out;
    }
    if (ruler && (ds_json_text(o, "outputs", "\n", &ref) != KV_OK || !ref.n)) {
        rc = ds_bad_row(p, out, line, "field 'outputs' is missing or not a list of strings");
        goto out;
    }
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "line%ld", line);
    const char *id = ds_json_string(o, "id");
    const cJSON *index = cJSON_GetObjectItemCaseSensitive(o, "index");
    if (!id && cJSON_IsNumber(index)) {
        snprintf(idbuf, sizeof idbuf, "%d", index->valueint);
        id = idbuf;
    }
    const char *names[] = {ruler ? "context" : "document"};
    rc = ds_set_add(out, id ? id : idbuf, names, &doc, 1, ref.p);
out:
    free(ref.p);
    return rc;
}

/* A text file cut at blank lines into pieces of at least min_chars (the
 * whole file when min_chars is 0). */
static int split_text(const ds_load_params *p, size_t min_chars, ds_set *out) {
    size_t len;
    char *buf;
    int rc = kv_read_file(p->path, &buf, &len);
    if (rc) return rc;
    if (!ds_utf8_valid(buf, len)) {
        rc = kv_errorf(KV_EFORMAT, "%s: not valid UTF-8", p->path);
        goto out;
    }
    const char *names[] = {"document"};
    size_t start = 0;
    long line = 1, start_line = 1;
    for (size_t i = 0; i <= len && rc == KV_OK; i++) {
        int at_end = i == len;
        int blank_break = !at_end && buf[i] == '\n' && i + 1 < len && buf[i + 1] == '\n';
        if (!at_end && buf[i] == '\n') line++;
        if (!(at_end || (min_chars && blank_break && i - start >= min_chars))) continue;
        if (p->max_samples > 0 && out->n >= p->max_samples) break;
        size_t n = i - start;
        while (n && (buf[start] == '\n' || buf[start] == ' ')) start++, n--;
        if (n) {
            char save = buf[start + n];
            buf[start + n] = 0;
            char id[48];
            snprintf(id, sizeof id, "line%ld", start_line);
            const char *doc = buf + start;
            rc = ds_set_add(out, id, names, &doc, 1, NULL);
            buf[start + n] = save;
        }
        start = i + 1;
        start_line = line;
    }
out:
    free(buf);
    return rc;
}

int ds_load_text(const ds_load_params *p, size_t min_chars, ds_set *out) {
    memset(out, 0, sizeof *out);
    int rc;
    if (ds_ends_with(p->path, ".jsonl")) rc = ds_each_object(p, out, text_object, NULL);
    else rc = split_text(p, min_chars, out);
    if (rc == KV_OK && out->n == 0) rc = kv_errorf(KV_EFORMAT, "%s: no text", p->path);
    if (rc) ds_set_free(out);
    return rc;
}

int ds_load_ruler(const ds_load_params *p, ds_set *out) {
    memset(out, 0, sizeof *out);
    static const int ruler = 1;
    int rc = ds_each_object(p, out, text_object, (void *)&ruler);
    if (rc == KV_OK && out->n == 0) rc = kv_errorf(KV_EFORMAT, "%s: no usable samples", p->path);
    if (rc) ds_set_free(out);
    return rc;
}

/* RULER's tokens_to_generate by base task (scripts/data/synthetic/constants.py). */
static int ruler_max_new_tokens(const char *script) {
    static const struct { const char *script; int n; } T[] = {
        {"niah", 128}, {"variable_tracking", 30}, {"common_words_extraction", 120}, {"freq_words_extraction", 50}, {"qa", 32}};
    for (size_t i = 0; script && i < sizeof T / sizeof T[0]; i++)
        if (!strcmp(T[i].script, script)) return T[i].n;
    return 0;
}

/* RULER's prepared row: input split at its question (and at its answer
 * prefix when an older file left it in the input). */
static int ruler_split_input(const cJSON *o, const char *input, ds_str *ctx, ds_str *q, ds_str *ap, const char **task) {
    long qa, pa;
    *task = ds_ruler_split(input, &qa, &pa);
    const char *field = ds_json_string(o, "answer_prefix");
    size_t n = strlen(input), qe = field || pa < 0 ? n : (size_t)pa;
    if (qa < 0) qa = (long)n;
    if (ds_str_add(ctx, input, (size_t)qa) || ds_str_add(q, input + qa, qe - (size_t)qa) ||
        ds_str_adds(ap, field ? field : input + qe))
        return KV_ENOMEM;
    return KV_OK;
}

static int ruler_split_object(void *user, const ds_load_params *p, ds_set *out, long line, const cJSON *o) {
    (void)user;
    ds_str ref = {0}, ctx = {0}, q = {0}, ap = {0};
    const char *input = ds_json_string(o, "input"), *task = ds_json_string(o, "task");
    const cJSON *mnt = cJSON_GetObjectItemCaseSensitive(o, "max_new_tokens"), *len = cJSON_GetObjectItemCaseSensitive(o, "length");
    int rc = KV_OK;
    if (ds_json_string(o, "context")) { /* kvpress */
        const char *question = ds_json_string(o, "question"), *prefix = ds_json_string(o, "answer_prefix");
        if (!question) rc = ds_bad_row(p, out, line, "kvpress's RULER layout: field 'question' is missing or not a string");
        else if (ds_json_text(o, "answer", "\n", &ref) != KV_OK || !ref.n)
            rc = ds_bad_row(p, out, line, "kvpress's RULER layout: field 'answer' is missing or not a string or list of strings");
        else if (ds_str_adds(&ctx, ds_json_string(o, "context")) || ds_str_adds(&q, question) || ds_str_adds(&ap, prefix ? prefix : ""))
            rc = kv_errorf(KV_ENOMEM, "out of memory");
        else goto add;
        goto out;
    }
    if (!input || !*input) {
        rc = ds_bad_row(p, out, line, "neither kvpress's RULER layout (context, question, answer) nor RULER's (input, outputs)");
        goto out;
    }
    if (ds_json_text(o, "outputs", "\n", &ref) != KV_OK || !ref.n) {
        rc = ds_bad_row(p, out, line, "field 'outputs' is missing or not a list of strings");
        goto out;
    }
    const char *script = NULL;
    if (ruler_split_input(o, input, &ctx, &q, &ap, &script)) {
        rc = kv_errorf(KV_ENOMEM, "out of memory");
        goto out;
    }
    if (!task) task = script ? script : "";
add:;
    char idbuf[32], mbuf[16];
    const cJSON *index = cJSON_GetObjectItemCaseSensitive(o, "index");
    if (cJSON_IsNumber(index)) snprintf(idbuf, sizeof idbuf, "%d", index->valueint);
    else snprintf(idbuf, sizeof idbuf, "line%ld", line);
    const ds_ruler_task *rt = task ? ds_ruler_task_find(task) : NULL;
    snprintf(mbuf, sizeof mbuf, "%d", cJSON_IsNumber(mnt) ? mnt->valueint : rt ? rt->max_new_tokens : ruler_max_new_tokens(task));
    const char *names[] = {"context", "question", "answer_prefix", "task", "max_new_tokens"};
    const char *values[] = {ctx.p ? ctx.p : "", q.p ? q.p : "", ap.p ? ap.p : "", task ? task : "", mbuf};
    rc = ds_set_add(out, idbuf, names, values, 5, ref.p);
    if (!rc && cJSON_IsNumber(len)) out->s[out->n - 1].length = len->valueint;
out:
    free(ref.p), free(ctx.p), free(q.p), free(ap.p);
    return rc;
}

int ds_ruler_load(const ds_load_params *p, ds_set *out) {
    memset(out, 0, sizeof *out);
    int rc = ds_each_object(p, out, ruler_split_object, NULL);
    if (rc == KV_OK && out->n == 0) rc = kv_errorf(KV_EFORMAT, "%s: no usable samples", p->path);
    if (rc) ds_set_free(out);
    return rc;
}
