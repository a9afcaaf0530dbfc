"""Chapter 3, reference solution: a Dense layer y = f(x W + b), forward and backward."""

from __future__ import annotations

import numpy as np

ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "gelu")
GELU_C, GELU_A = 0.7978845608028654, 0.044715


def _f(z, act):
    if act == "identity":
        return z
    if act == "relu":
        return np.maximum(z, 0.0)
    if act == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if act == "tanh":
        return np.tanh(z)
    if act == "gelu":
        return 0.5 * z * (1 + np.tanh(GELU_C * (z + GELU_A * z**3)))
    raise ValueError(f"unknown activation {act!r}")


def _df(z, act):
    """f'(z), elementwise."""
    if act == "identity":
        return np.ones_like(z)
    if act == "relu":
        return (z > 0).astype(z.dtype)
    if act == "sigmoid":
        s = _f(z, act)
        return s * (1 - s)
    if act == "tanh":
        return 1 - np.tanh(z) ** 2
    if act == "gelu":  # product rule on 0.5 z (1 + t), t = tanh(u), u = c (z + a z^3)
        t = np.tanh(GELU_C * (z + GELU_A * z**3))
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * z * z)
    raise ValueError(f"unknown activation {act!r}")


def dense_forward(x, W, b, act="relu"):
    """Return (z, y): z = x W + b (N, O), the pre-activation, and y = f(z)."""
    z = x @ W + b
    return z, _f(z, act)


def dense_backward(G, x, W, z, act="relu"):
    """G = dL/dy (N, O) -> (dx (N, I), dW (I, O), db (O,)), from the saved x and z."""
    Gz = G * _df(z, act)
    return Gz @ W.T, x.T @ Gz, Gz.sum(axis=0)
