/* pool_apart.h: the rule that keeps a job's threads on different CPUs, and its way back on
 * a busy CPU: part of pool_impl.h, included there only, inside its pthreads branch. */

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
        atomic_fetch_add(&me->backoffs, 1); /* first: a reader who sees the CPUs back sees
                                              * the count too */
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
