/* test_datasets.c - the dataset loaders, prompt templates and numeric
 * metrics: CSV quoting, bad rows skipped or fatal with file and line, the
 * JSONL layouts (CNN/DailyMail, GovReport, multi_news, SODA, DailyDialog,
 * RULER), passkey and needle generation, truncation to a token budget, and
 * hand-worked values for NLL, KL, percentiles and the bootstrap. */
#include "test_util.h"

#include <math.h>
#include <setjmp.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../base/kv_error.h"
#include "../datasets/dataset.h"
#include "../datasets/template.h"
#include "../metrics/sentences.h"
#include "../metrics/stats.h"

#define assert_double_equal(a, b, eps) assert_true(fabs((double)(a) - (double)(b)) <= (double)(eps))

static char tmpdir[256];

static const char *fixture(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    assert_int_equal(tu_write(path, text, strlen(text)), 0);
    return path;
}

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(tmpdir, sizeof tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tu_rmdir(tmpdir);
    return 0;
}

/* ---------------------------------------------------------------- CSV */

static void test_csv_quoting(void **state) {
    (void)state;
    const char *p = fixture("a.csv",
                            "id,article,highlights\r\n"
                            "1,\"Commas, \"\"quotes\"\"\nand newlines\",\"one\ntwo\"\n"
                            "2,plain,short\n");
    ds_load_params lp = {.path = p};
    ds_set s;
    assert_int_equal(ds_load_summarization(&lp, &s), KV_OK);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.s[0].id, "1");
    assert_string_equal(ds_sample_field(&s.s[0], "document"), "Commas, \"quotes\"\nand newlines");
    assert_string_equal(s.s[0].reference, "one\ntwo");
    assert_string_equal(ds_sample_field(&s.s[1], "document"), "plain");
    ds_set_free(&s);
}

static void test_csv_bad_rows(void **state) {
    (void)state;
    /* line 3: too few fields; line 4: invalid UTF-8; line 5: empty article */
    const char *p = fixture("b.csv",
                            "id,article,highlights\n"
                            "1,good,ref\n"
                            "2,missing\n"
                            "3,bad \xff byte,ref\n"
                            "4,,ref\n"
                            "5,\"multi\nline\",ref\n");
    ds_load_params lp = {.path = p, .bad_rows = DS_BAD_SKIP};
    ds_set s;
    assert_int_equal(ds_load_summarization(&lp, &s), KV_OK);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.skipped, 3);
    assert_string_equal(s.s[1].id, "5");
    ds_set_free(&s);
    lp.bad_rows = DS_BAD_FAIL;
    assert_int_equal(ds_load_summarization(&lp, &s), KV_EFORMAT);
    assert_non_null(strstr(kv_last_error(), "b.csv:3: expected 3 fields as in the header, got 2"));
    /* an unterminated quote names the line the record starts on */
    p = fixture("c.csv", "id,article,highlights\n1,a,b\n2,\"never closed,x\nmore\n");
    lp.path = p;
    assert_int_equal(ds_load_summarization(&lp, &s), KV_EFORMAT);
    assert_non_null(strstr(kv_last_error(), "c.csv:3: a quoted field that starts here is never closed"));
    /* broken quoting is fatal even when bad rows are skipped: the record
     * boundaries after it cannot be trusted */
    p = fixture("e.csv", "id,article,highlights\n1,a,b\n2,ab\"c,d\n3,x,y\n");
    lp.path = p;
    lp.bad_rows = DS_BAD_SKIP;
    assert_int_equal(ds_load_summarization(&lp, &s), KV_EFORMAT);
    assert_non_null(strstr(kv_last_error(), "e.csv:3: malformed quoting"));
    lp.bad_rows = DS_BAD_FAIL;
    /* a header without the expected columns */
    p = fixture("d.csv", "id,text,summary\n1,a,b\n");
    lp.path = p;
    assert_int_equal(ds_load_summarization(&lp, &s), KV_EFORMAT);
    assert_non_null(strstr(kv_last_error(), "d.csv:1: expected a header with columns 'article' and 'highlights'"));
    lp.doc_field = "text";
    lp.ref_field = "summary";
    assert_int_equal(ds_load_summarization(&lp, &s), KV_OK);
    assert_int_equal(s.n, 1);
    ds_set_free(&s);
}

/* --------------------------------------------------------------- JSONL */

static void test_jsonl_layouts(void **state) {
    (void)state;
    const char *p = fixture("s.jsonl",
                            "{\"id\": \"a\", \"article\": \"Art one.\", \"highlights\": \"H1\\nH2\"}\n"
                            "\n"
                            "{\"id\": \"b\", \"document\": \"Report.\", \"reference\": \"Sum.\"}\n"
                            "{\"_id\": \"c\", \"context\": \"Passage.\", \"answers\": [\"Ans one\", \"two\"]}\n"
                            "{\"id\": \"d\", \"article\": 5, \"highlights\": \"x\"}\n"
                            "{\"id\": \"e\", \"article\": \"x\"\n"
                            "[1, 2]\n");
    ds_load_params lp = {.path = p};
    ds_set s;
    assert_int_equal(ds_load_summarization(&lp, &s), KV_OK);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.skipped, 3);
    assert_string_equal(s.s[0].reference, "H1\nH2");
    assert_string_equal(ds_sample_field(&s.s[1], "document"), "Report.");
    assert_string_equal(s.s[2].id, "c");
    assert_string_equal(s.s[2].reference, "Ans one\ntwo");
    ds_set_free(&s);
    lp.bad_rows = DS_BAD_FAIL;
    assert_int_equal(ds_load_summarization(&lp, &s), KV_EFORMAT);
    assert_non_null(strstr(kv_last_error(), "s.jsonl:5: field 'article' is missing, empty or not a string"));
    lp.max_samples = 2;
    assert_int_equal(ds_load_summarization(&lp, &s), KV_OK); /* stops before the bad rows */
    assert_int_equal(s.n, 2);
    ds_set_free(&s);
}

static void test_conversations(void **state) {
    (void)state;
    const char *p = fixture("c.jsonl",
                            /* SODA with turn objects */
                            "{\"id\": \"s1\", \"narrative\": \"N.\", \"speakers\": [\"Veda\", \"Priest\", \"Veda\"], "
                            "\"turns\": [{\"speaker\": \"Veda\", \"text\": \"Hi.\"}, {\"speaker\": \"Priest\", \"text\": \"Hello.\"}, "
                            "{\"speaker\": \"Veda\", \"text\": \"Bye.\"}]}\n"
                            /* SODA's original stringified lists */
                            "{\"id\": \"s2\", \"narrative\": \"M.\", \"speakers\": \"['Ann', 'Bob']\", "
                            "\"dialogue\": \"['It\\\\'s me.', \\\"Bob's here.\\\"]\"}\n"
                            /* DailyDialog: no names */
                            "{\"id\": \"d1\", \"turns\": [{\"speaker\": \"A\", \"text\": \"One .\"}, {\"speaker\": \"B\", \"text\": \"Two .\"}]}\n"
                            /* one turn only: a bad row */
                            "{\"id\": \"d2\", \"turns\": [{\"speaker\": \"A\", \"text\": \"Alone .\"}]}\n");
    ds_load_params lp = {.path = p};
    ds_set s;
    assert_int_equal(ds_load_conversation(&lp, &s), KV_OK);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.skipped, 1);
    assert_string_equal(ds_sample_field(&s.s[0], "speaker_a"), "Veda");
    assert_string_equal(ds_sample_field(&s.s[0], "speaker_b"), "Priest");
    assert_string_equal(ds_sample_field(&s.s[0], "first_turn"), "Hi.");
    assert_string_equal(s.s[0].reference, "Hello.\nBye.");
    assert_string_equal(ds_sample_field(&s.s[1], "speaker_b"), "Bob");
    assert_string_equal(ds_sample_field(&s.s[1], "first_turn"), "It's me.");
    assert_string_equal(s.s[1].reference, "Bob's here.");
    assert_string_equal(ds_sample_field(&s.s[2], "narrative"), "");
    assert_string_equal(ds_sample_field(&s.s[2], "speaker_a"), "A");
    ds_set_free(&s);
}

static void test_real_files(void **state) {
    (void)state;
    const char *dir = getenv("KVBENCH_DATA");
    if (!dir) dir = "../shared/data";
    char path[1024];
    ds_set s;
    /* the CSV and the JSONL of the same 500 stories agree */
    snprintf(path, sizeof path, "%s/cnn_dailymail/cnndm_test_500.csv", dir);
    if (access(path, R_OK) != 0) skip();
    ds_load_params lp = {.path = path, .bad_rows = DS_BAD_FAIL};
    assert_int_equal(ds_load_summarization(&lp, &s), KV_OK);
    assert_int_equal(s.n, 500);
    ds_set j;
    snprintf(path, sizeof path, "%s/cnn_dailymail/cnndm_test_500.jsonl", dir);
    assert_int_equal(ds_load_summarization(&lp, &j), KV_OK);
    assert_int_equal(j.n, 500);
    for (int i = 0; i < 500; i++) {
        assert_string_equal(s.s[i].id, j.s[i].id);
        assert_string_equal(ds_sample_field(&s.s[i], "document"), ds_sample_field(&j.s[i], "document"));
    }
    ds_set_free(&s);
    ds_set_free(&j);
    struct { const char *file; int n; int kind; } sets[] = {
        {"govreport/govreport_leval_13.jsonl", 13, 0}, {"multi_news/multi_news.jsonl", 200, 0},
        {"soda/soda_dialogstudio_5.jsonl", 5, 1},      {"dailydialog/dailydialog_resplit_test.jsonl", 2624, 1},
        {"niah/ruler_niah_multikey_3_4k.jsonl", -1, 2},
    };
    for (size_t k = 0; k < sizeof sets / sizeof sets[0]; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, sets[k].file);
        int rc = sets[k].kind == 0 ? ds_load_summarization(&lp, &s)
               : sets[k].kind == 1 ? ds_load_conversation(&lp, &s)
                                   : ds_load_ruler(&lp, &s);
        if (rc) fprintf(stderr, "%s\n", kv_last_error());
        assert_int_equal(rc, KV_OK);
        if (sets[k].n > 0) assert_int_equal(s.n, sets[k].n);
        assert_true(s.n > 0 && strlen(s.s[0].reference) > 0);
        ds_set_free(&s);
    }
}

/* ----------------------------------------------------------- templates */

/* A stand-in tokenizer: one token per byte. */
static int64_t count_bytes(void *user, const char *text, size_t len) {
    (void)user;
    (void)text;
    return (int64_t)len;
}

static void test_template_render(void **state) {
    (void)state;
    ds_set s = {0};
    const char *names[] = {"document"};
    const char *doc = "one two three four five six seven eight nine ten";
    assert_int_equal(ds_set_add(&s, "x", names, &doc, 1, "ref"), KV_OK);
    const ds_template *t = ds_template_find("plain-summ@1");
    assert_non_null(t);
    assert_ptr_equal(ds_template_find("plain-summ"), t);
    assert_null(ds_template_find("plain-summ@9"));
    char *out;
    size_t cut;
    assert_int_equal(ds_template_render(t, &s.s[0], 0, count_bytes, NULL, &out, &cut), KV_OK);
    assert_string_equal(out, "one two three four five six seven eight nine ten\n\nSummary:");
    assert_int_equal(cut, 0);
    free(out);
    /* a budget of 30 "tokens": the template's 10 bytes stay, the document is
     * cut to whole words within the other 20 */
    assert_int_equal(ds_template_render(t, &s.s[0], 30, count_bytes, NULL, &out, &cut), KV_OK);
    assert_string_equal(out, "one two three four\n\nSummary:");
    assert_true(strlen(out) <= 30);
    assert_int_equal(cut, strlen(doc) - strlen("one two three four"));
    free(out);
    /* a middle cut keeps the head and the tail (RULER's question is at the end) */
    const ds_template *r = ds_template_find("ruler");
    const char *cnames[] = {"context"};
    const char *ctx = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda. What is the key?";
    assert_int_equal(ds_set_add(&s, "r", cnames, &ctx, 1, "k"), KV_OK);
    assert_int_equal(ds_template_render(r, &s.s[1], 40, count_bytes, NULL, &out, &cut), KV_OK);
    assert_string_equal(out, "alpha beta gamma ... What is the key?");
    assert_int_equal(cut, strlen(ctx) - strlen("alpha beta gammaWhat is the key?"));
    free(out);
    /* even an empty document does not fit: an error naming the limit */
    assert_int_equal(ds_template_render(t, &s.s[0], 5, count_bytes, NULL, &out, &cut), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "over the limit of 5"));
    /* a template field the sample lacks */
    t = ds_template_find("keyformer-dialog");
    assert_int_equal(ds_template_render(t, &s.s[0], 0, count_bytes, NULL, &out, &cut), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "needs field 'narrative'"));
    ds_set_free(&s);
}

/* -------------------------------------------------------- generators */

static int64_t count_words(void *user, const char *text, size_t len) {
    (void)user;
    int64_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (text[i] != ' ' && text[i] != '\n' && (i == 0 || text[i - 1] == ' ' || text[i - 1] == '\n')) n++;
    return n;
}

static void test_passkey(void **state) {
    (void)state;
    int32_t lengths[] = {100, 400}, depths[] = {0, 50, 100};
    ds_set a, b;
    assert_int_equal(ds_make_passkey(lengths, 2, depths, 3, 2, 42, count_words, NULL, &a), KV_OK);
    assert_int_equal(a.n, 12);
    assert_int_equal(ds_make_passkey(lengths, 2, depths, 3, 2, 42, count_words, NULL, &b), KV_OK);
    for (int i = 0; i < a.n; i++) {
        assert_string_equal(ds_sample_field(&a.s[i], "context"), ds_sample_field(&b.s[i], "context")); /* seeded */
        assert_string_equal(ds_sample_field(&a.s[i], "question"), "What is the pass key? The pass key is");
        char ctx[8192]; /* the prompt as template passkey@2 joins it */
        snprintf(ctx, sizeof ctx, "%s%s", ds_sample_field(&a.s[i], "context"), ds_sample_field(&a.s[i], "question"));
        int key = atoi(a.s[i].reference);
        assert_true(key >= 1 && key <= 50000);
        char line[128];
        snprintf(line, sizeof line, "The pass key is %d. Remember it. %d is the pass key.", key, key);
        const char *at = strstr(ctx, line);
        assert_non_null(at);
        assert_int_equal(strncmp(ctx, "There is an important info hidden", 33), 0);
        size_t n = strlen(ctx);
        assert_string_equal(ctx + n - strlen("What is the pass key? The pass key is"), "What is the pass key? The pass key is");
        /* within one filler sentence of the asked length (the character
         * slices at the key line may split a word: a token or two over) */
        int64_t words = count_words(NULL, ctx, n);
        assert_true(words <= a.s[i].length + 2 && words > a.s[i].length - 12);
        /* depth 0: the key line right after the task description; 100: right
         * before the question; 50: half the filler on either side */
        size_t task = strlen("There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
                             "them. I will quiz you about the important information there.");
        size_t before = (size_t)(at - ctx) - task - 2, after = n - (size_t)(at - ctx) - strlen(line) - 2 -
                                                             strlen("What is the pass key? The pass key is");
        if (a.s[i].depth_pct == 0) assert_int_equal(before, 0);
        if (a.s[i].depth_pct == 100) assert_int_equal(after, 0);
        if (a.s[i].depth_pct == 50) assert_true(before <= after + 1 && after <= before + 1);
    }
    ds_set_free(&b);
    assert_int_equal(ds_make_passkey(lengths, 2, depths, 3, 2, 43, count_words, NULL, &b), KV_OK);
    int differ = 0;
    for (int i = 0; i < a.n; i++) differ += strcmp(a.s[i].reference, b.s[i].reference) != 0;
    assert_true(differ > 6); /* another seed, other keys */
    ds_set_free(&a);
    ds_set_free(&b);
}

static void test_needle(void **state) {
    (void)state;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/hay", tmpdir);
    mkdir(dir, 0777);
    char p[700];
    snprintf(p, sizeof p, "%s/b.txt", dir);
    const char *t2 = "Second essay here. It has words. And more words follow.";
    assert_int_equal(tu_write(p, t2, strlen(t2)), 0);
    snprintf(p, sizeof p, "%s/a.txt", dir);
    const char *t1 = "First essay starts. It goes on. Then it ends.";
    assert_int_equal(tu_write(p, t1, strlen(t1)), 0);
    int32_t lengths[] = {20}, depths[] = {0, 50};
    ds_set s;
    assert_int_equal(ds_make_needle(dir, lengths, 1, depths, 2, "NEEDLE.", "Q?", "A", count_words, NULL, &s), KV_OK);
    assert_int_equal(s.n, 2);
    const char *c0 = ds_sample_field(&s.s[0], "context"), *c1 = ds_sample_field(&s.s[1], "context");
    assert_int_equal(strncmp(c0, "NEEDLE.First essay", 18), 0); /* depth 0: first */
    assert_non_null(strstr(c1, ". NEEDLE.")); /* depth 50: after a sentence end */
    assert_true(count_words(NULL, c1, strlen(c1)) + 1 <= 20);
    assert_string_equal(s.s[1].reference, "A");
    ds_set_free(&s);
}

/* A tokenizer of one token per byte: ids are the bytes (so the tester's
 * token arithmetic can be worked by hand). */
static int64_t byte_encode(void *user, const char *text, size_t len, int32_t **ids) {
    (void)user;
    *ids = malloc((len ? len : 1) * sizeof **ids);
    for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i];
    return (int64_t)len;
}

static int byte_decode(void *user, const int32_t *ids, int64_t n, char **text, size_t *len) {
    (void)user;
    *text = malloc((size_t)n + 1);
    for (int64_t i = 0; i < n; i++) (*text)[i] = (char)ids[i];
    (*text)[n] = '\0';
    *len = (size_t)n;
    return KV_OK;
}

/* KVCache-Factory's protocol, worked by hand with one token per byte: the
 * files concatenated as read ("One. Two. " + "Three. Four."), cut to 16
 * tokens, then to 16 - buffer 4 - needle 2 = 10 ("One. Two. "); the needle
 * at int(10 * depth / 100), moved back to just after a period token. */
static void test_needle_factory(void **state) {
    (void)state;
    char dir[600], p[700];
    snprintf(dir, sizeof dir, "%s/hay2", tmpdir);
    mkdir(dir, 0777);
    snprintf(p, sizeof p, "%s/x.txt", dir);
    assert_int_equal(tu_write(p, "One. Two. ", 10), 0);
    snprintf(p, sizeof p, "%s/y.txt", dir);
    assert_int_equal(tu_write(p, "Three. Four.", 12), 0);
    int32_t lengths[] = {16};
    double depths[] = {0, 50, 100, 99.9};
    const char *needles[] = {"N."};
    ds_needle_params np = {.haystack_dir = dir, .lengths = lengths, .n_lengths = 1, .depths = depths, .n_depths = 4,
                           .needles = needles, .n_needles = 1, .question = "Q", .answer = "N", .protocol = DS_NEEDLE_FACTORY,
                           .buffer = 4, .period_piece = -1, .count = count_bytes, .tok = {NULL, byte_encode, byte_decode}};
    ds_set s;
    assert_int_equal(ds_make_needle_ext(&np, &s), KV_OK);
    assert_int_equal(s.n, 4);
    assert_string_equal(ds_sample_field(&s.s[0], "context"), "N.One. Two. ");
    assert_string_equal(ds_sample_field(&s.s[1], "context"), "One.N. Two. ");  /* int(5): back to after "One." */
    assert_string_equal(ds_sample_field(&s.s[2], "context"), "One. Two. N.");  /* 100: appended */
    assert_string_equal(ds_sample_field(&s.s[3], "context"), "One. Two.N. ");  /* int(9.99) = 9, after "Two." */
    assert_string_equal(s.s[3].id, "len16-depth99.900");
    assert_int_equal(s.s[3].depth_pct, 100);
    ds_set_free(&s);
    /* two needles: the first at 50, the second (100 - 50) / 2 = 25 points further, in the grown context */
    const char *two[] = {"A.", "B."};
    np.needles = two;
    np.n_needles = 2;
    np.depths = depths + 1;
    np.n_depths = 1;
    assert_int_equal(ds_make_needle_ext(&np, &s), KV_OK);
    /* 16 - 4 - 4 = 8 tokens "One. Two"; A at int(8 * .5) = 4 -> after "One."; then
       "One.A. Two" (10) at int(10 * .75) = 7 -> back to after "A." (6) */
    assert_string_equal(ds_sample_field(&s.s[0], "context"), "One.A.B. Two");
    ds_set_free(&s);
    /* the tester's depth grids */
    double d[10];
    assert_int_equal(ds_needle_depths(10, 1, d, 10), KV_OK);
    const double sig[10] = {0, 2.006, 5.854, 15.887, 36.458, 63.542, 84.113, 94.146, 97.994, 100};
    for (int i = 0; i < 10; i++) assert_double_equal(d[i], sig[i], 1e-9);
    assert_int_equal(ds_needle_depths(9, 0, d, 10), KV_OK); /* np.round halves to even: 12.5 -> 12, 37.5 -> 38 */
    const double lin[9] = {0, 12, 25, 38, 50, 62, 75, 88, 100};
    for (int i = 0; i < 9; i++) assert_double_equal(d[i], lin[i], 0);
    assert_int_not_equal(ds_needle_depths(11, 0, d, 10), KV_OK);
}

/* -------------------------------------------------------------- metrics */

static void test_stats(void **state) {
    (void)state;
    /* NLL of uniform logits over 4 tokens: log 4 */
    float u[4] = {1, 1, 1, 1};
    assert_double_equal(met_nll(u, 4, 2), log(4.0), 1e-12);
    /* logits (0, log 3): p = (1/4, 3/4); NLL of token 1 = -log(3/4) */
    float l[2] = {0, (float)log(3.0)};
    assert_double_equal(met_nll(l, 2, 1), -log(0.75), 1e-6);
    /* KL((1/4, 3/4) || (1/2, 1/2)) = 1/4 log(1/2) + 3/4 log(3/2) */
    float h[2] = {0, 0};
    assert_double_equal(met_kl(l, h, 2), 0.25 * log(0.5) + 0.75 * log(1.5), 1e-6);
    assert_double_equal(met_kl(l, l, 2), 0, 1e-12);
    assert_true(met_kl(h, l, 2) > 0);
    /* answers */
    assert_int_equal(met_contains("The pass key is 12345.", "12345"), 1);
    assert_int_equal(met_contains("The pass key is 1234.", "12345"), 0);
    assert_int_equal(met_contains("eat a SANDWICH", "sandwich"), 1);
    assert_int_equal(met_contains("", "x"), 0);
    assert_double_equal(met_match_all("a-1 and c-3", "a-1\nb-2\nc-3"), 2.0 / 3.0, 1e-12);
    assert_double_equal(met_match_all("nothing", ""), 0, 0);
    /* percentiles: numpy's linear interpolation */
    double x[5] = {5, 1, 4, 2, 3};
    assert_double_equal(met_percentile(x, 5, 50), 3, 1e-12);
    assert_double_equal(met_percentile(x, 5, 95), 4.8, 1e-12);
    assert_double_equal(met_percentile(x, 5, 0), 1, 1e-12);
    assert_double_equal(met_percentile(x, 5, 100), 5, 1e-12);
    assert_true(isnan(met_percentile(x, 0, 50)));
    assert_double_equal(met_mean(x, 5), 3, 1e-12);
    /* bootstrap: a constant sample has a zero-width interval; a spread one
     * brackets its mean; the same seed gives the same interval */
    double c[6] = {2, 2, 2, 2, 2, 2}, lo, hi, lo2, hi2;
    assert_int_equal(met_bootstrap_ci(c, 6, 500, 0.95, 1, &lo, &hi), KV_OK);
    assert_double_equal(lo, 2, 0);
    assert_double_equal(hi, 2, 0);
    double v[8] = {0, 1, 0, 1, 0, 1, 0, 1};
    assert_int_equal(met_bootstrap_ci(v, 8, 2000, 0.95, 7, &lo, &hi), KV_OK);
    assert_true(lo < 0.5 && hi > 0.5 && lo >= 0 && hi <= 1);
    assert_true(lo < 0.25 && hi > 0.75); /* n = 8: a wide interval */
    assert_int_equal(met_bootstrap_ci(v, 8, 2000, 0.95, 7, &lo2, &hi2), KV_OK);
    assert_double_equal(lo, lo2, 0);
    assert_double_equal(hi, hi2, 0);
}

typedef struct sent_acc {
    char out[8][128];
    int n;
} sent_acc;

static int collect(void *user, const char *s, size_t len) {
    sent_acc *a = user;
    if (a->n < 8) snprintf(a->out[a->n++], sizeof a->out[0], "%.*s", (int)len, s);
    return 0;
}

static void test_sentences(void **state) {
    (void)state;
    sent_acc a = {0};
    const char *t = "(CNN)Mr. Smith met Dr. J. Doe in the U.S. on Jan. 5. \"It was fine,\" he said. Prices rose 3.5 percent!"
                    " Why? Nobody knows...\n\nA new paragraph without a stop";
    assert_int_equal(met_sentences(t, collect, &a), 6);
    assert_string_equal(a.out[0], "(CNN)Mr. Smith met Dr. J. Doe in the U.S. on Jan. 5.");
    assert_string_equal(a.out[1], "\"It was fine,\" he said.");
    assert_string_equal(a.out[2], "Prices rose 3.5 percent!");
    assert_string_equal(a.out[3], "Why?");
    assert_string_equal(a.out[4], "Nobody knows...");
    assert_string_equal(a.out[5], "A new paragraph without a stop");
    /* a lowercase word after a full stop does not start a sentence */
    a.n = 0;
    assert_int_equal(met_sentences("See p. 5 and e.g. this. done", collect, &a), 1);
    assert_int_equal(met_sentences("", collect, &a), 0);
    assert_int_equal(met_sentences("   \n\n  ", collect, &a), 0);
}

static void test_utf8(void **state) {
    (void)state;
    assert_true(ds_utf8_valid("plain", 5));
    assert_true(ds_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
    assert_false(ds_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 13)); /* cut inside the emoji */
    assert_false(ds_utf8_valid("\xc3", 1));             /* truncated */
    assert_false(ds_utf8_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(ds_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(ds_utf8_valid("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
    assert_false(ds_utf8_valid("\xff", 1));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_quoting),   cmocka_unit_test(test_csv_bad_rows),  cmocka_unit_test(test_jsonl_layouts),
        cmocka_unit_test(test_conversations), cmocka_unit_test(test_real_files),    cmocka_unit_test(test_template_render),
        cmocka_unit_test(test_passkey),       cmocka_unit_test(test_needle),        cmocka_unit_test(test_needle_factory),        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_sentences),     cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
