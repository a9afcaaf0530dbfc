"""The Numba replay of ``lepton_nn.compile`` keeps to the thread budget as the eager step does:
at ``set_num_threads(1)`` its kernels post no job to the shared pool (they run on the caller),
and its BLAS products run with OpenBLAS held to one thread
wherever the eager step held it (thin products too, above PARALLEL_MIN_FLOPS)."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as L
from lepton_nn import backend as B
from lepton_nn import losses, nn, optim
from lepton_nn.backend import threads as T

pytest.importorskip("numba")
_pool = pytest.importorskip("lepton_nn.kernels._pool")


def _step(model):
    opt = optim.Adam(model.parameters(), lr=1e-3)

    def step(xb, yb):
        opt.zero_grad()
        loss = losses.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    return step


def _data(n, d, classes, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d), dtype=np.float32),
            rng.integers(0, classes, n).astype(np.int64))  # fmt: skip


def _pool_counts(step, x, y, calls=3):
    s0 = _pool.stats()
    for _ in range(calls):
        step(x, y)
    s1 = _pool.stats()
    return {k: s1[k] - s0[k] for k in ("jobs", "worker_tasks")}


def test_replay_at_one_thread_posts_no_pool_job():
    """W2's shape (784-512-256-10, batch 128, Adam): every GEMM on the kernel and Adam on the
    pool's API. At 1 thread no job reaches the workers (each call runs on the caller); at 2
    threads the same replay posts jobs (the counters see the replay's calls)."""
    L.set_seed(0)
    sizes = (784, 512, 256)
    layers = [nn.Dense(n, "relu", in_features=k) for k, n in zip(sizes, sizes[1:])]
    model = nn.Sequential([*layers, nn.Dense(10, in_features=256)])
    x, y = _data(128, 784, 10)
    with B.use_backend("cython"):
        step = L.compile(_step(model), backend="numba")
        try:
            T.set_num_threads(1)
            for _ in range(3):  # capture, validation, first replay (compiles)
                step(x, y)
            one = _pool_counts(step, x, y)
            T.set_num_threads(2)
            two = _pool_counts(step, x, y)
        finally:
            T.set_num_threads(None)
    assert one == {"jobs": 0, "worker_tasks": 0}, one
    if _pool.stats()["threaded"]:
        assert two["jobs"] >= 3 * 5, two  # at least the 5 big GEMMs a call


def test_replay_holds_blas_to_one_thread_for_a_thin_product():
    """X (256, 784) @ W (784, 16) (6.4 MFLOP, 16 columns: not the kernel's) runs on OpenBLAS.
    The eager step holds BLAS to one thread for it (thin); the replay must hold it too, for
    its one call: the rule looked at the largest product's flops alone, which are above
    PARALLEL_MIN_FLOPS, so the replay left OpenBLAS on all its threads."""
    if not T.blas_threads_controlled():
        pytest.skip("NumPy's BLAS thread count cannot be set here")
    L.set_seed(1)
    model = nn.Sequential([nn.Dense(16, "relu", in_features=784), nn.Dense(4, in_features=16)])
    x, y = _data(256, 784, 4, seed=1)
    blas = T._the_blas()
    saved, put, sets = blas.get(), blas.set, []
    with B.use_backend("cython"):
        step = L.compile(_step(model), backend="numba")
        for _ in range(3):
            step(x, y)
        (replay,) = [e[2] for e in step.entries.values()]
        assert replay.hold_blas
        put(2)
        blas.set = lambda n: (sets.append(n), put(n))[1]
        try:
            step(x, y)
        finally:
            blas.set = put
            put(saved)
    assert sets == [1, 2]  # held for the call, then given back
