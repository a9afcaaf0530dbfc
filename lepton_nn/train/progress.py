"""The progress display of ``Trainer.fit``.

- ``verbose=1`` on a terminal: one line per epoch, redrawn in place (carriage return) at most
  every ``interval`` seconds while the epoch runs, then completed with the epoch's logs.
- ``verbose=1`` when the output is not a terminal (a file, a pipe, a CI log), or ``verbose=2``:
  one plain line per finished epoch, nothing per batch.
- ``verbose=0``: nothing (``fit`` does not even attach this callback).

Each line shows the epoch, batch/total, time, the loss and metrics, e.g.
``Epoch 3/10 - 16/16 - 0.12s - loss: 0.4321 - accuracy: 0.8125 - val_loss: 0.4502``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .callbacks import Callback

_BAR = 20


def format_value(v: object) -> str:
    """Compact rendering of a logged number: 4 decimals, or 3 significant digits if tiny."""
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    if f != f or f in (float("inf"), float("-inf")):
        return str(f)
    if f == 0 or 1e-3 <= abs(f) < 1e5:
        return f"{f:.4f}"
    return f"{f:.3e}"


def format_logs(logs: dict) -> str:
    return " - ".join(f"{k}: {format_value(v)}" for k, v in logs.items())


def _seconds(t: float) -> str:
    if t < 1:
        return f"{t * 1000:.0f}ms"
    if t < 60:
        return f"{t:.2f}s"
    m, s = divmod(t, 60)
    return f"{int(m)}m{s:04.1f}s"


class ProgressBar(Callback):
    """Prints training progress to ``stream`` (default: ``sys.stdout`` at train begin)."""

    def __init__(self, verbose: int = 1, stream: TextIO | None = None, interval: float = 0.1):
        self.verbose = int(verbose)
        self.stream = stream
        self.interval = float(interval)
        self._out: TextIO = sys.stdout
        self._live = False
        self._line_open = False

    @property
    def uses_batch_hooks(self) -> bool:
        return self._live

    def decide_live(self) -> None:
        """Pick the stream and whether it is a terminal (called by ``fit`` before hooks run)."""
        self._out = self.stream if self.stream is not None else sys.stdout
        isatty = getattr(self._out, "isatty", None)
        try:
            tty = bool(isatty()) if isatty is not None else False
        except (ValueError, OSError):  # a closed or odd stream
            tty = False
        self._live = self.verbose == 1 and tty

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._epochs = self.params.get("epochs", 0)
        self._steps = self.params.get("steps", 0)
        self._width = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._t0 = time.perf_counter()
        self._next_draw = self._t0 + self.interval
        if self._live:
            self._draw(0, {})

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if now < self._next_draw and batch + 1 < self._steps:
            return
        self._next_draw = now + self.interval
        loss = {"loss": logs["loss"]} if logs and "loss" in logs else {}
        self._draw(batch + 1, loss, now)

    def _head(self, done: int) -> str:
        return f"Epoch {self._epoch + 1}/{self._epochs} - {done}/{self._steps}"

    def _draw(self, done: int, logs: dict, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        elapsed = now - self._t0
        filled = int(_BAR * done / self._steps) if self._steps else _BAR
        bar = "=" * filled + (">" if filled < _BAR else "") + "." * max(_BAR - filled - 1, 0)
        parts = [f"{self._head(done)} [{bar}]"]
        if 0 < done < self._steps:
            parts.append(f"ETA {_seconds(elapsed / done * (self._steps - done))}")
        if logs:
            parts.append(format_logs(logs))
        self._write_live(" - ".join(parts))

    def _write_live(self, line: str) -> None:
        pad = " " * max(self._width - len(line), 0)
        self._width = len(line)
        self._out.write("\r" + line + pad)
        self._out.flush()
        self._line_open = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        elapsed = time.perf_counter() - self._t0
        line = f"{self._head(self._steps)} - {_seconds(elapsed)}"
        if logs:
            line += " - " + format_logs(logs)
        if self._live:
            self._write_live(line)
            self._out.write("\n")
            self._line_open = False
            self._width = 0
        else:
            self._out.write(line + "\n")
        self._out.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.end_line()  # training may have stopped inside an epoch

    def end_line(self) -> None:
        """Finish a line being redrawn (before something else is printed)."""
        if self._line_open:
            self._out.write("\n")
            self._out.flush()
            self._line_open = False
            self._width = 0
