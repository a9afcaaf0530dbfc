"""The lepton-nn command as a new user meets it (issue 16, issue 15 item 16): regression from
the CLI, bad flag values, progress and explanations, info --json, compress exit codes, closed
pipes, the bundled data sets."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import PKG_PARENT

from lepton_nn import datasets
from lepton_nn.cli import TRAIN_DEFAULTS, build_parser, main
from lepton_nn.commands.args import hidden_sizes

ROOT = str(PKG_PARENT)  # where the imported package lives: subprocesses import the same build


@pytest.fixture(scope="module")
def reg_csv(tmp_path_factory):
    """A numeric target: price = 2 x1 - x2 + 1.5 [cat = b] + noise (400 rows)."""
    rng = np.random.default_rng(0)
    n = 400
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    cat = rng.choice(["a", "b", "c"], n)
    y = 2 * x1 - x2 + 1.5 * (cat == "b") + rng.normal(scale=0.3, size=n)
    p = tmp_path_factory.mktemp("reg") / "reg.csv"
    rows = [f"{a:.4f},{b:.4f},{c},{t:.4f}" for a, b, c, t in zip(x1, x2, cat, y)]
    p.write_text("x1,x2,cat,price\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return str(p)


@pytest.fixture(scope="module")
def reg_model(reg_csv, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("regm") / "reg.lnn")
    assert main(["train", reg_csv, "--target", "price", "--epochs", "40", "-q", "-o", out]) == 0
    return out


# -- regression ----------------------------------------------------------------------------
def test_train_on_a_numeric_target_uses_a_plain_split_and_regression_metrics(
    reg_csv, tmp_path, capsys
):
    out = str(tmp_path / "r.lnn")
    argv = ["train", reg_csv, "--target", "price", "--epochs", "40", "--cv", "2", "-o", out]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "(regression)" in text and "stratif" not in text
    for key in ("r2", "mae", "rmse"):
        assert f"  {key} " in text
    r2 = float(next(line.split()[1] for line in text.splitlines() if line.startswith("  r2 ")))
    assert r2 > 0.8


def test_evaluate_json_of_a_regression_model_has_every_field(reg_model, reg_csv, capsys):
    assert main(["evaluate", reg_model, reg_csv, "--target", "price", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "regression" and report["n"] == 400
    for key in ("r2", "mae", "rmse", "mse"):
        assert isinstance(report[key], float), key
    assert report["rmse"] == pytest.approx(np.sqrt(report["mse"]))
    assert report["r2"] > 0.8


def test_tune_ranks_a_regression_search_by_r2_and_saves_the_best(
    reg_csv, reg_model, tmp_path, capsys
):
    out = str(tmp_path / "best.lnn")
    argv = ["tune", reg_csv, "--target", "price", "--cv", "2", "--jobs", "1"]
    argv += ["--grid", "lr=1e-3,1e-2;hidden=8,16x8", "--out", out]
    assert main(argv) == 0
    text = capsys.readouterr().out
    trials = [line for line in text.splitlines() if line.startswith("trial ")]
    assert len(trials) == 4 and all("r2 " in t for t in trials)
    assert "nan" not in text.split("configurations")[1].split("best:")[0]
    best = next(line for line in text.splitlines() if line.startswith("best: "))
    assert float(best.split()[-1]) > 0.5
    assert "the same in train: --lr " in text
    assert os.path.exists(out)
    assert main(["evaluate", out, reg_csv, "--target", "price", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["r2"] > 0.5


def test_tune_refuses_a_scoring_that_does_not_fit_before_any_trial(reg_csv, capsys):
    rc = main(["tune", reg_csv, "--target", "price", "--scoring", "roc_auc"])
    captured = capsys.readouterr()
    assert rc == 2 and "trial" not in captured.out
    assert len(captured.err.strip().splitlines()) == 1 and "--scoring" in captured.err


# -- flags -----------------------------------------------------------------------------------
CREDIT = datasets.path("credit_data")


@pytest.mark.parametrize(
    "flags, expect",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--epochs", "-1"], "--epochs"),
        (["--epochs", "0"], "--epochs"),
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--dropout", "1.5"], "--dropout"),
        (["--cv", "1"], "--cv"),
        (["--seed", "-1"], "--seed"),
        (["--weight-decay", "-0.1"], "--weight-decay"),
        (["--hidden", "0"], "--hidden"),
        (["--hidden", "abc"], "--hidden"),
        (["--hidden", "100000000"], "budget"),
        (["-o", "no/such/folder/m.lnn"], "does not exist"),
    ],
)
def test_bad_train_flags_are_one_line_and_exit_2(flags, expect, tmp_path, capsys):
    out = str(tmp_path / "m.lnn")
    argv = ["train", CREDIT, "--target", "Status", "-o", out, *flags]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], captured.err
    assert "Epoch" not in captured.out  # refused before any training
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "argv",
    [
        ["tune", CREDIT, "--target", "Status", "--cv", "1"],
        ["tune", CREDIT, "--target", "Status", "--grid", "lr=-1"],
        ["tune", CREDIT, "--target", "Status", "--grid", "hidden=0x3"],
        ["tune", CREDIT, "--target", "Status", "--jobs", "0"],
        ["tune", CREDIT, "--target", "Status", "--out", "no/such/dir/x.lnn"],
        ["explain", "m.lnn", CREDIT, "--row", "-1"],
        ["demo", "--seed", "-3"],
        ["predict", "m.lnn", CREDIT, "-o", "no/such/dir/x.csv"],
    ],
)
def test_bad_values_of_other_commands_are_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_bad_flag_from_the_shell_prints_no_usage_block_nor_traceback():
    r = subprocess.run(
        [sys.executable, "-m", "lepton_nn", "train", CREDIT, "--target", "Status", "-o", "m"]
        + ["--batch-size", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "lepton-nn train: error: argument --batch-size: must be >= 1, got 0"
    ]


def test_train_help_gives_every_flag_a_help_text_and_its_default(capsys):
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        assert action.help, action.dest
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in [
        ("--epochs", "100"),
        ("--lr", "0.003"),
        ("--dropout", "0.2"),
        ("--batch-size", "64"),
        ("--seed", "0"),
        ("--weight-decay", "0.001"),
        ("--hidden", "32x16"),
    ]:
        assert flag in text and f"(default: {default})" in text, flag


def test_train_defaults_are_those_of_tabular_model():
    from lepton_nn.tabular import TabularModel

    sig = inspect.signature(TabularModel).parameters
    for name, value in TRAIN_DEFAULTS.items():
        if name == "hidden":
            value = hidden_sizes(value)
        assert sig[name].default == value, name


def test_one_hidden_size_syntax_for_train_and_tune():
    from lepton_nn.commands.tune import parse_grid

    assert hidden_sizes("64x32") == (64, 32) == hidden_sizes("64,32")
    assert parse_grid("hidden=32,64x32")["hidden"] == ["32", "64x32"]
    assert parse_grid("hidden=64,32")["hidden"] == ["64", "32"]  # commas separate values here


def test_train_says_which_class_is_positive_and_why_it_refits(tmp_path, capsys):
    out = str(tmp_path / "m.lnn")
    small = tmp_path / "small.csv"
    lines = open(CREDIT, encoding="utf-8").read().splitlines()
    small.write_text("\n".join(lines[:301]) + "\n", encoding="utf-8")
    assert main(["train", str(small), "--target", "Status", "--epochs", "3", "-o", out]) == 0
    text = capsys.readouterr().out
    assert "positive class: 'good' (the larger of the two sorted labels" in text
    assert "refitting on all 300 rows" in text and "trained again on all its rows" in text
    # not a terminal: one plain line per epoch, no carriage returns
    assert "Epoch 1/3" in text and "\r" not in text
    assert main(["train", str(small), "--target", "Status", "--epochs", "3", "-q", "-o", out]) == 0
    quiet = capsys.readouterr().out
    assert "Epoch" not in quiet and "refitting" not in quiet and "validation" in quiet


def test_bare_command_lists_the_subcommands(capsys):
    """`lepton-nn` alone said only "the following arguments are required: command"."""
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: lepton-nn" in err and "demo" in err and "serve" in err


def test_every_argument_of_every_command_has_help():
    """`datasets --help` showed a bare {list,export}; `sign`/`verify`, a bare model."""
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [
        f"{name} {a.dest}"
        for name, p in sub.choices.items()
        for a in p._actions
        if not a.help and not isinstance(a, argparse._HelpAction)
    ]
    assert not bare


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "-o", "{d}/x.lnn"],
        ["convert", "{m}", "-o", "{d}/x.onnx"],
        ["sign", "{m}", "--key", "{m}", "-o", "{d}/x.lnn"],
        ["keygen", "{d}/carol"],
    ],
    ids=lambda a: a[0],
)
def test_an_output_in_a_missing_folder_is_refused_before_any_work(argv, tmp_path, capsys):
    """demo trained for its whole run, then failed on '.x.lnn.<random>.tmp'; convert and sign
    named that temporary file too."""
    import lepton_nn as ln
    from lepton_nn import nn

    model = nn.Sequential([nn.Dense(2)])
    model.build((None, 3))
    ln.save(model, tmp_path / "m.lnn")
    d, m = tmp_path / "nodir", tmp_path / "m.lnn"
    assert main([a.format(d=d, m=m) for a in argv]) == 2
    out = capsys.readouterr()
    assert f"folder {d} does not exist" in out.err and ".tmp" not in out.err, out.err
    assert out.out == ""  # nothing ran


# -- info ------------------------------------------------------------------------------------
def test_info_json_is_valid_and_agrees_with_the_backend(capsys):
    from lepton_nn import backend

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["active_backend"] == backend.get_backend().name
    assert info["backends_available"] == list(backend.available())
    assert ("cython" in info["backends_available"]) == all(info["compiled_kernels"].values())
    if info["compiled_kernels"]["qgemm"]:
        from lepton_nn.kernels import _qgemm

        assert info["int8_isa"]["active"] == _qgemm.isa()
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "int8 matmul path:" in text and "cython not installed" not in text


def test_info_counts_every_compiled_module_the_build_makes():
    """``info`` checked 5 of the 8 modules setup.py builds: a missing _gemm or _pool (the
    GEMM and the thread pool every kernel binds) still read "5 of 5 built"."""
    from pathlib import Path

    from lepton_nn.commands import info

    kernels = Path(__file__).resolve().parents[1] / "kernels"
    built = {p.stem for p in kernels.glob("*.pyx")} | {"hostprobe"}  # setup.py's list
    assert set(info.environment()["compiled_kernels"]) == built


def test_convert_without_the_onnx_package_is_one_line_naming_the_extra(
    tmp_path, capsys, monkeypatch
):
    """It was a traceback ending in 'reading ONNX files needs...', on an export too."""
    import lepton_nn as ln
    import lepton_nn.onnx
    from lepton_nn import nn

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    model = nn.Sequential([nn.Dense(2)])
    model.build((None, 3))
    ln.save(model, tmp_path / "m.lnn")
    assert main(["convert", str(tmp_path / "m.lnn"), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "lepton-nn[onnx]"' in err, err
    with pytest.raises(ImportError, match="export"):  # still an ImportError in Python
        lepton_nn.onnx.export(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_predict_on_rows_missing_columns_names_all_of_them_as_the_models(tmp_path, capsys):
    """It said "column_types names column 'Marital', which is not in the data": a flag the
    user never gave, and only the first of the missing columns."""
    from lepton_nn.data import read_csv
    from lepton_nn.tabular import TabularModel

    table = read_csv(datasets.path("credit_data"), target="Status")
    model = TabularModel(hidden=(4,), epochs=1, seed=0).fit(table.take(np.arange(300)))
    ln_path = tmp_path / "m.lnn"
    __import__("lepton_nn").save(model, ln_path)
    lines = open(datasets.path("credit_data"), encoding="utf-8").read().splitlines()[:20]
    cut = tmp_path / "cut.csv"
    cut.write_text("\n".join(",".join(r.split(",")[:11]) for r in lines) + "\n")  # no Amount, Price
    assert main(["predict", str(ln_path), str(cut)]) == 2
    err = capsys.readouterr().err
    assert "'Amount', 'Price'" in err and "trained on" in err and err.count("\n") == 1, err


# -- compress --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def credit_model(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("credit") / "credit.lnn")
    argv = ["train", CREDIT, "--target", "Status", "--positive", "bad", "--hidden", "16"]
    assert main([*argv, "--epochs", "10", "-q", "-o", out]) == 0
    return out


def test_compress_over_the_accuracy_budget_exits_1_and_writes_nothing(
    credit_model, tmp_path, capsys
):
    out = str(tmp_path / "small.lnn")
    argv = ["compress", credit_model, CREDIT, "--target", "Status", "--prune", "0.97"]
    rc = main([*argv, "--max-accuracy-drop", "0", "-q", "-o", out])
    text = capsys.readouterr().out
    assert "OVER" in text and rc == 1 and not os.path.exists(out)
    assert "refused" in text


def test_compress_within_the_budget_exits_0_and_says_the_rows_were_seen(
    credit_model, tmp_path, capsys
):
    out = str(tmp_path / "small.lnn")
    argv = ["compress", credit_model, CREDIT, "--target", "Status", "--prune", "0.5"]
    rc = main([*argv, "--max-accuracy-drop", "1", "-q", "-o", out])
    text = capsys.readouterr().out
    assert rc == 0 and os.path.exists(out) and "within" in text
    # the model was trained on every row of this file: the report must say so
    assert "trained on every row of this file" in text


def test_predict_reads_new_rows_typed_as_in_training(credit_model, tmp_path, capsys):
    """One stray text value in a numeric column of new rows is a one-line error naming the
    file row and column (the column was numeric in training), not a silent re-typing."""
    lines = open(CREDIT, encoding="utf-8").read().splitlines()
    header = lines[0].split(",")
    col = header.index("Income")
    row = lines[5].split(",")
    row[col] = "n/a?"
    lines[5] = ",".join(row)
    bad = tmp_path / "new.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["predict", credit_model, str(bad), "-o", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "row 6" in err and "'Income'" in err and "'n/a?'" in err
    assert "declared numeric" in err and "--numeric" not in err  # flags predict does not have


# -- pipes and data sets ---------------------------------------------------------------------
def test_a_closed_pipe_ends_predict_quietly(credit_model):
    p = subprocess.Popen(
        [sys.executable, "-m", "lepton_nn", "predict", credit_model, CREDIT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    p.stdout.readline()
    p.stdout.close()  # like `| head -1`
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0
    assert err == ""


def test_every_bundled_data_set_loads_and_exports(tmp_path, capsys):
    assert set(datasets.names()) >= {"credit_data", "breast_cancer", "digits"}
    assert {"italy_power_demand", "basic_motions"} <= set(datasets.names())
    assert len(datasets.load("digits")) == 1797
    series = datasets.load("italy_power_demand")
    assert series["train"][0].shape == (67, 24, 1) and series["test"][0].shape == (1029, 24, 1)
    assert series["test"][1].shape == (1029,)
    motions = datasets.load("basic_motions")
    assert motions["train"][0].shape == (40, 100, 6)
    assert main(["datasets", "export", "credit_data", str(tmp_path)]) == 0
    written = tmp_path / "credit_data.csv"
    assert written.read_bytes() == open(CREDIT, "rb").read()
    assert main(["datasets", "export", "basic_motions", str(tmp_path)]) == 0
    assert (tmp_path / "basic_motions.csv").read_bytes()[:6] == b"series"
    assert main(["datasets", "export", "nope", str(tmp_path)]) == 2


def test_the_list_of_data_sets_says_which_are_time_series(capsys):
    """It gave names and targets only: a time series's long-form CSV (a row per step) went to
    'lepton-nn train' as a table of steps without a word."""
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in datasets.names():
        line = next(x for x in lines if x.startswith(name + " "))
        assert ("time series" in line) == (name in datasets.SERIES), line
    assert any("not for 'lepton-nn train'" in x for x in lines)


def test_the_bundled_data_sets_carry_their_licences():
    text = open(os.path.join(os.path.dirname(datasets.__file__), "LICENSE-DATA.md")).read()
    for name in datasets.names():
        assert f"`{os.path.basename(datasets.path(name))}`" in text, name
