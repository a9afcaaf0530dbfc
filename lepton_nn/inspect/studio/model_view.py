"""The studio's view of a model, as plain JSON-ready data (no web code here).

- :func:`layer_graph`: one node per layer call (``Sequential``: its layers in order; graph
  ``Model``: each call of :meth:`Model.nodes`, a shared layer once per call) plus the model's
  inputs, and the edges between them. Shapes come from one probe forward pass on sample rows
  (eval mode, no gradient): a forward hook reads each layer's output shape.
- :func:`formula_of`: a layer's forward formula, and its local derivative: the rule
  (:mod:`..rules`) of the op that produced the layer's output (``Linear`` for a Dense layer,
  ``Relu`` for a ReLU, ...), read from the autograd graph of one probe call with gradients.
- :func:`backward_steps`: :func:`..backward.explain_backward` on one batch, each step with the
  layer whose output it is, for stepping through backprop in the page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...autograd import Tensor, no_grad
from ...nn.module import Module
from ..backward import explain_backward
from ..graph_view import _shape_text, op_label
from ..rules import rule_for

__all__ = ["calls_of", "hook_calls", "layer_graph", "formula_of", "backward_steps", "FORMULAS"]

# forward formulas by layer class; x: the layer's input, y: its output
FORMULAS: dict[str, str] = {
    "Dense": "y = f(x W + b)   x: (N, in), W: (in, out), b: (out,), f: {activation}",
    "ReLU": "y = max(x, 0)",
    "Sigmoid": "y = 1 / (1 + exp(-x))",
    "Tanh": "y = tanh(x)",
    "Softmax": "y_i = exp(x_i) / sum_j exp(x_j)",
    "Activation": "y = {activation}(x)",
    "Dropout": "training: y = x * m / (1 - p), m ~ Bernoulli(1 - p); inference: y = x",
    "BatchNorm": "y = gamma (x - mean) / sqrt(var + eps) + beta",
    "LayerNorm": "y = gamma (x - mean_row) / sqrt(var_row + eps) + beta",
    "Conv2D": "y[n, o] = b[o] + sum_c W[o, c] * x[n, c]  (cross-correlation), then f",
    "MaxPool2D": "y = max over each window",
    "AvgPool2D": "y = mean over each window",
    "Flatten": "y = x.reshape(N, -1)",
    "Embedding": "y[n, t] = W[ids[n, t]]",
    "Add": "y = x_1 + x_2 + ...",
    "Concatenate": "y = concat(x_1, x_2, ...) along the last axis",
}


def calls_of(model: Module) -> list[tuple[str, Module, list[str]]]:
    """``(node name, layer, input names)`` per layer call, in the order they run."""
    if hasattr(model, "_nodes") and hasattr(model, "input_names"):  # a graph Model
        return [(n, layer, list(ins)) for n, layer, ins in model._nodes]
    layers = getattr(model, "layers", None)
    if layers is None:
        return [(model.name, model, ["input"])]
    out, prev = [], "input"
    for m in layers:
        out.append((m.name, m, [prev]))
        prev = m.name
    return out


def hook_calls(model: Module, fn: Callable[[str, Module, tuple, Any], None]) -> list[Any]:
    """One forward hook per layer object calling ``fn(call name, layer, inputs, output)``;
    a layer called k times (shared weights) names its calls in turn. Returns the handles."""
    names: dict[int, list[str]] = {}
    layers: dict[int, Module] = {}
    for name, m, _ in calls_of(model):
        names.setdefault(id(m), []).append(name)
        layers[id(m)] = m
    handles = []
    for key, m in layers.items():
        turn = [0]

        def hook(mod, inputs, out, own=names[key], turn=turn):
            name = own[turn[0] % len(own)]
            turn[0] += 1
            fn(name, mod, inputs, out)

        handles.append(m.register_forward_hook(hook))
    return handles


def input_names(model: Module) -> list[str]:
    return list(getattr(model, "input_names", None) or ["input"])


def _probe(model: Module, x: Any, grad: bool) -> dict[str, list[Tensor]]:
    """Outputs of every layer call on ``x`` (a forward hook per layer, removed after)."""
    seen: dict[int, list[Tensor]] = {}
    handles = []
    for _, m, _ in calls_of(model):
        if id(m) in seen:
            continue
        seen[id(m)] = []
        handles.append(m.register_forward_hook(lambda mod, i, o: seen[id(mod)].append(o)))
    was = model.training
    model.eval()
    try:
        if grad:
            model(x)
        else:
            with no_grad():
                model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    outs: dict[str, list[Tensor]] = {}
    count: dict[int, int] = {}
    for name, m, _ in calls_of(model):  # k-th call of a layer <-> its k-th output
        k = count.get(id(m), 0)
        count[id(m)] = k + 1
        got = seen[id(m)]
        outs[name] = [got[k]] if k < len(got) else []
    return outs


def layer_graph(model: Module, sample: Any) -> dict:
    """``{"inputs": [...], "nodes": [...], "edges": [[src, dst], ...]}`` for the page."""
    outs = _probe(model, sample, grad=False)
    nodes = []
    for name, m, ins in calls_of(model):
        y = outs[name][0] if outs[name] else None
        nodes.append(
            {
                "name": name,
                "layer": m.name,
                "kind": type(m).__name__,
                "shape": _batch_shape(y.shape) if isinstance(y, Tensor) else "?",
                "params": int(sum(p.data.size for p in m.parameters())),
                "inputs": ins,
            }
        )
    edges = [[i, n["name"]] for n in nodes for i in n["inputs"]]
    return {"inputs": input_names(model), "nodes": nodes, "edges": edges}


def _batch_shape(shape: tuple[int, ...]) -> str:
    """``(N, 8)``: a layer output's shape with the batch axis as N."""
    return "(" + ", ".join(["N", *(str(int(n)) for n in shape[1:])]) + ")"


def _ops_inside(y: Tensor, stop: set[int]) -> list[Any]:
    """The autograd ops between a layer's inputs (ids in ``stop``) and its output ``y``."""
    ops, seen, todo = [], set(), [y]
    while todo:
        t = todo.pop()
        if id(t) in seen or id(t) in stop or t._ctx is None:
            continue
        seen.add(id(t))
        ops.append(t._ctx)
        todo.extend(p for p in t._ctx.parents if isinstance(p, Tensor))
    return ops[::-1]


def formula_of(model: Module, name: str, sample: Any) -> dict:
    """Forward formula and local derivative of the layer call ``name`` (KeyError if none)."""
    calls = {n: (m, ins) for n, m, ins in calls_of(model)}
    m, _ = calls[name]
    act = getattr(m, "activation", None)
    forward = FORMULAS.get(type(m).__name__)
    if forward is None:
        doc = (type(m).__doc__ or "").strip().splitlines()
        forward = doc[0] if doc else type(m).__name__
    forward = forward.replace("{activation}", str(act or "identity"))
    inputs: dict[int, Any] = {}

    def keep_inputs(mod, i, o):  # the tensors this call read: where its ops start
        inputs.setdefault(id(mod), []).append(i)

    h = m.register_forward_hook(keep_inputs)
    try:
        outs = _probe(model, sample, grad=True)
    finally:
        h.remove()
    y = outs[name][0] if outs[name] else None
    ops = []
    if isinstance(y, Tensor) and y._ctx is not None:
        stop = {id(p) for p in m.parameters()}
        for got in inputs.get(id(m), []):
            stop |= {id(t) for t in _flat(got) if isinstance(t, Tensor)}
        # the rule of the op that made y comes first: the layer's local derivative
        ops = [y._ctx] + [c for c in _ops_inside(y, stop) if c is not y._ctx]
    rules = [{"op": op_label(c), "words": rule_for(c)[0], "math": rule_for(c)[1]} for c in ops]
    if not rules:
        words, math = "identity in this mode (no op recorded)", "dL/dx = g"
        rules = [{"op": "identity", "words": words, "math": math}]
    return {
        "name": name,
        "layer": m.name,
        "kind": type(m).__name__,
        "forward": forward,
        "derivative": rules[0]["math"] or rules[0]["words"],
        "rules": rules,
        "params": {k: _shape_text(p.data.shape) for k, p in m.named_parameters()},
    }


def _flat(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [a for b in x for a in _flat(b)]
    return [x]


def backward_steps(model: Module, x: Any, y: Any, loss_fn: Callable[[Tensor, Any], Tensor]) -> dict:
    """One forward and backward pass on ``(x, y)``, returned step by step in the order the
    engine takes them (reverse topological). The parameters' ``.grad`` are left as they were.
    Each step: ``id``, ``label``, ``shape``, ``grad_norm``, ``words``, ``math``, ``layer`` (the
    layer call whose output this node is, or None) and ``inputs`` (``[id, label, norm]``)."""
    params = list(model.parameters())
    saved = [p.grad for p in params]
    outs: dict[int, str] = {}

    def name_output(name: str, mod: Module, inputs: tuple, out: Any) -> None:
        if isinstance(out, Tensor):
            outs.setdefault(id(out), name)

    handles = hook_calls(model, name_output)
    try:
        loss = loss_fn(model(x), y)
        walk = explain_backward(loss, params=model)
    finally:
        for h in handles:
            h.remove()
        for p, g in zip(params, saved):
            p.grad = g
    steps = []
    for s in walk:
        n = s.node
        steps.append(
            {
                "index": s.index,
                "id": n.id,
                "label": n.label,
                "kind": n.kind,
                "shape": _shape_text(n.shape),
                "grad_norm": s.grad_norm,
                "words": s.words,
                "math": s.math,
                "layer": outs.get(id(n.tensor)),
                "inputs": [
                    [src.id, src.label, None if g is None else float(np.linalg.norm(g))]
                    for src, g in s.inputs
                ],
            }
        )
    return {"loss": float(loss.data), "steps": steps}
