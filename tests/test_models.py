"""End to end: Dense networks learn XOR, two interleaved moons and three blobs (fixed seeds)."""

from __future__ import annotations

import numpy as np

import lepton_nn as ln
from lepton_nn import losses, optim
from lepton_nn.nn import Dense, Sequential


def make_moons(n, noise, rng):
    """Two interleaving half circles (labels 0 and 1), with Gaussian noise."""
    half = n // 2
    t0 = rng.uniform(0, np.pi, half)
    t1 = rng.uniform(0, np.pi, n - half)
    upper = np.c_[np.cos(t0), np.sin(t0)]
    lower = np.c_[1 - np.cos(t1), 0.5 - np.sin(t1)]
    x = np.r_[upper, lower] + rng.normal(0, noise, (n, 2))
    y = np.r_[np.zeros(half), np.ones(n - half)]
    order = rng.permutation(n)
    return x[order].astype(np.float32), y[order].astype(np.float32)


def make_blobs(n_per, centers, std, rng):
    x = np.concatenate([rng.normal(c, std, (n_per, len(c))) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per)
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order]


def fit(model, x, y, loss_fn, steps, lr, batch=None, seed=0):
    opt = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        if batch is None:
            xb, yb = x, y
        else:
            idx = rng.choice(len(x), batch, replace=False)
            xb, yb = x[idx], y[idx]
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.data)


def test_xor_exactly():
    ln.set_seed(0)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0], np.float32)
    model = Sequential([Dense(8, "tanh"), Dense(1)])
    model.build((None, 2))
    loss = fit(model, x, y, losses.binary_cross_entropy_with_logits, steps=400, lr=0.05)
    with ln.no_grad():
        p = model(x).sigmoid().data[:, 0]
    np.testing.assert_array_equal(p > 0.5, y.astype(bool))
    assert loss < 0.05
    assert np.all(np.abs(p - y) < 0.1)


def test_two_moons():
    ln.set_seed(1)
    rng = np.random.default_rng(1)
    x, y = make_moons(1000, 0.1, rng)
    xtr, ytr, xte, yte = x[:700], y[:700], x[700:], y[700:]
    model = Sequential([Dense(32, "relu"), Dense(32, "relu"), Dense(1)])
    model.build((None, 2))
    fit(model, xtr, ytr, losses.binary_cross_entropy_with_logits, 600, 0.01, batch=64)
    with ln.no_grad():
        acc_tr = np.mean((model(xtr).data[:, 0] > 0) == ytr)
        acc_te = np.mean((model(xte).data[:, 0] > 0) == yte)
    assert acc_tr >= 0.97, acc_tr
    assert acc_te >= 0.97, acc_te


def test_three_blobs_softmax():
    ln.set_seed(2)
    rng = np.random.default_rng(2)
    centers = [(0.0, 0.0, 0.0), (3.0, 0.0, 1.0), (0.0, 3.0, -1.0)]
    x, y = make_blobs(200, centers, 0.8, rng)
    xtr, ytr, xte, yte = x[:450], y[:450], x[450:], y[450:]
    model = Sequential([Dense(16, "relu"), Dense(3)])
    model.build((None, 3))
    fit(model, xtr, ytr, losses.cross_entropy, 300, 0.02, batch=64)
    with ln.no_grad():
        probs = model(xte).softmax().data
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert np.mean(probs.argmax(axis=1) == yte) >= 0.95


def test_regression_fits_a_smooth_function():
    ln.set_seed(3)
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, (256, 1)).astype(np.float32)
    y = np.sin(2 * x).astype(np.float32)
    model = Sequential([Dense(32, "tanh"), Dense(32, "tanh"), Dense(1)])
    model.build((None, 1))
    loss = fit(model, x, y, losses.mse, 600, 0.01)
    assert loss < 0.01, loss
