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


def _basic(index) -> bool:
    """Whether ``index`` is basic indexing only (ints, slices, ``...``, ``None``): it selects
    each element at most once, so nothing repeats."""
    items = index if isinstance(index, tuple) else (index,)
    return all(
        i is None or i is Ellipsis or isinstance(i, slice)
        or (isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)))
        for i in items
    )  # fmt: skip


class GetItem(Function):
    """y = a[index]; the gradient scatters back: da = 0, da[index] += g. With repeated indices
    (integer arrays) the repeats add up (``np.add.at``); basic indexing selects each element
    once, so ``+=`` on the view gives the same bits (0 + g, -0.0 included), faster: the
    gradient of x[:, -1] for x of (32, 52, 64) took 58 us with ``np.add.at``, 19 with ``+=``."""

    def forward(self, a, index):
        self.shape, self.index = a.shape, index
        return np.asarray(a[index])

    def backward(self, g):
        out = np.zeros(self.shape, dtype=g.dtype)
        if _basic(self.index):
            out[self.index] += g
        else:
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
