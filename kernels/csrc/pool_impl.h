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
#define LNN_POOL_BITS 20         /* size and count per claim / done word; generation above */
#define LNN_POOL_MASK ((1ull << LNN_POOL_BITS) - 1)
#define LNN_POOL_GEN_MASK ((1ull << (64 - 2 * LNN_POOL_BITS)) - 1)
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

/* Block b of each phase of the job: tasks [start[p], start[p] + size). Its claim word packs
 * (generation, size, next - start), its done word (generation, size, tasks of the block
 * finished). Cache lines of its own: another thread touches them only to take what is left
 * of block b, or to see whether a phase is complete. */
typedef struct {
    atomic_ullong claim[LNN_POOL_PHASES];
    atomic_ullong done[LNN_POOL_PHASES];
    ptrdiff_t start[LNN_POOL_PHASES];
} __attribute__((aligned(64))) lnn_pool_block_t;

static lnn_pool_block_t lnn_pool_blocks[LNN_POOL_MAX];

/* Worker t as the others see it: its thread id and the CPU it last ran on (published as it
 * spins and as it claims), the CPU set it started with, whether the caller has moved it off
 * a CPU (kept off it until it has slept a second), and when. */
typedef struct {
    atomic_int cpu;
    atomic_int ready;    /* tid and mask are set */
    atomic_int moved;
    int64_t moved_ns;
    atomic_llong hold_off; /* not moved again before (ns) */
    int64_t window;      /* the worker's: when it last looked at its CPU time, and that time */
    int64_t ran;
#if LNN_POOL_AFFINITY
    pid_t tid;
    cpu_set_t mask;
#endif
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

static struct {
    atomic_int busy;           /* a job is running (its caller set it) */
    pthread_mutex_t mu;        /* sleeping workers */
    pthread_cond_t cv;
    atomic_ullong post;        /* the current job: (generation << 16) | (phases << 8) | threads */
    atomic_int sleepers;
    atomic_llong spin_ns;      /* a worker's idle spin before it sleeps */
    atomic_llong wait_ns;      /* a spin at a barrier before the thread sleeps */
    pthread_mutex_t wait_mu;   /* threads sleeping at a barrier until a task is done */
    pthread_cond_t wait_cv;
    atomic_int waiting;
    lnn_phase_t phase[LNN_POOL_PHASES]; /* of the job */
    atomic_int err;            /* the first nonzero task code */
    uint64_t gen;
    unsigned long long born;   /* post when the workers were last started */
    int workers;               /* started */
    int atfork;
    /* counters for tests and benchmarks */
    atomic_llong jobs, alone, worker_tasks, sleeps, phases;
    atomic_llong shared;       /* jobs whose worker 1 first claimed on the caller's CPU */
    atomic_llong nudges;       /* workers moved off their caller's CPU */
    atomic_llong backoffs;     /* moved workers that gave up: their new CPU was busy */
    atomic_int apart;          /* keep a job's threads on different CPUs (lnn_pool_keep_apart) */
    atomic_int caller_cpu;     /* the caller's CPU when it posted the job */
    /* worker 1's first claim in job `first_gen`: when (ns after the post) and on which CPU */
    atomic_ullong first_gen;
    int64_t first_ns, post_ns;
    int first_cpu;
    /* a record per job for the benchmarks (lnn_pool_set_trace) */
    lnn_pool_rec_t *trace;
    long trace_cap, trace_len;
} lnn_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
              .wait_mu = PTHREAD_MUTEX_INITIALIZER, .wait_cv = PTHREAD_COND_INITIALIZER};

static pthread_mutex_t lnn_pool_start_mu = PTHREAD_MUTEX_INITIALIZER;

static inline uint64_t lnn_pool_word(uint64_t g, uint64_t size, uint64_t count)
{
    return (g << (2 * LNN_POOL_BITS)) | (size << LNN_POOL_BITS) | count;
}

/* The next task of block b of phase p in job g, or -1: none left (*gone = 0) or job g is
 * over. */
static ptrdiff_t lnn_pool_claim(int b, int p, uint64_t g, int *gone)
{
    atomic_ullong *w = &lnn_pool_blocks[b].claim[p];
    unsigned long long v = atomic_load_explicit(w, memory_order_acquire);
    for (;;) {
        if ((v >> (2 * LNN_POOL_BITS)) != g) {
            *gone = 1;
            return -1;
        }
        if ((v & LNN_POOL_MASK) >= ((v >> LNN_POOL_BITS) & LNN_POOL_MASK)) return -1;
        if (atomic_compare_exchange_weak(w, &v, v + 1))
            return lnn_pool_blocks[b].start[p] + (ptrdiff_t)(v & LNN_POOL_MASK);
    }
}

/* Phase p of job g on `threads` blocks: 1 every task done, 0 not yet, -1 job g is over. */
static int lnn_pool_phase_state(int p, uint64_t g, int threads)
{
    for (int b = 0; b < threads; b++) {
        const unsigned long long v =
            atomic_load_explicit(&lnn_pool_blocks[b].done[p], memory_order_acquire);
        if ((v >> (2 * LNN_POOL_BITS)) != g) return -1;
        if ((v & LNN_POOL_MASK) < ((v >> LNN_POOL_BITS) & LNN_POOL_MASK)) return 0;
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

/* The barrier after phase p of job g: 1 once it is complete, -1 if job g is over. Spins
 * (pause) for `wait` ns, every ~256 pauses yielding the core if another thread of the job
 * last ran there (lnn_pool_yield_for); then sleeps until tasks are
 * done (every finished task wakes the sleepers). */
static int lnn_pool_barrier(int self, int p, uint64_t g, int threads)
{
    int st;
    int64_t t0 = 0;
    for (long spin = 1; (st = lnn_pool_phase_state(p, g, threads)) == 0; spin++) {
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
        while ((st = lnn_pool_phase_state(p, g, threads)) == 0)
            pthread_cond_wait(&lnn_pool.wait_cv, &lnn_pool.wait_mu);
        atomic_fetch_sub(&lnn_pool.waiting, 1);
        pthread_mutex_unlock(&lnn_pool.wait_mu);
        break;
    }
    return st;
}

/* Thread t's part of job g (threads blocks, `count` phases): per phase, its own block, then
 * the others', then the barrier (the last phase's is the caller's alone). Returns the tasks
 * it ran. A successful claim keeps job g alive (the block's done count is short until the
 * task is counted), so the phase's fn, ctx and starts read after it are job g's. */
static long lnn_pool_share(int t, uint64_t g, int threads, int count)
{
    long ran = 0;
    for (int p = 0; p < count; p++) {
        if (p > 0 && lnn_pool_barrier(t, p - 1, g, threads) < 0) return ran;
        for (int i = 0; i < threads; i++) {
            const int b = (t + i) % threads;
            for (;;) {
                int gone = 0;
                const ptrdiff_t task = lnn_pool_claim(b, p, g, &gone);
                if (gone) return ran;
                if (task < 0) break;
                if (t > 0 && ran == 0) { /* a worker's first claim of the job */
                    const int cpu = lnn_pool_cpu();
                    atomic_store_explicit(&lnn_pool_peers[t].cpu, cpu, memory_order_relaxed);
                    if (t == 1) {
                        lnn_pool.first_ns = lnn_pool_ns() - lnn_pool.post_ns;
                        lnn_pool.first_cpu = cpu;
                        atomic_store_explicit(&lnn_pool.first_gen, g, memory_order_release);
                    }
                }
                const lnn_phase_t *ph = &lnn_pool.phase[p];
                const int rc = ph->fn(ph->ctx, task);
                if (rc) {
                    int zero = 0;
                    atomic_compare_exchange_strong(&lnn_pool.err, &zero, rc);
                }
                ran++;
                atomic_fetch_add(&lnn_pool_blocks[b].done[p], 1); /* seq_cst: see below */
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

/* A moved worker whose new CPU turns out busy (it ran less than 3/4 of the last 20 ms while
 * awake: another process's thread shares that CPU; on an idle CPU it runs ~all of it)
 * takes back the CPUs it started with and is not moved again for a second: on a loaded
 * machine a worker queued behind other work holds its claimed task while the caller waits
 * at the barrier, so sharing the caller's CPU (the caller then runs nearly every task) is
 * the lesser evil. Called by the worker after each share and as it spins; it reads its CPU
 * time (a system call) every 20 ms at most. */
static void lnn_pool_check_busy(lnn_pool_peer_t *me, int64_t now)
{
#if LNN_POOL_AFFINITY
    if (!atomic_load_explicit(&me->moved, memory_order_relaxed)) {
        me->window = 0; /* a new count when next moved */
        return;
    }
    if (now - me->window < LNN_POOL_BUSY_NS) return;
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return;
    const int64_t ran = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    if (me->window && 4 * (ran - me->ran) < 3 * (now - me->window) &&
        atomic_exchange(&me->moved, 0)) {
        atomic_store(&me->hold_off, now + LNN_POOL_HOLD_OFF_NS);
        atomic_fetch_add(&lnn_pool.backoffs, 1); /* first: a reader who sees the CPUs back
                                                  * sees the count too */
        sched_setaffinity(0, sizeof me->mask, &me->mask);
        me->window = 0;
        return;
    }
    me->window = now;
    me->ran = ran;
#else
    (void)me;
    (void)now;
#endif
}

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
                atomic_store_explicit(&me->cpu, cpu, memory_order_relaxed);
                if (cpu < 0 ||
                    cpu == atomic_load_explicit(&lnn_pool.caller_cpu, memory_order_relaxed) ||
                    now - t0 > 1000000)
                    sched_yield();
                continue;
            }
            pthread_mutex_lock(&lnn_pool.mu);
            atomic_fetch_add(&lnn_pool.sleepers, 1);
            atomic_fetch_add(&lnn_pool.sleeps, 1);
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
            if (ran) atomic_fetch_add(&lnn_pool.worker_tasks, ran);
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

/* The rule that keeps a job's threads on different CPUs. Linux may queue a worker on the CPU
 * its caller runs on and leave it there while the other CPU is idle (seen on a 2-vCPU guest:
 * the pair on one vCPU for thousands of calls, no migration, the worker's first claim 8 ms
 * after the post: 2 threads as slow as 1, with tick-long stalls). So after posting a job,
 * the caller moves each worker that last ran on its CPU off it (sched_setaffinity on the
 * worker's thread: the CPUs the worker started with, less the caller's), at most once a
 * millisecond per worker, and only when the worker may run on at least as many CPUs as
 * the job has threads (more threads than CPUs must share). The worker stays off that CPU
 * while jobs keep coming, and takes back the CPUs it started with once it has slept a
 * second (LNN_POOL_APART_HOLD_S: a worker woken for the next burst is then not queued
 * behind its caller), or at once if that CPU proves busy (lnn_pool_check_busy). With more
 * than 2 CPUs no thread is confined to one CPU; with 2 the
 * worker is, during bursts of jobs and the second after. The caller's own thread is never
 * touched. set_apart(0) / LEPTON_POOL_APART=0 turns the rule off. */
static void lnn_pool_keep_apart(int cpu, int threads)
{
#if LNN_POOL_AFFINITY
    if (!atomic_load_explicit(&lnn_pool.apart, memory_order_relaxed) || cpu < 0 ||
        cpu >= CPU_SETSIZE)
        return;
    int64_t now = 0;
    for (int t = 1; t < threads; t++) {
        lnn_pool_peer_t *w = &lnn_pool_peers[t];
        if (atomic_load_explicit(&w->cpu, memory_order_relaxed) != cpu ||
            !atomic_load_explicit(&w->ready, memory_order_acquire) ||
            !CPU_ISSET(cpu, &w->mask) || CPU_COUNT(&w->mask) < threads)
            continue;
        if (!now) now = lnn_pool_ns();
        if (now - w->moved_ns < 1000000 || now < atomic_load(&w->hold_off)) continue;
        w->moved_ns = now;
        cpu_set_t other = w->mask;
        CPU_CLR(cpu, &other);
        if (sched_setaffinity(w->tid, sizeof other, &other) != 0) continue;
        atomic_store_explicit(&w->cpu, -1, memory_order_relaxed); /* not there any more */
        atomic_fetch_add(&lnn_pool.nudges, 1);
        atomic_store(&w->moved, 1);
    }
#else
    (void)cpu;
    (void)threads;
#endif
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
    const uint64_t g = lnn_pool.gen = (lnn_pool.gen + 1) & LNN_POOL_GEN_MASK;
    atomic_store(&lnn_pool.err, 0);
    for (int p = 0; p < count; p++) {
        const ptrdiff_t tasks = phases[p].tasks > 0 ? phases[p].tasks : 0;
        lnn_pool.phase[p] = phases[p];
        for (int b = 0; b < threads; b++) { /* block b: tasks [ceil(tasks b / threads), ...) */
            lnn_pool_block_t *B = &lnn_pool_blocks[b];
            const ptrdiff_t s = (tasks * b + threads - 1) / threads;
            const ptrdiff_t e = (tasks * (b + 1) + threads - 1) / threads;
            B->start[p] = s;
            /* relaxed: the post below (seq_cst) publishes them to the workers */
            atomic_store_explicit(&B->claim[p], lnn_pool_word(g, (uint64_t)(e - s), 0),
                                  memory_order_relaxed);
            atomic_store_explicit(&B->done[p], lnn_pool_word(g, (uint64_t)(e - s), 0),
                                  memory_order_relaxed);
        }
    }
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
    lnn_pool_barrier(0, count - 1, g, threads);
    const int first = atomic_load_explicit(&lnn_pool.first_gen, memory_order_acquire) == g;
    if (first && cpu >= 0 && lnn_pool.first_cpu == cpu) atomic_fetch_add(&lnn_pool.shared, 1);
    if (lnn_pool.trace_len < lnn_pool.trace_cap) {
        lnn_pool_rec_t *r = &lnn_pool.trace[lnn_pool.trace_len++];
        r->post_ns = lnn_pool.post_ns;
        r->claim_ns = first ? lnn_pool.first_ns : -1;
        r->job_ns = lnn_pool_ns() - lnn_pool.post_ns;
        r->caller_cpu = cpu;
        r->worker_cpu = first ? lnn_pool.first_cpu : -1;
    }
    const int err = atomic_load(&lnn_pool.err);
    atomic_fetch_add(&lnn_pool.jobs, 1);
    if (count > 1) atomic_fetch_add(&lnn_pool.phases, count);
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
