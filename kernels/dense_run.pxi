# Included at the end of dense.pyx: a float32 packed Dense chain bound once for the runtime's
# one-call predict (lepton_nn/runtime/onecall.py). Python sees:
#
# dense_packed_run_prepare(panels, bs, acts, outs, threads, m, in_shape) -> run
#     the arguments of a plan's dense_packed_forward call (outs give the layers' widths; the
#     runner keeps buffers of its own), m rows of per-sample shape in_shape in (its product is
#     the first layer's K). Checks everything once, as dense_packed_forward does per call.
# dense_packed_run(run, x) -> a new (m, N_last) float32 array, or -1 / -2
#     x exactly what the chain reads (_run_gate: ndarray, float32, C-contiguous, (m,
#     *in_shape), finite): the chain's output, written straight into a new array (no copy:
#     nothing the runner keeps can alias it), or into one of its last two outputs that nobody
#     holds any more (_run_out: input_gate.pxi). -2: such an array holding inf or NaN; -1: any
#     other x, or the runner busy in another thread (the GIL is released while the chain
#     runs): the caller takes the general path, which checks, refuses and raises as before.

include "input_gate.pxi"


cdef class DensePackedRun:
    """A packed Dense chain with every argument resolved (see dense_packed_run_prepare)."""

    cdef Py_ssize_t shape[RUN_MAX_DIMS]
    cdef Py_ssize_t dims[17]
    cdef const float *pp[16]
    cdef const float *bp[16]
    cdef float *op[16]
    cdef int ap[16]
    cdef int nd
    cdef bint busy
    cdef readonly Py_ssize_t m, layers
    cdef readonly int threads
    cdef readonly tuple keep  # the arrays pointed at: panels, biases, intermediate buffers
    cdef list outs  # its last two outputs (_run_out)


def dense_packed_run_prepare(tuple panels not None, tuple bs not None, tuple acts not None,
                             tuple outs not None, int threads, Py_ssize_t m,
                             tuple in_shape not None):
    """A runner for ``dense_packed_run``: the chain ``dense_packed_forward(x, panels, bs, acts,
    outs, threads)`` at ``m`` rows of per-sample shape ``in_shape``, with buffers of its own
    for the intermediate outputs. ValueError on anything dense_packed_forward would refuse."""
    cdef DensePackedRun r = DensePackedRun.__new__(DensePackedRun)
    cdef Py_ssize_t layers = len(panels), l, n, k
    if not (len(bs) == len(acts) == len(outs) == layers) or not 0 < layers <= 16:
        raise ValueError("dense_packed_run_prepare: 1 to 16 layers, one panel array, bias, "
                         "activation and output each")
    if m < 1 or not 1 <= threads <= 64:
        raise ValueError(f"dense_packed_run_prepare: m={m}, threads={threads}")
    r.nd = _run_shape(in_shape, r.shape, &k)
    r.m, r.layers, r.threads, r.busy, r.outs = m, layers, threads, False, [None, None]
    keep = []
    cdef cnp.ndarray p, o, b
    cdef cnp.npy_intp od[2]
    r.dims[0] = k
    for l in range(layers):
        p, o = panels[l], outs[l]
        n = cnp.PyArray_DIMS(o)[1] if cnp.PyArray_NDIM(o) == 2 else -1
        if (cnp.PyArray_TYPE(p) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(p) != 3
                or not cnp.PyArray_IS_C_CONTIGUOUS(p) or cnp.PyArray_DIMS(p)[1] != k
                or cnp.PyArray_DIMS(p)[2] != 16 or n < 1
                or cnp.PyArray_DIMS(p)[0] != (n + 15) // 16):
            raise ValueError(f"dense_packed_run_prepare: layer {l}: panels "
                             f"{(<object>p).dtype} {(<object>p).shape} and output width {n} do "
                             f"not fit an input of {k} features")
        r.bp[l] = NULL
        if bs[l] is not None:
            b = bs[l]
            if (cnp.PyArray_TYPE(b) != cnp.NPY_FLOAT32 or cnp.PyArray_SIZE(b) != n
                    or not cnp.PyArray_IS_C_CONTIGUOUS(b)):
                raise ValueError(f"dense_packed_run_prepare: layer {l}: bias must be {n} "
                                 f"float32")
            r.bp[l] = <const float *>cnp.PyArray_DATA(b)
            keep.append(b)
        r.pp[l] = <const float *>cnp.PyArray_DATA(p)
        r.ap[l] = acts[l]
        keep.append(p)
        if l < layers - 1:  # the intermediate outputs: the runner's own
            od[0], od[1] = m, n
            o = cnp.PyArray_SimpleNew(2, od, cnp.NPY_FLOAT32)
            r.op[l] = <float *>cnp.PyArray_DATA(o)
            keep.append(o)
        r.dims[l + 1] = n
        k = n
    r.keep = tuple(keep)
    return r


def dense_packed_run(DensePackedRun run not None, x):
    """The chain's output for ``x`` in a new array, or -1 / -2 (see dense_packed_run_prepare
    above)."""
    if run.busy:
        return -1
    cdef Py_ssize_t m = _run_gate(x, run.m, run.shape, run.nd)
    if m < 0:
        return m
    cdef cnp.ndarray out = _run_out(run.outs, m, run.dims[run.layers])
    run.op[run.layers - 1] = <float *>cnp.PyArray_DATA(out)
    cdef const float *xp = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
    run.busy = True  # set and read under the GIL: another thread's call takes the long path
    with nogil:
        lnn_dense_packed_chain_f32(xp, m, run.layers, run.pp, run.bp, run.ap, run.dims,
                                   run.op, run.threads)
    run.busy = False
    return out
