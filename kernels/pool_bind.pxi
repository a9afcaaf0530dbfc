# Included by every extension module with parallel regions: their C code (csrc/pool.h's
# lnn_parallel) runs them on the process's one pool, lepton_nn.kernels._pool, bound here
# from its capsule at import. Without that module, the regions run on the calling thread.

from cpython.pycapsule cimport PyCapsule_GetPointer

cdef extern from "pool.h" nogil:
    ctypedef int (*lnn_task_fn)(void *ctx, Py_ssize_t task) noexcept nogil
    void lnn_pool_bind(const void *api)
    int lnn_parallel(lnn_task_fn fn, void *ctx, Py_ssize_t tasks, int threads)


def _bind_pool():
    try:
        from lepton_nn.kernels._pool import api
    except ImportError:  # not built: every region on its caller
        return False
    lnn_pool_bind(PyCapsule_GetPointer(api, b"lepton_nn.pool"))
    return True


POOL_BOUND = _bind_pool()
