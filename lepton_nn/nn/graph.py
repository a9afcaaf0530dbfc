"""Graph (functional) models: layers called on symbolic inputs and joined into a DAG.

::

    x = nn.Input((8,), name="x")
    h = nn.Dense(16, "relu")(x)
    h = nn.Add()([h, nn.Dense(16)(h)])           # a skip connection
    model = nn.Model(x, nn.Dense(1)(h))          # or Model([x1, x2], [y1, y2])

Calling a layer on a :class:`Symbol` runs it once on a zero sample (eval mode, no gradient)
to build its weights and learn its output shape, and returns a new symbol recording the call;
calling the same layer object again shares its weights. ``Model(inputs, outputs)`` walks back
from the outputs, orders the calls topologically and refuses graphs it cannot run (an output
reached from an input that is not among ``inputs``, an input no output reads). A cycle cannot
be built: a call only ever reads symbols that exist already. ``model(x)`` takes one array, a
list in the order of ``inputs`` or a dict by input name; it returns one tensor, or a list in
the order of ``outputs``.

Manifest form (``layer_to_config(model)``; what ``lepton_nn.save`` writes under
``model.architecture``, and what the ONNX importer writes directly)::

    {"class": "Model",
     "config": {
       "name": "model",
       "inputs":  [{"name": "x", "shape": [null, 8], "dtype": "float32"}, ...],
       "layers":  [{"class": "Dense", "config": {"name": "dense", ...}}, ...],
       "nodes":   [{"name": "dense",   "layer": "dense", "inputs": ["x"]},
                   {"name": "dense_1", "layer": "dense_1", "inputs": ["dense"]},
                   {"name": "add",     "layer": "add", "inputs": ["dense", "dense_1"]},
                   {"name": "dense@1", "layer": "dense", "inputs": ["add"]}, ...],
       "outputs": ["add", ...]}}

- ``inputs``: the model's inputs in call order, each with its batch shape (``null`` batch
  axis first) and dtype (``int64`` for token ids read by an Embedding).
- ``layers``: every layer object once, in this order; layer names are unique within the model
  and the parameters of layer ``i`` are stored as ``layers.<i>.<param>`` (``layers.0.weight``),
  as in ``Sequential``.
- ``nodes``: one per call, in topological order (a node reads only inputs and earlier nodes).
  ``layer`` names the layer it calls (a layer named by several nodes shares its weights);
  ``inputs`` names what it reads: exactly one name for an ordinary layer, two or more for a
  merge layer (:mod:`.merge`), which receives them as a list in this order. Node and input
  names share one namespace and are unique; the first call of a layer is named after it, the
  k-th further one ``<layer>@<k>``.
- ``outputs``: the node names the model returns, in order.

The section around it (:mod:`lepton_nn.io`) keeps ``input_shape`` / ``output_shape`` when the
model has one input / output (``null`` otherwise); the runtime plans the same DAG
(:mod:`lepton_nn.runtime.plan`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..autograd import Tensor, no_grad
from ..errors import LeptonError, ModelFormatError
from .layers import _plain
from .merge import Merge
from .module import Module, SymbolicBase, WeightsDtype

__all__ = ["Input", "Model", "Symbol"]

_input_names = itertools.count()


class Symbol(SymbolicBase):
    """A symbolic tensor: an input of a graph, or the output of one layer call on symbols.

    ``shape``: the batch shape, ``(None, *per_sample)``; ``layer`` is None for an input.
    """

    __slots__ = ("name", "shape", "dtype", "layer", "inputs")

    def __init__(self, name: str, shape: tuple, dtype, layer=None, inputs=()):
        self.name, self.shape, self.dtype = name, tuple(shape), np.dtype(dtype)
        self.layer: Module | None = layer
        self.inputs: tuple[Symbol, ...] = tuple(inputs)

    def __repr__(self) -> str:
        made = f"input, {self.dtype}" if self.layer is None else f"from {self.layer.name!r}"
        return f"Symbol({self.name!r}, shape={self.shape}, {made})"


def Input(shape, name: str | None = None, dtype="float32") -> Symbol:  # noqa: N802 (Keras)
    """A symbolic model input of per-sample ``shape`` (an int or a tuple, no batch axis)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(f"Input shape must be positive ints (no batch axis), got {shape}")
    if name is None:
        n = next(_input_names)
        name = "input" if n == 0 else f"input_{n}"
    return Symbol(str(name), (None, *map(int, shape)), dtype)


def is_symbolic(x: Any) -> bool:
    """True for a Symbol or a non-empty list/tuple of them (what a layer records instead of
    computing)."""
    if isinstance(x, Symbol):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(v, Symbol) for v in x)


def record_call(layer: Module, x: Any, kwargs: dict, name: str | None = None) -> Symbol:
    """``layer(x)`` on symbols: build the layer on a zero sample, return the output symbol."""
    if kwargs:
        raise LeptonError(
            f"layer '{layer.name}': keyword arguments {sorted(kwargs)} cannot be recorded in "
            "a graph model"
        )
    many = isinstance(x, (list, tuple))
    if many != isinstance(layer, Merge):
        raise LeptonError(
            f"layer '{layer.name}' ({type(layer).__name__}) takes "
            + ("a list of two or more inputs" if isinstance(layer, Merge) else "one input")
        )
    ins = tuple(x) if many else (x,)
    zeros = [Tensor(np.zeros((1, *s.shape[1:]), dtype=s.dtype)) for s in ins]
    modes = [(m, m.training) for m in layer.modules()]
    layer.eval()
    try:
        with no_grad():
            out = layer(zeros if many else zeros[0])
    finally:
        for m, training in modes:
            m.training = training
    if not isinstance(out, Tensor):
        raise LeptonError(
            f"layer '{layer.name}' ({type(layer).__name__}) returns {type(out).__name__}, "
            "not one tensor: it cannot be a node of a graph model"
        )
    k = layer.__dict__.get("_graph_calls", 0)
    layer.__dict__["_graph_calls"] = k + 1
    if name is None:
        name = layer.name if k == 0 else f"{layer.name}@{k}"
    return Symbol(name, (None, *out.shape[1:]), out.dtype, layer, ins)


def _as_list(v: Any, what: str) -> list[Symbol]:
    items = list(v) if isinstance(v, (list, tuple)) else [v]
    if not items or not all(isinstance(s, Symbol) for s in items):
        raise LeptonError(f"Model {what} must be symbols (from nn.Input and layer calls)")
    return items


class Model(Module):
    """A DAG of layer calls from ``inputs`` to ``outputs`` (see the module docstring)."""

    dtype = WeightsDtype()  # its weights' (layers without weights follow their input)

    def __init__(self, inputs, outputs, name: str | None = None):
        super().__init__(name)
        ins, outs = _as_list(inputs, "inputs"), _as_list(outputs, "outputs")
        self._single_in = not isinstance(inputs, (list, tuple))
        self._single_out = not isinstance(outputs, (list, tuple))
        for s in ins:
            if s.layer is not None:
                raise LeptonError(f"Model input {s.name!r} is a layer output, not an nn.Input")
        for s in outs:
            if s.layer is None:
                raise LeptonError(f"Model output {s.name!r} is an input: there is nothing to run")
        order = _topological(outs)
        given = {id(s) for s in ins}
        reached = {id(s) for s in order if s.layer is None}
        for s in order:
            if s.layer is None and id(s) not in given:
                raise LeptonError(
                    f"the model's outputs depend on input {s.name!r}, which is not among its "
                    f"inputs {[i.name for i in ins]}"
                )
        for s in ins:
            if id(s) not in reached:
                raise LeptonError(f"no output of the model depends on its input {s.name!r}")
        nodes = [s for s in order if s.layer is not None]
        names = [s.name for s in ins] + [s.name for s in nodes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise LeptonError(f"graph model: names used twice: {dup}")
        layers: list[Module] = []
        for s in nodes:
            if all(s.layer is not m for m in layers):
                layers.append(s.layer)
        lnames = [m.name for m in layers]
        dup = sorted({n for n in lnames if lnames.count(n) > 1})
        if dup:
            raise LeptonError(f"graph model: two different layers are named {dup}; rename one")
        self.layers: list[Module] = layers
        self._inputs = [(s.name, s.shape, s.dtype) for s in ins]
        self._nodes = [(s.name, s.layer, [i.name for i in s.inputs]) for s in nodes]
        self._outputs = [s.name for s in outs]
        # a node whose output only the next call reads may run fused with it (call_fused: a
        # Conv2D and the MaxPool2D after it), as in Sequential
        readers: dict[str, list[int]] = {}
        for j, s in enumerate(nodes):
            for i in s.inputs:
                readers.setdefault(i.name, []).append(j)
        self._fuse_next: dict[int, int] = {}
        for i, s in enumerate(nodes):
            r = readers.get(s.name, [])
            if len(r) == 1 and s.name not in self._outputs:
                j = r[0]
                if not isinstance(nodes[j].layer, Merge) and not isinstance(s.layer, Merge):
                    self._fuse_next[i] = j
        out_shapes = [s.shape for s in outs]
        self.input_shape = ins[0].shape if len(ins) == 1 else [s.shape for s in ins]
        self.output_shape = out_shapes[0] if len(outs) == 1 else out_shapes

    # -- running -----------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [n for n, _, _ in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def _bind_inputs(self, args: tuple) -> dict[str, Any]:
        names = self.input_names
        if len(args) == 1 and isinstance(args[0], Mapping):
            given = args[0]
            missing = [n for n in names if n not in given]
            extra = sorted(set(given) - set(names))
            if missing or extra:
                raise LeptonError(
                    f"model '{self.name}': inputs {names}; missing {missing}, unknown {extra}"
                )
            return {n: given[n] for n in names}
        if len(args) == 1 and len(names) > 1 and isinstance(args[0], (list, tuple)):
            args = tuple(args[0])
        if len(args) != len(names):
            raise LeptonError(
                f"model '{self.name}' takes {len(names)} input(s) {names}, got {len(args)}"
            )
        return dict(zip(names, args))

    def call(self, *args):
        values = self._bind_inputs(args)
        nodes, done = self._nodes, set()
        for k, (name, layer, ins) in enumerate(nodes):
            if k in done:
                continue
            if isinstance(layer, Merge):
                values[name] = layer([values[i] for i in ins])
                continue
            j = self._fuse_next.get(k)
            if j is not None and _plain(layer) and _plain(nodes[j][1]):
                y = layer.call_fused(values[ins[0]], nodes[j][1])
                if y is not None:  # the two calls in one op; the next one is done
                    values[nodes[j][0]] = y
                    done.add(j)
                    continue
            values[name] = layer(values[ins[0]])
        outs = [values[n] for n in self._outputs]
        return outs[0] if self._single_out and len(outs) == 1 else outs

    def astype(self, dtype) -> Model:
        """Every layer (and the float inputs) in ``dtype``."""
        super().astype(dtype)
        self._inputs = [
            (n, s, np.dtype(dtype) if np.dtype(d).kind == "f" else d) for n, s, d in self._inputs
        ]
        return self

    def build(self, input_shape=None) -> Model:
        """A graph model is built when it is made (its layers saw its input shapes)."""
        return self

    def __call__(self, *args, **kwargs):
        if args and is_symbolic(args[0]):
            raise LeptonError("a graph Model cannot be called on symbols (nest its layers instead)")
        return super().__call__(*args, **kwargs)  # hooks on the model run as on any module

    # -- inspecting -----------------------------------------------------------------------
    def nodes(self) -> list[tuple[str, str, list[str]]]:
        """``(node name, layer name, input names)`` per call, in the order they run."""
        return [(n, layer.name, list(ins)) for n, layer, ins in self._nodes]

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def get_layer(self, name: str) -> Module:
        for m in self.layers:
            if m.name == name:
                return m
        raise KeyError(f"model '{self.name}' has no layer {name!r}")

    def __repr__(self) -> str:
        inner = "".join(f"\n  {n} = {layer!r}({', '.join(ins)})," for n, layer, ins in self._nodes)
        return f"Model(inputs={self.input_names}, outputs={self._outputs}, nodes=[{inner}\n])"

    # -- serialization --------------------------------------------------------------------
    def get_config(self) -> dict:
        from .serialize import layer_to_config

        return {
            "name": self.name,
            "inputs": [
                {"name": n, "shape": list(s), "dtype": np.dtype(d).name} for n, s, d in self._inputs
            ],
            "layers": [layer_to_config(m) for m in self.layers],
            "nodes": [
                {"name": n, "layer": layer.name, "inputs": list(ins)}
                for n, layer, ins in self._nodes
            ],
            "outputs": list(self._outputs),
        }

    @classmethod
    def from_config(cls, config: dict) -> Model:
        """Rebuild from :meth:`get_config`'s form (an untrusted file: every reference
        checked; ``ModelFormatError`` when anything does not fit)."""
        from .serialize import layer_from_config

        def fail(msg: str) -> ModelFormatError:
            return ModelFormatError(f"graph model: {msg}")

        inputs, cfgs = config.get("inputs"), config.get("layers")
        nodes, outputs = config.get("nodes"), config.get("outputs")
        parts = {"inputs": inputs, "layers": cfgs, "nodes": nodes, "outputs": outputs}
        for key, v in parts.items():
            if not isinstance(v, list) or not v:
                raise fail(f"'{key}' must be a non-empty list")
        layers = [layer_from_config(c) for c in cfgs]
        by_name = {m.name: m for m in layers}
        if len(by_name) != len(layers):
            raise fail("two layers share a name")
        symbols: dict[str, Symbol] = {}
        ins = []
        for spec in inputs:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise fail(f"an input must be an object with a name, got {spec!r:.80}")
            shape = spec.get("shape")
            if not isinstance(shape, list) or len(shape) < 2 or shape[0] is not None:
                raise fail(f"input {spec['name']!r}: bad shape {shape!r}")
            dtype = spec.get("dtype", "float32")
            if dtype not in ("float32", "float64", "int32", "int64"):
                raise fail(f"input {spec['name']!r}: dtype {dtype!r} not supported")
            try:
                s = Input(tuple(shape[1:]), name=spec["name"], dtype=dtype)
            except (TypeError, ValueError) as exc:
                raise fail(f"input {spec['name']!r}: {exc}") from exc
            if s.name in symbols:
                raise fail(f"name {s.name!r} used twice")
            symbols[s.name] = s
            ins.append(s)
        for node in nodes:
            if not isinstance(node, dict):
                raise fail("a node must be an object")
            n, lname, reads = node.get("name"), node.get("layer"), node.get("inputs")
            if not isinstance(n, str) or n in symbols:
                raise fail(f"node name {n!r} is missing or used twice")
            if lname not in by_name:
                raise fail(f"node {n!r} calls unknown layer {lname!r}")
            if not isinstance(reads, list) or not reads or not all(r in symbols for r in reads):
                raise fail(f"node {n!r} reads {reads!r}: only inputs and earlier nodes")
            layer = by_name[lname]
            x = [symbols[r] for r in reads] if isinstance(layer, Merge) else symbols[reads[0]]
            if not isinstance(layer, Merge) and len(reads) != 1:
                raise fail(f"node {n!r}: layer {lname!r} takes one input, got {len(reads)}")
            symbols[n] = record_call(layer, x, {}, name=n)
        if not all(isinstance(o, str) and o in symbols for o in outputs):
            raise fail(f"outputs {outputs!r} name unknown nodes")
        model = cls(
            ins if len(ins) > 1 else ins[0],
            [symbols[o] for o in outputs] if len(outputs) > 1 else symbols[outputs[0]],
            name=config.get("name"),
        )
        if len(model.layers) != len(layers):
            raise fail("a layer is called by no node")
        model.layers = layers  # the file's order: parameters are layers.<i>.*
        return model


def _topological(outputs: Sequence[Symbol]) -> list[Symbol]:
    """Every symbol the outputs depend on, each after all it reads (iterative DFS)."""
    order: list[Symbol] = []
    done: set[int] = set()
    for root in outputs:
        stack: list[tuple[Symbol, int]] = [(root, 0)]
        while stack:
            s, i = stack.pop()
            if id(s) in done:
                continue
            if i < len(s.inputs):
                stack.append((s, i + 1))
                if id(s.inputs[i]) not in done:
                    stack.append((s.inputs[i], 0))
            else:
                done.add(id(s))
                order.append(s)
    return order
