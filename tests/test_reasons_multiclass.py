"""Reason codes of a multiclass tabular model (runtime/reasons.py): occlusion in network-input
space equals re-scoring raw rows with one column set to the baseline, under the one-vs-rest
log-odds of the row's target class."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn.datasets import load_credit
from lepton_nn.errors import DataError
from lepton_nn.runtime.reasons import Reasons, class_logodds


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A 5-class model (marital status from the other credit columns) and 12 raw rows."""
    from lepton_nn.tabular import TabularModel

    t = load_credit()
    y = t.data["Marital"]
    keep = np.array([v is not None for v in y])
    data = {c: t.data[c][keep] for c in t.columns if c != "Marital"}
    model = TabularModel(hidden=(8,), epochs=2, seed=0).fit(data, y[keep])
    path = str(tmp_path_factory.mktemp("multi") / "marital.lnn")
    L.save(model, path)
    rows = [{c: _plain(data[c][i]) for c in data} for i in range(0, 600, 50)]
    return path, rows


def _plain(v):
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and v != v else v


def _logodds(p: np.ndarray, t: int) -> float:
    return float(np.log(p[t]) - np.log(1.0 - p[t]))


def oracle(im, rows: list[dict], target) -> np.ndarray:
    """Contribution of column c to row i: z_t(row) - z_t(row with c's raw value replaced by
    the column's fill), each row scored alone through predict_proba."""
    fills = {s["name"]: s["fill"] for s in im.preprocessing.columns}
    classes = im.classes.tolist()
    out = np.empty((len(rows), len(fills)))
    for i, row in enumerate(rows):
        p = im.predict_proba([row])[0].astype(np.float64)
        t = int(p.argmax()) if target is None else classes.index(target)
        for c, name in enumerate(fills):
            q = im.predict_proba([{**row, name: fills[name]}])[0].astype(np.float64)
            out[i, c] = _logodds(p, t) - _logodds(q, t)
    return out


@pytest.mark.parametrize("target", [None, "single", "widow"])
def test_multiclass_contributions_equal_rescoring_raw_rows(multi, target):
    path, rows = multi
    im = rt.load(path)
    assert im.task == "multiclass" and len(im.classes) == 5
    rv = Reasons(im)
    got = rv.matrix(im.transform(rows), target)
    want = oracle(im, rows, target)
    assert np.abs(want).max() > 0.05  # columns do move the score
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    codes = rv(rows, 3, target)
    for i, row in enumerate(codes):
        expect = [c for c in np.argsort(-got[i], kind="stable")[:3] if got[i, c] > 0]
        assert [t[0] for t in row] == [rv.names[c] for c in expect]
        assert all(t[1] == rows[i][t[0]] for t in row)  # the row's own raw value


def test_class_logodds_is_the_binary_logit_for_two_classes():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 50)
    p = np.stack([1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))], axis=1)
    np.testing.assert_allclose(class_logodds(p, np.ones(50, int)), z, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(class_logodds(p, np.zeros(50, int)), -z, rtol=1e-9, atol=1e-9)
    # near p_t = 1 the others' sum keeps the digits that 1 - p_t loses
    p = np.array([[1 - 3e-17, 1e-17, 2e-17]])
    np.testing.assert_allclose(class_logodds(p, np.array([0])), np.log(1 / 3e-17), rtol=1e-9)


def test_multiclass_target_must_be_a_class(multi):
    path, rows = multi
    rv = Reasons(rt.load(path))
    with pytest.raises(DataError, match="'engaged' is not one of the classes"):
        rv(rows, 2, adverse="engaged")
