/* test_ruler.c - RULER's synthetic tasks (datasets/ruler.c) and scorers
 * (metrics/ruler.c): for each task a fixed seed's sample has the structure
 * RULER's generator gives it (template text, needle and value formats, the
 * number of needles, keys, values and queries), its length is within one
 * haystack unit of the target with a word-count token counter, the readers
 * split RULER's and kvpress's files into the same fields, and hand-worked
 * scores (empty predictions, partial matches, case). */
#include "test_util.h"

#include <ctype.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../base/kv_error.h"
#include "../datasets/ruler.h"
#include "../datasets/template.h"
#include "../metrics/ruler.h"

static char tmpdir[256];
static char essays[512];

static int setup(void **state) {
    (void)state;
    const char *d = getenv("KVBENCH_DATA");
    snprintf(essays, sizeof essays, "%s/niah/paul_graham_essays", d && *d ? d : "../shared/data");
    return tu_mkdtemp(tmpdir, sizeof tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tu_rmdir(tmpdir);
    return 0;
}

/* The test's tokenizer: one token a whitespace-separated word. */
static int64_t count_words(void *user, const char *t, size_t n) {
    (void)user;
    int64_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)t[i]) && (i == 0 || isspace((unsigned char)t[i - 1]))) c++;
    return c;
}

static int count_of(const char *s, const char *pat) {
    int n = 0;
    for (const char *p = strstr(s, pat); p; p = strstr(p + 1, pat)) n++;
    return n;
}

static int n_lines(const char *s) { return *s ? count_of(s, "\n") + 1 : 0; }

static int is_number7(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return 0;
    return n == 7 && s[0] != '0';
}

static int is_uuid4(const char *s) {
    if (strlen(s) != 36 || s[14] != '4' || !strchr("89ab", s[19])) return 0;
    for (int i = 0; i < 36; i++)
        if ((i == 8 || i == 13 || i == 18 || i == 23) ? s[i] != '-' : !strchr("0123456789abcdef", s[i])) return 0;
    return 1;
}

static int is_word_key(const char *s) { /* word-word, lowercase */
    const char *dash = strchr(s, '-');
    if (!dash || dash == s || !dash[1] || strchr(dash + 1, '-')) return 0;
    for (const char *c = s; *c; c++)
        if (c != dash && !islower((unsigned char)*c)) return 0;
    return 1;
}

/* One sample of task at length L (units > 0: that haystack size). */
static void make(const char *task, int32_t L, int64_t units, const char *qa, ds_set *s) {
    ds_ruler_params p = {.task = task, .lengths = &L, .n_lengths = 1, .n_samples = 1, .seed = 7, .count = count_words,
                         .essay_dir = essays, .qa_path = qa, .units = units};
    int rc = ds_ruler_make(&p, s);
    if (rc) fprintf(stderr, "%s\n", kv_last_error());
    assert_int_equal(rc, KV_OK);
    assert_int_equal(s->n, 1);
}

static long field_num(const ds_sample *s, const char *name) { return atol(ds_sample_field(s, name)); }

/* The length search: the sample fits and one more unit (fwe: one more of
 * its steps) would not; the same seed gives the same sample. */
static void check_length(const char *task, int32_t L, const char *qa, const ds_set *s) {
    const ds_sample *x = &s->s[0];
    const ds_ruler_task *t = ds_ruler_task_find(task);
    long tokens = field_num(x, "tokens"), units = field_num(x, "units");
    char *full = NULL;
    size_t n = strlen(ds_sample_field(x, "context")) + strlen(ds_sample_field(x, "question")) + strlen(ds_sample_field(x, "answer_prefix"));
    assert_non_null(full = malloc(n + 1));
    snprintf(full, n + 1, "%s%s%s", ds_sample_field(x, "context"), ds_sample_field(x, "question"), ds_sample_field(x, "answer_prefix"));
    assert_int_equal(tokens, count_words(NULL, full, n) + t->max_new_tokens);
    free(full);
    assert_true(tokens <= L);
    long step = t->kind == DS_RULER_FWE ? (L - t->max_new_tokens) / 32 : 1;
    ds_set more, again;
    make(task, L, units + step, qa, &more);
    if (t->kind == DS_RULER_FWE) assert_true(field_num(&more.s[0], "tokens") >= L);
    else assert_true(field_num(&more.s[0], "tokens") > L);
    make(task, L, 0, qa, &again);
    assert_string_equal(ds_sample_field(&again.s[0], "context"), ds_sample_field(x, "context"));
    assert_string_equal(again.s[0].reference, x->reference);
    ds_set_free(&more);
    ds_set_free(&again);
    /* context + question is RULER's input: the reader's split finds the same cut */
    long qa_at, pa_at;
    size_t cl = strlen(ds_sample_field(x, "context"));
    char *input = malloc(cl + strlen(ds_sample_field(x, "question")) + 1);
    strcpy(input, ds_sample_field(x, "context"));
    strcat(input, ds_sample_field(x, "question"));
    assert_string_equal(ds_ruler_split(input, &qa_at, &pa_at), t->script);
    assert_int_equal(qa_at, (long)cl);
    assert_int_equal(pa_at, -1);
    free(input);
    assert_int_equal(field_num(x, "max_new_tokens"), t->max_new_tokens);
    assert_string_equal(ds_sample_field(x, "task"), task);
    assert_non_null(strstr(ds_sample_field(x, "source"), t->script));
}

/* ---------------------------------------------------------------- niah */

static void check_niah(const char *task, int32_t L) {
    const ds_ruler_task *t = ds_ruler_task_find(task);
    assert_non_null(t);
    ds_set s;
    make(task, L, 0, NULL, &s);
    const ds_sample *x = &s.s[0];
    const char *ctx = ds_sample_field(x, "context"), *q = ds_sample_field(x, "question"), *ap = ds_sample_field(x, "answer_prefix");
    int single = t->num_q * t->num_v == 1;
    const char *tv = t->type_v == DS_RULER_NUMBERS ? "number" : "uuid";
    char head[256], want[512];
    snprintf(head, sizeof head, "%s special magic %s%s %s hidden within the following text. Make sure to memorize it. "
             "I will quiz you about the %s%s afterwards.\n", single ? "A" : "Some", tv, single ? "" : "s",
             single ? "is" : "are", tv, single ? "" : "s");
    assert_memory_equal(ctx, head, strlen(head));
    assert_true(ctx[strlen(ctx) - 1] == '\n');
    /* the question names num_q keys (", and" before the last) */
    snprintf(want, sizeof want, "What %s the special magic %s%s for ", single ? "is" : "are all", tv, single ? "" : "s");
    assert_memory_equal(q, want, strlen(want));
    assert_int_equal(count_of(q, ", "), t->num_q > 1 ? t->num_q - 1 : 0);
    assert_int_equal(count_of(q, ", and "), t->num_q > 1);
    assert_string_equal(q + strlen(q) - strlen(" mentioned in the provided text?"), " mentioned in the provided text?");
    size_t qhead = strlen(want), qtail = strlen(" mentioned in the provided text?");
    char query[400];
    snprintf(query, sizeof query, "%.*s", (int)(strlen(q) - qhead - qtail), q + qhead);
    snprintf(want, sizeof want, " The special magic %s%s for %s mentioned in the provided text %s", tv, single ? "" : "s",
             query, single ? "is" : "are");
    assert_string_equal(ap, want);
    /* the answers: num_q x num_v values, each in its needle with a key the question asks */
    assert_int_equal(n_lines(x->reference), t->num_q * t->num_v);
    char *refs = strdup(x->reference);
    for (char *save = NULL, *v = strtok_r(refs, "\n", &save); v; v = strtok_r(NULL, "\n", &save)) {
        assert_true(t->type_v == DS_RULER_NUMBERS ? is_number7(v) : is_uuid4(v));
        char tail[128];
        snprintf(tail, sizeof tail, " is: %s.", v);
        const char *at = strstr(ctx, tail);
        assert_non_null(at);
        const char *line = at;
        while (line > ctx && strncmp(line, "One of the special magic ", 25)) line--;
        snprintf(want, sizeof want, "One of the special magic %ss for ", tv);
        assert_memory_equal(line, want, strlen(want));
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(at - line - strlen(want)), line + strlen(want));
        assert_true(t->type_k == DS_RULER_WORDS ? is_word_key(key) : is_uuid4(key));
        assert_non_null(strstr(q, key));
    }
    free(refs);
    /* the needles: num_k x num_v (at least num_q keys); the needle
     * haystack's lines are needles too, one per unit */
    int nk = t->num_k > t->num_q ? t->num_k : t->num_q, needles = count_of(ctx, "One of the special magic ");
    long units = field_num(x, "units");
    if (t->haystack == DS_RULER_NEEDLE) assert_int_equal(needles, nk * t->num_v + units);
    else assert_int_equal(needles, nk * t->num_v);
    if (t->haystack == DS_RULER_NOISE) {
        assert_int_equal(count_of(ctx, "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."), units);
        assert_int_equal(n_lines(ctx) - 1, 1 + units + nk * t->num_v); /* head, lines, the '\n' before the question */
    }
    if (t->haystack == DS_RULER_ESSAY) assert_non_null(strstr(ds_sample_field(x, "source"), "punkt"));
    if (t->type_k == DS_RULER_WORDS) assert_non_null(strstr(ds_sample_field(x, "source"), "wamerican word list instead of wonderwords"));
    check_length(task, L, NULL, &s);
    ds_set_free(&s);
}

static void test_niah(void **state) {
    (void)state;
    static const char *tasks[] = {"niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
                                  "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery"};
    for (size_t i = 0; i < sizeof tasks / sizeof tasks[0]; i++) {
        check_niah(tasks[i], 512);
        check_niah(tasks[i], 2000);
    }
}

/* ------------------------------------------------- vt, cwe, fwe */

static void test_vt(void **state) {
    (void)state;
    ds_set s;
    make("vt", 1024, 0, NULL, &s);
    const ds_sample *x = &s.s[0];
    const char *ctx = ds_sample_field(x, "context"), *q = ds_sample_field(x, "question"), *ap = ds_sample_field(x, "answer_prefix");
    static const char head[] = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n";
    /* the in-context example first (3-letter names, its answer after it), then the task */
    assert_memory_equal(ctx, head, strlen(head));
    assert_int_equal(count_of(ctx, head), 2);
    assert_int_equal(count_of(ctx, "Question: Find all variables that are assigned the value "), 1);
    assert_int_equal(count_of(ctx, ", they are:  "), 1); /* the example's answer after its prefix */
    int value = 0;
    assert_int_equal(sscanf(q, "Question: Find all variables that are assigned the value %d in the text above.", &value), 1);
    assert_true(value >= 10000 && value <= 99998);
    char want[256];
    snprintf(want, sizeof want, "Question: Find all variables that are assigned the value %d in the text above.", value);
    assert_string_equal(q, want);
    snprintf(want, sizeof want, " Answer: According to the chain(s) of variable assignment in the text above, 5 variables "
             "are assigned the value %d, they are: ", value);
    assert_string_equal(ap, want);
    /* the chain: 5 distinct 5-letter names, VAR A = value, then VAR B = VAR A ... with the trailing space */
    assert_int_equal(n_lines(x->reference), 5);
    char names[5][8];
    const char *r = x->reference;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(sscanf(r, "%7s", names[i]), 1);
        assert_int_equal(strlen(names[i]), 5);
        for (int c = 0; c < 5; c++) assert_true(isupper((unsigned char)names[i][c]));
        r += 6;
    }
    snprintf(want, sizeof want, "\nVAR %s = %d\n", names[0], value);
    assert_non_null(strstr(ctx, want));
    for (int i = 1; i < 5; i++) {
        snprintf(want, sizeof want, "\nVAR %s = VAR %s \n", names[i], names[i - 1]);
        assert_non_null(strstr(ctx, want));
    }
    const char *main = strstr(ctx + 1, head);
    assert_int_equal(count_of(main, "The grass is green."), field_num(x, "units"));
    assert_int_equal(count_of(main, "\nVAR "), 5);
    check_length("vt", 1024, NULL, &s);
    ds_set_free(&s);
    /* RULER's 500-token example leaves nothing for the task at 512: refused, not looped */
    int32_t L = 512;
    ds_ruler_params p = {.task = "vt", .lengths = &L, .n_lengths = 1, .n_samples = 1, .count = count_words};
    assert_int_equal(ds_ruler_make(&p, &s), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "over the length 512"));
}

static void check_cwe(int32_t L) {
    ds_set s;
    make("cwe", L, 0, NULL, &s);
    const ds_sample *x = &s.s[0];
    const char *ctx = ds_sample_field(x, "context");
    static const char head[] = "Below is a numbered list of words. In these words, some appear more often than others. "
                               "Memorize the ones that appear most often.\n";
    static const char ap[] = " Answer: The top 10 words that appear most often in the list are:";
    assert_memory_equal(ctx, head, strlen(head));
    assert_string_equal(ds_sample_field(x, "question"), "Question: What are the 10 most common words in the above list?");
    assert_string_equal(ds_sample_field(x, "answer_prefix"), ap);
    /* one example, answered: its 10 words after the prefix, numbered */
    assert_int_equal(count_of(ctx, head), 2);
    const char *ex_ans = strstr(ctx, ap);
    assert_non_null(ex_ans);
    assert_memory_equal(ex_ans + strlen(ap), " 1. ", 4);
    assert_non_null(strstr(ex_ans, " 10. "));
    /* the task: 10 references, each repeated 30 times (6 below 4096), the other words 3 (1) */
    int small = L < 4096, n_ref = n_lines(x->reference);
    assert_int_equal(n_ref, 10);
    const char *main = strstr(ctx + 1, head) + strlen(head);
    char *refs = strdup(x->reference);
    for (char *save = NULL, *w = strtok_r(refs, "\n", &save); w; w = strtok_r(NULL, "\n", &save)) {
        char pat[64];
        snprintf(pat, sizeof pat, ". %s ", w);
        int c = count_of(main, pat);
        snprintf(pat, sizeof pat, ". %s\n", w);
        c += count_of(main, pat);
        assert_int_equal(c, small ? 6 : 30);
    }
    free(refs);
    long units = field_num(x, "units"), entries = 10 * (small ? 6 : 30) + (units - 10) * (small ? 1 : 3);
    char last[32];
    snprintf(last, sizeof last, " %ld. ", entries);
    assert_non_null(strstr(main, last));
    snprintf(last, sizeof last, " %ld. ", entries + 1);
    assert_null(strstr(main, last));
    check_length("cwe", L, NULL, &s);
    ds_set_free(&s);
}

static void test_cwe(void **state) {
    (void)state;
    check_cwe(512);
    check_cwe(4096);
}

static void test_fwe(void **state) {
    (void)state;
    ds_set s;
    make("fwe", 2048, 0, NULL, &s);
    const ds_sample *x = &s.s[0];
    const char *ctx = ds_sample_field(x, "context");
    static const char head[] = "Read the following coded text and track the frequency of each coded word. Find the three "
                               "most frequently appeared coded words. ";
    assert_memory_equal(ctx, head, strlen(head));
    assert_string_equal(ds_sample_field(x, "question"), "Question: Do not provide any explanation. Please ignore the dots "
                        "'....'. What are the three most frequently appeared words in the above coded text?");
    assert_string_equal(ds_sample_field(x, "answer_prefix"),
                        " Answer: According to the coded text above, the three most frequently appeared words are:");
    /* three 6-letter answers; word k appears int(n k^-2 / zeta(2)) times, the dots (k = 1) most */
    assert_int_equal(n_lines(x->reference), 3);
    long n = field_num(x, "units");
    char *refs = strdup(x->reference);
    int k = 2;
    for (char *save = NULL, *w = strtok_r(refs, "\n", &save); w; w = strtok_r(NULL, "\n", &save), k++) {
        assert_int_equal(strlen(w), 6);
        char pat[16];
        snprintf(pat, sizeof pat, " %s", w);
        assert_int_equal(count_of(ctx, pat), (int)((double)n * pow(k, -2.0) / 1.6449340668482264));
    }
    free(refs);
    assert_int_equal(count_of(ctx, " ..."), (int)((double)n / 1.6449340668482264));
    check_length("fwe", 2048, NULL, &s);
    ds_set_free(&s);
}

/* ------------------------------------------------------------------ qa */

static const char SQUAD[] =
    "{\"version\": \"v2.0\", \"data\": ["
    "{\"title\": \"A\", \"paragraphs\": ["
    "{\"context\": \"Alpha one paragraph about the river Tigris.\", \"qas\": ["
    "{\"question\": \"Which river?\", \"is_impossible\": false, \"answers\": [{\"text\": \"Tigris\"}, {\"text\": \"the river Tigris\"}]},"
    "{\"question\": \"Unanswerable?\", \"is_impossible\": true, \"answers\": []}]},"
    "{\"context\": \"Alpha two paragraph.\", \"qas\": []}]},"
    "{\"title\": \"B\", \"paragraphs\": ["
    "{\"context\": \"Beta one paragraph.\", \"qas\": [{\"question\": \"Beta?\", \"is_impossible\": false, \"answers\": [{\"text\": \"beta\"}]}]},"
    "{\"context\": \"Beta two paragraph.\", \"qas\": []},"
    "{\"context\": \"Beta three paragraph.\", \"qas\": []}]}]}";

static const char HOTPOT[] =
    "[{\"question\": \"Who wrote both?\", \"answer\": \"Ann\", \"context\": [[\"T1\", [\"Ann wrote X. \", \"More.\"]], [\"T2\", [\"Y is by Ann.\"]]]},"
    " {\"question\": \"Other?\", \"answer\": \"Bob\", \"context\": [[\"T3\", [\"Bob.\"]], [\"T4\", [\"Z.\"]], [\"T5\", [\"W.\"]]]}]";

static void test_qa(void **state) {
    (void)state;
    char sq[512], hp[512];
    snprintf(sq, sizeof sq, "%s/squad.json", tmpdir);
    snprintf(hp, sizeof hp, "%s/hotpot.json", tmpdir);
    assert_int_equal(tu_write(sq, SQUAD, strlen(SQUAD)), 0);
    assert_int_equal(tu_write(hp, HOTPOT, strlen(HOTPOT)), 0);
    static const char instr[] = "Answer the question based on the given documents. Only give me the answer and do not output any other words.";
    /* the first answerable question, its paragraph, then its article's other, then others */
    ds_set s;
    make("qa_1", 120, 0, sq, &s);
    const ds_sample *x = &s.s[0];
    const char *ctx = ds_sample_field(x, "context");
    char want[512];
    snprintf(want, sizeof want, "%s\n\nThe following are given documents.\n\nDocument 1:\n", instr);
    assert_memory_equal(ctx, want, strlen(want));
    snprintf(want, sizeof want, "%s\n\nQuestion: Which river?", instr);
    assert_string_equal(ds_sample_field(x, "question"), want);
    assert_string_equal(ds_sample_field(x, "answer_prefix"), " Answer:");
    assert_string_equal(x->reference, "Tigris\nthe river Tigris");
    long units = field_num(x, "units");
    assert_true(units >= 5); /* all 5 paragraphs, the 6th a repeat (qa.py repeats them when asked for more) */
    assert_non_null(strstr(ctx, "Alpha one paragraph about the river Tigris."));
    assert_non_null(strstr(ctx, "Alpha two paragraph.")); /* more context before random documents */
    snprintf(want, sizeof want, "Document %ld:\n", units);
    assert_non_null(strstr(ctx, want));
    snprintf(want, sizeof want, "Document %ld:\n", units + 1);
    assert_null(strstr(ctx, want));
    check_length("qa_1", 120, sq, &s);
    ds_set_free(&s);
    /* HotpotQA: "title\nsentences joined" documents, the question's own first */
    make("qa_2", 100, 2, hp, &s);
    ctx = ds_sample_field(&s.s[0], "context");
    assert_non_null(strstr(ctx, "T1\nAnn wrote X. More."));
    assert_non_null(strstr(ctx, "T2\nY is by Ann."));
    assert_string_equal(s.s[0].reference, "Ann");
    assert_null(strstr(ctx, "Document 3:"));
    ds_set_free(&s);
    /* no file: refused by name */
    int32_t L = 4096;
    ds_ruler_params p = {.task = "qa_2", .lengths = &L, .n_lengths = 1, .n_samples = 1, .count = count_words};
    assert_int_equal(ds_ruler_make(&p, &s), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "task qa_2 needs HotpotQA"));
    p.task = "qa_1";
    assert_int_equal(ds_ruler_make(&p, &s), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "task qa_1 needs SQuAD"));
    p.task = "niah_single_4";
    assert_int_equal(ds_ruler_make(&p, &s), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "unknown task 'niah_single_4'"));
}

/* ----------------------------------------------------- readers, templates */

static void test_readers(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/kv.jsonl", tmpdir);
    static const char kv[] =
        "{\"context\": \"Hay.\\n\", \"question\": \"What is the special magic number for k?\", \"answer_prefix\": \" The special magic number for k mentioned in the provided text is\", \"answer\": [\"1234567\"], \"task\": \"niah_single_1\", \"max_new_tokens\": 128}\n"
        "{\"context\": \"Docs.\", \"question\": \"Q?\", \"answer\": \"x\", \"task\": \"qa_1\"}\n"
        "{\"input\": \"Read.\\nQuestion: Find all variables that are assigned the value 12345 in the text above.\", \"outputs\": [\"AB\", \"CD\"], \"length\": 900, \"answer_prefix\": \" Answer: they are: \"}\n"
        "{\"index\": 4, \"input\": \"A special magic uuid is hidden.\\nhay\\nWhat is the special magic uuid for u mentioned in the provided text? The special magic uuid for u mentioned in the provided text is\", \"outputs\": [\"v\"]}\n"
        "{\"context\": \"no question\"}\n";
    assert_int_equal(tu_write(path, kv, strlen(kv)), 0);
    ds_load_params lp = {.path = path};
    ds_set s;
    assert_int_equal(ds_ruler_load(&lp, &s), KV_OK);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.skipped, 1);
    assert_string_equal(ds_sample_field(&s.s[0], "context"), "Hay.\n");
    assert_string_equal(ds_sample_field(&s.s[0], "answer_prefix"), " The special magic number for k mentioned in the provided text is");
    assert_string_equal(s.s[0].reference, "1234567");
    assert_string_equal(ds_sample_field(&s.s[1], "max_new_tokens"), "32"); /* from the task table */
    assert_string_equal(ds_sample_field(&s.s[1], "answer_prefix"), "");
    /* RULER's prepared file: split at the question, its answer_prefix field kept */
    assert_string_equal(ds_sample_field(&s.s[2], "context"), "Read.\n");
    assert_string_equal(ds_sample_field(&s.s[2], "question"), "Question: Find all variables that are assigned the value 12345 in the text above.");
    assert_string_equal(ds_sample_field(&s.s[2], "answer_prefix"), " Answer: they are: ");
    assert_string_equal(ds_sample_field(&s.s[2], "task"), "variable_tracking");
    assert_string_equal(ds_sample_field(&s.s[2], "max_new_tokens"), "30");
    assert_string_equal(s.s[2].reference, "AB\nCD");
    assert_int_equal(s.s[2].length, 900);
    /* an older file with the answer prefix still in the input: cut where kvpress cuts it */
    assert_string_equal(s.s[3].id, "4");
    assert_string_equal(ds_sample_field(&s.s[3], "context"), "A special magic uuid is hidden.\nhay\n");
    assert_string_equal(ds_sample_field(&s.s[3], "question"), "What is the special magic uuid for u mentioned in the provided text? ");
    assert_string_equal(ds_sample_field(&s.s[3], "answer_prefix"), "The special magic uuid for u mentioned in the provided text is");
    /* the split template asks the question after the context; base appends the prefix */
    const ds_template *t = ds_template_find("ruler-split");
    assert_non_null(t);
    char *out;
    size_t cut, at;
    assert_int_equal(ds_template_render(t, &s.s[2], 0, count_words, NULL, &out, &cut), KV_OK);
    assert_string_equal(out, "Read.\nQuestion: Find all variables that are assigned the value 12345 in the text above.");
    assert_int_equal(ds_template_question_at(t, &s.s[2], out, &at), KV_OK);
    assert_int_equal(at, strlen("Read.\n"));
    free(out);
    t = ds_template_find("ruler-base");
    assert_int_equal(ds_template_render(t, &s.s[2], 0, count_words, NULL, &out, &cut), KV_OK);
    assert_string_equal(out, "Read.\nQuestion: Find all variables that are assigned the value 12345 in the text above. Answer: they are: ");
    assert_int_equal(ds_template_question_at(t, &s.s[2], out, &at), KV_OK);
    assert_int_equal(at, strlen("Read.\n"));
    free(out);
    ds_set_free(&s);
    /* the shared RULER file (multikey_3 at 4k, an older layout) */
    const char *d = getenv("KVBENCH_DATA");
    snprintf(path, sizeof path, "%s/niah/ruler_niah_multikey_3_4k.jsonl", d && *d ? d : "../shared/data");
    assert_int_equal(ds_ruler_load(&lp, &s), KV_OK);
    assert_int_equal(s.n, 500);
    for (int i = 0; i < s.n; i++) {
        assert_memory_equal(ds_sample_field(&s.s[i], "question"), "What is the special magic uuid for ", 35);
        assert_memory_equal(ds_sample_field(&s.s[i], "answer_prefix"), "The special magic uuid for ", 27);
        assert_string_equal(ds_sample_field(&s.s[i], "task"), "niah");
        assert_true(is_uuid4(s.s[i].reference));
    }
    ds_set_free(&s);
}

/* ------------------------------------------------------------- scoring */

static void test_scoring(void **state) {
    (void)state;
    char *o;
    /* postprocess_pred: strip, control characters to '\n', strip */
    assert_int_equal(met_ruler_postprocess("  \t1234\x01x\x1f \n\x02", &o), KV_OK);
    assert_string_equal(o, "1234\nx");
    free(o);
    assert_int_equal(met_ruler_postprocess("\xc2\xa0 a\x0b", &o), KV_OK); /* U+00A0 is white space to Python */
    assert_string_equal(o, "a");
    free(o);
    assert_int_equal(met_ruler_postprocess(" \x03\n ", &o), KV_OK);
    assert_string_equal(o, "");
    free(o);
    double v;
    int empty = -1;
    /* string_match_all: the share found, case-insensitively */
    const char *refs[] = {"Apple", "banana", "cherry", "date"};
    assert_int_equal(met_ruler_match(MET_RULER_MATCH_ALL, "I like APPLE and Banana.", refs, 4, &v), KV_OK);
    assert_true(v == 0.5);
    assert_int_equal(met_ruler_match(MET_RULER_MATCH_PART, "I like APPLE and Banana.", refs, 4, &v), KV_OK);
    assert_true(v == 1.0);
    assert_int_equal(met_ruler_match(MET_RULER_MATCH_PART, "nothing here", refs, 4, &v), KV_OK);
    assert_true(v == 0.0);
    assert_int_equal(met_ruler_match(MET_RULER_MATCH_ALL, "x", refs, 0, &v), KV_EINVAL);
    /* Python's lower(): 'ΣΑΣ' is 'σας' (final sigma), 'Straße' stays, 'İ' becomes 'i̇' */
    const char *greek[] = {"\xcf\x83\xce\xb1\xcf\x82"};
    assert_int_equal(met_ruler_match(MET_RULER_MATCH_ALL, "\xce\xa3\xce\x91\xce\xa3", greek, 1, &v), KV_OK);
    assert_true(v == 1.0);
    const char *dot_i[] = {"i\xcc\x87"};
    assert_int_equal(met_ruler_match(MET_RULER_MATCH_ALL, "\xc4\xb0", dot_i, 1, &v), KV_OK);
    assert_true(v == 1.0);
    /* a sample: raw prediction cleaned, references one a line, empty counted */
    assert_int_equal(met_ruler_sample(MET_RULER_MATCH_ALL, " 111\x02 333 ", "111\n222\n333", &v, &empty), KV_OK);
    assert_true(fabs(v - 2.0 / 3) < 1e-15);
    assert_int_equal(empty, 0);
    assert_int_equal(met_ruler_sample(MET_RULER_MATCH_ALL, "\n\t ", "111", &v, &empty), KV_OK);
    assert_true(v == 0 && empty == 1);
    assert_int_equal(met_ruler_sample(MET_RULER_MATCH_ALL, "x", "", &v, &empty), KV_EINVAL);
    /* the task score: round(100 * mean, 2) */
    double sc[] = {1, 2.0 / 3, 0, 1.0 / 3}, t;
    assert_int_equal(met_ruler_task_score(sc, 4, &t), KV_OK);
    assert_true(t == 50.0);
    double sc2[] = {1, 0, 0};
    assert_int_equal(met_ruler_task_score(sc2, 3, &t), KV_OK);
    assert_true(t == 33.33);
    assert_int_equal(met_ruler_task_score(sc2, 0, &t), KV_EINVAL);
    /* the task table: qa is part, the rest all */
    assert_int_equal(met_ruler_task_find("qa_2")->scorer, MET_RULER_MATCH_PART);
    assert_int_equal(met_ruler_task_find("niah_multikey_3")->scorer, MET_RULER_MATCH_ALL);
    assert_string_equal(met_ruler_task_find("vt")->base, "variable_tracking");
    assert_null(met_ruler_task_find("niah_single_9"));
    for (int i = 0; i < ds_ruler_task_count(); i++) assert_non_null(met_ruler_task_find(ds_ruler_task_at(i)->name));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_niah),  cmocka_unit_test(test_vt),      cmocka_unit_test(test_cwe),
        cmocka_unit_test(test_fwe),   cmocka_unit_test(test_qa),      cmocka_unit_test(test_readers),
        cmocka_unit_test(test_scoring),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
