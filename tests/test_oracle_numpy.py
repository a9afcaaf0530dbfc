"""An independent oracle that always runs: a two-layer MLP backpropagated by hand in NumPy.

Our autograd, fused Dense op, losses and Adam must reproduce the hand-written forward pass,
gradients and parameter updates (float64, tight tolerances).
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import Tensor, losses, optim
from lepton_nn.nn import Dense, Sequential

TOL = {"rtol": 1e-10, "atol": 1e-12}

# activation f(a) and its derivative written from f's value y (or from a for gelu)
GELU_C, GELU_A = np.sqrt(2 / np.pi), 0.044715


def _gelu(a):
    return 0.5 * a * (1 + np.tanh(GELU_C * (a + GELU_A * a**3)))


def _gelu_grad(a):
    t = np.tanh(GELU_C * (a + GELU_A * a**3))
    return 0.5 * (1 + t) + 0.5 * a * (1 - t**2) * GELU_C * (1 + 3 * GELU_A * a**2)


ACT = {
    "tanh": (np.tanh, lambda a, y: 1 - y**2),
    "relu": (lambda a: np.maximum(a, 0), lambda a, y: (a > 0).astype(a.dtype)),
    "sigmoid": (lambda a: 1 / (1 + np.exp(-a)), lambda a, y: y * (1 - y)),
    "gelu": (_gelu, lambda a, y: _gelu_grad(a)),
}


def manual_mlp(x, y, w1, b1, w2, b2, act, loss):
    """Forward and backward by hand. Returns (loss, dx, dW1, db1, dW2, db2)."""
    f, df = ACT[act]
    n = x.shape[0]
    a1 = x @ w1 + b1
    h = f(a1)
    z = h @ w2 + b2
    if loss == "cross_entropy":  # softmax + NLL, mean over the batch
        s = z - z.max(axis=1, keepdims=True)
        p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
        value = -np.log(p[np.arange(n), y]).mean()
        dz = p.copy()
        dz[np.arange(n), y] -= 1
        dz /= n
    elif loss == "bce":  # sigmoid + binary cross-entropy, mean over the batch
        q = 1 / (1 + np.exp(-z[:, 0]))
        value = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        dz = ((q - y) / n)[:, None]
    else:  # mse, mean over every element
        d = z - y
        value = np.mean(d**2)
        dz = 2 * d / d.size
    dw2 = h.T @ dz
    db2 = dz.sum(axis=0)
    dh = dz @ w2.T
    da1 = dh * df(a1, h)
    dw1 = x.T @ da1
    db1 = da1.sum(axis=0)
    dx = da1 @ w1.T
    return value, dx, dw1, db1, dw2, db2


def data(loss, n=16, d=5, c=3, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, d))
    if loss == "cross_entropy":
        return x, r.integers(0, c, n), c
    if loss == "bce":
        return x, (r.random(n) > 0.5).astype(np.float64), 1
    return x, r.standard_normal((n, 2)), 2


LOSS_FN = {
    "cross_entropy": losses.cross_entropy,
    "bce": losses.binary_cross_entropy_with_logits,
    "mse": losses.mse,
}


def model_for(act, n_in, n_out, seed=0):
    ln.set_seed(seed)
    model = Sequential([Dense(7, act), Dense(n_out)]).astype("float64")
    return model.build((None, n_in))


@pytest.mark.parametrize("act", list(ACT))
@pytest.mark.parametrize("loss", list(LOSS_FN))
def test_gradients_equal_manual_backprop(act, loss):
    x, y, c = data(loss)
    model = model_for(act, x.shape[1], c)
    l1, l2 = model[0], model[1]
    xt = Tensor(x, requires_grad=True)
    out = LOSS_FN[loss](model(xt), y)
    out.backward()
    ref = manual_mlp(x, y, l1.weight.data, l1.bias.data, l2.weight.data, l2.bias.data, act, loss)
    value, dx, dw1, db1, dw2, db2 = ref
    np.testing.assert_allclose(out.data, value, **TOL)
    for got, want in [
        (xt.grad, dx),
        (l1.weight.grad, dw1),
        (l1.bias.grad, db1),
        (l2.weight.grad, dw2),
        (l2.bias.grad, db2),
    ]:
        np.testing.assert_allclose(got, want, **TOL)


def test_unfused_ops_equal_manual_backprop():
    # the same network written with elementary ops (matmul, +, tanh, log_softmax, indexing)
    x, y, c = data("cross_entropy", seed=3)
    r = np.random.default_rng(4)
    w1, b1, w2, b2 = (r.standard_normal(s) for s in [(5, 7), (7,), (7, c), (c,)])
    ts = [Tensor(a, requires_grad=True) for a in (w1, b1, w2, b2)]
    z = (Tensor(x) @ ts[0] + ts[1]).tanh() @ ts[2] + ts[3]
    loss = -z.log_softmax(axis=1)[np.arange(len(y)), y].mean()
    loss.backward()
    value, _, dw1, db1, dw2, db2 = manual_mlp(x, y, w1, b1, w2, b2, "tanh", "cross_entropy")
    np.testing.assert_allclose(loss.data, value, **TOL)
    for t, want in zip(ts, (dw1, db1, dw2, db2)):
        np.testing.assert_allclose(t.grad, want, **TOL)


def _manual_adam(params, grads, state, t, lr=0.01, b1=0.9, b2=0.999, eps=1e-8):
    for i, (p, g) in enumerate(zip(params, grads)):
        m, v = state.get(i, (0.0, 0.0))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[i] = (m, v)
        params[i] = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)


def test_adam_training_equals_manual_training():
    x, y, c = data("cross_entropy", n=32, seed=5)
    model = model_for("relu", x.shape[1], c, seed=6)
    opt = optim.Adam(model.parameters(), lr=0.01)
    params = [p.data.copy() for p in model.parameters()]  # w1, b1, w2, b2
    state: dict = {}
    for t in range(1, 6):
        xb, yb = x[(t * 8) % 32 :][:16], y[(t * 8) % 32 :][:16]
        opt.zero_grad()
        loss = losses.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        value, _, *grads = manual_mlp(xb, yb, *params, "relu", "cross_entropy")
        np.testing.assert_allclose(loss.data, value, **TOL)
        _manual_adam(params, grads, state, t)
    for p, want in zip(model.parameters(), params):
        np.testing.assert_allclose(p.data, want, rtol=1e-9, atol=1e-12)


def test_sgd_momentum_training_equals_manual_training():
    x, y, _ = data("mse", n=16, seed=7)
    model = model_for("tanh", x.shape[1], 2, seed=8)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    params = [p.data.copy() for p in model.parameters()]
    bufs = [None] * 4
    for _ in range(5):
        opt.zero_grad()
        losses.mse(model(x), y).backward()
        opt.step()
        _, _, *grads = manual_mlp(x, y, *params, "tanh", "mse")
        for i, g in enumerate(grads):
            bufs[i] = g if bufs[i] is None else 0.9 * bufs[i] + g
            params[i] = params[i] - 0.05 * bufs[i]
    for p, want in zip(model.parameters(), params):
        np.testing.assert_allclose(p.data, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ln.backend.available())
def test_float32_on_every_backend_tracks_the_float64_oracle(backend):
    x, y, c = data("cross_entropy", seed=9)
    with ln.backend.use_backend(backend):
        model = model_for("gelu", x.shape[1], c, seed=10).astype("float32")
        loss = losses.cross_entropy(model(x.astype(np.float32)), y)
        loss.backward()
    l1, l2 = model[0], model[1]
    p64 = [a.data.astype(np.float64) for a in (l1.weight, l1.bias, l2.weight, l2.bias)]
    value, _, *grads = manual_mlp(x, y, *p64, "gelu", "cross_entropy")
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.data, value, rtol=1e-5)
    for p, g in zip((l1.weight, l1.bias, l2.weight, l2.bias), grads):
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad, g, rtol=1e-4, atol=1e-6)
