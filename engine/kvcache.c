/* kvcache.c - slot storage of the KV cache. See kvcache.h. */
#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "kernels.h"
#include "kv_error.h"
#include "quant.h"

struct kv_cache {
    int n_layers, n_kv_heads, head_dim;
    kv_cache_type type;
    size_t rb;            /* bytes of one key or value row */
    kv_cache_head *heads; /* [n_layers][n_kv_heads] */
    size_t bytes;         /* physical bytes of all heads' arrays */
    size_t peak_bytes;
};

/* Growth granule: small enough that a fixed-budget cache holds little
 * slack, large enough that appends rarely reallocate. */
#define KV_CACHE_MIN_GROW 16

static size_t slot_bytes(const kv_cache *c) { return 2 * c->rb + sizeof(int32_t); }

const char *kv_cache_type_name(kv_cache_type t) {
    switch (t) {
    case KV_CACHE_F32: return "f32";
    case KV_CACHE_F16: return "f16";
    case KV_CACHE_Q8_0: return "q8_0";
    }
    return "?";
}

int kv_cache_type_parse(const char *s, kv_cache_type *t) {
    for (int i = KV_CACHE_F32; i <= KV_CACHE_Q8_0; i++)
        if (!strcmp(s, kv_cache_type_name((kv_cache_type)i))) {
            *t = (kv_cache_type)i;
            return KV_OK;
        }
    return kv_errorf(KV_EINVAL, "kv_type: expected f32, f16 or q8_0, got '%s'", s);
}

/* The weight type whose rows have the same layout (quant.c converts them). */
static kv_dtype type_dtype(kv_cache_type t) {
    return t == KV_CACHE_F16 ? KV_F16 : t == KV_CACHE_Q8_0 ? KV_Q8_0 : KV_F32;
}

size_t kv_cache_type_row_bytes(kv_cache_type t, int head_dim) {
    return kv_dtype_bytes(type_dtype(t), head_dim);
}

int kv_cache_new(int n_layers, int n_kv_heads, int head_dim, kv_cache_type type, kv_cache **out) {
    *out = NULL;
    if (n_layers < 1 || n_kv_heads < 1 || head_dim < 1)
        return kv_errorf(KV_EINVAL, "kv_cache_new: expected positive sizes, got %d layers, %d heads, head_dim %d",
                         n_layers, n_kv_heads, head_dim);
    if (type != KV_CACHE_F32 && type != KV_CACHE_F16 && type != KV_CACHE_Q8_0)
        return kv_errorf(KV_EINVAL, "kv_cache_new: unknown storage type %d", (int)type);
    /* q8_0 quantizes each row in whole blocks of 32, as llama.cpp's cache does */
    if (type == KV_CACHE_Q8_0 && head_dim % KV_QK != 0)
        return kv_errorf(KV_EINVAL, "kv_cache_new: kv_type q8_0 needs head_dim a multiple of %d, the model's "
                         "head_dim is %d (use f16 or f32)", KV_QK, head_dim);
    kv_cache *c = calloc(1, sizeof *c);
    if (!c) return kv_errorf(KV_ENOMEM, "out of memory");
    c->n_layers = n_layers;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->type = type;
    c->rb = kv_cache_type_row_bytes(type, head_dim);
    c->heads = calloc((size_t)n_layers * (size_t)n_kv_heads, sizeof *c->heads);
    if (!c->heads) {
        free(c);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    *out = c;
    return KV_OK;
}

static void head_release(kv_cache *c, kv_cache_head *h) {
    const size_t rb = c->rb;
    c->bytes -= (size_t)h->cap * slot_bytes(c);
    if (h->kb) {
        free(h->kb - (size_t)h->off * rb);
        free(h->vb - (size_t)h->off * rb);
        free(h->pos - h->off);
    }
    memset(h, 0, sizeof *h);
}

/* Moves the live slots to the start of the allocation (off = 0). */
static void head_rebase(kv_cache *c, kv_cache_head *h) {
    if (h->off == 0) return;
    const size_t rb = c->rb;
    uint8_t *k = h->kb - (size_t)h->off * rb, *v = h->vb - (size_t)h->off * rb;
    int32_t *p = h->pos - h->off;
    memmove(k, h->kb, (size_t)h->len * rb);
    memmove(v, h->vb, (size_t)h->len * rb);
    memmove(p, h->pos, (size_t)h->len * sizeof(int32_t));
    h->kb = k, h->vb = v, h->pos = p;
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
kv_cache_type kv_cache_get_type(const kv_cache *c) { return c->type; }
size_t kv_cache_row_bytes(const kv_cache *c) { return c->rb; }
kv_dtype kv_cache_row_dtype(const kv_cache *c) { return type_dtype(c->type); }

kv_cache_head *kv_cache_head_at(kv_cache *c, int layer, int kv_head) {
    return &c->heads[(size_t)layer * (size_t)c->n_kv_heads + (size_t)kv_head];
}

/* Resizes one head's arrays to exactly `cap` slots (live slots first moved
 * to the start). */
static int head_resize(kv_cache *c, kv_cache_head *h, int32_t cap) {
    if (cap == 0) {
        head_release(c, h);
        return KV_OK;
    }
    head_rebase(c, h);
    uint8_t *k = realloc(h->kb, (size_t)cap * c->rb);
    if (!k) return kv_errorf(KV_ENOMEM, "KV cache: out of memory growing a head to %d slots", cap);
    h->kb = k;
    uint8_t *v = realloc(h->vb, (size_t)cap * c->rb);
    if (!v) return kv_errorf(KV_ENOMEM, "KV cache: out of memory growing a head to %d slots", cap);
    h->vb = v;
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
    h->pos[h->len] = pos;
    h->len++;
    kv_cache_set_row(c, h, h->len - 1, k, v);
    return KV_OK;
}

/* One row from floats: f32 copied, f16 by F16C where the CPU has it (the
 * bits of quant.c's converter: round to nearest even), q8_0 by quant.c's
 * (llama.cpp's reference q8_0). The type and
 * head_dim were checked when the cache was made, so this cannot fail. */
static void row_store(const kv_cache *c, uint8_t *row, const float *x) {
    if (c->type == KV_CACHE_F32) memcpy(row, x, c->rb);
    else if (c->type == KV_CACHE_F16) kv_f32_to_f16(x, (uint16_t *)(void *)row, c->head_dim);
    else (void)kv_quantize(type_dtype(c->type), x, row, c->head_dim);
}

static void row_load(const kv_cache *c, const uint8_t *row, float *out) {
    if (c->type == KV_CACHE_F32) memcpy(out, row, c->rb);
    else if (c->type == KV_CACHE_F16) kv_f16_to_f32((const uint16_t *)(const void *)row, out, c->head_dim);
    else (void)kv_dequantize(type_dtype(c->type), row, out, c->head_dim);
}

void kv_cache_set_row(const kv_cache *c, kv_cache_head *h, int32_t slot, const float *k, const float *v) {
    if (k) row_store(c, h->kb + (size_t)slot * c->rb, k);
    if (v) row_store(c, h->vb + (size_t)slot * c->rb, v);
}

void kv_cache_key_row(const kv_cache *c, const kv_cache_head *h, int32_t slot, float *out) {
    row_load(c, h->kb + (size_t)slot * c->rb, out);
}

void kv_cache_value_row(const kv_cache *c, const kv_cache_head *h, int32_t slot, float *out) {
    row_load(c, h->vb + (size_t)slot * c->rb, out);
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
    const size_t rb = c->rb;
    memmove(h->kb + (size_t)dst * rb, h->kb + (size_t)src * rb, (size_t)n * rb);
    memmove(h->vb + (size_t)dst * rb, h->vb + (size_t)src * rb, (size_t)n * rb);
    memmove(h->pos + dst, h->pos + src, (size_t)n * sizeof(int32_t));
}

int kv_cache_keep(kv_cache *c, kv_cache_head *h, const int32_t *keep, int32_t n_keep) {
    const size_t rb = c->rb;
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
        h->kb += (size_t)shift * rb;
        h->vb += (size_t)shift * rb;
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
    const size_t rb = c->rb;
    if (slot < 0 || slot >= h->len)
        return kv_errorf(KV_EINVAL, "KV cache: remove slot %d of %d", slot, h->len);
    if (slot < h->len - 1 - slot) { /* the front is shorter: slide it right */
        memmove(h->kb + rb, h->kb, (size_t)slot * rb);
        memmove(h->vb + rb, h->vb, (size_t)slot * rb);
        memmove(h->pos + 1, h->pos, (size_t)slot * sizeof(int32_t));
        h->kb += rb, h->vb += rb, h->pos += 1, h->off += 1;
    } else {
        size_t tail = (size_t)(h->len - slot - 1);
        memmove(h->kb + (size_t)slot * rb, h->kb + (size_t)(slot + 1) * rb, tail * rb);
        memmove(h->vb + (size_t)slot * rb, h->vb + (size_t)(slot + 1) * rb, tail * rb);
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
    const size_t rb = dst->rb, cap = (size_t)s->cap, off = (size_t)s->off;
    uint8_t *k = malloc(cap * rb), *v = malloc(cap * rb);
    int32_t *p = malloc(cap * sizeof *p);
    if (!k || !v || !p) {
        free(k), free(v), free(p);
        return kv_errorf(KV_ENOMEM, "KV cache: out of memory copying a head of %d slots", s->cap);
    }
    *d = (kv_cache_head){.kb = k + off * rb, .vb = v + off * rb, .pos = p + off, .len = s->len, .cap = s->cap,
                         .off = s->off};
    memcpy(d->kb, s->kb, (size_t)s->len * rb);
    memcpy(d->vb, s->vb, (size_t)s->len * rb);
    memcpy(d->pos, s->pos, (size_t)s->len * sizeof *p);
    dst->bytes += cap * slot_bytes(dst);
    return KV_OK;
}

static int same_shape(const kv_cache *a, const kv_cache *b) {
    return a->n_layers == b->n_layers && a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
           a->type == b->type;
}

int kv_cache_copy(kv_cache *dst, const kv_cache *src) {
    if (dst == src) return KV_OK;
    kv_cache_clear(dst);
    if (!same_shape(dst, src))
        return kv_errorf(KV_EINVAL, "kv_cache_copy: expected %d layers x %d KV heads x head_dim %d of %s, the source "
                         "has %d x %d x %d of %s", dst->n_layers, dst->n_kv_heads, dst->head_dim,
                         kv_cache_type_name(dst->type), src->n_layers, src->n_kv_heads, src->head_dim,
                         kv_cache_type_name(src->type));
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

int kv_cache_copy_layer(kv_cache *dst, const kv_cache *src, int layer) {
    if (!same_shape(dst, src) || layer < 0 || layer >= src->n_layers)
        return kv_errorf(KV_EINVAL, "kv_cache_copy_layer: layer %d of a %d-layer cache into a cache of another shape "
                         "or layer count", layer, src->n_layers);
    if (dst == src) return KV_OK;
    const size_t base = (size_t)layer * (size_t)src->n_kv_heads;
    for (int g = 0; g < src->n_kv_heads; g++) head_release(dst, &dst->heads[base + g]);
    for (int g = 0; g < src->n_kv_heads; g++) {
        int rc = head_copy(dst, &dst->heads[base + g], &src->heads[base + g]);
        if (rc) {
            for (int k = 0; k < src->n_kv_heads; k++) head_release(dst, &dst->heads[base + k]);
            return rc;
        }
    }
    if (dst->bytes > dst->peak_bytes) dst->peak_bytes = dst->bytes;
    return KV_OK;
}

size_t kv_cache_layer_bytes(const kv_cache *c, int layer) {
    size_t b = 0;
    for (int g = 0; g < c->n_kv_heads; g++) b += (size_t)c->heads[(size_t)layer * (size_t)c->n_kv_heads + g].cap;
    return b * slot_bytes(c);
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
void kv_cache_raise_peak(kv_cache *c, size_t bytes) {
    if (bytes > c->peak_bytes) c->peak_bytes = bytes;
}
