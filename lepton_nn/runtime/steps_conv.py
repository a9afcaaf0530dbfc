"""Plan steps for convolution and pooling layers: float Conv2D (im2col chunks or the direct
kernel, a run of them chained into one call), depthwise and grouped convolutions, int8
Conv2D, max/average pooling and global average pooling.

Each mirrors the eval-mode forward of its layer in :mod:`lepton_nn.nn` on the same backend
kernels, so a plan gives what ``model(x)`` gives, to float rounding where a step groups its
work otherwise (convolution chunks). Images are (C, H, W) per sample. A step's ``bind(src,
owned, ctx)`` returns its calls and output buffer; :mod:`.parsers` makes steps from a
layer's config and weights (an untrusted file).
"""

from __future__ import annotations

import numpy as np

from lepton_nn.backend.geometry import (
    CONV_CHUNK_BYTES,
    CONV_DIRECT_MAX_BYTES,
    conv_direct_scratch,
)
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.backend.reference_common import zeros_aligned
from lepton_nn.backend.threads import (
    threads_for,
)
from lepton_nn.errors import ModelFormatError

from .compression import Int8Weight
from .graph import out_buffer
from .kernels import kernels
from .steps import Op

__all__ = [
    "ConvChainStep",
    "ConvStep",
    "DepthwiseConvStep",
    "GlobalAvgPoolStep",
    "GroupedConvStep",
    "Int8ConvStep",
    "PoolStep",
    "grouped_conv_step",
]


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
        # the kernels' scratch on 64-byte boundaries (vectors of 8 floats from its start): at
        # np.zeros' 16 bytes, the CNN of bench_vs_ort.py at batch 64 took 6-9 % more thread
        # CPU a conv chain call with it 16 or 48 bytes past a line (interleaved, one process)
        scratch = (zeros_aligned(shifted), zeros_aligned(zshape))
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
                zeros_aligned(max(s for (s, _), _ in sizes)),
                zeros_aligned(max(z for (_, z), _ in sizes)),
                zeros_aligned(max(mids[0::2], default=1)),
                zeros_aligned(max(mids[1::2], default=1)),
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


def grouped_conv_step(label, w, b, act, geom, in_shape, out_hw, groups, one_d=False):
    """The step of a convolution with ``groups`` > 1: depthwise when groups = C, as the op."""
    if groups == in_shape[0]:
        return DepthwiseConvStep(label, w, b, act, geom, in_shape, out_hw, one_d)
    return GroupedConvStep(label, w, b, act, geom, in_shape, out_hw, groups, one_d)
