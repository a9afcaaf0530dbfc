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
- :func:`node_tensors`: one layer call's input x, output y, incoming gradient g = dL/dy and
  outgoing gradient dL/dx = J^T g (this call's share, exact: the call run again on its own
  inputs and backpropagated from g), its weights and dL/dW, and the ops inside it.
- :func:`feature_maps`: the output channels of every layer call with (N, C, H, W) output for
  one image.
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
from .rows import Rows, model_input, n_rows
from .tensor_view import heat, tensor_view

__all__ = [
    "calls_of",
    "hook_calls",
    "layer_graph",
    "formula_of",
    "backward_steps",
    "node_tensors",
    "feature_maps",
    "FORMULAS",
]

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
    a layer called k times (shared weights) names its calls in turn. What ``fn`` returns
    (not None) replaces the output, as a forward hook's does. Returns the handles."""
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
            return fn(name, mod, inputs, out)

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
            model(model_input(x))
        else:
            with no_grad():
                model(model_input(x))
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
    """``{"inputs": [...], "nodes": [...], "edges": [[src, dst], ...]}`` for the page; each
    node's ``ops``: the op nodes inside the call (:func:`.ops_view.op_graph`)."""
    from .ops_view import op_graph

    outs = _probe(model, sample, grad=False)
    ops = op_graph(model, sample)
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
                "ops": ops.get(name, []),
            }
        )
    edges = [[i, n["name"]] for n in nodes for i in n["inputs"]]
    return {"inputs": input_names(model), "nodes": nodes, "edges": edges}


def _batch_shape(shape: tuple[int, ...]) -> str:
    """``(N, 8)``: a layer output's shape with the batch axis as N."""
    return "(" + ", ".join(["N", *(str(int(n)) for n in shape[1:])]) + ")"


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
        ops = [y._ctx] + [t._ctx for t in _op_tensors(y, stop) if t is not y]
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


def backward_steps(
    model: Module, x: Any, y: Any, loss_fn: Callable[[Tensor, Any], Tensor], ops: bool = False
) -> dict:
    """One forward and backward pass on ``(x, y)``, returned step by step in the order the
    engine takes them (reverse topological). The parameters' ``.grad`` are left as they were.
    Each step: ``id``, ``label``, ``shape``, ``grad_norm``, ``words``, ``math``, ``layer`` (the
    layer call whose output this node is, or None), ``op`` (with ``ops``: the index of the op
    node inside that call, else None) and ``inputs`` (``[id, label, norm]``).

    ``ops``: every layer call runs as its op nodes (:mod:`.ops_view`: a ``Dense`` as x W, + b
    and its activation), so the walk steps through the ops inside the layers; a step made
    inside a call but not an op node of its own (an LSTM gate's slice of z) names the call."""
    from .ops_view import expanding_hook

    params = list(model.parameters())
    saved = [p.grad for p in params]
    outs: dict[int, str] = {}
    inner: dict[int, tuple[str, int]] = {}  # tensor -> (call, op index)
    expanded: dict[str, list] = {}
    expand = expanding_hook(None, expanded)

    def name_output(name: str, mod: Module, inputs: tuple, out: Any) -> Any:
        new = expand(name, mod, inputs, out) if ops else None
        for k, op in enumerate(expanded.pop(name, [])):
            for t in op.parts:
                inner[id(t)] = (name, k)
        if ops:  # every tensor made inside the call belongs to it
            stop = {id(t) for t in _flat(inputs) if isinstance(t, Tensor)}
            stop |= {id(p) for p in mod.parameters()}
            for t in _op_tensors(new if new is not None else out, stop):
                inner.setdefault(id(t), (name, None))
        if isinstance(out, Tensor):
            outs.setdefault(id(new if new is not None else out), name)
        return new

    handles = hook_calls(model, name_output)
    try:
        loss = loss_fn(model(model_input(x)), y)
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
                "layer": outs.get(id(n.tensor), inner.get(id(n.tensor), (None,))[0]),
                "op": inner.get(id(n.tensor), (None, None))[1],
                "inputs": [
                    [src.id, src.label, None if g is None else float(np.linalg.norm(g))]
                    for src, g in s.inputs
                ],
            }
        )
    return {"loss": float(loss.data), "steps": steps}


def _detached(x: Any) -> Any:
    """The same (nested) arguments, each tensor a fresh leaf that requires grad."""
    if isinstance(x, (list, tuple)):
        return type(x)(_detached(a) for a in x)
    if isinstance(x, (Tensor, np.ndarray)):
        return Tensor(x.data if isinstance(x, Tensor) else x, requires_grad=True)
    return x


def _run_loss(model: Module, x: Any, y: Any, loss_fn: Callable | None) -> tuple[Tensor, str]:
    out = model(model_input(x))
    if y is not None and loss_fn is not None:
        return loss_fn(out, y), "the training loss"
    return out.sum(), "L = sum of the outputs (no labels)"


def node_tensors(
    model: Module, name: str, x: Any, y: Any = None, loss_fn: Callable | None = None
) -> dict:
    """One forward and backward pass on ``(x, y)`` (eval mode), read at the layer call
    ``name`` (KeyError if none). Parameters' ``.grad`` are left as they were.

    Returns ``{"loss", "objective", "inputs": [x_i views], "output": y view, "grad_in": view
    of g = dL/dy, "grad_out": [dL/dx_i views (None: the input needs no gradient)],
    "weights": {param: view}, "weight_grads": {param: view of this call's dL/dW},
    "ops": [{"op", "shape", "value_norm"}]}`` with views from :func:`tensor_view`."""
    calls = {n: m for n, m, _ in calls_of(model)}
    layer = calls[name]
    params = list(model.parameters())
    saved = [p.grad for p in params]
    seen: dict[str, Any] = {}

    def keep(call: str, mod: Module, inputs: tuple, out: Any) -> None:
        if call == name and isinstance(out, Tensor):
            seen["inputs"], seen["out"] = inputs, out
            if out.requires_grad:
                out.register_hook(lambda g: seen.__setitem__("g", np.array(g)))

    was = model.training
    model.eval()
    handles = hook_calls(model, keep)
    try:
        loss, objective = _run_loss(model, x, y, loss_fn)
        for p in params:
            p.grad = None
        if loss.requires_grad:
            loss.backward()
        out, g = seen.get("out"), seen.get("g")
        grads_out: list[Any] = []
        weight_grads: dict[str, Any] = {}
        if out is not None and g is not None:  # this call's share: its VJP, run on its own
            for p in params:
                p.grad = None
            args = _detached(seen["inputs"])
            again = layer(*args)
            inside = _op_tensors(again, {id(t) for t in _flat(args)})
            norms: dict[int, float] = {}
            for t in inside:
                t.register_hook(lambda gt, k=id(t): norms.__setitem__(k, _norm(gt)))
            again.backward(g)
            grads_out = [
                None if t.grad is None else tensor_view(t.grad)
                for t in _flat(args)
                if isinstance(t, Tensor)
            ]
            weight_grads = {
                k: tensor_view(p.grad) for k, p in layer.named_parameters() if p.grad is not None
            }
            ops = [
                {
                    "op": op_label(t._ctx),
                    "shape": _shape_text(t.shape),
                    "value_norm": _norm(t.data),
                    "grad_norm": norms.get(id(t)),
                }
                for t in inside
            ]
        else:
            ops = []
    finally:
        for h in handles:
            h.remove()
        model.train(was)
        for p, gr in zip(params, saved):
            p.grad = gr
    inputs = [t for t in _flat(seen.get("inputs", ())) if isinstance(t, (Tensor, np.ndarray))]
    return {
        "name": name,
        "loss": float(loss.data),
        "objective": objective,
        "rows": n_rows(x),
        "inputs": [tensor_view(getattr(t, "data", t)) for t in inputs],
        "output": None if out is None else tensor_view(out.data),
        "grad_in": None if g is None else tensor_view(g),
        "grad_out": grads_out,
        "weights": {k: tensor_view(p.data) for k, p in layer.named_parameters()},
        "weight_grads": weight_grads,
        "ops": ops,
    }


def _norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64).reshape(-1)))


def _op_tensors(y: Tensor, stop: set[int]) -> list[Tensor]:
    """The op outputs between a call's inputs (ids in ``stop``) and its output ``y``, each
    after the ops it reads (creation order)."""
    found, todo = {}, [y]
    while todo:
        t = todo.pop()
        if id(t) in found or id(t) in stop or t._ctx is None:
            continue
        found[id(t)] = t
        todo.extend(p for p in t._ctx.parents if isinstance(p, Tensor))
    return sorted(found.values(), key=lambda t: t._seq)


def feature_maps(model: Module, x: Any, index: int = 0, max_channels: int = 16) -> dict:
    """For image ``index`` of ``x`` (N, C, H, W): each layer call whose output is 4-D, its
    first ``max_channels`` channels as heat maps (at most 32 x 32 cells each)."""
    if not 0 <= index < len(x):
        raise IndexError(f"image {index} is out of range: the sample has {len(x)} rows")
    outs = _probe(model, x[index : index + 1], grad=False)
    image = np.zeros(0) if isinstance(x, Rows) else np.asarray(x[index], np.float64)
    layers = []
    for name, m, _ in calls_of(model):
        y = outs[name][0] if outs[name] else None
        if not isinstance(y, Tensor) or y.ndim != 4:
            continue
        maps = y.data[0]
        layers.append(
            {
                "name": name,
                "kind": type(m).__name__,
                "shape": [int(n) for n in maps.shape],
                "maps": [heat(c, 32, 32) for c in maps[:max_channels]],
            }
        )
    shown = image if image.ndim == 3 else image[None] if image.ndim == 2 else None
    return {
        "index": index,
        "image": None if shown is None else [heat(c, 32, 32) for c in shown[:3]],
        "layers": layers,
    }
