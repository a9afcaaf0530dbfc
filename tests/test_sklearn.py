"""lepton_nn.sklearn in scikit-learn's machinery, its model file, pickling and training rules."""

from __future__ import annotations

import io
import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

import joblib  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.calibration import CalibratedClassifierCV  # noqa: E402
from sklearn.compose import ColumnTransformer, make_column_selector  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.inspection import permutation_importance  # noqa: E402
from sklearn.metrics import accuracy_score, brier_score_loss  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    RandomizedSearchCV,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

import lepton_nn as ln  # noqa: E402
from lepton_nn import datasets  # noqa: E402
from lepton_nn.data import Table  # noqa: E402
from lepton_nn.errors import DataWarning, ModelFormatError  # noqa: E402
from lepton_nn.sklearn import (  # noqa: E402
    MLPClassifier,
    MLPRegressor,
    TabularClassifier,
    TabularRegressor,
    load,
)
from lepton_nn.tabular import TabularModel  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _frame(table) -> pd.DataFrame:
    return pd.DataFrame({c: table.data[c] for c in table.columns})


@pytest.fixture(scope="module")
def credit():
    t = datasets.load_credit()
    return _frame(t), np.asarray(t.target)


@pytest.fixture(scope="module")
def cancer():
    t = datasets.load_breast_cancer()
    return _frame(t), np.asarray(t.target)


@pytest.fixture(scope="module")
def credit_small(credit):
    X, y = credit
    X_tr, _, y_tr, _ = train_test_split(X, y, train_size=900, stratify=y, random_state=0)
    return X_tr.reset_index(drop=True), y_tr


# -- scikit-learn's meta-estimators ------------------------------------------------------------
def test_pipeline_with_column_transformer(credit_small):
    X, y = credit_small
    pre = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(_Imputer(), StandardScaler()),
                make_column_selector(dtype_include="number"),
            ),
            (
                "cat",
                OneHotEncoder(handle_unknown="ignore"),
                make_column_selector(dtype_exclude="number"),
            ),
        ]
    )
    pipe = Pipeline([("pre", pre), ("mlp", MLPClassifier((16,), max_iter=30, random_state=0))])
    pipe.fit(X.iloc[:700], y[:700])
    assert pipe.score(X.iloc[700:], y[700:]) > 0.72  # the majority class is 0.72
    assert set(pipe.predict(X.iloc[:5])) <= set(y)


def _Imputer():
    from sklearn.impute import SimpleImputer

    return SimpleImputer(strategy="median")


def test_set_output_pandas_pipeline_keeps_names(credit_small):
    X, y = credit_small
    num = X.select_dtypes("number").columns.tolist()
    pre = ColumnTransformer(
        [("num", make_pipeline(_Imputer(), StandardScaler()), num)], remainder="passthrough"
    ).set_output(transform="pandas")
    pipe = Pipeline([("pre", pre), ("clf", TabularClassifier(max_iter=15, random_state=0))])
    pipe.fit(X, y)
    clf = pipe.named_steps["clf"]
    assert list(clf.feature_names_in_) == list(pre.get_feature_names_out())
    assert clf.n_features_in_ == X.shape[1]
    # the passthrough text columns reach the classifier as text and are one-hot encoded there
    assert any("=" in f for f in clf.preprocessor_.feature_names_out)
    assert pipe.score(X, y) > 0.72


def test_grid_and_random_search_in_two_processes(cancer):
    X, y = cancer
    grid = GridSearchCV(
        TabularClassifier(max_iter=15, random_state=0),
        {"hidden_layer_sizes": [(8,), (16, 8)], "alpha": [1e-4, 1e-2]},
        cv=3,
        n_jobs=2,
    ).fit(X, y)
    assert grid.best_score_ > 0.9
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_estimator_.predict(X.iloc[:3]).shape == (3,)

    rand = RandomizedSearchCV(
        make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, random_state=0)),
        {"mlpclassifier__learning_rate_init": [1e-3, 3e-3, 1e-2]},
        n_iter=2,
        cv=3,
        n_jobs=2,
        random_state=0,
    ).fit(X.to_numpy(), y)
    assert rand.best_score_ > 0.9


def test_cross_val_score_regressor():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=300), "g": rng.choice(["u", "v", "w"], 300)})
    y = 2 * X["a"].to_numpy() + (X["g"] == "v") * 3.0 + 0.1 * rng.normal(size=300)
    scores = cross_val_score(TabularRegressor(max_iter=60, random_state=0), X, y, cv=3)
    assert scores.min() > 0.8  # R^2: the category must be used
    scores = cross_val_score(
        MLPRegressor((16,), max_iter=60, random_state=0), X[["a"]].to_numpy(), y, cv=3
    )
    assert scores.min() > 0.3


def test_calibrated_classifier_cv(cancer):
    X, y = cancer
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    base = TabularClassifier(max_iter=20, random_state=0)
    cal = CalibratedClassifierCV(base, method="sigmoid", cv=3).fit(X_tr, y_tr)
    p = cal.predict_proba(X_te)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    pos = (y_te == cal.classes_[1]).astype(int)
    assert brier_score_loss(pos, p[:, 1]) < 0.06


def test_permutation_importance_finds_the_informative_column():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 4))
    y = (X[:, 2] > 0).astype(int)
    clf = MLPClassifier((16,), max_iter=60, random_state=0).fit(X, y)
    imp = permutation_importance(clf, X, y, n_repeats=3, random_state=0)
    assert int(np.argmax(imp.importances_mean)) == 2
    assert imp.importances_mean[2] > 0.2
    assert np.delete(imp.importances_mean, 2).max() < 0.05


# -- credit quality ------------------------------------------------------------------------------
def test_credit_accuracy_close_to_tabular_model(credit):
    X, y = credit
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    ours = TabularClassifier(random_state=0).fit(X_tr, y_tr)
    acc = accuracy_score(y_te, ours.predict(X_te))
    tm = TabularModel(seed=0).fit(Table.from_pandas(X_tr), y_tr)
    acc_tm = accuracy_score(y_te, tm.predict(Table.from_pandas(X_te)))
    assert acc > 0.75
    assert abs(acc - acc_tm) <= 0.03, (acc, acc_tm)


# -- clone, pickling, the model file -------------------------------------------------------------
def _fitted(cls, X, y, **kw):
    return cls(max_iter=10, random_state=0, **kw).fit(X, y)


def test_clone_is_unfitted(cancer):
    X, y = cancer
    clf = _fitted(TabularClassifier, X, y, hidden_layer_sizes=(8,))
    c = clone(clf)
    assert c.get_params() == clf.get_params()
    assert not hasattr(c, "network_") and not hasattr(c, "classes_")


@pytest.mark.parametrize("cls", [MLPClassifier, TabularClassifier, MLPRegressor, TabularRegressor])
def test_pickle_and_joblib_carry_the_model_file(cls, cancer):
    X, y = cancer
    if cls in (MLPClassifier, MLPRegressor):
        X = X.to_numpy()
    if cls in (MLPRegressor, TabularRegressor):
        y = np.asarray(X)[:, 0].astype(float) * 2 if cls is MLPRegressor else X.iloc[:, 0] * 2
        X = X[:, 1:] if cls is MLPRegressor else X.iloc[:, 1:]
    est = _fitted(cls, X, y)
    state = est.__getstate__()
    assert "_lnn" in state and set(state) - set(est.get_params()) <= {"_lnn", "_sklearn_version"}
    assert state["_lnn"][:2] == b"PK"  # a zip: the .lnn file itself
    blob = pickle.dumps(est)
    assert b"lepton_nn.nn" not in blob  # no network object inside
    back = pickle.loads(blob)
    buf = io.BytesIO()
    joblib.dump(est, buf)
    buf.seek(0)
    again = joblib.load(buf)
    method = "predict_proba" if hasattr(est, "predict_proba") else "predict"
    want = getattr(est, method)(X[:50])
    np.testing.assert_array_equal(getattr(back, method)(X[:50]), want)
    np.testing.assert_array_equal(getattr(again, method)(X[:50]), want)
    assert back.n_iter_ == est.n_iter_ and back.loss_curve_ == est.loss_curve_


def test_save_gives_a_tabular_file_the_runtime_serves(tmp_path, credit_small):
    from lepton_nn import runtime

    X, y = credit_small
    clf = _fitted(TabularClassifier, X, y)
    path = tmp_path / "credit.lnn"
    ln.save(clf, path)
    est = load(path)
    assert type(est) is TabularClassifier and est.get_params() == clf.get_params()
    np.testing.assert_array_equal(est.predict_proba(X), clf.predict_proba(X))
    assert list(est.feature_names_in_) == list(X.columns)
    tm = ln.load(path)  # the same file as a TabularModel
    np.testing.assert_allclose(tm.predict_proba(X), clf.predict_proba(X), atol=1e-6)
    rt = runtime.load(path)
    np.testing.assert_array_equal(rt.predict(X), clf.predict(X))

    mlp = _fitted(MLPClassifier, X.select_dtypes("number").fillna(0).to_numpy(), y)
    ln.save(mlp, tmp_path / "mlp.lnn")
    Xn = X.select_dtypes("number").fillna(0).to_numpy()
    np.testing.assert_array_equal(runtime.load(tmp_path / "mlp.lnn").predict(Xn), mlp.predict(Xn))


def test_load_rejects_a_bad_estimator_section(tmp_path, cancer):
    from lepton_nn.runtime.format import read_lnn, write_lnn

    X, y = cancer
    path = tmp_path / "m.lnn"
    ln.save(_fitted(MLPClassifier, X.to_numpy(), y), path)
    manifest, arrays = read_lnn(path)
    for bad in ({"class": "os.system"}, {**manifest["estimator"], "params": {"evil": 1}}):
        m = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "arrays")}
        m["estimator"] = {**bad, "fitted": manifest["estimator"]["fitted"]}
        write_lnn(tmp_path / "bad.lnn", m, arrays)
        with pytest.raises(ModelFormatError):
            load(tmp_path / "bad.lnn")


# -- training rules ------------------------------------------------------------------------------
def test_random_state_reproducible(cancer):
    X, y = cancer
    a = _fitted(TabularClassifier, X, y).predict_proba(X)
    b = _fitted(TabularClassifier, X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    c = TabularClassifier(max_iter=10, random_state=1).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, c)


def test_warm_start_continues_and_cold_start_restarts(cancer):
    X, y = cancer
    X = StandardScaler().fit_transform(X)
    kw = dict(max_iter=5, random_state=0, tol=-np.inf)
    clf = MLPClassifier(warm_start=True, **kw).fit(X, y)
    first = list(clf.loss_curve_)
    clf.fit(X, y)
    assert clf.n_iter_ == 10 and clf.loss_curve_[:5] == first
    assert clf.loss_curve_[5] < first[0]  # continued from trained weights
    cold = MLPClassifier(**kw).fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == 5 and cold.loss_curve_ == first


def test_partial_fit(cancer):
    X, y = cancer
    X = StandardScaler().fit_transform(X)
    clf = MLPClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X[:50], y[:50])
    for i in range(8):
        clf.partial_fit(X, y, classes=np.unique(y) if i == 0 else None)
    assert clf.n_iter_ == 8 and clf.loss_curve_[-1] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X[:2], np.array(["x", "y"]))
    reg = TabularRegressor(random_state=0)
    reg.partial_fit(pd.DataFrame(X[:, 1:]), X[:, 0])
    reg.partial_fit(pd.DataFrame(X[:, 1:]), X[:, 0])
    assert reg.n_iter_ == 2


def test_sample_weight_acts_as_repetition_in_float32():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    y = (X[:, 0] + 0.3 * rng.normal(size=30) > 0).astype(int)
    sw = rng.integers(0, 4, size=30)
    kw = dict(max_iter=30, random_state=0, shuffle=False)
    weighted = MLPClassifier(**kw).fit(X, y, sample_weight=sw)
    repeated = MLPClassifier(**kw).fit(np.repeat(X, sw, axis=0), np.repeat(y, sw))
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), atol=1e-5)


def test_tabular_sample_weight_acts_as_repetition_with_text_and_missing():
    # the Preprocessor's medians, means, spreads and most-frequent fills are weighted too
    rng = np.random.default_rng(1)
    n = 30
    num = np.round(rng.normal(size=n), 1)
    num[rng.random(n) < 0.2] = np.nan
    cat = rng.choice(np.array(["a", "b", "c", None], dtype=object), size=n)
    X = np.column_stack([num, rng.normal(size=n), cat]).astype(object)
    y = rng.normal(size=n)
    sw = rng.integers(0, 4, size=n)
    kw = dict(max_iter=20, random_state=0, dropout=0.0, early_stopping=False, dtype="float64")
    weighted = TabularRegressor(**kw).fit(X, y, sample_weight=sw)
    repeated = TabularRegressor(**kw).fit(np.repeat(X, sw, axis=0), np.repeat(y, sw))
    wcols, rcols = weighted.preprocessor_.columns_, repeated.preprocessor_.columns_
    assert [c["fill"] for c in wcols] == [c["fill"] for c in rcols]
    assert [c["kind"] for c in wcols] == ["numeric", "numeric", "categorical"]
    assert wcols[2]["categories"] == rcols[2]["categories"]
    for w, r in zip(wcols[:2], rcols[:2]):
        assert w["center"] == pytest.approx(r["center"], rel=1e-12)
        assert w["scale"] == pytest.approx(r["scale"], rel=1e-12)
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-6)


def test_class_weight_balanced_raises_minority_recall(credit_small):
    X, y = credit_small
    kw = dict(max_iter=20, random_state=0)
    plain = TabularClassifier(**kw).fit(X, y)
    balanced = TabularClassifier(class_weight="balanced", **kw).fit(X, y)
    minority = pd.Series(y).value_counts().idxmin()
    rec = [np.mean(m.predict(X)[y == minority] == minority) for m in (plain, balanced)]
    assert rec[1] > rec[0] + 0.1, rec


def test_tabular_reads_text_and_missing_values():
    X = pd.DataFrame(
        {
            "age": [25, 32, np.nan, 51, 46, 38, 29, 60] * 5,
            "home": ["rent", "own", "own", None, "rent", "other", "own", "rent"] * 5,
            "job": pd.Categorical(["a", "b", "a", "b", "a", "b", "a", "b"] * 5),
        }
    )
    y = np.array(["good", "bad"] * 20)
    clf = TabularClassifier(max_iter=5, random_state=0, early_stopping=False).fit(X, y)
    assert list(clf.feature_names_in_) == ["age", "home", "job"]
    assert "age=<missing>" in clf.preprocessor_.feature_names_out
    new = pd.DataFrame({"age": [np.nan], "home": ["boat"], "job": ["b"]})  # unseen category
    with pytest.warns(DataWarning, match="not seen in training"):
        assert clf.predict(new)[0] in ("good", "bad")
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(new.rename(columns={"age": "AGE"}))


def test_max_iter_without_convergence_warns(cancer):
    X, y = cancer
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        MLPClassifier(max_iter=2, random_state=0).fit(StandardScaler().fit_transform(X), y)
    assert any(issubclass(x.category, ConvergenceWarning) for x in w)


def test_scikit_learn_is_imported_only_by_lepton_nn_sklearn():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, lepton_nn, lepton_nn.io, lepton_nn.tabular, lepton_nn.train, "
        "lepton_nn.runtime, lepton_nn.data, lepton_nn.tuning\n"
        "assert 'sklearn' not in sys.modules, 'sklearn imported'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
