"""Chapter 3 exercises: a Dense layer y = f(x W + b), forward and backward.

x: (N, I), W: (I, O), b: (O,); ``act`` is one of ACTIVATIONS. GELU is the tanh approximation
0.5 z (1 + tanh(c (z + a z^3))) with c = sqrt(2 / pi), a = 0.044715 (as in lepton_nn).
Fill in both functions, then run ``pytest docs/exercises/ch03``.
"""

from __future__ import annotations

import numpy as np  # noqa: F401

ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "gelu")
GELU_C, GELU_A = 0.7978845608028654, 0.044715


def dense_forward(x, W, b, act="relu"):
    """Return (z, y): z = x W + b (N, O), the pre-activation, and y = f(z)."""
    raise NotImplementedError("exercise 3.1: dense_forward")


def dense_backward(G, x, W, z, act="relu"):
    """G = dL/dy (N, O) -> (dx (N, I), dW (I, O), db (O,)), from the saved x and z.

    G_z = G * f'(z); dW = x^T G_z; db = G_z summed over the batch; dx = G_z W^T.
    (ReLU's derivative at exactly 0 is taken as 0.)"""
    raise NotImplementedError("exercise 3.2: dense_backward")
