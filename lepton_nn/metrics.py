"""Classification and regression metrics in NumPy, matching scikit-learn's definitions.

Conventions:

- Label metrics (accuracy, precision, recall, f1, confusion_matrix) take labels of any sortable
  type; ``labels`` defaults to the sorted union of ``y_true`` and ``y_pred``.
- Score metrics (roc_auc, pr_auc, ks_statistic, log_loss) take a 1-D score/probability of the
  positive class for binary targets (``(N, 1)`` is flattened, ``(N, 2)`` uses its second
  column) or an ``(N, C)`` array for multiclass (one-vs-rest). The positive class is
  ``pos_label``, else 1 for 0/1 targets, else the larger of the two sorted labels.
- Undefined cases raise :class:`~lepton_nn.errors.DataError`: ROC AUC and KS with a single
  class in ``y_true``, PR AUC with no positive row. (scikit-learn 1.9 returns ``nan`` for ROC AUC
  and 0.0 for average precision there, with a warning.) Precision/recall/F1 with an empty
  denominator return ``zero_division`` (0.0), like scikit-learn's ``zero_division=0``.
- Bad argument values (an unknown ``average``) raise ``ValueError``.

Here: label and regression metrics, lookup by name, the binary report. The score metrics and
calibration are in :mod:`lepton_nn.metrics_score`, the shared input checks in
:mod:`lepton_nn.metrics_inputs`; every name is importable from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_nn.errors import DataError
from lepton_nn.metrics_inputs import (  # noqa: F401 (importable here, as before)
    _1d,
    _codes,
    _positive_mask,
    _same_length,
    _scores,
    _union_labels,
    _weights,
)
from lepton_nn.metrics_score import (  # noqa: F401 (importable here, as before)
    _average_ranks,
    _binary_ap,
    _binary_auc,
    _binary_clf_curve,
    _ovr,
    brier_score,
    calibration_report,
    expected_calibration_error,
    ks_statistic,
    log_loss,
    pr_auc,
    reliability_table,
    roc_auc,
    roc_curve,
)

AVERAGES = ("binary", "macro", "micro", "weighted", None)


# ----------------------------------------------------------------------------------------
# label metrics
# ----------------------------------------------------------------------------------------


def accuracy(y_true: Any, y_pred: Any, sample_weight: Any = None) -> float:
    """Fraction (weighted) of predictions equal to the truth."""
    t, p = _1d(y_true, "y_true"), _1d(y_pred, "y_pred")
    _same_length(("y_true", t), ("y_pred", p))
    if len(t) == 0:
        raise DataError("accuracy: no rows")
    return float(np.average(t == p, weights=_weights(sample_weight, len(t))))


def confusion_matrix(
    y_true: Any, y_pred: Any, labels: Any = None, sample_weight: Any = None
) -> np.ndarray:
    """``C[i, j]``: rows truly ``labels[i]`` predicted ``labels[j]``; int64 (float if weighted).

    Rows whose true or predicted label is not in ``labels`` are not counted.
    """
    t, p = _1d(y_true, "y_true"), _1d(y_pred, "y_pred")
    _same_length(("y_true", t), ("y_pred", p))
    labs = _union_labels(t, p) if labels is None else np.asarray(labels)
    k = len(labs)
    ti, pi = _codes(t, labs), _codes(p, labs)
    ok = (ti >= 0) & (pi >= 0)
    w = _weights(sample_weight, len(t))
    flat = np.bincount(ti[ok] * k + pi[ok], weights=None if w is None else w[ok], minlength=k * k)
    return flat.reshape(k, k) if w is not None else flat.reshape(k, k).astype(np.int64)


def _divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    out = np.full(num.shape, float(zero_division))
    np.divide(num, den, out=out, where=den != 0)
    return out


def _prf(
    y_true: Any,
    y_pred: Any,
    average: str | None,
    pos_label: Any,
    labels: Any,
    zero_division: float,
    which: str,
) -> Any:
    if average not in AVERAGES:
        raise ValueError(f"average={average!r}; choose one of {AVERAGES}")
    t, p = _1d(y_true, "y_true"), _1d(y_pred, "y_pred")
    _same_length(("y_true", t), ("y_pred", p))
    present = _union_labels(t, p)
    if average == "binary":
        if len(present) > 2:
            raise DataError(
                f"{which}: {len(present)} classes but average='binary'; "
                f"choose average='macro', 'micro' or 'weighted'"
            )
        if len(present) == 2 and pos_label not in present.tolist():
            raise DataError(f"{which}: pos_label={pos_label!r} is not one of {present.tolist()}")
        labs = np.asarray([pos_label])
    else:
        labs = present if labels is None else np.asarray(labels)
    full = _union_labels(t, p, labs)
    cm = confusion_matrix(t, p, labels=full)
    idx = _codes(labs, full)
    tp = np.diag(cm)[idx].astype(np.float64)
    pred_sum = cm.sum(axis=0)[idx].astype(np.float64)
    true_sum = cm.sum(axis=1)[idx].astype(np.float64)
    if average == "micro":
        tp, pred_sum, true_sum = (a.sum(keepdims=True) for a in (tp, pred_sum, true_sum))
    if which == "precision":
        score = _divide(tp, pred_sum, zero_division)
    elif which == "recall":
        score = _divide(tp, true_sum, zero_division)
    else:  # F1 = 2 tp / (2 tp + fp + fn)
        score = _divide(2 * tp, pred_sum + true_sum, zero_division)
    if average is None:
        return score
    if average == "weighted":
        if true_sum.sum() == 0:
            return float(zero_division)
        return float(np.average(score, weights=true_sum))
    return float(score.mean())


def precision(
    y_true: Any,
    y_pred: Any,
    average: str | None = "binary",
    pos_label: Any = 1,
    labels: Any = None,
    zero_division: float = 0.0,
) -> Any:
    """tp / (tp + fp); ``average`` binary (for ``pos_label``) | macro | micro | weighted | None."""
    return _prf(y_true, y_pred, average, pos_label, labels, zero_division, "precision")


def recall(
    y_true: Any,
    y_pred: Any,
    average: str | None = "binary",
    pos_label: Any = 1,
    labels: Any = None,
    zero_division: float = 0.0,
) -> Any:
    """tp / (tp + fn); same options as :func:`precision`."""
    return _prf(y_true, y_pred, average, pos_label, labels, zero_division, "recall")


def f1(
    y_true: Any,
    y_pred: Any,
    average: str | None = "binary",
    pos_label: Any = 1,
    labels: Any = None,
    zero_division: float = 0.0,
) -> Any:
    """2 tp / (2 tp + fp + fn), the harmonic mean of precision and recall."""
    return _prf(y_true, y_pred, average, pos_label, labels, zero_division, "f1")


# ----------------------------------------------------------------------------------------
# regression
# ----------------------------------------------------------------------------------------


def _reg(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim == 1 and p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if t.shape != p.shape:
        raise DataError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}")
    if len(t) == 0:
        raise DataError("no rows")
    return t, p


def mse(y_true: Any, y_pred: Any, sample_weight: Any = None) -> float:
    """Mean squared error (averaged over outputs too)."""
    t, p = _reg(y_true, y_pred)
    return float(np.mean(np.average((t - p) ** 2, axis=0, weights=_weights(sample_weight, len(t)))))


def mae(y_true: Any, y_pred: Any, sample_weight: Any = None) -> float:
    """Mean absolute error (averaged over outputs too)."""
    t, p = _reg(y_true, y_pred)
    return float(
        np.mean(np.average(np.abs(t - p), axis=0, weights=_weights(sample_weight, len(t))))
    )


def r2(y_true: Any, y_pred: Any, sample_weight: Any = None) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (uniform average over outputs).

    A constant ``y_true`` gives 1.0 for a perfect prediction and 0.0 otherwise (as scikit-learn).
    """
    t, p = _reg(y_true, y_pred)
    w = _weights(sample_weight, len(t))
    ww = np.ones(len(t)) if w is None else w
    if t.ndim == 2:
        ww = ww[:, None]
    mean = np.average(t, axis=0, weights=w)
    ss_res = np.sum(ww * (t - p) ** 2, axis=0)
    ss_tot = np.sum(ww * (t - mean) ** 2, axis=0)
    score = np.where(
        ss_tot > 0,
        1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
        np.where(ss_res == 0, 1.0, 0.0),
    )
    return float(np.mean(score))


# ----------------------------------------------------------------------------------------
# lookup by name and the binary report
# ----------------------------------------------------------------------------------------


def _tag(fn: Callable, needs_score: bool, greater_is_better: bool) -> Callable:
    fn.needs_score = needs_score  # takes scores/probabilities rather than labels
    fn.greater_is_better = greater_is_better
    return fn


def _f1_macro(y_true: Any, y_pred: Any) -> float:
    return f1(y_true, y_pred, average="macro")


_METRICS: dict[str, Callable] = {
    "accuracy": _tag(accuracy, False, True),
    "precision": _tag(precision, False, True),
    "recall": _tag(recall, False, True),
    "f1": _tag(f1, False, True),
    "f1_macro": _tag(_f1_macro, False, True),
    "roc_auc": _tag(roc_auc, True, True),
    "pr_auc": _tag(pr_auc, True, True),
    "log_loss": _tag(log_loss, True, False),
    "ks": _tag(ks_statistic, True, True),
    "mse": _tag(mse, False, False),
    "mae": _tag(mae, False, False),
    "r2": _tag(r2, False, True),
}
_ALIASES = {
    "acc": "accuracy",
    "auc": "roc_auc",
    "average_precision": "pr_auc",
    "ap": "pr_auc",
    "ks_statistic": "ks",
    "cross_entropy": "log_loss",
    "logloss": "log_loss",
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "r2_score": "r2",
}


def metric_names() -> list[str]:
    """Names :func:`get_metric` knows (aliases not included)."""
    return sorted(_METRICS)


def get_metric(name: str) -> Callable:
    """The metric function for ``name`` (case-insensitive; aliases like ``"auc"``, ``"ks"``).

    Each function carries ``needs_score`` (takes probabilities/scores, not labels) and
    ``greater_is_better``.
    """
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {metric_names()}")
    return _METRICS[key]


def _or_none(fn: Callable, *args: Any) -> float | None:
    try:
        return fn(*args)
    except DataError:
        return None


def binary_report(
    y_true: Any, proba: Any, threshold: float = 0.5, pos_label: Any = None
) -> dict[str, Any]:
    """Plain-Python summary of a binary classifier at ``threshold`` (predict positive if p >= t).

    Keys: n, threshold, accuracy, precision, recall, f1, roc_auc, pr_auc, ks, log_loss,
    positive_rate, confusion_matrix (``[[tn, fp], [fn, tp]]``). Metrics undefined for the data
    (say, ROC AUC with one class) are ``None``.
    """
    p = _scores(proba, "proba")
    pos = _positive_mask(y_true, pos_label, "binary_report")
    _same_length(("y_true", pos), ("proba", p))
    if len(pos) == 0:
        raise DataError("binary_report: no rows")
    pred = p >= threshold
    cm = confusion_matrix(pos, pred, labels=[False, True])
    return {
        "n": len(pos),
        "threshold": float(threshold),
        "accuracy": accuracy(pos, pred),
        "precision": precision(pos, pred, pos_label=True),
        "recall": recall(pos, pred, pos_label=True),
        "f1": f1(pos, pred, pos_label=True),
        "roc_auc": _or_none(roc_auc, pos, p),
        "pr_auc": _or_none(pr_auc, pos, p),
        "ks": _or_none(ks_statistic, pos, p),
        "log_loss": _or_none(log_loss, pos, np.clip(p, 0.0, 1.0)),
        "positive_rate": float(pos.mean()),
        "confusion_matrix": cm.tolist(),
    }
