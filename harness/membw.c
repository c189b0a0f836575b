/* membw.c - see membw.h. */
#define _DEFAULT_SOURCE
#include "membw.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../engine/threadpool.h"
#include "clock.h"

typedef struct probe {
    const uint64_t *buf;
    size_t n;                /* words */
    volatile uint64_t sink[64];
} probe;

/* Eight independent integer sums: the compiler vectorises them, and the
 * loop is bound by the loads, not by an add chain. */
static void read_share(void *arg, int ith, int nth) {
    probe *p = arg;
    size_t a = p->n * (size_t)ith / (size_t)nth / 8 * 8, b = p->n * (size_t)(ith + 1) / (size_t)nth / 8 * 8;
    uint64_t s[8] = {0};
    for (size_t i = a; i < b; i += 8)
        for (int k = 0; k < 8; k++) s[k] += p->buf[i + k];
    p->sink[ith % 64] = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

double hx_membw_read(int threads, size_t bytes, int passes) {
    if (passes < 1) passes = 1;
    const size_t page = (size_t)2 << 20;
    bytes = (bytes + page - 1) / page * page;
    void *r = mmap(NULL, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) return -1.0;
    uint64_t *buf = (uint64_t *)(((uintptr_t)r + page - 1) / page * page);
#ifdef MADV_HUGEPAGE
    (void)madvise(buf, bytes, MADV_HUGEPAGE);
#endif
    memset(buf, 1, bytes); /* real pages, not the shared zero page */
    kv_pool *pool = kv_pool_new(threads);
    double *gbs = malloc((size_t)passes * sizeof *gbs);
    probe *p = calloc(1, sizeof *p);
    double med = -1.0;
    if (pool && gbs && p) {
        p->buf = buf;
        p->n = bytes / sizeof(uint64_t);
        kv_pool_run(pool, read_share, p); /* untimed: wakes the threads */
        for (int i = 0; i < passes; i++) {
            double t0 = now_s();
            kv_pool_run(pool, read_share, p);
            gbs[i] = (double)bytes / (now_s() - t0) / 1e9;
        }
        qsort(gbs, (size_t)passes, sizeof *gbs, cmp_double);
        med = gbs[passes / 2];
    }
    free(p);
    free(gbs);
    kv_pool_free(pool);
    munmap(r, bytes + page);
    return med;
}
