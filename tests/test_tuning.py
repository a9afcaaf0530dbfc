"""Cross-validation and hyperparameter search: determinism, process pool = serial, ranking."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn
from lepton_nn.errors import LeptonError
from lepton_nn.nn import Dense, Dropout, Sequential
from lepton_nn.train import Trainer
from lepton_nn.tuning import (
    GridSearch,
    RandomSearch,
    choice,
    cross_validate,
    loguniform,
    randint,
    split_params,
    trial_seed,
)
from lepton_nn.tuning.validation import make_splits


def build(lr=0.02, hidden=8, dropout=0.0, weight_decay=0.0, optimizer="adam"):
    """Module level, so worker processes can unpickle it."""
    layers = [Dense(hidden, "relu")]
    if dropout:
        layers.append(Dropout(dropout))
    model = Sequential([*layers, Dense(1)])
    return Trainer(model, "bce", optimizer, ["accuracy"], lr=lr, weight_decay=weight_decay)


def not_a_trainer(**params):
    return "nope"


def data(n=240, seed=0):
    rs = np.random.default_rng(seed)
    X = rs.normal(size=(n, 5)).astype(np.float32)
    y = (X[:, 0] - 0.7 * X[:, 3] + 0.3 * rs.normal(size=n) > 0).astype(np.float32)
    return X, y


def without_times(result):
    return [{k: v for k, v in f.items() if k != "fit_time"} for f in result["folds"]]


def test_split_params_and_trial_seeds():
    build_kw, fit_kw = split_params(
        {"lr": 0.1, "epochs": 3, "batch_size": 16, "fit__shuffle": False, "hidden": 4}
    )
    assert build_kw == {"lr": 0.1, "hidden": 4}
    assert fit_kw == {"epochs": 3, "batch_size": 16, "shuffle": False}
    seeds = {trial_seed(0, t, f) for t in range(3) for f in [None, 0, 1, 2]}
    assert len(seeds) == 12 and trial_seed(0, 1, 2) == trial_seed(0, 1, 2)
    assert trial_seed(1, 1, 2) != trial_seed(0, 1, 2)


def test_folds_are_stratified_for_labels_and_plain_for_continuous_targets():
    X, y = data(n=200)
    splits = make_splits(X, y, 4, True, seed=0)
    rate = y.mean()
    for _, test in splits:
        assert abs(y[test].mean() - rate) < 0.03
    assert sorted(np.concatenate([te for _, te in splits]).tolist()) == list(range(200))
    reg = make_splits(X, X[:, 0], 4, True, seed=0)  # continuous: KFold, no error
    assert len(reg) == 4


def test_cross_validate_process_pool_equals_serial():
    X, y = data()
    kw = dict(cv=3, params={"dropout": 0.2}, fit_kwargs={"epochs": 3, "batch_size": 16}, seed=4)
    serial = cross_validate(build, X, y, executor="serial", **kw)
    pooled = cross_validate(build, X, y, n_jobs=2, **kw)  # default: local process pool
    assert without_times(serial) == without_times(pooled)
    assert serial["mean"] == pooled["mean"] and serial["std"] == pooled["std"]
    assert set(serial["mean"]) == {"loss", "accuracy", "roc_auc"}
    scores = [f["accuracy"] for f in serial["folds"]]
    assert serial["mean"]["accuracy"] == pytest.approx(np.mean(scores))
    assert serial["std"]["accuracy"] == pytest.approx(np.std(scores))
    assert serial["mean"]["accuracy"] > 0.75


def test_cross_validate_is_repeatable_and_leaves_the_global_stream_alone():
    X, y = data()
    lepton_nn.set_seed(123)
    expected = lepton_nn.random.rng().random()
    lepton_nn.set_seed(123)
    a = cross_validate(build, X, y, cv=2, fit_kwargs={"epochs": 2}, executor="serial")
    assert lepton_nn.random.rng().random() == expected
    b = cross_validate(build, X, y, cv=2, fit_kwargs={"epochs": 2}, executor="serial")
    c = cross_validate(build, X, y, cv=2, fit_kwargs={"epochs": 2}, executor="serial", seed=1)
    assert without_times(a) == without_times(b)
    assert without_times(a) != without_times(c)


def test_cross_validate_reports_a_bad_build_fn():
    X, y = data(n=40)
    with pytest.raises(LeptonError, match="must return a lepton_nn.train.Trainer"):
        cross_validate(not_a_trainer, X, y, cv=2, executor="serial")


def test_grid_search_picks_the_known_best():
    X, y = data()
    grid = {"lr": [0.0, 0.05], "hidden": [2, 16], "epochs": [8]}  # lr 0 cannot learn
    search = GridSearch(build, grid, cv=3, scoring="accuracy", executor="serial")
    results = search.fit(X, y)
    assert len(results) == 4 and search.results_ is results
    assert search.best_params_["lr"] == 0.05
    assert search.best_score_ == max(r["mean"] for r in results) > 0.8
    assert sorted(r["rank"] for r in results) == [1, 2, 3, 4]
    assert all(r["mean"] < 0.75 for r in results if r["params"]["lr"] == 0.0)
    for r in results:
        assert len(r["scores"]) == 3 and "mean_loss" in r and "std_loss" in r
    # the best configuration refit on all the data
    assert search.best_model_ is search.best_trainer_.model
    assert search.best_trainer_.evaluate(X, y)["accuracy"] > 0.85
    text = search.table()
    lines = text.splitlines()
    assert "rank" in lines[0] and "accuracy mean" in lines[0] and "lr" in lines[0]
    assert lines[2].split()[0] == "1" and len(lines) == 6
    assert str(results) == text


def test_grid_search_list_of_grids_and_loss_scoring():
    X, y = data(n=120)
    grids = [{"lr": [0.05], "epochs": [3]}, {"lr": [0.0], "optimizer": ["sgd"], "epochs": [3]}]
    search = GridSearch(build, grids, cv=2, scoring="loss", executor="serial", refit=False)
    results = search.fit(X, y)
    assert [r["params"] for r in results] == [
        {"lr": 0.05, "epochs": 3},
        {"lr": 0.0, "optimizer": "sgd", "epochs": 3},
    ]
    assert search.best_params_["lr"] == 0.05  # lower loss is better
    assert search.best_model_ is None
    with pytest.raises(TypeError):
        GridSearch(build, {"lr": 0.1})


def test_random_search_is_reproducible_by_seed():
    X, y = data(n=120)
    space = {
        "lr": loguniform(1e-3, 1e-1),
        "hidden": randint(2, 17),
        "dropout": [0.0, 0.2],
        "batch_size": choice([16, 32]),
        "epochs": 2,
    }

    def run(seed):
        s = RandomSearch(build, space, n_trials=3, cv=2, seed=seed, executor="serial")
        results = s.fit(X, y)
        return [r["params"] for r in results], [r["scores"] for r in results], s

    p1, s1, search = run(5)
    p2, s2, _ = run(5)
    p3, _, _ = run(6)
    assert p1 == p2 and s1 == s2
    assert p1 != p3
    for p in p1:
        assert 1e-3 <= p["lr"] < 1e-1 and 2 <= p["hidden"] <= 16
        assert p["dropout"] in (0.0, 0.2) and p["batch_size"] in (16, 32) and p["epochs"] == 2
        assert type(p["hidden"]) is int
    assert search.scoring_ == "roc_auc"  # the default for a binary task
    assert search.best_params_ in p1
