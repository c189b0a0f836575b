/* random.c - a floor: when a head holds more than the budget, drop
 * uniformly random slots until it fits (seeded, so runs repeat). */
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy.h"

typedef struct rnd_state { uint64_t s; } rnd_state;

static uint64_t next(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static int random_init(kv_policy *p) {
    rnd_state *s = malloc(sizeof *s);
    if (!s) return kv_errorf(KV_ENOMEM, "out of memory");
    p->state = s;
    return KV_OK;
}

static void random_reset(kv_policy *p) { ((rnd_state *)p->state)->s = p->seed * 0x9e3779b97f4a7c15ull + 1; }
static void random_free(kv_policy *p) { free(p->state); }

static int random_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    rnd_state *st = p->state;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        if (p->hold || h->len <= p->limit) continue;
        uint8_t *keep = malloc((size_t)h->len);
        if (!keep) return kv_errorf(KV_ENOMEM, "out of memory");
        /* choose which to drop (few, usually one) or which to keep, whichever
         * is fewer: each draw is uniform among the slots not yet chosen */
        int32_t drop = h->len - p->limit, pick = drop <= p->limit ? drop : p->limit;
        memset(keep, drop <= p->limit, (size_t)h->len);
        for (int32_t n = 0; n < pick;) {
            int32_t j = (int32_t)(next(&st->s) % (uint64_t)h->len);
            if (keep[j] == (drop <= p->limit)) keep[j] = !keep[j], n++;
        }
        int rc = pol_keep_mask(c, h, keep, NULL);
        free(keep);
        if (rc) return rc;
    }
    return KV_OK;
}

const pol_ops pol_random_ops = {
    .name = "random",
    .summary = "a seeded random subset (a floor)",
    .init = random_init,
    .on_layer = random_on_layer,
    .reset = random_reset,
    .free = random_free,
};
