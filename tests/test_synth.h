/* test_synth.h - a small synthetic Llama GGUF written by a test: seeded
 * random weights, queries and keys scaled up so that attention is peaked,
 * as a trained model's is (a random small-weight model attends almost
 * uniformly, and scores then tie). Header-only, like test_util.h; include
 * it after cmocka.h. */
#ifndef KV_TEST_SYNTH_H
#define KV_TEST_SYNTH_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export.h"
#include "gguf.h"
#include "kv_error.h"
#include "policy.h"

typedef struct tu_llama_shape {
    int dim, hidden, layers, heads, kv_heads, vocab, ctx;
    uint64_t seed;
} tu_llama_shape;

static inline double tu_unit_normal(uint64_t *rng) { /* splitmix64 + Box-Muller */
    double u[2];
    for (int i = 0; i < 2; i++) {
        uint64_t z = (*rng += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        u[i] = (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
    }
    return sqrt(-2.0 * log(u[0] + 0x1.0p-54)) * cos(6.283185307179586 * u[1]);
}

static inline void tu_add_tensor(kv_gguf_writer *w, uint64_t *rng, const char *name, int64_t rows, int64_t cols,
                                 double std, double mean) {
    float *f = malloc((size_t)(rows * cols) * sizeof *f);
    assert_non_null(f);
    for (int64_t i = 0; i < rows * cols; i++) f[i] = (float)(mean + std * tu_unit_normal(rng));
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    assert_int_equal(kv_gguf_writer_add_tensor(w, name, KV_F32, rows > 1 ? 2 : 1, ne, f), KV_OK);
    free(f);
}

static inline void tu_write_llama(const char *path, const tu_llama_shape *s) {
    const int hd = s->dim / s->heads;
    kv_model_info i = {.dim = s->dim, .hidden_dim = s->hidden, .n_layers = s->layers, .n_heads = s->heads,
                       .n_kv_heads = s->kv_heads, .vocab_size = s->vocab, .ctx_len = s->ctx, .rope_base = 10000.0f,
                       .norm_eps = 1e-5f, .head_dim = hd, .n_rot = hd};
    uint64_t rng = s->seed;
    kv_gguf_writer *w = kv_gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(kv_export_llama_meta(w, &i, "kvbench-test"), KV_OK);
    const double sd = 1.0 / sqrt(s->dim);
    tu_add_tensor(w, &rng, "token_embd.weight", s->vocab, s->dim, 1.0, 0);
    tu_add_tensor(w, &rng, "output_norm.weight", 1, s->dim, 0.1, 1.0);
    char name[96];
    for (int l = 0; l < s->layers; l++) {
#define TU_NAME(x) (snprintf(name, sizeof name, "blk.%d." x ".weight", l), name)
        tu_add_tensor(w, &rng, TU_NAME("attn_norm"), 1, s->dim, 0.1, 1.0);
        tu_add_tensor(w, &rng, TU_NAME("ffn_norm"), 1, s->dim, 0.1, 1.0);
        tu_add_tensor(w, &rng, TU_NAME("attn_q"), s->dim, s->dim, 3 * sd, 0);
        tu_add_tensor(w, &rng, TU_NAME("attn_k"), (int64_t)s->kv_heads * hd, s->dim, 3 * sd, 0);
        tu_add_tensor(w, &rng, TU_NAME("attn_v"), (int64_t)s->kv_heads * hd, s->dim, sd, 0);
        tu_add_tensor(w, &rng, TU_NAME("attn_output"), s->dim, s->dim, sd, 0);
        tu_add_tensor(w, &rng, TU_NAME("ffn_gate"), s->hidden, s->dim, sd, 0);
        tu_add_tensor(w, &rng, TU_NAME("ffn_up"), s->hidden, s->dim, sd, 0);
        tu_add_tensor(w, &rng, TU_NAME("ffn_down"), s->dim, s->hidden, sd, 0);
#undef TU_NAME
    }
    assert_int_equal(kv_gguf_writer_write(w, path), KV_OK);
    kv_gguf_writer_free(w);
}

/* Policy `name` with budget `budget` and settings "k=v,k=v" (or NULL):
 * fails the test, naming them, when pol_new refuses. */
static inline kv_policy *tu_policy(const kv_model *m, const char *name, const char *budget, const char *set,
                                   uint64_t seed) {
    char buf[256] = "";
    const char *s[8];
    int n = 0;
    if (set && *set) {
        snprintf(buf, sizeof buf, "%s", set);
        for (char *t = buf; n < 8;) {
            s[n++] = t;
            char *comma = strchr(t, ',');
            if (!comma) break;
            *comma = 0;
            t = comma + 1;
        }
    }
    pol_budget b;
    assert_int_equal(pol_budget_parse(budget, &b), KV_OK);
    kv_policy *p;
    if (pol_new(name, s, n, &b, seed, kv_model_get_info(m), &p)) fail_msg("%s %s: %s", name, set ? set : "", kv_last_error());
    return p;
}

#endif
