/* snapkv.c - SnapKV (Li et al.; FasterDecoding/SnapKV SnapKVCluster, and
 * KVCache-Factory's, METHODS.md A7): the prompt is compressed once, when it
 * ends; generated tokens are appended without eviction (the cache grows by
 * one slot per generated token: pol_ops.flags POL_ONE_SHOT).
 *
 * Per layer, once the prompt's n tokens are in the cache and n > B (the
 * budget, window included):
 *     votes  v[h, j] = sum over the last w prompt queries (the observation
 *            window) of their softmax attention to prefix key j < n - w
 *     units  granularity=kv_head (default): per KV head g, u[g, j] = the
 *            sum of v[h, j] over its query heads (KVCache-Factory's kv_head
 *            mode reduces the group by its mean, AdaKV's gqa_support too:
 *            the sum ranks the same), reduced BEFORE pooling;
 *            granularity=query_head: per query head, u[h, j] = v[h, j]
 *            (SnapKV's code, after repeat_kv) - see snap.h for what the
 *            cache holds then
 *     pooled s[u, :] = pool1d(u[u, :], kernel, stride 1, padding kernel // 2):
 *            avg (zeros padded, divided by kernel, as avg_pool1d counts them)
 *            or max
 *     keep   each unit selects its B - w best-scored prefix keys (ties: the
 *            older); a KV head keeps the union of its units' selections and
 *            every key at position >= n - w (the window, and any token past
 *            the prompt fed in the same call).
 * w = min(window, B). The kernel must be odd (avg_pool1d's output would be
 * one longer than its input). The votes are summed in double, in query
 * order, from the engine's float softmax rows. Defaults: the configuration
 * of SnapKV's LongBench runs (experiments/LongBench/config/
 * ablation_c*_w32_k7_maxpool.json: window 32, kernel 7, max pooling); its
 * code's own fallbacks (init_snapkv: kernel 5, avg) are settings.
 *
 * The prompt is pol_begin's n_prompt (or, when 0, the first call). The
 * engine delivers the window rows as they are computed (KV_NEED_WINDOW,
 * asked for by snap_plan only for calls that hold window queries), so a
 * prompt fed in chunks or one token at a time gives the same votes; they
 * are kept per (layer, query head) over the n - w prefix keys until the
 * layer is compressed - H * (n - w) doubles per layer, and all layers at
 * once only when the window straddles calls. After the prompt the policy
 * asks for nothing and costs nothing. */
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"
#include "snap.h"

int snap_init_cut(kv_policy *p, snap_caps_fn caps, snap_cut_fn cut, snap_bound_fn bound) {
    if (((int)p->param[SNAP_P_KERNEL] & 1) == 0)
        return kv_errorf(KV_EINVAL, "policy %s: parameter kernel = %g must be odd", p->ops->name, p->param[SNAP_P_KERNEL]);
    const int n_par = p->ops->n_params;
    if (n_par < 4 || strcmp(p->ops->params[n_par - 1].name, "granularity") != 0)
        return kv_errorf(KV_EINVAL, "internal: policy %s: its table must end with granularity", p->ops->name);
    const int query_head = (int)p->param[n_par - 1] == SNAP_GRAN_QUERY_HEAD;
    if (query_head && (p->n_kv_heads <= 0 || p->n_heads < p->n_kv_heads || p->n_heads % p->n_kv_heads))
        return kv_errorf(KV_EINVAL, "policy %s: granularity=query_head needs the model's query heads (%d) to be a "
                         "multiple of its KV heads (%d)", p->ops->name, p->n_heads, p->n_kv_heads);
    snap_state *st = calloc(1, sizeof *st);
    size_t L = (size_t)(p->n_layers > 0 ? p->n_layers : 1);
    if (st) {
        st->caps = caps;
        st->cut = cut;
        st->bound = bound;
        st->cap = calloc(L, sizeof *st->cap);
        st->done = calloc(L, 1);
        st->vote = calloc(L, sizeof *st->vote);
        st->upk = query_head ? p->n_heads / p->n_kv_heads : 1;
        st->n_units = p->n_kv_heads * st->upk;
    }
    p->state = st;
    if (!st || !st->cap || !st->done || !st->vote) return kv_errorf(KV_ENOMEM, "out of memory");
    return KV_OK;
}

int snap_init(kv_policy *p, snap_caps_fn caps) { return snap_init_cut(p, caps, NULL, NULL); }

void snap_free(kv_policy *p) {
    snap_state *st = p->state;
    if (!st) return;
    for (int l = 0; l < p->n_layers && st->vote; l++) free(st->vote[l]);
    free(st->vote);
    free(st->cap);
    free(st->done);
    free(st);
}

int snap_clone(const kv_policy *src, kv_policy *dst) {
    const snap_state *s = src->state;
    const size_t L = (size_t)(src->n_layers > 0 ? src->n_layers : 1);
    snap_state *d = calloc(1, sizeof *d);
    dst->state = d;
    if (!d) return KV_ENOMEM;
    *d = (snap_state){.caps = s->caps, .cut = s->cut, .bound = s->bound, .n = s->n, .w = s->w,
                      .n_units = s->n_units, .upk = s->upk};
    d->cap = malloc(L * sizeof *d->cap);
    d->done = malloc(L);
    d->vote = calloc(L, sizeof *d->vote);
    if (!d->cap || !d->done || !d->vote) return KV_ENOMEM;
    memcpy(d->cap, s->cap, L * sizeof *d->cap);
    memcpy(d->done, s->done, L);
    /* votes of a layer still reading its window: [n_heads][n - w], as snap_on_layer sizes them */
    const size_t nv = (size_t)src->n_heads * (size_t)(s->n - s->w > 0 ? s->n - s->w : 1);
    for (int l = 0; l < src->n_layers; l++) {
        if (!s->vote[l]) continue;
        if (!(d->vote[l] = malloc(nv * sizeof **d->vote))) return KV_ENOMEM;
        memcpy(d->vote[l], s->vote[l], nv * sizeof **d->vote);
    }
    return KV_OK;
}

/* The prompt is n tokens: fixes the window and each layer's cap. */
static void fix_prompt(kv_policy *p, int32_t n) {
    snap_state *st = p->state;
    const int32_t B = p->limit;
    st->n = n;
    st->w = (int32_t)p->param[SNAP_P_WINDOW] < B ? (int32_t)p->param[SNAP_P_WINDOW] : B;
    st->caps(p, n, st->w, st->cap);
    for (int l = 0; l < p->n_layers; l++)
        p->layer_limit[l] = st->cap[l] < 0  ? B
                            : st->bound ? st->bound(p, l, st->cap[l])
                                        : st->w + snap_head_most(p, n - st->w, st->cap[l]);
}

int32_t snap_head_most(const kv_policy *p, int32_t m, int64_t unit_most) {
    const snap_state *st = p->state;
    if (unit_most > m) unit_most = m;
    int64_t most = unit_most * st->upk;
    return (int32_t)(most < m ? most : m);
}

void snap_reset(kv_policy *p) {
    snap_state *st = p->state;
    for (int l = 0; l < p->n_layers; l++) {
        free(st->vote[l]);
        st->vote[l] = NULL;
        st->done[l] = 0;
    }
    st->n = 0;
    if (p->n_prompt > 0) fix_prompt(p, p->n_prompt);
}

void snap_plan(kv_policy *p, kv_attn_plan *pl) {
    snap_state *st = p->state;
    if (st->n == 0 && pl->pos0 == 0) fix_prompt(p, pl->n_new); /* no prompt length given: the first call */
    if (st->n == 0 || st->done[pl->layer] || st->cap[pl->layer] < 0) {
        pl->needs = 0;
        return;
    }
    pl->needs = KV_NEED_WINDOW;
    pl->win_pos0 = st->n - st->w;
    pl->win_n = st->w;
}

/* p [m] = pool1d(v [m]) with stride 1 and padding kernel / 2. */
static void pool(const double *v, int32_t m, int kernel, int kind, double *p) {
    const int32_t r = kernel / 2;
    for (int32_t i = 0; i < m; i++) {
        int32_t a = i - r > 0 ? i - r : 0, b = i + r < m - 1 ? i + r : m - 1;
        if (kind == SNAP_POOL_MAX) {
            double x = v[a];
            for (int32_t t = a + 1; t <= b; t++) x = v[t] > x ? v[t] : x;
            p[i] = x;
        } else {
            double s = 0;
            for (int32_t t = a; t <= b; t++) s += v[t];
            p[i] = s / kernel;
        }
    }
}

typedef struct snap_cand { double v; int32_t pos, slot; } snap_cand;

/* Best first: the higher score, then the older position. */
static int cand_cmp(const void *a, const void *b) {
    const snap_cand *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

int snap_keep_union(kv_cache *c, kv_cache_head *h, const double *score, int n_rows, int32_t m, const int32_t *cap,
                    int32_t *held) {
    const size_t len = (size_t)(h->len > 0 ? h->len : 1);
    snap_cand *cand = malloc(len * sizeof *cand);
    uint8_t *keep = malloc(len);
    if (!cand || !keep) {
        free(cand);
        free(keep);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    int32_t n_pre = 0;
    for (int32_t j = 0; j < h->len; j++) {
        keep[j] = h->pos[j] >= m;
        n_pre += h->pos[j] < m;
    }
    for (int r = 0; r < n_rows; r++) {
        const double *row = score + (size_t)r * (size_t)(m > 0 ? m : 0);
        int32_t n = 0;
        for (int32_t j = 0; j < h->len; j++)
            if (h->pos[j] < m) cand[n++] = (snap_cand){row[h->pos[j]], h->pos[j], j};
        qsort(cand, (size_t)n, sizeof *cand, cand_cmp);
        for (int32_t i = 0; i < n && i < cap[r]; i++) keep[cand[i].slot] = 1;
    }
    int32_t kept = 0;
    for (int32_t j = 0; j < h->len; j++) kept += keep[j] && h->pos[j] < m;
    int rc = kept < n_pre ? pol_keep_mask(c, h, keep, NULL) : KV_OK;
    if (held) *held = kept;
    free(cand);
    free(keep);
    return rc;
}

int snap_keep(kv_cache *c, kv_cache_head *h, const double *score, int32_t m, int32_t k) {
    return snap_keep_union(c, h, score, 1, m, &k, NULL);
}

int snap_cut_heads(kv_policy *p, kv_cache *c, int layer, const double *score, int32_t m, const int32_t *ucap,
                   int32_t *held) {
    const snap_state *st = p->state;
    int32_t most = 0;
    for (int g = 0; g < p->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, layer, g);
        int32_t n;
        int rc = snap_keep_union(c, h, score + (size_t)g * st->upk * (size_t)m, st->upk, m, ucap + g * st->upk, &n);
        if (rc) return rc;
        if (held) held[g] = n;
        if (n > most) most = n;
    }
    p->layer_limit[layer] = most + st->w;
    return KV_OK;
}

/* The layer's votes are complete: the units' pooled scores into score
 * [n_units][m] (kv_head: the group's votes summed first, then pooled;
 * query_head: each query head's pooled), then the cut (by default, every
 * unit its layer's cap best prefix keys, each KV head the union). */
static int cut_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v, const double *vote) {
    snap_state *st = p->state;
    const int32_t m = st->n - st->w, cap = st->cap[v->layer];
    const int group = v->n_heads / v->n_kv_heads;
    if (group != st->upk && st->upk != 1)
        return kv_errorf(KV_EINVAL, "internal: policy %s: %d query heads per KV head, %d expected", p->ops->name, group,
                         st->upk);
    const size_t mm = (size_t)(m > 0 ? m : 1);
    double *sum = malloc(mm * sizeof *sum), *score = calloc((size_t)st->n_units * mm, sizeof *score);
    int32_t *ucap = malloc((size_t)st->n_units * sizeof *ucap);
    int rc = sum && score && ucap ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    const int kernel = (int)p->param[SNAP_P_KERNEL], kind = (int)p->param[SNAP_P_POOLING];
    for (int g = 0; g < v->n_kv_heads && !rc && m > 0; g++) {
        if (st->upk == 1) { /* reduce the group, then pool */
            memset(sum, 0, mm * sizeof *sum);
            for (int q = g * group; q < (g + 1) * group; q++)
                for (int32_t i = 0; i < m; i++) sum[i] += vote[(size_t)q * m + i];
            pool(sum, m, kernel, kind, score + (size_t)g * m);
        } else {
            for (int q = g * group; q < (g + 1) * group; q++)
                pool(vote + (size_t)q * m, m, kernel, kind, score + (size_t)q * m);
        }
    }
    free(sum);
    if (!rc && st->cut) rc = st->cut(p, c, v->layer, &score, m);
    else if (!rc) {
        for (int u = 0; u < st->n_units; u++) ucap[u] = cap;
        rc = snap_cut_heads(p, c, v->layer, score, m, ucap, NULL);
    }
    free(ucap);
    free(score);
    return rc;
}

int snap_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    snap_state *st = p->state;
    const int l = v->layer;
    if (st->n == 0 || st->done[l] || st->cap[l] < 0) return KV_OK;
    const int32_t m = st->n - st->w;
    const int group = v->n_heads / v->n_kv_heads;
    const int last = v->pos0 + v->n_new >= st->n; /* this call holds the prompt's last query */
    if (!st->vote[l] && (v->window || last)) {
        st->vote[l] = calloc((size_t)v->n_heads * (size_t)(m > 0 ? m : 1), sizeof(double));
        if (!st->vote[l]) return kv_errorf(KV_ENOMEM, "out of memory for SnapKV votes");
    }
    double *vote = st->vote[l];
    if (v->window)
        for (int q = 0; q < v->n_heads; q++) {
            const kv_cache_head *h = kv_cache_head_at(c, l, q / group);
            for (int32_t r = 0; r < v->win_n; r++) { /* in query order */
                const float *row = v->window + ((size_t)q * v->win_n + r) * v->stride;
                for (int32_t j = 0; j < h->len; j++)
                    if (h->pos[j] < m) vote[(size_t)q * m + h->pos[j]] += row[j];
            }
        }
    if (!last) return KV_OK; /* the prompt goes on */
    st->done[l] = 1;
    int rc = cut_layer(p, c, v, vote);
    free(st->vote[l]);
    st->vote[l] = NULL;
    return rc;
}

/* A window layer freed the slots below min_pos: their votes go too. Votes
 * are kept by position while the observation window spans several calls,
 * and a slot freed between two of them has votes from the earlier queries
 * only; in one call the engine drops its row entries before the policy
 * sees them. Zeroing makes both the same (the pooling reads neighbours). */
int snap_on_trim(kv_policy *p, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos) {
    (void)keep, (void)n_keep;
    snap_state *st = p->state;
    double *vote = st->vote ? st->vote[layer] : NULL;
    const int32_t m = st->n - st->w;
    if (!vote || m <= 0) return KV_OK;
    const int32_t upto = min_pos < m ? min_pos : m;
    const int group = p->n_heads / p->n_kv_heads;
    for (int q = kv_head * group; q < (kv_head + 1) * group; q++)
        for (int32_t i = 0; i < upto; i++) vote[(size_t)q * m + i] = 0.0;
    return KV_OK;
}

/* ------------------------------------------------------------ SnapKV */

static const pol_param_def params[] = {
    {"window", 32, 1, 1 << 20, 1, "observation window: the last prompt queries whose attention votes (kept too)", NULL},
    {"kernel", 7, 1, 1023, 1, "pooling kernel over the votes (odd)", NULL},
    {"pooling", SNAP_POOL_MAX, 0, 1, 1, "pooling of the votes", "avg|max"},
    SNAP_PARAM_GRANULARITY,
};

static void uniform_caps(const kv_policy *p, int32_t n, int32_t w, int32_t *cap) {
    for (int l = 0; l < p->n_layers; l++) cap[l] = n <= p->limit ? -1 : p->limit - w;
}

static int snapkv_init(kv_policy *p) { return snap_init(p, uniform_caps); }

const pol_ops pol_snapkv_ops = {
    .name = "snapkv",
    .summary = "one-shot: the prompt cut to the budget by its observation window's pooled attention, no eviction in decode "
               "(SnapKV; defaults: FasterDecoding/SnapKV's LongBench config w32_k7_maxpool; METHODS.md A7)",
    .params = params,
    .n_params = 4,
    .needs = KV_NEED_WINDOW,
    .flags = POL_ONE_SHOT,
    .init = snapkv_init,
    .on_layer = snap_on_layer,
    .reset = snap_reset,
    .free = snap_free,
    .plan = snap_plan,
    .clone_state = snap_clone,
    .on_trim = snap_on_trim,
};
