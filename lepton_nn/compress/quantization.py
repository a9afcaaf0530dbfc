"""int8 post-training quantization of Dense, Conv2D and recurrent layers, as a wrapper around
a float model.

``quantize(model, calibration_data)`` leaves ``model`` untouched and returns a
:class:`QuantizedModel` holding, per quantized Dense layer y = f(x W + b) with W (K, N):

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

All with the very kernels :mod:`lepton_nn.runtime` binds, so ``QuantizedModel(x)`` and the runtime
on the saved file agree to the last bit.

Reporting: with calibration data, each layer's error is the relative output error
``||y_int8 - y_float||_F / ||y_float||_F`` on that data, the layer fed its float input. With a
budget (``max_accuracy_drop`` and ``eval_data``), layers are returned to float, worst error
first, until the metric drops by at most the budget.

File: ``lepton_nn.save(quantized, path)`` writes a ``"kind": "compressed"`` ``.lnn`` (schema in
:mod:`lepton_nn.runtime.compression`); :func:`lepton_nn.runtime.load` runs it with the int8
kernels, :func:`lepton_nn.load` returns the float model with dequantized weights, and
:func:`load_quantized` the :class:`QuantizedModel` again.
"""

from __future__ import annotations

import copy
import fnmatch
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor, no_grad
from ..backend.activations import EXTRA_ACTIVATIONS
from ..backend.reference import ACT_CODE
from ..errors import LeptonError, ModelFormatError, ShapeError
from ..nn.conv import Conv2D
from ..nn.layers import Dense
from ..nn.module import Module
from ..nn.recurrent import GRU, LSTM, SimpleRNN
from ..ops.recurrent import lengths_to_mask
from ..runtime.compression import (
    Int8Weight,
    compression_section,
    csr_entry,
    decompress,
    int8_entry,
    parse_compression,
)
from ..runtime.kernels import kernels
from ..runtime.steps import Int8ConvStep, RecurrentStep, conv_geometry

__all__ = [
    "QuantizedLayer",
    "QuantizedModel",
    "QuantizedRecurrent",
    "compressed_to_lnn",
    "load_compressed",
    "load_quantized",
    "network_from_lnn",
    "quantize",
    "quantize_weight",
    "save_compressed",
]

MODES = ("dynamic", "static")
METHODS = ("minmax", "percentile")
CALIBRATION_BATCH = 256
ERROR_ROWS = 2048  # rows of calibration data the per-layer error is measured on
RESERVOIR = 1 << 20  # activation values kept per layer for percentiles


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


# --------------------------------------------------------------------------- the wrapper


def _quant_layers(model: Module) -> list[tuple[str, Module]]:
    """(parameter prefix, layer) of every Dense, Conv2D and recurrent layer (the quantizable
    layers)."""
    return [
        (prefix[:-1] if prefix else "", m)
        for prefix, m in model._named_modules()
        if isinstance(m, (Dense, Conv2D, *RECURRENT))
    ]


def _check_finite_weights(layers: dict[str, Module]) -> None:
    """Refuse inf/NaN weights before anything is quantized or written: int8 has no code for
    them (the scale max|W| / 127 would be inf or NaN, and no loader accepts that file)."""
    for path, m in layers.items():
        for name, p in m.named_parameters():
            if not np.isfinite(p.data).all():
                bad = int(np.size(p.data) - np.count_nonzero(np.isfinite(p.data)))
                raise LeptonError(
                    f"quantize: layer {m.name!r} ({path or 'model'}) has {bad} inf/NaN values "
                    f"in {name!r}; int8 cannot represent them (fix or retrain the model first)"
                )


def _dense_layers(model: Module) -> list[tuple[str, Dense]]:
    """(parameter prefix without the final dot, layer) of every Dense, in model order."""
    return [
        (prefix[:-1] if prefix else "", m)
        for prefix, m in model._named_modules()
        if isinstance(m, Dense)
    ]


def _as_array(x: Any) -> np.ndarray:
    return x.data if isinstance(x, Tensor) else np.asarray(x)


class _RecurrentCall:
    """While a QuantizedModel runs: ``module.call`` is its int8 form (no initial_state)."""

    def __init__(self, module: Module, layer: QuantizedRecurrent) -> None:
        self.module = module

        def call(x, lengths=None, mask=None, initial_state=None):
            if initial_state is not None:
                raise LeptonError(
                    f"layer {layer.name!r} in int8 starts from a zero state (as the runtime "
                    "does): initial_state is not supported"
                )
            if lengths is not None and mask is not None:
                raise ValueError("give lengths or mask, not both")
            x = _as_array(x)
            if lengths is not None:
                mask = lengths_to_mask(_as_array(lengths), x.shape[1])
            return Tensor(layer.forward(x, None if mask is None else _as_array(mask)))

        module.call = call  # an instance attribute: found before the class's call

    def remove(self) -> None:
        del self.module.call


class QuantizedModel:
    """A float model plus the int8 form of some of its Dense, Conv2D and recurrent layers.

    ``qm(x)`` runs ``model`` with those layers computed in int8 (returns a Tensor, like the
    model); ``qm.predict(x)`` returns an array. ``layers``: ``{path: QuantizedLayer or
    QuantizedRecurrent}``; ``report``: one dict per quantizable layer (``layer``, ``name``,
    ``shape``, ``int8``, ``error``, ``reason``); ``scores``: the metric of the float and the
    final model when a budget was used.
    """

    def __init__(
        self,
        model: Module,
        layers: dict[str, QuantizedLayer],
        report: list[dict[str, Any]],
        mode: str = "dynamic",
        method: str | None = None,
    ) -> None:
        self.model = model
        self.layers = layers
        self.report = report
        self.mode = mode
        self.method = method
        self.scores: dict[str, float] = {}

    # -- running ----------------------------------------------------------------------------
    def _hooks(self) -> list[Any]:
        handles: list[Any] = []
        by_id = {id(m): p for p, m in _quant_layers(self.model)}
        for module in self.model.modules():
            path = by_id.get(id(module))
            if path in self.layers:
                layer = self.layers[path]
                if isinstance(layer, QuantizedRecurrent):
                    handles.append(_RecurrentCall(module, layer))
                    continue

                def hook(mod, args, out, layer=layer):
                    return Tensor(layer.forward(_as_array(args[0])))

                handles.append(module.register_forward_hook(hook))
        return handles

    def __call__(self, x: Any) -> Tensor:
        handles = self._hooks()
        was = self.model.training
        self.model.eval()
        try:
            with no_grad():
                return self.model(x)
        finally:
            for h in handles:
                h.remove()
            self.model.train(was)

    def predict(self, x: Any, batch_size: int = 1024) -> np.ndarray:
        """The int8 model's output for ``x`` (N, ...) as an array, in batches."""
        x = np.asarray(x)
        if x.shape[0] <= batch_size:
            return _as_array(self(x))
        return np.concatenate(
            [_as_array(self(x[i : i + batch_size])) for i in range(0, x.shape[0], batch_size)]
        )

    def eval(self) -> QuantizedModel:
        self.model.eval()
        return self

    # -- information ------------------------------------------------------------------------
    def dequantized(self) -> Module:
        """A float copy of the model whose quantized weights are replaced by q_w s_w."""
        out = copy.deepcopy(self.model)
        for path, m in _quant_layers(out):
            if path in self.layers:
                for attr, w in self.layers[path].dequantized_weights().items():
                    p = getattr(m, attr)
                    p.data = w.reshape(p.shape).astype(p.dtype)
        return out

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of the Dense, Conv2D and recurrent weight matrices: ``float`` (all float32)
        and ``quantized`` (as stored: int8 plus a float32 scale per output channel)."""
        total = quant = 0
        for path, m in _quant_layers(self.model):
            for _, p in _weights_of(m):
                size = p.data.size
                total += 4 * size
                outs = p.shape[0] if isinstance(m, Conv2D) else p.shape[-1]
                quant += size + 4 * outs if path in self.layers else 4 * size
        return {"float": total, "quantized": quant}

    def summary(self) -> str:
        """A table of the quantizable layers: shape, int8 or float (why), relative error."""
        rows = [("layer", "name", "shape", "kept as", "rel. error")]
        for r in self.report:
            err = "-" if r["error"] is None else f"{r['error']:.2e}"
            kind = "int8" if r["int8"] else f"float ({r['reason']})"
            rows.append(
                (r["layer"] or "<root>", r["name"], "x".join(map(str, r["shape"])), kind, err)
            )
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        head = f"QuantizedModel: {len(self.layers)} int8 layers, {self.mode} activations"
        if self.scores:
            head += ", metric " + ", ".join(f"{k} {v:.4f}" for k, v in self.scores.items())
        return "\n".join([head, *lines])

    def __repr__(self) -> str:
        return f"QuantizedModel({len(self.layers)} int8 layers, mode={self.mode!r})"

    # -- file -------------------------------------------------------------------------------
    def to_lnn(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Manifest and arrays of a ``"compressed"`` file (what ``lepton_nn.save`` writes)."""
        return compressed_to_lnn(self.model, self.layers)


# --------------------------------------------------------------------------- quantize()


def _batches(x: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]


class _Calibration:
    """Streams data through the float model, collecting per-layer input ranges and samples."""

    def __init__(self, paths: Sequence[str], method: str, percentile: float, rng) -> None:
        self.lo = dict.fromkeys(paths, np.inf)
        self.hi = dict.fromkeys(paths, -np.inf)
        self.values: dict[str, list[np.ndarray]] = {p: [] for p in paths}
        self.kept = dict.fromkeys(paths, 0)
        self.io: dict[str, tuple[list, list]] = {p: ([], []) for p in paths}
        self.method, self.percentile, self.rng = method, percentile, rng

    def add(self, path: str, x: np.ndarray, y: np.ndarray, keep_io: bool) -> None:
        flat = x.reshape(-1)
        if flat.size:
            self.lo[path] = min(self.lo[path], float(flat.min()))
            self.hi[path] = max(self.hi[path], float(flat.max()))
        if self.method == "percentile" and self.kept[path] < RESERVOIR and flat.size:
            take = min(flat.size, RESERVOIR - self.kept[path])
            pick = flat if take == flat.size else self.rng.choice(flat, take, replace=False)
            self.values[path].append(np.array(pick, np.float32))
            self.kept[path] += take
        if keep_io:
            self.io[path][0].append(np.array(x, np.float32))
            self.io[path][1].append(np.array(y, np.float32))

    def range(self, path: str) -> tuple[float, float]:
        if self.method == "percentile" and self.values[path]:
            v = np.concatenate(self.values[path])
            lo, hi = np.percentile(v, [100 - self.percentile, self.percentile])
            return float(lo), float(hi)
        lo, hi = self.lo[path], self.hi[path]
        return (0.0, 0.0) if not np.isfinite(lo) else (lo, hi)


def _calibrate(
    model: Module,
    targets: dict[str, Dense],
    data: np.ndarray,
    method: str,
    percentile: float,
) -> _Calibration:
    cal = _Calibration(list(targets), method, percentile, np.random.default_rng(0))
    rows = {"seen": 0}
    handles = []
    for path, m in targets.items():

        def hook(mod, args, out, path=path):
            cal.add(path, _as_array(args[0]), _as_array(out), rows["seen"] < ERROR_ROWS)

        handles.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with no_grad():
            for xb in _batches(data, CALIBRATION_BATCH):
                model(xb)
                rows["seen"] += xb.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return cal


def _relative_error(layer: QuantizedLayer, xs: list, ys: list) -> float | None:
    if not xs:
        return None
    num = den = 0.0
    for x, y in zip(xs, ys, strict=True):
        d = layer.forward(x).astype(np.float64) - y
        num += float(np.sum(d * d))
        den += float(np.sum(y.astype(np.float64) ** 2))
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))


def _match(patterns: Iterable[str], path: str, name: str) -> bool:
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def _accuracy_metric(model: Module) -> Callable[[np.ndarray, np.ndarray], float]:
    dense = _dense_layers(model)
    last_act = dense[-1][1].activation if dense else "identity"
    cut = 0.5 if last_act == "sigmoid" else 0.0

    def accuracy(y_true: np.ndarray, out: np.ndarray) -> float:
        y = np.asarray(y_true)
        if y.ndim == 2 and y.shape[1] > 1:
            y = y.argmax(axis=1)
        out = out.reshape(out.shape[0], -1)
        pred = out.argmax(axis=1) if out.shape[1] > 1 else (out[:, 0] >= cut).astype(np.int64)
        return float(np.mean(pred == y.reshape(-1)))

    return accuracy


def quantize(
    model: Module,
    calibration_data: Any = None,
    mode: str = "dynamic",
    method: str = "minmax",
    *,
    percentile: float = 99.99,
    per_channel: bool = True,
    exclude: Iterable[str] = (),
    max_accuracy_drop: float | None = None,
    eval_data: tuple | None = None,
) -> QuantizedModel:
    """int8 post-training quantization of ``model``'s Dense, Conv2D and recurrent layers
    (``model`` is not changed; a Conv2D is quantized as its (C kh kw, F) weight matrix on
    im2col columns; a recurrent layer as its input and recurrent matrices, module docstring).

    calibration_data: numeric input (N, ...) the model accepts; needed for ``mode="static"``,
        and, in either mode, what the per-layer errors are measured on.
    mode: ``"dynamic"`` (activation scale per row, per batch) or ``"static"`` (one activation
        scale per layer from ``calibration_data``, by ``method`` ``"minmax"`` or
        ``"percentile"`` (the ``percentile``-th and ``100 - percentile``-th)).
    per_channel: one weight scale per output unit (else one per layer).
    exclude: layers kept in float, by name or parameter prefix (``"dense_2"``, ``"layers.0"``;
        shell-style wildcards allowed).
    max_accuracy_drop, eval_data: with ``eval_data = (X, y)`` or ``(X, y, metric)``
        (``metric(y, outputs) -> float``, higher is better; default accuracy), layers go back
        to float, largest error first, until ``metric(float) - metric(int8) <= max_accuracy_drop``
        (in the metric's units: 0.005 is half a point of accuracy).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose one of {MODES}")
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose one of {METHODS}")
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    if mode == "static" and calibration_data is None:
        raise ValueError("mode='static' needs calibration_data to fix the activation scales")
    if max_accuracy_drop is not None and eval_data is None:
        raise ValueError("max_accuracy_drop needs eval_data=(X, y) or (X, y, metric)")
    model._check_built()
    dense = _quant_layers(model)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    for p in exclude:
        if not any(_match([p], path, m.name) for path, m in dense):
            names = [m.name for _, m in dense]
            raise ValueError(
                f"exclude: {p!r} matches no Dense layer or Conv2D layer (have {names})"
            )
    targets = {path: m for path, m in dense if not _match(exclude, path, m.name)}
    _check_finite_weights(targets)
    cal = None
    if calibration_data is not None:
        data = np.asarray(_as_array(calibration_data))
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(f"calibration_data must be a non-empty batch, got {data.shape}")
        cal = _calibrate(model, targets, data, method, percentile)
    layers: dict[str, QuantizedLayer | QuantizedRecurrent] = {}
    reasons = {path: "excluded" for path, _ in dense if path not in targets}
    for path, m in targets.items():
        if isinstance(m, RECURRENT) and m.return_state:
            reasons[path] = "return_state"  # the runtime runs no return_state layer
            continue
        if getattr(m, "groups", 1) != 1:
            reasons[path] = "grouped"  # no int8 grouped convolution kernel: it stays float
            continue
        bias = None if isinstance(m, RECURRENT) or m.bias is None else m.bias.data
        bias = None if bias is None else np.asarray(bias, np.float32)
        if isinstance(m, RECURRENT):
            layer = QuantizedRecurrent.of(path, m, mode, per_channel)
        elif isinstance(m, Conv2D):  # W (F, C, kh, kw) as the (C kh kw, F) matrix
            w = m.weight.data
            q, scale = quantize_weight(w.reshape(w.shape[0], -1).T, per_channel)
            layer = QuantizedLayer(path, m.name, q, scale, bias, m.activation, mode,
                                   conv_shape=tuple(int(d) for d in w.shape),
                                   conv_config=m.get_config())  # fmt: skip
        else:
            q, scale = quantize_weight(m.weight.data, per_channel)
            layer = QuantizedLayer(path, m.name, q, scale, bias, m.activation, mode)
        if mode == "static":
            lo, hi = cal.range(path)
            layer.act_scale, layer.act_zero_point = activation_params(lo, hi)
            layer.method = method
            layer.percentile = percentile if method == "percentile" else None
        if cal is not None:
            layer.error = _relative_error(layer, *cal.io[path])
        layers[path] = layer
    qm = QuantizedModel(model, layers, [], mode, method if mode == "static" else None)
    if max_accuracy_drop is not None:
        _fit_budget(qm, float(max_accuracy_drop), eval_data, reasons)
    qm.report = [
        {
            "layer": path,
            "name": m.name,
            "shape": [int(d) for d in _weights_of(m)[0][1].shape],
            "int8": path in qm.layers,
            "error": layers[path].error if path in layers else None,  # budget-reverted too
            "reason": reasons.get(path, ""),
        }
        for path, m in dense
    ]
    return qm


def _fit_budget(qm: QuantizedModel, budget: float, eval_data: tuple, reasons: dict) -> None:
    if not isinstance(eval_data, (tuple, list)) or len(eval_data) not in (2, 3):
        raise ValueError("eval_data must be (X, y) or (X, y, metric)")
    x, y = np.asarray(_as_array(eval_data[0])), np.asarray(eval_data[1])
    metric = eval_data[2] if len(eval_data) == 3 else _accuracy_metric(qm.model)
    all_layers = dict(qm.layers)
    qm.layers = {}
    base = metric(y, qm.predict(x))
    qm.layers = all_layers
    score = metric(y, qm.predict(x))
    order = sorted(qm.layers, key=lambda p: -(qm.layers[p].error or 0.0))
    while base - score > budget and order:
        path = order.pop(0)
        qm.layers = {p: v for p, v in qm.layers.items() if p != path}
        reasons[path] = "budget"
        score = metric(y, qm.predict(x))
    qm.scores = {"float": float(base), "quantized": float(score)}


# --------------------------------------------------------------------------- files


def compressed_to_lnn(
    model: Module,
    int8: dict[str, QuantizedLayer | QuantizedRecurrent] | None = None,
    min_sparsity: float | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """A ``"compressed"`` manifest and arrays for ``model``.

    ``int8``: layers stored as int8 (``{path: QuantizedLayer or QuantizedRecurrent}``).
    ``min_sparsity``: every other Dense weight with at least this fraction of zeros is stored
    as CSR (a pruned model).
    """
    from ..io import module_to_lnn

    int8 = int8 or {}
    section, arrays = module_to_lnn(model)
    entries: list[dict] = []
    stored: set[str] = set()

    def store(name: str, entry: dict, arrs: dict[str, np.ndarray]) -> None:
        entries.append(entry)
        arrays.update(arrs)
        del arrays["params/" + name]
        stored.add(name)

    for path, m in _quant_layers(model):
        if path in int8:
            layer = int8[path]
            for attr, q, scale, acts, shape in layer.entries():
                name = f"{path}.{attr}" if path else attr
                store(name, *int8_entry(path, m.name, name, q, scale, acts, layer.error, shape))
        elif isinstance(m, Dense) and min_sparsity is not None:
            w = m.weight.data
            zeros = 1.0 - np.count_nonzero(w) / w.size if w.size else 0.0
            if w.dtype == np.float32 and w.size and zeros >= min_sparsity:
                name = f"{path}.weight" if path else "weight"
                store(name, *csr_entry(path, m.name, name, w))
    section["params"] = [p for p in section["params"] if p not in stored]
    if entries:
        section["compression"] = compression_section(entries)
    kind = "compressed" if entries else "module"
    return {"kind": kind, "model": section}, arrays


def save_compressed(
    model: Module | QuantizedModel,
    path: str | os.PathLike[str],
    min_sparsity: float | None = 0.5,
    metadata: dict | None = None,
) -> None:
    """Save a (pruned) model with its sparse weights as CSR, or a :class:`QuantizedModel`.

    Dense weights with at least ``min_sparsity`` zeros are stored as CSR (the file shrinks
    with the sparsity; the runtime runs them with the sparse kernel where that is faster).
    """
    from .. import io

    if isinstance(model, QuantizedModel):
        prepared = _Prepared(*compressed_to_lnn(model.model, model.layers, min_sparsity))
    else:
        prepared = _Prepared(*compressed_to_lnn(model, None, min_sparsity))
    io.save(prepared, path, metadata=metadata)


class _Prepared:
    """A manifest and arrays made already, in the shape :func:`lepton_nn.save` takes."""

    def __init__(self, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
        self.manifest, self.arrays = manifest, arrays

    def to_lnn(self) -> tuple[dict, dict[str, np.ndarray]]:
        return self.manifest, self.arrays


def load_compressed(manifest: dict, arrays: dict) -> Module:
    """Loader of ``"compressed"`` files for :func:`lepton_nn.load`: the float model, with
    int8 weights dequantized (W = (q_w s_w)^T) and CSR weights made dense."""
    from ..io import module_from_lnn

    section, full = decompress(manifest.get("model"), arrays)
    return module_from_lnn(section, full)


def load_quantized(path: str | os.PathLike[str] | bytes) -> QuantizedModel:
    """Read a compressed file back as a :class:`QuantizedModel` (its int8 layers exactly)."""
    from ..runtime.format import read_lnn

    manifest, arrays = read_lnn(path)
    if manifest.get("kind") != "compressed":
        raise ModelFormatError(f"not a compressed model file (kind {manifest.get('kind')!r})")
    _, qm = network_from_lnn(manifest.get("model"), arrays)
    if qm is None:
        raise LeptonError(f"{path!r} holds no int8 layers")
    return qm


def network_from_lnn(section: Any, arrays: dict) -> tuple[Module, QuantizedModel | None]:
    """A network section with a ``compression`` value -> (float model, its int8 wrapper).

    The float model has int8 weights dequantized and CSR weights made dense (what
    :func:`lepton_nn.load` gives); the :class:`QuantizedModel` (None when no layer is int8)
    computes its int8 layers exactly as they were saved, with the runtime's kernels.
    """
    from ..io import module_from_lnn

    plain, full = decompress(section, arrays)
    model = module_from_lnn(plain, full)
    weights = parse_compression(section, arrays)
    by_path = dict(_quant_layers(model))
    layers: dict[str, QuantizedLayer | QuantizedRecurrent] = {}
    mode = "dynamic"
    recurrent: dict[str, dict[str, Int8Weight]] = {}
    for w in weights.values():
        if not isinstance(w, Int8Weight):
            continue
        m = by_path.get(w.layer)
        if isinstance(m, RECURRENT) and w.conv_shape is None:
            recurrent.setdefault(w.layer, {})[w.param.rpartition(".")[2]] = w
            continue
        if m is None or isinstance(m, Conv2D) != (w.conv_shape is not None):
            raise ModelFormatError(
                f"compressed weight {w.param!r} belongs to no Dense, Conv2D or recurrent layer "
                "of its shape"
            )
        act = w.meta.get("activations", {})
        mode = w.act_mode
        layers[w.layer] = QuantizedLayer(
            w.layer,
            m.name,
            w.q,
            w.scale,
            None if m.bias is None else np.asarray(m.bias.data, np.float32),
            m.activation,
            w.act_mode,
            w.act_scale,
            w.act_zero_point,
            act.get("method"),
            act.get("percentile"),
            w.meta.get("error"),
            w.conv_shape,
            m.get_config() if isinstance(m, Conv2D) else None,
        )
    for path, ws in recurrent.items():
        m = by_path[path]
        qr = QuantizedRecurrent.of(path, m, "dynamic", True)
        if set(ws) != set(qr.mats):
            raise ModelFormatError(
                f"layer {m.name!r}: int8 needs all of {sorted(qr.mats)}, the file has {sorted(ws)}"
            )
        qr.mats = {a: (w.q, w.scale) for a, w in ws.items()}
        ih = ws["weight_ih"]
        qr.mode, qr.act_scale, qr.act_zero_point = ih.act_mode, ih.act_scale, ih.act_zero_point
        qr.method = ih.meta.get("activations", {}).get("method")
        qr.percentile = ih.meta.get("activations", {}).get("percentile")
        qr.error = ih.meta.get("error")
        mode = ih.act_mode
        layers[path] = qr
    if not layers:
        return model, None
    report = [
        {
            "layer": p,
            "name": m.name,
            "shape": [int(d) for d in _weights_of(m)[0][1].shape],
            "int8": p in layers,
            "error": layers[p].error if p in layers else None,
            "reason": "" if p in layers else "float in file",
        }
        for p, m in by_path.items()
    ]
    return model, QuantizedModel(model, layers, report, mode)
