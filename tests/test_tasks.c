/* test_tasks.c - the task-kind and metric tables (harness/tasks.c): every
 * kind has its row where the enum says, its default template is one it
 * may read, every metric a kind shows by default is described, and the
 * metrics keep the directions and scales the report has always used. */
#include "test_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../datasets/template.h"
#include "../harness/tasks.h"

enum { N_KINDS = HX_TASK_LONGBENCH + 1 };

static void test_kind_rows(void **state) {
    (void)state;
    for (int k = 0; k < N_KINDS; k++) {
        const hx_task_kind_info *ki = hx_task_kind_get((hx_task_kind)k);
        assert_non_null(ki);
        assert_int_equal(ki->kind, k);
        assert_ptr_equal(hx_task_kind_find(ki->name), ki);
        assert_non_null(ki->load);
        /* the kinds the runner generates for have a scorer, the others not */
        int scored = k != HX_TASK_FIDELITY && k != HX_TASK_PERPLEXITY;
        assert_int_equal(ki->score != NULL, scored);
    }
    assert_null(hx_task_kind_get((hx_task_kind)N_KINDS));
    assert_null(hx_task_kind_find("summarisation"));
    assert_int_equal(hx_task_kind_get(HX_TASK_PERPLEXITY)->flags, HX_KIND_STREAM);
    assert_int_equal(hx_task_kind_get(HX_TASK_PASSKEY)->flags, HX_KIND_GRID);
    assert_int_equal(hx_task_kind_get(HX_TASK_NEEDLE)->flags, HX_KIND_GRID);
    /* the experiment parser's message, as it always read */
    assert_string_equal(hx_task_kind_names(),
                        "summarization, conversation, passkey, needle, ruler, fidelity, perplexity or longbench");
}

static void test_kind_templates(void **state) {
    (void)state;
    for (int k = 0; k < N_KINDS; k++) {
        const hx_task_kind_info *ki = hx_task_kind_get((hx_task_kind)k);
        const ds_template *tp = ds_template_find(ki->template_dflt);
        assert_non_null(tp);
        if (ki->template_kind) assert_string_equal(tp->kind, ki->template_kind);
    }
}

/* 1 if name has its own row (not the default one). */
static int described(const char *name) { return hx_metric_find(name)->name[0] != '*'; }

/* Every metric in a comma-separated list is described. */
static void check_list(const char *list) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *m = strtok_r(buf, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
        if (!described(m)) fail_msg("metric %s has no row in the metric table", m);
    }
}

static void test_kind_metrics_described(void **state) {
    (void)state;
    for (int k = 0; k < N_KINDS; k++) {
        const hx_task_kind_info *ki = hx_task_kind_get((hx_task_kind)k);
        check_list(ki->headline);
        check_list(ki->plots);
        check_list(ki->throughput);
        check_list(ki->report);
    }
}

static void test_metric_rows(void **state) {
    (void)state;
    const hx_metric_info *m;
    m = hx_metric_find("rougeLsum_f");
    assert_true(m->higher_is_better && !m->cost && m->scale == 100);
    assert_string_equal(m->label, " x100");
    assert_true(hx_metric_find("fid_rouge2_f")->scale == 100);
    assert_true(hx_metric_find("accuracy")->scale == 100);
    m = hx_metric_find("ppl");
    assert_true(!m->higher_is_better && !m->cost && m->scale == 1);
    /* a prefix row: every order statistic of the KL divergence */
    assert_false(hx_metric_find("fid_kl_p99")->higher_is_better);
    assert_false(hx_metric_find("fid_kl")->higher_is_better);
    /* a rate of empty answers: fewer is better */
    assert_false(hx_metric_find("ruler_empty")->higher_is_better);
    /* fid_dp_mean is signed, not a divergence: the fid_kl* row must not catch it */
    assert_true(hx_metric_find("fid_dp_mean")->higher_is_better);
    m = hx_metric_find("kv_bytes_steady_peak");
    assert_true(!m->higher_is_better && m->cost && m->scale == 1.0 / (1024 * 1024));
    assert_string_equal(m->label, " (MiB)");
    m = hx_metric_find("latency_p95_ms");
    assert_true(!m->higher_is_better && m->cost);
    m = hx_metric_find("decode_tokens_per_s");
    assert_true(m->higher_is_better && m->cost);
    /* budget_exceeded: lower is better, but a quality flag, not a cost */
    m = hx_metric_find("budget_exceeded");
    assert_true(!m->higher_is_better && !m->cost);
    m = hx_metric_find("no_such_metric");
    assert_true(m->higher_is_better && !m->cost && m->scale == 1);
    assert_string_equal(m->label, "");
}

static void test_metric_list(void **state) {
    (void)state;
    hx_metric_list l = {0};
    for (int i = 0; i < HX_MAX_METRICS + 3; i++) hx_metric_put(&l, "x", i);
    assert_int_equal(l.n, HX_MAX_METRICS);
    assert_int_equal(l.lost, 3); /* counted, so the write fails instead of dropping them */
    hx_metric_list r = {0};
    assert_int_equal(hx_metric_put_rouge(&r, NULL, "the cat sat", "the cat sat"), 0);
    assert_int_equal(r.n, 12);
    assert_string_equal(r.m[0].name, "rouge1_f");
    assert_true(r.m[0].value == 1.0);
    hx_metric_list f = {0};
    assert_int_equal(hx_metric_put_rouge(&f, "fid", "the cat sat", "a dog ran"), 0);
    assert_int_equal(f.n, 4);
    assert_string_equal(f.m[3].name, "fid_rougeLsum_f");
    assert_true(f.m[3].value == 0.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_rows),
        cmocka_unit_test(test_kind_templates),
        cmocka_unit_test(test_kind_metrics_described),
        cmocka_unit_test(test_metric_rows),
        cmocka_unit_test(test_metric_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
