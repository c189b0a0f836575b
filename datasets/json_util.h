/* json_util.h - small cJSON helpers for the JSONL loaders (not public). */
#ifndef DS_JSON_UTIL_H
#define DS_JSON_UTIL_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "internal.h"

/* Parses one JSON object; on failure returns NULL and points *why at a
 * static message naming the column where parsing stopped. */
cJSON *ds_json_parse(const char *text, size_t len, const char **why);

/* The string value of key, or NULL when absent or not a string. */
const char *ds_json_string(const cJSON *o, const char *key);

/* Appends key's value to out when it is a string, or its items joined by
 * sep when it is an array of strings. KV_ENOTFOUND / KV_ETYPE otherwise. */
int ds_json_text(const cJSON *o, const char *key, const char *sep, ds_str *out);

/* Calls fn for each JSON object of a JSONL file, one per non-blank line,
 * until p->max_samples samples are in `out`; a line that is not valid UTF-8
 * or not a JSON object is a bad row (ds_bad_row). The object is freed when
 * fn returns; fn's non-zero return stops the file and is returned. */
typedef int (*ds_object_fn)(void *user, const ds_load_params *p, ds_set *out, long line, const cJSON *o);
int ds_each_object(const ds_load_params *p, ds_set *out, ds_object_fn fn, void *user);

#endif
