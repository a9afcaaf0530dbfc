"""Padding layers: ``Pad1D`` on (N, C, L) and ``Pad2D`` on (N, C, H, W), with the modes
constant (a value), reflect (mirror, the edge not repeated) and replicate (the edge
repeated), as PyTorch's ConstantPad / ReflectionPad / ReplicationPad. The math lives in
:func:`lepton_nn.ops.conv_more.pad`."""

from __future__ import annotations

import math

from ..autograd import Tensor
from ..backend.padding import PAD_MODES
from ..errors import ShapeError
from ..ops.conv_more import pad
from .layers import as_float_input
from .module import Module

__all__ = ["Pad1D", "Pad2D"]


def _amounts(padding, n_axes: int, cls: str) -> list[list[int]]:
    """Padding as [[before, after]] per padded axis. An int pads every side; Pad1D takes
    (left, right); Pad2D takes (rows, columns) or (top, bottom, left, right); both take
    their own [[before, after], ...] form."""
    p = [padding] if isinstance(padding, int) else list(padding)
    if len(p) == n_axes and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in p):
        p = [v for pair in p for v in pair]  # [[before, after], ...], as get_config writes
    if any(isinstance(v, bool) or int(v) != v or v < 0 for v in p):
        raise ValueError(f"{cls} padding must be non-negative ints, got {padding!r}")
    p = [int(v) for v in p]
    if len(p) == 1:
        return [[p[0], p[0]] for _ in range(n_axes)]
    if n_axes == 1 and len(p) == 2:
        return [p]
    if n_axes == 2 and len(p) == 2:
        return [[p[0], p[0]], [p[1], p[1]]]
    if n_axes == 2 and len(p) == 4:
        return [p[:2], p[2:]]
    raise ValueError(f"{cls} padding {padding!r} has the wrong number of values")


class _Pad(Module):
    n_axes = 0

    def __init__(self, padding=1, mode: str = "constant", value: float = 0.0, name=None):
        super().__init__(name)
        cls = type(self).__name__
        if mode not in PAD_MODES:
            raise ValueError(f"{cls} mode must be one of {PAD_MODES}, got {mode!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{cls} value must be a finite number, got {value!r}")
        self.padding = _amounts(padding, self.n_axes, cls)
        self.mode, self.value = mode, float(value)

    def call(self, x) -> Tensor:
        x = as_float_input(self, x)
        if x.ndim != 2 + self.n_axes:
            want = "(batch, channels, length)" if self.n_axes == 1 else "(batch, C, H, W)"
            raise ShapeError(
                f"layer '{self.name}' ({type(self).__name__}) expects input shape {want}, "
                f"got {x.shape}"
            )
        return pad(x, self.padding, self.mode, self.value, self.name)

    def get_config(self) -> dict:
        return {"name": self.name, "padding": self.padding, "mode": self.mode, "value": self.value}


class Pad1D(_Pad):
    """(N, C, L) -> (N, C, left + L + right); ``padding``: an int or (left, right)."""

    n_axes = 1


class Pad2D(_Pad):
    """(N, C, H, W) -> (N, C, top + H + bottom, left + W + right); ``padding``: an int, (rows,
    columns) or (top, bottom, left, right)."""

    n_axes = 2
