"""Chapter 5, reference solution: train a two-layer network with nothing but NumPy."""

from __future__ import annotations

import numpy as np


def minibatches(n, batch_size, rng):
    """rng.permutation(n) cut into consecutive batches of ``batch_size``."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def init_mlp(rng, n_in, n_hidden, n_out):
    """He-normal W1, normal(0, sqrt(1 / n_hidden)) W2, zero biases."""
    return {
        "W1": rng.normal(0, np.sqrt(2 / n_in), (n_in, n_hidden)),
        "b1": np.zeros(n_hidden),
        "W2": rng.normal(0, np.sqrt(1 / n_hidden), (n_hidden, n_out)),
        "b2": np.zeros(n_out),
    }


def mlp_logits(params, x):
    """relu(x W1 + b1) W2 + b2."""
    return np.maximum(x @ params["W1"] + params["b1"], 0) @ params["W2"] + params["b2"]


def sgd_step(params, x, t, lr):
    """One SGD step on the mean cross-entropy; returns the loss before the update."""
    z1 = x @ params["W1"] + params["b1"]
    h = np.maximum(z1, 0)
    z2 = h @ params["W2"] + params["b2"]
    s = z2 - z2.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    rows = np.arange(len(t))
    loss = -logp[rows, t].mean()
    G2 = np.exp(logp)
    G2[rows, t] -= 1
    G2 /= len(t)  # dL/dz2: softmax minus one-hot, over N
    G1 = (G2 @ params["W2"].T) * (z1 > 0)  # back through layer 2, then the ReLU
    grads = {"W2": h.T @ G2, "b2": G2.sum(axis=0), "W1": x.T @ G1, "b1": G1.sum(axis=0)}
    for name, grad in grads.items():
        params[name] -= lr * grad
    return float(loss)
