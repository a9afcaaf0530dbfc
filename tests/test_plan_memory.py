"""``InferenceModel.plan_info()["weight_bytes"]``: every array the plan's steps hold, counted
against the real arrays' ``nbytes``: the weights, and the kernels' copies of them (the direct
convolution's packed filters ``_packed``, the Winograd filters ``_winograd``, the Dense panels)
and the recurrent layers' matrices (held in lists of tuples)."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
import lepton_nn.runtime as rt
from lepton_nn import nn


def _saved(tmp_path, layers, x):
    ln.set_seed(0)
    model = nn.Sequential(layers)
    model(x)
    model.eval()
    ln.save(model, tmp_path / "m.lnn")
    return model, rt.load(tmp_path / "m.lnn", threads=1)


def _base(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _conv_parts(served):
    return [p for s in served.network.steps for p in getattr(s, "parts", [s]) if hasattr(p, "w2")]


def test_conv_plan_counts_packed_and_winograd_filters(tmp_path):
    # 3x3 + pool with 8 input channels: the second layer takes the Winograd tiling in a chain
    layers = [nn.Conv2D(8, 3, padding="same", in_channels=3), nn.ReLU(), nn.MaxPool2D(2)]
    layers += [nn.Conv2D(16, 3, padding="same"), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten()]
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    model, served = _saved(tmp_path, layers, x)
    np.testing.assert_allclose(served.predict(x), model(x).data, rtol=1e-4, atol=1e-5)
    got = served.plan_info(1)["weight_bytes"]
    params = sum(p.data.nbytes for p in model.parameters())
    copies = []
    for p in _conv_parts(served):
        copies += [c[1] for c in (getattr(p, "_packed", None), getattr(p, "_winograd", None)) if c]
    if not copies:
        pytest.skip("this backend keeps no packed copy of the filters (the NumPy twins)")
    assert got == params + sum(_base(c).nbytes for c in copies)
    # with the compiled kernels both copies are there: the test covers both caches
    from lepton_nn.backend.reference import ReferenceBackend
    from lepton_nn.runtime.kernels import kernels

    if type(kernels()).conv2d_winograd_pack is not ReferenceBackend.conv2d_winograd_pack:
        assert any(getattr(p, "_winograd", None) for p in _conv_parts(served))
        assert all(getattr(p, "_packed", None) for p in _conv_parts(served))


def test_recurrent_plan_counts_its_matrices(tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 7, 5)).astype(np.float32)
    model, served = _saved(tmp_path, [nn.LSTM(16), nn.Dense(2)], x)
    np.testing.assert_allclose(served.predict(x), model(x).data, rtol=1e-4, atol=1e-5)
    got = served.plan_info(1)["weight_bytes"]
    params = sum(p.data.nbytes for p in model.parameters())
    dense = served.network.steps[-1]
    if dense.panels is not None:  # W replaced by its panels (16 columns, 64-byte aligned)
        params += _base(dense.panels).nbytes - dense.shape[0] * dense.shape[1] * 4
    assert got == params


def test_views_of_one_array_count_once():
    from lepton_nn.runtime.model import held_bytes

    class Step:  # a step-like holder: in a step module as far as held_bytes is concerned
        __module__ = "lepton_nn.runtime.steps_test"

    a = np.zeros(100, np.float32)
    s = Step()
    s.w, s.w2, s.cache = a, a.reshape(10, 10), (a[:10], {"k": np.ones(3)})
    assert held_bytes([s]) == a.nbytes + 3 * 8
