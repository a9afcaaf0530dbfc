"""Plan steps and parsers of the layers added for model interchange (issue 17): the
elementwise activations of :mod:`lepton_nn.backend.activations` (``ElementwiseStep``, the
same NumPy definitions the training ops run), ``Conv1D`` (a :class:`~.steps.ConvStep` on
(C, 1, L) views) and ``Pad1D`` / ``Pad2D`` (``PadStep``). Grouped convolutions live beside
``ConvStep`` in :mod:`.steps`. Parsers check a layer's config and weights from an untrusted
file, as those of :mod:`.steps` do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_nn.backend.activations import ACTIVATION_PARAMS, EXTRA_ACTIVATIONS, LAYER_FUNCTIONS
from lepton_nn.backend.geometry import check_scratch
from lepton_nn.backend.padding import PAD_MODES, check_pads, pad_index
from lepton_nn.backend.reference import ACT_CODE
from lepton_nn.errors import ModelFormatError

from .compression import Int8Weight
from .steps import ConvStep, Op, _fail, activation_name, conv_geometry, grouped_conv_step

__all__ = [
    "ELEMENTWISE_LAYERS",
    "EXTRA_PARSERS",
    "ElementwiseStep",
    "PadStep",
    "conv1d_as_2d",
    "elementwise_params",
    "gelu_name",
    "pad_config",
]


class PadStep:
    """Constant, reflect or replicate padding of the trailing axes (``pads``: (before, after)
    per axis), as :func:`lepton_nn.backend.padding.pad_forward`: constant fills the output
    with the value and copies the input inside it (at every run: a later step may write in
    place); reflect and replicate gather one padded axis at a time (``np.take``)."""

    kind = "pad"

    def __init__(self, label, pads, mode, value, width) -> None:
        self.label, self.pads, self.mode, self.value = label, pads, mode, value
        self.width = width  # per-sample input shape

    def bind(self, src, owned, ctx):
        lead = len(self.width) + 1 - len(self.pads)
        padded = [n + b + a for n, (b, a) in zip(self.width[lead - 1 :], self.pads)]
        out = np.zeros((ctx.n, *self.width[: lead - 1], *padded), ctx.dtype)
        if self.mode == "constant":
            inside = tuple(slice(b, b + n) for n, (b, _) in zip(self.width[lead - 1 :], self.pads))
            return [(out.fill, (self.value,)), (np.copyto, (out[(Ellipsis, *inside)], src))], out
        ops: list[Op] = []
        cur = src
        axes = [k for k, (b, a) in enumerate(self.pads) if b or a]
        for k in axes:
            b, a = self.pads[k]
            ax = lead + k
            shape = list(cur.shape)
            shape[ax] += b + a
            buf = out if k == axes[-1] else np.zeros(shape, ctx.dtype)
            index = pad_index(cur.shape[ax], b, a, self.mode)
            ops.append((np.take, (cur, index, ax, buf, "clip")))
            cur = buf
        if not axes:
            ops.append((np.copyto, (out, src)))
        return ops, out

    def describe(self) -> str:
        return f"{self.label}: {self.mode} pad {self.pads}"


class ElementwiseStep:
    """y = f(x) for an activation of :mod:`lepton_nn.backend.activations` (the definition the
    layer's op runs), with its parameters; in place when the step owns its input."""

    kind = "activation"

    def __init__(self, label: str, name: str, params: dict | None = None) -> None:
        self.label, self.name, self.params = label, name, dict(params or {})
        self.fn = EXTRA_ACTIVATIONS.get(name) or LAYER_FUNCTIONS[name]

    def bind(self, src, owned, ctx):
        out = src if owned else np.zeros(src.shape, ctx.dtype)
        return [(_elementwise, (src, self.fn, self.params, out))], out

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.label}: {self.name}{f'({args})' if args else ''}"


def _elementwise(x, fn, params, out) -> None:
    np.copyto(out, fn(x, **params), casting="same_kind")


def conv1d_as_2d(config: dict, width: tuple[int, ...], label: str):
    """A Conv1D config on (C, L) samples -> (the equivalent Conv2D config on (C, 1, L) with a
    (1, k) kernel, its :func:`~.steps.conv_geometry`); ModelFormatError when bad."""
    if len(width) != 2:
        raise _fail(f"{label} needs sequences (C, L) per sample, its input is {width}")
    one = {}
    for key, default in (("kernel_size", None), ("stride", 1), ("dilation", 1)):
        v = config.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _fail(f"{label}: {key} {v!r} is not a positive int")
        one[key] = [1, v]
    p = config.get("padding", "valid")
    if isinstance(p, int) and not isinstance(p, bool):
        p = [0, 0, p, p]
    elif isinstance(p, list) and len(p) == 2:
        p = [0, 0, *p]
    elif p not in ("valid", "same"):
        raise _fail(f"{label}: padding {p!r:.80} is not 'valid', 'same', an int or a pair")
    as_2d = {**config, **one, "padding": p}
    return as_2d, conv_geometry(as_2d, (width[0], 1, width[1]), label)


def _conv1d(prefix, config, width, params, dtype, label):
    """A Conv1D on (C, L) as a Conv2D on (C, 1, L) with a (1, k) kernel."""
    c, length = width
    _, (filters, k, geom, (oh, ow)) = conv1d_as_2d(config, width, label)
    groups = config.get("groups", 1)
    weight = params.take(f"{prefix}weight", (filters, c // groups, k[1]), dtype, label)
    if isinstance(weight, Int8Weight):
        raise _fail(f"{label}: an int8 Conv1D is not supported")
    use_bias = config.get("use_bias", True)
    bias = params.take(f"{prefix}bias", (filters,), dtype, label) if use_bias else None
    act = activation_name(config.get("activation"), label)
    args = (label, weight, bias, ACT_CODE.get(act, 0), geom, (c, 1, length), (oh, ow))
    if groups > 1:
        step: Any = grouped_conv_step(*args, groups, one_d=True)
    else:
        step = ConvStep(*args, one_d=True)
    return [step], (filters, ow), act


def pad_config(config: dict, width: tuple[int, ...], n_axes: int, label: str):
    """A Pad1D/Pad2D config on per-sample ``width`` (C, ...) -> (pairs, mode, value, output
    shape); ModelFormatError when bad."""
    if len(width) != n_axes + 1:
        raise _fail(f"{label} pads {n_axes} axes of (C, ...) samples, its input is {width}")
    pads = config.get("padding")
    if (
        not isinstance(pads, list)
        or len(pads) != n_axes
        or not all(isinstance(p, list) and len(p) == 2 for p in pads)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for p in pads for v in p)
    ):  # fmt: skip
        raise _fail(f"{label}: padding {pads!r:.80} is not {n_axes} [before, after] pairs")
    mode = config.get("mode", "constant")
    if not isinstance(mode, str) or mode not in PAD_MODES:
        raise _fail(f"{label}: mode {mode!r:.80} is not one of {PAD_MODES}")
    value = _number(config, "value", 0.0, label)
    problem = check_pads(width, pads, mode)
    if problem:
        raise _fail(f"{label}: {problem}")
    out = (width[0], *(n + b + a for n, (b, a) in zip(width[1:], pads)))
    check_scratch(int(np.prod(out, dtype=np.float64)), label, ModelFormatError)
    return tuple((b, a) for b, a in pads), mode, value, out


def _pad(n_axes: int):
    def parse(prefix, config, width, params, dtype, label):
        pairs, mode, value, out = pad_config(config, width, n_axes, label)
        return [PadStep(label, pairs, mode, value, width)], out, None

    return parse


def _number(config: dict, key: str, default, label: str, optional: bool = False):
    v = config.get(key, default)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise _fail(f"{label}: {key} {v!r} is not a finite number")
    return float(v)


def elementwise_params(name: str, config: dict, label: str) -> dict:
    """The parameters of activation layer ``name`` from its config (``ACTIVATION_PARAMS`` of
    :mod:`lepton_nn.backend.activations`: a default of None marks an optional bound)."""
    numbers = ACTIVATION_PARAMS.get(name, {})
    args = {k: _number(config, k, d, label, optional=d is None) for k, d in numbers.items()}
    if name == "clip" and None not in args.values() and args["min"] > args["max"]:
        raise _fail(f"{label}: min {args['min']} is above max {args['max']}")
    if name == "quantize_dequantize":
        problem = qdq_problem(**args)
        if problem:
            raise _fail(f"{label}: {problem}")
    return args


def qdq_problem(scale: float, zero_point: float, qmin: float, qmax: float) -> str | None:
    """Why (scale, zero_point, qmin, qmax) is not an int8 / uint8 / int16 grid, or None."""
    if not scale > 0:
        return f"scale {scale} is not positive"
    if not all(float(v).is_integer() for v in (zero_point, qmin, qmax)):
        return "zero_point, qmin and qmax must be integers"
    if not -32768 <= qmin < qmax <= 65535 or not qmin <= zero_point <= qmax:
        return f"the grid [{qmin}, {qmax}] with zero point {zero_point} is not valid"
    return None


def _elementwise_layer(name: str):
    def parse(prefix, config, width, params, dtype, label):
        return [ElementwiseStep(label, name, elementwise_params(name, config, label))], width, None

    return parse


def gelu_name(config: dict, label: str) -> str:
    """A GELU layer's activation: "gelu" (tanh form, the fused kernels') or "gelu_erf"."""
    approximate = config.get("approximate", "tanh")
    if approximate not in ("tanh", "none"):
        raise _fail(f"{label}: approximate {approximate!r} is not 'tanh' or 'none'")
    return "gelu" if approximate == "tanh" else "gelu_erf"


#: activation layer class -> its activation name
ELEMENTWISE_LAYERS = {
    "LeakyReLU": "leaky_relu",
    "ELU": "elu",
    "HardSigmoid": "hard_sigmoid",
    "Clip": "clip",
    "ReLU6": "relu6",
    "SELU": "selu",
    "HardSwish": "hard_swish",
    "Softplus": "softplus",
    "Mish": "mish",
    "Sign": "sign",
    "QuantizeDequantize": "quantize_dequantize",
    "QuantizeDequantizeRows": "quantize_dequantize_rows",
}

#: class name -> parser, merged into :data:`.steps.PARSERS`
EXTRA_PARSERS = {
    "Conv1D": _conv1d,
    "Pad1D": _pad(1),
    "Pad2D": _pad(2),
    **{cls: _elementwise_layer(name) for cls, name in ELEMENTWISE_LAYERS.items()},
}
