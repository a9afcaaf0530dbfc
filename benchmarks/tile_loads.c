/* tile_loads.c: what binds the fp32 Dense tile (dense_packed.h) on this CPU: FMAs or loads.
 *
 * A 6 x 16 register tile (12 AVX2 accumulators) over K = 192, all data in L1, timed with the
 * thread's CPU time (steady on a loaded machine), best of 30 rounds. Each k step does 12 FMAs
 * and loads 2 vectors of B; of the 6 broadcasts of A, the first `b` come from memory
 * (vbroadcastss) and the rest from a register. b = 6 is the kernel's tile; b = 0 is the
 * FMA-only ceiling. Prints FMAs per ns for b = 0, 1, 2, 3, 4, 6, and the 4 x 24 tile (4
 * broadcasts + 3 vector loads per 12 FMAs).
 *
 *     gcc -O2 -std=gnu11 benchmarks/tile_loads.c -o /tmp/tile_loads && /tmp/tile_loads
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float A[6 * 256] __attribute__((aligned(64)));
static float B[256 * 32] __attribute__((aligned(64)));
static float C[256] __attribute__((aligned(64)));
#define K 192
#define F(a, b, c) c = _mm256_fmadd_ps(a, b, c)
#define X(i) (nb > i ? _mm256_broadcast_ss(a + i) : y[i])
#define KER(NAME, NB)                                                                          \
    __attribute__((target("avx2,fma"), noinline)) static void NAME(const float *a,            \
                                                                   const float *b, float *c)  \
    {                                                                                          \
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00;         \
        __m256 c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;   \
        const int nb = NB;                                                                     \
        __m256 y[6], x; /* distinct, opaque: the compiler cannot merge the rows */            \
        for (int i = 0; i < 6; i++) y[i] = _mm256_set1_ps(0.5f + i);                          \
        __asm__("" : "+x"(y[0]), "+x"(y[1]), "+x"(y[2]), "+x"(y[3]), "+x"(y[4]), "+x"(y[5])); \
        for (long k = 0; k < K; k++) {                                                         \
            const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);                   \
            x = X(0); F(x, b0, c00); F(x, b1, c01);                                            \
            x = X(1); F(x, b0, c10); F(x, b1, c11);                                            \
            x = X(2); F(x, b0, c20); F(x, b1, c21);                                            \
            x = X(3); F(x, b0, c30); F(x, b1, c31);                                            \
            x = X(4); F(x, b0, c40); F(x, b1, c41);                                            \
            x = X(5); F(x, b0, c50); F(x, b1, c51);                                            \
            a += 6;                                                                            \
            b += 16;                                                                           \
        }                                                                                      \
        __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c00, c01), _mm256_add_ps(c10, c11)), \
                                 _mm256_add_ps(_mm256_add_ps(c20, c21), _mm256_add_ps(c30, c31))); \
        s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c40, c41), _mm256_add_ps(c50, c51))); \
        _mm256_store_ps(c, s);                                                                 \
    }
KER(k0, 0)
KER(k1, 1)
KER(k2, 2)
KER(k3, 3)
KER(k4, 4)
KER(k6, 6)

__attribute__((target("avx2,fma"), noinline)) static void k424(const float *a, const float *b,
                                                               float *c)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00, x;
    for (long k = 0; k < K; k++) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8),
                     b2 = _mm256_load_ps(b + 16);
        x = _mm256_broadcast_ss(a); F(x, b0, c00); F(x, b1, c01); F(x, b2, c02);
        x = _mm256_broadcast_ss(a + 1); F(x, b0, c10); F(x, b1, c11); F(x, b2, c12);
        x = _mm256_broadcast_ss(a + 2); F(x, b0, c20); F(x, b1, c21); F(x, b2, c22);
        x = _mm256_broadcast_ss(a + 3); F(x, b0, c30); F(x, b1, c31); F(x, b2, c32);
        a += 4;
        b += 24;
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c00, c01), _mm256_add_ps(c02, c10)),
                             _mm256_add_ps(_mm256_add_ps(c11, c12), _mm256_add_ps(c20, c21)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c22, c30), _mm256_add_ps(c31, c32)));
    _mm256_store_ps(c, s);
}

/* the FMA ceiling: 12 chains c = c * x + y, no loads */
__attribute__((target("avx2,fma"), noinline)) static void kfma(const float *a, const float *b,
                                                               float *c)
{
    (void)a, (void)b;
    __m256 acc[12], x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(0.001f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    __asm__("" : "+x"(x), "+x"(y));
    for (long k = 0; k < K; k++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    for (int i = 1; i < 12; i++) acc[0] = _mm256_add_ps(acc[0], acc[i]);
    _mm256_store_ps(c, acc[0]);
}

int main(void)
{
    typedef void (*fn)(const float *, const float *, float *);
    const fn f[8] = {kfma, k0, k1, k2, k3, k4, k6, k424};
    const char *name[8] = {"FMAs only", "0 bcast", "1 bcast", "2 bcast", "3 bcast", "4 bcast", "6 bcast (6x16 tile)", "4x24 tile"};
    double best[8] = {0};
    for (int r = 0; r < 30; r++)
        for (int j = 0; j < 8; j++) {
            const double t0 = now();
            for (int i = 0; i < 20000; i++) f[j](A, B, C);
            const double v = 12.0 * K * 20000 / (now() - t0) / 1e9;
            if (v > best[j]) best[j] = v;
        }
    for (int j = 0; j < 8; j++) printf("%-20s %5.2f FMA/ns\n", name[j], best[j]);
    return 0;
}
