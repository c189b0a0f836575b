/* sampler.h - choosing the next token from logits.
 *
 * temperature 0 is greedy argmax (ties go to the lowest id). Otherwise the
 * logits are divided by the temperature, softmaxed, cut to the top_k most
 * likely (0 = no cut), then to the smallest set whose mass reaches top_p
 * (1 = no cut), renormalised, and sampled with a seeded xoshiro256** stream
 * (kv_rng, base/rng.h),
 * so a (seed, logits) sequence always gives the same tokens. */
#ifndef KV_SAMPLER_H
#define KV_SAMPLER_H

#include <stdint.h>

typedef struct kv_sampler_params {
    float temperature; /* 0 = greedy */
    int32_t top_k;     /* 0 = off */
    float top_p;       /* 1 = off */
    uint64_t seed;
} kv_sampler_params;

typedef struct kv_sampler kv_sampler; /* opaque */

kv_sampler_params kv_sampler_default_params(void); /* greedy, seed 42 */
/* KV_EINVAL names the bad parameter (temperature < 0, top_p outside (0,1], top_k < 0). */
int kv_sampler_new(const kv_sampler_params *p, int32_t n_vocab, kv_sampler **out);
void kv_sampler_free(kv_sampler *s);
/* Restarts the random stream from the seed (a new sample). */
void kv_sampler_reset(kv_sampler *s);
int32_t kv_sampler_sample(kv_sampler *s, const float *logits);

/* Index of the largest value (lowest index on ties). */
int32_t kv_argmax(const float *x, int32_t n);

#endif
