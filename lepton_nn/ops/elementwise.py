"""Elementwise ops with NumPy broadcasting; gradients are summed back to each input's shape."""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend.reference import GELU_A, GELU_C
from ._util import unbroadcast, zero_where_no_grad

_QUIET = {"divide": "ignore", "invalid": "ignore", "over": "ignore"}


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
    """y = a / b; dy/da = 1 / b; dy/db = -a / b^2, taken as -(y / b) so that b^2 cannot
    underflow to 0 (a = 0, b = 1e-200 would give 0 / 0)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a / b
        return self.y

    def backward(self, g):
        ga = gb = None
        with np.errstate(**_QUIET):
            if self.needs_grad[0]:
                ga = unbroadcast(zero_where_no_grad(g / self.b, g), self.a.shape)
            if self.needs_grad[1]:
                gb = unbroadcast(zero_where_no_grad(g * -(self.y / self.b), g), self.b.shape)
        return ga, gb


class Pow(Function):
    """y = a ** b; dy/da = b a^(b-1) (0 where b = 0: a ** 0 is constant, also at a = 0);
    dy/db = y log(a) (defined for a > 0; taken as 0 where log(a) is, i.e. a = 1 or a <= 0)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a**b
        return self.y

    def backward(self, g):
        a, b = self.a, self.b
        ga = gb = None
        zero = np.zeros((), self.y.dtype)
        with np.errstate(**_QUIET):
            if self.needs_grad[0]:
                d = np.where(b == 0, zero, b * a ** (b - 1))  # not 0 * 0^-1 = NaN at a = 0
                ga = unbroadcast(zero_where_no_grad(g * d, g), a.shape)
            if self.needs_grad[1]:
                loga = np.where(a > 0, np.log(np.where(a > 0, a, 1)), zero)
                d = np.where(loga == 0, zero, self.y * loga)  # not inf * 0 at a = 0, b < 0
                gb = unbroadcast(zero_where_no_grad(g * d, g), b.shape)
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
        with np.errstate(**_QUIET):
            return (zero_where_no_grad(g * self.y, g),)  # y = inf where exp overflowed


class Log(Function):
    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, g):
        with np.errstate(**_QUIET):
            return (zero_where_no_grad(g / self.a, g),)


class Sqrt(Function):
    def forward(self, a):
        self.y = np.sqrt(a)
        return self.y

    def backward(self, g):
        with np.errstate(**_QUIET):
            return (zero_where_no_grad(g / (2 * self.y), g),)


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
        sech2 = 1 - t * t
        with np.errstate(**_QUIET):
            d = 0.5 * (1 + t) + 0.5 * a * sech2 * GELU_C * (1 + 3 * GELU_A * a * a)
        if np.isnan(d).any():  # |a| so large that a^2 overflows, where sech2 is exactly 0
            d = np.where(np.isnan(d) & (sech2 == 0), 0.5 * (1 + t), d)
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
