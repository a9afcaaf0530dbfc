"""Preprocessor, LabelEncoder and class weights (on the bundled credit data and small tables)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lepton_nn import datasets
from lepton_nn.data import (
    LabelEncoder,
    Preprocessor,
    Table,
    compute_class_weight,
    compute_sample_weight,
    read_csv,
)
from lepton_nn.errors import DataError, ModelFormatError


@pytest.fixture(scope="module")
def credit() -> Table:
    return read_csv(datasets.path("credit_data"), target="Status")


@pytest.fixture(scope="module")
def fitted(credit) -> Preprocessor:
    return Preprocessor().fit(credit)


def small() -> Table:
    return Table.from_arrays(
        {
            "num": [1.0, 2.0, np.nan, 4.0, 4.0],
            "cat": ["a", None, "b", "a", "a"],
            "y": ["n", "p", "n", "p", "p"],
        },
        target="y",
    )


# ----------------------------------------------------------------------------------------
# credit_data
# ----------------------------------------------------------------------------------------


def test_credit_report_duplicates_and_missing(fitted):
    r = fitted.report_
    assert r["n_rows_in"] == 4454
    assert r["duplicates_dropped"] == 2 and r["n_rows_fit"] == 4452
    assert r["n_missing"] == 455
    assert r["missing_values"] == {
        "Home": 6,
        "Marital": 1,
        "Job": 2,
        "Income": 381,
        "Assets": 47,
        "Debt": 18,
    }
    assert fitted.kept_index_.size == 4452


def test_credit_transform_shape_names_groups(credit, fitted):
    X = fitted.transform(credit)
    assert X.dtype == np.float32 and X.shape == (4454, 26) and X.flags.c_contiguous
    assert not np.isnan(X).any()
    names = fitted.feature_names_out
    assert names[:2] == ["Seniority", "Home=ignore"] and "Home=rent" in names
    groups = fitted.groups_
    assert [names[i] for i in groups["Job"]] == [
        "Job=fixed",
        "Job=freelance",
        "Job=others",
        "Job=partime",
    ]
    assert sorted(i for g in groups.values() for i in g) == list(range(26))
    # one-hot blocks hold exactly one 1 per row (missing categories are imputed)
    for c in credit.categorical_columns:
        assert np.all(X[:, groups[c]].sum(axis=1) == 1)
    # numeric columns are standardized on the (deduplicated) training rows
    kept = X[fitted.kept_index_]
    num = [groups[c][0] for c in credit.numeric_columns]
    assert np.allclose(kept[:, num].mean(axis=0), 0, atol=1e-5)
    assert np.allclose(kept[:, num].std(axis=0), 1, atol=1e-4)


def test_credit_matches_sklearn_pipeline(credit):
    sk_compose = pytest.importorskip("sklearn.compose")
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    num, cat = credit.numeric_columns, credit.categorical_columns
    raw = credit.to_numpy()
    raw[raw == None] = np.nan  # noqa: E711 - sklearn's marker for missing objects
    idx = {c: j for j, c in enumerate(credit.columns)}
    ct = sk_compose.ColumnTransformer(
        [
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                [idx[c] for c in num],
            ),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                [idx[c] for c in cat],
            ),
        ]
    )
    ref = ct.fit_transform(raw)
    pre = Preprocessor(drop_duplicates=False).fit(credit)
    g = pre.groups_
    order = [g[c][0] for c in num] + [i for c in cat for i in g[c]]
    ours = pre.transform(credit)[:, order]
    assert np.allclose(ours, ref, atol=1e-5)


def test_unknown_category_maps_to_zeros(fitted):
    row = {
        c: v
        for c, v in zip(
            fitted.feature_names_in,
            [9, "castle", 60, 30, "married", "no", "astronaut", 73, 129.0, 0.0, 0.0, 800, 846],
            strict=True,
        )
    }
    x = fitted.transform(row)
    g = fitted.groups_
    assert x.shape == (1, 26)
    assert np.all(x[0, g["Home"]] == 0) and np.all(x[0, g["Job"]] == 0)
    assert x[0, g["Marital"]].sum() == 1


def test_input_forms_agree(credit, fitted):
    sub = credit.take(np.arange(20))
    ref = fitted.transform(sub)
    as_dict = {c: sub[c] for c in sub.columns}
    records = [{c: sub[c][i] for c in sub.columns} for i in range(20)]
    objs = sub.to_numpy()
    for data in (as_dict, records, objs):
        np.testing.assert_array_equal(fitted.transform(data), ref)
    # raw strings, as a form or a CSV line would give them, parse the same
    strs = [{c: ("" if v is None or v != v else str(v)) for c, v in r.items()} for r in records]
    np.testing.assert_array_equal(fitted.transform(strs), ref)
    # a single row as a 1-D array, and extra columns are ignored
    np.testing.assert_array_equal(fitted.transform(objs[3]), ref[3:4])
    np.testing.assert_array_equal(fitted.transform(dict(as_dict, Status=sub.target)), ref)


class FakeSeries:
    def __init__(self, values):
        self.values, self.dtype = values, values.dtype

    def to_numpy(self, dtype=None, na_value=None):
        return np.asarray(self.values, dtype=dtype)


class FakeFrame:
    """Just enough of a DataFrame's interface (pandas is optional)."""

    def __init__(self, cols):
        self._cols, self.columns = cols, list(cols)
        self.dtypes = [s.dtype for s in cols.values()]

    def __getitem__(self, c):
        return self._cols[c]


def test_transform_accepts_a_dataframe(credit, fitted):
    sub = credit.take(np.arange(10))
    frame = FakeFrame(
        {
            c: FakeSeries(sub[c])
            for c in reversed(sub.columns)  # order differs
        }
    )
    np.testing.assert_array_equal(fitted.transform(frame), fitted.transform(sub))


def test_config_round_trip_is_exact(credit, fitted):
    cfg = fitted.to_config()
    text = json.dumps(cfg, allow_nan=False)
    back = Preprocessor.from_config(json.loads(text))
    np.testing.assert_array_equal(back.transform(credit), fitted.transform(credit))
    assert back.feature_names_out == fitted.feature_names_out
    assert back.groups_ == fitted.groups_ and back.report_ == fitted.report_
    assert back.to_config() == cfg


def _plain_types_only(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain_types_only(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain_types_only(v) for v in obj)
    return obj is None or type(obj) in (str, int, float, bool)


def test_config_holds_plain_types_only(fitted):
    assert _plain_types_only(fitted.to_config())


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda c: c.update(format="other"), "not a Preprocessor config"),
        (lambda c: c.update(version=99), "version 99"),
        (lambda c: c["columns"][0].update(scale=0.0), "scale is zero"),
        (lambda c: c["columns"][0].update(center="x"), "finite number"),
        (lambda c: c["columns"][1].update(categories=[1, 2]), "categories must be strings"),
        (lambda c: c["columns"][1].update(kind="text"), "unknown kind"),
        (lambda c: c["columns"][0].pop("fill"), "malformed"),
        (lambda c: c["params"].update(scaling="log"), "malformed"),
    ],
)
def test_from_config_rejects_damaged_state(fitted, mutate, match):
    cfg = json.loads(json.dumps(fitted.to_config()))
    mutate(cfg)
    with pytest.raises(ModelFormatError, match=match):
        Preprocessor.from_config(cfg)


def test_transform_errors_name_row_and_column(credit, fitted):
    bad = credit.take(np.arange(5)).to_numpy()
    bad[3, 0] = "ten"
    with pytest.raises(DataError, match=r"row index 3, column 'Seniority': 'ten' is not a number"):
        fitted.transform(bad)
    with pytest.raises(DataError, match="column 'Home' is missing"):
        fitted.transform({"Seniority": [1.0]})
    with pytest.raises(DataError, match="expected rows of 13 columns"):
        fitted.transform(np.zeros((2, 5)))
    with pytest.raises(DataError, match="not fitted"):
        Preprocessor().transform(credit)


def test_transform_error_on_file_table_names_file_row(tmp_path, fitted, credit):
    p = tmp_path / "new.csv"
    p.write_text(
        ",".join(credit.columns) + "\n" + "x,rent,60,30,married,no,fixed,73,129,0,0,800,846\n"
    )
    t = read_csv(p)  # Seniority is categorical here because of the 'x'
    with pytest.raises(DataError, match=rf"{p}: row 2, column 'Seniority'"):
        fitted.transform(t)


# ----------------------------------------------------------------------------------------
# strategies on a small table
# ----------------------------------------------------------------------------------------


def test_median_most_frequent_standard():
    t = small()
    pre = Preprocessor().fit(t)
    # rows 3 and 4 are duplicates (features and target): fit on 4 rows
    assert pre.report_["duplicates_dropped"] == 1
    spec = {s["name"]: s for s in pre.columns_}
    assert spec["num"]["fill"] == 2.0  # median of 1, 2, 4
    assert spec["cat"]["fill"] == "a" and spec["cat"]["categories"] == ["a", "b"]
    X = pre.transform(t)
    assert pre.feature_names_out == ["num", "cat=a", "cat=b"]
    full = np.array([1.0, 2.0, 2.0, 4.0])
    np.testing.assert_allclose(X[:4, 0], (full - full.mean()) / full.std(), rtol=1e-6)
    np.testing.assert_array_equal(X[:, 1:], [[1, 0], [1, 0], [0, 1], [1, 0], [1, 0]])


def test_mean_constant_minmax_indicator():
    t = small()
    pre = Preprocessor(
        numeric="mean",
        categorical="constant",
        scaling="minmax",
        missing_indicator=True,
        drop_duplicates=False,
    ).fit(t)
    assert pre.feature_names_out == [
        "num",
        "num=<missing>",
        "cat=a",
        "cat=b",
        "cat=missing",
        "cat=<missing>",
    ]
    X = pre.transform(t)
    fill = (1 + 2 + 4 + 4) / 4
    np.testing.assert_allclose(X[:, 0], (np.array([1, 2, fill, 4, 4]) - 1) / 3, rtol=1e-6)
    np.testing.assert_array_equal(X[:, 1], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(X[1, 2:], [0, 0, 1, 1])
    assert pre.groups_ == {"num": [0, 1], "cat": [2, 3, 4, 5]}


def test_drop_strategy_and_fit_resample():
    t = small()
    pre = Preprocessor(numeric="drop", categorical="drop", scaling="none")
    X, y = pre.fit_resample(t)
    assert pre.report_["rows_dropped_missing"] == 2 and pre.report_["duplicates_dropped"] == 1
    # rows 0 and 3 remain; 'b' only occurred in a dropped row, so it is no category
    assert X.shape == (2, 2) and y.tolist() == ["n", "p"]
    assert pre.feature_names_out == ["num", "cat=a"]
    # at transform time missing values still get the median / most frequent
    Xall = pre.transform(t)
    assert Xall.shape == (5, 2) and not np.isnan(Xall).any()
    assert Xall[2].tolist() == [2.5, 0.0] and Xall[1].tolist() == [2.0, 1.0]


def test_constant_column_and_no_scaling():
    t = Table.from_arrays({"c": [5.0, 5.0, 5.0], "d": [1.0, 2.0, 3.0]})
    X = Preprocessor(drop_duplicates=False).fit_transform(t)
    np.testing.assert_array_equal(X[:, 0], 0.0)  # zero spread scales by 1
    X = Preprocessor(scaling="none").fit_transform(t)
    np.testing.assert_array_equal(X, [[5, 1], [5, 2], [5, 3]])


def test_fit_errors():
    with pytest.raises(ValueError, match="numeric='zero'"):
        Preprocessor(numeric="zero")
    with pytest.raises(DataError, match="column 'a' has no values"):
        Preprocessor().fit(Table.from_arrays({"a": [np.nan, np.nan], "b": [1.0, 2.0]}))
    with pytest.raises(DataError, match="infinite value"):
        Preprocessor().fit(Table.from_arrays({"a": [1.0, np.inf]}))
    with pytest.raises(DataError, match="no rows left"):
        Preprocessor(numeric="drop").fit(Table.from_arrays({"a": [np.nan, np.nan]}))


# ----------------------------------------------------------------------------------------
# labels and class weights
# ----------------------------------------------------------------------------------------


def test_label_encoder_positive_and_round_trip(credit):
    enc = LabelEncoder(positive="bad").fit(credit.target)
    assert enc.classes_.tolist() == ["good", "bad"] and enc.positive_ == "bad"
    y = enc.transform(credit.target)
    assert y.dtype == np.int64 and y.sum() == 1254
    assert enc.inverse_transform([1, 0]).tolist() == ["bad", "good"]
    back = LabelEncoder.from_config(json.loads(json.dumps(enc.to_config())))
    np.testing.assert_array_equal(back.transform(credit.target), y)
    assert back.positive_ == "bad"


def test_label_encoder_default_multiclass_and_errors():
    enc = LabelEncoder().fit(["b", "a", "c", "a"])
    assert enc.classes_.tolist() == ["a", "b", "c"] and enc.positive_ is None
    assert LabelEncoder().fit(["x", "y"]).positive_ == "y"
    # numeric labels; a positive given as text still matches (e.g. from a command line)
    enc = LabelEncoder(positive="1").fit(np.array([2, 1, 2]))
    assert enc.transform([1, 2]).tolist() == [1, 0]
    with pytest.raises(DataError, match="label 'd' was not seen"):
        LabelEncoder().fit(["a", "b"]).transform(["a", "d"])
    with pytest.raises(DataError, match="single class"):
        LabelEncoder().fit(["a", "a"])
    with pytest.raises(DataError, match="positive='z' is not one of"):
        LabelEncoder(positive="z").fit(["a", "b"])
    with pytest.raises(DataError, match="binary targets"):
        LabelEncoder(positive="a").fit(["a", "b", "c"])
    with pytest.raises(DataError, match="row index 1: missing label"):
        LabelEncoder().fit(np.array(["a", None, "b"], dtype=object))
    with pytest.raises(ModelFormatError):
        LabelEncoder.from_config({"classes": ["a"]})


def test_class_weights_match_sklearn(credit):
    from sklearn.utils.class_weight import compute_class_weight as sk_cw
    from sklearn.utils.class_weight import compute_sample_weight as sk_sw

    y = credit.target
    classes = np.unique(y)
    np.testing.assert_allclose(
        compute_class_weight(y), sk_cw("balanced", classes=classes, y=y), rtol=1e-12
    )
    np.testing.assert_allclose(compute_sample_weight(y), sk_sw("balanced", y), rtol=1e-12)
    np.testing.assert_allclose(compute_class_weight(y, {"bad": 3.0}), [3.0, 1.0])
    np.testing.assert_allclose(compute_class_weight(y, None), [1.0, 1.0])
    w = compute_sample_weight([0, 0, 0, 1])
    assert w.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])


def test_a_constant_column_scales_by_one_though_its_std_rounds_above_zero():
    """Ten values of 7.7, one missing and filled with their mean: the std of the filled
    column rounds to ~3e-16, not 0. The column must scale by 1 (a new 8.7 lands 1.0 from the
    centre), not by 3e-16 (a feature of ~3e15)."""
    x = np.full((10, 1), 7.7)
    x[0, 0] = np.nan
    pre = Preprocessor(numeric="mean", drop_duplicates=False).fit(x)
    assert pre.columns_[0]["scale"] == 1.0
    out = pre.transform(np.array([[8.7]]))
    assert abs(float(out[0, 0]) - 1.0) < 1e-5  # float32 output
