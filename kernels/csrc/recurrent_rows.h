/* recurrent_rows.h: a recurrent layer's whole forward for a range of batch rows in one call,
 * for the inference runtime (lepton_nn/runtime/steps.py, RecurrentStep) and the LSTM's
 * training forward. Its NumPy twin is ReferenceBackend.recurrent_rows_forward
 * (lepton_nn/backend/reference_recurrent.py), which also packs the weights
 * (ReferenceBackend.pack_recurrent):
 *
 *   wp (NB, K, G 8): for unit block j (units 8j .. 8j+7, zero-padded past U), row k, gate g,
 *   lane l: column g U + 8j + l of  K rows = [bias; W_ih (F rows); W_hh (U rows)]  (+ GRU: a
 *   last row [0, 0, b_hh_n], the start of n's recurrent sum; GRU's bias row holds b + b_hh
 *   for z and r).
 *
 *   for s in 0 .. T-1 (T-1 .. 0 when reverse), p, q = the state slots before / after s:
 *       for each chunk of up to 64 rows in r0 .. r1-1, each unit block j:
 *           for each row i of the chunk (tiles of R rows: 3, SimpleRNN 8; a row alone
 *           in its chunk: GRU / SimpleRNN 2 blocks a tile, LSTM its gate math in registers):
 *               z[i, g] = bias[g] + x[s, i] @ W_ih[:, g] + h[p, i] @ W_hh[:, g]  (8 lanes a gate)
 *           the cell's gates on the chunk's z, written to h[q, i, 8j:8j+8] (and c[q])
 *
 * so no x W_ih or h W_hh of the whole batch is ever written: the input product is summed in
 * the same registers as the recurrent one (F rows more of K: no pass of its own), and the
 * gate sums of one block wait in an 8 KiB buffer that stays in L1 beside the block's weight
 * panel. The sums and the gate math are separate passes: the tile loop keeps its 12 sums
 * and weights in registers, and the gate math runs over many rows at once (a row's chain
 * of sigmoid, c, tanh(c) alone is ~170 cycles of latency). Rows are independent through the
 * whole sequence: threads split the batch into row ranges, one call each, with no barrier,
 * and every row's arithmetic is the same whatever the range, so any split gives the same
 * bits. h: (H, B, U) state slots (H = T + 1 keeps every state, 2 alternates); c: (C, B, U)
 * likewise; x: (T, B, F); mask: (T, B) or NULL (rows whose mask is 0 keep their state).
 * Training (lepton_nn/ops/recurrent.py) keeps every state and each step's gates as well:
 * gates (T, B, 4U), written by the gate math's second pass (lnn_rr_states), as the step
 * kernels save them.
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
/* rows of a chunk whose gate sums one block's pass keeps (chunk x 4 gates x 8 lanes x 4 bytes
 * = 8 KiB: in L1 beside the block's weight panel) */
#ifndef LNN_RR_CHUNK
#define LNN_RR_CHUNK 64
#endif

/* The gate sums of R rows (i0 .. i0+R-1) for NB unit blocks (wp, wp + bs, ...) at one step,
 * in registers, then stored to z + q zs (R, GV, 8) for block q: z = bias + x[s, i] @ W_ih +
 * h[p, i] @ W_hh, k in order (GRU: n's recurrent part apart, in a 4th vector from b_hh_n).
 * Only sums here: with no gate math in the same loop the compiler keeps all the
 * accumulators and the weights in registers. NB = 2 for a row alone: its 4 sums of one
 * block are chains of dependent FMAs (4 cycles each), two blocks' 8 keep both FMA units busy. */
static inline LNN_RR_TI void lnn_rr_sums(const int cell, const int R, const int NB,
                                          const float *wp, ptrdiff_t bs, ptrdiff_t kx, ptrdiff_t u,
                                          const float *xs, const float *hp, ptrdiff_t i0,
                                          float *z, ptrdiff_t zs)
{
    const int G = cell == 0 ? 4 : (cell == 1 ? 3 : 1), GV = cell == 1 ? 4 : G, W = G * LNN_RV;
    __m256 acc[8][4]; /* [q R + r][gate]: R NB <= 8 */
    LNN_RR_UNROLL
    for (int q = 0; q < NB; q++) /* z = bias (GRU: n's recurrent part starts at b_hh_n) */
        LNN_RR_UNROLL
        for (int r = 0; r < R; r++)
            LNN_RR_UNROLL
            for (int g = 0; g < GV; g++)
                acc[q * R + r][g] = _mm256_loadu_ps(
                    wp + q * bs + (g < G ? g * LNN_RV : (1 + kx + u) * W + 2 * LNN_RV));
    const float *w = wp + W;
    for (ptrdiff_t k = 0; k < kx; k++, w += W) { /* z += x[s, i] @ W_ih */
        __m256 wv[2][4];
        LNN_RR_UNROLL
        for (int q = 0; q < NB; q++)
            LNN_RR_UNROLL
            for (int g = 0; g < G; g++) wv[q][g] = _mm256_loadu_ps(w + q * bs + g * LNN_RV);
        LNN_RR_UNROLL
        for (int r = 0; r < R; r++) {
            const __m256 a = _mm256_broadcast_ss(xs + (i0 + r) * kx + k);
            LNN_RR_UNROLL
            for (int q = 0; q < NB; q++)
                LNN_RR_UNROLL
                for (int g = 0; g < G; g++)
                    acc[q * R + r][g] = _mm256_fmadd_ps(a, wv[q][g], acc[q * R + r][g]);
        }
    }
    for (ptrdiff_t k = 0; k < u; k++, w += W) { /* z += h[p, i] @ W_hh (GRU: n apart) */
        __m256 wv[2][4];
        LNN_RR_UNROLL
        for (int q = 0; q < NB; q++)
            LNN_RR_UNROLL
            for (int g = 0; g < G; g++) wv[q][g] = _mm256_loadu_ps(w + q * bs + g * LNN_RV);
        LNN_RR_UNROLL
        for (int r = 0; r < R; r++) {
            const __m256 a = _mm256_broadcast_ss(hp + (i0 + r) * u + k);
            LNN_RR_UNROLL
            for (int q = 0; q < NB; q++)
                LNN_RR_UNROLL
                for (int g = 0; g < G; g++) {
                    const int d = cell == 1 && g == 2 ? 3 : g;
                    acc[q * R + r][d] = _mm256_fmadd_ps(a, wv[q][g], acc[q * R + r][d]);
                }
        }
    }
    LNN_RR_UNROLL
    for (int q = 0; q < NB; q++)
        LNN_RR_UNROLL
        for (int r = 0; r < R; r++)
            LNN_RR_UNROLL
            for (int g = 0; g < GV; g++)
                _mm256_store_ps(z + q * zs + (r * GV + g) * LNN_RV, acc[q * R + r][g]);
}

/* The states of rows i0 .. i0+n-1 (n <= 4), units j0 .. j0+7, from their gates (LSTM:
 * i, f, g, o; GRU: z, r and n's two sums; SimpleRNN: the sum) in z (rows, GV, 8), the last
 * tanh of the n rows in lockstep. lanes < 8 only in the last block (U not a multiple of 8):
 * loads and stores of the states masked. gq (B, 4U) or NULL (training: this step's gates,
 * LSTM [i, f, g, o], GRU [z, r, n, a_n], whatever the mask, as the step kernels save them). */
static inline LNN_RR_TI void lnn_rr_states(const int cell, const int n, const float *z,
                                            ptrdiff_t i0, ptrdiff_t u, ptrdiff_t j0,
                                            const float *ms, const float *hp, float *hq,
                                            const float *cp, float *cq, float *gq,
                                            __m256i lanes, int partial)
{
    const int GV = cell == 2 ? 1 : 4;
    __m256 hold[4], cpv[4], cv[4], a[4];
    LNN_RR_UNROLL
    for (int r = 0; r < n; r++) {
        const float *zr = z + r * GV * LNN_RV;
        const ptrdiff_t o = (i0 + r) * u + j0;
        hold[r] = partial ? _mm256_maskload_ps(hp + o, lanes) : _mm256_loadu_ps(hp + o);
        if (cell == 0) { /* c = f c' + i g */
            cpv[r] = partial ? _mm256_maskload_ps(cp + o, lanes) : _mm256_loadu_ps(cp + o);
            const __m256 ig = _mm256_mul_ps(_mm256_load_ps(zr), _mm256_load_ps(zr + 2 * LNN_RV));
            cv[r] = _mm256_fmadd_ps(_mm256_load_ps(zr + LNN_RV), cpv[r], ig);
            a[r] = cv[r];
        } else if (cell == 1) { /* z_n + r a_n */
            a[r] = _mm256_fmadd_ps(_mm256_load_ps(zr + LNN_RV), _mm256_load_ps(zr + 3 * LNN_RV),
                                   _mm256_load_ps(zr + 2 * LNN_RV));
        } else {
            a[r] = _mm256_load_ps(zr);
        }
    }
    lnn_rr_act_n(n, 15, a); /* tanh of each */
    LNN_RR_UNROLL
    for (int r = 0; r < n; r++) {
        const float *zr = z + r * GV * LNN_RV;
        const ptrdiff_t o = (i0 + r) * u + j0;
        const int keep = ms != NULL && !(ms[i0 + r] > 0); /* mask 0: the state stays */
        __m256 hv;
        if (cell == 0) { /* h = o tanh(c) */
            hv = _mm256_mul_ps(_mm256_load_ps(zr + 3 * LNN_RV), a[r]);
            const __m256 c1 = keep ? cpv[r] : cv[r];
            if (partial) _mm256_maskstore_ps(cq + o, lanes, c1);
            else _mm256_storeu_ps(cq + o, c1);
        } else if (cell == 1) { /* h = (1 - z) n + z h' = n + z (h' - n) */
            hv = _mm256_fmadd_ps(_mm256_load_ps(zr), _mm256_sub_ps(hold[r], a[r]), a[r]);
        } else { /* h = tanh(z) */
            hv = a[r];
        }
        if (keep) hv = hold[r];
        if (partial) _mm256_maskstore_ps(hq + o, lanes, hv);
        else _mm256_storeu_ps(hq + o, hv);
        if (gq && cell != 2) { /* training: the gates of this step (GRU's n: a[r]) */
            float *gr = gq + (i0 + r) * 4 * u + j0;
            LNN_RR_UNROLL
            for (int g = 0; g < 4; g++) {
                const __m256 v = cell == 1 && g == 2 ? a[r] : _mm256_load_ps(zr + g * LNN_RV);
                LNN_RR_STORE(gr + g * u, v);
            }
        }
    }
}

/* The gate math of rows c0 .. c1-1, units j0 .. j0+7, from their gate sums z (rows, GV, 8),
 * in two passes over the rows: the gates' sigmoid / tanh in place in z (LSTM: a row's 4 in
 * lockstep; GRU: z and r), then the states, 4 rows at a time. One row's whole chain at a
 * time (gates, c, tanh(c), ~170 cycles of latency) left the core waiting. */
static inline LNN_RR_TI void lnn_rr_gates(const int cell, float *z, ptrdiff_t c0, ptrdiff_t c1,
                                           ptrdiff_t u, ptrdiff_t j0, const float *ms,
                                           const float *hp, float *hq, const float *cp,
                                           float *cq, float *gq, __m256i lanes, int partial)
{
    const int GV = cell == 2 ? 1 : 4, NA = cell == 0 ? 4 : (cell == 1 ? 2 : 0);
    if (NA)
        for (float *zr = z; zr < z + (c1 - c0) * GV * LNN_RV; zr += GV * LNN_RV) {
            __m256 v[4];
            LNN_RR_UNROLL
            for (int g = 0; g < NA; g++) v[g] = _mm256_load_ps(zr + g * LNN_RV);
            lnn_rr_act_n(NA, cell == 0 ? 4 : 0, v); /* LSTM: i, f, o sigmoid, g tanh */
            LNN_RR_UNROLL
            for (int g = 0; g < NA; g++) _mm256_store_ps(zr + g * LNN_RV, v[g]);
        }
    ptrdiff_t i = c0;
    for (; i + 4 <= c1; i += 4)
        lnn_rr_states(cell, 4, z + (i - c0) * GV * LNN_RV, i, u, j0, ms, hp, hq, cp, cq, gq,
                      lanes, partial);
    for (; i < c1; i++)
        lnn_rr_states(cell, 1, z + (i - c0) * GV * LNN_RV, i, u, j0, ms, hp, hq, cp, cq, gq,
                      lanes, partial);
}

/* One cell's steps for rows r0 .. r1-1 (see the top of this file), float32, AVX2 + FMA.
 * Per step, per chunk of up to LNN_RR_CHUNK rows, per unit block: the sums of the chunk's
 * rows in tiles of R rows (the last 1 or 2 in a smaller tile: the same arithmetic per row),
 * then their gate math. */
static inline LNN_RR_TI void lnn_rr_run_avx2(const int cell, const int R, const float *x,
                                              const float *wp, float *h, float *c,
                                              const float *mask, float *gates, ptrdiff_t b,
                                              ptrdiff_t kx, ptrdiff_t u, ptrdiff_t t,
                                              ptrdiff_t hn, ptrdiff_t cn, ptrdiff_t r0,
                                              ptrdiff_t r1, ptrdiff_t st0, ptrdiff_t st1,
                                              int reverse, ptrdiff_t kp)
{
    const int G = cell == 0 ? 4 : (cell == 1 ? 3 : 1), GV = cell == 1 ? 4 : G;
    const ptrdiff_t nb = (u + LNN_RV - 1) / LNN_RV, bu = b * u, rr = reverse ? 1 : 0;
    const ptrdiff_t rest = u - (nb - 1) * LNN_RV, bs = kp * G * LNN_RV; /* a block's floats */
    const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rest),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    float z[LNN_RR_CHUNK * 4 * LNN_RV] __attribute__((aligned(32)));
    for (ptrdiff_t i = st0; i < st1; i++) {
        const ptrdiff_t s = reverse ? t - 1 - i : i, p = s + rr, q = s + 1 - rr;
        const float *hp = h + (p % hn) * bu, *cp = c ? c + (p % cn) * bu : NULL;
        float *hq = h + (q % hn) * bu, *cq = c ? c + (q % cn) * bu : NULL;
        const float *xs = x + s * b * kx, *ms = mask ? mask + s * b : NULL;
        float *gq = gates && cell != 2 ? gates + s * 4 * bu : NULL;
        for (ptrdiff_t c0 = r0; c0 < r1; c0 += LNN_RR_CHUNK) {
            const ptrdiff_t c1 = c0 + LNN_RR_CHUNK < r1 ? c0 + LNN_RR_CHUNK : r1;
            /* rows in R-row tiles, the last 2 or 4 in 2-row tiles: a 1-row tile has too few
             * independent sums to keep the FMA units busy (a row alone: 2 blocks a tile) */
            const ptrdiff_t n = c1 - c0;
            const ptrdiff_t tail = R == 3 && n > 1 ? (n % 3 == 1 ? 4 : n % 3) : n % R;
            for (ptrdiff_t blk = 0; blk < nb; blk++) {
                const float *wb = wp + blk * bs;
                float *zb = z;
                if (n == 1 && cell != 0 && blk + 1 < nb) { /* a row alone: two blocks at once */
                    lnn_rr_sums(cell, 1, 2, wb, bs, kx, u, xs, hp, c0, z, GV * LNN_RV);
                    lnn_rr_gates(cell, z, c0, c1, u, blk * LNN_RV, ms, hp, hq, cp, cq, gq, lanes,
                                 0);
                    blk++, zb += GV * LNN_RV;
                } else if (n == 1 && cell == 0) {
                    /* an LSTM row alone: 2 blocks' 32 sums and weights do not fit in the 16
                     * registers; its gate math straight from registers instead, in the shadow
                     * of the next block's chains of dependent FMAs */
                    float zz[4 * LNN_RV] __attribute__((aligned(32)));
                    __m256 v[4];
                    lnn_rr_sums(cell, 1, 1, wb, bs, kx, u, xs, hp, c0, zz, 0);
                    LNN_RR_UNROLL
                    for (int g = 0; g < 4; g++) v[g] = _mm256_load_ps(zz + g * LNN_RV);
                    lnn_rr_act_n(4, 4, v); /* i, f, o sigmoid, g tanh */
                    LNN_RR_UNROLL
                    for (int g = 0; g < 4; g++) _mm256_store_ps(zz + g * LNN_RV, v[g]);
                    const int partial = blk == nb - 1 && rest < LNN_RV;
                    lnn_rr_states(cell, 1, zz, c0, u, blk * LNN_RV, ms, hp, hq, cp, cq, gq,
                                  lanes, partial);
                    continue;
                } else {
                    ptrdiff_t row = c0;
                    for (; row + R <= c1 - tail; row += R)
                        lnn_rr_sums(cell, R, 1, wb, bs, kx, u, xs, hp, row,
                                    z + (row - c0) * GV * LNN_RV, 0);
                    for (; row + 2 <= c1; row += 2)
                        lnn_rr_sums(cell, 2, 1, wb, bs, kx, u, xs, hp, row,
                                    z + (row - c0) * GV * LNN_RV, 0);
                    if (row < c1)
                        lnn_rr_sums(cell, 1, 1, wb, bs, kx, u, xs, hp, row,
                                    z + (row - c0) * GV * LNN_RV, 0);
                }
                const int partial = blk == nb - 1 && rest < LNN_RV;
                lnn_rr_gates(cell, zb, c0, c1, u, blk * LNN_RV, ms, hp, hq, cp, cq, gq, lanes,
                             partial);
            }
        }
    }
}

static LNN_RR_T void lnn_rr_lstm_avx2(const float *x, const float *wp, float *h, float *c,
                                      const float *mask, float *gates, ptrdiff_t b, ptrdiff_t kx,
                                      ptrdiff_t u, ptrdiff_t t, ptrdiff_t hn, ptrdiff_t cn,
                                      ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t i0, ptrdiff_t i1,
                                      int reverse, ptrdiff_t kp)
{
    lnn_rr_run_avx2(0, 3, x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, i0, i1,
                    reverse, kp);
}

static LNN_RR_T void lnn_rr_gru_avx2(const float *x, const float *wp, float *h, float *c,
                                     const float *mask, float *gates, ptrdiff_t b, ptrdiff_t kx,
                                     ptrdiff_t u, ptrdiff_t t, ptrdiff_t hn, ptrdiff_t cn,
                                     ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t i0, ptrdiff_t i1,
                                     int reverse, ptrdiff_t kp)
{
    lnn_rr_run_avx2(1, 3, x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, i0, i1,
                    reverse, kp);
}

static LNN_RR_T void lnn_rr_rnn_avx2(const float *x, const float *wp, float *h, float *c,
                                     const float *mask, float *gates, ptrdiff_t b, ptrdiff_t kx,
                                     ptrdiff_t u, ptrdiff_t t, ptrdiff_t hn, ptrdiff_t cn,
                                     ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t i0, ptrdiff_t i1,
                                     int reverse, ptrdiff_t kp)
{
    lnn_rr_run_avx2(2, 8, x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, i0, i1,
                    reverse, kp);
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

/* Steps i0 .. i1-1 of the run (step s = i, or T-1-i when reverse) for rows r0 .. r1-1: the
 * entry point (see the top of this file); only where lnn_rec_rows_available(). A range's
 * steps in order, in one call or several, give the same bits.
 * kp: the packed rows per block (1 + F + U, GRU one more); cn: the c slots (2 alternate);
 * gates: (T, B, 4U) or NULL, for training: each step's activated gates (LSTM [i, f, g, o],
 * GRU [z, r, n, a_n], as the step kernels save them; not for SimpleRNN). */
static void lnn_rec_rows_steps_f32(int cell, const float *x, const float *wp, float *h, float *c,
                                   const float *mask, float *gates, ptrdiff_t b, ptrdiff_t kx,
                                   ptrdiff_t u, ptrdiff_t t, ptrdiff_t hn, ptrdiff_t cn,
                                   ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t i0, ptrdiff_t i1,
                                   int reverse, ptrdiff_t kp)
{
#if LNN_RR_AVX2
    if (cell == 0)
        lnn_rr_lstm_avx2(x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, i0, i1, reverse,
                         kp);
    else if (cell == 1)
        lnn_rr_gru_avx2(x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, i0, i1, reverse,
                        kp);
    else
        lnn_rr_rnn_avx2(x, wp, h, c, mask, NULL, b, kx, u, t, hn, cn, r0, r1, i0, i1, reverse,
                        kp);
#else
    (void)cell, (void)x, (void)wp, (void)h, (void)c, (void)mask, (void)gates, (void)b, (void)kx;
    (void)u, (void)t, (void)hn, (void)cn, (void)r0, (void)r1, (void)i0, (void)i1, (void)reverse;
    (void)kp;
#endif
}

/* All T steps for rows r0 .. r1-1 */
static void lnn_rec_rows_fwd_f32(int cell, const float *x, const float *wp, float *h, float *c,
                                 const float *mask, float *gates, ptrdiff_t b, ptrdiff_t kx,
                                 ptrdiff_t u, ptrdiff_t t, ptrdiff_t hn, ptrdiff_t cn,
                                 ptrdiff_t r0, ptrdiff_t r1, int reverse, ptrdiff_t kp)
{
    lnn_rec_rows_steps_f32(cell, x, wp, h, c, mask, gates, b, kx, u, t, hn, cn, r0, r1, 0, t,
                           reverse, kp);
}

#endif /* LNN_RECURRENT_ROWS_H */
