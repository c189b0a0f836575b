/* test_kernels.c - every matrix-vector and dequantization kernel, on every
 * ISA this CPU has, against a double-precision reference built from the
 * scalar decoder, on odd shapes, partial row ranges and unaligned data;
 * and each row bit-identical whatever range it is computed in. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
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
    const kv_dtype types[11] = {KV_F32, KV_F16, KV_BF16, KV_Q8_0, KV_Q4_0, KV_Q8_G,
                                KV_Q2_K, KV_Q3_K, KV_Q4_K, KV_Q5_K, KV_Q6_K};
    const int64_t rows[5] = {1, 3, 5, 17, 130}, cols[7] = {32, 64, 96, 160, 256, 768, 2048};
    int isas = 0;
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512; isa++) {
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
}

static void test_plain_tails(void **state) {
    (void)state;
    /* F32/F16/BF16 rows whose length is no multiple of the vector width */
    const kv_dtype types[3] = {KV_F32, KV_F16, KV_BF16};
    const int64_t cols[5] = {1, 7, 15, 33, 100};
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
        for (int t = 0; t < 3; t++)
            for (int c = 0; c < 5; c++) {
                fixture f;
                make(&f, types[t], 6, cols[c], 99);
                check_matvec(&f, 0, 6);
                drop(&f);
            }
    }
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
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512; isa++) {
        if (kv_kernels_set_isa((kv_isa)isa) != KV_OK) continue;
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
}

static void test_dequant_rows_exact(void **state) {
    (void)state;
    const kv_dtype types[11] = {KV_F32, KV_F16, KV_BF16, KV_Q8_0, KV_Q4_0, KV_Q8_G,
                                KV_Q2_K, KV_Q3_K, KV_Q4_K, KV_Q5_K, KV_Q6_K};
    static float out[9 * 512];
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512; isa++) {
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
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512; isa++) {
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
    for (int isa = KV_ISA_SCALAR; isa <= KV_ISA_AVX512; isa++) {
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matvec_all),       cmocka_unit_test(test_plain_tails),
        cmocka_unit_test(test_matvec_range_invariant),
        cmocka_unit_test(test_dequant_rows_exact), cmocka_unit_test(test_dot_axpy),
        cmocka_unit_test(test_dots_wsum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
