"""Chapter 1 exercises: a scalar Value that knows its gradient.

Fill in every method that raises NotImplementedError, then run ``pytest docs/exercises/ch01``.
``__add__`` is done, as a model for the others: the forward value, the parents, and a ``push``
that adds this value's gradient, times the local derivative, to each parent's ``grad``.
"""

from __future__ import annotations

import math  # noqa: F401  (you will want math.tanh and math.exp)


class Value:
    def __init__(self, data, parents=(), op=""):
        self.data = float(data)
        self.grad = 0.0
        self.parents = parents
        self.op = op
        self.push = lambda: None  # sends self.grad to the parents

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def push():  # d(a + b)/da = 1, d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad

        out.push = push
        return out

    __radd__ = __add__

    def __mul__(self, other):
        """self * other (other a Value or a number): d(a b)/da = b, d(a b)/db = a."""
        raise NotImplementedError("exercise 1.1: Value.__mul__")

    def __rmul__(self, other):  # 2 * a
        return self * other

    def __pow__(self, n):
        """self ** n for a constant number n: d a^n / da = n a^(n - 1)."""
        raise NotImplementedError("exercise 1.2: Value.__pow__")

    def tanh(self):
        """d tanh(a)/da = 1 - tanh(a)^2."""
        raise NotImplementedError("exercise 1.3: Value.tanh")

    def exp(self):
        """d exp(a)/da = exp(a)."""
        raise NotImplementedError("exercise 1.4: Value.exp")

    def backward(self):
        """Set self.grad = 1, then run every push of the graph that made self, in reverse
        topological order (a value after every value built from it), each exactly once."""
        raise NotImplementedError("exercise 1.5: Value.backward")
