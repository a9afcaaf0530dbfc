"""The strict CSV reader behind :func:`read_csv` (standard-library ``csv`` and NumPy only):
bytes decoded with the named encoding, one record per line, a header of unique names, every
field of a column parsed as its kind, and any failure a :class:`~lepton_nn.errors.DataError`
naming the file, the 1-based row and the column. :func:`csv_records` yields the raw records
for the streaming readers.
"""

from __future__ import annotations

import array
import csv
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lepton_nn.errors import DataError
from lepton_nn.runtime.preprocess import (
    DEFAULT_NA,
)

from .table import (
    Table,
    _check_kinds,
    _target_array,
    infer_column,
)

__all__ = ["csv_records", "read_csv"]


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
