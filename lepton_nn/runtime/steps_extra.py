"""Plan steps of the layers added for model interchange (issue 17): the elementwise
activations of :mod:`lepton_nn.backend.activations` (``ElementwiseStep``, the same NumPy
definitions the training ops run), ``Pad1D`` / ``Pad2D`` (``PadStep``) and ``Permute``
(``PermuteStep``). ``Conv1D`` runs as a :class:`~.steps.ConvStep` on (C, 1, L) views; grouped
convolutions live beside ``ConvStep`` in :mod:`.steps`. Their parsers are in :mod:`.parsers`.
"""

from __future__ import annotations

import numpy as np

from lepton_nn.backend.activations import EXTRA_ACTIVATIONS, LAYER_FUNCTIONS
from lepton_nn.backend.padding import pad_index

from .steps import Op

__all__ = ["ElementwiseStep", "PadStep", "PermuteStep"]


class PermuteStep:
    """The axes after the batch reordered (``dims``, 1-based as the ``Permute`` layer),
    copied into a buffer of the new layout (the next step reads contiguous data)."""

    kind = "permute"

    def __init__(self, label, dims, width) -> None:
        self.label, self.perm = label, (0, *dims)
        self.out = tuple(width[d - 1] for d in dims)

    def bind(self, src, owned, ctx):
        out = np.empty((ctx.n, *self.out), ctx.dtype)
        return [(np.copyto, (out, src.transpose(self.perm)))], out


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
