"""Chapter 1, reference solution: a scalar Value that knows its gradient."""

from __future__ import annotations

import math


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
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def push():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out.push = push
        return out

    def __rmul__(self, other):  # 2 * a
        return self * other

    def __pow__(self, n):
        """self ** n for a constant number n: d a^n / da = n a^(n - 1)."""
        out = Value(self.data**n, (self,), f"**{n}")

        def push():
            self.grad += n * self.data ** (n - 1) * out.grad

        out.push = push
        return out

    def tanh(self):
        """d tanh(a)/da = 1 - tanh(a)^2."""
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def push():
            self.grad += (1 - t * t) * out.grad

        out.push = push
        return out

    def exp(self):
        """d exp(a)/da = exp(a)."""
        e = math.exp(self.data)
        out = Value(e, (self,), "exp")

        def push():
            self.grad += e * out.grad

        out.push = push
        return out

    def backward(self):
        """Set self.grad = 1, then run every push of the graph that made self, in reverse
        topological order (a value after every value built from it), each exactly once."""
        order, seen = [], set()

        def visit(v):  # depth first: a value is listed after everything it was made from
            if id(v) not in seen:
                seen.add(id(v))
                for p in v.parents:
                    visit(p)
                order.append(v)

        visit(self)
        self.grad = 1.0
        for v in reversed(order):
            v.push()
