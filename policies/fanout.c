/* fanout.c - one prompt pass read for several policies (pol_fanout, see
 * policy.h).
 *
 * With prefill=whole a policy only gathers statistics while the prompt is
 * read, and evicts at the call that ends it, layer by layer, after that
 * layer's attention. Nothing it does changes what the model computes for
 * the prompt, so the pass is the same for every such policy: only the
 * statistics each asks for and the compression differ. The fanout hook
 * asks the engine for the union of the members' statistics, hands each
 * member the view it would have had alone (its own plan's needs and
 * window), and at the prompt's last call copies each layer into the
 * member's own cache before the member compresses it there. The shared
 * cache is never evicted from; each member's cache ends as its own pass
 * would have left it, slot for slot and byte for byte.
 *
 * The memory a member's own pass would have held at its peak is measured
 * on the parts that make it: the shared cache's peak before the last call,
 * then at each layer of the last call the member's cache (layers up to
 * this one, compressed but this one) plus the shared cache's later layers
 * (not yet reached by the last call, as alone). */
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"

struct pol_fanout {
    int n;
    kv_policy **pol;    /* [n] the members */
    kv_cache **cache;   /* [n] each member's cache */
    kv_ctx_hook *hook;  /* [n] each member's own hook (pol_hook) */
    kv_attn_plan *plan; /* [n] each member's plan for the layer in hand */
    size_t *peak;       /* [n] what each member's own pass would have held at most */
    kv_policy *reducer; /* the member whose reduce_row serves all (equal reducers), or NULL */
    int32_t n_prompt;
    unsigned needs;     /* the members' needs together (0: the engine asks no plan) */
    int last_started;   /* the call that ends the prompt has begun */
    float *win;         /* a member's window rows when its window is part of the union's */
    size_t win_cap;
    kv_cache *shared;   /* the attached context's cache */
    int trim_layer;     /* the layer whose bytes before its window trim are in trim_bytes (-1: none) */
    size_t trim_bytes;
};

int pol_shares_prompt(const kv_policy *p) {
    return p->prefill == POL_PREFILL_WHOLE && !p->ops->eval_prompt && !p->ops->split &&
           !(p->ops->needs & KV_NEED_DECAYED_COLSUM);
}

/* A reducer is a function of the method, its parameters, the prompt length
 * and the sample's draws (policy_impl.h): equal ones reduce equal rows. */
static int same_reducer(const kv_policy *a, const kv_policy *b) {
    if (!a->ops->reduce_row || !b->ops->reduce_row) return 1;
    return a->ops == b->ops && a->draw_seed == b->draw_seed && a->n_prompt == b->n_prompt &&
           memcmp(a->param, b->param, sizeof a->param) == 0;
}

int pol_share_compatible(const kv_policy *a, const kv_policy *b) {
    return pol_shares_prompt(a) && pol_shares_prompt(b) && a->positions == b->positions && same_reducer(a, b) &&
           pol_follows_trims(a->ops) == pol_follows_trims(b->ops); /* one shared pass frees them or keeps them */
}

void pol_fanout_free(pol_fanout *f) {
    if (!f) return;
    free(f->pol);
    free(f->cache);
    free(f->hook);
    free(f->plan);
    free(f->peak);
    free(f->win);
    free(f);
}

int pol_fanout_new(kv_policy *const *pols, kv_cache *const *caches, int n, pol_fanout **out) {
    *out = NULL;
    if (n < 1) return kv_errorf(KV_EINVAL, "pol_fanout_new: no policies");
    for (int i = 0; i < n; i++) {
        if (!pol_share_compatible(pols[0], pols[i]))
            return kv_errorf(KV_EINVAL, "pol_fanout_new: policy %s cannot share a prompt pass with %s",
                             pols[i]->ops->name, pols[0]->ops->name);
        if (pols[i]->n_prompt <= 0 || pols[i]->n_prompt != pols[0]->n_prompt)
            return kv_errorf(KV_EINVAL, "pol_fanout_new: policy %s was begun for %d prompt tokens, %s for %d",
                             pols[i]->ops->name, pols[i]->n_prompt, pols[0]->ops->name, pols[0]->n_prompt);
    }
    pol_fanout *f = calloc(1, sizeof *f);
    if (!f) return kv_errorf(KV_ENOMEM, "out of memory");
    f->n = n;
    f->n_prompt = pols[0]->n_prompt;
    f->pol = malloc((size_t)n * sizeof *f->pol);
    f->cache = malloc((size_t)n * sizeof *f->cache);
    f->hook = malloc((size_t)n * sizeof *f->hook);
    f->plan = calloc((size_t)n, sizeof *f->plan);
    f->peak = calloc((size_t)n, sizeof *f->peak);
    if (!f->pol || !f->cache || !f->hook || !f->plan || !f->peak) {
        pol_fanout_free(f);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        f->pol[i] = pols[i];
        f->cache[i] = caches[i];
        f->hook[i] = pol_hook(pols[i]);
        if (pols[i]->ops->reduce_row && !f->reducer) f->reducer = pols[i];
    }
    *out = f;
    return KV_OK;
}

/* Each member's own plan (the engine's rule, kv_hook_plan), and for the
 * engine their union: every statistic any member asks, the window rows
 * spanning all the members' windows. */
static void fan_plan(void *user, kv_attn_plan *pl) {
    pol_fanout *f = user;
    unsigned needs = 0;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int i = 0; i < f->n; i++) {
        kv_attn_plan *m = &f->plan[i];
        *m = kv_hook_plan(&f->hook[i], pl->layer, pl->pos0, pl->n_new);
        needs |= m->needs;
        if (m->needs & KV_NEED_WINDOW) {
            if (m->win_pos0 < lo) lo = m->win_pos0;
            if ((int64_t)m->win_pos0 + m->win_n > hi) hi = (int64_t)m->win_pos0 + m->win_n;
        }
    }
    pl->needs = needs;
    pl->win_pos0 = needs & KV_NEED_WINDOW ? (int32_t)lo : pl->pos0;
    pl->win_n = needs & KV_NEED_WINDOW ? (int32_t)(hi - lo) : 0;
}

static void fan_reduce_row(void *user, const kv_logit_row *r) {
    const pol_fanout *f = user;
    f->reducer->ops->reduce_row(f->reducer, r);
}

/* Member i's view of the union's statistics: what its own plan asked, its
 * window rows laid out as alone ([n_heads][win_n][stride]). */
static int member_view(pol_fanout *f, int i, const kv_attn_view *v, kv_attn_view *out) {
    const kv_attn_plan *m = &f->plan[i];
    const unsigned needs = m->needs & v->needs;
    *out = *v;
    out->needs = needs;
    if (!(needs & KV_NEED_LAST_ROW)) out->last_row = NULL;
    if (!(needs & KV_NEED_COLSUM)) out->colsum = NULL;
    if (!(needs & KV_NEED_LOGITS)) out->reduced = NULL;
    if (!(needs & KV_NEED_DECAYED_COLSUM)) out->dcolsum = NULL;
    out->win_pos0 = m->win_pos0;
    out->win_n = needs & KV_NEED_WINDOW ? m->win_n : 0;
    if (!(needs & KV_NEED_WINDOW)) {
        out->window = NULL;
        return KV_OK;
    }
    if (m->win_pos0 == v->win_pos0 && m->win_n == v->win_n) return KV_OK;
    const size_t row = (size_t)v->stride, need = (size_t)v->n_heads * (size_t)m->win_n * row;
    if (need > f->win_cap) {
        float *w = realloc(f->win, need * sizeof *w);
        if (!w) return kv_errorf(KV_ENOMEM, "out of memory for a policy's window rows");
        f->win = w;
        f->win_cap = need;
    }
    for (int h = 0; h < v->n_heads; h++)
        memcpy(f->win + (size_t)h * m->win_n * row,
               v->window + ((size_t)h * v->win_n + (size_t)(m->win_pos0 - v->win_pos0)) * row,
               (size_t)m->win_n * row * sizeof(float));
    out->window = f->win;
    return KV_OK;
}

/* The bytes of the shared cache's layers after `layer`. */
static size_t later_bytes(const kv_cache *c, int layer) {
    size_t b = 0;
    for (int l = layer + 1; l < kv_cache_n_layers(c); l++) b += kv_cache_layer_bytes(c, l);
    return b;
}

static int fan_on_layer(void *user, kv_cache *shared, const kv_attn_view *v) {
    pol_fanout *f = user;
    const int last = (int64_t)v->pos0 + v->n_new >= f->n_prompt;
    if (!f->needs) /* no plan was asked: each member's, alone, is kv_hook_plan's for a hook without needs */
        for (int i = 0; i < f->n; i++) f->plan[i] = (kv_attn_plan){.layer = v->layer, .pos0 = v->pos0, .n_new = v->n_new};
    if (last && !f->last_started) { /* until now each member's pass would have held what the shared one holds */
        f->last_started = 1;
        for (int i = 0; i < f->n; i++) f->peak[i] = kv_cache_peak_bytes(shared);
    }
    const size_t later = last ? later_bytes(shared, v->layer) : 0;
    for (int i = 0; i < f->n; i++) {
        kv_attn_view mv;
        int rc = member_view(f, i, v, &mv);
        kv_cache *c = last ? f->cache[i] : shared;
        if (!rc && last) {
            kv_cache_reset_peak(c);
            rc = kv_cache_copy_layer(c, shared, v->layer);
        }
        /* a window layer held its untrimmed slots for a moment, alone too */
        if (!rc && last && f->trim_layer == v->layer) {
            size_t pre = kv_cache_bytes(c) - kv_cache_layer_bytes(c, v->layer) + f->trim_bytes + later;
            if (pre > f->peak[i]) f->peak[i] = pre;
        }
        if (!rc && f->hook[i].on_layer) rc = f->hook[i].on_layer(f->hook[i].user, c, &mv);
        if (rc) return rc;
        if (last && kv_cache_peak_bytes(c) + later > f->peak[i]) f->peak[i] = kv_cache_peak_bytes(c) + later;
    }
    f->trim_layer = -1;
    return KV_OK;
}

/* The shared cache's window layer was trimmed: every member's state
 * follows (each would have trimmed the same slots alone). */
static int fan_on_trim(void *user, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos) {
    pol_fanout *f = user;
    if (f->trim_layer != layer) { /* the first head trimmed: the layer as the attention left it */
        f->trim_layer = layer;
        f->trim_bytes = kv_cache_layer_bytes(f->shared, layer);
    }
    for (int i = 0; i < f->n; i++) {
        int rc = f->hook[i].on_trim ? f->hook[i].on_trim(f->hook[i].user, layer, kv_head, keep, n_keep, min_pos) : KV_OK;
        if (rc) return rc;
    }
    return KV_OK;
}

void pol_fanout_attach(pol_fanout *f, kv_ctx *ctx) {
    kv_ctx_hook h = {.user = f, .positions = f->pol[0]->positions, .plan = fan_plan, .on_layer = fan_on_layer,
                     .reduce_row = f->reducer ? fan_reduce_row : NULL,
                     /* the members are alike in this (pol_share_compatible) */
                     .on_trim = pol_follows_trims(f->pol[0]->ops) ? fan_on_trim : NULL};
    for (int i = 0; i < f->n; i++) h.needs |= f->hook[i].needs;
    f->needs = h.needs;
    f->last_started = 0;
    f->shared = kv_ctx_cache(ctx);
    f->trim_layer = -1;
    kv_ctx_set_hook(ctx, &h);
}

size_t pol_fanout_prompt_peak(const pol_fanout *f, int i) { return f->peak[i]; }
