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
