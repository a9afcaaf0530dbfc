"""``History``: what ``Trainer.fit`` returns, one list per logged quantity."""

from __future__ import annotations

from typing import Any

from .callbacks import Callback


class History(Callback):
    """Records the ``logs`` of every finished epoch.

    ``history`` maps each key (``loss``, ``val_loss``, metric names, ``lr``) to a list with one
    value per epoch; ``epoch`` lists the (0-based) epoch indices; ``stop_reason`` is ``None``
    unless training stopped because it diverged (then it holds the message).
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.params: dict[str, Any] = {}
        self.stop_reason: str | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.history, self.epoch, self.stop_reason = {}, [], None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        done = len(self.epoch) - 1
        for key, value in (logs or {}).items():
            # a key that appears late (or disappears) is padded with NaN to stay aligned
            column = self.history.setdefault(key, [float("nan")] * done)
            column.append(value)
        for column in self.history.values():
            if len(column) < len(self.epoch):
                column.append(float("nan"))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __repr__(self) -> str:
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, keys=[{keys}])"
