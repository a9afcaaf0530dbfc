"""Capture: run a training step eagerly once and record it as a tape of primitive ops.

While ``record(rec)`` is active, ``Function.apply``, ``Tensor.backward`` and the ``step()``
of every optimizer class are swapped for recording twins that first compute eagerly (so
the capture call *is* an ordinary eager step) and tell the :class:`Recorder`, which lowers
each op through the op table (:mod:`lepton_nn.compiled.lower`) into primitive ops over
numbered buffers (slots). The backward is recorded by walking the same graph in the same
order as ``Tensor.backward`` (creation order, reversed; gradients of a tensor used twice
summed as ``earlier + later``), so the replay adds in the eager order.

A slot is a ``temp`` (written by one op: single assignment), an ``input`` (an array argument
of the step), a ``param`` (a leaf that requires grad: bound to ``p.data`` by reference, so
updates land in the model), a ``const`` (an array the step made outside the captured ops:
copied, and checked on the validation call), or a ``view`` (a C-order reshape of another).
Recording is not thread-safe: capture one step at a time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Function, Tensor
from ..autograd.grad_mode import is_grad_enabled
from ..errors import UnsupportedOpError
from ..optim import Optimizer


@dataclass
class Slot:
    shape: tuple
    dtype: np.dtype
    kind: str  # temp | input | param | const | view
    ref: Any = None  # input: argument index; param: the tensor; const: array; view: base slot


@dataclass
class Prim:
    """One primitive op: ``name`` from the op table, slots read and written, static attrs."""

    name: str
    ins: tuple
    outs: tuple
    attrs: dict = field(default_factory=dict)

    def key(self):
        return (self.name, self.ins, self.outs, tuple(sorted(_keyable(self.attrs).items())))


def _keyable(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, Optimizer):
            v = (type(v).__name__, id(v))
        elif isinstance(v, Tensor):
            v = id(v)
        elif isinstance(v, (list, tuple)):
            v = tuple(id(x) if isinstance(x, Tensor) else x for x in v)
        out[k] = v
    return out


class Recorder:
    """Slots and prims of one captured call; ``args`` are the step's (contiguous) arguments."""

    def __init__(self, args: tuple):
        self.slots: list[Slot] = []
        self.ops: list[Prim] = []
        self.by_tensor: dict[int, int] = {}
        self.by_array: dict[int, int] = {}
        self.keep: list = []  # tensors, contexts and arrays whose ids key the dicts above
        self.saved: dict[int, dict] = {}  # id(ctx) -> slots its backward lowering reads
        self.grad_of: dict[int, int] = {}  # id(leaf) -> slot of its gradient (this step)
        self.grad_snap: dict[int, np.ndarray] = {}
        self.optimizers: list[Optimizer] = []
        self.leaves: list[Tensor] = []  # parameter slots' tensors, in order of first use
        self.inputs: dict[int, np.ndarray] = {}  # input slot -> the argument's array
        for k, a in enumerate(args):
            arr = a.data if isinstance(a, Tensor) else a
            if isinstance(arr, np.ndarray):
                self.inputs[self._add(Slot(arr.shape, arr.dtype, "input", k), arr)] = arr

    # -- slots -----------------------------------------------------------------------------
    def _add(self, slot: Slot, arr=None) -> int:
        self.slots.append(slot)
        s = len(self.slots) - 1
        if arr is not None:
            self.by_array[id(arr)] = s
            self.keep.append(arr)
        return s

    def new(self, shape, dtype) -> int:
        return self._add(Slot(tuple(shape), np.dtype(dtype), "temp"))

    def like(self, s: int) -> int:
        return self.new(self.slots[s].shape, self.slots[s].dtype)

    def view(self, base: int, shape) -> int:
        """A C-order reshape of slot ``base`` (no copy)."""
        shape = tuple(shape)
        if shape == self.slots[base].shape:
            return base
        return self._add(Slot(shape, self.slots[base].dtype, "view", base))

    def emit(self, name: str, ins, outs, **attrs) -> None:
        self.ops.append(Prim(name, tuple(ins), tuple(outs), attrs))

    def tensor_slot(self, t: Tensor) -> int:
        s = self.by_tensor.get(id(t))
        if s is not None:
            return s
        # a parameter (frozen ones too: bound by reference) or any leaf that wants a grad
        # and is not an input's array
        from ..nn.module import Parameter

        leaf = t._ctx is None and (t.requires_grad or isinstance(t, Parameter))
        if leaf and id(t.data) not in self.by_array:
            s = self._add(Slot(t.data.shape, t.data.dtype, "param", t))
            self.leaves.append(t)
        else:
            s = self.array_slot(t.data)
        self.by_tensor[id(t)] = s
        self.keep.append(t)
        return s

    def array_slot(self, arr) -> int:
        """The slot of an array an op reads that no captured op wrote: an input, a reshape
        of one, or a constant (copied now)."""
        arr = np.asarray(arr)
        s = self.by_array.get(id(arr))
        if s is not None:
            return s
        root = arr
        while isinstance(root.base, np.ndarray):
            root = root.base
        for k, inp in self.inputs.items():
            iroot = inp
            while isinstance(iroot.base, np.ndarray):
                iroot = iroot.base
            if iroot is root or np.shares_memory(arr, inp):
                same_start = (
                    arr.__array_interface__["data"][0] == inp.__array_interface__["data"][0]
                )
                if arr.flags.c_contiguous and arr.size == inp.size and same_start:
                    s = self.view(k, arr.shape) if arr.dtype == inp.dtype else None
                    if s is not None:
                        self.by_array[id(arr)] = s
                        self.keep.append(arr)
                        return s
                raise UnsupportedOpError(
                    f"an op reads a strided view or a re-typed copy of input {self.slots[k].ref} "
                    f"(shape {arr.shape}, dtype {arr.dtype}): only whole reshapes of an input "
                    "are captured"
                )
        return self._add(Slot(arr.shape, arr.dtype, "const", np.array(arr)), arr)

    # -- events from the patched engine --------------------------------------------------------
    def on_apply(self, ctx, tensors, kwargs, result: Tensor) -> None:
        from .lower import FORWARD

        lower = FORWARD.get(type(ctx))
        if lower is None:
            raise UnsupportedOpError(
                f"op {type(ctx).__name__} has no compiled twin; supported ops: "
                f"{', '.join(sorted(c.__name__ for c in FORWARD))}"
            )
        ins = [self.tensor_slot(t) for t in tensors]
        out = self.new(result.data.shape, result.data.dtype)
        self.by_tensor[id(result)] = out
        self.by_array[id(result.data)] = out
        self.keep += [result, ctx, result.data]
        self.saved[id(ctx)] = {"ins": ins, "out": out}
        lower(self, ctx, ins, kwargs, out)

    def on_backward(self, root: Tensor, grad) -> None:
        """Record the gradient ops of ``root.backward(grad)`` in the engine's order."""
        from .lower import BACKWARD

        if id(root) not in self.by_tensor:
            raise UnsupportedOpError("backward() on a tensor that no captured op produced")
        if grad is None:
            seed = self.array_slot(np.ones_like(root.data))
        else:
            g = np.asarray(grad.data if isinstance(grad, Tensor) else grad, root.dtype)
            seed = self.array_slot(np.array(np.broadcast_to(g, root.shape)))
        nodes, stack = {id(root): root}, [root]
        while stack:
            ctx = stack.pop()._ctx
            if ctx is not None:
                for p in ctx.parents:
                    if p.requires_grad and id(p) not in nodes:
                        nodes[id(p)] = p
                        stack.append(p)
        grads = {id(root): seed}
        for node in sorted(nodes.values(), key=lambda t: t._seq, reverse=True):
            gs = grads.pop(id(node), None)
            if gs is None:
                continue
            if node._hooks:
                raise UnsupportedOpError("gradient hooks (register_hook) are not captured")
            ctx = node._ctx
            if ctx is None:
                self._accumulate(node, gs)
                continue
            lower = BACKWARD[type(ctx)]
            for p, ps in zip(ctx.parents, lower(self, ctx, gs)):
                if ps is None or not p.requires_grad:
                    continue
                if id(p) in grads:  # used more than once: earlier + later, as the engine
                    acc = self.like(grads[id(p)])
                    self.emit("add", (grads[id(p)], ps), (acc,))
                    grads[id(p)] = acc
                else:
                    grads[id(p)] = ps

    def _accumulate(self, leaf: Tensor, gs: int) -> None:
        if self.slots[gs].shape != leaf.shape or self.slots[gs].dtype != leaf.dtype:
            full = self.new(leaf.shape, leaf.dtype)
            self.emit("fill", (gs,), (full,))
            gs = full
        if leaf.grad is None:  # fresh (zero_grad earlier in the step): .grad is this slot
            self.grad_of[id(leaf)] = gs
        elif id(leaf) in self.grad_of:  # a second backward in the same step
            acc = self.like(gs)
            self.emit("add", (self.grad_of[id(leaf)], gs), (acc,))
            self.grad_of[id(leaf)] = acc
        else:
            raise UnsupportedOpError(
                f"a gradient (parameter of shape {leaf.shape}) accumulates onto a .grad from "
                "before the step: call zero_grad() inside the compiled step"
            )

    def after_backward(self, params) -> None:
        for p in params:
            if id(p) in self.grad_of and p.grad is not None:
                self.grad_snap[id(p)] = p.grad.copy()

    def on_step(self, opt: Optimizer) -> None:
        from .lower import OPTIMIZERS

        lower = OPTIMIZERS.get(type(opt))
        if lower is None:
            raise UnsupportedOpError(
                f"optimizer {type(opt).__name__} has no compiled twin; supported: "
                f"{', '.join(sorted(c.__name__ for c in OPTIMIZERS))}"
            )
        for p in opt.params:
            if p.grad is None:
                continue
            snap = self.grad_snap.get(id(p))
            if id(p) not in self.grad_of or snap is None:
                raise UnsupportedOpError(
                    f"{type(opt).__name__}.step() reads a gradient (parameter of shape "
                    f"{p.shape}) that no captured backward() produced"
                )
            if not np.array_equal(p.grad, snap, equal_nan=True):
                raise UnsupportedOpError(
                    f"a gradient (parameter of shape {p.shape}) changed between backward() "
                    "and step() outside the captured ops (clip_grad_norm_ or the like)"
                )
        if opt not in self.optimizers:
            self.optimizers.append(opt)
        self.emit("tick", (), (), opt=opt)  # opt.steps += 1
        lower(self, opt)

    def result_slots(self, out):
        """The slot structure of the step's return value (None, a Tensor, or a tuple/list)."""
        if out is None:
            return None
        if isinstance(out, Tensor):
            if id(out) not in self.by_tensor:
                raise UnsupportedOpError("the step returns a Tensor that no captured op made")
            return self.by_tensor[id(out)]
        if isinstance(out, (tuple, list)):
            return tuple(self.result_slots(o) for o in out)
        raise UnsupportedOpError(
            f"the step returns a {type(out).__name__}: return Tensors (or None), not numbers "
            "computed in Python, which a replay could not recompute"
        )


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


@contextlib.contextmanager
def record(rec: Recorder):
    """Swap in the recording twins of ``Function.apply``, ``Tensor.backward`` and every
    optimizer's ``step`` for the duration of the block."""
    orig_apply, orig_backward = Function.__dict__["apply"], Tensor.backward

    def apply(cls, *tensors, **kwargs):
        ctx = cls()
        out = ctx.forward(*[t.data for t in tensors], **kwargs)
        if is_grad_enabled() and any(t.requires_grad for t in tensors):
            ctx.parents, ctx.needs_grad = tensors, [t.requires_grad for t in tensors]
            result = Tensor._wrap(out, True, ctx)
        else:
            result = Tensor._wrap(out, False, None)
        rec.on_apply(ctx, tensors, kwargs, result)
        return result

    def backward(self, grad=None):
        rec.on_backward(self, grad)
        orig_backward(self, grad)
        rec.after_backward(rec.leaves)

    steps = {}
    for cls in [Optimizer, *_all_subclasses(Optimizer)]:
        if "step" in cls.__dict__:
            steps[cls] = cls.__dict__["step"]

    def recording_step(orig):
        def step(self):
            rec.on_step(self)
            return orig(self)

        return step

    for cls in list(Function.__subclasses__()):
        if "apply" in cls.__dict__:
            raise UnsupportedOpError(f"op {cls.__name__} overrides Function.apply")
    Function.apply = classmethod(apply)
    Tensor.backward = backward
    for cls, orig in steps.items():
        cls.step = recording_step(orig)
    try:
        yield rec
    finally:
        Function.apply = orig_apply
        Tensor.backward = orig_backward
        for cls, orig in steps.items():
            cls.step = orig
