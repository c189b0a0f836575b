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

/* Attention statistics the engine computes only when a hook asks for them
 * (a KV policy that asks for nothing costs nothing). Each is reduced while
 * the attention runs: none holds more than one row per query head, except
 * KV_NEED_WINDOW (`window` rows per query head) - never an n x n matrix. */
enum kv_attn_need {
    KV_NEED_LAST_ROW = 1u << 0, /* softmax row of the newest query, per query head */
    KV_NEED_COLSUM = 1u << 1,   /* per key, the sum of the softmax rows of this call's queries */
    KV_NEED_LOGITS = 1u << 2,   /* each query's raw (pre-softmax) logit row is handed to the hook's
                                   reduce_row, which adds what it makes of it into `reduced` */
    KV_NEED_WINDOW = 1u << 3,   /* softmax rows of the queries in an observation window of positions */
    KV_NEED_DECAYED_COLSUM = 1u << 4, /* per key, sum over this call's n queries t = 0..n-1 of
                                         decay^(n-1-t) x the softmax row of query t (the newest
                                         weighted 1; kv_ctx_hook.decay): an exponentially
                                         weighted column sum (Cascading KV cache's EMA) */
};

/* One query's raw attention logits, handed to kv_ctx_hook.reduce_row
 * (KV_NEED_LOGITS) before the softmax. */
typedef struct kv_logit_row {
    int layer, head;      /* query head */
    int32_t qpos;         /* the query's position */
    int32_t len;          /* slots of its KV head */
    const float *x;       /* [len] q.k / sqrt(head_dim) (the keys as attention read them),
                             plus the ALiBi bias for ALiBi models (exactly what the softmax
                             sees); -INFINITY where the causal mask hides the key */
    const int32_t *kpos;  /* [len] each slot's true position */
    double *acc;          /* [len] the reducer adds into it (the engine sums these into `reduced`) */
    double *tmp;          /* [len] scratch, the reducer's own while it runs */
} kv_logit_row;

/* What one layer's attention saw, handed to the hook right after it. Rows
 * are per query head h and cover the slots [0, len) of KV head
 * h / (n_heads / n_kv_heads) as they were during the attention (the new
 * tokens already appended); entries past a shorter head's length are 0.
 * Row h starts at h * stride. NULL when not computed in this call. */
typedef struct kv_attn_view {
    int layer;
    int n_heads, n_kv_heads;
    int32_t n_new;          /* queries in this call (1 when decoding) */
    int32_t pos0;           /* position of the first of them */
    int32_t stride;         /* floats between rows */
    unsigned needs;         /* the statistics this call computed (see kv_attn_plan) */
    const float *last_row;  /* [n_heads][stride] */
    const float *colsum;    /* [n_heads][stride] */
    /* KV_NEED_LOGITS: per key, the sum over this call's queries of what
     * reduce_row added (rows are reduced in fixed blocks and the blocks
     * summed in order, so the result does not depend on the thread count) */
    const double *reduced;  /* [n_heads][stride] */
    /* KV_NEED_WINDOW: the softmax rows of the queries at positions
     * win_pos0 .. win_pos0 + win_n - 1 (all within this call) */
    int32_t win_pos0, win_n;
    const float *window;    /* [n_heads][win_n][stride] */
    const float *dcolsum;   /* [n_heads][stride] KV_NEED_DECAYED_COLSUM */
} kv_attn_view;

/* Asked of the hook (kv_ctx_hook.plan) before each layer's attention: which
 * statistics this call needs. Lets a policy ask only when it will use them
 * (SnapKV: the observation-window rows of the prompt, nothing in decode). */
typedef struct kv_attn_plan {
    int layer;
    int32_t pos0, n_new;     /* this call's queries */
    unsigned needs;          /* in: the hook's needs; out: this call's (other bits are ignored) */
    int32_t win_pos0, win_n; /* KV_NEED_WINDOW, in: the call's last `window` queries; out: the
                                positions whose rows to deliver (clipped to the call) */
} kv_attn_plan;

/* Which positions rotary embeddings use (METHODS.md section 0):
 * ORIGINAL - keys are rotated at their true position when stored, queries
 *            at theirs (what most methods do);
 * CACHE    - keys are stored un-rotated and, at every attention, rotated by
 *            their index in the cache (0..len-1, in position order); the
 *            newest query sits at the index of its own slot. This is
 *            StreamingLLM's "pos shift": it lets a model run past its trained
 *            context. Slot order must follow position order (policies using
 *            it evict with kv_cache_keep).
 * REROTATE - keys are stored rotated at their index in the cache and, after
 *            every eviction, each kept key whose index changed is rotated by
 *            R(new index - old index), so the held keys always sit at
 *            0..len-1 (kvpress KeyRerotationPress, Hugging Face SinkCache);
 *            queries at the index of their own slot, new keys at theirs.
 *            The same positions as CACHE, reached incrementally: keys are
 *            rotated once plus once per move instead of at every attention
 *            (and carry the rounding of the repeated rotations). While
 *            nothing is evicted, index = position: identical to ORIGINAL.
 * ALiBi models (MPT) rotate nothing: ORIGINAL biases each logit by
 * -slope_h * (query position - key position) (Keyformer's "Org Pos"); CACHE
 * and REROTATE both use in-cache indices - the key's rank by position in its
 * head, the query's own slot (Keyformer's "New Pos"). The causal mask always
 * compares true positions. */
typedef enum kv_pos_mode { KV_POS_ORIGINAL = 0, KV_POS_CACHE = 1, KV_POS_REROTATE = 2 } kv_pos_mode;

/* "original", "cache", "rerotate"; and back (-1 for an unknown name). */
const char *kv_pos_mode_name(kv_pos_mode m);
int kv_pos_mode_parse(const char *s);

/* Called after each layer's attention, before the next layer runs: the
 * place where a KV policy scores and evicts. A non-zero return aborts the
 * evaluation with that code. */
typedef struct kv_ctx_hook {
    void *user;
    unsigned needs; /* kv_attn_need bits */
    kv_pos_mode positions;
    int32_t window; /* KV_NEED_WINDOW: the last `window` queries of each call, unless plan says otherwise */
    double decay;   /* KV_NEED_DECAYED_COLSUM: the weight of a query relative to the next one's */
    int (*on_layer)(void *user, kv_cache *cache, const kv_attn_view *view);
    /* Optional: narrows `needs` and places the window for one layer's call. */
    void (*plan)(void *user, kv_attn_plan *plan);
    /* KV_NEED_LOGITS: called once per (query head, query row), from the
     * context's pool threads, concurrently for different rows; it must only
     * write row->acc and row->tmp. */
    void (*reduce_row)(void *user, const kv_logit_row *row);
    /* Optional: of the next n tokens of a kv_ctx_eval call, starting at
     * position pos0, how many one forward may process (1..n; the engine
     * also splits at max_batch). Lets a policy that evicts after chunks of
     * positions (Cascading's strided prefill) see its chunks' boundaries. */
    int32_t (*split)(void *user, int32_t pos0, int32_t n);
    /* Sliding-window layers hold only what a later query can see: after a
     * window layer's attention, before on_layer, the engine frees each KV
     * head's slots at positions below min_pos (the oldest position the next
     * query attends to), calling on_trim just before, with the kept slots'
     * old indices keep[0..n_keep) (increasing), so a hook that keeps
     * per-slot state can move it alongside; the view's rows are already
     * compacted the same way.
     * A hook with on_layer but no on_trim is never trimmed for: its method
     * may index state by slot. Trimming needs positions=original and no
     * layout (cache positions would renumber); it changes no logits. */
    int (*on_trim)(void *user, int layer, int kv_head, const int32_t *keep, int32_t n_keep, int32_t min_pos);
} kv_ctx_hook;

/* The statistics hook hk asks of layer `layer`'s attention over the
 * queries pos0 .. pos0 + n - 1: its needs narrowed by its plan (called
 * here, once), LOGITS only with a reducer, the window clipped to the call
 * (win_n 0 and no KV_NEED_WINDOW when it falls outside). What kv_ctx_eval
 * computes for the hook; a hook serving several policies (pol_fanout)
 * asks it of each one's own hook. */
kv_attn_plan kv_hook_plan(const kv_ctx_hook *hk, int layer, int32_t pos0, int32_t n);

typedef struct kv_ctx_params {
    int n_threads;     /* decode threads and OpenBLAS threads; 0 = kv_default_threads */
    int32_t max_batch; /* largest n one eval call processes at once (longer
                          inputs are split into chunks of this size); 0 = 512 */
    kv_cache_type kv_type; /* the cache's storage type (kvcache.h); 0 = f32 */
    int swa_keep;      /* 1: sliding-window layers keep the slots their window no longer
                          sees (as before 2026-12; for checking that freeing them changes
                          nothing); 0 = free them (kv_ctx_hook.on_trim) */
} kv_ctx_params;

kv_ctx_params kv_ctx_default_params(void);

/* The thread count a context of m takes when none is asked for: all cores,
 * but one for a model whose decode reads under KV_SMALL_MODEL_BYTES of
 * weights per token. Such a model's jobs take microseconds, and handing
 * each to another thread costs more than the thread gives (stories260K's
 * quickstart sweep runs 1.3x faster on one thread of two idle cores, and
 * 3x faster when other work shares the cores); the results are the same
 * whatever the count. */
#define KV_SMALL_MODEL_BYTES ((size_t)8 << 20)
int kv_default_threads(const kv_model *m);

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

/* Explicit positions and visibility for one kv_ctx_eval_ext call: what a
 * method that changes the attention pattern itself needs (sentinel-token
 * compression: a sentinel reuses the position of the token before it and
 * sees only what the method lets it see). Every field may be NULL. */
typedef struct kv_eval_layout {
    const int32_t *pos;         /* [n] each token's position (non-decreasing, >= 0), stored
                                   with its slot; NULL: the next n positions */
    const uint8_t *sees_cached; /* [n] 1 if query t sees the slots held before this call;
                                   NULL: every query does */
    const uint8_t *sees;        /* [n][n] row t: 1 where query t sees this call's token j
                                   (only j <= t is read; a query always sees itself);
                                   NULL: causal */
} kv_eval_layout;

/* kv_ctx_eval with a layout (NULL: exactly kv_ctx_eval). With a mask or
 * positions the call is one forward: n <= max_batch, positions mode
 * ORIGINAL, and a hook that asks for no statistics and no splits
 * (statistics assume consecutive positions); else KV_EINVAL naming what.
 * Afterwards the next position is pos[n-1] + 1. */
int kv_ctx_eval_ext(kv_ctx *c, const int32_t *tokens, int32_t n, const kv_eval_layout *layout, float *logits,
                    int all_logits);

/* Forks a sequence: dst (a context on the same model; its thread count and
 * max_batch may differ) takes src's sequence state, sharing no memory with
 * it: every cache head's slots (k, v, positions, in order, in memory laid
 * out as src's: kv_cache_copy, so kv_cache_bytes and the peak counter
 * continue as src's would), the next position, and the position mode's
 * records (positions=rerotate: what each head's keys are rotated to;
 * positions=cache keeps none between calls). Whatever dst held is freed
 * first. dst's hook is left as it was: the caller attaches the fork's own
 * policy (pol_clone, pol_attach). Thread count never changes results, so
 * src and dst continued with the same calls and policies give
 * bit-identical logits and kept slots (with another max_batch too, while
 * no call is longer than either's: a policy may evict between the
 * engine's chunks once the prompt is read). One prefill, one compression, many
 * continuations: read a shared context once, fork per question.
 * KV_EINVAL when dst is src or runs another model, KV_ENOMEM; on failure
 * dst is left reset (empty, position 0). */
int kv_ctx_fork(const kv_ctx *src, kv_ctx *dst);

/* kv_ctx_fork with another cache: dst continues src's sequence (its
 * position and the rotation records of positions=rerotate) holding a copy
 * of `cache` (same shape and type as src's). For one prompt read for several
 * policies (pol_fanout), each of which compressed its own copy of src's
 * cache: dst then is what that policy's own prompt pass would have left.
 * Errors as kv_ctx_fork's, and KV_EINVAL for a cache of another shape. */
int kv_ctx_fork_cache(const kv_ctx *src, const kv_cache *cache, kv_ctx *dst);

/* Installs (or with NULL removes) the per-layer hook; copied. */
void kv_ctx_set_hook(kv_ctx *c, const kv_ctx_hook *hook);

int32_t kv_ctx_pos(const kv_ctx *c); /* tokens evaluated so far */
kv_cache *kv_ctx_cache(kv_ctx *c);
const kv_model *kv_ctx_model(const kv_ctx *c);
int kv_ctx_n_threads(const kv_ctx *c);

#endif
