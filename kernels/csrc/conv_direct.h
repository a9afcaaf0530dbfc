/* conv_direct.h: an inference convolution with stride 1, float32, image by image, without
 * im2col and without a BLAS call, its bias, activation and max pool applied in cache.
 *
 * The spec is ReferenceBackend.conv2d_direct_forward (lepton_nn/backend/reference.py):
 *
 *     z = w2 @ im2col(x[n])                          (O, P = OH OW)
 *     y[n] = maxpool(f(z + b[:, None]))              (O, POH POW), or f(z + b) without pool
 *
 * How: im2col copies each input pixel kh kw times. With a stride of 1, output pixel p = oy OW
 * + ox reads, at tap (i, j), input (oy + i dh - ph, ox + j dw - pw); only the horizontal
 * shift needs a copy of its own. So the image is copied kw times, once per column tap j, into
 * s[c, j] (R = OH + (kh - 1) dh rows of OW, zeros where the tap falls in the padding):
 *
 *     s[c, j, r, ox] = x[c, r - ph, ox + j dw - pw]           (0 outside the image)
 *
 * and then tap (i, j) of channel c for output pixels p .. p + 7 is the contiguous vector
 * s[c, j].flat[p + i dh OW : ...]: a GEMM whose B operand is read straight from s with a row
 * offset per tap (kw copies instead of kh kw, and no padding waste). The product runs 4
 * filters x 24 pixels at a time in 12 AVX2 accumulators (FMA), the filters packed by
 * ReferenceBackend.conv2d_direct_pack as wp[o / 4, i, c kw + j, o % 4] (zero rows up to a
 * multiple of 4). A max pool then reads z (O, Pp = P rounded up to 8) while it is in cache;
 * for the identity and ReLU (non-decreasing, so max(f(z + b)) = f(max(z) + b) exactly) the
 * pool comes first and f(. + b) runs on the 4x smaller pooled plane.
 *
 * A short reduction (K = C kh kw <= 32, say the first conv of a CNN on 1-channel images)
 * followed by a 2x2 / 2 pool takes another tiling (conv_pooled.h, the pooled tiling): the four
 * corners of 8 pooling windows side by side, maxed in registers, with no z at all; its sums
 * are the 4x24 tiles' in the same order, so its outputs are the same floats.
 *
 * Without AVX2 (or off x86/gcc) the same loops run in plain C.
 */
#ifndef LNN_CONV_DIRECT_H
#define LNN_CONV_DIRECT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "conv_chunks.h" /* lnn_conv_geom, lnn_claim, lnn_bias_act_forward_f32 */

/* set: the plain C loops even where AVX2 is there (the tests run them on any machine) */
static int lnn_cd_portable = 0;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LEPTON_NO_SIMD)
#include <immintrin.h>
#define LNN_CD_AVX2 1
static int lnn_cd_have_avx2(void)
{
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return have && !lnn_cd_portable;
}
#endif

/* pixels a tile covers at most, and the row padding of s and z those reads need */
enum { LNN_CD_PX = 24, LNN_CD_OB = 4 };

/* s, its size in floats: C kw R OW plus the LNN_CD_PX a last tile may read past the end;
 * z: 4 ceil(O / 4) rows of lnn_cd_zrow plus LNN_CD_PX the pool may read past the end */
static ptrdiff_t lnn_cd_shift_size(const lnn_conv_geom *g)
{
    return g->c * g->kw * (g->oh + (g->kh - 1) * g->dh) * g->ow + LNN_CD_PX;
}

/* z's row length: P rounded up to 8 */
static ptrdiff_t lnn_cd_zrow(const lnn_conv_geom *g)
{
    return (g->oh * g->ow + 7) / 8 * 8;
}

/* s[c, j, r, ox] = x[c, r - ph, ox + j dw - pw], 0 outside the image (x: one image, C H W) */
static void lnn_cd_shift(const float *x, float *s, const lnn_conv_geom *g)
{
    const ptrdiff_t R = g->oh + (g->kh - 1) * g->dh, ow = g->ow;
    for (ptrdiff_t c = 0; c < g->c; c++) {
        const float *xc = x + c * g->h * g->w;
        for (ptrdiff_t j = 0; j < g->kw; j++) {
            const ptrdiff_t xoff = j * g->dw - g->pw;
            ptrdiff_t lo, hi; /* ox in [lo, hi) reads inside the row */
            lnn_valid_range(xoff, 1, g->w, ow, &lo, &hi);
            if (lo > ow) lo = hi = ow;
            float *d = s + (c * g->kw + j) * R * ow;
            if (ow == g->w && hi > lo) {
                /* rows as wide as the input's: the inside rows [ya, yb) are one shifted block
                 * d[ya ow + lo : (yb - 1) ow + hi] = x[c].flat[... - ph ow + xoff], whose
                 * columns taken from a neighbouring row are padding, zeroed after */
                const ptrdiff_t ya = g->ph < R ? g->ph : R;
                const ptrdiff_t yb = g->ph + g->h < R ? g->ph + g->h : R;
                memset(d, 0, (size_t)(ya * ow) * sizeof(float));
                if (yb > ya) {
                    const ptrdiff_t a0 = ya * ow + lo, a1 = (yb - 1) * ow + hi;
                    memcpy(d + a0, xc + a0 - g->ph * ow + xoff, (size_t)(a1 - a0) * sizeof(float));
                    /* d[r, :lo] = d[r, hi:] = 0, column by column down the rows (row by row,
                     * two loops of 0 or 1 steps a row took 40 % more of the shift's time) */
                    for (ptrdiff_t k = 0; k < lo; k++)
                        for (ptrdiff_t r = ya; r < yb; r++) d[r * ow + k] = 0;
                    for (ptrdiff_t k = hi; k < ow; k++)
                        for (ptrdiff_t r = ya; r < yb; r++) d[r * ow + k] = 0;
                }
                const ptrdiff_t done = yb > ya ? yb : ya;
                memset(d + done * ow, 0, (size_t)((R - done) * ow) * sizeof(float));
                continue;
            }
            for (ptrdiff_t r = 0; r < R; r++, d += ow) {
                const ptrdiff_t iy = r - g->ph;
                if (iy < 0 || iy >= g->h || hi <= lo) { /* a padding row */
                    memset(d, 0, (size_t)ow * sizeof(float));
                    continue;
                }
                /* d[lo:hi] = x[c, iy, lo + xoff : hi + xoff]; the rest is padding */
                memset(d, 0, (size_t)lo * sizeof(float));
                memcpy(d + lo, xc + iy * g->w + lo + xoff, (size_t)(hi - lo) * sizeof(float));
                memset(d + hi, 0, (size_t)(ow - hi) * sizeof(float));
            }
        }
    }
}

/* the vectors of 8 pixels a tile takes when `left` are left (plain C and AVX2 alike): 3, except
 * 2 + 2 for the last 4 (a 1-vector tile has only 4 accumulators, fewer than FMA latency x
 * throughput = 8, and runs at half speed: P = 196, 25 vectors, was 8 tiles of 3 and one of 1) */
static inline int lnn_cd_tile_nv(ptrdiff_t left)
{
    return left >= 3 && left != 4 ? 3 : left >= 2 ? 2 : 1;
}

/* One tile in plain C: z[r, p0 : p0 + 8 nv] = sum_{i, q} wp[i, q, r] s.flat[q R OW + i dh OW
 * + p0 : ...] for the 4 filters r of a block; wp: that block's (kh, Q = C kw, 4) weights. */
static void lnn_cd_tile_c(const float *s, const float *wp, float *z, ptrdiff_t zrow,
                          ptrdiff_t p0, int nv, ptrdiff_t kh, ptrdiff_t q_n, ptrdiff_t rw,
                          ptrdiff_t tap_row)
{
    float acc[LNN_CD_OB][LNN_CD_PX] = {{0}};
    const int np = 8 * nv;
    for (ptrdiff_t i = 0; i < kh; i++) {
        const float *b = s + i * tap_row + p0;
        for (ptrdiff_t q = 0; q < q_n; q++, b += rw, wp += LNN_CD_OB)
            for (int r = 0; r < LNN_CD_OB; r++)
                for (int v = 0; v < np; v++) acc[r][v] += wp[r] * b[v];
    }
    for (int r = 0; r < LNN_CD_OB; r++) memcpy(z + r * zrow + p0, acc[r], (size_t)np * sizeof(float));
}

#if LNN_CD_AVX2
/* The same tile in AVX2: 4 x nv accumulators of 8 pixels (nv = 1, 2 or 3, a constant in each
 * inlined copy), per tap nv loads of s and 4 broadcast weights for 4 nv FMAs. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
lnn_cd_tile_avx2(const float *s, const float *wp, float *z, ptrdiff_t zrow, ptrdiff_t p0,
                 const int nv, ptrdiff_t kh, ptrdiff_t q_n, ptrdiff_t rw, ptrdiff_t tap_row)
{
    __m256 acc[LNN_CD_OB][3];
    for (int r = 0; r < LNN_CD_OB; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = _mm256_setzero_ps();
    for (ptrdiff_t i = 0; i < kh; i++) {
        const float *b = s + i * tap_row + p0;
        for (ptrdiff_t q = 0; q < q_n; q++, b += rw, wp += LNN_CD_OB) {
            __m256 bv[3];
            for (int v = 0; v < nv; v++) bv[v] = _mm256_loadu_ps(b + 8 * v);
            for (int r = 0; r < LNN_CD_OB; r++) {
                const __m256 a = _mm256_broadcast_ss(wp + r);
                for (int v = 0; v < nv; v++) acc[r][v] = _mm256_fmadd_ps(a, bv[v], acc[r][v]);
            }
        }
    }
    for (int r = 0; r < LNN_CD_OB; r++)
        for (int v = 0; v < nv; v++) _mm256_storeu_ps(z + r * zrow + p0 + 8 * v, acc[r][v]);
}

__attribute__((target("avx2,fma"))) static void
lnn_cd_gemm_avx2(const float *s, const float *wp, float *z, ptrdiff_t zrow, ptrdiff_t ob_n,
                 ptrdiff_t kh, ptrdiff_t q_n, ptrdiff_t rw, ptrdiff_t tap_row)
{
    const ptrdiff_t wblock = kh * q_n * LNN_CD_OB;
    /* pixel tiles outside, filter blocks inside: a tile's reads of s stay in L1 */
    for (ptrdiff_t p0 = 0; p0 < zrow;) {
        const int nv = lnn_cd_tile_nv((zrow - p0) / 8);
        for (ptrdiff_t ob = 0; ob < ob_n; ob++) {
            const float *w = wp + ob * wblock;
            float *zb = z + ob * LNN_CD_OB * zrow;
            if (nv == 3)
                lnn_cd_tile_avx2(s, w, zb, zrow, p0, 3, kh, q_n, rw, tap_row);
            else if (nv == 2)
                lnn_cd_tile_avx2(s, w, zb, zrow, p0, 2, kh, q_n, rw, tap_row);
            else
                lnn_cd_tile_avx2(s, w, zb, zrow, p0, 1, kh, q_n, rw, tap_row);
        }
        p0 += 8 * nv;
    }
}
#endif

/* z[o, p] = sum_{c, i, j} w[o, c, i, j] s[c, j].flat[p + i dh OW], for o < 4 ob_n, p < zrow */
static void lnn_cd_gemm(const float *s, const float *wp, float *z, const lnn_conv_geom *g)
{
    const ptrdiff_t zrow = lnn_cd_zrow(g), ob_n = (g->o + LNN_CD_OB - 1) / LNN_CD_OB;
    const ptrdiff_t q_n = g->c * g->kw, rw = (g->oh + (g->kh - 1) * g->dh) * g->ow;
    const ptrdiff_t tap_row = g->dh * g->ow;
#if LNN_CD_AVX2
    if (lnn_cd_have_avx2()) {
        lnn_cd_gemm_avx2(s, wp, z, zrow, ob_n, g->kh, q_n, rw, tap_row);
        return;
    }
#endif
    const ptrdiff_t wblock = g->kh * q_n * LNN_CD_OB;
    for (ptrdiff_t p0 = 0; p0 < zrow;) {
        const int nv = lnn_cd_tile_nv((zrow - p0) / 8);
        for (ptrdiff_t ob = 0; ob < ob_n; ob++)
            lnn_cd_tile_c(s, wp + ob * wblock, z + ob * LNN_CD_OB * zrow, zrow, p0, nv, g->kh,
                          q_n, rw, tap_row);
        p0 += 8 * nv;
    }
}

/* The epilogue a pooled output may take in the same pass: y = f(m + b) for f the identity or
 * ReLU, b = the plane's bias or 0 (on = 0: y = m). The float operations of
 * lnn_bias_act_forward_f32 (z + b, then s < 0 ? 0 : s), so the same bits as its pass after. */
typedef struct {
    int on, relu;
    float b;
} lnn_cd_epi;

static inline lnn_cd_epi lnn_cd_epilogue(const float *bias, ptrdiff_t o, int act)
{
    lnn_cd_epi e = {bias != NULL || act != LNN_IDENTITY, act == LNN_RELU, bias ? bias[o] : 0.0f};
    return e;
}

static inline float lnn_cd_epi1(float m, lnn_cd_epi e)
{
    if (!e.on) return m;
    m += e.b;
    return e.relu && m < 0 ? 0.0f : m;
}

#if LNN_CD_AVX2
/* lnn_cd_epi1 on 8 lanes (max_ps returns its second operand when either is NaN) */
static inline __attribute__((always_inline, target("avx2,fma"))) __m256
lnn_cd_epi8(__m256 m, lnn_cd_epi e)
{
    if (!e.on) return m;
    m = _mm256_add_ps(m, _mm256_set1_ps(e.b));
    return e.relu ? _mm256_max_ps(_mm256_setzero_ps(), m) : m;
}

/* max(a, b) lane by lane, a NaN in either giving a NaN (as np.max), without branches */
static inline __attribute__((always_inline, target("avx2,fma"))) __m256
lnn_cd_max_nan(__m256 a, __m256 b)
{
    const __m256 nan = _mm256_cmp_ps(a, b, _CMP_UNORD_Q);
    return _mm256_blendv_ps(_mm256_max_ps(a, b), _mm256_add_ps(a, b), nan);
}

/* The 2x2 / stride 2 / unpadded pool of a plane x (h, w) into y (oh, ow): 8 outputs per
 * step from two rows of 16, read whole (x is a plane of z, which has LNN_CD_PX floats of
 * slack past its end). A row's last outputs (ow % 8 of them) are stored as 8 all the same,
 * the extra ones landing on outputs stored later (rows, then planes, go in order), unless
 * they would pass yend (the end of this image's y, which another thread may be writing
 * after): then through a buffer (AMD's masked loads and stores, vmaskmovps, are microcoded:
 * the store alone was half this kernel's time). exact = 0: plain vmaxps (which drops a NaN), and returns whether any float read was a NaN
 * (one unordered compare per pair of vectors), for the caller to redo the plane with
 * exact = 1, NaN-propagating maxima (as np.max) that cost twice as much. */
static inline __attribute__((always_inline, target("avx2,fma"))) int
lnn_cd_maxpool2x2_body(const float *x, float *y, ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow,
                       const float *yend, lnn_cd_epi epi, const int exact)
{
    __m256 nan = _mm256_setzero_ps();
    for (ptrdiff_t oy = 0; oy < oh; oy++) {
        const float *r0 = x + 2 * oy * w, *r1 = r0 + w;
        float *yr = y + oy * ow;
        for (ptrdiff_t ox = 0; ox < ow; ox += 8) {
            /* v = max(row 0, row 1) over 16 columns, as two vectors of 8; columns past the
             * row's end read the next row or z's slack, and give outputs not stored */
            const __m256 a0 = _mm256_loadu_ps(r0 + 2 * ox), b0 = _mm256_loadu_ps(r1 + 2 * ox);
            const __m256 a1 = _mm256_loadu_ps(r0 + 2 * ox + 8);
            const __m256 b1 = _mm256_loadu_ps(r1 + 2 * ox + 8);
            __m256 v0, v1;
            if (exact) {
                v0 = lnn_cd_max_nan(a0, b0), v1 = lnn_cd_max_nan(a1, b1);
            } else {
                nan = _mm256_or_ps(nan, _mm256_or_ps(_mm256_cmp_ps(a0, b0, _CMP_UNORD_Q),
                                                     _mm256_cmp_ps(a1, b1, _CMP_UNORD_Q)));
                v0 = _mm256_max_ps(a0, b0), v1 = _mm256_max_ps(a1, b1);
            }
            /* y[ox : ox + 8] = max(v[0::2], v[1::2]): even and odd columns, then the 64-bit
             * halves back in order (shuffle_ps works within 128-bit lanes) */
            const __m256 even = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0));
            const __m256 odd = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));
            const __m256 eo = exact ? lnn_cd_max_nan(even, odd) : _mm256_max_ps(even, odd);
            const __m256 m = lnn_cd_epi8(
                _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(eo), 0xd8)), epi);
            const ptrdiff_t outs = ow - ox < 8 ? ow - ox : 8;
            if (outs == 8 || yr + ox + 8 <= yend) {
                _mm256_storeu_ps(yr + ox, m);
            } else {
                float tail[8];
                _mm256_storeu_ps(tail, m);
                for (ptrdiff_t i = 0; i < outs; i++) yr[ox + i] = tail[i];
            }
        }
    }
    return _mm256_movemask_ps(nan) != 0;
}

__attribute__((target("avx2,fma"))) static void
lnn_cd_maxpool2x2_avx2(const float *x, float *y, ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow,
                       const float *yend, lnn_cd_epi epi)
{
    if (lnn_cd_maxpool2x2_body(x, y, w, oh, ow, yend, epi, 0)) /* a NaN read: exact maxima */
        lnn_cd_maxpool2x2_body(x, y, w, oh, ow, yend, epi, 1);
}
#endif

/* y = max over each window of the plane x (h, w), the padding never chosen (-inf); a NaN in
 * a window is its max (as np.max), then the epilogue epi. pool: (kh, kw, sh, sw, ph, pw,
 * oh, ow). Stores may run past the plane up to yend (see lnn_cd_maxpool2x2_body). */
static void lnn_cd_maxpool(const float *x, float *y, ptrdiff_t h, ptrdiff_t w,
                           const ptrdiff_t *pool, const float *yend, lnn_cd_epi epi)
{
    const ptrdiff_t kh = pool[0], kw = pool[1], sh = pool[2], sw = pool[3];
    const ptrdiff_t ph = pool[4], pw = pool[5], oh = pool[6], ow = pool[7];
    (void)yend; /* the plain C loops store only their own outputs */
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0) {
#if LNN_CD_AVX2
        if (lnn_cd_have_avx2()) {
            lnn_cd_maxpool2x2_avx2(x, y, w, oh, ow, yend, epi);
            return;
        }
#endif
        for (ptrdiff_t oy = 0; oy < oh; oy++) { /* y[oy, ox] = max of the 2x2 block */
            const float *r0 = x + 2 * oy * w, *r1 = r0 + w;
            float *yr = y + oy * ow;
            for (ptrdiff_t ox = 0; ox < ow; ox++) {
                const float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
                const float m1 = a > b || a != a ? a : b, m2 = c > d || c != c ? c : d;
                yr[ox] = lnn_cd_epi1(m1 > m2 || m1 != m1 ? m1 : m2, epi);
            }
        }
        return;
    }
    for (ptrdiff_t oy = 0; oy < oh; oy++) {
        for (ptrdiff_t ox = 0; ox < ow; ox++) {
            float m = -INFINITY;
            for (ptrdiff_t i = 0; i < kh; i++) {
                const ptrdiff_t iy = oy * sh - ph + i;
                if (iy < 0 || iy >= h) continue;
                for (ptrdiff_t j = 0; j < kw; j++) {
                    const ptrdiff_t ix = ox * sw - pw + j;
                    if (ix < 0 || ix >= w) continue;
                    const float v = x[iy * w + ix];
                    m = v > m || v != v ? v : m; /* a NaN, once met, stays */
                }
            }
            y[oy * ow + ox] = lnn_cd_epi1(m, epi);
        }
    }
}

#include "conv_pooled.h" /* lnn_cd_pooled, lnn_cd_planes, lnn_cd_pooled_{c,avx2} */

/* One image: y (O, POH POW or P) from x (C, H, W). s, z: this thread's scratch. */
static void lnn_cd_image(const float *x, const float *wp, const float *bias, int act,
                         const lnn_conv_geom *g, const ptrdiff_t *pool, float *s, float *z,
                         float *y)
{
    const ptrdiff_t p = g->oh * g->ow, zrow = lnn_cd_zrow(g);
    if (lnn_cd_pooled(g, pool, act)) { /* y = f(pool(z) + b), z in registers only */
        lnn_cd_planes(x, s, g, pool);
#if LNN_CD_AVX2
        if (lnn_cd_have_avx2())
            lnn_cd_pooled_avx2(s, wp, bias, act, y, g, pool);
        else
#endif
            lnn_cd_pooled_c(s, wp, bias, act, y, g, pool);
        return;
    }
    lnn_cd_shift(x, s, g);    /* s = x shifted by each column tap, padded */
    lnn_cd_gemm(s, wp, z, g); /* z = w2 @ im2col(x) */
    if (pool == NULL) {       /* y = f(z + b) */
        for (ptrdiff_t o = 0; o < g->o; o++)
            lnn_bias_act_forward_f32(z + o * zrow, bias ? bias + o : NULL, act, y + o * p, 1, 1,
                                     p);
        return;
    }
    const ptrdiff_t pp = pool[6] * pool[7];
    const int first = act == LNN_IDENTITY || act == LNN_RELU; /* max(f(z + b)) = f(max(z) + b) */
    if (first) { /* y = f(maxpool(z) + b), plane by plane, f applied as each is stored */
        for (ptrdiff_t o = 0; o < g->o; o++)
            lnn_cd_maxpool(z + o * zrow, y + o * pp, g->oh, g->ow, pool, y + g->o * pp,
                           lnn_cd_epilogue(bias, o, act));
        return;
    }
    for (ptrdiff_t o = 0; o < g->o; o++) { /* y = maxpool(f(z + b)) */
        float *zo = z + o * zrow;
        lnn_bias_act_forward_f32(zo, bias ? bias + o : NULL, act, zo, 1, 1, p);
        lnn_cd_maxpool(zo, y + o * pp, g->oh, g->ow, pool, y + g->o * pp,
                       lnn_cd_epilogue(NULL, 0, LNN_IDENTITY));
    }
}

/* Images claimed one at a time from *counter: y[n] for each. x (N, C, H, W); y (N, O, out);
 * s, z: this thread's scratch (lnn_cd_shift_size(g) and 4 ceil(O / 4) lnn_cd_zrow(g) +
 * LNN_CD_PX floats). */
static void lnn_conv_direct_fwd_f32(const float *x, const float *wp, const float *bias, int act,
                                    const lnn_conv_geom *g, const ptrdiff_t *pool, float *s,
                                    float *z, float *y, int64_t *counter)
{
    const ptrdiff_t img = g->c * g->h * g->w;
    const ptrdiff_t out = g->o * (pool ? pool[6] * pool[7] : g->oh * g->ow);
    for (;;) {
        const ptrdiff_t n = (ptrdiff_t)lnn_claim(counter);
        if (n >= g->n) return;
        lnn_cd_image(x + n * img, wp, bias, act, g, pool, s, z, y + n * out);
    }
}

#include "conv_winograd.h" /* lnn_cw_or_direct: the 3x3 + pool layers in F(2x2, 3x3) */

#endif /* LNN_CONV_DIRECT_H */
