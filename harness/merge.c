/* merge.c - `kvbench merge OUT.db IN.db...`: combines results databases
 * (typically the shards of one sweep run with --shard I/N) into one.
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

#include "../engine/kv_error.h"
#include "commands.h"
#include "opts.h"
#include "resultsdb.h"

#define N_OPTS(a) (int)(sizeof(a) / sizeof((a)[0]))

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

static int merge_one(sqlite3 *db, const char *in) {
    /* The input must be a kvbench database of this schema version. */
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
    int rc = -1;
    long bad;
    if (exec(db, "BEGIN IMMEDIATE", in)) goto out;
    /* Conflicts: the same run id with another spec; the same sample with other results. */
    bad = count(db, "SELECT COUNT(*) FROM src.runs s JOIN main.runs m ON m.id = s.id WHERE m.spec IS NOT s.spec");
    if (bad) {
        if (bad > 0) fprintf(stderr, "kvbench merge: %s: %ld runs share an id with different settings\n", in, bad);
        goto out;
    }
    bad = count(db, "SELECT COUNT(*) FROM src.samples s JOIN main.samples m ON m.run = s.run AND m.sample = s.sample "
                    "WHERE m.output IS NOT s.output OR m.prompt_tokens IS NOT s.prompt_tokens "
                    "OR m.generated_tokens IS NOT s.generated_tokens OR m.kv_bytes_peak IS NOT s.kv_bytes_peak");
    if (bad) {
        if (bad > 0) fprintf(stderr, "kvbench merge: %s: %ld samples conflict with ones already merged (different output)\n", in, bad);
        goto out;
    }
    bad = count(db, "SELECT COUNT(*) FROM src.metrics s JOIN main.metrics m ON m.run = s.run AND m.sample = s.sample "
                    "AND m.name = s.name WHERE m.name NOT IN " TIMING_METRICS " AND m.value IS NOT s.value");
    if (bad) {
        if (bad > 0) fprintf(stderr, "kvbench merge: %s: %ld metric values conflict with ones already merged\n", in, bad);
        goto out;
    }
    if (model_file_conflict(db, in)) goto out;
    if (exec(db,
             "INSERT OR IGNORE INTO main.runs SELECT * FROM src.runs;"
             "INSERT OR IGNORE INTO main.experiments SELECT * FROM src.experiments;"
             "INSERT OR IGNORE INTO main.experiment_runs SELECT * FROM src.experiment_runs;"
             "INSERT OR IGNORE INTO main.samples SELECT * FROM src.samples;"
             "INSERT OR IGNORE INTO main.metrics SELECT * FROM src.metrics;"
             "INSERT OR IGNORE INTO main.curves SELECT * FROM src.curves;"
             "INSERT OR IGNORE INTO main.kv_trace SELECT * FROM src.kv_trace;",
             in) ||
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
               "or nothing is merged.\n");
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
