"""ONNX Runtime's QOperator format (``quantize_static(..., quant_format=QOperator)``) read as
the QDQ form the importer already converts (:mod:`.qdq`).

Every QLinear operator computes its float operator on dequantized inputs and quantizes the
result to its output grid (scale ``s``, zero point ``z``)::

    QLinearOp(x_q, s_x, z_x, ..., s_y, z_y) = QuantizeLinear(Op(DequantizeLinear(x_q)), s_y, z_y)

so :func:`qoperator_to_qdq` rewrites each one into exactly that: ``DequantizeLinear`` nodes
on its integer inputs, the float node with the same attributes, a ``QuantizeLinear`` giving
the original output name. Constant weights become ``DequantizeLinear`` of the integers (folded
at load, int8 weights kept for the int8 kernels); an int32 bias is dequantized here with the
scale s_x s_w (zero point 0), as ONNX Runtime's quantizer wrote it. The operators of the
standard domain that ONNX Runtime runs directly on integers (``MaxPool``, ``Flatten``,
``Reshape``, ...) commute with the grid and become DequantizeLinear -> Op -> QuantizeLinear on
their input's grid: the same integers.

Handled (what ONNX Runtime's quantizer emits for MLPs and CNNs): ``QLinearConv``,
``QLinearMatMul`` (left to :mod:`.qdq`), and in the ``com.microsoft`` domain ``QGemm``,
``QLinearAdd``, ``QLinearMul``, ``QLinearSigmoid``, ``QLinearLeakyRelu``,
``QLinearAveragePool``, ``QLinearGlobalAveragePool``, ``QLinearConcat``, ``QLinearSoftmax``.
Only these names are taken from ``com.microsoft``: any other node of that domain is left as
it is and listed by the importer's unsupported-operator error; nothing of the domain is
executed. ONNX Runtime computes some of them with fixed-point multipliers or lookup tables,
so its integers can differ from these by one step where a value falls near a rounding edge.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_nn.errors import ModelFormatError

from .fold import _attrs

__all__ = ["MS_DOMAIN", "MS_OPS", "needs_rewrite", "qoperator_to_qdq"]

MS_DOMAIN = "com.microsoft"
#: the com.microsoft operators read (as their QDQ form); nothing else of the domain is
MS_OPS = frozenset({"QGemm", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
                    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
                    "QLinearSoftmax"})  # fmt: skip
#: standard ops ONNX Runtime runs on integers unchanged (they commute with the grid)
_ON_GRID = frozenset({"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                      "Identity"})  # fmt: skip
#: QLinear op -> (float op, index of each (x, s_x, z_x) input, index of (s_y, z_y))
_ELEMENTWISE = {
    "QLinearAdd": ("Add", (0, 3), 6),
    "QLinearMul": ("Mul", (0, 3), 6),
    "QLinearSigmoid": ("Sigmoid", (0,), 3),
    "QLinearLeakyRelu": ("LeakyRelu", (0,), 3),
    "QLinearAveragePool": ("AveragePool", (0,), 3),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,), 3),
    "QLinearSoftmax": ("Softmax", (0,), 3),
}


#: QLinear op -> (fewest, most inputs) (QLinearConcat: 2 + 3 per input)
_ARITY = {"QLinearConv": (8, 9), "QGemm": (6, 9), "QLinearAdd": (7, 8), "QLinearMul": (7, 8),
          **{op: (4, 5) for op in ("QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
                                   "QLinearGlobalAveragePool", "QLinearSoftmax")}}  # fmt: skip


def needs_rewrite(model) -> bool:
    return any(n.op_type in _REWRITES for n in model.graph.node)


class _Rewrite:
    def __init__(self, model, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.nodes: list = []
        self.new: dict[str, np.ndarray] = {}
        self.grids: dict[str, tuple[str, str]] = {}  # integer tensor -> (scale, zero point)
        self.names = {o for n in model.graph.node for o in n.output} | set(arrays)
        self.count = 0

    def name(self, base: str) -> str:
        while True:
            self.count += 1
            out = f"{base}__qdq{self.count}"
            if out not in self.names:
                self.names.add(out)
                return out

    def node(self, op: str, ins: list[str], out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = out or self.name(ins[0] or op)
        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.new[name] = value
        return name

    def dq(self, x: str, s: str, z: str, axis: int | None = None) -> str:
        return self.node("DequantizeLinear", [x, s, z], **({} if axis is None else {"axis": axis}))

    def q(self, x: str, s: str, z: str, out: str) -> str:
        self.grids[out] = (s, z)
        return self.node("QuantizeLinear", [x, s, z], out)

    def value(self, name: str, node, what: str) -> np.ndarray:
        if name not in self.arrays:
            raise ModelFormatError(
                f"node {node.name or node.output[0]!r} ({node.op_type}): {what} must be an "
                "initializer"
            )
        return self.arrays[name]

    def bias(self, node, b: str, s_x: str, s_w: str) -> str:
        """An int32 bias of scale s_x s_w (per output channel), as a float constant."""
        scale = self.value(s_x, node, "the input scale").astype(np.float32).reshape(())
        scale = scale * self.value(s_w, node, "the weight scale").astype(np.float32).reshape(-1)
        q = self.value(b, node, "the bias").reshape(-1)
        return self.const(b, (q.astype(np.float32) * scale).astype(np.float32))

    def weight_axis(self, node, s_w: str, axis: int) -> int | None:
        return axis if self.value(s_w, node, "the weight scale").size > 1 else None


def qoperator_to_qdq(model, arrays: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
    """The model with its QLinear operators written as DequantizeLinear -> Op ->
    QuantizeLinear (module doc), and the arrays with the constants that adds."""
    import onnx
    from onnx import numpy_helper

    r = _Rewrite(model, arrays)
    for n in model.graph.node:
        if n.domain == MS_DOMAIN and n.op_type not in MS_OPS:
            r.nodes.append(n)  # left for the importer's unsupported-operator error
        elif n.op_type in ("QuantizeLinear", "QLinearMatMul"):  # (the latter: see .qdq)
            r.nodes.append(n)
            s = 1 if n.op_type == "QuantizeLinear" else 6
            r.grids[n.output[0]] = (n.input[s], n.input[s + 1] if len(n.input) > s + 1 else "")
        elif n.op_type in _REWRITES and (n.domain == MS_DOMAIN) == (n.op_type in MS_OPS):
            lo, hi = _ARITY.get(n.op_type, (5, 3 * 64 + 2))
            k = len(n.input)
            if not lo <= k <= hi or (n.op_type == "QLinearConcat" and (k - 2) % 3):
                raise ModelFormatError(
                    f"node {n.name or n.output[0]!r} ({n.op_type}): {k} inputs, not its form"
                )
            try:
                _REWRITES[n.op_type](r, n, list(n.input), _attrs(n))
            except (ValueError, TypeError, IndexError) as exc:  # shapes that do not fit
                raise ModelFormatError(
                    f"node {n.name or n.output[0]!r} ({n.op_type}): {exc}"
                ) from exc
        elif n.op_type in _ON_GRID and n.input and n.input[0] in r.grids:
            s, z = r.grids[n.input[0]]
            y = r.node(n.op_type, [r.dq(n.input[0], s, z), *n.input[1:]], **_attrs(n))
            r.q(y, s, z, n.output[0])
        else:
            r.nodes.append(n)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(r.nodes)
    out.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in r.new.items())
    kept = [o for o in out.opset_import if o.domain != MS_DOMAIN]
    if not any(n.domain == MS_DOMAIN for n in r.nodes):
        del out.opset_import[:]
        out.opset_import.extend(kept)
    return out, {**arrays, **r.new}


def _conv(r: _Rewrite, n, i: list[str], at: dict) -> None:
    """QLinearConv(x, s_x, z_x, w, s_w, z_w, s_y, z_y[, B])."""
    w = r.dq(i[3], i[4], i[5], r.weight_axis(n, i[4], 0))
    ins = [r.dq(i[0], i[1], i[2]), w]
    if len(i) > 8 and i[8]:
        ins.append(r.bias(n, i[8], i[1], i[4]))
    r.q(r.node("Conv", ins, **at), i[6], i[7], n.output[0])


def _gemm(r: _Rewrite, n, i: list[str], at: dict) -> None:
    """QGemm(a, s_a, z_a, b, s_b, z_b[, C[, s_y, z_y]]): a float output without s_y."""
    if at.get("transA", 0) or at.get("alpha", 1.0) != 1.0:
        raise ModelFormatError(f"node {n.name!r} (QGemm): transA or alpha != 1 not supported")
    b = r.dq(i[3], i[4], i[5], r.weight_axis(n, i[4], 0 if at.get("transB", 0) else 1))
    ins = [r.dq(i[0], i[1], i[2]), b]
    if len(i) > 6 and i[6]:
        ins.append(r.bias(n, i[6], i[1], i[4]))
    has_y = len(i) > 7 and i[7]
    y = r.node("Gemm", ins, None if has_y else n.output[0], transB=at.get("transB", 0))
    if has_y:
        r.q(y, i[7], i[8] if len(i) > 8 else "", n.output[0])


def _elementwise(r: _Rewrite, n, i: list[str], at: dict) -> None:
    op, xs, y = _ELEMENTWISE[n.op_type]
    if at.pop("channels_last", 0):
        raise ModelFormatError(f"node {n.name!r} ({n.op_type}): channels_last is not supported")
    if op == "Softmax":
        opset = at.pop("opset", 13)
        if opset < 13 and at.get("axis", 1) not in (-1,):  # the old flattening softmax
            raise ModelFormatError(f"node {n.name!r} (QLinearSoftmax): an opset {opset} "
                                   "softmax over several axes is not supported")  # fmt: skip
    ins = [r.dq(i[k], i[k + 1], i[k + 2]) for k in xs]
    r.q(r.node(op, ins, **at), i[y], i[y + 1] if len(i) > y + 1 else "", n.output[0])


def _concat(r: _Rewrite, n, i: list[str], at: dict) -> None:
    """QLinearConcat(s_y, z_y, x_1, s_1, z_1, x_2, s_2, z_2, ...)."""
    ins = [r.dq(i[k], i[k + 1], i[k + 2]) for k in range(2, len(i), 3)]
    r.q(r.node("Concat", ins, **at), i[0], i[1], n.output[0])


_REWRITES = {"QLinearConv": _conv, "QGemm": _gemm, "QLinearConcat": _concat,
             **{op: _elementwise for op in _ELEMENTWISE}}  # fmt: skip
