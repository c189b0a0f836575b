/* kernels_avx512_q8.h - the AVX-512 integer matrix-vector kernels,
 * included twice by kernels_avx512.c: Q8_SUFFIX bw with AVX-512BW's
 * vpmaddwd + vpaddd as Q8_DOT16, and Q8_SUFFIX vnni with VNNI's vpdpwssd
 * (Q8_TARGET then names the extra ISA). Both form the same int32 sums.
 * Q8_0 and Q4_0 (32-value blocks) take the AVX2 kernels: two blocks per
 * 512-bit register measured slower here than one per 256-bit register
 * (the scales of two blocks cost more shuffles than the products save).
 *
 * Every product is vpmaddubsw (unsigned weight bytes times signed
 * activation bytes, adjacent pairs summed to int16) and then Q8_DOT16
 * (int16 pairs times int16 scales, summed into int32 lanes). No int16 sum
 * saturates: weights are at most 63 (Q6_K, stored + 32) or 128 (|Q8_0|)
 * and activations at most 127 in magnitude, so a pair is at most 32512.
 * A block's int32 lanes are converted to fp32 and multiplied by the
 * block's scale into per-row fp32 lanes, reduced once at the end of a row.
 * So a row's sum is formed the same way wherever it lies in [r0, r1). */

#define Q8_CAT2(a, b) a##_##b
#define Q8_CAT(a, b) Q8_CAT2(a, b)
#define Q8N(name) Q8_CAT(name, Q8_SUFFIX)
#define Q8_FN KV_INLINE Q8_TARGET

/* vpshufb control picking int16 word w0 in 128-bit lanes 0-1 and w1 in 2-3. */
Q8_FN __m512i Q8N(pick2)(int w0, int w1) {
    const short c0 = (short)((2 * w0 + 1) << 8 | 2 * w0), c1 = (short)((2 * w1 + 1) << 8 | 2 * w1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(c0)), _mm256_set1_epi16(c1), 1);
}

/* vpshufb control picking int16 word w + L in 128-bit lane L. */
Q8_FN __m512i Q8N(pick4)(int w) {
    const __m128i c0 = _mm_set1_epi16((short)((2 * w + 1) << 8 | 2 * w)), step = _mm_set1_epi16(0x0202);
    const __m128i c1 = _mm_add_epi16(c0, step), c2 = _mm_add_epi16(c1, step), c3 = _mm_add_epi16(c2, step);
    const __m512i lo = _mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(c0), c1, 1));
    return _mm512_inserti64x4(lo, _mm256_inserti128_si256(_mm256_castsi128_si256(c2), c3, 1), 1);
}

/* A block's sixteen int32 lanes (the low half one run of 32 values, the
 * high half the next) folded into eight, exactly: the lanes of llama.cpp's
 * AVX2 dot, whose fp32 arithmetic the row's sum then repeats bit for bit
 * (mins in four lanes, kernels_avx2.c's kq_mins), so that int8 logits stay
 * on llama.cpp's side of every rounding boundary. */
Q8_FN __m256i Q8N(fold)(__m512i v) { return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)); }

/* The eight scale lanes, then the four min lanes, then their sum. */
Q8_FN float Q8N(row_sum)(__m256 acc, __m128 macc) {
    const __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    const __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
    const __m128 m2 = _mm_add_ps(macc, _mm_movehl_ps(macc, macc));
    return _mm_cvtss_f32(_mm_add_ss(a2, _mm_movehdup_ps(a2))) + _mm_cvtss_f32(_mm_add_ss(m2, _mm_movehdup_ps(m2)));
}

/* One Q4_K / Q5_K super-block: sum over its eight runs of 32 of scale *
 * (quants . activations) into *acc (scaled by d * dx), and sum of min *
 * (activation sums) into *macc (scaled by dmin * dx). */
Q8_FN void Q8N(q45k_block)(const kv_dtype t, const uint8_t *blk, const int8_t *x, const int16_t *xs, float dx,
                           __m256 *acc, __m128 *macc) {
    uint32_t sc[4], mn[4];
    uint16_t dm[2];
    kq_scale_ints(t, blk, sc, mn, dm);
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)mn[1], (int)mn[0]));
    const __m128i s32 = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)xs), _mm_loadu_si128((const __m128i *)(xs + 8)));
    *macc = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_madd_epi16(m8, s32)), _mm_set1_ps(-dx * _cvtsh_ss(dm[1])), *macc);
    const __m512i scales = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)sc[1], (int)sc[0])));
    const uint8_t *qs = blk + (t == KV_Q4_K ? 16 : 48);
    const __m512i m15 = _mm512_set1_epi8(0x0f);
    const __m512i qh = t == KV_Q5_K ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 16)))
                                    : _mm512_setzero_si512();
    __m512i sum = _mm512_setzero_si512();
    for (int h = 0; h < 4; h++) { /* values 64h..64h+31: low nibbles of qs[32h..], then the high ones */
        __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * h)));
        v = _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xffff0000u, v, 4), m15);
        if (t == KV_Q5_K) { /* fifth bit: qh[l] bit 2h (low nibbles) or 2h+1 (high) */
            const __m512i bit = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi8((char)(1 << 2 * h))),
                                                   _mm256_set1_epi8((char)(1 << (2 * h + 1))), 1);
            v = _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(qh, bit), v, _mm512_set1_epi8(16));
        }
        const __m512i p = _mm512_maddubs_epi16(v, _mm512_loadu_si512(x + 64 * h));
        sum = Q8_DOT16(sum, p, _mm512_shuffle_epi8(scales, Q8N(pick2)(2 * h, 2 * h + 1)));
    }
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Q8N(fold)(sum)), _mm256_set1_ps(dx * _cvtsh_ss(dm[0])), *acc);
}

/* One Q6_K super-block, its quants taken as stored (q + 32, 0..63): the
 * 32 * sum of scale * activation sums is subtracted in int32. */
Q8_FN void Q8N(q6k_block)(const uint8_t *blk, const int8_t *x, const int16_t *xs, float dx, __m256 *acc) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
    const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)xs)), 5);
    __m512i sum = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(off));
    const __m512i m15 = _mm512_set1_epi8(0x0f), m48 = _mm512_set1_epi8(0x30);
    const __m512i sh_even = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i sh_odd = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    for (int c = 0; c < 2; c++) { /* values 128c..128c+127 */
        const __m512i ql = _mm512_loadu_si512(blk + 64 * c);
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * c)));
        const __m512i scales = _mm512_broadcast_i32x4(c ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16));
        for (int j = 0; j < 2; j++) { /* quarter 2c+j: low (j=0) or high nibbles of ql, 2-bit fields 2j, 2j+1 of qh */
            const __m512i lo = _mm512_and_si512(j ? _mm512_srli_epi16(ql, 4) : ql, m15);
            const __m512i hi = j ? _mm512_srlv_epi16(qh, sh_odd) : _mm512_sllv_epi16(qh, sh_even);
            const __m512i v = _mm512_or_si512(lo, _mm512_and_si512(hi, m48));
            const __m512i p = _mm512_maddubs_epi16(v, _mm512_loadu_si512(x + 128 * c + 64 * j));
            sum = Q8_DOT16(sum, p, _mm512_shuffle_epi8(scales, Q8N(pick4)(4 * j)));
        }
    }
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Q8N(fold)(sum)), _mm256_set1_ps(dx * blk_scale(blk + 208)), *acc);
}

/* One Q4_K / Q5_K / Q6_K super-block into *acc (and Q4_K/Q5_K's mins into *macc). */
Q8_FN void Q8N(kq_block)(const kv_dtype t, const uint8_t *blk, const int8_t *x, const int16_t *xs, float dx,
                         __m256 *acc, __m128 *macc) {
    if (t == KV_Q6_K) Q8N(q6k_block)(blk, x, xs, dx, acc);
    else Q8N(q45k_block)(t, blk, x, xs, dx, acc, macc);
}

/* Rows r + k*part + i (k < K, i < cnt) of a Q4_K / Q5_K / Q6_K weight. */
Q8_FN void Q8N(kq_rows)(const kv_dtype t, const uint8_t *base, size_t rb, const kv_q8_act *a, float *y, int64_t r,
                        int64_t part, int64_t cnt, const int K) {
    const size_t bb = kv_dtype_block_bytes(t);
    const int64_t nb = a->n / KV_QK_K;
    for (int64_t i = 0; i < cnt; i++) {
        const uint8_t *p[KV_Q8_STREAMS];
        __m256 acc[KV_Q8_STREAMS];
        __m128 macc[KV_Q8_STREAMS];
        for (int k = 0; k < K; k++) {
            p[k] = base + (size_t)(r + k * part + i) * rb;
            acc[k] = _mm256_setzero_ps();
            macc[k] = _mm_setzero_ps();
        }
        for (int64_t b = 0; b < nb; b++)
            for (int k = 0; k < K; k++)
                Q8N(kq_block)(t, p[k] + (size_t)b * bb, a->q + b * KV_QK_K, a->s16 + 16 * b, a->d[b], &acc[k], &macc[k]);
        for (int k = 0; k < K; k++) y[r + k * part + i] = Q8N(row_sum)(acc[k], macc[k]);
    }
}

/* One row against T tokens (a[0..T)), each token's sums formed as
 * kq_rows forms a row's, so each output is decode's bit for bit; with T
 * constant the compiler decodes each block once for all the tokens. */
Q8_FN void Q8N(kq_row_tokens)(const kv_dtype t, const uint8_t *row, const kv_q8_act *a, const int T, float *y,
                              int64_t ldy) {
    const size_t bb = kv_dtype_block_bytes(t);
    const int64_t nb = a[0].n / KV_QK_K;
    __m256 acc[4];
    __m128 macc[4];
    for (int k = 0; k < T; k++) {
        acc[k] = _mm256_setzero_ps();
        macc[k] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * bb;
        for (int k = 0; k < T; k++)
            Q8N(kq_block)(t, blk, a[k].q + b * KV_QK_K, a[k].s16 + 16 * b, a[k].d[b], &acc[k], &macc[k]);
    }
    for (int k = 0; k < T; k++) y[k * ldy] = Q8N(row_sum)(acc[k], macc[k]);
}

static Q8_TARGET int Q8N(avx512_matmul_q8)(const kv_tensor *W, const kv_q8_act *a, int n, float *Y, int64_t ldy,
                                           int64_t r0, int64_t r1) {
    const kv_dtype t = W->type;
    if (t != KV_Q4_K && t != KV_Q5_K && t != KV_Q6_K) return kv_avx2_matmul_q8(W, a, n, Y, ldy, r0, r1);
    const uint8_t *base = (const uint8_t *)W->data;
    const size_t rb = kv_row_bytes(W);
    int t0 = 0; /* tokens four at a time, the rest one by one; the type a constant in each loop */
#define Q8_ROWS(TY, T)                                                                                   \
    for (int64_t r = r0; r < r1; r++) Q8N(kq_row_tokens)(TY, base + (size_t)r * rb, a + t0, T, Y + (size_t)t0 * ldy + r, ldy)
#define Q8_ALL(TY)                                                                                       \
    do {                                                                                                 \
        for (; t0 + 4 <= n; t0 += 4) Q8_ROWS(TY, 4);                                                     \
        for (; t0 < n; t0++) Q8_ROWS(TY, 1);                                                             \
    } while (0)
    if (t == KV_Q4_K) Q8_ALL(KV_Q4_K);
    else if (t == KV_Q5_K) Q8_ALL(KV_Q5_K);
    else Q8_ALL(KV_Q6_K);
#undef Q8_ALL
#undef Q8_ROWS
    return 0;
}

/* The row range in KV_Q8_STREAMS contiguous parts, walked together, as the
 * float kernels walk it; each part's rows read in order. */
#define Q8_SPLIT(CALL)                                                                                   \
    do {                                                                                                 \
        const int64_t part = (r1 - r0) / KV_Q8_STREAMS, rest = r0 + part * KV_Q8_STREAMS;                \
        if (part > 0) CALL(r0, part, part, KV_Q8_STREAMS);                                               \
        CALL(rest, 0, r1 - rest, 1);                                                                     \
    } while (0)

static Q8_TARGET int Q8N(avx512_matvec_q8)(const kv_tensor *W, const kv_q8_act *a, float *y, int64_t r0, int64_t r1) {
    const uint8_t *base = (const uint8_t *)W->data;
    const size_t rb = kv_row_bytes(W);
#define Q8_Q4K(r, part, cnt, K) Q8N(kq_rows)(KV_Q4_K, base, rb, a, y, r, part, cnt, K)
#define Q8_Q5K(r, part, cnt, K) Q8N(kq_rows)(KV_Q5_K, base, rb, a, y, r, part, cnt, K)
#define Q8_Q6K(r, part, cnt, K) Q8N(kq_rows)(KV_Q6_K, base, rb, a, y, r, part, cnt, K)
    switch (W->type) {
    case KV_Q8_0:
    case KV_Q4_0:
    case KV_Q2_K:
    case KV_Q3_K: return kv_avx2_matvec_q8(W, a, y, r0, r1); /* see kernels_avx2.c */
    case KV_Q4_K: Q8_SPLIT(Q8_Q4K); return 0;
    case KV_Q5_K: Q8_SPLIT(Q8_Q5K); return 0;
    case KV_Q6_K: Q8_SPLIT(Q8_Q6K); return 0;
    default: return -1;
    }
#undef Q8_Q4K
#undef Q8_Q5K
#undef Q8_Q6K
}

#undef Q8_SPLIT
#undef Q8_FN
#undef Q8N
#undef Q8_CAT
#undef Q8_CAT2
