/* recurrent_q8.h: an int8 recurrent layer's whole forward for a range of batch rows in one
 * call, for the inference runtime (lepton_nn/runtime/steps.py, RecurrentStep): the int8
 * analogue of recurrent_rows.h. Its spec and NumPy twin is recurrent_q8_forward in
 * lepton_nn/backend/recurrent_q8.py, which also packs the weights (pack_recurrent_q8):
 *
 *   wq int16 (NB, KX + KH, G 16): unit block j, pair p, gate g, lane l, e in {0, 1}: row
 *   2p + e, column g U + 8j + l of K = [q_ih^T (F rows, padded to 2 KX); q_hh^T (U rows,
 *   padded to 2 KH)]; wf float32 (NB, 4, G 8): s_ih, s_hh, b, b_hh for those columns.
 *
 *   for s in 0 .. T-1 (T-1 .. 0 when reverse), p, q = the state slots before / after s:
 *       for each row i in r0 .. r1-1 (into the scratch row d_i, pairs of int16):
 *           d_i = [xq[s, i] - xzp | quantize(h[p, i]) - hzp_i]   (h per row: lo = min(0,
 *               min h), hi = max(0, max h), hs = (hi - lo) / 255 (1 when 0), hzp =
 *               clip(rint(-lo / hs), 0, 255), hq = clip(rint(h (1 / hs)) + hzp, 0, 255):
 *               qg_quantize_u8 of qgemm.h, float32 op for op)
 *       for each unit block j, each row i:
 *           xz[g] = fma(float(sum_k d_i[k] W_ih[k, g]), xs_i s_ih[g], b[g])   exact int32 sums
 *           hz[g] = float(sum_k d_i[F' + k] W_hh[k, g]) (hs_i s_hh[g])          (vpmaddwd)
 *           the cell's gates on xz + hz (recurrent_simd.h's step kernels, op for op),
 *           written straight to h[q, i, 8j:8j+8] (and c[q])
 *
 * which is what the per-step int8 path computes (quantize_rows, qlinear's AVX2 / AVX-512
 * epilogue, the AVX2 step kernel): the same bits. Rows are independent through the whole
 * sequence, so threads split the batch into row ranges with no barrier, and any split gives
 * the same bits. The widened weights (16 bits) are summed in registers 8 columns of G gates
 * and R rows at a time (LSTM 2: at 3 gcc 12 spills accumulators; GRU 3; SimpleRNN 4); the
 * sums of (q - zp) in -255..255 times int8 weights are exact in int32 for K <= 65793 (as
 * qgemm.h's). Speed: measured on Zen 3 (AVX2, no VNNI) this kernel runs at about the float
 * one's speed at 64 units (1.2x at 256): a vpmaddwd and a vpaddd per 16 products cost what
 * two FMAs do (vpmaddwd appears to issue on one pipe, FMA on two; not verified: no
 * counters here). Its gain is over the per-step int8 path (a qlinear call and a step kernel
 * call per step, x W_ih at ~1.4 ns an output at K = 8). Cells: 0 LSTM (G = 4), 1 GRU
 * (G = 3, reset after the product, a = hz + b_hh), 2 SimpleRNN (G = 1). AVX2 + FMA only
 * (lnn_rec_q8_available): elsewhere the backend runs the twin.
 * xq: (T, B, F) uint8; xs, xzp: per row (T B) or one pair (xstep 0); h: (H, B, U) float32;
 * c: (2, B, U) or NULL; mask: (T, B) or NULL (rows whose mask is 0 keep their state).
 * d: scratch int16 (r1 - r0, 2 (KX + KH)); sc: scratch float (2 (r1 - r0)).
 */
#ifndef LNN_RECURRENT_Q8_H
#define LNN_RECURRENT_Q8_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "recurrent_simd.h"

#if LNN_RR_AVX2
/* d = quantize(x) - zp as int16 (n floats; d's pad to an even count is 0); returns the scale.
 * qg_minmax256 then qg_quant256 of qgemm.h, the same float32 operations in the same order.
 * A NaN anywhere in x: the scale is NaN (the twin's lo = x.min() is NaN, and so its scale)
 * and d is 0, so the state's products hz = sum * (scale s_hh) are NaN, as the twin's are;
 * vminps / vmaxps would otherwise drop the NaN and turn a NaN state into a finite one. */
static inline LNN_RR_TI float lnn_q8_quant_row(const float *x, ptrdiff_t n, int16_t *d)
{
    __m256 lv = _mm256_setzero_ps(), hv = _mm256_setzero_ps(), nanv = _mm256_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) { /* lo = min(0, min x), hi = max(0, max x) */
        const __m256 v = _mm256_loadu_ps(x + i);
        lv = _mm256_min_ps(lv, v);
        hv = _mm256_max_ps(hv, v);
        nanv = _mm256_or_ps(nanv, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); /* np.isnan(x).any() */
    }
    float lb[8], hb[8], lo = 0.0f, hi = 0.0f;
    int nan = _mm256_movemask_ps(nanv);
    _mm256_storeu_ps(lb, lv);
    _mm256_storeu_ps(hb, hv);
    for (ptrdiff_t k = i; k < n; k++) {
        lo = x[k] < lo ? x[k] : lo;
        hi = x[k] > hi ? x[k] : hi;
        nan |= x[k] != x[k];
    }
    if (nan) {
        memset(d, 0, (size_t)(n + n % 2) * sizeof(int16_t));
        return NAN;
    }
    for (int j = 0; j < 8; j++) {
        lo = lb[j] < lo ? lb[j] : lo;
        hi = hb[j] > hi ? hb[j] : hi;
    }
    float sc = (hi - lo) / 255.0f;
    if (sc == 0.0f) sc = 1.0f;
    float zf = nearbyintf(-lo / sc);
    zf = zf < 0.0f ? 0.0f : (zf > 255.0f ? 255.0f : zf);
    const int32_t zp = (int32_t)zf;
    /* q = clip(rint(x * (1 / sc)) + zp, 0, 255) (NaN -> 0); d = q - zp */
    const __m256 vi = _mm256_set1_ps(1.0f / sc), z = _mm256_set1_ps((float)zp);
    const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
    const __m256i zpv = _mm256_set1_epi32(zp);
    for (i = 0; i < n; i += 8) {
        const __m256i lanes = lnn_rr_lanes(n - i);
        const __m256 v = n - i >= 8 ? _mm256_loadu_ps(x + i) : _mm256_maskload_ps(x + i, lanes);
        __m256 f = _mm256_round_ps(_mm256_mul_ps(v, vi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        f = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(f, z), zero), top);
        const __m256i q = _mm256_sub_epi32(_mm256_cvtps_epi32(f), zpv);
        int32_t qb[8];
        _mm256_storeu_si256((__m256i *)qb, q);
        const ptrdiff_t m = n - i < 8 ? n - i : 8;
        for (ptrdiff_t k = 0; k < m; k++) d[i + k] = (int16_t)qb[k];
    }
    if (n % 2) d[n] = 0;
    return sc;
}

/* the two int16 of pair k of a scratch row, as one int32 (for vpbroadcastd) */
static inline LNN_RR_TI __m256i lnn_q8_pair(const int16_t *d, ptrdiff_t k)
{
    int32_t v;
    memcpy(&v, d + 2 * k, 4);
    return _mm256_set1_epi32(v);
}

/* R rows (i0 .. i0+R-1 of the range, their scratch rows d) of unit block `blk` at one step:
 * the int32 sums of the h pairs in registers, then (gate by gate, so that few registers
 * are live) those of the x pairs, the float xz and hz, then the cell's states. lanes < 8
 * only in the last block (U not a multiple of 8): masked loads and stores. */
static inline LNN_RR_TI void lnn_q8_tile(const int cell, const int R, const int16_t *wq,
                                         const float *wf, ptrdiff_t kx, ptrdiff_t kp,
                                         const int16_t *d, const float *sc, ptrdiff_t nr,
                                         ptrdiff_t u, const float *hp, float *hq, const float *cp,
                                         float *cq, const float *ms, ptrdiff_t i0, ptrdiff_t ir,
                                         ptrdiff_t blk, __m256i lanes, int partial)
{
    const int G = cell == 0 ? 4 : (cell == 1 ? 3 : 1), W = G * 2 * LNN_RV;
    __m256i acc[4][4];
    __m256 z[4][4], xn[4]; /* z: the gates' sums (GRU's n: a_n, and xz_n in xn) */
    const int16_t *dr = d + 2 * ir * kp; /* row ir of the range's scratch */
    LNN_RR_UNROLL
    for (int r = 0; r < R; r++)
        LNN_RR_UNROLL
        for (int g = 0; g < G; g++) acc[r][g] = _mm256_setzero_si256();
    const int16_t *w = wq + kx * W;
    for (ptrdiff_t k = kx; k < kp; k++, w += W) { /* sum (hq - hzp) q_hh over pairs of rows */
        __m256i wv[4];
        LNN_RR_UNROLL
        for (int g = 0; g < G; g++) wv[g] = _mm256_loadu_si256((const __m256i *)(w + g * 16));
        LNN_RR_UNROLL
        for (int r = 0; r < R; r++) {
            const __m256i a = lnn_q8_pair(dr + 2 * r * kp, k);
            LNN_RR_UNROLL
            for (int g = 0; g < G; g++)
                acc[r][g] = _mm256_add_epi32(acc[r][g], _mm256_madd_epi16(a, wv[g]));
        }
    }
    LNN_RR_UNROLL
    for (int r = 0; r < R; r++) { /* hz = acc (hs s_hh) (qlinear's epilogue, no bias) */
        const __m256 hs = _mm256_set1_ps(sc[nr + ir + r]);
        LNN_RR_UNROLL
        for (int g = 0; g < G; g++) {
            const __m256 s = _mm256_mul_ps(hs, _mm256_loadu_ps(wf + (G + g) * LNN_RV));
            z[r][g] = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][g]), s);
            if (cell == 1) /* GRU: a = hz + b_hh */
                z[r][g] = _mm256_add_ps(z[r][g], _mm256_loadu_ps(wf + (3 * G + g) * LNN_RV));
        }
    }
    LNN_RR_UNROLL
    for (int g = 0; g < G; g++) { /* xz = fma(sum (x - xzp) q_ih, xs s_ih, b); z = xz + hz */
        __m256i ax[4];
        LNN_RR_UNROLL
        for (int r = 0; r < R; r++) ax[r] = _mm256_setzero_si256();
        for (ptrdiff_t k = 0; k < kx; k++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(wq + k * W + g * 16));
            LNN_RR_UNROLL
            for (int r = 0; r < R; r++)
                ax[r] = _mm256_add_epi32(ax[r], _mm256_madd_epi16(lnn_q8_pair(dr + 2 * r * kp, k), wv));
        }
        const __m256 sih = _mm256_loadu_ps(wf + g * LNN_RV), b = _mm256_loadu_ps(wf + (2 * G + g) * LNN_RV);
        LNN_RR_UNROLL
        for (int r = 0; r < R; r++) {
            const __m256 s = _mm256_mul_ps(_mm256_set1_ps(sc[ir + r]), sih);
            const __m256 xz = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ax[r]), s, b);
            if (cell == 1 && g == 2) xn[r] = xz; /* GRU's n: r a_n added first */
            else z[r][g] = _mm256_add_ps(xz, z[r][g]);
        }
    }
    const ptrdiff_t j0 = blk * LNN_RV;
    LNN_RR_UNROLL
    for (int r = 0; r < R; r++) {
        const ptrdiff_t o = (i0 + r) * u + j0;
        const int keep = ms != NULL && !(ms[i0 + r] > 0); /* mask 0: the state stays */
        __m256 hv;
        const __m256 hold = partial ? _mm256_maskload_ps(hp + o, lanes) : _mm256_loadu_ps(hp + o);
        if (cell == 0) { /* lnn_lstm_fwd_avx2: c = f c' + i g;  h = o tanh(c) */
            const __m256 cpv = partial ? _mm256_maskload_ps(cp + o, lanes) : _mm256_loadu_ps(cp + o);
            const __m256 iv = lnn_rr_sigmoid(z[r][0]), fv = lnn_rr_sigmoid(z[r][1]);
            const __m256 gv = lnn_rr_tanh(z[r][2]), ov = lnn_rr_sigmoid(z[r][3]);
            __m256 cv = _mm256_fmadd_ps(fv, cpv, _mm256_mul_ps(iv, gv));
            hv = _mm256_mul_ps(ov, lnn_rr_tanh(cv));
            if (keep) cv = cpv;
            if (partial) _mm256_maskstore_ps(cq + o, lanes, cv);
            else _mm256_storeu_ps(cq + o, cv);
        } else if (cell == 1) { /* lnn_gru_fwd_avx2: n = tanh(xz_n + r a_n) */
            const __m256 zv = lnn_rr_sigmoid(z[r][0]), rv = lnn_rr_sigmoid(z[r][1]);
            const __m256 nv = lnn_rr_tanh(_mm256_fmadd_ps(rv, z[r][2], xn[r]));
            hv = _mm256_fmadd_ps(zv, _mm256_sub_ps(hold, nv), nv); /* (1 - z) n + z h' */
        } else { /* lnn_rnn_fwd_avx2: h = tanh(xz + hz) */
            hv = lnn_rr_tanh(z[r][0]);
        }
        if (keep) hv = hold;
        if (partial) _mm256_maskstore_ps(hq + o, lanes, hv);
        else _mm256_storeu_ps(hq + o, hv);
    }
}

/* One cell's steps for rows r0 .. r1-1 (see the top of this file). */
static inline LNN_RR_TI void lnn_q8_run(const int cell, const int R, const uint8_t *xq,
                                        const float *xs, const int32_t *xzp, ptrdiff_t xstep,
                                        const int16_t *wq, const float *wf, float *h, float *c,
                                        const float *mask, ptrdiff_t b, ptrdiff_t f, ptrdiff_t u,
                                        ptrdiff_t t, ptrdiff_t hn, ptrdiff_t r0, ptrdiff_t r1,
                                        int reverse, int16_t *d, float *sc)
{
    const int G = cell == 0 ? 4 : (cell == 1 ? 3 : 1);
    const ptrdiff_t nb = (u + LNN_RV - 1) / LNN_RV, bu = b * u, rr = reverse ? 1 : 0;
    const ptrdiff_t kx = (f + 1) / 2, kp = kx + (u + 1) / 2, nr = r1 - r0;
    const ptrdiff_t rest = u - (nb - 1) * LNN_RV;
    const __m256i lanes = lnn_rr_lanes(rest);
    for (ptrdiff_t i = 0; i < t; i++) {
        const ptrdiff_t s = reverse ? t - 1 - i : i, p = s + rr, q = s + 1 - rr;
        const float *hp = h + (p % hn) * bu, *cp = c ? c + (p % 2) * bu : NULL;
        float *hq = h + (q % hn) * bu, *cq = c ? c + (q % 2) * bu : NULL;
        const float *ms = mask ? mask + s * b : NULL;
        for (ptrdiff_t ir = 0; ir < nr; ir++) { /* the rows' int16 pairs and scales */
            int16_t *dr = d + 2 * ir * kp;
            const ptrdiff_t row = s * b + r0 + ir;
            const uint8_t *xr = xq + row * f;
            const int32_t zx = xzp[row * xstep];
            for (ptrdiff_t k = 0; k < f; k++) dr[k] = (int16_t)((int32_t)xr[k] - zx);
            if (f % 2) dr[f] = 0;
            sc[ir] = xs[row * xstep];
            sc[nr + ir] = lnn_q8_quant_row(hp + (r0 + ir) * u, u, dr + 2 * kx);
        }
        for (ptrdiff_t blk = 0; blk < nb; blk++) {
            const int16_t *wb = wq + blk * kp * G * 2 * LNN_RV;
            const float *fb = wf + blk * 4 * G * LNN_RV;
            const int partial = blk == nb - 1 && rest < LNN_RV;
            ptrdiff_t ir = 0;
            for (; ir + R <= nr; ir += R)
                lnn_q8_tile(cell, R, wb, fb, kx, kp, d, sc, nr, u, hp, hq, cp, cq, ms, r0 + ir,
                            ir, blk, lanes, partial);
            for (; ir < nr; ir++) /* the rows left: one at a time, the same arithmetic */
                lnn_q8_tile(cell, 1, wb, fb, kx, kp, d, sc, nr, u, hp, hq, cp, cq, ms, r0 + ir,
                            ir, blk, lanes, partial);
        }
    }
}

#define LNN_Q8_ARGS                                                                              \
    const uint8_t *xq, const float *xs, const int32_t *xzp, ptrdiff_t xstep, const int16_t *wq,  \
        const float *wf, float *h, float *c, const float *mask, ptrdiff_t b, ptrdiff_t f,        \
        ptrdiff_t u, ptrdiff_t t, ptrdiff_t hn, ptrdiff_t r0, ptrdiff_t r1, int reverse,         \
        int16_t *d, float *sc
#define LNN_Q8_PASS xq, xs, xzp, xstep, wq, wf, h, c, mask, b, f, u, t, hn, r0, r1, reverse, d, sc

static LNN_RR_T void lnn_q8_lstm(LNN_Q8_ARGS) { lnn_q8_run(0, 2, LNN_Q8_PASS); }
static LNN_RR_T void lnn_q8_gru(LNN_Q8_ARGS) { lnn_q8_run(1, 3, LNN_Q8_PASS); }
static LNN_RR_T void lnn_q8_rnn(LNN_Q8_ARGS) { lnn_q8_run(2, 4, LNN_Q8_PASS); }
#endif

/* 1 where lnn_rec_q8_fwd runs (AVX2 + FMA, not turned off by lnn_rr_set_simd) */
static int lnn_rec_q8_available(void)
{
#if LNN_RR_AVX2
    return lnn_rr_has_avx2();
#else
    return 0;
#endif
}

/* The entry point (see the top of this file); only where lnn_rec_q8_available(). */
static void lnn_rec_q8_fwd(int cell, const uint8_t *xq, const float *xs, const int32_t *xzp,
                           ptrdiff_t xstep, const int16_t *wq, const float *wf, float *h,
                           float *c, const float *mask, ptrdiff_t b, ptrdiff_t f, ptrdiff_t u,
                           ptrdiff_t t, ptrdiff_t hn, ptrdiff_t r0, ptrdiff_t r1, int reverse,
                           int16_t *d, float *sc)
{
#if LNN_RR_AVX2
    if (cell == 0) lnn_q8_lstm(LNN_Q8_PASS);
    else if (cell == 1) lnn_q8_gru(LNN_Q8_PASS);
    else lnn_q8_rnn(LNN_Q8_PASS);
#else
    (void)cell, (void)xq, (void)xs, (void)xzp, (void)xstep, (void)wq, (void)wf, (void)h;
    (void)c, (void)mask, (void)b, (void)f, (void)u, (void)t, (void)hn, (void)r0, (void)r1;
    (void)reverse, (void)d, (void)sc;
#endif
}

#endif /* LNN_RECURRENT_Q8_H */
