"""Reusable memory for large arrays: scratch that never leaves one op call, and recycled outputs.

A fresh multi-megabyte NumPy array is served by glibc with new pages that fault in on first
touch (~0.5-2 us per 4 KiB page): for an LSTM or a convolution that is as much time as the
arithmetic (W3, the CNN benchmark: ~15 MB of fresh arrays per training step cost ~7 ms).

- ``workspace(name, shape, dtype)``: scratch kept per thread, by name, handed out as a view
  of the needed shape (the im2col matrix, per-step gate gradients, ...). Never return one from
  an op or save it for backward: the next call of the same op overwrites it.
- ``recycled(shape, dtype)``: an array an op may return or save (a layer's output, a
  gradient, a pooling argmax). It is a kept array of that shape that nothing references any
  more (its reference count says only this pool holds it: no Tensor, no view, no caller), or
  a new one that the pool then keeps. Arrays of the previous training step come back this
  way at the next step, their pages already mapped. Small arrays are just ``np.empty``.

The pool holds at most ``_KEEP_PER_SHAPE`` arrays of each (shape, dtype) and ``_KEEP_BYTES``
in all (least recently used shapes dropped first); ``release()`` frees this thread's arrays.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict

import numpy as np

_local = threading.local()

_MIN_BYTES = 1 << 18  # below 256 KiB glibc serves arrays from its heap: no faults to save
_KEEP_PER_SHAPE = 6
_KEEP_BYTES = 256 << 20
# sys.getrefcount of a pooled array nobody else holds: the pool's list, the loop variable
# and getrefcount's own argument
_FREE_REFS = 3


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


def recycled(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous array of ``shape`` and ``dtype`` (uninitialized) that the caller owns:
    it may be returned, saved or handed to the user; its memory is reused only once nothing
    references it any more."""
    dtype = np.dtype(dtype)
    n = dtype.itemsize
    for d in shape:
        n *= d
    if n < _MIN_BYTES:
        return np.empty(shape, dtype)
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = OrderedDict()
        _local.pool_bytes = 0
    key = (tuple(shape), dtype)
    kept = pool.get(key)
    if kept is None:
        kept = pool[key] = []
    else:
        pool.move_to_end(key)
        for a in kept:
            if sys.getrefcount(a) <= _FREE_REFS:
                return a
    a = np.empty(shape, dtype)
    if len(kept) < _KEEP_PER_SHAPE:
        kept.append(a)
        _local.pool_bytes += n
        while _local.pool_bytes > _KEEP_BYTES and len(pool) > 1:  # drop the oldest shapes
            (old_shape, old_dtype), old = pool.popitem(last=False)
            _local.pool_bytes -= len(old) * _nbytes(old_shape, old_dtype)
    return a


def _nbytes(shape, dtype) -> int:
    n = dtype.itemsize
    for d in shape:
        n *= d
    return n


def release() -> None:
    """Free this thread's scratch and recycled arrays (arrays still in use stay valid)."""
    _local.bufs = {}
    _local.pool = OrderedDict()
    _local.pool_bytes = 0
