"""skl2onnx pipelines with their preprocessing (ColumnTransformer: SimpleImputer +
StandardScaler on numbers, OneHotEncoder on text, one ONNX input per raw column) imported as
tabular models that score raw columns: probabilities within 1e-5 of ONNX Runtime on the same
file, labels identical (missing numbers, missing and unseen categories included)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")
pytest.importorskip("sklearn")

from skl2onnx import to_onnx  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType, StringTensorType  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

from lepton_nn import runtime  # noqa: E402
from lepton_nn.errors import DataWarning, ModelFormatError  # noqa: E402

NUM, CAT = ["age", "income"], ["city", "kind"]


def _rows(n, seed, cities=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    cols = {"age": rng.normal(40, 10, n), "income": rng.normal(5, 2, n),
            "city": rng.choice(list(cities), n), "kind": rng.choice(["x", "y"], n)}  # fmt: skip
    cols["age"][::6] = np.nan
    return cols


def _fit(task, imputer=True):
    cols = _rows(300, 0)
    if not imputer:
        cols["age"] = np.nan_to_num(cols["age"], nan=35.0)
    x = np.column_stack([cols[c] for c in NUM + CAT]).astype(object)
    age = np.nan_to_num(cols["age"].astype(float), nan=40.0)
    score = (age - 40) / 10 + (cols["city"] == "a") * 1.5 - (cols["kind"] == "y")
    num = [("imp", SimpleImputer())] if imputer else []
    pre = ColumnTransformer([("num", Pipeline([*num, ("sc", StandardScaler())]), [0, 1]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), [2, 3])])  # fmt: skip
    if task == "regression":
        est, y = MLPRegressor(hidden_layer_sizes=(8,), max_iter=400, random_state=0), score
    elif task == "binary":
        est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=400, random_state=0)
        y = np.where(score > 0, "yes", "no")
    else:
        est = MLPClassifier(hidden_layer_sizes=(8, 6), max_iter=400, random_state=0)
        y = np.digitize(score, [-1, 0.5]) * 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = Pipeline([("pre", pre), ("mlp", est)]).fit(x, y)
    types = [(c, FloatTensorType([None, 1])) for c in NUM]
    types += [(c, StringTensorType([None, 1])) for c in CAT]
    opts = {} if task == "regression" else {id(pipe): {"zipmap": False}}
    return to_onnx(pipe, initial_types=types, options=opts,
                   target_opset={"": 17, "ai.onnx.ml": 3})  # fmt: skip


def _feeds(cols):
    return {c: np.asarray(cols[c], np.float32 if c in NUM else object).reshape(-1, 1)
            for c in NUM + CAT}  # fmt: skip


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_pipeline_scores_raw_columns_like_onnxruntime(tmp_path, task):
    path = tmp_path / "p.onnx"
    path.write_bytes(_fit(task).SerializeToString())
    cols = _rows(400, 7, cities=("a", "b", "c", "zz", ""))  # unseen and missing categories
    ref = ort.InferenceSession(str(path)).run(None, _feeds(cols))
    model = runtime.load(str(path))
    rows = {c: list(cols[c]) for c in NUM + CAT}
    with pytest.warns(DataWarning, match="not seen in training"):
        pred = model.predict(rows)
    if task == "regression":
        assert np.abs(np.asarray(pred).reshape(-1) - ref[0].reshape(-1)).max() < 1e-5
        return
    with pytest.warns(DataWarning):
        proba = model.predict_proba(rows)
    assert np.abs(proba - ref[1]).max() < 1e-5
    assert list(np.asarray(pred)) == list(ref[0].reshape(-1))


def test_pipeline_without_imputer_and_refusals():
    model = _fit("binary", imputer=False)
    cols = _rows(50, 3)
    cols["age"] = np.nan_to_num(cols["age"], nan=35.0)  # no imputer: ONNX Runtime gives NaN
    ref = ort.InferenceSession(model.SerializeToString()).run(None, _feeds(cols))
    got = runtime.from_manifest(*__import__("lepton_nn.onnx").onnx.onnx_to_manifest(model)[:2])
    assert np.abs(got.predict_proba({c: list(cols[c]) for c in NUM + CAT}) - ref[1]).max() < 1e-5
    for node in model.graph.node:  # an encoder that raises on unknown categories
        if node.op_type == "OneHotEncoder":
            for a in node.attribute:
                if a.name == "zeros":
                    a.i = 0
    with pytest.raises(ModelFormatError, match="zeros=0"):
        runtime.from_manifest(*__import__("lepton_nn.onnx").onnx.onnx_to_manifest(model)[:2])


def test_convert_cli_on_a_pipeline(tmp_path):
    from lepton_nn.onnx import convert

    path = tmp_path / "p.onnx"
    path.write_bytes(_fit("multiclass").SerializeToString())
    r = convert(path, tmp_path / "p.lnn")
    assert r["parity"] < 1e-5 and "labels equal" in r["oracle"]
    assert r["ops"]["OneHotEncoder"] == 2 and r["ops"]["Imputer"] == 1
    model = runtime.load(str(tmp_path / "p.lnn"))
    assert model.kind == "tabular" and [c["name"] for c in model.preprocessing.columns] == [
        *NUM,
        *CAT,
    ]
