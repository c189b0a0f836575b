/* bench_matvec.c - the decode kernels alone: the matrix-vector products of
 * one decoded token of a 110M-parameter Llama (dim 768, hidden 2048, 12
 * layers, vocab 32000), per weight type and ISA, on 1 and 2 threads.
 * Prints GB/s of weights streamed (best and median rep: memory bandwidth
 * here drifts from run to run) and the tokens/s the best implies.
 * usage: bench_matvec [reps [type...]]   (build/bench_matvec after a build;
 * types among f32 f16 q8_0 q4_0 q2_k q3_k q4_k q5_k q6_k, default all) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../engine/kernels.h"
#include "../engine/quant.h"
#include "../engine/threadpool.h"

enum { DIM = 768, HID = 2048, LAYERS = 12, VOCAB = 32000 };

typedef struct job { const kv_tensor *W; const float *x; float *y; } job;

static void worker(void *arg, int ith, int nth) {
    const job *j = arg;
    int64_t r0 = j->W->rows * ith / nth, r1 = j->W->rows * (ith + 1) / nth;
    kv_matvec_rows(j->W, j->x, j->y, r0, r1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    if (reps < 1) reps = 1;
    /* per layer: q, k, v, o [768x768], gate, up [2048x768], down [768x2048]; then the classifier */
    const int64_t shapes[8][2] = {{DIM, DIM}, {DIM, DIM}, {DIM, DIM}, {DIM, DIM}, {HID, DIM}, {HID, DIM}, {DIM, HID}, {VOCAB, DIM}};
    const kv_dtype types[9] = {KV_F32, KV_F16, KV_Q8_0, KV_Q4_0, KV_Q2_K, KV_Q3_K, KV_Q4_K, KV_Q5_K, KV_Q6_K};
    float *src = malloc((size_t)VOCAB * DIM * sizeof(float)), *x = malloc(HID * sizeof(float)),
          *y = malloc((size_t)VOCAB * sizeof(float));
    srand(1);
    for (int64_t i = 0; i < (int64_t)VOCAB * DIM; i++) src[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < HID; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    const kv_isa best = kv_kernels_isa(); /* the best this CPU has (or KVBENCH_ISA's) */
    double *dt = malloc((size_t)reps * sizeof *dt);
    printf("%-6s %-7s %-7s %10s %10s %10s\n", "type", "isa", "threads", "GB/s", "median", "tok/s");
    for (int ti = 0; ti < 9; ti++) {
        kv_dtype t = types[ti];
        int wanted = argc <= 2;
        for (int a = 2; a < argc; a++) wanted |= !strcmp(argv[a], kv_dtype_name(t));
        if (!wanted) continue;
        int n_w = LAYERS * 7 + 1;
        kv_tensor *W = calloc((size_t)n_w, sizeof *W);
        size_t bytes = 0;
        for (int i = 0; i < n_w; i++) {
            const int64_t *s = i == n_w - 1 ? shapes[7] : shapes[i % 7];
            size_t nb = kv_dtype_bytes(t, s[0] * s[1]);
            void *d = malloc(nb);
            kv_quantize(t, src, d, s[0] * s[1]);
            W[i] = (kv_tensor){.type = t, .rows = s[0], .cols = s[1], .data = d};
            bytes += nb;
        }
        for (int isa = (int)best; isa >= 0; isa--) {
            if (kv_kernels_set_isa((kv_isa)isa)) continue;
            for (int nth = 1; nth <= 2; nth++) {
                kv_pool *pool = kv_pool_new(nth);
                for (int r = 0; r < reps; r++) {
                    double t0 = kv_now_s();
                    for (int i = 0; i < n_w; i++) {
                        job j = {&W[i], x, y};
                        kv_pool_run(pool, worker, &j);
                    }
                    dt[r] = kv_now_s() - t0;
                }
                qsort(dt, (size_t)reps, sizeof *dt, cmp_double);
                printf("%-6s %-7s %-7d %10.1f %10.1f %10.1f\n", kv_dtype_name(t), kv_isa_name((kv_isa)isa), nth,
                       bytes / dt[0] / 1e9, bytes / dt[reps / 2] / 1e9, 1.0 / dt[0]);
                kv_pool_free(pool);
            }
        }
        kv_kernels_set_isa(best);
        for (int i = 0; i < n_w; i++) free((void *)W[i].data);
        free(W);
    }
    free(dt);
    free(src);
    free(x);
    free(y);
    return 0;
}
