"""The column-wise preprocessing (one NumPy call for numbers, one conversion per distinct
value for text, rows read column by column) against the value-by-value reference, on every
column type: numbers with NaN and None, numeric text, NA strings, text categories, unseen
categories, numbers as categories, bools, missing-value indicators."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lepton_nn.errors import DataError
from lepton_nn.runtime.preprocess import (
    DEFAULT_NA,
    Preprocessing,
    categorical_each,
    category_str,
    is_missing,
    parse_each,
    parse_number,
    parse_numeric,
    to_categorical,
)

NA = frozenset(DEFAULT_NA)

plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "NA", "nan", "NaN", "?", "NULL", " 41 ", "1e3", "-0", "1.0", "1"]),
    st.sampled_from(["own", " rent ", "x", "1_000", "inf", "  "]),
    st.text(max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(plain, max_size=30), st.booleans())
def test_numbers_and_labels_equal_the_value_by_value_ones(values, as_array):
    col = np.array(values + [None], dtype=object)[:-1] if as_array else values
    out, bad = parse_numeric(col, NA)
    ref, ref_bad = parse_each(col, NA)
    assert bad == ref_bad
    if bad is None:
        np.testing.assert_array_equal(out, ref)  # NaN where missing, in both
    assert list(to_categorical(col, NA)) == list(categorical_each(col, NA))


def test_first_bad_value_is_named_at_its_row():
    for col, i in ((["1", "2", "x", "y", "x"], 2), ([" 1", None, 3, "abc"], 3), (["?", "b"], 1)):
        assert parse_numeric(col, NA)[1] == parse_each(col, NA)[1] == i


def test_bools_among_numbers_keep_their_labels():
    # True == 1 (one dict key), but they are the categories "True" and "1"
    assert list(to_categorical([1, True, 1.0, False, 0], NA)) == ["1", "True", "1", "False", "0"]


SPECS = [
    {"name": "age", "kind": "numeric", "fill": 40.0, "center": 38.0, "scale": 12.5,
     "indicator": True},
    {"name": "income", "kind": "numeric", "fill": 1e3, "center": 900.0, "scale": 300.0,
     "indicator": False},
    {"name": "home", "kind": "categorical", "fill": "rent", "categories": ["own", "rent", "free"],
     "indicator": True},
    {"name": "code", "kind": "categorical", "fill": None, "categories": ["1", "2", "3.5"],
     "indicator": False},
]  # fmt: skip

number = st.one_of(
    st.none(),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.just(float("nan")),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.sampled_from(["", "NA", "?", " 41 ", "1e3", "-2.5", "nan"]),
)
home = st.sampled_from(["own", " rent ", "free", "castle", "", "NA", None, float("nan"), 1, "1"])
code = st.sampled_from([1, 1.0, "1", 2, " 2", "3.5", 3.5, True, None, "x", float("nan")])
rows = st.lists(st.fixed_dictionaries({"age": number, "income": number, "home": home,
                                       "code": code}), min_size=1, max_size=20)  # fmt: skip


def oracle(pre: Preprocessing, rows: list[dict]) -> np.ndarray:
    """The transform written row by row, value by value, from the module docstring."""
    out = np.zeros((len(rows), pre.n_features_out), np.float32)
    for i, r in enumerate(rows):
        j = 0
        for s in pre.columns:
            v = r[s["name"]]
            miss = is_missing(v, pre.na)
            if s["kind"] == "numeric":
                x = s["fill"] if miss else parse_number(v)
                out[i, j] = np.float32((x - s["center"]) / s["scale"])
                j += 1
            else:
                label = s["fill"] if miss else category_str(v)
                if label in s["categories"]:
                    out[i, j + s["categories"].index(label)] = 1.0
                j += len(s["categories"])
            if s["indicator"]:
                out[i, j] = miss
                j += 1
    return out


def _slow_form(rows: list[dict]) -> list:
    """The same rows in types the fast paths do not take (read-only mappings, NumPy scalars):
    the value-by-value reference runs."""

    def wrap(v):
        if isinstance(v, str):
            return np.str_(v)
        if isinstance(v, float):
            return np.float64(v)
        return v

    return [types.MappingProxyType({k: wrap(v) for k, v in r.items()}) for r in rows]


def _transform(pre, rows):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = pre.transform(rows)
    return x, [str(w.message) for w in caught]


@settings(max_examples=200, deadline=None)
@given(rows)
def test_transform_equals_the_row_by_row_oracle_and_the_reference_path(batch):
    pre = Preprocessing(SPECS, DEFAULT_NA)
    fast, said = _transform(pre, batch)
    slow, slow_said = _transform(pre, _slow_form(batch))
    np.testing.assert_array_equal(fast, oracle(pre, batch))
    np.testing.assert_array_equal(slow, fast)
    assert said == slow_said  # unseen categories: the same warning, same row and values
    for i, r in enumerate(batch):  # a row alone is that row of the batch
        np.testing.assert_array_equal(_transform(pre, [r])[0][0], fast[i])


def test_errors_name_the_same_row_and_column_on_both_paths():
    pre = Preprocessing(SPECS, DEFAULT_NA)
    good = {"age": 1, "income": 2, "home": "own", "code": 1}
    batch = [good, good, {**good, "income": "lots"}, {**good, "income": "more"}]
    messages = []
    for form in (batch, _slow_form(batch)):
        with pytest.raises(DataError) as err:
            pre.transform(form)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "row index 2, column 'income'" in messages[0] and "'lots'" in messages[0]
    with pytest.raises(DataError, match="row index 1, column 'home': missing from this row"):
        pre.transform([good, {k: v for k, v in good.items() if k != "home"}])
    inf = "row index 1, column 'age': infinite value"
    large = "row index 1, column 'age': value 1e\\+300 is too large"
    for bad, say in ((float("inf"), inf), ("-inf", inf), ("1e300", large)):
        batch = [good, {**good, "age": bad, "income": 1e300}]
        for form in (batch, _slow_form(batch)):
            with pytest.raises(DataError, match=say):
                pre.transform(form)
