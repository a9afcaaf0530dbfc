/* recurrent_rows.h: a recurrent layer's whole forward for a range of batch rows in one call,
 * for the inference runtime (lepton_nn/runtime/steps.py, RecurrentStep). Its NumPy twin is
 * ReferenceBackend.recurrent_rows_forward (lepton_nn/backend/reference.py), which also packs
 * the weights (ReferenceBackend.pack_recurrent):
 *
 *   wp (NB, K, G 8): for unit block j (units 8j .. 8j+7, zero-padded past U), row k, gate g,
 *   lane l: column g U + 8j + l of  K rows = [bias; W_ih (F rows); W_hh (U rows)]  (+ GRU: a
 *   last row [0, 0, b_hh_n], the start of n's recurrent sum; GRU's bias row holds b + b_hh
 *   for z and r).
 *
 *   for s in 0 .. T-1 (T-1 .. 0 when reverse), p, q = the state slots before / after s:
 *       for each unit block j, each row i in r0 .. r1-1:
 *           z[g] = bias[g] + x[s, i] @ W_ih[:, g] + h[p, i] @ W_hh[:, g]   (8 lanes a gate)
 *           the cell's gates on z, written straight to h[q, i, 8j:8j+8] (and c[q])
 *
 * so no x W_ih, h W_hh or gate buffer is ever written: each 8-unit block of every gate is
 * summed in registers and turned into its states there. Rows are independent through the
 * whole sequence: threads split the batch into row ranges, one call each, with no barrier,
 * and every row's arithmetic is the same whatever the range, so any split gives the same
 * bits. h: (H, B, U) state slots (H = T + 1 keeps every state, 2 alternates); c: (C, B, U)
 * likewise; x: (T, B, F); mask: (T, B) or NULL (rows whose mask is 0 keep their state).
 * Training (lepton_nn/ops/recurrent.py) keeps every state and each step's gates as well.
 * Cells: 0 LSTM (G = 4: i, f, g, o), 1 GRU (G = 3: z, r, n; reset after the product),
 * 2 SimpleRNN (G = 1). Float32 on AVX2 + FMA only (the gate math of recurrent_simd.h):
 * elsewhere (float64, other CPUs) the backend runs the NumPy twin, whose BLAS products and
 * compiled step kernels are faster than a plain C loop of this (lnn_rec_rows_available).
 */
#ifndef LNN_RECURRENT_ROWS_H
#define LNN_RECURRENT_ROWS_H

#include <stddef.h>

#include "recurrent_simd.h"

#if LNN_RR_AVX2
/* R rows (i0 .. i0+R-1) of unit block `blk` at one step: the sums of the G gate vectors in
 * registers (GRU: a 4th vector, n's recurrent part), then the cell's states. lanes < 8 only
 * in the last block (U not a multiple of 8): loads and stores masked. */
static inline LNN_RR_TI void lnn_rr_tile(const int cell, const int R, const float *wp,
                                          ptrdiff_t kx, ptrdiff_t u, const float *xs,
                                          const float *hp, float *hq, const float *cp, float *cq,
                                          const float *ms, float *gq, ptrdiff_t i0,
                                          ptrdiff_t blk, __m256i lanes, int partial)
{
    const int G = cell == 0 ? 4 : (cell == 1 ? 3 : 1), GV = cell == 1 ? 4 : G, W = G * LNN_RV;
    __m256 acc[4][4];
    LNN_RR_UNROLL
    for (int r = 0; r < R; r++) /* z = bias (GRU: n's recurrent part starts at b_hh_n) */
        LNN_RR_UNROLL
        for (int g = 0; g < GV; g++)
            acc[r][g] = _mm256_loadu_ps(g < G ? wp + g * LNN_RV : wp + (1 + kx + u) * W + 2 * LNN_RV);
    const float *w = wp + W;
    for (ptrdiff_t k = 0; k < kx; k++, w += W) { /* z += x[s, i] @ W_ih */
        __m256 wv[4];
        LNN_RR_UNROLL
        for (int g = 0; g < G; g++) wv[g] = _mm256_loadu_ps(w + g * LNN_RV);
        LNN_RR_UNROLL
        for (int r = 0; r < R; r++) {
            const __m256 a = _mm256_broadcast_ss(xs + (i0 + r) * kx + k);
            LNN_RR_UNROLL
            for (int g = 0; g < G; g++) acc[r][g] = _mm256_fmadd_ps(a, wv[g], acc[r][g]);
        }
    }
    for (ptrdiff_t k = 0; k < u; k++, w += W) { /* z += h[p, i] @ W_hh (GRU: n apart) */
        __m256 wv[4];
        LNN_RR_UNROLL
        for (int g = 0; g < G; g++) wv[g] = _mm256_loadu_ps(w + g * LNN_RV);
        LNN_RR_UNROLL
        for (int r = 0; r < R; r++) {
            const __m256 a = _mm256_broadcast_ss(hp + (i0 + r) * u + k);
            LNN_RR_UNROLL
            for (int g = 0; g < G; g++) {
                const int d = cell == 1 && g == 2 ? 3 : g;
                acc[r][d] = _mm256_fmadd_ps(a, wv[g], acc[r][d]);
            }
        }
    }
    const ptrdiff_t j0 = blk * LNN_RV;
    LNN_RR_UNROLL
    for (int r = 0; r < R; r++) {
        const ptrdiff_t o = (i0 + r) * u + j0;
        const int keep = ms != NULL && !(ms[i0 + r] > 0); /* mask 0: the state stays */
        __m256 hv;
        const __m256 hold = partial ? _mm256_maskload_ps(hp + o, lanes) : _mm256_loadu_ps(hp + o);
        if (cell == 0) { /* c = f c' + i g;  h = o tanh(c) */
            const __m256 cpv = partial ? _mm256_maskload_ps(cp + o, lanes) : _mm256_loadu_ps(cp + o);
            const __m256 iv = lnn_rr_sigmoid(acc[r][0]), fv = lnn_rr_sigmoid(acc[r][1]);
            const __m256 gv = lnn_rr_tanh(acc[r][2]), ov = lnn_rr_sigmoid(acc[r][3]);
            if (gq) { /* training: the gates [i, f, g, o] of this step, for the backward */
                float *gr = gq + (i0 + r) * 4 * u + j0;
                LNN_RR_STORE(gr, iv);
                LNN_RR_STORE(gr + u, fv);
                LNN_RR_STORE(gr + 2 * u, gv);
                LNN_RR_STORE(gr + 3 * u, ov);
            }
            __m256 cv = _mm256_fmadd_ps(fv, cpv, _mm256_mul_ps(iv, gv));
            hv = _mm256_mul_ps(ov, lnn_rr_tanh(cv));
            if (keep) cv = cpv;
            if (partial) _mm256_maskstore_ps(cq + o, lanes, cv);
            else _mm256_storeu_ps(cq + o, cv);
        } else if (cell == 1) { /* n = tanh(z_n + r a_n);  h = (1 - z) n + z h' = n + z (h' - n) */
            const __m256 zv = lnn_rr_sigmoid(acc[r][0]), rv = lnn_rr_sigmoid(acc[r][1]);
            const __m256 nv = lnn_rr_tanh(_mm256_fmadd_ps(rv, acc[r][3], acc[r][2]));
            if (gq) { /* training: the gates [z, r, n, a_n] of this step */
                float *gr = gq + (i0 + r) * 4 * u + j0;
                LNN_RR_STORE(gr, zv);
                LNN_RR_STORE(gr + u, rv);
                LNN_RR_STORE(gr + 2 * u, nv);
                LNN_RR_STORE(gr + 3 * u, acc[r][3]);
            }
            hv = _mm256_fmadd_ps(zv, _mm256_sub_ps(hold, nv), nv);
        } else { /* h = tanh(z) */
            hv = lnn_rr_tanh(acc[r][0]);
        }
        if (keep) hv = hold;
        if (partial) _mm256_maskstore_ps(hq + o, lanes, hv);
        else _mm256_storeu_ps(hq + o, hv);
    }
}

/* One cell's steps for rows r0 .. r1-1 (see the top of this file), float32, AVX2 + FMA. */
static inline LNN_RR_TI void lnn_rr_run_avx2(const int cell, const int R, const float *x,
                                              const float *wp, float *h, float *c,
                                              const float *mask, float *gates, ptrdiff_t b,
                                              ptrdiff_t kx, ptrdiff_t u, ptrdiff_t t,
                                              ptrdiff_t hn, ptrdiff_t cn, ptrdiff_t r0,
                                              ptrdiff_t r1, int reverse, ptrdiff_t kp)
{
    const int G = cell == 0 ? 4 : (cell == 1 ? 3 : 1);
    const ptrdiff_t nb = (u + LNN_RV - 1) / LNN_RV, bu = b * u, rr = reverse ? 1 : 0;
    const ptrdiff_t rest = u - (nb - 1) * LNN_RV;
    const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rest),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (ptrdiff_t i = 0; i < t; i++) {
        const ptrdiff_t s = reverse ? t - 1 - i : i, p = s + rr, q = s + 1 - rr;
        const float *hp = h + (p % hn) * bu, *cp = c ? c + (p % cn) * bu : NULL;
        float *hq = h + (q % hn) * bu, *cq = c ? c + (q % cn) * bu : NULL;
        const float *xs = x + s * b * kx, *ms = mask ? mask + s * b : NULL;
        float *gq = gates ? gates + s * 4 * bu : NULL;
        for (ptrdiff_t blk = 0; blk < nb; blk++) {
            const float *wb = wp + blk * kp * G * LNN_RV;
            const int partial = blk == nb - 1 && rest < LNN_RV;
            ptrdiff_t i0 = r0;
            for (; i0 + R <= r1; i0 += R)
                lnn_rr_tile(cell, R, wb, kx, u, xs, hp, hq, cp, cq, ms, gq, i0, blk, lanes,
                            partial);
            for (; i0 < r1; i0++) /* the rows left: one at a time, the same arithmetic */
                lnn_rr_tile(cell, 1, wb, kx, u, xs, hp, hq, cp, cq, ms, gq, i0, blk, lanes,
                            partial);
        }
    }
}

static LNN_RR_T void lnn_rr_lstm_avx2(const float *x, const float *wp, float *h, float *c,
                                      const float *mask, float *gates, ptrdiff_t b, ptrdiff_t kx,
                                      ptrdiff_t u, ptrdiff_t t, ptrdiff_t hn, ptrdiff_t cn,
                                      ptrdiff_t r0, ptrdiff_t r1, int reverse, ptrdiff_t kp)
{
    lnn_rr_run_avx2(0, 3, x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, reverse,
                    kp);
}

static LNN_RR_T void lnn_rr_gru_avx2(const float *x, const float *wp, float *h, float *c,
                                     const float *mask, float *gates, ptrdiff_t b, ptrdiff_t kx,
                                     ptrdiff_t u, ptrdiff_t t, ptrdiff_t hn, ptrdiff_t cn,
                                     ptrdiff_t r0, ptrdiff_t r1, int reverse, ptrdiff_t kp)
{
    lnn_rr_run_avx2(1, 3, x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, reverse,
                    kp);
}

static LNN_RR_T void lnn_rr_rnn_avx2(const float *x, const float *wp, float *h, float *c,
                                     const float *mask, float *gates, ptrdiff_t b, ptrdiff_t kx,
                                     ptrdiff_t u, ptrdiff_t t, ptrdiff_t hn, ptrdiff_t cn,
                                     ptrdiff_t r0, ptrdiff_t r1, int reverse, ptrdiff_t kp)
{
    lnn_rr_run_avx2(2, 4, x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, reverse,
                    kp);
}

#endif

/* 1 where lnn_rec_rows_fwd_f32 runs (AVX2 + FMA, not turned off by lnn_rr_set_simd) */
static int lnn_rec_rows_available(void)
{
#if LNN_RR_AVX2
    return lnn_rr_has_avx2();
#else
    return 0;
#endif
}

/* The entry point (see the top of this file); only where lnn_rec_rows_available().
 * kp: the packed rows per block (1 + F + U, GRU one more); cn: the c slots (2 alternate);
 * gates: (T, B, 4 U) or NULL, for training: each step's activated gates (LSTM [i, f, g, o],
 * GRU [z, r, n, a_n], as the step kernels save them; not for SimpleRNN). */
static void lnn_rec_rows_fwd_f32(int cell, const float *x, const float *wp, float *h, float *c,
                                 const float *mask, float *gates, ptrdiff_t b, ptrdiff_t kx,
                                 ptrdiff_t u, ptrdiff_t t, ptrdiff_t hn, ptrdiff_t cn,
                                 ptrdiff_t r0, ptrdiff_t r1, int reverse, ptrdiff_t kp)
{
#if LNN_RR_AVX2
    if (cell == 0)
        lnn_rr_lstm_avx2(x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, reverse, kp);
    else if (cell == 1)
        lnn_rr_gru_avx2(x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, reverse, kp);
    else lnn_rr_rnn_avx2(x, wp, h, c, mask, NULL, b, kx, u, t, hn, cn, r0, r1, reverse, kp);
#else
    (void)cell, (void)x, (void)wp, (void)h, (void)c, (void)mask, (void)gates, (void)b, (void)kx;
    (void)u, (void)t, (void)hn, (void)cn, (void)r0, (void)r1, (void)reverse, (void)kp;
#endif
}

#endif /* LNN_RECURRENT_ROWS_H */
