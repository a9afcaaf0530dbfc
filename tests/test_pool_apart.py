"""The pool's rule that keeps a job's threads on different CPUs (``_pool.set_apart``), its
counters (``shared_cpu``, ``nudges``) and its per-job record (``start_trace``/``stop_trace``).

Each case runs in a fresh process (it changes thread affinities): a worker is forced onto
its caller's CPU with ``os.sched_setaffinity`` on the worker's thread id, as Linux was seen to
leave it; the next job must move it off (the CPUs it started with, less the caller's) until
it has slept a second, when it gets its own CPUs back. None of this is timed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import PKG_PARENT

_pool = pytest.importorskip("lepton_nn.kernels._pool")

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_two = pytest.mark.skipif(
    len(CPUS) < 2 or not _pool.stats()["threaded"] or not sys.platform.startswith("linux"),
    reason="needs Linux, the threaded pool and 2 CPUs",
)

PRELUDE = """
import os, time
import numpy as np
from lepton_nn.kernels import _pool

def job(threads=2, tasks=64, spin=300_000):
    out = np.zeros(tasks, np.int64)
    assert _pool.run_test(out, threads, spin=spin) == 0
    assert (out == np.arange(tasks) ** 2 + 1).all()

def until(cond, seconds=20.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < seconds, "timed out"
        time.sleep(0.005)

def job_until_moved(threads=2, want=1):
    # the worker says which CPU it is on as it spins: give it a moment to run there first
    for _ in range(100):
        time.sleep(0.02)
        job(threads, tasks=8, spin=1000)
        if _pool.stats()["nudges"] >= want:
            return
    raise AssertionError("never moved")

cpus = sorted(os.sched_getaffinity(0))
c = cpus[0]
"""


def _run(body: str) -> None:
    code = PRELUDE + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(PKG_PARENT)}
    env.pop("LEPTON_POOL_APART", None)
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG_PARENT, env=env,
        timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr


@needs_two
def test_a_worker_on_its_callers_cpu_is_moved_off_until_it_goes_idle():
    _run("""
    assert _pool.stats()["apart"]
    _pool.set_spin_us(60e6)           # the worker keeps spinning (no sleep) meanwhile
    job()                              # starts the worker
    (w,) = _pool.worker_ids()
    # Linux may have started it on the caller's CPU (a busy machine: another test process on
    # the other CPU), and the rule moved it already: it has its CPUs back after a second idle
    until(lambda: os.sched_getaffinity(w) == set(cpus))
    n0 = _pool.stats()["nudges"]
    os.sched_setaffinity(0, {c})       # the caller on CPU c ...
    os.sched_setaffinity(w, {c})       # ... and the worker queued there too
    _pool.start_trace(1000)
    job_until_moved(want=n0 + 1)
    rec = _pool.stop_trace()
    assert rec["caller_cpu"][-1] == c
    st = _pool.stats()
    assert st["nudges"] == n0 + 1, st

    def kept_off():
        # off the caller's CPU; unless its new CPU proved busy (another engineer's work on a
        # shared machine) and it took its CPUs back (counted before it does so)
        aff = os.sched_getaffinity(w)
        if aff == set(cpus) - {c}:
            return True
        assert aff == set(cpus) and _pool.stats()["backoffs"] >= 1, aff
        return False

    moved = kept_off()
    job()                              # within the burst: no second move
    assert _pool.stats()["nudges"] == n0 + 1
    moved = moved and kept_off()
    _pool.set_spin_us(0)               # idle now: the worker sleeps, still off c ...
    until(lambda: _pool.stats()["sleeps"] > 0)
    moved = moved and kept_off()
    until(lambda: os.sched_getaffinity(w) == set(cpus))  # ... and after 1 s has its CPUs back
    os.sched_setaffinity(0, set(cpus))
    """)


@needs_two
def test_without_the_rule_the_worker_stays_and_shared_jobs_are_counted():
    _run("""
    _pool.set_apart(False)
    assert not _pool.stats()["apart"]
    _pool.set_spin_us(60e6)
    job()
    (w,) = _pool.worker_ids()
    os.sched_setaffinity(0, {c})
    os.sched_setaffinity(w, {c})
    time.sleep(0.05)
    s0 = _pool.stats()["shared_cpu"]
    _pool.start_trace(100)
    for _ in range(5):
        job(tasks=40)                  # 12 ms a job: the tick lets the worker in
    rec = _pool.stop_trace()
    st = _pool.stats()
    assert st["nudges"] == 0 and os.sched_getaffinity(w) == {c}
    assert len(rec) == 5 and (rec["caller_cpu"] == c).all()
    took = rec["claim_ns"] >= 0
    assert (rec["worker_cpu"][took] == c).all() and (rec["worker_cpu"][~took] == -1).all()
    assert st["shared_cpu"] - s0 == took.sum()  # every job the worker joined, on c
    """)


@needs_two
def test_no_move_when_the_job_has_more_threads_than_the_worker_has_cpus():
    _run("""
    os.sched_setaffinity(0, {c})       # before the first job: the workers inherit {c}
    job(threads=2)
    (w,) = _pool.worker_ids()
    assert os.sched_getaffinity(w) == {c}
    time.sleep(0.05)
    for _ in range(3):
        job(threads=2, tasks=16)
    assert _pool.stats()["nudges"] == 0   # one CPU: the threads must share it
    assert os.sched_getaffinity(w) == {c}
    """)


@needs_two
def test_three_threads_on_two_cpus_are_never_moved():
    _run("""
    os.sched_setaffinity(0, {cpus[0], cpus[1]})   # the workers start with these two
    job(threads=3)
    ws = _pool.worker_ids()
    assert len(ws) == 2
    os.sched_setaffinity(0, {c})
    for w in ws:
        os.sched_setaffinity(w, {c})
    for _ in range(5):
        time.sleep(0.02)
        job(threads=3, tasks=16)
    assert _pool.stats()["nudges"] == 0
    job_until_moved(threads=2)         # but a 2-thread job fits: worker 1 is moved
    assert _pool.stats()["nudges"] == 1
    assert os.sched_getaffinity(ws[0]) == {cpus[1]}
    """)


def test_the_trace_records_each_job():
    with pytest.raises(ValueError):
        _pool.start_trace(0)
    assert len(_pool.stop_trace()) == 0  # nothing recorded
    _pool.start_trace(3)
    outs = [np.zeros(50, np.int64) for _ in range(5)]
    for out in outs:
        assert _pool.run_test(out, 2, spin=20_000) == 0
    rec = _pool.stop_trace()
    if not _pool.stats()["threaded"]:
        assert len(rec) == 0
        return
    assert len(rec) == 3  # the first 3 jobs; the rest not kept
    assert (rec["job_ns"] > 0).all() and (np.diff(rec["post_ns"]) > 0).all()
    took = rec["claim_ns"] >= 0
    assert (rec["worker_cpu"][~took] == -1).all() and (rec["worker_cpu"][took] >= 0).all()
    assert (rec["claim_ns"][took] <= rec["job_ns"][took]).all()
    assert (rec["caller_cpu"] >= 0).all()
    _pool.start_trace(5)
    assert _pool.run_test(np.zeros(1, np.int64), 2) == 0  # one task: runs alone, no record
    assert len(_pool.stop_trace()) == 0


def test_set_apart_and_its_environment_variable():
    try:
        _pool.set_apart(False)
        assert _pool.stats()["apart"] is False
        _pool.set_apart(True)
        assert _pool.stats()["apart"] is True
    finally:
        _pool.set_apart(_pool._apart_setting())
    code = "from lepton_nn.kernels import _pool; print(_pool.stats()['apart'])"
    for val, want in (("0", "False"), ("off", "False"), ("1", "True"), ("", "True")):
        env = {**os.environ, "PYTHONPATH": str(PKG_PARENT), "LEPTON_POOL_APART": val}
        p = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG_PARENT, env=env
        )
        assert p.stdout.strip() == want, p.stderr


@pytest.mark.skipif(
    not hasattr(os, "fork") or not _pool.stats()["threaded"], reason="needs fork and threads"
)
def test_a_forked_child_knows_only_its_own_workers():
    # the parent's worker thread ids mean nothing in the child (or name another process's
    # threads): the rule must never move a thread by them
    _run("""
    job()
    assert len(_pool.worker_ids()) == 1
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            assert _pool.worker_ids() == []
            job()
            (w,) = _pool.worker_ids()
            assert str(w) in os.listdir("/proc/self/task")
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    """)


@needs_two
def test_a_moved_worker_whose_new_cpu_is_busy_takes_its_cpus_back():
    # a busy loop in another process on the CPU the worker is moved to: the worker runs there
    # about half the time, gives up within ~40 ms and is not moved again for a second
    _run("""
    import subprocess, sys
    two = {cpus[0], cpus[1]}
    os.sched_setaffinity(0, two)       # the workers start with these two
    _pool.set_spin_us(60e6)
    job()
    (w,) = _pool.worker_ids()
    hog = subprocess.Popen([sys.executable, "-c",
        f"import os; os.sched_setaffinity(0, {{{cpus[1]}}})\\nwhile True: pass"])
    try:
        os.sched_setaffinity(0, {c})
        os.sched_setaffinity(w, {c})
        job_until_moved()
        until(lambda: _pool.stats()["backoffs"] >= 1)
        until(lambda: os.sched_getaffinity(w) == two)
        t0 = time.monotonic()
        os.sched_setaffinity(w, {c})   # back on the caller's CPU, within the hold-off
        time.sleep(0.05)
        for _ in range(3):
            job(tasks=8, spin=1000)
        if time.monotonic() - t0 < 0.5:
            assert _pool.stats()["nudges"] == 1
    finally:
        hog.kill()
    """)
