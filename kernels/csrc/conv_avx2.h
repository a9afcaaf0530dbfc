/* conv_avx2.h: AVX2 twins of conv.h's float32 2x2 / stride 2 max pool and of its im2col and
 * col2im at stride 1 with outputs as wide as the input ("same"), for CPUs without AVX-512 (a
 * part of conv.h, included in its SIMD block; the AVX-512 versions are the model). The plain
 * loops in conv.h's template are the spec and give the same bits (the same compares, copies
 * and adds in the same order); called only when lnn_have_avx2() says so, for rows of 8
 * windows or cells or more.
 *
 * The plain loop runs W3's 14-window rows scalar: ~2 ns a window, ~1 here (thread CPU, no
 * AVX-512, conv1's pool over 64 images; over a fused op's chunk of 13, 70 -> 40 us).
 * At 7 windows a row (masked loads and stores) it gained nothing, so narrower rows stay on
 * the plain loop; nor did an AVX2 gather for col2im (masked loads were 5x slower than the
 * plain loop, masked ands 1.6x). Its scatter as flat runs of a tap's rows, the padding
 * columns and-ed to +0, does gain: W3's conv2 chunk 85 -> 40 us (im2col, the same scheme:
 * 88 -> 66 us). */
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

/* The lanes of cells c0 .. c0 + 7 of a flat run of rows w wide whose column (cell mod w)
 * lies in [lo, hi): all ones there, +0 elsewhere (the padding's lanes). c0 < w, w >= 8, so
 * one subtraction of w takes each lane's column mod w; lov = lo - 1, hiv = hi, wv = w. */
__attribute__((target("avx2"))) static inline __m256 lnn_cols_in(ptrdiff_t c0, __m256i iota,
                                                                __m256i wv, __m256i lov,
                                                                __m256i hiv)
{
    __m256i col = _mm256_add_epi32(_mm256_set1_epi32((int)c0), iota);
    col = _mm256_sub_epi32(col, _mm256_andnot_si256(_mm256_cmpgt_epi32(wv, col), wv));
    return _mm256_castsi256_ps(
        _mm256_and_si256(_mm256_cmpgt_epi32(col, lov), _mm256_cmpgt_epi32(hiv, col)));
}

/* col2im, stride 1, outputs as wide as the input (ow == w >= 8), float32: conv.h's plain
 * loop is the spec (gxpad[p, i dh :, j dw :][:oh, :w] += cols[p, i kw + j], tap by tap).
 * With ow == w, the rows [ya, yb) of tap (i, j) of a plane are one flat run, gx[p].flat[q +
 * shift] += cols[p, i kw + j].flat[q] for q in [ya w + lo, (yb - 1) w + hi) (as im2col copies);
 * the run's cells in columns outside [lo, hi) belong to padding, and their lanes add +0 (s
 * and-ed with a mask of the column), which leaves d's bits as they were (d holds no -0: it
 * starts at +0, and a sum is -0 only when both terms are). Every cell gets the same adds in
 * the same order as the plain loop, which on W3's 14-wide rows ran one vector and 6 scalar
 * adds a row. cols: (planes, kh kw, oh, w) -> gx: (planes, h, w), overwritten. */
__attribute__((target("avx2"))) static void lnn_col2im_s1_avx2(const float *cols, float *gx,
                                                              ptrdiff_t planes, ptrdiff_t h,
                                                              ptrdiff_t w, ptrdiff_t kh,
                                                              ptrdiff_t kw, ptrdiff_t oh,
                                                              ptrdiff_t ph, ptrdiff_t pw,
                                                              ptrdiff_t dh, ptrdiff_t dw)
{
    const ptrdiff_t L = oh * w;
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), wv = _mm256_set1_epi32((int)w);
    memset(gx, 0, (size_t)(planes * h * w) * sizeof(float)); /* gx[...] = 0 */
    for (ptrdiff_t p = 0; p < planes; p++) {
        float *gp = gx + p * h * w;
        for (ptrdiff_t i = 0; i < kh; i++) {
            ptrdiff_t ya, yb; /* output rows whose input row oy + i dh - ph is inside */
            lnn_valid_range(i * dh - ph, 1, h, oh, &ya, &yb);
            for (ptrdiff_t j = 0; j < kw; j++) {
                const float *src = cols + (p * kh * kw + i * kw + j) * L;
                const ptrdiff_t xoff = j * dw - pw, shift = (i * dh - ph) * w + xoff;
                ptrdiff_t lo, hi;
                lnn_valid_range(xoff, 1, w, w, &lo, &hi);
                if (yb <= ya || hi <= lo) continue;
                /* the run: s[t] = src[a0 + t] -> d[t] = gp[a0 + shift + t], t < len */
                const ptrdiff_t a0 = ya * w + lo, len = (yb - 1) * w + hi - a0;
                const __m256i lov = _mm256_set1_epi32((int)lo - 1);
                const __m256i hiv = _mm256_set1_epi32((int)hi);
                const float *s = src + a0;
                float *d = gp + a0 + shift;
                ptrdiff_t t = 0, c0 = lo; /* c0: the column of cell t */
                for (; t + 8 <= len; t += 8) { /* d[t:t+8] += s[t:t+8] where lo <= column < hi */
                    const __m256 in = lnn_cols_in(c0, iota, wv, lov, hiv);
                    const __m256 v = _mm256_and_ps(_mm256_loadu_ps(s + t), in);
                    _mm256_storeu_ps(d + t, _mm256_add_ps(_mm256_loadu_ps(d + t), v));
                    c0 += 8;
                    if (c0 >= w) c0 -= w;
                }
                for (; t < len; t++, c0 = c0 + 1 == w ? 0 : c0 + 1) /* the last < 8 cells */
                    if (c0 >= lo && c0 < hi) d[t] += s[t];
            }
        }
    }
}

/* im2col, stride 1, outputs as wide as the input (ow == w >= 8), float32: conv.h's plain
 * loop is the spec (cols[p, i kw + j] = xpad[p, i dh :, j dw :][:oh, :w]). A tap's rows
 * [ya, yb) are one flat run, cols[p, i kw + j].flat[q] = x[p].flat[q + shift] for q in
 * [ya w + lo, (yb - 1) w + hi), the run's cells in columns outside [lo, hi) being padding:
 * there the loaded value is and-ed to +0, the plain loop's zero. Rows outside [ya, yb) are
 * zeroed. The plain loop copied each run with memcpy and then zeroed W3's edge columns one
 * by one. x: (planes, h, w) -> cols: (planes, kh kw, oh, w). */
__attribute__((target("avx2"))) static void lnn_im2col_s1_avx2(const float *x, float *cols,
                                                              ptrdiff_t planes, ptrdiff_t h,
                                                              ptrdiff_t w, ptrdiff_t kh,
                                                              ptrdiff_t kw, ptrdiff_t oh,
                                                              ptrdiff_t ph, ptrdiff_t pw,
                                                              ptrdiff_t dh, ptrdiff_t dw)
{
    const ptrdiff_t L = oh * w;
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), wv = _mm256_set1_epi32((int)w);
    for (ptrdiff_t p = 0; p < planes; p++) {
        const float *xp = x + p * h * w;
        for (ptrdiff_t i = 0; i < kh; i++) {
            ptrdiff_t ya, yb; /* output rows whose input row oy + i dh - ph is inside */
            lnn_valid_range(i * dh - ph, 1, h, oh, &ya, &yb);
            for (ptrdiff_t j = 0; j < kw; j++) {
                float *dst = cols + (p * kh * kw + i * kw + j) * L;
                const ptrdiff_t xoff = j * dw - pw, shift = (i * dh - ph) * w + xoff;
                ptrdiff_t lo, hi;
                lnn_valid_range(xoff, 1, w, w, &lo, &hi);
                if (yb <= ya || hi <= lo) { /* no input cell: the whole tap is padding */
                    memset(dst, 0, (size_t)L * sizeof(float));
                    continue;
                }
                /* the run: d[t] = dst[a0 + t] = s[t] = x[p].flat[a0 + shift + t], t < len */
                const ptrdiff_t a0 = ya * w + lo, a1 = (yb - 1) * w + hi, len = a1 - a0;
                memset(dst, 0, (size_t)a0 * sizeof(float)); /* rows above, left of the run */
                const __m256i lov = _mm256_set1_epi32((int)lo - 1);
                const __m256i hiv = _mm256_set1_epi32((int)hi);
                const float *s = xp + a0 + shift;
                float *d = dst + a0;
                ptrdiff_t t = 0, c0 = lo; /* c0: the column of cell t */
                for (; t + 8 <= len; t += 8) { /* d[t:t+8] = s[t:t+8] where lo <= column < hi */
                    const __m256 in = lnn_cols_in(c0, iota, wv, lov, hiv);
                    _mm256_storeu_ps(d + t, _mm256_and_ps(_mm256_loadu_ps(s + t), in));
                    c0 += 8;
                    if (c0 >= w) c0 -= w;
                }
                for (; t < len; t++, c0 = c0 + 1 == w ? 0 : c0 + 1) /* the last < 8 cells */
                    d[t] = c0 >= lo && c0 < hi ? s[t] : 0;
                memset(dst + a1, 0, (size_t)(L - a1) * sizeof(float)); /* the rest: padding */
            }
        }
    }
}

#endif /* LNN_CONV_AVX2_H */
