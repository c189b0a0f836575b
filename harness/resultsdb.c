/* resultsdb.c - see resultsdb.h and docs/RESULTS.md. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* gethostname */
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "../base/kv_error.h"
#include "resultsdb.h"

struct hx_db {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *has_sample, *put_sample, *put_metric, *put_curve, *put_kv;
    sqlite3_stmt *get_claim, *put_claim, *drop_claim;
    char host[256], owner[320]; /* this process in the claims table */
    long pid;
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
    "  PRIMARY KEY(run, sample, pos));\n"
    "CREATE TABLE IF NOT EXISTS claims(run TEXT NOT NULL, sample TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,\n"
    "  owner TEXT NOT NULL, expires INTEGER NOT NULL, PRIMARY KEY(run, sample));\n";



sqlite3 *hx_db_handle(hx_db *db) { return db->db; }

/* The directory holding path ("." for a bare name), in buf. */
static const char *dir_of(const char *path, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", path);
    char *slash = strrchr(buf, '/');
    if (!slash) snprintf(buf, cap, ".");
    else if (slash == buf) buf[1] = 0;
    else *slash = 0;
    return buf;
}

/* SQLite says "database or disk is full" for both of its causes; a full
 * file system is the one a user meets, so the message says how much room
 * is left there and that what is stored stays. */
static int db_err(hx_db *db, const char *what) {
    struct statvfs fs;
    char dir[4096];
    if ((sqlite3_extended_errcode(db->db) & 0xff) == SQLITE_FULL && statvfs(dir_of(db->path, dir, sizeof dir), &fs) == 0)
        return kv_errorf(KV_EIO, "%s: %s: %s (the file system holding %s has %llu bytes free; the samples stored "
                         "before this one are kept: make room and run again to resume)", db->path, what,
                         sqlite3_errmsg(db->db), dir, (unsigned long long)fs.f_bavail * fs.f_frsize);
    return kv_errorf(KV_EIO, "%s: %s: %s", db->path, what, sqlite3_errmsg(db->db));
}

/* SQLite's message for a failed open or first statement says what it met
 * ("attempt to write a readonly database", "file is not a database"), not
 * why; this names the cause a user can act on. */
static int open_failure(const char *path, sqlite3 *h, int writing) {
    int code = h ? sqlite3_extended_errcode(h) : SQLITE_NOMEM;
    const char *msg = h ? sqlite3_errmsg(h) : "out of memory";
    char dir[4096], side[4200];
    struct stat sb;
    if ((code & 0xff) == SQLITE_NOTADB)
        return kv_errorf(KV_EFORMAT, "%s: not an SQLite database (a truncated copy or another kind of file): %s", path, msg);
    if ((code & 0xff) == SQLITE_CORRUPT)
        return kv_errorf(KV_EFORMAT, "%s: the database is damaged (truncated or overwritten; see PRAGMA integrity_check): %s",
                         path, msg);
    if (stat(path, &sb) != 0) {
        int e = errno;
        if (writing && e == ENOENT && access(dir_of(path, dir, sizeof dir), W_OK) != 0)
            return kv_errorf(KV_EIO, "%s: cannot create the database: the directory %s is not writable (%s)", path, dir,
                             strerror(errno));
        return kv_errorf(KV_EIO, "%s: cannot open the results database: %s", path, strerror(e));
    }
    if (writing && access(path, W_OK) != 0)
        return kv_errorf(KV_EIO, "%s: the database file is read-only (%s): `run` and `merge` write to it; report and "
                         "plot can read it", path, strerror(errno));
    dir_of(path, dir, sizeof dir);
    snprintf(side, sizeof side, "%s-wal", path);
    int has_wal = stat(side, &sb) == 0;
    if (access(dir, W_OK) != 0 && (writing || !has_wal))
        return kv_errorf(KV_EIO, "%s: the directory %s is read-only (%s), and SQLite must create %s-wal and %s-shm "
                         "beside the database to %s it (%s)", path, dir, strerror(errno), path, path,
                         writing ? "write" : "read", msg);
    if (!writing && has_wal && sb.st_size > 0 && access(dir, W_OK) != 0)
        return kv_errorf(KV_EIO, "%s: %s holds changes not yet in the database, and the directory %s is read-only, so "
                         "SQLite cannot create the %s-shm index it needs to read them; copy the database with its "
                         "-wal file to a writable directory (%s)", path, side, dir, path, msg);
    if (has_wal && access(side, writing ? W_OK : R_OK) != 0)
        return kv_errorf(KV_EIO, "%s: cannot %s %s (%s): %s", path, writing ? "write" : "read", side, strerror(errno), msg);
    return kv_errorf(KV_EIO, "%s: cannot open the results database: %s", path, msg);
}

/* The schema version: 0 when absent (a new file), negative on error. */
static int schema_version(hx_db *db) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->db, "SELECT value FROM meta WHERE key='schema_version'", -1, &st, NULL) != SQLITE_OK)
        return -1;
    int r = sqlite3_step(st);
    int have = r == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    return r == SQLITE_ROW || r == SQLITE_DONE ? have : -1;
}

static int version_refused(const char *path, int have) {
    if (have == 1) /* the one older version there is: say why and what to do */
        return kv_errorf(KV_EFORMAT, "%s: schema version 1, this kvbench reads version %d: its results come from "
                         "prompts read in chunks with evictions between them and from a partial model hash, so "
                         "they are not comparable with this version's; give this version a new database "
                         "(--db PATH or the experiment's db =) and keep this one for the kvbench that wrote it",
                         path, HX_DB_SCHEMA_VERSION);
    return kv_errorf(KV_EFORMAT, "%s: schema version %d, this kvbench reads version %d", path, have,
                     HX_DB_SCHEMA_VERSION);
}

static hx_db *db_new(const char *path) {
    hx_db *db = calloc(1, sizeof *db);
    if (db && !(db->path = strdup(path))) {
        free(db);
        db = NULL;
    }
    if (!db) kv_errorf(KV_ENOMEM, "out of memory");
    return db;
}

/* This process's name in the claims table: host, pid and a nonce, so that
 * a claim left by an earlier process with the same pid is not taken for
 * ours. */
static void claim_identity(hx_db *db) {
    if (gethostname(db->host, sizeof db->host - 1) != 0) snprintf(db->host, sizeof db->host, "unknown");
    db->pid = (long)getpid();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(db->owner, sizeof db->owner, "%s:%ld:%llx", db->host, db->pid,
             (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec);
}

static int prepare_writes(hx_db *db) {
    if (sqlite3_prepare_v2(db->db, "SELECT 1 FROM samples WHERE run=? AND sample=?", -1, &db->has_sample, NULL) ||
        sqlite3_prepare_v2(db->db,
                           "INSERT INTO samples VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,strftime('%Y-%m-%dT%H:%M:%SZ','now'))",
                           -1, &db->put_sample, NULL) ||
        sqlite3_prepare_v2(db->db, "INSERT INTO metrics VALUES(?,?,?,?)", -1, &db->put_metric, NULL) ||
        sqlite3_prepare_v2(db->db, "INSERT INTO curves VALUES(?,?,?,?)", -1, &db->put_curve, NULL) ||
        sqlite3_prepare_v2(db->db, "INSERT OR REPLACE INTO kv_trace VALUES(?,?,?,?)", -1, &db->put_kv, NULL) ||
        sqlite3_prepare_v2(db->db, "SELECT host, pid, owner, expires FROM claims WHERE run=? AND sample=?", -1,
                           &db->get_claim, NULL) ||
        sqlite3_prepare_v2(db->db, "INSERT OR REPLACE INTO claims VALUES(?,?,?,?,?,?)", -1, &db->put_claim, NULL) ||
        sqlite3_prepare_v2(db->db, "DELETE FROM claims WHERE run=? AND sample=?", -1, &db->drop_claim, NULL))
        return db_err(db, "preparing statements");
    return KV_OK;
}

/* 1 if the file holds tables but no meta table, 0 if not, -1 if it cannot
 * be read. */
static int foreign_file(hx_db *db) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->db, "SELECT COUNT(*), COALESCE(SUM(name = 'meta'), 0) FROM sqlite_master WHERE type = 'table'",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    int r = sqlite3_step(st);
    int foreign = r == SQLITE_ROW && sqlite3_column_int(st, 0) > 0 && sqlite3_column_int(st, 1) == 0;
    sqlite3_finalize(st);
    return r == SQLITE_ROW ? foreign : -1;
}

/* Switching a database into WAL mode needs it to itself for a moment, and
 * SQLite answers SQLITE_BUSY at once there rather than calling the busy
 * handler: two processes opening a new database together would fail. So
 * the switch is retried here, within the same deadline. */
static int enter_wal(hx_db *db) {
    const struct timespec nap = {0, 10 * 1000 * 1000};
    for (long waited = 0;; waited += 10) {
        int r = sqlite3_exec(db->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
        if ((r & 0xff) != SQLITE_BUSY && (r & 0xff) != SQLITE_LOCKED) return r;
        if (waited >= HX_DB_BUSY_MS) return r;
        nanosleep(&nap, NULL);
    }
}

int hx_db_open(const char *path, int create, hx_db **out) {
    *out = NULL;
    hx_db *db = db_new(path);
    if (!db) return KV_ENOMEM;
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = KV_OK;
    if (sqlite3_open_v2(path, &db->db, flags, NULL) != SQLITE_OK) {
        rc = open_failure(path, db->db, 1);
        hx_db_close(db);
        return rc;
    }
    /* Several processes may share the file (claims): they wait for each
     * other's short write transactions instead of failing. */
    sqlite3_busy_timeout(db->db, HX_DB_BUSY_MS);
    /* another program's database is not ours to turn into one */
    int foreign = foreign_file(db);
    if (foreign) {
        rc = foreign < 0 ? open_failure(path, db->db, 1)
                         : kv_errorf(KV_EFORMAT, "%s: not a kvbench results database (it holds other tables and no "
                                     "meta table); give run another --db", path);
        hx_db_close(db);
        return rc;
    }
    if (enter_wal(db) != SQLITE_OK || sqlite3_exec(db->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db->db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK) {
        rc = open_failure(path, db->db, 1);
        hx_db_close(db);
        return rc;
    }
    int have = schema_version(db);
    if (have < 0) rc = db_err(db, "reading the schema version");
    else if (have && have != HX_DB_SCHEMA_VERSION) rc = version_refused(path, have);
    else if (!have) {
        char sql[128];
        snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO meta VALUES('schema_version', '%d')", HX_DB_SCHEMA_VERSION);
        if (sqlite3_exec(db->db, sql, NULL, NULL, NULL) != SQLITE_OK) rc = db_err(db, "writing the schema version");
    }
    if (!rc) rc = prepare_writes(db);
    if (rc) {
        hx_db_close(db);
        return rc;
    }
    claim_identity(db);
    *out = db;
    return KV_OK;
}

/* "file:PATH?immutable=1" with PATH percent-encoded where a URI needs it. */
static int immutable_uri(const char *path, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p && n + 4 < cap; p++)
        n += (size_t)(*p == '%' || *p == '?' || *p == '#' || *p < 0x21 || *p > 0x7e
                          ? snprintf(buf + n, cap - n, "%%%02X", *p)
                          : snprintf(buf + n, cap - n, "%c", *p));
    return snprintf(buf + n, cap - n, "?immutable=1") < (int)(cap - n) ? KV_OK : KV_EINVAL;
}

/* Opens read-only; 0 with the version in *have, or the SQLite result. */
static int try_read(hx_db *db, const char *name, int flags, int *have) {
    if (sqlite3_open_v2(name, &db->db, flags, NULL) != SQLITE_OK) return SQLITE_CANTOPEN;
    sqlite3_busy_timeout(db->db, HX_DB_BUSY_MS);
    *have = schema_version(db);
    return *have < 0 ? sqlite3_extended_errcode(db->db) : SQLITE_OK;
}

int hx_db_open_readonly(const char *path, hx_db **out) {
    *out = NULL;
    hx_db *db = db_new(path);
    if (!db) return KV_ENOMEM;
    int have = 0, rc = KV_OK;
    int r = try_read(db, path, SQLITE_OPEN_READONLY, &have);
    char dir[4096], wal[4200], uri[8400];
    struct stat sb;
    snprintf(wal, sizeof wal, "%s-wal", path);
    /* A WAL database in a directory this user cannot write: SQLite cannot
     * create the -shm index to read through. With no -wal file there is
     * nothing outside the main file, so it can be read as immutable. */
    if (r != SQLITE_OK && (r & 0xff) != SQLITE_NOTADB && (r & 0xff) != SQLITE_CORRUPT && r != SQLITE_ERROR &&
        access(dir_of(path, dir, sizeof dir), W_OK) != 0 && (stat(wal, &sb) != 0 || sb.st_size == 0) &&
        immutable_uri(path, uri, sizeof uri) == KV_OK) {
        sqlite3_close(db->db);
        db->db = NULL;
        r = try_read(db, uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, &have);
    }
    if (r != SQLITE_OK) {
        /* a readable SQLite file without kvbench's tables */
        rc = r == SQLITE_ERROR && strstr(sqlite3_errmsg(db->db), "no such table")
                 ? kv_errorf(KV_EFORMAT, "%s: not a kvbench results database (it has no meta table)", path)
                 : open_failure(path, db->db, 0);
    } else if (have == 0)
        rc = kv_errorf(KV_EFORMAT, "%s: not a kvbench results database (no schema version)", path);
    else if (have != HX_DB_SCHEMA_VERSION)
        rc = version_refused(path, have);
    if (rc) {
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
    sqlite3_finalize(db->get_claim);
    sqlite3_finalize(db->put_claim);
    sqlite3_finalize(db->drop_claim);
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
    /* reset at once: a statement left on a row holds a read snapshot that
     * a later write transaction could not upgrade from (SQLITE_BUSY_SNAPSHOT
     * once another process has written) */
    int rc = r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : db_err(db, "looking up a sample");
    sqlite3_reset(db->has_sample);
    return rc;
}

static int step_done(sqlite3_stmt *st) {
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    return r == SQLITE_DONE;
}

/* A process's command name (Linux's /proc), or "" when unknown. */
static void comm_of(const char *pid, char *buf, size_t cap) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%s/comm", pid);
    buf[0] = 0;
    FILE *f = fopen(p, "r");
    if (!f) return;
    if (!fgets(buf, (int)cap, f)) buf[0] = 0;
    fclose(f);
}

/* Is pid, on this host, a live process running this program? A pid reused
 * by another program after a crash is not (where /proc tells). */
static int kvbench_alive(long pid) {
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 0;
    char mine[64], theirs[64], id[32];
    snprintf(id, sizeof id, "%ld", pid);
    comm_of("self", mine, sizeof mine);
    comm_of(id, theirs, sizeof theirs);
    return !mine[0] || !theirs[0] || !strcmp(mine, theirs);
}

/* Is a claim held by another process still good? On this host, while its
 * process lives, however long its unit takes; a claim from another host
 * (a shared file system) until its lease runs out. */
static int claim_alive(const hx_db *db, const char *host, long pid, const char *owner, long long expires) {
    if (!strcmp(owner, db->owner)) return 0;
    if (!strcmp(host, db->host)) return pid != db->pid && kvbench_alive(pid);
    return expires > (long long)time(NULL);
}

/* Inside the claim's transaction: stored, taken, or ours (written). */
static int claim_locked(hx_db *db, const char *run, const char *sample) {
    sqlite3_stmt *st = db->has_sample;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sample, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    if (r == SQLITE_ROW) return HX_CLAIM_STORED;
    if (r != SQLITE_DONE) return db_err(db, "looking up a sample");
    st = db->get_claim;
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sample, -1, SQLITE_STATIC);
    r = sqlite3_step(st);
    int alive = r == SQLITE_ROW &&
                claim_alive(db, (const char *)sqlite3_column_text(st, 0), (long)sqlite3_column_int64(st, 1),
                            (const char *)sqlite3_column_text(st, 2), sqlite3_column_int64(st, 3));
    sqlite3_reset(st);
    if (r != SQLITE_ROW && r != SQLITE_DONE) return db_err(db, "reading a claim");
    if (alive) return HX_CLAIM_TAKEN;
    st = db->put_claim;
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sample, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, db->host, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, db->pid);
    sqlite3_bind_text(st, 5, db->owner, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)time(NULL) + HX_CLAIM_LEASE_S);
    return step_done(st) ? HX_CLAIM_OURS : db_err(db, "writing a claim");
}

int hx_db_claim(hx_db *db, const char *run, const char *sample) {
    /* stored: no write lock needed (a resumed sweep checks thousands) */
    int have = hx_db_has_sample(db, run, sample);
    if (have) return have < 0 ? have : HX_CLAIM_STORED;
    /* IMMEDIATE: the check and the claim are one step for every process */
    if (sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return db_err(db, "claiming a sample");
    int r = claim_locked(db, run, sample);
    if (r < 0) {
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
    }
    if (sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        int rc = db_err(db, "committing a claim");
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    return r;
}

int hx_db_release_claims(hx_db *db) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->db, "DELETE FROM claims WHERE owner=?", -1, &st, NULL) != SQLITE_OK)
        return db_err(db, "releasing claims");
    sqlite3_bind_text(st, 1, db->owner, -1, SQLITE_STATIC);
    int ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return ok ? KV_OK : db_err(db, "releasing claims");
}

static void bind_sample(sqlite3_stmt *st, const hx_sample_row *s) {
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
}

static int put_series(sqlite3_stmt *st, const hx_sample_row *s, const hx_curve *c, int as_int) {
    int ok = 1;
    for (int k = 0; ok && c && k < c->n; k++) {
        sqlite3_bind_text(st, 1, s->run, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, s->sample, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, c->pos[k]);
        if (as_int) sqlite3_bind_int64(st, 4, (sqlite3_int64)c->val[k]);
        else sqlite3_bind_double(st, 4, c->val[k]);
        ok = step_done(st);
    }
    return ok;
}

/* The sample's rows, inside its transaction; 1 when another process
 * stored it first (its claim had lapsed): nothing is written twice. */
static int put_sample_rows(hx_db *db, const hx_sample_row *s, const hx_metric *m, int n_metrics, const hx_curve *nll,
                           const hx_curve *kv) {
    sqlite3_stmt *st = db->has_sample;
    sqlite3_bind_text(st, 1, s->run, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->sample, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    if (r == SQLITE_ROW) return 1;
    if (r != SQLITE_DONE) return db_err(db, "looking up a sample");
    bind_sample(db->put_sample, s);
    int ok = step_done(db->put_sample);
    for (int k = 0; ok && k < n_metrics; k++) {
        sqlite3_bind_text(db->put_metric, 1, s->run, -1, SQLITE_STATIC);
        sqlite3_bind_text(db->put_metric, 2, s->sample, -1, SQLITE_STATIC);
        sqlite3_bind_text(db->put_metric, 3, m[k].name, -1, SQLITE_STATIC);
        sqlite3_bind_double(db->put_metric, 4, m[k].value);
        ok = step_done(db->put_metric);
    }
    ok = ok && put_series(db->put_curve, s, nll, 0) && put_series(db->put_kv, s, kv, 1);
    if (ok) { /* stored: the claim on it has done its work */
        sqlite3_bind_text(db->drop_claim, 1, s->run, -1, SQLITE_STATIC);
        sqlite3_bind_text(db->drop_claim, 2, s->sample, -1, SQLITE_STATIC);
        ok = step_done(db->drop_claim);
    }
    return ok ? KV_OK : db_err(db, "writing a sample");
}

int hx_db_put_sample(hx_db *db, const hx_sample_row *s, const hx_metric *m, int n_metrics, const hx_curve *nll,
                     const hx_curve *kv) {
    if (sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return db_err(db, "starting a transaction");
    int rc = put_sample_rows(db, s, m, n_metrics, nll, kv);
    if (rc) {
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_err(db, "committing a sample");
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    return KV_OK;
}
