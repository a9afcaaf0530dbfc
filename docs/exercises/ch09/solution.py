"""Chapter 9, reference solution: three ops of your own, as lepton_nn ``Function``s."""

from __future__ import annotations

import numpy as np

from lepton_nn.autograd import Function


def _sigmoid(a):
    e = np.exp(-np.abs(a))  # exp of non-positive numbers only: no overflow
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _unbroadcast(grad, shape):
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


class Swish(Function):
    """y = x sigmoid(beta x) for a constant beta (default 1);
    dy/dx = s + beta x s (1 - s), s = sigmoid(beta x)."""

    def forward(self, x, beta=1.0):
        self.x, self.beta = x, beta
        self.s = _sigmoid(beta * x)
        return x * self.s

    def backward(self, g):
        s = self.s
        return (g * (s + self.beta * self.x * s * (1 - s)),)


class LogSumExp(Function):
    """y = log sum exp(x) over ``axis``, stable; dy/dx = softmax of x over those axes."""

    def forward(self, x, axis=None, keepdims=False):
        m = x.max(axis=axis, keepdims=True)
        lse = m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))  # reduced axes kept
        self.softmax = np.exp(x - lse)
        self.keep = lse.shape  # the shape g must take to broadcast back
        return lse if keepdims else np.reshape(lse, np.sum(x, axis=axis).shape)

    def backward(self, g):
        return (np.reshape(g, self.keep) * self.softmax,)


class Hypot(Function):
    """y = sqrt(a^2 + b^2), broadcasting; dy/da = a / y, dy/db = b / y."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = np.hypot(a, b)
        return self.y

    def backward(self, g):
        grads = []
        for arr, wanted in zip((self.a, self.b), self.needs_grad):
            grads.append(_unbroadcast(g * arr / self.y, arr.shape) if wanted else None)
        return tuple(grads)
