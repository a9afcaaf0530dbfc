"""Grouped and depthwise Conv2D, Conv1D and padding: ops against PyTorch (values and
gradients, float64), float64 gradchecks, the layers, and their save/load round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lepton_nn as ln
from lepton_nn import Tensor, nn
from lepton_nn.autograd import gradcheck
from lepton_nn.errors import ShapeError
from lepton_nn.ops.conv import conv2d, max_pool2d
from lepton_nn.ops.conv_more import conv1d, pad

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _grads(fn, arrays):
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    w = _rand(*y.shape, seed=9)
    (y * Tensor(w)).sum().backward()
    return y.data, [t.grad for t in ts], w


def _torch_grads(fn, arrays, w):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    (y * torch.tensor(w)).sum().backward()
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


CONV2D = [  # (C, O, groups, kernel, stride, padding, dilation, activation, torch activation)
    (6, 9, 3, (3, 3), 2, 1, 1, "relu", F.relu),
    (4, 4, 4, (3, 3), 1, 1, 1, "identity", None),  # depthwise
    (4, 8, 4, (3, 2), (1, 2), (2, 1), (2, 1), "tanh", torch.tanh),  # depthwise, multiplier 2
    (6, 4, 2, (1, 1), 1, 0, 1, "sigmoid", torch.sigmoid),
    (4, 6, 2, (3, 3), 1, (0, 2, 1, 0), 1, "identity", None),  # asymmetric pads
]


@pytest.mark.parametrize("case", CONV2D, ids=range(len(CONV2D)))
def test_grouped_conv2d_matches_torch(case):
    c, o, g, k, s, p, d, act, tact = case
    x, w, b = _rand(2, c, 7, 8), _rand(o, c // g, *k, seed=1), _rand(o, seed=2)
    ours, ours_g, wy = _grads(
        lambda x, w, b: conv2d(x, w, b, stride=s, padding=p, dilation=d, activation=act, groups=g),
        [x, w, b],
    )

    def theirs(x, w, b):
        if isinstance(p, tuple) and len(p) == 4:  # torch pads as (left, right, top, bottom)
            x, pp = F.pad(x, (p[2], p[3], p[0], p[1])), 0
        else:
            pp = p
        y = F.conv2d(x, w, b, stride=s, padding=pp, dilation=d, groups=g)
        return tact(y) if tact else y

    want, want_g = _torch_grads(theirs, [x, w, b], wy)
    np.testing.assert_allclose(ours, want, rtol=1e-10, atol=1e-12)
    for a, e in zip(ours_g, want_g):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


def test_grouped_conv2d_gradcheck_and_fused_pool():
    x, w, b = _rand(1, 4, 5, 6), _rand(6, 2, 3, 3, seed=1), _rand(6, seed=2)
    tx, tw, tb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    assert gradcheck(
        lambda x, w, b: conv2d(x, w, b, padding=1, groups=2, activation="sigmoid"), tx, tw, tb
    )
    pooled = conv2d(
        Tensor(x),
        Tensor(w),
        Tensor(b),
        padding=1,
        groups=2,
        activation="relu",
        max_pool=(2, None, 0, None),
    )
    want = F.max_pool2d(
        F.relu(F.conv2d(*(torch.tensor(a) for a in (x, w, b)), padding=1, groups=2)), 2
    )
    np.testing.assert_allclose(pooled.data, want.numpy(), rtol=1e-12)
    assert gradcheck(
        lambda x, w: conv2d(x, w, None, groups=2, activation="tanh", max_pool=(2, None, 0, None)),
        tx, tw,
    )  # fmt: skip


@pytest.mark.parametrize("act", ["gelu", "relu", "identity"])
def test_depthwise_conv2d_gradcheck_and_pool(act):
    x, w, b = _rand(2, 3, 6, 5), _rand(6, 1, 3, 2, seed=1), _rand(6, seed=2)  # multiplier 2
    tx, tw, tb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    geo = {"stride": (2, 1), "padding": (1, 0, 2, 1), "dilation": (1, 2)}
    assert gradcheck(lambda x, w, b: conv2d(x, w, b, activation=act, groups=3, **geo), tx, tw, tb)
    assert gradcheck(lambda x, w: conv2d(x, w, activation=act, groups=3, **geo), tx, tw)
    pool = (2, 1, 0, None)
    if act != "gelu":  # a fused max pool takes identity, relu, sigmoid, tanh
        y = conv2d(Tensor(x), Tensor(w), Tensor(b), activation=act, groups=3, max_pool=pool, **geo)
        plain = conv2d(Tensor(x), Tensor(w), Tensor(b), activation=act, groups=3, **geo)
        np.testing.assert_array_equal(y.data, max_pool2d(plain, 2, 1).data)


def test_grouped_conv2d_bad_shapes():
    with pytest.raises(ShapeError, match="groups"):
        conv2d(Tensor(_rand(1, 5, 4, 4)), Tensor(_rand(4, 1, 3, 3)), groups=2)
    with pytest.raises(ShapeError, match="weight"):
        conv2d(Tensor(_rand(1, 4, 4, 4)), Tensor(_rand(3, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2D(6, 3, groups=4)
    with pytest.raises(ShapeError, match="do not split into 4 groups"):
        nn.Conv2D(8, 3, groups=4)(np.zeros((1, 6, 5, 5), np.float32))


CONV1D = [  # (C, O, groups, k, stride, padding, dilation)
    (3, 5, 1, 3, 1, 0, 1),
    (4, 6, 2, 3, 2, 2, 2),
    (4, 4, 4, 5, 1, "same", 1),  # depthwise, "same"
    (2, 3, 1, 2, 1, (1, 0), 1),  # (left, right)
]


@pytest.mark.parametrize("case", CONV1D, ids=range(len(CONV1D)))
def test_conv1d_matches_torch(case):
    c, o, g, k, s, p, d = case
    x, w, b = _rand(2, c, 11), _rand(o, c // g, k, seed=1), _rand(o, seed=2)
    ours, ours_g, wy = _grads(lambda x, w, b: conv1d(x, w, b, s, p, d, "identity", g), [x, w, b])

    def theirs(x, w, b):
        if isinstance(p, tuple):
            return F.conv1d(F.pad(x, p), w, b, s, 0, d, g)
        return F.conv1d(x, w, b, s, p, d, g)

    want, want_g = _torch_grads(theirs, [x, w, b], wy)
    np.testing.assert_allclose(ours, want, rtol=1e-10, atol=1e-12)
    for a, e in zip(ours_g, want_g):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)
    small = [Tensor(a, requires_grad=True) for a in (x[:1, :, :7], w, b)]
    assert gradcheck(lambda x, w, b: conv1d(x, w, b, s, p, d, "tanh", g), *small)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate"])
@pytest.mark.parametrize("pads", [((1, 2), (2, 3)), ((0, 3),), ((2, 0), (0, 0))])
def test_pad_matches_torch(mode, pads):
    x = _rand(2, 3, 5, 6)
    ours, ours_g, wy = _grads(lambda x: pad(x, pads, mode, 0.7), [x])
    flat = tuple(v for pair in reversed(pads) for v in pair)  # torch: last axis first
    extra = {"value": 0.7} if mode == "constant" else {}

    def theirs(x):  # torch reflects/replicates n axes of (N, C, ...n axes) inputs only
        v = x.reshape(-1, 1, *x.shape[-len(pads) :]) if len(pads) == 1 else x
        y = F.pad(v, flat, mode=mode, **extra)
        return y.reshape(*x.shape[: x.ndim - len(pads)], *y.shape[-len(pads) :])

    want, want_g = _torch_grads(theirs, [x], wy)
    np.testing.assert_array_equal(ours, want)
    np.testing.assert_allclose(ours_g[0], want_g[0], rtol=1e-12, atol=1e-14)
    assert gradcheck(lambda x: pad(x, pads, mode), Tensor(x[:1, :2], requires_grad=True))


def test_pad_refuses_bad_requests():
    with pytest.raises(ShapeError, match="reflect"):
        pad(Tensor(_rand(1, 1, 3)), ((3, 0),), "reflect")
    with pytest.raises(ValueError, match="mode"):
        pad(Tensor(_rand(1, 1, 3)), ((1, 0),), "wrap")
    with pytest.raises(ValueError, match="non-negative"):
        pad(Tensor(_rand(1, 1, 3)), ((-1, 0),))
    with pytest.raises(ValueError, match="wrong number"):
        nn.Pad2D((1, 2, 3))
    with pytest.raises(ShapeError, match="Pad1D"):
        nn.Pad1D(1)(np.zeros((2, 3, 4, 5), np.float32))


def _layer_cases():
    yield (
        "grouped",
        nn.Sequential([nn.Conv2D(6, 3, padding=1, groups=2, activation="relu"), nn.Conv2D(4, 1)]),
        (4, 6, 5),
    )
    yield (
        "depthwise",
        nn.Sequential([nn.Conv2D(8, 3, groups=4, activation="hard_swish"), nn.MaxPool2D(2)]),
        (4, 7, 6),
    )
    yield (
        "conv1d",
        nn.Sequential(
            [nn.Conv1D(5, 3, padding="same", activation="elu"), nn.Conv1D(5, 2, stride=2, groups=5)]
        ),
        (3, 9),
    )
    yield (
        "pad2d",
        nn.Sequential(
            [nn.Pad2D((1, 2, 0, 3), "reflect"), nn.Pad2D(1, value=-1.0), nn.Conv2D(2, 3)]
        ),
        (2, 5, 6),
    )
    yield "pad1d", nn.Sequential([nn.Pad1D((2, 1), "replicate"), nn.Conv1D(2, 3)]), (2, 6)


@pytest.mark.parametrize(
    "name,model,shape", list(_layer_cases()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_layers_round_trip_through_a_file(tmp_path, name, model, shape):
    model.astype("float64").build((None, *shape))
    x = _rand(3, *shape)
    y = model(x).data
    ln.save(model, tmp_path / "m.lnn")
    back = ln.load(tmp_path / "m.lnn")
    np.testing.assert_array_equal(back(x).data, y)
    assert [m.get_config() for m in back.layers] == [m.get_config() for m in model.layers]
    t = Tensor(x[:1], requires_grad=True)
    assert gradcheck(lambda t: back(t), t)


def test_conv2d_layer_matches_torch_depthwise():
    ln.set_seed(0)
    layer = nn.Conv2D(6, (3, 2), stride=2, padding=(1, 0), groups=3, in_channels=3).astype(
        "float64"
    )
    assert layer.weight.shape == (6, 1, 3, 2)
    x = _rand(2, 3, 8, 7)
    ref = torch.nn.Conv2d(3, 6, (3, 2), 2, (1, 0), groups=3).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.weight.data))
        ref.bias.copy_(torch.tensor(layer.bias.data))
    np.testing.assert_allclose(layer(x).data, ref(torch.tensor(x)).detach().numpy(), rtol=1e-12)


def test_structured_pruning_compacts_conv1d_chains():
    from lepton_nn.compress import compact, prune_structured

    ln.set_seed(0)
    model = nn.Sequential(
        [nn.Conv1D(6, 3, activation="elu"), nn.Conv1D(4, 3), nn.Flatten(), nn.Dense(2)]
    )
    model.build((None, 2, 12))
    prune_structured(model, 0.5)
    model.eval()
    small = compact(model)
    assert [m.weight.shape for m in small.layers if hasattr(m, "weight")] == [
        (3, 2, 3), (2, 3, 3), (16, 2),
    ]  # fmt: skip
    x = _rand(3, 2, 12).astype(np.float32)
    np.testing.assert_allclose(small(x).data, model(x).data, rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    groups=st.integers(1, 4),
    cg=st.integers(1, 3),
    og=st.integers(1, 3),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
)
def test_conv2d_groups_property_against_torch(data, groups, cg, og, kernel, stride, dilation):
    """Random group counts (depthwise when C / G = 1), kernels, strides, dilations and
    asymmetric pads: values and all three gradients equal torch's in float64."""
    pads = data.draw(st.tuples(*[st.integers(0, 2)] * 4))
    h = data.draw(st.integers((kernel[0] - 1) * dilation[0] + 1, 8))
    w = data.draw(st.integers((kernel[1] - 1) * dilation[1] + 1, 8))
    c, o = groups * cg, groups * og
    x, wt, b = _rand(2, c, h, w), _rand(o, cg, *kernel, seed=1), _rand(o, seed=2)

    def ours(x, wt, b):
        return conv2d(x, wt, b, stride, pads, dilation, "tanh", groups=groups)

    def theirs(x, wt, b):
        x = F.pad(x, (pads[2], pads[3], pads[0], pads[1]))
        return torch.tanh(F.conv2d(x, wt, b, stride, 0, dilation, groups))

    got, got_g, wy = _grads(ours, [x, wt, b])
    want, want_g = _torch_grads(theirs, [x, wt, b], wy)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    for a, e in zip(got_g, want_g):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), mode=st.sampled_from(["constant", "reflect", "replicate"]))
def test_pad_property_numpy_and_adjoint(data, mode):
    """pad equals np.pad (edge for replicate) on random shapes and pads, and its backward is
    its adjoint: <pad(x), g> = <x, pad^T(g)>."""
    shape = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    k = data.draw(st.integers(1, len(shape)))
    most = [n - 1 if mode == "reflect" else 3 for n in shape[-k:]]
    pads = tuple(data.draw(st.tuples(st.integers(0, m), st.integers(0, m))) for m in most)
    x = _rand(*shape)
    t = Tensor(x, requires_grad=True)
    y = pad(t, pads, mode, 0.25)
    np_mode = {"replicate": "edge"}.get(mode, mode)
    extra = {"constant_values": 0.25} if mode == "constant" else {}
    want = np.pad(x, [(0, 0)] * (len(shape) - k) + list(pads), np_mode, **extra)
    np.testing.assert_array_equal(y.data, want)
    g = _rand(*y.shape, seed=5)
    (y * Tensor(g)).sum().backward()
    zero = pad(Tensor(x), pads, mode, 0.0).data  # the constant part does not depend on x
    np.testing.assert_allclose(np.sum(zero * g), np.sum(x * t.grad), rtol=1e-12, atol=1e-12)
