"""Quantization-aware training: fake int8 quantization with a straight-through estimator.

``prepare_qat(model)`` swaps each Dense layer, inside its container, for a :class:`QATDense`
wrapper that shares the Dense's own ``weight`` and ``bias`` Parameters (so parameter names,
the optimizer and ``state_dict`` are unchanged) and computes, in training and eval::

    x~ = (clip(rint(x / s_x) + z_x, 0, 255) - z_x) s_x      uint8 per row, as at inference
    W~ = clip(rint(W / s_w), -127, 127) s_w                   int8 per output channel
    y  = f(x~ W~ + b)

The gradient passes straight through the rounding (d x~ / d x = 1 inside the clipping range,
0 outside; the scales are treated as constants). Train a few epochs, then
``convert_qat(model)`` puts the original Dense layers back (their weights now trained to
survive rounding) and :func:`lepton_nn.compress.quantize` quantizes them as usual.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..backend.reference import ACT_CODE
from ..nn.layers import Dense, apply_activation, as_input
from ..nn.module import Module
from ..ops import linear

__all__ = ["FakeQuant", "QATDense", "convert_qat", "prepare_qat"]


class FakeQuant(Function):
    """y = (clip(rint(a / s) + z, lo, hi) - z) s; dy/da = 1 where rint(a / s) + z is in
    [lo, hi], else 0 (straight-through estimator). ``scale``, ``zero_point`` broadcast to a."""

    def forward(self, a, scale=1.0, zero_point=0.0, lo=0.0, hi=255.0):
        q = np.rint(a / scale) + zero_point
        self.inside = (q >= lo) & (q <= hi)
        return ((np.clip(q, lo, hi) - zero_point) * scale).astype(a.dtype, copy=False)

    def backward(self, g):
        return (g * self.inside,)


def _row_params(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row uint8 (scale, zero point), shaped (..., 1), as the runtime's quantize_rows."""
    lo = np.minimum(x.min(axis=-1, keepdims=True), 0).astype(np.float32)
    hi = np.maximum(x.max(axis=-1, keepdims=True), 0).astype(np.float32)
    s = ((hi - lo) / np.float32(255)).astype(np.float32)
    s[s == 0] = 1
    return s, np.clip(np.rint(-lo / s), 0, 255)


class QATDense(Module):
    """A Dense layer trained through fake int8 quantization (see the module docstring)."""

    def __init__(self, dense: Dense) -> None:
        super().__init__(dense.name)
        self._wrapped = {"dense": dense}  # a dict: not walked, so no duplicate names
        self.weight = dense.weight
        self.bias = dense.bias
        self.activation = dense.activation
        self.dtype = dense.dtype
        self.input_shape, self.output_shape = dense.input_shape, dense.output_shape

    @property
    def dense(self) -> Dense:
        return self._wrapped["dense"]

    def call(self, x) -> Tensor:
        x = as_input(self, x)
        s_x, z_x = _row_params(x.data)
        xq = FakeQuant.apply(x, scale=s_x, zero_point=z_x, lo=0.0, hi=255.0)
        w = self.weight.data
        s_w = (np.abs(w).max(axis=0, initial=0) / np.float32(127)).astype(np.float32)
        s_w[s_w == 0] = 1
        wq = FakeQuant.apply(self.weight, scale=s_w, zero_point=0.0, lo=-127.0, hi=127.0)
        fused = self.activation if self.activation in ACT_CODE else "identity"
        y = linear(xq, wq, self.bias, fused)
        return y if fused == self.activation else apply_activation(y, self.activation)

    def get_config(self) -> dict:
        return self.dense.get_config()


def _swap(model: Module, make) -> int:
    """Replace, in every container list and attribute, the modules ``make`` maps."""
    count = 0
    for m in list(model.modules()):
        for key, value in list(vars(m).items()):
            if isinstance(value, list):
                for i, v in enumerate(value):
                    new = make(v)
                    if new is not None:
                        value[i] = new
                        count += 1
            elif isinstance(value, Module):
                new = make(value)
                if new is not None:
                    setattr(m, key, new)
                    count += 1
    return count


def prepare_qat(model: Module) -> Module:
    """Wrap every Dense of ``model`` (in place) for quantization-aware training; returns it.

    A bare Dense model cannot wrap itself: wrap it as ``QATDense(dense)`` directly.
    """
    model._check_built()
    if isinstance(model, Dense):
        raise TypeError("prepare_qat: wrap a bare Dense as QATDense(dense) instead")
    _swap(model, lambda m: QATDense(m) if isinstance(m, Dense) else None)
    return model


def convert_qat(model: Module) -> Module:
    """Put the original Dense layers back (in place; their Parameters were the ones trained)."""
    _swap(model, lambda m: m.dense if isinstance(m, QATDense) else None)
    return model
