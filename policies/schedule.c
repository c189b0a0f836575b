/* schedule.c - see schedule.h. */
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"
#include "schedule.h"

int pol_sched_init(kv_policy *p, pol_sched *s, int schedule, int32_t recent) {
    s->every_step = schedule == POL_SCHED_EVERY_STEP;
    s->recent = recent;
    if (!s->every_step) p->flags |= POL_ONE_SHOT;
    s->done = calloc((size_t)(p->n_layers > 0 ? p->n_layers : 1), 1);
    return s->done ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

void pol_sched_reset(const kv_policy *p, pol_sched *s) {
    s->n = p->n_prompt;
    memset(s->done, 0, (size_t)(p->n_layers > 0 ? p->n_layers : 1));
}

void pol_sched_free(pol_sched *s) { free(s->done); }

int pol_sched_clone(const kv_policy *p, const pol_sched *s, pol_sched *d) {
    const size_t L = (size_t)(p->n_layers > 0 ? p->n_layers : 1);
    *d = *s;
    if (!(d->done = malloc(L))) return KV_ENOMEM;
    memcpy(d->done, s->done, L);
    return KV_OK;
}

int pol_sched_cut(const kv_policy *p, pol_sched *s, const kv_attn_view *v) {
    if (s->every_step) return !p->hold;
    if (s->n == 0) s->n = v->pos0 + v->n_new; /* no prompt length given: the first call */
    if (s->done[v->layer] || v->pos0 + v->n_new < s->n) return 0;
    s->done[v->layer] = 1;
    return 1;
}

int pol_sched_span(const kv_policy *p, const pol_sched *s, const kv_cache_head *h, int32_t *from, int32_t *keep) {
    if (h->len <= p->limit) return 0;
    int32_t w = s->every_step && s->recent < 1 ? 1 : s->recent;
    if (w > p->limit) w = p->limit;
    /* prompt: the window ends at the prompt's end, and tokens past it (fed
     * in the same call) stay; every_step: the newest w */
    int32_t end = s->every_step ? pol_max_pos(h) + 1 : s->n;
    *from = end - w;
    *keep = p->limit - w;
    return 1;
}
