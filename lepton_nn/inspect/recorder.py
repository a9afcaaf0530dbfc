"""``Recorder``: per-layer activation and gradient statistics while a model trains.

For every layer without sub-layers (``Dense``, ``ReLU``, ``Conv2D``, ...) and every recorded
step (batch) it keeps:

- ``act_mean``, ``act_std``: mean and standard deviation of the layer's output y;
- ``dead``: for ReLU outputs, the fraction of units that are 0 for every sample of the batch,
  ``mean_j [max_i y[i, j] <= 0]`` (units j = every position but the batch axis); NaN otherwise;
- ``grad_mean``, ``grad_std``: of g = dL/dy, the gradient reaching the output;
- ``update_ratio``: ||W_after - W_before|| / ||W_before|| over the layer's parameters for the
  optimizer step of that batch (about 1e-3 is the usual healthy range); NaN without parameters.

It reads values through module forward hooks and tensor hooks; nothing in the model changes.
In ``Trainer.fit`` pass it as a callback (it follows the trainer's duck-typed callback
protocol, so this module never imports the trainer). In a plain loop: ``rec.attach(model)``,
then per batch ``rec.on_batch_begin(i)`` before the forward and ``rec.on_batch_end(i)`` after
``optimizer.step()``, and ``rec.detach()`` at the end.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..nn.module import Module

__all__ = ["Recorder", "RecorderHooks", "STATS", "plot_history"]

STATS = ("act_mean", "act_std", "dead", "grad_mean", "grad_std", "update_ratio")


def _sq(a: np.ndarray) -> float:
    """||a||^2 in float64."""
    return float(np.sum(np.square(a, dtype=np.float64)))


def _is_relu(m: Module) -> bool:
    return getattr(m, "activation", None) == "relu"


class Recorder:
    """Trainer callback collecting per-layer statistics (see the module docstring);
    ``every``: record one batch in ``every``. After training: ``stats[layer][stat]`` is a list
    aligned with ``steps``."""

    trainer: Any = None
    params: dict[str, Any] = {}

    def __init__(self, model: Module | None = None, every: int = 1) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self._model = model
        self.every = int(every)
        self.steps: list[int] = []
        self.stats: dict[str, dict[str, list[float]]] = {}
        self._layers: list[tuple[str, Module]] = []
        self._handles: list[Any] = []
        self._row: dict[str, dict[str, float]] | None = None
        self._before: dict[str, list[np.ndarray]] = {}
        self._step = 0

    # -- wiring ------------------------------------------------------------------------------
    @property
    def model(self) -> Module | None:
        return self._model if self._model is not None else getattr(self.trainer, "model", None)

    @model.setter
    def model(self, model: Module | None) -> None:
        self._model = model

    def set_trainer(self, trainer: Any) -> None:
        self.trainer = trainer

    def attach(self, model: Module | None = None) -> Recorder:
        """Hook the leaf layers of ``model`` (default: the trainer's)."""
        if model is not None:
            self._model = model
        if self.model is None:
            raise ValueError("Recorder has no model: pass one or use it in a Trainer")
        self.detach()
        names: set[str] = set()
        self._layers = []
        for prefix, m in self.model._named_modules():
            if any(True for _ in m.named_children()):
                continue
            name = m.name if m.name not in names else f"{m.name}@{prefix[:-1]}"
            names.add(name)
            self._layers.append((name, m))
            self.stats.setdefault(name, {k: [] for k in STATS})
            self._handles.append(m.register_forward_hook(self._forward_hook(name)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- the callback hooks ---------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self.attach()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.detach()

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._step % self.every:
            return
        self._row = {name: {} for name, _ in self._layers}
        self._before = {
            name: [p.data.copy() for _, p in m._own_parameters()] for name, m in self._layers
        }

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        row, self._row = self._row, None
        if row is not None:
            for name, m in self._layers:
                before = self._before.get(name, [])
                if before:
                    after = [p.data for _, p in m._own_parameters()]
                    du = math.sqrt(sum(_sq(a - b) for a, b in zip(after, before)))
                    w = math.sqrt(sum(_sq(b) for b in before))
                    row[name]["update_ratio"] = du / w if w > 0 else math.nan
                for k in STATS:
                    self.stats[name][k].append(row[name].get(k, math.nan))
            self.steps.append(self._step)
            self._before = {}
        self._step += 1

    def _forward_hook(self, name: str):
        def hook(module: Module, inputs: tuple, out: Any) -> None:
            row = self._row
            if row is None or not module.training or not isinstance(out, Tensor):
                return
            y = out.data
            rec = row[name]
            rec["act_mean"], rec["act_std"] = float(y.mean()), float(y.std())
            if _is_relu(module) and y.ndim >= 1 and y.shape[0] > 0:
                rec["dead"] = float(np.mean(y.max(axis=0) <= 0))
            if out.requires_grad:

                def grad_hook(g: np.ndarray) -> None:
                    rec["grad_mean"], rec["grad_std"] = float(g.mean()), float(g.std())

                out.register_hook(grad_hook)

        return hook

    # -- reading ---------------------------------------------------------------------------------
    def __getitem__(self, layer: str) -> dict[str, np.ndarray]:
        """``rec["dense"]["act_std"]``: one layer's statistics as arrays over ``steps``."""
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.stats[layer].items()}

    def summary(self) -> str:
        """A table of the last recorded value of every statistic, one row per layer."""
        head = ("layer", *STATS)
        rows = [head]
        for name, per in self.stats.items():
            vals = [per[k][-1] if per[k] else math.nan for k in STATS]
            rows.append((name, *("-" if math.isnan(v) else f"{v:.3g}" for v in vals)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def plot(self, path: str | os.PathLike[str]) -> str | None:
        """Save a 2x2 figure (activation std, dead ReLU fraction, gradient std, update ratio,
        per layer over steps) to ``path``. Needs matplotlib; without it, warns and returns None.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError:
            warnings.warn(
                'Recorder.plot needs matplotlib (pip install "lepton-nn[plot]")', stacklevel=2
            )
            return None
        fig = Figure(figsize=(10, 7), layout="constrained")
        axes = fig.subplots(2, 2)
        panels = (
            ("act_std", "activation std", False),
            ("dead", "dead ReLU fraction", False),
            ("grad_std", "std of dL/d(output)", True),
            ("update_ratio", "update / weight ratio", True),
        )
        steps = np.asarray(self.steps)
        for ax, (key, title, log) in zip(axes.flat, panels):
            for name, per in self.stats.items():
                v = np.asarray(per[key], dtype=np.float64)
                if v.size and np.isfinite(v).any():
                    ax.plot(steps, v, label=name, linewidth=1)
            if log and ax.lines:
                ax.set_yscale("log")
            if key == "update_ratio" and ax.lines:
                ax.axhline(1e-3, color="gray", linestyle="--", linewidth=0.8)
            ax.set_title(title)
            ax.set_xlabel("step")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside right upper", fontsize=8)
        fig.savefig(os.fspath(path), dpi=90)
        return os.fspath(path)

    def __repr__(self) -> str:
        return f"Recorder({len(self.stats)} layers, {len(self.steps)} steps)"


RecorderHooks = Recorder  # the earlier name of the plain-loop collector


def plot_history(
    history: Any, path: str | os.PathLike[str], keys: tuple[str, ...] | None = None
) -> str | None:
    """Training curves: each key of a Keras-style history (``{"loss": [...], "val_loss": [...]}``
    or an object with ``.history``) against the epoch, losses on one panel and other metrics
    on another. Needs matplotlib; without it, warns and returns None."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn('plot_history needs matplotlib (pip install "lepton-nn[plot]")', stacklevel=2)
        return None
    hist = getattr(history, "history", history)
    keys = keys or tuple(k for k in hist if k != "lr")
    losses = [k for k in keys if k.endswith("loss")]
    others = [k for k in keys if not k.endswith("loss")]
    fig = Figure(figsize=(9 if others else 5, 3.5), layout="constrained")
    axes = fig.subplots(1, 2 if others else 1, squeeze=False).flat
    for ax, group, title in zip(axes, (losses, others), ("loss", "metrics")):
        for k in group:
            v = np.asarray(hist[k], dtype=np.float64)
            ax.plot(np.arange(1, v.size + 1), v, label=k, linewidth=1.5)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.savefig(os.fspath(path), dpi=90)
    return os.fspath(path)
