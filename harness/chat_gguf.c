/* chat_gguf.c - see chat_gguf.h. */
#include "chat_gguf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "../engine/gguf.h"

/* s[0..n) as a NUL-terminated malloc'd string. */
static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* The text of the token whose id the GGUF key holds. *out stays NULL when
 * the key or the token is absent. */
static int token_text(const kv_gguf *g, const char *key, char **out) {
    int64_t id;
    const char *s;
    size_t n;
    if (kv_gguf_get_int(g, key, &id) || id < 0 || kv_gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)id, &s, &n))
        return KV_OK;
    return (*out = dup_n(s, n)) ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

int hx_chat_source_gguf(const char *path, ds_chat_source *out) {
    memset(out, 0, sizeof *out);
    kv_gguf *g;
    int rc = kv_gguf_open(path, &g);
    if (rc) return rc;
    const char *s;
    size_t n;
    if (kv_gguf_get_str(g, "tokenizer.chat_template", &s, &n) == 0 && !(out->jinja = dup_n(s, n)))
        rc = kv_errorf(KV_ENOMEM, "%s: out of memory for its chat template", path);
    if (!rc) rc = token_text(g, "tokenizer.ggml.bos_token_id", &out->bos);
    if (!rc) rc = token_text(g, "tokenizer.ggml.eos_token_id", &out->eos);
    kv_gguf_close(g);
    if (rc) ds_chat_source_free(out);
    return rc;
}
