"""int8 Dense layers as ONNX: the runtime's own int8 arithmetic, node for node.

The weight is stored as int8 (``q`` (N, K), 4x smaller than float) with its per-channel
scale; the activations are quantized as :meth:`~lepton_nn.backend.reference.ReferenceBackend.
quantize_rows` does (per row for dynamic files, the calibrated pair for static ones), in
float32 ONNX ops, and the product is exact::

    lo, hi = min(0, min x), max(0, max x)     (per row; static: the file's scale s, zp)
    s = (hi - lo) / 255 (1 when 0),  zp = clip(round(-lo / s), 0, 255)
    q = clip(round(x * (1 / s)) + zp, 0, 255)                   round half to even
    acc = (q - zp) @ q_w^T          in float64: integers, exact (as the int32 kernel)
    y = float32(acc) * (s * s_w) + b                            then the activation

so ONNX Runtime gives what the runtime's int8 kernels give, to the last bit or so (the
float32 operations are the same, in the same order).
"""

from __future__ import annotations

import numpy as np

__all__ = ["int8_dense"]


def int8_dense(g, x: str, w, bias: str | None) -> str:
    """Nodes of y = x W + b for an int8 weight ``w`` (an ``Int8Weight``) on ``x`` (N, K)."""
    f32 = np.float32
    name = w.param.replace(".", "_")
    q_w = g.init(f"{name}_q_t", np.ascontiguousarray(w.q.T))  # int8 (K, N)
    if w.act_mode == "static":
        s = g.const(np.array([[w.act_scale]], f32))
        zp = g.const(np.array([[w.act_zero_point]], f32))
    else:
        zero = g.const(np.zeros((1, 1), f32))
        lo = g.node("Min", [g.node("ReduceMin", [x], axes=[1], keepdims=1), zero])
        hi = g.node("Max", [g.node("ReduceMax", [x], axes=[1], keepdims=1), zero])
        s = g.node("Div", [g.node("Sub", [hi, lo]), g.const(np.array(255, f32))])
        is_zero = g.node("Equal", [s, zero])
        s = g.node("Where", [is_zero, g.const(np.ones((1, 1), f32)), s])
        zp = g.node("Clip", [g.node("Round", [g.node("Div", [g.node("Neg", [lo]), s])]),
                             g.const(np.array(0, f32)), g.const(np.array(255, f32))])  # fmt: skip
    inv = g.node("Div", [g.const(np.array(1, f32)), s])
    q = g.node("Add", [g.node("Round", [g.node("Mul", [x, inv])]), zp])
    q = g.node("Clip", [q, g.const(np.array(0, f32)), g.const(np.array(255, f32))])
    centered = g.node("Cast", [g.node("Sub", [q, zp])], to=11)  # float64
    acc = g.node("MatMul", [centered, g.node("Cast", [q_w], to=11)])
    scale = g.node("Mul", [s, g.const(w.scale.astype(f32).reshape(1, -1))])
    y = g.node("Mul", [g.node("Cast", [acc], to=1), scale])
    return g.node("Add", [y, bias]) if bias else y
