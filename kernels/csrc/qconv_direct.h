/* qconv_direct.h -- the small-K direct int8 convolution of qconv_chunks.h, one vector width
 * per inclusion (no include guard): QCD_NAME with QCD_TARGET, QCD_W float lanes of type
 * QCD_VEC, QCD_MASK_T a partial-vector mask made by QCD_MASK(n) (n <= QCD_W lanes),
 * QCD_LOAD(mask, p) (the masked-off lanes zeroed, or read from the canvas's slack: they
 * feed only outputs never stored), QCD_STORE(p, mask, v), QCD_SET1, QCD_FMA
 * (a b + c), and QCD_ACT(v, act), the epilogue activation of the int8 GEMM of the same width.
 *
 * dst (F, oh, ow) = act(acc (s ws[f]) + b[f]), acc = the exact integer sum of the layer over
 * the canvas cv (C, CH, CW) of q - zp, QCD_W pixels of a row by QC_FB = 8 filters a step; wf
 * holds the weights as (F / 8, K, 8) floats. The taps are visited through their offsets in the
 * canvas, one flat loop, and the 8 accumulators are named locals so that they stay in
 * registers. */

__attribute__((target(QCD_TARGET))) static void QCD_NAME(const float *cv, const float *wf,
                                                         const qg_args *w, float s, float *dst,
                                                         const qc_geom *g, ptrdiff_t CH,
                                                         ptrdiff_t CW)
{
    const ptrdiff_t K = g->kh * g->kw * g->c, P = g->oh * g->ow, F = w->N;
    ptrdiff_t off[QC_DIRECT_K]; /* tap k = (ky, kx, c): v[c, ky dh, kx dw] from a window's corner */
    for (ptrdiff_t ky = 0, k = 0; ky < g->kh; ky++)
        for (ptrdiff_t kx = 0; kx < g->kw; kx++)
            for (ptrdiff_t c = 0; c < g->c; c++) off[k++] = (c * CH + ky * g->dh) * CW + kx * g->dw;
    for (ptrdiff_t f0 = 0; f0 < F; f0 += QC_FB) {
        const ptrdiff_t nf = F - f0 < QC_FB ? F - f0 : QC_FB;
        QCD_VEC m[QC_FB], b[QC_FB];
        for (ptrdiff_t j = 0; j < QC_FB; j++) { /* the GEMM epilogue's scale and bias */
            m[j] = QCD_SET1(j < nf ? s * w->ws[f0 + j] : 0.0f);
            b[j] = QCD_SET1(j < nf && w->bias ? w->bias[f0 + j] : 0.0f);
        }
        const float *wb = wf + f0 * K; /* (K, 8): this block's weights, tap by tap */
        for (ptrdiff_t oy = 0; oy < g->oh; oy++) {
            for (ptrdiff_t ox0 = 0; ox0 < g->ow; ox0 += QCD_W) {
                const QCD_MASK_T k = QCD_MASK(g->ow - ox0 < QCD_W ? g->ow - ox0 : QCD_W);
                const float *corner = cv + oy * g->sh * CW + ox0;
                QCD_VEC a0 = QCD_SET1(0.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
                        a7 = a0;
                for (ptrdiff_t t = 0; t < K; t++) {
                    /* NumPy: acc[j] += Wq[f0 + j, tap t] * v[tap t's plane, oy + ky dh, ox + kx dw] */
                    const QCD_VEC v = QCD_LOAD(k, corner + off[t]);
                    const float *wt = wb + t * QC_FB;
                    a0 = QCD_FMA(QCD_SET1(wt[0]), v, a0);
                    a1 = QCD_FMA(QCD_SET1(wt[1]), v, a1);
                    a2 = QCD_FMA(QCD_SET1(wt[2]), v, a2);
                    a3 = QCD_FMA(QCD_SET1(wt[3]), v, a3);
                    a4 = QCD_FMA(QCD_SET1(wt[4]), v, a4);
                    a5 = QCD_FMA(QCD_SET1(wt[5]), v, a5);
                    a6 = QCD_FMA(QCD_SET1(wt[6]), v, a6);
                    a7 = QCD_FMA(QCD_SET1(wt[7]), v, a7);
                }
                const QCD_VEC acc[QC_FB] = {a0, a1, a2, a3, a4, a5, a6, a7};
                for (ptrdiff_t j = 0; j < nf; j++) /* NumPy: act(acc * (s * ws) + b) */
                    QCD_STORE(dst + (f0 + j) * P + oy * g->ow + ox0, k,
                              QCD_ACT(QCD_FMA(acc[j], m[j], b[j]), w->act));
            }
        }
    }
}

#undef QCD_NAME
#undef QCD_TARGET
#undef QCD_W
#undef QCD_VEC
#undef QCD_MASK_T
#undef QCD_MASK
#undef QCD_LOAD
#undef QCD_STORE
#undef QCD_SET1
#undef QCD_FMA
#undef QCD_ACT
