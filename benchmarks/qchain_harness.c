/* qchain_harness.c: the int8 784-512-256-10 chain (kernels/csrc/qgemv.h) at batch 1 on the
 * shared pool, outside Python: per-call wall time, and where it goes at 2 threads (when the
 * worker starts after the call does, how many units each thread ran of its own share and of
 * the other's, how long each waited at the layer barriers). Random weights (timing only).
 *
 *     gcc -O2 -std=gnu11 -Ikernels/csrc -DPOOL_PART -c benchmarks/qchain_harness.c -o /tmp/qp.o
 *     gcc -O2 -std=gnu11 -Ikernels/csrc benchmarks/qchain_harness.c /tmp/qp.o -o /tmp/qchain \
 *         -lpthread -lm && /tmp/qchain [calls] [threads] [gap_us]
 *
 * (the pool's implementation and its user side are two translation units, as in the build)
 *
 * gap_us: idle time between calls (busy-wait on the caller, as Python's ~2 us around a
 * predict call); the worker spins meanwhile as it does between requests. A 4th argument
 * `pin`: the worker on CPU 1 and the caller on CPU 0 (the OS then cannot swap their cores,
 * and with them the L2 each share lives in). */
#define _GNU_SOURCE
#ifdef POOL_PART
#include "pool_impl.h"
const void *harness_pool(void) { return &lnn_pool_api_impl; }
void harness_pool_set(long long spin, long long wait) {
    lnn_pool_set_spin(spin);
    lnn_pool_set_wait(wait);
}
#else
#include <sched.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

/* the timeline: per thread, the TSC at each mark (see qgemv.h's QV_MARK calls) */
#define QV_TRACE                                                                                \
    static struct {                                                                             \
        unsigned long long start[4], barrier[4][8], own[4], stolen[4];                           \
    } qv_tr;                                                                                    \
    static void qv_mark(int t, int what) {                                                      \
        const unsigned long long now = __rdtsc();                                               \
        if (what == 0) qv_tr.start[t] = now;                                                    \
        else if (what == 100) qv_tr.own[t]++;                                                   \
        else if (what == 200) qv_tr.stolen[t]++;                                                \
        else if (what < 16) qv_tr.barrier[t][what] = now;                                       \
    }
#define QV_MARK(t, what) qv_mark(t, what)

#include "qgemm.h"
#include "qgemv.h"

const void *harness_pool(void);
void harness_pool_set(long long spin, long long wait);

static double ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const int calls = argc > 1 ? atoi(argv[1]) : 20000, threads = argc > 2 ? atoi(argv[2]) : 2;
    const double gap = argc > 3 ? atof(argv[3]) * 1e3 : 2000.0;
    const int pin = argc > 4 && !strcmp(argv[4], "pin");
    cpu_set_t cpus;
    if (pin) { /* the worker, started by the first job, inherits CPU 1 */
        CPU_ZERO(&cpus);
        CPU_SET(1, &cpus);
        sched_setaffinity(0, sizeof cpus, &cpus);
    }
    lnn_pool_bind(harness_pool());
    harness_pool_set(5000000, 5000000);
    qg_init();
    const int64_t dims[4] = {784, 512, 256, 10};
    qv_layer ls[3];
    float *outs[3];
    int64_t kmax = 0;
    srand(1);
    for (int l = 0; l < 3; l++) {
        const int64_t K = dims[l], N = dims[l + 1], nb = (N + 15) / 16, kp = qg_kp(K);
        int8_t *w = (int8_t *)qg_amalloc(nb * kp * 16);
        for (int64_t i = 0; i < nb * kp * 16; i++) w[i] = (int8_t)(rand() % 255 - 127);
        float *ws = malloc(N * 4), *bias = malloc(N * 4);
        int32_t *cs = calloc(N, 4);
        for (int64_t n = 0; n < N; n++) ws[n] = 1e-3f, bias[n] = 0.01f;
        memset(&ls[l], 0, sizeof ls[l]);
        ls[l].g.b = w, ls[l].g.N = N, ls[l].g.K = K, ls[l].g.ws = ws, ls[l].g.cs = cs;
        ls[l].g.bias = bias, ls[l].g.act = l < 2;
        outs[l] = qg_amalloc(N * 4);
        kmax = K > kmax ? K : kmax;
    }
    float *x = malloc(784 * 4);
    for (int i = 0; i < 784; i++) x[i] = (float)(rand() % 1000) / 500.0f - 1.0f;
    uint8_t *scratch = malloc(qv_scratch_bytes(1, kmax, 3, threads));
    double *t = malloc(calls * sizeof(double)), *arrive = malloc(calls * sizeof(double));
    double wait[4][3] = {{0}};
    unsigned long long own[4] = {0}, stolen[4] = {0}, idle = 0;
    int arrived = 0;
    const double ghz = 1e-9 * (double)(({
        const unsigned long long a = __rdtsc();
        const double n0 = ns();
        while (ns() - n0 < 2e7) {}
        __rdtsc() - a;
    })) / 2e-2;
    qv_chain(x, 1, 3, ls, outs, scratch, kmax, threads); /* starts the worker */
    if (pin) {
        CPU_ZERO(&cpus);
        CPU_SET(0, &cpus);
        sched_setaffinity(0, sizeof cpus, &cpus);
    }
    for (int i = -200; i < calls; i++) {
        const double g0 = ns();
        while (ns() - g0 < gap) {}
        memset(&qv_tr, 0, sizeof qv_tr);
        const unsigned long long c0 = __rdtsc();
        const double t0 = ns();
        qv_chain(x, 1, 3, ls, outs, scratch, kmax, threads);
        const double t1 = ns();
        if (i < 0) continue;
        t[i] = t1 - t0;
        if (threads > 1) {
            if (qv_tr.start[1]) arrive[arrived++] = (double)(qv_tr.start[1] - c0) / ghz;
            if (qv_tr.own[1] + qv_tr.stolen[1] == 0) idle++; /* the worker ran no unit */
        }
        for (int p = 0; p < threads && p < 4; p++) {
            own[p] += qv_tr.own[p], stolen[p] += qv_tr.stolen[p];
            for (int l = 1; l < 3; l++) /* the wait before layer l: its mark minus the last one */
                if (qv_tr.barrier[p][1 + 2 * l] && qv_tr.barrier[p][2 * l])
                    wait[p][l] += (double)(qv_tr.barrier[p][1 + 2 * l] - qv_tr.barrier[p][2 * l]) / ghz;
        }
    }
    qsort(t, calls, sizeof *t, cmp);
    printf("threads %d, gap %.1f us, %d calls: median %.2f us, p5 %.2f, p25 %.2f, p75 %.2f, "
           "min %.2f (TSC %.2f GHz)\n", threads, gap / 1e3, calls, t[calls / 2] / 1e3,
           t[calls / 20] / 1e3, t[calls / 4] / 1e3, t[3 * calls / 4] / 1e3, t[0] / 1e3, ghz);
    if (threads > 1) {
        qsort(arrive, arrived, sizeof *arrive, cmp);
        if (arrived)
            printf("worker: its task started after the call did by %.2f us (median; p90 %.2f); "
                   "it ran no unit in %.1f %% of calls\n", arrive[arrived / 2] / 1e3,
                   arrive[9 * arrived / 10] / 1e3, 100.0 * idle / calls);
        for (int p = 0; p < threads && p < 4; p++)
            printf("thread %d: own units %.2f, stolen %.2f a call; barrier waits %.2f, %.2f us\n",
                   p, (double)own[p] / calls, (double)stolen[p] / calls, wait[p][1] / 1e3 / calls,
                   wait[p][2] / 1e3 / calls);
    }
    return 0;
}
#endif
