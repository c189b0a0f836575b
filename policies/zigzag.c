/* zigzag.c - ZigZagKV (Zhong et al., COLING 2025, arXiv 2412.09036;
 * METHODS.md A12): SnapKV's observation-window scoring and one-shot prompt
 * compression (snap.h), with per-layer budgets from each layer's
 * "uncertainty": the layers whose attention is spread out keep more than the
 * layers whose attention is concentrated, spending together what the
 * uniform budget spends. No official code exists; the allocation follows
 * the paper's Eq. 6 as kvpress's port (ZigZagKVPress, PR #238) applies it.
 *
 * With B the budget (window included), w = min(window, B), n the prompt,
 * m = n - w prefix keys, L layers, Hkv KV heads, b = B - w:
 *     score  s[l, g, j] per layer, KV head and prefix key, as SnapKV scores
 *            it (the window's votes, pooled, summed over the group)
 *     LMBA   per head, the fewest of its prefix scores, taken best first,
 *            whose running sum reaches `threshold` (0.9) of their total
 *            (at least 1: kvpress's count of running sums below it, + 1);
 *            LMBA_l = its sum over the layer's heads (the port's mean over
 *            heads times Hkv: the same shares)
 *     caps   bb = int(bound * b), the floor of every layer (the paper's
 *            B_bound, 0.2 of the average in the port), and
 *            cap_l = bb + (b - bb) L LMBA_l / sum LMBA      (Eq. 6)
 *            alloc=exact (default): in integers, a layer whose cap would
 *            pass m held at m and its excess spread over the others in the
 *            same proportions, then rounded by largest remainder (ties to
 *            the lower layer): the caps sum to exactly L b, what the uniform
 *            budget keeps; alloc=kvpress: the port's round() (half to even)
 *            of the same line, clipped to [0, m], whose sum can differ by a
 *            few slots
 *     keep   every head of layer l keeps its cap_l best prefix keys and
 *            every key at position >= m.
 * n <= B keeps everything. The budgets are applied to the prefix (the
 * window is always kept, as in PyramidKV); the port applies them to all
 * keys, scoring the window's at the maximum, so its LMBA counts the window
 * too.
 *
 * The budgets need every layer's LMBA, so no layer can be cut before the
 * last one has seen the prompt's end: each layer's scores are kept
 * (Hkv * m doubles per layer) and all layers are cut in the last layer's
 * call, as the port cuts after the forward pass. A layer's attention at the
 * prompt's end therefore still sees its whole prompt, as in every one-shot
 * method. p->layer_limit[l] is the most a head of layer l may hold: before
 * the cut, w + min(m, bb + L (b - bb)); after it, cap_l + w.
 * granularity=query_head: the LMBA is summed over the layer's query heads,
 * each query head selects cap_l and a KV head keeps the union (snap.h).
 * Defaults: SnapKV's scoring as SnapKV's LongBench configuration runs it
 * (window 32, kernel 7, max pooling; snapkv.c), with the port's threshold
 * 0.9 and bound 0.2. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"
#include "snap.h"

enum { P_THRESHOLD = 3, P_BOUND = 4, P_ALLOC = 5 };

static const pol_param_def params[] = {
    {"window", 32, 1, 1 << 20, 1, "observation window: the last prompt queries whose attention votes (kept too)", NULL},
    {"kernel", 7, 1, 1023, 1, "pooling kernel over the votes (odd)", NULL},
    {"pooling", SNAP_POOL_MAX, 0, 1, 1, "pooling of the votes", "avg|max"},
    {"threshold", 0.9, 0, 1, 0, "LMBA: the share of a head's score mass its fewest best keys must hold", NULL},
    {"bound", 0.2, 0, 1, 0, "every layer keeps at least int(bound (B - w)) prefix tokens", NULL},
    {"alloc", 0, 0, 1, 1, "exact: the layers' caps sum to L (B - w); kvpress: the port's rounding", "exact|kvpress"},
    SNAP_PARAM_GRANULARITY,
};

typedef struct zz_ext {
    double **score;  /* [n_layers] -> [n_units][m] until the cut */
    int64_t *lmba;   /* [n_layers] */
    int32_t *cap;    /* [n_layers] */
    int n_stashed;
} zz_ext;

/* ----------------------------------------------------------- the rule */

static int dbl_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

int32_t snap_lmba(const double *score, int32_t m, double tau) {
    if (m <= 0) return 0;
    double *s = malloc((size_t)m * sizeof *s);
    if (!s) {
        kv_errorf(KV_ENOMEM, "out of memory for ZigZagKV's LMBA");
        return -1;
    }
    memcpy(s, score, (size_t)m * sizeof *s);
    qsort(s, (size_t)m, sizeof *s, dbl_desc);
    double total = 0;
    for (int32_t j = 0; j < m; j++) total += s[j];
    const double need = tau * total;
    double run = 0;
    int32_t below = 0;
    for (int32_t j = 0; j < m; j++) {
        run += s[j];
        below += run < need;
    }
    free(s);
    return below + 1 < m ? below + 1 : m;
}

int snap_zigzag_caps(int L, const int64_t *lmba, int32_t m, int32_t b, double bound, int exact, int32_t *cap) {
    const int32_t bb = (int32_t)(bound * b);
    if (!exact) { /* kvpress: round(B_bound + (B_avg - B_bound) L u_l), in double */
        const double bbr = bound * b;
        double total = 0;
        for (int l = 0; l < L; l++) total += (double)lmba[l];
        for (int l = 0; l < L; l++) {
            double x = total > 0 ? rint(bbr + (b - bbr) * L * ((double)lmba[l] / total)) : b;
            cap[l] = x < 0 ? 0 : x > m ? m : (int32_t)x;
        }
        return KV_OK;
    }
    uint8_t *held = calloc((size_t)(L > 0 ? L : 1), 1); /* held at m */
    if (!held) return kv_errorf(KV_ENOMEM, "out of memory");
    int64_t R = (int64_t)L * (b - bb), S; /* to share on top of the floors, among the free layers */
    for (;;) {
        S = 0;
        for (int l = 0; l < L; l++) S += held[l] ? 0 : lmba[l];
        if (S == 0) break;
        int64_t excess = 0;
        for (int l = 0; l < L; l++) /* bb + R lmba_l / S > m: held at m (all at once: the others only gain) */
            if (!held[l] && R * lmba[l] > (int64_t)(m - bb) * S) {
                held[l] = 1;
                excess += m - bb;
            }
        if (!excess) break;
        R -= excess;
    }
    /* the free layers: floors, then one more for the `left` largest remainders */
    int64_t left = R;
    for (int l = 0; l < L; l++) {
        if (held[l]) {
            cap[l] = m;
            continue;
        }
        int64_t q = S > 0 ? R * lmba[l] / S : 0;
        cap[l] = bb + (int32_t)q;
        left -= q;
    }
    for (int l = 0; l < L && S > 0; l++) {
        if (held[l]) continue;
        int64_t rem = R * lmba[l] % S, ahead = 0;
        for (int k = 0; k < L; k++) {
            if (held[k] || k == l) continue;
            int64_t r = R * lmba[k] % S;
            ahead += r > rem || (r == rem && k < l);
        }
        if (ahead < left && rem > 0) cap[l]++;
    }
    free(held);
    return KV_OK;
}

/* ---------------------------------------------------------- the policy */

static void zz_layer_caps(const kv_policy *p, int32_t n, int32_t w, int32_t *cap) {
    /* every layer is cut (with its cap found at the cut) unless n <= B */
    for (int l = 0; l < p->n_layers; l++) cap[l] = n <= p->limit ? -1 : p->limit - w;
}

/* Before the cut: the most a layer can get. */
static int32_t zz_bound(const kv_policy *p, int layer, int32_t b) {
    (void)layer;
    const snap_state *st = p->state;
    const int32_t m = st->n - st->w, bb = (int32_t)(p->param[P_BOUND] * b);
    return st->w + snap_head_most(p, m, bb + (int64_t)p->n_layers * (b - bb));
}

static void zz_drop_stash(kv_policy *p) {
    snap_state *st = p->state;
    zz_ext *x = st->ext;
    for (int l = 0; l < p->n_layers; l++) {
        free(x->score[l]);
        x->score[l] = NULL;
    }
    x->n_stashed = 0;
}

static int zz_cut(kv_policy *p, kv_cache *c, int layer, double **score, int32_t m) {
    snap_state *st = p->state;
    zz_ext *x = st->ext;
    const int nu = st->n_units;
    int64_t s = 0;
    for (int u = 0; u < nu; u++) {
        int32_t k = snap_lmba(*score + (size_t)u * m, m, p->param[P_THRESHOLD]);
        if (k < 0) return KV_ENOMEM;
        s += k;
    }
    free(x->score[layer]);
    x->score[layer] = *score; /* kept until the last layer */
    *score = NULL;
    x->lmba[layer] = s;
    if (++x->n_stashed < p->n_layers) return KV_OK;
    const int32_t b = p->limit - st->w;
    int rc = snap_zigzag_caps(p->n_layers, x->lmba, m, b, p->param[P_BOUND], (int)p->param[P_ALLOC] == 0, x->cap);
    int32_t *ucap = rc ? NULL : malloc((size_t)nu * sizeof *ucap);
    if (!rc && !ucap) rc = kv_errorf(KV_ENOMEM, "out of memory");
    for (int l = 0; l < p->n_layers && !rc; l++) {
        for (int u = 0; u < nu; u++) ucap[u] = x->cap[l];
        rc = snap_cut_heads(p, c, l, x->score[l], m, ucap, NULL); /* layer_limit: the longest head */
    }
    free(ucap);
    zz_drop_stash(p);
    return rc;
}

static int zigzag_init(kv_policy *p) {
    int rc = snap_init_cut(p, zz_layer_caps, zz_cut, zz_bound);
    if (rc) return rc;
    snap_state *st = p->state;
    const size_t L = (size_t)(p->n_layers > 0 ? p->n_layers : 1);
    zz_ext *x = calloc(1, sizeof *x);
    st->ext = x;
    if (x) {
        x->score = calloc(L, sizeof *x->score);
        x->lmba = calloc(L, sizeof *x->lmba);
        x->cap = calloc(L, sizeof *x->cap);
    }
    if (!x || !x->score || !x->lmba || !x->cap) return kv_errorf(KV_ENOMEM, "out of memory");
    return KV_OK;
}

static void zigzag_reset(kv_policy *p) {
    zz_drop_stash(p);
    snap_reset(p);
}

/* pol_clone: snap's state, and the layers' stashed scores and LMBAs
 * waiting for the last layer's cut. */
static int zigzag_clone(const kv_policy *src, kv_policy *dst) {
    int rc = snap_clone(src, dst);
    if (rc) return rc;
    const snap_state *ss = src->state;
    const zz_ext *s = ss->ext;
    const size_t L = (size_t)(src->n_layers > 0 ? src->n_layers : 1);
    const size_t ns = (size_t)ss->n_units * (size_t)(ss->n - ss->w > 0 ? ss->n - ss->w : 0); /* [n_units][m] */
    zz_ext *d = calloc(1, sizeof *d);
    ((snap_state *)dst->state)->ext = d;
    if (!d) return KV_ENOMEM;
    d->score = calloc(L, sizeof *d->score);
    d->lmba = malloc(L * sizeof *d->lmba);
    d->cap = malloc(L * sizeof *d->cap);
    if (!d->score || !d->lmba || !d->cap) return KV_ENOMEM;
    memcpy(d->lmba, s->lmba, L * sizeof *d->lmba);
    memcpy(d->cap, s->cap, L * sizeof *d->cap);
    for (int l = 0; l < src->n_layers; l++) {
        if (!s->score[l]) continue;
        if (!(d->score[l] = malloc((ns ? ns : 1) * sizeof **d->score))) return KV_ENOMEM;
        memcpy(d->score[l], s->score[l], ns * sizeof **d->score);
        d->n_stashed++;
    }
    return d->n_stashed == s->n_stashed ? KV_OK : kv_errorf(KV_EINVAL, "internal: zigzag: %d layers stashed, %d "
                                                            "found", s->n_stashed, d->n_stashed);
}

static void zigzag_free(kv_policy *p) {
    snap_state *st = p->state;
    if (st && st->ext) {
        zz_ext *x = st->ext;
        if (x->score) zz_drop_stash(p);
        free(x->score);
        free(x->lmba);
        free(x->cap);
        free(x);
    }
    snap_free(p);
}

const pol_ops pol_zigzag_ops = {
    .name = "zigzag",
    .summary = "one-shot: snapkv with per-layer budgets in proportion to the tokens holding 90% of each layer's attention, same total (ZigZagKV, no authors' code: kvpress's port; scoring defaults: SnapKV's LongBench config w32_k7_maxpool; METHODS.md A12)",
    .params = params,
    .n_params = 7,
    .needs = KV_NEED_WINDOW,
    .flags = POL_ONE_SHOT,
    .init = zigzag_init,
    .on_layer = snap_on_layer,
    .reset = zigzag_reset,
    .free = zigzag_free,
    .clone_state = zigzag_clone,
    .plan = snap_plan,
    .on_trim = snap_on_trim,
};
