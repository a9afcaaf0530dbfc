/* conv_chunks.h: a convolution's forward and backward passes over chunks of images, the
 * whole loop in C (kernels/conv.pyx), so a thread's share of an op is one call without the GIL.
 *
 *   lnn_conv_fwd_chunks_*   per chunk [n0, n1) of images:
 *                               cols = im2col(x[n0:n1])                  (nc, K, P)
 *                               z[n] = W2 @ cols[n - n0]                 (O, P) each
 *                               y[n0:n1] = f(z[n0:n1] + b)               one bias_act pass
 *   lnn_conv_bwd_chunks_*   per chunk i = [n0, n1):
 *                               gz = gy f'(z) and gb_parts[i] = gz summed over (n, p)
 *                               gw_parts[i] = sum_n cols[n] @ gz[n]^T    (K, O), beta = 1 GEMMs
 *                               gx[n0:n1] = col2im(W2^T @ gz[n])
 *
 * K = C kh kw, P = OH OW. The spec is the Python loop of the same name in
 * lepton_nn/backend/reference.py (ReferenceBackend.conv2d_forward_chunks / _backward), which
 * calls np.matmul where this calls the BLAS GEMM NumPy itself uses: the op's threads each call
 * the kernel with the same arguments and their own scratch (cols, gz_ws, gcols), and claim
 * chunk i by atomically incrementing *counter until i * step >= n. Results depend on the
 * chunking, never on which thread ran a chunk.
 *
 * The GEMM is cblas_?gemm (row-major) at an address set once by lnn_set_gemm from Python,
 * which found it in NumPy's OpenBLAS; its integer arguments are 32- or 64-bit (ILP64, the
 * "64_" symbols NumPy's wheels export). Until an address is set, the kernels are not called.
 */
#ifndef LNN_CONV_CHUNKS_TEMPLATE

#ifndef LNN_CONV_CHUNKS_H
#define LNN_CONV_CHUNKS_H

#include "conv.h"
#if defined(__GNUC__)
/* dense.h brings its other kernels along, unused in this module */
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include "dense.h"

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
/* the chunk index this thread takes: *counter, then incremented (atomic) */
static int64_t lnn_claim(int64_t *counter)
{
    return _InterlockedExchangeAdd64((volatile __int64 *)counter, 1);
}
#else
static int64_t lnn_claim(int64_t *counter)
{
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}
#endif

enum { LNN_CBLAS_ROW_MAJOR = 101, LNN_CBLAS_NO_TRANS = 111, LNN_CBLAS_TRANS = 112 };

static void *lnn_sgemm_addr = NULL, *lnn_dgemm_addr = NULL;
static int lnn_gemm_ilp64 = 0;

static void lnn_set_gemm(void *sgemm, void *dgemm, int ilp64)
{
    lnn_sgemm_addr = sgemm;
    lnn_dgemm_addr = dgemm;
    lnn_gemm_ilp64 = ilp64;
}

/* The geometry both passes share: x (n, c, h, w), W2 (o, k = c kh kw), outputs (n, o, oh ow). */
typedef struct {
    ptrdiff_t n, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, step;
} lnn_conv_geom;

/* A 1x1, stride-1, unpadded convolution needs no im2col: x[n] is already cols[n]. */
static int lnn_conv_unfolds(const lnn_conv_geom *g)
{
    return !(g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 &&
             g->ph == 0 && g->pw == 0 && g->oh == g->h && g->ow == g->w);
}

#define T float
#define LNN_CNAME(name) name##_f32
#define LNN_GEMM_ADDR lnn_sgemm_addr
#define LNN_CONV_CHUNKS_TEMPLATE
#include "conv_chunks.h"
#undef LNN_CONV_CHUNKS_TEMPLATE
#undef T
#undef LNN_CNAME
#undef LNN_GEMM_ADDR

#define T double
#define LNN_CNAME(name) name##_f64
#define LNN_GEMM_ADDR lnn_dgemm_addr
#define LNN_CONV_CHUNKS_TEMPLATE
#include "conv_chunks.h"
#undef LNN_CONV_CHUNKS_TEMPLATE
#undef T
#undef LNN_CNAME
#undef LNN_GEMM_ADDR

#endif /* LNN_CONV_CHUNKS_H */

#else /* template part: T, LNN_CNAME, LNN_GEMM_ADDR */

/* cblas_?gemm's signature with 64-bit (ILP64) or 32-bit integer arguments */
typedef void (*LNN_CNAME(lnn_gemm64_t))(int, int, int, int64_t, int64_t, int64_t, T, const T *,
                                        int64_t, const T *, int64_t, T, T *, int64_t);
typedef void (*LNN_CNAME(lnn_gemm32_t))(int, int, int, int32_t, int32_t, int32_t, T, const T *,
                                        int32_t, const T *, int32_t, T, T *, int32_t);

/* c = a @ b + beta c, row-major; ta/tb: a/b read transposed. Sizes fit in 32 bits (checked
 * by the caller when the BLAS takes 32-bit integers). */
static void LNN_CNAME(lnn_gemm)(int ta, int tb, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *a,
                                ptrdiff_t lda, const T *b, ptrdiff_t ldb, T beta, T *c,
                                ptrdiff_t ldc)
{
    const int oa = ta ? LNN_CBLAS_TRANS : LNN_CBLAS_NO_TRANS;
    const int ob = tb ? LNN_CBLAS_TRANS : LNN_CBLAS_NO_TRANS;
    if (lnn_gemm_ilp64)
        ((LNN_CNAME(lnn_gemm64_t))LNN_GEMM_ADDR)(LNN_CBLAS_ROW_MAJOR, oa, ob, m, n, k, (T)1, a,
                                                 lda, b, ldb, beta, c, ldc);
    else
        ((LNN_CNAME(lnn_gemm32_t))LNN_GEMM_ADDR)(LNN_CBLAS_ROW_MAJOR, oa, ob, (int32_t)m,
                                                 (int32_t)n, (int32_t)k, (T)1, a, (int32_t)lda,
                                                 b, (int32_t)ldb, beta, c, (int32_t)ldc);
}

/* zc[0:nc] = w2 @ im2col(x[n0:n0+nc]) then f(. + b) in place: one chunk's convolution, its
 * output (nc, o, p) written to zc. cols: scratch (nc, k, p), unused by a 1x1 convolution. */
static void LNN_CNAME(lnn_conv_fwd_chunk)(const T *x, const T *w2, const T *bias, int act,
                                          T *zc, T *y, T *cols, ptrdiff_t n0, ptrdiff_t nc,
                                          const lnn_conv_geom *g)
{
    const ptrdiff_t k = g->c * g->kh * g->kw, p = g->oh * g->ow;
    const T *cc = x + n0 * g->c * g->h * g->w;
    if (lnn_conv_unfolds(g)) { /* cols = im2col(x[n0:n1]) */
        LNN_CNAME(lnn_im2col)(cc, cols, nc * g->c, g->h, g->w, g->kh, g->kw, g->oh, g->ow,
                              g->sh, g->sw, g->ph, g->pw, g->dh, g->dw);
        cc = cols;
    }
    for (ptrdiff_t j = 0; j < nc; j++) /* z[j] = w2 @ cols[j] */
        LNN_CNAME(lnn_gemm)(0, 0, g->o, p, k, w2, k, cc + j * k * p, p, (T)0, zc + j * g->o * p,
                            p);
    if (bias != NULL || act != LNN_IDENTITY) /* y = f(z + b[:, None]), y may be z */
        LNN_CNAME(lnn_bias_act_forward)(zc, bias, act, y, nc, g->o, p);
}

/* Chunk i's weight and input gradients from its G_Z (nc, o, p): gw_parts[i] = sum_j cols[j]
 * @ gz[j].T (through gzt = gz[j].T when given), gx[n0:n0+nc] = col2im(w2.T @ gz[j]). */
static void LNN_CNAME(lnn_conv_bwd_chunk_grads)(const T *x, const T *w2, const T *gz, T *gx,
                                                T *gw_parts, T *cols, T *gcols, T *gzt,
                                                ptrdiff_t i, ptrdiff_t n0, ptrdiff_t nc,
                                                const lnn_conv_geom *g)
{
    const ptrdiff_t o = g->o, k = g->c * g->kh * g->kw, p = g->oh * g->ow;
    const ptrdiff_t img = g->c * g->h * g->w;
    const int unfold = lnn_conv_unfolds(g);
    if (gw_parts) {
        const T *cc = x + n0 * img;
        if (unfold) { /* cols = im2col(x[n0:n1]) */
            LNN_CNAME(lnn_im2col)(cc, cols, nc * g->c, g->h, g->w, g->kh, g->kw, g->oh, g->ow,
                                  g->sh, g->sw, g->ph, g->pw, g->dh, g->dw);
            cc = cols;
        }
        T *part = gw_parts + i * k * o;
        for (ptrdiff_t j = 0; j < nc; j++) { /* part (+)= cols[j] @ gz[j].T */
            const T *gzj = gz + j * o * p;
            if (gzt) { /* gzt = gz[j].T, then the GEMM reads both operands untransposed */
                for (ptrdiff_t a = 0; a < o; a++)
                    for (ptrdiff_t q = 0; q < p; q++) gzt[q * o + a] = gzj[a * p + q];
                LNN_CNAME(lnn_gemm)(0, 0, k, o, p, cc + j * k * p, p, gzt, o, j ? (T)1 : (T)0,
                                    part, o);
            } else {
                LNN_CNAME(lnn_gemm)(0, 1, k, o, p, cc + j * k * p, p, gzj, p, j ? (T)1 : (T)0,
                                    part, o);
            }
        }
    }
    if (gx) {
        /* gcols[j] = w2.T @ gz[j]; a 1x1 convolution writes gx[n] itself */
        T *gc = unfold ? gcols : gx + n0 * img;
        for (ptrdiff_t j = 0; j < nc; j++)
            LNN_CNAME(lnn_gemm)(1, 0, k, p, o, w2, k, gz + j * o * p, p, (T)0, gc + j * k * p, p);
        if (unfold) /* gx[n0:n1] = col2im(gcols) */
            LNN_CNAME(lnn_col2im)(gcols, gx + n0 * img, nc * g->c, g->h, g->w, g->kh, g->kw,
                                  g->oh, g->ow, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw);
    }
}

/* The chunk [n0, n0 + nc) this thread claims next (chunk index returned), or -1 when none
 * is left. */
static ptrdiff_t LNN_CNAME(lnn_next_chunk)(int64_t *counter, const lnn_conv_geom *g,
                                           ptrdiff_t *n0, ptrdiff_t *nc)
{
    const ptrdiff_t i = (ptrdiff_t)lnn_claim(counter);
    *n0 = i * g->step;
    if (*n0 >= g->n) return -1;
    *nc = g->n - *n0 < g->step ? g->n - *n0 : g->step;
    return i;
}

/* z, y (n, o, p): y = f(z + b), y is z unless the activation needs z kept (gelu); bias may
 * be NULL; cols (step, k, p) is this thread's scratch. */
static void LNN_CNAME(lnn_conv_fwd_chunks)(const T *x, const T *w2, const T *bias, int act, T *z,
                                           T *y, T *cols, int64_t *counter,
                                           const lnn_conv_geom *g)
{
    const ptrdiff_t op = g->o * g->oh * g->ow;
    ptrdiff_t n0, nc;
    while (LNN_CNAME(lnn_next_chunk)(counter, g, &n0, &nc) >= 0)
        LNN_CNAME(lnn_conv_fwd_chunk)(x, w2, bias, act, z + n0 * op, y + n0 * op, cols, n0, nc,
                                      g);
}

/* gy (n, o, p) is overwritten with G_Z when act is the identity; otherwise G_Z goes to gz_ws
 * (step, o, p). gw_parts (chunks, k, o), gb_parts (chunks, o) and gx (n, c, h, w) are each
 * NULL when that gradient is not wanted; cols (step, k, p) and gcols (step, k, p) are this
 * thread's scratch, and so is gzt (p, o), given when the op chose the G_W GEMM with G_Z[n]
 * transposed first (OpenBLAS's "NN" kernel beats its "NT" one on some shapes), else NULL. */
static void LNN_CNAME(lnn_conv_bwd_chunks)(const T *x, const T *w2, const T *bias, int act, T *gy,
                                           const T *y, const T *z, T *gx, T *gw_parts,
                                           T *gb_parts, T *cols, T *gz_ws, T *gcols, T *gzt,
                                           int64_t *counter, const lnn_conv_geom *g)
{
    const ptrdiff_t o = g->o, op = g->o * g->oh * g->ow;
    ptrdiff_t i, n0, nc;
    while ((i = LNN_CNAME(lnn_next_chunk)(counter, g, &n0, &nc)) >= 0) {
        T *gz = gy + n0 * op;
        if (act != LNN_IDENTITY || gb_parts) { /* gz = gy f'(z); gb_parts[i] = gz.sum((0, 2)) */
            T *out = act == LNN_IDENTITY ? gz : gz_ws;
            LNN_CNAME(lnn_bias_act_backward)(gz, y + n0 * op, z + n0 * op, bias, act, out,
                                             gb_parts ? gb_parts + i * o : NULL, nc, o,
                                             g->oh * g->ow);
            gz = out;
        }
        LNN_CNAME(lnn_conv_bwd_chunk_grads)(x, w2, gz, gx, gw_parts, cols, gcols, gzt, i, n0, nc,
                                            g);
    }
}

/* Convolution, activation and max pooling in one pass per chunk: the convolution's output
 * stays in this thread's scratch zc (step, o, p) while it is pooled into y (n, o, poh pow)
 * with argmax (the flat index in the (oh, ow) plane of each window's first maximum), as
 * maxpool_fwd(f(conv(x))) would. pool: the max pool's (kh, kw, sh, sw, ph, pw, oh, ow). */
static void LNN_CNAME(lnn_conv_pool_fwd_chunks)(const T *x, const T *w2, const T *bias, int act,
                                                T *zc, T *y, int64_t *argmax, T *cols,
                                                int64_t *counter, const lnn_conv_geom *g,
                                                const ptrdiff_t *pool)
{
    const ptrdiff_t pp = g->o * pool[6] * pool[7];
    ptrdiff_t n0, nc;
    while (LNN_CNAME(lnn_next_chunk)(counter, g, &n0, &nc) >= 0) {
        LNN_CNAME(lnn_conv_fwd_chunk)(x, w2, bias, act, zc, zc, cols, n0, nc, g);
        /* y[n0:n1], argmax[n0:n1] = maxpool(zc) */
        LNN_CNAME(lnn_maxpool_fwd)(zc, y + n0 * pp, argmax + n0 * pp, nc * g->o, g->oh, g->ow,
                                   pool[0], pool[1], pool[6], pool[7], pool[2], pool[3], pool[4],
                                   pool[5]);
    }
}

/* Backward of lnn_conv_pool_fwd_chunks from gy (n, o, poh pow), the pooled output's
 * gradient: G_Z at the pooled cells, gzp = gy f'(y) (y: the pooled output; f' is a function
 * of f's output for identity, relu, sigmoid and tanh, the activations the op fuses) and
 * gb_parts[i] = gzp summed; then gz (step, o, p) = maxpool_bwd(gzp) in scratch, and the
 * weight and input gradients as in lnn_conv_bwd_chunks. gzp: scratch (step, o, poh pow). */
static void LNN_CNAME(lnn_conv_pool_bwd_chunks)(const T *x, const T *w2, const T *bias, int act,
                                                const T *gy, const T *y, const int64_t *argmax,
                                                T *gx, T *gw_parts, T *gb_parts, T *cols,
                                                T *gzp, T *gz, T *gcols, T *gzt,
                                                int64_t *counter, const lnn_conv_geom *g,
                                                const ptrdiff_t *pool)
{
    const ptrdiff_t o = g->o, psize = pool[6] * pool[7];
    ptrdiff_t i, n0, nc;
    while ((i = LNN_CNAME(lnn_next_chunk)(counter, g, &n0, &nc)) >= 0) {
        const T *gp = gy + n0 * o * psize;
        if (act != LNN_IDENTITY || gb_parts) { /* gzp = gy f'(y); gb_parts[i] = gzp.sum((0, 2)) */
            LNN_CNAME(lnn_bias_act_backward)(gp, y + n0 * o * psize, y + n0 * o * psize, bias,
                                             act, gzp, gb_parts ? gb_parts + i * o : NULL, nc, o,
                                             psize);
            gp = gzp;
        }
        /* gz = 0; gz.flat[argmax] += gp, plane by plane */
        LNN_CNAME(lnn_maxpool_bwd)(gp, argmax + n0 * o * psize, gz, nc * o, g->oh, g->ow,
                                   pool[6], pool[7], pool[0], pool[1], pool[2], pool[3], pool[4],
                                   pool[5]);
        LNN_CNAME(lnn_conv_bwd_chunk_grads)(x, w2, gz, gx, gw_parts, cols, gcols, gzt, i, n0, nc,
                                            g);
    }
}

#endif /* LNN_CONV_CHUNKS_TEMPLATE */
