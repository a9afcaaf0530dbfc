# Included at the end of qgemm.pyx: int8 Dense layers at a small batch, a chain in one call
# (C in csrc/qgemv.h). Python sees:
#
# qdense_chain_prepare(specs, m, k, threads=1) -> chain
#     specs: one (w_packed, w_scale, w_col_sums, bias, act, x_scale, x_zero_point) per layer,
#     as qlinear takes them, with x_scale / x_zero_point None (dynamic: each row quantized
#     with its own pair) or float32 (1,) / int32 (1,) (static: the calibrated pair); m rows
#     of k features in; each layer's columns split over up to `threads` threads of the
#     shared pool (a barrier between layers; the same bits at any count). Checks everything
#     once and keeps the arrays and its scratch.
# qdense_chain_forward(x, chain, outs) -> outs[-1]
#     x float32 (m, k); outs one float32 (m, N_l) per layer. For each layer, exactly
#     quantize_rows(h, ...) then qlinear(...) with h = x, then h = outs[l]; one call, the GIL
#     released. A chain holds scratch: one caller at a time.

from cpython.mem cimport PyMem_Free, PyMem_Malloc

cdef extern from "qgemv.h" nogil:
    ctypedef struct qv_layer:
        qg_args g
        const float *fixed_scale
        const int32_t *fixed_zp
    int64_t qv_scratch_bytes(int64_t m, int64_t kmax, int64_t layers, int parts)
    int qv_chain(const float *x, int64_t m, int64_t layers, const qv_layer *ls,
                 float *const *outs, uint8_t *scratch, int64_t kmax, int parts)
    int qv_chain_tasks(const float *x, int64_t m, int64_t layers, const qv_layer *ls,
                       float *const *outs, uint8_t *scratch, int64_t kmax, int parts,
                       const int *order, int n, unsigned stalled, int64_t *stats)


cdef class QDenseChain:
    """int8 Dense layers prepared for ``qdense_chain_forward`` (see qdense_chain_prepare)."""

    cdef qv_layer *ls
    cdef float **op
    cdef Py_ssize_t n_layers, kmax
    cdef readonly cnp.ndarray scratch  # (readonly: tests check what outputs may alias)
    cdef readonly tuple specs
    cdef readonly Py_ssize_t m, k
    cdef readonly int threads
    cdef readonly tuple widths  # N_l per layer

    def __cinit__(self):
        self.ls = NULL
        self.op = NULL

    def __dealloc__(self):
        PyMem_Free(self.ls)
        PyMem_Free(self.op)


def qdense_chain_prepare(specs, Py_ssize_t m, Py_ssize_t k, int threads=1):
    """A chain of int8 Dense layers for ``qdense_chain_forward``: ``specs`` one
    (w_packed, w_scale, w_col_sums, bias, act, x_scale, x_zero_point) per layer (x_scale,
    x_zero_point None for dynamic activations, else float32 (1,) / int32 (1,)), ``m`` rows of
    ``k`` features in, each layer's columns split over up to ``threads`` threads. Raises
    TypeError / ValueError on anything qlinear would refuse."""
    specs = tuple(specs)
    cdef Py_ssize_t L = len(specs), l, n
    if L == 0:
        raise ValueError("qdense_chain_prepare: no layers")
    if m < 0 or k < 0:
        raise ValueError(f"qdense_chain_prepare: m={m}, k={k} must be >= 0")
    if not 1 <= threads <= 64:
        raise ValueError(f"qdense_chain_prepare: threads={threads} must be in 1..64")
    cdef QDenseChain c = QDenseChain.__new__(QDenseChain)
    c.ls = <qv_layer *>PyMem_Malloc(L * sizeof(qv_layer))
    c.op = <float **>PyMem_Malloc(L * sizeof(float *))
    if c.ls == NULL or c.op == NULL:
        raise MemoryError()
    c.n_layers, c.m, c.k, c.specs, c.threads = L, m, k, specs, threads
    cdef Py_ssize_t kin = k, kmax = 0
    cdef cnp.ndarray sa, za
    widths = []
    for l in range(L):
        spec = specs[l]
        if not isinstance(spec, tuple) or len(spec) != 7:
            raise ValueError(f"layer {l}: a spec is (w_packed, w_scale, w_col_sums, bias, act, "
                             f"x_scale, x_zero_point)")
        w_packed, w_scale, w_col_sums, bias, act, x_scale, x_zero_point = spec
        if kin > K_MAX:
            raise ValueError(f"layer {l}: K={kin} > {K_MAX}: the int32 sums could overflow")
        n = _arr(w_scale, "w_scale", cnp.NPY_FLOAT32, 1).shape[0]
        _weights(&c.ls[l].g, w_packed, w_scale, w_col_sums, bias, act, n, kin)
        c.ls[l].fixed_scale = NULL
        c.ls[l].fixed_zp = NULL
        if x_scale is not None or x_zero_point is not None:
            sa = _vec(x_scale, "x_scale", cnp.NPY_FLOAT32, 1)
            za = _vec(x_zero_point, "x_zero_point", cnp.NPY_INT32, 1)
            if not (0 < (<float *>cnp.PyArray_DATA(sa))[0] <= FLT_MAX) or not (
                    0 <= (<int32_t *>cnp.PyArray_DATA(za))[0] <= 255):
                raise ValueError(f"layer {l}: static quantization needs finite scale > 0 and "
                                 f"zero_point in 0..255, got {x_scale[0]}, {x_zero_point[0]}")
            c.ls[l].fixed_scale = <const float *>cnp.PyArray_DATA(sa)
            c.ls[l].fixed_zp = <const int32_t *>cnp.PyArray_DATA(za)
        kmax = max(kmax, kin)
        widths.append(n)
        kin = n
    c.kmax = kmax
    c.widths = tuple(widths)
    # the C code aligns it (each thread's part and the counters on their own cache lines)
    c.scratch = np.zeros(qv_scratch_bytes(m, kmax, L, threads), np.uint8)
    return c


cdef _chain_outs(cnp.ndarray x, QDenseChain chain, tuple outs):
    """Check x and outs against the chain; point chain.op at outs' data."""
    cdef Py_ssize_t l, m = chain.m
    if (cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(x) != 2
            or not cnp.PyArray_IS_C_CONTIGUOUS(x) or cnp.PyArray_DIMS(x)[0] != m
            or cnp.PyArray_DIMS(x)[1] != chain.k):
        raise ValueError(f"qdense_chain_forward: x must be C-contiguous float32 "
                         f"({m}, {chain.k}), got {x.dtype} {(<object>x).shape}")
    if len(outs) != chain.n_layers:
        raise ValueError(f"qdense_chain_forward: {len(outs)} outputs for "
                         f"{chain.n_layers} layers")
    cdef cnp.ndarray o
    for l in range(chain.n_layers):
        if not cnp.PyArray_Check(outs[l]):
            raise TypeError(f"qdense_chain_forward: outs[{l}] must be a numpy array")
        o = <cnp.ndarray>outs[l]
        if (cnp.PyArray_TYPE(o) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(o) != 2
                or not cnp.PyArray_IS_C_CONTIGUOUS(o) or not cnp.PyArray_ISWRITEABLE(o)
                or cnp.PyArray_DIMS(o)[0] != m or cnp.PyArray_DIMS(o)[1] != chain.ls[l].g.N):
            raise ValueError(f"qdense_chain_forward: outs[{l}] must be writeable C-contiguous "
                             f"float32 ({m}, {chain.widths[l]}), got {o.dtype} "
                             f"{(<object>o).shape}")
        chain.op[l] = <float *>cnp.PyArray_DATA(o)


def _qdense_chain_tasks(cnp.ndarray x not None, QDenseChain chain not None,
                        tuple outs not None, order, stalled=()):
    """Test hook: one ``qdense_chain_forward`` call with the chain's tasks run one after
    another on this thread in ``order``, the parts in ``stalled`` marked as started on every
    layer beforehand (a thread that began and stopped). Returns, per part, (units of its own
    share, units taken from a part not started, units taken from a stalled part), or None
    when the chain runs on one thread."""
    _chain_outs(x, chain, outs)
    cdef int P = chain.threads, i, n = len(order)
    cdef unsigned mask = 0
    cdef int ordv[64]
    if not 0 < n <= 64 or any(not 0 <= int(t) < P for t in order):
        raise ValueError(f"order: task numbers in 0..{P - 1}, at most 64 of them")
    for i in range(n):
        ordv[i] = int(order[i])
    for t in stalled:
        mask |= (<unsigned>1) << <int>int(t)
    cdef cnp.ndarray st = np.zeros(3 * P, np.int64)
    cdef int rc = qv_chain_tasks(<const float *>cnp.PyArray_DATA(x), chain.m, chain.n_layers,
                                 chain.ls, chain.op, <uint8_t *>cnp.PyArray_DATA(chain.scratch),
                                 chain.kmax, P, ordv, n, mask, <int64_t *>cnp.PyArray_DATA(st))
    if rc < 0:
        raise MemoryError("qdense_chain_forward: no memory for an int8 GEMM's scratch")
    return None if rc == 1 else [tuple(int(v) for v in st[3 * t:3 * t + 3]) for t in range(P)]


def qdense_chain_forward(cnp.ndarray x not None, QDenseChain chain not None,
                         tuple outs not None):
    """For each layer l of ``chain``: outs[l] = qlinear(quantize_rows(h)) with h = x, then
    outs[l]; x float32 (m, k), outs[l] float32 (m, N_l), on the chain's threads. Returns
    outs[-1]."""
    _chain_outs(x, chain, outs)
    cdef Py_ssize_t m = chain.m
    cdef int rc
    with nogil:
        rc = qv_chain(<const float *>cnp.PyArray_DATA(x), m, chain.n_layers, chain.ls,
                      chain.op, <uint8_t *>cnp.PyArray_DATA(chain.scratch), chain.kmax,
                      chain.threads)
    if rc != 0:
        raise MemoryError("qdense_chain_forward: no memory for an int8 GEMM's scratch")
    return outs[chain.n_layers - 1]


# qdense_chain_run_prepare(chain, in_shape) -> run;  qdense_chain_run(run, x) -> array | -1 | -2
#     The runtime's one-call predict (lepton_nn/runtime/onecall.py): ``chain`` prepared again
#     (scratch and intermediate outputs of the runner's own), x checked by _run_gate
#     (ndarray, float32, C-contiguous, (m, *in_shape), finite), the chain run and its last
#     layer written straight into a new (m, N_last) array (or an earlier one nobody holds any
#     more: _run_out). -2: such an x holding inf or NaN;
#     -1: any other x, or the runner busy in another thread: the caller's general path.

include "input_gate.pxi"


cdef class QDenseRun:
    """An int8 Dense chain bound for ``qdense_chain_run`` (see qdense_chain_run_prepare)."""

    cdef Py_ssize_t shape[RUN_MAX_DIMS]
    cdef int nd
    cdef bint busy
    cdef readonly QDenseChain chain
    cdef readonly tuple keep  # the intermediate outputs
    cdef list outs  # its last two outputs (_run_out)


def qdense_chain_run_prepare(QDenseChain chain not None, tuple in_shape not None):
    """A runner for ``qdense_chain_run``: ``chain``'s layers (prepared anew: the runner has its
    own scratch) at its m rows, of per-sample shape ``in_shape`` (product: the chain's k)."""
    cdef QDenseRun r = QDenseRun.__new__(QDenseRun)
    cdef Py_ssize_t size, l
    r.nd = _run_shape(in_shape, r.shape, &size)
    if size != chain.k or chain.m < 1:
        raise ValueError(f"qdense_chain_run_prepare: input shape {in_shape} for a chain of "
                         f"{chain.m} rows of {chain.k} features")
    r.chain = qdense_chain_prepare(chain.specs, chain.m, chain.k, chain.threads)
    r.busy, r.outs = False, [None, None]
    keep = []
    for l in range(r.chain.n_layers - 1):
        o = np.empty((chain.m, r.chain.widths[l]), np.float32)
        r.chain.op[l] = <float *>cnp.PyArray_DATA(<cnp.ndarray>o)
        keep.append(o)
    r.keep = tuple(keep)
    return r


def qdense_chain_run(QDenseRun run not None, x):
    """The chain's output for ``x`` in a new array, or -1 / -2 (see above)."""
    if run.busy:
        return -1
    cdef QDenseChain c = run.chain
    cdef Py_ssize_t m = _run_gate(x, c.m, run.shape, run.nd)
    if m < 0:
        return m
    cdef cnp.ndarray out = _run_out(run.outs, m, c.ls[c.n_layers - 1].g.N)
    c.op[c.n_layers - 1] = <float *>cnp.PyArray_DATA(out)
    cdef const float *xp = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef int rc
    run.busy = True  # set and read under the GIL: another thread's call takes the long path
    with nogil:
        rc = qv_chain(xp, m, c.n_layers, c.ls, c.op, <uint8_t *>cnp.PyArray_DATA(c.scratch),
                      c.kmax, c.threads)
    run.busy = False
    if rc != 0:
        raise MemoryError("qdense_chain_run: no memory for an int8 GEMM's scratch")
    return out
