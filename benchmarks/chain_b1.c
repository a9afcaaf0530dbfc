/* chain_b1.c: where the 2-thread batch-1 Dense chain's time goes (784-512-256-10, fp32).
 *
 * Links the real kernel (kernels/csrc/dense_packed.h) and the real pool (pool.h, built in
 * here instead of in lepton_nn.kernels._pool) without Python, and times per call (wall clock,
 * interleaved rounds, median and p5):
 *
 *   1 thread        the whole chain on the caller
 *   2 threads       the chain as one pool job of 2 tasks, split by columns with no barrier
 *                   between layers (what the runtime runs): each thread claims the units of
 *                   its own panel range of every layer, a unit of layer l waiting only for the
 *                   column ranges of layer l - 1 it reads; layer 3 goes to the first thread there
 *   share 0 / 1     thread t's panels of every layer, alone on the caller (the bytes one core
 *                   reads in the 2-thread call; thread 0's share includes layer 3)
 *   shares at once  both shares as one job of 2 tasks that never wait for each other (wrong
 *                   numbers, right bytes): the 2-thread call without its waits for the other
 *                   thread's columns, so the cost of two cores reading L3 at once plus the
 *                   hand-off
 *   read 1.07 MB    the bound: a 6-stream AVX2 read of a 1.07 MB buffer (L3), same run
 *
 * and, for the 2-thread job, a timeline from rdtsc stamps the kernel's hook (LNN_PK_TRACE)
 * takes around each unit: when the worker starts (after the caller posts), when each thread
 * begins and ends each layer (a unit's time includes its waits for the previous layer's
 * columns; the hook's own wait stamps, layer -1, are not kept). Each thread's stamps of a
 * call fill a 64-byte line of their own, so the hook adds no traffic between the cores.
 * Medians over the calls in which the worker took part in layers 1 and 2.
 *
 *     gcc -O2 -std=gnu11 -pthread -Ikernels/csrc benchmarks/chain_b1.c -o /tmp/chain_b1 &&
 *     /tmp/chain_b1 [rounds]
 *
 * Another tree's kernel (an A/B; its timeline is empty if it has no LNN_PK_TRACE hook):
 *     mkdir -p /tmp/base && git show main:kernels/csrc/dense_packed.h > /tmp/base/dense_packed.h
 *     gcc -O2 -std=gnu11 -pthread -I/tmp/base -Ikernels/csrc benchmarks/chain_b1.c -o /tmp/chain_b1_base
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include "pool_impl.h" /* the pool itself */

/* what pool.h gives an extension, straight to the pool built here */
static inline int lnn_parallel(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads)
{
    return lnn_pool_run(fn, ctx, tasks, threads);
}

/* the timeline: the kernel's hook stamps each unit of the column split (first begin, last
 * end per layer and thread; a unit's time includes its waits for the previous layer). A
 * wait's own stamps (l = -1) are skipped: indexing a layer by them wrote the previous call's
 * layer 3 row (and, in the first call, memory before the array). One thread's stamps of one
 * call: a 64-byte line of their own (both threads' in one line made the hook move that line
 * between the cores while they worked). */
#define NC 4096
enum { L = 3 };
typedef struct {
    _Alignas(64) unsigned long long start[L]; /* the struct: one 64-byte line */
    unsigned long long end[L];
} stamps_t;
_Static_assert(sizeof(stamps_t) == 64, "a thread's stamps of a call: one line");
static __thread int me = 1; /* the caller sets 0 */
static int tracing, cur;
static unsigned long long post_at[NC];
static stamps_t ts[NC][2]; /* call, thread */
static inline void stamp(int l, int end)
{
    if (!tracing || l < 0) return;
    const unsigned long long v = __rdtsc();
    stamps_t *s = &ts[cur][me];
    if (end) {
        if (v > s->end[l]) s->end[l] = v;
    } else if (!s->start[l] || v < s->start[l]) {
        s->start[l] = v;
    }
}
#define LNN_PK_TRACE(l, u, end) stamp((int)(l), (end))
#include "dense_packed.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static const ptrdiff_t dims[L + 1] = {784, 512, 256, 10};
static float *pan[L], *bias[L], *outs[L], x[784];
static const int act[L] = {LNN_RELU, LNN_RELU, LNN_IDENTITY};

static void chain(int threads)
{
    lnn_dense_packed_chain_f32(x, 1, L, (const float *const *)pan, (const float *const *)bias,
                               act, dims, outs, threads);
}

/* panels [p0, p1) of layer l as a layer of its own */
static lnn_pk_layer_t part(int l, ptrdiff_t p0, ptrdiff_t p1)
{
    lnn_pk_layer_t s = {l ? outs[l - 1] : x, pan[l] + p0 * dims[l] * LNN_PK_NR,
                        bias[l] + p0 * LNN_PK_NR, outs[l] + p0 * LNN_PK_NR, 1, dims[l], 0, act[l]};
    const ptrdiff_t end = p1 * LNN_PK_NR < dims[l + 1] ? p1 * LNN_PK_NR : dims[l + 1];
    s.n = end - p0 * LNN_PK_NR > 0 ? end - p0 * LNN_PK_NR : 0;
    return s;
}

/* thread t's panels of every layer (the kernel's ranges; layer 3's one panel is thread 0's:
 * the pool gives a phase's single task to block 0) */
static void share(int t)
{
    for (int l = 0; l < L; l++) {
        const ptrdiff_t panels = (dims[l + 1] + LNN_PK_NR - 1) / LNN_PK_NR;
        ptrdiff_t p0 = panels * t / 2, p1 = panels * (t + 1) / 2;
        if (panels == 1) p0 = 0, p1 = t == 0;
        const lnn_pk_layer_t s = part(l, p0, p1);
        if (s.n > 0) lnn_pk_layer_alone(&s);
    }
}

static int shares_task(void *ctx, ptrdiff_t t)
{
    (void)ctx;
    share((int)t);
    return 0;
}

static int cmpd(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

__attribute__((target("avx2"))) static float readbuf(const float *p, long n)
{
    const long per = n / 6;
    __m256 acc[6];
    for (int s = 0; s < 6; s++) acc[s] = _mm256_setzero_ps();
    for (long i = 0; i + 16 <= per; i += 16)
        for (int s = 0; s < 6; s++)
            acc[s] = _mm256_max_ps(acc[s], _mm256_max_ps(_mm256_loadu_ps(p + s * per + i),
                                                         _mm256_loadu_ps(p + s * per + i + 8)));
    for (int s = 1; s < 6; s++) acc[0] = _mm256_max_ps(acc[0], acc[s]);
    float o[8];
    _mm256_storeu_ps(o, acc[0]);
    return o[0];
}

static float *rb;
static volatile float sink;
static void read_l3(void) { sink += readbuf(rb, 1065 * 1000 / 4); }
static void one_t(void) { chain(1); }
static void two_t(void) { chain(2); }
static void share0(void) { share(0); }
static void share1(void) { share(1); }
static void shares_at_once(void) { lnn_parallel(shares_task, NULL, 2, 2); }

#define MAXR 101
int main(int argc, char **argv)
{
    const int rounds = argc > 1 ? atoi(argv[1]) : 21;
    lnn_pool_set_spin(5000000);
    lnn_pool_set_wait(5000000);
    srand(1);
    for (int l = 0; l < L; l++) {
        const ptrdiff_t np = (dims[l + 1] + 15) / 16;
        pan[l] = aligned_alloc(64, sizeof(float) * np * dims[l] * 16 + 64);
        for (ptrdiff_t i = 0; i < np * dims[l] * 16; i++)
            pan[l][i] = (rand() % 200 - 100) / 3000.0f;
        bias[l] = aligned_alloc(64, sizeof(float) * np * 16);
        for (ptrdiff_t i = 0; i < np * 16; i++) bias[l][i] = 0.01f * (i % 7);
        outs[l] = aligned_alloc(64, sizeof(float) * np * 16);
    }
    for (int i = 0; i < 784; i++) x[i] = (i % 13) / 13.0f;
    rb = aligned_alloc(64, 1065 * 1000 + 24); /* a size of whole 64-byte lines */
    for (int i = 0; i < 1065 * 1000 / 4; i++) rb[i] = 1;
    me = 0;
    chain(2); /* start the worker */

    struct {
        const char *name;
        void (*fn)(void);
    } v[] = {{"1 thread", one_t},
             {"2 threads", two_t},
             {"share 0 alone", share0},
             {"share 1 alone", share1},
             {"shares at once", shares_at_once},
             {"read 1.07 MB (L3)", read_l3}};
    enum { NV = sizeof v / sizeof v[0] };
    static double t[NV][MAXR];
    const int warm = 20, reps = 200;
    const long long tasks0 = lnn_pool_stat(2);
    for (int r = 0; r < rounds && r < MAXR; r++)
        for (int i0 = 0; i0 < NV; i0++) {
            const int i = r % 2 ? NV - 1 - i0 : i0;
            for (int c = 0; c < warm; c++) v[i].fn();
            const double t0 = now();
            for (int c = 0; c < reps; c++) v[i].fn();
            t[i][r] = (now() - t0) / reps;
        }
    const int R = rounds < MAXR ? rounds : MAXR;
    printf("per call, us (median, p5 of %d rounds of %d calls)\n", R, reps);
    for (int i = 0; i < NV; i++) {
        qsort(t[i], R, sizeof(double), cmpd);
        printf("  %-20s %7.2f %7.2f\n", v[i].name, t[i][R / 2] * 1e6, t[i][R / 20] * 1e6);
    }
    printf("  (the worker ran %lld tasks)\n", lnn_pool_stat(2) - tasks0);

    /* the timeline: rdtsc ticks to us */
    const double c0 = now();
    const unsigned long long k0 = __rdtsc();
    for (int c = 0; c < 50; c++) chain(2);
    const double tick_us = (now() - c0) * 1e6 / (double)(__rdtsc() - k0);
    tracing = 1;
    for (cur = 0; cur < NC; cur++) {
        memset(ts[cur], 0, sizeof ts[cur]);
        post_at[cur] = __rdtsc();
        chain(2);
    }
    tracing = 0;
    static double col[8][NC];
    int n = 0; /* calls in which the worker ran tasks of layers 1 and 2 */
    for (int c = 0; c < NC; c++) {
        const stamps_t *a = &ts[c][0], *w = &ts[c][1]; /* caller, worker */
        if (!w->start[0] || !w->start[1]) continue;
        const double p = (double)post_at[c];
#define US(v) (((double)(v) - p) * tick_us)
        col[0][n] = US(w->start[0]); /* worker starts layer 1 */
        col[1][n] = US(a->end[0]);   /* caller ends layer 1 */
        col[2][n] = US(w->end[0]);   /* worker ends layer 1 */
        col[3][n] = US(a->start[1]); /* caller starts layer 2 */
        col[4][n] = US(w->start[1]); /* worker starts layer 2 */
        col[5][n] = US(a->end[1]);   /* caller ends layer 2 */
        col[6][n] = US(w->end[1]);   /* worker ends layer 2 */
        col[7][n] = US(a->end[2] > w->end[2] ? a->end[2] : w->end[2]);
        n++;
    }
    const char *names[8] = {"worker starts layer 1", "caller ends layer 1",
                            "worker ends layer 1",   "caller starts layer 2",
                            "worker starts layer 2", "caller ends layer 2",
                            "worker ends layer 2",   "layer 3 done"};
    printf("timeline of the 2-thread job, us after the caller posts it (%d of %d calls had "
           "the worker in layers 1 and 2; median, p5, p95)\n", n, NC);
    for (int i = 0; i < 8 && n > 0; i++) {
        qsort(col[i], n, sizeof(double), cmpd);
        printf("  %-24s %7.2f %7.2f %7.2f\n", names[i], col[i][n / 2], col[i][n / 20],
               col[i][n * 19 / 20]);
    }
    return 0;
}
