"""The readable spec: a pure-NumPy twin of every kernel.

Each method here is the definition of what its compiled twins (``numba_backend.py``,
``cython_backend.py``) compute; they subclass :class:`ReferenceBackend` and override only
what they speed up. Kernels validate nothing: callers in ``ops/`` check shapes, dtypes and
contiguity first. Arrays are float32 or float64 (one dtype per call), C-contiguous.

Activation codes (``act``) index :data:`ACTIVATIONS`.
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "gelu")
ACT_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}
IDENTITY, RELU, SIGMOID, TANH, GELU = range(5)

# gelu uses the tanh approximation: 0.5 z (1 + tanh(c (z + 0.044715 z^3))), c = sqrt(2/pi)
GELU_C = 0.7978845608028654
GELU_A = 0.044715


def _sigmoid(z):
    # stable for large |z|: exp only of non-positive numbers
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


class ReferenceBackend:
    """Pure NumPy. Always available; the one to read."""

    name = "reference"

    # -- dense epilogue ---------------------------------------------------------------
    def bias_act_forward(self, z, bias, act, out):
        """out = f(z + bias).

        z: (N, M); bias: (M,) or None; act: activation code; out: (N, M), may be z itself.
        Returns out.
        """
        s = z + bias if bias is not None else z
        if act == IDENTITY:
            r = s
        elif act == RELU:
            r = np.maximum(s, 0)
        elif act == SIGMOID:
            r = _sigmoid(s)
        elif act == TANH:
            r = np.tanh(s)
        else:  # GELU
            r = 0.5 * s * (1.0 + np.tanh(GELU_C * (s + GELU_A * s * s * s)))
        out[...] = r
        return out

    def bias_act_backward(self, gy, y, z, bias, act, gz, gbias):
        """Back through y = f(z + b).

        gy, y, z: (N, M) upstream grad, forward output, pre-bias input; bias: (M,) or None.
        Writes gz = gy * f'(z + b) into gz (may be gy itself) and, when gbias is not None,
        gbias = gz.sum(axis=0). relu/sigmoid/tanh use y; gelu recomputes from z + b.
        Returns (gz, gbias).
        """
        if act == IDENTITY:
            r = gy
        elif act == RELU:
            r = gy * (y > 0)
        elif act == SIGMOID:
            r = gy * y * (1 - y)
        elif act == TANH:
            r = gy * (1 - y * y)
        else:  # GELU
            s = z + bias if bias is not None else z
            t = np.tanh(GELU_C * (s + GELU_A * s**3))
            d = 0.5 * (1 + t) + 0.5 * s * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * s * s)
            r = gy * d
        gz[...] = r
        if gbias is not None:
            gbias[...] = gz.sum(axis=0)
        return gz, gbias

    # -- softmax cross-entropy ----------------------------------------------------------
    def softmax_xent_forward(self, logits, labels, probs, loss):
        """Per-sample loss[i] = logsumexp(logits[i]) - logits[i, labels[i]].

        logits, probs: (N, C); labels: (N,) int64 in [0, C); loss: (N,).
        Writes the softmax into probs (stable: shifts by the row max). Returns loss.
        """
        m = logits.max(axis=1, keepdims=True) if logits.shape[1] else 0
        e = np.exp(logits - m)
        s = e.sum(axis=1, keepdims=True)
        probs[...] = e / s
        rows = np.arange(logits.shape[0])
        loss[...] = (np.log(s[:, 0]) + m[:, 0]) - logits[rows, labels]
        return loss

    def softmax_xent_backward(self, probs, labels, gloss, glogits):
        """glogits = (probs - onehot(labels)) * gloss[:, None]. Returns glogits."""
        g = probs.copy()
        g[np.arange(probs.shape[0]), labels] -= 1
        glogits[...] = g * gloss[:, None]
        return glogits

    # -- optimizers -----------------------------------------------------------------------
    def adam_step(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
        """One Adam/AdamW update, in place on p, m, v (PyTorch's documented rule).

        decoupled=False (Adam, L2):  g <- g + wd * p
        decoupled=True  (AdamW):     p <- p * (1 - lr * wd)
        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
        All arrays share one shape and dtype; scalars are Python floats, step is t >= 1.
        """
        if weight_decay != 0:
            if decoupled:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        bc1 = 1 - beta1**step
        bc2 = 1 - beta2**step
        denom = np.sqrt(v) / np.sqrt(bc2) + eps
        p -= (lr / bc1) * m / denom

    # -- int8 quantized matmul (compression) -------------------------------------------------

    # -- sparse matmul (pruning) ---------------------------------------------------------------

    # -- convolution and pooling -------------------------------------------------------------

    # -- recurrent cells ---------------------------------------------------------------------
