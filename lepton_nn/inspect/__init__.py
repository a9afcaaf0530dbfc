"""Floor 3-5: look inside -- the graph behind a tensor, the backward pass step by step, and
per-layer statistics during training.

- :func:`graph` -> :class:`Graph` with ``.to_mermaid()`` / ``.to_dot()`` / ``.backward()``;
- :func:`explain_backward` -> the steps of ``loss.backward()``, each with its local rule;
- hooks live on the engine itself: ``Tensor.register_hook(fn)``,
  ``Module.register_forward_hook(fn)``, ``Module.register_full_backward_hook(fn)``;
- :class:`Recorder`, a trainer callback collecting activation and gradient statistics, and
  :func:`plot_history` for training curves (both plot when matplotlib is installed).
"""

from __future__ import annotations

from typing import Any

from .backward import BackwardStep, BackwardWalk, explain_backward
from .graph_view import Graph, Node, graph
from .recorder import STATS, RecorderHooks, plot_history
from .rules import RULES, rule_for

__all__ = [
    "graph",
    "Graph",
    "Node",
    "explain_backward",
    "BackwardStep",
    "BackwardWalk",
    "RULES",
    "rule_for",
    "Recorder",
    "RecorderHooks",
    "STATS",
    "plot_history",
]

_recorder_class: type | None = None


def __getattr__(name: str) -> Any:
    """``Recorder``: :class:`RecorderHooks` made a ``lepton_nn.train`` ``Callback`` on first use.

    The trainer sits floors above this package, so it is imported only when ``Recorder`` is
    first asked for, never when this package loads (the same pattern as ``PruningCallback``).
    """
    global _recorder_class
    if name != "Recorder":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _recorder_class is None:
        try:
            from ..train.callbacks import Callback
        except ImportError:  # pragma: no cover - the trainer is part of the package
            bases: tuple[type, ...] = (RecorderHooks,)
        else:
            bases = (RecorderHooks, Callback)
        attrs = {"__doc__": RecorderHooks.__doc__, "__module__": __name__}
        _recorder_class = type("Recorder", bases, attrs)
    return _recorder_class


def __dir__() -> list[str]:
    return sorted(__all__)
