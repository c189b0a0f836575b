/* membw.c - see membw.h. */
#include "membw.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../engine/filemap.h"
#include "../engine/threadpool.h"

struct hx_membw {
    void *region;            /* kv_huge_alloc's reservation, and its length */
    size_t region_len;
    const uint64_t *buf;     /* 2 MB aligned, inside region */
    size_t n;                /* words */
    kv_pool *pool;
    volatile uint64_t sink[64];
};

/* Eight independent integer sums: the compiler vectorises them, and the
 * loop is bound by the loads, not by an add chain. */
static void read_share(void *arg, int ith, int nth) {
    hx_membw *p = arg;
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

hx_membw *hx_membw_new(int threads, size_t bytes) {
    hx_membw *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    uint64_t *buf = kv_huge_alloc(bytes, &m->region, &m->region_len);
    if (!buf) {
        free(m);
        return NULL;
    }
    memset(buf, 1, bytes); /* real pages, not the shared zero page */
    m->buf = buf;
    m->n = bytes / sizeof(uint64_t);
    if (!(m->pool = kv_pool_new(threads))) {
        hx_membw_free(m);
        return NULL;
    }
    return m;
}

double hx_membw_measure(hx_membw *m, int passes) {
    enum { MAX_PASSES = 64 };
    double gbs[MAX_PASSES];
    if (passes < 1) passes = 1;
    if (passes > MAX_PASSES) passes = MAX_PASSES;
    kv_pool_run(m->pool, read_share, m); /* untimed: wakes the threads */
    for (int i = 0; i < passes; i++) {
        double t0 = kv_now_s();
        kv_pool_run(m->pool, read_share, m);
        gbs[i] = (double)(m->n * sizeof(uint64_t)) / (kv_now_s() - t0) / 1e9;
    }
    qsort(gbs, (size_t)passes, sizeof *gbs, cmp_double);
    return gbs[passes / 2];
}

void hx_membw_free(hx_membw *m) {
    if (!m) return;
    kv_pool_free(m->pool);
    kv_huge_free(m->region, m->region_len);
    free(m);
}
