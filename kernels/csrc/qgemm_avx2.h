/* qgemm_avx2.h -- the exact AVX2 int8 GEMM (no VNNI), included once by qgemm.h.
 *
 * Without VNNI, vpmaddubsw (u8 x s8 pairs summed in s16: 32 multiply-adds a uop) is the
 * widest multiply, but q w + q' w' saturates int16 for uint8 activations q up to 255. So the
 * activations are made signed, s = q - 128 in [-128, 127] (q ^ 0x80; int8 activations are
 * already s), and
 *     sum_k (q[k] - zp) w[n, k] = sum_k s[k] w[n, k] - (zp - 128) colsum[n].
 * vpmaddubsw gets the magnitude |s| in 0..128 as its unsigned operand and the weight, bitwise
 * negated where s < 0, as its signed one (mk = 0xFF where s < 0, else 0; ~w = -w - 1):
 *     |s| (w ^ mk) = s w                      (s >= 0)
 *                  = -s (-w - 1) = s w + s    (s < 0)
 * so  sum_k |s[k]| (w[n, k] ^ mk[k]) = sum_k s[k] w[n, k] + C,  C = sum_k min(s[k], 0),
 * one number per row, subtracted from each of its columns in the epilogue.
 * No int16 pair sum saturates, for ANY int8 weights (-128 included): where s >= 0,
 * |s| <= 127 and w in [-128, 127] give products in [-16256, 16129]; where s < 0, |s| <= 128
 * and ~w in [-128, 127] give [-16384, 16256]; a pair sums to [-32768, 32512]. vpmaddwd with
 * ones then adds the pairs in int32, whose sums are exact up to the wrap of qgemm.h (the
 * corrected result fits for K <= 65793). vpsignb (s w directly) would need w != -128 and
 * runs on the multiply pipes of Zen 3; the xor runs on any vector pipe.
 *
 * Per 32 multiply-adds (one ymm of weights: 8 columns x 4 k, one row): vpxor, vpmaddubsw,
 * vpmaddwd, vpaddd; 2 multiply-pipe uops, as the vpmaddwd of int16-widened operands spends
 * per 32 (benchmarks/q8_step_ceiling.c: 75-78 against 70-72 multiply-adds per ns on this
 * Zen 3, load 10), so the gain is in the uops around the multiplies only.
 *
 * Packed A, per block of rows, by tile of QG_MR2 rows (t), 4-k group (g) and row (r), each
 * group broadcast to a whole ymm (the tile loads it: no broadcast uop in its loop):
 *     ap[t, g, r, 0:32] = |s[QG_MR2 t + r, 4 g : 4 g + 4]| x 8,  ap[t, g, r, 32:64] = masks
 * (zero past K); corr[i] = C of row i. Register tile: QG_MR2 = 2 rows x 32 columns (4 ymm of
 * weights, read as memory operands of vpxor) = 8 accumulators. Loop order: for each 32-column
 * weight panel and each K block of QG_KC2 groups, the 8 KiB panel (L1) meets every tile of
 * the row block (QG_AB2 bytes of packed A, L2); the accumulators wait in a scratch between
 * K blocks. */

#ifndef QG_MR2
#define QG_MR2 2 /* rows per register tile */
#endif
#ifndef QG_NV2
#define QG_NV2 4 /* ymm of 8 columns per row of a tile (even: whole 16-column blocks) */
#endif
#ifndef QG_KC2
#define QG_KC2 64 /* 4-k groups per K block: 256 k */
#endif
#ifndef QG_AB2
#define QG_AB2 (256 << 10) /* bytes of packed A per row block (L2) */
#endif

/* s = a ^ flip of one row (K bytes) as ub = |s|, mb = 0xFF where s < 0 (Kp bytes each, zero
 * past K); returns C = sum min(s, 0). NumPy: s = (a ^ flip).view(np.int8); ub = np.abs(s);
 * mb = np.where(s < 0, 0xFF, 0); C = s[s < 0].sum() */
__attribute__((target("avx2,fma"))) static int32_t qg_signed_row(const uint8_t *a, int64_t K,
                                                                 uint8_t flip, uint8_t *ub,
                                                                 uint8_t *mb) {
    const __m256i flipv = _mm256_set1_epi8((char)flip), zero = _mm256_setzero_si256();
    __m256i neg = zero; /* sum of |s| where s < 0, in 4 uint64 lanes */
    int64_t k = 0, c = 0;
    for (; k + 32 <= K; k += 32) {
        const __m256i s = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + k)), flipv);
        const __m256i u = _mm256_abs_epi8(s), mk = _mm256_cmpgt_epi8(zero, s);
        _mm256_storeu_si256((__m256i *)(ub + k), u);
        _mm256_storeu_si256((__m256i *)(mb + k), mk);
        neg = _mm256_add_epi64(neg, _mm256_sad_epu8(_mm256_and_si256(u, mk), zero));
    }
    for (; k < qg_kp(K); k++) {
        const int s = k < K ? (int)(int8_t)(a[k] ^ flip) : 0;
        ub[k] = (uint8_t)(s < 0 ? -s : s);
        mb[k] = s < 0 ? 0xFF : 0;
        c += s < 0 ? s : 0;
    }
    int64_t n4[4];
    memcpy(n4, &neg, sizeof n4);
    return (int32_t)(c - (n4[0] + n4[1] + n4[2] + n4[3]));
}

/* Rows [m0, m0 + rows) of p's activations into ap, each 4-k group broadcast to a whole ymm:
 *     ap[t, g, r, 0:32] = |s[QG_MR2 t + r, 4 g : 4 g + 4]| x 8,  ap[t, g, r, 32:64] = masks
 * (the tile then loads them: no broadcast uop in its loop); corr[i] = C of row m0 + i.
 * row: 2 Kp bytes of scratch. */
__attribute__((target("avx2,fma"))) static void qg_pack_a_avx2(const qg_args *p, int64_t m0,
                                                               int64_t rows, uint8_t *ap,
                                                               int32_t *corr, uint8_t *row) {
    const int64_t K = p->K, Kp = qg_kp(K), G = Kp >> 2;
    uint8_t *ub = row, *mb = row + Kp;
    for (int64_t i = 0; i < rows; i++) {
        corr[i] = qg_signed_row(p->a + (m0 + i) * K, K, p->a_signed ? 0 : 0x80, ub, mb);
        uint8_t *d = ap + ((i / QG_MR2) * G * QG_MR2 + i % QG_MR2) * 64;
        for (int64_t g = 0; g < G; g++) { /* NumPy: ap[t, g, r] = repeat(ub[4g:4g+4], 8), ... */
            _mm256_store_si256((__m256i *)(d + g * QG_MR2 * 64),
                               _mm256_set1_epi32((int)qg_load4(ub + 4 * g)));
            _mm256_store_si256((__m256i *)(d + g * QG_MR2 * 64 + 32),
                               _mm256_set1_epi32((int)qg_load4(mb + 4 * g)));
        }
    }
}

/* One MR x 8 NV tile (rows m0.., columns from block nb on) over the 4-k groups [g0, g1) of
 * one K block. at: the tile's packed rows; corr: their C. The accumulators come from
 * (g0 > 0) and go back to (g1 < G) sc[QG_NV2 r + v]; after the last K block the epilogue
 * writes out. */
static inline __attribute__((target("avx2,fma"), always_inline)) void
qg_tile_avx2(const qg_args *p, int64_t m0, const int MR, int64_t nb, const int NV,
             const uint8_t *at, const int32_t *corr, int64_t g0, int64_t g1, __m256i *sc) {
    const int64_t Kp = qg_kp(p->K), G = Kp >> 2, bstep = 16 * Kp;
    const int8_t *bp = p->b + nb * bstep;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[QG_MR2][QG_NV2]; /* acc[r][v] lanes: columns 16 nb + 8 v .. + 8 */
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
            acc[r][v] = g0 ? _mm256_load_si256(sc + QG_NV2 * r + v) : _mm256_setzero_si256();
    for (int64_t g = g0; g < g1; g++) {
        __m256i w[QG_NV2];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
            w[v] = _mm256_loadu_si256(
                (const __m256i *)(bp + (v >> 1) * bstep + g * 64 + 32 * (v & 1)));
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            /* NumPy: acc[r] += s[r, 4g : 4g + 4] @ w[cols, 4g : 4g + 4].T (+ C's share), as
             * |s| (w ^ mk) in int16 pairs (never saturating, see the top), then int32 */
            const __m256i u = _mm256_load_si256((const __m256i *)(at + (g * QG_MR2 + r) * 64));
            const __m256i mk =
                _mm256_load_si256((const __m256i *)(at + (g * QG_MR2 + r) * 64 + 32));
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) {
                const __m256i pr = _mm256_maddubs_epi16(u, _mm256_xor_si256(w[v], mk));
                acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(pr, ones));
            }
        }
    }
    if (g1 < G) { /* more K blocks to come */
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) _mm256_store_si256(sc + QG_NV2 * r + v, acc[r][v]);
        return;
    }
    /* spill once with constant indices (keeps acc in registers inside the loop above);
     * NumPy: acc -= C */
    __m256i done[QG_MR2 * QG_NV2];
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
            done[QG_NV2 * r + v] = _mm256_sub_epi32(acc[r][v], _mm256_set1_epi32(corr[r]));
    for (int r = 0; r < MR; r++) {
        const int32_t off = qg_off(p, m0 + r) - 128; /* sum s w - (zp - 128) colsum */
        const float xs = p->xs[(m0 + r) * p->xs_step];
        for (int v = 0; v < NV; v++) {
            const int64_t n = nb * 16 + 8 * v;
            if (n < p->N) qg_epi256(p, m0 + r, n, done[QG_NV2 * r + v], off, xs);
        }
    }
}

/* cs[n] = sum_k w[n, k] for the columns of blocks [nb_lo, nb_hi), from the packed weights
 * (for a call without w_col_sums: the signed activations need them) */
__attribute__((target("avx2,fma"))) static void qg_colsums_avx2(const qg_args *p, int64_t nb_lo,
                                                                int64_t nb_hi, int32_t *cs) {
    const int64_t G = qg_kp(p->K) >> 2;
    const __m256i one8 = _mm256_set1_epi8(1), one16 = _mm256_set1_epi16(1);
    for (int64_t nb = nb_lo; nb < nb_hi; nb++) {
        const int8_t *bp = p->b + nb * 16 * 4 * G;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0;
        for (int64_t g = 0; g < G; g++) { /* 1 x w in int16 pairs, then int32: exact */
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)(bp + g * 64));
            const __m256i w1 = _mm256_loadu_si256((const __m256i *)(bp + g * 64 + 32));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_maddubs_epi16(one8, w0), one16));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_maddubs_epi16(one8, w1), one16));
        }
        int32_t b[16];
        _mm256_storeu_si256((__m256i *)b, s0);
        _mm256_storeu_si256((__m256i *)(b + 8), s1);
        for (int c = 0; c < 16 && nb * 16 + c < p->N; c++) cs[nb * 16 + c] = b[c];
    }
}

#if QG_NV2 > 2
#define QG_CASE2(R)                                                                               \
    case (R) * 16 + 2: qg_tile_avx2(&q, m0, R, nb, 2, at, corr + i, g0, g1, st); break;          \
    case (R) * 16 + QG_NV2: qg_tile_avx2(&q, m0, R, nb, QG_NV2, at, corr + i, g0, g1, st); break;
#else
#define QG_CASE2(R)                                                                               \
    case (R) * 16 + 2: qg_tile_avx2(&q, m0, R, nb, 2, at, corr + i, g0, g1, st); break;
#endif

__attribute__((target("avx2,fma"))) static void qg_run_avx2(const qg_args *p, int64_t nb_lo,
                                                            int64_t nb_hi) {
    const int64_t Kp = qg_kp(p->K), G = Kp >> 2;
    /* rows per block: their packed A (16 Kp bytes a row) within QG_AB2 */
    int64_t mc_rows = QG_AB2 / (16 * Kp) / QG_MR2 * QG_MR2;
    mc_rows = mc_rows < QG_MR2 ? QG_MR2 : mc_rows;
    mc_rows = p->M < mc_rows ? p->M : mc_rows;
    const int64_t tiles = (mc_rows + QG_MR2 - 1) / QG_MR2;
    uint8_t *ap = (uint8_t *)qg_amalloc((size_t)(tiles * QG_MR2 * 16 * Kp + 2 * Kp));
    int32_t *corr = (int32_t *)malloc((size_t)mc_rows * sizeof(int32_t));
    /* the tiles' accumulators between K blocks */
    __m256i *sc = (__m256i *)qg_amalloc((size_t)tiles * QG_MR2 * QG_NV2 * sizeof(__m256i));
    int32_t *cs = p->cs ? NULL : (int32_t *)malloc((size_t)p->N * sizeof(int32_t));
    if (!ap || !corr || !sc || (!p->cs && !cs)) {
        qg_afree(ap);
        free(corr);
        qg_afree(sc);
        free(cs);
        return;
    }
    qg_args q = *p;
    if (cs) { /* the raw GEMM (zero point 0) without column sums: -(0 - 128) colsum */
        qg_colsums_avx2(p, nb_lo, nb_hi, cs);
        q.cs = cs;
    }
    for (int64_t mc = 0; mc < q.M; mc += mc_rows) {
        const int64_t mc_end = mc + mc_rows < q.M ? mc + mc_rows : q.M;
        qg_pack_a_avx2(&q, mc, mc_end - mc, ap, corr, ap + tiles * QG_MR2 * 16 * Kp);
        /* K blocks of QG_KC2 groups: a weight panel of 8 QG_NV2 columns x 4 QG_KC2 k (8 KiB)
         * stays in L1 while every tile of the row block passes over it */
        for (int64_t nb = nb_lo; nb < nb_hi; nb += QG_NV2 / 2) {
            const int nv = nb_hi - nb < QG_NV2 / 2 ? 2 * (int)(nb_hi - nb) : QG_NV2;
            for (int64_t g0 = 0; g0 < G; g0 += QG_KC2) {
                const int64_t g1 = G - g0 < QG_KC2 ? G : g0 + QG_KC2;
                for (int64_t m0 = mc; m0 < mc_end; m0 += QG_MR2) {
                    const int64_t i = m0 - mc; /* tile i / QG_MR2 */
                    const uint8_t *at = ap + i * 16 * Kp;
                    __m256i *st = sc + i * QG_NV2;
                    const int mr = mc_end - m0 < QG_MR2 ? (int)(mc_end - m0) : QG_MR2;
                    switch (mr * 16 + nv) {
                    QG_CASE2(1)
#if QG_MR2 > 1
                    QG_CASE2(2)
#endif
#if QG_MR2 > 2
                    QG_CASE2(3)
#endif
#if QG_MR2 > 3
                    QG_CASE2(4)
#endif
                    default: break;
                    }
                }
            }
        }
    }
    free(cs);
    qg_afree(sc);
    free(corr);
    qg_afree(ap);
}
#if QG_MR2 > 4 || QG_NV2 > 8 || QG_NV2 % 2
#error "update the switch in qg_run_avx2"
#endif
