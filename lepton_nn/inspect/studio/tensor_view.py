"""Tensors as small JSON documents for the page: cheap histograms, and a tensor in full when
it is small, else as a heat map (block means) and a histogram.

- :func:`histogram`: ``{"counts", "edges"}`` of ``bins`` equal bins over [min, max] of at
  most ``sample`` values taken at an even stride (a view of contiguous data: no copy of the
  whole tensor), so a recorded batch costs O(sample) per tensor, not O(size), beyond the
  strided read;
- :func:`heat`: a 2-D array shrunk to at most ``rows`` x ``cols`` cells, each the mean of its
  block (``np.add.reduceat`` on both axes);
- :func:`tensor_view`: shape, norm, min, max, mean, histogram, and ``values`` (nested lists,
  when ``size <= max_full``) or ``heat`` (the tensor read as (first axis, the rest)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["HIST_BINS", "MAX_FULL", "histogram", "heat", "sample_of", "summary", "tensor_view"]

HIST_BINS = 16
HIST_SAMPLE = 4096
MAX_FULL = 64  # a tensor this small is sent in full


def sample_of(a: np.ndarray, sample: int = HIST_SAMPLE) -> np.ndarray:
    """At most ``sample`` values of ``a``, flat (a view of contiguous data): every s-th,
    s the smallest stride >= ceil(size / sample) that shares no factor with the row length
    r = size / len(a). Index k s then visits every position of a row (unit, channel, pixel)
    evenly, where a stride sharing a factor with r sees a few columns only (a (64, 128)
    tensor by stride 2: the even units)."""
    a = np.asarray(a)
    flat = a.reshape(-1)
    n = flat.size
    if n <= sample:
        return flat
    step = -(-n // sample)
    row = n // a.shape[0] if a.ndim > 1 and a.shape[0] else n
    while math.gcd(step, row) != 1:
        step += 1
    return flat[::step]


def histogram(a: Any, bins: int = HIST_BINS, sample: int = HIST_SAMPLE) -> dict | None:
    """Counts and edges of ``bins`` equal bins over the finite values of a sample of ``a``
    (:func:`sample_of`; None when it has none). A constant sample gets the bins of
    [v - 0.5, v + 0.5]."""
    v = sample_of(a, sample)
    if not v.size:
        return None
    lo, hi = float(v.min()), float(v.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        v = v[np.isfinite(v)]
        if not v.size:
            return None
        lo, hi = float(v.min()), float(v.max())
    return _bins(v.astype(np.float64), lo, hi, bins)


def _bins(z: np.ndarray, lo: float, hi: float, bins: int) -> dict:
    """The histogram of float64 ``z`` (overwritten) with finite ``lo`` = min, ``hi`` = max."""
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    # bin k holds lo + k w <= v < lo + (k + 1) w, the last one closed (as np.histogram's),
    # by one subtraction, scaling and bincount: a few NumPy calls, ~15 us on 1000 values
    width = (hi - lo) / bins
    z -= lo
    z *= 1.0 / width
    idx = z.astype(np.intp)
    np.minimum(idx, bins - 1, out=idx)  # v >= lo: idx >= 0; v = hi: into the last bin
    edges = [lo + width * k for k in range(bins)] + [hi]
    return {"counts": np.bincount(idx, minlength=bins).tolist(), "edges": edges}


def summary(a: Any, bins: int = HIST_BINS, sample: int = HIST_SAMPLE) -> dict:
    """``{"mean", "std", "hist"}`` of a sample v of ``a`` (:func:`sample_of`) and ``"norm"`` =
    ||a||, in about ten NumPy calls: one float64 copy of v gives sum v, v.v (std = sqrt(v.v / n -
    mean^2)), min and max, then the bins in place. None for what is not finite; the
    histogram counts the finite values."""
    a = np.asarray(a)
    flat = a.reshape(-1)
    v = sample_of(a, sample)
    if not v.size:
        return {"mean": None, "std": None, "norm": 0.0, "hist": None}
    z = v.astype(np.float64)
    n, total, sq = z.size, float(z.sum()), float(np.dot(z, z))
    lo, hi = float(z.min()), float(z.max())
    norm = math.sqrt(sq) if v.size == flat.size else math.sqrt(float(np.dot(flat, flat)))
    mean = total / n
    std = math.sqrt(max(sq / n - mean * mean, 0.0)) if math.isfinite(sq) else math.nan
    if not (math.isfinite(lo) and math.isfinite(hi)):
        z = z[np.isfinite(z)]
        lo, hi = (float(z.min()), float(z.max())) if z.size else (math.nan, math.nan)
    return {
        "mean": _num(mean),
        "std": _num(std),
        "norm": _num(norm),
        "hist": _bins(z, lo, hi, bins) if z.size else None,
    }


def _blocks(n: int, k: int) -> np.ndarray:
    """Start indices of min(n, k) nearly equal blocks of range(n)."""
    return np.unique(np.linspace(0, n, min(n, k) + 1).astype(np.intp)[:-1])


def heat(a2: np.ndarray, rows: int = 48, cols: int = 64) -> dict:
    """``{"rows", "cols", "values" (row-major, block means), "lo", "hi", "shape"}``."""
    a2 = np.asarray(a2, np.float64)
    r, c = _blocks(a2.shape[0], rows), _blocks(a2.shape[1], cols)
    sums = np.add.reduceat(np.add.reduceat(a2, r, axis=0), c, axis=1)
    sizes = np.outer(np.diff(np.append(r, a2.shape[0])), np.diff(np.append(c, a2.shape[1])))
    cells = sums / sizes
    finite = cells[np.isfinite(cells)]
    return {
        "rows": int(cells.shape[0]),
        "cols": int(cells.shape[1]),
        "values": [_num(v) for v in cells.ravel()],
        "lo": float(finite.min()) if finite.size else 0.0,
        "hi": float(finite.max()) if finite.size else 0.0,
        "shape": [int(n) for n in a2.shape],
    }


def tensor_view(a: Any, max_full: int = MAX_FULL) -> dict:
    """A tensor for the node panel: statistics, histogram, and values in full or a heat map."""
    a = np.asarray(a)
    f = a.astype(np.float64, copy=False)
    finite = f[np.isfinite(f)] if f.size else f
    doc: dict[str, Any] = {
        "shape": [int(n) for n in a.shape],
        "size": int(a.size),
        "norm": float(np.linalg.norm(finite)) if finite.size else None,
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "mean": float(finite.mean()) if finite.size else None,
        "hist": histogram(f) if a.size else None,
        "values": None,
        "heat": None,
    }
    if a.size <= max_full:
        doc["values"] = np.vectorize(_num, otypes=[object])(f).tolist() if a.ndim else _num(f)
    else:
        doc["heat"] = heat(f.reshape(f.shape[0], -1) if f.ndim >= 2 else f.reshape(1, -1))
    return doc


def _num(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None
