/* adakv.c - Ada-KV (Feng et al.; FFY0/AdaKV AdaptiveSnapKVCluster, and
 * KVCache-Factory's AdaKVCluster, METHODS.md A9): SnapKV's observation-window
 * scoring and one-shot prompt compression (snap.h), with the layer's budget
 * shared among its KV heads by the scores themselves, so that heads whose
 * attention is spread out keep more than heads whose attention is
 * concentrated. The cache is ragged: every head keeps its own number of
 * slots, and the memory of the others is freed.
 *
 * With B the budget (window included), w = min(window, B), n the prompt,
 * m = n - w prefix keys, Hkv KV heads, and b the layer's base prefix budget
 * per head (b = B - w; layers=pyramid: PyramidKV's cap for the layer, see
 * pyramidkv.c, with `alloc` choosing its arithmetic too - AdaKV's own
 * pyram_mode draws the line from B with the window inside and floors its
 * steps, so its layers can spend more than L (B - w)):
 *     score  s[g, j] per KV head g and prefix key j, as SnapKV scores it
 *            (the window's votes, pooled, summed over the group: the sum
 *            ranks across heads as KVCache-Factory's group mean does)
 *     count  count_g = how many of the Hkv * b best scores of the whole
 *            layer (ties: the older position, then the lower head) are in
 *            head g; normalize=1 first scales each head's scores by the
 *            share of its mass in its own b best (AdaKV's `normalize`)
 *     caps   alloc=exact (default): f = int(floor * b), and head g keeps
 *            cap_g = f + (b - f) count_g / b prefix keys, rounded by largest
 *            remainder (ties to the lower head): every head keeps at least
 *            f, and the heads together keep exactly Hkv * b, what the
 *            uniform budget keeps;
 *            alloc=factory: AdaKV's round(count_g (1 - floor) + f) (half to
 *            even; computed in double, where AdaKV rounds a float32), whose
 *            sum can differ from Hkv * b by a few slots
 *     keep   head g keeps its cap_g best prefix keys and every key at
 *            position >= m (the window, and any token past the prompt fed in
 *            the same call)
 * n <= B keeps everything. cap_g <= m always (count_g <= m and b <= m).
 * Generated tokens are appended without eviction (POL_ONE_SHOT).
 *
 * p->layer_limit[l] is the most slots one head of layer l may hold: before
 * the cut, the most the rule can give a head, w + min(m, f + (b - f) Hkv);
 * after it, the largest head's cap + w. adakv_head_limit() gives each
 * head's. granularity=query_head (AdaKV without gqa_support, and its
 * pre-GQA code): the units are the query heads, count and caps are shared
 * among the layer's H query heads (H b in all), and each KV head keeps the
 * union of its query heads' selections (snap.h): head_cap is then the
 * union's size. With kv_head (default) the group's votes are reduced before
 * pooling, as AdaKV's gqa_support does (its mean; the sum ranks the same).
 * Defaults are AdaKV's (window 32, kernel 7, max pooling) with
 * KVCache-Factory's and kvpress's floor 0.2 (AdaKV's README example uses
 * 0.5). AdaKV's `skip` (the first layers uniform) is not offered. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"
#include "snap.h"

enum { P_FLOOR = 3, P_LAYERS = 4, P_BETA = 5, P_ALLOC = 6, P_NORMALIZE = 7, P_GRANULARITY = 8 };

static const pol_param_def params[] = {
    {"window", 32, 1, 1 << 20, 1, "observation window: the last prompt queries whose attention votes (kept too)", NULL},
    {"kernel", 7, 1, 1023, 1, "pooling kernel over the votes (odd)", NULL},
    {"pooling", SNAP_POOL_MAX, 0, 1, 1, "pooling of the votes", "avg|max"},
    {"floor", 0.2, 0, 1, 0, "alpha: every head keeps at least int(alpha b) of the b prefix tokens per head", NULL},
    {"layers", 0, 0, 1, 1, "the layer's base budget: uniform (SnapKV's) or pyramid (PyramidKV's line)",
     "uniform|pyramid"},
    {"beta", 20, 1, 1 << 20, 1, "layers=pyramid: the last layer keeps about (B - w) / beta prefix tokens", NULL},
    {"alloc", 0, 0, 1, 1, "exact: the heads' caps sum to Hkv b (and the layers' to L (B - w)); factory: AdaKV's rounding",
     "exact|factory"},
    {"normalize", 0, 0, 1, 1, "1: scale each head's scores by the share of its mass in its b best (AdaKV's normalize)",
     NULL},
    SNAP_PARAM_GRANULARITY,
};

typedef struct ada_ext {
    int32_t *head_cap; /* [n_layers][n_kv_heads] prefix keys kept (-1: not cut) */
} ada_ext;

/* ----------------------------------------------------------- the rule */

typedef struct ada_cand { double v; int32_t pos, head; } ada_cand;

/* Best first: higher score, then the older position, then the lower head. */
static int ada_cmp(const void *a, const void *b) {
    const ada_cand *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    return (x->head > y->head) - (x->head < y->head);
}

static int dbl_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

int snap_ada_caps(int n_kv, int32_t m, int32_t b, double alpha, int exact, int normalize, const double *score,
                  int32_t *cap) {
    for (int g = 0; g < n_kv; g++) cap[g] = 0;
    if (b > m) b = m;
    if (b <= 0 || m <= 0) return KV_OK;
    const size_t N = (size_t)n_kv * (size_t)m;
    ada_cand *all = malloc(N * sizeof *all);
    double *ratio = malloc((size_t)n_kv * sizeof *ratio), *sorted = malloc((size_t)m * sizeof *sorted);
    if (!all || !ratio || !sorted) {
        free(all);
        free(ratio);
        free(sorted);
        return kv_errorf(KV_ENOMEM, "out of memory for Ada-KV's head budgets");
    }
    for (int g = 0; g < n_kv; g++) {
        ratio[g] = 1.0;
        if (!normalize) continue;
        /* the head's mass in its own b best over its total, both summed best first */
        memcpy(sorted, score + (size_t)g * m, (size_t)m * sizeof *sorted);
        qsort(sorted, (size_t)m, sizeof *sorted, dbl_desc);
        double top = 0, total = 0;
        for (int32_t j = 0; j < m; j++) {
            total += sorted[j];
            if (j + 1 == b) top = total;
        }
        ratio[g] = total > 0 ? top / total : 0.0;
    }
    for (int g = 0; g < n_kv; g++)
        for (int32_t j = 0; j < m; j++)
            all[(size_t)g * m + j] = (ada_cand){score[(size_t)g * m + j] * ratio[g], j, g};
    qsort(all, N, sizeof *all, ada_cmp);
    int64_t *count = calloc((size_t)n_kv, sizeof *count);
    if (!count) {
        free(all);
        free(ratio);
        free(sorted);
        return kv_errorf(KV_ENOMEM, "out of memory for Ada-KV's head budgets");
    }
    const size_t top = (size_t)n_kv * (size_t)b; /* <= N: b <= m */
    for (size_t i = 0; i < top; i++) count[all[i].head]++;
    const int32_t f = (int32_t)(alpha * b);
    if (exact) {
        /* cap_g = f + (b - f) count_g / b: floors, then one more for the
         * heads with the largest remainders until they sum to n_kv b */
        int64_t left = (int64_t)n_kv * b;
        for (int g = 0; g < n_kv; g++) {
            cap[g] = f + (int32_t)((int64_t)(b - f) * count[g] / b);
            left -= cap[g];
        }
        for (; left > 0; left--) {
            int best = -1;
            int64_t best_rem = 0;
            for (int g = 0; g < n_kv; g++) {
                int64_t rem = (int64_t)(b - f) * count[g] % b;
                if (rem > best_rem) best = g, best_rem = rem;
            }
            if (best < 0) break; /* cannot happen: the remainders add up to `left` heads' worth */
            cap[best]++;
            count[best] = 0; /* its remainder is spent */
        }
    } else {
        for (int g = 0; g < n_kv; g++) {
            double x = rint((double)count[g] * (1 - alpha) + f);
            cap[g] = x < 0 ? 0 : x > m ? m : (int32_t)x;
        }
    }
    free(count);
    free(all);
    free(ratio);
    free(sorted);
    return KV_OK;
}

/* ---------------------------------------------------------- the policy */

static void ada_layer_caps(const kv_policy *p, int32_t n, int32_t w, int32_t *cap) {
    if ((int)p->param[P_LAYERS] == 1) {
        snap_pyramid_caps(n, p->limit, w, p->n_layers, (int32_t)p->param[P_BETA], (int)p->param[P_ALLOC] == 0, cap);
        return;
    }
    for (int l = 0; l < p->n_layers; l++) cap[l] = n <= p->limit ? -1 : p->limit - w;
}

/* Before the cut: the most the rule can give one head of the layer. */
static int32_t ada_bound(const kv_policy *p, int layer, int32_t b) {
    (void)layer;
    const snap_state *st = p->state;
    const int32_t m = st->n - st->w, f = (int32_t)(p->param[P_FLOOR] * b);
    return st->w + snap_head_most(p, m, f + (int64_t)(b - f) * st->n_units);
}

static int ada_cut(kv_policy *p, kv_cache *c, int layer, double **score, int32_t m) {
    snap_state *st = p->state;
    ada_ext *x = st->ext;
    int32_t *ucap = malloc((size_t)st->n_units * sizeof *ucap);
    if (!ucap) return kv_errorf(KV_ENOMEM, "out of memory");
    int rc = snap_ada_caps(st->n_units, m, st->cap[layer], p->param[P_FLOOR], (int)p->param[P_ALLOC] == 0,
                           (int)p->param[P_NORMALIZE], *score, ucap);
    /* each KV head: the union of its units' selections (kv_head: its own cap) */
    if (!rc) rc = snap_cut_heads(p, c, layer, *score, m, ucap, x->head_cap + (size_t)layer * p->n_kv_heads);
    free(ucap);
    return rc;
}

int32_t adakv_head_limit(const kv_policy *p, int layer, int kv_head) {
    const snap_state *st = p->state;
    const ada_ext *x = st->ext;
    int32_t cap = x->head_cap[(size_t)layer * p->n_kv_heads + kv_head];
    return cap < 0 ? p->layer_limit[layer] : cap + st->w;
}

static int adakv_init(kv_policy *p) {
    int rc = snap_init_cut(p, ada_layer_caps, ada_cut, ada_bound);
    if (rc) return rc;
    snap_state *st = p->state;
    ada_ext *x = calloc(1, sizeof *x);
    st->ext = x;
    if (x) x->head_cap = malloc((size_t)(p->n_layers > 0 ? p->n_layers : 1) * (size_t)p->n_kv_heads * sizeof *x->head_cap);
    if (!x || !x->head_cap) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int i = 0; i < p->n_layers * p->n_kv_heads; i++) x->head_cap[i] = -1;
    return KV_OK;
}

static void adakv_reset(kv_policy *p) {
    snap_state *st = p->state;
    ada_ext *x = st->ext;
    for (int i = 0; i < p->n_layers * p->n_kv_heads; i++) x->head_cap[i] = -1;
    snap_reset(p);
}

/* pol_clone: snap's state, and the head caps of the layers cut. */
static int adakv_clone(const kv_policy *src, kv_policy *dst) {
    int rc = snap_clone(src, dst);
    if (rc) return rc;
    const ada_ext *s = ((const snap_state *)src->state)->ext;
    const size_t n = (size_t)(src->n_layers > 0 ? src->n_layers : 1) * (size_t)src->n_kv_heads;
    ada_ext *d = calloc(1, sizeof *d);
    ((snap_state *)dst->state)->ext = d;
    if (!d || !(d->head_cap = malloc(n * sizeof *d->head_cap))) return KV_ENOMEM;
    memcpy(d->head_cap, s->head_cap, n * sizeof *d->head_cap);
    return KV_OK;
}

static void adakv_free(kv_policy *p) {
    snap_state *st = p->state;
    if (st && st->ext) {
        ada_ext *x = st->ext;
        free(x->head_cap);
        free(x);
    }
    snap_free(p);
}

const pol_ops pol_adakv_ops = {
    .name = "adakv",
    .summary = "one-shot: snapkv with the layer's budget shared among its KV heads by their scores, same total (Ada-KV; "
               "defaults: FFY0/AdaKV AdaptiveSnapKVCluster, window 32 kernel 7 max, floor 0.2 of KVCache-Factory and kvpress; METHODS.md A9)",
    .params = params,
    .n_params = 9,
    .needs = KV_NEED_WINDOW,
    .flags = POL_ONE_SHOT,
    .init = adakv_init,
    .on_layer = snap_on_layer,
    .reset = adakv_reset,
    .free = adakv_free,
    .clone_state = adakv_clone,
    .plan = snap_plan,
    .on_trim = snap_on_trim,
};
