"""lepton_nn.risk: calibration, PSI/KS, monitoring, reason codes, fairness, scorecard, card."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn.cli import main
from lepton_nn.errors import ModelFormatError
from lepton_nn.risk import calibration as C
from lepton_nn.risk import card
from lepton_nn.risk.groups import group_rates
from lepton_nn.risk.stability import ks, psi
from lepton_nn.tabular import TabularModel


def _synthetic(n=1500, seed=0, rule="and"):
    """Label 'bad' driven by x0 and x1 only; x2..x4 and 'region' are noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    z = 4 * (np.minimum(X[:, 0], X[:, 1]) - 0.3) if rule == "and" else 2 * X[:, 0] - X[:, 1]
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-z)), "bad", "good").astype(object)
    data = {f"x{i}": X[:, i] for i in range(5)}
    data["region"] = np.array(rng.choice(["n", "s", "e"], n), dtype=object)
    data["sex"] = np.array(rng.choice(["f", "m"], n), dtype=object)
    return data, y


def _take(data, idx):
    return {k: v[idx] for k, v in data.items()}


@pytest.fixture(scope="module")
def fitted():
    data, y = _synthetic()
    model = TabularModel(seed=0, positive="bad", epochs=40, drop=("sex",)).fit(
        _take(data, slice(0, 1000)), y[:1000]
    )
    return model, data, y


# -- PSI and KS against direct NumPy computations ------------------------------------------------


def test_psi_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    e, a = rng.normal(size=5000), rng.normal(0.3, 1.2, size=3000)
    edges = np.quantile(e, np.arange(1, 10) / 10)
    pe = np.array([np.mean(np.digitize(e, edges) == b) for b in range(10)])
    pa = np.array([np.mean(np.digitize(a, edges) == b) for b in range(10)])
    expected = np.sum((pa - pe) * np.log(pa / pe))
    assert psi(e, a) == pytest.approx(expected, rel=1e-12)
    assert psi(e, e) == 0.0
    assert psi(e, e + 2.0) > 0.25


def test_ks_matches_a_direct_computation():
    rng = np.random.default_rng(2)
    e, a = rng.normal(size=400), rng.normal(0.2, size=300)
    grid = np.concatenate([e, a])
    direct = max(abs(np.mean(e <= v) - np.mean(a <= v)) for v in grid)
    assert ks(e, a) == pytest.approx(direct, abs=1e-15)
    from scipy.stats import ks_2samp

    assert ks(e, a) == pytest.approx(ks_2samp(e, a).statistic, abs=1e-12)


# -- calibration against scikit-learn ------------------------------------------------------------


def _scores(n=2000, seed=3):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.6 * z - 0.4)))).astype(np.int64)
    return np.round(z, 2), y  # ties on purpose


def test_platt_and_temperature_match_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    z, y = _scores()
    a, b = C.fit_platt(z, y)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(z[:, None], y)
    assert a == pytest.approx(lr.coef_[0, 0], rel=1e-5)
    assert b == pytest.approx(lr.intercept_[0], rel=1e-5, abs=1e-6)
    t = C.fit_temperature(z, y)
    lr0 = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-12, max_iter=10_000)
    assert 1 / t == pytest.approx(lr0.fit(z[:, None], y).coef_[0, 0], rel=1e-5)


def test_isotonic_matches_sklearn():
    from sklearn.isotonic import IsotonicRegression

    z, y = _scores()
    x, v = C.fit_isotonic(z, y)
    iso = IsotonicRegression(out_of_bounds="clip").fit(z, y)
    grid = np.linspace(-9, 9, 5001)
    cal = C.Calibration("isotonic", {"x": x, "y": v})
    np.testing.assert_allclose(cal.apply(grid), iso.predict(grid), atol=1e-12)


def test_calibrated_classifier_cv_sigmoid_is_close():
    """sklearn's Platt uses smoothed targets; on 2,000 rows the maps agree to ~1e-3."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    z, y = _scores()
    base = LogisticRegression().fit(z[:, None], y)
    s = base.decision_function(z[:, None])
    try:
        from sklearn.frozen import FrozenEstimator

        cc = CalibratedClassifierCV(FrozenEstimator(base), method="sigmoid")
    except ImportError:  # older scikit-learn
        cc = CalibratedClassifierCV(base, method="sigmoid", cv="prefit")
    cc.fit(z[:, None], y)
    a, b = C.fit_platt(s, y)
    ours = C.Calibration("platt", {"a": a, "b": b}).apply(s)
    np.testing.assert_allclose(ours, cc.predict_proba(z[:, None])[:, 1], atol=5e-3)


def test_brier_and_ece_by_hand():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.95, 0.55, 0.45, 0.5])
    assert ln.metrics.brier_score(y, p) == pytest.approx(np.mean((p - y) ** 2))
    # bins: [0, .1): {0.05 -> y 0}; [.4, .5): {.45 -> 0}; [.5, .6): {.55, .5 -> 1, 1}; [.9, 1]
    ece = (0.05 + 0.45 + 2 * abs(1 - 0.525) + 0.05) / 5
    assert ln.metrics.expected_calibration_error(y, p) == pytest.approx(ece)
    assert [r["n"] for r in ln.metrics.reliability_table(y, p)] == [1, 1, 2, 1]


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
def test_calibrated_copy_saved_and_applied_by_both_loaders(fitted, method, tmp_path):
    model, data, y = fitted
    held = _take(data, slice(1000, 1500))
    cal = ln.risk.calibrate(model, held, y[1000:], method=method)
    assert model.calibration is None and cal.calibration["method"] == method
    z = model.decision_function(held).astype(np.float64)
    expected = {
        "platt": lambda: 1 / (1 + np.exp(-(cal.calibration["a"] * z + cal.calibration["b"]))),
        "temperature": lambda: 1 / (1 + np.exp(-z / cal.calibration["t"])),
        "isotonic": lambda: np.interp(z, cal.calibration["x"], cal.calibration["y"]),
    }[method]()
    np.testing.assert_allclose(cal.predict_proba(held)[:, 1], expected, atol=1e-12)
    path = tmp_path / "cal.lnn"
    ln.save(cal, path)
    back, served = ln.load(path), ln.runtime.load(path)
    np.testing.assert_array_equal(back.predict_proba(held), cal.predict_proba(held))
    np.testing.assert_allclose(served.predict_proba(held), cal.predict_proba(held), atol=1e-6)
    # the runtime's map on the nn side's own logits is the same map, exactly
    same = served.calibration.of_outputs(z[:, None], False)[:, 1]
    np.testing.assert_array_equal(same, back.predict_proba(held)[:, 1])
    assert "ece" in cal.evaluate(held, y[1000:]) and "Calibration" in cal.card["sections"]


HOSTILE = [
    {"method": "pickle"},
    {"method": "platt", "a": -1.0, "b": 0.0},
    {"method": "platt", "a": 0.0, "b": 0.0},
    {"method": "platt", "a": 1.0},
    {"method": "platt", "a": 1.0, "b": 0.0, "c": 1},
    {"method": "platt", "a": True, "b": 0.0},
    {"method": "platt", "a": "1", "b": 0.0},
    {"method": "temperature", "t": 0.0},
    {"method": "temperature", "t": 1e-9},
    {"method": "isotonic", "x": [0.0, 0.0], "y": [0.1, 0.2]},
    {"method": "isotonic", "x": [0.0, 1.0], "y": [0.5, 0.2]},
    {"method": "isotonic", "x": [0.0, 1.0], "y": [0.5, 1.5]},
    {"method": "isotonic", "x": [0.0, 1.0], "y": [0.5]},
    {"method": "isotonic", "x": "abc", "y": "abc"},
    [1, 2],
]


@pytest.mark.parametrize("section", HOSTILE)
def test_hostile_calibration_refused_by_both_loaders(fitted, section, tmp_path):
    model, _, _ = fitted
    import copy

    bad = copy.copy(model)
    bad.calibration = section
    path = tmp_path / "bad.lnn"
    ln.save(bad, path)
    with pytest.raises(ModelFormatError, match="calibration"):
        ln.load(path)
    with pytest.raises(ModelFormatError, match="calibration"):
        ln.runtime.load(path)


def test_hostile_profile_refused_by_both_loaders(fitted, tmp_path):
    model, _, _ = fitted
    import copy

    bad = copy.copy(model)
    bad.profile = json.loads(json.dumps(model.profile))
    bad.profile["columns"][0]["expected"][0] = 5.0
    ln.save(bad, tmp_path / "p.lnn")
    for loader in (ln.load, ln.runtime.load):
        with pytest.raises(ModelFormatError, match="profile"):
            loader(tmp_path / "p.lnn")


# -- monitoring ---------------------------------------------------------------------------------


def test_monitor_credit_data_itself_and_shifted(tmp_path):
    from lepton_nn import datasets

    table = datasets.load("credit_data")
    model = TabularModel(seed=0, epochs=5).fit(table)
    same = ln.risk.monitor(model, table)
    assert same.score["psi"] < 0.01 and all(f["psi"] < 0.01 for f in same.features)
    cols = {k: np.array(v, copy=True) for k, v in table.data.items()}
    cols["Income"] = cols["Income"].astype(float) * 1.5 + 10
    ln.save(model, tmp_path / "m.lnn")
    shifted = ln.risk.monitor(str(tmp_path / "m.lnn"), cols)  # the runtime path
    by = {f["name"]: f for f in shifted.features}
    assert by["Income"]["psi"] > 0.25 and by["Income"]["flag"] == "shift"
    assert by["Age"]["psi"] < 0.01 and shifted.flagged() == ["Income"]
    assert json.loads(shifted.to_json())["features"][0]["bins"]
    assert "| Income |" in shifted.to_markdown()


# -- reason codes --------------------------------------------------------------------------------


def test_reason_codes_find_the_two_features_that_matter():
    data, y = _synthetic(n=3000, seed=0)
    model = TabularModel(seed=0, positive="bad").fit(data, y)
    codes = ln.risk.reason_codes(model, data, k=4)
    declined = np.flatnonzero(model.predict(data) == "bad")
    hits = [{c for c, _, _ in codes[i][:2]} == {"x0", "x1"} for i in declined]
    assert len(declined) > 100 and np.mean(hits) >= 0.95
    col, value, push = codes[declined[0]][0]
    assert value == pytest.approx(float(data[col][declined[0]])) and push > 0


def test_reason_codes_runtime_equals_nn_side_and_adverse_flips(fitted, tmp_path):
    model, data, _ = fitted
    rows = _take(data, slice(0, 200))
    ln.save(model, tmp_path / "m.lnn")
    nn_side = ln.risk.reason_codes(model, rows, k=3)
    from_file = ln.risk.reason_codes(str(tmp_path / "m.lnn"), rows, k=3)
    assert [[c for c, _, _ in r] for r in nn_side] == [[c for c, _, _ in r] for r in from_file]
    np.testing.assert_allclose(
        [d for r in nn_side for _, _, d in r], [d for r in from_file for _, _, d in r], atol=1e-5
    )
    from lepton_nn.risk.reasons import reason_matrix

    m_bad, _, _ = reason_matrix(model, rows)
    m_good, _, _ = reason_matrix(model, rows, adverse="good")
    np.testing.assert_allclose(m_good, -m_bad)


# -- fairness and scorecard ----------------------------------------------------------------------


def test_group_rates_by_hand():
    declined = np.array([1, 0, 1, 0, 0, 1, 1, 0], bool)
    adverse = np.array([1, 0, 0, 1, 0, 1, 1, 0], bool)
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    r = group_rates(declined, adverse, groups, 2)
    # group 0: approvals 2/4, TPR 1/2, FPR 1/2; group 1: approvals 2/4, TPR 2/2, FPR 0/2
    np.testing.assert_allclose(r["approval_rate"], [0.5, 0.5])
    np.testing.assert_allclose(r["tpr"], [0.5, 1.0])
    np.testing.assert_allclose(r["fpr"], [0.5, 0.0])
    assert r["demographic_parity_ratio"] == 1.0
    assert r["equalized_odds_difference"] == pytest.approx(0.5)


def test_fairness_report_on_a_column_the_model_does_not_use(fitted):
    model, data, y = fitted
    rep = ln.risk.fairness(model, data, y, group="sex", n_boot=50)
    pred = model.predict(data) == "bad"
    f = data["sex"] == "f"
    assert rep.groups[0]["group"] == "f"
    assert rep.groups[0]["approval_rate"] == pytest.approx(1 - pred[f].mean())
    assert rep.groups[1]["tpr"] == pytest.approx(pred[~f & (y == "bad")].mean())
    lo, hi = rep.ci["demographic_parity_ratio"]
    assert lo <= hi and 0 < rep.demographic_parity_ratio <= 1
    assert rep.four_fifths_pass == (rep.demographic_parity_ratio >= 0.8)


def test_scorecard_scaling():
    sc = ln.risk.Scorecard(pdo=20, base_points=600, base_odds=50)
    assert sc.points(1 / 51) == pytest.approx(600)  # odds 50:1
    assert sc.points(1 / 101) == pytest.approx(620, abs=0.2)  # odds 100:1, about double
    p = np.array([0.02, 0.3, 0.9])
    np.testing.assert_allclose(sc.probability(sc.points(p)), p)


# -- the card and the CLI --------------------------------------------------------------------------


def test_card_round_trip_and_hostile_card(fitted, tmp_path, capsys):
    model, _, _ = fitted
    import copy

    m = copy.copy(model)
    card.set_section(m, "Data", text="synthetic", facts={"rows": 1000})
    card.set_section(m, "Privacy", facts={"epsilon": 3.0})
    ln.save(m, tmp_path / "c.lnn")
    assert main(["info", str(tmp_path / "c.lnn"), "--card"]) == 0
    out = capsys.readouterr().out
    assert out.index("## Data") < out.index("## Privacy") and "**rows**: 1000" in out
    with pytest.raises(ModelFormatError):
        card.to_markdown({"format": "lepton_nn.card", "version": 1, "sections": {"x": [1]}})
    assert main(["info", str(tmp_path / "c.lnn").replace("c.lnn", "none.lnn"), "--card"]) == 2


def test_cli_monitor_and_predict_reasons(fitted, tmp_path, capsys):
    model, data, _ = fitted
    ln.save(model, tmp_path / "m.lnn")
    csv = tmp_path / "new.csv"
    names = list(data)
    lines = [",".join(names)] + [",".join(str(data[c][i]) for c in names) for i in range(50)]
    csv.write_text("\n".join(lines) + "\n")
    assert main(["monitor", str(tmp_path / "m.lnn"), str(csv), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 50 and len(report["features"]) == 6
    assert main(["predict", str(tmp_path / "m.lnn"), str(csv), "--reasons", "2"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.endswith("reason_1,reason_2")
    for argv in (
        ["monitor", str(tmp_path / "m.lnn"), str(tmp_path / "missing.csv")],
        ["predict", str(tmp_path / "m.lnn"), str(csv), "--reasons", "0"],
        ["predict", str(tmp_path / "m.lnn"), str(csv), "--reasons", "2", "--adverse", "x"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err


# -- monotonic constraints -----------------------------------------------------------------------


def test_monotone_constraints_hold_on_a_grid_and_the_check_can_fail():
    rng = np.random.default_rng(4)
    n = 1500
    X = rng.normal(size=(n, 3))
    z = 1.5 * X[:, 0] ** 2 - 1.5 * X[:, 1] ** 2 + X[:, 2] - 0.5  # U-shaped in x0, x1
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-z)), "bad", "good")
    data = {f"x{i}": X[:, i] for i in range(3)}
    free = TabularModel(seed=0, positive="bad", epochs=60).fit(data, y)
    free.monotone = {"x0": 1, "x1": -1}
    bad = free.monotone_violations(data)
    assert bad["x0"] > 20 and bad["x1"] > 20  # an unconstrained net follows the U
    tied = TabularModel(seed=0, positive="bad", epochs=60, monotone={"x0": 1, "x1": -1})
    tied.fit(data, y)
    assert tied.evaluate(data, y)["monotone_violations"] == {"x0": 0, "x1": 0}
    # the promise holds off the training rows too: random inputs far outside them
    from lepton_nn.monotone import grid_violations

    far = rng.normal(0, 5, size=(300, tied.network.layers[0].weight.data.shape[0]))
    far = far.astype(np.float32)
    score = lambda x: tied.network(x).data[:, 0]  # noqa: E731
    grid = np.linspace(-20, 20, 41)
    j0, j1 = (tied._monotone_inputs()).keys()
    assert grid_violations(score, far, j0, 1, grid) == 0
    assert grid_violations(score, far, j1, -1, grid) == 0


def test_monotone_refuses_categorical_and_bad_signs(fitted):
    with pytest.raises(ValueError, match="monotone"):
        TabularModel(monotone={"x0": 2})
    data, y = _synthetic(n=200)
    with pytest.raises(ln.DataError, match="categorical"):
        TabularModel(monotone={"region": 1}, epochs=1).fit(data, y)


def test_write_card_has_every_section_and_keeps_others(fitted, tmp_path, capsys):

    model, data, y = fitted
    m = ln.risk.calibrate(model, _take(data, slice(1000, 1250)), y[1000:1250], "platt")
    card.set_section(m, "Privacy", facts={"epsilon": 2.0})
    held = _take(data, slice(1250, 1500))
    ln.risk.write_card(m, held, y[1250:], group="sex", intended_use="tests")
    ln.save(m, tmp_path / "c.lnn")
    assert main(["info", str(tmp_path / "c.lnn"), "--card"]) == 0
    out = capsys.readouterr().out
    heads = [line[3:] for line in out.splitlines() if line.startswith("## ")]
    want = ["Intended use", "Data", "Metrics", "Calibration", "Fairness", "Monitoring", "Privacy"]
    assert heads == want
    auc = m.evaluate(held, y[1250:])["roc_auc"]
    assert f"**roc_auc**: {auc:.4g}" in out and "**method**: platt" in out
    assert "| f |" in out and "| m |" in out and "| score |" in out
    assert model.card is None or "Privacy" not in model.card["sections"]  # a copy was changed


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p.update(rows="many"),
        lambda p: p.update(bins=-1),
        lambda p: p["score"]["edges"].reverse(),
        lambda p: p["columns"].pop(),
        lambda p: p["columns"][0].update(kind="categorical"),
        lambda p: p["columns"][-1].update(baseline=3),  # the categorical 'sex'/'region'
        lambda p: p["columns"][0].update(edges=[0.0] * 2000),
    ],
)
def test_more_hostile_profiles_refused(fitted, edit, tmp_path):
    import copy

    model, _, _ = fitted
    bad = copy.copy(model)
    bad.profile = json.loads(json.dumps(model.profile))
    edit(bad.profile)
    ln.save(bad, tmp_path / "p.lnn")
    for loader in (ln.load, ln.runtime.load):
        with pytest.raises(ModelFormatError, match="profile"):
            loader(tmp_path / "p.lnn")


def test_monotone_survives_pruning_fine_tune_and_int8():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(800, 3))
    z = 1.5 * X[:, 0] ** 2 - X[:, 1]
    y = np.where(rng.random(800) < 1 / (1 + np.exp(-z)), "bad", "good")
    data = {f"x{i}": X[:, i] for i in range(3)}
    model = TabularModel(seed=0, positive="bad", epochs=20, monotone={"x0": 1})
    model.fit(data, y)
    small = model.compress(data, y, prune=0.5, fine_tune_epochs=5, quantize="static")
    assert small.monotone_violations(data) == {"x0": 0}
    # dynamic int8 scales each row by its own range: moving x0 re-rounds the other inputs,
    # so the score may wobble by quantization noise (reported, not hidden)
    dyn = model.compress(data, y, quantize="dynamic")
    from lepton_nn.monotone import grid_violations

    X = dyn.transform(data)[:200]
    score = lambda x: dyn.quantized.predict(x)[:, 0]  # noqa: E731
    assert grid_violations(score, X, 0, 1, np.linspace(-3, 3, 21), tol=0.1) == 0


def test_reason_contributions_equal_raw_occlusion_through_the_nn_path(fitted):
    """The runtime's feature-space occlusion == setting the raw column to the baseline and
    scoring with the nn-side model."""
    from lepton_nn.risk.reasons import reason_matrix

    model, data, _ = fitted
    rows = _take(data, slice(0, 60))
    contrib, names, _ = reason_matrix(model, rows)
    z = model.decision_function(rows).astype(np.float64)
    base = {c["name"]: c["baseline"] for c in model.profile["columns"]}
    assert names == ["x0", "x1", "x2", "x3", "x4", "region"]
    for j, name in enumerate(names):
        moved = dict(rows)
        moved[name] = np.array([base[name]] * 60, dtype=rows[name].dtype)
        expected = z - model.decision_function(moved).astype(np.float64)
        np.testing.assert_allclose(contrib[:, j], expected, atol=2e-5)


def test_cli_train_monotone(tmp_path, capsys):
    data, y = _synthetic(n=400, rule="linear")
    names = list(data)
    lines = [",".join([*names, "y"])]
    lines += [",".join([*(str(data[c][i]) for c in names), y[i]]) for i in range(400)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    base = ["train", str(tmp_path / "d.csv"), "--target", "y", "--epochs", "5"]
    out = str(tmp_path / "m.lnn")
    assert main([*base, "--positive", "bad", "--monotone", "x0:+1,x1:-1", "-o", out]) == 0
    assert ln.load(out).monotone == {"x0": 1, "x1": -1}
    capsys.readouterr()
    assert main(["evaluate", out, str(tmp_path / "d.csv"), "--target", "y", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["monotone_violations"] == {"x0": 0, "x1": 0}
    for bad in ("x0:2", "region:+1"):
        assert main([*base, "--monotone", bad, "-o", out]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_train_writes_a_card(tmp_path, capsys):
    data, y = _synthetic(n=300, rule="linear")
    names = list(data)
    lines = [",".join([*names, "y"])]
    lines += [",".join([*(str(data[c][i]) for c in names), y[i]]) for i in range(300)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "m.lnn")
    argv = ["train", str(tmp_path / "d.csv"), "--target", "y", "--epochs", "3", "--cv", "2"]
    assert main([*argv, "--positive", "bad", "-o", out]) == 0
    capsys.readouterr()
    assert main(["info", out, "--card"]) == 0
    text = capsys.readouterr().out
    for head in ("## Data", "## Metrics", "## Calibration", "## Monitoring"):
        assert head in text
    assert "60 rows held out" in text and "**roc_auc (CV)**" in text
    assert "threshold (CV)" not in text


def test_predict_reasons_refuses_the_streamed_inputs_it_cannot_explain(tmp_path, capsys):
    """--reasons on standard input or a folder is one line and exit 2, never silently ignored."""
    from lepton_nn.cli import main

    for data in ("-", str(tmp_path)):
        assert main(["predict", "m.lnn", data, "--reasons", "2", "-o", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "--reasons reads one CSV file" in err and err.count("\n") == 1
