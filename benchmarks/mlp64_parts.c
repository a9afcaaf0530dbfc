/* mlp64_parts.c: where a batch-64 (or 256) call of the fp32 784-512-256-10 chain goes, as a
 * fraction of the FMA peak measured in the same process (dense_packed.h's real kernel, no
 * Python). Each sample is ONE call timed with the thread's CPU time, the variants interleaved,
 * `rounds` samples each; the FMA peak is a register-only loop of 12 independent AVX2 FMA
 * chains (its best sample). On a loaded machine a neighbour only ever makes a sample
 * longer (preemption, evicted caches), so the min is the figure to compare (the 2-3 % A/Bs of
 * issue 23 were read from the mins of several processes, alternated).
 *
 *   chain m x 1      the whole chain at m rows on the caller (what 1 thread runs)
 *   blocks of 16/32  the m rows in blocks of 16 (32) rows, each block through every layer
 *                    (the 2-thread row split's tasks, one after another on one thread)
 *   layer l          layer l alone at m rows
 *
 * Each line: us per call (median, min, quartiles), and at the min: vector FMAs per ns and that
 * over the peak (the FMAs counted are the ones the tiles issue: every column padded to a
 * 16-wide panel).
 *
 *     gcc -O2 -std=gnu11 -pthread -Ikernels/csrc benchmarks/mlp64_parts.c -o /tmp/mlp64_parts &&
 *     /tmp/mlp64_parts [m] [rounds]
 *
 * Another tree's kernel (an A/B; alternate the two binaries a few times, compare the mins):
 *     mkdir -p /tmp/base && git show main:kernels/csrc/dense_packed.h > /tmp/base/dense_packed.h
 *     gcc -O2 -std=gnu11 -pthread -I/tmp/base -Ikernels/csrc benchmarks/mlp64_parts.c -o /tmp/mlp64_base
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool_impl.h"
static inline int lnn_parallel(lnn_task_fn fn, void *ctx, ptrdiff_t tasks, int threads)
{
    return lnn_pool_run(fn, ctx, tasks, threads);
}
static inline int lnn_parallel_phases(const lnn_phase_t *phases, int count, int threads)
{
    return lnn_pool_run_phases(phases, count, threads);
}
#include "dense_packed.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

enum { L = 3, MAXM = 1024 };
static const ptrdiff_t dims[L + 1] = {784, 512, 256, 10};
static float *pan[L], *bias[L], *outs[L], *x;
static const int act[L] = {LNN_RELU, LNN_RELU, LNN_IDENTITY};
static ptrdiff_t M;

static void chain_rows(ptrdiff_t m)
{
    lnn_dense_packed_chain_f32(x, m, L, (const float *const *)pan, (const float *const *)bias,
                               act, dims, outs, 1);
}

/* the chain on rows [0, m) in blocks of r rows, each through every layer */
static void chain_blocks(ptrdiff_t m, ptrdiff_t r)
{
    for (ptrdiff_t r0 = 0; r0 < m; r0 += r) {
        const ptrdiff_t n = m - r0 < r ? m - r0 : r;
        float *o[L];
        for (int l = 0; l < L; l++) o[l] = outs[l] + r0 * dims[l + 1];
        lnn_dense_packed_chain_f32(x + r0 * dims[0], n, L, (const float *const *)pan,
                                   (const float *const *)bias, act, dims, o, 1);
    }
}

static void layer(int l, ptrdiff_t m)
{
    const lnn_pk_layer_t s = {l ? outs[l - 1] : x, pan[l], bias[l], outs[l], m, dims[l],
                              dims[l + 1], act[l]};
    lnn_pk_layer_alone(&s);
}

__attribute__((target("avx2,fma"))) static double fma_peak_ns(long n) /* vector FMAs per ns, 12 chains */
{
    __m256 c[12], a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
    for (int i = 0; i < 12; i++) c[i] = _mm256_set1_ps((float)i);
    const double t0 = now();
    for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) c[i] = _mm256_fmadd_ps(a, c[i], b);
    }
    const double dt = now() - t0;
    for (int i = 1; i < 12; i++) c[0] = _mm256_add_ps(c[0], c[i]);
    float o[8];
    _mm256_storeu_ps(o, c[0]);
    if (o[0] == 12345.f) puts("");
    return 12.0 * n / (dt * 1e9);
}

static double fmas(int l, ptrdiff_t m) /* vector FMAs the tiles issue */
{
    return (double)m * dims[l] * ((dims[l + 1] + 15) / 16) * 2;
}

static int cmpd(const void *a, const void *b)
{
    const double p = *(const double *)a, q = *(const double *)b;
    return (p > q) - (p < q);
}

#define NV 7
#define MAXR 401
int main(int argc, char **argv)
{
    M = argc > 1 ? atoi(argv[1]) : 64;
    const int rounds = argc > 2 ? atoi(argv[2]) : 201;
    if (M > MAXM) M = MAXM;
    srand(1);
    x = aligned_alloc(64, sizeof(float) * MAXM * 784);
    for (ptrdiff_t i = 0; i < MAXM * 784; i++) x[i] = (rand() % 100) / 100.0f;
    for (int l = 0; l < L; l++) {
        const ptrdiff_t np = (dims[l + 1] + 15) / 16;
        pan[l] = aligned_alloc(64, sizeof(float) * np * dims[l] * 16 + 64);
        for (ptrdiff_t i = 0; i < np * dims[l] * 16; i++)
            pan[l][i] = (rand() % 200 - 100) / 3000.0f;
        bias[l] = aligned_alloc(64, sizeof(float) * np * 16);
        for (ptrdiff_t i = 0; i < np * 16; i++) bias[l][i] = 0.01f * (i % 7);
        outs[l] = aligned_alloc(64, sizeof(float) * MAXM * np * 16);
    }
    const char *name[NV] = {"FMA peak", "chain m x 1", "blocks of 16", "blocks of 32",
                            "layer 1 (m)", "layer 2 (m)", "layer 3 (m)"};
    double fm[NV] = {0, 0, 0, 0, fmas(0, M), fmas(1, M), fmas(2, M)};
    for (int l = 0; l < L; l++) {
        fm[1] += fmas(l, M);
        fm[2] += fmas(l, M);
        fm[3] += fmas(l, M);
    }
    static double t[NV][MAXR];
    for (int r = 0; r < rounds && r < MAXR; r++)
        for (int i0 = 0; i0 < NV; i0++) {
            const int i = r % 2 ? NV - 1 - i0 : i0;
            const int reps = 1;
            if (i == 0) {
                t[0][r] = fma_peak_ns(200000);
                continue;
            }
            for (int c = 0; c < 2; c++) { /* warm */
                if (i == 1) chain_rows(M);
                else if (i == 2) chain_blocks(M, 16);
                else if (i == 3) chain_blocks(M, 32);
                else layer(i - 4, M);
            }
            const double t0 = now();
            for (int c = 0; c < reps; c++) {
                if (i == 1) chain_rows(M);
                else if (i == 2) chain_blocks(M, 16);
                else if (i == 3) chain_blocks(M, 32);
                else layer(i - 4, M);
            }
            t[i][r] = (now() - t0) / reps;
        }
    const int R = rounds < MAXR ? rounds : MAXR;
    qsort(t[0], R, sizeof(double), cmpd);
    const double peak = t[0][R - 1]; /* the best sample, as the call times' mins */
    printf("m = %ld, %d rounds, CPU time; FMA peak %.2f vector FMA/ns (%.1f GFLOP/s)\n", (long)M,
           R, peak, peak * 16);
    for (int i = 1; i < NV; i++) {
        qsort(t[i], R, sizeof(double), cmpd);
        const double s = t[i][R / 2];
        printf("  %-14s %8.1f us  (min %8.1f q1 %8.1f q3 %8.1f)  at min %.2f FMA/ns, %5.1f %% of peak\n",
               name[i], s * 1e6, t[i][0] * 1e6, t[i][R / 4] * 1e6, t[i][3 * R / 4] * 1e6,
               fm[i] / t[i][0] / 1e9, 100 * fm[i] / t[i][0] / 1e9 / peak);
    }
    return 0;
}
