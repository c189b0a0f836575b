/* kernels.h - the numeric kernels the forward pass is made of, with run-time
 * dispatch to AVX-512 / AVX2 implementations and a portable C path.
 *
 * Decode is bound by memory bandwidth: each weight is read once per token,
 * so the matrix-vector products stream the weights in their stored type
 * (F16, BF16, Q8_0, Q4_0, the K-quants, Q8_G) and convert in registers.
 *
 * Two kernel families for Q8_0, Q4_0 and the K-quants (Q2_K..Q6_K) (the
 * other types always take the float one):
 * - float (the default): activations stay fp32 and weights are widened to
 *   fp32; results match a float64 reference to about 1e-6 relative, and
 *   prefill (sgemm) and decode agree to fp32 rounding whatever the chunks.
 * - int8 (KVBENCH_KERNELS=int8, --kernels int8): the activation vector is
 *   quantized once per call to int8 blocks (kv_quantize_act), each weight
 *   block is multiplied with integer dot products, and the block scales are
 *   applied in fp32. This is what llama.cpp's CPU backend computes for
 *   these types (activations as Q8_0 / Q8_K, with its scales: see
 *   kv_act_scale), and it keeps decode near the memory-bandwidth limit:
 *   widening every weight to fp32 is compute-bound. The K-quant kernels
 *   repeat the fp32 arithmetic of llama.cpp's AVX2 dots (their int32 lanes,
 *   scales and horizontal sums; AVX-512 folds its sixteen lanes into those
 *   eight exactly), so a row's sum is llama.cpp's bit for bit: its logits
 *   equal llama.cpp's exactly at most positions of the synthetic files,
 *   except where an fp32-level difference elsewhere (exponentials, norms)
 *   moves a value across a rounding boundary. F16 and BF16 weights keep the float kernels, on
 *   x rounded to fp16 / bf16 first, as llama.cpp converts activations for
 *   them (BF16 logits then equal its to ~2e-7 median; F16 ones differ by
 *   ~6e-4 on CPUs with AVX512-FP16, where a natively built llama.cpp adds
 *   F16 dot products up in fp16, _mm512_fmadd_ph: not emulated).
 *   A prompt is read as decode reads it, token by token in arithmetic
 *   (kv_q8_acts_quantize then kv_matmul_q8_rows, which shares each weight
 *   block's decoding among the tokens but keeps each token's sums as
 *   kv_matvec_rows forms them): rounding to int8 is discontinuous, so any
 *   fp32-level difference between prefill and decode would move values
 *   across rounding boundaries and make results depend on the chunking.
 *   It is not the default: it moves a quantized model's logits away from
 *   the exact arithmetic of its weights (by ~1e-2 of the logits on the
 *   synthetic test models), and it reads prompts slower than the float
 *   family's blocked products.
 * The int8 family differs from the float one by the activations' rounding
 * (at most half a step, amax/254, per value). Either way a row's result
 * does not depend on the row range or the thread that computes it
 * (bit for bit), so results never depend on the thread count. */
#ifndef KV_KERNELS_H
#define KV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

/* A 2-D weight, row-major: rows x cols elements in `type`, each row
 * kv_dtype_bytes(type, cols) bytes, rows contiguous. For KV_Q8_G, `data` is
 * rows*cols int8 values and `scales` holds rows*cols/group fp32 scales
 * (group divides cols). `data` may be unaligned. */
typedef struct kv_tensor {
    kv_dtype type;
    int64_t rows, cols;
    const void *data;
    const float *scales; /* KV_Q8_G only */
    int32_t group;       /* KV_Q8_G only */
} kv_tensor;

/* avx512vnni: the AVX-512 kernels with VNNI's vpdpwssd in the integer
 * products (the same integer sums as without it). */
typedef enum kv_isa { KV_ISA_SCALAR = 0, KV_ISA_AVX2 = 1, KV_ISA_AVX512 = 2, KV_ISA_AVX512_VNNI = 3 } kv_isa;

/* The ISA in use: the best the CPU supports, unless KVBENCH_ISA=scalar|avx2|avx512|avx512vnni
 * asks for a lower one (or kv_kernels_set_isa is called). */
kv_isa kv_kernels_isa(void);
const char *kv_isa_name(kv_isa isa);
/* Forces an ISA (for tests comparing paths); returns KV_EUNSUPPORTED if the CPU lacks it. */
int kv_kernels_set_isa(kv_isa isa);

typedef enum kv_kernel_mode { KV_KERNELS_INT8 = 0, KV_KERNELS_FLOAT = 1 } kv_kernel_mode;

/* The kernel family in use: float unless KVBENCH_KERNELS=int8 (or
 * kv_kernels_set_mode) asks for int8. Process-wide, like the ISA. */
kv_kernel_mode kv_kernels_mode(void);
void kv_kernels_set_mode(kv_kernel_mode m);
const char *kv_kernel_mode_name(kv_kernel_mode m);
/* "int8" or "float" into *m; KV_EINVAL naming the text otherwise. */
int kv_kernel_mode_parse(const char *s, kv_kernel_mode *m);
/* The mode KVBENCH_KERNELS asks for (float when unset) into *m; KV_EINVAL
 * naming the variable and its value when it is neither int8 nor float (the
 * engine alone would take any other value as float, silently). */
int kv_kernels_env_mode(kv_kernel_mode *m);

/* y[r] = sum_c W[r][c] * x[c], for r in [r0, r1). x: [W->cols], y: [W->rows]
 * (only y[r0..r1) written). Thread-safe: callers split rows across threads. */
void kv_matvec_rows(const kv_tensor *W, const float *x, float *y, int64_t r0, int64_t r1);

/* A prompt's products in int8 mode, each token's output bit for bit
 * kv_matvec_rows's: every token's activations quantized once
 * (kv_q8_acts_quantize, threads splitting the tokens), then the rows
 * (kv_matmul_q8_rows, threads splitting the rows), the tokens sharing
 * each weight block's decoding. kv_q8_acts_bytes: the buffer for n tokens
 * of W's width; 0 when W's products are not integer ones (int8 mode off,
 * a float type, a row too long): take kv_matvec_rows token by token. */
size_t kv_q8_acts_bytes(const kv_tensor *W, int n);
/* Quantizes tokens [t0, t1) of X [n][W->cols] into buf. */
void kv_q8_acts_quantize(const kv_tensor *W, const float *X, int n, int t0, int t1, void *buf);
/* Y [n][W->rows]: rows [r0, r1) of every token, from buf. */
void kv_matmul_q8_rows(const kv_tensor *W, const void *buf, int n, float *Y, int64_t r0, int64_t r1);

/* Dequantizes rows [r0, r1) of W into out: [(r1-r0)][W->cols] fp32. */
void kv_dequant_rows(const kv_tensor *W, int64_t r0, int64_t r1, float *out);

/* n values between fp32 and fp16 with F16C where the CPU has it: the bits
 * of quant.h's kv_fp32_to_fp16 / kv_fp16_to_fp32 (the f16 KV cache's rows). */
void kv_f32_to_f16(const float *x, uint16_t *y, int64_t n);
void kv_f16_to_f32(const uint16_t *x, float *y, int64_t n);

/* Small vector helpers used by the forward pass. */
float kv_dot_f32(const float *a, const float *b, int64_t n);
void kv_axpy_f32(float *y, float a, const float *x, int64_t n); /* y += a*x */
/* Attention over one head's cache, K and V [n][d]: out[t] = q . K[t] (as
 * kv_dot_f32 computes each), and o = sum of w[t] V[t] over the t with
 * w[t] != 0 (as zeroing o and kv_axpy_f32 for each t in order would), in
 * one call instead of one per cached key. */
void kv_dots_f32(const float *q, const float *K, int64_t n, int64_t d, float *out);
void kv_wsum_f32(float *o, const float *w, const float *V, int64_t n, int64_t d);
/* The same over a KV cache stored as t (KV_F32, KV_F16 or KV_Q8_0): K and V
 * are n rows of d values, kv_dtype_bytes(t, d) bytes each (d a multiple of
 * 32 for Q8_0), read in place and converted in registers, so decode streams
 * 2 (f16) or 1.0625 (q8_0) bytes per value instead of 4. The dots are the
 * float-family matrix-vector kernels over K as a weight of type t (always
 * fp32 arithmetic, whatever kv_kernels_mode says: the int8 family would
 * round the query); the weighted sums add w[t] times each value as fp32
 * (for q8_0, d * q rounded to fp32), as kv_wsum_f32 adds. F32 is exactly
 * kv_dots_f32 / kv_wsum_f32. */
void kv_dots_kv(kv_dtype t, const float *q, const void *K, int64_t n, int64_t d, float *out);
void kv_wsum_kv(kv_dtype t, float *o, const float *w, const void *V, int64_t n, int64_t d);
/* x[i] = e^(x[i] - max) / sum over the n values, with an exponential and
 * a summation order that are the same on every ISA (bit for bit), so that
 * a result does not depend on which kernels the CPU runs; -INFINITY gives
 * 0. Within a few ulp of the libm softmax (test_kernels). */
void kv_softmax_f32(float *x, int64_t n);
/* SwiGLU's gate: g[i] = g[i] / (1 + e^-g[i]) * u[i], with softmax's
 * exponential (kv_exp_f32: the same bits on every ISA, within 2 ulp of
 * expf), so prefill and decode, and every CPU, compute the same values. */
void kv_silu_mul(float *g, const float *u, int64_t n);
/* The sum over j < n of x[j] * m[j] in double, for a mask m of 0s and 1s
 * (every product exact): element j into lane j % 32, the lanes folded in
 * halves, so every ISA gives the same bits. Fidelity's attention mass
 * lost: a softmax row's mass on the slots a policy no longer holds. */
double kv_masked_sum(const float *x, const float *m, int64_t n);
/* The sum over i < n of e^(x[i] - shift) in double, with the kernels' own
 * double exponential (within 1 ulp of libm's exp; NaN stays NaN), element
 * i into lane i % 16, the lanes folded in halves: the same bits on every
 * ISA. The log-sum-exp of fidelity's KL divergence, vectorised. */
double kv_sum_exp_f64(const float *x, int64_t n, double shift);
/* e^t: the same function, one value (the same bits as the sum's terms). */
double kv_exp_f64_one(double t);
/* Prefill's products with 512-bit registers: Y[t][r] = sum over k of
 * X[t][k] * W[r][k] for t < n, r < rows, each element one chain of fused
 * multiply-adds over k in order from 0, so a token's outputs depend on its
 * own row of X alone (never on n, the other tokens, the rows' split or
 * the thread). X is first packed (kv_gemm_pack: tiles of 16 tokens, k
 * major, zero-padded to an even number of tiles) into Xp of
 * kv_gemm_pack_floats(n, K) floats; W is rows of ldw floats, Y rows of
 * ldy. kv_gemm_available() says whether this CPU takes it (AVX-512 with
 * two 512-bit FMA ports, told by AVX512-FP16: measured 1.4-1.7x OpenBLAS's
 * Haswell sgemm there; KVBENCH_GEMM=blas turns it off, =own forces it on
 * any AVX-512 CPU); without it the caller uses sgemm. */
int kv_gemm_available(void);
size_t kv_gemm_pack_floats(int64_t n, int64_t K);
void kv_gemm_pack(const float *X, int64_t n, int64_t K, int64_t ldx, float *Xp);
/* Tiles [tb0, tb1) of kv_gemm_pack (threads pack their own share), of
 * kv_gemm_pack_tiles(n) in all. */
int64_t kv_gemm_pack_tiles(int64_t n);
void kv_gemm_pack_range(const float *X, int64_t n, int64_t K, int64_t ldx, float *Xp, int64_t tb0, int64_t tb1);
void kv_gemm_nt(const float *Xp, int64_t n, int64_t K, const float *W, int64_t ldw, int64_t rows, float *Y, int64_t ldy);
/* Attention's second product on the same kernels: O[t][c] = sum over
 * j < kl of P[t][j] * V[j][c] for t < n, c < d (P rows of ldp floats, V
 * rows of d, O rows of ldo), each element one chain of fused
 * multiply-adds over j in order from 0, so a query's output depends on
 * its own row of P alone. Nothing to pack: V's rows are read as vectors,
 * P's values broadcast. Returns 0, or -1 when there is no such kernel or d
 * is not a multiple of 16 (the caller uses sgemm then). */
int kv_gemm_pv(const float *P, int64_t ldp, int64_t n, int64_t kl, const float *V, int64_t d, float *O, int64_t ldo);
/* The portable kernels of kv_dots_kv / kv_wsum_kv (dequantize a row, then
 * the scalar dot / axpy): the reference the vector ones are tested against. */
void kv_dots_kv_ref(kv_dtype t, const float *q, const void *K, int64_t n, int64_t d, float *out);
void kv_wsum_kv_ref(kv_dtype t, float *o, const float *w, const void *V, int64_t n, int64_t d);

#endif
