/* kvcache.c - slot storage of the KV cache. See kvcache.h. */
#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "kv_error.h"

struct kv_cache {
    int n_layers, n_kv_heads, head_dim;
    kv_cache_head *heads; /* [n_layers][n_kv_heads] */
    size_t bytes;         /* physical bytes of all heads' arrays */
    size_t peak_bytes;
};

/* Growth granule: small enough that a fixed-budget cache holds little
 * slack, large enough that appends rarely reallocate. */
#define KV_CACHE_MIN_GROW 16

static size_t slot_bytes(const kv_cache *c) {
    return 2 * (size_t)c->head_dim * sizeof(float) + sizeof(int32_t);
}

int kv_cache_new(int n_layers, int n_kv_heads, int head_dim, kv_cache **out) {
    *out = NULL;
    if (n_layers < 1 || n_kv_heads < 1 || head_dim < 1)
        return kv_errorf(KV_EINVAL, "kv_cache_new: expected positive sizes, got %d layers, %d heads, head_dim %d",
                         n_layers, n_kv_heads, head_dim);
    kv_cache *c = calloc(1, sizeof *c);
    if (!c) return kv_errorf(KV_ENOMEM, "out of memory");
    c->n_layers = n_layers;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->heads = calloc((size_t)n_layers * (size_t)n_kv_heads, sizeof *c->heads);
    if (!c->heads) {
        free(c);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    *out = c;
    return KV_OK;
}

static void head_release(kv_cache *c, kv_cache_head *h) {
    c->bytes -= (size_t)h->cap * slot_bytes(c);
    free(h->k);
    free(h->v);
    free(h->pos);
    memset(h, 0, sizeof *h);
}

void kv_cache_free(kv_cache *c) {
    if (!c) return;
    kv_cache_clear(c);
    free(c->heads);
    free(c);
}

int kv_cache_n_layers(const kv_cache *c) { return c->n_layers; }
int kv_cache_n_kv_heads(const kv_cache *c) { return c->n_kv_heads; }
int kv_cache_head_dim(const kv_cache *c) { return c->head_dim; }

kv_cache_head *kv_cache_head_at(kv_cache *c, int layer, int kv_head) {
    return &c->heads[(size_t)layer * (size_t)c->n_kv_heads + (size_t)kv_head];
}

/* Resizes one head's arrays to exactly `cap` slots. */
static int head_resize(kv_cache *c, kv_cache_head *h, int32_t cap) {
    size_t hd = (size_t)c->head_dim;
    if (cap == 0) {
        head_release(c, h);
        return KV_OK;
    }
    float *k = realloc(h->k, (size_t)cap * hd * sizeof(float));
    if (!k) return kv_errorf(KV_ENOMEM, "KV cache: out of memory growing a head to %d slots", cap);
    h->k = k;
    float *v = realloc(h->v, (size_t)cap * hd * sizeof(float));
    if (!v) return kv_errorf(KV_ENOMEM, "KV cache: out of memory growing a head to %d slots", cap);
    h->v = v;
    int32_t *p = realloc(h->pos, (size_t)cap * sizeof(int32_t));
    if (!p) return kv_errorf(KV_ENOMEM, "KV cache: out of memory growing a head to %d slots", cap);
    h->pos = p;
    c->bytes = c->bytes - (size_t)h->cap * slot_bytes(c) + (size_t)cap * slot_bytes(c);
    h->cap = cap;
    if (c->bytes > c->peak_bytes) c->peak_bytes = c->bytes;
    return KV_OK;
}

int kv_cache_reserve(kv_cache *c, kv_cache_head *h, int32_t extra) {
    if (extra < 0 || h->len > INT32_MAX - extra)
        return kv_errorf(KV_EINVAL, "KV cache: cannot reserve %d more slots", extra);
    int32_t need = h->len + extra;
    if (need <= h->cap) return KV_OK;
    /* Grow by a quarter (at least the granule): amortised O(1) appends
     * with at most 25% slack in a growing cache. */
    int64_t cap = (int64_t)h->cap + h->cap / 4;
    if (cap < (int64_t)h->cap + KV_CACHE_MIN_GROW) cap = (int64_t)h->cap + KV_CACHE_MIN_GROW;
    if (cap < need) cap = need;
    if (cap > INT32_MAX) cap = INT32_MAX;
    return head_resize(c, h, (int32_t)cap);
}

int kv_cache_append(kv_cache *c, kv_cache_head *h, const float *k, const float *v, int32_t pos) {
    int rc = kv_cache_reserve(c, h, 1);
    if (rc) return rc;
    size_t hd = (size_t)c->head_dim;
    memcpy(h->k + (size_t)h->len * hd, k, hd * sizeof(float));
    memcpy(h->v + (size_t)h->len * hd, v, hd * sizeof(float));
    h->pos[h->len] = pos;
    h->len++;
    return KV_OK;
}

/* Gives memory back once at most half of the capacity is live, keeping an
 * eighth (at least 4 slots) of headroom: a cache held at its budget gains
 * one slot and loses one per step, so it never reallocates, and what it
 * holds stays within 12.5% of what it uses. */
static int head_maybe_shrink(kv_cache *c, kv_cache_head *h) {
    if (h->len == 0) {
        head_release(c, h);
        return KV_OK;
    }
    int32_t room = h->len / 8 > 4 ? h->len / 8 : 4;
    if (h->len > h->cap / 2 || h->cap - h->len <= room) return KV_OK;
    return head_resize(c, h, h->len + room);
}

int kv_cache_keep(kv_cache *c, kv_cache_head *h, const int32_t *keep, int32_t n_keep) {
    size_t hd = (size_t)c->head_dim;
    if (n_keep < 0 || n_keep > h->len)
        return kv_errorf(KV_EINVAL, "KV cache: keep %d of %d slots", n_keep, h->len);
    for (int32_t j = 0; j < n_keep; j++) {
        int32_t s = keep[j];
        if (s < 0 || s >= h->len || (j > 0 && s <= keep[j - 1]))
            return kv_errorf(KV_EINVAL, "KV cache: keep list entry %d (slot %d) is out of order or range [0, %d)",
                             j, s, h->len);
    }
    for (int32_t j = 0; j < n_keep; j++) {
        int32_t s = keep[j];
        if (s == j) continue;
        memcpy(h->k + (size_t)j * hd, h->k + (size_t)s * hd, hd * sizeof(float));
        memcpy(h->v + (size_t)j * hd, h->v + (size_t)s * hd, hd * sizeof(float));
        h->pos[j] = h->pos[s];
    }
    h->len = n_keep;
    return head_maybe_shrink(c, h);
}

int kv_cache_remove(kv_cache *c, kv_cache_head *h, int32_t slot) {
    size_t hd = (size_t)c->head_dim;
    if (slot < 0 || slot >= h->len)
        return kv_errorf(KV_EINVAL, "KV cache: remove slot %d of %d", slot, h->len);
    size_t tail = (size_t)(h->len - slot - 1);
    memmove(h->k + (size_t)slot * hd, h->k + (size_t)(slot + 1) * hd, tail * hd * sizeof(float));
    memmove(h->v + (size_t)slot * hd, h->v + (size_t)(slot + 1) * hd, tail * hd * sizeof(float));
    memmove(h->pos + slot, h->pos + slot + 1, tail * sizeof(int32_t));
    h->len--;
    return head_maybe_shrink(c, h);
}

void kv_cache_clear(kv_cache *c) {
    size_t n = (size_t)c->n_layers * (size_t)c->n_kv_heads;
    for (size_t i = 0; i < n; i++) head_release(c, &c->heads[i]);
}

int64_t kv_cache_total_slots(const kv_cache *c) {
    int64_t t = 0;
    size_t n = (size_t)c->n_layers * (size_t)c->n_kv_heads;
    for (size_t i = 0; i < n; i++) t += c->heads[i].len;
    return t;
}

int32_t kv_cache_max_len(const kv_cache *c) {
    int32_t m = 0;
    size_t n = (size_t)c->n_layers * (size_t)c->n_kv_heads;
    for (size_t i = 0; i < n; i++)
        if (c->heads[i].len > m) m = c->heads[i].len;
    return m;
}

size_t kv_cache_bytes(const kv_cache *c) { return c->bytes; }
size_t kv_cache_peak_bytes(const kv_cache *c) { return c->peak_bytes; }
void kv_cache_reset_peak(kv_cache *c) { c->peak_bytes = c->bytes; }
