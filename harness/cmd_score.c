/* cmd_score.c - `kvbench score`: scoring outputs that came from anywhere.
 *   score rouge --pred FILE --ref FILE   ROUGE-1/2/L/Lsum per item and mean
 *   score lead  --data FILE [--n 3]      the lead-N baseline of a
 *                                        summarization set (first N
 *                                        sentences of each document)
 *   score longbench --task T --pred FILE LongBench's own scorer of task T
 *                                        on its prediction layout (eval.py)
 * Plain-text inputs hold one item per line with "\n" (and "\\") escapes;
 * JSONL inputs name their field (--pred-field, --ref-field). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../base/kv_error.h"
#include "../datasets/dataset.h"
#include "../metrics/longbench.h"
#include "../metrics/rouge.h"
#include "../metrics/sentences.h"
#include "commands.h"
#include "opts.h"
#include "paths.h"


typedef struct items {
    char **s;
    int n, cap;
} items;

static void items_free(items *it) {
    for (int i = 0; i < it->n; i++) free(it->s[i]);
    free(it->s);
}

static int items_push(items *it, char *s) {
    if (it->n == it->cap) {
        char **b = realloc(it->s, (size_t)(it->cap = it->cap ? it->cap * 2 : 256) * sizeof *b);
        if (!b) return -1;
        it->s = b;
    }
    it->s[it->n++] = s;
    return 0;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* Reads one item per line: JSONL (field `field`, a string or a list of
 * strings joined by newlines) or text with \n escapes. */
static int read_items(const char *path, const char *field, items *it) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "kvbench score: %s: cannot open\n", path);
        return -1;
    }
    int jsonl = ends_with(path, ".jsonl") || ends_with(path, ".json");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long ln = 0;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        ln++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!ds_utf8_valid(line, (size_t)len)) {
            fprintf(stderr, "kvbench score: %s:%ld: not valid UTF-8\n", path, ln);
            rc = -1;
            break;
        }
        char *out = NULL;
        if (jsonl) {
            if (len == 0) continue;
            cJSON *o = cJSON_ParseWithLength(line, (size_t)len);
            const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, field) : NULL;
            if (cJSON_IsString(v)) out = strdup(v->valuestring);
            else if (cJSON_IsArray(v)) {
                size_t total = 1;
                for (const cJSON *x = v->child; x; x = x->next) total += cJSON_IsString(x) ? strlen(x->valuestring) + 1 : 0;
                out = calloc(total, 1);
                for (const cJSON *x = v->child; out && x; x = x->next)
                    if (cJSON_IsString(x)) {
                        if (*out) strcat(out, "\n");
                        strcat(out, x->valuestring);
                    }
            } else {
                fprintf(stderr, "kvbench score: %s:%ld: %s\n", path, ln,
                        o ? "the field is missing or not a string or list of strings" : "invalid JSON");
                cJSON_Delete(o);
                rc = -1;
                break;
            }
            cJSON_Delete(o);
        } else {
            out = malloc((size_t)len + 1);
            size_t k = 0;
            for (ssize_t i = 0; out && i < len; i++) {
                if (line[i] == '\\' && i + 1 < len && line[i + 1] == 'n') out[k++] = '\n', i++;
                else if (line[i] == '\\' && i + 1 < len && line[i + 1] == '\\') out[k++] = '\\', i++;
                else out[k++] = line[i];
            }
            if (out) out[k] = 0;
        }
        if (!out || items_push(it, out)) {
            free(out);
            fprintf(stderr, "kvbench score: out of memory\n");
            rc = -1;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

typedef struct rouge_sum {
    kv_rouge_scores sum;
    int n;
} rouge_sum;

static void add(rouge_sum *a, const kv_rouge_scores *s) {
    kv_rouge_prf *d[4] = {&a->sum.r1, &a->sum.r2, &a->sum.rl, &a->sum.rlsum};
    const kv_rouge_prf *x[4] = {&s->r1, &s->r2, &s->rl, &s->rlsum};
    for (int i = 0; i < 4; i++) d[i]->p += x[i]->p, d[i]->r += x[i]->r, d[i]->f += x[i]->f;
    a->n++;
}

static void print_mean(const rouge_sum *a, const char *title) {
    const char *names[4] = {"ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum"};
    const kv_rouge_prf *x[4] = {&a->sum.r1, &a->sum.r2, &a->sum.rl, &a->sum.rlsum};
    double n = a->n ? a->n : 1;
    printf("\n%s (%d items, mean x100, rouge-score's tokenizer with the Porter stemmer)\n\n", title, a->n);
    printf("| metric | precision | recall | F1 |\n|---|---|---|---|\n");
    for (int i = 0; i < 4; i++)
        printf("| %s | %.2f | %.2f | %.2f |\n", names[i], x[i]->p / n * 100, x[i]->r / n * 100, x[i]->f / n * 100);
}

static int score_rouge(int argc, char **argv) {
    const char *pred = NULL, *ref = NULL, *pf = "prediction", *rf = "reference";
    int no_stem = 0, quiet = 0;
    hx_opt opts[] = {
        {"pred", 0, HX_OPT_STR, &pred, "FILE", "predictions: text (one per line, \\n escapes) or JSONL"},
        {"ref", 0, HX_OPT_STR, &ref, "FILE", "references, in the same order"},
        {"pred-field", 0, HX_OPT_STR, &pf, "NAME", "JSONL field of the predictions (default prediction)"},
        {"ref-field", 0, HX_OPT_STR, &rf, "NAME", "JSONL field of the references (default reference)"},
        {"no-stem", 0, HX_OPT_FLAG, &no_stem, NULL, "no Porter stemming (rouge-score's use_stemmer=False)"},
        {"quiet", 'q', HX_OPT_FLAG, &quiet, NULL, "only the mean"},
    };
    if (argc == 0) {
        printf("usage: kvbench score rouge --pred FILE --ref FILE [--pred-field F --ref-field F] [--no-stem]\n\n"
               "Prints ROUGE-1/2/L/Lsum F1 (x100) per item, then precision, recall and F1 means.\n"
               "ROUGE-Lsum splits on newlines: put one sentence per line.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("score rouge", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    if (!pred || !ref) {
        fprintf(stderr, "kvbench score rouge: --pred FILE and --ref FILE are required\n");
        return 2;
    }
    items p = {0}, r = {0};
    int status = 1;
    if (read_items(pred, pf, &p) || read_items(ref, rf, &r)) goto out;
    if (p.n != r.n) {
        fprintf(stderr, "kvbench score rouge: %s has %d items but %s has %d\n", pred, p.n, ref, r.n);
        goto out;
    }
    rouge_sum acc = {0};
    if (!quiet) printf("item\trouge1_f\trouge2_f\trougeL_f\trougeLsum_f\n");
    for (int i = 0; i < p.n; i++) {
        kv_rouge_scores s;
        if (kv_rouge_score(p.s[i], r.s[i], !no_stem, &s)) {
            fprintf(stderr, "kvbench score rouge: %s\n", kv_last_error());
            goto out;
        }
        add(&acc, &s);
        if (!quiet) printf("%d\t%.4f\t%.4f\t%.4f\t%.4f\n", i + 1, s.r1.f * 100, s.r2.f * 100, s.rl.f * 100, s.rlsum.f * 100);
    }
    print_mean(&acc, "mean");
    status = 0;
out:
    items_free(&p);
    items_free(&r);
    return status;
}

typedef struct lead_state {
    char buf[65536];
    size_t len;
    int want, got;
} lead_state;

static int take_sentence(void *user, const char *s, size_t len) {
    lead_state *st = user;
    if (st->len + len + 2 < sizeof st->buf) {
        if (st->len) st->buf[st->len++] = '\n';
        memcpy(st->buf + st->len, s, len);
        st->len += len;
        st->buf[st->len] = 0;
    }
    return ++st->got >= st->want;
}

static int score_lead(int argc, char **argv) {
    const char *data = NULL, *out_path = NULL;
    int n = 3, samples = 0;
    hx_opt opts[] = {
        {"data", 'd', HX_OPT_STR, &data, "FILE", "summarization set (CSV or JSONL; relative paths under $KVBENCH_DATA)"},
        {"n", 'n', HX_OPT_INT, &n, "N", "sentences of each document to take (default 3)"},
        {"samples", 0, HX_OPT_INT, &samples, "N", "only the first N documents"},
        {"out", 'o', HX_OPT_STR, &out_path, "FILE", "also write the lead-N texts (one per line, \\n escapes)"},
    };
    if (argc == 0) {
        printf("usage: kvbench score lead --data FILE [--n 3]\n\n"
               "Scores the lead-N baseline - each document's first N sentences, one per line - against\n"
               "the references with ROUGE, as the summarization papers' lead-3 rows do.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("score lead", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    if (!data || n < 1) {
        fprintf(stderr, "kvbench score lead: --data FILE is required and --n must be >= 1\n");
        return 2;
    }
    char path[4096];
    ds_load_params lp = {.path = hx_resolve_data(data, path, sizeof path), .max_samples = samples, .bad_rows = DS_BAD_FAIL};
    ds_set set;
    if (ds_load_summarization(&lp, &set)) {
        fprintf(stderr, "kvbench score lead: %s\n", kv_last_error());
        return 1;
    }
    FILE *of = out_path ? fopen(out_path, "w") : NULL;
    if (out_path && !of) {
        fprintf(stderr, "kvbench score lead: %s: cannot create\n", out_path);
        ds_set_free(&set);
        return 1;
    }
    rouge_sum acc = {0};
    lead_state *st = malloc(sizeof *st);
    int status = st ? 0 : 1;
    for (int i = 0; i < set.n && !status; i++) {
        st->len = 0;
        st->buf[0] = 0;
        st->got = 0;
        st->want = n;
        met_sentences(ds_sample_field(&set.s[i], "document"), take_sentence, st);
        kv_rouge_scores s;
        if (kv_rouge_score(st->buf, set.s[i].reference, 1, &s)) {
            fprintf(stderr, "kvbench score lead: %s\n", kv_last_error());
            status = 1;
            break;
        }
        add(&acc, &s);
        if (of) {
            for (const char *c = st->buf; *c; c++) {
                if (*c == '\n') fputs("\\n", of);
                else if (*c == '\\') fputs("\\\\", of);
                else fputc(*c, of);
            }
            fputc('\n', of);
        }
    }
    if (!status) {
        char title[4200];
        snprintf(title, sizeof title, "lead-%d on %s", n, path);
        print_mean(&acc, title);
    }
    if (of && fclose(of) != 0) status = 1;
    free(st);
    ds_set_free(&set);
    return status;
}

/* ---------------------------------------------------------------- longbench */

/* One line of a LongBench prediction file (pred.py's layout). */
typedef struct lb_sample {
    char *pred;
    char **answers;
    int n_answers;
    double length; /* LongBench-E's context length; NAN when absent */
} lb_sample;

typedef struct lb_file {
    lb_sample *s;
    int n, cap;
    char **classes; /* all_classes of the last line, as eval.py keeps it */
    int n_classes;  /* -1: null or absent */
} lb_file;

static void lb_strings_free(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static void lb_file_free(lb_file *f) {
    for (int i = 0; i < f->n; i++) {
        free(f->s[i].pred);
        lb_strings_free(f->s[i].answers, f->s[i].n_answers);
    }
    free(f->s);
    lb_strings_free(f->classes, f->n_classes);
}

/* A JSON list of strings as a malloc'd array; -1 with *why set when v is
 * not one, -2 when out of memory. */
static int lb_strings(const cJSON *v, char ***out, const char **why) {
    *out = NULL;
    if (!cJSON_IsArray(v)) return *why = "is not a list", -1;
    int n = cJSON_GetArraySize(v), k = 0;
    char **a = calloc((size_t)n + 1, sizeof *a);
    if (!a) return -2;
    for (const cJSON *x = v->child; x; x = x->next, k++)
        if (!cJSON_IsString(x) || !(a[k] = strdup(x->valuestring))) {
            lb_strings_free(a, k);
            return cJSON_IsString(x) ? -2 : (*why = "holds something other than a string", -1);
        }
    *out = a;
    return n;
}

/* Reads one line's object into the file; returns 0 or -1 (message printed). */
static int lb_parse_line(const char *path, long ln, const cJSON *o, int need_length, lb_file *f) {
    const cJSON *pred = cJSON_GetObjectItemCaseSensitive(o, "pred");
    const cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answers");
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(o, "all_classes");
    const cJSON *len = cJSON_GetObjectItemCaseSensitive(o, "length");
    const char *why = NULL;
    lb_sample s = {.length = NAN};
    int n = 0;
    if (!cJSON_IsString(pred)) why = "\"pred\" is missing or not a string";
    else if (need_length && !cJSON_IsNumber(len)) why = "\"length\" is missing or not a number (--e needs it)";
    else if ((n = lb_strings(ans, &s.answers, &why)) == -1) {
        fprintf(stderr, "kvbench score longbench: %s:%ld: \"answers\" %s\n", path, ln, why);
        return -1;
    }
    if (why) {
        fprintf(stderr, "kvbench score longbench: %s:%ld: %s\n", path, ln, why);
        return -1;
    }
    s.n_answers = n;
    if (cJSON_IsNumber(len)) s.length = len->valuedouble;
    if (n < 0 || !(s.pred = strdup(pred->valuestring))) goto oom;
    if (f->n == f->cap) {
        lb_sample *b = realloc(f->s, (size_t)(f->cap = f->cap ? 2 * f->cap : 256) * sizeof *b);
        if (!b) goto oom;
        f->s = b;
    }
    f->s[f->n++] = s;
    if (cls && !cJSON_IsNull(cls)) { /* eval.py keeps the last line's all_classes */
        char **c;
        int nc = lb_strings(cls, &c, &why);
        if (nc == -1) {
            fprintf(stderr, "kvbench score longbench: %s:%ld: \"all_classes\" %s\n", path, ln, why);
            return -1;
        }
        if (nc < 0) goto oom_classes;
        lb_strings_free(f->classes, f->n_classes);
        f->classes = c, f->n_classes = nc;
    } else {
        lb_strings_free(f->classes, f->n_classes);
        f->classes = NULL, f->n_classes = -1;
    }
    return 0;
oom:
    free(s.pred);
    lb_strings_free(s.answers, s.n_answers);
oom_classes:
    fprintf(stderr, "kvbench score longbench: out of memory\n");
    return -1;
}

/* Reads a LongBench prediction file: one JSON object per line. */
static int lb_read(const char *path, int need_length, lb_file *f) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "kvbench score longbench: %s: cannot open\n", path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long ln = 0;
    int rc = 0;
    f->n_classes = -1;
    while (rc == 0 && (len = getline(&line, &cap, fp)) >= 0) {
        ln++;
        cJSON *o = cJSON_ParseWithLength(line, (size_t)len);
        if (!cJSON_IsObject(o)) {
            fprintf(stderr, "kvbench score longbench: %s:%ld: expected a JSON object (pred, answers, all_classes%s)\n",
                    path, ln, need_length ? ", length" : "");
            rc = -1;
        } else rc = lb_parse_line(path, ln, o, need_length, f);
        cJSON_Delete(o);
    }
    free(line);
    fclose(fp);
    if (rc == 0 && f->n == 0) {
        fprintf(stderr, "kvbench score longbench: %s: no samples\n", path);
        rc = -1;
    }
    return rc;
}

/* The task named on the command line, or the file's name up to its first
 * '.', as eval.py names it. Prints why and returns NULL when it cannot be scored. */
static const met_lb_task *lb_task(const char *name, const char *pred) {
    char stem[256];
    if (!name) {
        const char *b = strrchr(pred, '/');
        b = b ? b + 1 : pred;
        snprintf(stem, sizeof stem, "%.*s", (int)strcspn(b, "."), b);
        name = stem;
    }
    const met_lb_task *t = met_lb_task_find(name);
    if (!t) {
        int n;
        const met_lb_task *all = met_lb_tasks(&n);
        fprintf(stderr, "kvbench score longbench: unknown task '%s' (expected one of", name);
        for (int i = 0; i < n; i++) fprintf(stderr, " %s", all[i].name);
        fprintf(stderr, ")\n");
        return NULL;
    }
    if (met_lb_scorer_needs_jieba(t->scorer)) {
        fprintf(stderr, "kvbench score longbench: task %s is refused: LongBench scores it with %s, which segments "
                "Chinese with jieba, and jieba's segmentation is not implemented in kvbench "
                "(an English tokenizer would give different numbers)\n", t->name, met_lb_scorer_name(t->scorer));
        return NULL;
    }
    return t;
}

/* Each sample's score into scores[]; -1 (message printed) on a bad sample. */
static int lb_score_all(const met_lb_task *t, const lb_file *f, const char *path, double *scores) {
    if (t->scorer == MET_LB_CLASSIFICATION && f->n_classes < 0) {
        fprintf(stderr, "kvbench score longbench: %s:%d: task %s needs \"all_classes\" (a list of strings) "
                "on the last line, whose classes eval.py uses for every sample\n", path, f->n, t->name);
        return -1;
    }
    for (int i = 0; i < f->n; i++) {
        const lb_sample *s = &f->s[i];
        if (met_lb_sample_score(t, s->pred, (const char *const *)s->answers, s->n_answers,
                                (const char *const *)f->classes, f->n_classes, &scores[i])) {
            fprintf(stderr, "kvbench score longbench: %s:%d: %s\n", path, i + 1, kv_last_error());
            return -1;
        }
    }
    return 0;
}

/* x in the shortest form of 15 to 17 digits that reads back exactly
 * (cJSON's own printing settles for 15 digits within an epsilon); NaN is
 * "null". Returns b. */
static const char *lb_num(double x, char b[32]) {
    strcpy(b, "null");
    for (int digits = 15; isfinite(x) && digits <= 17; digits++) {
        snprintf(b, 32, "%.*g", digits, x);
        if (strtod(b, NULL) == x) break;
    }
    return b;
}

static void lb_add_num(cJSON *o, const char *name, double x) {
    char b[32];
    cJSON_AddRawToObject(o, name, lb_num(x, b));
}

/* Prints one JSON object on a line. */
static void lb_print_json(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    if (s) printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
}

static void lb_print_samples(const lb_file *f, const double *scores, int e, int jsonl) {
    if (!jsonl) printf(e ? "sample\tlength\tbucket\tscore\n" : "sample\tscore\n");
    for (int i = 0; i < f->n; i++) {
        int b = met_lb_e_bucket(f->s[i].length);
        if (jsonl) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "sample", i + 1);
            if (e) lb_add_num(o, "length", f->s[i].length);
            if (e) cJSON_AddStringToObject(o, "bucket", met_lb_e_bucket_name(b));
            lb_add_num(o, "score", scores[i]);
            lb_print_json(o);
        } else {
            char l[32], v[32];
            if (e) printf("%d\t%s\t%s\t%s\n", i + 1, lb_num(f->s[i].length, l), met_lb_e_bucket_name(b), lb_num(scores[i], v));
            else printf("%d\t%s\n", i + 1, lb_num(scores[i], v));
        }
    }
}

static int lb_print_task(const met_lb_task *t, const lb_file *f, const double *scores, int e, int jsonl) {
    cJSON *o = jsonl ? cJSON_CreateObject() : NULL;
    if (o) cJSON_AddStringToObject(o, "task", t->name), cJSON_AddNumberToObject(o, "samples", f->n);
    if (!e) {
        double v;
        if (met_lb_task_score(scores, f->n, &v)) return cJSON_Delete(o), -1;
        if (o) lb_add_num(o, "score", v);
        else printf("\n%s (%s, %d samples): %.2f\n", t->name, met_lb_scorer_name(t->scorer), f->n, v);
    } else {
        double *len = malloc((size_t)f->n * sizeof *len), v[MET_LB_E_BUCKETS];
        int c[MET_LB_E_BUCKETS];
        for (int i = 0; len && i < f->n; i++) len[i] = f->s[i].length;
        int rc = len ? met_lb_e_scores(scores, len, f->n, v, c) : -1;
        free(len);
        if (rc) return cJSON_Delete(o), -1;
        cJSON *sc = o ? cJSON_AddObjectToObject(o, "score") : NULL;
        if (!o) printf("\n%s (%s, LongBench-E, %d samples)\n", t->name, met_lb_scorer_name(t->scorer), f->n);
        for (int b = 0; b < MET_LB_E_BUCKETS; b++) {
            if (sc) lb_add_num(sc, met_lb_e_bucket_name(b), v[b]);
            else printf("%s\t%.2f\t(%d samples)\n", met_lb_e_bucket_name(b), v[b], c[b]);
        }
    }
    if (o) lb_print_json(o);
    return 0;
}

static int score_longbench(int argc, char **argv) {
    const char *task = NULL, *pred = NULL, *format = "text";
    int e = 0;
    hx_opt opts[] = {
        {"task", 't', HX_OPT_STR, &task, "T", "LongBench task (default: the file's name up to its first '.', as eval.py)"},
        {"pred", 0, HX_OPT_STR, &pred, "FILE", "predictions, pred.py's JSONL: pred, answers, all_classes (length for --e)"},
        {"format", 0, HX_OPT_STR, &format, "F", "text (default) or jsonl"},
        {"e", 0, HX_OPT_FLAG, &e, NULL, "LongBench-E: scores by length 0-4k, 4-8k, 8k+ (eval.py --e)"},
    };
    if (argc == 0) {
        printf("usage: kvbench score longbench --task T --pred FILE [--format jsonl] [--e]\n\n"
               "Scores LongBench (v1) predictions as its eval.py does: each sample's max over its answers of\n"
               "the task's scorer, then round(100 * mean, 2). Tasks scored with jieba's segmentation\n"
               "(multifieldqa_zh, dureader, vcsum) are refused. docs/LONGBENCH.md has the details.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("score longbench", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    int jsonl = !strcmp(format, "jsonl");
    if (!pred || (!jsonl && strcmp(format, "text"))) {
        fprintf(stderr, "kvbench score longbench: %s\n",
                pred ? "--format: expected text or jsonl" : "--pred FILE is required");
        return 2;
    }
    const met_lb_task *t = lb_task(task, pred);
    if (!t) return 1;
    lb_file f = {0};
    double *scores = NULL;
    int status = 1;
    if (lb_read(pred, e, &f)) goto out;
    if (!(scores = malloc((size_t)f.n * sizeof *scores))) goto out;
    if (lb_score_all(t, &f, pred, scores)) goto out;
    lb_print_samples(&f, scores, e, jsonl);
    if (lb_print_task(t, &f, scores, e, jsonl)) {
        fprintf(stderr, "kvbench score longbench: %s\n", kv_last_error());
        goto out;
    }
    status = 0;
out:
    free(scores);
    lb_file_free(&f);
    return status;
}

int hx_cmd_score(int argc, char **argv, int help) {
    if (help || argc == 0) {
        printf("usage: kvbench score rouge --pred FILE --ref FILE   (ROUGE of outputs from anywhere)\n"
               "       kvbench score lead --data FILE [--n 3]       (the lead-N summarization baseline)\n"
               "       kvbench score longbench --task T --pred FILE (LongBench's own scorers)\n\n");
        score_rouge(0, NULL);
        printf("\n");
        score_lead(0, NULL);
        printf("\n");
        score_longbench(0, NULL);
        return help ? 0 : 2;
    }
    if (!strcmp(argv[0], "rouge")) return score_rouge(argc - 1, argv + 1) ? 1 : 0;
    if (!strcmp(argv[0], "lead")) return score_lead(argc - 1, argv + 1) ? 1 : 0;
    if (!strcmp(argv[0], "longbench")) return score_longbench(argc - 1, argv + 1);
    fprintf(stderr, "kvbench score: unknown scorer '%s' (expected rouge, lead or longbench)\n", argv[0]);
    return 2;
}
