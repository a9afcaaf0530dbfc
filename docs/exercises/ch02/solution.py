"""Chapter 2, reference solution: the backward of broadcasting and of the reductions."""

from __future__ import annotations

import numpy as np


def unbroadcast(grad, shape):
    """Sum ``grad`` (the shape of a broadcast result) down to ``shape`` (the input's shape):
    over the leading axes the input did not have, and over its axes of size 1 that were
    stretched (keeping them as size 1)."""
    grad = np.asarray(grad)
    while grad.ndim > len(shape):  # axes added in front
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):  # axes of size 1 that were stretched
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _kept(g, shape, axis, keepdims):
    """g with the reduced axes put back as size 1, so it broadcasts against ``shape``."""
    if axis is None:
        axes = tuple(range(len(shape)))
    else:
        axes = tuple(a % len(shape) for a in np.atleast_1d(axis).tolist())
    return np.asarray(g) if keepdims else np.expand_dims(g, axes), axes


def sum_backward(g, shape, axis=None, keepdims=False):
    """Gradient of ``x.sum(axis, keepdims)`` for x of ``shape``: every element gets the gradient
    of the sum it went into. ``axis``: None, an int (maybe negative) or a tuple of ints."""
    kept, _ = _kept(g, shape, axis, keepdims)
    return np.broadcast_to(kept, shape).copy()  # the adjoint of a sum is a broadcast


def mean_backward(g, shape, axis=None, keepdims=False):
    """Gradient of ``x.mean(axis, keepdims)``: like the sum, divided by how many were averaged."""
    kept, axes = _kept(g, shape, axis, keepdims)
    n = int(np.prod([shape[a] for a in axes]))
    return np.broadcast_to(kept / n, shape).copy()


def max_backward(g, x, axis=None, keepdims=False):
    """Gradient of ``x.max(axis, keepdims)``: each maximum gets its group's gradient; when
    several elements tie for the maximum they share it equally (as lepton_nn does)."""
    kept, axes = _kept(g, x.shape, axis, keepdims)
    winners = x == x.max(axis=axes, keepdims=True)
    return winners * kept / winners.sum(axis=axes, keepdims=True)
