"""A saved ``TabularModel`` as ONNX, preprocessing and label decoding included, so ONNX
Runtime scores raw rows as ``lepton-nn predict`` does.

Inputs: one per raw column, named after it, shape (N, 1): ``double`` for numeric columns
(NaN = missing), ``string`` for categorical ones (an NA string such as ``""`` = missing;
values are matched as written: give them stripped, as the categories were learnt). Per
column, as :mod:`lepton_nn.runtime.preprocess` computes::

    numeric       miss = IsNaN(x);  f = (Where(miss, fill, x) - center) / scale   (float64)
    categorical   code = LabelEncoder(x: category k -> k + 1, NA strings -> fill + 1,
                  else 0);  OneHot(code, K + 1) without its first column (unknown: zeros)
    indicator     1.0 where the value was missing

then the network on the features (N, F) float32, and the outputs ``label`` (N,) (the class
names) and ``probabilities`` (N, C) in the order of ``predict_proba``: binary networks with
one output unit give p = sigmoid(z) in float64 (as the runtime), ``[1 - p, p]``, and the
label ``classes[p >= threshold]``; others a softmax (unless the network ends in one) and the
label of the largest. Regression files give ``value`` = mu + sd * output (float64).
"""

from __future__ import annotations

import numpy as np

from lepton_nn.errors import LeptonError

from .reader import _onnx

__all__ = ["tabular_to_onnx"]


def tabular_to_onnx(manifest: dict, arrays: dict, opset: int):
    from lepton_nn.runtime.preprocess import NUMERIC, Preprocessing

    from .exporter import _leaves, _tensor_type, finish, graph_for, network_nodes

    onnx = _onnx()
    h, tp = onnx.helper, onnx.TensorProto
    if manifest.get("preprocessing") is None:
        raise LeptonError("export: this tabular file has no preprocessing to export")
    pre = Preprocessing.from_config(manifest["preprocessing"])
    section = manifest["model"]
    g = graph_for(section, arrays, opset)
    inputs, parts = [], []
    nas = sorted(pre.na)
    for spec in pre.columns:
        name = spec["name"]
        if spec["kind"] == NUMERIC:
            inputs.append(h.make_tensor_value_info(name, tp.DOUBLE, ["N", 1]))
            miss = g.node("IsNaN", [name])
            filled = g.node("Where", [miss, g.const(float(spec["fill"]), np.float64), name])
            centered = g.node("Sub", [filled, g.const(float(spec["center"]), np.float64)])
            scaled = g.node("Div", [centered, g.const(float(spec["scale"]), np.float64)])
            parts.append(g.node("Cast", [scaled], to=tp.FLOAT))
        else:
            inputs.append(h.make_tensor_value_info(name, tp.STRING, ["N", 1]))
            cats = list(spec["categories"])
            fill = cats.index(spec["fill"]) if spec["fill"] in cats else -1
            extra = [v for v in nas if v not in cats]
            code = g.node("LabelEncoder", [name], domain="ai.onnx.ml", keys_strings=cats + extra,
                          values_int64s=list(range(1, len(cats) + 1)) + [fill + 1] * len(extra),
                          default_int64=0)  # fmt: skip
            hot = g.node("OneHot", [code, g.const(len(cats) + 1, np.int64),
                                    g.const([0.0, 1.0], np.float32)], axis=-1)  # fmt: skip
            hot = g.node("Slice", [hot, g.const([1], np.int64), g.const([len(cats) + 1],
                                                                         np.int64),
                                   g.const([2], np.int64)])  # fmt: skip
            parts.append(g.node("Squeeze", [hot, g.const([1], np.int64)]))
            miss = g.node("LabelEncoder", [name], domain="ai.onnx.ml", keys_strings=nas,
                          values_floats=[1.0] * len(nas), default_float=0.0)  # fmt: skip
        if spec["indicator"]:
            parts.append(g.node("Cast", [miss], to=tp.FLOAT))
    features = g.node("Concat", parts, axis=1) if len(parts) > 1 else parts[0]
    if g.dtype != np.float32:
        features = g.node("Cast", [features], to=_tensor_type(g.dtype))
    _, outs = network_nodes(g, section, feed=features)
    (_, out, width) = outs[0]
    task = manifest.get("task")
    if task == "regression":
        mu, sd = manifest.get("target_scale", [0.0, 1.0])
        flat = g.node("Cast", [g.node("Reshape", [out, g.const([-1], np.int64)])], to=tp.DOUBLE)
        value = g.node("Add", [g.node("Mul", [flat, g.const(float(sd), np.float64)]),
                               g.const(float(mu), np.float64)])  # fmt: skip
        g.nodes.append(h.make_node("Identity", [value], ["value"]))
        return finish(g, inputs, [h.make_tensor_value_info("value", tp.DOUBLE, ["N"])], ml=True)
    last = [c.get("activation") or cls.lower() for _, cls, c in _leaves(section["architecture"],
                                                                         "")][-1]  # fmt: skip
    probabilities = manifest.get("output", "probabilities" if last in ("sigmoid", "softmax")
                                 else "logits") == "probabilities"  # fmt: skip
    units = int(np.prod(width))
    if units == 1:  # binary, one unit: p in float64, [1 - p, p]
        z = g.node("Cast", [out], to=tp.DOUBLE)
        p = z if probabilities else g.node("Sigmoid", [z])
        proba = g.node("Concat", [g.node("Sub", [g.const([[1.0]], np.float64), p]), p], axis=1)
        proba_type = tp.DOUBLE
    else:
        proba = out if probabilities else g.node("Softmax", [out], axis=-1)
        proba_type = _tensor_type(g.dtype)
    if task == "binary":
        col = g.node("Gather", [proba, g.const(1, np.int64)], axis=1)
        thr = g.const(float(manifest.get("threshold") or 0.5), np.float64)
        if proba_type != tp.DOUBLE:
            col = g.node("Cast", [col], to=tp.DOUBLE)
        code = g.node("Cast", [g.node("GreaterOrEqual", [col, thr])], to=tp.INT64)
    else:
        code = g.node("ArgMax", [proba], axis=1, keepdims=0)
    labels = (manifest.get("labels") or {}).get("classes")
    label_type = tp.INT64
    if labels is not None:
        table = np.array(labels, dtype=object if any(isinstance(c, str) for c in labels) else None)
        if table.dtype == object:
            table, label_type = table.astype(str).astype(object), tp.STRING
        elif table.dtype.kind == "f":
            label_type = tp.DOUBLE
        else:
            table = table.astype(np.int64)
        g.inits.append(onnx.numpy_helper.from_array(table, "classes"))
        code = g.node("Gather", ["classes", code], axis=0)
    g.nodes.append(h.make_node("Identity", [code], ["label"]))
    g.nodes.append(h.make_node("Identity", [proba], ["probabilities"]))
    outputs = [
        h.make_tensor_value_info("label", label_type, ["N"]),
        h.make_tensor_value_info("probabilities", proba_type, ["N", max(units, 2)]),
    ]
    return finish(g, inputs, outputs, ml=True)  # fmt: skip
