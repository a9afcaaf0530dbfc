"""API names the issues promised (issue 16): ``ops.matmul_int8``, a Sequential of built layers
that saves without ``build``, and ``EarlyStopping`` saying why it stopped."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import backend, nn
from lepton_nn.ops import matmul_int8
from lepton_nn.ops.int8 import MAX_K


def _exact(a, b):
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


def _isas():
    try:
        from lepton_nn.kernels import _qgemm
    except ImportError:
        return [None]
    return [None, *_qgemm.supported_isas()]


@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize("name", backend.available())
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (3, 5, 7), (17, 33, 19), (64, 129, 65), (2, 0, 3)])
def test_matmul_int8_is_exact_on_every_backend_and_int8_path(name, isa, m, k, n):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    before = None
    if isa is not None:
        from lepton_nn.kernels import _qgemm

        before = _qgemm.isa()
        _qgemm.set_isa(isa)
    try:
        with backend.use_backend(name):
            got = matmul_int8(a, b)
            extremes = matmul_int8(np.full((2, k), -128, np.int8), np.full((k, 3), -128, np.int8))
    finally:
        if before is not None:
            _qgemm.set_isa(before)
    assert got.dtype == np.int32 and got.shape == (m, n)
    np.testing.assert_array_equal(got, _exact(a, b))
    np.testing.assert_array_equal(extremes, np.full((2, 3), 16384 * k, np.int32))


def test_matmul_int8_takes_any_layout_and_the_deepest_exact_k():
    rng = np.random.default_rng(1)
    a = np.asfortranarray(rng.integers(-128, 128, (9, 40)).astype(np.int8))
    b = rng.integers(-128, 128, (30, 40)).astype(np.int8).T  # a transposed view
    np.testing.assert_array_equal(matmul_int8(a, b), _exact(a, b))
    deep_a, deep_b = np.full((1, MAX_K), -128, np.int8), np.full((MAX_K, 1), -128, np.int8)
    assert matmul_int8(deep_a, deep_b)[0, 0] == 16384 * MAX_K  # < 2**31


@pytest.mark.parametrize(
    "a, b, err",
    [
        (np.zeros((2, 3), np.float32), np.zeros((3, 2), np.int8), TypeError),
        (np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8), ValueError),
        (np.zeros((2, 3, 1), np.int8), np.zeros((3, 2), np.int8), ValueError),
        (np.zeros((1, MAX_K + 1), np.int8), np.zeros((MAX_K + 1, 1), np.int8), ValueError),
    ],
)
def test_matmul_int8_refuses_what_it_cannot_multiply_exactly(a, b, err):
    with pytest.raises(err, match="matmul_int8"):
        matmul_int8(a, b)


def test_a_sequential_of_layers_built_with_their_sizes_saves_without_build(tmp_path):
    model = nn.Sequential([nn.Dense(8, "relu", in_features=4), nn.Dense(2, in_features=8)])
    assert model.built
    path = str(tmp_path / "m.lnn")
    ln.save(model, path)  # no model.build(...) first
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(ln.load(path)(x).data, model(x).data, rtol=1e-6)
    np.testing.assert_allclose(ln.runtime.load(path).predict(x), model(x).data, rtol=1e-5)


def test_a_lazy_sequential_still_asks_for_build(tmp_path):
    model = nn.Sequential([nn.Dense(8, "relu", in_features=4), nn.Dense(2)])
    with pytest.raises(ln.LeptonError, match="build"):
        ln.save(model, str(tmp_path / "m.lnn"))


def test_early_stopping_sets_the_stop_reason_and_says_it(capsys):
    from lepton_nn import losses, optim
    from lepton_nn.train import EarlyStopping, Trainer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    y = rng.normal(size=(64, 1)).astype(np.float32)
    ln.set_seed(0)
    net = nn.Sequential([nn.Dense(1, in_features=3)])
    t = Trainer(net, losses.mse, optim.SGD(net.parameters(), lr=0.0))  # never improves
    es = EarlyStopping(monitor="val_loss", patience=2)
    h = t.fit(X, y, epochs=10, validation_data=(X, y), callbacks=[es], verbose=0)
    assert es.stopped_epoch == 2 and h.stop_reason is not None
    assert "early stopping at epoch 3" in h.stop_reason and "val_loss" in h.stop_reason
    assert capsys.readouterr().out == ""  # verbose=0: kept, not printed
    h = t.fit(X, y, epochs=10, validation_data=(X, y), callbacks=[es], verbose=2)
    assert "early stopping at epoch 3: val_loss did not improve for 2 epochs" in (
        capsys.readouterr().out
    )
