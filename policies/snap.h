/* snap.h - SnapKV's observation-window scoring and one-shot prompt
 * compression, shared by snapkv.c and pyramidkv.c (internal to policies/).
 *
 * Both policies' parameter tables begin with window, kernel, pooling (in
 * that order); they differ in how many prefix tokens each layer keeps,
 * which a `caps` function fills in once the prompt length is known. */
#ifndef POL_SNAP_H
#define POL_SNAP_H

#include <stdint.h>

#include "policy.h"

enum { SNAP_P_WINDOW, SNAP_P_KERNEL, SNAP_P_POOLING };
enum { SNAP_POOL_AVG, SNAP_POOL_MAX };

/* Fills cap[l] for l < n_layers: the prefix tokens (positions < n - w)
 * layer l keeps besides the window, or -1 to keep everything (n <= B). */
typedef void (*snap_caps_fn)(const kv_policy *p, int32_t n, int32_t w, int32_t *cap);

/* The init for a policy whose caps are `caps` (checks that kernel is odd). */
int snap_init(kv_policy *p, snap_caps_fn caps);
void snap_reset(kv_policy *p);
void snap_free(kv_policy *p);
void snap_plan(kv_policy *p, kv_attn_plan *plan);
int snap_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v);

/* PyramidKV's per-layer prefix caps (METHODS.md A8) for a prompt of n
 * tokens, budget B per layer (window included), window w < = B, L layers:
 * returns 0 (n <= B: keep all, cap[l] = -1), 1 (n < 2 (B - w) or L = 1:
 * uniform, cap[l] = B - w) or 2 (the pyramid). exact = 0 is KVCache-Factory's
 * arithmetic (integer steps: the caps may sum to a little more than
 * L (B - w)); exact = 1 spreads exactly L (B - w) over the same straight
 * line max -> min, rounding by largest remainder (ties to the lower layer). */
int snap_pyramid_caps(int32_t n, int32_t B, int32_t w, int L, int32_t beta, int exact, int32_t *cap);

#endif
