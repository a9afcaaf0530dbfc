/* rows_share.h: batch rows run through T steps by several threads that share them step by
 * step, for the recurrent kernels (recurrent_rows.h, through recurrent.pyx's pool tasks).
 *
 * Rows are independent through the whole sequence, so any thread may run any range of rows,
 * but each range's steps in order. The rows are cut into groups: each range given (one per
 * thread from the runtime) into `parts` groups of whole 3-row tiles. Every thread of a pool
 * job is a participant (lnn_rows_share_run): it takes the next step of a group that nobody
 * is running, runs that one step and lets the group go. Its pick: of the free groups, its
 * own (those whose last step it ran) with the fewest steps done, unless another free group
 * has over LNN_RS_LAG fewer steps done (or none of its own is free): then that one, the
 * free group with the fewest. With no group free it waits (spinning) while a group held by
 * another thread has steps left after the one running (its holder may have been
 * preempted: the steps after are for whoever is free first), and leaves when none has. So
 *   - a thread alone (the others not started yet) advances all the groups together (none
 *     more than LNN_RS_LAG steps behind), and a worker that starts late (a vCPU that had
 *     halted comes back 1-2 ms late here) takes over groups from the step they are at:
 *     (work + delay) / 2 in all;
 *   - threads that run side by side at the same speed each keep to their own groups (a
 *     group's states stay in its core's cache); one that runs slower (a vCPU that came back
 *     slow, or the OS ran another process there) falls behind, and the other takes over its
 *     groups that lag by over LNN_RS_LAG steps, so that neither waits for the other at the
 *     end for more than a step or two of a group (with one group a thread, last session's
 *     split, the faster thread finished its half and waited for the slower one's);
 *   - any split gives the same bits: a step of a range is the same arithmetic for its rows
 *     whoever runs it (the kernel's contract).
 * A group's step count `next` and `owner` are written by the thread that holds it and
 * released with it; the next holder acquires them (and the states that step wrote) through
 * the `busy` word (others read `owner` only to choose).
 */
#ifndef LNN_ROWS_SHARE_H
#define LNN_ROWS_SHARE_H

#include <stddef.h>

#define LNN_RS_MAX 64 /* groups of a job */
#define LNN_RS_LAG 2  /* steps another's group may lag before a thread takes it over */
#define LNN_RS_MIN 6  /* rows of a group at least (two 3-row tiles) */

#if defined(__GNUC__)
#define LNN_RS_LINE __attribute__((aligned(64)))
#else
#define LNN_RS_LINE
#endif

typedef struct {
    ptrdiff_t r0, r1; /* rows */
    ptrdiff_t next;   /* steps done (written by the thread holding the group) */
    int busy;         /* 1 while a thread runs a step of it */
    int owner;        /* the participant that ran its last step (-1: none yet) */
} LNN_RS_LINE lnn_rs_group; /* a cache line each: two threads' groups share none */

typedef struct {
    ptrdiff_t t; /* steps */
    int n;       /* groups */
    int joined;  /* participants so far (the trace's `who`) */
    lnn_rs_group g[LNN_RS_MAX];
} lnn_rows_share;

#if defined(_MSC_VER) && !defined(__clang__)
/* no native pool there (pool.h): a job's tasks run in turn on the caller, no atomics needed */
#define LNN_RS_LOAD(p) (*(p))
#define LNN_RS_STORE(p, v) (*(p) = (v))
#define LNN_RS_ADD(p) ((*(p))++)
#define LNN_RS_RELAXED(p) (*(p))
#define LNN_RS_SET(p, v) (*(p) = (v))
static int lnn_rs_take(int *p)
{
    if (*p) return 0;
    *p = 1;
    return 1;
}
#else
#define LNN_RS_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LNN_RS_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define LNN_RS_ADD(p) __atomic_fetch_add((p), 1, __ATOMIC_RELAXED)
#define LNN_RS_RELAXED(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define LNN_RS_SET(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
static int lnn_rs_take(int *p)
{
    int idle = 0;
    return __atomic_compare_exchange_n(p, &idle, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}
#endif
#include "spin_hint.h"
#if defined(__unix__) || defined(__APPLE__)
#include <sched.h>
#define LNN_RS_YIELD() sched_yield()
#else
#define LNN_RS_YIELD() ((void)0)
#endif

/* The timeline trace (benchmarks/recurrent_timeline.py): while lnn_rs_trace is set, each
 * participant appends a record as it joins (step -1, t0 = t1), one per step it runs (t0, t1
 * around the step: time-stamp counter ticks) and one as it leaves (step -2; t0 when it
 * joined, cpu: the thread's CPU time in between, ns, so that the time the OS gave other
 * threads shows). Off (NULL) it costs a load and a branch a step. Set only while no job
 * runs. */
typedef struct {
    long long who, group, step, t0, t1, cpu;
} lnn_rs_rec;
static lnn_rs_rec *lnn_rs_trace;
static long lnn_rs_trace_cap, lnn_rs_trace_len;

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <x86intrin.h>
#define LNN_RS_TICKS() ((long long)__rdtsc())
#else
#define LNN_RS_TICKS() 0LL
#endif
#if defined(__linux__)
#include <time.h>
static long long lnn_rs_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
#else
static long long lnn_rs_cpu_ns(void) { return 0; }
#endif

static void lnn_rs_note(long long who, long long group, long long step, long long t0,
                        long long cpu)
{
    const long i = LNN_RS_ADD(&lnn_rs_trace_len);
    if (i >= lnn_rs_trace_cap) return;
    lnn_rs_rec *r = &lnn_rs_trace[i];
    r->who = who, r->group = group, r->step = step, r->t0 = t0, r->t1 = LNN_RS_TICKS();
    r->cpu = cpu;
}

/* Record the next jobs' timelines into buf (cap records; NULL: stop). Returns the records
 * written since the last call (at most its cap). */
static long lnn_rows_share_trace(lnn_rs_rec *buf, long cap)
{
    const long had = lnn_rs_trace_len < lnn_rs_trace_cap ? lnn_rs_trace_len : lnn_rs_trace_cap;
    lnn_rs_trace = buf;
    lnn_rs_trace_cap = buf ? cap : 0;
    lnn_rs_trace_len = 0;
    return had;
}

/* steps i0 .. i1-1 (in the order of the run) of rows r0 .. r1-1 */
typedef void (*lnn_rs_steps_fn)(void *ctx, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t i0, ptrdiff_t i1);

/* The job's groups: each range bounds[i] .. bounds[i + 1] (increasing; empty ones dropped)
 * cut into `parts` groups (fewer where that leaves under LNN_RS_MIN rows a group) at
 * multiples of 3 rows from its start; past LNN_RS_MAX groups the last one takes the rest.
 * None run yet. */
static void lnn_rows_share_init(lnn_rows_share *s, const ptrdiff_t *bounds, ptrdiff_t n,
                                ptrdiff_t t, ptrdiff_t parts)
{
    s->t = t;
    s->n = 0;
    s->joined = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const ptrdiff_t r0 = bounds[i], len = bounds[i + 1] - r0;
        if (len <= 0) continue;
        ptrdiff_t np = parts < len / LNN_RS_MIN ? parts : len / LNN_RS_MIN;
        np = np < 1 ? 1 : np;
        for (ptrdiff_t p = 0; p < np; p++) {
            /* part p: rows from r0 + 3 round(len p / (3 np)); cuts >= LNN_RS_MIN - 3 apart */
            const ptrdiff_t a = r0 + 3 * ((2 * len * p + 3 * np) / (6 * np));
            const ptrdiff_t b = p + 1 < np ? r0 + 3 * ((2 * len * (p + 1) + 3 * np) / (6 * np))
                                           : r0 + len;
            if (s->n == LNN_RS_MAX) {
                s->g[LNN_RS_MAX - 1].r1 = b;
                continue;
            }
            lnn_rs_group *g = &s->g[s->n++];
            g->r0 = a, g->r1 = b, g->next = 0, g->busy = 0, g->owner = -1;
        }
    }
}

/* One participant (a task of the pool job): steps of the groups, one at a time: of the
 * free groups with steps left, its own with the fewest steps done, or the one with the
 * fewest of all where that has over LNN_RS_LAG fewer (or none of its own is free); with
 * none free it waits while a group held by another thread has steps left after the one
 * running, and leaves when none has (see the top of this file). Returns the steps it ran. */
static ptrdiff_t lnn_rows_share_run(lnn_rows_share *s, lnn_rs_steps_fn fn, void *ctx)
{
    ptrdiff_t ran = 0;
    lnn_rs_rec *const trace = lnn_rs_trace;
    const int who = (int)LNN_RS_ADD(&s->joined);
    const long long join = trace ? LNN_RS_TICKS() : 0, cpu = trace ? lnn_rs_cpu_ns() : 0;
    if (trace) lnn_rs_note(who, -1, -1, join, 0);
    for (long spin = 1;; spin++) {
        int k = -1, mine = -1, more = 0;
        ptrdiff_t least = s->t, own = s->t;
        for (int j = 0; j < s->n; j++) {
            lnn_rs_group *g = &s->g[j];
            const ptrdiff_t done = LNN_RS_LOAD(&g->next);
            if (LNN_RS_LOAD(&g->busy)) {
                more |= done + 1 < s->t; /* steps after its holder's */
                continue;
            }
            if (done < least) k = j, least = done;
            if (done < own && LNN_RS_RELAXED(&g->owner) == who) mine = j, own = done;
        }
        if (mine >= 0 && own <= least + LNN_RS_LAG) k = mine; /* keep to its own */
        if (k < 0) {
            if (!more) {
                if (trace) lnn_rs_note(who, -1, -2, join, lnn_rs_cpu_ns() - cpu);
                return ran;
            }
            LNN_SPIN_HINT();
            if ((spin & 255) == 0) LNN_RS_YIELD(); /* its holder may wait for this core */
            continue;
        }
        lnn_rs_group *g = &s->g[k];
        if (!lnn_rs_take(&g->busy)) continue; /* taken meanwhile: look again */
        const ptrdiff_t i = g->next;          /* its last holder's, acquired with busy */
        if (i < s->t) {
            LNN_RS_SET(&g->owner, who);
            const long long t0 = trace ? LNN_RS_TICKS() : 0;
            fn(ctx, g->r0, g->r1, i, i + 1);
            if (trace) lnn_rs_note(who, k, i, t0, 0);
            LNN_RS_STORE(&g->next, i + 1);
            ran++;
        }
        LNN_RS_STORE(&g->busy, 0);
    }
}

#endif /* LNN_ROWS_SHARE_H */
