"""Shared by the examples: quantize a trained network and serve the int8 file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import lepton_nn as ln
from lepton_nn import runtime
from lepton_nn.compress import quantize


def serve_int8(model, calibration: np.ndarray, x_te, y_te, mode: str) -> float:
    """Quantize ``model`` (``mode``: "static" or "dynamic", calibrated on ``calibration``),
    save the float and the int8 file, serve the int8 one with the runtime and print its test
    accuracy and both sizes. Returns that accuracy."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "model.lnn", Path(tmp) / "model_int8.lnn"
        ln.save(model, fp32)
        ln.save(quantize(model, calibration, mode), int8)
        acc = float((runtime.load(int8).predict(x_te).argmax(axis=1) == y_te).mean())
        sizes = f"{fp32.stat().st_size / 1024:.1f} kB -> {int8.stat().st_size / 1024:.1f} kB"
    print(f"int8 ({mode}) served by the runtime: test accuracy {acc:.4f}; file {sizes}")
    return acc
