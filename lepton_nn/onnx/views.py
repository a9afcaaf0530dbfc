"""ONNX view ops (axes relabelled, no layer), gathers, embeddings and merges of values.

Views (Identity, Dropout in eval, Cast, Transpose, Reshape, Flatten, Squeeze, Unsqueeze, a
Gather of one index of a size-1 axis) only change how the ONNX tensor's axes map onto the
network's value (:mod:`.layout`). A Gather from a constant table is an ``Embedding``; a
Gather or Slice of a forward recurrent layer's last step is its final state; Gathers of every slice
joined back by a Concat are one view; nodes reading several values are merge layers.
"""

from __future__ import annotations

import numpy as np

from lepton_nn.errors import ModelFormatError

from .fold import _attrs
from .importer import Layer, Walk, _label

__all__ = ["ID_OPS", "MERGES", "VIEWS", "gather_concat", "index_island", "merge"]


def _move(walk: Walk, node, axes) -> None:
    walk.cur, walk.axes = node.output[0], axes


def _refuse(node, why: str) -> ModelFormatError:
    return ModelFormatError(f"{_label(node)}: {why}")


# --------------------------------------------------------------------------- views


def _identity(walk, node):
    if node.op_type == "Dropout":
        mode = walk.optional(node, 2)
        if mode and bool(walk.const(mode, node, "training_mode")):
            raise _refuse(node, "dropout in training mode cannot be converted")
    _move(walk, node, walk.axes)


def _cast(walk, node):
    to = _attrs(node)["to"]
    if to not in (1, 10, 11) and not walk.at_input():
        raise _refuse(node, "a cast to an integer type inside the network is not supported")
    _move(walk, node, walk.axes)


def _transpose(walk, node):
    perm = _attrs(node).get("perm", list(range(len(walk.axes)))[::-1])
    _move(walk, node, [walk.axes[p] for p in perm])


def _reshape(walk, node):
    target = walk.folded.batch_shape(node.input[1])
    if target is None:
        raise _refuse(node, "the target shape depends on the data (not only on the batch size)")
    first = next((a for ax in walk.axes for a in walk.atoms.real(ax)), None)
    if None not in target and target and target[0] == walk.static_batch and first == "N":
        target = [None, *target[1:]]  # a file exported at a fixed batch size: that is the batch
    if not _attrs(node).get("allowzero", 0):
        target = [
            (None if walk.axes[i] == ("N",) else walk.atoms.size(walk.axes[i])) if d == 0 else d
            for i, d in enumerate(target)
        ]
    _move(walk, node, walk.atoms.reshape(walk.axes, target, _label(node)))


def _flatten(walk, node):
    _move(walk, node, walk.atoms.flatten(walk.axes, _attrs(node).get("axis", 1)))


def _axes_of(walk, node) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:
        return [int(a) for a in walk.const(node.input[1], node, "axes").reshape(-1)]
    axes = _attrs(node).get("axes")
    return None if axes is None else list(axes)


def _squeeze(walk, node):
    axes = _axes_of(walk, node)
    r = len(walk.axes)
    drop = {a % r for a in axes} if axes is not None else {
        i for i, ax in enumerate(walk.axes) if ax != ("N",) and walk.atoms.size(ax) == 1
    }  # fmt: skip
    for i in drop:
        if walk.axes[i] == ("N",) or walk.atoms.size(walk.axes[i]) != 1:
            raise _refuse(node, f"axis {i} is not of size 1")
    _move(walk, node, [ax for i, ax in enumerate(walk.axes) if i not in drop])


def _unsqueeze(walk, node):
    axes = _axes_of(walk, node) or []
    out = list(walk.axes)
    r = len(out) + len(axes)
    for a in sorted(a % r for a in axes):
        out.insert(a, ())
    _move(walk, node, out)


def _gather(walk, node):
    axis = _attrs(node).get("axis", 0)
    if node.input[0] != walk.cur:  # a table indexed by the data: an embedding
        return _embedding(walk, node, axis)
    idx = walk.const(node.input[1], node, "the index")
    if idx.ndim != 0:
        raise _refuse(node, "only a single index can be taken from the data")
    a = axis % len(walk.axes)
    ax = walk.axes[a]
    rest = [x for i, x in enumerate(walk.axes) if i != a]
    if ax != ("N",) and walk.atoms.size(ax) == 1:
        return _move(walk, node, rest)
    if _last_step(walk, ax, int(idx)):
        return _move(walk, node, rest)
    raise _refuse(node, "taking one index of this axis cannot be converted")


def _last_step(walk, ax, idx: int) -> bool:
    """Index ``idx`` of axis ``ax`` is the last step of a forward recurrent layer's outputs
    (its final state): that layer then gives the final state, its time axis gone."""
    last = walk.last()
    t_atom = last.config.get("_time_atom") if last is not None else None
    if not (
        last is not None
        and last.cls in ("LSTM", "GRU", "SimpleRNN")
        and last.config["return_sequences"]
        and not last.config["bidirectional"]
        and walk.atoms.real(ax) == (t_atom,)
        and idx in (-1, walk.atoms.sizes[t_atom] - 1)
    ):
        return False
    last.config["return_sequences"] = False
    walk.canon = [c for c in walk.canon if walk.atoms.real(c) != (t_atom,)]
    return True


def _slice(walk, node):
    """A Slice of the data: the whole of each axis (a view), or the last step of a forward
    recurrent layer's outputs along time (its final state, the axis kept with size 1)."""
    starts, ends = (walk.const(node.input[i], node, "starts and ends") for i in (1, 2))
    r = len(walk.axes)
    axes = walk.optional(node, 3)
    axes = walk.const(axes, node, "axes") if axes else list(range(len(starts)))
    steps = walk.optional(node, 4)
    steps = walk.const(steps, node, "steps") if steps else [1] * len(starts)
    out = list(walk.axes)
    for s, e, a, st in zip(starts.reshape(-1), ends.reshape(-1), axes, steps):
        a = int(a) % r
        if walk.axes[a] == ("N",):
            raise _refuse(node, "slicing the batch axis cannot be converted")
        size = walk.atoms.size(walk.axes[a])
        taken = range(size)[slice(int(s), int(e), int(st))]
        if list(taken) == list(range(size)):
            continue
        if len(taken) == 1 and _last_step(walk, walk.axes[a], taken[0]):
            out[a] = (walk.atoms.new(1, "one"),)
            continue
        raise _refuse(node, f"taking {list(taken)[:4]}... of an axis of {size} cannot be converted")
    _move(walk, node, out)


def _embedding(walk, node, axis, ids_of: str | None = None):
    table = walk.const(node.input[0], node, "the embedding table")
    if axis != 0 or table.ndim != 2 or node.input[1] != (ids_of or walk.cur):
        raise _refuse(node, "only a lookup of rows of a 2-D table is supported (Embedding)")
    if not walk.at_input():
        raise _refuse(node, "an embedding must read the network's input")
    e = walk.atoms.new(table.shape[1], "e")
    config = {"input_dim": int(table.shape[0]), "output_dim": int(table.shape[1])}
    walk.add(Layer("Embedding", config, {"weight": table}), walk.canon + [(e,)])
    _move(walk, node, walk.axes + [(e,)])


#: integer ops an exporter may put on token ids before the embedding's Gather
ID_OPS = {
    "Cast": lambda a, at: a.astype(np.int64),
    "Add": lambda a, b, at: a + b, "Sub": lambda a, b, at: a - b,
    "Mul": lambda a, b, at: a * b, "Less": lambda a, b, at: (a < b).astype(np.int64),
    "Greater": lambda a, b, at: (a > b).astype(np.int64), "Not": lambda a, at: 1 - a,
    "Where": lambda c, a, b, at: np.where(c != 0, a, b),
}  # fmt: skip


def index_island(walk: Walk, live: list) -> list | None:
    """Integer nodes between an id input and an embedding's ``Gather`` (tf2onnx writes
    Keras's ``where(ids < 0, ids + n, ids)``): when they give every valid id 0..n-1 back
    unchanged (evaluated on them and on -n..-1), the Gather reads the ids directly (an
    ``Embedding``: the runtime's takes a negative id -k from the end as Keras does, the
    trainable layer refuses it). None otherwise."""
    inp = next((i for i in walk.model.graph.input if i.name == walk.cur), None)
    if not walk.at_input() or inp is None or inp.type.tensor_type.elem_type not in (2, 3, 5, 6, 7):
        return None
    mine, values = [], {walk.cur: None}
    for n in live:
        if not any(i in values for i in n.input):
            continue
        if n.op_type == "Gather" and n.input[1] in values and n.input[0] not in values:
            if n.input[1] == walk.cur or not mine:
                return None
            table = walk.folded.const(n.input[0])
            if table is None or table.ndim != 2:
                return None
            rows = table.shape[0]
            ids = np.arange(-rows, rows, dtype=np.int64)
            got = _evaluate(walk, mine, ids, n.input[1])
            if got is None or not np.array_equal(got[rows:], ids[rows:]):
                return None
            _embedding(walk, n, _attrs(n).get("axis", 0), ids_of=n.input[1])
            return [*mine, n]
        if n.op_type not in ID_OPS or len(mine) >= 16:
            return None
        mine.append(n)
        values[n.output[0]] = None
    return None


def _evaluate(walk: Walk, nodes: list, ids, out: str):
    values = {walk.cur: ids}
    for n in nodes:
        args = []
        for i in n.input:
            v = values.get(i)
            if v is None:
                c = walk.folded.const(i)
                if c is None or c.size != 1:
                    return None
                v = np.asarray(c).astype(np.int64).reshape(())
            args.append(v)
        try:
            values[n.output[0]] = ID_OPS[n.op_type](*args, _attrs(n))
        except (TypeError, ValueError):
            return None
    return values.get(out)


def gather_concat(walk: Walk, nodes: list) -> list | None:
    """``Concat(Gather(x, 0, axis=a), ..., Gather(x, D-1, axis=a), axis=k)``: the slices of
    axis a put side by side along axis k (a bidirectional layer's final states joined):
    one view, axis k made of a's atoms then its own. None when ``nodes`` are not that."""
    if any(n.op_type != "Gather" or n.input[0] != walk.cur for n in nodes) or len(nodes) < 2:
        return None
    axis = {(_attrs(n).get("axis", 0)) % len(walk.axes) for n in nodes}
    if len(axis) != 1:
        return None
    a = axis.pop()
    d = walk.atoms.size(walk.axes[a])
    idx = {}
    for n in nodes:
        i = walk.folded.const(n.input[1])
        if i is None or i.ndim != 0:
            return None
        idx[n.output[0]] = int(i) % d
    users = [m for m in walk.model.graph.node if any(o in idx for o in m.input)]
    if (
        len(users) != 1
        or users[0].op_type != "Concat"
        or list(users[0].input) != sorted(idx, key=idx.get)
        or sorted(idx.values()) != list(range(d))
    ):
        return None
    concat = users[0]
    rest = [x for i, x in enumerate(walk.axes) if i != a]
    k = _attrs(concat)["axis"] % len(rest)
    rest[k] = walk.axes[a] + rest[k]
    _move(walk, concat, rest)
    return [*nodes, concat]


#: ONNX op -> merge layer, for nodes reading two or more values of the network
MERGES = {"Add": "Add", "Sum": "Add", "Sub": "Subtract", "Mul": "Multiply", "Max": "Maximum",
          "Mean": "Average", "Concat": "Concatenate"}  # fmt: skip


def merge(walk: Walk, node, tensors: list[str]) -> None:
    """A node joining values of the network: a merge layer (Add, Multiply, Concatenate...).
    Each value must be in its own layout; elementwise merges broadcast as NumPy does."""
    if len(tensors) != len(node.input):
        raise _refuse(node, "mixes values of the network with constants")
    vals = [walk.values[t] for t in node.input]
    for v in vals:
        if not walk.same(v.axes, v.canon) or len(v.axes) != len(v.canon):
            raise _refuse(node, "an input is not in the layout the network holds it in")
    ranks = {len(v.canon) for v in vals}
    if len(ranks) != 1:
        raise _refuse(node, "its inputs have different ranks")
    cls = MERGES[node.op_type]
    config: dict = {}
    if cls == "Concatenate":
        k = _attrs(node)["axis"] % ranks.pop()
        if k == 0:
            raise _refuse(node, "cannot join along the batch axis")
        total = sum(walk.atoms.size(v.canon[k]) for v in vals)
        canon = list(vals[0].canon)
        canon[k] = (walk.atoms.new(total, "cat"),)
        config["axis"] = k
    else:
        canon = []
        for axes in zip(*(v.canon for v in vals)):
            sizes = {walk.atoms.size(ax) for ax in axes if ax != ("N",)}
            if axes[0] == ("N",):
                canon.append(("N",))
            elif len(sizes - {1}) > 1:
                raise _refuse(node, "its inputs do not broadcast")
            else:
                canon.append(max(axes, key=walk.atoms.size))
    walk.cur = node.output[0]
    walk.add(Layer(cls, config), canon, inputs=[v.src for v in vals])
    walk.axes = list(canon)
    walk.leave()


VIEWS = {
    "Identity": _identity,
    "Dropout": _identity,
    "Cast": _cast,
    "Transpose": _transpose,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Gather": _gather,
    "Slice": _slice,
}
