"""Merge layers: several inputs, one output (the joints of a graph :class:`~.graph.Model`).

Called on a list of two or more tensors of the same batch size::

    Add()([a, b, ...])          y = a + b + ...
    Subtract()([a, b])          y = a - b
    Multiply()([a, b, ...])     y = a * b * ...          (elementwise)
    Average()([a, b, ...])      y = (a + b + ...) / k
    Maximum()([a, b, ...])      y = max(a, b, ...)       (elementwise)
    Concatenate(axis=-1)([a, b, ...])   joined along ``axis`` (counted with the batch axis
                                        first, as NumPy does; never the batch axis itself)

The elementwise merges broadcast the per-sample shapes as NumPy does ((N, C, H, W) * (N, C,
1, 1) is a channel gate); shapes that do not broadcast are a ``ShapeError`` naming the layer
and the shapes. They have no parameters: they compute in their inputs' float dtype (the wider
one when float32 and float64 meet).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..autograd import Tensor
from ..errors import ShapeError
from ..ops import concat, maximum
from ..ops.elementwise import Cast
from .layers import as_float_input
from .module import Module

__all__ = ["Merge", "Add", "Subtract", "Multiply", "Average", "Maximum", "Concatenate"]


class Merge(Module):
    """Base of the merge layers: checks the list of inputs, then ``merge(tensors)``."""

    arity: int | None = None  # exactly this many inputs (None: two or more)

    def call(self, inputs: Sequence) -> Tensor:
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ShapeError(
                f"layer '{self.name}' ({type(self).__name__}) takes a list of two or more "
                f"tensors, got {type(inputs).__name__}"
            )
        if self.arity is not None and len(inputs) != self.arity:
            raise ShapeError(
                f"layer '{self.name}' ({type(self).__name__}) takes {self.arity} tensors, "
                f"got {len(inputs)}"
            )
        xs = [as_float_input(self, x) for x in inputs]
        dtype = np.result_type(*(x.dtype for x in xs))  # float32 with float64: float64
        xs = [x if x.dtype == dtype else Cast.apply(x, dtype=dtype) for x in xs]
        self.check_shapes([x.shape for x in xs])
        return self.merge(xs)

    def check_shapes(self, shapes: list[tuple]) -> None:
        """Raise ``ShapeError`` unless the shapes broadcast (batch sizes equal)."""
        first = shapes[0]
        for s in shapes[1:]:
            try:
                ok = s[:1] == first[:1] and len(s) == len(first)
                np.broadcast_shapes(first, s)
            except ValueError:
                ok = False
            if not ok:
                raise ShapeError(
                    f"layer '{self.name}' ({type(self).__name__}) cannot combine shapes "
                    f"{first} and {s}"
                )

    def merge(self, xs: list[Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _call_with_setup(self, args: tuple, kwargs: dict):
        """Module's first call, recording a list of input shapes (one per input)."""
        xs = args[0] if args else None
        if self.input_shape is not None or not isinstance(xs, (list, tuple)):
            return super()._call_with_setup(args, kwargs)
        self.input_shape = [(None, *np.shape(getattr(x, "data", x))[1:]) for x in xs]
        try:
            out = super()._call_with_setup(args, kwargs)
        except BaseException:
            self.input_shape = None
            raise
        if isinstance(out, Tensor):
            self.output_shape = (None, *out.shape[1:])
        return out


class Add(Merge):
    """y = x_1 + x_2 + ... + x_k."""

    def merge(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y


class Subtract(Merge):
    """y = x_1 - x_2."""

    arity = 2

    def merge(self, xs):
        return xs[0] - xs[1]


class Multiply(Merge):
    """y = x_1 * x_2 * ... * x_k (elementwise)."""

    def merge(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = y * x
        return y


class Average(Merge):
    """y = (x_1 + ... + x_k) / k."""

    def merge(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y * np.asarray(1.0 / len(xs), dtype=y.dtype)


class Maximum(Merge):
    """y = max(x_1, ..., x_k) elementwise (the gradient goes to the larger input)."""

    def merge(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = maximum(y, x)
        return y


class Concatenate(Merge):
    """Joins the inputs along ``axis`` (batch axis first; -1: features/last axis). Every
    other axis must agree."""

    def __init__(self, axis: int = -1, name: str | None = None):
        super().__init__(name)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ValueError(f"Concatenate axis must be a nonzero int (0 is the batch), got {axis}")
        self.axis = int(axis)

    def _axis(self, ndim: int) -> int:
        ax = self.axis + ndim if self.axis < 0 else self.axis
        if not 0 < ax < ndim:
            raise ShapeError(
                f"layer '{self.name}' (Concatenate) has axis {self.axis}, "
                f"its inputs have {ndim} axes"
            )
        return ax

    def check_shapes(self, shapes):
        ax = self._axis(len(shapes[0]))
        first = shapes[0]
        for s in shapes[1:]:
            if len(s) != len(first) or s[:ax] + s[ax + 1 :] != first[:ax] + first[ax + 1 :]:
                raise ShapeError(
                    f"layer '{self.name}' (Concatenate) along axis {self.axis} cannot join "
                    f"shapes {first} and {s}"
                )

    def merge(self, xs):
        return concat(xs, axis=self._axis(xs[0].ndim))

    def get_config(self) -> dict:
        return {"name": self.name, "axis": self.axis}
