# Included by dense.pyx and qgemm.pyx: the input gate of a one-call runner (dense_run.pxi,
# qgemv.pxi), which checks the caller's array, runs a whole prepared chain and returns a
# fresh output, all in one call from Python.

cdef extern from "finite.h" nogil:
    int lnn_all_finite_f32(const float *x, Py_ssize_t n)
    int lnn_all_finite_f32_plain(const float *x, Py_ssize_t n)
    int lnn_all_finite_f64(const double *x, Py_ssize_t n)
    int lnn_all_finite_f64_plain(const double *x, Py_ssize_t n)

from cpython.object cimport PyObject
from cpython.list cimport PyList_GET_ITEM

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyArrayObject_fields:
        PyObject *weakreflist
    void _list_set "PyList_SET_ITEM"(object, Py_ssize_t, PyObject *)  # no count changed
    void _incref "Py_INCREF"(PyObject *)
    void _decref "Py_DECREF"(PyObject *)

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


cdef bint _unheld(PyObject *p, Py_ssize_t m, Py_ssize_t n) noexcept:
    """Whether ``p``, an earlier output of a runner held in its ``outs``, is held by nobody
    else (its only reference is that list's: no variable, view, buffer or weak reference) and
    still a plain writeable (m, n) float32 C array of its own memory: then no one can see it
    change, and the runner writes its next output into it instead of a new array."""
    if p.ob_refcnt != 1 or <PyObject *>p.ob_type != <PyObject *>cnp.ndarray:
        return False
    if (<PyArrayObject_fields *>p).weakreflist != NULL:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>p
    cdef int need = (cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
                     | cnp.NPY_ARRAY_WRITEABLE | cnp.NPY_ARRAY_OWNDATA)
    return (cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32 and cnp.PyArray_ISNOTSWAPPED(a)
            and cnp.PyArray_FLAGS(a) & need == need and cnp.PyArray_BASE(a) == NULL
            and cnp.PyArray_NDIM(a) == 2 and cnp.PyArray_DIMS(a)[0] == m
            and cnp.PyArray_DIMS(a)[1] == n and cnp.PyArray_STRIDES(a)[0] == 4 * n
            and cnp.PyArray_STRIDES(a)[1] == 4)


cdef cnp.ndarray _run_out(list outs, Py_ssize_t m, Py_ssize_t n):
    """The (m, n) float32 array a runner returns next: one of its last two outputs (``outs``,
    most recent first) that nobody holds any more (_unheld: a caller that dropped it, or one
    that keeps only the last output, as ``y = predict(x)`` in a loop does), else a new one;
    either way ``outs[0]`` after. NumPy: np.empty((m, n), np.float32), minus the allocation
    (and the caller's deallocation) while the caller keeps at most one of them. The list's
    items are moved as pointers (a swap keeps every count)."""
    cdef PyObject *first = PyList_GET_ITEM(outs, 0)
    cdef PyObject *second = PyList_GET_ITEM(outs, 1)
    cdef cnp.npy_intp od[2]
    if _unheld(first, m, n):
        return <cnp.ndarray>first
    if _unheld(second, m, n):  # outs = [second, first]
        _list_set(outs, 0, second)
        _list_set(outs, 1, first)
        return <cnp.ndarray>second
    od[0], od[1] = m, n
    cdef cnp.ndarray a = cnp.PyArray_SimpleNew(2, od, cnp.NPY_FLOAT32)
    _incref(<PyObject *>a)  # outs = [a, first]: the list's reference to a; second's dropped
    _list_set(outs, 0, <PyObject *>a)
    _list_set(outs, 1, first)
    _decref(second)
    return a


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
