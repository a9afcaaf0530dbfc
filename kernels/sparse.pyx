# cython: language_level=3
"""Sparse Dense layer: y = act(x @ W + bias) for a pruned W (K, N), float32 (C in csrc/sparse.h).

W is stored as CSR over its output columns (the CSR of W.T):

    indptr, indices, values = to_csr(W)      # int32 (N + 1,), int32 (nnz,), float32 (nnz,)
    # column n: W[indices[indptr[n]:indptr[n+1]], n] == values[indptr[n]:indptr[n+1]]
    sparse_linear(x, indptr, indices, values, bias, act, out)   # x (B, K) -> out (B, N)

to_csr(w, threshold=0.0) -> (indptr, indices, values)
    Keeps the entries with |w| > threshold (and NaNs), row indices ascending within each column.
to_dense(indptr, indices, values, K) -> w (K, N)
sparse_linear(x, indptr, indices, values, bias, act, out, kernel=0, check=True) -> out
    out[b, n] = act(sum_j values[j] * x[b, indices[j]] + bias[n]), j in column n.
    x float32 (B, K); bias float32 (N,) or None; act 0 identity, 1 relu, 2 sigmoid, 3 tanh,
    4 gelu (tanh approximation); out float32 (B, N). kernel 0 picks by batch size
    (batch_min()), 1 forces the per-row kernel, 2 the batch-innermost kernel.
    With check=True the CSR structure is checked (O(nnz), vectorized; ~4 us per 100k
    nonzeros) before the compiled loop runs. check=False skips only that scan, for callers
    that validated the structure once already (the runtime, at load): an invalid CSR then
    reads out of bounds. Dtypes, shapes and contiguity are always checked.

sparse_chain_prepare(specs, k, threads=1) -> SparseChain
sparse_chain_forward(x, chain, outs) -> outs[-1]
    Sparse Dense layers one after the other in one call (csrc/sparse_chain.h): specs one
    (indptr, indices, values, bias, act) per layer, k the features in; outs[l] (B, N_l) =
    act_l(h @ W_l + b_l), h = x then outs[l - 1]. The same bits as sparse_linear layer by
    layer (kernel 0), at any thread count: a layer's columns are cut into tasks of about equal
    nonzeros, run on the shared pool (kernels/csrc/pool.h), a barrier between layers. Indices
    are read as uint16 where k <= 65536 (batch-1 path). The structure is checked at prepare.

ISA: avx512, avx2 (+FMA), portable, chosen at import; LEPTON_ISA (amx/avx512vnni -> avx512,
avxvnni/avx2 -> avx2, portable) forces a lower one. isa(), supported_isas(), set_isa(name).
The GIL is released; sparse_linear is single-threaded, the chain runs on the pool.
"""

import os
import warnings

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint16_t

cnp.import_array()

cdef extern from "sparse.h" nogil:
    ctypedef struct sp_args:
        const float *x
        int64_t B, K, N
        const int32_t *indptr
        const int32_t *idx
        const float *val
        const float *bias
        int act
        float *out
    int SP_NISA
    int sp_cpu
    int sp_active
    int64_t sp_batch_min
    int sp_rows_variant
    int sp_init()
    int sp_set_isa(int isa)
    int sp_run(const sp_args *p, int kernel)
    int sp_check(const int32_t *indptr, int64_t n, const int32_t *idx, int64_t nnz, int64_t K)

cdef extern from "sparse_chain.h" nogil:
    ctypedef struct spc_layer:
        sp_args a
        const uint16_t *idx16
        const int32_t *split
        int64_t tasks
    ctypedef struct spc_chain:
        int nl
        int64_t B
        spc_layer L[16]
    int SPC_MAXL
    int spc_run(spc_chain *ch, int threads)

include "pool_bind.pxi"  # sparse_chain_forward's threads: the shared pool
include "alloc_hook.pxi"  # _fail_allocations: tests of the out-of-memory path

ISAS = ("portable", "avx2", "avx512")
_ALIASES = {"amx": "avx512", "avx512vnni": "avx512", "avxvnni": "avx2"}

sp_init()


def supported_isas():
    """Names of the paths usable on this CPU, best first."""
    return [ISAS[i] for i in range(SP_NISA - 1, -1, -1) if sp_cpu & (1 << i)]


def isa():
    """Name of the active path."""
    return ISAS[sp_active]


def set_isa(name):
    """Use path ``name`` (or an alias from LEPTON_ISA), or the best usable one below it."""
    name = _ALIASES.get(name, name)
    if name not in ISAS:
        raise ValueError(f"unknown ISA {name!r}; choose one of {', '.join(ISAS)}")
    return ISAS[sp_set_isa(ISAS.index(name))]


def batch_min():
    """Batch size from which sparse_linear(kernel=0) uses the batch-innermost kernel."""
    return sp_batch_min


def set_batch_min(int b):
    """Set the batch size from which the batch-innermost kernel is used (>= 1)."""
    global sp_batch_min
    if b < 1:
        raise ValueError("batch_min must be >= 1")
    sp_batch_min = b


def _set_rows_variant(int v):
    """Test/benchmark hook for the batch-1 kernel: 1 scalar accumulators (default), 0 gathers."""
    global sp_rows_variant
    sp_rows_variant = v


_env = os.environ.get("LEPTON_ISA", "").strip().lower()
if _env:
    if _ALIASES.get(_env, _env) in ISAS:
        set_isa(_env)
    else:
        warnings.warn(f"LEPTON_ISA={_env!r} ignored", RuntimeWarning, stacklevel=2)


def to_csr(w, threshold=0.0):
    """W (K, N) -> CSR over output columns: (indptr int32 (N+1,), indices int32 (nnz,),
    values float32 (nnz,)), keeping |w| > threshold (and NaNs)."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (K, N), got shape {w.shape}")
    if w.shape[0] >= 2**31 or w.size >= 2**31:
        raise ValueError("w too large for int32 indices")
    wt = w.T  # (N, K): row n of wt is column n of w
    keep = ~(np.abs(wt) <= threshold)  # NaNs kept: the product must show them
    cols, rows = np.nonzero(keep)  # row-major scan: per column, rows ascending
    indptr = np.zeros(w.shape[1] + 1, np.int32)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    return indptr, rows.astype(np.int32), wt[cols, rows].astype(np.float32)


def to_dense(indptr, indices, values, K):
    """Inverse of to_csr: W (K, N) float32."""
    N = len(indptr) - 1
    w = np.zeros((K, N), np.float32)
    cols = np.repeat(np.arange(N), np.diff(indptr))
    w[indices, cols] = values
    return w


cdef cnp.ndarray _arr(object a, str name, int typenum, int ndim, bint writeable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{name} must be {np.dtype(cnp.PyArray_DescrFromType(typenum))}, "
                        f"got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name} must be writeable")
    return arr


def sparse_linear(x, indptr, indices, values, bias, int act, out, int kernel=0,
                  bint check=True):
    """out = act(x @ W + bias), W given as CSR over output columns (see to_csr).

    x float32 (B, K); indptr int32 (N+1,); indices int32 (nnz,); values float32 (nnz,);
    bias float32 (N,) or None; act 0..4; out float32 (B, N). Returns out. check=False skips
    the O(nnz) CSR structure check (only for a CSR validated before, as the runtime does).
    """
    cdef cnp.ndarray xa = _arr(x, "x", cnp.NPY_FLOAT32, 2)
    cdef cnp.ndarray oa = _arr(out, "out", cnp.NPY_FLOAT32, 2, True)
    cdef cnp.ndarray ip = _arr(indptr, "indptr", cnp.NPY_INT32, 1)
    cdef cnp.ndarray ix = _arr(indices, "indices", cnp.NPY_INT32, 1)
    cdef cnp.ndarray va = _arr(values, "values", cnp.NPY_FLOAT32, 1)
    cdef Py_ssize_t B = xa.shape[0], K = xa.shape[1], N = oa.shape[1], nnz = ix.shape[0]
    if oa.shape[0] != B:
        raise ValueError(f"out has {oa.shape[0]} rows, x has {B}")
    if ip.shape[0] != N + 1:
        raise ValueError(f"indptr must have shape ({N + 1},) for out with {N} columns, "
                         f"got {indptr.shape}")
    if va.shape[0] != nnz:
        raise ValueError(f"values {values.shape} and indices {indices.shape} differ in length")
    cdef cnp.ndarray ba = None
    if bias is not None:
        ba = _arr(bias, "bias", cnp.NPY_FLOAT32, 1)
        if ba.shape[0] != N:
            raise ValueError(f"bias must have shape ({N},), got {bias.shape}")
    if act < 0 or act > 4:
        raise ValueError(f"act must be an activation code 0..4, got {act}")
    if kernel < 0 or kernel > 2:
        raise ValueError(f"kernel must be 0 (auto), 1 (rows) or 2 (batch), got {kernel}")
    cdef const int32_t *ipp = <const int32_t *>cnp.PyArray_DATA(ip)
    cdef const int32_t *ixp = <const int32_t *>cnp.PyArray_DATA(ix)
    cdef int ok = 1
    if check:
        with nogil:
            ok = sp_check(ipp, N, ixp, nnz, K)
    if not ok:
        raise ValueError(f"invalid CSR: indptr must start at 0, never decrease and end at "
                         f"nnz={nnz}; every index must lie in [0, {K})")
    cdef sp_args p
    p.x = <const float *>cnp.PyArray_DATA(xa)
    p.B = B
    p.K = K
    p.N = N
    p.indptr = ipp
    p.idx = ixp
    p.val = <const float *>cnp.PyArray_DATA(va)
    p.bias = <const float *>cnp.PyArray_DATA(ba) if ba is not None else NULL
    p.act = act
    p.out = <float *>cnp.PyArray_DATA(oa)
    with nogil:
        ok = sp_run(&p, kernel)
    if ok != 0:
        raise MemoryError("sparse_linear: no memory for the batch buffers")
    return out


def chain_splits(indptr, int threads):
    """Column bounds (tasks + 1,) int32 cutting the columns of a CSR (indptr (N + 1,)) into
    tasks of about equal nonzeros: 1 task on one thread, else up to 4 per thread; every bound
    but the last a multiple of 16 columns."""
    ip = np.asarray(indptr, np.int64)
    n = ip.shape[0] - 1
    groups = (n + 15) // 16
    tasks = 1 if threads <= 1 else max(1, min(groups, 4 * threads))
    nnz = int(ip[n]) if n > 0 else 0
    if tasks == 1 or nnz == 0:
        return np.array([0, n], np.int32)
    # the column where the cumulative nonzeros pass i / tasks of them, to a multiple of 16
    targets = nnz * np.arange(1, tasks) / tasks
    cols = np.searchsorted(ip, targets)
    cols = np.minimum(np.rint(cols / 16).astype(np.int64) * 16, n)
    bounds = np.concatenate(([0], np.maximum.accumulate(cols), [n]))
    return bounds.astype(np.int32)


cdef class SparseChain:
    """Sparse Dense layers prepared for sparse_chain_forward: ``specs`` (indptr, indices,
    values, bias, act) per layer, ``k`` features in, ``widths`` N per layer, ``threads``."""

    cdef readonly tuple specs
    cdef readonly tuple widths
    cdef readonly Py_ssize_t k
    cdef readonly int threads
    cdef tuple _keep
    cdef spc_chain c


def sparse_chain_prepare(specs, Py_ssize_t k, int threads=1):
    """A SparseChain of ``specs``: one (indptr int32 (N+1,), indices int32 (nnz,), values
    float32 (nnz,), bias float32 (N,) or None, act 0..4) per layer; ``k`` features in (the
    next layer's are the previous one's N); ``threads``: the pool threads of each call.
    Checks every array and the CSR structure (ValueError / TypeError) once, here."""
    specs = tuple(tuple(sp) for sp in specs)
    if not 1 <= len(specs) <= SPC_MAXL:
        raise ValueError(f"a sparse chain has 1 to {SPC_MAXL} layers, got {len(specs)}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    cdef SparseChain ch = SparseChain.__new__(SparseChain)
    cdef Py_ssize_t K = k, N, nnz, l
    cdef cnp.ndarray ip, ix, va, ba, i16, sp
    cdef int act, ok
    keep, widths = [], []
    ch.c.nl = <int>len(specs)
    for l, spec in enumerate(specs):
        if len(spec) != 5:
            raise ValueError(f"layer {l}: a spec is (indptr, indices, values, bias, act)")
        indptr, indices, values, bias, act = spec
        ip = _arr(indptr, f"layer {l} indptr", cnp.NPY_INT32, 1)
        ix = _arr(indices, f"layer {l} indices", cnp.NPY_INT32, 1)
        va = _arr(values, f"layer {l} values", cnp.NPY_FLOAT32, 1)
        N, nnz = ip.shape[0] - 1, ix.shape[0]
        if N < 1:
            raise ValueError(f"layer {l}: indptr must have at least 2 entries")
        if va.shape[0] != nnz:
            raise ValueError(f"layer {l}: values {values.shape} and indices {indices.shape} "
                             "differ in length")
        ba = None
        if bias is not None:
            ba = _arr(bias, f"layer {l} bias", cnp.NPY_FLOAT32, 1)
            if ba.shape[0] != N:
                raise ValueError(f"layer {l}: bias must have shape ({N},), got {bias.shape}")
        if act < 0 or act > 4:
            raise ValueError(f"layer {l}: act must be an activation code 0..4, got {act}")
        with nogil:
            ok = sp_check(<const int32_t *>cnp.PyArray_DATA(ip), N,
                          <const int32_t *>cnp.PyArray_DATA(ix), nnz, K)
        if not ok:
            raise ValueError(f"layer {l}: invalid CSR: indptr must start at 0, never decrease "
                             f"and end at nnz={nnz}; every index must lie in [0, {K})")
        i16 = np.ascontiguousarray(ix, np.uint16) if K <= 65536 else None
        sp = chain_splits(ip, threads)
        keep.append((ip, ix, va, ba, i16, sp))
        ch.c.L[l].a.K = K
        ch.c.L[l].a.N = N
        ch.c.L[l].a.indptr = <const int32_t *>cnp.PyArray_DATA(ip)
        ch.c.L[l].a.idx = <const int32_t *>cnp.PyArray_DATA(ix)
        ch.c.L[l].a.val = <const float *>cnp.PyArray_DATA(va)
        ch.c.L[l].a.bias = <const float *>cnp.PyArray_DATA(ba) if ba is not None else NULL
        ch.c.L[l].a.act = act
        ch.c.L[l].idx16 = <const uint16_t *>cnp.PyArray_DATA(i16) if i16 is not None else NULL
        ch.c.L[l].split = <const int32_t *>cnp.PyArray_DATA(sp)
        ch.c.L[l].tasks = sp.shape[0] - 1
        widths.append(N)
        K = N
    ch.specs, ch.widths, ch.k, ch._keep = specs, tuple(widths), k, tuple(keep)
    ch.threads = max(1, threads)
    return ch


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(b)
    return a0 < b0 + cnp.PyArray_NBYTES(b) and b0 < a0 + cnp.PyArray_NBYTES(a)


def sparse_chain_forward(x, SparseChain chain, outs):
    """The chain's layers one after the other: h = x; outs[l] = act_l(h @ W_l + b_l) (B, N_l),
    h = outs[l]. x float32 (B, k); outs a tuple of float32 (B, N_l), none sharing memory with
    its layer's input. Returns outs[-1]."""
    cdef cnp.ndarray xa = _arr(x, "x", cnp.NPY_FLOAT32, 2)
    cdef Py_ssize_t B = xa.shape[0], l, nl = chain.c.nl
    if xa.shape[1] != chain.k:
        raise ValueError(f"x has {xa.shape[1]} features, the chain takes {chain.k}")
    if not isinstance(outs, tuple) or len(outs) != nl:
        raise ValueError(f"outs must be a tuple of {nl} arrays")
    cdef spc_chain c = chain.c
    cdef cnp.ndarray src = xa, oa
    for l in range(nl):
        oa = _arr(outs[l], f"outs[{l}]", cnp.NPY_FLOAT32, 2, True)
        if oa.shape[0] != B or oa.shape[1] != c.L[l].a.N:
            raise ValueError(f"outs[{l}] must have shape ({B}, {c.L[l].a.N}), got {outs[l].shape}")
        if B and _overlap(oa, src):
            raise ValueError(f"outs[{l}] shares memory with its layer's input")
        c.L[l].a.x = <const float *>cnp.PyArray_DATA(src)
        c.L[l].a.out = <float *>cnp.PyArray_DATA(oa)
        c.L[l].a.B = B
        src = oa
    c.B = B
    cdef int rc
    with nogil:
        rc = spc_run(&c, chain.threads)
    if rc != 0:
        raise MemoryError("sparse_chain_forward: no memory for the batch buffers")
    return outs[nl - 1]
