"""``lepton-nn bench --quick`` on one tiny workload, without peers, writes its reports."""

from __future__ import annotations

import json

from lepton_nn import bench, cli


def test_bench_quick_writes_markdown_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        bench, "QUICK", {"rounds": 2, "round_seconds": 0.02, "coldstart_repeats": 1}
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
