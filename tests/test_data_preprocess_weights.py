"""Preprocessor.fit(sample_weight=...): weighted statistics equal those of repeated rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lepton_nn import datasets
from lepton_nn.data import Preprocessor, Table, read_csv
from lepton_nn.data.preprocess import _stat
from lepton_nn.errors import DataError

CONFIGS = [
    dict(numeric="median", categorical="most_frequent", scaling="standard"),
    dict(numeric="mean", categorical="constant", scaling="minmax", missing_indicator=True),
    dict(numeric="median", categorical="most_frequent", scaling="none", missing_indicator=True),
]

_num = st.one_of(
    st.just(math.nan),
    st.sampled_from([-2.5, 0.0, 1.0, 3.25, 7.0]),  # ties are common
    st.floats(-1e3, 1e3, allow_nan=False),
)
_cat = st.sampled_from(["a", "b", "c", None])


@st.composite
def weighted_rows(draw):
    n = draw(st.integers(1, 12))
    num = draw(st.lists(_num, min_size=n, max_size=n))
    cat = draw(st.lists(_cat, min_size=n, max_size=n))
    w = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    return np.array(num), np.array(cat, dtype=object), np.array(w)


def _table(num, cat) -> Table:
    return Table.from_arrays({"num": num, "cat": cat}, column_types={"cat": "categorical"})


def _assert_same_columns(got, want, exact: bool) -> None:
    assert len(got) == len(want)
    for g, e in zip(got, want, strict=True):
        assert g.keys() == e.keys()
        for k in g:
            if isinstance(g[k], float) and not exact and k in ("center", "scale", "fill"):
                assert g[k] == pytest.approx(e[k], rel=1e-12, abs=1e-12), (g["name"], k)
            else:
                assert g[k] == e[k], (g["name"], k)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=weighted_rows(), cfg=st.sampled_from(CONFIGS))
def test_integer_weights_equal_repeated_rows(rows, cfg):
    num, cat, w = rows
    rep = w > 0
    assume(rep.any() and (~np.isnan(num[rep])).any())
    assume(cfg["categorical"] == "constant" or any(c is not None for c in cat[rep]))
    weighted = Preprocessor(drop_duplicates=False, **cfg).fit(_table(num, cat), sample_weight=w)
    repeated = Preprocessor(drop_duplicates=False, **cfg).fit(
        _table(np.repeat(num, w), np.repeat(cat, w))
    )
    # medians, minmax, categories and most-frequent picks are exact; means and spreads are
    # the same sums taken in another order
    _assert_same_columns(weighted.columns_, repeated.columns_, exact=False)
    if cfg["numeric"] == "median":
        assert weighted.columns_[0]["fill"] == repeated.columns_[0]["fill"]
    assert weighted.feature_names_out == repeated.feature_names_out
    assert weighted.kept_index_.tolist() == np.flatnonzero(w).tolist()
    assert weighted.report_["rows_zero_weight"] == int(np.sum(w == 0))


@settings(max_examples=150, deadline=None)
@given(
    v=st.lists(
        st.one_of(st.floats(-1e6, 1e6), st.floats(-1e308, 1e308), st.sampled_from([0.0, 1.0])),
        min_size=1,
        max_size=40,
    )
)
def test_unit_weights_are_bit_identical_to_unweighted(v):
    v = np.array(v)
    ones = np.ones(len(v))
    for how in ("mean", "median", "std"):
        with np.errstate(over="ignore", invalid="ignore"):
            want, got = _stat(how, v), _stat(how, v, ones)
        assert got == want or (math.isnan(got) and math.isnan(want)), how


def test_weighted_statistics_by_hand():
    v = np.array([4.0, 1.0, 3.0, 2.0])
    assert _stat("median", v, np.array([1.0, 1.0, 1.0, 1.0])) == 2.5
    assert _stat("median", v, np.array([1.0, 3.0, 1.0, 1.0])) == 1.5  # 1 1 1 2 3 4
    assert _stat("median", v, np.array([1.0, 4.0, 1.0, 1.0])) == 1.0  # 1 1 1 1 2 3 4
    assert _stat("median", v, np.array([0.5, 0.5, 0.5, 0.5])) == 2.5  # scale-free
    assert _stat("mean", v, np.array([1.0, 3.0, 1.0, 1.0])) == 2.0  # 12 / 6
    # 1 1 1 2 3 4: mean 2, squares 1 1 1 0 1 4 -> var 8/6
    assert _stat("std", v, np.array([1.0, 3.0, 1.0, 1.0])) == pytest.approx(math.sqrt(8 / 6))


@pytest.fixture(scope="module")
def credit() -> Table:
    return read_csv(datasets.path("credit_data"), target="Status")


def test_credit_unit_weights_bit_identical(credit):
    want = Preprocessor(missing_indicator=True).fit(credit)
    got = Preprocessor(missing_indicator=True).fit(credit, sample_weight=np.ones(credit.n_rows))
    assert got.columns_ == want.columns_  # dict equality: every float bit for bit
    assert got.kept_index_.tolist() == want.kept_index_.tolist()
    assert {**got.report_, "rows_zero_weight": 0} == {**want.report_, "rows_zero_weight": 0}
    assert got.report_["rows_zero_weight"] == 0 and "rows_zero_weight" not in want.report_


def test_credit_zero_weight_is_row_removed(credit):
    rng = np.random.default_rng(0)
    w = (rng.random(credit.n_rows) > 0.3).astype(np.float64)
    for cfg in CONFIGS:
        got = Preprocessor(**cfg).fit(credit, sample_weight=w)
        want = Preprocessor(**cfg).fit(credit.take(np.flatnonzero(w)))
        assert got.columns_ == want.columns_, cfg
        assert got.kept_index_.tolist() == np.flatnonzero(w)[want.kept_index_].tolist()
        assert got.report_["duplicates_dropped"] == want.report_["duplicates_dropped"]
        x = credit.take(np.arange(50))
        np.testing.assert_array_equal(got.transform(x), want.transform(x))


def test_weights_move_the_statistics():
    t = _table(np.array([1.0, 2.0, 10.0, np.nan]), np.array(["a", "b", "b", "a"], dtype=object))
    pre = Preprocessor(drop_duplicates=False).fit(t, sample_weight=[5, 1, 1, 1])
    num, cat = pre.columns_
    assert num["fill"] == 1.0  # 1 1 1 1 1 2 10
    assert cat["fill"] == "a"  # a: 6, b: 2
    plain = Preprocessor(drop_duplicates=False).fit(t).columns_
    assert plain[0]["fill"] == 2.0 and plain[1]["fill"] == "a"
    xs = pre.fit_transform(t, sample_weight=[5, 1, 1, 1])
    np.testing.assert_array_equal(xs, pre.transform(t))


def test_duplicates_searched_among_positive_weights_only():
    t = _table(np.array([1.0, 1.0, 5.0]), np.array(["a", "a", "b"], dtype=object))
    pre = Preprocessor().fit(t, sample_weight=[0, 3, 1])
    # row 0 (weight 0) is out, so row 1 is not a duplicate of it and keeps its weight 3
    assert pre.kept_index_.tolist() == [1, 2]
    assert pre.report_["duplicates_dropped"] == 0 and pre.report_["rows_zero_weight"] == 1
    assert pre.columns_[0]["center"] == 2.0  # (3 * 1 + 5) / 4


@pytest.mark.parametrize(
    "w, match",
    [
        ([1.0, -1.0, 1.0], "non-negative"),
        ([1.0, math.nan, 1.0], "finite"),
        ([1.0, math.inf, 1.0], "finite"),
        ([1.0, 1.0], r"shape \(2,\), expected \(3,\)"),
        ([0.0, 0.0, 0.0], "every sample_weight is zero"),
        (["x", "y", "z"], "not numeric"),
    ],
)
def test_bad_weights_are_data_errors(w, match):
    t = _table(np.array([1.0, 2.0, 3.0]), np.array(["a", "b", "a"], dtype=object))
    with pytest.raises(DataError, match=match):
        Preprocessor().fit(t, sample_weight=w)
