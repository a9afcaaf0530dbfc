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
    assert set(cases) == {
        ("lepton_nn:reference", "step loop"),
        ("numpy", "hand-written"),
        ("numpy", "GEMMs only"),
    }
    for c in cases.values():
        assert "error" not in c
        assert len(c["rounds"]) == 2 and c["samples_per_s"]["median"] > 0
    assert res["machine"]["logical_cpus"] >= 1
    # the host's state read at the start and end of the table, beside it (bench.hoststate)
    assert "Host at the start of the rounds: " in md and "uneven host" in md
    host = cases["numpy", "hand-written"]["host"]
    assert set(host) == {"start", "end"} and all(host[k].get("speed") for k in host)
    assert res["host_check"]["speed_uneven"] > 0


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


def _quick_w8(tmp_path, monkeypatch, workloads, against):
    from lepton_nn.backend import available

    monkeypatch.setattr(
        options, "QUICK", {"rounds": 2, "round_seconds": 0.02, "coldstart_repeats": 1}
    )
    out = tmp_path / "report"
    argv = ["bench", "--quick", "--workloads", workloads, "--against", against]
    argv += ["--threads", "1", "--backends", available()[0], "--out", str(out)]
    assert cli.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    return res, (out / "report.md").read_text(), f"lepton_nn:{available()[0]}"


def test_bench_quick_w8_cnn_lstm_gru_against_onnxruntime(tmp_path, monkeypatch, capsys):
    """Issue 23: W8 (CNN, LSTM, GRU inference at batch 1 and 64) runs our model and runtime
    and ONNX Runtime on the exported network, and the targets table has a row per case."""
    import pytest

    from lepton_nn.bench.workloads import NET_INFERENCE

    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    res, md, ours = _quick_w8(tmp_path, monkeypatch, "W8", "onnxruntime")
    capsys.readouterr()
    assert not res["phases"][0]["failed"], res["phases"][0]["failed"]
    by_wl: dict = {}
    for c in res["phases"][0]["cases"]:
        assert "error" not in c, c
        assert len(c["rounds"]) == 2 and c["samples_per_s"]["median"] > 0
        assert c["latency"] == (NET_INFERENCE[c["workload"]][1] == 1)  # per call at batch 1
        by_wl.setdefault(c["workload"], set()).add((c["engine"], c["variant"]))
    want = {(ours, "model(x)"), (ours, "runtime"), ("onnxruntime", "InferenceSession")}
    assert by_wl == {w: want for w in options.W8_CASES}

    from lepton_nn.bench.targets import target_rows

    rows = {r["workload"]: r for r in target_rows(res)}
    for w in options.W8_CASES:
        r = rows[w]
        assert r["ours_variant"] == "runtime" and r["peer"] == "onnxruntime · InferenceSession"
        assert r["target"] == 1.0 and r["met"] == (r["ratio"] >= 1.0)
        assert f"| {w} | 1 | " in md  # its row in the report's targets table
    assert "W8 inference of the W3 CNN, batch 1 (latency)" in md
    assert "W8 inference of a GRU of the W4 LSTM's size, batch 64" in md
    assert "DIFFER" not in md


def test_bench_quick_w8_without_onnxruntime(tmp_path, monkeypatch, capsys):
    """ONNX Runtime not installed: it is listed as skipped, our W8 cases still run, and no
    target row is made up for them."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    res, md, ours = _quick_w8(tmp_path, monkeypatch, "W8gru1", "onnxruntime")
    capsys.readouterr()
    assert res["skipped_engines"] == {"onnxruntime": "not installed"}
    assert "onnxruntime: skipped (not installed)" in md
    cases = res["phases"][0]["cases"]
    assert {(c["engine"], c["variant"]) for c in cases} == {(ours, "model(x)"), (ours, "runtime")}
    assert all("error" not in c and c["latency_us"]["median"] > 0 for c in cases)
    assert "| W8gru1 |" not in md
