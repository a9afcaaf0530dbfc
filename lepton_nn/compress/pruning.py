"""Magnitude pruning: masks, schedules, compaction and sparse export.

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

Layouts: ``Dense.weight`` is (in, out), so a Dense output unit j is the column ``W[:, j]``; a
convolution weight is (out, in, kh, kw), so an output channel o is ``W[o]``.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..autograd import Tensor
from ..errors import LeptonError, ShapeError
from ..nn.layers import Activation, Dropout, Flatten, Sequential, apply_activation
from ..nn.module import Module, Parameter
from ..runtime.compression import csr_arrays, csr_density, csr_to_dense

__all__ = [
    "Pruner",
    "get_pruner",
    "prune",
    "prune_magnitude",
    "prune_structured",
    "OneShot",
    "PolynomialDecay",
    "PruningCallback",
    "PruningSchedule",
    "SparsityReport",
    "sparsity_report",
    "count_flops",
    "compact",
    "strip",
    "CSRWeight",
    "to_sparse",
]

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
_PRODUCER_WIDTH = ("units", "filters", "out_channels")
_CONSUMER_WIDTH = ("in_features", "in_channels")


# -- finding parameters --------------------------------------------------------------------------


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


# -- schedules and the trainer callback ----------------------------------------------------------


@dataclass(frozen=True)
class OneShot:
    """Prune once, to ``sparsity``, at step ``step`` (0: before the first batch)."""

    sparsity: float
    step: int = 0

    def __call__(self, t: int) -> float:
        return self.sparsity if t >= self.step else 0.0

    def is_update(self, t: int) -> bool:
        return t == self.step


@dataclass(frozen=True)
class PolynomialDecay:
    """Gradual pruning (Zhu & Gupta, 2017), at steps t = t0, t0 + dt, ..., t0 + n dt:

        s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^p        (p = 3)

    with t0 = ``begin_step``, t0 + n dt = ``end_step``, dt = ``frequency``. The masks change
    only at those steps (and at ``end_step`` when n dt is not a multiple of dt); ``self(t)``
    clamps t to [t0, t0 + n dt], so it is s_i before and s_f after.
    """

    final_sparsity: float
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int = 1000
    frequency: int = 100
    power: float = 3.0

    def __post_init__(self) -> None:
        _check_fraction(self.final_sparsity, "final_sparsity")
        _check_fraction(self.initial_sparsity, "initial_sparsity")
        if self.end_step < self.begin_step or self.frequency < 1:
            raise ValueError("need end_step >= begin_step and frequency >= 1")

    def __call__(self, t: int) -> float:
        span = self.end_step - self.begin_step
        frac = 1.0 if span == 0 else min(max((t - self.begin_step) / span, 0.0), 1.0)
        si, sf = self.initial_sparsity, self.final_sparsity
        return sf + (si - sf) * (1.0 - frac) ** self.power

    def is_update(self, t: int) -> bool:
        if not self.begin_step <= t <= self.end_step:
            return False
        return (t - self.begin_step) % self.frequency == 0 or t == self.end_step


class PruningCallback:
    """Trainer callback: prune along ``schedule`` and keep pruned weights at zero.

    Step t counts batches (optimizer steps) since ``on_train_begin``. Whenever
    ``schedule.is_update(t)`` (t = 0 included), the masks are recomputed at sparsity
    ``schedule(t)``: by magnitude (``scope``, ``include``), or by whole units with
    ``structured=True`` (``norm``, ``layers``). At ``on_train_begin`` the model's pruner is
    attached to the optimizer (g*m before each step, w*m after); if there is no optimizer to
    wrap, ``on_batch_end`` applies w*m instead, so the next forward still sees the zeros.
    ``on_epoch_end`` writes ``logs["sparsity"]``; ``on_train_end`` detaches the optimizer (the
    masks stay on the model, for :func:`compact`, :func:`to_sparse` and saving).

    In ``Trainer.fit`` the model and optimizer are the trainer's. In a plain loop pass
    ``model=`` and ``optimizer=``, call ``on_train_begin()`` once and ``on_batch_end(i)``
    after each ``optimizer.step()``. It follows the trainer's duck-typed callback protocol
    (``set_trainer``, ``params``, ``on_*`` hooks) without importing the trainer.
    """

    trainer: Any = None
    params: dict[str, Any] = {}

    def __init__(
        self,
        schedule: OneShot | PolynomialDecay,
        model: Module | None = None,
        optimizer: Any = None,
        *,
        scope: str = "layer",
        include: str | Iterable[str] | None = None,
        structured: bool = False,
        norm: str = "l1",
        layers: Module | str | Iterable[Module | str] | None = None,
    ):
        self.schedule = schedule
        self._model, self.optimizer = model, optimizer
        self.scope, self.include = scope, include
        self.structured, self.norm, self.layers = structured, norm, layers
        self.step = 0
        self.history: list[tuple[int, float]] = []  # (step, target sparsity) of each update
        self._pending = False

    @property
    def model(self) -> Module | None:
        return self._model if self._model is not None else getattr(self.trainer, "model", None)

    @model.setter
    def model(self, model: Module | None) -> None:
        self._model = model

    def set_trainer(self, trainer: Any) -> None:
        self.trainer = trainer

    @property
    def pruner(self) -> Pruner:
        return get_pruner(self.model, create=True)

    def _update(self) -> None:
        if not (self._pending or self.schedule.is_update(self.step)):
            return
        if not self.model.built:  # lazy layers: prune once the first batch has built them
            self._pending = True
            return
        self._pending = False
        s = self.schedule(self.step)
        if self.structured:
            prune_structured(self.model, s, norm=self.norm, layers=self.layers)
        else:
            prune_magnitude(self.model, s, scope=self.scope, include=self.include)
        self.history.append((self.step, s))

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.model is None:
            raise LeptonError("PruningCallback has no model: pass model= or use it in a Trainer")
        if self.optimizer is None:
            self.optimizer = getattr(self.trainer, "optimizer", None)
        if self.optimizer is not None:
            self.pruner.attach(self.optimizer)
        self.step = 0
        self._update()

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        self._update()
        if self.optimizer is None:  # no step to wrap: project the weights here instead
            self.pruner.apply()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["sparsity"] = self.pruner.sparsity

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.optimizer is not None:
            Pruner.detach(self.optimizer)


PruningSchedule = PruningCallback  # the name used in issue 4


# -- reports -------------------------------------------------------------------------------------


class SparsityReport(list):
    """Rows ``{layer, param, shape, size, nonzero, sparsity}``; ``str()`` is a text table."""

    def __str__(self) -> str:
        head = ("layer", "param", "shape", "nonzero", "sparsity")
        rows = [head] + [
            (r["layer"], r["param"], str(r["shape"]), f"{r['nonzero']:,}", f"{r['sparsity']:.1%}")
            for r in self
        ]
        size = sum(r["size"] for r in self)
        nz = sum(r["nonzero"] for r in self)
        total = 1 - nz / size if size else 0.0
        rows.append(("total", "", f"{size:,}", f"{nz:,}", f"{total:.1%}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        rule = "-" * len(max(lines, key=len))
        return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


def sparsity_report(model: Module) -> SparsityReport:
    """Per parameter: owning layer's name, dotted name, shape, size, nonzero count and
    sparsity = 1 - nonzero / size. ``print()`` it for a table with a total line."""
    rows = SparsityReport()
    for t in _parameters(model):
        nz = int(np.count_nonzero(t.param.data))
        size = int(t.param.size)
        rows.append(
            {
                "layer": t.layer.name,
                "param": t.name,
                "shape": tuple(t.param.shape),
                "size": size,
                "nonzero": nz,
                "sparsity": 1.0 - nz / size if size else 0.0,
            }
        )
    return rows


def count_flops(model: Module, nonzero: bool = False) -> int:
    """Floating-point operations per sample of the Dense and Conv layers (2 per multiply-add).

    Dense: 2 * in * out per position; Conv: 2 * (C_in kh kw) * C_out * (H_out W_out).
    ``nonzero=True`` counts only nonzero weights (what a sparse kernel does). Conv layers need
    their output shape, recorded when the model first runs.
    """
    total = 0
    for _, m in _named_modules(model):
        if not _is_weight_layer(m):
            continue
        w = m.weight.data
        positions = 1
        if m.output_shape is not None:
            spatial = m.output_shape[1:-1] if w.ndim == 2 else m.output_shape[2:]
            positions = int(np.prod(spatial, dtype=np.int64))
        elif w.ndim > 2:
            raise LeptonError(f"layer '{m.name}': run one batch first (output size unknown)")
        n = int(np.count_nonzero(w)) if nonzero else w.size
        total += 2 * n * positions
    return total


# -- compaction ----------------------------------------------------------------------------------


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


# -- sparse export -------------------------------------------------------------------------------


class CSRWeight(NamedTuple):
    """A pruned Dense weight W (K, N) in the sparse kernel's layout: CSR over its output
    columns (the CSR of W^T). Column n holds rows ``indices[indptr[n]:indptr[n+1]]``
    (ascending) with values ``data[indptr[n]:indptr[n+1]]``.

    data: (nnz,) float32; indices: (nnz,) int32; indptr: (N + 1,) int32; shape: (K, N).
    ``sparse_linear(x, w.indptr, w.indices, w.data, bias, act, out)`` computes f(x W + b).
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    def to_dense(self) -> np.ndarray:
        """W (K, N), float32."""
        return csr_to_dense(self.indptr, self.indices, self.data, self.shape)

    @property
    def density(self) -> float:
        """nnz / (K N)."""
        return csr_density(self.data, self.shape)


def _pack(w: np.ndarray) -> CSRWeight:
    indptr, indices, values = csr_arrays(w)  # ShapeError unless W is (in, out)
    return CSRWeight(values, indices, indptr, (int(w.shape[0]), int(w.shape[1])))


def to_sparse(
    model_or_weight: Module | np.ndarray | Tensor, min_sparsity: float = 0.0
) -> CSRWeight | dict[str, CSRWeight]:
    """Export pruned Dense weights for the sparse kernel (packed by the backend's ``to_csr``,
    through :func:`lepton_nn.runtime.compression.csr_arrays`, as the model file does).

    A weight array / Tensor W (in, out) gives one :class:`CSRWeight`; a model gives
    ``{parameter name: CSRWeight}`` for each Dense weight with sparsity >= ``min_sparsity``.
    Values are float32, the kernel's dtype.
    """
    if isinstance(model_or_weight, Module):
        out = {}
        for t in _parameters(model_or_weight):
            if t.attr == "weight" and t.param.ndim == 2 and _is_weight_layer(t.layer):
                w = t.param.data
                if 1.0 - np.count_nonzero(w) / w.size >= min_sparsity:
                    out[t.name] = _pack(w)
        return out
    w = model_or_weight.data if isinstance(model_or_weight, Tensor) else np.asarray(model_or_weight)
    return _pack(w)
