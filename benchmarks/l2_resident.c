/* l2_resident.c: can one core keep part of its batch-1 weight share in its L2 across calls?
 *
 * The 2-thread batch-1 chain on the 784-512-256-10 MLP gives each core a fixed share of the
 * packed panels (dense_packed.h): thread 1 reads panels 16-31 of layer 1 (784 x 16 floats
 * each, 803 KB) and 8-15 of layer 2 (512 x 16 each, 262 KB), 1.07 MB every call. Read
 * cyclically through a 512 KiB L2 every line misses and comes from L3. This harness runs that
 * share's GEMV exactly as the kernel does (1 x NP tiles, NP <= 6 panels side by side, one
 * 64-byte line of each panel per k) with a per-panel choice of how the panel is read:
 *
 *   plain   the kernel's loads only (hardware prefetchers);
 *   nta     prefetchnta `dist` lines ahead in that panel, then the same loads;
 *   t0      prefetcht0 `dist` lines ahead (a control: same instructions, normal insertion);
 *   load    plain loads, but counted as the streamed part (the control: no hint at all);
 *   ntload  vmovntdqa loads (a non-temporal hint on the load itself).
 *
 * A variant names which panels are read plainly (the "resident" part) and how the rest is
 * streamed. If nta lines do not evict the plain ones from L2, the plain part is read from L2
 * every call after the first and only the rest from L3. Printed per variant: per-call time,
 * median and p5 over interleaved rounds (each round: warm calls, then timed calls), and the
 * bound from the same run's read bandwidths (L2: a 256 KB buffer, L3: a 1.07 MB one, same
 * 6-stream AVX2 read) for the bytes each variant hopes to read from each level.
 *
 * The residency check is the clean signal (two short reads back to back, so the host's noise
 * hits both alike): the plain part read right after a call, against the same read right after
 * itself (then it is in L2 for sure). A plain part read FIRST in the call (the last variants)
 * is the test; one read last (layer b) is in L2 after the call anyway (recency, not the hint).
 *
 * Found on the Zen 3 guest (December 2026, loaded; the check's ratio was the same in 3 runs):
 * the first 401 KB read after a call took 1.2-1.3x the hot read (6.5-7.0 against 5.2-5.8 us:
 * from L3) whatever the rest used: plain loads, prefetchnta, prefetcht0 or vmovntdqa. So
 * non-temporal prefetches and loads fill L2 and evict like plain loads here; no hint keeps
 * part of a share resident. (Splitting L2 by set instead, with the streamed part on a quarter
 * of the sets, needs the host-physical address bits 12-15: a pointer chase over 16-64 lines
 * 64 KB apart, which would share one 8-way set if those bits followed the guest's, ran at L2
 * latency, so they do not.) And the prize would be small: L2 fills L1 at 73-91 GB/s here
 * against 55-72 GB/s from L3, so a 400 KB resident part saves ~1.5-2 us of a ~17 us share,
 * not the 12-13 us bound a much faster L2 would give.
 *
 *     gcc -O2 -std=gnu11 benchmarks/l2_resident.c -o /tmp/l2_resident && /tmp/l2_resident [rounds]
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NR 16
enum { PLAIN = 0, NTA = 1, T0 = 2, LOAD = 3, NTLOAD = 4 }; /* LOAD: plain loads, counted as streamed */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* y[0:16 NP] = x[0:k] @ panels[0:NP] (each k x 16, stride kp * 16 floats), hints per panel */
__attribute__((always_inline, target("avx2,fma"))) static inline void
tile(const int NP, const float *x, const float *pan, long k, float *y, const int *how, long dist)
{
    __m256 acc[12];
    for (int i = 0; i < 2 * NP; i++) acc[i] = _mm256_setzero_ps();
    for (long kk = 0; kk < k; kk++) {
        const __m256 a = _mm256_broadcast_ss(x + kk);
#pragma GCC unroll 6
        for (int p = 0; p < NP; p++) {
            const float *r = pan + p * k * NR + kk * NR;
            if (how[p] == NTA && kk + dist < k) _mm_prefetch((const char *)(r + dist * NR), _MM_HINT_NTA);
            if (how[p] == T0 && kk + dist < k) _mm_prefetch((const char *)(r + dist * NR), _MM_HINT_T0);
            __m256 w0, w1;
            if (how[p] == NTLOAD) {
                w0 = _mm256_castsi256_ps(_mm256_stream_load_si256((__m256i *)r));
                w1 = _mm256_castsi256_ps(_mm256_stream_load_si256((__m256i *)(r + 8)));
            } else {
                w0 = _mm256_loadu_ps(r);
                w1 = _mm256_loadu_ps(r + 8);
            }
            acc[2 * p] = _mm256_fmadd_ps(a, w0, acc[2 * p]);
            acc[2 * p + 1] = _mm256_fmadd_ps(a, w1, acc[2 * p + 1]);
        }
    }
    for (int i = 0; i < 2 * NP; i++) _mm256_storeu_ps(y + 8 * i, acc[i]);
}

__attribute__((target("avx2,fma"))) static void tile_any(int np, const float *x, const float *pan,
                                                        long k, float *y, const int *how,
                                                        long dist)
{
    switch (np) {
    case 1: tile(1, x, pan, k, y, how, dist); break;
    case 2: tile(2, x, pan, k, y, how, dist); break;
    case 3: tile(3, x, pan, k, y, how, dist); break;
    case 4: tile(4, x, pan, k, y, how, dist); break;
    case 5: tile(5, x, pan, k, y, how, dist); break;
    case 6: tile(6, x, pan, k, y, how, dist); break;
    }
}

/* the share: layer a = 16 panels of K 784, layer b = 8 panels of K 512 */
#define PA 16
#define KA 784
#define PB 8
#define KB 512
static float *wa, *wb, xa[KA], xb[KB], ya[PA * NR], yb[PB * NR];

typedef struct {
    const char *name;
    int how_a[PA], how_b[PB];
    int b_first; /* layer b's panels before layer a's (order of the parts) */
    long dist;
    long plain_bytes; /* filled in */
} variant_t;

/* one call: the layers' units as the kernel cuts them (len panels, groups of <= 6) */
static void run_layer(const float *w, long k, int panels, const float *x, float *y,
                      const int *how, long dist)
{
    const int units = (panels + 5) / 6;
    for (int u = 0; u < units; u++) {
        const int a = panels * u / units, b = panels * (u + 1) / units;
        tile_any(b - a, x, w + (long)a * k * NR, k, y + a * NR, how + a, dist);
    }
}

static void call(const variant_t *v)
{
    if (v->b_first) {
        run_layer(wb, KB, PB, xb, yb, v->how_b, v->dist);
        run_layer(wa, KA, PA, xa, ya, v->how_a, v->dist);
    } else {
        run_layer(wa, KA, PA, xa, ya, v->how_a, v->dist);
        run_layer(wb, KB, PB, xb, yb, v->how_b, v->dist);
    }
}

/* 6 streams side by side over n floats, as read_probe.h */
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

/* read the plain panels only (layer a's first ones and layer b's, each contiguous) */
static float read_plain(const variant_t *v)
{
    long ra = 0;
    while (ra < PA && v->how_a[ra] == PLAIN) ra++;
    float s = 0;
    if (ra) s += readbuf(wa, ra * KA * NR);
    if (v->how_b[0] == PLAIN) s += readbuf(wb, (long)PB * KB * NR);
    return s;
}

static int cmpd(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define MAXV 32
#define MAXR 101

int main(int argc, char **argv)
{
    const int rounds = argc > 1 ? atoi(argv[1]) : 31;
    wa = aligned_alloc(64, sizeof(float) * PA * KA * NR);
    wb = aligned_alloc(64, sizeof(float) * PB * KB * NR);
    for (long i = 0; i < (long)PA * KA * NR; i++) wa[i] = (float)(i % 7) * 0.01f;
    for (long i = 0; i < (long)PB * KB * NR; i++) wb[i] = (float)(i % 5) * 0.01f;
    for (int i = 0; i < KA; i++) xa[i] = 1.0f / (i + 1);
    for (int i = 0; i < KB; i++) xb[i] = 1.0f / (i + 2);
    const long bytes_a = 4L * PA * KA * NR, bytes_b = 4L * PB * KB * NR;
    const long pa_bytes = 4L * KA * NR, pb_bytes = 4L * KB * NR;

    variant_t vs[MAXV];
    int nv = 0;
#define V(nm) (memset(&vs[nv], 0, sizeof vs[nv]), vs[nv].name = nm, vs[nv].dist = 16, &vs[nv++])
    V("all plain (the kernel today)");
    {
        variant_t *v = V("all nta d16");
        for (int p = 0; p < PA; p++) v->how_a[p] = NTA;
        for (int p = 0; p < PB; p++) v->how_b[p] = NTA;
    }
    {
        variant_t *v = V("all t0 d16");
        for (int p = 0; p < PA; p++) v->how_a[p] = T0;
        for (int p = 0; p < PB; p++) v->how_b[p] = T0;
    }
    /* layer b plain (262 KB) + the first r panels of layer a plain, the rest streamed */
    static char names[MAXV][64];
    const int rs[] = {0, 3, 5, 3, 3, 3};
    const int hs[] = {NTA, NTA, NTA, T0, LOAD, NTA};
    const char *hn[] = {"plain", "nta", "t0", "load", "ntload"};
    for (int i = 0; i < 6; i++) {
        snprintf(names[nv], 64, "L2 + %d L1 panels plain, rest %s%s", rs[i], hn[hs[i]],
                 i == 5 ? ", L2 first" : "");
        variant_t *v = V(names[nv]);
        v->b_first = i == 5;
        for (int p = 0; p < PA; p++) v->how_a[p] = p < rs[i] ? PLAIN : hs[i];
    }
    /* resident = the first 8 panels of layer a (401 KB, read first), the rest streamed */
    const char *hn2[] = {"plain", "nta", "t0", "load", "ntload"};
    for (int h = NTA; h <= NTLOAD; h++) {
        snprintf(names[nv], 64, "8 L1 panels plain, rest (and L2) %s", hn2[h]);
        variant_t *v = V(names[nv]);
        for (int p = 0; p < PA; p++) v->how_a[p] = p < 8 ? PLAIN : h;
        for (int p = 0; p < PB; p++) v->how_b[p] = h;
    }
    for (int i = 0; i < nv; i++) {
        long plain = 0;
        for (int p = 0; p < PA; p++) plain += vs[i].how_a[p] == PLAIN ? pa_bytes : 0;
        for (int p = 0; p < PB; p++) plain += vs[i].how_b[p] == PLAIN ? pb_bytes : 0;
        vs[i].plain_bytes = plain;
    }

    /* read bandwidths: L2 (256 KB) and L3 (1.07 MB), interleaved with the variants */
    const long n2 = 256 * 1024 / 4, n3 = (bytes_a + bytes_b) / 4;
    float *b2 = aligned_alloc(64, 4 * n2), *b3 = aligned_alloc(64, 4 * n3);
    for (long i = 0; i < n2; i++) b2[i] = 1;
    for (long i = 0; i < n3; i++) b3[i] = 1;

    static double t[MAXV][MAXR], r2[MAXR], r3[MAXR], tp[MAXV][MAXR], th[MAXV][MAXR];
    volatile float sink = 0;
    const int warm = 20, reps = 200;
    for (int r = 0; r < rounds && r < MAXR; r++) {
        for (int i0 = 0; i0 < nv; i0++) {
            const int i = r % 2 ? nv - 1 - i0 : i0;
            for (int c = 0; c < warm; c++) call(&vs[i]);
            const double t0 = now();
            for (int c = 0; c < reps; c++) call(&vs[i]);
            t[i][r] = (now() - t0) / reps;
            /* residency: the plain part read right after a call, against right after itself */
            double s1 = 0, s2 = 0;
            for (int c = 0; c < 20; c++) {
                call(&vs[i]);
                double a = now();
                sink += read_plain(&vs[i]);
                double b = now();
                sink += read_plain(&vs[i]);
                s1 += b - a;
                s2 += now() - b;
            }
            tp[i][r] = s1 / 20;
            th[i][r] = s2 / 20;
        }
        for (int c = 0; c < warm; c++) sink += readbuf(b2, n2);
        double t0 = now();
        for (int c = 0; c < reps * 4; c++) sink += readbuf(b2, n2);
        r2[r] = 4.0 * n2 / ((now() - t0) / (reps * 4)) / 1e9;
        for (int c = 0; c < warm; c++) sink += readbuf(b3, n3);
        t0 = now();
        for (int c = 0; c < reps; c++) sink += readbuf(b3, n3);
        r3[r] = 4.0 * n3 / ((now() - t0) / reps) / 1e9;
    }
    const int R = rounds < MAXR ? rounds : MAXR;
    qsort(r2, R, sizeof(double), cmpd);
    qsort(r3, R, sizeof(double), cmpd);
    const double bw2 = r2[R / 2], bw3 = r3[R / 2];
    printf("read bandwidth (medians of %d rounds): L2 (256 KB) %.1f GB/s, L3 (1.07 MB) %.1f GB/s\n",
           R, bw2, bw3);
    printf("share %.3f MB; the bound: plain bytes from L2, the rest from L3\n",
           (bytes_a + bytes_b) / 1e6);
    printf("%-44s %8s %8s %8s %8s   %s\n", "variant", "median", "p5", "plain KB", "bound",
           "plain part after a call / after itself (median us)");
    for (int i = 0; i < nv; i++) {
        qsort(t[i], R, sizeof(double), cmpd);
        const double bound = vs[i].plain_bytes / bw2 / 1e3 +
                             (bytes_a + bytes_b - vs[i].plain_bytes) / bw3 / 1e3;
        qsort(tp[i], R, sizeof(double), cmpd);
        qsort(th[i], R, sizeof(double), cmpd);
        printf("%-44s %7.2fus %7.2fus %8.0f %6.2fus   %6.2f / %6.2f\n", vs[i].name,
               t[i][R / 2] * 1e6, t[i][R / 20] * 1e6, vs[i].plain_bytes / 1e3, bound,
               tp[i][R / 2] * 1e6, th[i][R / 2] * 1e6);
    }
    printf("(all-L3 bound %.2f us)%s\n", (bytes_a + bytes_b) / bw3 / 1e3, sink == 1234.5 ? "!" : "");
    return 0;
}
