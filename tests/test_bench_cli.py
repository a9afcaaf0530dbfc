"""``lepton-nn bench --quick`` on one tiny workload, without peers, writes its reports."""

from __future__ import annotations

import json

from lepton_nn import cli
from lepton_nn.bench import options


def test_bench_quick_writes_markdown_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        options, "QUICK", {"rounds": 2, "round_seconds": 0.02, "coldstart_repeats": 1}
    )
    out = tmp_path / "report"
    argv = [
        "bench",
        "--quick",
        "--workloads",
        "W1",
        "--against",
        "none",
        "--threads",
        "1",
        "--backends",
        "reference",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    assert "report.md" in capsys.readouterr().out

    md = (out / "report.md").read_text()
    assert "# lepton_nn benchmark report" in md
    assert "W1 tabular MLP training" in md and "numpy · hand-written" in md
    assert "identical" in md  # same data checksum in every worker process

    res = json.loads((out / "results.json").read_text())
    cases = {(c["engine"], c["variant"]): c for c in res["phases"][0]["cases"]}
    assert set(cases) == {("lepton_nn:reference", "step loop"), ("numpy", "hand-written")}
    for c in cases.values():
        assert "error" not in c
        assert len(c["rounds"]) == 2 and c["samples_per_s"]["median"] > 0
    assert res["machine"]["logical_cpus"] >= 1


def test_bench_rejects_unknown_names(capsys):
    assert cli.main(["bench", "--against", "mxnet"]) == 2
    assert "unknown peer" in capsys.readouterr().err


def test_bench_quick_conv_lstm_and_matmul(tmp_path, monkeypatch, capsys):
    """W3, W4 and one W6 size, the best backend only, no peers: every case runs and the
    report shows samples/s for training and GOP/s for the matmul."""
    from lepton_nn.backend import available

    monkeypatch.setattr(
        options, "QUICK", {"rounds": 2, "round_seconds": 0.02, "coldstart_repeats": 1}
    )
    best = available()[0]
    out = tmp_path / "report"
    argv = ["bench", "--quick", "--workloads", "W3,W4,W6m1", "--against", "none"]
    argv += ["--threads", "1", "--backends", best, "--out", str(out)]
    assert cli.main(argv) == 0
    capsys.readouterr()

    res = json.loads((out / "results.json").read_text())
    assert not res["phases"][0]["failed"], res["phases"][0]["failed"]
    cases = res["phases"][0]["cases"]
    by_wl = {}
    for c in cases:
        assert "error" not in c, c
        assert len(c["rounds"]) == 2 and c["samples_per_s"]["median"] > 0
        by_wl.setdefault(c["workload"], set()).add((c["engine"], c["variant"]))
    ours = f"lepton_nn:{best}"
    assert (ours, "step loop") in by_wl["W3"] and (ours, "step loop") in by_wl["W4"]
    assert ("numpy", "float32 matmul") in by_wl["W6m1"]
    if best != "reference":  # the int8 kernels run on a compiled backend
        assert {(ours, v) for v in ("qgemm_s32", "qlinear")} <= by_wl["W6m1"]
    gemm = [c for c in cases if c["workload"] == "W6m1"]
    assert all(c["unit"] == "op" and c["gop_per_s"]["median"] > 0 for c in gemm)

    md = (out / "report.md").read_text()
    assert "W3 small CNN training" in md and "W4 LSTM training" in md
    assert "W6 matrix multiply (1, 1024) x (1024, 1024)" in md and "median GOP/s" in md
    assert "DIFFER" not in md


def test_bench_modules_import_no_peer():
    """Floor 8: every module of the harness imports without loading a peer library (each is
    imported only inside its own adapter's functions)."""
    import subprocess
    import sys

    code = (
        "import pkgutil, sys, importlib\n"
        "import lepton_nn.bench as b\n"
        "names = [m.name for m in pkgutil.walk_packages(b.__path__, 'lepton_nn.bench.')]\n"
        "for n in names:\n"
        "    if n != 'lepton_nn.bench.__main__':\n"
        "        importlib.import_module(n)\n"
        "peers = ('torch', 'tensorflow', 'keras', 'onnx', 'onnxruntime', 'matplotlib')\n"
        "print(len(names), sorted(p for p in peers if p in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, loaded = out.stdout.split(" ", 1)
    assert int(n) >= 15 and loaded.strip() == "[]", out.stdout


def test_worker_entry_without_arguments_prints_usage():
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "lepton_nn.bench"], capture_output=True, text=True)
    assert p.returncode == 2 and "runs workers only" in p.stderr
