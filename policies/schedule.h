/* schedule.h - when a scoring floor (knorm, random) evicts:
 * schedule=prompt (kvpress's presses: the prompt cut once, at its end, then
 * no eviction: a one-shot instance) or schedule=every_step (after every call
 * once over the budget), with a window of the newest `recent` tokens never
 * dropped (every_step: at least 1, so the token just written stays). */
#ifndef POL_SCHEDULE_H
#define POL_SCHEDULE_H

#include "policy_impl.h"

enum { POL_SCHED_PROMPT = 0, POL_SCHED_EVERY_STEP = 1 };

typedef struct pol_sched {
    int every_step;
    int32_t recent;
    int32_t n;       /* the prompt's tokens (0: not known yet: the first call's) */
    uint8_t *done;   /* [n_layers] prompt: the layer was cut */
} pol_sched;

/* Sets the instance one-shot for schedule=prompt. */
int pol_sched_init(kv_policy *p, pol_sched *s, int schedule, int32_t recent);
void pol_sched_reset(const kv_policy *p, pol_sched *s);
void pol_sched_free(pol_sched *s);
/* d as a deep copy of s (pol_clone); on failure d->done is NULL. */
int pol_sched_clone(const kv_policy *p, const pol_sched *s, pol_sched *d);
/* Whether this call of layer v->layer may evict (marks a prompt cut done). */
int pol_sched_cut(const kv_policy *p, pol_sched *s, const kv_attn_view *v);
/* For head h: slots at positions >= *from are kept, and *keep of the others;
 * 0 when the head needs no eviction. */
int pol_sched_span(const kv_policy *p, const pol_sched *s, const kv_cache_head *h, int32_t *from, int32_t *keep);

#endif
