"""Population stability: ``psi(expected, actual)``, ``ks(expected, actual)`` and
``monitor(model, data)`` against the bins stored in the model file at training time.

For bin shares e_b (training) and a_b (new rows), each floored at 1e-4 so an empty bin
stays finite::

    PSI = sum_b (a_b - e_b) ln(a_b / e_b)

Each term is that bin's *characteristic stability* contribution. Usual reading: below 0.1
stable, 0.1 to 0.25 worth watching, above 0.25 a shift. The score is the profile's
(:mod:`lepton_nn.runtime.profile`): binary, the network's logit (calibration maps are
monotone, so its bins are those of the calibrated probability); multiclass, the top class's
probability, plus one characteristic ``p_<class>`` per class probability (``class_scores``);
regression, the prediction.
Numeric columns use training deciles plus a bin of missing values; categorical columns one
bin per training category, one for unseen categories and one for missing values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_nn.errors import DataError
from lepton_nn.runtime.profile import bin_index, column_values, quantile_edges, task_scores

from . import _served

__all__ = ["EPS", "MonitorReport", "flag", "ks", "monitor", "psi", "psi_shares"]

EPS = 1e-4
WATCH, SHIFT = 0.1, 0.25


def psi_shares(expected: Any, actual: Any) -> tuple[float, np.ndarray]:
    """PSI of two share vectors, and its per-bin terms."""
    e = np.maximum(np.asarray(expected, np.float64), EPS)
    a = np.maximum(np.asarray(actual, np.float64), EPS)
    terms = (a - e) * np.log(a / e)
    return float(terms.sum()), terms


def psi(expected: Any, actual: Any, bins: int = 10) -> float:
    """PSI of numeric samples, with ``bins`` quantile bins of ``expected`` (NaN ignored)."""
    e, a = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    e, a = e[~np.isnan(e)], a[~np.isnan(a)]
    if e.size == 0 or a.size == 0:
        raise ValueError("psi: both samples need values")
    edges = quantile_edges(e, bins)
    k = len(edges) + 1
    shares = [
        np.bincount(np.searchsorted(edges, v, side="right"), minlength=k) / v.size for v in (e, a)
    ]
    return psi_shares(*shares)[0]


def ks(expected: Any, actual: Any) -> float:
    """Two-sample Kolmogorov-Smirnov distance: max |F_expected(v) - F_actual(v)|."""
    e = np.sort(np.asarray(expected, np.float64))
    a = np.sort(np.asarray(actual, np.float64))
    v = np.concatenate([e, a])
    fe = np.searchsorted(e, v, side="right") / e.size
    fa = np.searchsorted(a, v, side="right") / a.size
    return float(np.abs(fe - fa).max())


def flag(value: float) -> str:
    return "shift" if value > SHIFT else "watch" if value > WATCH else "stable"


@dataclass
class MonitorReport:
    """PSI of the score and of every column, with per-bin terms; ``to_json``/``to_markdown``."""

    rows: int
    training_rows: int
    score: dict
    features: list[dict] = field(default_factory=list)
    class_scores: list[dict] = field(default_factory=list)  # multiclass: one per class
    score_of: str = "logit"

    def flagged(self) -> list[str]:
        return [f["name"] for f in self.features if f["flag"] != "stable"]

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "training_rows": self.training_rows,
            "thresholds": {"watch": WATCH, "shift": SHIFT},
            "score_of": self.score_of,
            "score": self.score,
            "class_scores": self.class_scores,
            "features": self.features,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def _score_name(self) -> str:
        what = {"probability": "top-class probability"}.get(self.score_of, self.score_of)
        return f"score ({what})"

    def to_markdown(self) -> str:
        s = self.score
        out = [
            "# Population stability",
            "",
            f"{self.rows} new rows against {self.training_rows} training rows; "
            f"flags: watch > {WATCH}, shift > {SHIFT}.",
            "",
            "| characteristic | PSI | flag |",
            "|---|---|---|",
            f"| {self._score_name()} | {s['psi']:.4f} | {s['flag']} |",
        ]
        rest = [*self.class_scores, *self.features]
        out += [f"| {f['name']} | {f['psi']:.4f} | {f['flag']} |" for f in rest]
        for f in [{"name": self._score_name(), **s}, *rest]:
            out += ["", f"## {f['name']}", "", "| bin | expected | actual | PSI term |"]
            out.append("|---|---|---|---|")
            out += [
                f"| {b['bin']} | {b['expected']:.4f} | {b['actual']:.4f} | {b['term']:.4f} |"
                for b in f["bins"]
            ]
        return "\n".join(out) + "\n"


def _labels(spec: dict) -> list[str]:
    if "categories" in spec:
        return [*spec["categories"], "(other)", "(missing)"]
    e = [f"{v:.6g}" for v in spec["edges"]]
    if not e:
        return ["all", "(missing)"][: len(spec["expected"])]
    labels = [f"< {e[0]}"] + [f"[{a}, {b})" for a, b in zip(e, e[1:])] + [f">= {e[-1]}"]
    return labels + (["(missing)"] if "baseline" in spec else [])


def _characteristic(spec: dict, values: np.ndarray) -> dict:
    k = len(spec["expected"])
    counts = np.bincount(bin_index(spec, values), minlength=k)
    actual = counts / max(1, counts.sum())
    value, terms = psi_shares(spec["expected"], actual)
    bins = [
        {"bin": lab, "expected": float(e), "actual": float(a), "term": float(t)}
        for lab, e, a, t in zip(_labels(spec), spec["expected"], actual, terms)
    ]
    return {"psi": value, "flag": flag(value), "bins": bins}


def monitor(model_or_path: Any, data: Any) -> MonitorReport:
    """PSI of the score and every column of raw rows ``data`` against the training bins
    stored in the model file (a ``TabularModel``, ``InferenceModel`` or path)."""
    im = _served.served(model_or_path)
    if im.kind != "tabular" or im.preprocessing is None:
        raise DataError("monitor: needs a tabular model (one saved by 'lepton-nn train')")
    profile = _served.profile_of(im, "monitor")
    values, n = column_values(im.preprocessing, data)
    X = im.transform(data)
    per_class = []
    if im.task == "binary":
        z = _served.logits(im, X)
    else:
        z, p = task_scores(im.task, im.forward(X), im.target_scale, im._probabilities)
        if p is not None:  # multiclass: each class's probability
            names = im.classes.tolist() if im.classes is not None else range(p.shape[1])
            per_class = [
                {"name": f"p_{c}", "kind": "probability", **_characteristic(spec, p[:, k])}
                for k, (c, spec) in enumerate(zip(names, profile["scores"]))
            ]
    features = [
        {"name": spec["name"], "kind": spec["kind"], **_characteristic(spec, values[spec["name"]])}
        for spec in profile["columns"]
    ]
    score = _characteristic(profile["score"], z)
    of = profile.get("score_of", "logit")
    return MonitorReport(n, int(profile["rows"]), score, features, per_class, of)
