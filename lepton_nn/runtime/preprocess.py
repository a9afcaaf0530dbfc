"""Raw rows -> the network's float32 input, from a fitted ``Preprocessor`` config.

This is the one implementation of the preprocessing *transform*: the runtime uses it directly
and :meth:`lepton_nn.data.Preprocessor.transform` delegates to it. It imports NumPy and
:mod:`lepton_nn.errors` only (floor 6: never :mod:`lepton_nn.data`). Per raw column::

    numeric column      x -> (impute(x) - center) / scale                   1 feature
    categorical column  v -> one-hot over the training categories           K features
                        (an unknown category -> all zeros; missing -> the fill category)
    indicator           1.0 where the raw value was missing                 +1 feature

Config (``Preprocessor.to_config()``, format ``"lepton_nn.Preprocessor"``, version 1)::

    {"format", "version", "params": {"na_values": [...], ...}, "report": {...},
     "columns": [{"name", "kind": "numeric", "fill", "center", "scale", "indicator"}
               | {"name", "kind": "categorical", "fill", "categories", "indicator"}]}

Accepted raw rows: a dict of columns, one row as a dict, a list of dicts (by column name;
extra columns are ignored), a 2-D array or nested list in training column order (1-D for one
row), a pandas-like DataFrame, or a table read by :func:`lepton_nn.data.read_csv` (duck-typed:
``data``, ``kinds``, ``n_rows``, ``where``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from lepton_nn.errors import DataError, DataWarning, ModelFormatError

__all__ = [
    "CATEGORICAL",
    "CONFIG_FORMAT",
    "CONFIG_VERSION",
    "DEFAULT_NA",
    "NUMERIC",
    "Preprocessing",
    "categorical_each",
    "category_str",
    "check_column_spec",
    "columns_of",
    "is_frame",
    "is_missing",
    "parse_each",
    "parse_number",
    "parse_numeric",
    "to_categorical",
    "to_numeric",
]

NUMERIC = "numeric"
CATEGORICAL = "categorical"
CONFIG_FORMAT = "lepton_nn.Preprocessor"
CONFIG_VERSION = 1
DEFAULT_NA: tuple[str, ...] = ("", "NA", "NaN", "nan", "?", "NULL")

Locator = Callable[[int], str]
_WHY_NUMERIC = "but the column was numeric when the preprocessor was fitted"


# ------------------------------------------------------------------------- raw values


def is_missing(v: Any, na: frozenset[str]) -> bool:
    """True for ``None``, NaN, pandas' ``NA``/``NaT`` and the (stripped) ``na`` strings."""
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip() in na
    if isinstance(v, (float, np.floating)):
        return math.isnan(v)
    return type(v).__name__ in ("NAType", "NaTType")


def category_str(v: Any) -> str:
    """The category label of a non-missing value: strings stripped, ``1.0`` -> ``"1"``."""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def parse_number(v: Any) -> float | None:
    """``float(v)`` for numbers and numeric strings, ``None`` when ``v`` is not a number."""
    if isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


_PLAIN = frozenset({str, int, float, bool, type(None)})  # what JSON and CSV give
_NUMBER = (int, float, np.integer, np.floating, np.bool_)


def _distinct(values: Sequence[Any] | np.ndarray) -> dict[Any, Any] | None:
    """The column's distinct values as dict keys, in first-seen order, when converting each
    distinct value once gives every row what its own conversion would: plain types only,
    and no bools among other numbers (``True == 1``, but their labels differ). None: convert
    value by value."""
    types = set(map(type, values))
    if not types <= _PLAIN or (bool in types and (int in types or float in types)):
        return None
    return dict.fromkeys(values)


def _first(values: Sequence[Any] | np.ndarray, key: Any) -> int:
    """The index of the first value equal to the distinct value ``key``."""
    return next(i for i, v in enumerate(values) if v is key or v == key)


def parse_numeric(
    values: Sequence[Any] | np.ndarray, na: frozenset[str]
) -> tuple[np.ndarray, int | None]:
    """One column as float64 (NaN = missing), and the index of its first value that is not a
    number (None if every value is one; the array's values are then not to be used).

    Columns of numbers (and None) convert in one NumPy call; other plain columns (text) parse
    each distinct value once; anything else value by value (:func:`parse_each`, the
    reference: every path gives its numbers)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return values.astype(np.float64), None
    types = set(map(type, values))
    if all(t is type(None) or issubclass(t, _NUMBER) for t in types):
        return np.array(values, dtype=np.float64), None  # None -> NaN, numbers as float()
    memo = _distinct(values)
    if memo is None:
        return parse_each(values, na)
    for v in memo:  # in first-seen order: the first bad one is the first bad row's
        x = np.nan if is_missing(v, na) else parse_number(v)
        if x is None:
            return np.empty(len(values), dtype=np.float64), _first(values, v)
        memo[v] = x
    return np.fromiter(map(memo.__getitem__, values), np.float64, len(values)), None


def parse_each(
    values: Sequence[Any] | np.ndarray, na: frozenset[str]
) -> tuple[np.ndarray, int | None]:
    """:func:`parse_numeric` value by value (for any types; the array is filled only up to
    the first value that is not a number)."""
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if is_missing(v, na):
            out[i] = np.nan
            continue
        x = parse_number(v)
        if x is None:
            return out, i
        out[i] = x
    return out, None


def to_numeric(
    values: Sequence[Any] | np.ndarray, name: str, na: frozenset[str], where: Locator, why: str
) -> np.ndarray:
    """One column as float64 (NaN = missing); ``DataError`` at the first value not a number."""
    out, bad = parse_numeric(values, na)
    if bad is not None:
        v = values[bad]
        raise DataError(f"{where(bad)}, column {name!r}: {str(v)!r} is not a number, {why}")
    return out


def to_categorical(values: Sequence[Any] | np.ndarray, na: frozenset[str]) -> np.ndarray:
    """One column as an object array of ``str``, ``None`` for missing values (each distinct
    value labelled once when :func:`_distinct` allows, else as :func:`categorical_each`)."""
    memo = _distinct(values)
    if memo is None:
        return categorical_each(values, na)
    for v in memo:
        memo[v] = None if is_missing(v, na) else category_str(v)
    return np.fromiter(map(memo.__getitem__, values), object, len(values))


def categorical_each(values: Sequence[Any] | np.ndarray, na: frozenset[str]) -> np.ndarray:
    """:func:`to_categorical` value by value (for any types)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = None if is_missing(v, na) else category_str(v)
    return out


# ------------------------------------------------------------------------- input forms


def _row_index(i: int) -> str:
    return f"row index {i}"


def _is_table(data: Any) -> bool:
    """A :class:`lepton_nn.data.Table` (duck-typed, so that this floor never imports it)."""
    return all(hasattr(data, a) for a in ("data", "kinds", "n_rows", "where")) and isinstance(
        getattr(data, "data", None), Mapping
    )


def is_frame(data: Any) -> bool:
    """A pandas-like DataFrame (duck-typed; pandas is never imported here)."""
    return (
        not isinstance(data, (np.ndarray, Mapping))
        and hasattr(data, "columns")
        and hasattr(data, "dtypes")
        and hasattr(data, "__getitem__")
    )


def _frame_column(series: Any) -> np.ndarray:
    kind = getattr(getattr(series, "dtype", None), "kind", "O")
    if kind in "biuf":
        return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.asarray(series.to_numpy(dtype=object))


def columns_of(
    data: Any, names: Sequence[str]
) -> tuple[dict[str, Any], int, Locator, dict[str, str]]:
    """Raw columns by name, row count, a row locator and known kinds, for any input form."""
    if is_frame(data):
        present = {str(c): c for c in data.columns}
        for c in names:
            if c not in present:
                raise DataError(f"transform: column {c!r} is missing from the input frame")
        cols = {c: _frame_column(data[present[c]]) for c in names}
        n = len(next(iter(cols.values()))) if cols else 0
        return cols, n, _row_index, {}
    if _is_table(data):
        for c in names:
            if c not in data.data:
                src = getattr(data, "source", None) or "transform"
                head = f"{src}: row 1 (header)" if getattr(data, "source", None) else src
                raise DataError(
                    f"{head}, column {c!r}: missing from the input table (the model was "
                    f"trained with it); columns are {list(data.data)}"
                )
        return {c: data.data[c] for c in names}, data.n_rows, data.where, dict(data.kinds)
    if isinstance(data, Mapping):
        for c in names:
            if c not in data:
                raise DataError(f"transform: column {c!r} is missing from the input")
        if not all(np.ndim(data[c]) == 0 for c in names):
            cols = {
                c: data[c] if isinstance(data[c], np.ndarray) else np.asarray(data[c], dtype=object)
                for c in names
            }
            if any(v.ndim != 1 for v in cols.values()):
                raise DataError("transform: each column of a dict must be 1-D (or one value)")
            lengths = {len(v) for v in cols.values()}
            if len(lengths) > 1:
                raise DataError(f"transform: columns have different lengths {sorted(lengths)}")
            return cols, lengths.pop() if lengths else 0, _row_index, {}
        data = [data]  # a single row as a dict
    if isinstance(data, (list, tuple)) and not data:  # no rows
        return {c: np.empty(0, dtype=object) for c in names}, 0, _row_index, {}
    if isinstance(data, (list, tuple)) and isinstance(data[0], Mapping):
        n = len(data)
        if names and all(type(r) is dict for r in data):
            get = itemgetter(*names) if len(names) > 1 else lambda r: (r[names[0]],)
            try:  # one (n, C) object table in C; a missing key: the loop below names the row
                flat = np.fromiter(chain.from_iterable(map(get, data)), object, n * len(names))
                table = flat.reshape(n, len(names))
                return {c: table[:, j] for j, c in enumerate(names)}, n, _row_index, {}
            except KeyError:
                pass
        cols = {}
        for c in names:
            col = np.empty(n, dtype=object)
            for i, r in enumerate(data):
                if not isinstance(r, Mapping) or c not in r:
                    raise DataError(f"row index {i}, column {c!r}: missing from this row")
                col[i] = r[c]
            cols[c] = col
        return cols, n, _row_index, {}
    try:
        arr = np.asarray(data)
    except ValueError as exc:  # ragged nested lists
        raise DataError(f"transform: rows of different lengths ({exc})") from None
    if arr.ndim == 1 and arr.shape[0] == len(names):
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != len(names):
        raise DataError(
            f"transform: expected rows of {len(names)} columns {list(names)}, got shape {arr.shape}"
        )
    return {c: arr[:, j] for j, c in enumerate(names)}, arr.shape[0], _row_index, {}


# ------------------------------------------------------------------------- config


def _finite(v: Any, what: str) -> float:
    ok = not isinstance(v, bool) and isinstance(v, (int, float))
    try:  # an int beyond float range overflows float()
        ok = ok and math.isfinite(float(v))
    except OverflowError:
        ok = False
    if not ok:
        raise ModelFormatError(
            f"Preprocessor config: {what} must be a finite number, got {str(v)[:40]!r}"
        )
    return float(v)


def check_column_spec(s: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one column entry of a Preprocessor config; return a clean copy.

    Raises ``ModelFormatError`` for a bad value, ``KeyError``/``TypeError`` for a missing key
    or a non-object (callers wrap those as "malformed").
    """
    name, kind = s["name"], s["kind"]
    if not isinstance(name, str):
        raise ModelFormatError(f"Preprocessor config: column name {name!r} is not a string")
    out: dict[str, Any] = {"name": name, "kind": kind}
    if kind == NUMERIC:
        out["fill"] = _finite(s["fill"], f"{name}.fill")
        out["center"] = _finite(s["center"], f"{name}.center")
        out["scale"] = _finite(s["scale"], f"{name}.scale")
        if out["scale"] == 0.0:
            raise ModelFormatError(f"Preprocessor config: {name}.scale is zero")
    elif kind == CATEGORICAL:
        cats = s["categories"]
        if not isinstance(cats, list) or not all(isinstance(v, str) for v in cats):
            raise ModelFormatError(f"Preprocessor config: {name}.categories must be strings")
        if len(set(cats)) != len(cats):
            raise ModelFormatError(f"Preprocessor config: {name}.categories has duplicates")
        if s["fill"] is not None and not isinstance(s["fill"], str):
            raise ModelFormatError(f"Preprocessor config: {name}.fill must be a string")
        out["fill"] = s["fill"]
        out["categories"] = list(cats)
    else:
        raise ModelFormatError(f"Preprocessor config: column {name!r} has unknown kind {kind!r}")
    if not isinstance(s["indicator"], bool):
        raise ModelFormatError(f"Preprocessor config: {name}.indicator must be true or false")
    out["indicator"] = s["indicator"]
    return out


# ------------------------------------------------------------------------- transform


def _warn_unseen(name: str, labels: Any, rows: np.ndarray, where: Locator) -> None:
    """Count and report the rows whose category was not seen in training (not silent)."""
    rows = [int(i) for i in rows if labels[i] is not None]  # (missing without a fill: zeros)
    if rows:
        values = sorted({str(labels[i]) for i in rows})
        shown = ", ".join(repr(v) for v in values[:3]) + (" ..." if len(values) > 3 else "")
        warnings.warn(
            f"{where(rows[0])}, column {name!r}: {len(rows)} row(s) with a category not seen "
            f"in training ({shown}), encoded as all zeros",
            DataWarning,
            stacklevel=3,
        )


class Preprocessing:
    """A fitted preprocessing, compiled once into index arrays and lookup tables.

    ``transform(rows) -> (N, F)`` float32, with F = ``n_features_out``. Build it from checked
    column specs and NA strings, or from a whole config with :meth:`from_config`.
    """

    def __init__(self, columns: Sequence[Mapping[str, Any]], na_values: Sequence[str]) -> None:
        self.columns = [dict(s) for s in columns]
        self.names = [s["name"] for s in self.columns]
        if len(set(self.names)) != len(self.names):
            raise ModelFormatError("Preprocessor config: a column name appears twice")
        self.na = frozenset(str(v) for v in na_values)
        num_names, fill, center, scale, num_col, ind_src, ind_col = [], [], [], [], [], [], []
        self.categorical: list[tuple[str, dict[str, int], int, int, bool]] = []
        j = 0
        for s in self.columns:
            if s["kind"] == NUMERIC:
                num_names.append(s["name"])
                fill.append(s["fill"])
                center.append(s["center"])
                scale.append(s["scale"])
                num_col.append(j)
                j += 1
                if s["indicator"]:
                    ind_src.append(len(num_names) - 1)
                    ind_col.append(j)
            else:
                lut = {v: k for k, v in enumerate(s["categories"])}
                self.categorical.append(
                    (s["name"], lut, lut.get(s["fill"], -1), j, bool(s["indicator"]))
                )
                j += len(lut)
            j += int(s["indicator"])
        self.n_features_out = j
        self.numeric_names = num_names
        self.fill = np.array(fill, dtype=np.float64)
        self.center = np.array(center, dtype=np.float64)
        self.scale = np.array(scale, dtype=np.float64)
        self.numeric_cols = np.array(num_col, dtype=np.intp)
        self.indicator_src = np.array(ind_src, dtype=np.intp)
        self.indicator_cols = np.array(ind_col, dtype=np.intp)
        self.offsets = np.array([[t[3]] for t in self.categorical], dtype=np.intp).reshape(-1, 1)

    @classmethod
    def from_config(cls, cfg: Any) -> Preprocessing:
        """Validate a ``Preprocessor.to_config()`` dict (untrusted) and compile it."""
        try:
            if not isinstance(cfg, Mapping) or cfg.get("format") != CONFIG_FORMAT:
                fmt = cfg.get("format") if isinstance(cfg, Mapping) else cfg
                raise ModelFormatError(f"not a Preprocessor config (format={fmt!r})")
            if cfg.get("version") != CONFIG_VERSION:
                raise ModelFormatError(
                    f"Preprocessor config version {cfg.get('version')!r} "
                    f"is not supported (expected {CONFIG_VERSION})"
                )
            na = cfg["params"].get("na_values", DEFAULT_NA)
            if not isinstance(na, list) or not all(isinstance(v, str) for v in na):
                raise ModelFormatError("Preprocessor config: na_values must be a list of strings")
            columns = [check_column_spec(s) for s in cfg["columns"]]
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise ModelFormatError(f"Preprocessor config is malformed: {e!r:.200}") from None
        return cls(columns, na)

    def transform(self, data: Any) -> np.ndarray:
        """Raw rows (any form in the module docstring) -> (N, F) float32; every row, in order."""
        cols, n, where, kinds = columns_of(data, self.names)
        out = np.zeros((n, self.n_features_out), dtype=np.float32)
        names = self.numeric_names
        if names:
            x = self._numbers(cols, n, where)
            miss = np.isnan(x)
            # x = (impute(x) - center) / scale, then checked after the cast to float32 (an
            # infinite x gives an infinite scaled value: one check when all is well)
            x = np.where(miss, self.fill, x)
            with np.errstate(over="ignore", invalid="ignore"):
                scaled = ((x - self.center) / self.scale).astype(np.float32)
            if not np.isfinite(scaled).all():
                if np.isinf(x).any():
                    i, k = np.argwhere(np.isinf(x))[0]
                    raise DataError(f"{where(int(i))}, column {names[k]!r}: infinite value")
                i, k = np.argwhere(~np.isfinite(scaled))[0]
                raise DataError(
                    f"{where(int(i))}, column {names[k]!r}: value {x[i, k]:.6g} is too large: "
                    f"scaled as in training it is beyond float32 (about 3.4e38)"
                )
            out[:, self.numeric_cols] = scaled
            out[:, self.indicator_cols] = miss[:, self.indicator_src]
        if self.categorical:
            # per column: a code per distinct label (str or None; -1 unseen), then per row
            # in C; the ones of every column are set in one assignment
            codes = np.empty((len(self.categorical), n), dtype=np.intp)
            for m, (c, lut, fill, offset, indicator) in enumerate(self.categorical):
                keys, label = self._labels(cols[c], kinds.get(c) == CATEGORICAL)
                code = {k: fill if v is None else lut.get(v, -1) for k, v in label.items()}
                codes[m] = np.fromiter(map(code.__getitem__, keys), np.intp, n)
                if -1 in code.values():
                    labels = np.fromiter(map(label.__getitem__, keys), object, n)
                    _warn_unseen(c, labels, np.flatnonzero(codes[m] < 0), where)
                if indicator and None in label.values():
                    missing = {k: v is None for k, v in label.items()}
                    out[:, offset + len(lut)] = np.fromiter(map(missing.__getitem__, keys), bool, n)
            hit = codes >= 0
            out[np.nonzero(hit)[1], (codes + self.offsets)[hit]] = 1.0
        return out

    def _labels(self, raw: Any, labelled: bool) -> tuple[Any, dict[Any, str | None]]:
        """A categorical column as per-row keys and each distinct key's label (str, None
        for missing): the raw values themselves when :func:`_distinct` allows, else the
        labels of :func:`categorical_each` (``labelled``: raw holds labels already)."""
        memo = None if labelled else _distinct(raw)
        if memo is None:
            keys = raw if labelled else categorical_each(raw, self.na)
            return keys, {v: v for v in dict.fromkeys(keys)}
        for v in memo:
            memo[v] = None if is_missing(v, self.na) else category_str(v)
        return raw, memo

    def _numbers(self, cols: dict[str, Any], n: int, where: Locator) -> np.ndarray:
        """The numeric columns as (n, k) float64, NaN missing. Columns of other dtypes than
        numbers are parsed together, one after the other (:func:`parse_numeric`), so that the
        error names the first bad value of the first column that has one."""
        names = self.numeric_names
        x = np.empty((len(names), n), dtype=np.float64)
        rest = []
        for k, c in enumerate(names):
            v = cols[c]
            if isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
                x[k] = v
            else:
                rest.append(k)
        if rest:
            flat = [np.asarray(cols[names[k]], dtype=object) for k in rest]
            flat = flat[0] if len(flat) == 1 else np.concatenate(flat)
            parsed, bad = parse_numeric(flat, self.na)
            if bad is not None:
                c, i = names[rest[bad // n]], bad % n
                raise DataError(
                    f"{where(i)}, column {c!r}: {str(flat[bad])!r} is not a number, {_WHY_NUMERIC}"
                )
            x[rest] = parsed.reshape(len(rest), n)
        return x.T
