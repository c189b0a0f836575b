/* report.c - `kvbench report`: paper-style tables from the results
 * database. Rows are policies, columns budgets; a cell is the metric's mean
 * over the samples with its bootstrap confidence interval and its ratio to
 * the full cache on the same samples; the last column is the smallest
 * budget from which on the policy holds 99% of the full cache's score
 * (Keyformer's criterion; for lower-is-better metrics, within 1%). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "commands.h"
#include "opts.h"
#include "results_query.h"
#include "resultsdb.h"
#include "tasks.h"


/* The kind's default metrics (tasks.c); a kind this build does not know
 * (a newer database) gets fidelity's, which every generating kind stores. */
static const char *default_metrics(const char *kind) {
    const hx_task_kind_info *ki = hx_task_kind_find(kind);
    return (ki ? ki : hx_task_kind_get(HX_TASK_FIDELITY))->report;
}

/* Does the policy hold the full cache's score (99%, or within 1% when lower is better)? */
static int holds(const char *metric, double ratio) {
    if (isnan(ratio)) return 0;
    return hx_metric_find(metric)->higher_is_better ? ratio >= 0.99 : ratio <= 1.01;
}

static void fmt_val(char *buf, size_t cap, double v, double scale) {
    if (isnan(v)) snprintf(buf, cap, "-");
    else if (fabs(v * scale) >= 1e5) snprintf(buf, cap, "%.3g", v * scale);
    else if (fabs(v * scale) < 10) snprintf(buf, cap, "%.3f", v * scale);
    else snprintf(buf, cap, "%.2f", v * scale);
}

typedef struct report_opts {
    const char *format;
    double level;
    int bootstrap;
} report_opts;

/* One table: a (model, task) pair and a metric. runs[lo..hi) share model and task. */
static int table(sqlite3 *db, const char *exp, const hx_q_run *runs, int n_all, int lo, int hi, const char *metric,
                 const report_opts *o) {
    const hx_q_run *full = hx_q_full_of(runs, n_all, &runs[lo]);
    const hx_metric_info *mi = hx_metric_find(metric);
    const double scale = mi->scale;
    int csv = !strcmp(o->format, "csv");
    /* Columns: the budgets of the compressed runs in order. */
    const hx_q_run *cols[64];
    int n_cols = 0;
    for (int i = lo; i < hi; i++) {
        if (!strcmp(runs[i].policy, "full")) continue;
        int seen = 0;
        for (int c = 0; c < n_cols && !seen; c++) seen = !strcmp(cols[c]->budget, runs[i].budget);
        if (!seen && n_cols < 64) cols[n_cols++] = &runs[i];
    }
    /* keep columns in (kind, value) order */
    for (int a = 1; a < n_cols; a++)
        for (int b = a; b > 0 && (cols[b]->budget_kind < cols[b - 1]->budget_kind ||
                                  (cols[b]->budget_kind == cols[b - 1]->budget_kind &&
                                   cols[b]->budget_value < cols[b - 1]->budget_value));
             b--) {
            const hx_q_run *t = cols[b];
            cols[b] = cols[b - 1];
            cols[b - 1] = t;
        }
    hx_q_stat fs = {0};
    if (full && hx_q_stat_of(db, full->id, NULL, metric, o->bootstrap, o->level, &fs)) return -1;
    int any = fs.n > 0;
    for (int i = lo; i < hi && !any; i++) {
        hx_q_stat s;
        if (hx_q_stat_of(db, runs[i].id, NULL, metric, 0, o->level, &s)) return -1;
        any = s.n > 0;
    }
    if (!any) return 0; /* this task stores no such metric */
    /* the 99% column needs the full cache's own value of the metric; costs (memory, time) get none */
    int show_hold = !mi->cost && full && fs.n > 0;
    char a[32], b[32], c[32];
    if (csv) {
        if (full && fs.n)
            printf("%s,%s,%s,%s,%s,%s,%d,%.6g,%.6g,%.6g,1\n", exp, runs[lo].model, runs[lo].task, metric, full->label,
                   full->budget, fs.n, fs.mean, fs.lo, fs.hi);
    } else {
        printf("\n### %s / %s (%s): %s%s, %.0f%% bootstrap CI\n\n", runs[lo].model, runs[lo].task, runs[lo].task_kind,
               metric, mi->label, o->level * 100);
        if (full && fs.n) {
            fmt_val(a, sizeof a, fs.mean, scale);
            fmt_val(b, sizeof b, fs.lo, scale);
            fmt_val(c, sizeof c, fs.hi, scale);
            printf("full cache (%s): %s [%s, %s], %d samples\n\n", full->label, a, b, c, fs.n);
        } else if (full) printf("measured against the full cache (%s) on the same samples\n\n", full->label);
        else printf("no full-cache run: ratios are not available\n\n");
        printf("| policy |");
        for (int k = 0; k < n_cols; k++) printf(" %s |", cols[k]->budget);
        if (show_hold) printf(" holds %s at |", mi->higher_is_better ? "99%" : "within 1%");
        printf("\n|---|");
        for (int k = 0; k < n_cols + show_hold; k++) printf("---|");
        printf("\n");
    }
    /* One row per policy label, in run order. */
    for (int i = lo; i < hi; i++) {
        if (!strcmp(runs[i].policy, "full")) continue;
        int first = 1;
        for (int j = lo; j < i && first; j++) first = strcmp(runs[j].label, runs[i].label) != 0;
        if (!first) continue;
        if (!csv) printf("| %s |", runs[i].label);
        const char *from = NULL;
        int broken = 0;
        for (int k = 0; k < n_cols; k++) {
            const hx_q_run *r = NULL;
            for (int j = lo; j < hi && !r; j++)
                if (!strcmp(runs[j].label, runs[i].label) && !strcmp(runs[j].budget, cols[k]->budget)) r = &runs[j];
            hx_q_stat s = {0};
            s.mean = NAN;
            if (r && hx_q_stat_of(db, r->id, full ? full->id : NULL, metric, o->bootstrap, o->level, &s)) return -1;
            if (csv) {
                if (r && s.n)
                    printf("%s,%s,%s,%s,%s,%s,%d,%.6g,%.6g,%.6g,%.6g\n", exp, runs[i].model, runs[i].task, metric,
                           runs[i].label, r->budget, s.n, s.mean, s.lo, s.hi, s.ratio);
                continue;
            }
            if (!r || !s.n) {
                printf(" - |");
                broken = 1;
                continue;
            }
            fmt_val(a, sizeof a, s.mean, scale);
            fmt_val(b, sizeof b, s.lo, scale);
            fmt_val(c, sizeof c, s.hi, scale);
            if (isnan(s.ratio)) printf(" %s [%s, %s] |", a, b, c);
            else printf(" %s [%s, %s] %.0f%% |", a, b, c, s.ratio * 100);
            /* the smallest budget from which on every larger one holds */
            if (holds(metric, s.ratio)) {
                if (!from || broken) from = r->budget;
                broken = 0;
            } else {
                from = NULL;
                broken = 0;
            }
        }
        if (!csv && show_hold) printf(" %s |", from ? from : "-");
        if (!csv) printf("\n");
    }
    return 0;
}

/* "mean [lo, hi]" of a statistic, or "-". */
static const char *fmt_stat(char *buf, size_t cap, const hx_q_stat *s, double scale) {
    if (!s->n) return snprintf(buf, cap, "-"), buf;
    char a[32], b[32], c[32];
    fmt_val(a, sizeof a, s->mean, scale);
    fmt_val(b, sizeof b, s->lo, scale);
    fmt_val(c, sizeof c, s->hi, scale);
    snprintf(buf, cap, "%s [%s, %s]", a, b, c);
    return buf;
}

/* A task that asks its question after compression, side by side with its
 * in-prompt twin: the runs whose specs differ only in the question mode
 * (two tasks of one experiment, same data and settings), per policy and
 * budget. Markdown only. */
static int question_table(sqlite3 *db, const hx_q_run *runs, int n, int lo, int hi, const char *metric,
                          const report_opts *o) {
    if (strcmp(o->format, "md") != 0 || !runs[lo].question_after) return 0;
    const double scale = hx_metric_find(metric)->scale;
    int printed = 0;
    for (int i = lo; i < hi; i++) {
        const hx_q_run *tw = NULL;
        for (int j = 0; j < n && !tw; j++)
            if (!runs[j].question_after && runs[j].twin == runs[i].twin && !strcmp(runs[j].model, runs[i].model))
                tw = &runs[j];
        if (!tw) continue;
        hx_q_stat a = {0}, b = {0};
        if (hx_q_stat_of(db, tw->id, NULL, metric, o->bootstrap, o->level, &a) ||
            hx_q_stat_of(db, runs[i].id, NULL, metric, o->bootstrap, o->level, &b))
            return -1;
        if (!a.n && !b.n) continue;
        if (!printed++)
            printf("\n#### %s / %s: the question in the prompt (task %s) vs after compression (task %s)\n\n"
                   "| policy | budget | in the prompt | after compression |\n|---|---|---|---|\n",
                   runs[lo].model, metric, tw->task, runs[lo].task);
        char x[128], y[128];
        printf("| %s | %s | %s | %s |\n", runs[i].label, runs[i].budget, fmt_stat(x, sizeof x, &a, scale),
               fmt_stat(y, sizeof y, &b, scale));
    }
    return 0;
}

/* Which layers of each model attend through a sliding window (a property
 * of the model, not of the policy: those layers see their last W tokens
 * even under the full cache). Read from the runs' specs ("/swa=W:layers"). */
static int window_notes(sqlite3 *db, const char *exp) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT DISTINCT r.model, r.spec FROM runs r JOIN experiment_runs er ON er.run = r.id "
                               "WHERE er.experiment = ?1 AND instr(r.spec, '/swa=') > 0 ORDER BY r.model", -1, &st, NULL))
        return kv_errorf(KV_EIO, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, exp, -1, SQLITE_STATIC);
    int rc;
    char last[640] = "", line[640];
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *model = (const char *)sqlite3_column_text(st, 0), *spec = (const char *)sqlite3_column_text(st, 1);
        const char *s = spec ? strstr(spec, "/swa=") : NULL;
        int w = 0, len = 0;
        if (!s || sscanf(s, "/swa=%d:%n", &w, &len) != 1 || len == 0) continue;
        int n = (int)strcspn(s + len, " /");
        snprintf(line, sizeof line, "> %s: layers %.*s attend to their last %d tokens (sliding window, the model's "
                 "own); the others attend globally.", model ? model : "?", n, s + len, w);
        if (strcmp(line, last)) printf("\n%s\n", line); /* one line per model and window layout */
        snprintf(last, sizeof last, "%s", line);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? KV_OK : kv_errorf(KV_EIO, "%s", sqlite3_errmsg(db));
}

/* Models run with int8 kernels (kernels = int8): their logits carry
 * llama.cpp's activation rounding, so a reader must know. */
static int kernel_notes(sqlite3 *db, const char *exp) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT DISTINCT r.model FROM runs r JOIN experiment_runs er ON er.run = r.id "
                               "WHERE er.experiment = ?1 AND instr(r.spec, '/kernels=int8') > 0 ORDER BY r.model",
                           -1, &st, NULL))
        return kv_errorf(KV_EIO, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, exp, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        printf("\n> %s: int8 kernels (activations rounded to int8 blocks as llama.cpp does, prompts read a token "
               "at a time).\n", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? KV_OK : kv_errorf(KV_EIO, "%s", sqlite3_errmsg(db));
}

int hx_cmd_report(int argc, char **argv, int help) {
    const char *db_path = "results/kvbench.db", *experiment = NULL, *metric = NULL, *format = "md";
    const char *task = NULL;
    float level = 0.95f;
    int bootstrap = 1000;
    hx_opt opts[] = {
        {"db", 0, HX_OPT_STR, &db_path, "PATH", "results database (default results/kvbench.db)"},
        {"experiment", 'e', HX_OPT_STR, &experiment, "NAME", "experiment (default: the one run last)"},
        {"metric", 0, HX_OPT_STR, &metric, "M,...", "metrics to tabulate (default: the task kind's headline metrics)"},
        {"task", 0, HX_OPT_STR, &task, "NAME", "only this task"},
        {"format", 'f', HX_OPT_STR, &format, "md|csv", "markdown tables (default) or CSV rows"},
        {"ci", 0, HX_OPT_FLOAT, &level, "L", "confidence level of the intervals (default 0.95)"},
        {"bootstrap", 0, HX_OPT_INT, &bootstrap, "N", "bootstrap resamples (default 1000)"},
    };
    if (help) {
        printf("usage: kvbench report [--db PATH] [--experiment NAME] [--metric M,...] [--format md|csv]\n\n"
               "Paper-style tables: rows are policies, columns budgets; each cell is the mean over the\n"
               "samples with its bootstrap confidence interval and its ratio to the full cache on the\n"
               "same samples. The last column is the smallest budget from which on the policy holds\n"
               "99%% of the full cache's score (Keyformer's criterion; within 1%% for lower-is-better\n"
               "metrics such as perplexity). Fractions (ROUGE, accuracy) are shown x100.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("report", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    if (strcmp(format, "md") && strcmp(format, "csv")) {
        fprintf(stderr, "kvbench report: --format: expected md or csv, got '%s'\n", format);
        return 2;
    }
    if (!(level > 0 && level < 1) || bootstrap < 0) {
        fprintf(stderr, "kvbench report: expected 0 < --ci < 1 and --bootstrap >= 0\n");
        return 2;
    }
    hx_db *hdb;
    if (hx_db_open_readonly(db_path, &hdb)) {
        fprintf(stderr, "kvbench report: %s\n", kv_last_error());
        return 1;
    }
    sqlite3 *db = hx_db_handle(hdb);
    char exp[256];
    hx_q_run *runs = NULL;
    int n = 0, status = 1;
    if (experiment) snprintf(exp, sizeof exp, "%s", experiment);
    else if (hx_q_latest_experiment(db, exp, sizeof exp)) goto fail;
    if (hx_q_runs(db, exp, &runs, &n)) goto fail;
    hx_q_note_model_files("report", exp, runs, n);
    report_opts o = {format, level, bootstrap};
    if (!strcmp(format, "csv")) printf("experiment,model,task,metric,policy,budget,n,mean,ci_lo,ci_hi,ratio_to_full\n");
    else {
        printf("## %s (%s)\n", exp, db_path);
        if (window_notes(db, exp) || kernel_notes(db, exp)) goto fail;
    }
    int shown = 0;
    for (int lo = 0; lo < n;) {
        int hi = lo;
        while (hi < n && !strcmp(runs[hi].model, runs[lo].model) && !strcmp(runs[hi].task, runs[lo].task)) hi++;
        if (!task || !strcmp(task, runs[lo].task)) {
            char list[1024];
            snprintf(list, sizeof list, "%s", metric ? metric : default_metrics(runs[lo].task_kind));
            char *save = NULL;
            for (char *m = strtok_r(list, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
                if (table(db, exp, runs, n, lo, hi, m, &o) || question_table(db, runs, n, lo, hi, m, &o)) goto fail;
                shown++;
            }
        }
        lo = hi;
    }
    if (task && !shown) {
        fprintf(stderr, "kvbench report: experiment %s has no task '%s'\n", exp, task);
        goto out;
    }
    status = 0;
    goto out;
fail:
    fprintf(stderr, "kvbench report: %s\n", kv_last_error());
out:
    free(runs);
    hx_db_close(hdb);
    return status;
}
