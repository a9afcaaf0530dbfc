/* sparse_chain.h -- a run of sparse Dense layers in one call, split over the shared pool.
 *
 * Layer l: out_l = act_l(in_l @ W_l + bias_l), W_l (K_l, N_l) as the CSR of W_l^T (sparse.h),
 * in_0 = x (B, K_0), in_{l+1} = out_l; every out_l (B, N_l) is written. The call is one pool
 * job (lnn_parallel_phases), a layer a phase: the threads meet at a barrier between layers.
 *
 * Each layer's output columns are cut into tasks holding about the same number of nonzeros
 * (split[t] .. split[t+1], multiples of 16 but the last bound: the caller computes them);
 * a task writes only its own columns, each column summed by one thread in a fixed order, so
 * the results are bit for bit those of sparse_linear (sparse.h) at any thread count.
 *
 *   rows  (B < sp_batch_min): per row b and column n, the dot product of sp_rows_scalar8
 *         (its 8 FMA chains as the lanes of one ymm; portable C: sp_rows_portable's 4 sums). Indices are read as
 *         uint16 where K <= 65536 (idx16: 6 bytes a nonzero instead of 8), else int32.
 *   batch (B >= sp_batch_min): x is transposed once into xt (tile t of 64 rows: (K_0, ld)),
 *         a first phase of its own; then per layer, per (tile, task) the batch-innermost
 *         column kernel of sparse.h writes act(...) straight into the next layer's xt rows
 *         (the transposed output is the next layer's transposed input) and copies them out
 *         to out_l (B, N_l). xt ping-pongs between two buffers of tiles * maxdim * 64 floats.
 */
#ifndef LEPTON_SPARSE_CHAIN_H
#define LEPTON_SPARSE_CHAIN_H

#include "pool.h"
#include "sparse.h"

#define SPC_MAXL 16    /* layers of one chain */
#define SPC_KCHUNK 128 /* rows of xt a transpose task writes */

typedef struct {
    sp_args a;             /* x = in_l (B, K), out = out_l (B, N), idx int32, val, bias, act */
    const uint16_t *idx16; /* the indices as uint16 (K <= 65536), or NULL */
    const int32_t *split;  /* (tasks + 1,) column bounds */
    int64_t tasks;
} spc_layer;

typedef struct spc_chain spc_chain;

typedef struct {
    const spc_chain *ch;
    int l;
} spc_ctx;

struct spc_chain {
    int nl;
    int64_t B, tiles, stride; /* stride: floats per tile in xt (maxdim * SP_BT) */
    spc_layer L[SPC_MAXL];
    float *xt[2];
    spc_ctx ctx[SPC_MAXL];
};

/* ------------------------------------------------------------------ rows (small batches) */

/* y[n] = values[s:e] @ x[indices[s:e]] for n in [n0, n1): the sums of sp_rows_portable */
#define SPC_DOT_PORTABLE(NAME, ITYPE)                                                           \
    static void NAME(const sp_args *p, const ITYPE *idx, const float *x, float *y, int64_t n0,  \
                     int64_t n1) {                                                              \
        const float *val = p->val;                                                              \
        for (int64_t n = n0; n < n1; n++) {                                                     \
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;                                   \
            int64_t j = p->indptr[n];                                                           \
            const int64_t e = p->indptr[n + 1];                                                 \
            for (; j + 4 <= e; j += 4) {                                                        \
                s0 += val[j] * x[idx[j]];                                                       \
                s1 += val[j + 1] * x[idx[j + 1]];                                               \
                s2 += val[j + 2] * x[idx[j + 2]];                                               \
                s3 += val[j + 3] * x[idx[j + 3]];                                               \
            }                                                                                   \
            for (; j < e; j++) s0 += val[j] * x[idx[j]];                                        \
            y[n] = (s0 + s1) + (s2 + s3);                                                       \
        }                                                                                       \
    }
SPC_DOT_PORTABLE(spc_dot_portable32, int32_t)
SPC_DOT_PORTABLE(spc_dot_portable16, uint16_t)

#if LA_X86
/* The sums of sp_rows_scalar8 (s[c] takes nonzeros j + c, j + 8 + c, ...; then
 * ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))), with s in one ymm: per 8 nonzeros one
 * load of 8 values, 8 scalar loads of x put together (4 per xmm), one vector FMA, instead of
 * 8 loads of values, 8 of indices and 8 scalar FMAs. uint16 indices come 4 to a 64-bit load.
 * Same bits as the scalar loop (each lane is one of its chains). */
static inline __attribute__((target("avx2,fma"), always_inline)) float
spc_dot_tail(__m256 acc, const float *val, const float *x, int64_t j, int64_t e,
             const int32_t *i32, const uint16_t *i16) {
    float sv[8];
    _mm256_storeu_ps(sv, acc);
    for (; j < e; j++) sv[0] = fmaf(val[j], x[i16 ? (int64_t)i16[j] : (int64_t)i32[j]], sv[0]);
    return ((sv[0] + sv[1]) + (sv[2] + sv[3])) + ((sv[4] + sv[5]) + (sv[6] + sv[7]));
}

__attribute__((target("avx2,fma"))) static void spc_dot_fma16(const sp_args *p,
                                                              const uint16_t *idx,
                                                              const float *x, float *y,
                                                              int64_t n0, int64_t n1) {
    const float *val = p->val;
    for (int64_t n = n0; n < n1; n++) {
        __m256 acc = _mm256_setzero_ps();
        int64_t j = p->indptr[n];
        const int64_t e = p->indptr[n + 1];
        for (; j + 8 <= e; j += 8) {
            uint64_t q0, q1;
            memcpy(&q0, idx + j, 8);
            memcpy(&q1, idx + j + 4, 8);
            const __m128 lo = _mm_set_ps(x[q0 >> 48], x[(q0 >> 32) & 0xFFFF],
                                         x[(q0 >> 16) & 0xFFFF], x[q0 & 0xFFFF]);
            const __m128 hi = _mm_set_ps(x[q1 >> 48], x[(q1 >> 32) & 0xFFFF],
                                         x[(q1 >> 16) & 0xFFFF], x[q1 & 0xFFFF]);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(val + j), _mm256_set_m128(hi, lo), acc);
        }
        y[n] = spc_dot_tail(acc, val, x, j, e, NULL, idx);
    }
}

__attribute__((target("avx2,fma"))) static void spc_dot_fma32(const sp_args *p,
                                                              const int32_t *idx,
                                                              const float *x, float *y,
                                                              int64_t n0, int64_t n1) {
    const float *val = p->val;
    for (int64_t n = n0; n < n1; n++) {
        __m256 acc = _mm256_setzero_ps();
        int64_t j = p->indptr[n];
        const int64_t e = p->indptr[n + 1];
        for (; j + 8 <= e; j += 8) {
            const int32_t *ix = idx + j;
            const __m128 lo = _mm_set_ps(x[ix[3]], x[ix[2]], x[ix[1]], x[ix[0]]);
            const __m128 hi = _mm_set_ps(x[ix[7]], x[ix[6]], x[ix[5]], x[ix[4]]);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(val + j), _mm256_set_m128(hi, lo), acc);
        }
        y[n] = spc_dot_tail(acc, val, x, j, e, idx, NULL);
    }
}
#endif

/* out_l[b, n0:n1] for every row b: task t of layer l */
static int spc_rows_task(void *vc, ptrdiff_t t) {
    const spc_ctx *c = (const spc_ctx *)vc;
    const spc_layer *L = &c->ch->L[c->l];
    const sp_args *p = &L->a;
    const int64_t n0 = L->split[t], n1 = L->split[t + 1];
    if (n1 <= n0) return 0;
    for (int64_t b = 0; b < p->B; b++) {
        const float *x = p->x + b * p->K;
        float *y = p->out + b * p->N;
#if LA_X86
        if (sp_active >= SP_AVX2) {
            if (L->idx16)
                spc_dot_fma16(p, L->idx16, x, y, n0, n1);
            else
                spc_dot_fma32(p, p->idx, x, y, n0, n1);
            const float *bias = p->bias ? p->bias + n0 : NULL;
            if (sp_active == SP_AVX512)
                la_bias_act_row512(y + n0, bias, n1 - n0, p->act);
            else
                la_bias_act_row256(y + n0, bias, n1 - n0, p->act);
            continue;
        }
#endif
        if (L->idx16)
            spc_dot_portable16(p, L->idx16, x, y, n0, n1);
        else
            spc_dot_portable32(p, p->idx, x, y, n0, n1);
        la_bias_act_row_scalar(y + n0, p->bias ? p->bias + n0 : NULL, n1 - n0, p->act);
    }
    return 0;
}

/* ------------------------------------------------------------------ batch (larger batches) */

static inline int64_t spc_tile_w(const spc_chain *ch, int64_t tile) {
    const int64_t b0 = tile * SP_BT;
    return ch->B - b0 < SP_BT ? ch->B - b0 : SP_BT;
}

/* xt[0] tile t, rows k0 .. k0 + SPC_KCHUNK: x[b0:b0+w, k].T, zero padded to ld lanes */
static int spc_transpose_task(void *vc, ptrdiff_t task) {
    const spc_ctx *c = (const spc_ctx *)vc;
    const spc_chain *ch = c->ch;
    const sp_args *p = &ch->L[0].a;
    const int64_t kchunks = (p->K + SPC_KCHUNK - 1) / SPC_KCHUNK;
    const int64_t tile = task / kchunks, k0 = (task % kchunks) * SPC_KCHUNK;
    const int64_t k1 = k0 + SPC_KCHUNK < p->K ? k0 + SPC_KCHUNK : p->K;
    const int64_t w = spc_tile_w(ch, tile), ld = (w + 15) & ~(int64_t)15, b0 = tile * SP_BT;
    float *xt = ch->xt[0] + tile * ch->stride;
    for (int64_t b = 0; b < ld; b++) {
        if (b < w) {
            const float *xr = p->x + (b0 + b) * p->K;
            for (int64_t k = k0; k < k1; k++) xt[k * ld + b] = xr[k];
        } else {
            for (int64_t k = k0; k < k1; k++) xt[k * ld + b] = 0.0f;
        }
    }
    return 0;
}

/* y[:, n] of layer l over one tile (ld lanes) into yrow: the column kernels of sparse.h */
static void spc_col_portable(const sp_args *p, int64_t n, const float *xt, float *yrow,
                             int64_t ld) {
    float acc[SP_BT] = {0}; /* the sums of sp_batch_portable */
    for (int64_t j = p->indptr[n]; j < p->indptr[n + 1]; j++) {
        const float v = p->val[j], *xr = xt + (int64_t)p->idx[j] * ld;
        for (int64_t b = 0; b < ld; b++) acc[b] += v * xr[b];
    }
    const float bn = p->bias ? p->bias[n] : 0.0f;
    for (int64_t b = 0; b < ld; b++) yrow[b] = la_act1(acc[b] + bn, p->act);
}

#if LA_X86
__attribute__((target("avx512f"))) static void spc_col_avx512(const sp_args *p, int64_t n,
                                                              const float *xt, float *yrow,
                                                              int na) {
    switch (na) {
    case 1: sp_col512(p, n, xt, yrow, 1); break;
    case 2: sp_col512(p, n, xt, yrow, 2); break;
    case 3: sp_col512(p, n, xt, yrow, 3); break;
    default: sp_col512(p, n, xt, yrow, 4); break;
    }
}

__attribute__((target("avx2,fma"))) static void spc_col_avx2(const sp_args *p, int64_t n,
                                                             const float *xt, float *yrow,
                                                             int na) {
    switch (na) {
    case 1: sp_col256(p, n, xt, yrow, 2); break;
    case 2: sp_col256(p, n, xt, yrow, 4); break;
    case 3: sp_col256(p, n, xt, yrow, 6); break;
    default: sp_col256(p, n, xt, yrow, 8); break;
    }
}
#endif

/* columns n0 .. n1 of layer l on tile t: y[:, n] into the next xt's row n, then out_l */
static void spc_cols(const spc_chain *ch, int l, int64_t tile, int64_t n0, int64_t n1) {
    const sp_args *p = &ch->L[l].a;
    const int64_t w = spc_tile_w(ch, tile), b0 = tile * SP_BT;
    const int na = (int)((w + 15) / 16);
    const int64_t ld = 16 * na;
    const float *xt = ch->xt[l & 1] + tile * ch->stride;
    float *yt = ch->xt[(l + 1) & 1] + tile * ch->stride;
    for (int64_t g = n0; g < n1; g += 16) {
        const int64_t nc = n1 - g < 16 ? n1 - g : 16;
        for (int64_t n = g; n < g + nc; n++) {
#if LA_X86
            if (sp_active == SP_AVX512) {
                spc_col_avx512(p, n, xt, yt + n * ld, na);
                continue;
            }
            if (sp_active == SP_AVX2) {
                spc_col_avx2(p, n, xt, yt + n * ld, na);
                continue;
            }
#endif
            spc_col_portable(p, n, xt, yt + n * ld, ld);
        }
        sp_transpose_out(p, b0, w, g, nc, yt + g * ld, ld);
    }
}

static int spc_batch_task(void *vc, ptrdiff_t task) {
    const spc_ctx *c = (const spc_ctx *)vc;
    const spc_layer *L = &c->ch->L[c->l];
    const int64_t tile = task / L->tasks, t = task % L->tasks;
    if (L->split[t + 1] > L->split[t]) spc_cols(c->ch, c->l, tile, L->split[t], L->split[t + 1]);
    return 0;
}

/* ------------------------------------------------------------------ the call */

static SP_TLS float *spc_tls_buf = NULL;
static SP_TLS size_t spc_tls_cap = 0;

/* Run the chain (the caller filled nl, B and L[], each L[l].a.B == B, in/out chained) on up to
 * `threads` threads. Returns 0, or -1 when the batch path's buffers cannot be allocated. */
static int spc_run(spc_chain *ch, int threads) {
    if (ch->B == 0 || ch->nl == 0) return 0;
    lnn_phase_t ph[SPC_MAXL + 1];
    int np = 0;
    for (int l = 0; l < ch->nl; l++) {
        ch->ctx[l].ch = ch;
        ch->ctx[l].l = l;
    }
    if (ch->B < sp_batch_min) {
        for (int l = 0; l < ch->nl; l++)
            ph[np++] = (lnn_phase_t){spc_rows_task, &ch->ctx[l], (ptrdiff_t)ch->L[l].tasks};
        return lnn_parallel_phases(ph, np, threads);
    }
    int64_t maxdim = ch->L[0].a.K;
    for (int l = 0; l < ch->nl; l++) maxdim = ch->L[l].a.N > maxdim ? ch->L[l].a.N : maxdim;
    ch->tiles = (ch->B + SP_BT - 1) / SP_BT;
    ch->stride = maxdim * SP_BT;
    const size_t need = 2 * (size_t)(ch->tiles * ch->stride) * sizeof(float);
    float *buf = sp_scratch(&spc_tls_buf, &spc_tls_cap, need);
    if (!buf) return -1;
    ch->xt[0] = buf;
    ch->xt[1] = buf + ch->tiles * ch->stride;
    const int64_t kchunks = (ch->L[0].a.K + SPC_KCHUNK - 1) / SPC_KCHUNK;
    ph[np++] = (lnn_phase_t){spc_transpose_task, &ch->ctx[0], (ptrdiff_t)(ch->tiles * kchunks)};
    for (int l = 0; l < ch->nl; l++)
        ph[np++] = (lnn_phase_t){spc_batch_task, &ch->ctx[l], (ptrdiff_t)(ch->tiles * ch->L[l].tasks)};
    const int rc = lnn_parallel_phases(ph, np, threads);
    if (buf != spc_tls_buf) free(buf);
    return rc;
}

#endif /* LEPTON_SPARSE_CHAIN_H */
