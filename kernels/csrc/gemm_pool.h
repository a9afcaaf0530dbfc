/* gemm_pool.h: lnn_gemm_train_f32, the training GEMM of gemm_train.h on up to `threads`
 * threads of a small persistent native pool.
 *
 * The caller packs A' once; the units (64 columns each) are then claimed one at a time by
 * whichever thread asks next, the caller included, so a worker the OS has not run yet simply
 * takes fewer (OpenBLAS splits a GEMM into fixed shares: on a busy machine one late thread
 * stalled the whole call). Every unit computes its columns exactly as one thread would, so the
 * result is bit-identical at any thread count.
 *
 * Workers are pthreads started at the first call that wants them; between calls they spin
 * for LNN_GT_IDLE_NS on the post word, then sleep on a condition variable. The claim word
 * packs (generation, next unit): a claim is a compare-and-swap that fails once its call is
 * over, so a worker that wakes late never touches a later call. A caller that finds the pool
 * busy (another thread's call) runs its call alone.
 */
#ifndef LNN_GEMM_POOL_H
#define LNN_GEMM_POOL_H

#include "gemm_train.h"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#define LNN_GT_POOL 1
#define LNN_GT_MAX_THREADS 16
#define LNN_GT_IDLE_NS 50000 /* a worker spins this long for the next call, then sleeps */
#define LNN_GT_WAIT_NS 50000 /* the caller spins this long for the last units, then yields */

static inline void lnn_gt_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline int64_t lnn_gt_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct {
    pthread_mutex_t busy; /* held by the caller whose call the pool runs */
    pthread_mutex_t mu;   /* sleeping workers */
    pthread_cond_t cv;
    atomic_ullong post;  /* (generation << 8) | threads of the call */
    atomic_ullong claim; /* (generation << 32) | next unit */
    atomic_llong done;   /* units finished in this call */
    atomic_int failed;   /* a unit could not get its scratch */
    lnn_gt_call_t call;
    ptrdiff_t units;
    uint64_t gen;
    int workers; /* started */
    int atfork;
} lnn_gt_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

/* Claim and run units of call g until none is left or the call is over. */
static void lnn_gt_share(uint64_t g)
{
    for (;;) {
        unsigned long long v = atomic_load(&lnn_gt_pool.claim);
        if ((v >> 32) != (g & 0xffffffffu)) return;
        const ptrdiff_t u = (ptrdiff_t)(v & 0xffffffffu);
        if (u >= lnn_gt_pool.units) return;
        if (!atomic_compare_exchange_weak(&lnn_gt_pool.claim, &v, v + 1)) continue;
        /* call g lives until this unit is counted: its fields are stable */
        if (lnn_gt_unit(&lnn_gt_pool.call, u) != 0) atomic_store(&lnn_gt_pool.failed, 1);
        atomic_fetch_add(&lnn_gt_pool.done, 1);
    }
}

static void *lnn_gt_worker(void *arg)
{
    const int index = (int)(intptr_t)arg; /* 1 .. workers */
    unsigned long long seen = atomic_load(&lnn_gt_pool.post);
    for (;;) {
        unsigned long long p = atomic_load(&lnn_gt_pool.post);
        const int64_t t0 = lnn_gt_ns();
        for (long spin = 0; p == seen; spin++) {
            lnn_gt_relax();
            p = atomic_load(&lnn_gt_pool.post);
            if ((spin & 255) == 255 && lnn_gt_ns() - t0 > LNN_GT_IDLE_NS) {
                pthread_mutex_lock(&lnn_gt_pool.mu);
                while ((p = atomic_load(&lnn_gt_pool.post)) == seen)
                    pthread_cond_wait(&lnn_gt_pool.cv, &lnn_gt_pool.mu);
                pthread_mutex_unlock(&lnn_gt_pool.mu);
            }
        }
        seen = p;
        if ((int)(p & 0xff) > index) lnn_gt_share(p >> 8);
    }
    return NULL;
}

/* In a forked child the workers did not come along: start afresh. */
static void lnn_gt_after_fork(void)
{
    pthread_mutex_init(&lnn_gt_pool.busy, NULL);
    pthread_mutex_init(&lnn_gt_pool.mu, NULL);
    pthread_cond_init(&lnn_gt_pool.cv, NULL);
    lnn_gt_pool.workers = 0;
}

/* Start workers up to n - 1 (the caller holds busy); returns the threads available. */
static int lnn_gt_start(int n)
{
    if (!lnn_gt_pool.atfork) {
        lnn_gt_pool.atfork = 1;
        pthread_atfork(NULL, NULL, lnn_gt_after_fork);
    }
    while (lnn_gt_pool.workers < n - 1) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        const int ok = pthread_create(&t, &at, lnn_gt_worker,
                                      (void *)(intptr_t)(lnn_gt_pool.workers + 1)) == 0;
        pthread_attr_destroy(&at);
        if (!ok) break;
        lnn_gt_pool.workers++;
    }
    return lnn_gt_pool.workers + 1;
}
#endif

/* C (m, n) = A' B' (A' = ta ? A^T : A, B' = tb ? B^T : B; A, B, C C-contiguous) on up to
 * `threads` threads. Returns 0, or -1 if scratch memory could not be had. */
static int lnn_gemm_train_f32(const float *a, int ta, const float *b, int tb, float *c,
                              ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, int threads)
{
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0) {
        memset(c, 0, (size_t)(m * n) * sizeof(float));
        return 0;
    }
    lnn_gt_call_t G;
    if (lnn_gt_prepare(&G, a, ta, b, tb, c, m, n, k) != 0) return -1;
    const ptrdiff_t units = (n + LNN_GT_UNIT - 1) / LNN_GT_UNIT;
    if (threads > units) threads = (int)units;
#if LNN_GT_POOL
    if (threads > LNN_GT_MAX_THREADS) threads = LNN_GT_MAX_THREADS;
    if (threads > 1 && pthread_mutex_trylock(&lnn_gt_pool.busy) == 0) {
        threads = lnn_gt_start(threads);
        const uint64_t g = ++lnn_gt_pool.gen;
        lnn_gt_pool.call = G;
        lnn_gt_pool.units = units;
        atomic_store(&lnn_gt_pool.done, 0);
        atomic_store(&lnn_gt_pool.failed, 0);
        atomic_store(&lnn_gt_pool.claim, (unsigned long long)(g & 0xffffffffu) << 32);
        pthread_mutex_lock(&lnn_gt_pool.mu);
        atomic_store(&lnn_gt_pool.post, (g << 8) | (unsigned long long)threads);
        pthread_cond_broadcast(&lnn_gt_pool.cv);
        pthread_mutex_unlock(&lnn_gt_pool.mu);
        lnn_gt_share(g);
        const int64_t t0 = lnn_gt_ns();
        for (long spin = 0; atomic_load(&lnn_gt_pool.done) < units; spin++) {
            lnn_gt_relax();
            if ((spin & 63) == 63 && lnn_gt_ns() - t0 > LNN_GT_WAIT_NS) sched_yield();
        }
        const int failed = atomic_load(&lnn_gt_pool.failed);
        pthread_mutex_unlock(&lnn_gt_pool.busy);
        lnn_gt_scratch(0, -1);
        return failed ? -1 : 0;
    }
#endif
    int rc = 0;
    for (ptrdiff_t u = 0; u < units && rc == 0; u++) rc = lnn_gt_unit(&G, u);
    lnn_gt_scratch(0, -1);
    return rc;
}

#endif /* LNN_GEMM_POOL_H */
