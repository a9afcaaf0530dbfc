/* conv_avx512.h: AVX-512 twins of conv.h's float32 im2col and col2im at a horizontal stride
 * of 1 and of its 2x2 / stride 2 max pool (forward and backward), for rows that are too short
 * for gcc's vector loops (a 14-wide row runs scalar): one masked vector per row. A part of
 * conv.h, included in its SIMD block; each has a plain-C twin path in conv.h's template, which
 * is the spec, and is called only when lnn_have_avx512() says the CPU has AVX-512F (and the
 * tests' lnn_conv_portable switch is off). conv_avx2.h has the AVX2 twins, for CPUs without. */
#ifndef LNN_CONV_AVX512_H
#define LNN_CONV_AVX512_H

#define LNN_CONV_AVX512 1

static int lnn_have_avx512(void)
{
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return have && !lnn_conv_portable;
}

/* d[0:n] += s[0:n], 16 lanes at a time, the tail masked. */
__attribute__((target("avx512f"))) static void lnn_add_row_avx512(float *restrict d,
                                                                 const float *restrict s,
                                                                 ptrdiff_t n)
{
    ptrdiff_t k = 0;
    for (; k + 16 <= n; k += 16)
        _mm512_storeu_ps(d + k, _mm512_add_ps(_mm512_loadu_ps(d + k), _mm512_loadu_ps(s + k)));
    if (k < n) {
        const __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, d + k), _mm512_maskz_loadu_ps(m, s + k));
        _mm512_mask_storeu_ps(d + k, m, v);
    }
}

/* im2col for a horizontal stride of 1, float32: each output row is written as 16-lane vectors,
 * loaded from the input row shifted by the tap with the lanes that fall in the padding masked
 * off (read as 0, their addresses never touched): one load and one store per short row, where
 * the plain loop makes a memcpy/memset call per block and zeroes the edge columns one by one.
 * x: (planes, h, w) -> cols: (planes, kh kw, oh, ow); the template's lnn_im2col is the spec. */
__attribute__((target("avx512f"))) static void lnn_im2col_s1_avx512(
    const float *x, float *cols, ptrdiff_t planes, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh,
    ptrdiff_t kw, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t sh, ptrdiff_t ph, ptrdiff_t pw,
    ptrdiff_t dh, ptrdiff_t dw)
{
    for (ptrdiff_t p = 0; p < planes; p++) {
        const float *xp = x + p * h * w;
        float *d = cols + p * kh * kw * oh * ow; /* rows in order: (tap i, tap j, oy) */
        for (ptrdiff_t i = 0; i < kh; i++) {
            for (ptrdiff_t j = 0; j < kw; j++) {
                const ptrdiff_t xoff = j * dw - pw; /* d[oy, ox] = x[iy, ox + xoff] */
                ptrdiff_t lo, hi;
                lnn_valid_range(xoff, 1, w, ow, &lo, &hi);
                if (ow <= 16) { /* one vector a row, the same lanes read for every row */
                    const __mmask16 m_out = (__mmask16)((1u << ow) - 1);
                    const __mmask16 m_in = hi > lo ? (__mmask16)(((1u << (hi - lo)) - 1) << lo) : 0;
                    for (ptrdiff_t oy = 0; oy < oh; oy++, d += ow) {
                        const ptrdiff_t iy = oy * sh - ph + i * dh;
                        const __m512 v = iy < 0 || iy >= h
                                             ? _mm512_setzero_ps()
                                             : _mm512_maskz_loadu_ps(m_in, xp + iy * w + xoff);
                        _mm512_mask_storeu_ps(d, m_out, v);
                    }
                    continue;
                }
                for (ptrdiff_t oy = 0; oy < oh; oy++, d += ow) {
                    const ptrdiff_t iy = oy * sh - ph + i * dh;
                    if (iy < 0 || iy >= h) { /* a padding row: d[oy, :] = 0 */
                        for (ptrdiff_t k0 = 0; k0 < ow; k0 += 16) {
                            const ptrdiff_t n = ow - k0 < 16 ? ow - k0 : 16;
                            _mm512_mask_storeu_ps(d + k0, (__mmask16)((1u << n) - 1),
                                                  _mm512_setzero_ps());
                        }
                        continue;
                    }
                    const float *src = xp + iy * w + xoff;
                    for (ptrdiff_t k0 = 0; k0 < ow; k0 += 16) {
                        const ptrdiff_t n = ow - k0 < 16 ? ow - k0 : 16;
                        const ptrdiff_t a = lo > k0 ? lo - k0 : 0, b = hi - k0 < n ? hi - k0 : n;
                        /* lanes [a, b) read x; the other lanes of the n are padding: 0 */
                        const __mmask16 m = b > a ? (__mmask16)(((1u << (b - a)) - 1) << a) : 0;
                        _mm512_mask_storeu_ps(d + k0, (__mmask16)((1u << n) - 1),
                                              _mm512_maskz_loadu_ps(m, src + k0));
                    }
                }
            }
        }
    }
}

/* col2im for stride 1, as a gather: every gx element is written once, from all the taps that
 * read it, instead of gx = 0 and then one read-modify-write pass per tap and row.
 * cols: (planes, kh kw, oh, ow) -> gx: (planes, h, w), overwritten. For a pixel (iy, x):
 *   gx[p, iy, x] = sum over i, j (i-major: the reference's order, so the same rounding) of
 *                  cols[p, i kw + j, iy + ph - i dh, x + pw - j dw]  where that index is inside
 * 16 pixels of a row at a time; tap j's lanes are those with 0 <= x + pw - j dw < ow, the
 * others masked off (a masked load does not touch the masked addresses). */
__attribute__((target("avx512f"))) static void lnn_col2im_s1_avx512(
    const float *cols, float *gx, ptrdiff_t planes, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh,
    ptrdiff_t kw, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t dh,
    ptrdiff_t dw)
{
    const ptrdiff_t L = oh * ow;
    for (ptrdiff_t p = 0; p < planes; p++) {
        const float *cp = cols + p * kh * kw * L;
        float *gp = gx + p * h * w;
        for (ptrdiff_t iy = 0; iy < h; iy++) {
            for (ptrdiff_t k0 = 0; k0 < w; k0 += 16) {
                const ptrdiff_t kend = k0 + 16 < w ? k0 + 16 : w; /* lanes [k0, kend) */
                __m512 acc = _mm512_setzero_ps();
                for (ptrdiff_t i = 0; i < kh; i++) {
                    const ptrdiff_t oy = iy + ph - i * dh;
                    if (oy < 0 || oy >= oh) continue; /* no output row read this pixel row */
                    for (ptrdiff_t j = 0; j < kw; j++) {
                        /* gx[p, iy, lo:hi] += cols[p, i kw + j, oy, lo - xoff : hi - xoff] */
                        const ptrdiff_t xoff = j * dw - pw; /* x = ox + xoff */
                        ptrdiff_t lo = xoff > k0 ? xoff : k0, hi = ow + xoff < kend ? ow + xoff : kend;
                        if (hi <= lo) continue;
                        const __mmask16 m = (__mmask16)(((1u << (hi - lo)) - 1) << (lo - k0));
                        const float *src = cp + (i * kw + j) * L + oy * ow + (k0 - xoff);
                        acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, src));
                    }
                }
                _mm512_mask_storeu_ps(gp + iy * w + k0, (__mmask16)((1u << (kend - k0)) - 1), acc);
            }
        }
    }
}

/* 2x2 / stride 2 max pool, no padding, ow <= 16: one output row per iteration.
 * a, b, c, d = r0[0::2], r0[1::2], r1[0::2], r1[1::2] (deinterleaved by permutes);
 * y = max(a, b, c, d), k = the first of them that is the maximum (row-major order);
 * argmax = 2 oy w + 2 ox + (0, 1, w, w + 1)[k] */
__attribute__((target("avx512f"))) static void lnn_maxpool2x2_avx512(
    const float *x, float *y, int64_t *argmax, ptrdiff_t planes, ptrdiff_t h, ptrdiff_t w,
    ptrdiff_t oh, ptrdiff_t ow)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const ptrdiff_t n2 = 2 * ow; /* input floats read per row: 2 ow <= 32, two masked loads */
    const __mmask16 m_lo = (__mmask16)(n2 >= 16 ? 0xFFFFu : (1u << n2) - 1);
    const __mmask16 m_hi = (__mmask16)(n2 > 16 ? (1u << (n2 - 16)) - 1 : 0);
    const __mmask16 m_out = (__mmask16)((1u << ow) - 1);
    const __m512i two_ox = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i one = _mm512_set1_epi32(1), wv = _mm512_set1_epi32((int)w);
    const __m512i w1 = _mm512_set1_epi32((int)w + 1);
    for (ptrdiff_t p = 0; p < planes; p++) {
        for (ptrdiff_t oy = 0; oy < oh; oy++) {
            const float *r0 = x + p * h * w + 2 * oy * w, *r1 = r0 + w;
            float *yr = y + (p * oh + oy) * ow;
            int64_t *ar = argmax + (p * oh + oy) * ow;
            const __m512 r00 = _mm512_maskz_loadu_ps(m_lo, r0), r01 = _mm512_maskz_loadu_ps(m_hi, r0 + 16);
            const __m512 r10 = _mm512_maskz_loadu_ps(m_lo, r1), r11 = _mm512_maskz_loadu_ps(m_hi, r1 + 16);
            const __m512 a = _mm512_permutex2var_ps(r00, even, r01);
            const __m512 b = _mm512_permutex2var_ps(r00, odd, r01);
            const __m512 c = _mm512_permutex2var_ps(r10, even, r11);
            const __m512 d = _mm512_permutex2var_ps(r10, odd, r11);
            __m512 m = a; /* running max; k: its offset in the window (strictly greater wins) */
            __m512i k = _mm512_setzero_si512();
            __mmask16 t = _mm512_cmp_ps_mask(b, m, _CMP_GT_OQ);
            m = _mm512_mask_mov_ps(m, t, b);
            k = _mm512_mask_mov_epi32(k, t, one);
            t = _mm512_cmp_ps_mask(c, m, _CMP_GT_OQ);
            m = _mm512_mask_mov_ps(m, t, c);
            k = _mm512_mask_mov_epi32(k, t, wv);
            t = _mm512_cmp_ps_mask(d, m, _CMP_GT_OQ);
            m = _mm512_mask_mov_ps(m, t, d);
            k = _mm512_mask_mov_epi32(k, t, w1);
            _mm512_mask_storeu_ps(yr, m_out, m);
            const __m512i base = _mm512_add_epi64(_mm512_set1_epi64(2 * oy * w), two_ox);
            const __m512i k0 = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(k));
            _mm512_mask_storeu_epi64(ar, (__mmask8)m_out, _mm512_add_epi64(base, k0));
            if (ow > 8) {
                const __m512i k1 = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(k, 1));
                const __m512i base1 = _mm512_add_epi64(base, _mm512_set1_epi64(16));
                _mm512_mask_storeu_epi64(ar + 8, (__mmask8)(m_out >> 8), _mm512_add_epi64(base1, k1));
            }
        }
    }
}

/* The backward of lnn_maxpool2x2_avx512, h = 2 oh, w = 2 ow, ow <= 16: each input cell is
 * written once, with gy where it was the window's maximum and 0 elsewhere, one output row of
 * windows per iteration. k = argmax - (2 oy w + 2 ox) is 0, 1, w or w + 1; the four masked
 * copies of the gy row (a, b | c, d: top-left, top-right | bottom-left, bottom-right) are
 * interleaved back into the two input rows. */
__attribute__((target("avx512f"))) static void lnn_maxpool2x2_bwd_avx512(
    const float *gy, const int64_t *argmax, float *gx, ptrdiff_t planes, ptrdiff_t w,
    ptrdiff_t oh, ptrdiff_t ow)
{
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    const ptrdiff_t n2 = 2 * ow; /* floats per input row: two masked stores */
    const __mmask16 m_lo = (__mmask16)(n2 >= 16 ? 0xFFFFu : (1u << n2) - 1);
    const __mmask16 m_hi = (__mmask16)(n2 > 16 ? (1u << (n2 - 16)) - 1 : 0);
    const __mmask16 m_in = (__mmask16)((1u << ow) - 1);
    const __m512i two_ox = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i one = _mm512_set1_epi32(1), wv = _mm512_set1_epi32((int)w);
    const __m512i w1 = _mm512_set1_epi32((int)w + 1), zero = _mm512_setzero_si512();
    for (ptrdiff_t p = 0; p < planes; p++) {
        for (ptrdiff_t oy = 0; oy < oh; oy++) {
            const float *gr = gy + (p * oh + oy) * ow;
            const int64_t *ar = argmax + (p * oh + oy) * ow;
            float *r0 = gx + p * 4 * oh * ow + 2 * oy * w, *r1 = r0 + w;
            const __m512i base = _mm512_add_epi64(_mm512_set1_epi64(2 * oy * w), two_ox);
            const __m512i base1 = _mm512_add_epi64(base, _mm512_set1_epi64(16));
            const __m256i k0 = _mm512_cvtepi64_epi32(
                _mm512_sub_epi64(_mm512_maskz_loadu_epi64((__mmask8)m_in, ar), base));
            const __m256i k1 = _mm512_cvtepi64_epi32(
                _mm512_sub_epi64(_mm512_maskz_loadu_epi64((__mmask8)(m_in >> 8), ar + 8), base1));
            const __m512i k = _mm512_inserti64x4(_mm512_castsi256_si512(k0), k1, 1);
            const __m512 g = _mm512_maskz_loadu_ps(m_in, gr);
            const __m512 a = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, zero), g);
            const __m512 b = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, one), g);
            const __m512 c = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, wv), g);
            const __m512 d = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, w1), g);
            _mm512_mask_storeu_ps(r0, m_lo, _mm512_permutex2var_ps(a, lo, b));
            _mm512_mask_storeu_ps(r0 + 16, m_hi, _mm512_permutex2var_ps(a, hi, b));
            _mm512_mask_storeu_ps(r1, m_lo, _mm512_permutex2var_ps(c, lo, d));
            _mm512_mask_storeu_ps(r1 + 16, m_hi, _mm512_permutex2var_ps(c, hi, d));
        }
    }
}

#endif /* LNN_CONV_AVX512_H */
