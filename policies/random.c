/* random.c - a floor, kvpress's RandomPress (NVIDIA/kvpress
 * kvpress/presses/random_press.py): a uniformly random subset of the slots
 * is kept (seeded, so runs repeat; kvpress draws a uniform score per slot
 * and keeps the top ones, the same distribution).
 *
 * schedule=prompt (the default) is kvpress's: its presses compress in the
 * prefill forward only, so the prompt is cut once, at its end, and generated
 * tokens are appended without eviction (a one-shot instance: POL_ONE_SHOT);
 * RandomPress keeps no window (recent=0). schedule=every_step drops random
 * slots after every call once over the budget, keeping the newest
 * max(recent, 1) tokens so the token just written is never the one dropped.
 * See schedule.h. */
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"
#include "schedule.h"

static const pol_param_def params[] = {
    {"schedule", POL_SCHED_PROMPT, 0, 1, 1,
     "prompt: cut the prompt once at its end, no eviction after (kvpress RandomPress); every_step: evict every call",
     "prompt|every_step"},
    {"recent", 0, 0, 1 << 20, 1,
     "newest tokens never dropped (kvpress: none; every_step keeps at least 1, the token just written)", NULL},
};

typedef struct rnd_state {
    uint64_t s;
    pol_sched sched;
} rnd_state;

static uint64_t next(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static int random_init(kv_policy *p) {
    rnd_state *s = calloc(1, sizeof *s);
    p->state = s;
    if (!s) return kv_errorf(KV_ENOMEM, "out of memory");
    return pol_sched_init(p, &s->sched, (int)p->param[0], (int32_t)p->param[1]);
}

static void random_reset(kv_policy *p) {
    rnd_state *s = p->state;
    s->s = p->seed * 0x9e3779b97f4a7c15ull + 1;
    pol_sched_reset(p, &s->sched);
}

static void random_free(kv_policy *p) {
    rnd_state *s = p->state;
    if (!s) return;
    pol_sched_free(&s->sched);
    free(s);
}

/* pol_clone: the generator's state as it stands, and the schedule. */
static int random_clone(const kv_policy *src, kv_policy *dst) {
    const rnd_state *s = src->state;
    rnd_state *d = calloc(1, sizeof *d);
    dst->state = d;
    if (!d) return KV_ENOMEM;
    d->s = s->s;
    return pol_sched_clone(src, &s->sched, &d->sched);
}

/* Keeps every slot at a position >= from and `keep` of the others, chosen
 * uniformly: each draw is uniform among the candidates not yet chosen; it
 * draws the ones to drop (few, usually one) or the ones to keep, whichever
 * is fewer. */
static int drop_random(kv_cache *c, kv_cache_head *h, uint64_t *s, int32_t from, int32_t keep) {
    uint8_t *mask = malloc((size_t)h->len);
    int32_t *cand = malloc((size_t)h->len * sizeof *cand);
    if (!mask || !cand) {
        free(mask);
        free(cand);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    int32_t m = 0;
    for (int32_t j = 0; j < h->len; j++) {
        mask[j] = 1;
        if (h->pos[j] < from) cand[m++] = j;
    }
    int rc = KV_OK;
    if (m > keep) {
        const int32_t drop = m - keep, pick = drop <= keep ? drop : keep;
        const uint8_t picked = drop <= keep ? 0 : 1; /* what a draw sets */
        for (int32_t i = 0; i < m; i++) mask[cand[i]] = !picked;
        for (int32_t n = 0; n < pick;) {
            int32_t j = cand[next(s) % (uint64_t)m];
            if (mask[j] != picked) mask[j] = picked, n++;
        }
        rc = pol_keep_mask(c, h, mask, NULL);
    }
    free(mask);
    free(cand);
    return rc;
}

static int random_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    rnd_state *st = p->state;
    if (!pol_sched_cut(p, &st->sched, v)) return KV_OK;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        int32_t from, keep;
        if (!pol_sched_span(p, &st->sched, h, &from, &keep)) continue;
        int rc = drop_random(c, h, &st->s, from, keep);
        if (rc) return rc;
    }
    return KV_OK;
}

const pol_ops pol_random_ops = {
    .name = "random",
    .summary = "one-shot by default (schedule=prompt, as kvpress runs it): a seeded random subset (kvpress RandomPress; a floor)",
    .params = params,
    .n_params = 2,
    .init = random_init,
    .on_layer = random_on_layer,
    .reset = random_reset,
    .free = random_free,
    .clone_state = random_clone,
    .on_trim = pol_trim_stateless,
};
