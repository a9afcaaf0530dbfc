"""Module backward hooks: ``fn(module, grad_input, grad_output)`` during ``backward()``.

How it works, in engine terms: while a module with backward hooks runs under gradient
recording, each tensor input that needs a gradient is passed through an identity op
(``BackwardHook``), so the module's inputs are tensors of their own whose gradient is exactly
this module's contribution (not mixed with other uses of the same tensor). Tensor hooks
(:meth:`Tensor.register_hook`) on the outputs catch d(loss)/d(output); hooks on the identity
outputs catch d(loss)/d(input). In the reverse walk every output comes before every input, so
when the last input gradient arrives all of them are known and the module hooks run.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ..autograd import Function, Tensor


class BackwardHook(Function):
    """y = x; dL/dx = dL/dy (a marker node where a module's input gradient is read)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, g: np.ndarray) -> tuple[np.ndarray]:
        return (g,)


class _HookedCall:
    """The backward-hook state of one module call."""

    def __init__(self, module: Any, n_inputs: int) -> None:
        self.module = module
        self.grad_input: list[np.ndarray | None] = [None] * n_inputs
        self.grad_output: list[np.ndarray | None] = []
        self.pending: set[int] = set()
        self.fired = False

    def wrap_inputs(self, args: tuple) -> tuple:
        out = list(args)
        for i, a in enumerate(args):
            if isinstance(a, Tensor) and a.requires_grad:
                y = BackwardHook.apply(a)
                y.register_hook(partial(self._on_input, i))
                self.pending.add(i)
                out[i] = y
        return tuple(out)

    def watch_outputs(self, out: Any) -> None:
        outs = out if isinstance(out, (tuple, list)) else (out,)
        self.grad_output = [None] * len(outs)
        for k, t in enumerate(outs):
            if isinstance(t, Tensor) and t.requires_grad:
                t.register_hook(partial(self._on_output, k))

    def _on_output(self, k: int, g: np.ndarray) -> None:
        self.grad_output[k] = g
        if not self.pending:  # no input needs a gradient: the output's is all there is
            self._fire()

    def _on_input(self, i: int, g: np.ndarray) -> np.ndarray | None:
        self.grad_input[i] = g
        self.pending.discard(i)
        if self.pending:
            return None
        replaced = self._fire()
        return None if replaced is None else replaced[i]

    def _fire(self) -> tuple | None:
        if self.fired:
            return None
        self.fired = True
        replaced = None
        for fn in list(self.module._backward_hooks.values()):
            r = fn(self.module, tuple(self.grad_input), tuple(self.grad_output))
            if r is not None:
                replaced = tuple(r)
                self.grad_input = list(replaced)
        return replaced
