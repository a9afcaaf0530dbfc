"""Bad data found by the hardening review (issue 15, items 10-14): each a clear DataError
naming file, 1-based file row and column, or a counted, reported fallback."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn.data import Preprocessor, Table, iterate_batches, read_csv
from lepton_nn.errors import DataError
from lepton_nn.nn import BatchNorm, Dense, Sequential
from lepton_nn.tabular import TabularModel
from lepton_nn.train import Trainer


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


def credit_like(n=120, seed=0):
    """Rows of (age, income, home, status): status depends on income and home."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        age = int(rng.integers(20, 70))
        income = round(float(rng.normal(50, 15)), 2)
        home = str(rng.choice(["rent", "own", "other"]))
        bad = income + (10 if home == "own" else 0) + rng.normal(0, 5) < 50
        rows.append([age, income, home, "bad" if bad else "good"])
    return ["age", "income", "home", "status"], rows


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    header, rows = credit_like()
    train = write_csv(d / "train.csv", header, rows)
    model = TabularModel(epochs=3, hidden=(8,), seed=0).fit(read_csv(train, target="status"))
    ln.save(model, d / "m.lnn")
    return d / "m.lnn"


# -- item 10: huge finite values ------------------------------------------------------------


def test_huge_value_at_predict_is_refused_with_file_row_column(model_file, tmp_path):
    header, rows = credit_like(n=5, seed=1)
    rows[3][1] = "1e308"  # file row 5 (header = row 1)
    path = write_csv(tmp_path / "new.csv", header[:-1], [r[:-1] for r in rows])
    table = read_csv(path)
    model = ln.load(model_file)
    with pytest.raises(DataError, match=r"new\.csv: row 5, column 'income': value 1e\+308"):
        model.predict(table)
    from lepton_nn import runtime

    served = runtime.load(model_file)
    with pytest.raises(DataError, match=r"new\.csv: row 5, column 'income'.*float32"):
        served.predict(table)


def test_huge_values_in_training_are_refused_not_scaled_to_inf(tmp_path):
    header, rows = credit_like(n=40)
    rows[7][1] = "1.7e308"  # file row 9
    rows[8][1] = "-1.7e308"  # max - min overflows
    path = write_csv(tmp_path / "t.csv", header, rows)
    table = read_csv(path, target="status")
    with pytest.raises(DataError, match=r"t\.csv: row 9, column 'income'.*too large to scale"):
        Preprocessor(scaling="minmax").fit(table)
    # unscaled, the value itself is beyond float32: refused at the transform, same place
    with pytest.raises(DataError, match=r"t\.csv: row 9, column 'income'.*float32"):
        TabularModel(epochs=1, scaling="none").fit(table)
    # standardized, even these scale to ordinary numbers
    X = Preprocessor().fit_transform(table)
    assert np.isfinite(X).all()


def test_large_but_scalable_values_still_train(tmp_path):
    header, rows = credit_like(n=60)
    for r in rows:
        r[1] = f"{float(r[1]) * 1e300:.6g}"  # a column in units of 1e300: fine in float64
    path = write_csv(tmp_path / "t.csv", header, rows)
    X = Preprocessor().fit_transform(read_csv(path, target="status"))
    assert np.isfinite(X).all() and X.dtype == np.float32


# -- item 13: batch norm and a last batch of one row; Table.take([]) --------------------------


def test_batchnorm_last_batch_of_one_row_is_merged_and_said():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((97, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float32)[:, None]
    ln.set_seed(0)
    t = Trainer(Sequential([Dense(4), BatchNorm(), Dense(1)]), "bce")
    with pytest.warns(UserWarning, match=r"97 rows in batches of 32.*joins the batch before it"):
        h = t.fit(X, y, epochs=2, batch_size=32, verbose=0)
    assert h.params["steps"] == 3 and len(h.epoch) == 2 and h.stop_reason is None


def test_no_merge_without_batchnorm_or_without_a_lone_row():
    X = np.zeros((97, 3), np.float32)
    y = np.zeros((97, 1), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = Trainer(Sequential([Dense(4), Dense(1)]), "bce").fit(X, y, epochs=1, verbose=0)
        assert h.params["steps"] == 4  # 32 + 32 + 32 + 1: nothing to merge for
        X2, y2 = X[:96], y[:96]
        Trainer(Sequential([Dense(4), BatchNorm(), Dense(1)]), "bce").fit(
            X2, y2, epochs=1, verbose=0
        )


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_merge_last(shuffle):
    X = np.arange(65, dtype=np.float32)[:, None]
    b = iterate_batches(X, X, 16, shuffle, rng=0, merge_last=True)
    sizes, seen = [], []
    for xb, _ in b:
        sizes.append(len(xb))
        seen.extend(xb[:, 0].tolist())
    assert len(b) == 4 and sizes == [16, 16, 16, 17]
    assert sorted(seen) == list(range(65))
    assert len(iterate_batches(X[:1], None, 16, merge_last=True)) == 1  # one row, one batch


def test_table_take_empty():
    t = Table.from_arrays({"a": [1.0, 2.0], "b": ["x", "y"]}, target=np.array([0, 1]))
    empty = t.take([])
    assert len(empty) == 0 and empty.columns == ["a", "b"] and len(empty.target) == 0
    assert len(t.take(np.array([], dtype=np.int64))) == 0
