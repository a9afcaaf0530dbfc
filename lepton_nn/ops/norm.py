"""Normalization: batch norm (over every axis but the channels) and layer norm (over the last).

Both compute x_hat = (x - mean) / sqrt(var + eps) and y = gamma x_hat + beta, with the biased
variance. Their backward is the closed form of the gradient through the statistics:
    dx = (1 / sigma) (dx_hat - mean(dx_hat) - x_hat mean(dx_hat x_hat)),  dx_hat = g gamma
with the means taken over the normalized axes.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..errors import ShapeError

__all__ = ["BatchNorm", "LayerNorm", "batch_norm", "layer_norm"]


class BatchNorm(Function):
    """y = gamma (x - mu) / sqrt(var + eps) + beta, per channel (axis 1).

    x: (N, C) or (N, C, ...); gamma, beta: (C,). Training: mu, var are the batch's (over N and
    the spatial axes), and the running arrays, when given, move toward them in place:
    running = (1 - momentum) running + momentum batch (the variance unbiased, as PyTorch).
    Eval: mu, var are the running arrays, constants for the gradient.
    """

    def forward(self, x, gamma, beta, running=None, training=True, momentum=0.1, eps=1e-5):
        axes = (0, *range(2, x.ndim))
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        if training:
            mean = x.mean(axis=axes)
            xc = x - mean.reshape(shape)
            var = np.mean(xc * xc, axis=axes)
            if running is not None:
                m = x.size // max(x.shape[1], 1)
                rm, rv = running
                rm *= 1 - momentum
                rm += momentum * mean
                rv *= 1 - momentum
                rv += momentum * var * (m / max(m - 1, 1))
        else:
            mean, var = running[0].astype(x.dtype), running[1].astype(x.dtype)
            xc = x - mean.reshape(shape)
        inv = (1.0 / np.sqrt(var + eps)).astype(x.dtype).reshape(shape)
        self.xhat, self.inv, self.gamma, self.axes, self.training = (
            xc * inv,
            inv,
            gamma,
            axes,
            training,
        )
        return self.xhat * gamma.reshape(shape) + beta.reshape(shape)

    def backward(self, g):
        xhat, axes, shape = self.xhat, self.axes, self.inv.shape
        gbeta = g.sum(axis=axes)
        ggamma = (g * xhat).sum(axis=axes)
        gx = None
        if self.needs_grad[0]:
            dxhat = g * self.gamma.reshape(shape)
            if self.training:
                mean_d = dxhat.mean(axis=axes, keepdims=True)
                mean_dx = (dxhat * xhat).mean(axis=axes, keepdims=True)
                gx = self.inv * (dxhat - mean_d - xhat * mean_dx)
            else:
                gx = dxhat * self.inv
        return gx, ggamma, gbeta


class LayerNorm(Function):
    """y = gamma (x - mu) / sqrt(var + eps) + beta, mu and var over the last axis of each row.

    x: (..., D); gamma, beta: (D,).
    """

    def forward(self, x, gamma, beta, eps=1e-5):
        mean = x.mean(axis=-1, keepdims=True)
        xc = x - mean
        inv = 1.0 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)
        self.xhat, self.inv, self.gamma = xc * inv, inv, gamma
        return self.xhat * gamma + beta

    def backward(self, g):
        xhat = self.xhat
        lead = tuple(range(g.ndim - 1))
        gx = None
        if self.needs_grad[0]:
            dxhat = g * self.gamma
            mean_d = dxhat.mean(axis=-1, keepdims=True)
            mean_dx = (dxhat * xhat).mean(axis=-1, keepdims=True)
            gx = self.inv * (dxhat - mean_d - xhat * mean_dx)
        return gx, (g * xhat).sum(axis=lead), g.sum(axis=lead)


def batch_norm(
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalization over axis 1 (see :class:`BatchNorm`); running arrays are updated in
    place in training and used in eval (where they are required)."""
    if x.ndim < 2:
        raise ShapeError(f"batch_norm expects (N, C) or (N, C, ...) input, got {x.shape}")
    c = x.shape[1]
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ShapeError(f"batch_norm: gamma/beta of shape ({c},) expected, got {gamma.shape}")
    running = None
    if running_mean is not None and running_var is not None:
        if running_mean.shape != (c,) or running_var.shape != (c,):
            raise ShapeError(f"batch_norm: running stats of shape ({c},) expected")
        running = (running_mean, running_var)
    if not training and running is None:
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    if training and x.shape[0] * (x.size // max(x.shape[0] * c, 1)) < 2:
        raise ShapeError(
            f"batch_norm in training needs more than one value per channel, got input {x.shape}"
        )
    return BatchNorm.apply(
        x, gamma, beta, running=running, training=training, momentum=momentum, eps=eps
    )


def layer_norm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    """Layer normalization over the last axis (see :class:`LayerNorm`)."""
    d = x.shape[-1] if x.ndim else 0
    if x.ndim < 1 or gamma.shape != (d,) or beta.shape != (d,):
        raise ShapeError(
            f"layer_norm: gamma/beta of shape ({d},) expected for input {x.shape}, "
            f"got {gamma.shape}"
        )
    return LayerNorm.apply(x, gamma, beta, eps=eps)
