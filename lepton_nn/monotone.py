"""Monotonic constraints for the tabular MLP: the output only rises with some inputs and
only falls with others, for every input, exactly (not just on the training rows).

Mechanism: sign constraints on the weights, kept by a projection after every optimizer
step (:class:`MonotoneProjection`, a Trainer callback). Each hidden layer's units are split
into a *monotone* half M and a *free* half F. With s_j = +1 (rises) or -1 (falls) for a
constrained input j, and W (in, out) the weights of each Dense layer::

    layer 1      s_j W[j, M] >= 0,  W[j, F] = 0        (free units never see x_j)
    layer l > 1  W[M_prev, M] >= 0, W[M_prev, F] = 0   (the output layer counts as M)

Other inputs and the F units feed anything with any sign. ReLU is non-decreasing, so every
M unit is a non-decreasing function of s_j x_j, F units do not depend on x_j, and the output
is non-decreasing in s_j x_j: monotone by construction, whatever the other inputs. A
scaled input keeps its direction (x -> (x - center) / scale with scale > 0), so the constraint
holds for the raw column. :func:`grid_violations` checks it on a grid of values.

Compression: pruning (and its fine-tuning, which keeps projecting) and *static* int8 (fixed
scales, monotone rounding, signs kept) preserve it exactly. *Dynamic* int8 scales each row
by its own range, so moving one column re-rounds the others: the score may then move
against the constraint by quantization noise (a few hundredths of a logit), and
``evaluate`` reports those rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .nn import Dense
from .train.callbacks import Callback

__all__ = ["MonotoneProjection", "grid_violations"]


class MonotoneProjection(Callback):
    """Projects a Sequential of Dense (+ Dropout) layers onto the constraints above.

    ``signs``: input index -> +1 or -1. Call :meth:`project` once after building; as a
    callback it projects after every batch.
    """

    def __init__(self, network, signs: dict[int, int]) -> None:
        self.network = network
        self.rules: list[tuple[Dense, np.ndarray, np.ndarray]] = []  # (layer, need, zero)
        denses = [m for m in network.layers if isinstance(m, Dense)]
        prev_m: np.ndarray | None = None  # rows of the previous layer's M units
        for i, d in enumerate(denses):
            n_in, n_out = d.weight.data.shape
            m_out = np.ones(n_out, bool)
            if i < len(denses) - 1:
                m_out[max(1, n_out // 2) :] = False
            need = np.zeros((n_in, n_out), np.int8)  # +1: W >= 0, -1: W <= 0
            zero = np.zeros((n_in, n_out), bool)
            if i == 0:
                for j, s in signs.items():
                    need[j, m_out] = 1 if s > 0 else -1
                    zero[j, ~m_out] = True
            else:
                need[np.ix_(prev_m, m_out)] = 1
                zero[np.ix_(prev_m, ~m_out)] = True
            self.rules.append((d, need, zero))
            prev_m = m_out
        self.project()

    def project(self) -> None:
        for d, need, zero in self.rules:
            w = d.weight.data
            bad = zero | (need * w < 0)  # W = 0 where it must be 0 or has the wrong sign
            if bad.any():
                w[bad] = 0

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.project()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.project()


def grid_violations(
    score: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    column: int,
    sign: int,
    grid: np.ndarray,
    tol: float = 1e-5,
) -> int:
    """Rows of X (N, F) whose score (N,) moves against ``sign`` by more than ``tol`` when
    input ``column`` steps through the increasing ``grid`` (G,) with the rest held fixed."""
    n, g = len(X), len(grid)
    batch = np.repeat(X[None], g, axis=0)  # (G, N, F)
    batch[:, :, column] = np.asarray(grid, X.dtype)[:, None]
    z = np.asarray(score(batch.reshape(g * n, -1)), np.float64).reshape(g, n)
    return int(np.any(sign * np.diff(z, axis=0) < -tol, axis=0).sum())
