/* stats.c - see stats.h. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "../base/rng.h"
#include "stats.h"

double met_nll(const float *logits, int32_t n, int32_t target) {
    float mx = logits[0];
    for (int32_t i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    return log(sum) + mx - logits[target];
}

/* log-sum-exp of x[0..n) */
static double lse(const float *x, int32_t n) {
    float mx = x[0];
    for (int32_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int32_t i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return log(s) + mx;
}

double met_kl(const float *p_logits, const float *q_logits, int32_t n) {
    double lp = lse(p_logits, n), lq = lse(q_logits, n), kl = 0;
    for (int32_t i = 0; i < n; i++) {
        double logp = p_logits[i] - lp, logq = q_logits[i] - lq;
        kl += exp(logp) * (logp - logq);
    }
    return kl > 0 ? kl : 0; /* rounding can leave -1e-17 */
}

/* Case-insensitive search for answer[0..m) in output. */
static int contains_n(const char *output, const char *answer, size_t m) {
    if (m == 0) return 0;
    for (const char *p = output; *p; p++) {
        size_t k = 0;
        while (k < m && p[k] && tolower((unsigned char)p[k]) == tolower((unsigned char)answer[k])) k++;
        if (k == m) return 1;
    }
    return 0;
}

int met_contains(const char *output, const char *answer) { return contains_n(output, answer, strlen(answer)); }

double met_match_all(const char *output, const char *answers) {
    int n = 0, hit = 0;
    for (const char *p = answers; *p;) {
        const char *e = strchr(p, '\n');
        size_t m = e ? (size_t)(e - p) : strlen(p);
        if (m) {
            n++;
            hit += contains_n(output, p, m);
        }
        p += m + (e ? 1 : 0);
    }
    return n ? (double)hit / n : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double met_percentile(double *x, size_t n, double q) {
    if (n == 0) return NAN;
    qsort(x, n, sizeof *x, cmp_double);
    double r = q / 100.0 * (double)(n - 1);
    size_t i = (size_t)r;
    if (i + 1 >= n) return x[n - 1];
    return x[i] + (r - (double)i) * (x[i + 1] - x[i]);
}

double met_mean(const double *x, size_t n) {
    if (n == 0) return NAN;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s / (double)n;
}

int met_bootstrap_ci(const double *x, size_t n, int iters, double level, uint64_t seed, double *lo, double *hi) {
    if (n == 0) {
        *lo = *hi = NAN;
        return KV_OK;
    }
    if (n == 1 || iters < 2) {
        *lo = *hi = met_mean(x, n);
        return KV_OK;
    }
    double *means = malloc((size_t)iters * sizeof *means);
    if (!means) return kv_errorf(KV_ENOMEM, "out of memory");
    uint64_t s = seed;
    for (int it = 0; it < iters; it++) {
        double sum = 0;
        for (size_t i = 0; i < n; i++) sum += x[kv_splitmix64(&s) % n];
        means[it] = sum / (double)n;
    }
    double a = (1 - level) / 2 * 100;
    *lo = met_percentile(means, (size_t)iters, a);
    *hi = met_percentile(means, (size_t)iters, 100 - a);
    free(means);
    return KV_OK;
}
