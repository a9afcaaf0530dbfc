"""CSV reading, type inference and the Table constructors."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_nn import datasets
from lepton_nn.data import Table, read_csv
from lepton_nn.errors import DataError


def write(tmp_path, text: str, name: str = "d.csv", raw: bytes | None = None) -> str:
    p = tmp_path / name
    if raw is not None:
        p.write_bytes(raw)
    else:
        p.write_text(text, encoding="utf-8", newline="")
    return str(p)


SMALL = "y,age,job,income\ngood,30,fixed,1.5\nbad,41,,NA\ngood,?,freelance,2\n"


def test_types_inferred_and_missing_values(tmp_path):
    t = read_csv(write(tmp_path, SMALL), target="y")
    assert t.columns == ["age", "job", "income"]
    assert t.column_types == {"age": "numeric", "job": "categorical", "income": "numeric"}
    assert t["age"].dtype == np.float64 and np.isnan(t["age"][2])
    assert t["job"].dtype == object and t["job"].tolist() == ["fixed", None, "freelance"]
    assert np.isnan(t["income"][1])
    assert t.target.tolist() == ["good", "bad", "good"] and t.target_name == "y"
    assert t.shape == (3, 3) and len(t) == 3
    assert t.row_numbers.tolist() == [2, 3, 4]


def test_column_types_override(tmp_path):
    path = write(tmp_path, "zip,n\n02134,1\n10001,2\n")
    t = read_csv(path, column_types={"zip": "categorical"})
    assert t.column_types["zip"] == "categorical"
    assert t["zip"].tolist() == ["02134", "10001"]  # leading zero kept
    t2 = read_csv(path)
    assert t2.column_types["zip"] == "numeric"


def test_numeric_target_becomes_int(tmp_path):
    t = read_csv(write(tmp_path, "a,label\n1.5,1\n2,2\n3,1\n"), target="label")
    assert t.target.dtype == np.int64 and t.target.tolist() == [1, 2, 1]


def test_whitespace_blank_lines_quotes_and_bom(tmp_path):
    text = '\ufeffv , name\n\n 1, "a, b"\r\n\n  2 ,c\n'
    t = read_csv(write(tmp_path, text))
    assert t.columns == ["v", "name"]
    assert t["name"].tolist() == ["a, b", "c"]
    assert t["v"].tolist() == [1.0, 2.0]
    assert t.row_numbers.tolist() == [3, 5]


def test_custom_na_values(tmp_path):
    t = read_csv(write(tmp_path, "a,b\n-999,x\n1,y\n"), na_values=("-999",))
    assert np.isnan(t["a"][0]) and t["a"][1] == 1.0


def test_ragged_row_names_file_row_and_column(tmp_path):
    path = write(tmp_path, "a,b,c\n1,2,3\n\n4,5\n")
    with pytest.raises(DataError) as e:
        read_csv(path)
    msg = str(e.value)
    assert path in msg and "row 4" in msg and "'c'" in msg and "2 fields" in msg


def test_extra_field_names_last_column(tmp_path):
    path = write(tmp_path, "a,b\n1,2,3\n")
    with pytest.raises(DataError, match=r"row 2: 3 fields .* after the last column 'b'"):
        read_csv(path)


def test_non_numeric_in_declared_numeric_column(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError) as e:
        read_csv(path, column_types={"b": "numeric"})
    msg = str(e.value)
    assert f"{path}: row 3, column 'b'" in msg and "'oops' is not a number" in msg


def test_unknown_target_column(tmp_path):
    path = write(tmp_path, SMALL)
    with pytest.raises(DataError, match=r"row 1 \(header\): target column 'Status' not found"):
        read_csv(path, target="Status")


def test_target_with_one_class(tmp_path):
    path = write(tmp_path, "x,y\n1,a\n2,a\n")
    with pytest.raises(DataError, match=r"column 'y': the target has a single class \('a'\)"):
        read_csv(path, target="y")


def test_missing_target_value(tmp_path):
    path = write(tmp_path, "x,y\n1,a\n2,\n3,b\n")
    with pytest.raises(DataError, match=r"row 3, column 'y': the target value is missing"):
        read_csv(path, target="y")


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(DataError, match="the file is empty"):
        read_csv(write(tmp_path, "", "e.csv"))
    with pytest.raises(DataError, match="the file is empty"):
        read_csv(write(tmp_path, "\n \n", "blank.csv"))
    with pytest.raises(DataError, match=r"header \(row 1\) but no data rows"):
        read_csv(write(tmp_path, "a,b\n", "h.csv"))


def test_bad_encoding_names_row_and_column(tmp_path):
    path = write(tmp_path, "", raw=b"a,b\n1,x\n2,caf\xe9\n")
    with pytest.raises(DataError) as e:
        read_csv(path)
    msg = str(e.value)
    assert path in msg and "row 3, column 'b'" in msg and "0xe9" in msg and "UTF-8" in msg
    t = read_csv(path, encoding="latin-1")
    assert t["b"].tolist() == ["x", "café"]


def test_unparsable_csv(tmp_path):
    path = write(tmp_path, 'a,b\n1,"unterminated\n2,3\n')
    with pytest.raises(DataError, match=r"row 2: not readable as CSV"):
        read_csv(path)
    path = write(tmp_path, "", "nul.csv", raw=b"a,b\n1,\x002\n")
    with pytest.raises(DataError, match=r"nul.csv: row 2: contains a NUL character"):
        read_csv(path)


def test_missing_file_and_bad_column_types(tmp_path):
    with pytest.raises(DataError, match="cannot read the file"):
        read_csv(tmp_path / "nope.csv")
    path = write(tmp_path, SMALL)
    with pytest.raises(DataError, match="column_types names column 'zz'"):
        read_csv(path, column_types={"zz": "numeric"})
    with pytest.raises(DataError, match="must be 'numeric' or 'categorical'"):
        read_csv(path, column_types={"age": "int"})


def test_duplicate_and_empty_header_names(tmp_path):
    with pytest.raises(DataError, match=r"column 'a': name used twice \(columns 1 and 3\)"):
        read_csv(write(tmp_path, "a,b,a\n1,2,3\n"))
    t = read_csv(write(tmp_path, ",v\n0,1\n", "idx.csv"))
    assert t.columns == ["unnamed_1", "v"]


def test_table_take_select_drop_and_where(tmp_path):
    path = write(tmp_path, SMALL)
    t = read_csv(path, target="y")
    sub = t.take([2, 0])
    assert sub.target.tolist() == ["good", "good"] and sub["job"].tolist() == ["freelance", "fixed"]
    assert sub.where(0) == f"{path}: row 4"
    assert t.select(["job"]).columns == ["job"] and t.drop("job").columns == ["age", "income"]
    assert t.to_numpy().shape == (3, 3)
    assert "3 rows x 3 columns" in repr(t)
    with pytest.raises(KeyError):
        t["nope"]


def test_from_arrays_numeric_object_and_dict():
    t = Table.from_arrays(np.arange(6.0).reshape(3, 2), target=np.array([0, 1, 0]))
    assert t.columns == ["x0", "x1"] and t.target.tolist() == [0, 1, 0]
    obj = np.array([[1, "a"], [2.5, None], ["3", "b"]], dtype=object)
    t = Table.from_arrays(obj, columns=["n", "c"])
    assert t.column_types == {"n": "numeric", "c": "categorical"}
    assert t["n"].tolist() == [1.0, 2.5, 3.0] and t["c"].tolist() == ["a", None, "b"]
    t = Table.from_arrays(
        {"a": [1, 2, 3], "k": [1, 2, 1], "y": ["u", "v", "u"]},
        target="y",
        column_types={"k": "categorical"},
    )
    assert t["k"].tolist() == ["1", "2", "1"] and t.target_name == "y"
    with pytest.raises(DataError, match="row index 1, column 'a'"):
        Table.from_arrays({"a": ["1", "x"]}, column_types={"a": "numeric"})


def test_from_records():
    t = Table.from_records([{"a": 1, "b": "x"}, {"a": None, "b": "y"}])
    assert np.isnan(t["a"][1]) and t["b"].tolist() == ["x", "y"]
    with pytest.raises(DataError, match="row index 1, column 'b'"):
        Table.from_records([{"a": 1, "b": "x"}, {"a": 2}])


class FakeSeries:
    def __init__(self, values, dtype):
        self.values, self.dtype = values, dtype

    def to_numpy(self, dtype=None, na_value=None):
        return np.asarray(self.values, dtype=dtype)


class FakeFrame:
    """Just enough of a DataFrame's interface (pandas is optional)."""

    def __init__(self, cols):
        self._cols = cols
        self.columns = list(cols)
        self.dtypes = [s.dtype for s in cols.values()]

    def __getitem__(self, c):
        return self._cols[c]


def test_from_pandas_duck_typed():
    df = FakeFrame(
        {
            "n": FakeSeries([1.0, np.nan, 3.0], np.dtype(float)),
            "c": FakeSeries(["a", None, "b"], np.dtype(object)),
            "y": FakeSeries(["p", "q", "p"], np.dtype(object)),
        }
    )
    t = Table.from_pandas(df, target="y")
    assert t.column_types == {"n": "numeric", "c": "categorical"}
    assert t.target.tolist() == ["p", "q", "p"]


def test_from_pandas_real():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"n": [1, 2, None], "c": pd.Categorical(["a", "b", None]), "y": [0, 1, 0]})
    t = Table.from_pandas(df, target="y")
    assert t.column_types == {"n": "numeric", "c": "categorical"}
    assert t["c"].tolist() == ["a", "b", None]


def test_bundled_datasets():
    credit = datasets.load_credit()
    assert credit.shape == (4454, 13) and set(credit.target.tolist()) == {"good", "bad"}
    assert set(credit.categorical_columns) == {"Home", "Marital", "Records", "Job"}
    missing = sum(int(np.isnan(credit[c]).sum()) for c in credit.numeric_columns) + sum(
        int(sum(v is None for v in credit[c])) for c in credit.categorical_columns
    )
    assert missing == 455
    bc = datasets.load_breast_cancer()
    assert bc.shape == (569, 30) and bc.categorical_columns == []
    assert datasets.path("credit_data.csv") == datasets.path("credit_data")
    with pytest.raises(DataError, match="no bundled data set"):
        datasets.path("iris")


def _memory_csv(path, n=20_000):
    """~1.2 MB: six float columns, a count, two label columns and a 0/1 target."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6))
    ages = rng.integers(18, 90, n)
    homes = np.array(["rent", "owner", "parents", "other"])[rng.integers(0, 4, n)]
    jobs = np.array(["fixed", "freelance", "partime", "others"])[rng.integers(0, 4, n)]
    with open(path, "w") as f:
        f.write("a,b,c,d,e,f,age,home,job,y\n")
        for i in range(n):
            nums = ",".join(f"{v:.5f}" for v in x[i])
            f.write(f"{nums},{ages[i]},{homes[i]},{jobs[i]},{i % 2}\n")
    return path


def test_read_csv_peak_memory_is_a_few_times_the_file(tmp_path):
    # tracemalloc counts every Python allocation (deterministic for one file): the reader
    # once held the bytes, the text, io.StringIO's copy of it (4 bytes a character) and a
    # list per record at once, ~14-20 times the file; now the text and one string per
    # field (shared within columns of few values), freed column by column
    import gc
    import os
    import tracemalloc

    path = _memory_csv(tmp_path / "big.csv")
    size = os.path.getsize(path)
    gc.collect()
    tracemalloc.start()
    try:
        t = read_csv(path, target="y")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert t.n_rows == 20_000 and t.kinds["home"] == "categorical"
    assert peak < 10 * size, f"peak {peak / size:.1f} times the file's {size} bytes"


def test_the_reader_splits_lines_as_stringio_does():
    import io

    from hypothesis import given
    from hypothesis import strategies as st

    from lepton_nn.data.csv_reader import _lines

    @given(st.text(alphabet='ab,"\r\n\x0b\x0c\x1c\x85\u2028 é'))
    def check(text):
        assert list(_lines(text)) == list(io.StringIO(text, newline=""))

    check()
