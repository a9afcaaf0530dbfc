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
 * depends on that image only. The spec is ReferenceBackend.qconv2d_forward_chunks in
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

/* y (F, POH POW) = maxpool(out.T) for out (P = oh ow, F) channels last: each pooled cell is
 * the max over its window (cells outside the (oh, ow) plane are padding, -inf), taken over
 * 64 channels at a time as contiguous vectors. pool: (kh, kw, sh, sw, ph, pw, POH, POW). */
static void qc_maxpool_t(const float *out, float *y, ptrdiff_t F, ptrdiff_t oh, ptrdiff_t ow,
                         const ptrdiff_t *pool)
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
                        /* NumPy: best = np.maximum(best, out[iy * ow + ix, f0:f0 + nf]) */
                        const float *o = out + (iy * ow + ix) * F + f0;
                        for (ptrdiff_t f = 0; f < nf; f++) best[f] = o[f] > best[f] ? o[f] : best[f];
                    }
                }
                /* NumPy: y[f0:f0 + nf, py * POW + px] = best */
                for (ptrdiff_t f = 0; f < nf; f++) y[(f0 + f) * pp + py * pow_ + px] = best[f];
            }
        }
    }
}

/* x (n, c, h, w) float32 -> y (n, F, P) or, with pool, (n, F, POH POW). w: the weights'
 * fields of a qg_args (b, N = F, K, ws, cs, bias, act); the rest is set per image. fixed:
 * static activations with (scale, zp); else each image's pair is computed. Scratch: xq
 * (c h w), xt (h w c), rows (P, K) uint8; out (P, F) float32. */
static void qc_conv_chunks(const float *x, const qg_args *w, int fixed, float scale, int32_t zp,
                           const ptrdiff_t *pool, uint8_t *xq, uint8_t *xt, uint8_t *rows,
                           float *out, float *y, int64_t *counter, const qc_geom *g)
{
    const ptrdiff_t img = g->c * g->h * g->w, hw = g->h * g->w, P = g->oh * g->ow, F = w->N;
    const ptrdiff_t ysize = F * (pool ? pool[6] * pool[7] : P);
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
        if (n0 >= g->n) return;
        const ptrdiff_t n1 = g->n - n0 < g->step ? g->n : n0 + g->step;
        for (ptrdiff_t n = n0; n < n1; n++) {
            float s = scale;
            int32_t z = zp;
            /* NumPy: xq = quantize_rows(x[n].reshape(1, -1), ...)  (one pair for the image) */
            qg_quantize_u8(x + n * img, 1, img, 0, fixed, xq, &s, &z);
            const uint8_t *src = xq;
            if (g->c > 1) { /* NumPy: xt = xq.reshape(c, h, w).transpose(1, 2, 0) */
                for (ptrdiff_t c = 0; c < g->c; c++)
                    for (ptrdiff_t q = 0; q < hw; q++) xt[q * g->c + c] = xq[c * hw + q];
                src = xt;
            }
            qc_im2row(src, rows, (uint8_t)z, g);
            /* NumPy: out = qlinear(rows, s, z, w_packed, w_scale, w_col_sums, b, act) */
            p.xs = &s;
            p.zp = &z;
            qg_run(&p, 1);
            if (pool) /* NumPy: y[n] = maxpool2d(out.T.reshape(F, oh, ow)) */
                qc_maxpool_t(out, y + n * ysize, F, g->oh, g->ow, pool);
            else /* NumPy: y[n] = out.T */
                qc_transpose(out, y + n * ysize, P, F);
        }
    }
}

#endif /* LEPTON_QCONV_CHUNKS_H */
