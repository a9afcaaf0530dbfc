/* qgemm_avx512.h -- the AVX-512 VNNI int8 GEMM (vpdpbusd zmm, 6 x 64 register tile),
 * included once by qgemm.h inside its LA_X86 section (qg_args, qg_kp, qg_off, qg_load4 and
 * qg_load_tail come from there). */

/* ============================================================== AVX-512 VNNI */
#define QG_T512 "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"
#ifndef QG_MR512
#define QG_MR512 6 /* rows per register tile */
#endif
#ifndef QG_NV512
#define QG_NV512 4 /* 16-column blocks per register tile: 6 x 4 = 24 zmm accumulators */
#endif
#ifndef QG_MC512
#define QG_MC512 96 /* rows per L2 block of A */
#endif

static inline __attribute__((target(QG_T512), always_inline)) void
qg_epi512(const qg_args *p, int64_t m, int64_t n, __m512i acc, int32_t off, float xs) {
    const int64_t rem = p->N - n;
    const __mmask16 k = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
    /* acc -= zp[m] * colsum[n : n + 16] */
    if (p->cs && off)
        acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(off),
                                                       _mm512_maskz_loadu_epi32(k, p->cs + n)));
    if (p->outi) {
        _mm512_mask_storeu_epi32(p->outi + m * p->N + n, k, acc);
        return;
    }
    /* out[m, n : n + 16] = act(acc * (xs * ws) + bias) */
    __m512 s = _mm512_mul_ps(_mm512_set1_ps(xs), _mm512_maskz_loadu_ps(k, p->ws + n));
    __m512 b = p->bias ? _mm512_maskz_loadu_ps(k, p->bias + n) : _mm512_setzero_ps();
    __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), s, b);
    _mm512_mask_storeu_ps(p->outf + m * p->N + n, k, la_act512(y, p->act));
}

/* qg_epi256_tile's twin: rows m0 .. m0 + rows - 1, nv vectors of 16 columns each from column
 * n (acc[r nv + v]; one starting at or past N is not stored), out of line (see there) */
__attribute__((target(QG_T512), noinline)) static void
qg_epi512_tile(const qg_args *p, int64_t m0, int rows, int64_t n, const __m512i *acc, int nv) {
    for (int r = 0; r < rows; r++) {
        const int32_t off = qg_off(p, m0 + r);
        const float xs = p->xs[(m0 + r) * p->xs_step];
        for (int v = 0; v < nv && n + 16 * v < p->N; v++)
            qg_epi512(p, m0 + r, n + 16 * v, acc[r * nv + v], off, xs);
    }
}

/* One MR x (16 NV) register tile over all of K; MR and NV are constants after inlining. */
static inline __attribute__((target(QG_T512), always_inline)) void
qg_tile512(const qg_args *p, int64_t m0, const int MR, int64_t nb0, const int NV) {
    const int64_t K = p->K, Kp = qg_kp(K), G = K >> 2, bstep = 16 * Kp;
    const uint32_t flip = p->a_signed ? 0x80808080u : 0u;
    const uint8_t *ar[QG_MR512];
    const int8_t *bp = p->b + nb0 * bstep;
    __m512i acc[QG_MR512][QG_NV512];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        ar[r] = p->a + (m0 + r) * K;
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_si512();
    }
    /* acc[r, 16 v + c] += sum_j a[m0 + r, 4 g + j] * w[16 (nb0 + v) + c, 4 g + j]
     * (g == G is the partial last group when K % 4 != 0; the padded weights are zero) */
    const int64_t Gend = G + ((K & 3) != 0);
    for (int64_t g = 0; g < Gend; g++) {
        __m512i bv[QG_NV512];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_si512(bp + v * bstep + g * 64);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const uint32_t a4 =
                g < G ? qg_load4(ar[r] + 4 * g) : qg_load_tail(ar[r] + 4 * g, K & 3);
            const __m512i av = _mm512_set1_epi32((int)(a4 ^ flip));
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, bv[v]);
        }
    }
    /* spill once with constant indices (keeps acc in registers inside the loop above) */
    __m512i done[QG_MR512 * QG_NV512];
#pragma GCC unroll 32
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) done[r * NV + v] = acc[r][v];
    qg_epi512_tile(p, m0, MR, nb0 * 16, done, NV);
}

#define QG_C512(R, V)                                                                              \
    case (R) * 16 + (V): qg_tile512(p, m0, R, nb0, V); break;
#define QG_C512_R(R) QG_C512(R, 1) QG_C512(R, 2) QG_C512(R, 3) QG_C512(R, 4)

__attribute__((target(QG_T512))) static int qg_run_avx512vnni(const qg_args *p, int64_t nb_lo,
                                                               int64_t nb_hi) {
    /* out = epilogue(a @ w.T): L2 blocks of QG_MC512 rows, then 64-column weight panels */
    for (int64_t mc = 0; mc < p->M; mc += QG_MC512) {
        const int64_t mc_end = mc + QG_MC512 < p->M ? mc + QG_MC512 : p->M;
        for (int64_t nb0 = nb_lo; nb0 < nb_hi; nb0 += QG_NV512) {
            const int nv = (int)(nb_hi - nb0 < QG_NV512 ? nb_hi - nb0 : QG_NV512);
            for (int64_t m0 = mc; m0 < mc_end; m0 += QG_MR512) {
                const int mr = (int)(mc_end - m0 < QG_MR512 ? mc_end - m0 : QG_MR512);
                switch (mr * 16 + nv) {
                    QG_C512_R(1)
                    QG_C512_R(2)
                    QG_C512_R(3)
                    QG_C512_R(4)
                    QG_C512_R(5)
                    QG_C512_R(6)
                default: break;
                }
            }
        }
    }
    return 0;
}
#if QG_MR512 != 6 || QG_NV512 != 4
#error "update the QG_C512 switch in qg_run_avx512vnni"
#endif
