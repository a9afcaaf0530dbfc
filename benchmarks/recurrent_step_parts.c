/* recurrent_step_parts.c: where one step of the fused float32 recurrent kernel
 * (kernels/csrc/recurrent_rows.h) spends its time, on bench_vs_ort's layer (F=8 inputs, U=64
 * units), one thread: the whole step (input and recurrent sums, gate math) of B rows, and its
 * gate math alone (lnn_rr_gates over the 8 unit blocks of 64 rows, from gate sums kept aside
 * and copied back before each block, as the step finds them; the copy is timed apart). The
 * sums are the step less the gate math. Then the FMA work the step must do: B x 73 x G U
 * multiply-adds at 16 a cycle, at the clock given (GHz, default 3.0), for scale.
 *
 * Each figure is taken over many short calls (tens of us, well inside a scheduler slice) and
 * given as min / 10th percentile / median of wall time: on a loaded machine the low
 * percentiles are the calls nobody interrupted, so two builds compare in one minute even
 * under load (CPU-time means do not: a preempted call's caches come back cold).
 *
 *     gcc -O3 -fno-math-errno -fno-trapping-math -std=c11 -Ikernels/csrc \
 *         benchmarks/recurrent_step_parts.c -o /tmp/rsp && /tmp/rsp [B] [GHz]
 *
 * Another build's headers: -I/that/checkout/kernels/csrc (a git archive of any commit).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recurrent_rows.h"

#if !LNN_RR_AVX2
int main(void)
{
    puts("no AVX2 kernel on this compiler / CPU");
    return 0;
}
#else

#define F 8
#define U 64
#define T 50

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *ts, int n)
{
    qsort(ts, (size_t)n, sizeof(double), cmp);
    printf("  %-28s min %7.2f  p10 %7.2f  p50 %7.2f us\n", what, ts[0] * 1e6, ts[n / 10] * 1e6,
           ts[n / 2] * 1e6);
}

static float *filled(size_t n, float scale)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    for (size_t i = 0; i < n; i++) p[i] = ((float)(rand() % 2001) / 1000.0f - 1.0f) * scale;
    return p;
}

/* the gate math of one step of 64 rows, LSTM or GRU, from sums zs (kept aside) */
__attribute__((noinline)) static LNN_RR_T void gate_math(int cell, float *z, const float *zs, float *h, float *c, int copy)
{
    const __m256i lanes = _mm256_set1_epi32(-1);
    for (int blk = 0; blk < U / LNN_RV; blk++) {
        memcpy(z, zs, 64 * 4 * LNN_RV * sizeof(float));
        if (!copy)
            lnn_rr_gates(cell, z, 0, 64, U, blk * LNN_RV, NULL, h, h + 64 * U, c, c + 64 * U,
                         NULL, lanes, 0);
        __asm__ volatile("" ::"r"(z) : "memory");
    }
}

int main(int argc, char **argv)
{
    const ptrdiff_t b = argc > 1 ? atoi(argv[1]) : 64;
    const double ghz = argc > 2 ? atof(argv[2]) : 3.0;
    if (!lnn_rec_rows_available()) {
        puts("no AVX2 + FMA on this CPU");
        return 0;
    }
    const int reps = 4000;
    double *ts = malloc(reps * sizeof(double));
    for (int cell = 0; cell < 2; cell++) {
        const int g = cell == 0 ? 4 : 3;
        const ptrdiff_t kp = 1 + F + U + (cell == 1), nb = U / LNN_RV;
        float *wp = filled((size_t)(nb * kp * g * LNN_RV), 0.15f);
        float *x = filled((size_t)(T * b * F), 1.0f);
        float *h = calloc((size_t)(2 * b * U), sizeof(float));
        float *c = calloc((size_t)(2 * b * U), sizeof(float));
        printf("%s, batch %td, one step (F=%d, U=%d):\n", cell == 0 ? "LSTM" : "GRU", b, F, U);
        lnn_rec_rows_fwd_f32(cell, x, wp, h, c, NULL, NULL, b, F, U, T, 2, 2, 0, b, 0, kp);
        for (int n = 0; n < reps; n++) {
            const ptrdiff_t s = n % T;
            const double t0 = now();
            lnn_rec_rows_steps_f32(cell, x, wp, h, c, NULL, NULL, b, F, U, T, 2, 2, 0, b, s, s + 1,
                                   0, kp);
            ts[n] = now() - t0;
        }
        report("whole step", ts, reps);
        float *z = aligned_alloc(64, 64 * 4 * LNN_RV * sizeof(float));
        float *zs = filled(64 * 4 * LNN_RV, 2.0f);
        float *hh = calloc(2 * 64 * U, sizeof(float)), *cc = calloc(2 * 64 * U, sizeof(float));
        for (int copy = 1; copy >= 0; copy--) {
            for (int n = 0; n < reps; n++) {
                const double t0 = now();
                gate_math(cell, z, zs, hh, cc, copy);
                ts[n] = now() - t0;
            }
            report(copy ? "copies of the sums (64 rows)" : "gate math + copies (64 rows)", ts,
                   reps);
        }
        const double fmas = (double)b * (1 + F + U) * g * U;
        printf("  FMA-bound sums at %.1f GHz: %.2f us\n", ghz, fmas / 16.0 / ghz / 1e3);
        free(wp), free(x), free(h), free(c), free(z), free(zs), free(hh), free(cc);
    }
    free(ts);
    return 0;
}
#endif
