/* qchain_harness.c: the int8 784-512-256-10 chain (kernels/csrc/qgemv.h; or QV_DIMS) at batch 1
 * on the shared pool, outside Python: per-call wall time, and where it goes at 2 threads (when the
 * worker starts after the call does, how many units each thread ran of its own share and of
 * the other's, how long each waited at the layer barriers; the times of the calls whose worker
 * started within 1 us apart from the rest: the chain's own speed apart from the OS's delay in
 * running the worker, which sets the median under load). Random weights (timing only).
 *
 *     F="-O3 -fwrapv -fno-math-errno -fno-trapping-math -std=gnu11"   # the extension's flags
 *     gcc $F -Ikernels/csrc -DPOOL_PART -c benchmarks/qchain_harness.c -o /tmp/qp.o
 *     gcc $F -Ikernels/csrc benchmarks/qchain_harness.c /tmp/qp.o -o /tmp/qchain \
 *         -lpthread -lm && /tmp/qchain [calls] [threads] [gap_us]
 *
 * (the pool's implementation and its user side are two translation units, as in the build).
 * Instructions per call (add -g): valgrind --tool=callgrind --toggle-collect='h_chain*'
 * /tmp/qchain 1000 1 0, divided by 1201 calls (200 warm-up, 1000, and the first).
 *
 * gap_us: idle time between calls (busy-wait on the caller, as Python's ~2 us around a
 * predict call); the worker spins meanwhile as it does between requests. A 4th argument
 * `pin`: the worker on CPU 1 and the caller on CPU 0 (the OS then cannot swap their cores,
 * and with them the L2 each share lives in).
 *
 * Environment (issue 23, the two speed groups per process):
 *   QV_DIMS=a,b,c,d  another 3-layer MLP than 784,512,256,10 (32,32,16,1: the credit model);
 *   QV_HUGE=1   weights, outputs and scratch in one 2 MiB-aligned region advised MADV_HUGEPAGE
 *               (prints the region's AnonHugePages from /proc/self/smaps);
 *   QV_CPU=c    the whole process on CPU c (with QV_SHARE: which vCPU's speed is measured);
 *   QV_SHARE=1  time one thread running the first half (rounded up) of every layer's units
 *               alone (~270 KB of W, re-read each call: whether it stays in one core's L2),
 *               not the chain, with each layer's prep (quantize, sign split) and units apart;
 * and always (as root: /proc/self/pagemap gives frame numbers) the L2 set load of each part's
 * share: lines per L2 set (physical address bits 6-15, 8 ways) and the lines in sets holding
 * more than 8 of the share's lines ("over": they miss each call under LRU). */
#define _GNU_SOURCE
#ifdef POOL_PART
#include "pool_impl.h"
const void *harness_pool(void) { return &lnn_pool_api_impl; }
void harness_pool_set(long long spin, long long wait) {
    lnn_pool_set_spin(spin);
    lnn_pool_set_wait(wait);
}
#else
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
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

/* the chain call, never inlined: callgrind --toggle-collect=h_chain counts its instructions */
__attribute__((noinline)) static int h_chain(const float *x, const qv_layer *ls, float *const *outs,
                                             uint8_t *scratch, int64_t kmax, int threads) {
    return qv_chain(x, 1, 3, ls, outs, scratch, kmax, threads);
}

/* QV_HUGE: a bump arena in one 2 MiB-aligned region advised MADV_HUGEPAGE (else qg_amalloc) */
static uint8_t *arena;
static size_t arena_used;
#define ARENA_BYTES ((size_t)4 << 20)
static void *h_alloc(size_t n) {
    if (!arena) return qg_amalloc(n);
    void *p = arena + arena_used;
    arena_used += (n + 4095) & ~(size_t)4095;
    return p;
}

/* the physical address of virtual address v (0 when pagemap hides frame numbers) */
static uint64_t phys(const void *v) {
    static int fd = -2;
    if (fd == -2) fd = open("/proc/self/pagemap", O_RDONLY);
    uint64_t e = 0;
    if (fd < 0 || pread(fd, &e, 8, (off_t)((uintptr_t)v / 4096) * 8) != 8) return 0;
    if (!(e >> 63) || !(e & ((1ULL << 55) - 1))) return 0;
    return ((e & ((1ULL << 55) - 1)) << 12) | ((uintptr_t)v & 4095);
}

/* lines of [p, p + n) per L2 set, added to sets[1024] */
static int set_load(const void *p, int64_t n, int *sets) {
    for (int64_t o = 0; o < n; o += 64) {
        const uint64_t a = phys((const uint8_t *)p + o);
        if (!a) return -1;
        sets[(a >> 6) & 1023]++;
    }
    return 0;
}
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
    const int huge = getenv("QV_HUGE") && atoi(getenv("QV_HUGE"));
    const int share = getenv("QV_SHARE") && atoi(getenv("QV_SHARE"));
    if (getenv("QV_CPU")) {
        CPU_ZERO(&cpus);
        CPU_SET(atoi(getenv("QV_CPU")), &cpus);
        sched_setaffinity(0, sizeof cpus, &cpus);
    }
    if (huge) {
        uint8_t *r = mmap(NULL, ARENA_BYTES + (2 << 20), PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        arena = (uint8_t *)(((uintptr_t)r + (2 << 20) - 1) & ~(uintptr_t)((2 << 20) - 1));
        if (madvise(arena, ARENA_BYTES, MADV_HUGEPAGE)) perror("madvise");
        memset(arena, 0, ARENA_BYTES); /* fault it in now: huge pages if the kernel has them */
    }
    int64_t dims[4] = {784, 512, 256, 10};
    if (getenv("QV_DIMS")) /* another 3-layer MLP: QV_DIMS=32,32,16,1 (the credit model) */
        sscanf(getenv("QV_DIMS"), "%ld,%ld,%ld,%ld", &dims[0], &dims[1], &dims[2], &dims[3]);
    qv_layer ls[3];
    float *outs[3];
    int64_t kmax = 0;
    srand(1);
    for (int l = 0; l < 3; l++) {
        const int64_t K = dims[l], N = dims[l + 1], nb = (N + 15) / 16, kp = qg_kp(K);
        int8_t *w = (int8_t *)h_alloc(nb * kp * 16);
        for (int64_t i = 0; i < nb * kp * 16; i++) w[i] = (int8_t)(rand() % 255 - 127);
        float *ws = malloc(N * 4), *bias = malloc(N * 4);
        int32_t *cs = calloc(N, 4);
        for (int64_t n = 0; n < N; n++) ws[n] = 1e-3f, bias[n] = 0.01f;
        memset(&ls[l], 0, sizeof ls[l]);
        ls[l].g.b = w, ls[l].g.N = N, ls[l].g.K = K, ls[l].g.ws = ws, ls[l].g.cs = cs;
        ls[l].g.bias = bias, ls[l].g.act = l < 2;
        outs[l] = h_alloc(N * 4);
        kmax = K > kmax ? K : kmax;
    }
    float *x = malloc(dims[0] * 4);
    for (int i = 0; i < dims[0]; i++) x[i] = (float)(rand() % 1000) / 500.0f - 1.0f;
    uint8_t *scratch = h_alloc(qv_scratch_bytes(1, kmax, 3, threads < 2 ? 2 : threads));
    if (huge) { /* did it take? the region's AnonHugePages */
        FILE *f = fopen("/proc/self/smaps", "r");
        char line[256];
        unsigned long lo, hi;
        int in = 0;
        while (f && fgets(line, sizeof line, f)) {
            if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
                in = lo <= (uintptr_t)arena && (uintptr_t)arena < hi;
            else if (in && !strncmp(line, "AnonHugePages:", 14)) printf("arena %s", line);
        }
        if (f) fclose(f);
    }
    for (int p = 0; p < 2; p++) { /* each part's share of W: lines per L2 set */
        int sets[1024] = {0}, ok = 0, over = 0, worst = 0, lines = 0;
        for (int l = 0; l < 3; l++) {
            const int64_t nb = (dims[l + 1] + 15) / 16, U = (nb + 3) / 4, kp = qg_kp(dims[l]);
            const int64_t b0 = U * p / 2 * 4, b1 = U * (p + 1) / 2 * 4 < nb ? U * (p + 1) / 2 * 4 : nb;
            ok |= set_load((const int8_t *)ls[l].g.b + b0 * kp * 16, (b1 - b0) * kp * 16, sets);
        }
        for (int i = 0; i < 1024; i++) {
            lines += sets[i];
            if (sets[i] > 8) over += sets[i];
            if (sets[i] > worst) worst = sets[i];
        }
        if (ok) printf("share %d: no frame numbers in /proc/self/pagemap\n", p);
        else printf("share %d: %d lines, at most %d per L2 set, %d in sets over 8 ways\n", p, lines, worst, over);
    }
    double *t = malloc(calls * sizeof(double)), *arrive = malloc(calls * sizeof(double));
    /* the calls in which the worker started within 1 us (on time) and the others (late) */
    double *on_time = malloc(calls * sizeof(double)), *late = malloc(calls * sizeof(double));
    int n_on = 0, n_late = 0;
    double wait[4][3] = {{0}};
    unsigned long long own[4] = {0}, stolen[4] = {0}, idle = 0;
    int arrived = 0;
    double ghz = 0; /* TSC ticks per ns: the largest of 5 short windows that were not preempted
                     * (a preemption between the two clock reads inflates the ratio: the smallest
                     * of the windows' time, not the ratio, picks the clean one) */
    for (int k = 0, best = 1 << 30; k < 5; k++) {
        const unsigned long long a = __rdtsc();
        const double n0 = ns();
        while (ns() - n0 < 2e6) {}
        const double n1 = ns();
        const unsigned long long b = __rdtsc();
        const double g = (double)(b - a) / (n1 - n0);
        if ((int)(n1 - n0) < best) best = (int)(n1 - n0), ghz = g;
    }
    if (share) { /* part 0's units of every layer, one thread, thread CPU time per call */
        qv_job j;
        memset(&j, 0, sizeof j);
        j.ls = ls, j.layers = 3, j.m = 1, j.kmax = kmax, j.x = x, j.outs = outs;
        j.parts_scratch = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
        j.part_bytes = qv_part_bytes(1, kmax);
        int64_t units[6];
        for (int l = 0; l < 3; l++) units[l] = ((dims[l + 1] + 15) / 16 + 3) / 4, units[3 + l] = 4;
        j.units = units;
        qv_cur cur;
        double *part[3][2];
        for (int l = 0; l < 3; l++) part[l][0] = malloc(calls * 8), part[l][1] = malloc(calls * 8);
        for (int i = -200; i < calls; i++) {
            struct timespec a, b;
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
            for (int l = 0; l < 3; l++) {
                const unsigned long long c0 = __rdtsc();
                qv_prep(&j, 0, l, &cur);
                const unsigned long long c1 = __rdtsc();
                for (int64_t u = 0; u < (units[l] + 1) / 2; u++) qv_unit(&cur, u);
                if (i >= 0) part[l][0][i] = (double)(c1 - c0), part[l][1][i] = (double)(__rdtsc() - c1);
            }
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
            if (i >= 0) t[i] = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
        }
        qsort(t, calls, sizeof *t, cmp);
        printf("share 0 alone, 1 thread, %d calls: median %.2f us, p5 %.2f, p25 %.2f (thread CPU)\n",
               calls, t[calls / 2] / 1e3, t[calls / 20] / 1e3, t[calls / 4] / 1e3);
        for (int l = 0; l < 3; l++) { /* medians: the layer's prep (quantize, sign split), its units */
            qsort(part[l][0], calls, 8, cmp);
            qsort(part[l][1], calls, 8, cmp);
            printf("  layer %d: prep %.2f us, units %.2f us (TSC medians)\n", l,
                   part[l][0][calls / 2] / ghz / 1e3, part[l][1][calls / 2] / ghz / 1e3);
        }
        return 0;
    }
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
        h_chain(x, ls, outs, scratch, kmax, threads);
        const double t1 = ns();
        if (i < 0) continue;
        t[i] = t1 - t0;
        if (threads > 1) {
            if (qv_tr.start[1]) arrive[arrived++] = (double)(qv_tr.start[1] - c0) / ghz;
            if (qv_tr.own[1] + qv_tr.stolen[1] == 0) idle++; /* the worker ran no unit */
            if (qv_tr.start[1] && (double)(qv_tr.start[1] - c0) / ghz < 1e3) on_time[n_on++] = t[i];
            else late[n_late++] = t[i];
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
        qsort(on_time, n_on, sizeof *on_time, cmp);
        qsort(late, n_late, sizeof *late, cmp);
        if (n_on) /* the chain's own speed, apart from the OS's delay in running the worker */
            printf("calls whose worker started within 1 us: %.1f %%, median %.2f us, p5 %.2f\n",
                   100.0 * n_on / calls, on_time[n_on / 2] / 1e3, on_time[n_on / 20] / 1e3);
        if (n_late)
            printf("the other calls: median %.2f us\n", late[n_late / 2] / 1e3);
        for (int p = 0; p < threads && p < 4; p++)
            printf("thread %d: own units %.2f, stolen %.2f a call; barrier waits %.2f, %.2f us\n",
                   p, (double)own[p] / calls, (double)stolen[p] / calls, wait[p][1] / 1e3 / calls,
                   wait[p][2] / 1e3 / calls);
    }
    return 0;
}
#endif
