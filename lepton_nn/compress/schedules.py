"""Pruning along training: sparsity schedules (:class:`OneShot`, :class:`PolynomialDecay`) and
the callback that moves a model's masks along one and keeps them through every optimizer step
(:class:`PruningCallback`; it needs only the trainer's ``model`` and ``optimizer``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import LeptonError
from ..nn.module import Module
from .pruning import Pruner, _check_fraction, get_pruner, prune_magnitude, prune_structured

__all__ = ["OneShot", "PolynomialDecay", "PruningCallback", "PruningSchedule"]


@dataclass(frozen=True)
class OneShot:
    """Prune once, to ``sparsity``, at step ``step`` (0: before the first batch)."""

    sparsity: float
    step: int = 0

    def __call__(self, t: int) -> float:
        return self.sparsity if t >= self.step else 0.0

    def is_update(self, t: int) -> bool:
        return t == self.step


@dataclass(frozen=True)
class PolynomialDecay:
    """Gradual pruning (Zhu & Gupta, 2017), at steps t = t0, t0 + dt, ..., t0 + n dt:

        s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^p        (p = 3)

    with t0 = ``begin_step``, t0 + n dt = ``end_step``, dt = ``frequency``. The masks change
    only at those steps (and at ``end_step`` when n dt is not a multiple of dt); ``self(t)``
    clamps t to [t0, t0 + n dt], so it is s_i before and s_f after.
    """

    final_sparsity: float
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int = 1000
    frequency: int = 100
    power: float = 3.0

    def __post_init__(self) -> None:
        _check_fraction(self.final_sparsity, "final_sparsity")
        _check_fraction(self.initial_sparsity, "initial_sparsity")
        if self.end_step < self.begin_step or self.frequency < 1:
            raise ValueError("need end_step >= begin_step and frequency >= 1")

    def __call__(self, t: int) -> float:
        span = self.end_step - self.begin_step
        frac = 1.0 if span == 0 else min(max((t - self.begin_step) / span, 0.0), 1.0)
        si, sf = self.initial_sparsity, self.final_sparsity
        return sf + (si - sf) * (1.0 - frac) ** self.power

    def is_update(self, t: int) -> bool:
        if not self.begin_step <= t <= self.end_step:
            return False
        return (t - self.begin_step) % self.frequency == 0 or t == self.end_step


class PruningCallback:
    """Trainer callback: prune along ``schedule`` and keep pruned weights at zero.

    Step t counts batches (optimizer steps) since ``on_train_begin``. Whenever
    ``schedule.is_update(t)`` (t = 0 included), the masks are recomputed at sparsity
    ``schedule(t)``: by magnitude (``scope``, ``include``), or by whole units with
    ``structured=True`` (``norm``, ``layers``). At ``on_train_begin`` the model's pruner is
    attached to the optimizer (g*m before each step, w*m after); if there is no optimizer to
    wrap, ``on_batch_end`` applies w*m instead, so the next forward still sees the zeros.
    ``on_epoch_end`` writes ``logs["sparsity"]``; ``on_train_end`` detaches the optimizer (the
    masks stay on the model, for :func:`compact`, :func:`to_sparse` and saving).

    In ``Trainer.fit`` the model and optimizer are the trainer's. In a plain loop pass
    ``model=`` and ``optimizer=``, call ``on_train_begin()`` once and ``on_batch_end(i)``
    after each ``optimizer.step()``. It follows the trainer's duck-typed callback protocol
    (``set_trainer``, ``params``, ``on_*`` hooks) without importing the trainer.
    """

    trainer: Any = None
    params: dict[str, Any] = {}

    def __init__(
        self,
        schedule: OneShot | PolynomialDecay,
        model: Module | None = None,
        optimizer: Any = None,
        *,
        scope: str = "layer",
        include: str | Iterable[str] | None = None,
        structured: bool = False,
        norm: str = "l1",
        layers: Module | str | Iterable[Module | str] | None = None,
    ):
        self.schedule = schedule
        self._model, self.optimizer = model, optimizer
        self.scope, self.include = scope, include
        self.structured, self.norm, self.layers = structured, norm, layers
        self.step = 0
        self.history: list[tuple[int, float]] = []  # (step, target sparsity) of each update
        self._pending = False

    @property
    def model(self) -> Module | None:
        return self._model if self._model is not None else getattr(self.trainer, "model", None)

    @model.setter
    def model(self, model: Module | None) -> None:
        self._model = model

    def set_trainer(self, trainer: Any) -> None:
        self.trainer = trainer

    @property
    def pruner(self) -> Pruner:
        return get_pruner(self.model, create=True)

    def _update(self) -> None:
        if not (self._pending or self.schedule.is_update(self.step)):
            return
        if not self.model.built:  # lazy layers: prune once the first batch has built them
            self._pending = True
            return
        self._pending = False
        s = self.schedule(self.step)
        if self.structured:
            prune_structured(self.model, s, norm=self.norm, layers=self.layers)
        else:
            prune_magnitude(self.model, s, scope=self.scope, include=self.include)
        self.history.append((self.step, s))

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.model is None:
            raise LeptonError("PruningCallback has no model: pass model= or use it in a Trainer")
        if self.optimizer is None:
            self.optimizer = getattr(self.trainer, "optimizer", None)
        if self.optimizer is not None:
            self.pruner.attach(self.optimizer)
        self.step = 0
        self._update()

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        self._update()
        if self.optimizer is None:  # no step to wrap: project the weights here instead
            self.pruner.apply()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["sparsity"] = self.pruner.sparsity

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.optimizer is not None:
            Pruner.detach(self.optimizer)


PruningSchedule = PruningCallback  # the name used in issue 4
