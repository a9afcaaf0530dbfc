"""Tables larger than memory: a CSV or Parquet dataset read in batches of rows.

::

    data = stream("accounts/*.csv", target="default", batch_rows=65536)
    for table in data:      # Tables of at most 65536 rows; iterate again for another epoch
        ...

A source is a file, a folder (its ``.csv`` / ``.parquet`` / ``.pq`` files, recursively,
sorted), a glob or a list of these; every file must have the same columns.

**Types.** A batch has exactly the column types :func:`~lepton_nn.data.read_csv` gives the
whole data, because they are decided once for all of it: the first use of the stream scans
every file (one pass, one batch in memory) and counts, per column, the values present and
the values that are not numbers, as ``read_csv`` does over a whole column; the target's
type and classes too. Every later batch is converted to those types. Errors are raised in
the order ``read_csv`` raises them and with its words: the file, the 1-based row (the line
of a CSV file, header = row 1; the row of a Parquet file, first = row 1) and the column. A
value that changes type after the scan (the file was rewritten) is a ``DataError`` naming
its row, never a silently different column.

**Chunks.** The scan also indexes the data in *chunks* of ``block_rows`` rows (a CSV
chunk starts at a known byte offset and line; a Parquet chunk is a row group), so training
can read them in any order (:meth:`TableStream.read_chunk`), hold some out for validation
(:meth:`ChunkSource.take`) and shuffle (``lepton_nn.train`` reads chunks in a shuffled
order into a bounded buffer). Memory holds one batch (or one Parquet row group).

Parquet needs ``pyarrow`` (the ``data`` extra), imported when a Parquet file is read.
"""

from __future__ import annotations

import collections
import csv
import glob
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lepton_nn.data.csv_reader import _check_header, csv_records, nul_error, undecodable
from lepton_nn.data.stream_scan import Column, numbers
from lepton_nn.data.table import NON_NUMERIC, Table, _check_kinds
from lepton_nn.errors import DataError, LeptonError
from lepton_nn.runtime.preprocess import (
    CATEGORICAL,
    DEFAULT_NA,
    NUMERIC,
    is_missing,
    parse_number,
    to_categorical,
)

__all__ = ["ChunkSource", "TableStream", "is_chunked", "list_files", "stream"]

SUFFIXES = (".parquet", ".pq", ".csv")
BLOCK_ROWS = 1024  # rows per chunk (at most batch_rows): the unit of shuffling and hold-out


def list_files(source: Any) -> list[str]:
    """The data files of ``source`` (a file, a folder, a glob or a list), in a stable order."""
    if isinstance(source, (list, tuple)):
        return [f for s in source for f in list_files(s)]
    src = os.fspath(source)
    if os.path.isdir(src):
        found = [
            os.path.join(root, f)
            for root, _, files in os.walk(src)
            for f in files
            if f.lower().endswith(SUFFIXES)
        ]
        if not found:
            raise DataError(f"{src}: the folder holds no .parquet or .csv file")
        return sorted(found)
    if glob.has_magic(src):
        found = sorted(f for f in glob.glob(src, recursive=True) if os.path.isfile(f))
        if not found:
            raise DataError(f"{src}: no file matches")
        return found
    if not os.path.isfile(src):
        raise DataError(f"{src}: no such file or folder")
    return [src]


def is_parquet(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))


# ----------------------------------------------------------------------------------------
# chunked sources: read chunk i, in any order
# ----------------------------------------------------------------------------------------


def is_chunked(obj: Any) -> bool:
    """True for a :class:`ChunkSource` (a stream, a subset or a mapping of one)."""
    return isinstance(obj, ChunkSource)


class ChunkSource:
    """Data in chunks readable in any order: ``chunk_rows`` (rows per chunk) and
    ``read_chunk(i)``. Iterating gives the chunks in order."""

    @property
    def chunk_rows(self) -> np.ndarray:
        raise NotImplementedError

    def read_chunk(self, i: int) -> Any:
        raise NotImplementedError

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_rows)

    @property
    def n_rows(self) -> int:
        return int(np.sum(self.chunk_rows))

    def __iter__(self) -> Iterator[Any]:
        for i in range(self.n_chunks):
            yield self.read_chunk(i)

    def take(self, ids: Sequence[int] | np.ndarray) -> ChunkSource:
        """Only the chunks ``ids`` (in that order)."""
        return _Subset(self, np.asarray(ids, dtype=np.int64))

    def map(self, fn: Callable[[Any], Any]) -> ChunkSource:
        """The same chunks passed through ``fn`` (say, a Table -> ``(X, y)``)."""
        return _Mapped(self, fn)

    def split(self, fraction: float, seed: int | None = 0) -> tuple[ChunkSource, ChunkSource]:
        """``(rest, held_out)``: ``round(fraction * n_chunks)`` chunks (at least one when
        there are two or more) drawn with ``seed``, the rest in their order."""
        n = self.n_chunks
        k = min(n - 1, max(1, round(fraction * n))) if n >= 2 and fraction > 0 else 0
        held = np.sort(np.random.default_rng(seed).permutation(n)[:k])
        rest = np.setdiff1d(np.arange(n), held)
        return self.take(rest), self.take(held)


class _Subset(ChunkSource):
    def __init__(self, base: ChunkSource, ids: np.ndarray):
        if ids.size and (ids.min() < 0 or ids.max() >= base.n_chunks):
            raise IndexError(f"chunk ids out of range 0..{base.n_chunks - 1}")
        self.base, self.ids = base, ids
        self.shuffle_buffer = getattr(base, "shuffle_buffer", None)

    @property
    def chunk_rows(self) -> np.ndarray:
        return self.base.chunk_rows[self.ids]

    def read_chunk(self, i: int) -> Any:
        return self.base.read_chunk(int(self.ids[i]))


class _Mapped(ChunkSource):
    def __init__(self, base: ChunkSource, fn: Callable[[Any], Any]):
        self.base, self.fn = base, fn
        self.shuffle_buffer = getattr(base, "shuffle_buffer", None)

    @property
    def chunk_rows(self) -> np.ndarray:
        return self.base.chunk_rows

    def read_chunk(self, i: int) -> Any:
        return self.fn(self.base.read_chunk(i))


# ----------------------------------------------------------------------------------------
# CSV lines with byte offsets
# ----------------------------------------------------------------------------------------

_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


class _Lines:
    """Text lines of a binary file from its current position, split as ``newline=""`` does
    (at ``\\n``, ``\\r\\n`` and a lone ``\\r``) and decoded strictly; ``offset_of(line)``
    gives the byte offset where a yielded line starts (lines are numbered from
    ``first_line``; offsets asked for in increasing order)."""

    def __init__(self, f: Any, src: str, enc: str, delim: str, first_line: int, header: bytes):
        self.f, self.src, self.enc, self.delim = f, src, enc, delim
        self.first_line, self.header = first_line, header
        self._pending: collections.deque = collections.deque()

    def __iter__(self) -> Iterator[str]:
        pos = self.f.tell()
        line = row = self.first_line
        for raw in self.f:
            try:
                text = raw.decode(self.enc)
            except UnicodeDecodeError as e:
                raise undecodable(
                    self.src, row, raw, e.start, self.header, self.enc, self.delim
                ) from None
            if "\x00" in text:
                raise nul_error(self.src, row)
            start, end = pos, pos + len(raw)
            if pos == 0 and text.startswith("\ufeff"):
                text = text[1:]
                start += len("\ufeff".encode(self.enc))
            parts = _LONE_CR.split(text) if "\r" in text[:-2] else [text]
            for part in parts:
                if part:
                    self._pending.append((line, pos))
                    start += len(part.encode(self.enc)) if len(parts) > 1 else 0
                    pos = start if len(parts) > 1 else end
                    line += 1
                    yield part
            pos = end
            row += 1

    def offset_of(self, line: int) -> int:
        while self._pending[0][0] < line:
            self._pending.popleft()
        return self._pending[0][1]


# ----------------------------------------------------------------------------------------
# the stream
# ----------------------------------------------------------------------------------------


class TableStream(ChunkSource):
    """A re-iterable of :class:`Table` batches over a CSV/Parquet dataset; see the module
    docstring and :func:`stream`."""

    def __init__(
        self,
        source: Any,
        target: str | None = None,
        batch_rows: int = 65536,
        columns: Sequence[str] | None = None,
        *,
        column_types: Mapping[str, str] | None = None,
        na_values: Sequence[str] = DEFAULT_NA,
        non_numeric: str = "error",
        drop: Sequence[str] = (),
        delimiter: str = ",",
        encoding: str = "utf-8",
        block_rows: int | None = None,
        shuffle_buffer: int = 65536,
    ) -> None:
        if int(batch_rows) < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        if non_numeric not in NON_NUMERIC:
            raise ValueError(f"non_numeric={non_numeric!r}; choose one of {NON_NUMERIC}")
        if "\n".encode(encoding) != b"\n":
            raise ValueError(f"encoding={encoding!r}: a stream reads text whose newline is 0x0A")
        self.source = source
        self.files = list_files(source)
        self.name = self.files[0] if len(self.files) == 1 else os.fspath(str(source))
        self.target = target
        self.batch_rows = int(batch_rows)
        self.block_rows = int(block_rows or min(self.batch_rows, BLOCK_ROWS))
        self.shuffle_buffer = int(shuffle_buffer)  # rows mixed at once when training
        self.columns = None if columns is None else [str(c) for c in columns]
        self.column_types = dict(column_types or {})
        self.na = frozenset(na_values)
        self.non_numeric = non_numeric
        self.drop = [drop] if isinstance(drop, str) else list(drop)
        self.delimiter, self.encoding = delimiter, encoding
        self._kinds: dict[str, str] | None = None
        self._target_kind: str | None = None
        self._header: list[str] = []
        self._headers: dict[str, tuple[list[str], bytes]] = {}
        self._index: list[tuple[int, int, int, int]] = []  # (file, offset|group, first, rows)

    def __repr__(self) -> str:
        return f"TableStream({self.name!r}, target={self.target!r}, batch_rows={self.batch_rows})"

    # -- the scan ------------------------------------------------------------------------
    @property
    def kinds(self) -> dict[str, str]:
        """``{column: "numeric" | "categorical"}`` for all the data (scans it once)."""
        self._scan()
        return dict(self._kinds)

    @property
    def chunk_rows(self) -> np.ndarray:
        self._scan()
        return np.asarray([c[3] for c in self._index], dtype=np.int64)

    def _scan(self) -> None:
        if self._kinds is not None:
            return
        cols: dict[str, Column] | None = None
        index: list[tuple[int, int, int, int]] = []
        first: list[str] = []
        pending: DataError | None = None  # a header problem, raised after the file's records
        for k, path in enumerate(self.files):
            for names, columns, rows, locate in self._checked(path):
                if pending is not None:
                    continue
                if cols is None:
                    try:
                        cols, first = self._columns(names), names
                    except DataError as e:
                        pending = e
                        continue
                elif names is not first and set(names) != set(first):
                    gone = [c for c in first if c not in names]
                    extra = [c for c in names if c not in first]
                    raise DataError(
                        f"{path}: row 1 (header): the columns differ from those of "
                        f"{self.files[0]} (missing {gone}, extra {extra})"
                    )
                index.append((k, locate, int(rows[0]), len(rows)))
                data = columns(self._header)

                def where(i: int, _p: str = path, _r: np.ndarray = rows) -> str:
                    return f"{_p}: row {int(_r[i])}"

                for name, col in cols.items():
                    col.update(data[name], where, self.na)
            if pending is not None:
                raise pending
        if cols is None:
            raise DataError(f"{self.name}: the file has a header (row 1) but no data rows")
        kinds = {}
        for name, col in cols.items():  # errors in column order, as read_csv raises them
            kind = col.kind()
            if col.target:
                self._check_classes(col, kind)
                self._target_kind = kind
            else:
                kinds[name] = kind
        self._kinds, self._index = kinds, index
        self._targets = cols.get(self.target) if self.target else None

    def _checked(self, path: str) -> Iterator[tuple[list[str], Callable, np.ndarray, int]]:
        """The scan's blocks of one file; a CSV file that is not readable as CSV and also not
        decodable text reports the text first, as ``read_csv`` (which decodes it whole) does."""
        try:
            # (a Parquet chunk is a whole row group: size 0)
            yield from self._read_file(path, 0 if is_parquet(path) else self.block_rows)
        except DataError:
            if not is_parquet(path):
                with open(path, "rb") as f:
                    head = f.readline().rstrip(b"\n")
                    f.seek(0)
                    for _ in _Lines(f, path, self.encoding, self.delimiter, 1, head):
                        pass
            raise

    def _columns(self, names: list[str]) -> dict[str, Column]:
        src = self.files[0]
        if self.target is not None and self.target not in names:
            raise DataError(
                f"{src}: row 1 (header): target column {self.target!r} not found; "
                f"columns are {names}"
            )
        for c in self.drop:
            if c not in names or c == self.target:
                why = (
                    "is the target"
                    if c == self.target
                    else f"is not in the file; columns are {names}"
                )
                raise DataError(f"{src}: row 1 (header): column {c!r} to drop {why}")
        for c in self.columns or []:
            if c not in names:
                raise DataError(
                    f"{src}: row 1 (header): column {c!r} not found; columns are {names}"
                )
        wanted = [c for c in (self.columns or names) if c not in self.drop and c != self.target]
        types = _check_kinds(self.column_types, names, src)
        self._header = [c for c in names if c in wanted or c == self.target]
        return {
            c: Column(c, types.get(c), self.non_numeric, c == self.target) for c in self._header
        }

    def _check_classes(self, col: Column, kind: str) -> None:
        labels = col.floats if kind == NUMERIC else col.strings
        if len(labels) < 2:
            (only,) = labels
            if kind == NUMERIC and col.whole:
                only = int(only)
            raise DataError(
                f"{self.name}: column {self.target!r}: the target has a single class "
                f"({only!r}) in all {col.n} rows; at least two are needed"
            )

    # -- reading -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Table]:
        """Tables of at most ``batch_rows`` rows, file by file, in file order."""
        self._scan()
        for path in self.files:
            for _, columns, rows, _ in self._read_file(path, self.batch_rows):
                table = self._table(path, columns(self._header), rows)
                del columns  # the raw records: gone before the next batch is read
                yield table
                del table

    def read_chunk(self, i: int) -> Table:
        """Chunk ``i`` of the index (``block_rows`` rows of one file, or a row group)."""
        self._scan()
        k, locate, first, n = self._index[i]
        path = self.files[k]
        _, columns, rows, _ = next(self._read_file(path, n, at=(locate, first), limit=n))
        return self._table(path, columns(self._header), rows)

    def _table(self, path: str, data: dict[str, Any], rows: np.ndarray) -> Table:
        def where(i: int) -> str:
            return f"{path}: row {int(rows[i])}"

        out = {c: self._convert(c, data[c], self._kinds[c], where) for c in self._kinds}
        y = None
        if self.target is not None:
            y = self._convert(self.target, data[self.target], self._target_kind, where)
            if self._target_kind == NUMERIC and self._targets.whole:
                y = y.astype(np.int64)
        return Table(out, self._kinds, y, self.target, path, rows)

    def _convert(self, name: str, values: Any, kind: str, where: Callable) -> np.ndarray:
        if kind == CATEGORICAL:
            return to_categorical(values, self.na)
        out, bad = numbers(values, self.na)
        if bad is None:
            return out
        if self.non_numeric == "missing" and name != self.target:  # warned by the scan
            out = np.empty(len(values), dtype=np.float64)
            for i, v in enumerate(values):
                x = None if is_missing(v, self.na) else parse_number(v)
                out[i] = np.nan if x is None else x
            return out
        raise DataError(
            f"{where(bad)}, column {name!r}: {str(values[bad])!r} is not a number, but the "
            f"column was numeric when the data were scanned (did the file change?)"
        )

    def _read_file(
        self, path: str, size: int, at: tuple[int, int] | None = None, limit: int | None = None
    ) -> Iterator[tuple[list[str], Callable, np.ndarray, int]]:
        """``(names, columns(wanted) -> {column: values}, row numbers, locate)`` blocks of up
        to ``size`` rows; ``locate`` is the byte offset (CSV) or row group (Parquet) where the
        block starts; ``at``: start at ``(locate, first row)`` and read ``limit`` rows."""
        if is_parquet(path):
            return _parquet_blocks(path, size, at)
        return self._csv_blocks(path, size, at, limit)

    def _csv_blocks(
        self, path: str, size: int, at: tuple[int, int] | None, limit: int | None
    ) -> Iterator[tuple[list[str], Callable, np.ndarray, int]]:
        try:
            f = open(path, "rb")  # noqa: SIM115 (a generator: closed by the with below)
        except OSError as e:
            raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from e
        with f:
            if at is None:  # read_csv names columns in a message from the file's first line
                header, header_raw, first_line = None, f.readline().rstrip(b"\n"), 1
                f.seek(0)
            else:
                (header, header_raw), first_line = self._headers[path], at[1]
                f.seek(at[0])
            lines = _Lines(f, path, self.encoding, self.delimiter, first_line, header_raw)
            reader = csv.reader(lines, delimiter=self.delimiter, skipinitialspace=True, strict=True)
            records: list[list[str]] = []
            rows: list[int] = []
            start = seen = 0
            for line, rec in csv_records(reader, path, first_line, header):
                off = lines.offset_of(line)
                if header is None:
                    header = [h.strip() for h in rec]
                    _check_header(header, path)
                    self._headers[path] = (header, header_raw)
                    continue
                if not records:
                    start = off
                records.append(rec)
                rows.append(line)
                seen += 1
                if len(records) == size or seen == limit:
                    yield header, _csv_columns(header, records), np.asarray(rows), start
                    records, rows = [], []
                    if seen == limit:
                        return
            if header is None:
                raise DataError(f"{path}: the file is empty (expected a header row and data rows)")
            if records:
                yield header, _csv_columns(header, records), np.asarray(rows), start


def _csv_columns(header: list[str], records: list[list[str]]) -> Callable:
    def columns(wanted: list[str]) -> dict[str, list[str]]:
        pos = {h: j for j, h in enumerate(header)}
        return {c: [r[pos[c]] for r in records] for c in wanted}

    return columns


def open_parquet(path: str):
    """``pyarrow.parquet.ParquetFile(path)`` (the ``data`` extra, imported here lazily), with
    a missing pyarrow a LeptonError and a file pyarrow cannot read a DataError naming it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LeptonError("reading Parquet needs pyarrow: pip install 'lepton-nn[data]'") from None
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow's own errors: not a Parquet file, truncated...
        raise DataError(f"{path}: not readable as Parquet ({e})") from None


def _parquet_blocks(
    path: str, size: int, at: tuple[int, int] | None
) -> Iterator[tuple[list[str], Callable, np.ndarray, int]]:
    """Row groups of a Parquet file, each in pieces of up to ``size`` rows (at: one group)."""
    with open_parquet(path) as pf:
        names = list(pf.schema_arrow.names)
        meta = pf.metadata
        first = 1
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if at is not None and g != at[0]:
                first += n
                continue
            step = max(n, 1) if at is not None or size == 0 else size  # 0: whole groups
            for rb in pf.iter_batches(batch_size=step, row_groups=[g]):
                yield names, _arrow_columns(rb), np.arange(first, first + rb.num_rows), g
                first += rb.num_rows
            if at is not None:
                return


def _arrow_columns(rb: Any) -> Callable:
    def columns(wanted: list[str]) -> dict[str, np.ndarray]:
        return {c: _arrow_column(rb.column(c)) for c in wanted}

    return columns


def _arrow_column(col: Any) -> np.ndarray:
    """Numbers (and booleans) as float64 with NaN for nulls; anything else as Python objects
    with None for nulls (read as CSV text is)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(col.to_pylist(), dtype=object)


def concat_tables(tables: Sequence[Table]) -> Table:
    """The rows of ``tables`` (same columns and kinds) in one Table; its source is the
    first's (row numbers are kept, so a row of another file is named with the first file)."""
    first = tables[0]
    data = {c: np.concatenate([t.data[c] for t in tables]) for c in first.columns}
    y = None if first.target is None else np.concatenate([t.target for t in tables])
    rows = None
    if all(t.row_numbers is not None for t in tables):
        rows = np.concatenate([t.row_numbers for t in tables])
    return Table(data, first.kinds, y, first.target_name, first.source, rows)


def stream(
    source: Any,
    target: str | None = None,
    batch_rows: int = 65536,
    columns: Sequence[str] | None = None,
    **options: Any,
) -> TableStream:
    """A re-iterable over :class:`Table` batches of at most ``batch_rows`` rows of a CSV or
    Parquet file, folder or glob (see the module docstring). ``columns``: only these
    (and the target). ``options``: ``column_types``, ``na_values``, ``non_numeric``, ``drop``,
    ``delimiter``, ``encoding`` as for :func:`~lepton_nn.data.read_csv`; ``block_rows``,
    the rows per chunk (default ``min(batch_rows, 1024)``); ``shuffle_buffer``, the rows
    training shuffles at once (default 65536; see :mod:`lepton_nn.train.streaming`)."""
    return TableStream(source, target, batch_rows, columns, **options)
