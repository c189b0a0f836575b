/* longbench.h - LongBench's (THUDM/LongBench v1) scorers, exactly as its
 * LongBench/metrics.py and eval.py compute them (docs/LONGBENCH.md).
 *
 * Texts are NUL-terminated UTF-8 (invalid UTF-8 is KV_EINVAL). Python
 * operates on code points; every rule below is that rule on code points,
 * with the character classes of Python's own str and re
 * (longbench_unicode.c, generated from Python 3.11 / Unicode 14):
 * - qa_f1: normalize_answer (str.lower(), ASCII punctuation removed, the
 *   words a/an/the removed where re's \b bounds them, white space
 *   collapsed), then token F1 over the multiset of white-space tokens.
 * - rouge: the `rouge` package's (pltrdy/rouge 1.0.1) summary-level
 *   ROUGE-L F, as LongBench's rouge_score calls it: sentences split on '.',
 *   words split on white space and compared as they are, distinct-word
 *   counts, the union of the LCS words of every (reference, prediction)
 *   sentence pair, F = 2PR/(P+R+1e-8). Any exception is a score of 0,
 *   including the RecursionError of the package's recursive LCS backtrack.
 * - classification, retrieval, count, code_sim: below.
 * Every function returns KV_OK or a negative kv_status with the message set. */
#ifndef MET_LONGBENCH_H
#define MET_LONGBENCH_H

#include <stddef.h>

typedef enum met_lb_scorer {
    MET_LB_QA_F1,          /* qa_f1_score */
    MET_LB_QA_F1_ZH,       /* qa_f1_zh_score: needs jieba, refused */
    MET_LB_ROUGE,          /* rouge_score */
    MET_LB_ROUGE_ZH,       /* rouge_zh_score: needs jieba, refused */
    MET_LB_CLASSIFICATION, /* classification_score */
    MET_LB_RETRIEVAL,      /* retrieval_score ("Paragraph N") */
    MET_LB_RETRIEVAL_ZH,   /* retrieval_zh_score ("段落N"): no segmentation */
    MET_LB_COUNT,          /* count_score */
    MET_LB_CODE_SIM,       /* code_sim_score */
} met_lb_scorer;

/* One row of eval.py's dataset2metric table. */
typedef struct met_lb_task {
    const char *name;     /* the dataset name: its prediction file's stem */
    met_lb_scorer scorer;
    int first_line;       /* eval.py keeps the prediction's first line:
                             prediction.lstrip('\n').split('\n')[0] */
    int chinese;          /* a Chinese dataset */
} met_lb_task;

/* The tasks in eval.py's order; *n gets their count. */
const met_lb_task *met_lb_tasks(int *n);

/* The task called `name`, or NULL. */
const met_lb_task *met_lb_task_find(const char *name);

/* metrics.py's name of a scorer ("qa_f1_score", ...). */
const char *met_lb_scorer_name(met_lb_scorer s);

/* Whether the scorer needs jieba's segmentation (kvbench refuses it). */
int met_lb_scorer_needs_jieba(met_lb_scorer s);

/* ---- the scorers of metrics.py, each in [0, 1] */

/* normalize_answer(s) into *out (malloc'd, the caller frees). */
int met_lb_normalize_answer(const char *s, char **out);

/* qa_f1_score(pred, gt). */
int met_lb_qa_f1(const char *pred, const char *gt, double *out);

/* How many frames of the rouge package's recursive _recon fit under
 * Python's default recursion limit (1000) when eval.py calls it: _recon's
 * first frame is the 10th on the stack (measured with Python 3.11.2).
 * A sentence pair whose backtrack takes more calls raises RecursionError,
 * which LongBench's rouge_score turns into a score of 0. */
#define MET_LB_ROUGE_RECON_FRAMES 991

/* rouge_score(pred, gt) with _recon allowed max_frames calls per sentence
 * pair (0: no limit). *recursion_error (if not NULL) gets 1 when the limit
 * was hit and the score is 0 for that reason. */
int met_lb_rouge_l(const char *pred, const char *gt, int max_frames, double *out, int *recursion_error);

/* classification_score(pred, gt, all_classes=classes[0..n)): the classes
 * found in pred (substring), those that are a substring of gt but not gt
 * itself removed (by list.remove inside the loop that walks the list, which
 * skips the element after each removal, as Python does), then 1/len when
 * gt is among them, else 0. */
int met_lb_classification(const char *pred, const char *gt, const char *const *classes, int n, double *out);

/* retrieval_score (zh = 0: "Paragraph (\d+)") and retrieval_zh_score
 * (zh = 1: "段落(\d+)"): the first such number in gt; the share of the \d+
 * runs of pred that equal it (0 when pred has none). KV_EINVAL when gt has
 * no such number (Python's IndexError). */
int met_lb_retrieval(const char *pred, const char *gt, int zh, double *out);

/* count_score: the share of the \d+ runs of pred equal to gt (0 when none). */
int met_lb_count(const char *pred, const char *gt, double *out);

/* fuzzywuzzy's fuzz.ratio(a, b) with python-Levenshtein: 100 when a == b,
 * 0 when either is empty, else round(100 * (len - d) / len) with len the
 * sum of the code point lengths and d their edit distance with
 * substitutions costing 2. */
int met_lb_fuzz_ratio(const char *a, const char *b, int *out);

/* code_sim_score: fuzz.ratio(line, gt) / 100 for the first line of
 * pred.lstrip('\n') holding none of '`', '#', "//" ("" when none does). */
int met_lb_code_sim(const char *pred, const char *gt, double *out);

/* ---- eval.py */

/* A sample's score: the task's post-processing, then the max over the
 * answers (starting from 0) of the task's scorer. KV_EUNSUPPORTED for a
 * scorer that needs jieba. */
int met_lb_sample_score(const met_lb_task *t, const char *pred, const char *const *answers, int n_answers,
                        const char *const *classes, int n_classes, double *out);

/* scorer(): round(100 * sum / n, 2) with the sum taken in order and
 * Python's round (correctly rounded, ties to even). KV_EINVAL when n = 0. */
int met_lb_task_score(const double *scores, int n, double *out);

/* Python's round(x, 2) on a float. */
double met_lb_round2(double x);

/* numpy's round(np.float64 x, 2): rint(x * 100) / 100. */
double met_lb_np_round2(double x);

/* np.mean of x[0..n) (numpy's pairwise summation, then / n); NaN when n = 0. */
double met_lb_np_mean(const double *x, int n);

/* The LongBench-E buckets, by the sample's `length`. */
enum { MET_LB_E_0_4K, MET_LB_E_4_8K, MET_LB_E_8K_PLUS, MET_LB_E_BUCKETS };

/* The name of bucket b ("0-4k", "4-8k", "8k+"). */
const char *met_lb_e_bucket_name(int b);

/* The bucket of a length: < 4000, < 8000, else. */
int met_lb_e_bucket(double length);

/* scorer_e(): per bucket, round(100 * np.mean(scores in it), 2) with
 * numpy's mean and round; NaN for an empty bucket (as numpy gives).
 * counts (if not NULL) gets each bucket's sample count. */
int met_lb_e_scores(const double *scores, const double *lengths, int n, double out[MET_LB_E_BUCKETS],
                    int counts[MET_LB_E_BUCKETS]);

#endif
