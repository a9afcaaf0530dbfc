"""Chapter 8 exercises: pruning masks and int8 arithmetic.

Fill in every function, then run ``pytest docs/exercises/ch08``.
"""

from __future__ import annotations

import numpy as np  # noqa: F401


def magnitude_mask(w, sparsity):
    """Boolean mask of w's shape: False at exactly round(sparsity * w.size) entries of least
    |w| (the pruned ones), True elsewhere."""
    raise NotImplementedError("exercise 8.1: magnitude_mask")


def global_masks(weights, sparsity):
    """One ranking over all the arrays of the dict ``weights`` (name -> array): exactly
    round(sparsity * total size) entries of least |w| are pruned, wherever they are.
    Returns name -> mask."""
    raise NotImplementedError("exercise 8.2: global_masks")


def quantize_symmetric(a, axis=None):
    """Symmetric int8: scale = max |a| / 127 (over everything when axis is None, else one per
    slice along ``axis``, kept as a size-1 axis so it broadcasts against a; 1 where max |a|
    is 0) and q = round(a / scale) as int8. Returns (q, scale)."""
    raise NotImplementedError("exercise 8.3: quantize_symmetric")


def int8_matmul(qa, qb):
    """qa int8 (M, K) @ qb int8 (K, N), exactly, as int32 (M, N). Mind the dtype: a product of
    two int8 values does not fit in int8."""
    raise NotImplementedError("exercise 8.4: int8_matmul")


def quantized_linear(x, W, b):
    """x (M, K) W (K, N) + b in int8: quantize x with one scale per row and W with one per
    output column, multiply the integers exactly, then scale back and add b (float)."""
    raise NotImplementedError("exercise 8.5: quantized_linear")
