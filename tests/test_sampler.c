/* test_sampler.c - greedy, temperature, top-k and top-p sampling. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "kv_error.h"
#include "sampler.h"

static void test_argmax_ties_lowest(void **state) {
    (void)state;
    float x[5] = {1, 3, 2, 3, -1};
    assert_int_equal(kv_argmax(x, 5), 1);
    kv_sampler *s;
    kv_sampler_params p = kv_sampler_default_params();
    assert_int_equal(kv_sampler_new(&p, 5, &s), KV_OK);
    assert_int_equal(kv_sampler_sample(s, x), 1);
    kv_sampler_free(s);
}

static void test_bad_params(void **state) {
    (void)state;
    kv_sampler *s;
    kv_sampler_params p = kv_sampler_default_params();
    p.temperature = -1;
    assert_int_equal(kv_sampler_new(&p, 5, &s), KV_EINVAL);
    p = kv_sampler_default_params();
    p.top_p = 0;
    assert_int_equal(kv_sampler_new(&p, 5, &s), KV_EINVAL);
    p.top_p = 1.5f;
    assert_int_equal(kv_sampler_new(&p, 5, &s), KV_EINVAL);
    p = kv_sampler_default_params();
    p.top_k = -2;
    assert_int_equal(kv_sampler_new(&p, 5, &s), KV_EINVAL);
}

/* Frequencies over many draws follow softmax(logits / T). */
static void test_temperature_distribution(void **state) {
    (void)state;
    float logits[4] = {0.0f, 1.0f, 2.0f, 0.5f};
    kv_sampler_params p = kv_sampler_default_params();
    p.temperature = 2.0f;
    p.seed = 7;
    kv_sampler *s;
    assert_int_equal(kv_sampler_new(&p, 4, &s), KV_OK);
    int count[4] = {0};
    const int N = 200000;
    for (int i = 0; i < N; i++) count[kv_sampler_sample(s, logits)]++;
    double z = 0, pr[4];
    for (int i = 0; i < 4; i++) z += exp(logits[i] / 2.0);
    for (int i = 0; i < 4; i++) {
        pr[i] = exp(logits[i] / 2.0) / z;
        double sd = sqrt(pr[i] * (1 - pr[i]) / N);
        assert_true(fabs(count[i] / (double)N - pr[i]) < 5 * sd);
    }
    kv_sampler_free(s);
}

/* top-k 2 never draws outside the two best; top-p 0.5 on these logits
 * keeps only the best token (its mass alone is above 0.5). */
static void test_top_k_top_p(void **state) {
    (void)state;
    float logits[5] = {0.1f, 3.0f, 2.5f, -1.0f, 0.0f};
    kv_sampler_params p = kv_sampler_default_params();
    p.temperature = 1.0f;
    p.top_k = 2;
    kv_sampler *s;
    assert_int_equal(kv_sampler_new(&p, 5, &s), KV_OK);
    int seen[5] = {0};
    for (int i = 0; i < 20000; i++) seen[kv_sampler_sample(s, logits)]++;
    assert_true(seen[1] > 0 && seen[2] > 0);
    assert_int_equal(seen[0] + seen[3] + seen[4], 0);
    kv_sampler_free(s);

    p.top_k = 0;
    p.top_p = 0.5f;
    assert_int_equal(kv_sampler_new(&p, 5, &s), KV_OK);
    for (int i = 0; i < 2000; i++) assert_int_equal(kv_sampler_sample(s, logits), 1);
    kv_sampler_free(s);
}

/* The same seed gives the same stream; reset restarts it. */
static void test_seeded(void **state) {
    (void)state;
    float logits[8] = {0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f};
    kv_sampler_params p = kv_sampler_default_params();
    p.temperature = 1.0f;
    p.seed = 123;
    kv_sampler *a, *b;
    assert_int_equal(kv_sampler_new(&p, 8, &a), KV_OK);
    assert_int_equal(kv_sampler_new(&p, 8, &b), KV_OK);
    int32_t first[64];
    int differ = 0;
    for (int i = 0; i < 64; i++) {
        first[i] = kv_sampler_sample(a, logits);
        assert_int_equal(first[i], kv_sampler_sample(b, logits));
        differ |= first[i] != first[0];
    }
    assert_true(differ);
    kv_sampler_reset(a);
    for (int i = 0; i < 64; i++) assert_int_equal(kv_sampler_sample(a, logits), first[i]);
    kv_sampler_free(a);
    kv_sampler_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax_ties_lowest),       cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_temperature_distribution), cmocka_unit_test(test_top_k_top_p),
        cmocka_unit_test(test_seeded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
