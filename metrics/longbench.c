/* longbench.c - LongBench's scorers (see longbench.h, docs/LONGBENCH.md).
 * Each rule is written from LongBench/metrics.py and eval.py (THUDM/LongBench
 * v1), the `rouge` package's rouge/rouge_score.py (pltrdy/rouge 1.0.1) and
 * fuzzywuzzy 0.18's fuzz.ratio with python-Levenshtein 0.12. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "longbench.h"
#include "longbench_unicode.h"

/* ------------------------------------------------------------ the task table */

/* eval.py's dataset2metric, in its order; first_line marks the four
 * datasets whose prediction eval.py cuts to its first line. */
static const met_lb_task lb_tasks[] = {
    {"narrativeqa", MET_LB_QA_F1, 0, 0},
    {"qasper", MET_LB_QA_F1, 0, 0},
    {"multifieldqa_en", MET_LB_QA_F1, 0, 0},
    {"multifieldqa_zh", MET_LB_QA_F1_ZH, 0, 1},
    {"hotpotqa", MET_LB_QA_F1, 0, 0},
    {"2wikimqa", MET_LB_QA_F1, 0, 0},
    {"musique", MET_LB_QA_F1, 0, 0},
    {"dureader", MET_LB_ROUGE_ZH, 0, 1},
    {"gov_report", MET_LB_ROUGE, 0, 0},
    {"qmsum", MET_LB_ROUGE, 0, 0},
    {"multi_news", MET_LB_ROUGE, 0, 0},
    {"vcsum", MET_LB_ROUGE_ZH, 0, 1},
    {"trec", MET_LB_CLASSIFICATION, 1, 0},
    {"triviaqa", MET_LB_QA_F1, 1, 0},
    {"samsum", MET_LB_ROUGE, 1, 0},
    {"lsht", MET_LB_CLASSIFICATION, 1, 1},
    {"passage_retrieval_en", MET_LB_RETRIEVAL, 0, 0},
    {"passage_count", MET_LB_COUNT, 0, 0},
    {"passage_retrieval_zh", MET_LB_RETRIEVAL_ZH, 0, 1},
    {"lcc", MET_LB_CODE_SIM, 0, 0},
    {"repobench-p", MET_LB_CODE_SIM, 0, 0},
};

const met_lb_task *met_lb_tasks(int *n) {
    *n = (int)(sizeof lb_tasks / sizeof lb_tasks[0]);
    return lb_tasks;
}

const met_lb_task *met_lb_task_find(const char *name) {
    for (size_t i = 0; name && i < sizeof lb_tasks / sizeof lb_tasks[0]; i++)
        if (!strcmp(lb_tasks[i].name, name)) return &lb_tasks[i];
    return NULL;
}

const char *met_lb_scorer_name(met_lb_scorer s) {
    static const char *names[] = {"qa_f1_score", "qa_f1_zh_score", "rouge_score", "rouge_zh_score",
                                  "classification_score", "retrieval_score", "retrieval_zh_score",
                                  "count_score", "code_sim_score"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

int met_lb_scorer_needs_jieba(met_lb_scorer s) { return s == MET_LB_QA_F1_ZH || s == MET_LB_ROUGE_ZH; }

/* ------------------------------------------------------------ UTF-8 and classes */

/* Decodes one code point at s[*i] (strict: no overlong forms, surrogates or
 * values above U+10FFFF); -1 on invalid bytes. */
static long lb_utf8_next(const unsigned char *s, size_t len, size_t *i) {
    unsigned c = s[*i];
    if (c < 0x80) return (*i)++, (long)c;
    int n = c >= 0xC2 && c < 0xE0 ? 1 : c >= 0xE0 && c < 0xF0 ? 2 : c >= 0xF0 && c < 0xF5 ? 3 : 0;
    if (n == 0 || *i + (size_t)n >= len) return -1; /* a bad lead byte, or the text ends inside */
    uint32_t cp = c & (0x3Fu >> n);
    for (int k = 1; k <= n; k++) {
        if ((s[*i + k] & 0xC0) != 0x80) return -1;
        cp = cp << 6 | (s[*i + k] & 0x3F);
    }
    static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return -1;
    *i += (size_t)n + 1;
    return (long)cp;
}

/* Decodes s (NUL-terminated) into a malloc'd array of code points. */
static int lb_decode(const char *s, uint32_t **cps, size_t *n) {
    size_t len = strlen(s), i = 0, k = 0;
    uint32_t *a = malloc((len + 1) * sizeof *a);
    if (!a) return kv_errorf(KV_ENOMEM, "longbench: out of memory decoding %zu bytes", len);
    while (i < len) {
        long cp = lb_utf8_next((const unsigned char *)s, len, &i);
        if (cp < 0) {
            free(a);
            return kv_errorf(KV_EINVAL, "longbench: not valid UTF-8 at byte %zu", i);
        }
        a[k++] = (uint32_t)cp;
    }
    *cps = a;
    *n = k;
    return KV_OK;
}

/* Checks that s is valid UTF-8 (the scorers that work on bytes). */
static int lb_check_utf8(const char *s) {
    size_t len = strlen(s), i = 0;
    while (i < len)
        if (lb_utf8_next((const unsigned char *)s, len, &i) < 0)
            return kv_errorf(KV_EINVAL, "longbench: not valid UTF-8 at byte %zu", i);
    return KV_OK;
}

static size_t lb_encode1(uint32_t cp, char *o) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F)), 3;
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int lb_is_space(uint32_t cp) { return met_lb_in_ranges(met_lb_space_ranges, met_lb_space_ranges_n, cp); }
static int lb_is_word(uint32_t cp) { return met_lb_in_ranges(met_lb_word_ranges, met_lb_word_ranges_n, cp); }
static int lb_is_digit(uint32_t cp) { return met_lb_in_ranges(met_lb_digit_ranges, met_lb_digit_ranges_n, cp); }

/* ------------------------------------------------------------ normalize_answer */

/* Python's final-sigma rule for the capital sigma at a[i]: a cased letter
 * before it and none after it, case-ignorable characters skipped. */
static int lb_final_sigma(const uint32_t *a, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && met_lb_in_ranges(met_lb_ignorable_ranges, met_lb_ignorable_ranges_n, a[j - 1])) j--;
    if (j == 0 || !met_lb_in_ranges(met_lb_cased_ranges, met_lb_cased_ranges_n, a[j - 1])) return 0;
    for (j = i + 1; j < n && met_lb_in_ranges(met_lb_ignorable_ranges, met_lb_ignorable_ranges_n, a[j]); j++) {}
    return j == n || !met_lb_in_ranges(met_lb_cased_ranges, met_lb_cased_ranges_n, a[j]);
}

/* str.lower() of one character other than the capital sigma, into out
 * (room for 3); returns how many code points it wrote. */
static size_t lb_lower1(uint32_t cp, uint32_t *out) {
    if (cp < 0x80) return out[0] = cp >= 'A' && cp <= 'Z' ? cp + 32 : cp, 1;
    for (size_t k = 0; k < met_lb_lower_multis_n; k++)
        if (met_lb_lower_multis[k].cp == cp) {
            memcpy(out, met_lb_lower_multis[k].low, met_lb_lower_multis[k].n * sizeof *out);
            return met_lb_lower_multis[k].n;
        }
    size_t lo = 0, hi = met_lb_lower_runs_n; /* the last run starting at or below cp */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (met_lb_lower_runs[mid].first <= cp) lo = mid + 1;
        else hi = mid;
    }
    out[0] = cp;
    if (lo > 0) {
        const met_lb_lower_run *r = &met_lb_lower_runs[lo - 1];
        uint32_t off = cp - r->first;
        if (off % r->stride == 0 && off / r->stride < r->count) out[0] = (uint32_t)((int32_t)cp + r->delta);
    }
    return 1;
}

size_t met_lb_lower(const uint32_t *a, size_t n, uint32_t *out) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i] == 0x3A3) out[m++] = lb_final_sigma(a, n, i) ? 0x3C2 : 0x3C3;
        else m += lb_lower1(a[i], out + m);
    }
    return m;
}

/* string.punctuation */
static int lb_is_punct(uint32_t cp) { return cp < 0x80 && cp && strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", (int)cp); }

/* re.sub(r"\b(a|an|the)\b", " ", ...) in place: a match is exactly a
 * maximal run of word characters that spells one of the three words. */
static size_t lb_remove_articles(uint32_t *a, size_t n) {
    static const uint32_t w1[] = {'a'}, w2[] = {'a', 'n'}, w3[] = {'t', 'h', 'e'};
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        if (!lb_is_word(a[i])) {
            a[m++] = a[i++];
            continue;
        }
        size_t j = i;
        while (j < n && lb_is_word(a[j])) j++;
        size_t len = j - i;
        int art = (len == 1 && !memcmp(a + i, w1, sizeof w1)) || (len == 2 && !memcmp(a + i, w2, sizeof w2)) ||
                  (len == 3 && !memcmp(a + i, w3, sizeof w3));
        if (art) a[m++] = ' ';
        else
            for (size_t k = i; k < j; k++) a[m++] = a[k];
        i = j;
    }
    return m;
}

int met_lb_normalize_answer(const char *s, char **out) {
    *out = NULL;
    uint32_t *a, *low;
    size_t n;
    int rc = lb_decode(s ? s : "", &a, &n);
    if (rc) return rc;
    low = malloc((3 * n + 1) * sizeof *low);
    char *o = malloc(12 * n + 1); /* up to 4 bytes for each of 3n code points */
    if (!low || !o) {
        free(a), free(low), free(o);
        return kv_errorf(KV_ENOMEM, "longbench: out of memory normalizing %zu characters", n);
    }
    size_t m = met_lb_lower(a, n, low), k = 0, len = 0;
    for (size_t i = 0; i < m; i++)
        if (!lb_is_punct(low[i])) low[k++] = low[i];
    k = lb_remove_articles(low, k);
    for (size_t i = 0; i < k;) { /* " ".join(text.split()) */
        while (i < k && lb_is_space(low[i])) i++;
        if (i == k) break;
        if (len) o[len++] = ' ';
        while (i < k && !lb_is_space(low[i])) len += lb_encode1(low[i++], o + len);
    }
    o[len] = 0;
    free(a);
    free(low);
    *out = o;
    return KV_OK;
}

/* ------------------------------------------------------------ tokens */

typedef struct lb_tok {
    const char *p;
    size_t n;
} lb_tok;

typedef struct lb_toks {
    lb_tok *t;
    size_t n, cap;
} lb_toks;

static int lb_toks_push(lb_toks *v, const char *p, size_t n) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        lb_tok *t = realloc(v->t, cap * sizeof *t);
        if (!t) return kv_errorf(KV_ENOMEM, "longbench: out of memory (%zu tokens)", cap);
        v->t = t, v->cap = cap;
    }
    v->t[v->n++] = (lb_tok){p, n};
    return KV_OK;
}

static int lb_tok_cmp(const void *x, const void *y) {
    const lb_tok *a = x, *b = y;
    int c = memcmp(a->p, b->p, a->n < b->n ? a->n : b->n);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

/* str.split() of s[0..len) (valid UTF-8), appended to v. */
static int lb_split_ws(const char *s, size_t len, lb_toks *v) {
    size_t i = 0, start = 0;
    int in = 0;
    while (i < len) {
        size_t at = i;
        long cp = lb_utf8_next((const unsigned char *)s, len, &i);
        int sp = lb_is_space((uint32_t)cp);
        if (in && sp && lb_toks_push(v, s + start, at - start)) return KV_ENOMEM;
        if (!in && !sp) start = at;
        in = !sp;
    }
    return in ? lb_toks_push(v, s + start, len - start) : KV_OK;
}

/* sum over tokens of min(count in a, count in b): Counter(a) & Counter(b). */
static size_t lb_common(lb_toks *a, lb_toks *b) {
    if (!a->n || !b->n) return 0; /* (and qsort wants a non-NULL array) */
    qsort(a->t, a->n, sizeof *a->t, lb_tok_cmp);
    qsort(b->t, b->n, sizeof *b->t, lb_tok_cmp);
    size_t i = 0, j = 0, same = 0;
    while (i < a->n && j < b->n) {
        int c = lb_tok_cmp(&a->t[i], &b->t[j]);
        if (c == 0) same++, i++, j++;
        else if (c < 0) i++;
        else j++;
    }
    return same;
}

int met_lb_qa_f1(const char *pred, const char *gt, double *out) {
    *out = 0;
    char *np = NULL, *ng = NULL;
    lb_toks tp = {0}, tg = {0};
    int rc = met_lb_normalize_answer(pred, &np);
    if (!rc) rc = met_lb_normalize_answer(gt, &ng);
    if (!rc) rc = lb_split_ws(np, strlen(np), &tp);
    if (!rc) rc = lb_split_ws(ng, strlen(ng), &tg);
    if (!rc) {
        size_t same = lb_common(&tp, &tg);
        if (same) { /* f1_score, in Python's order of operations */
            double precision = 1.0 * (double)same / (double)tp.n, recall = 1.0 * (double)same / (double)tg.n;
            *out = (2 * precision * recall) / (precision + recall);
        }
    }
    free(np), free(ng), free(tp.t), free(tg.t);
    return rc;
}

/* ------------------------------------------------------------ rouge (pltrdy) */

/* A text as the rouge package sees it: sentences (the non-empty pieces
 * between '.'), each a list of word ids; a piece of white space only is the
 * one word "". */
typedef struct lb_doc {
    uint32_t *ids;     /* all words, sentence after sentence */
    size_t *start;     /* sentence s is ids[start[s] .. start[s + 1]) */
    size_t n_sent;
} lb_doc;

/* Splits text into sentences and words (slices into text), appending the
 * words to v and each sentence's first word index to *start. */
static int lb_rouge_split(const char *text, lb_toks *v, size_t **start, size_t *n_sent) {
    size_t len = strlen(text), cap = 16, ns = 0;
    size_t *st = malloc(cap * sizeof *st);
    if (!st) return kv_errorf(KV_ENOMEM, "longbench: out of memory");
    for (size_t i = 0; i <= len;) {
        const char *dot = memchr(text + i, '.', len - i);
        size_t e = dot ? (size_t)(dot - text) : len;
        if (e > i) {
            if (ns + 2 > cap) {
                size_t *t = realloc(st, (cap *= 2) * sizeof *st);
                if (!t) return free(st), kv_errorf(KV_ENOMEM, "longbench: out of memory");
                st = t;
            }
            st[ns++] = v->n;
            size_t before = v->n;
            if (lb_split_ws(text + i, e - i, v) || (v->n == before && lb_toks_push(v, text + i, 0)))
                return free(st), KV_ENOMEM;
        }
        i = e + 1;
    }
    st[ns] = v->n;
    *start = st;
    *n_sent = ns;
    return KV_OK;
}

typedef struct lb_tok_ix {
    lb_tok t;
    size_t k; /* its index in the word list */
} lb_tok_ix;

static int lb_tok_ix_cmp(const void *x, const void *y) {
    return lb_tok_cmp(&((const lb_tok_ix *)x)->t, &((const lb_tok_ix *)y)->t);
}

/* Word ids: ids[k] gets the id of v->t[k], equal words the same id.
 * Returns the number of distinct words, or -1 when out of memory. */
static long lb_intern(const lb_toks *v, uint32_t *ids) {
    lb_tok_ix *s = malloc((v->n + 1) * sizeof *s);
    if (!s) return -1;
    for (size_t k = 0; k < v->n; k++) s[k] = (lb_tok_ix){v->t[k], k};
    qsort(s, v->n, sizeof *s, lb_tok_ix_cmp);
    long distinct = 0;
    for (size_t k = 0; k < v->n; k++) {
        if (k > 0 && lb_tok_cmp(&s[k].t, &s[k - 1].t)) distinct++;
        ids[s[k].k] = (uint32_t)distinct;
    }
    free(s);
    return v->n ? distinct + 1 : 0;
}

/* Distinct ids among ids[0..n) (seen: zeroed scratch of n_ids bytes, left zeroed). */
static size_t lb_distinct(const uint32_t *ids, size_t n, unsigned char *seen) {
    size_t d = 0;
    for (size_t k = 0; k < n; k++) d += !seen[ids[k]], seen[ids[k]] = 1;
    for (size_t k = 0; k < n; k++) seen[ids[k]] = 0;
    return d;
}

/* _lcs and _recon of one sentence pair: marks in `mark` the reference words
 * the backtrack takes (from the end: a match goes diagonally, else up when
 * table[i-1][j] > table[i][j-1], else left). Returns the number of _recon
 * calls it takes, or 0 when out of memory. */
static size_t lb_recon(const uint32_t *x, size_t nx, const uint32_t *y, size_t ny, unsigned char *mark) {
    size_t w = ny + 1;
    uint32_t *t = calloc((nx + 1) * w, sizeof *t);
    if (!t) return 0;
    for (size_t i = 1; i <= nx; i++)
        for (size_t j = 1; j <= ny; j++) {
            uint32_t up = t[(i - 1) * w + j], left = t[i * w + j - 1];
            t[i * w + j] = x[i - 1] == y[j - 1] ? t[(i - 1) * w + j - 1] + 1 : up > left ? up : left;
        }
    size_t i = nx, j = ny, calls = 1;
    while (i > 0 && j > 0) {
        if (x[i - 1] == y[j - 1]) mark[x[i - 1]] = 1, i--, j--;
        else if (t[(i - 1) * w + j] > t[i * w + j - 1]) i--;
        else j--;
        calls++;
    }
    free(t);
    return calls;
}

/* The union-LCS count of rouge_l_summary_level over all sentence pairs, or
 * -1 (RecursionError) when a pair's backtrack exceeds max_frames calls. */
static long lb_union_lcs(const lb_doc *ref, const lb_doc *hyp, size_t n_ids, int max_frames, int *rc) {
    unsigned char *mark = calloc(n_ids ? n_ids : 1, 1);
    if (!mark) return *rc = kv_errorf(KV_ENOMEM, "longbench: out of memory"), 0;
    long llcs = 0;
    for (size_t r = 0; r < ref->n_sent && llcs >= 0; r++)
        for (size_t h = 0; h < hyp->n_sent; h++) {
            const uint32_t *x = ref->ids + ref->start[r], *y = hyp->ids + hyp->start[h];
            size_t calls = lb_recon(x, ref->start[r + 1] - ref->start[r], y, hyp->start[h + 1] - hyp->start[h], mark);
            if (!calls) {
                free(mark);
                return *rc = kv_errorf(KV_ENOMEM, "longbench: out of memory for an LCS table"), 0;
            }
            if (max_frames > 0 && calls > (size_t)max_frames) {
                llcs = -1;
                break;
            }
        }
    for (size_t k = 0; k < n_ids && llcs >= 0; k++) llcs += mark[k];
    free(mark);
    return llcs;
}

int met_lb_rouge_l(const char *pred, const char *gt, int max_frames, double *out, int *recursion_error) {
    *out = 0;
    if (recursion_error) *recursion_error = 0;
    int rc = lb_check_utf8(pred ? pred : "");
    if (!rc) rc = lb_check_utf8(gt ? gt : "");
    if (rc) return rc;
    lb_toks v = {0};
    lb_doc ref = {0}, hyp = {0};
    uint32_t *ids = NULL;
    rc = lb_rouge_split(gt ? gt : "", &v, &ref.start, &ref.n_sent);
    size_t n_ref_words = v.n;
    if (!rc) rc = lb_rouge_split(pred ? pred : "", &v, &hyp.start, &hyp.n_sent);
    if (rc || ref.n_sent == 0 || hyp.n_sent == 0) goto done; /* the package's ValueError: 0 */
    ids = malloc((v.n + 1) * sizeof *ids);
    unsigned char *seen = NULL;
    long n_ids = ids ? lb_intern(&v, ids) : -1;
    if (n_ids < 0) {
        rc = kv_errorf(KV_ENOMEM, "longbench: out of memory (%zu words)", v.n);
        goto done;
    }
    for (size_t s = 0; s <= hyp.n_sent; s++) hyp.start[s] -= n_ref_words; /* hyp words follow ref's */
    ref.ids = ids, hyp.ids = ids + n_ref_words;
    if (!(seen = calloc((size_t)n_ids, 1))) {
        rc = kv_errorf(KV_ENOMEM, "longbench: out of memory");
        goto done;
    }
    size_t m = lb_distinct(ref.ids, n_ref_words, seen), n = lb_distinct(hyp.ids, v.n - n_ref_words, seen);
    free(seen);
    long llcs = lb_union_lcs(&ref, &hyp, (size_t)n_ids, max_frames, &rc);
    if (rc) goto done;
    if (llcs < 0) {
        if (recursion_error) *recursion_error = 1;
        goto done;
    }
    double r_lcs = (double)llcs / (double)m, p_lcs = (double)llcs / (double)n;
    *out = 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8));
done:
    free(v.t), free(ref.start), free(hyp.start), free(ids);
    return rc;
}

/* ------------------------------------------------------------ classification, numbers */

int met_lb_classification(const char *pred, const char *gt, const char *const *classes, int n, double *out) {
    *out = 0;
    if (n < 0 || (n > 0 && !classes)) return kv_errorf(KV_EINVAL, "longbench: classification needs all_classes");
    int rc = lb_check_utf8(pred);
    if (!rc) rc = lb_check_utf8(gt);
    for (int k = 0; k < n && !rc; k++) rc = lb_check_utf8(classes[k]);
    if (rc) return rc;
    const char **match = malloc(((size_t)n + 1) * sizeof *match);
    if (!match) return kv_errorf(KV_ENOMEM, "longbench: out of memory");
    int m = 0;
    for (int k = 0; k < n; k++)
        if (strstr(pred, classes[k])) match[m++] = classes[k];
    /* for match_term in em_match_list: ... em_match_list.remove(match_term):
     * the list iterator walks indices, so after a removal it skips one;
     * remove() drops the first equal element, which may come earlier. */
    for (int i = 0; i < m; i++) {
        const char *t = match[i];
        if (strstr(gt, t) && strcmp(t, gt)) {
            int k = 0;
            while (strcmp(match[k], t)) k++;
            memmove(match + k, match + k + 1, (size_t)(m - k - 1) * sizeof *match);
            m--;
        }
    }
    for (int k = 0; k < m; k++)
        if (!strcmp(match[k], gt)) {
            *out = 1.0 / m;
            break;
        }
    free(match);
    return KV_OK;
}

/* The share of re.findall(r"\d+", pred) equal to want[0..wn): right / found,
 * 0 when none is found. */
static int lb_number_share(const char *pred, const char *want, size_t wn, double *out) {
    size_t len = strlen(pred), i = 0;
    long found = 0, right = 0;
    while (i < len) {
        size_t at = i;
        long cp = lb_utf8_next((const unsigned char *)pred, len, &i);
        if (cp < 0) return kv_errorf(KV_EINVAL, "longbench: not valid UTF-8 at byte %zu", at);
        if (!lb_is_digit((uint32_t)cp)) continue;
        size_t end = i;
        while (end < len) {
            size_t nx = end;
            long c2 = lb_utf8_next((const unsigned char *)pred, len, &nx);
            if (c2 < 0 || !lb_is_digit((uint32_t)c2)) break;
            end = nx;
        }
        found++;
        right += end - at == wn && !memcmp(pred + at, want, wn);
        i = end;
    }
    *out = found ? (double)right / (double)found : 0.0;
    return KV_OK;
}

/* The length of the \d+ run at s[0..len) (0 when s does not start with a digit). */
static size_t lb_digit_run(const char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        size_t nx = i;
        long cp = lb_utf8_next((const unsigned char *)s, len, &nx);
        if (cp < 0 || !lb_is_digit((uint32_t)cp)) break;
        i = nx;
    }
    return i;
}

int met_lb_retrieval(const char *pred, const char *gt, int zh, double *out) {
    *out = 0;
    const char *lit = zh ? "\xe6\xae\xb5\xe8\x90\xbd" : "Paragraph "; /* 段落 */
    int rc = lb_check_utf8(gt);
    if (rc) return rc;
    size_t ll = strlen(lit), glen = strlen(gt);
    for (const char *p = strstr(gt, lit); p; p = strstr(p + 1, lit)) {
        size_t at = (size_t)(p - gt) + ll, run = lb_digit_run(gt + at, glen - at);
        if (run) return lb_number_share(pred, gt + at, run, out);
    }
    return kv_errorf(KV_EINVAL, "longbench: the ground truth has no \"%s\" followed by a number "
                     "(LongBench's retrieval score raises IndexError)", zh ? "\xe6\xae\xb5\xe8\x90\xbd" : "Paragraph ");
}

int met_lb_count(const char *pred, const char *gt, double *out) {
    *out = 0;
    int rc = lb_check_utf8(gt);
    return rc ? rc : lb_number_share(pred, gt, strlen(gt), out);
}

/* ------------------------------------------------------------ code_sim */

int met_lb_fuzz_ratio(const char *a, const char *b, int *out) {
    *out = 0;
    if (!strcmp(a, b)) return *out = 100, lb_check_utf8(a); /* check_for_equivalence first */
    if (!*a || !*b) return lb_check_utf8(*a ? a : b);       /* then check_empty_string */
    uint32_t *x, *y;
    size_t nx, ny;
    int rc = lb_decode(a, &x, &nx);
    if (rc) return rc;
    if ((rc = lb_decode(b, &y, &ny))) return free(x), rc;
    uint32_t *row = calloc(ny + 1, sizeof *row);
    if (!row) {
        free(x), free(y);
        return kv_errorf(KV_ENOMEM, "longbench: out of memory");
    }
    /* the distance with substitutions at 2 is nx + ny - 2 * LCS */
    for (size_t i = 1; i <= nx; i++) {
        uint32_t diag = 0;
        for (size_t j = 1; j <= ny; j++) {
            uint32_t up = row[j];
            row[j] = x[i - 1] == y[j - 1] ? diag + 1 : up > row[j - 1] ? up : row[j - 1];
            diag = up;
        }
    }
    size_t lensum = nx + ny, dist = lensum - 2 * (size_t)row[ny];
    *out = (int)rint(100 * ((double)(lensum - dist) / (double)lensum)); /* utils.intr: int(round(x)) */
    free(x), free(y), free(row);
    return KV_OK;
}

int met_lb_code_sim(const char *pred, const char *gt, double *out) {
    *out = 0;
    while (*pred == '\n') pred++;
    const char *line = "";
    size_t n = 0;
    for (const char *p = pred;;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!memchr(p, '`', len) && !memchr(p, '#', len)) {
            int slashes = 0;
            for (size_t k = 0; k + 1 < len && !slashes; k++) slashes = p[k] == '/' && p[k + 1] == '/';
            if (!slashes) {
                line = p, n = len;
                break;
            }
        }
        if (!e) break;
        p = e + 1;
    }
    char *l = malloc(n + 1);
    if (!l) return kv_errorf(KV_ENOMEM, "longbench: out of memory");
    memcpy(l, line, n);
    l[n] = 0;
    int r;
    int rc = met_lb_fuzz_ratio(l, gt, &r);
    free(l);
    if (!rc) *out = r / 100.0;
    return rc;
}

/* ------------------------------------------------------------ eval.py */

static int lb_score_one(const met_lb_task *t, const char *pred, const char *gt, const char *const *classes,
                        int n_classes, double *s) {
    switch (t->scorer) {
    case MET_LB_QA_F1: return met_lb_qa_f1(pred, gt, s);
    case MET_LB_ROUGE: return met_lb_rouge_l(pred, gt, MET_LB_ROUGE_RECON_FRAMES, s, NULL);
    case MET_LB_CLASSIFICATION:
        if (!classes) return kv_errorf(KV_EINVAL, "longbench: %s needs all_classes", t->name);
        return met_lb_classification(pred, gt, classes, n_classes, s);
    case MET_LB_RETRIEVAL: return met_lb_retrieval(pred, gt, 0, s);
    case MET_LB_RETRIEVAL_ZH: return met_lb_retrieval(pred, gt, 1, s);
    case MET_LB_COUNT: return met_lb_count(pred, gt, s);
    case MET_LB_CODE_SIM: return met_lb_code_sim(pred, gt, s);
    default:
        return kv_errorf(KV_EUNSUPPORTED, "longbench: task %s: %s needs jieba's Chinese word segmentation, "
                         "which kvbench does not implement", t->name, met_lb_scorer_name(t->scorer));
    }
}

int met_lb_sample_score(const met_lb_task *t, const char *pred, const char *const *answers, int n_answers,
                        const char *const *classes, int n_classes, double *out) {
    *out = 0;
    if (met_lb_scorer_needs_jieba(t->scorer)) return lb_score_one(t, "", "", NULL, 0, out);
    char *p = NULL;
    if (t->first_line) { /* prediction.lstrip('\n').split('\n')[0] */
        while (*pred == '\n') pred++;
        size_t n = strcspn(pred, "\n");
        if (!(p = malloc(n + 1))) return kv_errorf(KV_ENOMEM, "longbench: out of memory");
        memcpy(p, pred, n);
        p[n] = 0;
        pred = p;
    }
    double best = 0;
    int rc = KV_OK;
    for (int k = 0; k < n_answers && !rc; k++) {
        double s;
        rc = lb_score_one(t, pred, answers[k], classes, n_classes, &s);
        if (!rc && s > best) best = s;
    }
    free(p);
    *out = rc ? 0 : best;
    return rc;
}

double met_lb_round2(double x) {
    /* glibc prints the exact binary value rounded half to even, which is
     * what Python's round(x, 2) does through its correctly rounded dtoa */
    if (!isfinite(x)) return x;
    char b[512];
    snprintf(b, sizeof b, "%.2f", x);
    return strtod(b, NULL);
}

double met_lb_np_round2(double x) { return rint(x * 100.0) / 100.0; }

int met_lb_task_score(const double *scores, int n, double *out) {
    *out = NAN;
    if (n <= 0) return kv_errorf(KV_EINVAL, "longbench: no samples to score (eval.py divides by zero)");
    double total = 0;
    for (int i = 0; i < n; i++) total += scores[i];
    *out = met_lb_round2(100 * total / n);
    return KV_OK;
}

/* numpy's pairwise sum (its add.reduce on a contiguous float64 array):
 * under 8 terms in order; up to 128 in eight interleaved partial sums;
 * above that, the two halves (the first a multiple of 8 long) apart. */
static double lb_np_pairwise(const double *a, int n) {
    if (n < 8) {
        double r = 0.;
        for (int i = 0; i < n; i++) r += a[i];
        return r;
    }
    if (n <= 128) {
        double r[8];
        memcpy(r, a, sizeof r);
        int i;
        for (i = 8; i < n - n % 8; i += 8)
            for (int k = 0; k < 8; k++) r[k] += a[i + k];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    int n2 = n / 2;
    n2 -= n2 % 8;
    return lb_np_pairwise(a, n2) + lb_np_pairwise(a + n2, n - n2);
}

/* numpy reduces in chunks of its buffer size (8192 elements), adding each
 * chunk's pairwise sum to the running total. */
#define LB_NP_BUFSIZE 8192

double met_lb_np_mean(const double *x, int n) {
    if (n <= 0) return NAN;
    double s = 0.;
    for (int i = 0; i < n; i += LB_NP_BUFSIZE) s += lb_np_pairwise(x + i, n - i < LB_NP_BUFSIZE ? n - i : LB_NP_BUFSIZE);
    return s / n;
}

const char *met_lb_e_bucket_name(int b) {
    static const char *names[MET_LB_E_BUCKETS] = {"0-4k", "4-8k", "8k+"};
    return b >= 0 && b < MET_LB_E_BUCKETS ? names[b] : "?";
}

int met_lb_e_bucket(double length) { return length < 4000 ? MET_LB_E_0_4K : length < 8000 ? MET_LB_E_4_8K : MET_LB_E_8K_PLUS; }

int met_lb_e_scores(const double *scores, const double *lengths, int n, double out[MET_LB_E_BUCKETS],
                    int counts[MET_LB_E_BUCKETS]) {
    double *b = malloc(((size_t)n + 1) * MET_LB_E_BUCKETS * sizeof *b);
    if (!b) return kv_errorf(KV_ENOMEM, "longbench: out of memory");
    int c[MET_LB_E_BUCKETS] = {0};
    for (int i = 0; i < n; i++) {
        int k = met_lb_e_bucket(lengths[i]);
        b[(size_t)k * ((size_t)n + 1) + (size_t)c[k]++] = scores[i];
    }
    for (int k = 0; k < MET_LB_E_BUCKETS; k++) {
        out[k] = met_lb_np_round2(100 * met_lb_np_mean(b + (size_t)k * ((size_t)n + 1), c[k]));
        if (counts) counts[k] = c[k];
    }
    free(b);
    return KV_OK;
}
