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
 * tiles: up to 6 panels read side by side; from 4 rows on, 6 x 1 tiles over K blocks of 256
 * (a block of a panel, 16 KB, stays in L1 while the row blocks reuse it). Every output is
 * c = fma(x[k], w[k], c) for k = 0, 1, ..., K-1 in order, from c = 0, then + b, then f: the
 * same operations whatever the batch, the tile or the split, so a row's result is bit for bit
 * the same at any batch size and any thread count.
 *
 * Threads: a layer's panels are cut into `threads` contiguous ranges; the caller takes the
 * first, pool workers the others (each always the same range, so at batch 1 each core keeps
 * re-reading the same part of the weights and may find it in its own L2). The workers are
 * pthreads started once; they wait for a job spinning on an atomic generation counter for a
 * while (LNN_PK_SPIN), then sleep on a condition variable. Layers are separated by a spinning
 * barrier. A caller that finds the pool busy (another thread's job) runs its job alone.
 */
#ifndef LNN_DENSE_PACKED_H
#define LNN_DENSE_PACKED_H

#include <stddef.h>
#include <string.h>

#include "dense.h" /* lnn_bias_act_forward_f32, LNN_* activation codes */

#define LNN_PK_NR 16  /* columns of a panel */
#define LNN_PK_KC 256 /* K block from 4 rows on: 16 KB of a panel */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
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
            int last, const float *bias, int relu)
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
        lnn_pk_tile(MR, NP, x, ldx, pan, kp, k0, k1, c, ldc, first, last, bias, relu);      \
        break;

__attribute__((target("avx2,fma"))) static void
lnn_pk_tile_avx2(int mr, int np, const float *x, ptrdiff_t ldx, const float *pan, ptrdiff_t kp,
                 ptrdiff_t k0, ptrdiff_t k1, float *c, ptrdiff_t ldc, int first, int last,
                 const float *bias, int relu)
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

/* One tile; a tile reaching past column n computes into a 16 NP-wide scratch first. */
static void lnn_pk_tile_any(const lnn_pk_layer_t *L, ptrdiff_t r0, int mr, ptrdiff_t p0, int np,
                            ptrdiff_t k0, ptrdiff_t k1)
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
                         last && relu);
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

/* Panels [p0, p1) of one layer, every row. */
static void lnn_pk_layer_part(const lnn_pk_layer_t *L, ptrdiff_t p0, ptrdiff_t p1)
{
    const ptrdiff_t m = L->m;
    if (p1 <= p0 || m <= 0) return;
    if (m <= 3) { /* 1, 2 or 3 rows x up to 6, 3, 2 panels, the whole K at once */
        const int cap = (int)(6 / m);
        ptrdiff_t left = p1 - p0, p = p0;
        const ptrdiff_t groups = (left + cap - 1) / cap;
        for (ptrdiff_t g = 0; g < groups; g++) { /* groups of near-equal width */
            const int np = (int)((left + (groups - g) - 1) / (groups - g));
            lnn_pk_tile_any(L, 0, (int)m, p, np, 0, L->k);
            p += np;
            left -= np;
        }
        return;
    }
    for (ptrdiff_t k0 = 0; k0 < L->k || k0 == 0; k0 += LNN_PK_KC) {
        const ptrdiff_t k1 = k0 + LNN_PK_KC < L->k ? k0 + LNN_PK_KC : L->k;
        for (ptrdiff_t p = p0; p < p1; p++)
            for (ptrdiff_t r0 = 0; r0 < m; r0 += 6) {
                const int mr = (int)(m - r0 < 6 ? m - r0 : 6);
                lnn_pk_tile_any(L, r0, mr, p, 1, k0, k1);
            }
        if (L->k == 0) break;
    }
}

/* ---- the pool ---------------------------------------------------------------------------- */

#define LNN_PK_MAX_THREADS 16

typedef struct {
    const lnn_pk_layer_t *layers;
    ptrdiff_t count;
    int threads;
} lnn_pk_job_t;

/* The part of a layer's panels thread t of `threads` takes. */
static void lnn_pk_range(const lnn_pk_layer_t *L, int t, int threads, ptrdiff_t *p0,
                         ptrdiff_t *p1)
{
    const ptrdiff_t panels = (L->n + LNN_PK_NR - 1) / LNN_PK_NR;
    *p0 = panels * t / threads;
    *p1 = panels * (t + 1) / threads;
}

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#define LNN_PK_POOL 1

/* ~2-3 us of pause instructions per 100 on x86; a worker idles this long spinning */
#define LNN_PK_SPIN 20000

static inline void lnn_pk_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static struct {
    pthread_mutex_t busy; /* held by the caller whose job the pool runs */
    pthread_mutex_t mu;   /* sleeping workers */
    pthread_cond_t cv;
    atomic_ulong post;    /* a new job: (generation << 8) | threads, job written before */
    atomic_int sleepers;
    atomic_int done;      /* workers finished with the current job */
    atomic_int bar_count; /* the barrier between layers */
    atomic_uint bar_gen;
    const lnn_pk_job_t *job;
    unsigned long born; /* post when workers were last started */
    int workers; /* started */
    int atfork;
} lnn_pk_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static pthread_mutex_t lnn_pk_start_mu = PTHREAD_MUTEX_INITIALIZER;

/* Every participant of the job waits here until all `n` arrived. */
static void lnn_pk_barrier(int n)
{
    const unsigned g = atomic_load(&lnn_pk_pool.bar_gen);
    if (atomic_fetch_add(&lnn_pk_pool.bar_count, 1) == n - 1) {
        atomic_store(&lnn_pk_pool.bar_count, 0);
        atomic_fetch_add(&lnn_pk_pool.bar_gen, 1);
        return;
    }
    for (long spin = 0; atomic_load(&lnn_pk_pool.bar_gen) == g; spin++) {
        lnn_pk_relax();
        if (spin > LNN_PK_SPIN) sched_yield(); /* a participant was descheduled */
    }
}

/* Thread t's share of the job: its panels of each layer, a barrier between layers. */
static void lnn_pk_share(const lnn_pk_job_t *job, int t)
{
    for (ptrdiff_t l = 0; l < job->count; l++) {
        ptrdiff_t p0, p1;
        if (l > 0) lnn_pk_barrier(job->threads);
        lnn_pk_range(&job->layers[l], t, job->threads, &p0, &p1);
        lnn_pk_layer_part(&job->layers[l], p0, p1);
    }
}

static void *lnn_pk_worker(void *arg)
{
    const int t = (int)(ptrdiff_t)arg; /* 1, 2, ... */
    unsigned long seen = lnn_pk_pool.born; /* the last job before this worker was made */
    for (;;) {
        long spin = 0;
        while (atomic_load(&lnn_pk_pool.post) == seen) {
            if (++spin < LNN_PK_SPIN) {
                lnn_pk_relax();
                continue;
            }
            pthread_mutex_lock(&lnn_pk_pool.mu);
            atomic_fetch_add(&lnn_pk_pool.sleepers, 1);
            while (atomic_load(&lnn_pk_pool.post) == seen)
                pthread_cond_wait(&lnn_pk_pool.cv, &lnn_pk_pool.mu);
            atomic_fetch_sub(&lnn_pk_pool.sleepers, 1);
            pthread_mutex_unlock(&lnn_pk_pool.mu);
        }
        /* one read: the thread count of the very job this generation names. Only its
         * participants read the job (its caller waits for them; the others may be late) */
        seen = atomic_load(&lnn_pk_pool.post);
        if (t < (int)(seen & 0xff)) {
            lnn_pk_share(lnn_pk_pool.job, t);
            atomic_fetch_add(&lnn_pk_pool.done, 1);
        }
    }
    return NULL;
}

/* In a forked child the workers did not come along: start afresh. */
static void lnn_pk_after_fork(void)
{
    pthread_mutex_init(&lnn_pk_pool.busy, NULL);
    pthread_mutex_init(&lnn_pk_pool.mu, NULL);
    pthread_cond_init(&lnn_pk_pool.cv, NULL);
    pthread_mutex_init(&lnn_pk_start_mu, NULL);
    atomic_store(&lnn_pk_pool.sleepers, 0);
    atomic_store(&lnn_pk_pool.bar_count, 0);
    lnn_pk_pool.workers = 0;
}

/* Start workers up to n - 1; returns how many threads the pool can run (>= 1). Called with
 * `busy` held: no job is posted meanwhile. */
static int lnn_pk_start(int n)
{
    pthread_mutex_lock(&lnn_pk_start_mu);
    lnn_pk_pool.born = atomic_load(&lnn_pk_pool.post);
    if (!lnn_pk_pool.atfork) {
        pthread_atfork(NULL, NULL, lnn_pk_after_fork);
        lnn_pk_pool.atfork = 1;
    }
    while (lnn_pk_pool.workers < n - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int bad = pthread_create(&th, &attr, lnn_pk_worker,
                                 (void *)(ptrdiff_t)(lnn_pk_pool.workers + 1));
        pthread_attr_destroy(&attr);
        if (bad) break;
        lnn_pk_pool.workers++;
    }
    int can = lnn_pk_pool.workers + 1;
    pthread_mutex_unlock(&lnn_pk_start_mu);
    return can;
}
#endif /* pthreads */

/* The chain: layer l reads h (m, dims[l]) and writes outs[l] (m, dims[l + 1]) = f(h W + b),
 * W as panels[l]; h = x for the first layer, outs[l - 1] after. bias[l] may be NULL.
 * `threads` > 1: the pool's workers take parts of each layer (if the pool is free). */
static void lnn_dense_packed_chain_f32(const float *x, ptrdiff_t m, ptrdiff_t layers,
                                       const float *const *panels, const float *const *bias,
                                       const int *act, const ptrdiff_t *dims,
                                       float *const *outs, int threads)
{
    lnn_pk_layer_t ls[32];
    for (ptrdiff_t l0 = 0; l0 < layers; l0 += 32) { /* 32 layers a job */
        const ptrdiff_t count = layers - l0 < 32 ? layers - l0 : 32;
        for (ptrdiff_t i = 0; i < count; i++) {
            const ptrdiff_t l = l0 + i;
            lnn_pk_layer_t L = {l == 0 ? x : outs[l - 1], panels[l], bias[l], outs[l],
                                m, dims[l], dims[l + 1], act[l]};
            ls[i] = L;
        }
        lnn_pk_job_t job = {ls, count, 1};
#if LNN_PK_POOL
        if (threads > LNN_PK_MAX_THREADS) threads = LNN_PK_MAX_THREADS;
        if (threads > 1 && pthread_mutex_trylock(&lnn_pk_pool.busy) == 0) {
            job.threads = lnn_pk_start(threads);
            if (job.threads > threads) job.threads = threads;
            if (job.threads > 1) {
                lnn_pk_pool.job = &job;
                atomic_store(&lnn_pk_pool.done, 0);
                unsigned long g = atomic_load(&lnn_pk_pool.post) >> 8;
                atomic_store(&lnn_pk_pool.post, ((g + 1) << 8) | (unsigned long)job.threads);
                if (atomic_load(&lnn_pk_pool.sleepers) > 0) {
                    pthread_mutex_lock(&lnn_pk_pool.mu);
                    pthread_cond_broadcast(&lnn_pk_pool.cv);
                    pthread_mutex_unlock(&lnn_pk_pool.mu);
                }
                lnn_pk_share(&job, 0);
                for (long spin = 0; atomic_load(&lnn_pk_pool.done) < job.threads - 1; spin++) {
                    lnn_pk_relax();
                    if (spin > LNN_PK_SPIN) sched_yield();
                }
                pthread_mutex_unlock(&lnn_pk_pool.busy);
                continue;
            }
            pthread_mutex_unlock(&lnn_pk_pool.busy);
            job.threads = 1;
        }
#endif
        (void)threads;
        for (ptrdiff_t i = 0; i < count; i++) lnn_pk_layer_part(&ls[i], 0, (ls[i].n + 15) / 16);
    }
}

#endif /* LNN_DENSE_PACKED_H */
