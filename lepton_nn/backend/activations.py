"""Elementwise activations beyond the five fused ones (``reference.ACTIVATIONS``), in NumPy.

One definition each, shared by the training ops (:mod:`lepton_nn.ops.activation`, which add
the derivatives) and the runtime's elementwise step, so a served model computes exactly what
its layers compute. Each takes an array and keyword parameters and returns a new array of
the same dtype (parameters are Python floats: NumPy keeps a float32 input float32).

``erf`` is here because NumPy has none: Taylor series below |x| = 1.5, the continued
fraction of erfc above, in float64 (|error| < 1e-15 against ``math.erf``;
measured 7.8e-16 over [-8, 8]).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EXTRA_ACTIVATIONS", "ACTIVATION_PARAMS", "LAYER_FUNCTIONS", "apply", "erf"]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_HALF = math.sqrt(0.5)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_ERF_SERIES_MAX = 1.5


def erf(x: np.ndarray) -> np.ndarray:
    """erf(x) = 2/sqrt(pi) int_0^x e^(-t^2) dt, elementwise, computed in float64.

    |x| < 1.5: 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1)) (30 terms);
    |x| >= 1.5: 1 - erfc(|x|), erfc(a) = e^(-a^2)/sqrt(pi) / (a + (1/2)/(a + 1/(a + (3/2)/...)))
    (the continued fraction cut at depth 80), sign restored.
    """
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    out = np.empty_like(x)
    small = a < _ERF_SERIES_MAX
    xs = x[small]
    z = xs * xs
    term, s = xs.copy(), xs.copy()
    for n in range(1, 31):
        term *= -z / n
        s += term / (2 * n + 1)
    out[small] = _TWO_OVER_SQRT_PI * s
    big = ~small & ~np.isnan(a)
    ab = a[big]
    f = ab.copy()
    for k in range(80, 0, -1):
        f = ab + (k / 2) / f
    with np.errstate(under="ignore"):
        erfc = np.exp(-ab * ab) / math.sqrt(math.pi) / f
    out[big] = np.copysign(1.0 - erfc, x[big])
    out[np.isnan(a)] = np.nan
    return out


def leaky_relu(x, alpha=0.01):
    """y = x (x > 0), alpha x otherwise."""
    return np.where(x > 0, x, alpha * x)


def relu6(x):
    """y = min(max(x, 0), 6)."""
    return np.minimum(np.maximum(x, 0.0), 6.0)


def elu(x, alpha=1.0):
    """y = x (x > 0), alpha (e^x - 1) otherwise."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def selu(x):
    """y = scale elu(x, alpha), alpha = 1.6733, scale = 1.0507 (self-normalizing)."""
    return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))


def hard_sigmoid(x, alpha=0.2, beta=0.5):
    """y = max(0, min(1, alpha x + beta)) (ONNX HardSigmoid; PyTorch's is alpha = 1/6)."""
    return np.minimum(np.maximum(alpha * x + beta, 0.0), 1.0)


def hard_swish(x):
    """y = x hard_sigmoid(x, 1/6, 1/2) = x relu6(x + 3) / 6."""
    return x * hard_sigmoid(x, 1.0 / 6.0, 0.5)


def softplus(x):
    """y = log(1 + e^x), as logaddexp(x, 0) (no overflow)."""
    return np.logaddexp(x, 0.0).astype(x.dtype, copy=False)


def mish(x):
    """y = x tanh(softplus(x))."""
    return x * np.tanh(softplus(x))


def gelu_erf(x):
    """y = x Phi(x) = x/2 (1 + erf(x / sqrt(2))), the exact GELU."""
    return (0.5 * x * (1.0 + erf(x * _SQRT_HALF))).astype(x.dtype, copy=False)


def sign(x):
    """y = -1, 0 or 1."""
    return np.sign(x)


def clip(x, min=None, max=None):  # noqa: A002 - the ONNX attribute names
    """y = min(max(x, min), max); a missing bound is not applied."""
    if min is not None:
        x = np.maximum(x, min)
    if max is not None:
        x = np.minimum(x, max)
    return x


def quantize_dequantize(x, scale=1.0, zero_point=0.0, qmin=0.0, qmax=255.0):
    """y = (clip(rint(x / scale) + zero_point, qmin, qmax) - zero_point) scale: x rounded to
    the int8 / uint8 grid (ONNX QuantizeLinear then DequantizeLinear, ties to even)."""
    s = x.dtype.type(scale)
    q = np.clip(np.rint(x / s) + x.dtype.type(zero_point), qmin, qmax)
    return ((q - x.dtype.type(zero_point)) * s).astype(x.dtype, copy=False)


#: name -> forward function, for the activations that the fused kernels do not compute
EXTRA_ACTIVATIONS = {
    "leaky_relu": leaky_relu,
    "relu6": relu6,
    "elu": elu,
    "selu": selu,
    "hard_sigmoid": hard_sigmoid,
    "hard_swish": hard_swish,
    "softplus": softplus,
    "mish": mish,
    "gelu_erf": gelu_erf,
    "sign": sign,
    "clip": clip,
}


def quantize_dequantize_rows(x):
    """Each row of x (its last axis) rounded to its own uint8 grid, as ONNX's
    DynamicQuantizeLinear takes one for a whole tensor: lo = min(0, min x), hi = max(0, max x),
    s = (hi - lo) / 255 (1 when 0), z = clip(rint(-lo / s), 0, 255), then as
    :func:`quantize_dequantize`."""
    t = x.dtype.type
    lo = np.minimum(x.min(axis=-1, keepdims=True), t(0))
    hi = np.maximum(x.max(axis=-1, keepdims=True), t(0))
    s = (hi - lo) / t(255)
    s[s == 0] = 1
    z = np.clip(np.rint(-lo / s), 0, 255)
    return ((np.clip(np.rint(x / s) + z, 0, 255) - z) * s).astype(x.dtype, copy=False)


#: functions of elementwise layers only (never a layer's ``activation`` string)
LAYER_FUNCTIONS = {
    "quantize_dequantize": quantize_dequantize,
    "quantize_dequantize_rows": quantize_dequantize_rows,
}

#: name -> its parameters and their defaults (the string form of an activation uses these)
ACTIVATION_PARAMS = {
    "leaky_relu": {"alpha": 0.01},
    "elu": {"alpha": 1.0},
    "hard_sigmoid": {"alpha": 0.2, "beta": 0.5},
    "clip": {"min": None, "max": None},
    "quantize_dequantize": {"scale": 1.0, "zero_point": 0.0, "qmin": 0.0, "qmax": 255.0},
}


def apply(name: str, x: np.ndarray, out: np.ndarray | None = None, **params) -> np.ndarray:
    """``EXTRA_ACTIVATIONS[name](x, **params)``, written into ``out`` when given."""
    y = EXTRA_ACTIVATIONS[name](x, **params)
    if out is None:
        return y
    np.copyto(out, y, casting="same_kind")
    return out
