/* kernels.c - run-time dispatch and the portable kernels.
 *
 * The ISA is chosen once (pthread_once): the best the CPU and OS support
 * (CPUID and XCR0), lowered by KVBENCH_ISA=scalar|avx2|avx512. The
 * portable kernels are the reference the vector ones are tested against,
 * and what runs on non-x86 machines. */
#define _POSIX_C_SOURCE 200809L
#include "kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_impl.h"
#include "kv_error.h"
#include "quant.h"

/* ------------------------------------------------------- portable path */

/* Row r of W as fp32 into out[cols]. */
static void row_to_f32(const kv_tensor *W, int64_t r, float *out) {
    const char *row = (const char *)W->data + (size_t)r * kv_row_bytes(W);
    if (W->type == KV_Q8_G) {
        const int8_t *q = (const int8_t *)row;
        const float *s = W->scales + r * W->cols / W->group;
        for (int64_t c = 0; c < W->cols; c++) out[c] = q[c] * s[c / W->group];
        return;
    }
    kv_dequantize(W->type, row, out, W->cols);
}

static int scalar_dequant_rows(const kv_tensor *W, int64_t r0, int64_t r1, float *out) {
    for (int64_t r = r0; r < r1; r++) row_to_f32(W, r, out + (size_t)(r - r0) * W->cols);
    return 0;
}

static float scalar_dot(const float *a, const float *b, int64_t n) {
    /* four partial sums: the same association as the vector paths use,
     * roughly, and faster than one serial chain */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void scalar_axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void scalar_dots(const float *q, const float *K, int64_t n, int64_t d, float *out) {
    for (int64_t t = 0; t < n; t++) out[t] = scalar_dot(q, K + (size_t)t * d, d);
}

static void scalar_wsum(float *o, const float *w, const float *K, int64_t n, int64_t d) {
    memset(o, 0, (size_t)d * sizeof *o);
    for (int64_t t = 0; t < n; t++)
        if (w[t] != 0.0f) scalar_axpy(o, w[t], K + (size_t)t * d, d);
}

static int scalar_matvec_rows(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {
    if (W->type == KV_F32 && ((uintptr_t)W->data & 3u) == 0) {
        for (int64_t r = r0; r < r1; r++) y[r] = scalar_dot((const float *)W->data + (size_t)r * W->cols, x, W->cols);
        return 0;
    }
    /* dequantize a row at a time into a stack buffer in pieces */
    float buf[1024];
    for (int64_t r = r0; r < r1; r++) {
        if (W->cols <= 1024 && W->type != KV_Q8_G) { /* (also unaligned f32: copied) */
            row_to_f32(W, r, buf);
            y[r] = scalar_dot(buf, x, W->cols);
            continue;
        }
        /* long rows: per block */
        float s = 0;
        const char *row = (const char *)W->data + (size_t)r * kv_row_bytes(W);
        if (W->type == KV_Q8_G) {
            const int8_t *q = (const int8_t *)row;
            const float *sc = W->scales + r * W->cols / W->group;
            for (int64_t g = 0; g < W->cols / W->group; g++) {
                float gs = 0;
                for (int64_t c = g * W->group; c < (g + 1) * W->group; c++) gs += q[c] * x[c];
                s += gs * sc[g];
            }
        } else {
            int64_t step = 1024; /* a multiple of every block size */
            for (int64_t c = 0; c < W->cols; c += step) {
                int64_t n = W->cols - c < step ? W->cols - c : step;
                kv_dequantize(W->type, row + kv_dtype_bytes(W->type, c), buf, n);
                s += scalar_dot(buf, x + c, n);
            }
        }
        y[r] = s;
    }
    return 0;
}

/* ------------------------------------------- portable integer kernels
 *
 * The integer path's definition, which the vector kernels compute to
 * float rounding: per weight block, the exact integer sum of weight quants
 * times activation quants (each run of values with its own integer scale
 * for the K-quants), times the fp32 scales of the two blocks; the row sum
 * adds the blocks in order. */

/* Q8_0 / Q4_0 rows against 32-value activation blocks. */
static void int8_rows_q4q8(const kv_tensor *W, const kv_q8_act *a, float *y, int64_t r0, int64_t r1) {
    const int q8 = W->type == KV_Q8_0;
    const size_t bb = q8 ? sizeof(kv_block_q8_0) : sizeof(kv_block_q4_0);
    const int64_t nb = W->cols / KV_QK;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)W->data + (size_t)r * kv_row_bytes(W);
        float acc = 0;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + (size_t)b * bb;
            const int8_t *x = a->q + b * KV_QK;
            int32_t s = 0;
            if (q8) {
                for (int i = 0; i < KV_QK; i++) s += (int8_t)blk[2 + i] * x[i];
            } else {
                for (int i = 0; i < KV_QK / 2; i++) s += (blk[2 + i] & 0xf) * x[i] + (blk[2 + i] >> 4) * x[i + 16];
                s -= 8 * (a->s16[2 * b] + a->s16[2 * b + 1]); /* the quants are stored + 8 */
            }
            acc += sc_f16((const uint16_t *)blk) * a->d[b] * (float)s;
        }
        y[r] = acc;
    }
}

/* The 16 integer scales and offsets of a K-quant super-block, one per run
 * of 16 values (Q4_K/Q5_K: each of their eight repeated). */
static void kq_scale_bytes(kv_dtype t, const uint8_t *blk, int32_t sc[16], int32_t mn[16], float dm[2]) {
    uint32_t scw[4], mnw[4];
    uint16_t h[2] = {0, 0};
    kq_scale_ints(t, blk, scw, mnw, h);
    uint8_t sb[16], mb[16];
    memcpy(sb, scw, 16);
    memcpy(mb, mnw, 16);
    const int pairs = t == KV_Q4_K || t == KV_Q5_K;
    for (int g = 0; g < 16; g++) {
        sc[g] = pairs ? sb[g / 2] : (int8_t)sb[g];
        mn[g] = pairs ? mb[g / 2] : mb[g];
    }
    dm[0] = kv_fp16_to_fp32(h[0]);
    dm[1] = kv_fp16_to_fp32(h[1]);
}

/* Q4_K / Q5_K / Q6_K rows against 256-value activation blocks. */
static void int8_rows_kquant(const kv_tensor *W, const kv_q8_act *a, float *y, int64_t r0, int64_t r1) {
    const size_t bb = kv_dtype_block_bytes(W->type);
    const int64_t nb = W->cols / KV_QK_K;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)W->data + (size_t)r * kv_row_bytes(W);
        float acc = 0;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + (size_t)b * bb;
            int8_t q[KV_QK_K];
            int32_t sc[16], mn[16];
            float dm[2];
            kv_kquant_ints(W->type, blk, q);
            kq_scale_bytes(W->type, blk, sc, mn, dm);
            int32_t s = 0, m = 0;
            for (int g = 0; g < 16; g++) {
                int32_t sg = 0;
                for (int i = 16 * g; i < 16 * g + 16; i++) sg += q[i] * a->q[b * KV_QK_K + i];
                s += sc[g] * sg;
                m += mn[g] * a->s16[16 * b + g];
            }
            acc += a->d[b] * dm[0] * (float)s - a->d[b] * dm[1] * (float)m;
        }
        y[r] = acc;
    }
}

static int scalar_matvec_q8(const kv_tensor *W, const kv_q8_act *a, float *y, int64_t r0, int64_t r1) {
    if (kv_int8_block(W->type) == KV_QK) int8_rows_q4q8(W, a, y, r0, r1);
    else int8_rows_kquant(W, a, y, r0, r1);
    return 0;
}

/* kv_wsum_kv's reference: each row dequantized (in pieces of 256 values,
 * a multiple of the Q8_0 block) and added as scalar_axpy adds. */
static int scalar_wsum_kv(kv_dtype t, float *o, const float *w, const void *V, int64_t n, int64_t d) {
    float buf[256];
    const size_t rb = kv_dtype_bytes(t, d);
    memset(o, 0, (size_t)d * sizeof *o);
    for (int64_t c = 0; c < d; c += 256) {
        const int64_t m = d - c < 256 ? d - c : 256;
        for (int64_t r = 0; r < n; r++) {
            if (w[r] == 0.0f) continue;
            kv_dequantize(t, (const uint8_t *)V + (size_t)r * rb + kv_dtype_bytes(t, c), buf, m);
            scalar_axpy(o + c, w[r], buf, m);
        }
    }
    return 0;
}

/* Max, then e^(x - max) into x with the sum in 16 lanes, then the scale:
 * the vector kernels' exact arithmetic (kernels_impl.h). */
static void scalar_softmax(float *x, int64_t n) {
    float mx = -INFINITY, lanes[KV_SOFTMAX_LANES] = {0};
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++) {
        x[i] = kv_exp_f32(x[i] - mx);
        lanes[i % KV_SOFTMAX_LANES] += x[i];
    }
    const float inv = 1.0f / kv_sum_lanes(lanes);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

const kv_kernel_table kv_kernels_scalar = {
    .matvec_rows = scalar_matvec_rows, .dequant_rows = scalar_dequant_rows, .dot = scalar_dot, .axpy = scalar_axpy,
    .dots = scalar_dots, .wsum = scalar_wsum, .quant_act = kv_quantize_act, .matvec_q8 = scalar_matvec_q8,
    .wsum_kv = scalar_wsum_kv, .softmax = scalar_softmax};

/* ------------------------------------------------------------ dispatch */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void detect(void);
static kv_isa g_best = KV_ISA_SCALAR; /* what the CPU supports */
static kv_isa g_isa = KV_ISA_SCALAR;  /* what is in use */
static _Atomic kv_kernel_mode g_mode = KV_KERNELS_FLOAT;
/* The table in use; NULL until detect() has run. The hot entry points
 * (attention calls kv_dot_f32 and kv_axpy_f32 once per cached key) read it
 * with one acquire load instead of a pthread_once call each. */
static _Atomic(const kv_kernel_table *) g_k;

static const kv_kernel_table *kernels(void) {
    const kv_kernel_table *k = atomic_load_explicit(&g_k, memory_order_acquire);
    if (k) return k;
    pthread_once(&g_once, detect);
    return atomic_load_explicit(&g_k, memory_order_acquire);
}

static const kv_kernel_table *table_for(kv_isa isa) {
#if defined(KV_X86_DISPATCH)
    if (isa == KV_ISA_AVX512_VNNI) return &kv_kernels_avx512_vnni;
    if (isa == KV_ISA_AVX512) return &kv_kernels_avx512;
    if (isa == KV_ISA_AVX2) return &kv_kernels_avx2;
#endif
    (void)isa;
    return &kv_kernels_scalar;
}

#if defined(KV_X86_DISPATCH)
#include <cpuid.h>

/* What the CPU and the OS support, from CPUID and XCR0 (the OS must save
 * the YMM/ZMM registers). Written with cpuid.h rather than
 * __builtin_cpu_supports because compilers disagree on its feature names. */
static kv_isa detect_x86(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return KV_ISA_SCALAR;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return KV_ISA_SCALAR;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    int ymm = (xlo & 0x6) == 0x6, zmm = (xlo & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return KV_ISA_SCALAR;
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
        avx512vl = (b >> 31) & 1;
    const int vnni = (c >> 11) & 1;
    if (!(ymm && avx2 && fma && f16c)) return KV_ISA_SCALAR;
    if (zmm && avx512f && avx512dq && avx512bw && avx512vl) return vnni ? KV_ISA_AVX512_VNNI : KV_ISA_AVX512;
    return KV_ISA_AVX2;
}
#endif

static void detect(void) {
#if defined(KV_X86_DISPATCH)
    g_best = detect_x86();
#endif
    g_isa = g_best;
    const char *e = getenv("KVBENCH_ISA");
    if (e) {
        kv_isa want = !strcmp(e, "scalar") ? KV_ISA_SCALAR : !strcmp(e, "avx2") ? KV_ISA_AVX2
                    : !strcmp(e, "avx512") ? KV_ISA_AVX512 : !strcmp(e, "avx512vnni") ? KV_ISA_AVX512_VNNI : g_best;
        if (want < g_isa) g_isa = want;
    }
    const char *m = getenv("KVBENCH_KERNELS");
    if (m && !strcmp(m, "int8")) g_mode = KV_KERNELS_INT8;
    atomic_store_explicit(&g_k, table_for(g_isa), memory_order_release);
}

kv_isa kv_kernels_isa(void) {
    pthread_once(&g_once, detect);
    return g_isa;
}

const char *kv_isa_name(kv_isa isa) {
    switch (isa) {
    case KV_ISA_SCALAR: return "scalar";
    case KV_ISA_AVX2: return "avx2";
    case KV_ISA_AVX512: return "avx512";
    case KV_ISA_AVX512_VNNI: return "avx512vnni";
    }
    return "?";
}

int kv_kernels_set_isa(kv_isa isa) {
    pthread_once(&g_once, detect);
    if (isa > g_best) return kv_errorf(KV_EUNSUPPORTED, "this CPU does not support %s", kv_isa_name(isa));
    g_isa = isa;
    atomic_store_explicit(&g_k, table_for(isa), memory_order_release);
    return KV_OK;
}

kv_kernel_mode kv_kernels_mode(void) {
    pthread_once(&g_once, detect);
    return g_mode;
}

void kv_kernels_set_mode(kv_kernel_mode m) {
    pthread_once(&g_once, detect); /* so that detect() does not undo it */
    g_mode = m;
}

int kv_kernels_env_mode(kv_kernel_mode *m) {
    const char *e = getenv("KVBENCH_KERNELS");
    *m = KV_KERNELS_FLOAT;
    if (e && kv_kernel_mode_parse(e, m)) return kv_errorf(KV_EINVAL, "KVBENCH_KERNELS: expected int8 or float, got '%s'", e);
    return KV_OK;
}

const char *kv_kernel_mode_name(kv_kernel_mode m) { return m == KV_KERNELS_FLOAT ? "float" : "int8"; }

int kv_kernel_mode_parse(const char *s, kv_kernel_mode *m) {
    if (!strcmp(s, "int8")) *m = KV_KERNELS_INT8;
    else if (!strcmp(s, "float")) *m = KV_KERNELS_FLOAT;
    else return kv_errorf(KV_EINVAL, "kernels: expected int8 or float, got '%s'", s);
    return KV_OK;
}

/* Longest row the integer path takes (its activations live on the stack:
 * 80 KiB at this length); longer rows take the float path. */
#define KV_INT8_MAX_COLS 65536

/* The integer path: x quantized by this call (each thread quantizes the
 * whole vector, a few microseconds, so that the result of a row depends on
 * x alone and never on the row split), then the rows. */
static void matvec_int8(const kv_kernel_table *k, const kv_tensor *W, const float *x, float *y, int64_t r0,
                        int64_t r1) {
    int8_t q[KV_INT8_MAX_COLS] __attribute__((aligned(64)));
    float d[KV_INT8_MAX_COLS / KV_QK];
    int16_t s16[KV_INT8_MAX_COLS / 16];
    const int32_t blk = kv_int8_block(W->type);
    (k->quant_act ? k->quant_act : kv_quantize_act)(x, W->cols, blk, d, q, s16);
    const kv_q8_act a = {.n = W->cols, .blk = blk, .d = d, .q = q, .s16 = s16};
    if (!k->matvec_q8 || k->matvec_q8(W, &a, y, r0, r1) != 0) scalar_matvec_q8(W, &a, y, r0, r1);
}

/* kv_q8_acts_bytes' layout for n tokens of cols values in blocks of blk:
 * the int8 values token after token, then the scales, then the sums of 16. */
typedef struct q8_layout { size_t q, d, s16, end; } q8_layout;

static q8_layout q8_layout_of(int64_t cols, int32_t blk, int n) {
    q8_layout l;
    l.q = 0;
    l.d = ((size_t)n * (size_t)cols + 63) & ~(size_t)63;
    l.s16 = l.d + (size_t)n * (size_t)(cols / blk) * sizeof(float);
    l.end = l.s16 + (size_t)n * (size_t)(cols / 16) * sizeof(int16_t);
    return l;
}

size_t kv_q8_acts_bytes(const kv_tensor *W, int n) {
    const int32_t blk = kv_int8_block(W->type);
    if (kv_kernels_mode() != KV_KERNELS_INT8 || !blk || W->cols > KV_INT8_MAX_COLS || W->cols % blk || n < 1) return 0;
    return q8_layout_of(W->cols, blk, n).end;
}

/* Token t's activations in buf, as matvec_int8 passes them. */
static kv_q8_act q8_act_at(const kv_tensor *W, const void *buf, int n, int t) {
    const int32_t blk = kv_int8_block(W->type);
    const int64_t cols = W->cols;
    const q8_layout l = q8_layout_of(cols, blk, n);
    const uint8_t *b = buf;
    return (kv_q8_act){.n = cols, .blk = blk, .q = (const int8_t *)(b + l.q) + (size_t)t * (size_t)cols,
                       .d = (const float *)(b + l.d) + (size_t)t * (size_t)(cols / blk),
                       .s16 = (const int16_t *)(b + l.s16) + (size_t)t * (size_t)(cols / 16)};
}

void kv_q8_acts_quantize(const kv_tensor *W, const float *X, int n, int t0, int t1, void *buf) {
    const kv_kernel_table *k = kernels();
    for (int t = t0; t < t1; t++) {
        const kv_q8_act a = q8_act_at(W, buf, n, t);
        (k->quant_act ? k->quant_act : kv_quantize_act)(X + (size_t)t * (size_t)W->cols, W->cols, a.blk, (float *)a.d,
                                                        (int8_t *)a.q, (int16_t *)a.s16);
    }
}

void kv_matmul_q8_rows(const kv_tensor *W, const void *buf, int n, float *Y, int64_t r0, int64_t r1) {
    enum { GROUP = 64 }; /* tokens per call: their activations stay near while the rows pass */
    const kv_kernel_table *k = kernels();
    kv_q8_act a[GROUP];
    for (int t0 = 0; t0 < n; t0 += GROUP) {
        const int g = n - t0 < GROUP ? n - t0 : GROUP;
        for (int i = 0; i < g; i++) a[i] = q8_act_at(W, buf, n, t0 + i);
        float *y = Y + (size_t)t0 * (size_t)W->rows;
        if (k->matmul_q8 && k->matmul_q8(W, a, g, y, W->rows, r0, r1) == 0) continue;
        for (int i = 0; i < g; i++) /* matvec_int8's calls, token by token */
            if (!k->matvec_q8 || k->matvec_q8(W, &a[i], y + (size_t)i * (size_t)W->rows, r0, r1) != 0)
                scalar_matvec_q8(W, &a[i], y + (size_t)i * (size_t)W->rows, r0, r1);
    }
}

/* llama.cpp's CPU backend multiplies F16 and BF16 weights with the
 * activations converted to that type (its vec_dot_type), rounding to
 * nearest even: the int8 mode does the same, so that its logits are
 * llama.cpp's for these types too (F16 differs by 1.3e-3, BF16 by 3.6e-3
 * of the largest logit on the synthetic llama file without it). */
static int rounds_to_half(kv_dtype t) { return t == KV_F16 || t == KV_BF16; }

static void round_to_half(kv_dtype t, const float *x, int64_t n, float *out) {
    if (t == KV_F16)
        for (int64_t i = 0; i < n; i++) out[i] = kv_fp16_to_fp32(kv_fp32_to_fp16(x[i]));
    else
        for (int64_t i = 0; i < n; i++) out[i] = kv_bf16_to_fp32(kv_fp32_to_bf16(x[i]));
}

/* The float kernels on x rounded as llama.cpp rounds it for W's type. */
static void matvec_half_x(const kv_kernel_table *k, const kv_tensor *W, const float *x, float *y, int64_t r0,
                          int64_t r1) {
    float xr[KV_INT8_MAX_COLS];
    round_to_half(W->type, x, W->cols, xr);
    if (k->matvec_rows(W, xr, y, r0, r1) != 0) scalar_matvec_rows(W, xr, y, r0, r1);
}

void kv_matvec_rows(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1) {
    const kv_kernel_table *k = kernels();
    if (g_mode == KV_KERNELS_INT8 && W->cols <= KV_INT8_MAX_COLS) {
        if (kv_int8_block(W->type)) {
            matvec_int8(k, W, x, y, r0, r1);
            return;
        }
        if (rounds_to_half(W->type)) {
            matvec_half_x(k, W, x, y, r0, r1);
            return;
        }
    }
    if (k->matvec_rows(W, x, y, r0, r1) != 0) scalar_matvec_rows(W, x, y, r0, r1);
}

void kv_dequant_rows(const kv_tensor *W, int64_t r0, int64_t r1, float *out) {
    if (kernels()->dequant_rows(W, r0, r1, out) != 0) scalar_dequant_rows(W, r0, r1, out);
}

static void scalar_silu_mul(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + kv_exp_f32(-g[i])) * u[i];
}

void kv_silu_mul(float *g, const float *u, int64_t n) {
    const kv_kernel_table *k = kernels();
    (k->silu_mul ? k->silu_mul : scalar_silu_mul)(g, u, n);
}

static double scalar_masked_sum(const float *x, const float *m, int64_t n) {
    double acc[KV_MSUM_LANES] = {0};
    int64_t j = 0;
    for (; j + KV_MSUM_LANES <= n; j += KV_MSUM_LANES)
        for (int l = 0; l < KV_MSUM_LANES; l++) acc[l] += (double)(x[j + l] * m[j + l]);
    for (int l = 0; j < n; j++, l++) acc[l] += (double)(x[j] * m[j]);
    return kv_fold_f64(acc, KV_MSUM_LANES);
}

double kv_masked_sum(const float *x, const float *m, int64_t n) {
    const kv_kernel_table *k = kernels();
    return (k->masked_sum ? k->masked_sum : scalar_masked_sum)(x, m, n);
}

static double scalar_sum_exp_f64(const float *x, int64_t n, double shift) {
    double acc[KV_SEXP_LANES] = {0};
    for (int64_t i = 0; i < n; i++) acc[i % KV_SEXP_LANES] += kv_exp_f64((double)x[i] - shift);
    return kv_fold_f64(acc, KV_SEXP_LANES);
}

double kv_sum_exp_f64(const float *x, int64_t n, double shift) {
    const kv_kernel_table *k = kernels();
    return (k->sum_exp_f64 ? k->sum_exp_f64 : scalar_sum_exp_f64)(x, n, shift);
}

double kv_exp_f64_one(double t) { return kv_exp_f64(t); }

void kv_f32_to_f16(const float *x, uint16_t *y, int64_t n) {
    const kv_kernel_table *k = kernels();
    if (k->f32_to_f16) {
        k->f32_to_f16(x, y, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) y[i] = kv_fp32_to_fp16(x[i]);
}

void kv_f16_to_f32(const uint16_t *x, float *y, int64_t n) {
    const kv_kernel_table *k = kernels();
    if (k->f16_to_f32) {
        k->f16_to_f32(x, y, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) y[i] = kv_fp16_to_fp32(x[i]);
}

float kv_dot_f32(const float *a, const float *b, int64_t n) { return kernels()->dot(a, b, n); }

void kv_axpy_f32(float *y, float a, const float *x, int64_t n) { kernels()->axpy(y, a, x, n); }

void kv_dots_f32(const float *q, const float *K, int64_t n, int64_t d, float *out) { kernels()->dots(q, K, n, d, out); }

void kv_wsum_f32(float *o, const float *w, const float *K, int64_t n, int64_t d) { kernels()->wsum(o, w, K, n, d); }

/* ------------------------------------------------ prefill's products */

static int g_gemm = -1; /* -1: not decided yet; 0: sgemm; 1: kv_gemm_nt */

size_t kv_gemm_pack_floats(int64_t n, int64_t K) {
    return (size_t)kv_gemm_pack_tiles(n) * (size_t)K * KV_GEMM_TILE;
}

int64_t kv_gemm_pack_tiles(int64_t n) { return ((n + KV_GEMM_TILE - 1) / KV_GEMM_TILE + 1) / 2 * 2; }

void kv_gemm_pack(const float *X, int64_t n, int64_t K, int64_t ldx, float *Xp) {
    kv_gemm_pack_range(X, n, K, ldx, Xp, 0, kv_gemm_pack_tiles(n));
}

void kv_gemm_pack_range(const float *X, int64_t n, int64_t K, int64_t ldx, float *Xp, int64_t tb0, int64_t tb1) {
    const kv_kernel_table *k = kernels();
    if (k->gemm_pack && kv_gemm_available()) {
        k->gemm_pack(X, n, K, ldx, Xp, tb0, tb1);
        return;
    }
    for (int64_t tb = tb0; tb < tb1; tb++) {
        float *p = Xp + (size_t)tb * (size_t)K * KV_GEMM_TILE;
        for (int j = 0; j < KV_GEMM_TILE; j++) {
            const int64_t t = tb * KV_GEMM_TILE + j;
            if (t < n)
                for (int64_t k = 0; k < K; k++) p[k * KV_GEMM_TILE + j] = X[t * ldx + k];
            else
                for (int64_t k = 0; k < K; k++) p[k * KV_GEMM_TILE + j] = 0.0f;
        }
    }
}

void kv_gemm_nt(const float *Xp, int64_t n, int64_t K, const float *W, int64_t ldw, int64_t rows, float *Y, int64_t ldy) {
    const kv_kernel_table *k = kernels();
    if (k->gemm_nt) {
        k->gemm_nt(Xp, n, K, W, ldw, rows, Y, ldy);
        return;
    }
    /* the same chains, one element at a time (for tests on CPUs without the kernel) */
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++) {
            const float *xp = Xp + (size_t)(t / KV_GEMM_TILE) * (size_t)K * KV_GEMM_TILE + t % KV_GEMM_TILE;
            float s = 0.0f;
            for (int64_t e = 0; e < K; e++) s = fmaf(xp[e * KV_GEMM_TILE], W[r * ldw + e], s);
            Y[t * ldy + r] = s;
        }
}

int kv_gemm_pv(const float *P, int64_t ldp, int64_t n, int64_t kl, const float *V, int64_t d, float *O, int64_t ldo) {
    const kv_kernel_table *k = kernels();
    if (!k->gemm_pv || d % 16 != 0 || !kv_gemm_available()) return -1;
    k->gemm_pv(P, ldp, n, kl, V, d, O, ldo);
    return 0;
}

#if defined(KV_X86_DISPATCH)
/* AVX512-FP16: Intel cores from Sapphire Rapids on, which have two 512-bit
 * FMA ports (where the kernel was measured faster than OpenBLAS's Haswell
 * sgemm; AMD's Zen 4 splits a 512-bit FMA in two and was not measured). */
static int cpu_two_fma512(void) {
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((d >> 23) & 1);
}
#else
static int cpu_two_fma512(void) { return 0; }
#endif

int kv_gemm_available(void) {
    const kv_kernel_table *k = kernels();
    if (!k->gemm_nt) return 0;
    if (g_gemm < 0) {
        const char *e = getenv("KVBENCH_GEMM");
        g_gemm = e && !strcmp(e, "blas") ? 0 : e && !strcmp(e, "own") ? 1 : cpu_two_fma512();
    }
    return g_gemm;
}

void kv_softmax_f32(float *x, int64_t n) {
    const kv_kernel_table *k = kernels();
    (k->softmax ? k->softmax : scalar_softmax)(x, n);
}

/* K as a weight of type t: its rows are the cache's rows. The float-family
 * table entry is called directly, never the int8 one (see kernels.h). */
void kv_dots_kv(kv_dtype t, const float *q, const void *K, int64_t n, int64_t d, float *out) {
    if (t == KV_F32) {
        kv_dots_f32(q, K, n, d, out);
        return;
    }
    const kv_tensor W = {.type = t, .rows = n, .cols = d, .data = K};
    if (kernels()->matvec_rows(&W, q, out, 0, n) != 0) scalar_matvec_rows(&W, q, out, 0, n);
}

void kv_wsum_kv(kv_dtype t, float *o, const float *w, const void *V, int64_t n, int64_t d) {
    if (t == KV_F32) {
        kv_wsum_f32(o, w, V, n, d);
        return;
    }
    const kv_kernel_table *k = kernels();
    if (!k->wsum_kv || k->wsum_kv(t, o, w, V, n, d) != 0) scalar_wsum_kv(t, o, w, V, n, d);
}

void kv_dots_kv_ref(kv_dtype t, const float *q, const void *K, int64_t n, int64_t d, float *out) {
    const kv_tensor W = {.type = t, .rows = n, .cols = d, .data = K};
    scalar_matvec_rows(&W, q, out, 0, n);
}

void kv_wsum_kv_ref(kv_dtype t, float *o, const float *w, const void *V, int64_t n, int64_t d) {
    scalar_wsum_kv(t, o, w, V, n, d);
}
