/* conversation.c - SODA and DailyDialog conversations in Keyformer's
 * protocol: the narrative, a role instruction and the first turn go in, one
 * reply is generated, the remaining turns are the reference. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "internal.h"
#include "json_util.h"

#define MAX_TURNS 256

typedef struct turn {
    char *speaker, *text; /* owned */
} turn;

/* Parses a Python list literal of strings ("['a', \"b's\"]"), as SODA's
 * original release stores its speakers and dialogue. Returns the count, or
 * -1 when the text is not such a list. */
static int parse_py_list(const char *s, char **items, int max) {
    int n = 0;
    while (*s == ' ') s++;
    if (*s++ != '[') return -1;
    for (;;) {
        while (*s == ' ' || *s == ',' || *s == '\n') s++;
        if (*s == ']') return n;
        char q = *s++;
        if (q != '\'' && q != '"') goto bad;
        ds_str v = {0};
        for (; *s && *s != q; s++) {
            char c = *s;
            if (c == '\\' && s[1]) {
                c = *++s;
                if (c == 'n') c = '\n';
                else if (c == 't') c = '\t';
            }
            if (ds_str_add(&v, &c, 1)) { free(v.p); goto bad; }
        }
        if (*s != q || n == max) { free(v.p); goto bad; }
        s++;
        items[n++] = v.p ? v.p : strdup("");
    }
bad:
    for (int i = 0; i < n; i++) free(items[i]);
    return -1;
}

/* Collects the turns of one conversation from whichever layout it uses.
 * Returns the number of turns, or -1 with *why set. */
static int read_turns(const cJSON *o, turn *t, const char **why) {
    const cJSON *turns = cJSON_GetObjectItemCaseSensitive(o, "turns");
    if (!turns) turns = cJSON_GetObjectItemCaseSensitive(o, "dialogue");
    const cJSON *speakers = cJSON_GetObjectItemCaseSensitive(o, "speakers");
    char *texts[MAX_TURNS], *spk[MAX_TURNS];
    int n_text = -1, n_spk = 0;
    if (!turns) { *why = "expected a 'turns' (or 'dialogue') field"; return -1; }
    if (cJSON_IsString(turns)) n_text = parse_py_list(turns->valuestring, texts, MAX_TURNS);
    else if (cJSON_IsArray(turns)) {
        n_text = 0;
        for (const cJSON *it = turns->child; it && n_text < MAX_TURNS; it = it->next) {
            const char *tx = NULL, *sp = NULL;
            if (cJSON_IsString(it)) tx = it->valuestring;
            else if (cJSON_IsObject(it)) {
                tx = ds_json_string(it, "text");
                sp = ds_json_string(it, "speaker");
            }
            if (!tx) {
                for (int i = 0; i < n_text; i++) free(t[i].speaker), free(t[i].text);
                *why = "a turn is neither a string nor an object with a string 'text'";
                return -1;
            }
            t[n_text].text = strdup(tx);
            t[n_text].speaker = sp ? strdup(sp) : NULL;
            n_text++;
        }
        goto speakers;
    }
    if (n_text < 0) { *why = "'turns' is neither a list nor a stringified list of strings"; return -1; }
    for (int i = 0; i < n_text; i++) {
        t[i].text = texts[i];
        t[i].speaker = NULL;
    }
speakers:
    if (cJSON_IsString(speakers)) n_spk = parse_py_list(speakers->valuestring, spk, MAX_TURNS);
    else if (cJSON_IsArray(speakers)) {
        for (const cJSON *it = speakers->child; it && n_spk < MAX_TURNS; it = it->next)
            spk[n_spk++] = strdup(cJSON_IsString(it) ? it->valuestring : "");
    }
    for (int i = 0; i < n_spk; i++) {
        if (i < n_text && !t[i].speaker) t[i].speaker = spk[i];
        else free(spk[i]);
    }
    /* Unnamed speakers alternate A and B, as in DailyDialog. */
    for (int i = 0; i < n_text; i++)
        if (!t[i].speaker) t[i].speaker = strdup(i % 2 ? "B" : "A");
    return n_text;
}

static int conv_object(void *user, const ds_load_params *p, ds_set *out, long line, const cJSON *o) {
    (void)user;
    const char *why = NULL;
    turn t[MAX_TURNS];
    int n = read_turns(o, t, &why), rc = KV_OK;
    ds_str ref = {0};
    if (n < 0) {
        rc = ds_bad_row(p, out, line, "%s", why);
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (!t[i].text || !t[i].speaker) {
            rc = kv_errorf(KV_ENOMEM, "out of memory");
            goto out;
        }
    if (n < 2) {
        rc = ds_bad_row(p, out, line, "a conversation needs at least two turns, found %d", n);
        goto out;
    }
    const char *a = t[0].speaker, *b = "B";
    for (int i = 1; i < n; i++)
        if (strcmp(t[i].speaker, a) != 0) { b = t[i].speaker; break; }
    for (int i = 1; i < n; i++) {
        if (i > 1 && ds_str_adds(&ref, "\n")) { rc = KV_ENOMEM; goto out; }
        if (ds_str_adds(&ref, t[i].text)) { rc = KV_ENOMEM; goto out; }
    }
    const char *narr = ds_json_string(o, "narrative");
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "line%ld", line);
    const char *id = ds_json_string(o, "id");
    const char *names[] = {"narrative", "speaker_a", "speaker_b", "first_turn"};
    const char *values[] = {narr ? narr : "", a, b, t[0].text};
    rc = ds_set_add(out, id ? id : idbuf, names, values, 4, ref.p);
out:
    for (int i = 0; i < n; i++) free(t[i].speaker), free(t[i].text);
    free(ref.p);
    return rc;
}

int ds_load_conversation(const ds_load_params *p, ds_set *out) {
    memset(out, 0, sizeof *out);
    int rc = ds_each_object(p, out, conv_object, NULL);
    if (rc == KV_OK && out->n == 0) rc = kv_errorf(KV_EFORMAT, "%s: no usable conversations", p->path);
    if (rc) ds_set_free(out);
    return rc;
}
