"""Fuzz: hostile and careless CSV files through read_csv, TabularModel and the CLI.

The only allowed outcomes are a result (finite probabilities) or a :class:`DataError` with a
one-line message; on the command line, exit 0 or exit 2 with one ``lepton-nn: error:`` line.
Files mix good numbers with bad ones (``1e999``, ``1,5``, ``0x1A``), text in numeric columns,
huge values (``1e308``), missing values, ragged rows, broken quotes, blank lines, CRLF, BOMs,
other encodings, stray bytes and empty files. Bounded here (a few dozen cases);
``benchmarks/fuzz_csv.py`` runs the same generator and checks for longer and reports counts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_nn import load, save
from lepton_nn.cli import main
from lepton_nn.data import read_csv
from lepton_nn.errors import DataError
from lepton_nn.tabular import TabularModel

GOOD_NUMBERS = ["0", "1", "-2.5", "3e2", "0.001", " 7 ", "1e308", "-1e308", "5e-324", "42"]
BAD_NUMBERS = ["1e999", "-inf", "inf", "1,5", "0x1A", "1_000", "--2", "3e", ".", "1.2.3", "١٢"]
TEXT = ["rent", "own", "other", "n/a", "unknown", "Zürich", 'say "hi"', "a,b", "x\ny", "€"]
MISSING = ["", "NA", "?", "NULL", "nan"]
# (repeats weight the draws: most files are readable, so that fitting and predicting get tried)
LABELS = [["good", "bad"]] * 6 + [["0", "1"], ["a", "b", "c"], ["yes"], ["good", "bad", ""]]
NAMES = ["age", "income", "home", "x y", "", "Ünï", "y2", "n"]
DAMAGE = ["none"] * 15 + ["truncate", "insert_bytes", "unbalanced_quote", "ragged", "drop_header"]
ENCODINGS = ["utf-8"] * 15 + ["utf-8-sig", "latin-1", "utf-16", "cp1252"]


def cells(style: str) -> st.SearchStrategy[str]:
    numbers = st.one_of(
        st.sampled_from(GOOD_NUMBERS),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.integers(-(10**30), 10**30).map(str),
    )
    if style == "numeric":
        return st.one_of(numbers, st.sampled_from(MISSING))
    if style == "mixed":  # numbers with now and then something else
        odd = st.sampled_from(BAD_NUMBERS + TEXT + MISSING)
        return st.one_of(numbers, numbers, numbers, numbers, odd)
    return st.one_of(st.sampled_from(TEXT + MISSING), st.text(max_size=6))  # any text


def _file(draw, names: list[str], styles: list[str], labels: list[str] | None) -> bytes:
    """One (possibly damaged) file of rows in these columns (+ the target ``y`` if labels)."""
    n_rows = 40 - draw(st.integers(0, 40))
    rows = []
    for i in range(n_rows):
        row = [draw(cells(s)) for s in styles]
        if labels:  # (the smallest draw cycles through the labels)
            row.append(labels[(i + draw(st.integers(0, len(labels) - 1))) % len(labels)])
        rows.append(row)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    damage = draw(st.sampled_from(DAMAGE))
    if damage != "drop_header":
        writer.writerow(names + (["y"] if labels else []))
    for row in rows:
        if damage == "ragged" and draw(st.integers(0, 5)) == 5:
            row = row[:-1] if draw(st.booleans()) else [*row, "extra"]
        writer.writerow(row)
    text = out.getvalue()
    if damage == "unbalanced_quote" and text:
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + '"' + text[at:]
    data = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    if damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    if damage == "insert_bytes" and data:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


@st.composite
def csv_files(draw) -> tuple[bytes, bytes]:
    """(training file, new rows): (possibly broken) CSV files over the same columns, the
    first with a target column ``y`` most of the time, the second with or without it."""
    # (hypothesis starts from the smallest draws, 0 and first elements: those are the benign
    # choices, so that most files get through to fitting)
    empty = [b"", b"\n\n", b"   ", b"\xef\xbb\xbf", b"y\n"]
    if draw(st.integers(0, 30)) == 30:
        return draw(st.sampled_from(empty)), draw(st.sampled_from(empty))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    if draw(st.integers(0, 9)) == 9:
        names.append(names[0])  # a name used twice
    styles = [draw(st.sampled_from(["numeric", "numeric", "mixed", "text"])) for _ in names]
    labels = draw(st.sampled_from(LABELS)) if draw(st.integers(0, 9)) < 9 else None
    new_labels = labels if draw(st.booleans()) else None
    return _file(draw, names, styles, labels), _file(draw, names, styles, new_labels)


def _one_line(err: Exception) -> str:
    msg = str(err)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


def check_library(data: bytes, new: bytes, folder: Path) -> tuple[str, str]:
    """read_csv -> TabularModel.fit -> save/load -> predict on ``new``: (outcome, message)."""
    path, new_path = folder / "case.csv", folder / "new.csv"
    path.write_bytes(data)
    new_path.write_bytes(new)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            table = read_csv(path, target="y")
        except DataError as e:
            return "read: DataError", _one_line(e)
        try:
            model = TabularModel(epochs=1, hidden=(4,), batch_size=8, seed=0).fit(table)
        except DataError as e:
            return "fit: DataError", _one_line(e)
        save(model, folder / "case.lnn")
        back = load(folder / "case.lnn")
        try:
            rows = read_csv(new_path)  # a target column there is ignored
            proba = back.predict_proba(rows) if back.task_ != "regression" else None
            pred = back.predict(rows)
        except DataError as e:
            return "predict: DataError", _one_line(e)
        assert len(pred) == len(rows)
        assert proba is None or np.isfinite(proba).all()
        return "ok", ""


def _cli(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(out),
    ):
        warnings.simplefilter("ignore")
        rc = main(argv)
    return rc, err.getvalue()


def check_cli(data: bytes, new: bytes, folder: Path) -> tuple[str, str]:
    """``lepton-nn train`` on ``data``, ``predict`` on ``new``: exit 0, or 2 with one line."""
    path, new_path, model = folder / "case.csv", folder / "new.csv", folder / "cli.lnn"
    path.write_bytes(data)
    new_path.write_bytes(new)
    model.unlink(missing_ok=True)
    argv = ["train", str(path), "--target", "y", "--epochs", "1", "--hidden", "4"]
    rc, err = _cli([*argv, "-o", str(model)])
    for step in ("train", "predict"):
        assert rc in (0, 2), f"{step}: exit {rc}"
        if rc == 2:
            assert err.startswith("lepton-nn: error: ") and err.count("\n") == 1, err
            return f"{step}: exit 2", err.strip()
        if step == "train":
            rc, err = _cli(["predict", str(model), str(new_path), "-o", str(folder / "p.csv")])
    return "ok", ""


FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@FUZZ
@given(files=csv_files())
def test_fuzz_csv_through_the_library(files):
    with tempfile.TemporaryDirectory() as d:
        check_library(*files, Path(d))


@settings(FUZZ, max_examples=15)
@given(files=csv_files())
def test_fuzz_csv_through_the_cli(files):
    with tempfile.TemporaryDirectory() as d:
        check_cli(*files, Path(d))


def test_fuzz_reaches_every_outcome_kind():
    """The checks are not vacuous: fixed files reach each outcome."""
    rows = "".join(f"{20 + i},{'rent' if i % 2 else 'own'},{i % 2}\n" for i in range(30))
    good = ("age,home,y\n" + rows).encode()
    huge = b"age,home\n1e308,own\n30,castle\n"
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        assert check_library(good, good, folder)[0] == "ok"
        assert check_library(b"", good, folder)[0] == "read: DataError"
        bad_fit = "age,y\n" + "".join(f"{i},{'a' if i else 'b'}\n" for i in range(30))
        assert check_library(bad_fit.encode(), good, folder)[0] == "fit: DataError"
        outcome, msg = check_library(good, huge, folder)
        assert outcome == "predict: DataError" and "new.csv: row 2, column 'age'" in msg
        assert check_cli(good, good, folder)[0] == "ok"
        assert check_cli(b"a,y\n1", good, folder)[0] == "train: exit 2"
        outcome, msg = check_cli(good, huge, folder)
        assert outcome == "predict: exit 2" and "too large" in msg


def test_undecodable_byte_after_a_lone_carriage_return():
    """Found by the fuzz run: naming the column of a bad byte tripped on a lone CR."""
    with tempfile.TemporaryDirectory() as d:
        outcome, msg = check_library(b"a,y\n^\r\xc3\x8a,\xa8c\n", b"", Path(d))
        assert outcome == "read: DataError" and "byte 0xa8 is not valid utf-8" in msg
