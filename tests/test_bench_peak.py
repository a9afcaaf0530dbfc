"""``lepton-nn bench``: the fp32 GEMM peak, each training case's GFLOP/s and fraction of it,
the load limit (workloads rerun above it), and workers in another interpreter (``--python``)."""

from __future__ import annotations

import json
import sys

import pytest

from lepton_nn import cli
from lepton_nn.bench import options, runner
from lepton_nn.bench.machine import gemm_peak
from lepton_nn.bench.workloads import training_flops


def test_training_flops_counts_forward_and_both_gradients():
    # W1 32-64-32-1: forward 2(32*64 + 64*32 + 32), dW the same, dX all but the first layer
    fwd = 2 * (32 * 64 + 64 * 32 + 32 * 1)
    assert training_flops("W1") == 2 * fwd + 2 * (64 * 32 + 32 * 1)
    # W3: conv1 1->16 on 28x28 (no dX), conv2 16->32 on 14x14, Dense 32*7*7 -> 10
    c1, c2, d = 2 * 28 * 28 * 16 * 9, 2 * 14 * 14 * 32 * 16 * 9, 2 * 32 * 7 * 7 * 10
    assert training_flops("W3") == 2 * c1 + 3 * c2 + 3 * d
    # W4: 50 steps, 8 features, 64 units: forward and dW 2T(F+U)4U each, dh 2T U 4U
    t, f, u = 50, 8, 64
    assert training_flops("W4") == 2 * (2 * t * (f + u) * 4 * u) + 2 * t * u * 4 * u + 3 * 640 * 2
    with pytest.raises(ValueError, match="not a training workload"):
        training_flops("W5b1")


def test_gemm_peak_reports_the_fastest_sample():
    p = gemm_peak(repeats=3, target=0.001, n=64)
    assert p["samples"] == 3 and p["min"] <= p["median"] <= p["best"]
    assert p["best"] > 0 and "64" in p["how"]


def test_python_option_is_validated():
    ns = type("A", (), {"python": ["tensorflow=/no/such/python"]})()
    with pytest.raises(ValueError, match="not an executable"):
        options.Options.from_args(ns)
    ns.python = ["tensorflow"]
    with pytest.raises(ValueError, match="ENGINE=PATH"):
        options.Options.from_args(ns)
    ns.python = [f"tf={sys.executable}"]
    assert options.Options.from_args(ns).python == {"tensorflow": sys.executable}


def test_peak_fraction_load_rerun_and_other_interpreter(tmp_path, monkeypatch, capsys):
    """W1 on the reference backend with the hand-written NumPy engine's worker started
    through ``--python numpy=<interpreter>``; the load average reads above the limit, so
    the workload runs twice and the report says so; every training case has GFLOP/s and a
    fraction of the measured GEMM peak."""
    monkeypatch.setattr(
        options,
        "QUICK",
        {"rounds": 2, "round_seconds": 0.02, "coldstart_repeats": 1, "reruns": 1},
    )
    calls = []
    run_workload = runner._run_workload

    def counted(*a, **k):
        calls.append(1)
        return run_workload(*a, **k)

    monkeypatch.setattr(runner, "_run_workload", counted)  # loaded until the first attempt
    monkeypatch.setattr(runner, "loadavg", lambda: [3.0, 2.0, 1.0] if not calls else [0.5] * 3)
    # other processes' CPU during the first attempt's rounds (what decides where /proc has it)
    monkeypatch.setattr(runner, "foreign_cpus", lambda a, b, s: 2.0 if len(calls) < 2 else 0.0)
    out = tmp_path / "report"
    argv = ["bench", "--quick", "--workloads", "W1", "--against", "none", "--threads", "1"]
    argv += ["--backends", "reference", "--python", f"numpy={sys.executable}"]
    argv += ["--max-load", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    capsys.readouterr()
    res = json.loads((out / "results.json").read_text())
    ph = res["phases"][0]
    assert ph["gemm_peak"]["best"] > 0
    cases = ph["cases"]
    assert {c["engine"] for c in cases} == {"lepton_nn:reference", "numpy"}
    for c in cases:
        assert "error" not in c, c
        assert c["load"]["attempts"] == 2 and not c["load_above_limit"]
        g = c["gflop_per_s"]["median"]
        assert g == pytest.approx(c["samples_per_s"]["median"] * training_flops("W1") / 1e9)
        assert c["peak_fraction"] == pytest.approx(g / ph["gemm_peak"]["best"])
    md = (out / "report.md").read_text()
    assert "fp32 GEMM peak, 1 thread(s)" in md and "% of GEMM peak" in md
    assert "2 attempt(s)" in md and f"--python numpy={sys.executable}" in md


def test_peer_missing_in_its_interpreter_is_skipped(tmp_path):
    opts = options.Options(against=["tensorflow"], backends=["reference"], threads=[1])
    code = tmp_path / "py"
    code.write_text("#!/bin/sh\nexit 1\n")
    code.chmod(0o755)
    opts.python = {"tensorflow": str(code)}
    engines, skipped = runner._engines(opts)
    assert "tensorflow" not in engines and "not installed in" in skipped["tensorflow"]


@pytest.mark.parametrize("workload", ["W1", "W2"])
def test_gemms_only_case_does_the_flops_training_flops_counts(workload, monkeypatch):
    """The numpy 'GEMMs only' case multiplies exactly the shapes training_flops counts."""
    import numpy as np

    from lepton_nn.bench.cases import build_cases

    case = next(c for c in build_cases("numpy", workload) if c.variant == "GEMMs only")
    done, matmul = [], np.matmul

    def counting(a, b, out=None):
        done.append(2 * a.shape[0] * a.shape[1] * b.shape[1])
        return matmul(a, b, out=out)

    monkeypatch.setattr(np, "matmul", counting)
    case.run(1)
    assert sum(done) == training_flops(workload) * case.samples
