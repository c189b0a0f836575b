/* cascade.c - Cascading KV cache (Willette, Lee, Lee, Jeon, Hwang, ICLR 2025,
 * arXiv 2406.17808; jeffwillette/cascading_kv_cache 76c89a4:
 * cascade/models/cascading_cache.py, cascade_attention.py; METHODS.md A10).
 *
 * Structure, per layer and KV head: a sink buffer of S tokens, then C
 * sub-caches ("cascades") of W = N / C slots each, where N is the budget
 * (the authors' --window, the cascades' total) - so a head holds at most
 * N + S slots, and `limit` is set to that. Each sub-cache is a circular
 * buffer whose oldest token is evicted first.
 *
 * Insertion of a token at position t (after its chunk's attention, in
 * position order), as _update_kv_cache_inner does:
 *   - while fewer than S sinks are held, it becomes a sink;
 *   - else it is the carry, offered to sub-cache i = 0, 1, ...:
 *     sub-cache i accepts at step t when (t - S) mod 2^i == 0 (cascade_func
 *     pow2), or always while t <= N + S with eager_fill;
 *     accepting and not full: the carry is appended (done);
 *     accepting and full: the carry takes the oldest slot and that evicted
 *       token becomes the carry for sub-cache i + 1 (pushed down);
 *     not accepting and empty: the carry is appended (done);
 *     not accepting: if score(carry) >= score(newest of sub-cache i), the
 *       carry replaces that newest token (which is dropped), else the carry
 *       is dropped (done);
 *   - a token pushed out of the last sub-cache is dropped.
 * Sub-cache i thus spans about 2^i W tokens of history.
 *
 * Score: an exponential moving average of the attention a token receives,
 * reduced over the query heads of its KV head's group by max or mean
 * (head_reduction; cascade_attention.py calc_scores). For a chunk of L
 * queries, the engine's KV_NEED_DECAYED_COLSUM with decay = beta gives per
 * query head h and slot j  D[h][j] = sum_q beta^(L-1-q) a[q][j], and
 *     cached token:  score <- beta^L score + (1 - beta) red_h D[h][j]
 *     chunk token:   score  = (1 - beta) red_h D[h][j]  (a[q][j] = 0 for q < j)
 * (the authors' formula with (1 - beta) taken out of the sum). Decoding is
 * a chunk of one: score <- beta score + (1 - beta) red_h a[h][j]. Sinks
 * have no score. Arithmetic, in double: when a chunk spans several engine
 * calls (pieces of n queries), each piece first sets, per query head and
 * slot, P <- beta^n P + D (P = 0 for slots new in the piece; pow() of libm),
 * and the chunk's end uses P for D; in a one-piece chunk P = D exactly.
 * mean = (sum over the group's heads in order) / G; bL = pow(beta, L);
 * cached: bL * score + (1 - beta) * red; new: (1 - beta) * red.
 *
 * Strided prefill: the prompt is fed in chunks of `stride` positions
 * ([k stride, (k+1) stride), cut at the prompt's end); each chunk attends
 * densely to itself, the sinks and the cascades, then its tokens are
 * inserted one by one; after the prompt every token is its own chunk. The
 * policy asks the engine (kv_ctx_hook.split) to stop its forwards at those
 * boundaries and to take generated tokens one at a time, and defers the
 * insertion of a chunk fed in several calls (max_batch < stride, or a
 * caller feeding fewer tokens per call) to its last one: between those
 * calls a head may hold up to N + S + stride slots, as the authors' chunk
 * attention does. With no known prompt (pol_begin(p, 0): streaming), every
 * forward is a chunk (a call cut at multiples of stride and at max_batch).
 *
 * Positions: the authors' default is in-cache positions (sinks at 0..S-1,
 * cached tokens contiguous after them in position order, queries after the
 * cache), which is KV_POS_CACHE: slots are kept in position order
 * (kv_cache_keep), so a key's in-cache index is its slot index. The
 * default here too; positions=original is their --do_og_pos.
 *
 * Sliding-window layers (Gemma), with positions=original: the engine frees
 * what the window no longer sees (cascade_on_trim); the freed positions
 * leave the sinks and sub-caches, which refill as when not yet full. The
 * authors' code has no windowed model; this is the reading under which a
 * layer's budget holds only tokens it can attend to, as for every method.
 *
 * Where this differs from the authors' code: the attention and the EMA are
 * exact here (their flash kernel's chunk normaliser is approximate, per its
 * comment); scores are double (theirs fp16); W = floor(N / C) (the authors
 * require C | N) and C is cut to N when N < C. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"

enum { P_SINKS, P_CASCADES, P_BETA, P_REDUCE, P_EAGER, P_STRIDE, P_COUNTS };
enum { RED_MAX, RED_MEAN };

static const pol_param_def params[] = {
    {"sinks", 4, 0, 1 << 20, 1, "S: first tokens always kept, beside the N cascade slots (class default 4; the paper's runs: 64)", NULL},
    {"cascades", 4, 1, 24, 1, "C: sub-caches of W = N / C slots; sub-cache i takes a token every 2^i steps (pow2)", NULL},
    {"beta", 0.9999999, 0, 1, 0, "EMA of attention: score <- beta^L score + sum_q (1 - beta) beta^(L-1-q) a[q]", NULL},
    {"head_reduction", RED_MAX, 0, 1, 1, "over the query heads of a KV head's group (max: the paper's runs; mean: CLI default)",
     "max|mean"},
    {"eager_fill", 1, 0, 1, 1, "1: every sub-cache takes every token while t <= N + S", NULL},
    {"stride", 1024, 1, 1 << 30, 1, "prompt chunk (cascade_stride): its attention, then its tokens inserted in order", NULL},
    {"budget_counts", 0, 0, 1, 1, "what the budget B counts: cascades = the N cascade slots, sinks beside (the authors' "
     "--window); total = sinks included, N = B - S (equal total slots with streamingllm at B)", "cascades|total"},
};

typedef struct ring {     /* one sub-cache: token positions, oldest at `start` */
    int32_t *pos;         /* [cap], cap <= W; while not full start == 0 */
    int32_t start, count, cap;
} ring;

typedef struct head_st {
    int32_t n_sinks;      /* sinks taken (the first S tokens) */
    int32_t sinks_gone;   /* of them, freed by a sliding window (cascade_on_trim) */
    ring *rings;          /* [n_rings] */
    double *acc;          /* [acc_len][G]: P of the open chunk (several pieces) */
    size_t acc_cap;
    int32_t acc_len;
    int32_t open_from;    /* first slot of the open chunk's tokens; -1: none open */
    int32_t open_len;     /* positions of the open chunk seen so far */
} head_st;

typedef struct cascade_st {
    int n_rings;          /* the `cascades` parameter: rings allocated per head */
    int32_t S, C, W, N;   /* this sequence: C sub-caches of W slots, N = C W */
    head_st *hs;          /* [n_layers][n_kv_heads] */
    pol_scores *score;    /* per slot, double */
    int32_t *keep;        /* scratch [cap] */
    uint8_t *drop;        /* scratch [cap] */
    double *red;          /* scratch [cap] */
    int32_t cap;
} cascade_st;

static void free_state(cascade_st *st, int n_heads) {
    if (!st) return;
    for (int i = 0; st->hs && i < n_heads; i++) {
        for (int r = 0; st->hs[i].rings && r < st->n_rings; r++) free(st->hs[i].rings[r].pos);
        free(st->hs[i].rings);
        free(st->hs[i].acc);
    }
    free(st->hs);
    pol_scores_free(st->score);
    free(st->keep);
    free(st->drop);
    free(st->red);
    free(st);
}

static int cascade_init(kv_policy *p) {
    const int n = p->n_layers * p->n_kv_heads;
    cascade_st *st = calloc(1, sizeof *st);
    if (!st) return kv_errorf(KV_ENOMEM, "out of memory");
    st->n_rings = (int)p->param[P_CASCADES];
    st->hs = calloc((size_t)(n > 0 ? n : 1), sizeof *st->hs);
    st->score = pol_dscores_new(p->n_layers, p->n_kv_heads);
    int ok = st->hs && st->score;
    for (int i = 0; ok && i < n; i++) ok = (st->hs[i].rings = calloc((size_t)st->n_rings, sizeof(ring))) != NULL;
    if (!ok) {
        free_state(st, n);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    p->state = st;
    p->decay = p->param[P_BETA];
    return KV_OK;
}

/* One head's sinks, sub-caches and open chunk's sums, into d (zeroed). */
static int head_clone(const head_st *s, head_st *d, int n_rings, int G) {
    d->n_sinks = s->n_sinks;
    d->sinks_gone = s->sinks_gone;
    d->open_from = s->open_from;
    d->open_len = s->open_len;
    if (!(d->rings = calloc((size_t)n_rings, sizeof *d->rings))) return KV_ENOMEM;
    for (int r = 0; r < n_rings; r++) {
        const ring *a = &s->rings[r];
        d->rings[r] = (ring){.start = a->start, .count = a->count};
        if (!a->cap) continue;
        if (!(d->rings[r].pos = malloc((size_t)a->cap * sizeof *a->pos))) return KV_ENOMEM;
        memcpy(d->rings[r].pos, a->pos, (size_t)a->count * sizeof *a->pos);
        d->rings[r].cap = a->cap;
    }
    const size_t n = (size_t)s->acc_len * (size_t)G; /* the open chunk's P, [acc_len][G] */
    if (!s->acc_cap) return KV_OK;
    if (!(d->acc = malloc(s->acc_cap * sizeof *d->acc))) return KV_ENOMEM;
    memcpy(d->acc, s->acc, n * sizeof *d->acc);
    d->acc_cap = s->acc_cap;
    d->acc_len = s->acc_len;
    return KV_OK;
}

/* pol_clone: every head's structure and the slots' scores (scratch starts
 * empty). */
static int cascade_clone(const kv_policy *src, kv_policy *dst) {
    const cascade_st *s = src->state;
    const int n = src->n_layers * src->n_kv_heads, G = src->n_heads / src->n_kv_heads;
    cascade_st *d = calloc(1, sizeof *d);
    if (!d) return KV_ENOMEM;
    d->n_rings = s->n_rings;
    d->S = s->S, d->C = s->C, d->W = s->W, d->N = s->N;
    d->hs = calloc((size_t)(n > 0 ? n : 1), sizeof *d->hs);
    d->score = pol_scores_clone(s->score);
    int rc = d->hs && d->score ? KV_OK : KV_ENOMEM;
    for (int i = 0; i < n && !rc; i++) rc = head_clone(&s->hs[i], &d->hs[i], s->n_rings, G);
    if (rc) {
        free_state(d, d->hs ? n : 0);
        return rc;
    }
    dst->state = d;
    return KV_OK;
}

static void cascade_free(kv_policy *p) { free_state(p->state, p->n_layers * p->n_kv_heads); }

/* A new sequence: empty sinks and sub-caches, no scores; C, W and N from
 * the budget, and the limit counts the sinks. */
static void cascade_reset(kv_policy *p) {
    cascade_st *st = p->state;
    int64_t budget = p->limit, C = st->n_rings;
    st->S = (int32_t)p->param[P_SINKS];
    if (p->param[P_COUNTS] == 1 && budget != INT32_MAX) { /* total: the sinks come out of the budget */
        if (st->S > budget - 1) st->S = (int32_t)(budget - 1);
        budget -= st->S;
    }
    if (C > budget) C = budget;
    st->C = (int32_t)C;
    st->W = (int32_t)(budget / C);
    st->N = st->C * st->W;
    int64_t limit = (int64_t)st->N + st->S;
    p->limit = limit > INT32_MAX ? INT32_MAX : (int32_t)limit;
    for (int l = 0; l < p->n_layers; l++) p->layer_limit[l] = p->limit;
    for (int i = 0; i < p->n_layers * p->n_kv_heads; i++) {
        head_st *hs = &st->hs[i];
        hs->n_sinks = hs->sinks_gone = 0;
        for (int r = 0; r < st->n_rings; r++) hs->rings[r].start = hs->rings[r].count = 0;
        hs->acc_len = 0;
        hs->open_from = -1;
        hs->open_len = 0;
    }
    pol_scores_reset(st->score);
}

/* Does a chunk end after position e - 1? */
static int chunk_end(const kv_policy *p, int64_t e) {
    const int64_t np = p->n_prompt, stride = (int64_t)p->param[P_STRIDE];
    return np <= 0 || e >= np || e % stride == 0;
}

static int32_t cascade_split(const kv_policy *p, int32_t pos0, int32_t n) {
    const int32_t np = p->n_prompt, stride = (int32_t)p->param[P_STRIDE];
    if (np > 0 && pos0 >= np) return 1; /* decoding: a chunk of one */
    int32_t m = stride - pos0 % stride;
    if (np > 0 && np - pos0 < m) m = np - pos0;
    return n < m ? n : m;
}

/* The slot holding position x (slots are in position order). */
static int32_t slot_of(const kv_cache_head *h, int32_t x) {
    int32_t lo = 0, hi = h->len - 1;
    while (lo <= hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (h->pos[mid] == x) return mid;
        if (h->pos[mid] < x) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static int ring_append(ring *r, int32_t W, int32_t x) {
    if (r->count == r->cap) {
        int32_t cap = r->cap ? r->cap * 2 : 16;
        if (cap > W) cap = W;
        int32_t *v = realloc(r->pos, (size_t)cap * sizeof *v);
        if (!v) return kv_errorf(KV_ENOMEM, "out of memory");
        r->pos = v;
        r->cap = cap;
    }
    r->pos[r->count++] = x; /* not full yet: start is 0 */
    return KV_OK;
}

static int grow_scratch(cascade_st *st, int32_t len) {
    if (len <= st->cap) return KV_OK;
    int32_t cap = len + len / 2 + 16;
    int32_t *k = realloc(st->keep, (size_t)cap * sizeof *k);
    if (k) st->keep = k;
    uint8_t *d = realloc(st->drop, (size_t)cap);
    if (d) st->drop = d;
    double *r = realloc(st->red, (size_t)cap * sizeof *r);
    if (r) st->red = r;
    if (!k || !d || !r) return kv_errorf(KV_ENOMEM, "out of memory");
    st->cap = cap;
    return KV_OK;
}

static double reduce(const double *x, int G, int mode) {
    double r = x[0];
    if (mode == RED_MAX) {
        for (int k = 1; k < G; k++)
            if (x[k] > r) r = x[k];
        return r;
    }
    for (int k = 1; k < G; k++) r += x[k];
    return r / G;
}

/* Inserts the token at position t (its slot already in the cache); marks
 * the slots of dropped tokens in st->drop. */
static int insert(const kv_policy *p, cascade_st *st, head_st *hs, const kv_cache_head *h, const double *sc,
                  int32_t t, int32_t *n_drop) {
    if (hs->n_sinks < st->S) {
        hs->n_sinks++;
        return KV_OK;
    }
    const int eager = p->param[P_EAGER] != 0 && (int64_t)t <= (int64_t)st->N + st->S;
    int32_t carry = t;
    for (int i = 0; i < st->C && carry >= 0; i++) {
        ring *r = &hs->rings[i];
        const int accepts = eager || ((int64_t)t - st->S) % ((int64_t)1 << i) == 0;
        if (accepts && r->count < st->W) {
            int rc = ring_append(r, st->W, carry);
            if (rc) return rc;
            carry = -1;
        } else if (accepts) { /* full: the oldest is pushed down */
            int32_t evicted = r->pos[r->start];
            r->pos[r->start] = carry;
            r->start = (r->start + 1) % st->W;
            carry = evicted;
        } else if (r->count == 0) {
            int rc = ring_append(r, st->W, carry);
            if (rc) return rc;
            carry = -1;
        } else { /* not accepting: the better of the carry and the newest stays */
            int32_t newest = (r->start + r->count - 1) % st->W;
            int32_t cs = slot_of(h, carry), ns = slot_of(h, r->pos[newest]);
            if (cs < 0 || ns < 0) return kv_errorf(KV_EINVAL, "cascade: a sub-cache token is not in the KV cache");
            if (sc[cs] >= sc[ns]) {
                st->drop[ns] = 1;
                r->pos[newest] = carry;
            } else {
                st->drop[cs] = 1;
            }
            (*n_drop)++;
            carry = -1;
        }
    }
    if (carry >= 0) { /* pushed out of the last sub-cache */
        int32_t s = slot_of(h, carry);
        if (s < 0) return kv_errorf(KV_EINVAL, "cascade: a sub-cache token is not in the KV cache");
        st->drop[s] = 1;
        (*n_drop)++;
    }
    return KV_OK;
}

static int cascade_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    cascade_st *st = p->state;
    const int G = v->n_heads / v->n_kv_heads, mode = (int)p->param[P_REDUCE];
    const double beta = p->param[P_BETA];
    const int end = chunk_end(p, (int64_t)v->pos0 + v->n_new);
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        head_st *hs = &st->hs[v->layer * p->n_kv_heads + g];
        int32_t fresh;
        double *sc = pol_dscores_sync(st->score, v->layer, g, h, &fresh);
        if (!sc || grow_scratch(st, h->len)) return KV_ENOMEM;
        for (int32_t j = fresh; j < h->len; j++) /* new slots come in position order after the old */
            if (j > 0 && h->pos[j] <= h->pos[j - 1])
                return kv_errorf(KV_EINVAL, "cascade: KV cache slots out of position order");
        if (hs->open_from < 0) {
            hs->open_from = fresh;
            hs->open_len = 0;
        }
        const int multi = hs->open_len > 0 || !end;
        hs->open_len += v->n_new;
        /* D of query head g G + k at slot j (0 when not computed) */
#define D(k, j) (v->dcolsum ? (double)v->dcolsum[(size_t)(g * G + (k)) * v->stride + (size_t)(j)] : 0.0)
        if (multi) { /* P <- beta^n P + D over the chunk's pieces */
            if ((size_t)h->len * (size_t)G > hs->acc_cap) {
                size_t cap = (size_t)h->len * (size_t)G;
                cap += cap / 2;
                double *a = realloc(hs->acc, cap * sizeof *a);
                if (!a) return kv_errorf(KV_ENOMEM, "out of memory");
                hs->acc = a;
                hs->acc_cap = cap;
            }
            for (size_t i = (size_t)hs->acc_len * G; i < (size_t)h->len * G; i++) hs->acc[i] = 0.0;
            hs->acc_len = h->len;
            const double b = pow(beta, (double)v->n_new);
            for (int32_t j = 0; j < h->len; j++)
                for (int k = 0; k < G; k++) hs->acc[(size_t)j * G + k] = b * hs->acc[(size_t)j * G + k] + D(k, j);
            if (!end) continue;
            for (int32_t j = 0; j < h->len; j++) st->red[j] = reduce(hs->acc + (size_t)j * G, G, mode);
        } else {
            for (int32_t j = 0; j < h->len; j++) { /* as reduce(), on D */
                double r = D(0, j);
                for (int k = 1; k < G; k++) {
                    double x = D(k, j);
                    if (mode != RED_MAX) r += x;
                    else if (x > r) r = x;
                }
                st->red[j] = mode == RED_MAX ? r : r / G;
            }
        }
#undef D
        /* the chunk's scores, then its tokens inserted in order */
        const double bL = pow(beta, (double)hs->open_len), omb = 1.0 - beta;
        for (int32_t j = 0; j < hs->open_from; j++) sc[j] = bL * sc[j] + omb * st->red[j];
        for (int32_t j = hs->open_from; j < h->len; j++) sc[j] = omb * st->red[j];
        memset(st->drop, 0, (size_t)h->len);
        int32_t n_drop = 0;
        for (int32_t j = hs->open_from; j < h->len; j++) {
            int rc = insert(p, st, hs, h, sc, h->pos[j], &n_drop);
            if (rc) return rc;
        }
        int64_t held = hs->n_sinks - hs->sinks_gone;
        for (int i = 0; i < st->C; i++) held += hs->rings[i].count;
        if (held != h->len - n_drop)
            return kv_errorf(KV_EINVAL, "cascade: layer %d head %d holds %d slots, its sub-caches %lld", v->layer, g,
                             h->len - n_drop, (long long)held);
        hs->open_from = -1;
        hs->open_len = 0;
        hs->acc_len = 0;
        if (hs->acc_cap > 4096) { /* a long chunk's sums: give them back */
            free(hs->acc);
            hs->acc = NULL;
            hs->acc_cap = 0;
        }
        if (!n_drop) continue;
        int32_t n_keep = 0;
        for (int32_t j = 0; j < h->len; j++)
            if (!st->drop[j]) st->keep[n_keep++] = j;
        int rc = kv_cache_keep(c, h, st->keep, n_keep);
        if (rc) return rc;
        for (int32_t k = 0; k < n_keep; k++) sc[k] = sc[st->keep[k]];
        pol_dscores_sync(st->score, v->layer, g, h, &fresh); /* record the new length */
    }
    return KV_OK;
}

/* A window layer's head lost the positions below min_pos, which no later
 * query of that layer sees (positions=original only: the engine does not
 * trim under in-cache positions, the default). They leave the sinks and
 * the sub-caches, which then refill as when not yet full: with the slots
 * freed, the layer's budget goes to tokens it can still attend to. Sinks
 * stay the first S tokens: a freed sink is not replaced. Scores and the
 * open chunk's sums follow their slots. */
static int cascade_on_trim(kv_policy *p, int layer, int kv_head, const int32_t *keep, int32_t n_keep,
                           int32_t min_pos) {
    cascade_st *st = p->state;
    head_st *hs = &st->hs[layer * p->n_kv_heads + kv_head];
    const int G = p->n_heads / p->n_kv_heads;
    pol_scores_trim(st->score, layer, kv_head, keep, n_keep);
    /* the sinks are the lowest positions, so the first slots */
    const int32_t sinks_left = hs->n_sinks - hs->sinks_gone;
    int32_t kept = 0;
    while (kept < n_keep && keep[kept] < sinks_left) kept++;
    hs->sinks_gone += sinks_left - kept;
    if (grow_scratch(st, st->W)) return KV_ENOMEM;
    for (int r = 0; r < st->C; r++) { /* a ring's positions rise from its oldest: a prefix goes */
        ring *g = &hs->rings[r];
        int32_t n = 0;
        for (int32_t k = 0; k < g->count; k++) {
            const int32_t x = g->pos[(g->start + k) % g->cap];
            if (x >= min_pos) st->keep[n++] = x;
        }
        if (n == g->count) continue;
        memcpy(g->pos, st->keep, (size_t)n * sizeof *g->pos); /* not full: oldest at 0 */
        g->count = n;
        g->start = 0;
    }
    if (hs->open_from >= 0) { /* the open chunk's first slot and sums, renumbered */
        int32_t from = 0, len = 0;
        for (int32_t k = 0; k < n_keep; k++) {
            from += keep[k] < hs->open_from;
            if (keep[k] < hs->acc_len) {
                memmove(hs->acc + (size_t)len * G, hs->acc + (size_t)keep[k] * G, (size_t)G * sizeof *hs->acc);
                len++;
            }
        }
        hs->open_from = from;
        hs->acc_len = len;
    }
    return KV_OK;
}

const pol_ops pol_cascade_ops = {
    .name = "cascade",
    .summary = "sinks + C sub-caches taking every 2^i-th token, EMA-attention-gated, strided prefill; holds budget + sinks, "
               "positions=cache by default (Cascading KV cache; METHODS.md A10)",
    .params = params,
    .n_params = 7,
    .needs = KV_NEED_DECAYED_COLSUM,
    .init = cascade_init,
    .on_layer = cascade_on_layer,
    .prefill = POL_PREFILL_STREAMING, /* strided: the authors' prefill */
    .reset = cascade_reset,
    .free = cascade_free,
    .clone_state = cascade_clone,
    .split = cascade_split,
    .positions = KV_POS_CACHE,
    .on_trim = cascade_on_trim,
};
