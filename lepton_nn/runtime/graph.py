"""DAG planning: chains of steps joined by merges, buffers reused after their last reader.

A network is a list of *chains* in topological order: each reads one or more values (model
inputs or earlier chains' outputs) and writes one value. A ``Sequential`` file is one chain
from its input; a graph model (:mod:`lepton_nn.nn.graph`'s manifest form) has one chain per
node at first, then :func:`contract` appends a node to the chain before it when that chain's
value has that node as its only reader and is not a model output. Only then may the plan
fold a BatchNorm, an activation or a max pool into the step before it: an intermediate that
another node also reads is never folded away.

Binding (:func:`bind_chains`) walks the steps in order with one :class:`Arena` per plan:
a step's output buffer comes from the arena; once the last reader of a buffer is bound
(counted per block of memory, so a Flatten view keeps its block alive), the block goes back
to the free list and a later step's output takes it (the smallest free block that fits). A
step that is the last reader of its input, not a model input or output, may compute in
place (``owned``). Steps whose calls run at once (a threaded packed Dense chain) are bound
with their reads held until the last of them (``keep``): the arena plans around those
buffers from the start. Every buffer starts on 64 bytes. The arena's ``peak_bytes`` is the
plan's activation memory; its ``requested_bytes`` what the same buffers would take without
reuse, each on a block of its own (padding counted in both): never less, as a block is only
ever made for a buffer of that footprint. :class:`Plan` holds the bound calls: running it
is one loop over them, the inputs passed in as first arguments.

Imports: NumPy, :mod:`lepton_nn.backend.threads` and :mod:`lepton_nn.errors` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lepton_nn.backend.threads import blas_held
from lepton_nn.errors import ModelFormatError

from .record import Record

__all__ = [
    "Arena",
    "Chain",
    "MergeStep",
    "MERGES",
    "Plan",
    "bind_chains",
    "contract",
    "out_buffer",
]

Op = tuple[Callable[..., Any], tuple]
_PINNED = 1 << 40  # readers of a model input or output: never released, never overwritten


class Arena:
    """The intermediate buffers of one plan: blocks of bytes handed out and taken back. Every
    buffer starts on a 64-byte boundary (``ALIGN``): a block holds up to ``ALIGN - 1`` bytes of
    padding before its aligned start, counted in both sizes (:meth:`footprint`)."""

    ALIGN = 64

    def __init__(self) -> None:
        self.blocks: dict[int, np.ndarray] = {}  # id -> block (kept alive: ids stay valid)
        self.free: list[np.ndarray] = []
        self.requested_bytes = 0  # the buffers' footprints: each on a block of its own
        self.handed: list[np.ndarray] = []  # blocks in the order they were handed out

    @classmethod
    def footprint(cls, nbytes: int) -> int:
        """The bytes of a block for a buffer of ``nbytes``: room for it at any start address."""
        return max(nbytes, 1) + cls.ALIGN - 1

    def _start(self, block: np.ndarray) -> int:
        return -block.__array_interface__["data"][0] % self.ALIGN

    def buffer(self, shape: tuple, dtype) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` on a free block (the smallest that
        fits, else a new one), starting at a multiple of ``ALIGN`` bytes. Its contents are
        whatever the block held: the step writes it whole at every run."""
        dtype = np.dtype(dtype)
        shape = tuple(int(d) for d in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        self.requested_bytes += self.footprint(nbytes)
        # a block holds footprint(nbytes) for its own first buffer: what fits, whatever its start
        fits = [i for i, b in enumerate(self.free) if b.nbytes - self.ALIGN + 1 >= nbytes]
        if fits:
            block = self.free.pop(min(fits, key=lambda i: self.free[i].nbytes))
        else:
            block = np.zeros(self.footprint(nbytes), np.uint8)
            self.blocks[id(block)] = block
        self.handed.append(block)
        start = self._start(block)
        return block[start : start + nbytes].view(dtype).reshape(shape)

    def block_of(self, a: Any) -> np.ndarray | None:
        """The arena block ``a`` is a view of (None for arrays from elsewhere)."""
        while isinstance(a, np.ndarray):
            if self.blocks.get(id(a)) is a:
                return a
            a = a.base
        return None

    def release(self, block: np.ndarray) -> None:
        if all(b is not block for b in self.free):
            self.free.append(block)

    @property
    def peak_bytes(self) -> int:
        return sum(b.nbytes for b in self.blocks.values())


def out_buffer(ctx: Any, shape: tuple, dtype) -> np.ndarray:
    """A buffer a step writes whole at every run: from the plan's arena when binding a plan
    (``ctx.pool``), else a new one."""
    pool = getattr(ctx, "pool", None)
    return np.zeros(shape, dtype) if pool is None else pool.buffer(shape, dtype)


# --------------------------------------------------------------------------- merges


def _maximum(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.maximum(a, b, out=out)  # (a positional out is deprecated for np.maximum)


def _concat(srcs: tuple, axis: int, out: np.ndarray) -> None:
    np.concatenate(srcs, axis=axis, out=out)


class MergeStep:
    """An elementwise merge (add, subtract, multiply, average, maximum; NumPy broadcasting)
    or a concatenation of several values: (N, *shape_i) -> (N, *out_shape), in the same
    order as :mod:`lepton_nn.nn.merge` (so the same rounding). An elementwise merge computes
    in the buffer of its first or second input when it is that buffer's last reader, the
    buffer has the output's shape and no other input is (a view of) it."""

    kind = "merge"
    UFUNCS = {"Add": np.add, "Subtract": np.subtract, "Multiply": np.multiply,
              "Average": np.add, "Maximum": _maximum}  # fmt: skip

    def __init__(self, label: str, op: str, out_shape: tuple, axis: int | None = None):
        self.label, self.op, self.out_shape, self.axis = label, op, tuple(out_shape), axis

    def bind(self, srcs, owned, ctx):
        shape = (ctx.n, *self.out_shape)
        if self.op == "Concatenate":
            out = out_buffer(ctx, shape, ctx.dtype)
            return [(_concat, (tuple(srcs), self.axis, out))], out
        out = None
        for j in (0, 1):  # the first op reads both at each element before writing it there
            a = srcs[j]
            if (
                owned[j]
                and a.shape == shape
                and a.dtype == ctx.dtype
                and not any(
                    np.may_share_memory(a, b) for i, b in enumerate(srcs) if i != j and b is not a
                )
                and all(b is not a for b in srcs[2:])
            ):
                out = a  # its last reader: compute in its buffer
                break
        if out is None:
            out = out_buffer(ctx, shape, ctx.dtype)
        first = srcs[0]
        fn = self.UFUNCS[self.op]
        ops: list[Op] = [(fn, (first, srcs[1], out))]
        ops += [(fn, (out, s, out)) for s in srcs[2:]]
        if self.op == "Average":
            ops.append((np.multiply, (out, np.asarray(1.0 / len(srcs), ctx.dtype), out)))
        return ops, out

    def describe(self) -> str:
        return f"{self.label}: {self.op.lower()} -> {self.out_shape}"


MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Concatenate")


def merge_step(label: str, cls: str, config: dict, widths: list[tuple]) -> MergeStep:
    """The step of merge layer ``cls`` on inputs of per-sample shapes ``widths``;
    ``ModelFormatError`` naming the layer and the shapes when they do not fit."""
    if len(widths) < 2 or (cls == "Subtract" and len(widths) != 2):
        raise ModelFormatError(f"{label} reads {len(widths)} inputs")
    if cls == "Concatenate":
        axis = config.get("axis", -1)
        rank = len(widths[0]) + 1
        bad = isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank
        if bad or axis % rank == 0:
            raise ModelFormatError(f"{label}: axis {axis!r} for inputs of {rank} axes")
        ax = axis % rank
        rest = {w[: ax - 1] + w[ax:] for w in widths}
        if len(rest) != 1 or any(len(w) + 1 != rank for w in widths):
            raise ModelFormatError(f"{label} cannot join shapes {' and '.join(map(str, widths))}")
        size = sum(w[ax - 1] for w in widths)
        out = (*widths[0][: ax - 1], size, *widths[0][ax:])
        return MergeStep(label, cls, out, ax)
    try:
        if len({len(w) for w in widths}) != 1:
            raise ValueError
        out = np.broadcast_shapes(*widths)
    except ValueError:
        raise ModelFormatError(
            f"{label} cannot combine shapes {' and '.join(map(str, widths))}"
        ) from None
    return MergeStep(label, cls, out)


# --------------------------------------------------------------------------- chains


class Chain(Record):
    """Steps run one after the other: the first reads ``inputs`` (several for a merge),
    each next one the previous output; the last writes the value ``out``. ``final``: the
    last activation (for predict_proba); ``shape``: the per-sample output shape."""

    _fields = ("inputs", "steps", "out", "final", "shape")

    def __init__(self, inputs: list[str], steps: list[Any], out: str, final: str = "identity",
                 shape: tuple = ()) -> None:  # fmt: skip
        self.inputs, self.steps, self.out, self.final, self.shape = inputs, steps, out, final, shape


def contract(chains: list[Chain], outputs: list[str]) -> list[Chain]:
    """Append each one-input chain to the chain it reads when it is that chain's only
    reader and the value read is not a model output. A chain with no steps (Dropout, an
    identity) becomes an alias of its input."""
    readers: dict[str, int] = {}
    for c in chains:
        for name in c.inputs:
            readers[name] = readers.get(name, 0) + 1
    alias: dict[str, str] = {}
    by_out: dict[str, Chain] = {}
    kept: list[Chain] = []
    for c in chains:
        c.inputs = [alias.get(i, i) for i in c.inputs]
        if not c.steps and len(c.inputs) == 1:  # nothing to compute: read its input instead
            alias[c.out] = c.inputs[0]
            readers[c.inputs[0]] = readers.get(c.inputs[0], 0) + readers.get(c.out, 0) - 1
            continue
        src = c.inputs[0]
        prev = by_out.get(src)
        if len(c.inputs) == 1 and prev is not None and readers.get(src) == 1 and src not in outputs:
            prev.steps += c.steps
            prev.out, prev.final, prev.shape = c.out, c.final, c.shape
            del by_out[src]
            by_out[c.out] = prev
            continue
        by_out[c.out] = c
        kept.append(c)
    outputs[:] = [alias.get(o, o) for o in outputs]
    return kept


def bind_chains(
    chains: list[Chain], inputs: dict[str, np.ndarray], outputs: list[str], ctx: Any,
    keep: dict[int, int] | None = None,
) -> tuple[list[Op], list[np.ndarray], list[int]]:  # fmt: skip
    """Every step bound for ``ctx.n`` rows, buffers from ``ctx.pool`` reused after their
    last reader: the ops in order, the output arrays and, per op, the step it came from (its
    index in the chains' steps in order). ``keep``: ``{step k: step e}`` (k < e), the values
    step k reads stay live until step e is bound (so that no output of steps k..e lands on
    them: the layers of a threaded packed chain run at once, see
    :func:`~.plan._held_reads`)."""
    arena: Arena = ctx.pool
    keep = keep or {}
    items: list[tuple[Any, list[str], str]] = []  # (step, values read, value written)
    for c in chains:
        reads = c.inputs
        for k, step in enumerate(c.steps):
            out = c.out if k == len(c.steps) - 1 else f"{c.out}#{k}"
            items.append((step, reads, out))
            reads = [out]
    readers: dict[str, int] = {}
    for _, reads, _ in items:
        for name in reads:
            readers[name] = readers.get(name, 0) + 1
    for name in [*inputs, *outputs]:
        readers[name] = _PINNED
    values: dict[str, Any] = dict(inputs)
    refs: dict[int, int] = {}  # block id -> reads still to come of values on that block
    late: dict[int, list[np.ndarray]] = {}  # step e -> blocks of reads held until e is bound
    ops: list[Op] = []
    origin: list[int] = []
    for k, (step, reads, out) in enumerate(items):
        srcs = [values[r] for r in reads]
        blocks = [arena.block_of(a) for a in srcs]
        owned = [b is not None and refs[id(b)] == sum(c is b for c in blocks) for b in blocks]
        start = len(arena.handed)
        if isinstance(step, MergeStep):
            step_ops, y = step.bind(srcs, owned, ctx)
        else:
            step_ops, y = step.bind(srcs[0], owned[0], ctx)
        ops += step_ops
        origin += [k] * len(step_ops)
        values[out] = y
        yb = arena.block_of(y)
        for b in arena.handed[start:]:  # the step's scratch: free once it has run
            if b is not yb and refs.get(id(b), 0) == 0:
                arena.release(b)
        done = [b for b in blocks if b is not None]
        if k in keep:  # these reads end with step keep[k]
            late.setdefault(keep[k], []).extend(done)
            done = []
        done += late.pop(k, [])
        for b in done:
            refs[id(b)] -= 1
        if yb is not None:
            refs[id(yb)] = refs.get(id(yb), 0) + readers.get(out, 0)
        for b in (*done, yb):
            if b is not None and refs[id(b)] == 0:
                arena.release(b)
    return ops, [values[o] for o in outputs], origin


# --------------------------------------------------------------------------- plans


class _Input:
    """Marks input ``k`` of the plan in a step's arguments."""

    __slots__ = ("k",)

    def __init__(self, k: int = 0) -> None:
        self.k = k


def _arrays(args: Any, depth: int = 0) -> Iterator[Any]:
    """The arrays among a call's arguments (inside tuples and lists too)."""
    for a in args:
        if isinstance(a, np.ndarray):
            yield a
        elif isinstance(a, (tuple, list)) and depth < 3:
            yield from _arrays(a, depth + 1)


class Plan:
    """The bound calls for one batch size. ``run(x)`` returns the (reused) output buffer
    (a list of them for a network of several outputs); ``x``: an array, or a tuple with one
    per input for a network of several inputs.

    ``head``: the calls up to the last one reading an input, as ``(fn, args, k)``
    (``fn(x[k], *args)`` when ``k >= 0``); ``tail``: the rest, ``fn(*args)``. An input read
    other than as a first argument, through a view, or returned as an output is copied into
    a buffer of its own first. ``memory``: the arena's ``peak_bytes`` (the intermediate
    buffers, reused), ``requested_bytes`` (the same without reuse) and ``buffers``.
    """

    __slots__ = ("n", "head", "tail", "out", "hold_blas", "lengths", "memory", "single")

    def __init__(
        self,
        n: int,
        ops: list[Op],
        outs: list[np.ndarray],
        placeholders: list[np.ndarray],
        hold_blas: bool = False,
        lengths: np.ndarray | None = None,
        memory: dict | None = None,
        many_outputs: bool = False,
    ) -> None:
        self.n = n
        self.hold_blas = hold_blas  # BLAS on one thread while running (see run)
        self.lengths = lengths  # a plan for sequences with lengths: run() fills this (N,)
        self.memory = memory or {}
        marks: dict[int, _Input] = {}
        copies: list[Op] = []
        for k, first in enumerate(placeholders):
            direct = not any(o is first or np.may_share_memory(o, first) for o in outs)
            for _, args in ops if direct else ():
                for j, a in enumerate(_arrays(args)):
                    if (a is first and (j > 0 or args[0] is not first)) or (
                        a is not first and np.may_share_memory(a, first)
                    ):
                        direct = False
                        break
                if not direct:
                    break
            if direct:
                marks[id(first)] = _Input(k)
            else:  # the plan reads its own copy of this input
                copies.append((_copy_into, (_Input(k), first)))
        ops = copies + [
            (fn, (marks[id(args[0])], *args[1:]))
            if args and isinstance(args[0], np.ndarray) and id(args[0]) in marks
            else (fn, args)
            for fn, args in ops
        ]
        last = max((i for i, (_, args) in enumerate(ops) if args and isinstance(args[0], _Input)),
                   default=-1)  # fmt: skip
        self.head = [(fn, args[1:], args[0].k) if args and isinstance(args[0], _Input)
                     else (fn, args, -1) for fn, args in ops[: last + 1]]  # fmt: skip
        self.tail = ops[last + 1 :]
        self.out = list(outs) if many_outputs else outs[0]
        # one call reading the one input and nothing else (the int8 or Dense chain at batch
        # 1): ``(fn, args)``, run as fn(x, *args) with no loop (see InferenceModel.forward)
        one = len(self.head) == 1 and not self.tail and self.head[0][2] == 0
        plain = len(placeholders) == 1 and lengths is None and not hold_blas
        self.single = self.head[0][:2] if one and plain else None

    def run(self, x: Any, lengths: np.ndarray | None = None) -> Any:
        """The output for ``x`` (and, in a plan made for them, the sequences' ``lengths``,
        checked by the caller)."""
        if self.lengths is not None:
            np.copyto(self.lengths, lengths)
        xs = x if type(x) is tuple else (x,)
        if self.hold_blas:  # steps run threads of their own: BLAS's would compete with them
            with blas_held():
                return self._run(xs)
        return self._run(xs)

    def _run(self, xs: tuple) -> Any:
        for fn, args, k in self.head:
            if k >= 0:
                fn(xs[k], *args)
            else:
                fn(*args)
        for fn, args in self.tail:
            fn(*args)
        return self.out


def _copy_into(x: np.ndarray, buf: np.ndarray) -> None:
    np.copyto(buf, x)


# --------------------------------------------------------------------------- parsing

MAX_NODES = 100_000


def parse_graph(config: Any, parse_layer: Callable, input_shape: Callable):
    """A graph model's config (an untrusted file; the form in :mod:`lepton_nn.nn.graph`) ->
    ``(inputs [(name, shape)], chains (one per node needed by an output), outputs [(name,
    shape)])``. ``parse_layer(i, layer config, input shape, label) -> (steps, shape, final
    activation)`` parses the layers that are not merges; ``input_shape(value, what)`` checks
    a batch shape."""

    def fail(msg: str) -> ModelFormatError:
        return ModelFormatError(f"graph model: {msg}")

    if not isinstance(config, dict):
        raise fail("config must be an object")
    parts = {k: config.get(k) for k in ("inputs", "layers", "nodes", "outputs")}
    for key, v in parts.items():
        if not isinstance(v, list) or not v or len(v) > MAX_NODES:
            raise fail(f"'{key}' must be a non-empty list (at most {MAX_NODES})")
    widths: dict[str, tuple] = {}
    inputs = []
    for spec in parts["inputs"]:
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or name in widths:
            raise fail(f"input name {name!r} is missing or used twice")
        widths[name] = input_shape(spec.get("shape"), f"shape of input {name!r}")
        inputs.append((name, widths[name]))
    layers: dict[str, tuple[int, dict]] = {}
    for i, cfg in enumerate(parts["layers"]):
        conf = cfg.get("config", {}) if isinstance(cfg, dict) else None
        if not isinstance(conf, dict) or not isinstance(cfg.get("class"), str):
            raise fail(f"layer {i} must be an object with a 'class' and a 'config'")
        lname = conf.get("name")
        if not isinstance(lname, str) or lname in layers:
            raise fail(f"layer {i}: name {lname!r} is missing or used twice")
        layers[lname] = (i, cfg)
    nodes = []
    for node in parts["nodes"]:
        if not isinstance(node, dict):
            raise fail("a node must be an object")
        name, lname, reads = node.get("name"), node.get("layer"), node.get("inputs")
        if not isinstance(name, str) or name in widths:
            raise fail(f"node name {name!r} is missing or used twice")
        if not isinstance(lname, str) or lname not in layers:
            raise fail(f"node {name!r} calls unknown layer {lname!r}")
        if (
            not isinstance(reads, list)
            or not reads
            or not all(isinstance(r, str) and r in widths for r in reads)
        ):
            raise fail(f"node {name!r} reads {reads!r}: only inputs and earlier nodes")
        widths[name] = ()
        nodes.append((name, lname, reads))
    outputs = parts["outputs"]
    if not all(isinstance(o, str) and o in widths for o in outputs):
        raise fail(f"outputs {outputs!r} name unknown nodes")
    needed = set(outputs)  # nodes no output depends on are not planned
    for name, _, reads in reversed(nodes):
        if name in needed:
            needed.update(reads)
    called = {lname for _, lname, _ in nodes}
    unused = [n for n in layers if n not in called]
    if unused:
        raise fail(f"layers {unused[:5]} are called by no node")
    chains = []
    for name, lname, reads in nodes:
        i, cfg = layers[lname]
        cls = cfg["class"]
        label = f"layer {lname!r} ({cls})" + ("" if name == lname else f" at node {name!r}")
        ins = [widths[r] for r in reads]
        if cls in MERGES:
            step = merge_step(label, cls, cfg.get("config", {}), ins)
            chain = Chain(list(reads), [step], name, "identity", step.out_shape)
        elif len(reads) != 1:
            raise fail(f"node {name!r}: {label} takes one input, got {len(reads)}")
        else:
            steps, width, final = parse_layer(i, cfg, ins[0], label)
            chain = Chain(list(reads), steps, name, final, tuple(width))
        widths[name] = chain.shape
        if name in needed:
            chains.append(chain)
    return inputs, chains, [(o, widths[o]) for o in outputs]
