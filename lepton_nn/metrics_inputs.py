"""The input checks and conversions every metric of :mod:`lepton_nn.metrics` shares: 1-D
arrays, equal lengths, sample weights, label codes, scores of the positive class."""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_nn.errors import DataError

# ----------------------------------------------------------------------------------------
# input helpers
# ----------------------------------------------------------------------------------------


def _1d(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _same_length(*pairs: tuple[str, np.ndarray | None]) -> None:
    lengths = {n: len(a) for n, a in pairs if a is not None}
    if len(set(lengths.values())) > 1:
        raise DataError(f"inputs have different lengths: {lengths}")


def _weights(sample_weight: Any, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = _1d(sample_weight, "sample_weight").astype(np.float64)
    _same_length(("sample_weight", w), ("y_true", np.empty(n)))
    return w


def _union_labels(*arrays: np.ndarray) -> np.ndarray:
    try:
        return np.unique(np.concatenate([np.asarray(a).ravel() for a in arrays]))
    except TypeError:
        raise DataError("labels mix types that cannot be ordered (e.g. str and int)") from None


def _codes(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Index of each value in ``labels`` (any order), -1 where absent."""
    if len(labels) == 0:
        return np.full(len(values), -1, dtype=np.intp)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    pos = np.clip(np.searchsorted(sorted_labels, values), 0, len(labels) - 1)
    found = np.asarray(sorted_labels[pos] == values, dtype=bool)
    return np.where(found, order[pos], -1)


def _column_classes(y: np.ndarray, n_cls: int, labels: Any, who: str, what: str) -> np.ndarray:
    """The class of each of the ``n_cls`` columns of ``what``: ``labels`` when given, else
    0..C-1 for integer targets in range, else the sorted labels of ``y``."""
    if labels is not None:
        classes = np.asarray(labels)
    elif y.dtype.kind in "iu" and y.min() >= 0 and y.max() < n_cls:
        classes = np.arange(n_cls)
    else:
        classes = _union_labels(y)
    if len(classes) != n_cls:
        raise DataError(
            f"{who}: {what} has {n_cls} columns but there are {len(classes)} classes; "
            f"pass labels= in column order"
        )
    return classes


def _scores(y_score: Any, name: str = "y_score") -> np.ndarray:
    s = np.asarray(y_score)
    if s.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if s.ndim == 2 and s.shape[1] in (1, 2):
        s = s[:, -1]  # (N, 1) sigmoid output or (N, 2) class probabilities
    if s.ndim != 1:
        raise DataError(f"{name} must be 1-D, (N, 1) or (N, 2) here, got shape {s.shape}")
    if np.isnan(s).any():
        raise DataError(f"{name} contains NaN (row index {int(np.flatnonzero(np.isnan(s))[0])})")
    return s


def _positive_mask(y_true: Any, pos_label: Any, who: str) -> np.ndarray:
    """Boolean mask of the positive rows of a binary target (see the module conventions)."""
    y = _1d(y_true, "y_true")
    classes = _union_labels(y)
    if len(classes) > 2:
        raise DataError(
            f"{who}: y_true has {len(classes)} classes; pass (N, C) scores for multiclass"
        )
    if pos_label is None:
        if y.dtype == bool or set(classes.tolist()) <= {0, 1}:
            pos_label = 1
        else:
            pos_label = classes[-1]
    return np.asarray(y == pos_label, dtype=bool)
