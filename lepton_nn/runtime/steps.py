"""Plan steps for convolution, pooling, normalization, recurrent and embedding layers.

Each mirrors the eval-mode forward of its layer in :mod:`lepton_nn.nn`, on the same backend
kernels (``im2col``, ``maxpool2d_forward``, ``avgpool2d_forward``, ``lstm_step_forward``,
``gru_step_forward``, ``rnn_step_forward``), so a plan gives what ``model(x)`` gives, to float
rounding where a step groups its work otherwise (convolution chunks, the recurrent input
product). Shapes per sample: images (C, H, W), sequences (T, F). A step's ``bind(src, owned,
ctx)`` returns its calls and output buffer; the parsers that make steps from a layer's config
and weights (an untrusted file) are in :mod:`.parsers`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_nn.backend import resolved
from lepton_nn.backend.geometry import (
    CONV_CHUNK_BYTES,
    CONV_DIRECT_MAX_BYTES,
    conv_direct_scratch,
)
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.backend.threads import (
    blas_held,
    blas_single,
    row_ranges,
    thread_ranges,
    threads_for,
)
from lepton_nn.errors import ModelFormatError

from .compression import Int8Weight
from .graph import out_buffer
from .kernels import kernels

__all__ = [
    "PARALLEL_MIN_ROWS",
    "AffineStep",
    "ConvChainStep",
    "ConvStep",
    "DepthwiseConvStep",
    "EmbeddingStep",
    "GroupedConvStep",
    "grouped_conv_step",
    "Int8ConvStep",
    "Int8DenseStep",
    "RecurrentStep",
    "PoolStep",
]

#: int8 layers use ``threads`` threads from this many rows per batch (one below).
PARALLEL_MIN_ROWS = 64
#: int8 Dense layers up to this many rows run as one compiled ``qdense_chain_forward`` (row
#: by row through its GEMV on AVX2; neighbouring layers joined into one call by the plan).
QCHAIN_MAX_ROWS = 4
#: ... and their columns are split over the plan's threads from this many multiply-adds in a
#: layer (rows x K x N; a joined chain takes its largest layer's count): below, the barrier
#: after each layer costs more than half of it (~0.2 us against ~1 us for 2**17 on one core)
QCHAIN_SPLIT_MIN = 1 << 17
#: a recurrent layer's float input product is computed this many bytes of output at a time
XZ_CHUNK_BYTES = 1 << 19

Op = tuple[Callable[..., Any], tuple]


# --------------------------------------------------------------------------- steps


class ConvStep:
    """y = f(W2 @ im2col(x) + b) per image: (N, C, H, W) -> (N, O, OH, OW), on the backend's
    chunk kernels (a few images at a time, CONV_CHUNK_BYTES of columns and output, so each
    chunk is read back from cache; chunks spread over the plan's threads). With ``pool`` (a
    max pool's (kh, kw, sh, sw, pt, pl, POH, POW), folded in by the plan), y is max-pooled
    chunk by chunk in the same pass -> (N, O, POH, POW)."""

    kind = "conv"

    def __init__(self, label, w, b, act, geom, in_shape, out_hw, one_d=False) -> None:
        self.label, self.act, self.geom = label, act, geom  # (kh, kw, sh, sw, pt, pl, dh, dw)
        o = w.shape[0]
        self.w2 = np.ascontiguousarray(w.reshape(o, -1))
        self.b = None if b is None else np.ascontiguousarray(b.reshape(o))
        self.in_shape, self.out_hw = in_shape, out_hw  # (C, H, W); a Conv1D's is (C, 1, L)
        self.one_d = one_d  # a Conv1D: (N, C, L) in, (N, O, OL) out, as views of 4-D arrays
        self.pool: tuple | None = None
        self._packed: tuple | None = None  # (w2, its conv2d_direct_pack form)

    def bind(self, src, owned, ctx):
        if self.one_d:
            ops, y = self._bind(src.reshape(ctx.n, *self.in_shape), ctx)
            return ops, y.reshape(ctx.n, y.shape[1], -1)
        return self._bind(src, ctx)

    def _bind(self, src, ctx):
        if self._direct(ctx):
            return self._bind_direct(src, ctx)
        n, (oh, ow), (o, ckk) = ctx.n, self.out_hw, self.w2.shape
        step = max(1, CONV_CHUNK_BYTES // ((ckk + o) * oh * ow * np.dtype(ctx.dtype).itemsize))
        chunks = -(-n // step)
        threads = min(ctx.threads, threads_for(2 * n * o * ckk * oh * ow, chunks))
        w2, b = self.w2.astype(ctx.dtype, copy=False), self.b
        head = (w2, None if b is None else b.astype(ctx.dtype, copy=False), self.act, self.geom)
        head += (oh, ow)
        scratch = [np.zeros((step, ckk, oh, ow), ctx.dtype) for _ in range(threads)]
        if self.pool is None:
            y = out_buffer(ctx, (n, o, oh * ow), ctx.dtype)
            name, head, tail = "conv2d_forward_chunks", (*head, step), (y, y)
            scratch = [(cols,) for cols in scratch]
            shape = (n, o, oh, ow)
        else:
            y = out_buffer(ctx, (n, o, self.pool[6] * self.pool[7]), ctx.dtype)
            argmax = np.zeros(y.shape, np.int64)
            name, head = "conv2d_pool_forward_chunks", (*head, self.pool, step)
            scratch = [(cols, np.zeros((step, o, oh * ow), ctx.dtype)) for cols in scratch]
            tail = (y, argmax)
            shape = (n, o, *self.pool[6:])
        op = (kernels().conv_chunks_threads, (name, src, head, tuple(scratch), tail, threads))
        return [op], y.reshape(shape)

    def _direct(self, ctx) -> bool:
        """Whether to run the compiled ``conv2d_direct_forward`` (a float32 plan, stride 1,
        the image's shifted copies within CONV_DIRECT_MAX_BYTES) rather than im2col chunks
        and BLAS: on the CNN of benchmarks/bench_vs_ort.py (batch 64, 1 thread, AMD EPYC
        AVX2) its 16 -> 32 convolution + ReLU + pool ran in 1.7 ms instead of 2.6 ms and its
        1 -> 16 one in 0.5 ms instead of 0.9 ms (0.33 ms with the kernel's pooled tiling)."""
        k = kernels()
        if ctx.dtype != np.float32 or self.geom[2:4] != (1, 1):
            return False
        if type(k).conv2d_direct_forward is ReferenceBackend.conv2d_direct_forward:
            return False  # the NumPy twin: im2col chunks with BLAS are faster there
        shifted, _ = conv_direct_scratch(self.in_shape[0], 1, self.geom, *self.out_hw, self.pool)
        return shifted * 4 <= CONV_DIRECT_MAX_BYTES

    def _bind_direct(self, src, ctx):
        """One call of ``conv2d_direct_forward``, or on more than one thread the pool job of a
        chain of this one layer (which takes the plan's input uncopied), images claimed one
        at a time."""
        n, (oh, ow), o = ctx.n, self.out_hw, self.w2.shape[0]
        k = kernels()
        threads = min(ctx.threads, threads_for(2 * n * o * self.w2.shape[1] * oh * ow, n))
        if threads > 1:
            return ConvChainStep([self]).bind(src, True, ctx)
        size = oh * ow if self.pool is None else self.pool[6] * self.pool[7]
        y = out_buffer(ctx, (n, o, size), ctx.dtype)
        shifted, zshape = conv_direct_scratch(self.in_shape[0], o, self.geom, oh, ow, self.pool)
        scratch = (np.zeros(shifted, np.float32), np.zeros(zshape, np.float32))
        head = (self.packed(k), self.b, self.act, self.geom, oh, ow, self.pool)
        shape = (n, o, *((oh, ow) if self.pool is None else self.pool[6:]))
        counter = np.zeros(1, np.int64)  # the kernel called straight (no dispatch)
        call = (k.conv2d_direct_forward, (src, *head, counter, *scratch, y))
        return [(counter.fill, (0,)), call], y.reshape(shape)

    def packed(self, k):
        """W2 as ``k.conv2d_direct_pack`` gives it, packed once per weight."""
        if self._packed is None or self._packed[0] is not self.w2:
            kh, kw = self.geom[:2]
            self._packed = (self.w2, k.conv2d_direct_pack(self.w2, self.in_shape[0], kh, kw))
        return self._packed[1]

    def fold_scale(self, scale: np.ndarray, shift: np.ndarray) -> None:
        """Make this step compute y * scale + shift (per output channel) itself: W2 scaled by
        rows, b = b scale + shift (an eval BatchNorm after the convolution)."""
        w2 = self.w2.astype(np.float64) * scale[:, None]
        b = 0.0 if self.b is None else self.b.astype(np.float64)
        self.w2 = w2.astype(self.w2.dtype)
        self.b = (b * scale + shift).astype(self.w2.dtype)

    def describe(self) -> str:
        pooled = "" if self.pool is None else f", max pool -> {self.pool[6:]}"
        return f"{self.label}: conv {self.in_shape} -> {self.w2.shape[0]}x{self.out_hw}{pooled}"


class ConvChainStep:
    """Convolutions one after the other (each a :class:`ConvStep`, its BatchNorm, activation
    and max pool folded in): when every one of them takes the direct kernel, one call of
    ``conv2d_direct_chain`` in which each thread carries the images it claims through all of
    them, an image's outputs between the layers in that thread's scratch (in cache): no
    (N, ...) buffer between the layers, and on the pool one job without a barrier between
    them. Otherwise each is bound on its own, in order."""

    kind = "conv"

    def __init__(self, parts: list[ConvStep]) -> None:
        self.parts = parts
        self.label = " -> ".join(p.label for p in parts)

    def bind(self, src, owned, ctx):
        if not all(p._direct(ctx) for p in self.parts):
            ops: list[Op] = []
            for p in self.parts:
                more, src = p.bind(src, owned, ctx)
                ops, owned = ops + more, True
            return ops, src
        from .conv_winograd import winograd_filters  # its layers' filters (lazy: cold start)

        k = kernels()
        layers, sizes, flops = [], [], 0
        for p in self.parts:
            (c, h, w), (oh, ow), o = p.in_shape, p.out_hw, p.w2.shape[0]
            sizes.append((conv_direct_scratch(c, o, p.geom, oh, ow, p.pool),
                          o * (oh * ow if p.pool is None else p.pool[6] * p.pool[7])))  # fmt: skip
            flops += 2 * o * p.w2.shape[1] * oh * ow
            layers.append((p.packed(k), p.b, p.act, p.geom, oh, ow, p.pool, c, h, w, o,
                           winograd_filters(p, k)))  # fmt: skip
        n, last = ctx.n, self.parts[-1]
        threads = min(ctx.threads, threads_for(n * flops, n))
        y = out_buffer(ctx, (n, last.w2.shape[0], sizes[-1][1] // last.w2.shape[0]), ctx.dtype)
        mids = [size for _, size in sizes[:-1]]

        def scratch():  # s, z for the largest layer; m0, m1 for the outputs between
            return (
                np.zeros(max(s for (s, _), _ in sizes), np.float32),
                np.zeros(max(z for (_, z), _ in sizes), np.float32),
                np.zeros(max(mids[0::2], default=1), np.float32),
                np.zeros(max(mids[1::2], default=1), np.float32),
            )

        sets, layers = [scratch() for _ in range(threads)], tuple(layers)
        pool = last.pool
        shape = (n, last.w2.shape[0], *(last.out_hw if pool is None else pool[6:]))
        if threads == 1:  # the kernel called straight
            counter = np.zeros(1, np.int64)
            call = (k.conv2d_direct_chain, (src, layers, counter, *sets[0], y))
            return [(counter.fill, (0,)), call], y.reshape(shape)
        args = (src, layers, tuple(sets), y, threads)  # the input first: never copied
        return [(k.conv_direct_chain_threads, args)], y.reshape(shape)

    def describe(self) -> str:
        return "; ".join(p.describe() for p in self.parts) + " (image by image, chained)"


class DepthwiseConvStep:
    """A depthwise convolution (groups = C, O = C m) on the backend's
    ``depthwise_conv2d_forward``, as the op ``DepthwiseConv2d``: (N, C, H, W) -> (N, O, OH, OW)
    (a Conv1D's (N, C, L) -> (N, O, OL) through (C, 1, L) views)."""

    kind = "conv"

    def __init__(self, label, w, b, act, geom, in_shape, out_hw, one_d=False) -> None:
        self.label, self.act, self.geom = label, act, geom  # (kh, kw, sh, sw, pt, pl, dh, dw)
        self.w3 = np.ascontiguousarray(w.reshape(w.shape[0], geom[0], geom[1]))
        self.b = None if b is None else np.ascontiguousarray(b)
        self.in_shape, self.out_hw, self.one_d = in_shape, out_hw, one_d

    def bind(self, src, owned, ctx):
        n, o = ctx.n, self.w3.shape[0]
        y = np.zeros((n, o, *self.out_hw), ctx.dtype)
        w3 = self.w3.astype(ctx.dtype, copy=False)
        b = None if self.b is None else self.b.astype(ctx.dtype, copy=False)
        x = src.reshape(n, *self.in_shape)
        kh, kw, sh, sw, pt, pl, dh, dw = self.geom
        (_, h, w), (oh, ow) = self.in_shape, self.out_hw
        hp, wp = (
            max(pt + h, (oh - 1) * sh + (kh - 1) * dh + 1),
            max(pl + w, (ow - 1) * sw + (kw - 1) * dw + 1),
        )
        xp, tmp = np.zeros((n, o, hp, wp), ctx.dtype), np.zeros(y.shape, ctx.dtype)
        args = (x, w3, b, self.act, self.geom, xp, tmp, y, y)
        ops: list[Op] = [(kernels().depthwise_conv2d_forward, args)]
        return ops, (y.reshape(n, o, -1) if self.one_d else y)

    def describe(self) -> str:
        return f"{self.label}: depthwise conv {self.in_shape} -> {self.w3.shape[0]}x{self.out_hw}"


class GroupedConvStep:
    """A grouped convolution (groups G) as G :class:`ConvStep`: input group g (C / G channels)
    copied out to a buffer of its own, convolved, and its output copied into the output's
    group g (O / G channels), as the op ``GroupedConv2d`` computes it. Conv1D too."""

    kind = "conv"

    def __init__(self, label, w, b, act, geom, in_shape, out_hw, groups, one_d=False) -> None:
        cg, og = in_shape[0] // groups, w.shape[0] // groups
        self.label, self.groups, self.cg, self.og = label, groups, cg, og
        self.in_shape, self.out_hw, self.n_out = in_shape, out_hw, w.shape[0]
        part_in = (cg, *in_shape[1:])
        cut = [slice(g * og, (g + 1) * og) for g in range(groups)]
        self.parts = [
            ConvStep(label, w[o], None if b is None else b[o], act, geom, part_in, out_hw, one_d)
            for o in cut
        ]

    def bind(self, src, owned, ctx):
        ops: list[Op] = []
        out = None
        for g, part in enumerate(self.parts):
            xg = np.zeros((ctx.n, self.cg, *src.shape[2:]), ctx.dtype)
            ops.append((np.copyto, (xg, src[:, g * self.cg : (g + 1) * self.cg])))
            part_ops, yg = part.bind(xg, True, ctx)
            ops += part_ops
            if out is None:
                out = np.zeros((ctx.n, self.n_out, *yg.shape[2:]), ctx.dtype)
            ops.append((np.copyto, (out[:, g * self.og : (g + 1) * self.og], yg)))
        return ops, out

    def describe(self) -> str:
        return (
            f"{self.label}: grouped conv ({self.groups} groups) {self.in_shape} -> "
            f"{self.n_out}x{self.out_hw}"
        )


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
        threads = ctx.threads if n >= PARALLEL_MIN_ROWS else 1
        args = (xq, scale, zp, self.packed, self.wq.scale, self.col_sums, self.b, self.act, out)
        ops.append((k.qlinear, (*args, threads) if threads > 1 else args))
        if ctx.dtype != np.float32:
            out64 = out_buffer(ctx, out.shape, ctx.dtype)
            ops.append((np.copyto, (out64, out)))
            out = out64
        return ops, out

    def describe(self) -> str:
        return f"{self.label}: int8 {self.n_in}->{self.n_out} ({self.wq.act_mode} activations)"


class Int8ConvStep:
    """int8 Conv2D on the backend's ``qconv2d_forward_chunks``: per image, the input quantized
    once (its own scale and zero point, or the static pair), unfolded channels last into rows
    (OH OW, kh kw C), one int8 GEMM with bias and activation fused, and the result transposed
    (or, with ``pool`` folded in by the plan, max-pooled) into (N, F, OH, OW); a layer with
    few taps (C kh kw <= 64, stride 1 along x) is summed tap by tap in float on AVX2 and up
    instead, with the same integers and so the same result. Images spread over the plan's
    threads. A float64 plan casts to float32 on the way in and back out."""

    kind = "int8"

    def __init__(self, label, wq: Int8Weight, b, act, geom, in_shape, out_hw) -> None:
        self.label, self.wq, self.act, self.geom = label, wq, act, geom
        self.b = None if b is None else np.ascontiguousarray(b, dtype=np.float32)
        f, c, kh, kw = wq.conv_shape
        # the kernel's rows are (ky, kx, c): the weight columns (c, ky, kx) reordered to match
        rows_order = wq.q.reshape(f, c, kh, kw).transpose(0, 2, 3, 1).reshape(f, -1)
        self.packed, self.col_sums = kernels().qpack_weights(np.ascontiguousarray(rows_order))
        self.n_out, self.n_in = wq.q.shape
        self.in_shape, self.out_hw = tuple(in_shape), tuple(out_hw)
        self.pool: tuple | None = None
        self.static: tuple | None = None
        if wq.act_mode == "static":
            scale = np.array([wq.act_scale], np.float32)
            if not 0 < scale[0] < np.inf:  # a float64 scale out of float32 range
                raise ModelFormatError(
                    f"{label}: activation scale {wq.act_scale!r} is not a positive float32"
                )
            self.static = (scale, np.array([wq.act_zero_point], np.int32))

    def bind(self, src, owned, ctx):
        n, k = ctx.n, kernels()
        (oh, ow), (c, h, w), f = self.out_hw, self.in_shape, self.n_out
        p = oh * ow
        threads = min(ctx.threads, threads_for(2 * n * f * self.n_in * p, n))
        ops: list[Op] = []
        x = src
        if src.dtype != np.float32:  # a float64 plan: the kernel reads float32
            x = out_buffer(ctx, src.shape, np.float32)
            ops.append((np.copyto, (x, src, "same_kind")))
        size = p if self.pool is None else self.pool[6] * self.pool[7]
        y = out_buffer(ctx, (n, f, size), np.float32)
        scale, zp = self.static or (None, None)
        head = (self.packed, self.wq.scale, self.col_sums, self.b, self.act, self.geom, oh, ow)
        head += (self.pool, scale, zp, 1)  # one image per claim
        scratch = [
            (np.zeros(c * h * w, np.uint8), np.zeros(c * h * w, np.uint8),
             np.zeros((p, self.n_in), np.uint8), np.zeros((p, f), np.float32))
            for _ in range(threads)
        ]  # fmt: skip
        args = ("qconv2d_forward_chunks", x, head, tuple(scratch), (y,), threads)
        ops.append((k.conv_chunks_threads, args))
        shape = (n, f, *((oh, ow) if self.pool is None else self.pool[6:]))
        if ctx.dtype == np.float32:
            return ops, y.reshape(shape)
        out = out_buffer(ctx, shape, ctx.dtype)
        ops.append((np.copyto, (out, y.reshape(shape), "same_kind")))
        return ops, out

    def describe(self) -> str:
        pooled = "" if self.pool is None else f", max pool -> {self.pool[6:]}"
        return (
            f"{self.label}: int8 conv {self.in_shape} -> {self.n_out}x{self.out_hw}{pooled} "
            f"({self.wq.act_mode} activations)"
        )


class PoolStep:
    """Max or average over windows: (N, C, H, W) -> (N, C, OH, OW)."""

    kind = "pool"

    def __init__(self, label, kind, geom, count_pad, channels, out_hw) -> None:
        self.label, self.pool, self.geom, self.count_pad = label, kind, geom, count_pad
        self.channels, self.out_hw = channels, out_hw

    def bind(self, src, owned, ctx):
        y = out_buffer(ctx, (ctx.n, self.channels, *self.out_hw), ctx.dtype)
        if self.pool == "max":
            argmax = np.zeros(y.shape, np.int64)
            return [(kernels().maxpool2d_forward, (src, *self.geom, y, argmax))], y
        return [(kernels().avgpool2d_forward, (src, *self.geom, self.count_pad, y))], y

    def describe(self) -> str:
        return f"{self.label}: {self.pool} pool -> {self.channels}x{self.out_hw}"


class GlobalAvgPoolStep:
    """(N, C, H, W) -> (N, C): each channel's mean."""

    kind = "pool"

    def __init__(self, label, channels) -> None:
        self.label, self.channels = label, channels

    def bind(self, src, owned, ctx):
        y = out_buffer(ctx, (ctx.n, self.channels), ctx.dtype)
        return [(_plane_mean, (src, y))], y

    def describe(self) -> str:
        return f"{self.label}: global average pool"


def _plane_mean(x: np.ndarray, y: np.ndarray) -> None:
    np.mean(x, axis=(2, 3), out=y)


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


class RecurrentStep:
    """LSTM / GRU / SimpleRNN over (N, T, F). A direction with float weights is one call of
    the backend's ``recurrent_rows_forward`` per range of batch rows (its weights packed
    once by ``pack_recurrent``): each step's x W_ih + b + h[p] W_hh summed in registers and
    turned into the gates and states, no Python between steps; rows are independent, so
    the plan cuts the batch into a range a thread, which the threads share step by step
    (a thread that starts late takes over where the ranges are), with the bits of one
    thread. With the plan's mask (sequences of given lengths) a row past its end
    keeps its state, its outputs are 0, and the reverse direction starts at the row's own
    last step. The states use two slots unless the whole sequence of h is returned.

    A direction with both ``W_ih`` and ``W_hh`` int8 (:class:`Int8Weight`, h quantized per
    row) in a float32 plan is likewise one call of ``recurrent_q8_forward`` per range of
    rows (weights packed once by ``pack_recurrent_q8``), after x is quantized for all steps
    at once (per row, or with the file's static pair): each step quantizes every row's h,
    sums the int8 products exactly and computes the gates in registers, with the bits of the
    per-step path below. Otherwise (one matrix int8, a float64 plan) it is a list of
    per-step calls: the input product of ``XZ_CHUNK_BYTES`` of output at a time (int8: an
    :class:`Int8DenseStep`, x quantized per row or with the file's static pair; float:
    [x, 1] [[W_ih], [b]], the bias inside the GEMM), and each step's ``h @ W_hh`` (int8: h
    quantized per row at every step) then the backend's step kernel; the gates stay in
    float."""

    kind = "recurrent"
    GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}

    def __init__(self, label, cell, dirs, units, steps, sequences) -> None:
        self.label, self.cell, self.dirs, self.units = label, cell, dirs, units
        self.t, self.sequences = steps, sequences  # dirs: [(w_ih, w_hh, b, b_hh, reverse)]
        # int8 weights packed once: (input product with its bias, recurrent product) per dir
        self.int8 = [
            (
                Int8DenseStep(label, w_ih, b, 0) if isinstance(w_ih, Int8Weight) else None,
                Int8DenseStep(label, w_hh, None, 0) if isinstance(w_hh, Int8Weight) else None,
            )
            for w_ih, w_hh, b, _, _ in dirs
        ]
        # both matrices int8, h quantized per row: packed once for recurrent_q8_forward
        self.q8 = [
            kernels().pack_recurrent_q8(cell, w_ih.q, w_ih.scale, b, w_hh.q, w_hh.scale, b_hh)
            if isinstance(w_ih, Int8Weight)
            and isinstance(w_hh, Int8Weight)
            and w_hh.act_mode == "dynamic"
            else None
            for w_ih, w_hh, b, b_hh, _ in dirs
        ]

    def bind(self, src, owned, ctx):
        n, t, u, dt = ctx.n, self.t, self.units, ctx.dtype
        f = self.dirs[0][0].shape[0]
        k = kernels()
        ops: list[Op] = []
        # float weights: the whole sequence of a direction in one kernel call per range of
        # batch rows (input product, recurrent product and gates fused, rows split over the
        # plan's threads); int8 weights: the same in recurrent_q8_forward, or per-step calls
        fused = [q_ih is None and q_hh is None for q_ih, q_hh in self.int8]
        fused_q8 = [q is not None and dt == np.float32 for q in self.q8]
        int8_ih = [q is not None for q, _ in self.int8]
        xqs: dict = {}  # x quantized for the fused int8 directions: one per activation pair
        if any(int8_ih) or any(fused):  # x time-major (T N, F)
            xt = np.zeros((t, n, f), dt)
            ops.append((_time_major, (src, xt)))
        if not all(a or b for a, b in zip(int8_ih, fused, strict=True)):
            xa = np.ones((t, n, f + 1), dt)  # and with a column of ones: [x, 1] [[W_ih], [b]]
            ops.append((_time_major, (src, xa[:, :, :f])))
        width = u * len(self.dirs)
        out = out_buffer(ctx, (n, t, width) if self.sequences else (n, width), dt)
        mask = getattr(ctx, "mask", None)  # (T, N) for sequences with lengths, else None
        # the input product runs a few steps ahead of the steps that read it, not all at once:
        # its output is still in cache then (and the float one's bias costs no pass of its own)
        ahead = max(1, min(t, XZ_CHUNK_BYTES // (n * self.GATES[self.cell] * u * dt.itemsize)))
        for j, (w_ih, w_hh, b, b_hh, reverse) in enumerate(self.dirs):
            gu = w_ih.shape[1]
            q_ih, q_hh = self.int8[j]
            # states: h[i] for i in 0..T when the sequence is returned, else two buffers used
            # in turn (state i in slot i % 2), as c always is
            hn, cn = (t + 1 if self.sequences else 2), 2
            h, c = np.zeros((hn, n, u), dt), np.zeros((cn, n, u), dt)
            first = t if reverse else 0  # the zero initial state, reset on every run
            ops += [(h[first % hn].fill, (0,)), (c[first % cn].fill, (0,))]
            if fused_q8[j]:
                q_ih = self.int8[j][0]
                key = None if w_ih.act_mode != "static" else (w_ih.act_scale, w_ih.act_zero_point)
                if key not in xqs:
                    xqs[key] = _quantize_x(k, xt, q_ih, ops)
                head = (self.cell, *xqs[key], self.q8[j], h, c if self.cell == "LSTM" else None,
                        mask)  # fmt: skip
                threads = min(ctx.threads, threads_for(2 * n * t * gu * (f + u), n))
                if threads > 1:  # ranges of rows as tasks of the native pool
                    bounds = np.array(row_ranges(n, threads), np.int64)
                    ops.append((k.recurrent_q8_threads, (*head, bounds, reverse, threads)))
                else:
                    ops.append((k.recurrent_q8_forward, (*head, 0, n, reverse)))
            elif fused[j]:
                ws = [None if a is None else np.asarray(a, dt) for a in (w_ih, b, w_hh, b_hh)]
                head = (self.cell, xt, k.pack_recurrent(self.cell, *ws), h,
                        c if self.cell == "LSTM" else None, mask)  # fmt: skip
                flops = 2 * n * t * gu * (f + u)
                # rows split over threads only where the bits do not depend on the split
                threads = min(ctx.threads, threads_for(flops, n))
                threads = threads if k.recurrent_rows_exact(dt) else 1
                if threads > 1:  # a range a thread, shared step by step on the native pool
                    bounds = np.array(thread_ranges(n, threads), np.int64)
                    ops.append((k.recurrent_rows_threads, (*head, bounds, reverse, threads)))
                else:
                    ops.append((k.recurrent_rows_forward, (*head, 0, n, reverse)))
            else:
                ops += self._step_ops(ctx, xt if int8_ih[j] else xa, j, h, c, mask, ahead)
            cols = slice(j * u, (j + 1) * u)
            if self.sequences:
                ys = h[:-1] if reverse else h[1:]  # (T, N, U)
                if mask is not None:  # outputs past a sequence's end are 0
                    ops.append((np.multiply, (ys, mask[:, :, None], ys)))
                ops.append((_batch_major, (ys, out[:, :, cols])))
            else:
                ops.append((np.copyto, (out[:, cols], h[(0 if reverse else t) % hn])))
        return ops, out

    def _step_ops(self, ctx, x, j, h, c, mask, ahead) -> list[Op]:
        """Direction j with an int8 weight, one step at a time: the input product ``ahead``
        steps at a time (x: xt (T, N, F) for an int8 W_ih, else xa with a column of ones),
        then per step hz = h[p] @ W_hh (int8: h quantized per row) and the step kernel."""
        n, t, u, dt, k = ctx.n, self.t, self.units, ctx.dtype, kernels()
        w_ih, w_hh, b, b_hh, reverse = self.dirs[j]
        gu, (q_ih, q_hh) = w_ih.shape[1], self.int8[j]
        if q_ih is None:  # [x, 1] [[W_ih], [b]], into one buffer of `ahead` steps
            w_aug = np.concatenate([w_ih, np.zeros((1, gu), dt) if b is None else b[None]])
            ih: Any = (x, w_aug.astype(dt, copy=False), np.zeros((ahead, n, gu), dt))
        else:
            ih = (x, q_ih, ctx)
        hh: dict = {}  # state slot -> (ops, hz) of hz = int8(h[slot]) W_hh
        if q_hh is not None and (h.shape[0] == 2 and dt == np.float32):
            hh = {i: q_hh.bind(h[i], False, ctx) for i in range(2)}  # read in place
        elif q_hh is not None:  # each step's h[p] copied to hs (float32) first
            hs = np.zeros((n, u), np.float32)
            hh_ops, hz = q_hh.bind(hs, True, ctx)
        else:
            hz = np.zeros((n, gu), dt)
        gates = np.zeros((n, 4 * u), dt)  # written by each step, not read again: one buffer
        ops: list[Op] = []
        hn, cn, r = h.shape[0], c.shape[0], int(reverse)
        for s in range(t - 1, -1, -1) if reverse else range(t):
            p, q = s + r, s + 1 - r  # the state before and after step s
            hp, hq, cp, cq = h[p % hn], h[q % hn], c[p % cn], c[q % cn]
            c0 = s - s % ahead  # steps [c0, c1) hold s: their input product, on entry
            c1 = min(c0 + ahead, t)
            if s == (c1 - 1 if reverse else c0):
                ih_ops, xz = _input_product(ih, c0, c1)
                ops += [_on_one_blas_thread(o, 2 * (c1 - c0) * n * x.shape[2] * gu)
                        for o in ih_ops]  # fmt: skip
            xzs = xz[s - c0]
            if hh:
                hh_ops, hz = hh[p % hn]
                ops += hh_ops
            elif q_hh is not None:
                ops.append((np.copyto, (hs, hp, "same_kind")))
                ops += hh_ops
            else:
                ops.append(_on_one_blas_thread((np.matmul, (hp, w_hh, hz)), 2 * n * u * gu))
            m = None if mask is None else mask[s]  # rows past their end keep their state
            if self.cell == "LSTM":
                ops.append((k.lstm_step_forward, (xzs, hz, cp, hp, m, gates, cq, hq)))
            elif self.cell == "GRU":
                ops.append((k.gru_step_forward, (xzs, hz, b_hh, hp, m, gates, hq)))
            else:
                ops.append((k.rnn_step_forward, (xzs, hz, hp, m, hq)))
        return ops

    def describe(self) -> str:
        kind = "bidirectional " if len(self.dirs) == 2 else ""
        int8 = " (int8 weights)" if self.int8[0][0] or self.int8[0][1] else ""
        return f"{self.label}: {kind}{self.cell} over {self.t} steps, {self.units} units{int8}"


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


def _quantize_x(k, xt: np.ndarray, q_ih: Int8DenseStep, ops: list[Op]) -> tuple:
    """(xq uint8 (T, N, F), scale, zero point) for an int8 direction's recurrent_q8_forward,
    the op that fills them appended to ``ops``: x quantized per row of (T N, F) (dynamic),
    or with the file's static pair, as the per-step path's Int8DenseStep does."""
    t, n, f = xt.shape
    xq = np.zeros((t, n, f), np.uint8)
    flat = (xt.reshape(t * n, f), xq.reshape(t * n, f))
    if q_ih.wq.act_mode == "static":
        pair = (q_ih.static_scale, q_ih.static_zp)
        ops.append((k.quantize_rows, (*flat, *pair, True)))
    else:
        pair = (np.zeros(t * n, np.float32), np.zeros(t * n, np.int32))
        ops.append((k.quantize_rows, (*flat, *pair)))
    return (xq, *pair)


def _on_one_blas_thread(op: Op, flops: float) -> Op:
    """``op``, run with NumPy's BLAS on one thread when its GEMMs (``flops`` each) are too
    small for OpenBLAS's split to gain (:class:`blas_single`)."""
    return (_one_blas_thread, op) if blas_single(flops).on else op


def _one_blas_thread(fn: Callable, args: tuple) -> None:
    with blas_held():
        fn(*args)


def _input_product(ih, c0: int, c1: int) -> tuple[list[Op], np.ndarray]:
    """Ops for xz = x W_ih + b over steps [c0, c1), and xz (c1 - c0, N, GU). ``ih``: float
    (xa (T, N, F + 1) with ones last, [[W_ih], [b]], a buffer of at least c1 - c0 steps) or
    int8 (xt (T, N, F), its Int8DenseStep, the plan's ctx: an int8 product with its own
    output)."""
    if isinstance(ih[1], Int8DenseStep):
        xt, step, ctx = ih
        rows = (c1 - c0) * xt.shape[1]
        ops, xz = step.bind(xt[c0:c1].reshape(rows, xt.shape[2]), False, _rows(ctx, rows))
        return ops, xz.reshape(c1 - c0, xt.shape[1], -1)
    xa, w_aug, buf = ih
    xz = buf[: c1 - c0]
    return [
        (np.matmul, (xa[c0:c1].reshape(-1, xa.shape[2]), w_aug, xz.reshape(-1, xz.shape[2])))
    ], xz


def _rows(ctx, n: int):
    """``ctx`` for a product over ``n`` rows (the steps x batch of a sequence)."""
    out = copy.copy(ctx)
    out.n = n
    return out


def _time_major(x: np.ndarray, xt: np.ndarray) -> None:
    np.copyto(xt, x.transpose(1, 0, 2))


def _batch_major(ys: np.ndarray, out: np.ndarray) -> None:
    np.copyto(out, ys.transpose(1, 0, 2))


def grouped_conv_step(label, w, b, act, geom, in_shape, out_hw, groups, one_d=False):
    """The step of a convolution with ``groups`` > 1: depthwise when groups = C, as the op."""
    if groups == in_shape[0]:
        return DepthwiseConvStep(label, w, b, act, geom, in_shape, out_hw, one_d)
    return GroupedConvStep(label, w, b, act, geom, in_shape, out_hw, groups, one_d)


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
