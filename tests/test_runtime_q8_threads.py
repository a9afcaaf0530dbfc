"""The int8 Dense plan at batch >= 64 on several threads: a layer gets the plan's threads
exactly when qlinear splits it (csrc/qgemm_threads.h), and the split gives the same bits."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.runtime import steps

q = pytest.importorskip("lepton_nn.kernels._qgemm")
if not hasattr(q, "PARALLEL_MIN_MACS"):
    pytest.skip("extension built before PARALLEL_MIN_MACS", allow_module_level=True)


def _int8_model(path, sizes, x):
    from lepton_nn.compress import quantize

    L.set_seed(3)
    acts = ["relu"] * (len(sizes) - 2) + [None]
    model = nn.Sequential([nn.Dense(n, a) for n, a in zip(sizes[1:], acts)])
    model.build((None, sizes[0]))
    L.save(quantize(model.eval(), x, "dynamic"), path)
    return path


def _ops(model, n):
    plan = model.plan_for(n)
    return [(fn, args) for fn, args, _ in plan.head] + list(plan.tail)


def test_runtime_rule_is_the_kernels():
    """steps.qlinear_splits (what the plan decides) agrees with the threads qlinear splits a
    call over, on both sides of the multiply-add bound and of 32 outputs."""
    assert steps.QLINEAR_SPLIT_MIN == q.PARALLEL_MIN_MACS
    for n in (64, 65, 256):
        for k in (1, 100, 512, 784):
            for m in (10, 32, 33, 48, 256, 512):
                for t in (2, 3):
                    want = q._threads_for(n, k, m, t) > 1
                    assert steps.qlinear_splits(n, k, m) == want, (n, k, m, t)


def test_layers_below_the_split_get_no_threads_and_no_wake(tmp_path):
    """A 2-thread plan passes threads only to the layer qlinear splits, and wakes the pool
    only when some op runs on it (a woken worker finding no job spins 5 ms for nothing);
    the split layer runs as a pool job; 1, 2 and 3 threads give the same bits."""
    from lepton_nn.kernels import _pool

    x = np.random.default_rng(4).standard_normal((64, 200)).astype(np.float32)
    # 64 x 200 x 300 = 3.8M multiply-adds (split); 64 x 300 x 40 = 0.77M and N = 10 (not)
    path = _int8_model(tmp_path / "split.lnn", (200, 300, 40, 10), x)
    ops = _ops(rt.load(path, threads=2), 64)
    got = [args[9] if len(args) > 9 else 1 for fn, args in ops if fn.__name__ == "qlinear"]
    assert got == [2, 1, 1]
    assert ops[0][0].__name__ == "wake" and steps.on_pool(ops[2])
    # every layer below the bound
    small = _int8_model(tmp_path / "small.lnn", (64, 48, 24, 5), x[:, :64])
    ops = _ops(rt.load(small, threads=2), 64)
    assert [fn.__name__ for fn, _ in ops] == ["quantize_rows", "qlinear"] * 3
    assert not any(map(steps.on_pool, ops))
    outs = {}
    for t in (1, 2, 3):
        m = rt.load(path, threads=t)
        jobs = _pool.stats()["jobs"]
        outs[t] = m.predict(x)
        assert (_pool.stats()["jobs"] > jobs) == (t > 1 and _pool.stats()["threaded"])
    np.testing.assert_array_equal(outs[2], outs[1])
    np.testing.assert_array_equal(outs[3], outs[1])
