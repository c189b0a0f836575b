/* internal.h - helpers shared by the dataset loaders (not a public header). */
#ifndef DS_INTERNAL_H
#define DS_INTERNAL_H

#include <stddef.h>

#include "dataset.h"


/* A bad row at path:line: prints "path:line: why (row skipped)" and returns
 * 0 when bad rows are skipped (counting it in set->skipped), or sets the
 * error and returns KV_EFORMAT when they are fatal. */
int ds_bad_row(const ds_load_params *p, ds_set *set, long line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Calls fn(user, line_number, text, len) for each non-blank line of a JSONL
 * file; a non-zero return stops and is returned. */
typedef int (*ds_line_fn)(void *user, long line, char *text, size_t len);
int ds_each_line(const char *path, ds_line_fn fn, void *user);

/* 1 if s ends with suffix (file extensions). */
int ds_ends_with(const char *s, const char *suffix);

/* Growable string. */
typedef struct ds_str {
    char *p;
    size_t n, cap;
} ds_str;
int ds_str_add(ds_str *s, const char *t, size_t n);
int ds_str_adds(ds_str *s, const char *t);

#endif
