"""The live events' statistics of every layer at once: a fixed number of NumPy calls per
recorded batch, however many layers (a call per tensor per statistic cost more than a small
network's whole batch).

- :func:`summaries`: for k tensors a_1..a_k, the sample v_i of each (at most ``sample``
  values, :func:`.tensor_view.sample_of`) packed into one float64 buffer; then one
  ``np.add.reduceat`` each gives sum v_i and v_i . v_i (mean = sum / n, std = sqrt(v.v / n -
  mean^2)), ``np.minimum/maximum.reduceat`` min and max, and one ``np.bincount`` over
  ``bin + i * bins`` (bin = floor((v - lo_i) / w_i), w_i = (hi_i - lo_i) / bins, the last bin
  closed) the ``bins`` equal-bin counts of all k histograms. ``norm`` = ||a_i|| (from the
  sample when it is the whole tensor, else a dot over a_i). A sample with a NaN or an infinity
  (rare) goes through :func:`.tensor_view.summary`, whose definitions these are, alone.
- :class:`ParamNorms`: the layers' parameters packed into one float64 buffer before and after
  the optimizer step; one ``np.add.reduceat`` per norm gives each layer's ||W||, ||dL/dW|| and
  ||W_after - W_before|| / ||W_before||.

Mean, std, min, max and the bins describe the sample, exact for a tensor of at most
``HIST_SAMPLE`` = 4096 values (every hidden layer of a batch of 32 x 128 units). A larger
tensor is sampled at an even stride coprime with its row length (:func:`spread_sample`,
so every unit is seen alike), and its mean, std and bin shares are estimates with the
sampling error of its n sampled values (n = ceil(size / stride): 4096 down to a third of that
just above 4096 values): for values that vary independently along the stride,
|mean_sample - mean| has a standard error sigma / sqrt(n) (sigma / 64 at n = 4096), std
about sigma / sqrt(2 n), a bin share p about sqrt(p (1 - p) / n); the tests hold them to 4
of those. The norms are always exact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .tensor_view import HIST_BINS, HIST_SAMPLE, sample_of, summary

spread_sample = sample_of  # (the name the session and tests use)

__all__ = ["ParamNorms", "spread_sample", "summaries"]

_SEG_CACHE: dict[tuple[int, int], Any] = {}


def _segments(sizes: tuple[int, ...], bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For segments of ``sizes``: their start offsets, and per element ``i * bins`` (float)
    and ``i * bins + bins - 1`` (the segment's first and last bin in the packed counts).
    Kept: a run records the same shapes each time."""
    got = _SEG_CACHE.get((sizes, bins))
    if got is None:
        n = np.asarray(sizes, np.intp)
        seg = np.repeat(np.arange(len(n), dtype=np.intp) * bins, n)
        got = (np.cumsum(n) - n, seg.astype(np.float64), seg + (bins - 1))
        if len(_SEG_CACHE) > 64:
            _SEG_CACHE.clear()
        _SEG_CACHE[(sizes, bins)] = got
    return got


def summaries(
    arrays: list[np.ndarray], bins: int = HIST_BINS, sample: int = HIST_SAMPLE
) -> list[dict[str, Any]]:
    """``{"mean", "std", "norm", "hist": {"counts", "lo", "hi"}}`` of each array (the
    values of :func:`.tensor_view.summary`, the bins' edges given by the first and last),
    in about twenty NumPy calls for all of them."""
    flats = [np.asarray(a).reshape(-1) for a in arrays]
    samples = [sample_of(f, sample) for f in flats]
    keep = [i for i, v in enumerate(samples) if v.size]
    out: list[Any] = [None] * len(flats)
    for i in range(len(flats)):
        if not samples[i].size:
            out[i] = _single(flats[i], bins, sample)
    if not keep:
        return out
    sizes = tuple(samples[i].size for i in keep)
    starts, first_bin, last_bin = _segments(sizes, bins)
    buf = np.concatenate([samples[i] for i in keep], dtype=np.float64)
    n = np.asarray(sizes, np.float64)
    mean = np.add.reduceat(buf, starts) / n
    sq = np.add.reduceat(buf * buf, starts)
    lo = np.minimum.reduceat(buf, starts)
    hi = np.maximum.reduceat(buf, starts)
    finite = (np.isfinite(lo) & np.isfinite(hi) & np.isfinite(sq)).tolist()
    if not all(finite):  # (rare) those one by one, the others packed again
        good = [i for i, ok in zip(keep, finite) if ok]
        for i, ok in zip(keep, finite):
            if not ok:
                out[i] = _single(flats[i], bins, sample)
        for i, s in zip(good, summaries([flats[i] for i in good], bins, sample)):
            out[i] = s
        return out
    # a constant sample gets the bins of [v - 0.5, v + 0.5], as tensor_view's histograms
    same = lo == hi
    lo_b = np.where(same, lo - 0.5, lo)
    hi_b = np.where(same, hi + 0.5, hi)
    width = (hi_b - lo_b) / bins
    # bin = floor((v - lo) / w), v = hi into the last one; offset by the segment's first bin
    z = buf - np.repeat(lo_b, sizes)
    z *= np.repeat(1.0 / width, sizes)
    z += first_bin
    idx = z.astype(np.intp)
    np.minimum(idx, last_bin, out=idx)
    counts = np.bincount(idx, minlength=len(keep) * bins).reshape(len(keep), bins).tolist()
    std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0)).tolist()
    norms, mean, los, his = np.sqrt(sq).tolist(), mean.tolist(), lo_b.tolist(), hi_b.tolist()
    for j, i in enumerate(keep):
        norm = norms[j] if sizes[j] == flats[i].size else _dot_norm(flats[i])
        hist = {"counts": counts[j], "lo": los[j], "hi": his[j]}
        out[i] = {"mean": mean[j], "std": std[j], "norm": norm, "hist": _compact(hist)}
    return out


def _single(a: np.ndarray, bins: int, sample: int) -> dict:
    s = summary(a, bins, sample)
    s["hist"] = _compact(s["hist"])
    return s


def _compact(hist: dict | None) -> dict | None:
    """``{"counts", "lo", "hi"}``: equal bins need no list of edges (edge k = lo + k (hi -
    lo) / bins), a third of an event's JSON."""
    if hist is None or "edges" not in hist:
        return hist
    return {"counts": hist["counts"], "lo": hist["edges"][0], "hi": hist["edges"][-1]}


def _dot_norm(flat: np.ndarray) -> float | None:
    v = math.sqrt(float(np.dot(flat, flat)))
    return v if math.isfinite(v) else None


class ParamNorms:
    """Per layer (a list of parameter lists, one per layer with parameters): ||W||,
    ||dL/dW|| and the update ratio ||W_after - W_before|| / ||W_before|| of one optimizer
    step, each over all the layer's parameters, in float64. :meth:`before` copies the
    weights (one packed copy), :meth:`after` answers."""

    def __init__(self, layers: list[list[Any]]) -> None:
        self.layers = layers
        sizes = [sum(p.data.size for p in ps) for ps in layers]
        self.full = [j for j, s in enumerate(sizes) if s]  # (a reduceat segment is not empty)
        self.params = [p for j in self.full for p in layers[j]]
        self.starts = np.cumsum([0] + [sizes[j] for j in self.full][:-1]).astype(np.intp)
        self.old: np.ndarray | None = None

    def _pack(self, arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([a.reshape(-1) for a in arrays], dtype=np.float64)

    def before(self) -> None:
        self.old = self._pack([p.data for p in self.params]) if self.params else None

    def after(self) -> list[dict[str, float | None]]:
        """``{"weight_norm", "weight_grad_norm", "update_ratio"}`` per layer (None where
        undefined: no gradient, or a zero W_before); needs :meth:`before` first."""
        rows: list[dict[str, float | None]] = [
            {"weight_norm": 0.0, "weight_grad_norm": None, "update_ratio": None}
            for _ in self.layers
        ]
        if self.old is None:
            return rows
        ps = self.params
        new = self._pack([p.data for p in ps])
        grads = self._pack([np.zeros(p.data.shape) if p.grad is None else p.grad for p in ps])
        d = new - self.old
        w2 = np.add.reduceat(new * new, self.starts)
        b2 = np.add.reduceat(self.old * self.old, self.starts)
        g2 = np.add.reduceat(grads * grads, self.starts)
        d2 = np.add.reduceat(d * d, self.starts)
        self.old = None
        w, b, g, du = (np.sqrt(v).tolist() for v in (w2, b2, g2, d2))
        for k, j in enumerate(self.full):
            has_grad = any(p.grad is not None for p in self.layers[j])
            rows[j] = {
                "weight_norm": _fin(w[k]),
                "weight_grad_norm": _fin(g[k]) if has_grad else None,
                "update_ratio": _fin(du[k] / b[k]) if b[k] > 0 else None,
            }
        return rows


def _fin(v: float) -> float | None:
    return v if math.isfinite(v) else None
