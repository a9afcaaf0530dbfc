"""Ops that move data without arithmetic: reshape, transpose, indexing, concat, stack."""

from __future__ import annotations

import numpy as np

from ..autograd import Function


class Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return (g.reshape(self.shape),)


class Transpose(Function):
    def forward(self, a, axes=None):
        self.axes = axes
        return np.transpose(a, axes)

    def backward(self, g):
        inv = None if self.axes is None else np.argsort([ax % g.ndim for ax in self.axes])
        return (np.transpose(g, inv),)


class GetItem(Function):
    """y = a[index]; the gradient scatters back with ``np.add.at`` (repeated indices add)."""

    def forward(self, a, index):
        self.shape, self.index = a.shape, index
        return np.asarray(a[index])

    def backward(self, g):
        out = np.zeros(self.shape, dtype=g.dtype)
        np.add.at(out, self.index, g)
        return (out,)


class Concat(Function):
    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.splits = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=axis)

    def backward(self, g):
        return tuple(np.split(g, self.splits, axis=self.axis))


class Stack(Function):
    def forward(self, *arrays, axis=0):
        self.axis = axis
        return np.stack(arrays, axis=axis)

    def backward(self, g):
        return tuple(np.moveaxis(g, self.axis, 0))
