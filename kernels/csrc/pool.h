/* pool.h: the one native thread pool of the process, shared by every compiled kernel.
 *
 * A job is a list of phases run in order on up to `threads` threads, the calling thread one
 * of them; phase p is (fn, ctx, tasks): fn(ctx, i) for every task i in 0 .. tasks-1, and no
 * task of phase p + 1 starts before every task of phase p is done (a barrier: a Dense chain is
 * one job, a layer a phase). A plain job (lnn_parallel) is a job of one phase. Each phase's
 * tasks are cut into `threads` contiguous blocks (the first ones a task longer when they do
 * not divide); thread t claims the tasks of its block t one at a time (atomic claim word,
 * tagged with the job's number: nothing is reset between jobs), then what is left of the
 * other blocks (so a thread the OS has not run yet just gets less, and at batch 1 a core
 * keeps re-reading the same part of the weights call after call). A
 * task writes only its own part of the output: the results do not depend on which thread ran
 * which task, so they are bit for bit the same at any thread count. fn returns 0, or an error
 * code; the job returns the first nonzero code (every task still runs; nothing hangs).
 *
 * Workers are pthreads started at the first job that asks for them. Between jobs a worker
 * spins (pause instruction) on the job word for `spin` nanoseconds, then sleeps on a
 * condition variable: a round of back-to-back calls never lets its core halt (on a
 * virtual machine a halted vCPU comes back late and slow), and an idle process stops burning
 * CPU after `spin` (lnn_pool_set_spin; kernels/pool.pyx says how the default was chosen).
 * Every few microseconds a spinning thread notes its CPU (sched_getcpu) and yields the CPU
 * (sched_yield) only if another thread of the job last ran there, or the last job is over a
 * millisecond old: a yield on a CPU of its own is useless, and on one another process uses
 * it can cost a time slice. A thread waiting at a barrier (the caller: at the last one) spins
 * the same way for `wait` nanoseconds, then sleeps until a task is done (a worker the OS
 * preempted mid-task needs a core). After posting a job the caller moves a worker that last
 * ran on the caller's CPU off it until the worker has slept a second (lnn_pool_keep_apart:
 * Linux was seen to leave the pair on one vCPU of two for thousands of calls).
 * A job that finds the pool busy (another user thread's job, or a job started from inside a
 * task) runs on its caller alone, phase after phase. After fork() the child starts fresh
 * workers.
 *
 * ONE pool per process: lepton_nn.kernels._pool includes pool_impl.h (the pool itself, with
 * pool_apart.h and pool_knobs.h), which defines LNN_POOL_IMPL before including this file, and exports
 * lnn_pool_api in a capsule; every other extension includes it plainly and
 * binds the capsule at import (lnn_pool_bind). Without it, jobs run on the caller alone.
 */
#ifndef LNN_POOL_H
#define LNN_POOL_H

#include <stddef.h>
#include <stdint.h>

typedef int (*lnn_task_fn)(void *ctx, ptrdiff_t task);

/* One phase of a job: fn(ctx, i) for i < tasks. */
typedef struct {
    lnn_task_fn fn;
    void *ctx;
    ptrdiff_t tasks;
} lnn_phase_t;

typedef struct {
    int version;
    /* run a job of one phase; returns the first nonzero task code, else 0 */
    int (*run)(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads);
    /* run `count` phases in order, a barrier between them; the first nonzero code, else 0 */
    int (*run_phases)(const lnn_phase_t *phases, int count, int threads);
} lnn_pool_api_t;

#define LNN_POOL_API_VERSION 2

static inline int lnn_run_alone(lnn_task_fn fn, void *ctx, ptrdiff_t tasks)
{
    int err = 0;
    for (ptrdiff_t i = 0; i < tasks; i++) {
        const int rc = fn(ctx, i);
        if (rc && !err) err = rc;
    }
    return err;
}

static inline int lnn_run_phases_alone(const lnn_phase_t *phases, int count)
{
    int err = 0;
    for (int p = 0; p < count; p++) {
        const int rc = lnn_run_alone(phases[p].fn, phases[p].ctx, phases[p].tasks);
        if (rc && !err) err = rc;
    }
    return err;
}

#ifndef LNN_POOL_IMPL
/* ---- a user of the pool ---- */
static const lnn_pool_api_t *lnn_pool_api = NULL;

/* A pool of another API version (an extension built from another tree) is not used: every
 * job then runs on its caller. */
static void lnn_pool_bind(const void *api)
{
    const lnn_pool_api_t *a = (const lnn_pool_api_t *)api;
    lnn_pool_api = (a && a->version == LNN_POOL_API_VERSION) ? a : NULL;
}

/* fn(ctx, i) for i < tasks on up to `threads` threads of the shared pool. */
static inline int lnn_parallel(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads)
{
    if (threads > 1 && tasks > 1 && lnn_pool_api) return lnn_pool_api->run(fn, ctx, tasks, threads);
    return lnn_run_alone(fn, ctx, tasks);
}

/* phases[0], phases[1], ... in order, each on up to `threads` threads of the shared pool, as
 * one job (the threads meet at a barrier between phases, not at a new job). */
static inline int lnn_parallel_phases(const lnn_phase_t *phases, int count, int threads)
{
    if (threads > 1 && count > 0 && lnn_pool_api)
        return lnn_pool_api->run_phases(phases, count, threads);
    return lnn_run_phases_alone(phases, count);
}

#endif /* LNN_POOL_IMPL: the pool itself is in pool_impl.h */
#endif /* LNN_POOL_H */
