"""The computation graph behind a tensor, as data and as Mermaid / Graphviz DOT text.

``graph(t)`` walks ``t._ctx.parents`` back to the leaves. Nodes are tensors, numbered
``n0, n1, ...`` in a post-order walk (each op after its inputs, inputs in argument order), so
the numbering depends only on the graph's structure and the text is reproducible. A node shows
its op (or, for a leaf, its name), shape and dtype, and the norm of its gradient when one is
known: ``.grad`` of a leaf, or what :meth:`Graph.backward` recorded for every node.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backend.reference import ACTIVATIONS

__all__ = ["Graph", "Node", "graph", "op_label"]


def op_label(ctx: Any) -> str:
    """The op's name, with the activation of a fused ``Linear`` (``"Linear relu"``)."""
    name = ctx.op_name
    act = getattr(ctx, "act", None)
    if name == "Linear" and isinstance(act, int) and 0 < act < len(ACTIVATIONS):
        return f"{name} {ACTIVATIONS[act]}"
    return name


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(int(n)) for n in shape) + ("," if len(shape) == 1 else "") + ")"


@dataclass
class Node:
    """One tensor of the graph.

    ``kind``: ``"op"`` (made by an op), ``"param"`` (a leaf that requires grad) or ``"const"``
    (a leaf that does not: data, constants). ``label``: the op (``"MatMul"``) or the leaf's
    name (``"x"``, ``"layers.0.weight"``; ``"param"`` / ``"const"`` when unnamed).
    """

    id: str
    kind: str
    label: str
    shape: tuple[int, ...]
    dtype: str
    tensor: Tensor = field(repr=False, compare=False)
    recorded_norm: float | None = field(default=None, repr=False, compare=False)

    @property
    def grad_norm(self) -> float | None:
        """||dL/d(this tensor)||_2 as recorded by :meth:`Graph.backward`, else ``||.grad||``."""
        if self.recorded_norm is not None:
            return self.recorded_norm
        g = self.tensor.grad
        return None if g is None else float(np.linalg.norm(np.asarray(g, np.float64)))

    def lines(self) -> list[str]:
        """The text shown in a diagram box: label; shape dtype; grad norm if known."""
        out = [self.label, f"{_shape_text(self.shape)} {self.dtype}"]
        if self.grad_norm is not None:
            out.append(f"grad norm {self.grad_norm:.4g}")
        return out


class Graph:
    """Nodes (in post-order: every op after its inputs) and edges ``(src id, dst id)``."""

    def __init__(self, root: Tensor, names: Mapping[int, str] | None = None):
        self.root = root
        self.nodes: list[Node] = []
        self.edges: list[tuple[str, str]] = []
        self._by_tensor: dict[int, Node] = {}
        names = names or {}
        for t in _post_order(root):
            if t._ctx is not None:
                kind, label = "op", op_label(t._ctx)
            else:
                kind = "param" if t.requires_grad else "const"
                label = names.get(id(t)) or t.name or kind
            node = Node(f"n{len(self.nodes)}", kind, label, tuple(t.shape), t.dtype.name, t)
            self.nodes.append(node)
            self._by_tensor[id(t)] = node
            if t._ctx is not None:
                for p in t._ctx.parents:
                    self.edges.append((self._by_tensor[id(p)].id, node.id))

    # -- access ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def node_of(self, t: Tensor) -> Node:
        """The node of tensor ``t`` (KeyError if it is not in this graph)."""
        return self._by_tensor[id(t)]

    def inputs_of(self, node: Node) -> list[Node]:
        """The nodes an op node was computed from, in argument order."""
        ctx = node.tensor._ctx
        return [] if ctx is None else [self._by_tensor[id(p)] for p in ctx.parents]

    # -- gradients -------------------------------------------------------------------------
    def backward(self, grad: Any = None) -> Graph:
        """Run ``root.backward(grad)`` and record ||dL/dt|| at every node that gets a gradient.

        Leaves accumulate into ``.grad`` as usual; intermediate gradients are seen through
        temporary tensor hooks (removed afterwards), since the engine does not keep them.
        """
        handles = []
        for node in self.nodes:
            if node.tensor.requires_grad:

                def record(g: np.ndarray, node: Node = node) -> None:
                    node.recorded_norm = float(np.linalg.norm(np.asarray(g, np.float64)))

                handles.append(node.tensor.register_hook(record))
        try:
            self.root.backward(grad)
        finally:
            for h in handles:
                h.remove()
        return self

    # -- text ------------------------------------------------------------------------------
    def to_mermaid(self, direction: str = "TD") -> str:
        """Mermaid ``flowchart`` text (renders in GitHub Markdown inside a mermaid fence).

        Leaves are rounded boxes ``n0("...")``, ops rectangles ``n2["..."]``; lines of a box
        are joined by ``<br/>``.
        """
        out = [f"flowchart {direction}"]
        for n in self.nodes:
            text = "<br/>".join(_mermaid_escape(s) for s in n.lines())
            out.append(f'    {n.id}["{text}"]' if n.kind == "op" else f'    {n.id}("{text}")')
        out.extend(f"    {a} --> {b}" for a, b in self.edges)
        return "\n".join(out) + "\n"

    def to_dot(self, name: str = "G") -> str:
        """Graphviz DOT text: leaves as ellipses, ops as boxes, edges from inputs to ops."""
        out = [f"digraph {name} {{", "    node [fontname=Helvetica, fontsize=10];"]
        for n in self.nodes:
            text = "\\n".join(_dot_escape(s) for s in n.lines())
            shape = "box" if n.kind == "op" else "ellipse"
            out.append(f'    {n.id} [label="{text}", shape={shape}];')
        out.extend(f"    {a} -> {b};" for a, b in self.edges)
        out.append("}")
        return "\n".join(out) + "\n"

    def __str__(self) -> str:
        rows = []
        for n in self.nodes:
            src = ", ".join(m.id for m in self.inputs_of(n))
            line = f"{n.id:<4} {n.label:<16} {_shape_text(n.shape):<14} {n.dtype}"
            if src:
                line += f"  <- {src}"
            if n.grad_norm is not None:
                line += f"  |grad| {n.grad_norm:.4g}"
            rows.append(line)
        return "\n".join(rows)

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes, {len(self.edges)} edges)"


def _post_order(root: Tensor) -> list[Tensor]:
    """Every tensor ``root`` depends on, each after its inputs (inputs visited in order)."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t._ctx is not None:
            for p in reversed(t._ctx.parents):
                if id(p) not in seen:
                    stack.append((p, False))
    return order


def _mermaid_escape(s: str) -> str:
    return s.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _names_of(params: Any) -> dict[int, str]:
    if params is None:
        return {}
    if hasattr(params, "named_parameters"):
        params = dict(params.named_parameters())
    return {id(t): str(k) for k, t in dict(params).items()}


def graph(tensor: Tensor, params: Any = None) -> Graph:
    """The computation graph that produced ``tensor``.

    ``params``: a Module (its parameters are labelled by dotted name, ``layers.0.weight``) or
    a mapping ``{name: tensor}``; other leaves show their ``.name``, else ``param``/``const``.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"graph() takes a Tensor, got {type(tensor).__name__}")
    return Graph(tensor, _names_of(params))
