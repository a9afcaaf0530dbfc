"""``fairness(model, data, y, group)``: how a binary model's decisions treat groups.

A row is *declined* when the model predicts the adverse class (``adverse=``, default the
positive class) and *approved* otherwise; "positive" below means the adverse label. Per
group g (the protected attribute need not be a model input)::

    approval_rate_g = P(approved | g)
    tpr_g = P(declined | adverse, g)       fpr_g = P(declined | not adverse, g)

    demographic_parity_ratio  = min_g approval_rate_g / max_g approval_rate_g
                                (the four-fifths rule passes when >= 0.8)
    equalized_odds_difference = max(max_g tpr_g - min_g tpr_g, max_g fpr_g - min_g fpr_g)

Confidence intervals: percentile bootstrap (rows resampled with replacement, ``n_boot``
times, seeded) at level ``1 - alpha``. A rate undefined for a group (no rows of that kind)
is NaN and left out of the min/max.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton_nn.errors import DataError

from . import _served

__all__ = ["FairnessReport", "fairness", "group_rates"]


def _rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def group_rates(declined: np.ndarray, adverse: np.ndarray, codes: np.ndarray, k: int) -> dict:
    """Per-group counts and rates, and the two summary figures (see the module docstring)."""
    n = np.bincount(codes, minlength=k).astype(float)
    pos = np.bincount(codes, adverse, minlength=k)
    dec = np.bincount(codes, declined, minlength=k)
    tp = np.bincount(codes, declined & adverse, minlength=k)
    fp = dec - tp
    approval, tpr, fpr = _rate(n - dec, n), _rate(tp, pos), _rate(fp, n - pos)

    def spread(r: np.ndarray) -> float:
        r = r[~np.isnan(r)]
        return float(r.max() - r.min()) if r.size else math.nan

    a = approval[~np.isnan(approval)]
    dpr = float(a.min() / a.max()) if a.size and a.max() > 0 else math.nan
    return {
        "n": n,
        "approval_rate": approval,
        "tpr": tpr,
        "fpr": fpr,
        "demographic_parity_ratio": dpr,
        "equalized_odds_difference": max(spread(tpr), spread(fpr)),
    }


@dataclass
class FairnessReport:
    groups: list[dict]
    demographic_parity_ratio: float
    equalized_odds_difference: float
    ci: dict
    four_fifths_pass: bool

    def to_dict(self) -> dict:
        return {
            "groups": self.groups,
            "demographic_parity_ratio": self.demographic_parity_ratio,
            "equalized_odds_difference": self.equalized_odds_difference,
            "four_fifths_pass": self.four_fifths_pass,
            "ci": self.ci,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=float)

    def card_table(self) -> dict:
        """The per-group rates as a model-card table (:mod:`lepton_nn.risk.card`)."""
        cols = ["group", "n", "approval_rate", "tpr", "fpr"]
        return {"columns": cols, "rows": [[g[c] for c in cols] for g in self.groups]}


def _interval(values: Any, q: list[float]) -> np.ndarray:
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    return np.percentile(v, q) if v.size else np.full(2, math.nan)


def _nan_none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def fairness(
    model: Any,
    data: Any,
    y: Any,
    group: Any,
    *,
    adverse: Any = None,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> FairnessReport:
    """Per-group approval rate, TPR and FPR of ``model``'s decisions on ``data`` with labels
    ``y``; ``group``: a column name of ``data`` or an array of group labels, one per row."""
    im = _served.served(model)
    _served.binary(im, "fairness")
    sign = _served.adverse_sign(im, adverse)
    classes = im.classes.tolist() if im.classes is not None else [0, 1]
    bad = classes[1] if sign > 0 else classes[0]
    pred = np.asarray(im.predict(data))
    y = np.asarray(getattr(data, "target", None) if y is None else y)
    if isinstance(group, str):
        from lepton_nn.runtime.preprocess import columns_of

        cols, _, _, _ = columns_of(data, [group])
        g = np.asarray(cols[group], dtype=object)
    else:
        g = np.asarray(group, dtype=object)
    if not (len(y) == len(pred) == len(g)):
        raise DataError(f"fairness: {len(pred)} rows, {len(y)} labels, {len(g)} group values")
    labels, codes = np.unique(np.asarray([str(v) for v in g]), return_inverse=True)
    declined = pred.astype(str) == str(bad)
    adv = y.astype(str) == str(bad)
    k = len(labels)
    r = group_rates(declined, adv, codes, k)
    rng = np.random.default_rng(seed)
    boot = {"demographic_parity_ratio": [], "equalized_odds_difference": []}
    per = {"approval_rate": [], "tpr": [], "fpr": []}
    for _ in range(n_boot):
        i = rng.integers(0, len(pred), len(pred))
        b = group_rates(declined[i], adv[i], codes[i], k)
        for key in boot:
            boot[key].append(b[key])
        for key in per:
            per[key].append(b[key])
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    ci = {key: [_nan_none(v) for v in _interval(vals, q)] for key, vals in boot.items()}
    groups = []
    for j, lab in enumerate(labels.tolist()):
        row: dict[str, Any] = {"group": lab, "n": int(r["n"][j])}
        for key in per:
            row[key] = _nan_none(r[key][j])
            lo_hi = _interval(np.asarray(per[key])[:, j], q) if n_boot else [math.nan] * 2
            row[f"{key}_ci"] = [_nan_none(v) for v in lo_hi]
        groups.append(row)
    dpr = r["demographic_parity_ratio"]
    return FairnessReport(
        groups, dpr, r["equalized_odds_difference"], ci, bool(not math.isnan(dpr) and dpr >= 0.8)
    )
