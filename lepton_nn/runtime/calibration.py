"""A calibration map applied to a tabular classifier's logits (manifest ``"calibration"``).

Fitted by :func:`lepton_nn.risk.calibrate` on held-out rows; applied here, in NumPy, by both
loaders (``TabularModel`` and the runtime's ``InferenceModel``) so their probabilities agree.
With z the network's logit (binary) or logits (multiclass)::

    {"method": "platt", "a": a, "b": b}          p = 1 / (1 + exp(-(a z + b)))     binary
    {"method": "temperature", "t": T}            p = sigmoid(z / T) | softmax(z / T)
    {"method": "isotonic", "x": [...], "y": [...]}
        p = linear interpolation of the points (x_i, y_i) at z, constant beyond the ends
        (x strictly increasing, y non-decreasing in [0, 1]; binary)

:func:`parse_calibration` checks an untrusted section (type and range of every field) and
is called by the one validator (:mod:`.validate`), so a file one loader accepts the other
does too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lepton_nn.errors import ModelFormatError

__all__ = ["METHODS", "MAX_POINTS", "Calibration", "parse_calibration"]

METHODS = ("platt", "temperature", "isotonic")
MAX_POINTS = 100_000  # isotonic knots
_MAX_SLOPE = 1e6


def _num(v: Any, what: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ModelFormatError(f"calibration: {what} must be a number, got {v!r:.60}")
    try:
        x = float(v)
    except OverflowError:
        raise ModelFormatError(f"calibration: {what} is out of range") from None
    if not (math.isfinite(x) and lo <= x <= hi):
        raise ModelFormatError(f"calibration: {what} must be finite in [{lo}, {hi}], got {v!r:.60}")
    return x


class Calibration:
    """A checked calibration map; :meth:`apply` turns logits into calibrated probabilities."""

    def __init__(self, method: str, params: dict[str, Any]) -> None:
        self.method, self.params = method, params

    def apply(self, z: np.ndarray) -> np.ndarray:
        """Logits (N,) binary or (N, C) -> P(positive) (N,) float64, or (N, C) probabilities."""
        z = np.asarray(z, dtype=np.float64)
        m, p = self.method, self.params
        if m == "platt":
            return _sigmoid(p["a"] * z + p["b"])
        if m == "isotonic":
            return np.interp(z, p["x"], p["y"])
        if z.ndim == 1:  # temperature
            return _sigmoid(z / p["t"])
        s = z / p["t"]
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def of_outputs(self, out: np.ndarray, probabilities: bool) -> np.ndarray:
        """Calibrated probabilities (N, C) from a network's outputs (N, 1 | C): its logits,
        or its probabilities when ``probabilities`` (its last layer is a sigmoid/softmax)."""
        z = out.astype(np.float64)
        if z.shape[1] == 2 and self.method != "temperature":  # a binary softmax: one logit
            z = z[:, 1:] - z[:, :1] if not probabilities else z[:, 1:]
        if probabilities:  # back to logits (binary) / log-probabilities (softmax)
            with np.errstate(divide="ignore"):
                z = np.log(z) - np.log1p(-z) if z.shape[1] == 1 else np.log(z)
        if z.shape[1] == 1:
            p = self.apply(z[:, 0])
            return np.stack([1 - p, p], axis=1)
        return self.apply(z)

    def to_config(self) -> dict:
        p = self.params
        if self.method == "isotonic":
            return {"method": "isotonic", "x": p["x"].tolist(), "y": p["y"].tolist()}
        return {"method": self.method, **p}


def _sigmoid(s: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-s))


def parse_calibration(section: Any, task: str) -> Calibration:
    """Check an untrusted ``calibration`` section for a ``task`` model; ModelFormatError."""
    if not isinstance(section, dict):
        raise ModelFormatError("calibration section must be an object")
    method = section.get("method")
    if method not in METHODS:
        raise ModelFormatError(f"calibration: method {method!r:.40} is not one of {METHODS}")
    if task == "regression":
        raise ModelFormatError("calibration: a regression model has no probabilities")
    keys = {"platt": {"a", "b"}, "temperature": {"t"}, "isotonic": {"x", "y"}}[method]
    if set(section) != keys | {"method"}:
        raise ModelFormatError(f"calibration: {method} takes exactly the fields {sorted(keys)}")
    if method != "temperature" and task != "binary":
        raise ModelFormatError(f"calibration: {method} is for binary models (task {task!r})")
    if method == "platt":
        a = _num(section["a"], "a", 0.0, _MAX_SLOPE)  # a > 0 keeps the score's order
        if a == 0.0:
            raise ModelFormatError("calibration: a must be > 0")
        return Calibration(method, {"a": a, "b": _num(section["b"], "b", -1e6, 1e6)})
    if method == "temperature":
        return Calibration(method, {"t": _num(section["t"], "t", 1e-6, 1e6)})
    x, y = section["x"], section["y"]
    if not (isinstance(x, list) and isinstance(y, list) and 1 <= len(x) == len(y) <= MAX_POINTS):
        raise ModelFormatError(f"calibration: x and y must be lists of 1..{MAX_POINTS} equal")
    xs = np.array([_num(v, "x") for v in x], dtype=np.float64)
    ys = np.array([_num(v, "y", 0.0, 1.0) for v in y], dtype=np.float64)
    if np.any(np.diff(xs) <= 0) or np.any(np.diff(ys) < 0):
        raise ModelFormatError("calibration: x must increase strictly and y must not decrease")
    return Calibration(method, {"x": xs, "y": ys})
