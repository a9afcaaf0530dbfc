"""scikit-learn pipelines through skl2onnx (StandardScaler as ai.onnx.ml Scaler, then an
MLP): lepton_nn's runtime against ONNX Runtime on the same file within 1e-5, labels equal."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")
import onnxruntime as ort  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_iris  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import lepton_nn.onnx as lo  # noqa: E402
from lepton_nn import runtime  # noqa: E402

TOL = 1e-5


def _fit(est, data):
    X, y = data(return_X_y=True)
    X = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(StandardScaler(), est).fit(X, y)
        options = {"zipmap": False} if hasattr(est, "predict_proba") else None
        proto = skl2onnx.to_onnx(pipe, X[:1], options=options, target_opset=17)
    return X, proto.SerializeToString()


@pytest.mark.parametrize("data", [load_iris, load_breast_cancer])
def test_mlp_classifier_pipeline(tmp_path, data):
    X, blob = _fit(MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=200, random_state=0), data)
    (tmp_path / "m.onnx").write_bytes(blob)
    label, proba = ort.InferenceSession(blob).run(None, {"X": X})
    model = runtime.load(tmp_path / "m.onnx")
    got = model.predict(X)
    np.testing.assert_allclose(got, proba, rtol=0, atol=TOL)
    np.testing.assert_array_equal(got.argmax(axis=1), label)  # classes are 0..C-1 here
    _, _, report = lo.onnx_to_manifest(blob)
    assert report["dropped_outputs"] == ["label"] and report["ops"]["Scaler"] == 1
    np.testing.assert_allclose(lo.load(blob)(X).data, proba, rtol=0, atol=TOL)


def test_mlp_regressor_pipeline():
    X, blob = _fit(MLPRegressor(hidden_layer_sizes=(16,), max_iter=200, random_state=0), load_iris)
    (ref,) = ort.InferenceSession(blob).run(None, {"X": X})
    manifest, arrays, _ = lo.onnx_to_manifest(blob)
    got = runtime.from_manifest(manifest, arrays).predict(X)
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=0, atol=TOL)
