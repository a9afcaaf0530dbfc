"""ONNX ops -> lepton_nn layers: dense, convolution, pooling, padding, norms, activations
(views and merges: :mod:`.views`).

Each handler ``(walk, node)`` reads the node (its constant inputs folded by :mod:`.fold`),
appends the layers it means to ``walk`` (:class:`~.convert.Walk`) and moves ``walk.cur`` to
its output, with that tensor's axes. Every attribute is either mapped exactly or refused
with a message naming the node: a converted network never computes something else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_nn.backend.geometry import same_padding
from lepton_nn.errors import ModelFormatError

from .fold import _attrs
from .importer import Layer, Walk, _label
from .views import MERGES, VIEWS, gather_concat, merge

__all__ = ["HANDLERS", "MERGES", "gather_concat", "merge"]


def _move(walk: Walk, node, axes) -> None:
    walk.cur, walk.axes = node.output[0], axes


def _refuse(node, why: str) -> ModelFormatError:
    return ModelFormatError(f"{_label(node)}: {why}")


# --------------------------------------------------------------------------- dense


def _dense(walk, node, w: np.ndarray, b: np.ndarray | None):
    walk.flat(node)
    n_in = walk.width()[0]
    if w.ndim != 2 or w.shape[0] != n_in:
        raise _refuse(node, f"weight of shape {w.shape} for {n_in} input features")
    u = walk.atoms.new(w.shape[1], "u")
    config = {"units": int(w.shape[1]), "activation": "identity", "use_bias": b is not None,
              "in_features": n_in}  # fmt: skip
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    walk.add(Layer("Dense", config, params), [("N",), (u,)])
    _move(walk, node, [("N",), (u,)])


def _int8_weight(walk, name: str, transposed: bool) -> None:
    """Note on the Dense just added the int8 weight (q (N, K), scale (N,)) its float weight
    was dequantized from, when that is symmetric int8 per output column (or per tensor)."""
    from .qdq import int8_weight

    found = int8_weight(walk.folded.quantized.get(name), transposed)
    if found is not None:
        walk.layers[-1].config["_int8"] = found


def _gemm(walk, node):
    at = _attrs(node)
    if at.get("transA", 0) or node.input[0] != walk.cur:
        raise _refuse(node, "the data must be its first input, not transposed")
    w = walk.const(node.input[1], node, "B").astype(np.float64)
    w = (w.T if at.get("transB", 0) else w) * at.get("alpha", 1.0)
    c = walk.optional(node, 2)
    b = None
    if c:
        b = walk.const(c, node, "C").astype(np.float64) * at.get("beta", 1.0)
        b = np.broadcast_to(b, (1, w.shape[1]) if b.ndim == 2 else (w.shape[1],)).reshape(-1)
        if b.shape != (w.shape[1],):
            raise _refuse(node, "C must broadcast along the output features only")
    _dense(walk, node, w, b)
    if at.get("alpha", 1.0) == 1.0:
        _int8_weight(walk, node.input[1], bool(at.get("transB", 0)))


def _matmul(walk, node):
    if node.input[0] != walk.cur or len(walk.axes) != 2:
        raise _refuse(node, "only (batch, features) @ constant weight is supported")
    _dense(walk, node, walk.const(node.input[1], node, "the weight"), None)
    _int8_weight(walk, node.input[1], False)


def _channel_vector(walk, node, c: np.ndarray) -> np.ndarray | None:
    """``c`` as one value per channel (the network output's axis 1), if it broadcasts so
    on the ONNX tensor; else None."""
    r = len(walk.axes)
    if c.ndim > r:
        return None
    cb = c.reshape((1,) * (r - c.ndim) + c.shape)
    ch = walk.canon[1] if len(walk.canon) > 1 else ()
    size = walk.atoms.size(ch)
    for i, n in enumerate(cb.shape):
        if n != 1 and (walk.atoms.real(walk.axes[i]) != walk.atoms.real(ch) or n != size):
            return None
    return np.broadcast_to(cb.reshape(-1), (size,)) if cb.size == 1 else cb.reshape(-1)


def _arith(walk, node):
    op = node.op_type
    if list(node.input).count(walk.cur) != 1:
        raise _refuse(node, "combines the data with itself: not supported")
    first = node.input[0] == walk.cur
    other = node.input[1] if first else node.input[0]
    v = walk.const(other, node, "the other operand").astype(np.float64)
    vec = _channel_vector(walk, node, v)
    if vec is None:
        raise _refuse(node, f"operand of shape {v.shape} is not one value per channel")
    scale, shift = np.ones_like(vec), np.zeros_like(vec)
    if op == "Add":
        shift = vec
    elif op == "Sub":
        scale, shift = (scale, -vec) if first else (-scale, vec)
    elif op == "Mul":
        scale = vec
    elif first:  # Div
        scale = 1.0 / vec
    else:
        raise _refuse(node, "dividing by the data cannot be converted")
    _scale_shift(walk, node, scale, shift, op in ("Add", "Sub") and first)


def _scaler(walk, node):
    """ai.onnx.ml Scaler: y = (x - offset) scale, per feature (or one value for all)."""
    at = _attrs(node)
    offset = np.asarray(at.get("offset", [0.0]), np.float64)
    scale = np.asarray(at.get("scale", [1.0]), np.float64)
    n = walk.atoms.size(walk.canon[-1])
    if len(walk.canon) != 2 or offset.size not in (1, n) or scale.size not in (1, n):
        raise _refuse(node, "offset and scale must hold one value per feature")
    scale, offset = np.broadcast_to(scale, (n,)), np.broadcast_to(offset, (n,))
    _scale_shift(walk, node, scale, -offset * scale, False)


def _scale_shift(walk, node, scale, shift, additive: bool) -> None:
    """y = x scale + shift per channel: into the bias of the layer before (``additive``:
    scale is 1), into an affine layer before, else a new affine layer."""
    last = walk.last()
    if (
        additive
        and last is not None
        and last.cls in ("Dense", "Conv2D", "Conv1D")
        and last.config["activation"] == "identity"
    ):  # a bias added to the output of the layer right before
        last.params["bias"] = last.params.get("bias", 0.0) + shift.astype(walk.dtype)
        last.config["use_bias"] = True
    elif last is not None and last.cls == "BatchNorm" and last.config.get("_affine"):
        p = last.params  # x w + b, then scale and shift: x (w scale) + (b scale + shift)
        p["weight"], p["bias"] = p["weight"] * scale, p["bias"] * scale + shift
    else:
        _affine(walk, scale, shift)
    _move(walk, node, walk.axes)


def _affine(walk, scale: np.ndarray, shift: np.ndarray) -> None:
    """y = x scale + shift per channel as a BatchNorm with mean 0, var 1, eps 0."""
    n = scale.size
    cfg = {"momentum": 0.1, "eps": 0.0, "num_features": n, "_affine": True}
    params = {"weight": scale, "bias": shift, "running_mean": np.zeros(n),
              "running_var": np.ones(n)}  # fmt: skip
    walk.add(Layer("BatchNorm", cfg, params))


# --------------------------------------------------------------------------- images


def _pads(walk, node, at, size, k, s, d) -> Any:
    """ONNX pads / auto_pad -> (our padding, (top, bottom, left, right)): "same" when they
    are what "same" gives, [ph, pw] when symmetric, else the four ints."""
    auto = at.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    same = same_padding(size, k, s, d)
    if auto == "VALID":
        return [0, 0], (0, 0, 0, 0)
    if auto == "SAME_UPPER":
        return "same", same
    if auto == "SAME_LOWER":
        pads = (same[1], same[0], same[3], same[2])
    else:
        p = list(at.get("pads", [0, 0, 0, 0]))
        pads = (p[0], p[2], p[1], p[3])
    if pads == same and pads != (0, 0, 0, 0):
        return "same", same
    if pads[0] == pads[1] and pads[2] == pads[3]:
        return [pads[0], pads[2]], pads
    return list(pads), pads


def _image_in(walk, node):
    walk.require(node, walk.canon, 4)
    if len(walk.axes) != 4:
        raise _refuse(node, "only 2-D images (N, C, H, W) are supported")
    return walk.width()


def _out_hw(size, pads, k, s, d, ceil=False):
    out = []
    for i in range(2):
        span = size[i] + pads[2 * i] + pads[2 * i + 1] - d[i] * (k[i] - 1) - 1
        out.append((-(-span // s[i]) if ceil else span // s[i]) + 1)
    return out


def _new_image(walk, node, c, *spatial):
    axes = [("N",), (walk.atoms.new(c, "c"),)] + [(walk.atoms.new(n, "s"),) for n in spatial]
    walk.canon = axes
    _move(walk, node, axes)


def _conv(walk, node):
    """Conv on (N, C, H, W) -> Conv2D; on (N, C, L) -> Conv1D (as a (1, L) image)."""
    one_d = len(walk.axes) == 3
    if one_d:
        walk.require(node, walk.canon, 3)
        c, length = walk.width()
        size = (1, length)
    else:
        c, *size = _image_in(walk, node)
    at = _attrs(node)
    w = walk.const(node.input[1], node, "the weight")
    groups = int(at.get("group", 1))
    if w.ndim != len(walk.axes) or w.shape[1] * groups != c or w.shape[0] % groups:
        raise _refuse(node, f"weight {w.shape} does not fit {c} input channels in {groups} groups")
    k = list(at.get("kernel_shape", w.shape[2:]))
    s, d = list(at.get("strides", [1] * len(k))), list(at.get("dilations", [1] * len(k)))
    if one_d:
        k, s, d = [1, *k], [1, *s], [1, *d]
        if "pads" in at:
            at = {**at, "pads": [0, at["pads"][0], 0, at["pads"][1]]}
    padding, pads = _pads(walk, node, at, tuple(size), k, s, d)
    bias = walk.optional(node, 2)
    params = {"weight": w}
    if bias:
        params["bias"] = walk.const(bias, node, "the bias")
    config = {"filters": int(w.shape[0]), "kernel_size": k, "stride": s, "padding": padding,
              "dilation": d, "activation": "identity", "use_bias": bool(bias),
              "in_channels": c, "groups": groups}  # fmt: skip
    oh, ow = _out_hw(size, pads, k, s, d)
    if one_d:
        if padding != "same":
            padding = list(pads[2:])
        config.update(kernel_size=k[1], stride=s[1], dilation=d[1], padding=padding)
        walk.add(Layer("Conv1D", config, params))
        return _new_image(walk, node, w.shape[0], ow)
    walk.add(Layer("Conv2D", config, params))
    if groups == 1:  # an int8 weight: the int8 conv kernel (no grouped one yet)
        from .qdq import int8_conv_weight

        found = int8_conv_weight(walk.folded.quantized.get(node.input[1]))
        if found is not None:
            walk.layers[-1].config["_int8"] = found
    _new_image(walk, node, w.shape[0], oh, ow)


def _pool(walk, node):
    c, h, w = _image_in(walk, node)
    at = _attrs(node)
    k = list(at["kernel_shape"])
    s = list(at.get("strides", [1, 1]))
    if list(at.get("dilations", [1, 1])) != [1, 1]:
        raise _refuse(node, "dilated pooling is not supported")
    padding, pads = _pads(walk, node, at, (h, w), k, s, (1, 1))
    oh, ow = _out_hw((h, w), pads, k, s, (1, 1))
    if at.get("ceil_mode", 0) and [oh, ow] != _out_hw((h, w), pads, k, s, (1, 1), True):
        raise _refuse(node, "ceil_mode=1 changes the output size here: not supported")
    config: dict = {"pool_size": k, "stride": s, "padding": padding}
    if node.op_type == "MaxPool":
        walk.add(Layer("MaxPool2D", config))
    else:
        config["count_include_pad"] = bool(at.get("count_include_pad", 0))
        walk.add(Layer("AvgPool2D", config))
    _new_image(walk, node, c, oh, ow)


def _global_avg(walk, node):
    c, _, _ = _image_in(walk, node)
    ch = walk.canon[1]
    walk.add(Layer("GlobalAvgPool2D", {}), [("N",), ch])
    one = (walk.atoms.new(1, "one"),)
    _move(walk, node, [("N",), ch, one, one])


def _batch_norm(walk, node):
    at = _attrs(node)
    if at.get("training_mode", 0):
        raise _refuse(node, "training_mode=1 cannot be converted")
    walk.require(node, walk.canon)
    if walk.atoms.real(walk.axes[1]) != walk.atoms.real(walk.canon[1]):
        raise _refuse(node, "its channel axis is not the network's axis 1")
    gamma, beta, mean, var = (walk.const(node.input[i], node, "statistics") for i in range(1, 5))
    n = walk.atoms.size(walk.canon[1])
    cfg = {"momentum": 0.1, "eps": float(at.get("epsilon", 1e-5)), "num_features": n}
    params = {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var}
    walk.add(Layer("BatchNorm", cfg, params))
    _move(walk, node, walk.axes)


def _layer_norm(walk, node):
    at = _attrs(node)
    walk.require(node, walk.canon)
    axis = at.get("axis", -1) % len(walk.axes)
    atoms = tuple(a for ax in walk.axes[axis:] for a in walk.atoms.real(ax))
    if atoms != walk.atoms.real(walk.canon[-1]) or len(walk.canon) < 2:
        raise _refuse(node, "only a normalization over the last axis is supported")
    d = walk.atoms.size(walk.canon[-1])
    gamma = walk.const(node.input[1], node, "scale").reshape(-1)
    beta = walk.const(node.input[2], node, "B").reshape(-1) if walk.optional(node, 2) else None
    beta = np.zeros(d) if beta is None else beta
    if gamma.size != d or beta.size != d:
        raise _refuse(node, "scale and bias must hold one value per feature")
    cfg = {"eps": float(at.get("epsilon", 1e-5)), "features": d}
    walk.add(Layer("LayerNorm", cfg, {"weight": gamma, "bias": beta}))
    _move(walk, node, walk.axes)


# --------------------------------------------------------------------------- activations


def _activation(name):
    def handle(walk, node):
        walk.add(Layer("Activation", {"activation": name}))
        _move(walk, node, walk.axes)

    return handle


def _softmax(walk, node):
    at = _attrs(node)
    r = len(walk.axes)
    axis = at.get("axis", -1 if walk.opset >= 13 else 1) % r
    tail = walk.axes[axis:] if walk.opset < 13 else walk.axes[axis:]
    atoms = tuple(a for ax in tail for a in walk.atoms.real(ax))
    if walk.opset >= 13 and any(walk.atoms.real(ax) for ax in walk.axes[axis + 1 :]):
        atoms = ()
    if atoms != walk.atoms.real(walk.canon[-1]):
        raise _refuse(node, "only a softmax over the last axis is supported")
    _activation("softmax" if node.op_type == "Softmax" else "log_softmax")(walk, node)


def _gelu(walk, node):
    approx = _attrs(node).get("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    _activation("gelu" if approx == "tanh" else "gelu_erf")(walk, node)


def _layer(cls, attrs=(), defaults=None):
    """An activation layer of class ``cls`` taking the node's attributes ``attrs``
    (ONNX's defaults are lepton_nn's); ``defaults``: attributes that must keep theirs."""

    def handle(walk, node):
        at = _attrs(node)
        for k, v in (defaults or {}).items():
            if not np.isclose(at.get(k, v), v, rtol=1e-7, atol=0):
                raise _refuse(node, f"{k}={at[k]} differs from lepton_nn's fixed {v}")
        walk.add(Layer(cls, {k: float(at[k]) for k in attrs if k in at}))
        _move(walk, node, walk.axes)

    return handle


def _clip(walk, node):
    at = _attrs(node)
    lo, hi = at.get("min"), at.get("max")  # opset < 11: attributes
    if walk.optional(node, 1):
        lo = float(walk.const(node.input[1], node, "min"))
    if walk.optional(node, 2):
        hi = float(walk.const(node.input[2], node, "max"))
    lo = None if lo is None or np.isinf(lo) else float(lo)
    hi = None if hi is None or np.isinf(hi) else float(hi)
    if lo == 0.0 and hi is None:
        return _activation("relu")(walk, node)
    walk.add(Layer("Clip", {"min": lo, "max": hi}))
    _move(walk, node, walk.axes)


def _pad(walk, node):
    at = _attrs(node)
    mode = at.get("mode", b"constant")
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(
        mode.decode() if isinstance(mode, bytes) else mode
    )
    pads = [int(v) for v in walk.const(node.input[1], node, "pads").reshape(-1)]
    r = len(walk.axes)
    axes = list(range(r))
    if walk.optional(node, 3):
        axes = [int(a) % r for a in walk.const(node.input[3], node, "axes").reshape(-1)]
    value = float(walk.const(node.input[2], node, "value")) if walk.optional(node, 2) else 0.0
    k = len(axes)
    per = {a: (pads[i], pads[i + k]) for i, a in enumerate(axes)}
    spatial = r - 2
    if mode is None or spatial not in (1, 2) or any(per.get(a, (0, 0)) != (0, 0) for a in (0, 1)):
        raise _refuse(node, "only padding of the 1 or 2 trailing axes of (N, C, ...) is supported")
    walk.require(node, walk.canon, r)
    amounts = [list(per.get(a, (0, 0))) for a in range(2, r)]
    walk.add(Layer(f"Pad{spatial}D", {"padding": amounts, "mode": mode, "value": value}))
    sizes = [walk.atoms.size(ax) + sum(p) for ax, p in zip(walk.canon[2:], amounts)]
    axes_out = [("N",), walk.canon[1]] + [(walk.atoms.new(n, "p"),) for n in sizes]
    walk.canon = axes_out
    _move(walk, node, axes_out)


def _concat_one(walk, node):
    raise _refuse(node, "joins a value with constants or with itself: not supported")


def _recurrent(walk, node):
    from .recurrent import recurrent

    recurrent(walk, node)


def _quantized(walk, node):
    from .qdq import QDQ_HANDLERS

    return QDQ_HANDLERS[node.op_type](walk, node)


HANDLERS = {
    **VIEWS,
    "Concat": _concat_one,
    "Gemm": _gemm,
    "Scaler": _scaler,
    "MatMul": _matmul,
    "Add": _arith,
    "Sub": _arith,
    "Mul": _arith,
    "Div": _arith,
    "Conv": _conv,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_avg,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Relu": _activation("relu"),
    "Sigmoid": _activation("sigmoid"),
    "Tanh": _activation("tanh"),
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Gelu": _gelu,
    "Clip": _clip,
    "Pad": _pad,
    "LeakyRelu": _layer("LeakyReLU", ["alpha"]),
    "Elu": _layer("ELU", ["alpha"]),
    "Selu": _layer("SELU", defaults={"alpha": 1.6732632423543772, "gamma": 1.0507009873554805}),
    "HardSigmoid": _layer("HardSigmoid", ["alpha", "beta"]),
    "HardSwish": _layer("HardSwish"),
    "Softplus": _layer("Softplus"),
    "Mish": _layer("Mish"),
    "Sign": _layer("Sign"),
    "LSTM": _recurrent,
    "GRU": _recurrent,
    "RNN": _recurrent,
    **dict.fromkeys(
        (
            "QuantizeLinear",
            "DequantizeLinear",
            "DynamicQuantizeLinear",
            "QLinearMatMul",
            "MatMulInteger",
        ),
        _quantized,
    ),  # fmt: skip
}
