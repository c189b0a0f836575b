/* snap.h - SnapKV's observation-window scoring and one-shot prompt
 * compression, shared by snapkv.c, pyramidkv.c, adakv.c and zigzag.c
 * (internal to policies/).
 *
 * Their parameter tables begin with window, kernel, pooling (in that
 * order) and end with granularity; they differ in how many prefix tokens
 * each layer (and head) keeps: a `caps` function fills in each layer's base
 * once the prompt length is known, and an optional `cut` replaces the
 * uniform cut once a layer's scores are complete (Ada-KV: heads share the
 * layer's budget; ZigZagKV: layers share the model's, so it waits for the
 * last layer).
 *
 * Granularity: the scores are per unit, a unit being a KV head (kv_head:
 * the group's votes summed, then pooled, as KVCache-Factory's kv_head mode
 * and AdaKV's gqa_support reduce the group before pooling) or a query head
 * (query_head: each query head's votes pooled, as SnapKV's and
 * KVCache-Factory's default code scores them after repeat_kv). A unit
 * selects its own cap best prefix keys; a KV head keeps every key at
 * position >= n - w and the union of its units' selections. The reference
 * code holds one copy of the selected keys per query head (G = n_heads /
 * n_kv_heads copies of the window, and of any key two query heads both
 * chose): the engine's cache has one array per KV head, shared by the
 * group's query heads, so here the group's picks are held once, the memory
 * reported is the union's (between B and G (B - w) + w slots per KV head,
 * where the reference holds G B), and each query head also sees the keys
 * its group's other query heads picked (in the reference it sees its own). */
#ifndef POL_SNAP_H
#define POL_SNAP_H

#include <stdint.h>

#include "policy_impl.h"

enum { SNAP_P_WINDOW, SNAP_P_KERNEL, SNAP_P_POOLING };
enum { SNAP_POOL_AVG, SNAP_POOL_MAX };
enum { SNAP_GRAN_KV_HEAD, SNAP_GRAN_QUERY_HEAD };

/* The granularity parameter every snap policy ends its table with. */
#define SNAP_PARAM_GRANULARITY                                                                                     \
    {"granularity", SNAP_GRAN_KV_HEAD, 0, 1, 1,                                                                    \
     "kv_head: a KV head's group votes together (summed, then pooled; B slots per KV head); query_head: each "      \
     "query head selects (SnapKV's code), a KV head keeps the union (up to G (B - w) + w slots)",                 \
     "kv_head|query_head"}

/* Fills cap[l] for l < n_layers: the prefix tokens (positions < n - w)
 * layer l keeps besides the window, or -1 to keep everything (n <= B). */
typedef void (*snap_caps_fn)(const kv_policy *p, int32_t n, int32_t w, int32_t *cap);

/* Cuts layer `layer` once its votes are complete. (*score) [n_units][m]
 * is the pooled score of each prefix key (by position < m = n - w) per
 * unit (snap_state.n_units: KV heads, or query heads with
 * granularity=query_head); the function may take it (set *score to NULL
 * and free it later). Without one, every unit selects its cap[layer] best. */
typedef int (*snap_cut_fn)(kv_policy *p, kv_cache *c, int layer, double **score, int32_t m);
/* The most slots a head of a layer whose base cap is cap (>= 0) may hold,
 * for p->layer_limit until the layer is cut; without one, cap + w. */
typedef int32_t (*snap_bound_fn)(const kv_policy *p, int layer, int32_t cap);

/* What the snap policies share (p->state). */
typedef struct snap_state {
    snap_caps_fn caps;
    snap_cut_fn cut;      /* NULL: the uniform cut */
    snap_bound_fn bound;  /* NULL: cap + w */
    int32_t n, w;         /* prompt length (0 until known), effective window */
    int32_t *cap;         /* [n_layers] prefix tokens kept (-1: all) */
    uint8_t *done;        /* [n_layers] votes complete (and cut, unless the cut waits) */
    double **vote;        /* [n_layers] -> [n_heads][n - w] or NULL */
    int n_units, upk;     /* scoring units per layer, and per KV head (granularity) */
    void *ext;            /* the policy's own state (its free frees it) */
} snap_state;

/* The init for a policy whose caps are `caps` (checks that kernel is odd). */
int snap_init(kv_policy *p, snap_caps_fn caps);
/* The same with a cut and a bound of its own (either may be NULL). */
int snap_init_cut(kv_policy *p, snap_caps_fn caps, snap_cut_fn cut, snap_bound_fn bound);
void snap_reset(kv_policy *p);
void snap_free(kv_policy *p);
/* pol_clone of the shared state (caps, cut flags, votes); ext is left NULL
 * for the policy's own clone to fill. */
int snap_clone(const kv_policy *src, kv_policy *dst);
void snap_plan(kv_policy *p, kv_attn_plan *plan);
int snap_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v);
/* on_trim: a window layer's freed positions lose their votes. */
int snap_on_trim(kv_policy *p, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos);

/* Keeps the k best-scored prefix keys of a head (score by position, for
 * positions < m; ties: the older) and every key at position >= m. */
int snap_keep(kv_cache *c, kv_cache_head *h, const double *score, int32_t m, int32_t k);
/* The same for a head selected by n_rows units: the union of each row's
 * cap[r] best (score [n_rows][m]); *held: the prefix keys left (may be NULL). */
int snap_keep_union(kv_cache *c, kv_cache_head *h, const double *score, int n_rows, int32_t m, const int32_t *cap,
                    int32_t *held);
/* Cuts every KV head of a layer: head g keeps the union of its units'
 * ucap[u] best (score [n_units][m]) and every key from m on; sets
 * p->layer_limit[layer] to the longest head's slots and, when held is
 * given, held[g] to head g's prefix keys. */
int snap_cut_heads(kv_policy *p, kv_cache *c, int layer, const double *score, int32_t m, const int32_t *ucap,
                   int32_t *held);
/* The most prefix keys a KV head holds when each of its units may select
 * up to `unit_most` of the m (the union of upk selections). */
int32_t snap_head_most(const kv_policy *p, int32_t m, int64_t unit_most);

/* PyramidKV's per-layer prefix caps (METHODS.md A8) for a prompt of n
 * tokens, budget B per layer (window included), window w < = B, L layers:
 * returns 0 (n <= B: keep all, cap[l] = -1), 1 (n < 2 (B - w) or L = 1:
 * uniform, cap[l] = B - w) or 2 (the pyramid). exact = 0 is KVCache-Factory's
 * arithmetic (integer steps: the caps may sum to a little more than
 * L (B - w)); exact = 1 spreads exactly L (B - w) over the same straight
 * line max -> min, rounding by largest remainder (ties to the lower layer). */
int snap_pyramid_caps(int32_t n, int32_t B, int32_t w, int L, int32_t beta, int exact, int32_t *cap);

/* Ada-KV's head budgets for one layer (METHODS.md A9; adakv.c): score
 * [n_kv][m] by position, b the layer's base prefix budget per head
 * (0 <= b <= m), alpha the floor. count_g = how many of the n_kv * b best
 * scores of the layer (ties: the older position, then the lower head) are
 * head g's (normalize: each head's scores first scaled by the share of its
 * mass in its own b best); then exact = 1: f = (int)(alpha b) and cap_g =
 * f + (b - f) count_g / b, rounded by largest remainder (ties to the lower
 * head) so that the caps sum to n_kv * b; exact = 0: AdaKV's
 * round(count_g (1 - alpha) + f), half to even. Fills cap [n_kv]; 0 or
 * KV_ENOMEM. */
int snap_ada_caps(int n_kv, int32_t m, int32_t b, double alpha, int exact, int normalize, const double *score,
                  int32_t *cap);
/* A head's slots as Ada-KV left them: its cap + w once its layer is cut
 * (before: the layer's limit). */
int32_t adakv_head_limit(const kv_policy *p, int layer, int kv_head);

/* ZigZagKV (METHODS.md A12; zigzag.c). The minimum budget to maintain
 * attention of one head: sorted descending, the fewest of score [m] whose
 * running sum reaches tau times their total (at least 1). */
int32_t snap_lmba(const double *score, int32_t m, double tau); /* -1: out of memory */
/* Per-layer prefix caps from lmba [L] (each layer's LMBA summed over its
 * heads, >= 1), b the uniform prefix budget (b < m), m the prefix length:
 * bb = (int)(bound b); exact = 1: cap_l = bb + (share of L (b - bb) in
 * proportion to lmba_l), a layer whose share would pass m held at m and its
 * excess spread over the others, rounded by largest remainder (ties to the
 * lower layer): the caps sum to L b; exact = 0: kvpress's arithmetic,
 * round(bound b + (b - bound b) L lmba_l / sum lmba), half to even, clipped
 * to [0, m]. 0 or KV_ENOMEM. */
int snap_zigzag_caps(int L, const int64_t *lmba, int32_t m, int32_t b, double bound, int exact, int32_t *cap);

#endif
