"""The scan of a :func:`~lepton_nn.data.stream`: what ``read_csv`` needs to type a whole
column (values present, values that are not numbers, the first of them, the target's
classes), accumulated batch by batch, and the rule that turns it into the column's kind."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_nn.data.table import MIXED_SHARE
from lepton_nn.errors import DataError, DataWarning
from lepton_nn.runtime.preprocess import (
    CATEGORICAL,
    NUMERIC,
    category_str,
    is_missing,
    parse_number,
    parse_numeric,
)

__all__ = ["Column", "numbers"]

_SHOWN = 5  # text values named in a message, as read_csv names them


class Column:
    """What ``read_csv`` needs to type a whole column, accumulated batch by batch."""

    def __init__(self, name: str, declared: str | None, non_numeric: str, target: bool):
        self.name, self.declared, self.non_numeric, self.target = (
            name,
            declared,
            non_numeric,
            target,
        )
        self.n = self.present = self.n_text = 0
        self.text: list[tuple[str, Any]] = []  # (where, value) of the first text values
        self.error: str | None = None  # the first error, raised in column order at the end
        self.whole = True  # every number a finite whole number (the target: int64)
        self.floats: set = set()  # up to 2 distinct values (the target's classes)
        self.strings: set = set()

    def update(self, values: Any, where: Callable[[int], str], na: frozenset[str]) -> None:
        if self.error is not None:
            return
        n = len(values)
        if self.target:
            if isinstance(values, list) and values:  # CSV text: the missing ones at once
                maybe = np.flatnonzero(np.isin(np.char.strip(np.asarray(values, str)), list(na)))
            else:
                maybe = _nan_rows(values, na)
            for i in maybe:
                if is_missing(values[i], na):
                    self.error = f"{where(i)}, column {self.name!r}: the target value is missing"
                    return
        if self.declared == CATEGORICAL:
            self._classes(None, values, na)
            self.n += n
            return
        out, bad = numbers(values, na)
        if bad is None:
            missing = sum(is_missing(values[i], na) for i in _nan_rows(out, na))
            text_rows: list[int] = []
        else:
            if self.declared == NUMERIC and (self.non_numeric == "error" or self.target):
                self.error = (
                    f"{where(bad)}, column {self.name!r}: {str(values[bad])!r} is not a "
                    f"number, but the column is declared numeric"
                )
                return
            missing, text_rows = 0, []
            for i, v in enumerate(values):
                if is_missing(v, na):
                    missing += 1
                elif parse_number(v) is None:
                    text_rows.append(i)
            out = None
        self.n += n
        self.present += n - missing
        self.n_text += len(text_rows)
        for i in text_rows[: _SHOWN - len(self.text)]:
            self.text.append((where(i), values[i]))
        if self.target:
            self._classes(out, values, na)

    def _classes(self, out: np.ndarray | None, values: Any, na: frozenset[str]) -> None:
        """Keep up to two distinct labels, as numbers (while all are) and as text."""
        if out is not None and self.n_text == 0:
            fin = out[np.isfinite(out)]
            self.whole = self.whole and fin.size == out.size and bool(np.all(fin == np.round(fin)))
            for v in np.unique(out)[:2]:
                if len(self.floats) < 2:
                    self.floats.add(float(v))
        if len(self.strings) < 2:
            for v in values:
                if not is_missing(v, na):
                    self.strings.add(category_str(v))
                    if len(self.strings) == 2:
                        break

    def kind(self) -> str:
        """The column's kind over all its values (``infer_column``'s rule); raises its error."""
        if self.error is not None:
            raise DataError(self.error)
        if self.n_text == 0 or self.declared == CATEGORICAL:
            return self.declared or NUMERIC
        if self.target:  # labels are labels: a few text ones make the target categorical
            return CATEGORICAL
        present = self.n if self.declared == NUMERIC else self.present
        if self.declared is None and self.n_text > MIXED_SHARE * present:
            return CATEGORICAL
        rows = ", ".join(f"{w.rsplit(': ', 1)[-1]} ({str(v).strip()!r})" for w, v in self.text)
        if self.n_text > _SHOWN:
            rows += f" and {self.n_text - _SHOWN} more"
        head = f"{self.text[0][0]}, column {self.name!r}"
        if self.non_numeric == "error":
            raise DataError(
                f"{head}: text in a column of numbers ({self.n_text} of {present} values: "
                f"{rows}); fix them, declare the column's type (column_types=, --numeric/"
                f"--categorical) or read them as missing (non_numeric='missing')"
            )
        warnings.warn(
            f"{head}: {self.n_text} text value(s) in a column of numbers read as missing: {rows}",
            DataWarning,
            stacklevel=4,
        )
        return NUMERIC


def numbers(values: Any, na: frozenset[str]) -> tuple[np.ndarray, int | None]:
    """:func:`parse_numeric`, in one NumPy cast when the values are CSV text that is all
    numbers or missing (NumPy parses text as Python's ``float`` does); else value by value."""
    if isinstance(values, list) and values:
        s = np.asarray(values, dtype=str)
        miss = np.isin(np.char.strip(s), list(na))
        try:
            return np.where(miss, "nan", s).astype(np.float64), None
        except ValueError:
            pass
    return parse_numeric(values, na)


def _nan_rows(values: Any, na: frozenset[str]) -> np.ndarray:
    """Rows that may be missing: NaN in a float array, else every row (checked one by one)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return np.flatnonzero(np.isnan(values))
    return np.arange(len(values))
