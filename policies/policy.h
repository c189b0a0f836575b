/* policy.h - KV-cache policies: one vtable per method, a registry by name,
 * a parameter table per policy, and budgets in both conventions.
 *
 * A policy is attached to a kv_ctx through the engine's per-layer hook
 * (pol_attach): after every layer's attention, in prefill and in decode, it
 * sees the statistics it asked for (`needs`) and brings that layer's cache
 * within its budget by removing slots, which frees their memory. Each
 * method's file says which authors' code it follows (see METHODS.md). */
#ifndef POL_POLICY_H
#define POL_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "context.h"
#include "kvcache.h"

/* ------------------------------------------------------------ budgets */

typedef enum pol_budget_kind {
    POL_BUDGET_NONE = 0,     /* unlimited (full cache) */
    POL_BUDGET_TOKENS = 1,   /* absolute slots per (layer, KV head): "512" */
    POL_BUDGET_FRACTION = 2, /* of the prompt length, fixed when the prompt is seen: "60%" */
} pol_budget_kind;

typedef struct pol_budget {
    pol_budget_kind kind;
    double value; /* tokens, or a fraction in (0, 1] */
} pol_budget;

/* Parses "512", "60%" or "none". KV_EINVAL with a message naming the text. */
int pol_budget_parse(const char *s, pol_budget *out);
/* Slots per (layer, KV head) for a prompt of n_prompt tokens (INT32_MAX for none). */
int32_t pol_budget_tokens(const pol_budget *b, int32_t n_prompt);
/* "512", "60%" or "none" into buf. */
const char *pol_budget_str(const pol_budget *b, char *buf, size_t cap);

/* --------------------------------------------------------- parameters */

typedef struct pol_param_def {
    const char *name;
    double dflt, min, max; /* inclusive range */
    int is_int;
    const char *meaning;
    /* A choice among names, "a|b|c": the value is the index of the name
     * (set as the name, or as its index); min 0, max the last index, is_int 1.
     * NULL for a number. */
    const char *choices;
} pol_param_def;

#define POL_MAX_PARAMS 12 /* Ada-KV has 9 */

/* ------------------------------------------------------------- the vtable */

typedef struct kv_policy kv_policy;

/* How the prompt meets the policy (every policy takes prefill=whole|streaming):
 * WHOLE     - the authors' protocol for prompts: the whole prompt is
 *             evaluated with full attention, however the engine chunks it,
 *             and nothing is evicted until its last token has been seen
 *             (on_layer is called with p->hold set and accumulates only);
 *             the statistics are those of one full-attention pass.
 * STREAMING - evict while reading: the prompt goes through the cache
 *             `chunk` tokens at a time (chunk=N, required) and the policy
 *             evicts after each N (held in between, however the engine cuts
 *             its forwards), as a memory-bound deployment or StreamingLLM's
 *             streams do. The default only where the method's authors define
 *             it so (the cascading cache's strided prefill, whose chunks are
 *             its own `stride`). */
typedef enum pol_prefill { POL_PREFILL_WHOLE = 0, POL_PREFILL_STREAMING = 1 } pol_prefill;

enum pol_flags {
    /* Compresses the prompt once, at its end, and appends generated tokens
     * without eviction (the SnapKV family, the sentinel methods, knorm and
     * random with schedule=prompt: METHODS.md section 0, family 1):
     * the budget bounds the prompt's slots, and the cache grows by one slot
     * per generated token. */
    POL_ONE_SHOT = 1u << 0,
};

typedef struct pol_ops {
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
     * r->tmp). */
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
} pol_ops;

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
};

/* ------------------------------------------------------------- registry */

int pol_count(void);
const pol_ops *pol_at(int i);
const pol_ops *pol_find(const char *name); /* NULL if unknown */

/* Creates an instance of policy `name` with "key=value" settings
 * (e.g. {"sinks=4"}): an unknown policy or key, a malformed number or a
 * value out of range is KV_EINVAL with a message naming it. Besides each
 * policy's own table, every policy accepts positions=original|cache|rerotate (see
 * kv_pos_mode in context.h), prefill=whole|streaming and chunk=N (see
 * pol_prefill; a method that compresses once at the prompt's end, or reads
 * the prompt its own way, refuses streaming; the cascading cache, whose
 * authors define a strided streaming prefill, refuses whole). */
int pol_new(const char *name, const char *const *settings, int n_settings, const pol_budget *budget,
            uint64_t seed, const kv_model_info *mi, kv_policy **out);
void pol_free(kv_policy *p);

/* A new instance in src's exact place: the same ops, parameters, budget,
 * limits, seeds, flags and prefill/positions settings, and a deep copy of
 * the method's state (pol_ops.clone_state). With kv_ctx_fork it continues
 * a sequence on another context: attach it there (pol_attach); src and the
 * clone then evolve independently. KV_EINVAL naming the method when it has
 * state but no clone_state (nothing is ever copied shallowly), KV_ENOMEM. */
int pol_clone(const kv_policy *src, kv_policy **out);

/* A new sequence whose prompt has n_prompt tokens: resets every score and
 * fixes the budget in slots (limit and layer_limit). Call before evaluating
 * the prompt. */
void pol_begin(kv_policy *p, int32_t n_prompt);

/* Gives the next samples their own random draws: draw_seed becomes
 * mix(seed ^ mix(sample_seed)), mix being splitmix64's finaliser (see
 * keyformer.c), until the next call. A runner calls it before pol_begin with
 * a hash of the sample's id mixed with the experiment's seed, so that each
 * sample draws its own noise (as the authors' torch generator does, running
 * on) and a sample's draws do not depend on which samples ran before it.
 * Without a call, draw_seed is seed: every sample draws the same field.
 * Only Keyformer's noise uses it so far. */
void pol_set_sample_seed(kv_policy *p, uint64_t sample_seed);

/* Installs p as ctx's per-layer hook (NULL p removes it). */
void pol_attach(kv_policy *p, kv_ctx *ctx);

/* The hook pol_attach installs. A caller that wraps it (the recorder of
 * `kvbench logits --record`) must call through it, not p->ops directly, so
 * that the prefill protocol (p->hold) and its check apply. */
kv_ctx_hook pol_hook(kv_policy *p);

/* Evaluates a sequence's prompt through p (attached, pol_begin called):
 * the method's own prompt evaluation when it has one, else kv_ctx_eval.
 * logits [vocab]: the next-token logits after the prompt (may be NULL). */
int pol_eval_prompt(kv_policy *p, kv_ctx *ctx, const int32_t *tokens, int32_t n, float *logits);

/* KV_OK if p can run on model m, else KV_EINVAL naming why (see
 * pol_ops.check_model); call once a model is loaded, before any work. */
int pol_check_model(const kv_policy *p, const kv_model *m);

/* Prints the registry with each policy's parameter table. */
void pol_print_all(void);

/* "whole", "streaming"; and back (-1 for an unknown name). */
const char *pol_prefill_name(pol_prefill m);
int pol_prefill_parse(const char *s);

/* The settings every policy takes, as "positions=..,prefill=..[,chunk=N]"
 * (chunk only when streaming): what a run's parameters record besides the
 * method's own table. */
const char *pol_common_str(const kv_policy *p, char *buf, size_t cap);

/* Parameter i of p as text: its name for a choice ("gumbel"), else "%g". */
const char *pol_param_str(const kv_policy *p, int i, char *buf, size_t cap);

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

/* Keeps the first `sinks` and the newest limit - sinks slots of a head
 * whose slots are in insertion order (a no-op at or under the limit). */
int pol_keep_sinks_recent(kv_cache *c, kv_cache_head *h, int32_t sinks, int32_t limit);

/* The largest position held by a head (-1 when empty). */
int32_t pol_max_pos(const kv_cache_head *h);

#endif
