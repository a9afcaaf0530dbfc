/* finite.h: whether every value of a float array is finite (not inf, not NaN), by its
 * exponent bits (all ones for inf and NaN), so no floating-point flag or -ffast-math rewrite
 * can change the answer. The runtime checks every input with it: one compiled pass instead
 * of np.isfinite(x).all() (a bool temporary and a reduction, ~1.5 us at batch 1).
 *
 * lnn_all_finite_f32 / _f64 take the AVX2 loop when the CPU has it (32 floats or 16 doubles
 * an iteration: AND with the exponent mask, compare equal to it, OR into an accumulator;
 * the last partial block by the plain loop), else the plain C loop, which is also the twin
 * the tests compare against (lnn_all_finite_f32_plain / _f64_plain). Both give the same
 * answer for every input: the same bit test on every element. */
#ifndef LNN_FINITE_H
#define LNN_FINITE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(LEPTON_NO_SIMD)
#include <immintrin.h>
#define LNN_FIN_AVX2 1
#else
#define LNN_FIN_AVX2 0
#endif

/* NumPy: bool(np.isfinite(x).all()), x float32 (the plain C loop) */
static int lnn_all_finite_f32_plain(const float *x, ptrdiff_t n)
{
    uint32_t bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, x + i, 4);
        bad |= (uint32_t)((b & 0x7f800000u) == 0x7f800000u);
    }
    return bad == 0;
}

/* NumPy: bool(np.isfinite(x).all()), x float64 (the plain C loop) */
static int lnn_all_finite_f64_plain(const double *x, ptrdiff_t n)
{
    uint64_t bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        uint64_t b;
        memcpy(&b, x + i, 8);
        bad |= (uint64_t)((b & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
    }
    return bad == 0;
}

#if LNN_FIN_AVX2
static int lnn_fin_have_avx2(void)
{
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx2");
    return have;
}

/* the first n - n % (8 * lanes) elements: whether any has an all-ones exponent; 4 blocks of
 * 32 bytes an iteration (independent ORs), unaligned loads */
__attribute__((target("avx2"))) static int lnn_fin_bad_avx2(const void *x, ptrdiff_t bytes,
                                                           int f64)
{
    const __m256i m = f64 ? _mm256_set1_epi64x(0x7ff0000000000000ll)
                          : _mm256_set1_epi32(0x7f800000);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    const char *p = (const char *)x;
    for (ptrdiff_t i = 0; i < bytes; i += 128) {
        __m256i v0 = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + i)), m);
        __m256i v1 = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + i + 32)), m);
        __m256i v2 = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + i + 64)), m);
        __m256i v3 = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + i + 96)), m);
        if (f64) {
            a0 = _mm256_or_si256(a0, _mm256_cmpeq_epi64(v0, m));
            a1 = _mm256_or_si256(a1, _mm256_cmpeq_epi64(v1, m));
            a2 = _mm256_or_si256(a2, _mm256_cmpeq_epi64(v2, m));
            a3 = _mm256_or_si256(a3, _mm256_cmpeq_epi64(v3, m));
        } else {
            a0 = _mm256_or_si256(a0, _mm256_cmpeq_epi32(v0, m));
            a1 = _mm256_or_si256(a1, _mm256_cmpeq_epi32(v1, m));
            a2 = _mm256_or_si256(a2, _mm256_cmpeq_epi32(v2, m));
            a3 = _mm256_or_si256(a3, _mm256_cmpeq_epi32(v3, m));
        }
    }
    __m256i a = _mm256_or_si256(_mm256_or_si256(a0, a1), _mm256_or_si256(a2, a3));
    return !_mm256_testz_si256(a, a);
}
#endif

/* NumPy: bool(np.isfinite(x).all()), x float32 */
static int lnn_all_finite_f32(const float *x, ptrdiff_t n)
{
#if LNN_FIN_AVX2
    if (n >= 32 && lnn_fin_have_avx2()) {
        ptrdiff_t body = n - n % 32;
        if (lnn_fin_bad_avx2(x, body * 4, 0)) return 0;
        return lnn_all_finite_f32_plain(x + body, n - body);
    }
#endif
    return lnn_all_finite_f32_plain(x, n);
}

/* NumPy: bool(np.isfinite(x).all()), x float64 */
static int lnn_all_finite_f64(const double *x, ptrdiff_t n)
{
#if LNN_FIN_AVX2
    if (n >= 16 && lnn_fin_have_avx2()) {
        ptrdiff_t body = n - n % 16;
        if (lnn_fin_bad_avx2(x, body * 8, 1)) return 0;
        return lnn_all_finite_f64_plain(x + body, n - body);
    }
#endif
    return lnn_all_finite_f64_plain(x, n);
}

#endif /* LNN_FINITE_H */
