"""Elementwise ops with NumPy broadcasting; gradients are summed back to each input's shape."""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend.reference import GELU_A, GELU_C
from ._util import unbroadcast


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        sa, sb = self.shapes
        return unbroadcast(g, sa), unbroadcast(g, sb)


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        sa, sb = self.shapes
        return unbroadcast(g, sa), (-unbroadcast(g, sb) if self.needs_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        ga = unbroadcast(g * self.b, self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(g * self.a, self.b.shape) if self.needs_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = unbroadcast(g / self.b, self.a.shape) if self.needs_grad[0] else None
        gb = (
            unbroadcast(-g * self.a / (self.b * self.b), self.b.shape)
            if self.needs_grad[1]
            else None
        )
        return ga, gb


class Pow(Function):
    """y = a ** b; dy/da = b a^(b-1); dy/db = y log(a) (defined for a > 0)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a**b
        return self.y

    def backward(self, g):
        a, b = self.a, self.b
        ga = unbroadcast(g * b * a ** (b - 1), a.shape) if self.needs_grad[0] else None
        gb = None
        if self.needs_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                loga = np.where(a > 0, np.log(np.where(a > 0, a, 1)), 0)
            gb = unbroadcast(g * self.y * loga, b.shape)
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Exp(Function):
    def forward(self, a):
        self.y = np.exp(a)
        return self.y

    def backward(self, g):
        return (g * self.y,)


class Log(Function):
    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, g):
        return (g / self.a,)


class Sqrt(Function):
    def forward(self, a):
        self.y = np.sqrt(a)
        return self.y

    def backward(self, g):
        return (g / (2 * self.y),)


class Abs(Function):
    def forward(self, a):
        self.a = a
        return np.abs(a)

    def backward(self, g):
        return (g * np.sign(self.a),)


class Relu(Function):
    def forward(self, a):
        self.y = np.maximum(a, 0)
        return self.y

    def backward(self, g):
        return (g * (self.y > 0),)


class Sigmoid(Function):
    """y = 1 / (1 + e^-a), computed without overflow; dy/da = y (1 - y)."""

    def forward(self, a):
        e = np.exp(-np.abs(a))
        self.y = np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return self.y

    def backward(self, g):
        return (g * self.y * (1 - self.y),)


class Tanh(Function):
    def forward(self, a):
        self.y = np.tanh(a)
        return self.y

    def backward(self, g):
        return (g * (1 - self.y * self.y),)


class Gelu(Function):
    """y = a/2 (1 + tanh(c (a + 0.044715 a^3))), the tanh approximation, c = sqrt(2/pi)."""

    def forward(self, a):
        self.a = a
        self.t = np.tanh(GELU_C * (a + GELU_A * a**3))
        return 0.5 * a * (1 + self.t)

    def backward(self, g):
        a, t = self.a, self.t
        d = 0.5 * (1 + t) + 0.5 * a * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * a * a)
        return (g * d,)


class Maximum(Function):
    """Elementwise max; ties send the gradient to the first input."""

    def forward(self, a, b):
        self.mask = a >= b
        self.shapes = a.shape, b.shape
        return np.maximum(a, b)

    def backward(self, g):
        sa, sb = self.shapes
        return unbroadcast(g * self.mask, sa), unbroadcast(g * ~self.mask, sb)


class Where(Function):
    """y = a where cond else b (cond is a constant boolean array)."""

    def forward(self, a, b, cond):
        self.cond = cond
        self.shapes = a.shape, b.shape
        return np.where(cond, a, b)

    def backward(self, g):
        sa, sb = self.shapes
        zero = np.zeros((), g.dtype)
        ga = unbroadcast(np.where(self.cond, g, zero), sa) if self.needs_grad[0] else None
        gb = unbroadcast(np.where(self.cond, zero, g), sb) if self.needs_grad[1] else None
        return ga, gb


class Clip(Function):
    def forward(self, a, lo=None, hi=None):
        self.mask = np.ones(a.shape, bool)
        if lo is not None:
            self.mask &= a >= lo
        if hi is not None:
            self.mask &= a <= hi
        return np.clip(a, lo, hi)

    def backward(self, g):
        return (g * self.mask,)


class Cast(Function):
    """y = a.astype(dtype); the gradient is cast back to a's dtype."""

    def forward(self, a, dtype):
        self.src = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return (g.astype(self.src),)
