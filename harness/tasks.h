/* tasks.h - what kvbench knows of each task kind and of each metric, as
 * two tables: the experiment parser, the runner, the report and the plots
 * all look a kind or a metric up here instead of matching names.
 *
 * A task kind: its name in experiment files and the database, its default
 * template and the templates it may read, how its samples are loaded and
 * scored, and the metrics the report and the plots show first. A metric:
 * whether higher is better, whether it is a cost (memory, time), its unit
 * and how it is shown. */
#ifndef HX_TASKS_H
#define HX_TASKS_H

#include <stdint.h>

#include "../datasets/dataset.h"
#include "../datasets/longbench.h"
#include "driver.h"
#include "experiment.h"
#include "resultsdb.h"

/* ------------------------------------------------------------ metrics */

/* The metrics of one sample, in the order they were measured. */
#define HX_MAX_METRICS 96
typedef struct hx_metric_list {
    hx_metric m[HX_MAX_METRICS];
    int n;
    int lost; /* metrics that did not fit: an error when the sample is written */
} hx_metric_list;

void hx_metric_put(hx_metric_list *l, const char *name, double v);
/* rouge-score's ROUGE-1, -2, -L and -Lsum of pred against ref: F, P and R
 * (rouge1_f ...), or with prefix "fid" F alone (fid_rouge1_f ...). */
int hx_metric_put_rouge(hx_metric_list *l, const char *prefix, const char *pred, const char *ref);

typedef struct hx_metric_info {
    const char *name;     /* the metric, or a prefix of metrics when it ends in '*' */
    int higher_is_better; /* 0: lower is better (perplexity, divergence, memory, time) */
    int cost;             /* memory or time: the report has no "holds 99%" column for it */
    double scale;         /* shown as value x scale: 100 for fractions, 1/MiB for bytes */
    const char *label;    /* printed after the name where it is shown scaled: " x100", " (MiB)" */
    const char *unit;     /* what the stored value counts */
} hx_metric_info;

/* The row of a metric (exact names first, then prefixes); a metric not in
 * the table gets a default row (higher is better, shown as stored). Never NULL. */
const hx_metric_info *hx_metric_find(const char *name);

/* --------------------------------------------------------- task kinds */

/* What a loader reads besides the task: the model's tokenizer (lengths in
 * tokens) and the experiment's seed. */
typedef struct hx_task_env {
    const hx_task_def *t;
    hx_tokbuf *tb;
    uint64_t seed;
} hx_task_env;

/* What a scorer reads: the task, the sample, the generation, and the
 * run's tokenizer as LongBench's pred.py calls it. */
typedef struct hx_score_in {
    const hx_task_def *t;
    const ds_sample *s;
    const hx_gen_result *g;
    ds_lb_codec *lbc;
} hx_score_in;

enum {
    HX_KIND_STREAM = 1, /* a text streamed through the cache and scored per token: no prompt, no generation */
    HX_KIND_GRID = 2,   /* samples on a (length, depth) grid: accuracy heatmaps */
};

typedef struct hx_task_kind_info {
    hx_task_kind kind;
    const char *name;
    const char *template_dflt;  /* the template when the task names none */
    const char *template_kind;  /* the templates it reads (ds_template.kind); NULL: any */
    unsigned flags;
    int (*load)(const hx_task_env *env, ds_set *set);
    /* the sample's scores into ml; *pred gets the output to store when it
     * is not the generated text (LongBench's decoded prediction). NULL: a
     * kind scored only by its drift from the full cache (fidelity) or per
     * token (perplexity). */
    int (*score)(hx_metric_list *ml, const hx_score_in *in, char **pred);
    const char *headline;   /* the metric `plot` draws against the budget first */
    const char *plots;      /* the figures drawn after it ("a,b"; "" none) */
    const char *throughput; /* the speed it is measured by */
    const char *report;     /* the metrics `report` tabulates by default */
} hx_task_kind_info;

/* The row of a kind (never NULL for a valid hx_task_kind). */
const hx_task_kind_info *hx_task_kind_get(hx_task_kind kind);
/* The row of a kind by name, or NULL. */
const hx_task_kind_info *hx_task_kind_find(const char *name);
/* "a, b, ... or z": the kinds' names for messages. */
const char *hx_task_kind_names(void);

#endif
