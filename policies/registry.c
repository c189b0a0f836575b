/* registry.c - the policy registry, parameters, budgets, the engine hook,
 * and the slot-selection helpers the methods share. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"

extern const pol_ops pol_full_ops, pol_window_ops, pol_streamingllm_ops, pol_h2o_ops, pol_tova_ops,
    pol_random_ops, pol_knorm_ops, pol_keyformer_ops, pol_snapkv_ops, pol_pyramidkv_ops,
    pol_sentinel_proxy_ops, pol_sentinel_ops;
extern const pol_ops pol_adakv_ops, pol_zigzag_ops;
extern const pol_ops pol_cascade_ops;

/* To add a policy: write policies/NAME.c with its pol_ops (with a clone_state
 * if it keeps state), declare it above, list it here, add the file to
 * meson.build, and test it in tests/test_policies.c (tests/test_fork.c forks
 * every policy listed here). */
static const pol_ops *const registry[] = {
    &pol_full_ops, &pol_window_ops, &pol_streamingllm_ops, &pol_h2o_ops, &pol_tova_ops, &pol_random_ops,
    &pol_knorm_ops, &pol_keyformer_ops, &pol_snapkv_ops, &pol_pyramidkv_ops,
    &pol_sentinel_proxy_ops, &pol_sentinel_ops,
    &pol_adakv_ops, &pol_zigzag_ops,
    &pol_cascade_ops,
};

int pol_count(void) { return (int)(sizeof registry / sizeof registry[0]); }
const pol_ops *pol_at(int i) { return registry[i]; }

const pol_ops *pol_find(const char *name) {
    for (int i = 0; i < pol_count(); i++)
        if (strcmp(registry[i]->name, name) == 0) return registry[i];
    return NULL;
}

/* ------------------------------------------------------------- budgets */

int pol_budget_parse(const char *s, pol_budget *out) {
    char *end;
    if (strcmp(s, "none") == 0 || strcmp(s, "full") == 0) {
        *out = (pol_budget){POL_BUDGET_NONE, 0};
        return KV_OK;
    }
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v))
        return kv_errorf(KV_EINVAL, "budget '%s': expected a token count (512), a percentage (60%%) or none", s);
    if (*end == '%' && end[1] == 0) {
        if (!(v > 0 && v <= 100))
            return kv_errorf(KV_EINVAL, "budget '%s': expected a percentage in (0, 100]", s);
        *out = (pol_budget){POL_BUDGET_FRACTION, v / 100.0};
        return KV_OK;
    }
    if (*end != 0 || v < 1 || v != floor(v) || v > INT32_MAX)
        return kv_errorf(KV_EINVAL, "budget '%s': expected a whole number of tokens >= 1 or a percentage", s);
    *out = (pol_budget){POL_BUDGET_TOKENS, v};
    return KV_OK;
}

int32_t pol_budget_tokens(const pol_budget *b, int32_t n_prompt) {
    switch (b->kind) {
    case POL_BUDGET_TOKENS: return (int32_t)b->value;
    case POL_BUDGET_FRACTION: {
        /* as Keyformer computes it (summarize.py's kv_cache = 60: int(n * 60 / 100)),
         * in integers with the percentage recovered to a millionth of a percent:
         * n * 0.7 in floating point truncates 90 tokens at 70% to 62, not 63.
         * At least one slot. */
        const int64_t ppm = llround(b->value * 1e8); /* millionths of a percent */
        const int64_t k = (int64_t)(n_prompt > 0 ? n_prompt : 0) * ppm / 100000000;
        return k < 1 ? 1 : k > INT32_MAX ? INT32_MAX : (int32_t)k;
    }
    default: return INT32_MAX;
    }
}

const char *pol_budget_str(const pol_budget *b, char *buf, size_t cap) {
    if (b->kind == POL_BUDGET_TOKENS) snprintf(buf, cap, "%.0f", b->value);
    else if (b->kind == POL_BUDGET_FRACTION) snprintf(buf, cap, "%g%%", b->value * 100);
    else snprintf(buf, cap, "none");
    return buf;
}

/* ----------------------------------------------------------- instances */

static int set_param(kv_policy *p, const char *kv) {
    const pol_ops *o = p->ops;
    const char *eq = strchr(kv, '=');
    if (!eq) return kv_errorf(KV_EINVAL, "policy %s: expected key=value, got '%s'", o->name, kv);
    size_t klen = (size_t)(eq - kv);
    if (klen == 7 && strncmp(kv, "prefill", 7) == 0) {
        int m = pol_prefill_parse(eq + 1);
        if (m < 0)
            return kv_errorf(KV_EINVAL, "policy %s: prefill: expected whole or streaming, got '%s'", o->name, eq + 1);
        p->prefill = (pol_prefill)m;
        return KV_OK;
    }
    if (klen == 5 && strncmp(kv, "chunk", 5) == 0) {
        char *end;
        errno = 0;
        long v = strtol(eq + 1, &end, 10);
        if (end == eq + 1 || *end || errno || v < 0 || v > INT32_MAX)
            return kv_errorf(KV_EINVAL, "policy %s: chunk: expected a whole number of tokens >= 0, got '%s'", o->name,
                             eq + 1);
        p->chunk = (int32_t)v;
        return KV_OK;
    }
    if (klen == 9 && strncmp(kv, "positions", 9) == 0) {
        int m = kv_pos_mode_parse(eq + 1);
        if (m < 0)
            return kv_errorf(KV_EINVAL, "policy %s: positions: expected original, cache or rerotate, got '%s'", o->name,
                             eq + 1);
        p->positions = (kv_pos_mode)m;
        return KV_OK;
    }
    for (int i = 0; i < o->n_params; i++) {
        const pol_param_def *d = &o->params[i];
        if (strlen(d->name) != klen || strncmp(d->name, kv, klen) != 0) continue;
        if (d->choices) { /* a name from the list (or its index, as a stored parameter string has it) */
            const char *c = d->choices, *val = eq + 1;
            for (int idx = 0; *c; idx++) {
                size_t n = strcspn(c, "|");
                if (strlen(val) == n && strncmp(c, val, n) == 0) {
                    p->param[i] = idx;
                    return KV_OK;
                }
                c += n + (c[n] == '|');
            }
        }
        char *end;
        errno = 0;
        double v = strtod(eq + 1, &end);
        if (d->choices && (end == eq + 1 || *end || errno || !isfinite(v) || v != floor(v) || v < d->min || v > d->max))
            return kv_errorf(KV_EINVAL, "policy %s: parameter %s: expected one of %s, got '%s'", o->name, d->name,
                             d->choices, eq + 1);
        if (end == eq + 1 || *end || errno || !isfinite(v) || (d->is_int && v != floor(v)))
            return kv_errorf(KV_EINVAL, "policy %s: parameter %s: expected %s, got '%s'", o->name, d->name,
                             d->is_int ? "an integer" : "a number", eq + 1);
        if (v < d->min || v > d->max)
            return kv_errorf(KV_EINVAL, "policy %s: parameter %s = %g is outside [%g, %g]", o->name, d->name, v,
                             d->min, d->max);
        p->param[i] = v;
        return KV_OK;
    }
    char known[256] = "";
    for (int i = 0; i < o->n_params; i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", o->params[i].name);
    return kv_errorf(KV_EINVAL, "policy %s: unknown parameter '%.*s' (known: %s)", o->name, (int)klen, kv,
                     o->n_params ? known : "none");
}

const char *pol_prefill_name(pol_prefill m) { return m == POL_PREFILL_STREAMING ? "streaming" : "whole"; }

int pol_prefill_parse(const char *s) {
    if (strcmp(s, "whole") == 0) return POL_PREFILL_WHOLE;
    if (strcmp(s, "streaming") == 0) return POL_PREFILL_STREAMING;
    return -1;
}

/* Which prefill modes a method defines: streaming means evicting between
 * forwards of the prompt, which a method that cuts once at the prompt's end
 * (one-shot), reads the prompt its own way (sentinel) or keeps everything
 * (full) does not do; the cascading cache's authors define only their
 * strided streaming prefill. */
static int check_prefill(const kv_policy *p) {
    const pol_ops *o = p->ops;
    if (p->chunk > 0 && p->prefill != POL_PREFILL_STREAMING)
        return kv_errorf(KV_EINVAL, "policy %s: chunk=%d needs prefill=streaming (a whole prefill evicts nothing "
                         "until the prompt is read, whatever its chunks)", o->name, (int)p->chunk);
    if (p->prefill == POL_PREFILL_STREAMING && o->prefill != POL_PREFILL_STREAMING &&
        ((p->flags & POL_ONE_SHOT) || o->eval_prompt || !o->on_layer))
        return kv_errorf(KV_EINVAL, "policy %s: prefill=streaming is not defined for it (it %s)", o->name,
                         !o->on_layer ? "evicts nothing" : o->eval_prompt ? "evaluates the prompt its own way"
                                                                           : "compresses the prompt once, at its end");
    if (p->prefill == POL_PREFILL_STREAMING && o->prefill != POL_PREFILL_STREAMING && p->chunk < 1)
        return kv_errorf(KV_EINVAL, "policy %s: prefill=streaming needs chunk=N, the prompt tokens read between "
                         "evictions (so that results do not depend on the engine's batch)", o->name);
    if (p->prefill == POL_PREFILL_WHOLE && o->prefill == POL_PREFILL_STREAMING)
        return kv_errorf(KV_EINVAL, "policy %s: prefill=whole is not defined for it (its authors' prefill is "
                         "streaming; set its chunks with its own parameters)", o->name);
    return KV_OK;
}

const char *pol_common_str(const kv_policy *p, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "positions=%s,prefill=%s", kv_pos_mode_name(p->positions), pol_prefill_name(p->prefill));
    if (p->chunk > 0 && n >= 0 && (size_t)n < cap) snprintf(buf + n, cap - (size_t)n, ",chunk=%d", (int)p->chunk);
    return buf;
}

int pol_new(const char *name, const char *const *settings, int n_settings, const pol_budget *budget,
            uint64_t seed, const kv_model_info *mi, kv_policy **out) {
    *out = NULL;
    const pol_ops *o = pol_find(name);
    if (!o) {
        char known[512] = "";
        for (int i = 0; i < pol_count(); i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", registry[i]->name);
        return kv_errorf(KV_EINVAL, "unknown policy '%s' (known: %s)", name, known);
    }
    if (strcmp(o->name, "full") != 0 && (!budget || budget->kind == POL_BUDGET_NONE))
        return kv_errorf(KV_EINVAL, "policy %s needs a budget (a token count or a percentage of the prompt)", name);
    kv_policy *p = calloc(1, sizeof *p);
    if (!p) return kv_errorf(KV_ENOMEM, "out of memory");
    p->ops = o;
    for (int i = 0; i < o->n_params; i++) p->param[i] = o->params[i].dflt;
    p->budget = budget ? *budget : (pol_budget){POL_BUDGET_NONE, 0};
    if (strcmp(o->name, "full") == 0) p->budget.kind = POL_BUDGET_NONE;
    p->limit = INT32_MAX;
    p->positions = o->positions;
    p->seed = seed;
    p->draw_seed = seed;
    p->n_layers = mi->n_layers;
    p->n_kv_heads = mi->n_kv_heads;
    p->n_heads = mi->n_heads;
    p->layer_limit = malloc((size_t)(mi->n_layers > 0 ? mi->n_layers : 1) * sizeof *p->layer_limit);
    if (!p->layer_limit) {
        free(p);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    for (int l = 0; l < mi->n_layers; l++) p->layer_limit[l] = INT32_MAX;
    int rc = KV_OK;
    p->prefill = o->prefill;
    p->flags = o->flags;
    for (int i = 0; i < n_settings && !rc; i++) rc = set_param(p, settings[i]);
    if (!rc && o->init) rc = o->init(p);
    if (!rc) rc = check_prefill(p); /* after init: it may make the instance one-shot */
    if (rc) {
        pol_free(p);
        return rc;
    }
    *out = p;
    return KV_OK;
}

void pol_free(kv_policy *p) {
    if (!p) return;
    if (p->ops->free) p->ops->free(p);
    free(p->layer_limit);
    free(p);
}

int pol_clone(const kv_policy *src, kv_policy **out) {
    *out = NULL;
    if (src->state && !src->ops->clone_state)
        return kv_errorf(KV_EINVAL, "pol_clone: policy %s has state but no clone_state; it cannot be forked",
                         src->ops->name);
    kv_policy *p = malloc(sizeof *p);
    if (!p) return kv_errorf(KV_ENOMEM, "out of memory");
    *p = *src;
    p->state = NULL;
    pol_set_observer(p, 0, NULL, NULL);
    p->layer_limit = malloc((size_t)(src->n_layers > 0 ? src->n_layers : 1) * sizeof *p->layer_limit);
    if (!p->layer_limit) {
        free(p);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    memcpy(p->layer_limit, src->layer_limit, (size_t)(src->n_layers > 0 ? src->n_layers : 0) * sizeof *p->layer_limit);
    int rc = src->state ? src->ops->clone_state(src, p) : KV_OK;
    if (rc) {
        pol_free(p);
        return rc == KV_ENOMEM ? kv_errorf(KV_ENOMEM, "out of memory cloning policy %s", src->ops->name) : rc;
    }
    *out = p;
    return KV_OK;
}

void pol_begin(kv_policy *p, int32_t n_prompt) {
    p->limit = pol_budget_tokens(&p->budget, n_prompt);
    p->n_prompt = n_prompt > 0 ? n_prompt : 0;
    for (int l = 0; l < p->n_layers; l++) p->layer_limit[l] = p->limit;
    if (p->ops->reset) p->ops->reset(p);
}

static uint64_t seed_mix(uint64_t z) { /* splitmix64's finaliser */
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void pol_set_sample_seed(kv_policy *p, uint64_t sample_seed) { p->draw_seed = seed_mix(p->seed ^ seed_mix(sample_seed)); }

enum { HOLD_CHECK_HEADS = 64 };

/* prefill=whole: while the prompt is being read the policy only gathers
 * statistics (p->hold); the call that ends the prompt, and every decode
 * call, may evict. A method that reads the prompt its own way (sentinel)
 * lays out its own positions and is never held. prefill=streaming, chunk=N:
 * held but at multiples of N, so a forward cut elsewhere (the engine's
 * batch, the caller's pieces) changes nothing. The hook checks that a held
 * policy removed nothing. */
static int hook_on_layer(void *user, kv_cache *c, const kv_attn_view *v) {
    kv_policy *p = user;
    const int64_t end = (int64_t)v->pos0 + v->n_new;
    if (p->prefill == POL_PREFILL_WHOLE)
        p->hold = !p->ops->eval_prompt && p->n_prompt > 0 && end < p->n_prompt;
    else /* streaming: evictions only at multiples of chunk (and the prompt's end), however the forwards fall */
        p->hold = p->chunk > 0 && (p->n_prompt == 0 || end < p->n_prompt) && end % p->chunk != 0;
    int rc = KV_OK;
    if (!p->ops->on_layer) {
        /* evicts nothing: only the observer */
    } else if (!p->hold) {
        rc = p->ops->on_layer(p, c, v);
    } else {
        int32_t len[HOLD_CHECK_HEADS];
        const int nh = v->n_kv_heads < HOLD_CHECK_HEADS ? v->n_kv_heads : HOLD_CHECK_HEADS;
        for (int g = 0; g < nh; g++) len[g] = kv_cache_head_at(c, v->layer, g)->len;
        rc = p->ops->on_layer(p, c, v);
        p->hold = 0;
        for (int g = 0; g < nh && !rc; g++)
            if (kv_cache_head_at(c, v->layer, g)->len < len[g])
                rc = kv_errorf(KV_EINVAL, "internal: policy %s removed slots of layer %d while the prompt was still "
                               "being read (prefill=whole)", p->ops->name, v->layer);
    }
    return !rc && p->obs ? p->obs(p->obs_user, c, v) : rc;
}

static void hook_plan(void *user, kv_attn_plan *plan) {
    kv_policy *p = user;
    p->ops->plan(p, plan);
    plan->needs |= p->obs_needs; /* the observer's, at every call */
}

void pol_set_observer(kv_policy *p, unsigned needs, pol_observer fn, void *user) {
    p->obs = fn;
    p->obs_user = fn ? user : NULL;
    p->obs_needs = fn ? needs : 0;
}

static void hook_reduce_row(void *user, const kv_logit_row *r) {
    const kv_policy *p = user;
    p->ops->reduce_row(p, r);
}

/* The method's own boundaries, and with prefill=streaming, chunk=N,
 * forwards of N prompt tokens (a stream without a prompt length: all). */
static int32_t hook_split(void *user, int32_t pos0, int32_t n) {
    const kv_policy *p = user;
    int32_t m = p->ops->split ? p->ops->split(p, pos0, n) : n;
    if (p->prefill == POL_PREFILL_STREAMING && p->chunk > 0 && (p->n_prompt == 0 || pos0 < p->n_prompt)) {
        int32_t to = p->chunk - pos0 % p->chunk;
        if (p->n_prompt > 0 && p->n_prompt - pos0 < to) to = p->n_prompt - pos0;
        if (to < m) m = to;
    }
    return m;
}

/* A window layer's head was trimmed (kv_ctx_hook.on_trim): the method
 * moves its per-slot state. Trimming is not eviction: it happens while
 * held too. */
static int hook_on_trim(void *user, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos) {
    kv_policy *p = user;
    return p->ops->on_trim ? p->ops->on_trim(p, layer, kv_head, keep, n_keep, min_pos) : KV_OK;
}

int pol_follows_trims(const pol_ops *o) { return o->on_trim || !o->on_layer; }

int pol_trim_stateless(kv_policy *p, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos) {
    (void)p, (void)layer, (void)kv_head, (void)keep, (void)n_keep, (void)min_pos;
    return KV_OK;
}

kv_ctx_hook pol_hook(kv_policy *p) {
    kv_ctx_hook h = {.user = p, .needs = p->ops->needs | p->obs_needs, .positions = p->positions,
                     .on_layer = p->ops->on_layer || p->obs ? hook_on_layer : NULL,
                     .plan = p->ops->plan ? hook_plan : NULL,
                     .reduce_row = p->ops->reduce_row ? hook_reduce_row : NULL,
                     .decay = p->decay,
                     .split = p->ops->split || (p->prefill == POL_PREFILL_STREAMING && p->chunk > 0) ? hook_split : NULL,
                     .on_trim = pol_follows_trims(p->ops) ? hook_on_trim : NULL};
    return h;
}

void pol_attach(kv_policy *p, kv_ctx *ctx) {
    if (!p) {
        kv_ctx_set_hook(ctx, NULL);
        return;
    }
    kv_ctx_hook h = pol_hook(p);
    kv_ctx_set_hook(ctx, &h);
}

int pol_eval_prompt(kv_policy *p, kv_ctx *ctx, const int32_t *tokens, int32_t n, float *logits) {
    if (p && p->ops->eval_prompt) return p->ops->eval_prompt(p, ctx, tokens, n, logits);
    return kv_ctx_eval(ctx, tokens, n, logits, 0);
}

int pol_check_model(const kv_policy *p, const kv_model *m) {
    return p && p->ops->check_model ? p->ops->check_model(p, m) : KV_OK;
}

void pol_print_all(void) {
    for (int i = 0; i < pol_count(); i++) {
        const pol_ops *o = registry[i];
        printf("%-14s %s\n", o->name, o->summary);
        if (i == 0) {
            printf("    %-12s original|cache|rerotate: positions after eviction, every policy (cache = StreamingLLM's pos shift, rerotate = kvpress's key rerotation)\n", "positions");
            printf("    %-12s whole|streaming: whole = the prompt read with full attention, then compressed (the authors' protocol; default but for cascade); streaming = evict while reading\n", "prefill");
            printf("    %-12s N: with prefill=streaming, the prompt tokens read between evictions (required)\n", "chunk");
            printf("    %-12s models with sliding-window layers (gemma2, gemma3): the engine frees what a window no "
                   "longer sees before the policy runs, with positions=original (cache positions would renumber)\n",
                   "(windows)");
        }
        if (o->prefill == POL_PREFILL_STREAMING) printf("    %-12s default streaming (the authors' prefill)\n", "prefill");
        if (!pol_follows_trims(o))
            printf("    %-12s a sliding-window layer keeps the slots its window no longer sees (this method's state "
                   "follows slot indices), so its memory counts them\n", "(windows)");
        for (int k = 0; k < o->n_params; k++) {
            const pol_param_def *d = &o->params[k];
            if (d->choices) {
                char dflt[32];
                const char *c = d->choices;
                for (int idx = 0; idx < (int)d->dflt && strchr(c, '|'); idx++) c = strchr(c, '|') + 1;
                snprintf(dflt, sizeof dflt, "%.*s", (int)strcspn(c, "|"), c);
                printf("    %-12s default %-8s one of %s  %s\n", d->name, dflt, d->choices, d->meaning);
            } else {
                printf("    %-12s default %-8.10g range [%.10g, %.10g]  %s\n", d->name, d->dflt, d->min, d->max, d->meaning);
            }
        }
    }
}

const char *pol_param_str(const kv_policy *p, int i, char *buf, size_t cap) {
    const pol_param_def *d = &p->ops->params[i];
    const char *c = d->choices;
    if (c) {
        for (int idx = 0; idx < (int)p->param[i] && strchr(c, '|'); idx++) c = strchr(c, '|') + 1;
        snprintf(buf, cap, "%.*s", (int)strcspn(c, "|"), c);
    } else { /* "%g", or more digits until it reads back exactly (beta=0.9999999) */
        for (int prec = 6; prec <= 17; prec++) {
            snprintf(buf, cap, "%.*g", prec, p->param[i]);
            if (strtod(buf, NULL) == p->param[i]) break;
        }
    }
    return buf;
}

/* ------------------------------------------------------------ accessors */

/* What policy.h lets the harness read of a method and an instance; the
 * fields themselves are policy_impl.h's. */
const char *pol_ops_name(const pol_ops *o) { return o->name; }
const char *pol_ops_summary(const pol_ops *o) { return o->summary; }
int pol_ops_n_params(const pol_ops *o) { return o->n_params; }
const pol_param_def *pol_ops_param(const pol_ops *o, int i) { return &o->params[i]; }

const pol_ops *pol_ops_of(const kv_policy *p) { return p->ops; }
const char *pol_name(const kv_policy *p) { return p->ops->name; }
int pol_n_params(const kv_policy *p) { return p->ops->n_params; }
const char *pol_param_name(const kv_policy *p, int i) { return p->ops->params[i].name; }
double pol_param_value(const kv_policy *p, int i) { return p->param[i]; }
const pol_budget *pol_get_budget(const kv_policy *p) { return &p->budget; }
int32_t pol_limit(const kv_policy *p) { return p->limit; }
int pol_n_layers(const kv_policy *p) { return p->n_layers; }
int32_t pol_layer_limit(const kv_policy *p, int l) { return p->layer_limit[l]; }
const int32_t *pol_layer_limits(const kv_policy *p) { return p->layer_limit; }
int32_t pol_n_prompt(const kv_policy *p) { return p->n_prompt; }
int pol_is_one_shot(const kv_policy *p) { return (p->flags & POL_ONE_SHOT) != 0; }
kv_pos_mode pol_positions(const kv_policy *p) { return p->positions; }
int pol_has_own_prompt_eval(const kv_policy *p) { return p->ops->eval_prompt != NULL; }
uint64_t pol_draw_seed(const kv_policy *p) { return p->draw_seed; }
void pol_set_draw_seed(kv_policy *p, uint64_t s) { p->draw_seed = s; }

void pol_swap(kv_policy *a, kv_policy *b) {
    kv_policy t = *a;
    *a = *b;
    *b = t;
}

/* ------------------------------------------------------------ helpers */

/* pol_keep_mask moving float or double scores (or none). */
static int keep_mask_any(kv_cache *c, kv_cache_head *h, const uint8_t *keep, float *fs, double *ds) {
    int32_t *src = fs || ds ? malloc((size_t)(h->len > 0 ? h->len : 1) * sizeof *src) : NULL;
    if ((fs || ds) && !src) return kv_errorf(KV_ENOMEM, "out of memory");
    int rc = kv_cache_drop(c, h, keep, src);
    if (!rc && fs) /* src[j] >= j and the sources beyond the new length are never written */
        for (int32_t j = 0; j < h->len; j++) fs[j] = fs[src[j]];
    if (!rc && ds)
        for (int32_t j = 0; j < h->len; j++) ds[j] = ds[src[j]];
    free(src);
    return rc;
}

int pol_keep_mask(kv_cache *c, kv_cache_head *h, const uint8_t *keep, float *scores) {
    return keep_mask_any(c, h, keep, scores, NULL);
}

typedef struct pol_score_row { char *v; int32_t n, cap; } pol_score_row;
struct pol_scores { int n_layers, n_kv_heads; size_t elem; pol_score_row *rows; };

static pol_scores *scores_new(int n_layers, int n_kv_heads, size_t elem) {
    pol_scores *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->elem = elem;
    s->n_layers = n_layers;
    s->n_kv_heads = n_kv_heads;
    s->rows = calloc((size_t)n_layers * (size_t)n_kv_heads, sizeof *s->rows);
    if (!s->rows) {
        free(s);
        return NULL;
    }
    return s;
}

pol_scores *pol_scores_new(int n_layers, int n_kv_heads) { return scores_new(n_layers, n_kv_heads, sizeof(float)); }
pol_scores *pol_dscores_new(int n_layers, int n_kv_heads) { return scores_new(n_layers, n_kv_heads, sizeof(double)); }

pol_scores *pol_scores_clone(const pol_scores *s) {
    pol_scores *d = scores_new(s->n_layers, s->n_kv_heads, s->elem);
    for (int i = 0; d && i < s->n_layers * s->n_kv_heads; i++) {
        const pol_score_row *r = &s->rows[i];
        if (!r->n) continue; /* an empty row grows on its next sync */
        if (!(d->rows[i].v = malloc((size_t)r->n * s->elem))) {
            pol_scores_free(d);
            return NULL;
        }
        memcpy(d->rows[i].v, r->v, (size_t)r->n * s->elem);
        d->rows[i].n = d->rows[i].cap = r->n;
    }
    return d;
}

void pol_scores_reset(pol_scores *s) {
    for (int i = 0; i < s->n_layers * s->n_kv_heads; i++) s->rows[i].n = 0;
}

void pol_scores_free(pol_scores *s) {
    if (!s) return;
    for (int i = 0; i < s->n_layers * s->n_kv_heads; i++) free(s->rows[i].v);
    free(s->rows);
    free(s);
}

static void *scores_sync(pol_scores *s, int layer, int kv_head, const kv_cache_head *h, int32_t *fresh) {
    pol_score_row *r = &s->rows[layer * s->n_kv_heads + kv_head];
    if (h->len > r->cap || !r->v) {
        int32_t cap = h->len + h->len / 2 + 16;
        char *v = realloc(r->v, (size_t)cap * s->elem);
        if (!v) {
            kv_errorf(KV_ENOMEM, "out of memory for policy scores");
            return NULL;
        }
        r->v = v;
        r->cap = cap;
    }
    if (r->n > h->len) r->n = h->len; /* slots removed by someone else: their scores are gone too */
    *fresh = r->n;
    if (h->len > r->n) memset(r->v + (size_t)r->n * s->elem, 0, (size_t)(h->len - r->n) * s->elem); /* 0.0 */
    r->n = h->len;
    return r->v;
}

void pol_scores_trim(pol_scores *s, int layer, int kv_head, const int32_t *keep, int32_t n_keep) {
    pol_score_row *r = &s->rows[layer * s->n_kv_heads + kv_head];
    int32_t j = 0;
    for (; j < n_keep && keep[j] < r->n; j++) /* keep[j] >= j: moving down is safe in order */
        if (keep[j] != j) memcpy(r->v + (size_t)j * s->elem, r->v + (size_t)keep[j] * s->elem, s->elem);
    r->n = j; /* the slots kept after r->n were never synced: they stay fresh */
}

float *pol_scores_sync(pol_scores *s, int layer, int kv_head, const kv_cache_head *h, int32_t *fresh) {
    return s->elem == sizeof(float) ? scores_sync(s, layer, kv_head, h, fresh) : NULL;
}

double *pol_dscores_sync(pol_scores *s, int layer, int kv_head, const kv_cache_head *h, int32_t *fresh) {
    return s->elem == sizeof(double) ? scores_sync(s, layer, kv_head, h, fresh) : NULL;
}

int pol_keep_sinks_recent(kv_cache *c, kv_cache_head *h, int32_t sinks, int32_t limit) {
    if (h->len <= limit) return KV_OK;
    if (sinks > limit) sinks = limit;
    const int32_t recent = limit - sinks;
    int32_t *keep = malloc((size_t)limit * sizeof *keep);
    if (!keep) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int32_t j = 0; j < sinks; j++) keep[j] = j;
    for (int32_t j = 0; j < recent; j++) keep[sinks + j] = h->len - recent + j;
    int rc = kv_cache_keep(c, h, keep, limit);
    free(keep);
    return rc;
}

int32_t pol_max_pos(const kv_cache_head *h) {
    int32_t m = -1;
    for (int32_t j = 0; j < h->len; j++)
        if (h->pos[j] > m) m = h->pos[j];
    return m;
}

/* "a is dropped before b": lower score, then the newer position. */
typedef struct cand { double v; int32_t pos, slot; } cand; /* a float score converts exactly */
static int drops_before(cand a, cand b) { return a.v < b.v || (a.v == b.v && a.pos > b.pos); }

static int keep_top_any(kv_cache *c, kv_cache_head *h, float *fs, double *ds, int32_t recent_from, int32_t k,
                        int compact) {
    int32_t n_cand = 0;
    for (int32_t j = 0; j < h->len; j++) n_cand += h->pos[j] < recent_from;
    int32_t d = n_cand - k; /* slots to drop */
    if (d <= 0) return KV_OK;
    /* a max-heap (by drops_before) of the d most droppable candidates so far:
     * its top is the one among them most worth keeping */
    if (h->len <= 0) return KV_OK;
    const size_t len = (size_t)(uint32_t)h->len;
    cand *heap = malloc((size_t)d * sizeof *heap);
    uint8_t *keep = malloc(len);
    if (!heap || !keep) {
        free(heap);
        free(keep);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    int32_t n = 0;
    for (int32_t j = 0; j < h->len; j++) {
        if (h->pos[j] >= recent_from) continue;
        cand x = {fs ? (double)fs[j] : ds[j], h->pos[j], j}; /* ties by position: the older is kept */
        if (n < d) { /* sift up */
            int32_t i = n++;
            while (i > 0 && drops_before(heap[(i - 1) / 2], x)) {
                heap[i] = heap[(i - 1) / 2];
                i = (i - 1) / 2;
            }
            heap[i] = x;
        } else if (drops_before(x, heap[0])) { /* replace the top, sift down */
            int32_t i = 0;
            for (;;) {
                int32_t l = 2 * i + 1, r = l + 1, m = i;
                cand best = x;
                if (l < n && drops_before(best, heap[l])) m = l, best = heap[l];
                if (r < n && drops_before(best, heap[r])) m = r;
                if (m == i) break;
                heap[i] = heap[m];
                i = m;
            }
            heap[i] = x;
        }
    }
    memset(keep, 1, len);
    for (int32_t e = 0; e < n; e++) keep[heap[e].slot] = 0;
    free(heap);
    int rc = keep_mask_any(c, h, keep, compact ? fs : NULL, compact ? ds : NULL);
    free(keep);
    return rc;
}

int pol_keep_top(kv_cache *c, kv_cache_head *h, float *score, int32_t recent_from, int32_t k, int compact) {
    return keep_top_any(c, h, score, NULL, recent_from, k, compact);
}

int pol_keep_top_d(kv_cache *c, kv_cache_head *h, double *score, int32_t recent_from, int32_t k, int compact) {
    return keep_top_any(c, h, NULL, score, recent_from, k, compact);
}
