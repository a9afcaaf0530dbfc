"""ONNX graph -> the ``.lnn`` manifest of a ``Sequential`` network, plus its arrays.

``onnx_to_manifest(source) -> (manifest, arrays, report)``: read and check the file
(:mod:`.reader`), fold its shape subgraphs (:mod:`.fold`), list every op type no mapping
knows (one error naming them all, before anything is built), then walk the chain of nodes
from the graph's input to its output, each node mapped onto lepton_nn layers by
:data:`HANDLERS` (:mod:`.mapping`, :mod:`.recurrent`) while :mod:`.layout` keeps track of
how the ONNX tensor's axes relate to the network's own. The result is exactly what
``lepton_nn.save`` writes for such a network: ``lepton_nn.load`` path and the NumPy-only
runtime both read it. Imports NumPy, ``onnx`` and this room only (never ``lepton_nn.nn``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_nn.errors import ModelFormatError

from .fold import Folded, fold
from .layout import Atoms, Axes
from .reader import read_onnx

__all__ = ["Layer", "Walk", "onnx_to_manifest", "supported_ops"]

_FLOAT = {1: "float32", 11: "float64"}
# layers whose constructor takes a dtype
_WITH_DTYPE = (
    "Dense",
    "Conv2D",
    "Conv1D",
    "BatchNorm",
    "LayerNorm",
    "LSTM",
    "GRU",
    "SimpleRNN",
    "Embedding",
)


@dataclass
class Layer:
    """One lepton_nn layer: its class name, config and parameters by short name."""

    cls: str
    config: dict
    params: dict[str, np.ndarray] = field(default_factory=dict)


class Walk:
    """The state of the walk along the chain: the current ONNX tensor and its axes, the
    layers so far and the axes of their output (``canon``)."""

    def __init__(self, model, folded: Folded, dtype: np.dtype) -> None:
        self.model, self.folded, self.dtype = model, folded, dtype
        self.atoms = Atoms()
        self.layers: list[Layer] = []
        self.cur = ""
        self.axes: Axes = []
        self.canon: Axes = []
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13
        )
        self.ops: Counter = Counter()

    # -- helpers for the handlers --------------------------------------------------------
    def const(self, name: str, node, what: str) -> np.ndarray:
        value = self.folded.const(name) if name else None
        if value is None:
            raise ModelFormatError(f"{_label(node)}: {what} must be a constant")
        return value

    def optional(self, node, i: int) -> str:
        return node.input[i] if len(node.input) > i else ""

    def add(self, layer: Layer, canon: Axes | None = None) -> None:
        layer.config.setdefault("name", f"{layer.cls.lower()}_{len(self.layers)}")
        layer.params = {k: np.ascontiguousarray(v, dtype=self._dt(v)) for k, v in
                        layer.params.items()}  # fmt: skip
        self.layers.append(layer)
        if canon is not None:
            self.canon = canon

    def _dt(self, v: np.ndarray) -> np.dtype:
        return self.dtype if v.dtype.kind == "f" else v.dtype

    def same(self, axes: Axes, want: Axes) -> bool:
        return self.atoms.normal(axes) == self.atoms.normal(want)

    def require(self, node, want: Axes, rank: int | None = None) -> None:
        """The current tensor must hold the network's output in the layout ``want``."""
        if not self.same(self.axes, want) or (rank is not None and len(self.canon) != rank):
            raise ModelFormatError(
                f"{_label(node)}: its input is laid out {self._show(self.axes)}, the converted "
                f"network holds {self._show(self.canon)}; this arrangement is not supported"
            )

    def flat(self, node) -> None:
        """Make the network's output (N, features) (a Flatten layer if needed) and require
        the ONNX tensor to be the same (N, features)."""
        if len(self.canon) > 2:
            atoms = tuple(a for ax in self.canon[1:] for a in ax)
            self.add(Layer("Flatten", {}), [("N",), atoms])
        self.require(node, self.canon, 2)
        if len(self.axes) != 2:
            raise ModelFormatError(f"{_label(node)}: needs a 2-D input, got {len(self.axes)}-D")

    def _show(self, axes: Axes) -> str:
        return "(" + ", ".join("N" if ax == ("N",) else str(self.atoms.size(ax))
                               for ax in axes) + ")"  # fmt: skip

    def width(self) -> list[int]:
        return [self.atoms.size(ax) for ax in self.canon[1:]]


def _label(node) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def supported_ops() -> list[str]:
    from .mapping import HANDLERS

    return sorted(HANDLERS)


def onnx_to_manifest(source: Any) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Convert an ONNX model (path, bytes or ModelProto) to a ``kind: module`` manifest,
    its arrays (``params/<name>``) and a report ``{"ops": {op: count}, "layers": [...]}``."""
    from .mapping import HANDLERS, gather_concat
    from .patterns import ISLAND_OPS, elementwise_island

    model, arrays = read_onnx(source)
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    folded = fold(model, arrays)
    live = [n for n in graph.node if n.op_type != "Constant" and n.output[0] not in folded.known]
    known = set(HANDLERS) | ISLAND_OPS
    unsupported = Counter(n.op_type for n in live if n.op_type not in known)
    if unsupported:
        names: dict[str, list[str]] = {}
        for n in live:
            if n.op_type in unsupported:
                names.setdefault(n.op_type, []).append(n.name or n.output[0])
        lines = [f"  {op} x{c}: {', '.join(names[op][:5])}{' ...' if c > 5 else ''}"
                 for op, c in sorted(unsupported.items())]  # fmt: skip
        raise ModelFormatError(
            "the ONNX model uses operators lepton_nn cannot convert:\n" + "\n".join(lines)
        )
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelFormatError(
            f"the ONNX model has {len(inputs)} inputs and {len(graph.output)} outputs; "
            "only one input and one output (a chain of layers) can be converted yet"
        )
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
        raise ModelFormatError(
            f"input {inp.name!r}: shape {dims} must be (batch, known sizes...) to convert"
        )
    dtype = np.dtype(_FLOAT.get(tt.elem_type, "float32"))
    walk = Walk(model, folded, dtype)
    walk.cur = inp.name
    walk.axes = [("N",)] + [(walk.atoms.new(d, "in"),) for d in dims[1:]]
    walk.canon = list(walk.axes)
    in_shape = [None, *dims[1:]]

    consumers: dict[str, list] = {}
    for n in live:
        for i in dict.fromkeys(n.input):
            consumers.setdefault(i, []).append(n)
    done: set[int] = set()
    target = graph.output[0].name
    while walk.cur != target:
        nodes = consumers.get(walk.cur, [])
        if not nodes:
            raise ModelFormatError(f"tensor {walk.cur!r} leads nowhere (the output is {target!r})")
        if len(nodes) == 1 and nodes[0].op_type in HANDLERS:
            node = nodes[0]
            walk.ops[node.op_type] += 1
            HANDLERS[node.op_type](walk, node)
            done.add(id(node))
        else:
            island = elementwise_island(walk, live)
            if island is None and len(nodes) == 1:
                raise ModelFormatError(f"{_label(nodes[0])}: cannot be converted here")
            for n in island if island is not None else gather_concat(walk, nodes):
                walk.ops[n.op_type] += 1
                done.add(id(n))
    left = [n for n in live if id(n) not in done]
    if left:
        names_left = ", ".join(f"{n.name or n.output[0]} ({n.op_type})" for n in left[:5])
        raise ModelFormatError(
            "the ONNX graph is not a chain of layers (branches or several paths: "
            f"{names_left}); graph models cannot be converted yet"
        )
    walk.require(graph.output[0], walk.canon)
    manifest, params = _manifest(walk, in_shape)
    report = {"ops": dict(walk.ops), "layers": [lay.cls for lay in walk.layers]}
    return manifest, params, report


def _fuse_activations(layers: list[Layer]) -> list[Layer]:
    """Dense/Conv2D with no activation, then an Activation layer: one layer."""
    out: list[Layer] = []
    for lay in layers:
        prev = out[-1] if out else None
        if (
            lay.cls == "Activation"
            and prev is not None
            and prev.cls in ("Dense", "Conv2D", "Conv1D")
            and prev.config.get("activation") == "identity"
            and (prev.cls == "Dense" or lay.config["activation"] not in ("softmax", "log_softmax"))
        ):
            prev.config["activation"] = lay.config["activation"]
            continue
        out.append(lay)
    return out


def _manifest(walk: Walk, in_shape: list) -> tuple[dict, dict[str, np.ndarray]]:
    layers = _fuse_activations(walk.layers)
    configs, arrays, names = [], {}, []
    for i, lay in enumerate(layers):
        config = {k: v for k, v in lay.config.items() if not k.startswith("_")}
        if lay.cls in _WITH_DTYPE:
            config["dtype"] = walk.dtype.name
        configs.append({"class": lay.cls, "config": config})
        for k, v in lay.params.items():
            names.append(f"layers.{i}.{k}")
            v = np.asarray(v)
            arrays[f"params/layers.{i}.{k}"] = np.ascontiguousarray(v, walk._dt(v))
    section = {
        "architecture": {"class": "Sequential", "config": {"name": "onnx", "layers": configs}},
        "input_shape": in_shape,
        "output_shape": [None, *walk.width()],
        "dtype": walk.dtype.name,
        "params": names,
    }
    return {"kind": "module", "model": section}, arrays
