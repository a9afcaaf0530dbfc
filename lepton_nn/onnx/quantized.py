"""int8 layers as ONNX.

Dense: the runtime's own int8 arithmetic, node for node.

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

Conv2D: standard QDQ (what ``quantize_static(..., QuantFormat.QDQ)`` writes, which ONNX
Runtime and other engines fuse into an int8 convolution): the input through
``QuantizeLinear -> DequantizeLinear`` on its grid (static: the calibrated (s, zp), uint8;
dynamic: each image's own pair, computed as above over the image's C H W values, given
per axis 0), the weight as ``DequantizeLinear(q_w int8 (F, C, kh, kw), s_w (F,), axis=0)``,
then a float ``Conv``. The runtime's integer sum times s s_w is that Conv up to float32
rounding, and ONNX rounds x / s where the runtime rounds x (1 / s): the two differ only
where a value lies on a rounding edge of the next layer's grid (one step there).
"""

from __future__ import annotations

import numpy as np

__all__ = ["int8_conv_inputs", "int8_dense"]


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
        axes = {"axes": [1]} if g.opset < 18 else {}  # an input from opset 18
        more = [] if g.opset < 18 else [g.const(np.array([1]), np.int64)]
        lo = g.node("Min", [g.node("ReduceMin", [x, *more], keepdims=1, **axes), zero])
        hi = g.node("Max", [g.node("ReduceMax", [x, *more], keepdims=1, **axes), zero])
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


def int8_conv_inputs(g, x: str, w) -> list[str]:
    """[input, weight] of an int8 Conv2D's ``Conv`` node (module doc): ``x`` quantized and
    dequantized on its grid, the int8 weight ``w`` (an ``Int8Weight``) dequantized."""
    f32, u8 = np.float32, np.uint8
    name = w.param.replace(".", "_")
    q_w = g.init(f"{name}_q", np.ascontiguousarray(w.q.reshape(w.conv_shape)))  # int8
    s_w = g.init(f"{name}_scale", np.ascontiguousarray(w.scale, f32))
    z_w = g.init(f"{name}_zero_point", np.zeros(w.scale.shape, np.int8))
    weight = g.node("DequantizeLinear", [q_w, s_w, z_w], axis=0)
    if w.act_mode == "static":
        s = g.const(np.array(w.act_scale, f32))
        zp = g.const(np.array(w.act_zero_point, u8), u8)
        return [g.node("DequantizeLinear", [g.node("QuantizeLinear", [x, s, zp]), s, zp]),
                weight]  # fmt: skip
    flat = g.node("Flatten", [x], axis=1)  # (N, C H W): one grid per image
    zero = g.const(np.zeros((), f32))
    axes = {"axes": [1]} if g.opset < 18 else {}
    more = [] if g.opset < 18 else [g.const(np.array([1]), np.int64)]
    lo = g.node("Min", [g.node("ReduceMin", [flat, *more], keepdims=0, **axes), zero])
    hi = g.node("Max", [g.node("ReduceMax", [flat, *more], keepdims=0, **axes), zero])
    s = g.node("Div", [g.node("Sub", [hi, lo]), g.const(np.array(255, f32))])
    s = g.node("Where", [g.node("Equal", [s, zero]), g.const(np.ones((), f32)), s])
    zp = g.node("Clip", [g.node("Round", [g.node("Div", [g.node("Neg", [lo]), s])]), zero,
                         g.const(np.array(255, f32))])  # fmt: skip
    zp = g.node("Cast", [zp], to=2)  # uint8
    q = g.node("QuantizeLinear", [x, s, zp], axis=0)
    return [g.node("DequantizeLinear", [q, s, zp], axis=0), weight]
