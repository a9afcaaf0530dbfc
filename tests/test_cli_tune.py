"""``lepton-nn tune`` and ``train`` as a user reads them: the printed ``train`` flags train as
the best trial did (every setting, no early stopping, the seed); every command that trains a
two-class model names its positive class by one rule, in one line."""

from __future__ import annotations

import shlex

import numpy as np
import pytest

from lepton_nn import datasets
from lepton_nn.cli import _model_kwargs, build_parser, main
from lepton_nn.tuning import validation as V


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    """120 rows, a text target ('yes' for about a third)."""
    rng = np.random.default_rng(1)
    n = 120
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    home = rng.choice(["own", "rent"], n)
    y = np.where(x1 - 0.5 * x2 + (home == "rent") + rng.normal(scale=0.5, size=n) > 1, "yes", "no")
    p = tmp_path_factory.mktemp("tune") / "small.csv"
    rows = [f"{a:.4f},{b:.4f},{h},{t}" for a, b, h, t in zip(x1, x2, home, y)]
    p.write_text("x1,x2,home,y\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return str(p)


def _trials(monkeypatch) -> list[dict]:
    """What each fold of each trial really trained with, recorded as it runs (--jobs 1:
    the folds run in this process)."""
    seen: list[dict] = []
    real = V.fit_and_score

    def spy(build_fn, build_params, fit_params, *rest):
        net = build_fn(**build_params)  # the trainer the fold builds (same arguments)
        dense = [m for m in net.model.layers if type(m).__name__ == "Dense"]
        drops = {m.rate for m in net.model.layers if type(m).__name__ == "Dropout"}
        out = real(build_fn, build_params, fit_params, *rest)
        seen.append(
            {
                "hidden": tuple(m.units for m in dense[:-1]),
                "dropout": drops.pop() if drops else 0.0,
                "lr": net.optimizer.lr,
                "weight_decay": net.optimizer.weight_decay,
                "batch_size": fit_params["batch_size"],
                "epochs": fit_params["epochs"],
                "callbacks": fit_params.get("callbacks"),
                "ran": out["epochs"],
            }
        )
        return out

    monkeypatch.setattr(V, "fit_and_score", spy)
    return seen


@pytest.mark.parametrize("how", [["--trials", "2"], ["--halving", "--grid", "lr=1e-3,3e-2"]])
def test_printed_train_flags_reproduce_the_best_trial(small_csv, monkeypatch, capsys, how):
    """They left out the 30 epochs and early stopping was on in train (100 epochs): the
    command trained something else than the trial it reported."""
    seen = _trials(monkeypatch)
    argv = ["tune", small_csv, "--target", "y", "--cv", "2", "--jobs", "1", "--seed", "7"]
    assert main([*argv, "--positive", "yes", *how]) == 0
    out = capsys.readouterr().out
    flags = out.splitlines()[-1].removeprefix("the same in train: ")
    args = build_parser().parse_args(
        ["train", small_csv, "--target", "y", "-o", "m.lnn", *shlex.split(flags)]
    )
    kw = _model_kwargs(args)
    best = [t for t in seen if t["lr"] == kw["lr"] and t["epochs"] == kw["epochs"]]
    assert best, (flags, seen)  # the lr read back is exactly a trial's
    trial = best[0]
    for key in ("hidden", "dropout", "lr", "weight_decay", "batch_size", "epochs"):
        assert kw[key] == trial[key], key
    assert trial["callbacks"] is None and trial["ran"] == trial["epochs"]  # no early stop
    assert kw["patience"] == 0 and kw["validation_split"] == 0.0  # none in train either
    assert args.seed == 7 and kw["positive"] == "yes"

    from lepton_nn.data import read_csv
    from lepton_nn.tabular import TabularModel

    model = TabularModel(**kw, seed=args.seed).fit(read_csv(small_csv, target="y"))
    assert len(model.history["loss"]) == trial["epochs"]  # every epoch, as in the trial


def test_every_command_that_trains_names_the_positive_class_alike(tmp_path, capsys):
    """tune printed its own copy of train's line, private and streamed train none: on the
    credit data they trained 'good' as positive without a word (tune showed its line)."""
    lines = open(datasets.path("credit_data"), encoding="utf-8").read().splitlines()
    csv = tmp_path / "credit.csv"
    csv.write_text("\n".join(lines[:301]) + "\n", encoding="utf-8")
    base = [str(csv), "--target", "Status", "-o", str(tmp_path / "m.lnn"), "--epochs", "1"]
    runs = {
        "train": ["train", *base],
        "streamed": ["train", *base, "--memory-budget", "1KB"],
        "private": ["train", *base, "--dp-epsilon", "3", "--batch-size", "32"],
        "tune": ["tune", str(csv), "--target", "Status", "--grid", "lr=1e-3;epochs=1"]
        + ["--cv", "2", "--jobs", "1"],
    }
    from lepton_nn.data import read_csv

    share = np.mean(np.asarray(read_csv(str(csv), target="Status").target) == "good")
    want = (
        "positive class: 'good' (the larger of the two sorted labels; it is the more common "
        f"class, {share:.0%} of the rows: to score the rarer one (a default, a fraud...) give "
        "--positive bad)"
    )
    for name, argv in runs.items():
        assert main(argv) == 0, name
        said = [s for s in capsys.readouterr().out.splitlines() if s.startswith("positive class")]
        if name == "streamed":  # the rows are not in memory: no share
            want_here = "positive class: 'good' (the larger of the two sorted labels; "
            assert said == [want_here + "--positive LABEL chooses another)"], name
        else:
            assert said == [want], name
        assert main([*argv, "--positive", "bad"]) == 0
        assert "positive class: 'bad' (--positive)" in capsys.readouterr().out, name
