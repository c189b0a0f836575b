/* policy.h - KV-cache policies as the harness sees them: a registry by
 * name, budgets in both conventions, a parameter table per policy, and an
 * opaque instance (kv_policy) with accessors for what a runner reads.
 *
 * A policy is attached to a kv_ctx through the engine's per-layer hook
 * (pol_attach): after every layer's attention, in prefill and in decode, it
 * sees the statistics it asked for and brings that layer's cache within its
 * budget by removing slots, which frees their memory. Each method's file
 * says which authors' code it follows (see METHODS.md).
 *
 * A policy's author writes against policy_impl.h (the vtable, the
 * instance's fields, the slot-selection helpers); the harness never does,
 * so that a method's internals can change without touching it. */
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

/* ------------------------------------------------------------- instances */

typedef struct kv_policy kv_policy; /* an instance (opaque) */
typedef struct pol_ops pol_ops;     /* a method (opaque) */

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

/* An observer of p's layer calls: after the method's own on_layer (or in
 * its place, for a method without one), fn sees the cache p keeps and the
 * call's view, which then also carries the statistics in `needs`. The
 * engine computes statistics beside the forward, so what p computes and
 * keeps is unchanged. Fidelity records the full cache's attention rows from
 * the reference's own run with it, instead of a second full-cache pass.
 * Set it before the sequence's prompt is read (pol_hook copies it); fn
 * NULL removes it. A clone (pol_clone) has none. fn returns KV_OK or an
 * error code, which ends the evaluation. */
typedef int (*pol_observer)(void *user, kv_cache *c, const kv_attn_view *v);
void pol_set_observer(kv_policy *p, unsigned needs, pol_observer fn, void *user);

/* Evaluates a sequence's prompt through p (attached, pol_begin called):
 * the method's own prompt evaluation when it has one, else kv_ctx_eval.
 * logits [vocab]: the next-token logits after the prompt (may be NULL). */
int pol_eval_prompt(kv_policy *p, kv_ctx *ctx, const int32_t *tokens, int32_t n, float *logits);

/* KV_OK if p can run on model m, else KV_EINVAL naming why (see
 * pol_ops.check_model); call once a model is loaded, before any work. */
int pol_check_model(const kv_policy *p, const kv_model *m);

/* ------------------------------------ one prompt pass for several policies */

/* With prefill=whole the prompt's pass does not depend on the policy: one
 * pass can serve several (pol_fanout). A policy can share it unless it
 * reads the prompt its own way (eval_prompt), cuts the engine's forwards
 * (split), streams, or asks for decayed column sums. */
int pol_shares_prompt(const kv_policy *p);
/* Whether a and b can read one pass: both share, with the same positions=
 * setting, and, when both reduce logit rows (Keyformer), the same method,
 * parameters and draws, so that one reduction serves both. */
int pol_share_compatible(const kv_policy *a, const kv_policy *b);

/* A hook serving n compatible policies, each begun (pol_begin) for the
 * same prompt, from one context: while the prompt is read each gathers
 * its statistics from the shared cache, seeing what it would see alone;
 * at the call that ends the prompt each layer is copied into caches[i]
 * (empty, the context's shape and type) and policy i compresses that
 * copy. After one kv_ctx_eval of the prompt, caches[i] holds what policy
 * i's own pass would have left; continue on a context with
 * kv_ctx_fork_cache. The shared cache is not evicted from. KV_EINVAL for
 * an incompatible member or another prompt length, KV_ENOMEM. */
typedef struct pol_fanout pol_fanout;
int pol_fanout_new(kv_policy *const *pols, kv_cache *const *caches, int n, pol_fanout **out);
/* Installs f as ctx's hook (kv_ctx_set_hook(ctx, NULL) removes it). */
void pol_fanout_attach(pol_fanout *f, kv_ctx *ctx);
/* The most KV bytes policy i's own pass would have held while the prompt
 * was read, measured on the shared cache and caches[i] (see fanout.c). */
size_t pol_fanout_prompt_peak(const pol_fanout *f, int i);
void pol_fanout_free(pol_fanout *f);

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

/* ------------------------------------------------------------ accessors */

/* The method's vtable, opaque here (policy_impl.h defines it). */
const char *pol_ops_name(const pol_ops *o);            /* "snapkv" */
const char *pol_ops_summary(const pol_ops *o);         /* one line, with the paper / code it follows */
int pol_ops_n_params(const pol_ops *o);                /* entries of its parameter table */
const pol_param_def *pol_ops_param(const pol_ops *o, int i); /* entry i, 0 <= i < pol_ops_n_params */

const pol_ops *pol_ops_of(const kv_policy *p);         /* the instance's method */
const char *pol_name(const kv_policy *p);              /* its method's name */
int pol_n_params(const kv_policy *p);                  /* its method's parameter count */
const char *pol_param_name(const kv_policy *p, int i); /* parameter i's name */
double pol_param_value(const kv_policy *p, int i);     /* parameter i's value (a choice's index) */
const pol_budget *pol_get_budget(const kv_policy *p);  /* the budget it was made with */
int32_t pol_limit(const kv_policy *p);                 /* slots per (layer, KV head) now (INT32_MAX: none) */
int pol_n_layers(const kv_policy *p);                  /* layers of the model it was made for */
int32_t pol_layer_limit(const kv_policy *p, int l);    /* layer l's slots per KV head now */
const int32_t *pol_layer_limits(const kv_policy *p);   /* all of them, [pol_n_layers] */
int32_t pol_n_prompt(const kv_policy *p);              /* this sequence's prompt tokens (0: not known) */
int pol_is_one_shot(const kv_policy *p);               /* compresses the prompt once, then keeps every new token */
kv_pos_mode pol_positions(const kv_policy *p);         /* its positions= setting */
int pol_has_own_prompt_eval(const kv_policy *p);       /* reads the prompt its own way (pol_eval_prompt) */
uint64_t pol_draw_seed(const kv_policy *p);            /* this sample's random draws (pol_set_sample_seed) */
void pol_set_draw_seed(kv_policy *p, uint64_t s);      /* sets it as read from another instance */

/* Exchanges the contents of two instances, addresses kept: a context's
 * hook pointing at a keeps pointing at a, which now holds b's state. */
void pol_swap(kv_policy *a, kv_policy *b);

#endif
