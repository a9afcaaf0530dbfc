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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_nn.errors import DataError

AVERAGES = ("binary", "macro", "micro", "weighted", None)


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
    n_cls = y_score.shape[1]
    if labels is not None:
        classes = np.asarray(labels)
    elif y.dtype.kind in "iu" and y.min() >= 0 and y.max() < n_cls:
        classes = np.arange(n_cls)
    else:
        classes = _union_labels(y)
    if len(classes) != n_cls:
        raise DataError(
            f"{who}: y_score has {n_cls} columns but there are {len(classes)} classes; "
            f"pass labels= in column order"
        )
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
        n_cls = p.shape[1]
        if labels is not None:
            classes = np.asarray(labels)
        elif y.dtype.kind in "iu" and y.min() >= 0 and y.max() < n_cls:
            classes = np.arange(n_cls)
        else:
            classes = _union_labels(y)
        if len(classes) != n_cls:
            raise DataError(
                f"log_loss: y_prob has {n_cls} columns but there are {len(classes)} classes; "
                f"pass labels= in column order"
            )
        k = _codes(y, classes)
        if (k < 0).any():
            bad = y[np.flatnonzero(k < 0)[0]]
            raise DataError(f"log_loss: label {bad!r} is not among {classes.tolist()}")
        q = np.clip(p[np.arange(len(y)), k], eps, 1 - eps).astype(np.float64)
        loss = -np.log(q)
    if len(loss) == 0:
        raise DataError("log_loss: no rows")
    return float(np.average(loss, weights=_weights(sample_weight, len(y))))


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
