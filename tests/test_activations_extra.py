"""The activations beyond the fused five (LeakyReLU, ReLU6, ELU, SELU, hard-sigmoid,
hard-swish, softplus, mish, exact GELU, sign, clip): float64 gradchecks, PyTorch as the
oracle for values and gradients, string activations on Dense/Conv2D, and save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import Tensor, nn
from lepton_nn.autograd import gradcheck
from lepton_nn.backend.activations import erf

torch = pytest.importorskip("torch")
F = torch.nn.functional

# name -> (our Tensor method call, torch's function)
CASES = {
    "leaky_relu": (lambda t: t.leaky_relu(0.1), lambda t: F.leaky_relu(t, 0.1)),
    "relu6": (lambda t: t.relu6(), F.relu6),
    "elu": (lambda t: t.elu(0.7), lambda t: F.elu(t, 0.7)),
    "selu": (lambda t: t.selu(), F.selu),
    "hard_sigmoid": (
        lambda t: t.hard_sigmoid(0.3, 0.4),
        lambda t: torch.clamp(0.3 * t + 0.4, 0, 1),
    ),
    "hard_sigmoid_torch": (lambda t: t.hard_sigmoid(1 / 6, 0.5), F.hardsigmoid),
    "hard_swish": (lambda t: t.hard_swish(), F.hardswish),
    "softplus": (lambda t: t.softplus(), F.softplus),
    "mish": (lambda t: t.mish(), F.mish),
    "gelu_erf": (lambda t: t.gelu(approximate="none"), F.gelu),
    "gelu_tanh": (lambda t: t.gelu(), lambda t: F.gelu(t, approximate="tanh")),
    "sign": (lambda t: t.sign(), torch.sign),
    "clip": (lambda t: t.clip(-0.5, 0.8), lambda t: torch.clamp(t, -0.5, 0.8)),
}


def _points(seed=0):
    """Values spread over [-8, 8], away from the kinks (0, +-3, 6, the clip bounds) so that
    central differences see one side only."""
    x = np.random.default_rng(seed).uniform(-8, 8, (4, 7))
    kinks = np.array([0, 3, -3, 6, -0.5, 0.8, -4 / 3, 5 / 3, -1.25, 0.25])
    near = np.abs(x[..., None] - kinks).min(axis=-1) < 1e-3
    return np.where(near, x + 0.01, x)


@pytest.mark.parametrize("name", CASES)
def test_matches_torch_values_and_gradients(name):
    ours, theirs = CASES[name]
    x = _points()
    w = np.random.default_rng(1).standard_normal(x.shape)
    t = Tensor(x, requires_grad=True)
    (ours(t) * Tensor(w)).sum().backward()
    tt = torch.tensor(x, requires_grad=True)
    (theirs(tt) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.tensor(x)).numpy(), 1e-12, 1e-14)
    # torch's hardsigmoid backward multiplies by a float32 1/6 (a 3e-8 relative difference)
    rtol = 1e-7 if name == "hard_sigmoid_torch" else 1e-10
    np.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol, 1e-12)


@pytest.mark.parametrize("name", [n for n in CASES if n != "sign"])
def test_gradcheck(name):
    ours, _ = CASES[name]
    assert gradcheck(ours, Tensor(_points(2), requires_grad=True))


@pytest.mark.parametrize("name", CASES)
def test_float32_stays_float32(name):
    y = CASES[name][0](Tensor(_points().astype(np.float32), requires_grad=True))
    assert y.dtype == np.float32
    y.sum().backward()


def test_erf_matches_math_erf():
    x = np.concatenate([np.linspace(-9, 9, 20001), [0.0, -0.0, 1e-300, 40, -40]])
    np.testing.assert_allclose(erf(x), [math.erf(v) for v in x], rtol=0, atol=1e-15)
    assert np.isnan(erf(np.array([np.nan]))).all()
    assert list(erf(np.array([np.inf, -np.inf]))) == [1, -1]


def test_softplus_and_mish_do_not_overflow():
    x = Tensor(np.array([-1000.0, 1000.0], np.float32), requires_grad=True)
    y = x.softplus() + x.mish()
    y.sum().backward()
    assert np.isfinite(y.data).all() and np.isfinite(x.grad).all()


LAYERS = [
    (nn.ReLU(), F.relu),  # a float64 file gives float64 weightless layers too
    (nn.LeakyReLU(0.2), lambda t: F.leaky_relu(t, 0.2)),
    (nn.ReLU6(), F.relu6),
    (nn.ELU(0.5), lambda t: F.elu(t, 0.5)),
    (nn.SELU(), F.selu),
    (nn.HardSigmoid(), lambda t: torch.clamp(0.2 * t + 0.5, 0, 1)),
    (nn.HardSwish(), F.hardswish),
    (nn.Softplus(), F.softplus),
    (nn.Mish(), F.mish),
    (nn.GELU("none"), F.gelu),
    (nn.GELU(), lambda t: F.gelu(t, approximate="tanh")),
    (nn.Sign(), torch.sign),
    (nn.Clip(-1.0, 2.0), lambda t: torch.clamp(t, -1, 2)),
    (nn.Clip(max=1.5), lambda t: torch.clamp(t, max=1.5)),
]


@pytest.mark.parametrize("layer,theirs", LAYERS, ids=lambda v: type(v).__name__)
def test_layers_match_torch_and_round_trip(tmp_path, layer, theirs):
    x = _points(3)
    model = nn.Sequential([nn.Dense(7, in_features=7), layer]).astype("float64")
    h = model.layers[0](x).data
    np.testing.assert_allclose(model(x).data, theirs(torch.tensor(h)).numpy(), 1e-12, 1e-14)
    ln.save(model, tmp_path / "m.lnn")
    back = ln.load(tmp_path / "m.lnn")
    assert type(back.layers[1]) is type(layer)
    assert back.layers[1].get_config() == {**layer.get_config(), "name": back.layers[1].name}
    np.testing.assert_array_equal(back(x).data, model(x).data)


STRINGS = {
    "leaky_relu": lambda t: F.leaky_relu(t, 0.01),
    "relu6": F.relu6,
    "elu": F.elu,
    "selu": F.selu,
    "hard_sigmoid": lambda t: torch.clamp(0.2 * t + 0.5, 0, 1),
    "hard_swish": F.hardswish,
    "softplus": F.softplus,
    "mish": F.mish,
    "gelu_erf": F.gelu,
}


@pytest.mark.parametrize("name", STRINGS)
def test_string_activation_on_dense_and_conv(name):
    ln.set_seed(0)
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5)) * 3
    conv = nn.Conv2D(4, 3, activation=name, in_channels=2).astype("float64")
    plain = nn.Conv2D(4, 3, in_channels=2).astype("float64")
    plain.weight.data, plain.bias.data = conv.weight.data, conv.bias.data + 0.3
    conv.bias.data = plain.bias.data
    np.testing.assert_allclose(
        conv(x).data, STRINGS[name](torch.tensor(plain(x).data)).numpy(), 1e-12, 1e-14
    )
    dense = nn.Dense(4, name, in_features=50).astype("float64")
    xf = x.reshape(3, -1)
    z = xf @ dense.weight.data + dense.bias.data
    np.testing.assert_allclose(dense(xf).data, STRINGS[name](torch.tensor(z)).numpy(), 1e-12)
    assert gradcheck(lambda t: dense(t), Tensor(xf[:, :50], requires_grad=True))


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")
    with pytest.raises(ValueError, match="above max"):
        nn.Clip(2, 1)
    with pytest.raises(ValueError, match="finite"):
        nn.LeakyReLU(float("nan"))
    with pytest.raises(ValueError, match="unknown activation"):
        nn.Dense(3, "swishy")
