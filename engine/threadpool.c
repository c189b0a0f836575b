/* threadpool.c - see threadpool.h.
 *
 * A job is published by bumping `generation`; each worker runs its share
 * and increments `done`; the caller runs share 0 and waits for done to
 * reach n-1. Workers spin on the generation for a while (a decode step
 * issues jobs back to back, microseconds apart) and then sleep on a
 * condition variable, so an idle pool costs no CPU. */
#define _POSIX_C_SOURCE 200809L
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define kv_cpu_relax() _mm_pause()
#else
#define kv_cpu_relax() ((void)0)
#endif

/* Pause iterations a worker spins before sleeping (about 100 µs): long enough
 * to bridge the gaps between a decode step's jobs, short enough not to
 * steal a core from OpenBLAS during prefill. */
#define KV_POOL_SPIN 4000

/* Pause iterations (about 25 ns each here: some 50 µs) a thread waiting
 * for the others of the same job (the caller for the workers' shares,
 * kv_pool_barrier) spins before it yields the core once and spins again:
 * the others are running, but with more threads than cores, or on a loaded
 * machine, one may have been preempted, and pure spinning would keep it
 * off the core for a whole time slice. */
#define KV_POOL_YIELD 2000

static inline void kv_wait_step(int *spins) {
    if (++*spins < KV_POOL_YIELD) {
        kv_cpu_relax();
    } else {
        sched_yield();
        *spins = 0;
    }
}

typedef struct kv_worker {
    kv_pool *pool;
    int ith;
    pthread_t thread;
} kv_worker;

struct kv_pool {
    int n;
    kv_worker *workers;     /* [n-1] */
    _Atomic unsigned generation;
    _Atomic int done;
    _Atomic int stop;
    _Atomic int sleepers;
    _Atomic int bar_count;  /* kv_pool_barrier: threads arrived at the current one */
    _Atomic unsigned bar_phase;
    kv_pool_fn fn;          /* written before generation is released */
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void *worker_main(void *p) {
    kv_worker *w = p;
    kv_pool *pool = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&pool->stop, memory_order_acquire)) {
            if (++spins < KV_POOL_SPIN) {
                kv_cpu_relax();
                continue;
            }
            pthread_mutex_lock(&pool->mu);
            atomic_fetch_add(&pool->sleepers, 1);
            while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cv, &pool->mu);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mu);
            spins = 0;
        }
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) return NULL;
        seen = g;
        pool->fn(pool->arg, w->ith, pool->n);
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
    }
}

kv_pool *kv_pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    kv_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            kv_pool_free(p);
            return NULL;
        }
        for (int i = 1; i < n_threads; i++) {
            kv_worker *w = &p->workers[i - 1];
            w->pool = p;
            w->ith = i;
            if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
                p->n = i; /* only the threads started so far */
                kv_pool_free(p);
                return NULL;
            }
        }
    }
    return p;
}

void kv_pool_free(kv_pool *p) {
    if (!p) return;
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stop, 1);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n; i++) pthread_join(p->workers[i - 1].thread, NULL);
        free(p->workers);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int kv_pool_n_threads(const kv_pool *p) { return p->n; }

void kv_pool_run(kv_pool *p, kv_pool_fn fn, void *arg) {
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: ordered before the sleepers check */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0, p->n);
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < p->n - 1) kv_wait_step(&spins);
}

/* Sense-reversing: the last thread to arrive resets the count and then
 * advances the phase (release), which the others wait for (acquire); a
 * thread that leaves and reaches the next barrier sees the count reset. */
void kv_pool_barrier(kv_pool *p) {
    if (p->n == 1) return;
    unsigned phase = atomic_load_explicit(&p->bar_phase, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == p->n - 1) {
        atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
        atomic_store_explicit(&p->bar_phase, phase + 1, memory_order_release);
        return;
    }
    int spins = 0;
    while (atomic_load_explicit(&p->bar_phase, memory_order_acquire) == phase) kv_wait_step(&spins);
}
