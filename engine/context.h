/* context.h - one sequence being evaluated: the KV cache, the position
 * counter, scratch buffers and timings, over a shared read-only model.
 *
 * kv_ctx_eval() runs the forward pass for n new tokens at the next
 * positions. n > 1 ("prefill") goes through OpenBLAS sgemm; n == 1
 * ("decode") through the vectorised matrix-vector kernels split across the
 * context's thread pool. Both paths give the same logits to fp32 rounding. */
#ifndef KV_CONTEXT_H
#define KV_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "kvcache.h"
#include "model.h"

typedef struct kv_ctx kv_ctx; /* opaque */

typedef struct kv_ctx_params {
    int n_threads;     /* decode threads and OpenBLAS threads; 0 = all cores */
    int32_t max_batch; /* largest n one eval call processes at once (longer
                          inputs are split into chunks of this size); 0 = 512 */
} kv_ctx_params;

kv_ctx_params kv_ctx_default_params(void);

int kv_ctx_new(const kv_model *m, const kv_ctx_params *p, kv_ctx **out);
void kv_ctx_free(kv_ctx *c);

/* Starts a new sequence: empties the cache (freeing its memory), resets the
 * position to 0 and the peak-memory counter. */
void kv_ctx_reset(kv_ctx *c);

/* Evaluates tokens[0..n) at positions pos..pos+n-1 and appends them to the
 * cache. logits: if all_logits, [n][vocab] (one row per input token); else
 * [vocab] for the last token only; may be NULL. Returns KV_OK, or KV_EINVAL
 * for a token id outside the vocabulary (message names the index), or
 * KV_ENOMEM. */
int kv_ctx_eval(kv_ctx *c, const int32_t *tokens, int32_t n, float *logits, int all_logits);

int32_t kv_ctx_pos(const kv_ctx *c); /* tokens evaluated so far */
kv_cache *kv_ctx_cache(kv_ctx *c);
const kv_model *kv_ctx_model(const kv_ctx *c);
int kv_ctx_n_threads(const kv_ctx *c);

#endif
