"""Train/test splits and k-fold cross-validation indices, seeded through ``lepton_nn.random``.

``seed=None`` draws a child generator from the library's global stream
(``lepton_nn.random.spawn()``), so ``set_seed(s)`` makes every split repeatable; an int seed
(or a ``np.random.Generator``) fixes one split regardless of the global state.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from lepton_nn.data.table import Table
from lepton_nn.errors import DataError
from lepton_nn.random import rng as _rng
from lepton_nn.random import spawn

Seed = int | np.random.Generator | None


def _generator(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return spawn() if seed is None else _rng(int(seed))


def _n_rows(a: Any) -> int:
    return len(a)


def _take(a: Any, idx: np.ndarray) -> Any:
    if isinstance(a, Table):
        return a.take(idx)
    if isinstance(a, np.ndarray):
        return a[idx]
    if isinstance(a, list):
        return [a[i] for i in idx]
    return np.asarray(a)[idx]


def _encode(y: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """Class labels -> (classes, codes, where), ``where(i)`` naming row i (a Table's file row)."""
    arr = y.target if isinstance(y, Table) else np.asarray(y)
    if arr is None or arr.ndim != 1:
        raise DataError("stratify: expected a 1-D array of class labels")
    try:
        classes, codes = np.unique(arr, return_inverse=True)
    except TypeError:
        raise DataError("stratify: labels mix types that cannot be ordered") from None
    if isinstance(y, Table):
        name = y.target_name

        def where(i: int) -> str:
            return f"{y.where(i)}, column {name!r}"
    else:

        def where(i: int) -> str:
            return f"row index {i}"

    return classes, codes.reshape(-1), where


def _item(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _test_count(test_size: float | int, n: int) -> int:
    if isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        n_test = int(test_size)
    elif isinstance(test_size, (float, np.floating)) and 0.0 < test_size < 1.0:
        n_test = math.ceil(float(test_size) * n)
    else:
        raise ValueError(f"test_size={test_size!r}: use a fraction in (0, 1) or a row count")
    if not 0 < n_test < n:
        raise DataError(f"test_size={test_size!r} leaves an empty train or test set of {n} rows")
    return n_test


def _stratified_test(
    codes: np.ndarray, n_test: int, gen: np.random.Generator, classes: np.ndarray, where: Any
) -> np.ndarray:
    """Pick ``n_test`` indices keeping class proportions (largest remainders, random ties)."""
    counts = np.bincount(codes)
    if counts.min() < 2:
        k = int(np.argmin(counts))
        raise DataError(
            f"{where(int(np.flatnonzero(codes == k)[0]))}: stratify: class "
            f"{_item(classes[k])!r} has only {int(counts.min())} row; each class needs at least 2"
        )
    exact = counts * (n_test / len(codes))
    take = np.floor(exact).astype(np.int64)
    left = n_test - int(take.sum())
    if left > 0:
        # random tie-break, then largest fractional part first
        order = np.lexsort((gen.random(len(counts)), -(exact - take)))
        take[order[:left]] += 1
    take = np.clip(take, 1, counts - 1)  # at least one row per class on each side
    test = [gen.permutation(np.flatnonzero(codes == k))[:t] for k, t in enumerate(take)]
    return np.concatenate(test)


def train_test_split(
    *arrays: Any,
    test_size: float | int = 0.25,
    stratify: Any = None,
    seed: Seed = None,
    shuffle: bool = True,
) -> list[Any]:
    """Split arrays (NumPy, lists or Tables) into ``[a_train, a_test, b_train, b_test, ...]``.

    ``test_size``: a fraction (rounded up, like scikit-learn) or a row count. ``stratify``:
    class labels keeping their proportions in both parts. Row order inside each part is random
    (or the original order when ``shuffle=False``, which cannot be stratified).
    """
    if not arrays:
        raise ValueError("train_test_split: give at least one array")
    n = _n_rows(arrays[0])
    for a in arrays[1:]:
        if _n_rows(a) != n:
            raise DataError(
                f"train_test_split: arrays have different lengths {[_n_rows(b) for b in arrays]}"
            )
    n_test = _test_count(test_size, n)
    if not shuffle:
        if stratify is not None:
            raise ValueError("train_test_split: stratify needs shuffle=True")
        train, test = np.arange(n - n_test), np.arange(n - n_test, n)
    else:
        gen = _generator(seed)
        if stratify is None:
            perm = gen.permutation(n)
            test, train = perm[:n_test], perm[n_test:]
        else:
            classes, codes, where = _encode(stratify)
            if len(codes) != n:
                raise DataError(f"train_test_split: stratify has {len(codes)} labels for {n} rows")
            test = gen.permutation(_stratified_test(codes, n_test, gen, classes, where))
            mask = np.ones(n, dtype=bool)
            mask[test] = False
            train = gen.permutation(np.flatnonzero(mask))
    out: list[Any] = []
    for a in arrays:
        out += [_take(a, train), _take(a, test)]
    return out


class KFold:
    """K folds of (nearly) equal size; the first ``n % k`` folds get one extra row.

    ``split(X)`` yields ``(train_idx, test_idx)``; every index is in exactly one test fold.
    With ``shuffle=True`` the rows are permuted first (by ``seed``, see the module docstring);
    without it the seed is ignored and folds are consecutive blocks.
    """

    def __init__(self, n_splits: int = 5, shuffle: bool = False, seed: Seed = None) -> None:
        if not isinstance(n_splits, (int, np.integer)) or n_splits < 2:
            raise ValueError(f"n_splits={n_splits!r}: need an int >= 2")
        self.n_splits = int(n_splits)
        self.shuffle = shuffle
        self.seed = seed

    def get_n_splits(self, X: Any = None, y: Any = None) -> int:
        return self.n_splits

    def _check(self, n: int) -> None:
        if self.n_splits > n:
            raise DataError(f"{type(self).__name__}: {self.n_splits} folds for only {n} rows")

    def _fold_of(self, X: Any, y: Any) -> np.ndarray:
        n = _n_rows(X)
        self._check(n)
        order = _generator(self.seed).permutation(n) if self.shuffle else np.arange(n)
        sizes = np.full(self.n_splits, n // self.n_splits)
        sizes[: n % self.n_splits] += 1
        fold = np.empty(n, dtype=np.intp)
        fold[order] = np.repeat(np.arange(self.n_splits), sizes)
        return fold

    def split(self, X: Any, y: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_idx, test_idx)`` (sorted int arrays) for each fold."""
        fold = self._fold_of(X, y)
        for k in range(self.n_splits):
            yield np.flatnonzero(fold != k), np.flatnonzero(fold == k)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(n_splits={self.n_splits}, shuffle={self.shuffle}, seed={self.seed!r})"


class StratifiedKFold(KFold):
    """K folds keeping class proportions: each class is dealt round-robin over the folds.

    Per fold, every class count and the fold size differ by at most one from the other folds.
    """

    def _fold_of(self, X: Any, y: Any) -> np.ndarray:
        if y is None:
            raise DataError("StratifiedKFold.split needs the class labels y")
        _, codes, _ = _encode(y)
        n = len(codes)
        if _n_rows(X) != n:
            raise DataError(f"StratifiedKFold: X has {_n_rows(X)} rows but y has {n}")
        self._check(n)
        counts = np.bincount(codes)
        if counts.min() < self.n_splits:
            warnings.warn(
                f"StratifiedKFold: the smallest class has {int(counts.min())} rows, fewer than "
                f"{self.n_splits} folds",
                UserWarning,
                stacklevel=3,
            )
        gen = _generator(self.seed) if self.shuffle else None
        # rows grouped by class (shuffled within a class), dealt to folds 0, 1, ..., k-1, 0, ...
        within = gen.permutation(n) if gen is not None else np.arange(n)
        order = within[np.argsort(codes[within], kind="stable")]
        fold = np.empty(n, dtype=np.intp)
        fold[order] = np.arange(n) % self.n_splits
        if gen is not None:  # which fold gets the extra rows should not always be fold 0
            fold = gen.permutation(self.n_splits)[fold]
        return fold
