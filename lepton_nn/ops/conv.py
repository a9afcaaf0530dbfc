"""Convolution and pooling on NCHW images.

``Conv2d`` unfolds the windows with the backend's ``im2col`` and runs one batched GEMM
(``np.matmul`` over the images); its backward is two more batched GEMMs and ``col2im``.
Pooling runs one backend kernel each way. Geometry (stride, padding, dilation) is resolved
here, once, into plain integers; the kernels trust what they get.

Padding: ``"valid"`` (none), ``"same"`` (output size ceil(H / stride), the extra row/column
going below/right as in TensorFlow; for stride 1 this is PyTorch's ``padding="same"``), an
int, or a pair (rows, columns) added on both sides.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_backend
from ..errors import ShapeError

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
    """(top, bottom, left, right) padding for an input of ``size`` = (H, W).

    "same": total = max((ceil(H / s) - 1) s + d (k - 1) + 1 - H, 0), top = total // 2.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding != "same":
            raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
        out = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)
    p = (padding, padding) if np.isscalar(padding) else tuple(padding)
    if len(p) != 2 or any(int(v) != v or v < 0 for v in p):
        raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
    return int(p[0]), int(p[0]), int(p[1]), int(p[1])


def output_size(size, pads, kernel, stride, dilation) -> tuple[int, int]:
    """OH = (H + top + bottom - d (k - 1) - 1) // s + 1, and likewise OW."""
    (h, w), (pt, pb, pl, pr) = size, pads
    oh = (h + pt + pb - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + pl + pr - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return oh, ow


def _dtype_ok(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=like.dtype)


class Conv2d(Function):
    """Y[n] = W2 @ cols[n] + b, cols = im2col(X), W2 = W.reshape(O, C kh kw).

    X: (N, C, H, W), W: (O, C, kh, kw), b: (O,) or absent -> Y: (N, O, OH, OW).
    Backward: G_b = sum G_Y over (n, y, x);  G_W = sum_n G_Y[n] @ cols[n]^T;
    G_X = col2im(W2^T @ G_Y[n]).  ``geom`` = (sh, sw, pt, pb, pl, pr, dh, dw).
    """

    def forward(self, x, w, b=None, geom=None):
        sh, sw, pt, pb, pl, pr, dh, dw = geom
        x = np.ascontiguousarray(x)
        n, c, h, wd = x.shape
        o, _, kh, kw = w.shape
        oh, ow = output_size((h, wd), (pt, pb, pl, pr), (kh, kw), (sh, sw), (dh, dw))
        w2 = _dtype_ok(w, x).reshape(o, c * kh * kw)
        if kh == kw == sh == sw == dh == dw == 1 and pt == pl == 0 and (oh, ow) == (h, wd):
            cols = x.reshape(n, c, oh, ow)  # 1x1: the image is its own column matrix
        else:
            cols = get_backend().im2col(
                x, kh, kw, sh, sw, pt, pl, dh, dw, np.empty((n, c * kh * kw, oh, ow), x.dtype)
            )
        cols = cols.reshape(n, c * kh * kw, oh * ow)
        y = np.matmul(w2, cols)  # (N, O, OH*OW)
        if b is not None:
            y += _dtype_ok(b, x)[:, None]
        self.cols, self.w2, self.x_shape, self.geom = (
            cols,
            w2,
            x.shape,
            (kh, kw, sh, sw, pt, pl, dh, dw),
        )
        self.has_b = b is not None
        return y.reshape(n, o, oh, ow)

    def backward(self, g):
        n, o = g.shape[:2]
        gy = np.ascontiguousarray(g, dtype=self.cols.dtype).reshape(n, o, -1)  # (N, O, L)
        gx = gw = gb = None
        if self.needs_grad[0]:
            gcols = np.matmul(self.w2.T, gy)  # (N, C kh kw, L)
            kh, kw, sh, sw, pt, pl, dh, dw = self.geom
            gcols = gcols.reshape(*gcols.shape[:2], *g.shape[2:])
            gx = get_backend().col2im(
                gcols, kh, kw, sh, sw, pt, pl, dh, dw, np.empty(self.x_shape, gy.dtype)
            )
        if self.needs_grad[1]:
            gw = np.matmul(gy, self.cols.transpose(0, 2, 1)).sum(axis=0)
            gw = gw.reshape(o, self.x_shape[1], self.geom[0], self.geom[1])
        if self.has_b and self.needs_grad[2]:
            gb = gy.sum(axis=(0, 2))
        return (gx, gw, gb) if self.has_b else (gx, gw)


class MaxPool2d(Function):
    """y = max over each window (padding counts as -inf); the gradient goes to the argmax.

    X: (N, C, H, W) -> Y: (N, C, OH, OW). ``geom`` = (kh, kw, sh, sw, pt, pl, oh, ow).
    """

    def forward(self, x, geom=None):
        kh, kw, sh, sw, pt, pl, oh, ow = geom
        x = np.ascontiguousarray(x)
        y = np.empty((*x.shape[:2], oh, ow), x.dtype)
        self.argmax = np.empty(y.shape, np.int64)
        self.x_shape = x.shape
        return get_backend().maxpool2d_forward(x, kh, kw, sh, sw, pt, pl, y, self.argmax)

    def backward(self, g):
        g = np.ascontiguousarray(g)
        return (get_backend().maxpool2d_backward(g, self.argmax, np.empty(self.x_shape, g.dtype)),)


class AvgPool2d(Function):
    """y = window sum / divisor (kh kw, or the window's cells inside the image).

    X: (N, C, H, W) -> Y: (N, C, OH, OW). ``geom`` = (kh, kw, sh, sw, pt, pl, oh, ow).
    """

    def forward(self, x, geom=None, count_pad=True):
        kh, kw, sh, sw, pt, pl, oh, ow = geom
        x = np.ascontiguousarray(x)
        self.geom, self.count_pad, self.x_shape = geom, bool(count_pad), x.shape
        y = np.empty((*x.shape[:2], oh, ow), x.dtype)
        return get_backend().avgpool2d_forward(x, kh, kw, sh, sw, pt, pl, self.count_pad, y)

    def backward(self, g):
        kh, kw, sh, sw, pt, pl, _, _ = self.geom
        g = np.ascontiguousarray(g)
        gx = np.empty(self.x_shape, g.dtype)
        return (get_backend().avgpool2d_backward(g, kh, kw, sh, sw, pt, pl, self.count_pad, gx),)


def _check_image(x: Tensor, who: str) -> None:
    if x.ndim != 4:
        raise ShapeError(f"{who} expects images of shape (N, C, H, W), got {x.shape}")


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation, as in PyTorch), NCHW.

    x: (N, C, H, W); weight: (O, C, kh, kw); bias: (O,) or None -> (N, O, OH, OW), with
    y[n, o, i, j] = b[o] + sum_{c,p,q} W[o, c, p, q] x[n, c, i sh - top + p dh, j sw - left + q dw].
    """
    _check_image(x, "conv2d")
    if weight.ndim != 4 or weight.shape[1] != x.shape[1]:
        raise ShapeError(
            f"conv2d: weight of shape (out, {x.shape[1]}, kh, kw) expected for input {x.shape}, "
            f"got {weight.shape}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ShapeError(f"conv2d: bias of shape ({weight.shape[0]},) expected, got {bias.shape}")
    kernel, s, d = weight.shape[2:], pair(stride, "stride"), pair(dilation, "dilation")
    pads = resolve_padding(padding, x.shape[2:], kernel, s, d)
    oh, ow = output_size(x.shape[2:], pads, kernel, s, d)
    if oh < 1 or ow < 1:
        raise ShapeError(
            f"conv2d: kernel {tuple(kernel)} (dilation {d}) does not fit input {x.shape} "
            f"with padding {pads}"
        )
    geom = (s[0], s[1], *pads, d[0], d[1])
    if bias is None:
        return Conv2d.apply(x, weight, geom=geom)
    return Conv2d.apply(x, weight, bias, geom=geom)


def _pool_geom(x: Tensor, kernel, stride, padding, who: str):
    _check_image(x, who)
    k = pair(kernel, "pool size")
    s = k if stride is None else pair(stride, "stride")
    pt, pb, pl, pr = resolve_padding(padding, x.shape[2:], k, s, (1, 1))
    if max(pt, pb) > k[0] // 2 or max(pl, pr) > k[1] // 2:
        raise ValueError(f"{who}: padding {padding!r} must be at most half the pool size {k}")
    oh, ow = output_size(x.shape[2:], (pt, pb, pl, pr), k, s, (1, 1))
    if oh < 1 or ow < 1:
        raise ShapeError(f"{who}: pool size {k} does not fit input {x.shape}")
    return (k[0], k[1], s[0], s[1], pt, pl, oh, ow)


def max_pool2d(x: Tensor, kernel=2, stride=None, padding=0) -> Tensor:
    """Max over (kh, kw) windows moved by ``stride`` (default: the window size). NCHW."""
    return MaxPool2d.apply(x, geom=_pool_geom(x, kernel, stride, padding, "max_pool2d"))


def avg_pool2d(x: Tensor, kernel=2, stride=None, padding=0, count_include_pad=True) -> Tensor:
    """Mean over (kh, kw) windows; with ``count_include_pad=False`` padding is not counted."""
    geom = _pool_geom(x, kernel, stride, padding, "avg_pool2d")
    return AvgPool2d.apply(x, geom=geom, count_pad=count_include_pad)


def global_avg_pool2d(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C): the mean of each channel's plane."""
    _check_image(x, "global_avg_pool2d")
    return x.mean(axis=(2, 3))
