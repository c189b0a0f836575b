/* record.c - see record.h. */
#include "record.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"

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

/* Before a layer's attention: the policy's plan, then room for the raw
 * rows its reducer will see. */
static void record_plan(void *user, kv_attn_plan *pl) {
    hx_recorder *r = user;
    if (r->inner.plan) r->inner.plan(r->inner.user, pl);
    r->lg_n = 0;
    if (!(pl->needs & KV_NEED_LOGITS)) return;
    kv_cache *c = kv_ctx_cache(r->ctx);
    int32_t len = 0;
    for (int g = 0; g < kv_cache_n_kv_heads(c); g++) {
        int32_t l = kv_cache_head_at(c, pl->layer, g)->len;
        if (l > len) len = l;
    }
    const kv_model_info *mi = kv_model_get_info(kv_ctx_model(r->ctx));
    size_t need = (size_t)mi->n_heads * (size_t)pl->n_new * (size_t)len;
    if (need > r->logits_cap) {
        float *b = realloc(r->logits, need * sizeof *b);
        if (!b) {
            r->failed = 1;
            return;
        }
        r->logits = b;
        r->logits_cap = need;
    }
    for (size_t i = 0; i < need; i++) r->logits[i] = -INFINITY;
    /* the keys the rows cover: a window layer may lose some before the policy runs */
    const int n_kv = kv_cache_n_kv_heads(c);
    size_t need_pos = (size_t)n_kv * ((size_t)len + 1);
    if (need_pos > r->lg_keys_cap) {
        int32_t *b = realloc(r->lg_keys, need_pos * sizeof *b);
        if (!b) {
            r->failed = 1;
            r->lg_n = 0;
            return;
        }
        r->lg_keys = b;
        r->lg_keys_cap = need_pos;
    }
    for (int g = 0; g < n_kv; g++) {
        const kv_cache_head *h = kv_cache_head_at(c, pl->layer, g);
        int32_t *dst = r->lg_keys + (size_t)g * ((size_t)len + 1);
        dst[0] = h->len;
        memcpy(dst + 1, h->pos, (size_t)h->len * sizeof *dst);
    }
    r->lg_pos0 = pl->pos0;
    r->lg_n = pl->n_new;
    r->lg_stride = len;
}

static void record_reduce_row(void *user, const kv_logit_row *row) {
    hx_recorder *r = user;
    if (r->lg_n > 0) /* each row its own place: safe from the engine's threads */
        memcpy(r->logits + ((size_t)row->head * r->lg_n + (size_t)(row->qpos - r->lg_pos0)) * r->lg_stride, row->x,
               (size_t)row->len * sizeof(float));
    r->inner.reduce_row(r->inner.user, row);
}

static int32_t record_split(void *user, int32_t pos0, int32_t n) {
    hx_recorder *r = user;
    return r->inner.split(r->inner.user, pos0, n);
}

static int record_layer(void *user, kv_cache *c, const kv_attn_view *v) {
    hx_recorder *r = user;
    int32_t hdr[7] = {v->layer, v->n_heads, v->n_kv_heads, v->n_new, v->pos0, v->stride, (int32_t)v->needs};
    put(r, hdr, sizeof hdr);
    put_heads(r, c, v->layer, v->n_kv_heads);
    size_t rows = (size_t)v->n_heads * (size_t)v->stride * 4;
    if (v->needs & KV_NEED_LAST_ROW) put(r, v->last_row, rows);
    if (v->needs & KV_NEED_COLSUM) put(r, v->colsum, rows);
    if (v->needs & KV_NEED_LOGITS) {
        if (r->lg_n != v->n_new || r->lg_stride != v->stride) {
            r->failed = 1;
        } else {
            for (int g = 0; g < v->n_kv_heads; g++) {
                const int32_t *k = r->lg_keys + (size_t)g * ((size_t)r->lg_stride + 1);
                put(r, k, ((size_t)k[0] + 1) * 4);
            }
            put(r, r->logits, rows * (size_t)v->n_new);
        }
    }
    if (v->needs & KV_NEED_WINDOW) {
        put_i32(r, v->win_pos0);
        put_i32(r, v->win_n);
        put(r, v->window, rows * (size_t)v->win_n);
    }
    if (v->needs & KV_NEED_DECAYED_COLSUM) put(r, v->dcolsum, rows);
    int rc = r->inner.on_layer ? r->inner.on_layer(r->inner.user, c, v) : KV_OK;
    put_heads(r, c, v->layer, v->n_kv_heads);
    return rc;
}

/* A window layer's trim passes through: the record's "before" sets are
 * the slots left, what the policy saw; the raw rows stay as the reducer
 * saw them, over the keys record_plan noted. */
static int record_trim(void *user, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos) {
    hx_recorder *r = user;
    return r->inner.on_trim(r->inner.user, layer, kv_head, keep, n_keep, min_pos);
}

int hx_record_attach(hx_recorder *r, const char *path, kv_policy *p, kv_ctx *ctx) {
    memset(r, 0, sizeof *r);
    r->p = p;
    r->ctx = ctx;
    r->f = fopen(path, "wb");
    if (!r->f) {
        fprintf(stderr, "kvbench: %s: cannot create: %s\n", path, strerror(errno));
        return -1;
    }
    put(r, "KVRC", 4);
    put_i32(r, 3);
    put_i32(r, pol_limit(p));
    put_i32(r, pol_n_prompt(p));
    int64_t seed = (int64_t)pol_draw_seed(p); /* the draws the policy makes (seed, unless a sample's own) */
    put(r, &seed, 8);
    put_i32(r, pol_n_layers(p));
    put(r, pol_layer_limits(p), (size_t)pol_n_layers(p) * 4);
    put_i32(r, (int32_t)strlen(pol_name(p)));
    put(r, pol_name(p), strlen(pol_name(p)));
    put_i32(r, pol_n_params(p));
    for (int i = 0; i < pol_n_params(p); i++) {
        double v = pol_param_value(p, i);
        put(r, &v, sizeof v);
    }
    /* the policy's own hook, wrapped: the same plan, prefill protocol and splits */
    r->inner = pol_hook(p);
    kv_ctx_hook h = r->inner;
    h.user = r;
    h.on_layer = record_layer;
    h.plan = record_plan;
    h.reduce_row = r->inner.reduce_row ? record_reduce_row : NULL;
    h.split = r->inner.split ? record_split : NULL;
    h.on_trim = r->inner.on_trim ? record_trim : NULL;
    kv_ctx_set_hook(ctx, &h);
    return 0;
}

int hx_record_close(hx_recorder *r) {
    free(r->logits);
    r->logits = NULL;
    r->logits_cap = 0;
    free(r->lg_keys);
    r->lg_keys = NULL;
    r->lg_keys_cap = 0;
    if (!r->f) return 0;
    if (fclose(r->f) != 0) r->failed = 1;
    r->f = NULL;
    if (r->failed) fprintf(stderr, "kvbench: writing the attention record failed\n");
    return r->failed ? -1 : 0;
}
