# cython: language_level=3
"""Compiled twins of the dense kernels in ``lepton_nn/backend/reference.py``.

Same signatures, same return values, results written into the given output arrays. The loops
are C (``csrc/dense.h``) and run without the GIL; this file only picks the float32 or float64
loop and hands over raw data pointers. Arguments are ``cnp.ndarray`` rather than typed
memoryviews: each memoryview argument costs ~190 ns per call, ~25 ns for an ndarray.

Nothing is validated here (callers check shapes, dtypes and C-contiguity); a dtype other than
float32/float64 raises ``TypeError`` rather than reading memory as the wrong type.
"""

cimport numpy as cnp
from libc.math cimport sqrt
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t
from libc.string cimport memcpy

cnp.import_array()

cdef extern from "dense.h" nogil:
    void lnn_bias_act_forward_f32(const float *z, const float *bias, int act, float *out,
                                  Py_ssize_t n, Py_ssize_t m, Py_ssize_t inner)
    void lnn_bias_act_forward_f64(const double *z, const double *bias, int act, double *out,
                                  Py_ssize_t n, Py_ssize_t m, Py_ssize_t inner)
    void lnn_bias_act_backward_f32(const float *gy, const float *y, const float *z,
                                   const float *bias, int act, float *gz, float *gbias,
                                   Py_ssize_t n, Py_ssize_t m, Py_ssize_t inner)
    void lnn_bias_act_backward_f64(const double *gy, const double *y, const double *z,
                                   const double *bias, int act, double *gz, double *gbias,
                                   Py_ssize_t n, Py_ssize_t m, Py_ssize_t inner)
    void lnn_softmax_xent_forward_f32(const float *logits, const int64_t *labels, float *probs,
                                      float *loss, Py_ssize_t n, Py_ssize_t c)
    void lnn_softmax_xent_forward_f64(const double *logits, const int64_t *labels,
                                      double *probs, double *loss, Py_ssize_t n, Py_ssize_t c)
    void lnn_softmax_xent_backward_f32(const float *probs, const int64_t *labels,
                                       const float *gloss, float *glogits, Py_ssize_t n,
                                       Py_ssize_t c)
    void lnn_softmax_xent_backward_f64(const double *probs, const int64_t *labels,
                                       const double *gloss, double *glogits, Py_ssize_t n,
                                       Py_ssize_t c)
    void lnn_adam_step_f32(float *p, const float *g, float *m, float *v, Py_ssize_t n,
                           float step_size, float beta1, float beta2, float one_m_b1,
                           float one_m_b2, float inv_sqrt_bc2, float eps, float l2,
                           float decay)
    void lnn_adam_step_f64(double *p, const double *g, double *m, double *v, Py_ssize_t n,
                           double step_size, double beta1, double beta2, double one_m_b1,
                           double one_m_b2, double inv_sqrt_bc2, double eps, double l2,
                           double decay)


cdef inline bint _is_f32(cnp.ndarray a) except -1:
    """True for float32, False for float64; TypeError for anything else."""
    cdef int t = cnp.PyArray_TYPE(a)
    if t == cnp.NPY_FLOAT32:
        return True
    if t == cnp.NPY_FLOAT64:
        return False
    raise TypeError(f"dense kernels take float32 or float64 arrays, not {a.dtype}")


cdef inline void *_data(object a):
    """The data pointer of an ndarray, NULL for None."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline void _rows(cnp.ndarray a, Py_ssize_t *n, Py_ssize_t *m):
    """View a as n rows of m elements, m being its last axis: (N, M) -> N, M."""
    cdef int nd = cnp.PyArray_NDIM(a)
    m[0] = cnp.PyArray_DIMS(a)[nd - 1] if nd > 0 else 1
    n[0] = cnp.PyArray_SIZE(a) // m[0] if m[0] > 0 else 0

cdef inline void _planes(cnp.ndarray a, Py_ssize_t *n, Py_ssize_t *m, Py_ssize_t *inner):
    """The bias axis of a: (N, M, P) -> N, M, P (bias along M, P pixels a plane); any other
    shape -> rows of its last axis, P = 1."""
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(a)
    if cnp.PyArray_NDIM(a) == 3:
        n[0], m[0], inner[0] = d[0], d[1], d[2]
    else:
        _rows(a, n, m)
        inner[0] = 1


def bias_act_forward(cnp.ndarray z not None, bias, int act, cnp.ndarray out not None):
    """out = f(z + bias). z, out: (N, M) or (N, M, P), out may be z; bias: (M,) or None,
    along axis 1. Returns out."""
    cdef Py_ssize_t n, m, inner = 1
    cdef void *zp = cnp.PyArray_DATA(z)
    cdef void *bp = _data(bias)
    cdef void *op = cnp.PyArray_DATA(out)
    _planes(z, &n, &m, &inner)
    if _is_f32(z):
        with nogil:
            lnn_bias_act_forward_f32(<float *>zp, <float *>bp, act, <float *>op, n, m, inner)
    else:
        with nogil:
            lnn_bias_act_forward_f64(<double *>zp, <double *>bp, act, <double *>op, n, m,
                                     inner)
    return out


def bias_act_backward(cnp.ndarray gy not None, cnp.ndarray y not None, cnp.ndarray z not None,
                      bias, int act, cnp.ndarray gz not None, gbias):
    """gz = gy * f'(z + bias) (gz may be gy); gbias = gz summed over all axes but 1, unless
    None.

    gy, y, z, gz: (N, M) or (N, M, P); bias, gbias: (M,) or None. Returns (gz, gbias).
    """
    cdef Py_ssize_t n, m, inner = 1
    cdef void *gyp = cnp.PyArray_DATA(gy)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef void *zp = cnp.PyArray_DATA(z)
    cdef void *bp = _data(bias)
    cdef void *gzp = cnp.PyArray_DATA(gz)
    cdef void *gbp = _data(gbias)
    _planes(gy, &n, &m, &inner)
    if _is_f32(gy):
        with nogil:
            lnn_bias_act_backward_f32(<float *>gyp, <float *>yp, <float *>zp, <float *>bp, act,
                                      <float *>gzp, <float *>gbp, n, m, inner)
    else:
        with nogil:
            lnn_bias_act_backward_f64(<double *>gyp, <double *>yp, <double *>zp, <double *>bp,
                                      act, <double *>gzp, <double *>gbp, n, m, inner)
    return gz, gbias


def softmax_xent_forward(cnp.ndarray logits not None, cnp.ndarray labels not None,
                         cnp.ndarray probs not None, cnp.ndarray loss not None):
    """loss[i] = logsumexp(logits[i]) - logits[i, labels[i]]; probs = softmax(logits).

    logits, probs: (N, C); labels: (N,) int64 in [0, C); loss: (N,). Returns loss.
    """
    cdef Py_ssize_t n, c
    cdef void *xp = cnp.PyArray_DATA(logits)
    cdef int64_t *lp = <int64_t *>cnp.PyArray_DATA(labels)
    cdef void *pp = cnp.PyArray_DATA(probs)
    cdef void *op = cnp.PyArray_DATA(loss)
    _rows(logits, &n, &c)
    if _is_f32(logits):
        with nogil:
            lnn_softmax_xent_forward_f32(<float *>xp, lp, <float *>pp, <float *>op, n, c)
    else:
        with nogil:
            lnn_softmax_xent_forward_f64(<double *>xp, lp, <double *>pp, <double *>op, n, c)
    return loss


def softmax_xent_backward(cnp.ndarray probs not None, cnp.ndarray labels not None,
                          cnp.ndarray gloss not None, cnp.ndarray glogits not None):
    """glogits = (probs - onehot(labels)) * gloss[:, None]; glogits may be probs.

    probs, glogits: (N, C); labels, gloss: (N,). Returns glogits.
    """
    cdef Py_ssize_t n, c
    cdef void *pp = cnp.PyArray_DATA(probs)
    cdef int64_t *lp = <int64_t *>cnp.PyArray_DATA(labels)
    cdef void *gp = cnp.PyArray_DATA(gloss)
    cdef void *op = cnp.PyArray_DATA(glogits)
    _rows(probs, &n, &c)
    if _is_f32(probs):
        with nogil:
            lnn_softmax_xent_backward_f32(<float *>pp, lp, <float *>gp, <float *>op, n, c)
    else:
        with nogil:
            lnn_softmax_xent_backward_f64(<double *>pp, lp, <double *>gp, <double *>op, n, c)
    return glogits


include "pool_bind.pxi"  # adam_step's and dense_packed_forward's threads: the shared pool


ctypedef struct _adam_job:
    void *p
    void *g
    void *m
    void *v
    Py_ssize_t n
    bint f32
    double step_size, beta1, beta2, one_m_b1, one_m_b2, inv_sqrt_bc2, eps, l2, decay


DEF _ADAM_CHUNK = 16384  # elements per pool task (448 KB of p, g, m, v: a few tens of us)


cdef int _adam_task(void *ctx, Py_ssize_t t) noexcept nogil:
    """Elements [t * _ADAM_CHUNK, ...) of one update: each element's arithmetic is the same
    whichever task or thread runs it, so the split never changes a bit."""
    cdef _adam_job *J = <_adam_job *>ctx
    cdef Py_ssize_t i0 = t * _ADAM_CHUNK
    cdef Py_ssize_t n = min(J.n - i0, <Py_ssize_t>_ADAM_CHUNK)
    if J.f32:
        lnn_adam_step_f32(<float *>J.p + i0, <float *>J.g + i0, <float *>J.m + i0,
                          <float *>J.v + i0, n, <float>J.step_size, <float>J.beta1,
                          <float>J.beta2, <float>J.one_m_b1, <float>J.one_m_b2,
                          <float>J.inv_sqrt_bc2, <float>J.eps, <float>J.l2, <float>J.decay)
    else:
        lnn_adam_step_f64(<double *>J.p + i0, <double *>J.g + i0, <double *>J.m + i0,
                          <double *>J.v + i0, n, J.step_size, J.beta1, J.beta2,
                          J.one_m_b1, J.one_m_b2, J.inv_sqrt_bc2, J.eps, J.l2, J.decay)
    return 0


cdef int _adam_f32_entry(float *p, const float *g, float *m, float *v, Py_ssize_t n,
                         const double *s, int threads) noexcept nogil:
    """adam_step for float32 from C: s = (step_size, b1, b2, 1 - b1, 1 - b2,
    1 / sqrt(1 - b2^t), eps, l2, decay), folded in double by the caller (the Numba replay of
    ``lepton_nn.compile``), each rounded once to float32 as adam_step does; the same tasks on
    the shared pool, so the same bits at any thread count. Returns 0."""
    cdef _adam_job J
    J.p, J.g, J.m, J.v, J.n, J.f32 = p, <void *>g, m, v, n, True
    J.step_size, J.beta1, J.beta2, J.one_m_b1, J.one_m_b2 = s[0], s[1], s[2], s[3], s[4]
    J.inv_sqrt_bc2, J.eps, J.l2, J.decay = s[5], s[6], s[7], s[8]
    return lnn_parallel(_adam_task, &J, (n + _ADAM_CHUNK - 1) // _ADAM_CHUNK, threads)


def adam_address():
    """The C entry ``int f(float *p, const float *g, float *m, float *v, ssize_t n,
    const double *s, int threads)`` of the float32 update (see ``_adam_f32_entry``), an
    integer, for compiled code that calls it with no Python in between."""
    return <size_t>&_adam_f32_entry


def adam_step(cnp.ndarray p not None, cnp.ndarray g not None, cnp.ndarray m not None,
              cnp.ndarray v not None, double lr, double beta1, double beta2, double eps,
              double weight_decay, long step, bint decoupled, int threads=1):
    """One Adam (decoupled=False, L2) or AdamW (decoupled=True) update, in place on p, m, v.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    The step's scalars are folded here in double precision, then rounded once to the
    arrays' dtype, as NumPy does with Python floats. ``threads`` > 1 splits the elements in
    chunks of 16384 over the shared native pool (the same bits at any thread count).
    """
    cdef _adam_job J
    J.n = cnp.PyArray_SIZE(p)
    J.p, J.g = cnp.PyArray_DATA(p), cnp.PyArray_DATA(g)
    J.m, J.v = cnp.PyArray_DATA(m), cnp.PyArray_DATA(v)
    J.f32 = _is_f32(p)
    J.step_size = lr / (1.0 - beta1 ** step)  # lr / bc1
    J.inv_sqrt_bc2 = 1.0 / sqrt(1.0 - beta2 ** step)  # 1 / np.sqrt(bc2)
    J.l2 = 0.0 if decoupled else weight_decay  # g = g + weight_decay * p
    J.decay = 1.0 - lr * weight_decay if decoupled else 1.0  # p *= 1 - lr * wd
    J.beta1, J.beta2, J.eps = beta1, beta2, eps
    J.one_m_b1, J.one_m_b2 = 1.0 - beta1, 1.0 - beta2
    cdef Py_ssize_t tasks = (J.n + _ADAM_CHUNK - 1) // _ADAM_CHUNK
    with nogil:
        lnn_parallel(_adam_task, &J, tasks, threads)


cdef extern from "finite.h" nogil:
    int lnn_all_finite_f32(const float *x, Py_ssize_t n)
    int lnn_all_finite_f64(const double *x, Py_ssize_t n)


def all_finite(cnp.ndarray x not None):
    """Whether no value of ``x`` (float32/float64) is inf or NaN."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef void *p = cnp.PyArray_DATA(x)
    cdef int ok
    cdef bint f32 = _is_f32(x)
    if not cnp.PyArray_IS_C_CONTIGUOUS(x):  # a strided view: NumPy's loop
        import numpy
        return bool(numpy.isfinite(x).all())
    if f32:
        with nogil:
            ok = lnn_all_finite_f32(<float *>p, n)
    else:
        with nogil:
            ok = lnn_all_finite_f64(<double *>p, n)
    return ok != 0


def input_rows(x, int typenum, tuple shape):
    """A plan's input gate, in one call: ``x.shape[0]`` when ``x`` is exactly what a plan
    reads (a C-contiguous, aligned, native-endian ``numpy.ndarray`` of dtype number
    ``typenum``, float32 or float64, of shape ``(n, *shape)``) and holds no inf or NaN; -2
    when it is such an array but holds inf or NaN; -1 when it is not (the caller converts
    and checks it the long way). input_gate.pxi's _gate, for any n."""
    cdef Py_ssize_t dims[RUN_MAX_DIMS]
    cdef Py_ssize_t i, nd = len(shape)
    if nd > RUN_MAX_DIMS:
        return -1
    for i in range(nd):
        dims[i] = shape[i]
    return _gate(x, typenum, -1, dims, <int>nd)


def fresh_copy(a):
    """A new C-contiguous array with ``a``'s dtype, shape and values, owning its memory (what
    ``a.copy()`` returns): a plan's reused output handed to the caller. A C-contiguous ndarray
    of a plain numeric dtype is copied with one allocation and a memcpy (``ndarray.copy`` goes
    through NumPy's general assignment, ~0.5 us at batch 1); anything else by ``a.copy()``."""
    if type(a) is not cnp.ndarray:
        return a.copy()
    cdef cnp.ndarray src = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(src)
    if not cnp.PyArray_IS_C_CONTIGUOUS(src) or not (
            t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64 or t == cnp.NPY_INT64
            or t == cnp.NPY_INT32 or t == cnp.NPY_INT8 or t == cnp.NPY_UINT8):
        return a.copy()
    cdef cnp.ndarray out = cnp.PyArray_SimpleNew(cnp.PyArray_NDIM(src), cnp.PyArray_DIMS(src), t)
    memcpy(cnp.PyArray_DATA(out), cnp.PyArray_DATA(src), cnp.PyArray_NBYTES(src))
    return out


cdef extern from "dense_chain.h" nogil:
    void lnn_dense_chain_f32(const float *x, Py_ssize_t m, Py_ssize_t layers,
                             const float *const *w, const float *const *bias, const int *act,
                             const Py_ssize_t *dims, float *const *outs)


def dense_chain_forward(cnp.ndarray x not None, tuple ws not None, tuple bs not None,
                        tuple acts not None, tuple outs not None):
    """h = x; for each layer l: outs[l] = f_l(h @ ws[l] + bs[l]) (m, N_l), h = outs[l].
    float32; ws[l] (K_l, N_l), bs[l] (N_l,) or None. Returns outs[-1]."""
    cdef Py_ssize_t layers = len(ws), l, m = cnp.PyArray_DIMS(x)[0]
    cdef const float *w
    cdef const float *b
    cdef int act
    cdef Py_ssize_t dims[2]
    cdef const float *h = <const float *>cnp.PyArray_DATA(x)
    cdef float *o
    if cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32:
        raise TypeError(f"dense_chain_forward takes float32 arrays, not {x.dtype}")
    for l in range(layers):  # outs[l] = f(h @ W_l + b_l), one layer per C call
        w = <const float *>cnp.PyArray_DATA(<cnp.ndarray>ws[l])
        b = <const float *>_data(bs[l])
        act = acts[l]
        dims[0] = cnp.PyArray_DIMS(<cnp.ndarray>ws[l])[0]
        dims[1] = cnp.PyArray_DIMS(<cnp.ndarray>ws[l])[1]
        o = <float *>cnp.PyArray_DATA(<cnp.ndarray>outs[l])
        with nogil:
            lnn_dense_chain_f32(h, m, 1, &w, &b, &act, dims, &o)
        h = o
    return outs[layers - 1]


def c_kernel_addresses():
    """Addresses of the float32 C loops, name -> int, for compiled code that calls them with
    no Python in between: the Numba replay of ``lepton_nn.compile`` runs the very loops the
    eager step runs (its exp, tanh and log are these loops' own polynomial code, which Numba's
    libm calls would not reproduce bit for bit). Signatures as declared above."""
    return {
        "bias_act_forward_f32": <size_t>lnn_bias_act_forward_f32,
        "bias_act_backward_f32": <size_t>lnn_bias_act_backward_f32,
        "softmax_xent_forward_f32": <size_t>lnn_softmax_xent_forward_f32,
        "softmax_xent_backward_f32": <size_t>lnn_softmax_xent_backward_f32,
    }



cdef extern from "dense_packed.h" nogil:
    void lnn_dense_packed_chain_f32(const float *x, Py_ssize_t m, Py_ssize_t layers,
                                    const float *const *panels, const float *const *bias,
                                    const int *act, const Py_ssize_t *dims, float *const *outs,
                                    int threads)
    Py_ssize_t lnn_pk_units_of(Py_ssize_t m, Py_ssize_t len, int tails)
    void lnn_pk_unit_span(Py_ssize_t m, Py_ssize_t len, int tails, Py_ssize_t u, Py_ssize_t *a,
                          Py_ssize_t *b)


def _packed_units(Py_ssize_t m, Py_ssize_t length, bint tails):
    """How the packed chain cuts a range of ``length`` panels into units at ``m`` rows (a test
    hook): ``[(first panel, end), ...]`` from the range's start, in claim order; ``tails``:
    as in a threaded chain (its range ends in narrow units another thread may take)."""
    cdef Py_ssize_t a = 0, b = 0, u
    out = []
    for u in range(lnn_pk_units_of(m, length, tails)):
        lnn_pk_unit_span(m, length, tails, u, &a, &b)
        out.append((a, b))
    return out


def dense_packed_forward(cnp.ndarray x not None, tuple panels not None, tuple bs not None,
                         tuple acts not None, tuple outs not None, int threads=1):
    """h = x; for each layer l: outs[l] = f_l(h @ W_l + bs[l]) (M, N_l), h = outs[l]; W_l
    given as its panels (ceil(N_l / 16), K_l, 16) (``dense_pack``). float32, C-contiguous;
    ``threads`` > 1 splits each layer's panels over the process's native pool
    (csrc/pool.h). Returns outs[-1]."""
    cdef Py_ssize_t layers = len(panels), l, m = cnp.PyArray_DIMS(x)[0]
    cdef Py_ssize_t k = cnp.PyArray_DIMS(x)[1] if cnp.PyArray_NDIM(x) == 2 else -1
    cdef cnp.ndarray p, o
    if not (len(bs) == len(acts) == len(outs) == layers) or layers == 0:
        raise ValueError("dense_packed_forward: one panel array, bias, activation, output "
                         "per layer")
    if cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(x) or k < 0:
        raise TypeError("dense_packed_forward takes a C-contiguous float32 (M, K) input")
    # up to 16 layers the per-layer arrays live on the stack (no allocation per call: the
    # batch-1 chain is called every few microseconds)
    cdef Py_ssize_t dims_s[17]
    cdef const float *pp_s[16]
    cdef const float *bp_s[16]
    cdef float *op_s[16]
    cdef int ap_s[16]
    cdef bint heap = layers > 16
    cdef Py_ssize_t *dims = dims_s
    cdef const float **pp = pp_s
    cdef const float **bp = bp_s
    cdef float **op = op_s
    cdef int *ap = ap_s
    if heap:
        dims = <Py_ssize_t *>PyMem_Malloc((layers + 1) * sizeof(Py_ssize_t))
        pp = <const float **>PyMem_Malloc(layers * sizeof(void *))
        bp = <const float **>PyMem_Malloc(layers * sizeof(void *))
        op = <float **>PyMem_Malloc(layers * sizeof(void *))
        ap = <int *>PyMem_Malloc(layers * sizeof(int))
    try:
        if not (dims and pp and bp and op and ap):
            raise MemoryError()
        dims[0] = k
        for l in range(layers):
            p, o = panels[l], outs[l]
            b = bs[l]
            n = cnp.PyArray_DIMS(o)[1] if cnp.PyArray_NDIM(o) == 2 else -1
            if (cnp.PyArray_TYPE(p) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(p) != 3
                    or not cnp.PyArray_IS_C_CONTIGUOUS(p) or cnp.PyArray_DIMS(p)[1] != k
                    or cnp.PyArray_DIMS(p)[2] != 16 or n < 0
                    or cnp.PyArray_DIMS(p)[0] != (n + 15) // 16
                    or cnp.PyArray_TYPE(o) != cnp.NPY_FLOAT32
                    or not cnp.PyArray_IS_C_CONTIGUOUS(o) or cnp.PyArray_DIMS(o)[0] != m):
                raise ValueError(f"dense_packed_forward: layer {l}: panels "
                                 f"{(<object>p).dtype} {(<object>p).shape} and output "
                                 f"{(<object>o).dtype} {(<object>o).shape} do not fit an "
                                 f"input of {k} features, {m} rows")
            if b is not None and (cnp.PyArray_TYPE(<cnp.ndarray>b) != cnp.NPY_FLOAT32
                                  or cnp.PyArray_SIZE(<cnp.ndarray>b) != n
                                  or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>b)):
                raise ValueError(f"dense_packed_forward: layer {l}: bias must be {n} float32")
            pp[l] = <const float *>cnp.PyArray_DATA(p)
            bp[l] = <const float *>_data(b)
            op[l] = <float *>cnp.PyArray_DATA(o)
            ap[l] = acts[l]
            dims[l + 1] = n
            k = n
        with nogil:
            lnn_dense_packed_chain_f32(<const float *>cnp.PyArray_DATA(x), m, layers, pp, bp,
                                       ap, dims, op, threads)
    finally:
        if heap:
            PyMem_Free(dims)
            PyMem_Free(pp)
            PyMem_Free(bp)
            PyMem_Free(op)
            PyMem_Free(ap)
    return outs[layers - 1]


cdef extern from "read_probe.h" nogil:
    float lnn_read_probe_f32(const float *p, Py_ssize_t n, int streams, Py_ssize_t prefetch,
                             int hint, Py_ssize_t reps)


def read_probe(cnp.ndarray v not None, int streams=6, Py_ssize_t prefetch=0, int hint=0,
               Py_ssize_t reps=1):
    """Read the C-contiguous float32 ``v`` ``reps`` times with AVX2 in ``streams`` side-by-side
    parts (1-8), optionally prefetching ``prefetch`` bytes ahead (``hint`` 0: T0, 1: NTA);
    a measuring tool for the batch-1 bound (``benchmarks/bench_dense_bound.py``). Returns a
    value that depends on every load."""
    if cnp.PyArray_TYPE(v) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(v):
        raise TypeError("read_probe takes a C-contiguous float32 array")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(v)
    cdef float out
    with nogil:
        out = lnn_read_probe_f32(<const float *>cnp.PyArray_DATA(v), n, streams, prefetch, hint,
                                 reps)
    return out


include "dense_run.pxi"  # dense_packed_run: the runtime's one-call batch-1 predict
