/* adam_epilogue.c: why W2's Adam update is not fused into its weight-gradient GEMM (issue 23).
 *
 * The fusion the issue proposed (each finished tile of g = X^T G_z updates its elements of
 * W and the moments M, V) walks P, G, M, V in the GEMM's tile order: a unit of columns,
 * 16 (a panel) or 64 (a unit) floats of each row, rows 2 KB apart. This harness times the
 * same AVX2 Adam arithmetic (kernels/csrc/dense.h's, no fma) over W2's first weight
 * (784 x 512) in that order and in one sequential pass, thread CPU time, best of 15.
 *
 *     gcc -O3 -std=gnu11 benchmarks/adam_epilogue.c -o /tmp/adam_epilogue && /tmp/adam_epilogue
 *
 * Measured (loaded 2-vCPU Zen 3 guest, 7 Dec): one pass 150-155 us; 16-wide rows 549 us,
 * 64-wide 280 us, 512-wide (whole rows) 154 us. A build of the fused kernel (the epilogue
 * per 6 x 16 tile, bit-identical to gemm + adam_step at 1-3 threads) ran 784x128x512 in
 * 1,781 us against 1,180 + 203 us for the GEMM and the separate pass: the strided update
 * costs more than the GEMM's FMA stream can hide. Only whole rows stream as fast as the
 * pass, and those need row-block units (B' packed once for the call), which would save
 * at most the pass's re-read of g (~30-40 us a W2 step): not worth a second GEMM driver.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* dense.h's Adam on n elements (n a multiple of 8): separate multiplies and adds */
__attribute__((target("avx2"))) static void adam8(float *p, const float *g, float *m, float *v,
                                                  ptrdiff_t n, const float *s)
{
    const __m256 step = _mm256_set1_ps(s[0]), b1 = _mm256_set1_ps(s[1]), b2 = _mm256_set1_ps(s[2]);
    const __m256 c1 = _mm256_set1_ps(s[3]), c2 = _mm256_set1_ps(s[4]), isb = _mm256_set1_ps(s[5]);
    const __m256 eps = _mm256_set1_ps(s[6]);
    for (ptrdiff_t i = 0; i < n; i += 8) {
        const __m256 gi = _mm256_loadu_ps(g + i), pi = _mm256_loadu_ps(p + i);
        const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(c1, gi));
        const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)),
                                        _mm256_mul_ps(_mm256_mul_ps(c2, gi), gi));
        const __m256 d = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vi), isb), eps);
        _mm256_storeu_ps(m + i, mi), _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_div_ps(_mm256_mul_ps(step, mi), d)));
    }
}

int main(void)
{
    const ptrdiff_t rows = 784, cols = 512, n = rows * cols;
    float *p = aligned_alloc(64, n * 4), *g = aligned_alloc(64, n * 4);
    float *m = aligned_alloc(64, n * 4), *v = aligned_alloc(64, n * 4);
    if (!p || !g || !m || !v) return 1;
    for (ptrdiff_t i = 0; i < n; i++) p[i] = 0.5f, m[i] = v[i] = 0.0f, g[i] = (i % 13) * 0.01f;
    const float s[7] = {1e-3f, 0.9f, 0.999f, 0.1f, 0.001f, 1.0f, 1e-8f};
    for (ptrdiff_t w = 16; w <= cols; w *= 2) {
        double strided = 1e9, pass = 1e9;
        for (int r = 0; r < 15; r++) {
            double t = now();
            for (ptrdiff_t j = 0; j < cols; j += w)
                for (ptrdiff_t i = 0; i < rows; i++) adam8(p + i * cols + j, g + i * cols + j, m + i * cols + j, v + i * cols + j, w, s);
            double t1 = now();
            strided = t1 - t < strided ? t1 - t : strided;
            t = now();
            adam8(p, g, m, v, n, s);
            t1 = now();
            pass = t1 - t < pass ? t1 - t : pass;
        }
        printf("%3td-wide rows (tile order) %6.0f us   one pass %6.0f us\n", w, strided * 1e6, pass * 1e6);
    }
    return 0;
}
