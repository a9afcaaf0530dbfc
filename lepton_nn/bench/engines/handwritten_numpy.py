"""Hand-written NumPy: an MLP with manual backprop and in-place Adam, the ceiling of any NumPy
engine (W1/W2 training, W5 inference), and NumPy's float32 BLAS matmul (the W6 baseline)."""

from __future__ import annotations

import math

import numpy as np

from ..cases import Case, cycle
from ..workloads import (
    ADAM,
    MATMUL_K,
    MATMUL_N,
    glorot_weights,
    inference_data,
    matmul_data,
    training_data,
)


class NumpyMLP:
    """The ceiling of any NumPy engine: a ReLU MLP with manual backprop and in-place Adam.

    params = [W0, b0, W1, b1, ...] with W (in, out); logits z = h W + b, h = max(z, 0).
    """

    def __init__(self, weights, loss: str, lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"]):
        self.params = [a.copy() for wb in weights for a in wb]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.loss, self.lr, self.betas, self.eps, self.t = loss, lr, betas, eps, 0

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Activations [x, h1, ..., z] (hidden ones after ReLU)."""
        hs, h = [x], x
        n_layers = len(self.params) // 2
        for k in range(n_layers):
            h = h @ self.params[2 * k]
            h += self.params[2 * k + 1]
            if k < n_layers - 1:
                np.maximum(h, 0, out=h)
            hs.append(h)
        return hs

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[-1]

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        hs = self.forward(x)
        z, n = hs[-1], len(x)
        if self.loss == "bce":  # d/dz mean BCE(sigmoid(z), y) = (sigmoid(z) - y) / N
            g = np.tanh(z * 0.5)
            g *= 0.5
            g += 0.5
            g -= y
        else:  # d/dz mean CE(softmax(z), y) = (softmax(z) - onehot(y)) / N
            g = z - z.max(axis=1, keepdims=True)
            np.exp(g, out=g)
            g /= g.sum(axis=1, keepdims=True)
            g[np.arange(n), y] -= 1
        g *= 1.0 / n
        grads = [None] * len(self.params)
        for k in reversed(range(len(self.params) // 2)):
            grads[2 * k] = hs[k].T @ g
            grads[2 * k + 1] = g.sum(axis=0)
            if k:
                g = g @ self.params[2 * k].T
                g *= hs[k] > 0  # ReLU'(z) = [h > 0]
        self.adam(grads)

    def adam(self, grads) -> None:
        """m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2; p <- p - lr_t m / (sqrt(v) + eps_t)."""
        self.t += 1
        b1, b2 = self.betas
        c2 = math.sqrt(1 - b2**self.t)
        lr_t, eps_t = self.lr * c2 / (1 - b1**self.t), self.eps * c2
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            g *= g
            g *= 1 - b2
            v += g
            d = np.sqrt(v)
            d += eps_t
            np.divide(m, d, out=d)
            d *= lr_t
            p -= d


def _mlp_training(workload, spec) -> list[Case]:
    x, y = training_data(spec)
    xs, ys, nb = cycle(x), cycle(y), len(x)
    net = NumpyMLP(glorot_weights(spec.sizes), spec.loss)
    return [
        Case(
            workload,
            "numpy",
            "hand-written",
            "plain NumPy: forward, manual backprop and in-place Adam, no graph (the ceiling of "
            "any NumPy engine)",
            spec.batch,
            step=lambda i: net.step(xs[i % nb], ys[i % nb]),
        ),
        _gemms_only(workload, spec, xs),
    ]


def _gemms_only(workload, spec, xs) -> Case:
    """The step's GEMMs and nothing else: forward ``H_k = H_{k-1} W_k``, weight gradients
    ``dW_k = H_{k-1}^T G_k`` and input gradients ``G_{k-1} = G_k W_k^T`` (none for the input),
    the shapes and transposes every engine multiplies, into preallocated outputs. Its GFLOP/s
    (:func:`~lepton_nn.bench.workloads.training_flops` counts exactly these) is what this BLAS
    allows on the workload's shapes: the ceiling of any engine built on it."""
    ws = [w for w, _ in glorot_weights(spec.sizes)]
    hs = [np.empty((spec.batch, w.shape[1]), np.float32) for w in ws]
    gws = [np.empty_like(w) for w in ws]
    nb = len(xs)

    def step(i):
        ins = [xs[i % nb], *hs[:-1]]
        for h_in, w, h in zip(ins, ws, hs):
            np.matmul(h_in, w, out=h)
        g = hs[-1]  # stands for the loss gradient (the values do not change a GEMM's time)
        for k in reversed(range(len(ws))):
            np.matmul(ins[k].T, g, out=gws[k])
            if k:
                np.matmul(g, ws[k].T, out=hs[k - 1])
                g = hs[k - 1]

    return Case(
        workload,
        "numpy",
        "GEMMs only",
        "the step's GEMMs alone (forward, weight and input gradients, same shapes and "
        "transposes, preallocated outputs; no bias, activation, loss or optimizer): the "
        "ceiling this BLAS sets for any engine on the workload",
        spec.batch,
        step=step,
    )


def _inference(workload, spec_batch) -> list[Case]:
    spec, batch = spec_batch
    xs = cycle(inference_data(spec, batch))
    nb = len(xs)
    net = NumpyMLP(glorot_weights(spec.sizes), spec.loss)
    return [
        Case(
            workload,
            "numpy",
            "hand-written",
            "plain NumPy forward: `h = x @ W; h += b; maximum(h, 0, out=h)` per layer",
            batch,
            step=lambda i: net.predict(xs[i % nb]),
            latency=batch == 1,
        )
    ]


def _matmul(workload, m) -> list[Case]:
    d = matmul_data(m)
    x, wt = d["x"], np.ascontiguousarray(d["w"].T)
    out = np.empty((m, MATMUL_N), np.float32)
    return [
        Case(
            workload,
            "numpy",
            "float32 matmul",
            "`np.matmul(x, W.T, out=out)` in float32 (NumPy's BLAS sgemm; W.T made "
            "contiguous once)",
            2 * m * MATMUL_K * MATMUL_N,
            step=lambda i: np.matmul(x, wt, out=out),
            unit="op",
        )
    ]


BUILDERS = {"mlp": _mlp_training, "inference": _inference, "matmul": _matmul}
