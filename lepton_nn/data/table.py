"""A small column table (NumPy only; files are read by :mod:`.csv_reader`).

A :class:`Table` holds named columns of one of two kinds:

- ``"numeric"``: a float64 array, missing values as NaN;
- ``"categorical"``: an object array of ``str``, missing values as ``None``.

and, optionally, a separate ``target`` array (int64 or float64 if every label is a number,
else an object array of ``str``). Tables read from a file remember the file and the line each
row came from, so later errors (say, in :class:`~lepton_nn.data.Preprocessor`) can point there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lepton_nn.errors import DataError, DataWarning
from lepton_nn.runtime.preprocess import (
    CATEGORICAL,
    DEFAULT_NA,
    NUMERIC,
    Locator,
    is_missing,
    parse_number,
    parse_numeric,
    to_categorical,
    to_numeric,
)

KINDS = (NUMERIC, CATEGORICAL)

# Value conversion (is_missing, parse_numeric, to_numeric, to_categorical, ...), shared by the
# CSV reader, Table.from_arrays and the transform, lives one floor down in
# lepton_nn.runtime.preprocess, so that the runtime reads raw rows exactly as training did.


MIXED_SHARE = 0.1  # text in at most this share of a column's values: a numeric column's error
NON_NUMERIC = ("error", "missing")
_SHOWN = 5  # rows named in a message


def _text_rows(values: Sequence[Any] | np.ndarray, na: frozenset[str], limit: float) -> list[int]:
    """Indices of the non-missing values that are not numbers; stops once past ``limit``."""
    rows = []
    for i, v in enumerate(values):
        if not is_missing(v, na) and parse_number(v) is None:
            rows.append(i)
            if len(rows) > limit:
                break
    return rows


def _rows_text(rows: list[int], values: Any, where: Locator) -> str:
    """``row 501 ('n/a'), row 733 ('x') and 3 more`` (rows as ``where`` counts them)."""
    # where(i) is "file: row N" or "row index i"; the file is named once, by the caller
    shown = ", ".join(
        f"{where(i).rsplit(': ', 1)[-1]} ({str(values[i]).strip()!r})" for i in rows[:_SHOWN]
    )
    return shown + (f" and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else "")


def infer_column(
    values: Sequence[Any] | np.ndarray,
    name: str,
    kind: str | None,
    na: frozenset[str],
    where: Locator,
    non_numeric: str = "error",
) -> tuple[np.ndarray, str]:
    """Convert a column to ``kind``, or infer it.

    Inferred: numeric if every non-missing value is a number; categorical if text is more
    than ``MIXED_SHARE`` of the non-missing values. In between (numbers with a few text
    values, say a stray "n/a" at row 500) the column is ambiguous: ``DataError`` naming the
    rows, or with ``non_numeric="missing"`` the column is numeric, those values missing, and
    a :class:`~lepton_nn.errors.DataWarning` counts them. A column declared numeric follows
    the same setting for its text values.
    """
    if non_numeric not in NON_NUMERIC:
        raise ValueError(f"non_numeric={non_numeric!r}; choose one of {NON_NUMERIC}")
    if kind == CATEGORICAL:
        return to_categorical(values, na), CATEGORICAL
    if kind == NUMERIC and non_numeric == "error":
        return to_numeric(values, name, na, where, "but the column is declared numeric"), NUMERIC
    out, bad = parse_numeric(values, na)
    if bad is None:
        return out, NUMERIC
    n = len(values)
    text = _text_rows(values, na, math.inf if kind == NUMERIC else MIXED_SHARE * n)
    present = n - sum(is_missing(v, na) for v in values) if kind != NUMERIC else n
    if kind != NUMERIC and len(text) > MIXED_SHARE * present:
        return to_categorical(values, na), CATEGORICAL
    rows = _rows_text(text, values, where)
    head = f"{where(text[0])}, column {name!r}"
    if non_numeric == "error":
        raise DataError(
            f"{head}: text in a column of numbers ({len(text)} of {present} values: {rows}); "
            f"fix them, declare the column's type (column_types=, --numeric/--categorical) "
            f"or read them as missing (non_numeric='missing')"
        )
    drop = set(text)
    out = to_numeric([None if i in drop else v for i, v in enumerate(values)], name, na, where, "")
    warnings.warn(
        f"{head}: {len(text)} text value(s) in a column of numbers read as missing: {rows}",
        DataWarning,
        stacklevel=3,
    )
    return out, NUMERIC


def _target_array(
    values: Sequence[Any] | np.ndarray,
    name: str,
    kind: str | None,
    na: frozenset[str],
    where: Locator,
) -> np.ndarray:
    """Labels: int64 if all whole numbers, float64 if all numbers, else ``str``; none missing."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biu" and kind != CATEGORICAL:
        return values.astype(np.int64)
    for i, v in enumerate(values):
        if is_missing(v, na):
            raise DataError(f"{where(i)}, column {name!r}: the target value is missing")
    if kind is None:  # labels are labels: a few text ones make the target categorical
        arr, bad = parse_numeric(values, na)
        arr, k = (arr, NUMERIC) if bad is None else (to_categorical(values, na), CATEGORICAL)
    else:
        arr, k = infer_column(values, name, kind, na, where)
    if k == NUMERIC and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    return arr


def _check_kinds(column_types: Mapping[str, str] | None, names: Iterable[str], src: str) -> dict:
    types, names = dict(column_types or {}), list(names)
    absent = [c for c in types if c not in names]  # all at once: a model's input_kinds
    if absent:
        raise DataError(
            f"{src}: row 1 (header): column_types names column {', '.join(map(repr, absent))}, "
            f"not in the data (a model's input_kinds name the columns it was trained on and "
            f"needs); columns are {names}"
        )
    for col, k in types.items():
        if k not in KINDS:
            raise DataError(f"{src}: column {col!r}: type {k!r} must be 'numeric' or 'categorical'")
    return types


# ----------------------------------------------------------------------------------------
# Table
# ----------------------------------------------------------------------------------------


class Table:
    """Named, typed columns plus an optional target; see the module docstring for the kinds."""

    def __init__(
        self,
        data: Mapping[str, np.ndarray],
        kinds: Mapping[str, str],
        target: np.ndarray | None = None,
        target_name: str | None = None,
        source: str | None = None,
        row_numbers: np.ndarray | None = None,
    ) -> None:
        self.data: dict[str, np.ndarray] = dict(data)
        self.kinds: dict[str, str] = {c: kinds[c] for c in self.data}
        lengths = {len(a) for a in self.data.values()}
        if target is not None:
            lengths.add(len(target))
        if len(lengths) > 1:
            raise DataError(
                f"{source or 'table'}: columns have different lengths {sorted(lengths)}"
            )
        self.n_rows: int = lengths.pop() if lengths else 0
        self.target = target
        self.target_name = target_name
        self.source = source
        self.row_numbers = row_numbers

    # -- views ---------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """Feature column names in order (the target is not among them)."""
        return list(self.data)

    @property
    def column_types(self) -> dict[str, str]:
        """``{column: "numeric" | "categorical"}``."""
        return dict(self.kinds)

    @property
    def numeric_columns(self) -> list[str]:
        return [c for c, k in self.kinds.items() if k == NUMERIC]

    @property
    def categorical_columns(self) -> list[str]:
        return [c for c, k in self.kinds.items() if k == CATEGORICAL]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, len(self.data))

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, name: str) -> np.ndarray:
        if name == self.target_name and self.target is not None:
            return self.target
        if name not in self.data:
            raise KeyError(f"no column {name!r}; columns are {self.columns}")
        return self.data[name]

    def __contains__(self, name: object) -> bool:
        return name in self.data

    def __repr__(self) -> str:
        tgt = f", target={self.target_name!r}" if self.target is not None else ""
        src = f", source={self.source!r}" if self.source else ""
        return f"Table({self.n_rows} rows x {len(self.data)} columns{tgt}{src})"

    def where(self, i: int) -> str:
        """Where row ``i`` (0-based) came from: ``"file.csv: row 12"`` or ``"row index 11"``."""
        if self.source is not None and self.row_numbers is not None:
            return f"{self.source}: row {int(self.row_numbers[i])}"
        return f"row index {i}"

    # -- row and column selection ---------------------------------------------------------
    def take(self, indices: Sequence[int] | np.ndarray) -> Table:
        """A new table with the rows at ``indices`` (the order given)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = np.empty(0, dtype=np.intp)  # [] is float64 to NumPy
        return Table(
            {c: a[idx] for c, a in self.data.items()},
            self.kinds,
            None if self.target is None else self.target[idx],
            self.target_name,
            self.source,
            None if self.row_numbers is None else self.row_numbers[idx],
        )

    def select(self, columns: Sequence[str]) -> Table:
        """A new table with only ``columns`` (in that order), same rows and target."""
        for c in columns:
            if c not in self.data:
                raise DataError(f"{self.source or 'table'}: no column {c!r}")
        return Table(
            {c: self.data[c] for c in columns},
            self.kinds,
            self.target,
            self.target_name,
            self.source,
            self.row_numbers,
        )

    def drop(self, columns: Sequence[str]) -> Table:
        """A new table without ``columns``."""
        gone = set([columns] if isinstance(columns, str) else columns)
        return self.select([c for c in self.data if c not in gone])

    def with_types(
        self, column_types: Mapping[str, str] | None, non_numeric: str = "error"
    ) -> Table:
        """A new table with the columns in ``column_types`` converted to the declared kind
        (numbers as categories ``"1"``, ``"2.5"``; category text parsed as numbers, the
        ``non_numeric`` setting applying as in :func:`infer_column`)."""
        types = _check_kinds(column_types, self.columns, self.source or "table")
        data, kinds = dict(self.data), dict(self.kinds)
        for c, k in types.items():
            if k != kinds[c]:
                data[c], kinds[c] = infer_column(
                    self.data[c], c, k, frozenset(), self.where, non_numeric
                )
        return Table(data, kinds, self.target, self.target_name, self.source, self.row_numbers)

    def to_numpy(self) -> np.ndarray:
        """The feature columns as a 2-D object array (rows x columns), missing as None/NaN."""
        out = np.empty((self.n_rows, len(self.data)), dtype=object)
        for j, a in enumerate(self.data.values()):
            out[:, j] = a
        return out

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        data: Any,
        target: Any = None,
        columns: Sequence[str] | None = None,
        column_types: Mapping[str, str] | None = None,
        na_values: Sequence[str] = DEFAULT_NA,
        non_numeric: str = "error",
    ) -> Table:
        """Build from a 2-D array (names ``x0, x1, ...`` unless ``columns``) or a dict of columns.

        ``target`` is either an array of labels or the name of one of the columns.
        Column kinds are inferred as in :func:`read_csv` unless given in ``column_types``;
        ``non_numeric`` as in :func:`infer_column`.
        """
        na = frozenset(na_values)
        if isinstance(data, Table):
            return data
        if isinstance(data, Mapping):
            cols = {
                str(k): np.asarray(v) if not isinstance(v, np.ndarray) else v
                for k, v in data.items()
            }
            if columns is not None:
                cols = dict(zip(columns, cols.values(), strict=True))
        else:
            arr = np.asarray(data)
            if arr.ndim == 1:
                arr = arr.reshape(-1, 1)
            if arr.ndim != 2:
                raise DataError(f"from_arrays: expected a 2-D array, got shape {arr.shape}")
            names = list(columns) if columns is not None else [f"x{j}" for j in range(arr.shape[1])]
            if len(names) != arr.shape[1]:
                raise DataError(
                    f"from_arrays: {len(names)} column names for {arr.shape[1]} columns"
                )
            cols = {n: arr[:, j] for j, n in enumerate(names)}
        for c, a in cols.items():
            if a.ndim != 1:
                raise DataError(f"from_arrays: column {c!r} has shape {a.shape}, expected 1-D")

        target_name = None
        if isinstance(target, str):
            if target not in cols:
                raise DataError(f"from_arrays: target column {target!r} not in {list(cols)}")
            target_name, target = target, cols.pop(target)
        types = _check_kinds(
            column_types, list(cols) + ([target_name] if target_name else []), "from_arrays"
        )

        def where(i: int) -> str:
            return f"row index {i}"

        out, kinds = {}, {}
        for c, a in cols.items():
            out[c], kinds[c] = infer_column(a, c, types.get(c), na, where, non_numeric)
        y = None
        if target is not None:
            tname = target_name or "target"
            y = _target_array(
                np.asarray(target) if not isinstance(target, np.ndarray) else target,
                tname,
                types.get(tname),
                na,
                where,
            )
            target_name = tname
        return cls(out, kinds, y, target_name)

    @classmethod
    def from_records(
        cls,
        rows: Sequence[Mapping[str, Any]],
        target: str | None = None,
        column_types: Mapping[str, str] | None = None,
        na_values: Sequence[str] = DEFAULT_NA,
        non_numeric: str = "error",
    ) -> Table:
        """Build from a list of dicts (keys of the first row give the columns)."""
        if not rows:
            raise DataError("from_records: no rows")
        names = list(rows[0])
        cols: dict[str, np.ndarray] = {}
        for c in names:
            col = np.empty(len(rows), dtype=object)
            for i, r in enumerate(rows):
                if c not in r:
                    raise DataError(f"row index {i}, column {c!r}: missing from this row")
                col[i] = r[c]
            cols[c] = col
        return cls.from_arrays(
            cols, target, column_types=column_types, na_values=na_values, non_numeric=non_numeric
        )

    @classmethod
    def from_pandas(
        cls,
        df: Any,
        target: str | None = None,
        column_types: Mapping[str, str] | None = None,
        na_values: Sequence[str] = DEFAULT_NA,
        non_numeric: str = "error",
    ) -> Table:
        """Build from a pandas DataFrame (pandas itself is not imported here).

        Numeric and boolean dtypes become numeric; ``category``/``object``/``string`` columns
        are inferred like CSV text unless ``column_types`` says otherwise.
        """
        if not (hasattr(df, "columns") and hasattr(df, "__getitem__")):
            raise DataError(f"from_pandas: expected a DataFrame, got {type(df).__name__}")
        cols: dict[str, Any] = {}
        types = dict(column_types or {})
        for c in df.columns:
            s = df[c]
            dt = getattr(s, "dtype", None)
            if str(dt) == "category":
                types.setdefault(str(c), CATEGORICAL)
            kind = getattr(dt, "kind", "O")
            if kind in "biuf":
                cols[str(c)] = np.asarray(s.to_numpy(dtype=np.float64, na_value=np.nan))
            else:
                cols[str(c)] = np.asarray(s.to_numpy(dtype=object))
        return cls.from_arrays(
            cols, target, column_types=types, na_values=na_values, non_numeric=non_numeric
        )
