"""Parsers: a layer's config and weights, from an untrusted file, checked and turned into
plan steps (:mod:`.steps`, :mod:`.steps_extra`) and an output shape; the geometry of
convolution and pooling windows that the shape walk (:mod:`.shapes`) shares. Every problem is
a ``ModelFormatError`` naming the layer.

A parser is ``parse(prefix, config, per-sample shape, params, dtype, label) -> (steps, output
per-sample shape, activation name or None)``; :data:`PARSERS` maps a layer class to its own.

The steps of convolutions and pooling (:mod:`.steps_conv`), recurrent layers
(:mod:`.steps_recurrent`) and the interchange layers (:mod:`.steps_extra`) are imported by
the parser that makes them, the first time a plan meets such a layer (:func:`steps_of`), not
with the runtime: a process serving a Dense model never pays for them (cold start). Code that
asks whether a step is one of theirs uses :func:`step_types`, which imports nothing.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_nn.backend.activations import ACTIVATION_PARAMS, EXTRA_ACTIVATIONS
from lepton_nn.backend.geometry import (
    check_scratch,
    permute_dims,
    same_padding,
    window_output_size,
)
from lepton_nn.backend.padding import PAD_MODES, check_pads
from lepton_nn.backend.reference import ACT_CODE
from lepton_nn.errors import ModelFormatError

from .compression import Int8Weight
from .steps import AffineStep, EmbeddingStep, LayerNormStep

__all__ = [
    "ACTIVATIONS",
    "ELEMENTWISE_LAYERS",
    "PARSERS",
    "activation_name",
    "conv1d_as_2d",
    "conv_geometry",
    "elementwise_params",
    "gelu_name",
    "pad_config",
    "pool_geometry",
    "step_types",
    "steps_of",
]


def _fail(msg: str) -> ModelFormatError:
    return ModelFormatError(msg)


def steps_of(module: str) -> Any:
    """Step module ``module`` of this package (``"steps_conv"``, ``"steps_recurrent"``,
    ``"steps_extra"``), imported at its first use."""
    return importlib.import_module(f"{__package__}.{module}")


def step_types(module: str, *names: str) -> tuple[type, ...]:
    """The classes ``names`` of step module ``module`` if it is imported, else ``()``: no
    step of a module not imported yet exists, so ``isinstance(step, step_types(...))`` is
    right without importing it."""
    mod = sys.modules.get(f"{__package__}.{module}")
    return tuple(getattr(mod, n) for n in names) if mod is not None else ()


# --------------------------------------------------------------------------- geometry


def _pair(v: Any, what: str) -> tuple[int, int]:
    a, b = (v, v) if isinstance(v, int) else (v if isinstance(v, list) and len(v) == 2 else (0, 0))
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 1 for t in (a, b)):
        raise _fail(f"{what} must be a positive int or a pair of them, got {v!r}")
    return a, b


def _pads(padding: Any, size, kernel, stride, dilation, what: str) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), as ``lepton_nn.ops.conv.resolve_padding``."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        return same_padding(size, kernel, stride, dilation)
    p = (padding, padding) if isinstance(padding, int) else padding
    if (
        not isinstance(p, (list, tuple))
        or len(p) not in (2, 4)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)
    ):
        raise _fail(
            f"{what}: padding {padding!r} is not 'valid', 'same', an int, a pair or four ints"
        )
    return (p[0], p[1], p[2], p[3]) if len(p) == 4 else (p[0], p[0], p[1], p[1])


def _image(width: tuple[int, ...], label: str) -> tuple[int, int, int]:
    if len(width) != 3:
        raise _fail(f"{label} needs images (C, H, W) per sample, its input is {width}")
    return width  # type: ignore[return-value]


# --------------------------------------------------------------------------- parsers


def conv_geometry(config: dict, width: tuple[int, ...], label: str):
    """A Conv2D config on per-sample input ``width`` (C, H, W) -> (filters, kernel, im2col
    geometry (kh, kw, sh, sw, pt, pl, dh, dw), (OH, OW)); ModelFormatError when bad."""
    c, h, w = _image(width, label)
    filters = config.get("filters")
    if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
        raise _fail(f"{label}: filters {filters!r} is not a positive int")
    groups = _groups(config, c, filters, label)
    k = _pair(config.get("kernel_size"), f"{label}: kernel_size")
    s = _pair(config.get("stride", 1), f"{label}: stride")
    d = _pair(config.get("dilation", 1), f"{label}: dilation")
    pads = _pads(config.get("padding", "valid"), (h, w), k, s, d, label)
    oh, ow = window_output_size((h, w), pads, k, s, d, label, ModelFormatError)
    check_scratch(c // groups * k[0] * k[1] * oh * ow + filters * oh * ow, label, ModelFormatError)
    geom = (k[0], k[1], s[0], s[1], pads[0], pads[2], d[0], d[1])
    return filters, k, geom, (oh, ow)


def _groups(config: dict, channels: int, filters: int, label: str) -> int:
    g = config.get("groups", 1)
    if isinstance(g, bool) or not isinstance(g, int) or g < 1 or channels % g or filters % g:
        raise _fail(
            f"{label}: groups {g!r} does not divide {channels} channels and {filters} filters"
        )
    return g


def _conv(prefix, config, width, params, dtype, label):
    filters, k, geom, (oh, ow) = conv_geometry(config, width, label)
    groups = config.get("groups", 1)
    weight = params.take(f"{prefix}weight", (filters, width[0] // groups, *k), dtype, label)
    use_bias = config.get("use_bias", True)
    bias = params.take(f"{prefix}bias", (filters,), dtype, label) if use_bias else None
    act = activation_name(config.get("activation"), label)
    code = ACT_CODE.get(act, 0)
    conv = steps_of("steps_conv")
    if groups > 1:
        if isinstance(weight, Int8Weight):
            raise _fail(f"{label}: an int8 grouped convolution is not supported")
        step: Any = conv.grouped_conv_step(label, weight, bias, code, geom, width, (oh, ow), groups)
    else:
        cls = conv.Int8ConvStep if isinstance(weight, Int8Weight) else conv.ConvStep
        step = cls(label, weight, bias, code, geom, width, (oh, ow))
    return [step], (filters, oh, ow), act


ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax")
ACTIVATIONS += tuple(n for n in EXTRA_ACTIVATIONS if n not in ("sign", "clip"))
_ALIASES = {None: "identity", "linear": "identity", "none": "identity"}


def activation_name(value: Any, label: str) -> str:
    """An activation name from a config (aliases resolved); ModelFormatError if unknown."""
    name = _ALIASES.get(value, value) if isinstance(value, (str, type(None))) else value
    if name not in ACTIVATIONS:
        raise _fail(f"{label}: unknown activation {value!r}")
    return name


def pool_geometry(config: dict, width: tuple[int, ...], label: str):
    """A MaxPool2D / AvgPool2D config on per-sample input ``width`` (C, H, W) -> (window
    geometry (kh, kw, sh, sw, pt, pl), (OH, OW), count_include_pad); ModelFormatError when
    bad (padding at most half the window, as the layers require)."""
    c, h, w = _image(width, label)
    k = _pair(config.get("pool_size", 2), f"{label}: pool_size")
    stride = config.get("stride")
    s = k if stride is None else _pair(stride, f"{label}: stride")
    pads = _pads(config.get("padding", "valid"), (h, w), k, s, (1, 1), label)
    if max(pads[:2]) > k[0] // 2 or max(pads[2:]) > k[1] // 2:
        raise _fail(f"{label}: padding must be at most half the pool size {k}")
    oh, ow = window_output_size((h, w), pads, k, s, (1, 1), label, ModelFormatError)
    count_pad = config.get("count_include_pad", True)
    if not isinstance(count_pad, bool):
        raise _fail(f"{label}: count_include_pad must be true or false")
    return (k[0], k[1], s[0], s[1], pads[0], pads[2]), (oh, ow), count_pad


def _pool(kind):
    def parse(prefix, config, width, params, dtype, label):
        geom, (oh, ow), count_pad = pool_geometry(config, width, label)
        c = width[0]
        step = steps_of("steps_conv").PoolStep(label, kind, geom, count_pad, c, (oh, ow))
        return [step], (c, oh, ow), None

    return parse


def _global_avg(prefix, config, width, params, dtype, label):
    c, _, _ = _image(width, label)
    return [steps_of("steps_conv").GlobalAvgPoolStep(label, c)], (c,), None


def _batch_norm(prefix, config, width, params, dtype, label):
    if not width:
        raise _fail(f"{label} needs (channels, ...) per sample, its input is {width}")
    ch = width[0]
    eps = config.get("eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise _fail(f"{label}: eps {eps!r} is not a non-negative number")
    gamma, beta, mean, var = (
        params.take(f"{prefix}{n}", (ch,), dtype, label)
        for n in ("weight", "bias", "running_mean", "running_var")
    )
    # as ops.norm.BatchNorm in eval mode: inv = (1 / sqrt(var + eps)).astype(dtype)
    inv = (1.0 / np.sqrt(var + float(eps))).astype(dtype)
    return [AffineStep(label, mean, inv, gamma, beta, width)], width, None


def _layer_norm_parse(prefix, config, width, params, dtype, label):
    if not width:
        raise _fail(f"{label} needs a feature axis, its input is {width}")
    eps = config.get("eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise _fail(f"{label}: eps {eps!r} is not a non-negative number")
    gamma = params.take(f"{prefix}weight", (width[-1],), dtype, label)
    beta = params.take(f"{prefix}bias", (width[-1],), dtype, label)
    return [LayerNormStep(label, gamma, beta, float(eps))], width, None


def _recurrent(cell):
    def parse(prefix, config, width, params, dtype, label):
        if len(width) != 2:
            raise _fail(f"{label} needs sequences (time, features) per sample, got {width}")
        t, f = width
        u = config.get("units")
        if isinstance(u, bool) or not isinstance(u, int) or u < 1:
            raise _fail(f"{label}: units {u!r} is not a positive int")
        if config.get("return_state", False):
            raise _fail(f"{label} with return_state is not supported by the runtime yet")
        flags = [config.get(k, False) for k in ("return_sequences", "bidirectional")]
        if not all(isinstance(v, bool) for v in flags):
            raise _fail(f"{label}: return_sequences and bidirectional must be true or false")
        sequences, bidirectional = flags
        use_bias = config.get("use_bias", True)
        recurrent = steps_of("steps_recurrent").RecurrentStep
        g = recurrent.GATES[cell]
        check_scratch((t + 1) * (8 + g) * u + t * f, label, ModelFormatError)
        dirs = []
        for d in ("", "_reverse") if bidirectional else ("",):
            w_ih = params.take(f"{prefix}weight_ih{d}", (f, g * u), dtype, label)
            w_hh = params.take(f"{prefix}weight_hh{d}", (u, g * u), dtype, label)
            b = params.take(f"{prefix}bias{d}", (g * u,), dtype, label) if use_bias else None
            b_hh = None
            if cell == "GRU" and use_bias:
                b_hh = params.take(f"{prefix}bias_hh{d}", (g * u,), dtype, label)
            dirs.append((w_ih, w_hh, b, b_hh, bool(d)))
        width_out = u * len(dirs)
        out = (t, width_out) if sequences else (width_out,)
        return [recurrent(label, cell, dirs, u, t, sequences)], out, None

    return parse


def _embedding(prefix, config, width, params, dtype, label):
    v, e = config.get("input_dim"), config.get("output_dim")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in (v, e)):
        raise _fail(f"{label}: input_dim and output_dim must be positive ints")
    table = params.take(f"{prefix}weight", (v, e), dtype, label)
    return [EmbeddingStep(label, table)], (*width, e), None


# --------------------------------------------------------------------------- interchange layers
# (issue 17): Conv1D, Pad1D / Pad2D and the elementwise activation layers


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
    conv = steps_of("steps_conv")
    if groups > 1:
        step: Any = conv.grouped_conv_step(*args, groups, one_d=True)
    else:
        step = conv.ConvStep(*args, one_d=True)
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
        return [steps_of("steps_extra").PadStep(label, pairs, mode, value, width)], out, None

    return parse


def _permute(prefix, config, width, params, dtype, label):
    dims = permute_dims(config.get("dims"), len(width))  # (checked by the shape rule)
    step = steps_of("steps_extra").PermuteStep(label, dims, width)
    return [step], tuple(width[d - 1] for d in dims), None


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
        args = elementwise_params(name, config, label)
        return [steps_of("steps_extra").ElementwiseStep(label, name, args)], width, None

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

#: class name -> parser(prefix, config, per-sample shape, params, dtype, label)
#:               -> (steps, output per-sample shape, activation name or None)
PARSERS: dict[str, Callable] = {
    "Conv2D": _conv,
    "MaxPool2D": _pool("max"),
    "AvgPool2D": _pool("avg"),
    "GlobalAvgPool2D": _global_avg,
    "BatchNorm": _batch_norm,
    "LayerNorm": _layer_norm_parse,
    "LSTM": _recurrent("LSTM"),
    "GRU": _recurrent("GRU"),
    "SimpleRNN": _recurrent("SimpleRNN"),
    "Embedding": _embedding,
    # the layers added for model interchange
    "Conv1D": _conv1d,
    "Pad1D": _pad(1),
    "Pad2D": _pad(2),
    "Permute": _permute,
    **{cls: _elementwise_layer(name) for cls, name in ELEMENTWISE_LAYERS.items()},
}
