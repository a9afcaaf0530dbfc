"""The dtype contract for layers without weights: they compute in their input's float dtype,
so a model built from float64 layers computes in float64 end to end (eager, gradients,
training data, the runtime plan) without ``astype``; float32 stays the default."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import Tensor, nn, runtime
from lepton_nn.autograd import gradcheck

F64 = "float64"


def _weightless():
    """(layer, input shape) for every layer without weights."""
    return [
        (nn.Flatten(), (2, 3, 4)),
        (nn.Permute((2, 1)), (2, 3, 4)),
        (nn.Dropout(0.3), (2, 5)),
        (nn.MaxPool2D(2), (2, 2, 4, 4)),
        (nn.AvgPool2D(2, padding=1), (2, 2, 4, 4)),
        (nn.GlobalAvgPool2D(), (2, 2, 4, 4)),
        (nn.Pad1D(1, mode="reflect"), (2, 2, 5)),
        (nn.Pad2D(1), (2, 2, 3, 3)),
        (nn.Sign(), (2, 5)),
        (nn.Clip(-0.5, 0.5), (2, 5)),
        (nn.LeakyReLU(0.1), (2, 5)),
        (nn.ELU(), (2, 5)),
        (nn.HardSigmoid(), (2, 5)),
        (nn.GELU(approximate="none"), (2, 5)),
        *[(nn.Activation(a), (2, 5)) for a in nn.layers.ACTIVATION_NAMES],
    ]


@pytest.mark.parametrize("k", range(len(_weightless())))
def test_a_layer_without_weights_computes_in_its_inputs_float_dtype(k):
    layer, shape = _weightless()[k]
    x = np.random.default_rng(0).normal(size=shape)
    ref = copy.deepcopy(layer).astype(F64)  # the old workaround: the layer told float64
    for lay in (layer, ref):
        lay.training = False
    xt = Tensor(x, requires_grad=True)
    y = layer(xt)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.data, ref(x).data)  # no float32 hop in between
    y.sum().backward()
    assert xt.grad.dtype == np.float64
    assert layer(x.astype(np.float32)).dtype == np.float32  # float32 stays float32
    assert layer(np.ones(shape, np.int64)).dtype == np.float32  # other numbers: its dtype


def test_dropout_in_training_keeps_float64():
    layer = nn.Dropout(0.5)
    y = layer(np.ones((4, 50)))
    assert y.dtype == np.float64 and set(np.unique(y.data)) <= {0.0, 2.0}


def _float64_image_model():
    return nn.Sequential(
        [
            nn.Conv2D(3, 3, padding="same", dtype=F64),
            nn.BatchNorm(dtype=F64),
            nn.ReLU(),
            nn.MaxPool2D(2),
            nn.Pad2D(1),
            nn.AvgPool2D(2),
            nn.Dropout(0.2),
            nn.Flatten(),
            nn.Dense(4, "tanh", dtype=F64),
            nn.Softmax(),
        ]
    )


def test_a_sequential_of_float64_layers_is_float64_through_every_layer():
    model = _float64_image_model()
    x = np.random.default_rng(1).normal(size=(3, 2, 6, 6))
    model(x)  # builds
    model.eval()
    seen = {}
    for layer in model:
        layer.register_forward_hook(lambda m, i, o: seen.__setitem__(m.name, o.dtype))
    y = model(x)
    assert set(seen.values()) == {np.dtype(F64)}, seen
    assert model.dtype == np.float64  # so the trainer casts data to float64 too
    ref = copy.deepcopy(model).astype(F64)
    np.testing.assert_array_equal(y.data, ref(x).data)


def test_dense_flatten_dense_in_float64_matches_numpy():
    model = nn.Sequential([nn.Dense(6, dtype=F64), nn.Flatten(), nn.Dense(2, dtype=F64)])
    x = np.random.default_rng(2).normal(size=(4, 3, 5))
    y = model(x).numpy()
    w1, b1 = model[0].weight.data, model[0].bias.data
    w2, b2 = model[2].weight.data, model[2].bias.data
    ref = (x @ w1 + b1).reshape(4, -1) @ w2 + b2
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-13)


def test_gradcheck_through_flatten_and_pooling_without_astype():
    # central differences with eps 1e-6 need float64 all the way: a float32 hop fails them
    layers = [nn.Conv2D(2, 3, dtype=F64), nn.AvgPool2D(2), nn.ELU(), nn.Flatten()]
    model = nn.Sequential([*layers, nn.Dense(3, dtype=F64)])
    x = Tensor(np.random.default_rng(3).normal(size=(2, 1, 6, 6)), requires_grad=True)
    model(x)
    assert gradcheck(model, x, atol=1e-7, rtol=1e-6)


def test_graph_model_merges_stay_float64():
    a, b = nn.Input((5,), name="a", dtype=F64), nn.Input((5,), name="b", dtype=F64)
    ha, hb = nn.Dense(4, dtype=F64)(a), nn.Dense(4, dtype=F64)(b)
    joined = nn.Concatenate()([nn.Add()([ha, hb]), nn.ReLU()(hb), nn.Average()([ha, hb])])
    model = nn.Model([a, b], nn.Dense(2, dtype=F64)(nn.Multiply()([joined, joined])))
    assert model.dtype == np.float64
    rs = np.random.default_rng(4)
    xa, xb = rs.normal(size=(3, 5)), rs.normal(size=(3, 5))
    y = model(xa, xb)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.data, copy.deepcopy(model).astype(F64)(xa, xb).data)


def test_a_merge_of_float32_and_float64_computes_in_float64():
    x32, x64 = np.ones((2, 3), np.float32) / 3, np.ones((2, 3)) / 3
    for merge in (nn.Add(), nn.Concatenate(), nn.Maximum()):
        y = merge([x32, x64])
        assert y.dtype == np.float64
    assert nn.Add()([x32, x32]).dtype == np.float32


def test_float64_model_runs_the_same_eager_and_in_the_runtime(tmp_path):
    model = _float64_image_model()
    x = np.random.default_rng(5).normal(size=(3, 2, 6, 6))
    model(x)
    model.eval()
    path = tmp_path / "m.lnn"
    ln.save(model, path)
    out = np.asarray(runtime.load(path).predict(x))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-12, atol=1e-14)


def test_float32_stays_the_default():
    model = nn.Sequential([nn.Flatten(), nn.Dense(2), nn.ReLU()])
    assert model.dtype == np.float32
    assert model(np.ones((2, 2, 3))).dtype == np.float32  # float64 data: the Dense casts
    assert nn.Sequential([nn.ReLU()]).astype(F64).dtype == np.float64
