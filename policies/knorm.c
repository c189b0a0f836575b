/* knorm.c - a floor from kvpress's KnormPress: keep the keys with the
 * smallest L2 norm (low-norm keys tend to draw high attention). A key never
 * changes, so its score is computed once, when its slot first appears, and
 * travels with the slot. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "kv_error.h"
#include "policy.h"

typedef struct kn_head { float *score; int32_t n, cap; } kn_head;

static int knorm_init(kv_policy *p) {
    p->state = calloc((size_t)p->n_layers * (size_t)p->n_kv_heads, sizeof(kn_head));
    return p->state ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

static void knorm_reset(kv_policy *p) {
    kn_head *s = p->state;
    for (int i = 0; i < p->n_layers * p->n_kv_heads; i++) s[i].n = 0;
}

static void knorm_free(kv_policy *p) {
    kn_head *s = p->state;
    for (int i = 0; s && i < p->n_layers * p->n_kv_heads; i++) free(s[i].score);
    free(s);
}

static int knorm_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    const int hd = kv_cache_head_dim(c);
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        kn_head *s = &((kn_head *)p->state)[v->layer * v->n_kv_heads + g];
        if (h->len > s->cap) {
            int32_t cap = h->len + h->len / 2 + 16;
            float *b = realloc(s->score, (size_t)cap * sizeof *b);
            if (!b) return kv_errorf(KV_ENOMEM, "out of memory");
            s->score = b;
            s->cap = cap;
        }
        for (int32_t j = s->n; j < h->len; j++) { /* the slots new since the last call */
            double n2 = 0;
            for (int d = 0; d < hd; d++) n2 += (double)h->k[(size_t)j * hd + d] * h->k[(size_t)j * hd + d];
            s->score[j] = -(float)sqrt(n2);
        }
        s->n = h->len;
        if (h->len <= p->limit) continue;
        int rc = pol_keep_top(c, h, s->score, INT32_MAX, p->limit, 1);
        if (rc) return rc;
        s->n = h->len;
    }
    return KV_OK;
}

const pol_ops pol_knorm_ops = {
    .name = "knorm",
    .summary = "keep the lowest-norm keys (kvpress KnormPress; a floor)",
    .init = knorm_init,
    .on_layer = knorm_on_layer,
    .reset = knorm_reset,
    .free = knorm_free,
};
