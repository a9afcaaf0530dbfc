"""``explain_backward(loss)``: the backward pass, one node at a time, with each op's rule.

It runs the real engine (``loss.backward()``, so leaves get their ``.grad`` exactly as usual)
while watching it: each op's ``backward`` is wrapped for the duration of the call to record
the gradient it received and the ones it returned, and tensor hooks record what reaches each
leaf. The steps come out in the order the engine took them (reverse topological order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor
from .graph_view import Graph, Node, _shape_text, graph
from .rules import rule_for

__all__ = ["BackwardStep", "BackwardWalk", "explain_backward"]


def _norm(a: np.ndarray | None) -> float | None:
    return None if a is None else float(np.linalg.norm(np.asarray(a, np.float64)))


@dataclass
class BackwardStep:
    """One node of the backward pass.

    ``node``: the graph node whose gradient g = dL/d(node) is being used; ``grad``: g (a
    copy); ``inputs``: for an op, ``(input node, gradient sent to it or None)`` per argument
    (None where the input needs no gradient); empty for a leaf, whose g goes into ``.grad``.
    ``words``/``math``: the local rule (see :mod:`.rules`).
    """

    index: int
    node: Node
    words: str
    math: str
    grad: np.ndarray = field(repr=False)
    inputs: list[tuple[Node, np.ndarray | None]] = field(default_factory=list, repr=False)

    @property
    def grad_norm(self) -> float:
        return float(_norm(self.grad))

    def __str__(self) -> str:
        n = self.node
        kind = "leaf" if n.kind != "op" else "op"
        lines = [
            f"step {self.index}: {n.id} {n.label} [{kind}] {_shape_text(n.shape)} {n.dtype}",
            f"  rule: {self.words}",
        ]
        if self.math:
            lines.append(f"        {self.math}")
        lines.append(
            f"  g = dL/d({n.id}): {_shape_text(self.grad.shape)}, norm {self.grad_norm:.4g}"
        )
        for src, g in self.inputs:
            if g is None:
                lines.append(f"  -> {src.id} {src.label}: no gradient needed")
            else:
                lines.append(
                    f"  -> {src.id} {src.label}: {_shape_text(np.shape(g))}, norm {_norm(g):.4g}"
                )
        return "\n".join(lines)


class _Watch:
    """Temporarily wraps every op's backward and hooks every leaf of a graph."""

    def __init__(self, g: Graph):
        self.graph = g
        self.events: list[tuple[Node, np.ndarray, list[np.ndarray | None] | None]] = []
        self.handles: list[Any] = []
        self.wrapped: list[Any] = []

    def __enter__(self) -> _Watch:
        for node in self.graph.nodes:
            t = node.tensor
            if not t.requires_grad:
                continue
            if t._ctx is None:
                self.handles.append(t.register_hook(self._leaf(node)))
            else:
                ctx = t._ctx
                ctx.backward = self._op(node, type(ctx).backward.__get__(ctx))  # instance attr
                self.wrapped.append(ctx)
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        for ctx in self.wrapped:
            del ctx.backward  # the class's method again

    def _leaf(self, node: Node):
        def hook(g: np.ndarray) -> None:
            self.events.append((node, np.array(g), None))

        return hook

    def _op(self, node: Node, backward):
        def wrapper(g: np.ndarray):
            out = backward(g)
            copies = [None if a is None else np.array(a) for a in out]
            self.events.append((node, np.array(g), copies))
            return out

        return wrapper


class BackwardWalk(list):
    """The steps of one backward pass (a list of :class:`BackwardStep`); ``str()`` prints all."""

    def __str__(self) -> str:
        return "\n".join(str(s) for s in self)


def explain_backward(loss: Tensor, grad: Any = None, params: Any = None) -> BackwardWalk:
    """Run ``loss.backward(grad)`` now and return its steps, one :class:`BackwardStep` per node.

    ``params`` (a Module or ``{name: tensor}``) names the leaves. ``print(step)`` shows the
    rule in words and math and the gradient shapes and norms; iterate for one at a time::

        for step in explain_backward(loss, params=model):
            print(step)
    """
    g = graph(loss, params)
    with _Watch(g) as watch:
        loss.backward(grad)
    steps = BackwardWalk()
    for i, (node, gout, gins) in enumerate(watch.events):
        words, math = rule_for(node.tensor._ctx)
        inputs = [] if gins is None else list(zip(g.inputs_of(node), gins))
        steps.append(BackwardStep(i, node, words, math, gout, inputs))
    return steps
