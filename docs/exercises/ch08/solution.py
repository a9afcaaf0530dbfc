"""Chapter 8, reference solution: pruning masks and int8 arithmetic."""

from __future__ import annotations

import numpy as np


def magnitude_mask(w, sparsity):
    """False at exactly round(sparsity * w.size) entries of least |w|, True elsewhere."""
    k = round(sparsity * w.size)  # how many to drop
    keep = np.ones(w.size, bool)
    keep[np.argsort(np.abs(w), axis=None, kind="stable")[:k]] = False
    return keep.reshape(w.shape)


def global_masks(weights, sparsity):
    """One ranking over all the arrays: the same, with the arrays laid end to end."""
    names = list(weights)
    flat = np.concatenate([np.ravel(weights[n]) for n in names])
    keep = magnitude_mask(flat, sparsity)
    parts = np.split(keep, np.cumsum([np.size(weights[n]) for n in names])[:-1])
    return {n: p.reshape(np.shape(weights[n])) for n, p in zip(names, parts)}


def quantize_symmetric(a, axis=None):
    """Symmetric int8 with one scale (axis None) or one per slice along ``axis``."""
    peak = np.abs(a).max(axis=axis, keepdims=axis is not None)
    scale = np.where(peak > 0, peak / 127, 1.0)
    return np.round(a / scale).astype(np.int8), scale


def int8_matmul(qa, qb):
    """Exact: widen to int32 before multiplying (int8 * int8 needs 15 bits, a sum more)."""
    return qa.astype(np.int32) @ qb.astype(np.int32)


def quantized_linear(x, W, b):
    """x W + b through int8: x ~ s_x q_x, W ~ q_W s_W, so x W ~ s_x (q_x q_W) s_W."""
    qx, sx = quantize_symmetric(x, axis=1)  # (M, 1)
    qw, sw = quantize_symmetric(W, axis=0)  # (1, N)
    return int8_matmul(qx, qw) * sx * sw + b
