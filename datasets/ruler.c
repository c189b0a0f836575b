/* ruler.c - RULER's synthetic tasks, generated as NVIDIA/RULER's scripts
 * (scripts/data/synthetic/{niah,variable_tracking,common_words_extraction,
 * freq_words_extraction,qa}.py, templates from its constants.py, task rows
 * from scripts/synthetic.yaml) generate them. Written anew in C; what
 * differs is said where it differs and in each sample's `source` field:
 *  - random draws come from splitmix64 seeded per sample, not Python's
 *    Mersenne Twister, so the structure matches RULER's, not the draws;
 *  - words come from the Debian wamerican list, not the wonderwords package
 *    (needle keys are two list words joined by '-', RULER's adjective-noun);
 *  - essays are cut into sentences at '.', '!' or '?' closing a word when
 *    the next word does not begin in lower case, not by NLTK's punkt;
 *  - the length search runs per sample on that sample's own draws (RULER
 *    searches once per task, then steps a sample's haystack down by its
 *    increment until it fits), so every sample is within one unit. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../base/hash.h"
#include "../base/file.h"
#include "../base/kv_error.h"
#include "../base/rng.h"
#include "internal.h"
#include "ruler.h"

#define RL_DEFAULT_WORDS "/usr/share/dict/american-english"
#define RL_MAX_NEEDLES 64 /* keys x values of a niah row */

/* ------------------------------------------------------------ the tasks */

/* scripts/synthetic.yaml; tokens_to_generate from constants.py's TASKS. */
static const ds_ruler_task TASKS[] = {
    {"niah_single_1", DS_RULER_NIAH, "niah", 128, DS_RULER_NOISE, DS_RULER_WORDS, DS_RULER_NUMBERS, 1, 1, 1, 0, 0, 0, 0, 0, 0, NULL},
    {"niah_single_2", DS_RULER_NIAH, "niah", 128, DS_RULER_ESSAY, DS_RULER_WORDS, DS_RULER_NUMBERS, 1, 1, 1, 0, 0, 0, 0, 0, 0, NULL},
    {"niah_single_3", DS_RULER_NIAH, "niah", 128, DS_RULER_ESSAY, DS_RULER_WORDS, DS_RULER_UUIDS, 1, 1, 1, 0, 0, 0, 0, 0, 0, NULL},
    {"niah_multikey_1", DS_RULER_NIAH, "niah", 128, DS_RULER_ESSAY, DS_RULER_WORDS, DS_RULER_NUMBERS, 4, 1, 1, 0, 0, 0, 0, 0, 0, NULL},
    {"niah_multikey_2", DS_RULER_NIAH, "niah", 128, DS_RULER_NEEDLE, DS_RULER_WORDS, DS_RULER_NUMBERS, 1, 1, 1, 0, 0, 0, 0, 0, 0, NULL},
    {"niah_multikey_3", DS_RULER_NIAH, "niah", 128, DS_RULER_NEEDLE, DS_RULER_UUIDS, DS_RULER_UUIDS, 1, 1, 1, 0, 0, 0, 0, 0, 0, NULL},
    {"niah_multivalue", DS_RULER_NIAH, "niah", 128, DS_RULER_ESSAY, DS_RULER_WORDS, DS_RULER_NUMBERS, 1, 4, 1, 0, 0, 0, 0, 0, 0, NULL},
    {"niah_multiquery", DS_RULER_NIAH, "niah", 128, DS_RULER_ESSAY, DS_RULER_WORDS, DS_RULER_NUMBERS, 1, 1, 4, 0, 0, 0, 0, 0, 0, NULL},
    {"vt", DS_RULER_VT, "variable_tracking", 30, DS_RULER_NOISE, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, NULL},
    {"cwe", DS_RULER_CWE, "common_words_extraction", 120, 0, 0, 0, 0, 0, 0, 0, 0, 30, 3, 10, 0, NULL},
    {"fwe", DS_RULER_FWE, "freq_words_extraction", 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2.0, NULL},
    {"qa_1", DS_RULER_QA, "qa", 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "squad"},
    {"qa_2", DS_RULER_QA, "qa", 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "hotpotqa"},
};
#define N_TASKS (int)(sizeof TASKS / sizeof TASKS[0])

int ds_ruler_task_count(void) { return N_TASKS; }
const ds_ruler_task *ds_ruler_task_at(int i) { return i >= 0 && i < N_TASKS ? &TASKS[i] : NULL; }
const ds_ruler_task *ds_ruler_task_find(const char *name) {
    for (int i = 0; i < N_TASKS; i++)
        if (!strcmp(TASKS[i].name, name)) return &TASKS[i];
    return NULL;
}

/* The templates (constants.py), cut where kvpress cuts context from question. */
static const char NOISE[] = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
static const char VT_HEAD[] = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n";
static const char VT_Q[] = "Question: Find all variables that are assigned the value %s in the text above.";
static const char VT_AP[] = " Answer: According to the chain(s) of variable assignment in the text above, %d variables "
                            "are assigned the value %s, they are: ";
static const char CWE_HEAD[] = "Below is a numbered list of words. In these words, some appear more often than others. "
                               "Memorize the ones that appear most often.\n";
static const char CWE_Q[] = "Question: What are the 10 most common words in the above list?";
static const char CWE_AP[] = " Answer: The top 10 words that appear most often in the list are:";
static const char FWE_HEAD[] = "Read the following coded text and track the frequency of each coded word. Find the three "
                               "most frequently appeared coded words. ";
static const char FWE_Q[] = "Question: Do not provide any explanation. Please ignore the dots '....'. What are the three "
                            "most frequently appeared words in the above coded text?";
static const char FWE_AP[] = " Answer: According to the coded text above, the three most frequently appeared words are:";
static const char QA_INSTR[] = "Answer the question based on the given documents. Only give me the answer and do not "
                               "output any other words.";
static const char QA_AP[] = " Answer:";

/* ------------------------------------------------------------ state */

typedef struct rl_qa_item {
    char *query;
    char *outputs;   /* '\n'-joined */
    int *docs;       /* [n_docs] gold documents, then [n_more] the article's other paragraphs */
    int n_docs, n_more;
} rl_qa_item;

typedef struct rl_gen {
    const ds_ruler_task *t;
    const ds_ruler_params *p;
    int32_t length;
    int index;          /* the sample's number at this length (qa: its question) */
    uint64_t seed;      /* the sample's: every build starts from it */
    int icl;            /* vt: building the in-context example */
    char **words;       /* the word list, sorted */
    size_t n_words;
    char **essay;       /* the essays' words */
    size_t n_essay;
    char **docs;        /* qa: the unique documents, sorted */
    int n_docs;
    rl_qa_item *qas;
    int n_qas;
    char (*vocab)[8];   /* fwe: this sample's coded words */
    int n_vocab;
    ds_str icl_text;    /* vt: this sample's example, answer included */
    ds_str ctx, q, ap, refs, full;
    int depth;          /* single-needle niah: the needle's depth in percent */
} rl_gen;

static int rl_addf(ds_str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rl_addf(ds_str *s, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) return kv_errorf(KV_EINVAL, "ruler: a formatted line is too long");
    return ds_str_add(s, buf, (size_t)n);
}

static uint64_t rl_below(uint64_t *rng, uint64_t n) { return n ? kv_splitmix64(rng) % n : 0; }

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* k distinct numbers of [0, n) in the order drawn (random.sample's contract):
 * by rejection for a few, a partial Fisher-Yates for many. */
static int rl_sample(uint64_t *rng, int64_t n, int64_t k, int64_t *out) {
    if (k > n) return kv_errorf(KV_EINVAL, "ruler: cannot draw %lld distinct items of %lld", (long long)k, (long long)n);
    if (k <= 64) {
        for (int64_t i = 0; i < k; i++) {
            int dup;
            do {
                out[i] = (int64_t)rl_below(rng, (uint64_t)n);
                dup = 0;
                for (int64_t j = 0; j < i; j++) dup |= out[j] == out[i];
            } while (dup);
        }
        return KV_OK;
    }
    int64_t *perm = malloc((size_t)n * sizeof *perm);
    if (!perm) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = 0; i < k; i++) {
        int64_t j = i + (int64_t)rl_below(rng, (uint64_t)(n - i));
        int64_t x = perm[i];
        perm[i] = perm[j], perm[j] = x;
        out[i] = perm[i];
    }
    free(perm);
    return KV_OK;
}

static void rl_shuffle(uint64_t *rng, void *base, size_t n, size_t size) {
    char tmp[256], *b = base; /* size <= 256: needles are the largest items */
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rl_below(rng, i);
        memcpy(tmp, b + (i - 1) * size, size);
        memcpy(b + (i - 1) * size, b + j * size, size);
        memcpy(b + j * size, tmp, size);
    }
}

/* -------------------------------------------------------- word sources */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The lines of path that are 3+ lowercase ASCII letters, sorted and unique
 * (RULER's wonderwords nouns, adjectives and verbs are lowercase words). */
static int rl_load_words(rl_gen *g, const char *path) {
    size_t len;
    char *buf;
    if (kv_read_file(path, &buf, &len))
        return kv_errorf(KV_EIO, "%s: cannot read the word list RULER's words come from (Debian package wamerican: "
                         "apt-get install wamerican)", path);
    size_t cap = 1024;
    g->words = malloc(cap * sizeof *g->words);
    for (char *line = buf, *end; g->words && line < buf + len; line = end + 1) {
        end = memchr(line, '\n', (size_t)(buf + len - line));
        if (!end) end = buf + len;
        size_t n = (size_t)(end - line);
        int ok = n >= 3;
        for (size_t i = 0; ok && i < n; i++) ok = line[i] >= 'a' && line[i] <= 'z';
        if (!ok) continue;
        if (g->n_words == cap) {
            char **w = realloc(g->words, (cap *= 2) * sizeof *w);
            if (!w) break;
            g->words = w;
        }
        if (!(g->words[g->n_words] = strndup(line, n))) break;
        g->n_words++;
    }
    int done = g->words && (g->n_words == 0 || g->words[g->n_words - 1]);
    free(buf);
    if (!g->words || !done) return kv_errorf(KV_ENOMEM, "out of memory");
    qsort(g->words, g->n_words, sizeof *g->words, cmp_str);
    size_t m = 0;
    for (size_t i = 0; i < g->n_words; i++)
        if (m && !strcmp(g->words[m - 1], g->words[i])) free(g->words[i]);
        else g->words[m++] = g->words[i];
    g->n_words = m;
    if (m < 1000) return kv_errorf(KV_EFORMAT, "%s: only %zu lowercase words; a word list is expected", path, m);
    return KV_OK;
}

/* The essays (.txt files of dir, sorted by name, concatenated as RULER's
 * PaulGrahamEssays.json is) as words: re.sub(r'\s+', ' ', text).split(' '). */
static int rl_load_essays(rl_gen *g, const char *dir) {
    if (!dir) return kv_errorf(KV_EINVAL, "ruler: task %s needs the essay folder (essay_dir: "
                               "$KVBENCH_DATA/niah/paul_graham_essays)", g->t->name);
    DIR *d = opendir(dir);
    if (!d) return kv_errorf(KV_EIO, "%s: cannot open the essay folder", dir);
    char **names = NULL;
    size_t n = 0;
    int rc = KV_OK;
    for (struct dirent *e; (e = readdir(d)) && !rc;) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".txt")) continue;
        char **b = realloc(names, (n + 1) * sizeof *b);
        if (!b || !(b[n] = strdup(e->d_name))) rc = kv_errorf(KV_ENOMEM, "out of memory");
        if (b) names = b;
        if (!rc) n++;
    }
    closedir(d);
    if (!rc) qsort(names, n, sizeof *names, cmp_str);
    ds_str all = {0};
    for (size_t i = 0; i < n && !rc; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t len;
        char *t;
        rc = kv_read_file(path, &t, &len);
        if (!rc && (ds_str_add(&all, t, len) || ds_str_adds(&all, " "))) rc = kv_errorf(KV_ENOMEM, "out of memory");
        free(t);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    size_t cap = 0;
    for (char *s = all.p, *save = NULL, *w; !rc && (w = strtok_r(s, " \t\n\r\f\v", &save)); s = NULL) {
        if (g->n_essay == cap) {
            char **b = realloc(g->essay, (cap = cap ? cap * 2 : 4096) * sizeof *b);
            if (!b) { rc = kv_errorf(KV_ENOMEM, "out of memory"); break; }
            g->essay = b;
        }
        if (!(g->essay[g->n_essay++] = strdup(w))) rc = kv_errorf(KV_ENOMEM, "out of memory");
    }
    free(all.p);
    if (!rc && !g->n_essay) rc = kv_errorf(KV_EFORMAT, "%s: no essay text (.txt files)", dir);
    return rc;
}

/* ------------------------------------------------------------- needles */

static const char *type_name(ds_ruler_value v) { return v == DS_RULER_WORDS ? "words" : v == DS_RULER_NUMBERS ? "numbers" : "uuids"; }

/* A needle key or value: RULER's generate_random (7-digit number, uuid4,
 * or a word: two list words joined by '-' in place of adjective-noun). */
static void rl_value(const rl_gen *g, uint64_t *rng, ds_ruler_value v, char *out, size_t cap) {
    if (v == DS_RULER_NUMBERS) {
        snprintf(out, cap, "%d", 1000000 + (int)rl_below(rng, 9000000));
    } else if (v == DS_RULER_UUIDS) {
        unsigned char b[16];
        uint64_t hi = kv_splitmix64(rng), lo = kv_splitmix64(rng);
        for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hi >> (56 - 8 * i)), b[8 + i] = (unsigned char)(lo >> (56 - 8 * i));
        b[6] = (unsigned char)((b[6] & 0x0F) | 0x40); /* version 4 */
        b[8] = (unsigned char)((b[8] & 0x3F) | 0x80); /* RFC 4122 variant */
        snprintf(out, cap, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
                 b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    } else {
        const char *a = g->words[rl_below(rng, g->n_words)], *c = g->words[rl_below(rng, g->n_words)];
        if (snprintf(out, cap, "%s-%s", a, c) >= (int)cap) out[cap - 1] = 0; /* list words are short */
    }
}

static void rl_needle(const rl_gen *g, const char *key, const char *value, char *out, size_t cap) {
    /* keys and values are at most 2 x 63 bytes: it always fits */
    if (snprintf(out, cap, "One of the special magic %s for %s is: %s.", type_name(g->t->type_v), key, value) >= (int)cap)
        out[cap - 1] = 0;
}

/* A sentence ends after a word closing in '.', '!' or '?' (quotes or
 * brackets after it allowed) when the next word does not start lower case. */
static int rl_sentence_end(const char *w, const char *next) {
    size_t n = strlen(w);
    while (n && strchr("\"')]", w[n - 1])) n--;
    if (!n || !strchr(".!?", w[n - 1])) return 0;
    return !next || !islower((unsigned char)next[0]);
}

/* niah.py's essay haystack: n words (the essays repeated when short), cut
 * into sentences, the needles after the sentences at int(S * depth / 100)
 * for depths drawn from round(linspace(0, 100, 40)), pieces joined by ' '. */
static int rl_essay_context(rl_gen *g, uint64_t *rng, int64_t n, char (*needles)[256], int m, ds_str *out) {
    int64_t *start = malloc((size_t)(n + 2) * sizeof *start), S = 0;
    if (!start) return kv_errorf(KV_ENOMEM, "out of memory");
    start[S++] = 0;
    for (int64_t i = 0; i + 1 < n; i++)
        if (rl_sentence_end(g->essay[i % g->n_essay], g->essay[(i + 1) % g->n_essay])) start[S++] = i + 1;
    start[S] = n;
    int64_t pick[RL_MAX_NEEDLES], pos[RL_MAX_NEEDLES + 2];
    int rc = rl_sample(rng, 40, m, pick);
    for (int i = 0; i < m && !rc; i++) {
        int depth = (int)lround(100.0 * (double)pick[i] / 39.0);
        pos[i + 1] = (int64_t)((double)S * ((double)depth / 100.0)); /* Python's float arithmetic */
        if (m == 1) g->depth = depth;
    }
    if (!rc) qsort(pos + 1, (size_t)m, sizeof *pos, cmp_i64);
    pos[0] = 0, pos[m + 1] = S;
    for (int i = 1; i <= m + 1 && !rc; i++) {
        if (i > 1) rc = ds_str_adds(out, " ");
        for (int64_t w = start[pos[i - 1]]; w < start[pos[i]] && !rc; w++)
            rc = (w > start[pos[i - 1]] && ds_str_adds(out, " ")) || ds_str_adds(out, g->essay[w % g->n_essay]);
        if (!rc && i - 1 < m) rc = ds_str_adds(out, " ") || ds_str_adds(out, needles[i - 1]);
    }
    free(start);
    return rc ? (rc < 0 ? rc : kv_errorf(KV_ENOMEM, "out of memory")) : KV_OK;
}

/* niah.py's noise and needle haystacks: n lines (the noise sentence, or
 * needles of random keys and values), the needles before the lines at m
 * distinct positions, joined by '\n'. */
static int rl_line_context(rl_gen *g, uint64_t *rng, int64_t n, char (*needles)[256], int m, ds_str *out) {
    int64_t pos[RL_MAX_NEEDLES];
    int rc = rl_sample(rng, n, m, pos);
    if (rc) return rc;
    qsort(pos, (size_t)m, sizeof *pos, cmp_i64);
    if (m == 1 && n) g->depth = (int)(pos[0] * 100 / n);
    char line[256], key[64], value[64];
    for (int64_t j = 0, r = 0; j < n && !rc; j++) {
        /* the needle drawn last is inserted at the smallest position (the
         * script inserts at positions in descending order) */
        if (r < m && pos[r] == j) rc = ds_str_adds(out, needles[m - 1 - r++]) || ds_str_adds(out, "\n");
        const char *text = NOISE;
        if (g->t->haystack == DS_RULER_NEEDLE) {
            rl_value(g, rng, g->t->type_k, key, sizeof key);
            rl_value(g, rng, g->t->type_v, value, sizeof value);
            rl_needle(g, key, value, line, sizeof line);
            text = line;
        }
        if (!rc) rc = ds_str_adds(out, text) || (j + 1 < n && ds_str_adds(out, "\n"));
    }
    return rc ? (rc < 0 ? rc : kv_errorf(KV_ENOMEM, "out of memory")) : KV_OK;
}

/* niah.py's generate_input_output with n haystack units. */
static int rl_niah_build(rl_gen *g, int64_t n) {
    const ds_ruler_task *t = g->t;
    uint64_t rng = g->seed;
    int nk = t->num_k > t->num_q ? t->num_k : t->num_q, m = nk * t->num_v;
    char keys[RL_MAX_NEEDLES][64], values[RL_MAX_NEEDLES][64], needles[RL_MAX_NEEDLES][256];
    for (int k = 0; k < nk; k++) {
        int dup;
        do { /* distinct keys (RULER leaves a collision to chance) */
            rl_value(g, &rng, t->type_k, keys[k], sizeof keys[k]);
            dup = 0;
            for (int j = 0; j < k; j++) dup |= !strcmp(keys[j], keys[k]);
        } while (dup);
        for (int v = 0; v < t->num_v; v++) {
            rl_value(g, &rng, t->type_v, values[k * t->num_v + v], sizeof values[0]);
            rl_needle(g, keys[k], values[k * t->num_v + v], needles[k * t->num_v + v], sizeof needles[0]);
        }
    }
    rl_shuffle(&rng, needles, (size_t)m, sizeof needles[0]);
    int single = t->num_q * t->num_v == 1; /* the template's singular wording */
    char type_v[16];
    snprintf(type_v, sizeof type_v, "%s", type_name(t->type_v));
    if (single) type_v[strlen(type_v) - 1] = 0;
    int rc = rl_addf(&g->ctx, "%s special magic %s %s hidden within the following text. Make sure to memorize it. "
                     "I will quiz you about the %s afterwards.\n", single ? "A" : "Some", type_v, single ? "is" : "are", type_v);
    if (!rc) rc = t->haystack == DS_RULER_ESSAY ? rl_essay_context(g, &rng, n, needles, m, &g->ctx)
                                                : rl_line_context(g, &rng, n, needles, m, &g->ctx);
    if (!rc) rc = ds_str_adds(&g->ctx, "\n");
    int64_t qi[RL_MAX_NEEDLES];
    if (!rc) rc = rl_sample(&rng, nk, t->num_q, qi);
    ds_str query = {0};
    for (int i = 0; i < t->num_q && !rc; i++) {
        rc = ds_str_adds(&query, i == 0 ? "" : i + 1 < t->num_q ? ", " : ", and ") || ds_str_adds(&query, keys[qi[i]]);
        for (int v = 0; v < t->num_v && !rc; v++)
            rc = (g->refs.n && ds_str_adds(&g->refs, "\n")) || ds_str_adds(&g->refs, values[qi[i] * t->num_v + v]);
    }
    if (!rc) rc = rl_addf(&g->q, "What %s the special magic %s for ", single ? "is" : "are all", type_v) ||
                  ds_str_adds(&g->q, query.p) || ds_str_adds(&g->q, " mentioned in the provided text?");
    if (!rc) rc = rl_addf(&g->ap, " The special magic %s for ", type_v) || ds_str_adds(&g->ap, query.p) ||
                  rl_addf(&g->ap, " mentioned in the provided text %s", single ? "is" : "are");
    free(query.p);
    return rc ? (rc < 0 ? rc : kv_errorf(KV_ENOMEM, "out of memory")) : KV_OK;
}

/* ---------------------------------------------------- variable tracking */

/* variable_tracking.py's noise haystack: n noise lines with each chain's
 * lines at sorted distinct positions of the growing list. The example
 * (g->icl) has 3-letter names, the task 5; values are 10000..99998. */
static int rl_vt_build(rl_gen *g, int64_t n) {
    const ds_ruler_task *t = g->t;
    uint64_t rng = g->icl ? g->seed ^ 0x9E3779B97F4A7C15ull : g->seed;
    int hops = t->num_hops, nv = t->num_chains * (hops + 1), len = g->icl ? 3 : 5;
    char (*vars)[8] = calloc((size_t)nv, sizeof *vars);
    char (*lines)[48] = calloc((size_t)nv, sizeof *lines);
    const char **seq = malloc((size_t)(n + nv) * sizeof *seq);
    int64_t pos[RL_MAX_NEEDLES];
    int rc = vars && lines && seq && hops + 1 <= RL_MAX_NEEDLES ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    for (int i = 0; i < nv && !rc; i++) {
        int dup;
        do {
            for (int c = 0; c < len; c++) vars[i][c] = (char)('A' + rl_below(&rng, 26));
            vars[i][len] = 0;
            dup = 0;
            for (int j = 0; j < i; j++) dup |= !strcmp(vars[j], vars[i]);
        } while (dup);
    }
    char value[16] = "", first[16] = "";
    for (int c = 0; c < t->num_chains && !rc; c++) {
        char *v0 = vars[c * (hops + 1)];
        snprintf(value, sizeof value, "%d", 10000 + (int)rl_below(&rng, 89999));
        if (c == 0) snprintf(first, sizeof first, "%s", value); /* the query: chain 0's value */
        snprintf(lines[c * (hops + 1)], sizeof lines[0], "VAR %s = %s", v0, value);
        for (int j = 0; j < hops; j++) /* the script's trailing space kept */
            snprintf(lines[c * (hops + 1) + j + 1], sizeof lines[0], "VAR %s = VAR %s ", vars[c * (hops + 1) + j + 1],
                     vars[c * (hops + 1) + j]);
    }
    int64_t count = n;
    for (int64_t i = 0; i < n && !rc; i++) seq[i] = NOISE;
    for (int c = 0; c < t->num_chains && !rc; c++) {
        if ((rc = rl_sample(&rng, count, hops + 1, pos))) break;
        qsort(pos, (size_t)(hops + 1), sizeof *pos, cmp_i64);
        for (int j = 0; j <= hops; j++) {
            int64_t at = pos[j] + j;
            memmove(seq + at + 1, seq + at, (size_t)(count - at) * sizeof *seq);
            seq[at] = lines[c * (hops + 1) + j];
            count++;
        }
    }
    if (!rc && !g->icl) rc = ds_str_add(&g->ctx, g->icl_text.p, g->icl_text.n) || ds_str_adds(&g->ctx, "\n");
    if (!rc) rc = ds_str_adds(&g->ctx, VT_HEAD);
    for (int64_t i = 0; i < count && !rc; i++) rc = (i && ds_str_adds(&g->ctx, "\n")) || ds_str_adds(&g->ctx, seq[i]);
    if (!rc) rc = ds_str_adds(&g->ctx, "\n") || rl_addf(&g->q, VT_Q, first) || rl_addf(&g->ap, VT_AP, hops + 1, first);
    for (int j = 0; j <= hops && !rc; j++) rc = (j && ds_str_adds(&g->refs, "\n")) || ds_str_adds(&g->refs, vars[j]);
    free(vars), free(lines), free(seq);
    return rc ? (rc < 0 ? rc : kv_errorf(KV_ENOMEM, "out of memory")) : KV_OK;
}

/* ------------------------------------------------------- common words */

/* common_words_extraction.py's get_example: nw distinct words, the first
 * num_cw of them cr times each and the rest ur times, shuffled, written as
 * "1. w 2. w ..."; the common words' indices into *common. */
static int rl_cwe_example(rl_gen *g, uint64_t *rng, int64_t nw, int cr, int ur, ds_str *out, int64_t *common) {
    int ncw = g->t->num_cw;
    if (nw > (int64_t)g->n_words)
        return kv_errorf(KV_EINVAL, "ruler: cwe needs %lld distinct words; the word list has %zu", (long long)nw, g->n_words);
    int64_t *pick = malloc((size_t)nw * sizeof *pick);
    int64_t n_list = ncw * (int64_t)cr + (nw - ncw) * (int64_t)ur;
    int64_t *list = malloc((size_t)(n_list > 0 ? n_list : 1) * sizeof *list);
    int rc = pick && list ? rl_sample(rng, (int64_t)g->n_words, nw, pick) : kv_errorf(KV_ENOMEM, "out of memory");
    int64_t k = 0;
    for (int r = 0; r < cr && !rc; r++)
        for (int c = 0; c < ncw; c++) list[k++] = pick[c];
    for (int r = 0; r < ur && !rc; r++)
        for (int64_t u = ncw; u < nw; u++) list[k++] = pick[u];
    if (!rc) rl_shuffle(rng, list, (size_t)k, sizeof *list);
    for (int64_t i = 0; i < k && !rc; i++)
        rc = rl_addf(out, "%s%lld. ", i ? " " : "", (long long)i + 1) || ds_str_adds(out, g->words[list[i]]);
    for (int c = 0; c < ncw && !rc; c++) common[c] = pick[c];
    free(pick), free(list);
    return rc ? (rc < 0 ? rc : kv_errorf(KV_ENOMEM, "out of memory")) : KV_OK;
}

/* One in-context example, then the task with n words (the short-context
 * frequencies below 4096 tokens, as the script switches them). */
static int rl_cwe_build(rl_gen *g, int64_t n) {
    const ds_ruler_task *t = g->t;
    uint64_t rng = g->seed;
    int small = g->length < 4096, ncw = t->num_cw;
    int64_t common[64];
    if (ncw > 64 || n < ncw) return kv_errorf(KV_EINVAL, "ruler: cwe with %lld words, fewer than its %d common ones", (long long)n, ncw);
    int rc = ds_str_adds(&g->ctx, CWE_HEAD) ||
             rl_cwe_example(g, &rng, small ? 20 : 40, small ? 3 : 10, small ? 1 : 3, &g->ctx, common) ||
             ds_str_adds(&g->ctx, "\n") || ds_str_adds(&g->ctx, CWE_Q) || ds_str_adds(&g->ctx, CWE_AP);
    for (int c = 0; c < ncw && !rc; c++) rc = rl_addf(&g->ctx, " %d. ", c + 1) || ds_str_adds(&g->ctx, g->words[common[c]]);
    if (!rc) rc = ds_str_adds(&g->ctx, "\n") || ds_str_adds(&g->ctx, CWE_HEAD) ||
                  rl_cwe_example(g, &rng, n, small ? 6 : t->freq_cw, small ? 1 : t->freq_ucw, &g->ctx, common) ||
                  ds_str_adds(&g->ctx, "\n") || ds_str_adds(&g->q, CWE_Q) || ds_str_adds(&g->ap, CWE_AP);
    for (int c = 0; c < ncw && !rc; c++) rc = (c && ds_str_adds(&g->refs, "\n")) || ds_str_adds(&g->refs, g->words[common[c]]);
    return rc ? (rc < 0 ? rc : kv_errorf(KV_ENOMEM, "out of memory")) : KV_OK;
}

/* ---------------------------------------------------- frequent words */

/* scipy's zeta(alpha) (Riemann's, alpha > 1): pi^2/6 for RULER's 2.0,
 * otherwise Euler-Maclaurin after 1000 terms. */
static double rl_zeta(double a) {
    if (a == 2.0) return 1.6449340668482264; /* pi^2/6 as a double, what scipy returns */
    double s = 0, N = 1000;
    for (int k = 1; k < 1000; k++) s += pow(k, -a);
    return s + pow(N, 1 - a) / (a - 1) + 0.5 * pow(N, -a) + a * pow(N, -a - 1) / 12;
}

/* The sample's coded vocabulary: (length - max_new_tokens) / 50 distinct
 * 6-letter words in random order, the first replaced by "..." (noise). */
static int rl_fwe_vocab(rl_gen *g) {
    int v = (g->length - g->t->max_new_tokens) / 50;
    if (v < 4) return kv_errorf(KV_EINVAL, "ruler: fwe needs a length of at least %d tokens for 4 coded words (got %d)",
                                4 * 50 + g->t->max_new_tokens, g->length);
    free(g->vocab);
    if (!(g->vocab = calloc((size_t)v, sizeof *g->vocab))) return kv_errorf(KV_ENOMEM, "out of memory");
    g->n_vocab = v;
    uint64_t rng = g->seed ^ 0xF00DF00DF00Dull;
    for (int i = 0; i < v; i++) {
        int dup;
        do {
            for (int c = 0; c < 6; c++) g->vocab[i][c] = (char)('a' + rl_below(&rng, 26));
            dup = 0;
            for (int j = 0; j < i && !dup; j++) dup = !strcmp(g->vocab[j], g->vocab[i]);
        } while (dup);
    }
    strcpy(g->vocab[0], "...");
    return KV_OK;
}

/* freq_words_extraction.py's gen_text: word k (1-based) int(n k^-alpha /
 * zeta(alpha)) times, shuffled. */
static int rl_fwe_build(rl_gen *g, int64_t n) {
    uint64_t rng = g->seed;
    double z = rl_zeta(g->t->alpha);
    int64_t total = 0, *cnt = malloc((size_t)g->n_vocab * sizeof *cnt);
    if (!cnt) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int k = 0; k < g->n_vocab; k++) total += cnt[k] = (int64_t)((double)n * pow(k + 1, -g->t->alpha) / z);
    int *list = malloc((size_t)(total ? total : 1) * sizeof *list);
    int rc = list ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    for (int k = 0, j = 0; k < g->n_vocab && !rc; k++)
        for (int64_t r = 0; r < cnt[k]; r++) list[j++] = k;
    if (!rc) rl_shuffle(&rng, list, (size_t)total, sizeof *list);
    if (!rc) rc = ds_str_adds(&g->ctx, FWE_HEAD);
    for (int64_t i = 0; i < total && !rc; i++) rc = (i && ds_str_adds(&g->ctx, " ")) || ds_str_adds(&g->ctx, g->vocab[list[i]]);
    if (!rc) rc = ds_str_adds(&g->ctx, "\n") || ds_str_adds(&g->q, FWE_Q) || ds_str_adds(&g->ap, FWE_AP);
    for (int k = 1; k <= 3 && !rc; k++) rc = (k > 1 && ds_str_adds(&g->refs, "\n")) || ds_str_adds(&g->refs, g->vocab[k]);
    free(cnt), free(list);
    return rc ? (rc < 0 ? rc : kv_errorf(KV_ENOMEM, "out of memory")) : KV_OK;
}

/* ------------------------------------------------------------------ qa */

static int cmp_strp(const void *key, const void *elem) { return strcmp((const char *)key, *(char *const *)elem); }

/* The distinct strings of all[0..n), sorted (Python's sorted(set(...)):
 * strcmp's byte order is code point order in UTF-8), into g->docs. */
static int rl_qa_docs(rl_gen *g, const char **all, size_t n) {
    qsort(all, n, sizeof *all, cmp_str);
    if (!(g->docs = malloc((n ? n : 1) * sizeof *g->docs))) return kv_errorf(KV_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (!g->n_docs || strcmp(g->docs[g->n_docs - 1], all[i]))
            if (!(g->docs[g->n_docs++] = strdup(all[i]))) return kv_errorf(KV_ENOMEM, "out of memory");
    return KV_OK;
}

static int rl_doc_index(const rl_gen *g, const char *doc) {
    char **at = bsearch(doc, g->docs, (size_t)g->n_docs, sizeof *g->docs, cmp_strp);
    return at ? (int)(at - g->docs) : -1;
}

static rl_qa_item *rl_qa_add(rl_gen *g, const char *query, int n_docs) {
    rl_qa_item *b = realloc(g->qas, (size_t)(g->n_qas + 1) * sizeof *b);
    if (!b) return NULL;
    g->qas = b;
    rl_qa_item *it = &g->qas[g->n_qas];
    memset(it, 0, sizeof *it);
    if (!(it->query = strdup(query)) || !(it->docs = malloc((size_t)(n_docs ? n_docs : 1) * sizeof *it->docs))) {
        free(it->query);
        return NULL;
    }
    g->n_qas++;
    return it;
}

/* qa.py's read_squad: paragraphs as documents; each answerable question
 * with its paragraph and, as more context, its article's other paragraphs. */
static int rl_read_squad(rl_gen *g, const cJSON *root, const char *path) {
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data"), *a, *para, *qa;
    if (!cJSON_IsArray(data)) return kv_errorf(KV_EFORMAT, "%s: not SQuAD's layout (no 'data' list)", path);
    size_t n = 0, cap = 1024;
    const char **all = malloc(cap * sizeof *all);
    int rc = all ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    cJSON_ArrayForEach(a, data) {
        cJSON_ArrayForEach(para, cJSON_GetObjectItemCaseSensitive(a, "paragraphs")) {
            const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(para, "context"));
            if (!c && !rc) rc = kv_errorf(KV_EFORMAT, "%s: a paragraph without a 'context' string", path);
            if (rc) continue;
            if (n == cap) {
                const char **b = realloc(all, (cap *= 2) * sizeof *b);
                if (!b) { rc = kv_errorf(KV_ENOMEM, "out of memory"); continue; }
                all = b;
            }
            all[n++] = c;
        }
    }
    if (!rc) rc = rl_qa_docs(g, all, n);
    free(all);
    cJSON_ArrayForEach(a, data) {
        const cJSON *paras = cJSON_GetObjectItemCaseSensitive(a, "paragraphs");
        int np = cJSON_GetArraySize(paras);
        cJSON_ArrayForEach(para, paras) {
            int own = rl_doc_index(g, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(para, "context")));
            cJSON_ArrayForEach(qa, cJSON_GetObjectItemCaseSensitive(para, "qas")) {
                const char *q = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(qa, "question"));
                if (rc || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(qa, "is_impossible"))) continue;
                rl_qa_item *it = q ? rl_qa_add(g, q, np) : NULL;
                if (!it) { rc = q ? kv_errorf(KV_ENOMEM, "out of memory") : kv_errorf(KV_EFORMAT, "%s: a question without 'question'", path); continue; }
                ds_str out = {0};
                const cJSON *ans;
                cJSON_ArrayForEach(ans, cJSON_GetObjectItemCaseSensitive(qa, "answers")) {
                    const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ans, "text"));
                    if (t && ((out.n && ds_str_adds(&out, "\n")) || ds_str_adds(&out, t))) rc = kv_errorf(KV_ENOMEM, "out of memory");
                }
                it->outputs = out.p ? out.p : strdup("");
                it->docs[it->n_docs++] = own;
                const cJSON *other;
                cJSON_ArrayForEach(other, paras) {
                    int k = rl_doc_index(g, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(other, "context")));
                    if (k != own) it->docs[it->n_docs + it->n_more++] = k;
                }
            }
        }
    }
    return rc;
}

/* HotpotQA's "title\nsentences" document text. */
static char *rl_hotpot_doc(const cJSON *pair) {
    ds_str s = {0};
    const cJSON *title = cJSON_GetArrayItem(pair, 0), *sents = cJSON_GetArrayItem(pair, 1), *x;
    if (!cJSON_IsString(title) || !cJSON_IsArray(sents)) return NULL;
    int bad = ds_str_adds(&s, title->valuestring) || ds_str_adds(&s, "\n");
    cJSON_ArrayForEach(x, sents) bad |= !cJSON_IsString(x) || ds_str_adds(&s, x->valuestring);
    if (bad) free(s.p);
    return bad ? NULL : s.p;
}

/* qa.py's read_hotpotqa: every question with its (gold and distractor)
 * paragraphs as its documents. */
static int rl_read_hotpot(rl_gen *g, const cJSON *root, const char *path) {
    if (!cJSON_IsArray(root)) return kv_errorf(KV_EFORMAT, "%s: not HotpotQA's layout (a list of questions)", path);
    size_t n = 0, cap = 1024;
    const char **all = malloc(cap * sizeof *all);
    int rc = all ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    const cJSON *d, *pair;
    cJSON_ArrayForEach(d, root) cJSON_ArrayForEach(pair, cJSON_GetObjectItemCaseSensitive(d, "context")) {
        char *doc = rc ? NULL : rl_hotpot_doc(pair);
        if (!doc && !rc) rc = kv_errorf(KV_EFORMAT, "%s: a context entry that is not [title, [sentences]]", path);
        if (n == cap && !rc) {
            const char **b = realloc(all, (cap *= 2) * sizeof *b);
            if (!b) rc = kv_errorf(KV_ENOMEM, "out of memory");
            else all = b;
        }
        if (!rc) all[n++] = doc;
        else free(doc);
    }
    if (!rc) rc = rl_qa_docs(g, all, n);
    for (size_t i = 0; i < n; i++) free((char *)all[i]);
    free(all);
    cJSON_ArrayForEach(d, root) {
        const char *q = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "question"));
        const char *ans = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "answer"));
        const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(d, "context");
        if (rc) break;
        if (!q || !ans) { rc = kv_errorf(KV_EFORMAT, "%s: a question without 'question' and 'answer' strings", path); break; }
        rl_qa_item *it = rl_qa_add(g, q, cJSON_GetArraySize(ctx));
        if (!it || !(it->outputs = strdup(ans))) { rc = kv_errorf(KV_ENOMEM, "out of memory"); break; }
        cJSON_ArrayForEach(pair, ctx) {
            char *doc = rl_hotpot_doc(pair);
            it->docs[it->n_docs++] = doc ? rl_doc_index(g, doc) : 0;
            free(doc);
        }
    }
    return rc;
}

static int rl_load_qa(rl_gen *g, const char *path) {
    const char *what = !strcmp(g->t->qa_dataset, "squad") ? "SQuAD's dev set (RULER's json/squad.json: dev-v2.0.json)"
                                                          : "HotpotQA's dev set (RULER's json/hotpotqa.json: hotpot_dev_distractor_v1.json)";
    if (!path) return kv_errorf(KV_EINVAL, "ruler: task %s needs %s; no qa file was given", g->t->name, what);
    size_t len;
    char *text;
    int rc = kv_read_file(path, &text, &len);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return kv_errorf(KV_EFORMAT, "%s: not JSON (task %s reads %s)", path, g->t->name, what);
    rc = !strcmp(g->t->qa_dataset, "squad") ? rl_read_squad(g, root, path) : rl_read_hotpot(g, root, path);
    cJSON_Delete(root);
    if (!rc && !g->n_qas) rc = kv_errorf(KV_EFORMAT, "%s: no answerable questions", path);
    return rc;
}

/* qa.py's generate_input_output: the question's gold documents, its
 * article's others, then random ones up to n (all documents repeated when n
 * reaches their count), shuffled, as "Document i:\n..." blocks. */
static int rl_qa_build(rl_gen *g, int64_t n) {
    uint64_t rng = g->seed;
    const rl_qa_item *it = &g->qas[g->index];
    int nc = it->n_docs, nm = it->n_more;
    int *all = malloc((size_t)(n + 1) * sizeof *all), *extra = NULL;
    int64_t *pick = malloc((size_t)(n + 1) * sizeof *pick);
    int rc = all && pick ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    if (!rc && n < g->n_docs) {
        memcpy(all, it->docs, (size_t)nc * sizeof *all);
        if (n - nc > nm) { /* all the article's paragraphs, then others */
            memcpy(all + nc, it->docs + nc, (size_t)nm * sizeof *all);
            char *used = calloc((size_t)g->n_docs, 1);
            extra = malloc((size_t)g->n_docs * sizeof *extra);
            int ne = 0;
            if (!used || !extra) rc = kv_errorf(KV_ENOMEM, "out of memory");
            for (int i = 0; i < nc + nm && !rc; i++) used[it->docs[i]] = 1;
            for (int i = 0; i < g->n_docs && !rc; i++)
                if (!used[i]) extra[ne++] = i;
            if (!rc) rc = rl_sample(&rng, ne, n - nc - nm, pick);
            for (int64_t i = 0; i < n - nc - nm && !rc; i++) all[nc + nm + i] = extra[pick[i]];
            free(used);
        } else {
            rc = rl_sample(&rng, nm, n - nc, pick);
            for (int64_t i = 0; i < n - nc && !rc; i++) all[nc + i] = it->docs[nc + pick[i]];
        }
    } else {
        for (int64_t i = 0; i < n && !rc; i++) all[i] = (int)(i % g->n_docs);
    }
    if (!rc) rl_shuffle(&rng, all, (size_t)n, sizeof *all);
    if (!rc) rc = ds_str_adds(&g->ctx, QA_INSTR) || ds_str_adds(&g->ctx, "\n\nThe following are given documents.\n\n");
    for (int64_t i = 0; i < n && !rc; i++)
        rc = rl_addf(&g->ctx, "%sDocument %lld:\n", i ? "\n\n" : "", (long long)i + 1) || ds_str_adds(&g->ctx, g->docs[all[i]]);
    if (!rc) rc = ds_str_adds(&g->ctx, "\n\n") || ds_str_adds(&g->q, QA_INSTR) || ds_str_adds(&g->q, "\n\nQuestion: ") ||
                  ds_str_adds(&g->q, it->query) || ds_str_adds(&g->ap, QA_AP) || ds_str_adds(&g->refs, it->outputs);
    free(all), free(extra), free(pick);
    return rc ? (rc < 0 ? rc : kv_errorf(KV_ENOMEM, "out of memory")) : KV_OK;
}

/* -------------------------------------------------------------- search */

/* Builds the prompt with n haystack units into g->ctx/q/ap/refs and
 * g->full (their concatenation, the answer prefix included, as RULER
 * measures it); *tokens: its tokens plus ttg. */
static int rl_build(rl_gen *g, int64_t n, int ttg, int64_t *tokens) {
    g->ctx.n = g->q.n = g->ap.n = g->refs.n = g->full.n = 0;
    g->depth = 0;
    int rc = ds_str_add(&g->ctx, "", 0) || ds_str_add(&g->q, "", 0) || ds_str_add(&g->ap, "", 0) ||
             ds_str_add(&g->refs, "", 0) ? kv_errorf(KV_ENOMEM, "out of memory") : KV_OK;
    if (!rc) switch (g->t->kind) {
        case DS_RULER_NIAH: rc = rl_niah_build(g, n); break;
        case DS_RULER_VT: rc = rl_vt_build(g, n); break;
        case DS_RULER_CWE: rc = rl_cwe_build(g, n); break;
        case DS_RULER_FWE: rc = rl_fwe_build(g, n); break;
        case DS_RULER_QA: rc = rl_qa_build(g, n); break;
        }
    if (!rc && (ds_str_add(&g->full, g->ctx.p, g->ctx.n) || ds_str_add(&g->full, g->q.p, g->q.n) ||
                ds_str_add(&g->full, g->ap.p, g->ap.n)))
        rc = kv_errorf(KV_ENOMEM, "out of memory");
    if (rc || !tokens) return rc;
    int64_t c = g->p->count(g->p->user, g->full.p, g->full.n);
    if (c < 0) return (int)c;
    *tokens = c + ttg;
    return KV_OK;
}

/* The largest n in [lo, hi] whose prompt plus ttg fits target tokens (the
 * scripts' search): doubling from lo, then bisection, so n + 1 was measured
 * and did not fit (unless n is hi). */
static int rl_fit(rl_gen *g, int32_t target, int ttg, int64_t lo, int64_t hi, int64_t *best) {
    int64_t tok;
    int rc = rl_build(g, lo, ttg, &tok);
    if (rc) return rc;
    if (tok > target)
        return kv_errorf(KV_EINVAL, "ruler: task %s: the smallest prompt (%lld haystack units) needs %lld tokens with "
                         "%d to generate, over the length %d", g->t->name, (long long)lo, (long long)tok, ttg, target);
    int64_t fail = hi + 1;
    while (lo < hi) {
        int64_t probe = fail <= hi ? lo + (fail - lo) / 2 : (lo * 2 > lo + 1 ? lo * 2 : lo + 1);
        if (probe > hi) probe = hi;
        if (probe <= lo) break;
        if ((rc = rl_build(g, probe, ttg, &tok))) return rc;
        if (tok <= target) lo = probe;
        else fail = probe;
        if (fail == lo + 1) break;
    }
    *best = lo;
    return KV_OK;
}

/* freq_words_extraction.py's two loops: up from max_len / 6 words in steps
 * of max_len / 32 while the prompt is under max_len, one step back; then
 * down while it is over. */
static int rl_fwe_fit(rl_gen *g, int64_t *best) {
    int32_t max_len = g->length - g->t->max_new_tokens;
    int64_t inc = max_len / 32 > 0 ? max_len / 32 : 1, n = max_len / 6, tok;
    int rc;
    while (!(rc = rl_build(g, n, 0, &tok)) && tok < max_len) n += inc;
    n -= inc;
    while (!rc && n > 0 && !(rc = rl_build(g, n, 0, &tok)) && tok > max_len) n -= inc;
    if (!rc && n <= 0)
        rc = kv_errorf(KV_EINVAL, "ruler: task fwe: no word count fits the length %d", g->length);
    *best = n;
    return rc;
}

/* vt's in-context example: the task itself with 3-letter names at 500
 * tokens, nothing to generate (variable_tracking.py's first call), its
 * answer appended as the script appends it. */
static int rl_vt_example(rl_gen *g) {
    int64_t n;
    g->icl = 1;
    int rc = rl_fit(g, 500, 0, g->t->num_hops + 1, 1 << 20, &n);
    if (!rc) rc = rl_build(g, n, 0, NULL);
    g->icl = 0;
    g->icl_text.n = 0;
    if (rc || ds_str_add(&g->icl_text, g->full.p, g->full.n) || ds_str_adds(&g->icl_text, " ")) return rc ? rc : KV_ENOMEM;
    for (const char *r = g->refs.p; *r; r++)
        if (ds_str_add(&g->icl_text, *r == '\n' ? " " : r, 1)) return kv_errorf(KV_ENOMEM, "out of memory");
    return ds_str_adds(&g->icl_text, "\n") ? kv_errorf(KV_ENOMEM, "out of memory") : KV_OK;
}

/* The haystack size for this sample (per-task set-up first). */
static int rl_units(rl_gen *g, int64_t *n) {
    const ds_ruler_task *t = g->t;
    int rc = t->kind == DS_RULER_VT ? rl_vt_example(g) : t->kind == DS_RULER_FWE ? rl_fwe_vocab(g) : KV_OK;
    if (rc) return rc;
    if (g->p->units > 0) {
        *n = g->p->units;
        return KV_OK;
    }
    int64_t cap = (int64_t)g->length * 64 + 1024; /* no prompt has fewer than 1/64 token a unit */
    switch (t->kind) {
    case DS_RULER_NIAH:
        return rl_fit(g, g->length, t->max_new_tokens, t->haystack == DS_RULER_ESSAY ? 1 : t->num_k * t->num_v, cap, n);
    case DS_RULER_VT: return rl_fit(g, g->length, t->max_new_tokens, t->num_hops + 1, cap, n);
    case DS_RULER_CWE: return rl_fit(g, g->length, t->max_new_tokens, t->num_cw, (int64_t)g->n_words, n);
    case DS_RULER_FWE: return rl_fwe_fit(g, n);
    case DS_RULER_QA: return rl_fit(g, g->length, t->max_new_tokens, g->qas[g->index].n_docs, cap, n);
    }
    return KV_OK;
}

/* --------------------------------------------------------------- make */

/* What differs from RULER's generator, for the sample's `source` field. */
static int rl_source(const rl_gen *g, ds_str *s) {
    const ds_ruler_task *t = g->t;
    int words = t->kind == DS_RULER_CWE || (t->kind == DS_RULER_NIAH && (t->type_k == DS_RULER_WORDS || t->type_v == DS_RULER_WORDS));
    int rc = rl_addf(s, "kvbench's C generator after RULER's scripts/data/synthetic/%s.py (task %s); seeded splitmix64 "
                     "draws, not Python's", t->script, t->name);
    if (!rc && words)
        rc = ds_str_adds(s, "; wamerican word list instead of wonderwords (") ||
             ds_str_adds(s, g->p->words_path ? g->p->words_path : RL_DEFAULT_WORDS) ||
             ds_str_adds(s, t->kind == DS_RULER_CWE ? ", lowercase alphabetic, 3+ letters)"
                                                    : ", lowercase alphabetic, 3+ letters; needle keys are word-word, RULER's adjective-noun)");
    if (!rc && t->kind == DS_RULER_NIAH && t->haystack == DS_RULER_ESSAY)
        rc = ds_str_adds(s, "; essay sentences cut by rule, not NLTK punkt");
    if (!rc && t->kind == DS_RULER_QA) rc = ds_str_adds(s, "; questions from ") || ds_str_adds(s, g->p->qa_path);
    return rc ? kv_errorf(KV_ENOMEM, "out of memory") : KV_OK;
}

static void rl_free(rl_gen *g) {
    for (size_t i = 0; i < g->n_words; i++) free(g->words[i]);
    for (size_t i = 0; i < g->n_essay; i++) free(g->essay[i]);
    for (int i = 0; i < g->n_docs; i++) free(g->docs[i]);
    for (int i = 0; i < g->n_qas; i++) free(g->qas[i].query), free(g->qas[i].outputs), free(g->qas[i].docs);
    free(g->words), free(g->essay), free(g->docs), free(g->qas), free(g->vocab);
    free(g->icl_text.p), free(g->ctx.p), free(g->q.p), free(g->ap.p), free(g->refs.p), free(g->full.p);
}

/* One sample's seed: the run's, the task, the length and the sample's
 * number mixed, so each sample can be made again alone. */
static uint64_t rl_seed(uint64_t seed, const char *task, int32_t length, int index) {
    /* FNV-1a of the task name from 1469598103934665603, not FNV's offset
     * basis (a digit short of it): kept, since it seeds every sample made. */
    uint64_t h = kv_fnv1a64(1469598103934665603ull, task, strlen(task));
    uint64_t s = seed ^ h;
    s = kv_splitmix64(&s) ^ (uint64_t)(uint32_t)length;
    s = kv_splitmix64(&s) ^ (uint64_t)index;
    return kv_splitmix64(&s);
}

static int rl_add_sample(rl_gen *g, int64_t units, int64_t tokens, const char *source, ds_set *out) {
    char id[96], mnt[16], tok[24], un[24];
    snprintf(id, sizeof id, "%s-len%d-%d", g->t->name, g->length, g->index);
    snprintf(mnt, sizeof mnt, "%d", g->t->max_new_tokens);
    snprintf(tok, sizeof tok, "%lld", (long long)tokens);
    snprintf(un, sizeof un, "%lld", (long long)units);
    const char *names[] = {"context", "question", "answer_prefix", "task", "max_new_tokens", "source", "tokens", "units"};
    const char *values[] = {g->ctx.p, g->q.p, g->ap.p, g->t->name, mnt, source, tok, un};
    int rc = ds_set_add(out, id, names, values, 8, g->refs.p);
    if (rc) return rc;
    out->s[out->n - 1].length = g->length;
    out->s[out->n - 1].depth_pct = g->depth;
    return KV_OK;
}

static int rl_check(const ds_ruler_params *p, const ds_ruler_task *t) {
    if (!t) return kv_errorf(KV_EINVAL, "ruler: unknown task '%s' (niah_single_1/2/3, niah_multikey_1/2/3, "
                             "niah_multivalue, niah_multiquery, vt, cwe, fwe, qa_1, qa_2)", p->task ? p->task : "(null)");
    if (!p->count) return kv_errorf(KV_EINVAL, "ruler: task %s needs a token counter", t->name);
    if (p->n_samples <= 0 || p->n_lengths <= 0) return kv_errorf(KV_EINVAL, "ruler: task %s: no samples or no lengths asked", t->name);
    for (int i = 0; i < p->n_lengths; i++)
        if (p->lengths[i] <= t->max_new_tokens)
            return kv_errorf(KV_EINVAL, "ruler: task %s: length %d leaves no room beside its %d tokens to generate",
                             t->name, p->lengths[i], t->max_new_tokens);
    return KV_OK;
}

int ds_ruler_make(const ds_ruler_params *p, ds_set *out) {
    memset(out, 0, sizeof *out);
    const ds_ruler_task *t = p->task ? ds_ruler_task_find(p->task) : NULL;
    int rc = rl_check(p, t);
    if (rc) return rc;
    rl_gen g = {.t = t, .p = p};
    int words = t->kind == DS_RULER_CWE || (t->kind == DS_RULER_NIAH && (t->type_k == DS_RULER_WORDS || t->type_v == DS_RULER_WORDS));
    if (words) rc = rl_load_words(&g, p->words_path ? p->words_path : RL_DEFAULT_WORDS);
    if (!rc && t->kind == DS_RULER_NIAH && t->haystack == DS_RULER_ESSAY) rc = rl_load_essays(&g, p->essay_dir);
    if (!rc && t->kind == DS_RULER_QA) rc = rl_load_qa(&g, p->qa_path);
    if (!rc && t->kind == DS_RULER_QA && p->n_samples > g.n_qas)
        rc = kv_errorf(KV_EINVAL, "%s: %d questions, fewer than the %d samples asked", p->qa_path, g.n_qas, p->n_samples);
    ds_str source = {0};
    if (!rc) rc = rl_source(&g, &source);
    for (int li = 0; li < p->n_lengths && !rc; li++)
        for (int i = 0; i < p->n_samples && !rc; i++) {
            g.length = p->lengths[li];
            g.index = i;
            g.seed = rl_seed(p->seed, t->name, g.length, i);
            int64_t n = 0, tokens = 0;
            rc = rl_units(&g, &n);
            if (!rc) rc = rl_build(&g, n, t->max_new_tokens, &tokens);
            if (!rc) rc = rl_add_sample(&g, n, tokens, source.p, out);
        }
    free(source.p);
    rl_free(&g);
    if (rc) ds_set_free(out);
    return rc;
}

/* ---------------------------------------------------------- splitting */

/* kvpress's question and answer patterns (evaluation/benchmarks/ruler/
 * create_huggingface_dataset.py), plain strings here: niah's "What (?:is|are
 * all) the special magic" is its two spellings. */
static const struct {
    const char *script, *question, *answer;
} SPLITS[] = {
    {"niah", "What is the special magic", "The special magic"},
    {"niah", "What are all the special magic", "The special magic"},
    {"variable_tracking", "Question: Find all variables that are assigned the value", "Answer:"},
    {"common_words_extraction", "Question: What are the 10 most common words in the above list?", "Answer:"},
    {"freq_words_extraction", "Question: Do not provide any explanation.", "Answer:"},
    {"qa", "Answer the question based on the given documents.", "Answer:"},
};

static const char *rl_last(const char *s, const char *pat) {
    const char *last = NULL;
    for (const char *at = strstr(s, pat); at; at = strstr(at + 1, pat)) last = at;
    return last;
}

const char *ds_ruler_split(const char *input, long *question_at, long *prefix_at) {
    *question_at = *prefix_at = -1;
    for (size_t i = 0; i < sizeof SPLITS / sizeof SPLITS[0]; i++) {
        const char *q = rl_last(input, SPLITS[i].question);
        if (!q) continue;
        *question_at = (long)(q - input);
        const char *a = strstr(q, SPLITS[i].answer);
        if (a) *prefix_at = (long)(a - input);
        return SPLITS[i].script;
    }
    return NULL;
}
