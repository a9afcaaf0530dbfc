"""The one check of a model manifest, run by both loaders before anything is built.

:func:`validate` takes a manifest (from an untrusted file) and the shapes of its arrays (the
manifest's own ``arrays`` table, or arrays already in memory) and returns a
:class:`Summary`, or raises :class:`~lepton_nn.errors.ModelFormatError` naming the field at
fault. ``lepton_nn.load`` and ``lepton_nn.runtime.load`` both call it (through
``read_lnn(check=...)``, so before any array is read), so a file one accepts the other does
not refuse for a reason of content. It checks, with no array data and no allocation:

- every field's type and range before use (JSON integers are unbounded; a list may stand
  where a string belongs): kind, sections, layer configs, preprocessing, labels, threshold;
- the architecture's shapes, propagated layer by layer through :data:`SHAPE_RULES` (the same
  geometry functions the runtime's steps use), and every parameter's shape against them;
- the resource budget (:class:`Limits`): parameters (Embedding included), activation memory
  per sample, time steps and plan size, refused naming the limit and how to raise it;
- a tabular file's parts against each other: preprocessing width vs network input, label
  count and task vs outputs, ``output`` ("probabilities" / "logits") vs the last activation.

Adding an architecture kind (e.g. a DAG of layer nodes): each node is still one layer whose
shape rule is ``SHAPE_RULES[class](config, in_shape, label) -> LayerShape``. Write a walker
like :func:`_walk_sequential` that visits the nodes in topological order, calls
:func:`layer_shape` on each with its input shape(s) (a merge node gets a rule of its own that
takes the list of input shapes: register it in :data:`MULTI_INPUT_RULES`), and returns the
:class:`LayerInfo` list; register it in :data:`ARCHITECTURES` by the architecture's
``class``. Budgets, parameter matching and the tabular checks then apply unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from lepton_nn.errors import ModelFormatError

from .compression import INT8_ATTRS
from .graph import MERGES, merge_step, parse_graph
from .steps import ACTIVATIONS, conv_geometry, pool_geometry

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_LIMITS",
    "KINDS",
    "LayerInfo",
    "LayerShape",
    "Limits",
    "MULTI_INPUT_RULES",
    "SHAPE_RULES",
    "Summary",
    "layer_shape",
    "validate",
    "validate_network",
]

KINDS = ("module", "compressed", "tabular")
TASKS = ("binary", "multiclass", "regression")
FLOAT_DTYPES = ("float32", "float64")
#: largest single dimension anywhere (the budgets refuse far smaller products)
MAX_DIM = 1 << 40
MAX_RANK = 8
MAX_DEPTH = 32
_ALIASES = {None: "identity", "linear": "identity", "none": "identity"}


@dataclass(frozen=True)
class Limits:
    """What one model may cost; checked from the manifest before anything is allocated.

    ``max_params``: weights (Embedding tables included); ``max_activation_bytes``: per
    sample, the input, every layer's output and scratch (im2col columns, recurrent states);
    ``max_time_steps``: of any recurrent layer; ``max_plan_ops``: calls in one plan (a
    recurrent layer makes a few per time step). ``Limits.of(x)`` accepts a Limits, a dict of
    some fields (the rest default) or None.
    """

    max_params: int = 200_000_000
    max_activation_bytes: int = 1 << 30
    max_time_steps: int = 100_000
    max_plan_ops: int = 1_000_000

    @classmethod
    def of(cls, value: Any) -> Limits:
        if value is None:
            return DEFAULT_LIMITS
        if isinstance(value, Limits):
            return value
        if isinstance(value, Mapping):
            names = {f.name for f in fields(cls)}
            unknown = set(value) - names
            if unknown:
                raise ValueError(f"limits: unknown keys {sorted(unknown)}; known: {sorted(names)}")
            for k, v in value.items():
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"limits: {k} must be a positive int, got {v!r}")
            return replace(DEFAULT_LIMITS, **value)
        raise TypeError(f"limits must be a Limits, a dict or None, got {type(value).__name__}")


DEFAULT_LIMITS = Limits()


@dataclass
class LayerShape:
    """What a shape rule says of one layer on a given per-sample input shape.

    ``act``: the activation its output ends with (None: it keeps its input's, as Dropout,
    Flatten and pooling do); ``params``: attribute name -> shape; ``work``: scratch
    elements per sample beyond the output; ``ops``: plan calls (an estimate).
    """

    out: tuple[int, ...]
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    act: str | None = None
    work: int = 0
    time_steps: int = 0
    ops: int = 1


@dataclass
class LayerInfo:
    """One leaf layer of a walked architecture."""

    prefix: str  # parameter name prefix, e.g. "layers.0."
    cls: str
    config: dict
    label: str
    in_shape: tuple[int, ...]
    shape: LayerShape


@dataclass
class Summary:
    """A validated network section (and, for tabular files, its outputs' meaning)."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dtype: np.dtype
    layers: list[LayerInfo]
    final_activation: str
    n_params: int
    activation_bytes: int
    time_steps: int
    plan_ops: int
    params: dict[str, tuple[int, ...]]  # every expected parameter name -> shape
    kind: str = "module"
    extra: dict[str, Any] = field(default_factory=dict)


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


def _keys(config: dict, allowed: set[str], label: str) -> None:
    """Type-check the settings every layer may have; ``allowed`` documents the rule's own
    (others are left to the layer: ``lepton_nn.nn`` refuses settings it does not take)."""
    del allowed
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

_COMMON = {"name", "dtype", "kernel_initializer", "bias_initializer"}


def _need_rank(shape: tuple, lo: int, label: str, hi: int = MAX_RANK) -> None:
    if not lo <= len(shape) <= hi:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise _fail(f"{label} needs {want} dims per sample, its input is {shape}")


def _dense(config, shape, label):
    _keys(config, _COMMON | {"units", "activation", "use_bias", "in_features"}, label)
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
        _keys(config, {"name"} | ({"activation"} if fixed is None else set()), label)
        act = fixed or _activation(config.get("activation"), label)
        return LayerShape(shape, {}, None if act == "identity" else act, ops=5)

    return rule


def _dropout(config, shape, label):
    _keys(config, {"name", "rate"}, label)
    _num(config.get("rate", 0.0), f"{label}: rate", 0.0, 0.999999)
    return LayerShape(shape, ops=0)


def _flatten(config, shape, label):
    _keys(config, {"name"}, label)
    return LayerShape((math.prod(shape),), ops=0)


def _conv(config, shape, label):
    keys = _COMMON | {"filters", "kernel_size", "stride", "padding", "dilation", "activation"}
    _keys(config, keys | {"use_bias", "in_channels"}, label)
    _need_rank(shape, 3, label, 3)
    if not isinstance(config.get("padding", "valid"), (str, int, list)):
        raise _fail(f"{label}: padding {config.get('padding')!r:.80} is not understood")
    filters, k, _, (oh, ow) = conv_geometry(config, shape, label)
    c = shape[0]
    declared = config.get("in_channels")
    if declared is not None and _int(declared, f"{label}: in_channels") != c:
        raise _fail(f"{label}: in_channels {declared} but its input has {c} channels")
    params = {"weight": (filters, c, *k)}
    if _bool(config.get("use_bias", True), f"{label}: use_bias"):
        params["bias"] = (filters,)
    act = _activation(config.get("activation"), label)
    return LayerShape((filters, oh, ow), params, act, work=c * k[0] * k[1] * oh * ow)


def _pool():
    def rule(config, shape, label):
        _keys(config, {"name", "pool_size", "stride", "padding", "count_include_pad"}, label)
        _need_rank(shape, 3, label, 3)
        _, (oh, ow), _ = pool_geometry(config, shape, label)
        return LayerShape((shape[0], oh, ow))

    return rule


def _global_avg(config, shape, label):
    _keys(config, {"name"}, label)
    _need_rank(shape, 3, label, 3)
    return LayerShape((shape[0],))


def _batch_norm(config, shape, label):
    _keys(config, {"name", "dtype", "momentum", "eps", "num_features"}, label)
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
    _keys(config, {"name", "dtype", "eps", "features"}, label)
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
        keys = _COMMON | {"units", "return_sequences", "return_state", "bidirectional"}
        _keys(config, keys | {"input_size", "recurrent_initializer", "use_bias"}, label)
        _need_rank(shape, 2, label, 2)
        t, f = shape
        u = _int(config.get("units"), f"{label}: units")
        flags = {"return_sequences": False, "return_state": False, "bidirectional": False}
        seqs, _, bi, use_bias = (
            _bool(config.get(k, d), f"{label}: {k}") for k, d in {**flags, "use_bias": True}.items()
        )  # return_state: the main output's shape is the same either way
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
        return LayerShape(out, params, "identity", work, t, dirs * (3 * t + 6))

    return rule


def _embedding(config, shape, label):
    _keys(config, {"name", "dtype", "input_dim", "output_dim"}, label)
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
    "GELU": _activation_layer("gelu"),
    "Softmax": _activation_layer("softmax"),
    "Dropout": _dropout,
    "Flatten": _flatten,
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
            _keys(config, {"name", "layers"}, "Sequential")
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


class GraphLayers(list):
    """The LayerInfo of every node of a graph, with its ``inputs`` and ``outputs`` shapes
    and the activation its first output ends with (``final``)."""

    inputs: list[tuple[int, ...]]
    outputs: list[tuple[int, ...]]
    final: str


def _walk_graph(arch: dict, in_shape: tuple[int, ...] | None) -> list[LayerInfo]:
    """A graph model (:mod:`lepton_nn.nn.graph`'s form): its nodes in topological order,
    merges through :data:`MULTI_INPUT_RULES`, each other layer through its shape rule."""
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


def _walk(arch: Any, in_shape: tuple[int, ...]) -> list[LayerInfo]:
    cls = arch.get("class") if isinstance(arch, dict) else None
    walker = ARCHITECTURES.get(cls) if isinstance(cls, str) else None
    return (walker or _walk_sequential)(arch, in_shape)


# --------------------------------------------------------------------------- sections


def _array_shapes(manifest: dict, arrays: Mapping | None) -> dict[str, tuple[str, tuple]]:
    """name -> (dtype name, shape), from arrays in memory or the manifest's checked table."""
    if arrays is not None:
        return {k: (np.asarray(a).dtype.name, tuple(np.shape(a))) for k, a in arrays.items()}
    table = manifest.get("arrays", {})
    if not isinstance(table, dict):
        raise _fail("'arrays' must be an object")
    return {k: (e["dtype"], tuple(e["shape"])) for k, e in table.items()}


def validate_network(
    section: Any, shapes: Mapping[str, tuple[str, tuple]], limits: Any = None,
    prefix: str = "params/",
) -> Summary:  # fmt: skip
    """Check a network section against array shapes (``name -> (dtype, shape)``) and the
    budget; return its :class:`Summary`."""
    limits = Limits.of(limits)
    section = _dict(section, "model section")
    arch, declared_in = section.get("architecture"), section.get("input_shape")
    graph = isinstance(arch, dict) and arch.get("class") == "Model"
    in_shape = None if graph and declared_in is None else _shape_list(declared_in, "input_shape")
    dtype = np.dtype(_str(section.get("dtype", "float32"), "model dtype", FLOAT_DTYPES))
    layers = _walk(arch, in_shape)
    ins = getattr(layers, "inputs", None) or [in_shape]  # a graph declares its inputs
    in_shape = ins[0]
    expected: dict[str, tuple[int, ...]] = {}
    n_params, elements, steps, ops = 0, sum(math.prod(s) for s in ins), 0, 0
    final = "identity"
    for info in layers:
        ls = info.shape
        for attr, shp in ls.params.items():
            if info.prefix + attr not in expected:  # a shared layer's weights count once
                n_params += math.prod(shp)
            expected[info.prefix + attr] = shp
        elements += math.prod(ls.out) + ls.work
        steps, ops = max(steps, ls.time_steps), ops + ls.ops
        final = ls.act if ls.act is not None else final
        _budget(limits, n_params, elements * dtype.itemsize, steps, ops, info.label)
    out_shape = layers[-1].shape.out if layers else in_shape
    if graph:
        out_shape, final = layers.outputs[0], layers.final
    declared = section.get("output_shape")
    if declared is not None and _shape_list(declared, "output_shape") != out_shape:
        raise _fail(f"output_shape {declared!r:.80} does not match the layers' output {out_shape}")
    _check_params(section, expected, shapes, prefix)
    return Summary(
        in_shape, out_shape, dtype, layers, final, n_params, elements * dtype.itemsize, steps,
        ops, expected,
    )  # fmt: skip


def _budget(limits: Limits, n_params: int, act_bytes: int, steps: int, ops: int, at: str):
    for value, name, what in (
        (n_params, "max_params", "parameters"),
        (act_bytes, "max_activation_bytes", "bytes of activations per sample"),
        (steps, "max_time_steps", "time steps"),
        (ops, "max_plan_ops", "plan calls"),
    ):
        limit = getattr(limits, name)
        if value > limit:
            raise _fail(
                f"{at} takes the model to {value} {what}, over the limit {name}={limit} "
                f"(pass limits={{'{name}': ...}} to load() to allow more)"
            )


def _check_params(section: dict, expected: dict, shapes: Mapping, prefix: str) -> None:
    """Float params and compressed weights: exactly the expected names, with their shapes."""
    names = section.get("params", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _fail("params must be a list of names")
    if len(set(names)) != len(names):
        raise _fail("params lists a name twice")
    absent = [n for n in names if prefix + n not in shapes]
    if absent:
        raise _fail(f"arrays missing for parameters {absent[:5]}")
    unused = [n for n in names if n not in expected]
    if unused:
        raise _fail(f"the file holds parameters no layer uses: {unused[:5]}")
    for n in names:
        dt, shp = shapes[prefix + n]
        if dt not in FLOAT_DTYPES or tuple(shp) != expected[n]:
            raise _fail(f"parameter {n}: {dt} {tuple(shp)} stored, expected {expected[n]}")
    compressed = _compressed_params(section)
    for n, shp in compressed.items():
        if n not in expected:
            raise _fail(f"compression section: {n!r:.80} is not a parameter of any layer")
        if n in names:
            raise _fail(f"parameter {n!r} is stored both in float and compressed")
        if shp != expected[n]:
            raise _fail(f"compression section: {n} has shape {shp}, expected {expected[n]}")
    missing = set(expected) - set(names) - set(compressed)
    if missing:
        raise _fail(f"arrays missing for parameters {sorted(missing)[:5]}")


def _compressed_params(section: dict) -> dict[str, tuple[int, ...]]:
    """param -> declared float shape of each compressed weight (types only; the arrays are
    checked by :func:`~lepton_nn.runtime.compression.parse_compression`)."""
    comp = section.get("compression")
    if comp is None:
        return {}
    entries = _dict(comp, "compression section").get("layers")
    if not isinstance(entries, list):
        raise _fail("compression section: 'layers' must be a list")
    out = {}
    KEYS = ("layer", "param", "method")  # noqa: N806
    for i, e in enumerate(entries):
        e = _dict(e, f"compression entry {i}")
        layer, param, method = (_str(e.get(k), f"compression entry {i}: {k}") for k in KEYS)
        attrs = INT8_ATTRS if method == "int8" else ("weight",)
        if param not in [f"{layer}.{a}" if layer else a for a in attrs]:
            raise _fail(f"compression entry {i}: param {param!r} is not a weight of {layer!r}")
        w = _dict(e.get("weight"), f"compression entry {i}: weight")
        s = w.get("shape")
        if not isinstance(s, list) or not 1 <= len(s) <= 4:
            raise _fail(f"compression entry {i}: weight shape {s!r:.80} is not a list")
        out[e["param"]] = tuple(_int(d, f"compression entry {i}: weight shape") for d in s)
        act = e.get("activations", {"mode": "dynamic"})
        if _dict(act, f"compression entry {i}: activations").get("mode") == "static":
            _num(act.get("scale"), f"compression entry {i}: activation scale", 0.0)
            _int(act.get("zero_point"), f"compression entry {i}: zero_point", 0, 255)
    return out


# --------------------------------------------------------------------------- whole files


def validate(manifest: Any, arrays: Mapping | None = None, limits: Any = None) -> Summary:
    """Check a whole manifest (kind ``module``, ``compressed`` or ``tabular``).

    ``arrays``: the arrays in memory, or None to use the manifest's ``arrays`` table (as
    ``read_lnn(check=...)`` does, before reading them). ``limits``: see :class:`Limits`.
    """
    manifest = _dict(manifest, "manifest")
    kind = _str(manifest.get("kind"), "kind", KINDS)
    shapes = _array_shapes(manifest, arrays)
    summary = validate_network(manifest.get("model"), shapes, limits)
    summary.kind = kind
    if kind == "tabular":
        _check_tabular(manifest, summary)
    return summary


def _check_tabular(m: dict, s: Summary) -> None:
    from .preprocess import Preprocessing  # pure NumPy; parses and checks the columns

    task = _str(m.get("task"), "tabular file: task", TASKS)
    width = math.prod(s.output_shape)
    if len(s.output_shape) != 1:
        raise _fail(f"tabular file: the network's output {s.output_shape} is not one row")
    if m.get("preprocessing") is not None:
        pre = Preprocessing.from_config(m["preprocessing"])
        if s.input_shape != (pre.n_features_out,):
            raise _fail(
                f"tabular file: preprocessing gives {pre.n_features_out} features, "
                f"the network takes {s.input_shape}"
            )
    threshold = m.get("threshold", 0.5)
    _num(0.5 if threshold is None else threshold, "tabular file: threshold", 0.0, 1.0)
    ts = m.get("target_scale", [0.0, 1.0])
    if not isinstance(ts, list) or len(ts) != 2:
        raise _fail(f"tabular file: target_scale must be [mean, scale], got {ts!r:.80}")
    for v in ts:
        _num(v, "tabular file: target_scale")
    final = s.final_activation
    output = _str(m.get("output"), "tabular file: output", ("probabilities", "logits"), True)
    probabilities = final in ("sigmoid", "softmax") if output is None else output == "probabilities"
    if task == "regression":
        if width != 1:
            raise _fail(f"tabular file: regression needs one output, the network gives {width}")
        if final in ("sigmoid", "softmax", "log_softmax") or output is not None:
            raise _fail(f"tabular file: regression output ends with {final!r} / {output!r}")
        return
    labels = m.get("labels")
    n = max(2, width)
    if labels is not None:
        labels = _dict(labels, "tabular file: labels")
        classes = labels.get("classes")
        if (
            not isinstance(classes, list)
            or len(classes) < 2
            or not all(
                isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in classes
            )
            or len(set(classes)) != len(classes)
        ):
            raise _fail("tabular file: labels need two or more distinct classes (str or numbers)")
        for c in classes:
            if not isinstance(c, str):
                _num(c, "tabular file: class label")
        positive = labels.get("positive")
        if positive is not None and positive not in classes:
            raise _fail(f"tabular file: positive label {positive!r:.80} is not a class")
        n = len(classes)
    if task == "binary" and (n != 2 or width not in (1, 2)):
        raise _fail(f"tabular file: binary task with {n} classes and {width} network outputs")
    if task == "multiclass" and (width != n or width < 2):
        raise _fail(f"tabular file: {n} classes but the network gives {width} outputs")
    # what "probabilities" means must be what the last activation gives
    if probabilities and not (
        (final == "sigmoid" and width == 1) or (final == "softmax" and width >= 2)
    ):
        raise _fail(
            f"tabular file: outputs declared as probabilities, but the network ends with "
            f"{final!r} on {width} outputs (sigmoid on 1 or softmax on 2+ give probabilities)"
        )
    if not probabilities and final in ("sigmoid", "softmax"):
        raise _fail(
            f"tabular file: outputs declared as logits, but the network ends with {final!r}"
        )
    s.extra["probabilities"] = probabilities
