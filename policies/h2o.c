/* h2o.c - Heavy-Hitter Oracle (Zhang et al., H2O), the real-drop variant of
 * its authors' code (FMInference/H2O utils_real_drop, H2OKVCache_LayerWise;
 * METHODS.md A4 (b)): each slot's score is the attention it has received,
 * summed over every query since it entered the cache (prompt and decode)
 * and over the query heads that share its KV head; once a layer holds more
 * than the budget, it keeps the `recent` share of the budget as the newest
 * tokens and the rest as the highest-scoring older ones, and drops the
 * others for real (their scores go with them).
 * The prompt-ratio mask-simulation variant Keyformer compares against is
 * the same selection with a percentage budget; its remaining differences
 * (the kept window counted with the token about to be generated) are not
 * modelled yet. */
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy.h"

static const pol_param_def params[] = {
    {"recent", 0.5, 0, 1, 0, "share of the budget kept as the most recent tokens (H2O: recent = heavy)"},
};

typedef struct h2o_head { float *score; int32_t n, cap; } h2o_head;
typedef struct h2o_state { h2o_head *heads; /* [layers][kv_heads] */ } h2o_state;

static int h2o_init(kv_policy *p) {
    h2o_state *s = calloc(1, sizeof *s);
    if (!s) return kv_errorf(KV_ENOMEM, "out of memory");
    s->heads = calloc((size_t)p->n_layers * (size_t)p->n_kv_heads, sizeof *s->heads);
    if (!s->heads) {
        free(s);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    p->state = s;
    return KV_OK;
}

static void h2o_reset(kv_policy *p) {
    h2o_state *s = p->state;
    for (int i = 0; i < p->n_layers * p->n_kv_heads; i++) s->heads[i].n = 0;
}

static void h2o_free(kv_policy *p) {
    h2o_state *s = p->state;
    if (!s) return;
    for (int i = 0; i < p->n_layers * p->n_kv_heads; i++) free(s->heads[i].score);
    free(s->heads);
    free(s);
}

static int grow(float **a, int32_t *cap, int32_t need) {
    if (need <= *cap) return KV_OK;
    int32_t c = need + need / 2 + 16;
    float *b = realloc(*a, (size_t)c * sizeof *b);
    if (!b) return kv_errorf(KV_ENOMEM, "out of memory");
    *a = b;
    *cap = c;
    return KV_OK;
}

static int h2o_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    h2o_state *s = p->state;
    const int group = v->n_heads / v->n_kv_heads;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        h2o_head *hs = &s->heads[v->layer * v->n_kv_heads + g];
        int rc = grow(&hs->score, &hs->cap, h->len);
        if (rc) return rc;
        if (hs->n > h->len) hs->n = h->len; /* cannot happen unless another hand evicted */
        memset(hs->score + hs->n, 0, (size_t)(h->len - hs->n) * sizeof(float));
        hs->n = h->len;
        for (int q = g * group; q < (g + 1) * group; q++) {
            const float *row = v->colsum + (size_t)q * v->stride;
            for (int32_t j = 0; j < h->len; j++) hs->score[j] += row[j];
        }
        if (h->len <= p->limit) continue;
        /* the recent window: the newest `recent` positions (tokens are
         * never evicted while inside it, so these are all present) */
        int32_t recent = (int32_t)(p->limit * p->param[0]);
        int32_t from = recent > 0 ? pol_max_pos(h) - recent + 1 : INT32_MAX;
        if ((rc = pol_keep_top(c, h, hs->score, from, p->limit - recent, 1))) return rc;
        hs->n = h->len;
    }
    return KV_OK;
}

const pol_ops pol_h2o_ops = {
    .name = "h2o",
    .summary = "heavy hitters by accumulated attention + recent window (H2O real-drop; METHODS.md A4)",
    .params = params,
    .n_params = 1,
    .needs = KV_NEED_COLSUM,
    .init = h2o_init,
    .on_layer = h2o_on_layer,
    .reset = h2o_reset,
    .free = h2o_free,
};
