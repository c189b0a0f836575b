/* rng.h - the project's seeded random numbers (no global state).
 *
 * kv_splitmix64 is Steele, Lea and Flood's SplitMix64 (OOPSLA 2014): a
 * counter advanced by the golden-ratio constant, then mixed. The datasets'
 * generators, the bootstrap and the span samplers draw from it directly.
 * kv_rng is Blackman and Vigna's xoshiro256** (2018), seeded with four
 * splitmix64 outputs as its authors advise; the sampler draws from it. */
#ifndef KV_RNG_H
#define KV_RNG_H

#include <stdint.h>

/* splitmix64: advances *state and returns the next 64 random bits. */
uint64_t kv_splitmix64(uint64_t *state);

typedef struct kv_rng {
    uint64_t s[4]; /* xoshiro256** state; never all zero once seeded */
} kv_rng;

/* Restarts the stream: s[0..3] = four splitmix64 outputs from `seed`. */
void kv_rng_seed(kv_rng *r, uint64_t seed);
/* The next 64 random bits. */
uint64_t kv_rng_next(kv_rng *r);
/* Uniform in [0, 1) from the next output's top 53 bits. */
double kv_rng_uniform(kv_rng *r);

#endif
