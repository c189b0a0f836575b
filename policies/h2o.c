/* h2o.c - Heavy-Hitter Oracle (Zhang et al., H2O), the real-drop variant of
 * its authors' code (FMInference/H2O utils_real_drop, H2OKVCache_LayerWise;
 * METHODS.md A4 (b)): each slot's score is the attention it has received,
 * summed over every query since it entered the cache (prompt and decode)
 * and over the query heads that share its KV head; once a layer holds more
 * than the budget, it keeps the `recent` share of the budget as the newest
 * tokens and the rest as the highest-scoring older ones, and drops the
 * others for real (their scores go with them).
 *
 * sim=1 is the mask-simulation variant that Keyformer compares against
 * (FMInference/H2O h2o_hf/utils_hh/modify_llama.py, LlamaAttention_heavy_hitter,
 * and its OPT and GPT-NeoX twins; METHODS.md A4 (a)), step for step:
 *  - budgets: on the prompt's n tokens, heavy = int(heavy_ratio * n) and
 *    recent = int(recent_ratio * n), each truncated on its own (so their sum
 *    can be one under int((heavy_ratio + recent_ratio) * n)). With a
 *    percentage budget f the ratios are f (1 - recent) and f recent unless
 *    given (the authors' scripts: 0.1 and 0.1, i.e. budget=20%); with a token
 *    budget B (no ratios to truncate) recent = int(B recent), heavy = B - that.
 *  - nothing is masked until the prompt's last token has been seen (its
 *    first forward is the whole prompt, with full attention).
 *  - after a forward that leaves K tokens, if K > heavy + recent the next
 *    forward sees: the new token and the recent - 1 before it (positions
 *    K + 1 - recent .. K), and the `heavy` best-scored of positions
 *    0 .. K - recent - 1. Position K - recent is in neither set: it is masked
 *    for that one step but keeps its score, and is a heavy candidate again
 *    at the next step (the code's score mask keeps the last `recent` scores
 *    while its attention mask keeps the last recent - 1 and the new one).
 *    Every other unselected token's score is zeroed and it never attends
 *    again: it is dropped for real here. The token held out for a step is
 *    taken out of the cache (its key, value and score parked in the
 *    policy's state, one slot per head) and put back if it wins.
 * So each forward's attention sees exactly heavy + recent slots, and the
 * cache holds heavy + recent - 1 between steps: `limit` is heavy + recent.
 * Departures, refused rather than approximated: recent = 0 (the code's mask
 * then hides the new token even from itself), prefill=streaming (the code
 * reads the prompt in one forward), positions=rerotate (the engine cannot
 * rotate a key that left the cache and came back). A recent budget that
 * truncates to 0 on a short prompt keeps the heavy set only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"

enum { H2O_RECENT, H2O_SIM, H2O_HEAVY_RATIO, H2O_RECENT_RATIO };

static const pol_param_def params[] = {
    {"recent", 0.5, 0, 1, 0, "share of the budget kept as the most recent tokens (H2O: recent = heavy)", NULL},
    {"sim", 0, 0, 1, 1, "1: the mask-simulation variant of utils_hh (heavy/recent = int(ratio * prompt) each, the "
                        "next token counted in, one token held out a step)", NULL},
    {"heavy_ratio", 0, 0, 1, 0, "sim=1: heavy budget = int(heavy_ratio * prompt) (utils_hh; 0: budget x (1 - recent))",
     NULL},
    {"recent_ratio", 0, 0, 1, 0, "sim=1: recent budget = int(recent_ratio * prompt) (utils_hh; 0: budget x recent)",
     NULL},
};

/* sim=1: the token held out of the cache for one step, per (layer, KV head). */
typedef struct h2o_parked {
    int32_t pos; /* -1: none */
    float score;
    float *kv;   /* [2][head_dim] */
} h2o_parked;

typedef struct h2o_state {
    pol_scores *score;
    int32_t heavy, recent, n; /* sim: budgets on the prompt's n tokens (n 0: not fixed yet) */
    int head_dim;
    h2o_parked *park;         /* [n_layers][n_kv_heads], sim only */
} h2o_state;

/* sim=1 with a percentage budget: the ratios utils_hh is given. */
static int sim_ratios(kv_policy *p) {
    double *hr = &p->param[H2O_HEAVY_RATIO], *rr = &p->param[H2O_RECENT_RATIO];
    if (p->budget.kind != POL_BUDGET_FRACTION) {
        if (*hr > 0 || *rr > 0)
            return kv_errorf(KV_EINVAL, "policy h2o: heavy_ratio and recent_ratio need a percentage budget");
        return p->param[H2O_RECENT] > 0 ? KV_OK
                                        : kv_errorf(KV_EINVAL, "policy h2o: sim=1 needs recent > 0 (with no recent "
                                                    "window utils_hh hides each new token even from itself)");
    }
    const double f = p->budget.value;
    if (*hr == 0 && *rr == 0) {
        *rr = f * p->param[H2O_RECENT];
        *hr = f * (1 - p->param[H2O_RECENT]);
    } else if (fabs(*hr + *rr - f) > 1e-9) {
        return kv_errorf(KV_EINVAL, "policy h2o: heavy_ratio %g + recent_ratio %g must equal the budget %g%%", *hr,
                         *rr, f * 100);
    }
    return *rr > 0 ? KV_OK
                   : kv_errorf(KV_EINVAL, "policy h2o: sim=1 needs recent_ratio > 0 (with no recent window utils_hh "
                               "hides each new token even from itself)");
}

static int h2o_init(kv_policy *p) {
    h2o_state *st = calloc(1, sizeof *st);
    p->state = st;
    if (!st || !(st->score = pol_scores_new(p->n_layers, p->n_kv_heads))) return kv_errorf(KV_ENOMEM, "out of memory");
    if (p->param[H2O_SIM] == 0) {
        if (p->param[H2O_HEAVY_RATIO] > 0 || p->param[H2O_RECENT_RATIO] > 0)
            return kv_errorf(KV_EINVAL, "policy h2o: heavy_ratio and recent_ratio are sim=1's (utils_hh)");
        return KV_OK;
    }
    if (p->prefill == POL_PREFILL_STREAMING)
        return kv_errorf(KV_EINVAL, "policy h2o: sim=1 is not defined with prefill=streaming (utils_hh reads the "
                         "prompt in one forward)");
    if (p->positions == KV_POS_REROTATE)
        return kv_errorf(KV_EINVAL, "policy h2o: sim=1 cannot use positions=rerotate (a key held out for a step "
                         "comes back, and its rotation is then unknown to the engine)");
    int rc = sim_ratios(p);
    if (rc) return rc;
    st->park = calloc((size_t)(p->n_layers > 0 ? p->n_layers : 1) * (size_t)(p->n_kv_heads > 0 ? p->n_kv_heads : 1),
                      sizeof *st->park);
    return st->park ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

/* sim: the budgets of a prompt of n tokens, and the limit they make. */
static void sim_fix(kv_policy *p, int32_t n) {
    h2o_state *st = p->state;
    st->n = n;
    if (p->budget.kind == POL_BUDGET_FRACTION) {
        st->heavy = (int32_t)(p->param[H2O_HEAVY_RATIO] * n);
        st->recent = (int32_t)(p->param[H2O_RECENT_RATIO] * n);
    } else {
        int32_t b = p->limit;
        st->recent = (int32_t)(b * p->param[H2O_RECENT]);
        st->heavy = b - st->recent;
    }
    p->limit = st->heavy + st->recent > 0 ? st->heavy + st->recent : 1;
    for (int l = 0; l < p->n_layers; l++) p->layer_limit[l] = p->limit;
}

static void h2o_reset(kv_policy *p) {
    h2o_state *st = p->state;
    pol_scores_reset(st->score);
    st->n = 0;
    if (!st->park) return;
    for (int i = 0; i < p->n_layers * p->n_kv_heads; i++) st->park[i].pos = -1;
    if (p->n_prompt > 0) sim_fix(p, p->n_prompt);
}

static void h2o_free(kv_policy *p) {
    h2o_state *st = p->state;
    if (!st) return;
    pol_scores_free(st->score);
    for (int i = 0; st->park && i < p->n_layers * p->n_kv_heads; i++) free(st->park[i].kv);
    free(st->park);
    free(st);
}

/* pol_clone: the scores and, with sim=1, each head's parked token. */
static int h2o_clone(const kv_policy *src, kv_policy *dst) {
    const h2o_state *s = src->state;
    h2o_state *d = malloc(sizeof *d);
    dst->state = d;
    if (!d) return KV_ENOMEM;
    *d = *s;
    d->park = NULL;
    if (!(d->score = pol_scores_clone(s->score))) return KV_ENOMEM;
    if (!s->park) return KV_OK;
    const size_t n = (size_t)(src->n_layers > 0 ? src->n_layers : 1) * (size_t)(src->n_kv_heads > 0 ? src->n_kv_heads : 1);
    if (!(d->park = calloc(n, sizeof *d->park))) return KV_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        d->park[i] = (h2o_parked){.pos = s->park[i].pos, .score = s->park[i].score};
        if (!s->park[i].kv) continue; /* set once head_dim is known */
        if (!(d->park[i].kv = malloc(2 * (size_t)s->head_dim * sizeof *d->park[i].kv))) return KV_ENOMEM;
        memcpy(d->park[i].kv, s->park[i].kv, 2 * (size_t)s->head_dim * sizeof *d->park[i].kv);
    }
    return KV_OK;
}

/* Adds this call's attention (column sums over the group's query heads). */
static float *accumulate(kv_policy *p, kv_cache *c, const kv_attn_view *v, int g, kv_cache_head **hp) {
    h2o_state *st = p->state;
    const int group = v->n_heads / v->n_kv_heads;
    kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
    int32_t fresh;
    float *score = pol_scores_sync(st->score, v->layer, g, h, &fresh);
    if (!score) return NULL;
    for (int q = g * group; q < (g + 1) * group; q++) {
        const float *row = v->colsum + (size_t)q * v->stride;
        for (int32_t j = 0; j < h->len; j++) score[j] += row[j];
    }
    *hp = h;
    return score;
}

/* The real-drop variant on one head. */
static int real_drop(kv_policy *p, kv_cache *c, kv_cache_head *h, float *score, int layer, int g) {
    if (p->hold || h->len <= p->limit) return KV_OK;
    /* the recent window: the newest `recent` positions (tokens are never
     * evicted while inside it, so these are all present) */
    int32_t recent = (int32_t)(p->limit * p->param[H2O_RECENT]), heavy = p->limit - recent;
    int32_t from = recent > 0 ? pol_max_pos(h) - recent + 1 : INT32_MAX;
    int rc = pol_keep_top(c, h, score, from, heavy, 1);
    int32_t fresh;
    if (!rc) pol_scores_sync(((h2o_state *)p->state)->score, layer, g, h, &fresh); /* record the new length */
    return rc;
}

/* sim: swaps the head's slot at position `out` (or none: -1) with the
 * parked token: the slot leaves the cache into the park, the parked token
 * (if any) comes back with its score. */
static int sim_swap(kv_policy *p, kv_cache *c, kv_cache_head *h, h2o_parked *pk, int32_t out, int layer, int g) {
    h2o_state *st = p->state;
    const int hd = st->head_dim;
    float tmp_score = 0, *tmp = NULL;
    int32_t fresh, slot = -1;
    float *score = pol_scores_sync(st->score, layer, g, h, &fresh);
    if (!score) return KV_ENOMEM;
    for (int32_t j = 0; j < h->len && out >= 0; j++)
        if (h->pos[j] == out) slot = j;
    if (slot >= 0) { /* out of the cache first: it never holds more than after the forward */
        tmp = malloc(2 * (size_t)hd * sizeof *tmp);
        if (!tmp) return kv_errorf(KV_ENOMEM, "out of memory");
        kv_cache_key_row(c, h, slot, tmp); /* as floats: the slot comes back by kv_cache_append */
        kv_cache_value_row(c, h, slot, tmp + hd);
        tmp_score = score[slot];
        int rc = kv_cache_remove(c, h, slot);
        if (rc) {
            free(tmp);
            return rc;
        }
        memmove(score + slot, score + slot + 1, (size_t)(h->len - slot) * sizeof *score);
        pol_scores_sync(st->score, layer, g, h, &fresh);
    }
    if (pk->pos >= 0) { /* back in, with the score it had */
        int rc = kv_cache_append(c, h, pk->kv, pk->kv + hd, pk->pos);
        if (!rc && !(score = pol_scores_sync(st->score, layer, g, h, &fresh))) rc = KV_ENOMEM;
        if (rc) {
            free(tmp);
            return rc;
        }
        score[h->len - 1] = pk->score;
    }
    free(pk->kv);
    pk->kv = tmp;
    pk->pos = slot >= 0 ? out : -1;
    pk->score = tmp_score;
    return KV_OK;
}

/* sim on one head once the prompt has been read: see the file's comment. */
static int sim_cut(kv_policy *p, kv_cache *c, kv_cache_head *h, int layer, int g) {
    h2o_state *st = p->state;
    h2o_parked *pk = &st->park[(size_t)layer * p->n_kv_heads + g];
    const int32_t K = pol_max_pos(h) + 1, r = st->recent;
    if (K <= st->heavy + r) return KV_OK; /* the cache budget is not reached: nothing masked */
    int rc = sim_swap(p, c, h, pk, r > 0 ? K - r : -1, layer, g);
    if (rc) return rc;
    int32_t fresh;
    float *score = pol_scores_sync(st->score, layer, g, h, &fresh);
    if (!score) return KV_ENOMEM;
    rc = pol_keep_top(c, h, score, r > 0 ? K - r + 1 : INT32_MAX, st->heavy, 1);
    if (!rc) pol_scores_sync(st->score, layer, g, h, &fresh);
    return rc;
}

static int h2o_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    h2o_state *st = p->state;
    if (st->park && st->n == 0) sim_fix(p, v->pos0 + v->n_new); /* no prompt length given: the first call */
    if (st->park && !st->head_dim) st->head_dim = kv_cache_head_dim(c);
    /* sim: utils_hh's first forward is the whole prompt, masked nowhere */
    const int reading = st->park && v->pos0 + v->n_new < st->n;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h;
        float *score = accumulate(p, c, v, g, &h);
        if (!score) return kv_errorf(KV_ENOMEM, "out of memory");
        int rc = !st->park ? real_drop(p, c, h, score, v->layer, g)
                 : reading || p->hold ? KV_OK
                                      : sim_cut(p, c, h, v->layer, g);
        if (rc) return rc;
    }
    return KV_OK;
}

/* A window layer's head lost what its window no longer sees: the scores
 * follow their slots, and a parked token (sim) below the floor is gone
 * too (it could never be seen again). */
static int h2o_on_trim(kv_policy *p, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos) {
    h2o_state *st = p->state;
    pol_scores_trim(st->score, layer, kv_head, keep, n_keep);
    h2o_parked *pk = st->park ? &st->park[(size_t)layer * p->n_kv_heads + kv_head] : NULL;
    if (pk && pk->pos >= 0 && pk->pos < min_pos) {
        free(pk->kv);
        pk->kv = NULL;
        pk->pos = -1;
        pk->score = 0;
    }
    return KV_OK;
}

const pol_ops pol_h2o_ops = {
    .name = "h2o",
    .summary = "heavy hitters by accumulated attention + recent window (H2O: real drop, or sim=1 the mask "
               "simulation of utils_hh; METHODS.md A4)",
    .params = params,
    .n_params = 4,
    .needs = KV_NEED_COLSUM,
    .init = h2o_init,
    .on_layer = h2o_on_layer,
    .reset = h2o_reset,
    .free = h2o_free,
    .clone_state = h2o_clone,
    .on_trim = h2o_on_trim,
};
