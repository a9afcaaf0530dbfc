"""Kernels compiled ahead of time from ``kernels/*.pyx`` (C with SIMD where it pays).

Each extension module is optional: a kernel whose module did not build falls back, by
inheritance, to its NumPy twin in :mod:`lepton_nn.backend.reference`.
"""

from __future__ import annotations

import importlib

import numpy as np

from .reference import ReferenceBackend
from .threads import PARALLEL_MIN_FLOPS, blas_gemm, threads_for


def _load(name):
    try:
        return importlib.import_module(f"lepton_nn.kernels._{name}")
    except ImportError:
        return None


_dense = _load("dense")
_conv = _load("conv")
_recurrent = _load("recurrent")
_qgemm = _load("qgemm")
_sparse = _load("sparse")
_gemm = _load("gemm")


_gemm_checked: bool | None = None


def _conv_gemm() -> bool:
    """Whether the conv chunk kernels have a GEMM: NumPy's OpenBLAS cblas_?gemm, found once
    (:func:`~lepton_nn.backend.threads.blas_gemm`) and checked on a small convolution in
    float32 and float64 against the reference loop before it is trusted."""
    global _gemm_checked
    if _gemm_checked is None:
        found = blas_gemm()
        if found is not None:
            _conv.set_gemm(*found)
        _gemm_checked = found is not None and _gemm_agrees()
        if not _gemm_checked:
            _conv.set_gemm(0, 0, False)
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
        for run in (ref.conv2d_forward_chunks, _conv.conv2d_forward_chunks):
            y, cols = np.empty((3, 4, 15), dt), np.empty((2, 12, 5, 3), dt)
            run(x, w2, b, 1, geom, 5, 3, 2, np.zeros(1, np.int64), cols, y, y)
            outs.append(y)
        if not np.allclose(*outs, rtol=1e-4, atol=1e-5):
            return False
    return True


def _with_gemm(name: str):
    """The compiled conv kernel ``name`` where it has a GEMM, else its reference twin."""
    compiled, reference = getattr(_conv, name), getattr(ReferenceBackend, name)

    def kernel(self, *args):
        return compiled(*args) if _conv_gemm() else reference(self, *args)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.implementation = lambda: "cython" if _conv_gemm() else "reference (no BLAS GEMM found)"
    return kernel


def _gemm_own(self, dtype, m, n, k) -> bool:
    """float32 products of at least PARALLEL_MIN_FLOPS run kernels/gemm.pyx (as fast as
    OpenBLAS on one thread, bit-identical at any thread count, and split over threads by
    units claimed on demand, where OpenBLAS's fixed shares collapsed on a busy machine);
    smaller or thin ones stay on np.matmul (one BLAS thread below PARALLEL_MIN_FLOPS)."""
    return (
        np.dtype(dtype) == np.float32
        and 2 * m * n * k >= PARALLEL_MIN_FLOPS
        and min(m, n) >= 32  # thinner: mostly padding in its 6 x 16 tiles
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
    return _gemm.gemm(a, ta, b, tb, out, threads_for(2 * m * n * k, -(-n // 64)))


def _recurrent_rows_forward(self, cell, x, w_packed, h, c, mask, r0, r1, reverse, gates=None):
    """The compiled ``recurrent_rows_forward`` for float32 on AVX2 + FMA; elsewhere its twin
    (BLAS products and the compiled step kernels: faster there than a plain C loop)."""
    if h.dtype == np.float32 and _recurrent.rows_available():
        return _recurrent.recurrent_rows_forward(cell, x, w_packed, h, c, mask, r0, r1, reverse,
                                                 gates)  # fmt: skip
    return ReferenceBackend.recurrent_rows_forward(self, cell, x, w_packed, h, c, mask, r0, r1,
                                                   reverse, gates)  # fmt: skip


def _recurrent_rows_threads(self, cell, x, w_packed, h, c, mask, bounds, reverse, threads,
                            gates=None):  # fmt: skip
    """The compiled ranges on the shared native pool where the compiled kernel runs."""
    if h.dtype == np.float32 and _recurrent.rows_available():
        return _recurrent.recurrent_rows_threads(cell, x, w_packed, h, c, mask, bounds, reverse,
                                                 threads, gates)  # fmt: skip
    return ReferenceBackend.recurrent_rows_threads(self, cell, x, w_packed, h, c, mask, bounds,
                                                   reverse, threads, gates)  # fmt: skip


def _lstm_back_threads(self, gy, gates, c, w_back, mask, dh, dc, dz, bounds, reverse, threads):
    """The compiled ``lstm_rows_backward`` ranges on the shared native pool for float32 on
    AVX2 + FMA (kernels/csrc/recurrent_back.h); elsewhere its twin."""
    if dz.dtype == np.float32 and _recurrent.back_available():
        return _recurrent.lstm_back_threads(gy, gates, c, w_back, mask, dh, dc, dz, bounds,
                                            reverse, threads)  # fmt: skip
    return ReferenceBackend.lstm_back_threads(self, gy, gates, c, w_back, mask, dh, dc, dz,
                                              bounds, reverse, threads)  # fmt: skip


def _lstm_rows_backward(self, gy, gates, c, w_back, mask, dh, dc, dz, r0, r1, reverse):
    """The compiled ``lstm_rows_backward`` where it runs (one range of rows of
    :func:`_lstm_back_threads`, on the calling thread); elsewhere its twin."""
    if dz.dtype == np.float32 and _recurrent.back_available():
        bounds = np.array([r0, r1], np.int64)
        return _recurrent.lstm_back_threads(gy, gates, c, w_back, mask, dh, dc, dz, bounds,
                                            reverse, 1)  # fmt: skip
    return ReferenceBackend.lstm_rows_backward(self, gy, gates, c, w_back, mask, dh, dc, dz, r0,
                                               r1, reverse)  # fmt: skip


def _conv_chunks_threads(self, name, x, head, scratch, tail, threads):
    """The compiled chunk kernel's tasks on the shared native pool (no Python per task) where
    that kernel is compiled here; else the twin."""
    if name == "qconv2d_forward_chunks":
        if _qgemm is not None and hasattr(_qgemm, "qconv2d_forward_threads"):
            return _qgemm.qconv2d_forward_threads(x, head, scratch, tail, threads)
    elif hasattr(_conv, "conv_chunks_threads") and (
        name == "conv2d_direct_forward" and x.dtype == np.float32 or _conv_gemm()
    ):
        return _conv.conv_chunks_threads(name, x, head, scratch, tail, threads)
    return ReferenceBackend.conv_chunks_threads(self, name, x, head, scratch, tail, threads)


def _recurrent_rows_exact(self, dtype) -> bool:
    """The compiled kernel gives the same bits for any split of the rows."""
    return np.dtype(dtype) == np.float32 and _recurrent.rows_available()


def _recurrent_q8_forward(self, cell, xq, xs, xzp, packed, h, c, mask, r0, r1, reverse):
    """The compiled ``recurrent_q8_forward`` on AVX2 + FMA; elsewhere its twin (on this
    backend's compiled quantize_rows, qlinear and step kernels)."""
    if _recurrent.q8_available():
        return _recurrent.recurrent_q8_forward(cell, xq, xs, xzp, packed, h, c, mask, r0, r1,
                                               reverse)  # fmt: skip
    return ReferenceBackend.recurrent_q8_forward(self, cell, xq, xs, xzp, packed, h, c, mask,
                                                 r0, r1, reverse)  # fmt: skip


def _recurrent_q8_threads(self, cell, xq, xs, xzp, packed, h, c, mask, bounds, reverse, threads):
    """The compiled int8 ranges on the shared native pool on AVX2 + FMA; elsewhere the twin."""
    if _recurrent.q8_available() and hasattr(_recurrent, "recurrent_q8_threads"):
        return _recurrent.recurrent_q8_threads(cell, xq, xs, xzp, packed, h, c, mask, bounds,
                                               reverse, threads)  # fmt: skip
    return ReferenceBackend.recurrent_q8_threads(self, cell, xq, xs, xzp, packed, h, c, mask,
                                                 bounds, reverse, threads)  # fmt: skip


class CythonBackend(ReferenceBackend):
    """Ahead-of-time compiled kernels; no first-call stall.

    Each kernel below is a compiled function bound under the name and signature of its twin
    ``ReferenceBackend.<name>`` in reference.py (the readable spec); its source is the ``.pyx``
    named in the group's header. (Compiled docstrings cannot point back, so these lines do.)
    """

    name = "cython"

    # -- dense epilogue, softmax cross-entropy, optimizers (kernels/dense.pyx) -------------
    if _dense is not None:  # same signatures as the reference: bound straight, no wrapper
        bias_act_forward = staticmethod(_dense.bias_act_forward)
        bias_act_backward = staticmethod(_dense.bias_act_backward)
        softmax_xent_forward = staticmethod(_dense.softmax_xent_forward)
        softmax_xent_backward = staticmethod(_dense.softmax_xent_backward)
        adam_step = staticmethod(_dense.adam_step)
        if hasattr(_dense, "all_finite"):  # a build from before it: the reference
            all_finite = staticmethod(_dense.all_finite)
        if hasattr(_dense, "dense_chain_forward"):  # float32 only: the plan checks
            dense_chain_forward = staticmethod(_dense.dense_chain_forward)
        if hasattr(_dense, "dense_packed_forward"):
            dense_packed_forward = staticmethod(_dense.dense_packed_forward)

    # -- the training GEMM (kernels/gemm.pyx) ------------------------------------------------
    if _gemm is not None:
        gemm_own = _gemm_own
        gemm = _gemm_kernel

    # -- int8 quantized matmul (kernels/qgemm.pyx) ------------------------------------------
    if _qgemm is not None:  # same signatures as the reference; the wrappers validate
        quantize_rows = staticmethod(_qgemm.quantize_rows)
        qpack_weights = staticmethod(_qgemm.pack_weights)
        qlinear = staticmethod(_qgemm.qlinear)
        qgemm_s32 = staticmethod(_qgemm.qgemm_s32)
        qconv2d_forward_chunks = staticmethod(_qgemm.qconv2d_forward_chunks)
        if hasattr(_qgemm, "qdense_chain_forward"):  # a build from before it: the reference
            qdense_chain_prepare = staticmethod(_qgemm.qdense_chain_prepare)
            qdense_chain_forward = staticmethod(_qgemm.qdense_chain_forward)

    # -- sparse matmul (kernels/sparse.pyx) --------------------------------------------------
    if _sparse is not None:
        to_csr = staticmethod(_sparse.to_csr)
        sparse_linear = staticmethod(_sparse.sparse_linear)

    # -- convolution and pooling (kernels/conv.pyx) -----------------------------------------
    if _conv is not None:  # same signatures as the reference: bound straight
        im2col = staticmethod(_conv.im2col)
        col2im = staticmethod(_conv.col2im)
        maxpool2d_forward = staticmethod(_conv.maxpool2d_forward)
        maxpool2d_backward = staticmethod(_conv.maxpool2d_backward)
        avgpool2d_forward = staticmethod(_conv.avgpool2d_forward)
        avgpool2d_backward = staticmethod(_conv.avgpool2d_backward)

        # the chunk loops call NumPy's BLAS GEMM from C; where it cannot be found and checked,
        # the reference loop (np.matmul between these compiled kernels) runs instead
        conv2d_forward_chunks = _with_gemm("conv2d_forward_chunks")
        conv2d_backward_chunks = _with_gemm("conv2d_backward_chunks")
        conv2d_pool_forward_chunks = _with_gemm("conv2d_pool_forward_chunks")
        conv2d_pool_backward_chunks = _with_gemm("conv2d_pool_backward_chunks")
        if hasattr(_conv, "conv2d_direct_forward"):  # float32 only: float64 runs the twin
            conv2d_direct_forward = staticmethod(_conv.conv2d_direct_forward)

    # the chunk kernels' tasks on the shared native pool (kernels/conv.pyx, qgemm.pyx)
    conv_chunks_threads = _conv_chunks_threads

    # -- recurrent cells (kernels/recurrent.pyx) --------------------------------------------
    if _recurrent is not None:  # same signatures as the reference: bound straight
        lstm_step_forward = staticmethod(_recurrent.lstm_step_forward)
        lstm_step_backward = staticmethod(_recurrent.lstm_step_backward)
        gru_step_forward = staticmethod(_recurrent.gru_step_forward)
        gru_step_backward = staticmethod(_recurrent.gru_step_backward)
        rnn_step_forward = staticmethod(_recurrent.rnn_step_forward)
        rnn_step_backward = staticmethod(_recurrent.rnn_step_backward)
        if hasattr(_recurrent, "rows_available"):  # a build from before it: reference
            recurrent_rows_forward = _recurrent_rows_forward
            recurrent_rows_exact = _recurrent_rows_exact
        if hasattr(_recurrent, "q8_available"):
            recurrent_q8_forward = _recurrent_q8_forward
            recurrent_q8_threads = _recurrent_q8_threads
        if hasattr(_recurrent, "recurrent_rows_threads"):
            recurrent_rows_threads = _recurrent_rows_threads
        if hasattr(_recurrent, "back_available"):
            lstm_back_threads = _lstm_back_threads
            lstm_rows_backward = _lstm_rows_backward
