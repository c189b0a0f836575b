/* sampler.c - see sampler.h. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>

#include "kv_error.h"
#include "rng.h"

typedef struct kv_cand { float p; int32_t id; } kv_cand;

struct kv_sampler {
    kv_sampler_params p;
    int32_t n_vocab;
    kv_rng rng;      /* restarted from p.seed by kv_sampler_reset */
    float *prob;     /* [n_vocab] */
    kv_cand *cand;   /* [n_vocab] candidates, sorted by probability */
};

kv_sampler_params kv_sampler_default_params(void) {
    kv_sampler_params p = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 42};
    return p;
}

void kv_sampler_reset(kv_sampler *s) { kv_rng_seed(&s->rng, s->p.seed); }

int kv_sampler_new(const kv_sampler_params *p, int32_t n_vocab, kv_sampler **out) {
    *out = NULL;
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return kv_errorf(KV_EINVAL, "temperature: expected a finite value >= 0, got %g", (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return kv_errorf(KV_EINVAL, "top_p: expected a value in (0, 1], got %g", (double)p->top_p);
    if (p->top_k < 0) return kv_errorf(KV_EINVAL, "top_k: expected a value >= 0, got %d", p->top_k);
    if (n_vocab < 1) return kv_errorf(KV_EINVAL, "sampler: empty vocabulary");
    kv_sampler *s = calloc(1, sizeof *s);
    if (!s) return kv_errorf(KV_ENOMEM, "out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->prob = malloc((size_t)n_vocab * sizeof *s->prob);
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    if (!s->prob || !s->cand) {
        kv_sampler_free(s);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    kv_sampler_reset(s);
    *out = s;
    return KV_OK;
}

void kv_sampler_free(kv_sampler *s) {
    if (!s) return;
    free(s->prob);
    free(s->cand);
    free(s);
}

int32_t kv_argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int by_prob_desc(const void *a, const void *b) {
    const kv_cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id); /* a total order: same result on every libc */
}

int32_t kv_sampler_sample(kv_sampler *s, const float *logits) {
    const int32_t n = s->n_vocab;
    if (s->p.temperature == 0.0f) return kv_argmax(logits, n);
    float mx = logits[kv_argmax(logits, n)];
    double sum = 0;
    for (int32_t i = 0; i < n; i++) {
        s->prob[i] = expf((logits[i] - mx) / s->p.temperature);
        sum += s->prob[i];
    }
    for (int32_t i = 0; i < n; i++) s->prob[i] = (float)(s->prob[i] / sum);
    int32_t m = n;
    for (int32_t i = 0; i < n; i++) s->cand[i] = (kv_cand){s->prob[i], i};
    if (s->p.top_k > 0 || s->p.top_p < 1.0f) {
        qsort(s->cand, (size_t)n, sizeof *s->cand, by_prob_desc);
        if (s->p.top_k > 0 && s->p.top_k < m) m = s->p.top_k;
        if (s->p.top_p < 1.0f) {
            double cum = 0;
            for (int32_t i = 0; i < m; i++) {
                cum += s->cand[i].p;
                if (cum >= s->p.top_p) {
                    m = i + 1;
                    break;
                }
            }
        }
    }
    double mass = 0;
    for (int32_t i = 0; i < m; i++) mass += s->cand[i].p;
    double r = kv_rng_uniform(&s->rng) * mass, cum = 0;
    for (int32_t i = 0; i < m; i++) {
        cum += s->cand[i].p;
        if (r < cum) return s->cand[i].id;
    }
    return s->cand[m - 1].id; /* rounding left r just above the total */
}
