/* keyformer.c - Keyformer (Adnan et al., MLSys 2024; d-matrix-ai/keyformer-llm,
 * METHODS.md A5), in real-drop form.
 *
 * Score. After every layer's attention (prompt and decode steps), each
 * query row x (q.k/sqrt(d), causal mask) of query head h at position t adds
 *     f = softmax((x + g) / tau)       g ~ Gumbel(0, 1) per (layer, h, t, key)
 * to the score of each key (Eq. 9, torch gumbel_softmax(hard=False)); the
 * score is per layer and per KV head (summed over the query heads that share
 * it), accumulated over the prompt and the generation, and leaves with its
 * token. tau follows the schedule of summarize.py (Eq. 10):
 *     tau = tau_init + itr * (tau_end - tau_init) / steps,
 *     itr = 0 for a prompt query, t - n_prompt + 1 for the query at position
 *     t >= n_prompt (the first decode step is itr 1), held at `steps`.
 * `steps` stands for the run's max_new_tokens: the runner sets it to the
 * task's max_new_tokens unless the experiment gives it.
 *
 * Budget. k = the budget (Keyformer's own convention is a percentage of the
 * prompt, --budget 60%: k = int(n * 60 / 100), pol_budget_tokens), and
 * w = int(k * recent / 100) (a percentage of the budget, not of the prompt),
 * both in the authors' integer arithmetic. As in the authors' mask, the kept
 * set is chosen for the next step and counts the token about to be generated
 * in its recent window. Two readings of the selection (`selection`):
 *
 * authors (default; what produced the published numbers): the bookkeeping of
 *     models/gptj-keyformer-lib/modeling_gptj.py (GPTJAttention._attn) and
 *     models/mpt-keyformer-lib/attention.py (scaled_multihead_dot_product_
 *     attention). With N the tokens seen so far (the newest at position
 *     N - 1), once N > k each step builds a mask over N + 1 columns: the
 *     last w columns (positions N + 1 - w .. N, the next token included)
 *     and the k - w best-scored of positions 0 .. N - 1 - w (all N when
 *     w = 0); the mask is ANDed with the previous step's and the scores of
 *     dropped tokens zeroed. So a token never returns, position N - w - the
 *     token leaving the recent window - is in neither part and is
 *     discarded, and once a selection has been made (w >= 1) the best-scored
 *     part of each later step can only be the set already kept: the key set
 *     chosen at the end of the prompt (or at the first step where N > k) is
 *     frozen for the rest of the generation; decode-time scores and the tau
 *     schedule change nothing there. Here: keep the w - 1 newest positions
 *     and the k - w best of the positions < N - w, drop the rest (w = 0:
 *     the k best of all, so k slots are held and the attention sees k + 1).
 *     Once a layer is frozen, its single-token calls ask for no logits
 *     (`plan`): the score could not change what is kept.
 * paper: the reading of the paper's Algorithm 1 kept before: scores keep
 *     accumulating in decode and compete each step; once a layer holds more
 *     than k - 1 slots it keeps the w - 1 newest positions and the k - w
 *     best-scored others (k - 1 of them when w = 0) - the token leaving the
 *     window competes with the kept set, which may change.
 * Either way every attention sees k keys once the cache is full (w >= 1);
 * ties keep the older. The authors' code masks (GPT-J) or gathers every 8
 * steps (MPT); here the dropped slots are freed at once, which is what the
 * mask computes.
 *
 * Noise (`noise`, Table 4's ablation). Counter-based, so a reference can
 * replay it: with splitmix64's finaliser
 *     mix(z) = z += 0x9E3779B97F4A7C15; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
 *              z = (z ^ z >> 27) * 0x94D049BB133111EB; z ^ z >> 31
 * the draw for (seed, layer, query head h, query position t, key position j)
 * is  u = mix(mix(mix(mix(mix(seed) ^ layer) ^ h) ^ t) ^ j),  U(u) =
 * ((u >> 11) + 0.5) / 2^53 in (0, 1), and
 *     gumbel    g = -log(-log U(u))
 *     gaussian  g = 0.5772156649 + 1.2825498302 * sqrt(-2 log U(u)) * cos(2 pi U(mix(u)))
 *               (Gumbel's mean and standard deviation, as the paper has it)
 *     constant  g = 0.5772156649 (then f = softmax(x / tau) up to rounding)
 *     none      f = softmax(x): no noise, no temperature - H2O's score
 * The seed is the sample's (p->draw_seed: pol_set_sample_seed, from the
 * sample's id and the experiment's seed, so each sample draws its own noise
 * as the authors' torch generator does; without a call, --seed itself).
 * Everything is computed in double. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "policy_impl.h"

enum { P_RECENT, P_TAU_INIT, P_TAU_END, P_STEPS, P_NOISE, P_SELECTION };
enum { NOISE_GUMBEL, NOISE_GAUSSIAN, NOISE_CONSTANT, NOISE_NONE };
enum { SEL_AUTHORS, SEL_PAPER };

static const pol_param_def params[] = {
    {"recent", 30, 0, 100, 0, "recent window, % of the KV budget (not of the prompt): w = int(k * recent / 100)", NULL},
    {"tau_init", 1, 1e-3, 1e3, 0, "temperature of the score's softmax at the prompt", NULL},
    {"tau_end", 2, 1e-3, 1e3, 0, "temperature after `steps` generated tokens", NULL},
    {"steps", 128, 1, 1e9, 1, "new tokens over which tau goes tau_init -> tau_end (the runner sets the task's max_new_tokens)",
     NULL},
    {"noise", NOISE_GUMBEL, 0, 3, 1, "logit adjustment (Table 4): gumbel, gaussian, constant, none (= H2O's score)",
     "gumbel|gaussian|constant|none"},
    {"selection", SEL_AUTHORS, 0, 1, 1,
     "authors: modeling_gptj.py/attention.py's mask, ANDed with the last: the token leaving the recent window is "
     "dropped and the key set chosen once N > k (the prompt's end) stays; paper: scores compete every step",
     "authors|paper"},
};

/* p->state */
typedef struct kf_state {
    pol_scores *score;
    uint8_t *chosen; /* [n_layers] selection=authors: a selection was made (the key set is frozen) */
} kf_state;

#define EULER_GAMMA 0.57721566490153286
#define GUMBEL_SD 1.2825498301618641 /* pi / sqrt(6) */
#define KF_TWO_PI 6.283185307179586

static inline uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline double unit(uint64_t u) { return ((double)(u >> 11) + 0.5) * 0x1.0p-53; }

static int kf_init(kv_policy *p) {
    if (p->param[P_TAU_INIT] <= 0 || p->param[P_TAU_END] <= 0)
        return kv_errorf(KV_EINVAL, "policy keyformer: tau_init and tau_end must be positive");
    kf_state *st = calloc(1, sizeof *st);
    p->state = st;
    if (st) {
        st->score = pol_dscores_new(p->n_layers, p->n_kv_heads);
        st->chosen = calloc((size_t)(p->n_layers > 0 ? p->n_layers : 1), 1);
    }
    return st && st->score && st->chosen ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

static void kf_reset(kv_policy *p) {
    kf_state *st = p->state;
    pol_scores_reset(st->score);
    memset(st->chosen, 0, (size_t)(p->n_layers > 0 ? p->n_layers : 1));
}

static void kf_free(kv_policy *p) {
    kf_state *st = p->state;
    if (!st) return;
    pol_scores_free(st->score);
    free(st->chosen);
    free(st);
}

/* pol_clone: the scores and which layers' key sets are frozen. */
static int kf_clone(const kv_policy *src, kv_policy *dst) {
    const kf_state *s = src->state;
    const size_t L = (size_t)(src->n_layers > 0 ? src->n_layers : 1);
    kf_state *d = calloc(1, sizeof *d);
    dst->state = d;
    if (!d || !(d->score = pol_scores_clone(s->score)) || !(d->chosen = malloc(L))) return KV_ENOMEM;
    memcpy(d->chosen, s->chosen, L);
    return KV_OK;
}

/* w = int(k * recent / 100), as the authors compute it (recent a float). */
static int32_t kf_recent(const kv_policy *p) { return (int32_t)((double)p->limit * p->param[P_RECENT] / 100.0); }

/* selection=authors, w >= 1: after a layer's first selection, a call of one
 * token finds only the kept key set below the recent window, so its scores
 * cannot change anything: no logits are asked for. */
static void kf_plan(kv_policy *p, kv_attn_plan *pl) {
    const kf_state *st = p->state;
    if ((int)p->param[P_SELECTION] == SEL_AUTHORS && kf_recent(p) >= 1 && st->chosen[pl->layer] && pl->n_new == 1)
        pl->needs = 0;
}

/* f = softmax((x + g) / tau) of one query row, added into r->acc. */
static void kf_reduce_row(const kv_policy *p, const kv_logit_row *r) {
    const int noise = (int)p->param[P_NOISE];
    double tau = 1.0;
    if (noise != NOISE_NONE) {
        const double steps = p->param[P_STEPS];
        double itr = r->qpos >= p->n_prompt ? (double)r->qpos - p->n_prompt + 1 : 0;
        if (itr > steps) itr = steps;
        tau = p->param[P_TAU_INIT] + itr * ((p->param[P_TAU_END] - p->param[P_TAU_INIT]) / steps);
    }
    const uint64_t base = mix(mix(mix(mix(p->draw_seed) ^ (uint64_t)r->layer) ^ (uint64_t)r->head) ^ (uint64_t)r->qpos);
    double *y = r->tmp, mx = -INFINITY;
    for (int32_t j = 0; j < r->len; j++) {
        if (r->x[j] == -INFINITY) {
            y[j] = -INFINITY;
            continue;
        }
        double g = 0;
        if (noise == NOISE_GUMBEL) {
            g = -log(-log(unit(mix(base ^ (uint64_t)r->kpos[j]))));
        } else if (noise == NOISE_GAUSSIAN) {
            uint64_t u = mix(base ^ (uint64_t)r->kpos[j]);
            g = EULER_GAMMA + GUMBEL_SD * sqrt(-2.0 * log(unit(u))) * cos(KF_TWO_PI * unit(mix(u)));
        } else if (noise == NOISE_CONSTANT) {
            g = EULER_GAMMA;
        }
        y[j] = ((double)r->x[j] + g) / tau;
        if (y[j] > mx) mx = y[j];
    }
    if (mx == -INFINITY) return; /* nothing visible (cannot happen: a query sees itself) */
    double sum = 0;
    for (int32_t j = 0; j < r->len; j++) {
        y[j] = y[j] == -INFINITY ? 0.0 : exp(y[j] - mx);
        sum += y[j];
    }
    for (int32_t j = 0; j < r->len; j++) r->acc[j] += y[j] / sum;
}

/* selection=authors on one head: N tokens seen (the newest at N - 1), N > k:
 * the w - 1 newest, the k - w best of the positions < N - w; position
 * N - w (leaving the window) is dropped. */
static int kf_select_authors(kv_cache *c, kv_cache_head *h, double *score, int32_t k, int32_t w, int32_t N) {
    if (w == 0) return pol_keep_top_d(c, h, score, INT32_MAX, k, 1);
    int32_t leaving = -1;
    for (int32_t j = 0; j < h->len && leaving < 0; j++)
        if (h->pos[j] == N - w) leaving = j;
    if (leaving >= 0) { /* removed first: it must not compete for the k - w */
        uint8_t *keep = malloc((size_t)h->len);
        int32_t *src = malloc((size_t)h->len * sizeof *src);
        int rc = keep && src ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
        if (!rc) {
            memset(keep, 1, (size_t)h->len);
            keep[leaving] = 0;
            rc = kv_cache_drop(c, h, keep, src);
        }
        for (int32_t j = 0; !rc && j < h->len; j++) score[j] = score[src[j]]; /* src[j] >= j */
        free(keep);
        free(src);
        if (rc) return rc;
    }
    return pol_keep_top_d(c, h, score, N - w + 1, k - w, 1);
}

static int kf_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    kf_state *st = p->state;
    const int group = v->n_heads / v->n_kv_heads;
    const int authors = (int)p->param[P_SELECTION] == SEL_AUTHORS;
    const int32_t k = p->limit, w = kf_recent(p);
    const int32_t keep = k - 1; /* paper: the slot of the token about to be generated is counted in */
    const int32_t heavy = k - w < keep ? k - w : keep, recent = w - 1 > 0 ? w - 1 : 0;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        int32_t fresh;
        double *score = pol_dscores_sync(st->score, v->layer, g, h, &fresh);
        if (!score) return KV_ENOMEM;
        if (v->reduced)
            for (int q = g * group; q < (g + 1) * group; q++) {
                const double *row = v->reduced + (size_t)q * v->stride;
                for (int32_t j = 0; j < h->len; j++) score[j] += row[j];
            }
        if (p->hold) continue;
        int rc = KV_OK;
        if (authors) {
            const int32_t N = pol_max_pos(h) + 1; /* tokens seen, dropped ones included */
            if (N <= k) continue;
            st->chosen[v->layer] = 1;
            rc = kf_select_authors(c, h, score, k, w, N);
        } else {
            if (h->len <= keep) continue;
            /* the recent window: the newest positions (tokens are never
             * evicted while inside it, so these are all present) */
            int32_t from = recent > 0 ? pol_max_pos(h) - recent + 1 : INT32_MAX;
            rc = pol_keep_top_d(c, h, score, from, heavy, 1);
        }
        if (rc) return rc;
        pol_dscores_sync(st->score, v->layer, g, h, &fresh); /* record the new length */
    }
    return KV_OK;
}

/* A window layer's head lost what its window no longer sees: the
 * scores follow their slots. */
static int kf_on_trim(kv_policy *p, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos) {
    (void)min_pos;
    pol_scores_trim(((kf_state *)p->state)->score, layer, kv_head, keep, n_keep);
    return KV_OK;
}

const pol_ops pol_keyformer_ops = {
    .name = "keyformer",
    .summary = "Gumbel-noised attention score with a temperature schedule + recent window (Keyformer; defaults and "
               "selection=authors: d-matrix-ai/keyformer-llm modeling_gptj.py, attention.py, summarize.py; METHODS.md A5)",
    .params = params,
    .n_params = 6,
    .needs = KV_NEED_LOGITS,
    .init = kf_init,
    .on_layer = kf_on_layer,
    .reset = kf_reset,
    .free = kf_free,
    .clone_state = kf_clone,
    .reduce_row = kf_reduce_row,
    .plan = kf_plan,
    .on_trim = kf_on_trim,
};
