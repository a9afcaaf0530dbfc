/* sparse.h -- y = act(x @ W + bias) for a pruned W (K, N), float32, stored as CSR over the
 * output columns (the CSR of W.T):
 *     column n holds rows indices[indptr[n] : indptr[n+1]] with values values[...]
 *     y[b, n] = act(sum_j values[j] * x[b, indices[j]] + bias[n])
 *
 * Included (header-only) by kernels/sparse.pyx -> lepton_nn.kernels._sparse; the wrapper
 * validates everything (indices in [0, K), indptr non-decreasing) before any C runs.
 *
 * Two kernels per ISA (AVX-512, AVX2+FMA, portable C):
 *   rows  (batch 1): per row b and column n, a dot product reading x[b, indices] into 8
 *         independent scalar FMA chains (one chain would be latency bound; on Zen 4 this beats
 *         vgatherdps, which stays available as sp_rows_variant = 0).
 *   batch (batch >= sp_batch_min): x is transposed per tile of 64 rows into xt (K, 64), then
 *         per column n the batch is innermost: y[:, n] += v * xt[k, :] is 4 zmm FMAs per
 *         nonzero, with no gather; results go through a 16-column buffer back to (B, N).
 */
#ifndef LEPTON_SPARSE_H
#define LEPTON_SPARSE_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "simd_act.h"

#define SP_PORTABLE 0
#define SP_AVX2 1
#define SP_AVX512 2
#define SP_NISA 3
#define SP_BT 64 /* batch tile of the batch kernel */

static int sp_cpu = 1 << SP_PORTABLE;
static int sp_active = SP_PORTABLE;
LA_UNUSED static int sp_rows_variant =
    1; /* 1: 8 scalar accumulators (default, fastest on Zen 4); 0: gathers */

typedef struct {
    const float *x; /* (B, K) */
    int64_t B, K, N;
    const int32_t *indptr; /* (N + 1,) */
    const int32_t *idx;    /* (nnz,) row of W of each nonzero */
    const float *val;      /* (nnz,) */
    const float *bias;     /* (N,) or NULL */
    int act;
    float *out; /* (B, N) */
} sp_args;

/* ------------------------------------------------------------------ shared tile helpers */

/* xt[k, b] = x[b0 + b, k] for b < w, 0 for w <= b < ld   (xt = x[b0 : b0 + w].T, padded;
 * ld, the row stride of xt, is w rounded up to 16) */
static void sp_transpose_in(const sp_args *p, int64_t b0, int64_t w, int64_t ld, float *xt) {
    const int64_t K = p->K;
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
        const int64_t k1 = k0 + 16 < K ? k0 + 16 : K;
        for (int64_t b = 0; b < ld; b++) {
            if (b < w) {
                const float *xr = p->x + (b0 + b) * K;
                for (int64_t k = k0; k < k1; k++) xt[k * ld + b] = xr[k];
            } else {
                for (int64_t k = k0; k < k1; k++) xt[k * ld + b] = 0.0f;
            }
        }
    }
}

/* out[b0 + b, n0 + c] = ybuf[c, b] for b < w, c < nc   (out[b0:, n0:] = ybuf.T), ybuf (16, ld) */
static void sp_transpose_out(const sp_args *p, int64_t b0, int64_t w, int64_t n0, int64_t nc,
                             const float *ybuf, int64_t ld) {
    for (int64_t b = 0; b < w; b++) {
        float *o = p->out + (b0 + b) * p->N + n0;
        for (int64_t c = 0; c < nc; c++) o[c] = ybuf[c * ld + b];
    }
}

/* ------------------------------------------------------------------ portable C */

static void sp_rows_portable(const sp_args *p) {
    for (int64_t b = 0; b < p->B; b++) {
        const float *x = p->x + b * p->K;
        float *y = p->out + b * p->N;
        for (int64_t n = 0; n < p->N; n++) {
            /* y[n] = values[s:e] @ x[indices[s:e]], four partial sums */
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
            int64_t j = p->indptr[n];
            const int64_t e = p->indptr[n + 1];
            for (; j + 4 <= e; j += 4) {
                s0 += p->val[j] * x[p->idx[j]];
                s1 += p->val[j + 1] * x[p->idx[j + 1]];
                s2 += p->val[j + 2] * x[p->idx[j + 2]];
                s3 += p->val[j + 3] * x[p->idx[j + 3]];
            }
            for (; j < e; j++) s0 += p->val[j] * x[p->idx[j]];
            y[n] = (s0 + s1) + (s2 + s3);
        }
        la_bias_act_row_scalar(y, p->bias, p->N, p->act); /* y = act(y + bias) */
    }
}

static void sp_batch_portable(const sp_args *p, float *xt, float *ybuf) {
    for (int64_t b0 = 0; b0 < p->B; b0 += SP_BT) {
        const int64_t w = p->B - b0 < SP_BT ? p->B - b0 : SP_BT, ld = (w + 15) & ~(int64_t)15;
        sp_transpose_in(p, b0, w, ld, xt);
        for (int64_t n0 = 0; n0 < p->N; n0 += 16) {
            const int64_t nc = p->N - n0 < 16 ? p->N - n0 : 16;
            for (int64_t c = 0; c < nc; c++) {
                /* y[b0:b0+w, n] = xt[indices[s:e]].T @ values[s:e] */
                float acc[SP_BT] = {0};
                const int64_t n = n0 + c;
                for (int64_t j = p->indptr[n]; j < p->indptr[n + 1]; j++) {
                    const float v = p->val[j], *xr = xt + (int64_t)p->idx[j] * ld;
                    for (int64_t b = 0; b < ld; b++) acc[b] += v * xr[b];
                }
                const float bn = p->bias ? p->bias[n] : 0.0f;
                for (int64_t b = 0; b < w; b++) ybuf[c * ld + b] = la_act1(acc[b] + bn, p->act);
            }
            sp_transpose_out(p, b0, w, n0, nc, ybuf, ld);
        }
    }
}

#if LA_X86
/* ------------------------------------------------------------------ AVX-512 */
__attribute__((target("avx512f"))) static void sp_rows_avx512(const sp_args *p) {
    for (int64_t b = 0; b < p->B; b++) {
        const float *x = p->x + b * p->K;
        float *y = p->out + b * p->N;
        for (int64_t n = 0; n < p->N; n++) {
            /* y[n] = values[s:e] @ x[indices[s:e]]: 16-wide gathers, two accumulators */
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            int64_t j = p->indptr[n];
            const int64_t e = p->indptr[n + 1];
            for (; j + 32 <= e; j += 32) {
                const __m512i i0 = _mm512_loadu_si512(p->idx + j);
                const __m512i i1 = _mm512_loadu_si512(p->idx + j + 16);
                a0 =
                    _mm512_fmadd_ps(_mm512_loadu_ps(p->val + j), _mm512_i32gather_ps(i0, x, 4), a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(p->val + j + 16),
                                     _mm512_i32gather_ps(i1, x, 4), a1);
            }
            for (; j < e; j += 16) {
                const __mmask16 k =
                    e - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (e - j)) - 1u);
                const __m512i i0 = _mm512_maskz_loadu_epi32(k, p->idx + j);
                const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, i0, x, 4);
                a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, p->val + j), g, a0);
            }
            y[n] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        }
        la_bias_act_row512(y, p->bias, p->N, p->act); /* y = act(y + bias) */
    }
}

/* y[:, n] for one column over a 16 NA-row batch tile; NA is constant after inlining. Narrow
 * tiles interleave 4 / NA chains over the nonzeros so 4 FMAs are always in flight. */
static inline __attribute__((target("avx512f"), always_inline)) void
sp_col512(const sp_args *p, int64_t n, const float *xt, float *yrow, const int NA) {
    const int C = 4 / NA;
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int c = 0; c < C; c++)
#pragma GCC unroll 4
        for (int i = 0; i < NA; i++) acc[c][i] = _mm512_setzero_ps();
    /* y[b, n] += values[j] * xt[indices[j], b]   for b in the tile (batch innermost) */
    int64_t j = p->indptr[n];
    const int64_t e = p->indptr[n + 1];
    for (; j + C <= e; j += C) {
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const __m512 v = _mm512_set1_ps(p->val[j + c]);
            const float *xr = xt + (int64_t)p->idx[j + c] * (16 * NA);
#pragma GCC unroll 4
            for (int i = 0; i < NA; i++)
                acc[c][i] = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 16 * i), acc[c][i]);
        }
    }
    for (; j < e; j++) {
        const __m512 v = _mm512_set1_ps(p->val[j]);
        const float *xr = xt + (int64_t)p->idx[j] * (16 * NA);
#pragma GCC unroll 4
        for (int i = 0; i < NA; i++)
            acc[0][i] = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 16 * i), acc[0][i]);
    }
#pragma GCC unroll 4
    for (int c = 1; c < C; c++)
#pragma GCC unroll 4
        for (int i = 0; i < NA; i++) acc[0][i] = _mm512_add_ps(acc[0][i], acc[c][i]);
    const __m512 bn = _mm512_set1_ps(p->bias ? p->bias[n] : 0.0f);
#pragma GCC unroll 4
    for (int i = 0; i < NA; i++)
        _mm512_storeu_ps(yrow + 16 * i, la_act512(_mm512_add_ps(acc[0][i], bn), p->act));
}

__attribute__((target("avx512f"))) static void sp_batch_avx512(const sp_args *p, float *xt,
                                                               float *ybuf) {
    for (int64_t b0 = 0; b0 < p->B; b0 += SP_BT) {
        const int64_t w = p->B - b0 < SP_BT ? p->B - b0 : SP_BT;
        const int na = (int)((w + 15) / 16);
        const int64_t ld = 16 * na;
        sp_transpose_in(p, b0, w, ld, xt);
        for (int64_t n0 = 0; n0 < p->N; n0 += 16) {
            const int64_t nc = p->N - n0 < 16 ? p->N - n0 : 16;
            for (int64_t c = 0; c < nc; c++) {
                switch (na) {
                case 1: sp_col512(p, n0 + c, xt, ybuf + c * ld, 1); break;
                case 2: sp_col512(p, n0 + c, xt, ybuf + c * ld, 2); break;
                case 3: sp_col512(p, n0 + c, xt, ybuf + c * ld, 3); break;
                default: sp_col512(p, n0 + c, xt, ybuf + c * ld, 4); break;
                }
            }
            sp_transpose_out(p, b0, w, n0, nc, ybuf, ld);
        }
    }
}

/* y[n] = values[s:e] @ x[indices[s:e]] with 8 scalar accumulators (no gather instruction) */
__attribute__((target("avx2,fma"))) static void sp_rows_scalar8(const sp_args *p) {
    const int32_t *idx = p->idx;
    const float *val = p->val;
    for (int64_t b = 0; b < p->B; b++) {
        const float *x = p->x + b * p->K;
        float *y = p->out + b * p->N;
        for (int64_t n = 0; n < p->N; n++) {
            float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int64_t j = p->indptr[n];
            const int64_t e = p->indptr[n + 1];
            for (; j + 8 <= e; j += 8) {
#pragma GCC unroll 8
                for (int c = 0; c < 8; c++) s[c] = fmaf(val[j + c], x[idx[j + c]], s[c]);
            }
            for (; j < e; j++) s[0] = fmaf(val[j], x[idx[j]], s[0]);
            y[n] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        }
        if (sp_active == SP_AVX512)
            la_bias_act_row512(y, p->bias, p->N, p->act);
        else
            la_bias_act_row256(y, p->bias, p->N, p->act);
    }
}

/* ------------------------------------------------------------------ AVX2 + FMA */
__attribute__((target("avx2,fma"))) static void sp_rows_avx2(const sp_args *p) {
    for (int64_t b = 0; b < p->B; b++) {
        const float *x = p->x + b * p->K;
        float *y = p->out + b * p->N;
        for (int64_t n = 0; n < p->N; n++) {
            /* y[n] = values[s:e] @ x[indices[s:e]]: 8-wide gathers, two accumulators */
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            int64_t j = p->indptr[n];
            const int64_t e = p->indptr[n + 1];
            for (; j + 16 <= e; j += 16) {
                const __m256i i0 = _mm256_loadu_si256((const __m256i *)(p->idx + j));
                const __m256i i1 = _mm256_loadu_si256((const __m256i *)(p->idx + j + 8));
                a0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(p->val + j), _mm256_i32gather_ps(x, i0, 4), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p->val + j + 8), _mm256_i32gather_ps(x, i1, 4),
                                     a1);
            }
            float s = 0.0f;
            for (; j < e; j++) s += p->val[j] * x[p->idx[j]];
            __m256 a = _mm256_add_ps(a0, a1);
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            h = _mm_add_ss(h, _mm_movehdup_ps(h));
            y[n] = _mm_cvtss_f32(h) + s;
        }
        la_bias_act_row256(y, p->bias, p->N, p->act); /* y = act(y + bias) */
    }
}

static inline __attribute__((target("avx2,fma"), always_inline)) void
sp_col256(const sp_args *p, int64_t n, const float *xt, float *yrow, const int NA) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < NA; i++) acc[i] = _mm256_setzero_ps();
    /* y[b, n] += values[j] * xt[indices[j], b]   for b in the tile (batch innermost) */
    for (int64_t j = p->indptr[n]; j < p->indptr[n + 1]; j++) {
        const __m256 v = _mm256_set1_ps(p->val[j]);
        const float *xr = xt + (int64_t)p->idx[j] * (8 * NA);
#pragma GCC unroll 8
        for (int i = 0; i < NA; i++)
            acc[i] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8 * i), acc[i]);
    }
    const __m256 bn = _mm256_set1_ps(p->bias ? p->bias[n] : 0.0f);
#pragma GCC unroll 8
    for (int i = 0; i < NA; i++)
        _mm256_storeu_ps(yrow + 8 * i, la_act256(_mm256_add_ps(acc[i], bn), p->act));
}

__attribute__((target("avx2,fma"))) static void sp_batch_avx2(const sp_args *p, float *xt,
                                                              float *ybuf) {
    for (int64_t b0 = 0; b0 < p->B; b0 += SP_BT) {
        const int64_t w = p->B - b0 < SP_BT ? p->B - b0 : SP_BT;
        const int na = (int)((w + 15) / 16);
        const int64_t ld = 16 * na;
        sp_transpose_in(p, b0, w, ld, xt);
        for (int64_t n0 = 0; n0 < p->N; n0 += 16) {
            const int64_t nc = p->N - n0 < 16 ? p->N - n0 : 16;
            for (int64_t c = 0; c < nc; c++) {
                switch (na) {
                case 1: sp_col256(p, n0 + c, xt, ybuf + c * ld, 2); break;
                case 2: sp_col256(p, n0 + c, xt, ybuf + c * ld, 4); break;
                case 3: sp_col256(p, n0 + c, xt, ybuf + c * ld, 6); break;
                default: sp_col256(p, n0 + c, xt, ybuf + c * ld, 8); break;
                }
            }
            sp_transpose_out(p, b0, w, n0, nc, ybuf, ld);
        }
    }
}
#endif /* LA_X86 */

/* ------------------------------------------------------------------ dispatch */
static int64_t sp_batch_min = 2; /* batch size from which the batch kernel is used (measured) */

#if defined(_MSC_VER)
#define SP_TLS __declspec(thread)
#else
#define SP_TLS _Thread_local
#endif
#define SP_CACHE_MAX ((size_t)16 << 20) /* larger scratch buffers are freed after the call */
static SP_TLS float *sp_tls_buf = NULL;
static SP_TLS size_t sp_tls_cap = 0;

/* `need` bytes of scratch from a per-thread cache (*cache of *cap bytes; it spares a mmap and
 * page faults per call): the cache itself when large enough, else a new buffer, kept as the
 * cache when at most SP_CACHE_MAX (the caller frees one that is not: buf != *cache). NULL when
 * the allocation fails. */
static float *sp_scratch(float **cache, size_t *cap, size_t need) {
    if (need <= *cap) return *cache;
    float *buf = (float *)lnn_malloc(need);
    if (buf && need <= SP_CACHE_MAX) {
        free(*cache);
        *cache = buf;
        *cap = need;
    }
    return buf;
}

static int sp_init(void) {
    int mask = 1 << SP_PORTABLE;
#if LA_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        mask |= 1 << SP_AVX2;
        if (__builtin_cpu_supports("avx512f")) mask |= 1 << SP_AVX512;
    }
#endif
    sp_cpu = mask;
    sp_active =
        mask & (1 << SP_AVX512) ? SP_AVX512 : (mask & (1 << SP_AVX2) ? SP_AVX2 : SP_PORTABLE);
    return mask;
}

static int sp_set_isa(int isa) {
    if (isa >= SP_NISA) isa = SP_NISA - 1;
    while (isa > 0 && !(sp_cpu & (1 << isa))) isa--;
    if (isa < 0) isa = 0;
    sp_active = isa;
    return isa;
}

/* Run y = act(x @ W + bias); kernel 0 auto (by batch size), 1 rows, 2 batch.
 * Returns 0, or -1 when the batch kernel's buffer cannot be allocated. */
static int sp_run(const sp_args *p, int kernel) {
    if (p->B == 0 || p->N == 0) return 0;
    if (kernel == 1 || (kernel == 0 && p->B < sp_batch_min)) {
#if LA_X86
        if (sp_active >= SP_AVX2 && sp_rows_variant == 1)
            sp_rows_scalar8(p);
        else if (sp_active == SP_AVX512)
            sp_rows_avx512(p);
        else if (sp_active == SP_AVX2)
            sp_rows_avx2(p);
        else
#endif
            sp_rows_portable(p);
        return 0;
    }
    /* xt (K, 64) and ybuf (16, 64) */
    const size_t need = (size_t)(p->K * SP_BT + 16 * SP_BT) * sizeof(float);
    float *buf = sp_scratch(&sp_tls_buf, &sp_tls_cap, need);
    if (!buf) return -1;
    float *xt = buf, *ybuf = buf + p->K * SP_BT;
#if LA_X86
    if (sp_active == SP_AVX512)
        sp_batch_avx512(p, xt, ybuf);
    else if (sp_active == SP_AVX2)
        sp_batch_avx2(p, xt, ybuf);
    else
#endif
        sp_batch_portable(p, xt, ybuf);
    if (buf != sp_tls_buf) free(buf);
    return 0;
}

/* max over (uint32) idx[0:nnz] -- negative indices become huge, so one bound check covers both */
static uint32_t sp_umax_scalar(const int32_t *idx, int64_t nnz) {
    uint32_t m = 0;
    for (int64_t j = 0; j < nnz; j++) m = (uint32_t)idx[j] > m ? (uint32_t)idx[j] : m;
    return m;
}

#if LA_X86
__attribute__((target("avx2"))) static uint32_t sp_umax_avx2(const int32_t *idx, int64_t nnz) {
    __m256i m0 = _mm256_setzero_si256(), m1 = _mm256_setzero_si256();
    int64_t j = 0;
    for (; j + 16 <= nnz; j += 16) {
        m0 = _mm256_max_epu32(m0, _mm256_loadu_si256((const __m256i *)(idx + j)));
        m1 = _mm256_max_epu32(m1, _mm256_loadu_si256((const __m256i *)(idx + j + 8)));
    }
    uint32_t buf[8], m = sp_umax_scalar(idx + j, nnz - j);
    _mm256_storeu_si256((__m256i *)buf, _mm256_max_epu32(m0, m1));
    for (int i = 0; i < 8; i++) m = buf[i] > m ? buf[i] : m;
    return m;
}
#endif

/* 1 when indptr (n + 1,) starts at 0, never decreases and ends at nnz, and every index lies in
 * [0, K); 0 otherwise. O(nnz), vectorized. */
static int sp_check(const int32_t *indptr, int64_t n, const int32_t *idx, int64_t nnz, int64_t K) {
    if (indptr[0] != 0 || indptr[n] != nnz) return 0;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= indptr[i + 1] < indptr[i];
    if (bad || nnz == 0) return !bad;
#if LA_X86
    const uint32_t m = sp_cpu & (1 << SP_AVX2) ? sp_umax_avx2(idx, nnz) : sp_umax_scalar(idx, nnz);
#else
    const uint32_t m = sp_umax_scalar(idx, nnz);
#endif
    return (int64_t)m < K;
}

#endif /* LEPTON_SPARSE_H */
