"""Activations beyond the fused five: one ``Function`` each, forward from
:mod:`lepton_nn.backend.activations` (the definition the runtime runs too), derivative here.

``x``: any shape; ``y`` and the gradient have x's shape and dtype.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..backend import activations as A

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class LeakyRelu(Function):
    """y = x if x > 0 else alpha x;  dy/dx = 1 or alpha."""

    def forward(self, x, alpha=0.01):
        self.pos, self.alpha = x > 0, alpha
        return A.leaky_relu(x, alpha)

    def backward(self, g):
        return (np.where(self.pos, g, self.alpha * g),)


class Relu6(Function):
    """y = min(max(x, 0), 6);  dy/dx = 1 on (0, 6), else 0."""

    def forward(self, x):
        self.inside = (x > 0) & (x < 6)
        return A.relu6(x)

    def backward(self, g):
        return (g * self.inside,)


class Elu(Function):
    """y = x if x > 0 else alpha (e^x - 1);  dy/dx = 1 or y + alpha."""

    def forward(self, x, alpha=1.0):
        self.pos, self.alpha = x > 0, alpha
        self.y = A.elu(x, alpha)
        return self.y

    def backward(self, g):
        return (np.where(self.pos, g, g * (self.y + self.alpha)),)


class Selu(Function):
    """y = scale (x if x > 0 else alpha (e^x - 1));  dy/dx = scale or y + scale alpha."""

    def forward(self, x):
        self.pos = x > 0
        self.y = A.selu(x)
        return self.y

    def backward(self, g):
        sa = A.SELU_SCALE * A.SELU_ALPHA
        return (np.where(self.pos, A.SELU_SCALE * g, g * (self.y + sa)),)


class HardSigmoid(Function):
    """y = clip(alpha x + beta, 0, 1);  dy/dx = alpha where 0 < alpha x + beta < 1, else 0."""

    def forward(self, x, alpha=0.2, beta=0.5):
        s = alpha * x + beta
        self.inside, self.alpha = (s > 0) & (s < 1), alpha
        return A.hard_sigmoid(x, alpha, beta)

    def backward(self, g):
        return (g * (self.alpha * self.inside),)


class HardSwish(Function):
    """y = x h(x), h = hard_sigmoid(x, 1/6, 1/2);  dy/dx = h + x/6 where 0 < x/6 + 1/2 < 1."""

    def forward(self, x):
        self.x = x
        return A.hard_swish(x)

    def backward(self, g):
        x = self.x
        h = A.hard_sigmoid(x, 1.0 / 6.0, 0.5)
        return (g * (h + (x / 6.0) * ((x > -3) & (x < 3))),)


class Softplus(Function):
    """y = log(1 + e^x);  dy/dx = sigmoid(x)."""

    def forward(self, x):
        self.x = x
        return A.softplus(x)

    def backward(self, g):
        e = np.exp(-np.abs(self.x))
        return (g * np.where(self.x >= 0, 1 / (1 + e), e / (1 + e)),)


class Mish(Function):
    """y = x tanh(sp), sp = softplus(x);  dy/dx = t + x (1 - t^2) sigmoid(x), t = tanh(sp)."""

    def forward(self, x):
        self.x = x
        self.t = np.tanh(A.softplus(x))
        return x * self.t

    def backward(self, g):
        x, t = self.x, self.t
        e = np.exp(-np.abs(x))
        sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return (g * (t + x * (1 - t * t) * sig),)


class GeluErf(Function):
    """y = x Phi(x) (exact GELU);  dy/dx = Phi(x) + x phi(x), phi(x) = e^(-x^2/2)/sqrt(2 pi)."""

    def forward(self, x):
        self.x = x
        return A.gelu_erf(x)

    def backward(self, g):
        x = self.x
        cdf = 0.5 * (1.0 + A.erf(x * math.sqrt(0.5)))
        d = cdf + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x)
        return ((g * d).astype(g.dtype, copy=False),)


class Sign(Function):
    """y = sign(x);  dy/dx = 0 (almost everywhere)."""

    def forward(self, x):
        return A.sign(x)

    def backward(self, g):
        return (np.zeros_like(g),)
