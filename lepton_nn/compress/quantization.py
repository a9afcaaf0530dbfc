"""int8 post-training quantization of Dense, Conv2D and recurrent layers, as a wrapper around
a float model.

``quantize(model, calibration_data)`` leaves ``model`` untouched and returns a
:class:`QuantizedModel` running some of its layers in int8: weights symmetric int8 per output
channel, activations uint8, per row (dynamic) or calibrated per layer (static).

- the math and the int8 layers: :mod:`.quantized_layers`;
- the wrapper that runs them inside the float model: :mod:`.quantized_model`;
- calibration of static activations and the per-layer errors: :mod:`.calibration`;
- the ``"compressed"`` file: :mod:`.files`;
- here: :func:`quantize`, which picks the layers, calibrates, quantizes and fits a budget.

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

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..errors import LeptonError
from ..nn.conv import Conv2D
from ..nn.layers import Dense
from ..nn.module import Module
from .calibration import _calibrate, _relative_error
from .quantized_layers import (
    RECURRENT,
    QuantizedLayer,
    QuantizedRecurrent,
    _as_array,
    _quant_layers,
    _weights_of,
    activation_params,
    quantize_weight,
)
from .quantized_model import QuantizedModel

__all__ = ["quantize"]

MODES = ("dynamic", "static")
METHODS = ("minmax", "percentile")


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
