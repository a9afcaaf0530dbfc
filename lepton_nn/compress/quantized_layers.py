"""The int8 forms of one layer: the math, :class:`QuantizedLayer` (Dense, Conv2D) and
:class:`QuantizedRecurrent` (LSTM, GRU, SimpleRNN), and which layers are quantizable.

For each quantized Dense layer y = f(x W + b) with W (K, N):

- weights, symmetric int8 per output channel n::

      s_w[n] = max_k |W[k, n]| / 127          (1 when the column is 0)
      q_w[n, k] = clip(rint(W[k, n] / s_w[n]), -127, 127)

  (``per_channel=False``: one s_w for the whole matrix);
- activations, asymmetric uint8, either *dynamic* (scale and zero point per row, from each
  batch: nothing to calibrate) or *static* (one scale and zero point per layer, fixed from
  calibration data by ``method="minmax"`` (lo, hi = min, max) or ``"percentile"`` (the
  ``100 - p`` and ``p`` percentiles, clipping outliers))::

      lo, hi = min(0, lo), max(0, hi);  s_x = (hi - lo) / 255;  z_x = clip(rint(-lo / s_x), 0, 255)
      q_x = clip(rint(x / s_x) + z_x, 0, 255)

- and the layer computed as one compiled int8 call (``qlinear``; sums exact in int32)::

      y[m, n] = f(s_x[m] s_w[n] sum_k (q_x[m, k] - z_x[m]) q_w[n, k] + b[n])

A Conv2D layer (weight (F, C, kh, kw)) is the same product on its unfolded input: W is
taken as the (C kh kw, F) matrix (one int8 scale per filter); each image is quantized once,
with its own scale and zero point (dynamic: one pair per image, as one pair per row for
Dense) or with the calibrated pair of the conv's input (static), its windows become the rows
of X (OH OW, kh kw C), and the product goes back to (N, F, OH, OW): the runtime's
``Int8ConvStep`` (the backend's ``qconv2d_forward_chunks``), which the Python side runs too.

An LSTM, GRU or SimpleRNN layer has its ``weight_ih`` and ``weight_hh`` (each direction)
quantized per output column like Dense weights: the input product of all steps,
x W_ih + b, is one int8 product (activations by ``mode``), each step's h W_hh another with h
quantized per row (always dynamic: its range changes from step to step), and the gates are
computed in float: the runtime's ``RecurrentStep`` on int8 weights (:class:`QuantizedRecurrent`).
Such layers start from a zero state (no ``initial_state``; ``lengths`` and ``mask`` work as
in the layer), and a layer with ``return_state`` stays float, as does a grouped Conv2D
(``groups`` > 1: no int8 kernel for it yet; the report says "grouped").

All with the very kernels :mod:`lepton_nn.runtime` binds, so these layers and the runtime
on the saved file agree to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backend.activations import EXTRA_ACTIVATIONS
from ..backend.reference import ACT_CODE
from ..errors import ShapeError
from ..nn.conv import Conv2D
from ..nn.layers import Dense
from ..nn.module import Module
from ..nn.recurrent import GRU, LSTM, SimpleRNN
from ..runtime.compression import Int8Weight
from ..runtime.kernels import kernels
from ..runtime.parsers import conv_geometry
from ..runtime.steps_conv import Int8ConvStep
from ..runtime.steps_recurrent import RecurrentStep

__all__ = ["QuantizedLayer", "QuantizedRecurrent", "activation_params", "quantize_weight"]


# --------------------------------------------------------------------------- the math


def quantize_weight(w: np.ndarray, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Dense weight W (K, N) -> (q_w int8 (N, K), s_w float32 (N,)), symmetric.

    q_w[n] = clip(rint(W[:, n] / s_w[n]), -127, 127), s_w[n] = max|W[:, n]| / 127 (1 if 0);
    one shared scale over the matrix when ``per_channel`` is False.
    """
    wt = np.asarray(w, dtype=np.float32).T  # (N, K)
    if wt.shape[1] == 0:
        amax = np.zeros(wt.shape[0], np.float32)
    elif per_channel:
        amax = np.abs(wt).max(axis=1)
    else:
        amax = np.full(wt.shape[0], np.abs(wt).max(initial=0), np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    scale[scale == 0] = 1
    q = np.clip(np.rint(wt / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q), scale


def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """Static uint8 (scale, zero point) for values in [lo, hi] (the range always holds 0)."""
    lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    s = np.float32((hi - lo) / np.float32(255))
    if not s > 0 or not np.isfinite(s):
        s = np.float32(1)
    zp = int(np.clip(np.rint(-lo / s), 0, 255))
    return float(s), zp


def _softmax(y: np.ndarray, log: bool) -> np.ndarray:
    # the same calls, in the same order, as ops.reduce and the runtime's softmax step
    s = y - np.maximum.reduce(y, -1, None, None, True)
    if log:
        return s - np.log(np.add.reduce(np.exp(s), -1, None, None, True))
    e = np.exp(s)
    return e / np.add.reduce(e, -1, None, None, True)


# --------------------------------------------------------------------------- one layer


class _BindCtx:
    """What a runtime step's ``bind`` reads: batch size, threads, output dtype, and the
    recurrent steps' mask (T, N) or None."""

    def __init__(self, n: int) -> None:
        self.n, self.threads, self.dtype = n, 1, np.dtype(np.float32)
        self.mask: np.ndarray | None = None


def _activations_entry(layer: Any) -> dict[str, Any]:
    """The file's ``activations`` entry for a layer's ``mode`` (and static pair, method)."""
    if layer.mode == "dynamic":
        return {"mode": "dynamic"}
    out: dict[str, Any] = {
        "mode": "static",
        "scale": layer.act_scale,
        "zero_point": layer.act_zero_point,
        "method": layer.method,
    }
    if layer.method == "percentile":
        out["percentile"] = layer.percentile
    return out


@dataclass
class QuantizedLayer:
    """The int8 form of one Dense or Conv2D layer (``path``: its parameter prefix, e.g.
    ``layers.0``). Conv2D: ``q`` is (F, C*kh*kw), ``conv_shape`` (F, C, kh, kw) and
    ``conv_config`` the layer's config (stride, padding, dilation)."""

    path: str
    name: str
    q: np.ndarray  # int8 (N, K)
    scale: np.ndarray  # float32 (N,)
    bias: np.ndarray | None  # float32 (N,)
    activation: str  # the Dense's activation name
    mode: str = "dynamic"
    act_scale: float = 1.0  # static mode
    act_zero_point: int = 0
    method: str | None = None
    percentile: float | None = None
    error: float | None = None
    conv_shape: tuple[int, int, int, int] | None = None
    conv_config: dict | None = field(default=None, repr=False)
    packed: Any = field(default=None, repr=False)
    col_sums: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.packed, self.col_sums = kernels().qpack_weights(self.q)
        self.act = ACT_CODE.get(self.activation, 0)
        # an activation the int8 kernel does not fuse (softmax, elu, ...) runs after it
        self.post = None if self.activation in ACT_CODE else self.activation

    @property
    def param(self) -> str:
        return f"{self.path}.weight" if self.path else "weight"

    @property
    def shape(self) -> tuple[int, int]:
        """The matrix's shape (K, N) (K = C*kh*kw, N = F for a Conv2D)."""
        return int(self.q.shape[1]), int(self.q.shape[0])

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The float weight's shape: (K, N), or (F, C, kh, kw) for a Conv2D."""
        return self.conv_shape if self.conv_shape is not None else self.shape

    def dequantized_weight(self) -> np.ndarray:
        """W = (q_w s_w)^T (K, N), or q_w s_w as (F, C, kh, kw): what the int8 layer
        multiplies by (up to x's rounding)."""
        w = self.q.astype(np.float32) * self.scale[:, None]
        if self.conv_shape is not None:
            return np.ascontiguousarray(w.reshape(self.conv_shape))
        return np.ascontiguousarray(w.T)

    def entries(self) -> list[tuple[str, np.ndarray, np.ndarray, dict, tuple | None]]:
        """What the file stores: (attribute, q, scale, activations, float shape or None)."""
        return [("weight", self.q, self.scale, self.activations(), self.conv_shape)]

    def dequantized_weights(self) -> dict[str, np.ndarray]:
        """{attribute: the float weight the int8 one stands for}."""
        return {"weight": self.dequantized_weight()}

    def activations(self) -> dict[str, Any]:
        """The ``activations`` entry of the file schema."""
        return _activations_entry(self)

    def _conv_step(self, width: tuple[int, ...]) -> Int8ConvStep:
        key = (width, self.mode, self.act_scale, self.act_zero_point)
        cached = getattr(self, "_step", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        label = f"layer {self.name!r} (Conv2D)"
        _, _, geom, out_hw = conv_geometry(self.conv_config or {}, width, label)
        wq = Int8Weight(self.path, self.param, self.q, self.scale, self.mode, self.act_scale,
                        self.act_zero_point, conv_shape=self.conv_shape)  # fmt: skip
        step = Int8ConvStep(label, wq, self.bias, self.act, geom, width, out_hw)
        self._step = (key, step)
        return step

    def _conv_forward(self, x: np.ndarray) -> np.ndarray:
        """The runtime's int8 conv step, bound for this batch and run: (N, C, H, W) ->
        (N, F, OH, OW) float32."""
        x = np.ascontiguousarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
        ops, out = self._conv_step(tuple(int(d) for d in x.shape[1:])).bind(
            x, False, _BindCtx(x.shape[0])
        )
        for fn, args in ops:
            fn(*args)
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """y = f(int8 x W + b) for x (..., K) -> (..., N) float32, one ``qlinear`` call
        (a Conv2D: (N, C, H, W) -> (N, F, OH, OW), as the runtime runs it)."""
        if self.conv_shape is not None:
            out = self._conv_forward(x)
            return _post_activation(out, self.post)
        k_in, n_out = self.shape
        lead = x.shape[:-1]
        x2 = np.ascontiguousarray(np.reshape(x, (-1, k_in)), dtype=np.float32)
        m = x2.shape[0]
        be = kernels()
        xq = np.empty((m, k_in), np.uint8)
        out = np.empty((m, n_out), np.float32)
        if self.mode == "static":  # the runtime's static kernel: scale and zero point fixed
            xs = np.array([self.act_scale], np.float32)
            zp = np.array([self.act_zero_point], np.int32)
            be.quantize_rows(x2, xq, xs, zp, True)
        else:
            xs, zp = np.empty(m, np.float32), np.empty(m, np.int32)
            be.quantize_rows(x2, xq, xs, zp)
        be.qlinear(xq, xs, zp, self.packed, self.scale, self.col_sums, self.bias, self.act, out)
        return _post_activation(out, self.post).reshape(*lead, n_out)


def _post_activation(out: np.ndarray, name: str | None) -> np.ndarray:
    """out, then an activation the kernels do not fuse, as the runtime's steps after them."""
    if name is None:
        return out
    if name in ("softmax", "log_softmax"):
        return _softmax(out, name == "log_softmax")
    return EXTRA_ACTIVATIONS[name](out)


RECURRENT = (LSTM, GRU, SimpleRNN)


@dataclass
class QuantizedRecurrent:
    """The int8 form of an LSTM, GRU or SimpleRNN layer (``path``: its parameter prefix).

    ``mats``: ``{attribute: (q int8 (N, K), scale float32 (N,))}`` for ``weight_ih`` and
    ``weight_hh`` of each direction (``_reverse``), each quantized like a Dense weight (K, N);
    ``biases``: the float biases by attribute. The input product x W_ih + b of all steps
    follows ``mode`` (static: the calibrated pair of the layer's input); every step's h W_hh
    quantizes h per row (dynamic: h's range changes from step to step); the gates stay float.
    :meth:`forward` is the runtime's :class:`RecurrentStep` on these weights.
    """

    path: str
    name: str
    cell: str  # "LSTM", "GRU" or "SimpleRNN"
    units: int
    sequences: bool  # return_sequences
    mats: dict[str, tuple[np.ndarray, np.ndarray]]
    biases: dict[str, np.ndarray | None]
    mode: str = "dynamic"
    act_scale: float = 1.0  # static mode: the input product's pair
    act_zero_point: int = 0
    method: str | None = None
    percentile: float | None = None
    error: float | None = None

    @classmethod
    def of(cls, path: str, m: Module, mode: str, per_channel: bool) -> QuantizedRecurrent:
        mats = {a: quantize_weight(p.data, per_channel) for a, p in _weights_of(m)}
        biases = {  # float32, as the int8 step computes
            b + d: None
            if getattr(m, b + d) is None
            else np.asarray(getattr(m, b + d).data, np.float32)
            for d in m.directions
            for b in m.biases
        }
        return cls(path, m.name, type(m).__name__, m.units, m.return_sequences, mats, biases,
                   mode)  # fmt: skip

    @property
    def directions(self) -> tuple[str, ...]:
        return ("", "_reverse") if "weight_ih_reverse" in self.mats else ("",)

    def activations(self, attr: str = "weight_ih") -> dict[str, Any]:
        """The file's ``activations`` entry of matrix ``attr`` (``weight_hh*``: dynamic)."""
        return {"mode": "dynamic"} if attr.startswith("weight_hh") else _activations_entry(self)

    def entries(self) -> list[tuple[str, np.ndarray, np.ndarray, dict, tuple | None]]:
        return [(a, q, s, self.activations(a), None) for a, (q, s) in self.mats.items()]

    def dequantized_weights(self) -> dict[str, np.ndarray]:
        return {a: np.ascontiguousarray((q.astype(np.float32) * s[:, None]).T)
                for a, (q, s) in self.mats.items()}  # fmt: skip

    def _weight(self, attr: str) -> Int8Weight:
        q, scale = self.mats[attr]
        act = self.activations(attr)
        return Int8Weight(self.path, f"{self.path}.{attr}", q, scale, act["mode"],
                          self.act_scale, self.act_zero_point)  # fmt: skip

    def _step(self, steps: int) -> RecurrentStep:
        cached = getattr(self, "_cached", None)
        key = (steps, self.mode, self.act_scale, self.act_zero_point)
        if cached is not None and cached[0] == key:
            return cached[1]
        dirs = [
            (self._weight("weight_ih" + d), self._weight("weight_hh" + d),
             self.biases.get("bias" + d), self.biases.get("bias_hh" + d), bool(d))
            for d in self.directions
        ]  # fmt: skip
        label = f"layer {self.name!r} ({self.cell})"
        step = RecurrentStep(label, self.cell, dirs, self.units, steps, self.sequences)
        self._cached = (key, step)
        return step

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """(N, T, F) -> (N, T, U') or (N, U') float32 (U' = U times the directions);
        ``mask`` (N, T): the real steps of a padded batch, as the layer's own ``mask``."""
        features = self.mats["weight_ih"][0].shape[1]
        if x.ndim != 3 or x.shape[2] != features:
            raise ShapeError(
                f"layer {self.name!r} ({self.cell}, int8) expects input shape "
                f"(batch, time, {features}), got {x.shape}"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        ctx = _BindCtx(x.shape[0])
        if mask is not None:
            if np.shape(mask) != x.shape[:2]:
                raise ShapeError(f"mask must have shape {x.shape[:2]}, got {np.shape(mask)}")
            ctx.mask = np.ascontiguousarray(np.asarray(mask, np.float32).T)  # (T, N)
        ops, out = self._step(x.shape[1]).bind(x, False, ctx)
        for fn, args in ops:
            fn(*args)
        return out


def _weights_of(m: Module) -> list[tuple[str, Any]]:
    """(attribute, Parameter) of a quantizable layer's weight matrices: ``weight`` of a Dense
    or Conv2D; ``weight_ih`` and ``weight_hh`` of each direction of a recurrent layer."""
    if isinstance(m, RECURRENT):
        attrs = [a + d for d in m.directions for a in ("weight_ih", "weight_hh")]
        return [(a, getattr(m, a)) for a in attrs]
    return [("weight", m.weight)]


def _quant_layers(model: Module) -> list[tuple[str, Module]]:
    """(parameter prefix, layer) of every Dense, Conv2D and recurrent layer (the quantizable
    layers)."""
    return [
        (prefix[:-1] if prefix else "", m)
        for prefix, m in model._named_modules()
        if isinstance(m, (Dense, Conv2D, *RECURRENT))
    ]


def _as_array(x: Any) -> np.ndarray:
    return x.data if isinstance(x, Tensor) else np.asarray(x)
