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


@pytest.mark.parametrize("n,batch_size", [(10, 1), (1, 32)])
def test_batchnorm_with_batches_of_one_row_is_refused_clearly(n, batch_size):
    X, y = np.zeros((n, 3), np.float32), np.zeros((n, 1), np.float32)
    t = Trainer(Sequential([Dense(4), BatchNorm(), Dense(1)]), "bce")
    with pytest.raises(DataError, match="batch normalization trains on batches of 2 rows"):
        t.fit(X, y, epochs=1, batch_size=batch_size, verbose=0)


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


# -- item 11: text in a few rows of a column of numbers; declared types; dropped columns -------


def mixed_file(tmp_path, n=60, text_rows=(4, 33)):
    header, rows = credit_like(n=n)
    for i in text_rows:
        rows[i][1] = "n/a" if i == text_rows[0] else "unknown"
    return write_csv(tmp_path / "mixed.csv", header, rows)


def test_a_few_text_values_in_a_numeric_column_are_a_data_error_naming_rows(tmp_path):
    path = mixed_file(tmp_path)
    with pytest.raises(DataError) as e:
        read_csv(path, target="status")
    msg = str(e.value)
    assert msg.startswith(f"{path}: row 6, column 'income': text in a column of numbers")
    assert "2 of 60 values: row 6 ('n/a'), row 35 ('unknown')" in msg and "\n" not in msg


def test_text_values_read_as_missing_on_request_with_a_count(tmp_path):
    path = mixed_file(tmp_path)
    with pytest.warns(ln.errors.DataWarning, match=r"row 6, column 'income': 2 text value"):
        t = read_csv(path, target="status", non_numeric="missing")
    assert t.kinds["income"] == "numeric" and int(np.isnan(t["income"]).sum()) == 2
    assert np.isnan(t["income"][[4, 33]]).all()


def test_mostly_text_columns_stay_categorical(tmp_path):
    header = ["code", "y"]
    rows = [[str(i % 7) if i % 3 else f"k{i % 5}", i % 2] for i in range(40)]
    t = read_csv(write_csv(tmp_path / "c.csv", header, rows), target="y")
    assert t.kinds["code"] == "categorical"


def test_declared_types_and_dropped_columns(tmp_path):
    path = mixed_file(tmp_path)
    t = read_csv(path, target="status", column_types={"income": "categorical"}, drop=["age"])
    assert t.columns == ["income", "home"] and t.kinds["income"] == "categorical"
    with pytest.raises(DataError, match=r"row 1 \(header\): column 'nope' to drop is not"):
        read_csv(path, target="status", drop=["nope"])
    # declared numeric: the same setting decides about its text values
    with pytest.raises(DataError, match=r"row 6, column 'income': 'n/a' is not a number"):
        read_csv(path, target="status", column_types={"income": "numeric"})


def test_tabular_model_declares_types_and_drops_columns():
    header, rows = credit_like(n=80)
    cols = {h: [r[j] for r in rows] for j, h in enumerate(header)}
    cols["id"] = [f"c{i}" for i in range(80)]
    cols["age"][5] = "?"  # missing
    cols["income"][7] = "lots"  # text among numbers
    with pytest.raises(DataError, match=r"row index 7, column 'income'"):
        TabularModel(epochs=1).fit(cols, np.array(cols.pop("status")))
    y = np.array([r[3] for r in rows])
    with pytest.warns(ln.errors.DataWarning, match="1 text value"):
        m = TabularModel(
            epochs=1,
            drop=["id"],
            column_types={"age": "categorical"},
            non_numeric="missing",
        ).fit(cols, y)
    assert m.preprocessor.feature_names_in == ["age", "income", "home"]
    assert any(n.startswith("age=") for n in m.preprocessor.feature_names_out)
    assert m.get_params()["drop"] == ("id",)
    assert len(m.predict({k: v[:3] for k, v in cols.items()})) == 3


def test_cli_train_column_flags(tmp_path):
    from lepton_nn.cli import main

    path = mixed_file(tmp_path)
    out = tmp_path / "m.lnn"
    assert main(["train", str(path), "--target", "status", "--epochs", "1", "-o", str(out)]) == 2
    assert not out.exists()
    argv = ["train", str(path), "--target", "status", "--epochs", "1", "-o", str(out)]
    assert main([*argv, "--categorical", "income", "--drop", "age", "--id", "home"]) == 0
    model = ln.load(out)
    assert model.preprocessor.feature_names_in == ["income"]
    with pytest.warns(ln.errors.DataWarning):
        assert main([*argv, "--non-numeric", "missing", "--numeric", "age"]) == 0
    assert main([*argv, "--numeric", "income", "--categorical", "income"]) == 2


# -- item 12: positive= on a target that is not two-class; unseen categories ----------------


def test_positive_with_three_classes_is_refused(tmp_path):
    header, rows = credit_like(n=60)
    rows[10][3] = "meh"
    rows[11][3] = "meh"
    path = write_csv(tmp_path / "three.csv", header, rows)
    table = read_csv(path, target="status")
    with pytest.raises(DataError, match=r"three\.csv: column 'status': positive='bad' is for a "):
        TabularModel(epochs=1, positive="bad").fit(table)
    from lepton_nn.cli import main

    argv = ["train", str(path), "--target", "status", "--positive", "bad", "-o", "x.lnn"]
    assert main(argv) == 2
    two = read_csv(write_csv(tmp_path / "two.csv", header, credit_like(n=60)[1]), target="status")
    with pytest.raises(DataError, match=r"two\.csv: column 'status': positive='Bad' is not one"):
        TabularModel(epochs=1, positive="Bad").fit(two)


def test_unseen_categories_are_counted_in_both_pipelines(model_file, tmp_path):
    header, rows = credit_like(n=6, seed=2)
    rows[2][2] = "castle"
    rows[4][2] = "boat"
    rows[5][2] = "castle"
    path = write_csv(tmp_path / "new.csv", header[:-1], [r[:-1] for r in rows])
    table = read_csv(path)
    pattern = r"new\.csv: row 4, column 'home': 3 row\(s\) with a category not seen in training"
    with pytest.warns(ln.errors.DataWarning, match=pattern + r" \('boat', 'castle'\)"):
        ln.load(model_file).predict(table)
    from lepton_nn import runtime

    with pytest.warns(ln.errors.DataWarning, match=pattern):
        runtime.load(model_file).predict(table)
    ok = table.take([0, 1, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ln.load(model_file).predict(ok)


# -- item 14: every message names file, 1-based file row, column -----------------------------


def test_missing_column_names_the_file(model_file, tmp_path):
    header, rows = credit_like(n=3)
    path = write_csv(tmp_path / "short.csv", ["age", "home"], [[r[0], r[2]] for r in rows])
    with pytest.raises(DataError, match=r"short\.csv: row 1 \(header\), column 'income': missing"):
        ln.load(model_file).predict(read_csv(path))


def test_empty_column_names_the_file(tmp_path):
    header, rows = credit_like(n=30)
    for r in rows:
        r[1] = ""
    path = write_csv(tmp_path / "empty.csv", header, rows)
    with pytest.raises(DataError, match=r"empty\.csv: column 'income' has no values"):
        Preprocessor().fit(read_csv(path, target="status"))


def test_single_row_class_names_file_row_and_label(tmp_path):
    header, rows = credit_like(n=60)
    rows[41][3] = "meh"  # file row 43
    path = write_csv(tmp_path / "one.csv", header, rows)
    table = read_csv(path, target="status")
    with pytest.raises(DataError, match=r"one\.csv: row 43, column 'status': class 'meh' has only"):
        TabularModel(epochs=1).fit(table)
    from lepton_nn.data import train_test_split

    with pytest.raises(
        DataError, match=r"one\.csv: row 43, column 'status': stratify: class 'meh'"
    ):
        train_test_split(np.arange(60), stratify=table, seed=0)


def test_unseen_label_at_evaluate_names_the_file_row(model_file, tmp_path):
    header, rows = credit_like(n=8, seed=3)
    rows[6][3] = "ugly"  # file row 8
    path = write_csv(tmp_path / "eval.csv", header, rows)
    with pytest.raises(DataError, match=r"eval\.csv: row 8, column 'status': label 'ugly' was not"):
        ln.load(model_file).evaluate(read_csv(path, target="status"))


def test_new_rows_read_with_the_models_kinds(model_file, tmp_path):
    """A stray text value in new rows: typed as in training, the message names the row."""
    header, rows = credit_like(n=30, seed=4)
    rows[20][1] = "n/a"  # file row 22
    path = write_csv(tmp_path / "new.csv", header[:-1], [r[:-1] for r in rows])
    model = ln.load(model_file)
    assert model.input_kinds == {"age": "numeric", "income": "numeric", "home": "categorical"}
    with pytest.raises(DataError, match=r"new\.csv: row 22, column 'income': 'n/a' is not a"):
        read_csv(path, column_types=model.input_kinds)
