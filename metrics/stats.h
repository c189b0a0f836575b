/* stats.h - the numeric metrics besides ROUGE: next-token distributions
 * (NLL, KL divergence, agreement), answer matching for retrieval tasks,
 * latency percentiles, and aggregation with bootstrap confidence
 * intervals. All plain functions of their inputs, no state. */
#ifndef MET_STATS_H
#define MET_STATS_H

#include <stddef.h>
#include <stdint.h>

/* -log softmax(logits)[target] over n logits, computed stably. */
double met_nll(const float *logits, int32_t n, int32_t target);

/* KL(P || Q) in nats, P = softmax(p_logits) (the reference, e.g. the full
 * cache) and Q = softmax(q_logits), over n logits. 0 when identical. */
double met_kl(const float *p_logits, const float *q_logits, int32_t n);

/* 1 if `answer` occurs in `output`, ignoring ASCII case (passkey and needle
 * scoring: the key or answer appears anywhere in the continuation). */
int met_contains(const char *output, const char *answer);

/* The fraction of the '\n'-separated answers that occur in output
 * (RULER's string_match_all); 0 when there are no answers. */
double met_match_all(const char *output, const char *answers);

/* The q-th percentile (0..100) of x[0..n) by linear interpolation between
 * order statistics (numpy's default); sorts x in place. NAN when n is 0. */
double met_percentile(double *x, size_t n, double q);

double met_mean(const double *x, size_t n); /* NAN when n is 0 */

/* Percentile bootstrap confidence interval of the mean: `iters` resamples
 * with replacement drawn from a generator seeded with `seed` (the same
 * inputs give the same interval), level e.g. 0.95. lo = hi = the value
 * when n is 1; NAN when n is 0. Returns 0 or KV_ENOMEM. */
int met_bootstrap_ci(const double *x, size_t n, int iters, double level, uint64_t seed, double *lo, double *hi);

#endif
