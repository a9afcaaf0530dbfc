"""Floor 4: differentiable ops, one ``Function`` per op, grouped by family.

Importing this package attaches the operators and methods of :class:`Tensor` (``a + b``,
``a @ b``, ``a.sum()``, ``a.relu()``, ...) so that the autograd floor need not know any op.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..backend.reference import ACT_CODE
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


def where(cond, a, b) -> Tensor:
    """Elementwise ``a if cond else b``; ``cond`` is a boolean array (or Tensor), held constant."""
    c = np.asarray(cond.data if isinstance(cond, Tensor) else cond, dtype=bool)
    a = tensor(a, like=b if isinstance(b, Tensor) else None)
    return E.Where.apply(a, tensor(b, like=a), cond=c)


def maximum(a, b) -> Tensor:
    a = tensor(a, like=b if isinstance(b, Tensor) else None)
    return E.Maximum.apply(a, tensor(b, like=a))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str = "identity"):
    """Y = f(X W + b) as one fused op; ``activation`` in identity|relu|sigmoid|tanh|gelu."""
    act = ACT_CODE[activation]
    if bias is None:
        return L.Linear.apply(x, weight, act=act)
    return L.Linear.apply(x, weight, bias, act=act)


def _reshape(self, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return S.Reshape.apply(self, shape=shape)


def _transpose(self, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return S.Transpose.apply(self, axes=axes or None)


def _getitem(self, index):
    if isinstance(index, Tensor):
        index = index.data.astype(np.intp)
    elif isinstance(index, tuple):
        index = tuple(i.data.astype(np.intp) if isinstance(i, Tensor) else i for i in index)
    return S.GetItem.apply(self, index=index)


def _pow(self, exponent):
    return E.Pow.apply(self, tensor(exponent, like=self))


def _rpow(self, base):
    return E.Pow.apply(tensor(base, like=self), self)


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
    "gelu": lambda self: E.Gelu.apply(self),
    "clip": lambda self, lo=None, hi=None: E.Clip.apply(self, lo=lo, hi=hi),
    "astype": lambda self, dtype: E.Cast.apply(self, dtype=np.dtype(dtype)),
    "softmax": lambda self, axis=-1: R.Softmax.apply(self, axis=axis),
    "log_softmax": lambda self, axis=-1: R.LogSoftmax.apply(self, axis=axis),
}

for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
