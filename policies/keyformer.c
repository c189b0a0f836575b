/* keyformer.c - Keyformer (Adnan et al., MLSys 2024; d-matrix-ai/keyformer-llm,
 * METHODS.md A5), in real-drop form.
 *
 * Score. After every layer's attention (prompt and every decode step), each
 * query row x (q.k/sqrt(d), causal mask) of query head h at position t adds
 *     f = softmax((x + g) / tau)       g ~ Gumbel(0, 1) per (layer, h, t, key)
 * to the score of each key (Eq. 9, torch gumbel_softmax(hard=False)); the
 * score is per layer and per KV head (summed over the query heads that share
 * it), accumulated over the prompt and the generation, and leaves with its
 * token. tau follows the schedule of summarize.py (Eq. 10):
 *     tau = tau_init + itr * (tau_end - tau_init) / steps,
 *     itr = 0 for a prompt query, t - n_prompt + 1 for the query at position
 *     t >= n_prompt (the first decode step is itr 1), held at `steps`.
 * `steps` stands for the run's max_new_tokens, which a policy cannot know.
 *
 * Selection. k = the budget (Keyformer's own convention is a percentage of
 * the prompt: --budget 60%), w = int(k * recent / 100) (a percentage of the
 * budget, not of the prompt). As in the authors' mask, the kept set is
 * chosen for the next step and counts the token about to be generated in its
 * recent window: once a layer holds more than k - 1 slots, it keeps the
 * w - 1 newest positions and the k - w best-scored others (k - 1 of them
 * when w = 0), so every attention sees exactly k keys; ties keep the older.
 * The authors' code masks (GPT-J) or gathers every 8 steps (MPT); here the
 * dropped slots are freed at once, which is what the mask computes.
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
 * The seed is the policy's (--seed). Everything is computed in double. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "kv_error.h"
#include "policy.h"

enum { P_RECENT, P_TAU_INIT, P_TAU_END, P_STEPS, P_NOISE };
enum { NOISE_GUMBEL, NOISE_GAUSSIAN, NOISE_CONSTANT, NOISE_NONE };

static const pol_param_def params[] = {
    {"recent", 30, 0, 100, 0, "recent window, % of the KV budget (not of the prompt): w = int(k * recent / 100)", NULL},
    {"tau_init", 1, 1e-3, 1e3, 0, "temperature of the score's softmax at the prompt", NULL},
    {"tau_end", 2, 1e-3, 1e3, 0, "temperature after `steps` generated tokens", NULL},
    {"steps", 128, 1, 1e9, 1, "new tokens over which tau goes tau_init -> tau_end (the run's max_new_tokens)", NULL},
    {"noise", NOISE_GUMBEL, 0, 3, 1, "logit adjustment (Table 4): gumbel, gaussian, constant, none (= H2O's score)",
     "gumbel|gaussian|constant|none"},
};

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
    p->state = pol_dscores_new(p->n_layers, p->n_kv_heads);
    return p->state ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

static void kf_reset(kv_policy *p) { pol_scores_reset(p->state); }
static void kf_free(kv_policy *p) { pol_scores_free(p->state); }

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
    const uint64_t base = mix(mix(mix(mix(p->seed) ^ (uint64_t)r->layer) ^ (uint64_t)r->head) ^ (uint64_t)r->qpos);
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

static int kf_on_layer(kv_policy *p, kv_cache *c, const kv_attn_view *v) {
    const int group = v->n_heads / v->n_kv_heads;
    const int32_t k = p->limit;
    const int32_t w = (int32_t)((double)k * p->param[P_RECENT] / 100.0);
    const int32_t keep = k - 1; /* the slot of the token about to be generated is counted in */
    const int32_t heavy = k - w < keep ? k - w : keep, recent = w - 1 > 0 ? w - 1 : 0;
    for (int g = 0; g < v->n_kv_heads; g++) {
        kv_cache_head *h = kv_cache_head_at(c, v->layer, g);
        int32_t fresh;
        double *score = pol_dscores_sync(p->state, v->layer, g, h, &fresh);
        if (!score) return KV_ENOMEM;
        if (v->reduced)
            for (int q = g * group; q < (g + 1) * group; q++) {
                const double *row = v->reduced + (size_t)q * v->stride;
                for (int32_t j = 0; j < h->len; j++) score[j] += row[j];
            }
        if (p->hold || h->len <= keep) continue;
        /* the recent window: the newest positions (tokens are never evicted
         * while inside it, so these are all present) */
        int32_t from = recent > 0 ? pol_max_pos(h) - recent + 1 : INT32_MAX;
        int rc = pol_keep_top_d(c, h, score, from, heavy, 1);
        if (rc) return rc;
        pol_dscores_sync(p->state, v->layer, g, h, &fresh); /* record the new length */
    }
    return KV_OK;
}

const pol_ops pol_keyformer_ops = {
    .name = "keyformer",
    .summary = "Gumbel-noised attention score with a temperature schedule + recent window (Keyformer; METHODS.md A5)",
    .params = params,
    .n_params = 5,
    .needs = KV_NEED_LOGITS,
    .init = kf_init,
    .on_layer = kf_on_layer,
    .reset = kf_reset,
    .free = kf_free,
    .reduce_row = kf_reduce_row,
};
