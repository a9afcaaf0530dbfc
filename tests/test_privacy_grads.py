"""Per-example gradients (lepton_nn.privacy) against two oracles: backward on each example
alone (batch of 1) in float64, and torch.func (vmap of grad) where torch is installed."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_nn import losses, nn
from lepton_nn.errors import LeptonError
from lepton_nn.privacy import GradSampler, per_example_grads
from lepton_nn.random import set_seed


def _one_by_one(model, loss_fn, x, y, **kw):
    """The oracle: each example's gradient from a backward on that example alone."""
    out = {}
    for n in range(len(x)):
        model.zero_grad()
        loss = loss_fn(model(x[n : n + 1], **kw), y[n : n + 1])
        loss.backward()
        for name, p in model.named_parameters():
            if p.requires_grad:
                out.setdefault(name, []).append(np.zeros_like(p.data) if p.grad is None else p.grad)
    model.zero_grad()
    return {k: np.stack(v) for k, v in out.items()}


def _check(model, loss_fn, x, y):
    got = per_example_grads(model, loss_fn, x, y)
    want = _one_by_one(model, loss_fn, x, y)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)
    for ghost in (True, False):  # norms and clipped sums, ghost and materialised
        s = GradSampler(model, ghost=ghost).attach()
        try:
            loss = loss_fn(model(x), y)
            loss.backward()
            norms = s.norms(scale=len(x))
            flat = np.concatenate([want[k].reshape(len(x), -1) for k in want], axis=1)
            np.testing.assert_allclose(norms, np.linalg.norm(flat, axis=1), rtol=1e-10)
            # clip(): the norms and the clipped sum together (one pass for Dense rows)
            cap = float(np.median(norms))
            got_norms, got_sums = s.clip(cap, scale=len(x), divisor=3.0)
            np.testing.assert_allclose(got_norms, norms, rtol=1e-12)
            coef = np.minimum(1.0, cap / (norms + 1e-6))
            for name, p in model.named_parameters():
                if p.requires_grad:
                    want_sum = np.tensordot(coef, want[name], axes=1) / 3.0
                    np.testing.assert_allclose(got_sums[id(p)], want_sum, rtol=1e-10, atol=1e-12)
            c = np.linspace(0.1, 1.0, len(x))
            sums = s.clipped_sum(c, scale=len(x))
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    assert id(p) not in sums
                    continue
                np.testing.assert_allclose(
                    sums[id(p)], np.tensordot(c, want[name], axes=1), rtol=1e-10, atol=1e-12
                )
        finally:
            s.detach()
            model.zero_grad()


@pytest.fixture(autouse=True)
def _seed():
    set_seed(3)


def test_dense_mlp_float64():
    r = np.random.default_rng(0)
    m = nn.Sequential([nn.Dense(7, "relu", in_features=5), nn.Dense(4, "tanh"), nn.Dense(3)])
    m.astype("float64")
    x, y = r.normal(size=(6, 5)), r.integers(0, 3, 6)
    m(x)
    _check(m, losses.cross_entropy, x, y)


def test_dense_rows_every_activation_no_bias_and_a_frozen_bias():
    r = np.random.default_rng(7)
    m = nn.Sequential([
        nn.Dense(7, "gelu", in_features=5),
        nn.Dense(6, "sigmoid", use_bias=False),
        nn.Dense(4, "tanh"),
        nn.Dense(3, "softmax"),  # not fused: the activation runs after the recorded op
    ])  # fmt: skip
    m.build((None, 5))
    m.astype("float64")
    x, y = r.normal(size=(6, 5)), r.normal(size=(6, 3))
    m(x)
    _check(m, losses.mse, x, y)
    m.layers[2].bias.requires_grad = False  # a partly frozen layer takes the general path
    _check(m, losses.mse, x, y)


def test_recording_forms_no_full_batch_weight_gradient():
    """DP-SGD discards the batch's summed weight gradient: backward must not form it (the
    clipped sum is the one weight product of a step), and must leave .grad alone."""
    m = nn.Sequential([nn.Dense(4, "relu", in_features=3), nn.Dense(1)])
    m.build((None, 3))
    m.astype("float64")
    x, y = np.random.default_rng(8).normal(size=(5, 3)), np.zeros((5, 1))
    with GradSampler(m) as s:
        losses.mse(m(x), y).backward()
        assert all(p.grad is None for p in m.parameters())
        assert s.norms(scale=5).shape == (5,)
    # a convolution whose input carries a gradient: its weights are not differentiated either
    c = nn.Sequential([
        nn.Conv2D(2, 3, in_channels=1, activation="relu"),
        nn.Conv2D(2, 3, activation="tanh"),
        nn.Flatten(),
        nn.Dense(1),
    ])  # fmt: skip
    c.build((None, 1, 7, 7))
    c.astype("float64")
    with GradSampler(c) as s:
        losses.mse(c(np.ones((3, 1, 7, 7))), np.zeros((3, 1))).backward()
        assert c.layers[1].weight.grad is None and c.layers[1].bias.grad is None
        assert s.norms(scale=3).shape == (3,)


def test_dense_on_sequences_ghost_gram():
    r = np.random.default_rng(1)
    m = nn.Sequential([nn.Dense(8, "gelu", in_features=6), nn.Flatten(), nn.Dense(1)])
    m.astype("float64")
    x, y = r.normal(size=(5, 3, 6)), r.normal(size=(5, 1))
    m(x)
    _check(m, losses.mse, x, y)


def test_conv2d_groups_stride_padding_and_fused_pool():
    r = np.random.default_rng(2)
    m = nn.Sequential([
        nn.Conv2D(4, 3, stride=2, padding="same", in_channels=2, activation="relu", groups=2),
        nn.MaxPool2D(2),
        nn.Conv2D(3, (2, 3), dilation=(1, 2), padding=1, activation="tanh"),
        nn.Flatten(),
        nn.Dense(2),
    ])  # fmt: skip
    m.astype("float64")
    x, y = r.normal(size=(4, 2, 9, 11)), r.integers(0, 2, 4)
    m(x)
    m(x)  # second call: Sequential would now fuse conv + pool; the sampler must see the conv
    _check(m, losses.cross_entropy, x, y)


def test_embedding_layernorm_rnn_layers():
    r = np.random.default_rng(3)
    for rnn in (nn.SimpleRNN, nn.LSTM, nn.GRU):
        m = nn.Sequential([
            nn.Embedding(11, 4),
            nn.LayerNorm(),
            rnn(5, bidirectional=True),
            nn.Dense(1),
        ])  # fmt: skip
        m.astype("float64")
        ids = r.integers(0, 11, (5, 6))
        ids[0, :3] = 2  # a repeated id within one example
        y = r.normal(size=(5, 1))
        m(ids)
        _check(m, losses.mse, ids, y)


def test_rnn_with_lengths_mask():
    r = np.random.default_rng(4)
    m = nn.Sequential([nn.LSTM(3, return_sequences=True, input_size=2), nn.Flatten(), nn.Dense(1)])
    m.astype("float64")
    x, y = r.normal(size=(4, 5, 2)), r.normal(size=(4, 1))
    lstm = m.layers[0]
    x[1, 3:] = 0
    got = None
    # masks travel through the layer's own call: check with a direct call on the LSTM
    mask = np.ones((4, 5), bool)
    mask[1, 3:] = False
    head = nn.Sequential([nn.Flatten(), nn.Dense(1)])
    head.astype("float64")

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = lstm, head

        def call(self, x, mask=None):
            return self.head(self.rnn(x, mask=mask))

    model = M()
    model(x)
    got = None
    s = GradSampler(model).attach()
    try:
        losses.mse(model(x, mask=mask), y, reduction="sum").backward()
        got = s.per_example()
    finally:
        s.detach()
    want = _one_by_one_masked(model, x, y, mask)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)


def _one_by_one_masked(model, x, y, mask):
    out = {}
    for n in range(len(x)):
        model.zero_grad()
        losses.mse(model(x[n : n + 1], mask=mask[n : n + 1]), y[n : n + 1]).backward()
        for name, p in model.named_parameters():
            out.setdefault(name, []).append(p.grad)
    return {k: np.stack(v) for k, v in out.items()}


def test_batchnorm_and_unknown_layers_are_refused():
    m = nn.Sequential([nn.Dense(4, in_features=3), nn.BatchNorm(num_features=4), nn.Dense(1)])
    with pytest.raises(LeptonError, match="BatchNorm.*LayerNorm"):
        per_example_grads(m, losses.mse, np.zeros((2, 3)), np.zeros((2, 1)))
    m = nn.Sequential([nn.Conv1D(2, 3, in_channels=1), nn.Flatten(), nn.Dense(1)])
    with pytest.raises(LeptonError, match="Conv1D.*no per-example gradient rule"):
        per_example_grads(m, losses.mse, np.zeros((2, 1, 8)), np.zeros((2, 1)))


def test_sampler_detach_restores_layers_and_grads():
    m = nn.Sequential([nn.Dense(3, "relu", in_features=2), nn.Dense(1)])
    m.astype("float64")
    x, y = np.ones((2, 2)), np.zeros((2, 1))
    per_example_grads(m, losses.mse, x, y)
    assert all("call" not in vars(layer) for layer in m.layers)
    assert all(p.grad is None for p in m.parameters())


def test_against_torch_func():
    torch = pytest.importorskip("torch")
    from torch.func import functional_call, grad, vmap

    r = np.random.default_rng(5)
    m = nn.Sequential([nn.Dense(6, "tanh", in_features=4), nn.LayerNorm(), nn.Dense(3)])
    m.astype("float64")
    x, y = r.normal(size=(7, 4)), r.integers(0, 3, 7)
    got = per_example_grads(m, losses.cross_entropy, x, y)

    tm = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.LayerNorm(6), torch.nn.Linear(6, 3)
    ).double()
    with torch.no_grad():
        tm[0].weight.copy_(torch.from_numpy(m.layers[0].weight.data.T))
        tm[0].bias.copy_(torch.from_numpy(m.layers[0].bias.data))
        tm[2].weight.copy_(torch.from_numpy(m.layers[1].weight.data))
        tm[2].bias.copy_(torch.from_numpy(m.layers[1].bias.data))
        tm[3].weight.copy_(torch.from_numpy(m.layers[2].weight.data.T))
        tm[3].bias.copy_(torch.from_numpy(m.layers[2].bias.data))
    params = {k: v.detach() for k, v in tm.named_parameters()}

    def loss_one(p, xi, yi):
        out = functional_call(tm, p, (xi[None],))
        return torch.nn.functional.cross_entropy(out, yi[None])

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, torch.from_numpy(x), torch.from_numpy(y))
    pairs = {
        "layers.0.weight": g["0.weight"].transpose(1, 2),
        "layers.0.bias": g["0.bias"],
        "layers.1.weight": g["2.weight"],
        "layers.1.bias": g["2.bias"],
        "layers.2.weight": g["3.weight"].transpose(1, 2),
        "layers.2.bias": g["3.bias"],
    }
    for k, v in pairs.items():
        np.testing.assert_allclose(got[k], v.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_conv_and_embedding_against_torch_func():
    torch = pytest.importorskip("torch")
    from torch.func import functional_call, grad, vmap

    r = np.random.default_rng(6)
    m = nn.Sequential([
        nn.Conv2D(3, 3, stride=2, padding=1, in_channels=2, activation="relu"),
        nn.Flatten(),
        nn.Dense(2),
    ])  # fmt: skip
    m.astype("float64")
    x, y = r.normal(size=(5, 2, 7, 7)), r.integers(0, 2, 5)
    m(x)
    got = per_example_grads(m, losses.cross_entropy, x, y)
    conv, dense = m.layers[0], m.layers[2]
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(dense.in_features, 2),
    ).double()  # fmt: skip
    with torch.no_grad():
        tm[0].weight.copy_(torch.from_numpy(conv.weight.data))
        tm[0].bias.copy_(torch.from_numpy(conv.bias.data))
        tm[3].weight.copy_(torch.from_numpy(dense.weight.data.T))
        tm[3].bias.copy_(torch.from_numpy(dense.bias.data))
    params = {k: v.detach() for k, v in tm.named_parameters()}

    def loss_one(p, xi, yi):
        return torch.nn.functional.cross_entropy(functional_call(tm, p, (xi[None],)), yi[None])

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(
        got["layers.0.weight"], g["0.weight"].numpy(), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(got["layers.0.bias"], g["0.bias"].numpy(), rtol=1e-10, atol=1e-12)
    w = g["3.weight"].transpose(1, 2).numpy()
    np.testing.assert_allclose(got["layers.2.weight"], w, rtol=1e-10, atol=1e-12)

    emb = nn.Sequential([nn.Embedding(9, 3), nn.Flatten(), nn.Dense(1)])
    emb.astype("float64")
    ids, t = r.integers(0, 9, (6, 4)), r.normal(size=(6, 1))
    emb(ids)
    got = per_example_grads(emb, losses.mse, ids, t)
    te = torch.nn.Sequential(torch.nn.Embedding(9, 3), torch.nn.Flatten(), torch.nn.Linear(12, 1))
    te = te.double()
    with torch.no_grad():
        te[0].weight.copy_(torch.from_numpy(emb.layers[0].weight.data))
        te[2].weight.copy_(torch.from_numpy(emb.layers[2].weight.data.T))
        te[2].bias.copy_(torch.from_numpy(emb.layers[2].bias.data))
    params = {k: v.detach() for k, v in te.named_parameters()}

    def mse_one(p, ii, ti):
        return ((functional_call(te, p, (ii[None],)) - ti[None]) ** 2).mean()

    g = vmap(grad(mse_one), in_dims=(None, 0, 0))(
        params, torch.from_numpy(ids), torch.from_numpy(t)
    )
    np.testing.assert_allclose(
        got["layers.0.weight"], g["0.weight"].numpy(), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize(
    "geometry",
    [
        dict(shape=(6, 2, 5, 5), filters=8, kernel=3, stride=2, padding=0, groups=1),  # Gram
        dict(shape=(6, 4, 9, 8), filters=4, kernel=2, stride=1, padding=1, groups=2),  # product
    ],
)
def test_conv_ghost_norms_and_clipped_sum_against_torch_func(geometry):
    """Conv2D per-example norms (Gram matrices of positions, or the per-layer product where
    that is smaller: both branches) and the clipped sum (one product, no per-example array)
    against torch.func's per-example gradients, float64, 1e-10."""
    torch = pytest.importorskip("torch")
    from torch.func import functional_call, grad, vmap

    r = np.random.default_rng(9)
    n, ch = geometry["shape"][:2]
    f, k, st, pad, gr = (geometry[a] for a in ("filters", "kernel", "stride", "padding", "groups"))
    m = nn.Sequential([
        nn.Conv2D(f, k, stride=st, padding=pad, in_channels=ch, activation="tanh", groups=gr),
        nn.Flatten(),
        nn.Dense(1),
    ])  # fmt: skip
    m.astype("float64")
    x, y = r.normal(size=geometry["shape"]), r.normal(size=(n, 1))
    m(x)
    conv, dense = m.layers[0], m.layers[2]
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(ch, f, k, stride=st, padding=pad, groups=gr), torch.nn.Tanh(),
        torch.nn.Flatten(), torch.nn.Linear(dense.in_features, 1),
    ).double()  # fmt: skip
    with torch.no_grad():
        tm[0].weight.copy_(torch.from_numpy(conv.weight.data))
        tm[0].bias.copy_(torch.from_numpy(conv.bias.data))
        tm[3].weight.copy_(torch.from_numpy(dense.weight.data.T))
        tm[3].bias.copy_(torch.from_numpy(dense.bias.data))
    params = {k_: v.detach() for k_, v in tm.named_parameters()}

    def loss_one(p, xi, yi):
        return ((functional_call(tm, p, (xi[None],)) - yi[None]) ** 2).mean()

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, torch.from_numpy(x), torch.from_numpy(y))
    g = {k_: v.numpy() for k_, v in g.items()}
    conv_sq = np.square(g["0.weight"]).reshape(n, -1).sum(1) + np.square(g["0.bias"]).sum(1)
    with GradSampler(m) as s:
        rule = next(rl for rl in s.rules if rl.layer is conv)
        losses.mse(m(x), y).backward()
        assert rule._whole()
        np.testing.assert_allclose(rule.norms_sq(1.0) * n * n, conv_sq, rtol=1e-10)
        want = conv_sq + np.square(g["3.weight"]).reshape(n, -1).sum(1)
        want += np.square(g["3.bias"]).sum(1)
        np.testing.assert_allclose(s.norms(scale=n), np.sqrt(want), rtol=1e-10)
        c = np.linspace(0.2, 1.0, n)
        sums = s.clipped_sum(c, scale=n)
        np.testing.assert_allclose(
            sums[id(conv.weight)], np.tensordot(c, g["0.weight"], axes=1), rtol=1e-10, atol=1e-13
        )
        np.testing.assert_allclose(
            sums[id(conv.bias)], np.tensordot(c, g["0.bias"], axes=1), rtol=1e-10, atol=1e-13
        )
