"""``Tensor``: an ndarray plus the op that made it, and reverse-mode ``backward()``.

The engine is two steps (read ``backward``): sort the graph topologically, then walk it in
reverse, asking each op's ``Function.backward`` for its inputs' gradients and summing them
where a tensor is used more than once. Leaves (tensors made by the user with
``requires_grad=True``, such as parameters) accumulate into ``.grad`` until it is zeroed.

Operators and methods (``+``, ``@``, ``.sum()``, ``.relu()``, ...) are differentiable ops
defined in :mod:`lepton_nn.ops` and attached to this class there.
"""

from __future__ import annotations

import itertools
from operator import attrgetter
from typing import Any

import numpy as np

from ..errors import LeptonError

__all__ = ["Tensor", "as_array", "HookHandle"]

_FLOATS = (np.float32, np.float64)
_created = itertools.count()  # stamps each op's output: it is newer than the op's inputs
_creation_order = attrgetter("_seq")


def as_array(data: Any, dtype=None) -> np.ndarray:
    """An ndarray of float32 or float64 (float64 kept; every other input becomes float32)."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    arr = np.asarray(data)
    # only an array (or NumPy scalar) keeps float64; Python floats and lists become float32
    typed = isinstance(data, (np.ndarray, np.generic))
    if arr.dtype.type not in _FLOATS or (not typed and arr.dtype == np.float64):
        if arr.dtype.kind not in "biuf":
            raise LeptonError(f"cannot make a Tensor from data of dtype {arr.dtype}")
        arr = arr.astype(np.float32)
    return arr


class Tensor:
    """A float32/float64 array that can record the ops applied to it.

    ``Tensor(data, requires_grad=False)``: ``data`` keeps a float32/float64 dtype; anything
    else numeric becomes float32. ``.data`` is the ndarray, ``.grad`` the accumulated gradient
    (same shape and dtype as ``.data``) or ``None``.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "name", "_hooks", "_seq", "__weakref__")
    __array_priority__ = 1000.0  # ndarray (op) Tensor defers to Tensor's reflected operator

    def __init__(self, data: Any, requires_grad: bool = False, dtype=None, name: str | None = None):
        self.data = as_array(data, dtype)
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self.name = name
        self._hooks: dict | None = None
        self._seq = -1  # a leaf: no inputs, so it may come first in a topological order

    @classmethod
    def _wrap(cls, data: np.ndarray, requires_grad: bool, ctx) -> Tensor:
        """Fast constructor for op results (no conversion)."""
        t = object.__new__(Tensor)
        t.data = data
        t.grad = None
        t.requires_grad = requires_grad
        t._ctx = ctx
        t.name = None
        t._hooks = None
        t._seq = next(_created) if ctx is not None else -1
        return t

    # -- plain accessors ------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> np.ndarray:
        """The underlying array (not a copy)."""
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data, False, None)

    def zero_grad(self) -> None:
        self.grad = None

    def requires_grad_(self, flag: bool = True) -> Tensor:
        self.requires_grad = bool(flag)
        return self

    def register_hook(self, fn) -> HookHandle:
        """Call ``fn(grad)`` in ``backward()`` once d(root)/d(self) is complete (all uses summed).

        ``grad`` has this tensor's shape; treat it as read-only (copy it to keep it). If ``fn``
        returns an array, that replaces the gradient flowing on (into ``.grad`` for a leaf,
        into the op that made this tensor otherwise). Returns a handle with ``remove()``.
        """
        if not self.requires_grad:
            raise LeptonError("register_hook() on a tensor that does not require grad")
        if self._hooks is None:
            self._hooks = {}
        return HookHandle(self._hooks, fn)

    def _run_hooks(self, g: np.ndarray) -> np.ndarray:
        for fn in list(self._hooks.values()):
            r = fn(g)
            if r is not None:
                r = np.array(r.data if isinstance(r, Tensor) else r, dtype=g.dtype)  # a copy
                if r.shape != g.shape:
                    raise LeptonError(
                        f"a gradient hook returned shape {r.shape}, expected {g.shape}"
                    )
                g = r
        return g

    def __repr__(self) -> str:
        op = f", op={type(self._ctx).__name__}" if self._ctx is not None else ""
        rg = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, threshold=20)}, dtype={self.dtype}{rg}{op})"

    def __hash__(self) -> int:
        # by identity, so Tensors stay usable in sets and as dict keys (the engine and the
        # tools key by id() anyway); ==, <, ... are elementwise (attached in lepton_nn.ops)
        return id(self)

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.data)

    # -- the engine -----------------------------------------------------------------------
    def backward(self, grad: Any = None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` that requires it.

        ``grad`` is the gradient flowing into ``self`` (ones for a scalar when omitted).
        """
        if not self.requires_grad:
            raise LeptonError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.data.size != 1:
                raise LeptonError(
                    f"backward() on a non-scalar tensor of shape {self.shape} needs grad= "
                    "(the gradient of some scalar with respect to this tensor)"
                )
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, self.dtype)
            grad = np.array(np.broadcast_to(grad, self.shape))  # ours: never alias the caller's

        # 1. topological order of the nodes that lead to self: an op's output is created after
        #    its inputs, so sorting by ``_seq`` (order of creation; -1 for leaves) gives one
        nodes = {id(self): self}
        stack = [self]
        while stack:
            ctx = stack.pop()._ctx
            if ctx is not None:
                for p in ctx.parents:
                    if p.requires_grad and id(p) not in nodes:
                        nodes[id(p)] = p
                        stack.append(p)
        topo = sorted(nodes.values(), key=_creation_order)

        # 2. reverse walk: each op turns its output's gradient into its inputs' gradients
        grads: dict[int, np.ndarray] = {id(self): grad}
        # A leaf may keep its gradient array as .grad only if no other node holds it too. An
        # array gets a second holder when an op passes the same one to several inputs, or
        # passes on a g that had one: every holder but one is marked ``shared`` (copy first).
        shared: set[int] = set()
        for node in reversed(topo):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._hooks:
                g = node._run_hooks(g)
            ctx = node._ctx
            if ctx is None:
                _accumulate_leaf(node, g, id(node) in shared)
                continue
            in_grads = ctx.backward(g)
            given: set[int] = set()  # ids of the arrays given so far (in_grads keeps them alive)
            for p, pg in zip(ctx.parents, in_grads):
                if pg is None or not p.requires_grad:
                    continue
                key = id(p)
                if key in grads:  # a tensor used more than once: sum (into a new array)
                    grads[key] = grads[key] + pg
                    shared.discard(key)
                else:
                    grads[key] = pg
                    if id(pg) in given or (pg is g and id(node) in shared):
                        shared.add(key)
                given.add(id(pg))


class HookHandle:
    """Returned by ``register_hook``: ``remove()`` unregisters the hook."""

    _ids = itertools.count()

    def __init__(self, table: dict, fn) -> None:
        self.table, self.id = table, next(self._ids)
        table[self.id] = fn

    def remove(self) -> None:
        self.table.pop(self.id, None)


def _accumulate_leaf(leaf: Tensor, g: np.ndarray, shared: bool) -> None:
    """leaf.grad += g, with .grad owning its memory and following the data's dtype.

    ``g`` itself becomes ``.grad`` when it owns its memory and is not ``shared`` with another
    node (see ``backward``); otherwise ``.grad`` is a copy.
    """
    if leaf.grad is None:
        owned = g.flags.owndata and g.dtype == leaf.data.dtype and g.shape == leaf.data.shape
        leaf.grad = (
            g
            if owned and not shared
            else np.array(np.broadcast_to(g, leaf.data.shape), dtype=leaf.data.dtype)
        )
    else:
        leaf.grad += g
