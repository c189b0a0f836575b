/* ruler.c - see ruler.h. Python's str.isspace and str.lower come from the
 * tables generated from Python for the LongBench scorers
 * (longbench_unicode.c), so a non-ASCII answer is matched as RULER's
 * Python matches it. */
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "longbench.h"
#include "longbench_unicode.h"
#include "ruler.h"

/* scripts/eval/synthetic/constants.py's TASKS, keyed by synthetic.yaml's names too. */
static const met_ruler_task TASKS[] = {
    {"niah", "niah", MET_RULER_MATCH_ALL},
    {"variable_tracking", "variable_tracking", MET_RULER_MATCH_ALL},
    {"common_words_extraction", "common_words_extraction", MET_RULER_MATCH_ALL},
    {"freq_words_extraction", "freq_words_extraction", MET_RULER_MATCH_ALL},
    {"qa", "qa", MET_RULER_MATCH_PART},
    {"niah_single_1", "niah", MET_RULER_MATCH_ALL},
    {"niah_single_2", "niah", MET_RULER_MATCH_ALL},
    {"niah_single_3", "niah", MET_RULER_MATCH_ALL},
    {"niah_multikey_1", "niah", MET_RULER_MATCH_ALL},
    {"niah_multikey_2", "niah", MET_RULER_MATCH_ALL},
    {"niah_multikey_3", "niah", MET_RULER_MATCH_ALL},
    {"niah_multivalue", "niah", MET_RULER_MATCH_ALL},
    {"niah_multiquery", "niah", MET_RULER_MATCH_ALL},
    {"vt", "variable_tracking", MET_RULER_MATCH_ALL},
    {"cwe", "common_words_extraction", MET_RULER_MATCH_ALL},
    {"fwe", "freq_words_extraction", MET_RULER_MATCH_ALL},
    {"qa_1", "qa", MET_RULER_MATCH_PART},
    {"qa_2", "qa", MET_RULER_MATCH_PART},
};
#define N_TASKS (int)(sizeof TASKS / sizeof TASKS[0])

const met_ruler_task *met_ruler_tasks(int *n) {
    *n = N_TASKS;
    return TASKS;
}

const met_ruler_task *met_ruler_task_find(const char *name) {
    for (int i = 0; i < N_TASKS; i++)
        if (!strcmp(TASKS[i].name, name)) return &TASKS[i];
    return NULL;
}

const char *met_ruler_scorer_name(met_ruler_scorer s) {
    return s == MET_RULER_MATCH_PART ? "string_match_part" : "string_match_all";
}

/* ------------------------------------------------------------- UTF-8 */

/* s as code points (invalid bytes as U+FFFD) into a malloc'd *out. */
static int rl_decode(const char *s, uint32_t **out, size_t *n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s), m = 0;
    uint32_t *a = malloc((len + 1) * sizeof *a);
    if (!a) return kv_errorf(KV_ENOMEM, "out of memory");
    for (size_t i = 0; i < len;) {
        unsigned c = p[i];
        int k = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        uint32_t cp = k < 0 ? 0xFFFD : k == 0 ? c : c & (0x3F >> k);
        int ok = k >= 0 && i + (size_t)k < len;
        for (int j = 1; ok && j <= k; j++) {
            ok = (p[i + j] & 0xC0) == 0x80;
            cp = cp << 6 | (p[i + j] & 0x3F);
        }
        static const uint32_t least[] = {0, 0x80, 0x800, 0x10000};
        if (ok && k > 0 && (cp < least[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = 0;
        a[m++] = ok ? cp : 0xFFFD;
        i += ok ? (size_t)k + 1 : 1;
    }
    *out = a, *n = m;
    return KV_OK;
}

static char *rl_encode(const uint32_t *a, size_t n) {
    char *o = malloc(4 * n + 1), *w = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = a[i];
        if (c < 0x80) *w++ = (char)c;
        else if (c < 0x800) *w++ = (char)(0xC0 | c >> 6), *w++ = (char)(0x80 | (c & 0x3F));
        else if (c < 0x10000)
            *w++ = (char)(0xE0 | c >> 12), *w++ = (char)(0x80 | (c >> 6 & 0x3F)), *w++ = (char)(0x80 | (c & 0x3F));
        else
            *w++ = (char)(0xF0 | c >> 18), *w++ = (char)(0x80 | (c >> 12 & 0x3F)), *w++ = (char)(0x80 | (c >> 6 & 0x3F)),
            *w++ = (char)(0x80 | (c & 0x3F));
    }
    *w = 0;
    return o;
}

static int rl_space(uint32_t cp) { return met_lb_in_ranges(met_lb_space_ranges, met_lb_space_ranges_n, cp); }

/* ---------------------------------------------------------- post-process */

int met_ruler_postprocess(const char *pred, char **out) {
    *out = NULL;
    uint32_t *a;
    size_t n;
    int rc = rl_decode(pred ? pred : "", &a, &n);
    if (rc) return rc;
    /* strip(), control characters to '\n', strip(): every character the
     * second strip removes is white space or a control character, so one
     * strip over both does the same */
    size_t b = 0, e = n;
    while (b < e && (rl_space(a[b]) || a[b] < 0x20)) b++;
    while (e > b && (rl_space(a[e - 1]) || a[e - 1] < 0x20)) e--;
    for (size_t i = b; i < e; i++)
        if (a[i] < 0x20) a[i] = '\n';
    *out = rl_encode(a + b, e - b);
    free(a);
    return *out ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
}

/* ---------------------------------------------------------- lower + match */

/* str.lower() of s as UTF-8, malloc'd; NULL when out of memory. */
static char *rl_lower(const char *s) {
    uint32_t *a, *low;
    size_t n, m = 0;
    if (rl_decode(s, &a, &n)) return NULL;
    if (!(low = malloc((3 * n + 1) * sizeof *low))) {
        free(a);
        return NULL;
    }
    m = met_lb_lower(a, n, low);
    char *o = rl_encode(low, m);
    free(a), free(low);
    return o;
}

int met_ruler_match(met_ruler_scorer s, const char *pred, const char *const *refs, int n, double *out) {
    *out = 0;
    if (n <= 0) return kv_errorf(KV_EINVAL, "ruler: %s of a sample with no references", met_ruler_scorer_name(s));
    char *p = rl_lower(pred ? pred : "");
    if (!p) return kv_errorf(KV_ENOMEM, "out of memory");
    int hits = 0;
    for (int i = 0; i < n; i++) {
        char *r = rl_lower(refs[i] ? refs[i] : "");
        if (!r) {
            free(p);
            return kv_errorf(KV_ENOMEM, "out of memory");
        }
        hits += strstr(p, r) != NULL; /* UTF-8 substrings are code point substrings */
        free(r);
    }
    free(p);
    *out = s == MET_RULER_MATCH_PART ? (hits > 0 ? 1.0 : 0.0) : (double)hits / n;
    return KV_OK;
}

int met_ruler_sample(met_ruler_scorer s, const char *raw_pred, const char *refs_nl, double *out, int *empty) {
    *out = 0;
    if (!refs_nl || !*refs_nl) return kv_errorf(KV_EINVAL, "ruler: a sample with no references");
    size_t len = strlen(refs_nl);
    char *copy = malloc(len + 1), *pred = NULL;
    const char **refs = malloc((len + 1) * sizeof *refs);
    int n = 0, rc = copy && refs ? met_ruler_postprocess(raw_pred, &pred) : kv_errorf(KV_ENOMEM, "out of memory");
    if (!rc) {
        memcpy(copy, refs_nl, len + 1);
        for (char *p = copy, *e;; p = e + 1) { /* one reference a line */
            refs[n++] = p;
            if (!(e = strchr(p, '\n'))) break;
            *e = 0;
        }
        if (empty) *empty = pred[0] == 0;
        rc = met_ruler_match(s, pred, refs, n, out);
    }
    free(pred), free(copy), free(refs);
    return rc;
}

int met_ruler_task_score(const double *scores, int n, double *out) {
    *out = 0;
    if (n <= 0) return kv_errorf(KV_EINVAL, "ruler: no samples to score (evaluate.py divides by zero)");
    double sum = 0;
    for (int i = 0; i < n; i++) sum += scores[i]; /* Python's sum, in order */
    *out = met_lb_round2(sum / n * 100);
    return KV_OK;
}
