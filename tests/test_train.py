"""Trainer: fit / evaluate / predict, determinism, class weights, non-finite losses, progress."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

import lepton_nn
from lepton_nn.autograd import Tensor
from lepton_nn.errors import DataError, LeptonError
from lepton_nn.losses import binary_cross_entropy_with_logits
from lepton_nn.nn import Dense, Dropout, Sequential
from lepton_nn.optim import SGD, Adam
from lepton_nn.train import History, LambdaCallback, NonFiniteLossWarning, Trainer


def binary_data(n=240, d=4, seed=0, pos_rate=0.5):
    rs = np.random.default_rng(seed)
    X = rs.normal(size=(n, d)).astype(np.float32)
    score = X[:, 0] + 0.5 * X[:, 1]
    y = (score > np.quantile(score, 1 - pos_rate)).astype(np.float32)
    return X, y


def mlp(hidden=8, out=1, dropout=0.0):
    layers = [Dense(hidden, "relu")]
    if dropout:
        layers.append(Dropout(dropout))
    return Sequential([*layers, Dense(out)])


def weights(model):
    return [p.data.copy() for p in model.parameters()]


def test_fit_reduces_loss_and_learns():
    X, y = binary_data()
    lepton_nn.set_seed(0)
    t = Trainer(mlp(), "bce", "adam", ["accuracy"], lr=0.05)
    h = t.fit(X, y, epochs=15, batch_size=32, verbose=0)
    assert isinstance(h, History) and t.history is h
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    assert t.evaluate(X, y)["accuracy"] > 0.9


def test_history_contents():
    X, y = binary_data()
    t = Trainer(mlp(), "bce", "adam", ["accuracy", "roc_auc"], lr=0.01)
    h = t.fit(X, y, epochs=4, batch_size=50, validation_split=0.25, verbose=0, seed=1)
    assert h.epoch == [0, 1, 2, 3]
    assert list(h.history) == [
        "loss",
        "accuracy",
        "roc_auc",
        "val_loss",
        "val_accuracy",
        "val_roc_auc",
        "lr",
    ]
    assert all(len(v) == 4 for v in h.history.values())
    assert h.history["lr"] == [0.01] * 4
    assert h.params["samples"] == 180 and h.params["steps"] == 4 and h.params["epochs"] == 4
    assert all(0 <= a <= 1 for a in h.history["accuracy"])
    assert h.stop_reason is None


def test_validation_split_takes_the_last_rows_and_matches_evaluate():
    X, y = binary_data(n=200)
    t = Trainer(mlp(), "bce", "adam", ["accuracy"], lr=0.01)
    h = t.fit(X, y, epochs=3, validation_split=0.2, verbose=0, seed=2)
    assert h.params["samples"] == 160
    final = t.evaluate(X[160:], y[160:])
    assert final["loss"] == pytest.approx(h.history["val_loss"][-1], rel=1e-6)
    assert final["accuracy"] == h.history["val_accuracy"][-1]


def test_validation_data_matches_evaluate():
    X, y = binary_data(n=200)
    Xv, yv = binary_data(n=60, seed=5)
    t = Trainer(mlp(), "bce", "adam", ["roc_auc"], lr=0.01)
    h = t.fit(X, y, epochs=2, validation_data=(Xv, yv), verbose=0, seed=2)
    assert t.evaluate(Xv, yv)["roc_auc"] == h.history["val_roc_auc"][-1]


def test_training_loss_is_the_running_mean_of_batch_losses():
    X, y = binary_data(n=100)
    seen = []
    cb = LambdaCallback(
        on_batch_end=lambda b, logs: seen.append((logs["batch_loss"], logs["size"]))
    )
    t = Trainer(mlp(), "bce", "adam", lr=0.01)
    h = t.fit(X, y, epochs=1, batch_size=32, callbacks=[cb], verbose=0, seed=0)
    assert [s for _, s in seen] == [32, 32, 32, 4]
    mean = sum(v * s for v, s in seen) / 100
    assert h.history["loss"][0] == pytest.approx(mean, rel=1e-12)


def test_predict_shapes_and_modes():
    X, y = binary_data(n=50)
    model = mlp(dropout=0.5)
    t = Trainer(model, "bce", "adam")
    t.fit(X, y, epochs=1, verbose=0, seed=0)
    out = t.predict(X)
    assert out.shape == (50, 1) and out.dtype == np.float32
    p = t.predict_proba(X)
    assert p.shape == (50,) and np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-out[:, 0].astype(np.float64))), rtol=1e-5)
    np.testing.assert_array_equal(t.predict(X), out)  # eval mode: dropout off, repeatable
    np.testing.assert_array_equal(t.predict_classes(X), (p >= 0.5).astype(np.int64))
    assert model.training  # predict restores the mode
    np.testing.assert_allclose(t.predict(X, batch_size=7), out, rtol=1e-5, atol=1e-6)


def test_multiclass_and_regression():
    rs = np.random.default_rng(0)
    X = rs.normal(size=(150, 3)).astype(np.float32)
    y = np.argmax(X, axis=1)
    t = Trainer(mlp(16, 3), "cross_entropy", "adam", ["accuracy", "f1"], lr=0.05)
    assert t.task == "multiclass"
    h = t.fit(X, y, epochs=20, verbose=0, seed=0)
    p = t.predict_proba(X)
    assert p.shape == (150, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert h.history["accuracy"][-1] > 0.8 and "f1" in h.history

    yr = (X @ np.array([1.0, -2.0, 0.5])).astype(np.float32)
    r = Trainer(mlp(16), "mse", "adam", ["r2", "mae"], lr=0.02)
    assert r.task == "regression"
    hr = r.fit(X, yr, epochs=30, verbose=0, seed=0)
    assert hr.history["r2"][-1] > 0.8
    with pytest.raises(LeptonError, match="classification"):
        r.predict_proba(X)


def test_optimizer_instance_and_names():
    X, y = binary_data(n=64)
    model = mlp()
    model.build((None, 4))
    opt = SGD(model.parameters(), lr=0.1)
    t = Trainer(model, "bce", opt)
    t.fit(X, y, epochs=1, verbose=0)
    assert t.optimizer is opt and opt.steps == 2
    t2 = Trainer(mlp(), "bce", "AdamW", lr=0.003, weight_decay=0.1)
    t2.fit(X, y, epochs=1, verbose=0)
    assert isinstance(t2.optimizer, Adam) and t2.optimizer.weight_decay == 0.1
    assert t2.optimizer.lr == 0.003
    with pytest.raises(ValueError, match="unknown optimizer"):
        Trainer(mlp(), "bce", "adamax")
    with pytest.raises(ValueError, match="unknown metric"):
        Trainer(mlp(), "bce", metrics=["nope"])


def test_bad_targets_are_refused_clearly():
    X, y = binary_data(n=20)
    t = Trainer(mlp(), "bce")
    with pytest.raises(DataError, match="0/1"):
        t.fit(X, y + 1, epochs=1, verbose=0)
    with pytest.raises(DataError, match="LabelEncoder"):
        t.fit(X, np.array(["a", "b"] * 10), epochs=1, verbose=0)
    with pytest.raises(LeptonError, match="rows"):
        t.fit(X, y[:10], epochs=1, verbose=0)


@pytest.mark.parametrize("how", ["fit_seed", "set_seed"])
def test_same_seed_same_weights_bit_for_bit(how):
    X, y = binary_data()

    def run(seed):
        if how == "set_seed":
            lepton_nn.set_seed(seed)
        model = mlp(16, dropout=0.3)  # lazy: built inside fit; dropout draws masks
        t = Trainer(model, "bce", "adam", ["accuracy", "roc_auc"], lr=0.01)
        kw = {"seed": seed} if how == "fit_seed" else {}
        h = t.fit(X, y, epochs=3, batch_size=16, validation_split=0.2, verbose=0, **kw)
        return weights(model), h.history

    w1, h1 = run(11)
    w2, h2 = run(11)
    w3, _ = run(12)
    for a, b in zip(w1, w2):
        assert a.tobytes() == b.tobytes()
    assert h1 == h2
    assert any(a.tobytes() != c.tobytes() for a, c in zip(w1, w3))


def test_class_weight_balanced_weights_the_loss():
    X, y = binary_data(n=100, pos_rate=0.2)
    w = np.where(y == 1, 100 / (2 * 20), 100 / (2 * 80))

    def first_loss(**kw):
        lepton_nn.set_seed(3)
        model = mlp()
        model.build((None, 4))
        t = Trainer(model, "bce", "sgd", lr=0.0)  # lr 0: weights stay, loss is comparable
        h = t.fit(X, y, epochs=1, batch_size=100, shuffle=False, verbose=0, **kw)
        return h.history["loss"][0], t

    plain, t = first_loss()
    balanced, _ = first_loss(class_weight="balanced")
    out = Tensor(t.predict(X))
    expect = float(binary_cross_entropy_with_logits(out, y, sample_weight=w).data)
    assert balanced == pytest.approx(expect, rel=1e-5)
    assert plain == pytest.approx(float(binary_cross_entropy_with_logits(out, y).data), rel=1e-5)
    assert balanced != pytest.approx(plain, rel=1e-3)
    by_dict, _ = first_loss(class_weight={0: 1.0, 1: 3.0})
    w_dict = np.where(y == 1, 3.0, 1.0)
    expect = float(binary_cross_entropy_with_logits(out, y, sample_weight=w_dict).data)
    assert by_dict == pytest.approx(expect, rel=1e-5)
    both, _ = first_loss(class_weight={0: 1.0, 1: 3.0}, sample_weight=np.full(100, 0.5))
    assert both == pytest.approx(0.5 * expect, rel=1e-5)


def test_nan_loss_stops_naming_epoch_and_batch_and_keeps_last_good_weights():
    X, y = binary_data(n=128)
    X[100] = np.nan  # batch 4 of 4 (batch size 32, no shuffling)
    lepton_nn.set_seed(0)
    t = Trainer(mlp(), "bce", "adam", lr=0.01)
    good = []
    cb = LambdaCallback(on_batch_end=lambda b, logs: good.append(weights(t.model)))
    with (
        pytest.warns(NonFiniteLossWarning, match=r"epoch 1/5, batch 4/4"),
        np.errstate(all="ignore"),
    ):
        h = t.fit(X, y, epochs=5, batch_size=32, shuffle=False, callbacks=[cb], verbose=0)
    assert "epoch 1/5, batch 4/4" in h.stop_reason and "non-finite loss" in h.stop_reason
    assert t.stop_reason == h.stop_reason and h.epoch == []  # the epoch did not finish
    assert len(good) == 3
    for a, p in zip(good[-1], t.model.parameters()):
        np.testing.assert_array_equal(a, p.data)


def test_update_that_breaks_the_weights_is_undone():
    X, y = binary_data(n=96)
    calls = {"n": 0}

    def fragile_loss(pred, target, sample_weight=None):
        calls["n"] += 1
        loss = binary_cross_entropy_with_logits(pred, target)
        if calls["n"] == 5:  # finite value, NaN gradient: d sqrt(x)/dx at 0 times 0
            return loss + (pred * 0.0).sqrt().sum()
        return loss

    lepton_nn.set_seed(0)
    t = Trainer(mlp(), fragile_loss, "sgd", lr=0.1, task="binary")
    before = []
    cb = LambdaCallback(on_batch_begin=lambda b, logs: before.append(weights(t.model)))
    with (
        pytest.warns(NonFiniteLossWarning, match=r"epoch 2/3, batch 3/3"),
        np.errstate(all="ignore"),
    ):
        h = t.fit(X, y, epochs=3, batch_size=32, shuffle=False, callbacks=[cb], verbose=0)
    assert "previous update was undone" in h.stop_reason
    assert h.epoch == [0]
    for a, p in zip(before[4], t.model.parameters()):  # state before the 5th (bad) update
        np.testing.assert_array_equal(a, p.data)
        assert np.isfinite(p.data).all()


def test_progress_plain_lines_when_not_a_terminal(capsys):
    X, y = binary_data(n=64)
    t = Trainer(mlp(), "bce", "adam", ["accuracy"])
    t.fit(X, y, epochs=3, batch_size=16, validation_split=0.25, verbose=1, seed=0)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "\r" not in out and len(lines) == 3
    for i, line in enumerate(lines, start=1):
        assert line.startswith(f"Epoch {i}/3 - 3/3 - ")
        for key in ("loss: ", "accuracy: ", "val_loss: ", "val_accuracy: "):
            assert key in line
        assert "s - " in line  # time per epoch


def test_verbose_0_is_silent(capsys):
    X, y = binary_data(n=64)
    Trainer(mlp(), "bce").fit(X, y, epochs=2, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_progress_live_line_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    X, y = binary_data(n=64)
    t = Trainer(mlp(), "bce")
    t.fit(X, y, epochs=2, batch_size=8, verbose=1, seed=0)
    monkeypatch.undo()
    out = term.getvalue()
    assert out.count("\n") == 2 and out.endswith("\n")
    assert out.count("\r") >= 4  # a start line and a final line per epoch at least
    last = out.split("\n")[-2].split("\r")[-1]
    assert last.startswith("Epoch 2/2 - 8/8") and "loss: " in last
    # verbose=2: plain lines even on a terminal
    term2 = Terminal()
    monkeypatch.setattr(sys, "stdout", term2)
    t.fit(X, y, epochs=2, batch_size=8, verbose=2)
    monkeypatch.undo()
    assert "\r" not in term2.getvalue() and term2.getvalue().count("\n") == 2


def test_last_update_of_an_epoch_breaking_the_weights_is_undone():
    X, y = binary_data(n=96)
    calls = {"n": 0}

    def fragile_loss(pred, target, sample_weight=None):
        calls["n"] += 1
        loss = binary_cross_entropy_with_logits(pred, target)
        return loss + (pred * 0.0).sqrt().sum() if calls["n"] == 3 else loss

    lepton_nn.set_seed(0)
    t = Trainer(mlp(), fragile_loss, "sgd", lr=0.1, task="binary")
    before = []
    cb = LambdaCallback(on_batch_begin=lambda b, logs: before.append(weights(t.model)))
    with pytest.warns(NonFiniteLossWarning, match=r"update of epoch 1/3, batch 3/3"):
        with np.errstate(all="ignore"):
            h = t.fit(X, y, epochs=3, batch_size=32, shuffle=False, callbacks=[cb], verbose=0)
    assert "undone" in h.stop_reason and h.epoch == []
    for a, p in zip(before[2], t.model.parameters()):
        np.testing.assert_array_equal(a, p.data)
