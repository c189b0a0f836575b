#define _DEFAULT_SOURCE /* usleep */
/* test_threadpool.c - every thread runs every job exactly once, jobs never
 * overlap, pools of 1..4 threads come and go cleanly, and kv_pool_barrier
 * holds every thread of a job until all have reached it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "threadpool.h"

typedef struct job {
    int round;
    int slots[8];
    _Atomic int running; /* threads inside fn for this job */
    _Atomic int overlap;
} job;

static void work(void *arg, int ith, int nth) {
    job *j = arg;
    atomic_fetch_add(&j->running, 1);
    if (j->round % 97 == 0) usleep(200); /* now and then a slow job: workers must sleep and wake */
    j->slots[ith] += j->round + nth;
    atomic_fetch_sub(&j->running, 1);
}

static void test_runs_every_share(void **state) {
    (void)state;
    for (int n = 1; n <= 4; n++) {
        kv_pool *p = kv_pool_new(n);
        assert_non_null(p);
        assert_int_equal(kv_pool_n_threads(p), n);
        job j = {0};
        long want = 0;
        for (int r = 0; r < 3000; r++) {
            j.round = r;
            kv_pool_run(p, work, &j);
            assert_int_equal(atomic_load(&j.running), 0); /* all shares finished before run returned */
            want += r + n;
            if (r == 1500) usleep(20000); /* idle long enough for the workers to go to sleep */
        }
        for (int i = 0; i < n; i++) assert_int_equal(j.slots[i], want);
        for (int i = n; i < 8; i++) assert_int_equal(j.slots[i], 0);
        kv_pool_free(p);
    }
}

/* A job of several steps: in step s each thread writes its own slot, and
 * after the barrier reads every other thread's slot of step s. */
typedef struct bjob {
    kv_pool *pool;
    int steps;
    int slots[32][8]; /* [step][thread] */
    _Atomic int bad;
} bjob;

static void steps_work(void *arg, int ith, int nth) {
    bjob *j = arg;
    for (int s = 0; s < j->steps; s++) {
        if ((s + ith) % 13 == 0) usleep(50); /* someone is late now and then */
        j->slots[s][ith] = s * 8 + ith + 1;
        kv_pool_barrier(j->pool);
        for (int i = 0; i < nth; i++)
            if (j->slots[s][i] != s * 8 + i + 1) atomic_store(&j->bad, 1);
    }
}

static void test_barrier(void **state) {
    (void)state;
    for (int n = 1; n <= 4; n++) {
        kv_pool *p = kv_pool_new(n);
        assert_non_null(p);
        for (int r = 0; r < 100; r++) {
            bjob *j = calloc(1, sizeof *j);
            assert_non_null(j);
            j->pool = p;
            j->steps = 1 + r % 32;
            kv_pool_run(p, steps_work, j);
            assert_int_equal(atomic_load(&j->bad), 0);
            free(j);
        }
        kv_pool_free(p);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_runs_every_share), cmocka_unit_test(test_barrier)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
