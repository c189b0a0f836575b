/* kld.h - llama-perplexity's --kl-divergence statistics as an accumulator:
 * a compressed model or cache (Q) against a base (the full cache), scored
 * position by position on the same tokens.
 *
 * Each met_kld_add() takes one scored position: the base's and Q's logits
 * over the vocabulary and the token that follows. It keeps only scalars
 * for that position (KL divergence and Δp, for the percentiles) and running
 * sums; no logit row outlives the call, so a run of N positions holds
 * 16 N bytes. met_kld_summarize() turns the sums into every figure
 * llama-perplexity prints (tools/perplexity/perplexity.cpp, kl_divergence()),
 * with its formulas:
 *   - nll = -ln softmax(logits)[target], for Q and the base;
 *   - KLD = sum_i p_base(i) (ln p_base(i) - ln q(i));
 *   - Δp = q(target) - p_base(target);
 *   - same top: argmax of Q = argmax of the base (first index on ties);
 *   - a mean's ± is sqrt((E[x²] - E[x]²) / (n - 1)), 0 for n <= 10;
 *     the covariance of the two mean nlls is (E[ab] - E[a]E[b]) / (n - 1),
 *     0 for n < 10; ln(PPL(Q)/PPL(base)) = mean nll - mean nll_base with
 *     ± sqrt(σ_Q² + σ_base² - 2 cov); PPL figures carry it through exp
 *     (σ_ppl = ppl σ_ln); RMS Δp = sqrt(E[Δp²]) with ± σ(E[Δp²]) / (2 RMS);
 *     same top's ± is sqrt(p (1 - p) / (n - 1));
 *   - percentiles of the sorted values: r = f (n - 1), linear between
 *     entries floor(r) and floor(r) + 1; the median is the middle entry or
 *     the mean of the two middle ones.
 * Where kvbench differs on purpose: llama.cpp reads the base from a file
 * of log-probabilities quantized to 16 bits over the 16 nats below the
 * top one and skips base tokens below e^-16 in the KL sum; here both
 * distributions are exact (double sums over the float logits), so values
 * agree with llama.cpp's to about 1e-4 nats, not bit for bit.
 *
 * Depends on nothing but libc and the error codes of kv_error.h. */
#ifndef MET_KLD_H
#define MET_KLD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct met_kld met_kld;

/* The percentiles printed, as fractions of the sorted list (llama.cpp's). */
#define MET_KLD_N_KLD_PCT 8 /* 99.9 99 95 90 10 5 1 0.1 % */
#define MET_KLD_N_DP_PCT 10 /* 99.9 99 95 90 75 25 10 5 1 0.1 % */
extern const double met_kld_kld_fractions[MET_KLD_N_KLD_PCT];
extern const double met_kld_dp_fractions[MET_KLD_N_DP_PCT];

/* Every figure of the three blocks. A value and its ± are `x` and `x_err`;
 * probabilities (Δp, same top) are fractions, not percent. Figures that
 * need the sorted lists (max, min, median, *_pct) are filled by
 * met_kld_summarize only; met_kld_moments leaves them NAN. */
typedef struct met_kld_summary {
    size_t count; /* scored positions */
    /* Perplexity statistics */
    double ppl, ppl_err;           /* Mean PPL(Q) = exp(mean nll) */
    double ppl_base, ppl_base_err; /* Mean PPL(base) */
    double ln_ppl_cov;             /* Cov(mean nll, mean nll_base) */
    double ln_ppl_cor;             /* Cor(ln PPL(Q), ln PPL(base)), a fraction */
    double ln_ratio, ln_ratio_err; /* Mean ln(PPL(Q)/PPL(base)) */
    double ratio, ratio_err;       /* Mean PPL(Q)/PPL(base) */
    double diff, diff_err;         /* Mean PPL(Q)-PPL(base) */
    /* KL divergence statistics (nats) */
    double kld, kld_err;
    double kld_max, kld_median, kld_min;
    double kld_pct[MET_KLD_N_KLD_PCT]; /* at met_kld_kld_fractions */
    /* Token probability statistics */
    double dp, dp_err; /* mean Δp */
    double dp_max, dp_median, dp_min;
    double dp_pct[MET_KLD_N_DP_PCT]; /* at met_kld_dp_fractions */
    double dp_rms, dp_rms_err;
    double same_top, same_top_err;
} met_kld_summary;

/* A new, empty accumulator (NULL when out of memory). */
met_kld *met_kld_new(void);
void met_kld_free(met_kld *acc);

/* Adds one scored position: base_logits and logits [n_vocab] are the
 * base's and Q's next-token logits, target the token that came. Returns
 * KV_OK, KV_EINVAL (n_vocab < 1, target outside [0, n_vocab)) or
 * KV_ENOMEM; the accumulator is unchanged on error. */
int met_kld_add(met_kld *acc, const float *base_logits, const float *logits, int32_t n_vocab, int32_t target);

/* What met_kld_add computes of the base row alone: its log-normalizer
 * ln sum_i exp(x_i) and the first index of its largest logit. Fidelity
 * scores every policy against the same full-cache step, so the base's
 * part is computed once (met_kld_base_of) and handed to met_kld_add_base. */
typedef struct met_kld_base {
    double lse;
    int32_t top;
    const double *p; /* [n_vocab] the base's probabilities exp(x_i - lse), or NULL */
} met_kld_base;

/* out->p is NULL: a caller that keeps the probabilities (fidelity) fills
 * the struct itself, each p[i] = exp(x_i - lse) as kl_of would compute it. */
void met_kld_base_of(const float *base_logits, int32_t n_vocab, met_kld_base *out);

/* met_kld_add with the base's part given: b is met_kld_base_of of
 * base_logits, or the same figures computed by the caller (fidelity's,
 * with the engine's vectorised exponential), and q likewise for logits
 * (its p unused), or NULL: computed here. With both from met_kld_base_of
 * the figures are met_kld_add's, bit for bit. kld, when not NULL,
 * receives this position's KL divergence. Same return codes as
 * met_kld_add. */
int met_kld_add_base(met_kld *acc, const float *base_logits, const met_kld_base *b, const float *logits,
                     const met_kld_base *q, int32_t n_vocab, int32_t target, double *kld);

size_t met_kld_count(const met_kld *acc);

/* llama.cpp's percentile of sorted[0..n): fraction <= 0 gives the first,
 * >= 1 the last, else linear between entries floor(r) and floor(r) + 1 at
 * r = fraction (n - 1). NAN when n is 0. */
double met_kld_percentile(const double *sorted, size_t n, double fraction);

/* The figures that come from the running sums (cheap: for a running line
 * per chunk); the order statistics are NAN. */
void met_kld_moments(const met_kld *acc, met_kld_summary *out);

/* Every figure (sorts a copy of the per-position values). KV_OK or
 * KV_ENOMEM; an empty accumulator gives count 0 and NANs. */
int met_kld_summarize(const met_kld *acc, met_kld_summary *out);

/* llama-perplexity's running table: the header once, then one line per
 * chunk (from met_kld_moments after that chunk's positions). */
void met_kld_print_chunk_header(FILE *f);
void met_kld_print_chunk(FILE *f, int chunk, const met_kld_summary *s);

/* The three blocks (Perplexity, KL divergence, Token probability
 * statistics) in llama-perplexity's layout. Like llama.cpp, below 100
 * positions it prints no statistics, only a line saying so. */
void met_kld_print(FILE *f, const met_kld_summary *s);

#endif
