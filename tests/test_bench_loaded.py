"""The benchmark report marks the tables measured on a loaded machine (lepton_nn.bench.loaded):
a 1-minute load average above 1 during a workload, or a fp32 GEMM peak per thread far below
the run's best (a core lost to a neighbour). Fabricated results, no timing."""

from __future__ import annotations

import json

import pytest

from lepton_nn.bench import loaded, report


def _case(wl, engine, variant, rate, load):
    return {
        "workload": wl, "threads": 0, "engine": engine, "variant": variant, "worker": engine,
        "samples_per_s": {"median": rate, "min": rate * 0.9, "max": rate * 1.1, "n": 3},
        "checksum": "abcd1234", "load": {"before": [load, 0.5, 0.5], "after": [0.4, 0.5, 0.5],
        "attempts": 1},
    }  # fmt: skip


def _phase(threads, peaks, loads):
    """A phase at ``threads`` with GEMM peak measurements ``peaks`` (GFLOP/s, before and
    after) and W1, W2 tables whose 1-minute load before the rounds is ``loads[wl]``."""
    cases = []
    for wl in ("W1", "W2"):
        cases += [
            _case(wl, "lepton_nn:cython", "step loop", 5000.0 * threads, loads[wl]),
            _case(wl, "torch", "standard loop", 3000.0 * threads, loads[wl]),
        ]
    pk = [{"best": p, "median": p, "min": p, "how": "test"} for p in peaks]
    return {
        "threads": threads, "workers": {}, "failed": {}, "cases": cases, "notes": [],
        "gemm_peak": max(pk, key=lambda p: p["best"]) if pk else None, "gemm_peaks": pk,
    }  # fmt: skip


def _res(phases, coldstart_load=None):
    res = {
        "command": "lepton-nn bench --workloads W1,W2", "date": "2026-12-07T10:00:00+00:00",
        "seconds": 60.0, "load_before": [0.5] * 3, "load_after": [0.5] * 3,
        "options": {"quick": True, "rounds": 3, "round_seconds": 0.1, "max_load": 1.0,
                    "reruns": 0, "workloads": ["W1", "W2"], "backends": ["cython"],
                    "threads": [p["threads"] for p in phases]},
        "machine": {"cpu": "test", "logical_cpus": 2, "isa": ["avx2"], "platform": "test",
                    "blas": [], "environment": {}, "python": "3", "numpy": "2",
                    "lepton_nn": "0", "backends_available": ["cython"]},
        "skipped_engines": {}, "phases": phases,
    }  # fmt: skip
    if coldstart_load is not None:
        res["options"]["workloads"].append("W7")
        res["coldstart"] = {"lepton_nn": {"wall": {"median": 0.2, "min": 0.2, "max": 0.3}}}
        res["coldstart_load"] = {"before": [coldstart_load, 0.5, 0.5], "after": [0.5] * 3}
    return res


QUIET = {"W1": 0.3, "W2": 0.6}


def _section(md: str, heading: str) -> str:
    """The text of the report section whose heading starts with ``heading``."""
    start = md.index("## " + heading)
    end = md.find("\n## ", start + 1)
    return md[start : end if end > 0 else len(md)]


def _tables(md: str) -> dict[tuple[str, int], str]:
    """Each workload table's section by (workload, threads)."""
    out = {}
    for part in md.split("\n## ")[1:]:
        head = part.split("\n")[0]
        if head.startswith("W") and "thread(s)" in head:
            out[head.split()[0], int(head.rsplit("— ", 1)[1].split()[0])] = part
    return out


def test_a_quiet_run_is_not_marked():
    res = _res([_phase(2, [180.0, 176.0], QUIET), _phase(1, [100.0, 98.0], QUIET)])
    assert loaded.load_warnings(res) == []
    assert loaded.peak_ratios(res) == {2: 0.88, 1: 0.98}
    md = report.render_markdown(res)
    assert "No table ran on a loaded machine" in md
    assert "Loaded machine" not in md and "(loaded)" not in md
    assert "[loaded machine]" not in report.console_summary(res)


def test_a_table_whose_load_average_was_above_one_is_marked_alone():
    res = _res([_phase(2, [180.0, 176.0], {"W1": 0.3, "W2": 1.7}), _phase(1, [100.0], QUIET)])
    (w,) = loaded.load_warnings(res)
    assert (w["workload"], w["threads"], w["load"]) == ("W2", 2, 1.7)
    md = report.render_markdown(res)
    assert "1 of 4 tables ran on a loaded machine" in md
    tables = _tables(md)
    assert set(tables) == {("W1", 2), ("W2", 2), ("W1", 1), ("W2", 1)}
    marked = tables["W2", 2]  # the warning sits between the heading and the table
    assert marked.index("Loaded machine") < marked.index("| engine")
    assert "load average 1.70 (> 1)" in marked
    assert not any("Loaded machine" in t for k, t in tables.items() if k != ("W2", 2))
    targets = _section(md, "Targets")
    rows = {tuple(ln.split(" | ")[:2]): ln for ln in targets.splitlines() if ln.startswith("| W")}
    assert rows["| W2", "2"].endswith("| yes (loaded) |")
    assert not any("loaded" in ln for k, ln in rows.items() if k != ("| W2", "2"))
    lines = report.console_summary(res).splitlines()
    assert [("t=2" in ln and ln.startswith("  W2")) for ln in lines] == [
        "[loaded machine]" in ln for ln in lines
    ]


def test_a_collapsed_gemm_peak_marks_every_table_of_its_phase():
    """Two threads giving 1.1x one thread's GEMM after the workloads (1.8x before): the
    second core was taken while they ran; the one-thread phase stays unmarked. 1.2x is the
    bound (60 % of the best per thread), not marked."""
    res = _res([_phase(2, [180.0, 120.0], QUIET), _phase(1, [100.0, 99.0], QUIET)])
    assert loaded.peak_ratios(res)[2] == 0.6 and loaded.load_warnings(res) == []  # at the bound
    res = _res([_phase(2, [180.0, 110.0], QUIET), _phase(1, [100.0, 99.0], QUIET)])
    warns = loaded.load_warnings(res)
    assert {(w["workload"], w["threads"]) for w in warns} == {("W1", 2), ("W2", 2)}
    assert all(w["load"] == max(QUIET[w["workload"]], 0.4) for w in warns)  # before, after
    assert all(w["peak_ratio"] == pytest.approx(0.55) for w in warns)
    md = report.render_markdown(res)
    assert "2 of 4 tables ran on a loaded machine" in md
    assert "fp32 GEMM peak per thread measured around these rounds at 55 %" in md


def test_the_run_best_is_per_thread_and_old_results_still_read():
    """A one-thread phase alone (old results: the better peak only, no list) is its own
    best; a two-thread phase at 1x one thread's GEMM is marked."""
    ph = _phase(1, [100.0], QUIET)
    del ph["gemm_peaks"]
    assert loaded.peak_ratios(_res([ph])) == {1: 1.0}
    res = _res([_phase(2, [100.0], QUIET), _phase(1, [100.0], QUIET)])
    assert loaded.peak_ratios(res) == {2: 0.5, 1: 1.0}
    assert len(loaded.load_warnings(res)) == 2
    no_peak = _phase(1, [], {"W1": 0.2, "W2": 0.2})  # inference only: no GEMM peak measured
    assert loaded.peak_ratios(_res([no_peak])) == {}
    assert loaded.load_warnings(_res([no_peak])) == []


def test_the_cold_start_is_judged_by_its_own_load():
    res = _res([_phase(1, [100.0], QUIET)], coldstart_load=2.5)
    (w,) = loaded.load_warnings(res)
    assert (w["workload"], w["threads"], w["load"]) == ("W7", 1, 2.5)
    assert "Loaded machine" in _section(report.render_markdown(res), "W7 cold start")
    assert loaded.load_warnings(_res([_phase(1, [100.0], QUIET)], coldstart_load=0.9)) == []


def test_results_json_records_the_check(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "write_charts", lambda res, out: [])
    res = _res([_phase(2, [180.0, 176.0], {"W1": 1.2, "W2": 0.5}), _phase(1, [100.0], QUIET)])
    paths = report.write_report(res, str(tmp_path))
    got = json.loads(open(paths["json"], encoding="utf-8").read())["load_check"]
    assert got["quiet_load"] == 1.0 and got["peak_collapse"] == 0.6
    assert got["peak_ratio"] == [{"threads": 2, "ratio": 0.88}, {"threads": 1, "ratio": 1.0}]
    assert [(w["workload"], w["threads"]) for w in got["loaded"]] == [("W1", 2)]
    assert "NO (loaded)" in open(paths["markdown"], encoding="utf-8").read()  # W1 at 2 threads


def test_other_processes_cpu_decides_over_the_load_average():
    """Where the CPU other processes used was measured, it decides: a 2-thread table drives
    the load average to ~2 by itself (not loaded), while 0.5 CPUs of someone else's work
    under a load average of 0.8 is."""
    ph = _phase(2, [180.0, 178.0], {"W1": 1.9, "W2": 0.8})
    for c in ph["cases"]:
        c["load"]["foreign_cpus"] = 0.05 if c["workload"] == "W1" else 0.5
    warnings = loaded.load_warnings(_res([ph]))
    assert [(w["workload"], w["foreign_cpus"]) for w in warnings] == [("W2", 0.5)]
    assert "other processes used 0.50 CPUs" in warnings[0]["reasons"][0]
    assert loaded.load_check(_res([ph]))["quiet_foreign_cpus"] == loaded.QUIET_FOREIGN


# a child that burns CPU on request: "spin S" runs until S more seconds of its own CPU time
# are used, then answers its CPU time so far and waits (blocked: it uses none in between)
BURNER = """
import sys, time
for line in sys.stdin:
    stop = time.process_time() + float(line.split()[1])
    while time.process_time() < stop:
        pass
    print(time.process_time(), flush=True)
"""


def test_cpu_seconds_tells_other_processes_from_ours():
    """A child's CPU seconds count as ours when its pid is watched and as another process's
    work when not (a real process, /proc). Both readings are taken at the same two moments,
    with the child idle at each, around a known amount of its CPU work (0.6 s, however long
    the machine takes to give it): on a loaded machine the busy time of the whole machine
    is capped by its cores, so readings of two different intervals (the old form of this
    test) could differ by less than the child's work and failed; here the machine's other
    activity is the same in both and cancels exactly."""
    import subprocess
    import sys
    import time

    from lepton_nn.bench.machine import cpu_seconds, foreign_cpus

    if cpu_seconds() is None:
        pytest.skip("no /proc/stat here")
    p = subprocess.Popen(
        [sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    def burn(seconds):
        p.stdin.write(f"spin {seconds}\n")
        p.stdin.flush()
        return float(p.stdout.readline())

    try:
        c0 = burn(0.0)  # started and idle
        a = cpu_seconds([p.pid]), cpu_seconds([])
        t0 = time.perf_counter()
        c1 = burn(0.6)
        b = cpu_seconds([p.pid]), cpu_seconds([])
        wall = time.perf_counter() - t0
    finally:
        p.stdin.close()
        p.wait()
    used = c1 - c0  # the child's CPU seconds, by its own clock
    watched = foreign_cpus(a[0], b[0], wall) * wall
    unwatched = foreign_cpus(a[1], b[1], wall) * wall
    assert used >= 0.6
    # the two differ by the child's work, as /proc counts it (clock ticks: 0.05 s of slack)
    assert unwatched - watched == pytest.approx(used, abs=0.05)
    # unwatched, that work is another process's, on top of whatever else ran
    assert unwatched >= used - 0.1
