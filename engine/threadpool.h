/* threadpool.h - a small fixed pool of worker threads for the decode path.
 *
 * kv_pool_run(pool, fn, arg) calls fn(arg, i, n) once for each thread index
 * i in [0, n) (the caller is thread 0) and returns when all have finished.
 * Workers spin briefly between jobs (a decode step issues hundreds of short
 * jobs) and then sleep on a condition variable, so an idle pool does not
 * steal cores from OpenBLAS during prefill. kv_pool_barrier synchronises
 * the threads of one job between its steps. */
#ifndef KV_THREADPOOL_H
#define KV_THREADPOOL_H

typedef struct kv_pool kv_pool;

typedef void (*kv_pool_fn)(void *arg, int ith, int nth);

/* n_threads >= 1 (1 runs everything on the caller). NULL on failure. */
kv_pool *kv_pool_new(int n_threads);
void kv_pool_free(kv_pool *p);
int kv_pool_n_threads(const kv_pool *p);
void kv_pool_run(kv_pool *p, kv_pool_fn fn, void *arg);
/* Inside a job run by kv_pool_run: returns once every thread of the pool
 * has called it (each thread must, the same number of times). Lets one job
 * do several dependent steps (a decode layer's matrix-vector products and
 * the element-wise work between them) without a hand-off per step. Writes
 * before the barrier are visible to every thread after it. */
void kv_pool_barrier(kv_pool *p);

#endif
