"""lepton_nn.explain: attributions (saliency, gradient x input, integrated gradients with
completeness), permutation importance, the tabular per-column view, and `lepton-nn explain`."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import explain as E
from lepton_nn.cli import main
from lepton_nn.data import Table
from lepton_nn.errors import LeptonError
from lepton_nn.nn import Dense, Dropout, Sequential
from lepton_nn.tabular import TabularModel

F32 = np.float32


def mlp(act="tanh", n_in=5, n_out=3, seed=0):
    ln.set_seed(seed)
    return Sequential([Dense(16, act, in_features=n_in), Dropout(0.3), Dense(8, act), Dense(n_out)])


def X_(n=10, f=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, f)).astype(F32)


# -- attributions on a Module -----------------------------------------------------------------


def test_linear_model_attributions_are_exact():
    layer = Dense(1, in_features=3)
    layer.weight.data[:] = np.array([[2.0], [-1.0], [0.5]], F32)
    layer.bias.data[:] = 0.25
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0]], F32)
    w = layer.weight.data[:, 0]
    np.testing.assert_allclose(E.saliency(layer, x), np.abs(w) * np.ones((2, 1)))
    np.testing.assert_allclose(E.gradient_x_input(layer, x), x * w, rtol=1e-6)
    # f linear: IG = (x - x0) w exactly, whatever the steps
    np.testing.assert_allclose(E.integrated_gradients(layer, x, steps=1), x * w, rtol=1e-6)
    base = np.array([1.0, 1.0, 1.0], F32)
    np.testing.assert_allclose(
        E.integrated_gradients(layer, x, baseline=base, steps=3), (x - base) * w, rtol=1e-6
    )


@pytest.mark.parametrize(
    "act,steps,tol", [("tanh", 50, 2e-4), ("gelu", 50, 2e-4), ("relu", 200, 2e-2)]
)
def test_integrated_gradients_completeness_mlp(act, steps, tol):
    model = mlp(act)
    X = X_()
    A, delta = E.integrated_gradients(model, X, steps=steps, return_delta=True)
    assert A.shape == X.shape
    model.eval()
    out = model(X).data
    pred = out.argmax(axis=1)  # default target: each row's predicted class
    f_x = out[np.arange(len(X)), pred]
    f_0 = model(np.zeros_like(X)).data[np.arange(len(X)), pred]
    np.testing.assert_allclose(A.sum(axis=1), f_x - f_0, atol=tol * max(1.0, np.abs(f_x).max()))
    np.testing.assert_allclose(delta, A.sum(axis=1) - (f_x - f_0), atol=1e-4)
    model.train()
    assert model.layers[1].training  # the model's own mode is given back


def test_target_picks_the_output_column_and_params_stay_clean():
    model = mlp("tanh")
    X = X_(4)
    A0 = E.integrated_gradients(model, X, target=0)
    A2 = E.integrated_gradients(model, X, target=[2, 2, 2, 2])
    assert not np.allclose(A0, A2)
    model.eval()
    d = model(X).data[:, 2] - model(np.zeros_like(X)).data[:, 2]
    np.testing.assert_allclose(A2.sum(axis=1), d, atol=1e-3)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    with pytest.raises(LeptonError, match="output column"):
        E.saliency(model, X, target=3)


def test_saliency_and_gradient_x_input_match_the_engine():
    model = mlp("tanh", n_out=1)
    X = X_(6)
    model.eval()
    xt = ln.Tensor(X, requires_grad=True)
    model(xt).sum().backward()
    np.testing.assert_allclose(E.saliency(model, X), np.abs(xt.grad), rtol=1e-5)
    np.testing.assert_allclose(E.gradient_x_input(model, X), X * xt.grad, rtol=1e-5)


# -- permutation importance ----------------------------------------------------------------------


def test_permutation_importance_module_hand_made():
    layer = Dense(1, in_features=4)
    layer.weight.data[:] = np.array([[0.0], [0.0], [4.0], [0.0]], F32)
    layer.bias.data[:] = 0
    X = X_(400, 4, seed=1)
    y = (X[:, 2] > 0).astype(np.int64)
    res = E.permutation_importance(layer, X, y, n_repeats=4, seed=3)
    assert res["metric"] == "roc_auc" and res["baseline_score"] == pytest.approx(1.0)
    assert res["importances"].shape == (4, 4)
    assert int(np.argmax(res["importances_mean"])) == 2
    assert res["importances_mean"][2] > 0.3
    np.testing.assert_array_equal(res["importances"][[0, 1, 3]], 0.0)  # unused: no change
    assert res["feature_names"] == ["x0", "x1", "x2", "x3"]
    again = E.permutation_importance(layer, X, y, n_repeats=4, seed=3)
    np.testing.assert_array_equal(again["importances"], res["importances"])
    # a lower-is-better metric is negated: a shuffle still shows as a positive drop
    yf = X[:, 2] * 4
    mse = E.permutation_importance(layer, X, yf, metric="mse", n_repeats=2)
    assert mse["baseline_score"] == pytest.approx(0.0, abs=1e-9)
    assert mse["importances_mean"][2] > 1.0
    acc = E.permutation_importance(layer, X, y, metric="accuracy", n_repeats=2)
    assert acc["baseline_score"] == pytest.approx(1.0) and acc["importances_mean"][2] > 0.3


def test_permutation_importance_custom_metric_and_errors():
    layer = Dense(2, in_features=3)
    X = X_(50, 3)
    y = np.zeros(50, np.int64)

    def top_share(y_true, scores):  # gets the raw (N, 2) outputs
        assert scores.shape == (50, 2)
        return float(np.mean(scores.argmax(axis=1) == y_true))

    res = E.permutation_importance(layer, X, y, metric=top_share, n_repeats=2)
    assert res["metric"] == "top_share" and res["importances"].shape == (3, 2)
    with pytest.raises(LeptonError, match="rows"):
        E.permutation_importance(layer, X, y[:10])
    with pytest.raises(TypeError):
        E.saliency(object(), X)


# -- TabularModel: raw rows, per original column ---------------------------------------------


def synthetic_table(n=300, seed=0):
    """y depends on `signal` only; `noise1`, `noise2` numeric and `color` categorical are noise."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    cols = {
        "signal": signal,
        "noise1": rng.normal(size=n),
        "color": rng.choice(np.array(["red", "green", "blue"], dtype=object), size=n),
        "noise2": rng.normal(size=n),
    }
    cols["noise1"][::17] = np.nan  # some missing values: an indicator feature joins the group
    y = np.where(signal > 0, "yes", "no")
    return Table.from_arrays(cols, target=y)


@pytest.fixture(scope="module")
def tabular():
    table = synthetic_table()
    model = TabularModel(hidden=(16,), epochs=40, positive="yes", seed=0).fit(table)
    return model, table


def test_tabular_integrated_gradients_per_column(tabular):
    model, table = tabular
    rows = table.take(np.arange(8))
    A, delta = E.integrated_gradients(model, rows, steps=100, return_delta=True)
    assert A.shape == (8, 4) and E.feature_names(model) == ["signal", "noise1", "color", "noise2"]
    f_x = model.decision_function(rows)
    X = model.transform(rows)
    f_0 = model.network(np.zeros_like(X)).data[:, 0]
    np.testing.assert_allclose(A.sum(axis=1), f_x - f_0, atol=2e-2)  # completeness
    assert np.abs(delta).max() < 2e-2
    # the per-column view is the feature view with one-hot groups summed
    feat = E.integrated_gradients(model.network, X, steps=100)
    groups = model.preprocessor.groups_
    assert len(groups["color"]) == 3 and len(groups["noise1"]) == 2  # + missing indicator
    for j, idx in enumerate(groups.values()):
        np.testing.assert_allclose(A[:, j], feat[:, idx].sum(axis=1), rtol=1e-5, atol=1e-6)
    # the signal column carries most of the attribution
    assert np.mean(np.abs(A[:, 0])) > np.mean(np.abs(A[:, 1:]))
    sal = E.saliency(model, rows)
    assert sal.shape == (8, 4) and (sal >= 0).all()
    gxi = E.gradient_x_input(model, rows)
    np.testing.assert_allclose(gxi[:, 2], (X * 0 + gxi[:, 2:3])[:, 0])  # shape sanity
    one = {c: table.data[c][0] for c in table.columns}  # a raw row as a dict works too
    np.testing.assert_allclose(E.integrated_gradients(model, one, steps=100)[0], A[0], rtol=1e-5)


def test_tabular_permutation_importance_recovers_the_signal(tabular):
    model, table = tabular
    res = E.permutation_importance(model, table, n_repeats=3, seed=0)
    assert res["metric"] == "roc_auc" and res["baseline_score"] > 0.95
    assert res["feature_names"] == ["signal", "noise1", "color", "noise2"]
    mean = res["importances_mean"]
    assert int(np.argmax(mean)) == 0 and mean[0] > 0.3
    assert np.all(np.abs(mean[1:]) < 0.05)
    assert res["importances_std"].shape == (4,)
    # raw labels as y, rows as a table without its target: the same result
    bare = Table(table.data, table.kinds)
    res2 = E.permutation_importance(model, bare, table.target, n_repeats=3, seed=0)
    np.testing.assert_allclose(res2["importances"], res["importances"])


# -- the command ------------------------------------------------------------------------------


def _write_csv(path, table, with_target=True):
    names = table.columns + (["label"] if with_target else [])
    lines = [",".join(names)]
    for i in range(len(table)):
        vals = []
        for c in table.columns:
            v = table.data[c][i]
            vals.append("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
        if with_target:
            vals.append(str(table.target[i]))
        lines.append(",".join(vals))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_cli_explain_report(tabular, tmp_path, capsys):
    model, table = tabular
    mpath = str(tmp_path / "m.lnn")
    ln.save(model, mpath)
    csv = _write_csv(tmp_path / "rows.csv", table.take(np.arange(120)))
    assert main(["explain", mpath, csv, "--row", "3", "--top", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"model {mpath} (binary); data {csv} (120 rows)"
    assert lines[1].startswith("row 3: predicted ") and "P(yes) = " in lines[1]
    assert "why: integrated gradients of the log-odds of 'yes'" in out
    assert "the attributions sum to" in out
    head = next(
        i for i, s in enumerate(lines) if s.split()[:3] == ["feature", "value", "attribution"]
    )
    shown = [s.split()[0] for s in lines[head + 1 : head + 4]]
    assert len(shown) == 3 and "signal" in shown and lines[head + 4] == ""
    for s in lines[head + 1 : head + 4]:
        sign = s.split()[2][0]
        assert sign in "+-" and (("raises" in s) == (sign == "+"))
    assert "global permutation importance on 120 rows: the drop in roc_auc" in out
    ranked = [s.split()[0] for s in lines[lines.index("  feature  importance     std") + 1 :]]
    assert ranked[0] == "signal" and sorted(ranked) == sorted(table.columns)


def test_cli_explain_without_target_and_errors(tabular, tmp_path, capsys):
    model, table = tabular
    mpath = str(tmp_path / "m.lnn")
    ln.save(model, mpath)
    csv = _write_csv(tmp_path / "bare.csv", table.take(np.arange(20)), with_target=False)
    assert main(["explain", mpath, csv]) == 0
    out = capsys.readouterr().out
    assert "row 0: predicted" in out and "global importances skipped" in out
    assert main(["explain", mpath, csv, "--target", "label"]) == 0
    out = capsys.readouterr().out
    assert "note: no column 'label'" in out and "skipped" in out
    assert main(["explain", mpath, csv, "--row", "20"]) == 2
    assert "out of range" in capsys.readouterr().err
    net = str(tmp_path / "net.lnn")
    ln.save(mlp().build((None, 5)), net)
    assert main(["explain", net, csv]) == 2
    assert "tabular model" in capsys.readouterr().err
