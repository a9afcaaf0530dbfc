/* dense_chain.h: a chain of Dense layers at a small batch in one call, float32, each weight
 * read once per row in its own (K, N) layout (no transposed copy kept):
 *
 *     h = x;  for each layer l:  h = f_l(h @ W_l + b_l)          (m, N_l)
 *
 * The spec is ReferenceBackend.dense_chain_forward (lepton_nn/backend/reference.py). At batch
 * 1 a Dense layer is a matrix-vector product bound by the reads of W: one Python call and one
 * BLAS gemv per layer (plus the bias/activation pass) cost more than the arithmetic. Here a
 * row's y[j0 : j0 + 96] is held in 12 AVX2 accumulators while 16 rows of W are streamed
 * through them (y[j] += x[k] W[k, j]), the next 16 rows starting from y again: W is read in
 * row order, 16 rows (64 KiB of a 512-wide layer) at a time, the accumulators touch memory
 * once per 16 multiply-adds. Columns past the last multiple of 8 run in plain C.
 */
#ifndef LNN_DENSE_CHAIN_H
#define LNN_DENSE_CHAIN_H

#include <stddef.h>
#include <string.h>

#include "dense.h" /* lnn_bias_act_forward_f32, LNN_* activation codes */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#define LNN_DC_AVX2 1
static int lnn_dc_have_avx2(void)
{
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return have;
}
#endif

enum { LNN_DC_KC = 16, LNN_DC_NV = 12 };

#if LNN_DC_AVX2
/* y[j0 : j0 + 8 nv] (+)= x[k0 : k0 + kc] @ w[k0 : k0 + kc, j0 : ...]; nv a constant in each
 * inlined copy; first: start from 0 rather than from y */
static inline __attribute__((always_inline, target("avx2,fma"))) void
lnn_dc_block(const float *x, const float *w, float *y, ptrdiff_t n, ptrdiff_t kc, const int nv,
             int first)
{
    __m256 acc[LNN_DC_NV];
    for (int v = 0; v < nv; v++) acc[v] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(y + 8 * v);
    for (ptrdiff_t k = 0; k < kc; k++, w += n) {
        const __m256 a = _mm256_broadcast_ss(x + k);
        for (int v = 0; v < nv; v++) acc[v] = _mm256_fmadd_ps(a, _mm256_loadu_ps(w + 8 * v), acc[v]);
    }
    for (int v = 0; v < nv; v++) _mm256_storeu_ps(y + 8 * v, acc[v]);
}

/* y (n,) = x (k,) @ w (k, n), the columns below n - n % 8 */
__attribute__((target("avx2,fma"))) static void lnn_dc_gemv_avx2(const float *x, const float *w,
                                                               float *y, ptrdiff_t k,
                                                               ptrdiff_t n)
{
    const ptrdiff_t n8 = n / 8 * 8;
    for (ptrdiff_t k0 = 0; k0 < k; k0 += LNN_DC_KC) {
        const ptrdiff_t kc = k - k0 < LNN_DC_KC ? k - k0 : LNN_DC_KC;
        const float *wk = w + k0 * n;
        for (ptrdiff_t j0 = 0; j0 < n8; j0 += 8 * LNN_DC_NV) {
            const ptrdiff_t left = (n8 - j0) / 8;
            const int first = k0 == 0;
            switch (left >= LNN_DC_NV ? LNN_DC_NV : left) {
#define LNN_DC_CASE(V)                                                                           \
    case V:                                                                                      \
        lnn_dc_block(x + k0, wk + j0, y + j0, n, kc, V, first);                                  \
        break;
                LNN_DC_CASE(12)
                LNN_DC_CASE(11)
                LNN_DC_CASE(10)
                LNN_DC_CASE(9)
                LNN_DC_CASE(8)
                LNN_DC_CASE(7)
                LNN_DC_CASE(6)
                LNN_DC_CASE(5)
                LNN_DC_CASE(4)
                LNN_DC_CASE(3)
                LNN_DC_CASE(2)
                LNN_DC_CASE(1)
#undef LNN_DC_CASE
            default:
                break;
            }
        }
    }
}
#endif

/* y (n,) = x (k,) @ w (k, n) */
static void lnn_dc_gemv(const float *x, const float *w, float *y, ptrdiff_t k, ptrdiff_t n)
{
    ptrdiff_t j_c = 0; /* columns [j_c, n) run in plain C */
#if LNN_DC_AVX2
    if (lnn_dc_have_avx2()) {
        lnn_dc_gemv_avx2(x, w, y, k, n);
        j_c = n / 8 * 8;
    }
#endif
    for (ptrdiff_t j = j_c; j < n; j++) y[j] = 0;
    for (ptrdiff_t kk = 0; kk < k; kk++) { /* y[j_c:] += x[kk] w[kk, j_c:] */
        const float a = x[kk];
        const float *wr = w + kk * n;
        for (ptrdiff_t j = j_c; j < n; j++) y[j] += a * wr[j];
    }
}

/* The chain: layer l reads h (m, dims[l]) and writes outs[l] (m, dims[l + 1]) = f(h W + b),
 * h = x for the first layer and outs[l - 1] after. bias[l] may be NULL. */
static void lnn_dense_chain_f32(const float *x, ptrdiff_t m, ptrdiff_t layers,
                                const float *const *w, const float *const *bias, const int *act,
                                const ptrdiff_t *dims, float *const *outs)
{
    const float *h = x;
    for (ptrdiff_t l = 0; l < layers; l++) {
        const ptrdiff_t k = dims[l], n = dims[l + 1];
        for (ptrdiff_t r = 0; r < m; r++) /* outs[l][r] = h[r] @ W_l */
            lnn_dc_gemv(h + r * k, w[l], outs[l] + r * n, k, n);
        if (bias[l] != NULL || act[l] != LNN_IDENTITY) /* outs[l] = f(outs[l] + b) */
            lnn_bias_act_forward_f32(outs[l], bias[l], act[l], outs[l], m, n, 1);
        h = outs[l];
    }
}

#endif /* LNN_DENSE_CHAIN_H */
