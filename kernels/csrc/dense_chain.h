/* dense_chain.h: a chain of Dense layers at a small batch in one call, float32, each weight
 * read once per row in its own (K, N) layout (no transposed copy kept):
 *
 *     h = x;  for each layer l:  h = f_l(h @ W_l + b_l)          (m, N_l)
 *
 * The spec is ReferenceBackend.dense_chain_forward (lepton_nn/backend/reference.py). At batch
 * 1 a Dense layer is a matrix-vector product bound by the reads of W: one Python call and one
 * BLAS gemv per layer (plus the bias/activation pass) cost more than the arithmetic. Here
 * y += x[k0:k0+8] @ W[k0:k0+8] runs over y (in L1) 8 columns at a time, the 8 rows of W read
 * side by side from start to end (the hardware prefetchers follow 8 sequential streams; an
 * earlier version holding 96 columns of y in registers over 16 rows was 1.5x slower on the
 * 784x512 layer, its reads hopping between 16 rows). Two accumulators per 8 columns. Columns
 * past the last multiple of 8 run in plain C.
 */
#ifndef LNN_DENSE_CHAIN_H
#define LNN_DENSE_CHAIN_H

#include <stddef.h>
#include <string.h>

#include "dense.h" /* lnn_bias_act_forward_f32, LNN_* activation codes */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LEPTON_NO_SIMD)
#include <immintrin.h>
#define LNN_DC_AVX2 1
static int lnn_dc_have_avx2(void)
{
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return have;
}
#endif

#if LNN_DC_AVX2
/* y (n,) = x (k,) @ w (k, n), the columns below n - n % 8, 8 rows of w at a time read side by
 * side from start to end (y, in L1, loaded and stored once per 8 rows) */
__attribute__((target("avx2,fma"))) static void lnn_dc_axpy_avx2(const float *x, const float *w,
                                                               float *y, ptrdiff_t k,
                                                               ptrdiff_t n)
{
    const ptrdiff_t n8 = n / 8 * 8;
    ptrdiff_t k0 = 0;
    for (; k0 + 8 <= k; k0 += 8) {
        const float *r = w + k0 * n;
        __m256 a[8];
        for (int i = 0; i < 8; i++) a[i] = _mm256_broadcast_ss(x + k0 + i);
        for (ptrdiff_t j = 0; j < n8; j += 8) { /* y[j:j+8] += x[k0:k0+8] @ w[k0:k0+8, j:j+8] */
            __m256 acc = k0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(y + j);
            __m256 acc2 = _mm256_mul_ps(a[1], _mm256_loadu_ps(r + n + j));
            acc = _mm256_fmadd_ps(a[0], _mm256_loadu_ps(r + j), acc);
            acc2 = _mm256_fmadd_ps(a[3], _mm256_loadu_ps(r + 3 * n + j), acc2);
            acc = _mm256_fmadd_ps(a[2], _mm256_loadu_ps(r + 2 * n + j), acc);
            acc2 = _mm256_fmadd_ps(a[5], _mm256_loadu_ps(r + 5 * n + j), acc2);
            acc = _mm256_fmadd_ps(a[4], _mm256_loadu_ps(r + 4 * n + j), acc);
            acc2 = _mm256_fmadd_ps(a[7], _mm256_loadu_ps(r + 7 * n + j), acc2);
            acc = _mm256_fmadd_ps(a[6], _mm256_loadu_ps(r + 6 * n + j), acc);
            _mm256_storeu_ps(y + j, _mm256_add_ps(acc, acc2));
        }
    }
    for (; k0 < k; k0++) { /* the last rows one at a time */
        const __m256 a = _mm256_broadcast_ss(x + k0);
        const float *r = w + k0 * n;
        for (ptrdiff_t j = 0; j < n8; j += 8) {
            const __m256 acc = k0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(y + j);
            _mm256_storeu_ps(y + j, _mm256_fmadd_ps(a, _mm256_loadu_ps(r + j), acc));
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
        lnn_dc_axpy_avx2(x, w, y, k, n);
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
