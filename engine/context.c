/* context.c - the forward pass over a kv_ctx: Llama (RMSNorm, rotary,
 * SwiGLU) and MPT (LayerNorm, ALiBi, GELU), one code path branching on the
 * architecture where they differ.
 *
 * Shapes: n = tokens in this call (<= max_batch), dim = model width,
 * qd = n_heads*head_dim, kvd = n_kv_heads*head_dim, hid = MLP width.
 * Layout of every activation buffer is [n][width], row-major. */
#define _POSIX_C_SOURCE 200809L
#include "context.h"
#include "model_impl.h" /* the forward pass reads the weights */

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_error.h"
#include "quant.h"
#include "threadpool.h"

/* Rows of a non-f32 weight dequantized at once for sgemm in prefill:
 * bounded so the scratch stays a few MB whatever the vocabulary. */
#define KV_MM_BLOCK 128 /* weight rows per sgemm call in prefill (mm_worker) */
/* Query rows per block of prefill attention: a block's products stop at
 * the last key its last row sees, so the causal upper triangle (half the
 * score matrix for a whole prompt) is never computed. */
#define KV_ATTN_ROWS 64

/* KV_POS_REROTATE: what a head's keys were rotated to: the positions of its
 * slots in index order as of the last synchronisation (the key at index i
 * was rotated to i). Kept per (layer, KV head) across calls because a
 * policy may evict from any layer in any layer's hook (ZigZagKV cuts every
 * layer at the last). */
typedef struct rr_head { int32_t *pos, len, cap; } rr_head;

/* The rotary frequencies of one kind of layer (global, or sliding-window
 * where the architecture gives those their own base: gemma3), with the
 * tables built from them. Tables hold cos and sin times mscale (YaRN's or
 * phi3's attention factor); rotations by a position difference
 * (rerotation) use unscaled angles. */
typedef struct rope_set {
    double *inv_freq; /* [n_rot/2] kv_model_rope_freqs */
    double mscale;
    float *call;      /* [B][n_rot/2][2] cos, sin for this call's positions */
    float *tab;       /* KV_POS_CACHE/REROTATE: [tab_n][n_rot] cos, sin per in-cache index */
    int32_t tab_n;
} rope_set;
static int rr_reserve(rr_head *r, int32_t n);

struct kv_ctx {
    const kv_model *m;
    const kv_model_info *mi;
    kv_cache *cache;
    kv_pool *pool;
    int n_threads;
    int32_t pos;       /* next position */
    int32_t max_batch;

    float *x;      /* [B][dim] residual stream */
    float *xb;     /* [B][dim] normalised input of a sub-block */
    float *xb2;    /* [B][dim] output of a sub-block */
    float *q;      /* [B][qd] queries */
    float *k;      /* [B][kvd] new keys */
    float *v;      /* [B][kvd] new values */
    float *att;    /* [B][qd] attention output */
    float *hb;     /* [B][hid] gate */
    float *hb2;    /* [B][hid] up */
    rope_set rs[2];   /* [0] global layers, [1] sliding-window layers with their own base */
    int n_rope_sets;  /* 1, or 2 (gemma3) */
    rope_set *cur;    /* the set of the layer being evaluated */
    float *deq;    /* [n_threads][deq_stride] KV_MM_BLOCK dequantized weight rows each (prefill) */
    float *xp;     /* prefill activations packed for kv_gemm_nt (NULL: sgemm) */
    void *q8;      /* int8 prefill: the tokens' quantized activations (kv_q8_acts_bytes), grown on demand */
    size_t q8_cap;
    size_t deq_stride;
    float *scores; /* attention scores; grown on demand */
    size_t scores_cap;
    float *ascr;   /* prefill attention on kv_gemm_nt: [n_threads][ascr_stride] a block of one
                      head's queries packed; NULL: sgemm */
    size_t ascr_stride;
    kv_ctx_hook hook;  /* on_layer NULL: none */
    int swa_keep;      /* kv_ctx_params.swa_keep: window layers keep what they no longer see */
    int32_t *trim_keep; /* [trim_cap] a head's kept slot indices while trimming a window layer */
    int32_t trim_cap;
    float *kr;         /* KV_POS_CACHE: [n_kv_heads][kr_stride][head_dim] keys rotated for this call */
    size_t kr_cap;
    int32_t kr_stride;
    /* attention statistics of the layer being evaluated (what the plan asked) */
    kv_attn_plan plan;
    float *stats;      /* last rows, column sums [n_heads][stats_stride] each, then window rows [n_heads][win_n][stats_stride] */
    size_t stats_cap;
    int32_t stats_stride;
    float *st_last, *st_colsum, *st_window; /* into stats; NULL when not asked */
    float *st_dcolsum; /* KV_NEED_DECAYED_COLSUM: into stats after the window rows */
    float *dweight;    /* [max_batch] decay^(n-1-t) of this call's queries */
    int32_t dweight_n; /* the n it holds (-1: none) */
    double dweight_decay;
    double *dstats;    /* KV_NEED_LOGITS: reduced [n_heads][stats_stride], then per-thread scratch
                          [n_pool][stats_stride], then block partials [n_blocks][stats_stride] */
    size_t dstats_cap;
    double *st_reduced, *st_tmp, *st_part;
    const kv_eval_layout *lay; /* this call's layout (kv_ctx_eval_ext), or NULL */
    rr_head *rr;       /* KV_POS_REROTATE: [n_layers][n_kv_heads] what each head's keys are rotated to */
    float *rot_cs;     /* [n_threads][n_rot] per-thread cos, sin of a rerotation */
    float *krow;       /* [n_threads][head_dim] a key row as floats (rerotating an f16 / q8_0 cache) */
    /* f16 / q8_0 caches in prefill: the layer's keys and values as floats,
     * [n_kv_heads][2][kvf_stride][head_dim] (keys, then values) */
    float *kvf;
    size_t kvf_cap;
    int32_t kvf_stride;
    /* ALiBi models (MPT) */
    float *alibi;      /* [n_heads] slopes; NULL: a rotary model */
    int32_t *alibi_idx; /* in-cache positions: [n_kv_heads][alibi_stride] each slot's index (rank by position) */
    size_t alibi_idx_cap;
    int32_t alibi_stride;
};

/* KV_NEED_LOGITS in prefill: query rows are reduced in blocks of this many,
 * each block into its own partial row, and the partials summed in block
 * order, so the sums do not depend on the number of threads. */
#define KV_REDUCE_BLOCK 8

kv_ctx_params kv_ctx_default_params(void) {
    kv_ctx_params p = {.n_threads = 0, .max_batch = 512};
    return p;
}

static void *xmalloc_floats(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }

void kv_ctx_free(kv_ctx *c) {
    if (!c) return;
    kv_cache_free(c->cache);
    kv_pool_free(c->pool);
    free(c->x); free(c->xb); free(c->xb2); free(c->q); free(c->k); free(c->v);
    free(c->att); free(c->hb); free(c->hb2); 
    for (int s = 0; s < 2; s++) { free(c->rs[s].inv_freq); free(c->rs[s].call); free(c->rs[s].tab); }
    free(c->deq); free(c->xp); free(c->q8); free(c->scores); free(c->stats); free(c->dstats); free(c->kr);
    free(c->dweight); free(c->rot_cs); free(c->krow); free(c->kvf); free(c->ascr); free(c->trim_keep);
    if (c->rr)
        for (size_t i = 0; i < (size_t)c->mi->n_layers * (size_t)c->mi->n_kv_heads; i++) free(c->rr[i].pos);
    free(c->rr);
    free(c->alibi); free(c->alibi_idx);
    free(c);
}

int kv_default_threads(const kv_model *m) {
    if (kv_model_decode_bytes(m) < KV_SMALL_MODEL_BYTES) return 1;
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 1 ? (int)n : 1;
}

int kv_ctx_new(const kv_model *m, const kv_ctx_params *p, kv_ctx **out) {
    *out = NULL;
    kv_ctx_params dp = kv_ctx_default_params();
    if (!p) p = &dp;
    kv_ctx *c = calloc(1, sizeof *c);
    if (!c) return kv_errorf(KV_ENOMEM, "out of memory");
    c->m = m;
    c->mi = kv_model_get_info(m);
    const kv_model_info *mi = c->mi;
    c->n_threads = p->n_threads > 0 ? p->n_threads : kv_default_threads(m);
    if (c->n_threads < 1) c->n_threads = 1;
    c->max_batch = p->max_batch > 0 ? p->max_batch : 512;
    c->swa_keep = p->swa_keep != 0;
    size_t B = (size_t)c->max_batch;
    size_t qd = (size_t)mi->n_heads * mi->head_dim, kvd = (size_t)mi->n_kv_heads * mi->head_dim;
    int rc = kv_cache_new(mi->n_layers, mi->n_kv_heads, mi->head_dim, p->kv_type, &c->cache);
    if (rc) goto fail;
    c->pool = kv_pool_new(c->n_threads);
    c->x = xmalloc_floats(B * mi->dim);
    c->xb = xmalloc_floats(B * mi->dim);
    c->xb2 = xmalloc_floats(B * mi->dim);
    c->q = xmalloc_floats(B * qd);
    c->k = xmalloc_floats(B * kvd);
    c->v = xmalloc_floats(B * kvd);
    c->att = xmalloc_floats(B * qd);
    c->hb = xmalloc_floats(B * mi->hidden_dim);
    c->hb2 = xmalloc_floats(B * mi->hidden_dim);
    c->n_rope_sets = mi->n_swa_layers > 0 && mi->rope_base_swa != mi->rope_base ? 2 : 1;
    if (mi->arch == KV_ARCH_GEMMA3 && mi->n_swa_layers > 0) c->n_rope_sets = 2; /* global layers alone are scaled */
    int rs_ok = 1;
    for (int s = 0; s < c->n_rope_sets; s++) {
        c->rs[s].call = xmalloc_floats(B * (size_t)mi->n_rot);
        c->rs[s].inv_freq = malloc(((size_t)mi->n_rot / 2 + 1) * sizeof(double)); /* n_rot is 0 for ALiBi */
        rs_ok = rs_ok && c->rs[s].call && c->rs[s].inv_freq;
        if (rs_ok && mi->n_rot > 0) kv_model_rope_freqs(m, s, c->rs[s].inv_freq, &c->rs[s].mscale);
    }
    c->cur = &c->rs[0];
    size_t widest = (size_t)mi->dim; /* the most columns any weight has */
    if ((size_t)mi->hidden_dim > widest) widest = (size_t)mi->hidden_dim;
    if (qd > widest) widest = qd;
    c->deq_stride = (size_t)KV_MM_BLOCK * widest;
    c->deq = xmalloc_floats((size_t)c->n_threads * c->deq_stride);
    if (kv_gemm_available()) { /* the own kernel's packed x; per thread, a block of one head's queries */
        c->ascr_stride = kv_gemm_pack_floats(KV_ATTN_ROWS, mi->head_dim);
        c->xp = xmalloc_floats(kv_gemm_pack_floats((int64_t)B, (int64_t)widest));
        c->ascr = xmalloc_floats((size_t)c->n_threads * c->ascr_stride);
        if (!c->xp || !c->ascr) {
            rc = kv_errorf(KV_ENOMEM, "out of memory allocating a context for %d tokens", c->max_batch);
            goto fail;
        }
    }
    c->dweight = xmalloc_floats(B);
    c->dweight_n = -1;
    c->rot_cs = xmalloc_floats((size_t)c->n_threads * (size_t)(mi->n_rot > 0 ? mi->n_rot : 1));
    c->krow = xmalloc_floats((size_t)c->n_threads * (size_t)mi->head_dim);
    if (!c->rot_cs || !c->krow || !c->pool || !c->x || !c->xb || !c->xb2 || !c->q || !c->k || !c->v || !c->att || !c->hb ||
        !c->hb2 || !rs_ok || !c->deq || !c->dweight) {
        rc = kv_errorf(KV_ENOMEM, "out of memory allocating a context for %d tokens", c->max_batch);
        goto fail;
    }
    if (mi->arch == KV_ARCH_MPT) { /* ALiBi slope of each query head */
        if (!(c->alibi = malloc((size_t)mi->n_heads * sizeof(float)))) {
            rc = kv_errorf(KV_ENOMEM, "out of memory");
            goto fail;
        }
        for (int h = 0; h < mi->n_heads; h++) c->alibi[h] = (float)kv_alibi_slope(mi->n_heads, mi->max_alibi_bias, h);
    }
    openblas_set_num_threads(1); /* see mm_worker */
    *out = c;
    return KV_OK;
fail:
    kv_ctx_free(c);
    return rc;
}

/* Forgets what rerotation recorded (a new sequence). */
static void rerotate_forget(kv_ctx *c) {
    if (!c->rr) return;
    for (size_t i = 0; i < (size_t)c->mi->n_layers * (size_t)c->mi->n_kv_heads; i++) c->rr[i].len = 0;
}

void kv_ctx_reset(kv_ctx *c) {
    kv_cache_clear(c->cache);
    kv_cache_reset_peak(c->cache);
    c->pos = 0;
    rerotate_forget(c);
}

/* dst's rerotation records as src's (dst has none when src has none:
 * an empty record reads as keys at their true positions, as none does). */
static int rerotate_copy(const kv_ctx *src, kv_ctx *dst) {
    const size_t n = (size_t)src->mi->n_layers * (size_t)src->mi->n_kv_heads;
    rerotate_forget(dst);
    if (!src->rr) return KV_OK;
    if (!dst->rr && !(dst->rr = calloc(n, sizeof *dst->rr)))
        return kv_errorf(KV_ENOMEM, "out of memory for rerotation records");
    for (size_t i = 0; i < n; i++) {
        const rr_head *s = &src->rr[i];
        if (rr_reserve(&dst->rr[i], s->len)) return kv_errorf(KV_ENOMEM, "out of memory for rerotation records");
        if (s->len) memcpy(dst->rr[i].pos, s->pos, (size_t)s->len * sizeof *s->pos);
        dst->rr[i].len = s->len;
    }
    return KV_OK;
}

int kv_ctx_fork(const kv_ctx *src, kv_ctx *dst) { return kv_ctx_fork_cache(src, src->cache, dst); }

int kv_ctx_fork_cache(const kv_ctx *src, const kv_cache *cache, kv_ctx *dst) {
    if (cache == dst->cache && src != dst)
        return kv_errorf(KV_EINVAL, "kv_ctx_fork_cache: the cache to copy is the destination's own");
    if (src == dst) return kv_errorf(KV_EINVAL, "kv_ctx_fork: the source and the destination are one context");
    if (src->m != dst->m)
        return kv_errorf(KV_EINVAL, "kv_ctx_fork: the destination runs another model than the source (%s)",
                         kv_model_path(src->m));
    kv_ctx_reset(dst);
    int rc = kv_cache_copy(dst->cache, cache);
    if (!rc) rc = rerotate_copy(src, dst);
    if (rc) {
        kv_ctx_reset(dst);
        return rc;
    }
    dst->pos = src->pos;
    return KV_OK;
}

void kv_ctx_set_hook(kv_ctx *c, const kv_ctx_hook *hook) {
    if (hook) c->hook = *hook;
    else memset(&c->hook, 0, sizeof c->hook);
}

static const char *const pos_mode_names[] = {"original", "cache", "rerotate"};

const char *kv_pos_mode_name(kv_pos_mode m) {
    return (unsigned)m < sizeof pos_mode_names / sizeof *pos_mode_names ? pos_mode_names[m] : "?";
}

int kv_pos_mode_parse(const char *s) {
    for (int i = 0; i < (int)(sizeof pos_mode_names / sizeof *pos_mode_names); i++)
        if (strcmp(s, pos_mode_names[i]) == 0) return i;
    return -1;
}

int32_t kv_ctx_pos(const kv_ctx *c) { return c->pos; }
kv_cache *kv_ctx_cache(kv_ctx *c) { return c->cache; }
const kv_model *kv_ctx_model(const kv_ctx *c) { return c->m; }
int kv_ctx_n_threads(const kv_ctx *c) { return c->n_threads; }

/* ------------------------------------------------------------ building blocks */

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i] */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float s = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * s * w[i];
}

/* out[i] = (x[i] - mean(x)) / sqrt(var(x) + eps) * w[i] + b[i] (LayerNorm; b may be NULL) */
static void layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
    double inv = 1.0 / sqrt(var / n + eps);
    for (int i = 0; i < n; i++) out[i] = (float)(((double)x[i] - mean) * inv) * w[i] + (b ? b[i] : 0.0f);
}

/* A block's (or the final) normalisation of one row of width dim:
 * RMSNorm for llama, LayerNorm with its optional bias for MPT. */
static void norm_row(const kv_ctx *c, float *out, const float *x, const float *w, const float *b) {
    if (c->mi->arch == KV_ARCH_MPT) layernorm(out, x, w, b, c->mi->dim, c->mi->norm_eps);
    else rmsnorm(out, x, w, c->mi->dim, c->mi->norm_eps);
}

/* llama.cpp's GELU (ggml_vec_gelu_f32 and ggml_vec_geglu_f32 as built by
 * default, GGML_GELU_FP16): 0 below -10, x above 10, else x rounded to fp16
 * and looked up in a table of the tanh form computed in fp32 at every fp16
 * value and rounded to fp16. The int8 kernel mode computes what llama.cpp
 * computes, so it takes this GELU too (gemma2's logits moved by ~5e-3
 * relative without it). */
static uint16_t g_gelu_f16[65536];
static pthread_once_t g_gelu_once = PTHREAD_ONCE_INIT;

static void gelu_table_init(void) {
    for (uint32_t i = 0; i < 65536; i++) {
        const float f = kv_fp16_to_fp32((uint16_t)i);
        g_gelu_f16[i] = kv_fp32_to_fp16(0.5f * f * (1.0f + tanhf(0.79788456080286535587989211986876f * f *
                                                                 (1.0f + 0.044715f * f * f))));
    }
}

static void gelu_ggml(float *x, size_t n) {
    pthread_once(&g_gelu_once, gelu_table_init);
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] <= -10.0f ? 0.0f : x[i] >= 10.0f ? x[i] : kv_fp16_to_fp32(g_gelu_f16[kv_fp32_to_fp16(x[i])]);
}

/* x[i] = GELU(x[i]): the tanh approximation (llama.cpp's for MPT) or the
 * exact erf form (Hugging Face MPT's nn.GELU()); see kv_gelu. The int8
 * kernel mode's tanh form is llama.cpp's table (gelu_ggml). */
static void gelu(float *x, size_t n, kv_gelu kind) {
    if (kind == KV_GELU_ERF) {
        for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        return;
    }
    if (kv_kernels_mode() == KV_KERNELS_INT8) {
        gelu_ggml(x, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    }
}

static void clamp_all(float *x, size_t n, float lim) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] < -lim ? -lim : x[i] > lim ? lim : x[i];
}

/* Element-wise work of a prefill spread over the pool: fn(c, arg, i0, i1)
 * on contiguous shares of [0, n). Each element is computed as a serial
 * loop computes it, whatever the split. Below `min_par` items (decode) it
 * runs on the caller: a hand-off would cost more than the work. */
typedef void (*range_fn)(kv_ctx *c, const void *arg, int64_t i0, int64_t i1);
typedef struct range_job { kv_ctx *c; const void *arg; int64_t n; range_fn fn; } range_job;

static void range_worker(void *p, int ith, int nth) {
    const range_job *j = p;
    int64_t a = j->n * ith / nth, b = j->n * (ith + 1) / nth;
    if (b > a) j->fn(j->c, j->arg, a, b);
}

static void pool_range(kv_ctx *c, int64_t n, int64_t min_par, range_fn fn, const void *arg) {
    if (n < min_par || c->n_threads == 1) {
        fn(c, arg, 0, n);
        return;
    }
    range_job j = {c, arg, n, fn};
    kv_pool_run(c->pool, range_worker, &j);
}

enum { KV_PAR_ROWS = 8, KV_PAR_ELEMS = 8192 }; /* below these, element-wise work stays serial */

/* xb rows [i0, i1) = the norm of x's rows, with weight w[0] and bias w[1] (or NULL) */
static void norm_range(kv_ctx *c, const void *arg, int64_t i0, int64_t i1) {
    const float *const *w = arg;
    const size_t dim = (size_t)c->mi->dim;
    for (int64_t t = i0; t < i1; t++) norm_row(c, c->xb + (size_t)t * dim, c->x + (size_t)t * dim, w[0], w[1]);
}

static void norm_rows(kv_ctx *c, int n, const float *weight, const float *bias) {
    const float *w[2] = {weight, bias};
    pool_range(c, n, KV_PAR_ROWS, norm_range, w);
}

/* x += xb2 (a residual) */
static void residual_range(kv_ctx *c, const void *arg, int64_t i0, int64_t i1) {
    (void)arg;
    for (int64_t i = i0; i < i1; i++) c->x[i] += c->xb2[i];
}

/* hb = silu(hb) * hb2 (SwiGLU), or gelu(hb) * hb2 with GELU's tanh form
 * (GeGLU: gemma's gelu_pytorch_tanh, llama.cpp's ggml_gelu) */
static void swiglu_range(kv_ctx *c, const void *arg, int64_t i0, int64_t i1) {
    (void)arg;
    if (c->mi->ffn_act == KV_ACT_GELU) {
        gelu(c->hb + i0, (size_t)(i1 - i0), KV_GELU_TANH);
        for (int64_t i = i0; i < i1; i++) c->hb[i] *= c->hb2[i];
        return;
    }
    kv_silu_mul(c->hb + i0, c->hb2 + i0, i1 - i0);
}

/* xb2 rows [i0, i1) = RMSNorm(xb2) with weight arg (gemma's post-norms) */
static void post_norm_range(kv_ctx *c, const void *arg, int64_t i0, int64_t i1) {
    const size_t dim = (size_t)c->mi->dim;
    for (int64_t t = i0; t < i1; t++) rmsnorm(c->xb2 + (size_t)t * dim, c->xb2 + (size_t)t * dim, arg, (int)dim, c->mi->norm_eps);
}

/* cap * tanh(x / cap): gemma2's soft-capping of attention and output logits */
static void softcap(float *x, size_t n, float cap) {
    for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
}

static void gelu_range(kv_ctx *c, const void *arg, int64_t i0, int64_t i1) {
    (void)arg;
    gelu(c->hb + i0, (size_t)(i1 - i0), c->mi->gelu);
}

/* Rotates the pairs of the first n_rot dims of each head of vec
 * [n_heads][head_dim] by the angles in cs [n_rot/2][2]: pair i is
 * (2i, 2i+1) (NORM) or (i, i + n_rot/2) (NEOX). */
static void rope_apply(const kv_ctx *c, float *vec, int n_heads, const float *cs) {
    const int hd = c->mi->head_dim, half = c->mi->n_rot / 2;
    const int stride = c->mi->rope_pair == KV_ROPE_NEOX ? 1 : 2, off = c->mi->rope_pair == KV_ROPE_NEOX ? half : 1;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * hd;
        for (int i = 0; i < half; i++) {
            float co = cs[2 * i], si = cs[2 * i + 1];
            float *a = v + stride * i, *b = a + off;
            float x0 = *a, x1 = *b;
            *a = x0 * co - x1 * si;
            *b = x0 * si + x1 * co;
        }
    }
}

/* ------------------------------------------------------------- matmuls */

typedef struct mv_job { const kv_tensor *W; const float *x; float *y; } mv_job;
typedef struct mv_batch { mv_job job[3]; int n; } mv_batch;

static void mv_worker(void *arg, int ith, int nth) {
    const mv_batch *b = arg;
    for (int j = 0; j < b->n; j++) {
        const mv_job *jb = &b->job[j];
        int64_t rows = jb->W->rows;
        int64_t r0 = rows * ith / nth, r1 = rows * (ith + 1) / nth;
        if (r1 > r0) kv_matvec_rows(jb->W, jb->x, jb->y, r0, r1);
    }
}

/* Prefill products: W's rows are cut into blocks of KV_MM_BLOCK rows, and
 * each pool thread multiplies its run of blocks: with kv_gemm_nt where the
 * CPU takes it (X packed once per product, every element one chain over
 * k), else with single-threaded sgemm calls (OpenBLAS's own threads stay
 * off, so two thread pools never fight over the cores, and none spins on
 * into the decode steps that follow). A block is one call of the same
 * shape whatever the thread count, so the result does not depend on it
 * (OpenBLAS picks a different kernel, with a different summation order,
 * for small shapes). Rows of other types are dequantized a block at a
 * time into the thread's buffer, still in cache when the product reads
 * them. */
typedef struct mm_job { kv_ctx *c; const kv_tensor *W; const float *X; float *Y; int n; const float *Xp; } mm_job;

static void mm_worker(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    const int64_t rows = j->W->rows, cols = j->W->cols, n_blocks = (rows + KV_MM_BLOCK - 1) / KV_MM_BLOCK;
    const int direct = j->W->type == KV_F32 && ((uintptr_t)j->W->data & 3u) == 0;
    float *buf = j->c->deq + (size_t)ith * j->c->deq_stride;
    if (j->Xp) { /* each thread packs its share of X's tiles, then all read all of them */
        const int64_t tiles = kv_gemm_pack_tiles(j->n);
        kv_gemm_pack_range(j->X, j->n, cols, cols, (float *)j->Xp, tiles * ith / nth, tiles * (ith + 1) / nth);
        kv_pool_barrier(j->c->pool);
    }
    for (int64_t bk = n_blocks * ith / nth; bk < n_blocks * (ith + 1) / nth; bk++) {
        int64_t r0 = bk * KV_MM_BLOCK, r1 = r0 + KV_MM_BLOCK < rows ? r0 + KV_MM_BLOCK : rows;
        const float *w = (const float *)j->W->data + r0 * cols;
        if (!direct) {
            kv_dequant_rows(j->W, r0, r1, buf);
            w = buf;
        }
        if (j->Xp)
            kv_gemm_nt(j->Xp, j->n, cols, w, cols, r1 - r0, j->Y + r0, rows);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, (int)(r1 - r0), (int)cols, 1.0f, j->X, (int)cols,
                        w, (int)cols, 0.0f, j->Y + r0, (int)rows);
    }
}

/* int8 mode's prefill products: every token's sums exactly as decode's
 * matrix-vector kernel forms them, a block of KV_MM_BLOCK weight rows at a
 * time (the block stays in cache for every token). int8 rounding is
 * discontinuous, so a prefill that summed in another order would flip
 * roundings downstream and results would depend on how the prompt is cut
 * (llama.cpp's CPU backend does multiply K-quants this way in both, but
 * takes tinyBLAS for prompts of F16/BF16/Q8_0/Q4_0 weights: docs/MODELS.md). */
typedef struct xm_job { kv_ctx *c; const kv_tensor *W; const float *X; float *Y; int n; void *q8; } xm_job;

static void exact_mm_worker(void *arg, int ith, int nth) {
    const xm_job *j = arg;
    const int64_t rows = j->W->rows, cols = j->W->cols, n_blocks = (rows + KV_MM_BLOCK - 1) / KV_MM_BLOCK;
    if (j->q8) { /* integer products: every token quantized once, then the tokens share each block's decoding */
        kv_q8_acts_quantize(j->W, j->X, j->n, j->n * ith / nth, j->n * (ith + 1) / nth, j->q8);
        kv_pool_barrier(j->c->pool);
    }
    for (int64_t bk = n_blocks * ith / nth; bk < n_blocks * (ith + 1) / nth; bk++) {
        const int64_t r0 = bk * KV_MM_BLOCK, r1 = r0 + KV_MM_BLOCK < rows ? r0 + KV_MM_BLOCK : rows;
        if (j->q8) kv_matmul_q8_rows(j->W, j->q8, j->n, j->Y, r0, r1);
        else
            for (int t = 0; t < j->n; t++) kv_matvec_rows(j->W, j->X + (size_t)t * cols, j->Y + (size_t)t * rows, r0, r1);
    }
}

/* The buffer of int8 prefill's quantized activations, grown on demand
 * (NULL: the products take decode's kernels token by token instead). */
static void *q8_buffer(kv_ctx *c, const kv_tensor *W, int n) {
    const size_t need = kv_q8_acts_bytes(W, n);
    if (!need) return NULL;
    if (need > c->q8_cap) {
        void *b = realloc(c->q8, need);
        if (!b) return NULL;
        c->q8 = b;
        c->q8_cap = need;
    }
    return c->q8;
}

/* Prefill computes every token as a decode step does (int8 mode). */
static int prefill_exact(void) { return kv_kernels_mode() == KV_KERNELS_INT8; }

/* Y [n][W->rows] = X [n][W->cols] . W^T. One token: the threaded
 * matrix-vector kernels. Several: kv_gemm_nt or sgemm per thread
 * (mm_worker); in int8 mode decode's kernels, token by token
 * (exact_mm_worker). */
static void matmul(kv_ctx *c, const kv_tensor *W, const float *X, float *Y, int n) {
    if (n == 1) {
        mv_batch b = {.job = {{W, X, Y}}, .n = 1};
        kv_pool_run(c->pool, mv_worker, &b);
        return;
    }
    if (prefill_exact()) {
        xm_job j = {c, W, X, Y, n, q8_buffer(c, W, n)};
        kv_pool_run(c->pool, exact_mm_worker, &j);
        return;
    }
    mm_job j = {c, W, X, Y, n, c->xp};
    kv_pool_run(c->pool, mm_worker, &j);
}

/* Several matrix-vector products over the same pool run (one hand-off). */
static void matvec3(kv_ctx *c, const mv_job *jobs, int n) {
    mv_batch b = {.n = n};
    for (int j = 0; j < n; j++) b.job[j] = jobs[j];
    kv_pool_run(c->pool, mv_worker, &b);
}

/* One decoded token, after attention: wo and the residual, the MLP norm,
 * gate and up with SwiGLU, down and the residual, as one pool job. Each
 * thread takes the same rows of every matrix it multiplies and does the
 * element-wise work on those rows itself; barriers separate the steps that
 * need a whole vector (the norm reads all of x, down reads all of hb).
 * Every element is computed as the unfused path computes it. */
typedef struct ffn_job { kv_ctx *c; const kv_layer_weights *w; } ffn_job;

static void ffn_rows(const kv_tensor *W, int ith, int nth, int64_t *r0, int64_t *r1) {
    *r0 = W->rows * ith / nth;
    *r1 = W->rows * (ith + 1) / nth;
}

static void decode_ffn_worker(void *arg, int ith, int nth) {
    const ffn_job *j = arg;
    kv_ctx *c = j->c;
    const kv_layer_weights *w = j->w;
    int64_t r0, r1;
    ffn_rows(&w->wo, ith, nth, &r0, &r1);
    if (r1 > r0) kv_matvec_rows(&w->wo, c->att, c->xb2, r0, r1);
    for (int64_t i = r0; i < r1; i++) c->x[i] += c->xb2[i];
    kv_pool_barrier(c->pool);
    if (ith == 0) rmsnorm(c->xb, c->x, w->ffn_norm, c->mi->dim, c->mi->norm_eps);
    kv_pool_barrier(c->pool);
    ffn_rows(&w->w_gate, ith, nth, &r0, &r1);
    if (r1 > r0) {
        kv_matvec_rows(&w->w_gate, c->xb, c->hb, r0, r1);
        kv_matvec_rows(&w->w_up, c->xb, c->hb2, r0, r1);
    }
    if (r1 > r0) kv_silu_mul(c->hb + r0, c->hb2 + r0, r1 - r0);
    kv_pool_barrier(c->pool);
    ffn_rows(&w->w_down, ith, nth, &r0, &r1);
    if (r1 > r0) kv_matvec_rows(&w->w_down, c->hb, c->xb2, r0, r1);
    for (int64_t i = r0; i < r1; i++) c->x[i] += c->xb2[i];
}

static void decode_ffn(kv_ctx *c, const kv_layer_weights *w) {
    ffn_job j = {c, w};
    kv_pool_run(c->pool, decode_ffn_worker, &j);
}

/* ----------------------------------------------------------- attention */

static int scores_reserve(kv_ctx *c, size_t n) {
    if (n <= c->scores_cap) return KV_OK;
    size_t cap = n + n / 4;
    float *s = realloc(c->scores, cap * sizeof(float));
    if (!s) return kv_errorf(KV_ENOMEM, "out of memory for %zu attention scores", n);
    c->scores = s;
    c->scores_cap = cap;
    return KV_OK;
}

/* Room for the statistics c->plan asks of layer `layer` (n queries), for
 * its longest head; rows zeroed (column sums and reductions accumulate). */
static int stats_prepare(kv_ctx *c, int layer, int n) {
    const kv_attn_plan *pl = &c->plan;
    int32_t len = 0;
    for (int g = 0; g < c->mi->n_kv_heads; g++) {
        int32_t l = kv_cache_head_at(c->cache, layer, g)->len;
        if (l > len) len = l;
    }
    const size_t H = (size_t)c->mi->n_heads, row = (size_t)len;
    size_t n_last = pl->needs & KV_NEED_LAST_ROW ? H * row : 0, n_col = pl->needs & KV_NEED_COLSUM ? H * row : 0;
    size_t n_win = pl->needs & KV_NEED_WINDOW ? H * (size_t)pl->win_n * row : 0;
    size_t n_dcol = pl->needs & KV_NEED_DECAYED_COLSUM ? H * row : 0;
    size_t need = n_last + n_col + n_win + n_dcol;
    if (need > c->stats_cap) {
        size_t cap = need + need / 4;
        float *s = realloc(c->stats, cap * sizeof(float));
        if (!s) return kv_errorf(KV_ENOMEM, "out of memory for attention statistics");
        c->stats = s;
        c->stats_cap = cap;
    }
    c->stats_stride = len;
    if (need) memset(c->stats, 0, need * sizeof(float));
    c->st_last = n_last ? c->stats : NULL;
    c->st_colsum = n_col ? c->stats + n_last : NULL;
    c->st_window = n_win ? c->stats + n_last + n_col : NULL;
    c->st_dcolsum = n_dcol ? c->stats + n_last + n_col + n_win : NULL;
    if (n_dcol && n > 1 && (c->dweight_n != n || c->dweight_decay != c->hook.decay)) {
        /* the weight of query t: decay^(n-1-t), computed in double */
        for (int t = 0; t < n; t++) c->dweight[t] = (float)pow(c->hook.decay, (double)(n - 1 - t));
        c->dweight_n = n;
        c->dweight_decay = c->hook.decay;
    }
    c->st_reduced = c->st_tmp = c->st_part = NULL;
    if (pl->needs & KV_NEED_LOGITS) {
        size_t n_pool = (size_t)kv_pool_n_threads(c->pool), n_blocks = n > 1 ? ((size_t)n + KV_REDUCE_BLOCK - 1) / KV_REDUCE_BLOCK : 0;
        size_t dneed = (H + n_pool + n_blocks) * row;
        if (dneed > c->dstats_cap) {
            size_t cap = dneed + dneed / 4;
            double *d = realloc(c->dstats, (cap ? cap : 1) * sizeof(double));
            if (!d) return kv_errorf(KV_ENOMEM, "out of memory for attention statistics");
            c->dstats = d;
            c->dstats_cap = cap;
        }
        memset(c->dstats, 0, H * row * sizeof(double));
        c->st_reduced = c->dstats;
        c->st_tmp = c->dstats + H * row;
        c->st_part = c->st_tmp + n_pool * row;
    }
    return KV_OK;
}

kv_attn_plan kv_hook_plan(const kv_ctx_hook *hk, int layer, int32_t pos0, int32_t n) {
    if (!hk->needs) return (kv_attn_plan){.layer = layer, .pos0 = pos0, .n_new = n};
    int32_t w = hk->window < n ? hk->window : n;
    if (w < 0) w = 0;
    kv_attn_plan pl = {.layer = layer, .pos0 = pos0, .n_new = n, .needs = hk->needs, .win_pos0 = pos0 + n - w,
                       .win_n = w};
    if (hk->plan) hk->plan(hk->user, &pl);
    pl.needs &= hk->needs;
    if (!hk->reduce_row) pl.needs &= ~(unsigned)KV_NEED_LOGITS;
    int64_t lo = pl.win_pos0 > pos0 ? pl.win_pos0 : pos0;
    int64_t hi = (int64_t)pl.win_pos0 + (pl.win_n > 0 ? pl.win_n : 0);
    if (hi > (int64_t)pos0 + n) hi = (int64_t)pos0 + n;
    if (!(pl.needs & KV_NEED_WINDOW) || hi <= lo) {
        pl.needs &= ~(unsigned)KV_NEED_WINDOW;
        lo = hi = pos0;
    }
    pl.win_pos0 = (int32_t)lo;
    pl.win_n = (int32_t)(hi - lo);
    return pl;
}

static float *stats_last_row(kv_ctx *c, int h) { return c->st_last + (size_t)h * c->stats_stride; }
static float *stats_colsum(kv_ctx *c, int h) { return c->st_colsum + (size_t)h * c->stats_stride; }
static float *stats_dcolsum(kv_ctx *c, int h) { return c->st_dcolsum + (size_t)h * c->stats_stride; }
/* The window row of the query at position qpos, or NULL if it is not in the window. */
static float *stats_window(kv_ctx *c, int h, int32_t qpos) {
    if (!c->st_window || qpos < c->plan.win_pos0 || qpos >= c->plan.win_pos0 + c->plan.win_n) return NULL;
    return c->st_window + ((size_t)h * (size_t)c->plan.win_n + (size_t)(qpos - c->plan.win_pos0)) * c->stats_stride;
}

/* cos, sin of position p for every rotary pair of the current layer's
 * set, times `mscale` (computed like the per-call table, so every position
 * mode rotates identically). */
static void rope_angles_x(const rope_set *rs, int n_rot, int64_t p, double mscale, float *cs) {
    for (int i = 0; i < n_rot / 2; i++) {
        double a = (double)p * rs->inv_freq[i];
        cs[2 * i] = (float)(cos(a) * mscale);
        cs[2 * i + 1] = (float)(sin(a) * mscale);
    }
}

/* A rotation by a position difference: unscaled. */
static void rope_angles(const kv_ctx *c, int64_t p, float *cs) { rope_angles_x(c->cur, c->mi->n_rot, p, 1.0, cs); }

typedef struct pos_idx { int32_t pos, slot; } pos_idx;

static int by_pos(const void *a, const void *b) {
    const pos_idx *x = a, *y = b;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* A key's in-cache index is its rank by position: rank[j] = how many slots
 * of the head hold an earlier position than slot j. *out is NULL when the
 * slots are in position order (policies that keep order): the rank is the
 * slot index; else an array the caller frees (policies that fill holes). */
static int position_ranks(const kv_cache_head *ch, int32_t **out) {
    *out = NULL;
    int sorted = 1;
    for (int32_t t = 1; t < ch->len && sorted; t++) sorted = ch->pos[t - 1] < ch->pos[t];
    if (sorted) return KV_OK;
    pos_idx *p = malloc((size_t)ch->len * sizeof *p);
    int32_t *rank = malloc((size_t)ch->len * sizeof *rank);
    if (!p || !rank) {
        free(p);
        free(rank);
        return kv_errorf(KV_ENOMEM, "out of memory ranking positions");
    }
    for (int32_t j = 0; j < ch->len; j++) p[j] = (pos_idx){ch->pos[j], j};
    qsort(p, (size_t)ch->len, sizeof *p, by_pos);
    for (int32_t r = 0; r < ch->len; r++) rank[p[r].slot] = r;
    free(p);
    *out = rank;
    return KV_OK;
}

typedef struct rot_job { kv_ctx *c; int layer, n; _Atomic int failed; } rot_job;

/* Rotates the keys of KV heads ith, ith + nth, ... of the layer, and the
 * queries of their groups (see rotate_in_cache). */
static void rotate_worker(void *arg, int ith, int nth) {
    rot_job *j = arg;
    kv_ctx *c = j->c;
    const kv_model_info *mi = c->mi;
    const int hd = mi->head_dim, qd = mi->n_heads * hd, group = mi->n_heads / mi->n_kv_heads, n = j->n;
    const int32_t len = c->kr_stride;
    for (int g = ith; g < mi->n_kv_heads; g += nth) {
        kv_cache_head *ch = kv_cache_head_at(c->cache, j->layer, g);
        float *kr = c->kr + (size_t)g * len * hd;
        for (int32_t t = 0; t < ch->len; t++) kv_cache_key_row(c->cache, ch, t, kr + (size_t)t * hd);
        int32_t *rank;
        if (position_ranks(ch, &rank) != KV_OK) {
            atomic_store(&j->failed, 1);
            continue;
        }
        for (int32_t t = 0; t < ch->len; t++)
            rope_apply(c, kr + (size_t)t * hd, 1, c->cur->tab + (size_t)(rank ? rank[t] : t) * mi->n_rot);
        free(rank);
        for (int h = g * group; h < (g + 1) * group; h++)
            for (int t = 0; t < n; t++)
                rope_apply(c, c->q + (size_t)t * qd + (size_t)h * hd, 1,
                           c->cur->tab + (size_t)(ch->len - n + t) * mi->n_rot);
    }
}

/* The table of rotary angles by in-cache index covers [0, len). */
static int rope_tab_reserve(kv_ctx *c, int32_t len) {
    const int n_rot = c->mi->n_rot;
    rope_set *rs = c->cur;
    if (len <= rs->tab_n) return KV_OK;
    int32_t n_pos = len + len / 4 + 64;
    float *t = realloc(rs->tab, (size_t)n_pos * (size_t)n_rot * sizeof(float));
    if (!t) return kv_errorf(KV_ENOMEM, "out of memory for rotary tables");
    rs->tab = t;
    for (int32_t p = rs->tab_n; p < n_pos; p++) rope_angles_x(rs, n_rot, p, rs->mscale, t + (size_t)p * n_rot);
    rs->tab_n = n_pos;
    return KV_OK;
}

/* KV_POS_CACHE: rotates every key of layer l by its index in the cache into
 * c->kr, and each query row of this call by the index of its own slot in
 * its KV head (heads may have different lengths). */
static int rotate_in_cache(kv_ctx *c, int l, int n) {
    const kv_model_info *mi = c->mi;
    const int hd = mi->head_dim;
    int32_t len = kv_cache_max_len(c->cache);
    int rc = rope_tab_reserve(c, len);
    if (rc) return rc;
    size_t need = (size_t)mi->n_kv_heads * (size_t)len * (size_t)hd;
    if (need > c->kr_cap) {
        float *k = realloc(c->kr, need * sizeof(float));
        if (!k) return kv_errorf(KV_ENOMEM, "out of memory for rotated keys");
        c->kr = k;
        c->kr_cap = need;
    }
    c->kr_stride = len;
    rot_job j = {c, l, n, 0};
    kv_pool_run(c->pool, rotate_worker, &j);
    if (atomic_load(&j.failed)) return kv_errorf(KV_ENOMEM, "out of memory ranking positions");
    return KV_OK;
}

/* ------------------------------------------------ KV_POS_REROTATE */

static int rr_reserve(rr_head *r, int32_t n) {
    if (n <= r->cap) return KV_OK;
    int32_t cap = n + n / 4 + 16;
    int32_t *p = realloc(r->pos, (size_t)cap * sizeof *p);
    if (!p) return KV_ENOMEM;
    r->pos = p;
    r->cap = cap;
    return KV_OK;
}

/* The index a key at position p had: its rank among the n recorded
 * positions (ascending), -1 if absent. */
static int32_t saved_index(const int32_t *saved, int32_t n, int32_t p) {
    int32_t lo = 0, hi = n;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (saved[mid] < p) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && saved[lo] == p ? lo : -1;
}

typedef struct rerot_job { kv_ctx *c; int layer; _Atomic int failed; } rerot_job;

/* Before layer l's attention, for KV heads ith, ith + nth, ...: if the
 * policy evicted since the last call, rotates each kept key by
 * R(new index - old index) and records the new order. A key whose position
 * was never recorded (made by the policy) cannot be placed: failed = 2. */
static void rerotate_worker(void *arg, int ith, int nth) {
    rerot_job *j = arg;
    kv_ctx *c = j->c;
    const kv_model_info *mi = c->mi;
    const int hd = mi->head_dim;
    float *cs = c->rot_cs + (size_t)ith * mi->n_rot, *row = c->krow + (size_t)ith * hd;
    for (int g = ith; g < mi->n_kv_heads; g += nth) {
        kv_cache_head *ch = kv_cache_head_at(c->cache, j->layer, g);
        rr_head *r = &c->rr[(size_t)j->layer * mi->n_kv_heads + g];
        int32_t *rank;
        if (position_ranks(ch, &rank) != KV_OK) {
            atomic_store(&j->failed, 1);
            continue;
        }
        if (!rank && r->len == ch->len && (!ch->len || memcmp(r->pos, ch->pos, (size_t)ch->len * sizeof *ch->pos) == 0))
            continue; /* nothing moved */
        if (rr_reserve(r, ch->len) != KV_OK) {
            free(rank);
            atomic_store(&j->failed, 1);
            continue;
        }
        int64_t last = 0;
        for (int32_t t = 0; t < ch->len; t++) {
            /* nothing recorded (positions changed mode mid-sequence): keys
             * sit at their true positions, as ORIGINAL stores them */
            int64_t old = r->len ? saved_index(r->pos, r->len, ch->pos[t]) : ch->pos[t];
            if (old < 0) {
                atomic_store(&j->failed, 2);
                break;
            }
            int64_t d = (int64_t)(rank ? rank[t] : t) - old;
            if (d == 0) continue;
            if (d != last) {
                rope_angles(c, d, cs);
                last = d;
            }
            /* an f16 / q8_0 key is rounded again after each rotation, as
             * llama.cpp's K-shift of a quantized cache rounds it */
            kv_cache_key_row(c->cache, ch, t, row);
            rope_apply(c, row, 1, cs);
            kv_cache_set_row(c->cache, ch, t, row, NULL);
        }
        for (int32_t t = 0; t < ch->len; t++) r->pos[rank ? rank[t] : t] = ch->pos[t];
        r->len = ch->len;
        free(rank);
    }
}

static int rerotate_sync(kv_ctx *c, int l) {
    if (!c->rr) {
        c->rr = calloc((size_t)c->mi->n_layers * (size_t)c->mi->n_kv_heads, sizeof *c->rr);
        if (!c->rr) return kv_errorf(KV_ENOMEM, "out of memory for rerotation records");
    }
    rerot_job j = {c, l, 0};
    kv_pool_run(c->pool, rerotate_worker, &j);
    int f = atomic_load(&j.failed);
    if (f == 1) return kv_errorf(KV_ENOMEM, "out of memory rerotating keys");
    if (f == 2)
        return kv_errorf(KV_EINVAL, "positions=rerotate: layer %d holds a key the policy made (its rotation is "
                         "unknown); this policy cannot use rerotate", l);
    return KV_OK;
}

/* After the call's keys went into layer l at the next indices: records them. */
static int rerotate_record_new(kv_ctx *c, int l, int n) {
    for (int g = 0; g < c->mi->n_kv_heads; g++) {
        const kv_cache_head *ch = kv_cache_head_at(c->cache, l, g);
        rr_head *r = &c->rr[(size_t)l * c->mi->n_kv_heads + g];
        if (rr_reserve(r, r->len + n)) return kv_errorf(KV_ENOMEM, "out of memory for rerotation records");
        memcpy(r->pos + r->len, ch->pos + ch->len - n, (size_t)n * sizeof *r->pos);
        r->len += n;
    }
    return KV_OK;
}

/* Whether attention reads this call's in-cache rotation of the keys
 * (c->kr, floats) rather than the cache's (never for ALiBi, whose keys are
 * not rotated). */
static int keys_rotated_here(const kv_ctx *c) { return c->hook.positions == KV_POS_CACHE && !c->alibi; }

/* Prefill: the keys attention reads for KV head g as floats: this call's
 * in-cache rotation, an f32 cache's rows in place, or an f16 / q8_0
 * cache's rows converted by kvf_fill. */
static const float *attn_keys(const kv_ctx *c, const kv_cache_head *ch, int g) {
    if (keys_rotated_here(c)) return c->kr + (size_t)g * c->kr_stride * c->mi->head_dim;
    if (kv_cache_get_type(c->cache) == KV_CACHE_F32) return (const float *)ch->kb;
    return c->kvf + (size_t)g * 2 * c->kvf_stride * c->mi->head_dim;
}

/* Prefill: the values of KV head g as floats (as attn_keys). */
static const float *attn_values(const kv_ctx *c, const kv_cache_head *ch, int g) {
    if (kv_cache_get_type(c->cache) == KV_CACHE_F32) return (const float *)ch->vb;
    return c->kvf + ((size_t)g * 2 + 1) * c->kvf_stride * c->mi->head_dim;
}

typedef struct kvf_job { kv_ctx *c; int layer; } kvf_job;

static void kvf_worker(void *arg, int ith, int nth) {
    const kvf_job *j = arg;
    kv_ctx *c = j->c;
    const size_t hd = (size_t)c->mi->head_dim, stride = (size_t)c->kvf_stride;
    for (int g = ith; g < c->mi->n_kv_heads; g += nth) {
        const kv_cache_head *ch = kv_cache_head_at(c->cache, j->layer, g);
        float *k = c->kvf + (size_t)g * 2 * stride * hd, *v = k + stride * hd;
        for (int32_t t = 0; t < ch->len; t++) {
            if (!keys_rotated_here(c)) kv_cache_key_row(c->cache, ch, t, k + (size_t)t * hd);
            kv_cache_value_row(c->cache, ch, t, v + (size_t)t * hd);
        }
    }
}

/* s[j] = q . key j of KV head g for the first n slots, as decode reads
 * them: this call's rotated keys, else the cache's rows in place (also
 * int8 mode's prefill, which must compute what decode computes). */
static void head_dots(const kv_ctx *c, const kv_cache_head *ch, int g, const float *q, int32_t n, float *s) {
    const int hd = c->mi->head_dim;
    if (keys_rotated_here(c)) kv_dots_f32(q, c->kr + (size_t)g * c->kr_stride * hd, n, hd, s);
    else kv_dots_kv(kv_cache_row_dtype(c->cache), q, ch->kb, n, hd, s);
}

/* An f16 / q8_0 cache in prefill: converts layer l's keys and values to
 * floats once per call, so that the sgemm path below serves every type
 * (each KV head once, shared by its query heads). Decode reads the rows
 * in place instead (kv_dots_kv / kv_wsum_kv). */
static int kvf_fill(kv_ctx *c, int l) {
    /* int8 mode's prefill reads the rows in place, as decode does */
    if (kv_cache_get_type(c->cache) == KV_CACHE_F32 || prefill_exact()) return KV_OK;
    const int32_t len = kv_cache_max_len(c->cache);
    const size_t need = (size_t)c->mi->n_kv_heads * 2 * (size_t)len * (size_t)c->mi->head_dim;
    if (need > c->kvf_cap) {
        size_t cap = need + need / 4;
        float *p = realloc(c->kvf, cap * sizeof *p);
        if (!p) return kv_errorf(KV_ENOMEM, "out of memory converting the %s KV cache of layer %d to floats",
                                 kv_cache_type_name(kv_cache_get_type(c->cache)), l);
        c->kvf = p;
        c->kvf_cap = cap;
    }
    c->kvf_stride = len;
    kvf_job j = {c, l};
    kv_pool_run(c->pool, kvf_worker, &j);
    return KV_OK;
}

/* Whether query t of a call of n tokens with a layout sees slot j of head
 * ch: the call's tokens are the head's last n slots (hooks run after the
 * attention); the slots before them were held before the call. The causal
 * rule by index, then the layout's masks. */
static inline int sees_slot(const kv_ctx *c, const kv_cache_head *ch, int32_t j, int t, int n) {
    const kv_eval_layout *L = c->lay;
    int32_t base = ch->len - n;
    if (j < base) return !L->sees_cached || L->sees_cached[t];
    int32_t i = j - base;
    return i == t || (i < t && (!L->sees || L->sees[(size_t)t * (size_t)n + (size_t)i]));
}

/* ALiBi (MPT): keys are never rotated; attention adds -slope_h * (query
 * index - key index) to each logit. KV_POS_ORIGINAL uses true positions
 * (Keyformer's "Org Pos": the bias at each kept key's original index); any
 * other position mode uses in-cache indices (StreamingLLM on MPT, Keyformer's
 * "New Pos"): a key's rank by position among its head's slots, the query
 * the index of its own slot. */
static int alibi_in_cache(const kv_ctx *c) { return c->hook.positions != KV_POS_ORIGINAL; }

/* In-cache indices of layer l's slots, per KV head (heads may differ in
 * length and order), into c->alibi_idx. */
static int alibi_prepare(kv_ctx *c, int l) {
    const int n_kv = c->mi->n_kv_heads;
    int32_t len = 0;
    for (int g = 0; g < n_kv; g++)
        if (kv_cache_head_at(c->cache, l, g)->len > len) len = kv_cache_head_at(c->cache, l, g)->len;
    size_t need = (size_t)n_kv * (size_t)len;
    if (need > c->alibi_idx_cap) {
        size_t cap = need + need / 4 + 64;
        int32_t *p = realloc(c->alibi_idx, cap * sizeof *p);
        if (!p) return kv_errorf(KV_ENOMEM, "out of memory for in-cache positions");
        c->alibi_idx = p;
        c->alibi_idx_cap = cap;
    }
    c->alibi_stride = len;
    for (int g = 0; g < n_kv; g++) {
        const kv_cache_head *ch = kv_cache_head_at(c->cache, l, g);
        int32_t *idx = c->alibi_idx + (size_t)g * len;
        int32_t *rank;
        int rc = position_ranks(ch, &rank);
        if (rc) return rc;
        for (int32_t t = 0; t < ch->len; t++) idx[t] = rank ? rank[t] : t;
        free(rank);
    }
    return KV_OK;
}

/* Adds the ALiBi bias of query head h to its logits s [n][len] over the
 * slots of KV head g (the new tokens already appended): row t is the query
 * at position pos0 + t (a layout's pos[t] when it gives positions), whose
 * in-cache index is its slot's, len - n + t. Masked logits stay -INFINITY. */
static void alibi_bias(const kv_ctx *c, int h, int g, const kv_cache_head *ch, float *s, int n, int32_t pos0) {
    const float slope = c->alibi[h];
    const int32_t len = ch->len;
    const int in_cache = alibi_in_cache(c);
    const int32_t *kidx = in_cache ? c->alibi_idx + (size_t)g * c->alibi_stride : ch->pos;
    const int32_t *lay_pos = c->lay ? c->lay->pos : NULL;
    for (int t = 0; t < n; t++) {
        float *row = s + (size_t)t * len;
        const int32_t qi = in_cache ? len - n + t : lay_pos ? lay_pos[t] : pos0 + t;
        for (int32_t j = 0; j < len; j++) row[j] -= slope * (float)(qi - kidx[j]);
    }
}

/* A sliding-window layer's window (its query at position p sees keys at
 * positions > p - window, by true position whatever the cache holds, as
 * Hugging Face and llama.cpp mask); 0 for a global layer. */
static int32_t layer_window(const kv_ctx *c, int layer) {
    return kv_model_layer(c->m, layer)->swa ? c->mi->swa_window : 0;
}

typedef struct attn_job {
    kv_ctx *c;
    int layer;
    int32_t qpos; /* position of the query (decode) */
} attn_job;

/* Decode attention: query heads split across threads; each thread uses
 * its own row of c->scores. */
static void attn_decode_worker(void *arg, int ith, int nth) {
    const attn_job *j = arg;
    kv_ctx *c = j->c;
    const kv_model_info *mi = c->mi;
    const int hd = mi->head_dim, group = mi->n_heads / mi->n_kv_heads;
    const float scale = mi->attn_scale, cap = mi->attn_softcap;
    const int32_t win = layer_window(c, j->layer);
    const unsigned needs = c->plan.needs;
    const kv_dtype kt = kv_cache_row_dtype(c->cache);
    size_t stride = c->scores_cap / (size_t)nth;
    float *s = c->scores + stride * (size_t)ith;
    for (int h = ith; h < mi->n_heads; h += nth) {
        kv_cache_head *ch = kv_cache_head_at(c->cache, j->layer, h / group);
        const float *q = c->q + (size_t)h * hd;
        float *o = c->att + (size_t)h * hd;
        head_dots(c, ch, h / group, q, ch->len, s);
        if (!c->lay && !win && !(cap > 0)) { /* the common case, a loop the compiler vectorises */
            for (int32_t t = 0; t < ch->len; t++) s[t] = ch->pos[t] <= j->qpos ? s[t] * scale : -INFINITY;
        } else { /* a layout's masks, a sliding window, soft-capping */
            for (int32_t t = 0; t < ch->len; t++) {
                int seen = (c->lay ? sees_slot(c, ch, t, 0, 1) : ch->pos[t] <= j->qpos) &&
                           (!win || j->qpos - ch->pos[t] < win);
                s[t] = seen ? (cap > 0 ? cap * tanhf(s[t] * scale / cap) : s[t] * scale) : -INFINITY;
            }
        }
        if (c->alibi) alibi_bias(c, h, h / group, ch, s, 1, j->qpos);
        if (needs & KV_NEED_LOGITS) {
            kv_logit_row r = {j->layer, h, j->qpos, ch->len, s, ch->pos, c->st_reduced + (size_t)h * c->stats_stride,
                              c->st_tmp + (size_t)ith * c->stats_stride};
            c->hook.reduce_row(c->hook.user, &r);
        }
        kv_softmax_f32(s, ch->len);
        if (needs & KV_NEED_LAST_ROW) memcpy(stats_last_row(c, h), s, (size_t)ch->len * sizeof(float));
        if (needs & KV_NEED_COLSUM) memcpy(stats_colsum(c, h), s, (size_t)ch->len * sizeof(float));
        if (needs & KV_NEED_DECAYED_COLSUM) memcpy(stats_dcolsum(c, h), s, (size_t)ch->len * sizeof(float)); /* weight 1 */
        float *wrow = needs & KV_NEED_WINDOW ? stats_window(c, h, j->qpos) : NULL;
        if (wrow) memcpy(wrow, s, (size_t)ch->len * sizeof(float));
        kv_wsum_kv(kt, o, s, ch->vb, ch->len, hd);
    }
}

/* KV_NEED_LOGITS in prefill: the raw rows of one query head, reduced by
 * the hook in blocks of KV_REDUCE_BLOCK rows spread over the pool. */
typedef struct reduce_job {
    kv_ctx *c;
    int layer, head, n;
    int32_t pos0, len;
    const float *S;             /* [n][len] masked logits */
    const kv_cache_head *ch;
} reduce_job;

static void reduce_worker(void *arg, int ith, int nth) {
    const reduce_job *j = arg;
    kv_ctx *c = j->c;
    const size_t row = (size_t)c->stats_stride;
    for (int b = ith; b * KV_REDUCE_BLOCK < j->n; b += nth)
        for (int t = b * KV_REDUCE_BLOCK; t < j->n && t < (b + 1) * KV_REDUCE_BLOCK; t++) {
            kv_logit_row r = {j->layer, j->head, j->pos0 + t, j->len, j->S + (size_t)t * j->len, j->ch->pos,
                              c->st_part + (size_t)b * row, c->st_tmp + (size_t)ith * row};
            c->hook.reduce_row(c->hook.user, &r);
        }
}

static void reduce_rows(kv_ctx *c, int layer, int h, int n, int32_t pos0, const float *S, const kv_cache_head *ch) {
    const size_t row = (size_t)c->stats_stride;
    const int n_blocks = (n + KV_REDUCE_BLOCK - 1) / KV_REDUCE_BLOCK;
    memset(c->st_part, 0, (size_t)n_blocks * row * sizeof(double));
    reduce_job j = {c, layer, h, n, pos0, ch->len, S, ch};
    kv_pool_run(c->pool, reduce_worker, &j);
    double *acc = c->st_reduced + (size_t)h * row;
    for (int b = 0; b < n_blocks; b++)
        for (int32_t k = 0; k < ch->len; k++) acc[k] += c->st_part[(size_t)b * row + k];
}


/* Rows [t0, t1) of S [n][len]: scaled logits of the keys the block can
 * see, soft-capped, masked (causal by slot, a layout's masks, a sliding
 * window), -INFINITY past them. Query t sees at most slots [0, base+t]. */
static void prefill_logits(kv_ctx *c, int h, int t0, int t1, int n, int32_t pos0, const kv_cache_head *ch,
                           const float *K, float *S, int32_t win, float *scr) {
    const kv_model_info *mi = c->mi;
    const int hd = mi->head_dim, qd = mi->n_heads * hd;
    const int32_t len = ch->len, kl = len - n + t1;
    if (prefill_exact()) { /* each query's products as decode's (attn_decode_worker), over the slots it sees */
        const int g = h / (mi->n_heads / mi->n_kv_heads);
        for (int t = t0; t < t1; t++) {
            const int32_t seen = len - n + t + 1;
            const float *q = c->q + (size_t)t * qd + (size_t)h * hd;
            float *row = S + (size_t)t * len;
            head_dots(c, ch, g, q, seen, row);
            for (int32_t j = 0; j < seen; j++) row[j] *= mi->attn_scale;
            for (int32_t j = seen; j < kl; j++) row[j] = 0.0f; /* masked below: finite through the soft cap */
        }
    } else if (scr) { /* the block's queries packed, every key's products as one chain, then the scale */
        kv_gemm_pack(c->q + (size_t)t0 * qd + (size_t)h * hd, t1 - t0, hd, qd, scr);
        kv_gemm_nt(scr, t1 - t0, hd, K, hd, kl, S + (size_t)t0 * len, len);
        for (int t = t0; t < t1; t++)
            for (int32_t j = 0; j < kl; j++) S[(size_t)t * len + j] *= mi->attn_scale;
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t1 - t0, kl, hd, mi->attn_scale,
                    c->q + (size_t)t0 * qd + (size_t)h * hd, qd, K, hd, 0.0f, S + (size_t)t0 * len, len);
    }
    for (int t = t0; t < t1; t++) {
        float *row = S + (size_t)t * len;
        for (int32_t j = kl; j < len; j++) row[j] = -INFINITY;
        if (mi->attn_softcap > 0) softcap(row, (size_t)kl, mi->attn_softcap);
        const int32_t qpos = c->lay && c->lay->pos ? c->lay->pos[t] : pos0 + t;
        if (!c->lay) {
            for (int32_t j = 0; j < kl; j++)
                if (ch->pos[j] > pos0 + t) row[j] = -INFINITY;
        } else {
            for (int32_t j = 0; j < kl; j++)
                if (!sees_slot(c, ch, j, t, n)) row[j] = -INFINITY;
        }
        if (win)
            for (int32_t j = 0; j < kl; j++)
                if (qpos - ch->pos[j] >= win) row[j] = -INFINITY;
    }
}

/* Row t's softmax over the slots it may see, [0, base+t] (the same count
 * as a decode step at its position), zeros past them; then the statistics
 * the plan asks for. */
static void prefill_probs(kv_ctx *c, int h, int t, int n, int32_t pos0, int32_t len, float *row) {
    const unsigned needs = c->plan.needs;
    const int32_t seen = len - n + t + 1;
    kv_softmax_f32(row, seen);
    memset(row + seen, 0, (size_t)(len - seen) * sizeof *row);
    if (needs & KV_NEED_COLSUM) kv_axpy_f32(stats_colsum(c, h), 1.0f, row, len);
    if (needs & KV_NEED_DECAYED_COLSUM) kv_axpy_f32(stats_dcolsum(c, h), c->dweight[t], row, len);
    float *wrow = needs & KV_NEED_WINDOW ? stats_window(c, h, pos0 + t) : NULL;
    if (wrow) memcpy(wrow, row, (size_t)len * sizeof(float));
}

/* Prefill attention of query head h for n queries at positions
 * pos0..pos0+n-1 over every live slot of the layer (the new tokens already
 * appended): S = Q.K^T (sgemm, by blocks of rows up to the keys each block
 * sees), masks, softmax, O = S.V (the same blocks). S: room for [n][len]
 * scores. Runs on any pool thread; with KV_NEED_LOGITS only on the caller,
 * between pool jobs (reduce_rows spreads the rows over the pool). */
static void attn_prefill_head(kv_ctx *c, int layer, int h, int n, int32_t pos0, float *S, float *scr) {
    const kv_model_info *mi = c->mi;
    const int hd = mi->head_dim, group = mi->n_heads / mi->n_kv_heads, qd = mi->n_heads * hd;
    const unsigned needs = c->plan.needs;
    kv_cache_head *ch = kv_cache_head_at(c->cache, layer, h / group);
    const int32_t len = ch->len, win = layer_window(c, layer);
    const float *K = attn_keys(c, ch, h / group), *V = attn_values(c, ch, h / group);
    for (int t0 = 0; t0 < n; t0 += KV_ATTN_ROWS)
        prefill_logits(c, h, t0, t0 + KV_ATTN_ROWS < n ? t0 + KV_ATTN_ROWS : n, n, pos0, ch, K, S, win, scr);
    if (c->alibi) alibi_bias(c, h, h / group, ch, S, n, pos0);
    if (needs & KV_NEED_LOGITS) reduce_rows(c, layer, h, n, pos0, S, ch);
    for (int t = 0; t < n; t++) prefill_probs(c, h, t, n, pos0, len, S + (size_t)t * len);
    if (needs & KV_NEED_LAST_ROW) memcpy(stats_last_row(c, h), S + (size_t)(n - 1) * len, (size_t)len * sizeof(float));
    if (prefill_exact()) { /* decode's weighted sums, query by query */
        for (int t = 0; t < n; t++)
            kv_wsum_kv(kv_cache_row_dtype(c->cache), c->att + (size_t)t * qd + (size_t)h * hd, S + (size_t)t * len,
                       ch->vb, len - n + t + 1, hd);
        return;
    }
    for (int t0 = 0; t0 < n; t0 += KV_ATTN_ROWS) {
        const int t1 = t0 + KV_ATTN_ROWS < n ? t0 + KV_ATTN_ROWS : n;
        const int32_t kl = len - n + t1;
        float *o = c->att + (size_t)t0 * qd + (size_t)h * hd;
        if (!scr || kv_gemm_pv(S + (size_t)t0 * len, len, t1 - t0, kl, V, hd, o, qd) != 0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t1 - t0, hd, kl, 1.0f, S + (size_t)t0 * len, len,
                        V, hd, 0.0f, o, qd);
        }
    }
}

typedef struct prefill_job { kv_ctx *c; int layer, n; int32_t pos0; size_t stride; } prefill_job;

/* Thread ith's part of c->ascr, or NULL (sgemm). */
static float *attn_scratch(kv_ctx *c, int ith) { return c->ascr ? c->ascr + c->ascr_stride * (size_t)ith : NULL; }

/* Query heads split across threads, each with its own part of c->scores. */
static void attn_prefill_worker(void *arg, int ith, int nth) {
    const prefill_job *j = arg;
    for (int h = ith; h < j->c->mi->n_heads; h += nth)
        attn_prefill_head(j->c, j->layer, h, j->n, j->pos0, j->c->scores + j->stride * (size_t)ith,
                          attn_scratch(j->c, ith));
}

static int attn_prefill(kv_ctx *c, int layer, int n, int32_t pos0) {
    const kv_model_info *mi = c->mi;
    int rc0 = kvf_fill(c, layer);
    if (rc0) return rc0;
    int32_t max_len = 0;
    for (int g = 0; g < mi->n_kv_heads; g++) {
        int32_t len = kv_cache_head_at(c->cache, layer, g)->len;
        if (len > max_len) max_len = len;
    }
    const size_t stride = (size_t)n * (size_t)max_len;
    if (c->plan.needs & KV_NEED_LOGITS) { /* the hook's reductions use the pool: heads one by one */
        int rc = scores_reserve(c, stride);
        if (rc) return rc;
        for (int h = 0; h < mi->n_heads; h++) attn_prefill_head(c, layer, h, n, pos0, c->scores, attn_scratch(c, 0));
        return KV_OK;
    }
    int rc = scores_reserve(c, stride * (size_t)kv_pool_n_threads(c->pool));
    if (rc) return rc;
    prefill_job j = {c, layer, n, pos0, stride};
    kv_pool_run(c->pool, attn_prefill_worker, &j);
    return KV_OK;
}

/* MPT: q, k, v of this call's n tokens clamped to [-clamp_kqv, clamp_kqv]. */
static void clamp_qkv(kv_ctx *c, int n) {
    const kv_model_info *mi = c->mi;
    const size_t qd = (size_t)mi->n_heads * mi->head_dim, kvd = (size_t)mi->n_kv_heads * mi->head_dim;
    clamp_all(c->q, (size_t)n * qd, mi->clamp_kqv);
    clamp_all(c->k, (size_t)n * kvd, mi->clamp_kqv);
    clamp_all(c->v, (size_t)n * kvd, mi->clamp_kqv);
}

/* MPT's MLP up to the down projection: hb = gelu(up(xb)) (no gate). */
static void mlp_up_gelu(kv_ctx *c, const kv_layer_weights *w, int n) {
    matmul(c, &w->w_up, c->xb, c->hb, n);
    pool_range(c, (int64_t)n * c->mi->hidden_dim, KV_PAR_ELEMS, gelu_range, NULL);
}

/* q/k/v biases (qwen2) and the per-head RMSNorm of queries and keys
 * (qwen3, gemma3), before the rotation. */
static void qk_extras(kv_ctx *c, const kv_layer_weights *w, int n) {
    const kv_model_info *mi = c->mi;
    const int hd = mi->head_dim, qd = mi->n_heads * hd, kvd = mi->n_kv_heads * hd;
    for (int t = 0; t < n; t++) {
        float *q = c->q + (size_t)t * qd, *k = c->k + (size_t)t * kvd, *v = c->v + (size_t)t * kvd;
        if (w->bq) kv_axpy_f32(q, 1.0f, w->bq, qd);
        if (w->bk) kv_axpy_f32(k, 1.0f, w->bk, kvd);
        if (w->bv) kv_axpy_f32(v, 1.0f, w->bv, kvd);
        if (w->q_norm)
            for (int h = 0; h < mi->n_heads; h++) rmsnorm(q + (size_t)h * hd, q + (size_t)h * hd, w->q_norm, hd, mi->norm_eps);
        if (w->k_norm)
            for (int h = 0; h < mi->n_kv_heads; h++) rmsnorm(k + (size_t)h * hd, k + (size_t)h * hd, w->k_norm, hd, mi->norm_eps);
    }
}

/* ------------------------------------------------- sliding-window trimming */

/* Moves entry keep[j] of each of a view's per-slot rows (n_rows rows of
 * `stride` entries of `size` bytes) to entry j, and zeroes the entries
 * from n_keep to len, as a shorter head's rows are. */
static void compact_rows(void *base, size_t size, int32_t n_rows, int32_t stride, const int32_t *keep,
                         int32_t n_keep, int32_t len) {
    for (int32_t r = 0; r < n_rows; r++) {
        char *row = (char *)base + (size_t)r * (size_t)stride * size;
        for (int32_t j = 0; j < n_keep; j++)
            if (keep[j] != j) memcpy(row + (size_t)j * size, row + (size_t)keep[j] * size, size);
        memset(row + (size_t)n_keep * size, 0, (size_t)(len - n_keep) * size);
    }
}

/* The statistics rows of the query heads of KV head g, compacted as the
 * head's slots are about to be. */
static void compact_stats(kv_ctx *c, int g, const int32_t *keep, int32_t n_keep, int32_t len) {
    const int group = c->mi->n_heads / c->mi->n_kv_heads;
    const int32_t st = c->stats_stride, wn = c->plan.win_n;
    for (int h = g * group; h < (g + 1) * group; h++) {
        const size_t row = (size_t)h * (size_t)st;
        if (c->st_last) compact_rows(c->st_last + row, sizeof(float), 1, st, keep, n_keep, len);
        if (c->st_colsum) compact_rows(c->st_colsum + row, sizeof(float), 1, st, keep, n_keep, len);
        if (c->st_dcolsum) compact_rows(c->st_dcolsum + row, sizeof(float), 1, st, keep, n_keep, len);
        if (c->st_reduced) compact_rows(c->st_reduced + row, sizeof(double), 1, st, keep, n_keep, len);
        if (c->st_window && wn > 0)
            compact_rows(c->st_window + (size_t)h * (size_t)wn * (size_t)st, sizeof(float), wn, st, keep, n_keep, len);
    }
}

/* After window layer `layer` attended for the queries up to position
 * qlast: frees every slot no later query can see (position <= qlast + 1 -
 * window; the next query sits at qlast + 1), as llama.cpp's SWA cache
 * holds only the window. Why here, before the hook: a policy then budgets
 * and scores only slots its layer can still use, and what it sees at a
 * decision does not depend on how the engine cut the forwards (the floor
 * depends only on the last query). Never with cache or rerotated
 * positions (removing a slot renumbers the others), a layout (explicit
 * positions), or a hook that cannot move its per-slot state. */
static int swa_trim(kv_ctx *c, int layer, int32_t qlast) {
    const int32_t win = layer_window(c, layer);
    if (!win || c->swa_keep || c->lay || c->hook.positions != KV_POS_ORIGINAL) return KV_OK;
    if (c->hook.on_layer && !c->hook.on_trim) return KV_OK;
    const int64_t floor64 = (int64_t)qlast + 2 - win;
    if (floor64 <= 0) return KV_OK;
    const int32_t min_pos = (int32_t)floor64;
    for (int g = 0; g < c->mi->n_kv_heads; g++) {
        kv_cache_head *ch = kv_cache_head_at(c->cache, layer, g);
        if (ch->len > c->trim_cap) {
            int32_t *v = realloc(c->trim_keep, (size_t)ch->len * sizeof *v);
            if (!v) return kv_errorf(KV_ENOMEM, "out of memory");
            c->trim_keep = v;
            c->trim_cap = ch->len;
        }
        int32_t n_keep = 0;
        for (int32_t j = 0; j < ch->len; j++)
            if (ch->pos[j] >= min_pos) c->trim_keep[n_keep++] = j;
        const int32_t len = ch->len;
        if (n_keep == len) continue; /* nothing out of the window */
        compact_stats(c, g, c->trim_keep, n_keep, len);
        /* the hook first, while the head still holds them (a shared pass
         * measures the layer's bytes before any head of it is trimmed) */
        int rc = c->hook.on_trim ? c->hook.on_trim(c->hook.user, layer, g, c->trim_keep, n_keep, min_pos) : KV_OK;
        if (!rc) rc = kv_cache_keep(c->cache, ch, c->trim_keep, n_keep);
        if (rc) return rc;
    }
    return KV_OK;
}

/* ---------------------------------------------------------- the forward */

static int eval_chunk(kv_ctx *c, const int32_t *tokens, int n, float *logits, int all_logits) {
    const kv_model *m = c->m;
    const kv_model_info *mi = c->mi;
    const int dim = mi->dim, hd = mi->head_dim, hid = mi->hidden_dim;
    const int qd = mi->n_heads * hd, kvd = mi->n_kv_heads * hd;
    const int32_t pos0 = c->pos;
    int rc;

    const int32_t *lay_pos = c->lay ? c->lay->pos : NULL; /* explicit positions, or pos0 + t */
    /* embeddings and this call's rotary angles */
    for (int t = 0; t < n; t++) {
        float *xt = c->x + (size_t)t * dim;
        kv_dequant_rows(kv_model_tok_embd(m), tokens[t], tokens[t] + 1, xt);
        if (mi->embd_scale != 1.0f)
            for (int i = 0; i < dim; i++) xt[i] *= mi->embd_scale;
        for (int s = 0; s < c->n_rope_sets; s++)
            rope_angles_x(&c->rs[s], mi->n_rot, lay_pos ? lay_pos[t] : (int64_t)pos0 + t, c->rs[s].mscale,
                          c->rs[s].call + (size_t)t * mi->n_rot);
    }
    if (n == 1 && (rc = scores_reserve(c, (size_t)c->n_threads * ((size_t)kv_cache_max_len(c->cache) + 1))))
        return rc;

    for (int l = 0; l < mi->n_layers; l++) {
        const kv_layer_weights *w = kv_model_layer(m, l);
        c->cur = &c->rs[w->swa && c->n_rope_sets > 1];
        /* attention */
        norm_rows(c, n, w->attn_norm, w->attn_norm_b);
        if (n == 1) {
            mv_job jobs[3] = {{&w->wq, c->xb, c->q}, {&w->wk, c->xb, c->k}, {&w->wv, c->xb, c->v}};
            matvec3(c, jobs, 3);
        } else {
            matmul(c, &w->wq, c->xb, c->q, n);
            matmul(c, &w->wk, c->xb, c->k, n);
            matmul(c, &w->wv, c->xb, c->v, n);
        }
        if (mi->clamp_kqv > 0) clamp_qkv(c, n);
        qk_extras(c, w, n);
        const int in_cache = c->hook.positions == KV_POS_CACHE;
        const int rerot = c->hook.positions == KV_POS_REROTATE && !c->alibi; /* ALiBi: nothing to rotate */
        if (rerot && ((rc = rope_tab_reserve(c, kv_cache_max_len(c->cache) + n)) || (rc = rerotate_sync(c, l))))
            return rc;
        for (int t = 0; t < n; t++) {
            const float *cs = c->cur->call + (size_t)t * mi->n_rot;
            if (!in_cache && !rerot) { /* in-cache positions rotate both at attention time */
                rope_apply(c, c->q + (size_t)t * qd, mi->n_heads, cs);
                rope_apply(c, c->k + (size_t)t * kvd, mi->n_kv_heads, cs);
            }
            for (int g = 0; g < mi->n_kv_heads; g++) {
                kv_cache_head *ch = kv_cache_head_at(c->cache, l, g);
                float *kt = c->k + (size_t)t * kvd + (size_t)g * hd;
                if (rerot) /* the new key at its index: the head's next slot */
                    rope_apply(c, kt, 1, c->cur->tab + (size_t)ch->len * mi->n_rot);
                rc = kv_cache_append(c->cache, ch, kt, c->v + (size_t)t * kvd + (size_t)g * hd,
                                     lay_pos ? lay_pos[t] : pos0 + t);
                if (rc) return rc;
            }
        }
        if (rerot && (rc = rerotate_record_new(c, l, n))) return rc;
        if (rerot) /* each query at the index of its own slot in its KV head */
            for (int h = 0; h < mi->n_heads; h++) {
                const kv_cache_head *ch = kv_cache_head_at(c->cache, l, h / (mi->n_heads / mi->n_kv_heads));
                for (int t = 0; t < n; t++)
                    rope_apply(c, c->q + (size_t)t * qd + (size_t)h * hd, 1,
                               c->cur->tab + (size_t)(ch->len - n + t) * mi->n_rot);
            }
        c->plan = kv_hook_plan(&c->hook, l, pos0, n);
        c->st_last = c->st_colsum = c->st_window = c->st_dcolsum = NULL;
        c->st_reduced = c->st_tmp = c->st_part = NULL;
        if (c->plan.needs && (rc = stats_prepare(c, l, n))) return rc;
        if (in_cache && !c->alibi && (rc = rotate_in_cache(c, l, n))) return rc;
        if (c->alibi && alibi_in_cache(c) && (rc = alibi_prepare(c, l))) return rc;
        if (n == 1) {
            attn_job j = {c, l, lay_pos ? lay_pos[0] : pos0};
            kv_pool_run(c->pool, attn_decode_worker, &j);
        } else if ((rc = attn_prefill(c, l, n, pos0))) {
            return rc;
        }
        if (w->swa && (rc = swa_trim(c, l, pos0 + n - 1))) return rc;
        if (c->hook.on_layer) {
            kv_attn_view view = {
                .layer = l, .n_heads = mi->n_heads, .n_kv_heads = mi->n_kv_heads, .n_new = n, .pos0 = pos0,
                .stride = c->stats_stride, .needs = c->plan.needs,
                .last_row = c->st_last, .colsum = c->st_colsum, .reduced = c->st_reduced,
                .win_pos0 = c->plan.win_pos0, .win_n = c->plan.win_n, .window = c->st_window,
                .dcolsum = c->st_dcolsum,
            };
            if ((rc = c->hook.on_layer(c->hook.user, c->cache, &view))) return rc;
        }
        if (n == 1 && mi->arch != KV_ARCH_MPT && !w->post_attn_norm && mi->ffn_act == KV_ACT_SILU) {
            decode_ffn(c, w); /* wo, the SwiGLU MLP and both residuals in one pool job */
            continue;
        }
        matmul(c, &w->wo, c->att, c->xb2, n);
        if (w->post_attn_norm) pool_range(c, n, KV_PAR_ROWS, post_norm_range, w->post_attn_norm);
        pool_range(c, (int64_t)n * dim, KV_PAR_ELEMS, residual_range, NULL);

        /* SwiGLU MLP (MPT: GELU) */
        norm_rows(c, n, w->ffn_norm, w->ffn_norm_b);
        if (mi->arch == KV_ARCH_MPT) {
            mlp_up_gelu(c, w, n);
        } else if (n == 1) {
            mv_job jobs[2] = {{&w->w_gate, c->xb, c->hb}, {&w->w_up, c->xb, c->hb2}};
            matvec3(c, jobs, 2);
        } else {
            matmul(c, &w->w_gate, c->xb, c->hb, n);
            matmul(c, &w->w_up, c->xb, c->hb2, n);
        }
        if (mi->arch != KV_ARCH_MPT) pool_range(c, (int64_t)n * hid, KV_PAR_ELEMS, swiglu_range, NULL);
        matmul(c, &w->w_down, c->hb, c->xb2, n);
        if (w->post_ffn_norm) pool_range(c, n, KV_PAR_ROWS, post_norm_range, w->post_ffn_norm);
        pool_range(c, (int64_t)n * dim, KV_PAR_ELEMS, residual_range, NULL);
    }

    c->pos = lay_pos ? lay_pos[n - 1] + 1 : c->pos + n;
    if (!logits) return KV_OK;
    /* final norm and classifier: every row, or the last one */
    int first = all_logits ? 0 : n - 1, rows = n - first;
    for (int t = first; t < n; t++)
        norm_row(c, c->xb + (size_t)(t - first) * dim, c->x + (size_t)t * dim, kv_model_out_norm(m),
                 kv_model_out_norm_bias(m));
    matmul(c, kv_model_output(m), c->xb, logits, rows);
    if (mi->final_softcap > 0) softcap(logits, (size_t)rows * (size_t)mi->vocab_size, mi->final_softcap);
    return KV_OK;
}

int kv_ctx_eval_ext(kv_ctx *c, const int32_t *tokens, int32_t n, const kv_eval_layout *layout, float *logits,
                    int all_logits) {
    if (!layout || (!layout->pos && !layout->sees_cached && !layout->sees))
        return kv_ctx_eval(c, tokens, n, logits, all_logits);
    const int32_t V = c->mi->vocab_size;
    if (n < 1) return kv_errorf(KV_EINVAL, "kv_ctx_eval_ext: expected at least one token, got %d", n);
    if (n > c->max_batch)
        return kv_errorf(KV_EINVAL, "kv_ctx_eval_ext: a call with a layout is one forward: %d tokens, at most %d",
                         n, c->max_batch);
    if (c->hook.positions != KV_POS_ORIGINAL)
        return kv_errorf(KV_EINVAL, "kv_ctx_eval_ext: a layout needs positions=original");
    if (c->hook.needs || c->hook.split)
        return kv_errorf(KV_EINVAL, "kv_ctx_eval_ext: a layout cannot be combined with attention statistics "
                         "or forward splits");
    for (int32_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return kv_errorf(KV_EINVAL, "token %d (index %d) is outside the vocabulary [0, %d)", tokens[i], i, V);
        if (layout->pos && (layout->pos[i] < 0 || layout->pos[i] == INT32_MAX || (i && layout->pos[i] < layout->pos[i - 1])))
            return kv_errorf(KV_EINVAL, "kv_ctx_eval_ext: position %d of token %d: expected non-decreasing "
                             "positions >= 0", layout->pos[i], i);
    }
    c->lay = layout;
    int rc = eval_chunk(c, tokens, n, logits, all_logits);
    c->lay = NULL;
    return rc;
}

int kv_ctx_eval(kv_ctx *c, const int32_t *tokens, int32_t n, float *logits, int all_logits) {
    const int32_t V = c->mi->vocab_size;
    if (n < 1) return kv_errorf(KV_EINVAL, "kv_ctx_eval: expected at least one token, got %d", n);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return kv_errorf(KV_EINVAL, "token %d (index %d) is outside the vocabulary [0, %d)", tokens[i], i, V);
    if (c->pos > INT32_MAX - n) return kv_errorf(KV_EINVAL, "sequence longer than 2^31 tokens");
    for (int32_t done = 0; done < n;) {
        int32_t len = n - done < c->max_batch ? n - done : c->max_batch;
        if (c->hook.split) { /* the hook's chunk boundaries */
            int32_t m = c->hook.split(c->hook.user, c->pos, len);
            if (m >= 1 && m < len) len = m;
        }
        int last = done + len == n;
        float *out = NULL;
        if (logits && all_logits) out = logits + (size_t)done * V;
        else if (logits && last) out = logits;
        int rc = eval_chunk(c, tokens + done, len, out, all_logits);
        if (rc) return rc;
        done += len;
    }
    return KV_OK;
}
