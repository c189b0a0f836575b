/* experiment.h - declarative experiment files (INI, parsed with inih).
 *
 *   [experiment]      name, description, mirrors, seed, db, threads, bootstrap
 *   [model NAME]      path, tokenizer, dtype, kv_type, kernels, rope_base, ctx_len, norm_eps, gelu
 *   [task NAME]       kind, data, samples, template, max_prompt_tokens,
 *                     max_new_tokens, stop, fidelity, bad_rows, doc_field,
 *                     ref_field, lengths, depths, per_cell, haystack,
 *                     tokens, chunk, min_chars, longbench_task, longbench_e
 *   [policy LABEL]    policy = registry name, then the policy's parameters
 *   [sweep]           models, tasks, policies, budgets
 *
 * hx_experiment_load() validates everything before any work starts: every
 * section and key is known, every value in range, every name the sweep uses
 * defined, every policy and parameter accepted by the registry, every file
 * present. Errors name the file, the line and the key. $VAR and ${VAR}
 * expand in values. See docs/EXPERIMENTS.md. */
#ifndef HX_EXPERIMENT_H
#define HX_EXPERIMENT_H

#include <stddef.h>
#include <stdint.h>

#include "../datasets/dataset.h"
#include "../engine/kvcache.h"
#include "../policies/policy.h"

#define HX_MAX_ITEMS 64

typedef struct hx_model_def {
    char *name, *path, *tokenizer; /* path/tokenizer as written (expanded) */
    char *dtype;                   /* "q8_0" etc.: run a converted copy (NULL: as stored) */
    float rope_base, norm_eps;     /* architecture overrides (0: the file's) */
    kv_gelu gelu;                  /* MPT: tanh (default, llama.cpp's) or erf (Hugging Face's) */
    char *chat;                    /* chat = auto|none|NAME (NULL: none) */
    kv_cache_type kv_type;         /* the KV cache's storage: f32 (default), f16, q8_0 */
    char *kernels;                 /* kernels = float|int8 (NULL: KVBENCH_KERNELS's, float without it) */
    int ctx_len;
    int line;
} hx_model_def;

typedef enum hx_task_kind {
    HX_TASK_SUMMARIZATION,
    HX_TASK_CONVERSATION,
    HX_TASK_PASSKEY,
    HX_TASK_NEEDLE,
    HX_TASK_RULER,
    HX_TASK_FIDELITY,   /* any text: only drift from the full cache is scored */
    HX_TASK_PERPLEXITY, /* streaming: one token at a time through the evicting cache */
    HX_TASK_LONGBENCH,  /* a LongBench v1 task as its pred.py runs it (datasets/longbench.h) */
} hx_task_kind;

const char *hx_task_kind_name(hx_task_kind k);

typedef struct hx_task_def {
    char *name;
    hx_task_kind kind;
    char *data;            /* file (summarization, conversation, ruler, fidelity, perplexity) */
    char *ruler_task;      /* ruler: generate this RULER task (niah_single_1, vt, ...) instead of reading data */
    char *qa_data;         /* ruler qa_1 / qa_2: the SQuAD / HotpotQA file */
    char *longbench_task;  /* longbench: the LongBench dataset (multi_news, ...) */
    int longbench_e;       /* longbench: read LongBench-E's TASK_e.jsonl from a data folder */
    char *haystack;        /* needle: folder of .txt files */
    int samples;           /* 0 = all */
    char *template_name;   /* "keyformer-summ" or "keyformer-summ@1" */
    int max_prompt_tokens; /* 0 = the model's context minus max_new_tokens */
    int max_new_tokens;
    int max_new_set;       /* max_new_tokens was given (else a longbench task or a needle protocol takes its own) */
    int stop_newline;      /* stop generating at the first newline */
    int stop_set;          /* stop was given */
    int fidelity;          /* also score drift from the full cache (KL, agreement) */
    char *chat;            /* chat = auto|none|NAME: overrides the model's (NULL: the model's) */
    char *system;          /* the chat's system message (NULL: none) */
    int question_after;    /* question = after_compression: the context is read and compressed, then
                              the question read with the compressed cache (0: in_prompt) */
    ds_bad_rows bad_rows;
    char *doc_field, *ref_field;
    int32_t lengths[HX_MAX_ITEMS];
    int n_lengths;
    int32_t depths[HX_MAX_ITEMS];
    int n_depths;
    int per_cell;
    int tokens;            /* perplexity: tokens scored per sample (0 = all) */
    int chunk;             /* perplexity: tokens per evaluation (1 = one at a time) */
    int min_chars;         /* fidelity/perplexity text files: split at blank lines into pieces this long */
    int curve_bucket;      /* perplexity: positions per point of the stored NLL curve */
    /* needle: the protocol and its settings (datasets/needle.c) */
    int needle_protocol;   /* DS_NEEDLE_KVBENCH or DS_NEEDLE_FACTORY (needle_protocol = kvcache-factory) */
    char *needle_text;     /* needle = A | B | ...: several needles (NULL: the protocol's) */
    char *needle_question, *needle_answer; /* needle_answer = a | b: one per needle */
    int depth_intervals;   /* depth_intervals = N: the tester's grid instead of depths (0: depths) */
    int depth_sigmoid;     /* depth_spacing = sigmoid */
    int context_buffer;    /* final_context_length_buffer (-1: the tester's 200) */
    int needle_scorer;     /* -1: the protocol's; HX_NEEDLE_CONTAINS or HX_NEEDLE_ROUGE1 */
    double needle_depths[HX_MAX_ITEMS]; /* the depths the generator uses (fractional with sigmoid spacing) */
    int n_needle_depths;
    int line;
} hx_task_def;

/* Needle scorers: the fraction of answers found in the output (kvbench's),
 * or rouge-score's ROUGE-1 F-measure (stemmed) of the needle against the
 * stripped output, x 10 (KVCache-Factory's run_needle_in_haystack.py). */
enum { HX_NEEDLE_CONTAINS = 0, HX_NEEDLE_ROUGE1 = 1 };

typedef struct hx_policy_def {
    char *label;                      /* the section's name, shown in reports */
    char *policy;                     /* registry name */
    char *settings[POL_MAX_PARAMS + 1]; /* "key=value" */
    int setting_line[POL_MAX_PARAMS + 1];
    int n_settings;
    int line;
} hx_policy_def;

typedef struct hx_experiment {
    char *path;
    char *name, *description, *mirrors;
    uint64_t seed;
    char *db;
    int threads;
    int bootstrap;           /* bootstrap resamples for confidence intervals */
    hx_model_def model[HX_MAX_ITEMS];
    int n_models;
    hx_task_def task[HX_MAX_ITEMS];
    int n_tasks;
    hx_policy_def policy[HX_MAX_ITEMS];
    int n_policies;
    /* the sweep, as indexes into the arrays above */
    int sweep_model[HX_MAX_ITEMS], n_sweep_models;
    int sweep_task[HX_MAX_ITEMS], n_sweep_tasks;
    int sweep_policy[HX_MAX_ITEMS], n_sweep_policies;
    pol_budget budget[HX_MAX_ITEMS];
    int n_budgets;
} hx_experiment;

/* Parses and validates path. On error returns non-zero with kv_last_error()
 * naming path:line and the key. */
int hx_experiment_load(const char *path, hx_experiment *out);
void hx_experiment_free(hx_experiment *e);

/* Parses a budget list: "128,256,512", "20%..90% step 10%", "none", or a
 * mix separated by commas. KV_EINVAL naming the text on error. */
int hx_parse_budgets(const char *s, pol_budget *out, int max, int *n);

/* The data file task t reads, resolved under $KVBENCH_DATA; for a
 * longbench task whose data is a folder, its TASK.jsonl (TASK_e.jsonl with
 * longbench_e) in it. */
int hx_task_data_path(const hx_task_def *t, char *buf, size_t cap);

/* Expands $VAR and ${VAR} (unset variables are an error). malloc'd. */
char *hx_expand_env(const char *s, const char **missing);

#endif
