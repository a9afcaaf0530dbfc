"""Constants and helpers shared by the NumPy twins (``reference_*.py``): activation codes,
the gelu approximation's constants, gate blocks per recurrent cell, a stable sigmoid, and
the chunk claiming of the conv and int8 conv twins."""

from __future__ import annotations

import threading

import numpy as np

ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "gelu")
ACT_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}
IDENTITY, RELU, SIGMOID, TANH, GELU = range(5)

# gelu uses the tanh approximation: 0.5 z (1 + tanh(c (z + 0.044715 z^3))), c = sqrt(2/pi)
GELU_C = 0.7978845608028654
GELU_A = 0.044715
# gate blocks per recurrent cell (LSTM i, f, g, o; GRU z, r, n; SimpleRNN one)
_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


def zeros_aligned(size: int) -> np.ndarray:
    """``size`` float32 zeros starting on a 64-byte boundary (np.zeros aligns to 16 bytes
    only): vectors of 8 or 16 floats at multiples of 8 from the start never straddle a cache
    line, wherever malloc put the block."""
    raw = np.zeros(size + 16, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip : skip + size]


def _sigmoid(z):
    # stable for large |z|: exp only of non-positive numbers
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def _along_axis1(bias, z):
    """bias (M,) shaped to broadcast along axis 1 of z: (M,) for (N, M), (M, 1) for (N, M, P)."""
    return bias[:, None] if z.ndim == 3 else bias


_claim_lock = threading.Lock()


def _claimed(counter, step, n):
    """(i, n0, n1) for each chunk of ``step`` of n images this caller claims: i = counter[0],
    then counter[0] += 1 (under a lock; the compiled twins increment it atomically)."""
    while True:
        with _claim_lock:
            i = int(counter[0])
            counter[0] = i + 1
        if i * step >= n:
            return
        yield i, i * step, min(n, (i + 1) * step)
