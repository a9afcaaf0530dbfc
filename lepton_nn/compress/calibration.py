"""Calibration for static int8 activations: stream data through the float model, collect each
quantized layer's input range (min/max, or a reservoir of values for percentiles) and a few
(input, output) pairs, on which each int8 layer's relative output error is measured."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ..autograd import no_grad
from ..nn.layers import Dense
from ..nn.module import Module
from .quantized_layers import QuantizedLayer, _as_array

CALIBRATION_BATCH = 256
ERROR_ROWS = 2048  # rows of calibration data the per-layer error is measured on
RESERVOIR = 1 << 20  # activation values kept per layer for percentiles


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
