/* read_probe.h: how fast one core reads a float32 buffer with AVX2 (a measuring tool, not a
 * layer). The buffer is cut into `streams` contiguous parts read side by side, 64 bytes (two
 * 8-float loads) per part per step, as the one-row Dense tiles read their panels; each part
 * folds into its own accumulator (no dependency chain between the loads). `prefetch` > 0:
 * each step also prefetches every part `prefetch` bytes ahead (`hint` 0: prefetcht0, 1:
 * prefetchnta). The buffer is read `reps` times; returns a value that depends on every load,
 * so that none is optimised away. Bytes / time is the read bandwidth of the cache level the
 * buffer lives in (or DRAM), the bound of a batch-1 Dense chain over that many weight bytes.
 */
#ifndef LNN_READ_PROBE_H
#define LNN_READ_PROBE_H

#include <stddef.h>

#define LNN_RP_MAX 8

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LEPTON_NO_SIMD)
#include <immintrin.h>

__attribute__((target("avx2"))) static float lnn_rp_avx2(const float *p, ptrdiff_t per,
                                                        int streams, ptrdiff_t prefetch,
                                                        int hint)
{
    __m256 acc[LNN_RP_MAX];
    for (int s = 0; s < LNN_RP_MAX; s++) acc[s] = _mm256_setzero_ps();
    const ptrdiff_t ahead = prefetch / 4; /* floats */
    for (ptrdiff_t i = 0; i + 16 <= per; i += 16) {
#pragma GCC unroll 8
        for (int s = 0; s < LNN_RP_MAX; s++) {
            if (s >= streams) break;
            const float *q = p + s * per + i;
            if (prefetch > 0 && i + ahead < per) {
                if (hint) _mm_prefetch((const char *)(q + ahead), _MM_HINT_NTA);
                else _mm_prefetch((const char *)(q + ahead), _MM_HINT_T0);
            }
            acc[s] = _mm256_max_ps(acc[s], _mm256_max_ps(_mm256_loadu_ps(q),
                                                         _mm256_loadu_ps(q + 8)));
        }
    }
    for (int s = 1; s < LNN_RP_MAX; s++) acc[0] = _mm256_max_ps(acc[0], acc[s]);
    float out[8];
    _mm256_storeu_ps(out, acc[0]);
    return out[0] + out[7];
}
#endif

static float lnn_read_probe_f32(const float *p, ptrdiff_t n, int streams, ptrdiff_t prefetch,
                                int hint, ptrdiff_t reps)
{
    if (streams < 1) streams = 1;
    if (streams > LNN_RP_MAX) streams = LNN_RP_MAX;
    const ptrdiff_t per = n / streams;
    float total = 0;
    for (ptrdiff_t r = 0; r < reps; r++) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LEPTON_NO_SIMD)
        if (__builtin_cpu_supports("avx2")) {
            total += lnn_rp_avx2(p, per, streams, prefetch, hint);
            continue;
        }
#endif
        float m = 0; /* plain C: the same bytes, one at a time */
        for (ptrdiff_t i = 0; i < per * streams; i++) m = p[i] > m ? p[i] : m;
        total += m;
    }
    return total;
}

#endif /* LNN_READ_PROBE_H */
