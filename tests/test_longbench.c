/* test_longbench.c - LongBench's scorers (metrics/longbench.c) on values
 * worked out by hand from the rules of LongBench/metrics.py and eval.py,
 * the rouge package's rouge_score.py and fuzzywuzzy's fuzz.ratio (each
 * case's comment gives the working). The comparison against the Python
 * code itself is in docs/LONGBENCH.md; no Python runs here. */
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
#include "../metrics/longbench.h"

static void near_at(double got, double want, const char *what, int line) {
    if (!(fabs(got - want) <= 1e-15)) {
        print_error("line %d: %s = %.17g, expected %.17g\n", line, what, got, want);
        fail();
    }
}
#define NEAR(got, want) near_at((got), (want), #got, __LINE__)

static void norm_at(const char *in, const char *want, int line) {
    char *got = NULL;
    assert_int_equal(met_lb_normalize_answer(in, &got), KV_OK);
    if (strcmp(got, want)) {
        print_error("line %d: normalize_answer(\"%s\") = \"%s\", expected \"%s\"\n", line, in, got, want);
        free(got);
        fail();
    }
    free(got);
}
#define NORM(in, want) norm_at((in), (want), __LINE__)

static double qa(const char *p, const char *g) {
    double s;
    assert_int_equal(met_lb_qa_f1(p, g, &s), KV_OK);
    return s;
}

static double rl(const char *p, const char *g) {
    double s;
    assert_int_equal(met_lb_rouge_l(p, g, MET_LB_ROUGE_RECON_FRAMES, &s, NULL), KV_OK);
    return s;
}

/* rouge_l_summary_level's F from its overlap and distinct-word counts */
static double rl_f(double llcs, double m_ref, double n_hyp) {
    double r = llcs / m_ref, p = llcs / n_hyp;
    return 2.0 * ((p * r) / (p + r + 1e-8));
}

static double cls(const char *p, const char *g, const char *const *c, int n) {
    double s;
    assert_int_equal(met_lb_classification(p, g, c, n, &s), KV_OK);
    return s;
}

static int fuzz(const char *a, const char *b) {
    int r;
    assert_int_equal(met_lb_fuzz_ratio(a, b, &r), KV_OK);
    return r;
}

/* ------------------------------------------------------------ qa_f1 */

static void test_normalize(void **state) {
    (void)state;
    /* lower, drop ' and !, "the" alone goes, spaces collapse */
    NORM("The Cat's  hat!", "cats hat");
    /* punctuation goes first, so "an-the" is one word "anthe"; "_" is punctuation too */
    NORM("an-the a_b", "anthe ab");
    /* é is a word character (\w), so "éthe" keeps its "the"; U+00A0 is white space */
    NORM("\xc3\xa9the the\xc2\xa0" "a", "\xc3\xa9the");
    /* the em dash is neither ASCII punctuation nor \w: "the" between two is a word */
    NORM("\xe2\x80\x94the\xe2\x80\x94", "\xe2\x80\x94 \xe2\x80\x94");
    /* final sigma: ΟΔΟΣ ends a word (ς); the lone Σ follows a space, not a cased letter (σ) */
    NORM("\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82 \xcf\x83");
    /* İ lowercases to two code points, i and U+0307 */
    NORM("\xc4\xb0", "i\xcc\x87");
    /* U+001C..U+001F separate words in str.split() */
    NORM("x\x1cy\x1f" "z", "x y z");
    NORM("", "");
    NORM("?!.", "");
}

static void test_qa_f1(void **state) {
    (void)state;
    /* "cat sat on mat" vs "cat on mat": 3 common of 4 and 3; P = 3/4, R = 1, F = 1.5 / 1.75 = 6/7 */
    NEAR(qa("The cat sat on the mat.", "a cat on a mat"), 6.0 / 7.0);
    /* Counter overlap: min(3, 1) = 1 common; P = 1/3, R = 1/2, F = (1/3) / (5/6) = 0.4 */
    NEAR(qa("cat cat cat", "cat dog"), 0.4);
    /* both normalize to nothing: no common token, 0 */
    NEAR(qa("the", "a"), 0.0);
    NEAR(qa("?!", "?!"), 0.0);
    NEAR(qa("", "cat"), 0.0);
    /* case folds away: "paris" both sides, F = 1 */
    NEAR(qa("PARIS", "Paris."), 1.0);
}

/* ------------------------------------------------------------ rouge */

static void test_rouge(void **state) {
    (void)state;
    /* identical: m = n = 3, all in the LCS: r = p = 1, F = 2 / (2 + 1e-8) */
    NEAR(rl("the cat sat", "the cat sat"), rl_f(3, 3, 3));
    NEAR(rl("the cat sat", "the cat sat"), 2.0 / (2.0 + 1e-8));
    /* no lowercasing: "The" and "the" differ; only "cat" in the LCS */
    NEAR(rl("The cat", "the cat"), rl_f(1, 2, 2));
    /* the package's docstring example: ref r = w1..w5, candidates c1 = w1 w2 w6 w7 w8 and
       c2 = w1 w3 w8 w9 w5; the union of LCS words is w1 w2 w3 w5 (4); m = 5, n = 8 distinct */
    NEAR(rl("w1 w2 w6 w7 w8. w1 w3 w8 w9 w5", "w1 w2 w3 w4 w5"), rl_f(4, 5, 8));
    /* distinct words: "a a a" has n = 1 */
    NEAR(rl("a a a", "a"), rl_f(1, 1, 1));
    /* the ValueError cases score 0: no sentence on a side ("" and "..." have none) */
    NEAR(rl("...", "x"), 0.0);
    NEAR(rl("x", ""), 0.0);
    /* a piece of white space only is the word "": pred words {x, ""}, n = 2 */
    NEAR(rl("x. .", "x"), rl_f(1, 1, 2));
    /* the backtrack's tie rule: "a b" vs "b a" at (2, 2) has table[1][2] = table[2][1] = 1, not greater,
       so it goes left and takes "b"; ref's second sentence "b" takes "b" again: the union is {b},
       llcs = 1 of m = n = 2 (taking "a" first would have made it 2) */
    NEAR(rl("b a", "a b. b"), rl_f(1, 2, 2));
}

/* ref "a b" against "a x0 .. x(J-1)": the backtrack walks left J times, up once, then the
   match: J + 3 calls of _recon; 991 fit under eval.py's stack (J = 988). */
static void test_rouge_recursion(void **state) {
    (void)state;
    for (int J = 987; J <= 989; J++) {
        size_t cap = 16 + (size_t)J * 6;
        char *hyp = malloc(cap);
        assert_non_null(hyp);
        size_t len = (size_t)snprintf(hyp, cap, "a");
        for (int i = 0; i < J; i++) len += (size_t)snprintf(hyp + len, cap - len, " x%d", i);
        double s;
        int rec;
        assert_int_equal(met_lb_rouge_l(hyp, "a b", MET_LB_ROUGE_RECON_FRAMES, &s, &rec), KV_OK);
        if (J <= 988) {
            assert_int_equal(rec, 0);
            NEAR(s, rl_f(1, 2, J + 1));
        } else {
            assert_int_equal(rec, 1); /* RecursionError: LongBench's except gives 0 */
            NEAR(s, 0.0);
        }
        assert_int_equal(met_lb_rouge_l(hyp, "a b", 0, &s, &rec), KV_OK); /* no limit */
        assert_int_equal(rec, 0);
        NEAR(s, rl_f(1, 2, J + 1));
        free(hyp);
    }
}

/* ------------------------------------------------------------ classification */

static void test_classification(void **state) {
    (void)state;
    static const char *const trec[] = {"Location", "Entity", "Human being", "Human"};
    /* matches [Human being, Human]; "Human" is inside the truth and not it: removed; 1/1 */
    NEAR(cls("Human being", "Human being", trec, 4), 1.0);
    /* truth not among the matches: 0 */
    NEAR(cls("Entity", "Location", trec, 4), 0.0);
    /* two classes match, neither inside the other: 1/2 */
    NEAR(cls("Location or Entity?", "Entity", trec, 4), 0.5);
    /* removal while iterating: [a, ab, abc]; i = 0 removes "a", the list shifts, i = 1 sees
       "abc" and "ab" is never looked at: [ab, abc], 1/2 */
    static const char *const abc[] = {"a", "ab", "abc"};
    NEAR(cls("abc", "abc", abc, 3), 0.5);
    /* duplicates: [b, b, b, ab]; i = 0 removes a "b" -> [b, b, ab]; i = 1 removes the first
       "b" -> [b, ab]; i = 2 ends the loop: 1/2 */
    static const char *const dup[] = {"b", "b", "b", "ab"};
    NEAR(cls("ab", "ab", dup, 4), 0.5);
    /* "" is in every string: matched, then removed as a part of the truth */
    static const char *const empty[] = {"", "Entity"};
    NEAR(cls("Entity", "Entity", empty, 2), 1.0);
    NEAR(cls("", "Entity", empty, 2), 0.0);
}

/* ------------------------------------------------------------ retrieval, count */

static void test_numbers(void **state) {
    (void)state;
    double s;
    /* numbers 12 and 3; one is the paragraph: 1/2 */
    assert_int_equal(met_lb_retrieval("Paragraph 12 or 3", "Paragraph 12", 0, &s), KV_OK);
    NEAR(s, 0.5);
    assert_int_equal(met_lb_retrieval("Paragraph 1", "Paragraph 12", 0, &s), KV_OK);
    NEAR(s, 0.0);
    assert_int_equal(met_lb_retrieval("", "Paragraph 12", 0, &s), KV_OK);
    NEAR(s, 0.0);
    /* re.findall finds "Paragraph 5" inside "PParagraph 5" first */
    assert_int_equal(met_lb_retrieval("5", "PParagraph 5, Paragraph 6", 0, &s), KV_OK);
    NEAR(s, 1.0);
    /* \d is Unicode: Arabic-Indic "١٢" is a number, but not the string "12": 1 of 2 */
    assert_int_equal(met_lb_retrieval("12 \xd9\xa1\xd9\xa2", "Paragraph 12", 0, &s), KV_OK);
    NEAR(s, 0.5);
    /* 段落3 */
    assert_int_equal(met_lb_retrieval("\xe6\xae\xb5\xe8\x90\xbd" "3", "\xe6\xae\xb5\xe8\x90\xbd" "3", 1, &s), KV_OK);
    NEAR(s, 1.0);
    /* no "Paragraph N" in the truth: Python's IndexError, an error here */
    assert_int_equal(met_lb_retrieval("4", "paragraph 4", 0, &s), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "Paragraph"));

    /* count: [3, 3] both right */
    assert_int_equal(met_lb_count("There are 3 paragraphs, 3 unique", "3", &s), KV_OK);
    NEAR(s, 1.0);
    /* "03" is not "3": 1 of 2 */
    assert_int_equal(met_lb_count("03 3", "3", &s), KV_OK);
    NEAR(s, 0.5);
    assert_int_equal(met_lb_count("three", "3", &s), KV_OK);
    NEAR(s, 0.0);
    assert_int_equal(met_lb_count("1 2 3 4", "4", &s), KV_OK);
    NEAR(s, 0.25);
}

/* ------------------------------------------------------------ code_sim */

static void test_fuzz(void **state) {
    (void)state;
    /* kitten/sitting: LCS "ittn" = 4, lengths 13, distance 13 - 8 = 5: 8/13 = 61.5 -> 62 */
    assert_int_equal(fuzz("kitten", "sitting"), 62);
    /* equal strings first (100, even empty), then an empty one (0) */
    assert_int_equal(fuzz("", ""), 100);
    assert_int_equal(fuzz("", "a"), 0);
    /* round half to even: LCS 1 of 16 code points, 2/16 = 12.5 -> 12; LCS 3: 37.5 -> 38 */
    assert_int_equal(fuzz("abcdefgh", "aijklmno"), 12);
    assert_int_equal(fuzz("abcdefgh", "abcijklm"), 38);
    /* code points, not bytes: "éa"/"ea" share "a" of 4 code points: 50 (bytes would give 40) */
    assert_int_equal(fuzz("\xc3\xa9" "a", "ea"), 50);

    double s;
    /* first line holding no `, # or //: "return x" (the one before has "//") */
    assert_int_equal(met_lb_code_sim("\n\n# c\n`x`\nreturn x // done\nreturn x\n", "return x", &s), KV_OK);
    NEAR(s, 1.0);
    /* no such line: "" against a non-empty truth is 0 */
    assert_int_equal(met_lb_code_sim("# only\na//b", "x = 1", &s), KV_OK);
    NEAR(s, 0.0);
    /* "" against "" is 100 */
    assert_int_equal(met_lb_code_sim("# only", "", &s), KV_OK);
    NEAR(s, 1.0);
    assert_int_equal(met_lb_code_sim("kitten", "sitting", &s), KV_OK);
    NEAR(s, 0.62);
}

/* ------------------------------------------------------------ eval.py */

static void test_tasks(void **state) {
    (void)state;
    int n;
    const met_lb_task *all = met_lb_tasks(&n);
    assert_int_equal(n, 21); /* eval.py's dataset2metric */
    for (int i = 0; i < n; i++) assert_ptr_equal(met_lb_task_find(all[i].name), &all[i]);
    assert_null(met_lb_task_find("nope"));
    const met_lb_task *trec = met_lb_task_find("trec"), *nqa = met_lb_task_find("narrativeqa");
    assert_int_equal(trec->scorer, MET_LB_CLASSIFICATION);
    assert_true(trec->first_line);
    assert_false(nqa->first_line);
    assert_int_equal(met_lb_task_find("lcc")->scorer, MET_LB_CODE_SIM);
    assert_int_equal(met_lb_task_find("samsum")->scorer, MET_LB_ROUGE);

    static const char *const classes[] = {"Location", "Human being"};
    static const char *const ans1[] = {"Location"};
    double s;
    /* trec keeps the first line: "Location" alone, 1/1 (the whole text would match both: 1/2) */
    assert_int_equal(met_lb_sample_score(trec, "\n\nLocation\nHuman being", ans1, 1, classes, 2, &s), KV_OK);
    NEAR(s, 1.0);
    /* the max over the answers: 0, 1 and 2/3 */
    static const char *const ans3[] = {"dog", "the cat", "cat dog"};
    assert_int_equal(met_lb_sample_score(nqa, "cat", ans3, 3, NULL, 0, &s), KV_OK);
    NEAR(s, 1.0);
    /* no answers: 0 */
    assert_int_equal(met_lb_sample_score(nqa, "cat", NULL, 0, NULL, 0, &s), KV_OK);
    NEAR(s, 0.0);
    /* the jieba tasks are refused by name */
    const char *zh[] = {"multifieldqa_zh", "dureader", "vcsum"};
    for (int i = 0; i < 3; i++) {
        const met_lb_task *t = met_lb_task_find(zh[i]);
        assert_true(met_lb_scorer_needs_jieba(t->scorer));
        assert_int_equal(met_lb_sample_score(t, "x", ans1, 1, NULL, 0, &s), KV_EUNSUPPORTED);
        assert_non_null(strstr(kv_last_error(), zh[i]));
        assert_non_null(strstr(kv_last_error(), "jieba"));
    }
}

static void test_rounding(void **state) {
    (void)state;
    /* Python's round(x, 2) rounds the exact binary value: 0.005 is 0.005000000000000000104 -> 0.01;
       0.125 is an exact tie -> even, 0.12; 2.675 is 2.67499999999999982236431605997495353221893310546875 */
    NEAR(met_lb_round2(0.005), 0.01);
    NEAR(met_lb_round2(0.125), 0.12);
    NEAR(met_lb_round2(2.675), 2.67);
    /* numpy's: 0.005 * 100 is exactly 0.5, rint -> 0; 0.015 * 100 = 1.5 -> 2 (Python gives 0.01) */
    NEAR(met_lb_np_round2(0.005), 0.0);
    NEAR(met_lb_np_round2(0.015), 0.02);
    NEAR(met_lb_round2(0.015), 0.01);

    /* scorer: 100 * 1 / 3 = 33.33... -> 33.33 */
    double sc[] = {1, 0, 0}, t;
    assert_int_equal(met_lb_task_score(sc, 3, &t), KV_OK);
    NEAR(t, 33.33);
    assert_int_equal(met_lb_task_score(sc, 0, &t), KV_EINVAL);

    /* numpy's pairwise sum of [1e16, 1 x 8]: the 8 partial sums give (1e16 + 2) + 4 = 1e16 + 6,
       then + 1 is a tie between 1e16 + 6 and + 8, which goes to the even 1e16 + 8; adding in
       order would lose every 1 (1e16 + 1 ties back to 1e16) */
    double big[9] = {1e16, 1, 1, 1, 1, 1, 1, 1, 1};
    NEAR(met_lb_np_mean(big, 9), (1e16 + 8) / 9);
    assert_true(isnan(met_lb_np_mean(big, 0)));

    /* scorer_e: lengths 3999 | 4000 | 8000 | 100 -> 0-4k {1, 0}, 4-8k {0.5}, 8k+ {0.25} */
    double s4[] = {1, 0.5, 0.25, 0}, l4[] = {3999, 4000, 8000, 100}, e[3];
    int c[3];
    assert_int_equal(met_lb_e_scores(s4, l4, 4, e, c), KV_OK);
    NEAR(e[0], 50), NEAR(e[1], 50), NEAR(e[2], 25);
    assert_int_equal(c[0], 2), assert_int_equal(c[1], 1), assert_int_equal(c[2], 1);
    /* an empty bucket is NaN, as np.mean([]) */
    double l2[] = {100, 200};
    assert_int_equal(met_lb_e_scores(s4, l2, 2, e, c), KV_OK);
    NEAR(e[0], 75);
    assert_true(isnan(e[1]) && isnan(e[2]));
}

static void test_errors(void **state) {
    (void)state;
    double s;
    char *n = NULL;
    assert_int_equal(met_lb_qa_f1("caf\xc3", "x", &s), KV_EINVAL); /* truncated UTF-8 */
    assert_non_null(strstr(kv_last_error(), "UTF-8"));
    assert_int_equal(met_lb_normalize_answer("\xed\xa0\x80", &n), KV_EINVAL); /* a surrogate */
    assert_null(n);
    assert_int_equal(met_lb_rouge_l("\xc0\xaf", "x", 0, &s, NULL), KV_EINVAL); /* overlong */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),   cmocka_unit_test(test_qa_f1),
        cmocka_unit_test(test_rouge),       cmocka_unit_test(test_rouge_recursion),
        cmocka_unit_test(test_classification), cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_fuzz),        cmocka_unit_test(test_tasks),
        cmocka_unit_test(test_rounding),    cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
