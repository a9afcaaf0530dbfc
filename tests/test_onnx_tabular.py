"""A saved TabularModel exported with its preprocessing: ONNX Runtime scores raw columns
(numbers with NaN for missing, strings for text) as ``runtime.load(...).predict`` does."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import lepton_nn as L  # noqa: E402
import lepton_nn.onnx as lo  # noqa: E402
from lepton_nn import runtime  # noqa: E402
from lepton_nn.data import read_csv  # noqa: E402
from lepton_nn.datasets import __file__ as _datasets  # noqa: E402
from lepton_nn.tabular import TabularModel  # noqa: E402

CREDIT = _datasets.replace("__init__.py", "credit_data.csv")


def _rows(table, n=60):
    """Columns of the first n rows, plus rows with missing values and an unknown category."""
    cols = {c: list(table.data[c][:n]) for c in table.columns}
    for c in table.columns:  # a row with every value missing, one with unseen categories
        cols[c] += [None, "never seen" if c in table.categorical_columns else 1.5]
    return cols


def _feeds(session, cols):
    out = {}
    for i in session.get_inputs():
        v = cols[i.name]
        if i.type == "tensor(string)":
            out[i.name] = np.array(["" if x is None else str(x) for x in v], object)[:, None]
        else:
            out[i.name] = np.array([np.nan if x is None else float(x) for x in v])[:, None]
    return out


@pytest.mark.parametrize("target,task", [("Status", "binary"), ("Home", "multiclass"),
                                         ("Amount", "regression")])  # fmt: skip
def test_tabular_export_scores_raw_rows_as_the_runtime(tmp_path, target, task):
    path = CREDIT
    if target == "Home":  # the rows with a known home, as a file of their own
        with open(CREDIT, encoding="utf-8") as fh:
            lines = [ln for ln in fh if ln.split(",")[2].strip()]
        path = tmp_path / "homes.csv"
        path.write_text("".join(lines), encoding="utf-8")
    table = read_csv(path, target=target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TabularModel(hidden=(16,), epochs=2, seed=0, task=task).fit(table)
    assert model.task_ == task
    L.save(model, tmp_path / "t.lnn")
    served = runtime.load(tmp_path / "t.lnn")
    proto = lo.export(tmp_path / "t.lnn", tmp_path / "t.onnx")
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(str(tmp_path / "t.onnx"))
    assert [i.name for i in session.get_inputs()] == [c for c in table.columns]
    cols = _rows(table)
    got = session.run(None, _feeds(session, cols))
    if task == "regression":
        np.testing.assert_allclose(got[0], served.predict(cols), rtol=1e-6, atol=1e-6)
        return
    label, proba = got
    np.testing.assert_array_equal(label, served.predict(cols))
    np.testing.assert_allclose(proba, served.predict_proba(cols), rtol=0, atol=1e-5)
