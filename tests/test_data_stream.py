"""lepton_nn.data.stream against read_csv of the same files: values, types, row numbers,
errors and warnings, for every batch size; folders, globs, chunks read in any order;
Parquet against CSV."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from test_fuzz_csv import FUZZ, csv_files

from lepton_nn.data import Table, read_csv, stream
from lepton_nn.errors import DataError, DataWarning


def outcome(fn):
    """(table or None, DataError message or None, warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, err = fn(), None
        except DataError as e:
            result, err = None, str(e)
    return result, err, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def concat(tables: list[Table]) -> Table:
    first = tables[0]
    data = {c: np.concatenate([t.data[c] for t in tables]) for c in first.columns}
    y = None if first.target is None else np.concatenate([t.target for t in tables])
    rows = np.concatenate([t.row_numbers for t in tables])
    return Table(data, first.kinds, y, first.target_name, first.source, rows)


def assert_same_table(a: Table, b: Table) -> None:
    assert a.columns == b.columns and a.kinds == b.kinds
    for c in a.columns:
        x, y = a[c], b[c]
        assert x.dtype == y.dtype, c
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), c
        else:
            assert x.tolist() == y.tolist(), c
    assert a.target_name == b.target_name
    if a.target is None:
        assert b.target is None
    else:
        assert a.target.dtype == b.target.dtype and a.target.tolist() == b.target.tolist()
    assert a.row_numbers.tolist() == b.row_numbers.tolist()
    assert a.source == b.source


def check_same(path, batch_rows=(1, 3, 1000), **kw):
    """stream(path) in batches of each size gives read_csv(path)'s table, error and warnings;
    the chunks read in reverse order hold the same rows."""
    want, want_err, want_warn = outcome(lambda: read_csv(path, **kw))
    for b in batch_rows:
        s = stream(path, batch_rows=b, **kw)
        got, err, warn = outcome(lambda s=s: list(s))
        assert err == want_err, (b, err, want_err)
        assert warn == want_warn
        if want is not None:
            assert all(len(t) <= b for t in got)
            assert_same_table(concat(got), want)
            back = [s.read_chunk(i) for i in reversed(range(s.n_chunks))]
            assert_same_table(concat(back[::-1]), want)
            assert s.n_rows == len(want) and s.kinds == want.kinds
    return want, want_err


def write(tmp_path, text: str, name: str = "d.csv") -> str:
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return str(p)


def numbers(n: int, text_at: dict[int, str] | None = None, target: bool = True) -> str:
    lines = ["a,b,y" if target else "a,b"]
    for i in range(n):
        a = (text_at or {}).get(i, str(i * 0.5))
        lines.append(f"{a},{'u' if i % 3 else 'v'}" + (f",{i % 2}" if target else ""))
    return "\n".join(lines) + "\n"


def test_stream_equals_read_csv_on_a_plain_file(tmp_path):
    path = write(tmp_path, numbers(50))
    table, _ = check_same(path, target="y")
    assert table.kinds == {"a": "numeric", "b": "categorical"}
    assert table.target.dtype == np.int64


def test_text_in_a_later_batch_is_the_same_error_naming_the_row(tmp_path):
    """Rows 2..41 are numbers; row 38 holds text: every batch before it is clean, yet the
    stream names row 38 and counts the column's values exactly as read_csv does."""
    path = write(tmp_path, numbers(40, {36: "n/a"}))
    _, err = check_same(path, batch_rows=(1, 5, 1000), target="y")
    assert err.startswith(f"{path}: row 38, column 'a': text in a column of numbers (1 of 40")


def test_many_text_values_make_the_column_categorical_over_all_batches(tmp_path):
    path = write(tmp_path, numbers(40, {i: f"t{i}" for i in range(30, 40)}))
    table, _ = check_same(path, batch_rows=(4, 1000), target="y")
    assert table.kinds["a"] == "categorical"  # the first 30 rows alone look numeric


def test_text_read_as_missing_warns_once_with_read_csv_words(tmp_path):
    path = write(tmp_path, numbers(40, {5: "x", 33: "n/a"}))
    _, err = check_same(path, batch_rows=(3, 1000), target="y", non_numeric="missing")
    assert err is None


def test_declared_types_and_their_errors(tmp_path):
    path = write(tmp_path, numbers(12, {9: "oops"}))
    check_same(path, column_types={"a": "categorical", "y": "categorical"}, target="y")
    _, err = check_same(path, column_types={"a": "numeric"}, target="y")
    assert "row 11, column 'a': 'oops' is not a number, but the column is declared numeric" in err
    check_same(path, column_types={"a": "numeric"}, target="y", non_numeric="missing")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("a,y\n1,0\n2,\n3,1\n", "row 3, column 'y': the target value is missing"),
        ("a,y\n1,5\n2,5\n", "the target has a single class (5)"),
        ("a,y\n1,b\n2,b\n", "the target has a single class ('b')"),
        ("a,y\n1,0\n2,1,9\n", "row 3: 3 fields but the header has 2"),
        ("a,y\n1,0\n\n\n2,1\n", None),  # blank lines: rows are lines of the file
        ('a,y\n"1\n",0\n2,1\n3,"x\ny"\n', None),  # a record over two lines
        ("a,y\r\n1,0\r\n2,1\r\n", None),
        ("\ufeffa,y\n1,0\n2,1\n", None),
        ("\ufeffa,y\r1,0\r2,1\r\r3,0\r", None),  # old Mac line ends after a BOM
        ('a,y\r1,"x\ry"\r2,1\n3,z\r\n4,0\r', None),  # mixed line ends, a quoted CR
        ("a,y\n", "has a header (row 1) but no data rows"),
        ("", "the file is empty"),
        ("a,y,a\n1,0,1\n", "name used twice"),
        ("a,z\n1,0\n", "target column 'y' not found"),
        ("a,y\n1.5,0\n2,1.5\n", None),  # a float target
        ("a,y\n1,0\n2,1\n3,x\n", None),  # a text label: categorical target
    ],
)
def test_edge_files_match_read_csv(tmp_path, text, needle):
    path = write(tmp_path, text)
    _, err = check_same(path, batch_rows=(1, 2, 100), target="y")
    assert (err is None) if needle is None else (needle in err), err


def test_undecodable_bytes_and_nul_name_the_row_and_column(tmp_path):
    raw = b"a,b,y\n1,x,0\n2,y,1\n3,\xff\xfe,0\n"
    path = tmp_path / "bad.csv"
    path.write_bytes(raw)
    _, err = check_same(str(path), batch_rows=(1, 100), target="y")
    assert "row 4, column 'b': byte 0xff is not valid utf-8 text" in err
    path.write_bytes(b"a,y\n1,0\n2,1,7\n3,\xff\n")  # ragged row 3, then bad text at row 4
    _, err = check_same(str(path), batch_rows=(1, 100), target="y")
    assert "row 4" in err and "not valid utf-8" in err  # read_csv decodes first
    path.write_bytes(b"a,y\n1,0\n2\x00,1\n")
    _, err = check_same(str(path), batch_rows=(1, 100), target="y")
    assert "row 3: contains a NUL character" in err


def test_columns_and_drop_select_like_read_csv(tmp_path):
    path = write(tmp_path, numbers(20))
    s = stream(path, target="y", columns=["b"], batch_rows=7)
    got = concat(list(s))
    want = read_csv(path, target="y", drop=["a"])
    assert_same_table(got, want)
    check_same(path, target="y", drop=["b"])
    with pytest.raises(DataError, match="column 'zz' not found"):
        list(stream(path, target="y", columns=["zz"]))


def test_folder_and_glob_in_sorted_order_with_every_file_named(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    text = numbers(30)
    lines = text.splitlines()
    for k, name in enumerate(["p2.csv", "p0.csv", "p1.csv"]):
        order = {"p0.csv": 0, "p1.csv": 1, "p2.csv": 2}[name]
        (folder / name).write_text("\n".join([lines[0], *lines[1 + order * 10 : 11 + order * 10]]))
        del k
    whole = read_csv(write(tmp_path, text), target="y")
    for src in (str(folder), str(folder / "p*.csv"), [str(folder / f"p{i}.csv") for i in range(3)]):
        s = stream(src, target="y", batch_rows=4)
        tables = list(s)
        assert [t.source for t in tables][::3] == [str(folder / f"p{i}.csv") for i in range(3)]
        got = concat(tables)
        for c in whole.columns:
            assert got[c].tolist() == whole[c].tolist()
        assert got.target.tolist() == whole.target.tolist()
        assert tables[3].where(0) == f"{folder / 'p1.csv'}: row 2"
    # one part with text in a numeric column: the error names that file and row
    (folder / "p1.csv").write_text("a,b,y\n1,u,0\nzz,u,1\n" + "2,v,0\n" * 30)
    with pytest.raises(DataError, match=r"p1\.csv: row 3, column 'a': text in a column"):
        list(stream(str(folder), target="y"))
    (folder / "p1.csv").write_text("a,c,y\n1,u,0\n")
    with pytest.raises(DataError, match=r"p1\.csv: row 1 \(header\): the columns differ"):
        list(stream(str(folder), target="y"))


def test_stream_is_reiterable_and_chunks_cover_the_file(tmp_path):
    path = write(tmp_path, numbers(25))
    s = stream(path, target="y", batch_rows=10, block_rows=4)
    first, second = concat(list(s)), concat(list(s))
    assert_same_table(first, second)
    assert s.chunk_rows.tolist() == [4] * 6 + [1]
    rest, held = s.split(0.3, seed=1)
    assert sorted(np.concatenate([rest.ids, held.ids]).tolist()) == list(range(7))
    assert held.n_chunks == 2 and s.split(0.3, seed=1)[1].ids.tolist() == held.ids.tolist()
    mapped = held.map(lambda t: t.row_numbers)
    assert np.concatenate(list(mapped)).tolist() == concat(list(held)).row_numbers.tolist()


@FUZZ
@given(files=csv_files())
def test_fuzz_stream_equals_read_csv(files):
    """Random, sometimes broken, files (the CSV fuzzer's): the same table or the same error."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "case.csv"
        path.write_bytes(files[0])
        check_same(str(path), batch_rows=(1, 7, 1000), target="y")


def test_parquet_equals_csv_of_the_same_rows(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rs = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame(
        {
            "x": rs.normal(size=n),
            "k": rs.integers(0, 5, n),
            "home": rs.choice(["rent", "own", None], n),
            "code": rs.choice(["1", "2", "3"], n),  # numbers as text: numeric, as in a CSV
            "y": rs.choice(["good", "bad"], n),
        }
    )
    df.loc[5, "x"] = np.nan
    csv_path, pq_path = tmp_path / "d.csv", tmp_path / "d.parquet"
    df.to_csv(csv_path, index=False)
    df.to_parquet(pq_path, row_group_size=64)
    want = read_csv(csv_path, target="y")
    s = stream(pq_path, target="y", batch_rows=50)
    got = concat(list(s))
    assert got.kinds == want.kinds
    for c in want.columns:
        if want.kinds[c] == "numeric":
            assert np.allclose(got[c], want[c], equal_nan=True, rtol=1e-15), c
        else:
            assert got[c].tolist() == want[c].tolist(), c
    assert got.target.tolist() == want.target.tolist()
    assert got.row_numbers.tolist() == list(range(1, n + 1))  # Parquet rows count from 1
    assert s.chunk_rows.tolist() == [64] * 4 + [44]  # a chunk is a row group
    assert concat([s.read_chunk(3)]).row_numbers[0] == 193
    bad = df.astype({"k": str})
    bad.loc[250, "k"] = "oops"
    bad.to_parquet(pq_path, row_group_size=64)
    with pytest.raises(DataError, match=r"d\.parquet: row 251, column 'k': text in a column"):
        list(stream(pq_path, target="y"))


def test_the_one_cast_parse_equals_the_value_by_value_parse():
    from lepton_nn.data.stream_scan import numbers as _numbers
    from lepton_nn.runtime.preprocess import DEFAULT_NA, parse_numeric

    na = frozenset(DEFAULT_NA)
    odd = ["1", " 7 ", "1e308", "5e-324", "1e999", "-inf", "nan", "-nan", "1_000", "١٢", "+1"]
    odd += [".5", "1.", "\t3", "Infinity", "\u00a01", "", " NA ", "?", "NULL"]
    got, bad = _numbers(odd, na)
    want, want_bad = parse_numeric(odd, na)
    assert bad is None and want_bad is None
    assert np.array_equal(got, want, equal_nan=True)
    for text in ("1,5", "0x1A", "3e", ".", "1 2", "x"):
        got, bad = _numbers(["1", text, "2"], na)
        assert bad == parse_numeric(["1", text, "2"], na)[1] == 1


def test_a_file_changed_after_the_scan_is_an_error_naming_the_row(tmp_path):
    path = write(tmp_path, numbers(20))
    s = stream(path, target="y", batch_rows=5)
    assert s.kinds["a"] == "numeric"
    lines = open(path).read().splitlines()
    lines[14] = "oops" + lines[14][lines[14].index(",") :]  # same length or not: row 15
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"row 15, column 'a': 'oops' is not a number, but the co"):
        list(s)
