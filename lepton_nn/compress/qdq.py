"""Quantize-dequantize layers: values rounded to an int8 / uint8 grid, as ONNX's
``QuantizeLinear`` followed by ``DequantizeLinear`` computes them::

    y = (clip(rint(x / s) + z, qmin, qmax) - z) s          ties to even

ONNX Runtime's quantizer puts such a pair on every activation of a QDQ model (the outputs
of a layer rounded to the grid of the next layer's input; a ReLU folded into the clip when
the zero point is the grid's low end), so a network imported from such a file needs it to
compute what ONNX Runtime computes. The gradient passes straight through inside the grid's
range (0 outside): the layer trains as quantization-aware training does
(:class:`~lepton_nn.compress.qat.FakeQuant`). The runtime runs it as an elementwise step
(``quantize_dequantize`` of :mod:`lepton_nn.backend.activations`).
"""

from __future__ import annotations

from ..autograd import Tensor
from ..nn.layers import as_input
from ..nn.module import Module
from .qat import FakeQuant, _row_params

__all__ = ["QuantizeDequantize", "QuantizeDequantizeRows"]


class QuantizeDequantize(Module):
    """y = (clip(rint(x / scale) + zero_point, qmin, qmax) - zero_point) scale, per tensor.

    ``qmin, qmax``: the integer grid, (0, 255) for uint8, (-128, 127) for int8."""

    def __init__(self, scale: float, zero_point: int = 0, qmin: int = 0, qmax: int = 255,
                 name: str | None = None) -> None:  # fmt: skip
        from ..runtime.parsers import qdq_problem

        super().__init__(name)
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.qmin, self.qmax = int(qmin), int(qmax)
        problem = qdq_problem(self.scale, zero_point, qmin, qmax)
        if problem:
            raise ValueError(f"QuantizeDequantize: {problem}")

    def call(self, x) -> Tensor:
        x = as_input(self, x)
        s = x.data.dtype.type(self.scale)
        return FakeQuant.apply(x, scale=s, zero_point=x.data.dtype.type(self.zero_point),
                               lo=float(self.qmin), hi=float(self.qmax))  # fmt: skip

    def get_config(self) -> dict:
        return {"name": self.name, "scale": self.scale, "zero_point": self.zero_point,
                "qmin": self.qmin, "qmax": self.qmax}  # fmt: skip


class QuantizeDequantizeRows(Module):
    """Each row (last axis) rounded to its own uint8 grid, from its range (ONNX Runtime's
    ``quantize_dynamic`` takes one grid for the whole batch; at batch 1 they agree)::

        lo, hi = min(0, min x), max(0, max x);  s = (hi - lo) / 255;  z = clip(rint(-lo / s))
        y = (clip(rint(x / s) + z, 0, 255) - z) s
    """

    def call(self, x) -> Tensor:
        x = as_input(self, x)
        s, z = _row_params(x.data)
        s, z = s.astype(x.data.dtype), z.astype(x.data.dtype)
        return FakeQuant.apply(x, scale=s, zero_point=z, lo=0.0, hi=255.0)

    def get_config(self) -> dict:
        return {"name": self.name}
