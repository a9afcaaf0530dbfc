/* qgemm_vnni256.h -- the 256-bit VNNI driver, included twice by qgemm.h (no include guard):
 * QGV_NAME with QGV_TARGET and QGV_DPBUSD (VEX AVX-VNNI, or its EVEX twin for tests).
 * Register tile: 4 rows x 16 columns = 8 ymm accumulators (16 ymm registers without EVEX). */

#define QGV_CAT2(a, b) a##b
#define QGV_CAT(a, b) QGV_CAT2(a, b)
#define QGV_TILE QGV_CAT(QGV_NAME, _tile)

static inline __attribute__((target(QGV_TARGET), always_inline)) void
QGV_TILE(const qg_args *p, int64_t m0, const int MR, int64_t nb) {
    const int64_t K = p->K, Kp = qg_kp(K), G = K >> 2;
    const uint32_t flip = p->a_signed ? 0x80808080u : 0u;
    const int8_t *bp = p->b + nb * 16 * Kp;
    const uint8_t *ar[4];
    __m256i acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        ar[r] = p->a + (m0 + r) * K;
        acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    }
    /* acc[r, c] += sum_j a[m0 + r, 4 g + j] * w[16 nb + c, 4 g + j] */
    for (int64_t g = 0; g <= G; g++) {
        if (g == G && !(K & 3)) break;
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(bp + g * 64));
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(bp + g * 64 + 32));
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            const uint32_t a4 =
                g < G ? qg_load4(ar[r] + 4 * g) : qg_load_tail(ar[r] + 4 * g, K & 3);
            const __m256i av = _mm256_set1_epi32((int)(a4 ^ flip));
            acc[r][0] = QGV_DPBUSD(acc[r][0], av, b0);
            acc[r][1] = QGV_DPBUSD(acc[r][1], av, b1);
        }
    }
    __m256i done[8]; /* done[2 r + h] = acc[r][h] */
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        done[2 * r] = acc[r][0];
        done[2 * r + 1] = acc[r][1];
    }
    qg_epi256_tile(p, m0, MR, nb * 16, done, 2, 0);
}

__attribute__((target(QGV_TARGET))) static int QGV_NAME(const qg_args *p, int64_t nb_lo,
                                                         int64_t nb_hi) {
    /* out = epilogue(a @ w.T), blocks of 96 rows, then one 16-column block at a time */
    for (int64_t mc = 0; mc < p->M; mc += 96) {
        const int64_t mc_end = mc + 96 < p->M ? mc + 96 : p->M;
        for (int64_t nb = nb_lo; nb < nb_hi; nb++) {
            for (int64_t m0 = mc; m0 < mc_end; m0 += 4) {
                switch (mc_end - m0 < 4 ? (int)(mc_end - m0) : 4) {
                case 1: QGV_TILE(p, m0, 1, nb); break;
                case 2: QGV_TILE(p, m0, 2, nb); break;
                case 3: QGV_TILE(p, m0, 3, nb); break;
                default: QGV_TILE(p, m0, 4, nb); break;
                }
            }
        }
    }
    return 0;
}

#undef QGV_TILE
#undef QGV_CAT
#undef QGV_CAT2
#undef QGV_NAME
#undef QGV_TARGET
#undef QGV_DPBUSD
