"""The lepton-nn command: every subcommand end to end, and clean failures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lepton_nn.cli import main
from lepton_nn.datasets import path as data_path

CREDIT = str(data_path("credit_data.csv"))


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    """A 600-row slice of the credit data (fast to train on)."""
    lines = open(CREDIT, encoding="utf-8").read().splitlines()
    p = tmp_path_factory.mktemp("cli") / "small.csv"
    p.write_text("\n".join(lines[:601]) + "\n", encoding="utf-8")
    return str(p)


@pytest.fixture(scope="module")
def trained(small_csv, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("model") / "m.lnn")
    rc = main(
        [
            "train",
            small_csv,
            "--target",
            "Status",
            "--positive",
            "bad",
            "--hidden",
            "16",
            "--epochs",
            "30",
            "-o",
            out,
        ]
    )
    assert rc == 0
    return out


def test_train_prints_validation_metrics(small_csv, tmp_path, capsys):
    out = str(tmp_path / "m.lnn")
    assert (
        main(["train", small_csv, "--target", "Status", "--epochs", "5", "--cv", "2", "-o", out])
        == 0
    )
    text = capsys.readouterr().out
    assert "2-fold stratified cross-validation" in text and "roc_auc" in text and "saved" in text


def test_evaluate_json_has_the_documented_keys(trained, small_csv, capsys):
    assert main(["evaluate", trained, small_csv, "--target", "Status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    want = {"task", "n", "accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "ks"}
    want |= {"log_loss", "confusion_matrix", "threshold", "positive"}
    assert want <= set(report), want - set(report)
    assert report["task"] == "binary" and report["positive"] == "bad"
    assert report["n"] == 600
    assert np.asarray(report["confusion_matrix"]).sum() == 600
    assert 0.6 < report["accuracy"] <= 1 and 0.6 < report["roc_auc"] <= 1
    assert 0 < report["pr_auc"] <= 1 and report["log_loss"] > 0


def test_predict_writes_labels_and_probabilities(trained, small_csv, tmp_path):
    out = tmp_path / "pred.csv"
    assert main(["predict", trained, small_csv, "-o", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "prediction,p_good,p_bad"
    assert len(rows) == 601
    label, p_good, p_bad = rows[1].split(",")
    assert label in ("good", "bad")
    assert abs(float(p_good) + float(p_bad) - 1) < 1e-5


def test_info_lists_backends_and_kernels(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "active backend" in text and "adam_step" in text
    from lepton_nn import get_num_threads

    assert f"threads: {get_num_threads()} " in text


def test_info_of_a_model_file_prints_its_manifest(trained, capsys):
    assert main(["info", trained, "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["kind"] == "tabular" and manifest["task"] == "binary"
    assert manifest["n_arrays"] > 0
    assert main(["info", trained]) == 0
    text = capsys.readouterr().out
    assert "tabular" in text and "binary" in text and "arrays" in text


@pytest.mark.parametrize(
    "content, expect",
    [
        ("a,b,Status\n1,2,good\n3,4\n", "row 3"),  # ragged
        ("a,b,Status\n" + "1,x,good\n2,3,bad\n" * 6, None),  # fine: b becomes categorical
        ("a,b\n1,2\n", "Status"),  # no target column
        ("a,Status\n1,good\n2,good\n", "single class"),
    ],
)
def test_bad_csv_gives_one_line_and_nonzero_exit(tmp_path, capsys, content, expect):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    rc = main(
        ["train", str(p), "--target", "Status", "--epochs", "1", "-o", str(tmp_path / "m.lnn")]
    )
    err = capsys.readouterr().err
    if expect is None:
        assert rc == 0
        return
    assert rc == 2
    assert err.startswith("lepton-nn: error:") and expect in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_damaged_model_file_is_refused_cleanly(tmp_path, small_csv, capsys):
    bad = tmp_path / "bad.lnn"
    bad.write_bytes(b"PK\x03\x04 definitely not a model")
    assert main(["predict", str(bad), small_csv]) == 2
    assert "lepton-nn: error:" in capsys.readouterr().err


def test_missing_file_is_a_clean_error(capsys):
    assert main(["evaluate", "/nonexistent/m.lnn", CREDIT, "--target", "Status"]) == 2
    assert "No such file" in capsys.readouterr().err


def test_python_dash_m_runs_the_command():
    r = subprocess.run(
        [sys.executable, "-m", "lepton_nn", "--version"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.startswith("lepton_nn ")


def test_demo_runs_and_runtime_agrees(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "credit.lnn")]) == 0
    text = capsys.readouterr().out
    assert "5-fold stratified cross-validation" in text
    assert "held-out test" in text and "match" in text


def test_tune_grid_prints_a_ranked_table(small_csv, capsys):
    rc = main(
        [
            "tune",
            small_csv,
            "--target",
            "Status",
            "--positive",
            "bad",
            "--cv",
            "2",
            "--jobs",
            "1",
            "--grid",
            "lr=1e-3,1e-2;hidden=8,16x8",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "4 configurations x 2 folds" in out
    ranks = [line.split()[0] for line in out.splitlines() if line[:4].strip().isdigit()]
    assert ranks == ["1", "2", "3", "4"]
    assert any(line.startswith("best: ") for line in out.splitlines())
    assert out.splitlines()[-1].startswith("the same in train: --lr ")


def test_tune_random_search_in_a_process_pool(small_csv, capsys):
    assert (
        main(["tune", small_csv, "--target", "Status", "--cv", "2", "--trials", "2", "--jobs", "2"])
        == 0
    )
    assert "2 configurations x 2 folds" in capsys.readouterr().out


def test_tune_rejects_a_bad_grid(small_csv, capsys):
    assert main(["tune", small_csv, "--target", "Status", "--grid", "momentum=0.9"]) == 2
    assert "tunable" in capsys.readouterr().err


def test_progress_line_is_printed_before_the_search_sees_the_result():
    """A pool runs done-callbacks after waking waiters: the search must wait for the line."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from lepton_nn.commands.tune import ProgressExecutor

    class SlowOut:  # a terminal that takes a while to write
        def __init__(self):
            self.lines = []

        def write(self, text):
            time.sleep(0.2)
            self.lines.append(text)

        def flush(self):
            pass

    out = SlowOut()
    with ThreadPoolExecutor(1) as pool:
        ex = ProgressExecutor(pool, [{"lr": 0.1}], 1, "accuracy", out=out)
        # the task outlasts submit(), so the callback runs on the pool's thread
        fut = ex.submit(lambda: time.sleep(0.3) or {"scores": {"accuracy": 0.5}})
        assert fut.result(timeout=5) == {"scores": {"accuracy": 0.5}}
        assert any(line.startswith("trial 1/1") for line in out.lines)
        failing = ex.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=5)
