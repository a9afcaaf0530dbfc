"""``reason_codes(model, rows, k)``: for each row, the k raw columns that pushed its score
furthest toward the adverse outcome, with the row's value and the size of the push.

Method: **occlusion by column against a baseline applicant**, run on the runtime's plan
(forward passes only, no autograd). The baseline is stored in the model file at training
time (:mod:`lepton_nn.runtime.profile`): per column, the median (numeric) or mode
(categorical) of the *approved* training rows. For row x and raw column c (all the network
inputs c feeds: its scaled value, one-hot block, missing indicator)::

    contribution_c(x) = s * (z(x) - z(x with column c set to the baseline))

with z the logit and s = +1 when the positive class is the adverse one (``adverse=``), else
-1. It is exact for what it says: how much lower the adverse log-odds would be if this one
column were typical of approved applicants; it treats a one-hot group as one column, needs
C + 1 forward passes (one batched call), and works the same for float, pruned and int8
models. (Integrated gradients would need the backward pass of the plan, which the runtime
does not have; for a non-linear network the two differ where columns interact.) Only
contributions > 0 are reasons; a row has fewer than k when fewer columns push toward decline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_nn.runtime.preprocess import CATEGORICAL, Preprocessing
from lepton_nn.runtime.profile import baseline_row, column_values

from . import _served

__all__ = ["feature_groups", "reason_codes", "reason_matrix"]

CHUNK = 2048  # rows per batched forward call (x (C + 1) copies)


def feature_groups(pre: Preprocessing) -> list[np.ndarray]:
    """Per raw column (in order), the indices of the network inputs it feeds."""
    groups, j = [], 0
    for s in pre.columns:
        width = 1 if s["kind"] != CATEGORICAL else len(s["categories"])
        width += int(s["indicator"])
        groups.append(np.arange(j, j + width))
        j += width
    return groups


def reason_matrix(model: Any, rows: Any, adverse: Any = None) -> tuple[np.ndarray, list, Any]:
    """(N, C) contributions toward the adverse outcome, the column names, the served model."""
    im = _served.served(model)
    _served.binary(im, "reason_codes")
    profile = _served.profile_of(im, "reason_codes")
    sign = _served.adverse_sign(im, adverse)
    pre = im.preprocessing
    X = im.transform(rows)
    base = pre.transform(baseline_row(profile))[0]
    groups = feature_groups(pre)
    out = np.empty((len(X), len(groups)))
    for lo in range(0, len(X), CHUNK):
        x = X[lo : lo + CHUNK]
        batch = np.repeat(x[None], len(groups) + 1, axis=0)  # (C + 1, n, F)
        for c, g in enumerate(groups):
            batch[c + 1][:, g] = base[g]
        z = _served.logits(im, batch.reshape(-1, X.shape[1])).reshape(len(groups) + 1, len(x))
        out[lo : lo + CHUNK] = sign * (z[0] - z[1:]).T
    return out, pre.names, im


def reason_codes(
    model: Any, rows: Any, k: int = 4, adverse: Any = None
) -> list[list[tuple[str, Any, float]]]:
    """Per row, up to ``k`` ``(column, value, contribution)`` triples, largest push first.

    ``model``: a binary ``TabularModel``, ``InferenceModel`` or ``.lnn`` path with a training
    profile. ``adverse``: the class that means decline (default: the positive class, the
    last of ``classes``). ``value`` is the row's raw value (None when missing).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    contrib, names, im = reason_matrix(model, rows, adverse)
    values, _ = column_values(im.preprocessing, rows)
    order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
    result = []
    for i, cols in enumerate(order):
        row = []
        for c in cols:
            if contrib[i, c] <= 0:
                break
            v = values[names[c]][i]
            if isinstance(v, (float, np.floating)):
                v = None if np.isnan(v) else float(v)
            row.append((names[c], v, float(contrib[i, c])))
        result.append(row)
    return result
