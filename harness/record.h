/* record.h - records what a KV policy saw and kept, layer by layer, so an
 * independent implementation (tests/reference/policies_ref.py) can replay
 * the same attention statistics and must keep the same tokens.
 *
 * File: "KVRC", int32 version 3, int32 limit, int32 n_prompt, int64 seed,
 * int32 n_layers, int32 layer_limit[n_layers], int32 name length, name
 * bytes, int32 n_params, float64 params; then one event per layer call:
 * int32 layer, n_heads, n_kv_heads, n_new, pos0, stride, needs (what this
 * call computed); per KV head int32 len and int32 pos[len] (before the
 * policy ran); float32 last_row[n_heads][stride] when needs & 1; float32
 * colsum[n_heads][stride] when needs & 2; when needs & 4, per KV head
 * int32 len and int32 pos[len] (the keys the rows cover: as the attention
 * saw them, before a window layer's trim) and float32
 * logits[n_heads][n_new][stride] (each query's raw row as the policy's
 * reducer saw it, -inf where masked or past a shorter head); int32 win_pos0, win_n and
 * float32 window[n_heads][win_n][stride] when needs & 8; float32
 * dcolsum[n_heads][stride] when needs & 16 (the decayed column sums); per
 * KV head int32 len and int32 pos[len] (after). The recording hook passes
 * the policy's decay and split on to the engine. */
#ifndef HX_RECORD_H
#define HX_RECORD_H

#include <stdio.h>

#include "../policies/policy.h"

typedef struct hx_recorder {
    FILE *f;
    kv_policy *p;
    kv_ctx_hook inner;   /* the policy's hook (pol_hook), which the recording hook calls through */
    kv_ctx *ctx;
    int failed;
    float *logits;       /* this layer call's raw rows [n_heads][n_new][stride] (KV_NEED_LOGITS) */
    size_t logits_cap;
    int32_t lg_pos0, lg_n, lg_stride;
    int32_t *lg_keys;    /* [n_kv_heads][lg_stride + 1]: len, then the positions the rows cover */
    size_t lg_keys_cap;
} hx_recorder;

/* Opens path, writes the header and installs the recording hook on ctx in
 * place of pol_attach. Returns 0 or prints an error and returns -1. */
int hx_record_attach(hx_recorder *r, const char *path, kv_policy *p, kv_ctx *ctx);
/* Closes the file; -1 (message printed) if any write failed. */
int hx_record_close(hx_recorder *r);

#endif
