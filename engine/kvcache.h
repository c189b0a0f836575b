/* kvcache.h - the KV cache: per (layer, kv_head) a set of live slots.
 *
 * Each head owns three parallel arrays, kb [cap] key rows, vb [cap] value
 * rows and pos [cap]; slots [0, len) are live, in insertion order. A row is one
 * slot's head_dim values in the cache's storage type (llama.cpp's
 * --cache-type-k/v): f32, f16 (round to nearest even) or q8_0 (blocks of
 * 32: an fp16 scale and 32 int8, as llama.cpp's quantize_row_q8_0_ref),
 * kv_cache_row_bytes() bytes each. Rows are written from floats by
 * kv_cache_append / kv_cache_set_row and read back as floats by
 * kv_cache_key_row / kv_cache_value_row; attention reads them in place
 * with the typed kernels (kv_dots_kv / kv_wsum_kv in kernels.h). `pos` is
 * each token's true position in the sequence (what the causal mask and
 * the policies reason with). Keys are stored after rotary embedding at `pos`
 * ("original positions").
 *
 * Heads grow on demand and any slot can be removed; lengths may differ per
 * head (head-adaptive policies). Removing slots keeps the others in order
 * and moves whichever side of the removed slots is shorter, so evicting the
 * oldest tokens (window, sinks + recent) moves almost nothing: the live
 * slots then start `off` slots into the allocation. Memory is given back
 * (realloc down) once the slack passes a quarter of the live slots, so
 * kv_cache_bytes() is the physical memory the cache holds, not a mask. */
#ifndef KV_KVCACHE_H
#define KV_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

/* The storage type of the rows. */
typedef enum kv_cache_type { KV_CACHE_F32 = 0, KV_CACHE_F16 = 1, KV_CACHE_Q8_0 = 2 } kv_cache_type;

/* "f32", "f16", "q8_0". */
const char *kv_cache_type_name(kv_cache_type t);
/* The name into *t; KV_EINVAL naming the text otherwise. */
int kv_cache_type_parse(const char *s, kv_cache_type *t);
/* Bytes of one row of head_dim values (q8_0: head_dim a multiple of 32). */
size_t kv_cache_type_row_bytes(kv_cache_type t, int head_dim);

/* The row pointers are bytes, not floats, so that no reader can index them
 * as floats by mistake: row j of k is kb + j * kv_cache_row_bytes(). */
typedef struct kv_cache_head {
    uint8_t *kb;  /* [len] key rows: the live slots (inside an allocation of cap) */
    uint8_t *vb;  /* [len] value rows */
    int32_t *pos; /* [len] true position of each slot */
    int32_t len;  /* live slots */
    int32_t cap;  /* allocated slots */
    int32_t off;  /* slots of the allocation before k (freed by evictions at the front) */
} kv_cache_head;

typedef struct kv_cache kv_cache; /* opaque */

/* KV_EINVAL for q8_0 when head_dim is not a multiple of 32 (a row is
 * whole blocks). */
int kv_cache_new(int n_layers, int n_kv_heads, int head_dim, kv_cache_type type, kv_cache **out);
void kv_cache_free(kv_cache *c);

int kv_cache_n_layers(const kv_cache *c);
int kv_cache_n_kv_heads(const kv_cache *c);
int kv_cache_head_dim(const kv_cache *c);
kv_cache_type kv_cache_get_type(const kv_cache *c);
/* Bytes of one key (or value) row. */
size_t kv_cache_row_bytes(const kv_cache *c);
/* The weight type with the rows' layout (KV_F32, KV_F16, KV_Q8_0): what
 * kv_dots_kv / kv_wsum_kv (kernels.h) take. */
kv_dtype kv_cache_row_dtype(const kv_cache *c);
kv_cache_head *kv_cache_head_at(kv_cache *c, int layer, int kv_head);

/* Makes room for `extra` more slots in one head (amortised growth). */
int kv_cache_reserve(kv_cache *c, kv_cache_head *h, int32_t extra);
/* Appends one slot (reserves as needed). k, v: [head_dim] floats, stored
 * in the cache's type. */
int kv_cache_append(kv_cache *c, kv_cache_head *h, const float *k, const float *v, int32_t pos);
/* Slot `slot`'s key / value as head_dim floats (what attention reads:
 * exact for f32 and f16, d * q in fp32 for q8_0). */
void kv_cache_key_row(const kv_cache *c, const kv_cache_head *h, int32_t slot, float *out);
void kv_cache_value_row(const kv_cache *c, const kv_cache_head *h, int32_t slot, float *out);
/* Overwrites slot `slot`'s key and/or value (either may be NULL) from
 * floats, rounded to the cache's type as an append would. */
void kv_cache_set_row(const kv_cache *c, kv_cache_head *h, int32_t slot, const float *k, const float *v);
/* Keeps only slots keep[0..n_keep) (strictly increasing indices < len),
 * compacting in order, and shrinks the allocation when it is mostly empty. */
int kv_cache_keep(kv_cache *c, kv_cache_head *h, const int32_t *keep, int32_t n_keep);
/* Removes every slot whose keep[j] is 0 by moving slots from the end of the
 * head into the holes: O(removed) slot moves wherever they are, but the
 * order of the slots changes (positions stay with their slots). When src is
 * given, src[i] receives the old index of the slot now at i, for i below the
 * new length, so a policy can move per-slot state alongside. */
int kv_cache_drop(kv_cache *c, kv_cache_head *h, const uint8_t *keep, int32_t *src);
/* Removes one slot (compacting in order). */
int kv_cache_remove(kv_cache *c, kv_cache_head *h, int32_t slot);

/* Empties every head and frees all slot memory: a new sequence starts from
 * nothing, so no state can leak between samples. */
void kv_cache_clear(kv_cache *c);

/* Makes dst (same layers, KV heads, head_dim and type) a copy of src that shares
 * no memory with it: dst's old slots are freed, then each head gets its
 * own arrays laid out as src's (the same capacity, the live slots at the
 * same offset, in the same order), so dst holds, grows and shrinks exactly
 * as src would: kv_cache_bytes(dst) == kv_cache_bytes(src), and the peak
 * counter is src's as it stands. On failure (KV_EINVAL for another shape,
 * KV_ENOMEM) dst is left empty. */
int kv_cache_copy(kv_cache *dst, const kv_cache *src);

/* Layer `layer` of dst (same shape and type as src) as a copy of src's,
 * laid out as kv_cache_copy lays out every layer; dst's other layers are
 * untouched. One prompt pass read for several policies gives each its own
 * copy of a layer, in turn, to compress (pol_fanout). On failure
 * (KV_EINVAL for another shape or layer, KV_ENOMEM) that layer is empty. */
int kv_cache_copy_layer(kv_cache *dst, const kv_cache *src, int layer);
/* Physical bytes held by one layer's heads. */
size_t kv_cache_layer_bytes(const kv_cache *c, int layer);

/* Live slots summed over all heads, and the most in any one (layer, head). */
int64_t kv_cache_total_slots(const kv_cache *c);
int32_t kv_cache_max_len(const kv_cache *c);
/* Physical bytes held by slot storage (capacity, not just live slots). */
size_t kv_cache_bytes(const kv_cache *c);
/* Largest kv_cache_bytes() seen since creation or kv_cache_reset_peak(). */
size_t kv_cache_peak_bytes(const kv_cache *c);
void kv_cache_reset_peak(kv_cache *c);
/* Raises the peak to `bytes` if it is lower: a cache assembled from parts
 * of another (kv_cache_copy_layer) records what a cache evaluated on its
 * own would have held, measured on the parts (pol_fanout_prompt_peak). */
void kv_cache_raise_peak(kv_cache *c, size_t bytes);

#endif
