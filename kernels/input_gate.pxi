# Included by dense.pyx and qgemm.pyx: the input gate of a one-call runner (dense_run.pxi,
# qgemv.pxi), which checks the caller's array, runs a whole prepared chain and returns a
# fresh output, all in one call from Python.

cdef extern from "finite.h" nogil:
    int lnn_all_finite_f32(const float *x, Py_ssize_t n)
    int lnn_all_finite_f32_plain(const float *x, Py_ssize_t n)
    int lnn_all_finite_f64(const double *x, Py_ssize_t n)
    int lnn_all_finite_f64_plain(const double *x, Py_ssize_t n)

# the per-sample dimensions a runner checks (more than enough for any Dense chain's input)
cdef enum:
    RUN_MAX_DIMS = 8


cdef Py_ssize_t _gate(object x, int typenum, Py_ssize_t m, const Py_ssize_t *shape,
                     int nd) except -3:
    """The input gate of a plan (``input_rows``) and of a runner: ``x.shape[0]`` when ``x``
    is exactly what they read: a ``numpy.ndarray`` (not a subclass), C-contiguous, aligned,
    native-endian (a '>f4' has float32's type number too), of dtype number ``typenum``
    (float32 or float64) and shape (n, *shape[:nd]) with n == m (any n when m < 0), and no
    inf or NaN; -2 when it is such an array holding inf or NaN; -1 when it is not (the
    caller takes the general path, which converts, checks and raises as usual)."""
    if type(x) is not cnp.ndarray:
        return -1
    cdef cnp.ndarray a = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(a)
    if (t != typenum or (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64)
            or cnp.PyArray_NDIM(a) != nd + 1 or not cnp.PyArray_IS_C_CONTIGUOUS(a)
            or not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_ISALIGNED(a)):
        return -1
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(a)
    cdef int i
    if m >= 0 and dims[0] != m:
        return -1
    for i in range(nd):
        if dims[i + 1] != shape[i]:
            return -1
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef void *p = cnp.PyArray_DATA(a)
    cdef int ok
    if n < 65536:  # a short pass: releasing the GIL would cost more
        ok = lnn_all_finite_f32(<float *>p, n) if t == cnp.NPY_FLOAT32 else \
            lnn_all_finite_f64(<double *>p, n)
    else:
        with nogil:  # NumPy: bool(np.isfinite(x).all())
            ok = lnn_all_finite_f32(<float *>p, n) if t == cnp.NPY_FLOAT32 else \
                lnn_all_finite_f64(<double *>p, n)
    return dims[0] if ok else -2


cdef inline Py_ssize_t _run_gate(object x, Py_ssize_t m, const Py_ssize_t *shape,
                                 int nd) except -3:
    """_gate for a runner: float32, batch m."""
    return _gate(x, cnp.NPY_FLOAT32, m, shape, nd)


cdef int _run_shape(object in_shape, Py_ssize_t *shape, Py_ssize_t *size) except -1:
    """Copy a per-sample shape (a tuple of ints > 0) into ``shape``; its product to ``size``;
    returns the number of dimensions."""
    cdef Py_ssize_t nd = len(in_shape), i, d
    if not 1 <= nd <= RUN_MAX_DIMS:
        raise ValueError(f"a runner's input shape has 1 to {RUN_MAX_DIMS} dimensions, "
                         f"got {in_shape!r}")
    size[0] = 1
    for i in range(nd):
        d = in_shape[i]
        if d <= 0:
            raise ValueError(f"a runner's input shape must be positive, got {in_shape!r}")
        shape[i] = d
        size[0] *= d
    return <int>nd


def _all_finite_twins(cnp.ndarray x not None):
    """Test hook: (dispatched, plain C) answers of finite.h for a C-contiguous float32 or
    float64 ``x``: the SIMD loop (where the CPU has one) and its plain C twin."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(x):
        raise ValueError("_all_finite_twins takes a C-contiguous array")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef void *p = cnp.PyArray_DATA(x)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        return (bool(lnn_all_finite_f32(<float *>p, n)),
                bool(lnn_all_finite_f32_plain(<float *>p, n)))
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64:
        return (bool(lnn_all_finite_f64(<double *>p, n)),
                bool(lnn_all_finite_f64_plain(<double *>p, n)))
    raise TypeError(f"_all_finite_twins takes float32 or float64, not {x.dtype}")
