"""``Module``: parameters, sub-modules, train/eval mode, state dicts, lazy building.

A layer keeps hyperparameters from ``__init__``, creates weights in ``build(input_shape)``
(at its first call unless built explicitly) and computes in ``call``. Parameters and child
modules are found by walking the instance's attributes in the order they were set, so the
names in ``state_dict()`` are attribute paths such as ``layers.0.weight``.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..autograd import Tensor, is_grad_enabled, no_grad
from ..errors import NotBuiltError, ShapeError
from .hooks import _HookedCall

_counters: dict[str, itertools.count] = defaultdict(itertools.count)
REGISTRY: dict[str, type[Module]] = {}


# a word starts at a capital after a lowercase letter (Max|Pool), or at the last capital of an
# acronym followed by lowercase (QAT|Dense); a digit and the capitals after it stay in the word
_WORD_START = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _snake(name: str) -> str:
    """A class name as a layer name: ``Conv2D`` -> ``conv2d``, ``SimpleRNN`` -> ``simple_rnn``,
    ``GlobalAvgPool2D`` -> ``global_avg_pool2d``, ``LSTM`` -> ``lstm``."""
    return _WORD_START.sub("_", name).lower()


class Parameter(Tensor):
    """A trainable tensor (``requires_grad=True``). ``.data`` may be replaced by a new array."""

    __slots__ = ()

    def __init__(self, data: Any, dtype=None, name: str | None = None):
        super().__init__(data, requires_grad=True, dtype=dtype, name=name)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class SymbolicBase:
    """Base of :class:`lepton_nn.nn.graph.Symbol`: a layer called on one records the call
    into a graph model instead of computing."""

    __slots__ = ()


def _symbolic(args: tuple) -> bool:
    x = args[0] if args else None
    if isinstance(x, SymbolicBase):
        return True
    return type(x) is list and bool(x) and isinstance(x[0], SymbolicBase)


class WeightsDtype:
    """The ``dtype`` of a container (Sequential, graph Model): the one float dtype of the weights
    inside it (a lazy layer not built yet counts by the dtype it will build in), so a
    Sequential of float64 layers is float64 without ``astype``; the dtype last set when
    there are no weights or they disagree."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        floats = set()
        for m in obj.modules():
            if not m._built:
                floats.add(np.dtype(m.dtype))
            floats.update(p.dtype for _, p in m._own_parameters() if p.dtype.kind == "f")
        return floats.pop() if len(floats) == 1 else obj.__dict__["_set_dtype"]

    def __set__(self, obj, value) -> None:
        obj.__dict__["_set_dtype"] = np.dtype(value)


class Module:
    """Base class of layers and models."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("lepton_nn."):
            REGISTRY[cls.__name__] = cls  # only our own classes can be named by a model file

    def __init__(self, name: str | None = None):
        kind = _snake(type(self).__name__)
        n = next(_counters[kind])
        self.name = name or (kind if n == 0 else f"{kind}_{n}")
        self.training = True
        self.dtype = np.dtype(np.float32)
        self._built = True  # a layer with lazy weights sets this False until build()
        self.input_shape: tuple | None = None
        self.output_shape: tuple | None = None
        self._forward_hooks: dict[int, Any] = {}
        self._backward_hooks: dict[int, Any] = {}

    # -- computing -------------------------------------------------------------------------
    def call(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement call()")

    def __call__(self, *args, **kwargs):
        if args and _symbolic(args):  # nn.Input / graph symbols: record, do not compute
            from .graph import record_call

            return record_call(self, args[0] if len(args) == 1 else list(args), kwargs)
        if self._built and self.input_shape is not None:
            if not (self._forward_hooks or self._backward_hooks):
                return self.call(*args, **kwargs)  # built, seen before, no hooks: just compute
        return self._call_with_setup(args, kwargs)

    def _call_with_setup(self, args: tuple, kwargs: dict):
        """``call`` plus what the first call and hooks need: build, record shapes, run hooks."""
        x = args[0] if args else None
        if not self._built:
            shape = tuple(np.shape(x.data if isinstance(x, Tensor) else x))
            self.build((None, *shape[1:]))
        hooked = None
        if self._backward_hooks and is_grad_enabled():  # see nn/hooks.py
            hooked = _HookedCall(self, len(args))
            args = hooked.wrap_inputs(args)
        out = self.call(*args, **kwargs)
        if self.input_shape is None and x is not None:
            self.input_shape = (None, *np.shape(x.data if isinstance(x, Tensor) else x)[1:])
            if isinstance(out, Tensor):
                self.output_shape = (None, *out.shape[1:])
        for hook in list(self._forward_hooks.values()):
            r = hook(self, args, out)
            if r is not None:
                out = r
        if hooked is not None:
            hooked.watch_outputs(out)
        return out

    def call_fused(self, x, following: Module):
        """``following(self(x))`` in one op where this layer knows how (say, a convolution
        and the max pool after it); None where it does not. Sequential asks, and runs the
        two layers one by one on None. Only asked of layers that are built, have been called
        and have no hooks (a hook must see each layer's own output)."""
        return None

    def register_forward_hook(self, fn) -> Any:
        """``fn(module, inputs, output)`` after each call; returns a handle with ``remove()``."""
        return _Handle(self._forward_hooks, fn)

    def register_full_backward_hook(self, fn) -> Any:
        """``fn(module, grad_input, grad_output)`` in ``backward()``, once per recorded call.

        ``grad_input[i]`` = dL/d(input i) from this module alone (None for inputs that need no
        gradient, such as raw data), ``grad_output`` = dL/d(outputs). Returning a tuple replaces
        ``grad_input`` (for a one-input module, the common case). See :mod:`.hooks`.
        """
        return _Handle(self._backward_hooks, fn)

    # -- structure ---------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        for key, value in vars(self).items():
            if isinstance(value, Module):
                yield key, value
            elif isinstance(value, (list, tuple)):
                for i, v in enumerate(value):
                    if isinstance(v, Module):
                        yield f"{key}.{i}", v

    def modules(self) -> Iterator[Module]:
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def _own_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for key, value in vars(self).items():
            if isinstance(value, Parameter):
                yield key, value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs; raises ``NotBuiltError`` if a layer is unbuilt."""
        self._check_built()
        seen: set[int] = set()
        for name, p in self._walk(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _walk(self, prefix: str):
        for key, p in self._own_parameters():
            yield prefix + key, p
        for key, child in self.named_children():
            yield from child._walk(f"{prefix}{key}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def _check_built(self) -> None:
        for m in self.modules():
            if not m._built:
                raise NotBuiltError(
                    f"layer '{m.name}' ({type(m).__name__}) has no weights yet: give it its "
                    "input size, call model.build(input_shape), or run one batch through the model"
                )

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # -- modes, state ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, by dotted name."""
        out = {k: p.data.copy() for k, p in self.named_parameters()}
        for prefix, m in self._named_modules():
            for k, v in m.buffers().items():
                out[prefix + k] = np.array(v, copy=True)
        return out

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the weights (e.g. BatchNorm running stats)."""
        return {}

    def load_buffers(self, values: dict[str, np.ndarray]) -> None:
        if values:
            raise KeyError(f"{type(self).__name__} has no buffers {sorted(values)}")

    def _named_modules(self, prefix: str = ""):
        yield prefix, self
        for key, child in self.named_children():
            yield from child._named_modules(f"{prefix}{key}.")

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters; shapes must match (``ShapeError`` otherwise)."""
        params = dict(self.named_parameters())
        bufs = {prefix + k: (m, k) for prefix, m in self._named_modules() for k in m.buffers()}
        if strict:
            missing = (set(params) | set(bufs)) - set(state)
            unexpected = set(state) - set(params) - set(bufs)
            if missing or unexpected:
                raise KeyError(
                    f"state dict mismatch: missing {sorted(missing)}, "
                    f"unexpected {sorted(unexpected)}"
                )
        for k, p in params.items():
            if k in state:
                v = np.asarray(state[k])
                if v.shape != p.shape:
                    raise ShapeError(
                        f"parameter {k}: model has shape {p.shape}, state has {v.shape}"
                    )
                p.data = v.astype(p.dtype, order="C", copy=True)
        per_module: dict[int, tuple[Module, dict]] = {}
        for k, (m, key) in bufs.items():
            if k in state:
                per_module.setdefault(id(m), (m, {}))[1][key] = np.array(state[k], copy=True)
        for m, values in per_module.values():
            m.load_buffers(values)

    def astype(self, dtype) -> Module:
        """Convert every parameter (and future computation) to ``dtype`` (float32/float64)."""
        dtype = np.dtype(dtype)
        for m in self.modules():
            m.dtype = dtype
            for _, p in m._own_parameters():  # built layers now; lazy ones build in dtype
                p.data = p.data.astype(dtype)
                p.grad = None
        return self

    # -- building ------------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        """True when this module and every module inside it have their weights."""
        return all(m._built for m in self.modules())

    def build(self, input_shape) -> Module:
        """Build every lazy layer inside by running one zero sample of ``input_shape`` through.

        ``input_shape`` is the shape of a batch with its batch axis first (``(None, 32)``), or
        of one sample (``32``). Layers with weights override this to create them.
        """
        shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)[1:]
        dtype = getattr(self, "dtype", np.float32)
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        with no_grad():
            self(Tensor(np.zeros((1, *shape), dtype=dtype)))
        for m, training in modes:  # each module back in its own mode
            m.training = training
        return self

    # -- serialization -------------------------------------------------------------------------
    def get_config(self) -> dict:
        """Constructor arguments as JSON-able values (what a model file records)."""
        return {"name": self.name}

    def __repr__(self) -> str:
        cfg = {k: v for k, v in self.get_config().items() if k != "name"}
        args = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
        return f"{type(self).__name__}({args})"

    def summary(self, print_fn=print, quantized=None) -> str:
        """A table of layers: output shape, parameters, FLOPs per sample, weight sparsity and
        quantization state (``quantized``: a QuantizedModel of this model); printed and returned.
        """
        from .summary import summary_table

        text = summary_table(self, quantized)
        if print_fn is not None:
            print_fn(text)
        return text


class _Handle:
    _ids = itertools.count()

    def __init__(self, table: dict, fn):
        self.table, self.id = table, next(self._ids)
        table[self.id] = fn

    def remove(self) -> None:
        self.table.pop(self.id, None)
