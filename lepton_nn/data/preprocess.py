"""Fitted, serializable preprocessing: duplicates, missing values, one-hot, scaling.

``Preprocessor`` learns everything from training rows only (``fit``) and then turns raw rows
from anywhere into a float32 matrix (``transform``)::

    numeric column      x -> (impute(x) - center) / scale                   1 feature
    categorical column  v -> one-hot over the training categories           K features
                        (an unknown category -> all zeros)
    missing_indicator   1.0 where the raw value was missing                 +1 feature

Its whole state is a JSON-able dict (``to_config`` / ``from_config``), so a saved model carries
it. Config layout (format ``"lepton_nn.Preprocessor"``, version 1)::

    {"format", "version", "params": {...}, "report": {...},
     "columns": [{"name", "kind": "numeric", "fill", "center", "scale", "indicator"}
               | {"name", "kind": "categorical", "fill", "categories", "indicator"}]}
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lepton_nn.data.table import NON_NUMERIC, Table
from lepton_nn.errors import DataError, ModelFormatError
from lepton_nn.runtime.preprocess import (
    CATEGORICAL,
    CONFIG_FORMAT,
    CONFIG_VERSION,
    DEFAULT_NA,
    NUMERIC,
    Preprocessing,
    check_column_spec,
    is_frame,
)

NUMERIC_STRATEGIES = ("median", "mean", "drop")
CATEGORICAL_STRATEGIES = ("most_frequent", "constant", "drop")
SCALINGS = ("standard", "minmax", "none")
MISSING_FEATURE = "<missing>"


def _as_table(
    data: Any,
    na_values: Sequence[str],
    column_types: Mapping[str, str] | None = None,
    non_numeric: str = "error",
) -> Table:
    """Any raw-rows form as a Table; a Table given is converted to ``column_types``."""
    kw = {"column_types": column_types, "na_values": na_values, "non_numeric": non_numeric}
    if isinstance(data, Table):
        return data.with_types(column_types, non_numeric) if column_types else data
    if is_frame(data):
        return Table.from_pandas(data, **kw)
    if isinstance(data, Mapping):
        return Table.from_arrays(data, **kw)
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], Mapping):
        return Table.from_records(data, **kw)
    return Table.from_arrays(np.asarray(data), **kw)


def _row_keys(table: Table, y: np.ndarray | None) -> list[tuple]:
    """One hashable key per row (NaN -> None so that missing equals missing)."""
    cols = []
    for c, a in table.data.items():
        if table.kinds[c] == NUMERIC:
            cols.append([None if v != v else v for v in a.tolist()])
        else:
            cols.append(a.tolist())
    if y is not None:
        cols.append(np.asarray(y).tolist())
    return list(zip(*cols, strict=True)) if cols else [()] * table.n_rows


class Preprocessor:
    """Impute, one-hot encode and scale a table; fit on training rows, transform anywhere.

    Parameters
    ----------
    numeric: ``"median" | "mean" | "drop"``; imputation of numeric columns. ``"drop"`` leaves
        rows with a missing value out of fitting (and out of ``fit_resample``); at transform
        time, where rows cannot be dropped, such values get the median.
    categorical: ``"most_frequent" | "constant" | "drop"``; ``"constant"`` fills ``fill_value``
        (it becomes a category of its own). ``"drop"`` falls back to most frequent at transform.
    scaling: ``"standard"`` ((x - mean) / std), ``"minmax"`` ((x - min) / (max - min)) or
        ``"none"``; numeric columns only (a zero spread scales by 1).
    missing_indicator: add a 0/1 feature ``"col=<missing>"`` for every column that had missing
        values in the training rows.
    drop_duplicates: leave exact duplicate rows (features and target) out of fitting.
    column_types: ``{column: "numeric" | "categorical"}`` declared kinds (else inferred: see
        :func:`~lepton_nn.data.table.infer_column`).
    drop: columns left out (IDs, leaks); they are ignored at transform too.
    non_numeric: ``"error"`` (a column of numbers with a few text values is a DataError
        naming the rows) or ``"missing"`` (those values become missing, with a warning).

    After ``fit``: ``columns_`` (per-column state), ``kept_index_``, ``feature_names_out``,
    ``groups_`` and ``report_`` with ``n_rows_in``, ``duplicates_dropped``,
    ``rows_dropped_missing``, ``n_rows_fit``, ``missing_values`` (per column, in the rows given
    to ``fit``), ``n_missing`` and ``n_features_out``.
    """

    def __init__(
        self,
        numeric: str = "median",
        categorical: str = "most_frequent",
        scaling: str = "standard",
        fill_value: str = "missing",
        missing_indicator: bool = False,
        drop_duplicates: bool = True,
        na_values: Sequence[str] = DEFAULT_NA,
        column_types: Mapping[str, str] | None = None,
        drop: Sequence[str] = (),
        non_numeric: str = "error",
    ) -> None:
        for name, v, allowed in (
            ("numeric", numeric, NUMERIC_STRATEGIES),
            ("categorical", categorical, CATEGORICAL_STRATEGIES),
            ("scaling", scaling, SCALINGS),
            ("non_numeric", non_numeric, NON_NUMERIC),
        ):
            if v not in allowed:
                raise ValueError(f"Preprocessor: {name}={v!r}; choose one of {allowed}")
        self.numeric = numeric
        self.categorical = categorical
        self.scaling = scaling
        self.fill_value = str(fill_value)
        self.missing_indicator = bool(missing_indicator)
        self.drop_duplicates = bool(drop_duplicates)
        self.na_values = tuple(na_values)
        self.column_types = dict(column_types or {})
        self.drop = [drop] if isinstance(drop, str) else [str(c) for c in drop]
        self.non_numeric = non_numeric
        self.columns_: list[dict[str, Any]] | None = None
        self.report_: dict[str, Any] = {}
        self.kept_index_: np.ndarray | None = None
        self._plan_cache: tuple[list, Preprocessing] | None = None

    # -- fitting -------------------------------------------------------------------------
    def as_table(self, data: Any) -> Table:
        """Raw rows as the Table that ``fit`` learns from: declared types, ``drop`` left out."""
        table = _as_table(data, self.na_values, self.column_types, self.non_numeric)
        where = table.source or "fit"
        for c in self.drop:
            if c not in table.data:
                raise DataError(f"{where}: column {c!r} to drop is not in the data")
        return table.drop(self.drop) if self.drop else table

    def fit(self, data: Any, y: Any = None, sample_weight: Any = None) -> Preprocessor:
        """Learn fills, categories and scales from ``data`` (a Table, dict, records or array).

        ``y`` (or the table's target) only takes part in duplicate detection. Sets
        ``kept_index_`` (rows of ``data`` used for fitting), ``report_`` and
        ``feature_names_out`` / ``groups_``.

        ``sample_weight`` (N,) non-negative: every statistic (median, mean, std, category
        counts) is that of the rows repeated weight times, so integer weight k == k copies of
        the row and weight 0 == the row left out (also out of ``kept_index_``; counted in
        ``report_["rows_zero_weight"]``). Duplicates are looked for among the rows of positive
        weight only, and a kept row keeps its own weight (a weight declares a multiplicity, it
        is not a duplicate). ``None`` fits exactly as unweighted rows.

        A :func:`~lepton_nn.data.stream` (or chunks of one) is fitted in one pass in bounded
        memory: see :mod:`lepton_nn.data.stream_fit` for what is exact and what is not.
        """
        from lepton_nn.data.stream import is_chunked

        if is_chunked(data):
            if y is not None or sample_weight is not None:
                raise DataError("fit: a stream carries its own target; y and weights not taken")
            from lepton_nn.data.stream_fit import fit_stream

            return fit_stream(self, data)
        return self.fit_table(self.as_table(data), y, sample_weight)

    def fit_table(self, table: Table, y: Any = None, sample_weight: Any = None) -> Preprocessor:
        """``fit`` on a table already through :meth:`as_table` (no conversion, no drop)."""
        if y is None:
            y = table.target
        elif len(y) != table.n_rows:
            raise DataError(f"fit: data has {table.n_rows} rows but y has {len(y)}")
        n = table.n_rows
        if n == 0:
            raise DataError("fit: no rows")
        w = None if sample_weight is None else _check_weights(sample_weight, n)
        for c in table.numeric_columns:
            bad = np.flatnonzero(np.isinf(table.data[c]))
            if bad.size:
                raise DataError(f"{table.where(bad[0])}, column {c!r}: infinite value")

        keep = np.ones(n, dtype=bool) if w is None else w > 0
        n_dup = 0
        if self.drop_duplicates:
            seen: set[tuple] = set()
            for i, key in enumerate(_row_keys(table, y)):
                if not keep[i]:
                    continue
                if key in seen:
                    keep[i] = False
                else:
                    seen.add(key)
            n_dup = int(n - keep.sum()) - (0 if w is None else int(np.sum(w == 0)))
        missing = {c: self._missing_mask(table, c) for c in table.columns}
        drop_cols = [
            c
            for c in table.columns
            if (table.kinds[c] == NUMERIC and self.numeric == "drop")
            or (table.kinds[c] == CATEGORICAL and self.categorical == "drop")
        ]
        before = int(keep.sum())
        for c in drop_cols:
            keep &= ~missing[c]
        n_drop_missing = before - int(keep.sum())
        if not keep.any():
            raise DataError(
                "fit: no rows left after dropping duplicates and rows with missing values"
            )
        kept = np.flatnonzero(keep)

        wk = None if w is None else w[kept]
        self.columns_ = [
            self._fit_column(table, c, kept, missing[c][kept], wk) for c in table.columns
        ]
        per_col = {c: int(m.sum()) for c, m in missing.items() if m.any()}
        self.kept_index_ = kept
        self.report_ = {
            "n_rows_in": n,
            "duplicates_dropped": n_dup,
            "rows_dropped_missing": n_drop_missing,
            "n_rows_fit": int(kept.size),
            "missing_values": per_col,
            "n_missing": int(sum(per_col.values())),
            "n_features_out": len(self.feature_names_out),
        }
        if w is not None:
            self.report_["rows_zero_weight"] = int(np.sum(w == 0))
        return self

    def _missing_mask(self, table: Table, c: str) -> np.ndarray:
        a = table.data[c]
        if table.kinds[c] == NUMERIC:
            return np.isnan(a)
        return np.fromiter((v is None for v in a), dtype=bool, count=len(a))

    def _fit_column(
        self, table: Table, c: str, kept: np.ndarray, miss: np.ndarray, w: np.ndarray | None
    ) -> dict:
        """One column's state from the kept rows ``kept``; ``w`` their weights (all > 0)."""
        a = table.data[c][kept]
        spec: dict[str, Any] = {"name": c, "kind": table.kinds[c]}
        if table.kinds[c] == NUMERIC:
            vals = a[~miss]
            if vals.size == 0:
                raise DataError(
                    f"{table.source or 'fit'}: column {c!r} has no values in the training rows"
                )
            with np.errstate(over="ignore", invalid="ignore"):
                how = "mean" if self.numeric == "mean" else "median"
                fill = _stat(how, vals, None if w is None else w[~miss])
                full = np.where(miss, fill, a)
                if self.scaling == "standard":
                    center, scale = _stat("mean", full, w), _stat("std", full, w)
                elif self.scaling == "minmax":
                    center, scale = float(np.min(full)), float(np.max(full) - np.min(full))
                else:
                    center, scale = 0.0, 1.0
            if not all(map(math.isfinite, (fill, center, scale))):
                j = int(np.argmax(np.abs(full)))
                raise DataError(
                    f"{table.where(int(kept[j]))}, column {c!r}: value {full[j]:.6g} is too "
                    f"large to scale (the column's mean or spread overflows); rescale the "
                    f"column or drop it"
                )
            if not scale > 0.0 or np.ptp(vals) == 0:  # constant values: their std (and the
                scale = 1.0  # fill's) may round to ~1e-17, not 0; dividing by that blows up
            spec.update(fill=fill, center=center, scale=scale)
        else:
            counts: Counter = Counter()
            for v, k in zip(a.tolist(), [1] * len(a) if w is None else w.tolist(), strict=True):
                if v is not None:
                    counts[v] += k
            if not counts and self.categorical != "constant":
                raise DataError(
                    f"{table.source or 'fit'}: column {c!r} has no values in the training rows"
                )
            # most frequent; ties go to the first in sorted order (deterministic)
            top = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counts else None
            fill = self.fill_value if self.categorical == "constant" else top
            cats = set(counts)
            if miss.any():
                cats.add(fill)
            spec.update(fill=fill, categories=sorted(cats))
        spec["indicator"] = bool(self.missing_indicator and miss.any())
        return spec

    # -- output layout -------------------------------------------------------------------
    def _check_fitted(self) -> list[dict[str, Any]]:
        if self.columns_ is None:
            raise DataError("Preprocessor is not fitted yet: call fit() first")
        return self.columns_

    @property
    def feature_names_in(self) -> list[str]:
        """The raw column names, in training order."""
        return [s["name"] for s in self._check_fitted()]

    @property
    def feature_names_out(self) -> list[str]:
        """Output feature names: ``"Age"``, ``"Home=rent"``, ``"Income=<missing>"``."""
        names: list[str] = []
        for s in self._check_fitted():
            if s["kind"] == NUMERIC:
                names.append(s["name"])
            else:
                names.extend(f"{s['name']}={v}" for v in s["categories"])
            if s["indicator"]:
                names.append(f"{s['name']}={MISSING_FEATURE}")
        return names

    @property
    def groups_(self) -> dict[str, list[int]]:
        """``{raw column: [output feature indices]}``, one-hot and indicator included."""
        out: dict[str, list[int]] = {}
        j = 0
        for s in self._check_fitted():
            width = (1 if s["kind"] == NUMERIC else len(s["categories"])) + int(s["indicator"])
            out[s["name"]] = list(range(j, j + width))
            j += width
        return out

    @property
    def n_features_out(self) -> int:
        return len(self.feature_names_out)

    # -- transforming --------------------------------------------------------------------
    def _compiled(self) -> Preprocessing:
        """The fitted state compiled for ``transform`` (once per fitted state).

        The transform itself lives in :mod:`lepton_nn.runtime.preprocess`, shared with the
        inference runtime, so a saved pipeline preprocesses exactly as it did here.
        """
        specs = self._check_fitted()
        if self._plan_cache is None or self._plan_cache[0] is not specs:
            self._plan_cache = (specs, Preprocessing(specs, self.na_values))
        return self._plan_cache[1]

    def transform(self, data: Any) -> np.ndarray:
        """Raw rows -> (N, F) float32 features.

        ``data``: a Table, a DataFrame, a dict of columns, one row as a dict, a list of dicts
        (all by column name; extra columns are ignored), or a 2-D array (1-D for one row)
        with the training column order. Every row comes out, in order.
        """
        compiled = self._compiled()
        if is_frame(data):
            data = Table.from_pandas(data, na_values=self.na_values)
        return compiled.transform(data)

    def fit_transform(self, data: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        """``fit(data, y, sample_weight)`` then ``transform(data)``: every row comes out."""
        return self.fit(data, y, sample_weight).transform(data)

    def fit_resample(self, data: Any, y: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Fit, then return ``(X, y)`` for the training rows kept (no duplicates, no dropped rows).

        ``y`` defaults to the table's target; it is ``None`` if there is none.
        """
        table = self.as_table(data)
        if y is None:
            y = table.target
        self.fit_table(table, y)
        kept = self.kept_index_
        X = self.transform(table.take(kept))
        return X, None if y is None else np.asarray(y)[kept]

    # -- state -----------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "scaling": self.scaling,
            "fill_value": self.fill_value,
            "missing_indicator": self.missing_indicator,
            "drop_duplicates": self.drop_duplicates,
            "na_values": list(self.na_values),
            "column_types": dict(self.column_types),
            "drop": list(self.drop),
            "non_numeric": self.non_numeric,
        }

    def to_config(self) -> dict[str, Any]:
        """The fitted state as plain str/int/float/bool/None/list/dict (JSON-able, exact floats)."""
        specs = self._check_fitted()
        return {
            "format": CONFIG_FORMAT,
            "version": CONFIG_VERSION,
            "params": self.get_params(),
            "columns": [_plain(s) for s in specs],
            "report": _plain(self.report_),
        }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Preprocessor:
        """Rebuild a fitted Preprocessor from :meth:`to_config` output (validated)."""
        try:
            if cfg.get("format") != CONFIG_FORMAT:
                raise ModelFormatError(f"not a Preprocessor config (format={cfg.get('format')!r})")
            if cfg.get("version") != CONFIG_VERSION:
                raise ModelFormatError(
                    f"Preprocessor config version {cfg.get('version')!r} "
                    f"is not supported (expected {CONFIG_VERSION})"
                )
            params = dict(cfg["params"])
            params["na_values"] = [str(v) for v in params.get("na_values", DEFAULT_NA)]
            pre = cls(**params)
            pre.columns_ = [check_column_spec(s) for s in cfg["columns"]]
            names = [s["name"] for s in pre.columns_]
            if len(set(names)) != len(names):
                raise ModelFormatError("Preprocessor config: a column name appears twice")
            pre.report_ = dict(cfg.get("report") or {})
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelFormatError(f"Preprocessor config is malformed: {e!r}") from None
        return pre

    def __repr__(self) -> str:
        state = "unfitted" if self.columns_ is None else f"{self.n_features_out} features out"
        return (
            f"Preprocessor(numeric={self.numeric!r}, categorical={self.categorical!r}, "
            f"scaling={self.scaling!r}; {state})"
        )


def _check_weights(sample_weight: Any, n: int) -> np.ndarray:
    """``sample_weight`` as (n,) float64, finite, >= 0, not all zero (else a DataError)."""
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("fit: sample_weight is not numeric") from None
    if w.shape != (n,):
        raise DataError(f"fit: sample_weight has shape {w.shape}, expected ({n},)")
    if not np.isfinite(w).all() or (w < 0).any():
        raise DataError("fit: sample_weight must be finite and non-negative")
    if not (w > 0).any():
        raise DataError("fit: every sample_weight is zero")
    return w


def _weighted(how: str, v: np.ndarray, w: np.ndarray) -> float:
    """Statistic ``how`` of ``v`` (N,) with weights ``w`` (N,) > 0, equal to that of the rows
    repeated ``w_i`` times for integer weights (W = sum w)::

        mean    sum(w v) / W
        std     sqrt(sum(w (v - mean)^2) / W)                      (ddof 0, as np.std)
        median  (v_(lo) + v_(hi)) / 2 over v sorted, c_k = cumulative weight,
                lo = first k with 2 c_k >= W, hi = first k with 2 c_k > W

    (for W even the two middle copies, for W odd the middle one twice: np.median's
    convention). With all weights 1 each equals the NumPy statistic bit for bit.
    """
    if how == "median":
        order = np.argsort(v, kind="stable")
        s, c2 = v[order], 2.0 * np.cumsum(w[order])
        lo, hi = np.searchsorted(c2, c2[-1] / 2, "left"), np.searchsorted(c2, c2[-1] / 2, "right")
        return float(s[lo]) if lo == hi else float((s[lo] + s[hi]) / 2)
    total = np.sum(w)
    mean = np.sum(w * v) / total
    if how == "mean":
        return float(mean)
    d = v - mean
    return float(np.sqrt(np.sum(w * (d * d)) / total))


_NUMPY = {"mean": np.mean, "median": np.median, "std": np.std}


def _stat(how: str, v: np.ndarray, w: np.ndarray | None = None) -> float:
    """Statistic ``how`` ("mean", "median", "std") of ``v``, weighted by ``w`` if given
    (:func:`_weighted`), recomputed as ``m * stat(v / m)``, m = max |v|, if the plain sum of
    values or squares overflowed (a column of values near 1e300)."""

    def fn(x: np.ndarray) -> float:
        return float(_NUMPY[how](x)) if w is None else _weighted(how, x, w)

    r = fn(v)
    if not math.isfinite(r) and np.isfinite(v).all():
        m = float(np.max(np.abs(v)))
        r = m * fn(v / m)
    return r


def _plain(obj: Any) -> Any:
    """Convert NumPy scalars/arrays inside dicts and lists to plain Python values."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
