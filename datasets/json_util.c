/* json_util.c - see json_util.h. */
#include <stdio.h>
#include <string.h>

#include "../base/kv_error.h"
#include "json_util.h"

cJSON *ds_json_parse(const char *text, size_t len, const char **why) {
    static _Thread_local char msg[96];
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!o) {
        size_t col = end && end >= text ? (size_t)(end - text) + 1 : 1;
        snprintf(msg, sizeof msg, "invalid JSON at column %zu", col);
        *why = msg;
        return NULL;
    }
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        *why = "expected a JSON object";
        return NULL;
    }
    return o;
}

const char *ds_json_string(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int ds_json_text(const cJSON *o, const char *key, const char *sep, ds_str *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return KV_ENOTFOUND;
    if (cJSON_IsString(v)) return ds_str_adds(out, v->valuestring);
    if (!cJSON_IsArray(v)) return KV_ETYPE;
    int first = 1;
    for (const cJSON *it = v->child; it; it = it->next) {
        if (!cJSON_IsString(it)) return KV_ETYPE;
        if (!first && ds_str_adds(out, sep)) return KV_ENOMEM;
        if (ds_str_adds(out, it->valuestring)) return KV_ENOMEM;
        first = 0;
    }
    return KV_OK;
}

typedef struct each_state {
    const ds_load_params *p;
    ds_set *out;
    ds_object_fn fn;
    void *user;
} each_state;

#define DS_STOP 1 /* enough samples: not an error */

static int each_line(void *user, long line, char *text, size_t len) {
    each_state *st = user;
    if (st->p->max_samples > 0 && st->out->n >= st->p->max_samples) return DS_STOP;
    if (!ds_utf8_valid(text, len)) return ds_bad_row(st->p, st->out, line, "not valid UTF-8");
    const char *why = NULL;
    cJSON *o = ds_json_parse(text, len, &why);
    if (!o) return ds_bad_row(st->p, st->out, line, "%s", why);
    int rc = st->fn(st->user, st->p, st->out, line, o);
    cJSON_Delete(o);
    return rc;
}

int ds_each_object(const ds_load_params *p, ds_set *out, ds_object_fn fn, void *user) {
    each_state st = {p, out, fn, user};
    int rc = ds_each_line(p->path, each_line, &st);
    return rc == DS_STOP ? KV_OK : rc;
}
