"""Where a model's weights are, for pruning: dotted parameter names, the weight layers (Dense-
and Conv-like), their output-unit axis, and the channel-wise layers (activations, Dropout,
Flatten, BatchNorm, pooling) that may sit between two of them.

Layouts: ``Dense.weight`` is (in, out), so a Dense output unit j is the column ``W[:, j]``; a
convolution weight is (out, in, kh, kw), so an output channel o is ``W[o]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from ..nn.layers import Activation, Dropout, Flatten
from ..nn.module import Module, Parameter

# pooling layers by class name: channel-wise, so they may sit between two weight layers
_POOLS = frozenset(
    {
        "MaxPool1D",
        "AvgPool1D",
        "MaxPool2D",
        "AvgPool2D",
        "GlobalAvgPool1D",
        "GlobalAvgPool2D",
        "GlobalMaxPool1D",
        "GlobalMaxPool2D",
    }
)


class _Target(NamedTuple):
    name: str  # dotted parameter name, e.g. "layers.0.weight"
    layer: Module  # the module that owns it
    attr: str  # its attribute on that module, e.g. "weight"
    param: Parameter


def _named_modules(model: Module, prefix: str = "") -> Iterator[tuple[str, Module]]:
    """(prefix, module) pairs; a parameter's dotted name is ``prefix + attribute``."""
    yield prefix, model
    for key, child in model.named_children():
        yield from _named_modules(child, f"{prefix}{key}.")


def _parameters(model: Module) -> list[_Target]:
    model.parameters()  # raises NotBuiltError naming the first unbuilt layer
    seen: set[int] = set()
    out = []
    for prefix, m in _named_modules(model):
        for attr, p in vars(m).items():
            if isinstance(p, Parameter) and id(p) not in seen:
                seen.add(id(p))
                out.append(_Target(prefix + attr, m, attr, p))
    return out


def _is_weight_layer(m: Module) -> bool:
    """A Dense- or Conv-like layer: a ``weight`` Parameter of 2+ axes (not an embedding table)."""
    w = vars(m).get("weight")
    return isinstance(w, Parameter) and w.ndim >= 2 and "Embedding" not in type(m).__name__


def _unit_axis(w: np.ndarray) -> int:
    """The output-unit axis: 1 for a Dense (in, out) weight, 0 for a conv (out, in, ...) one."""
    return 1 if w.ndim == 2 else 0


def _is_batch_norm(m: Module) -> bool:
    """A per-channel norm in eval: y = gamma (x - running_mean) / sqrt(running_var + eps) + beta."""
    d = vars(m)
    return isinstance(d.get("running_mean"), np.ndarray) and isinstance(d.get("weight"), Parameter)


def _is_channelwise(m: Module) -> bool:
    """Layers that map each unit/channel on its own (what may sit between two weight layers)."""
    if isinstance(m, (Activation, Dropout, Flatten)):
        return True
    return type(m).__name__ in _POOLS or _is_batch_norm(m)


def _chain_after(layers: list[Module], i: int) -> tuple[list[Module], Module | None]:
    """The channel-wise layers after ``layers[i]``, and the weight layer they lead to (None if
    the list ends or another kind of layer comes first)."""
    chain = []
    for m in layers[i + 1 :]:
        if _is_weight_layer(m):
            return chain, m
        if not _is_channelwise(m):
            return chain, None
        chain.append(m)
    return chain, None
