"""A :class:`~lepton_nn.data.Preprocessor` fitted in one pass over a stream of tables.

Per numeric column, over the rows kept (every row, less those a ``"drop"`` strategy leaves
out for a missing value), in float64::

    count, mean, M2 = sum (x - mean)^2      merged batch by batch (Chan et al.):
        d = mean_b - mean,  n' = n + n_b,  mean' = mean + d n_b / n',
        M2' = M2 + M2_b + d^2 n n_b / n'
    min, max, missing count

and the imputed column (``n_miss`` copies of the fill) merged in the same way at the end, so
``center`` and ``scale`` equal the in-memory ``np.mean``/``np.std`` of the filled column to
rounding (~1e-15 relative). Per categorical column: exact counts of every category.

**Approximate** (and only this): the median (the default numeric fill) of a column with more
than ``SKETCH_K`` values is taken from a bounded sketch (KLL-style compactors: a level holds
at most ``SKETCH_K`` values of weight 2^h; when full it is sorted and every other value goes
up a level), whose rank error is at most ``log2(n / SKETCH_K) / SKETCH_K`` of the ``n``
values (about 0.1 % at 100 million rows); up to ``SKETCH_K`` values it is exact. The mean
and spread of a column with missing values include its fill, so they inherit that error.

**Not done**: duplicate rows are not looked for (that needs memory growing with the data);
every row is kept (``report_["duplicates_dropped"]`` is 0 and ``report_["streamed"]`` true).
Sample weights are not taken.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from lepton_nn.data.table import Table
from lepton_nn.errors import DataError
from lepton_nn.runtime.preprocess import CATEGORICAL, NUMERIC

__all__ = ["MedianSketch", "fit_stream"]

SKETCH_K = 16384


class MedianSketch:
    """The median of a stream of numbers in bounded memory (exact up to ``k`` values)."""

    def __init__(self, k: int = SKETCH_K):
        self.k = int(k)
        self.levels: list[list[np.ndarray]] = [[]]
        self.sizes = [0]
        self.flips = [0]
        self.n = 0

    def add(self, values: np.ndarray) -> None:
        self.levels[0].append(np.asarray(values, dtype=np.float64))
        self.sizes[0] += len(values)
        self.n += len(values)
        h = 0
        while h < len(self.levels):
            if self.sizes[h] > self.k:
                a = np.sort(np.concatenate(self.levels[h]))
                keep = a[-1:] if len(a) % 2 else a[:0]  # an odd one out stays
                a = a[: len(a) - len(keep)]
                up = a[self.flips[h] :: 2]  # every other value, alternating which
                self.flips[h] ^= 1
                self.levels[h], self.sizes[h] = [keep], len(keep)
                if h + 1 == len(self.levels):
                    self.levels.append([])
                    self.sizes.append(0)
                    self.flips.append(0)
                self.levels[h + 1].append(up)
                self.sizes[h + 1] += len(up)
            h += 1

    @property
    def exact(self) -> bool:
        return len(self.levels) == 1

    def median(self) -> float:
        if self.exact:
            return float(np.median(np.concatenate(self.levels[0])))
        from lepton_nn.data.preprocess import _weighted

        v = np.concatenate([a for lv in self.levels for a in lv])
        w = np.concatenate(
            [np.full(len(a), 2.0**h) for h, lv in enumerate(self.levels) for a in lv]
        )
        return _weighted("median", v, w)


class _Moments:
    """Count, mean and M2 of float64 values, merged batch by batch (Chan et al.), on the
    values less a shift (the first value seen): with a mean far above the spread (1e8 +-
    1e-3) the running mean then carries no rounding of the large part."""

    def __init__(self) -> None:
        self.n, self.shift, self.mean_s, self.m2 = 0, None, 0.0, 0.0

    @property
    def mean(self) -> float:
        return (self.shift or 0.0) + self.mean_s

    def merge(self, n: int, mean: float, m2: float) -> None:
        """Merge ``n`` values of mean ``mean`` (not shifted) and ``m2``."""
        if n == 0:
            return
        if self.shift is None:
            self.shift = mean
        self._merge(n, mean - self.shift, m2)

    def _merge(self, n: int, mean_s: float, m2: float) -> None:
        total = self.n + n
        d = mean_s - self.mean_s
        self.mean_s += d * n / total
        self.m2 += m2 + d * d * self.n * n / total
        self.n = total

    def add(self, x: np.ndarray) -> None:
        if x.size:
            if self.shift is None:
                self.shift = float(x[0])
            y = x - self.shift
            m = float(np.mean(y))
            self._merge(x.size, m, float(np.sum((y - m) ** 2)))


class _Numeric:
    def __init__(self, median: bool):
        self.moments = _Moments()
        self.sketch = MedianSketch() if median else None
        self.lo, self.hi = math.inf, -math.inf
        self.n_miss = 0  # among kept rows

    def update(self, a: np.ndarray, miss: np.ndarray) -> None:
        x = a[~miss]
        self.n_miss += int(miss.sum())
        if x.size:
            self.moments.add(x)
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
            if self.sketch is not None:
                self.sketch.add(x)


class _Categorical:
    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.n_miss = 0

    def update(self, a: np.ndarray, miss: np.ndarray) -> None:
        self.n_miss += int(miss.sum())
        self.counts.update(a[~miss].tolist())


def fit_stream(
    pre: Any, tables: Iterable[Table], visit: Callable[[Table], None] | None = None
) -> Any:
    """Fit ``pre`` (a Preprocessor) on every table of ``tables`` in one pass; ``visit(t)``
    sees each table too (say, to count the target's classes). Returns ``pre``."""
    from lepton_nn.data.preprocess import Preprocessor

    assert isinstance(pre, Preprocessor)
    cols: dict[str, Any] | None = None
    kinds: dict[str, str] = {}
    source = None
    n_in = n_fit = 0
    missing: Counter = Counter()
    for raw in tables:
        table = pre.as_table(raw)
        if cols is None:
            kinds, source = dict(table.kinds), table.source
            cols = {
                c: _Numeric(pre.numeric != "mean") if k == NUMERIC else _Categorical()
                for c, k in kinds.items()
            }
        elif table.kinds != kinds:
            raise DataError(f"{table.source}: the column types differ from the first table's")
        if visit is not None:
            visit(raw)
        n = table.n_rows
        n_in += n
        miss = {c: pre._missing_mask(table, c) for c in kinds}
        keep = np.ones(n, dtype=bool)
        for c, k in kinds.items():
            a = table.data[c]
            if k == NUMERIC:
                bad = np.flatnonzero(np.isinf(a))
                if bad.size:
                    raise DataError(f"{table.where(bad[0])}, column {c!r}: infinite value")
            if miss[c].any():
                missing[c] += int(miss[c].sum())
                if (k == NUMERIC and pre.numeric == "drop") or (
                    k == CATEGORICAL and pre.categorical == "drop"
                ):
                    keep &= ~miss[c]
        n_fit += int(keep.sum())
        for c, state in cols.items():
            state.update(table.data[c][keep], miss[c][keep])
        del raw, table, miss, keep  # before the next batch is read
    if cols is None or n_in == 0:
        raise DataError("fit: no rows")
    if n_fit == 0:
        raise DataError("fit: no rows left after dropping rows with missing values")
    pre.columns_ = [_spec(pre, c, s, source) for c, s in cols.items()]
    pre.kept_index_ = None
    per_col = {c: int(missing[c]) for c in kinds if missing[c]}
    sketches = [s.sketch for s in cols.values() if getattr(s, "sketch", None) is not None]
    pre.report_ = {
        "n_rows_in": n_in,
        "duplicates_dropped": 0,
        "rows_dropped_missing": n_in - n_fit,
        "n_rows_fit": n_fit,
        "missing_values": per_col,
        "n_missing": int(sum(per_col.values())),
        "n_features_out": len(pre.feature_names_out),
        "streamed": True,
        "median": "exact" if all(s.exact for s in sketches) else "approximate",
    }
    return pre


def _spec(pre: Any, c: str, s: Any, source: str | None) -> dict:
    spec: dict[str, Any] = {"name": c}
    if isinstance(s, _Numeric):
        m = s.moments
        if m.n == 0:
            raise DataError(f"{source or 'fit'}: column {c!r} has no values in the training rows")
        fill = m.mean if s.sketch is None else s.sketch.median()
        if pre.scaling == "standard":
            full = _Moments()
            full.shift = m.shift
            full._merge(m.n, m.mean_s, m.m2)
            full.merge(s.n_miss, fill, 0.0)  # the imputed values
            center, scale = full.mean, math.sqrt(full.m2 / full.n)
        elif pre.scaling == "minmax":
            lo, hi = (min(s.lo, fill), max(s.hi, fill)) if s.n_miss else (s.lo, s.hi)
            center, scale = lo, hi - lo
        else:
            center, scale = 0.0, 1.0
        if not all(map(math.isfinite, (fill, center, scale))):
            raise DataError(
                f"{source or 'fit'}: column {c!r}: values too large to scale (the column's "
                f"mean or spread overflows); rescale the column or drop it"
            )
        if not scale > 0.0 or s.hi == s.lo:  # constant values (see Preprocessor._fit_column)
            scale = 1.0
        spec.update(kind=NUMERIC, fill=float(fill), center=float(center), scale=float(scale))
    else:
        counts = s.counts
        if not counts and pre.categorical != "constant":
            raise DataError(f"{source or 'fit'}: column {c!r} has no values in the training rows")
        top = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counts else None
        fill = pre.fill_value if pre.categorical == "constant" else top
        cats = set(counts)
        if s.n_miss:
            cats.add(fill)
        spec.update(kind=CATEGORICAL, fill=fill, categories=sorted(cats))
    spec["indicator"] = bool(pre.missing_indicator and s.n_miss)
    return spec
