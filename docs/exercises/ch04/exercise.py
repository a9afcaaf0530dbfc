"""Chapter 4 exercises: softmax with cross-entropy, and Adam.

Fill in the three functions, then run ``pytest docs/exercises/ch04``.
"""

from __future__ import annotations

import numpy as np  # noqa: F401


def log_softmax(z):
    """log softmax of each row of z (N, C): z_j - log sum_k exp(z_k), computed so that no
    ``exp`` overflows however large the logits (shift each row by its maximum first)."""
    raise NotImplementedError("exercise 4.1: log_softmax")


def softmax_xent(z, t):
    """Mean cross-entropy of logits z (N, C) with integer labels t (N,), and its gradient.

    Returns (loss, dz): loss = mean over rows of -log softmax(z)[i, t_i] (a float) and
    dz = (softmax(z) - onehot(t)) / N, the shape of z."""
    raise NotImplementedError("exercise 4.2: softmax_xent")


def adam_step(p, g, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """One Adam update at step t >= 1, in place on p, m and v (arrays of one shape):

    g <- g + weight_decay p  (L2, added to the gradient; do not change the caller's g)
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)
    """
    raise NotImplementedError("exercise 4.3: adam_step")
