/* test_kernels.c - every matrix-vector and dequantization kernel, on every
 * ISA this CPU has, against a double-precision reference built from the
 * scalar decoder, on odd shapes, partial row ranges and unaligned data;
 * and each row bit-identical whatever range it is computed in. The integer
 * kernels (activations quantized to int8) against the portable integer
 * path and against the float path, within the bound the activations'
 * rounding allows. Softmax, the same bit for bit on every ISA. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#define KV_EXP64_MAX_TEST 709.78 /* below kv_exp_f64's overflow bound */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kernels_impl.h"
#include "kv_error.h"
#include "quant.h"

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / (float)0x1000000 - 0.5f;
}

/* W (rows x cols of `type`) at an odd address, its fp32 decode, and x. */
typedef struct fixture {
    kv_tensor W;
    uint8_t *raw;   /* allocation (data = raw + 1) */
    float *wf;      /* [rows][cols] decoded */
    float *scales;  /* Q8_G */
    float *x;
} fixture;

static void make(fixture *f, kv_dtype type, int64_t rows, int64_t cols, uint64_t seed) {
    memset(f, 0, sizeof *f);
    float *src = malloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t i = 0; i < rows * cols; i++) src[i] = frand(&seed);
    f->x = malloc((size_t)cols * sizeof(float));
    for (int64_t i = 0; i < cols; i++) f->x[i] = frand(&seed) * 4;
    f->wf = malloc((size_t)(rows * cols) * sizeof(float));
    if (type == KV_Q8_G) {
        const int g = 4;
        f->raw = malloc((size_t)(rows * cols) + 1);
        f->scales = malloc((size_t)(rows * cols / g) * sizeof(float));
        int8_t *q = (int8_t *)(f->raw + 1);
        for (int64_t i = 0; i < rows * cols / g; i++) {
            f->scales[i] = 0.01f + 0.001f * (float)(i % 7);
            for (int j = 0; j < g; j++) {
                q[i * g + j] = (int8_t)(((i * 31 + j * 17) % 255) - 127);
                f->wf[i * g + j] = q[i * g + j] * f->scales[i];
            }
        }
        f->W = (kv_tensor){.type = type, .rows = rows, .cols = cols, .data = q, .scales = f->scales, .group = g};
    } else {
        size_t nb = kv_dtype_bytes(type, rows * cols);
        f->raw = malloc(nb + 1);
        assert_int_equal(kv_quantize(type, src, f->raw + 1, rows * cols), KV_OK);
        assert_int_equal(kv_dequantize(type, f->raw + 1, f->wf, rows * cols), KV_OK);
        f->W = (kv_tensor){.type = type, .rows = rows, .cols = cols, .data = f->raw + 1};
    }
    free(src);
}

static void drop(fixture *f) {
    free(f->raw);
    free(f->wf);
    free(f->scales);
    free(f->x);
}

static void check_matvec(const fixture *f, int64_t r0, int64_t r1) {
    int64_t rows = f->W.rows, cols = f->W.cols;
    float *y = malloc((size_t)rows * sizeof(float));
    for (int64_t r = 0; r < rows; r++) y[r] = 12345.0f; /* rows outside [r0, r1) must stay untouched */
    kv_matvec_rows(&f->W, f->x, y, r0, r1);
    for (int64_t r = 0; r < rows; r++) {
        if (r < r0 || r >= r1) {
            assert_true(y[r] == 12345.0f);
            continue;
        }
        double ref = 0, mag = 0;
        for (int64_t c = 0; c < cols; c++) {
            ref += (double)f->wf[r * cols + c] * f->x[c];
            mag += fabs((double)f->wf[r * cols + c] * f->x[c]);
        }
        if (!(fabs(y[r] - ref) <= 1e-5 * mag + 1e-6))
            fail_msg("%s %s rows %lld cols %lld row %lld: got %.9g want %.9g", kv_isa_name(kv_kernels_isa()),
                     kv_dtype_name(f->W.type), (long long)rows, (long long)cols, (long long)r, y[r], ref);
    }
    free(y);
}

static void test_matvec_all(void **state) {
    (void)state;
    const kv_kernel_mode mode0 = kv_kernels_mode();
    kv_kernels_set_mode(KV_KERNELS_FLOAT); /* the integer path has its own tests below */
    const kv_dtype types[11] = {KV_F32, KV_F16, KV_BF16, KV_Q8_0, KV_Q4_0, KV_Q8_G,
                                KV_Q2_K, KV_Q3_K, KV_Q4_K, KV_Q5_K, KV_Q6_K};
    const int64_t rows[5] = {1, 3, 5, 17, 130}, cols[7] = {32, 64, 96, 160, 256, 768, 2048};
    int isas = 0;
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        isas++;
        for (int t = 0; t < 11; t++)
            for (int r = 0; r < 5; r++)
                for (int c = 0; c < 7; c++) {
                    if (cols[c] % kv_dtype_block_elems(types[t]) != 0) continue; /* K-quants: rows of 256s */
                    fixture f;
                    make(&f, types[t], rows[r], cols[c], (uint64_t)(t * 100 + r * 10 + c));
                    check_matvec(&f, 0, rows[r]);
                    if (rows[r] > 2) check_matvec(&f, 1, rows[r] - 1);
                    drop(&f);
                }
    }
    printf("checked %d ISA(s)\n", isas);
    assert_true(isas >= 1);
    kv_kernels_set_mode(mode0);
}

static void test_plain_tails(void **state) {
    (void)state;
    const kv_kernel_mode mode0 = kv_kernels_mode();
    kv_kernels_set_mode(KV_KERNELS_FLOAT);
    /* F32/F16/BF16 rows whose length is no multiple of the vector width */
    const kv_dtype types[3] = {KV_F32, KV_F16, KV_BF16};
    const int64_t cols[5] = {1, 7, 15, 33, 100};
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        for (int t = 0; t < 3; t++)
            for (int c = 0; c < 5; c++) {
                fixture f;
                make(&f, types[t], 6, cols[c], 99);
                check_matvec(&f, 0, 6);
                drop(&f);
            }
    }
    kv_kernels_set_mode(mode0);
}

/* A row's result does not depend on the range it was computed in: the
 * vector kernels walk several rows of a range at once, and threads split
 * rows differently by thread count, yet each row must come out bit for bit
 * as when computed alone (decode and the tests comparing thread counts rely
 * on it). */
static void test_matvec_range_invariant(void **state) {
    (void)state;
    const kv_dtype types[10] = {KV_F32, KV_F16, KV_BF16, KV_Q8_0, KV_Q4_0, KV_Q2_K, KV_Q3_K, KV_Q4_K, KV_Q5_K, KV_Q6_K};
    const int64_t cols[5] = {64, 96, 800, 256, 1280};
    enum { ROWS = 23 };
    const kv_kernel_mode mode0 = kv_kernels_mode();
    for (int mode = KV_KERNELS_INT8; mode <= KV_KERNELS_FLOAT; mode++)
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        kv_kernels_set_mode((kv_kernel_mode)mode);
        for (int t = 0; t < 10; t++)
            for (int c = 0; c < 5; c++) {
                if (cols[c] % kv_dtype_block_elems(types[t]) != 0) continue;
                fixture f;
                make(&f, types[t], ROWS, cols[c], (uint64_t)(1000 + t * 10 + c));
                float alone[ROWS], y[ROWS];
                for (int64_t r = 0; r < ROWS; r++) kv_matvec_rows(&f.W, f.x, alone, r, r + 1);
                for (int64_t r0 = 0; r0 < ROWS; r0 += 3)
                    for (int64_t r1 = r0 + 1; r1 <= ROWS; r1 += 2) {
                        kv_matvec_rows(&f.W, f.x, y, r0, r1);
                        for (int64_t r = r0; r < r1; r++)
                            if (memcmp(&y[r], &alone[r], sizeof(float)) != 0)
                                fail_msg("%s %s cols %lld: row %lld of [%lld, %lld) is %.9g, alone %.9g",
                                         kv_isa_name(kv_kernels_isa()), kv_dtype_name(types[t]), (long long)cols[c],
                                         (long long)r, (long long)r0, (long long)r1, y[r], alone[r]);
                    }
                drop(&f);
            }
    }
    kv_kernels_set_mode(mode0);
}

static void test_dequant_rows_exact(void **state) {
    (void)state;
    const kv_dtype types[11] = {KV_F32, KV_F16, KV_BF16, KV_Q8_0, KV_Q4_0, KV_Q8_G,
                                KV_Q2_K, KV_Q3_K, KV_Q4_K, KV_Q5_K, KV_Q6_K};
    static float out[9 * 512];
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        for (int t = 0; t < 11; t++) {
            const int64_t n = kv_dtype_block_elems(types[t]) > 32 ? 512 : 96;
            fixture f;
            make(&f, types[t], 9, n, 7);
            kv_dequant_rows(&f.W, 2, 7, out);
            assert_memory_equal(out, f.wf + 2 * n, (size_t)(5 * n) * sizeof(float));
            drop(&f);
        }
    }
}

static void test_dot_axpy(void **state) {
    (void)state;
    uint64_t s = 5;
    float a[301], b[301], y[301], y0[301];
    for (int i = 0; i < 301; i++) a[i] = frand(&s), b[i] = frand(&s), y0[i] = frand(&s);
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        for (int n = 0; n <= 301; n += (n < 40 ? 1 : 37)) {
            double ref = 0;
            for (int i = 0; i < n; i++) ref += (double)a[i] * b[i];
            assert_true(fabs(kv_dot_f32(a, b, n) - ref) < 1e-5);
            memcpy(y, y0, sizeof y);
            kv_axpy_f32(y, 0.75f, a, n);
            for (int i = 0; i < 301; i++)
                assert_true(fabsf(y[i] - (i < n ? y0[i] + 0.75f * a[i] : y0[i])) < 1e-6f);
        }
    }
}

/* The one-call attention kernels give, bit for bit, what one dot per key
 * and zeroing plus one axpy per key give (decode's results must not change
 * with the kernel that computes them), for head sizes with and without
 * vector tails, and skip zero weights (masked keys). */
static void test_dots_wsum(void **state) {
    (void)state;
    enum { NMAX = 37, DMAX = 200 };
    static float K[NMAX * DMAX], q[DMAX], out[NMAX], o[DMAX], ref[DMAX];
    float w[NMAX];
    uint64_t s = 9;
    for (int i = 0; i < NMAX * DMAX; i++) K[i] = frand(&s);
    for (int i = 0; i < DMAX; i++) q[i] = frand(&s);
    for (int t = 0; t < NMAX; t++) w[t] = t % 5 == 3 ? 0.0f : frand(&s);
    const int ds[] = {1, 7, 8, 15, 16, 17, 33, 64, 80, 96, 128, 200}, ns[] = {1, 5, NMAX};
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                const int d = ds[di], n = ns[ni];
                kv_dots_f32(q, K, n, d, out);
                for (int t = 0; t < n; t++) {
                    float one = kv_dot_f32(q, K + (size_t)t * d, d);
                    assert_memory_equal(&out[t], &one, sizeof one);
                }
                memset(ref, 0, sizeof ref);
                for (int t = 0; t < n; t++)
                    if (w[t] != 0.0f) kv_axpy_f32(ref, w[t], K + (size_t)t * d, d);
                for (int i = 0; i < DMAX; i++) o[i] = 7.0f; /* stale values must be overwritten */
                kv_wsum_f32(o, w, K, n, d);
                assert_memory_equal(o, ref, (size_t)d * sizeof(float));
                assert_true(o[d < DMAX ? d : 0] == (d < DMAX ? 7.0f : o[0])); /* nothing written past d */
            }
    }
}

/* ------------------------------------------------------ integer path */

static const kv_dtype int8_types[7] = {KV_Q8_0, KV_Q4_0, KV_Q2_K, KV_Q3_K, KV_Q4_K, KV_Q5_K, KV_Q6_K};

/* Activations with ties (x*127/amax exactly k + 0.5), zeros, a zero block
 * and a block whose largest value is negative. */
static void act_input(float *x, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) x[i] = frand(&seed) * 3;
    for (int64_t i = 0; i < n; i += 7) x[i] = 0;
    if (n >= 64) {
        for (int i = 32; i < 64; i++) x[i] = 0;
        x[5] = -2.0f; /* amax of block 0 (|x| <= 1.5 elsewhere) */
        x[6] = -2.0f * 0.5f / 127.0f, x[7] = 2.0f * 2.5f / 127.0f;
    }
}

/* The vector quantizers give kv_quantize_act's bits, and its values are
 * what quant.h promises: |x - d q| <= d/2, q in [-127, 127], s16 the sums. */
static void test_quant_act(void **state) {
    (void)state;
    enum { N = 2048 };
    static float x[N], d0[N / 32], d1[N / 32];
    static int8_t q0[N], q1[N];
    static int16_t s0[N / 16], s1[N / 16];
    act_input(x, N, 3);
    const int32_t blks[2] = {32, 256};
    for (int bi = 0; bi < 2; bi++) {
        const int32_t blk = blks[bi];
        kv_quantize_act(x, N, blk, d0, q0, s0);
        /* half a step, plus the scale's own rounding times |q| <= 127: fp16
         * (2^-11 relative) for blocks of 32, one fp32 reciprocal for 256 */
        const double rel = blk == 32 ? 0x1p-11 : 0x1p-23;
        for (int64_t i = 0; i < N; i++) {
            const float d = d0[i / blk];
            assert_true(q0[i] >= -127 && q0[i] <= 127);
            if (!(fabs((double)x[i] - (double)d * q0[i]) <= d * (0.5 + 127 * rel) * (1 + 1e-6)))
                fail_msg("blk %d value %lld: %.9g quantized to %d * %.9g", blk, (long long)i, x[i], q0[i], d);
        }
        assert_true(d0[1] == 0 || blk == 256); /* the zero block */
        /* llama.cpp's scales: block_q8_0 keeps d in fp16; Q8_K keeps the
         * reciprocal of its fp32 multiplier */
        for (int64_t b = 0; b < N / blk; b++) {
            float amax = 0;
            for (int32_t i = 0; i < blk; i++) amax = fabsf(x[b * blk + i]) > amax ? fabsf(x[b * blk + i]) : amax;
            const float want = amax == 0 ? 0 : blk == 32 ? kv_fp16_to_fp32(kv_fp32_to_fp16(amax / 127.0f))
                                                         : 1.0f / (127.0f / amax);
            if (d0[b] != want) fail_msg("blk %d block %lld: scale %.9g, llama.cpp's %.9g", blk, (long long)b, d0[b], want);
        }
        for (int g = 0; g < N / 16; g++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += q0[16 * g + i];
            assert_int_equal(s0[g], s);
        }
        for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
            if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
            for (int64_t n = blk; n <= N; n += (n < 4 * blk ? blk : 5 * blk)) {
                const kv_kernel_table *k = isa == KV_ISA_SCALAR ? &kv_kernels_scalar
#if defined(KV_X86_DISPATCH)
                                         : isa == KV_ISA_AVX2 ? &kv_kernels_avx2 : &kv_kernels_avx512;
#else
                                         : &kv_kernels_scalar;
#endif
                if (!k->quant_act) continue;
                memset(q1, 0x55, sizeof q1);
                k->quant_act(x, n, blk, d1, q1, s1);
                kv_quantize_act(x, n, blk, d0, q0, s0);
                assert_memory_equal(d1, d0, (size_t)(n / blk) * sizeof(float));
                assert_memory_equal(q1, q0, (size_t)n);
                assert_memory_equal(s1, s0, (size_t)(n / 16) * sizeof(int16_t));
            }
        }
    }
}

/* y from the kernels in use (mode and ISA as set). */
static void run_rows(const fixture *f, kv_kernel_mode mode, float *y) {
    const kv_kernel_mode mode0 = kv_kernels_mode();
    kv_kernels_set_mode(mode);
    kv_matvec_rows(&f->W, f->x, y, 0, f->W.rows);
    kv_kernels_set_mode(mode0);
}

/* Each integer kernel (1) within float rounding of a float64 sum over the
 * decoded weights and the decoded int8 activations (the integer path's
 * definition), and within 1e-6 of the mass of the portable integer path's
 * result; (2) within the activations' rounding of the float path: |sum
 * w (x - d q)| <= sum |w| d/2 per block; (3) with and without VNNI bit
 * for bit equal (the same int32 sums and fp32 steps). */
static void test_int8_matvec(void **state) {
    (void)state;
    const int64_t rows[4] = {1, 3, 17, 67}, cols[6] = {32, 96, 256, 768, 2048, 4096};
    static float yi[67], ys[67], yf[67], yb[67], dq[4096];
    static int8_t q[4096];
    static int16_t s16[4096 / 16];
    int checked = 0;
    double worst = 0; /* largest deviation from the float path, as a share of its bound */
    for (int t = 0; t < 7; t++)
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 6; c++) {
                const kv_dtype type = int8_types[t];
                const int32_t blk = kv_int8_block(type);
                if (cols[c] % blk != 0) continue;
                fixture f;
                make(&f, type, rows[r], cols[c], (uint64_t)(500 + t * 100 + r * 10 + c));
                act_input(f.x, cols[c], (uint64_t)(7 + c));
                kv_quantize_act(f.x, cols[c], blk, dq, q, s16);
                float *da = dq; /* scales first, then the decoded activations over them */
                static float xa[4096];
                for (int64_t i = 0; i < cols[c]; i++) xa[i] = da[i / blk] * q[i];
                kv_kernels_set_isa(KV_ISA_SCALAR);
                run_rows(&f, KV_KERNELS_INT8, ys);
                run_rows(&f, KV_KERNELS_FLOAT, yf);
                for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
                    if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
                    run_rows(&f, KV_KERNELS_INT8, yi);
                    if (isa == KV_ISA_AVX512_VNNI) assert_memory_equal(yi, yb, (size_t)rows[r] * sizeof(float));
                    if (isa == KV_ISA_AVX512) memcpy(yb, yi, sizeof yb);
                    for (int64_t i = 0; i < rows[r]; i++) {
                        const float *w = f.wf + i * cols[c];
                        double ref = 0, mag = 0, bound = 0;
                        for (int64_t j = 0; j < cols[c]; j++) {
                            ref += (double)w[j] * xa[j];
                            mag += fabs((double)w[j] * xa[j]);
                            bound += fabs((double)w[j]) * da[j / blk] * 0.5;
                        }
                        const char *isan = kv_isa_name((kv_isa)isa), *tn = kv_dtype_name(type);
                        if (!(fabs(yi[i] - ref) <= 1e-5 * mag + 1e-6))
                            fail_msg("%s %s %lldx%lld row %lld: %.9g, float64 of the same integers %.9g", isan, tn,
                                     (long long)rows[r], (long long)cols[c], (long long)i, yi[i], ref);
                        if (!(fabs(yi[i] - ys[i]) <= 1e-6 * mag + 1e-7))
                            fail_msg("%s %s %lldx%lld row %lld: %.9g, portable integer path %.9g", isan, tn,
                                     (long long)rows[r], (long long)cols[c], (long long)i, yi[i], ys[i]);
                        if (!(fabs(yi[i] - yf[i]) <= bound + 1e-5 * mag + 1e-6))
                            fail_msg("%s %s %lldx%lld row %lld: %.9g, float path %.9g, bound %.3g", isan, tn,
                                     (long long)rows[r], (long long)cols[c], (long long)i, yi[i], yf[i], bound);
                        if (bound > 0 && fabs(yi[i] - yf[i]) / bound > worst) worst = fabs(yi[i] - yf[i]) / bound;
                        checked++;
                    }
                }
                drop(&f);
            }
    printf("integer path: %d rows checked; largest deviation from the float path %.3f of its bound\n", checked, worst);
    for (int isa = KV_ISA_AVX512_VNNI; isa > KV_ISA_SCALAR && kv_kernels_set_isa((kv_isa)isa) != KV_OK; isa--) continue;
}

/* The prompt's integer products (kv_q8_acts_quantize + kv_matmul_q8_rows):
 * every token's output bit for bit kv_matvec_rows' in int8 mode, on every
 * ISA, for 1 to 9 tokens (groups of four and their tails), rows split
 * unevenly, the activations quantized in two token ranges. */
static void test_int8_matmul(void **state) {
    (void)state;
    const kv_kernel_mode mode0 = kv_kernels_mode();
    kv_kernels_set_mode(KV_KERNELS_INT8);
    const int64_t rows = 37, cols = 512;
    static float X[9 * 512], Y[9 * 37], want[9 * 37];
    int checked = 0;
    for (int t = 0; t < 7; t++) {
        fixture f;
        make(&f, int8_types[t], rows, cols, (uint64_t)(900 + t));
        uint64_t seed = 77 + (uint64_t)t;
        for (int i = 0; i < 9 * cols; i++) X[i] = frand(&seed) * (i % 5 ? 1.0f : 8.0f);
        for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
            if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
            for (int n = 1; n <= 9; n++) {
                const size_t need = kv_q8_acts_bytes(&f.W, n);
                assert_true(need > 0);
                void *buf = malloc(need);
                kv_q8_acts_quantize(&f.W, X, n, 0, n / 2, buf);
                kv_q8_acts_quantize(&f.W, X, n, n / 2, n, buf);
                for (int i = 0; i < n * rows; i++) Y[i] = 12345.0f;
                kv_matmul_q8_rows(&f.W, buf, n, Y, 0, 5);
                kv_matmul_q8_rows(&f.W, buf, n, Y, 5, 30);
                kv_matmul_q8_rows(&f.W, buf, n, Y, 30, rows);
                for (int i = 0; i < n; i++) kv_matvec_rows(&f.W, X + i * cols, want + i * rows, 0, rows);
                for (int i = 0; i < n * rows; i++)
                    if (memcmp(&Y[i], &want[i], sizeof(float)))
                        fail_msg("%s %s, %d tokens: token %d row %d: %.9g, decode's kernel %.9g", kv_isa_name((kv_isa)isa),
                                 kv_dtype_name(f.W.type), n, i / (int)rows, i % (int)rows, Y[i], want[i]);
                checked += n * (int)rows;
                free(buf);
            }
        }
        drop(&f);
    }
    kv_kernels_set_mode(KV_KERNELS_FLOAT);
    fixture f;
    make(&f, KV_Q4_K, rows, cols, 5);
    assert_int_equal(kv_q8_acts_bytes(&f.W, 4), 0); /* float mode: token by token, no buffer */
    drop(&f);
    make(&f, KV_F16, rows, cols, 5);
    kv_kernels_set_mode(KV_KERNELS_INT8);
    assert_int_equal(kv_q8_acts_bytes(&f.W, 4), 0); /* F16: rounded activations, not integer blocks */
    drop(&f);
    printf("prompt integer products: %d outputs bit-identical to decode's\n", checked);
    kv_kernels_set_mode(mode0);
    for (int isa = KV_ISA_AVX512_VNNI; isa > KV_ISA_SCALAR && kv_kernels_set_isa((kv_isa)isa) != KV_OK; isa--) continue;
}

/* F16 and BF16 weights in int8 mode: the float kernels on x rounded to
 * the weight's type (llama.cpp's vec_dot_type), bit for bit on every ISA;
 * and not the float mode's result (the rounding is there). */
static void test_half_act(void **state) {
    (void)state;
    const kv_dtype types[2] = {KV_F16, KV_BF16};
    static float y[17], want[17], yf[17], xr[768];
    for (int t = 0; t < 2; t++)
        for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
            if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
            fixture f;
            make(&f, types[t], 17, 768, (uint64_t)(40 + t));
            for (int i = 0; i < 768; i++)
                xr[i] = t == 0 ? kv_fp16_to_fp32(kv_fp32_to_fp16(f.x[i])) : kv_bf16_to_fp32(kv_fp32_to_bf16(f.x[i]));
            run_rows(&f, KV_KERNELS_INT8, y);
            run_rows(&f, KV_KERNELS_FLOAT, yf);
            float *x0 = f.x;
            f.x = xr;
            run_rows(&f, KV_KERNELS_FLOAT, want);
            f.x = x0;
            assert_memory_equal(y, want, sizeof y);
            assert_true(memcmp(y, yf, sizeof y) != 0);
            drop(&f);
        }
    for (int isa = KV_ISA_AVX512_VNNI; isa > KV_ISA_SCALAR && kv_kernels_set_isa((kv_isa)isa) != KV_OK; isa--) continue;
}

/* Softmax: e^x within 2 ulp of libm's double exp over softmax's whole
 * input range (and 0 below ln(FLT_MIN), including -inf); then rows of
 * every length 1..70 and a few long ones, with -inf entries, against a
 * float64 softmax (the rounding of x - max, then 4e-7 relative), and bit for bit the same on every ISA
 * (the portable path is the reference). */
static void test_softmax(void **state) {
    (void)state;
    double worst = 0;
    for (float x = -87.3f; x <= 0.0f; x += 0.0007f) {
        double want = exp((double)x), got = kv_exp_f32(x);
        double ulp = ldexp(1.0, ilogb(want) - 23);
        if (fabs(got - want) / ulp > worst) worst = fabs(got - want) / ulp;
    }
    print_message("exp: worst error %.2f ulp over [-87.3, 0]\n", worst);
    assert_true(worst <= 2.0);
    assert_true(kv_exp_f32(-INFINITY) == 0.0f && kv_exp_f32(-88.0f) == 0.0f && kv_exp_f32(0.0f) == 1.0f);
    const int64_t lens[6] = {100, 257, 1000, 2049, 4096, 9001};
    uint64_t seed = 7;
    for (int64_t li = 0; li < 70 + 6; li++) {
        const int64_t n = li < 70 ? li + 1 : lens[li - 70];
        float *ref = malloc((size_t)n * sizeof *ref), *got = malloc((size_t)n * sizeof *got);
        for (int64_t i = 0; i < n; i++) ref[i] = 30.0f * frand(&seed);
        if (n > 2) ref[n / 2] = ref[n - 1] = -INFINITY; /* masked keys */
        double mx = -INFINITY, sum = 0;
        for (int64_t i = 0; i < n; i++) mx = ref[i] > mx ? ref[i] : mx;
        for (int64_t i = 0; i < n; i++) sum += exp((double)ref[i] - mx);
        memcpy(got, ref, (size_t)n * sizeof *got);
        kv_kernels_set_isa(KV_ISA_SCALAR);
        kv_softmax_f32(got, n);
        for (int64_t i = 0; i < n; i++) {
            /* x - max rounds to float first: half an ulp of |x - max|, a
             * relative error of e^x that grows with it; then a few ulp */
            double want = exp((double)ref[i] - mx) / sum;
            double bound = (fabs((double)ref[i] - mx) * 0x1p-24 + 4e-7) * want;
            if (fabs(got[i] - want) > bound)
                fail_msg("softmax n=%lld [%lld]: %.9g, float64 %.9g", (long long)n, (long long)i, got[i], want);
        }
        for (int isa = KV_ISA_AVX2; isa <= KV_ISA_AVX512_VNNI; isa++) {
            if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
            float *v = malloc((size_t)n * sizeof *v);
            memcpy(v, ref, (size_t)n * sizeof *v);
            kv_softmax_f32(v, n);
            if (memcmp(v, got, (size_t)n * sizeof *v) != 0)
                fail_msg("softmax n=%lld: %s differs from the portable path", (long long)n, kv_isa_name((kv_isa)isa));
            free(v);
        }
        free(ref);
        free(got);
    }
    for (int isa = KV_ISA_AVX512_VNNI; isa > KV_ISA_SCALAR && kv_kernels_set_isa((kv_isa)isa) != KV_OK; isa--) continue;
}

/* kv_gemm_nt on kv_gemm_pack's tiles, every ISA (the portable loop where
 * there is no kernel): within float rounding of a float64 product
 * (K * 2^-24 of the sum of |products|, the chain's bound), odd shapes
 * (tokens past the tiles, rows past the blocks of 8, strides); and a
 * token's outputs bit for bit the same whatever n and the other tokens
 * (prefill's results must not depend on how the prompt is cut). */
static void test_gemm(void **state) {
    (void)state;
    const int64_t ns[4] = {1, 17, 33, 70}, rows[3] = {1, 9, 37}, Ks[3] = {1, 31, 300};
    uint64_t s = 77;
    static float X[70 * 300], W[37 * 301], Y[70 * 40], Y1[40], Xp[96 * 300], X1[300];
    for (int i = 0; i < 70 * 300; i++) X[i] = frand(&s);
    for (int i = 0; i < 37 * 301; i++) W[i] = frand(&s);
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512_VNNI; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 3; c++) {
                    const int64_t n = ns[a], R = rows[b], K = Ks[c], ldw = K + 1, ldy = 40;
                    assert_true(kv_gemm_pack_floats(n, K) <= sizeof Xp / sizeof *Xp);
                    kv_gemm_pack(X, n, K, K, Xp);
                    kv_gemm_nt(Xp, n, K, W, ldw, R, Y, ldy);
                    for (int64_t t = 0; t < n; t++)
                        for (int64_t r = 0; r < R; r++) {
                            double want = 0, mass = 0;
                            for (int64_t k = 0; k < K; k++) {
                                want += (double)X[t * K + k] * W[r * ldw + k];
                                mass += fabs((double)X[t * K + k] * W[r * ldw + k]);
                            }
                            if (fabs(Y[t * ldy + r] - want) > (double)K * 0x1p-24 * mass + 1e-30)
                                fail_msg("%s gemm n=%lld rows=%lld K=%lld [%lld][%lld]: %.9g, float64 %.9g",
                                         kv_isa_name((kv_isa)isa), (long long)n, (long long)R, (long long)K, (long long)t,
                                         (long long)r, Y[t * ldy + r], want);
                        }
                    /* the last token alone gives its row bit for bit */
                    memcpy(X1, X + (n - 1) * K, (size_t)K * sizeof *X1);
                    kv_gemm_pack(X1, 1, K, K, Xp);
                    kv_gemm_nt(Xp, 1, K, W, ldw, R, Y1, ldy);
                    assert_memory_equal(Y1, Y + (n - 1) * ldy, (size_t)R * sizeof *Y1);
                }
    }
    for (int isa = KV_ISA_AVX512_VNNI; isa > KV_ISA_SCALAR && kv_kernels_set_isa((kv_isa)isa) != KV_OK; isa--) continue;
}

/* The vector packing gives the portable packing's floats (rows past n as
 * zeros, any ldx); kv_gemm_pv equals, bit for bit, one fused chain per
 * element over the keys in order (fmaf), whatever the rows around it, and
 * refuses a width that is not a multiple of 16. */
static void test_gemm_pack_pv(void **state) {
    (void)state;
    uint64_t s = 91;
    static float X[70 * 301], Xp0[96 * 301], Xp1[96 * 301], P[9 * 131], V[130 * 128], O[9 * 140];
    for (int i = 0; i < 70 * 301; i++) X[i] = frand(&s);
    for (int i = 0; i < 9 * 131; i++) P[i] = frand(&s);
    for (int i = 0; i < 130 * 128; i++) V[i] = frand(&s);
    const int64_t ns[4] = {1, 17, 33, 70}, Ks[3] = {1, 31, 300};
    const kv_isa best = kv_kernels_isa();
    for (int a = 0; a < 4; a++)
        for (int c = 0; c < 3; c++) {
            assert_int_equal(kv_kernels_set_isa(KV_ISA_SCALAR), KV_OK);
            memset(Xp0, 0xff, sizeof Xp0);
            kv_gemm_pack(X, ns[a], Ks[c], 301, Xp0);
            assert_int_equal(kv_kernels_set_isa(best), KV_OK);
            memset(Xp1, 0xff, sizeof Xp1);
            kv_gemm_pack(X, ns[a], Ks[c], 301, Xp1);
            assert_memory_equal(Xp0, Xp1, kv_gemm_pack_floats(ns[a], Ks[c]) * sizeof(float));
        }
    if (kv_gemm_pv(P, 131, 1, 1, V, 8, O, 140) == 0) fail_msg("kv_gemm_pv took a width of 8");
    const int64_t ds[5] = {16, 48, 64, 80, 128}, rows[4] = {1, 3, 4, 9}, kls[3] = {1, 7, 130};
    int ran = 0;
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 4; b++)
            for (int c = 0; c < 3; c++) {
                const int64_t d = ds[a], n = rows[b], kl = kls[c];
                if (kv_gemm_pv(P, 131, n, kl, V, d, O, 140) != 0) continue; /* no such kernel here */
                ran++;
                for (int64_t t = 0; t < n; t++)
                    for (int64_t e = 0; e < d; e++) {
                        float want = 0.0f;
                        for (int64_t j = 0; j < kl; j++) want = fmaf(P[t * 131 + j], V[j * d + e], want);
                        if (memcmp(&want, &O[t * 140 + e], sizeof want))
                            fail_msg("kv_gemm_pv d=%lld n=%lld kl=%lld [%lld][%lld]: %.9g, the chain %.9g", (long long)d,
                                     (long long)n, (long long)kl, (long long)t, (long long)e, O[t * 140 + e], want);
                    }
            }
    if (kv_gemm_available()) assert_int_equal(ran, 5 * 4 * 3);
}

/* The F16C row converters give quant.c's bits: every fp16 value to fp32,
 * and to fp16 every fp16 value, the points halfway between neighbours
 * (ties to even), subnormals, the overflow boundary, infinities and NaNs,
 * and random floats. */
static void test_f16_rows(void **state) {
    (void)state;
    enum { N = 65536 * 3 + 4096 };
    static uint16_t h[65536], got16[N], want16[N];
    static float f[N], got32[65536];
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    int64_t n = 0;
    for (int i = 0; i < 65536; i++) {
        const float v = kv_fp16_to_fp32((uint16_t)i);
        f[n++] = v;
        uint32_t u;
        memcpy(&u, &v, sizeof u);
        u += 0x1000u; /* halfway to the next fp16 value (for normals): a tie */
        memcpy(&f[n++], &u, sizeof u);
        u -= 1;
        memcpy(&f[n++], &u, sizeof u);
    }
    uint64_t s = 5;
    while (n < N) f[n++] = ldexpf(frand(&s), (int)(s % 40) - 20); /* magnitudes 2^-21 .. 2^19 */
    f[0] = 65520.0f, f[1] = 65519.996f, f[2] = -INFINITY, f[3] = NAN, f[4] = 1e-8f, f[5] = -3e-8f;
    for (int64_t i = 0; i < N; i++) want16[i] = kv_fp32_to_fp16(f[i]);
    const kv_isa best = kv_kernels_isa();
    for (int isa = KV_ISA_SCALAR; isa <= (int)best; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        kv_f32_to_f16(f, got16, N);
        for (int64_t i = 0; i < N; i++)
            if (got16[i] != want16[i])
                fail_msg("%s: %.9g -> fp16 0x%04x, quant.c 0x%04x", kv_isa_name((kv_isa)isa), f[i], got16[i], want16[i]);
        kv_f16_to_f32(h, got32, 65536);
        for (int i = 0; i < 65536; i++) {
            const float w = kv_fp16_to_fp32((uint16_t)i);
            if (memcmp(&w, &got32[i], sizeof w)) fail_msg("%s: fp16 0x%04x -> %.9g, quant.c %.9g", kv_isa_name((kv_isa)isa), i, got32[i], w);
        }
    }
    assert_int_equal(kv_kernels_set_isa(best), KV_OK);
}

/* SwiGLU's gate: every ISA gives the portable loop's bits (lengths with
 * tails, inputs from -100 to 100, where e^-g is clamped or 0), and each
 * value is within a few ulp of g / (1 + e^-g) * u in double (below 2^-100,
 * where the exponential is clamped, within 1e-35 of it). */
static void test_silu(void **state) {
    (void)state;
    enum { N = 1003 };
    static float g0[N], u[N], want[N], got[N];
    uint64_t s = 17;
    for (int i = 0; i < N; i++) {
        g0[i] = frand(&s) * (i % 7 == 0 ? 200.0f : 16.0f);
        u[i] = frand(&s) * 4.0f;
    }
    const kv_isa best = kv_kernels_isa();
    assert_int_equal(kv_kernels_set_isa(KV_ISA_SCALAR), KV_OK);
    memcpy(want, g0, sizeof want);
    kv_silu_mul(want, u, N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        const double g = g0[i], ref = g / (1.0 + exp(-g)) * u[i];
        if (fabs(ref) < 0x1p-100) { /* g below -60: the exponential is clamped at e^88, the value ~0 */
            if (fabs(want[i] - ref) > 1e-35) fail_msg("silu(%.9g) * %.9g = %.9g, not ~0", g0[i], u[i], want[i]);
            continue;
        }
        const double ulp = ldexp(1.0, ilogb(ref) - 23);
        if (fabs(want[i] - ref) / ulp > worst) worst = fabs(want[i] - ref) / ulp;
    }
    if (worst > 4) fail_msg("silu: %.2f ulp from the double reference", worst);
    for (int isa = KV_ISA_SCALAR + 1; isa <= (int)best; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        for (int n = 1; n <= N; n += 97) {
            memcpy(got, g0, sizeof got);
            kv_silu_mul(got, u, n);
            if (memcmp(got, want, (size_t)n * sizeof *got) != 0)
                fail_msg("%s silu over %d values differs from the portable loop", kv_isa_name((kv_isa)isa), n);
            assert_memory_equal(got + n, g0 + n, (size_t)(N - n) * sizeof *got); /* nothing past n */
        }
    }
    assert_int_equal(kv_kernels_set_isa(best), KV_OK);
    printf("silu: worst %.2f ulp\n", worst);
}

/* kv_masked_sum: the portable loop against a long double sum of the same
 * products (every product exact, the mask being 0 or 1), then every ISA
 * against the portable loop's bits, at every tail length. */
static void test_masked_sum(void **state) {
    (void)state;
    enum { N = 1100 };
    static float x[N], m[N];
    uint64_t s = 23;
    for (int i = 0; i < N; i++) {
        x[i] = fabsf(frand(&s)) * ldexpf(1.0f, -(i % 41)); /* positive, exponents 2^0..2^-40: inexact sums */
        m[i] = frand(&s) > 0 ? 1.0f : 0.0f;
    }
    const kv_isa best = kv_kernels_isa();
    static double want[N + 1];
    assert_int_equal(kv_kernels_set_isa(KV_ISA_SCALAR), KV_OK);
    double worst = 0;
    for (int n = 0; n <= N; n++) {
        want[n] = kv_masked_sum(x, m, n);
        long double ref = 0;
        for (int i = 0; i < n; i++) ref += (long double)x[i] * m[i];
        const double err = fabs((double)(want[n] - ref)) / (ref > 0 ? (double)ref : 1.0);
        if (err > worst) worst = err;
    }
    /* n doubles added in 32 lanes: a relative error of n * 2^-53 at most */
    if (worst > N * 0x1p-53) fail_msg("masked sum: relative error %.3g against the long double sum", worst);
    for (int isa = KV_ISA_SCALAR + 1; isa <= (int)best; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        for (int n = 0; n <= N; n++) {
            const double got = kv_masked_sum(x, m, n);
            if (memcmp(&got, &want[n], sizeof got) != 0)
                fail_msg("%s masked sum over %d values: %.17g, the portable loop %.17g", kv_isa_name((kv_isa)isa), n, got,
                         want[n]);
        }
    }
    assert_int_equal(kv_kernels_set_isa(best), KV_OK);
    printf("masked sum: worst relative error %.3g\n", worst);
}

/* Distance in units in the last place of want (the subnormal spacing
 * below DBL_MIN). */
static double ulps64(double got, double want) {
    if (got == want) return 0;
    const double ulp = want == 0 || fabs(want) < 0x1p-1022 ? 0x1p-1074 : ldexp(1.0, ilogb(want) - 52);
    return fabs(got - want) / ulp;
}

/* kv_exp_f64 against libm's exp (1 ulp, subnormals and the edges
 * included), then kv_sum_exp_f64 on every ISA against the portable
 * loop's bits at every tail length, and the portable sum against a
 * long double sum of libm's terms. */
static void test_exp64(void **state) {
    (void)state;
    double worst = 0, at = 0;
    uint64_t s = 41;
    for (int i = 0; i < 200000; i++) {
        const double t = -745.0 + 1455.0 * (double)(frand(&s) * 0.5f + 0.5f) + (double)frand(&s) * 1e-3;
        if (t > KV_EXP64_MAX_TEST) continue;
        const double e = ulps64(kv_exp_f64_one(t), exp(t));
        if (e > worst) worst = e, at = t;
    }
    for (double t = -1.0; t <= 1.0; t += 1.0 / 1024) { /* the reduction's own range, densely */
        const double e = ulps64(kv_exp_f64_one(t), exp(t));
        if (e > worst) worst = e, at = t;
    }
    if (worst > 1.0) fail_msg("exp64: %.2f ulp from libm at t = %.17g", worst, at);
    assert_true(kv_exp_f64_one(0.0) == 1.0);
    assert_true(kv_exp_f64_one(-INFINITY) == 0.0 && kv_exp_f64_one(-746.0) == 0.0);
    assert_true(isinf(kv_exp_f64_one(INFINITY)) && isinf(kv_exp_f64_one(710.0)));
    assert_true(isnan(kv_exp_f64_one(NAN)));
    enum { N = 700 };
    static float x[N];
    for (int i = 0; i < N; i++) x[i] = frand(&s) * (i % 13 == 0 ? 800.0f : 30.0f) - 10.0f;
    x[5] = -INFINITY; /* a masked logit: a zero term */
    const kv_isa best = kv_kernels_isa();
    static double want[N + 1];
    assert_int_equal(kv_kernels_set_isa(KV_ISA_SCALAR), KV_OK);
    double worst_sum = 0;
    for (int n = 0; n <= N; n++) {
        want[n] = kv_sum_exp_f64(x, n, 20.0);
        long double ref = 0;
        for (int i = 0; i < n; i++) ref += expl((long double)x[i] - 20.0L);
        if (ref > 0 && isfinite((double)ref)) {
            const double err = fabs((double)((want[n] - ref) / ref));
            if (err > worst_sum) worst_sum = err;
        }
    }
    /* n terms within 1 ulp each, added in 16 lanes: n * 2^-52 at most */
    if (worst_sum > N * 0x1p-52) fail_msg("sum of exponentials: relative error %.3g", worst_sum);
    for (int isa = KV_ISA_SCALAR + 1; isa <= (int)best; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        for (int n = 0; n <= N; n++) {
            const double got = kv_sum_exp_f64(x, n, 20.0);
            if (memcmp(&got, &want[n], sizeof got) != 0)
                fail_msg("%s sum of exponentials over %d values: %.17g, the portable loop %.17g",
                         kv_isa_name((kv_isa)isa), n, got, want[n]);
        }
        /* a NaN stays a NaN, on every ISA */
        float y[20];
        for (int i = 0; i < 20; i++) y[i] = (float)i;
        y[17] = NAN;
        assert_true(isnan(kv_sum_exp_f64(y, 20, 0.0)));
    }
    assert_int_equal(kv_kernels_set_isa(best), KV_OK);
    printf("exp64: worst %.2f ulp (t = %.6g); sums within %.3g\n", worst, at, worst_sum);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matvec_all), cmocka_unit_test(test_int8_matmul),       cmocka_unit_test(test_plain_tails),
        cmocka_unit_test(test_matvec_range_invariant),
        cmocka_unit_test(test_dequant_rows_exact), cmocka_unit_test(test_dot_axpy),
        cmocka_unit_test(test_dots_wsum),          cmocka_unit_test(test_quant_act),
        cmocka_unit_test(test_int8_matvec),        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_half_act),           cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_gemm_pack_pv),     cmocka_unit_test(test_f16_rows),
        cmocka_unit_test(test_silu),              cmocka_unit_test(test_masked_sum),
        cmocka_unit_test(test_exp64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
