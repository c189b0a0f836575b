/* resultsdb.c - see resultsdb.h and docs/RESULTS.md. */
#define _POSIX_C_SOURCE 200809L
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/kv_error.h"
#include "resultsdb.h"

struct hx_db {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *has_sample, *put_sample, *put_metric, *put_curve, *put_kv;
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
    "CREATE TABLE IF NOT EXISTS experiments(name TEXT PRIMARY KEY, file TEXT, text TEXT, description TEXT,\n"
    "  mirrors TEXT, updated TEXT NOT NULL);\n"
    "CREATE TABLE IF NOT EXISTS runs(id TEXT PRIMARY KEY, model TEXT NOT NULL, model_path TEXT, model_hash TEXT,\n"
    "  task TEXT NOT NULL, task_kind TEXT NOT NULL, data TEXT, template TEXT, policy_label TEXT NOT NULL,\n"
    "  policy TEXT NOT NULL, params TEXT, budget TEXT NOT NULL, budget_kind INTEGER, budget_value REAL,\n"
    "  seed INTEGER, max_prompt_tokens INTEGER, max_new_tokens INTEGER, spec TEXT NOT NULL, created TEXT NOT NULL);\n"
    "CREATE TABLE IF NOT EXISTS experiment_runs(experiment TEXT NOT NULL, run TEXT NOT NULL,\n"
    "  PRIMARY KEY(experiment, run));\n"
    "CREATE TABLE IF NOT EXISTS samples(run TEXT NOT NULL, sample TEXT NOT NULL, idx INTEGER, length INTEGER,\n"
    "  depth INTEGER, prompt_tokens INTEGER, generated_tokens INTEGER, cut_chars INTEGER, ttft_ms REAL,\n"
    "  decode_ms REAL, kv_bytes_peak INTEGER, kv_bytes_final INTEGER, kv_slots_max INTEGER, budget_slots INTEGER,\n"
    "  output TEXT, reference TEXT, stop_reason TEXT, finished TEXT NOT NULL, PRIMARY KEY(run, sample));\n"
    "CREATE TABLE IF NOT EXISTS metrics(run TEXT NOT NULL, sample TEXT NOT NULL, name TEXT NOT NULL, value REAL,\n"
    "  PRIMARY KEY(run, sample, name));\n"
    "CREATE TABLE IF NOT EXISTS curves(run TEXT NOT NULL, sample TEXT NOT NULL, pos INTEGER NOT NULL, nll REAL,\n"
    "  PRIMARY KEY(run, sample, pos));\n"
    "CREATE TABLE IF NOT EXISTS kv_trace(run TEXT NOT NULL, sample TEXT NOT NULL, pos INTEGER NOT NULL, bytes INTEGER,\n"
    "  PRIMARY KEY(run, sample, pos));\n";

static int db_err(hx_db *db, const char *what) {
    return kv_errorf(KV_EIO, "%s: %s: %s", db->path, what, sqlite3_errmsg(db->db));
}

sqlite3 *hx_db_handle(hx_db *db) { return db->db; }

int hx_db_open(const char *path, int create, hx_db **out) {
    *out = NULL;
    hx_db *db = calloc(1, sizeof *db);
    if (!db || !(db->path = strdup(path))) {
        free(db);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &db->db, flags, NULL) != SQLITE_OK) {
        int rc = kv_errorf(KV_EIO, "%s: cannot open the results database: %s", path,
                           db->db ? sqlite3_errmsg(db->db) : "out of memory");
        hx_db_close(db);
        return rc;
    }
    sqlite3_busy_timeout(db->db, 10000);
    char *err = NULL;
    int rc = KV_OK;
    if (sqlite3_exec(db->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, &err) != SQLITE_OK ||
        sqlite3_exec(db->db, SCHEMA, NULL, NULL, &err) != SQLITE_OK) {
        rc = kv_errorf(KV_EIO, "%s: %s", path, err ? err : "cannot create the schema");
        sqlite3_free(err);
        hx_db_close(db);
        return rc;
    }
    /* The schema version: written once, checked on every open. */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->db, "SELECT value FROM meta WHERE key='schema_version'", -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(db, "reading the schema version");
        hx_db_close(db);
        return rc;
    }
    int have = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    if (have && have != HX_DB_SCHEMA_VERSION) {
        if (have == 1) /* the one older version there is: say why and what to do */
            rc = kv_errorf(KV_EFORMAT, "%s: schema version 1, this kvbench reads version %d: its results come from "
                           "prompts read in chunks with evictions between them and from a partial model hash, so "
                           "they are not comparable with this version's; give this version a new database "
                           "(--db PATH or the experiment's db =) and keep this one for the kvbench that wrote it",
                           path, HX_DB_SCHEMA_VERSION);
        else
            rc = kv_errorf(KV_EFORMAT, "%s: schema version %d, this kvbench reads version %d", path, have,
                           HX_DB_SCHEMA_VERSION);
        hx_db_close(db);
        return rc;
    }
    if (!have) {
        char sql[128];
        snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO meta VALUES('schema_version', '%d')", HX_DB_SCHEMA_VERSION);
        if (sqlite3_exec(db->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
            rc = db_err(db, "writing the schema version");
            hx_db_close(db);
            return rc;
        }
    }
    if (sqlite3_prepare_v2(db->db, "SELECT 1 FROM samples WHERE run=? AND sample=?", -1, &db->has_sample, NULL) ||
        sqlite3_prepare_v2(db->db,
                           "INSERT INTO samples VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,strftime('%Y-%m-%dT%H:%M:%SZ','now'))",
                           -1, &db->put_sample, NULL) ||
        sqlite3_prepare_v2(db->db, "INSERT INTO metrics VALUES(?,?,?,?)", -1, &db->put_metric, NULL) ||
        sqlite3_prepare_v2(db->db, "INSERT INTO curves VALUES(?,?,?,?)", -1, &db->put_curve, NULL) ||
        sqlite3_prepare_v2(db->db, "INSERT OR REPLACE INTO kv_trace VALUES(?,?,?,?)", -1, &db->put_kv, NULL)) {
        rc = db_err(db, "preparing statements");
        hx_db_close(db);
        return rc;
    }
    *out = db;
    return KV_OK;
}

void hx_db_close(hx_db *db) {
    if (!db) return;
    sqlite3_finalize(db->has_sample);
    sqlite3_finalize(db->put_sample);
    sqlite3_finalize(db->put_metric);
    sqlite3_finalize(db->put_curve);
    sqlite3_finalize(db->put_kv);
    sqlite3_close(db->db);
    free(db->path);
    free(db);
}

int hx_db_put_experiment(hx_db *db, const char *name, const char *file, const char *text, const char *description,
                         const char *mirrors) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->db, "INSERT OR REPLACE INTO experiments VALUES(?,?,?,?,?,strftime('%Y-%m-%dT%H:%M:%SZ','now'))",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(db, "recording the experiment");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, file, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, description, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, mirrors, -1, SQLITE_STATIC);
    int ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return ok ? KV_OK : db_err(db, "recording the experiment");
}

int hx_db_put_run(hx_db *db, const char *experiment, const hx_run_row *r) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->db,
                           "INSERT OR IGNORE INTO runs VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,strftime('%Y-%m-%dT%H:%M:%SZ','now'))",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(db, "recording a run");
    int i = 1;
    sqlite3_bind_text(st, i++, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->model_path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->model_hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->task, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->task_kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->data, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->template_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->policy_label, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->policy, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->params, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, r->budget, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, i++, r->budget_kind);
    sqlite3_bind_double(st, i++, r->budget_value);
    sqlite3_bind_int64(st, i++, (sqlite3_int64)r->seed);
    sqlite3_bind_int(st, i++, r->max_prompt_tokens);
    sqlite3_bind_int(st, i++, r->max_new_tokens);
    sqlite3_bind_text(st, i++, r->spec, -1, SQLITE_STATIC);
    int ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    if (!ok) return db_err(db, "recording a run");
    if (sqlite3_prepare_v2(db->db, "INSERT OR IGNORE INTO experiment_runs VALUES(?,?)", -1, &st, NULL) != SQLITE_OK)
        return db_err(db, "linking a run");
    sqlite3_bind_text(st, 1, experiment, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->id, -1, SQLITE_STATIC);
    ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return ok ? KV_OK : db_err(db, "linking a run");
}

int hx_db_has_sample(hx_db *db, const char *run, const char *sample) {
    sqlite3_reset(db->has_sample);
    sqlite3_bind_text(db->has_sample, 1, run, -1, SQLITE_STATIC);
    sqlite3_bind_text(db->has_sample, 2, sample, -1, SQLITE_STATIC);
    int r = sqlite3_step(db->has_sample);
    if (r == SQLITE_ROW) return 1;
    if (r == SQLITE_DONE) return 0;
    return db_err(db, "looking up a sample");
}

static int step_done(sqlite3_stmt *st) {
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    return r == SQLITE_DONE;
}

int hx_db_put_sample(hx_db *db, const hx_sample_row *s, const hx_metric *m, int n_metrics, const hx_curve *nll,
                     const hx_curve *kv) {
    if (sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return db_err(db, "starting a transaction");
    sqlite3_stmt *st = db->put_sample;
    int i = 1;
    sqlite3_bind_text(st, i++, s->run, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, s->sample, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, i++, s->idx);
    sqlite3_bind_int(st, i++, s->length);
    sqlite3_bind_int(st, i++, s->depth);
    sqlite3_bind_int(st, i++, s->prompt_tokens);
    sqlite3_bind_int(st, i++, s->generated_tokens);
    sqlite3_bind_int64(st, i++, s->cut_chars);
    sqlite3_bind_double(st, i++, s->ttft_ms);
    sqlite3_bind_double(st, i++, s->decode_ms);
    sqlite3_bind_int64(st, i++, s->kv_bytes_peak);
    sqlite3_bind_int64(st, i++, s->kv_bytes_final);
    sqlite3_bind_int(st, i++, s->kv_slots_max);
    sqlite3_bind_int(st, i++, s->budget_slots);
    sqlite3_bind_text(st, i++, s->output, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, s->reference, -1, SQLITE_STATIC);
    if (s->stop_reason) sqlite3_bind_text(st, i++, s->stop_reason, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, i++);
    int ok = step_done(st);
    for (int k = 0; ok && k < n_metrics; k++) {
        sqlite3_bind_text(db->put_metric, 1, s->run, -1, SQLITE_STATIC);
        sqlite3_bind_text(db->put_metric, 2, s->sample, -1, SQLITE_STATIC);
        sqlite3_bind_text(db->put_metric, 3, m[k].name, -1, SQLITE_STATIC);
        sqlite3_bind_double(db->put_metric, 4, m[k].value);
        ok = step_done(db->put_metric);
    }
    for (int k = 0; ok && nll && k < nll->n; k++) {
        sqlite3_bind_text(db->put_curve, 1, s->run, -1, SQLITE_STATIC);
        sqlite3_bind_text(db->put_curve, 2, s->sample, -1, SQLITE_STATIC);
        sqlite3_bind_int(db->put_curve, 3, nll->pos[k]);
        sqlite3_bind_double(db->put_curve, 4, nll->val[k]);
        ok = step_done(db->put_curve);
    }
    for (int k = 0; ok && kv && k < kv->n; k++) {
        sqlite3_bind_text(db->put_kv, 1, s->run, -1, SQLITE_STATIC);
        sqlite3_bind_text(db->put_kv, 2, s->sample, -1, SQLITE_STATIC);
        sqlite3_bind_int(db->put_kv, 3, kv->pos[k]);
        sqlite3_bind_int64(db->put_kv, 4, (sqlite3_int64)kv->val[k]);
        ok = step_done(db->put_kv);
    }
    if (!ok) {
        int rc = db_err(db, "writing a sample");
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        int rc = db_err(db, "committing a sample");
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    return KV_OK;
}

uint64_t hx_hash(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
