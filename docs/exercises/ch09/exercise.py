"""Chapter 9 exercises: three ops of your own, as lepton_nn ``Function``s.

``forward`` gets plain NumPy arrays (and options as keywords) and saves what ``backward``
needs on ``self``; ``backward(g)`` returns a tuple with one gradient per input, each of that
input's shape. Use them as ``Swish.apply(x, beta=2.0)``. Fill them in, then run
``pytest docs/exercises/ch09``.
"""

from __future__ import annotations

import numpy as np  # noqa: F401

from lepton_nn.autograd import Function


class Swish(Function):
    """y = x sigmoid(beta x) for a constant beta (default 1);
    dy/dx = s + beta x s (1 - s), s = sigmoid(beta x)."""

    def forward(self, x, beta=1.0):
        raise NotImplementedError("exercise 9.1: Swish.forward")

    def backward(self, g):
        raise NotImplementedError("exercise 9.1: Swish.backward")


class LogSumExp(Function):
    """y = log sum exp(x) over ``axis`` (None: all; an int or a tuple of ints), with
    ``keepdims`` as NumPy's. Stable for any size of x (shift by the max first).
    dy/dx = softmax of x over the same axes (times the incoming gradient, broadcast back)."""

    def forward(self, x, axis=None, keepdims=False):
        raise NotImplementedError("exercise 9.2: LogSumExp.forward")

    def backward(self, g):
        raise NotImplementedError("exercise 9.2: LogSumExp.backward")


class Hypot(Function):
    """y = sqrt(a^2 + b^2) with NumPy broadcasting between a and b;
    dy/da = a / y, dy/db = b / y, each summed back to its input's shape (chapter 2).
    Return None for an input whose gradient is not wanted (``self.needs_grad[i]``)."""

    def forward(self, a, b):
        raise NotImplementedError("exercise 9.3: Hypot.forward")

    def backward(self, g):
        raise NotImplementedError("exercise 9.3: Hypot.backward")
