"""Streaming sessions (lepton_nn.runtime.stream) against whole-sequence inference.

The oracle for a stream fed x_1..x_t is the same file run on the whole padded window:
``predict(x, lengths=[t])`` when the last recurrent layer returns its final state (the
runtime's lengths are themselves checked against the layers in test_runtime), row t of
``predict(x)`` when it returns sequences.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.errors import LeptonError, ShapeError
from lepton_nn.runtime.stream import StreamLimitError, StreamSession

T, F = 7, 3


def _save(tmp_path, name, layers, shape=(T, F), seed=0):
    L.set_seed(seed)
    model = nn.Sequential(layers)
    model.build((None, *shape))
    model.eval()
    model(np.zeros((1, *shape), model.dtype))
    path = tmp_path / f"{name}.lnn"
    L.save(model, path)
    return path, model


def _stack(cell, sequences):
    make = getattr(nn, cell)
    head = [nn.Activation("tanh")] if sequences else [nn.Dense(4), nn.ReLU(), nn.Dense(3)]
    return [make(6, return_sequences=True), nn.ReLU(), make(5, return_sequences=sequences), *head]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """cell, sequences -> the served file (LSTM, GRU, SimpleRNN; final state or sequences)."""
    folder = tmp_path_factory.mktemp("stream")
    out = {}
    for cell in ("LSTM", "GRU", "SimpleRNN"):
        for sequences in (False, True):
            path, _ = _save(folder, f"{cell}{sequences}", _stack(cell, sequences))
            out[cell, sequences] = rt.load(path)
    return out


def _oracle(model, x, sequences):
    """Output after each step t (T, N, ...) by whole-sequence runs."""
    if sequences:
        return model.predict(x).transpose(1, 0, 2)
    n = x.shape[0]
    return np.stack([model.predict(x, lengths=np.full(n, t + 1)) for t in range(x.shape[1])])


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("sequences", [False, True])
def test_any_interleaving_matches_whole_sequences(served, cell, sequences, data):
    """Streams advance in random groups and orders (a chunking of every stream's steps), a
    session exported and imported midway: each output equals the whole-sequence run's."""
    model = served[cell, sequences]
    n = data.draw(st.integers(1, 5), label="streams")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    x = np.random.default_rng(seed).standard_normal((n, T, F)).astype(np.float32)
    want = _oracle(model, x, sequences)
    keys = [f"card-{i}" for i in range(n)]
    done = [0] * n
    session = model.stream()
    restart_at = data.draw(st.integers(0, n * T), label="restart after this many steps")
    taken = 0
    while min(done) < T:
        open_ = [i for i in range(n) if done[i] < T]
        group = data.draw(st.lists(st.sampled_from(open_), min_size=1, unique=True))
        y = session.step(x[group, [done[i] for i in group]], keys=[keys[i] for i in group])
        for row, i in enumerate(group):
            np.testing.assert_allclose(y[row], want[done[i], i], rtol=1e-6, atol=1e-6)
            done[i] += 1
        taken += len(group)
        if taken >= restart_at > taken - len(group):
            state = session.export_state()
            session = model.stream()
            session.import_state(state)
    assert sorted(session.keys()) == sorted(keys)
    assert all(session.steps_taken(k) == T for k in keys)


def test_one_stream_of_one_dimension_and_default_keys(served):
    model = served["GRU", False]
    x = np.random.default_rng(3).standard_normal((2, T, F)).astype(np.float32)
    want = _oracle(model, x, False)
    one = model.stream()
    for t in range(T):
        np.testing.assert_allclose(one.step(x[0, t])[0], want[t, 0], rtol=1e-6, atol=1e-6)
    assert one.keys() == [None]
    both = model.stream()
    for t in range(T):
        y = both.step(x[:, t])  # keys 0..S-1
        np.testing.assert_allclose(y, want[t], rtol=1e-6, atol=1e-6)
    assert both.keys() == [0, 1]


def test_reset_and_drop(served):
    model = served["LSTM", False]
    x = np.random.default_rng(4).standard_normal((1, T, F)).astype(np.float32)
    want = _oracle(model, x, False)
    s = model.stream()
    for t in range(3):
        s.step(x[0, t], keys=["a"])
        s.step(x[0, t] * 2, keys=["b"])
    s.reset("a")
    assert s.steps_taken("a") == 0
    np.testing.assert_allclose(s.step(x[0, 0], ["a"])[0], want[0, 0], rtol=1e-6, atol=1e-6)
    s.drop("a")
    assert s.keys() == ["b"]
    np.testing.assert_allclose(s.step(x[0, 0], ["a"])[0], want[0, 0], rtol=1e-6, atol=1e-6)
    with pytest.raises(LeptonError, match="no live stream"):
        s.drop("zzz")
    with pytest.raises(LeptonError, match="twice"):
        s.step(x[0, :2], keys=["a", "a"])


def test_many_streams_grow_and_stay_separate(served):
    """1,000 streams (the state arrays grow from 16 rows) give what each stream alone gives."""
    model = served["SimpleRNN", True]
    x = np.random.default_rng(5).standard_normal((1000, 3, F)).astype(np.float32)
    s = model.stream(max_streams=1000)
    for t in range(3):
        y = s.step(x[:, t], keys=range(1000))
    want = model.predict(np.pad(x, ((0, 0), (0, T - 3), (0, 0))))[:, 2]
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_limit_and_idle_expiry(served):
    model = served["GRU", True]
    now = [0.0]
    s = StreamSession(model, max_streams=2, idle_seconds=10, clock=lambda: now[0])
    x = np.ones(F, np.float32)
    s.step(x, ["a"])
    s.step(x, ["b"])
    with pytest.raises(StreamLimitError, match="max_streams=2"):
        s.step(x, ["c"])
    now[0] = 5.0
    s.step(x, ["a"])
    now[0] = 12.0  # b idle for 12 s, a for 7 s: b expires to make room
    s.step(x, ["c"])
    assert sorted(s.keys()) == ["a", "c"]
    now[0] = 40.0  # a sweep at the next step drops every idle stream
    s.step(x, ["d"])
    assert s.keys() == ["d"]


def test_bad_input_and_refused_networks(tmp_path, served):
    model = served["LSTM", True]
    s = model.stream()
    with pytest.raises(ShapeError, match=f"takes {F} features"):
        s.step(np.ones(F + 1))
    with pytest.raises(ShapeError, match="2 rows of x_t but 1 keys"):
        s.step(np.ones((2, F)), keys=["a"])
    with pytest.raises(LeptonError, match="NaN"):
        s.step(np.full(F, np.nan))
    with pytest.raises(LeptonError, match="hashable"):
        s.step(np.ones((1, F)), keys=[["a"]])
    with pytest.raises(LeptonError, match="import_state"):
        s.import_state({"format": "lepton_nn.stream-state", "keys": ["a"], "steps": [1],
                        "states": [np.zeros((1, 6))]})  # fmt: skip
    assert len(s) == 0
    path, _ = _save(tmp_path, "bi", [nn.GRU(4, bidirectional=True), nn.Dense(2)])
    with pytest.raises(LeptonError, match="bidirectional"):
        rt.load(path).stream()
    path, _ = _save(tmp_path, "flat", [nn.LSTM(4, return_sequences=True), nn.Flatten(),
                                       nn.Dense(2)])  # fmt: skip
    with pytest.raises(LeptonError, match="reads more than one time step"):
        rt.load(path).stream()
    path, _ = _save(tmp_path, "mlp", [nn.Dense(3)], shape=(F,))
    with pytest.raises(LeptonError, match="sequences"):
        rt.load(path).stream()


def test_int8_recurrent_stream_matches_the_int8_plan(tmp_path):
    """int8 weights: the input and recurrent products quantize per row at each step, as the
    plan does, so a stream gives the plan's outputs."""
    from lepton_nn.compress import quantize

    _, model = _save(tmp_path, "f", [nn.LSTM(8, return_sequences=True), nn.GRU(6), nn.Dense(3)])
    x = np.random.default_rng(6).standard_normal((4, T, F)).astype(np.float32)
    L.save(quantize(model, x), tmp_path / "q.lnn")
    q = rt.load(tmp_path / "q.lnn")
    assert "int8" in q.describe()
    want = _oracle(q, x, False)
    s = q.stream()
    for t in range(T):
        np.testing.assert_allclose(s.step(x[:, t], "wxyz"), want[t], rtol=1e-5, atol=1e-5)


def test_float64_network(tmp_path):
    L.set_seed(1)
    model = nn.Sequential([nn.LSTM(5, dtype="float64"), nn.Dense(2, dtype="float64")])
    model.build((None, T, F))
    model.eval()
    L.save(model, tmp_path / "d.lnn")
    served = rt.load(tmp_path / "d.lnn")
    x = np.random.default_rng(7).standard_normal((2, T, F))
    s = served.stream()
    for t in range(T):
        y = s.step(x[:, t])
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, served.predict(x), rtol=1e-12, atol=1e-12)
