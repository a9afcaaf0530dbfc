"""ONNX ``LSTM``, ``GRU`` and ``RNN`` -> lepton_nn's ``LSTM``, ``GRU``, ``SimpleRNN``.

ONNX, per direction d: ``W[d]`` (G U, F), ``R[d]`` (G U, U), ``B[d]`` = [Wb, Rb] (2 G U);
gate blocks i, o, f, c (LSTM) and z, r, h (GRU). lepton_nn: ``weight_ih`` (F, G U),
``weight_hh`` (U, G U), blocks i, f, g, o (LSTM) and z, r, n (GRU), so::

    LSTM   weight_ih = W[d][blocks 0, 2, 3, 1].T   bias = (Wb + Rb)[blocks 0, 2, 3, 1]
    GRU    weight_ih = W[d].T                      bias = Wb,  bias_hh = Rb
    RNN    weight_ih = W[d].T                      bias = Wb + Rb

The GRU must have ``linear_before_reset=1`` (r applied to h R_h + Rb_h, as lepton_nn's and
PyTorch's GRU); default activations only, no clip, no peepholes, zero (or absent) initial
states. ``sequence_lens``: full length, or a model input of its own read only as the
sequence lengths, which becomes the runtime's ``predict(x, lengths=...)`` (same meaning:
outputs 0 and states kept past each end, the reverse direction starting at each sequence's
own last step). ``direction``: forward or bidirectional (the
reverse direction second, as lepton_nn's ``bidirectional=True``). Outputs: ``Y``
(T, D, N, U) (layout 0) gives ``return_sequences=True``, the network's (N, T, D U);
``Y_h`` (D, N, U) gives the final states, the network's (N, D U).
"""

from __future__ import annotations

import numpy as np

from lepton_nn.errors import ModelFormatError

from .fold import _attrs
from .importer import Layer, Walk, _label

_CELLS = {"LSTM": ("LSTM", 4, ["Sigmoid", "Tanh", "Tanh"]),
          "GRU": ("GRU", 3, ["Sigmoid", "Tanh"]),
          "RNN": ("SimpleRNN", 1, ["Tanh"])}  # fmt: skip
_LSTM_BLOCKS = [0, 2, 3, 1]  # ours i, f, g, o from ONNX's i, o, f, c


def _blocks(a: np.ndarray, u: int, order: list[int]) -> np.ndarray:
    return np.concatenate([a[k * u : (k + 1) * u] for k in order], axis=0)


def recurrent(walk: Walk, node) -> None:
    cls, g, acts = _CELLS[node.op_type]
    at = _attrs(node)
    where = _label(node)

    def refuse(why: str) -> ModelFormatError:
        return ModelFormatError(f"{where}: {why}")

    u = int(at["hidden_size"])
    direction = at.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "bidirectional"):
        raise refuse(f"direction {direction!r} is not supported (forward or bidirectional)")
    dirs = 2 if direction == "bidirectional" else 1
    layout = at.get("layout", 0)
    given = [a.decode() if isinstance(a, bytes) else a for a in at.get("activations", [])]
    if given and [a.lower() for a in given] != [a.lower() for a in acts * dirs]:
        raise refuse(f"activations {given} are not the default {acts}")
    if "clip" in at or at.get("input_forget", 0):
        raise refuse("clip and input_forget are not supported")
    if cls == "GRU" and at.get("linear_before_reset", 0) != 1:
        raise refuse("linear_before_reset=0 computes another GRU; only 1 is supported")
    if node.input[0] != walk.cur:
        raise refuse("the sequence must be its first input")
    n_in = len(node.input)
    if n_in > 4 and node.input[4]:
        lens = walk.folded.const(node.input[4])
        t = walk.atoms.size(walk.axes[0 if layout == 0 else 1])
        if lens is None and node.input[4] != walk.lengths_input:
            raise refuse("sequence_lens must be a constant or a model input of its own")
        if lens is not None and not np.all(lens == t):
            raise refuse("sequence_lens as a constant shorter than the sequence")
    for i in range(5, min(n_in, 7 if cls == "LSTM" else 6)):
        if node.input[i] and not walk.folded.is_zeros(node.input[i]):
            raise refuse("a nonzero initial state is not supported")
    if cls == "LSTM" and n_in > 7 and node.input[7]:
        p = walk.folded.const(node.input[7])
        if p is None or np.any(p):
            raise refuse("peephole weights are not supported")

    # the input: (T, N, F) for layout 0, (N, T, F) for 1; the network's (N, T, F)
    if len(walk.canon) != 3:
        raise refuse("needs sequences (batch, time, features)")
    n_ax, t_ax, f_ax = walk.canon
    walk.require(node, [t_ax, n_ax, f_ax] if layout == 0 else [n_ax, t_ax, f_ax])
    f = walk.atoms.size(f_ax)
    w = walk.const(node.input[1], node, "W")
    r = walk.const(node.input[2], node, "R")
    b = walk.const(node.input[3], node, "B") if n_in > 3 and node.input[3] else None
    if w.shape != (dirs, g * u, f) or r.shape != (dirs, g * u, u):
        raise refuse(f"W {w.shape} and R {r.shape} do not fit {f} features and {u} units")
    if b is not None and b.shape != (dirs, 2 * g * u):
        raise refuse(f"B {b.shape} does not fit {u} units")
    order = _LSTM_BLOCKS if cls == "LSTM" else list(range(g))
    params = {}
    for d, suffix in enumerate(("", "_reverse")[:dirs]):
        wb = np.zeros(g * u) if b is None else b[d, : g * u].astype(np.float64)
        rb = np.zeros(g * u) if b is None else b[d, g * u :].astype(np.float64)
        params[f"weight_ih{suffix}"] = _blocks(w[d], u, order).T
        params[f"weight_hh{suffix}"] = _blocks(r[d], u, order).T
        if cls == "GRU":
            params[f"bias{suffix}"], params[f"bias_hh{suffix}"] = wb, rb
        else:
            params[f"bias{suffix}"] = _blocks(wb + rb, u, order)

    outs = list(node.output) + [""] * 3
    used = [o for o in outs[:3] if o and any(o in m.input for m in walk.model.graph.node)]
    graph_outs = {o.name for o in walk.model.graph.output}
    used += [o for o in outs[:3] if o in graph_outs and o not in used]
    if len(used) != 1 or (cls == "LSTM" and used[0] == outs[2]):
        raise refuse("reads more than one of Y, Y_h, Y_c: a lepton_nn layer gives one of them")
    sequences = used[0] == outs[0]
    d_atom, u_atom = walk.atoms.new(dirs, "d"), walk.atoms.new(u, "u")
    config = {"units": u, "return_sequences": sequences, "bidirectional": dirs == 2,
              "input_size": f, "use_bias": True}  # fmt: skip
    if sequences:
        canon = [n_ax, t_ax, (d_atom, u_atom)]
        axes = [t_ax, (d_atom,), n_ax, (u_atom,)] if layout == 0 else \
            [n_ax, t_ax, (d_atom,), (u_atom,)]  # fmt: skip
    else:
        canon = [n_ax, (d_atom, u_atom)]
        axes = [(d_atom,), n_ax, (u_atom,)] if layout == 0 else [n_ax, (d_atom,), (u_atom,)]
    config["_time_atom"] = walk.atoms.real(t_ax)[0] if walk.atoms.real(t_ax) else None
    walk.add(Layer(cls, config, params), canon)
    walk.cur, walk.axes = used[0], axes


def direction_concat(walk: Walk, nodes: list) -> list | None:
    """A bidirectional layer's outputs split by direction and joined again (tf2onnx's
    Keras ``Bidirectional``): ``Slice`` of direction 0 and of direction 1 of ``Y``, each
    squeezed (and, for final states, the forward's last step and the backward's first step
    sliced out of time), then ``Concat`` along the units: the layer's own (N, T, 2 U) or,
    with the steps taken, its final states (N, 2 U). None when ``nodes`` are not that."""
    # (the two slices are all that read Y: the layer may be changed although Y has two readers)
    last = None if walk.at_input() else walk.layers[
        next(n["layer"] for n in walk.nodes if n["name"] == walk.src)]  # fmt: skip
    if (
        len(nodes) != 2
        or last is None
        or last.cls not in ("LSTM", "GRU", "SimpleRNN")
        or not last.config["bidirectional"]
        or not last.config["return_sequences"]
        or any(n.op_type != "Slice" or n.input[0] != walk.cur for n in nodes)
    ):
        return None
    t_atom = last.config.get("_time_atom")
    d_ax = next((i for i, ax in enumerate(walk.axes) if walk.atoms.size(ax) == 2
                 and len(walk.atoms.real(ax)) == 1 and walk.atoms.real(ax)[0].startswith("d")),
                None)  # fmt: skip
    if d_ax is None:
        return None
    branches = {}
    for n in nodes:
        got = _follow(walk, n, d_ax, t_atom)
        if got is None:
            return None
        k, steps, group, end, axes = got
        branches[k] = (steps, group, end, axes)
    if sorted(branches) != [0, 1]:
        return None
    readers = [m for m in walk.model.graph.node if branches[0][2] in m.input]
    concat = readers[0] if len(readers) == 1 else None
    if (
        concat is None
        or concat.op_type != "Concat"
        or list(concat.input) != [branches[0][2], branches[1][2]]
    ):
        return None
    steps = (branches[0][0], branches[1][0])
    if steps not in ((None, None), ("last", "first")) or branches[0][3] != branches[1][3]:
        return None
    axes = branches[0][3]
    k = _attrs(concat)["axis"] % len(axes)
    u_ax = [i for i, ax in enumerate(axes) if walk.atoms.real(ax) and
            walk.atoms.real(ax)[0].startswith("u")]  # fmt: skip
    if u_ax != [k]:
        return None
    d_atom = walk.atoms.real(walk.axes[d_ax])
    axes = [d_atom + ax if i == k else ax for i, ax in enumerate(axes)]
    if steps == ("last", "first"):  # the final states of both directions
        last.config["return_sequences"] = False
        walk.canon = [c for c in walk.canon if walk.atoms.real(c) != (t_atom,)]
    walk.cur, walk.axes = concat.output[0], axes
    return [*branches[0][1], *branches[1][1], concat]


def _follow(walk: Walk, first, d_ax: int, t_atom) -> tuple | None:
    """The chain of single-reader views from a direction ``Slice``: (direction, "last" /
    "first" / None for the time step taken, its nodes, its last tensor, its axes)."""
    from .views import _axes_of

    axes = list(walk.axes)
    node, group, k, steps = first, [], None, None
    while True:
        if node.op_type == "Slice":
            starts, ends = (walk.folded.const(node.input[i]) for i in (1, 2))
            ax = walk.folded.const(node.input[3]) if walk.optional(node, 3) else None
            if starts is None or ends is None or ax is None or ax.size != 1 or starts.size != 1:
                return None
            a = int(ax.reshape(-1)[0]) % len(axes)
            size = walk.atoms.size(axes[a])
            taken = list(range(size)[slice(int(starts[0]), int(ends[0]))])
            if len(taken) != 1:
                return None
            if k is None and a == d_ax:
                k = taken[0]
            elif walk.atoms.real(axes[a]) == (t_atom,) and steps is None:
                steps = "last" if taken[0] == size - 1 else "first" if taken[0] == 0 else "?"
            else:
                return None
            axes[a] = (walk.atoms.new(1, "one"),)
        elif node.op_type == "Squeeze":
            drop = _axes_of(walk, node)
            if drop is None or any(walk.atoms.size(axes[i % len(axes)]) != 1 for i in drop):
                return None
            axes = [ax for i, ax in enumerate(axes) if i not in {d % len(axes) for d in drop}]
        elif node.op_type != "Identity":
            return None
        group.append(node)
        readers = [m for m in walk.model.graph.node if node.output[0] in m.input]
        if len(readers) != 1 or readers[0].op_type == "Concat":
            return (k, steps, group, node.output[0], axes) if k is not None else None
        node = readers[0]
