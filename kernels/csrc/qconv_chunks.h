/* qconv_chunks.h -- an int8 convolution over a batch of images, the whole loop in C
 * (kernels/qgemm.pyx), so a thread's share of the runtime's int8 conv step is one call
 * without the GIL. Per image n:
 *
 *     scale, zp = its quantization: dynamic, from lo = min(0, min x[n]), hi = max(0, max x[n])
 *                 (as quantize_rows on x[n] as one row); static, the calibrated pair
 *     xq   = quantize(x[n])                          (C, H, W) uint8
 *     xt   = xq.transpose(1, 2, 0)                   (H, W, C) channels last (xq when C = 1)
 *     rows[p] = the window of xt under output pixel p, as (ky, kx, c); zp in the padding
 *                                                    (P, K = kh kw C) uint8
 *     out  = act(((rows - zp) @ Wq.T) * (scale w_scale) + b)   (P, F) float32, by qg_run
 *     y[n] = out.T  (F, P), or maxpool(out.T) (F, POH POW) when a pool is given
 *
 * Wq's columns are in the rows' (ky, kx, c) order: W.transpose(0, 2, 3, 1).reshape(F, K),
 * packed by pack_weights. Channels last makes each window row kw C contiguous bytes (with
 * dw = 1), and quantizing the image before unfolding it quantizes each pixel once, not kh kw
 * times. The padding's zero quantizes to zp exactly, so it adds nothing to the exact sum.
 * Threads call this with the same arguments and their own scratch (xq, xt, rows, out) and
 * claim `step` images at a time by atomically incrementing *counter; each image's result
 * depends on that image only. On AVX2 and up, a layer with few taps (K <= QC_DIRECT_K,
 * stride 1 along x) is summed directly instead (see "small K" below): the same bits, several
 * times faster for a first layer. The spec is ReferenceBackend.qconv2d_forward_chunks in
 * lepton_nn/backend/reference.py. Included after qgemm.h; nothing here checks its input.
 */
#ifndef LEPTON_QCONV_CHUNKS_H
#define LEPTON_QCONV_CHUNKS_H

#include <math.h>

typedef struct {
    ptrdiff_t n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, step;
} qc_geom;

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
/* the chunk index this thread takes: *counter, then incremented (atomic) */
static int64_t qc_claim(int64_t *counter)
{
    return _InterlockedExchangeAdd64((volatile __int64 *)counter, 1);
}
#else
static int64_t qc_claim(int64_t *counter) { return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED); }
#endif

/* rows (P, kh kw C) = every window of xt (H, W, C), zp where a window leaves the image */
static void qc_im2row(const uint8_t *xt, uint8_t *rows, uint8_t zp, const qc_geom *g)
{
    const ptrdiff_t C = g->c, W = g->w, run = g->kw * C;
    uint8_t *r = rows;
    for (ptrdiff_t oy = 0; oy < g->oh; oy++) {
        for (ptrdiff_t ox = 0; ox < g->ow; ox++) {
            for (ptrdiff_t ky = 0; ky < g->kh; ky++) {
                const ptrdiff_t iy = oy * g->sh - g->ph + ky * g->dh;
                if (iy < 0 || iy >= g->h) { /* NumPy: rows[p, ky] = zp  (a padding row) */
                    memset(r, zp, (size_t)run);
                    r += run;
                    continue;
                }
                const ptrdiff_t ix0 = ox * g->sw - g->pw;
                const uint8_t *src = xt + (iy * W) * C;
                if (g->dw == 1 && ix0 >= 0 && ix0 + g->kw <= W) {
                    /* NumPy: rows[p, ky] = xt[iy, ix0:ix0 + kw].ravel()  (kw C bytes) */
                    const uint8_t *s = src + ix0 * C;
                    for (ptrdiff_t t = 0; t < run; t++) r[t] = s[t];
                    r += run;
                    continue;
                }
                for (ptrdiff_t kx = 0; kx < g->kw; kx++, r += C) {
                    const ptrdiff_t ix = ix0 + kx * g->dw;
                    if (ix < 0 || ix >= W) { /* NumPy: rows[p, ky, kx] = zp */
                        for (ptrdiff_t t = 0; t < C; t++) r[t] = zp;
                    } else { /* NumPy: rows[p, ky, kx] = xt[iy, ix] */
                        for (ptrdiff_t t = 0; t < C; t++) r[t] = src[ix * C + t];
                    }
                }
            }
        }
    }
}

/* xt (hw, C) = xq (C, hw).T, 64 pixels at a time so that the block of xt being written
 * (64 C bytes) stays in L1 while each plane's run is read */
static void qc_channels_last(const uint8_t *restrict xq, uint8_t *restrict xt, ptrdiff_t C,
                             ptrdiff_t hw)
{
    for (ptrdiff_t q0 = 0; q0 < hw; q0 += 64) {
        const ptrdiff_t q1 = q0 + 64 < hw ? q0 + 64 : hw;
        for (ptrdiff_t c = 0; c < C; c++) {
            const uint8_t *src = xq + c * hw;
            for (ptrdiff_t q = q0; q < q1; q++) xt[q * C + c] = src[q];
        }
    }
}

/* y (F, P) = out.T for out (P, F), in 16 x 16 blocks so both sides stay in cache lines */
static void qc_transpose(const float *out, float *y, ptrdiff_t P, ptrdiff_t F)
{
    for (ptrdiff_t p0 = 0; p0 < P; p0 += 16) {
        const ptrdiff_t p1 = p0 + 16 < P ? p0 + 16 : P;
        for (ptrdiff_t f0 = 0; f0 < F; f0 += 16) {
            const ptrdiff_t f1 = f0 + 16 < F ? f0 + 16 : F;
            for (ptrdiff_t f = f0; f < f1; f++)
                for (ptrdiff_t p = p0; p < p1; p++) y[f * P + p] = out[p * F + f];
        }
    }
}

/* y (F, POH POW) = the max pool of F planes (oh, ow) held with strides: plane f's pixel q at
 * out[f fs + q ps] (fs = 1, ps = F: the GEMM's (P, F) channels last; fs = P, ps = 1: planes).
 * Each pooled cell is the max over its window (cells outside the plane are padding, -inf),
 * taken for 64 planes at a time. pool: (kh, kw, sh, sw, ph, pw, POH, POW). */
static void qc_maxpool(const float *out, ptrdiff_t fs, ptrdiff_t ps, float *y, ptrdiff_t F,
                       ptrdiff_t oh, ptrdiff_t ow, const ptrdiff_t *pool)
{
    const ptrdiff_t poh = pool[6], pow_ = pool[7], pp = poh * pow_;
    float best[64];
    for (ptrdiff_t py = 0; py < poh; py++) {
        for (ptrdiff_t px = 0; px < pow_; px++) {
            for (ptrdiff_t f0 = 0; f0 < F; f0 += 64) {
                const ptrdiff_t nf = F - f0 < 64 ? F - f0 : 64;
                for (ptrdiff_t f = 0; f < nf; f++) best[f] = -INFINITY;
                for (ptrdiff_t i = 0; i < pool[0]; i++) {
                    const ptrdiff_t iy = py * pool[2] - pool[4] + i;
                    if (iy < 0 || iy >= oh) continue;
                    for (ptrdiff_t j = 0; j < pool[1]; j++) {
                        const ptrdiff_t ix = px * pool[3] - pool[5] + j;
                        if (ix < 0 || ix >= ow) continue;
                        /* NumPy: best = np.maximum(best, planes[f0:f0 + nf, iy, ix]) */
                        const float *o = out + (iy * ow + ix) * ps + f0 * fs;
                        if (fs == 1) /* contiguous: a vector loop */
                            for (ptrdiff_t f = 0; f < nf; f++) best[f] = o[f] > best[f] ? o[f] : best[f];
                        else
                            for (ptrdiff_t f = 0; f < nf; f++)
                                best[f] = o[f * fs] > best[f] ? o[f * fs] : best[f];
                    }
                }
                /* NumPy: y[f0:f0 + nf, py * POW + px] = best */
                for (ptrdiff_t f = 0; f < nf; f++) y[(f0 + f) * pp + py * pow_ + px] = best[f];
            }
        }
    }
}

/* ---------------------------------------------------------------- small K: direct, in float
 * A layer with few taps (C kh kw <= QC_DIRECT_K, stride 1 along x), such as a first 3x3 layer
 * on gray images (K = 9), gives the int8 GEMM rows too short to pay for unfolding them and for
 * the (P, F) result's transpose. On AVX2 and up such a layer is summed tap by tap instead, over
 * a zero-padded float canvas of the image, v = xq - zp (C, CH, CW) (zero is the padding's value):
 *
 *     acc[f, oy, ox] = sum over (ky, kx, c) of Wq[f, ky, kx, c] v[c, oy sh + ky dh, ox + kx dw]
 *
 * 16 (AVX-512) or 8 (AVX2) pixels of a row by 8 filters at a time, with the vector width of
 * the active int8 GEMM. Each product and partial sum is an integer of magnitude <= K 255 128
 * < 2^24, so float32 holds the sum exactly in any order: acc is the GEMM's int32 sum, and the
 * epilogue act(acc (scale ws[f]) + b[f]) is the GEMM's (qg_epi512 / qg_epi256), so both paths
 * give the same bits. The result is (F, P) as y wants it; a 2x2 max pool is then taken by
 * vector permutes. */
#ifndef QC_DIRECT_K
#define QC_DIRECT_K 64 /* measured: the GEMM wins from about K = 72 (C = 8, 3x3) */
#endif
#if QC_DIRECT_K > 514
#error "QC_DIRECT_K > 514: K 255 128 would pass 2^24 and the float sums would round"
#endif
#define QC_FB 8 /* filters per block: 8 accumulators */

/* the canvas's rows and columns: the padded image, grown to the last window if need be */
static ptrdiff_t qc_canvas_h(const qc_geom *g)
{
    const ptrdiff_t need = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
    return g->ph + g->h > need ? g->ph + g->h : need;
}
static ptrdiff_t qc_canvas_w(const qc_geom *g)
{
    const ptrdiff_t need = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;
    return g->pw + g->w > need ? g->pw + g->w : need;
}

typedef void (*qc_direct_fn)(const float *cv, const float *wf, const qg_args *w, float s,
                             float *dst, const qc_geom *g, ptrdiff_t CH, ptrdiff_t CW);
typedef void (*qc_pool2x2_fn)(const float *x, float *y, ptrdiff_t F, ptrdiff_t oh, ptrdiff_t ow);

/* wf (F rounded up to 8, K) as (F / 8, K, 8) floats, from the packed int8 weights:
 * wf[f / 8, k, f % 8] = Wq[f, k] = b[f / 16, k / 4, 4 (f % 16) + k % 4]; 0 past F */
LA_UNUSED static void qc_unpack_float(const qg_args *w, float *wf)
{
    const ptrdiff_t K = w->K, F = w->N, Kp = (K + 3) & ~(ptrdiff_t)3;
    const ptrdiff_t F8 = (F + QC_FB - 1) / QC_FB * QC_FB;
    for (ptrdiff_t f = 0; f < F8; f++)
        for (ptrdiff_t k = 0; k < K; k++)
            wf[((f / QC_FB) * K + k) * QC_FB + f % QC_FB] =
                f < F ? (float)w->b[(f / 16) * 16 * Kp + (k / 4) * 64 + 4 * (f % 16) + k % 4] : 0.0f;
}

/* cv[c, ph + iy, pw + ix] = xq[c, iy, ix] - zp; the rest of the canvas stays 0 */
LA_UNUSED static void qc_fill_canvas(const uint8_t *xq, int32_t zp, float *cv,
                                     const qc_geom *g, ptrdiff_t CH, ptrdiff_t CW)
{
    for (ptrdiff_t c = 0; c < g->c; c++)
        for (ptrdiff_t iy = 0; iy < g->h; iy++) {
            const uint8_t *src = xq + (c * g->h + iy) * g->w;
            float *dst = cv + (c * CH + g->ph + iy) * CW + g->pw;
            for (ptrdiff_t ix = 0; ix < g->w; ix++) dst[ix] = (float)((int32_t)src[ix] - zp);
        }
}

#if LA_X86
/* qc_direct512 / qc_direct256: dst (F, oh, ow) = act(conv(canvas) (s ws) + b), the epilogue
 * of the int8 GEMM of the same width (qg_epi512 / qg_epi256) */
#define QCD_NAME qc_direct512
#define QCD_TARGET "avx512f"
#define QCD_W 16
#define QCD_VEC __m512
#define QCD_MASK_T __mmask16
#define QCD_MASK(n) ((__mmask16)((n) >= 16 ? 0xFFFFu : (1u << (n)) - 1u))
#define QCD_LOAD(k, p) _mm512_maskz_loadu_ps(k, p)
#define QCD_STORE(p, k, v) _mm512_mask_storeu_ps(p, k, v)
#define QCD_SET1 _mm512_set1_ps
#define QCD_FMA _mm512_fmadd_ps
#define QCD_ACT la_act512
#include "qconv_direct.h"

/* NumPy: dst[:n] = v[:n], n <= 8, a whole store when n == 8 */
static inline __attribute__((target("avx2,fma"), always_inline)) void
qc_store256(float *dst, ptrdiff_t n, __m256 v)
{
    if (n == 8) {
        _mm256_storeu_ps(dst, v);
        return;
    }
    float buf[8];
    _mm256_storeu_ps(buf, v);
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = buf[i];
}

#define QCD_NAME qc_direct256
#define QCD_TARGET "avx2,fma"
#define QCD_W 8
#define QCD_VEC __m256
/* No masked loads or stores here: AMD's vmaskmovps is microcoded. The "mask" is the count
 * of pixels n; a load reads 8 whole floats (the lanes past the row's end read the next row or,
 * at most 7 floats past the canvas, its weights wf, allocated after it: they only feed
 * outputs never stored); a store of n < 8 goes through a buffer. */
#define QCD_MASK_T ptrdiff_t
#define QCD_MASK(n) (n)
#define QCD_LOAD(k, p) _mm256_loadu_ps(p)
#define QCD_STORE(p, k, v) qc_store256(p, k, v)
#define QCD_SET1 _mm256_set1_ps
#define QCD_FMA _mm256_fmadd_ps
#define QCD_ACT la_act256
#include "qconv_direct.h"

/* y (F, oh / 2, ow / 2) = the 2x2, stride 2 max pool of x (F, oh, ow): per output row, the
 * two input rows' 32-float spans deinterleaved by permutes into the four corners, then max */
__attribute__((target("avx512f"))) static void qc_pool2x2_512(const float *x, float *y,
                                                              ptrdiff_t F, ptrdiff_t oh,
                                                              ptrdiff_t ow)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const ptrdiff_t poh = oh / 2, pow_ = ow / 2;
    for (ptrdiff_t f = 0; f < F; f++)
        for (ptrdiff_t py = 0; py < poh; py++) {
            const float *r0 = x + (f * oh + 2 * py) * ow, *r1 = r0 + ow;
            float *yr = y + (f * poh + py) * pow_;
            for (ptrdiff_t px0 = 0; px0 < pow_; px0 += 16) {
                const ptrdiff_t n2 = 2 * (pow_ - px0 < 16 ? pow_ - px0 : 16);
                const __mmask16 lo = (__mmask16)(n2 >= 16 ? 0xFFFFu : (1u << n2) - 1u);
                const __mmask16 hi = (__mmask16)(n2 > 16 ? (1u << (n2 - 16)) - 1u : 0u);
                const float *a0 = r0 + 2 * px0, *a1 = r1 + 2 * px0;
                const __m512 r00 = _mm512_maskz_loadu_ps(lo, a0), r01 = _mm512_maskz_loadu_ps(hi, a0 + 16);
                const __m512 r10 = _mm512_maskz_loadu_ps(lo, a1), r11 = _mm512_maskz_loadu_ps(hi, a1 + 16);
                /* NumPy: y[f, py, px] = max(x[f, 2py:2py+2, 2px:2px+2]) */
                const __m512 top = _mm512_max_ps(_mm512_permutex2var_ps(r00, even, r01),
                                                 _mm512_permutex2var_ps(r00, odd, r01));
                const __m512 bot = _mm512_max_ps(_mm512_permutex2var_ps(r10, even, r11),
                                                 _mm512_permutex2var_ps(r10, odd, r11));
                const __mmask16 out = (__mmask16)(n2 == 32 ? 0xFFFFu : (1u << (n2 / 2)) - 1u);
                _mm512_mask_storeu_ps(yr + px0, out, _mm512_max_ps(top, bot));
            }
        }
}

/* the same with 256-bit vectors: shuffles take the even and odd floats within each 128-bit
 * lane, and one 64-bit permute puts the pooled pairs back in order */
__attribute__((target("avx2,fma"))) static void qc_pool2x2_256(const float *x, float *y,
                                                               ptrdiff_t F, ptrdiff_t oh,
                                                               ptrdiff_t ow)
{
    const ptrdiff_t poh = oh / 2, pow_ = ow / 2;
    float t0[16] = {0}, t1[16] = {0}; /* a row's last 2n < 16 columns, zero padded */
    for (ptrdiff_t f = 0; f < F; f++)
        for (ptrdiff_t py = 0; py < poh; py++) {
            const float *r0 = x + (f * oh + 2 * py) * ow, *r1 = r0 + ow;
            float *yr = y + (f * poh + py) * pow_;
            for (ptrdiff_t px0 = 0; px0 < pow_; px0 += 8) {
                const ptrdiff_t n = pow_ - px0 < 8 ? pow_ - px0 : 8;
                const float *a0 = r0 + 2 * px0, *a1 = r1 + 2 * px0;
                if (n < 8) { /* NumPy: t0[:2n], t1[:2n] = r0, r1[2px0 : 2px0 + 2n] (no masked
                              * loads: AMD's vmaskmovps is microcoded; x has no slack) */
                    for (ptrdiff_t i = 0; i < 2 * n; i++) {
                        t0[i] = a0[i];
                        t1[i] = a1[i];
                    }
                    a0 = t0;
                    a1 = t1;
                }
                const __m256 r00 = _mm256_loadu_ps(a0), r01 = _mm256_loadu_ps(a0 + 8);
                const __m256 r10 = _mm256_loadu_ps(a1), r11 = _mm256_loadu_ps(a1 + 8);
                /* NumPy: y[f, py, px] = max(x[f, 2py:2py+2, 2px:2px+2]); lanes in the order
                 * px = 0 1 4 5 2 3 6 7 until the permute */
                const __m256 top = _mm256_max_ps(_mm256_shuffle_ps(r00, r01, 0x88),
                                                 _mm256_shuffle_ps(r00, r01, 0xDD));
                const __m256 bot = _mm256_max_ps(_mm256_shuffle_ps(r10, r11, 0x88),
                                                 _mm256_shuffle_ps(r10, r11, 0xDD));
                const __m256d m = _mm256_castps_pd(_mm256_max_ps(top, bot));
                /* NumPy: yr[px0 : px0 + n] = the first n lanes */
                qc_store256(yr + px0, n, _mm256_castpd_ps(_mm256_permute4x64_pd(m, 0xD8)));
            }
        }
}

/* the direct path's kernels for this layer on the active ISA (the GEMM's vector width), or 0 */
static qc_direct_fn qc_direct_pick(const qc_geom *g, qc_pool2x2_fn *pool)
{
    if (g->kh * g->kw * g->c > QC_DIRECT_K || g->sw != 1) return 0;
    if (qg_active == QG_AVX512VNNI || qg_active == QG_AMX) {
        *pool = qc_pool2x2_512;
        return qc_direct512;
    }
    if (qg_active == QG_AVX2 || qg_active == QG_AVXVNNI) {
        *pool = qc_pool2x2_256;
        return qc_direct256;
    }
    return 0;
}
#endif

/* x (n, c, h, w) float32 -> y (n, F, P) or, with pool, (n, F, POH POW). w: the weights'
 * fields of a qg_args (b, N = F, K, ws, cs, bias, act); the rest is set per image. fixed:
 * static activations with (scale, zp); else each image's pair is computed. Scratch: xq
 * (c h w), xt (h w c), rows (P, K) uint8; out (P, F) float32. Returns 0, or -1 when the direct
 * path's canvas (nothing done then) or an image's product's scratch (qg_run; that image and
 * those after it in this task not written) could not be allocated. */
static int qc_conv_chunks(const float *x, const qg_args *w, int fixed, float scale, int32_t zp,
                          const ptrdiff_t *pool, uint8_t *xq, uint8_t *xt, uint8_t *rows,
                          float *out, float *y, int64_t *counter, const qc_geom *g)
{
    const ptrdiff_t img = g->c * g->h * g->w, hw = g->h * g->w, P = g->oh * g->ow, F = w->N;
    const ptrdiff_t ysize = F * (pool ? pool[6] * pool[7] : P);
    qc_direct_fn direct = 0;
    qc_pool2x2_fn pool2x2 = 0;
#if LA_X86
    direct = qc_direct_pick(g, &pool2x2);
#endif
    const ptrdiff_t CH = qc_canvas_h(g), CW = qc_canvas_w(g), canvas = g->c * CH * CW;
    float *cv = NULL, *wf = NULL;
    if (direct) { /* the zeroed canvas, then the float weights (qc_direct256's slack) */
        const ptrdiff_t F8 = (F + QC_FB - 1) / QC_FB * QC_FB;
        cv = (float *)qg_amalloc((size_t)(canvas + F8 * w->K) * sizeof(float));
        if (!cv) return -1;
        memset(cv, 0, (size_t)canvas * sizeof(float));
        wf = cv + canvas;
        qc_unpack_float(w, wf);
    }
    if (!(pool && pool[0] == 2 && pool[1] == 2 && pool[2] == 2 && pool[3] == 2 && pool[4] == 0 &&
          pool[5] == 0 && pool[6] == g->oh / 2 && pool[7] == g->ow / 2))
        pool2x2 = 0; /* not a plain 2x2 pool: the general loop */
    qg_args p = *w;
    p.a = rows;
    p.M = P;
    p.a_signed = 0;
    p.xs_step = 0;
    p.zp_step = 0;
    p.outf = out;
    p.outi = NULL;
    for (;;) {
        const ptrdiff_t n0 = (ptrdiff_t)qc_claim(counter) * g->step;
        if (n0 >= g->n) break;
        const ptrdiff_t n1 = g->n - n0 < g->step ? g->n : n0 + g->step;
        for (ptrdiff_t n = n0; n < n1; n++) {
            float s = scale;
            int32_t z = zp;
            float *yn = y + n * ysize;
            /* NumPy: xq = quantize_rows(x[n].reshape(1, -1), ...)  (one pair for the image) */
            qg_quantize_u8(x + n * img, 1, img, 0, fixed, xq, &s, &z);
            if (direct) {
                qc_fill_canvas(xq, z, cv, g, CH, CW);
                direct(cv, wf, w, s, pool ? out : yn, g, CH, CW);
                if (pool2x2) /* NumPy: y[n] = maxpool2d(out.reshape(F, oh, ow), 2) */
                    pool2x2(out, yn, F, g->oh, g->ow);
                else if (pool)
                    qc_maxpool(out, P, 1, yn, F, g->oh, g->ow, pool);
                continue;
            }
            const uint8_t *src = xq;
            if (g->c > 1) { /* NumPy: xt = xq.reshape(c, h, w).transpose(1, 2, 0) */
                qc_channels_last(xq, xt, g->c, hw);
                src = xt;
            }
            qc_im2row(src, rows, (uint8_t)z, g);
            /* NumPy: out = qlinear(rows, s, z, w_packed, w_scale, w_col_sums, b, act) */
            p.xs = &s;
            p.zp = &z;
            if (qg_run(&p, 1) != 0) { /* no scratch for the product: y[n] not written */
                qg_afree(cv);
                return -1;
            }
            if (pool) /* NumPy: y[n] = maxpool2d(out.T.reshape(F, oh, ow)) */
                qc_maxpool(out, 1, F, yn, F, g->oh, g->ow, pool);
            else /* NumPy: y[n] = out.T */
                qc_transpose(out, yn, P, F);
        }
    }
    qg_afree(cv);
    return 0;
}

#endif /* LEPTON_QCONV_CHUNKS_H */
