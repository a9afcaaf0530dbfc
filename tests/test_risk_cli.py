"""lepton-nn calibrate and lepton-nn fairness: the CLI equals the Python API on the same rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn.cli import main
from lepton_nn.data import read_csv
from lepton_nn.tabular import TabularModel


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A binary model trained on 800 synthetic rows, saved; 400 held-out rows as a CSV."""
    rng = np.random.default_rng(0)
    n = 1200
    X = rng.normal(size=(n, 3))
    z = 2.5 * X[:, 0] - 1.5 * X[:, 1]
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-z)), "bad", "good").astype(object)
    sex = np.where(rng.random(n) < 0.5 + 0.2 * (X[:, 0] > 0), "f", "m").astype(object)
    data = {"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "sex": sex}
    model = TabularModel(seed=0, positive="bad", epochs=15, drop=("sex",)).fit(
        {k: v[:800] for k, v in data.items()}, y[:800]
    )
    d = tmp_path_factory.mktemp("riskcli")
    ln.save(model, d / "m.lnn")
    lines = ["x0,x1,x2,sex,status"]
    lines += [
        f"{X[i, 0]:.17g},{X[i, 1]:.17g},{X[i, 2]:.17g},{sex[i]},{y[i]}" for i in range(800, n)
    ]
    (d / "held.csv").write_text("\n".join(lines) + "\n")
    return d, model


@pytest.mark.parametrize("method", ["platt", "isotonic", "temperature"])
def test_calibrate_cli_equals_the_api(saved, method, capsys):
    d, model = saved
    out = d / f"cal_{method}.lnn"
    argv = ["calibrate", str(d / "m.lnn"), str(d / "held.csv"), "--target", "status",
            "--method", method, "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"{method} calibration on 400 held-out rows" in text and "brier" in text
    held = read_csv(d / "held.csv", target="status")
    want = ln.risk.calibrate(ln.load(d / "m.lnn"), held, method=method)
    got = ln.load(out)
    assert got.calibration["method"] == method
    np.testing.assert_allclose(got.predict_proba(held), want.predict_proba(held), rtol=1e-12)
    assert not np.allclose(got.predict_proba(held), model.predict_proba(held))
    assert got.card["sections"]["Calibration"]["facts"]["held_out_rows"] == 400


def test_fairness_cli_equals_the_api(saved, capsys):
    d, model = saved
    base = ["fairness", str(d / "m.lnn"), str(d / "held.csv"), "--target", "status"]
    assert main([*base, "--group", "sex", "--boot", "30", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    held = read_csv(d / "held.csv", target="status")
    want = ln.risk.fairness(model, held, held.target, group="sex", n_boot=30)
    assert got["demographic_parity_ratio"] == pytest.approx(want.demographic_parity_ratio)
    assert got["equalized_odds_difference"] == pytest.approx(want.equalized_odds_difference)
    assert [g["group"] for g in got["groups"]] == ["f", "m"]
    assert got["groups"][0]["approval_rate"] == pytest.approx(want.groups[0]["approval_rate"])
    assert got["ci"]["demographic_parity_ratio"] == pytest.approx(
        want.ci["demographic_parity_ratio"]
    )
    assert main([*base, "--group", "sex", "--boot", "30"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Fairness by sex") and "| f | " in md and "| m | " in md
    assert f"{want.demographic_parity_ratio:.3f}" in md
    assert ("pass" if want.four_fifths_pass else "FAIL") in md


def test_risk_cli_bad_input_one_line(saved, capsys):
    d, _ = saved
    m, held = str(d / "m.lnn"), str(d / "held.csv")
    for argv in (
        ["fairness", m, held, "--target", "status", "--group", "nope"],
        ["fairness", m, str(d / "missing.csv"), "--target", "status", "--group", "sex"],
        ["calibrate", m, held, "--target", "status", "-o", m],
        ["calibrate", m, held, "--target", "nope", "-o", str(d / "x.lnn")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err, (argv, err)
