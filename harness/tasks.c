/* tasks.c - the task kinds' and the metrics' tables (tasks.h), with the
 * loaders and scorers the kinds' rows name. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../datasets/ruler.h"
#include "../base/kv_error.h"
#include "../metrics/longbench.h"
#include "../metrics/rouge.h"
#include "../metrics/ruler.h"
#include "../metrics/stats.h"
#include "paths.h"
#include "tasks.h"

/* ------------------------------------------------------------- metrics */

/* Exact names before the prefixes that would also match them. The
 * directions, costs and scales are those the report has always used. */
static const hx_metric_info METRICS[] = {
    /* quality: fractions, shown x100 */
    {"accuracy", 1, 0, 100, " x100", "fraction"},
    {"fid_top1_agree", 1, 0, 100, " x100", "fraction"},
    {"fid_prefix_match", 1, 0, 100, " x100", "fraction"},
    {"fid_same_top", 1, 0, 100, " x100", "fraction"},
    {"rouge*", 1, 0, 100, " x100", "fraction"},
    {"fid_rouge*", 1, 0, 100, " x100", "fraction"},
    /* quality on their own scales */
    {"needle_score", 1, 0, 1, "", "points (0-10)"},
    {"longbench_score", 1, 0, 1, "", "points (0-100)"},
    {"fid_dp_mean", 1, 0, 1, "", "probability"},
    /* lower is better */
    {"ruler_empty", 0, 0, 1, "", "fraction"}, /* answers that came back empty: a failure rate */
    {"ppl", 0, 0, 1, "", "perplexity"},
    {"nll", 0, 0, 1, "", "nats per token"},
    {"fid_ln_ppl_ratio", 0, 0, 1, "", "nats"},
    {"fid_dp_rms", 0, 0, 1, "", "probability"},
    {"fid_kl*", 0, 0, 1, "", "nats"},
    {"attn_mass_lost", 0, 0, 1, "", "fraction"},
    {"budget_exceeded", 0, 0, 1, "", "0 or 1"},
    /* costs */
    {"kv_bytes_*", 0, 1, 1.0 / (1024 * 1024), " (MiB)", "bytes"},
    {"ttft_ms", 0, 1, 1, "", "ms"},
    {"latency_*", 0, 1, 1, "", "ms"},
    {"decode_tokens_per_s", 1, 1, 1, "", "tokens/s"},
    {"tokens_per_s", 1, 1, 1, "", "tokens/s"},
    /* descriptions of the sample */
    {"longbench_bucket", 1, 0, 1, "", "LongBench-E length bucket"},
    {"context_reused", 1, 0, 1, "", "0 or 1"},
    {"chat_wrap_tokens", 1, 0, 1, "", "tokens"},
};

static const hx_metric_info METRIC_DEFAULT = {"*", 1, 0, 1, "", ""};

const hx_metric_info *hx_metric_find(const char *name) {
    const size_t n = sizeof METRICS / sizeof *METRICS;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(METRICS[i].name, name)) return &METRICS[i];
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(METRICS[i].name);
        if (METRICS[i].name[k - 1] == '*' && !strncmp(METRICS[i].name, name, k - 1)) return &METRICS[i];
    }
    return &METRIC_DEFAULT;
}

void hx_metric_put(hx_metric_list *l, const char *name, double v) {
    if (l->n < HX_MAX_METRICS) l->m[l->n++] = (hx_metric){name, v};
    else l->lost++;
}

int hx_metric_put_rouge(hx_metric_list *l, const char *prefix, const char *pred, const char *ref) {
    kv_rouge_scores s;
    if (kv_rouge_score(pred, ref, 1, &s)) return -1;
    static const char *const names[2][12] = {
        {"rouge1_f", "rouge1_p", "rouge1_r", "rouge2_f", "rouge2_p", "rouge2_r", "rougeL_f", "rougeL_p", "rougeL_r",
         "rougeLsum_f", "rougeLsum_p", "rougeLsum_r"},
        {"fid_rouge1_f", "", "", "fid_rouge2_f", "", "", "fid_rougeL_f", "", "", "fid_rougeLsum_f", "", ""}};
    int k = prefix ? 1 : 0;
    const kv_rouge_prf *prf[4] = {&s.r1, &s.r2, &s.rl, &s.rlsum};
    for (int i = 0; i < 4; i++) {
        hx_metric_put(l, names[k][i * 3], prf[i]->f);
        if (!k) {
            hx_metric_put(l, names[k][i * 3 + 1], prf[i]->p);
            hx_metric_put(l, names[k][i * 3 + 2], prf[i]->r);
        }
    }
    return 0;
}

/* RULER's score of a prediction: its task's scorer (string_match_all, or
 * string_match_part for qa) on the cleaned prediction, and whether the
 * cleaned prediction is empty (RULER's nulls). */
static int put_ruler(hx_metric_list *l, const hx_task_def *t, const ds_sample *s, const char *pred) {
    const char *name = ds_sample_field(s, "task");
    const met_ruler_task *rt = met_ruler_task_find(name && *name ? name : t->ruler_task ? t->ruler_task : "niah");
    double score;
    int empty;
    int rc = met_ruler_sample(rt ? rt->scorer : MET_RULER_MATCH_ALL, pred, s->reference, &score, &empty);
    if (rc) return rc;
    hx_metric_put(l, "accuracy", score);
    hx_metric_put(l, "ruler_empty", empty);
    return KV_OK;
}

/* pred.py's prediction (the generated ids decoded alone, as Python text)
 * into *pred, and eval.py's score of it: the task's post-processing, the
 * max over the answers, x100 as its tables print it; and LongBench-E's
 * bucket of the sample's length. */
static int put_longbench(hx_metric_list *l, const hx_task_def *t, const ds_sample *s, const int32_t *tokens, int n,
                         ds_lb_codec *c, char **pred) {
    char *raw = NULL, **answers = NULL, **classes = NULL;
    size_t raw_len = 0, pred_len;
    int n_answers = 0, n_classes = 0;
    const met_lb_task *mt = met_lb_task_find(t->longbench_task);
    int rc = mt ? c->decode(c->user, tokens, n, &raw, &raw_len)
                : kv_errorf(KV_EINVAL, "LongBench task %s has no scorer", t->longbench_task);
    if (!rc) rc = ds_lb_utf8_replace(raw, raw_len, c->per_byte, pred, &pred_len);
    if (!rc) rc = ds_lb_strings(s, "answers", &answers, &n_answers);
    if (!rc) rc = ds_lb_strings(s, "all_classes", &classes, &n_classes);
    double score = 0;
    if (!rc) rc = met_lb_sample_score(mt, *pred, (const char *const *)answers, n_answers, (const char *const *)classes,
                                      n_classes, &score);
    if (!rc) {
        hx_metric_put(l, "longbench_score", 100 * score);
        hx_metric_put(l, "longbench_bucket", met_lb_e_bucket(s->length));
    }
    free(raw);
    ds_lb_strings_free(answers, n_answers);
    ds_lb_strings_free(classes, n_classes);
    return rc;
}

/* A needle sample's scores: the fraction of its answers in the output
 * (one needle: found or not), and with needle_scorer = rouge1 the score
 * KVCache-Factory reports: rouge-score's ROUGE-1 F-measure (stemmed) of the
 * needle against the stripped output, x 10, 0 for an empty output. */
static int put_needle(hx_metric_list *ml, const hx_task_def *t, const ds_sample *s, const char *out) {
    hx_metric_put(ml, "accuracy", met_match_all(out, s->reference));
    if (t->needle_scorer != HX_NEEDLE_ROUGE1) return KV_OK;
    /* the needle sentence (its surrounding newlines are no ROUGE tokens) */
    const char *needle = t->needle_text ? t->needle_text : ds_needle_default(t->needle_protocol);
    size_t a = 0, b = strlen(out);
    while (a < b && isspace((unsigned char)out[a])) a++; /* Python's str.strip() of ASCII whitespace */
    while (b > a && isspace((unsigned char)out[b - 1])) b--;
    double score = 0;
    if (b > a) {
        kv_rouge_scores r;
        int rc = kv_rouge_score_n(out + a, b - a, needle, strlen(needle), 1, &r);
        if (rc) return rc;
        score = r.r1.f * 10.0;
    }
    hx_metric_put(ml, "needle_score", score);
    return KV_OK;
}

/* ------------------------------------------------------------ loaders */

/* The sample file's reading of a task: its path and fields. */
static void load_params(const hx_task_def *t, char *dp, size_t cap, ds_load_params *lp) {
    *lp = (ds_load_params){.max_samples = t->samples, .bad_rows = t->bad_rows, .doc_field = t->doc_field,
                           .ref_field = t->ref_field};
    if (t->data) lp->path = hx_resolve_data(t->data, dp, cap);
}

static int load_summarization(const hx_task_env *env, ds_set *set) {
    char dp[4096];
    ds_load_params lp;
    load_params(env->t, dp, sizeof dp, &lp);
    return ds_load_summarization(&lp, set);
}

static int load_conversation(const hx_task_env *env, ds_set *set) {
    char dp[4096];
    ds_load_params lp;
    load_params(env->t, dp, sizeof dp, &lp);
    return ds_load_conversation(&lp, set);
}

/* Plain text: perplexity streams it, fidelity cuts prompts from it. */
static int load_text(const hx_task_env *env, ds_set *set) {
    char dp[4096];
    ds_load_params lp;
    load_params(env->t, dp, sizeof dp, &lp);
    return ds_load_text(&lp, (size_t)env->t->min_chars, set);
}

/* RULER: a file (kvpress's layout or RULER's JSONL), or generated from its
 * task's recipe at the task's lengths. */
static int load_ruler(const hx_task_env *env, ds_set *set) {
    const hx_task_def *t = env->t;
    char dp[4096], ep[4096], qp[4096];
    ds_load_params lp;
    load_params(t, dp, sizeof dp, &lp);
    if (!t->ruler_task) return ds_ruler_load(&lp, set);
    ds_ruler_params rp = {.task = t->ruler_task, .lengths = t->lengths, .n_lengths = t->n_lengths,
                          .n_samples = t->per_cell, .seed = env->seed, .count = hx_tokbuf_count, .user = env->tb,
                          .essay_dir = hx_resolve_data("niah/paul_graham_essays", ep, sizeof ep),
                          .qa_path = t->qa_data ? hx_resolve_data(t->qa_data, qp, sizeof qp) : NULL};
    return ds_ruler_make(&rp, set);
}

/* A LongBench folder's TASK.jsonl, or the file named. */
static int load_longbench(const hx_task_env *env, ds_set *set) {
    char dp[4096];
    ds_load_params lp;
    load_params(env->t, dp, sizeof dp, &lp);
    int rc = hx_task_data_path(env->t, dp, sizeof dp);
    return rc ? rc : ds_lb_load(&lp, set);
}

static int load_passkey(const hx_task_env *env, ds_set *set) {
    const hx_task_def *t = env->t;
    return ds_make_passkey(t->lengths, t->n_lengths, t->depths, t->n_depths, t->per_cell, env->seed, hx_tokbuf_count,
                           env->tb, set);
}

/* ds_token_fns over the model's tokenizer: encode without BOS into a fresh
 * array; decode as the pieces print after BOS (SentencePiece drops the
 * first token's leading space, as Hugging Face's decode does), control
 * tokens skipped. */
static int64_t encode_ids(void *user, const char *text, size_t len, int32_t **ids) {
    int64_t n = hx_tokbuf_encode(user, text, len, 0);
    if (n < 0) return n;
    const hx_tokbuf *tc = user;
    if (!(*ids = malloc((size_t)(n ? n : 1) * sizeof **ids))) return kv_errorf(KV_ENOMEM, "out of memory");
    memcpy(*ids, tc->buf, (size_t)n * sizeof **ids);
    return n;
}

static int decode_ids(void *user, const int32_t *ids, int64_t n, char **text, size_t *len) {
    const hx_tokbuf *tc = user;
    size_t cap = 64, o = 0;
    char *out = malloc(cap);
    if (!out) return kv_errorf(KV_ENOMEM, "out of memory");
    int32_t prev = kv_tokenizer_bos(tc->tok);
    for (int64_t i = 0; i < n; i++) {
        size_t pl;
        const char *piece = kv_tokenizer_piece(tc->tok, prev, ids[i], &pl);
        prev = ids[i];
        if (o + pl + 1 > cap) {
            while (o + pl + 1 > cap) cap *= 2;
            char *b = realloc(out, cap);
            if (!b) { free(out); return kv_errorf(KV_ENOMEM, "out of memory"); }
            out = b;
        }
        memcpy(out + o, piece, pl);
        o += pl;
    }
    out[o] = '\0';
    *text = out;
    *len = o;
    return KV_OK;
}

/* Splits "a | b | c" into trimmed items (pointers into buf). */
static int split_bars(char *buf, const char **items, int cap) {
    int n = 0;
    for (char *save = NULL, *it = strtok_r(buf, "|", &save); it && n < cap; it = strtok_r(NULL, "|", &save)) {
        while (*it == ' ') it++;
        size_t l = strlen(it);
        while (l && it[l - 1] == ' ') it[--l] = '\0';
        items[n++] = it;
    }
    return n;
}

/* The needle task's sample set: its protocol, needles, depths. */
static int load_needle_set(const hx_task_def *t, hx_tokbuf *tc, ds_set *set) {
    char hp[4096], nbuf[4096] = "", abuf[4096] = "", answers[4096] = "";
    const char *needles[DS_MAX_NEEDLES], *ans[DS_MAX_NEEDLES];
    int n = 0;
    if (t->needle_text) {
        snprintf(nbuf, sizeof nbuf, "%s", t->needle_text);
        n = split_bars(nbuf, needles, DS_MAX_NEEDLES);
    } /* none: the protocol's own (datasets/needle.c) */
    if (t->needle_answer) {
        snprintf(abuf, sizeof abuf, "%s", t->needle_answer);
        int na = split_bars(abuf, ans, DS_MAX_NEEDLES);
        for (int i = 0; i < na; i++) snprintf(answers + strlen(answers), sizeof answers - strlen(answers), "%s%s", i ? "\n" : "", ans[i]);
    }
    ds_needle_params np = {.haystack_dir = hx_resolve_data(t->haystack, hp, sizeof hp), .lengths = t->lengths,
                           .n_lengths = t->n_lengths, .depths = t->needle_depths, .n_depths = t->n_needle_depths,
                           .needles = needles, .n_needles = n, .question = t->needle_question,
                           .answer = t->needle_answer ? answers : NULL, .protocol = t->needle_protocol,
                           .buffer = t->context_buffer, .period_piece = kv_tokenizer_find(tc->tok, "."),
                           .count = hx_tokbuf_count, .user = tc, .tok = {tc, encode_ids, decode_ids}};
    return ds_make_needle_ext(&np, set);
}

/* A grid larger than `samples` is cut by the runner. */
static int load_needle(const hx_task_env *env, ds_set *set) { return load_needle_set(env->t, env->tb, set); }

/* ------------------------------------------------------------ scorers */

/* Summaries and replies: rouge-score's ROUGE against the reference. */
static int score_rouge(hx_metric_list *ml, const hx_score_in *in, char **pred) {
    (void)pred;
    return hx_metric_put_rouge(ml, NULL, in->g->text, in->s->reference) ? KV_ENOMEM : KV_OK;
}

/* The pass key anywhere in the output. */
static int score_passkey(hx_metric_list *ml, const hx_score_in *in, char **pred) {
    (void)pred;
    hx_metric_put(ml, "accuracy", met_contains(in->g->text, in->s->reference));
    return KV_OK;
}

static int score_needle(hx_metric_list *ml, const hx_score_in *in, char **pred) {
    (void)pred;
    return put_needle(ml, in->t, in->s, in->g->text);
}

static int score_ruler(hx_metric_list *ml, const hx_score_in *in, char **pred) {
    (void)pred;
    return put_ruler(ml, in->t, in->s, in->g->text);
}

/* The output stored is pred.py's prediction. */
static int score_longbench(hx_metric_list *ml, const hx_score_in *in, char **pred) {
    return put_longbench(ml, in->t, in->s, in->g->tokens, in->g->n, in->lbc, pred);
}

/* --------------------------------------------------------- task kinds */

/* Memory in two figures where there is a prompt: the most held while it was
 * read (a whole prefill holds it all once) and the most held afterwards. */
#define PROMPT_MEM "kv_bytes_prompt_peak,kv_bytes_steady_peak"
#define GEN_PLOTS "fid_top1_agree,attn_mass_lost"

/* In hx_task_kind order. */
static const hx_task_kind_info KINDS[] = {
    {HX_TASK_SUMMARIZATION, "summarization", "keyformer-summ", "summarization", 0, load_summarization, score_rouge,
     "rougeLsum_f", GEN_PLOTS, "decode_tokens_per_s",
     "rouge1_f,rouge2_f,rougeLsum_f,fid_top1_agree,fid_kl,attn_mass_lost," PROMPT_MEM},
    {HX_TASK_CONVERSATION, "conversation", "keyformer-dialog", "conversation", 0, load_conversation, score_rouge,
     "rougeLsum_f", GEN_PLOTS, "decode_tokens_per_s",
     "rouge1_f,rouge2_f,rougeLsum_f,fid_top1_agree,fid_kl,attn_mass_lost," PROMPT_MEM},
    {HX_TASK_PASSKEY, "passkey", "passkey", "passkey", HX_KIND_GRID, load_passkey, score_passkey, "accuracy", GEN_PLOTS,
     "decode_tokens_per_s", "accuracy," PROMPT_MEM},
    {HX_TASK_NEEDLE, "needle", "needle", "needle", HX_KIND_GRID, load_needle, score_needle, "accuracy", GEN_PLOTS,
     "decode_tokens_per_s", "accuracy,needle_score," PROMPT_MEM},
    {HX_TASK_RULER, "ruler", "ruler-split", "ruler", 0, load_ruler, score_ruler, "accuracy", GEN_PLOTS,
     "decode_tokens_per_s", "accuracy," PROMPT_MEM},
    /* any text: only drift from the full cache is scored */
    {HX_TASK_FIDELITY, "fidelity", "text", NULL, 0, load_text, NULL, "fid_top1_agree", "attn_mass_lost",
     "decode_tokens_per_s", "fid_top1_agree,fid_kl,fid_kl_p99,fid_ln_ppl_ratio,attn_mass_lost,fid_rougeL_f," PROMPT_MEM},
    /* streaming: one token at a time through the evicting cache */
    {HX_TASK_PERPLEXITY, "perplexity", "text", "text", HX_KIND_STREAM, load_text, NULL, "ppl", "", "tokens_per_s",
     "ppl,kv_bytes_peak"},
    /* LongBench: the report leads with its score, the plots with agreement */
    {HX_TASK_LONGBENCH, "longbench", "longbench", "longbench", 0, load_longbench, score_longbench, "fid_top1_agree",
     GEN_PLOTS, "decode_tokens_per_s", "longbench_score,fid_top1_agree," PROMPT_MEM},
};

const hx_task_kind_info *hx_task_kind_get(hx_task_kind kind) {
    return (unsigned)kind < sizeof KINDS / sizeof *KINDS ? &KINDS[kind] : NULL;
}

const hx_task_kind_info *hx_task_kind_find(const char *name) {
    for (size_t i = 0; i < sizeof KINDS / sizeof *KINDS; i++)
        if (!strcmp(KINDS[i].name, name)) return &KINDS[i];
    return NULL;
}

const char *hx_task_kind_names(void) {
    static char buf[256];
    if (buf[0]) return buf;
    const size_t n = sizeof KINDS / sizeof *KINDS;
    for (size_t i = 0; i < n; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i == 0 ? "" : i + 1 < n ? ", " : " or ",
                 KINDS[i].name);
    return buf;
}
