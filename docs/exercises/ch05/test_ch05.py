"""Chapter 5: your training step against lepton_nn's (``nn.Dense``, ``losses.cross_entropy``,
``optim.SGD``; the kernels ``bias_act_*``, ``softmax_xent_*`` of ``backend/reference.py``),
against central differences, and on the bundled digits, where it must learn."""

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import datasets, losses, nn, optim


def test_minibatches_cover_each_row_once(ex):
    batches = ex.minibatches(103, 10, np.random.default_rng(7))
    assert [len(b) for b in batches] == [10] * 10 + [3]
    joined = np.concatenate(batches)
    assert np.array_equal(joined, np.random.default_rng(7).permutation(103))
    assert sorted(joined.tolist()) == list(range(103))


def test_init_mlp_shapes_and_scales(ex):
    p = ex.init_mlp(np.random.default_rng(0), 400, 300, 10)
    assert {k: v.shape for k, v in p.items()} == {
        "W1": (400, 300),
        "b1": (300,),
        "W2": (300, 10),
        "b2": (10,),
    }
    assert p["W1"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert p["W2"].std() == pytest.approx(np.sqrt(1 / 300), rel=0.05)
    assert not p["b1"].any() and not p["b2"].any() and abs(p["W1"].mean()) < 0.01


def test_one_step_matches_lepton_nn(ex):
    rng = np.random.default_rng(1)
    params = ex.init_mlp(rng, 6, 5, 3)
    params["b1"] += rng.normal(size=5) * 0.1  # nonzero biases, so their gradients count
    x, t = rng.normal(size=(8, 6)), rng.integers(0, 3, size=8)
    ln.set_seed(0)
    net = nn.Sequential([nn.Dense(5, "relu", in_features=6), nn.Dense(3, in_features=5)])
    for (_, p), key in zip(net.named_parameters(), ["W1", "b1", "W2", "b2"]):
        p.data = params[key].copy()
    loss = losses.cross_entropy(net(x), t)
    loss.backward()
    optim.SGD(net, lr=0.3).step()
    ours = ex.sgd_step(params, x, t, 0.3)
    assert ours == pytest.approx(float(loss.data), rel=1e-6)  # the layers compute in float32
    for (name, p), key in zip(net.named_parameters(), ["W1", "b1", "W2", "b2"]):
        assert np.allclose(params[key], p.data, atol=1e-6), name
    assert np.allclose(ex.mlp_logits(params, x), net(x).data, atol=1e-5)


def test_the_step_is_minus_lr_times_the_numeric_gradient(ex):
    rng = np.random.default_rng(2)
    params = ex.init_mlp(rng, 3, 4, 3)
    params["b1"] += 0.5  # keep every hidden unit away from ReLU's kink at 0
    x, t = rng.normal(size=(5, 3)), rng.integers(0, 3, size=5)

    def loss(p):
        z = ex.mlp_logits(p, x)
        z = z - z.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(5), t])

    numeric = {}
    for key, arr in params.items():
        numeric[key] = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + 1e-6
            up = loss(params)
            arr[idx] = keep - 1e-6
            down = loss(params)
            arr[idx] = keep
            numeric[key][idx] = (up - down) / 2e-6
    before = {k: v.copy() for k, v in params.items()}
    assert ex.sgd_step(params, x, t, 0.1) == pytest.approx(loss(before))
    for key in params:
        step = (before[key] - params[key]) / 0.1
        assert np.allclose(step, numeric[key], atol=1e-6), key


def test_it_learns_the_digits(ex):
    table = datasets.load("digits")
    X = table.to_numpy().astype(np.float64) / 16.0
    y = np.asarray(table.target).astype(int)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    train, test = order[:1400], order[1400:]
    params = ex.init_mlp(rng, 64, 32, 10)
    first = None
    for _ in range(10):
        for batch in ex.minibatches(len(train), 32, rng):
            loss = ex.sgd_step(params, X[train[batch]], y[train[batch]], 0.5)
            first = loss if first is None else first
    accuracy = (ex.mlp_logits(params, X[test]).argmax(axis=1) == y[test]).mean()
    assert loss < first / 5 and accuracy > 0.9, (first, loss, accuracy)
