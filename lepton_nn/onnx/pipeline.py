"""skl2onnx pipelines with their preprocessing -> a ``"tabular"`` manifest (raw columns in).

A ``ColumnTransformer`` / ``Pipeline`` converted by skl2onnx with one input per raw column
((N, 1) float for numbers, (N, 1) string for text) computes, before the network, per column::

    number   Imputer (NaN -> fill) then Scaler ((x - offset) scale)      1 feature
    text     OneHotEncoder (cats_strings, zeros=1: unknown -> zeros)     K features

joined by Concat (with Reshape / Cast / Identity views). That is exactly lepton_nn's
preprocessing (:mod:`lepton_nn.runtime.preprocess`: fill, center = offset, scale = 1 / scale,
categories; a missing text value, ``""``, gives zeros as an unknown category does in ONNX
Runtime), so these nodes become the manifest's ``preprocessing`` with the columns in the
order of the network's features, and the rest of the graph (from the joined tensor) is
converted as any network (:func:`.importer.onnx_to_manifest`). Labels: the classes the
``ArrayFeatureExtractor`` of the label output reads, the label being the argmax of the
probabilities (task ``"multiclass"``). A number missing in a column without an Imputer is NaN
for ONNX Runtime; lepton_nn fills it with the column's center (its offset).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from lepton_nn.errors import ModelFormatError

from .fold import _attrs

__all__ = ["is_tabular", "tabular_manifest"]

_PRE = {"Imputer", "Scaler", "OneHotEncoder", "Concat", "Reshape", "Cast", "Identity"}


def is_tabular(model) -> bool:
    """A string input, or an ai.onnx.ml Imputer / OneHotEncoder: a pipeline with raw columns."""
    inits = {t.name for t in model.graph.initializer}
    strings = any(i.type.tensor_type.elem_type == 8 for i in model.graph.input
                  if i.name not in inits)  # fmt: skip
    return strings or any(n.op_type in ("Imputer", "OneHotEncoder") for n in model.graph.node)


def _fail(node, why: str) -> ModelFormatError:
    return ModelFormatError(f"node {node.name or node.output[0]!r} ({node.op_type}): {why}")


def _width(entry: dict) -> int:
    return len(entry["categories"]) if entry["kind"] == "categorical" else 1


def _preprocess(model, arrays) -> tuple[str, list[dict], list, Counter]:
    """Follow the preprocessing nodes: (the network's input tensor, its column entries in
    feature order, the nodes left for the network, the op types taken)."""
    g = model.graph
    all_nodes = list(g.node)  # (protobuf may wrap an element anew at each access)
    inits = {t.name for t in g.initializer}
    feats: dict[str, list[dict]] = {}
    for inp in g.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        dims = [d.dim_value for d in tt.shape.dim]
        if len(dims) != 2 or dims[1] < 1:
            raise ModelFormatError(f"input {inp.name!r}: a pipeline input must be (N, columns)")
        kind = "categorical" if tt.elem_type == 8 else "numeric"
        names = [inp.name] if dims[1] == 1 else [f"{inp.name}_{i}" for i in range(dims[1])]
        feats[inp.name] = [{"name": n, "kind": kind, "fill": None, "center": 0.0, "scale": 1.0,
                            "categories": None, "indicator": False, "_stage": 0}
                           for n in names]  # fmt: skip
    taken: set[int] = set()
    for node in all_nodes:
        data = [i for i in node.input if i in feats]
        if not data:
            continue
        if node.op_type not in _PRE or (node.op_type == "Concat" and len(data) != len(node.input)):
            continue  # the network starts here
        ents = [dict(e) for i in data for e in feats[i]]
        at = _attrs(node)
        if node.op_type == "Concat" and at.get("axis") not in (1, -1):
            continue
        if node.op_type == "Imputer":
            _impute(node, at, ents)
        elif node.op_type == "Scaler":
            _scale(node, at, ents)
        elif node.op_type == "OneHotEncoder":
            if len(ents) != 1 or ents[0]["kind"] != "categorical" or "cats_strings" not in at:
                raise _fail(node, "only a one-hot of one text column is supported")
            if at.get("zeros", 1) != 1:
                raise _fail(node, "zeros=0 (an error on unknown categories) is not supported")
            ents[0]["categories"] = [c.decode() if isinstance(c, bytes) else c
                                     for c in at["cats_strings"]]  # fmt: skip
        elif any(e["kind"] == "categorical" and e["categories"] is None for e in ents):
            raise _fail(node, "text must be one-hot encoded before anything else")
        feats[node.output[0]] = ents
        taken.add(id(node))
    rest = [n for n in all_nodes if id(n) not in taken]
    boundary = {i for n in rest for i in n.input if i in feats}
    if len(boundary) != 1:
        raise ModelFormatError(f"the pipeline's preprocessing must end in one tensor, got "
                               f"{sorted(boundary)}")  # fmt: skip
    name = boundary.pop()
    columns = feats[name]
    seen = [e["name"] for e in columns]
    raw = [e["name"] for i in g.input if i.name in feats and i.name not in inits
           for e in feats[i.name]]  # fmt: skip
    if sorted(seen) != sorted(raw):
        raise ModelFormatError(f"each raw column must reach the network once, got {seen}")
    if any(e["kind"] == "categorical" and e["categories"] is None for e in columns):
        raise ModelFormatError("a text column reaches the network without a one-hot encoding")
    return name, columns, rest, Counter(n.op_type for n in all_nodes if id(n) in taken)


def _impute(node, at, ents: list[dict]) -> None:
    if any(e["kind"] != "numeric" or e["_stage"] > 0 for e in ents):
        raise _fail(node, "imputes numbers only, before any scaling")
    vals = list(at.get("imputed_value_floats", []))
    if not np.isnan(at.get("replaced_value_float", 0.0)) or len(vals) not in (1, len(ents)):
        raise _fail(node, "only NaN replaced by one value per feature is supported")
    for e, v in zip(ents, vals * len(ents) if len(vals) == 1 else vals):
        e["fill"], e["_stage"] = float(v), 1


def _scale(node, at, ents: list[dict]) -> None:
    if any(e["kind"] != "numeric" or e["_stage"] > 1 for e in ents):
        raise _fail(node, "scales numbers only, once")
    offset, scale = list(at.get("offset", [0.0])), list(at.get("scale", [1.0]))
    n = len(ents)
    if len(offset) not in (1, n) or len(scale) not in (1, n) or 0.0 in scale:
        raise _fail(node, "offset and scale must hold one value per feature, scale non-zero")
    for i, e in enumerate(ents):
        e["center"] = float(offset[i if len(offset) > 1 else 0])
        e["scale"] = 1.0 / float(scale[i if len(scale) > 1 else 0])
        e["_stage"] = 2


def _classes(model, arrays) -> list | None:
    for n in model.graph.node:
        if n.op_type == "ArrayFeatureExtractor" and n.input[0] in arrays:
            c = arrays[n.input[0]].reshape(-1)
            return [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item")
                    else v for v in c]  # fmt: skip
    return None


def _binary_output(nodes: list, arrays: dict) -> str | None:
    """p when the probabilities are ``Concat(Sub(1, p), p)`` (a binary classifier), else None."""
    by_out = {o: n for n in nodes for o in n.output}
    for n in nodes:
        if n.op_type != "Concat" or len(n.input) != 2 or n.output[0] != "probabilities":
            continue
        sub = by_out.get(n.input[0])
        one = arrays.get(sub.input[0]) if sub is not None and sub.op_type == "Sub" else None
        if (
            one is not None
            and one.size == 1
            and float(one.reshape(())) == 1.0
            and (sub.input[1] == n.input[1])
        ):
            return n.input[1]
    return None


def tabular_manifest(model, arrays) -> tuple[dict, dict, dict]:
    """The ``"tabular"`` manifest of a skl2onnx pipeline (module docstring)."""
    from onnx import TensorProto, helper

    from lepton_nn.runtime.preprocess import CONFIG_FORMAT, CONFIG_VERSION, DEFAULT_NA

    from .importer import _ancestors, onnx_to_manifest

    name, columns, nodes, pre_ops = _preprocess(model, arrays)
    g = model.graph
    width = sum(_width(e) for e in columns)
    outputs, binary = list(g.output), _binary_output(nodes, arrays)
    if binary is not None:  # [1 - p, p]: the network gives p (task "binary")
        outputs = [helper.make_tensor_value_info(binary, TensorProto.FLOAT, ["N", 1])]
    else:  # the probabilities (the label, their argmax, is the manifest's labels)
        outputs = [o for o in outputs if o.type.tensor_type.elem_type in (1, 10, 11)]
    nodes = _ancestors(nodes, {o.name for o in outputs})
    used = {i for n in nodes for i in n.input}
    net = helper.make_graph(
        nodes, "network",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", width])],
        outputs, [t for t in g.initializer if t.name in used],
    )  # fmt: skip
    sub = helper.make_model(net, opset_imports=list(model.opset_import),
                            ir_version=model.ir_version)  # fmt: skip
    manifest, net_arrays, report = onnx_to_manifest(sub)
    for op, count in pre_ops.items():  # the preprocessing's nodes too
        report["ops"][op] = report["ops"].get(op, 0) + count
    for e in columns:
        e.pop("_stage")
        if e["kind"] == "numeric":
            e.pop("categories")
            e["fill"] = e["center"] if e["fill"] is None else e["fill"]
        else:
            for k in ("center", "scale"):
                e.pop(k)
    classes = _classes(model, arrays)
    out = {
        "kind": "tabular",
        "model": manifest["model"],
        "preprocessing": {
            "format": CONFIG_FORMAT,
            "version": CONFIG_VERSION,
            "params": {"na_values": list(DEFAULT_NA)},
            "report": {},
            "columns": columns,
        },  # fmt: skip
        "labels": {"classes": classes} if classes else None,
        "task": ("binary" if binary else "multiclass") if classes else "regression",
    }
    if classes:
        out["output"] = "probabilities"
    report["columns"] = [e["name"] for e in columns]
    return out, net_arrays, report
