"""runtime.load(threads=None) follows lepton_nn.set_num_threads live; an int pins the count."""

from __future__ import annotations

import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn import nn


@pytest.fixture(autouse=True)
def _restore_setting():
    yield
    L.set_num_threads(None)


def _saved(tmp_path, sizes=(300, 512, 64, 10)):
    L.set_seed(0)
    layers = [nn.Dense(n, "relu" if j < len(sizes) - 2 else None) for j, n in enumerate(sizes[1:])]
    model = nn.Sequential(layers)
    model.build((None, sizes[0]))
    path = tmp_path / "m.lnn"
    L.save(model.eval(), path)
    return path


def _plan_threads(m, n):
    """The thread count the plan for batch ``n`` was built with (its Dense chain's last
    argument: dense_packed_forward(h, weights, biases, acts, outs, threads))."""
    return m.plan_for(n).head[0][1][-1]


def test_a_loaded_model_follows_set_num_threads_and_a_pinned_one_does_not(tmp_path):
    """threads=None: every later set_num_threads re-plans at the next call (batch-1 runner
    and larger batches alike), with the same bits; threads=2 stays 2 whatever the setting."""
    path = _saved(tmp_path)
    L.set_num_threads(1)
    follows, pinned = rt.load(path), rt.load(path, threads=2)
    x = np.random.default_rng(1).standard_normal((64, 300)).astype(np.float32)
    want1, want = follows.predict(x[:1]), follows.predict(x)
    assert follows.threads == 1 and _plan_threads(follows, 64) == 1
    for n in (3, 2, 1, 3):
        L.set_num_threads(n)
        np.testing.assert_array_equal(follows.predict(x[:1]), want1)  # the runner re-bound
        assert follows._fast[1].threads == n
        np.testing.assert_array_equal(follows.predict(x), want)
        assert follows.threads == n and _plan_threads(follows, 64) == n
        np.testing.assert_array_equal(pinned.predict(x), want)
        assert pinned.threads == 2 and _plan_threads(pinned, 64) == 2
    pinned.threads = None  # follows again
    assert pinned.threads == 3
    L.set_num_threads(None)
    assert follows.threads == L.get_num_threads()
    with pytest.raises(ValueError, match="positive int or None"):
        follows.threads = 0


def test_set_num_threads_holds_its_followers_weakly(tmp_path):
    """Only models that follow the setting are told, and a dropped model is forgotten."""
    import gc

    from lepton_nn.backend import threads as T

    path = _saved(tmp_path)
    follows, pinned = rt.load(path), rt.load(path, threads=1)
    assert follows in T._followers and pinned not in T._followers
    pinned.threads = None
    assert pinned in T._followers
    n = len(T._followers)
    refs = [weakref.ref(follows), weakref.ref(pinned)]
    del follows, pinned
    gc.collect()
    # the set did not keep them alive, and forgot them (other tests' dropped models that
    # gc.collect() frees here may leave it too: hence <=)
    assert all(r() is None for r in refs)
    assert len(T._followers) <= n - 2


def test_set_num_threads_while_others_predict(tmp_path):
    """Threads predicting while the setting changes under them: every result is right and
    the model ends on the last setting."""
    path = _saved(tmp_path)
    m = rt.load(path)
    x = np.random.default_rng(2).standard_normal((32, 300)).astype(np.float32)
    want = m.predict(x)
    errors: list = []
    stop = threading.Event()

    def work():
        try:
            while not stop.is_set():
                np.testing.assert_array_equal(m.predict(x), want)
                np.testing.assert_array_equal(m.predict(x[:1]), want[:1])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        for n in (2, 1, 3, 1, 2, 3) * 4:
            L.set_num_threads(n)
            m.predict(x[:1])
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not errors, errors[0]
    assert m.threads == 3 and _plan_threads(m, 32) == 3


def test_runtime_import_stays_numpy_only():
    """Following the setting reads lepton_nn.backend.threads, never the training stack."""
    code = (
        "import sys, lepton_nn.runtime as rt, lepton_nn as L; L.set_num_threads(2); "
        "bad = [m for m in sys.modules if m.startswith(('lepton_nn.nn', 'lepton_nn.autograd', "
        "'lepton_nn.ops', 'numba', 'lepton_nn.train'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
