# cython: language_level=3
"""The training GEMM (``csrc/gemm_train.h``, its units on the shared native pool), float32:
``out (m, n) = A' @ B'`` with ``A' = a.T if ta else a``, ``B' = b.T if tb else b``.

Every output is one fused multiply-add chain over k in order from 0, whatever the thread
count, so one thread or several give bit-identical results. The twin is ``np.matmul`` (the
same products, summed in another order). ``address()`` gives the C entry to the Numba replay
of ``lepton_nn.compile``, which calls it without the GIL.
"""

cimport numpy as cnp

cnp.import_array()

include "pool_bind.pxi"
include "alloc_hook.pxi"  # _fail_allocations: tests of the out-of-memory path

cdef extern from "gemm_train.h" nogil:
    int lnn_gemm_train_f32(const float *a, int ta, const float *b, int tb, float *c,
                           Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, int threads)
    long long lnn_gt_scratch_bytes()
    int LNN_GT_WINDOW, LNN_GT_KEEP, LNN_GT_QUANTUM
    int lnn_gt_ahead

#: requests of a thread's scratch slot after which a buffer above twice their largest is
#: given back; a slot-0 (packed A) buffer above KEEP floats is given back after its call
SCRATCH_WINDOW = LNN_GT_WINDOW
SCRATCH_KEEP_FLOATS = LNN_GT_KEEP
SCRATCH_QUANTUM_FLOATS = LNN_GT_QUANTUM


cdef int _entry(const float *a, int ta, const float *b, int tb, float *c, Py_ssize_t m,
                Py_ssize_t n, Py_ssize_t k, int threads) noexcept nogil:
    return lnn_gemm_train_f32(a, ta, b, tb, c, m, n, k, threads)


def gemm(cnp.ndarray a not None, bint ta, cnp.ndarray b not None, bint tb,
         cnp.ndarray out not None, int threads):
    """out = A' @ B' (float32, C-contiguous, shapes checked by the caller) on up to
    ``threads`` threads. Returns out."""
    cdef Py_ssize_t m = cnp.PyArray_DIMS(out)[0], n = cnp.PyArray_DIMS(out)[1]
    cdef Py_ssize_t k = cnp.PyArray_DIMS(a)[0] if ta else cnp.PyArray_DIMS(a)[1]
    cdef const float *ap = <const float *>cnp.PyArray_DATA(a)
    cdef const float *bp = <const float *>cnp.PyArray_DATA(b)
    cdef float *op = <float *>cnp.PyArray_DATA(out)
    cdef int rc
    with nogil:
        rc = lnn_gemm_train_f32(ap, ta, bp, tb, op, m, n, k, threads)
    if rc != 0:
        raise MemoryError("gemm: no memory for the packing scratch")
    return out


def set_fetch_ahead(bint on):
    """Prefetch the next unit's first K block of B', the next lines of A^T and the next
    tile's lines of C (default on); off: for an A/B of it in one process. The results are
    the same bits either way."""
    global lnn_gt_ahead
    lnn_gt_ahead = 1 if on else 0


def scratch_bytes():
    """Bytes of packing scratch all threads hold now (each thread keeps its buffers between
    calls, within the bounds of ``csrc/gemm_train.h``; a thread's are freed when it exits)."""
    return lnn_gt_scratch_bytes()


def address():
    """The C entry ``int f(const float *a, int ta, const float *b, int tb, float *c,
    ssize_t m, ssize_t n, ssize_t k, int threads)`` as an integer (0 on error-free return)."""
    return <size_t>&_entry
