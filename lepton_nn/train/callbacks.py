"""Callbacks: objects whose ``on_*`` hooks ``Trainer.fit`` calls with a ``logs`` dict.

Hooks and their ``logs``:

- ``on_train_begin(logs)`` / ``on_train_end(logs)``: ``{}`` / the last epoch's logs.
- ``on_epoch_begin(epoch, logs)``: ``{}``; ``epoch`` counts from 0.
- ``on_epoch_end(epoch, logs)``: ``loss`` (running mean of the batch losses), training metrics,
  ``val_loss`` and ``val_<metric>`` with validation data, and ``lr``.
- ``on_batch_begin(batch, logs)`` / ``on_batch_end(batch, logs)``: ``batch``, ``size``, and at
  the end ``loss`` (running mean so far) and ``batch_loss``. The same dict object is reused
  from batch to batch: copy it to keep it.

A callback stops training by setting ``self.trainer.stop_training = True`` (checked after
every batch and every epoch).

The protocol is duck-typed: ``fit`` accepts any object with some of the hooks above, and
calls ``set_trainer(trainer)`` and sets ``params`` on it first (``set_trainer`` may be left
out). A missing hook does nothing. :class:`Callback` is only a convenient base with every hook
a no-op, so that other floors (``lepton_nn.compress``, ``lepton_nn.inspect``) can write
callbacks without importing the trainer; what a callback may use of the trainer is
:class:`TrainerLike` (``model``, ``optimizer``, ``stop_training``, ``stop_reason``), so this
module does not import the trainer either. A hook is called only if the object defines it and
it is not the base no-op, so the training loop pays nothing per batch for callbacks that only
watch epochs; a ``uses_batch_hooks`` attribute, if present, can switch the batch hooks off.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.module import Module
    from ..optim import LRScheduler, Optimizer

__all__ = [
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "CSVLogger",
    "LambdaCallback",
    "LearningRateScheduler",
    "monitor_mode",
    "TrainerLike",
]


class TrainerLike(Protocol):
    """What callbacks use of the trainer that runs them (``Trainer`` is one): the model, its
    optimizer, and the flag and reason with which a callback ends training."""

    model: Module
    optimizer: Optimizer
    stop_training: bool
    stop_reason: str | None


class Callback:
    """Base class: every hook does nothing. ``self.trainer`` and ``self.params`` are set by
    ``fit`` before ``on_train_begin`` (``params``: epochs, steps, samples, batch_size,
    verbose, metrics)."""

    trainer: TrainerLike | None = None
    params: dict[str, Any] = {}

    def set_trainer(self, trainer: TrainerLike) -> None:
        self.trainer = trainer

    @property
    def model(self) -> Module:
        if self.trainer is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a Trainer")
        return self.trainer.model

    @property
    def uses_batch_hooks(self) -> bool:
        """Whether ``fit`` should call this callback's batch hooks (default: if overridden)."""
        return any(hook_of(self, name) is not None for name in BATCH_HOOKS)

    def on_train_begin(self, logs: dict | None = None) -> None:
        pass

    def on_train_end(self, logs: dict | None = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        pass


HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_batch_begin",
    "on_batch_end",
)
BATCH_HOOKS = ("on_batch_begin", "on_batch_end")


def hook_of(cb: Any, name: str) -> Callable | None:
    """``cb``'s hook ``name`` (bound), or None if it has none or only :class:`Callback`'s no-op."""
    fn = getattr(cb, name, None)
    if fn is None or getattr(fn, "__func__", None) is getattr(Callback, name):
        return None
    return fn


class CallbackList:
    """Calls each hook on every callback in order; the list of callers of each hook is
    precomputed (callbacks without it, or with only the base no-op, are left out)."""

    def __init__(self, callbacks: list[Any], trainer: TrainerLike, params: dict[str, Any]):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if isinstance(cb, type) or not any(hasattr(cb, n) for n in (*HOOKS, "set_trainer")):
                raise TypeError(
                    f"a callback needs on_* hooks (see lepton_nn.train.Callback), got {cb!r}"
                )
            set_trainer = getattr(cb, "set_trainer", None)
            if set_trainer is not None:
                set_trainer(trainer)
            cb.params = params
        hooks = {name: [] for name in HOOKS}
        for cb in self.callbacks:
            batch = getattr(cb, "uses_batch_hooks", True)
            for name in HOOKS:
                fn = hook_of(cb, name)
                if fn is not None and (batch or name not in BATCH_HOOKS):
                    hooks[name].append(fn)
        self._hooks = hooks
        self.batch_begin = hooks["on_batch_begin"]  # what fit calls directly, per batch
        self.batch_end = hooks["on_batch_end"]

    def on_train_begin(self, logs: dict) -> None:
        for fn in self._hooks["on_train_begin"]:
            fn(logs)

    def on_train_end(self, logs: dict) -> None:
        for fn in self._hooks["on_train_end"]:
            fn(logs)

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        for fn in self._hooks["on_epoch_begin"]:
            fn(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        for fn in self._hooks["on_epoch_end"]:
            fn(epoch, logs)


# -- helpers ---------------------------------------------------------------------------------


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """``"min"`` or ``"max"`` for a logged quantity: losses and errors go down, scores up.

    ``auto`` asks :func:`lepton_nn.metrics.get_metric` (its ``greater_is_better``) for metric
    names, with or without the ``val_`` prefix; unknown names are minimized.
    """
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name == "loss" or name.endswith("loss") or name == "lr":
        return "min"
    try:
        from ..metrics import get_metric

        return "max" if getattr(get_metric(name), "greater_is_better", False) else "min"
    except (ImportError, ValueError):
        return "min"


class _Monitor:
    """Tracks the best value of one logged quantity (shared by the callbacks below)."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        self.monitor = monitor
        self.mode = monitor_mode(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self._warned = False
        self.reset()

    def reset(self, baseline: float | None = None) -> None:
        worst = math.inf if self.mode == "min" else -math.inf
        self.best = worst if baseline is None else float(baseline)

    def value(self, logs: dict | None, owner: str) -> float | None:
        v = (logs or {}).get(self.monitor)
        if v is None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"{owner}: '{self.monitor}' is not in the logs (available: "
                    f"{sorted(logs or {})}); give validation data or monitor another key",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return None
        return float(v)

    def improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


# -- the callbacks ---------------------------------------------------------------------------


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the model ends training with the weights of its best epoch
    (also when training ran to the last epoch). ``baseline``: a value the monitor must beat.
    Epochs before ``start_from_epoch`` are not considered. After training, ``best``,
    ``best_epoch`` and ``stopped_epoch`` (-1 if it did not stop training) are set.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        baseline: float | None = None,
        start_from_epoch: int = 0,
        verbose: int = 0,
    ):
        self._m = _Monitor(monitor, mode, min_delta)
        self.monitor, self.mode = monitor, self._m.mode
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self.baseline = baseline
        self.start_from_epoch = int(start_from_epoch)
        self.verbose = verbose
        self.best_weights: dict[str, np.ndarray] | None = None

    @property
    def best(self) -> float:
        return self._m.best

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._m.reset(self.baseline)
        self.wait = 0
        self.best_epoch = -1
        self.stopped_epoch = -1
        self.last_epoch = -1
        self.best_weights = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.last_epoch = epoch
        value = self._m.value(logs, "EarlyStopping")
        if value is None or epoch < self.start_from_epoch:
            return
        if self._m.improved(value):
            self._m.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        restored = False
        if self.best_weights is not None and self.best_epoch != self.last_epoch:
            self.model.load_state_dict(self.best_weights)
            restored = True
        if self.stopped_epoch < 0:
            return
        # why training ended: kept as history.stop_reason, printed when fit or this is verbose
        extra = f"; weights of epoch {self.best_epoch + 1} restored" if restored else ""
        reason = (
            f"early stopping at epoch {self.stopped_epoch + 1}: {self.monitor} did not improve "
            f"for {self.patience} epochs (best {self.best:.6g} at epoch {self.best_epoch + 1}"
            f"{extra})"
        )
        if self.trainer is not None and self.trainer.stop_reason is None:
            self.trainer.stop_reason = reason
        if self.verbose or self.params.get("verbose"):
            print(reason)


class ModelCheckpoint(Callback):
    """Save the model at the end of every epoch (or only when ``monitor`` improves).

    ``filepath`` may hold ``{epoch}`` (1-based) and log keys as format fields, e.g.
    ``"ckpt-{epoch:02d}-{val_loss:.3f}.lnn"``. Saving goes through ``save_fn(model, path)``,
    by default :func:`lepton_nn.io.save` (which writes atomically).
    """

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
        save_fn: Callable[[Any, str], Any] | None = None,
        verbose: int = 0,
    ):
        self.filepath = os.fspath(filepath)
        self._m = _Monitor(monitor, mode, 0.0)
        self.monitor, self.mode = monitor, self._m.mode
        self.save_best_only = bool(save_best_only)
        self.save_fn = save_fn
        self.verbose = verbose
        self.saved: list[str] = []

    @property
    def best(self) -> float:
        return self._m.best

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._m.reset()
        self.saved = []

    def _save(self, path: str) -> None:
        save = self.save_fn
        if save is None:
            from .. import io  # the save layer sits beside the trainer; load it only when used

            save = io.save
        save(self.model, path)
        self.saved.append(path)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs) if "{" in self.filepath else None
        path = path or self.filepath
        if self.save_best_only:
            value = self._m.value(logs, "ModelCheckpoint")
            if value is None or not self._m.improved(value):
                return
            self._m.best = value
        self._save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved model to {path}")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement.

    After a reduction, ``cooldown`` epochs pass before counting again; the rate never goes
    below ``min_lr``. Improvement means beating the best value by more than ``min_delta``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        verbose: int = 0,
    ):
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau factor must be in (0, 1), got {factor}")
        self._m = _Monitor(monitor, mode, min_delta)
        self.monitor, self.mode = monitor, self._m.mode
        self.factor, self.patience = float(factor), int(patience)
        self.cooldown, self.min_lr, self.verbose = int(cooldown), float(min_lr), verbose

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._m.reset()
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = self._m.value(logs, "ReduceLROnPlateau")
        if value is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._m.improved(value):
            self._m.best, self.wait = value, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            opt = self.trainer.optimizer
            old = opt.lr
            if old > self.min_lr:
                opt.lr = max(old * self.factor, self.min_lr)
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau lowered lr to {opt.lr:.3g}")
            self.cooldown_counter = self.cooldown
            self.wait = 0


class CSVLogger(Callback):
    """Append one row per epoch (``epoch`` then the log keys) to a CSV file, flushed each epoch.

    The header is written with the first row; with ``append=True`` and a non-empty file it is
    assumed to be there already. ``epoch`` is 0-based, like ``History.epoch``.
    """

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = bool(append)
        self._file = None
        self._writer = None
        self._keys: list[str] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        has_rows = (
            self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        )
        self._file = open(self.filename, "a" if self.append else "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, delimiter=self.separator)
        self._keys = None
        self._header_done = has_rows

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._writer is None:
            return
        logs = logs or {}
        if self._keys is None:
            self._keys = list(logs)
            if not self._header_done:
                self._writer.writerow(["epoch", *self._keys])
        row = [epoch]
        for k in self._keys:
            v = logs.get(k, "")
            row.append(repr(float(v)) if isinstance(v, (float, np.floating)) else v)
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None


class LambdaCallback(Callback):
    """A callback from plain functions: ``on_epoch_end=lambda epoch, logs: ...``.

    Epoch hooks take ``(epoch, logs)``, batch hooks ``(batch, logs)``, train hooks ``(logs)``.
    """

    def __init__(
        self,
        on_train_begin: Callable | None = None,
        on_train_end: Callable | None = None,
        on_epoch_begin: Callable | None = None,
        on_epoch_end: Callable | None = None,
        on_batch_begin: Callable | None = None,
        on_batch_end: Callable | None = None,
    ):
        self._fns = {
            "on_train_begin": on_train_begin,
            "on_train_end": on_train_end,
            "on_epoch_begin": on_epoch_begin,
            "on_epoch_end": on_epoch_end,
            "on_batch_begin": on_batch_begin,
            "on_batch_end": on_batch_end,
        }

    @property
    def uses_batch_hooks(self) -> bool:
        return bool(self._fns["on_batch_begin"] or self._fns["on_batch_end"])

    def _call(self, hook: str, *args) -> None:
        fn = self._fns[hook]
        if fn is not None:
            fn(*args)

    def on_train_begin(self, logs=None):
        self._call("on_train_begin", logs)

    def on_train_end(self, logs=None):
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", epoch, logs)

    def on_batch_begin(self, batch, logs=None):
        self._call("on_batch_begin", batch, logs)

    def on_batch_end(self, batch, logs=None):
        self._call("on_batch_end", batch, logs)


class LearningRateScheduler(Callback):
    """Drive the learning rate from a schedule, once per epoch (or per batch).

    ``schedule`` is one of:

    - a :class:`lepton_nn.optim.LRScheduler` subclass, built at the start of training on the
      trainer's optimizer with ``**kwargs`` (``LearningRateScheduler(StepLR, step_size=10)``);
    - an ``LRScheduler`` instance (already bound to the trainer's optimizer);
    - a function ``(epoch, lr) -> new lr`` (``(step, lr)`` with ``per="batch"``), applied
      before each epoch (batch), as in Keras.

    Scheduler objects are stepped after each epoch (batch), as in PyTorch.
    """

    def __init__(self, schedule: Any, per: str = "epoch", verbose: int = 0, **kwargs: Any):
        if per not in ("epoch", "batch"):
            raise ValueError(f"per must be 'epoch' or 'batch', got {per!r}")
        from ..optim import LRScheduler

        self._is_class = isinstance(schedule, type) and issubclass(schedule, LRScheduler)
        self._is_object = isinstance(schedule, LRScheduler)
        if not (self._is_class or self._is_object or callable(schedule)):
            raise TypeError("schedule must be an LRScheduler (class or instance) or a function")
        if kwargs and not self._is_class:
            raise TypeError("keyword arguments are only used with an LRScheduler class")
        self.schedule, self.per, self.kwargs, self.verbose = schedule, per, kwargs, verbose
        self.scheduler: LRScheduler | None = schedule if self._is_object else None
        self._step = 0

    @property
    def uses_batch_hooks(self) -> bool:
        return self.per == "batch"

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._is_class:
            self.scheduler = self.schedule(self.trainer.optimizer, **self.kwargs)
        self._step = 0

    def _before(self, index: int) -> None:
        if self.scheduler is None:
            opt = self.trainer.optimizer
            lr = float(self.schedule(index, opt.lr))
            if not math.isfinite(lr) or lr < 0:
                raise ValueError(f"LearningRateScheduler: the schedule returned lr={lr}")
            opt.lr = lr

    def _after(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.per == "epoch":
            self._before(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.per == "epoch":
            self._after()
            if self.verbose:
                print(f"Epoch {epoch + 1}: lr is now {self.trainer.optimizer.lr:.3g}")

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.per == "batch":
            self._before(self._step)

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.per == "batch":
            self._step += 1
            self._after()
