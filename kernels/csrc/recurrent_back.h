/* recurrent_back.h: back through a whole LSTM sequence (BPTT) for a range of batch rows in
 * one call, for training (lepton_nn/ops/recurrent.py, LSTM.backward). Its NumPy twin is
 * ReferenceBackend.lstm_rows_backward (lepton_nn/backend/recurrent_train.py), which also packs
 * the transposed recurrent weights (pack_lstm_back):
 *
 *   wt (NB, 4U, 8): block j, row k, lane l holds W_hh[8j + l, k] (zero past U)
 *
 *   for s = T-1 .. 0 (0 .. T-1 when reverse), p, q = the state slots before / after s:
 *       for each unit block j, each row i in r0 .. r1-1:
 *           dh_rec = dz[s', i] @ W_hh^T[:, 8j:8j+8]   (s' the step done before; 0 at first)
 *           lstm_step_backward (reference_recurrent.py) on those 8 units: dz[s, i], dh[i], dc[i]
 *   dh[i] += dz[s', i] @ W_hh^T   (s' the last step done: the gradient reaching h0)
 *
 * so dh_rec is summed in registers and used there; no per-step product is written. Rows
 * are independent through the whole sequence: threads split the batch into row ranges, and
 * every row's arithmetic is the same whatever the range, so any split gives the same bits.
 * gy: (T, B, U) or NULL; gates: (T, B, 4U) [i, f, g, o] and c: (T + 1, B, U) as the forward
 * saved them (recurrent_rows.h with every state kept); mask: (T, B) or NULL; dh, dc: (B, U),
 * in: the gradient reaching the last state, out: the one reaching the first; dz: (T, B, 4U).
 * Float32 on AVX2 + FMA only; elsewhere the backend runs the NumPy twin.
 */
#ifndef LNN_RECURRENT_BACK_H
#define LNN_RECURRENT_BACK_H

#include <stddef.h>

#include "recurrent_simd.h"

#if LNN_RR_AVX2
/* Rows i0 .. i0+R-1, unit blocks blk .. blk+NBT-1: dh_rec summed over the 4U columns of
 * dz[s'] (dzn; NULL: none yet), then either the step's gate gradients (gs != NULL) or,
 * at the end (gs == NULL), dh += dh_rec. */
static inline LNN_RR_TI void lnn_rb_tile(const int R, const int NBT, const float *wt,
                                          ptrdiff_t u, ptrdiff_t nb, ptrdiff_t rest,
                                          const float *dzn, const float *gys, const float *gs,
                                          const float *cq, const float *cp, const float *ms,
                                          float *dh, float *dc, float *dzs, ptrdiff_t i0,
                                          ptrdiff_t blk)
{
    const ptrdiff_t gu = 4 * u;
    __m256 acc[4][2];
    LNN_RR_UNROLL
    for (int r = 0; r < R; r++)
        LNN_RR_UNROLL
        for (int bb = 0; bb < NBT; bb++) acc[r][bb] = _mm256_setzero_ps();
    if (dzn) { /* dh_rec = dz[s'] @ W_hh^T */
        const float *w = wt + blk * gu * LNN_RV;
        for (ptrdiff_t k = 0; k < gu; k++, w += LNN_RV) {
            __m256 wv[2];
            LNN_RR_UNROLL
            for (int bb = 0; bb < NBT; bb++) wv[bb] = _mm256_loadu_ps(w + bb * gu * LNN_RV);
            LNN_RR_UNROLL
            for (int r = 0; r < R; r++) {
                const __m256 a = _mm256_broadcast_ss(dzn + (i0 + r) * gu + k);
                LNN_RR_UNROLL
                for (int bb = 0; bb < NBT; bb++) acc[r][bb] = _mm256_fmadd_ps(a, wv[bb], acc[r][bb]);
            }
        }
    }
    const __m256 one = _mm256_set1_ps(1.0f);
    LNN_RR_UNROLL
    for (int bb = 0; bb < NBT; bb++) {
        const ptrdiff_t j0 = (blk + bb) * LNN_RV;
        const int partial = blk + bb == nb - 1 && rest < LNN_RV;
        const __m256i lanes = lnn_rr_lanes(rest);
        LNN_RR_UNROLL
        for (int r = 0; r < R; r++) {
            const ptrdiff_t i = i0 + r, o = i * u + j0;
            __m256 t = LNN_RR_LOAD(dh + o);
            if (!gs) { /* the end: dh (reaching h0) = dh + dz[s'] W_hh^T */
                LNN_RR_STORE(dh + o, _mm256_add_ps(t, acc[r][bb]));
                continue;
            }
            const float m = ms ? ms[i] : 1.0f;
            if (gys) /* dh + m gy */
                t = _mm256_add_ps(t, _mm256_mul_ps(_mm256_set1_ps(m), LNN_RR_LOAD(gys + o)));
            const __m256 d = _mm256_add_ps(acc[r][bb], t); /* d = dh_rec + dh + m gy */
            float *dzr = dzs + i * gu + j0;
            if (!(m > 0)) { /* masked: dz = 0, dh <- d, dc unchanged */
                const __m256 zero = _mm256_setzero_ps();
                LNN_RR_STORE(dzr, zero);
                LNN_RR_STORE(dzr + u, zero);
                LNN_RR_STORE(dzr + 2 * u, zero);
                LNN_RR_STORE(dzr + 3 * u, zero);
                LNN_RR_STORE(dh + o, d);
                continue;
            }
            const float *g = gs + i * gu + j0;
            const __m256 iv = LNN_RR_LOAD(g), fv = LNN_RR_LOAD(g + u);
            const __m256 gv = LNN_RR_LOAD(g + 2 * u), ov = LNN_RR_LOAD(g + 3 * u);
            const __m256 tc = lnn_rr_tanh(LNN_RR_LOAD(cq + o));
            /* dct = dc + d o (1 - tanh(c)^2) */
            const __m256 dct = _mm256_add_ps(
                LNN_RR_LOAD(dc + o),
                _mm256_mul_ps(_mm256_mul_ps(d, ov), _mm256_sub_ps(one, _mm256_mul_ps(tc, tc))));
            /* dz = [dct g i(1-i), dct c_prev f(1-f), dct i (1-g^2), d tanh(c) o(1-o)] */
            const __m256 zi = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dct, gv), iv),
                                            _mm256_sub_ps(one, iv));
            const __m256 zf = _mm256_mul_ps(
                _mm256_mul_ps(_mm256_mul_ps(dct, LNN_RR_LOAD(cp + o)), fv), _mm256_sub_ps(one, fv));
            const __m256 zg = _mm256_mul_ps(_mm256_mul_ps(dct, iv),
                                            _mm256_sub_ps(one, _mm256_mul_ps(gv, gv)));
            const __m256 zo = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, tc), ov),
                                            _mm256_sub_ps(one, ov));
            LNN_RR_STORE(dzr, zi);
            LNN_RR_STORE(dzr + u, zf);
            LNN_RR_STORE(dzr + 2 * u, zg);
            LNN_RR_STORE(dzr + 3 * u, zo);
            LNN_RR_STORE(dc + o, _mm256_mul_ps(dct, fv)); /* dc <- dct f */
            LNN_RR_STORE(dh + o, _mm256_setzero_ps());     /* dh <- 0: the rest is in dz */
        }
    }
}

/* The row tiles of one block group: 4 rows at a time (8 accumulators for 2 blocks: enough
 * independent FMA chains to cover their latency), then 2, then 1 (the same arithmetic per
 * row and unit whatever the tile). */
#define LNN_RB_ROWS(NBT)                                                                         \
    do {                                                                                         \
        ptrdiff_t i0 = r0;                                                                       \
        for (; i0 + 4 <= r1; i0 += 4)                                                            \
            lnn_rb_tile(4, NBT, wt, u, nb, rest, dzn, gys, gs, cq, cp, ms, dh, dc, dzs, i0, blk); \
        if (i0 + 2 <= r1) {                                                                      \
            lnn_rb_tile(2, NBT, wt, u, nb, rest, dzn, gys, gs, cq, cp, ms, dh, dc, dzs, i0, blk); \
            i0 += 2;                                                                             \
        }                                                                                        \
        if (i0 < r1)                                                                             \
            lnn_rb_tile(1, NBT, wt, u, nb, rest, dzn, gys, gs, cq, cp, ms, dh, dc, dzs, i0, blk); \
    } while (0)

/* One pass over all unit blocks (pairs, then a last single one) and rows r0 .. r1-1. */
static inline LNN_RR_TI void lnn_rb_pass(const float *wt, ptrdiff_t u, ptrdiff_t nb,
                                          ptrdiff_t rest, const float *dzn, const float *gys,
                                          const float *gs, const float *cq, const float *cp,
                                          const float *ms, float *dh, float *dc, float *dzs,
                                          ptrdiff_t r0, ptrdiff_t r1)
{
    ptrdiff_t blk = 0;
    for (; blk + 2 <= nb; blk += 2) LNN_RB_ROWS(2);
    if (blk < nb) LNN_RB_ROWS(1);
}

static LNN_RR_T void lnn_rb_lstm_avx2(const float *gy, const float *gates, const float *c,
                                      const float *wt, const float *mask, float *dh, float *dc,
                                      float *dz, ptrdiff_t b, ptrdiff_t u, ptrdiff_t t,
                                      ptrdiff_t r0, ptrdiff_t r1, int reverse)
{
    const ptrdiff_t nb = (u + LNN_RV - 1) / LNN_RV, rest = u - (nb - 1) * LNN_RV;
    const ptrdiff_t bu = b * u, bg = 4 * bu, rr = reverse ? 1 : 0;
    const float *dzn = NULL;
    for (ptrdiff_t it = 0; it < t; it++) {
        const ptrdiff_t s = reverse ? it : t - 1 - it, p = s + rr, q = s + 1 - rr;
        float *dzs = dz + s * bg;
        lnn_rb_pass(wt, u, nb, rest, dzn, gy ? gy + s * bu : NULL, gates + s * bg, c + q * bu,
                    c + p * bu, mask ? mask + s * b : NULL, dh, dc, dzs, r0, r1);
        dzn = dzs;
    }
    if (dzn) /* dh reaching the first state: dh + dz[first] W_hh^T */
        lnn_rb_pass(wt, u, nb, rest, dzn, NULL, NULL, NULL, NULL, NULL, dh, dc, NULL, r0, r1);
}
#endif

/* 1 where lnn_rec_lstm_bwd_f32 runs (AVX2 + FMA, not turned off by lnn_rr_set_simd) */
static int lnn_rec_back_available(void)
{
#if LNN_RR_AVX2
    return lnn_rr_has_avx2();
#else
    return 0;
#endif
}

/* The entry point (see the top of this file); only where lnn_rec_back_available(). */
static void lnn_rec_lstm_bwd_f32(const float *gy, const float *gates, const float *c,
                                 const float *wt, const float *mask, float *dh, float *dc,
                                 float *dz, ptrdiff_t b, ptrdiff_t u, ptrdiff_t t, ptrdiff_t r0,
                                 ptrdiff_t r1, int reverse)
{
#if LNN_RR_AVX2
    lnn_rb_lstm_avx2(gy, gates, c, wt, mask, dh, dc, dz, b, u, t, r0, r1, reverse);
#else
    (void)gy, (void)gates, (void)c, (void)wt, (void)mask, (void)dh, (void)dc, (void)dz;
    (void)b, (void)u, (void)t, (void)r0, (void)r1, (void)reverse;
#endif
}

#endif /* LNN_RECURRENT_BACK_H */
