"""Floor 3-5: look inside -- the graph behind a tensor, the backward pass step by step, and
per-layer statistics during training.

- :func:`graph` -> :class:`Graph` with ``.to_mermaid()`` / ``.to_dot()`` / ``.backward()``;
- :func:`explain_backward` -> the steps of ``loss.backward()``, each with its local rule;
- hooks live on the engine itself: ``Tensor.register_hook(fn)``,
  ``Module.register_forward_hook(fn)``, ``Module.register_full_backward_hook(fn)``;
- :class:`Recorder`, a trainer callback collecting activation and gradient statistics, and
  :func:`plot_history` for training curves (both plot when matplotlib is installed);
- :func:`studio` / :class:`Studio`: the browser studio (:mod:`.studio`, the ``serve`` extra),
  imported on first use.
"""

from __future__ import annotations

from .backward import BackwardStep, BackwardWalk, explain_backward
from .graph_view import Graph, Node, graph
from .recorder import STATS, Recorder, RecorderHooks, plot_history
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
    "studio",
    "Studio",
]


def __getattr__(name: str):
    if name in ("studio", "Studio"):  # the web room loads only when asked for
        import importlib

        room = importlib.import_module(".studio", __name__)  # a callable module: studio(...)
        return room if name == "studio" else room.Studio
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
