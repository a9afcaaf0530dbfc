/* pool.h: the one native thread pool of the process, shared by every compiled kernel.
 *
 * A job is (fn, ctx, tasks, threads): fn(ctx, i) for every task i in 0 .. tasks-1, on up to
 * `threads` threads, the calling thread one of them. The tasks are cut into `threads`
 * contiguous blocks; thread t claims the tasks of block t one at a time (atomic claim word),
 * then what is left of the other blocks (so a thread the OS has not run yet just gets less,
 * and at batch 1 a core keeps re-reading the same part of the weights). A task writes only
 * its own part of the output: the results do not depend on which thread ran which task, so
 * they are bit for bit the same at any thread count. fn returns 0, or an error code; the job
 * returns the first nonzero code (every task still runs or is skipped; nothing hangs).
 *
 * Workers are pthreads started at the first job that asks for them. Between jobs a worker
 * spins (pause instruction) on the job word for `spin` nanoseconds, then sleeps on a
 * condition variable: a round of back-to-back calls never lets its core halt (on a
 * virtual machine a halted vCPU comes back late and slow), and an idle process stops burning
 * CPU after `spin` (lnn_pool_set_spin; kernels/pool.pyx says how the default was chosen).
 * The spin calls sched_yield() every few tens of microseconds: on an idle core it returns
 * at once, on a busy one it lets the thread waiting there run (our own caller, say). The
 * caller waits for its job's last tasks the same way for `wait` nanoseconds, then sleeps
 * until the last one is done (a worker the OS preempted mid-task needs a core).
 * A job that finds the pool busy (another user thread's job, or a job started from inside a
 * task) runs on its caller alone. After fork() the child starts fresh workers.
 *
 * ONE pool per process: lepton_nn.kernels._pool defines LNN_POOL_IMPL before including this
 * file and exports lnn_pool_api in a capsule; every other extension includes it plainly and
 * binds the capsule at import (lnn_pool_bind). Without it, jobs run on the caller alone.
 */
#ifndef LNN_POOL_H
#define LNN_POOL_H

#include <stddef.h>

typedef int (*lnn_task_fn)(void *ctx, ptrdiff_t task);

typedef struct {
    int version;
    /* run a job; returns the first nonzero task code, else 0 */
    int (*run)(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads);
} lnn_pool_api_t;

#define LNN_POOL_API_VERSION 1

static int lnn_run_alone(lnn_task_fn fn, void *ctx, ptrdiff_t tasks)
{
    int err = 0;
    for (ptrdiff_t i = 0; i < tasks; i++) {
        const int rc = fn(ctx, i);
        if (rc && !err) err = rc;
    }
    return err;
}

#ifndef LNN_POOL_IMPL
/* ---- a user of the pool ---- */
static const lnn_pool_api_t *lnn_pool_api = NULL;

static void lnn_pool_bind(const void *api)
{
    const lnn_pool_api_t *a = (const lnn_pool_api_t *)api;
    lnn_pool_api = (a && a->version == LNN_POOL_API_VERSION) ? a : NULL;
}

/* fn(ctx, i) for i < tasks on up to `threads` threads of the shared pool. */
static int lnn_parallel(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads)
{
    if (threads > 1 && tasks > 1 && lnn_pool_api) return lnn_pool_api->run(fn, ctx, tasks, threads);
    return lnn_run_alone(fn, ctx, tasks);
}

#else
/* ---- the pool itself (lepton_nn.kernels._pool only) ---- */
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define LNN_POOL_MAX 64          /* threads of a job, the caller included */
#define LNN_POOL_BITS 20         /* next task and block end per claim word; generation above */
#define LNN_POOL_MASK ((1ull << LNN_POOL_BITS) - 1)
#define LNN_POOL_GEN_MASK ((1ull << (64 - 2 * LNN_POOL_BITS)) - 1)

static inline void lnn_pool_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline int64_t lnn_pool_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct {
    atomic_int busy;           /* a job is running (its caller set it) */
    pthread_mutex_t mu;        /* sleeping workers */
    pthread_cond_t cv;
    atomic_ullong post;        /* the current job: (generation << 8) | threads */
    atomic_int sleepers;
    atomic_llong spin_ns;      /* a worker's idle spin before it sleeps */
    atomic_llong wait_ns;      /* the caller's spin for the last tasks before it sleeps */
    pthread_mutex_t wait_mu;   /* the caller sleeping until its job's last task is done */
    pthread_cond_t wait_cv;
    atomic_int waiting;
    /* the job: block b holds tasks [start[b], end of block); its claim word packs
     * (generation, block end - start, next - start) */
    atomic_ullong claim[LNN_POOL_MAX];
    ptrdiff_t start[LNN_POOL_MAX];
    atomic_llong done;         /* tasks finished */
    ptrdiff_t tasks;           /* of the job */
    atomic_int err;            /* the first nonzero task code */
    lnn_task_fn fn;
    void *ctx;
    uint64_t gen;
    unsigned long long born;   /* post when the workers were last started */
    int workers;               /* started */
    int atfork;
    /* counters for tests and benchmarks */
    atomic_llong jobs, alone, worker_tasks, sleeps;
} lnn_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
              .wait_mu = PTHREAD_MUTEX_INITIALIZER, .wait_cv = PTHREAD_COND_INITIALIZER};

static pthread_mutex_t lnn_pool_start_mu = PTHREAD_MUTEX_INITIALIZER;

static inline uint64_t lnn_pool_word(uint64_t g, uint64_t size, uint64_t next)
{
    return (g << (2 * LNN_POOL_BITS)) | (size << LNN_POOL_BITS) | next;
}

/* The next task of block b in job g, or -1: none left (*gone = 0) or job g is over. */
static ptrdiff_t lnn_pool_claim(int b, uint64_t g, int *gone)
{
    atomic_ullong *w = &lnn_pool.claim[b];
    unsigned long long v = atomic_load(w);
    for (;;) {
        if ((v >> (2 * LNN_POOL_BITS)) != g) {
            *gone = 1;
            return -1;
        }
        if ((v & LNN_POOL_MASK) >= ((v >> LNN_POOL_BITS) & LNN_POOL_MASK)) return -1;
        if (atomic_compare_exchange_weak(w, &v, v + 1))
            return lnn_pool.start[b] + (ptrdiff_t)(v & LNN_POOL_MASK);
    }
}

/* Thread t's part of job g (threads blocks): its own block, then the others'. Returns the
 * tasks it ran. A successful claim keeps job g alive (its done count is short of the total
 * until the task is counted), so fn, ctx and start[] read after it are job g's. */
static long lnn_pool_share(int t, uint64_t g, int threads)
{
    long ran = 0;
    for (int i = 0; i < threads; i++) {
        const int b = (t + i) % threads;
        for (;;) {
            int gone = 0;
            const ptrdiff_t task = lnn_pool_claim(b, g, &gone);
            if (gone) return ran;
            if (task < 0) break;
            const ptrdiff_t total = lnn_pool.tasks; /* job g's, read while it lives */
            const int rc = lnn_pool.fn(lnn_pool.ctx, task);
            if (rc) {
                int zero = 0;
                atomic_compare_exchange_strong(&lnn_pool.err, &zero, rc);
            }
            ran++;
            if (atomic_fetch_add(&lnn_pool.done, 1) + 1 == total &&
                atomic_load(&lnn_pool.waiting)) { /* the last task: wake the caller */
                pthread_mutex_lock(&lnn_pool.wait_mu);
                pthread_cond_signal(&lnn_pool.wait_cv);
                pthread_mutex_unlock(&lnn_pool.wait_mu);
            }
        }
    }
    return ran;
}

static void *lnn_pool_worker(void *arg)
{
    const int t = (int)(ptrdiff_t)arg; /* 1, 2, ... (the caller is 0) */
    unsigned long long seen = lnn_pool.born;
    for (;;) {
        const int64_t t0 = lnn_pool_ns();
        for (long spin = 0; atomic_load_explicit(&lnn_pool.post, memory_order_acquire) == seen;
             spin++) {
            lnn_pool_relax();
            if (spin & 255) continue;
            if (lnn_pool_ns() - t0 < atomic_load(&lnn_pool.spin_ns)) {
                /* every ~256 pauses (10-40 us): let another thread waiting for this core
                 * run (our own caller, say: a spinning worker must not hold it up); on an
                 * idle core this returns at once and the core never halts */
                sched_yield();
                continue;
            }
            pthread_mutex_lock(&lnn_pool.mu);
            atomic_fetch_add(&lnn_pool.sleepers, 1);
            atomic_fetch_add(&lnn_pool.sleeps, 1);
            while (atomic_load(&lnn_pool.post) == seen) pthread_cond_wait(&lnn_pool.cv, &lnn_pool.mu);
            atomic_fetch_sub(&lnn_pool.sleepers, 1);
            pthread_mutex_unlock(&lnn_pool.mu);
        }
        seen = atomic_load(&lnn_pool.post);
        const int threads = (int)(seen & 0xff);
        if (t < threads) {
            const long ran = lnn_pool_share(t, seen >> 8, threads);
            if (ran) atomic_fetch_add(&lnn_pool.worker_tasks, ran);
        }
    }
    return NULL;
}

/* In a forked child the workers did not come along (nor any job): start afresh. */
static void lnn_pool_after_fork(void)
{
    pthread_mutex_init(&lnn_pool.mu, NULL);
    pthread_cond_init(&lnn_pool.cv, NULL);
    pthread_mutex_init(&lnn_pool_start_mu, NULL);
    pthread_mutex_init(&lnn_pool.wait_mu, NULL);
    pthread_cond_init(&lnn_pool.wait_cv, NULL);
    atomic_store(&lnn_pool.waiting, 0);
    atomic_store(&lnn_pool.sleepers, 0);
    atomic_store(&lnn_pool.busy, 0);
    lnn_pool.workers = 0;
}

/* Start workers up to n - 1 (called with busy set: no job is posted meanwhile); returns the
 * threads the pool can run, the caller included. */
static int lnn_pool_start(int n)
{
    pthread_mutex_lock(&lnn_pool_start_mu);
    if (!lnn_pool.atfork) lnn_pool.atfork = pthread_atfork(NULL, NULL, lnn_pool_after_fork) == 0;
    lnn_pool.born = atomic_load(&lnn_pool.post);
    while (lnn_pool.workers < n - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int bad = pthread_create(&th, &attr, lnn_pool_worker,
                                       (void *)(ptrdiff_t)(lnn_pool.workers + 1));
        pthread_attr_destroy(&attr);
        if (bad) break;
        lnn_pool.workers++;
    }
    const int can = lnn_pool.workers + 1;
    pthread_mutex_unlock(&lnn_pool_start_mu);
    return can;
}

static int lnn_pool_run(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads)
{
    if (threads > LNN_POOL_MAX) threads = LNN_POOL_MAX;
    if (threads > tasks) threads = (int)tasks;
    int idle = 0;
    if (threads < 2 || (ptrdiff_t)((tasks + threads - 1) / threads) > (ptrdiff_t)LNN_POOL_MASK ||
        !atomic_compare_exchange_strong(&lnn_pool.busy, &idle, 1)) {
        atomic_fetch_add(&lnn_pool.alone, 1);
        return lnn_run_alone(fn, ctx, tasks);
    }
    const int can = lnn_pool.workers + 1 >= threads ? threads : lnn_pool_start(threads);
    if (can < threads) threads = can;
    if (threads < 2) {
        atomic_store(&lnn_pool.busy, 0);
        atomic_fetch_add(&lnn_pool.alone, 1);
        return lnn_run_alone(fn, ctx, tasks);
    }
    const uint64_t g = lnn_pool.gen = (lnn_pool.gen + 1) & LNN_POOL_GEN_MASK;
    lnn_pool.fn = fn;
    lnn_pool.ctx = ctx;
    lnn_pool.tasks = tasks;
    atomic_store(&lnn_pool.done, 0);
    atomic_store(&lnn_pool.err, 0);
    for (int b = 0; b < threads; b++) {
        const ptrdiff_t s = tasks * b / threads, e = tasks * (b + 1) / threads;
        lnn_pool.start[b] = s;
        atomic_store(&lnn_pool.claim[b], lnn_pool_word(g, (uint64_t)(e - s), 0));
    }
    atomic_store(&lnn_pool.post, (g << 8) | (unsigned long long)threads);
    if (atomic_load(&lnn_pool.sleepers) > 0) {
        pthread_mutex_lock(&lnn_pool.mu);
        pthread_cond_broadcast(&lnn_pool.cv);
        pthread_mutex_unlock(&lnn_pool.mu);
    }
    lnn_pool_share(0, g, threads);
    /* the tasks still running on workers: spin a while, then sleep (a worker the OS
     * descheduled mid-task needs a core, and a spinning caller would hold one) */
    const int64_t t0 = lnn_pool_ns();
    for (long spin = 0; atomic_load_explicit(&lnn_pool.done, memory_order_acquire) < tasks;
         spin++) {
        lnn_pool_relax();
        if (spin & 255) continue;
        if (lnn_pool_ns() - t0 < atomic_load(&lnn_pool.wait_ns)) {
            sched_yield(); /* a worker preempted mid-task may be waiting for this core */
            continue;
        }
        pthread_mutex_lock(&lnn_pool.wait_mu);
        atomic_store(&lnn_pool.waiting, 1);
        while (atomic_load(&lnn_pool.done) < tasks)
            pthread_cond_wait(&lnn_pool.wait_cv, &lnn_pool.wait_mu);
        atomic_store(&lnn_pool.waiting, 0);
        pthread_mutex_unlock(&lnn_pool.wait_mu);
    }
    const int err = atomic_load(&lnn_pool.err);
    atomic_fetch_add(&lnn_pool.jobs, 1);
    atomic_store(&lnn_pool.busy, 0);
    return err;
}

/* Wake sleeping workers without a job (they spin again for `spin`): called ahead of a run
 * whose first parallel region comes a little later, so that their cores are back by then.
 * Nothing to do if none sleeps or a job is running. */
static void lnn_pool_wake(void)
{
    int idle = 0;
    if (atomic_load(&lnn_pool.sleepers) == 0 ||
        !atomic_compare_exchange_strong(&lnn_pool.busy, &idle, 1))
        return;
    const uint64_t g = lnn_pool.gen = (lnn_pool.gen + 1) & LNN_POOL_GEN_MASK;
    atomic_store(&lnn_pool.post, g << 8); /* a job for no thread */
    pthread_mutex_lock(&lnn_pool.mu);
    pthread_cond_broadcast(&lnn_pool.cv);
    pthread_mutex_unlock(&lnn_pool.mu);
    atomic_store(&lnn_pool.busy, 0);
}

static void lnn_pool_set_spin(long long ns)
{
    atomic_store(&lnn_pool.spin_ns, ns < 0 ? 0 : ns);
}

static void lnn_pool_set_wait(long long ns)
{
    atomic_store(&lnn_pool.wait_ns, ns < 0 ? 0 : ns);
}

static long long lnn_pool_stat(int which)
{
    switch (which) {
    case 0: return atomic_load(&lnn_pool.jobs);
    case 1: return atomic_load(&lnn_pool.alone);
    case 2: return atomic_load(&lnn_pool.worker_tasks);
    case 3: return atomic_load(&lnn_pool.sleeps);
    case 4: return atomic_load(&lnn_pool.spin_ns);
    case 5: return atomic_load(&lnn_pool.wait_ns);
    }
    return 0;
}

static int lnn_pool_workers(void) { return lnn_pool.workers; }

#define LNN_POOL_THREADED 1
#else /* no pthreads: every job on its caller */
static int lnn_pool_run(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads)
{
    (void)threads;
    return lnn_run_alone(fn, ctx, tasks);
}
static void lnn_pool_set_spin(long long ns) { (void)ns; }
static void lnn_pool_set_wait(long long ns) { (void)ns; }
static void lnn_pool_wake(void) {}
static long long lnn_pool_stat(int which) { (void)which; return 0; }
static int lnn_pool_workers(void) { return 0; }
#define LNN_POOL_THREADED 0
#endif

static const lnn_pool_api_t lnn_pool_api_impl = {LNN_POOL_API_VERSION, lnn_pool_run};
#endif /* LNN_POOL_IMPL */
#endif /* LNN_POOL_H */
