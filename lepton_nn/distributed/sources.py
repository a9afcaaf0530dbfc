"""Parquet and CSV files read in batches of rows, so memory holds one batch, not the file.

A source is a file, a folder (its ``*.parquet`` / ``*.csv`` files, recursively, sorted), a
glob (``"data/*.parquet"``) or a list of these. Each batch is a small table the runtime's
preprocessing reads directly (``model.predict(batch)``): raw columns by name plus a row
locator, so a bad value is reported as ``file, row N, column C`` (CSV rows are lines of the
file, header = row 1, as :func:`lepton_nn.data.read_csv` numbers them; Parquet rows count
from 1). Parquet needs ``pyarrow`` (the ``data`` extra); CSV needs nothing beyond NumPy.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..data.csv_reader import csv_records
from ..data.stream import is_parquet, list_files, open_parquet
from ..errors import DataError
from ..runtime.preprocess import CATEGORICAL, to_categorical

__all__ = ["Batch", "list_files", "iter_batches"]


class Batch:
    """Rows ``first..first+n_rows-1`` of one file: ``data`` (name -> 1-D array; numbers as
    float64 with NaN for missing, text as object arrays) and ``where(i)`` for messages."""

    def __init__(
        self,
        data: dict[str, np.ndarray],
        source: str,
        rows: np.ndarray,
        unit: str,
        kinds: dict[str, str] | None = None,
    ):
        self.data, self.source, self.rows, self.unit = data, source, rows, unit
        self.kinds: dict[str, str] = kinds or {}
        self.raw: dict[str, np.ndarray] = data
        self.n_rows = len(rows)

    def where(self, i: int) -> str:
        return f"{self.source}: {self.unit} {int(self.rows[i])}"

    def __len__(self) -> int:
        return self.n_rows


def iter_batches(
    path: str,
    batch_rows: int = 65536,
    columns: Sequence[str] | None = None,
    na_values: Sequence[str] | None = None,
) -> Iterator[Batch]:
    """Batches of at most ``batch_rows`` rows of one Parquet or CSV file (``columns``: only
    these, each must exist; ``na_values``: see the module docstring)."""
    if int(batch_rows) < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    reader = _parquet_batches if is_parquet(path) else _csv_batches
    cols = None if columns is None else list(columns)
    na = None if na_values is None else frozenset(str(v) for v in na_values)
    for batch in reader(os.fspath(path), int(batch_rows), cols):
        batch.raw = dict(batch.data)  # the values as read (key columns are copied from here)
        if na is not None:
            for name, v in batch.data.items():
                if v.dtype == object:
                    batch.data[name], batch.kinds[name] = _labels(v, na), CATEGORICAL
        yield batch


def _labels(values: np.ndarray, na: frozenset[str]) -> np.ndarray:
    """``to_categorical(values, na)``, computed on the distinct values only."""
    present = np.not_equal(values, None)
    sub = values[present]
    if sub.size == 0 or set(map(type, sub)) != {str}:  # not all text: the plain way
        return to_categorical(values, na)
    try:
        uniq, inverse = np.unique(sub.astype(str), return_inverse=True)
    except (TypeError, ValueError):  # mixed types: the plain way
        return to_categorical(values, na)
    out = np.empty(len(values), dtype=object)  # None where absent
    out[present] = to_categorical(uniq.astype(object), na)[inverse]
    return out


def _missing(src: str, columns: list[str], have: list[str]) -> None:
    gone = [c for c in columns if c not in have]
    if gone:
        raise DataError(f"{src}: column(s) {gone} not in the file; columns are {have}")


def _parquet_batches(src: str, batch_rows: int, columns: list[str] | None) -> Iterator[Batch]:
    with open_parquet(src) as f:
        if columns is not None:
            _missing(src, columns, f.schema_arrow.names)
        first = 1
        for rb in f.iter_batches(batch_size=batch_rows, columns=columns):
            data = {name: _arrow_column(col) for name, col in zip(rb.schema.names, rb.columns)}
            yield Batch(data, src, np.arange(first, first + rb.num_rows), "row")
            first += rb.num_rows


def _arrow_column(col: Any) -> np.ndarray:
    """Numbers (and booleans) as float64 with NaN for nulls; anything else as Python objects
    with None for nulls (what the runtime's preprocessing expects of raw columns)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(col.to_pylist(), dtype=object)


def _csv_batches(src: str, batch_rows: int, columns: list[str] | None) -> Iterator[Batch]:
    try:
        f = open(src, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise DataError(f"{src}: cannot read the file ({e.strerror or e})") from e
    with f:
        reader = csv.reader(f, skipinitialspace=True, strict=True)
        header: list[str] | None = None
        records: list[list[str]] = []
        lines: list[int] = []
        for line, rec in csv_records(reader, src):
            if header is None:
                header = [h.strip() for h in rec]
                if columns is not None:
                    _missing(src, columns, header)
                keep = [header.index(c) for c in (columns or header)]
                continue
            records.append(rec)
            lines.append(line)
            if len(records) == batch_rows:
                yield _csv_batch(src, header, keep, records, lines)
                records, lines = [], []
        if header is None:
            raise DataError(f"{src}: the file is empty (expected a header row and data rows)")
        if records:
            yield _csv_batch(src, header, keep, records, lines)


def _csv_batch(src: str, header: list[str], keep: list[int], records: list, lines: list) -> Batch:
    data = {}
    for j in keep:
        col = np.empty(len(records), dtype=object)
        col[:] = [r[j].strip() for r in records]
        data[header[j]] = col
    return Batch(data, src, np.asarray(lines, dtype=np.int64), "row")
