"""Loss functions: ``loss(prediction, target, ...) -> Tensor``.

Per-sample losses are averaged over every axis but the batch axis; ``reduction`` then gives
``mean`` (sum_i w_i l_i / N, Keras' convention when ``sample_weight`` w is given), ``sum``, or
``none`` (the (N,) vector). Targets are constants (arrays or tensors without grad).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .autograd import Tensor
from .errors import ShapeError
from .ops import loss_ops

__all__ = [
    "mse",
    "mae",
    "huber",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "get_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def _target(pred: Tensor, target, name: str) -> np.ndarray:
    t = np.asarray(target.data if isinstance(target, Tensor) else target)
    if t.shape != pred.shape:
        # (N,) vs (N, 1) and the like: equal once axes of length 1 are dropped
        if [d for d in t.shape if d != 1] == [d for d in pred.shape if d != 1]:
            t = t.reshape(pred.shape)
        else:
            raise ShapeError(f"{name}: prediction shape {pred.shape} vs target shape {t.shape}")
    return t.astype(pred.dtype, copy=False)


def _weight(sample_weight, n: int, dtype) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = np.asarray(
        sample_weight.data if isinstance(sample_weight, Tensor) else sample_weight, dtype=dtype
    ).reshape(-1)
    if w.shape[0] != n:
        raise ShapeError(f"sample_weight has {w.shape[0]} values for a batch of {n}")
    return w


def _check(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _finish(elementwise: Tensor, sample_weight, reduction: str) -> Tensor:
    """Per-sample mean over non-batch axes, then weights and reduction."""
    _check(reduction)
    per = elementwise
    if per.ndim > 1:
        per = per.reshape(per.shape[0], int(np.prod(per.shape[1:]))).mean(axis=1)
    w = _weight(sample_weight, per.shape[0] if per.ndim else 1, per.dtype)
    if w is not None:
        per = per * Tensor(w)
    if reduction == "none":
        return per
    total = per.sum()
    return total if reduction == "sum" else total / max(per.shape[0] if per.ndim else 1, 1)


def mse(pred: Tensor, target, reduction: str = "mean", sample_weight=None) -> Tensor:
    """Mean squared error: l = (pred - target)^2."""
    d = pred - Tensor(_target(pred, target, "mse"))
    return _finish(d * d, sample_weight, reduction)


def mae(pred: Tensor, target, reduction: str = "mean", sample_weight=None) -> Tensor:
    """Mean absolute error: l = |pred - target|."""
    return _finish((pred - Tensor(_target(pred, target, "mae"))).abs(), sample_weight, reduction)


def huber(
    pred: Tensor, target, delta: float = 1.0, reduction: str = "mean", sample_weight=None
) -> Tensor:
    """l = d^2 / 2 if |d| <= delta else delta (|d| - delta / 2), d = pred - target."""
    d = pred - Tensor(_target(pred, target, "huber"))
    a = d.abs()
    from .ops import where

    quad = d * d * 0.5
    lin = (a - delta / 2) * delta
    return _finish(where(a.data <= delta, quad, lin), sample_weight, reduction)


def binary_cross_entropy_with_logits(
    logits: Tensor,
    target,
    pos_weight: float | None = None,
    sample_weight=None,
    reduction: str = "mean",
) -> Tensor:
    """l = -[pw y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], computed from logits z.

    ``pos_weight`` pw > 1 raises the cost of missed positives (imbalanced targets).
    """
    _check(reduction)
    y = _target(logits, target, "binary_cross_entropy_with_logits")
    w = _weight(sample_weight, logits.shape[0], logits.dtype)
    return loss_ops.BCEWithLogits.apply(
        logits, pos_weight=pos_weight, weight=w, reduction=reduction, y=y
    )


def cross_entropy(
    logits: Tensor,
    target,
    label_smoothing: float = 0.0,
    sample_weight=None,
    reduction: str = "mean",
) -> Tensor:
    """Softmax cross-entropy from logits (N, C).

    ``target``: integer labels (N,) or target distributions / one-hot (N, C).
    With label smoothing e, the target becomes (1 - e) t + e / C.
    """
    _check(reduction)
    if logits.ndim != 2:
        raise ShapeError(f"cross_entropy expects logits of shape (N, C), got {logits.shape}")
    n, c = logits.shape
    t = np.asarray(target.data if isinstance(target, Tensor) else target)
    w = _weight(sample_weight, n, logits.dtype)
    if t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1 and c > 1):
        labels = t.reshape(-1)
        if labels.shape[0] != n:
            raise ShapeError(f"cross_entropy: {n} logits rows vs {labels.shape[0]} labels")
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            raise ValueError("cross_entropy: integer class labels expected")
        labels = labels.astype(np.int64, copy=False)  # no copy: a compiled step reads y
        if n and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(
                f"cross_entropy: labels must be in [0, {c}), got {labels.min()}..{labels.max()}"
            )
        if label_smoothing == 0:
            return loss_ops.SoftmaxCrossEntropy.apply(
                logits, labels=labels, weight=w, reduction=reduction
            )
        dist = np.zeros((n, c), logits.dtype)
        dist[np.arange(n), labels] = 1
    else:
        if t.shape != (n, c):
            raise ShapeError(f"cross_entropy: logits {logits.shape} vs target {t.shape}")
        dist = t.astype(logits.dtype)
    if label_smoothing:
        dist = dist * (1 - label_smoothing) + label_smoothing / c
    return loss_ops.SoftTargetCrossEntropy.apply(logits, target=dist, weight=w, reduction=reduction)


_BY_NAME: dict[str, Callable] = {
    "mse": mse,
    "mean_squared_error": mse,
    "mae": mae,
    "mean_absolute_error": mae,
    "huber": huber,
    "bce": binary_cross_entropy_with_logits,
    "binary_cross_entropy": binary_cross_entropy_with_logits,
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits,
    "cross_entropy": cross_entropy,
    "categorical_cross_entropy": cross_entropy,
}


def get_loss(name: str | Callable) -> Callable:
    """A loss by name (``"bce"``, ``"cross_entropy"``, ``"mse"``...) or the callable itself."""
    if callable(name):
        return name
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(_BY_NAME)}") from None
