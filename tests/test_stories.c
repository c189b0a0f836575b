/* test_stories.c - the end-to-end check on the one real model here:
 * greedy generation from BOS with stories260K reproduces the sample in its
 * model card (llama2.c's run.c at temperature 0, 256 steps), and the Q8
 * checkpoint stays close to the fp32 one (figures printed). */
#include "test_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "context.h"
#include "kv_error.h"
#include "model.h"
#include "sampler.h"

/* The text of the code block after the "-t 0.0" command in the card. */
static char *card_sample(void) {
    char p[1024];
    if (!tu_model_path("stories260K/stories260K.md", p, sizeof p)) return NULL;
    char *md = tu_read(p, NULL);
    assert_non_null(md);
    char *cmd = strstr(md, "-t 0.0\n");
    assert_non_null(cmd);
    char *start = cmd + strlen("-t 0.0\n");
    char *end = strstr(start, "\n```");
    assert_non_null(end);
    *end = 0;
    char *s = strdup(start);
    free(md);
    return s;
}

/* Greedy decoding from BOS for `steps` forward passes (run.c counts the BOS
 * position as the first step), stopping at BOS as run.c does. Returns the
 * text; tokens and the logits of each step go to the optional outputs. */
static char *greedy(kv_model *m, int steps, int32_t *tokens, float *logits_out, const int32_t *force) {
    const kv_tokenizer *tok = kv_model_tokenizer(m);
    const int V = kv_model_get_info(m)->vocab_size;
    kv_ctx_params cp = kv_ctx_default_params();
    cp.n_threads = 2;
    kv_ctx *c;
    assert_int_equal(kv_ctx_new(m, &cp, &c), KV_OK);
    float *logits = malloc((size_t)V * sizeof(float));
    size_t cap = 1 << 16, len = 0;
    char *text = calloc(cap, 1);
    int32_t cur = kv_tokenizer_bos(tok);
    for (int pos = 0; pos < steps; pos++) {
        assert_int_equal(kv_ctx_eval(c, &cur, 1, logits, 0), KV_OK);
        if (logits_out) memcpy(logits_out + (size_t)pos * V, logits, (size_t)V * sizeof(float));
        int32_t next = force ? force[pos] : kv_argmax(logits, V);
        if (tokens) tokens[pos] = next;
        if (next == kv_tokenizer_bos(tok)) break;
        size_t n;
        const char *piece = kv_tokenizer_piece(tok, cur, next, &n);
        assert_true(len + n < cap);
        memcpy(text + len, piece, n);
        len += n;
        cur = next;
    }
    free(logits);
    kv_ctx_free(c);
    return text;
}

static void test_greedy_matches_card(void **state) {
    (void)state;
    char p[1024];
    char *want = card_sample();
    if (!want || !tu_model_path("stories260K/stories260K.bin", p, sizeof p)) skip();
    kv_model *m;
    assert_int_equal(kv_model_load(p, NULL, &m), KV_OK);
    char *got = greedy(m, 256, NULL, NULL, NULL);
    size_t same = 0;
    while (want[same] && want[same] == got[same]) same++;
    printf("greedy stories260K: %zu of %zu characters of the card's sample match\n", same, strlen(want));
    if (strcmp(got, want) != 0) printf("--- got:\n%s\n--- want:\n%s\n", got, want);
    assert_string_equal(got, want);
    free(got);
    free(want);
    kv_model_free(m);
}

/* The Q8 file: its own greedy text, and its logits along the fp32 file's
 * greedy path (teacher forcing), compared with the fp32 logits. */
static void test_q8_close_to_fp32(void **state) {
    (void)state;
    char p32[1024], p8[1024];
    if (!tu_model_path("stories260K/stories260K.bin", p32, sizeof p32) ||
        !tu_model_path("stories260K/stories260K_q8.bin", p8, sizeof p8))
        skip();
    kv_model *a, *b;
    assert_int_equal(kv_model_load(p32, NULL, &a), KV_OK);
    assert_int_equal(kv_model_load(p8, NULL, &b), KV_OK);
    enum { STEPS = 256, V = 512 };
    int32_t path[STEPS];
    float *la = malloc((size_t)STEPS * V * sizeof(float)), *lb = malloc((size_t)STEPS * V * sizeof(float));
    for (int i = 0; i < STEPS; i++) path[i] = 1;
    char *ta = greedy(a, STEPS, path, la, NULL);
    int n = 0;
    while (n < STEPS - 1 && path[n] != 1) n++;
    char *tb_forced = greedy(b, n + 1, NULL, lb, path);
    double max_abs = 0, max_ref = 0;
    int agree = 0;
    for (int s = 0; s < n; s++) {
        for (int v = 0; v < V; v++) {
            max_abs = fmax(max_abs, fabs((double)la[s * V + v] - lb[s * V + v]));
            max_ref = fmax(max_ref, fabs((double)la[s * V + v]));
        }
        agree += kv_argmax(la + s * V, V) == kv_argmax(lb + s * V, V);
    }
    char *tb = greedy(b, STEPS, NULL, NULL, NULL);
    size_t same = 0;
    while (ta[same] && ta[same] == tb[same]) same++;
    printf("q8 vs fp32 along %d greedy steps: max |dlogit| %.4f (%.4f of max |logit| %.2f), "
           "argmax agrees at %d/%d steps; q8 greedy text matches fp32 for %zu of %zu characters\n",
           n, max_abs, max_abs / max_ref, max_ref, agree, n, same, strlen(ta));
    printf("q8 greedy text:\n%s\n", tb);
    /* group-4 int8 weights: logits within a few percent, same argmax almost everywhere */
    assert_true(max_abs / max_ref < 0.05);
    assert_true(agree >= n * 9 / 10);
    free(ta);
    free(tb);
    free(tb_forced);
    free(la);
    free(lb);
    kv_model_free(a);
    kv_model_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_matches_card),
        cmocka_unit_test(test_q8_close_to_fp32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
