"""The one check of a model manifest, run by both loaders before anything is built.

:func:`validate` takes a manifest (from an untrusted file) and the shapes of its arrays (the
manifest's own ``arrays`` table, or arrays already in memory) and returns a
:class:`Summary`, or raises :class:`~lepton_nn.errors.ModelFormatError` naming the field at
fault. ``lepton_nn.load`` and ``lepton_nn.runtime.load`` both call it (through
``read_lnn(check=...)``, so before any array is read), so a file one accepts the other does
not refuse for a reason of content. It checks, with no array data and no allocation:

- every field's type and range before use (JSON integers are unbounded; a list may stand
  where a string belongs): kind, sections, layer configs, preprocessing, labels, threshold;
- the architecture's shapes, propagated layer by layer by the rules of :mod:`.shapes` (the same
  geometry functions the runtime's steps use), and every parameter's shape against them;
- the resource budget (:class:`Limits`): parameters (Embedding included), activation memory
  per sample, time steps and plan size, refused naming the limit and how to raise it;
- a tabular file's parts against each other: preprocessing width vs network input, label
  count and task vs outputs, ``output`` ("probabilities" / "logits") vs the last activation.

The runtime's planner (:func:`lepton_nn.runtime.plan.parse_network`) builds its steps from
this walk (:attr:`Summary.layers`: each layer with its input shape) and checks each step's
output against the rule's: one walk, one set of shape rules, for both loaders.

Architectures other than a Sequential plug in through :data:`.shapes.ARCHITECTURES` (class
-> walker returning the :class:`LayerInfo` list). A graph model (``"Model"``) is walked by
:func:`.shapes._walk_graph`: its nodes in topological order through the same
:func:`~lepton_nn.runtime.graph.parse_graph` the planner uses, each layer through its shape
rule, merges through :data:`.shapes.MULTI_INPUT_RULES`; it declares its own inputs (the
section's ``input_shape`` is then optional), a layer it shares counts once in the budget, and
its first output gives ``output_shape`` and the final activation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .compression import INT8_ATTRS
from .record import FrozenRecord, Record
from .shapes import (
    ARCHITECTURES,
    FLOAT_DTYPES,
    MULTI_INPUT_RULES,
    SHAPE_RULES,
    LayerInfo,
    LayerShape,
    _dict,
    _fail,
    _int,
    _num,
    _shape_list,
    _str,
    layer_shape,
    walk,
)

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


class Limits(FrozenRecord):
    """What one model may cost; checked from the manifest before anything is allocated.

    ``max_params``: weights (Embedding tables included); ``max_activation_bytes``: per
    sample, the input, every layer's output and scratch (im2col columns, recurrent states);
    ``max_time_steps``: of any recurrent layer; ``max_plan_ops``: calls in one plan (a
    recurrent layer makes a few per time step). ``Limits.of(x)`` accepts a Limits, a dict of
    some fields (the rest default) or None.
    """

    _fields = ("max_params", "max_activation_bytes", "max_time_steps", "max_plan_ops")

    def __init__(self, max_params: int = 200_000_000, max_activation_bytes: int = 1 << 30,
                 max_time_steps: int = 100_000, max_plan_ops: int = 1_000_000) -> None:  # fmt: skip
        self._set(max_params=max_params, max_activation_bytes=max_activation_bytes,
                  max_time_steps=max_time_steps, max_plan_ops=max_plan_ops)  # fmt: skip

    @classmethod
    def of(cls, value: Any) -> Limits:
        if value is None:
            return DEFAULT_LIMITS
        if isinstance(value, Limits):
            return value
        if isinstance(value, Mapping):
            names = set(cls._fields)
            unknown = set(value) - names
            if unknown:
                raise ValueError(f"limits: unknown keys {sorted(unknown)}; known: {sorted(names)}")
            for k, v in value.items():
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"limits: {k} must be a positive int, got {v!r}")
            return DEFAULT_LIMITS.replace(**value)
        raise TypeError(f"limits must be a Limits, a dict or None, got {type(value).__name__}")


DEFAULT_LIMITS = Limits()


class Summary(Record):
    """A validated network section (and, for tabular files, its outputs' meaning);
    ``params``: every expected parameter name -> shape."""

    _fields = ("input_shape", "output_shape", "dtype", "layers", "final_activation",
               "n_params", "activation_bytes", "time_steps", "plan_ops", "params", "kind",
               "extra")  # fmt: skip

    def __init__(
        self, input_shape: tuple[int, ...], output_shape: tuple[int, ...], dtype: np.dtype,
        layers: list[LayerInfo], final_activation: str, n_params: int, activation_bytes: int,
        time_steps: int, plan_ops: int, params: dict[str, tuple[int, ...]],
        kind: str = "module", extra: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.input_shape, self.output_shape, self.dtype = input_shape, output_shape, dtype
        self.layers, self.final_activation, self.n_params = layers, final_activation, n_params
        self.activation_bytes, self.time_steps = activation_bytes, time_steps
        self.plan_ops, self.params, self.kind = plan_ops, params, kind
        self.extra = {} if extra is None else extra


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
    layers = walk(arch, in_shape)
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
    for info in layers[:-1]:
        if info.shape.tuple_out:  # its tuple would reach the next layer
            raise _fail(f"{info.label}: return_state is allowed on the last layer only")
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
        if manifest.get("profile") is not None:  # once task, classes and outputs agree
            from .profile import parse_profile

            width = math.prod(summary.output_shape)
            parse_profile(
                manifest["profile"], manifest.get("preprocessing"), manifest["task"], width
            )
    return summary


def _check_tabular(m: dict, s: Summary) -> None:
    from .preprocess import Preprocessing  # pure NumPy; parses and checks the columns

    task = _str(m.get("task"), "tabular file: task", TASKS)
    width = math.prod(s.output_shape)
    if len(s.output_shape) != 1:
        raise _fail(f"tabular file: the network's output {s.output_shape} is not one row")
    if m.get("preprocessing") is not None:
        pre = Preprocessing.from_config(m["preprocessing"])
        s.extra["preprocessing"] = pre  # parsed once: the model built from s reuses it
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
    if m.get("calibration") is not None:
        from .calibration import parse_calibration

        s.extra["calibration"] = parse_calibration(m["calibration"], task)
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
