/* record.c - see record.h. */
#include "record.h"

#include <errno.h>
#include <string.h>

#include "../engine/kv_error.h"

static void put(hx_recorder *r, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, r->f) != n) r->failed = 1;
}

static void put_i32(hx_recorder *r, int32_t v) { put(r, &v, 4); }

static void put_heads(hx_recorder *r, kv_cache *c, int layer, int n_kv) {
    for (int g = 0; g < n_kv; g++) {
        const kv_cache_head *h = kv_cache_head_at(c, layer, g);
        put_i32(r, h->len);
        put(r, h->pos, (size_t)h->len * 4);
    }
}

static int record_layer(void *user, kv_cache *c, const kv_attn_view *v) {
    hx_recorder *r = user;
    int32_t hdr[7] = {v->layer, v->n_heads, v->n_kv_heads, v->n_new, v->pos0, v->stride, (int32_t)r->p->ops->needs};
    put(r, hdr, sizeof hdr);
    put_heads(r, c, v->layer, v->n_kv_heads);
    size_t rows = (size_t)v->n_heads * (size_t)v->stride * 4;
    if (r->p->ops->needs & KV_NEED_LAST_ROW) put(r, v->last_row, rows);
    if (r->p->ops->needs & KV_NEED_COLSUM) put(r, v->colsum, rows);
    int rc = r->p->ops->on_layer ? r->p->ops->on_layer(r->p, c, v) : KV_OK;
    put_heads(r, c, v->layer, v->n_kv_heads);
    return rc;
}

int hx_record_attach(hx_recorder *r, const char *path, kv_policy *p, kv_ctx *ctx) {
    memset(r, 0, sizeof *r);
    r->p = p;
    r->f = fopen(path, "wb");
    if (!r->f) {
        fprintf(stderr, "kvbench: %s: cannot create: %s\n", path, strerror(errno));
        return -1;
    }
    put(r, "KVRC", 4);
    put_i32(r, 1);
    put_i32(r, p->limit);
    put_i32(r, (int32_t)strlen(p->ops->name));
    put(r, p->ops->name, strlen(p->ops->name));
    put_i32(r, p->ops->n_params);
    put(r, p->param, (size_t)p->ops->n_params * sizeof(double));
    kv_ctx_hook h = {.user = r, .needs = p->ops->needs, .positions = p->positions, .on_layer = record_layer};
    kv_ctx_set_hook(ctx, &h);
    return 0;
}

int hx_record_close(hx_recorder *r) {
    if (!r->f) return 0;
    if (fclose(r->f) != 0) r->failed = 1;
    r->f = NULL;
    if (r->failed) fprintf(stderr, "kvbench: writing the attention record failed\n");
    return r->failed ? -1 : 0;
}
