/* rows_share.h: batch rows run through T steps by several threads that share them step by
 * step, for the recurrent kernels (recurrent_rows.h, through recurrent.pyx's pool tasks).
 *
 * Rows are independent through the whole sequence, so any thread may run any range of rows,
 * but each range's steps in order. The rows are cut into groups (the ranges given, one per
 * thread from the runtime). Every thread of a pool job is a participant
 * (lnn_rows_share_run): it takes the next step of a group that nobody is running, the one
 * with the fewest steps done (ties: the group it ran last), runs that one step and lets the
 * group go. With no group free it waits (spinning) while a group held by another thread has
 * steps left after the one running (its holder may have been preempted: the steps after
 * are for whoever is free first), and leaves when none has. So
 *   - a thread alone (the others not started yet) advances all the groups together, and a
 *     worker that starts late (a vCPU that had halted comes back 1-2 ms late here) takes
 *     half of what is left: (work + delay) / 2 in all, where ranges fixed beforehand, one
 *     per thread, wait for the late one's whole range (last session's plan, 4 ranges on 2
 *     threads: a worker ~1.6 ms late left the caller three of the four);
 *   - threads that run side by side each keep to a group (the other's is taken, and at
 *     equal steps done each keeps its own), so each group's states stay in its core's cache;
 *   - any split gives the same bits: a step of a range is the same arithmetic for its rows
 *     whoever runs it (the kernel's contract).
 * A group's step count `next` is written by the thread that holds it and released with it;
 * the next holder acquires it (and the states that step wrote) through the `busy` word.
 */
#ifndef LNN_ROWS_SHARE_H
#define LNN_ROWS_SHARE_H

#include <stddef.h>

#define LNN_RS_MAX 64 /* groups of a job */

typedef struct {
    ptrdiff_t r0, r1; /* rows */
    ptrdiff_t next;   /* steps done (written by the thread holding the group) */
    int busy;         /* 1 while a thread runs a step of it */
} lnn_rs_group;

typedef struct {
    ptrdiff_t t; /* steps */
    int n;       /* groups */
    lnn_rs_group g[LNN_RS_MAX];
} lnn_rows_share;

/* steps i0 .. i1-1 (in the order of the run) of rows r0 .. r1-1 */
typedef void (*lnn_rs_steps_fn)(void *ctx, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t i0, ptrdiff_t i1);

#if defined(_MSC_VER) && !defined(__clang__)
/* no native pool there (pool.h): a job's tasks run in turn on the caller, no atomics needed */
#define LNN_RS_LOAD(p) (*(p))
#define LNN_RS_STORE(p, v) (*(p) = (v))
static int lnn_rs_take(int *p)
{
    if (*p) return 0;
    *p = 1;
    return 1;
}
#else
#define LNN_RS_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LNN_RS_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
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

/* The job's groups: the ranges bounds[0] .. bounds[n] (increasing; empty ones dropped; past
 * LNN_RS_MAX ranges the last group takes the rest), none run yet. */
static void lnn_rows_share_init(lnn_rows_share *s, const ptrdiff_t *bounds, ptrdiff_t n,
                                ptrdiff_t t)
{
    s->t = t;
    s->n = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        if (bounds[i + 1] <= bounds[i]) continue;
        if (s->n == LNN_RS_MAX) {
            s->g[LNN_RS_MAX - 1].r1 = bounds[i + 1];
            continue;
        }
        lnn_rs_group *g = &s->g[s->n++];
        g->r0 = bounds[i], g->r1 = bounds[i + 1], g->next = 0, g->busy = 0;
    }
}

/* One participant (a task of the pool job): steps of the groups, one at a time, the free
 * group with the fewest steps done first (ties: the one it ran last); with none free it
 * waits while a group held by another thread has steps left after the one running, and
 * leaves when none has (see the top of this file). Returns the steps it ran. */
static ptrdiff_t lnn_rows_share_run(lnn_rows_share *s, lnn_rs_steps_fn fn, void *ctx)
{
    ptrdiff_t ran = 0;
    int last = -1;
    for (long spin = 1;; spin++) {
        int k = -1, more = 0;
        ptrdiff_t least = s->t;
        for (int j = 0; j < s->n; j++) {
            lnn_rs_group *g = &s->g[j];
            const ptrdiff_t done = LNN_RS_LOAD(&g->next);
            if (LNN_RS_LOAD(&g->busy)) {
                more |= done + 1 < s->t; /* steps after its holder's */
                continue;
            }
            if (done < least || (done == least && done < s->t && j == last)) k = j, least = done;
        }
        if (k < 0) {
            if (!more) return ran;
            LNN_SPIN_HINT();
            if ((spin & 255) == 0) LNN_RS_YIELD(); /* its holder may wait for this core */
            continue;
        }
        lnn_rs_group *g = &s->g[k];
        if (!lnn_rs_take(&g->busy)) continue; /* taken meanwhile: look again */
        const ptrdiff_t i = g->next;          /* its last holder's, acquired with busy */
        if (i < s->t) {
            fn(ctx, g->r0, g->r1, i, i + 1);
            LNN_RS_STORE(&g->next, i + 1);
            ran++;
            last = k;
        }
        LNN_RS_STORE(&g->busy, 0);
    }
}

#endif /* LNN_ROWS_SHARE_H */
