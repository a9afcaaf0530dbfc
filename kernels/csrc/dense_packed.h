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
 * Threads: each layer's panels are cut into `threads` contiguous ranges, thread t owning
 * range t (so at batch 1 each core keeps re-reading the same part of the weights and may find
 * it in its own L2); a thread done with its own range takes units left in the others (see
 * "the pool" below). The workers are pthreads started once; between jobs they spin on an
 * atomic word for LNN_PK_IDLE_NS, then sleep on a condition variable. A caller that finds
 * the pool busy (another thread's job) runs its job alone.
 */
#ifndef LNN_DENSE_PACKED_H
#define LNN_DENSE_PACKED_H

#include <stddef.h>
#include <string.h>

#include "dense.h" /* lnn_bias_act_forward_f32, LNN_* activation codes */

#define LNN_PK_NR 16  /* columns of a panel */
#ifndef LNN_PK_KC
/* K block from 4 rows on: <= 64 KB of a panel, read from L2 by each row block (64 bytes per 12
 * FMAs: the L1 prefetcher keeps up). Blocks of 256 (16 KB, kept in L1) made 4x the tile calls
 * and accumulator reloads and measured 4-7 % slower at 16-256 rows (benchmarks/
 * bench_dense_ab.py). */
#define LNN_PK_KC 1024
#endif

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

/* A range of `len` panels is cut into units: up to 3 rows, groups of near-equal width of at
 * most 6 / m panels (one tile each, the whole K); from 4 rows on, one panel each. */
static ptrdiff_t lnn_pk_units(const lnn_pk_layer_t *L, ptrdiff_t len)
{
    if (len <= 0 || L->m <= 0) return 0;
    if (L->m <= 3) {
        const ptrdiff_t cap = 6 / L->m;
        return (len + cap - 1) / cap;
    }
    return len;
}

/* Unit u of the `units` of panels [p0, p1), every row. */
static void lnn_pk_unit(const lnn_pk_layer_t *L, ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t units,
                        ptrdiff_t u)
{
    const ptrdiff_t m = L->m;
    if (m <= 3) {
        const ptrdiff_t len = p1 - p0, a = p0 + u * len / units, b = p0 + (u + 1) * len / units;
        lnn_pk_tile_any(L, 0, (int)m, a, (int)(b - a), 0, L->k, NULL);
        return;
    }
    /* K in equal blocks of at most LNN_PK_KC (2000 = 2 x 1000, not 1024 + 976) */
    const ptrdiff_t blocks = (L->k + LNN_PK_KC - 1) / LNN_PK_KC;
    const ptrdiff_t kc = blocks > 1 ? (L->k + blocks - 1) / blocks : LNN_PK_KC;
    /* row blocks of near-equal height <= 6: 64 rows = 9 x 6 + 2 x 5, not 10 x 6 + 4 (a 4-row
     * tile has 8 FMA chains: exactly latency 4 x 2 FMA units, no slack) */
    const ptrdiff_t blocks_m = (m + 5) / 6;
    const float *pan = L->pan + (p0 + u) * L->k * LNN_PK_NR;
    for (ptrdiff_t k0 = 0;; k0 += kc) { /* a block of the panel in L2 ... */
        const ptrdiff_t k1 = k0 + kc < L->k ? k0 + kc : L->k;
        for (ptrdiff_t b = 0; b < blocks_m; b++) { /* ... for every block of rows */
            const ptrdiff_t r0 = m * b / blocks_m, r1 = m * (b + 1) / blocks_m;
            /* the last row block brings the panel's next K block in meanwhile (a line per k:
             * when that block is as long as this one, not past the panel's end) */
            const int next = b == blocks_m - 1 && k1 + (k1 - k0) <= L->k;
            const float *pf = next ? pan + k1 * LNN_PK_NR : NULL;
            lnn_pk_tile_any(L, r0, (int)(r1 - r0), p0 + u, 1, k0, k1, pf);
        }
        if (k1 >= L->k) break;
    }
}

/* Every unit of a layer on the calling thread. */
static void lnn_pk_layer_alone(const lnn_pk_layer_t *L)
{
    ptrdiff_t p0, p1;
    lnn_pk_range(L, 0, 1, &p0, &p1);
    const ptrdiff_t units = lnn_pk_units(L, p1 - p0);
    for (ptrdiff_t u = 0; u < units; u++) lnn_pk_unit(L, p0, p1, units, u);
}

/* ---- the pool ---------------------------------------------------------------------------- */
/* A job's layers are copied into the pool. Each thread t owns a range of each layer's panels
 * and claims its units one at a time from the range's claim word, then claims what is left of
 * the other ranges (a thread the OS has not run yet simply gets less; nobody waits for a
 * thread that holds no unit). A claim word packs (generation, units in the range, next unit):
 * a claim is a compare-and-swap that fails once the job's generation is over, so a worker
 * that wakes late never touches a later job. A layer starts once the previous one's done
 * word counts all its units. */

#define LNN_PK_MAX_THREADS 16
#define LNN_PK_MAX_LAYERS 32

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#define LNN_PK_POOL 1

#define LNN_PK_IDLE_NS 100000 /* a worker spins this long for the next job, then sleeps */
#define LNN_PK_WAIT_NS 50000  /* a wait spins this long, then yields the core each round */
#define LNN_PK_BITS 18        /* units and counts per word; the generation above them */
#define LNN_PK_MASK ((1ull << LNN_PK_BITS) - 1)
#define LNN_PK_GEN_MASK ((1ull << (64 - 2 * LNN_PK_BITS)) - 1)

static inline void lnn_pk_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline int64_t lnn_pk_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* (generation, total, count) in one word */
static inline uint64_t lnn_pk_word(uint64_t g, uint64_t total, uint64_t count)
{
    return (g << (2 * LNN_PK_BITS)) | (total << LNN_PK_BITS) | count;
}

static struct {
    pthread_mutex_t busy; /* held by the caller whose job the pool runs */
    pthread_mutex_t mu;   /* sleeping workers */
    pthread_cond_t cv;
    atomic_ullong post;   /* a new job: (generation << 8) | threads */
    atomic_int sleepers;
    atomic_int count;     /* layers of the job */
    atomic_ullong claim[LNN_PK_MAX_LAYERS][LNN_PK_MAX_THREADS];
    atomic_ullong done[LNN_PK_MAX_LAYERS]; /* (generation, units, units done) */
    lnn_pk_layer_t layers[LNN_PK_MAX_LAYERS];
    uint64_t gen;
    unsigned long long born; /* post when workers were last started */
    int workers;             /* started */
    int atfork;
} lnn_pk_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static pthread_mutex_t lnn_pk_start_mu = PTHREAD_MUTEX_INITIALIZER;

/* The next unit of a claim word, or -1: none left (*gone = 0) or generation g is over. */
static ptrdiff_t lnn_pk_claim(atomic_ullong *w, uint64_t g, int *gone)
{
    unsigned long long v = atomic_load(w);
    for (;;) {
        if ((v >> (2 * LNN_PK_BITS)) != g) {
            *gone = 1;
            return -1;
        }
        if ((v & LNN_PK_MASK) >= ((v >> LNN_PK_BITS) & LNN_PK_MASK)) return -1;
        if (atomic_compare_exchange_weak(w, &v, v + 1)) return (ptrdiff_t)(v & LNN_PK_MASK);
    }
}

/* Wait until layer l of job g is complete (1), or the job is over (0). */
static int lnn_pk_wait_done(int l, uint64_t g)
{
    int64_t t0 = 0;
    for (long spin = 0;; spin++) {
        const unsigned long long v = atomic_load(&lnn_pk_pool.done[l]);
        if ((v >> (2 * LNN_PK_BITS)) != g) return 0;
        if ((v & LNN_PK_MASK) == ((v >> LNN_PK_BITS) & LNN_PK_MASK)) return 1;
        lnn_pk_relax();
        if ((spin & 63) == 0) {
            const int64_t now = lnn_pk_ns();
            if (t0 == 0) t0 = now;
            if (now - t0 > LNN_PK_WAIT_NS) sched_yield(); /* the holder was descheduled */
        }
    }
}

/* Thread t's part of job g: per layer, its own range's units, then the others'. */
static void lnn_pk_share(int t, uint64_t g, int threads, int count)
{
    for (int l = 0; l < count && l < LNN_PK_MAX_LAYERS; l++) {
        if (l > 0 && !lnn_pk_wait_done(l - 1, g)) return;
        for (int i = 0; i < threads; i++) {
            const int o = (t + i) % threads;
            for (;;) {
                int gone = 0;
                const ptrdiff_t u = lnn_pk_claim(&lnn_pk_pool.claim[l][o], g, &gone);
                if (gone) return;
                if (u < 0) break;
                /* job g lives until this unit is counted: its layer is stable */
                const lnn_pk_layer_t *L = &lnn_pk_pool.layers[l];
                ptrdiff_t p0, p1;
                lnn_pk_range(L, o, threads, &p0, &p1);
                lnn_pk_unit(L, p0, p1, lnn_pk_units(L, p1 - p0), u);
                atomic_fetch_add(&lnn_pk_pool.done[l], 1);
            }
        }
    }
}

static void *lnn_pk_worker(void *arg)
{
    const int t = (int)(ptrdiff_t)arg; /* 1, 2, ... */
    unsigned long long seen = lnn_pk_pool.born; /* the last job before this worker was made */
    for (;;) {
        const int64_t t0 = lnn_pk_ns();
        for (long spin = 0; atomic_load(&lnn_pk_pool.post) == seen; spin++) {
            lnn_pk_relax();
            if ((spin & 63) || lnn_pk_ns() - t0 < LNN_PK_IDLE_NS) continue;
            pthread_mutex_lock(&lnn_pk_pool.mu);
            atomic_fetch_add(&lnn_pk_pool.sleepers, 1);
            while (atomic_load(&lnn_pk_pool.post) == seen)
                pthread_cond_wait(&lnn_pk_pool.cv, &lnn_pk_pool.mu);
            atomic_fetch_sub(&lnn_pk_pool.sleepers, 1);
            pthread_mutex_unlock(&lnn_pk_pool.mu);
        }
        seen = atomic_load(&lnn_pk_pool.post);
        if (t < (int)(seen & 0xff))
            lnn_pk_share(t, seen >> 8, (int)(seen & 0xff), atomic_load(&lnn_pk_pool.count));
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
    lnn_pk_pool.workers = 0;
}

/* Start workers up to n - 1; returns how many threads the pool can run (>= 1). Called with
 * `busy` held: no job is posted meanwhile. */
static int lnn_pk_start(int n)
{
    pthread_mutex_lock(&lnn_pk_start_mu);
    if (!lnn_pk_pool.atfork) {
        pthread_atfork(NULL, NULL, lnn_pk_after_fork);
        lnn_pk_pool.atfork = 1;
    }
    lnn_pk_pool.born = atomic_load(&lnn_pk_pool.post);
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

/* Run `count` layers on up to `threads` threads of the pool; 0 if it could not (busy with
 * another caller's job, no workers, a layer too wide for a claim word). */
static int lnn_pk_pool_run(const lnn_pk_layer_t *ls, int count, int threads)
{
    if (threads > LNN_PK_MAX_THREADS) threads = LNN_PK_MAX_THREADS;
    if (threads < 2 || count > LNN_PK_MAX_LAYERS) return 0;
    for (int l = 0; l < count; l++)
        if ((ls[l].n + LNN_PK_NR - 1) / LNN_PK_NR > (ptrdiff_t)LNN_PK_MASK) return 0;
    if (pthread_mutex_trylock(&lnn_pk_pool.busy) != 0) return 0;
    const int can = lnn_pk_start(threads);
    threads = can < threads ? can : threads;
    if (threads < 2) {
        pthread_mutex_unlock(&lnn_pk_pool.busy);
        return 0;
    }
    const uint64_t g = lnn_pk_pool.gen = (lnn_pk_pool.gen + 1) & LNN_PK_GEN_MASK;
    for (int l = 0; l < count; l++) {
        const lnn_pk_layer_t *L = &ls[l];
        uint64_t total = 0;
        lnn_pk_pool.layers[l] = *L;
        for (int o = 0; o < threads; o++) {
            ptrdiff_t p0, p1;
            lnn_pk_range(L, o, threads, &p0, &p1);
            const uint64_t units = (uint64_t)lnn_pk_units(L, p1 - p0);
            atomic_store(&lnn_pk_pool.claim[l][o], lnn_pk_word(g, units, 0));
            total += units;
        }
        atomic_store(&lnn_pk_pool.done[l], lnn_pk_word(g, total, 0));
    }
    atomic_store(&lnn_pk_pool.count, count);
    atomic_store(&lnn_pk_pool.post, (g << 8) | (unsigned long long)threads);
    if (atomic_load(&lnn_pk_pool.sleepers) > 0) {
        pthread_mutex_lock(&lnn_pk_pool.mu);
        pthread_cond_broadcast(&lnn_pk_pool.cv);
        pthread_mutex_unlock(&lnn_pk_pool.mu);
    }
    lnn_pk_share(0, g, threads, count);
    lnn_pk_wait_done(count - 1, g);
    pthread_mutex_unlock(&lnn_pk_pool.busy);
    return 1;
}
#endif /* pthreads */

/* The chain: layer l reads h (m, dims[l]) and writes outs[l] (m, dims[l + 1]) = f(h W + b),
 * W as panels[l]; h = x for the first layer, outs[l - 1] after. bias[l] may be NULL.
 * `threads` > 1: the pool's workers share each layer (if the pool is free). */
static void lnn_dense_packed_chain_f32(const float *x, ptrdiff_t m, ptrdiff_t layers,
                                       const float *const *panels, const float *const *bias,
                                       const int *act, const ptrdiff_t *dims,
                                       float *const *outs, int threads)
{
    lnn_pk_layer_t ls[LNN_PK_MAX_LAYERS];
    for (ptrdiff_t l0 = 0; l0 < layers; l0 += LNN_PK_MAX_LAYERS) {
        const ptrdiff_t left = layers - l0;
        const int count = (int)(left < LNN_PK_MAX_LAYERS ? left : LNN_PK_MAX_LAYERS);
        for (int i = 0; i < count; i++) {
            const ptrdiff_t l = l0 + i;
            lnn_pk_layer_t L = {l == 0 ? x : outs[l - 1], panels[l], bias[l], outs[l],
                                m, dims[l], dims[l + 1], act[l]};
            ls[i] = L;
        }
#if LNN_PK_POOL
        if (lnn_pk_pool_run(ls, count, threads)) continue;
#endif
        (void)threads;
        for (int i = 0; i < count; i++) lnn_pk_layer_alone(&ls[i]);
    }
}

#endif /* LNN_DENSE_PACKED_H */
