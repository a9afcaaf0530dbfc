"""Score metrics (ROC AUC, PR AUC, KS, log loss, the ROC curve) and calibration (Brier score,
reliability table, ECE) of :mod:`lepton_nn.metrics`, on the score or probability of the
positive class (conventions in that module's docstring). Every name is importable from
:mod:`lepton_nn.metrics` too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_nn.errors import DataError
from lepton_nn.metrics_inputs import (
    _1d,
    _codes,
    _column_classes,
    _positive_mask,
    _same_length,
    _scores,
    _weights,
)

# ----------------------------------------------------------------------------------------
# score metrics
# ----------------------------------------------------------------------------------------


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; tied values share the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return ranks


def _binary_auc(pos: np.ndarray, score: np.ndarray, who: str) -> float:
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            f"{who}: y_true holds a single class, so ROC AUC is undefined "
            f"(scikit-learn returns nan here)"
        )
    # Mann-Whitney U: the probability that a random positive outranks a random negative
    u = _average_ranks(score)[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _ovr(
    y_true: Any, y_score: np.ndarray, labels: Any, average: str | None, fn: Callable, who: str
) -> Any:
    """One-vs-rest average of a binary score metric over the columns of ``y_score``."""
    if average not in ("macro", "weighted", None):
        raise ValueError(f"{who}: average={average!r}; use 'macro', 'weighted' or None")
    y = _1d(y_true, "y_true")
    _same_length(("y_true", y), ("y_score", y_score))
    classes = _column_classes(y, y_score.shape[1], labels, who, "y_score")
    if np.isnan(y_score).any():
        raise DataError(f"{who}: y_score contains NaN")
    per = np.array(
        [fn(y == c, y_score[:, k], f"{who} (class {c!r})") for k, c in enumerate(classes)]
    )
    if average is None:
        return per
    if average == "weighted":
        prevalence = np.array([(y == c).sum() for c in classes], dtype=np.float64)
        return float(np.average(per, weights=prevalence))
    return float(per.mean())


def roc_auc(
    y_true: Any,
    y_score: Any,
    pos_label: Any = None,
    average: str | None = "macro",
    labels: Any = None,
) -> Any:
    """Area under the ROC curve, ties counted half (average ranks).

    Binary: a 1-D score. Multiclass: ``(N, C)`` scores, one-vs-rest, averaged ``macro``
    (unweighted) or ``weighted`` (by class prevalence); ``labels`` gives the column order.
    """
    s = np.asarray(y_score)
    if s.ndim == 2 and s.shape[1] > 2:
        return _ovr(y_true, s.astype(np.float64), labels, average, _binary_auc, "roc_auc")
    s = _scores(s)
    pos = _positive_mask(y_true, pos_label, "roc_auc")
    _same_length(("y_true", pos), ("y_score", s))
    return _binary_auc(pos, s, "roc_auc")


def _binary_clf_curve(pos: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cumulative (false positives, true positives) at each distinct threshold, high to low."""
    order = np.argsort(-score, kind="mergesort")
    s, p = score[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last row of each distinct score
    tps = np.cumsum(p)[last].astype(np.float64)
    fps = (last + 1) - tps
    return fps, tps, s[last]


def roc_curve(
    y_true: Any, y_score: Any, pos_label: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` over all distinct thresholds, starting at (0, 0, +inf)."""
    s = _scores(y_score)
    pos = _positive_mask(y_true, pos_label, "roc_curve")
    _same_length(("y_true", pos), ("y_score", s))
    fps, tps, thr = _binary_clf_curve(pos, s)
    if tps[-1] == 0 or fps[-1] == 0:
        raise DataError("roc_curve: y_true holds a single class, so the ROC curve is undefined")
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def ks_statistic(y_true: Any, y_score: Any, pos_label: Any = None) -> float:
    """Kolmogorov-Smirnov statistic: ``max |TPR - FPR|`` over thresholds (credit scoring).

    Equals the two-sample KS distance between the scores of positives and negatives.
    """
    fpr, tpr, _ = roc_curve(y_true, y_score, pos_label)
    return float(np.max(np.abs(tpr - fpr)))


def _binary_ap(pos: np.ndarray, score: np.ndarray, who: str) -> float:
    fps, tps, _ = _binary_clf_curve(pos, score)
    if tps[-1] == 0:
        raise DataError(
            f"{who}: y_true holds no positive row, so average precision is undefined "
            f"(scikit-learn returns 0.0 here)"
        )
    prec = tps / (tps + fps)
    rec = tps / tps[-1]
    # AP = sum_n (R_n - R_{n-1}) P_n, thresholds from high to low, R_0 = 0
    return float(np.sum(np.diff(np.r_[0.0, rec]) * prec))


def pr_auc(
    y_true: Any,
    y_score: Any,
    pos_label: Any = None,
    average: str | None = "macro",
    labels: Any = None,
) -> Any:
    """Average precision (scikit-learn's ``average_precision_score``): area under the PR steps.

    Binary: a 1-D score. Multiclass: ``(N, C)`` scores, one-vs-rest averaged like ``roc_auc``.
    """
    s = np.asarray(y_score)
    if s.ndim == 2 and s.shape[1] > 2:
        return _ovr(y_true, s.astype(np.float64), labels, average, _binary_ap, "pr_auc")
    s = _scores(s)
    pos = _positive_mask(y_true, pos_label, "pr_auc")
    _same_length(("y_true", pos), ("y_score", s))
    return _binary_ap(pos, s, "pr_auc")


def log_loss(
    y_true: Any, y_prob: Any, labels: Any = None, sample_weight: Any = None, pos_label: Any = None
) -> float:
    """Mean cross-entropy ``-log p(true class)``, probabilities clipped to ``[eps, 1 - eps]``.

    A 1-D ``y_prob`` is P(positive) of a binary target (so ``y_true`` may hold one class);
    an ``(N, C)`` array is per-class probabilities in ``labels`` order (default: 0..C-1 for
    integer targets, else the sorted labels). ``eps`` is the machine epsilon of ``y_prob``.
    """
    p = np.asarray(y_prob)
    if p.dtype.kind not in "fc":
        p = p.astype(np.float64)
    if p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise DataError("log_loss: y_prob must hold probabilities in [0, 1]")
    eps = np.finfo(p.dtype).eps
    y = _1d(y_true, "y_true")
    if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1):
        p = p.reshape(-1)
        _same_length(("y_true", y), ("y_prob", p))
        pos = _positive_mask(y, pos_label, "log_loss")
        q = np.clip(p, eps, 1 - eps).astype(np.float64)
        loss = -np.where(pos, np.log(q), np.log1p(-q))
    else:
        _same_length(("y_true", y), ("y_prob", p))
        classes = _column_classes(y, p.shape[1], labels, "log_loss", "y_prob")
        k = _codes(y, classes)
        if (k < 0).any():
            bad = y[np.flatnonzero(k < 0)[0]]
            raise DataError(f"log_loss: label {bad!r} is not among {classes.tolist()}")
        q = np.clip(p[np.arange(len(y)), k], eps, 1 - eps).astype(np.float64)
        loss = -np.log(q)
    if len(loss) == 0:
        raise DataError("log_loss: no rows")
    return float(np.average(loss, weights=_weights(sample_weight, len(y))))


# ------------------------------------------------------------------------- calibration


def brier_score(y_true: Any, proba: Any, pos_label: Any = None) -> float:
    """Mean squared error of P(positive): ``mean((p - [y == positive])^2)``."""
    p = _scores(proba, "proba")
    pos = _positive_mask(y_true, pos_label, "brier_score")
    _same_length(("y_true", pos), ("proba", p))
    return float(np.mean((p - pos) ** 2))


def reliability_table(y_true: Any, proba: Any, bins: int = 10, pos_label: Any = None) -> list:
    """Equal-width bins of P(positive) over [0, 1]: per non-empty bin ``{"lo", "hi", "n",
    "mean_predicted", "observed_rate"}`` (bin b holds b/B <= p < (b+1)/B; p = 1 in the last)."""
    p = _scores(proba, "proba")
    pos = _positive_mask(y_true, pos_label, "reliability_table")
    _same_length(("y_true", pos), ("proba", p))
    b = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    rows = []
    for k in range(bins):
        m = b == k
        if m.any():
            rows.append(
                {
                    "lo": k / bins,
                    "hi": (k + 1) / bins,
                    "n": int(m.sum()),
                    "mean_predicted": float(p[m].mean()),
                    "observed_rate": float(pos[m].mean()),
                }
            )
    return rows


def expected_calibration_error(
    y_true: Any, proba: Any, bins: int = 10, pos_label: Any = None
) -> float:
    """ECE = sum_b (n_b / N) |observed_rate_b - mean_predicted_b| over the
    :func:`reliability_table` bins (equal width)."""
    table = reliability_table(y_true, proba, bins, pos_label)
    n = sum(r["n"] for r in table)
    return float(sum(r["n"] * abs(r["observed_rate"] - r["mean_predicted"]) for r in table) / n)


def calibration_report(y_true: Any, proba: Any, bins: int = 10, pos_label: Any = None) -> dict:
    """``{"brier", "ece", "reliability"}`` of P(positive) (see the functions above)."""
    return {
        "brier": brier_score(y_true, proba, pos_label),
        "ece": expected_calibration_error(y_true, proba, bins, pos_label),
        "reliability": reliability_table(y_true, proba, bins, pos_label),
    }
