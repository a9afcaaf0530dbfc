"""Constant folding, the batch size kept symbolic: shape subgraphs become constants.

Exporters compute shapes inside the graph (``Shape -> Gather -> Unsqueeze -> Concat ->
Reshape``, ``ConstantOfShape`` for zero initial states). Every node whose inputs are known
is evaluated here with NumPy *twice*, once per batch size of :data:`BATCHES`, the graph
input's first dimension being the batch and every other dimension known from ONNX shape
inference. Then for any tensor:

- the same value in both runs: a constant (:meth:`Folded.const`);
- a shape vector differing only where it holds the batch size: a shape with a batch entry
  (:meth:`Folded.batch_shape`, e.g. a Reshape target ``[N, -1]``);
- all zeros in both runs: a zero tensor of batch-dependent shape (:meth:`Folded.is_zeros`).

Anything else depends on the data and stays in the graph for the op mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_nn.errors import ModelFormatError

from .reader import _DTYPES

__all__ = ["BATCHES", "Folded", "fold"]

#: the two batch sizes the shape subgraphs are evaluated at
BATCHES = (3, 5)
#: a folded tensor larger than this is not built (a hostile shape subgraph)
MAX_FOLD_ELEMENTS = 1 << 24


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Folded:
    """Known tensors: name -> (value at batch 3, value at batch 5)."""

    def __init__(self, known: dict[str, tuple[np.ndarray, np.ndarray]], shapes: dict) -> None:
        self.known = known
        self.shapes = shapes  # name -> list of int | "N" | None (per ONNX shape inference)
        self.quantized: dict[str, tuple] = {}  # a folded DequantizeLinear's integers

    def const(self, name: str) -> np.ndarray | None:
        pair = self.known.get(name)
        if pair is None:
            return None
        a, b = pair
        if a.shape != b.shape or not np.array_equal(a, b):
            return None
        return a

    def is_zeros(self, name: str) -> bool:
        pair = self.known.get(name)
        return pair is not None and not any(np.any(v) for v in pair)

    def batch_shape(self, name: str) -> list[int | None] | None:
        """A 1-D int tensor whose entries are constants or the batch size (``None``)."""
        pair = self.known.get(name)
        if pair is None:
            return None
        a, b = (np.asarray(v).reshape(-1) for v in pair)
        if a.shape != b.shape or a.dtype.kind not in "iu":
            return None
        out: list[int | None] = []
        for x, y in zip(a.tolist(), b.tolist()):
            if x == y:
                out.append(int(x))
            elif (x, y) == BATCHES:
                out.append(None)
            else:
                return None
        return out


def _shapes(model) -> dict[str, list]:
    """Per-tensor shapes from ONNX shape inference, the graph input's first dim renamed N."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "N"
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:  # inference is a help, not a requirement
        return {}
    out = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        out[vi.name] = [
            d.dim_value if d.HasField("dim_value") else ("N" if d.dim_param == "N" else None)
            for d in t.shape.dim
        ]
    return out


def fold(model, arrays: dict[str, np.ndarray]) -> Folded:
    """Evaluate every node that can be evaluated without the data (see the module doc)."""
    shapes = _shapes(model)
    known = {k: (v, v) for k, v in arrays.items()}
    quantized: dict[str, tuple] = {}  # DequantizeLinear output -> (q, scale, zero point, axis)
    for node in model.graph.node:
        if (
            node.op_type == "Constant"
            or node.op_type not in FOLDERS
            or node.domain not in ("", "ai.onnx")
        ):
            continue
        ins = list(node.input)
        if node.op_type == "Shape":
            shape = shapes.get(ins[0]) if ins else None
            if ins and ins[0] in known:
                shape = list(known[ins[0]][0].shape)
            if shape is None or any(d is None for d in shape):
                continue
            attrs = _attrs(node)
            sl = slice(attrs.get("start", 0), attrs.get("end"))
            pair = tuple(
                np.array([b if d == "N" else d for d in shape][sl], np.int64) for b in BATCHES
            )
        else:
            if not all(i == "" or i in known for i in ins) or not any(ins):
                continue
            try:
                pair = tuple(
                    FOLDERS[node.op_type]([None if i == "" else known[i][k] for i in ins],
                                          _attrs(node))
                    for k in range(2)
                )  # fmt: skip
            except _TooBig:
                continue
            except (ValueError, IndexError, TypeError, KeyError, OverflowError) as exc:
                raise ModelFormatError(
                    f"node {node.name!r} ({node.op_type}) cannot be evaluated: {exc}"
                ) from exc
        if node.output:
            known[node.output[0]] = pair  # type: ignore[assignment]
        if node.op_type == "DequantizeLinear" and node.output:  # remember the integers
            ins_ = [known[i][0] if i else None for i in ins]
            quantized[node.output[0]] = (ins_[0], ins_[1], ins_[2] if len(ins_) > 2 else None,
                                         _attrs(node).get("axis", 1))  # fmt: skip
    folded = Folded(known, shapes)
    folded.quantized = quantized
    return folded


class _TooBig(Exception):
    pass


def _sized(shape) -> tuple[int, ...]:
    shape = tuple(int(d) for d in np.asarray(shape).reshape(-1))
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=object)) > MAX_FOLD_ELEMENTS:
        raise _TooBig
    return shape


def _axes(x) -> list[int] | None:
    """Axes from the second input (opset 13+), if given."""
    return None if x is None else [int(v) for v in np.asarray(x).reshape(-1)]


def _unsqueeze(ins, at):
    axes = _axes(ins[1] if len(ins) > 1 else None) or list(at.get("axes", []))
    x = ins[0]
    rank = x.ndim + len(axes)
    for ax in sorted(a % rank for a in axes):
        x = np.expand_dims(x, ax)
    return x


def _squeeze(ins, at):
    axes = _axes(ins[1] if len(ins) > 1 else None) or at.get("axes")
    x = ins[0]
    return np.squeeze(x) if axes is None else np.squeeze(x, tuple(a % x.ndim for a in axes))


def _slice(ins, at):
    x, starts, ends = ins[0], ins[1], ins[2]
    axes = ins[3] if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
    steps = ins[4] if len(ins) > 4 and ins[4] is not None else np.ones(len(starts), np.int64)
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[int(a) % x.ndim] = slice(int(s), int(e), int(st))
    return x[tuple(sl)]


def _reshape(ins, at):
    x, shape = ins[0], [int(d) for d in ins[1]]
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _div(ins, at):
    a, b = ins
    if a.dtype.kind in "iu":
        return (np.trunc(a / b)).astype(a.dtype)
    return a / b


def _constant_of_shape(ins, at):
    value = at.get("value")
    from onnx import numpy_helper

    fill = numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, "f4")
    return np.full(_sized(ins[0]), fill[0], dtype=fill.dtype)


def _expand(ins, at):
    shape = np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in ins[1]))
    _sized(shape)
    return np.broadcast_to(ins[0], shape).copy()


def _range(ins, at):
    start, limit, delta = (np.asarray(v).reshape(()) for v in ins)
    n = max(0, int(np.ceil((limit - start) / delta)))
    _sized((n,))
    return (start + delta * np.arange(n)).astype(start.dtype)


def dequantize(ins, at) -> np.ndarray:
    """ONNX DequantizeLinear: (x - zero_point) scale in float32; a 1-D scale (and zero
    point) runs along ``axis`` (default 1), a scalar over the whole tensor."""
    x, scale = ins[0], np.asarray(ins[1], np.float32)
    zp = np.zeros((), x.dtype) if len(ins) < 3 or ins[2] is None else np.asarray(ins[2])
    if at.get("block_size", 0):
        raise ValueError("blocked quantization is not supported")
    if scale.ndim == 1 and x.ndim > 0:
        axis = at.get("axis", 1) % x.ndim
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape) if zp.ndim == 1 else zp
    centered = x.astype(np.int64) - zp.astype(np.int64)
    return (centered.astype(np.float32) * scale).astype(np.float32)


#: op type -> f(input values, attributes) -> output value
FOLDERS: dict[str, Callable[[list, dict], np.ndarray]] = {
    "Shape": lambda ins, at: ins[0],  # handled in fold()
    "Identity": lambda ins, at: ins[0],
    "Gather": lambda ins, at: np.take(ins[0], ins[1], axis=at.get("axis", 0)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda ins, at: np.concatenate([np.atleast_1d(v) for v in ins], at["axis"]),
    "Slice": _slice,
    "Cast": lambda ins, at: ins[0].astype(_DTYPES[at["to"]]),
    "Reshape": _reshape,
    "Transpose": lambda ins, at: np.transpose(ins[0], at.get("perm")),
    "Add": lambda ins, at: ins[0] + ins[1],
    "Sub": lambda ins, at: ins[0] - ins[1],
    "Mul": lambda ins, at: ins[0] * ins[1],
    "Div": _div,
    "Neg": lambda ins, at: -ins[0],
    "Equal": lambda ins, at: np.equal(ins[0], ins[1]),
    "Where": lambda ins, at: np.where(ins[0], ins[1], ins[2]),
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "Range": _range,
    "DequantizeLinear": dequantize,
}
