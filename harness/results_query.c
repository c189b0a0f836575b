/* results_query.c - see results_query.h. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/hash.h"
#include "../base/kv_error.h"
#include "../metrics/stats.h"
#include "results_query.h"
#include "resultsdb.h"

static int q_err(sqlite3 *db, const char *what) { return kv_errorf(KV_EIO, "%s: %s", what, sqlite3_errmsg(db)); }

static void col_text(sqlite3_stmt *st, int i, char *dst, size_t cap) {
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

int hx_q_latest_experiment(sqlite3 *db, char *name, size_t cap) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT name FROM experiments ORDER BY updated DESC, rowid DESC LIMIT 1", -1, &st, NULL))
        return q_err(db, "reading experiments");
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) col_text(st, 0, name, cap);
    sqlite3_finalize(st);
    if (r != SQLITE_ROW) return kv_errorf(KV_ENOTFOUND, "the database holds no experiment");
    return KV_OK;
}

/* The question mode of a run's spec, and the hash of the spec without it
 * (the key that pairs a run asking after compression with its in-prompt
 * twin). */
static void spec_question(sqlite3_stmt *st, int col, hx_q_run *r) {
    const char *spec = (const char *)sqlite3_column_text(st, col);
    r->question_after = 0;
    r->twin = 0;
    if (!spec) return;
    const char *q = strstr(spec, " question=");
    r->question_after = q && !strncmp(q, " question=after_compression ", 28);
    size_t head = q ? (size_t)(q - spec) : strlen(spec);
    uint64_t h = kv_fnv1a64(KV_FNV1A64_INIT, spec, head);
    if (q) {
        const char *rest = strchr(q + 1, ' ');
        if (rest) h = kv_fnv1a64(h, rest, strlen(rest));
    }
    r->twin = h;
}

/* The model's settings in a run's spec: the value of its arch= field. */
static void spec_settings(sqlite3_stmt *st, int col, hx_q_run *r) {
    const char *spec = (const char *)sqlite3_column_text(st, col);
    const char *a = spec ? strstr(spec, " arch=") : NULL;
    r->settings[0] = '\0';
    r->settings_hash = 0;
    if (!a) return;
    const int len = (int)strcspn(a + 6, " ");
    /* the hash tells settings apart even where the text is longer than the field */
    r->settings_hash = kv_fnv1a64(KV_FNV1A64_INIT, a + 6, (size_t)len);
    snprintf(r->settings, sizeof r->settings, "%.*s", len, a + 6);
    if (len >= (int)sizeof r->settings) r->settings[0] = '\0'; /* too long to show: named by its hash */
}

static int by_model(const void *x, const void *y) {
    const hx_q_run *a = x, *b = y;
    int c = strcmp(a->model, b->model);
    if (!c) c = strcmp(a->task, b->task);
    return c ? c : (a->order > b->order) - (a->order < b->order);
}

/* Runs of one model name and file under several settings become models of
 * their own ("NAME [SETTINGS]"), then the runs are sorted again so that
 * each such model's runs are together, in their first order otherwise. */
static void split_settings(hx_q_run *runs, int n) {
    int any = 0;
    for (int lo = 0, hi; lo < n; lo = hi) { /* runs come grouped by model name */
        int distinct = 0;
        for (hi = lo; hi < n && !strcmp(runs[hi].model, runs[lo].model); hi++) {
            int first = 1;
            for (int k = lo; k < hi && first; k++) first = runs[k].settings_hash != runs[hi].settings_hash;
            distinct += first;
        }
        for (int i = lo; i < hi; i++) {
            runs[i].order = i;
            runs[i].model_settings = distinct;
        }
        any |= distinct > 1;
    }
    if (!any) return;
    for (int i = 0; i < n; i++) {
        hx_q_run *r = &runs[i];
        if (r->model_settings < 2) continue;
        const size_t k = strlen(r->model);
        if (r->settings[0] && k + strlen(r->settings) + 4 <= sizeof r->model)
            snprintf(r->model + k, sizeof r->model - k, " [%s]", r->settings);
        else
            snprintf(r->model + (k > sizeof r->model - 11 ? sizeof r->model - 11 : k), 11, " #%08x",
                     (unsigned)r->settings_hash);
    }
    qsort(runs, (size_t)n, sizeof *runs, by_model);
}

int hx_q_runs(sqlite3 *db, const char *experiment, hx_q_run **runs, int *n) {
    *runs = NULL;
    *n = 0;
    sqlite3_stmt *st;
    /* Policies in the order the sweep first met them (experiment_runs' rowid). */
    const char *sql =
        "SELECT r.id, r.model, r.task, r.task_kind, r.policy_label, r.policy, r.budget, r.budget_kind, r.budget_value, "
        "r.model_hash, (SELECT COUNT(DISTINCT r3.model_hash) FROM experiment_runs er3 JOIN runs r3 ON r3.id = er3.run "
        "WHERE er3.experiment = ?1 AND r3.model = r.model), r.spec "
        "FROM experiment_runs er JOIN runs r ON r.id = er.run WHERE er.experiment = ?1 "
        "ORDER BY r.model, r.model_hash, r.task, (SELECT MIN(er2.rowid) FROM experiment_runs er2 JOIN runs r2 ON r2.id = er2.run "
        "WHERE er2.experiment = ?1 AND r2.policy_label = r.policy_label), r.budget_kind, r.budget_value";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL)) return q_err(db, "reading runs");
    sqlite3_bind_text(st, 1, experiment, -1, SQLITE_STATIC);
    int cap = 0, rc = KV_OK;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) {
            hx_q_run *b = realloc(*runs, (size_t)(cap = cap ? cap * 2 : 64) * sizeof *b);
            if (!b) { rc = kv_errorf(KV_ENOMEM, "out of memory"); break; }
            *runs = b;
        }
        hx_q_run *r = &(*runs)[(*n)++];
        col_text(st, 0, r->id, sizeof r->id);
        col_text(st, 1, r->model, sizeof r->model);
        col_text(st, 2, r->task, sizeof r->task);
        col_text(st, 3, r->task_kind, sizeof r->task_kind);
        col_text(st, 4, r->label, sizeof r->label);
        col_text(st, 5, r->policy, sizeof r->policy);
        col_text(st, 6, r->budget, sizeof r->budget);
        r->budget_kind = sqlite3_column_int(st, 7);
        r->budget_value = sqlite3_column_double(st, 8);
        col_text(st, 9, r->model_hash, sizeof r->model_hash);
        r->model_files = sqlite3_column_int(st, 10);
        spec_question(st, 11, r);
        spec_settings(st, 11, r);
        /* One model name, several files (a re-quantization, weights changed
         * between runs): averaging them together would report a model that
         * does not exist, and refusing would hide results that are sound
         * file by file; so each file becomes a model of its own. */
        if (r->model_files > 1) {
            size_t k = strlen(r->model);
            if (k > sizeof r->model - 10) k = sizeof r->model - 10;
            snprintf(r->model + k, sizeof r->model - k, "@%.8s", r->model_hash);
        }
    }
    sqlite3_finalize(st);
    if (rc == KV_OK) split_settings(*runs, *n);
    if (rc == KV_OK && *n == 0) rc = kv_errorf(KV_ENOTFOUND, "experiment '%s' has no runs in this database", experiment);
    if (rc) {
        free(*runs);
        *runs = NULL;
        *n = 0;
    }
    return rc;
}

void hx_q_note_model_files(const char *cmd, const char *experiment, const hx_q_run *runs, int n) {
    for (int i = 0; i < n; i++) {
        if (runs[i].model_files < 2) continue;
        const char *at = strrchr(runs[i].model, '@');
        const size_t k = at ? (size_t)(at - runs[i].model) : strlen(runs[i].model);
        int first = 1; /* the first run of this model name: print its note once */
        for (int j = 0; j < i && first; j++)
            first = !(runs[j].model_files > 1 && !strncmp(runs[j].model, runs[i].model, k) && runs[j].model[k] == '@');
        if (!first) continue;
        fprintf(stderr, "kvbench %s: note: experiment %s holds runs of model %.*s made from %d different files "
                "(model hashes", cmd, experiment, (int)k, runs[i].model, runs[i].model_files);
        const char *last = "";
        for (int j = i; j < n; j++) /* ordered by model, hash: each hash once */
            if (!strncmp(runs[j].model, runs[i].model, k) && runs[j].model[k] == '@' && strcmp(runs[j].model_hash, last)) {
                fprintf(stderr, " %s", runs[j].model_hash);
                last = runs[j].model_hash;
            }
        fprintf(stderr, "); they are shown apart as %.*s@HASH and never averaged together\n", (int)k, runs[i].model);
    }
    for (int i = 0; i < n; i++) { /* settings: once per base name (the runs are sorted by name) */
        if (runs[i].model_settings < 2) continue;
        const size_t k = strcspn(runs[i].model, " ");
        if (i > 0 && runs[i - 1].model_settings > 1 && !strncmp(runs[i - 1].model, runs[i].model, k) &&
            runs[i - 1].model[k] == ' ')
            continue;
        fprintf(stderr, "kvbench %s: note: experiment %s holds runs of model %.*s under %d settings (arch=, the "
                "spec's rope base/context/eps/cache type/kernels); they are shown apart as %.*s [SETTINGS] and never "
                "averaged together\n", cmd, experiment, (int)k, runs[i].model, runs[i].model_settings, (int)k,
                runs[i].model);
    }
}

const hx_q_run *hx_q_full_of(const hx_q_run *runs, int n, const hx_q_run *r) {
    for (int i = 0; i < n; i++)
        if (!strcmp(runs[i].policy, "full") && !strcmp(runs[i].model, r->model) && !strcmp(runs[i].task, r->task))
            return &runs[i];
    return NULL;
}

int hx_q_stat_of(sqlite3 *db, const char *run, const char *full_run, const char *metric, int bootstrap, double level,
                 hx_q_stat *out) {
    out->n = 0;
    out->mean = out->lo = out->hi = out->ratio = NAN;
    sqlite3_stmt *st;
    /* Values of stored samples only: a metric row of no sample (a damaged
     * database) is nobody's result and must not move n, the mean or the CI. */
    if (sqlite3_prepare_v2(db, "SELECT m.value, f.value FROM metrics m JOIN samples s ON s.run = m.run AND s.sample = m.sample "
                               "LEFT JOIN metrics f ON f.run = ?3 AND f.sample = m.sample AND f.name = m.name "
                               "AND EXISTS (SELECT 1 FROM samples fs WHERE fs.run = ?3 AND fs.sample = m.sample) "
                               "WHERE m.run = ?1 AND m.name = ?2 AND m.value IS NOT NULL ORDER BY m.sample",
                           -1, &st, NULL))
        return q_err(db, "reading metrics");
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, metric, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, full_run ? full_run : "", -1, SQLITE_STATIC);
    size_t cap = 256, n = 0;
    double *v = malloc(cap * sizeof *v), pol_sum = 0, full_sum = 0;
    int paired = 0, rc = KV_OK;
    while (v && sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            double *b = realloc(v, (cap *= 2) * sizeof *b);
            if (!b) { free(v); v = NULL; break; }
            v = b;
        }
        v[n] = sqlite3_column_double(st, 0);
        if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
            pol_sum += v[n];
            full_sum += sqlite3_column_double(st, 1);
            paired++;
        }
        n++;
    }
    sqlite3_finalize(st);
    if (!v) return kv_errorf(KV_ENOMEM, "out of memory");
    out->n = (int)n;
    if (n) {
        out->mean = met_mean(v, n);
        /* The seed depends on the run and metric only: reports are reproducible. */
        uint64_t seed = kv_fnv1a64(kv_fnv1a64(1469598103934665603ull, run, strlen(run)), metric, strlen(metric));
        rc = met_bootstrap_ci(v, n, bootstrap, level, seed, &out->lo, &out->hi);
    }
    if (paired && full_sum != 0) out->ratio = pol_sum / full_sum;
    free(v);
    return rc;
}

int hx_q_metric_names(sqlite3 *db, const char *run, char *buf, size_t cap) {
    buf[0] = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT DISTINCT m.name FROM metrics m JOIN samples s ON s.run = m.run AND s.sample = m.sample "
                               "WHERE m.run = ? ORDER BY m.name", -1, &st, NULL))
        return q_err(db, "reading metric names");
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", buf[0] ? "," : "", sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return KV_OK;
}
