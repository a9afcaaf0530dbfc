"""Kernels compiled ahead of time from ``kernels/*.pyx`` (C with SIMD where it pays).

Each extension module is optional: a kernel whose module did not build falls back, by
inheritance, to its NumPy twin in :mod:`lepton_nn.backend.reference`. Each module is imported
at the first use of one of its kernels (:class:`_Compiled`), so a process that only serves an
MLP never loads the conv, recurrent, sparse, int8 or training-GEMM extensions.
"""

from __future__ import annotations

import importlib

import numpy as np

from .reference import ReferenceBackend
from .threads import PARALLEL_MIN_FLOPS, blas_gemm, threads_for

_EXTENSIONS = ("dense", "conv", "recurrent", "qgemm", "sparse", "gemm")


def _ext(name: str):
    """The compiled module ``lepton_nn.kernels._<name>`` (None where it did not build),
    imported at its first use and kept as this module's global ``_<name>``."""
    key = f"_{name}"
    g = globals()
    if key not in g:
        try:
            g[key] = importlib.import_module(f"lepton_nn.kernels.{key}")
        except ImportError:
            g[key] = None
    return g[key]


def __getattr__(attr: str):  # ``cython_backend._conv`` etc.: the module, imported on first use
    if attr.startswith("_") and attr[1:] in _EXTENSIONS:
        return _ext(attr[1:])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


class _Compiled:
    """A :class:`CythonBackend` kernel resolved at its first use: the compiled function
    ``name`` of ``lepton_nn.kernels._<module>`` (bound as a staticmethod: same signature as
    the twin), or ``method`` (a Python function taking ``self``) when one is given. Where the
    module did not build or lacks the function ``needs`` (default ``name``; an older build),
    the class entry is removed and the reference twin is inherited. Either way the class
    attribute is replaced, so later calls cost what a plain method costs."""

    def __init__(self, module: str, name: str | None = None, needs: str | None = None,
                 method=None):  # fmt: skip
        self.module, self.fn, self.needs, self.method = module, name, needs, method

    def __set_name__(self, owner, name):
        self.owner, self.name = owner, name

    def resolve(self) -> None:
        mod = _ext(self.module)
        fn = self.fn or self.name
        if mod is None or not hasattr(mod, self.needs or fn):
            if vars(self.owner).get(self.name) is self:
                delattr(self.owner, self.name)
        elif vars(self.owner).get(self.name) is self:
            value = self.method or staticmethod(getattr(mod, fn))
            setattr(self.owner, self.name, value)

    def __get__(self, obj, objtype=None):
        self.resolve()
        return getattr(obj if obj is not None else self.owner, self.name)


_gemm_checked: bool | None = None


def _conv_gemm() -> bool:
    """Whether the conv chunk kernels have a GEMM: NumPy's OpenBLAS cblas_?gemm, found once
    (:func:`~lepton_nn.backend.threads.blas_gemm`) and checked on a small convolution in
    float32 and float64 against the reference loop before it is trusted."""
    global _gemm_checked
    if _gemm_checked is None:
        found = blas_gemm()
        if found is not None:
            _ext("conv").set_gemm(*found)
        _gemm_checked = found is not None and _gemm_agrees()
        if not _gemm_checked:
            _ext("conv").set_gemm(0, 0, False)
    return _gemm_checked


def _mixed(shape: tuple[int, ...], seed: int, dt) -> np.ndarray:
    """Deterministic values in [-1, 1) with no pattern a wrong GEMM could agree with by
    chance: (i * 7919 + seed) mod 97, scaled. (Not numpy.random: importing it is ~20 % of a
    cold start, and the first recurrent or conv call runs this check.)"""
    n = int(np.prod(shape))
    return (((np.arange(n) * 7919 + seed) % 97) / 48.5 - 1.0).astype(dt).reshape(shape)


def _gemm_agrees() -> bool:
    ref, geom = ReferenceBackend(), (3, 2, 1, 2, 1, 0, 1, 1)
    for dt in (np.float32, np.float64):
        x = _mixed((3, 2, 5, 6), 1, dt)
        w2, b = _mixed((4, 12), 2, dt), _mixed((4,), 3, dt)
        outs = []
        for run in (ref.conv2d_forward_chunks, _ext("conv").conv2d_forward_chunks):
            y, cols = np.empty((3, 4, 15), dt), np.empty((2, 12, 5, 3), dt)
            run(x, w2, b, 1, geom, 5, 3, 2, np.zeros(1, np.int64), cols, y, y)
            outs.append(y)
        if not np.allclose(*outs, rtol=1e-4, atol=1e-5):
            return False
    return True


def _with_gemm(name: str):
    """The compiled conv kernel ``name`` where it has a GEMM, else its reference twin."""
    reference = getattr(ReferenceBackend, name)

    def kernel(self, *args):
        return getattr(_ext("conv"), name)(*args) if _conv_gemm() else reference(self, *args)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.implementation = lambda: "cython" if _conv_gemm() else "reference (no BLAS GEMM found)"
    return kernel


# Products of 0.5-1 MFLOP (W2's 10-wide head: 128 x 256 x 10 each way) also run the kernel:
# OpenBLAS's per-call setup is a large share there (in W2's step its X W took 93-101 us against
# the kernel's 31). Between 1 and 4 MFLOP with a thin side it was as fast or faster (W3's head,
# 64 x 1568 x 10: 94 against 122 us), so those stay on it.
SMALL_OWN_FLOPS = (1 << 19, 1 << 20)


def _gemm_own(self, dtype, m, n, k) -> bool:
    """float32 products of at least PARALLEL_MIN_FLOPS run kernels/gemm.pyx (as fast as
    OpenBLAS on one thread, bit-identical at any thread count, and split over threads by
    units claimed on demand, where OpenBLAS's fixed shares collapsed on a busy machine), and
    small ones in SMALL_OWN_FLOPS; others or thin ones stay on np.matmul (one BLAS thread
    below PARALLEL_MIN_FLOPS)."""
    flops = 2 * m * n * k
    lo, hi = SMALL_OWN_FLOPS
    return np.dtype(dtype) == np.float32 and (
        (flops >= PARALLEL_MIN_FLOPS and min(m, n) >= 32)  # thinner: mostly tile padding
        or (lo <= flops < hi and min(m, n) >= 8)
    )


def _gemm_kernel(self, a, ta, b, tb, out=None):
    """The compiled ``gemm`` where :func:`_gemm_own` says so, else its twin."""
    m = a.shape[1] if ta else a.shape[0]
    n, k = (b.shape[0] if tb else b.shape[1]), (a.shape[0] if ta else a.shape[1])
    if not _gemm_own(self, a.dtype, m, n, k) or b.dtype != np.float32:
        return ReferenceBackend.gemm(self, a, ta, b, tb, out)
    if out is None:
        out = np.empty((m, n), np.float32)
    elif not (out.flags.c_contiguous and out.dtype == np.float32):
        out[...] = _gemm_kernel(self, a, ta, b, tb)
        return out
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return _ext("gemm").gemm(a, ta, b, tb, out, threads_for(2 * m * n * k, -(-n // 64)))


def _recurrent_rows_forward(self, cell, x, w_packed, h, c, mask, r0, r1, reverse, gates=None):
    """The compiled ``recurrent_rows_forward`` for float32 on AVX2 + FMA; elsewhere its twin
    (BLAS products and the compiled step kernels: faster there than a plain C loop)."""
    r = _ext("recurrent")
    if h.dtype == np.float32 and r.rows_available():
        return r.recurrent_rows_forward(cell, x, w_packed, h, c, mask, r0, r1, reverse, gates)
    return ReferenceBackend.recurrent_rows_forward(self, cell, x, w_packed, h, c, mask, r0, r1,
                                                   reverse, gates)  # fmt: skip


def _recurrent_rows_threads(self, cell, x, w_packed, h, c, mask, bounds, reverse, threads,
                            gates=None):  # fmt: skip
    """The compiled ranges on the shared native pool where the compiled kernel runs."""
    r = _ext("recurrent")
    if h.dtype == np.float32 and r.rows_available():
        return r.recurrent_rows_threads(cell, x, w_packed, h, c, mask, bounds, reverse, threads,
                                        gates)  # fmt: skip
    return ReferenceBackend.recurrent_rows_threads(self, cell, x, w_packed, h, c, mask, bounds,
                                                   reverse, threads, gates)  # fmt: skip


def _lstm_back_threads(self, gy, gates, c, w_back, mask, dh, dc, dz, bounds, reverse, threads):
    """The compiled ``lstm_rows_backward`` ranges on the shared native pool for float32 on
    AVX2 + FMA (kernels/csrc/recurrent_back.h); elsewhere its twin."""
    r = _ext("recurrent")
    if dz.dtype == np.float32 and r.back_available():
        return r.lstm_back_threads(gy, gates, c, w_back, mask, dh, dc, dz, bounds, reverse,
                                   threads)  # fmt: skip
    return ReferenceBackend.lstm_back_threads(self, gy, gates, c, w_back, mask, dh, dc, dz,
                                              bounds, reverse, threads)  # fmt: skip


def _lstm_rows_backward(self, gy, gates, c, w_back, mask, dh, dc, dz, r0, r1, reverse):
    """The compiled ``lstm_rows_backward`` where it runs (one range of rows of
    :func:`_lstm_back_threads`, on the calling thread); elsewhere its twin."""
    r = _ext("recurrent")
    if dz.dtype == np.float32 and r.back_available():
        bounds = np.array([r0, r1], np.int64)
        return r.lstm_back_threads(gy, gates, c, w_back, mask, dh, dc, dz, bounds, reverse, 1)
    return ReferenceBackend.lstm_rows_backward(self, gy, gates, c, w_back, mask, dh, dc, dz, r0,
                                               r1, reverse)  # fmt: skip


def _conv_chunks_threads(self, name, x, head, scratch, tail, threads):
    """The compiled chunk kernel's tasks on the shared native pool (no Python per task) where
    that kernel is compiled here; else the twin."""
    if name == "qconv2d_forward_chunks":
        if hasattr(_ext("qgemm"), "qconv2d_forward_threads"):
            return _ext("qgemm").qconv2d_forward_threads(x, head, scratch, tail, threads)
    elif hasattr(_ext("conv"), "conv_chunks_threads") and (
        name == "conv2d_direct_forward" and x.dtype == np.float32 or _conv_gemm()
    ):
        return _ext("conv").conv_chunks_threads(name, x, head, scratch, tail, threads)
    return ReferenceBackend.conv_chunks_threads(self, name, x, head, scratch, tail, threads)


def _conv_direct_chain_threads(self, x, layers, scratch, y, threads):
    """The compiled chain's tasks on the shared native pool where it is compiled."""
    if hasattr(_ext("conv"), "conv_direct_chain_threads") and x.dtype == np.float32:
        return _ext("conv").conv_direct_chain_threads(x, layers, scratch, y, threads)
    return ReferenceBackend.conv_direct_chain_threads(self, x, layers, scratch, y, threads)


def _recurrent_rows_exact(self, dtype) -> bool:
    """The compiled kernel gives the same bits for any split of the rows."""
    return np.dtype(dtype) == np.float32 and _ext("recurrent").rows_available()


def _recurrent_q8_forward(self, cell, xq, xs, xzp, packed, h, c, mask, r0, r1, reverse):
    """The compiled ``recurrent_q8_forward`` on AVX2 + FMA; elsewhere its twin (on this
    backend's compiled quantize_rows, qlinear and step kernels)."""
    r = _ext("recurrent")
    if r.q8_available():
        return r.recurrent_q8_forward(cell, xq, xs, xzp, packed, h, c, mask, r0, r1, reverse)
    return ReferenceBackend.recurrent_q8_forward(self, cell, xq, xs, xzp, packed, h, c, mask,
                                                 r0, r1, reverse)  # fmt: skip


def _recurrent_q8_threads(self, cell, xq, xs, xzp, packed, h, c, mask, bounds, reverse, threads):
    """The compiled int8 ranges on the shared native pool on AVX2 + FMA; elsewhere the twin."""
    r = _ext("recurrent")
    if r.q8_available() and hasattr(r, "recurrent_q8_threads"):
        return r.recurrent_q8_threads(cell, xq, xs, xzp, packed, h, c, mask, bounds, reverse,
                                      threads)  # fmt: skip
    return ReferenceBackend.recurrent_q8_threads(self, cell, xq, xs, xzp, packed, h, c, mask,
                                                 bounds, reverse, threads)  # fmt: skip


class CythonBackend(ReferenceBackend):
    """Ahead-of-time compiled kernels; no first-call stall.

    Each kernel below is a compiled function bound under the name and signature of its twin
    ``ReferenceBackend.<name>`` in reference.py (the readable spec); its source is the ``.pyx``
    named in the group's header. (Compiled docstrings cannot point back, so these lines do.)
    Each is resolved at its first use (:class:`_Compiled`), importing only its own module.
    """

    name = "cython"

    # -- dense epilogue, softmax cross-entropy, optimizers (kernels/dense.pyx) -------------
    bias_act_forward = _Compiled("dense")  # same signatures as the reference: bound straight
    bias_act_backward = _Compiled("dense")
    softmax_xent_forward = _Compiled("dense")
    softmax_xent_backward = _Compiled("dense")
    adam_step = _Compiled("dense")
    all_finite = _Compiled("dense")  # a build from before it: the reference
    input_rows = _Compiled("dense")
    fresh_copy = _Compiled("dense")
    dense_chain_forward = _Compiled("dense")  # float32 only: the plan checks
    dense_packed_forward = _Compiled("dense")

    # -- the training GEMM (kernels/gemm.pyx) ------------------------------------------------
    gemm_own = _Compiled("gemm", needs="gemm", method=_gemm_own)
    gemm = _Compiled("gemm", method=_gemm_kernel)

    # -- int8 quantized matmul (kernels/qgemm.pyx) ------------------------------------------
    quantize_rows = _Compiled("qgemm")  # same signatures as the reference; the wrappers validate
    qpack_weights = _Compiled("qgemm", "pack_weights")
    qlinear = _Compiled("qgemm")
    qgemm_s32 = _Compiled("qgemm")
    qconv2d_forward_chunks = _Compiled("qgemm")
    qdense_chain_prepare = _Compiled("qgemm", needs="qdense_chain_forward")  # older: reference
    qdense_chain_forward = _Compiled("qgemm")

    # -- sparse matmul (kernels/sparse.pyx) --------------------------------------------------
    to_csr = _Compiled("sparse")
    sparse_linear = _Compiled("sparse")
    sparse_chain_prepare = _Compiled("sparse", needs="sparse_chain_forward")  # older: reference
    sparse_chain_forward = _Compiled("sparse")

    # -- convolution and pooling (kernels/conv.pyx) -----------------------------------------
    im2col = _Compiled("conv")  # same signatures as the reference: bound straight
    col2im = _Compiled("conv")
    maxpool2d_forward = _Compiled("conv")
    maxpool2d_backward = _Compiled("conv")
    avgpool2d_forward = _Compiled("conv")
    avgpool2d_backward = _Compiled("conv")

    # the chunk loops call NumPy's BLAS GEMM from C; where it cannot be found and checked,
    # the reference loop (np.matmul between these compiled kernels) runs instead
    conv2d_forward_chunks = _Compiled("conv", method=_with_gemm("conv2d_forward_chunks"))
    conv2d_backward_chunks = _Compiled("conv", method=_with_gemm("conv2d_backward_chunks"))
    conv2d_pool_forward_chunks = _Compiled("conv", method=_with_gemm("conv2d_pool_forward_chunks"))
    conv2d_pool_backward_chunks = _Compiled(
        "conv", method=_with_gemm("conv2d_pool_backward_chunks")
    )
    conv2d_direct_forward = _Compiled("conv")  # float32 only: float64 runs the twin
    conv2d_direct_chain = _Compiled("conv")  # float32 only, as the kernel it chains

    # the chunk kernels' tasks on the shared native pool (kernels/conv.pyx, qgemm.pyx)
    conv_chunks_threads = _conv_chunks_threads
    conv_direct_chain_threads = _conv_direct_chain_threads

    # -- recurrent cells (kernels/recurrent.pyx) --------------------------------------------
    lstm_step_forward = _Compiled("recurrent")  # same signatures as the reference: bound straight
    lstm_step_backward = _Compiled("recurrent")
    gru_step_forward = _Compiled("recurrent")
    gru_step_backward = _Compiled("recurrent")
    rnn_step_forward = _Compiled("recurrent")
    rnn_step_backward = _Compiled("recurrent")
    # a build from before each of these: the reference
    recurrent_rows_forward = _Compiled(
        "recurrent", needs="rows_available", method=_recurrent_rows_forward
    )
    recurrent_rows_exact = _Compiled("recurrent", needs="rows_available",
                                     method=_recurrent_rows_exact)  # fmt: skip
    recurrent_q8_forward = _Compiled("recurrent", needs="q8_available",
                                     method=_recurrent_q8_forward)  # fmt: skip
    recurrent_q8_threads = _Compiled("recurrent", needs="q8_available",
                                     method=_recurrent_q8_threads)  # fmt: skip
    recurrent_rows_threads = _Compiled("recurrent", method=_recurrent_rows_threads)
    lstm_back_threads = _Compiled("recurrent", needs="back_available",
                                  method=_lstm_back_threads)  # fmt: skip
    lstm_rows_backward = _Compiled("recurrent", needs="back_available",
                                   method=_lstm_rows_backward)  # fmt: skip
