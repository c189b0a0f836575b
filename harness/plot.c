/* plot.c - `kvbench plot`: figures from the results database, drawn by
 * gnuplot (run as an external program). For each (model, task) of an
 * experiment:
 *   <task>_<metric>.{png,svg}    the headline metric against the budget, one
 *                                line per policy with its confidence band,
 *                                the full cache as a dashed line
 *   <task>_throughput / _latency decode tokens/s and p50 step latency
 *   <task>_kv_memory             peak KV bytes against sequence length
 *   <task>_heatmap_<policy>_<b>  passkey/needle accuracy, length x depth
 *   <task>_nll_<budget>          streaming NLL against position
 * Each figure's gnuplot script is kept beside it (<name>.gp) so it can be
 * restyled and redrawn by hand. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../base/kv_error.h"
#include "commands.h"
#include "opts.h"
#include "results_query.h"
#include "resultsdb.h"
#include "tasks.h"


typedef struct plot_ctx {
    sqlite3 *db;
    const char *out;
    const char *exp;
    int bootstrap;
    int n_figures;
    int failed;
} plot_ctx;

/* A file-name-safe copy of s. */
static void safe(char *dst, size_t cap, const char *s) {
    size_t i = 0;
    for (; *s && i + 1 < cap; s++) {
        char c = *s;
        dst[i++] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ? c
                   : c == '%'                                                                                         ? 'p'
                                                                                                                      : '_';
    }
    dst[i] = 0;
}

/* Opens <out>/<name>.gp with the common header; the caller writes the
 * datablocks and the plot command, then calls finish(). */
static FILE *begin(plot_ctx *pc, const char *name, const char *title, const char *xlabel, const char *ylabel,
                   char *path, size_t cap) {
    snprintf(path, cap, "%s/%s.gp", pc->out, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kvbench plot: %s: cannot create: %s\n", path, strerror(errno));
        pc->failed = 1;
        return NULL;
    }
    fprintf(f, "# kvbench plot: experiment %s\n", pc->exp);
    fprintf(f, "set title \"%s\" noenhanced\nset xlabel \"%s\" noenhanced\nset ylabel \"%s\" noenhanced\n", title, xlabel,
            ylabel);
    fprintf(f, "set key outside right top noenhanced\nset grid\nset style fill transparent solid 0.18 noborder\n");
    return f;
}

/* Writes the two outputs and runs gnuplot on the script. */
static void finish(plot_ctx *pc, FILE *f, const char *name, const char *plot_cmd, const char *path) {
    fprintf(f, "set terminal pngcairo size 1000,600 noenhanced\nset output \"%s/%s.png\"\n%s\n", pc->out, name, plot_cmd);
    fprintf(f, "set terminal svg size 1000,600 noenhanced\nset output \"%s/%s.svg\"\n%s\nunset output\n", pc->out, name,
            plot_cmd);
    if (fclose(f) != 0) {
        fprintf(stderr, "kvbench plot: %s: write failed\n", path);
        pc->failed = 1;
        return;
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "gnuplot '%s'", path);
    int r = system(cmd);
    if (r != 0) {
        fprintf(stderr, "kvbench plot: gnuplot failed on %s (exit %d)\n", path, WIFEXITED(r) ? WEXITSTATUS(r) : -1);
        pc->failed = 1;
        return;
    }
    printf("%s/%s.png\n%s/%s.svg\n", pc->out, name, pc->out, name);
    pc->n_figures += 2;
}

static double x_of(const hx_q_run *r) { return r->budget_kind == 2 ? r->budget_value * 100 : r->budget_value; }

/* Metric against budget, one line and band per policy label. */
static void plot_vs_budget(plot_ctx *pc, const hx_q_run *runs, int n_all, int lo, int hi, const char *metric,
                           const char *suffix, int kind) {
    const hx_q_run *full = hx_q_full_of(runs, n_all, &runs[lo]);
    const hx_metric_info *mi = hx_metric_find(metric);
    const double scale = mi->scale;
    char name[512], t1[128], t2[128], path[4200], title[512];
    safe(t1, sizeof t1, runs[lo].task);
    safe(t2, sizeof t2, runs[lo].model);
    snprintf(name, sizeof name, "%s_%s_%s%s", t2, t1, suffix ? suffix : metric, kind == 2 ? "" : "_tokens");
    /* Anything to draw? */
    int labels = 0;
    char plot[8192] = "plot ";
    hx_q_stat fs = {0};
    if (full && hx_q_stat_of(pc->db, full->id, NULL, metric, pc->bootstrap, 0.95, &fs)) return;
    snprintf(title, sizeof title, "%s: %s / %s, %s%s against KV budget (95%% CI)", pc->exp, runs[lo].model,
             runs[lo].task, metric, mi->label);
    FILE *f = NULL;
    for (int i = lo; i < hi; i++) {
        if (!strcmp(runs[i].policy, "full") || runs[i].budget_kind != kind) continue;
        int first = 1;
        for (int j = lo; j < i && first; j++) first = strcmp(runs[j].label, runs[i].label) != 0 || runs[j].budget_kind != kind;
        if (!first) continue;
        char block[8192] = "";
        int pts = 0;
        for (int j = i; j < hi; j++) {
            if (strcmp(runs[j].label, runs[i].label) || runs[j].budget_kind != kind) continue;
            hx_q_stat s;
            if (hx_q_stat_of(pc->db, runs[j].id, NULL, metric, pc->bootstrap, 0.95, &s)) return;
            if (!s.n) continue;
            snprintf(block + strlen(block), sizeof block - strlen(block), "%g %g %g %g\n", x_of(&runs[j]),
                     s.mean * scale, s.lo * scale, s.hi * scale);
            pts++;
        }
        if (!pts) continue;
        if (!f && !(f = begin(pc, name, title, kind == 2 ? "KV budget (% of the prompt)" : "KV budget (tokens per head)",
                              metric, path, sizeof path)))
            return;
        if (labels == 0 && !strcmp(metric, "accuracy")) fprintf(f, "set yrange [-2:102]\n");
        fprintf(f, "$d%d << EOD\n%sEOD\n", labels, block);
        snprintf(plot + strlen(plot), sizeof plot - strlen(plot),
                 "%s$d%d using 1:3:4 with filledcurves lc %d notitle, $d%d using 1:2 with linespoints lw 2 pt 7 lc %d "
                 "title \"%s\"",
                 labels ? ", " : "", labels, labels + 1, labels, labels + 1, runs[i].label);
        labels++;
    }
    if (!f) return;
    if (full && fs.n)
        snprintf(plot + strlen(plot), sizeof plot - strlen(plot), ", %g with lines dt 2 lw 2 lc rgb \"black\" title \"full cache\"",
                 fs.mean * scale);
    finish(pc, f, name, plot, path);
}

/* Peak KV bytes against sequence length (prompt + generated), per policy label. */
static void plot_memory(plot_ctx *pc, const hx_q_run *runs, int lo, int hi) {
    char name[512], t1[128], t2[128], path[4200], title[512], plot[8192] = "plot ";
    safe(t1, sizeof t1, runs[lo].task);
    safe(t2, sizeof t2, runs[lo].model);
    snprintf(name, sizeof name, "%s_%s_kv_memory", t2, t1);
    snprintf(title, sizeof title, "%s: %s / %s, peak physical KV memory per sample", pc->exp, runs[lo].model, runs[lo].task);
    FILE *f = begin(pc, name, title, "tokens in the sequence (prompt + generated)", "peak KV bytes (MiB)", path, sizeof path);
    if (!f) return;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pc->db, "SELECT prompt_tokens + generated_tokens, kv_bytes_peak FROM samples WHERE run = ?",
                           -1, &st, NULL)) {
        fclose(f);
        return;
    }
    int labels = 0;
    for (int i = lo; i < hi; i++) {
        int first = 1;
        for (int j = lo; j < i && first; j++) first = strcmp(runs[j].label, runs[i].label) != 0;
        if (!first) continue;
        int rows = 0;
        for (int j = i; j < hi; j++) {
            if (strcmp(runs[j].label, runs[i].label)) continue;
            sqlite3_reset(st);
            sqlite3_bind_text(st, 1, runs[j].id, -1, SQLITE_STATIC);
            while (sqlite3_step(st) == SQLITE_ROW) {
                if (!rows++) fprintf(f, "$d%d << EOD\n", labels);
                fprintf(f, "%d %g\n", sqlite3_column_int(st, 0), sqlite3_column_double(st, 1) / (1024.0 * 1024.0));
            }
        }
        if (!rows) continue; /* nothing stored for this policy yet */
        fprintf(f, "EOD\n");
        snprintf(plot + strlen(plot), sizeof plot - strlen(plot), "%s$d%d using 1:2 with points pt 7 ps 0.8 lc %d title \"%s\"",
                 labels ? ", " : "", labels, labels + 1, runs[i].label);
        labels++;
    }
    sqlite3_finalize(st);
    if (!labels) {
        fclose(f);
        remove(path);
        return;
    }
    finish(pc, f, name, plot, path);
}

/* Accuracy by context length x needle depth for one run. */
static void plot_heatmap(plot_ctx *pc, const hx_q_run *r) {
    char name[512], t1[128], t2[128], t3[128], t4[64], path[4200], title[512];
    safe(t1, sizeof t1, r->task);
    safe(t2, sizeof t2, r->model);
    safe(t3, sizeof t3, r->label);
    safe(t4, sizeof t4, r->budget);
    snprintf(name, sizeof name, "%s_%s_heatmap_%s_%s", t2, t1, t3, t4);
    snprintf(title, sizeof title, "%s: %s / %s, %s at %s: accuracy (%%) by length and depth", pc->exp, r->model, r->task,
             r->label, r->budget);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pc->db,
                           "SELECT s.length, s.depth, 100.0 * AVG(m.value) FROM samples s JOIN metrics m ON m.run = s.run "
                           "AND m.sample = s.sample AND m.name = 'accuracy' WHERE s.run = ? GROUP BY s.length, s.depth "
                           "ORDER BY s.length, s.depth",
                           -1, &st, NULL))
        return;
    sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    /* A grid of cells: x = the length's index, y = the depth's, labelled
     * with the real values; each cell coloured and printed with its accuracy. */
    int lens[64], deps[64], nl = 0, nd = 0, n = 0;
    int cl[1024], cd[1024];
    double acc[1024];
    while (sqlite3_step(st) == SQLITE_ROW && n < 1024) {
        int L = sqlite3_column_int(st, 0), D = sqlite3_column_int(st, 1), li = -1, di = -1;
        for (int i = 0; i < nl; i++) if (lens[i] == L) li = i;
        for (int i = 0; i < nd; i++) if (deps[i] == D) di = i;
        if (li < 0 && nl < 64) lens[li = nl++] = L;
        if (di < 0 && nd < 64) deps[di = nd++] = D;
        if (li < 0 || di < 0) continue;
        cl[n] = li;
        cd[n] = di;
        acc[n++] = sqlite3_column_double(st, 2);
    }
    sqlite3_finalize(st);
    if (!n) return;
    FILE *f = begin(pc, name, title, "context length (tokens)", "needle depth (%)", path, sizeof path);
    if (!f) return;
    fprintf(f, "$d << EOD\n");
    for (int i = 0; i < n; i++) fprintf(f, "%d %d %g\n", cl[i], cd[i], acc[i]);
    fprintf(f, "EOD\nset xtics (");
    for (int i = 0; i < nl; i++) fprintf(f, "%s\"%d\" %d", i ? ", " : "", lens[i], i);
    fprintf(f, ")\nset ytics (");
    for (int i = 0; i < nd; i++) fprintf(f, "%s\"%d\" %d", i ? ", " : "", deps[i], i);
    fprintf(f, ")\nset xrange [-0.5:%g]\nset yrange [-0.5:%g]\nset cbrange [0:100]\nset cblabel \"accuracy (%%)\"\n"
               "set palette defined (0 \"#c0392b\", 50 \"#f1c40f\", 100 \"#27ae60\")\nunset grid\n"
               "set style fill solid 1.0 noborder\n", nl - 0.5, nd - 0.5);
    finish(pc, f, name,
           "plot $d using 1:2:(0.5):(0.5):3 with boxxyerror palette notitle, "
           "$d using 1:2:(sprintf(\"%.0f\", $3)) with labels notitle",
           path);
}

/* A per-position series (streaming NLL, or KV bytes held) against
 * position, one figure per budget, a line per policy plus the full cache;
 * the mean over samples at each position. */
static void plot_series(plot_ctx *pc, const hx_q_run *runs, int lo, int hi, int kv) {
    for (int i = lo; i < hi; i++) {
        int first = 1;
        for (int j = lo; j < i && first; j++) first = strcmp(runs[j].budget, runs[i].budget) != 0;
        if (!first || !strcmp(runs[i].policy, "full")) continue;
        char name[512], t1[128], t2[128], t3[64], path[4200], title[512], plot[8192] = "plot ";
        safe(t1, sizeof t1, runs[i].task);
        safe(t2, sizeof t2, runs[i].model);
        safe(t3, sizeof t3, runs[i].budget);
        snprintf(name, sizeof name, "%s_%s_%s_%s", t2, t1, kv ? "kv_trace" : "nll", t3);
        snprintf(title, sizeof title, "%s: %s / %s, %s at budget %s (mean over samples)", pc->exp, runs[i].model,
                 runs[i].task, kv ? "physical KV memory held" : "streaming NLL", runs[i].budget);
        FILE *f = NULL;
        int labels = 0;
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(pc->db,
                               /* only points of stored samples (a damaged database may hold others) */
                               kv ? "SELECT t.pos, AVG(t.bytes) / 1048576.0 FROM kv_trace t JOIN samples s ON "
                                    "s.run = t.run AND s.sample = t.sample WHERE t.run = ? GROUP BY t.pos ORDER BY t.pos"
                                  : "SELECT c.pos, AVG(c.nll) FROM curves c JOIN samples s ON s.run = c.run AND "
                                    "s.sample = c.sample WHERE c.run = ? GROUP BY c.pos ORDER BY c.pos",
                               -1, &st, NULL))
            return;
        for (int j = lo; j < hi; j++) {
            if (strcmp(runs[j].budget, runs[i].budget) && strcmp(runs[j].policy, "full")) continue;
            sqlite3_reset(st);
            sqlite3_bind_text(st, 1, runs[j].id, -1, SQLITE_STATIC);
            int have = 0;
            while (sqlite3_step(st) == SQLITE_ROW) {
                if (!f && !(f = begin(pc, name, title, "position (tokens)", kv ? "KV bytes held (MiB)" : "NLL (nats per token)",
                                      path, sizeof path))) {
                    sqlite3_finalize(st);
                    return;
                }
                if (!have) fprintf(f, "$d%d << EOD\n", labels);
                have = 1;
                fprintf(f, "%d %g\n", sqlite3_column_int(st, 0), sqlite3_column_double(st, 1));
            }
            if (!have) continue;
            fprintf(f, "EOD\n");
            snprintf(plot + strlen(plot), sizeof plot - strlen(plot), "%s$d%d using 1:2 with lines lw 2 lc %d title \"%s\"",
                     labels ? ", " : "", labels, labels + 1, runs[j].label);
            labels++;
        }
        sqlite3_finalize(st);
        if (f) finish(pc, f, name, plot, path);
    }
}

/* The figures of one (model, task) pair at one kind of budget: the kind's
 * headline metric (or --metric) and its other figures (tasks.c), then
 * speed, latency and memory. A kind this build does not know gets
 * fidelity's figures. */
static void plot_pair(plot_ctx *pc, const hx_q_run *runs, int n, int lo, int hi, const hx_task_kind_info *ki,
                      const char *metric, int k) {
    plot_vs_budget(pc, runs, n, lo, hi, metric ? metric : ki->headline, NULL, k);
    char list[256];
    snprintf(list, sizeof list, "%s", metric ? "" : ki->plots);
    char *save = NULL;
    for (char *m = strtok_r(list, ",", &save); m; m = strtok_r(NULL, ",", &save))
        plot_vs_budget(pc, runs, n, lo, hi, m, NULL, k);
    plot_vs_budget(pc, runs, n, lo, hi, ki->throughput, "throughput", k);
    plot_vs_budget(pc, runs, n, lo, hi, "latency_p50_ms", "latency", k);
    plot_vs_budget(pc, runs, n, lo, hi, "kv_bytes_peak", "kv_peak", k);
}

int hx_cmd_plot(int argc, char **argv, int help) {
    const char *db_path = "results/kvbench.db", *experiment = NULL, *out = "plots", *metric = NULL;
    int bootstrap = 1000;
    hx_opt opts[] = {
        {"db", 0, HX_OPT_STR, &db_path, "PATH", "results database (default results/kvbench.db)"},
        {"experiment", 'e', HX_OPT_STR, &experiment, "NAME", "experiment (default: the one run last)"},
        {"out", 'o', HX_OPT_STR, &out, "DIR", "folder for the figures (default plots/)"},
        {"metric", 0, HX_OPT_STR, &metric, "M", "metric against budget (default: the task's headline metric)"},
        {"bootstrap", 0, HX_OPT_INT, &bootstrap, "N", "bootstrap resamples for the bands (default 1000)"},
    };
    if (help) {
        printf("usage: kvbench plot [--db PATH] [--experiment NAME] [--out DIR]\n\n"
               "Draws PNG and SVG figures with gnuplot: the metric against the KV budget per policy\n"
               "with 95%% confidence bands, fidelity, throughput and latency against the budget, peak KV\n"
               "memory against tokens, passkey/needle accuracy heatmaps (length x depth) and\n"
               "streaming NLL against position. Prints the files written.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("plot", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    if (system("gnuplot --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "kvbench plot: gnuplot was not found on PATH (Debian: apt-get install gnuplot-nox)\n");
        return 1;
    }
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "kvbench plot: %s: cannot create: %s\n", out, strerror(errno));
        return 1;
    }
    hx_db *hdb;
    if (hx_db_open_readonly(db_path, &hdb)) {
        fprintf(stderr, "kvbench plot: %s\n", kv_last_error());
        return 1;
    }
    char exp[256];
    hx_q_run *runs = NULL;
    int n = 0, status = 1;
    plot_ctx pc = {.db = hx_db_handle(hdb), .out = out, .exp = exp, .bootstrap = bootstrap};
    if (experiment) snprintf(exp, sizeof exp, "%s", experiment);
    else if (hx_q_latest_experiment(pc.db, exp, sizeof exp)) goto fail;
    if (hx_q_runs(pc.db, exp, &runs, &n)) goto fail;
    for (int lo = 0; lo < n;) {
        int hi = lo;
        while (hi < n && !strcmp(runs[hi].model, runs[lo].model) && !strcmp(runs[hi].task, runs[lo].task)) hi++;
        const hx_task_kind_info *ki = hx_task_kind_find(runs[lo].task_kind);
        if (!ki) ki = hx_task_kind_get(HX_TASK_FIDELITY);
        for (int k = 1; k <= 2; k++) plot_pair(&pc, runs, n, lo, hi, ki, metric, k);
        plot_memory(&pc, runs, lo, hi);
        if (ki->flags & HX_KIND_GRID)
            for (int i = lo; i < hi; i++) plot_heatmap(&pc, &runs[i]);
        if (ki->flags & HX_KIND_STREAM) plot_series(&pc, runs, lo, hi, 0);
        plot_series(&pc, runs, lo, hi, 1);
        lo = hi;
    }
    if (!pc.failed && pc.n_figures == 0) fprintf(stderr, "kvbench plot: experiment %s: nothing to draw\n", exp);
    status = pc.failed;
    goto out;
fail:
    fprintf(stderr, "kvbench plot: %s\n", kv_last_error());
out:
    free(runs);
    hx_db_close(hdb);
    return status;
}
