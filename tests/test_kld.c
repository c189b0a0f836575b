/* test_kld.c - the --kl-divergence accumulator (metrics/kld.c) against
 * values worked out by hand and by an independent float64 script: KL of
 * small distributions, Δp, same top (first index on ties), the ln-PPL
 * ratio, llama.cpp's percentiles and median, every ± on a 12-position case,
 * and the printed layout. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"
#include "../metrics/kld.h"

static void near_at(double got, double want, double tol, const char *what, int line) {
    if (!(fabs(got - want) <= tol)) {
        print_error("line %d: %s = %.17g, expected %.17g (tol %g)\n", line, what, got, want, tol);
        fail();
    }
}
#define NEAR(got, want, tol) near_at((got), (want), (tol), #got, __LINE__)

/* One position, V = 3. Base logits {ln 2, 0, 0}: p = (1/2, 1/4, 1/4);
 * Q logits {0, 0, 0}: q = (1/3, 1/3, 1/3); target 1. By hand:
 *   KL = 1/2 ln(3/2) + 2 · 1/4 ln(3/4) = 0.0588915178281917 (python: math.log)
 *   nll_Q = ln 3, nll_base = ln 4, so PPL(Q) = 3, PPL(base) = 4,
 *   ln(PPL(Q)/PPL(base)) = ln 0.75, ratio 0.75, difference -1;
 *   Δp = 1/3 - 1/4 = 1/12; RMS Δp = 1/12;
 *   same top: the base's top is 0, Q's three-way tie goes to the first
 *   index, 0: same. Every ± is 0 (n <= 10). */
static void test_one_position(void **state) {
    (void)state;
    met_kld *a = met_kld_new();
    assert_non_null(a);
    const float base[3] = {(float)log(2.0), 0, 0}, q[3] = {0, 0, 0};
    assert_int_equal(met_kld_add(a, base, q, 3, 1), KV_OK);
    met_kld_summary s;
    assert_int_equal(met_kld_summarize(a, &s), KV_OK);
    assert_int_equal(s.count, 1);
    NEAR(s.kld, 0.5 * log(1.5) + 0.5 * log(0.75), 1e-7); /* ln 2 rounded to float: 1e-8 */
    NEAR(s.kld, 0.0588915178281917, 1e-7);
    NEAR(s.ppl, 3, 1e-12);
    NEAR(s.ppl_base, 4, 1e-6);
    NEAR(s.ln_ratio, log(0.75), 1e-7);
    NEAR(s.ratio, 0.75, 1e-7);
    NEAR(s.diff, -1, 1e-6);
    NEAR(s.dp, 1.0 / 12, 1e-7);
    NEAR(s.dp_rms, 1.0 / 12, 1e-7);
    NEAR(s.same_top, 1, 0);
    NEAR(s.kld_err, 0, 0);
    NEAR(s.ppl_err, 0, 0);
    NEAR(s.ln_ratio_err, 0, 0);
    NEAR(s.dp_max, 1.0 / 12, 1e-7);
    NEAR(s.kld_median, s.kld, 0);
    met_kld_free(a);
}

/* Q's top differs from the base's: Q logits {0, ln 3, 0} give (0.2, 0.6,
 * 0.2), top 1 against the base's 0. KL((1/2, 1/4, 1/4) || (1/5, 3/5, 1/5))
 * = 1/2 ln(5/2) + 1/4 ln(5/12) + 1/4 ln(5/4) = 0.3948... (by hand);
 * identical rows give KL 0 exactly and Δp 0. */
static void test_top_and_identical(void **state) {
    (void)state;
    met_kld *a = met_kld_new();
    const float base[3] = {(float)log(2.0), 0, 0}, q[3] = {0, (float)log(3.0), 0};
    assert_int_equal(met_kld_add(a, base, q, 3, 0), KV_OK);
    met_kld_summary s;
    met_kld_moments(a, &s);
    NEAR(s.kld, 0.5 * log(2.5) + 0.25 * log(5.0 / 12) + 0.25 * log(1.25), 1e-7);
    NEAR(s.same_top, 0, 0);
    NEAR(s.dp, 0.2 - 0.5, 1e-7);
    assert_true(isnan(s.kld_median)); /* moments leave the order statistics out */
    assert_int_equal(met_kld_add(a, base, base, 3, 2), KV_OK);
    assert_int_equal(met_kld_summarize(a, &s), KV_OK);
    NEAR(s.kld_min, 0, 0);
    NEAR(s.same_top, 0.5, 0);
    NEAR(s.dp_max, 0, 0); /* the second position's Δp is exactly 0 */
    met_kld_free(a);
}

/* llama.cpp's percentile on 1..10: r = f · 9, linear between neighbours. */
static void test_percentile_list(void **state) {
    (void)state;
    const double x[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    NEAR(met_kld_percentile(x, 10, 0.999), 9.991, 1e-12); /* r = 8.991 */
    NEAR(met_kld_percentile(x, 10, 0.5), 5.5, 1e-12);     /* r = 4.5 */
    NEAR(met_kld_percentile(x, 10, 0.25), 3.25, 1e-12);   /* r = 2.25 */
    NEAR(met_kld_percentile(x, 10, 0.1), 1.9, 1e-12);     /* r = 0.9 */
    NEAR(met_kld_percentile(x, 10, 0), 1, 0);
    NEAR(met_kld_percentile(x, 10, 1), 10, 0);
    NEAR(met_kld_percentile(x, 1, 0.3), 1, 0);
    assert_true(isnan(met_kld_percentile(x, 0, 0.5)));
}

/* Adds a position whose Δp is d: V = 2, base {0, 0} (p = 1/2), Q {a, 0}
 * with sigmoid(a) = 1/2 + d, target 0. a is rounded to float: Δp is d
 * to ~1e-8. */
static void add_dp(met_kld *acc, double d) {
    const float base[2] = {0, 0}, q[2] = {(float)log((0.5 + d) / (0.5 - d)), 0};
    assert_int_equal(met_kld_add(acc, base, q, 2, 0), KV_OK);
}

/* Δp order statistics through the accumulator: the 11 values -0.25, -0.20,
 * ..., 0.25 added out of order. Sorted, entry k is -0.25 + 0.05 k; by hand:
 * 99.9% r = 9.99 -> 0.2 + 0.99 · 0.05 = 0.2495; 90% r = 9 -> 0.2;
 * 75% r = 7.5 -> 0.125; median entry 5 -> 0; 25% r = 2.5 -> -0.125;
 * 0.1% r = 0.01 -> -0.2495. Then 4 values {0.1, -0.2, 0.3, 0}: the median
 * is the mean of the middle two, (0 + 0.1) / 2 = 0.05. */
static void test_dp_percentiles(void **state) {
    (void)state;
    met_kld *a = met_kld_new();
    const int order[11] = {7, 2, 10, 0, 5, 9, 1, 4, 8, 3, 6};
    for (int i = 0; i < 11; i++) add_dp(a, -0.25 + 0.05 * order[i]);
    met_kld_summary s;
    assert_int_equal(met_kld_summarize(a, &s), KV_OK);
    const double tol = 1e-7;
    NEAR(s.dp_max, 0.25, tol);
    NEAR(s.dp_min, -0.25, tol);
    NEAR(s.dp_median, 0, tol);
    NEAR(s.dp_pct[0], 0.2495, tol);  /* 99.9% */
    NEAR(s.dp_pct[3], 0.2, tol);     /* 90% */
    NEAR(s.dp_pct[4], 0.125, tol);   /* 75% */
    NEAR(s.dp_pct[5], -0.125, tol);  /* 25% */
    NEAR(s.dp_pct[9], -0.2495, tol); /* 0.1% */
    NEAR(s.dp, 0, tol);              /* symmetric */
    met_kld_free(a);

    a = met_kld_new();
    const double four[4] = {0.1, -0.2, 0.3, 0};
    for (int i = 0; i < 4; i++) add_dp(a, four[i]);
    assert_int_equal(met_kld_summarize(a, &s), KV_OK);
    NEAR(s.dp_median, 0.05, tol);
    met_kld_free(a);
}

/* 12 positions, V = 4, logits multiples of 1/4 (exact in float):
 *   base[i][j] = ((3i + 5j) mod 7) / 4,
 *   q[i][j]    = base[i][j] + (((i + 2j) mod 5) - 2) / 2,
 *   target[i]  = 7i mod 4.
 * Expected values from an independent float64 script of llama.cpp's
 * formulas (python: log-softmax per row, then sum/n, sqrt((E[x²] - E[x]²)
 * / (n - 1)), cov = (E[ab] - E[a]E[b]) / (n - 1), ...), printed %.17g. */
static void test_errors_twelve(void **state) {
    (void)state;
    met_kld *a = met_kld_new();
    for (int i = 0; i < 12; i++) {
        float b[4], q[4];
        for (int j = 0; j < 4; j++) {
            b[j] = (float)((3 * i + 5 * j) % 7) / 4;
            q[j] = b[j] + (float)((i + 2 * j) % 5 - 2) / 2;
        }
        assert_int_equal(met_kld_add(a, b, q, 4, (7 * i) % 4), KV_OK);
    }
    met_kld_summary s;
    assert_int_equal(met_kld_summarize(a, &s), KV_OK);
    assert_int_equal(s.count, 12);
    const double tol = 1e-12;
    NEAR(s.ppl, 7.2658749490618089, tol);
    NEAR(s.ppl_err, 2.7923976219951938, tol);
    NEAR(s.ppl_base, 5.1894443240722321, tol);
    NEAR(s.ppl_base_err, 0.74825395872669631, tol);
    NEAR(s.ln_ppl_cov, 0.052425211155025971, tol);
    NEAR(s.ln_ppl_cor, 0.94606871577703588, tol);
    NEAR(s.ln_ratio, 0.33656209843426099, tol);
    NEAR(s.ln_ratio_err, 0.25226781174505114, tol);
    NEAR(s.ratio, 1.4001258121910385, tol);
    NEAR(s.ratio_err, 0.35320667480919571, tol);
    NEAR(s.diff, 2.0764306249895768, tol);
    NEAR(s.diff_err, 2.0985456396249345, tol);
    NEAR(s.kld, 0.19615030243179332, tol);
    NEAR(s.kld_err, 0.023259070387255085, tol);
    NEAR(s.dp, 0.056000965087575211, tol);
    NEAR(s.dp_err, 0.050238369050594117, tol);
    NEAR(s.dp_rms, 0.17578094056023377, tol);
    NEAR(s.dp_rms_err, 0.035894124021244617, tol);
    NEAR(s.same_top, 5.0 / 12, tol);
    NEAR(s.same_top_err, 0.14864709750264077, tol);
    met_kld_free(a);
}

static void test_bad_input(void **state) {
    (void)state;
    met_kld *a = met_kld_new();
    const float x[2] = {0, 1};
    assert_int_equal(met_kld_add(a, x, x, 2, 2), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "target 2"));
    assert_int_equal(met_kld_add(a, x, x, 2, -1), KV_EINVAL);
    assert_int_equal(met_kld_add(a, x, x, 0, 0), KV_EINVAL);
    assert_int_equal(met_kld_count(a), 0);
    met_kld_summary s;
    assert_int_equal(met_kld_summarize(a, &s), KV_OK);
    assert_int_equal(s.count, 0);
    assert_true(isnan(s.kld) && isnan(s.ppl));
    met_kld_free(a);
}

/* Prints s to a string (a temporary file read back). */
static char *print_to_string(const met_kld_summary *s) {
    FILE *f = tmpfile();
    assert_non_null(f);
    met_kld_print(f, s);
    long n = ftell(f);
    rewind(f);
    char *b = calloc((size_t)n + 1, 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return b;
}

/* The layout: under 100 positions a note only; at 100, every line. 100
 * positions of identical rows (targets cycling over V = 3) give KLD 0,
 * Δp 0, same top 100%, PPL(Q) = PPL(base). */
static void test_print_layout(void **state) {
    (void)state;
    met_kld *a = met_kld_new();
    const float x[3] = {1, 0.5f, 0};
    for (int i = 0; i < 99; i++) assert_int_equal(met_kld_add(a, x, x, 3, i % 3), KV_OK);
    met_kld_summary s;
    assert_int_equal(met_kld_summarize(a, &s), KV_OK);
    char *out = print_to_string(&s);
    assert_non_null(strstr(out, "fewer than 100"));
    assert_null(strstr(out, "KLD"));
    free(out);
    assert_int_equal(met_kld_add(a, x, x, 3, 0), KV_OK);
    assert_int_equal(met_kld_summarize(a, &s), KV_OK);
    out = print_to_string(&s);
    const char *want[] = {
        "====== Perplexity statistics ======\n",
        "Cor(ln(PPL(Q)), ln(PPL(base))): 100.00%\n",
        "Mean ln(PPL(Q)/PPL(base))     :   0.000000 \xc2\xb1   0.000000\n",
        "Mean PPL(Q)/PPL(base)         :   1.000000 \xc2\xb1   0.000000\n",
        "====== KL divergence statistics ======\n",
        "Mean    KLD:   0.000000 \xc2\xb1   0.000000\n",
        "99.9%   KLD:   0.000000\n",
        "Median  KLD:   0.000000\n",
        " 0.1%   KLD:   0.000000\n",
        "Minimum KLD:   0.000000\n",
        "====== Token probability statistics ======\n",
        "Maximum \xce\x94p:  0.000%\n",
        "75.0%   \xce\x94p:  0.000%\n",
        "RMS \xce\x94p    :  0.000 \xc2\xb1 0.000 %\n",
        "Same top p: 100.000 \xc2\xb1 0.000 %\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(out, want[i])) {
            print_error("missing line: %s\nin:\n%s", want[i], out);
            fail();
        }
    free(out);
    met_kld_free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_position),   cmocka_unit_test(test_top_and_identical),
        cmocka_unit_test(test_percentile_list), cmocka_unit_test(test_dp_percentiles),
        cmocka_unit_test(test_errors_twelve),  cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_print_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
