/* pool_knobs.h: the pool's knobs and what it measures (spin, wait, keep-apart, wake; the
 * trace and counters read by bench_pool_dist.py): part of pool_impl.h, included there
 * only, inside its pthreads branch. */

/* Wake sleeping workers without a job (they spin again for `spin`): called ahead of a run
 * whose first parallel region comes a little later, so that their cores are back by then.
 * Nothing to do if none sleeps or a job is running. */
static void lnn_pool_wake(void)
{
    int idle = 0;
    if (atomic_load(&lnn_pool.sleepers) == 0 ||
        !atomic_compare_exchange_strong(&lnn_pool.busy, &idle, 1))
        return;
    atomic_store(&lnn_pool.post, lnn_pool_next_gen() << 16); /* a job for no thread */
    pthread_mutex_lock(&lnn_pool.mu);
    pthread_cond_broadcast(&lnn_pool.cv);
    pthread_mutex_unlock(&lnn_pool.mu);
    atomic_store(&lnn_pool.busy, 0);
}

static void lnn_pool_set_spin(long long ns)
{
    atomic_store(&lnn_pool.spin_ns, ns < 0 ? 0 : ns);
}

static void lnn_pool_set_apart(int on) { atomic_store(&lnn_pool.apart, on != 0); }

static void lnn_pool_set_wait(long long ns)
{
    atomic_store(&lnn_pool.wait_ns, ns < 0 ? 0 : ns);
}

/* Record each of the next `cap` jobs (lnn_pool_rec_t) into `buf` (NULL, 0: stop); not while
 * a job runs. Returns the records kept so far before the call. */
static long lnn_pool_set_trace(lnn_pool_rec_t *buf, long cap)
{
    const long had = lnn_pool.trace_len;
    lnn_pool.trace = buf;
    lnn_pool.trace_cap = buf ? cap : 0;
    lnn_pool.trace_len = 0;
    return had;
}

/* A counter of the workers' own lines (lnn_pool_peer_t), summed */
#define LNN_POOL_PEER_SUM(field)                                                          \
    do {                                                                                  \
        long long sum = 0;                                                                \
        for (int t = 1; t < LNN_POOL_MAX; t++) sum += atomic_load(&lnn_pool_peers[t].field); \
        return sum;                                                                       \
    } while (0)

static long long lnn_pool_stat(int which)
{
    switch (which) {
    case 0: return atomic_load(&lnn_pool.jobs);
    case 1: return atomic_load(&lnn_pool.alone);
    case 2: LNN_POOL_PEER_SUM(tasks);
    case 3: LNN_POOL_PEER_SUM(sleeps);
    case 4: return atomic_load(&lnn_pool.spin_ns);
    case 5: return atomic_load(&lnn_pool.wait_ns);
    case 6: return atomic_load(&lnn_pool.phases);
    case 7: return atomic_load(&lnn_pool_peers[1].shared);
    case 8: return atomic_load(&lnn_pool.nudges);
    case 9: return atomic_load(&lnn_pool.apart);
    case 10: LNN_POOL_PEER_SUM(backoffs);
    }
    return 0;
}
#undef LNN_POOL_PEER_SUM

static int lnn_pool_workers(void) { return lnn_pool.workers; }

/* Worker t's thread id (t = 1 .. workers), 0 until it has started. */
static long lnn_pool_worker_tid(int t)
{
#if LNN_POOL_AFFINITY
    if (t < 1 || t >= LNN_POOL_MAX || !atomic_load(&lnn_pool_peers[t].ready)) return 0;
    return (long)lnn_pool_peers[t].tid;
#else
    (void)t;
    return 0;
#endif
}
