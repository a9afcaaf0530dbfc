"""A Preprocessor fitted in one pass over a stream equals the in-memory fit: categories
exactly, fills, centers and scales to 1e-12 relative; the median sketch is exact up to its
size and within its stated rank error beyond."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from lepton_nn.data import Preprocessor, read_csv, stream
from lepton_nn.data.stream_fit import MedianSketch
from lepton_nn.errors import DataError


def make_csv(path, n=2000, seed=0, offset=0.0):
    rs = np.random.default_rng(seed)
    lines = ["x,big,k,home,job,y"]
    for _ in range(n):
        x = "" if rs.random() < 0.1 else repr(float(rs.normal(3, 2)))
        big = repr(float(offset + rs.normal(0, 1e-3)))  # a large mean, a tiny spread
        k = "NA" if rs.random() < 0.05 else str(int(rs.integers(0, 7)))
        home = "" if rs.random() < 0.08 else str(rs.choice(["rent", "own", "other", "mortgage"]))
        job = str(rs.choice(["a", "b", "c"], p=[0.6, 0.3, 0.1]))
        lines.append(f"{x},{big},{k},{home},{job},{'bad' if rs.random() < 0.3 else 'good'}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def assert_same_fit(a: Preprocessor, b: Preprocessor, rtol=1e-12):
    assert [s["name"] for s in a.columns_] == [s["name"] for s in b.columns_]
    for x, z in zip(a.columns_, b.columns_, strict=True):
        assert x.keys() == z.keys()
        for k in x:
            if isinstance(x[k], float):
                assert z[k] == pytest.approx(x[k], rel=rtol, abs=1e-300), (x["name"], k)
            else:
                assert x[k] == z[k], (x["name"], k)
    assert a.feature_names_out == b.feature_names_out
    for key in ("n_rows_in", "rows_dropped_missing", "n_rows_fit", "missing_values"):
        assert a.report_[key] == b.report_[key], key


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"missing_indicator": True},
        {"numeric": "mean", "scaling": "minmax"},
        {"numeric": "drop", "categorical": "constant", "scaling": "none"},
        {"categorical": "drop", "column_types": {"k": "categorical"}},
    ],
)
@pytest.mark.parametrize("batch_rows", [1, 97, 5000])
def test_streaming_fit_equals_in_memory_fit(tmp_path, params, batch_rows):
    path = make_csv(tmp_path / "d.csv", offset=1e4)
    table = read_csv(path, target="y")
    mem = Preprocessor(drop_duplicates=False, **params).fit(table)
    st = Preprocessor(**params).fit(stream(path, target="y", batch_rows=batch_rows))
    assert_same_fit(mem, st)
    assert st.report_["streamed"] and st.report_["median"] == "exact"
    np.testing.assert_allclose(st.transform(table), mem.transform(table), rtol=1e-6, atol=1e-6)


def test_the_merge_keeps_a_tiny_spread_on_a_large_mean(tmp_path):
    """1e8 + N(0, 1e-3), one row per batch: the mean and spread equal the exact ones (in
    rationals) to 1e-12; a naive sum of squares loses every digit of the spread."""
    path = make_csv(tmp_path / "d.csv", n=1000, offset=1e8)
    big = read_csv(path)["big"]
    exact = [Fraction(float(v)) for v in big]
    mean = sum(exact) / len(exact)
    std = math.sqrt(sum((v - mean) ** 2 for v in exact) / len(exact))
    for batch_rows in (1, 33):
        st = Preprocessor().fit(stream(path, batch_rows=batch_rows))
        spec = st.columns_[[s["name"] for s in st.columns_].index("big")]
        assert spec["center"] == pytest.approx(float(mean), rel=1e-15)
        assert spec["scale"] == pytest.approx(std, rel=1e-12)
    naive = np.sqrt(np.mean(big**2) - np.mean(big) ** 2)
    assert not naive == pytest.approx(std, rel=1e-3)  # the trap is real


def test_duplicates_are_kept_by_a_stream_fit(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b\n1,x\n1,x\n1,x\n5,y\n")
    st = Preprocessor().fit(stream(str(path)))
    mem = Preprocessor().fit(read_csv(path))
    assert mem.report_["duplicates_dropped"] == 2 and st.report_["duplicates_dropped"] == 0
    assert_same_fit(Preprocessor(drop_duplicates=False).fit(read_csv(path)), st)


def test_stream_fit_errors_name_the_row(tmp_path):
    path = tmp_path / "inf.csv"
    path.write_text("a,b\n1,x\n2,y\n" + "3,z\n" * 10 + "inf,x\n")
    with pytest.raises(DataError, match=r"inf\.csv: row 14, column 'a': infinite value"):
        Preprocessor().fit(stream(str(path), batch_rows=4))
    path.write_text("a,b\n,x\n,y\n")
    with pytest.raises(DataError, match="column 'a' has no values in the training rows"):
        Preprocessor().fit(stream(str(path)))


def test_median_sketch_is_exact_up_to_k_values():
    rs = np.random.default_rng(1)
    s = MedianSketch(k=1000)
    parts = [rs.normal(size=n) for n in (1, 300, 2, 697)]
    for p in parts:
        s.add(p)
    assert s.exact and s.median() == np.median(np.concatenate(parts))


@pytest.mark.parametrize("dist", ["normal", "skewed", "ties", "sorted"])
def test_median_sketch_rank_error_within_the_stated_bound(dist):
    rs = np.random.default_rng(2)
    n, k = 200_000, 512
    v = {
        "normal": rs.normal(size=n),
        "skewed": rs.lognormal(0, 2, size=n),
        "ties": rs.integers(0, 5, size=n).astype(float),
        "sorted": np.arange(n, dtype=float),  # adversarial order
    }[dist]
    s = MedianSketch(k=k)
    for start in range(0, n, 3001):
        s.add(v[start : start + 3001])
    assert not s.exact
    m = s.median()
    lo, hi = np.sum(v < m), np.sum(v <= m)  # ranks m spans
    bound = np.log2(n / k) / k * n
    assert lo - bound <= n / 2 <= hi + bound
    held = sum(a.size for lv in s.levels for a in lv)
    assert held <= k * len(s.levels)  # bounded memory
