"""train_test_split, KFold and StratifiedKFold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lepton_nn import random as lrandom
from lepton_nn.data import KFold, StratifiedKFold, Table, train_test_split
from lepton_nn.errors import DataError


def labels(n_pos: int, n_neg: int) -> np.ndarray:
    return np.array([1] * n_pos + [0] * n_neg)


def test_split_sizes_and_partition():
    X = np.arange(100).reshape(50, 2)
    y = np.arange(50)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, seed=0)
    assert len(Xte) == 15 and len(Xtr) == 35
    np.testing.assert_array_equal(Xtr[:, 0] // 2, ytr)  # rows stay paired
    assert sorted(np.r_[ytr, yte].tolist()) == list(range(50))
    _, te = train_test_split(y, test_size=7, seed=0)
    assert len(te) == 7
    _, te = train_test_split(y, test_size=0.25, seed=0)
    assert len(te) == 13  # rounded up, like scikit-learn


def test_same_seed_same_split_and_global_seed():
    y = np.arange(40)
    a = train_test_split(y, seed=3)
    b = train_test_split(y, seed=3)
    c = train_test_split(y, seed=4)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    try:
        lrandom.set_seed(11)
        d = train_test_split(y)
        lrandom.set_seed(11)
        e = train_test_split(y)
    finally:
        lrandom.set_seed(None)
    np.testing.assert_array_equal(d[1], e[1])
    gen = np.random.default_rng(5)
    f = train_test_split(y, seed=gen)
    np.testing.assert_array_equal(f[1], train_test_split(y, seed=np.random.default_rng(5))[1])


def test_stratified_keeps_proportions():
    y = labels(30, 70)
    ytr, yte = train_test_split(y, test_size=0.2, stratify=y, seed=1)
    assert len(yte) == 20 and yte.sum() == 6 and ytr.sum() == 24
    strings = np.where(y == 1, "bad", "good").astype(object)
    _, te = train_test_split(strings, test_size=0.2, stratify=strings, seed=1)
    assert (te == "bad").sum() == 6


def test_split_tables_and_lists():
    t = Table.from_arrays({"a": np.arange(10.0), "y": ["p", "n"] * 5}, target="y")
    tr, te, ltr, lte = train_test_split(
        t, list(range(10)), test_size=0.2, stratify=t.target, seed=0
    )
    assert isinstance(tr, Table) and len(te) == 2 and sorted(te.target.tolist()) == ["n", "p"]
    assert te["a"].astype(int).tolist() == lte


def test_no_shuffle_and_errors():
    y = np.arange(10)
    tr, te = train_test_split(y, test_size=0.3, shuffle=False)
    assert te.tolist() == [7, 8, 9]
    with pytest.raises(DataError, match="different lengths"):
        train_test_split(y, y[:5])
    with pytest.raises(DataError, match="only 1 row"):
        train_test_split(y, stratify=[0] * 9 + [1], seed=0)
    with pytest.raises(ValueError):
        train_test_split(y, test_size=1.5)
    with pytest.raises(DataError, match="empty train or test"):
        train_test_split(y, test_size=10)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), k=st.integers(2, 7), shuffle=st.booleans(), seed=st.integers(0, 99))
def test_kfold_covers_every_index_once(n, k, shuffle, seed):
    if k > n:
        with pytest.raises(DataError):
            list(KFold(k).split(np.zeros(n)))
        return
    folds = list(KFold(k, shuffle=shuffle, seed=seed).split(np.zeros(n)))
    assert len(folds) == k
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(n))
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) <= 1
    for tr, te in folds:
        assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == n


def test_kfold_like_sklearn_without_shuffle():
    from sklearn.model_selection import KFold as SkKFold

    X = np.zeros(23)
    for (a, b), (c, d) in zip(KFold(5).split(X), SkKFold(5).split(X), strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_kfold_seeded_repeatable():
    X = np.zeros(30)
    a = [te for _, te in KFold(3, shuffle=True, seed=2).split(X)]
    b = [te for _, te in KFold(3, shuffle=True, seed=2).split(X)]
    c = [te for _, te in KFold(3, shuffle=True, seed=9).split(X)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c, strict=True))


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(3, 25), min_size=2, max_size=4),
    k=st.integers(2, 3),
    shuffle=st.booleans(),
    seed=st.integers(0, 99),
)
def test_stratified_kfold_balanced(counts, k, shuffle, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    y = np.random.default_rng(seed).permutation(y)
    folds = list(StratifiedKFold(k, shuffle=shuffle, seed=seed).split(np.zeros(len(y)), y))
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(y)))
    per_class = np.array([np.bincount(y[te], minlength=len(counts)) for _, te in folds])
    assert np.all(per_class.max(axis=0) - per_class.min(axis=0) <= 1)
    sizes = per_class.sum(axis=1)
    assert sizes.max() - sizes.min() <= 1


def test_stratified_kfold_seed_and_errors():
    y = labels(12, 28)
    X = np.zeros(40)
    a = [te for _, te in StratifiedKFold(4, shuffle=True, seed=1).split(X, y)]
    b = [te for _, te in StratifiedKFold(4, shuffle=True, seed=1).split(X, y)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert all(y[te].sum() == 3 for te in a)
    with pytest.raises(DataError, match="needs the class labels"):
        list(StratifiedKFold(3).split(X))
    with pytest.raises(DataError, match="X has 40 rows but y has 39"):
        list(StratifiedKFold(3).split(X, y[:-1]))
    with pytest.warns(UserWarning, match="smallest class has 2 rows"):
        list(StratifiedKFold(3).split(np.zeros(10), labels(2, 8)))
    with pytest.raises(ValueError):
        KFold(1)
    assert StratifiedKFold(4).get_n_splits() == 4
