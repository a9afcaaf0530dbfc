"""Grouped convolution, 1-D convolution and padding, built on :class:`~.conv.Conv2d`.

* ``GroupedConv2d``: groups G; output group g (O / G channels) sees input group g (C / G
  channels) only: weight (O, C / G, kh, kw). Run as G ordinary convolutions, one per group
  (a depthwise convolution, G = C, is C convolutions of one channel each): simple and exact
  first; a kernel of its own would be faster.
* ``conv1d``: (N, C, L) as (N, C, 1, L) with a (1, k) kernel.
* ``Pad``: constant / reflect / replicate padding of the trailing axes
  (:mod:`lepton_nn.backend.padding`, shared with the runtime).
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_backend
from ..backend.geometry import output_size
from ..backend.padding import check_pads, pad_forward, pad_index
from ..backend.reference import GELU, IDENTITY
from ..errors import ShapeError
from ._workspace import recycled, workspace
from .conv import Conv2d, _who, conv2d

__all__ = ["DepthwiseConv2d", "GroupedConv2d", "Pad", "conv1d", "pad", "conv1d_padding"]


class DepthwiseConv2d(Function):
    """groups = C, O = C m: output channel o convolves input channel o // m with its own
    filter, y = f(z + b); the backend's ``depthwise_conv2d_forward`` / ``_backward`` (tap by
    tap over whole planes). X: (N, C, H, W), W: (O, 1, kh, kw), b: (O,) -> (N, O, OH, OW).
    Backward: G_Z = G_Y f'; G_b = sum G_Z; G_W[o, p, q] = sum G_Z[:, o] window_pq(X)[:, o // m];
    G_X = the windows' G_Z W added back, summed over a channel's m outputs.
    ``geom`` as :class:`Conv2d`'s (sh, sw, pt, pb, pl, pr, dh, dw)."""

    def forward(self, x, w, b=None, geom=None, act=IDENTITY):
        sh, sw, pt, pb, pl, pr, dh, dw = geom
        x = np.ascontiguousarray(x)
        o, _, kh, kw = w.shape
        oh, ow = output_size(x.shape[2:], (pt, pb, pl, pr), (kh, kw), (sh, sw), (dh, dw))
        self.x, self.w_shape, self.act = x, w.shape, act
        self.w3 = np.ascontiguousarray(w.reshape(o, kh, kw), dtype=x.dtype)
        self.b = None if b is None else np.ascontiguousarray(b, dtype=x.dtype)
        self.kgeom = (kh, kw, sh, sw, pt, pl, dh, dw)
        self.canvas = (
            x.shape[0], o,
            max(pt + x.shape[2], (oh - 1) * sh + (kh - 1) * dh + 1),
            max(pl + x.shape[3], (ow - 1) * sw + (kw - 1) * dw + 1),
        )  # fmt: skip
        z = recycled((x.shape[0], o, oh, ow), x.dtype)
        y = recycled(z.shape, z.dtype) if act == GELU else z  # gelu's derivative reads z
        xp, tmp = self._scratch(z)
        get_backend().depthwise_conv2d_forward(x, self.w3, self.b, act, self.kgeom, xp, tmp, z, y)
        self.y, self.z = y, z
        return y

    def _scratch(self, z):
        return workspace("dw_canvas", self.canvas, z.dtype), workspace("dw_tmp", z.shape, z.dtype)

    def backward(self, g):
        want = self.needs_grad
        gx = recycled(self.x.shape, self.x.dtype) if want[0] else None
        gw = np.empty_like(self.w3) if want[1] else None
        gb = np.empty_like(self.b) if self.b is not None and want[2] else None
        g = np.ascontiguousarray(g, dtype=self.x.dtype)
        xp, tmp = self._scratch(g)
        gz = workspace("dw_gz", g.shape, g.dtype)
        get_backend().depthwise_conv2d_backward(
            self.x, self.w3, self.b, self.act, self.kgeom, g, self.y, self.z, xp, tmp, gz, gx,
            gw, gb,
        )  # fmt: skip
        gw = None if gw is None else gw.reshape(self.w_shape)
        return (gx, gw, gb) if self.b is not None else (gx, gw)


class GroupedConv2d(Function):
    """Y[:, Og g : Og (g+1)] = conv(X[:, Cg g : Cg (g+1)], W[Og g : Og (g+1)], b[...]) for each
    group g (Cg = C / G, Og = O / G), activation (and a fused max pool) per group as in
    :class:`Conv2d`. X: (N, C, H, W), W: (O, Cg, kh, kw), b: (O,) -> Y: (N, O, OH, OW).
    Backward: each group's Conv2d backward on its slice of G_Y; G_X, G_W, G_b are the groups'
    gradients side by side."""

    def forward(self, x, w, b=None, geom=None, act=IDENTITY, pool=None, groups=1):
        cg, og = x.shape[1] // groups, w.shape[0] // groups
        self.groups, self.cg, self.og = groups, cg, og
        self.shapes = x.shape, w.shape, None if b is None else b.shape
        self.parts, ys = [], []
        for g in range(groups):
            part = Conv2d()
            xs = np.ascontiguousarray(x[:, g * cg : (g + 1) * cg])
            bs = None if b is None else b[g * og : (g + 1) * og]
            ys.append(part.forward(xs, w[g * og : (g + 1) * og], bs, geom, act, pool))
            self.parts.append(part)
        return np.concatenate(ys, axis=1)

    def backward(self, g):
        (xs, ws, bs), cg, og = self.shapes, self.cg, self.og
        want = self.needs_grad
        gx = np.empty(xs, g.dtype) if want[0] else None
        gw = np.empty(ws, g.dtype) if want[1] else None
        gb = np.empty(bs, g.dtype) if bs is not None and want[2] else None
        for k, part in enumerate(self.parts):
            part.needs_grad = want
            grads = part.backward(np.ascontiguousarray(g[:, k * og : (k + 1) * og]))
            if gx is not None:
                gx[:, k * cg : (k + 1) * cg] = grads[0]
            if gw is not None:
                gw[k * og : (k + 1) * og] = grads[1]
            if gb is not None:
                gb[k * og : (k + 1) * og] = grads[2]
        return (gx, gw, gb) if bs is not None else (gx, gw)


def conv1d_padding(padding):
    """A Conv1D padding as conv2d's: "valid" / "same" as they are, an int p -> (0, 0, p, p),
    a pair (left, right) -> (0, 0, left, right)."""
    if isinstance(padding, str):
        return padding
    p = (padding, padding) if np.isscalar(padding) else tuple(padding)
    if len(p) != 2:
        raise ValueError(
            f"Conv1D padding must be 'valid', 'same', an int or a pair, got {padding!r}"
        )
    return (0, 0, p[0], p[1])


def conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding=0,
    dilation: int = 1,
    activation: str = "identity",
    groups: int = 1,
    name: str | None = None,
) -> Tensor:
    """1-D convolution (cross-correlation), (N, C, L) -> (N, O, OL):
    y[n, o, i] = f(b[o] + sum_{c, p} W[o, c, p] x[n, c, i s - left + p d]).

    weight: (O, C / groups, k); ``padding``: "valid", "same", an int or (left, right).
    Computed as conv2d on (N, C, 1, L) with a (1, k) kernel."""
    who = _who("conv1d", name)
    if x.ndim != 3:
        raise ShapeError(f"{who} expects sequences of shape (N, C, L), got {x.shape}")
    if weight.ndim != 3:
        raise ShapeError(
            f"{who}: weight of shape (out, in / groups, k) expected, got {weight.shape}"
        )
    n, c, length = x.shape
    o, cg, k = weight.shape
    y = conv2d(
        x.reshape(n, c, 1, length),
        weight.reshape(o, cg, 1, k),
        bias,
        (1, int(stride)),
        conv1d_padding(padding),
        (1, int(dilation)),
        activation,
        name,
        groups=groups,
    )
    return y.reshape(n, o, y.shape[3])


class Pad(Function):
    """y = x padded on its trailing axes (``pads``: (before, after) per axis; ``mode``
    constant, reflect or replicate). Backward: constant keeps the interior of G_Y; reflect
    and replicate add each padded cell's gradient to the cell it copies (axis by axis, last
    padded axis first)."""

    def forward(self, x, pads=(), mode="constant", value=0.0):
        self.shape, self.pads, self.mode = x.shape, pads, mode
        return pad_forward(x, pads, mode, value)

    def backward(self, g):
        lead = g.ndim - len(self.pads)
        if self.mode == "constant":
            index = tuple(slice(b, b + n) for (b, _), n in zip(self.pads, self.shape[lead:]))
            return (g[(Ellipsis, *index)],)
        for k in range(len(self.pads) - 1, -1, -1):
            before, after = self.pads[k]
            if not before and not after:
                continue
            ax, n = lead + k, self.shape[lead + k]
            moved = np.moveaxis(g, ax, 0)
            out = np.zeros((n, *moved.shape[1:]), g.dtype)
            np.add.at(out, pad_index(n, before, after, self.mode), moved)
            g = np.moveaxis(out, 0, ax)
        return (np.ascontiguousarray(g),)


def pad(x: Tensor, pads, mode: str = "constant", value: float = 0.0, name: str | None = None):
    """Pad the last len(pads) axes of x: ``pads`` = ((before, after), ...) for them, in order
    (``pad(images, ((1, 1), (2, 2)))`` adds 1 row above and below, 2 columns left and right).
    ``mode``: "constant" (``value``), "reflect" (mirror, edge not repeated) or "replicate"."""
    pads = tuple((int(b), int(a)) for b, a in pads)
    if any(b < 0 or a < 0 for b, a in pads):
        raise ValueError(f"{_who('pad', name)}: pads must be non-negative, got {pads}")
    problem = check_pads(x.shape, pads, mode)
    if problem:
        raise (ValueError if "mode" in problem else ShapeError)(f"{_who('pad', name)}: {problem}")
    return Pad.apply(x, pads=pads, mode=mode, value=float(value))
