"""BatchNorm and LayerNorm: gradient checks, PyTorch oracle (training, running stats, eval),
buffers in state dicts, errors."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import ShapeError, Tensor, gradcheck
from lepton_nn.nn import BatchNorm, Conv2D, Dense, LayerNorm, Sequential
from lepton_nn.nn.serialize import layer_from_config, layer_to_config
from lepton_nn.ops.norm import batch_norm, layer_norm


def data(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def t(shape, seed=0, grad=True):
    return Tensor(data(shape, seed), requires_grad=grad)


# -- gradient checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 2), (2, 3, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck(shape, training):
    c = shape[1]
    rm, rv = data(c, 7), np.abs(data(c, 8)) + 0.5

    def f(x, g, b):
        return batch_norm(x, g, b, rm.copy(), rv.copy(), training=training)

    assert gradcheck(f, t(shape), t((c,), 1), t((c,), 2))


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4)])
def test_layer_norm_gradcheck(shape):
    d = shape[-1]
    assert gradcheck(layer_norm, t(shape), t((d,), 1), t((d,), 2))


# -- PyTorch oracle ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 4), (4, 3, 5, 5)])
def test_batch_norm_matches_torch_over_steps_then_eval(shape):
    torch = pytest.importorskip("torch")
    c = shape[1]
    ln.set_seed(0)
    ours = BatchNorm(momentum=0.2, eps=1e-3, dtype="float64")
    theirs = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(
        c, eps=1e-3, momentum=0.2
    ).double()
    ours.build((None, *shape[1:]))
    w, b = data(c, 1), data(c, 2)
    ours.weight.data, ours.bias.data = w.copy(), b.copy()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(w))
        theirs.bias.copy_(torch.tensor(b))
    for step in range(3):
        x = data(shape, 10 + step) * 2 + 1
        gy = data(shape, 20 + step)
        X, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, ty = ours(X), theirs(tx)
        y.backward(gy)
        ty.backward(torch.tensor(gy))
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(X.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-12)
    ours.eval()
    theirs.eval()
    x = data(shape, 99)
    X, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = ours(X), theirs(tx)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(X.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_layer_norm_matches_torch():
    torch = pytest.importorskip("torch")
    ours = LayerNorm(features=6, dtype="float64")
    ours.weight.data, ours.bias.data = data(6, 1), data(6, 2)
    x = data((3, 4, 6), 3)
    X = Tensor(x, requires_grad=True)
    tx, tw, tb = (
        torch.tensor(a, requires_grad=True) for a in (x, ours.weight.data, ours.bias.data)
    )
    y = ours(X)
    ty = torch.nn.functional.layer_norm(tx, (6,), tw, tb, eps=1e-5)
    gy = data(y.shape, 4)
    y.backward(gy)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for a, b in ((X.grad, tx.grad), (ours.weight.grad, tw.grad), (ours.bias.grad, tb.grad)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-9, atol=1e-11)


# -- layers ------------------------------------------------------------------------------------


def test_batch_norm_modes_buffers_and_state_dict():
    ln.set_seed(0)
    model = Sequential([Conv2D(3, 3, padding="same"), BatchNorm(), Dense(2)])
    x = data((4, 2, 5, 5), dtype=np.float32) * 3 + 2
    model(x)
    bn = model[1]
    assert bn.running_mean.dtype == np.float32 and np.any(bn.running_mean != 0)
    sd = model.state_dict()
    assert {"layers.1.running_mean", "layers.1.running_var"} <= set(sd)
    before = bn.running_mean.copy()
    model.eval()
    y1 = model(x).data
    np.testing.assert_array_equal(bn.running_mean, before)  # eval leaves the stats alone
    np.testing.assert_array_equal(model(x).data, y1)  # and depends on no batch
    ln.set_seed(1)
    twin = Sequential([Conv2D(3, 3, padding="same"), BatchNorm(), Dense(2)])
    twin(x)
    twin.load_state_dict(sd)
    twin.eval()
    np.testing.assert_allclose(twin(x).data, y1, rtol=1e-6)
    with pytest.raises(ShapeError, match="running_var"):
        bn.load_buffers({"running_var": np.ones(4)})


def test_norm_errors_and_config():
    bn = BatchNorm(name="bn")
    bn(np.ones((4, 3), np.float32))
    with pytest.raises(ShapeError, match=r"'bn'.*\(batch, 3, \.\.\.\).*\(4, 5\)"):
        bn(np.ones((4, 5), np.float32))
    with pytest.raises(ShapeError, match="more than one value"):
        bn(np.ones((1, 3), np.float32))
    with pytest.raises(ShapeError, match=r"LayerNorm.*\(\.\.\., 4\)"):
        LayerNorm(features=4)(np.ones((2, 3), np.float32))
    for layer in (BatchNorm(momentum=0.01, num_features=3), LayerNorm(eps=1e-3, features=5)):
        again = layer_from_config(layer_to_config(layer))
        assert layer_to_config(again) == layer_to_config(layer)
