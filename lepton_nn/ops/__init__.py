"""Floor 4: differentiable ops, one ``Function`` per op, grouped by family.

Importing this package attaches the operators and methods of :class:`Tensor` (``a + b``,
``a @ b``, ``a.sum()``, ``a.relu()``, ...) so that the autograd floor need not know any op.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..backend.reference import ACT_CODE
from ..errors import ShapeError
from . import activation as A
from . import elementwise as E
from . import linalg as L
from . import loss as loss_ops
from . import reduce as R
from . import shape as S
from ._util import tensor, unbroadcast
from .int8 import matmul_int8

__all__ = [
    "Tensor",
    "concat",
    "stack",
    "where",
    "maximum",
    "linear",
    "unbroadcast",
    "tensor",
    "loss_ops",
    "matmul_int8",
]


def _binary(fn, reflected=False):
    def method(self, other):
        other = tensor(other, like=self)
        return fn.apply(other, self) if reflected else fn.apply(self, other)

    return method


def concat(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (``np.concatenate``)."""
    return S.Concat.apply(*[tensor(t) for t in tensors], axis=axis)


def stack(tensors, axis: int = 0) -> Tensor:
    """Join tensors along a new axis (``np.stack``)."""
    return S.Stack.apply(*[tensor(t) for t in tensors], axis=axis)


def _compare(ufunc):
    """``a (op) b`` elementwise as a Tensor of bools with no gradient (as NumPy's); anything
    that is not a Tensor, an array or a number falls back to Python's default (identity)."""

    def method(self, other):
        if isinstance(other, Tensor):
            other = other.data
        elif not isinstance(other, (np.ndarray, np.generic, int, float, bool)):
            return NotImplemented
        return Tensor._wrap(np.asarray(ufunc(self.data, other)), False, None)

    return method


def where(cond, a, b) -> Tensor:
    """Elementwise ``a if cond else b``; ``cond``: a boolean array or Tensor (a float one is
    read as ``cond != 0``), held constant. Gradients flow to ``a`` and ``b``."""
    c = cond.data if isinstance(cond, Tensor) else np.asarray(cond)
    c = c if c.dtype == bool else c != 0
    a = tensor(a, like=b if isinstance(b, Tensor) else None)
    return E.Where.apply(a, tensor(b, like=a), cond=c)


def maximum(a, b) -> Tensor:
    a = tensor(a, like=b if isinstance(b, Tensor) else None)
    return E.Maximum.apply(a, tensor(b, like=a))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str = "identity"):
    """Y = f(X W + b) as one fused op; ``activation`` in identity|relu|sigmoid|tanh|gelu."""
    act = ACT_CODE[activation]
    _check_linear_shapes(x, weight, bias)
    if bias is None:
        return L.Linear.apply(x, weight, act=act)
    return L.Linear.apply(x, weight, bias, act=act)


def _check_linear_shapes(x, weight, bias) -> None:
    """X (..., in), W (in, out), b (out,): a mismatch is a ShapeError naming both shapes."""
    xs, ws = np.shape(x), np.shape(weight)
    if len(ws) != 2 or len(xs) < 1 or xs[-1] != ws[0]:
        raise ShapeError(
            f"linear: input of shape {xs} does not match weight of shape {ws} "
            "(expected input (..., in) and weight (in, out))"
        )
    if bias is not None and tuple(np.shape(bias)) != (ws[1],):
        raise ShapeError(f"linear: bias of shape ({ws[1]},) expected, got {np.shape(bias)}")


def _reshape(self, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return S.Reshape.apply(self, shape=shape)


def _transpose(self, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return S.Transpose.apply(self, axes=axes or None)


def _index(i):
    """A Tensor used as an index: a boolean mask stays one, numbers become integers."""
    if not isinstance(i, Tensor):
        return i
    return i.data if i.dtype == bool else i.data.astype(np.intp)


def _getitem(self, index):
    if isinstance(index, tuple):
        index = tuple(_index(i) for i in index)
    else:
        index = _index(index)
    return S.GetItem.apply(self, index=index)


def _pow(self, exponent):
    return E.Pow.apply(self, tensor(exponent, like=self))


def _rpow(self, base):
    return E.Pow.apply(tensor(base, like=self), self)


def _gelu_exact(x: Tensor, approximate) -> Tensor:
    if approximate != "none":
        raise ValueError(f"gelu approximate must be 'tanh' or 'none', got {approximate!r}")
    return A.GeluErf.apply(x)


_METHODS = {
    "__add__": _binary(E.Add),
    "__radd__": _binary(E.Add, reflected=True),
    "__sub__": _binary(E.Sub),
    "__rsub__": _binary(E.Sub, reflected=True),
    "__mul__": _binary(E.Mul),
    "__rmul__": _binary(E.Mul, reflected=True),
    "__truediv__": _binary(E.Div),
    "__rtruediv__": _binary(E.Div, reflected=True),
    "__matmul__": _binary(L.MatMul),
    "__rmatmul__": _binary(L.MatMul, reflected=True),
    "__pow__": _pow,
    "__rpow__": _rpow,
    "__neg__": lambda self: E.Neg.apply(self),
    "__getitem__": _getitem,
    "T": property(lambda self: S.Transpose.apply(self, axes=None)),
    "reshape": _reshape,
    "transpose": _transpose,
    "flatten": lambda self: S.Reshape.apply(self, shape=(-1,)),
    "sum": lambda self, axis=None, keepdims=False: R.Sum.apply(self, axis=axis, keepdims=keepdims),
    "mean": lambda self, axis=None, keepdims=False: R.Mean.apply(
        self, axis=axis, keepdims=keepdims
    ),
    "max": lambda self, axis=None, keepdims=False: R.Max.apply(self, axis=axis, keepdims=keepdims),
    "exp": lambda self: E.Exp.apply(self),
    "log": lambda self: E.Log.apply(self),
    "sqrt": lambda self: E.Sqrt.apply(self),
    "abs": lambda self: E.Abs.apply(self),
    "relu": lambda self: E.Relu.apply(self),
    "sigmoid": lambda self: E.Sigmoid.apply(self),
    "tanh": lambda self: E.Tanh.apply(self),
    "gelu": lambda self, approximate="tanh": (
        E.Gelu.apply(self) if approximate == "tanh" else _gelu_exact(self, approximate)
    ),
    "leaky_relu": lambda self, alpha=0.01: A.LeakyRelu.apply(self, alpha=float(alpha)),
    "relu6": lambda self: A.Relu6.apply(self),
    "elu": lambda self, alpha=1.0: A.Elu.apply(self, alpha=float(alpha)),
    "selu": lambda self: A.Selu.apply(self),
    "hard_sigmoid": lambda self, alpha=0.2, beta=0.5: A.HardSigmoid.apply(
        self, alpha=float(alpha), beta=float(beta)
    ),
    "hard_swish": lambda self: A.HardSwish.apply(self),
    "softplus": lambda self: A.Softplus.apply(self),
    "mish": lambda self: A.Mish.apply(self),
    "sign": lambda self: A.Sign.apply(self),
    "__lt__": _compare(np.less),
    "__le__": _compare(np.less_equal),
    "__gt__": _compare(np.greater),
    "__ge__": _compare(np.greater_equal),
    "__eq__": _compare(np.equal),
    "__ne__": _compare(np.not_equal),
    "clip": lambda self, lo=None, hi=None: E.Clip.apply(self, lo=lo, hi=hi),
    "astype": lambda self, dtype: E.Cast.apply(self, dtype=np.dtype(dtype)),
    "softmax": lambda self, axis=-1: R.Softmax.apply(self, axis=axis),
    "log_softmax": lambda self, axis=-1: R.LogSoftmax.apply(self, axis=axis),
}

for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
