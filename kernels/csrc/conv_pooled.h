/* conv_pooled.h: the direct convolution's pooled tiling (a part of conv_direct.h, which
 * includes it after its own helpers: LNN_CD_OB, lnn_cd_have_avx2, lnn_cd_max_nan). */
#ifndef LNN_CONV_POOLED_H
#define LNN_CONV_POOLED_H

/* -- the pooled tiling: a 2x2 / stride 2 max pool taken in registers -------------------------
 *
 * For a short reduction (K = C kh kw small: the CNN's first conv has K = 9) the 4x24 tiles
 * spend as much time writing z and pooling it as multiplying. Here the four corners (a, b)
 * of each pooling window are computed side by side, for 8 windows q = py POW + px at a time,
 * and maxed in registers: no z. Corner (a, b) of window (py, px) under tap (i, j) reads input
 * (2 py + u - ph, 2 px + v - pw) with u = a + i dh, v = b + j dw. So the image is copied,
 * per channel c, row parity e (0, 1) and column offset v < V = (kw - 1) dw + 2, into planes
 * of POW columns and R2 = POH + ((kh - 1) dh + 1) / 2 rows, every other row and column:
 *
 *     t[c, e, v][r, px] = x[c, 2 r + e - ph, 2 px + v - pw]           (0 outside the image)
 *
 * and corner (a, b) of tap (i, j) for windows q .. q + 7 is the contiguous vector
 * t[c, u % 2, v].flat[(u / 2) POW + q : ...]. Each filter's sums run in the order of the
 * 4x24 tiles' (tap row i, then channel c, then tap column j, from 0), so z, and y, are the
 * same floats. Then y = f(max + b) as each vector is stored (identity and ReLU only). */

/* whether an image takes the pooled tiling: a 2x2 / 2 unpadded pool of whole windows after
 * the identity or ReLU, and K <= 32 (above, the GEMM outweighs the z round trip it saves,
 * and the lanes past POH POW in the last vector of 8, wasted, weigh more for a small plane) */
static int lnn_cd_pooled(const lnn_conv_geom *g, const ptrdiff_t *pool, int act)
{
    return pool != NULL && pool[0] == 2 && pool[1] == 2 && pool[2] == 2 && pool[3] == 2 &&
           pool[4] == 0 && pool[5] == 0 && pool[6] >= 1 && pool[7] >= 1 &&
           2 * pool[6] <= g->oh && 2 * pool[7] <= g->ow &&
           (act == LNN_IDENTITY || act == LNN_RELU) && g->c * g->kh * g->kw <= 32;
}

/* one plane's floats: R2 rows of POW, + 8 (the last vector of windows reads up to 7 past
 * POH POW from the deepest row offset), rounded up to 8 */
static ptrdiff_t lnn_cd_plane_size(const lnn_conv_geom *g, const ptrdiff_t *pool)
{
    const ptrdiff_t r2 = pool[6] + ((g->kh - 1) * g->dh + 1) / 2;
    return (r2 * pool[7] + 8 + 7) / 8 * 8;
}

/* the planes' size in floats: C 2 V planes */
static ptrdiff_t lnn_cd_planes_size(const lnn_conv_geom *g, const ptrdiff_t *pool)
{
    return g->c * 2 * ((g->kw - 1) * g->dw + 2) * lnn_cd_plane_size(g, pool);
}

#if LNN_CD_AVX2
/* d[k] = xr[2 k] for k < n (n >= 8), 8 at a time from 16 loaded, the last 8 overlapping;
 * reads stop before xend */
__attribute__((target("avx2,fma"))) static void lnn_cd_evens_avx2(float *d, const float *xr,
                                                                 ptrdiff_t n, const float *xend)
{
    ptrdiff_t k = 0;
    while (xr + 2 * k + 16 <= xend) {
        const __m256 a = _mm256_loadu_ps(xr + 2 * k), b = _mm256_loadu_ps(xr + 2 * k + 8);
        const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)); /* in-lane */
        _mm256_storeu_ps(d + k, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xd8)));
        if (k == n - 8) return;
        k = k + 16 <= n ? k + 8 : n - 8;
    }
    for (; k < n; k++) d[k] = xr[2 * k];
}
#endif

/* d[k] = xr[2 k] for k < n; xend: the end of the array xr points into */
static inline void lnn_cd_evens(float *d, const float *xr, ptrdiff_t n, const float *xend)
{
#if LNN_CD_AVX2
    if (n >= 8 && lnn_cd_have_avx2()) {
        lnn_cd_evens_avx2(d, xr, n, xend);
        return;
    }
#endif
    (void)xend;
    for (ptrdiff_t k = 0; k < n; k++) d[k] = xr[2 * k];
}

/* t = the planes of one image x (C, H, W) */
static void lnn_cd_planes(const float *x, float *t, const lnn_conv_geom *g, const ptrdiff_t *pool)
{
    const ptrdiff_t nv = (g->kw - 1) * g->dw + 2, pw_ = pool[7], ps = lnn_cd_plane_size(g, pool);
    const ptrdiff_t r2 = pool[6] + ((g->kh - 1) * g->dh + 1) / 2;
    for (ptrdiff_t c = 0; c < g->c; c++) {
        const float *xc = x + c * g->h * g->w, *xend = xc + g->h * g->w;
        for (ptrdiff_t e = 0; e < 2; e++)
            for (ptrdiff_t v = 0; v < nv; v++) {
                float *d = t + ((c * 2 + e) * nv + v) * ps;
                ptrdiff_t lo, hi; /* px in [lo, hi) reads inside the row */
                lnn_valid_range(v - g->pw, 2, g->w, pw_, &lo, &hi);
                for (ptrdiff_t r = 0; r < r2; r++, d += pw_) {
                    const ptrdiff_t iy = 2 * r + e - g->ph;
                    if (iy < 0 || iy >= g->h) {
                        for (ptrdiff_t px = 0; px < pw_; px++) d[px] = 0;
                        continue;
                    }
                    const float *xr = xc + iy * g->w + v - g->pw;
                    for (ptrdiff_t px = 0; px < lo; px++) d[px] = 0;
                    lnn_cd_evens(d + lo, xr + 2 * lo, hi - lo, xend);
                    for (ptrdiff_t px = hi; px < pw_; px++) d[px] = 0;
                }
                for (ptrdiff_t k = r2 * pw_; k < ps; k++) d[k - r2 * pw_] = 0; /* slack */
            }
    }
}

/* the offset of tap row u's vectors in the planes: t[c, u % 2, v] at (u / 2) POW */
static inline ptrdiff_t lnn_cd_row_off(ptrdiff_t u, ptrdiff_t nv, ptrdiff_t ps, ptrdiff_t pw_)
{
    return (u % 2) * nv * ps + (u / 2) * pw_;
}

/* y[o, q] = f(the max over window q's corners of z + b[o]) (plain C; a NaN is the max, as
 * np.max) */
static void lnn_cd_pooled_c(const float *t, const float *wp, const float *bias, int act,
                            float *y, const lnn_conv_geom *g, const ptrdiff_t *pool)
{
    const ptrdiff_t nv = (g->kw - 1) * g->dw + 2, ps = lnn_cd_plane_size(g, pool);
    const ptrdiff_t q_n = pool[6] * pool[7], cq = g->c * g->kw;
    for (ptrdiff_t o = 0; o < g->o; o++) {
        const float *w = wp + (o / LNN_CD_OB) * g->kh * cq * LNN_CD_OB + o % LNN_CD_OB;
        const lnn_cd_epi epi = lnn_cd_epilogue(bias, o, act);
        for (ptrdiff_t q = 0; q < q_n; q++) {
            float m = 0;
            for (int corner = 0; corner < 4; corner++) {
                const ptrdiff_t a = corner / 2, b = corner % 2;
                float acc = 0;
                for (ptrdiff_t i = 0; i < g->kh; i++) {
                    const ptrdiff_t off = lnn_cd_row_off(a + i * g->dh, nv, ps, pool[7]) + q;
                    for (ptrdiff_t c = 0; c < g->c; c++)
                        for (ptrdiff_t j = 0; j < g->kw; j++)
                            acc += w[(i * cq + c * g->kw + j) * LNN_CD_OB] *
                                   t[(c * 2 * nv + b + j * g->dw) * ps + off];
                }
                if (corner == 0 || (m == m && (acc > m || acc != acc))) m = acc; /* NaN stays */
            }
            y[o * q_n + q] = lnn_cd_epi1(m, epi);
        }
    }
}

#if LNN_CD_AVX2
/* One 4-filter block (wp's) x 8 windows: the corners' row a = 0, then a = 1, each as 4
 * filters x 2 corners (b = 0, 1) in 8 accumulators (per tap 2 plane loads and 4 broadcasts
 * for 8 FMAs), maxed into m. off[a][k]: tap k's (in wp's order) vector offset in t for
 * corner row a (one flat loop over the K taps: nested loops of 3 cost more than the FMAs). */
static inline __attribute__((always_inline, target("avx2,fma"))) void
lnn_cd_pooled_tile_avx2(const float *t, const float *w, __m256 m[LNN_CD_OB],
                        const ptrdiff_t (*off)[32], ptrdiff_t k_n, ptrdiff_t ps)
{
    for (int a = 0; a < 2; a++) {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0; /* corner b = 0 */
        __m256 u0 = s0, u1 = s0, u2 = s0, u3 = s0;                  /* corner b = 1 */
        const float *wk = w;
        for (ptrdiff_t k = 0; k < k_n; k++, wk += LNN_CD_OB) {
            const float *tp = t + off[a][k];
            const __m256 b0 = _mm256_loadu_ps(tp), b1 = _mm256_loadu_ps(tp + ps);
            __m256 v = _mm256_broadcast_ss(wk);
            s0 = _mm256_fmadd_ps(v, b0, s0);
            u0 = _mm256_fmadd_ps(v, b1, u0);
            v = _mm256_broadcast_ss(wk + 1);
            s1 = _mm256_fmadd_ps(v, b0, s1);
            u1 = _mm256_fmadd_ps(v, b1, u1);
            v = _mm256_broadcast_ss(wk + 2);
            s2 = _mm256_fmadd_ps(v, b0, s2);
            u2 = _mm256_fmadd_ps(v, b1, u2);
            v = _mm256_broadcast_ss(wk + 3);
            s3 = _mm256_fmadd_ps(v, b0, s3);
            u3 = _mm256_fmadd_ps(v, b1, u3);
        }
        s0 = lnn_cd_max_nan(s0, u0);
        s1 = lnn_cd_max_nan(s1, u1);
        s2 = lnn_cd_max_nan(s2, u2);
        s3 = lnn_cd_max_nan(s3, u3);
        if (a == 0) {
            m[0] = s0, m[1] = s1, m[2] = s2, m[3] = s3;
        } else {
            m[0] = lnn_cd_max_nan(m[0], s0), m[1] = lnn_cd_max_nan(m[1], s1);
            m[2] = lnn_cd_max_nan(m[2], s2), m[3] = lnn_cd_max_nan(m[3], s3);
        }
    }
}

__attribute__((target("avx2,fma"))) static void
lnn_cd_pooled_avx2(const float *t, const float *wp, const float *bias, int act, float *y,
                   const lnn_conv_geom *g, const ptrdiff_t *pool)
{
    const ptrdiff_t nv = (g->kw - 1) * g->dw + 2, ps = lnn_cd_plane_size(g, pool);
    const ptrdiff_t q_n = pool[6] * pool[7], k_n = g->kh * g->c * g->kw;
    ptrdiff_t off[2][32]; /* K <= 32 (lnn_cd_pooled) */
    for (int a = 0; a < 2; a++)
        for (ptrdiff_t i = 0, k = 0; i < g->kh; i++)
            for (ptrdiff_t c = 0; c < g->c; c++)
                for (ptrdiff_t j = 0; j < g->kw; j++, k++)
                    off[a][k] = lnn_cd_row_off(a + i * g->dh, nv, ps, pool[7]) +
                                (c * 2 * nv + j * g->dw) * ps;
    for (ptrdiff_t q0 = 0; q0 < q_n; q0 += 8) {
        for (ptrdiff_t o0 = 0; o0 < g->o; o0 += LNN_CD_OB) {
            __m256 m[LNN_CD_OB];
            lnn_cd_pooled_tile_avx2(t + q0, wp + o0 * k_n, m, off, k_n, ps);
            const ptrdiff_t rows = g->o - o0 < LNN_CD_OB ? g->o - o0 : LNN_CD_OB;
            for (ptrdiff_t r = 0; r < rows; r++) {
                float *yr = y + (o0 + r) * q_n + q0;
                const __m256 v = lnn_cd_epi8(m[r], lnn_cd_epilogue(bias, o0 + r, act));
                if (q0 + 8 <= q_n) {
                    _mm256_storeu_ps(yr, v);
                } else { /* the plane's last windows, through a buffer */
                    float tail[8];
                    _mm256_storeu_ps(tail, v);
                    for (ptrdiff_t k = 0; k < q_n - q0; k++) yr[k] = tail[k];
                }
            }
        }
    }
}
#endif

#endif /* LNN_CONV_POOLED_H */
