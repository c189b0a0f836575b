/* merge.c - `kvbench merge OUT.db IN.db...`: combines results databases
 * (typically the shards of one sweep run with --shard I/N) into one.
 *
 * Only rows a run could have written are taken from an input (see VIEWS);
 * a damaged input (quick_check) is refused whole.
 *
 * Runs, experiments and their links are unioned. A sample present in more
 * than one input must agree on everything its run determines - the output
 * text, the token counts and every metric except timings - or the merge is
 * refused and OUT is left as it was: the merge is built in a copy of OUT
 * that replaces it (rename) only when every input went in. Identical
 * duplicates are kept once. Runs of one experiment, model name, task,
 * policy label and budget made from different model files (model_hash:
 * XXH3-128 of the file) are refused too: reports would pool them. */
#define _POSIX_C_SOURCE 200809L
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/hash.h"
#include "../base/kv_error.h"
#include "commands.h"
#include "opts.h"
#include "resultsdb.h"


/* Metrics that measure time, which legitimately differ between machines. */
#define TIMING_METRICS "('ttft_ms','decode_tokens_per_s','tokens_per_s','latency_p50_ms','latency_p95_ms','latency_p99_ms')"

static int exec(sqlite3 *db, const char *sql, const char *what) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "kvbench merge: %s: %s\n", what, err ? err : sqlite3_errmsg(db));
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

/* Counts rows of a query's first column (a conflict check). */
static long count(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "kvbench merge: %s\n", sqlite3_errmsg(db));
        return -1;
    }
    long n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return n;
}

/* Runs of src that share experiment, model name, task, policy label and
 * budget with a run of main or src whose model file differs: prints the
 * first and returns 1 (0 if none, -1 on a database error). */
static int model_file_conflict(sqlite3 *db, const char *in) {
    static const char sql[] =
        "WITH a AS (SELECT r.*, e.experiment FROM src.runs r JOIN src.experiment_runs e ON e.run = r.id), "
        "b AS (SELECT r.*, e.experiment FROM main.runs r JOIN main.experiment_runs e ON e.run = r.id "
        "UNION ALL SELECT * FROM a) "
        "SELECT a.experiment, a.model, a.task, a.policy_label, a.budget, a.model_hash, b.model_hash FROM a JOIN b "
        "ON b.experiment = a.experiment AND b.model = a.model AND b.task = a.task "
        "AND b.policy_label = a.policy_label AND b.budget = a.budget AND b.model_hash IS NOT a.model_hash LIMIT 1";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "kvbench merge: %s: %s\n", in, sqlite3_errmsg(db));
        return -1;
    }
    int found = sqlite3_step(st) == SQLITE_ROW;
    if (found) {
        const char *t[7];
        for (int i = 0; i < 7; i++) t[i] = sqlite3_column_text(st, i) ? (const char *)sqlite3_column_text(st, i) : "(none)";
        fprintf(stderr,
                "kvbench merge: %s: experiment %s, model %s, task %s, policy %s, budget %s: runs from two different "
                "model files (model hash %s and %s); a report would pool them. Rename the model in one experiment "
                "file, or re-run one side with the other's file\n",
                in, t[0], t[1], t[2], t[3], t[4], t[5], t[6]);
    }
    sqlite3_finalize(st);
    return found;
}

/* kvbench_run_id(spec): the id a run's own write gives its spec. */
static void sql_run_id(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    const unsigned char *spec = sqlite3_value_text(argv[0]);
    if (!spec) {
        sqlite3_result_null(ctx);
        return;
    }
    char id[17];
    snprintf(id, sizeof id, "%016llx", (unsigned long long)kv_fnv1a64(KV_FNV1A64_INIT, spec, (size_t)sqlite3_value_bytes(argv[0])));
    sqlite3_result_text(ctx, id, -1, SQLITE_TRANSIENT);
}

/* The input's rows that a run could have written: runs whose id is their
 * spec's hash; links, samples and series of such runs; samples holding the
 * metrics every run writes; values of the types a run writes. A damaged
 * input's other rows (orphans, wrong types) are left out and counted. */
static const char VIEWS[] =
    "CREATE TEMP VIEW ok_runs AS SELECT * FROM src.runs WHERE typeof(id) = 'text' AND length(id) = 16 "
    "  AND spec IS NOT NULL AND id = kvbench_run_id(spec) AND typeof(budget_kind) = 'integer';"
    "CREATE TEMP VIEW ok_experiments AS SELECT * FROM src.experiments WHERE typeof(name) = 'text' AND updated IS NOT NULL;"
    "CREATE TEMP VIEW ok_links AS SELECT * FROM src.experiment_runs l WHERE "
    "  (l.run IN (SELECT id FROM ok_runs) OR l.run IN (SELECT id FROM main.runs)) AND "
    "  (l.experiment IN (SELECT name FROM ok_experiments) OR l.experiment IN (SELECT name FROM main.experiments));"
    "CREATE TEMP VIEW ok_samples AS SELECT * FROM src.samples s WHERE s.run IN (SELECT id FROM ok_runs) "
    "  AND typeof(s.sample) = 'text' AND typeof(s.idx) = 'integer' AND typeof(s.prompt_tokens) = 'integer' "
    "  AND typeof(s.generated_tokens) = 'integer' AND typeof(s.kv_bytes_peak) = 'integer' "
    "  AND typeof(s.output) = 'text' AND s.finished IS NOT NULL "
    "  AND EXISTS (SELECT 1 FROM src.metrics m WHERE m.run = s.run AND m.sample = s.sample AND m.name = 'kv_bytes_peak') "
    "  AND EXISTS (SELECT 1 FROM src.metrics m WHERE m.run = s.run AND m.sample = s.sample AND m.name = 'budget_exceeded');"
    "CREATE TEMP VIEW ok_metrics AS SELECT m.* FROM src.metrics m JOIN ok_samples s ON s.run = m.run AND s.sample = m.sample "
    "  WHERE typeof(m.name) = 'text' AND m.name <> '' AND typeof(m.value) IN ('real', 'integer', 'null');"
    "CREATE TEMP VIEW ok_curves AS SELECT c.* FROM src.curves c JOIN ok_samples s ON s.run = c.run AND s.sample = c.sample "
    "  WHERE typeof(c.pos) = 'integer' AND typeof(c.nll) IN ('real', 'integer', 'null');"
    "CREATE TEMP VIEW ok_kv_trace AS SELECT c.* FROM src.kv_trace c JOIN ok_samples s ON s.run = c.run AND s.sample = c.sample "
    "  WHERE typeof(c.pos) = 'integer' AND typeof(c.bytes) = 'integer';";

static const char *const TABLES[] = {"runs", "experiments", "experiment_runs", "samples", "metrics", "curves", "kv_trace"};
static const char *const VIEW_OF[] = {"ok_runs", "ok_experiments", "ok_links", "ok_samples", "ok_metrics", "ok_curves",
                                      "ok_kv_trace"};
#define N_TABLES (int)(sizeof TABLES / sizeof TABLES[0])

/* Says which rows of the input are left out, per table. */
static int note_left_out(sqlite3 *db, const char *in) {
    char sql[256], list[512] = "";
    long total = 0;
    for (int i = 0; i < N_TABLES; i++) {
        snprintf(sql, sizeof sql, "SELECT (SELECT COUNT(*) FROM src.%s) - (SELECT COUNT(*) FROM %s)", TABLES[i], VIEW_OF[i]);
        long n = count(db, sql);
        if (n < 0) return -1;
        if (n > 0)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%ld %s", total ? ", " : "", n, TABLES[i]);
        total += n > 0 ? n : 0;
    }
    if (total)
        fprintf(stderr, "kvbench merge: %s: left out %ld rows that no run could have written (rows of no stored run or "
                "sample, a run id that is not its spec's hash, a sample without its metrics, values of the wrong "
                "type): %s\n", in, total, list);
    return 0;
}

/* One conflict check: the query's first row names the first conflict and
 * its last column counts them all. Prints the reason; 1 on a conflict, 0
 * if none, -1 if the check itself failed (also said). */
static int conflict(sqlite3 *db, const char *in, const char *sql, const char *what) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "kvbench merge: %s: cannot check %s: %s\n", in, what, sqlite3_errmsg(db));
        return -1;
    }
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        int nc = sqlite3_column_count(st);
        fprintf(stderr, "kvbench merge: %s: %lld %s; the first:", in, (long long)sqlite3_column_int64(st, nc - 1), what);
        for (int i = 0; i < nc - 1; i++)
            fprintf(stderr, " %s %s", sqlite3_column_name(st, i),
                    sqlite3_column_text(st, i) ? (const char *)sqlite3_column_text(st, i) : "NULL");
        fputc('\n', stderr);
    } else if (r != SQLITE_DONE)
        fprintf(stderr, "kvbench merge: %s: cannot check %s: %s\n", in, what, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : -1;
}

/* Conflicts with what is merged so far: a run id with another spec; a
 * sample with other results; a metric (not a timing) with another value;
 * one model name from two model files. */
static int conflicts(sqlite3 *db, const char *in) {
    if (conflict(db, in,
                 "SELECT s.id AS run, COUNT(*) OVER () FROM ok_runs s JOIN main.runs m ON m.id = s.id "
                 "WHERE m.spec IS NOT s.spec LIMIT 1",
                 "runs share an id with different settings (spec)"))
        return -1;
    if (conflict(db, in,
                 "SELECT s.run, s.sample, CASE WHEN m.output IS NOT s.output THEN 'output' "
                 "WHEN m.prompt_tokens IS NOT s.prompt_tokens THEN 'prompt_tokens' "
                 "WHEN m.generated_tokens IS NOT s.generated_tokens THEN 'generated_tokens' ELSE 'kv_bytes_peak' END "
                 "AS differs_in, COUNT(*) OVER () FROM ok_samples s JOIN main.samples m ON m.run = s.run AND m.sample = s.sample "
                 "WHERE m.output IS NOT s.output OR m.prompt_tokens IS NOT s.prompt_tokens "
                 "OR m.generated_tokens IS NOT s.generated_tokens OR m.kv_bytes_peak IS NOT s.kv_bytes_peak LIMIT 1",
                 "samples conflict with ones already merged"))
        return -1;
    if (conflict(db, in,
                 "SELECT s.run, s.sample, s.name AS metric, m.value AS merged, s.value AS here, COUNT(*) OVER () "
                 "FROM ok_metrics s JOIN main.metrics m ON m.run = s.run AND m.sample = s.sample AND m.name = s.name "
                 "WHERE m.name NOT IN " TIMING_METRICS " AND m.value IS NOT s.value LIMIT 1",
                 "metric values conflict with ones already merged"))
        return -1;
    return model_file_conflict(db, in) ? -1 : 0;
}

/* The attached input is undamaged (its open was checked by attach). */
static int input_sound(sqlite3 *db, const char *in) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA src.quick_check", -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "kvbench merge: %s: cannot check the database: %s\n", in, sqlite3_errmsg(db));
        return -1;
    }
    int r = sqlite3_step(st);
    const char *msg = r == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : sqlite3_errmsg(db);
    int sound = r == SQLITE_ROW && msg && !strcmp(msg, "ok");
    if (!sound)
        fprintf(stderr, "kvbench merge: %s: the database is damaged (PRAGMA quick_check: %s); nothing of it is taken\n",
                in, msg ? msg : "?");
    sqlite3_finalize(st);
    return sound ? 0 : -1;
}

/* Attaches the input as src once it opens as a kvbench database of this
 * schema version (or says why not). */
static int attach(sqlite3 *db, const char *in) {
    hx_db *probe;
    if (hx_db_open_readonly(in, &probe)) {
        fprintf(stderr, "kvbench merge: %s\n", kv_last_error());
        return -1;
    }
    hx_db_close(probe);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "ATTACH DATABASE ? AS src", -1, &st, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_text(st, 1, in, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r != SQLITE_DONE) {
        fprintf(stderr, "kvbench merge: %s: cannot attach: %s\n", in, sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

static int merge_one(sqlite3 *db, const char *in) {
    if (attach(db, in)) return -1;
    int rc = -1;
    if (input_sound(db, in) || exec(db, "BEGIN IMMEDIATE", in)) goto out;
    if (exec(db, VIEWS, in) || conflicts(db, in) || note_left_out(db, in)) goto out;
    for (int i = 0; i < N_TABLES; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "INSERT OR IGNORE INTO main.%s SELECT * FROM %s", TABLES[i], VIEW_OF[i]);
        if (exec(db, sql, in)) goto out;
    }
    /* the views are dropped with the transaction's work kept */
    if (exec(db, "DROP VIEW temp.ok_runs; DROP VIEW temp.ok_experiments; DROP VIEW temp.ok_links; DROP VIEW temp.ok_samples;"
                 "DROP VIEW temp.ok_metrics; DROP VIEW temp.ok_curves; DROP VIEW temp.ok_kv_trace;", in) ||
        exec(db, "COMMIT", in))
        goto out;
    rc = 0;
out:
    if (rc) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    exec(db, "DETACH DATABASE src", in);
    return rc;
}

int hx_cmd_merge(int argc, char **argv, int help) {
    hx_opt opts[] = {{"help", 'h', HX_OPT_FLAG, &help, NULL, "this text"}};
    if (help) {
        printf("usage: kvbench merge OUT.db IN.db [IN.db...]\n\n"
               "Adds the runs, samples, metrics and curves of each IN to OUT (created if absent),\n"
               "typically the shards of one sweep run with --shard I/N. A sample stored in two inputs\n"
               "must agree on its output and on every metric but timings, and runs of one experiment,\n"
               "model name, task, policy and budget must come from the same model file (model hash),\n"
               "or nothing is merged (the first conflicting row is named). An input that fails SQLite's\n"
               "quick_check is refused; of the others only rows a run could have written are taken (runs\n"
               "whose id hashes their spec, samples of those runs with their metrics, values of a run's\n"
               "types), and what is left out is counted.\n");
        return 0;
    }
    const char *pos[64];
    int np;
    if (hx_opts_parse("merge", argc, argv, opts, N_OPTS(opts), pos, 64, &np)) return 2;
    if (np < 2) {
        fprintf(stderr, "kvbench merge: expected OUT.db and at least one IN.db\n");
        return 2;
    }
    for (int i = 1; i < np; i++)
        if (!strcmp(pos[i], pos[0])) {
            fprintf(stderr, "kvbench merge: %s is both the output and an input\n", pos[0]);
            return 2;
        }
    /* Built in a copy, renamed over OUT at the end: all or nothing. */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.merge-tmp", pos[0]);
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[4300];
        snprintf(p, sizeof p, "%s%s", tmp, sfx[i]);
        unlink(p);
    }
    hx_db *out;
    if (hx_db_open(tmp, 1, &out)) {
        fprintf(stderr, "kvbench merge: %s\n", kv_last_error());
        return 1;
    }
    sqlite3 *db = hx_db_handle(out);
    int status = 1;
    if (sqlite3_create_function(db, "kvbench_run_id", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sql_run_id, NULL,
                                NULL) != SQLITE_OK) {
        fprintf(stderr, "kvbench merge: %s\n", sqlite3_errmsg(db));
        goto done;
    }
    struct stat sb;
    if (stat(pos[0], &sb) == 0) { /* start from OUT's rows */
        hx_db *old;
        if (hx_db_open_readonly(pos[0], &old)) {
            fprintf(stderr, "kvbench merge: %s\n", kv_last_error());
            goto done;
        }
        sqlite3_backup *b = sqlite3_backup_init(db, "main", hx_db_handle(old), "main");
        int ok = b && sqlite3_backup_step(b, -1) == SQLITE_DONE;
        sqlite3_backup_finish(b);
        hx_db_close(old);
        if (!ok) {
            fprintf(stderr, "kvbench merge: %s: cannot copy: %s\n", pos[0], sqlite3_errmsg(db));
            goto done;
        }
    }
    for (int i = 1; i < np; i++)
        if (merge_one(db, pos[i])) {
            fprintf(stderr, "kvbench merge: nothing was merged into %s\n", pos[0]);
            goto done;
        }
    printf("merged %d databases into %s: %ld runs, %ld samples, %ld metric values\n", np - 1, pos[0],
           count(db, "SELECT COUNT(*) FROM runs"), count(db, "SELECT COUNT(*) FROM samples"),
           count(db, "SELECT COUNT(*) FROM metrics"));
    status = 0;
done:
    hx_db_close(out);
    if (status == 0) {
        for (int i = 1; i < 3; i++) { /* OUT's old journal files belong to the file being replaced */
            char p[4300];
            snprintf(p, sizeof p, "%s%s", pos[0], sfx[i]);
            unlink(p);
        }
        if (rename(tmp, pos[0]) != 0) {
            fprintf(stderr, "kvbench merge: cannot rename %s to %s\n", tmp, pos[0]);
            status = 1;
        }
    }
    if (status) unlink(tmp);
    return status;
}
