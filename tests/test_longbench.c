/* test_longbench.c - LongBench's scorers (metrics/longbench.c) on values
 * worked out by hand from the rules of LongBench/metrics.py and eval.py,
 * the rouge package's rouge_score.py and fuzzywuzzy's fuzz.ratio (each
 * case's comment gives the working); and its tasks as pred.py runs them
 * (datasets/longbench.c): the task table, rows read from small JSONL files
 * written here, str.format, Python's UTF-8 replacement and the middle
 * truncation through a byte-per-token codec. The comparison against the
 * Python code itself is in docs/LONGBENCH.md; no Python runs here. */
#include "test_util.h" /* first: it sets _POSIX_C_SOURCE */

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
#include "../datasets/longbench.h"
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

/* ------------------------------------------------------- pred.py's side */

static void test_lb_table(void **state) {
    (void)state;
    assert_int_equal(ds_lb_task_count(), 21);
    int no_chat = 0, stops = 0, in_e = 0;
    for (int i = 0; i < ds_lb_task_count(); i++) {
        const ds_lb_task *t = ds_lb_task_at(i);
        assert_ptr_equal(ds_lb_task_find(t->name), t);
        /* the datasets' table and eval.py's (metrics/) agree on each scorer */
        const met_lb_task *m = met_lb_task_find(t->name);
        assert_non_null(m);
        assert_string_equal(met_lb_scorer_name(m->scorer), t->scorer);
        assert_int_equal(m->chinese, !strcmp(t->language, "zh"));
        assert_non_null(strstr(t->prompt, "{context}"));
        no_chat += t->no_chat;
        stops += t->newline_stop;
        in_e += t->in_e;
    }
    assert_null(ds_lb_task_find("multi_news_e"));
    /* pred.py's list: trec, triviaqa, samsum, lsht, lcc, repobench-p */
    assert_int_equal(no_chat, 6);
    const char *nc[] = {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"};
    for (int i = 0; i < 6; i++) assert_true(ds_lb_task_find(nc[i])->no_chat);
    assert_int_equal(stops, 1);
    assert_true(ds_lb_task_find("samsum")->newline_stop);
    assert_int_equal(in_e, 13); /* pred.py's LongBench-E list */
    assert_false(ds_lb_task_find("narrativeqa")->in_e);
    /* dataset2maxlen.json */
    assert_int_equal(ds_lb_task_find("narrativeqa")->max_new_tokens, 128);
    assert_int_equal(ds_lb_task_find("hotpotqa")->max_new_tokens, 32);
    assert_int_equal(ds_lb_task_find("multi_news")->max_new_tokens, 512);
    assert_int_equal(ds_lb_task_find("trec")->max_new_tokens, 64);
    assert_int_equal(ds_lb_task_find("samsum")->max_new_tokens, 128);
    /* dataset2prompt.json, as written there (two spaces and a typo kept) */
    assert_string_equal(ds_lb_task_find("multi_news")->prompt,
                        "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n"
                        "{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:");
    assert_string_equal(ds_lb_task_find("lcc")->prompt, "Please complete the code given below. \n{context}Next line of code:\n");
    assert_non_null(strstr(ds_lb_task_find("narrativeqa")->prompt, "Answer the question asconcisely as you can"));
    assert_ptr_equal(ds_lb_task_find("musique")->prompt, ds_lb_task_find("hotpotqa")->prompt);
    assert_int_equal(ds_lb_model_len_count(), 8);
    assert_string_equal(ds_lb_model_len_at(0)->model, "llama2-7b-chat-4k");
    assert_int_equal(ds_lb_model_len_at(0)->max_length, 3500);
    char p[64];
    assert_int_equal(ds_lb_data_path("/d", ds_lb_task_find("trec"), 1, p, sizeof p), KV_OK);
    assert_string_equal(p, "/d/trec_e.jsonl");
    assert_int_equal(ds_lb_data_path("/d", ds_lb_task_find("trec"), 0, p, sizeof p), KV_OK);
    assert_string_equal(p, "/d/trec.jsonl");
    assert_int_equal(ds_lb_data_path("/d", ds_lb_task_find("trec"), 0, p, 8), KV_EINVAL);
}

/* Three rows: two good (answers with a newline inside; all_classes null and
 * a list; no _id), one bad (answers a string). */
static const char LB_ROWS[] =
    "{\"input\": \"Q1\", \"context\": \"C {x} 1\", \"answers\": [\"a\\nb\", \"c\"], \"length\": 4500, "
    "\"all_classes\": null, \"language\": \"en\", \"_id\": \"id1\"}\n"
    "\n"
    "{\"input\": \"Q2\", \"context\": \"C2\", \"answers\": \"oops\", \"length\": 1, \"all_classes\": null}\n"
    "{\"input\": \"\", \"context\": \"C3\", \"answers\": [\"Location\"], \"length\": 9000.0, "
    "\"all_classes\": [\"Location\", \"Human being\"]}\n";

static void test_lb_load(void **state) {
    (void)state;
    char dir[64], path[128];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/trec.jsonl", dir);
    assert_int_equal(tu_write(path, LB_ROWS, strlen(LB_ROWS)), 0);
    ds_set set;
    ds_load_params lp = {.path = path, .bad_rows = DS_BAD_SKIP};
    assert_int_equal(ds_lb_load(&lp, &set), KV_OK);
    assert_int_equal(set.n, 2);
    assert_int_equal(set.skipped, 1);
    const ds_sample *a = &set.s[0], *b = &set.s[1];
    assert_string_equal(a->id, "id1");
    assert_string_equal(b->id, "line4"); /* no _id: its line (the blank line 2 counts) */
    assert_string_equal(ds_sample_field(a, "context"), "C {x} 1");
    assert_string_equal(ds_sample_field(a, "input"), "Q1");
    assert_string_equal(ds_sample_field(a, "language"), "en");
    assert_string_equal(ds_sample_field(b, "language"), "");
    assert_string_equal(a->reference, "a\nb\nc");
    assert_int_equal(a->length, 4500);
    assert_int_equal(b->length, 9000);
    char **items;
    int n;
    assert_int_equal(ds_lb_strings(a, "answers", &items, &n), KV_OK);
    assert_int_equal(n, 2);
    assert_string_equal(items[0], "a\nb"); /* kept whole, not split at its newline */
    assert_string_equal(items[1], "c");
    ds_lb_strings_free(items, n);
    assert_int_equal(ds_lb_strings(a, "all_classes", &items, &n), KV_OK);
    assert_int_equal(n, 0);
    assert_null(items);
    assert_int_equal(ds_lb_strings(b, "all_classes", &items, &n), KV_OK);
    assert_int_equal(n, 2);
    assert_string_equal(items[1], "Human being");
    ds_lb_strings_free(items, n);
    assert_int_equal(ds_lb_strings(b, "input", &items, &n), KV_EFORMAT); /* not JSON */
    assert_non_null(strstr(kv_last_error(), "line4"));
    /* str.format: {x} inside the context stays as it is */
    char *text = NULL;
    assert_int_equal(ds_lb_format(ds_lb_task_find("trec"), a, &text), KV_OK);
    assert_string_equal(text, "Please determine the type of the question below. Here are some examples of questions.\n\n"
                              "C {x} 1\nQ1");
    free(text);
    assert_int_equal(ds_lb_format(ds_lb_task_find("lcc"), b, &text), KV_OK);
    assert_string_equal(text, "Please complete the code given below. \nC3Next line of code:\n");
    free(text);
    ds_set_free(&set);
    /* bad rows fatal: the error names the file and line */
    lp.bad_rows = DS_BAD_FAIL;
    assert_int_equal(ds_lb_load(&lp, &set), KV_EFORMAT);
    assert_non_null(strstr(kv_last_error(), "trec.jsonl:3"));
    assert_non_null(strstr(kv_last_error(), "answers"));
    /* samples = 1 stops after the first row */
    lp.bad_rows = DS_BAD_SKIP;
    lp.max_samples = 1;
    assert_int_equal(ds_lb_load(&lp, &set), KV_OK);
    assert_int_equal(set.n, 1);
    ds_set_free(&set);
    tu_rmdir(dir);
}

/* Python's bytes.decode('utf-8', 'replace'): one U+FFFD per maximal
 * invalid subpart; SentencePiece's decoder (per_byte): one per byte. */
static void utf8_at(const char *in, size_t len, int per_byte, const char *want, int line) {
    char *got = NULL;
    size_t n;
    assert_int_equal(ds_lb_utf8_replace(in, len, per_byte, &got, &n), KV_OK);
    if (n != strlen(want) || memcmp(got, want, n)) {
        print_error("line %d: utf8_replace gave \"%s\", expected \"%s\"\n", line, got, want);
        free(got);
        fail();
    }
    free(got);
}
#define UTF8(in, want) utf8_at((in), sizeof(in) - 1, 0, (want), __LINE__)
#define UTF8_SP(in, want) utf8_at((in), sizeof(in) - 1, 1, (want), __LINE__)
#define FFFD "\xEF\xBF\xBD"

static void test_lb_utf8(void **state) {
    (void)state;
    UTF8("", "");
    UTF8("ab\xC3\xA9", "ab\xC3\xA9");                 /* valid: as is */
    UTF8("\xE4\xB8" "A", FFFD "A");                   /* a valid prefix of 2 is one subpart */
    UTF8("\xF0\x9F\x98", FFFD);                       /* cut at the end: one */
    UTF8("\xED\xA0\x80", FFFD FFFD FFFD);             /* a surrogate: ED never takes A0 */
    UTF8("\xC0\xAF", FFFD FFFD);                      /* overlong lead bytes are never valid */
    UTF8("\xF4\x90\x80\x80", FFFD FFFD FFFD FFFD);    /* past U+10FFFF */
    UTF8("\xE0\x80", FFFD FFFD);                      /* E0 takes A0..BF */
    UTF8("a\x80" "b\xFF", "a" FFFD "b" FFFD);         /* stray continuation, FF */
    UTF8("\xF0\x90\x80" "\xF0\x90\x80\x80", FFFD "\xF0\x90\x80\x80");
    /* per byte: a cut character gives one U+FFFD per byte it kept */
    UTF8_SP("ab\xC3\xA9", "ab\xC3\xA9");
    UTF8_SP("\xE4\xB8" "A", FFFD FFFD "A");
    UTF8_SP("\xF0\x9F\x98", FFFD FFFD FFFD);
    UTF8_SP("\xF0\x90\x80" "\xF0\x90\x80\x80", FFFD FFFD FFFD "\xF0\x90\x80\x80");
    UTF8_SP("\xED\xA0\x80", FFFD FFFD FFFD);
}

/* A tokenizer of one token per byte (id = the byte), BOS = 256 in front,
 * decode = the bytes with BOS skipped: truncation's rule stands bare. */
typedef struct byte_codec {
    int32_t ids[256];
    int calls;
} byte_codec;

static int64_t byte_encode(void *user, const char *text, size_t len, const int32_t **ids) {
    byte_codec *b = user;
    b->calls++;
    if (len + 1 > 256) return KV_EINVAL;
    b->ids[0] = 256;
    for (size_t i = 0; i < len; i++) b->ids[i + 1] = (unsigned char)text[i];
    *ids = b->ids;
    return (int64_t)len + 1;
}

static int byte_decode(void *user, const int32_t *ids, int64_t n, char **out, size_t *len) {
    (void)user;
    *out = malloc((size_t)n + 1);
    *len = 0;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] != 256) (*out)[(*len)++] = (char)ids[i];
    (*out)[*len] = 0;
    return KV_OK;
}

static void cut_at(const char *prompt, int32_t max_length, int per_byte, const char *want, int want_cut, int line) {
    byte_codec bc = {0};
    ds_lb_codec c = {byte_encode, byte_decode, &bc, per_byte};
    char *got = NULL;
    int64_t n = 0;
    int cut = -1;
    assert_int_equal(ds_lb_truncate(&c, prompt, max_length, &got, &n, &cut), KV_OK);
    assert_int_equal(n, (int64_t)strlen(prompt) + 1); /* BOS counted */
    if (strcmp(got, want) || cut != want_cut) {
        print_error("line %d: truncate(\"%s\", %d) = \"%s\" (cut %d), expected \"%s\" (cut %d)\n", line, prompt,
                    max_length, got, cut, want, want_cut);
        free(got);
        fail();
    }
    free(got);
}
#define CUT(p, m, want, c) cut_at((p), (m), 0, (want), (c), __LINE__)
#define CUT_SP(p, m, want, c) cut_at((p), (m), 1, (want), (c), __LINE__)

static void test_lb_truncate(void **state) {
    (void)state;
    /* "abcdefghij" is 11 tokens with BOS */
    CUT("abcdefghij", 11, "abcdefghij", 0);  /* not over max_length: as is */
    CUT("abcdefghij", 100, "abcdefghij", 0);
    CUT("abcdefghij", 10, "abcdfghij", 1);  /* half 5: [BOS a b c d] -> "abcd", [f g h i j] */
    CUT("abcdefghij", 6, "abhij", 1);       /* half 3: [BOS a b] -> "ab", [h i j] */
    CUT("abcdefghij", 7, "abhij", 1);       /* half = int(7 / 2) = 3 */
    CUT("abcdefghij", 2, "j", 1);           /* half 1: [BOS] -> "", [j] */
    CUT("abcdefghij", 1, "abcdefghij", 1);  /* half 0: ids[:0] + ids[-0:], Python's whole list */
    /* a cut through a character's bytes: each half decoded alone, as Python text */
    CUT("a\xC3\xA9" "bcdef", 6, "a" FFFD "def", 1);
    CUT("abcd\xC3\xA9" "f", 4, "a" FFFD "f", 1);
    /* 3 bytes of 述 (E8 BF B0), the cut after 2: [BOS a E8 BF] + [x y z w] */
    CUT("a\xE8\xBF\xB0" "xyzw", 8, "a" FFFD "xyzw", 1);
    CUT_SP("a\xE8\xBF\xB0" "xyzw", 8, "a" FFFD FFFD "xyzw", 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lb_table),    cmocka_unit_test(test_lb_load),
        cmocka_unit_test(test_lb_utf8),     cmocka_unit_test(test_lb_truncate),
        cmocka_unit_test(test_normalize),   cmocka_unit_test(test_qa_f1),
        cmocka_unit_test(test_rouge),       cmocka_unit_test(test_rouge_recursion),
        cmocka_unit_test(test_classification), cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_fuzz),        cmocka_unit_test(test_tasks),
        cmocka_unit_test(test_rounding),    cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
