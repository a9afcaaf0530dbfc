"""ONNX Runtime's quantized forms -> lepton_nn layers.

- QDQ (``quantize_static(..., quant_format=QDQ)``): constant ``DequantizeLinear`` nodes
  (weights, int32 biases) are folded to float (:func:`.fold.dequantize`); a
  ``QuantizeLinear -> DequantizeLinear`` pair on the data, with the same scale and zero point,
  is one :class:`~lepton_nn.compress.qdq.QuantizeDequantize` layer (the values rounded to the
  grid; ONNX Runtime folds a ReLU into it by a zero point at the grid's low end)::

      y = (clip(rint(x / s) + z, qmin, qmax) - z) s

- dynamic (``quantize_dynamic``): ``DynamicQuantizeLinear(x) -> MatMulInteger(x_q, w_q,
  x_zp, w_zp) -> Cast -> Mul(x_s w_s) [-> Add(b)]`` is ``x W + b`` with W = (w_q - w_zp) w_s
  and x rounded to a uint8 grid from its own range: a ``QuantizeDequantizeRows`` layer, then a
  ``Dense`` on the dequantized weight. ONNX Runtime takes one range for the whole batch (a
  row's output depends on the other rows); lepton_nn one per row, which is what ONNX Runtime
  gives at batch 1.
- ``QLinearMatMul(a_q, a_s, a_zp, b_q, b_s, b_zp, y_s, y_zp)`` between a QuantizeLinear and a
  DequantizeLinear: a Dense on the dequantized B, then the output grid.

Onto the int8 kernels (:func:`int8_dense_pass`, what ``runtime.load`` and ``convert`` write):
a Dense on a symmetric int8 weight whose input is a ``QuantizeDequantize`` layer of 256
values is the runtime's int8 Dense with that (scale, zero point) as its
static activation quantization (an int8 grid shifted by 128 onto uint8), the layer removed
when nothing else reads it: the same rounding of x, the product exact in int32.

The same for a Conv2D on an int8 weight (F, C, kh, kw): the runtime's int8 convolution.
The QOperator format (``QLinearConv``, ``QGemm`` and the other ``com.microsoft`` QLinear
operators) is first rewritten into this QDQ form by :mod:`.qoperator`.
"""

from __future__ import annotations

import numpy as np

from lepton_nn.errors import ModelFormatError

from .fold import _attrs, dequantize
from .importer import Layer, Walk, _label

__all__ = ["QDQ_HANDLERS", "export_qdq", "int8_conv_weight", "int8_dense_pass", "int8_weight"]

#: zero point dtype -> (qmin, qmax)
_GRIDS = {np.dtype("uint8"): (0, 255), np.dtype("int8"): (-128, 127),
          np.dtype("uint16"): (0, 65535), np.dtype("int16"): (-32768, 32767)}  # fmt: skip


def _refuse(node, why: str) -> ModelFormatError:
    return ModelFormatError(f"{_label(node)}: {why}")


def _grid(walk: Walk, node, first: int = 1) -> tuple[float, int, int, int]:
    """(scale, zero point, qmin, qmax) of a per-tensor (de)quantize node's inputs."""
    scale = walk.const(node.input[first], node, "the scale")
    zp_name = walk.optional(node, first + 1)
    zp = walk.const(zp_name, node, "the zero point") if zp_name else np.zeros((), np.uint8)
    if scale.size != 1 or zp.size != 1:
        raise _refuse(node, "only one scale and zero point for the whole tensor is supported")
    if zp.dtype not in _GRIDS or _attrs(node).get("saturate", 1) != 1:
        raise _refuse(node, f"a {zp.dtype} grid cannot be converted")
    qmin, qmax = _GRIDS[zp.dtype]
    s = float(np.float32(scale.reshape(())))
    if not (np.isfinite(s) and s > 0):
        raise _refuse(node, f"scale {s} is not positive")
    return s, int(zp.reshape(())), qmin, qmax


def _readers(walk: Walk, name: str) -> list:
    return [n for n in walk.model.graph.node if name in n.input]


def _check_readers(walk: Walk, node, grid) -> None:
    """The integers ``node`` gives must be read as what they mean: by a DequantizeLinear or
    as the first input of a QLinearMatMul, each of the same grid."""
    name = node.output[0]
    readers = _readers(walk, name)
    ok = bool(readers) and all(
        (r.op_type == "DequantizeLinear" and r.input[0] == name and _grid(walk, r) == grid)
        or (
            r.op_type == "QLinearMatMul"
            and list(r.input).index(name) == 0
            and name not in r.input[1:]
            and _grid(walk, r) == grid
        )  # fmt: skip
        for r in readers
    )
    if not ok:
        raise _refuse(node, "its integers must be read only by a DequantizeLinear (or "
                            "QLinearMatMul) of the same scale and zero point")  # fmt: skip


def _quantize(walk: Walk, node):
    """QuantizeLinear on the data, read only by DequantizeLinear nodes of the same grid."""
    if node.input[0] != walk.cur:
        raise _refuse(node, "only the data can be quantized here")
    grid = _grid(walk, node)
    _check_readers(walk, node, grid)
    s, z, qmin, qmax = grid
    config = {"scale": s, "zero_point": z, "qmin": qmin, "qmax": qmax}
    walk.add(Layer("QuantizeDequantize", config))
    walk.cur, walk.axes = node.output[0], walk.axes
    walk.quantized.add(node.output[0])


def _dequantize(walk: Walk, node):
    """DequantizeLinear of what a converted QuantizeLinear gave: the same value."""
    if node.input[0] not in walk.quantized:
        raise _refuse(node, "dequantizes integers that the network does not compute")
    walk.cur = node.output[0]


def _dense(walk: Walk, node, w: np.ndarray, bias: np.ndarray | None, out: str) -> None:
    from .mapping import _dense as dense

    dense(walk, node, w.astype(np.float64), None if bias is None else bias.astype(np.float64))
    walk.cur = out


def _only_reader(walk: Walk, name: str, op: str, node):
    readers = _readers(walk, name)
    if len(readers) != 1 or readers[0].op_type != op:
        raise _refuse(node, f"its output must be read by one {op} (ONNX Runtime's pattern)")
    return readers[0]


def _dynamic(walk: Walk, node):
    """quantize_dynamic's pattern (module docstring) from its DynamicQuantizeLinear."""
    xq, xs, xz = node.output
    mm = _only_reader(walk, xq, "MatMulInteger", node)
    if list(mm.input[:1]) != [xq] or walk.optional(mm, 2) != xz:
        raise _refuse(mm, "must multiply the quantized data by a constant")
    wq = walk.const(mm.input[1], mm, "the weight")
    wz = walk.const(walk.optional(mm, 3), mm, "the weight's zero point") if walk.optional(
        mm, 3) else np.zeros((), wq.dtype)  # fmt: skip
    scale_mul = _only_reader(walk, xs, "Mul", node)
    other = [i for i in scale_mul.input if i != xs]
    ws = walk.const(other[0], scale_mul, "the weight scale") if len(other) == 1 else None
    cast = _only_reader(walk, mm.output[0], "Cast", mm)
    mul = _only_reader(walk, cast.output[0], "Mul", cast)
    if ws is None or sorted(mul.input) != sorted([cast.output[0], scale_mul.output[0]]):
        raise _refuse(mul, "must scale the integer product by the data and weight scales")
    if ws.size not in (1, wq.shape[1]) or wz.size not in (1, wq.shape[1]):
        raise _refuse(mm, "scales and zero points must be per tensor or per output column")
    w = (wq.astype(np.float64) - wz.astype(np.float64).reshape(1, -1)) * np.asarray(
        ws, np.float32).astype(np.float64).reshape(1, -1)  # fmt: skip
    group, out, bias = [node, mm, scale_mul, cast, mul], mul.output[0], None
    after = _readers(walk, out)
    if len(after) == 1 and after[0].op_type == "Add":
        c = [i for i in after[0].input if i != out]
        b = walk.folded.const(c[0]) if len(c) == 1 else None
        if b is not None and b.size == w.shape[1]:
            bias, out = b.reshape(-1), after[0].output[0]
            group.append(after[0])
    walk.add(Layer("QuantizeDequantizeRows", {}))
    _dense(walk, node, w, bias, out)
    return group


def _qlinear_matmul(walk: Walk, node):
    """QLinearMatMul on the integers of a converted QuantizeLinear."""
    if node.input[0] != walk.cur or walk.cur not in walk.quantized:
        raise _refuse(node, "its first input must be the quantized data")
    b_q, b_s, b_z = (walk.const(node.input[i], node, "B") for i in (3, 4, 5))
    b = dequantize([b_q, b_s, b_z], {"axis": 1})
    if b.ndim != 2:
        raise _refuse(node, "B must be a matrix")
    _dense(walk, node, b, None, node.output[0])
    found = int8_weight((b_q, b_s, b_z, 1), transposed=False)
    if found is not None:  # symmetric int8 B: the int8 kernels
        walk.layers[-1].config["_int8"] = found
    grid = _grid(walk, node, 6)
    _check_readers(walk, node, grid)
    s, z, qmin, qmax = grid
    walk.add(Layer("QuantizeDequantize", {"scale": s, "zero_point": z, "qmin": qmin,
                                          "qmax": qmax}))  # fmt: skip
    walk.quantized.add(node.output[0])


def _alone(walk: Walk, node):
    raise _refuse(node, "is converted only in quantize_dynamic's pattern after a "
                        "DynamicQuantizeLinear")  # fmt: skip


QDQ_HANDLERS = {
    "MatMulInteger": _alone,
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "DynamicQuantizeLinear": _dynamic,
    "QLinearMatMul": _qlinear_matmul,
}


# ----------------------------------------------------------------- onto the int8 kernels


def int8_weight(found: tuple | None, transposed: bool) -> dict | None:
    """(q, scale, zero point, axis) of a folded DequantizeLinear weight B -> ``{"q": int8
    (N, K), "scale": float32 (N,)}`` when it is symmetric int8 (zero points 0, no -128) per
    output column or per tensor; B is (K, N), or (N, K) when ``transposed``."""
    if found is None:
        return None
    q, scale, zp, axis = found
    scale = np.asarray(scale, np.float32).reshape(-1)
    if q is None or q.dtype != np.int8 or q.ndim != 2 or (q == -128).any():
        return None
    if zp is not None and np.any(zp):
        return None
    q_nk = q if transposed else q.T
    n = q_nk.shape[0]
    if scale.size != 1 and (scale.size != n or axis % 2 != (0 if transposed else 1)):
        return None
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        return None
    return {"q": np.ascontiguousarray(q_nk), "scale": np.broadcast_to(scale, (n,)).copy()}


def int8_conv_weight(found: tuple | None) -> dict | None:
    """(q, scale, zero point, axis) of a folded DequantizeLinear Conv weight (F, C, kh, kw)
    -> ``{"q": int8 (F, C kh kw), "scale": float32 (F,), "shape": (F, C, kh, kw)}`` when it
    is symmetric int8 (zero points 0, no -128) per filter (axis 0) or per tensor."""
    if found is None or found[0] is None or np.asarray(found[0]).ndim != 4:
        return None
    q, scale, zp, axis = found
    scale = np.asarray(scale, np.float32).reshape(-1)
    flat = int8_weight((q.reshape(q.shape[0], -1), scale, zp, 0), transposed=True)
    if flat is None or (scale.size > 1 and axis % 4 != 0):
        return None
    return {**flat, "shape": tuple(int(d) for d in q.shape)}


#: layers whose outputs are on their input's grid (views, max pooling)
_ON_GRID = ("Flatten", "Permute", "MaxPool2D", "Dropout")


def int8_dense_pass(walk: Walk, outputs: list[str]) -> dict[str, dict]:
    """A Dense or Conv2D with an int8 weight whose input is a ``QuantizeDequantize`` layer
    of 256 values (directly or through views and max pooling read by it alone, which
    commute with the rounding, a monotone function): the runtime's
    int8 layer with that (scale, zero point) as its static activation quantization (which
    rounds x as the layer does). The layer is removed when nothing else reads it; kept for
    its other readers otherwise (quantizing its values again on the same grid gives the same
    integers). A quantize-dequantize layer after one of the same grid with only views or
    max pooling between them is removed first: it changes nothing. Returns {node name: its int8
    entry (q, scale, activations, and the Conv2D weight's shape)}."""
    by_name = {n["name"]: n for n in walk.nodes}

    def qdq_config(name: str | None) -> dict | None:
        node = by_name.get(name) if name else None
        lay = walk.layers[node["layer"]] if node else None
        if lay is None or lay.cls != "QuantizeDequantize":
            return None
        return {k: v for k, v in lay.config.items() if k != "name"}

    def through_views(name: str | None) -> str | None:
        """The first node before ``name`` that is not a view or max pooling (which keep
        values on a grid); None at a model input."""
        while name in by_name and walk.layers[by_name[name]["layer"]].cls in _ON_GRID:
            name = by_name[name]["inputs"][0]
        return name

    def drop(node: dict) -> None:  # its readers read its input instead
        for m in walk.nodes:
            m["inputs"] = [node["inputs"][0] if i == node["name"] else i for i in m["inputs"]]
        outputs[:] = [node["inputs"][0] if o == node["name"] else o for o in outputs]
        walk.nodes.remove(node)
        by_name.pop(node["name"])

    for n in list(walk.nodes):
        cfg = qdq_config(n["name"])
        if cfg is not None and n["name"] not in outputs:
            if cfg == qdq_config(through_views(n["inputs"][0])):
                drop(n)
    readers: dict[str, int] = {}
    for n in walk.nodes:
        for i in n["inputs"]:
            readers[i] = readers.get(i, 0) + 1
    for o in outputs:
        readers[o] = readers.get(o, 0) + 1
    done: dict[str, dict] = {}
    for n in list(walk.nodes):
        lay = walk.layers[n["layer"]]
        if lay.cls not in ("Dense", "Conv2D") or "_int8" not in lay.config:
            continue
        prev = by_name.get(n["inputs"][0])
        while prev is not None and walk.layers[prev["layer"]].cls in _ON_GRID:
            if readers[prev["name"]] != 1:  # views of the rounded values, read by it alone
                prev = None
                break
            prev = by_name.get(prev["inputs"][0])
        cfg = qdq_config(prev["name"]) if prev is not None else None
        if cfg is None or cfg["qmax"] - cfg["qmin"] != 255:
            continue
        zp = cfg["zero_point"] - cfg["qmin"]  # an int8 grid as the uint8 one, shifted
        act = {"mode": "static", "scale": cfg["scale"], "zero_point": zp}
        done[n["name"]] = {**lay.config["_int8"], "activations": act}
        if readers[prev["name"]] == 1:
            drop(prev)
    return done


# ----------------------------------------------------------------- export


def export_qdq(g, x: str, cls: str, cfg: dict) -> str:
    """Nodes of a ``QuantizeDequantize`` (QuantizeLinear -> DequantizeLinear on its grid) or
    ``QuantizeDequantizeRows`` layer (each row's grid written out: ONNX's
    DynamicQuantizeLinear takes one for the whole tensor) on ``x``, for the exporter."""
    f32 = g.dtype  # the network's float type (QuantizeLinear's x and scale share it)
    if cls == "QuantizeDequantize":
        grid = (cfg["qmin"], cfg["qmax"])
        dtype = {v: k for k, v in _GRIDS.items()}.get(grid)
        if dtype is None or (dtype.itemsize == 2 and g.opset < 21):
            raise ModelFormatError(f"export: the grid {grid} needs a newer opset or type")
        s = g.const(np.array(cfg["scale"], f32))
        z = g.const(np.array(cfg["zero_point"], dtype), dtype)
        return g.node("DequantizeLinear", [g.node("QuantizeLinear", [x, s, z]), s, z])
    zero, top = g.const(np.zeros((), f32)), g.const(np.array(255, f32))
    reduce = (
        ({"axes": [-1]} if g.opset < 18 else {}),
        ([] if g.opset < 18 else [g.const(np.array([-1]), np.int64)]),
    )
    lo = g.node("Min", [g.node("ReduceMin", [x, *reduce[1]], keepdims=1, **reduce[0]), zero])
    hi = g.node("Max", [g.node("ReduceMax", [x, *reduce[1]], keepdims=1, **reduce[0]), zero])
    s = g.node("Div", [g.node("Sub", [hi, lo]), top])
    s = g.node("Where", [g.node("Equal", [s, zero]), g.const(np.ones((), f32)), s])
    z = g.node("Clip", [g.node("Round", [g.node("Div", [g.node("Neg", [lo]), s])]), zero, top])
    q = g.node("Clip", [g.node("Add", [g.node("Round", [g.node("Div", [x, s])]), z]), zero, top])
    return g.node("Mul", [g.node("Sub", [q, z]), s])
