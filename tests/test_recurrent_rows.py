"""The fused recurrent kernel (kernels/csrc/recurrent_rows.h) across its row tiles and row
chunks, and its ranges shared by threads step by step (kernels/csrc/rows_share.h): every
row's states are the same bits however the rows are grouped, split or handed between threads,
and close to the NumPy twin (ReferenceBackend.recurrent_rows_forward)."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_nn.backend.reference import ReferenceBackend

_rec = pytest.importorskip("lepton_nn.kernels._recurrent")
if not _rec.rows_available():
    pytest.skip("no compiled recurrent rows kernel (AVX2 + FMA)", allow_module_level=True)

REF = ReferenceBackend()
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
T, F, U = 6, 5, 21  # U = 21: two blocks of 8 units and a partial one of 5


def _case(cell, b, seed):
    g = GATES[cell]
    rng = np.random.default_rng(seed)
    w_ih = (rng.standard_normal((F, g * U)) / 2).astype(np.float32)
    w_hh = (rng.standard_normal((U, g * U)) / np.sqrt(U)).astype(np.float32)
    bias, b_hh = (rng.standard_normal(g * U).astype(np.float32) for _ in range(2))
    wp = REF.pack_recurrent(cell, w_ih, bias, w_hh, b_hh if cell == "GRU" else None)
    x = rng.standard_normal((T, b, F)).astype(np.float32)
    mask = (rng.uniform(size=(T, b)) < 0.8).astype(np.float32)
    return wp, x, mask


def _states(cell, b, reverse):
    h = np.zeros((T + 1, b, U), np.float32)
    c = np.zeros((2, b, U), np.float32) if cell == "LSTM" else None
    h[T if reverse else 0] = 0.25  # a non-zero initial state
    if c is not None:
        c[T % 2 if reverse else 0] = -0.5
    return h, c


def _same(got, want):
    for g, w in zip(got, want, strict=True):
        if w is not None:
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("b", [1, 2, 4, 5, 7, 11, 64, 65, 70, 131])
def test_tiles_and_chunks_same_bits(cell, b):
    """One call over b rows (tiles of 3 rows, SimpleRNN 8, the last rows in 2-row tiles;
    chunks of 64 rows) gives each row the bits it gets alone (a 1-row tile), and agrees
    with the NumPy twin."""
    wp, x, mask = _case(cell, b, seed=b)
    whole = _states(cell, b, False)
    _rec.recurrent_rows_forward(cell, x, wp, *whole, mask, 0, b, False)
    rows = _states(cell, b, False)
    for i in range(b - 1, -1, -1):
        _rec.recurrent_rows_forward(cell, x, wp, *rows, mask, i, i + 1, False)
    _same(rows, whole)
    twin = _states(cell, b, False)
    REF.recurrent_rows_forward(cell, x, wp, *twin, mask, 0, b, False)
    for g, w in zip(whole, twin, strict=True):
        if w is not None:
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("reverse", [False, True])
def test_threads_share_ranges_same_bits(cell, reverse):
    """recurrent_rows_threads: the ranges run a step at a time by whichever thread is free
    (any bounds, empty ranges, more ranges than threads and fewer), at 1, 2, 3 and 5
    threads, give the bits of one call over all rows."""
    b = 67
    wp, x, mask = _case(cell, b, seed=7)
    want = _states(cell, b, reverse)
    _rec.recurrent_rows_forward(cell, x, wp, *want, mask, 0, b, reverse)
    splits = (
        [0, b],
        [0, 33, b],
        [0, 22, 44, b],
        [0, 1, 2, 40, b],
        [0, 0, 5, 5, 60, b],
        list(range(0, b, 4)) + [b],
    )
    for bounds in splits:
        for threads in (1, 2, 3, 5):
            got = _states(cell, b, reverse)
            bd = np.array(bounds, np.int64)
            _rec.recurrent_rows_threads(cell, x, wp, *got, mask, bd, reverse, threads)
            _same(got, want)


def test_threads_more_ranges_than_groups():
    """More ranges than the sharing keeps groups (64): the last group takes the rest, and
    every row is still run once, in order."""
    cell, b = "LSTM", 150
    wp, x, mask = _case(cell, b, seed=3)
    want = _states(cell, b, False)
    _rec.recurrent_rows_forward(cell, x, wp, *want, mask, 0, b, False)
    got = _states(cell, b, False)
    bounds = np.arange(b + 1, dtype=np.int64)  # 150 ranges of one row
    _rec.recurrent_rows_threads(cell, x, wp, *got, mask, bounds, False, 2)
    _same(got, want)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 64])
def test_threads_parts_same_bits(cell, parts):
    """Each range cut into ``parts`` groups (rows_share.h: whole 3-row tiles, at least 6 rows
    a group, at most 64 groups), the threads keeping to their own groups and taking over
    those that lag: the bits of one call over all rows, at 1, 2 and 3 threads."""
    b = 67
    wp, x, mask = _case(cell, b, seed=11)
    want = _states(cell, b, False)
    _rec.recurrent_rows_forward(cell, x, wp, *want, mask, 0, b, False)
    for bounds in ([0, b], [0, 33, b], [0, 10, 12, 40, b]):
        for threads in (1, 2, 3):
            got = _states(cell, b, False)
            bd = np.array(bounds, np.int64)
            _rec.recurrent_rows_threads(cell, x, wp, *got, mask, bd, False, threads, None, parts)
            _same(got, want)


@pytest.mark.parametrize(
    ("bounds", "parts", "groups"),
    [
        ([0, 32, 64], 2, 4),  # 15 + 17 rows a range
        ([0, 32, 64], 1, 2),
        ([0, 10], 4, 1),  # 10 rows: one group of at least 6
        ([0, 12, 30], 4, 5),  # 12 rows: 2 groups; 18: 3
        (list(range(0, 151)), 2, 64),  # 150 ranges of a row: the last group takes the rest
    ],
)
def test_threads_groups_and_steps_in_order(bounds, parts, groups):
    """The trace of a 2-thread call (rows_trace): the ranges cut into the groups expected,
    and every group's T steps run once each, in order, whoever ran them."""
    cell, b = "LSTM", bounds[-1]
    wp, x, mask = _case(cell, b, seed=5)
    got = _states(cell, b, False)
    buf = np.zeros((64 * T + 16, 6), np.int64)
    _rec.rows_trace(buf)
    try:
        bd = np.array(bounds, np.int64)
        _rec.recurrent_rows_threads(cell, x, wp, *got, mask, bd, False, 2, None, parts)
    finally:
        n = _rec.rows_trace(None)
    rec = buf[:n]
    steps = rec[rec[:, 2] >= 0]
    assert len(set(steps[:, 1].tolist())) == groups
    for g in range(groups):
        mine = steps[steps[:, 1] == g]
        assert mine[np.argsort(mine[:, 3]), 2].tolist() == list(range(T))
    assert 1 <= (rec[:, 2] == -1).sum() == (rec[:, 2] == -2).sum() <= 2  # joined, left
    want = _states(cell, b, False)
    _rec.recurrent_rows_forward(cell, x, wp, *want, mask, 0, b, False)
    _same(got, want)
