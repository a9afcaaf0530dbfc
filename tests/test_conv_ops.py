"""Convolution and pooling ops: gradient checks (float64, tiny sizes), chunks of images, the
fused conv + max pool (the op and Sequential's fusion), and the PyTorch oracle (values,
gradients, SGD steps)."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
import lepton_nn.backend as backend
from lepton_nn import ShapeError, Tensor, gradcheck
from lepton_nn.nn import Conv2D, Flatten, GlobalAvgPool2D, MaxPool2D, Sequential
from lepton_nn.ops.conv import avg_pool2d, conv2d, global_avg_pool2d, max_pool2d

BACKENDS = backend.available()
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=BACKENDS)
def be(request):
    with backend.use_backend(request.param) as b:
        yield b


def data(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# -- gradient checks (float64, tiny sizes) -----------------------------------------------------


def t(shape, seed=0, grad=True):
    return Tensor(data(shape, np.float64, seed), requires_grad=grad)


CONV_CASES = [
    dict(stride=1, padding=0, dilation=1),
    dict(stride=2, padding=1, dilation=1),
    dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    dict(stride=1, padding="same", dilation=2),
    dict(stride=2, padding="same", dilation=1),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_gradcheck(be, case):
    x, w, b = t((2, 2, 5, 6)), t((3, 2, 3, 2), 1), t((3,), 2)
    assert gradcheck(lambda x, w, b: conv2d(x, w, b, **case), x, w, b)


@pytest.mark.parametrize("act", ["identity", "relu", "gelu"])
@pytest.mark.parametrize("chunk_bytes", [1, 8000, 1 << 30])  # 1 image, 2 (of 3360 B), all
def test_conv2d_chunks_of_images(be, monkeypatch, act, chunk_bytes):
    """Conv2d runs a few images at a time (sized for the cache): every chunking gives the
    same output and gradients, checked numerically and against an image-by-image loop."""
    import lepton_nn.ops.conv as conv_ops

    monkeypatch.setattr(conv_ops, "CONV_CHUNK_BYTES", chunk_bytes)
    x, w, b = t((5, 2, 4, 5)), t((3, 2, 3, 3), 1), t((3,), 2)  # 5 images: uneven chunks
    f = lambda x, w, b: conv2d(x, w, b, padding=1, activation=act)  # noqa: E731
    assert gradcheck(f, x, w, b)
    y = f(x, w, b)
    gy = data(y.shape, np.float64, seed=3)
    (y * Tensor(gy)).sum().backward()
    gw, gb = np.zeros_like(w.data), np.zeros_like(b.data)
    for i in range(5):  # image i alone: the same output, the same share of the gradients
        xi = Tensor(x.data[i : i + 1], requires_grad=True)
        wi, bi = Tensor(w.data, requires_grad=True), Tensor(b.data, requires_grad=True)
        yi = f(xi, wi, bi)
        np.testing.assert_allclose(yi.data[0], y.data[i], rtol=1e-12, atol=1e-12)
        (yi * Tensor(gy[i : i + 1])).sum().backward()
        np.testing.assert_allclose(xi.grad[0], x.grad[i], rtol=1e-12, atol=1e-12)
        gw, gb = gw + wi.grad, gb + bi.grad
    np.testing.assert_allclose(gw, w.grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb, b.grad, rtol=1e-10, atol=1e-12)


def test_conv2d_weight_gradient_either_gemm_form(be, monkeypatch):
    """At shapes where the op transposes G_Z before G_W's GEMM (K >= 64, O >= 32), the
    gradients are those of the plain form."""
    import lepton_nn.ops.conv as conv_ops

    x, w, b = t((3, 8, 6, 5)), t((32, 8, 3, 3), 1), t((32,), 2)
    assert conv_ops._gw_from_transposed(8 * 9, 32, 30)
    grads = []
    for transposed in (True, False):
        monkeypatch.setattr(conv_ops, "_gw_from_transposed", lambda k, o, p, t=transposed: t)
        for a in (x, w, b):
            a.grad = None
        y = conv2d(x, w, b, padding=1, activation="relu")
        (y * Tensor(data(y.shape, np.float64, seed=4))).sum().backward()
        grads.append([x.grad.copy(), w.grad.copy(), b.grad.copy()])
    for g1, g2 in zip(*grads, strict=True):
        np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-12)


FUSED_POOLS = [(2, None, 0), (3, 2, 1), ((2, 3), (2, 3), "same")]


@pytest.mark.parametrize("act", ["identity", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("pool", FUSED_POOLS)
def test_conv2d_with_fused_max_pool(be, act, pool):
    """conv2d(..., max_pool=...) is max_pool2d(conv2d(...)): output and every gradient, and a
    numerical check of its own."""
    x, w, b = t((3, 2, 7, 6)), t((4, 2, 3, 3), 1), t((4,), 2)
    plain = lambda x, w, b: max_pool2d(conv2d(x, w, b, padding=1, activation=act), *pool)  # noqa: E731
    fused = lambda x, w, b: conv2d(x, w, b, padding=1, activation=act, max_pool=(*pool, "p"))  # noqa: E731
    grads = []
    for f in (plain, fused):
        for a in (x, w, b):
            a.grad = None
        y = f(x, w, b)
        (y * Tensor(data(y.shape, np.float64, seed=5))).sum().backward()
        grads.append([y.data, x.grad, w.grad, b.grad])
    for g1, g2 in zip(*grads, strict=True):
        np.testing.assert_allclose(g2, g1, rtol=1e-12, atol=1e-12)
    assert gradcheck(fused, x, w, b)


def test_conv2d_fused_max_pool_ties_follow_the_unfused_ops():
    """Relu makes ties (every negative window is all zeros): the gradient goes where the
    unfused max pool sends it."""
    x = Tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
    w = Tensor(np.array([[[[1.0, -2.0], [-2.0, 1.0]]]]), requires_grad=True)
    outs = []
    for y in (
        max_pool2d(conv2d(x, w, activation="relu"), 2, 1),
        conv2d(x, w, activation="relu", max_pool=(2, 1, 0, None)),
    ):
        x.grad = w.grad = None
        y.sum().backward()
        outs.append((y.data.copy(), x.grad.copy(), w.grad.copy()))
    for a, b in zip(*outs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_conv2d_fused_max_pool_errors():
    x, w = t((1, 1, 5, 5)), t((2, 1, 3, 3), 1)
    with pytest.raises(ValueError, match="identity, relu, sigmoid or tanh"):
        conv2d(x, w, activation="gelu", max_pool=(2, None, 0, None))
    with pytest.raises(ShapeError, match="layer 'pool9'"):  # 3x3 output, 4x4 window
        conv2d(x, w, max_pool=(4, None, 0, "pool9"))


def _cnn(seed=0):
    ln.set_seed(seed)
    return Sequential(
        [
            Conv2D(4, 3, padding="same", activation="relu", in_channels=2),
            MaxPool2D(2),
            Conv2D(3, 3, padding="same", activation="tanh", in_channels=4),
            MaxPool2D(2),
            Flatten(),
        ]
    )


def test_sequential_fuses_conv_and_max_pool(monkeypatch):
    """A Sequential runs each Conv2D + MaxPool2D pair as one op from its second call (the
    first builds and records shapes): the same outputs and gradients as fuse=False."""
    import lepton_nn.ops.conv as conv_ops

    pooled, apply = [], conv_ops.Conv2d.apply

    def spy(*a, **k):
        pooled.append(k.get("pool") is not None)
        return apply(*a, **k)

    monkeypatch.setattr(conv_ops.Conv2d, "apply", spy)
    x = Tensor(data((3, 2, 8, 8), np.float32))
    runs = []
    for fuse in (True, False):
        model = _cnn()
        model.fuse = fuse
        model(x)  # the first call: each layer on its own
        pooled.clear()
        y = model(x)
        assert pooled == [fuse, fuse]
        y.sum().backward()
        runs.append([y.data, *(p.grad for p in model.parameters())])
    for a, b in zip(*runs, strict=True):  # float32; G_b is summed in another order
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sequential_does_not_fuse_hooked_layers():
    """A forward hook on the Conv2D sees its own (unpooled) output: no fusion around it."""
    model = _cnn()
    x = Tensor(data((2, 2, 8, 8), np.float32))
    model(x)
    seen = []
    model.layers[0].register_forward_hook(lambda m, i, out: seen.append(out.shape))
    model(x)
    assert seen == [(2, 4, 8, 8)]


def test_conv2d_gradcheck_1x1_and_no_bias():
    x, w = t((2, 3, 3, 4)), t((2, 3, 1, 1), 1)
    assert gradcheck(lambda x, w: conv2d(x, w), x, w)
    assert gradcheck(lambda x, w: conv2d(x, w, stride=2), x, w)


@pytest.mark.parametrize(
    "kernel,stride,padding", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0)), (2, 2, "same")]
)
def test_pool_gradcheck(be, kernel, stride, padding):
    x = t((2, 2, 5, 7))
    assert gradcheck(lambda x: max_pool2d(x, kernel, stride, padding), x)
    for cip in (True, False):
        assert gradcheck(lambda x, cip=cip: avg_pool2d(x, kernel, stride, padding, cip), x)


def test_global_avg_pool_gradcheck():
    assert gradcheck(global_avg_pool2d, t((2, 3, 3, 5)))


def test_small_cnn_gradcheck():
    ln.set_seed(0)
    model = Sequential(
        [
            Conv2D(3, 3, padding="same", activation="tanh"),
            MaxPool2D(2),
            Conv2D(2, 2, stride=1),
            GlobalAvgPool2D(),
        ]
    ).astype("float64")
    x = t((2, 1, 6, 6), grad=False)
    model(x)
    assert gradcheck(*as_function(model, x))


def as_function(model, *inputs):
    """(fn, *tensors): fn(*params) runs the model with those tensors as its parameters."""
    slots = [(m, k) for m in model.modules() for k, _ in m._own_parameters()]
    start = [Tensor(getattr(m, k).data.copy(), requires_grad=True) for m, k in slots]

    def fn(*params):
        for (m, k), p in zip(slots, params):
            setattr(m, k, p)
        return model(*inputs)

    return fn, *start


# -- PyTorch oracle ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONV_CASES[:4])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_matches_torch(be, case, dtype):
    torch = pytest.importorskip("torch")
    x, w, b = data((3, 4, 9, 8), dtype), data((5, 4, 3, 3), dtype, 1), data((5,), dtype, 2)
    X, W, B = (Tensor(a, requires_grad=True) for a in (x, w, b))
    y = conv2d(X, W, B, **case)
    gy = data(y.shape, dtype, 3)
    y.backward(gy)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, case["stride"], case["padding"], case["dilation"])
    ty.backward(torch.tensor(gy))
    t_ = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}
    np.testing.assert_allclose(y.data, ty.detach().numpy(), **t_)
    for ours, theirs in ((X, tx), (W, tw), (B, tb)):
        assert ours.grad.dtype == dtype
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), **t_)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_pools_match_torch(be, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = data((2, 3, 9, 8), np.float64)
    for ours_fn, theirs_fn in (
        (
            lambda v: max_pool2d(v, kernel, stride, padding),
            lambda v: F.max_pool2d(v, kernel, stride, padding),
        ),
        (
            lambda v: avg_pool2d(v, kernel, stride, padding),
            lambda v: F.avg_pool2d(v, kernel, stride, padding),
        ),
        (
            lambda v: avg_pool2d(v, kernel, stride, padding, count_include_pad=False),
            lambda v: F.avg_pool2d(v, kernel, stride, padding, count_include_pad=False),
        ),
    ):
        X, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, ty = ours_fn(X), theirs_fn(tx)
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(X.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv2d_layer_exchanges_weights_with_torch():
    torch = pytest.importorskip("torch")
    ln.set_seed(1)
    layer = Conv2D(4, (3, 2), stride=2, padding=1, dilation=(1, 2), activation="relu")
    x = data((2, 3, 10, 9), np.float32)
    y = layer(x)
    conv = torch.nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, dilation=(1, 2))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(layer.weight.data))
        conv.bias.copy_(torch.tensor(layer.bias.data))
    ty = torch.relu(conv(torch.tensor(x)))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_fused_cnn_trains_like_torch(be):
    """A Sequential CNN whose conv + max pool pairs run fused (from the second call on) takes
    the same SGD steps as the same network in PyTorch: float64, five steps, every parameter."""
    torch = pytest.importorskip("torch")
    from lepton_nn import losses, optim
    from lepton_nn.nn import Dense

    ln.set_seed(3)
    model = Sequential(
        [
            Conv2D(4, 3, padding="same", activation="relu", in_channels=2),
            MaxPool2D(2),
            Conv2D(5, 3, activation="tanh", in_channels=4),
            MaxPool2D(3, stride=2, padding=1),
            Flatten(),
            Dense(3, in_features=5 * 2 * 2),
        ]
    ).astype("float64")
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding="same"),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 5, 3),
        torch.nn.Tanh(),
        torch.nn.MaxPool2d(3, stride=2, padding=1),
        torch.nn.Flatten(),
        torch.nn.Linear(20, 3),
    ).double()
    pairs = [(model.layers[0], tnet[0]), (model.layers[2], tnet[3]), (model.layers[5], tnet[7])]
    with torch.no_grad():
        for ours, theirs in pairs:
            w = ours.weight.data if ours.weight.ndim == 4 else ours.weight.data.T
            theirs.weight.copy_(torch.tensor(w))
            theirs.bias.copy_(torch.tensor(ours.bias.data))
    opt = optim.SGD(model.parameters(), lr=0.1)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.1)
    x, labels = data((6, 2, 10, 10), np.float64), np.array([0, 1, 2, 2, 1, 0])
    for _ in range(5):
        opt.zero_grad()
        losses.cross_entropy(model(x), labels).backward()
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tnet(torch.tensor(x)), torch.tensor(labels)).backward()
        topt.step()
    for ours, theirs in pairs:
        w = ours.weight.data if ours.weight.ndim == 4 else ours.weight.data.T
        np.testing.assert_allclose(w, theirs.weight.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.bias.data, theirs.bias.detach().numpy(), atol=1e-12)
