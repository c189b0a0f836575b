/* kld.c - see kld.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "kld.h"

const double met_kld_kld_fractions[MET_KLD_N_KLD_PCT] = {0.999, 0.990, 0.950, 0.900, 0.100, 0.050, 0.010, 0.001};
const double met_kld_dp_fractions[MET_KLD_N_DP_PCT] = {0.999, 0.990, 0.950, 0.900, 0.750,
                                                       0.250, 0.100, 0.050, 0.010, 0.001};

/* Running sums (double, as llama.cpp keeps them) and the two per-position
 * lists the percentiles need. */
struct met_kld {
    double sum_nll, sum_nll2;           /* Q's -ln p(target) */
    double sum_nll_base, sum_nll_base2; /* the base's */
    double sum_nll_nll_base;            /* their product, for the covariance */
    double sum_kld, sum_kld2;
    double sum_dp, sum_dp2, sum_dp4;
    size_t n_same_top;
    size_t count, cap;
    double *kld; /* [count] */
    double *dp;  /* [count] */
};

met_kld *met_kld_new(void) { return calloc(1, sizeof(met_kld)); }

void met_kld_free(met_kld *acc) {
    if (!acc) return;
    free(acc->kld);
    free(acc->dp);
    free(acc);
}

size_t met_kld_count(const met_kld *acc) { return acc->count; }

/* ln sum_i exp(x_i) in double, and the first index of the largest x. */
static double log_sum_exp(const float *x, int32_t n, int32_t *top) {
    int32_t t = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[t]) t = i;
    double mx = x[t], s = 0;
    for (int32_t i = 0; i < n; i++) s += exp((double)x[i] - mx);
    *top = t;
    return mx + log(s);
}

/* KL(base || Q) from the logits and their log-normalizers. */
static double kl_of(const float *base, double lse_base, const double *pb, const float *q, double lse_q, int32_t n) {
    double kl = 0;
    for (int32_t i = 0; i < n; i++) {
        double lb = (double)base[i] - lse_base, lq = (double)q[i] - lse_q;
        kl += (pb ? pb[i] : exp(lb)) * (lb - lq);
    }
    return kl > 0 ? kl : 0; /* identical rows can round to -1e-17 */
}

static int grow(met_kld *acc) {
    size_t cap = acc->cap ? acc->cap * 2 : 1024;
    double *k = realloc(acc->kld, cap * sizeof *k);
    if (!k) return kv_errorf(KV_ENOMEM, "met_kld_add: out of memory for %zu positions", cap);
    acc->kld = k;
    double *d = realloc(acc->dp, cap * sizeof *d);
    if (!d) return kv_errorf(KV_ENOMEM, "met_kld_add: out of memory for %zu positions", cap);
    acc->dp = d;
    acc->cap = cap;
    return KV_OK;
}

void met_kld_base_of(const float *base_logits, int32_t n_vocab, met_kld_base *out) {
    out->lse = log_sum_exp(base_logits, n_vocab, &out->top);
    out->p = NULL;
}

int met_kld_add(met_kld *acc, const float *base_logits, const float *logits, int32_t n_vocab, int32_t target) {
    met_kld_base b = {0, 0, NULL};
    if (n_vocab >= 1) met_kld_base_of(base_logits, n_vocab, &b);
    return met_kld_add_base(acc, base_logits, &b, logits, NULL, n_vocab, target, NULL);
}

int met_kld_add_base(met_kld *acc, const float *base_logits, const met_kld_base *b, const float *logits,
                     const met_kld_base *q, int32_t n_vocab, int32_t target, double *kld_out) {
    if (n_vocab < 1 || target < 0 || target >= n_vocab)
        return kv_errorf(KV_EINVAL, "met_kld_add: expected 0 <= target < n_vocab, got target %d, n_vocab %d", target,
                         n_vocab);
    if (acc->count == acc->cap) {
        int rc = grow(acc);
        if (rc) return rc;
    }
    int32_t top_b = b->top, top_q;
    double lse_b = b->lse;
    double lse_q = q ? (top_q = q->top, q->lse) : log_sum_exp(logits, n_vocab, &top_q);
    double nll_b = lse_b - base_logits[target], nll = lse_q - logits[target];
    double kld = kl_of(base_logits, lse_b, b->p, logits, lse_q, n_vocab);
    double dp = exp(-nll) - exp(-nll_b);
    if (kld_out) *kld_out = kld;
    acc->sum_nll += nll;
    acc->sum_nll2 += nll * nll;
    acc->sum_nll_base += nll_b;
    acc->sum_nll_base2 += nll_b * nll_b;
    acc->sum_nll_nll_base += nll * nll_b;
    acc->sum_kld += kld;
    acc->sum_kld2 += kld * kld;
    acc->sum_dp += dp;
    acc->sum_dp2 += dp * dp;
    acc->sum_dp4 += dp * dp * dp * dp;
    acc->n_same_top += top_b == top_q;
    acc->kld[acc->count] = kld;
    acc->dp[acc->count] = dp;
    acc->count++;
    return KV_OK;
}

double met_kld_percentile(const double *sorted, size_t n, double fraction) {
    if (n == 0) return NAN;
    if (fraction <= 0) return sorted[0];
    if (fraction >= 1) return sorted[n - 1];
    double r = fraction * (double)(n - 1);
    size_t i = (size_t)r;
    size_t j = i + 1 < n ? i + 1 : n - 1;
    r -= (double)i;
    return (1 - r) * sorted[i] + r * sorted[j];
}

/* llama.cpp's mean and its standard error: 0 for n <= 10 (too few to say). */
static void mean_err(double sum, double sum2, size_t n, double *mean, double *err) {
    *mean = *err = 0;
    if (n < 1) return;
    *mean = sum / (double)n;
    double var = sum2 / (double)n - *mean * *mean;
    *err = var > 0 && n > 10 ? sqrt(var / (double)(n - 1)) : 0;
}

/* Covariance of the two means (0 for n < 10, as llama.cpp). */
static double mean_cov(double sa, double sb, double sab, size_t n) {
    if (n < 10) return 0;
    double nn = (double)n;
    return (sab / nn - (sa / nn) * (sb / nn)) / (nn - 1);
}

/* sqrt clamped at 0: rounding can make a difference of variances negative. */
static double sqrt0(double x) { return x > 0 ? sqrt(x) : 0; }

static void perplexity_figures(const met_kld *a, met_kld_summary *s) {
    double ln_q, err_q, ln_b, err_b;
    mean_err(a->sum_nll, a->sum_nll2, a->count, &ln_q, &err_q);
    mean_err(a->sum_nll_base, a->sum_nll_base2, a->count, &ln_b, &err_b);
    s->ppl = exp(ln_q);
    s->ppl_err = s->ppl * err_q;
    s->ppl_base = exp(ln_b);
    s->ppl_base_err = s->ppl_base * err_b;
    s->ln_ppl_cov = mean_cov(a->sum_nll, a->sum_nll_base, a->sum_nll_nll_base, a->count);
    s->ln_ppl_cor = s->ln_ppl_cov / (err_q * err_b); /* NAN when an error is 0, as in llama.cpp */
    s->ln_ratio = ln_q - ln_b;
    s->ln_ratio_err = sqrt0(err_q * err_q + err_b * err_b - 2 * s->ln_ppl_cov);
    s->ratio = exp(s->ln_ratio);
    s->ratio_err = s->ratio * s->ln_ratio_err;
    s->diff = s->ppl - s->ppl_base;
    s->diff_err = sqrt0(s->ppl_err * s->ppl_err + s->ppl_base_err * s->ppl_base_err -
                        2 * s->ppl * s->ppl_base * s->ln_ppl_cov);
}

void met_kld_moments(const met_kld *a, met_kld_summary *s) {
    memset(s, 0, sizeof *s);
    s->count = a->count;
    s->kld_max = s->kld_median = s->kld_min = NAN;
    s->dp_max = s->dp_median = s->dp_min = NAN;
    for (int i = 0; i < MET_KLD_N_KLD_PCT; i++) s->kld_pct[i] = NAN;
    for (int i = 0; i < MET_KLD_N_DP_PCT; i++) s->dp_pct[i] = NAN;
    if (a->count == 0) {
        s->ppl = s->ppl_base = s->kld = s->dp = s->dp_rms = s->same_top = NAN;
        return;
    }
    perplexity_figures(a, s);
    mean_err(a->sum_kld, a->sum_kld2, a->count, &s->kld, &s->kld_err);
    mean_err(a->sum_dp, a->sum_dp2, a->count, &s->dp, &s->dp_err);
    double mse, mse_err;
    mean_err(a->sum_dp2, a->sum_dp4, a->count, &mse, &mse_err);
    s->dp_rms = sqrt(mse);
    s->dp_rms_err = s->dp_rms > 0 ? 0.5 / s->dp_rms * mse_err : 0;
    s->same_top = (double)a->n_same_top / (double)a->count;
    s->same_top_err = a->count > 1 ? sqrt(s->same_top * (1 - s->same_top) / (double)(a->count - 1)) : 0;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The middle entry of sorted[0..n), or the mean of the two middle ones. */
static double median_of(const double *sorted, size_t n) {
    return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2] + sorted[n / 2 - 1]);
}

/* Sorts a copy of x[0..n) and fills max, median, min and the percentiles. */
static int order_stats(const double *x, size_t n, const double *fr, int n_fr, double *mx, double *med, double *mn,
                       double *pct) {
    double *v = malloc(n * sizeof *v);
    if (!v) return kv_errorf(KV_ENOMEM, "met_kld_summarize: out of memory for %zu positions", n);
    memcpy(v, x, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_double);
    *mx = v[n - 1];
    *mn = v[0];
    *med = median_of(v, n);
    for (int i = 0; i < n_fr; i++) pct[i] = met_kld_percentile(v, n, fr[i]);
    free(v);
    return KV_OK;
}

int met_kld_summarize(const met_kld *a, met_kld_summary *s) {
    met_kld_moments(a, s);
    if (a->count == 0) return KV_OK;
    int rc = order_stats(a->kld, a->count, met_kld_kld_fractions, MET_KLD_N_KLD_PCT, &s->kld_max, &s->kld_median,
                         &s->kld_min, s->kld_pct);
    if (rc) return rc;
    return order_stats(a->dp, a->count, met_kld_dp_fractions, MET_KLD_N_DP_PCT, &s->dp_max, &s->dp_median,
                       &s->dp_min, s->dp_pct);
}

/* ----------------------------------------------------------- printing */

void met_kld_print_chunk_header(FILE *f) {
    fprintf(f, "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence"
               "              \xce\x94p RMS            Same top p\n");
}

void met_kld_print_chunk(FILE *f, int chunk, const met_kld_summary *s) {
    fprintf(f, "%4d", chunk);
    fprintf(f, "    %9.4f \xc2\xb1 %9.4f", s->ppl, s->ppl_err);
    fprintf(f, "    %10.5f \xc2\xb1 %10.5f", s->ln_ratio, s->ln_ratio_err);
    fprintf(f, "    %10.5f \xc2\xb1 %10.5f", s->kld, s->kld_err);
    fprintf(f, "    %6.3f \xc2\xb1 %6.3f %%", 100 * s->dp_rms, 100 * s->dp_rms_err);
    fprintf(f, "    %6.3f \xc2\xb1 %6.3f %%\n", 100 * s->same_top, 100 * s->same_top_err);
}

static void print_perplexity_block(FILE *f, const met_kld_summary *s) {
    fprintf(f, "====== Perplexity statistics ======\n");
    fprintf(f, "Mean PPL(Q)                   : %10.6f \xc2\xb1 %10.6f\n", s->ppl, s->ppl_err);
    fprintf(f, "Mean PPL(base)                : %10.6f \xc2\xb1 %10.6f\n", s->ppl_base, s->ppl_base_err);
    fprintf(f, "Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100 * s->ln_ppl_cor);
    fprintf(f, "Mean ln(PPL(Q)/PPL(base))     : %10.6f \xc2\xb1 %10.6f\n", s->ln_ratio, s->ln_ratio_err);
    fprintf(f, "Mean PPL(Q)/PPL(base)         : %10.6f \xc2\xb1 %10.6f\n", s->ratio, s->ratio_err);
    fprintf(f, "Mean PPL(Q)-PPL(base)         : %10.6f \xc2\xb1 %10.6f\n", s->diff, s->diff_err);
}

static void print_kld_block(FILE *f, const met_kld_summary *s) {
    fprintf(f, "====== KL divergence statistics ======\n");
    fprintf(f, "Mean    KLD: %10.6f \xc2\xb1 %10.6f\n", s->kld, s->kld_err);
    fprintf(f, "Maximum KLD: %10.6f\n", s->kld_max);
    /* the fractions above the median, the median, then those below */
    for (int i = 0; i < MET_KLD_N_KLD_PCT; i++) {
        if (i == MET_KLD_N_KLD_PCT / 2) fprintf(f, "Median  KLD: %10.6f\n", s->kld_median);
        fprintf(f, "%4.1f%%   KLD: %10.6f\n", 100 * met_kld_kld_fractions[i], s->kld_pct[i]);
    }
    fprintf(f, "Minimum KLD: %10.6f\n", s->kld_min);
}

static void print_dp_block(FILE *f, const met_kld_summary *s) {
    fprintf(f, "====== Token probability statistics ======\n");
    fprintf(f, "Mean    \xce\x94p: %6.3f \xc2\xb1 %5.3f %%\n", 100 * s->dp, 100 * s->dp_err);
    fprintf(f, "Maximum \xce\x94p: %6.3f%%\n", 100 * s->dp_max);
    for (int i = 0; i < MET_KLD_N_DP_PCT; i++) {
        if (i == MET_KLD_N_DP_PCT / 2) fprintf(f, "Median  \xce\x94p: %6.3f%%\n", 100 * s->dp_median);
        fprintf(f, "%4.1f%%   \xce\x94p: %6.3f%%\n", 100 * met_kld_dp_fractions[i], 100 * s->dp_pct[i]);
    }
    fprintf(f, "Minimum \xce\x94p: %6.3f%%\n", 100 * s->dp_min);
    fprintf(f, "RMS \xce\x94p    : %6.3f \xc2\xb1 %5.3f %%\n", 100 * s->dp_rms, 100 * s->dp_rms_err);
    fprintf(f, "Same top p: %6.3f \xc2\xb1 %5.3f %%\n", 100 * s->same_top, 100 * s->same_top_err);
}

void met_kld_print(FILE *f, const met_kld_summary *s) {
    /* llama.cpp's rule: no statistics on fewer than 100 values */
    if (s->count < 100) {
        fprintf(f, "(%zu scored positions: fewer than 100, no statistics)\n", s->count);
        return;
    }
    print_perplexity_block(f, s);
    fprintf(f, "\n");
    print_kld_block(f, s);
    fprintf(f, "\n");
    print_dp_block(f, s);
}
