/* conv.h: the C loops behind kernels/conv.pyx (NCHW images, C-contiguous).
 *
 *   lnn_im2col_*          cols[n, (c kh + i) kw + j, y, x] = x[n, c, y sh - ph + i dh, x sw - pw + j dw]
 *   lnn_col2im_*          the adjoint: gx = 0, then every column entry added back to its pixel
 *   lnn_maxpool_fwd_*     window max (padding = -inf) and the flat index of its first maximum
 *   lnn_maxpool_bwd_*     gx = 0; gx.flat[argmax] += gy  (2x2 / stride 2: row pair by row pair)
 *   lnn_avgpool_fwd_*     window sum / divisor (kh kw, or the cells inside the image)
 *   lnn_avgpool_bwd_*     gx = 0; every window adds gy / divisor to its cells inside the image
 *
 * The spec of each kernel is its NumPy twin in lepton_nn/backend/reference.py. Arguments are
 * trusted (the Python op validated them). A "plane" is one (image, channel) pair: every loop
 * runs plane by plane, so a kernel's memory traffic stays within one H x W image at a time.
 * The kernels are written once for an element type T in the template part below; the header
 * includes itself twice to stamp out float (_f32) and double (_f64) versions.
 */
#ifndef LNN_CONV_TEMPLATE

#ifndef LNN_CONV_H
#define LNN_CONV_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(LEPTON_NO_SIMD) /* a portable-only build (simd_act.h) */
#define LNN_CONV_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LNN_CONV_CLONES
#endif

/* The output positions o in [0, n_out) whose input index o * s + off lies in [0, n_in):
 * [*lo, *hi), empty when *hi <= *lo. */
static inline void lnn_valid_range(ptrdiff_t off, ptrdiff_t s, ptrdiff_t n_in, ptrdiff_t n_out,
                                   ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t a = off >= 0 ? 0 : (-off + s - 1) / s; /* first o with o s + off >= 0 */
    ptrdiff_t b = n_in - 1 - off < 0 ? 0 : (n_in - 1 - off) / s + 1; /* o s + off <= n_in - 1 */
    if (b > n_out) b = n_out;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* set: the plain C loops even where the CPU has AVX-512 or AVX2 (the tests run both) */
static int lnn_conv_portable = 0;

/* SIMD twins of the template's float32 loops (each called only where the CPU has the
 * instructions): conv_avx512.h, and conv_avx2.h for CPUs without AVX-512. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(LEPTON_NO_SIMD) /* a portable-only build (simd_act.h) */
#include <immintrin.h>
#include "conv_avx512.h" /* lnn_have_avx512, lnn_im2col_s1_avx512, lnn_maxpool2x2_avx512, ... */
#include "conv_avx2.h" /* lnn_have_avx2, lnn_maxpool2x2_avx2 */
#else
#define LNN_CONV_AVX512 0
#define LNN_CONV_AVX2 0
#endif

#define T float
#define LNN_F32 1
#define LNN_CNAME(name) name##_f32
#define LNN_CONV_TEMPLATE
#include "conv.h"
#undef LNN_CONV_TEMPLATE
#undef T
#undef LNN_F32
#undef LNN_CNAME

#define T double
#define LNN_F32 0
#define LNN_CNAME(name) name##_f64
#define LNN_CONV_TEMPLATE
#include "conv.h"
#undef LNN_CONV_TEMPLATE
#undef T
#undef LNN_F32
#undef LNN_CNAME

#endif /* LNN_CONV_H */

#else /* LNN_CONV_TEMPLATE: the kernels for one element type T ------------------------------ */

/* x: (planes, h, w) -> cols: (planes, kh kw, oh, ow), planes = N C (the (N, C kh kw, OH, OW)
 * layout of reference.im2col, since row (c kh + i) kw + j of image n is plane n C + c). */
static LNN_CONV_CLONES void LNN_CNAME(lnn_im2col)(
    const T *x, T *cols, ptrdiff_t planes, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t kw,
    ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw,
    ptrdiff_t dh, ptrdiff_t dw)
{
    const ptrdiff_t L = oh * ow;
#if LNN_CONV_AVX512
    if (LNN_F32 && sw == 1 && lnn_have_avx512()) { /* the same copies, in masked vectors */
        lnn_im2col_s1_avx512((const float *)x, (float *)cols, planes, h, w, kh, kw, oh, ow, sh,
                             ph, pw, dh, dw);
        return;
    }
#endif
#if LNN_CONV_AVX2
    if (LNN_F32 && sh == 1 && sw == 1 && ow == w && w >= 8 && lnn_have_avx2()) {
        lnn_im2col_s1_avx2((const float *)x, (float *)cols, planes, h, w, kh, kw, oh, ph, pw, dh,
                           dw); /* the same copies, a tap's rows as one flat run */
        return;
    }
#endif
    if (sh == 1 && sw == 1 && ow == w) { /* stride 1, output as wide as the input ("same") */
        for (ptrdiff_t p = 0; p < planes; p++) {
            const T *xp = x + p * h * w;
            for (ptrdiff_t i = 0; i < kh; i++) {
                ptrdiff_t ya, yb; /* output rows whose input row oy + i dh - ph is inside */
                lnn_valid_range(i * dh - ph, 1, h, oh, &ya, &yb);
                if (ya > oh) ya = yb = oh;
                for (ptrdiff_t j = 0; j < kw; j++) {
                    T *restrict d = cols + (p * kh * kw + i * kw + j) * L;
                    const ptrdiff_t xoff = j * dw - pw, shift = (i * dh - ph) * w + xoff;
                    ptrdiff_t lo, hi;
                    lnn_valid_range(xoff, 1, w, ow, &lo, &hi);
                    if (lo > ow) lo = hi = ow;
                    /* cols[p, i kw + j] = xpad[p, i dh : i dh + oh, j dw : j dw + ow]:
                     * rows of the output and of the input have the same width, so the inside
                     * rows are one shifted block, d[ya w + lo : (yb - 1) w + hi] =
                     * xp[... + shift]; the columns that block took from the neighbouring row
                     * are padding, zeroed after */
                    memset(d, 0, (size_t)(ya * ow) * sizeof(T)); /* padding rows above */
                    ptrdiff_t y_end = ya; /* rows copied: [ya, y_end) */
                    if (yb > ya && hi > lo) {
                        y_end = yb;
                        const ptrdiff_t a0 = ya * ow + lo, a1 = (yb - 1) * ow + hi;
                        memcpy(d + a0, xp + a0 + shift, (size_t)(a1 - a0) * sizeof(T));
                        for (ptrdiff_t oy = ya; oy < yb; oy++) { /* d[oy, :lo] = d[oy, hi:] = 0 */
                            for (ptrdiff_t ox = 0; ox < lo; ox++) d[oy * ow + ox] = 0;
                            for (ptrdiff_t ox = hi; ox < ow; ox++) d[oy * ow + ox] = 0;
                        }
                    }
                    memset(d + y_end * ow, 0, (size_t)((oh - y_end) * ow) * sizeof(T)); /* below */
                }
            }
        }
        return;
    }
    for (ptrdiff_t p = 0; p < planes; p++) {
        const T *xp = x + p * h * w;
        for (ptrdiff_t i = 0; i < kh; i++) {
            for (ptrdiff_t j = 0; j < kw; j++) {
                /* cols[p, i kw + j] = xpad[p, i dh :: sh, j dw :: sw] */
                T *dst = cols + (p * kh * kw + i * kw + j) * L;
                const ptrdiff_t xoff = j * dw - pw;
                ptrdiff_t lo, hi;
                lnn_valid_range(xoff, sw, w, ow, &lo, &hi);
                for (ptrdiff_t oy = 0; oy < oh; oy++) {
                    const ptrdiff_t iy = oy * sh - ph + i * dh;
                    T *d = dst + oy * ow;
                    if (iy < 0 || iy >= h) { /* a padding row: d[:] = 0 */
                        memset(d, 0, (size_t)ow * sizeof(T));
                        continue;
                    }
                    const T *src = xp + iy * w;
                    for (ptrdiff_t ox = 0; ox < lo; ox++) d[ox] = 0; /* left padding */
                    if (sw == 1) { /* d[lo:hi] = src[lo + xoff : hi + xoff] */
                        memcpy(d + lo, src + lo + xoff, (size_t)(hi - lo) * sizeof(T));
                    } else { /* d[lo:hi] = src[lo sw + xoff : hi sw + xoff : sw] */
                        for (ptrdiff_t ox = lo; ox < hi; ox++) d[ox] = src[ox * sw + xoff];
                    }
                    for (ptrdiff_t ox = hi; ox < ow; ox++) d[ox] = 0; /* right padding */
                }
            }
        }
    }
}

/* cols: (planes, kh kw, oh, ow) -> gx: (planes, h, w), overwritten. */
static LNN_CONV_CLONES void LNN_CNAME(lnn_col2im)(
    const T *cols, T *gx, ptrdiff_t planes, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t kw,
    ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw,
    ptrdiff_t dh, ptrdiff_t dw)
{
    const ptrdiff_t L = oh * ow;
#if LNN_CONV_AVX512
    const int avx512 = lnn_have_avx512();
    if (LNN_F32 && avx512 && sh == 1 && sw == 1) { /* the same sums, as a gather (above) */
        lnn_col2im_s1_avx512((const float *)cols, (float *)gx, planes, h, w, kh, kw, oh, ow, ph,
                             pw, dh, dw);
        return;
    }
#endif
#if LNN_CONV_AVX2
    if (LNN_F32 && sh == 1 && sw == 1 && ow == w && w >= 8 && lnn_have_avx2()) {
        lnn_col2im_s1_avx2((const float *)cols, (float *)gx, planes, h, w, kh, kw, oh, ph, pw, dh,
                           dw); /* the same sums, a tap's rows as one flat run */
        return;
    }
#endif
    memset(gx, 0, (size_t)(planes * h * w) * sizeof(T)); /* gx[...] = 0 */
    for (ptrdiff_t p = 0; p < planes; p++) {
        T *gp = gx + p * h * w;
        for (ptrdiff_t i = 0; i < kh; i++) {
            for (ptrdiff_t j = 0; j < kw; j++) {
                /* gxpad[p, i dh :: sh, j dw :: sw] += cols[p, i kw + j] */
                const T *src = cols + (p * kh * kw + i * kw + j) * L;
                const ptrdiff_t xoff = j * dw - pw;
                ptrdiff_t lo, hi;
                lnn_valid_range(xoff, sw, w, ow, &lo, &hi);
                for (ptrdiff_t oy = 0; oy < oh; oy++) {
                    const ptrdiff_t iy = oy * sh - ph + i * dh;
                    if (iy < 0 || iy >= h) continue; /* a padding row: dropped */
                    T *restrict d = gp + iy * w;
                    const T *restrict s = src + oy * ow;
                    if (sw == 1) {
#if LNN_CONV_AVX512
                        if (LNN_F32 && avx512) { /* the same, masked vectors */
                            lnn_add_row_avx512((float *)(d + lo + xoff), (const float *)(s + lo), hi - lo);
                            continue;
                        }
#endif
                        for (ptrdiff_t ox = lo; ox < hi; ox++) d[ox + xoff] += s[ox];
                    } else {
                        for (ptrdiff_t ox = lo; ox < hi; ox++) d[ox * sw + xoff] += s[ox];
                    }
                }
            }
        }
    }
}

/* x: (planes, h, w) -> y, argmax: (planes, oh, ow).
 * Tap by tap (row-major over the window), one output row at a time: y and argmax hold the
 * running maximum, so the inner loop runs over ox without data-dependent branches (selects
 * instead), and a later tap replaces the maximum only if strictly larger (first one wins). */
static LNN_CONV_CLONES void LNN_CNAME(lnn_maxpool_fwd)(
    const T *x, T *y, int64_t *argmax, ptrdiff_t planes, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh,
    ptrdiff_t kw, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph,
    ptrdiff_t pw)
{
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && 2 * oh <= h &&
        2 * ow <= w) {
        /* the common 2x2 / stride 2 window, no padding on any side:
         * y = max(a, b, c, d), the first of equals in that (row-major) order */
#if LNN_CONV_AVX512
        if (LNN_F32 && ow <= 16 && lnn_have_avx512()) { /* the same, one vector per row */
            lnn_maxpool2x2_avx512((const float *)x, (float *)y, argmax, planes, h, w, oh, ow);
            return;
        }
#endif
#if LNN_CONV_AVX2
        if (LNN_F32 && ow >= 8 && lnn_have_avx2()) { /* the same, 8 windows at a time */
            lnn_maxpool2x2_avx2((const float *)x, (float *)y, argmax, planes, h, w, oh, ow);
            return;
        }
#endif
        for (ptrdiff_t p = 0; p < planes; p++) {
            for (ptrdiff_t oy = 0; oy < oh; oy++) {
                const T *restrict r0 = x + p * h * w + 2 * oy * w, *restrict r1 = r0 + w;
                T *restrict yr = y + (p * oh + oy) * ow;
                int64_t *restrict ar = argmax + (p * oh + oy) * ow;
                const int64_t base = (int64_t)(2 * oy * w);
                for (ptrdiff_t ox = 0; ox < ow; ox++) {
                    const T a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
                    T m = a;
                    int64_t k = 0;
                    k = b > m ? 1 : k;
                    m = b > m ? b : m;
                    k = c > m ? w : k;
                    m = c > m ? c : m;
                    k = d > m ? w + 1 : k;
                    m = d > m ? d : m;
                    yr[ox] = m;
                    ar[ox] = base + 2 * ox + k;
                }
            }
        }
        return;
    }
    for (ptrdiff_t p = 0; p < planes; p++) {
        const T *xp = x + p * h * w;
        for (ptrdiff_t oy = 0; oy < oh; oy++) {
            T *yr = y + (p * oh + oy) * ow;
            int64_t *ar = argmax + (p * oh + oy) * ow;
            for (ptrdiff_t ox = 0; ox < ow; ox++) { /* nothing seen yet */
                yr[ox] = -INFINITY;
                ar[ox] = -1;
            }
            for (ptrdiff_t i = 0; i < kh; i++) {
                const ptrdiff_t iy = oy * sh - ph + i;
                if (iy < 0 || iy >= h) continue; /* a padding row: -inf never wins */
                const T *row = xp + iy * w;
                for (ptrdiff_t j = 0; j < kw; j++) {
                    const ptrdiff_t xoff = j - pw;
                    ptrdiff_t lo, hi;
                    lnn_valid_range(xoff, sw, w, ow, &lo, &hi);
                    /* take = v > y or nothing yet;  y, argmax = where(take, (v, index), (y, argmax)) */
                    for (ptrdiff_t ox = lo; ox < hi; ox++) {
                        const ptrdiff_t ix = ox * sw + xoff;
                        const T v = row[ix];
                        const int take = (v > yr[ox]) | (ar[ox] < 0);
                        yr[ox] = take ? v : yr[ox];
                        ar[ox] = take ? (int64_t)(iy * w + ix) : ar[ox];
                    }
                }
            }
        }
    }
}

/* gy, argmax: (planes, oh, ow) -> gx: (planes, h, w), overwritten; (kh, kw, sh, sw, ph, pw):
 * the forward's window, which tells when the windows tile the image (2x2, stride 2, no
 * padding): then each pair of rows is zeroed and scattered into while in L1, in one pass,
 * instead of gx zeroed whole and then scattered into. */
static void LNN_CNAME(lnn_maxpool_bwd)(const T *gy, const int64_t *argmax, T *gx, ptrdiff_t planes,
                                       ptrdiff_t h, ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow,
                                       ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh, ptrdiff_t sw,
                                       ptrdiff_t ph, ptrdiff_t pw)
{
    const ptrdiff_t hw = h * w, ohw = oh * ow;
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && h == 2 * oh &&
        w == 2 * ow) {
        /* gx[p, 2 oy + i, 2 ox + j] = gy[p, oy, ox] if that cell is the argmax else 0 */
#if LNN_CONV_AVX512
        if (LNN_F32 && ow <= 16 && lnn_have_avx512()) { /* the same, one vector per row */
            lnn_maxpool2x2_bwd_avx512((const float *)gy, argmax, (float *)gx, planes, w, oh, ow);
            return;
        }
#endif
        /* per pair of input rows: both zeroed, then each window's maximum cell set (a store
         * where argmax points, no branch; selecting each of the four cells by comparisons
         * took 5-8x the time on W3's pools, and more the less predictable the data) */
        for (ptrdiff_t p = 0; p < planes; p++) {
            T *gp = gx + p * hw;
            for (ptrdiff_t oy = 0; oy < oh; oy++) {
                const T *g = gy + (p * oh + oy) * ow;
                const int64_t *a = argmax + (p * oh + oy) * ow;
                memset(gp + 2 * oy * w, 0, (size_t)(2 * w) * sizeof(T));
                for (ptrdiff_t ox = 0; ox < ow; ox++) gp[a[ox]] = g[ox];
            }
        }
        return;
    }
    memset(gx, 0, (size_t)(planes * hw) * sizeof(T)); /* gx[...] = 0 */
    for (ptrdiff_t p = 0; p < planes; p++) {
        /* gx[p].flat[argmax[p]] += gy[p]  (np.add.at) */
        T *gp = gx + p * hw;
        const T *g = gy + p * ohw;
        const int64_t *a = argmax + p * ohw;
        for (ptrdiff_t k = 0; k < ohw; k++) gp[a[k]] += g[k];
    }
}

/* x: (planes, h, w) -> y: (planes, oh, ow). */
static void LNN_CNAME(lnn_avgpool_fwd)(
    const T *x, T *y, ptrdiff_t planes, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t kw,
    ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw,
    int count_pad)
{
    for (ptrdiff_t p = 0; p < planes; p++) {
        const T *xp = x + p * h * w;
        T *yp = y + p * oh * ow;
        for (ptrdiff_t oy = 0; oy < oh; oy++) {
            const ptrdiff_t y0 = oy * sh - ph;
            const ptrdiff_t ya = y0 < 0 ? 0 : y0, yb = y0 + kh > h ? h : y0 + kh;
            for (ptrdiff_t ox = 0; ox < ow; ox++) {
                const ptrdiff_t x0 = ox * sw - pw;
                const ptrdiff_t xa = x0 < 0 ? 0 : x0, xb = x0 + kw > w ? w : x0 + kw;
                /* y = window.sum() / divisor */
                T s = 0;
                for (ptrdiff_t iy = ya; iy < yb; iy++)
                    for (ptrdiff_t ix = xa; ix < xb; ix++) s += xp[iy * w + ix];
                ptrdiff_t cnt = count_pad ? kh * kw : (yb - ya) * (xb - xa);
                yp[oy * ow + ox] = s / (T)(cnt > 0 ? cnt : 1);
            }
        }
    }
}

/* gy: (planes, oh, ow) -> gx: (planes, h, w), overwritten. */
static void LNN_CNAME(lnn_avgpool_bwd)(
    const T *gy, T *gx, ptrdiff_t planes, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t kw,
    ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw,
    int count_pad)
{
    memset(gx, 0, (size_t)(planes * h * w) * sizeof(T)); /* gx[...] = 0 */
    for (ptrdiff_t p = 0; p < planes; p++) {
        T *gp = gx + p * h * w;
        const T *g = gy + p * oh * ow;
        for (ptrdiff_t oy = 0; oy < oh; oy++) {
            const ptrdiff_t y0 = oy * sh - ph;
            const ptrdiff_t ya = y0 < 0 ? 0 : y0, yb = y0 + kh > h ? h : y0 + kh;
            for (ptrdiff_t ox = 0; ox < ow; ox++) {
                const ptrdiff_t x0 = ox * sw - pw;
                const ptrdiff_t xa = x0 < 0 ? 0 : x0, xb = x0 + kw > w ? w : x0 + kw;
                /* gx[window] += gy / divisor */
                ptrdiff_t cnt = count_pad ? kh * kw : (yb - ya) * (xb - xa);
                const T v = g[oy * ow + ox] / (T)(cnt > 0 ? cnt : 1);
                for (ptrdiff_t iy = ya; iy < yb; iy++)
                    for (ptrdiff_t ix = xa; ix < xb; ix++) gp[iy * w + ix] += v;
            }
        }
    }
}

#endif /* LNN_CONV_TEMPLATE */
