"""iterate_batches: coverage, partial batches, reused buffers, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_nn.data import iterate_batches, n_batches
from lepton_nn.errors import ShapeError


def make(n: int = 10):
    X = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64)
    return X, y


def test_shuffled_batches_cover_all_rows_with_partial_last():
    X, y = make(10)
    batches = iterate_batches(X, y, batch_size=4, rng=0)
    assert len(batches) == 3
    seen = []
    sizes = []
    for xb, yb in batches:
        sizes.append(len(xb))
        np.testing.assert_array_equal(xb[:, 0], yb * 3)  # rows stay paired
        assert xb.dtype == np.float32 and xb.flags.c_contiguous
        seen += yb.tolist()
    assert sizes == [4, 4, 2] and sorted(seen) == list(range(10))
    assert seen != list(range(10))


def test_buffers_are_reused():
    X, y = make(9)
    it = iter(iterate_batches(X, y, batch_size=4, rng=1))
    xb1, _ = next(it)
    base = xb1.base if xb1.base is not None else xb1
    xb2, _ = next(it)
    xb3, _ = next(it)
    assert np.shares_memory(xb1, xb2) and np.shares_memory(xb2, xb3)
    assert (xb3.base if xb3.base is not None else xb3) is base
    assert len(xb3) == 1


def test_epochs_differ_and_seed_repeats():
    X, y = make(20)
    b = iterate_batches(X, y, batch_size=20, rng=3)
    e1 = next(iter(b))[1].copy()
    e2 = next(iter(b))[1].copy()
    assert not np.array_equal(e1, e2)
    again = next(iter(iterate_batches(X, y, batch_size=20, rng=3)))[1]
    np.testing.assert_array_equal(e1, again)


def test_unshuffled_views_and_drop_last():
    X, y = make(10)
    out = list(iterate_batches(X, y, batch_size=4, shuffle=False, drop_last=True))
    assert len(out) == 2 and all(np.shares_memory(xb, X) for xb, _ in out)
    np.testing.assert_array_equal(out[1][1], [4, 5, 6, 7])
    assert n_batches(10, 4) == 3 and n_batches(10, 4, drop_last=True) == 2


def test_sample_weight_and_no_y():
    X, y = make(7)
    w = np.linspace(0, 1, 7)
    for _xb, yb, wb in iterate_batches(X, y, batch_size=3, sample_weight=w, rng=0):
        np.testing.assert_allclose(wb, w[yb])
    for xb, yb in iterate_batches(X, batch_size=3, rng=0):
        assert yb is None and xb.shape[1] == 3
    # a non-contiguous input is gathered into buffers even without shuffling
    F = np.asfortranarray(X)
    xb, _ = next(iter(iterate_batches(F, y, batch_size=3, shuffle=False)))
    assert xb.flags.c_contiguous
    np.testing.assert_array_equal(xb, X[:3])


def test_errors():
    X, y = make(5)
    with pytest.raises(ShapeError, match=r"X has shape \(5, 3\) but y has shape \(4,\)"):
        iterate_batches(X, y[:4])
    with pytest.raises(ValueError):
        iterate_batches(X, y, batch_size=0)
