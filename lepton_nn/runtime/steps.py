"""Plan steps shared by the families, and the small ones: int8 Dense, per-channel affine
(BatchNorm at eval), LayerNorm and embedding; which ops run on the native pool or call BLAS.

The families have their own files: fully connected in :mod:`.steps_dense`, convolution and
pooling in :mod:`.steps_conv`, recurrent layers in :mod:`.steps_recurrent`. Each step
mirrors the eval-mode forward of its layer in :mod:`lepton_nn.nn` on the same backend
kernels. A step's ``bind(src, owned, ctx)`` returns its calls and output buffer; the parsers
that make steps from a layer's config and weights (an untrusted file) are in :mod:`.parsers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_nn.backend import resolved
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.backend.threads import (
    blas_held,
    blas_single,
)
from lepton_nn.errors import ModelFormatError

from .compression import Int8Weight
from .graph import out_buffer
from .kernels import kernels

__all__ = [
    "PARALLEL_MIN_ROWS",
    "QLINEAR_SPLIT_MIN",
    "AffineStep",
    "EmbeddingStep",
    "Int8DenseStep",
    "LayerNormStep",
    "blas_in_threads",
    "on_pool",
]

#: int8 layers use ``threads`` threads from this many rows per batch (one below) ...
PARALLEL_MIN_ROWS = 64
#: ... and from this many multiply-adds (rows x K x N) with more than 32 outputs: below,
#: ``qlinear`` runs on its caller alone whatever it is given (``_qgemm.PARALLEL_MIN_MACS``,
#: csrc/qgemm_threads.h; at most a thread per two 16-column blocks). A plan that passed such
#: a call threads also woke the pool's worker for it, to spin 5 ms a call for no job: under
#: the kernel's old 2**25 the W5 int8 MLP at batch 64 ran slower on 2 threads than on 1.
QLINEAR_SPLIT_MIN = 1 << 21
#: int8 Dense layers up to this many rows run as one compiled ``qdense_chain_forward`` (row
#: by row through its GEMV on AVX2; neighbouring layers joined into one call by the plan).
QCHAIN_MAX_ROWS = 4
#: ... and their columns are split over the plan's threads from this many multiply-adds in a
#: layer (rows x K x N; a joined chain takes its largest layer's count): below, the barrier
#: after each layer costs more than half of it (~0.2 us against ~1 us for 2**17 on one core)
QCHAIN_SPLIT_MIN = 1 << 17

Op = tuple[Callable[..., Any], tuple]


# --------------------------------------------------------------------------- steps


def qlinear_splits(n: int, k: int, m: int) -> bool:
    """Whether an int8 layer of ``k`` inputs and ``m`` outputs at batch ``n`` is given the
    plan's threads (``qlinear`` splits it over more than one when given 2 or more)."""
    return n >= PARALLEL_MIN_ROWS and n * k * m >= QLINEAR_SPLIT_MIN and m > 32


class Int8DenseStep:
    """y = f(dequant(q_x q_w^T) + b): uint8 activations, int8 per-channel weights, int32 sums.
    Up to ``QCHAIN_MAX_ROWS`` float32 rows: one compiled ``qdense_chain_forward`` call
    (quantize, product and epilogue; a run of such layers joined into one call by the plan);
    otherwise ``quantize_rows`` then ``qlinear``. The same bits either way."""

    kind = "int8"

    def __init__(self, label: str, wq: Int8Weight, b: np.ndarray | None, act: int) -> None:
        self.label, self.wq, self.act = label, wq, act
        self.b = None if b is None else np.ascontiguousarray(b, dtype=np.float32)
        self.packed, self.col_sums = kernels().qpack_weights(wq.q)
        self.n_out, self.n_in = wq.q.shape
        if wq.act_mode == "static":
            self.static_scale = np.array([wq.act_scale], np.float32)
            self.static_zp = np.array([wq.act_zero_point], np.int32)
            if not 0 < self.static_scale[0] < np.inf:  # a float64 scale out of float32 range
                raise ModelFormatError(
                    f"{label}: activation scale {wq.act_scale!r} is not a positive float32"
                )

    def spec(self) -> tuple:
        """This layer as ``qdense_chain_prepare`` takes it (x_scale, x_zero_point None when
        the activations are dynamic)."""
        pair = (self.static_scale, self.static_zp) if self.wq.act_mode == "static" else (None, None)
        return (self.packed, self.wq.scale, self.col_sums, self.b, self.act, *pair)

    def bind(self, src, owned, ctx):
        n = ctx.n
        k = kernels()
        if n <= QCHAIN_MAX_ROWS and src.dtype == np.float32 and ctx.dtype == np.float32:
            chain = k.qdense_chain_forward
            if type(k).qdense_chain_forward is not ReferenceBackend.qdense_chain_forward:
                # one compiled call (quantize, product, epilogue); Network.plan joins neighbours
                out = out_buffer(ctx, (n, self.n_out), np.float32)
                big = n * self.n_in * self.n_out >= QCHAIN_SPLIT_MIN
                threads = ctx.threads if big else 1
                prepared = k.qdense_chain_prepare((self.spec(),), n, self.n_in, threads)
                return [(chain, (src, prepared, (out,)))], out
        xq = out_buffer(ctx, (n, self.n_in), np.uint8)
        out = out_buffer(ctx, (n, self.n_out), np.float32)
        ops: list[Op] = []
        if src.dtype != np.float32:  # float64 model: the kernels read float32
            f32 = out_buffer(ctx, src.shape, np.float32)
            ops.append((np.copyto, (f32, src, "same_kind")))
            src = f32
        if self.wq.act_mode == "static":
            scale, zp = self.static_scale, self.static_zp
            ops.append((k.quantize_rows, (src, xq, scale, zp, True)))
        else:
            scale, zp = np.zeros(n, np.float32), np.zeros(n, np.int32)
            ops.append((k.quantize_rows, (src, xq, scale, zp)))
        threads = ctx.threads if qlinear_splits(n, self.n_in, self.n_out) else 1
        args = (xq, scale, zp, self.packed, self.wq.scale, self.col_sums, self.b, self.act, out)
        ops.append((k.qlinear, (*args, threads) if threads > 1 else args))
        if ctx.dtype != np.float32:
            out64 = out_buffer(ctx, out.shape, ctx.dtype)
            ops.append((np.copyto, (out64, out)))
            out = out64
        return ops, out

    def describe(self) -> str:
        return f"{self.label}: int8 {self.n_in}->{self.n_out} ({self.wq.act_mode} activations)"


class AffineStep:
    """Eval BatchNorm: y = ((x - mean) inv) gamma + beta per channel (axis 1), in place.
    The plan folds it into a float Dense or convolution right before it (``as_scale``)."""

    kind = "norm"

    def __init__(self, label, mean, inv, gamma, beta, width) -> None:
        shape = (1, width[0]) + (1,) * (len(width) - 1)
        self.label = label
        self.mean, self.inv = mean.reshape(shape), inv.reshape(shape)
        self.gamma, self.beta = gamma.reshape(shape), beta.reshape(shape)

    def as_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) per channel, float64: y = x scale + shift."""
        inv, gamma = (a.reshape(-1).astype(np.float64) for a in (self.inv, self.gamma))
        mean, beta = (a.reshape(-1).astype(np.float64) for a in (self.mean, self.beta))
        scale = inv * gamma
        return scale, beta - mean * scale

    def bind(self, src, owned, ctx):
        out = src if owned else out_buffer(ctx, src.shape, ctx.dtype)
        ops: list[Op] = [
            (np.subtract, (src, self.mean, out)),
            (np.multiply, (out, self.inv, out)),
            (np.multiply, (out, self.gamma, out)),
            (np.add, (out, self.beta, out)),
        ]
        return ops, out

    def describe(self) -> str:
        return f"{self.label}: batch norm (running statistics)"


class LayerNormStep:
    """y = gamma (x - mu) / sqrt(var + eps) + beta over the last axis of each row."""

    kind = "norm"

    def __init__(self, label, gamma, beta, eps) -> None:
        self.label, self.gamma, self.beta, self.eps = label, gamma, beta, eps

    def bind(self, src, owned, ctx):
        out = src if owned else out_buffer(ctx, src.shape, ctx.dtype)
        return [(_layer_norm, (src, self.gamma, self.beta, self.eps, out))], out

    def describe(self) -> str:
        return f"{self.label}: layer norm"


def _layer_norm(x, gamma, beta, eps, out) -> None:
    # the calls of lepton_nn.ops.norm.LayerNorm.forward, in the same order
    xc = x - x.mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)
    np.add((xc * inv) * gamma, beta, out)


#: the chunk kernels that call NumPy's BLAS GEMM from C
_BLAS_CHUNKS = ("conv2d_forward_chunks", "conv2d_pool_forward_chunks")


def blas_in_threads(op: Op) -> bool:
    """Whether ``op`` calls BLAS from several threads of the native pool (an im2col chunk
    kernel on more than one thread): the plan then holds BLAS to one thread for its run."""
    fn, args = op
    k = kernels()
    return _runs(fn, k, "conv_chunks_threads") and args[0] in _BLAS_CHUNKS and args[-1] > 1


def _runs(fn, k, *names: str) -> bool:
    """Whether ``fn`` is one of backend ``k``'s kernels ``names``, asking only kernels bound
    already (one not bound is in no plan; asking would import its extension)."""
    return any(resolved(k, n) and fn == getattr(k, n) for n in names)


def on_pool(op: Op) -> bool:
    """Whether ``op`` runs a job on the native pool's threads (a compiled kernel given more
    than one thread)."""
    fn, args = op
    k = kernels()
    if _runs(fn, k, "conv_chunks_threads", "conv_direct_chain_threads",
             "recurrent_rows_threads", "recurrent_q8_threads"):  # fmt: skip
        return args[-1] > 1
    if _runs(fn, k, "dense_packed_forward"):
        return len(args) > 5 and args[5] > 1
    if _runs(fn, k, "qdense_chain_forward"):
        return args[1].threads > 1
    return _runs(fn, k, "qlinear") and len(args) > 9 and args[9] > 1


def _on_one_blas_thread(op: Op, flops: float) -> Op:
    """``op``, run with NumPy's BLAS on one thread when its GEMMs (``flops`` each) are too
    small for OpenBLAS's split to gain (:class:`blas_single`)."""
    return (_one_blas_thread, op) if blas_single(flops).on else op


def _one_blas_thread(fn: Callable, args: tuple) -> None:
    with blas_held():
        fn(*args)


class EmbeddingStep:
    """ids (N, ...) -> rows of the table (N, ..., E). The ids arrive as numbers of the plan's
    dtype (exact up to 2^24 in float32); an id out of range is an ``IndexError``."""

    kind = "embedding"

    def __init__(self, label, table) -> None:
        self.label, self.table = label, table

    def bind(self, src, owned, ctx):
        ids = np.zeros(src.shape, np.intp)
        y = np.zeros((*src.shape, self.table.shape[1]), ctx.dtype)
        return [(_lookup, (src, ids, self.table.astype(ctx.dtype, copy=False), y))], y

    def describe(self) -> str:
        return f"{self.label}: embedding {self.table.shape[0]}x{self.table.shape[1]}"


def _lookup(x, ids, table, y) -> None:
    np.copyto(ids, x, casting="unsafe")
    np.take(table, ids, axis=0, out=y)
