"""``Studio``: a ``fit`` callback that publishes training to the studio page, and the
pause / step / resume control the page drives.

Per recorded batch it publishes one event ``{"type": "batch", "step", "loss", "batch_loss",
"losses", "layers": {call name: stats}}`` (``losses``: every batch loss since the last event)
where the stats are :class:`..recorder.Recorder`'s
(``act_mean``, ``act_std``, ``dead``, ``grad_mean``, ``grad_std``, ``update_ratio``) plus
``value_norm`` = ||y||, ``grad_norm`` = ||dL/dy||, ``weight_norm`` = ||W|| and
``weight_grad_norm`` = ||dL/dW|| over the layer's parameters, and ``hist`` (counts and edges
of a 16-bin histogram of y). Statistics cost a few NumPy calls per layer, more than a small
network's batch, so a batch is recorded only when both allow it: at most ``max_rate`` times a
second, and while the time recording has cost so far (a recorded batch's duration minus the
running mean of an unrecorded one) is at most ``overhead`` times the time since training
began (None switches either limit off; a batch run by ``step()`` is always recorded). No loss
is dropped: ``losses`` carries every batch's. Events go into an append-only list that the
server's event stream reads from its own position (no queue per client, none lost).

Control: ``pause()`` makes the next ``on_batch_begin`` wait; ``step()`` lets one batch run
and pauses again; ``resume()`` lets training go on. ``close()`` resumes, ends the run
(``stop_training``) and stops the server.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from ...autograd import Tensor
from ...nn.module import Module
from ..recorder import Recorder
from . import model_view

__all__ = ["Studio"]

HIST_BINS = 16


class Studio:
    """Trainer callback (``fit(..., callbacks=[Studio()])``) that starts the studio server on
    ``127.0.0.1:port`` (0: a free port) when training begins, unless :meth:`start` ran first.
    ``sample``: ``(x, y)`` rows for the graph's shapes and the backprop stepper."""

    trainer: Any = None
    params: dict[str, Any] = {}

    def __init__(
        self,
        port: int = 0,
        model: Module | None = None,
        sample: tuple[Any, Any] | None = None,
        loss: Any = None,
        max_rate: float | None = 25.0,
        overhead: float | None = 0.1,
    ) -> None:
        self.port = int(port)
        self._model = model
        self.sample = sample
        self._loss = loss
        self.recorder = Recorder(model)
        self.max_rate = max_rate
        self._recording = False
        self._last = -math.inf
        self.overhead = overhead
        self._t0: float | None = None  # when the first batch began
        self._began = 0.0  # when this batch began
        self._cost = 0.0  # seconds recording has added so far
        self._plain: float | None = None  # running mean of an unrecorded batch's duration
        self._pending: list[float | None] = []
        self.events: list[dict] = []
        self.cond = threading.Condition(threading.RLock())
        self.paused = False
        self.budget = 0  # batches allowed while paused
        self.training = False
        self.closed = False
        self.server: Any = None
        self._hooks: list[Any] = []
        self._live: dict[str, dict[str, Any]] = {}
        self._step = 0
        self.waiting = False  # the fit thread is parked in on_batch_begin
        self._view: dict[str, Any] | None = None

    # -- wiring ----------------------------------------------------------------------------
    @property
    def model(self) -> Module | None:
        return self._model if self._model is not None else getattr(self.trainer, "model", None)

    def set_trainer(self, trainer: Any) -> None:
        self.trainer = trainer
        self.recorder.set_trainer(trainer)

    def loss_fn(self):
        if self.trainer is not None and hasattr(self.trainer, "loss_fn"):
            return self.trainer.loss_fn
        from ...losses import get_loss

        return get_loss(self._loss or "mse")

    def sample_x(self) -> Any:
        if self.sample is not None:
            return self.sample[0]
        shape = getattr(self.model, "input_shape", None)
        if shape is None or isinstance(shape, list):
            raise ValueError("the studio needs sample rows (sample=(x, y)) for this model")
        return np.zeros((2, *shape[1:]) if shape[0] is None else (2, *shape), np.float32)

    def start(self) -> Studio:
        """Start the server (once) in a background thread; returns self (``.url``)."""
        if self.server is None:
            from .server import StudioServer

            self.server = StudioServer(self, self.port)
        return self

    @property
    def url(self) -> str:
        return self.start().server.url

    def close(self) -> None:
        with self.cond:
            self.closed, self.paused = True, False
            self.cond.notify_all()
        if self.server is not None:
            self.server.stop()

    # -- events and control ------------------------------------------------------------------
    def publish(self, event: dict) -> None:
        with self.cond:
            event["seq"] = len(self.events)
            self.events.append(event)
            self.cond.notify_all()

    def control(self, action: str) -> dict:
        with self.cond:
            if action == "pause":
                self.paused, self.budget = True, 0
            elif action == "resume":
                self.paused, self.budget = False, 0
            elif action == "step":
                self.paused, self.budget = True, self.budget + 1
            else:
                raise ValueError(f"unknown action {action!r}: pause, step or resume")
            self.cond.notify_all()
            return self.state()

    def state(self) -> dict:
        return {"paused": self.paused, "training": self.training, "step": self._step}

    # -- the callback hooks ------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self.prepare()
        self.start()
        self.training = True
        self.publish({"type": "state", **self.state()})

    def _watch(self, on: bool) -> None:
        """Hooks on the layers only for a recorded batch: the others run hook-free (and so
        fused where a pair of layers can be)."""
        self.recorder.detach()
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if on:
            self.recorder.attach(self.model)
            self._hooks = model_view.hook_calls(self.model, self._layer_output)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._watch(False)
        self.training = False
        self._flush()
        self.publish({"type": "done", **self.state()})

    def _flush(self) -> None:
        """Publish the batch losses not yet sent (``{"type": "losses"}``)."""
        if self._pending:
            losses, self._pending = self._pending, []
            self.publish({"type": "losses", "step": self._step, "losses": losses})

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        with self.cond:  # (an RLock: publish may take it again)
            while self.paused and self.budget == 0 and not self.closed:
                self._flush()  # a paused page shows every loss so far
                if not self.waiting:  # parked: the page's last event says so (a batch event
                    # published before the pause may reach it after the control answer)
                    self.publish({"type": "state", "paused": True, "step": self._step})
                self.waiting = True
                self.cond.wait(0.5)
            self.waiting = False
            stepped = self.paused and self.budget > 0
            if stepped:
                self.budget -= 1
        now = self._began = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        rate_ok = self.max_rate is None or now - self._last >= 1.0 / self.max_rate
        cost_ok = self.overhead is None or self._cost <= self.overhead * (now - self._t0)
        self._recording = stepped or (rate_ok and cost_ok)
        if self._recording:
            self._last = now
            self._live = {}
            self._watch(True)
            self.recorder.on_batch_begin(batch, logs)

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self._step += 1
        if self.closed and self.trainer is not None:  # closing the studio ends its run
            self.trainer.stop_training = True
        self._pending.append(_num(logs.get("batch_loss")))
        if not self._recording:
            took = time.monotonic() - self._began
            self._plain = took if self._plain is None else 0.9 * self._plain + 0.1 * took
            return
        self._recording = False
        self.recorder.on_batch_end(batch, logs)
        self._watch(False)
        layers: dict[str, dict[str, Any]] = {}
        for name, m, _ in model_view.calls_of(self.model):
            row = dict(self._live.get(name, {}))
            per = self.recorder.stats.get(m.name)
            if per is not None:
                for k, v in per.items():
                    if v:
                        row[k] = _num(v[-1])
            ps = list(m.parameters())
            if ps:
                row["weight_norm"] = _norm([p.data for p in ps])
                grads = [p.grad for p in ps if p.grad is not None]
                row["weight_grad_norm"] = _norm(grads) if grads else None
            layers[name] = row
        losses, self._pending = self._pending, []
        self.publish(
            {
                "type": "batch",
                "losses": losses,
                "step": self._step,
                "loss": _num(logs.get("loss")),
                "batch_loss": _num(logs.get("batch_loss")),
                "layers": layers,
                "paused": self.paused,
            }
        )
        self._cost += max(0.0, time.monotonic() - self._began - (self._plain or 0.0))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.publish(
            {"type": "epoch", "epoch": epoch, "logs": {k: _num(v) for k, v in (logs or {}).items()}}
        )

    def _layer_output(self, name: str, module: Module, inputs: tuple, out: Any) -> None:
        """Norm and histogram of one layer call's output y, and ||dL/dy|| once known."""
        if not self._recording or not module.training or not isinstance(out, Tensor):
            return
        y = np.asarray(out.data, np.float64)
        counts, edges = np.histogram(y[np.isfinite(y)], bins=HIST_BINS)
        rec = self._live.setdefault(name, {})
        rec["value_norm"] = float(np.linalg.norm(y))
        rec["hist"] = {"counts": counts.tolist(), "edges": [float(e) for e in edges]}
        if out.requires_grad:

            def grad_hook(g: np.ndarray) -> None:
                rec["grad_norm"] = float(np.linalg.norm(np.asarray(g, np.float64)))

            out.register_hook(grad_hook)

    # -- what the server asks -----------------------------------------------------------------
    def prepare(self) -> None:
        """Graph and formulas, computed once before training: the server's threads never run
        the model while ``fit`` does."""
        if self.model is None:
            raise ValueError("the Studio has no model: pass one, or use it as a fit callback")
        if self._view is None or self._view["model"] is not self.model:
            x = self.sample_x()
            calls = model_view.calls_of(self.model)
            self._view = {
                "model": self.model,
                "graph": model_view.layer_graph(self.model, x),
                "nodes": {n: model_view.formula_of(self.model, n, x) for n, _, _ in calls},
            }

    def graph(self) -> dict:
        self.prepare()
        return self._view["graph"]

    def node(self, name: str) -> dict:
        self.prepare()
        doc = dict(self._view["nodes"][name])
        last = next((e for e in reversed(self.events) if e["type"] == "batch"), None)
        doc["stats"] = None if last is None else last["layers"].get(name)
        return doc

    def backward(self) -> dict:
        """The backprop stepper's data; refused (RuntimeError) while a batch may be running."""
        if self.training and not self.waiting:
            raise RuntimeError("pause training first: backprop stepping runs its own batch")
        if self.sample is None or self.sample[1] is None:
            raise ValueError("backprop stepping needs labelled sample rows (sample=(x, y))")
        x, y = self.sample
        model = self.model
        was = model.training
        model.eval()
        try:
            return model_view.backward_steps(model, x[:8], y[:8], self.loss_fn())
        finally:
            model.train(was)


def _num(v: Any) -> float | None:
    """A JSON-safe float (None for NaN, infinities and missing values)."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _norm(arrays: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))
