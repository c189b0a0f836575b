/* driver.h - the one engine driver every command runs the model through:
 * tokenizing into a growing buffer, the prompt (through a policy) and the
 * decode loop with its stop conditions, the streaming NLL loop, and
 * fidelity's teacher-forced lockstep against the full cache.
 *
 * `kvbench run`, `generate` and `perplexity --stream` all call these, so a
 * number one command prints is the number another stores. */
#ifndef HX_DRIVER_H
#define HX_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#include "../engine/context.h"
#include "../engine/model.h"
#include "../engine/sampler.h"
#include "../engine/tokenizer.h"
#include "../metrics/kld.h"
#include "../policies/policy.h"

/* A tokenizer with a buffer it encodes into, grown as needed. */
typedef struct hx_tokbuf {
    const kv_tokenizer *tok;
    int32_t *buf;
    size_t cap;
} hx_tokbuf;

/* Encodes text into tb->buf; returns the token count or < 0 (kv_status). */
int64_t hx_tokbuf_encode(hx_tokbuf *tb, const char *text, size_t len, int bos);
/* The token count of text without BOS (the datasets' count callback; tb is an hx_tokbuf). */
int64_t hx_tokbuf_count(void *tb, const char *text, size_t len);

/* What the driver needs of a loaded model: one sequence, the logits, the
 * tokens generation ends at. The model is the caller's. */
typedef struct hx_engine {
    kv_model *model;
    const kv_model_info *mi;
    const kv_tokenizer *tok;
    kv_ctx *ctx;
    kv_ctx *ref_ctx;  /* a full cache run in lockstep (attention mass lost); made when first needed */
    int threads;
    kv_cache_type kv_type; /* every context's cache storage (f32, f16, q8_0) */
    float *logits;    /* [vocab] */
    int32_t end_ids[16]; /* the tokens generation stops at (besides BOS) */
    int n_end;
    int share;        /* fidelity: reuse passes that every policy of a sample repeats (run --no-share: 0) */
    struct hx_ref_snap *ref_snap; /* the full cache right after a sample's prompt, for fidelity's lockstep */
    kv_ctx *pass_ctx; /* one prompt pass read for several policies (hx_drv_prompt_pass); made when first needed */
} hx_engine;

/* A context, the logits and the model's end tokens (kv_tokenizer_end_tokens)
 * for model; on failure what was made is freed by hx_engine_close. Every
 * context the driver makes (forks, the full-cache reference of fidelity)
 * stores its cache as kv_type, so fidelity measures what the policy loses
 * with that storage. */
int hx_engine_open(hx_engine *en, kv_model *model, int threads, kv_cache_type kv_type);
/* Frees what hx_engine_open and the driver made; not the model. */
void hx_engine_close(hx_engine *en);

/* What one generation produced and measured. */
typedef struct hx_gen_result {
    int32_t *tokens; /* [n] generated ids */
    int n;
    char *text;      /* decoded */
    size_t text_len, text_cap;
    float *logits;   /* [n][vocab] when kept (the full cache's reference) */
    met_kld_base *base; /* [n] each kept row's normalizer and top (fidelity's base, once) */
    double *base_p;     /* [n][vocab] their probabilities, when at most HX_BASE_P_MAX bytes, else NULL */
    double prefill_ms, ttft_ms, decode_ms;
    double *step_ms; /* [n] per decode step */
    int32_t slots_max;
    char stop[48];      /* why generation stopped: "end <token>", "newline", "stop token", "max_new_tokens" */
    int context_reused; /* the compressed context was a sample's before (question after compression) */
    int prompt_shared;  /* the prompt pass served this many policies (hx_prompt_pass), or 0: its own */
    int over_budget;    /* some head held more than the policy may hold */
    size_t bytes_peak, bytes_final;
    size_t bytes_prompt_peak;  /* the most held while the prompt was read (before compression, when whole) */
    size_t bytes_steady_peak;  /* the most held from the compressed prompt on, through decoding */
    int32_t *trace_pos; /* KV bytes held after the prompt and after each step */
    double *trace_bytes;
    int n_trace, trace_cap;
} hx_gen_result;

void hx_gen_free(hx_gen_result *g);

/* A compressed context kept for the samples after it that share it
 * (question = after_compression, several questions on one context: the
 * context is read and compressed once, as kvpress does), or a policy's
 * state right after a prompt (fidelity resumes from there). */
typedef struct hx_ctx_snap {
    kv_ctx *ctx;    /* the sequence right after the context's compression */
    kv_policy *pol; /* the policy's state then (pol_clone) */
    uint64_t key;   /* a hash of the context's tokens (0: nothing kept) */
    float *logits;  /* the next-token logits then (the post-prompt snapshot of fidelity), or NULL */
} hx_ctx_snap;

void hx_snap_free(hx_ctx_snap *s);

/* One prompt pass read for several policies of a sample (pol_fanout):
 * each member's compressed cache and the peak its own pass would have
 * held, kept until its generation takes them (hx_gen_params.pass). The
 * members are the caller's instances, left in their state after the
 * prompt; nothing else may use them before their generation. */
typedef struct hx_prompt_pass {
    int n;
    kv_policy **pol;   /* [n] */
    kv_cache **cache;  /* [n] (NULL once taken) */
    float *logits;     /* [vocab] the next-token logits after the prompt */
    uint64_t key;      /* the prompt's tokens, hashed */
    int32_t n_ctx;     /* the tokens read (a question after compression comes later) */
    double seconds;    /* the pass's wall time, shared by its members' time to first token */
} hx_prompt_pass;

/* Reads prompt[0..n_ctx) once for the n policies (pairwise
 * pol_share_compatible; each begun here with pol_begin) on en->pass_ctx.
 * On failure nothing is kept (hx_prompt_pass_free is still safe). */
int hx_drv_prompt_pass(hx_engine *en, kv_policy *const *pols, int n, const int32_t *prompt, int32_t n_ctx,
                       hx_prompt_pass *out);
void hx_prompt_pass_free(hx_prompt_pass *pp);
/* Whether a generation with this snap (question after compression) resumes
 * from it rather than reading the prompt: then it has no prompt pass. */
int hx_drv_snap_holds(const hx_ctx_snap *snap, const int32_t *prompt, int32_t n_prompt, int32_t q_split);
/* The tokens a prompt pass reads: the context before a question asked
 * after compression, else the whole prompt. */
int32_t hx_drv_pass_tokens(int32_t n_prompt, int32_t q_split);

/* Fidelity done during a policy's generation while its tokens are the
 * full cache's: those steps are the teacher-forced run's own, so their
 * statistics come from the generation, and hx_drv_fidelity resumes where
 * the tokens part (see hx_fid_online_new). */
typedef struct hx_fid_online hx_fid_online;

/* How to generate. Zero is greedy, no extra stops, nothing kept. */
typedef struct hx_gen_params {
    int max_new;         /* tokens at most */
    int32_t q_split;     /* > 0: the first q_split prompt tokens are compressed, the rest read after */
    int stop_newline;    /* stop before a piece with a newline (not the first) */
    int32_t stop_id;     /* >= 0: one more end token, kept (LongBench's samsum); -1 none */
    int keep_logits;     /* store every step's distribution (the full-cache reference) */
    kv_sampler *sampler; /* NULL: greedy (argmax) */
    hx_ctx_snap *snap;   /* question after compression: the last context compressed, or NULL */
    hx_ctx_snap *after;  /* gets the state right after the prompt (for fidelity), or NULL; with
                            fid, the state where the tokens part from fid's reference */
    hx_fid_online *fid;  /* fidelity during the generation, or NULL */
    hx_prompt_pass *pass; /* the sample's shared prompt pass, or NULL: the policy resumes from it if a member */
    /* each generated piece as it comes (generate's streaming), or NULL */
    void (*on_piece)(void *user, const char *piece, size_t len);
    void *user;
} hx_gen_params;

/* Reads the prompt through pol, then generates up to p->max_new tokens,
 * stopping at BOS, an end token (en->end_ids), a newline or stop_id when
 * asked. g is zeroed first; free it with hx_gen_free. */
int hx_drv_generate(hx_engine *en, kv_policy *pol, const int32_t *prompt, int32_t n_prompt, const hx_gen_params *p,
                    hx_gen_result *g);

/* Fidelity's full-cache rows (the attention mass lost) recorded from the
 * reference's own run instead of a second full-cache pass: begin with the
 * full-cache policy before its prompt is read (alone or in a shared pass),
 * then its hx_drv_generate records the prompt's layer calls and each
 * step's; end after it (ref: its result, or NULL when it failed). The
 * recording serves every policy of the sample whose run reads the same
 * prompt and continuation; without en->share, or with a prompt read in two
 * parts (question after compression), nothing is recorded and fidelity
 * runs the full cache in lockstep. begin returns KV_OK or KV_ENOMEM; end
 * may be called more than once. */
int hx_drv_ref_record_begin(hx_engine *en, kv_policy *full, const int32_t *prompt, int32_t n_prompt,
                            int32_t q_split);
void hx_drv_ref_record_end(hx_engine *en, kv_policy *full, const hx_gen_result *ref);

/* Fidelity's figures of one policy against the full cache's run ref. */
typedef struct hx_fid_result {
    double kl_mean, top1, mass_lost;
} hx_fid_result;

/* Teacher-forced drift from the full cache: the policy reads the prompt
 * and then ref's tokens; each step's distribution against ref's (into
 * kld), and the attention mass a full cache in lockstep puts on tokens the
 * policy dropped. after: the policy's state after the prompt, kept by its
 * generation (or NULL); snap as for hx_drv_generate. fo (or NULL): the
 * steps its generation did (then after is the state where it left ref). */
int hx_drv_fidelity(hx_engine *en, kv_policy *pol, const int32_t *prompt, int32_t n_prompt, int32_t q_split,
                    hx_ctx_snap *snap, const hx_ctx_snap *after, hx_fid_online *fo, const hx_gen_result *ref,
                    met_kld *kld, hx_fid_result *out);

/* Fidelity during the generation of a policy for prompt, whose full-cache
 * reference is ref, its statistics into kld: NULL (nothing to do then)
 * unless the full cache's rows for this prompt and continuation are
 * recorded (another policy of the sample ran its fidelity first), or out
 * of memory. Same figures as without it, bit for bit. */
hx_fid_online *hx_fid_online_new(hx_engine *en, const int32_t *prompt, int32_t n_prompt, const hx_gen_result *ref,
                                 met_kld *kld);
void hx_fid_online_free(hx_fid_online *fo);

/* Streaming NLL: ids[0..n) through one cache that pol keeps within its
 * budget, `chunk` tokens per evaluation (1: a token at a time); every
 * token but the first scored. on_nll (may be NULL) gets each scored
 * token's position (1..n-1) and NLL in order. g (may be NULL) gets the
 * budget check, a KV trace every `every` positions and the final bytes. */
typedef struct hx_nll_params {
    int chunk, every;
    void (*on_nll)(void *user, int32_t pos, double nll);
    void *user;
} hx_nll_params;

int hx_drv_stream_nll(hx_engine *en, kv_policy *pol, const int32_t *ids, int32_t n, const hx_nll_params *p,
                      double *nll_mean, double *seconds, hx_gen_result *g);

#endif
