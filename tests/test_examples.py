"""The examples run as a new user runs them (from an empty folder, on the data bundled with
the package, nothing outside it), and reach issue 5's quality bar with their own settings."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PKG_PARENT

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_example_runs_from_an_empty_folder_with_a_short_setting(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PKG_PARENT)}  # the package as imported here
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--epochs", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "test accuracy" in r.stdout
    assert list(tmp_path.iterdir()) == []  # it leaves nothing behind


def _run(name: str, *args: str) -> float:
    sys.path.insert(0, str(EXAMPLES))  # examples import their helper module _serve
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.main(list(args))
    finally:
        sys.path.remove(str(EXAMPLES))


def test_digits_cnn_reaches_98_percent():
    assert _run("digits_cnn") >= 0.98


def test_digits_cnn_int8_served_by_the_runtime_keeps_98_percent():
    assert _run("digits_cnn", "--int8", "static") >= 0.98


def test_italy_power_rnn_reaches_95_percent():
    assert _run("italy_power_rnn") >= 0.95


def test_italy_power_rnn_pruned_to_70_percent_keeps_95_percent():
    """Gradual magnitude pruning of every weight matrix, the GRU's included, while it trains."""
    assert _run("italy_power_rnn", "--prune", "0.7") >= 0.95


def test_italy_power_rnn_int8_served_by_the_runtime_keeps_95_percent():
    assert _run("italy_power_rnn", "--int8", "dynamic") >= 0.95


def test_basic_motions_rnn_reaches_95_percent():
    assert _run("basic_motions_rnn") >= 0.95


def test_an_exported_file_gives_the_same_series_as_the_bundled_copy(tmp_path):
    import numpy as np

    from lepton_nn import datasets

    path = datasets.export("italy_power_demand", tmp_path)
    a, b = datasets.load_series(path), datasets.load("italy_power_demand")
    for split in ("train", "test"):
        np.testing.assert_array_equal(a[split][0], b[split][0])
        np.testing.assert_array_equal(a[split][1], b[split][1])
