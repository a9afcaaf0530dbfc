"""Successive halving: the rungs, their cost, and scores equal to grid searches at the
rungs' epochs (same trial seeds)."""

from __future__ import annotations

import pytest
from test_tuning import build, data

from lepton_nn.tuning import GridSearch, SuccessiveHalving

GRID = {"lr": [0.003, 0.01, 0.03], "hidden": [4, 8]}  # 6 configurations


def grid_at(epochs, X, y):
    g = GridSearch(build, {**GRID, "epochs": [epochs]}, cv=2, executor="serial", refit=False)
    g.fit(X, y)
    return g.results_


def test_rungs_keep_the_best_third_and_equal_grid_searches_at_their_epochs():
    X, y = data(160)
    search = GridSearch(build, GRID, cv=2, executor="serial")
    sh = SuccessiveHalving(search, min_epochs=1, max_epochs=9, eta=3)
    rungs = sh.fit(X, y)
    assert [(r["epochs"], len(r["trials"])) for r in rungs] == [(1, 6), (3, 2), (9, 1)]
    assert sh.trials_run == 9 and sh.epochs_spent == (6 * 1 + 2 * 3 + 1 * 9) * 2
    for r in rungs:
        full = grid_at(r["epochs"], X, y)
        assert r["scores"] == [full[t]["mean"] for t in r["trials"]]
    first = grid_at(1, X, y)
    top2 = sorted(row["trial"] for row in first if row["rank"] <= 2)
    assert rungs[1]["trials"] == top2  # the best third of rung 0 went on
    assert sh.best_params_["epochs"] == 9 and sh.best_index_ == rungs[2]["trials"][0]
    assert sh.best_model_ is not None  # refit at 9 epochs
    assert "9 trials, 42 epochs spent (39% of the full grid's 108 at 9 epochs)" in sh.summary()


def test_bad_settings_are_refused():
    search = GridSearch(build, GRID, cv=2)
    with pytest.raises(ValueError, match="min_epochs"):
        SuccessiveHalving(search, min_epochs=5, max_epochs=3)
    with pytest.raises(ValueError, match="eta"):
        SuccessiveHalving(search, eta=1)


def test_cli_tune_halving_prints_rungs_and_its_cost(tmp_path, capsys):
    from lepton_nn.cli import main
    from lepton_nn.datasets import path as data_path

    lines = open(data_path("credit_data.csv"), encoding="utf-8").read().splitlines()
    csv = tmp_path / "small.csv"
    csv.write_text("\n".join(lines[:201]) + "\n", encoding="utf-8")
    argv = ["tune", str(csv), "--target", "Status", "--cv", "2", "--jobs", "1", "--halving"]
    assert main([*argv, "--grid", "lr=1e-3,1e-2;hidden=8,16x8,16"]) == 0
    out = capsys.readouterr().out
    assert "rung 0: 6 configurations x 3 epochs" in out and "rung 1: 2 configurations" in out
    assert "9 trials, " in out and "% of the full grid's 360 at 30 epochs" in out
    assert out.splitlines()[-1].startswith("the same in train: ")
