"""Activation layers with parameters, and the elementwise layers ``Sign`` and ``Clip``.

The parameter-free ones (``ReLU6``, ``SELU``, ``HardSwish``, ``Softplus``, ``Mish``) are
``Activation`` with a fixed name, like ``ReLU``; each name is also a string activation of
``Dense`` and ``Conv2D`` (``Dense(8, "elu")``), with the default parameters below.
The math lives in :mod:`lepton_nn.ops.activation`.
"""

from __future__ import annotations

import math

from ..autograd import Tensor
from ..ops.elementwise import Clip as _ClipOp
from .layers import Activation, as_float_input
from .module import Module

__all__ = [
    "LeakyReLU", "ReLU6", "ELU", "SELU", "HardSigmoid", "HardSwish", "Softplus", "Mish",
    "Sign", "Clip",
]  # fmt: skip


def _number(value, what: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return v


class LeakyReLU(Activation):
    """y = x (x > 0), alpha x otherwise (PyTorch's and ONNX's default alpha = 0.01)."""

    fixed = "leaky_relu"

    def __init__(self, alpha: float = 0.01, name: str | None = None):
        super().__init__(name=name)
        self.alpha = _number(alpha, "LeakyReLU alpha")

    def call(self, x) -> Tensor:
        return as_float_input(self, x).leaky_relu(self.alpha)

    def get_config(self) -> dict:
        return {"name": self.name, "alpha": self.alpha}


class ELU(Activation):
    """y = x (x > 0), alpha (e^x - 1) otherwise."""

    fixed = "elu"

    def __init__(self, alpha: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        self.alpha = _number(alpha, "ELU alpha")

    def call(self, x) -> Tensor:
        return as_float_input(self, x).elu(self.alpha)

    def get_config(self) -> dict:
        return {"name": self.name, "alpha": self.alpha}


class HardSigmoid(Activation):
    """y = max(0, min(1, alpha x + beta)); ONNX's defaults alpha = 0.2, beta = 0.5 (PyTorch's
    Hardsigmoid is alpha = 1/6)."""

    fixed = "hard_sigmoid"

    def __init__(self, alpha: float = 0.2, beta: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        self.alpha = _number(alpha, "HardSigmoid alpha")
        self.beta = _number(beta, "HardSigmoid beta")

    def call(self, x) -> Tensor:
        return as_float_input(self, x).hard_sigmoid(self.alpha, self.beta)

    def get_config(self) -> dict:
        return {"name": self.name, "alpha": self.alpha, "beta": self.beta}


class ReLU6(Activation):
    """y = min(max(x, 0), 6)."""

    fixed = "relu6"


class SELU(Activation):
    """y = 1.0507 (x if x > 0 else 1.6733 (e^x - 1))."""

    fixed = "selu"


class HardSwish(Activation):
    """y = x relu6(x + 3) / 6."""

    fixed = "hard_swish"


class Softplus(Activation):
    """y = log(1 + e^x)."""

    fixed = "softplus"


class Mish(Activation):
    """y = x tanh(softplus(x))."""

    fixed = "mish"


class Sign(Module):
    """y = sign(x) (-1, 0, 1); its gradient is 0."""

    def call(self, x) -> Tensor:
        return as_float_input(self, x).sign()


class Clip(Module):
    """y = min(max(x, min), max); a bound given as None is not applied. The gradient is 1
    where min <= x <= max, else 0."""

    def __init__(self, min: float | None = None, max: float | None = None, name=None):  # noqa: A002
        super().__init__(name)
        self.min = None if min is None else _number(min, "Clip min")
        self.max = None if max is None else _number(max, "Clip max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"Clip min {self.min} is above max {self.max}")

    def call(self, x) -> Tensor:
        x = as_float_input(self, x)
        if self.min is None and self.max is None:
            return x
        return _ClipOp.apply(x, lo=self.min, hi=self.max)

    def get_config(self) -> dict:
        return {"name": self.name, "min": self.min, "max": self.max}
