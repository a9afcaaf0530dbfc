"""ONNX graph -> the ``.lnn`` manifest of a lepton_nn network (``Sequential`` or graph
``Model``), plus its arrays.

``onnx_to_manifest(source) -> (manifest, arrays, report)``: read and check the file
(:mod:`.reader`), fold its shape subgraphs (:mod:`.fold`), list every op type no mapping
knows (one error naming them all, before anything is built), then visit the nodes in
topological order. Each node is mapped onto lepton_nn layers by :data:`HANDLERS`
(:mod:`.mapping`, :mod:`.recurrent`; several-input nodes onto merge layers) while
:mod:`.layout` keeps track of how each ONNX tensor's axes relate to the network's own
value; activations written as several nodes are recognized by :mod:`.patterns`. A graph that
is a chain becomes a ``Sequential``, any other a graph ``Model`` (:mod:`lepton_nn.nn.graph`'s
manifest form). The result is exactly what ``lepton_nn.save`` writes for such a network:
``lepton_nn.load``'s path and the NumPy-only runtime both read it. Imports NumPy, ``onnx``
and this room only (never ``lepton_nn.nn``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_nn.errors import ModelFormatError
from lepton_nn.runtime.compression import compression_section, int8_entry

from .fold import Folded, fold
from .layout import Atoms, Axes
from .reader import read_onnx

__all__ = ["Layer", "Value", "Walk", "onnx_to_manifest", "supported_ops"]

_FLOAT = {1: "float32", 11: "float64"}
_STANDARD = ("", "ai.onnx", "ai.onnx.ml")
# layers whose constructor takes a dtype
_WITH_DTYPE = ("Dense", "Conv2D", "Conv1D", "BatchNorm", "LayerNorm", "LSTM", "GRU", "SimpleRNN",
               "Embedding")  # fmt: skip


@dataclass
class Layer:
    """One lepton_nn layer: its class name, config and parameters by short name."""

    cls: str
    config: dict
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Value:
    """What an ONNX tensor holds: the network value ``src`` (a node or input name) laid out
    as ``axes`` (the value's own layout is ``canon``); ``fusable``: the layer computing
    ``src`` may still be changed (nothing else reads what it computes)."""

    axes: Axes
    canon: Axes
    src: str
    fusable: bool


class Walk:
    """The state of the visit: the ONNX tensor being read (``cur``, with ``axes``, ``canon``
    and ``src`` as in :class:`Value`), the layers and graph nodes so far."""

    def __init__(self, model, folded: Folded, dtype: np.dtype) -> None:
        self.model, self.folded, self.dtype = model, folded, dtype
        self.atoms = Atoms()
        self.layers: list[Layer] = []
        self.nodes: list[dict] = []  # {"name", "layer" (index), "inputs"}
        self.inputs: dict[str, str] = {}  # model input name -> its ONNX tensor
        self.values: dict[str, Value] = {}
        self.cur, self.src, self.fusable = "", "", False
        self.axes: Axes = []
        self.canon: Axes = []
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13
        )
        self.ops: Counter = Counter()
        self.static_batch: int | None = None  # the batch size a file was exported at, if fixed
        self.lengths_input: str | None = None  # the graph input read as sequence_lens
        self.quantized: set[str] = set()  # integer tensors of converted QuantizeLinear nodes
        self.int8 = True  # int8 weights after a quantize-dequantize layer: the int8 kernels

    def enter(self, tensor: str, only_reader: bool) -> None:
        v = self.values[tensor]
        self.cur, self.axes, self.canon, self.src = tensor, v.axes, v.canon, v.src
        self.fusable = v.fusable and only_reader

    def leave(self) -> None:
        self.values[self.cur] = Value(self.axes, self.canon, self.src, self.fusable)

    # -- helpers for the handlers --------------------------------------------------------
    def const(self, name: str, node, what: str) -> np.ndarray:
        value = self.folded.const(name) if name else None
        if value is None:
            raise ModelFormatError(f"{_label(node)}: {what} must be a constant")
        return value

    def optional(self, node, i: int) -> str:
        return node.input[i] if len(node.input) > i else ""

    def last(self) -> Layer | None:
        """The layer computing the current value, when it may still be changed."""
        if not self.fusable or self.src in self.inputs:
            return None
        return self.layers[next(n["layer"] for n in self.nodes if n["name"] == self.src)]

    def at_input(self) -> bool:
        return self.src in self.inputs

    def add(self, layer: Layer, canon: Axes | None = None, inputs: list[str] | None = None):
        name = f"{layer.cls.lower()}_{len(self.layers)}"
        layer.config.setdefault("name", name)
        layer.params = {k: np.ascontiguousarray(v, dtype=self._dt(v)) for k, v in
                        layer.params.items()}  # fmt: skip
        self.nodes.append({"name": name, "layer": len(self.layers),
                           "inputs": inputs or [self.src]})  # fmt: skip
        self.layers.append(layer)
        self.src, self.fusable = name, True
        if canon is not None:
            self.canon = canon

    def _dt(self, v: np.ndarray) -> np.dtype:
        return self.dtype if v.dtype.kind == "f" else v.dtype

    def same(self, axes: Axes, want: Axes) -> bool:
        return self.atoms.normal(axes) == self.atoms.normal(want)

    def require(self, node, want: Axes, rank: int | None = None) -> None:
        """The current tensor must hold the network's value in the layout ``want``; when
        ``want`` is the value's own layout and the tensor holds its axes in another order
        (channels-last images transposed for a Conv), a Permute layer first."""
        if want is self.canon and not self.same(self.axes, want):
            self._permute([self.atoms.real(ax) for ax in self.axes])
            want = self.canon
        if not self.same(self.axes, want) or (rank is not None and len(self.canon) != rank):
            raise ModelFormatError(
                f"{_label(node)}: its input is laid out {self._show(self.axes)}, the converted "
                f"network holds {self._show(self.canon)}; this arrangement is not supported"
            )

    def flat(self, node) -> None:
        """Make the network's value (N, features) (a Flatten layer if needed) and require
        the ONNX tensor to be the same (N, features)."""
        if len(self.canon) > 2:
            flat = tuple(a for ax in self.axes[1:] for a in self.atoms.real(ax))
            order, rest = [], [self.atoms.real(ax) for ax in self.canon[1:]]
            while rest and flat:  # the value's axes in the order the tensor holds them
                ax = next((ax for ax in rest if ax and flat[: len(ax)] == ax), None)
                if ax is None:
                    break
                order.append(ax)
                rest.remove(ax)
                flat = flat[len(ax) :]
            if not flat and all(not ax for ax in rest):
                self._permute([self.canon[0], *order, *rest])
            atoms = tuple(a for ax in self.canon[1:] for a in ax)
            self.add(Layer("Flatten", {}), [("N",), atoms])
        self.require(node, self.canon, 2)
        if len(self.axes) != 2:
            raise ModelFormatError(f"{_label(node)}: needs a 2-D input, got {len(self.axes)}-D")

    def _permute(self, axes: Axes) -> None:
        """A Permute layer giving the value its axes in the order of ``axes``, when that is
        a reordering of the value's axes after the batch (each axis kept whole)."""
        canon = [self.atoms.real(ax) for ax in self.canon]
        want = [self.atoms.real(ax) for ax in axes]
        if (
            len(want) != len(canon)
            or canon[0] != ("N",)
            or want[0] != ("N",)
            or sorted(want) != sorted(canon)
            or len(set(canon)) != len(canon)
            or want == canon
        ):
            return
        dims = [canon.index(ax) for ax in want[1:]]
        self.add(Layer("Permute", {"dims": dims}), [self.canon[i] for i in [0, *dims]])

    def _show(self, axes: Axes) -> str:
        return "(" + ", ".join("N" if ax == ("N",) else str(self.atoms.size(ax))
                               for ax in axes) + ")"  # fmt: skip

    def width(self, canon: Axes | None = None) -> list[int]:
        return [self.atoms.size(ax) for ax in (canon or self.canon)[1:]]


def _label(node) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def supported_ops() -> list[str]:
    from .mapping import HANDLERS

    return sorted(HANDLERS)


def _op(node) -> str:
    """The op type, with its domain when that is not a standard one (``com.microsoft.X``)."""
    return node.op_type if node.domain in _STANDARD else f"{node.domain}.{node.op_type}"


def _check_ops(live: list, known: set) -> None:
    unsupported = Counter(_op(n) for n in live if _op(n) not in known)
    if not unsupported:
        return
    names: dict[str, list[str]] = {}
    for n in live:
        if _op(n) in unsupported:
            names.setdefault(_op(n), []).append(n.name or n.output[0])
    lines = [f"  {op} x{c}: {', '.join(names[op][:5])}{' ...' if c > 5 else ''}"
             for op, c in sorted(unsupported.items())]  # fmt: skip
    raise ModelFormatError(
        "the ONNX model uses operators lepton_nn cannot convert:\n" + "\n".join(lines)
    )


def onnx_to_manifest(source: Any, int8: bool = True) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Convert an ONNX model (path, bytes or ModelProto) to a ``kind: module`` manifest,
    its arrays (``params/<name>``) and a report ``{"ops": {op: count}, "layers": [...]}``.

    ``int8``: a QDQ file's Dense layers on int8 weights after their input's quantization are
    written as the runtime's int8 Dense (a ``"compressed"`` manifest); False: float layers
    and quantize-dequantize layers (what :func:`lepton_nn.onnx.load` builds)."""
    from .mapping import HANDLERS, MERGES, gather_concat, merge
    from .patterns import ISLAND_OPS, elementwise_island
    from .pipeline import is_tabular, tabular_manifest
    from .qoperator import needs_rewrite, qoperator_to_qdq
    from .recurrent import direction_concat
    from .views import ID_OPS, index_island

    model, arrays = read_onnx(source)
    if is_tabular(model):  # raw columns in: the preprocessing too (a "tabular" manifest)
        _check_ops([n for n in model.graph.node if n.domain not in _STANDARD], set())
        return tabular_manifest(model, arrays)
    source = list(model.graph.node)
    rewritten = needs_rewrite(model)
    if rewritten:  # QOperator: each QLinear op as DequantizeLinear -> Op -> Quantize
        model, arrays = qoperator_to_qdq(model, arrays)
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    folded = fold(model, arrays)
    live = [n for n in graph.node if n.op_type != "Constant" and n.output[0] not in folded.known]
    outputs = [o for o in graph.output if o.type.tensor_type.elem_type in (1, 10, 11)]
    dropped = [o.name for o in graph.output if o not in outputs]
    if not outputs:
        raise ModelFormatError("the ONNX model has no floating-point output to convert")
    if dropped:  # labels (an argmax of the probabilities): keep what the float outputs need
        live = _ancestors(live, {o.name for o in outputs})
    ids = {i.name for i in graph.input if i.type.tensor_type.elem_type in (2, 3, 5, 6, 7)}
    for n in live:  # integer ops on token ids (before an embedding): see views.index_island
        if n.op_type in ID_OPS and any(i in ids for i in n.input):
            ids.update(n.output)
    _check_ops([n for n in live if not (n.op_type in ID_OPS and n.output[0] in ids)],
               set(HANDLERS) | ISLAND_OPS | set(MERGES))  # fmt: skip
    dtypes = {i.type.tensor_type.elem_type for i in graph.input if i.name not in inits}
    walk = Walk(model, folded, np.dtype(_FLOAT.get(min(dtypes & {1, 11}, default=1))))
    walk.int8 = int8
    lens = [i.name for i in graph.input if i.name not in inits and _only_lengths(i.name, live)]
    if len(lens) > 1:
        raise ModelFormatError(f"inputs {lens}: several sets of sequence lengths")
    walk.lengths_input = lens[0] if lens else None
    specs = [_input(walk, i) for i in graph.input if i.name not in inits and i.name not in lens]
    outs = {o.name for o in outputs}
    readers: Counter = Counter()
    for n in live:
        readers.update(list(dict.fromkeys(n.input)))
    readers.update(outs)
    done: set[int] = set()
    for node in live:
        if id(node) in done:
            continue
        dyn = [i for i in dict.fromkeys(node.input) if i in walk.values]
        if not dyn:
            raise ModelFormatError(f"{_label(node)}: reads no input of the model")
        if len(dyn) > 1 and node.op_type in MERGES:
            merge(walk, node, dyn)
            done.add(id(node))
            walk.ops[node.op_type] += 1
            continue
        if len(dyn) > 1:
            raise ModelFormatError(f"{_label(node)}: reads several values of the model")
        walk.enter(dyn[0], readers[dyn[0]] == 1)
        pending = [n for n in live if id(n) not in done and dyn[0] in n.input]
        group = None
        if len(pending) > 1 or node.op_type not in HANDLERS:
            group = (index_island(walk, live) or elementwise_island(walk, live)
                     or gather_concat(walk, pending)
                     or direction_concat(walk, pending))  # fmt: skip
        if group is None:
            if node.op_type not in HANDLERS:
                raise ModelFormatError(f"{_label(node)}: cannot be converted here")
            group = HANDLERS[node.op_type](walk, node) or [node]  # a handler may take more
        for n in group:
            done.add(id(n))
            walk.ops[n.op_type] += 1
        walk.leave()
    manifest, arrays, report = _result(walk, outputs, specs)
    report["dropped_outputs"] = dropped
    if rewritten:  # the file's own operators (QLinearConv, ...), not their QDQ form
        report["ops"] = dict(Counter(_op(n) for n in source if n.op_type != "Constant"
                                     and n.output[0] not in folded.known))  # fmt: skip
    report["lengths_input"] = walk.lengths_input
    if walk.lengths_input:  # served as predict(x, lengths=...)
        manifest["model"]["lengths_input"] = walk.lengths_input
    return manifest, arrays, report


def _only_lengths(name: str, live: list) -> bool:
    """A graph input read only as the ``sequence_lens`` of recurrent nodes."""
    uses = [(n, i) for n in live for i, x in enumerate(n.input) if x == name]
    return bool(uses) and all(n.op_type in ("LSTM", "GRU", "RNN") and i == 4 for n, i in uses)


def _ancestors(live: list, targets: set[str]) -> list:
    """The nodes of ``live`` that the tensors ``targets`` depend on, in order."""
    need, keep = set(targets), set()
    for n in reversed(live):
        if any(o in need for o in n.output):
            keep.add(id(n))
            need.update(n.input)
    return [n for n in live if id(n) in keep]


def _input(walk: Walk, inp) -> dict:
    """Register a graph input (batch first, known sizes) as a model input."""
    tt = inp.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
        raise ModelFormatError(
            f"input {inp.name!r}: shape {dims} must be (batch, known sizes...) to convert"
        )
    first = tt.shape.dim[0] if len(tt.shape.dim) else None
    if first is not None and first.HasField("dim_value") and not walk.inputs:
        walk.static_batch = first.dim_value
    name = re.sub(r"[^A-Za-z0-9_]", "_", inp.name) or "input"
    name = name if name not in walk.inputs else f"{name}_{len(walk.inputs)}"
    walk.inputs[name] = inp.name
    axes = [("N",)] + [(walk.atoms.new(d, "in"),) for d in dims[1:]]
    walk.values[inp.name] = Value(axes, list(axes), name, False)
    dtype = walk.dtype.name if tt.elem_type in (1, 10, 11) else "int64"
    return {"name": name, "shape": [None, *dims[1:]], "dtype": dtype}


def _result(walk: Walk, graph_outputs: list, specs: list[dict]) -> tuple[dict, dict, dict]:
    outputs = []
    for o in graph_outputs:
        v = walk.values.get(o.name)
        if v is None or v.src in walk.inputs:
            raise ModelFormatError(f"output {o.name!r} is not computed by any converted layer")
        if not walk.same(v.axes, v.canon):
            raise ModelFormatError(f"output {o.name!r}: its layout differs from the network's")
        outputs.append((v.src, v.canon))
    out_names = [src for src, _ in outputs]
    _fuse_activations(walk, out_names)
    int8 = {}
    if walk.int8:
        from .qdq import int8_dense_pass

        int8 = int8_dense_pass(walk, out_names)
    used = {i for n in walk.nodes for i in n["inputs"]} | set(out_names)
    unread = [s["name"] for s in specs if s["name"] not in used]
    if unread:
        raise ModelFormatError(f"the ONNX model's inputs {unread} are not used")
    chain = len(specs) == 1 and len(outputs) == 1 and all(
        n["inputs"] == [walk.nodes[i - 1]["name"] if i else specs[0]["name"]]
        for i, n in enumerate(walk.nodes)
    ) and out_names[0] == walk.nodes[-1]["name"]  # fmt: skip
    order = [n["layer"] for n in walk.nodes]
    configs, arrays, names, entries = [], {}, [], []
    for i, idx in enumerate(order):
        lay = walk.layers[idx]
        config = {k: v for k, v in lay.config.items() if not k.startswith("_")}
        if lay.cls in _WITH_DTYPE:
            config["dtype"] = walk.dtype.name
        configs.append({"class": lay.cls, "config": config})
        q8 = int8.get(walk.nodes[i]["name"])
        if q8 is not None:  # served by the int8 kernels (see .qdq.int8_dense_pass)
            entry, arrs = int8_entry(f"layers.{i}", config["name"], f"layers.{i}.weight",
                                     q8["q"], q8["scale"], q8["activations"],
                                     shape=q8.get("shape"))  # fmt: skip
            entries.append(entry)
            arrays.update(arrs)
        for k, v in lay.params.items():
            if q8 is not None and k == "weight":
                continue
            v = np.asarray(v)
            names.append(f"layers.{i}.{k}")
            arrays[f"params/layers.{i}.{k}"] = np.ascontiguousarray(v, walk._dt(v))
    if chain:
        arch = {"class": "Sequential", "config": {"name": "onnx", "layers": configs}}
    else:
        nodes = [{"name": n["name"], "layer": n["name"], "inputs": n["inputs"]}
                 for n in walk.nodes]  # fmt: skip
        arch = {"class": "Model", "config": {"name": "onnx", "inputs": specs, "layers": configs,
                                             "nodes": nodes,
                                             "outputs": out_names}}  # fmt: skip
    section = {
        "architecture": arch,
        "input_shape": specs[0]["shape"] if len(specs) == 1 else None,
        "output_shape": [None, *walk.width(outputs[0][1])] if len(outputs) == 1 else None,
        "dtype": walk.dtype.name,
        "params": names,
    }
    report = {"ops": dict(walk.ops), "layers": [walk.layers[i].cls for i in order],
              "int8_layers": len(entries)}  # fmt: skip
    if entries:
        section["compression"] = compression_section(entries)
        return {"kind": "compressed", "model": section}, arrays, report
    return {"kind": "module", "model": section}, arrays, report


def _fuse_activations(walk: Walk, outputs: list[str]) -> None:
    """Dense/Conv with no activation, then an Activation layer that alone reads it: one
    layer (the Activation node removed, its readers reading the Dense/Conv node)."""
    readers = Counter(i for n in walk.nodes for i in n["inputs"]) + Counter(outputs)
    by_name = {n["name"]: n for n in walk.nodes}
    for n in list(walk.nodes):
        act = walk.layers[n["layer"]]
        prev = by_name.get(n["inputs"][0])
        if act.cls != "Activation" or prev is None or readers[prev["name"]] != 1:
            continue
        lay = walk.layers[prev["layer"]]
        soft = act.config["activation"] in ("softmax", "log_softmax")
        if lay.cls not in ("Dense", "Conv2D", "Conv1D") or lay.config["activation"] != "identity":
            continue
        if soft and lay.cls != "Dense":
            continue
        lay.config["activation"] = act.config["activation"]
        walk.nodes.remove(n)
        for m in walk.nodes:
            m["inputs"] = [prev["name"] if i == n["name"] else i for i in m["inputs"]]
        outputs[:] = [prev["name"] if o == n["name"] else o for o in outputs]
        by_name.pop(n["name"])
