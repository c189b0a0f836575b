/* ruler.h - RULER's 13 synthetic tasks (NVIDIA/RULER, scripts/synthetic.yaml
 * and the generators in scripts/data/synthetic/), generated as its scripts generate them,
 * and its prepared JSONL read into the same sample fields.
 *
 * Every sample carries the fields
 *   context        the task instruction and the haystack, up to the question
 *   question       the question (context + question is RULER's `input`)
 *   answer_prefix  RULER's answer prefix (" Answer: ..."), kept apart so a
 *                  runner can append it after a chat wrap
 *   task           the task name (niah_single_1 ...), which picks the scorer
 *   max_new_tokens RULER's tokens_to_generate for the task
 *   source         (generated samples) what differs from RULER's generator
 *   tokens         (generated samples) the prompt's tokens + max_new_tokens,
 *                  RULER's `length`
 *   units          (generated samples) the haystack size the length search chose
 * and the reference: the outputs, one per line. The split between context
 * and question is kvpress's (evaluation/benchmarks/ruler): the last match of
 * the task's question pattern. */
#ifndef DS_RULER_H
#define DS_RULER_H

#include <stdint.h>

#include "dataset.h"

typedef enum ds_ruler_kind { DS_RULER_NIAH, DS_RULER_VT, DS_RULER_CWE, DS_RULER_FWE, DS_RULER_QA } ds_ruler_kind;
typedef enum ds_ruler_haystack { DS_RULER_NOISE, DS_RULER_ESSAY, DS_RULER_NEEDLE } ds_ruler_haystack;
typedef enum ds_ruler_value { DS_RULER_WORDS, DS_RULER_NUMBERS, DS_RULER_UUIDS } ds_ruler_value;

/* One row of RULER's scripts/synthetic.yaml with its base task's settings. */
typedef struct ds_ruler_task {
    const char *name;     /* "niah_single_1" */
    ds_ruler_kind kind;
    const char *script;   /* RULER's generator: "niah", "variable_tracking", ... */
    int max_new_tokens;   /* tokens_to_generate (scripts/data/synthetic/constants.py) */
    ds_ruler_haystack haystack;          /* niah, vt */
    ds_ruler_value type_k, type_v;       /* niah */
    int num_k, num_v, num_q;             /* niah */
    int num_chains, num_hops;            /* vt */
    int freq_cw, freq_ucw, num_cw;       /* cwe */
    double alpha;                        /* fwe: the zeta distribution's */
    const char *qa_dataset;              /* qa: "squad" or "hotpotqa" */
} ds_ruler_task;

int ds_ruler_task_count(void);
const ds_ruler_task *ds_ruler_task_at(int i);
const ds_ruler_task *ds_ruler_task_find(const char *name); /* NULL if unknown */

typedef struct ds_ruler_params {
    const char *task;           /* a ds_ruler_task name */
    const int32_t *lengths;     /* RULER's max_seq_length: prompt tokens + max_new_tokens */
    int n_lengths;
    int n_samples;              /* per length */
    uint64_t seed;              /* the same seed gives the same samples */
    ds_count_tokens_fn count;   /* the model's token counter */
    void *user;
    const char *essay_dir;      /* niah essay haystacks: the Paul Graham essays' .txt folder */
    const char *words_path;     /* NULL: /usr/share/dict/american-english (Debian wamerican) */
    const char *qa_path;        /* qa_1: SQuAD (v2.0 dev layout); qa_2: HotpotQA (dev distractor) */
    int64_t units;              /* > 0: this haystack size instead of the length search (tests) */
} ds_ruler_params;

/* Generates n_samples samples per length. Each length is met as RULER meets
 * it: the largest haystack (noise sentences, essay words, distractor
 * needles, variable-tracking noise lines, common words, documents; for fwe
 * RULER's steps of (length - max_new_tokens) / 32 words) whose prompt, answer
 * prefix included, plus max_new_tokens fits in the length, so one more unit
 * would not. Errors: an unknown task, a missing file (qa without qa_path is
 * refused by name), a length that even the smallest haystack exceeds. */
int ds_ruler_make(const ds_ruler_params *p, ds_set *out);

/* kvpress's RULER layout (context, question, answer_prefix, answer,
 * max_new_tokens, task) or RULER's prepared JSONL (input, outputs, length,
 * answer_prefix when present), one JSON object a line, into the fields
 * above. RULER's input is split at its question (kvpress's patterns); an
 * input with no known question is all context with an empty question. */
int ds_ruler_load(const ds_load_params *p, ds_set *out);

/* Where RULER's input text's question begins (the last match of a task's
 * question pattern) and, when the input still holds its answer prefix (older
 * RULER files), where that begins; -1 for none. Returns the RULER script
 * name of the pattern that matched ("niah", "variable_tracking", ...) or
 * NULL when none did. */
const char *ds_ruler_split(const char *input, long *question_at, long *prefix_at);

#endif
