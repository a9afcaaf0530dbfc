"""Chapter 5 exercises: train a two-layer network with nothing but NumPy.

The network: logits = relu(x W1 + b1) W2 + b2, with ``params`` a dict of the four arrays
"W1" (I, H), "b1" (H,), "W2" (H, C), "b2" (C,); the loss: mean softmax cross-entropy.
Fill in every function, then run ``pytest docs/exercises/ch05``.
"""

from __future__ import annotations

import numpy as np  # noqa: F401


def minibatches(n, batch_size, rng):
    """The row indices of one epoch: rng.permutation(n) cut into consecutive batches of
    ``batch_size`` (the last one smaller when batch_size does not divide n). A list of arrays."""
    raise NotImplementedError("exercise 5.1: minibatches")


def init_mlp(rng, n_in, n_hidden, n_out):
    """Random weights, zero biases: W1 ~ normal(0, sqrt(2 / n_in)) (He, for the ReLU),
    W2 ~ normal(0, sqrt(1 / n_hidden)). Returns the params dict (float64)."""
    raise NotImplementedError("exercise 5.2: init_mlp")


def mlp_logits(params, x):
    """The network's logits (N, C) for a batch x (N, I)."""
    raise NotImplementedError("exercise 5.3: mlp_logits")


def sgd_step(params, x, t, lr):
    """One step of plain SGD on the mean cross-entropy of the batch (x, integer labels t):
    forward, the loss, backward through both layers (chapters 3 and 4), then p <- p - lr dL/dp
    for the four arrays, in place. Returns the loss before the update (a float)."""
    raise NotImplementedError("exercise 5.4: sgd_step")
