"""The one native thread pool (kernels/csrc/pool.h, lepton_nn.kernels._pool) and every
kernel that runs on it: the same bits at 1, 2 and 3 threads and close to the NumPy twin;
jobs from two user threads at once; a job in a forked child; an error inside a task
returned, not hung on; and the runtime's plans never on the Python pool (parallel_for)."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

from lepton_nn.backend.geometry import conv_direct_scratch
from lepton_nn.backend.reference import ReferenceBackend

_pool = pytest.importorskip("lepton_nn.kernels._pool")

from lepton_nn.backend.cython_backend import CythonBackend  # noqa: E402

REF = ReferenceBackend()
CY = CythonBackend()
THREADS = (1, 2, 3)


def _want(n):
    return np.arange(n, dtype=np.int64) ** 2 + 1


# ------------------------------------------------------------------------ the pool itself


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("tasks", [1, 2, 5, 64, 1000])
def test_every_task_runs_once(threads, tasks):
    out = np.zeros(tasks, np.int64)
    assert _pool.run_test(out, threads, spin=2000 if tasks <= 64 else 0) == 0
    np.testing.assert_array_equal(out, _want(tasks))


def test_an_error_in_a_task_is_returned_and_every_other_task_runs():
    for threads in THREADS:
        out = np.zeros(200, np.int64)
        assert _pool.run_test(out, threads, fail=137, spin=1000) == 7
        np.testing.assert_array_equal(out, _want(200))  # nothing skipped, nothing hung
        assert _pool.run_test(out, threads) == 0  # the next job starts clean


# A worker's share of a job depends on the OS giving it a core while the job lasts: on a busy
# machine one job can run on its caller alone. The tests below therefore repeat a job until a
# worker has taken part (a count, not a time); a pool whose workers never run a task fails
# them all the same.
TRIES = 50


def test_workers_share_the_tasks():
    # jobs of slow tasks (40 of 0.2 ms) on 2 threads, each right: a worker takes some
    before = _pool.stats()["worker_tasks"]
    for _ in range(TRIES):
        out = np.zeros(40, np.int64)
        assert _pool.run_test(out, 2, spin=200_000) == 0
        np.testing.assert_array_equal(out, _want(40))
        if _pool.stats()["worker_tasks"] > before:
            break
    assert _pool.stats()["worker_tasks"] > before, f"no worker ran a task in {TRIES} jobs"


def test_jobs_from_several_user_threads_at_once():
    # one job holds the pool; the others run on their callers alone; all finish and agree
    errors = []

    def user(i):
        try:
            for _ in range(20):
                out = np.zeros(50 + i, np.int64)
                assert _pool.run_test(out, 2, spin=20_000) == 0
                np.testing.assert_array_equal(out, _want(50 + i))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    before = _pool.stats()["alone"]
    for _ in range(TRIES):  # rounds until two jobs overlapped (the OS may serialize a round)
        users = [threading.Thread(target=user, args=(i,)) for i in range(4)]
        for t in users:
            t.start()
        for t in users:
            t.join(120)
        assert not any(t.is_alive() for t in users), "a user thread hung in the pool"
        assert not errors
        if _pool.stats()["alone"] > before:
            break
    assert _pool.stats()["alone"] > before  # some found the pool busy and ran alone


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="fork")
def test_a_forked_child_starts_its_own_workers():
    out = np.zeros(100, np.int64)
    assert _pool.run_test(out, 2, spin=10_000) == 0  # the parent's workers are started
    pid = os.fork()
    if pid == 0:  # child: exit 0 only if a 2-thread job finishes, right, with a worker
        o = np.zeros(300, np.int64)
        ok = _pool.run_test(o, 2, spin=100_000) == 0 and np.array_equal(o, _want(300))
        os._exit(0 if ok and _pool.stats()["workers"] >= 1 else 1)
    for _ in range(600):  # 60 s
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    pytest.fail("the forked child hung in the pool")


def test_spin_and_wait_settings():
    spin, wait = _pool.stats()["spin_us"], _pool.stats()["wait_us"]
    try:
        # workers sleep at once between jobs, callers as soon as they wait: still correct
        _pool.set_spin_us(0)
        _pool.set_wait_us(0)
        out = np.zeros(100, np.int64)
        for _ in range(5):
            assert _pool.run_test(out, 2, spin=20_000) == 0
            np.testing.assert_array_equal(out, _want(100))
            out[:] = 0
        for bad in (_pool.set_spin_us, _pool.set_wait_us):
            with pytest.raises(ValueError):
                bad(-1)
    finally:
        _pool.set_spin_us(spin)
        _pool.set_wait_us(wait)


# ------------------------------------------------------- jobs of several phases (barriers)


def _phases(lengths):
    """Zeroed outputs for run_test_phases and what it must write: task i of phase p sets
    i + 1 + the sum of phase p - 1's outputs."""
    outs, want, prev = [], [], 0
    for n in lengths:
        w = np.arange(n, dtype=np.int64) + 1 + prev
        prev = int(w.sum())
        assert prev < 2**62
        outs.append(np.zeros(n, np.int64))
        want.append(w)
    return outs, want


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize(
    "lengths", [(5,), (6, 4, 1), (1, 7, 0, 3, 2), (0, 0), (64, 3, 64), (2, 1) * 20]
)
def test_phases_run_in_order_each_reading_the_whole_previous_one(threads, lengths):
    # a task of phase p reads every output of phase p - 1: a task started before the
    # barrier (or a phase run twice, or skipped) gives a wrong sum; 40 phases run as 3 jobs
    outs, want = _phases(lengths)
    assert _pool.run_test_phases(outs, threads, spin=3000 if len(lengths) < 10 else 0) == 0
    for o, w in zip(outs, want, strict=True):
        np.testing.assert_array_equal(o, w)


def test_jobs_of_changing_shapes_back_to_back():
    # a block's claim and done words carry the number of the job that last wrote them and
    # are never reset: a word of an earlier job counts 0. Jobs whose phases, task counts and
    # empty blocks change from job to job (a block unused for many jobs, then used again),
    # back to back at 2, 3 and 5 threads: every task of every phase exactly once, in order
    rng = np.random.default_rng(3)
    for threads in (2, 3, 5):
        for _ in range(60):
            lengths = tuple(int(n) for n in rng.choice([0, 1, 2, 3, 7, 12], rng.integers(1, 5)))
            outs, want = _phases(lengths)
            assert _pool.run_test_phases(outs, threads) == 0
            for o, w in zip(outs, want, strict=True):
                np.testing.assert_array_equal(o, w)


def test_a_phased_job_is_one_job_of_the_pool():
    s0 = _pool.stats()
    outs, want = _phases((8, 8, 8))
    assert _pool.run_test_phases(outs, 2, spin=1000) == 0
    s1 = _pool.stats()
    assert (s1["jobs"] - s0["jobs"], s1["phases"] - s0["phases"]) == (1, 3)
    assert s1["alone"] == s0["alone"]
    outs, want = _phases((2, 1) * 20)  # 40 phases: jobs of at most 16
    assert _pool.run_test_phases(outs, 2) == 0
    assert _pool.stats()["jobs"] - s1["jobs"] == 3


def test_workers_take_tasks_in_phased_jobs():
    before = _pool.stats()["worker_tasks"]
    for _ in range(TRIES):  # jobs until the workers ran a few tasks (see TRIES)
        outs, want = _phases((40, 40, 40))
        assert _pool.run_test_phases(outs, 2, spin=300_000) == 0
        for o, w in zip(outs, want, strict=True):
            np.testing.assert_array_equal(o, w)
        if _pool.stats()["worker_tasks"] - before >= 3:
            break
    assert _pool.stats()["worker_tasks"] - before >= 3, f"workers ran under 3 tasks in {TRIES}"


def test_an_error_in_a_phase_is_returned_and_every_task_of_every_phase_runs():
    for threads in THREADS:
        for phase in (0, 1, 2):
            outs, want = _phases((30, 7, 30))
            assert _pool.run_test_phases(outs, threads, phase, 5, spin=1000) == 9
            for o, w in zip(outs, want, strict=True):
                np.testing.assert_array_equal(o, w)
        outs, want = _phases((3, 3))
        assert _pool.run_test_phases(outs, threads) == 0  # the next job starts clean


def test_a_job_started_inside_a_phase_runs_on_its_task_alone():
    # each task of phases 1 and 2 sums the previous phase in a 2-thread job of its own: the
    # pool is busy with the outer job, so that one runs on its caller (no deadlock, no race)
    for threads in THREADS:
        before = _pool.stats()["alone"]
        outs, want = _phases((9, 5, 6))
        assert _pool.run_test_phases(outs, threads, spin=2000, nested=2) == 0
        for o, w in zip(outs, want, strict=True):
            np.testing.assert_array_equal(o, w)
        if threads > 1:  # the 11 inner jobs (a 1-thread outer job leaves the pool free)
            assert _pool.stats()["alone"] - before == 11


def test_phased_jobs_from_several_user_threads_at_once():
    errors = []

    def user(i):
        try:
            for r in range(20):
                outs, want = _phases((3 + i, 2 + r % 3, 5))
                assert _pool.run_test_phases(outs, 2, spin=10_000) == 0
                for o, w in zip(outs, want, strict=True):
                    np.testing.assert_array_equal(o, w)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    users = [threading.Thread(target=user, args=(i,)) for i in range(4)]
    for t in users:
        t.start()
    for t in users:
        t.join(120)
    assert not any(t.is_alive() for t in users), "a user thread hung in the pool"
    assert not errors


def test_a_phased_job_at_a_sleeping_barrier():
    # no spin anywhere: workers sleep between jobs and every barrier wait sleeps at once
    spin, wait = _pool.stats()["spin_us"], _pool.stats()["wait_us"]
    try:
        _pool.set_spin_us(0)
        _pool.set_wait_us(0)
        for _ in range(5):
            outs, want = _phases((20, 20, 1, 20))
            assert _pool.run_test_phases(outs, 2, spin=20_000) == 0
            for o, w in zip(outs, want, strict=True):
                np.testing.assert_array_equal(o, w)
    finally:
        _pool.set_spin_us(spin)
        _pool.set_wait_us(wait)


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="fork")
def test_a_forked_child_runs_phased_jobs():
    outs, _ = _phases((10, 10))
    assert _pool.run_test_phases(outs, 2, spin=10_000) == 0  # the parent's workers started
    pid = os.fork()
    if pid == 0:
        o, w = _phases((30, 30, 30))
        ok = _pool.run_test_phases(o, 2, spin=50_000) == 0 and all(
            np.array_equal(a, b) for a, b in zip(o, w, strict=True)
        )
        os._exit(0 if ok and _pool.stats()["workers"] >= 1 else 1)
    for _ in range(600):  # 60 s
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    pytest.fail("the forked child hung in the pool")


def test_run_test_phases_refuses_bad_arguments():
    with pytest.raises(ValueError):
        _pool.run_test_phases([], 2)
    with pytest.raises(TypeError):
        _pool.run_test_phases([np.zeros(3, np.int32)], 2)


# ------------------------------------------------------------- the kernels on the pool


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("pool", [None, (2, 2, 2, 2, 0, 0, 4, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_chunks_on_the_pool(pool, dtype):
    from lepton_nn.backend import cython_backend as cb

    if not cb._conv_gemm():
        pytest.skip("no BLAS GEMM for the conv chunk kernels")
    rng = _rng(1)
    n, c, h, w, o, step = 13, 3, 9, 10, 7, 2
    geom, (oh, ow) = (3, 3, 1, 1, 1, 1, 1, 1), (9, 10)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    w2 = rng.standard_normal((o, c * 9)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    runs = []
    for threads in THREADS:
        cols = [(np.zeros((step, c * 9, oh, ow), dtype),) for _ in range(threads)]
        if pool is None:
            y = np.zeros((n, o, oh * ow), dtype)
            head, tail, name = (w2, b, 1, geom, oh, ow, step), (y, y), "conv2d_forward_chunks"
        else:
            y, argmax = np.zeros((n, o, 20), dtype), np.zeros((n, o, 20), np.int64)
            head, tail = (w2, b, 1, geom, oh, ow, pool, step), (y, argmax)
            name = "conv2d_pool_forward_chunks"
            cols = [(s[0], np.zeros((step, o, oh * ow), dtype)) for s in cols]
        CY.conv_chunks_threads(name, x, head, tuple(cols), tail, threads)
        runs.append(y.copy())
        ref = np.zeros_like(y)
        REF.conv_chunks_threads(name, x, head, tuple(cols), (ref, *tail[1:]) if pool else
                                (ref, ref), threads)  # fmt: skip
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


@pytest.mark.parametrize("pool", [None, (2, 2, 2, 2, 0, 0, 5, 6)])
def test_conv_direct_on_the_pool(pool):
    if not hasattr(CY, "conv2d_direct_forward") or (
        type(CY).conv2d_direct_forward is ReferenceBackend.conv2d_direct_forward
    ):
        pytest.skip("no compiled direct convolution")
    rng = _rng(2)
    n, c, h, w, o = 11, 4, 10, 12, 9
    geom, (oh, ow) = (3, 3, 1, 1, 1, 1, 1, 1), (10, 12)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    w2 = rng.standard_normal((o, c * 9)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    wp = CY.conv2d_direct_pack(w2, c, 3, 3)
    size = oh * ow if pool is None else pool[6] * pool[7]
    shifted, zshape = conv_direct_scratch(c, o, geom, oh, ow, pool)
    head = (wp, b, 1, geom, oh, ow, pool)
    runs = []
    for threads in THREADS:
        y = np.zeros((n, o, size), np.float32)
        scratch = tuple(
            (np.zeros(shifted, np.float32), np.zeros(zshape, np.float32)) for _ in range(threads)
        )
        CY.conv_chunks_threads("conv2d_direct_forward", x, head, scratch, (y,), threads)
        runs.append(y)
    ref = np.zeros_like(runs[0])
    REF.conv2d_direct_forward(x, wp, b, 1, geom, oh, ow, pool, np.zeros(1, np.int64), None,
                              None, ref)  # fmt: skip
    np.testing.assert_allclose(runs[0], ref, rtol=1e-4, atol=1e-4)
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


@pytest.mark.parametrize("static", [False, True])
def test_int8_conv_on_the_pool(static):
    rng = _rng(3)
    n, c, h, w, f = 9, 3, 8, 9, 20
    geom, (oh, ow) = (3, 3, 1, 1, 1, 1, 1, 1), (8, 9)
    k, p = 9 * c, oh * ow
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wq = rng.integers(-127, 128, (f, k)).astype(np.int8)
    packed, sums = CY.qpack_weights(wq)
    scale = rng.uniform(0.01, 0.02, f).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    xs = (np.array([0.03], np.float32), np.array([128], np.int32)) if static else (None, None)
    head = (packed, scale, sums, b, 1, geom, oh, ow, None, *xs, 1)
    runs = []
    for threads in THREADS:
        y = np.zeros((n, f, p), np.float32)
        scratch = tuple(
            (np.zeros(c * h * w, np.uint8), np.zeros(c * h * w, np.uint8),
             np.zeros((p, k), np.uint8), np.zeros((p, f), np.float32))
            for _ in range(threads)
        )  # fmt: skip
        CY.conv_chunks_threads("qconv2d_forward_chunks", x, head, scratch, (y,), threads)
        runs.append(y)
    ref = np.zeros_like(runs[0])
    REF.conv_chunks_threads("qconv2d_forward_chunks", x, head, scratch, (ref,), 1)
    np.testing.assert_allclose(runs[0], ref, rtol=1e-5, atol=1e-4)
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
def test_recurrent_rows_on_the_pool(cell):
    if not CY.recurrent_rows_exact(np.float32):
        pytest.skip("no compiled recurrent rows kernel (AVX2 + FMA)")
    rng = _rng(4)
    t, b, f, u = 7, 37, 5, 19
    g = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[cell]
    w_ih = (rng.standard_normal((f, g * u)) * 0.3).astype(np.float32)
    w_hh = (rng.standard_normal((u, g * u)) * 0.3).astype(np.float32)
    bias = rng.standard_normal(g * u).astype(np.float32)
    b_hh = rng.standard_normal(g * u).astype(np.float32) if cell == "GRU" else None
    packed = CY.pack_recurrent(cell, w_ih, bias, w_hh, b_hh)
    x = rng.standard_normal((t, b, f)).astype(np.float32)
    mask = (rng.uniform(size=(t, b)) < 0.8).astype(np.float32)
    bounds = np.array([0, 3, 9, 21, 30, 37], np.int64)
    runs = []
    for threads in THREADS:
        h, c = np.zeros((t + 1, b, u), np.float32), np.zeros((2, b, u), np.float32)
        cc = c if cell == "LSTM" else None
        CY.recurrent_rows_threads(cell, x, packed, h, cc, mask, bounds, False, threads)
        runs.append(h)
    h, c = np.zeros((t + 1, b, u), np.float32), np.zeros((2, b, u), np.float32)
    cc = c if cell == "LSTM" else None
    REF.recurrent_rows_threads(cell, x, packed, h, cc, mask, bounds, False, 1)
    np.testing.assert_allclose(runs[0], h, rtol=1e-4, atol=1e-5)
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


def test_qlinear_on_the_pool():
    rng = _rng(5)
    m, k, n = 64, 1024, 1040  # 2^26 multiply-adds: split over the threads
    xq = rng.integers(0, 256, (m, k)).astype(np.uint8)
    wq = rng.integers(-127, 128, (n, k)).astype(np.int8)
    packed, sums = CY.qpack_weights(wq)
    scale = rng.uniform(0.001, 0.002, n).astype(np.float32)
    xs, zp = rng.uniform(0.01, 0.02, m).astype(np.float32), rng.integers(0, 256, m, np.int32)
    bias = rng.standard_normal(n).astype(np.float32)
    runs = []
    for threads in (1, 2, 3, 5):
        out = np.zeros((m, n), np.float32)
        CY.qlinear(xq, xs, zp, packed, scale, sums, bias, 1, out, threads)
        runs.append(out)
    ref = np.zeros((m, n), np.float32)
    REF.qlinear(xq, xs, zp, packed, scale, sums, bias, 1, ref)
    np.testing.assert_allclose(runs[0], ref, rtol=1e-5, atol=1e-4)
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


# ------------------------------------------------------- the runtime off the Python pool


def test_runtime_plans_never_use_the_python_pool(tmp_path, monkeypatch):
    """CNN (fp32 and int8), bidirectional LSTM and MLP plans at 2 threads: not one region on
    backend.threads.parallel_for's ThreadPoolExecutor, and the bits of the 1-thread plan."""
    import lepton_nn as L
    import lepton_nn.runtime as rt
    from lepton_nn import nn
    from lepton_nn.backend import threads as th

    def refuse(n):
        raise AssertionError("the runtime used the Python thread pool")

    L.set_seed(0)
    cnn = nn.Sequential([nn.Conv2D(16, 3, padding="same", in_channels=1), nn.ReLU(),
                         nn.MaxPool2D(2), nn.Conv2D(16, 3, stride=2), nn.Flatten(),
                         nn.Dense(10)])  # fmt: skip
    cnn(np.zeros((2, 1, 16, 16), np.float32))
    lstm = nn.Sequential([nn.LSTM(32, bidirectional=True), nn.Dense(3)])
    lstm(np.zeros((2, 20, 6), np.float32))
    mlp = nn.Sequential([nn.Dense(512, "relu", in_features=784), nn.Dense(10)])
    mlp(np.zeros((2, 784), np.float32))
    cases = [(cnn, (64, 1, 16, 16)), (lstm, (64, 20, 6)), (mlp, (64, 784))]
    for i, (model, shape) in enumerate(cases):
        model.eval()
        path = tmp_path / f"m{i}.lnn"
        L.save(model, path)
        x = _rng(i).standard_normal(shape).astype(np.float32)
        one, two = rt.load(path, threads=1), rt.load(path, threads=2)
        jobs = _pool.stats()["jobs"] + _pool.stats()["alone"]
        with monkeypatch.context() as mp:
            mp.setattr(th, "_workers", refuse)
            np.testing.assert_array_equal(two.predict(x), one.predict(x))
        assert _pool.stats()["jobs"] + _pool.stats()["alone"] > jobs  # on the native pool
    from lepton_nn.compress import quantize

    x = _rng(9).standard_normal((64, 1, 16, 16)).astype(np.float32)
    L.save(quantize(cnn, x), tmp_path / "q.lnn")
    one, two = rt.load(tmp_path / "q.lnn", threads=1), rt.load(tmp_path / "q.lnn", threads=2)
    jobs = _pool.stats()["jobs"] + _pool.stats()["alone"]
    with monkeypatch.context() as mp:
        mp.setattr(th, "_workers", refuse)
        np.testing.assert_array_equal(two.predict(x), one.predict(x))
    assert _pool.stats()["jobs"] + _pool.stats()["alone"] > jobs  # an int8 conv on the pool
