/* chain_b64.c: where the 2-thread batch-64 Dense chain's time goes (784-512-256-10, fp32).
 *
 * Links the real kernel (kernels/csrc/dense_packed.h) and the real pool (pool_impl.h, built in
 * here) without Python. Part 1 times whole calls (wall clock, the variants interleaved, `reps`
 * calls a round; median and p5 of the rounds):
 *
 *   1 thread          the whole chain on the caller (the ideal 2-thread call is half of it)
 *   2 threads         what the runtime runs (lnn_dense_packed_chain_f32, threads = 2: the
 *                     row split, 2 groups of 32 rows, a unit a panel of a group's layer)
 *   groups: 4         the same split with 4 groups of 16 rows
 *   rows: T tasks     the last session's row split: T tasks of 64 / T rows, each task every
 *                     layer, nothing shared within a task (4 tasks: what main ran)
 *   columns           the column split at 64 rows (each layer's panels in 2 ranges, a wait
 *                     for the whole previous layer before a unit)
 *
 * Part 2 is a timeline of each 2-thread variant from rdtsc stamps (the kernel's LNN_PK_TRACE
 * hook around each task's layer, or each unit of the column split), per call, in us after
 * the caller posts the job: when the worker starts its first unit, each thread's busy time
 * (the sum of its units: in the column split a unit's time includes its wait for the
 * previous layer), when each thread ends its last unit, and when the call returns; then the
 * budget: the call against half the 1-thread call, split into the worker's late start, the
 * work the threads do beyond the 1-thread call's (more weight reads, smaller tiles) and the
 * idle tails. Medians over the calls.
 *
 *     gcc -O2 -std=gnu11 -pthread -Ikernels/csrc benchmarks/chain_b64.c -o /tmp/chain_b64 &&
 *     /tmp/chain_b64 [rounds] [calls traced] [late]
 *
 * `late` (us, default 0): the worker spins that long before its first task of each job, a
 * late vCPU: the row groups should lose about half of it, the
 * tasks of 16 rows up to a whole task.
 *
 * Another tree's kernel (an A/B):
 *     mkdir -p /tmp/base && git show main:kernels/csrc/dense_packed.h > /tmp/base/dense_packed.h
 *     gcc -O2 -std=gnu11 -pthread -I/tmp/base -Ikernels/csrc benchmarks/chain_b64.c -o /tmp/b64_base
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include "pool_impl.h" /* the pool itself */

/* the timeline: per call and thread, its tasks' CPU and wall time (the pool's tasks wrapped
 * here), its units' wall time and its waits inside units (the kernel's LNN_PK_TRACE hook;
 * layer -1: a wait), from rdtsc, which costs ~10 ns where a CPU-time clock costs a syscall */
static __thread int me = 1; /* the caller sets 0 */
static int tracing;
static double cpu_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e6 + 1e-3 * t.tv_nsec;
}
typedef struct {
    double cpu, unit, wait; /* us of CPU in tasks; rdtsc ticks in units, in waits */
    unsigned long long first, last, at, wat; /* first task's start, last task's end */
} trace_t;
static trace_t tr[2];
static inline void stamp(int l, int end)
{
    if (!tracing) return;
    trace_t *r = &tr[me];
    const unsigned long long v = __rdtsc();
    if (l < 0) {
        if (!end) r->wat = v;
        else r->wait += (double)(v - r->wat);
    } else if (!end) {
        r->at = v;
    } else {
        r->unit += (double)(v - r->at);
    }
}
#define LNN_PK_TRACE(l, u, end) stamp((int)(l), (end))

typedef struct {
    lnn_task_fn fn;
    void *ctx;
} wrap_t;
static double late_us, ticks_us = 3000; /* argv[3]; rdtsc ticks a us (measured in main) */
static long job_no; /* jobs posted (the caller counts) */
static int wrapped(void *ctx, ptrdiff_t task)
{
    const wrap_t *w = (const wrap_t *)ctx;
    static __thread long seen = -1;
    if (me == 1 && late_us > 0 && seen != __atomic_load_n(&job_no, __ATOMIC_ACQUIRE)) {
        seen = __atomic_load_n(&job_no, __ATOMIC_ACQUIRE); /* a late worker: once a job */
        const unsigned long long t0 = __rdtsc();
        while ((double)(__rdtsc() - t0) < late_us * ticks_us) _mm_pause();
    }
    if (!tracing) return w->fn(w->ctx, task);
    trace_t *r = &tr[me];
    const unsigned long long t0 = __rdtsc();
    const double c0 = cpu_us();
    const int rc = w->fn(w->ctx, task);
    r->cpu += cpu_us() - c0;
    if (!r->first) r->first = t0;
    r->last = __rdtsc();
    return rc;
}
static inline int lnn_parallel(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads)
{
    wrap_t w = {fn, ctx};
    __atomic_fetch_add(&job_no, 1, __ATOMIC_RELEASE);
    return lnn_pool_run(wrapped, &w, tasks, threads);
}
static inline int lnn_parallel_phases(const lnn_phase_t *phases, int count, int threads)
{
    return lnn_pool_run_phases(phases, count, threads);
}

#include "dense_packed.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

enum { L = 3, M = 64 };
static const ptrdiff_t dims[L + 1] = {784, 512, 256, 10};
static float *pan[L], *bias[L], *outs[L], *x;
static const int act[L] = {LNN_RELU, LNN_RELU, LNN_IDENTITY};

static void chain(int threads)
{
    lnn_dense_packed_chain_f32(x, M, L, (const float *const *)pan, (const float *const *)bias,
                               act, dims, outs, threads);
}

/* the last session's row split: `parts` tasks of near-equal rows, each through every layer */
typedef struct {
    ptrdiff_t parts;
} rows_ctx;
static int rows_task(void *ctx, ptrdiff_t task)
{
    const ptrdiff_t parts = ((const rows_ctx *)ctx)->parts;
    const ptrdiff_t r0 = M * task / parts, r1 = M * (task + 1) / parts;
    for (int l = 0; l < L; l++) {
        const float *h = l == 0 ? x : outs[l - 1];
        const lnn_pk_layer_t s = {h + r0 * dims[l], pan[l],  bias[l], outs[l] + r0 * dims[l + 1],
                                  r1 - r0,          dims[l], dims[l + 1], act[l]};
        LNN_PK_TRACE(l, task, 0);
        lnn_pk_layer_alone(&s);
        LNN_PK_TRACE(l, task, 1);
    }
    return 0;
}
static void rows(ptrdiff_t parts)
{
    const rows_ctx c = {parts};
    lnn_parallel(rows_task, (void *)&c, parts, 2);
}

/* the kernel's own job of either split (groups 0: by columns) */
static void flow(int groups)
{
    lnn_pk_flow_chain(x, M, L, (const float *const *)pan, (const float *const *)bias, act, dims,
                      outs, 2, groups, 0);
}

static void one_t(void) { chain(1); }
static void two_t(void) { chain(2); }
static void rows2(void) { rows(2); }
static void rows4(void) { rows(4); }
static void groups4(void) { flow(4); }
static void cols(void) { flow(0); }

static int cmpd(const void *a, const void *b)
{
    const double p = *(const double *)a, q = *(const double *)b;
    return (p > q) - (p < q);
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof(double), cmpd);
    return n ? v[n / 2] : 0;
}

#define MAXR 201
#define NC 2000
int main(int argc, char **argv)
{
    const int rounds = argc > 1 ? atoi(argv[1]) : 21;
    const int ncalls = argc > 2 ? atoi(argv[2]) : 400;
    late_us = argc > 3 ? atof(argv[3]) : 0;
    {
        const double a = now();
        const unsigned long long k = __rdtsc();
        while (now() - a < 0.02) {
        }
        ticks_us = (double)(__rdtsc() - k) / ((now() - a) * 1e6);
    }
    lnn_pool_set_spin(5000000);
    lnn_pool_set_wait(5000000);
    srand(1);
    x = aligned_alloc(64, sizeof(float) * M * 784);
    for (ptrdiff_t i = 0; i < M * 784; i++) x[i] = (rand() % 100) / 100.0f;
    for (int l = 0; l < L; l++) {
        const ptrdiff_t np = (dims[l + 1] + 15) / 16;
        pan[l] = aligned_alloc(64, sizeof(float) * np * dims[l] * 16 + 64);
        for (ptrdiff_t i = 0; i < np * dims[l] * 16; i++)
            pan[l][i] = (rand() % 200 - 100) / 3000.0f;
        bias[l] = aligned_alloc(64, sizeof(float) * np * 16);
        for (ptrdiff_t i = 0; i < np * 16; i++) bias[l][i] = 0.01f * (i % 7);
        outs[l] = aligned_alloc(64, sizeof(float) * M * np * 16);
    }
    me = 0;
    chain(2); /* start the worker */

    struct {
        const char *name;
        void (*fn)(void);
    } v[] = {{"1 thread", one_t},      {"2 threads", two_t},     {"groups: 4", groups4},
             {"rows: 2 tasks", rows2}, {"rows: 4 tasks", rows4}, {"columns", cols}};
    enum { NV = sizeof v / sizeof v[0] };
    static double t[NV][MAXR];
    const int warm = 5, reps = 40;
    const int R = rounds < MAXR ? rounds : MAXR;
    for (int r = 0; r < R; r++)
        for (int i0 = 0; i0 < NV; i0++) {
            const int i = r % 2 ? NV - 1 - i0 : i0;
            for (int c = 0; c < warm; c++) v[i].fn();
            const double t0 = now();
            for (int c = 0; c < reps; c++) v[i].fn();
            t[i][r] = (now() - t0) / reps;
        }
    printf("per call, us (median, p5 of %d rounds of %d calls), load: see uptime\n", R, reps);
    double one = 0;
    for (int i = 0; i < NV; i++) {
        const double med = median(t[i], R);
        if (i == 0) one = med;
        printf("  %-16s %8.1f %8.1f   %5.2fx the 1-thread call\n", v[i].name, med * 1e6,
               t[i][R / 20] * 1e6, one / med);
    }

    /* the timeline: rdtsc ticks to us */
    const double c0 = now();
    const unsigned long long k0 = __rdtsc();
    for (int c = 0; c < 50; c++) chain(2);
    const double tk = (now() - c0) * 1e6 / (double)(__rdtsc() - k0); /* us a tick */
    const int nc = ncalls < NC ? ncalls : NC;
    static double one_cpu[NC], col[10][NC], cl[3][NC];
    for (int c = 0; c < nc; c++) { /* the 1-thread call's CPU time */
        one_t();
        const double a0 = cpu_us();
        one_t();
        one_cpu[c] = cpu_us() - a0;
    }
    qsort(one_cpu, nc, sizeof(double), cmpd);
    const double one_c = one_cpu[nc / 2], one_min = one_cpu[0];
    printf("\n1-thread call, CPU time: median %.1f us, min %.1f (the ideal 2-thread call: half "
           "the min, %.1f)\n", one_c, one_min, one_min / 2);
    printf("timeline of the 2-thread variants (%d calls each; us, medians):\n", nc);
    printf("  %-14s %7s %7s %7s %7s %7s %7s %7s %7s %7s | %7s %7s %7s %5s\n", "", "w.start",
           "cpu0", "cpu1", "waits", "extra", "x.min", "unit0", "unit1", "return", "c.ret",
           "c.idle0", "c.idle1", "c.n");
    for (int i = 1; i < NV; i++) {
        int n = 0, m = 0;
        for (int c = 0; c < nc; c++) {
            for (int w = 0; w < 3; w++) v[i].fn();
            memset(tr, 0, sizeof tr);
            tracing = 1;
            const unsigned long long p = __rdtsc();
            v[i].fn();
            const unsigned long long q = __rdtsc();
            tracing = 0;
            if (!tr[1].first) continue; /* the worker took no task */
            const double ret = (double)(q - p) * tk, ws = (double)(tr[1].first - p) * tk;
            const double waits = (tr[0].wait + tr[1].wait) * tk;
            const double work = tr[0].cpu + tr[1].cpu - waits; /* CPU time, without the waits */
            col[0][n] = ws;
            col[1][n] = tr[0].cpu, col[2][n] = tr[1].cpu, col[3][n] = waits;
            col[4][n] = work - one_c;
            col[6][n] = tr[0].unit * tk, col[7][n] = tr[1].unit * tk, col[8][n] = ret;
            n++;
            double wall[2];
            for (int t = 0; t < 2; t++) wall[t] = (double)(tr[t].last - tr[t].first) * tk;
            if (ws < 20 && wall[0] - tr[0].cpu < 10 && wall[1] - tr[1].cpu < 10) { /* clean */
                cl[0][m] = ret, cl[1][m] = ret - (tr[0].unit - tr[0].wait) * tk;
                cl[2][m] = ret - (tr[1].unit - tr[1].wait) * tk;
                col[5][m] = work - one_min;
                m++;
            }
        }
        printf("  %-14s", v[i].name);
        for (int j = 0; j < 5; j++) printf(" %7.1f", median(col[j], n));
        qsort(col[5], m, sizeof(double), cmpd);
        printf(" %7.1f", m ? col[5][0] : 0);
        for (int j = 6; j < 9; j++) printf(" %7.1f", median(col[j], n));
        printf(" |");
        for (int j = 0; j < 3; j++) printf(" %7.1f", median(cl[j], m));
        printf(" %5d\n", m);
    }
    printf("  w.start: the worker's first task begins, after the caller posts the job; cpu: a "
           "thread's tasks' CPU time;\n  waits: both threads' spins in units for an earlier "
           "layer's units; extra = cpu0 + cpu1 - waits - the\n  1-thread call's median CPU "
           "time (more weight reads, smaller tiles, cache misses), x.min: its min\n  over the "
           "clean calls against the 1-thread min (load-proof); unit: a thread's units' wall time (with waits);\n"
           "  c.*: the clean calls (worker start < 20 us, neither thread preempted > 10 us): "
           "the call, and\n  each thread's idle wall time in it (return - its units' wall time "
           "without waits)\n");
    return 0;
}
