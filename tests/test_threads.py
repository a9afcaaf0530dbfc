"""Intra-op threads: the setting, the parallel loop, and ops giving the same bits on any count."""

from __future__ import annotations

import re
import threading
import warnings

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import Tensor
from lepton_nn._cpu import usable_cores
from lepton_nn.backend import threads as T
from lepton_nn.ops.conv import conv2d


@pytest.fixture(autouse=True)
def _restore_setting():
    yield
    T.set_num_threads(None)


def test_setting_env_and_default(monkeypatch):
    monkeypatch.setenv("LEPTON_NUM_THREADS", "3")
    assert ln.get_num_threads() == 3
    ln.set_num_threads(1)  # the call wins over the environment
    assert ln.get_num_threads() == 1
    ln.set_num_threads(None)
    monkeypatch.setattr(T, "_warned_env", set())
    for unusable in ("zero", "2.0", "0"):  # ignored, and said once per value
        monkeypatch.setenv("LEPTON_NUM_THREADS", unusable)
        with pytest.warns(RuntimeWarning, match=f"LEPTON_NUM_THREADS='{re.escape(unusable)}'"):
            assert ln.get_num_threads() == usable_cores() >= 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert ln.get_num_threads() == usable_cores()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises((ValueError, TypeError)):
            ln.set_num_threads(bad)


@pytest.mark.parametrize("bad", [2.0, np.float64(2.0), 2.5, True, np.bool_(True), "2", 0, -1])
def test_one_thread_count_rule_everywhere(tmp_path, bad):
    """set_num_threads took 2.0 (and True as 1) while runtime.load refused them: two rules.
    Now one (check_threads), with the value and the argument named."""
    from lepton_nn import runtime
    from lepton_nn.tuning import GridSearch, cross_validate

    p = tmp_path / "m.lnn"
    net = ln.nn.Sequential([ln.nn.Dense(2)])
    net.build((None, 3))
    ln.save(net.eval(), p)
    tell = f"threads must be a positive int or None, got {bad!r}"
    for call in (
        lambda: ln.set_num_threads(bad),
        lambda: runtime.load(p, threads=bad),
        lambda: setattr(runtime.load(p), "threads", bad),
    ):
        with pytest.raises(ValueError, match=re.escape(tell)):
            call()
    assert ln.get_num_threads() == usable_cores()  # nothing was set
    tell = f"n_jobs must be a positive int or None, got {bad!r}"
    with pytest.raises(ValueError, match=re.escape(tell)):
        GridSearch(lambda: None, {"lr": [1.0]}, n_jobs=bad)
    with pytest.raises(ValueError, match=re.escape(tell)):  # before any fold is trained
        cross_validate(lambda: None, np.zeros((4, 1)), np.zeros(4), cv=2, n_jobs=bad)


def test_thread_counts_that_are_taken():
    assert T.check_threads(None) is None
    for good in (1, 3, np.int64(2), np.uint8(2)):
        assert T.check_threads(good) == int(good) and type(T.check_threads(good)) is int
    ln.set_num_threads(np.int32(2))
    assert ln.get_num_threads() == 2
    with pytest.raises(ValueError, match=r"got 2\.0 \(a float: pass an int"):
        T.check_threads(2.0)
    with pytest.raises(ValueError, match=r"got -1 \(None: the default count\)"):
        T.check_threads(-1)


def test_threads_for_keeps_small_work_on_one_thread():
    ln.set_num_threads(4)
    assert T.threads_for(T.PARALLEL_MIN_FLOPS - 1, 10) == 1
    assert T.threads_for(1e12, 1) == 1
    assert T.threads_for(1e12, 3) == 3
    assert T.threads_for(1e12, 10) == 4
    ln.set_num_threads(1)
    assert T.threads_for(1e12, 10) == 1


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("tasks", [0, 1, 2, 5, 16])
def test_parallel_for_runs_every_task_once(threads, tasks):
    hits = np.zeros(tasks, int)
    names, calls = set(), []

    def fn(indices):
        calls.append(1)
        names.add(threading.current_thread().name)
        for i in indices:
            hits[i] += 1

    T.parallel_for(tasks, fn, threads)
    np.testing.assert_array_equal(hits, 1)
    assert len(calls) == (0 if tasks == 0 else 1 if tasks == 1 else min(threads, tasks))
    assert len(names) <= len(calls)


def test_parallel_for_balances_a_slow_thread():
    """Tasks go to whichever thread asks: a thread held up takes fewer of them."""
    import time

    taken = {}

    def fn(indices):
        me = threading.current_thread().name
        for i in indices:
            taken.setdefault(me, []).append(i)
            if me == threading.main_thread().name:
                time.sleep(0.02)  # the calling thread is slow

    T.parallel_for(20, fn, 2)
    assert sorted(i for v in taken.values() for i in v) == list(range(20))
    assert len(taken.get(threading.main_thread().name, [])) < 10  # the worker may take all


def test_parallel_for_raises_an_error_after_every_thread_finished():
    done = []

    def fn(indices):
        for i in indices:
            done.append(i)
            if i == 1:
                raise RuntimeError("task 1")

    with pytest.raises(RuntimeError, match="task 1"):
        T.parallel_for(4, fn, 2)
    assert 1 in done


def test_nested_parallel_for_runs_inline():
    """A thread that starts another parallel loop runs it itself (the pool may be all busy)."""
    seen = []

    def inner(indices):
        seen.append((threading.current_thread().name, list(indices)))

    def outer(indices):
        for _ in indices:
            T.parallel_for(6, inner, 3)

    T.parallel_for(2, outer, 2)
    assert [ix for _, ix in seen] == [list(range(6))] * 2


def test_blas_threads_are_one_inside_and_restored_after():
    blas = T._Blas()
    if blas.get is None:
        pytest.skip("no OpenBLAS found in this process")
    T._blas = blas
    before = blas.get()
    blas.set(2)
    try:
        inside = []
        T.parallel_for(2, lambda ix: inside.append(blas.get()), 2)
        assert inside == [1, 1]
        T.parallel_for(2, lambda ix: inside.append(blas.get()), 1)  # on one thread too
        assert inside == [1, 1, 1]
        assert blas.get() == 2
    finally:
        blas.set(before)


@pytest.mark.parametrize("act", ["relu", "gelu", "identity"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_gives_the_same_bits_on_any_thread_count(monkeypatch, act, dtype):
    import lepton_nn.ops.conv as conv_ops

    monkeypatch.setattr(T, "PARALLEL_MIN_FLOPS", 0)
    monkeypatch.setattr(conv_ops, "CONV_CHUNK_BYTES", 4096)  # many chunks of 1-2 images
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((9, 3, 7, 6)).astype(dtype)
    w0 = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b0 = rng.standard_normal(4).astype(dtype)
    gy = rng.standard_normal((9, 4, 7, 6)).astype(dtype)
    results = []
    for n in (1, 2, 3):
        ln.set_num_threads(n)
        x, w, b = (Tensor(a.copy(), requires_grad=True) for a in (x0, w0, b0))
        y = conv2d(x, w, b, padding="same", activation=act)
        (y * Tensor(gy)).sum().backward()
        results.append([y.data.copy(), x.grad.copy(), w.grad.copy(), b.grad.copy()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def _conv_sum():
    ln.set_num_threads(2)
    x = Tensor(np.arange(8 * 2 * 6 * 6, dtype=float).reshape(8, 2, 6, 6))
    return float(conv2d(x, Tensor(np.ones((3, 2, 3, 3))), padding=1).data.sum())


def _conv_in_child(queue):
    queue.put(_conv_sum())


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_parallel_ops_work_in_a_forked_child(monkeypatch):
    """A child forked after the pool started (a process pool of cross-validation, say) gets
    a pool of its own instead of waiting forever on threads that did not come along."""
    import multiprocessing as mp

    import lepton_nn.ops.conv as conv_ops

    monkeypatch.setattr(T, "PARALLEL_MIN_FLOPS", 0)
    monkeypatch.setattr(conv_ops, "CONV_CHUNK_BYTES", 1)  # one image a chunk: 8 tasks
    expected = _conv_sum()  # the parent's pool now exists
    assert T._pool is not None
    ctx = mp.get_context("fork")
    queue = ctx.SimpleQueue()
    child = ctx.Process(target=_conv_in_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the parent's thread pool")
    assert child.exitcode == 0 and queue.get() == expected
