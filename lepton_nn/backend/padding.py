"""Padding of the trailing axes of an array (constant, reflect, replicate), in NumPy.

Shared by the training op (:mod:`lepton_nn.ops.conv_more`, which adds the gradient) and the
runtime's pad step, so a served model pads exactly as its layer does.

``pads``: one (before, after) pair of non-negative ints per padded axis, for the LAST
``len(pads)`` axes of x, in order. Modes (NumPy's / PyTorch's names):
``constant`` fills with ``value``; ``reflect`` mirrors without repeating the edge
(x = [a b c], 2 before: [c b | a b c]); ``replicate`` repeats the edge ([a a | a b c]).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PAD_MODES", "pad_index", "pad_forward", "check_pads"]

PAD_MODES = ("constant", "reflect", "replicate")


def check_pads(shape: tuple[int, ...], pads, mode: str) -> str | None:
    """None if ``pads`` can pad an array of ``shape`` in ``mode``, else what is wrong."""
    if mode not in PAD_MODES:
        return f"mode {mode!r} is not one of {PAD_MODES}"
    if len(pads) > len(shape):
        return f"{len(pads)} padded axes for an input of shape {tuple(shape)}"
    for (before, after), n in zip(pads, shape[len(shape) - len(pads) :]):
        if mode == "reflect" and max(before, after) > n - 1:
            return f"reflect padding {before, after} needs an axis longer than that, got {n}"
        if mode == "replicate" and n == 0 and before + after:
            return "replicate padding of an empty axis"
    return None


def pad_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each of the n + before + after padded positions, the source index along the axis
    (reflect / replicate): y[p] = x[index[p]]."""
    p = np.arange(-before, n + after)
    if mode == "replicate":
        return np.clip(p, 0, n - 1)
    p = np.abs(p)  # reflect: -k -> k, and n - 1 + k -> n - 1 - k
    return np.where(p > n - 1, 2 * (n - 1) - p, p)


def pad_forward(x: np.ndarray, pads, mode: str = "constant", value: float = 0.0) -> np.ndarray:
    """x padded on its last len(pads) axes (see the module docstring); x's dtype."""
    lead = x.ndim - len(pads)
    if mode == "constant":
        widths = [(0, 0)] * lead + [tuple(p) for p in pads]
        return np.pad(x, widths, constant_values=np.asarray(value, x.dtype))
    for k, (before, after) in enumerate(pads):
        if before or after:
            x = np.take(x, pad_index(x.shape[lead + k], before, after, mode), axis=lead + k)
    return x
