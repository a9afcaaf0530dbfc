"""Removing the dead units of a pruned ``Sequential`` (:func:`compact`, :func:`strip`): a
smaller model that computes the same outputs."""

from __future__ import annotations

import copy

import numpy as np

from ..autograd import Tensor
from ..errors import LeptonError
from ..nn.layers import Activation, Flatten, Sequential, apply_activation
from ..nn.module import Module, Parameter
from .layout import (
    _POOLS,
    _chain_after,
    _is_batch_norm,
    _is_weight_layer,
    _parameters,
    _unit_axis,
)
from .pruning import get_pruner

__all__ = ["compact", "strip"]

_PRODUCER_WIDTH = ("units", "filters", "out_channels")
_CONSUMER_WIDTH = ("in_features", "in_channels")


def _keeps_constants(pool: Module) -> bool:
    """Whether a pooling layer maps a constant channel to the same constant (no zero padding)."""
    if type(pool).__name__.startswith(("MaxPool", "GlobalMaxPool", "GlobalAvgPool")):
        return True  # max pooling pads with -inf; global pooling has no padding
    return getattr(pool, "padding", "valid") in ("valid", 0, (0, 0))


def _act(values: np.ndarray, name: str | None) -> np.ndarray | None:
    """An elementwise activation of constant values; None for softmax-like ones."""
    name = name or "identity"
    if name in ("softmax", "log_softmax"):
        return None
    return apply_activation(Tensor(values[None]), name).data[0]


def _unit_outputs(producer: Module, chain: list[Module], dead: np.ndarray) -> np.ndarray | None:
    """c_j: the constant a dead unit j (all incoming weights zero) carries to the next weight
    layer in eval mode -- f(b_j), then through ``chain`` -- and 0 for live units. None if
    that is not a per-unit constant (a softmax, a norm after Flatten, zero padding of a
    nonzero constant)."""
    b = vars(producer).get("bias")
    c = b.data.copy() if isinstance(b, Parameter) else np.zeros(dead.size, producer.weight.dtype)
    c = _act(c, getattr(producer, "activation", None))
    flat = False
    for m in chain:
        if c is None:
            return None
        if isinstance(m, Activation):
            c = _act(c, m.activation)
        elif isinstance(m, Flatten):
            flat = True
        elif _is_batch_norm(m):
            if flat or m.weight.shape != dead.shape:
                return None
            scale = m.weight.data / np.sqrt(m.running_var + m.eps)
            c = (c - m.running_mean) * scale + m.bias.data
        elif type(m).__name__ in _POOLS and np.any(c[dead] != 0) and not _keeps_constants(m):
            return None
    return None if c is None else np.where(dead, c, 0)


def _input_units(producer: Module, consumer: Module, chain: list[Module], n: int):
    """(axis, unit): along ``consumer``'s input axis, the producer unit feeding each input.

    Dense consumer: axis 0; after Flatten each unit owns S = in / n inputs, consecutive for a
    conv producer (NCHW flattens channel-major), interleaved for a Dense one. Conv consumer:
    axis 1, one input channel per unit. None when the shapes do not line up.
    """
    wc = consumer.weight.data
    if wc.ndim == 2:
        s, rem = divmod(wc.shape[0], n)
        if rem or s == 0:
            return None
        units = np.arange(n)
        return 0, (np.repeat(units, s) if producer.weight.ndim > 2 else np.tile(units, s))
    if wc.shape[1] != n or any(isinstance(m, Flatten) for m in chain):
        return None
    return 1, np.arange(n)


def _fold_constants(consumer: Module, axis: int, dead_in: np.ndarray, c_in: np.ndarray) -> bool:
    """Add the constant inputs about to be removed into the consumer's bias; False if that
    cannot be done exactly (no bias; a conv whose zero padding would see them).

    Dense: b' = b + sum_{i dead} c_i W[i, :].
    Conv ("valid" padding: every output sees the whole kernel): b'[o] = b[o] + sum_j c_j
    sum_{kh, kw} W[o, j].
    """
    c = c_in[dead_in]
    if not np.any(c != 0):
        return True
    b = vars(consumer).get("bias")
    if not isinstance(b, Parameter):
        return False
    wc = consumer.weight.data
    if axis == 0:
        delta = c @ wc[dead_in, :]
    else:
        if getattr(consumer, "padding", "valid") not in ("valid", 0, (0, 0)):
            return False
        delta = wc[:, dead_in].reshape(wc.shape[0], c.size, -1).sum(axis=2) @ c
    b.data += delta.astype(b.dtype)
    return True


def _take(layer: Module, attr: str, index: np.ndarray, axis: int, pruner, names) -> None:
    """Keep entries ``index`` along ``axis`` of a parameter or buffer (and of its mask)."""
    v = vars(layer).get(attr)
    if isinstance(v, Parameter):
        v.data = np.ascontiguousarray(np.take(v.data, index, axis=axis))
        v.grad = None
        name = names[id(v)]
        if pruner is not None and name in pruner.masks:
            pruner.masks[name] = np.ascontiguousarray(np.take(pruner.masks[name], index, axis))
    elif isinstance(v, np.ndarray):
        setattr(layer, attr, np.ascontiguousarray(np.take(v, index, axis=axis)))


def _set_width(layer: Module, attrs: tuple[str, ...], value: int) -> None:
    for a in attrs:
        if isinstance(getattr(layer, a, None), int):
            setattr(layer, a, value)


def compact(model: Sequential) -> Sequential:
    """A new, smaller ``Sequential`` without the dead output units of its Dense/Conv layers.

    A unit is dead when all its incoming weights are zero (as after :func:`prune_structured`).
    It then carries a constant c_j to the next weight layer, so it is removed together with
    that layer's matching inputs (rows of a Dense (in, out) weight, input channels of a conv
    weight) and c_j's contribution is folded into that layer's bias (``_fold_constants``;
    nothing to fold when c_j = 0, as with ReLU and a pruned bias). Links handled, with any
    activations, Dropout, BatchNorm (sliced too) and pooling between:
    Dense -> Dense, Conv -> Conv, Conv -> Flatten / global pooling -> Dense (channel o owns
    H*W consecutive inputs of the Dense layer). Other links, and the last weight layer (its
    width is the model's output), are left as they are. The result computes the same outputs
    in eval mode (up to float rounding); the pruner's masks are sliced along. ``model``
    itself is not changed.
    """
    if not isinstance(model, Sequential):
        raise LeptonError(f"compact() works on a Sequential model, got {type(model).__name__}")
    new = copy.deepcopy(model)
    pruner = get_pruner(new)
    names = {id(t.param): t.name for t in _parameters(new)}
    layers = new.layers
    for i, producer in enumerate(layers):
        if not _is_weight_layer(producer) or getattr(producer, "groups", 1) != 1:
            continue  # a grouped convolution's channels cannot be removed one by one
        chain, consumer = _chain_after(layers, i)
        if consumer is not None and getattr(consumer, "groups", 1) != 1:
            continue
        w = producer.weight.data
        ax = _unit_axis(w)
        dead = ~np.any(w != 0, axis=tuple(a for a in range(w.ndim) if a != ax))
        if consumer is None or not dead.any() or dead.all():
            continue
        c = _unit_outputs(producer, chain, dead)
        mapping = _input_units(producer, consumer, chain, dead.size)
        if c is None or mapping is None:
            continue
        in_axis, unit_of_input = mapping
        dead_in = dead[unit_of_input]
        if not _fold_constants(consumer, in_axis, dead_in, c[unit_of_input]):
            continue
        keep = np.flatnonzero(~dead)
        _take(producer, "weight", keep, ax, pruner, names)
        _take(producer, "bias", keep, 0, pruner, names)
        _set_width(producer, _PRODUCER_WIDTH, keep.size)
        for norm in (m for m in chain if _is_batch_norm(m)):
            for attr in ("weight", "bias", "running_mean", "running_var"):
                _take(norm, attr, keep, 0, pruner, names)
            _set_width(norm, ("num_features",), keep.size)
        _take(consumer, "weight", np.flatnonzero(~dead_in), in_axis, pruner, names)
        _set_width(consumer, _CONSUMER_WIDTH, int((~dead_in).sum()))
    shape = model.input_shape
    for m in new.modules():
        m.input_shape = m.output_shape = None
    if shape is not None:
        new.build(shape)  # re-record every layer's input and output shape
    return new


def strip(model: Sequential) -> Sequential:
    """The deployable model: :func:`compact`, then without the mask registry (zeros stay)."""
    new = compact(model)
    vars(new).pop("_pruner", None)
    return new
