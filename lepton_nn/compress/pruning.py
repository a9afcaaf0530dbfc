"""Magnitude pruning: the masks, and the functions that make them.

Pruning transforms a model; no layer knows about it. A :class:`Pruner` holds one boolean mask
per pruned parameter (True = kept), keyed by dotted parameter name (``layers.0.weight``), and
lives on the model as ``model._pruner`` (:func:`get_pruner`).

How masks are enforced -- one mechanism, *projected steps*. When masks are made the weights
are multiplied by them once; after that, around every optimizer step::

    g <- g * m      before the step: momentum, Adam moments and clipping never see pruned entries
    step()
    w <- w * m      after the step: whatever the update rule did, pruned weights are 0 again

so every forward pass sees exact zeros at pruned positions and pruned weights never come back.
``pruner.attach(optimizer)`` installs this around that optimizer's ``step`` (plain training
loops); :class:`PruningCallback` attaches it to the trainer's optimizer and moves the masks along
a sparsity schedule (:class:`OneShot`, :class:`PolynomialDecay`).


The rest of pruning: sparsity schedules and the trainer callback (:mod:`.schedules`),
sparsity and FLOP reports (:mod:`.report`), removing dead units (:mod:`.compaction`), CSR
export for the sparse kernel (:mod:`.csr`); where the weights are (:mod:`.layout`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import LeptonError, ShapeError
from ..nn.layers import Flatten, Sequential
from ..nn.module import Module, Parameter
from .layout import (
    _chain_after,
    _is_batch_norm,
    _is_weight_layer,
    _named_modules,
    _parameters,
    _Target,
    _unit_axis,
)

__all__ = ["Pruner", "get_pruner", "prune", "prune_magnitude", "prune_structured"]


def _norms_after(model: Module, layer: Module) -> list[Module]:
    """BatchNorms applied to ``layer``'s units (in a Sequential, before any Flatten)."""
    n = layer.weight.shape[_unit_axis(layer.weight.data)]
    for seq in model.modules():
        if isinstance(seq, Sequential) and any(m is layer for m in seq.layers):
            i = next(j for j, m in enumerate(seq.layers) if m is layer)
            out = []
            for m in _chain_after(seq.layers, i)[0]:
                if isinstance(m, Flatten):
                    break
                if _is_batch_norm(m) and m.weight.shape == (n,):
                    out.append(m)
            return out
    return []


def _is_default_target(t: _Target) -> bool:
    """Every Dense/Conv ``weight`` and every recurrent weight matrix (``weight_ih``,
    ``weight_hh``, per direction): never biases, norms or embedding tables."""
    if t.attr == "weight":
        return _is_weight_layer(t.layer)
    return t.attr.startswith(("weight_ih", "weight_hh")) and t.param.ndim == 2


def _select(model: Module, include: str | Iterable[str] | None) -> list[_Target]:
    """Weights to prune: by default :func:`_is_default_target`'s; else the parameters whose
    dotted name (``layers.0.weight``) or ``<layer name>.<attr>`` (``dense_1.weight``) matches
    one of the ``fnmatch`` patterns in ``include``."""
    params = _parameters(model)
    if include is None:
        return [t for t in params if _is_default_target(t)]
    patterns = [include] if isinstance(include, str) else list(include)
    out = [
        t
        for t in params
        if any(
            fnmatch.fnmatchcase(t.name, pat) or fnmatch.fnmatchcase(f"{t.layer.name}.{t.attr}", pat)
            for pat in patterns
        )
    ]
    if not out:
        known = ", ".join(t.name for t in params[:6])
        raise LeptonError(f"no parameter matches {patterns}; parameter names look like {known}")
    return out


def _check_fraction(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {value}")
    return value


# -- the mask registry ---------------------------------------------------------------------------


class Pruner:
    """The pruning masks of one model: ``masks[name]`` is a bool array shaped like parameter
    ``name`` (True = kept). Made by the ``prune_*`` functions and kept as ``model._pruner``."""

    def __init__(self) -> None:
        self.masks: dict[str, np.ndarray] = {}
        self._params: dict[str, Parameter] = {}

    def set_mask(self, name: str, param: Parameter, mask: np.ndarray) -> None:
        mask = np.array(mask, dtype=bool)  # an owned, writable copy (not a broadcast view)
        if mask.shape != param.shape:
            raise ShapeError(f"mask for {name}: shape {mask.shape}, parameter {param.shape}")
        self.masks[name] = mask
        self._params[name] = param

    def _pairs(self) -> Iterator[tuple[str, Parameter, np.ndarray]]:
        for name, m in self.masks.items():
            p = self._params[name]
            if p.data.shape != m.shape:
                raise ShapeError(f"parameter {name} now has shape {p.data.shape}, mask {m.shape}")
            yield name, p, m

    def apply(self) -> None:
        """w <- w * m, in place, for every masked parameter."""
        for _, p, m in self._pairs():
            p.data *= m

    def mask_gradients(self) -> None:
        """g <- g * m, in place, for every masked parameter that has a gradient."""
        for _, p, m in self._pairs():
            if p.grad is not None:
                p.grad *= m

    def attach(self, optimizer: Any) -> Any:
        """Make ``optimizer.step()`` (this instance only) run g*m; step; w*m. Returns it."""
        current = vars(optimizer).get("step")
        if isinstance(current, _MaskedStep):
            current.pruner = self
        else:
            optimizer.step = _MaskedStep(self, optimizer.step)
        return optimizer

    @staticmethod
    def detach(optimizer: Any) -> None:
        """Give ``optimizer`` back its own ``step``."""
        if isinstance(vars(optimizer).get("step"), _MaskedStep):
            del optimizer.step

    def load_masks(self, model: Module, masks: dict[str, np.ndarray]) -> Pruner:
        """Set masks by parameter name (as saved in a model file) and zero the weights."""
        params = {t.name: t.param for t in _parameters(model)}
        for name, mask in masks.items():
            if name not in params:
                raise LeptonError(f"mask for unknown parameter {name!r}")
            self.set_mask(name, params[name], mask)
        self.apply()
        return self

    @property
    def sparsity(self) -> float:
        """Fraction of masked-out entries over all masked parameters (0 with no masks)."""
        total = sum(m.size for m in self.masks.values())
        kept = sum(int(np.count_nonzero(m)) for m in self.masks.values())
        return 1.0 - kept / total if total else 0.0

    def __repr__(self) -> str:
        return f"Pruner({len(self.masks)} masks, sparsity={self.sparsity:.3f})"


class _MaskedStep:
    """Stands in for ``optimizer.step``: the projected step of the module docstring."""

    def __init__(self, pruner: Pruner, step) -> None:
        self.pruner, self.step = pruner, step

    def __call__(self) -> None:
        self.pruner.mask_gradients()
        self.step()
        self.pruner.apply()


def get_pruner(model: Module, create: bool = False) -> Pruner | None:
    """The model's :class:`Pruner` (made and attached when ``create``), or None."""
    pruner = vars(model).get("_pruner")
    if pruner is None and create:
        pruner = model._pruner = Pruner()
    return pruner


# -- making masks --------------------------------------------------------------------------------


def _keep_all_but_lowest(score: np.ndarray, k: int) -> np.ndarray:
    """Flat keep-mask, False at exactly the ``k`` smallest entries of the 1-D ``score``."""
    keep = np.ones(score.size, dtype=bool)
    if k > 0:
        keep[np.argpartition(score, k - 1)[:k]] = False
    return keep


def prune_magnitude(
    model: Module,
    sparsity: float,
    scope: str = "layer",
    include: str | Iterable[str] | None = None,
) -> Pruner:
    """Unstructured magnitude pruning: mask the fraction ``sparsity`` of weights with least |w|.

    ``scope="layer"``: each selected parameter loses exactly round(s * size) entries;
    ``scope="global"``: one ranking over all selected parameters, round(s * total) entries in
    all (layers with small weights lose more). ``include``: ``fnmatch`` patterns of parameter
    names; default every Dense/Conv ``weight`` and recurrent ``weight_ih`` / ``weight_hh`` (never
    biases or norms). Entries already masked
    rank first and stay masked, so calling again with a higher sparsity only adds to the masks.
    The weights are zeroed at once. Returns the model's :class:`Pruner`.
    """
    sparsity = _check_fraction(sparsity, "sparsity")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    targets = _select(model, include)
    pruner = get_pruner(model, create=True)
    old = [pruner.masks.get(t.name) for t in targets]
    scores = []
    for t, o in zip(targets, old):
        s = np.abs(t.param.data, dtype=np.float64).ravel()
        if o is not None:
            s[~o.ravel()] = -1.0  # already pruned: first to go
        scores.append(s)
    if scope == "layer":
        keeps = [_keep_all_but_lowest(s, round(sparsity * s.size)) for s in scores]
    else:
        flat = np.concatenate(scores)
        keep = _keep_all_but_lowest(flat, round(sparsity * flat.size))
        keeps = np.split(keep, np.cumsum([s.size for s in scores])[:-1])
    for t, o, k in zip(targets, old, keeps):
        mask = k.reshape(t.param.shape)
        pruner.set_mask(t.name, t.param, mask if o is None else mask & o)
    pruner.apply()
    return pruner


def _structured_layers(model: Module, layers) -> list[Module]:
    found = [(p.rstrip("."), m) for p, m in _named_modules(model) if _is_weight_layer(m)]
    if layers is None:
        return [m for _, m in found[:-1]]  # never the output layer: its width is the model's
    wanted = [layers] if isinstance(layers, (str, Module)) else list(layers)
    out = []
    for item in wanted:
        match = [m for path, m in found if m is item or item in (m.name, path)]
        if not match:
            names = ", ".join(m.name for _, m in found)
            raise LeptonError(f"no Dense/Conv layer {item!r}; the model has {names}")
        out.extend(match)
    return out


def prune_structured(
    model: Module,
    amount: float,
    norm: str = "l1",
    layers: Module | str | Iterable[Module | str] | None = None,
) -> Pruner:
    """Structured pruning: mask whole output units (incoming weights, bias, following norm).

    Unit j of a Dense layer is the column W[:, j] with b[j]; unit o of a convolution is the
    output channel W[o] with b[o]. A BatchNorm right after the layer (in a Sequential) loses
    that unit's gamma and beta too, so the unit leaves it as 0. In each layer, the
    round(amount * units) units of smallest ||W_unit||_1 (``norm="l1"``) or ||W_unit||_2
    (``"l2"``) are masked. ``layers``: layer names, dotted paths or modules; default every
    Dense/Conv layer but the last, whose width is the model's output. :func:`compact` then
    removes the masked units for real.
    """
    amount = _check_fraction(amount, "amount")
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    chosen = _structured_layers(model, layers)
    names = {id(t.param): t.name for t in _parameters(model)}
    pruner = get_pruner(model, create=True)
    for layer in chosen:
        w, b = layer.weight, vars(layer).get("bias")
        ax = _unit_axis(w.data)
        other = tuple(i for i in range(w.ndim) if i != ax)
        a = np.abs(w.data, dtype=np.float64)
        score = a.sum(axis=other) if norm == "l1" else np.sqrt((a * a).sum(axis=other))
        old_w = pruner.masks.get(names[id(w)])
        if old_w is not None:
            score[~old_w.any(axis=other)] = -1.0  # units already dead go first
        alive = _keep_all_but_lowest(score, round(amount * score.size))
        shape = [1] * w.ndim
        shape[ax] = -1
        wmask = np.broadcast_to(alive.reshape(shape), w.shape)
        pruner.set_mask(names[id(w)], w, wmask if old_w is None else wmask & old_w)
        per_unit = [b] + [p for bn in _norms_after(model, layer) for p in (bn.weight, bn.bias)]
        for p in per_unit:
            if isinstance(p, Parameter):
                old = pruner.masks.get(names[id(p)])
                pruner.set_mask(names[id(p)], p, alive if old is None else alive & old)
    pruner.apply()
    return pruner


def prune(
    model: Module,
    sparsity: float,
    structured: bool = False,
    scope: str = "global",
    *,
    include: str | Iterable[str] | None = None,
    norm: str = "l1",
    layers: Module | str | Iterable[Module | str] | None = None,
) -> Pruner:
    """One-shot pruning: :func:`prune_structured` (``amount=sparsity``, ``norm``, ``layers``)
    when ``structured``, else :func:`prune_magnitude` (``scope``, ``include``)."""
    if structured:
        return prune_structured(model, sparsity, norm=norm, layers=layers)
    return prune_magnitude(model, sparsity, scope=scope, include=include)
