/* dense_packed.h: a chain of float32 Dense layers, any batch, on weights packed in column
 * panels, bias and activation fused, split by output panels over a persistent native pool.
 *
 *     h = x;  for each layer l:  h = f_l(h @ W_l + b_l)          (m, N_l)
 *
 * Layout: W (K, N) is kept only as its panels P (ceil(N/16), K, 16), P[p, k, j] =
 * W[k, 16 p + j] (zero past N). A panel is one contiguous stream of K x 64 bytes.
 * The spec is ReferenceBackend.dense_packed_forward; the packing is ReferenceBackend.dense_pack.
 *
 * Tiles: MR rows x NP panels of 16 columns, MR NP <= 6 (12 AVX2 accumulators of 8 floats,
 * enough independent FMA chains for 2 FMA units of latency 4). Batch 1 runs 1 x (up to 6)
 * tiles: up to 6 panels read side by side; from 4 rows on, (3 to 6) x 1 tiles (rows cut into
 * near-equal blocks) over K blocks of <= LNN_PK_KC (a block of a panel stays in L2 while the
 * row blocks reuse it; the last row block prefetches the next block). Every output is
 * c = fma(x[k], w[k], c) for k = 0, 1, ..., K-1 in order, from c = 0, then + b, then f: the
 * same operations whatever the batch, the tile or the split, so a row's result is bit for bit
 * the same at any batch size and any thread count.
 *
 * Threads: the whole chain is one job of the process's native pool (pool.h): at a small batch
 * each layer's panels are cut into `threads` contiguous ranges, thread t owning range t (so
 * each core keeps re-reading the same part of the weights), a barrier between layers; from
 * LNN_PK_ROWS rows a thread, each thread runs its rows through every layer (see "the pool"
 * below). A thread done with its own part takes what is left of the others'. A caller that
 * finds the pool busy (another thread's job) runs its job alone.
 */
#ifndef LNN_DENSE_PACKED_H
#define LNN_DENSE_PACKED_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "dense.h" /* lnn_bias_act_forward_f32, LNN_* activation codes */
#include "spin_hint.h"

#define LNN_PK_NR 16  /* columns of a panel */
#ifndef LNN_PK_PF_ROWS
#define LNN_PK_PF_ROWS 32 /* rows from which a lone thread prefetches a layer's next panel */
#endif
#ifndef LNN_PK_KC
/* K block from 4 rows on: <= 64 KB of a panel, read from L2 by each row block (64 bytes per 12
 * FMAs: the L1 prefetcher keeps up). Blocks of 256 (16 KB, kept in L1) made 4x the tile calls
 * and accumulator reloads and measured 4-7 % slower at 16-256 rows (benchmarks/
 * bench_dense_ab.py). */
#define LNN_PK_KC 1024
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LEPTON_NO_SIMD)
#include <immintrin.h>
#define LNN_PK_AVX2 1
static int lnn_pk_have_avx2(void)
{
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return have;
}
#endif

/* One layer's arguments. */
typedef struct {
    const float *x; /* (m, k) */
    const float *pan; /* (ceil(n / 16), k, 16) */
    const float *bias; /* (n,) or NULL */
    float *y; /* (m, n) */
    ptrdiff_t m, k, n;
    int act;
} lnn_pk_layer_t;

#if LNN_PK_AVX2
/* c[r, 0 : 16 NP] (rows r < MR, stride ldc) = x[r, k0:k1] @ panels[0:NP][k0:k1] (+ c if not
 * first; + bias and relu if last and asked). Fully unrolled for constant MR, NP. */
__attribute__((always_inline, target("avx2,fma"))) static inline void
lnn_pk_tile(const int MR, const int NP, const float *x, ptrdiff_t ldx, const float *pan,
            ptrdiff_t kp, ptrdiff_t k0, ptrdiff_t k1, float *c, ptrdiff_t ldc, int first,
            int last, const float *bias, int relu, const float *pf)
{
    __m256 acc[12];
#pragma GCC unroll 12
    for (int i = 0; i < MR * NP * 2; i++) acc[i] = _mm256_setzero_ps();
    if (!first) {
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 12
            for (int j = 0; j < NP * 2; j++) acc[r * NP * 2 + j] = _mm256_loadu_ps(c + r * ldc + 8 * j);
    }
    for (ptrdiff_t k = k0; k < k1; k++) {
        __m256 b[12];
        if (MR > 1 && pf) _mm_prefetch((const char *)(pf + (k - k0) * LNN_PK_NR), _MM_HINT_T0);
#pragma GCC unroll 6
        for (int p = 0; p < NP; p++) {
            b[2 * p] = _mm256_loadu_ps(pan + p * kp * LNN_PK_NR + k * LNN_PK_NR);
            b[2 * p + 1] = _mm256_loadu_ps(pan + p * kp * LNN_PK_NR + k * LNN_PK_NR + 8);
        }
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            const __m256 a = _mm256_broadcast_ss(x + r * ldx + k);
#pragma GCC unroll 12
            for (int j = 0; j < NP * 2; j++)
                acc[r * NP * 2 + j] = _mm256_fmadd_ps(a, b[j], acc[r * NP * 2 + j]);
        }
    }
    if (last && (bias || relu)) {
        const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 12
        for (int j = 0; j < NP * 2; j++) {
            const __m256 bj = bias ? _mm256_loadu_ps(bias + 8 * j) : zero;
#pragma GCC unroll 6
            for (int r = 0; r < MR; r++) {
                __m256 v = bias ? _mm256_add_ps(acc[r * NP * 2 + j], bj) : acc[r * NP * 2 + j];
                /* max(0, v): v where v is NaN (the second operand), as np.maximum(v, 0) */
                acc[r * NP * 2 + j] = relu ? _mm256_max_ps(zero, v) : v;
            }
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 12
        for (int j = 0; j < NP * 2; j++) _mm256_storeu_ps(c + r * ldc + 8 * j, acc[r * NP * 2 + j]);
}

#define LNN_PK_CASE(MR, NP)                                                                \
    case MR * 8 + NP:                                                                      \
        lnn_pk_tile(MR, NP, x, ldx, pan, kp, k0, k1, c, ldc, first, last, bias, relu, pf);  \
        break;

__attribute__((target("avx2,fma"))) static void
lnn_pk_tile_avx2(int mr, int np, const float *x, ptrdiff_t ldx, const float *pan, ptrdiff_t kp,
                 ptrdiff_t k0, ptrdiff_t k1, float *c, ptrdiff_t ldc, int first, int last,
                 const float *bias, int relu, const float *pf)
{
    switch (mr * 8 + np) {
        LNN_PK_CASE(1, 1) LNN_PK_CASE(1, 2) LNN_PK_CASE(1, 3) LNN_PK_CASE(1, 4)
        LNN_PK_CASE(1, 5) LNN_PK_CASE(1, 6) LNN_PK_CASE(2, 1) LNN_PK_CASE(2, 2)
        LNN_PK_CASE(2, 3) LNN_PK_CASE(3, 1) LNN_PK_CASE(3, 2) LNN_PK_CASE(4, 1)
        LNN_PK_CASE(5, 1) LNN_PK_CASE(6, 1)
    default:
        break;
    }
}
#undef LNN_PK_CASE
#endif

/* Plain C, any CPU: the same sums in the same order (k ascending), one output at a time. */
static void lnn_pk_tile_c(int mr, int np, const float *x, ptrdiff_t ldx, const float *pan,
                          ptrdiff_t kp, ptrdiff_t k0, ptrdiff_t k1, float *c, ptrdiff_t ldc,
                          int first, int last, const float *bias, int relu)
{
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < np * LNN_PK_NR; j++) {
            const float *w = pan + (j / LNN_PK_NR) * kp * LNN_PK_NR + j % LNN_PK_NR;
            float s = first ? 0.0f : c[r * ldc + j];
            for (ptrdiff_t k = k0; k < k1; k++) s += x[r * ldx + k] * w[k * LNN_PK_NR];
            if (last && bias) s += bias[j];
            if (last && relu) s = s < 0 ? 0.0f : s;
            c[r * ldc + j] = s;
        }
}

/* One tile; a tile reaching past column n computes into a 16 NP-wide scratch first. pf (or
 * NULL): lines to prefetch meanwhile, one 64-byte line per k (a panel's next K block). */
static void lnn_pk_tile_any(const lnn_pk_layer_t *L, ptrdiff_t r0, int mr, ptrdiff_t p0, int np,
                            ptrdiff_t k0, ptrdiff_t k1, const float *pf)
{
    const ptrdiff_t j0 = p0 * LNN_PK_NR, width = np * LNN_PK_NR;
    const ptrdiff_t cols = L->n - j0 < width ? L->n - j0 : width;
    const int first = k0 == 0, last = k1 == L->k;
    const int fused = L->act == LNN_IDENTITY || L->act == LNN_RELU;
    const int relu = L->act == LNN_RELU;
    const float *x = L->x + r0 * L->k;
    const float *pan = L->pan + p0 * L->k * LNN_PK_NR;
    float *c = L->y + r0 * L->n + j0;
    ptrdiff_t ldc = L->n;
    const float *bias = L->bias ? L->bias + j0 : NULL;
    float cbuf[6 * 6 * LNN_PK_NR], bbuf[6 * LNN_PK_NR];
    if (cols < width) { /* the ragged last panel: through scratch */
        for (int r = 0; r < mr; r++) {
            memset(cbuf + r * width, 0, sizeof(float) * width);
            if (!first) memcpy(cbuf + r * width, c + r * ldc, sizeof(float) * cols);
        }
        if (bias) {
            memset(bbuf, 0, sizeof bbuf);
            memcpy(bbuf, bias, sizeof(float) * cols);
            bias = bbuf;
        }
        c = cbuf;
        ldc = width;
    }
    const float *b_in = fused ? bias : NULL;
#if LNN_PK_AVX2
    if (lnn_pk_have_avx2())
        lnn_pk_tile_avx2(mr, np, x, L->k, pan, L->k, k0, k1, c, ldc, first, last, b_in,
                         last && relu, pf);
    else
#endif
        lnn_pk_tile_c(mr, np, x, L->k, pan, L->k, k0, k1, c, ldc, first, last, b_in,
                      last && relu);
    if (last && !fused) /* sigmoid, tanh, gelu: the bias and activation kernel, per row */
        for (int r = 0; r < mr; r++)
            lnn_bias_act_forward_f32(c + r * ldc, bias, L->act, c + r * ldc, 1, cols, 1);
    if (c == cbuf)
        for (int r = 0; r < mr; r++)
            memcpy(L->y + (r0 + r) * L->n + j0, cbuf + r * width, sizeof(float) * cols);
}

/* ---- units of work --------------------------------------------------------------------- */

/* The panels [p0, p1) thread t of `threads` owns in a layer (contiguous, near-equal). */
static void lnn_pk_range(const lnn_pk_layer_t *L, int t, int threads, ptrdiff_t *p0,
                         ptrdiff_t *p1)
{
    const ptrdiff_t panels = (L->n + LNN_PK_NR - 1) / LNN_PK_NR;
    *p0 = panels * t / threads;
    *p1 = panels * (t + 1) / threads;
}

/* A range of `len` panels is cut into units: up to 3 rows, tiles of at most 6 / m panels over
 * the whole K; from 4 rows on, one panel each. Up to 3 rows in a threaded chain (`tails`), the
 * range ends in up to 2 narrow units of `lnn_pk_small(m)` panels (2 at 1 row: 4 FMA chains,
 * still above the L3 read speed), the rest near-equal: a thread done with its own range takes
 * a late or slower thread's last units, which are short (784-512-256-10 at batch 1, 2
 * threads: layer 1's 16 panels a thread as 6 6 2 2 and layer 2's 8 as 4 2 2, where near-equal
 * units were 5 5 6 and 4 4: a whole unit, ~4 us, for the other thread to wait on). */
static ptrdiff_t lnn_pk_small(ptrdiff_t m) { return (2 + m - 1) / m; }

static ptrdiff_t lnn_pk_tails(ptrdiff_t m, ptrdiff_t len, int tails)
{
    const ptrdiff_t small = lnn_pk_small(m);
    if (!tails || m > 3) return 0;
    return len >= 3 * small ? 2 : len >= 2 * small ? 1 : 0;
}

static ptrdiff_t lnn_pk_units_of(ptrdiff_t m, ptrdiff_t len, int tails)
{
    if (len <= 0 || m <= 0) return 0;
    if (m > 3) return len;
    const ptrdiff_t cap = 6 / m, t = lnn_pk_tails(m, len, tails);
    const ptrdiff_t bulk = len - t * lnn_pk_small(m);
    return (bulk + cap - 1) / cap + t;
}

/* Unit u of the units_of(m, len, tails) of a range: its panels [*a, *b) counted from the
 * range's start. */
static void lnn_pk_unit_span(ptrdiff_t m, ptrdiff_t len, int tails, ptrdiff_t u, ptrdiff_t *a,
                             ptrdiff_t *b)
{
    if (m > 3) {
        *a = u, *b = u + 1;
        return;
    }
    const ptrdiff_t cap = 6 / m, small = lnn_pk_small(m), t = lnn_pk_tails(m, len, tails);
    const ptrdiff_t bulk = len - t * small, nb = (bulk + cap - 1) / cap;
    if (u < nb) {
        *a = u * bulk / nb, *b = (u + 1) * bulk / nb;
    } else {
        *a = bulk + (u - nb) * small, *b = *a + small;
    }
}

static ptrdiff_t lnn_pk_units(const lnn_pk_layer_t *L, ptrdiff_t len, int tails)
{
    return lnn_pk_units_of(L->m, len, tails);
}

/* Unit u of the range of panels [p0, p1) (lnn_pk_unit_span), every row, over k in [k0, k1)
 * (the whole unit is k0 = 0, k1 = K: each output's fma chain carries on from the partial
 * sums stored in y by the unit's earlier k ranges, in order, so the bits do not depend on
 * where K is cut). From 4 rows, `after` (or NULL): the panel this thread runs next. */
static void lnn_pk_unit_k(const lnn_pk_layer_t *L, ptrdiff_t p0, ptrdiff_t p1, int tails,
                          ptrdiff_t u, ptrdiff_t k0, ptrdiff_t k1, const float *after)
{
    const ptrdiff_t m = L->m;
    if (m <= 3) {
        ptrdiff_t a, b;
        lnn_pk_unit_span(m, p1 - p0, tails, u, &a, &b);
        lnn_pk_tile_any(L, 0, (int)m, p0 + a, (int)(b - a), k0, k1, NULL);
        return;
    }
    /* [k0, k1) in equal blocks of at most LNN_PK_KC (2000 = 2 x 1000, not 1024 + 976) */
    const ptrdiff_t blocks = (k1 - k0 + LNN_PK_KC - 1) / LNN_PK_KC;
    const ptrdiff_t kc = blocks > 1 ? (k1 - k0 + blocks - 1) / blocks : LNN_PK_KC;
    /* row blocks of near-equal height <= 6: 64 rows = 9 x 6 + 2 x 5, not 10 x 6 + 4 (a 4-row
     * tile has 8 FMA chains: exactly latency 4 x 2 FMA units, no slack) */
    const ptrdiff_t blocks_m = (m + 5) / 6;
    const float *pan = L->pan + (p0 + u) * L->k * LNN_PK_NR;
    for (ptrdiff_t b0 = k0;; b0 += kc) { /* a block of the panel in L2 ... */
        const ptrdiff_t b1 = b0 + kc < k1 ? b0 + kc : k1;
        for (ptrdiff_t b = 0; b < blocks_m; b++) { /* ... for every block of rows */
            const ptrdiff_t r0 = m * b / blocks_m, r1 = m * (b + 1) / blocks_m;
            /* the last row block brings the panel's next K block in meanwhile (a line per k:
             * when that block is as long as this one, not past the panel's end) */
            const int next = b == blocks_m - 1 && b1 + (b1 - b0) <= L->k;
            const float *pf = next ? pan + b1 * LNN_PK_NR : NULL;
            /* after the last K block, the last row block brings in the first block of the
             * panel the thread runs next (`after`) instead: that panel comes from L3 (a
             * layer's panels outgrow L2), and without it the first row block of each panel
             * took a median 1.05-2.7x the others' time (rdtsc per tile, batch 64, 1 thread,
             * a loaded host): the whole call measured 2-4 % faster with it (batch 64 and
             * 128, thread CPU time, interleaved A/B; the noise of an A/A there: 3-5 %). Not
             * in the pool's jobs (`after` NULL): there it measured 5-10 % slower at 2 threads
             * (batch 64, two quiet A/Bs), a thread's next panel not being known */
            if (!pf && after && b1 >= k1 && b == blocks_m - 1) pf = after;
            lnn_pk_tile_any(L, r0, (int)(r1 - r0), p0 + u, 1, b0, b1, pf);
        }
        if (b1 >= k1) break;
    }
}

static void lnn_pk_unit(const lnn_pk_layer_t *L, ptrdiff_t p0, ptrdiff_t p1, int tails,
                        ptrdiff_t u)
{
    lnn_pk_unit_k(L, p0, p1, tails, u, 0, L->k, NULL);
}

/* Every unit of a layer on the calling thread. */
static void lnn_pk_layer_alone(const lnn_pk_layer_t *L)
{
    ptrdiff_t p0, p1;
    lnn_pk_range(L, 0, 1, &p0, &p1);
    const ptrdiff_t units = lnn_pk_units(L, p1 - p0, 0);
    for (ptrdiff_t u = 0; u < units; u++) { /* from LNN_PK_PF_ROWS rows: the next panel */
        const float *after = L->m >= LNN_PK_PF_ROWS && u + 1 < units
                                 ? L->pan + (p0 + u + 1) * L->k * LNN_PK_NR
                                 : NULL;
        lnn_pk_unit_k(L, p0, p1, 0, u, 0, L->k, after);
    }
}

/* ---- the pool ---------------------------------------------------------------------------- */
/* The whole chain is ONE job of the process's shared pool (pool.h), in one of two splits:
 *
 * - by columns (fewer than LNN_PK_ROWS rows a thread): each layer's panels are cut into
 *   `threads` ranges, each range into units; thread t runs the units of range t of every
 *   layer (so each core reads the same panels call after call), then takes what is left of
 *   the other ranges, a claim being one atomic add on that range's counter. There is no
 *   barrier between layers: up to 3 rows, a unit of layer l runs k range by k range, the k
 *   ranges being layer l - 1's ranges of columns, and before each it waits until that range
 *   of layer l - 1 is done (from 4 rows, until all of layer l - 1 is: see the chain below).
 *   So at batch 1 on 2 threads, thread 0 starts layer 2 on the half of its input it
 *   computed itself while thread 1 (started later: it had to see the job) still computes the
 *   other half; layer 3 (one panel) is claimed by the first thread there and run the same
 *   way. Waits are only ever for claimed units: a thread that finds an unclaimed unit of the
 *   range it needs claims and runs it itself, so a job whose tasks run one after another on
 *   one thread (a busy pool) finishes too, and a late thread just gets less. (A wait cannot
 *   close a cycle: a thread waits on layer l - 1 only while every unit it has claimed and not
 *   finished is in a layer >= l.) When an output shares memory with the input or another
 *   output (the runtime's arena may hand a dead activation's block on, at one thread), a
 *   unit may not store partial sums early: it waits for all of layer l - 1 first and runs
 *   its whole K at once. At batch 1 on the 784-512-256-10 MLP, 2 threads: thread 0 reads
 *   panels 0-15 of layer 1 (784 x 256 columns, 803 KB) and 0-7 of layer 2 (262 KB); thread 1
 *   the other 16 and 8 panels (1.07 MB), and layer 3's 16 KB go to whichever gets there
 *   first. Neither share fits a 512 KiB L2: both stream from L3 every call
 *   (bench_dense_bound.py states the bound; benchmarks/l2_resident.c shows that no load or
 *   prefetch hint keeps part of a share in L2 on Zen 3);
 * - by rows (from LNN_PK_ROWS rows a thread): the rows are cut into groups of about
 *   LNN_PK_GROUP_ROWS (one a thread at least; a multiple of `threads` of them), thread t
 *   owning a contiguous block of groups, and a group's layers are units too: layer l of
 *   group g is its panels one unit each (every row of the group), claimed from the counter
 *   of (l, g), a unit of layer l > 0 waiting for all of layer l - 1 of the same group only.
 *   Thread t runs its groups layer after layer (each core reads every weight once per group,
 *   from L3, keeps its rows' activations in its L1/L2, and waits for nobody), then takes
 *   what is left of the others' groups, the last group of a block first: a late or slowed
 *   thread is helped a panel (~9 us at 32 rows on the MLP's first layer) at a time, not a
 *   whole task. The last session's split, tasks of 16 rows through every layer (4 at batch
 *   64 on 2 threads: each thread read the weights twice, a late worker's task was 190 us
 *   of work the other could not share), is benchmarks/chain_b64.c's "rows: 4 tasks".
 *
 * Either way every output is the same fma chain (see the top of this file): the bits do not
 * depend on the split. */

#include "pool.h"

#define LNN_PK_MAX_THREADS 64
#ifndef LNN_PK_ROWS
#define LNN_PK_ROWS 16 /* rows a thread from which the chain is split by rows */
#endif
#ifndef LNN_PK_GROUP_ROWS
#define LNN_PK_GROUP_ROWS 32 /* rows of a group in the row split (at least one group a thread) */
#endif
#define LNN_PK_GROUP 16 /* layers of one job (a longer chain runs as several jobs) */

#if defined(__GNUC__) && (defined(__unix__) || defined(__APPLE__))
#include <sched.h>
#define LNN_PK_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LNN_PK_CLAIM(p) __atomic_fetch_add((p), 1, __ATOMIC_RELAXED)
#define LNN_PK_DONE(p) __atomic_fetch_add((p), 1, __ATOMIC_RELEASE)
#define LNN_PK_YIELD() sched_yield()
#else /* no pthreads: the pool runs every job on its caller (pool.h) */
#define LNN_PK_LOAD(p) (*(p))
#define LNN_PK_CLAIM(p) ((*(p))++)
#define LNN_PK_DONE(p) ((*(p))++)
#define LNN_PK_YIELD() ((void)0)
#endif

#ifndef LNN_PK_TRACE /* a measuring hook (benchmarks/chain_b1.c, chain_b64.c): unit u (the row
                      * split: task u) of layer l begins, ends; l = -1: a wait for range u */
#define LNN_PK_TRACE(l, u, end) ((void)0)
#endif

/* Units of one range of one layer: claimed, done (a 64-byte line each pair). */
typedef struct {
    ptrdiff_t claimed, done, pad[6];
} lnn_pk_count_t;

/* The job of either split: up to LNN_PK_GROUP layers, cut into `ranges` parts, count[l *
 * ranges + b] for part b of layer l: by columns (groups = 0), range b of its panels (ranges =
 * threads; chunked: a unit runs k range by k range, the buffers being disjoint), or by rows
 * (groups = ranges > 0), every panel for group b's rows. */
typedef struct {
    lnn_pk_layer_t L[LNN_PK_GROUP];
    int layers, threads, chunked, groups, ranges;
    lnn_pk_count_t *count;
} lnn_pk_flow_t;

/* The rows of group b (by rows). */
static void lnn_pk_flow_rows(const lnn_pk_flow_t *F, int b, ptrdiff_t *r0, ptrdiff_t *r1)
{
    *r0 = F->L[0].m * b / F->groups, *r1 = F->L[0].m * (b + 1) / F->groups;
}

/* The units of part b of layer l. */
static ptrdiff_t lnn_pk_flow_units(const lnn_pk_flow_t *F, int l, int b)
{
    const lnn_pk_layer_t *L = &F->L[l];
    ptrdiff_t p0, p1;
    if (F->groups == 0) {
        lnn_pk_range(L, b, F->threads, &p0, &p1);
        return lnn_pk_units(L, p1 - p0, 1);
    }
    ptrdiff_t r0, r1;
    lnn_pk_flow_rows(F, b, &r0, &r1);
    return lnn_pk_units_of(r1 - r0, (L->n + LNN_PK_NR - 1) / LNN_PK_NR, 0);
}

static void lnn_pk_flow_ensure(const lnn_pk_flow_t *F, int l, int b);

/* Unit u of part b of layer l, all of it. By rows: once layer l - 1 of group b is done. By
 * columns: k range by k range of its input as layer l - 1's ranges complete (or, not
 * chunked, once every range of layer l - 1 is done). */
static void lnn_pk_flow_unit(const lnn_pk_flow_t *F, int l, int b, ptrdiff_t u)
{
    const lnn_pk_layer_t *L = &F->L[l];
    ptrdiff_t p0, p1;
    if (F->groups) { /* the layer on the group's rows, every panel */
        ptrdiff_t r0, r1;
        lnn_pk_flow_rows(F, b, &r0, &r1);
        lnn_pk_layer_t P = *L;
        P.x += r0 * P.k, P.y += r0 * P.n, P.m = r1 - r0;
        if (l > 0) lnn_pk_flow_ensure(F, l - 1, b);
        lnn_pk_range(&P, 0, 1, &p0, &p1);
        lnn_pk_unit(&P, p0, p1, 0, u);
        return;
    }
    lnn_pk_range(L, b, F->threads, &p0, &p1);
    if (l == 0 || !F->chunked || L->k == 0) {
        for (int c = 0; l > 0 && c < F->threads; c++) lnn_pk_flow_ensure(F, l - 1, c);
        lnn_pk_unit(L, p0, p1, 1, u);
        return;
    }
    for (int c = 0; c < F->threads; c++) { /* layer l - 1's columns of range c: k0 .. k1 */
        ptrdiff_t q0, q1;
        lnn_pk_range(&F->L[l - 1], c, F->threads, &q0, &q1);
        const ptrdiff_t k0 = q0 * LNN_PK_NR, k1 = q1 * LNN_PK_NR < L->k ? q1 * LNN_PK_NR : L->k;
        if (k1 <= k0) continue;
        lnn_pk_flow_ensure(F, l - 1, c);
        lnn_pk_unit_k(L, p0, p1, 1, u, k0, k1, NULL);
    }
}

/* Claim and run the unclaimed units of range b of layer l. */
static void lnn_pk_flow_claim(const lnn_pk_flow_t *F, int l, int b)
{
    lnn_pk_count_t *c = &F->count[l * F->ranges + b];
    const ptrdiff_t units = lnn_pk_flow_units(F, l, b);
    while (LNN_PK_LOAD(&c->claimed) < units) {
        const ptrdiff_t u = LNN_PK_CLAIM(&c->claimed);
        if (u >= units) break;
        LNN_PK_TRACE(l, u, 0);
        lnn_pk_flow_unit(F, l, b, u);
        LNN_PK_TRACE(l, u, 1);
        LNN_PK_DONE(&c->done); /* release: the unit's outputs before the count */
    }
}

/* Range b of layer l done: what is unclaimed run here, then wait for the claimed ones. */
static void lnn_pk_flow_ensure(const lnn_pk_flow_t *F, int l, int b)
{
    lnn_pk_count_t *c = &F->count[l * F->ranges + b];
    const ptrdiff_t units = lnn_pk_flow_units(F, l, b);
    if (LNN_PK_LOAD(&c->done) >= units) return;
    lnn_pk_flow_claim(F, l, b);
    LNN_PK_TRACE(-1, b, 0); /* a wait (layer -1) */
    for (long spin = 1; LNN_PK_LOAD(&c->done) < units; spin++) {
        LNN_SPIN_HINT();
        if (!(spin & 255)) LNN_PK_YIELD(); /* a preempted claimer may need this core */
    }
    LNN_PK_TRACE(-1, b, 1);
}

/* Task t. By columns: range t of every layer, then what is left of the others' ranges,
 * layer by layer. By rows: its block of groups, group after group, then what is left of the
 * others' blocks, each block from its last group back (what its owner reaches last). */
static int lnn_pk_flow_task(void *ctx, ptrdiff_t t)
{
    const lnn_pk_flow_t *F = (const lnn_pk_flow_t *)ctx;
    const int T = F->threads, G = F->groups;
    if (G == 0) {
        for (int l = 0; l < F->layers; l++)
            for (int i = 0; i < T; i++) lnn_pk_flow_claim(F, l, (int)((t + i) % T));
        return 0;
    }
    for (int i = 0; i < T; i++) {
        const int o = (int)((t + i) % T), g0 = G * o / T, g1 = G * (o + 1) / T;
        for (int j = 0; j < g1 - g0; j++) {
            const int g = i == 0 ? g0 + j : g1 - 1 - j;
            for (int l = 0; l < F->layers; l++) lnn_pk_flow_claim(F, l, g);
        }
    }
    return 0;
}

/* Whether the chain's input and outputs are all disjoint in memory. A caller may hand a dead
 * activation's buffer on to a later layer (the runtime's arena does: the MLP's third output
 * on the first's); layer after layer that is fine, but in the row split one thread would
 * write a later layer over rows another thread still reads. */
static int lnn_pk_disjoint(const float *x, ptrdiff_t m, ptrdiff_t layers, const ptrdiff_t *dims,
                           float *const *outs)
{
    for (ptrdiff_t i = -1; i < layers; i++) {
        const char *a0 = (const char *)(i < 0 ? x : outs[i]);
        const char *a1 = a0 + sizeof(float) * m * dims[i + 1];
        for (ptrdiff_t j = i + 1; j < layers; j++) {
            const char *b0 = (const char *)outs[j], *b1 = b0 + sizeof(float) * m * dims[j + 1];
            if (a0 < b1 && b0 < a1) return 0;
        }
    }
    return 1;
}

/* The chain as pool jobs of the given split (groups: see lnn_pk_flow_t; chunked: only up to
 * 3 rows with disjoint buffers, see below), a job per LNN_PK_GROUP layers. Returns 0 (nothing
 * run) if the counters cannot be allocated. */
static int lnn_pk_flow_chain(const float *x, ptrdiff_t m, ptrdiff_t layers,
                             const float *const *panels, const float *const *bias,
                             const int *act, const ptrdiff_t *dims, float *const *outs,
                             int threads, int groups, int chunked)
{
    lnn_pk_count_t local[64], *count = local;
    const int ranges = groups ? groups : threads;
    const ptrdiff_t group = layers < LNN_PK_GROUP ? layers : LNN_PK_GROUP;
    if (group * ranges > 64) count = (lnn_pk_count_t *)malloc(sizeof(*count) * group * ranges);
    if (count == NULL) return 0;
    lnn_pk_flow_t F;
    F.threads = threads, F.groups = groups, F.ranges = ranges;
    /* up to 3 rows a unit is one tile over its whole K; from 4 rows its K is cut in blocks
     * of LNN_PK_KC (L2 reuse across its row blocks) and cutting it again at each input range
     * would double the tile calls (blocks of 256 measured 4-7 % slower, above): from 4 rows
     * a unit waits for its whole input */
    F.chunked = chunked;
    F.count = count;
    for (ptrdiff_t l0 = 0; l0 < layers; l0 += LNN_PK_GROUP) {
        F.layers = (int)(layers - l0 < LNN_PK_GROUP ? layers - l0 : LNN_PK_GROUP);
        for (int i = 0; i < F.layers; i++) {
            const ptrdiff_t l = l0 + i;
            const lnn_pk_layer_t L = {l == 0 ? x : outs[l - 1], panels[l], bias[l], outs[l], m,
                                      dims[l], dims[l + 1], act[l]};
            F.L[i] = L;
        }
        memset(count, 0, sizeof(*count) * F.layers * ranges);
        lnn_parallel(lnn_pk_flow_task, &F, threads, threads);
    }
    if (count != local) free(count);
    return 1;
}

/* The chain: layer l reads h (m, dims[l]) and writes outs[l] (m, dims[l + 1]) = f(h W + b),
 * W as panels[l]; h = x for the first layer, outs[l - 1] after. bias[l] may be NULL; an
 * output may reuse the memory of the input or of an earlier output (then split by columns).
 * `threads` > 1: one job of the pool (if it is free; else on the caller alone). */
static void lnn_dense_packed_chain_f32(const float *x, ptrdiff_t m, ptrdiff_t layers,
                                       const float *const *panels, const float *const *bias,
                                       const int *act, const ptrdiff_t *dims,
                                       float *const *outs, int threads)
{
    if (threads > LNN_PK_MAX_THREADS) threads = LNN_PK_MAX_THREADS;
    const int disjoint = threads > 1 && lnn_pk_disjoint(x, m, layers, dims, outs);
    int groups = 0; /* by columns */
    if (threads > 1 && m >= (ptrdiff_t)LNN_PK_ROWS * threads && disjoint) { /* by rows */
        const ptrdiff_t per = m / ((ptrdiff_t)LNN_PK_GROUP_ROWS * threads);
        groups = threads * (int)(per > 1 ? per : 1);
    }
    if (threads > 1 && lnn_pk_flow_chain(x, m, layers, panels, bias, act, dims, outs, threads,
                                         groups, disjoint && m <= 3))
        return;
    for (ptrdiff_t l = 0; l < layers; l++) {
        const lnn_pk_layer_t L = {l == 0 ? x : outs[l - 1], panels[l], bias[l], outs[l],
                                  m, dims[l], dims[l + 1], act[l]};
        lnn_pk_layer_alone(&L);
    }
}

#endif /* LNN_DENSE_PACKED_H */
