"""Training profiles of multiclass and regression models: monitoring (PSI of every column,
of the score and of each class probability), the validator, and ``predict --reasons`` on
multiclass models (issue 18)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn.cli import main
from lepton_nn.errors import ModelFormatError
from lepton_nn.tabular import TabularModel

CLASSES = np.array(["a", "b", "c"], dtype=object)


def _data(n=900, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    data = {f"x{i}": X[:, i] for i in range(3)}
    data["region"] = np.array(rng.choice(["n", "s", "e"], n), dtype=object)
    label = CLASSES[np.argmax(X + rng.normal(0, 0.3, size=X.shape), axis=1)]
    value = 2 * X[:, 0] - X[:, 1] + rng.normal(0, 0.1, n)
    return data, label, value


def _shifted(data):
    out = dict(data)
    out["x0"] = data["x0"] * 1.5 + 1.5
    return out


@pytest.fixture(scope="module")
def models():
    data, label, value = _data()
    multi = TabularModel(seed=0, epochs=15).fit(data, label)
    reg = TabularModel(seed=0, epochs=15).fit(data, value)
    return multi, reg, data


def test_profiles_written_for_every_task(models):
    multi, reg, data = models
    assert multi.task_ == "multiclass" and reg.task_ == "regression"
    p = multi.profile
    assert p["score_of"] == "probability" and len(p["scores"]) == 3
    assert p["baseline_rows"] == 0 and "scores" not in reg.profile
    assert reg.profile["score_of"] == "prediction"
    # baseline = the preprocessing's fill values (what multiclass reasons are measured from)
    fills = {s["name"]: s["fill"] for s in multi.preprocessor._compiled().columns}
    assert {c["name"]: c["baseline"] for c in p["columns"]} == fills
    # the score bins are deciles of the training rows' top-class probability / prediction
    top = multi.predict_proba(data).max(axis=1)
    for prof, s in ((p, top), (reg.profile, reg.predict(data))):
        assert np.allclose(prof["score"]["expected"], 0.1, atol=0.01)
        e = np.asarray(prof["score"]["edges"])
        assert np.allclose(e, np.quantile(s, np.linspace(0.1, 0.9, 9)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", ["multi", "reg"])
def test_monitor_itself_and_shifted(models, which, tmp_path):
    multi, reg, data = models
    model = multi if which == "multi" else reg
    same = ln.risk.monitor(model, data)
    assert same.score["psi"] < 0.01 and all(f["psi"] < 0.01 for f in same.features)
    assert all(f["psi"] < 0.01 for f in same.class_scores)
    ln.save(model, tmp_path / "m.lnn")
    shifted = ln.risk.monitor(str(tmp_path / "m.lnn"), _shifted(data))  # the runtime path
    by = {f["name"]: f for f in shifted.features}
    assert by["x0"]["psi"] > 0.25 and by["x0"]["flag"] == "shift"
    assert max(by[c]["psi"] for c in ("x1", "x2", "region")) < 0.01
    assert shifted.flagged() == ["x0"]
    doc = json.loads(shifted.to_json())
    md = shifted.to_markdown()
    if which == "multi":  # x0 drives class a: its probability moves
        assert [f["name"] for f in shifted.class_scores] == ["p_a", "p_b", "p_c"]
        assert shifted.class_scores[0]["psi"] > 0.25
        assert doc["score_of"] == "probability" and len(doc["class_scores"]) == 3
        assert "| p_a |" in md and "## p_c" in md and "top-class probability" in md
    else:  # the prediction follows 2 x0
        assert shifted.score["psi"] > 0.25 and doc["class_scores"] == []
        assert doc["score_of"] == "prediction" and "| score (prediction) |" in md
    assert doc["features"][0]["bins"] and "| x0 |" in md


def test_monitor_psi_matches_a_direct_computation(models):
    multi, _, data = models
    new = _shifted(data)
    report = ln.risk.monitor(multi, new)
    spec = multi.profile["scores"][0]
    p = multi.predict_proba(new)[:, 0]
    a = np.bincount(np.searchsorted(spec["edges"], p, side="right"), minlength=10) / len(p)
    e = np.maximum(np.asarray(spec["expected"]), 1e-4)
    a = np.maximum(a, 1e-4)
    assert report.class_scores[0]["psi"] == pytest.approx(np.sum((a - e) * np.log(a / e)))


@pytest.mark.parametrize(
    "which, edit",
    [
        ("multi", lambda p: p["scores"].pop()),  # two classes' bins for three classes
        ("multi", lambda p: p.pop("scores")),
        ("multi", lambda p: p.update(score_of="logit")),
        ("multi", lambda p: p["scores"][1]["expected"].__setitem__(0, 2.0)),
        ("multi", lambda p: p["scores"][0]["edges"].reverse()),
        ("multi", lambda p: p.update(scores={"a": 1})),
        ("reg", lambda p: p.update(score_of="probability")),
        ("reg", lambda p: p.update(scores=[p["score"], p["score"]])),
        ("reg", lambda p: p.pop("score_of")),  # absent means logit: a binary model's
        ("reg", lambda p: p["columns"][-1].update(baseline=3)),
    ],
)
def test_damaged_profiles_refused(models, which, edit, tmp_path):
    multi, reg, _ = models
    bad = copy.copy(multi if which == "multi" else reg)
    bad.profile = json.loads(json.dumps(bad.profile))
    edit(bad.profile)
    ln.save(bad, tmp_path / "p.lnn")
    for loader in (ln.load, ln.runtime.load):
        with pytest.raises(ModelFormatError, match="profile"):
            loader(tmp_path / "p.lnn")


def test_old_binary_profile_without_new_keys_loads(tmp_path):
    data, label, _ = _data(n=300)
    y = np.where(label == "a", "bad", "good")
    model = TabularModel(seed=0, epochs=3, positive="bad").fit(data, y)
    assert model.profile["score_of"] == "logit" and "scores" not in model.profile
    old = copy.copy(model)
    old.profile = {k: v for k, v in model.profile.items() if k != "score_of"}
    ln.save(old, tmp_path / "old.lnn")
    report = ln.risk.monitor(str(tmp_path / "old.lnn"), data)
    assert report.score_of == "logit" and report.score["psi"] < 0.01
    assert report.class_scores == []


def test_multiclass_reasons_unchanged_by_the_profile(models):
    multi, _, data = models
    rows = {k: v[:40] for k, v in data.items()}
    bare = copy.copy(multi)
    bare.profile = None  # the fill-value baseline, as before profiles were written
    assert ln.risk.reason_codes(multi, rows, k=3) == ln.risk.reason_codes(bare, rows, k=3)


def _csv(path, data, n):
    names = list(data)
    lines = [",".join(names)] + [",".join(str(data[c][i]) for c in names) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def test_cli_predict_reasons_and_monitor_multiclass(models, tmp_path, capsys):
    multi, reg, data = models
    ln.save(multi, tmp_path / "m.lnn")
    ln.save(reg, tmp_path / "r.lnn")
    _csv(tmp_path / "new.csv", data, 30)
    rows = {k: v[:30] for k, v in data.items()}
    for extra, adverse in (([], None), (["--adverse", "b"], "b")):
        argv = ["predict", str(tmp_path / "m.lnn"), str(tmp_path / "new.csv"), "--reasons", "2"]
        assert main(argv + extra) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == "prediction,p_a,p_b,p_c,reason_1,reason_2"
        want = ln.risk.reason_codes(multi, rows, k=2, adverse=adverse)
        for line, codes in zip(lines[1:], want):
            cells = line.split(",")[4:]
            names = [c.split("=")[0] for c in cells if c]
            assert names == [c for c, _, _ in codes]
    assert main(["monitor", str(tmp_path / "m.lnn"), str(tmp_path / "new.csv"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 30 and len(report["class_scores"]) == 3
    for argv in (
        ["predict", str(tmp_path / "r.lnn"), str(tmp_path / "new.csv"), "--reasons", "2"],
        ["predict", str(tmp_path / "m.lnn"), str(tmp_path / "new.csv"), "--reasons", "2",
         "--adverse", "z"],
    ):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err


def test_streamed_fits_write_the_profile_for_every_task(tmp_path):
    from lepton_nn.data import read_csv, stream

    data, label, value = _data(n=400, seed=1)
    lines = ["x0,x1,k,r"] + [
        f"{a:.17g},{b:.17g},{k},{r:.17g}"
        for a, b, k, r in zip(data["x0"], data["x1"], label, value)
    ]
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    for target, drop, of in (("k", "r", "probability"), ("r", "k", "prediction")):
        rows = stream(str(path), target=target, columns=["x0", "x1"])
        model = TabularModel(epochs=3, seed=0).fit(rows)
        assert model.profile["score_of"] == of
        report = ln.risk.monitor(model, read_csv(str(path), target=target, drop=[drop]))
        assert report.score["psi"] < 0.01 and all(f["psi"] < 0.01 for f in report.features)
