"""A small column table and a strict CSV reader (standard-library ``csv`` and NumPy only).

A :class:`Table` holds named columns of one of two kinds:

- ``"numeric"``: a float64 array, missing values as NaN;
- ``"categorical"``: an object array of ``str``, missing values as ``None``.

and, optionally, a separate ``target`` array (int64 or float64 if every label is a number,
else an object array of ``str``). Tables read from a file remember the file and the line each
row came from, so later errors (say, in :class:`~lepton_nn.data.Preprocessor`) can point there.
"""

from __future__ import annotations

import array
import csv
import math
import os
import re
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
    types = dict(column_types or {})
    known = set(names)
    for col, k in types.items():
        if col not in known:
            raise DataError(f"{src}: column_types names column {col!r}, which is not in the data")
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


# ----------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------


def _fields(line: str, delimiter: str) -> list[str]:
    """The fields of one line, best effort (for naming a column in a message)."""
    try:
        return next(csv.reader([line.replace("\r", " ")], delimiter=delimiter), [])
    except csv.Error:  # a NUL or a broken quote: count the delimiters instead
        return line.split(delimiter)


def undecodable(
    src: str, row: int, line: bytes, pos: int, header: bytes, encoding: str, delimiter: str
) -> DataError:
    """The error for byte ``line[pos]`` of file row ``row`` (1-based) not being ``encoding``
    text, naming the column (by the header's name past row 1)."""
    prefix = line[:pos].decode(encoding, errors="replace")
    field = len(_fields(prefix, delimiter) or [""])
    col = f"column {field}"
    if row > 1:
        names = _fields(header.decode(encoding, errors="replace").strip("\r\ufeff"), delimiter)
        if field <= len(names):
            col = f"column {names[field - 1].strip()!r}"
    return DataError(
        f"{src}: row {row}, {col}: byte 0x{line[pos]:02x} is not valid {encoding} text; "
        f"re-save the file as UTF-8 or pass encoding= (for example 'latin-1')"
    )


def nul_error(src: str, row: int) -> DataError:
    return DataError(
        f"{src}: row {row}: contains a NUL character; is this a binary or UTF-16 file? "
        f"(pass encoding= if it is text in another encoding)"
    )


def _decode(raw: bytes, path: str, encoding: str, delimiter: str) -> str:
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        row = raw.count(b"\n", 0, e.start) + 1
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        header = raw[: raw.find(b"\n")]
        raise undecodable(
            path, row, raw[line_start:], e.start - line_start, header, encoding, delimiter
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        raise nul_error(path, text.count("\n", 0, nul) + 1)
    return text[1:] if text.startswith("\ufeff") else text


# a line as ``io.StringIO(text, newline="")`` yields it: up to and with "\n", "\r\n" or "\r"
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+")


def _lines(text: str) -> Iterable[str]:
    """The lines of ``text`` with their endings, one at a time, for ``csv.reader``: what
    iterating ``io.StringIO(text, newline="")`` gives, without its copy of the text (four
    bytes a character once read)."""
    for m in _LINE.finditer(text):
        yield m.group()


def csv_records(
    reader: Any, src: str, first_line: int = 1, header: list[str] | None = None
) -> Iterable[tuple[int, list[str]]]:
    """``(row, fields)`` of each non-blank record of a ``csv.reader``, the header first; the
    row is the 1-based line in the file where the record starts. A record whose field count
    differs from the header's, or text the csv module cannot read, is a ``DataError`` naming
    the file and row. A reader started mid-file (at line ``first_line``, past the ``header``
    already read) yields data records only."""
    width = header
    start = first_line
    try:
        for rec in reader:
            line, start = start, reader.line_num + first_line
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue  # blank line
            if width is not None and len(rec) != len(width):
                if len(rec) < len(width):
                    what = f"column {width[len(rec)].strip()!r} and after are missing"
                else:
                    what = f"extra field(s) after the last column {width[-1].strip()!r}"
                raise DataError(
                    f"{src}: row {line}: {len(rec)} fields but the header has {len(width)} ({what})"
                )
            if width is None:
                width = rec
            yield line, rec
    except csv.Error as e:
        raise DataError(f"{src}: row {start}: not readable as CSV ({e})") from None


class _Columns:
    """The fields of a CSV file by column, as they are read: records gathered ``CHUNK`` at a
    time, then appended to their columns (``zip``), each repeated field one shared string
    while its column has at most ``SHARED`` distinct values (category labels, small counts).
    A ``str`` costs ~50 bytes plus its text, a list's pointer to it 8: fields of a few
    characters, each its own string, cost ~6-10 times their size in the file."""

    CHUNK = 256
    SHARED = 1024

    def __init__(self, width: int) -> None:
        self.columns: list[list[str]] = [[] for _ in range(width)]
        self.seen: list[dict[str, str] | None] = [{} for _ in range(width)]
        self.chunk: list[list[str]] = []

    def add(self, record: list[str]) -> None:
        self.chunk.append(record)
        if len(self.chunk) == self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        for j, fields in enumerate(zip(*self.chunk)):
            seen = self.seen[j]
            if seen is None:
                self.columns[j].extend(fields)
                continue
            self.columns[j].extend(map(seen.setdefault, fields, fields))
            if len(seen) > self.SHARED:  # not a column of few values: stop looking
                self.seen[j] = None
        self.chunk.clear()

    def done(self) -> list[list[str]]:
        self._flush()
        self.seen = []
        return self.columns


def read_csv(
    path: str | os.PathLike,
    target: str | None = None,
    column_types: Mapping[str, str] | None = None,
    na_values: Sequence[str] = DEFAULT_NA,
    *,
    drop: Sequence[str] = (),
    non_numeric: str = "error",
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> Table:
    """Read a CSV file with a header row into a :class:`Table`.

    A column is numeric if every non-missing value parses as a float, else categorical;
    ``column_types={"Job": "categorical"}`` overrides. A column of numbers with text in a
    few rows is a ``DataError`` naming them (``non_numeric="missing"``: those values become
    missing, with a warning counting them; see :func:`infer_column`). Columns in ``drop``
    (say, an ID) are left out unread. Fields are stripped of surrounding
    whitespace; a field equal to one of ``na_values`` is missing. Blank lines are skipped.
    Every problem raises :class:`DataError` naming the file, the row (1-based line in the
    file, header = row 1) and the column where known.
    """
    src = os.fspath(path)
    try:
        with open(src, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{src}: cannot read the file ({e.strerror or e})") from e
    if not raw.strip():
        raise DataError(f"{src}: the file is empty (expected a header row and data rows)")
    text = _decode(raw, src, encoding, delimiter)
    del raw  # (the text holds it now)
    na = frozenset(na_values)

    reader = csv.reader(_lines(text), delimiter=delimiter, skipinitialspace=True, strict=True)
    header: list[str] | None = None
    columns: _Columns | None = None
    lines = array.array("q")  # each record's row in the file (8 bytes each, not an int object)
    for line, rec in csv_records(reader, src):
        if header is None:
            header = [h.strip() for h in rec]
            _check_header(header, src)
            columns = _Columns(len(header))
            continue
        columns.add(rec)
        lines.append(line)
    del text, reader
    if header is None:
        raise DataError(f"{src}: the file is empty (expected a header row and data rows)")
    cols = columns.done()
    if not lines:
        raise DataError(f"{src}: the file has a header (row 1) but no data rows")

    if target is not None and target not in header:
        raise DataError(
            f"{src}: row 1 (header): target column {target!r} not found; columns are {header}"
        )
    drop = [drop] if isinstance(drop, str) else list(drop)
    for c in drop:
        if c not in header or c == target:
            why = "is the target" if c == target else f"is not in the file; columns are {header}"
            raise DataError(f"{src}: row 1 (header): column {c!r} to drop {why}")
    types = _check_kinds(column_types, header, src)
    row_numbers = np.asarray(lines, dtype=np.int64)

    def where(i: int) -> str:
        return f"{src}: row {lines[i]}"

    data, kinds = {}, {}
    y = None
    for j, name in enumerate(header):
        if name in drop:
            continue
        values, cols[j] = cols[j], None  # (its strings freed once converted)
        if name == target:
            y = _target_array(values, name, types.get(name), na, where)
            continue
        data[name], kinds[name] = infer_column(
            values, name, types.get(name), na, where, non_numeric
        )
    if y is not None:
        classes = np.unique(y)
        if len(classes) < 2:
            only = classes[0].item() if isinstance(classes[0], np.generic) else classes[0]
            raise DataError(
                f"{src}: column {target!r}: the target has a single class ({only!r}) in "
                f"all {len(y)} rows; at least two are needed"
            )
    return Table(data, kinds, y, target, src, row_numbers)


def _check_header(header: list[str], src: str) -> None:
    seen: dict[str, int] = {}
    for j, h in enumerate(header):
        if not h:
            header[j] = h = f"unnamed_{j + 1}"
        if h in seen:
            raise DataError(
                f"{src}: row 1 (header), column {h!r}: name used twice "
                f"(columns {seen[h] + 1} and {j + 1})"
            )
        seen[h] = j
