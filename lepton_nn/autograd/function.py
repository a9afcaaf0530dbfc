"""``Function``: one differentiable op, forward and backward side by side.

A subclass implements ``forward(self, *arrays, **kwargs) -> ndarray`` on raw NumPy arrays
(saving what backward needs on ``self``) and ``backward(self, grad) -> tuple`` returning one
gradient (or ``None``) per tensor input, in order. ``Function.apply(*tensors, **kwargs)``
runs forward and, when a gradient is wanted, links the result into the graph.

Rules for ``backward``: it may return the incoming ``grad`` itself or views of it (the engine
copies before storing), and must not keep or later modify the arrays it returns.
``self.needs_grad[i]`` says whether input ``i`` wants a gradient: skip work for the others.
"""

from __future__ import annotations

from .grad_mode import is_grad_enabled
from .tensor import Tensor

__all__ = ["Function"]


class Function:
    __slots__ = ("parents", "needs_grad", "__dict__")

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *tensors: Tensor, **kwargs) -> Tensor:
        """Run ``forward`` on the tensors' arrays; record the op if any input needs a grad."""
        ctx = cls()
        out = ctx.forward(*[t.data for t in tensors], **kwargs)
        if is_grad_enabled():
            needs = [t.requires_grad for t in tensors]
            if True in needs:
                ctx.parents = tensors
                ctx.needs_grad = needs
                return Tensor._wrap(out, True, ctx)
        return Tensor._wrap(out, False, None)

    @property
    def op_name(self) -> str:
        return type(self).__name__
