"""The studio's view of a trained ``.lnn`` file through the runtime alone: no layers, no
autograd, no training code (:class:`lepton_nn.runtime.InferenceModel`).

A node is one runtime *step*: a layer, or a layer with the activation fused into it
(``mid+act`` for ``layer 'mid' (Dense) + layer 'act' (ReLU)``). Steps are run one at a time on
the sample rows, each bound for the batch on its own buffers, so every step's output can be
read (a plan reuses buffers and keeps only the last); the last one equals
``InferenceModel.forward``. The runtime keeps no gradients: the node panel shows x, y and the
step's arrays (weights as the kernel holds them), and backprop, attributions and gradients are
for a network loaded with :func:`lepton_nn.load`.

A network of several inputs (a graph model, or an ONNX file imported with several inputs)
takes its sample rows as a dict by input name or a list in input order, checked as
``InferenceModel.forward`` checks them; :func:`rows_of` holds them as one :class:`Rows`
(``len``, slices of every input at once) so the studio takes the first rows as of an array.

Same functions as :mod:`.model_view` where they apply: :func:`layer_graph`,
:func:`formula_of`, :func:`node_tensors`, :func:`feature_maps`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .rows import Rows
from .tensor_view import heat, tensor_view

__all__ = [
    "is_runtime",
    "Rows",
    "rows_of",
    "layer_graph",
    "formula_of",
    "node_tensors",
    "feature_maps",
]

NO_GRAD = "inference only: the runtime keeps no gradients (load the file with lepton_nn.load)"


def is_runtime(model: Any) -> bool:
    return hasattr(model, "network") and hasattr(model, "plan_for")


def rows_of(rm: Any, x: Any) -> Any:
    """``x`` as the studio holds it: a :class:`Rows` for a network of several inputs (from a
    dict by input name or a list in order, checked by the runtime), else ``x`` itself."""
    if x is None or len(rm.network.inputs) < 2 or isinstance(x, Rows):
        return x
    names = [n for n, _ in rm.network.inputs]
    return Rows(dict(zip(names, rm._check_many(x))))


def _items(rm: Any) -> list[tuple[str, Any, list[str], str]]:
    """``(node name, step, values read, value written)`` per step, in the order they run."""
    items, names = [], set()
    for c in rm.network.chains:
        reads = list(c.inputs)
        for k, step in enumerate(c.steps):
            out = c.out if k == len(c.steps) - 1 else f"{c.out}#{k}"
            name = _step_name(step.label) or f"step{len(items)}"
            while name in names:
                name += "'"
            names.add(name)
            items.append((name, step, reads, out))
            reads = [out]
    return items


def _step_name(label: str) -> str:
    """A step's node name from its label: the layer call (``layer 'shared' (Dense) at node
    'shared@1'``: ``shared@1``, the graph model's name of that call), the layers fused into
    it joined by ``+`` (``mid+act``), and a step split off a layer named after it
    (``layer 'scores' (Dense) softmax``: ``scores.softmax``)."""
    at = re.search(r"at node '([^']*)'", label)
    if at:
        return at.group(1)
    name = "+".join(re.findall(r"layer '([^']*)'", label))
    tail = label.rsplit(")", 1)[-1].strip() if ")" in label else ""
    return f"{name}.{tail}" if name and re.fullmatch(r"\w+", tail) else name


def _run(rm: Any, x: Any) -> dict[str, np.ndarray]:
    """Every value of the network on ``x`` (N, *input_shape): step by step, each output
    copied out of its step's own buffers."""
    from lepton_nn.runtime.graph import Arena, MergeStep
    from lepton_nn.runtime.steps_dense import _Ctx

    net = rm.network
    if len(net.inputs) > 1:
        xs = rows_of(rm, x).arrays
    else:
        xs = {net.inputs[0][0]: np.ascontiguousarray(np.asarray(x, dtype=net.dtype))}
    values = {
        name: np.ascontiguousarray(xs[name], dtype=net.dtype).reshape(len(xs[name]), *shape)
        for name, shape in net.inputs
    }
    n = len(next(iter(values.values())))
    for _, step, reads, out in _items(rm):
        ctx = _Ctx(n, 1, rm.sparse, net.dtype, pool=Arena())
        srcs = [values[r] for r in reads]
        if isinstance(step, MergeStep):
            ops, y = step.bind(srcs, [False] * len(srcs), ctx)
        else:
            ops, y = step.bind(srcs[0], False, ctx)
        for fn, args in ops:
            fn(*args)
        values[out] = np.array(y)
    return values


def _writer(rm: Any) -> dict[str, str]:
    return {out: name for name, _, _, out in _items(rm)}


def _arrays(step: Any) -> dict[str, np.ndarray]:
    """The arrays a step holds (its weights as the kernel reads them), not private copies;
    a Dense weight kept as packed panels is shown as W (K, N) (``DenseStep.weight``)."""
    out = {k: v for k, v in vars(step).items() if isinstance(v, np.ndarray) and k[0] != "_"}
    if out.pop("panels", None) is not None:
        out = {"w": step.weight(), **out}
    return out


def layer_graph(rm: Any, sample: Any) -> dict:
    values = _run(rm, sample)
    writer = _writer(rm)
    nodes = []
    for name, step, reads, out in _items(rm):
        kind = re.findall(r"\((\w+)\)", step.label)
        nodes.append(
            {
                "name": name,
                "layer": name,
                "kind": "+".join(kind) or type(step).__name__,
                "shape": "(" + ", ".join(["N", *map(str, values[out].shape[1:])]) + ")",
                "params": int(sum(a.size for a in _arrays(step).values())),
                "inputs": [writer.get(r, r) for r in reads],
            }
        )
    edges = [[i, n["name"]] for n in nodes for i in n["inputs"]]
    return {"inputs": [n for n, _ in rm.network.inputs], "nodes": nodes, "edges": edges}


def formula_of(rm: Any, name: str, sample: Any) -> dict:
    """The step's description (kernel, dtype, shapes) as its forward formula."""
    from .model_view import FORMULAS

    step = {n: s for n, s, _, _ in _items(rm)}[name]
    kinds = re.findall(r"\((\w+)\)", step.label)
    forward = "; then ".join(FORMULAS.get(k, k) for k in kinds).replace("{activation}", "f")
    return {
        "name": name,
        "layer": name,
        "kind": "+".join(kinds) or type(step).__name__,
        "forward": f"{forward}\nruntime step: {step.describe()}",
        "derivative": NO_GRAD,
        "rules": [{"op": type(step).__name__, "words": step.describe(), "math": NO_GRAD}],
        "params": {k: "(" + ", ".join(map(str, a.shape)) + ")" for k, a in _arrays(step).items()},
    }


def node_tensors(rm: Any, name: str, x: Any, y: Any = None, loss_fn: Any = None) -> dict:
    """x, y and the arrays of step ``name`` on the sample rows (KeyError for no such step)."""
    item = {n: (s, r, o) for n, s, r, o in _items(rm)}[name]
    step, reads, out = item
    values = _run(rm, x)
    return {
        "name": name,
        "loss": None,
        "objective": NO_GRAD,
        "rows": int(len(x)),
        "inputs": [tensor_view(values[r]) for r in reads],
        "output": tensor_view(values[out]),
        "grad_in": None,
        "grad_out": [],
        "weights": {k: tensor_view(a) for k, a in _arrays(step).items()},
        "weight_grads": {},
        "ops": [],
    }


def feature_maps(rm: Any, x: Any, index: int = 0, max_channels: int = 16) -> dict:
    if not 0 <= index < len(x):
        raise IndexError(f"image {index} is out of range: the sample has {len(x)} rows")
    values = _run(rm, x[index : index + 1])
    layers = []
    for name, step, _, out in _items(rm):
        v = values[out]
        if v.ndim == 4:
            layers.append(
                {
                    "name": name,
                    "kind": type(step).__name__,
                    "shape": [int(n) for n in v.shape[1:]],
                    "maps": [heat(c, 32, 32) for c in v[0][:max_channels]],
                }
            )
    image = np.zeros(0) if isinstance(x, Rows) else np.asarray(x[index], np.float64)
    shown = image if image.ndim == 3 else image[None] if image.ndim == 2 else None
    return {
        "index": index,
        "image": None if shown is None else [heat(c, 32, 32) for c in shown[:3]],
        "layers": layers,
    }
