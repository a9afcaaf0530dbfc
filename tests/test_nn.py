"""Layers and modules: lazy building, errors, state dicts, modes, initializers, configs, seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import Tensor, losses, optim
from lepton_nn.errors import LeptonError, ModelFormatError, NotBuiltError, ShapeError
from lepton_nn.nn import (
    GELU,
    INITIALIZERS,
    Activation,
    Dense,
    Dropout,
    Flatten,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    get_initializer,
    layer_from_config,
    layer_to_config,
)


def mlp(n_in=None):
    model = Sequential([Dense(8, "relu"), Dropout(0.25), Dense(3)])
    return model if n_in is None else model.build((None, n_in))


def x_batch(n=5, d=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# -- Dense and lazy building ------------------------------------------------------------------


def test_dense_builds_lazily_at_first_call():
    layer = Dense(3, activation="tanh")
    assert not layer.built and layer.weight is None and layer.in_features is None
    y = layer(x_batch(5, 4))
    assert layer.built and layer.in_features == 4
    assert layer.weight.shape == (4, 3) and layer.bias.shape == (3,)
    assert isinstance(layer.weight, Parameter)
    assert y.shape == (5, 3) and y.dtype == np.float32
    expected = np.tanh(x_batch(5, 4) @ layer.weight.data + layer.bias.data)
    np.testing.assert_allclose(y.data, expected, rtol=1e-5, atol=1e-6)


def test_dense_with_in_features_is_built_at_once():
    layer = Dense(3, in_features=5, use_bias=False)
    assert layer.built and layer.weight.shape == (5, 3) and layer.bias is None
    assert [n for n, _ in layer.named_parameters()] == ["weight"]


def test_dense_on_3d_input():
    layer = Dense(2, in_features=4)
    assert layer(np.ones((3, 5, 4), np.float32)).shape == (3, 5, 2)


def _forward_and_grads(model, x):
    for p in model.parameters():
        p.grad = None
    out = model(x)
    (out * out).sum().backward()
    return out.data.copy(), [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("activation", ["relu", "tanh", None, "softmax"])
def test_dense_fast_and_general_input_paths_agree(activation):
    # float32 arrays and float32 tensors take the short path; lists, float64 and int arrays
    # are converted first: every path gives the same output and the same gradients
    model = Sequential([Dense(5, activation, in_features=4), Dense(3, "relu", in_features=5)])
    x = x_batch(6, 4)
    ref_out, ref_grads = _forward_and_grads(model, x)
    for variant in (Tensor(x), x.tolist(), x.astype(np.float64), Tensor(x.astype(np.float64))):
        out, grads = _forward_and_grads(model, variant)
        np.testing.assert_allclose(out, ref_out, rtol=1e-6, atol=1e-7)
        for g, ref in zip(grads, ref_grads):
            np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-6)
    xi = np.arange(24).reshape(6, 4) % 3
    np.testing.assert_array_equal(model(xi).data, model(xi.astype(np.float32)).data)
    with pytest.raises(ShapeError, match="dense"):
        model(x_batch(6, 5))


def test_module_call_with_and_without_hooks_agree():
    # a module with no hooks skips the hook bookkeeping; adding and removing hooks switches
    # between the paths without changing results
    model = mlp(4).eval()  # (no dropout)
    x = x_batch()
    plain_out, plain_grads = _forward_and_grads(model, x)
    seen = []
    fwd = model.layers[0].register_forward_hook(lambda m, inp, out: seen.append("f"))
    bwd = model.layers[2].register_full_backward_hook(lambda m, gi, go: seen.append("b"))
    hooked_out, hooked_grads = _forward_and_grads(model, x)
    _forward_and_grads(model, x)
    assert seen == ["f", "b", "f", "b"]
    fwd.remove()
    bwd.remove()
    again_out, again_grads = _forward_and_grads(model, x)
    assert seen == ["f", "b", "f", "b"]
    for out in (hooked_out, again_out):
        np.testing.assert_array_equal(out, plain_out)
    for grads in (hooked_grads, again_grads):
        for g, ref in zip(grads, plain_grads):
            np.testing.assert_array_equal(g, ref)


def test_model_build_explicitly():
    model = mlp()
    assert not model.built
    model.build((None, 6))
    assert model.built
    assert model[0].weight.shape == (6, 8) and model[2].weight.shape == (8, 3)
    assert model.num_parameters() == 6 * 8 + 8 + 8 * 3 + 3
    assert model.training  # build leaves the mode as it was
    other = mlp().build(6)  # a one-sample shape works too
    assert other[2].weight.shape == (8, 3)


def test_parameters_of_unbuilt_model_raise_naming_the_layer():
    model = Sequential([Dense(4, in_features=3, name="first"), Dense(2, name="head")])
    with pytest.raises(NotBuiltError, match=r"'head'.*Dense") as info:
        model.parameters()
    assert "build" in str(info.value)
    with pytest.raises(NotBuiltError, match="head"):
        optim.Adam(model.parameters())
    with pytest.raises(NotBuiltError):
        optim.SGD(model, lr=0.1)
    with pytest.raises(NotBuiltError):
        model.state_dict()


def test_shape_error_names_layer_and_both_shapes():
    layer = Dense(3, in_features=4, name="hidden")
    with pytest.raises(ShapeError) as info:
        layer(np.zeros((2, 5), np.float32))
    msg = str(info.value)
    assert "hidden" in msg and "4" in msg and "(2, 5)" in msg
    model = Sequential([Dense(3, in_features=4), Dense(2)])
    model(np.zeros((1, 4)))
    with pytest.raises(ShapeError, match=r"\(7, 6\)"):
        model(np.zeros((7, 6)))


def test_functional_linear_names_both_shapes_and_a_bad_bias():
    from lepton_nn import ops

    x, w = Tensor(np.ones((3, 4))), Tensor(np.ones((5, 2)))
    with pytest.raises(ShapeError, match=r"linear.*\(3, 4\).*\(5, 2\)"):
        ops.linear(x, w)
    with pytest.raises(ShapeError, match=r"bias of shape \(2,\).*\(3,\)"):
        ops.linear(x, Tensor(np.ones((4, 2))), Tensor(np.ones(3)))
    assert ops.linear(Tensor(np.ones((2, 3, 4))), Tensor(np.ones((4, 2)))).shape == (2, 3, 2)


def test_integer_input_is_cast():
    layer = Dense(2, in_features=3)
    y = layer(np.arange(6).reshape(2, 3))
    assert y.dtype == np.float32
    np.testing.assert_allclose(
        y.data, np.arange(6.0).reshape(2, 3) @ layer.weight.data + layer.bias.data, rtol=1e-6
    )
    assert layer(np.array([[True, False, True]])).dtype == np.float32


def test_float64_input_follows_the_layer_dtype():
    layer = Dense(2, in_features=3)
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = layer(x)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float64  # the gradient is cast back through the input cast


def test_string_input_is_refused_clearly():
    layer = Dense(2, in_features=2, name="dense_text")
    with pytest.raises(LeptonError, match=r"dense_text.*numeric.*<U"):
        layer(np.array([["a", "b"]]))
    with pytest.raises(LeptonError, match="numeric"):
        Sequential([Dense(2)])(np.array([["x", "y"]], dtype=object))


def test_dense_rejects_bad_settings():
    with pytest.raises(ValueError, match="units"):
        Dense(0)
    with pytest.raises(ValueError, match="activation"):
        Dense(2, activation="swishy")
    with pytest.raises(ValueError, match="initializer"):
        Dense(2, in_features=2, kernel_initializer="nope")


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax"])
def test_dense_activations_match_the_ops(act):
    layer = Dense(4, activation=act, in_features=3)
    x = x_batch(6, 3)
    z = Tensor(x) @ layer.weight + layer.bias
    ref = z.softmax() if act == "softmax" else getattr(z, act)()
    np.testing.assert_allclose(layer(x).data, ref.data, rtol=1e-5, atol=1e-6)


def test_activation_modules():
    x = x_batch(3, 4)
    t = Tensor(x)
    for mod, ref in [
        (ReLU(), t.relu()),
        (Sigmoid(), t.sigmoid()),
        (Tanh(), t.tanh()),
        (GELU(), t.gelu()),
        (Softmax(), t.softmax()),
        (Activation("tanh"), t.tanh()),
        (Activation(None), t),
    ]:
        np.testing.assert_allclose(mod(x).data, ref.data, rtol=1e-6)
    assert Flatten()(np.zeros((2, 3, 4))).shape == (2, 12)


def test_named_parameters_and_gradients_reach_every_layer():
    model = mlp(4)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    loss = losses.cross_entropy(model(x_batch()), np.array([0, 1, 2, 0, 1]))
    loss.backward()
    for p in model.parameters():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == p.dtype
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_astype_float64():
    model = mlp(4).astype("float64")
    y = model(x_batch())
    assert y.dtype == np.float64
    y.sum().backward()
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in model.parameters())
    lazy = Sequential([Dense(2)]).astype(np.float64)
    assert lazy(x_batch()).dtype == np.float64 and lazy[0].weight.dtype == np.float64


def test_replacing_parameter_data_keeps_the_array():
    layer = Dense(2, in_features=3)
    new = np.ones((3, 2), np.float64)
    layer.weight.data = new
    assert layer.weight.data is new
    (Tensor(np.ones((1, 3))) @ layer.weight).sum().backward()
    assert layer.weight.grad.dtype == np.float64


# -- state dicts ----------------------------------------------------------------------------------


def test_state_dict_round_trip():
    a = mlp(4).eval()
    b = mlp(4).eval()
    x = x_batch()
    assert not np.allclose(a(x).data, b(x).data)
    state = a.state_dict()
    assert set(state) == {"layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"}
    b.load_state_dict(state)
    np.testing.assert_array_equal(a(x).data, b(x).data)
    # the state holds copies both ways
    state["layers.0.weight"][...] = 0
    assert not np.all(a[0].weight.data == 0) and not np.all(b[0].weight.data == 0)
    b[0].weight.data += 1
    assert not np.allclose(a[0].weight.data, b[0].weight.data)


def test_state_dict_json_like_round_trip_casts_dtype():
    a = mlp(4)
    state = {k: v.astype(np.float64) for k, v in a.state_dict().items()}
    b = mlp(4)
    b.load_state_dict(state)
    assert all(p.dtype == np.float32 for p in b.parameters())


def test_load_state_dict_mismatches():
    model = mlp(4)
    state = model.state_dict()
    missing = dict(state)
    del missing["layers.2.bias"]
    with pytest.raises(KeyError, match=r"missing \['layers.2.bias'\]"):
        model.load_state_dict(missing)
    model.load_state_dict(missing, strict=False)  # non-strict loads what is there
    extra = dict(state, **{"layers.9.weight": np.zeros(2)})
    with pytest.raises(KeyError, match=r"unexpected \['layers.9.weight'\]"):
        model.load_state_dict(extra)
    bad = dict(state, **{"layers.0.weight": np.zeros((5, 8))})
    with pytest.raises(ShapeError, match=r"layers.0.weight.*\(4, 8\).*\(5, 8\)"):
        model.load_state_dict(bad)


# -- train / eval ----------------------------------------------------------------------------------


def test_dropout_modes():
    ln.set_seed(0)
    drop = Dropout(0.3)
    x = np.ones((200, 50), np.float32)
    drop.eval()
    y = drop(x)
    np.testing.assert_array_equal(y.data, x)
    drop.train()
    y = drop(x).data
    zero = y == 0
    assert abs(zero.mean() - 0.3) < 0.02
    np.testing.assert_allclose(y[~zero], 1 / 0.7, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.03


def test_dropout_gradient_uses_the_same_mask():
    ln.set_seed(1)
    x = Tensor(np.ones((4, 6)), requires_grad=True)
    y = Dropout(0.5)(x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.data.astype(np.float64))


def test_dropout_settings():
    with pytest.raises(ValueError):
        Dropout(1.0)
    with pytest.raises(ValueError):
        Dropout(-0.1)
    x = np.ones((3, 3), np.float32)
    np.testing.assert_array_equal(Dropout(0.0)(x).data, x)


def test_train_eval_reach_every_module():
    model = mlp(4)
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model.train(False)
    assert not model[1].training
    x = x_batch()
    np.testing.assert_array_equal(model(x).data, model(x).data)  # eval is deterministic


# -- initializers ----------------------------------------------------------------------------------

FAN_IN, FAN_OUT = 400, 300
SHAPE = (FAN_IN, FAN_OUT)


@pytest.mark.parametrize(
    "name,std",
    [
        ("glorot_uniform", np.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("glorot_normal", np.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("he_uniform", np.sqrt(2 / FAN_IN)),
        ("he_normal", np.sqrt(2 / FAN_IN)),
        ("lecun_uniform", np.sqrt(1 / FAN_IN)),
        ("xavier_uniform", np.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("kaiming_normal", np.sqrt(2 / FAN_IN)),
    ],
)
def test_initializer_statistics(name, std):
    w = get_initializer(name)(SHAPE, FAN_IN, FAN_OUT, np.random.default_rng(0), np.float32)
    assert w.shape == SHAPE and w.dtype == np.float32
    assert abs(w.mean()) < 0.02 * std * 10
    assert w.std() == pytest.approx(std, rel=0.02)
    if "uniform" in name:
        assert np.abs(w).max() <= std * np.sqrt(3) * (1 + 1e-6)
    else:  # truncated at two standard deviations of the underlying normal
        assert np.abs(w).max() <= 2 * std / 0.8796 * (1 + 1e-6)


def test_other_initializers():
    r = np.random.default_rng(0)
    np.testing.assert_array_equal(INITIALIZERS["zeros"]((3, 2), 3, 2, r, np.float32), 0)
    np.testing.assert_array_equal(INITIALIZERS["ones"]((3, 2), 3, 2, r, np.float32), 1)
    for shape in [(6, 4), (4, 6), (5, 5)]:
        q = INITIALIZERS["orthogonal"](shape, *shape, r, np.float64)
        small = q.T @ q if shape[0] >= shape[1] else q @ q.T
        np.testing.assert_allclose(small, np.eye(min(shape)), atol=1e-10)
    with pytest.raises(ValueError, match="he_normal"):
        get_initializer("he_norm")
    calls = []

    def mine(shape, fan_in, fan_out, rng, dtype):
        calls.append((shape, fan_in, fan_out))
        return np.full(shape, 0.5, dtype)

    np.testing.assert_array_equal(get_initializer(mine)((2, 3), 2, 3, r, np.float32), 0.5)
    assert calls == [((2, 3), 2, 3)]
    layer = Dense(3, in_features=2, kernel_initializer=mine)
    np.testing.assert_array_equal(layer.weight.data, 0.5)


def test_dense_uses_its_initializers():
    layer = Dense(300, in_features=400, kernel_initializer="he_normal", bias_initializer="ones")
    assert layer.weight.data.std() == pytest.approx(np.sqrt(2 / 400), rel=0.03)
    np.testing.assert_array_equal(layer.bias.data, 1)
    default = Dense(300, in_features=400)
    assert default.weight.data.std() == pytest.approx(np.sqrt(2 / 700), rel=0.03)
    np.testing.assert_array_equal(default.bias.data, 0)


# -- summary, configs ------------------------------------------------------------------------------


def test_summary_lists_shapes_and_counts():
    model = Sequential(
        [Dense(16, "relu", name="hidden"), Dropout(0.1, name="drop"), Dense(2, name="out")],
        name="clf",
    )
    model.build((None, 10))
    printed = []
    text = model.summary(print_fn=printed.append)
    assert printed == [text]
    for part in ["clf", "hidden (Dense)", "drop (Dropout)", "out (Dense)", "(None, 16)"]:
        assert part in text
    assert "(None, 2)" in text
    assert "176" in text and "34" in text  # 10*16+16, 16*2+2
    assert "Total params: 210" in text


def test_summary_of_unbuilt_model():
    text = Sequential([Dense(4), Dense(1)]).summary(print_fn=None)
    assert "not built" in text and "model.build" in text


def test_config_round_trip():
    model = Sequential(
        [
            Dense(8, "gelu", in_features=5, kernel_initializer="he_uniform", name="h"),
            Dropout(0.2),
            Tanh(),
            Activation("softmax"),
            Dense(2, use_bias=False, dtype="float64"),
            Flatten(),
        ],
        name="net",
    )
    cfg = layer_to_config(model)
    assert json.loads(json.dumps(cfg)) == cfg  # JSON-able
    copy = layer_from_config(cfg)
    assert type(copy) is Sequential and copy.name == "net"
    assert [type(m) for m in copy] == [type(m) for m in model]
    assert layer_to_config(copy) == cfg
    assert copy[0].built and copy[0].weight.shape == (5, 8)
    assert copy[0].kernel_initializer == "he_uniform" and copy[0].activation == "gelu"
    assert not copy[4].built and copy[4].dtype == np.float64 and not copy[4].use_bias
    assert copy[1].rate == 0.2


def test_unknown_or_bad_config_is_a_model_format_error():
    with pytest.raises(ModelFormatError, match="EvilLayer"):
        layer_from_config({"class": "EvilLayer", "config": {}})
    with pytest.raises(ModelFormatError):
        layer_from_config({"class": "os.system", "config": {}})
    with pytest.raises(ModelFormatError):
        layer_from_config({"config": {}})
    with pytest.raises(ModelFormatError):
        layer_from_config(["Dense"])
    with pytest.raises(ModelFormatError, match="unknown settings"):
        layer_from_config({"class": "Dense", "config": {"units": 2, "command": "rm"}})
    with pytest.raises(ModelFormatError, match="bad settings"):
        layer_from_config({"class": "Dense", "config": {"units": 0}})
    with pytest.raises(ModelFormatError):
        layer_from_config({"class": "Dense", "config": [1, 2]})
    with pytest.raises(ModelFormatError):
        layer_from_config({"class": "Sequential", "config": {"layers": [{"class": "Nope"}]}})


def test_user_subclasses_cannot_be_named_by_a_config():
    class Mine(ln.nn.Module):
        def call(self, x):
            return x

    with pytest.raises(ModelFormatError):
        layer_from_config({"class": "Mine", "config": {}})


# -- reproducibility -------------------------------------------------------------------------------


def _train_run(seed):
    ln.set_seed(seed)
    model = Sequential([Dense(16, "relu"), Dropout(0.3), Dense(3)])
    model.build((None, 4))
    w0 = {k: v.copy() for k, v in model.state_dict().items()}
    opt = optim.Adam(model.parameters(), lr=0.01)
    r = np.random.default_rng(0)
    x = r.standard_normal((32, 4)).astype(np.float32)
    y = r.integers(0, 3, 32)
    for _ in range(5):
        opt.zero_grad()
        loss = losses.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return w0, model.state_dict(), float(loss.data)


def test_set_seed_gives_identical_weights_and_runs():
    w0a, wa, la = _train_run(123)
    w0b, wb, lb = _train_run(123)
    for k in w0a:
        np.testing.assert_array_equal(w0a[k], w0b[k])
        np.testing.assert_array_equal(wa[k], wb[k])
    assert la == lb
    w0c, _, _ = _train_run(124)
    assert not np.array_equal(w0a["layers.0.weight"], w0c["layers.0.weight"])


# -- bad input to layers and losses ----------------------------------------------------------------


def test_dense_build_shapes():
    assert Dense(2).build(4).weight.shape == (4, 2)
    assert Dense(2).build((None, 3, 4)).weight.shape == (4, 2)
    with pytest.raises(ShapeError, match=r"'lazy1d'.*\(None,\)"):
        Dense(2, name="lazy1d")(np.ones(3))  # a lazy layer cannot guess features from 1-D
    assert Dense(2, in_features=3)(np.ones(3)).shape == (2,)  # one sample, once built


def test_loss_target_shapes():
    p = Tensor(np.zeros((3, 1)))
    assert losses.mse(p, np.zeros(3)).shape == ()  # (N,) vs (N, 1) is fine
    assert (
        losses.binary_cross_entropy_with_logits(Tensor(np.zeros(3)), np.zeros((3, 1))).shape == ()
    )
    with pytest.raises(ShapeError, match=r"\(3, 2\).*\(2, 3\)"):
        losses.mse(Tensor(np.zeros((3, 2))), np.zeros((2, 3)))  # same size, other shape
    with pytest.raises(ShapeError):
        losses.mae(Tensor(np.zeros((3, 2))), np.zeros(6))
    with pytest.raises(ShapeError, match="sample_weight"):
        losses.mse(p, np.zeros(3), sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="reduction"):
        losses.mse(p, np.zeros(3), reduction="avg")


def test_cross_entropy_bad_targets():
    z = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        losses.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        losses.cross_entropy(z, np.array([0.5, 1.0]))
    with pytest.raises(ShapeError):
        losses.cross_entropy(z, np.zeros((2, 4)))
    with pytest.raises(ShapeError):
        losses.cross_entropy(z, np.array([0, 1, 2]))
    with pytest.raises(ShapeError):
        losses.cross_entropy(Tensor(np.zeros(3)), np.array([0]))


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "bce", "cross_entropy"])
def test_losses_on_an_empty_batch(name):
    fn = losses.get_loss(name)
    if name == "cross_entropy":
        z, t = Tensor(np.zeros((0, 3)), requires_grad=True), np.zeros(0, np.int64)
    else:
        z, t = Tensor(np.zeros((0, 2)), requires_grad=True), np.zeros((0, 2))
    out = fn(z, t)
    assert out.shape == () and float(out.data) == 0.0
    out.backward()
    assert z.grad.shape == z.shape


def test_astype_on_a_partly_built_model():
    model = Sequential([Dense(4, in_features=3), Dense(2)]).astype("float64")
    assert model[0].weight.dtype == np.float64  # built layers convert now
    model(np.ones((1, 3)))
    assert all(p.dtype == np.float64 for p in model.parameters())


def test_build_keeps_each_module_mode():
    model = Sequential([Dense(4), Dropout(0.5), Dense(2)])
    model[1].eval()
    model.build((None, 3))
    assert model.training and model[0].training and not model[1].training


def test_automatic_layer_names():
    from lepton_nn.nn import conv, norm, recurrent
    from lepton_nn.nn.module import _snake

    expected = {
        conv.Conv2D: "conv2d",
        conv.MaxPool2D: "max_pool2d",
        conv.GlobalAvgPool2D: "global_avg_pool2d",
        recurrent.LSTM: "lstm",
        recurrent.GRU: "gru",
        recurrent.SimpleRNN: "simple_rnn",
        norm.BatchNorm: "batch_norm",
        norm.LayerNorm: "layer_norm",
        Dense: "dense",
    }
    for cls, name in expected.items():
        assert _snake(cls.__name__) == name
    assert _snake("QATDense") == "qat_dense" and _snake("Conv2DTranspose") == "conv2d_transpose"
    a, b = conv.Conv2D(2, 3), conv.Conv2D(2, 3)
    assert b.name.startswith("conv2d_") and a.name.split("_")[0] == "conv2d"
