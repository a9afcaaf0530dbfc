"""Reusable scratch arrays for values that never leave one op call.

A fresh multi-megabyte NumPy array is served by glibc with new pages that fault in on first
touch (~0.5-1 us per 4 KiB page): for an LSTM or a convolution that is as much time as the
arithmetic. Scratch buffers (the im2col matrix, per-step gate gradients, ...) are therefore
kept per thread, by name, and handed out as views of the needed shape. Never return one from
an op or save it for backward: the next call of the same op overwrites it.
"""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def workspace(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous array of ``shape`` and ``dtype`` (uninitialized) reused across calls."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    dtype = np.dtype(dtype)
    n = 1
    for d in shape:
        n *= d
    key = (name, dtype)
    buf = bufs.get(key)
    if buf is None or buf.size < n:
        buf = bufs[key] = np.empty(max(n, 1), dtype)
    return buf[:n].reshape(shape)


def release() -> None:
    """Free this thread's scratch arrays (they are re-created on the next use)."""
    _local.bufs = {}
