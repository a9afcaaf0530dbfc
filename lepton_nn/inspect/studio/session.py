"""``Studio``: a ``fit`` callback that publishes training to the studio page, and the
pause / step / resume control the page drives.

Per recorded batch it publishes one event ``{"type": "batch", "step", "loss", "batch_loss",
"losses", "layers": {call name: stats}}`` (``losses``: every batch loss since the last event)
where the stats of a layer call's output y and of g = dL/dy (the names of
:class:`..recorder.Recorder`) are ``act_mean``, ``act_std``, ``grad_mean``, ``grad_std`` and
``hist`` / ``grad_hist`` (``{"counts", "lo", "hi"}``: 16 equal bins over [lo, hi]), all
over an even sample of at most 4096 values (O(sample), not O(size)); ``value_norm`` = ||y||,
``grad_norm`` = ||g||, ``dead`` (ReLU outputs: the share of units 0 on every row of the
batch, ``mean_j [max_i y[i, j] <= 0]``), and over the layer's parameters ``weight_norm`` =
||W||, ``weight_grad_norm`` = ||dL/dW|| and ``update_ratio`` = ||W_after - W_before|| /
||W_before|| for the batch's optimizer step. The event also carries the optimizer's ``lr``.
The hooks keep copies of the tensors' samples; at the batch's end :mod:`.live_stats`
summarizes every layer at once (a fixed number of NumPy calls, not a few per layer). That
still costs about as much as a few batches of a small network, so a batch is
recorded only when all allow it: every ``every``-th batch, at most ``max_rate`` times a
second, and while the time recording has cost so far (a recorded batch's duration minus the
running mean of an unrecorded one, plus the excess of the ``AFTER`` = 2 batches after it,
which run slower: on the benchmark's 10-layer net the first by about a third of the
recording's own cost) is at most ``overhead`` times the time since the run began, both in
CPU time of the fit thread, which neither a busy machine nor a pause inflates (None switches
either limit off; a batch run by ``step()`` is always recorded). The default 5 % leaves
room, within a 10 % slowdown of ``fit``, for what the measured cost still misses. No loss is
dropped: ``losses`` carries every batch's, and when no batch is recorded for ``1 / max_rate``
seconds a ``{"type": "losses"}`` event carries them, so the loss curve keeps up at
``max_rate`` whatever the budget allows. Events go into an append-only list (``events``)
and, in a compact binary form, to the server's own process (:mod:`.bridge`), whose event stream
reads its copy from each client's own position (no queue per client, none lost).

Work on the model asked for by the page (the node panel's tensors, backprop stepping,
attributions, feature maps) never runs beside a batch: during a run it is queued and run by the
fit thread at the next batch boundary (a parked run wakes for it), otherwise at once
(:meth:`Studio.on_model`).

Control: ``pause()`` makes the next ``on_batch_begin`` wait; ``step()`` lets one batch run
and pauses again; ``resume()`` lets training go on. ``close()`` resumes, ends the run
(``stop_training``) and stops the server.
"""

from __future__ import annotations

import html
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ...autograd import Tensor
from ...nn.module import Module
from ..recorder import _is_relu
from . import model_view, rows, runtime_view
from .live_stats import ParamNorms, spread_sample, summaries
from .tensor_view import HIST_SAMPLE

__all__ = ["Studio", "KEEP_LAYERS"]

KEEP_LAYERS = 500  # batch events that keep their per-layer statistics (~10 KB each)
AFTER = 2  # unrecorded batches after a recording whose excess CPU time is charged to it


class Studio:
    """Trainer callback (``fit(..., callbacks=[Studio()])``) that starts the studio server on
    ``127.0.0.1:port`` (0: a free port) when training begins, unless :meth:`start` ran first.

    ``sample``: ``(x, y)`` rows for the graph's shapes, the node panel's tensors, the
    backprop stepper, attributions and feature maps. ``max_rate``, ``overhead``, ``every``:
    record a batch at most ``max_rate`` times a second, within an ``overhead`` share of the
    run's time, and only every ``every``-th batch. ``feature_names``: the columns of tabular
    input, for the attributions. In a notebook the object shows the page inline
    (``_repr_html_``: an iframe)."""

    trainer: Any = None
    params: dict[str, Any] = {}

    def __init__(
        self,
        port: int = 0,
        model: Module | None = None,
        sample: tuple[Any, Any] | None = None,
        loss: Any = None,
        max_rate: float | None = 21.0,  # >= 20 updates/s, and fit <= 10 % slower (bench_studio)
        overhead: float | None = 0.05,
        every: int = 1,
        feature_names: list[str] | None = None,
    ) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.port = int(port)
        self.every = int(every)
        self.feature_names = feature_names
        self._model = model
        self.sample = sample
        self._loss = loss
        self._calls: list[tuple[str, Module, list[Any]]] = []  # (call name, layer, params)
        self._norms: ParamNorms | None = None  # the weights before the step, packed
        self.max_rate = max_rate
        self._recording = False
        self._last = -math.inf  # when the last recorded batch began
        self._sent = -math.inf  # when losses were last published
        self.overhead = overhead
        self._t0: float | None = None  # when the first batch began
        # the time budget, in CPU seconds of the fit thread (time.thread_time: a busy machine
        # or a parked run does not distort it)
        self._began = 0.0  # when this batch began
        self._cost = 0.0  # seconds recording has added so far
        self._plain: float | None = None  # running mean of an unrecorded batch's CPU time
        self._after = 0  # batches still to charge for the last recording (AFTER of them)
        self._pending: list[float | None] = []
        self.events: list[dict] = []
        self._full: deque[int] = deque()  # batch events still holding their layer statistics
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
        self._jobs: list[_Job] = []  # work on the model, run by the fit thread between batches
        self._model_lock = threading.Lock()
        self._cache: dict[Any, Any] = {}
        self.explained: tuple[Any, Any, Any] | None = None  # (TabularModel, raw rows, y)

    # -- wiring ----------------------------------------------------------------------------
    @property
    def model(self) -> Module | None:
        return self._model if self._model is not None else getattr(self.trainer, "model", None)

    def set_trainer(self, trainer: Any) -> None:
        self.trainer = trainer

    def loss_fn(self):
        if self.trainer is not None and hasattr(self.trainer, "loss_fn"):
            return self.trainer.loss_fn
        from ...losses import get_loss

        return get_loss(self._loss or "mse")

    def sample_x(self) -> Any:
        """The sample rows; those of a model of several inputs (a dict by input name or a
        list in order) as one :class:`.rows.Rows`."""
        if self.sample is not None:
            view = runtime_view if self.runtime else rows
            return view.rows_of(self.model, self.sample[0])
        shape = getattr(self.model, "input_shape", None)
        if shape is None or isinstance(shape, list):
            raise ValueError("the studio needs sample rows (sample=(x, y)) for this model")
        return np.zeros((2, *shape[1:]) if shape[0] is None else (2, *shape), np.float32)

    def start(self) -> Studio:
        """Start the server (once, in its own process: :mod:`.bridge`) and hand it the
        events so far; returns self (``.url``)."""
        if self.server is None:
            from .bridge import StudioServer

            server = StudioServer(self, self.port, KEEP_LAYERS)
            with self.cond:
                for e in self.events:
                    server.send_event(e)
                self.server = server
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

    # -- work on the model -------------------------------------------------------------------
    def on_model(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """``fn()`` where it cannot race ``fit``: during a run, on the fit thread between two
        batches (a parked run wakes for it); otherwise here, one call at a time. Raises
        TimeoutError when the run does not reach a batch boundary within ``timeout``."""
        with self._model_lock:  # a run cannot begin (on_train_begin takes it) while we decide
            with self.cond:
                job = None
                if self.training and not self.closed:
                    job = _Job(fn)
                    self._jobs.append(job)
                    self.cond.notify_all()
            if job is None:
                return fn()
        if not job.done.wait(timeout):
            with self.cond:
                if job in self._jobs:
                    self._jobs.remove(job)
            raise TimeoutError("the training run did not reach the end of a batch in time")
        if job.error is not None:
            raise job.error
        return job.result

    def _run_jobs(self) -> None:
        while True:
            with self.cond:
                if not self._jobs:
                    return
                job = self._jobs.pop(0)
            with self._model_lock:
                try:
                    job.result = job.fn()
                except Exception as exc:  # handed to the asking thread
                    job.error = exc
            job.done.set()

    # -- events and control ------------------------------------------------------------------
    def publish(self, event: dict) -> None:
        """Append ``event`` and hand it, serialized once, to the server process; of the
        batch events, only the last ``KEEP_LAYERS`` keep their per-layer statistics (an
        older one is replaced by a copy without them: a reader holding the old dict is not
        disturbed; the server does the same with its copy), so a long run's memory stays
        small."""
        with self.cond:
            event["seq"] = len(self.events)
            self.events.append(event)
            if self.server is not None:
                self.server.send_event(event)
            if "layers" in event:
                self._full.append(event["seq"])
                if len(self._full) > KEEP_LAYERS:
                    i = self._full.popleft()
                    self.events[i] = {k: v for k, v in self.events[i].items() if k != "layers"}
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
        self._t0, self._cost, self._plain, self._after = None, 0.0, None, 0  # per run
        self.prepare()
        self.start()
        with self._model_lock, self.cond:  # from now on the page's work waits for a boundary
            self.training = True
        self.publish({"type": "state", **self.state()})

    def _watch(self, on: bool) -> None:
        """Hooks on the layers only for a recorded batch: the others run hook-free (and so
        fused where a pair of layers can be)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if on:
            self._hooks = model_view.hook_calls(self.model, self._layer_output)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._watch(False)
        with self.cond:
            self.training = False
        self._run_jobs()
        self._flush()
        self.publish({"type": "done", **self.state()})

    def _flush(self) -> None:
        """Publish the batch losses not yet sent (``{"type": "losses"}``)."""
        if self._pending:
            losses, self._pending = self._pending, []
            self._sent = time.monotonic()
            self.publish({"type": "losses", "step": self._step, "losses": losses})

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._run_jobs()
        while True:
            with self.cond:  # (an RLock: publish may take it again)
                if not (self.paused and self.budget == 0 and not self.closed):
                    self.waiting = False
                    stepped = self.paused and self.budget > 0
                    if stepped:
                        self.budget -= 1
                    break
                self._flush()  # a paused page shows every loss so far
                if not self.waiting:  # parked: the page's last event says so (a batch event
                    # published before the pause may reach it after the control answer)
                    self.publish({"type": "state", "paused": True, "step": self._step})
                self.waiting = True
                if not self._jobs:
                    self.cond.wait(0.5)
            # the page's work, outside the condition: a job takes the model lock, and
            # on_model takes the model lock before the condition (one order, no deadlock)
            self._run_jobs()
        now, cpu = time.monotonic(), time.thread_time()
        self._began = cpu
        if self._t0 is None:
            self._t0 = cpu
        rate_ok = self.max_rate is None or now - self._last >= 1.0 / self.max_rate
        rate_ok = rate_ok and self._step % self.every == 0
        cost_ok = self.overhead is None or self._cost <= self.overhead * (cpu - self._t0)
        self._recording = stepped or (rate_ok and cost_ok)
        if self._recording:
            self._last = now
            self._live = {}
            self._watch(True)
            if self._norms is not None:
                self._norms.before()

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self._step += 1
        if self.closed and self.trainer is not None:  # closing the studio ends its run
            self.trainer.stop_training = True
        self._pending.append(_num(logs.get("batch_loss")))
        if not self._recording:
            took = time.thread_time() - self._began
            if self._after:  # a recording slows the batches right after it: charged too
                self._after -= 1
                self._cost += max(0.0, took - (self._plain or took))
            else:
                self._plain = took if self._plain is None else 0.9 * self._plain + 0.1 * took
            # the loss curve keeps up at max_rate even when the budget holds statistics back
            if self.max_rate is not None and time.monotonic() - self._sent >= 1.0 / self.max_rate:
                self._flush()
            return
        self._recording = False
        self._watch(False)
        layers = self._layer_rows()
        losses, self._pending = self._pending, []
        self._sent = time.monotonic()
        self.publish(
            {
                "type": "batch",
                "losses": losses,
                "step": self._step,
                "loss": _num(logs.get("loss")),
                "batch_loss": _num(logs.get("batch_loss")),
                "lr": _num(getattr(getattr(self.trainer, "optimizer", None), "lr", None)),
                "layers": layers,
                "paused": self.paused,
            }
        )
        self._cost += max(0.0, time.thread_time() - self._began - (self._plain or 0.0))
        self._after = AFTER

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.publish(
            {"type": "epoch", "epoch": epoch, "logs": {k: _num(v) for k, v in (logs or {}).items()}}
        )

    def _layer_output(self, name: str, module: Module, inputs: tuple, out: Any) -> None:
        """Keeps one layer call's output y (its even sample, copied: :mod:`.live_stats`) and
        the dead-ReLU share; g = dL/dy once known. :meth:`_layer_rows` summarizes them."""
        if not self._recording or not module.training or not isinstance(out, Tensor):
            return
        rec = self._live.setdefault(name, {})
        y = out.data
        rec["y"] = _kept(y)
        rec["dead"] = None  # ReLU outputs only
        if _is_relu(module) and y.ndim >= 1 and y.shape[0] > 0:
            rec["dead"] = int(np.count_nonzero(y.max(axis=0) <= 0)) / max(y[0].size, 1)
        if out.requires_grad:
            out.register_hook(lambda g: rec.__setitem__("g", _kept(g)))

    def _layer_rows(self) -> dict[str, dict[str, Any]]:
        """The event's ``layers``: every kept y and g summarized at once
        (:func:`.live_stats.summaries`), and the parameters' norms (:class:`.ParamNorms`)."""
        arrays, where = [], []
        for name, _, _ in self._calls:
            rec = self._live.get(name, {})
            for key, names in (("y", _ACT), ("g", _GRAD)):
                if key in rec:
                    arrays.append(rec[key])
                    where.append((name, names))
        layers: dict[str, dict[str, Any]] = {name: {} for name, _, _ in self._calls}
        for (name, names), (_, norm), s in zip(where, arrays, summaries([a for a, _ in arrays])):
            row = layers[name]
            for k, v in zip(names, (s["mean"], s["std"], s["norm"], s["hist"])):
                row[k] = v
            if norm is not _WHOLE:  # ||a|| of a sampled tensor, taken when it was kept
                row[names[2]] = norm
        for name, row in layers.items():
            if "dead" in self._live.get(name, {}):
                row["dead"] = self._live[name]["dead"]
        if self._norms is not None:
            with_params = [name for name, _, ps in self._calls if ps]
            for name, norms in zip(with_params, self._norms.after()):
                layers[name].update(norms)
        return layers

    # -- what the server asks -----------------------------------------------------------------
    def prepare(self) -> None:
        """Graph and formulas, computed once before training: the server's threads never run
        the model while ``fit`` does."""
        if self.model is None:
            raise ValueError("the Studio has no model: pass one, or use it as a fit callback")
        if self._view is None or self._view["model"] is not self.model:
            x = self.sample_x()
            view = self._views()
            if not self.runtime:
                self._calls = [
                    (n, m, list(m.parameters())) for n, m, _ in model_view.calls_of(self.model)
                ]
                self._norms = ParamNorms([ps for _, _, ps in self._calls if ps])
            graph = view.layer_graph(self.model, x)
            names = [n["name"] for n in graph["nodes"]]
            self._view = {
                "model": self.model,
                "graph": graph,
                "nodes": {n: view.formula_of(self.model, n, x) for n in names},
            }

    @property
    def runtime(self) -> bool:
        """The model is a runtime ``InferenceModel`` (a ``.lnn`` file, no autograd)."""
        return runtime_view.is_runtime(self.model)

    def _views(self) -> Any:
        return runtime_view if self.runtime else model_view

    def _needs_autograd(self, what: str) -> None:
        if self.runtime:
            raise ValueError(f"{what}: {runtime_view.NO_GRAD}")

    def graph(self) -> dict:
        self.prepare()
        return self._view["graph"]

    def node(self, name: str) -> dict:
        self.prepare()
        doc = dict(self._view["nodes"][name])
        last = next((e for e in reversed(self.events) if e["type"] == "batch"), None)
        doc["stats"] = None if last is None else last["layers"].get(name)
        return doc

    def backward(self, ops: bool = False) -> dict:
        """The backprop stepper's data: one batch of 8 sample rows forward and backward, in
        eval mode, with the weights as they are (run between two batches of a live run);
        ``ops``: through the op nodes inside the layers (:func:`.model_view.backward_steps`)."""
        self._needs_autograd("backprop stepping")
        if self.sample is None or self.sample[1] is None:
            raise ValueError("backprop stepping needs labelled sample rows (sample=(x, y))")
        x, y = self.sample_x(), self.sample[1]
        model = self.model

        def run() -> dict:
            was = model.training
            model.eval()
            try:
                return model_view.backward_steps(model, x[:8], y[:8], self.loss_fn(), ops)
            finally:
                model.train(was)

        return self.on_model(run)

    def tensors(self, name: str, rows: int = 8) -> dict:
        """Layer call ``name``'s x, y, dL/dy, dL/dx, W and dL/dW on the first ``rows`` sample
        rows (:func:`.model_view.node_tensors`; KeyError for an unknown name)."""
        self.prepare()
        if name not in self._view["nodes"]:
            raise KeyError(f"no layer call named {name!r}")
        x = self.sample_x()[:rows]
        y = None if self.sample is None or self.sample[1] is None else self.sample[1][:rows]
        loss = self.loss_fn() if y is not None else None
        view = self._views()
        return self.on_model(lambda: view.node_tensors(self.model, name, x, y, loss))

    def feature_maps(self, index: int = 0) -> dict:
        """The 4-D layer outputs of sample image ``index`` (:func:`.model_view.feature_maps`)."""
        x, view = self.sample_x(), self._views()
        return self.on_model(lambda: view.feature_maps(self.model, x, int(index)))

    def explain(self, row: int = 0) -> dict:
        """Attributions of sample row ``row`` and global importances over the sample rows
        (:mod:`.attributions`)."""
        from .attributions import explain_rows

        self._needs_autograd("attributions")
        x = self.sample_x()
        y = None if self.sample is None else self.sample[1]
        if self.explained is not None:  # a TabularModel: raw rows, raw labels
            model, x, y = self.explained
        else:
            model = self.model
        key = ("importances", id(self.model), self._step)  # recomputed once weights move
        imp = self._cache.get(key)
        names = self.feature_names

        def run() -> dict:
            return explain_rows(model, x, y, int(row), imp is None, names)

        doc = self.on_model(run)
        if imp is None:
            self._cache[key] = imp = doc.get("importances")
        doc["importances"] = imp
        return doc

    def _repr_html_(self) -> str:
        """In a notebook: the served page in an iframe."""
        url = html.escape(self.url, quote=True)
        return (
            f'<iframe src="{url}" width="100%" height="720" style="border:1px solid #ccc" '
            f'title="lepton_nn studio"></iframe><div><a href="{url}" target="_blank">'
            f"{url}</a></div>"
        )


def _num(v: Any) -> float | None:
    """A JSON-safe float (None for NaN, infinities and missing values)."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


_ACT = ("act_mean", "act_std", "value_norm", "hist")  # the event's names of y's summary
_GRAD = ("grad_mean", "grad_std", "grad_norm", "grad_hist")  # and of g's


_WHOLE = object()  # (the sample is the whole tensor: its norm comes with the summary)


def _kept(a: np.ndarray) -> tuple[np.ndarray, Any]:
    """What the statistics need of a tensor: its sample (:func:`.live_stats.spread_sample`),
    copied (the tensor's buffer may be reused), and ||a|| when the sample is not the whole
    tensor (else ``_WHOLE``)."""
    flat = np.asarray(a).reshape(-1)
    if flat.size <= HIST_SAMPLE:
        return flat.copy(), _WHOLE
    return spread_sample(a).copy(), _num(math.sqrt(float(np.dot(flat, flat))))


class _Job:
    """A call waiting for the fit thread (:meth:`Studio.on_model`)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
