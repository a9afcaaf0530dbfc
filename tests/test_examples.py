"""The examples reach issue 5's quality bar on the real data sets (skipped without the data)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _run(name: str, csv: str, *args: str) -> float:
    if not (DATA / csv).exists():
        pytest.skip(f"{csv} not found beside the repository")
    sys.path.insert(0, str(EXAMPLES))  # examples import their helper module _series
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.main(["--data", str(DATA), *args])
    finally:
        sys.path.remove(str(EXAMPLES))


def test_digits_cnn_reaches_98_percent():
    assert _run("digits_cnn", "digits.csv") >= 0.98


def test_digits_cnn_int8_served_by_the_runtime_keeps_98_percent():
    assert _run("digits_cnn", "digits.csv", "--int8", "static") >= 0.98


def test_italy_power_rnn_reaches_95_percent():
    assert _run("italy_power_rnn", "italy_power_demand.csv") >= 0.95


def test_italy_power_rnn_pruned_to_70_percent_keeps_95_percent():
    """Gradual magnitude pruning of every weight matrix, the GRU's included, while it trains."""
    assert _run("italy_power_rnn", "italy_power_demand.csv", "--prune", "0.7") >= 0.95


def test_italy_power_rnn_int8_served_by_the_runtime_keeps_95_percent():
    assert _run("italy_power_rnn", "italy_power_demand.csv", "--int8", "dynamic") >= 0.95


def test_basic_motions_rnn_reaches_95_percent():
    assert _run("basic_motions_rnn", "basic_motions.csv") >= 0.95
