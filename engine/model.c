/* model.c - loading llama2.c and GGUF (llama, mpt) files into kv_model.
 *
 * Every size read from a file is checked before it is used: the header
 * values against sane limits (so products cannot overflow), and each
 * section's end against the file size, so a truncated file names the
 * section it lost and the offset where the file ends. */
#define _POSIX_C_SOURCE 200809L
#include "model_impl.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kv_error.h"
#include "quant.h"

#define KV_LLAMA2C_MAGIC_Q8 0x616b3432u /* "ak42" */
#define KV_GGUF_MAGIC 0x46554747u       /* "GGUF" read little-endian */

struct kv_model {
    char *path;
    kv_model_info info;
    kv_tensor tok_embd;      /* [vocab][dim] */
    kv_layer_weights *layers;/* [n_layers] */
    const float *out_norm;   /* [dim] */
    const float *out_norm_b; /* [dim] MPT LayerNorm bias, or NULL */
    kv_tensor output;        /* [vocab][dim] */
    const float *rope_freqs; /* [n_rot/2] per-pair divisors (Llama 3.1, phi3), or NULL */
    kv_tokenizer *tok;
    /* ownership */
    kv_filemap file;         /* llama2.c files: the whole file, read-only (file.data [file.size]) */
    kv_gguf *gguf;           /* GGUF files: owns its own mapping */
    void **owned;            /* heap blocks to free (converted norms, aligned scales) */
    int n_owned, cap_owned;
};

kv_model_params kv_model_default_params(void) {
    kv_model_params p = {0};
    return p;
}

const char *kv_model_format_name(kv_model_format f) {
    switch (f) {
    case KV_FORMAT_GGUF: return "gguf";
    case KV_FORMAT_LLAMA2C: return "llama2c";
    case KV_FORMAT_LLAMA2C_Q8: return "llama2c-q8";
    }
    return "?";
}

static void *model_own(kv_model *m, size_t bytes) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 16;
        void **o = realloc(m->owned, (size_t)cap * sizeof *o);
        if (!o) return NULL;
        m->owned = o;
        m->cap_owned = cap;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (p) m->owned[m->n_owned++] = p;
    return p;
}

void kv_model_free(kv_model *m) {
    if (!m) return;
    kv_tokenizer_free(m->tok);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    kv_filemap_close(&m->file);
    kv_gguf_close(m->gguf);
    free(m->path);
    free(m);
}

const kv_model_info *kv_model_get_info(const kv_model *m) { return &m->info; }
const kv_tokenizer *kv_model_tokenizer(const kv_model *m) { return m->tok; }
const char *kv_model_path(const kv_model *m) { return m->path; }
const kv_filemap *kv_model_file(const kv_model *m) { return m->gguf ? kv_gguf_filemap(m->gguf) : &m->file; }
const kv_tensor *kv_model_tok_embd(const kv_model *m) { return &m->tok_embd; }
const kv_layer_weights *kv_model_layer(const kv_model *m, int l) { return &m->layers[l]; }
const float *kv_model_out_norm(const kv_model *m) { return m->out_norm; }
const float *kv_model_out_norm_bias(const kv_model *m) { return m->out_norm_b; }


const char *kv_rope_pair_name(kv_rope_pair p) { return p == KV_ROPE_NEOX ? "neox" : "norm"; }
const char *kv_rope_scaling_name(kv_rope_scaling s) {
    return s == KV_ROPE_SCALING_LINEAR ? "linear" : s == KV_ROPE_SCALING_YARN ? "yarn" : "none";
}

const char *kv_gelu_name(kv_gelu g) { return g == KV_GELU_ERF ? "erf" : "tanh"; }

int kv_gelu_parse(const char *name, kv_gelu *out) {
    if (name && !strcmp(name, "tanh")) *out = KV_GELU_TANH;
    else if (name && !strcmp(name, "erf")) *out = KV_GELU_ERF;
    else return kv_errorf(KV_EINVAL, "gelu: expected tanh or erf, got '%s'", name ? name : "");
    return KV_OK;
}

double kv_alibi_slope(int n_heads, double max_bias, int h) {
    int n2 = 1;
    while (2 * n2 <= n_heads) n2 *= 2;
    double m0 = pow(2.0, -max_bias / n2), m1 = pow(2.0, -(max_bias / 2.0) / n2);
    return h < n2 ? pow(m0, h + 1) : pow(m1, 2 * (h - n2) + 1);
}
const kv_tensor *kv_model_output(const kv_model *m) { return &m->output; }

void kv_model_swa_layers(const kv_model *m, char *buf, size_t cap) {
    size_t o = 0;
    if (cap) buf[0] = '\0';
    for (int l = 0; l < m->info.n_layers && o + 1 < cap; l++) {
        if (!m->layers[l].swa || (l > 0 && m->layers[l - 1].swa)) continue;
        int e = l;
        while (e + 1 < m->info.n_layers && m->layers[e + 1].swa) e++;
        int n = e > l ? snprintf(buf + o, cap - o, "%s%d-%d", o ? "," : "", l, e) : snprintf(buf + o, cap - o, "%s%d", o ? "," : "", l);
        if (n < 0 || (size_t)n >= cap - o) break;
        o += (size_t)n;
    }
}

/* YaRN's correction range (Peng et al. 2023, eq. 17-18, as llama.cpp's
 * ggml_rope_yarn_corr_dims): the pair indices whose wavelength spans
 * beta_fast and beta_slow rotations over the original context. */
static double yarn_corr_dim(int n_rot, double orig_ctx, double n_turns, double base) {
    return n_rot * log(orig_ctx / (n_turns * 2 * 3.14159265358979323846)) / (2 * log(base));
}

void kv_model_rope_freqs(const kv_model *m, int swa, double *inv_freq, double *mscale) {
    const kv_model_info *i = &m->info;
    const int half = i->n_rot / 2;
    const double base = swa ? i->rope_base_swa : i->rope_base;
    /* gemma3 scales its global layers only (llama.cpp: rope_freq_scale_train_swa = 1) */
    const kv_rope_scaling type = swa && i->arch == KV_ARCH_GEMMA3 ? KV_ROPE_SCALING_NONE : i->rope_scaling;
    const double scale = type == KV_ROPE_SCALING_NONE ? 1.0 : 1.0 / i->rope_factor;
    double lo = 0, hi = 0;
    if (type == KV_ROPE_SCALING_YARN) {
        lo = floor(yarn_corr_dim(i->n_rot, i->rope_orig_ctx, 32.0, base));
        hi = ceil(yarn_corr_dim(i->n_rot, i->rope_orig_ctx, 1.0, base));
        if (lo < 0) lo = 0;
        if (hi > i->n_rot - 1) hi = i->n_rot - 1;
    }
    *mscale = i->rope_attn_factor > 0 ? i->rope_attn_factor : 1.0;
    for (int k = 0; k < half; k++) {
        double f = pow(base, -2.0 * k / i->n_rot);
        if (m->rope_freqs) f /= m->rope_freqs[k];
        if (type == KV_ROPE_SCALING_YARN) {
            double y = (k - lo) / (hi - lo > 0.001 ? hi - lo : 0.001);
            double extrap = 1.0 - (y < 0 ? 0 : y > 1 ? 1 : y); /* 1: keep the original frequency */
            f = f * scale * (1.0 - extrap) + f * extrap;
        } else {
            f *= scale;
        }
        inv_freq[k] = f;
    }
    if (type == KV_ROPE_SCALING_YARN) *mscale *= 1.0 + 0.1 * log(1.0 / scale);
}

/* ---------------------------------------------------------------- helpers */

static kv_filemap_mode weights_mode(const kv_model_params *p) {
    return p->weights_mmap ? KV_FILEMAP_MMAP : KV_FILEMAP_COPY;
}

static kv_tensor tensor2d(kv_dtype t, int64_t rows, int64_t cols, const void *data) {
    kv_tensor x = {.type = t, .rows = rows, .cols = cols, .data = data};
    return x;
}

size_t kv_tensor_bytes(const kv_tensor *t) {
    size_t b = kv_dtype_bytes(t->type, t->rows * t->cols);
    if (t->type == KV_Q8_G) b += (size_t)(t->rows * t->cols / t->group) * sizeof(float);
    return b;
}

size_t kv_model_decode_bytes(const kv_model *m) {
    const kv_model_info *i = &m->info;
    size_t b = kv_tensor_bytes(&m->output) + (size_t)i->dim * 4 * (2 * (size_t)i->n_layers + 1);
    b += kv_tensor_bytes(&m->tok_embd) / (size_t)i->vocab_size;
    for (int l = 0; l < i->n_layers; l++) {
        const kv_layer_weights *w = &m->layers[l];
        b += kv_tensor_bytes(&w->wq) + kv_tensor_bytes(&w->wk) + kv_tensor_bytes(&w->wv) + kv_tensor_bytes(&w->wo) +
             kv_tensor_bytes(&w->w_gate) + kv_tensor_bytes(&w->w_down) + kv_tensor_bytes(&w->w_up);
    }
    return b;
}

/* Totals over the weights as held: parameters and bytes. */
static void model_count(kv_model *m) {
    const kv_model_info *i = &m->info;
    int64_t n = 0;
    size_t b = 0;
    n += m->tok_embd.rows * m->tok_embd.cols;
    b += kv_tensor_bytes(&m->tok_embd);
    for (int l = 0; l < i->n_layers; l++) {
        const kv_layer_weights *w = &m->layers[l];
        const kv_tensor *ts[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_down, &w->w_up};
        for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
            n += ts[k]->rows * ts[k]->cols;
            b += kv_tensor_bytes(ts[k]);
        }
        int n_vec = 2 + (w->attn_norm_b != NULL) + (w->ffn_norm_b != NULL) + (w->post_attn_norm != NULL) +
                    (w->post_ffn_norm != NULL); /* norms, MPT biases, gemma's post-norms */
        int64_t extra = (w->bq ? (int64_t)i->n_heads * i->head_dim : 0) +
                        (w->bk ? 2 * (int64_t)i->n_kv_heads * i->head_dim : 0) + (w->q_norm ? 2 * (int64_t)i->head_dim : 0);
        n += n_vec * (int64_t)i->dim + extra;
        b += ((size_t)n_vec * (size_t)i->dim + (size_t)extra) * sizeof(float);
    }
    int n_out = 1 + (m->out_norm_b != NULL);
    n += n_out * (int64_t)i->dim;
    b += (size_t)n_out * (size_t)i->dim * sizeof(float);
    if (!i->tied_output) {
        n += m->output.rows * m->output.cols;
        b += kv_tensor_bytes(&m->output);
    }
    m->info.n_params = n;
    m->info.weight_bytes = b;
}

/* Checks the hyper-parameters every format shares. Limits keep every
 * product below 2^62 so later size arithmetic cannot overflow. */
static int check_hparams(const char *path, const kv_model_info *i) {
    const struct { const char *name; int64_t v, lo, hi; } lim[] = {
        {"dim", i->dim, 1, 1 << 16},          {"hidden_dim", i->hidden_dim, 1, 1 << 18},
        {"n_layers", i->n_layers, 1, 1024},   {"n_heads", i->n_heads, 1, 1024},
        {"n_kv_heads", i->n_kv_heads, 1, 1024}, {"vocab_size", i->vocab_size, 1, 1 << 22},
        {"context length", i->ctx_len, 1, 1 << 24},
    };
    for (size_t k = 0; k < sizeof lim / sizeof lim[0]; k++)
        if (lim[k].v < lim[k].lo || lim[k].v > lim[k].hi)
            return kv_errorf(KV_EFORMAT, "%s: header: expected %s in [%lld, %lld], got %lld", path,
                             lim[k].name, (long long)lim[k].lo, (long long)lim[k].hi,
                             (long long)lim[k].v);
    /* rotary GGUF files may state the head size (key_length) */
    int own_head = i->format == KV_FORMAT_GGUF && i->arch != KV_ARCH_MPT;
    if (!own_head && i->dim % i->n_heads != 0)
        return kv_errorf(KV_EFORMAT, "%s: header: dim %d is not a multiple of n_heads %d", path,
                         i->dim, i->n_heads);
    if (i->n_heads % i->n_kv_heads != 0)
        return kv_errorf(KV_EFORMAT, "%s: header: n_heads %d is not a multiple of n_kv_heads %d",
                         path, i->n_heads, i->n_kv_heads);
    if (i->arch != KV_ARCH_MPT && (i->n_rot < 2 || i->n_rot > i->head_dim || i->n_rot % 2 != 0))
        return kv_errorf(KV_EFORMAT, "%s: header: expected an even rotary dimension count in [2, %d], got %d",
                         path, i->head_dim, i->n_rot);
    return KV_OK;
}

/* The tokenizer the caller named: a llama2.c .bin of the model's vocabulary
 * size, a GGUF file's, or a GPT-2 encoder.json + vocab.bpe folder. */
static int given_tokenizer(kv_model *m, const kv_model_params *p) {
    int rc = kv_tokenizer_load(p->tokenizer_path, m->info.vocab_size, &m->tok);
    if (rc == KV_OK && kv_tokenizer_n_vocab(m->tok) > m->info.vocab_size)
        return kv_errorf(KV_EINVAL, "%s: the tokenizer has %d tokens, more than the %d of %s", p->tokenizer_path,
                         kv_tokenizer_n_vocab(m->tok), m->info.vocab_size, m->path);
    return rc;
}

static int load_tokenizer_llama2c(kv_model *m, const kv_model_params *p) {
    if (p->no_tokenizer) return KV_OK;
    if (p->tokenizer_path) return given_tokenizer(m, p);
    /* beside the model: tok<vocab>.bin, then tokenizer.bin */
    const char *slash = strrchr(m->path, '/');
    size_t dirlen = slash ? (size_t)(slash - m->path + 1) : 0;
    char cand[2][64];
    snprintf(cand[0], sizeof cand[0], "tok%d.bin", m->info.vocab_size);
    snprintf(cand[1], sizeof cand[1], "tokenizer.bin");
    for (int k = 0; k < 2; k++) {
        size_t n = dirlen + strlen(cand[k]) + 1;
        char *f = malloc(n);
        if (!f) return kv_errorf(KV_ENOMEM, "out of memory");
        memcpy(f, m->path, dirlen);
        strcpy(f + dirlen, cand[k]);
        int rc = access(f, R_OK) == 0 ? kv_tokenizer_load_llama2c(f, m->info.vocab_size, &m->tok)
                                      : KV_ENOTFOUND;
        free(f);
        if (rc != KV_ENOTFOUND) return rc;
    }
    return kv_errorf(KV_ENOTFOUND,
                     "%s: no tokenizer given and none found beside it (tried tok%d.bin, tokenizer.bin)",
                     m->path, m->info.vocab_size);
}

/* ------------------------------------------------------ llama2.c legacy */

/* A cursor over the file's fp32 arrays: each take() checks the section fits. */
typedef struct l2c_cursor {
    const char *path;
    const uint8_t *base;
    size_t size, off;
} l2c_cursor;

static int l2c_take(l2c_cursor *c, const char *what, uint64_t n_elems, size_t elem_size,
                    const void **out) {
    uint64_t bytes = n_elems * elem_size; /* hparam limits keep this < 2^62 */
    if (bytes > c->size - c->off)
        return kv_errorf(KV_EFORMAT,
                         "%s: offset %zu: expected %s (%llu bytes), but the file ends at offset %zu",
                         c->path, c->off, what, (unsigned long long)bytes, c->size);
    *out = c->base + c->off;
    c->off += bytes;
    return KV_OK;
}

static int load_llama2c_legacy(kv_model *m, const kv_model_params *p) {
    kv_model_info *i = &m->info;
    if (m->file.size < 28)
        return kv_errorf(KV_EFORMAT, "%s: offset 0: expected a 28-byte llama2.c header, file has %zu bytes",
                         m->path, m->file.size);
    int32_t h[7];
    memcpy(h, m->file.data, sizeof h);
    i->arch = KV_ARCH_LLAMA;
    i->format = KV_FORMAT_LLAMA2C;
    i->dim = h[0];
    i->hidden_dim = h[1];
    i->n_layers = h[2];
    i->n_heads = h[3];
    i->n_kv_heads = h[4];
    i->tied_output = h[5] > 0;
    i->vocab_size = h[5] == INT32_MIN ? 0 : (h[5] > 0 ? h[5] : -h[5]);
    i->ctx_len = h[6];
    i->head_dim = i->n_heads > 0 ? i->dim / i->n_heads : 0;
    i->n_rot = i->head_dim;
    i->rope_base = 10000.0f;
    i->norm_eps = 1e-5f;
    i->wtype = KV_F32;
    int rc = check_hparams(m->path, i);
    if (rc) return rc;

    int64_t dim = i->dim, hid = i->hidden_dim, L = i->n_layers, V = i->vocab_size;
    int64_t kvd = (int64_t)i->n_kv_heads * i->head_dim;
    l2c_cursor c = {m->path, m->file.data, m->file.size, 28};
    const void *emb = NULL, *rms_att = NULL, *wq = NULL, *wk = NULL, *wv = NULL, *wo = NULL, *rms_ffn = NULL,
               *w1 = NULL, *w2 = NULL, *w3 = NULL, *rms_fin = NULL, *rope = NULL, *wcls = NULL;
    if ((rc = l2c_take(&c, "token_embedding [vocab][dim]", (uint64_t)(V * dim), 4, &emb)) ||
        (rc = l2c_take(&c, "rms_att [layers][dim]", (uint64_t)(L * dim), 4, &rms_att)) ||
        (rc = l2c_take(&c, "wq [layers][dim][dim]", (uint64_t)(L * dim * dim), 4, &wq)) ||
        (rc = l2c_take(&c, "wk [layers][kv_dim][dim]", (uint64_t)(L * kvd * dim), 4, &wk)) ||
        (rc = l2c_take(&c, "wv [layers][kv_dim][dim]", (uint64_t)(L * kvd * dim), 4, &wv)) ||
        (rc = l2c_take(&c, "wo [layers][dim][dim]", (uint64_t)(L * dim * dim), 4, &wo)) ||
        (rc = l2c_take(&c, "rms_ffn [layers][dim]", (uint64_t)(L * dim), 4, &rms_ffn)) ||
        (rc = l2c_take(&c, "w1 [layers][hidden][dim]", (uint64_t)(L * hid * dim), 4, &w1)) ||
        (rc = l2c_take(&c, "w2 [layers][dim][hidden]", (uint64_t)(L * dim * hid), 4, &w2)) ||
        (rc = l2c_take(&c, "w3 [layers][hidden][dim]", (uint64_t)(L * hid * dim), 4, &w3)) ||
        (rc = l2c_take(&c, "rms_final [dim]", (uint64_t)dim, 4, &rms_fin)) ||
        (rc = l2c_take(&c, "the legacy RoPE tables [2][seq_len][head_dim/2]",
                       (uint64_t)i->ctx_len * (uint64_t)i->head_dim, 4, &rope)))
        return rc;
    if (!i->tied_output &&
        (rc = l2c_take(&c, "wcls [vocab][dim] (vocab_size < 0: unshared classifier)",
                       (uint64_t)(V * dim), 4, &wcls)))
        return rc;
    if (c.off != c.size)
        return kv_errorf(KV_EFORMAT, "%s: offset %zu: expected the end of the file, found %zu more bytes "
                         "(wrong header, or not a llama2.c legacy checkpoint)", m->path, c.off, c.size - c.off);

    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->layers) return kv_errorf(KV_ENOMEM, "out of memory");
    const float *f_att = rms_att, *f_ffn = rms_ffn;
    for (int64_t l = 0; l < L; l++) {
        kv_layer_weights *w = &m->layers[l];
        w->attn_norm = f_att + l * dim;
        w->ffn_norm = f_ffn + l * dim;
        w->wq = tensor2d(KV_F32, dim, dim, (const float *)wq + l * dim * dim);
        w->wk = tensor2d(KV_F32, kvd, dim, (const float *)wk + l * kvd * dim);
        w->wv = tensor2d(KV_F32, kvd, dim, (const float *)wv + l * kvd * dim);
        w->wo = tensor2d(KV_F32, dim, dim, (const float *)wo + l * dim * dim);
        w->w_gate = tensor2d(KV_F32, hid, dim, (const float *)w1 + l * hid * dim);
        w->w_down = tensor2d(KV_F32, dim, hid, (const float *)w2 + l * dim * hid);
        w->w_up = tensor2d(KV_F32, hid, dim, (const float *)w3 + l * hid * dim);
    }
    m->tok_embd = tensor2d(KV_F32, V, dim, emb);
    m->out_norm = rms_fin;
    m->output = i->tied_output ? m->tok_embd : tensor2d(KV_F32, V, dim, wcls);
    model_count(m);
    return load_tokenizer_llama2c(m, p);
}

/* ----------------------------------------------------- llama2.c "ak42" */

/* One group-quantized tensor of the version-2 file: all int8 values, then
 * all fp32 scales. Scales are copied when misaligned (reading an unaligned
 * float through a float pointer is undefined behaviour). */
static int q8_take(kv_model *m, l2c_cursor *c, const char *what, int64_t n, int32_t gs,
                   const int8_t **q, const float **s) {
    const void *qv = NULL, *sv = NULL;
    int rc = l2c_take(c, what, (uint64_t)n, 1, &qv);
    if (rc) return rc;
    char buf[160];
    snprintf(buf, sizeof buf, "%s scales", what);
    if ((rc = l2c_take(c, buf, (uint64_t)(n / gs), 4, &sv))) return rc;
    *q = qv;
    if (((uintptr_t)sv & 3u) == 0) {
        *s = sv;
    } else {
        float *a = model_own(m, (size_t)(n / gs) * sizeof(float));
        if (!a) return kv_errorf(KV_ENOMEM, "out of memory");
        memcpy(a, sv, (size_t)(n / gs) * sizeof(float));
        *s = a;
    }
    return KV_OK;
}

static kv_tensor q8g(const int8_t *q, const float *s, int32_t gs, int64_t rows, int64_t cols) {
    kv_tensor t = {.type = KV_Q8_G, .rows = rows, .cols = cols, .data = q, .scales = s, .group = gs};
    return t;
}

static int load_llama2c_q8(kv_model *m, const kv_model_params *p) {
    kv_model_info *i = &m->info;
    const uint8_t *b = m->file.data;
    if (m->file.size < 256)
        return kv_errorf(KV_EFORMAT, "%s: offset 0: expected a 256-byte version-2 header, file has %zu bytes",
                         m->path, m->file.size);
    int32_t version, h[7], gs;
    memcpy(&version, b + 4, 4);
    if (version != 2)
        return kv_errorf(KV_EUNSUPPORTED, "%s: offset 4: expected llama2.c export version 2, got %d",
                         m->path, version);
    memcpy(h, b + 8, sizeof h);
    uint8_t shared = b[36];
    memcpy(&gs, b + 37, 4);
    i->arch = KV_ARCH_LLAMA;
    i->format = KV_FORMAT_LLAMA2C_Q8;
    i->dim = h[0];
    i->hidden_dim = h[1];
    i->n_layers = h[2];
    i->n_heads = h[3];
    i->n_kv_heads = h[4];
    i->vocab_size = h[5];
    i->ctx_len = h[6];
    i->tied_output = shared != 0;
    i->head_dim = i->n_heads > 0 ? i->dim / i->n_heads : 0;
    i->n_rot = i->head_dim;
    i->rope_base = 10000.0f;
    i->norm_eps = 1e-5f;
    i->wtype = KV_Q8_G;
    int rc = check_hparams(m->path, i);
    if (rc) return rc;
    if (shared > 1)
        return kv_errorf(KV_EFORMAT, "%s: offset 36: expected shared_classifier 0 or 1, got %u", m->path, shared);
    int64_t dim = i->dim, hid = i->hidden_dim, L = i->n_layers, V = i->vocab_size;
    int64_t kvd = (int64_t)i->n_kv_heads * i->head_dim;
    if (gs < 1 || dim % gs != 0 || hid % gs != 0)
        return kv_errorf(KV_EFORMAT, "%s: offset 37: expected a group size dividing dim %lld and hidden_dim %lld, got %d",
                         m->path, (long long)dim, (long long)hid, gs);

    l2c_cursor c = {m->path, m->file.data, m->file.size, 256};
    const void *att = NULL, *ffn = NULL, *fin = NULL;
    if ((rc = l2c_take(&c, "rms_att [layers][dim]", (uint64_t)(L * dim), 4, &att)) ||
        (rc = l2c_take(&c, "rms_ffn [layers][dim]", (uint64_t)(L * dim), 4, &ffn)) ||
        (rc = l2c_take(&c, "rms_final [dim]", (uint64_t)dim, 4, &fin)))
        return rc;
    /* Quantized tensors follow, each stored as its int8 values then its
     * fp32 group scales: the embedding, then per kind (wq, wk, wv, wo, w1,
     * w2, w3) one tensor per layer, then the classifier when not shared. */
    const int8_t *q = NULL;
    const float *s = NULL;
    if ((rc = q8_take(m, &c, "token_embedding [vocab][dim] int8", V * dim, gs, &q, &s))) return rc;
    m->tok_embd = q8g(q, s, gs, V, dim);
    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->layers) return kv_errorf(KV_ENOMEM, "out of memory");
    const struct { const char *what; size_t field; int64_t rows, cols; } kinds[7] = {
        {"wq [dim][dim]", offsetof(kv_layer_weights, wq), dim, dim},
        {"wk [kv_dim][dim]", offsetof(kv_layer_weights, wk), kvd, dim},
        {"wv [kv_dim][dim]", offsetof(kv_layer_weights, wv), kvd, dim},
        {"wo [dim][dim]", offsetof(kv_layer_weights, wo), dim, dim},
        {"w1 [hidden][dim]", offsetof(kv_layer_weights, w_gate), hid, dim},
        {"w2 [dim][hidden]", offsetof(kv_layer_weights, w_down), dim, hid},
        {"w3 [hidden][dim]", offsetof(kv_layer_weights, w_up), hid, dim},
    };
    char what[96];
    for (int k = 0; k < 7; k++)
        for (int64_t l = 0; l < L; l++) {
            snprintf(what, sizeof what, "layer %lld %s int8", (long long)l, kinds[k].what);
            if ((rc = q8_take(m, &c, what, kinds[k].rows * kinds[k].cols, gs, &q, &s))) return rc;
            *(kv_tensor *)((char *)&m->layers[l] + kinds[k].field) = q8g(q, s, gs, kinds[k].rows, kinds[k].cols);
        }
    if (!i->tied_output) {
        if ((rc = q8_take(m, &c, "wcls [vocab][dim] int8", V * dim, gs, &q, &s))) return rc;
        m->output = q8g(q, s, gs, V, dim);
    } else {
        m->output = m->tok_embd;
    }
    if (c.off != c.size)
        return kv_errorf(KV_EFORMAT, "%s: offset %zu: expected the end of the file, found %zu more bytes",
                         m->path, c.off, c.size - c.off);
    const float *fa = att, *ff = ffn;
    for (int64_t l = 0; l < L; l++) {
        m->layers[l].attn_norm = fa + l * dim;
        m->layers[l].ffn_norm = ff + l * dim;
    }
    m->out_norm = fin;
    model_count(m);
    return load_tokenizer_llama2c(m, p);
}

/* ----------------------------------------------------------------- GGUF */

static int gguf_int(const kv_gguf *g, const char *key, int64_t dflt, int required, int64_t *out) {
    int rc = kv_gguf_get_int(g, key, out);
    if (rc == KV_ENOTFOUND && !required) {
        *out = dflt;
        return KV_OK;
    }
    if (rc == KV_ENOTFOUND)
        return kv_errorf(KV_EFORMAT, "%s: missing metadata key '%s'", kv_gguf_path(g), key);
    return rc;
}

static int gguf_float(const kv_gguf *g, const char *key, double dflt, double *out) {
    int rc = kv_gguf_get_float(g, key, out);
    if (rc == KV_ENOTFOUND) {
        *out = dflt;
        return KV_OK;
    }
    return rc;
}

/* Finds a tensor and checks its shape (ne order: [cols, rows]). */
/* An integer hyper-parameter "ARCH.KEY" into *out (-1 when it does not
 * fit an int32, which check_hparams then rejects). */
static int gguf_arch_int(const kv_gguf *g, const char *arch, const char *key, int64_t dflt, int required,
                         int32_t *out) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int64_t v;
    int rc = gguf_int(g, k, dflt, required, &v);
    if (rc) return rc;
    *out = v > INT32_MAX ? -1 : (int32_t)v;
    return KV_OK;
}

/* The shape every architecture states under its prefix ("llama", "mpt"):
 * widths, depth, heads (KV heads default to the heads) and context. */
static int gguf_common_hparams(const kv_gguf *g, const char *arch, kv_model_info *i) {
    int rc;
    if ((rc = gguf_arch_int(g, arch, "embedding_length", 0, 1, &i->dim)) ||
        (rc = gguf_arch_int(g, arch, "feed_forward_length", 0, 1, &i->hidden_dim)) ||
        (rc = gguf_arch_int(g, arch, "block_count", 0, 1, &i->n_layers)) ||
        (rc = gguf_arch_int(g, arch, "attention.head_count", 0, 1, &i->n_heads)) ||
        (rc = gguf_arch_int(g, arch, "attention.head_count_kv", i->n_heads, 0, &i->n_kv_heads)) ||
        (rc = gguf_arch_int(g, arch, "context_length", 2048, 0, &i->ctx_len)))
        return rc;
    i->head_dim = i->n_heads > 0 ? i->dim / i->n_heads : 0;
    return KV_OK;
}

/* The vocabulary size from the embedding's rows, then the whole shape checked. */
static int gguf_vocab_and_check(kv_model *m) {
    const kv_gguf_tensor *emb = kv_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!emb) return kv_errorf(KV_EFORMAT, "%s: missing tensor 'token_embd.weight'", m->path);
    m->info.vocab_size = emb->ne[1] > (1u << 22) ? -1 : (int32_t)emb->ne[1];
    return check_hparams(m->path, &m->info);
}

static int gguf_tensor(const kv_gguf *g, const char *name, int optional, uint64_t ne0, uint64_t ne1,
                       const kv_gguf_tensor **out) {
    const kv_gguf_tensor *t = kv_gguf_find_tensor(g, name);
    *out = t;
    if (!t) {
        if (optional) return KV_OK;
        return kv_errorf(KV_EFORMAT, "%s: missing tensor '%s'", kv_gguf_path(g), name);
    }
    int ok = t->ne[0] == ne0 && t->ne[1] == ne1 && t->ne[2] == 1 && t->ne[3] == 1;
    if (!ok)
        return kv_errorf(KV_EFORMAT,
                         "%s: tensor '%s' (data offset %llu): expected shape [%llu, %llu], got [%llu, %llu, %llu, %llu]",
                         kv_gguf_path(g), name, (unsigned long long)t->offset, (unsigned long long)ne0,
                         (unsigned long long)ne1, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                         (unsigned long long)t->ne[2], (unsigned long long)t->ne[3]);
    return KV_OK;
}

static int gguf_matrix(const kv_gguf *g, const char *name, int64_t rows, int64_t cols, kv_tensor *out) {
    const kv_gguf_tensor *t;
    int rc = gguf_tensor(g, name, 0, (uint64_t)cols, (uint64_t)rows, &t);
    if (rc) return rc;
    *out = tensor2d(t->type, rows, cols, t->data);
    return KV_OK;
}

/* A 1-D norm vector as fp32: pointed to when stored F32 (GGUF data is
 * 32-byte aligned), converted into an owned copy otherwise. */
static int gguf_vector(kv_model *m, const char *name, int64_t n, const float **out) {
    const kv_gguf_tensor *t;
    int rc = gguf_tensor(m->gguf, name, 0, (uint64_t)n, 1, &t);
    if (rc) return rc;
    if (t->type == KV_F32 && ((uintptr_t)t->data & 3u) == 0) {
        *out = t->data;
        return KV_OK;
    }
    if (t->type == KV_Q8_0 || t->type == KV_Q4_0)
        return kv_errorf(KV_EUNSUPPORTED, "%s: tensor '%s': expected a float type for a norm vector, got %s",
                         m->path, name, kv_dtype_name(t->type));
    float *f = model_own(m, (size_t)n * sizeof(float));
    if (!f) return kv_errorf(KV_ENOMEM, "out of memory");
    kv_dequantize(t->type, t->data, f, n);
    *out = f;
    return KV_OK;
}

/* An optional 1-D vector (a LayerNorm bias): NULL when absent. */
static int gguf_vector_opt(kv_model *m, const char *name, int64_t n, const float **out) {
    *out = NULL;
    if (!kv_gguf_find_tensor(m->gguf, name)) return KV_OK;
    return gguf_vector(m, name, n, out);
}

/* Rows [r0, r0 + rows) of W (rows of every stored type are contiguous). */
static kv_tensor tensor_rows(const kv_tensor *W, int64_t r0, int64_t rows) {
    kv_tensor t = *W;
    t.rows = rows;
    t.data = (const uint8_t *)W->data + kv_dtype_bytes(W->type, r0 * W->cols);
    return t;
}

/* The tokenizer of a GGUF model: the given one, the file's, or none. */
static int gguf_tokenizer(kv_model *m, const kv_model_params *p) {
    const kv_gguf *g = m->gguf;
    const kv_model_info *i = &m->info;
    int rc;
    if (p->no_tokenizer) return KV_OK;
    if (p->tokenizer_path) return given_tokenizer(m, p);
    if (kv_gguf_find_key(g, "tokenizer.ggml.tokens") < 0) return KV_OK; /* weights-only file */
    if ((rc = kv_tokenizer_from_gguf(g, &m->tok))) return rc;
    /* padded token tables (qwen2) have more rows than tokens */
    if (kv_tokenizer_n_vocab(m->tok) > i->vocab_size)
        return kv_errorf(KV_EFORMAT, "%s: tokenizer has %d tokens but token_embd has only %d rows", m->path,
                         kv_tokenizer_n_vocab(m->tok), i->vocab_size);
    return KV_OK;
}

static int load_gguf_mpt(kv_model *m, const kv_model_params *p);

/* The rotary architectures, as llama.cpp defines them (src/llama-arch.cpp,
 * src/llama-model.cpp): the pairing, which optional tensors they carry and
 * how their layers differ. One table; the loader and the forward read the
 * flags, never the names. */
enum {
    AF_QKV_BIAS = 1u << 0,   /* attn_q/k/v.bias */
    AF_QK_NORM = 1u << 1,    /* attn_q_norm, attn_k_norm [head_dim] */
    AF_FUSED_QKV = 1u << 2,  /* attn_qkv [qd + 2 kvd][dim] */
    AF_FUSED_UP = 1u << 3,   /* ffn_up [2 hid][dim]: gate rows, then up rows; no ffn_gate */
    AF_GEMMA = 1u << 4,      /* sqrt(dim) embedding scale, GeGLU, tied output, post-norms */
    AF_SOFTCAP = 1u << 5,    /* {arch}.attn_logit_softcapping, final_logit_softcapping */
    AF_FACTORS = 1u << 6,    /* rope_factors_long/short (phi3) */
    AF_ROPE_FREQS = 1u << 7, /* rope_freqs.weight (Llama 3.1's scaling) */
};

typedef struct arch_desc {
    const char *name;
    kv_arch arch;
    kv_rope_pair pair;
    unsigned flags;
    int swa_pattern; /* layer l is windowed when l % swa_pattern < swa_pattern - 1; 0: no SWA */
} arch_desc;

static const arch_desc ARCHS[] = {
    {"llama", KV_ARCH_LLAMA, KV_ROPE_NORM, AF_ROPE_FREQS | AF_QKV_BIAS, 0}, /* biases optional, as llama.cpp */
    {"qwen2", KV_ARCH_QWEN2, KV_ROPE_NEOX, AF_QKV_BIAS, 0},
    {"qwen3", KV_ARCH_QWEN3, KV_ROPE_NEOX, AF_QK_NORM, 0},
    /* phi3's sliding_window key is read and not applied, as llama.cpp
     * does ("Phi SWA is currently disabled") */
    {"phi3", KV_ARCH_PHI3, KV_ROPE_NEOX, AF_FUSED_QKV | AF_FUSED_UP | AF_FACTORS, 0},
    {"gemma2", KV_ARCH_GEMMA2, KV_ROPE_NEOX, AF_GEMMA | AF_SOFTCAP, 2},
    {"gemma3", KV_ARCH_GEMMA3, KV_ROPE_NEOX, AF_GEMMA | AF_QK_NORM, 6},
};

static int load_gguf_rotary(kv_model *m, const kv_model_params *p, const arch_desc *d);

static const arch_desc *arch_find(const char *name, size_t len) {
    for (size_t k = 0; k < sizeof ARCHS / sizeof *ARCHS; k++)
        if (strlen(ARCHS[k].name) == len && !memcmp(ARCHS[k].name, name, len)) return &ARCHS[k];
    return NULL;
}

const char *kv_arch_name(kv_arch a) {
    if (a == KV_ARCH_MPT) return "mpt";
    for (size_t k = 0; k < sizeof ARCHS / sizeof *ARCHS; k++)
        if (ARCHS[k].arch == a) return ARCHS[k].name;
    return "?";
}

static int load_gguf(kv_model *m, const kv_model_params *p) {
    int rc = kv_gguf_open_ext(m->path, weights_mode(p), &m->gguf);
    if (rc) return rc;
    const char *arch;
    size_t arch_len;
    if ((rc = kv_gguf_get_str(m->gguf, "general.architecture", &arch, &arch_len)))
        return rc == KV_ENOTFOUND ? kv_errorf(KV_EFORMAT, "%s: missing metadata key 'general.architecture'", m->path) : rc;
    if (arch_len == 3 && memcmp(arch, "mpt", 3) == 0) return load_gguf_mpt(m, p);
    const arch_desc *d = arch_find(arch, arch_len);
    if (!d)
        return kv_errorf(KV_EUNSUPPORTED, "%s: architecture '%.*s' is not supported (supported: llama, qwen2, qwen3, "
                         "phi3, gemma2, gemma3, mpt)", m->path, (int)(arch_len > 64 ? 64 : arch_len), arch);
    return load_gguf_rotary(m, p, d);
}

/* ------------------------------------------------ GGUF rotary architectures */

/* The {arch}.* keys this loader knows: those it reads, and those that do
 * not change the forward (sizes it derives elsewhere, tokenizer hints).
 * Any other key under the architecture's prefix is refused by name, so a
 * file never loads silently wrong. */
static const char *const KNOWN_KEYS[] = {
    "context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "attention.layer_norm_rms_epsilon", "attention.key_length",
    "attention.value_length", "rope.dimension_count", "rope.freq_base", "rope.freq_base_swa",
    "rope.scaling.type", "rope.scaling.factor", "rope.scaling.original_context_length",
    "rope.scaling.attn_factor", "rope.scale_linear", "attention.sliding_window", "attn_logit_softcapping",
    "final_logit_softcapping", "vocab_size", "expert_count", "expert_used_count", "rope.scaling.finetuned",
    "attention.layer_norm_epsilon",
};

static int check_arch_keys(const kv_model *m, const char *arch) {
    size_t al = strlen(arch);
    for (int64_t k = 0; k < kv_gguf_n_kv(m->gguf); k++) {
        const char *key = kv_gguf_key(m->gguf, k);
        if (strncmp(key, arch, al) || key[al] != '.') continue;
        int known = 0;
        for (size_t j = 0; j < sizeof KNOWN_KEYS / sizeof *KNOWN_KEYS && !known; j++)
            known = !strcmp(key + al + 1, KNOWN_KEYS[j]);
        if (!known)
            return kv_errorf(KV_EUNSUPPORTED, "%s: metadata key '%s' is not supported: it may change the forward "
                             "pass, and kvbench does not implement it", m->path, key);
    }
    int64_t experts = 0;
    char key[96];
    snprintf(key, sizeof key, "%s.expert_count", arch);
    int rc = gguf_int(m->gguf, key, 0, 0, &experts);
    if (rc) return rc;
    if (experts > 0)
        return kv_errorf(KV_EUNSUPPORTED, "%s: '%s' = %lld: mixture-of-experts models are not supported", m->path,
                         key, (long long)experts);
    return KV_OK;
}

static int arch_float(const kv_gguf *g, const char *arch, const char *key, double dflt, double *out) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return gguf_float(g, k, dflt, out);
}

/* {arch}.rope.scaling.*: the type (none, linear, yarn; anything else is
 * refused), factor, original context and attn_factor; the older
 * rope.scale_linear key means linear. */
static int rope_scaling_hparams(kv_model *m, const char *arch) {
    kv_model_info *i = &m->info;
    char key[128];
    const char *type = NULL;
    size_t tl = 0;
    double f, lin, attn;
    int64_t orig;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    int rc = kv_gguf_get_str(m->gguf, key, &type, &tl);
    if (rc && rc != KV_ENOTFOUND) return rc;
    if ((rc = arch_float(m->gguf, arch, "rope.scale_linear", 1.0, &lin)) ||
        (rc = arch_float(m->gguf, arch, "rope.scaling.factor", lin, &f)) ||
        (rc = arch_float(m->gguf, arch, "rope.scaling.attn_factor", 1.0, &attn)))
        return rc;
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", arch);
    if ((rc = gguf_int(m->gguf, key, i->ctx_len, 0, &orig))) return rc;
    if (!type || (tl == 4 && !memcmp(type, "none", 4))) i->rope_scaling = lin != 1.0 ? KV_ROPE_SCALING_LINEAR : KV_ROPE_SCALING_NONE;
    else if (tl == 6 && !memcmp(type, "linear", 6)) i->rope_scaling = KV_ROPE_SCALING_LINEAR;
    else if (tl == 4 && !memcmp(type, "yarn", 4)) i->rope_scaling = KV_ROPE_SCALING_YARN;
    else
        return kv_errorf(KV_EUNSUPPORTED, "%s: %s.rope.scaling.type '%.*s' is not supported (none, linear, yarn; "
                         "Llama 3's scaling comes as the rope_freqs.weight tensor)", m->path, arch,
                         (int)(tl > 32 ? 32 : tl), type);
    if (i->rope_scaling == KV_ROPE_SCALING_NONE) f = 1.0;
    if (!(f >= 1.0 && f <= 1024.0) || !(attn > 0 && attn < 100) || orig < 1 || orig > (1 << 24))
        return kv_errorf(KV_EFORMAT, "%s: rope scaling: expected a factor in [1, 1024], attn_factor in (0, 100) and "
                         "an original context in [1, 2^24], got %g, %g, %lld", m->path, f, attn, (long long)orig);
    i->rope_factor = (float)f;
    i->rope_attn_factor = (float)attn;
    i->rope_orig_ctx = (int32_t)orig;
    return KV_OK;
}

/* The hyper-parameters of a rotary architecture. */
static int rotary_hparams(kv_model *m, const arch_desc *d) {
    kv_model_info *i = &m->info;
    const kv_gguf *g = m->gguf;
    const char *a = d->name;
    int32_t kl, vl;
    double base, base_swa, eps, cap_attn, cap_final, swa;
    int rc;
    i->arch = d->arch;
    i->format = KV_FORMAT_GGUF;
    i->rope_pair = d->pair;
    if ((rc = check_arch_keys(m, a)) || (rc = gguf_common_hparams(g, a, i))) return rc;
    if ((rc = gguf_arch_int(g, a, "attention.key_length", i->head_dim, 0, &kl)) ||
        (rc = gguf_arch_int(g, a, "attention.value_length", kl, 0, &vl)))
        return rc;
    if (kl != vl || kl < 1 || kl > 4096)
        return kv_errorf(KV_EUNSUPPORTED, "%s: %s.attention.key_length %d and value_length %d: expected equal head "
                         "sizes in [1, 4096]", m->path, a, kl, vl);
    i->head_dim = kl;
    if ((rc = gguf_arch_int(g, a, "rope.dimension_count", i->head_dim, 0, &i->n_rot)) ||
        (rc = arch_float(g, a, "rope.freq_base", 10000.0, &base)) ||
        /* gemma3's local layers: 10000, hard-coded by llama.cpp (rope_freq_base_train_swa) */
        (rc = arch_float(g, a, "rope.freq_base_swa", d->arch == KV_ARCH_GEMMA3 ? 10000.0 : base, &base_swa)) ||
        (rc = arch_float(g, a, "attention.layer_norm_rms_epsilon", 1e-5, &eps)) ||
        (rc = arch_float(g, a, "attn_logit_softcapping", 0.0, &cap_attn)) ||
        (rc = arch_float(g, a, "final_logit_softcapping", 0.0, &cap_final)) ||
        (rc = arch_float(g, a, "attention.sliding_window", 0.0, &swa)) || (rc = rope_scaling_hparams(m, a)))
        return rc;
    if (!(base > 0) || !(base_swa > 0) || !(eps >= 0 && eps < 1) || !(cap_attn >= 0) || !(cap_final >= 0) ||
        !(swa >= 0 && swa < (1 << 24)))
        return kv_errorf(KV_EFORMAT, "%s: expected positive rope bases, an epsilon in [0, 1), soft caps >= 0 and a "
                         "sliding window >= 0", m->path);
    i->rope_base = (float)base;
    i->rope_base_swa = (float)base_swa;
    i->norm_eps = (float)eps;
    i->attn_softcap = d->flags & AF_SOFTCAP ? (float)cap_attn : 0.0f;
    i->final_softcap = d->flags & AF_SOFTCAP ? (float)cap_final : 0.0f;
    if (!(d->flags & AF_SOFTCAP) && (cap_attn > 0 || cap_final > 0))
        return kv_errorf(KV_EUNSUPPORTED, "%s: logit soft-capping is not part of %s here", m->path, a);
    i->swa_window = d->swa_pattern ? (int32_t)swa : 0;
    i->embd_scale = d->flags & AF_GEMMA ? sqrtf((float)i->dim) : 1.0f;
    i->ffn_act = d->flags & AF_GEMMA ? KV_ACT_GELU : KV_ACT_SILU;
    /* llama.cpp's f_attention_scale: gemma 27B models (46 layers for
     * gemma2, 62 for gemma3) scale queries by 1/sqrt(dim/heads), the
     * others and every other architecture by 1/sqrt(head_dim) */
    int big_gemma = (d->arch == KV_ARCH_GEMMA2 && i->n_layers == 46) || (d->arch == KV_ARCH_GEMMA3 && i->n_layers == 62);
    i->attn_scale = 1.0f / sqrtf(big_gemma ? (float)i->dim / (float)i->n_heads : (float)i->head_dim);
    return KV_OK;
}

/* Per-pair rotary divisors: rope_freqs.weight (Llama 3.1), or phi3's
 * rope_factors_short/long: long when the planned context (the file's
 * context_length, or the ctx_len override) exceeds the original one, as
 * llama.cpp picks by its context, which defaults to the file's. */
static int rope_factor_tensor(kv_model *m, const arch_desc *d, const kv_model_params *p, int64_t *used) {
    kv_model_info *i = &m->info;
    const int64_t half = i->n_rot / 2;
    const char *name = NULL;
    if (d->flags & AF_ROPE_FREQS) name = "rope_freqs.weight";
    if (d->flags & AF_FACTORS) {
        int32_t ctx = p->ctx_len > 0 ? p->ctx_len : i->ctx_len;
        name = ctx > i->rope_orig_ctx ? "rope_factors_long.weight" : "rope_factors_short.weight";
        *used += kv_gguf_find_tensor(m->gguf, "rope_factors_long.weight") != NULL;
        *used += kv_gguf_find_tensor(m->gguf, "rope_factors_short.weight") != NULL;
    }
    if (!name || !kv_gguf_find_tensor(m->gguf, name)) return KV_OK;
    const float *f;
    int rc = gguf_vector(m, name, half, &f);
    if (rc) return rc;
    for (int64_t k = 0; k < half; k++)
        if (!(f[k] > 0) || !isfinite(f[k]))
            return kv_errorf(KV_EFORMAT, "%s: tensor '%s': expected positive finite factors, element %lld is %g",
                             m->path, name, (long long)k, (double)f[k]);
    m->rope_freqs = f;
    i->rope_freq_factors = 1;
    if (d->flags & AF_ROPE_FREQS) *used += 1;
    return KV_OK;
}

static int layer_vector_opt(kv_model *m, int l, const char *what, int64_t n, const float **out, int64_t *used) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", l, what);
    int rc = gguf_vector_opt(m, name, n, out);
    *used += *out != NULL;
    return rc;
}

/* One block's tensors, by the architecture's flags. */
static int rotary_layer(kv_model *m, const arch_desc *d, int l, int64_t *used) {
    const kv_gguf *g = m->gguf;
    const kv_model_info *i = &m->info;
    kv_layer_weights *w = &m->layers[l];
    const int64_t dim = i->dim, hid = i->hidden_dim, hd = i->head_dim;
    const int64_t qd = (int64_t)i->n_heads * hd, kvd = (int64_t)i->n_kv_heads * hd;
    char name[96];
    int rc;
#define NAME(s) (snprintf(name, sizeof name, "blk.%d." s, l), name)
    if ((rc = gguf_vector(m, NAME("attn_norm.weight"), dim, &w->attn_norm)) ||
        (rc = gguf_vector(m, NAME("ffn_norm.weight"), dim, &w->ffn_norm)) ||
        (rc = gguf_matrix(g, NAME("attn_output.weight"), dim, qd, &w->wo)) ||
        (rc = gguf_matrix(g, NAME("ffn_down.weight"), dim, hid, &w->w_down)))
        return rc;
    *used += 4;
    if (d->flags & AF_FUSED_QKV) {
        if ((rc = gguf_matrix(g, NAME("attn_qkv.weight"), qd + 2 * kvd, dim, &w->wqkv))) return rc;
        w->wq = tensor_rows(&w->wqkv, 0, qd);
        w->wk = tensor_rows(&w->wqkv, qd, kvd);
        w->wv = tensor_rows(&w->wqkv, qd + kvd, kvd);
        *used += 1;
    } else {
        if ((rc = gguf_matrix(g, NAME("attn_q.weight"), qd, dim, &w->wq)) ||
            (rc = gguf_matrix(g, NAME("attn_k.weight"), kvd, dim, &w->wk)) ||
            (rc = gguf_matrix(g, NAME("attn_v.weight"), kvd, dim, &w->wv)))
            return rc;
        *used += 3;
    }
    if (d->flags & AF_FUSED_UP) {
        kv_tensor up;
        if ((rc = gguf_matrix(g, NAME("ffn_up.weight"), 2 * hid, dim, &up))) return rc;
        w->w_gate = tensor_rows(&up, 0, hid);
        w->w_up = tensor_rows(&up, hid, hid);
        *used += 1;
    } else {
        if ((rc = gguf_matrix(g, NAME("ffn_gate.weight"), hid, dim, &w->w_gate)) ||
            (rc = gguf_matrix(g, NAME("ffn_up.weight"), hid, dim, &w->w_up)))
            return rc;
        *used += 2;
    }
#undef NAME
    if (d->flags & AF_QKV_BIAS) {
        if ((rc = layer_vector_opt(m, l, "attn_q.bias", qd, &w->bq, used)) ||
            (rc = layer_vector_opt(m, l, "attn_k.bias", kvd, &w->bk, used)) ||
            (rc = layer_vector_opt(m, l, "attn_v.bias", kvd, &w->bv, used)))
            return rc;
    }
    if (d->flags & AF_QK_NORM) {
        if ((rc = layer_vector_opt(m, l, "attn_q_norm.weight", hd, &w->q_norm, used)) ||
            (rc = layer_vector_opt(m, l, "attn_k_norm.weight", hd, &w->k_norm, used)))
            return rc;
        if (!w->q_norm || !w->k_norm)
            return kv_errorf(KV_EFORMAT, "%s: layer %d: expected attn_q_norm and attn_k_norm tensors for %s", m->path,
                             l, d->name);
    }
    if (d->flags & AF_GEMMA) {
        if ((rc = layer_vector_opt(m, l, "post_attention_norm.weight", dim, &w->post_attn_norm, used)) ||
            (rc = layer_vector_opt(m, l, "post_ffw_norm.weight", dim, &w->post_ffn_norm, used)))
            return rc;
        if (!w->post_attn_norm || !w->post_ffn_norm)
            return kv_errorf(KV_EFORMAT, "%s: layer %d: expected post_attention_norm and post_ffw_norm for %s",
                             m->path, l, d->name);
    }
    w->swa = i->swa_window > 0 && d->swa_pattern > 0 && l % d->swa_pattern < d->swa_pattern - 1;
    return KV_OK;
}

/* A tensor this forward pass would not read changes what the model
 * computes: refused by name. */
static int check_all_used(const kv_model *m, int64_t used) {
    if (kv_gguf_n_tensors(m->gguf) == used) return KV_OK;
    const kv_model_info *i = &m->info;
    for (int64_t k = 0; k < kv_gguf_n_tensors(m->gguf); k++) {
        const char *tn = kv_gguf_tensor_at(m->gguf, k)->name;
        int read = 0;
        for (int l = 0; l < i->n_layers && !read; l++) {
            const kv_layer_weights *w = &m->layers[l];
            const void *ptrs[] = {w->attn_norm, w->ffn_norm, w->wq.data, w->wk.data, w->wv.data, w->wo.data,
                                  w->w_gate.data, w->w_up.data, w->w_down.data, w->wqkv.data, w->bq, w->bk, w->bv,
                                  w->q_norm, w->k_norm, w->post_attn_norm, w->post_ffn_norm};
            const void *td = kv_gguf_tensor_at(m->gguf, k)->data;
            for (size_t j = 0; j < sizeof ptrs / sizeof *ptrs && !read; j++) read = ptrs[j] == td;
        }
        if (read || !strcmp(tn, "token_embd.weight") || !strcmp(tn, "output_norm.weight") ||
            !strcmp(tn, "output.weight") || !strncmp(tn, "rope_", 5))
            continue;
        return kv_errorf(KV_EUNSUPPORTED, "%s: tensor '%s' is not part of %s as kvbench computes it (refused rather "
                         "than ignored)", m->path, tn, kv_arch_name(i->arch));
    }
    return kv_errorf(KV_EFORMAT, "%s: %lld tensors, %lld read: a tensor is listed twice", m->path,
                     (long long)kv_gguf_n_tensors(m->gguf), (long long)used);
}

static int load_gguf_rotary(kv_model *m, const kv_model_params *p, const arch_desc *d) {
    kv_model_info *i = &m->info;
    const kv_gguf *g = m->gguf;
    int rc = rotary_hparams(m, d);
    if (rc || (rc = gguf_vocab_and_check(m))) return rc;
    int64_t dim = i->dim, V = i->vocab_size, used = 2;
    if ((rc = gguf_matrix(g, "token_embd.weight", V, dim, &m->tok_embd))) return rc;
    if ((rc = gguf_vector(m, "output_norm.weight", dim, &m->out_norm))) return rc;
    const kv_gguf_tensor *out;
    if ((rc = gguf_tensor(g, "output.weight", 1, (uint64_t)dim, (uint64_t)V, &out))) return rc;
    i->tied_output = out == NULL;
    used += out != NULL;
    m->output = out ? tensor2d(out->type, V, dim, out->data) : m->tok_embd;
    if ((rc = rope_factor_tensor(m, d, p, &used))) return rc;
    m->layers = calloc((size_t)i->n_layers, sizeof *m->layers);
    if (!m->layers) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int l = 0; l < i->n_layers; l++) {
        if ((rc = rotary_layer(m, d, l, &used))) return rc;
        i->n_swa_layers += m->layers[l].swa;
    }
    if ((rc = check_all_used(m, used))) return rc;
    i->wtype = m->layers[0].wq.type;
    model_count(m);
    return gguf_tokenizer(m, p);
}

/* GGUF "mpt", as llama.cpp's converter writes MPT-7B: mpt.* keys; per block
 * a LayerNorm (weight, optional bias), one fused Q,K,V matrix (rows: the
 * queries, then the keys, then the values), the output projection, a
 * second LayerNorm and a GELU MLP (ffn_up, ffn_down, no gate); a final
 * LayerNorm; output.weight, or the embedding when absent (tied). No rotary
 * embedding: attention adds ALiBi biases. Variants this forward pass does
 * not compute (learned positions, QK LayerNorm, linear biases) have extra
 * tensors, and any tensor not listed here is refused rather than ignored. */
static int load_gguf_mpt(kv_model *m, const kv_model_params *p) {
    const kv_gguf *g = m->gguf;
    kv_model_info *i = &m->info;
    i->arch = KV_ARCH_MPT;
    i->format = KV_FORMAT_GGUF;
    double d, eps, max_bias, clamp;
    int rc;
    if ((rc = gguf_common_hparams(g, "mpt", i))) return rc;
    i->n_rot = 0;
    i->rope_base = 0.0f;
    /* llama.cpp's key is attention.layer_norm_epsilon; layernorm_epsilon is read too */
    if ((rc = gguf_float(g, "mpt.attention.layernorm_epsilon", 1e-5, &d))) return rc;
    if ((rc = gguf_float(g, "mpt.attention.layer_norm_epsilon", d, &eps))) return rc;
    if ((rc = gguf_float(g, "mpt.attention.max_alibi_bias", 8.0, &max_bias))) return rc;
    if ((rc = gguf_float(g, "mpt.attention.clamp_kqv", 0.0, &clamp))) return rc;
    if (!(eps >= 0 && eps <= 1))
        return kv_errorf(KV_EFORMAT, "%s: expected mpt.attention.layer_norm_epsilon in [0, 1], got %g", m->path, eps);
    if (!(max_bias > 0 && max_bias <= 1024))
        return kv_errorf(KV_EFORMAT, "%s: expected mpt.attention.max_alibi_bias in (0, 1024], got %g", m->path, max_bias);
    if (!(clamp >= 0 && clamp < INFINITY))
        return kv_errorf(KV_EFORMAT, "%s: expected mpt.attention.clamp_kqv >= 0 (0: none), got %g", m->path, clamp);
    i->norm_eps = (float)eps;
    i->max_alibi_bias = (float)max_bias;
    i->clamp_kqv = (float)clamp;
    i->gelu = p->gelu == KV_GELU_ERF ? KV_GELU_ERF : KV_GELU_TANH;

    if ((rc = gguf_vocab_and_check(m))) return rc;

    int64_t dim = i->dim, hid = i->hidden_dim, V = i->vocab_size;
    int64_t qd = (int64_t)i->n_heads * i->head_dim, kvd = (int64_t)i->n_kv_heads * i->head_dim;
    if ((rc = gguf_matrix(g, "token_embd.weight", V, dim, &m->tok_embd))) return rc;
    if ((rc = gguf_vector(m, "output_norm.weight", dim, &m->out_norm))) return rc;
    if ((rc = gguf_vector_opt(m, "output_norm.bias", dim, &m->out_norm_b))) return rc;
    const kv_gguf_tensor *out;
    if ((rc = gguf_tensor(g, "output.weight", 1, (uint64_t)dim, (uint64_t)V, &out))) return rc;
    i->tied_output = out == NULL;
    m->output = out ? tensor2d(out->type, V, dim, out->data) : m->tok_embd;
    int64_t used = 2 + (m->out_norm_b != NULL) + (out != NULL); /* tensors read, to spot others */

    m->layers = calloc((size_t)i->n_layers, sizeof *m->layers);
    if (!m->layers) return kv_errorf(KV_ENOMEM, "out of memory");
    char name[96];
    for (int l = 0; l < i->n_layers; l++) {
        kv_layer_weights *w = &m->layers[l];
#define NAME(s) (snprintf(name, sizeof name, "blk.%d." s, l), name)
        if ((rc = gguf_vector(m, NAME("attn_norm.weight"), dim, &w->attn_norm)) ||
            (rc = gguf_vector_opt(m, NAME("attn_norm.bias"), dim, &w->attn_norm_b)) ||
            (rc = gguf_matrix(g, NAME("attn_qkv.weight"), qd + 2 * kvd, dim, &w->wqkv)) ||
            (rc = gguf_matrix(g, NAME("attn_output.weight"), dim, qd, &w->wo)) ||
            (rc = gguf_vector(m, NAME("ffn_norm.weight"), dim, &w->ffn_norm)) ||
            (rc = gguf_vector_opt(m, NAME("ffn_norm.bias"), dim, &w->ffn_norm_b)) ||
            (rc = gguf_matrix(g, NAME("ffn_up.weight"), hid, dim, &w->w_up)) ||
            (rc = gguf_matrix(g, NAME("ffn_down.weight"), dim, hid, &w->w_down)))
            return rc;
#undef NAME
        w->wq = tensor_rows(&w->wqkv, 0, qd);
        w->wk = tensor_rows(&w->wqkv, qd, kvd);
        w->wv = tensor_rows(&w->wqkv, qd + kvd, kvd);
        used += 6 + (w->attn_norm_b != NULL) + (w->ffn_norm_b != NULL);
    }
    if (kv_gguf_n_tensors(g) != used) { /* something this forward pass would ignore */
        for (int64_t k = 0; k < kv_gguf_n_tensors(g); k++) {
            const char *tn = kv_gguf_tensor_at(g, k)->name;
            int known = !strcmp(tn, "token_embd.weight") || !strcmp(tn, "output_norm.weight") ||
                        !strcmp(tn, "output_norm.bias") || !strcmp(tn, "output.weight");
            int l = -1, off = 0;
            if (!known && sscanf(tn, "blk.%d.%n", &l, &off) == 1 && off > 0 && l >= 0 && l < i->n_layers) {
                static const char *const per_layer[] = {"attn_norm.weight", "attn_norm.bias", "attn_qkv.weight",
                                                        "attn_output.weight", "ffn_norm.weight", "ffn_norm.bias",
                                                        "ffn_up.weight", "ffn_down.weight"};
                for (size_t s = 0; s < sizeof per_layer / sizeof *per_layer && !known; s++)
                    known = !strcmp(tn + off, per_layer[s]);
            }
            if (!known)
                return kv_errorf(KV_EUNSUPPORTED,
                                 "%s: tensor '%s' is not supported for mpt (expected only token_embd, output_norm, "
                                 "output and blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down}: "
                                 "learned positions, QK LayerNorm and linear biases are not implemented)",
                                 m->path, tn);
        }
    }
    i->wtype = m->layers[0].wqkv.type;
    model_count(m);
    return gguf_tokenizer(m, p);
}

/* ----------------------------------------------------------------- entry */

/* What the loaders left unset means "as Llama": no scaling, the usual query
 * scale, unscaled embeddings; windowed layers share the base unless the
 * architecture has its own (gemma3). */
static void info_defaults(kv_model_info *i) {
    if (i->rope_factor <= 0) i->rope_factor = 1.0f;
    if (i->rope_attn_factor <= 0) i->rope_attn_factor = 1.0f;
    if (i->rope_orig_ctx <= 0) i->rope_orig_ctx = i->ctx_len;
    if (i->attn_scale <= 0) i->attn_scale = 1.0f / sqrtf((float)i->head_dim);
    if (i->embd_scale <= 0) i->embd_scale = 1.0f;
    if (i->arch != KV_ARCH_GEMMA3 || i->rope_base_swa <= 0) i->rope_base_swa = i->rope_base;
}

int kv_model_load(const char *path, const kv_model_params *params, kv_model **out) {
    *out = NULL;
    kv_model_params dflt = kv_model_default_params();
    if (!params) params = &dflt;
    kv_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    /* Peek at the magic to choose the loader. */
    uint32_t magic = 0;
    int rc;
    FILE *f = fopen(path, "rb");
    if (!f) {
        rc = kv_errorf(KV_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    size_t got = fread(&magic, 1, 4, f);
    fclose(f);
    if (got == 4 && magic == KV_GGUF_MAGIC) {
        rc = load_gguf(m, params);
    } else {
        if ((rc = kv_filemap_open(path, weights_mode(params), "a model header", &m->file))) goto fail;
        rc = magic == KV_LLAMA2C_MAGIC_Q8 ? load_llama2c_q8(m, params) : load_llama2c_legacy(m, params);
    }
    if (rc) goto fail;
    if (params) { /* architecture overrides */
        if (params->rope_base > 0) m->info.rope_base = params->rope_base;
        if (params->ctx_len > 0) m->info.ctx_len = params->ctx_len;
        if (params->norm_eps > 0) m->info.norm_eps = params->norm_eps;
    }
    info_defaults(&m->info);
    *out = m;
    return KV_OK;
fail:
    kv_model_free(m);
    return rc;
}
