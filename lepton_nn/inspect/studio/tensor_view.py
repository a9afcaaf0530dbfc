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

__all__ = ["HIST_BINS", "MAX_FULL", "histogram", "heat", "sample_of", "tensor_view"]

HIST_BINS = 16
HIST_SAMPLE = 4096
MAX_FULL = 64  # a tensor this small is sent in full


def sample_of(a: np.ndarray, sample: int = HIST_SAMPLE) -> np.ndarray:
    """At most ``sample`` values of ``a`` at an even stride, flat."""
    flat = np.asarray(a).reshape(-1)  # a view for contiguous data
    if flat.size > sample:
        flat = flat[:: -(-flat.size // sample)]
    return flat


def histogram(a: Any, bins: int = HIST_BINS, sample: int = HIST_SAMPLE) -> dict | None:
    """Counts and edges of ``bins`` equal bins over the finite values of an even sample of
    ``a`` (None when it has none). A constant sample gets the bins of [v - 0.5, v + 0.5]."""
    v = sample_of(a, sample)
    if not v.size:
        return None
    lo, hi = float(v.min()), float(v.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        v = v[np.isfinite(v)]
        if not v.size:
            return None
        lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    # bin k holds lo + k w <= v < lo + (k + 1) w, the last one closed (as np.histogram's),
    # by one subtraction, scaling and bincount: about 8 NumPy calls, ~20 us on 1000 values
    width = (hi - lo) / bins
    z = v.astype(np.float64)  # a copy, scaled in place
    z -= lo
    z *= 1.0 / width
    idx = z.astype(np.intp)
    np.minimum(idx, bins - 1, out=idx)  # v >= lo: idx >= 0; v = hi: into the last bin
    edges = [lo + width * k for k in range(bins)] + [hi]
    return {"counts": np.bincount(idx, minlength=bins).tolist(), "edges": edges}


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
