"""Shape rules of the layers a model file may name, and the walker of a Sequential.

``SHAPE_RULES[class](config, per-sample input shape, label) -> LayerShape``: the output
shape, the parameters' shapes, the activation it ends with, its scratch and plan calls,
from the layer's config alone (each rule type-checks the settings it reads; untrusted JSON).
Convolution and pooling use the same geometry functions as the runtime's parsers
(:func:`~.parsers.conv_geometry`, :func:`~.parsers.pool_geometry`).
:mod:`.validate` walks an architecture with them (:data:`ARCHITECTURES`: class of the
architecture -> walker; a Sequential by default) and applies the budget; see its docstring
for how a DAG architecture plugs in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lepton_nn.backend.geometry import permute_dims
from lepton_nn.errors import ModelFormatError

from .graph import MERGES, merge_step, parse_graph
from .parsers import (
    ACTIVATIONS,
    ELEMENTWISE_LAYERS,
    conv1d_as_2d,
    conv_geometry,
    elementwise_params,
    gelu_name,
    pad_config,
    pool_geometry,
)
from .record import Record

__all__ = [
    "ARCHITECTURES",
    "FLOAT_DTYPES",
    "LayerInfo",
    "LayerShape",
    "MULTI_INPUT_RULES",
    "SHAPE_RULES",
    "layer_shape",
    "walk",
    "walk_layers",
]

FLOAT_DTYPES = ("float32", "float64")
#: largest single dimension anywhere (the budgets refuse far smaller products)
MAX_DIM = 1 << 40
MAX_RANK = 8
MAX_DEPTH = 32
_ALIASES = {None: "identity", "linear": "identity", "none": "identity"}


class LayerShape(Record):
    """What a shape rule says of one layer on a given per-sample input shape.

    ``act``: the activation its output ends with (None: it keeps its input's, as Dropout,
    Flatten and pooling do); ``params``: attribute name -> shape; ``work``: scratch
    elements per sample beyond the output; ``ops``: plan calls (an estimate);
    ``tuple_out``: it returns several arrays (return_state).
    """

    _fields = ("out", "params", "act", "work", "time_steps", "ops", "tuple_out")

    def __init__(
        self, out: tuple[int, ...], params: dict[str, tuple[int, ...]] | None = None,
        act: str | None = None, work: int = 0, time_steps: int = 0, ops: int = 1,
        tuple_out: bool = False,
    ) -> None:  # fmt: skip
        self.out, self.params = out, {} if params is None else params
        self.act, self.work, self.time_steps, self.ops = act, work, time_steps, ops
        self.tuple_out = tuple_out


class LayerInfo(Record):
    """One leaf layer of a walked architecture; ``prefix``: its parameter names' prefix,
    e.g. ``"layers.0."``."""

    _fields = ("prefix", "cls", "config", "label", "in_shape", "shape")

    def __init__(self, prefix: str, cls: str, config: dict, label: str,
                 in_shape: tuple[int, ...], shape: LayerShape) -> None:  # fmt: skip
        self.prefix, self.cls, self.config, self.label = prefix, cls, config, label
        self.in_shape, self.shape = in_shape, shape


def _fail(msg: str) -> ModelFormatError:
    return ModelFormatError(msg)


# --------------------------------------------------------------------------- typed values


def _int(v: Any, what: str, lo: int = 1, hi: int = MAX_DIM) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(f"{what} must be an int in [{lo}, {hi}], got {v!r:.80}")
    return v


def _bool(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(f"{what} must be true or false, got {v!r:.80}")
    return v


def _num(v: Any, what: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(f"{what} must be a number, got {v!r:.80}")
    try:
        x = float(v)
    except OverflowError:
        raise _fail(f"{what} is out of range: {v!r:.40}") from None
    if not (math.isfinite(x) and lo <= x <= hi):
        raise _fail(f"{what} must be a finite number in [{lo}, {hi}], got {v!r:.80}")
    return x


def _str(v: Any, what: str, choices: tuple | None = None, none: bool = False) -> Any:
    if v is None and none:
        return None
    if not isinstance(v, str) or len(v) > 200 or (choices is not None and v not in choices):
        allowed = f" (one of {choices})" if choices is not None else ""
        raise _fail(f"{what} must be a string{allowed}, got {v!r:.80}")
    return v


def _dict(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise _fail(f"{what} must be an object, got {type(v).__name__}")
    return v


def _activation(v: Any, label: str) -> str:
    name = _ALIASES.get(v, v) if isinstance(v, (str, type(None))) else v
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise _fail(f"{label}: unknown activation {v!r:.80}; known: {ACTIVATIONS}")
    return name


def _settings(config: dict, label: str) -> None:
    """Type-check the settings many layers have (each rule checks its own; settings no rule
    reads are left to the layer: ``lepton_nn.nn`` refuses those it does not take)."""
    if "name" in config:
        _str(config["name"], f"{label}: name", none=True)
    if "dtype" in config:
        _str(config["dtype"], f"{label}: dtype", FLOAT_DTYPES)
    for k in ("kernel_initializer", "bias_initializer", "recurrent_initializer"):
        if k in config:
            _str(config[k], f"{label}: {k}")


def _shape_list(v: Any, what: str) -> tuple[int, ...]:
    """``[null, d1, d2, ...]`` (a batch shape as the files store it) -> (d1, d2, ...)."""
    if (
        not isinstance(v, list)
        or not 2 <= len(v) <= MAX_RANK + 1
        or v[0] is not None
        or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM for d in v[1:]
        )
    ):
        raise _fail(f"bad {what} {v!r:.80}: expected [null, d1, ...], 1 to {MAX_RANK} dims")
    return tuple(v[1:])


# --------------------------------------------------------------------------- shape rules
# rule(config, per-sample input shape, label) -> LayerShape; each checks its config's types.


def _need_rank(shape: tuple, lo: int, label: str, hi: int = MAX_RANK) -> None:
    if not lo <= len(shape) <= hi:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise _fail(f"{label} needs {want} dims per sample, its input is {shape}")


def _dense(config, shape, label):
    _settings(config, label)
    _need_rank(shape, 1, label)
    units = _int(config.get("units"), f"{label}: units")
    n_in = shape[-1]
    declared = config.get("in_features")
    if declared is not None and _int(declared, f"{label}: in_features") != n_in:
        raise _fail(f"{label}: in_features {declared} but its input has {n_in} features")
    params = {"weight": (n_in, units)}
    if _bool(config.get("use_bias", True), f"{label}: use_bias"):
        params["bias"] = (units,)
    act = _activation(config.get("activation"), label)
    return LayerShape((*shape[:-1], units), params, act, ops=2 + 4 * (act in ("softmax",)))


def _activation_layer(fixed: str | None):
    def rule(config, shape, label):
        _settings(config, label)
        act = fixed or _activation(config.get("activation"), label)
        return LayerShape(shape, {}, None if act == "identity" else act, ops=5)

    return rule


def _dropout(config, shape, label):
    _settings(config, label)
    _num(config.get("rate", 0.0), f"{label}: rate", 0.0, 0.999999)
    return LayerShape(shape, ops=0)


def _flatten(config, shape, label):
    _settings(config, label)
    return LayerShape((math.prod(shape),), ops=0)


def _conv(config, shape, label):
    _settings(config, label)
    _need_rank(shape, 3, label, 3)
    if not isinstance(config.get("padding", "valid"), (str, int, list)):
        raise _fail(f"{label}: padding {config.get('padding')!r:.80} is not understood")
    filters, k, _, (oh, ow) = conv_geometry(config, shape, label)
    c = shape[0]
    declared = config.get("in_channels")
    if declared is not None and _int(declared, f"{label}: in_channels") != c:
        raise _fail(f"{label}: in_channels {declared} but its input has {c} channels")
    groups = config.get("groups", 1)  # checked by conv_geometry
    params = {"weight": (filters, c // groups, *k)}
    if _bool(config.get("use_bias", True), f"{label}: use_bias"):
        params["bias"] = (filters,)
    act = _activation(config.get("activation"), label)
    return LayerShape((filters, oh, ow), params, act, work=c // groups * k[0] * k[1] * oh * ow)


def _conv1d(config, shape, label):
    _settings(config, label)
    as_2d, _ = conv1d_as_2d(config, shape, label)
    ls = _conv(as_2d, (shape[0], 1, shape[1]), label)
    w = ls.params["weight"]
    ls.params["weight"] = (w[0], w[1], w[3])
    ls.out = (ls.out[0], ls.out[2])
    return ls


def _pad(n_axes: int):
    def rule(config, shape, label):
        _settings(config, label)
        *_, out = pad_config(config, shape, n_axes, label)
        return LayerShape(out)

    return rule


def _permute(config, shape, label):
    _settings(config, label)
    try:
        dims = permute_dims(config.get("dims"), len(shape))
    except ValueError as exc:
        raise _fail(f"{label}: {exc}") from None
    return LayerShape(tuple(shape[d - 1] for d in dims), ops=0)


def _elementwise(name: str):
    def rule(config, shape, label):
        _settings(config, label)
        elementwise_params(name, config, label)
        return LayerShape(shape, {}, name, ops=5)

    return rule


def _gelu(config, shape, label):
    _settings(config, label)
    return LayerShape(shape, {}, gelu_name(config, label), ops=5)


def _pool():
    def rule(config, shape, label):
        _settings(config, label)
        _need_rank(shape, 3, label, 3)
        _, (oh, ow), _ = pool_geometry(config, shape, label)
        return LayerShape((shape[0], oh, ow))

    return rule


def _global_avg(config, shape, label):
    _settings(config, label)
    _need_rank(shape, 3, label, 3)
    return LayerShape((shape[0],))


def _batch_norm(config, shape, label):
    _settings(config, label)
    _need_rank(shape, 1, label)
    _num(config.get("momentum", 0.1), f"{label}: momentum", 0.0, 1.0)
    _num(config.get("eps", 1e-5), f"{label}: eps", 0.0)
    c = shape[0]
    declared = config.get("num_features")
    if declared is not None and _int(declared, f"{label}: num_features") != c:
        raise _fail(f"{label}: num_features {declared} but its input has {c} channels")
    names = ("weight", "bias", "running_mean", "running_var")
    return LayerShape(shape, dict.fromkeys(names, (c,)), "identity", ops=4)


def _layer_norm(config, shape, label):
    _settings(config, label)
    _need_rank(shape, 1, label)
    _num(config.get("eps", 1e-5), f"{label}: eps", 0.0)
    d = shape[-1]
    declared = config.get("features")
    if declared is not None and _int(declared, f"{label}: features") != d:
        raise _fail(f"{label}: features {declared} but its input has {d} features")
    return LayerShape(shape, {"weight": (d,), "bias": (d,)}, "identity", work=2 * d)


_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


def _recurrent(cell: str):
    def rule(config, shape, label):
        _settings(config, label)
        _need_rank(shape, 2, label, 2)
        t, f = shape
        u = _int(config.get("units"), f"{label}: units")
        flags = {"return_sequences": False, "return_state": False, "bidirectional": False}
        seqs, state, bi, use_bias = (
            _bool(config.get(k, d), f"{label}: {k}") for k, d in {**flags, "use_bias": True}.items()
        )

        declared = config.get("input_size")
        if declared is not None and _int(declared, f"{label}: input_size") != f:
            raise _fail(f"{label}: input_size {declared} but its input has {f} features")
        g = _GATES[cell]
        params: dict[str, tuple[int, ...]] = {}
        for d in ("", "_reverse") if bi else ("",):
            params[f"weight_ih{d}"] = (f, g * u)
            params[f"weight_hh{d}"] = (u, g * u)
            if use_bias:
                params[f"bias{d}"] = (g * u,)
                if cell == "GRU":
                    params[f"bias_hh{d}"] = (g * u,)
        dirs = 2 if bi else 1
        out = (t, dirs * u) if seqs else (dirs * u,)
        work = dirs * ((t + 1) * (8 + g) * u + t * (f + 1))
        ls = LayerShape(out, params, "identity", work, t, dirs * (3 * t + 6))
        ls.tuple_out = state  # (output, *final states): only the network's last layer may
        return ls

    return rule


def _embedding(config, shape, label):
    _settings(config, label)
    rows = _int(config.get("input_dim"), f"{label}: input_dim")
    dim = _int(config.get("output_dim"), f"{label}: output_dim")
    _need_rank(shape, 1, label, MAX_RANK - 1)
    return LayerShape((*shape, dim), {"weight": (rows, dim)}, "identity")


#: layer class -> rule(config, per-sample input shape, label) -> LayerShape
SHAPE_RULES: dict[str, Callable[[dict, tuple, str], LayerShape]] = {
    "Dense": _dense,
    "Activation": _activation_layer(None),
    "ReLU": _activation_layer("relu"),
    "Sigmoid": _activation_layer("sigmoid"),
    "Tanh": _activation_layer("tanh"),
    "GELU": _gelu,
    "Softmax": _activation_layer("softmax"),
    "Dropout": _dropout,
    "Flatten": _flatten,
    "Permute": _permute,
    "Conv2D": _conv,
    "MaxPool2D": _pool(),
    "AvgPool2D": _pool(),
    "GlobalAvgPool2D": _global_avg,
    "BatchNorm": _batch_norm,
    "LayerNorm": _layer_norm,
    "LSTM": _recurrent("LSTM"),
    "GRU": _recurrent("GRU"),
    "SimpleRNN": _recurrent("SimpleRNN"),
    "Embedding": _embedding,
    "Conv1D": _conv1d,
    "Pad1D": _pad(1),
    "Pad2D": _pad(2),
    **{cls: _elementwise(name) for cls, name in ELEMENTWISE_LAYERS.items()},
}


def _merge_rule(cls: str) -> Callable[[dict, list, str], LayerShape]:
    def rule(config: dict, shapes: list, label: str) -> LayerShape:
        return LayerShape(merge_step(label, cls, config, shapes).out_shape, act="identity")

    return rule


#: merge layers of a graph architecture: rule(config, [input shapes], label) -> LayerShape
MULTI_INPUT_RULES: dict[str, Callable[[dict, list, str], LayerShape]] = {
    cls: _merge_rule(cls) for cls in MERGES
}


def layer_shape(cls: Any, config: Any, in_shape: tuple[int, ...], label: str) -> LayerShape:
    """The shape rule of layer class ``cls`` applied to ``config`` on ``in_shape``."""
    rule = SHAPE_RULES.get(cls) if isinstance(cls, str) else None
    if rule is None:
        raise _fail(f"{label} is not supported: unknown layer type")
    config = _dict(config, f"{label}: config")
    out = rule(config, in_shape, label)
    if len(out.out) > MAX_RANK or not all(0 < d <= MAX_DIM for d in out.out):
        raise _fail(f"{label}: output shape {out.out} is out of range")
    return out


# --------------------------------------------------------------------------- walkers


def _walk_sequential(arch: dict, in_shape: tuple[int, ...], start: str = "") -> list[LayerInfo]:
    out: list[LayerInfo] = []
    shape = [in_shape]

    def visit(cfg: Any, prefix: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _fail(f"architecture is nested deeper than {MAX_DEPTH} levels")
        if not isinstance(cfg, dict) or not isinstance(cfg.get("class"), str):
            raise _fail(f"a layer entry must be an object with a 'class' name, got {cfg!r:.80}")
        cls, config = cfg["class"], _dict(cfg.get("config", {}), f"config of {cfg['class']!r}")
        if cls == "Sequential":
            _settings(config, "Sequential")
            layers = config.get("layers", [])
            if not isinstance(layers, list):
                raise _fail("Sequential 'layers' must be a list")
            for i, sub in enumerate(layers):
                visit(sub, f"{prefix}layers.{i}.", depth + 1)
            return
        name = config.get("name") or cls
        label = f"layer {name!r:.80} ({cls:.40})"
        ls = layer_shape(cls, config, shape[0], label)
        out.append(LayerInfo(prefix, cls, config, label, shape[0], ls))
        shape[0] = ls.out

    visit(arch, start, 0)
    return out


def walk_layers(arch: Any, in_shape: tuple[int, ...], prefix: str = "") -> list[LayerInfo]:
    """The leaf layers of a layer or ``Sequential`` config on per-sample input ``in_shape``,
    each checked by its shape rule; parameter names start with ``prefix``."""
    return _walk_sequential(arch, in_shape, prefix)


class GraphLayers(list):
    """The LayerInfo of every node of a graph, with its ``inputs`` and ``outputs`` shapes
    and the activation its first output ends with (``final``)."""

    inputs: list[tuple[int, ...]]
    outputs: list[tuple[int, ...]]
    final: str


def _walk_graph(arch: dict, in_shape: tuple[int, ...] | None) -> list[LayerInfo]:
    """A graph model (:mod:`lepton_nn.nn.graph`'s form): its nodes in topological order
    (:func:`~lepton_nn.runtime.graph.parse_graph`, which the planner uses too), merges through
    :data:`MULTI_INPUT_RULES`, every other layer through its shape rule."""
    config = _dict(arch.get("config"), "graph model: config")

    def layer(i: int, cfg: dict, width: tuple, label: str):
        infos = _walk_sequential(cfg, width, f"layers.{i}.")
        acts = [x.shape.act for x in infos if x.shape.act is not None]
        return infos, (infos[-1].shape.out if infos else width), (acts or ["identity"])[-1]

    inputs, chains, outputs = parse_graph(config, layer, _shape_list)
    out = GraphLayers()
    for c in chains:
        if c.steps and not isinstance(c.steps[0], LayerInfo):  # a merge
            m = c.steps[0]
            shape = LayerShape(m.out_shape, act="identity", ops=len(c.inputs))
            out.append(LayerInfo("", m.op, {}, m.label, m.out_shape, shape))
        else:
            out.extend(c.steps)
    out.inputs = [w for _, w in inputs]
    out.outputs = [w for _, w in outputs]
    out.final = next((c.final for c in chains if c.out == outputs[0][0]), "identity")
    if in_shape is not None and out.inputs != [in_shape]:
        raise _fail(f"input_shape {in_shape} does not match the graph's inputs {out.inputs}")
    return out


#: architecture class -> walker(architecture config, input shape) -> [LayerInfo] in order
ARCHITECTURES: dict[str, Callable[[dict, tuple], list[LayerInfo]]] = {"Model": _walk_graph}


def walk(arch: Any, in_shape: tuple[int, ...]) -> list[LayerInfo]:
    cls = arch.get("class") if isinstance(arch, dict) else None
    walker = ARCHITECTURES.get(cls) if isinstance(cls, str) else None
    return (walker or _walk_sequential)(arch, in_shape)
