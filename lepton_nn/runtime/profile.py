"""The training profile of a tabular model (manifest ``"profile"``): the bins of the score and
of every raw column, with the training share of each, and the reason-code baseline.

Written at ``TabularModel.fit`` time from the training rows; read by
:func:`lepton_nn.risk.monitor` (population stability of new rows against these bins) and
:func:`lepton_nn.risk.reason_codes` (the baseline applicant). NumPy only (floor 6)::

    {"rows": N, "bins": B,
     "score": {"edges": [...], "expected": [...]},      # bins of the logit z
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lepton_nn.errors import ModelFormatError

from .preprocess import CATEGORICAL, Preprocessing, columns_of, to_categorical, to_numeric

__all__ = ["bin_index", "build_profile", "column_values", "parse_profile", "quantile_edges"]

MAX_BINS = 1000


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


def build_profile(
    pre: Preprocessing, rows: Any, logits: np.ndarray, approved: np.ndarray, bins: int = 10
) -> dict:
    """The profile of training ``rows`` with network ``logits`` (N,) and an ``approved`` mask."""
    values, n = column_values(pre, rows)
    approved = np.asarray(approved, bool)
    if not approved.any():  # nobody approved: the whole population is the baseline
        approved = np.ones(n, bool)
    score = {"edges": quantile_edges(np.asarray(logits, np.float64), bins).tolist()}
    score["expected"] = shares(score, logits, len(score["edges"]) + 1).tolist()
    columns = []
    for s in pre.columns:
        v = values[s["name"]]
        if s["kind"] == CATEGORICAL:
            spec: dict[str, Any] = {"name": s["name"], "kind": CATEGORICAL}
            spec["categories"] = [str(c) for c in s["categories"]]
            ok = [x for x in v[approved] if x is not None]
            labels, counts = np.unique(np.asarray(ok, dtype=str), return_counts=True)
            spec["baseline"] = str(labels[np.argmax(counts)]) if len(ok) else s["fill"]
            k = len(spec["categories"]) + 2
        else:
            spec = {"name": s["name"], "kind": "numeric"}
            spec["edges"] = quantile_edges(v, bins).tolist()
            a = v[approved & ~np.isnan(v)]
            spec["baseline"] = float(np.median(a)) if a.size else float(s["fill"])
            k = len(spec["edges"]) + 2
        spec["expected"] = shares(spec, v, k).tolist()
        columns.append(spec)
    return {
        "rows": int(n),
        "bins": int(bins),
        "score": score,
        "baseline_rule": "median / mode of the approved training rows (P(positive) < threshold)",
        "baseline_rows": int(approved.sum()),
        "columns": columns,
    }


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


def parse_profile(section: Any, preprocessing: Any) -> dict:
    """Check an untrusted profile against the file's preprocessing config; return it."""
    if not isinstance(section, dict):
        raise _fail("must be an object")
    for key, hi in (("rows", 2**53), ("bins", MAX_BINS), ("baseline_rows", 2**53)):
        v = section.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise _fail(f"{key} must be an int in [0, {hi}], got {v!r:.40}")
    if not isinstance(section.get("baseline_rule", ""), str):
        raise _fail("baseline_rule must be a string")
    _bins(section.get("score"), "score", 1)
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
            if len(cats) > MAX_BINS or not isinstance(c.get("baseline"), str):
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
