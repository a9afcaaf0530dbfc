"""Convolution and pooling on NCHW images.

``Conv2d`` unfolds the windows (``im2col``) and runs one GEMM per image, bias and activation
fused after it in one kernel; its backward is two more GEMMs per image and ``col2im``. Both
passes go a few images at a time, sized for the core's cache, and spread those chunks over the
intra-op threads (:mod:`lepton_nn.backend.threads`); the loop over a thread's chunks is one
backend kernel (``conv2d_forward_chunks`` / ``conv2d_backward_chunks``: NumPy in the reference,
C calling NumPy's BLAS in the compiled backend). The column matrix is scratch (a reused
workspace), rebuilt from the input for the weight gradient rather than kept between forward
and backward.
Pooling runs one backend kernel each way. Geometry (stride, padding, dilation) is resolved
here, once, into plain integers and checked (:mod:`lepton_nn.backend.geometry`, the limits
the runtime applies too) before any compiled kernel runs; the kernels trust what they get.

Padding: ``"valid"`` (none), ``"same"`` (output size ceil(H / stride), the extra row/column
going below/right as in TensorFlow; for stride 1 this is PyTorch's ``padding="same"``), an
int, or a pair (rows, columns) added on both sides.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_backend
from ..backend.geometry import (
    CONV_CHUNK_BYTES,
    check_scratch,
    output_size,
    same_padding,
    window_output_size,
)
from ..backend.reference import ACT_CODE, GELU, IDENTITY, RELU, SIGMOID, TANH
from ..backend.threads import parallel_for, threads_for
from ..errors import ShapeError
from ._workspace import recycled, workspace

__all__ = [
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
    "pair",
    "resolve_padding",
    "output_size",
]


def pair(v, what: str = "value") -> tuple[int, int]:
    """An int or a pair of ints as a pair of positive ints."""
    a, b = (v, v) if np.isscalar(v) else tuple(v)
    if int(a) != a or int(b) != b or a < 1 or b < 1:
        raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return int(a), int(b)


def resolve_padding(padding, size, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding for an input of ``size`` = (H, W): from "valid",
    "same", an int, a pair (rows, columns) or four ints (top, bottom, left, right).

    "same": total = max((ceil(H / s) - 1) s + d (k - 1) + 1 - H, 0), top = total // 2.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding != "same":
            raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
        return same_padding(size, kernel, stride, dilation)
    p = (padding, padding) if np.isscalar(padding) else tuple(padding)
    if len(p) not in (2, 4) or any(int(v) != v or v < 0 for v in p):
        raise ValueError(
            f"padding must be 'valid', 'same', an int, a pair or four ints, got {padding!r}"
        )
    if len(p) == 4:  # (top, bottom, left, right), as ONNX's asymmetric pads
        return int(p[0]), int(p[1]), int(p[2]), int(p[3])
    return int(p[0]), int(p[0]), int(p[1]), int(p[1])


def _dtype_ok(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=like.dtype)


# activations whose derivative is a function of their output: a fused max pool keeps only that
POOLED_ACTS = (IDENTITY, RELU, SIGMOID, TANH)


def _gw_from_transposed(k: int, o: int, p: int) -> bool:
    """Whether G_W's per-image GEMM cols (K, P) @ G_Z^T (P, O) should transpose G_Z first.

    OpenBLAS's kernel for an untransposed right operand beats the one for a transposed one at
    these shapes (float32, one thread, 2-vCPU AMD EPYC with AVX-512: K, O, P = 144, 32, 196:
    24.7 -> 17.4 us plus a 2.5 us transpose; 288, 32, 49: 13.0 -> 9.7 + 1.0; at O = 64 or 128
    the two are within 2 %), and loses at narrow O or short K (9, 16, 784: 3.7 -> 4.8 us before
    the transpose). Fixed by shape, never timed at run time, so a seed gives the same weights.
    """
    return k >= 64 and o >= 32 and p <= 256


class Conv2d(Function):
    """Y[n] = f(W2 @ cols[n] + b), cols = im2col(X), W2 = W.reshape(O, C kh kw), f fused;
    with ``pool``, Y = maxpool(f(...)) in the same pass.

    X: (N, C, H, W), W: (O, C, kh, kw), b: (O,) or absent -> Y: (N, O, OH, OW); ``act`` is
    an activation code (the backend's bias_act kernels apply it in place, one pass).
    Backward: G_Z = G_Y f'(Z);  G_b = sum G_Z over (n, y, x);  G_W = sum_n G_Z[n] cols[n]^T;
    G_X = col2im(W2^T G_Z[n]).  ``geom`` = (sh, sw, pt, pb, pl, pr, dh, dw).
    Both passes run a few images at a time (``CONV_CHUNK_BYTES``), in the backend's chunk
    kernels: each of the intra-op threads calls one with its own scratch, and it claims chunks
    until none are left. A chunk's column matrix is consumed while it is in cache. Backward
    rebuilds it from X rather than keeping C kh kw times the input between the passes: an
    im2col costs less than streaming the matrix back from memory.

    ``pool`` = (kh, kw, sh, sw, pt, pl, POH, POW), a max pool's geometry: Y = maxpool(f(Z)),
    (N, O, POH, POW), with f one of identity, relu, sigmoid, tanh (f' is then a function of
    f's output, so it is read at the pooled cells). F(Z) exists only a chunk at a time, in
    cache: it is never written out nor read back, in either pass. Same results as
    ``max_pool2d(conv2d(...))``, bar the order G_b is summed in.
    """

    def forward(self, x, w, b=None, geom=None, act=IDENTITY, pool=None):
        sh, sw, pt, pb, pl, pr, dh, dw = geom
        be = get_backend()
        x = np.ascontiguousarray(x)
        n, c, h, wd = x.shape
        o, _, kh, kw = w.shape
        oh, ow = output_size((h, wd), (pt, pb, pl, pr), (kh, kw), (sh, sw), (dh, dw))
        self.x, self.geom, self.pool = x, (kh, kw, sh, sw, pt, pl, dh, dw), pool
        self.out_hw = oh, ow
        self.w2 = _dtype_ok(w, x).reshape(o, c * kh * kw)
        self.b = None if b is None else _dtype_ok(b, x)
        self.act, self.z = act, None
        step, chunks, threads = self._plan()
        counter = np.zeros(1, np.int64)  # the next chunk to claim, shared by the threads
        args = (x, self.w2, self.b, act, self.geom, oh, ow)
        if pool is not None:
            y = recycled((n, o, pool[6] * pool[7]), x.dtype)
            self.argmax = recycled(y.shape, np.int64)

            def run(_):  # one thread's share: the kernel claims chunks until none are left
                zc = workspace("conv_z", (step, o, oh * ow), x.dtype)
                be.conv2d_pool_forward_chunks(
                    *args, pool, step, counter, self._cols(step), zc, y, self.argmax
                )

            parallel_for(chunks, run, threads)
            self.y = y
            return y.reshape(n, o, *pool[6:])
        z = recycled((n, o, oh * ow), x.dtype)
        y = recycled(z.shape, z.dtype) if act == GELU else z  # gelu keeps z for backward

        def run(_):  # one thread's share: the kernel claims chunks until none are left
            be.conv2d_forward_chunks(*args, step, counter, self._cols(step), z, y)

        parallel_for(chunks, run, threads)
        self.z = z if act == GELU else None  # gelu's derivative needs the pre-activation
        self.y = y
        return y.reshape(n, o, oh, ow)

    def _plan(self):
        """(step, chunks, threads): runs of ``step`` images, at most about CONV_CHUNK_BYTES of
        columns and outputs each, and the threads to spread the chunks over (by the
        multiply-adds, 2 N O C kh kw OH OW). An odd count of several chunks is made even where
        the batch allows, the images spread over one chunk more, so that two threads get as
        many (W3's conv1, 64 images: 5 chunks of 13, two threads taking 39 and 25 images, ->
        6 of 11, 33 and 31). The chunks do not depend on the thread count, so neither do the
        results."""
        n, (o, k), (oh, ow) = self.x.shape[0], self.w2.shape, self.out_hw
        step = max(1, CONV_CHUNK_BYTES // ((k + o) * oh * ow * self.x.itemsize))
        chunks = -(-n // step)
        if chunks > 1 and chunks % 2:
            step = -(-n // (chunks + 1))
            chunks = -(-n // step)
        return step, chunks, threads_for(2 * n * o * k * oh * ow, chunks)

    def _cols(self, step):
        """This thread's im2col scratch for ``step`` images, (step, C kh kw, OH, OW)."""
        return workspace("conv_cols", (step, self.w2.shape[1], *self.out_hw), self.x.dtype)

    def backward(self, g):
        be = get_backend()
        n, o = g.shape[:2]
        (oh, ow), k = self.out_hw, self.w2.shape[1]
        p = oh * ow
        g = np.ascontiguousarray(g, dtype=self.x.dtype).reshape(n, o, -1)
        y, act, b, pool = self.y, self.act, self.b, self.pool
        z = y if self.z is None else self.z  # z is read only by gelu
        want_x, want_w = self.needs_grad[0], self.needs_grad[1]
        want_b = b is not None and self.needs_grad[2]
        step, chunks, threads = self._plan()
        counter = np.zeros(1, np.int64)
        gx = recycled(self.x.shape, self.x.dtype) if want_x else None
        # G_W^T = sum_n cols[n] G_Z[n]^T and G_b: one part per chunk, summed at the end
        gw_parts = workspace("conv_gw", (chunks, k, o), g.dtype) if want_w else None
        gb_parts = workspace("conv_gb", (chunks, o), g.dtype) if want_b else None
        gw_nn = _gw_from_transposed(k, o, p)
        args = (self.x, self.w2, b, act, self.geom, oh, ow)

        def run(_):  # one thread's share, with its own scratch
            cols = self._cols(step) if want_w else None
            gcols = workspace("conv_gcols", (step, k, p), g.dtype) if want_x else None
            gzt = workspace("conv_gzt", (p, o), g.dtype) if want_w and gw_nn else None
            if pool is not None:
                gzp = workspace("conv_gzp", (step, o, g.shape[2]), g.dtype)
                gz = workspace("conv_gz", (step, o, p), g.dtype)
                be.conv2d_pool_backward_chunks(
                    *args, pool, step, counter, g, y, self.argmax, gx, gw_parts, gb_parts,
                    cols, gzp, gz, gcols, gzt
                )  # fmt: skip
            else:
                gz_ws = workspace("conv_gz", (step, o, p), g.dtype) if act != IDENTITY else None
                be.conv2d_backward_chunks(
                    *args, step, counter, g, y, z, gx, gw_parts, gb_parts, cols, gz_ws, gcols,
                    gzt
                )  # fmt: skip

        parallel_for(chunks, run, threads)
        gw = gb = None
        if want_w:  # (K, O) summed over the chunks, as (O, C, kh, kw)
            gw = np.ascontiguousarray(gw_parts.sum(axis=0).T).reshape(o, -1, *self.geom[:2])
        if want_b:
            gb = gb_parts.sum(axis=0)
        return (gx, gw, gb) if b is not None else (gx, gw)


class MaxPool2d(Function):
    """y = max over each window (padding counts as -inf); the gradient goes to the argmax.

    X: (N, C, H, W) -> Y: (N, C, OH, OW). ``geom`` = (kh, kw, sh, sw, pt, pl, oh, ow).
    """

    def forward(self, x, geom=None):
        kh, kw, sh, sw, pt, pl, oh, ow = geom
        x = np.ascontiguousarray(x)
        y = recycled((*x.shape[:2], oh, ow), x.dtype)
        self.argmax = recycled(y.shape, np.int64)
        self.x_shape, self.window = x.shape, geom[:6]
        return get_backend().maxpool2d_forward(x, kh, kw, sh, sw, pt, pl, y, self.argmax)

    def backward(self, g):
        g = np.ascontiguousarray(g)
        gx = recycled(self.x_shape, g.dtype)
        return (get_backend().maxpool2d_backward(g, self.argmax, *self.window, gx),)


class AvgPool2d(Function):
    """y = window sum / divisor (kh kw, or the window's cells inside the image).

    X: (N, C, H, W) -> Y: (N, C, OH, OW). ``geom`` = (kh, kw, sh, sw, pt, pl, oh, ow).
    """

    def forward(self, x, geom=None, count_pad=True):
        kh, kw, sh, sw, pt, pl, oh, ow = geom
        x = np.ascontiguousarray(x)
        self.geom, self.count_pad, self.x_shape = geom, bool(count_pad), x.shape
        y = recycled((*x.shape[:2], oh, ow), x.dtype)
        return get_backend().avgpool2d_forward(x, kh, kw, sh, sw, pt, pl, self.count_pad, y)

    def backward(self, g):
        kh, kw, sh, sw, pt, pl, _, _ = self.geom
        g = np.ascontiguousarray(g)
        gx = recycled(self.x_shape, g.dtype)
        return (get_backend().avgpool2d_backward(g, kh, kw, sh, sw, pt, pl, self.count_pad, gx),)


def _who(op: str, name: str | None) -> str:
    """How errors name the caller: the op, and the layer when a layer called it."""
    return op if name is None else f"layer '{name}' ({op})"


def _check_image(shape: tuple, who: str) -> None:
    if len(shape) != 4:
        raise ShapeError(f"{who} expects images of shape (N, C, H, W), got {shape}")


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    activation: str = "identity",
    name: str | None = None,
    max_pool: tuple | None = None,
    groups: int = 1,
):
    """2-D convolution (cross-correlation, as in PyTorch), NCHW, with a fused activation.

    ``groups`` = G: the C input channels and O outputs split into G groups, output group g
    seeing input group g only: weight (O, C / G, kh, kw). G = C (depthwise) runs tap by tap
    (``DepthwiseConv2d``), other G as one convolution per group (``GroupedConv2d``).

    x: (N, C, H, W); weight: (O, C, kh, kw); bias: (O,) or None -> (N, O, OH, OW), with
    y = f(z),  z[n, o, i, j] = b[o] + sum_{c,p,q} W[o,c,p,q] x[n, c, i sh-t + p dh, j sw-l + q dw]
    (t, l: top and left padding);  f = ``activation``: identity, relu, sigmoid, tanh or gelu,
    applied in the same op (one pass, in place). ``name``: the calling layer, for errors.

    ``max_pool`` = (pool_size, stride, padding, name): max-pool y in the same op, as
    ``max_pool2d(y, pool_size, stride, padding, name)`` would, without y ever being stored
    (f: identity, relu, sigmoid or tanh) -> (N, O, POH, POW).
    """
    who = _who("conv2d", name)
    _check_image(x.shape, who)
    groups = int(groups)
    if groups < 1 or x.shape[1] % groups:
        raise ShapeError(f"{who}: {x.shape[1]} input channels do not split into {groups} groups")
    if weight.ndim != 4 or weight.shape[1] * groups != x.shape[1] or weight.shape[0] % groups:
        raise ShapeError(
            f"{who}: weight of shape (out, {x.shape[1] // groups}, kh, kw) with out a multiple "
            f"of {groups} expected for input {x.shape}, got {weight.shape}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ShapeError(f"{who}: bias of shape ({weight.shape[0]},) expected, got {bias.shape}")
    kernel, s, d = weight.shape[2:], pair(stride, "stride"), pair(dilation, "dilation")
    pads = resolve_padding(padding, x.shape[2:], kernel, s, d)
    oh, ow = window_output_size(x.shape[2:], pads, kernel, s, d, who, ShapeError)
    check_scratch(weight.shape[1] * kernel[0] * kernel[1] * oh * ow, f"{who}: im2col", ShapeError)
    geom = (s[0], s[1], *pads, d[0], d[1])
    act = ACT_CODE[activation]  # identity, relu, sigmoid, tanh, gelu
    pool = None
    if max_pool is not None:
        if act not in POOLED_ACTS:
            raise ValueError(f"{who}: a fused max pool needs identity, relu, sigmoid or tanh")
        size, pstride, ppad, pname = max_pool
        out = (x.shape[0], weight.shape[0], oh, ow)
        pool = _pool_geom(out, size, pstride, ppad, _who("max_pool2d", pname))
    args = (x, weight) if bias is None else (x, weight, bias)
    if groups == 1:
        return Conv2d.apply(*args, geom=geom, act=act, pool=pool)
    from .conv_more import DepthwiseConv2d, GroupedConv2d  # built on Conv2d above

    if groups == x.shape[1]:  # depthwise: tap by tap, then the max pool as an op of its own
        y = DepthwiseConv2d.apply(*args, geom=geom, act=act)
        return y if max_pool is None else MaxPool2d.apply(y, geom=pool)
    return GroupedConv2d.apply(*args, geom=geom, act=act, pool=pool, groups=groups)


def _pool_geom(shape: tuple, kernel, stride, padding, who: str):
    _check_image(shape, who)
    k = pair(kernel, "pool size")
    s = k if stride is None else pair(stride, "stride")
    pads = resolve_padding(padding, shape[2:], k, s, (1, 1))
    if max(pads[:2]) > k[0] // 2 or max(pads[2:]) > k[1] // 2:
        raise ValueError(f"{who}: padding {padding!r} must be at most half the pool size {k}")
    oh, ow = window_output_size(shape[2:], pads, k, s, (1, 1), who, ShapeError)
    return (k[0], k[1], s[0], s[1], pads[0], pads[2], oh, ow)


def max_pool2d(x: Tensor, kernel=2, stride=None, padding=0, name: str | None = None) -> Tensor:
    """Max over (kh, kw) windows moved by ``stride`` (default: the window size). NCHW.
    ``name``: the calling layer, for errors."""
    geom = _pool_geom(x.shape, kernel, stride, padding, _who("max_pool2d", name))
    return MaxPool2d.apply(x, geom=geom)


def avg_pool2d(
    x: Tensor, kernel=2, stride=None, padding=0, count_include_pad=True, name: str | None = None
) -> Tensor:
    """Mean over (kh, kw) windows; with ``count_include_pad=False`` padding is not counted.
    ``name``: the calling layer, for errors."""
    geom = _pool_geom(x.shape, kernel, stride, padding, _who("avg_pool2d", name))
    return AvgPool2d.apply(x, geom=geom, count_pad=count_include_pad)


def global_avg_pool2d(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C): the mean of each channel's plane."""
    _check_image(x.shape, "global_avg_pool2d")
    return x.mean(axis=(2, 3))
