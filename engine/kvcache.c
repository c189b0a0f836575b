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
    size_t hd = (size_t)c->head_dim;
    c->bytes -= (size_t)h->cap * slot_bytes(c);
    if (h->k) {
        free(h->k - (size_t)h->off * hd);
        free(h->v - (size_t)h->off * hd);
        free(h->pos - h->off);
    }
    memset(h, 0, sizeof *h);
}

/* Moves the live slots to the start of the allocation (off = 0). */
static void head_rebase(kv_cache *c, kv_cache_head *h) {
    if (h->off == 0) return;
    size_t hd = (size_t)c->head_dim;
    float *k = h->k - (size_t)h->off * hd, *v = h->v - (size_t)h->off * hd;
    int32_t *p = h->pos - h->off;
    memmove(k, h->k, (size_t)h->len * hd * sizeof(float));
    memmove(v, h->v, (size_t)h->len * hd * sizeof(float));
    memmove(p, h->pos, (size_t)h->len * sizeof(int32_t));
    h->k = k, h->v = v, h->pos = p;
    h->off = 0;
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

/* Resizes one head's arrays to exactly `cap` slots (live slots first moved
 * to the start). */
static int head_resize(kv_cache *c, kv_cache_head *h, int32_t cap) {
    size_t hd = (size_t)c->head_dim;
    if (cap == 0) {
        head_release(c, h);
        return KV_OK;
    }
    head_rebase(c, h);
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
    if (need + h->off <= h->cap) return KV_OK;
    /* Room freed at the front is reused by moving the live slots back, but
     * only when that leaves an eighth of headroom: a window sliding one
     * slot per step then moves its slots once every len/8 steps. */
    int32_t room = need / 8 > 4 ? need / 8 : 4;
    if (need + room <= h->cap) {
        head_rebase(c, h);
        return KV_OK;
    }
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

/* Gives memory back once the slack exceeds a quarter of the live slots (at
 * least 8), shrinking to an eighth (at least 4) of headroom: a cache held
 * at its budget gains one slot and loses one per step, so it never
 * reallocates, and what it holds stays within 25% of what it uses (12.5%
 * right after an eviction). */
static int head_maybe_shrink(kv_cache *c, kv_cache_head *h) {
    if (h->len == 0) {
        head_release(c, h);
        return KV_OK;
    }
    int32_t room = h->len / 8 > 4 ? h->len / 8 : 4;
    if (h->cap - h->len <= 2 * room) return KV_OK;
    return head_resize(c, h, h->len + room);
}

/* Moves n consecutive slots from src to dst (ranges may overlap). */
static void slots_move(kv_cache *c, kv_cache_head *h, int32_t dst, int32_t src, int32_t n) {
    size_t hd = (size_t)c->head_dim;
    memmove(h->k + (size_t)dst * hd, h->k + (size_t)src * hd, (size_t)n * hd * sizeof(float));
    memmove(h->v + (size_t)dst * hd, h->v + (size_t)src * hd, (size_t)n * hd * sizeof(float));
    memmove(h->pos + dst, h->pos + src, (size_t)n * sizeof(int32_t));
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
    /* Either slide the kept slots after the first gap to the left, or those
     * before the last gap to the right (then the live range starts later):
     * whichever moves fewer slots. Both keep the order. */
    const int32_t shift = h->len - n_keep;
    int32_t head_ok = 0, tail_ok = 0; /* kept slots already in place for each direction */
    while (head_ok < n_keep && keep[head_ok] == head_ok) head_ok++;
    while (tail_ok < n_keep && keep[n_keep - 1 - tail_ok] == h->len - 1 - tail_ok) tail_ok++;
    /* runs of consecutive kept slots move with one memmove each */
    if (n_keep - head_ok <= n_keep - tail_ok) {
        for (int32_t j = head_ok; j < n_keep;) {
            int32_t r = 1;
            while (j + r < n_keep && keep[j + r] == keep[j] + r) r++;
            slots_move(c, h, j, keep[j], r);
            j += r;
        }
    } else {
        for (int32_t j = n_keep - 1 - tail_ok; j >= 0;) {
            int32_t r = 1;
            while (j - r >= 0 && keep[j - r] == keep[j] - r) r++;
            slots_move(c, h, shift + j - r + 1, keep[j] - r + 1, r);
            j -= r;
        }
        h->k += (size_t)shift * hd;
        h->v += (size_t)shift * hd;
        h->pos += shift;
        h->off += shift;
    }
    h->len = n_keep;
    return head_maybe_shrink(c, h);
}

int kv_cache_drop(kv_cache *c, kv_cache_head *h, const uint8_t *keep, int32_t *src) {
    int32_t last = h->len - 1, n = 0;
    for (int32_t j = 0; j < h->len; j++) n += keep[j] != 0;
    for (int32_t j = 0; j < n; j++) {
        if (src) src[j] = j;
        if (keep[j]) continue;
        while (!keep[last]) last--; /* the last kept slot; it lies beyond j since n kept lie in [0, len) */
        slots_move(c, h, j, last, 1);
        if (src) src[j] = last;
        last--;
    }
    h->len = n;
    return head_maybe_shrink(c, h);
}

int kv_cache_remove(kv_cache *c, kv_cache_head *h, int32_t slot) {
    size_t hd = (size_t)c->head_dim;
    if (slot < 0 || slot >= h->len)
        return kv_errorf(KV_EINVAL, "KV cache: remove slot %d of %d", slot, h->len);
    if (slot < h->len - 1 - slot) { /* the front is shorter: slide it right */
        memmove(h->k + hd, h->k, (size_t)slot * hd * sizeof(float));
        memmove(h->v + hd, h->v, (size_t)slot * hd * sizeof(float));
        memmove(h->pos + 1, h->pos, (size_t)slot * sizeof(int32_t));
        h->k += hd, h->v += hd, h->pos += 1, h->off += 1;
    } else {
        size_t tail = (size_t)(h->len - slot - 1);
        memmove(h->k + (size_t)slot * hd, h->k + (size_t)(slot + 1) * hd, tail * hd * sizeof(float));
        memmove(h->v + (size_t)slot * hd, h->v + (size_t)(slot + 1) * hd, tail * hd * sizeof(float));
        memmove(h->pos + slot, h->pos + slot + 1, tail * sizeof(int32_t));
    }
    h->len--;
    return head_maybe_shrink(c, h);
}

void kv_cache_clear(kv_cache *c) {
    size_t n = (size_t)c->n_layers * (size_t)c->n_kv_heads;
    for (size_t i = 0; i < n; i++) head_release(c, &c->heads[i]);
}

/* One head of dst as a copy of src's (dst empty): cap slots with the live
 * ones at off. A head's bytes are counted only once its arrays exist. */
static int head_copy(kv_cache *dst, kv_cache_head *d, const kv_cache_head *s) {
    if (s->cap == 0) return KV_OK;
    const size_t hd = (size_t)dst->head_dim, cap = (size_t)s->cap, off = (size_t)s->off;
    float *k = malloc(cap * hd * sizeof *k), *v = malloc(cap * hd * sizeof *v);
    int32_t *p = malloc(cap * sizeof *p);
    if (!k || !v || !p) {
        free(k), free(v), free(p);
        return kv_errorf(KV_ENOMEM, "KV cache: out of memory copying a head of %d slots", s->cap);
    }
    *d = (kv_cache_head){.k = k + off * hd, .v = v + off * hd, .pos = p + off, .len = s->len, .cap = s->cap,
                         .off = s->off};
    memcpy(d->k, s->k, (size_t)s->len * hd * sizeof *k);
    memcpy(d->v, s->v, (size_t)s->len * hd * sizeof *v);
    memcpy(d->pos, s->pos, (size_t)s->len * sizeof *p);
    dst->bytes += cap * slot_bytes(dst);
    return KV_OK;
}

int kv_cache_copy(kv_cache *dst, const kv_cache *src) {
    if (dst == src) return KV_OK;
    kv_cache_clear(dst);
    if (dst->n_layers != src->n_layers || dst->n_kv_heads != src->n_kv_heads || dst->head_dim != src->head_dim)
        return kv_errorf(KV_EINVAL, "kv_cache_copy: expected %d layers x %d KV heads x head_dim %d, the source has "
                         "%d x %d x %d", dst->n_layers, dst->n_kv_heads, dst->head_dim, src->n_layers,
                         src->n_kv_heads, src->head_dim);
    const size_t n = (size_t)src->n_layers * (size_t)src->n_kv_heads;
    for (size_t i = 0; i < n; i++) {
        int rc = head_copy(dst, &dst->heads[i], &src->heads[i]);
        if (rc) {
            kv_cache_clear(dst);
            return rc;
        }
    }
    dst->peak_bytes = src->peak_bytes > dst->bytes ? src->peak_bytes : dst->bytes;
    return KV_OK;
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
