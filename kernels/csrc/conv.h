/* conv.h: the C loops behind kernels/conv.pyx (NCHW images, C-contiguous).
 *
 *   lnn_im2col_*          cols[n, (c kh + i) kw + j, y, x] = x[n, c, y sh - ph + i dh, x sw - pw + j dw]
 *   lnn_col2im_*          the adjoint: gx = 0, then every column entry added back to its pixel
 *   lnn_maxpool_fwd_*     window max (padding = -inf) and the flat index of its first maximum
 *   lnn_maxpool_bwd_*     gx = 0; gx.flat[argmax] += gy
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

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
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

#define T float
#define LNN_CNAME(name) name##_f32
#define LNN_CONV_TEMPLATE
#include "conv.h"
#undef LNN_CONV_TEMPLATE
#undef T
#undef LNN_CNAME

#define T double
#define LNN_CNAME(name) name##_f64
#define LNN_CONV_TEMPLATE
#include "conv.h"
#undef LNN_CONV_TEMPLATE
#undef T
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
                    T *d = gp + iy * w;
                    const T *s = src + oy * ow;
                    if (sw == 1) {
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
        for (ptrdiff_t p = 0; p < planes; p++) {
            for (ptrdiff_t oy = 0; oy < oh; oy++) {
                const T *r0 = x + p * h * w + 2 * oy * w, *r1 = r0 + w;
                T *yr = y + (p * oh + oy) * ow;
                int64_t *ar = argmax + (p * oh + oy) * ow;
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

/* gy, argmax: (planes, oh ow) -> gx: (planes, hw), overwritten. */
static void LNN_CNAME(lnn_maxpool_bwd)(const T *gy, const int64_t *argmax, T *gx, ptrdiff_t planes,
                                       ptrdiff_t hw, ptrdiff_t ohw)
{
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
