# cython: language_level=3
"""Compiled twins of the convolution and pooling kernels in ``lepton_nn/backend/reference.py``.

Same signatures and results; outputs are written into the arrays given. The loops are C
(``csrc/conv.h``) and run without the GIL; this file reads the shapes, picks the float32 or
float64 loop and hands over raw pointers. Arguments are ``cnp.ndarray`` (about 25 ns each per
call; a typed memoryview costs ~190 ns). Nothing is validated: the op in ``lepton_nn/ops/conv.py``
checks shapes, dtypes and C-contiguity first. A dtype other than float32/float64 raises
``TypeError``.
"""

cimport numpy as cnp
from libc.stdint cimport int64_t

cnp.import_array()

cdef extern from "conv.h" nogil:
    int lnn_conv_portable
    void lnn_im2col_f32(const float *x, float *cols, Py_ssize_t planes, Py_ssize_t h,
                        Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t oh, Py_ssize_t ow,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t dh, Py_ssize_t dw)
    void lnn_im2col_f64(const double *x, double *cols, Py_ssize_t planes, Py_ssize_t h,
                        Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t oh, Py_ssize_t ow,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t dh, Py_ssize_t dw)
    void lnn_col2im_f32(const float *cols, float *gx, Py_ssize_t planes, Py_ssize_t h,
                        Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t oh, Py_ssize_t ow,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t dh, Py_ssize_t dw)
    void lnn_col2im_f64(const double *cols, double *gx, Py_ssize_t planes, Py_ssize_t h,
                        Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t oh, Py_ssize_t ow,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t dh, Py_ssize_t dw)
    void lnn_maxpool_fwd_f32(const float *x, float *y, int64_t *argmax, Py_ssize_t planes,
                             Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t sh, Py_ssize_t sw,
                             Py_ssize_t ph, Py_ssize_t pw)
    void lnn_maxpool_fwd_f64(const double *x, double *y, int64_t *argmax, Py_ssize_t planes,
                             Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t sh, Py_ssize_t sw,
                             Py_ssize_t ph, Py_ssize_t pw)
    void lnn_maxpool_bwd_f32(const float *gy, const int64_t *argmax, float *gx,
                             Py_ssize_t planes, Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh,
                             Py_ssize_t ow, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                             Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw)
    void lnn_maxpool_bwd_f64(const double *gy, const int64_t *argmax, double *gx,
                             Py_ssize_t planes, Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh,
                             Py_ssize_t ow, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                             Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw)
    void lnn_avgpool_fwd_f32(const float *x, float *y, Py_ssize_t planes, Py_ssize_t h,
                             Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t oh,
                             Py_ssize_t ow, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                             Py_ssize_t pw, int count_pad)
    void lnn_avgpool_fwd_f64(const double *x, double *y, Py_ssize_t planes, Py_ssize_t h,
                             Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t oh,
                             Py_ssize_t ow, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                             Py_ssize_t pw, int count_pad)
    void lnn_avgpool_bwd_f32(const float *gy, float *gx, Py_ssize_t planes, Py_ssize_t h,
                             Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t oh,
                             Py_ssize_t ow, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                             Py_ssize_t pw, int count_pad)
    void lnn_avgpool_bwd_f64(const double *gy, double *gx, Py_ssize_t planes, Py_ssize_t h,
                             Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t oh,
                             Py_ssize_t ow, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                             Py_ssize_t pw, int count_pad)


cdef inline bint _is_f32(cnp.ndarray a) except -1:
    """True for float32, False for float64; TypeError for anything else."""
    cdef int t = cnp.PyArray_TYPE(a)
    if t == cnp.NPY_FLOAT32:
        return True
    if t == cnp.NPY_FLOAT64:
        return False
    raise TypeError(f"conv kernels take float32 or float64 arrays, not {a.dtype}")


def im2col(cnp.ndarray x not None, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           cnp.ndarray cols not None):
    """cols[n, (c kh + i) kw + j, y, x] = x[n, c, y sh - ph + i dh, x sw - pw + j dw].

    x: (N, C, H, W); cols: (N, C kh kw, OH, OW). Returns cols.
    """
    cdef cnp.npy_intp *xd = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp *cd = cnp.PyArray_DIMS(cols)
    cdef Py_ssize_t planes = xd[0] * xd[1], h = xd[2], w = xd[3], oh = cd[2], ow = cd[3]
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *cp = cnp.PyArray_DATA(cols)
    if _is_f32(x):
        with nogil:
            lnn_im2col_f32(<float *>xp, <float *>cp, planes, h, w, kh, kw, oh, ow, sh, sw,
                           ph, pw, dh, dw)
    else:
        with nogil:
            lnn_im2col_f64(<double *>xp, <double *>cp, planes, h, w, kh, kw, oh, ow, sh, sw,
                           ph, pw, dh, dw)
    return cols


def col2im(cnp.ndarray cols not None, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
           Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
           cnp.ndarray gx not None):
    """gx = 0, then each cols entry added to the pixel im2col read it from. Returns gx."""
    cdef cnp.npy_intp *gd = cnp.PyArray_DIMS(gx)
    cdef cnp.npy_intp *cd = cnp.PyArray_DIMS(cols)
    cdef Py_ssize_t planes = gd[0] * gd[1], h = gd[2], w = gd[3], oh = cd[2], ow = cd[3]
    cdef void *cp = cnp.PyArray_DATA(cols)
    cdef void *gp = cnp.PyArray_DATA(gx)
    if _is_f32(gx):
        with nogil:
            lnn_col2im_f32(<float *>cp, <float *>gp, planes, h, w, kh, kw, oh, ow, sh, sw,
                           ph, pw, dh, dw)
    else:
        with nogil:
            lnn_col2im_f64(<double *>cp, <double *>gp, planes, h, w, kh, kw, oh, ow, sh, sw,
                           ph, pw, dh, dw)
    return gx


def maxpool2d_forward(cnp.ndarray x not None, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                      Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, cnp.ndarray y not None,
                      cnp.ndarray argmax not None):
    """y = window max (padding -inf); argmax = row W + col of the first maximum. Returns y."""
    cdef cnp.npy_intp *xd = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp *yd = cnp.PyArray_DIMS(y)
    cdef Py_ssize_t planes = xd[0] * xd[1], h = xd[2], w = xd[3], oh = yd[2], ow = yd[3]
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef int64_t *ap = <int64_t *>cnp.PyArray_DATA(argmax)
    if _is_f32(x):
        with nogil:
            lnn_maxpool_fwd_f32(<float *>xp, <float *>yp, ap, planes, h, w, kh, kw, oh, ow,
                                sh, sw, ph, pw)
    else:
        with nogil:
            lnn_maxpool_fwd_f64(<double *>xp, <double *>yp, ap, planes, h, w, kh, kw, oh, ow,
                                sh, sw, ph, pw)
    return y


def maxpool2d_backward(cnp.ndarray gy not None, cnp.ndarray argmax not None, Py_ssize_t kh,
                       Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                       Py_ssize_t pw, cnp.ndarray gx not None):
    """gx = 0, then gx[n, c].flat[argmax[n, c]] += gy[n, c]; the forward's window (kh, kw,
    sh, sw, ph, pw) picks a one-pass loop for 2x2 / stride 2. Returns gx."""
    cdef cnp.npy_intp *gd = cnp.PyArray_DIMS(gx)
    cdef cnp.npy_intp *yd = cnp.PyArray_DIMS(gy)
    cdef Py_ssize_t planes = gd[0] * gd[1], h = gd[2], w = gd[3], oh = yd[2], ow = yd[3]
    cdef void *gyp = cnp.PyArray_DATA(gy)
    cdef int64_t *ap = <int64_t *>cnp.PyArray_DATA(argmax)
    cdef void *gxp = cnp.PyArray_DATA(gx)
    if _is_f32(gx):
        with nogil:
            lnn_maxpool_bwd_f32(<float *>gyp, ap, <float *>gxp, planes, h, w, oh, ow, kh, kw,
                                sh, sw, ph, pw)
    else:
        with nogil:
            lnn_maxpool_bwd_f64(<double *>gyp, ap, <double *>gxp, planes, h, w, oh, ow, kh, kw,
                                sh, sw, ph, pw)
    return gx


def avgpool2d_forward(cnp.ndarray x not None, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                      Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, bint count_pad,
                      cnp.ndarray y not None):
    """y = window sum / divisor (kh kw if count_pad, else the cells inside). Returns y."""
    cdef cnp.npy_intp *xd = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp *yd = cnp.PyArray_DIMS(y)
    cdef Py_ssize_t planes = xd[0] * xd[1], h = xd[2], w = xd[3], oh = yd[2], ow = yd[3]
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *yp = cnp.PyArray_DATA(y)
    if _is_f32(x):
        with nogil:
            lnn_avgpool_fwd_f32(<float *>xp, <float *>yp, planes, h, w, kh, kw, oh, ow, sh, sw,
                                ph, pw, count_pad)
    else:
        with nogil:
            lnn_avgpool_fwd_f64(<double *>xp, <double *>yp, planes, h, w, kh, kw, oh, ow, sh,
                                sw, ph, pw, count_pad)
    return y


def avgpool2d_backward(cnp.ndarray gy not None, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                       Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, bint count_pad,
                       cnp.ndarray gx not None):
    """gx = 0, then each window adds gy / divisor to its cells inside the image. Returns gx."""
    cdef cnp.npy_intp *gd = cnp.PyArray_DIMS(gx)
    cdef cnp.npy_intp *yd = cnp.PyArray_DIMS(gy)
    cdef Py_ssize_t planes = gd[0] * gd[1], h = gd[2], w = gd[3], oh = yd[2], ow = yd[3]
    cdef void *gyp = cnp.PyArray_DATA(gy)
    cdef void *gxp = cnp.PyArray_DATA(gx)
    if _is_f32(gx):
        with nogil:
            lnn_avgpool_bwd_f32(<float *>gyp, <float *>gxp, planes, h, w, kh, kw, oh, ow, sh,
                                sw, ph, pw, count_pad)
    else:
        with nogil:
            lnn_avgpool_bwd_f64(<double *>gyp, <double *>gxp, planes, h, w, kh, kw, oh, ow, sh,
                                sw, ph, pw, count_pad)
    return gx


# -- a convolution's passes over chunks of images (csrc/conv_chunks.h) ----------------------

def conv_portable(bint on):
    """Run im2col, col2im and the max pool's plain C loops (on) or their AVX-512 / AVX2 ones
    where the CPU has them (off, the default): a switch for the tests, which check both."""
    global lnn_conv_portable
    lnn_conv_portable = 1 if on else 0


cdef extern from "conv_chunks.h" nogil:
    ctypedef struct lnn_conv_geom:
        Py_ssize_t n, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, step
    void lnn_set_gemm(void *sgemm, void *dgemm, int ilp64)
    int64_t lnn_claim(int64_t *counter)
    void lnn_conv_fwd_chunks_f32(const float *x, const float *w2, const float *bias, int act,
                                 float *z, float *y, float *cols, int64_t *counter,
                                 const lnn_conv_geom *g)
    void lnn_conv_fwd_chunks_f64(const double *x, const double *w2, const double *bias, int act,
                                 double *z, double *y, double *cols, int64_t *counter,
                                 const lnn_conv_geom *g)
    void lnn_conv_bwd_chunks_f32(const float *x, const float *w2, const float *bias, int act,
                                 float *gy, const float *y, const float *z, float *gx,
                                 float *gw_parts, float *gb_parts, float *cols, float *gz_ws,
                                 float *gcols, float *gzt, int64_t *counter,
                                 const lnn_conv_geom *g)
    void lnn_conv_bwd_chunks_f64(const double *x, const double *w2, const double *bias, int act,
                                 double *gy, const double *y, const double *z, double *gx,
                                 double *gw_parts, double *gb_parts, double *cols,
                                 double *gz_ws, double *gcols, double *gzt, int64_t *counter,
                                 const lnn_conv_geom *g)

    void lnn_conv_pool_fwd_chunks_f32(const float *x, const float *w2, const float *bias,
                                      int act, float *zc, float *y, int64_t *argmax,
                                      float *cols, int64_t *counter, const lnn_conv_geom *g,
                                      const Py_ssize_t *pool)
    void lnn_conv_pool_fwd_chunks_f64(const double *x, const double *w2, const double *bias,
                                      int act, double *zc, double *y, int64_t *argmax,
                                      double *cols, int64_t *counter, const lnn_conv_geom *g,
                                      const Py_ssize_t *pool)
    void lnn_conv_pool_bwd_chunks_f32(const float *x, const float *w2, const float *bias,
                                      int act, const float *gy, const float *y,
                                      const int64_t *argmax, float *gx, float *gw_parts,
                                      float *gb_parts, float *cols, float *gzp, float *gz,
                                      float *gcols, float *gzt, int64_t *counter,
                                      const lnn_conv_geom *g, const Py_ssize_t *pool)
    void lnn_conv_pool_bwd_chunks_f64(const double *x, const double *w2, const double *bias,
                                      int act, const double *gy, const double *y,
                                      const int64_t *argmax, double *gx, double *gw_parts,
                                      double *gb_parts, double *cols, double *gzp, double *gz,
                                      double *gcols, double *gzt, int64_t *counter,
                                      const lnn_conv_geom *g, const Py_ssize_t *pool)

cdef bint _gemm_set = False
cdef bint _gemm_ilp64 = False


def set_gemm(size_t sgemm, size_t dgemm, bint ilp64):
    """Use the row-major cblas_sgemm / cblas_dgemm at these addresses (with 64-bit integer
    arguments if ilp64) in the chunk kernels below. The caller found them in the BLAS NumPy
    loaded and checked them (lepton_nn/backend/threads.py)."""
    global _gemm_set, _gemm_ilp64
    lnn_set_gemm(<void *>sgemm, <void *>dgemm, ilp64)
    _gemm_set, _gemm_ilp64 = sgemm != 0 and dgemm != 0, ilp64


def gemm_ready():
    """Whether set_gemm was given a GEMM: until then the chunk kernels must not be called."""
    return _gemm_set


cdef inline void *_opt(object a):
    """The data pointer of an array, or NULL for None."""
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _geom(lnn_conv_geom *g, cnp.ndarray x, Py_ssize_t o, tuple geom, Py_ssize_t oh,
               Py_ssize_t ow, Py_ssize_t step) except -1:
    cdef cnp.npy_intp *xd = cnp.PyArray_DIMS(x)
    g.n, g.c, g.h, g.w, g.o = xd[0], xd[1], xd[2], xd[3], o
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw = geom
    g.oh, g.ow, g.step = oh, ow, step
    if not _gemm_set:
        raise RuntimeError("conv chunk kernels called before set_gemm")
    if not _gemm_ilp64 and max(g.c * g.kh * g.kw, oh * ow, o) > 2147483647:
        raise OverflowError("a GEMM dimension exceeds this BLAS's 32-bit integers")
    return 0


def conv2d_forward_chunks(cnp.ndarray x not None, cnp.ndarray w2 not None, b, int act,
                          tuple geom not None, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t step,
                          cnp.ndarray counter not None, cols, cnp.ndarray z not None,
                          cnp.ndarray y not None):
    """Per chunk of images: cols = im2col(x), z = w2 @ cols, y = f(z + b). Returns y."""
    cdef lnn_conv_geom g
    _geom(&g, x, cnp.PyArray_DIMS(w2)[0], geom, oh, ow, step)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *wp = cnp.PyArray_DATA(w2)
    cdef void *bp = _opt(b)
    cdef void *zp = cnp.PyArray_DATA(z)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef void *cp = _opt(cols)
    cdef int64_t *cnt = <int64_t *>cnp.PyArray_DATA(counter)
    if _is_f32(x):
        with nogil:
            lnn_conv_fwd_chunks_f32(<float *>xp, <float *>wp, <float *>bp, act, <float *>zp,
                                    <float *>yp, <float *>cp, cnt, &g)
    else:
        with nogil:
            lnn_conv_fwd_chunks_f64(<double *>xp, <double *>wp, <double *>bp, act,
                                    <double *>zp, <double *>yp, <double *>cp, cnt, &g)
    return y


def conv2d_backward_chunks(cnp.ndarray x not None, cnp.ndarray w2 not None, b, int act,
                           tuple geom not None, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t step,
                           cnp.ndarray counter not None, cnp.ndarray gy not None,
                           cnp.ndarray y not None, cnp.ndarray z not None, gx, gw_parts,
                           gb_parts, cols, gz_ws, gcols, gzt):
    """Per chunk i of images: G_Z = gy f'(z), gb_parts[i], gw_parts[i] = sum cols G_Z^T
    (through gzt = G_Z[n]^T when given), gx = col2im(w2^T G_Z). Returns gx."""
    cdef lnn_conv_geom g
    _geom(&g, x, cnp.PyArray_DIMS(w2)[0], geom, oh, ow, step)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *wp = cnp.PyArray_DATA(w2)
    cdef void *bp = _opt(b)
    cdef void *gyp = cnp.PyArray_DATA(gy)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef void *zp = cnp.PyArray_DATA(z)
    cdef void *gxp = _opt(gx)
    cdef void *gwp = _opt(gw_parts)
    cdef void *gbp = _opt(gb_parts)
    cdef void *cp = _opt(cols)
    cdef void *gzp = _opt(gz_ws)
    cdef void *gcp = _opt(gcols)
    cdef void *gtp = _opt(gzt)
    cdef int64_t *cnt = <int64_t *>cnp.PyArray_DATA(counter)
    if _is_f32(x):
        with nogil:
            lnn_conv_bwd_chunks_f32(<float *>xp, <float *>wp, <float *>bp, act, <float *>gyp,
                                    <float *>yp, <float *>zp, <float *>gxp, <float *>gwp,
                                    <float *>gbp, <float *>cp, <float *>gzp, <float *>gcp,
                                    <float *>gtp, cnt, &g)
    else:
        with nogil:
            lnn_conv_bwd_chunks_f64(<double *>xp, <double *>wp, <double *>bp, act,
                                    <double *>gyp, <double *>yp, <double *>zp, <double *>gxp,
                                    <double *>gwp, <double *>gbp, <double *>cp, <double *>gzp,
                                    <double *>gcp, <double *>gtp, cnt, &g)
    return gx


cdef int _pool(Py_ssize_t *pool, tuple geom) except -1:
    pool[0], pool[1], pool[2], pool[3], pool[4], pool[5], pool[6], pool[7] = geom
    return 0


def conv2d_pool_forward_chunks(cnp.ndarray x not None, cnp.ndarray w2 not None, b, int act,
                               tuple geom not None, Py_ssize_t oh, Py_ssize_t ow,
                               tuple pool not None, Py_ssize_t step,
                               cnp.ndarray counter not None, cols, cnp.ndarray zc not None,
                               cnp.ndarray y not None, cnp.ndarray argmax not None):
    """Per chunk of images: zc = f(w2 @ im2col(x) + b), then y, argmax = maxpool(zc).
    Returns y."""
    cdef lnn_conv_geom g
    cdef Py_ssize_t pl[8]
    _geom(&g, x, cnp.PyArray_DIMS(w2)[0], geom, oh, ow, step)
    _pool(pl, pool)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *wp = cnp.PyArray_DATA(w2)
    cdef void *bp = _opt(b)
    cdef void *zp = cnp.PyArray_DATA(zc)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef int64_t *ap = <int64_t *>cnp.PyArray_DATA(argmax)
    cdef void *cp = _opt(cols)
    cdef int64_t *cnt = <int64_t *>cnp.PyArray_DATA(counter)
    if _is_f32(x):
        with nogil:
            lnn_conv_pool_fwd_chunks_f32(<float *>xp, <float *>wp, <float *>bp, act,
                                         <float *>zp, <float *>yp, ap, <float *>cp, cnt, &g, pl)
    else:
        with nogil:
            lnn_conv_pool_fwd_chunks_f64(<double *>xp, <double *>wp, <double *>bp, act,
                                         <double *>zp, <double *>yp, ap, <double *>cp, cnt, &g,
                                         pl)
    return y


def conv2d_pool_backward_chunks(cnp.ndarray x not None, cnp.ndarray w2 not None, b, int act,
                                tuple geom not None, Py_ssize_t oh, Py_ssize_t ow,
                                tuple pool not None, Py_ssize_t step,
                                cnp.ndarray counter not None, cnp.ndarray gy not None,
                                cnp.ndarray y not None, cnp.ndarray argmax not None, gx,
                                gw_parts, gb_parts, cols, cnp.ndarray gzp not None,
                                cnp.ndarray gz not None, gcols, gzt):
    """Per chunk i: G_Z at the pooled cells = gy f'(y), gb_parts[i]; gz = maxpool_bwd of it;
    then gw_parts[i] and gx as in conv2d_backward_chunks. Returns gx."""
    cdef lnn_conv_geom g
    cdef Py_ssize_t pl[8]
    _geom(&g, x, cnp.PyArray_DIMS(w2)[0], geom, oh, ow, step)
    _pool(pl, pool)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *wp = cnp.PyArray_DATA(w2)
    cdef void *bp = _opt(b)
    cdef void *gyp = cnp.PyArray_DATA(gy)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef int64_t *ap = <int64_t *>cnp.PyArray_DATA(argmax)
    cdef void *gxp = _opt(gx)
    cdef void *gwp = _opt(gw_parts)
    cdef void *gbp = _opt(gb_parts)
    cdef void *cp = _opt(cols)
    cdef void *gpp = cnp.PyArray_DATA(gzp)
    cdef void *gzp_ = cnp.PyArray_DATA(gz)
    cdef void *gcp = _opt(gcols)
    cdef void *gtp = _opt(gzt)
    cdef int64_t *cnt = <int64_t *>cnp.PyArray_DATA(counter)
    if _is_f32(x):
        with nogil:
            lnn_conv_pool_bwd_chunks_f32(<float *>xp, <float *>wp, <float *>bp, act,
                                         <float *>gyp, <float *>yp, ap, <float *>gxp,
                                         <float *>gwp, <float *>gbp, <float *>cp, <float *>gpp,
                                         <float *>gzp_, <float *>gcp, <float *>gtp, cnt, &g, pl)
    else:
        with nogil:
            lnn_conv_pool_bwd_chunks_f64(<double *>xp, <double *>wp, <double *>bp, act,
                                         <double *>gyp, <double *>yp, ap, <double *>gxp,
                                         <double *>gwp, <double *>gbp, <double *>cp,
                                         <double *>gpp, <double *>gzp_, <double *>gcp,
                                         <double *>gtp, cnt, &g, pl)
    return gx


# -- inference: direct convolutions, the shared pool's chunk runner, chains ------------------

include "conv_infer.pxi"
