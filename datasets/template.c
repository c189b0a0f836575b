/* template.c - the prompt templates and their rendering. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "internal.h"
#include "template.h"

/* Wordings: keyformer-summ follows the Alpaca-style prompt of Keyformer's
 * summarization runner (METHODS.md A5); keyformer-dialog its SODA protocol
 * (narrative, role instruction, first utterance; the separator is a newline
 * here); the passkey prompt is complete in its context field. */
static const ds_template TEMPLATES[] = {
    {"keyformer-summ", 1, "summarization", "document", 0,
     "Below is an instruction that describes a task, paired with an input that provides further context. "
     "Write a response that appropriately completes the request.\n\n"
     "### Instruction:\nSummarize the following news article:\n\n### Input:\n{document}\n\n### Response:",
     "Keyformer's Alpaca-style summarization prompt", NULL},
    {"plain-summ", 1, "summarization", "document", 0, "{document}\n\nSummary:", "the article, then 'Summary:'", NULL},
    {"chat-summ", 1, "summarization", "document", 0, "[INST] Summarize the following article.\n\n{document} [/INST]",
     "Llama-2 chat style instruction", NULL},
    {"keyformer-dialog", 1, "conversation", "narrative", 0,
     "{narrative}\nGenerate a dialogue between {speaker_a} and {speaker_b} given above narrative.\n"
     "{speaker_a}: {first_turn}\n{speaker_b}:",
     "Keyformer's SODA protocol: narrative, role instruction, first turn", NULL},
    {"plain-dialog", 1, "conversation", "narrative", 0, "{speaker_a}: {first_turn}\n{speaker_b}:",
     "the first turn only", NULL},
    {"passkey", 2, "passkey", "context", 0, "{context}{question}",
     "the generated passkey prompt as is (its question a field of its own)", "{question}"},
    {"needle", 1, "needle", "context", 0, "{context}\n\n{question} Answer:", "haystack, then the question",
     "\n\n{question}"},
    /* KVCache-Factory's run_needle_in_haystack.py generate_prompt (commit 485af3c), its '<|im_start|>' text included */
    {"needle-factory", 1, "needle", "context", 0,
     "<|im_start|> This is a very long story book: <book> {context} </book>.\n Based on the content of the book, "
     "Question: {question}\nAnswer:",
     "KVCache-Factory's needle prompt (a book, then the question)",
     "\n Based on the content of the book, Question: {question}\nAnswer:"},
    {"ruler", 1, "ruler", "context", 1, "{context}", "RULER's input as is, its middle cut to fit (it ends with the question)", NULL},
    {"text", 1, "text", "document", 0, "{document}", "the text as is (fidelity, perplexity)", NULL},
    {"ruler-split", 1, "ruler", "context", 1, "{context}{question}",
     "RULER's input as context + question (ds_ruler_make / ds_ruler_load); the answer_prefix field is appended by "
     "the runner, after a chat wrap", "{question}"},
    {"ruler-base", 1, "ruler", "context", 1, "{context}{question}{answer_prefix}",
     "RULER's 'base' model template: its input, then its answer prefix", "{question}"},
    {"longbench", 1, "longbench", "context", 1, "{context}",
     "LongBench v1's per-task prompt (datasets/longbench.c, its dataset2prompt.json), cut in the middle in tokens as "
     "its pred.py does; the runner renders it, not this text", NULL},
};
#define N_TEMPLATES (int)(sizeof TEMPLATES / sizeof TEMPLATES[0])

int ds_template_count(void) { return N_TEMPLATES; }
const ds_template *ds_template_at(int i) { return i >= 0 && i < N_TEMPLATES ? &TEMPLATES[i] : NULL; }

const ds_template *ds_template_find(const char *name) {
    const char *at = strchr(name, '@');
    size_t n = at ? (size_t)(at - name) : strlen(name);
    int version = at ? atoi(at + 1) : 0;
    for (int i = 0; i < N_TEMPLATES; i++)
        if (strlen(TEMPLATES[i].name) == n && strncmp(TEMPLATES[i].name, name, n) == 0 &&
            (!version || TEMPLATES[i].version == version))
            return &TEMPLATES[i];
    return NULL;
}

/* Moves a cut point back to a UTF-8 character start, then to a space when
 * one is near (so words are not split). */
static size_t tidy_cut(const char *v, size_t at) {
    while (at > 0 && ((unsigned char)v[at] & 0xC0) == 0x80) at--;
    size_t w = at;
    while (w > 0 && at - w < 32 && v[w - 1] != ' ' && v[w - 1] != '\n') w--;
    return w > 0 && at - w < 32 ? w - 1 : at;
}

/* Fills the template with the cut field limited to cut_len bytes: its head
 * (or, for cut_middle, its first cut_len/2 and last cut_len - cut_len/2
 * bytes, moved to character and word boundaries, joined by " ... "). */
static int fill(const ds_template *t, const ds_sample *s, size_t cut_len, ds_str *out) {
    out->n = 0;
    if (ds_str_add(out, "", 0)) return KV_ENOMEM;
    for (const char *p = t->text; *p;) {
        const char *open = strchr(p, '{');
        if (!open) return ds_str_adds(out, p);
        if (ds_str_add(out, p, (size_t)(open - p))) return KV_ENOMEM;
        const char *close = strchr(open, '}');
        if (!close) return kv_errorf(KV_EINVAL, "template %s: unclosed '{'", t->name);
        char name[64];
        size_t n = (size_t)(close - open - 1);
        if (n >= sizeof name) return kv_errorf(KV_EINVAL, "template %s: field name too long", t->name);
        memcpy(name, open + 1, n);
        name[n] = 0;
        const char *v = ds_sample_field(s, name);
        if (!v)
            return kv_errorf(KV_EINVAL, "template %s@%d needs field '%s', which sample %s does not have", t->name,
                             t->version, name, s->id);
        size_t len = strlen(v);
        if (strcmp(name, t->cut) == 0 && cut_len < len) {
            if (t->cut_middle) {
                size_t head = tidy_cut(v, cut_len / 2), tail = len - (cut_len - cut_len / 2);
                while (tail < len && ((unsigned char)v[tail] & 0xC0) == 0x80) tail++;
                size_t w = tail;
                while (w < len && w - tail < 32 && v[w] != ' ' && v[w] != '\n') w++;
                if (w < len && w - tail < 32) tail = w + 1;
                if (ds_str_add(out, v, head) || ds_str_adds(out, " ... ") || ds_str_add(out, v + tail, len - tail))
                    return KV_ENOMEM;
                p = close + 1;
                continue;
            }
            len = tidy_cut(v, cut_len);
        }
        if (ds_str_add(out, v, len)) return KV_ENOMEM;
        p = close + 1;
    }
    return KV_OK;
}

int ds_template_render(const ds_template *t, const ds_sample *s, int32_t max_tokens, ds_count_tokens_fn count,
                       void *user, char **out, size_t *cut_chars) {
    *out = NULL;
    if (cut_chars) *cut_chars = 0;
    ds_str buf = {0};
    const char *v = ds_sample_field(s, t->cut);
    size_t full = v ? strlen(v) : 0;
    int rc = fill(t, s, full, &buf);
    if (rc == KV_OK && max_tokens > 0 && v) {
        int64_t n = count(user, buf.p, buf.n);
        if (n < 0) rc = (int)n;
        else if (n > max_tokens) {
            size_t lo = 0, hi = full; /* the longest cut that fits lies in [lo, hi) */
            while (rc == KV_OK && hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;
                if ((rc = fill(t, s, mid, &buf))) break;
                int64_t m = count(user, buf.p, buf.n);
                if (m < 0) rc = (int)m;
                else if (m <= max_tokens) lo = mid;
                else hi = mid;
            }
            size_t full_len = 0;
            if (rc == KV_OK && (rc = fill(t, s, full, &buf)) == KV_OK) full_len = buf.n;
            if (rc == KV_OK) rc = fill(t, s, lo, &buf);
            /* what the cut removed (the " ... " a middle cut inserts is not text kept) */
            if (rc == KV_OK && cut_chars) *cut_chars = full_len - buf.n + (t->cut_middle ? 5 : 0);
            /* Without its cut field the template alone may exceed the budget. */
            if (rc == KV_OK && (n = count(user, buf.p, buf.n)) > max_tokens)
                rc = kv_errorf(KV_EINVAL, "template %s@%d: the prompt of sample %s needs %lld tokens even with '%s' cut, over the limit of %d",
                               t->name, t->version, s->id, (long long)n, t->cut, max_tokens);
        }
    }
    if (rc) {
        free(buf.p);
        return rc;
    }
    *out = buf.p;
    return KV_OK;
}

int ds_template_question_at(const ds_template *t, const ds_sample *s, const char *rendered, size_t *offset) {
    const char *at = t->qsplit ? strstr(t->text, t->qsplit) : NULL;
    if (!at)
        return kv_errorf(KV_EINVAL, "template %s@%d has no question part to ask after the context (templates with "
                         "one: passkey, needle)", t->name, t->version);
    ds_template q = *t; /* the question part alone: no cut field in it */
    q.text = at;
    ds_str buf = {0};
    int rc = fill(&q, s, 0, &buf);
    size_t n = strlen(rendered);
    if (!rc && (buf.n > n || strcmp(rendered + n - buf.n, buf.p) != 0))
        rc = kv_errorf(KV_EINVAL, "template %s@%d: the prompt of sample %s does not end with its question part",
                       t->name, t->version, s->id);
    if (!rc) *offset = n - buf.n;
    free(buf.p);
    return rc;
}
