# The test hook of csrc/alloc.h for this extension's scratch allocations (each extension has
# its own counter): included by every .pyx whose C allocates. Tests only.

cdef extern from "alloc.h" nogil:
    void lnn_alloc_fail_next(long k)
    int lnn_alloc_hooked()


def _fail_allocations(long k):
    """Test hook: the next ``k`` scratch allocations of this extension fail (``k < 0``: all
    of them until ``_fail_allocations(0)``). Returns False where the hook is inert (a
    compiler without atomics builtins)."""
    lnn_alloc_fail_next(k)
    return bool(lnn_alloc_hooked())
