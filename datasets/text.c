/* text.c - plain text sets (for fidelity and streaming perplexity) and
 * RULER's needle-in-a-haystack JSONL. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/kv_error.h"
#include "internal.h"
#include "json_util.h"

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
    char *buf = ds_read_file(p->path, &len);
    if (!buf) return KV_EIO;
    int rc = KV_OK;
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
