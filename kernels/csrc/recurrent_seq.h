/* recurrent_seq.h: a recurrent layer's forward over a run of time steps in one call, for the
 * inference runtime (lepton_nn/runtime/steps.py, RecurrentStep). Its NumPy twin is
 * ReferenceBackend.recurrent_sequence_forward (lepton_nn/backend/reference.py):
 *
 *   for s in steps c0 .. c1-1 (c1-1 .. c0 when reverse):
 *       p, q = s + r, s + 1 - r                   # r = reverse: the states before / after s
 *       hz = h[p % H] @ W_hh                      # (B, G U): BLAS sgemm, or a C loop for B < 4
 *       <cell>_step_forward(xz[s - c0], hz, ...)  # the per-step kernels of recurrent.h
 *
 * so a layer at batch 1 costs one Python call per chunk of steps instead of two per step.
 * h: H state slots (H, B, U) (H = T + 1 keeps every state, 2 alternates); c: 2 slots (LSTM);
 * xz: (c1 - c0, B, G U), the chunk's input product with its bias; mask: (T, B) or NULL.
 * Cells: 0 LSTM (G = 4), 1 GRU (G = 3, bhh may be NULL), 2 SimpleRNN (G = 1).
 * The GEMM is NumPy's OpenBLAS cblas_?gemm found by address (set by lnn_rec_set_gemm, checked
 * by the caller); without one, or for B < LNN_REC_GEMM_MIN_ROWS, a C loop computes
 * hz[i, :] = sum_k h[i, k] W_hh[k, :] (rows of W_hh streamed, hz row kept in cache).
 */
#ifndef LNN_RECURRENT_SEQ_TEMPLATE

#ifndef LNN_RECURRENT_SEQ_H
#define LNN_RECURRENT_SEQ_H

#include <stddef.h>
#include <stdint.h>

#include "recurrent.h"

#define LNN_REC_GEMM_MIN_ROWS 4

static void *lnn_rec_sgemm = NULL, *lnn_rec_dgemm = NULL;
static int lnn_rec_ilp64 = 0;

static void lnn_rec_set_gemm(void *sgemm, void *dgemm, int ilp64)
{
    lnn_rec_sgemm = sgemm;
    lnn_rec_dgemm = dgemm;
    lnn_rec_ilp64 = ilp64;
}

#define T float
#define LNN_RNAME(name) name##_f32
#define LNN_REC_GEMM lnn_rec_sgemm
#define LNN_RECURRENT_SEQ_TEMPLATE
#include "recurrent_seq.h"
#undef LNN_RECURRENT_SEQ_TEMPLATE
#undef T
#undef LNN_RNAME
#undef LNN_REC_GEMM

#define T double
#define LNN_RNAME(name) name##_f64
#define LNN_REC_GEMM lnn_rec_dgemm
#define LNN_RECURRENT_SEQ_TEMPLATE
#include "recurrent_seq.h"
#undef LNN_RECURRENT_SEQ_TEMPLATE
#undef T
#undef LNN_RNAME
#undef LNN_REC_GEMM

#endif /* LNN_RECURRENT_SEQ_H */

#else /* template part: T, LNN_RNAME, LNN_REC_GEMM */

typedef void (*LNN_RNAME(lnn_rec_gemm64_t))(int, int, int, int64_t, int64_t, int64_t, T,
                                            const T *, int64_t, const T *, int64_t, T, T *,
                                            int64_t);
typedef void (*LNN_RNAME(lnn_rec_gemm32_t))(int, int, int, int32_t, int32_t, int32_t, T,
                                            const T *, int32_t, const T *, int32_t, T, T *,
                                            int32_t);

/* hz (b, n) = h (b, k) @ w (k, n), all row-major and contiguous.
 * NumPy: np.matmul(h, w_hh, hz) */
static LNN_REC_CLONES void LNN_RNAME(lnn_rec_hz)(const T *LNN_REC_RESTRICT h,
                                                 const T *LNN_REC_RESTRICT w,
                                                 T *LNN_REC_RESTRICT hz, ptrdiff_t b,
                                                 ptrdiff_t k, ptrdiff_t n)
{
    if (LNN_REC_GEMM != NULL && b >= LNN_REC_GEMM_MIN_ROWS) {
        if (lnn_rec_ilp64)
            ((LNN_RNAME(lnn_rec_gemm64_t))LNN_REC_GEMM)(101, 111, 111, b, n, k, (T)1, h, k, w, n,
                                                       (T)0, hz, n);
        else
            ((LNN_RNAME(lnn_rec_gemm32_t))LNN_REC_GEMM)(101, 111, 111, (int32_t)b, (int32_t)n,
                                                       (int32_t)k, (T)1, h, (int32_t)k, w,
                                                       (int32_t)n, (T)0, hz, (int32_t)n);
        return;
    }
    enum { NB = 256 / sizeof(T) }; /* a block of hz's row: 8 AVX2 registers */
    for (ptrdiff_t i = 0; i < b; i++) {
        T *LNN_REC_RESTRICT out = hz + i * n;
        const T *hi = h + i * k;
        ptrdiff_t j0 = 0;
        for (; j0 + NB <= n; j0 += NB) { /* out[j0:j0+NB] = sum_kk h[i, kk] w[kk, j0:j0+NB] */
#if defined(__GNUC__) /* 8 vector accumulators, so they stay in registers */
            typedef T V __attribute__((vector_size(32)));
            enum { L = 32 / sizeof(T) };
            V acc[8];
            for (int r = 0; r < 8; r++)
                acc[r] = (V){0};
            for (ptrdiff_t kk = 0; kk < k; kk++) {
                const V a = (V){0} + hi[kk];
                const T *wr = w + kk * n + j0;
                for (int r = 0; r < 8; r++) {
                    V wv;
                    memcpy(&wv, wr + r * L, sizeof(V));
                    acc[r] += a * wv;
                }
            }
            memcpy(out + j0, acc, sizeof(acc));
#else
            for (int j = 0; j < NB; j++)
                out[j0 + j] = 0;
            for (ptrdiff_t kk = 0; kk < k; kk++)
                for (int j = 0; j < NB; j++)
                    out[j0 + j] += hi[kk] * w[kk * n + j0 + j];
#endif
        }
        for (ptrdiff_t j = j0; j < n; j++) /* the columns left (fewer than NB): out += h[i, kk] w[kk, j0:] */
            out[j] = 0;
        for (ptrdiff_t kk = 0; kk < k && j0 < n; kk++) {
            const T a = hi[kk];
            for (ptrdiff_t j = j0; j < n; j++)
                out[j] += a * w[kk * n + j];
        }
    }
}

/* Steps c0 .. c1-1 of one direction (see the top of this file). */
static void LNN_RNAME(lnn_rec_seq_fwd)(int cell, const T *xz, const T *w_hh, const T *bhh, T *h,
                                       T *c, const T *mask, T *gates, T *hz, ptrdiff_t b,
                                       ptrdiff_t u, ptrdiff_t c0, ptrdiff_t c1, int reverse,
                                       ptrdiff_t hn)
{
    const ptrdiff_t g = cell == 0 ? 4 : (cell == 1 ? 3 : 1), bu = b * u, r = reverse ? 1 : 0;
    for (ptrdiff_t i = 0; i < c1 - c0; i++) {
        const ptrdiff_t s = reverse ? c1 - 1 - i : c0 + i, p = s + r, q = s + 1 - r;
        const T *hp = h + (p % hn) * bu;
        T *hq = h + (q % hn) * bu;
        const T *m = mask == NULL ? NULL : mask + s * b; /* mask[s] */
        const T *xs = xz + (s - c0) * b * g * u;        /* xz[s - c0] */
        LNN_RNAME(lnn_rec_hz)(hp, w_hh, hz, b, u, g * u); /* np.matmul(hp, w_hh, hz) */
        if (cell == 0) /* lstm_step_forward(xs, hz, cp, hp, m, gates, cq, hq) */
            LNN_RNAME(lnn_lstm_fwd)(xs, hz, c + (p % 2) * bu, hp, m, gates, c + (q % 2) * bu, hq,
                                    b, u);
        else if (cell == 1) /* gru_step_forward(xs, hz, bhh, hp, m, gates, hq) */
            LNN_RNAME(lnn_gru_fwd)(xs, hz, bhh, hp, m, gates, hq, b, u);
        else /* rnn_step_forward(xs, hz, hp, m, hq) */
            LNN_RNAME(lnn_rnn_fwd)(xs, hz, hp, m, hq, b, u);
    }
}

#endif /* LNN_RECURRENT_SEQ_TEMPLATE */
