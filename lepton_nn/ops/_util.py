"""Small helpers shared by the ops."""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` down to ``shape``: the adjoint of NumPy broadcasting.

    Leading axes that broadcasting added are summed away; axes where ``shape`` has 1 are
    summed with keepdims. ``(4, 3)`` -> ``(3,)`` sums axis 0; ``(4, 3)`` -> ``(4, 1)`` sums axis 1.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def zero_where_no_grad(out: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``out`` (upstream ``g`` times a local derivative) with its NaNs set to 0 where g == 0.

    A zero upstream gradient means the output does not reach the loss, so its product with
    the local derivative is 0 even where that derivative is infinite (sqrt or log at 0, 0 ** 0
    behind a mask, an overflowed exp): IEEE gives 0 * inf = NaN, the chain rule gives 0.
    Compute ``out`` under ``np.errstate(divide="ignore", invalid="ignore")``.
    """
    bad = np.isnan(out)
    if bad.any():
        out = np.where(bad & (g == 0), np.zeros((), out.dtype), out)
    return out


def tensor(x, like: Tensor | None = None) -> Tensor:
    """Wrap a number or array as a constant Tensor (in ``like``'s dtype for plain numbers)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and (np.isscalar(x) or (isinstance(x, np.ndarray) and x.dtype.kind != "f")):
        return Tensor(np.asarray(x, dtype=like.dtype))
    return Tensor(x)
