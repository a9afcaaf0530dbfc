"""Divergence in ``Trainer.fit``: stop, restore the last good weights, say so (issue 15, item 9)."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn
from lepton_nn.nn import BatchNorm, Dense, Sequential
from lepton_nn.train import DivergenceWarning, LambdaCallback, NonFiniteLossWarning, Trainer
from lepton_nn.train.guard import DivergenceGuard


def data(n=256, d=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.float32)[:, None]


def net():
    return Sequential([Dense(16, "relu"), Dense(1)])


def fit_recording(trainer, X, y, **kw):
    """fit, recording the weights at the start of every batch."""
    before = []
    cb = LambdaCallback(
        on_batch_begin=lambda b, logs: before.append(
            [p.data.copy() for p in trainer.model.parameters()]
        )
    )
    with np.errstate(all="ignore"):
        h = trainer.fit(
            X, y, epochs=20, batch_size=32, shuffle=False, callbacks=[cb], verbose=0, **kw
        )
    return h, before


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_huge_learning_rate_stops_with_the_last_good_weights(optimizer):
    X, y = data()
    lepton_nn.set_seed(0)
    t = Trainer(net(), "bce", optimizer, lr=1e6)
    first_loss = t.evaluate(X[:32], y[:32])["loss"]  # untrained model (built lazily)
    with pytest.warns(DivergenceWarning, match="divergence bound"):
        h, before = fit_recording(t, X, y)
    assert h.stop_reason is not None and "previous update was undone" in h.stop_reason
    assert t.stop_reason == h.stop_reason and h.epoch == []
    # batch k's loss passed the bound: the weights before batch k - 1's update come back
    k = len(before) - 1
    assert k >= 1
    for a, p in zip(before[k - 1], t.model.parameters()):
        np.testing.assert_array_equal(a, p.data)
    out = t.predict(X)
    assert np.isfinite(out).all()
    assert t.evaluate(X, y)["loss"] < 1e4 * max(1.0, first_loss)


def test_finiteness_only_still_restores_finite_weights():
    X, y = data()
    lepton_nn.set_seed(0)
    t = Trainer(net(), "bce", "sgd", lr=1e6)
    with pytest.warns(NonFiniteLossWarning, match="non-finite loss or outputs"):
        h, before = fit_recording(t, X, y, divergence=None)
    k = len(before) - 1
    for a, p in zip(before[k - 1], t.model.parameters()):
        np.testing.assert_array_equal(a, p.data)
    assert all(np.isfinite(p.data).all() for p in t.model.parameters())
    # those weights gave a finite loss on batch k - 1, where the old code kept the weights that
    # made batch k's loss non-finite
    with np.errstate(all="ignore"):
        xb, yb = X[(k - 1) * 32 : k * 32], y[(k - 1) * 32 : k * 32]
        assert np.isfinite(t.evaluate(xb, yb)["loss"])


def test_ordinary_training_is_not_stopped():
    X, y = data()
    lepton_nn.set_seed(0)
    t = Trainer(net(), "bce", "adam", lr=0.01)
    h = t.fit(X, y, epochs=30, batch_size=16, verbose=0)
    assert h.stop_reason is None and len(h.epoch) == 30


def test_batchnorm_running_stats_come_back_after_a_bad_batch():
    X, y = data(n=128)
    X[70] = np.nan  # batch 3 of 4
    lepton_nn.set_seed(0)
    model = Sequential([Dense(8), BatchNorm(), Dense(1)])
    t = Trainer(model, "bce", "adam", lr=0.01)
    stats = []
    cb = LambdaCallback(
        on_batch_end=lambda b, logs: stats.append(model.layers[1].running_mean.copy())
    )
    with pytest.warns(NonFiniteLossWarning, match="batch 3/4.*non-finite inputs"):
        with np.errstate(all="ignore"):
            t.fit(X, y, epochs=2, batch_size=32, shuffle=False, callbacks=[cb], verbose=0)
    np.testing.assert_array_equal(model.layers[1].running_mean, stats[-1])
    assert np.isfinite(model.layers[1].running_var).all()


def test_guard_flags_non_finite_outputs_with_a_finite_loss():
    lepton_nn.set_seed(0)
    g = DivergenceGuard(net().build((None, 3)), 1e4)
    assert g.check(0.7, np.ones(4)) is None
    assert g.check(0.7, np.array([1.0, np.inf])) == "nonfinite"
    assert g.check(float("nan"), np.ones(4)) == "nonfinite"
    assert g.check(7e3, np.ones(4)) is None and g.check(2e4, np.ones(4)) == "bound"


def test_bad_divergence_setting_is_refused():
    X, y = data(n=32)
    with pytest.raises(ValueError, match="divergence"):
        Trainer(net(), "bce").fit(X, y, epochs=1, verbose=0, divergence=0.5)


@pytest.mark.parametrize("with_validation", [False, True])
def test_a_diverging_last_update_is_caught_too(with_validation):
    """No batch follows the last update: it is checked on the validation data, or by scoring
    the last batch again."""
    X, y = data(n=64)
    lepton_nn.set_seed(0)
    t = Trainer(net(), "bce", "sgd", lr=1e6)
    t.model.build((None, X.shape[1]))
    start = [p.data.copy() for p in t.model.parameters()]
    kw = {"validation_data": (X[:16], y[:16])} if with_validation else {}
    with pytest.warns(DivergenceWarning, match="after the update|after the last update"):
        with np.errstate(all="ignore"):
            h = t.fit(X, y, epochs=1, batch_size=64, verbose=0, **kw)  # one batch, one update
    assert "previous update was undone" in h.stop_reason
    for a, p in zip(start, t.model.parameters()):
        np.testing.assert_array_equal(a, p.data)
