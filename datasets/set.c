/* set.c - sample sets, UTF-8 validation and the helpers every loader uses. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/file.h"
#include "../base/kv_error.h"
#include "internal.h"

const char *ds_sample_field(const ds_sample *s, const char *name) {
    for (int i = 0; i < s->n_fields; i++)
        if (strcmp(s->field[i].name, name) == 0) return s->field[i].value;
    return NULL;
}

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

int ds_set_add(ds_set *set, const char *id, const char *const *names, const char *const *values, int n_fields,
               const char *reference) {
    if (n_fields > DS_MAX_FIELDS) return kv_errorf(KV_EINVAL, "a sample has at most %d fields", DS_MAX_FIELDS);
    if (set->n == set->cap) {
        int cap = set->cap ? set->cap * 2 : 64;
        ds_sample *s = realloc(set->s, (size_t)cap * sizeof *s);
        if (!s) return kv_errorf(KV_ENOMEM, "out of memory");
        set->s = s;
        set->cap = cap;
    }
    ds_sample *s = &set->s[set->n];
    memset(s, 0, sizeof *s);
    int ok = (s->id = dup_or_empty(id)) && (s->reference = dup_or_empty(reference));
    for (int i = 0; ok && i < n_fields; i++) {
        s->field[i].name = strdup(names[i]);
        s->field[i].value = dup_or_empty(values[i]);
        s->n_fields = i + 1;
        ok = s->field[i].name && s->field[i].value;
    }
    set->n++; /* counted even when incomplete so ds_set_free releases it */
    if (!ok) return kv_errorf(KV_ENOMEM, "out of memory");
    return KV_OK;
}

void ds_set_free(ds_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n; i++) {
        ds_sample *s = &set->s[i];
        free(s->id);
        free(s->reference);
        for (int f = 0; f < s->n_fields; f++) {
            free(s->field[f].name);
            free(s->field[f].value);
        }
    }
    free(set->s);
    memset(set, 0, sizeof *set);
}

int ds_utf8_valid(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        int n;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if ((size_t)n >= len - i) return 0; /* truncated sequence */
        for (int k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += (size_t)n + 1;
    }
    return 1;
}

int ds_bad_row(const ds_load_params *p, ds_set *set, long line, const char *fmt, ...) {
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (p->bad_rows == DS_BAD_FAIL) return kv_errorf(KV_EFORMAT, "%s:%ld: %s", p->path, line, why);
    fprintf(stderr, "kvbench: %s:%ld: %s (row skipped)\n", p->path, line, why);
    set->skipped++;
    return KV_OK;
}

int ds_each_line(const char *path, ds_line_fn fn, void *user) {
    size_t len;
    char *buf;
    int rc = kv_read_file(path, &buf, &len);
    if (rc) return rc;
    long line = 0;
    for (size_t i = 0; i < len && rc == KV_OK;) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        line++;
        size_t n = e - i;
        if (n && buf[i + n - 1] == '\r') n--;
        buf[i + n] = 0;
        int blank = 1;
        for (size_t k = 0; k < n && blank; k++) blank = buf[i + k] == ' ' || buf[i + k] == '\t';
        if (!blank) rc = fn(user, line, buf + i, n);
        i = e + 1;
    }
    free(buf);
    return rc;
}

int ds_str_add(ds_str *s, const char *t, size_t n) {
    int rc = KV_RESERVE(s->p, s->cap, s->n + n + 1);
    if (rc) return rc;
    memcpy(s->p + s->n, t, n);
    s->n += n;
    s->p[s->n] = 0;
    return KV_OK;
}

int ds_str_adds(ds_str *s, const char *t) { return ds_str_add(s, t, strlen(t)); }

int ds_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}
