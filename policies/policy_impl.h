/* policy_impl.h - what a policy's author writes against: the vtable
 * (pol_ops), the instance's fields (struct kv_policy), its flags, and the
 * slot-selection helpers the methods share. Only policies/ (and the unit
 * tests of policies) include it; the harness goes through policy.h's
 * accessors (tests/check_layers.py checks).
 *
 * To add a policy: write policies/NAME.c with its `const pol_ops
 * pol_NAME_ops` (with a clone_state if it keeps state), declare and list it
 * in registry.c's table, add the file to meson.build and test it in
 * tests/test_policies.c. */
#ifndef POL_POLICY_IMPL_H
#define POL_POLICY_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "context.h"
#include "kvcache.h"
#include "policy.h"

/* ------------------------------------------------------------- the vtable */

enum pol_flags {
    /* Compresses the prompt once, at its end, and appends generated tokens
     * without eviction (the SnapKV family, the sentinel methods, knorm and
     * random with schedule=prompt: METHODS.md section 0, family 1):
     * the budget bounds the prompt's slots, and the cache grows by one slot
     * per generated token. */
    POL_ONE_SHOT = 1u << 0,
};

struct pol_ops {
    const char *name;
    const char *summary;       /* one line, with the paper / code it follows */
    const pol_param_def *params;
    int n_params;
    unsigned needs;            /* kv_attn_need bits */
    unsigned flags;            /* pol_flags */
    /* Called once per policy instance; may allocate p->state. */
    int (*init)(kv_policy *p);
    /* Brings layer `layer` within p->limit slots per KV head (or whatever the
     * method keeps) after its attention; view holds the requested statistics. */
    int (*on_layer)(kv_policy *p, kv_cache *c, const kv_attn_view *view);
    /* A new sequence: forget every score. Called by pol_begin once limit,
     * layer_limit and n_prompt are set; may set its own layer_limit, and
     * limit when it holds more than the budget names (cascade: + sinks). */
    void (*reset)(kv_policy *p);
    void (*free)(kv_policy *p);
    /* Optional: before each layer's attention, which statistics this call
     * needs (see kv_attn_plan); absent, `needs` on every call. */
    void (*plan)(kv_policy *p, kv_attn_plan *plan);
    /* KV_NEED_LOGITS: reduces one query's raw logit row (called from the
     * engine's threads, concurrently: it may only read p and write r->acc,
     * r->tmp). What it adds may depend only on the row, the method, its
     * parameters, n_prompt and draw_seed: one prompt pass then serves
     * instances that differ in anything else, the budget included
     * (pol_share_compatible). */
    void (*reduce_row)(const kv_policy *p, const kv_logit_row *r);
    /* Optional: how many of the next n tokens from position pos0 one
     * forward may process (see kv_ctx_hook.split). */
    int32_t (*split)(const kv_policy *p, int32_t pos0, int32_t n);
    /* The default of positions=original|cache|rerotate: the authors' own (0: original). */
    kv_pos_mode positions;
    /* Optional: evaluates the prompt itself (pol_eval_prompt), for a method
     * that changes what the model reads (sentinel tokens, their positions
     * and attention mask). Absent: one kv_ctx_eval of the prompt. */
    int (*eval_prompt)(kv_policy *p, kv_ctx *ctx, const int32_t *tokens, int32_t n, float *logits);
    /* Optional: whether the policy can run on model m (e.g. its vocabulary
     * has the tokens the method needs); KV_EINVAL with a message if not. */
    int (*check_model)(const kv_policy *p, const kv_model *m);
    /* The default of prefill=whole|streaming: the authors' own (0: whole). */
    pol_prefill prefill;
    /* Required of a method with state (pol_clone refuses one without it):
     * sets dst->state to a deep copy of src->state, sharing no memory
     * with it (scratch may start empty). dst is src's instance copied but
     * for state (NULL). On failure dst->state holds what was built, every
     * pointer either dst's own or NULL, so that `free` releases it. */
    int (*clone_state)(const kv_policy *src, kv_policy *dst);
    /* A sliding-window layer's head lost the slots its window no longer
     * sees (kv_ctx_hook.on_trim): keep[0..n_keep) are the old indices of
     * the slots left (increasing), and every slot below position min_pos
     * goes (the head still holds them during the call). Called before
     * on_layer. A method whose state follows slots
     * moves it (pol_scores_trim); pol_trim_stateless for one that keeps
     * none. NULL: the engine keeps the slots for this method, so its
     * memory on a model with windows counts them (every shipped method
     * has one; `kvbench list policies` names any that has not). */
    int (*on_trim)(kv_policy *p, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos);
};

/* An instance: the ops, its parameter values, the budget, and the method's state. */
struct kv_policy {
    const pol_ops *ops;
    unsigned flags;               /* pol_flags: ops->flags, which init may change when a
                                     parameter decides (knorm schedule=prompt is one-shot) */
    double param[POL_MAX_PARAMS]; /* in the order of ops->params */
    pol_budget budget;
    int32_t limit;                /* slots per (layer, KV head) for this sequence */
    int32_t *layer_limit;         /* [n_layers] slots per KV head of each layer: `limit`,
                                     unless the method spreads the budget over layers (or
                                     heads: Ada-KV's longest head; a one-shot method whose
                                     budgets follow the prompt tightens it at its cut) */
    int32_t n_prompt;             /* prompt tokens of this sequence (pol_begin; 0: not known) */
    uint64_t seed;                /* pol_new's (the experiment's --seed) */
    uint64_t draw_seed;           /* this sample's random draws (Keyformer's noise): seed, or
                                     what pol_set_sample_seed made of it */
    kv_pos_mode positions;        /* "positions=original|cache|rerotate", any policy */
    pol_prefill prefill;          /* "prefill=whole|streaming", any policy */
    int32_t chunk;                /* "chunk=N": with streaming, prompt tokens read between evictions */
    /* Set by the hook for each on_layer call: 1 while prefill=whole and the
     * prompt is not yet fully read (streaming: between multiples of chunk).
     * on_layer must then only accumulate its statistics and remove nothing
     * (the hook checks: removing a slot while holding is an error naming
     * the policy). */
    int hold;
    double decay;                 /* KV_NEED_DECAYED_COLSUM: kv_ctx_hook.decay (set by init) */
    int n_layers, n_kv_heads;
    int n_heads;                  /* query heads (GQA: a multiple of n_kv_heads) */
    void *state;
    /* pol_set_observer's: called after on_layer with the same view */
    pol_observer obs;
    void *obs_user;
    unsigned obs_needs;
};

/* ------------------------------------------------- helpers for methods */

/* Drops the slots whose keep[j] is 0 (kv_cache_drop: order not kept),
 * moving `scores` [len] alongside when given. */
int pol_keep_mask(kv_cache *c, kv_cache_head *h, const uint8_t *keep, float *scores);

/* Keeps every slot whose position is >= recent_from (a recent window;
 * INT32_MAX for none) and the k highest-scoring of the others, dropping the
 * rest with kv_cache_drop (slot order is not kept); ties keep the older
 * slot. `score` [len] moves with its slots when `compact` is set.
 * O(len log(dropped)): a policy that drops one slot per step scans once. */
int pol_keep_top(kv_cache *c, kv_cache_head *h, float *score, int32_t recent_from, int32_t k, int compact);

/* pol_keep_top with double scores (for sums that must rank exactly as a
 * float64 reference ranks them). */
int pol_keep_top_d(kv_cache *c, kv_cache_head *h, double *score, int32_t recent_from, int32_t k, int compact);

/* Per-slot scores kept by a policy for every (layer, KV head), moved with
 * their slots by pol_keep_top. pol_scores_sync grows a head's array to the
 * head's length, zeroing the entries of slots new since the last call, and
 * returns it; sets *fresh to the first new index. */
typedef struct pol_scores pol_scores;
pol_scores *pol_scores_new(int n_layers, int n_kv_heads);
void pol_scores_reset(pol_scores *s);   /* a new sequence */
void pol_scores_free(pol_scores *s);
float *pol_scores_sync(pol_scores *s, int layer, int kv_head, const kv_cache_head *h, int32_t *fresh);
/* A deep copy (float or double scores alike); NULL when out of memory. */
pol_scores *pol_scores_clone(const pol_scores *s);
/* The same with double scores (pol_keep_top_d). */
pol_scores *pol_dscores_new(int n_layers, int n_kv_heads);
double *pol_dscores_sync(pol_scores *s, int layer, int kv_head, const kv_cache_head *h, int32_t *fresh);

/* Moves a head's scores as its slots moved (keep: old indices of the
 * slots left, increasing; kv_ctx_hook.on_trim), float or double scores
 * alike; entries not yet synced stay unsynced. */
void pol_scores_trim(pol_scores *s, int layer, int kv_head, const int32_t *keep, int32_t n_keep);
/* on_trim of a method with no per-slot state. */
int pol_trim_stateless(kv_policy *p, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos);
/* Whether the engine frees a window layer's unseen slots for method o: it
 * has on_trim, or no on_layer (then it keeps nothing per slot). */
int pol_follows_trims(const pol_ops *o);

/* Keeps the first `sinks` and the newest limit - sinks slots of a head
 * whose slots are in insertion order (a no-op at or under the limit). */
int pol_keep_sinks_recent(kv_cache *c, kv_cache_head *h, int32_t sinks, int32_t limit);

/* The largest position held by a head (-1 when empty). */
int32_t pol_max_pos(const kv_cache_head *h);

#endif
