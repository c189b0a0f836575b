/* longbench.h - LongBench v1's (THUDM/LongBench) 21 tasks as its
 * LongBench/pred.py generates them: the per-task prompt
 * (config/dataset2prompt.json) and generation length
 * (config/dataset2maxlen.json), the tasks it leaves without a chat wrap,
 * samsum's newline stop, its truncation in the middle of the tokenized
 * prompt, and its JSONL rows (input, context, answers, all_classes, length,
 * _id) read into samples. docs/LONGBENCH.md.
 *
 * Samples carry the fields
 *   context, input  the row's text fields, which the prompt's {context} and
 *                   {input} take
 *   answers         the row's answers as a JSON array (answers may hold
 *                   newlines, so they are not joined)
 *   all_classes     the row's all_classes as JSON (an array or null)
 *   language        the row's language ("" when absent)
 * the reference: the answers joined by newlines (for display), and length:
 * the row's `length` (LongBench-E's buckets split on it).
 *
 * The datasets know nothing of models: truncation takes the model's
 * tokenizer as two callbacks. */
#ifndef DS_LONGBENCH_H
#define DS_LONGBENCH_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"

/* One task: a row of pred.py's configuration. */
typedef struct ds_lb_task {
    const char *name;     /* the dataset's name ("multi_news") */
    const char *prompt;   /* dataset2prompt.json, with {context} / {input} */
    int max_new_tokens;   /* dataset2maxlen.json */
    const char *scorer;   /* eval.py's dataset2metric function ("rouge_score") */
    int no_chat;          /* pred.py leaves the prompt without a chat wrap */
    int newline_stop;     /* pred.py stops at the newline token too (samsum) */
    const char *language; /* "en", "zh" or "code" (LongBench's own grouping) */
    int in_e;             /* LongBench-E holds the task (TASK_e.jsonl) */
} ds_lb_task;

int ds_lb_task_count(void);
const ds_lb_task *ds_lb_task_at(int i);
const ds_lb_task *ds_lb_task_find(const char *name); /* NULL if unknown */

/* pred.py's model2maxlen (config/model2maxlen.json): the prompt tokens of
 * the models LongBench's tables report, the default max_length of each. */
typedef struct ds_lb_model_len {
    const char *model;
    int32_t max_length;
} ds_lb_model_len;
int ds_lb_model_len_count(void);
const ds_lb_model_len *ds_lb_model_len_at(int i);

/* The data file of task t under dir: dir/NAME.jsonl, or for LongBench-E
 * (e = 1) dir/NAME_e.jsonl. KV_EINVAL when it does not fit in cap. */
int ds_lb_data_path(const char *dir, const ds_lb_task *t, int e, char *buf, size_t cap);

/* Reads LongBench's JSONL rows at p->path into samples (fields above).
 * A row without a string `context` or `input`, without a list of strings
 * `answers`, with an `all_classes` that is neither null nor a list of
 * strings, or without a numeric `length` is a bad row. A file whose rows
 * disagree on all_classes gets a warning on stderr: eval.py scores every
 * row with the last row's. */
int ds_lb_load(const ds_load_params *p, ds_set *out);

/* The strings of a sample's JSON array field ("answers", "all_classes"):
 * *items (malloc'd, free with ds_lb_strings_free) and *n; null gives
 * NULL and 0. KV_EFORMAT naming the sample when the field is not such an
 * array. */
int ds_lb_strings(const ds_sample *s, const char *field, char ***items, int *n);
void ds_lb_strings_free(char **items, int n);

/* prompt_format.format(**json_obj) for t's prompt: each {name} replaced by
 * the sample's field `name`, {{ and }} by one brace, as Python's str.format
 * does. KV_EINVAL naming the field when the sample lacks it. */
int ds_lb_format(const ds_lb_task *t, const ds_sample *s, char **out);

/* The model's tokenizer, as pred.py calls it. */
typedef struct ds_lb_codec {
    /* tokenizer(text).input_ids: the ids of text[0..len), BOS in front when
     * the model's tokenizer adds one; *ids stays valid until the next
     * call. The count, or a negative kv_status. */
    int64_t (*encode)(void *user, const char *text, size_t len, const int32_t **ids);
    /* tokenizer.decode(ids[0..n), skip_special_tokens=True)'s bytes into
     * *out (malloc'd; *len its length; UTF-8 may be broken where a cut
     * split a character's byte tokens): control tokens give nothing and,
     * as SentencePiece decodes, the first word's leading space is dropped. */
    int (*decode)(void *user, const int32_t *ids, int64_t n, char **out, size_t *len);
    void *user;
    /* How the tokenizer's decode makes text of bytes that are not UTF-8
     * (ds_lb_utf8_replace): 1 for SentencePiece (pred.py's Llama 2, Vicuna,
     * LongChat), 0 for byte-level BPE (Python's and Rust's lossy decode). */
    int per_byte;
} ds_lb_codec;

/* pred.py's truncation: when the prompt's tokens (BOS included, as the
 * tokenizer adds it) exceed max_length, the prompt becomes
 * decode(ids[:half]) + decode(ids[-half:]) with half = int(max_length / 2),
 * each decoded alone, the bytes of a character the cut split replaced as
 * the tokenizer's decode replaces them (c->per_byte). *out is malloc'd;
 * *n_tokens gets the prompt's tokens before truncation, *truncated whether
 * it was cut. */
int ds_lb_truncate(const ds_lb_codec *c, const char *prompt, int32_t max_length, char **out, int64_t *n_tokens,
                   int *truncated);

/* text[0..len) made valid UTF-8 into *out (malloc'd, NUL-terminated;
 * *out_len its length): per_byte = 0 replaces each maximal invalid subpart
 * by one U+FFFD, as Python's bytes.decode('utf-8', 'replace') and Rust's
 * from_utf8_lossy (Hugging Face's byte-level decoders) do; per_byte = 1
 * replaces each byte of it, as SentencePiece's decoder does (a character
 * cut after 2 of its 3 bytes: two U+FFFD). */
int ds_lb_utf8_replace(const char *text, size_t len, int per_byte, char **out, size_t *out_len);

#endif
