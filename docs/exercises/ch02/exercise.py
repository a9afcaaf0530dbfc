"""Chapter 2 exercises: the backward of broadcasting and of the reductions.

Each function gets the gradient ``g`` of an op's result and returns the gradient of its input
(the input's shape). Fill them in, then run ``pytest docs/exercises/ch02``.
"""

from __future__ import annotations

import numpy as np  # noqa: F401


def unbroadcast(grad, shape):
    """Sum ``grad`` (the shape of a broadcast result) down to ``shape`` (the input's shape):
    over the leading axes the input did not have, and over its axes of size 1 that were
    stretched (keeping them as size 1)."""
    raise NotImplementedError("exercise 2.1: unbroadcast")


def sum_backward(g, shape, axis=None, keepdims=False):
    """Gradient of ``x.sum(axis, keepdims)`` for x of ``shape``: every element gets the gradient
    of the sum it went into. ``axis``: None, an int (maybe negative) or a tuple of ints."""
    raise NotImplementedError("exercise 2.2: sum_backward")


def mean_backward(g, shape, axis=None, keepdims=False):
    """Gradient of ``x.mean(axis, keepdims)``: like the sum, divided by how many were averaged."""
    raise NotImplementedError("exercise 2.3: mean_backward")


def max_backward(g, x, axis=None, keepdims=False):
    """Gradient of ``x.max(axis, keepdims)``: each maximum gets its group's gradient; when
    several elements tie for the maximum they share it equally (as lepton_nn does)."""
    raise NotImplementedError("exercise 2.4: max_backward")
