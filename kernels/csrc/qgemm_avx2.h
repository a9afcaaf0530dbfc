/* qgemm_avx2.h -- the exact AVX2 int8 GEMM (no VNNI), included once by qgemm.h.
 *
 * Without VNNI the only exact wide multiply-add is vpmaddwd (s16 x s16 pairs summed in s32).
 * vpmaddubsw (u8 x s8 pairs summed in s16) does twice the work per instruction but saturates
 * when a0 w0 + a1 w1 leaves [-32768, 32767] (a = 255 and two weights of the same sign whose
 * magnitudes add up to more than 128), so it is not used. Both operands are widened to s16:
 *   a  once per block of QG_MC2 rows into aw int16 (L2-resident), interleaved by 6-row tile:
 *      aw[t, g, r, j] = a[6 t + r, 4 g + j]   (one stream of 48 bytes per 4-k step),
 *   w  on the fly: 16 packed bytes (4 columns x 4 k) -> vpmovsxbw -> one ymm,
 * and each vpmaddwd of a broadcast 4-k group of a row (vpbroadcastq) with such a ymm adds 16
 * products into acc lanes (column c, k pair 01 / 23); the pairs are folded once per tile.
 *
 * Register tile: QG_MR2 = 6 rows x 8 columns: 12 accumulators + 2 weight ymm + 1 broadcast +
 * 1 product = the 16 ymm registers. Per 4-k step: 12 vpmaddwd + 12 vpaddd (192 multiply-adds),
 * 2 vpmovsxbw loads (each reused by 6 rows), 6 broadcasts. Rows left over (M % 6 < 3) use a
 * 1 or 2 row x 16 column tile, which needs fewer registers. Loop order: blocks of QG_MC2 rows
 * (widened once, L2); in a block, for each 16-column weight block and each K block of 4 QG_KC2
 * k, the 4 KiB weight panel (L1) meets every 6-row tile; the tiles' accumulators wait in a
 * scratch between K blocks (without K blocks a 16 KiB panel for K = 1024 was evicted by the
 * A stream: 1.4x slower at M = 64 and 256).
 *
 * Cost model (Zen 3: vpmaddwd and vpmaddubsw 2 per cycle on the multiply pipes, 4 vector
 * pipes): ~32 vector uops per 192 multiply-adds, >= 6 cycles on the multipliers, ~8 on all
 * pipes. The tile this replaced (2 x 16) spent 8 vpmaddwd + 8 vpaddd + 4 vpmovsxbw + 2
 * broadcasts per 128 and streamed all of W from L3 for every 2 rows. MLAS's u8s8 kernel does
 * vpmaddubsw + vpmaddwd(ones) + vpaddd per 32 multiply-adds: the same multiplier time per
 * multiply-add, a third fewer uops, but inexact. It would be exact here only for weights
 * whose every adjacent k pair (w0, w1) has w0 w1 <= 0 or |w0| + |w1| <= 128 (e.g. weights
 * quantized to [-64, 64]); such a path, checked at packing time, is not implemented. */

#define QG_MR2 6
#ifndef QG_KC2
#define QG_KC2 64 /* 4-k groups per K block: 256 k */
#endif
#ifndef QG_MC2
#define QG_MC2 96 /* rows widened per block: 96 x 1024 x 2 bytes = 192 KiB of L2 */
#endif

/* One MR x (4 NQ) tile (NQ = 2 or 4 column quads starting at quad q0 of block nb) over the
 * 4-k groups [g0, g1) of one K block. aw: the tile's rows widened to int16,
 * aw[g, r, j] = a[m0 + r, 4 g + j] (r < QG_MR2). The accumulators come from (g0 > 0) and go
 * back to (g1 < G) sc[4 r + q0 + q]; after the last K block the epilogue writes out. */
static inline __attribute__((target("avx2,fma"), always_inline)) void
qg_tile_avx2(const qg_args *p, int64_t m0, const int MR, int64_t nb, const int q0, const int NQ,
             const int16_t *aw, int64_t g0, int64_t g1, __m256i *sc) {
    const int64_t Kp = qg_kp(p->K), G = Kp >> 2;
    const int8_t *bp = p->b + nb * 16 * Kp + 16 * q0;
    /* acc[r][q] lanes: (c0, k01) (c0, k23) (c1, k01) (c1, k23) | the same for c2, c3 */
    __m256i acc[QG_MR2][4];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int q = 0; q < NQ; q++)
            acc[r][q] = g0 ? _mm256_load_si256(sc + 4 * r + q0 + q) : _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int64_t g = g0; g < g1; g++) {
        __m256i bw[4];
#pragma GCC unroll 4
        for (int q = 0; q < NQ; q++) /* NumPy: w[c0 : c0 + 4, 4g : 4g + 4].astype(int16) */
            bw[q] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(bp + g * 64 + 16 * q)));
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            int64_t a4;
            memcpy(&a4, aw + (g * QG_MR2 + r) * 4, 8);
            const __m256i av = _mm256_set1_epi64x(a4); /* a[r, 4g : 4g + 4] in every quarter */
#pragma GCC unroll 4
            for (int q = 0; q < NQ; q++) /* vpmaddwd: a0 w0 + a1 w1 in int32, exact */
                acc[r][q] = _mm256_add_epi32(acc[r][q], _mm256_madd_epi16(av, bw[q]));
        }
    }
    if (g1 < G) { /* more K blocks to come */
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int q = 0; q < NQ; q++) _mm256_store_si256(sc + 4 * r + q0 + q, acc[r][q]);
        return;
    }
    /* spill once with constant indices (keeps acc in registers inside the loop above) */
    __m256i done[QG_MR2 * 4];
#pragma GCC unroll 24
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int q = 0; q < NQ; q++) done[r * 4 + q] = acc[r][q];
    for (int r = 0; r < MR; r++) {
        const int32_t off = qg_off(p, m0 + r);
        const float xs = p->xs[(m0 + r) * p->xs_step];
        for (int q = 0; q < NQ; q += 2) {
            /* fold k pairs: hadd -> [c0 c1 c4 c5 | c2 c3 c6 c7], then order the 64-bit pairs */
            const __m256i s = _mm256_permute4x64_epi64(
                _mm256_hadd_epi32(done[r * 4 + q], done[r * 4 + q + 1]), 0xD8);
            const int64_t n = nb * 16 + 4 * (q0 + q);
            if (n < p->N) qg_epi256(p, m0 + r, n, s, off, xs);
        }
    }
}

__attribute__((target("avx2,fma"))) static void qg_run_avx2(const qg_args *p, int64_t nb_lo,
                                                            int64_t nb_hi) {
    const int64_t K = p->K, Kp = qg_kp(K), G = Kp >> 2;
    const uint8_t flip = p->a_signed ? 0x80 : 0;
    const int64_t mc_rows = p->M < QG_MC2 ? p->M : QG_MC2;
    const int64_t tiles = (mc_rows + QG_MR2 - 1) / QG_MR2;
    int16_t *aw = (int16_t *)malloc((size_t)(tiles * QG_MR2 * Kp + 4) * sizeof(int16_t));
    /* the tiles' accumulators between K blocks: 6 x 4 ymm per tile (12 KiB for 96 rows) */
    __m256i *sc = (__m256i *)qg_amalloc((size_t)tiles * QG_MR2 * 4 * sizeof(__m256i));
    if (!aw || !sc) {
        free(aw);
        qg_afree(sc);
        return;
    }
    for (int64_t mc = 0; mc < p->M; mc += QG_MC2) {
        const int64_t mc_end = mc + QG_MC2 < p->M ? mc + QG_MC2 : p->M;
        /* NumPy: aw[t, g, r, j] = (a[mc + 6 t + r, 4 g + j] ^ flip).astype(int16), k >= K: 0 */
        const __m128i flipv = _mm_set1_epi8((char)flip);
        for (int64_t i = 0; i < mc_end - mc; i++) {
            const uint8_t *a = p->a + (mc + i) * K;
            int16_t *d = aw + (i / QG_MR2) * QG_MR2 * Kp + (i % QG_MR2) * 4;
            int64_t k = 0;
            for (; k + 16 <= K; k += 16) { /* 16 bytes -> 4 groups of 4 int16, 48 bytes apart */
                const __m256i v = _mm256_cvtepu8_epi16(
                    _mm_xor_si128(_mm_loadu_si128((const __m128i *)(a + k)), flipv));
                const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
                int16_t *o = d + (k >> 2) * QG_MR2 * 4;
                _mm_storel_epi64((__m128i *)o, lo);
                _mm_storeh_pd((double *)(o + QG_MR2 * 4), _mm_castsi128_pd(lo));
                _mm_storel_epi64((__m128i *)(o + 2 * QG_MR2 * 4), hi);
                _mm_storeh_pd((double *)(o + 3 * QG_MR2 * 4), _mm_castsi128_pd(hi));
            }
            for (; k < Kp; k++)
                d[(k >> 2) * QG_MR2 * 4 + (k & 3)] = k < K ? (int16_t)(uint8_t)(a[k] ^ flip) : 0;
        }
        /* K blocks of QG_KC2 groups: a 16-column weight panel of 16 x 4 QG_KC2 bytes (4 KiB)
         * stays in L1 while every 6-row tile of the block passes over it */
        for (int64_t nb = nb_lo; nb < nb_hi; nb++)
            for (int64_t g0 = 0; g0 < G; g0 += QG_KC2) {
                const int64_t g1 = G - g0 < QG_KC2 ? G : g0 + QG_KC2;
                for (int64_t m0 = mc; m0 < mc_end; m0 += QG_MR2) {
                    const int16_t *at = aw + (m0 - mc) * Kp; /* tile t = (m0 - mc) / 6 */
                    __m256i *st = sc + (m0 - mc) / QG_MR2 * QG_MR2 * 4;
                    switch (mc_end - m0 < QG_MR2 ? (int)(mc_end - m0) : QG_MR2) {
                    case 1: qg_tile_avx2(p, m0, 1, nb, 0, 4, at, g0, g1, st); break;
                    case 2: qg_tile_avx2(p, m0, 2, nb, 0, 4, at, g0, g1, st); break;
                    case 3:
                        qg_tile_avx2(p, m0, 3, nb, 0, 2, at, g0, g1, st);
                        qg_tile_avx2(p, m0, 3, nb, 2, 2, at, g0, g1, st);
                        break;
                    case 4:
                        qg_tile_avx2(p, m0, 4, nb, 0, 2, at, g0, g1, st);
                        qg_tile_avx2(p, m0, 4, nb, 2, 2, at, g0, g1, st);
                        break;
                    case 5:
                        qg_tile_avx2(p, m0, 5, nb, 0, 2, at, g0, g1, st);
                        qg_tile_avx2(p, m0, 5, nb, 2, 2, at, g0, g1, st);
                        break;
                    default:
                        qg_tile_avx2(p, m0, 6, nb, 0, 2, at, g0, g1, st);
                        qg_tile_avx2(p, m0, 6, nb, 2, 2, at, g0, g1, st);
                        break;
                    }
                }
            }
    }
    qg_afree(sc);
    free(aw);
}
#if QG_MR2 != 6
#error "update the switch in qg_run_avx2"
#endif
