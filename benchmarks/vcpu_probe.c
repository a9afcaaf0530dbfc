/* vcpu_probe.c: how the guest's two vCPUs sit on the host, for the int8 chain's two speed
 * groups per process (issue 23): (1) the round trip of a cache line between a thread on CPU 0
 * and one on CPU 1 (two line transfers; same CCX ~50-70 ns, across CCDs well over 100), as the
 * 20th and 50th percentile of 2,000 trips; (2) AVX2 FMAs per TSC cycle on CPU 0 alone and
 * while CPU 1 runs the same loop (separate host cores: equal; SMT siblings: about half).
 *
 *     gcc -O2 -mavx2 -mfma benchmarks/vcpu_probe.c -o /tmp/vcpu_probe -lpthread && /tmp/vcpu_probe
 *
 * prints one line: "rt p20 P p50 Q ns; fma alone A both B" (benchmarks/bench_qchain_groups.py)
 *
 * The round trip and a per-CPU speed are also measured by the package itself, portably, at the
 * start and end of every `lepton-nn bench` table and in bench_vs_ort.py / int8_vs_ort.py:
 * kernels/hostprobe.c (lepton_nn.kernels._hostprobe), read by lepton_nn.bench.hoststate
 * (`python -m lepton_nn.bench.hoststate [SECONDS]` prints readings). */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>

static _Alignas(128) volatile long ping;
static _Alignas(128) volatile long pong;
static _Alignas(128) volatile int mode; /* 0 echo pings, 1 run FMA chunks, 2 idle, 3 stop */

static void pin(int c) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(c, &s);
    sched_setaffinity(0, sizeof s, &s);
}
static double ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* 10 independent FMA chains (latency 4 x 2 pipes needs 8) x 4096: FMAs per TSC cycle */
static double chunk(void) {
    const __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f);
    __m256 a0 = _mm256_set1_ps(0), a1 = _mm256_set1_ps(1), a2 = _mm256_set1_ps(2), a3 = _mm256_set1_ps(3),
           a4 = _mm256_set1_ps(4), a5 = _mm256_set1_ps(5), a6 = _mm256_set1_ps(6), a7 = _mm256_set1_ps(7),
           a8 = _mm256_set1_ps(8), a9 = _mm256_set1_ps(9);
    const unsigned long long t0 = __rdtsc();
    for (int it = 0; it < 4096; it++) {
        a0 = _mm256_fmadd_ps(a0, b, c), a1 = _mm256_fmadd_ps(a1, b, c), a2 = _mm256_fmadd_ps(a2, b, c);
        a3 = _mm256_fmadd_ps(a3, b, c), a4 = _mm256_fmadd_ps(a4, b, c), a5 = _mm256_fmadd_ps(a5, b, c);
        a6 = _mm256_fmadd_ps(a6, b, c), a7 = _mm256_fmadd_ps(a7, b, c), a8 = _mm256_fmadd_ps(a8, b, c);
        a9 = _mm256_fmadd_ps(a9, b, c);
    }
    const unsigned long long t1 = __rdtsc();
    const __m256 z = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                   _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(_mm256_add_ps(a6, a7),
                                                                                      _mm256_add_ps(a8, a9))));
    if (z[0] == 12345.f) puts("");
    return 40960.0 / (double)(t1 - t0);
}

static void *other(void *u) {
    (void)u;
    pin(1);
    long last = 0;
    for (;;) {
        const int m = mode;
        if (m == 3) return NULL;
        if (m == 1) chunk();
        else if (m == 0) {
            const long v = ping;
            if (v != last) last = pong = v;
        }
    }
}

static double fma_median(int n) {
    static double r[4000];
    for (int i = 0; i < n; i++) r[i] = chunk();
    qsort(r, n, sizeof *r, cmp);
    return r[n / 2];
}

int main(void) {
    pin(0);
    pthread_t th;
    pthread_create(&th, NULL, other, NULL);
    static double rt[2000];
    long v = 0;
    for (int i = -200; i < 2000; i++) {
        const double t0 = ns();
        ping = ++v;
        while (pong != v) {}
        if (i >= 0) rt[i] = ns() - t0;
    }
    qsort(rt, 2000, sizeof *rt, cmp);
    mode = 2;
    const double alone = fma_median(2000);
    mode = 1;
    const double both = fma_median(2000);
    mode = 3;
    pthread_join(th, NULL);
    printf("rt p20 %.0f p50 %.0f ns; fma alone %.2f both %.2f\n", rt[400], rt[1000], alone, both);
    return 0;
}
