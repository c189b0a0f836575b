/* test_resultsdb_faults.c - the results database's write path under a full
 * disk and I/O errors. A VFS shim wraps the default one (as SQLite's own
 * fault tests do) and fails the Nth write or sync, and every one after it,
 * for N = 0, 1, 2, ... until a whole round of writes goes through. Each
 * time: the failing call names the database, the file reopens and passes
 * PRAGMA integrity_check, every sample is there whole or not at all, and
 * writing the missing ones again completes. Last, several processes open
 * one new database at once. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "../base/kv_error.h"
#include "../harness/resultsdb.h"
#include "test_util.h"

/* ------------------------------------------------------------ the shim */

enum fault_kind { FAULT_NONE, FAULT_FULL, FAULT_IOERR, FAULT_SYNC };

static struct {
    sqlite3_vfs *real;
    enum fault_kind kind;
    int countdown; /* calls of the kind left before the first failure */
    int fired;     /* failures so far */
} fs;

typedef struct shim_file {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, right after this struct */
} shim_file;

/* 1 when this call must fail: the disk stays full once it is full. */
static int shim_fail(enum fault_kind kind) {
    if (fs.kind != kind) return 0;
    if (fs.countdown > 0) {
        fs.countdown--;
        return 0;
    }
    fs.fired++;
    return 1;
}

#define REAL(f) (((shim_file *)(f))->real)

static int shim_close(sqlite3_file *f) { return REAL(f)->pMethods->xClose(REAL(f)); }
static int shim_read(sqlite3_file *f, void *b, int n, sqlite3_int64 off) { return REAL(f)->pMethods->xRead(REAL(f), b, n, off); }
static int shim_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 off) {
    if (shim_fail(FAULT_FULL)) return SQLITE_FULL;
    if (shim_fail(FAULT_IOERR)) return SQLITE_IOERR_WRITE;
    return REAL(f)->pMethods->xWrite(REAL(f), b, n, off);
}
static int shim_truncate(sqlite3_file *f, sqlite3_int64 size) { return REAL(f)->pMethods->xTruncate(REAL(f), size); }
static int shim_sync(sqlite3_file *f, int flags) {
    if (shim_fail(FAULT_SYNC)) return SQLITE_IOERR_FSYNC;
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int shim_size(sqlite3_file *f, sqlite3_int64 *size) { return REAL(f)->pMethods->xFileSize(REAL(f), size); }
static int shim_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int shim_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int shim_check(sqlite3_file *f, int *out) { return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out); }
static int shim_fcntl(sqlite3_file *f, int op, void *arg) { return REAL(f)->pMethods->xFileControl(REAL(f), op, arg); }
static int shim_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int shim_caps(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int shim_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **p) {
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, p);
}
static int shim_shm_lock(sqlite3_file *f, int off, int n, int flags) { return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags); }
static void shim_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int shim_shm_unmap(sqlite3_file *f, int del) { return REAL(f)->pMethods->xShmUnmap(REAL(f), del); }
static int shim_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **p) { return REAL(f)->pMethods->xFetch(REAL(f), off, n, p); }
static int shim_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) { return REAL(f)->pMethods->xUnfetch(REAL(f), off, p); }

static const sqlite3_io_methods shim_io = {
    3, shim_close, shim_read, shim_write, shim_truncate, shim_sync, shim_size, shim_lock, shim_unlock, shim_check,
    shim_fcntl, shim_sector, shim_caps, shim_shm_map, shim_shm_lock, shim_shm_barrier, shim_shm_unmap, shim_fetch,
    shim_unfetch,
};

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags) {
    (void)vfs;
    shim_file *sf = (shim_file *)f;
    sf->real = (sqlite3_file *)(sf + 1);
    int rc = fs.real->xOpen(fs.real, name, sf->real, flags, out_flags);
    /* the default VFS's methods have version 3 (WAL's shared memory, mmap) */
    sf->base.pMethods = rc == SQLITE_OK && sf->real->pMethods ? &shim_io : NULL;
    return rc;
}

static int shim_delete(sqlite3_vfs *v, const char *n, int sync) { (void)v; return fs.real->xDelete(fs.real, n, sync); }
static int shim_access(sqlite3_vfs *v, const char *n, int flags, int *out) { (void)v; return fs.real->xAccess(fs.real, n, flags, out); }
static int shim_full(sqlite3_vfs *v, const char *n, int cap, char *out) { (void)v; return fs.real->xFullPathname(fs.real, n, cap, out); }
static void *shim_dlopen(sqlite3_vfs *v, const char *n) { (void)v; return fs.real->xDlOpen(fs.real, n); }
static void shim_dlerror(sqlite3_vfs *v, int n, char *m) { (void)v; fs.real->xDlError(fs.real, n, m); }
static void (*shim_dlsym(sqlite3_vfs *v, void *h, const char *s))(void) { (void)v; return fs.real->xDlSym(fs.real, h, s); }
static void shim_dlclose(sqlite3_vfs *v, void *h) { (void)v; fs.real->xDlClose(fs.real, h); }
static int shim_random(sqlite3_vfs *v, int n, char *out) { (void)v; return fs.real->xRandomness(fs.real, n, out); }
static int shim_sleep(sqlite3_vfs *v, int us) { (void)v; return fs.real->xSleep(fs.real, us); }
static int shim_time(sqlite3_vfs *v, double *t) { (void)v; return fs.real->xCurrentTime(fs.real, t); }
static int shim_lasterr(sqlite3_vfs *v, int n, char *m) { (void)v; return fs.real->xGetLastError(fs.real, n, m); }
static int shim_time64(sqlite3_vfs *v, sqlite3_int64 *t) { (void)v; return fs.real->xCurrentTimeInt64(fs.real, t); }

static sqlite3_vfs shim_vfs;

static int setup(void **state) {
    (void)state;
    fs.real = sqlite3_vfs_find(NULL);
    if (!fs.real) return -1;
    shim_vfs = (sqlite3_vfs){
        .iVersion = 2, .szOsFile = (int)sizeof(shim_file) + fs.real->szOsFile, .mxPathname = fs.real->mxPathname,
        .zName = "kvbench-faults", .xOpen = shim_open, .xDelete = shim_delete, .xAccess = shim_access,
        .xFullPathname = shim_full, .xDlOpen = shim_dlopen, .xDlError = shim_dlerror, .xDlSym = shim_dlsym,
        .xDlClose = shim_dlclose, .xRandomness = shim_random, .xSleep = shim_sleep, .xCurrentTime = shim_time,
        .xGetLastError = shim_lasterr, .xCurrentTimeInt64 = shim_time64,
    };
    /* the default: hx_db_open's connections go through it */
    return sqlite3_vfs_register(&shim_vfs, 1) == SQLITE_OK ? 0 : -1;
}

static void arm(enum fault_kind kind, int after) {
    fs.kind = kind;
    fs.countdown = after;
    fs.fired = 0;
}

/* ------------------------------------------------------------ the rows */

#define N_FIRST 2  /* samples written before the fault is armed */
#define N_SAMPLES 6
#define N_METRICS 3
#define N_POINTS 40 /* curve points: several pages per sample */

static const char RUN_ID[] = "00000000000000aa";

static int put_run(hx_db *db) {
    hx_run_row r = {.model = "m", .task = "t", .task_kind = "fidelity", .policy_label = "full", .policy = "full",
                    .budget = "none", .spec = "spec"};
    memcpy(r.id, RUN_ID, sizeof r.id);
    return hx_db_put_run(db, "faults", &r);
}

static int put_sample(hx_db *db, int i) {
    char id[32], out[256];
    snprintf(id, sizeof id, "s%02d", i);
    memset(out, 'a' + i, sizeof out - 1);
    out[sizeof out - 1] = 0;
    hx_sample_row s = {.run = RUN_ID, .sample = id, .idx = i, .prompt_tokens = 10 + i, .generated_tokens = 5,
                       .output = out, .reference = "ref", .stop_reason = "max_new_tokens"};
    hx_metric m[N_METRICS] = {{"kv_bytes_peak", 100.0 * i}, {"budget_exceeded", 0}, {"fid_kl", 0.5 * i}};
    int32_t pos[N_POINTS];
    double val[N_POINTS];
    for (int k = 0; k < N_POINTS; k++) pos[k] = k, val[k] = i + k * 0.25;
    hx_curve c = {pos, val, N_POINTS};
    return hx_db_put_sample(db, &s, m, N_METRICS, &c, &c);
}

static long scalar(sqlite3 *h, const char *sql) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    long v = sqlite3_step(st) == SQLITE_ROW ? (long)sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

/* After the fault: the file is sound and each sample whole or absent;
 * writing the absent ones completes. Returns how many were absent. */
static int check_and_finish(const char *path) {
    hx_db *db = NULL;
    fs.kind = FAULT_NONE;
    assert_int_equal(hx_db_open(path, 1, &db), 0);
    sqlite3 *h = hx_db_handle(db);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    /* whole or absent: a sample's metrics and curve points come with it */
    assert_int_equal(scalar(h, "SELECT COUNT(*) FROM samples s WHERE (SELECT COUNT(*) FROM metrics m WHERE m.sample = s.sample) != 3 "
                               "OR (SELECT COUNT(*) FROM curves c WHERE c.sample = s.sample) != 40 "
                               "OR (SELECT COUNT(*) FROM kv_trace c WHERE c.sample = s.sample) != 40"),
                     0);
    assert_int_equal(scalar(h, "SELECT COUNT(*) FROM metrics WHERE sample NOT IN (SELECT sample FROM samples)"), 0);
    assert_int_equal(scalar(h, "SELECT COUNT(*) FROM curves WHERE sample NOT IN (SELECT sample FROM samples)"), 0);
    assert_true(scalar(h, "SELECT COUNT(*) FROM samples") >= N_FIRST);
    int absent = 0;
    for (int i = 0; i < N_SAMPLES; i++) {
        char id[32];
        snprintf(id, sizeof id, "s%02d", i);
        int have = hx_db_has_sample(db, RUN_ID, id);
        assert_true(have >= 0);
        if (!have) {
            absent++;
            assert_int_equal(put_sample(db, i), 0);
        }
    }
    assert_int_equal(scalar(h, "SELECT COUNT(*) FROM samples"), N_SAMPLES);
    assert_int_equal(scalar(h, "SELECT SUM(value) FROM metrics WHERE name = 'kv_bytes_peak'"), 100 * (N_SAMPLES * (N_SAMPLES - 1) / 2));
    hx_db_close(db);
    return absent;
}

/* One round: N_FIRST samples, then the fault after `after` calls, the rest
 * of the samples and a checkpoint. 1 if the fault fired. */
static int one_round(const char *dir, enum fault_kind kind, int after, int *failed_writes) {
    char path[4200], sfx[4300];
    snprintf(path, sizeof path, "%s/r.db", dir);
    const char *ext[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) snprintf(sfx, sizeof sfx, "%s%s", path, ext[i]), unlink(sfx);
    hx_db *db = NULL;
    fs.kind = FAULT_NONE;
    assert_int_equal(hx_db_open(path, 1, &db), 0);
    /* NORMAL syncs a WAL database only at checkpoints; FULL syncs every
     * commit, so that a failing fsync meets the sample writes too */
    if (kind == FAULT_SYNC) assert_int_equal(sqlite3_exec(hx_db_handle(db), "PRAGMA synchronous=FULL", NULL, NULL, NULL), 0);
    assert_int_equal(put_run(db), 0);
    for (int i = 0; i < N_FIRST; i++) assert_int_equal(put_sample(db, i), 0);
    arm(kind, after);
    for (int i = N_FIRST; i < N_SAMPLES; i++) {
        int rc = put_sample(db, i);
        if (rc) {
            (*failed_writes)++;
            assert_int_equal(rc, KV_EIO);
            /* the message names the database and what failed */
            assert_non_null(strstr(kv_last_error(), path));
            assert_non_null(strstr(kv_last_error(), kind == FAULT_FULL ? "full" : "I/O error"));
        }
    }
    /* what closing does anyway, under the fault: move the WAL into the file */
    sqlite3_wal_checkpoint_v2(hx_db_handle(db), NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    hx_db_close(db);
    int fired = fs.fired > 0;
    check_and_finish(path);
    return fired;
}

static void sweep_faults(enum fault_kind kind, int min_failed) {
    char dir[256];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    int failed = 0, rounds = 0;
    for (int after = 0; after < 2000; after++, rounds++)
        if (!one_round(dir, kind, after, &failed)) break; /* a whole round went through */
    tu_rmdir(dir);
    print_message("fault %d: %d rounds, %d failed sample writes\n", kind, rounds, failed);
    assert_true(rounds > 3);
    assert_true(failed >= min_failed);
}

static void test_disk_full(void **state) {
    (void)state;
    sweep_faults(FAULT_FULL, 4);
}

static void test_write_errors(void **state) {
    (void)state;
    sweep_faults(FAULT_IOERR, 4);
}

/* A failing fsync at a commit or a checkpoint. */
static void test_sync_errors(void **state) {
    (void)state;
    sweep_faults(FAULT_SYNC, 4);
}

/* The disk is full from the start: creating the database fails, naming it,
 * and a later open on a disk with room works. */
static void test_open_on_full_disk(void **state) {
    (void)state;
    char dir[256], path[4200];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/new.db", dir);
    arm(FAULT_FULL, 0);
    hx_db *db = NULL;
    int rc = hx_db_open(path, 1, &db);
    fs.kind = FAULT_NONE;
    assert_int_not_equal(rc, 0);
    assert_null(db);
    assert_non_null(strstr(kv_last_error(), path));
    assert_int_equal(hx_db_open(path, 1, &db), 0);
    assert_int_equal(put_run(db), 0);
    hx_db_close(db);
    tu_rmdir(dir);
}

/* Several processes opening one new database at the same moment, as the
 * shards of a sweep do: every open succeeds. SQLite's switch into WAL mode
 * answers "database is locked" without waiting when another connection
 * holds the file, so an open that does not retry it fails here in some
 * rounds (about one round in ten of six processes on a 2-core machine). */
#define N_OPENERS 6
#define N_ROUNDS 40

static int open_at(const char *path, const struct timespec *start) {
    struct timespec now;
    do clock_gettime(CLOCK_REALTIME, &now);
    while (now.tv_sec < start->tv_sec || (now.tv_sec == start->tv_sec && now.tv_nsec < start->tv_nsec));
    hx_db *db = NULL;
    if (hx_db_open(path, 1, &db) != 0) {
        fprintf(stderr, "%s\n", kv_last_error());
        return 1;
    }
    hx_db_close(db);
    return 0;
}

static void test_open_together(void **state) {
    (void)state;
    char dir[256], path[4200];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    int failed = 0;
    for (int round = 0; round < N_ROUNDS; round++) {
        snprintf(path, sizeof path, "%s/r%d.db", dir, round);
        struct timespec start;
        clock_gettime(CLOCK_REALTIME, &start);
        start.tv_nsec += 20 * 1000 * 1000; /* every child is forked by then */
        if (start.tv_nsec >= 1000000000L) start.tv_sec++, start.tv_nsec -= 1000000000L;
        pid_t kids[N_OPENERS];
        for (int k = 0; k < N_OPENERS; k++) {
            kids[k] = fork();
            assert_true(kids[k] >= 0);
            if (kids[k] == 0) _exit(open_at(path, &start));
        }
        for (int k = 0; k < N_OPENERS; k++) {
            int status = 0;
            assert_int_equal(waitpid(kids[k], &status, 0), kids[k]);
            failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
        }
    }
    tu_rmdir(dir);
    assert_int_equal(failed, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_sync_errors),
        cmocka_unit_test(test_open_on_full_disk),
        cmocka_unit_test(test_open_together),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
