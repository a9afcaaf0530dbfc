"""Fused, numerically stable losses: each returns per-sample values or their reduction.

Weighted reductions follow Keras: ``mean`` is sum(w_i * l_i) / N, ``sum`` is sum(w_i * l_i),
``none`` returns the (N,) vector w_i * l_i.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..backend import get_backend


def _reduce(per, weight, reduction):
    if weight is not None:
        per = per * weight
    if reduction == "none":
        return per
    s = per.sum(dtype=per.dtype)
    return np.asarray(s / max(per.shape[0], 1) if reduction == "mean" else s, dtype=per.dtype)


def _per_sample_grad(g, n, weight, reduction, dtype):
    """d(reduced loss)/d(l_i) as an (N,) array."""
    if reduction == "none":
        gl = np.asarray(g, dtype)
    else:
        gl = np.full(n, (g / max(n, 1)) if reduction == "mean" else g, dtype)
    return gl * weight if weight is not None else gl


class SoftmaxCrossEntropy(Function):
    """l_i = logsumexp(z_i) - z_i[y_i] for logits z (N, C) and integer labels y (N,)."""

    def forward(self, logits, labels=None, weight=None, reduction="mean"):
        be = get_backend()
        logits = np.ascontiguousarray(logits)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.labels, self.weight, self.reduction = labels, weight, reduction
        self.probs = np.empty_like(logits)
        per = be.softmax_xent_forward(
            logits, labels, self.probs, np.empty(len(labels), logits.dtype)
        )
        return _reduce(per, weight, reduction)

    def backward(self, g):
        p = self.probs
        gl = _per_sample_grad(g, p.shape[0], self.weight, self.reduction, p.dtype)
        gl = np.ascontiguousarray(gl)  # g may be a broadcast view (strides 0) from a Sum
        gz = get_backend().softmax_xent_backward(p, self.labels, gl, np.empty_like(p))
        return (gz,)


class SoftTargetCrossEntropy(Function):
    """l_i = -sum_c t_ic log softmax(z_i)_c for target distributions t (N, C).

    dl_i/dz_i = softmax(z_i) * sum_c t_ic - t_i.
    """

    def forward(self, logits, target=None, weight=None, reduction="mean"):
        s = logits - logits.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        self.p, self.t, self.weight, self.reduction = np.exp(logp), target, weight, reduction
        with np.errstate(invalid="ignore"):
            tlogp = target * logp
        if np.isnan(tlogp).any():  # a class masked with a -inf logit and target 0: 0, not NaN
            tlogp = np.where(target == 0, np.zeros((), tlogp.dtype), tlogp)
        return _reduce(-tlogp.sum(axis=1), weight, reduction)

    def backward(self, g):
        gl = _per_sample_grad(g, self.p.shape[0], self.weight, self.reduction, self.p.dtype)
        gz = self.p * self.t.sum(axis=1, keepdims=True) - self.t
        return (gz * gl[:, None],)


class BCEWithLogits(Function):
    """l = pw * y * softplus(-z) + (1 - y) * softplus(z), averaged over all but axis 0.

    With softplus(-z) = softplus(z) - z: l = softplus(z) (pw y + 1 - y) - pw y z
    (= softplus(z) - y z when pw = 1). dl/dz = sigmoid(z) (pw y + 1 - y) - pw y, where
    sigmoid(z) = exp(z - softplus(z)) (the exponent is <= 0: stable).
    z, y: (N, ...) with the same shape.
    """

    def forward(self, z, y=None, pos_weight=None, weight=None, reduction="mean"):
        sp = np.logaddexp(0, z)  # softplus(z) = -log(1 - sigmoid(z))
        pwy = None if pos_weight is None else pos_weight * y
        el = sp - y * z if pwy is None else sp * (pwy + 1 - y) - pwy * z
        el = el.astype(z.dtype, copy=False)
        self.z, self.y, self.sp, self.pwy = z, y, sp, pwy
        self.weight, self.reduction = weight, reduction
        self.m = math.prod(z.shape[1:]) if z.ndim > 1 else 1
        per = el.reshape(z.shape[0], self.m) if z.ndim > 1 else el
        per = per.mean(axis=1) if self.m > 1 else per.reshape(z.shape[0])
        return _reduce(per, weight, reduction)

    def backward(self, g):
        z, y, pwy, n = self.z, self.y, self.pwy, self.z.shape[0]
        gz = np.exp(z - self.sp)  # sigmoid(z)
        if pwy is None:
            gz -= y
        else:
            gz *= pwy + 1 - y
            gz -= pwy
        if self.weight is None and self.reduction != "none":  # one scale for every sample
            gz *= np.asarray((g / max(n, 1) if self.reduction == "mean" else g) / self.m, z.dtype)
        else:
            gl = _per_sample_grad(g, n, self.weight, self.reduction, z.dtype) / self.m
            gz *= gl.reshape((n,) + (1,) * (z.ndim - 1))
        return (gz.astype(z.dtype, copy=False),)
