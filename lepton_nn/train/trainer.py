"""``Trainer``: fit, evaluate and predict with a model, a loss and an optimizer.

The loop is shaped like Keras ``fit``: epochs -> batches -> ``on_*`` callback hooks with a
``logs`` dict; a callback ends training by setting ``trainer.stop_training = True``.

Per batch, ``fit`` does only what a hand-written NumPy loop does (gather the batch into
buffers made once, forward, loss, backward, optimizer step) plus one scalar check of the
loss and a copy of the weights into buffers made once (to undo a step that turned them
non-finite). Metrics are never computed per batch: training metrics come from the outputs
the model produced during the epoch (as Keras reports them), validation metrics from one
pass over the validation data at the end of each epoch.

Tasks (``task="auto"`` picks one from the loss):

- ``binary``: ``bce`` (logits in, sigmoid applied by the loss); targets 0/1.
  ``predict_proba`` gives P(positive), shape ``(N,)`` for a one-unit output.
- ``multiclass``: ``cross_entropy`` (logits); integer labels 0..C-1 (or one-hot rows).
  ``predict_proba`` gives the softmax, shape ``(N, C)``.
- ``regression``: ``mse``, ``mae``, ``huber`` and unknown callables; no probabilities.

This file holds the training (``fit`` and its epoch loop); what does not train (inputs,
outputs, metrics, ``evaluate``, ``predict``) is Trainer's base class in :mod:`.scoring`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import losses as _losses
from .. import optim as _optim
from ..autograd import Tensor, no_grad
from ..data.batching import iterate_batches
from ..data.stream import is_chunked
from ..errors import DataError, LeptonError, ShapeError
from ..nn.module import Module
from ..random import set_seed, spawn
from .callbacks import CallbackList
from .guard import DivergenceGuard, DivergenceWarning, NonFiniteLossWarning
from .history import History
from .inputs import Inputs, n_rows, rows
from .progress import ProgressBar
from .scoring import EVAL_BATCH, _Metric, _Scoring  # noqa: F401 (EVAL_BATCH: re-exported)

__all__ = ["Trainer", "DivergenceWarning", "NonFiniteLossWarning", "TASKS", "OPTIMIZERS"]

TASKS = ("binary", "multiclass", "regression")
OPTIMIZERS: dict[str, type[_optim.Optimizer]] = {
    "sgd": _optim.SGD,
    "rmsprop": _optim.RMSprop,
    "adam": _optim.Adam,
    "adamw": _optim.AdamW,
}


def _task_of(loss_fn: Callable) -> str:
    if loss_fn is _losses.binary_cross_entropy_with_logits:
        return "binary"
    if loss_fn is _losses.cross_entropy:
        return "multiclass"
    return "regression"


class Trainer(_Scoring):
    """Trains ``model`` by minimizing ``loss`` with ``optimizer``; reports ``metrics``.

    Args:
        model: a :class:`~lepton_nn.nn.Module` (lazy layers are built at the first ``fit``).
        loss: a name for :func:`lepton_nn.losses.get_loss` (``"bce"``, ``"cross_entropy"``,
            ``"mse"``...) or ``fn(pred, target, sample_weight=None) -> scalar Tensor``.
        optimizer: an :class:`~lepton_nn.optim.Optimizer`, or a name (``"adam"``, ``"adamw"``,
            ``"sgd"``, ``"rmsprop"``) built over the model's parameters at the first ``fit``
            with ``lr`` (the optimizer's default when ``None``), ``weight_decay`` and
            ``optimizer_kwargs``.
        metrics: names for :func:`lepton_nn.metrics.get_metric` or ``fn(y_true, y)``
            callables (``y`` are scores if ``fn.needs_score`` is true, else predicted labels
            for classification, raw outputs for regression).
        task: ``"auto"`` (from the loss), ``"binary"``, ``"multiclass"`` or ``"regression"``.
        threshold: P(positive) at or above which a binary prediction is the positive class.
    """

    def __init__(
        self,
        model: Module,
        loss: str | Callable = "bce",
        optimizer: str | _optim.Optimizer = "adam",
        metrics: Sequence[str | Callable] | None = None,
        *,
        lr: float | None = None,
        weight_decay: float = 0.0,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        task: str = "auto",
        threshold: float = 0.5,
    ):
        if not isinstance(model, Module):
            raise TypeError(f"model must be a lepton_nn Module, got {type(model).__name__}")
        self.model = model
        self.loss_fn = _losses.get_loss(loss)
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "loss")
        if task == "auto":
            task = _task_of(self.loss_fn)
        if task not in TASKS:
            raise ValueError(f"task must be 'auto' or one of {TASKS}, got {task!r}")
        self.task = task
        self.threshold = float(threshold)
        self.metrics = [_Metric(m, task) for m in (metrics or [])]
        self.optimizer: _optim.Optimizer | None = None
        self._opt_spec: tuple[type[_optim.Optimizer], dict[str, Any]] | None = None
        if isinstance(optimizer, _optim.Optimizer):
            if weight_decay or optimizer_kwargs:
                raise ValueError(
                    "weight_decay and optimizer_kwargs apply to an optimizer given by name; "
                    "set them on the optimizer instance instead"
                )
            if lr is not None:
                optimizer.lr = float(lr)
            self.optimizer = optimizer
        elif isinstance(optimizer, str):
            try:
                cls = OPTIMIZERS[optimizer.lower()]
            except KeyError:
                raise ValueError(
                    f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}"
                ) from None
            kwargs = dict(optimizer_kwargs or {})
            if lr is not None:
                kwargs["lr"] = float(lr)
            if weight_decay:
                kwargs["weight_decay"] = float(weight_decay)
            self._opt_spec = (cls, kwargs)
        else:
            raise TypeError(f"optimizer must be an Optimizer or a name, got {optimizer!r}")
        self.history: History | None = None
        self.stop_training = False
        self.stop_reason: str | None = None
        self.privacy_report: dict | None = None  # fit(privacy=...): the spent budget

    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def _prepare(self, X: Inputs) -> None:
        """Build lazy layers and the optimizer (once; a graph model is built when made)."""
        if not self.model.built and not isinstance(X, dict):
            self.model.build((None, *X.shape[1:]))
        if self.optimizer is None:
            cls, kwargs = self._opt_spec
            self.optimizer = cls(self.model.parameters(), **kwargs)

    def _batch_stats(self) -> bool:
        """True if a layer normalizes with batch statistics in training (BatchNorm)."""
        from ..nn.norm import BatchNorm

        return any(isinstance(m, BatchNorm) for m in self.model.modules())

    def _sample_weights(
        self, y: np.ndarray, sample_weight: Any, class_weight: Any
    ) -> np.ndarray | None:
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=self._dtype).reshape(-1)
            if len(w) != len(y):
                raise ShapeError(f"sample_weight has {len(w)} values for {len(y)} rows")
        if class_weight is not None:
            if self.task == "regression":
                raise ValueError("class_weight needs a classification task (bce, cross_entropy)")
            from ..data.labels import compute_sample_weight

            labels = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)
            cw = compute_sample_weight(labels, class_weight).astype(self._dtype)
            w = cw if w is None else w * cw
        return w

    # -- fit ---------------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any = None,
        epochs: int = 10,
        batch_size: int = 32,
        validation_data: tuple | None = None,
        validation_split: float = 0.0,
        callbacks: Sequence[Any] = (),
        class_weight: str | Mapping[Any, float] | None = None,
        sample_weight: Any = None,
        shuffle: bool = True,
        verbose: int = 1,
        seed: int | None = None,
        divergence: float | None = 1e4,
        privacy: Any = None,
        shuffle_buffer: int | None = None,
    ) -> History:
        """Train for ``epochs`` passes over ``(X, y)`` in mini-batches; returns the History.

        ``X`` may be a stream (:func:`lepton_nn.data.stream`, or one mapped to ``(X, y[, w])``
        arrays; ``y`` None): every epoch re-reads it in a shuffled chunk order, shuffling rows
        in windows of ``shuffle_buffer`` rows (:mod:`lepton_nn.train.streaming`);
        ``validation_split`` then holds out a seeded share of its chunks and
        ``validation_data`` may be a stream too.

        Args:
            validation_data: ``(X_val, y_val)`` or ``(X_val, y_val, w_val)``, scored after
                each epoch (``val_loss``, ``val_<metric>``).
            validation_split: fraction of the rows held out for validation, taken from the
                end of ``X`` before shuffling (as Keras does); ignored with validation_data.
            callbacks: objects with ``on_*`` hooks (:class:`~lepton_nn.train.Callback` or any
                object following its protocol, such as ``PruningCallback`` or ``Recorder``).
            class_weight: ``"balanced"`` or ``{label: weight}``; becomes per-sample weights
                of the loss, multiplied into ``sample_weight`` if both are given.
            verbose: 0 silent, 1 progress bar (a live line on a terminal, one line per epoch
                otherwise), 2 one line per epoch.
            seed: reseeds the library's global stream (``lepton_nn.set_seed``) before the
                model is built, so weight init, dropout and shuffling all follow it. Without
                it they follow the current global stream.

            privacy: a :class:`lepton_nn.privacy.Privacy` request: DP-SGD on Poisson batches
                (per-example clipping and noise); ``logs["epsilon"]`` each epoch, the spent
                budget in ``self.privacy_report`` after.
            divergence: a batch loss above ``divergence * max(1, first batch loss)`` means
                training diverged (``None``: only non-finite values do).

        Divergence (a NaN or infinite loss or output, or a loss past the bound above) stops
        training with a :class:`DivergenceWarning` (:class:`NonFiniteLossWarning` for
        non-finite values) naming the epoch and batch, also in ``history.stop_reason``. That
        batch's update is not applied and the weights before the previous update, the last
        whose loss was good, are restored; if the batch's own inputs are not finite, the
        current weights are kept (see :mod:`lepton_nn.train.guard`).
        """
        if int(epochs) < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        if is_chunked(X):
            from .streaming import fit_stream

            return fit_stream(
                self, X, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
                validation_split=validation_split, callbacks=callbacks, class_weight=class_weight,
                sample_weight=sample_weight, shuffle=shuffle, verbose=verbose, seed=seed,
                divergence=divergence, privacy=privacy, shuffle_buffer=shuffle_buffer,
            )  # fmt: skip
        if seed is not None:
            set_seed(seed)
        X, y = self._x(X), self._y(y)
        self._check_rows(X, ("y", y), ("sample_weight", sample_weight))
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (
                2,
                3,
            ):
                raise ValueError("validation_data must be (X_val, y_val) or (X_val, y_val, w)")
            Xv, yv = self._x(validation_data[0]), self._y(validation_data[1])
            wv = validation_data[2] if len(validation_data) == 3 else None
            self._check_rows(Xv, ("y_val", yv), ("w_val", wv))
            val = (Xv, yv, wv)
        elif validation_split > 0:
            n = n_rows(X)
            cut = int(n * (1.0 - validation_split))
            if cut <= 0 or cut >= n:
                raise DataError(
                    f"validation_split={validation_split} leaves no rows on one side of {n} rows"
                )
            sw = None if sample_weight is None else np.asarray(sample_weight).reshape(-1)
            val = (rows(X, slice(cut, None)), y[cut:], None if sw is None else sw[cut:])
            X, y = rows(X, slice(cut)), y[:cut]
            sample_weight = None if sw is None else sw[:cut]
        w = self._sample_weights(y, sample_weight, class_weight)
        n = n_rows(X)
        if n == 0:
            raise DataError("fit: no training rows")

        self._prepare(X)
        batch_stats = self._batch_stats()
        if batch_stats and min(int(batch_size), n) < 2:
            raise DataError(
                f"fit: batch normalization trains on batches of 2 rows or more; got "
                f"batch_size={batch_size} with {n} training row(s)"
            )
        batches = iterate_batches(
            X, y, batch_size, shuffle, rng=spawn(), sample_weight=w, merge_last=batch_stats
        )
        private = None
        if privacy is not None:  # DP-SGD: Poisson batches, a clipping and noising optimizer
            if w is not None:
                raise ValueError("fit: sample_weight and class_weight do not go with privacy")
            if isinstance(X, dict):
                raise LeptonError("fit: privacy trains models of one input; X has several")
            private = privacy.attach(self.model, self.optimizer, (X, y), batch_size, epochs, seed)
            batches = private.loader
        if batches.merged:
            warnings.warn(
                f"fit: {n} rows in batches of {batch_size} leave a last batch of one row, "
                f"which batch normalization cannot train on; it joins the batch before it "
                f"({batch_size + 1} rows)",
                UserWarning,
                stacklevel=2,
            )
        evaluate_val = None if val is None else (lambda: self._evaluate_arrays(*val, self.metrics))
        return self._run(
            batches, n, evaluate_val, epochs, batch_size, callbacks, verbose, divergence,
            w is not None, private,
        )  # fmt: skip

    def _run(
        self,
        batches: Any,
        n_rows: int,
        evaluate_val: Callable[[], dict[str, float]] | None,
        epochs: int,
        batch_size: int,
        callbacks: Sequence[Any],
        verbose: int,
        divergence: float | None,
        weighted: bool,
        private: Any = None,
    ) -> History:
        """The epoch loop over ``batches`` (an iterable of ``(xb, yb[, wb])`` with ``len``:
        in-memory mini-batches, or a stream's), ``n_rows`` rows an epoch; ``evaluate_val()``
        scores the validation data after each epoch."""
        n_batches = len(batches)
        history = History()
        cbs = [*callbacks, history]
        progress = None
        if verbose:
            progress = ProgressBar(verbose)
            progress.decide_live()
            cbs.append(progress)
        params = {
            "epochs": int(epochs),
            "steps": n_batches,
            "samples": n_rows,
            "batch_size": int(batch_size),
            "verbose": verbose,
            "metrics": self.metric_names,
        }
        history.params = params
        cblist = CallbackList(cbs, self, params)
        self.history = history
        self.stop_training = False
        self.stop_reason = None

        model, opt, loss_fn = self.model, self.optimizer, self.loss_fn
        opt = opt if private is None else private.optimizer
        guard = DivergenceGuard(model, divergence)
        batch_begin, batch_end = cblist.batch_begin, cblist.batch_end
        blogs: dict[str, Any] = {}
        collect = bool(self.metrics) and private is None  # Poisson batches: sizes vary
        out_buf = y_buf = None
        logs: dict[str, Any] = {}

        def where(epoch: int, b: int) -> str:
            return f"epoch {epoch + 1}/{epochs}, batch {b + 1}/{n_batches}"

        cblist.on_train_begin({})
        for epoch in range(int(epochs)):
            model.train()
            cblist.on_epoch_begin(epoch, {})
            total, seen, pos = 0.0, 0, 0
            bad: tuple[int, float, str] | None = None
            for b, batch in enumerate(batches):
                if not weighted:
                    xb, yb = batch
                    wb = None
                else:
                    xb, yb, wb = batch
                nb = len(yb)
                if batch_begin:
                    blogs["batch"], blogs["size"] = b, nb
                    for hook in batch_begin:
                        hook(b, blogs)
                out = model(xb)
                loss = loss_fn(out, yb) if wb is None else loss_fn(out, yb, sample_weight=wb)
                lv = float(loss.data)
                kind = guard.check(lv, out.data)
                if kind is not None:
                    bad = (b, lv, kind)
                    break
                opt.zero_grad()
                loss.backward()
                guard.save()
                opt.step()
                total += lv * nb
                seen += nb
                if collect:
                    if out_buf is None:
                        out_buf = np.empty((n_rows, *out.shape[1:]), out.dtype)
                        y_buf = np.empty((n_rows, *yb.shape[1:]), yb.dtype)
                    out_buf[pos : pos + nb] = out.data
                    y_buf[pos : pos + nb] = yb
                    pos += nb
                if batch_end:
                    blogs["batch"], blogs["size"] = b, nb
                    blogs["loss"], blogs["batch_loss"] = total / seen, lv
                    for hook in batch_end:
                        hook(b, blogs)
                    if self.stop_training:
                        break
            if bad is None and not guard.weights_finite():
                bad = (b, float("nan"), "weights")  # the epoch's last step broke the weights
                xb = None
            if bad is not None:
                if progress is not None:
                    progress.end_line()
                self.stop_reason = guard.stop(where(epoch, bad[0]), bad[2], bad[1], xb)
                self.stop_training = True
                break

            logs = {"loss": total / seen if seen else float("nan")}
            if collect and pos:
                logs.update(self._score(y_buf[:pos], out_buf[:pos], self.metrics))
            if evaluate_val is not None:
                vlogs = evaluate_val()
                logs.update({"val_" + k: v for k, v in vlogs.items()})
                kind = guard.check(vlogs["loss"], np.zeros(0))
                if kind is not None:  # the epoch's last update diverged
                    if progress is not None:
                        progress.end_line()
                    at = f"{where(epoch, n_batches - 1)} (validation loss after the update)"
                    self.stop_reason = guard.stop(at, kind, vlogs["loss"], None)
                    self.stop_training = True
                    break
            logs["lr"] = opt.lr
            if private is not None:
                logs["epsilon"] = private.epsilon()
            cblist.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        if self.stop_reason is None and guard.saved and evaluate_val is None:
            self._check_last_update(guard, batch, weighted, where(epoch, n_batches - 1))
        if private is not None:
            private.detach()
            self.privacy_report = private.report()
        cblist.on_train_end(logs)
        history.stop_reason = self.stop_reason
        return history

    def _check_last_update(self, guard: DivergenceGuard, batch: tuple, weighted: bool, at: str):
        """The last update of a fit is not followed by a batch that would check it: score the
        last batch again (eval mode, no graph) and undo that update if it diverged."""
        xb, yb = batch[0], batch[1]
        wb = batch[2] if weighted else None
        out = self._forward(xb, n_rows(xb))
        with no_grad():
            t = Tensor(out)
            loss = self.loss_fn(t, yb) if wb is None else self.loss_fn(t, yb, sample_weight=wb)
        lv = float(loss.data)
        kind = guard.check(lv, out)
        if kind is not None:
            at = f"{at} (scored again after the last update)"
            self.stop_reason = guard.stop(at, kind, lv, None, stacklevel=4)

    def __repr__(self) -> str:
        opt = type(self.optimizer).__name__ if self.optimizer else self._opt_spec[0].__name__
        return (
            f"Trainer(model={type(self.model).__name__}, loss={self.loss_name!r}, "
            f"optimizer={opt}, metrics={self.metric_names}, task={self.task!r})"
        )
