"""The training profile of a tabular model (manifest ``"profile"``): the bins of the score and
of every raw column, with the training share of each, and the reason-code baseline.

Written at ``TabularModel.fit`` time from the training rows; read by
:func:`lepton_nn.risk.monitor` (population stability of new rows against these bins) and
:func:`lepton_nn.risk.reason_codes` (the baseline applicant). NumPy only (floor 6)::

    {"rows": N, "bins": B,
     "score": {"edges": [...], "expected": [...]},      # bins of the score (below)
     "score_of": "logit" | "probability" | "prediction", # absent in older files: "logit"
     "scores": [{"edges", "expected"}, ...],            # multiclass only: one per class
     "baseline_rule": "...", "baseline_rows": n,
     "columns": [
       {"name", "kind": "numeric", "edges": [e_1 < ... < e_m],
        "expected": [m + 2 shares: m + 1 value bins, then missing], "baseline": median},
       {"name", "kind": "categorical", "categories": [...],
        "expected": [K + 2 shares: the K categories, other, missing], "baseline": mode}]}

A value v falls in bin ``searchsorted(edges, v, side="right")`` (bin i holds
e_i <= v < e_{i+1}; the first and last bins are open). Edges are training quantiles at
1/B, ..., (B-1)/B (repeated values merged). The **baseline** is the median (numeric) or
mode (categorical) of each column over the *approved* training rows (P(positive) below the
decision threshold): the typical approved applicant, against whom reason codes are measured.

The **score** by task (``score_of``): binary, the network's logit z (calibration maps are
monotone, so these are also the calibrated probability's bins); multiclass, the top class's
probability max_k p_k, and ``scores[k]`` the bins of each class's probability p_k (softmax of
the network, before any calibration); regression, the prediction in target units. Multiclass
and regression targets have no approved class: their baseline is the preprocessing's fill
value of each column (``baseline_rows`` 0; a categorical column without a fill: null), the
row :mod:`.reasons` explains multiclass models against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lepton_nn.errors import ModelFormatError

from .preprocess import CATEGORICAL, Preprocessing, columns_of, to_categorical, to_numeric

__all__ = [
    "bin_index",
    "build_profile",
    "column_values",
    "parse_profile",
    "quantile_edges",
    "task_scores",
]

MAX_BINS = 1000
SCORE_OF = {"binary": "logit", "multiclass": "probability", "regression": "prediction"}


def column_values(pre: Preprocessing, rows: Any) -> tuple[dict[str, np.ndarray], int]:
    """Raw columns as the model reads them: numeric float64 (NaN missing), categorical object
    arrays of labels (None missing); and the row count."""
    cols, n, where, kinds = columns_of(rows, pre.names)
    out = {}
    for s in pre.columns:
        c = s["name"]
        if s["kind"] == CATEGORICAL:
            out[c] = cols[c] if kinds.get(c) == CATEGORICAL else to_categorical(cols[c], pre.na)
        else:
            out[c] = to_numeric(cols[c], c, pre.na, where, "but the column was numeric")
    return out, n


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Interior bin edges: the finite values' quantiles at 1/bins .. (bins-1)/bins, unique."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_index(spec: dict, values: np.ndarray) -> np.ndarray:
    """Bin of each value under a profile entry (score, numeric or categorical column)."""
    if "categories" in spec:
        lut = {c: i for i, c in enumerate(spec["categories"])}
        k = len(lut)
        return np.fromiter(
            (k + 1 if v is None else lut.get(v, k) for v in values), np.intp, len(values)
        )
    values = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(np.asarray(spec["edges"], np.float64), values, side="right")
    if "baseline" in spec:  # a raw numeric column: the last bin holds missing values
        idx[np.isnan(values)] = len(spec["edges"]) + 1
    return idx


def shares(spec: dict, values: np.ndarray, n_bins: int) -> np.ndarray:
    counts = np.bincount(bin_index(spec, values), minlength=n_bins).astype(np.float64)
    return counts / max(1.0, counts.sum())


def task_scores(
    task: str, out: np.ndarray, target_scale: Any = (0.0, 1.0), probabilities: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """The profiled score (N,) of a multiclass or regression model from its network output
    ``out`` (N, C) (``probabilities``: the network ends in a softmax), and for multiclass the
    class probabilities (N, C) whose columns ``scores`` bins (else None)."""
    out = np.asarray(out, np.float64).reshape(len(out), -1)
    if task == "regression":
        mu, sd = target_scale
        return out[:, 0] * sd + mu, None
    if not probabilities:
        e = np.exp(out - out.max(axis=1, keepdims=True))
        out = e / e.sum(axis=1, keepdims=True)
    return out.max(axis=1), out


def _score_bins(values: np.ndarray, bins: int) -> dict:
    values = np.asarray(values, np.float64)
    spec = {"edges": quantile_edges(values, bins).tolist()}
    spec["expected"] = shares(spec, values, len(spec["edges"]) + 1).tolist()
    return spec


def build_profile(
    pre: Preprocessing,
    rows: Any,
    score: np.ndarray,
    approved: np.ndarray | None,
    bins: int = 10,
    task: str = "binary",
    scores: np.ndarray | None = None,
) -> dict:
    """The profile of training ``rows`` with their ``score`` (N,) (the logit for binary, see
    :func:`task_scores` otherwise), the ``approved`` mask (binary; None: the baseline is the
    fill values) and, multiclass, the class probabilities ``scores`` (N, K)."""
    values, n = column_values(pre, rows)
    if approved is not None:
        approved = np.asarray(approved, bool)
        if not approved.any():  # nobody approved: the whole population is the baseline
            approved = np.ones(n, bool)
    columns = []
    for s in pre.columns:
        v = values[s["name"]]
        if s["kind"] == CATEGORICAL:
            spec: dict[str, Any] = {"name": s["name"], "kind": CATEGORICAL}
            spec["categories"] = [str(c) for c in s["categories"]]
            ok = [x for x in v[approved] if x is not None] if approved is not None else []
            labels, counts = np.unique(np.asarray(ok, dtype=str), return_counts=True)
            spec["baseline"] = str(labels[np.argmax(counts)]) if len(ok) else s["fill"]
            k = len(spec["categories"]) + 2
        else:
            spec = {"name": s["name"], "kind": "numeric"}
            spec["edges"] = quantile_edges(v, bins).tolist()
            a = v[approved & ~np.isnan(v)] if approved is not None else v[:0]
            spec["baseline"] = float(np.median(a)) if a.size else float(s["fill"])
            k = len(spec["edges"]) + 2
        spec["expected"] = shares(spec, v, k).tolist()
        columns.append(spec)
    out = {"rows": int(n), "bins": int(bins), "score": _score_bins(score, bins)}
    out["score_of"] = SCORE_OF[task]
    if task == "multiclass":
        out["scores"] = [_score_bins(p, bins) for p in np.asarray(scores, np.float64).T]
    if approved is None:
        out["baseline_rule"] = "the preprocessing's fill values (no approved class)"
        out["baseline_rows"] = 0
    else:
        out["baseline_rule"] = (
            "median / mode of the approved training rows (P(positive) < threshold)"
        )
        out["baseline_rows"] = int(approved.sum())
    out["columns"] = columns
    return out


def _fail(msg: str) -> ModelFormatError:
    return ModelFormatError(f"profile: {msg}")


def _numbers(v: Any, what: str, lo: float = -math.inf, hi: float = math.inf) -> list[float]:
    if not isinstance(v, list) or len(v) > MAX_BINS + 2:
        raise _fail(f"{what} must be a list of at most {MAX_BINS + 2} numbers")
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise _fail(f"{what} must hold numbers, got {x!r:.40}")
        if not (math.isfinite(float(x)) and lo <= x <= hi):
            raise _fail(f"{what} holds {x!r:.40}, outside [{lo}, {hi}]")
    return v


def _bins(spec: Any, what: str, extra: int) -> None:
    if not isinstance(spec, dict):
        raise _fail(f"{what} must be an object")
    edges = _numbers(spec.get("edges"), f"{what}: edges")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise _fail(f"{what}: edges must increase strictly")
    _shares(spec.get("expected"), f"{what}: expected", len(edges) + extra)


def _shares(v: Any, what: str, n: int) -> None:
    v = _numbers(v, what, 0.0, 1.0)
    if len(v) != n or abs(sum(v) - 1.0) > 1e-6:
        raise _fail(f"{what} must be {n} shares summing to 1")


def parse_profile(
    section: Any, preprocessing: Any, task: str | None = None, width: int | None = None
) -> dict:
    """Check an untrusted profile against the file's preprocessing config (and, when given,
    its ``task`` and network output ``width``: one ``scores`` entry per class); return it."""
    if not isinstance(section, dict):
        raise _fail("must be an object")
    for key, hi in (("rows", 2**53), ("bins", MAX_BINS), ("baseline_rows", 2**53)):
        v = section.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise _fail(f"{key} must be an int in [0, {hi}], got {v!r:.40}")
    if not isinstance(section.get("baseline_rule", ""), str):
        raise _fail("baseline_rule must be a string")
    _bins(section.get("score"), "score", 1)
    score_of = section.get("score_of", "logit")
    if score_of not in SCORE_OF.values() or (task is not None and score_of != SCORE_OF[task]):
        raise _fail(f"score_of {score_of!r:.40} does not fit a {task or 'tabular'} model")
    scores = section.get("scores")
    if (scores is None) != (score_of != "probability"):
        raise _fail("scores (one per class) go with, and only with, score_of 'probability'")
    if scores is not None:
        if not isinstance(scores, list) or not 2 <= len(scores) <= MAX_BINS:
            raise _fail(f"scores must list 2 to {MAX_BINS} classes' bins")
        if width is not None and len(scores) != width:
            raise _fail(f"scores has {len(scores)} entries for {width} classes")
        for i, spec in enumerate(scores):
            _bins(spec, f"scores[{i}]", 1)
    cols = section.get("columns")
    specs = preprocessing.get("columns") if isinstance(preprocessing, dict) else None
    if not isinstance(cols, list) or not isinstance(specs, list) or len(cols) != len(specs):
        raise _fail("columns must list every column of the preprocessing, in order")
    for c, s in zip(cols, specs):
        if not isinstance(c, dict) or not isinstance(s, dict) or c.get("name") != s.get("name"):
            raise _fail("columns must name the preprocessing's columns, in order")
        what = f"column {c['name']!r:.60}"
        if c.get("kind") != s.get("kind"):
            raise _fail(f"{what}: kind {c.get('kind')!r:.20} differs from the preprocessing")
        if c["kind"] == CATEGORICAL:
            cats = c.get("categories")
            if not isinstance(cats, list) or not all(isinstance(x, str) for x in cats):
                raise _fail(f"{what}: categories must be strings")
            base = c.get("baseline")  # null: the fill of a column filled with "missing"
            if len(cats) > MAX_BINS or not (base is None or isinstance(base, str)):
                raise _fail(f"{what}: too many categories, or a baseline that is not a string")
            _shares(c.get("expected"), f"{what}: expected", len(cats) + 2)
        else:
            _bins(c, what, 2)
            _numbers([c.get("baseline")], f"{what}: baseline")
    return section


def baseline_row(profile: dict) -> dict[str, list]:
    """The baseline applicant as one raw row (a dict of one-value columns)."""
    return {c["name"]: [c["baseline"]] for c in profile["columns"]}


def names(profile: dict) -> Sequence[str]:
    return [c["name"] for c in profile["columns"]]
