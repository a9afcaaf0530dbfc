/* pool_impl.h: the pool's definition (included by kernels/pool.pyx only, and by the C
 * harnesses in benchmarks/; see pool.h for the API and the users' side). */
#ifndef LNN_POOL_IMPL_H
#define LNN_POOL_IMPL_H
#define LNN_POOL_IMPL 1
#include "pool.h"
#include "spin_hint.h"

/* ---- the pool itself (lepton_nn.kernels._pool only) ---- */
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#if defined(__linux__) /* CPU numbers and thread affinities: the keep-apart rule */
#include <sys/syscall.h>
#include <unistd.h>
#define LNN_POOL_AFFINITY 1
static inline int lnn_pool_cpu(void) { return sched_getcpu(); }
#else /* elsewhere: no CPU numbers, every spinner yields, no thread is moved */
#define LNN_POOL_AFFINITY 0
static inline int lnn_pool_cpu(void) { return -1; }
#endif

#define LNN_POOL_MAX 64          /* threads of a job, the caller included */
#define LNN_POOL_PHASES 16       /* phases of one job (a longer list runs as several jobs) */
#define LNN_POOL_BITS 20         /* count per claim / done word; the job's generation above */
#define LNN_POOL_MASK ((1ull << LNN_POOL_BITS) - 1)
#define LNN_POOL_GEN_MASK ((1ull << (64 - LNN_POOL_BITS)) - 1)
#define LNN_POOL_APART_HOLD_S 1  /* a worker kept off its caller's CPU: for 1 s of sleep */
#define LNN_POOL_BUSY_NS 20000000 /* a moved worker that ran under 3/4 of 20 ms gives up ... */
#define LNN_POOL_HOLD_OFF_NS 1000000000 /* ... and is not moved again for 1 s */

static inline void lnn_pool_relax(void)
{
    LNN_SPIN_HINT();
}

static inline int64_t lnn_pool_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Block b of each phase of the job: its claim word packs (generation, next - start), its
 * done word (generation, tasks of the block finished); a word of an earlier job counts 0,
 * so nothing is reset before a post: the caller used to rewrite every block's words, taking
 * back the lines the workers wrote last job, and a worker then fetched its own block's
 * words back before its first claim (the 784-512-256-10 chain at batch 1 on 2 pinned
 * threads: the worker's first unit 0.3-0.4 us sooner without). The block's tasks follow
 * from the phase's task count (lnn_pool_span). Cache lines of its own: another thread
 * touches them only to take what is left of block b, or to see whether a phase is
 * complete. */
typedef struct {
    atomic_ullong claim[LNN_POOL_PHASES];
    atomic_ullong done[LNN_POOL_PHASES];
} __attribute__((aligned(64))) lnn_pool_block_t;

static lnn_pool_block_t lnn_pool_blocks[LNN_POOL_MAX];

/* Worker t as the others see it: its thread id and the CPU it last ran on (published as it
 * spins and as it claims, written only when it changes: the caller reads it every job), the
 * CPU set it started with, whether the caller has moved it off a CPU (kept off it until it
 * has slept a second), and when; then, on a line of the worker's own, what it alone writes. */
typedef struct {
    atomic_int cpu;
    atomic_int ready;    /* tid and mask are set */
    atomic_int moved;
    int64_t moved_ns;
    atomic_llong hold_off; /* not moved again before (ns) */
#if LNN_POOL_AFFINITY
    pid_t tid;
    cpu_set_t mask;
#endif
    /* the worker's own line */
    int64_t window __attribute__((aligned(64))); /* when it last looked at its CPU time ... */
    int64_t ran;                                 /* ... and that time */
    atomic_llong tasks, sleeps, backoffs, shared; /* counters (lnn_pool_stat) */
    /* worker 1: its first claim in job first_gen, when (ns after the post), which CPU */
    atomic_ullong first_gen;
    int64_t first_ns;
    int first_cpu;
} __attribute__((aligned(64))) lnn_pool_peer_t;

static lnn_pool_peer_t lnn_pool_peers[LNN_POOL_MAX];

/* One job as its caller and worker 1 saw it (lnn_pool_set_trace, bench_pool_dist.py) */
typedef struct {
    int64_t post_ns;     /* CLOCK_MONOTONIC at the post */
    int64_t claim_ns;    /* worker 1's first claim, ns after the post; -1: it ran no task */
    int64_t job_ns;      /* post to the caller past the last barrier */
    int32_t caller_cpu;  /* at the post */
    int32_t worker_cpu;  /* worker 1's at its first claim; -1: it ran no task */
} lnn_pool_rec_t;

/* Phase p of the posted job, tagged with the job's generation (0 while the caller rewrites
 * it): a worker that saw job g reads fn, ctx and tasks only as a whole and only if the tag
 * is g before and after (a seqlock; lnn_pool_phase_get), so a worker that comes late, after
 * job g is over, never takes the next job's count of tasks for job g's. */
typedef struct {
    atomic_ullong tag;
    lnn_task_fn fn;
    void *ctx;
    ptrdiff_t tasks;
} lnn_pool_desc_t;

/* The pool's state, by who writes it: the job as posted (the caller, once a job: the post
 * word and phase 0 share a line, the one line a worker must fetch to start), the caller's
 * own, the knobs (seldom written), the locks of sleepers. */
static struct {
    /* the job: post = (generation << 16) | (phases << 8) | threads */
    atomic_ullong post __attribute__((aligned(64)));
    int64_t post_ns;           /* when (worker 1's first claim is timed from it) */
    atomic_int caller_cpu;     /* the caller's CPU when it posted the job */
    atomic_int err;            /* the first nonzero task code */
    uint64_t gen;
    lnn_pool_desc_t phase[LNN_POOL_PHASES];
    /* the caller's */
    atomic_int busy __attribute__((aligned(64))); /* a job is running (its caller set it) */
    int workers;               /* started */
    int atfork;
    unsigned long long born;   /* post when the workers were last started */
    atomic_llong jobs, alone, phases, nudges; /* counters for tests and benchmarks */
    lnn_pool_rec_t *trace;     /* a record per job for the benchmarks (lnn_pool_set_trace) */
    long trace_cap, trace_len;
    /* knobs and counts of sleepers: read often, written seldom */
    atomic_int sleepers __attribute__((aligned(64)));
    atomic_int waiting;        /* threads asleep at a barrier */
    atomic_llong spin_ns;      /* a worker's idle spin before it sleeps */
    atomic_llong wait_ns;      /* a spin at a barrier before the thread sleeps */
    atomic_int apart;          /* keep a job's threads on different CPUs (lnn_pool_keep_apart) */
    /* sleeping workers; threads sleeping at a barrier until a task is done */
    pthread_mutex_t mu __attribute__((aligned(64)));
    pthread_cond_t cv;
    pthread_mutex_t wait_mu;
    pthread_cond_t wait_cv;
} lnn_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
              .wait_mu = PTHREAD_MUTEX_INITIALIZER, .wait_cv = PTHREAD_COND_INITIALIZER};

static pthread_mutex_t lnn_pool_start_mu = PTHREAD_MUTEX_INITIALIZER;

/* The next job's generation (the caller's, with busy set): 1, 2, ... (0 marks a phase being
 * rewritten) */
static inline uint64_t lnn_pool_next_gen(void)
{
    uint64_t g = (lnn_pool.gen + 1) & LNN_POOL_GEN_MASK;
    return lnn_pool.gen = g ? g : 1;
}

/* Phase p of job g into *ph: 1, or 0 when job g is over (the phase is another job's). */
static int lnn_pool_phase_get(int p, uint64_t g, lnn_phase_t *ph)
{
    lnn_pool_desc_t *d = &lnn_pool.phase[p];
    if (atomic_load_explicit(&d->tag, memory_order_acquire) != g) return 0;
    ph->fn = __atomic_load_n(&d->fn, __ATOMIC_RELAXED);
    ph->ctx = __atomic_load_n(&d->ctx, __ATOMIC_RELAXED);
    ph->tasks = __atomic_load_n(&d->tasks, __ATOMIC_RELAXED);
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&d->tag, memory_order_relaxed) == g;
}

/* The caller's side: phase p of job g (no thread of an earlier job reads it half written). */
static void lnn_pool_phase_set(int p, uint64_t g, const lnn_phase_t *ph)
{
    lnn_pool_desc_t *d = &lnn_pool.phase[p];
    atomic_store_explicit(&d->tag, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    __atomic_store_n(&d->fn, ph->fn, __ATOMIC_RELAXED);
    __atomic_store_n(&d->ctx, ph->ctx, __ATOMIC_RELAXED);
    __atomic_store_n(&d->tasks, ph->tasks > 0 ? ph->tasks : 0, __ATOMIC_RELAXED);
    atomic_store_explicit(&d->tag, g, memory_order_release);
}

/* Block b of `threads` of a phase of `tasks`: tasks [ceil(tasks b / threads), ...); its
 * size. */
static inline ptrdiff_t lnn_pool_span(ptrdiff_t tasks, int b, int threads, ptrdiff_t *start)
{
    *start = (tasks * b + threads - 1) / threads;
    return (tasks * (b + 1) + threads - 1) / threads - *start;
}

/* The count of word v in job g: v's count if v is job g's, 0 if an earlier job's; -1 if a
 * later job's (job g is over). */
static inline ptrdiff_t lnn_pool_count(unsigned long long v, uint64_t g)
{
    const uint64_t d = ((v >> LNN_POOL_BITS) - g) & LNN_POOL_GEN_MASK;
    if (d == 0) return (ptrdiff_t)(v & LNN_POOL_MASK);
    return d < (LNN_POOL_GEN_MASK >> 1) ? -1 : 0;
}

/* Whether word v is of a job before g. */
static inline int lnn_pool_older(unsigned long long v, uint64_t g)
{
    return lnn_pool_count(v, g) == 0 && (v >> LNN_POOL_BITS) != g;
}

/* The next task of block b (of `threads`) of phase p of `tasks` tasks in job g, or -1: none
 * left (*gone = 0) or job g is over. The first claim of the block in job g (from a word of
 * an earlier job: job g is running) first makes the block's done word job g's, count 0, so
 * that a finished task is counted with one atomic add. */
static ptrdiff_t lnn_pool_claim(int b, int p, uint64_t g, ptrdiff_t tasks, int threads,
                                int *gone)
{
    ptrdiff_t start;
    const ptrdiff_t size = lnn_pool_span(tasks, b, threads, &start);
    if (size <= 0) return -1;
    atomic_ullong *w = &lnn_pool_blocks[b].claim[p];
    unsigned long long v = atomic_load_explicit(w, memory_order_acquire);
    for (;;) {
        const ptrdiff_t k = lnn_pool_count(v, g);
        if (k < 0) {
            *gone = 1;
            return -1;
        }
        if (k >= size) return -1;
        if (k == 0 && lnn_pool_older(v, g)) { /* the block's first claim in job g */
            atomic_ullong *d = &lnn_pool_blocks[b].done[p];
            unsigned long long dv = atomic_load_explicit(d, memory_order_relaxed);
            while (lnn_pool_older(dv, g) &&
                   !atomic_compare_exchange_weak(d, &dv, (unsigned long long)g << LNN_POOL_BITS)) {
            }
        }
        if (atomic_compare_exchange_weak(w, &v, (g << LNN_POOL_BITS) | (uint64_t)(k + 1)))
            return start + k;
    }
}

/* Phase p (of `tasks`) of job g on `threads` blocks: 1 every task done, 0 not yet, -1 job g
 * is over. */
static int lnn_pool_phase_state(int p, uint64_t g, ptrdiff_t tasks, int threads)
{
    for (int b = 0; b < threads; b++) {
        ptrdiff_t start;
        const ptrdiff_t size = lnn_pool_span(tasks, b, threads, &start);
        if (size <= 0) continue;
        const ptrdiff_t k = lnn_pool_count(
            atomic_load_explicit(&lnn_pool_blocks[b].done[p], memory_order_acquire), g);
        if (k < 0) return -1;
        if (k < size) return 0;
    }
    return 1;
}

/* Whether thread `self` of a job of `threads`, spinning, should yield its CPU: when another
 * thread of the job last ran on this CPU (it may be waiting for it). On a CPU of its own a
 * yield is wasted at best; at worst it hands the CPU to another process for a whole time
 * slice (milliseconds) while the job waits for this thread. */
static int lnn_pool_yield_for(int self, int threads)
{
    const int me = lnn_pool_cpu();
    if (me < 0) return 1;
    if (self && me == atomic_load_explicit(&lnn_pool.caller_cpu, memory_order_relaxed)) return 1;
    for (int t = 1; t < threads; t++)
        if (t != self && atomic_load_explicit(&lnn_pool_peers[t].cpu, memory_order_relaxed) == me)
            return 1;
    return 0;
}

/* Worker t's CPU, stored only when it changes (the caller reads it every job). */
static inline void lnn_pool_note_cpu(lnn_pool_peer_t *me, int cpu)
{
    if (atomic_load_explicit(&me->cpu, memory_order_relaxed) != cpu)
        atomic_store_explicit(&me->cpu, cpu, memory_order_relaxed);
}

/* The barrier after phase p (of `tasks`) of job g: 1 once it is complete, -1 if job g is
 * over. Spins (pause) for `wait` ns, every ~256 pauses yielding the core if another thread
 * of the job last ran there (lnn_pool_yield_for); then sleeps until tasks are done (every
 * finished task wakes the sleepers). */
static int lnn_pool_barrier(int self, int p, uint64_t g, ptrdiff_t tasks, int threads)
{
    int st;
    int64_t t0 = 0;
    for (long spin = 1; (st = lnn_pool_phase_state(p, g, tasks, threads)) == 0; spin++) {
        lnn_pool_relax();
        if (spin & 255) continue;
        const int64_t now = lnn_pool_ns();
        if (t0 == 0) t0 = now;
        if (now - t0 < atomic_load(&lnn_pool.wait_ns)) {
            if (lnn_pool_yield_for(self, threads)) sched_yield();
            continue;
        }
        pthread_mutex_lock(&lnn_pool.wait_mu);
        atomic_fetch_add(&lnn_pool.waiting, 1);
        while ((st = lnn_pool_phase_state(p, g, tasks, threads)) == 0)
            pthread_cond_wait(&lnn_pool.wait_cv, &lnn_pool.wait_mu);
        atomic_fetch_sub(&lnn_pool.waiting, 1);
        pthread_mutex_unlock(&lnn_pool.wait_mu);
        break;
    }
    return st;
}

/* Thread t's part of job g (threads blocks, `count` phases): per phase, its own block, then
 * the others', then the barrier (the last phase's is the caller's alone). Returns the tasks
 * it ran. A phase is read only if it is still job g's (lnn_pool_phase_get), and a
 * successful claim keeps job g alive (the block's done count is short until the task is
 * counted), so the fn and ctx it runs are job g's. */
static long lnn_pool_share(int t, uint64_t g, int threads, int count)
{
    long ran = 0;
    lnn_phase_t ph = {NULL, NULL, 0};
    for (int p = 0; p < count; p++) {
        if (p > 0 && lnn_pool_barrier(t, p - 1, g, ph.tasks, threads) < 0) return ran;
        if (!lnn_pool_phase_get(p, g, &ph)) return ran;
        for (int i = 0; i < threads; i++) {
            const int b = (t + i) % threads;
            for (;;) {
                int gone = 0;
                const ptrdiff_t task = lnn_pool_claim(b, p, g, ph.tasks, threads, &gone);
                if (gone) return ran;
                if (task < 0) break;
                if (t > 0 && ran == 0) { /* a worker's first claim of the job */
                    lnn_pool_peer_t *me = &lnn_pool_peers[t];
                    const int cpu = lnn_pool_cpu();
                    lnn_pool_note_cpu(me, cpu);
                    if (t == 1) {
                        me->first_ns = lnn_pool_ns() - lnn_pool.post_ns;
                        me->first_cpu = cpu;
                        atomic_store_explicit(&me->first_gen, g, memory_order_release);
                        if (cpu >= 0 && cpu == atomic_load_explicit(&lnn_pool.caller_cpu,
                                                                    memory_order_relaxed))
                            atomic_fetch_add_explicit(&me->shared, 1, memory_order_relaxed);
                    }
                }
                const int rc = ph.fn(ph.ctx, task);
                if (rc) {
                    int zero = 0;
                    atomic_compare_exchange_strong(&lnn_pool.err, &zero, rc);
                }
                ran++;
                /* the block's done word is job g's (lnn_pool_claim); seq_cst: see lnn_pool_job */
                atomic_fetch_add(&lnn_pool_blocks[b].done[p], 1);
                if (atomic_load(&lnn_pool.waiting)) { /* a thread sleeps at a barrier */
                    pthread_mutex_lock(&lnn_pool.wait_mu);
                    pthread_cond_broadcast(&lnn_pool.wait_cv);
                    pthread_mutex_unlock(&lnn_pool.wait_mu);
                }
            }
        }
    }
    return ran;
}

#include "pool_apart.h" /* keep_apart, check_busy: the rule that keeps threads apart */

static void *lnn_pool_worker(void *arg)
{
    const int t = (int)(ptrdiff_t)arg; /* 1, 2, ... (the caller is 0) */
    lnn_pool_peer_t *me = &lnn_pool_peers[t];
    atomic_store(&me->moved, 0);
    atomic_store(&me->hold_off, 0);
    me->window = 0;
    atomic_store(&me->cpu, lnn_pool_cpu());
#if LNN_POOL_AFFINITY
    me->tid = (pid_t)syscall(SYS_gettid);
    if (sched_getaffinity(0, sizeof me->mask, &me->mask) == 0) atomic_store(&me->ready, 1);
#endif
    unsigned long long seen = lnn_pool.born;
    for (;;) {
        /* the idle spin counts the time this thread ran: a gap of over 100 us between two
         * looks at the clock (~5 us apart) was another thread's (the OS ran it instead), so
         * a preempted worker does not fall asleep in the middle of a burst of jobs; but
         * with no job for 4 spins of wall time the burst is over */
        const int64_t t0 = lnn_pool_ns();
        int64_t last = t0, spun = 0;
        for (long spin = 1; atomic_load_explicit(&lnn_pool.post, memory_order_acquire) == seen;
             spin++) {
            lnn_pool_relax();
            if (spin & 255) continue;
            const int64_t now = lnn_pool_ns();
            if (now - last < 100000) spun += now - last;
            last = now;
            lnn_pool_check_busy(me, now);
            const long long spin_ns = atomic_load(&lnn_pool.spin_ns);
            if (spun < spin_ns && now - t0 < 4 * spin_ns) {
                /* every ~256 pauses (a few us): publish the CPU we are on; yield it if our
                 * caller last ran there (a spinning worker must not hold up the thread that
                 * will post the next job) or this worker has been idle for over 1 ms (be polite
                 * to other processes while idle; counted from its own last task, not the job's
                 * post: after a job longer than 1 ms it yielded at once and joined the next
                 * job late under load); on an idle core the yield returns at once
                 * and the core never halts */
                const int cpu = lnn_pool_cpu();
                lnn_pool_note_cpu(me, cpu);
                if (cpu < 0 ||
                    cpu == atomic_load_explicit(&lnn_pool.caller_cpu, memory_order_relaxed) ||
                    now - t0 > 1000000)
                    sched_yield();
                continue;
            }
            pthread_mutex_lock(&lnn_pool.mu);
            atomic_fetch_add(&lnn_pool.sleepers, 1);
            atomic_fetch_add(&me->sleeps, 1);
            if (atomic_load(&me->moved)) {
                /* kept off the caller's CPU: still so if the next job comes within a
                 * second (waking here, the worker is not queued behind its caller); then
                 * the worker takes back the CPUs it started with */
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_sec += LNN_POOL_APART_HOLD_S;
                while (atomic_load(&lnn_pool.post) == seen &&
                       pthread_cond_timedwait(&lnn_pool.cv, &lnn_pool.mu, &until) == 0) {
                }
#if LNN_POOL_AFFINITY
                if (atomic_load(&lnn_pool.post) == seen && atomic_exchange(&me->moved, 0))
                    sched_setaffinity(0, sizeof me->mask, &me->mask);
#endif
            }
            while (atomic_load(&lnn_pool.post) == seen) pthread_cond_wait(&lnn_pool.cv, &lnn_pool.mu);
            atomic_fetch_sub(&lnn_pool.sleepers, 1);
            me->window = 0; /* asleep is not preempted */
            pthread_mutex_unlock(&lnn_pool.mu);
        }
        seen = atomic_load_explicit(&lnn_pool.post, memory_order_acquire);
        const int threads = (int)(seen & 0xff), count = (int)((seen >> 8) & 0xff);
        if (t < threads) {
            const long ran = lnn_pool_share(t, seen >> 16, threads, count);
            if (ran) atomic_fetch_add_explicit(&me->tasks, ran, memory_order_relaxed);
            lnn_pool_check_busy(me, lnn_pool_ns());
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
    /* the parent's workers' thread ids mean nothing here (or another process's threads):
     * never move a thread by them */
    for (int t = 0; t < LNN_POOL_MAX; t++) {
        atomic_store(&lnn_pool_peers[t].ready, 0);
        atomic_store(&lnn_pool_peers[t].moved, 0);
        atomic_store(&lnn_pool_peers[t].cpu, -1);
    }
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
        lnn_pool_peer_t *w = &lnn_pool_peers[lnn_pool.workers + 1]; /* says so once running */
        atomic_store(&w->ready, 0);
        atomic_store(&w->cpu, -1);
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

/* One job of count <= LNN_POOL_PHASES phases. */
static int lnn_pool_job(const lnn_phase_t *phases, int count, int threads)
{
    ptrdiff_t most = 0; /* tasks of the largest phase */
    for (int p = 0; p < count; p++)
        if (phases[p].tasks > most) most = phases[p].tasks;
    if (threads > LNN_POOL_MAX) threads = LNN_POOL_MAX;
    if (threads > most) threads = (int)most;
    int idle = 0;
    if (threads < 2 || (ptrdiff_t)((most + threads - 1) / threads) > (ptrdiff_t)LNN_POOL_MASK ||
        !atomic_compare_exchange_strong(&lnn_pool.busy, &idle, 1)) {
        atomic_fetch_add(&lnn_pool.alone, 1);
        return lnn_run_phases_alone(phases, count);
    }
    const int can = lnn_pool.workers + 1 >= threads ? threads : lnn_pool_start(threads);
    if (can < threads) threads = can;
    if (threads < 2) {
        atomic_store(&lnn_pool.busy, 0);
        atomic_fetch_add(&lnn_pool.alone, 1);
        return lnn_run_phases_alone(phases, count);
    }
    /* nothing else is written before the post: the blocks' words of an earlier job count 0 */
    const uint64_t g = lnn_pool_next_gen();
    atomic_store_explicit(&lnn_pool.err, 0, memory_order_relaxed);
    for (int p = 0; p < count; p++) lnn_pool_phase_set(p, g, &phases[p]);
    const int cpu = lnn_pool_cpu();
    atomic_store_explicit(&lnn_pool.caller_cpu, cpu, memory_order_relaxed);
    lnn_pool.post_ns = lnn_pool_ns();
    atomic_store(&lnn_pool.post, (g << 16) | ((unsigned long long)count << 8) |
                                     (unsigned long long)threads);
    if (atomic_load(&lnn_pool.sleepers) > 0) {
        pthread_mutex_lock(&lnn_pool.mu);
        pthread_cond_broadcast(&lnn_pool.cv);
        pthread_mutex_unlock(&lnn_pool.mu);
    }
    lnn_pool_keep_apart(cpu, threads);
    lnn_pool_share(0, g, threads, count);
    /* the last phase's tasks still running on workers: spin a while, then sleep (a worker
     * the OS descheduled mid-task needs a core, and a spinning caller would hold one).
     * A finished task is counted with a seq_cst add, then `waiting` read; a sleeper adds to
     * `waiting`, then reads the counts: one of the two sees the other. */
    lnn_pool_barrier(0, count - 1, g, phases[count - 1].tasks, threads);
    if (lnn_pool.trace_len < lnn_pool.trace_cap) { /* worker 1's line: read only here */
        const lnn_pool_peer_t *w = &lnn_pool_peers[1];
        const int first = atomic_load_explicit(&w->first_gen, memory_order_acquire) == g;
        lnn_pool_rec_t *r = &lnn_pool.trace[lnn_pool.trace_len++];
        r->post_ns = lnn_pool.post_ns;
        r->claim_ns = first ? w->first_ns : -1;
        r->job_ns = lnn_pool_ns() - lnn_pool.post_ns;
        r->caller_cpu = cpu;
        r->worker_cpu = first ? w->first_cpu : -1;
    }
    const int err = atomic_load(&lnn_pool.err);
    atomic_fetch_add_explicit(&lnn_pool.jobs, 1, memory_order_relaxed);
    if (count > 1) atomic_fetch_add_explicit(&lnn_pool.phases, count, memory_order_relaxed);
    atomic_store(&lnn_pool.busy, 0);
    return err;
}

static int lnn_pool_run_phases(const lnn_phase_t *phases, int count, int threads)
{
    int err = 0;
    for (int p0 = 0; p0 < count; p0 += LNN_POOL_PHASES) {
        const int n = count - p0 < LNN_POOL_PHASES ? count - p0 : LNN_POOL_PHASES;
        const int rc = lnn_pool_job(phases + p0, n, threads);
        if (rc && !err) err = rc;
    }
    return err;
}

static int lnn_pool_run(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads)
{
    const lnn_phase_t one = {fn, ctx, tasks};
    return lnn_pool_job(&one, 1, threads);
}

#include "pool_knobs.h" /* wake, set_spin/wait/apart, set_trace, stat, workers */

#define LNN_POOL_THREADED 1
#else /* no pthreads: every job on its caller */
static int lnn_pool_run(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads)
{
    (void)threads;
    return lnn_run_alone(fn, ctx, tasks);
}
static int lnn_pool_run_phases(const lnn_phase_t *phases, int count, int threads)
{
    (void)threads;
    return lnn_run_phases_alone(phases, count);
}
static void lnn_pool_set_spin(long long ns) { (void)ns; }
static void lnn_pool_set_wait(long long ns) { (void)ns; }
static void lnn_pool_set_apart(int on) { (void)on; }
static void lnn_pool_wake(void) {}
static long long lnn_pool_stat(int which) { (void)which; return 0; }
typedef struct {
    int64_t post_ns, claim_ns, job_ns;
    int32_t caller_cpu, worker_cpu;
} lnn_pool_rec_t;
static long lnn_pool_set_trace(lnn_pool_rec_t *buf, long cap) { (void)buf; (void)cap; return 0; }
static int lnn_pool_workers(void) { return 0; }
static long lnn_pool_worker_tid(int t) { (void)t; return 0; }
#define LNN_POOL_THREADED 0
#endif

static const lnn_pool_api_t lnn_pool_api_impl = {LNN_POOL_API_VERSION, lnn_pool_run,
                                                 lnn_pool_run_phases};
#endif /* LNN_POOL_IMPL_H */
