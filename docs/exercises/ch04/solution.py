"""Chapter 4, reference solution: softmax with cross-entropy, and Adam."""

from __future__ import annotations

import numpy as np


def log_softmax(z):
    """log softmax of each row of z (N, C), stable for any size of logits."""
    shifted = z - z.max(axis=1, keepdims=True)  # the largest becomes 0: exp <= 1
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_xent(z, t):
    """Mean cross-entropy of logits z (N, C) with integer labels t (N,), and its gradient."""
    n = len(t)
    logp = log_softmax(z)
    rows = np.arange(n)
    loss = -logp[rows, t].mean()
    dz = np.exp(logp)
    dz[rows, t] -= 1  # softmax minus the one-hot label
    return float(loss), dz / n


def adam_step(p, g, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """One Adam update at step t >= 1, in place on p, m and v."""
    if weight_decay:
        g = g + weight_decay * p  # a new array: the caller's g is left alone
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)
