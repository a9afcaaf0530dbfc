/* conv_winograd.h: a 3x3, stride-1 convolution followed by a 2x2 / 2 max pool in Winograd's
 * F(2x2, 3x3), for the direct kernel's image-by-image chain (conv_direct.h includes it).
 *
 * The spec is ReferenceBackend.conv2d_winograd_forward (backend/reference_conv.py).
 * Each 2x2 pooling window (py, px) is one Winograd tile: its 2x2 outputs (2 py + a, 2 px + b)
 * read the 4x4 input patch d_c = x[c, 2 py - ph : +4, 2 px - pw : +4] (0 outside), and
 *
 *     out_o = A^T [ sum_c (G g_oc G^T) * (B^T d_c B) ] A          (* element by element)
 *
 * with B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], G = [[1,0,0],[.5,.5,.5],
 * [.5,-.5,.5],[0,0,1]], A^T = [[1,1,1,0],[0,1,-1,-1]]: 16 multiplies per tile, channel and
 * filter instead of 36 (2.25x fewer). The filter side U = G g G^T is computed once, at pack
 * time (conv2d_winograd_pack, in float64): u[o / 4, xi, c, o % 4] for the 16 positions xi.
 * Then y = f(max(out) + b), the pool's 4 outputs being the tile's (f: identity or ReLU).
 *
 * Layout: tiles run 8 at a time along a pooled row (a "tile vector": pooled row py, columns
 * px0 .. px0 + 7, POW rounded up to 8 per row), so that every step is a vector of 8 lanes:
 *  - the image's padded rows, split by column parity: t[c, r, 0, k] = x[c, r - ph, 2 k - pw],
 *    t[c, r, 1, k] = x[c, r - ph, 2 k + 1 - pw] (k <= POW8; 0 outside), so that patch column
 *    j of tile vector px0 is t[c, r, j % 2, px0 + j / 2 : +8];
 *  - for a group of nv <= 3 tile vectors, v[xi, c, 8 nv] = B^T d B (16 adds a channel);
 *  - per block of 4 filters and position xi, the 4 x 8 nv products sum_c u[., xi, c, r]
 *    v[xi, c, :] in 4 nv AVX2 accumulators (the direct kernel's 4x24 tile, K = C), kept in
 *    m[xi, r, 8 nv] (6 KiB), then A^T m A, the pool's max and f(. + b) as each is stored.
 * Float operations per output: the C channel sums in order (c = 0 first, one FMA each), then
 * the transforms in the order written below; the plain C loops do the same operations.
 *
 * Winograd turns one infinity into NaNs across its tile (inf - inf), where the direct sums
 * give +-inf: an image holding a non-finite value takes the direct kernel instead.
 */
#ifndef LNN_CONV_WINOGRAD_H
#define LNN_CONV_WINOGRAD_H

/* whether a layer can take it: 3x3, stride and dilation 1, a 2x2 / 2 unpadded pool of whole
 * windows after the identity or ReLU */
static int lnn_cw_fits(const lnn_conv_geom *g, const ptrdiff_t *pool, int act)
{
    return pool != NULL && pool[0] == 2 && pool[1] == 2 && pool[2] == 2 && pool[3] == 2 &&
           pool[4] == 0 && pool[5] == 0 && pool[6] >= 1 && pool[7] >= 1 &&
           2 * pool[6] <= g->oh && 2 * pool[7] <= g->ow && g->kh == 3 && g->kw == 3 &&
           g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 &&
           (act == LNN_IDENTITY || act == LNN_RELU);
}

/* the tile vectors a group takes when `left` are left: lnn_cd_tile_nv's rule (3, except
 * 2 + 2 for the last 4: fewer than 8 accumulators leave the FMA units idle) */
static inline int lnn_cw_nv(ptrdiff_t left)
{
    return left >= 3 && left != 4 ? 3 : left >= 2 ? 2 : 1;
}

/* POW rounded up to 8 */
static ptrdiff_t lnn_cw_pow8(const ptrdiff_t *pool) { return (pool[7] + 7) / 8 * 8; }

/* a t row's length per parity: POW8 + 1 used (the tiles' reads), POW8 + 8 kept (whole
 * vectors of 8 written) */
static ptrdiff_t lnn_cw_ks(const ptrdiff_t *pool) { return lnn_cw_pow8(pool) + 8; }

/* scratch (floats): t (C (2 POH + 2) 2 (POW8 + 8)), v (16 C 24), m (16 4 24), the canvas
 * pb ((2 POH + 2) (2 POW8 + 16)) */
static ptrdiff_t lnn_cw_scratch(const lnn_conv_geom *g, const ptrdiff_t *pool)
{
    const ptrdiff_t rows = 2 * pool[6] + 2;
    return g->c * rows * 2 * lnn_cw_ks(pool) + 16 * g->c * 24 + 16 * 4 * 24 +
           rows * (2 * lnn_cw_pow8(pool) + 16);
}

/* t from one image x (C, H, W); returns 0 if any x it reads is inf or NaN (plain C) */
static int lnn_cw_planes_c(const float *x, float *t, const lnn_conv_geom *g, const ptrdiff_t *pool)
{
    const ptrdiff_t rows = 2 * pool[6] + 2, ks = lnn_cw_ks(pool);
    uint32_t bad = 0;
    for (ptrdiff_t c = 0; c < g->c; c++) {
        const float *xc = x + c * g->h * g->w;
        for (ptrdiff_t r = 0; r < rows; r++) {
            float *e = t + (c * rows + r) * 2 * ks, *o = e + ks;
            const ptrdiff_t iy = r - g->ph;
            if (iy < 0 || iy >= g->h) {
                memset(e, 0, (size_t)(2 * ks) * sizeof(float));
                continue;
            }
            const float *xr = xc + iy * g->w;
            for (ptrdiff_t k = 0; k < ks; k++) {
                const ptrdiff_t ix = 2 * k - g->pw;
                e[k] = ix >= 0 && ix < g->w ? xr[ix] : 0.0f;
                o[k] = ix + 1 >= 0 && ix + 1 < g->w ? xr[ix + 1] : 0.0f;
            }
            for (ptrdiff_t k = 0; k < g->w; k++) { /* an exponent of all ones: inf or NaN */
                uint32_t bits;
                memcpy(&bits, xr + k, sizeof bits);
                bad |= (bits & 0x7f800000u) == 0x7f800000u;
            }
        }
    }
    return !bad;
}

#if LNN_CD_AVX2
/* lnn_cw_planes_c in AVX2. Per channel its rows are first copied into pb, a zeroed canvas of
 * the padded rows (pb[r, pw + k] = x[c, r - ph, k], 2 POW8 + 16 columns), then each canvas
 * row is split into even and odd columns 16 at a time (reading a row just stored would stall
 * on store forwarding: the canvas is written a channel ahead of its reads). */
__attribute__((target("avx2,fma"))) static int
lnn_cw_planes_avx2(const float *x, float *t, float *pb, const lnn_conv_geom *g,
                   const ptrdiff_t *pool)
{
    const ptrdiff_t rows = 2 * pool[6] + 2, ks = lnn_cw_ks(pool), used = lnn_cw_pow8(pool) + 1;
    const ptrdiff_t span = 2 * lnn_cw_pow8(pool) + 16; /* a canvas row; columns < 2 used read */
    const ptrdiff_t pw = g->pw < 2 * used ? g->pw : 2 * used;
    const ptrdiff_t copy = g->w < 2 * used - pw ? g->w : 2 * used - pw;
    const ptrdiff_t r0 = g->ph < rows ? g->ph : rows; /* canvas rows [r0, r1) hold x's rows */
    const ptrdiff_t r1 = g->ph + g->h < rows ? g->ph + g->h : rows;
    const __m256i expo = _mm256_set1_epi32(0x7f800000);
    __m256i bad = _mm256_setzero_si256();
    memset(pb, 0, (size_t)(rows * span) * sizeof(float));
    for (ptrdiff_t c = 0; c < g->c; c++) {
        const float *xc = x + c * g->h * g->w;
        for (ptrdiff_t r = r0; r < r1; r++) { /* the canvas, and inf / NaN seen */
            const float *xr = xc + (r - g->ph) * g->w;
            float *d = pb + r * span + pw;
            ptrdiff_t k = 0;
            for (;;) { /* 8 at a time, the last 8 overlapping the ones before */
                if (k + 8 > copy) break;
                const __m256 v = _mm256_loadu_ps(xr + k);
                _mm256_storeu_ps(d + k, v);
                bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(
                                               _mm256_and_si256(_mm256_castps_si256(v), expo), expo));
                if (k + 8 == copy) break;
                k = k + 16 <= copy ? k + 8 : copy - 8;
            }
            k = k + 8 <= copy ? copy : 0; /* below 8 columns: one by one */
            for (; k < g->w; k++) { /* inf / NaN in the columns past copy too */
                uint32_t bits;
                memcpy(&bits, xr + k, sizeof bits);
                if ((bits & 0x7f800000u) == 0x7f800000u) bad = _mm256_set1_epi32(-1);
                if (k < copy) d[k] = xr[k];
            }
        }
        for (ptrdiff_t r = 0; r < rows; r++) {
            float *e = t + (c * rows + r) * 2 * ks, *o = e + ks;
            const float *d = pb + r * span;
            for (ptrdiff_t k = 0; k < used; k += 8) {
                const __m256 a = _mm256_loadu_ps(d + 2 * k), b = _mm256_loadu_ps(d + 2 * k + 8);
                const __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
                const __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
                _mm256_storeu_ps(e + k, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xd8)));
                _mm256_storeu_ps(o + k, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xd8)));
            }
        }
    }
    return _mm256_testz_si256(bad, bad);
}
#endif

/* t from one image x (C, H, W); returns 0 if any x it reads is inf or NaN (t then unused) */
static int lnn_cw_planes(const float *x, float *t, float *pb, const lnn_conv_geom *g,
                         const ptrdiff_t *pool)
{
#if LNN_CD_AVX2
    if (lnn_cd_have_avx2()) return lnn_cw_planes_avx2(x, t, pb, g, pool);
#else
    (void)pb;
#endif
    return lnn_cw_planes_c(x, t, g, pool);
}

/* where tile vector tv starts: its pooled row and first column */
static inline void lnn_cw_tv(ptrdiff_t tv, ptrdiff_t per_row, ptrdiff_t *py, ptrdiff_t *px0)
{
    *py = tv / per_row;
    *px0 = tv % per_row * 8;
}

/* v[xi, c, 8 k + l] = (B^T d B)[xi] for lane l of tile vector k of the group (plain C) */
static void lnn_cw_input_c(const float *t, float *v, const lnn_conv_geom *g,
                           const ptrdiff_t *pool, ptrdiff_t tv0, int nv)
{
    const ptrdiff_t rows = 2 * pool[6] + 2, ks = lnn_cw_ks(pool), c_n = g->c;
    for (int k = 0; k < nv; k++) {
        ptrdiff_t py, px0;
        lnn_cw_tv(tv0 + k, lnn_cw_pow8(pool) / 8, &py, &px0);
        for (ptrdiff_t c = 0; c < c_n; c++) {
            const float *p = t + (c * rows + 2 * py) * 2 * ks + px0;
            for (int l = 0; l < 8; l++) {
                float w[4][4];
                for (int i = 0; i < 4; i++) {
                    const float *e = p + i * 2 * ks + l, *o = e + ks;
                    const float d0 = e[0], d1 = o[0], d2 = e[1], d3 = o[1];
                    w[i][0] = d0 - d2, w[i][1] = d1 + d2, w[i][2] = d2 - d1, w[i][3] = d1 - d3;
                }
                for (int j = 0; j < 4; j++) {
                    float *q = v + (j * c_n + c) * 24 + 8 * k + l;
                    q[0 * 4 * c_n * 24] = w[0][j] - w[2][j];
                    q[1 * 4 * c_n * 24] = w[1][j] + w[2][j];
                    q[2 * 4 * c_n * 24] = w[2][j] - w[1][j];
                    q[3 * 4 * c_n * 24] = w[1][j] - w[3][j];
                }
            }
        }
    }
}

/* m[xi, r, 8 k + l] = sum_c u[xi, c, r] v[xi, c, 8 k + l] (u: one block of 4 filters) */
static void lnn_cw_products_c(const float *u, const float *v, float *m, ptrdiff_t c_n, int nv)
{
    for (int xi = 0; xi < 16; xi++)
        for (int r = 0; r < 4; r++)
            for (int l = 0; l < 8 * nv; l++) {
                float s = 0.0f;
                for (ptrdiff_t c = 0; c < c_n; c++)
                    s = fmaf(u[(xi * c_n + c) * 4 + r], v[(xi * c_n + c) * 24 + l], s);
                m[(xi * 4 + r) * 24 + l] = s;
            }
}

/* one output of a tile from its 16 products mm[a][b] = m[(4 a + b) ...]: the pool's max of
 * A^T mm A, then the epilogue */
static inline float lnn_cw_out1(const float mm[4][4], lnn_cd_epi e)
{
    float s0[4], s1[4];
    for (int a = 0; a < 4; a++) {
        s0[a] = mm[a][0] + mm[a][1] + mm[a][2];
        s1[a] = mm[a][1] - mm[a][2] - mm[a][3];
    }
    const float y00 = s0[0] + s0[1] + s0[2], y10 = s0[1] - s0[2] - s0[3];
    const float y01 = s1[0] + s1[1] + s1[2], y11 = s1[1] - s1[2] - s1[3];
    const float m0 = y00 > y01 ? y00 : y01, m1 = y10 > y11 ? y10 : y11;
    return lnn_cd_epi1(m0 > m1 ? m0 : m1, e);
}

/* y[o, py, px0 + l] for the 4 filters of block ob and the group's tiles (plain C) */
static void lnn_cw_output_c(const float *m, const float *bias, int act, float *y,
                            const lnn_conv_geom *g, const ptrdiff_t *pool, ptrdiff_t ob,
                            ptrdiff_t tv0, int nv)
{
    const ptrdiff_t pp = pool[6] * pool[7];
    for (int r = 0; r < 4 && 4 * ob + r < g->o; r++) {
        const lnn_cd_epi e = lnn_cd_epilogue(bias, 4 * ob + r, act);
        for (int k = 0; k < nv; k++) {
            ptrdiff_t py, px0;
            lnn_cw_tv(tv0 + k, lnn_cw_pow8(pool) / 8, &py, &px0);
            float *yr = y + (4 * ob + r) * pp + py * pool[7] + px0;
            for (int l = 0; l < 8 && px0 + l < pool[7]; l++) {
                float mm[4][4];
                for (int xi = 0; xi < 16; xi++) mm[xi / 4][xi % 4] = m[(xi * 4 + r) * 24 + 8 * k + l];
                yr[l] = lnn_cw_out1(mm, e);
            }
        }
    }
}

#if LNN_CD_AVX2
__attribute__((target("avx2,fma"))) static void
lnn_cw_input_avx2(const float *t, float *v, const lnn_conv_geom *g, const ptrdiff_t *pool,
                  ptrdiff_t tv0, int nv)
{
    const ptrdiff_t rows = 2 * pool[6] + 2, ks = lnn_cw_ks(pool), c_n = g->c;
    const ptrdiff_t step = 4 * c_n * 24; /* from xi to xi + 4 */
    for (int k = 0; k < nv; k++) {
        ptrdiff_t py, px0;
        lnn_cw_tv(tv0 + k, lnn_cw_pow8(pool) / 8, &py, &px0);
        for (ptrdiff_t c = 0; c < c_n; c++) {
            const float *p = t + (c * rows + 2 * py) * 2 * ks + px0;
            __m256 w[4][4];
            for (int i = 0; i < 4; i++) {
                const float *e = p + i * 2 * ks, *o = e + ks;
                const __m256 d0 = _mm256_loadu_ps(e), d1 = _mm256_loadu_ps(o);
                const __m256 d2 = _mm256_loadu_ps(e + 1), d3 = _mm256_loadu_ps(o + 1);
                w[i][0] = _mm256_sub_ps(d0, d2), w[i][1] = _mm256_add_ps(d1, d2);
                w[i][2] = _mm256_sub_ps(d2, d1), w[i][3] = _mm256_sub_ps(d1, d3);
            }
            for (int j = 0; j < 4; j++) {
                float *q = v + (j * c_n + c) * 24 + 8 * k;
                _mm256_storeu_ps(q, _mm256_sub_ps(w[0][j], w[2][j]));
                _mm256_storeu_ps(q + step, _mm256_add_ps(w[1][j], w[2][j]));
                _mm256_storeu_ps(q + 2 * step, _mm256_sub_ps(w[2][j], w[1][j]));
                _mm256_storeu_ps(q + 3 * step, _mm256_sub_ps(w[1][j], w[3][j]));
            }
        }
    }
}

/* the products of lnn_cw_products_c, 4 x nv accumulators per position */
static inline __attribute__((always_inline, target("avx2,fma"))) void
lnn_cw_products_nv(const float *u, const float *v, float *m, ptrdiff_t c_n, const int nv)
{
    for (int xi = 0; xi < 16; xi++) {
        const float *uq = u + xi * c_n * 4, *vq = v + xi * c_n * 24;
        __m256 acc[4][3];
        for (int r = 0; r < 4; r++)
            for (int k = 0; k < nv; k++) acc[r][k] = _mm256_setzero_ps();
        for (ptrdiff_t c = 0; c < c_n; c++, uq += 4, vq += 24) {
            __m256 b[3];
            for (int k = 0; k < nv; k++) b[k] = _mm256_loadu_ps(vq + 8 * k);
            for (int r = 0; r < 4; r++) {
                const __m256 a = _mm256_broadcast_ss(uq + r);
                for (int k = 0; k < nv; k++) acc[r][k] = _mm256_fmadd_ps(a, b[k], acc[r][k]);
            }
        }
        for (int r = 0; r < 4; r++)
            for (int k = 0; k < nv; k++) _mm256_storeu_ps(m + (xi * 4 + r) * 24 + 8 * k, acc[r][k]);
    }
}

__attribute__((target("avx2,fma"))) static void
lnn_cw_products_avx2(const float *u, const float *v, float *m, ptrdiff_t c_n, int nv)
{
    if (nv == 3)
        lnn_cw_products_nv(u, v, m, c_n, 3);
    else if (nv == 2)
        lnn_cw_products_nv(u, v, m, c_n, 2);
    else
        lnn_cw_products_nv(u, v, m, c_n, 1);
}

__attribute__((target("avx2,fma"))) static void
lnn_cw_output_avx2(const float *m, const float *bias, int act, float *y,
                   const lnn_conv_geom *g, const ptrdiff_t *pool, ptrdiff_t ob, ptrdiff_t tv0,
                   int nv)
{
    const ptrdiff_t pp = pool[6] * pool[7], pw = pool[7];
    for (int r = 0; r < 4 && 4 * ob + r < g->o; r++) {
        const lnn_cd_epi e = lnn_cd_epilogue(bias, 4 * ob + r, act);
        for (int k = 0; k < nv; k++) {
            ptrdiff_t py, px0;
            lnn_cw_tv(tv0 + k, lnn_cw_pow8(pool) / 8, &py, &px0);
            const float *mq = m + r * 24 + 8 * k;
            __m256 s0[4], s1[4];
            for (int a = 0; a < 4; a++) {
                const __m256 m0 = _mm256_loadu_ps(mq + (4 * a + 0) * 96);
                const __m256 m1 = _mm256_loadu_ps(mq + (4 * a + 1) * 96);
                const __m256 m2 = _mm256_loadu_ps(mq + (4 * a + 2) * 96);
                const __m256 m3 = _mm256_loadu_ps(mq + (4 * a + 3) * 96);
                s0[a] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
                s1[a] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
            }
            const __m256 y00 = _mm256_add_ps(_mm256_add_ps(s0[0], s0[1]), s0[2]);
            const __m256 y10 = _mm256_sub_ps(_mm256_sub_ps(s0[1], s0[2]), s0[3]);
            const __m256 y01 = _mm256_add_ps(_mm256_add_ps(s1[0], s1[1]), s1[2]);
            const __m256 y11 = _mm256_sub_ps(_mm256_sub_ps(s1[1], s1[2]), s1[3]);
            /* max_ps(a, b) = a > b ? a : b, as lnn_cw_out1's */
            const __m256 mx = _mm256_max_ps(_mm256_max_ps(y00, y01), _mm256_max_ps(y10, y11));
            const __m256 out = lnn_cd_epi8(mx, e);
            float *yr = y + (4 * ob + r) * pp + py * pw + px0;
            const ptrdiff_t outs = pw - px0 < 8 ? pw - px0 : 8;
            /* lanes past the row that stay in this plane land on its later rows, stored
             * after this; a store past the plane goes through a buffer */
            if (outs == 8 || yr + 8 <= y + (4 * ob + r + 1) * pp) {
                _mm256_storeu_ps(yr, out);
            } else {
                float tail[8];
                _mm256_storeu_ps(tail, out);
                for (ptrdiff_t l = 0; l < outs; l++) yr[l] = tail[l];
            }
        }
    }
}
#endif

/* One image: y (O, POH POW) from x (C, H, W) with the Winograd filters u; s: scratch of
 * lnn_cw_scratch floats. Returns 0 (nothing written) if x holds an inf or NaN. */
static int lnn_cw_image(const float *x, const float *u, const float *bias, int act,
                        const lnn_conv_geom *g, const ptrdiff_t *pool, float *s, float *y)
{
    const ptrdiff_t rows = 2 * pool[6] + 2, ks = lnn_cw_ks(pool);
    float *t = s, *v = t + g->c * rows * 2 * ks, *m = v + 16 * g->c * 24;
    if (!lnn_cw_planes(x, t, m + 16 * 4 * 24, g, pool)) return 0;
    const ptrdiff_t tvs = pool[6] * (lnn_cw_pow8(pool) / 8), ob_n = (g->o + 3) / 4;
    const ptrdiff_t ublock = 16 * g->c * 4;
#if LNN_CD_AVX2
    const int avx2 = lnn_cd_have_avx2();
#endif
    for (ptrdiff_t tv0 = 0; tv0 < tvs;) {
        const int nv = lnn_cw_nv(tvs - tv0);
#if LNN_CD_AVX2
        if (avx2) {
            lnn_cw_input_avx2(t, v, g, pool, tv0, nv);
            for (ptrdiff_t ob = 0; ob < ob_n; ob++) {
                lnn_cw_products_avx2(u + ob * ublock, v, m, g->c, nv);
                lnn_cw_output_avx2(m, bias, act, y, g, pool, ob, tv0, nv);
            }
            tv0 += nv;
            continue;
        }
#endif
        lnn_cw_input_c(t, v, g, pool, tv0, nv);
        for (ptrdiff_t ob = 0; ob < ob_n; ob++) {
            lnn_cw_products_c(u + ob * ublock, v, m, g->c, nv);
            lnn_cw_output_c(m, bias, act, y, g, pool, ob, tv0, nv);
        }
        tv0 += nv;
    }
    return 1;
}

/* One image of a chain's layer: the Winograd tiling when the layer has filters u for it
 * and the image is finite, else the direct kernel (wp; s, z its scratch) */
static void lnn_cw_or_direct(const float *x, const float *wp, const float *u, const float *bias,
                             int act, const lnn_conv_geom *g, const ptrdiff_t *pool, float *s,
                             float *z, float *y)
{
    if (u != NULL && lnn_cw_fits(g, pool, act) && lnn_cw_image(x, u, bias, act, g, pool, s, y))
        return;
    lnn_cd_image(x, wp, bias, act, g, pool, s, z, y);
}

#endif /* LNN_CONV_WINOGRAD_H */
