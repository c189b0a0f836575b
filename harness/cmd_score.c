/* cmd_score.c - `kvbench score`: scoring outputs that came from anywhere.
 *   score rouge --pred FILE --ref FILE   ROUGE-1/2/L/Lsum per item and mean
 *   score lead  --data FILE [--n 3]      the lead-N baseline of a
 *                                        summarization set (first N
 *                                        sentences of each document)
 * Plain-text inputs hold one item per line with "\n" (and "\\") escapes;
 * JSONL inputs name their field (--pred-field, --ref-field). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../datasets/dataset.h"
#include "../engine/kv_error.h"
#include "../metrics/rouge.h"
#include "../metrics/sentences.h"
#include "commands.h"
#include "opts.h"
#include "paths.h"

#define N_OPTS(a) (int)(sizeof(a) / sizeof((a)[0]))

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

int hx_cmd_score(int argc, char **argv, int help) {
    if (help || argc == 0) {
        printf("usage: kvbench score rouge --pred FILE --ref FILE   (ROUGE of outputs from anywhere)\n"
               "       kvbench score lead --data FILE [--n 3]       (the lead-N summarization baseline)\n\n");
        score_rouge(0, NULL);
        printf("\n");
        score_lead(0, NULL);
        return help ? 0 : 2;
    }
    if (!strcmp(argv[0], "rouge")) return score_rouge(argc - 1, argv + 1) ? 1 : 0;
    if (!strcmp(argv[0], "lead")) return score_lead(argc - 1, argv + 1) ? 1 : 0;
    fprintf(stderr, "kvbench score: unknown scorer '%s' (expected rouge or lead)\n", argv[0]);
    return 2;
}
