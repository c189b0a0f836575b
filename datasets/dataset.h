/* dataset.h - the evaluation samples kvbench feeds the engine.
 *
 * A task's loader turns a data file (CSV, JSONL, plain text) or a generator
 * (passkey, needle) into a ds_set: samples with an id, named text fields
 * that a prompt template fills in (datasets/template.h), and the reference
 * a metric compares the output with. Loaders know nothing of models: where
 * a length is in tokens (passkey and needle contexts) the caller passes a
 * token counter.
 *
 * Bad rows (a missing field, a wrong type, invalid UTF-8, a broken CSV
 * record) are reported on stderr with the file and line and either skipped
 * (DS_BAD_SKIP) or fatal (DS_BAD_FAIL: KV_EFORMAT, the message names the
 * file and line). Nothing here crashes on any input. */
#ifndef DS_DATASET_H
#define DS_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define DS_MAX_FIELDS 8

typedef struct ds_field {
    char *name;  /* "document", "narrative", "speaker_a", "first_turn", "context", "question", ... */
    char *value; /* UTF-8, NUL-terminated */
} ds_field;

typedef struct ds_sample {
    char *id;
    ds_field field[DS_MAX_FIELDS];
    int n_fields;
    char *reference;   /* summary / remaining turns / passkey / needle answer(s), '\n'-separated */
    int32_t length;    /* passkey/needle: requested context length in tokens (0 otherwise) */
    int32_t depth_pct; /* passkey/needle: where the needle sits, 0..100 */
} ds_sample;

typedef struct ds_set {
    ds_sample *s; /* [n] */
    int n, cap;
    int skipped;  /* bad rows skipped */
} ds_set;

typedef enum ds_bad_rows { DS_BAD_SKIP = 0, DS_BAD_FAIL = 1 } ds_bad_rows;

/* Which file layout a summarization or conversation loader reads. */
typedef struct ds_load_params {
    const char *path;       /* resolved file path */
    int max_samples;        /* 0 = all */
    ds_bad_rows bad_rows;
    const char *doc_field;  /* JSONL/CSV field holding the input (NULL = the layout's default) */
    const char *ref_field;  /* field holding the reference (NULL = default) */
} ds_load_params;

/* Counts the tokens of text[0..len) with the model's tokenizer (no BOS);
 * negative on error. */
typedef int64_t (*ds_count_tokens_fn)(void *user, const char *text, size_t len);

/* ------------------------------------------------------------ loaders */

/* CNN/DailyMail CSV (id,article,highlights with a header row; RFC 4180
 * quoting), CNN/DailyMail JSONL (article, highlights), GovReport JSONL
 * (document, reference) and LongBench multi_news JSONL (context, answers
 * as a list). The layout is found from the extension and the first row's
 * fields. Fields: "document"; reference: the summary. */
int ds_load_summarization(const ds_load_params *p, ds_set *out);

/* Conversations: SODA's layout (narrative, speakers, turns as a list of
 * {speaker, text} objects or as stringified lists) and DailyDialog JSONL
 * (turns only). Keyformer's protocol: fields "narrative", "speaker_a",
 * "speaker_b", "first_turn"; reference: the remaining turns, one per line
 * ("Speaker: text"). Conversations with fewer than two turns are bad rows. */
int ds_load_conversation(const ds_load_params *p, ds_set *out);

/* Plain text split into documents: a JSONL file (field doc_field, default
 * "text"), or a text file cut at blank lines into pieces of at least
 * min_chars characters. Field "document"; no reference. For fidelity and
 * streaming perplexity. */
int ds_load_text(const ds_load_params *p, size_t min_chars, ds_set *out);

/* RULER's needle-in-a-haystack JSONL (index, input, outputs): field
 * "context" holds the whole input; reference: the outputs, one per line. */
int ds_load_ruler(const ds_load_params *p, ds_set *out);

/* Passkey retrieval (../shared/data/passkey/TEMPLATE.md wording): for each
 * length (tokens) x depth (percent) cell, n_per_cell prompts with a random
 * key in 1..50000 and the key line placed at that depth of the filler.
 * Field "context" is the whole prompt, reference the key. Seeded: the same
 * seed gives the same keys. Lengths are met to within one filler sentence
 * using count() (the key line's character cut may add a token or two). */
int ds_make_passkey(const int32_t *lengths, int n_lengths, const int32_t *depths, int n_depths, int n_per_cell,
                    uint64_t seed, ds_count_tokens_fn count, void *user, ds_set *out);

/* Needle in a haystack: the text files of haystack_dir (sorted by name,
 * concatenated) cut to each length in tokens, with the needle sentence
 * inserted at each depth at a sentence boundary. Fields "context" and
 * "question"; reference: the answer. NULL needle/question/answer use the
 * common San Francisco needle. */
int ds_make_needle(const char *haystack_dir, const int32_t *lengths, int n_lengths, const int32_t *depths, int n_depths,
                   const char *needle, const char *question, const char *answer, ds_count_tokens_fn count, void *user,
                   ds_set *out);

/* Token callbacks for generators that cut text in tokens as a benchmark's
 * own script does: encode without special tokens (*ids malloc'd, the count
 * or < 0 returned), decode ids to text as the tokenizer prints them,
 * special tokens skipped (*text malloc'd). */
typedef struct ds_token_fns {
    void *user;
    int64_t (*encode)(void *user, const char *text, size_t len, int32_t **ids);
    int (*decode)(void *user, const int32_t *ids, int64_t n, char **text, size_t *len);
} ds_token_fns;

enum { DS_NEEDLE_KVBENCH = 0, DS_NEEDLE_FACTORY = 1, DS_MAX_NEEDLES = 16, DS_MAX_DEPTHS = 64 };

/* Needle in a haystack in either protocol (needle.c): kvbench's (cut in
 * characters, the needle after a sentence end) or KVCache-Factory's
 * (gkamradt's tester in tokens: final_context_length_buffer, insertion
 * after a period token; `tok` and period_piece, the id of the piece ".",
 * or -1). Several needles: the first at the depth, the next
 * (100 - depth) / k percent further each. answer: '\n'-separated. */
typedef struct ds_needle_params {
    const char *haystack_dir;
    const int32_t *lengths;
    int n_lengths;
    const double *depths; /* percent, may be fractional */
    int n_depths;
    const char *const *needles; /* n_needles 0: the San Francisco needle */
    int n_needles;
    const char *question, *answer; /* NULL: the protocol's San Francisco question and answer */
    int protocol;                  /* DS_NEEDLE_KVBENCH or DS_NEEDLE_FACTORY */
    int32_t buffer;                /* factory: final_context_length_buffer (the tester's default 200) */
    int32_t period_piece;
    ds_count_tokens_fn count;
    void *user;
    ds_token_fns tok;
} ds_needle_params;

int ds_make_needle_ext(const ds_needle_params *p, ds_set *out);

/* The protocol's default needle sentence (the San Francisco needle;
 * KVCache-Factory's has a newline on each side). */
const char *ds_needle_default(int protocol);

/* The tester's depth grids: numpy's linspace(0, 100, intervals), rounded
 * (linear) or through its logistic (sigmoid: 100 / (1 + e^(-0.1 (x - 50))),
 * 3 decimals, 0 and 100 kept). */
int ds_needle_depths(int intervals, int sigmoid, double *out, int cap);
double ds_needle_sigmoid(double x);

/* ------------------------------------------------------------ samples */

/* The value of field `name`, or NULL. */
const char *ds_sample_field(const ds_sample *s, const char *name);

/* Adds a sample (takes copies of every string); KV_ENOMEM on failure. */
int ds_set_add(ds_set *set, const char *id, const char *const *names, const char *const *values, int n_fields,
               const char *reference);

void ds_set_free(ds_set *set);

/* 1 if s[0..len) is valid UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
int ds_utf8_valid(const char *s, size_t len);

#endif
