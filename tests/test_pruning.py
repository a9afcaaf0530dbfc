"""Pruning: exact sparsity, masks through fine-tuning, schedules, compaction, sparse export."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from conftest import PKG_PARENT

from lepton_nn import nn, no_grad, set_seed
from lepton_nn.backend import available, use_backend
from lepton_nn.compress import (
    OneShot,
    PolynomialDecay,
    PruningCallback,
    compact,
    count_flops,
    get_pruner,
    prune,
    prune_magnitude,
    prune_structured,
    sparsity_report,
    strip,
    to_sparse,
)
from lepton_nn.errors import LeptonError, ShapeError
from lepton_nn.losses import cross_entropy, mse
from lepton_nn.optim import SGD, Adam, AdamW


def mlp(sizes=(12, 32, 24, 5), acts=("relu", "relu"), seed=0) -> nn.Sequential:
    set_seed(seed)
    layers = [nn.Dense(sizes[1], acts[0], in_features=sizes[0])]
    for n, a in zip(sizes[2:-1], acts[1:]):
        layers.append(nn.Dense(n, a))
    layers.append(nn.Dense(sizes[-1]))
    model = nn.Sequential(layers).build((None, sizes[0]))
    r = np.random.default_rng(seed)
    for layer in model:  # nonzero biases, so "untouched" means something
        layer.bias.data[:] = r.normal(size=layer.bias.shape).astype(np.float32)
    return model


def x_of(shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def forward(model, x) -> np.ndarray:
    model.eval()
    with no_grad():
        return model(x).data


# -- magnitude masks --------------------------------------------------------------------------


def test_layer_scope_exact_sparsity_and_smallest_weights():
    model = mlp()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    pruner = prune_magnitude(model, 0.7, scope="layer")
    for i, layer in enumerate(model):
        assert np.count_nonzero(layer.weight.data == 0) == round(0.7 * layer.weight.size)
        w0 = before[f"layers.{i}.weight"]
        mask = pruner.masks[f"layers.{i}.weight"]
        np.testing.assert_array_equal(layer.weight.data[mask], w0[mask])  # kept as they were
        assert np.abs(w0[~mask]).max() <= np.abs(w0[mask]).min()  # the smallest went
        np.testing.assert_array_equal(layer.bias.data, before[f"layers.{i}.bias"])
    assert set(pruner.masks) == {f"layers.{i}.weight" for i in range(3)}
    assert get_pruner(model) is pruner


def test_global_scope_one_ranking_over_all_layers():
    model = mlp()
    model[1].weight.data *= 0.1  # a layer of small weights loses more under a global rank
    w0 = [layer.weight.data.copy() for layer in model]
    prune_magnitude(model, 0.8, scope="global")
    total = sum(w.size for w in w0)
    zeros = sum(int(np.count_nonzero(layer.weight.data == 0)) for layer in model)
    assert zeros == round(0.8 * total)
    kept = np.concatenate([np.abs(w[layer.weight.data != 0]) for w, layer in zip(w0, model)])
    gone = np.concatenate([np.abs(w[layer.weight.data == 0]) for w, layer in zip(w0, model)])
    assert gone.max() <= kept.min()
    per_layer = [np.mean(layer.weight.data == 0) for layer in model]
    assert per_layer[1] > max(per_layer[0], per_layer[2])


def test_include_patterns_and_defaults_skip_biases_and_norms():
    set_seed(0)
    model = nn.Sequential([nn.Dense(16, in_features=8), nn.BatchNorm(), nn.ReLU(), nn.Dense(3)])
    model.build((None, 8))
    bn_w = model[1].weight.data.copy()
    pruner = prune_magnitude(model, 0.5)
    assert set(pruner.masks) == {"layers.0.weight", "layers.3.weight"}
    np.testing.assert_array_equal(model[1].weight.data, bn_w)

    model2 = mlp()
    p2 = prune_magnitude(model2, 0.5, include=f"{model2[1].name}.*")  # layer name: w and b
    assert set(p2.masks) == {"layers.1.weight", "layers.1.bias"}
    p3 = prune_magnitude(mlp(), 0.5, include=["layers.2.weight"])
    assert set(p3.masks) == {"layers.2.weight"}
    with pytest.raises(LeptonError, match="no parameter matches"):
        prune_magnitude(mlp(), 0.5, include="nothing.*")
    with pytest.raises(ValueError):
        prune_magnitude(mlp(), 1.5)
    with pytest.raises(ValueError):
        prune_magnitude(mlp(), 0.5, scope="model")


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.SimpleRNN])
def test_default_targets_include_recurrent_weights(cell):
    """weight_ih and weight_hh of each direction are pruned by default, biases never; the
    masks hold through training steps (the optimizer's update is masked too)."""
    set_seed(0)
    model = nn.Sequential([cell(8, bidirectional=True), nn.Dense(3)]).build((None, 5, 4))
    pruner = prune_magnitude(model, 0.5)
    names = sorted(pruner.masks)
    rnn = model.layers[0]
    want = sorted(f"layers.0.{a}" for a in vars(rnn) if a.startswith(("weight_ih", "weight_hh")))
    assert len(want) == 4 and names == sorted([*want, "layers.1.weight"])
    opt = pruner.attach(Adam(model, lr=1e-2))
    x, y = x_of((6, 5, 4)), np.arange(6) % 3
    for _ in range(3):
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name in want:
        w = getattr(rnn, name.split(".")[-1]).data
        assert np.count_nonzero(w == 0) == round(0.5 * w.size), name


def test_masks_only_grow():
    model = mlp()
    prune_magnitude(model, 0.5)
    first = {k: m.copy() for k, m in get_pruner(model).masks.items()}
    prune_magnitude(model, 0.3)  # lower: nothing comes back
    for k, m in get_pruner(model).masks.items():
        np.testing.assert_array_equal(m, first[k])
    prune_magnitude(model, 0.9)
    for k, m in get_pruner(model).masks.items():
        assert not np.any(m & ~first[k])  # nothing pruned before is kept now
        assert np.count_nonzero(~m) == round(0.9 * m.size)


@pytest.mark.parametrize("opt_cls", [Adam, AdamW, SGD])
def test_masks_survive_fine_tuning(opt_cls):
    model = mlp()
    kwargs = {"momentum": 0.9} if opt_cls is SGD else {}
    opt = opt_cls(model, lr=1e-2, **kwargs)
    x, y = x_of((64, 12)), np.random.default_rng(2).integers(0, 5, 64)

    def step():
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.data)

    for _ in range(5):  # momentum / Adam moments are nonzero when the masks arrive
        step()
    pruner = prune_magnitude(model, 0.8)
    pruner.attach(opt)
    pruned = {k: ~m for k, m in pruner.masks.items()}
    kept_before = {k: p.data.copy() for k, p in model.named_parameters()}
    losses = [step() for _ in range(20)]
    params = dict(model.named_parameters())
    for k, off in pruned.items():
        assert np.all(params[k].data[off] == 0), k  # exactly zero after 20 steps
        assert np.all(params[k].grad[off] == 0), k  # the step saw masked gradients
        assert np.any(params[k].data[~off] != kept_before[k][~off])  # the rest trained
    assert losses[-1] < losses[0]
    pruner.detach(opt)
    assert "step" not in vars(opt)  # the optimizer's own step is back


# -- schedules and the callback -----------------------------------------------------------------


def test_polynomial_schedule_matches_zhu_gupta():
    si, sf, t0, n, dt = 0.1, 0.9, 100, 10, 50
    sched = PolynomialDecay(
        sf, initial_sparsity=si, begin_step=t0, end_step=t0 + n * dt, frequency=dt
    )
    for k in range(n + 1):
        t = t0 + k * dt
        assert sched.is_update(t)
        assert sched(t) == pytest.approx(sf + (si - sf) * (1 - k / n) ** 3, abs=1e-12)
    assert [t for t in range(0, 1000) if sched.is_update(t)] == list(range(100, 601, 50))
    assert sched(0) == pytest.approx(si) and sched(10_000) == pytest.approx(sf)
    assert sched(125) == pytest.approx(sf + (si - sf) * (1 - 25 / 500) ** 3)
    odd = PolynomialDecay(0.5, end_step=10, frequency=4)  # 10 is not a multiple of 4
    assert [t for t in range(20) if odd.is_update(t)] == [0, 4, 8, 10]
    one = OneShot(0.6, step=3)
    assert [t for t in range(10) if one.is_update(t)] == [3] and one(2) == 0 and one(3) == 0.6
    with pytest.raises(ValueError):
        PolynomialDecay(0.5, begin_step=10, end_step=5)


def test_callback_gradual_pruning_in_a_plain_loop():
    model = mlp()
    opt = Adam(model, lr=1e-3)
    sched = PolynomialDecay(0.75, begin_step=0, end_step=30, frequency=10)
    cb = PruningCallback(sched, model=model, optimizer=opt)
    x, y = x_of((32, 12)), np.random.default_rng(2).integers(0, 5, 32)
    cb.on_train_begin()
    for i in range(40):
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        cb.on_batch_end(i)
        if i == 14:
            zeros = [np.mean(layer.weight.data == 0) for layer in model]
            assert all(z == pytest.approx(sched(10), abs=0.01) for z in zeros)
    logs: dict = {}
    cb.on_epoch_end(0, logs)
    cb.on_train_end()
    assert [t for t, _ in cb.history] == [0, 10, 20, 30]
    assert [s for _, s in cb.history] == pytest.approx([sched(t) for t in (0, 10, 20, 30)])
    for layer in model:
        assert np.count_nonzero(layer.weight.data == 0) == round(0.75 * layer.weight.size)
    assert logs["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert "step" not in vars(opt)


def test_callback_with_a_lazy_model_and_no_optimizer():
    set_seed(0)
    model = nn.Sequential([nn.Dense(16, "relu"), nn.Dense(3)])  # unbuilt until the first batch
    cb = PruningCallback(OneShot(0.5), model=model)
    cb.on_train_begin()  # due at step 0, but there are no weights yet: pruned after batch 1
    x, y = x_of((16, 7)), np.random.default_rng(2).integers(0, 3, 16)
    opt = None
    for i in range(5):
        out = model(x)
        opt = opt or SGD(model, lr=0.1, momentum=0.9)  # not attached: the callback projects
        loss = cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        cb.on_batch_end(i)
        assert all(np.mean(layer.weight.data == 0) == 0.5 for layer in model)
    assert cb.history == [(1, 0.5)]


def test_callback_in_trainer():
    if importlib.util.find_spec("lepton_nn.train.trainer") is None:
        pytest.skip("trainer not available")
    from lepton_nn.train.trainer import Trainer

    set_seed(0)
    r = np.random.default_rng(0)
    X = r.normal(size=(256, 10)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    model = nn.Sequential([nn.Dense(32, "relu"), nn.Dense(2)])  # lazy: built by fit
    cb = PruningCallback(PolynomialDecay(0.6, end_step=12, frequency=4), structured=True)
    hist = Trainer(model, "cross_entropy", "adam").fit(
        X, y, epochs=4, batch_size=64, callbacks=[cb], verbose=0
    )
    assert hist.history["sparsity"][-1] == pytest.approx(0.6, abs=0.02)
    dead = ~np.any(model[0].weight.data != 0, axis=0)
    assert dead.sum() == round(0.6 * 32) and np.all(model[0].bias.data[dead] == 0)


# -- structured pruning and compaction ----------------------------------------------------------


def test_structured_prunes_lowest_norm_units():
    set_seed(0)
    model = nn.Sequential([nn.Dense(4, in_features=3), nn.Dense(2)]).build((None, 3))
    # columns: L1 = 3, 0.3, 3.5, 3.6;  L2 = 3, 0.17, 2.06, 2.08
    w = np.array([[3, 0.1, 1, 1.2], [0, 0.1, 1, 1.2], [0, 0.1, 1.5, 1.2]], np.float32)

    def dead_units(norm):
        model[0].weight.data[:] = w
        model[0].bias.data[:] = 1
        vars(model).pop("_pruner", None)
        prune_structured(model, 0.5, norm=norm)
        return np.flatnonzero(~np.any(model[0].weight.data != 0, axis=0)).tolist()

    assert dead_units("l1") == [0, 1]
    assert dead_units("l2") == [1, 2]
    assert np.all(model[0].bias.data[[1, 2]] == 0)
    assert np.all(model[1].weight.data != 0)  # the output layer is left alone by default
    with pytest.raises(LeptonError, match="no Dense/Conv layer"):
        prune_structured(model, 0.5, layers="nope")


def test_compact_dense_same_outputs_fewer_parameters():
    set_seed(3)
    model = nn.Sequential(
        [
            nn.Dense(40, "relu", in_features=16),
            nn.Dropout(0.2),
            nn.Dense(30, "sigmoid"),  # a dead sigmoid unit outputs 0.5: folded into the next bias
            nn.Tanh(),
            nn.Dense(20, "relu"),
            nn.Dense(4),
        ]
    )
    x = x_of((8, 16))
    y0 = forward(model, x)
    pruner = prune(model, 0.5, structured=True, norm="l2")
    assert len(pruner.masks) == 6  # weight and bias of the three hidden layers
    y1 = forward(model, x)
    small = compact(model)
    y2 = forward(small, x)
    np.testing.assert_allclose(y2, y1, atol=1e-6)
    assert not np.allclose(y0, y1)  # pruning did change the function; compaction did not
    assert [layer.weight.shape for layer in small if hasattr(layer, "units")] == [
        (16, 20),
        (20, 15),
        (15, 10),
        (10, 4),
    ]
    assert small.num_parameters() < model.num_parameters() / 2
    assert count_flops(small) < count_flops(model) / 2
    assert model[0].weight.shape == (16, 40)  # the original is untouched
    masks = get_pruner(small).masks
    assert masks["layers.0.weight"].shape == (16, 20) and masks["layers.0.weight"].all()
    assert small[2].in_features == 20 and small[0].units == 20
    assert small[4].input_shape == (None, 15)  # shapes re-recorded

    opt = get_pruner(small).attach(Adam(small, lr=1e-2))  # the compact model trains on
    for _ in range(3):
        loss = mse(small(x), np.zeros((8, 4), np.float32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert strip(small).__dict__.get("_pruner") is None


def test_compact_conv_bn_pool_flatten_dense():
    conv = pytest.importorskip("lepton_nn.nn.conv")
    set_seed(5)
    model = nn.Sequential(
        [
            conv.Conv2D(8, 3, padding="same", activation="relu"),
            nn.BatchNorm(),
            nn.ReLU(),
            conv.MaxPool2D(2),
            conv.Conv2D(12, 3, padding="same"),
            nn.Tanh(),
            conv.AvgPool2D(2),
            conv.Conv2D(6, 3, activation="sigmoid"),  # valid: dead channels carry 0.5
            nn.Flatten(),
            nn.Dense(10, "relu"),
            nn.Dense(3),
        ]
    )
    x = x_of((4, 3, 12, 12))
    model.eval()
    forward(model, x)
    bn = model[1]
    r = np.random.default_rng(0)
    bn.running_mean[:] = r.normal(size=8)
    bn.running_var[:] = r.uniform(0.5, 2, size=8)
    bn.bias.data[:] = r.normal(size=8).astype(np.float32)
    pruner = prune_structured(model, 0.5)
    assert "layers.1.weight" in pruner.masks  # the BatchNorm channel goes with its conv channel
    y1 = forward(model, x)
    small = compact(model)
    np.testing.assert_allclose(forward(small, x), y1, atol=1e-6)
    assert [small[i].weight.shape[:2] for i in (0, 4, 7)] == [(4, 3), (6, 4), (3, 6)]
    assert small[1].num_features == 4 and small[1].running_mean.shape == (4,)
    assert small[9].weight.shape == (3 * 1 * 1, 5) and small[9].in_features == 3
    assert small.num_parameters() < model.num_parameters() / 2
    assert count_flops(small) < count_flops(model) / 2


def test_compact_leaves_links_it_cannot_shrink_exactly():
    conv = pytest.importorskip("lepton_nn.nn.conv")
    set_seed(6)
    model = nn.Sequential(
        [
            conv.Conv2D(6, 3, activation="sigmoid", in_channels=2),  # dead channel = 0.5 ...
            conv.Conv2D(4, 3, padding="same"),  # ... which this conv's zero padding would see
            nn.Flatten(),
            nn.Dense(3),
        ]
    )
    x = x_of((2, 2, 8, 8))
    forward(model, x)
    prune_structured(model, 0.5, layers=[model[0]])
    small = compact(model)
    assert small[0].weight.shape == (6, 2, 3, 3)  # kept: not removable exactly
    np.testing.assert_allclose(forward(small, x), forward(model, x), atol=1e-6)


# -- reports and export -------------------------------------------------------------------------


def test_sparsity_report_numbers():
    model = mlp(sizes=(10, 20, 4), acts=("relu",))
    prune_magnitude(model, 0.25)
    rows = sparsity_report(model)
    assert [r["param"] for r in rows] == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
    ]
    assert rows[0] == {
        "layer": model[0].name,
        "param": "layers.0.weight",
        "shape": (10, 20),
        "size": 200,
        "nonzero": 150,
        "sparsity": 0.25,
    }
    assert rows[2]["nonzero"] == 60 and rows[2]["sparsity"] == 0.25
    assert rows[1]["nonzero"] == 20 and rows[1]["sparsity"] == 0.0
    text = str(rows)
    assert "layers.1.weight" in text and "25.0%" in text
    assert text.splitlines()[-1].split()[:3] == ["total", "304", "234"]


def test_to_sparse_csr_layout_and_kernel():
    model = mlp(sizes=(30, 20, 6), acts=("relu",))
    prune_magnitude(model, 0.9)
    w = model[0].weight.data
    csr = to_sparse(w)
    assert csr.shape == (30, 20) and csr.data.size == np.count_nonzero(w)
    assert csr.indptr.shape == (21,) and csr.indptr.dtype == np.int32
    assert csr.indices.dtype == np.int32 and csr.data.dtype == np.float32
    np.testing.assert_array_equal(csr.to_dense(), w)
    col = 3  # column n of W: rows indices[indptr[n]:indptr[n+1]]
    lo, hi = csr.indptr[col], csr.indptr[col + 1]
    np.testing.assert_array_equal(csr.indices[lo:hi], np.flatnonzero(w[:, col]))
    assert csr.density == pytest.approx(0.1, abs=0.01)
    every = to_sparse(model)
    assert set(every) == {"layers.0.weight", "layers.1.weight"}
    assert to_sparse(model, min_sparsity=0.95) == {}
    with pytest.raises(ShapeError):
        to_sparse(np.zeros((2, 3, 4), np.float32))
    for name in available():  # the export runs as is in every backend's sparse kernel
        with use_backend(name) as be:
            x = x_of((5, 30))
            out = np.empty((5, 20), np.float32)
            be.sparse_linear(x, csr.indptr, csr.indices, csr.data, model[0].bias.data, 1, out)
            want = np.maximum(x @ w + model[0].bias.data, 0)
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


# -- accuracy and imports -----------------------------------------------------------------------


def _blobs(seed=0, n=4000, d=10, k=4):
    r = np.random.default_rng(seed)
    centers = r.normal(size=(2 * k, d)) * 1.5  # two clusters per class
    lab = r.integers(0, 2 * k, n)
    X = (centers[lab] + r.normal(size=(n, d))).astype(np.float32)
    return X[:3000], lab[:3000] % k, X[3000:], lab[3000:] % k


def _one_blas_thread():
    """Tiny matmuls on 2 shared cores: BLAS threads only add stalls (~30x here when busy)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def test_gradual_80_percent_keeps_accuracy():
    X, y, Xt, yt = _blobs()
    set_seed(0)
    layers = [nn.Dense(64, "relu", in_features=10), nn.Dense(64, "relu"), nn.Dense(4)]
    model = nn.Sequential(layers).build((None, 10))
    opt = Adam(model, lr=3e-3)
    batches = range(0, len(X), 128)  # 24 steps an epoch

    def epochs(n, cb=None, seed=0):
        r = np.random.default_rng(seed)
        for _ in range(n):
            order = r.permutation(len(X))
            for b in batches:
                j = order[b : b + 128]
                loss = cross_entropy(model(X[j]), y[j])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if cb is not None:
                    cb.on_batch_end(b)

    def accuracy():
        acc = float((forward(model, Xt).argmax(1) == yt).mean())
        model.train()
        return acc

    with _one_blas_thread():
        epochs(12)
        dense = accuracy()
        sched = PolynomialDecay(0.8, end_step=6 * len(batches), frequency=len(batches))
        cb = PruningCallback(sched, model=model, optimizer=opt)  # 0 -> 80 % in 6 epochs
        cb.on_train_begin()
        epochs(10, cb, seed=1)
        cb.on_train_end()
        pruned = accuracy()
    sparsity = get_pruner(model).sparsity
    print(f"\naccuracy dense {dense:.3f}, 80% pruned + fine-tuned {pruned:.3f} ({sparsity:.1%})")
    assert sparsity == pytest.approx(0.8, abs=1e-3)
    assert dense > 0.9
    assert pruned >= dense - 0.02


def test_imports_stay_light():
    code = (
        "import sys, lepton_nn.compress as c\n"
        "assert 'lepton_nn.compress.pruning' not in sys.modules\n"
        "c.prune\n"
        "assert not any(m.startswith('lepton_nn.train') for m in sys.modules), 'train'\n"
        "c.PruningCallback\n"
    )
    root = PKG_PARENT
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
