/* pyramidkv.c - PyramidKV (Cai et al.; KVCache-Factory PyramidKVCluster,
 * METHODS.md A8): SnapKV's scoring and one-shot prompt compression
 * (snap.h), with per-layer budgets that decrease linearly from the first
 * layer to the last and spend the same total as SnapKV's uniform budget.
 *
 * With B the budget (window included), w = min(window, B), n the prompt and
 * L layers:
 *     min = (B - w) // beta,  max = 2 (B - w) - min
 *     if max >= n - w:  max = n - w,  min = 2 (B - w) - max
 *     n <= B:           keep everything
 *     n < 2 (B - w):    SnapKV with B - w prefix tokens in every layer
 *     else:             layer l keeps cap_l prefix tokens + the window,
 *                       cap_l on the straight line max (layer 0) -> min (layer L - 1)
 * KVCache-Factory steps it as cap_l = max - l * ((max - min) // (L - 1)),
 * whose floor lets the caps sum to a little more than L (B - w)
 * (alloc=factory); the default alloc=exact rounds the same line so that
 * the caps sum to exactly L (B - w): every layer together holds what the
 * uniform budget holds. p->layer_limit[l] = cap_l + w.
 * The scores, their granularity (kv_head: the group reduced before
 * pooling; query_head: per query head, a KV head keeping the union) and the
 * cut are SnapKV's (snapkv.c, snap.h); the caps are per unit.
 * Defaults are KVCache-Factory's LongBench runner's, the PyramidKV authors'
 * code (run_longbench.py: window 8, kernel 7, max pooling); SnapKV's
 * LongBench configuration has window 32. */
#include <stdlib.h>

#include "kv_error.h"
#include "policy_impl.h"
#include "snap.h"

enum { P_BETA = 3, P_ALLOC = 4 };

static const pol_param_def params[] = {
    {"window", 8, 1, 1 << 20, 1, "observation window: the last prompt queries whose attention votes (kept too)", NULL},
    {"kernel", 7, 1, 1023, 1, "pooling kernel over the votes (odd)", NULL},
    {"pooling", SNAP_POOL_MAX, 0, 1, 1, "pooling of the votes", "avg|max"},
    {"beta", 20, 1, 1 << 20, 1, "the last layer keeps about (B - w) / beta prefix tokens", NULL},
    {"alloc", 0, 0, 1, 1, "exact: the layers' caps sum to L (B - w); factory: KVCache-Factory's integer steps",
     "exact|factory"},
    SNAP_PARAM_GRANULARITY,
};

int snap_pyramid_caps(int32_t n, int32_t B, int32_t w, int L, int32_t beta, int exact, int32_t *cap) {
    const int64_t base = (int64_t)B - w;
    if (n <= B) {
        for (int l = 0; l < L; l++) cap[l] = -1;
        return 0;
    }
    if (n < 2 * base || L == 1) {
        for (int l = 0; l < L; l++) cap[l] = (int32_t)base;
        return 1;
    }
    int64_t mn = base / beta, mx = 2 * base - mn;
    if (mx >= (int64_t)n - w) {
        mx = (int64_t)n - w;
        mn = 2 * base - mx;
    }
    if (!exact) {
        int64_t steps = (mx - mn) / (L - 1);
        for (int l = 0; l < L; l++) cap[l] = (int32_t)(mx - l * steps);
        return 2;
    }
    /* cap_l = (mx (L-1) - l (mx - mn)) / (L - 1): floors, then one more for
     * the layers with the largest remainders until the sum is L * base */
    int64_t total = 0;
    for (int l = 0; l < L; l++) {
        cap[l] = (int32_t)((mx * (L - 1) - l * (mx - mn)) / (L - 1));
        total += cap[l];
    }
    for (int64_t left = (int64_t)L * base - total; left > 0; left--) {
        int best = -1;
        int64_t best_rem = 0;
        for (int l = 0; l < L; l++) {
            int64_t num = mx * (L - 1) - l * (mx - mn), rem = num - (int64_t)cap[l] * (L - 1);
            if (rem > best_rem) best = l, best_rem = rem;
        }
        if (best < 0) break; /* cannot happen: the remainders sum to `left` layers' worth */
        cap[best]++;
    }
    return 2;
}

static void pyramid_caps(const kv_policy *p, int32_t n, int32_t w, int32_t *cap) {
    snap_pyramid_caps(n, p->limit, w, p->n_layers, (int32_t)p->param[P_BETA], (int)p->param[P_ALLOC] == 0, cap);
}

static int pyramidkv_init(kv_policy *p) { return snap_init(p, pyramid_caps); }

const pol_ops pol_pyramidkv_ops = {
    .name = "pyramidkv",
    .summary = "one-shot: snapkv with per-layer budgets decreasing linearly, same total (PyramidKV; defaults: "
               "Zefan-Cai/KVCache-Factory run_longbench.py, window 8 kernel 7 max; METHODS.md A8)",
    .params = params,
    .n_params = 6,
    .needs = KV_NEED_WINDOW,
    .flags = POL_ONE_SHOT,
    .init = pyramidkv_init,
    .on_layer = snap_on_layer,
    .reset = snap_reset,
    .free = snap_free,
    .plan = snap_plan,
    .clone_state = snap_clone,
    .on_trim = snap_on_trim,
};
