/* ruler.h - RULER's scoring (NVIDIA/RULER scripts/eval/evaluate.py and
 * scripts/eval/synthetic/constants.py): predictions cleaned as
 * postprocess_pred cleans them, string_match_all for niah, vt, cwe and fwe,
 * string_match_part for qa, both case-insensitive through Python's
 * str.lower(), and the count of empty predictions ("nulls"). */
#ifndef MET_RULER_H
#define MET_RULER_H

typedef enum met_ruler_scorer {
    MET_RULER_MATCH_ALL,  /* the share of the references found in the prediction */
    MET_RULER_MATCH_PART, /* 1 if any reference is found */
} met_ruler_scorer;

typedef struct met_ruler_task {
    const char *name;   /* synthetic.yaml's task ("niah_single_1") or its base ("niah") */
    const char *base;   /* the base task the scorer is keyed by */
    met_ruler_scorer scorer;
} met_ruler_task;

/* The task's row, by synthetic.yaml name or base task name; NULL if unknown. */
const met_ruler_task *met_ruler_task_find(const char *name);
const met_ruler_task *met_ruler_tasks(int *n);
const char *met_ruler_scorer_name(met_ruler_scorer s); /* "string_match_all" / "string_match_part" */

/* postprocess_pred: strip white space (Python's str.isspace), every
 * character U+0000..U+001F replaced by '\n', strip again. Invalid UTF-8
 * bytes become U+FFFD (as a decoder with errors="replace" would). *out is
 * malloc'd. */
int met_ruler_postprocess(const char *pred, char **out);

/* One sample's score, 0..1, of an already post-processed prediction
 * against refs[0..n): all: hits / n; part: max over refs. Python's `r.lower()
 * in pred.lower()` (an empty reference is found). KV_EINVAL when n is 0
 * (RULER divides by zero / takes max of nothing). */
int met_ruler_match(met_ruler_scorer s, const char *pred, const char *const *refs, int n, double *out);

/* The same with the references '\n'-separated (a ds_sample's reference),
 * the raw prediction post-processed first; *empty: 1 when the cleaned
 * prediction is empty (RULER's null). */
int met_ruler_sample(met_ruler_scorer s, const char *raw_pred, const char *refs_nl, double *out, int *empty);

/* A task's score as RULER prints it: round(100 * mean of the sample
 * scores, 2); KV_EINVAL when n is 0. */
int met_ruler_task_score(const double *scores, int n, double *out);

#endif
