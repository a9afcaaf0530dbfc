"""Callbacks: early stopping, checkpoints, LR on plateau and schedules, CSV log, lambdas."""

from __future__ import annotations

import csv
import sys
import types

import numpy as np
import pytest

import lepton_nn
from lepton_nn.nn import Dense, Sequential
from lepton_nn.optim import StepLR
from lepton_nn.train import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    Trainer,
    monitor_mode,
)


def data(n=160, seed=0):
    rs = np.random.default_rng(seed)
    X = rs.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] - X[:, 2] > 0).astype(np.float32)
    return X, y


def trainer(lr=0.05, metrics=None):
    lepton_nn.set_seed(0)
    return Trainer(Sequential([Dense(8, "relu"), Dense(1)]), "bce", "adam", metrics, lr=lr)


def snapshots(t, store):
    """A callback that keeps a copy of the weights at every epoch end."""
    return LambdaCallback(on_epoch_end=lambda e, logs: store.append(t.model.state_dict()))


def worsening_validation(X, y):
    # the flipped labels: the better the model fits, the worse this validation loss gets
    return (X, 1 - y)


def test_monitor_mode_auto():
    assert monitor_mode("val_loss") == "min"
    assert monitor_mode("loss") == "min"
    assert monitor_mode("val_accuracy") == "max"
    assert monitor_mode("roc_auc") == "max"
    assert monitor_mode("val_mse") == "min"
    assert monitor_mode("something_else") == "min"
    assert monitor_mode("val_loss", "max") == "max"
    with pytest.raises(ValueError):
        monitor_mode("loss", "up")


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_restores_the_best_epoch(restore):
    X, y = data()
    t = trainer()
    kept = []
    es = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=restore)
    h = t.fit(
        X,
        y,
        epochs=20,
        validation_data=worsening_validation(X, y),
        callbacks=[snapshots(t, kept), es],
        verbose=0,
    )
    assert es.best_epoch == int(np.argmin(h.history["val_loss"])) == 0
    assert es.stopped_epoch == 2 and h.epoch == [0, 1, 2]
    want = kept[es.best_epoch] if restore else kept[-1]
    got = t.model.state_dict()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    if restore:
        assert any(not np.array_equal(got[k], kept[-1][k]) for k in got)


def test_early_stopping_patience_and_min_delta_on_a_metric():
    X, y = data()
    t = trainer(lr=0.0, metrics=["accuracy"])  # nothing changes: no epoch improves on the first
    es = EarlyStopping(monitor="val_accuracy", patience=3, min_delta=0.01)
    h = t.fit(X, y, epochs=10, validation_split=0.25, callbacks=[es], verbose=0)
    assert es.mode == "max" and len(h.epoch) == 4 and es.stopped_epoch == 3


def test_early_stopping_runs_to_the_end_and_warns_without_the_monitor():
    X, y = data()
    t = trainer()
    es = EarlyStopping(monitor="val_loss", patience=1)
    with pytest.warns(RuntimeWarning, match="val_loss"):
        h = t.fit(X, y, epochs=3, callbacks=[es], verbose=0)
    assert len(h.epoch) == 3 and es.stopped_epoch == -1


def fake_io(monkeypatch):
    saved = []

    def save(obj, path):
        saved.append((path, {k: v.copy() for k, v in obj.state_dict().items()}))

    try:
        import lepton_nn.io as lio
    except ImportError:
        lio = types.ModuleType("lepton_nn.io")
        lio.save = save
        monkeypatch.setitem(sys.modules, "lepton_nn.io", lio)
        monkeypatch.setattr(lepton_nn, "io", lio, raising=False)
    else:
        monkeypatch.setattr(lio, "save", save)
    return saved


def test_model_checkpoint_every_epoch_through_lepton_nn_io(monkeypatch, tmp_path):
    saved = fake_io(monkeypatch)
    X, y = data()
    t = trainer()
    kept = []
    ck = ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{loss:.2f}.lnn"))
    h = t.fit(X, y, epochs=3, callbacks=[ck, snapshots(t, kept)], verbose=0)
    assert [p for p, _ in saved] == ck.saved
    assert [p.rsplit("/", 1)[1] for p, _ in saved] == [
        f"m-{e + 1:02d}-{h.history['loss'][e]:.2f}.lnn" for e in range(3)
    ]
    for (_, state), want in zip(saved, kept):
        for k in want:
            np.testing.assert_array_equal(state[k], want[k])


def test_model_checkpoint_save_best_only(tmp_path):
    X, y = data()
    t = trainer()
    calls = []
    ck = ModelCheckpoint(
        tmp_path / "best.lnn",
        monitor="val_loss",
        save_best_only=True,
        save_fn=lambda model, path: calls.append(path),
    )
    h = t.fit(X, y, epochs=4, validation_data=worsening_validation(X, y), callbacks=[ck], verbose=0)
    assert calls == [str(tmp_path / "best.lnn")]  # only the first epoch was the best
    assert ck.best == h.history["val_loss"][0]


def test_reduce_lr_on_plateau_lowers_lr():
    X, y = data()
    t = trainer(lr=0.04)
    cb = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_lr=0.01)
    h = t.fit(X, y, epochs=5, validation_data=worsening_validation(X, y), callbacks=[cb], verbose=0)
    # lr logged is the one used during each epoch; reductions after epochs 1, 2 (then min_lr)
    assert h.history["lr"] == [0.04, 0.04, 0.02, 0.01, 0.01]
    assert t.optimizer.lr == 0.01


def test_reduce_lr_cooldown():
    X, y = data()
    t = trainer(lr=0.08)
    cb = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, cooldown=2)
    h = t.fit(X, y, epochs=6, validation_data=worsening_validation(X, y), callbacks=[cb], verbose=0)
    # Keras' counting: the epoch that reduces starts the cooldown, so after a reduction at
    # epoch 1 the counter runs down over epochs 2 and 3, and epoch 3 may reduce again
    assert h.history["lr"] == [0.08, 0.08, 0.04, 0.04, 0.02, 0.02]


def test_csv_logger_writes_and_flushes_each_epoch(tmp_path):
    X, y = data()
    t = trainer(metrics=["accuracy"])
    path = tmp_path / "log.csv"
    rows_during = []

    def peek(epoch, logs):
        with open(path) as f:
            rows_during.append(len(f.read().splitlines()))

    h = t.fit(
        X,
        y,
        epochs=3,
        validation_split=0.25,
        callbacks=[CSVLogger(path), LambdaCallback(on_epoch_end=peek)],
        verbose=0,
    )
    assert rows_during == [2, 3, 4]  # header + one row per finished epoch, on disk already
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    for e, row in enumerate(rows[1:]):
        assert int(row[0]) == e
        for key, cell in zip(rows[0][1:], row[1:]):
            assert float(cell) == h.history[key][e]
    # append mode adds rows without a second header
    t.fit(
        X, y, epochs=1, validation_split=0.25, callbacks=[CSVLogger(path, append=True)], verbose=0
    )
    with open(path) as f:
        rows = list(csv.reader(f))
    assert len(rows) == 5 and rows[4][0] == "0"


def test_lambda_callback_hook_counts_and_logs():
    X, y = data(n=100)
    counts = {k: 0 for k in ("tb", "te", "eb", "ee", "bb", "be")}

    def bump(key):
        def fn(*args):
            counts[key] += 1

        return fn

    cb = LambdaCallback(
        on_train_begin=bump("tb"),
        on_train_end=bump("te"),
        on_epoch_begin=bump("eb"),
        on_epoch_end=bump("ee"),
        on_batch_begin=bump("bb"),
        on_batch_end=bump("be"),
    )
    trainer().fit(X, y, epochs=3, batch_size=25, callbacks=[cb], verbose=0)
    assert counts == {"tb": 1, "te": 1, "eb": 3, "ee": 3, "bb": 12, "be": 12}


def test_a_callback_can_stop_training_mid_epoch():
    class StopAt(Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 2:
                self.trainer.stop_training = True

    X, y = data(n=100)
    seen = []
    h = trainer().fit(
        X,
        y,
        epochs=5,
        batch_size=10,
        callbacks=[StopAt(), LambdaCallback(on_batch_end=lambda b, logs: seen.append(b))],
        verbose=0,
    )
    # as in Keras, the cut epoch still ends (logs of the batches run, validation, hooks)
    assert seen == [0, 1, 2] and h.epoch == [0]


def test_any_object_with_hooks_is_a_callback():
    class Watcher:  # no Callback base, no set_trainer, only one hook
        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, epoch, logs):
            self.epochs.append((epoch, self.params["epochs"]))

    class Stopper:
        def set_trainer(self, trainer):
            self.trainer = trainer

        def on_batch_end(self, batch, logs):
            if batch == 1:
                self.trainer.stop_training = True

    X, y = data(n=100)
    w = Watcher()
    h = trainer().fit(X, y, epochs=2, batch_size=25, callbacks=[w], verbose=0)
    assert w.epochs == [(0, 2), (1, 2)] and h.epoch == [0, 1]
    h = trainer().fit(X, y, epochs=3, batch_size=25, callbacks=[Stopper()], verbose=0)
    assert h.epoch == [0]
    fns = types.SimpleNamespace(on_train_end=lambda logs: fns.done.append(dict(logs)), done=[])
    trainer().fit(X, y, epochs=1, callbacks=[fns], verbose=0)
    assert len(fns.done) == 1 and "loss" in fns.done[0]
    for bad in (3, "early", EarlyStopping):  # no hooks, or a class instead of an instance
        with pytest.raises(TypeError, match="on_\\* hooks"):
            trainer().fit(X, y, epochs=1, callbacks=[bad], verbose=0)


def test_only_defined_non_base_hooks_are_called():
    from lepton_nn.train.callbacks import CallbackList

    class EpochsOnly(Callback):
        def on_epoch_end(self, epoch, logs=None):
            pass

    class Batches:
        def on_batch_begin(self, batch, logs):
            pass

    class Off(Batches):
        uses_batch_hooks = False

    e, b, off = EpochsOnly(), Batches(), Off()
    assert not e.uses_batch_hooks
    cbl = CallbackList([e, b, off, Callback()], trainer(), {})
    assert cbl.batch_begin == [b.on_batch_begin] and cbl.batch_end == []
    assert cbl._hooks["on_epoch_end"] == [e.on_epoch_end]
    assert cbl._hooks["on_train_begin"] == []
    assert b.params == {} and e.trainer is not None


def test_learning_rate_scheduler_forms():
    X, y = data(n=64)
    t = trainer(lr=0.1)
    h = t.fit(
        X, y, epochs=5, callbacks=[LearningRateScheduler(StepLR, step_size=2, gamma=0.5)], verbose=0
    )
    assert h.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])

    t = trainer(lr=0.1)
    h = t.fit(
        X, y, epochs=3, callbacks=[LearningRateScheduler(lambda e, lr: 0.1 / (e + 1))], verbose=0
    )
    assert h.history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])

    t = trainer(lr=0.1)
    sched = LearningRateScheduler(lambda step, lr: 0.01 * (step + 1), per="batch")
    h = t.fit(X, y, epochs=2, batch_size=32, callbacks=[sched], verbose=0)
    assert h.history["lr"] == pytest.approx([0.02, 0.04])  # lr of each epoch's last batch
    with pytest.raises(TypeError):
        LearningRateScheduler(3.0)
