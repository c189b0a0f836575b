/* resultsdb.h - the results database (SQLite, WAL). Schema: docs/RESULTS.md.
 *
 * A run is one (model, task, policy, parameters, budget, settings) cell of
 * a sweep, keyed by a hash of everything that determines its output; its
 * samples and their metrics are written in one transaction per sample, so
 * a killed process loses at most the sample in flight and a rerun skips
 * what is stored. */
#ifndef HX_RESULTSDB_H
#define HX_RESULTSDB_H

#include <stddef.h>
#include <stdint.h>

typedef struct sqlite3 sqlite3;
typedef struct hx_db hx_db;

/* 2: runs read the prompt whole before any eviction (prefill=whole), their
 * spec records prefill and question modes, models are identified by a hash
 * of the whole file. Version 1 results are not comparable: refused. */
#define HX_DB_SCHEMA_VERSION 2

typedef struct hx_run_row {
    char id[17];          /* 16 hex digits */
    const char *model, *model_path, *model_hash;
    const char *task, *task_kind, *data, *template_name;
    const char *policy_label, *policy, *params; /* params: "k=v,k=v" with defaults filled */
    const char *budget;                         /* "60%", "128", "none" */
    int budget_kind;                            /* pol_budget_kind */
    double budget_value;
    uint64_t seed;
    int max_prompt_tokens, max_new_tokens;
    const char *spec;                           /* the canonical text the id hashes */
} hx_run_row;

typedef struct hx_sample_row {
    const char *run, *sample;
    int idx, length, depth;
    int prompt_tokens, generated_tokens;
    long cut_chars;
    double ttft_ms, decode_ms;        /* time to first token; total decode time */
    int64_t kv_bytes_peak, kv_bytes_final;
    int kv_slots_max, budget_slots;   /* largest head length seen at any step; the budget in slots */
    const char *output, *reference;
    const char *stop_reason;          /* why generation stopped (NULL: no generation) */
} hx_sample_row;

typedef struct hx_metric {
    const char *name;
    double value;
} hx_metric;

/* How long a write waits for another process's transaction (ms): runs
 * sharing a database wait rather than fail with "database is locked". */
#define HX_DB_BUSY_MS 120000
/* How long a claim made on another host holds (s): its process cannot be
 * seen from here. */
#define HX_CLAIM_LEASE_S 3600

/* Opens (creating when asked) the database and its schema. An existing file
 * with another schema version is refused; a file that cannot be opened is
 * reported with its cause (a read-only file or directory, a damaged or
 * foreign file). */
int hx_db_open(const char *path, int create, hx_db **out);
/* Opens an existing database for reading only: no schema or version is
 * written, no write is prepared, and a database in a directory this user
 * cannot write is read as immutable when no -wal file holds changes. */
int hx_db_open_readonly(const char *path, hx_db **out);
void hx_db_close(hx_db *db);
sqlite3 *hx_db_handle(hx_db *db);

/* Records the experiment (by name; its file text is replaced when rerun). */
int hx_db_put_experiment(hx_db *db, const char *name, const char *file, const char *text, const char *description,
                         const char *mirrors);
/* Inserts the run if new and links it to the experiment. */
int hx_db_put_run(hx_db *db, const char *experiment, const hx_run_row *r);
/* 1 if (run, sample) is stored, 0 if not, negative on error. */
int hx_db_has_sample(hx_db *db, const char *run, const char *sample);
/* Claiming a sample before computing it, so that several processes on
 * one database share a sweep: HX_CLAIM_OURS (claimed by this process, now
 * compute it), HX_CLAIM_STORED (already in the database), HX_CLAIM_TAKEN
 * (another live process claimed it), or negative on error. A claim made
 * on this host holds while its process lives; one from another host (a
 * shared file system) until its lease runs out. Others are taken over. */
enum { HX_CLAIM_OURS = 0, HX_CLAIM_STORED = 1, HX_CLAIM_TAKEN = 2 };
int hx_db_claim(hx_db *db, const char *run, const char *sample);
/* Drops this process's claims on samples it did not store (at the end of a
 * run, finished or interrupted). */
int hx_db_release_claims(hx_db *db);

/* A series over positions (token index in the sequence). */
typedef struct hx_curve {
    const int32_t *pos;
    const double *val;
    int n;
} hx_curve;

/* One sample with its metrics, its NLL curve (streaming perplexity) and its
 * KV-bytes trace (bytes held after the prompt and after each step), in one
 * transaction that also drops the sample's claim. Curves may be NULL.
 * Returns 1, writing nothing, when the sample is already stored (another
 * process stored it after this one's claim had lapsed). */
int hx_db_put_sample(hx_db *db, const hx_sample_row *s, const hx_metric *m, int n_metrics, const hx_curve *nll,
                     const hx_curve *kv);

#endif
