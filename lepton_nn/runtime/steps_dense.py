"""Plan steps for the fully connected layers: Dense (fp32 packed, batch-1 chain, BLAS),
sparse-capable Dense, a standalone activation, softmax and flatten; and the binding context
every step gets.

A step's ``bind(src, owned, ctx)`` returns its calls ``(function, args)`` and its output
buffer (see :mod:`.plan` for how a network becomes a plan). Imports: NumPy,
:mod:`lepton_nn.backend` (never Numba) and the compiled extension, nothing else.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_nn.backend.reference import ReferenceBackend

from .compression import CSRWeight
from .graph import Arena, out_buffer
from .kernels import kernels
from .record import Record

__all__ = [
    "ActivationStep",
    "DenseStep",
    "FlattenStep",
    "SoftmaxStep",
    "SparseDenseStep",
    "Step",
]

#: Largest batch the sparse/dense crossover is timed at (larger batches reuse its verdict).
MEASURE_MAX_BATCH = 256
#: Rounds of the sparse/dense timing (3 let a loaded machine pick dense for a 90 %-sparse
#: 784x512 layer: one disturbed round of one or two calls decided it).
MEASURE_ROUNDS = 7
#: A packed Dense layer is split over the plan's threads from this many multiply-adds (rows
#: x K x N): below, the hand-off to the pool's workers and the barrier cost more than half
#: the layer.
PACKED_SPLIT_MIN = 65536
#: The Python calls a sparse layer saves when joined to a sparse neighbour (one call for
#: the run): the dense kernel must beat the sparse one by more than this (seconds).
SPARSE_JOIN_MARGIN = 1e-6
#: A sparse layer is split over the plan's threads from this many multiply-adds (rows x
#: nonzeros; ~0.5 ns each at batch 1 on one AVX2 core): below, the pool's hand-off and its
#: barrier cost more than half the layer.
SPARSE_SPLIT_MIN = 16384

Op = tuple[Callable[..., Any], tuple]


class _Ctx(Record):
    """What binding needs besides the step: batch size, threads, sparse policy, dtype, and
    for a plan run with lengths, the steps' mask (T, N) (1 at real steps, 0 past the end);
    ``pool``: the plan's buffers (see graph.py)."""

    _fields = ("n", "threads", "sparse", "dtype", "mask", "pool")

    def __init__(self, n: int, threads: int, sparse: str, dtype: np.dtype,
                 mask: np.ndarray | None = None, pool: Arena | None = None) -> None:  # fmt: skip
        self.n, self.threads, self.sparse, self.dtype = n, threads, sparse, dtype
        self.mask, self.pool = mask, pool


class Step:
    """One layer (or a fused pair) of the network: shapes known, weights ready."""

    label = ""  # "layer 'dense' (Dense)" for messages

    def bind(self, src: np.ndarray, owned: bool, ctx: _Ctx) -> tuple[list[Op], np.ndarray]:
        """Ops computing this step from ``src`` (N, *in) and the array they leave the result in.

        ``owned``: ``src`` is a plan buffer this step may overwrite (not the caller's input).
        """
        raise NotImplementedError

    def describe(self) -> str:
        return self.label


class DenseStep(Step):
    """y = f(x W + b). Compiled, float32: W kept only as its column panels (``dense_pack``,
    made at the first plan; the file's (K, N) array is then dropped) and every batch size
    runs ``dense_packed_forward`` (GEMM, bias and activation in one pass; neighbouring Dense
    layers joined into one call, split over the plan's threads by the kernel's own pool).
    Otherwise ``np.matmul`` into a buffer, then the fused bias/activation kernel."""

    kind = "dense"
    packable = True  # may trade W for its packed panels

    def __init__(self, label: str, w: np.ndarray, b: np.ndarray | None, act: int) -> None:
        self.label, self.w, self.b, self.act = label, w, b, act
        self.shape = w.shape
        self.panels: np.ndarray | None = None
        self._w_rows: np.ndarray | None = None

    def _dense_ops(self, src: np.ndarray, out: np.ndarray, threads: int = 1) -> list[Op]:
        packed = self._packed_kernel(src)
        if packed is not None:  # one call; Network.plan joins neighbours
            args = (src, (self.panels,), (self.b,), (self.act,), (out,), threads)
            return [(packed, args)]
        chain = _chain_kernel(src)
        if chain is not None:  # batch 1, compiled: one call (Network.plan joins neighbours)
            return [(chain, (src, (self.w,), (self.b,), (self.act,), (out,)))]
        if src.shape[0] == 1:  # batch 1: x W is a matrix-vector product (BLAS gemv)
            ops: list[Op] = [(np.dot, (src, self.w_rows().T, out))]
        else:
            ops = [(np.matmul, (src, self.w, out))]
        if self.b is not None or self.act:
            ops.append((kernels().bias_act_forward, (out, self.b, self.act, out)))
        return ops

    def _packed_kernel(self, src: np.ndarray) -> Callable | None:
        """``dense_packed_forward`` once W is packed, packing it now if the compiled kernel
        is there (else None: W stays as it is). Packed, W is gone: a plan bound later under
        the reference backend runs the kernel's NumPy twin on the panels."""
        if self.panels is None:
            k = kernels()
            if (
                not self.packable
                or src.dtype != np.float32
                or type(k).dense_packed_forward is ReferenceBackend.dense_packed_forward
            ):
                return None
            self.panels, self.w, self._w_rows = k.dense_pack(self.w), None, None
        return kernels().dense_packed_forward

    def weight(self) -> np.ndarray:
        """W (K, N): the array held, or a copy unpacked from the panels (for inspection)."""
        if self.panels is None:
            return self.w
        k, n = self.shape
        return self.panels.transpose(1, 0, 2).reshape(k, 16 * len(self.panels))[:, :n].copy()

    def fold_scale(self, scale: np.ndarray, shift: np.ndarray) -> None:
        """Make this step compute y * scale + shift (per output column) itself: W scaled by
        columns, b = b scale + shift (an eval BatchNorm after the Dense layer). At parse
        time, before any plan packs W."""
        dt = self.w.dtype
        w = self.w.astype(np.float64) * scale[None, :]
        b = 0.0 if self.b is None else self.b.astype(np.float64)
        self.w, self.b, self._w_rows = w.astype(dt), (b * scale + shift).astype(dt), None

    def w_rows(self) -> np.ndarray:
        """W^T (out, in) in C order, made for the first batch-1 plan (a second copy of W;
        only without the compiled kernels).

        At batch 1, OpenBLAS's gemv runs faster taking dot products along W^T's rows than
        on W's, and ``np.dot`` reaches BLAS with less overhead than ``np.matmul``: the
        784-512-256-10 MLP went from 33.4 to 29.3 us (1 thread, AMD EPYC). Larger batches
        keep ``np.matmul(x, W)``: sgemm on W^T was slower there (up to 1.8x at batch 8).
        """
        if self._w_rows is None:
            self._w_rows = np.ascontiguousarray(self.w.T)
        return self._w_rows

    def bind(self, src, owned, ctx):
        out = out_buffer(ctx, (ctx.n, self.shape[1]), ctx.dtype)
        threads = ctx.threads if ctx.n * self.shape[0] * self.shape[1] >= PACKED_SPLIT_MIN else 1
        return self._dense_ops(src, out, threads), out

    def describe(self) -> str:
        form = "packed panels" if self.panels is not None else str(self.w.dtype)
        return f"{self.label}: dense {form} {self.shape[0]}->{self.shape[1]}"


class SparseDenseStep(DenseStep):
    """A Dense layer with a sparse weight: runs the CSR kernel or the dense one, whichever the
    measurement at plan time finds faster for that batch size and thread count.

    Sparse, the layer is one ``sparse_chain_forward`` call (csrc/sparse_chain.h: its columns
    cut into tasks of about equal nonzeros on the native pool; :func:`~.plan.parse_network`'s
    plans join neighbouring sparse layers into one call, a barrier between layers)."""

    kind = "sparse"
    packable = False  # keeps W: its dense variant packs panels from it, the CSR is its twin

    def __init__(self, label, w, b, act, csr: CSRWeight) -> None:
        super().__init__(label, w, b, act)
        self.csr = csr
        self.choice: dict[tuple[int, int], str] = {}  # (batch bucket, threads) -> the kernel
        self._chains: dict[int, Any] = {}  # threads -> this layer prepared as a sparse chain

    def spec(self) -> tuple:
        """(indptr, indices, values, bias, act): the layer as ``sparse_chain_prepare`` takes it."""
        c = self.csr
        return (c.indptr, c.indices, c.data, self.b, self.act)

    def _dense_ops(self, src: np.ndarray, out: np.ndarray, threads: int = 1) -> list[Op]:
        """The dense variant: ``dense_packed_forward`` on panels packed from W (kept: the
        CSR's twin), on the native pool like the sparse one, never BLAS (whose own threads,
        spinning after a call, took the core the pool's worker needed: the 90 %-pruned W5 MLP
        was slower on 2 threads than on 1 with a BLAS head); the parent's path without the
        compiled kernel."""
        k = kernels()
        if (
            src.dtype != np.float32
            or type(k).dense_packed_forward is ReferenceBackend.dense_packed_forward
        ):
            return super()._dense_ops(src, out, threads)
        if self.panels is None:
            self.panels = k.dense_pack(self.w)
        args = (src, (self.panels,), (self.b,), (self.act,), (out,), threads)
        return [(k.dense_packed_forward, args)]

    def weight(self) -> np.ndarray:
        return self.w

    def threads_for(self, n: int, threads: int) -> int:
        """The threads a call at batch ``n`` is split over (1 below ``SPARSE_SPLIT_MIN``)."""
        return threads if n * max(1, self.csr.data.size) >= SPARSE_SPLIT_MIN else 1

    def _sparse_ops(self, src: np.ndarray, out: np.ndarray, threads: int = 1) -> list[Op]:
        chain = self._chains.get(threads)
        if chain is None:  # the structure, validated at load, is checked once more here
            k = kernels()
            chain = k.sparse_chain_prepare((self.spec(),), self.csr.shape[0], threads)
            self._chains[threads] = chain
        return [(kernels().sparse_chain_forward, (src, chain, (out,)))]

    def decide(self, n: int, mode: str, threads: int = 1) -> str:
        if mode in ("sparse", "dense"):
            return mode
        if n == 0:
            return "dense"
        bucket = min(1 << (n - 1).bit_length(), MEASURE_MAX_BATCH)
        key = (bucket, threads)
        if key not in self.choice:
            self.choice[key] = self._measure(bucket, threads)
        return self.choice[key]

    def dense_threads(self, n: int, threads: int) -> int:
        """The threads of the dense variant (as a :class:`DenseStep` would split it)."""
        return threads if n * self.w.size >= PACKED_SPLIT_MIN else 1

    def _measure(self, n: int, threads: int = 1) -> str:
        """Time both kernels on this layer at batch ``n`` (best of a few interleaved runs),
        each on the threads a plan would give it."""
        # any finite values time the same; numpy.random would be imported at load just here
        x = np.linspace(-1.0, 1.0, n * self.w.shape[0], dtype=np.float32).reshape(n, -1)
        out = np.empty((n, self.w.shape[1]), np.float32)
        dense_threads = self.dense_threads(n, threads)
        variants = {
            "dense": self._dense_ops(x, out, dense_threads),
            "sparse": self._sparse_ops(x, out, self.threads_for(n, threads)),
        }
        best = dict.fromkeys(variants, math.inf)
        reps = max(1, min(20, int(2e7 // max(1, n * self.w.size))))
        for _ in range(MEASURE_ROUNDS):  # interleaved; the best round of each (least disturbed)
            for name, ops in variants.items():
                t0 = time.perf_counter()
                for _ in range(reps):
                    for fn, args in ops:
                        fn(*args)
                best[name] = min(best[name], (time.perf_counter() - t0) / reps)
        # a sparse layer next to another runs in its chain's one call: no call of its own
        return "dense" if best["dense"] + SPARSE_JOIN_MARGIN < best["sparse"] else "sparse"

    def bind(self, src, owned, ctx):
        out = out_buffer(ctx, (ctx.n, self.w.shape[1]), np.float32)
        if self.decide(ctx.n, ctx.sparse, ctx.threads) == "sparse":
            return self._sparse_ops(src, out, self.threads_for(ctx.n, ctx.threads)), out
        return self._dense_ops(src, out, self.dense_threads(ctx.n, ctx.threads)), out

    def describe(self) -> str:
        picks = ", ".join(
            f"batch<={b}{f' on {t} threads' if t > 1 else ''}: {v}"
            for (b, t), v in sorted(self.choice.items())
        )
        return (
            f"{self.label}: sparse-capable {self.w.shape[0]}->{self.w.shape[1]} "
            f"(density {self.csr.density:.3f}{'; ' + picks if picks else ''})"
        )


class ActivationStep(Step):
    """y = f(x) elementwise with the backend's bias/activation kernel (no bias)."""

    kind = "activation"

    def __init__(self, label: str, act: int) -> None:
        self.label, self.act = label, act

    def bind(self, src, owned, ctx):
        out = src if owned else out_buffer(ctx, src.shape, ctx.dtype)
        return [(kernels().bias_act_forward, (src, None, self.act, out))], out


class SoftmaxStep(Step):
    """y = exp(x - max) / sum(exp(x - max)) (or its log) along the last axis, in place."""

    kind = "softmax"

    def __init__(self, label: str, log: bool) -> None:
        self.label, self.log = label, log

    def bind(self, src, owned, ctx):
        out = src if owned else out_buffer(ctx, src.shape, ctx.dtype)
        col = out_buffer(ctx, (*src.shape[:-1], 1), ctx.dtype)
        ax = src.ndim - 1
        ops: list[Op] = [(np.maximum.reduce, (src, ax, None, col, True))]
        ops.append((np.subtract, (src, col, out)))  # s = x - max
        if self.log:  # y = s - log(sum(exp(s)))
            e = out_buffer(ctx, src.shape, ctx.dtype)
            ops += [
                (np.exp, (out, e)),
                (np.add.reduce, (e, ax, None, col, True)),
                (np.log, (col, col)),
                (np.subtract, (out, col, out)),
            ]
        else:  # y = exp(s) / sum(exp(s))
            ops += [
                (np.exp, (out, out)),
                (np.add.reduce, (out, ax, None, col, True)),
                (np.divide, (out, col, out)),
            ]
        return ops, out


class FlattenStep(Step):
    """(N, d1, d2, ...) -> (N, d1 d2 ...): a view of the same buffer."""

    kind = "flatten"

    def __init__(self, label: str, width: int) -> None:
        self.label, self.width = label, width

    def bind(self, src, owned, ctx):
        return [], src.reshape(ctx.n, self.width)


def _chain_kernel(src: np.ndarray) -> Callable | None:
    """The compiled ``dense_chain_forward`` for a float32 batch-1 input, else None.

    At batch 1 a Dense layer reads each weight once for one multiply-add: it is bound by
    memory and by call overhead, not arithmetic. The compiled chain reads W in its own (K, N)
    layout, so no transposed copy of the weights is kept (the BLAS gemv path needs W^T in C
    order to be fast), and consecutive layers become one call (:func:`_join_dense_chains`).
    The NumPy twin is no faster than the path below it, so it is not used here.
    """
    if src.shape[0] != 1 or src.dtype != np.float32:
        return None
    k = kernels()
    if type(k).dense_chain_forward is ReferenceBackend.dense_chain_forward:
        return None
    return k.dense_chain_forward
