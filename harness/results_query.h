/* results_query.h - reading the results database for reports and plots:
 * an experiment's runs, per-sample metric values, and their aggregate
 * (mean, bootstrap confidence interval, paired ratio to the full cache). */
#ifndef HX_RESULTS_QUERY_H
#define HX_RESULTS_QUERY_H

#include <stddef.h>
#include <stdint.h>

typedef struct sqlite3 sqlite3;

typedef struct hx_q_run {
    char id[17];
    char model[64], task[64], task_kind[32], label[64], policy[32], budget[32];
    int budget_kind;      /* pol_budget_kind */
    double budget_value;
    char model_hash[33];  /* the model file's identity (XXH3-128, hex) */
    int model_files;      /* model files (hashes) the experiment's runs of this model name came from */
    char settings[128];   /* the model's settings in the spec (arch=...: rope base, context, eps, cache type, kernels);
                             "" when longer than this */
    uint64_t settings_hash; /* FNV-1a of the whole arch= value: what tells settings apart */
    int model_settings;   /* distinct settings among the runs of this model name and file */
    int order;            /* its place in the query's order (hx_q_runs' stable re-sort) */
    int question_after;   /* its task asks the question after compression (spec question=after_compression) */
    uint64_t twin;        /* a hash of its spec without the question mode: runs that differ only there share it */
} hx_q_run;

typedef struct hx_q_stat {
    int n;                /* samples with the metric */
    double mean, lo, hi;  /* mean and its confidence interval */
    double ratio;         /* mean over the samples both hold / the full cache's mean on them; NAN without one */
} hx_q_stat;

/* The experiment updated last (for commands given no --experiment). */
int hx_q_latest_experiment(sqlite3 *db, char *name, size_t cap);

/* The runs of an experiment, ordered by model, task, policy (in the order
 * the sweep first ran them), budget kind and value. *runs is malloc'd.
 * Runs of one model name made from different model files are never pooled:
 * their model reads "NAME@HASH" (the hash's first 8 digits), so each file
 * is a model of its own for reports and plots (see hx_q_note_model_files).
 * Nor are runs of one file under different model settings (kv_type,
 * kernels, rope_base, ... changed between runs): their model reads
 * "NAME [SETTINGS]", or "NAME #HASH" (8 digits of the settings' hash) when
 * that is too long. */
int hx_q_runs(sqlite3 *db, const char *experiment, hx_q_run **runs, int *n);

/* Prints to stderr, once per model name, which files (or settings) a model
 * name's runs came from when there are several (the note for hx_q_runs'
 * renaming). */
void hx_q_note_model_files(const char *cmd, const char *experiment, const hx_q_run *runs, int n);

/* The full-cache run of the same model and task (NULL if none). */
const hx_q_run *hx_q_full_of(const hx_q_run *runs, int n, const hx_q_run *r);

/* Aggregate of metric over run's samples; ratio against full (may be NULL). */
int hx_q_stat_of(sqlite3 *db, const char *run, const char *full_run, const char *metric, int bootstrap, double level,
                 hx_q_stat *out);

/* The metric names stored for a run, comma-separated into buf. */
int hx_q_metric_names(sqlite3 *db, const char *run, char *buf, size_t cap);

/* How a metric is shown and which way is better: tasks.h (hx_metric_find). */

#endif
