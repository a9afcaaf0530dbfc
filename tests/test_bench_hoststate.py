"""The host's state beside each benchmark table (lepton_nn.bench.hoststate): the compiled
probe gives sane numbers, the reading degrades to notes (no probe, no affinity API, one CPU,
no round trip), and the "host uneven" mark follows its thresholds (a fake probe on a fake
two-CPU machine; no timing asserted)."""

from __future__ import annotations

import json
import math
import os

import pytest
from test_bench_loaded import QUIET, _phase, _res, _section, _tables

from lepton_nn.bench import hoststate, report


def test_the_compiled_probe_gives_sane_numbers():
    hp = pytest.importorskip("lepton_nn.kernels._hostprobe")
    ns = hp.spin(hoststate.ITERS, 5)
    assert len(ns) == 5 and all(math.isfinite(t) and 100 < t < 1e9 for t in ns)
    with pytest.raises(ValueError):
        hp.spin(0, 5)
    with pytest.raises(ValueError):
        hp.pingpong(0, 0, 10, 0.5)  # one CPU cannot ping itself
    state = hoststate.probe()
    assert "error" not in state and 0 < state["seconds"] < 5
    assert state["speed"] and all(0 < s["relative"] <= 1 and s["ns"] > 100 for s in state["speed"])
    assert max(s["relative"] for s in state["speed"]) == 1.0
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2 and hasattr(os, "sched_setaffinity"):
        assert [s["cpu"] for s in state["speed"]] == cpus[: hoststate.MAX_CPUS]
        rt = state["round_trip_ns"]
        if rt is None:  # the two threads were never on their CPUs together for 0.5 s
            assert "within the timeout" in " ".join(state["notes"]), state["notes"]
        else:
            assert rt["cpus"] == cpus[:2] and 0 < rt["p20"] <= rt["p50"] < 1e8
        trips = hp.pingpong(cpus[0], cpus[1], 50, 30.0)  # long enough under any load
        assert len(trips) == 50 and all(t > 0 for t in trips)
        assert os.sched_getaffinity(0) == set(cpus)  # both probes put this thread back
        with pytest.raises(OSError, match="CPU"):
            hp.pingpong(cpus[0], 1023, 10, 0.5)  # a CPU this process may not use
        loop, read = hp.corun(cpus[0], cpus[1], hoststate.ITERS, 20, 3, 1 << 16, 30.0)
        assert [len(x) for x in loop[:2] + read[:2]] == [20, 20, 3, 3]  # alone: every one
        # together: only repetitions the other CPU was looping through: up to 4x, maybe none
        assert all(len(x) <= 80 for x in loop[2:]) and all(len(x) <= 12 for x in read[2:])
        assert all(math.isfinite(t) and 100 < t < 1e9 for x in loop + read for t in x)
        assert hp.corun(cpus[0], cpus[1], 64, 5, 0, 0, 30.0)[1] == ([], [], [], [])  # no read
        assert os.sched_getaffinity(0) == set(cpus)
        with pytest.raises(ValueError):
            hp.corun(cpus[0], cpus[0], 64, 5, 0, 0, 0.5)
        with pytest.raises(ValueError):
            hp.corun(cpus[0], cpus[1], 64, 5, 2, 100, 0.5)  # a read below 4 KiB
        with pytest.raises(OSError, match="CPU 1023"):
            hp.corun(cpus[0], 1023, 64, 5, 0, 0, 0.5)
        assert os.sched_getaffinity(0) == set(cpus)
        co = state["corun"]
        if co is None:  # the two threads were never busy at once (a loaded machine)
            assert "co-run" in " ".join(state["notes"]), state["notes"]
        else:
            assert co["cpus"] == cpus[:2] and 0 < state["corun_speed"] <= 1
            assert state["corun_speed"] == co["loop"]["speed"]
            assert all(x > 100 for x in co["loop"]["solo_ns"] + co["loop"]["together_ns"])


class FakeProbe:
    """A two-CPU host where CPU ``c`` runs the loop in ``ns[c]`` and the read in
    ``10 * ns[c]``, both ``slow`` (loop, read) times slower while the other CPU runs them
    too, and the round trip takes ``rt`` ns; it reads which CPU it is pinned to from the fake
    affinity. ``together`` False: the co-run's together lists (each CPU's repetitions the
    other ran through) are empty, as when the two were never busy at once."""

    def __init__(self, ns, rt, machine, slow=(1.0, 1.0), together=True):
        self.ns, self.rt, self.machine, self.trips = ns, rt, machine, []
        self.slow, self.together, self.coruns = slow, together, []

    def spin(self, iters, reps):
        (cpu,) = self.machine.pinned
        return [self.ns[cpu] * (1 + 0.1 * (r % 3)) for r in range(reps)]  # min: ns[cpu]

    def corun(self, a, b, iters, reps, sreps, nbytes, timeout):
        self.coruns.append((a, b))

        def runs(n, scale, slow):  # alone on a, on b; together on a, on b
            alone = [[scale * self.ns[c] * (1 + 0.1 * (r % 2)) for r in range(n)] for c in (a, b)]
            both = [[x * slow for x in run] for run in alone] if self.together else [[], []]
            return (*alone, *both)

        return runs(reps, 1, self.slow[0]), runs(sreps, 10, self.slow[1])

    def pingpong(self, a, b, trips, timeout):
        self.trips.append((a, b))
        if self.rt is None:
            raise OSError("no answer from CPU 1 within the timeout")
        return [self.rt] * trips


class FakeMachine:
    def __init__(self, cpus):
        self.cpus, self.pinned = set(cpus), set(cpus)

    def getaffinity(self, pid):
        return set(self.pinned)

    def setaffinity(self, pid, cpus):
        if not set(cpus) <= self.cpus:
            raise OSError("invalid CPU")
        self.pinned = set(cpus)


@pytest.fixture
def fake(monkeypatch):
    def make(ns, rt=150.0, cpus=(0, 1), **kw):
        m = FakeMachine(cpus)
        monkeypatch.setattr(os, "sched_getaffinity", m.getaffinity, raising=False)
        monkeypatch.setattr(os, "sched_setaffinity", m.setaffinity, raising=False)
        return FakeProbe(ns, rt, m, **kw), m

    return make


@pytest.mark.parametrize(
    ("slow_ns", "rt", "marked"),
    [
        (1000.0, 150.0, False),  # even
        (1240.0, 290.0, False),  # 0.806 and 290 ns: just inside both thresholds
        (1260.0, 150.0, True),  # 0.794 < 0.8
        (1500.0, 150.0, True),  # the host's 1.5x slow state
        (1000.0, 310.0, True),  # the round trip's slow mode
    ],
)
def test_the_mark_follows_the_thresholds(fake, slow_ns, rt, marked):
    probe, machine = fake({0: 1000.0, 1: slow_ns}, rt)
    state = hoststate.probe(probe)
    assert machine.pinned == {0, 1}  # the affinity put back
    assert [(s["cpu"], s["ns"]) for s in state["speed"]] == [(0, 1000.0), (1, slow_ns)]
    assert state["relative_speed"] == round(1000.0 / slow_ns, 3)
    assert state["round_trip_ns"] == {"cpus": [0, 1], "p20": rt, "p50": rt}
    assert bool(hoststate.reasons(state)) is marked
    if slow_ns > 1250:
        assert "CPU 1 ran the fixed loop at" in hoststate.reasons(state)[0]


def _with_host(res, readings):
    """Give each table of ``res`` the host readings ``readings[(wl, threads)]`` (start, end)."""
    for ph in res["phases"]:
        for c in ph["cases"]:
            start, end = readings.get((c["workload"], ph["threads"]), (None, None))
            c["host"] = {"start": start, "end": end}
    return res


def test_the_report_shows_the_line_and_marks_the_uneven_table(fake, tmp_path, monkeypatch):
    even = hoststate.probe(fake({0: 1000.0, 1: 1050.0})[0])
    slow = hoststate.probe(fake({0: 1600.0, 1: 1000.0})[0])
    res = _res([_phase(2, [180.0, 176.0], QUIET), _phase(1, [100.0, 98.0], QUIET)])
    _with_host(res, {("W1", 2): (even, even), ("W2", 2): (even, slow),
                     ("W1", 1): (even, even), ("W2", 1): (even, even)})  # fmt: skip
    md = report.render_markdown(res)
    assert "1 of 4 tables ran on an uneven host" in md
    tables = _tables(md)
    for key, text in tables.items():
        assert "Host at the start of the rounds: speed CPU 0 1.00, CPU 1 0.95" in text
        assert ("Host uneven" in text) is (key == ("W2", 2))
    marked = tables["W2", 2]
    assert marked.index("Host uneven") < marked.index("| engine")
    assert "at the end of its rounds CPU 0 ran the fixed loop at 0.62" in marked
    assert "at the end: speed CPU 0 0.62, CPU 1 1.00 (fastest 1.0 us a loop); round trip " \
        "150 ns (p20 150); co-run speed 1.00 on the loop, 1.00 on a 1 MiB read each." \
        in marked  # fmt: skip
    rows = [ln for ln in _section(md, "Targets").splitlines() if ln.startswith("| W")]
    assert [("(host uneven)" in ln) for ln in rows] == [ln.startswith("| W2 | 2 ") for ln in rows]
    lines = report.console_summary(res).splitlines()
    assert ["[host uneven]" in ln for ln in lines] == [
        ln.startswith("  W2") and "t=2" in ln for ln in lines
    ]
    monkeypatch.setattr(report, "write_charts", lambda res, out: [])
    got = json.loads(open(report.write_report(res, str(tmp_path))["json"]).read())
    check = got["host_check"]
    assert check["speed_uneven"] == 0.8 and check["round_trip_slow_ns"] == 300.0
    assert [(w["workload"], w["threads"]) for w in check["uneven"]] == [("W2", 2)]
    host = got["phases"][0]["cases"][0]["host"]
    assert host["start"]["speed"][1] == {"cpu": 1, "ns": 1050.0, "relative": 0.952}
    assert host["start"]["corun_speed"] == 1.0 == host["start"]["corun_stream_speed"]
    assert host["start"]["corun"]["loop"]["together_ns"] == [1000.0, 1050.0]


def test_an_even_run_and_an_unprobed_run_say_so():
    res = _res([_phase(1, [100.0], QUIET)])
    assert "host's state (each CPU's speed, the cross-CPU round trip) was not measured" in (
        report.render_markdown(res)
    )
    note = "one CPU: no CPUs to compare, no round trip"
    even = {"speed": [{"cpu": 0, "ns": 900.0, "relative": 1.0}], "relative_speed": None,
            "round_trip_ns": None, "notes": [note]}  # fmt: skip
    _with_host(res, {("W1", 1): (even, even), ("W2", 1): (even, {"error": "not built"})})
    md = report.render_markdown(res)
    assert "No table ran on an uneven host" in md and "Host uneven" not in md
    assert "at the end: not built." in _tables(md)["W2", 1]
    assert "CPU 0 1.00 (fastest 0.9 us a loop); one CPU: no CPUs to compare" in md


def test_one_cpu_no_round_trip_no_affinity_no_probe(fake, monkeypatch):
    probe, _ = fake({0: 800.0}, cpus=(0,))
    state = hoststate.probe(probe)
    assert state["relative_speed"] is None and state["round_trip_ns"] is None
    assert probe.trips == [] and "one CPU" in state["notes"][0]
    assert hoststate.reasons(state) == []

    probe, _ = fake({0: 800.0, 1: 800.0}, rt=None)  # the helper never answers
    state = hoststate.probe(probe)
    assert state["round_trip_ns"] is None and state["relative_speed"] == 1.0
    assert "no round trip between CPUs 0 and 1 (no answer" in state["notes"][0]

    probe, machine = fake({0: 800.0, 1: 800.0})
    monkeypatch.delattr(os, "sched_setaffinity")
    machine.pinned = {0}  # wherever the loop happens to run
    state = hoststate.probe(probe)
    assert [s["cpu"] for s in state["speed"]] == [None] and state["round_trip_ns"] is None
    assert "no CPU affinity API" in state["notes"][0]
    assert hoststate.describe(state).startswith("speed 1.00 (fastest 0.8 us a loop)")

    monkeypatch.setattr(hoststate, "_module", lambda: None)
    state = hoststate.probe()
    assert "not built" in state["error"] and hoststate.reasons(state) == []


def test_the_runtime_does_not_load_the_probe():
    import subprocess
    import sys

    code = ("import sys, lepton_nn.runtime; "
            "print(any('_hostprobe' in m for m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__)))  # fmt: skip
    assert out.stdout.strip() == "False"


def test_brief_is_one_cell(fake):
    assert hoststate.brief(hoststate.probe(fake({0: 1000.0, 1: 1020.0}, rt=160.0)[0])) == (
        "0.98, 160 ns"
    )
    assert hoststate.brief(hoststate.probe(fake({0: 1000.0, 1: 1000.0}, rt=870.0)[0])) == (
        "1.00, 870 ns UNEVEN"
    )
    assert hoststate.brief(hoststate.probe(fake({0: 900.0}, cpus=(0,))[0])) == "-"
    assert hoststate.brief({"error": "not built"}) == "-" == hoststate.brief(None)


def test_the_probe_source_builds_off_linux(tmp_path):
    """kernels/hostprobe.c without __linux__ (macOS, Windows, BSD): the round trip becomes a
    function that says it is Linux only; the rest compiles as is."""
    import shutil
    import subprocess
    import sysconfig
    from pathlib import Path

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    src = Path(__file__).resolve().parents[1] / "kernels" / "hostprobe.c"
    inc = sysconfig.get_paths()["include"]
    for flags in ([], ["-U__linux__"]):
        res = subprocess.run([cc, "-fsyntax-only", "-std=c11", "-Wall", "-Werror", *flags,
                              f"-I{inc}", str(src)], capture_output=True, text=True)  # fmt: skip
        assert res.returncode == 0, f"{flags}: {res.stderr[-2000:]}"


def test_the_calibration_command_prints_readings(capsys):
    pytest.importorskip("lepton_nn.kernels._hostprobe")
    assert hoststate.main(["0.2"]) == 0
    out = capsys.readouterr().out
    assert "readings, load average" in out
    assert "relative speed: median" in out or "one CPU" in out


def test_one_thread_tables_ignore_the_round_trip_not_the_slow_cpu(fake):
    """One thread never trades lines between CPUs, but runs on whichever CPU it got."""
    slow_rt = hoststate.probe(fake({0: 1000.0, 1: 1000.0}, rt=600.0)[0])
    slow_cpu = hoststate.probe(fake({0: 1000.0, 1: 1500.0}, rt=150.0)[0])
    assert hoststate.reasons(slow_rt, 1) == [] and hoststate.reasons(slow_rt, 2)
    assert hoststate.reasons(slow_cpu, 1) == hoststate.reasons(slow_cpu, 2) != []
    assert hoststate.brief(slow_rt, 1) == "1.00, 600 ns"
    res = _res([_phase(2, [180.0, 176.0], QUIET), _phase(1, [100.0, 98.0], QUIET)])
    _with_host(res, {(wl, t): (slow_rt, slow_rt) for wl in ("W1", "W2") for t in (1, 2)})
    assert {(w["workload"], w["threads"]) for w in hoststate.host_warnings(res)} == {
        ("W1", 2),
        ("W2", 2),
    }


@pytest.mark.parametrize(
    ("slow", "loop", "read"),
    [
        ((1.0, 1.0), 1.0, 1.0),  # the two CPUs do not slow each other
        ((1.5, 1.0), 0.667, 1.0),  # compute-bound work 1.5x slower on both at once
        ((1.0, 2.0), 1.0, 0.5),  # the read shares a memory path
        ((0.9, 1.0), 1.0, 1.0),  # faster together (noise): at most 1
    ],
)
def test_the_corun_speed_is_alone_over_together(fake, slow, loop, read):
    probe, machine = fake({0: 1000.0, 1: 1100.0}, slow=slow)
    state = hoststate.probe(probe)
    assert probe.coruns == [(0, 1)] and machine.pinned == {0, 1}
    co = state["corun"]
    assert co["cpus"] == [0, 1] and co["loop"]["solo_ns"] == [1000.0, 1100.0]
    assert co["loop"]["together_ns"] == [1000.0 * slow[0], 1100.0 * slow[0]]
    assert co["stream"]["solo_ns"] == [10000.0, 11000.0]
    assert co["stream"]["bytes"] == hoststate.STREAM_BYTES
    assert (state["corun_speed"], state["corun_stream_speed"]) == (loop, read)
    assert f"co-run speed {loop:.2f} on the loop, {read:.2f} on a 1 MiB read each" in (
        hoststate.describe(state)
    )
    # stated, never marked (module docstring): it slows every engine of a table alike
    assert hoststate.reasons(state) == [] and "UNEVEN" not in hoststate.brief(state)


def test_the_corun_says_what_it_could_not_measure(fake):
    probe, _ = fake({0: 800.0, 1: 800.0}, together=False)  # never busy at once
    state = hoststate.probe(probe)
    assert state["corun"] is None and state["corun_speed"] is None
    assert "never ran the loop at the same time" in state["notes"][0]
    assert state["relative_speed"] == 1.0 and state["round_trip_ns"]  # the rest still read

    probe, _ = fake({0: 800.0, 1: 800.0})
    probe.corun = lambda a, b, *args: ([[800.0]] * 4, ([8e3], [8e3], [], []))
    state = hoststate.probe(probe)  # the loop ran together, the read never did
    assert state["corun_speed"] == 1.0 and state["corun_stream_speed"] is None
    assert state["corun"]["stream"] is None and "never read at the same time" in state["notes"][0]
    assert hoststate.describe(state).endswith(
        "co-run speed 1.00 on the loop; no co-run of the read: CPUs 0 and 1 never read at the "
        "same time"
    )

    def refuse(*args):
        raise OSError("no answer from CPU 1 within the timeout")

    probe, machine = fake({0: 800.0, 1: 800.0})
    probe.corun = refuse
    state = hoststate.probe(probe)
    assert state["corun"] is None and machine.pinned == {0, 1}
    assert "no co-run on CPUs 0 and 1 (no answer from CPU 1" in state["notes"][0]

    class OldBuild:  # a _hostprobe built before the co-run
        spin, pingpong = probe.spin, probe.pingpong

    state = hoststate.probe(OldBuild())
    assert state["corun"] is None and "no co-run probe in this build" in state["notes"][0]

    probe, _ = fake({0: 800.0}, cpus=(0,))  # one CPU: nothing to run together
    state = hoststate.probe(probe)
    assert probe.coruns == [] and state["corun"] is None and state["corun_speed"] is None


def test_the_report_explains_speed_ups_against_the_corun_speed(fake):
    res = _res([_phase(2, [180.0, 176.0], QUIET)])
    md = report.render_markdown(res)
    assert "2 x the co-run speed" in md and "not marked" in md
