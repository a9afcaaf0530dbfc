"""Reductions and the (log-)softmax along an axis."""

from __future__ import annotations

import numpy as np

from ..autograd import Function


def _expand(g, shape, axis, keepdims):
    """Reinsert reduced axes so ``g`` broadcasts against the input shape."""
    if axis is None:
        return np.reshape(g, (1,) * len(shape)) if not keepdims else g
    if keepdims:
        return g
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    axes = tuple(a % len(shape) for a in axes)
    return np.expand_dims(g, axes)


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return np.asarray(a.sum(axis=axis, keepdims=keepdims))

    def backward(self, g):
        return (np.broadcast_to(_expand(g, self.shape, self.axis, self.keepdims), self.shape),)


class Mean(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        out = np.asarray(a.mean(axis=axis, keepdims=keepdims))
        self.n = a.size // max(out.size, 1) if a.size else 1
        return out

    def backward(self, g):
        g = _expand(g, self.shape, self.axis, self.keepdims) / self.n
        return (np.broadcast_to(g, self.shape),)


class Max(Function):
    """Max over axes; ties share the gradient equally (like the subgradient average)."""

    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        m = a.max(axis=axis, keepdims=True)
        self.mask = a == m
        return np.asarray(m if keepdims else np.squeeze(m, axis=axis))

    def backward(self, g):
        g = _expand(g, self.shape, self.axis, self.keepdims)
        count = self.mask.sum(axis=self.axis, keepdims=True)
        return (self.mask * (g / count),)


class Softmax(Function):
    """y = exp(a - max) / sum(exp(a - max)); dL/da = y (g - sum(g y))."""

    def forward(self, a, axis=-1):
        self.axis = axis
        e = np.exp(a - a.max(axis=axis, keepdims=True))
        self.y = e / e.sum(axis=axis, keepdims=True)
        return self.y

    def backward(self, g):
        y = self.y
        return (y * (g - (g * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    """y = a - logsumexp(a); dL/da = g - softmax(a) sum(g)."""

    def forward(self, a, axis=-1):
        self.axis = axis
        s = a - a.max(axis=axis, keepdims=True)
        self.y = s - np.log(np.exp(s).sum(axis=axis, keepdims=True))
        return self.y

    def backward(self, g):
        return (g - np.exp(self.y) * g.sum(axis=self.axis, keepdims=True),)
