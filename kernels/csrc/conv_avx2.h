/* conv_avx2.h: an AVX2 twin of conv.h's float32 2x2 / stride 2 max pool, for CPUs without
 * AVX-512 (a part of conv.h, included in its SIMD block; lnn_maxpool2x2_avx512 is the model).
 * The plain loop in conv.h's template is the spec and gives the same bits (the same compares
 * in the same order); called only when lnn_have_avx2() says so, for rows of 8 windows or more.
 *
 * The plain loop runs W3's 14-window rows scalar: ~2 ns a window, ~1 here (thread CPU, no
 * AVX-512, conv1's pool over 64 images; over a fused op's chunk of 13, 70 -> 40 us).
 * At 7 windows a row (masked loads and stores) it gained nothing, so narrower rows stay on
 * the plain loop; nor did an AVX2 gather for col2im (masked loads were 5x slower than the
 * plain loop, masked ands 1.6x: that pass is bound by memory). */
#ifndef LNN_CONV_AVX2_H
#define LNN_CONV_AVX2_H

#define LNN_CONV_AVX2 1

static int lnn_have_avx2(void)
{
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx2") ? 1 : 0;
    return have && !lnn_conv_portable;
}

/* the even (odd = 1) floats of the 16 in lo, hi, in order */
__attribute__((target("avx2"))) static inline __m256 lnn_deal8(__m256 lo, __m256 hi, int odd)
{
    const __m256 e = odd ? _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))
                         : _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xd8));
}

/* 2x2 / stride 2 max pool, no padding, ow >= 8: 8 windows of a row at a time (the scheme of
 * lnn_maxpool2x2_avx512): a, b, c, d = r0[0::2], r0[1::2], r1[0::2], r1[1::2];
 * y = max(a, b, c, d), a later one taken only if strictly greater (an ordered compare: a NaN
 * in a stays, a NaN elsewhere never wins); argmax = 2 oy w + 2 ox + (0, 1, w, w + 1)[which].
 * x: (planes, h, w) -> y, argmax: (planes, oh, ow). */
__attribute__((target("avx2"))) static void lnn_maxpool2x2_avx2(const float *x, float *y,
                                                               int64_t *argmax, ptrdiff_t planes,
                                                               ptrdiff_t h, ptrdiff_t w,
                                                               ptrdiff_t oh, ptrdiff_t ow)
{
    const __m256i one = _mm256_set1_epi32(1), wv = _mm256_set1_epi32((int)w);
    const __m256i w1 = _mm256_set1_epi32((int)w + 1);
    const __m256i two_ox = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    for (ptrdiff_t p = 0; p < planes; p++) {
        for (ptrdiff_t oy = 0; oy < oh; oy++) {
            const float *r0 = x + p * h * w + 2 * oy * w, *r1 = r0 + w;
            float *yr = y + (p * oh + oy) * ow;
            int64_t *ar = argmax + (p * oh + oy) * ow;
            const __m256i base = _mm256_set1_epi64x((long long)(2 * oy * w));
            for (ptrdiff_t k0 = 0; k0 < ow; k0 += 8) {
                /* windows [s, s + 8): the last block moved back to end at ow (ow >= 8), its
                 * overlap computed twice, the same values stored twice */
                const ptrdiff_t s = k0 + 8 > ow ? ow - 8 : k0;
                const __m256 x00 = _mm256_loadu_ps(r0 + 2 * s);
                const __m256 x01 = _mm256_loadu_ps(r0 + 2 * s + 8);
                const __m256 x10 = _mm256_loadu_ps(r1 + 2 * s);
                const __m256 x11 = _mm256_loadu_ps(r1 + 2 * s + 8);
                const __m256 b = lnn_deal8(x00, x01, 1), c = lnn_deal8(x10, x11, 0);
                const __m256 d = lnn_deal8(x10, x11, 1);
                __m256 m = lnn_deal8(x00, x01, 0); /* running max; k: its offset */
                __m256i k = _mm256_setzero_si256();
                __m256 t = _mm256_cmp_ps(b, m, _CMP_GT_OQ);
                m = _mm256_blendv_ps(m, b, t);
                k = _mm256_blendv_epi8(k, one, _mm256_castps_si256(t));
                t = _mm256_cmp_ps(c, m, _CMP_GT_OQ);
                m = _mm256_blendv_ps(m, c, t);
                k = _mm256_blendv_epi8(k, wv, _mm256_castps_si256(t));
                t = _mm256_cmp_ps(d, m, _CMP_GT_OQ);
                m = _mm256_blendv_ps(m, d, t);
                k = _mm256_blendv_epi8(k, w1, _mm256_castps_si256(t));
                /* argmax = base + 2 ox + k, in int64 */
                k = _mm256_add_epi32(k, _mm256_add_epi32(two_ox, _mm256_set1_epi32((int)(2 * s))));
                const __m128i klo = _mm256_castsi256_si128(k), khi = _mm256_extracti128_si256(k, 1);
                const __m256i a0 = _mm256_add_epi64(base, _mm256_cvtepi32_epi64(klo));
                const __m256i a1 = _mm256_add_epi64(base, _mm256_cvtepi32_epi64(khi));
                _mm256_storeu_ps(yr + s, m);
                _mm256_storeu_si256((__m256i *)(ar + s), a0);
                _mm256_storeu_si256((__m256i *)(ar + s + 4), a1);
            }
        }
    }
}

#endif /* LNN_CONV_AVX2_H */
