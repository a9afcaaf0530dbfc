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


# -- inference: a stride-1 float32 convolution without im2col (csrc/conv_direct.h) ----------

cdef extern from "conv_direct.h" nogil:
    int lnn_cd_portable
    void lnn_cd_image(const float *x, const float *wp, const float *bias, int act,
                      const lnn_conv_geom *g, const Py_ssize_t *pool, float *s, float *z,
                      float *y)
    void lnn_conv_direct_fwd_f32(const float *x, const float *wp, const float *bias, int act,
                                 const lnn_conv_geom *g, const Py_ssize_t *pool, float *s,
                                 float *z, float *y, int64_t *counter)
    int lnn_cw_fits(const lnn_conv_geom *g, const Py_ssize_t *pool, int act)
    Py_ssize_t lnn_cw_scratch(const lnn_conv_geom *g, const Py_ssize_t *pool)
    void lnn_cw_or_direct(const float *x, const float *wp, const float *u, const float *bias,
                          int act, const lnn_conv_geom *g, const Py_ssize_t *pool, float *s,
                          float *z, float *y)


def conv2d_direct_forward(cnp.ndarray x not None, cnp.ndarray wp not None, b, int act,
                          tuple geom not None, Py_ssize_t oh, Py_ssize_t ow, pool,
                          cnp.ndarray counter not None, cnp.ndarray s not None,
                          cnp.ndarray z not None, cnp.ndarray y not None):
    """Per image n (claimed from counter): y[n] = maxpool(f(w2 @ im2col(x[n]) + b)), or
    f(w2 @ im2col(x[n]) + b) when pool is None; float32, stride 1, wp packed by
    conv2d_direct_pack, s and z this thread's scratch (geometry.conv_direct_scratch).
    Returns y."""
    cdef lnn_conv_geom g
    cdef Py_ssize_t pl[8]
    cdef Py_ssize_t *pp = NULL
    if cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32:
        raise TypeError(f"conv2d_direct_forward takes float32 arrays, not {x.dtype}")
    cdef cnp.npy_intp *xd = cnp.PyArray_DIMS(x)
    g.n, g.c, g.h, g.w, g.o = xd[0], xd[1], xd[2], xd[3], cnp.PyArray_DIMS(y)[1]
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw = geom
    g.oh, g.ow, g.step = oh, ow, 1
    if pool is not None:
        _pool(pl, pool)
        pp = pl
    cdef float *xp = <float *>cnp.PyArray_DATA(x)
    cdef float *wpp = <float *>cnp.PyArray_DATA(wp)
    cdef float *bp = <float *>_opt(b)
    cdef float *sp = <float *>cnp.PyArray_DATA(s)
    cdef float *zp = <float *>cnp.PyArray_DATA(z)
    cdef float *yp = <float *>cnp.PyArray_DATA(y)
    cdef int64_t *cnt = <int64_t *>cnp.PyArray_DATA(counter)
    with nogil:
        lnn_conv_direct_fwd_f32(xp, wpp, bp, act, &g, pp, sp, zp, yp, cnt)
    return y


def conv2d_direct_portable(bint on):
    """Run conv2d_direct_forward's plain C loops (on) or its AVX2 ones where the CPU has them
    (off, the default): a switch for the tests, which check both against the twin."""
    global lnn_cd_portable
    lnn_cd_portable = 1 if on else 0


# -- a chunk kernel on the shared native pool (csrc/pool.h) ---------------------------------

include "pool_bind.pxi"

DEF MAX_SETS = 64

cdef struct _chunk_job:
    int kind  # 0: conv forward, 1: conv + pool forward, 2: direct; + 10 for float64
    const void *x
    const void *w
    const void *b
    void *y
    void *y2  # z (conv forward) or argmax (pooled)
    int act
    lnn_conv_geom g
    Py_ssize_t pool[8]
    Py_ssize_t *pp
    int64_t counter
    void *s0[MAX_SETS]
    void *s1[MAX_SETS]


cdef int _chunk_task(void *ctx, Py_ssize_t t) noexcept nogil:
    cdef _chunk_job *j = <_chunk_job *>ctx
    if j.kind == 0:
        lnn_conv_fwd_chunks_f32(<const float *>j.x, <const float *>j.w, <const float *>j.b,
                                j.act, <float *>j.y2, <float *>j.y, <float *>j.s0[t],
                                &j.counter, &j.g)
    elif j.kind == 10:
        lnn_conv_fwd_chunks_f64(<const double *>j.x, <const double *>j.w, <const double *>j.b,
                                j.act, <double *>j.y2, <double *>j.y, <double *>j.s0[t],
                                &j.counter, &j.g)
    elif j.kind == 1:
        lnn_conv_pool_fwd_chunks_f32(<const float *>j.x, <const float *>j.w,
                                     <const float *>j.b, j.act, <float *>j.s1[t],
                                     <float *>j.y, <int64_t *>j.y2, <float *>j.s0[t],
                                     &j.counter, &j.g, j.pp)
    elif j.kind == 11:
        lnn_conv_pool_fwd_chunks_f64(<const double *>j.x, <const double *>j.w,
                                     <const double *>j.b, j.act, <double *>j.s1[t],
                                     <double *>j.y, <int64_t *>j.y2, <double *>j.s0[t],
                                     &j.counter, &j.g, j.pp)
    else:
        lnn_conv_direct_fwd_f32(<const float *>j.x, <const float *>j.w, <const float *>j.b,
                                j.act, &j.g, j.pp, <float *>j.s0[t], <float *>j.s1[t],
                                <float *>j.y, &j.counter)
    return 0


def conv_chunks_threads(str name, cnp.ndarray x not None, tuple head not None,
                        tuple scratch not None, tuple tail not None, int threads):
    """kernel ``name``(x, *head, counter, *scratch[t], *tail) on ``len(scratch)`` tasks of
    the shared pool, at most ``threads`` at once, with one fresh counter: each task claims
    chunks (images) from it until none are left, so the work spreads over the threads that
    run and the result does not depend on how (each chunk writes its own images). ``name``:
    conv2d_forward_chunks, conv2d_pool_forward_chunks or conv2d_direct_forward, with their
    arguments (the plan's; shapes are the plan's and trusted like theirs). Returns y."""
    cdef _chunk_job j
    cdef Py_ssize_t sets = len(scratch), t, k, p
    if sets < 1 or sets > MAX_SETS:
        raise ValueError(f"conv_chunks_threads takes 1 to {MAX_SETS} scratch sets")
    cdef cnp.ndarray w = <cnp.ndarray?>head[0]
    cdef bint f32 = _is_f32(x)
    j.counter = 0
    j.x, j.w, j.b = cnp.PyArray_DATA(x), cnp.PyArray_DATA(w), _opt(head[1])
    j.act = head[2]
    j.pp = NULL
    y = tail[0]
    if name == "conv2d_direct_forward":
        if not f32:
            raise TypeError(f"conv2d_direct_forward takes float32 arrays, not {x.dtype}")
        j.kind = 2
        _geom_direct(&j.g, x, cnp.PyArray_DIMS(<cnp.ndarray?>y)[1], head[3], head[4], head[5])
        if head[6] is not None:
            _pool(j.pool, head[6])
            j.pp = j.pool
        j.y = cnp.PyArray_DATA(<cnp.ndarray?>y)
        j.y2 = NULL
    elif name == "conv2d_forward_chunks" or name == "conv2d_pool_forward_chunks":
        pooled = name == "conv2d_pool_forward_chunks"
        j.kind = (1 if pooled else 0) + (0 if f32 else 10)
        _geom(&j.g, x, cnp.PyArray_DIMS(w)[0], head[3], head[4], head[5],
              head[7] if pooled else head[6])
        if pooled:
            _pool(j.pool, head[6])
            j.pp = j.pool
            j.y = cnp.PyArray_DATA(<cnp.ndarray?>tail[0])
            j.y2 = cnp.PyArray_DATA(<cnp.ndarray?>tail[1])
        else:
            j.y2 = cnp.PyArray_DATA(<cnp.ndarray?>tail[0])  # z
            j.y = cnp.PyArray_DATA(<cnp.ndarray?>tail[1])
    else:
        raise ValueError(f"no chunk kernel {name!r}")
    for t in range(sets):
        mine = scratch[t]
        if len(mine) != (1 if j.kind % 10 == 0 else 2):
            raise ValueError(f"{name}: scratch set {t} has {len(mine)} arrays")
        j.s0[t] = cnp.PyArray_DATA(<cnp.ndarray?>mine[0])
        j.s1[t] = cnp.PyArray_DATA(<cnp.ndarray?>mine[1]) if len(mine) > 1 else NULL
    with nogil:
        lnn_parallel(_chunk_task, &j, sets, threads)
    return y


cdef int _geom_direct(lnn_conv_geom *g, cnp.ndarray x, Py_ssize_t o, tuple geom, Py_ssize_t oh,
                      Py_ssize_t ow) except -1:
    cdef cnp.npy_intp *xd = cnp.PyArray_DIMS(x)
    g.n, g.c, g.h, g.w, g.o = xd[0], xd[1], xd[2], xd[3], o
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw = geom
    g.oh, g.ow, g.step = oh, ow, 1
    return 0


# -- inference: direct convolutions one after the other, image by image --------------------

DEF MAX_CHAIN = 8

cdef struct _chain_layer:
    const float *w
    const float *u  # the Winograd filters (conv_winograd.h) or NULL
    const float *b
    int act
    lnn_conv_geom g
    Py_ssize_t pool[8]
    Py_ssize_t *pp
    Py_ssize_t out  # floats of one image's output


cdef struct _chain_job:
    Py_ssize_t layers, n, img, s_need
    _chain_layer l[MAX_CHAIN]
    const float *x
    float *y
    int64_t *counter
    int64_t own_counter
    float *s[MAX_SETS]
    float *z[MAX_SETS]
    float *m[2][MAX_SETS]


cdef int _chain_task(void *ctx, Py_ssize_t t) noexcept nogil:
    """Images claimed one at a time, each carried through every layer: layer k writes the
    thread's buffer m[k % 2] (the last one y[n]), which layer k + 1 reads."""
    cdef _chain_job *j = <_chain_job *>ctx
    cdef Py_ssize_t n, k
    cdef const float *src
    cdef float *dst
    while True:
        n = <Py_ssize_t>lnn_claim(j.counter)
        if n >= j.n:
            return 0
        src = j.x + n * j.img
        for k in range(j.layers):
            dst = j.y + n * j.l[k].out if k == j.layers - 1 else j.m[k % 2][t]
            lnn_cw_or_direct(src, j.l[k].w, j.l[k].u, j.l[k].b, j.l[k].act, &j.l[k].g,
                             j.l[k].pp, j.s[t], j.z[t], dst)
            src = dst


cdef int _chain_setup(_chain_job *j, cnp.ndarray x, tuple layers, cnp.ndarray y) except -1:
    cdef Py_ssize_t k, ln = len(layers)
    cdef _chain_layer *L
    if ln < 1 or ln > MAX_CHAIN:
        raise ValueError(f"conv2d_direct_chain takes 1 to {MAX_CHAIN} layers, not {ln}")
    for a in (x, y):
        if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32:
            raise TypeError(f"conv2d_direct_chain takes float32 arrays, not {a.dtype}")
    j.layers, j.n = ln, cnp.PyArray_DIMS(x)[0]
    j.x, j.y = <const float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(y)
    j.img = cnp.PyArray_SIZE(x) // j.n if j.n else 0
    j.s_need = 0
    for k in range(ln):
        wp, b, act, geom, oh, ow, pool, c, h, w, o = layers[k][:11]
        u = layers[k][11] if len(layers[k]) > 11 else None
        L = &j.l[k]
        if cnp.PyArray_TYPE(<cnp.ndarray?>wp) != cnp.NPY_FLOAT32 or (
                b is not None and cnp.PyArray_TYPE(<cnp.ndarray?>b) != cnp.NPY_FLOAT32):
            raise TypeError(f"conv2d_direct_chain: layer {k}'s weights are not float32")
        L.w, L.b, L.act = <const float *>cnp.PyArray_DATA(<cnp.ndarray?>wp), <float *>_opt(b), act
        L.g.n, L.g.c, L.g.h, L.g.w, L.g.o = j.n, c, h, w, o
        L.g.kh, L.g.kw, L.g.sh, L.g.sw, L.g.ph, L.g.pw, L.g.dh, L.g.dw = geom
        L.g.oh, L.g.ow, L.g.step = oh, ow, 1
        L.pp = NULL
        L.out = o * oh * ow
        if pool is not None:
            _pool(L.pool, pool)
            L.pp = L.pool
            L.out = o * L.pool[6] * L.pool[7]
        L.u = NULL
        if u is not None and lnn_cw_fits(&L.g, L.pp, act):
            if (cnp.PyArray_TYPE(<cnp.ndarray?>u) != cnp.NPY_FLOAT32
                    or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>u)
                    or cnp.PyArray_SIZE(u) != (o + 3) // 4 * 16 * c * 4):
                raise ValueError(f"conv2d_direct_chain: layer {k}'s Winograd filters are not "
                                 f"float32 ({(o + 3) // 4}, 16, {c}, 4)")
            L.u = <const float *>cnp.PyArray_DATA(<cnp.ndarray>u)
            j.s_need = max(j.s_need, lnn_cw_scratch(&L.g, L.pp))
    return 0


cdef int _chain_scratch_ok(_chain_job *j, cnp.ndarray s) except -1:
    if cnp.PyArray_SIZE(s) < j.s_need or cnp.PyArray_TYPE(s) != cnp.NPY_FLOAT32:
        raise ValueError(f"conv2d_direct_chain: s holds {cnp.PyArray_SIZE(s)} floats, the "
                         f"Winograd layers need {j.s_need}")
    return 0


def conv2d_direct_chain(cnp.ndarray x not None, tuple layers not None,
                        cnp.ndarray counter not None, cnp.ndarray s not None,
                        cnp.ndarray z not None, cnp.ndarray m0 not None,
                        cnp.ndarray m1 not None, cnp.ndarray y not None):
    """For each image n (claimed from counter): h = x[n], then for each layer
    (wp, b, act, geom, oh, ow, pool, C, H, W, O[, u]): h = conv2d_direct_forward of h (C, H, W)
    -> (O, out), or its Winograd F(2x2, 3x3) form with u = conv2d_winograd_pack(w2, C) where
    the layer fits (3x3, stride 1, 2x2 / 2 pool, identity or ReLU; conv_winograd.h);
    y[n] = h. s, z: scratch for the largest layer; m0, m1: one image's output of
    the layers between (k even: m0, odd: m1). float32. Returns y."""
    cdef _chain_job j
    _chain_setup(&j, x, layers, y)
    _chain_scratch_ok(&j, s)
    j.counter = <int64_t *>cnp.PyArray_DATA(counter)
    j.s[0], j.z[0] = <float *>cnp.PyArray_DATA(s), <float *>cnp.PyArray_DATA(z)
    j.m[0][0], j.m[1][0] = <float *>cnp.PyArray_DATA(m0), <float *>cnp.PyArray_DATA(m1)
    with nogil:
        _chain_task(&j, 0)
    return y


def conv_direct_chain_threads(cnp.ndarray x not None, tuple layers not None,
                              tuple scratch not None, cnp.ndarray y not None, int threads):
    """conv2d_direct_chain on ``len(scratch)`` tasks of the shared pool (scratch[t] = (s, z,
    m0, m1), that task's), at most ``threads`` at once, with one fresh counter: each image is
    written by the one task that claimed it, so the result does not depend on the split.
    Returns y."""
    cdef _chain_job j
    cdef Py_ssize_t sets = len(scratch), t
    if sets < 1 or sets > MAX_SETS:
        raise ValueError(f"conv_direct_chain_threads takes 1 to {MAX_SETS} scratch sets")
    _chain_setup(&j, x, layers, y)
    j.own_counter = 0
    j.counter = &j.own_counter
    for t in range(sets):
        mine = scratch[t]
        if len(mine) != 4:
            raise ValueError(f"conv_direct_chain_threads: scratch set {t} has {len(mine)} arrays")
        _chain_scratch_ok(&j, mine[0])
        j.s[t] = <float *>cnp.PyArray_DATA(<cnp.ndarray?>mine[0])
        j.z[t] = <float *>cnp.PyArray_DATA(<cnp.ndarray?>mine[1])
        j.m[0][t] = <float *>cnp.PyArray_DATA(<cnp.ndarray?>mine[2])
        j.m[1][t] = <float *>cnp.PyArray_DATA(<cnp.ndarray?>mine[3])
    with nogil:
        lnn_parallel(_chain_task, &j, sets, threads)
    return y
