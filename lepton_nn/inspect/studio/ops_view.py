"""The ops inside a layer call, as nodes of the studio's graph (issue 22: "layers and the ops
inside them").

The engine runs some layers as one fused op (a ``Dense`` is one ``Linear`` op: x W + b and the
activation in one pass; an ``LSTM`` one op over every time step). The studio shows what such a
layer computes as the chain of the engine's own elementary ops, run on the same input:

- ``Dense``: ``MatMul`` x W -> ``Add`` + b -> the activation (``Relu``, ``Tanh``, ...);
- ``Conv2D``: ``Conv2d`` W * x (no bias) -> ``Add`` + b (per channel) -> the activation;
- ``LSTM`` (one direction, no mask): ``MatMul`` x W_ih for every step, then per step
  z_t = x_t W_ih + h_{t-1} W_hh + b, the gates i, f, o = sigmoid(z), g = tanh(z), the cell
  c_t = f c_{t-1} + i g and h_t = o tanh(c_t); a per-step op is one node whose value (and
  gradient) is its T steps stacked on axis 1: (N, T, units);
- any other layer: the autograd ops its call records, one node each (a ``Flatten`` is a
  ``Reshape``, a ``ReLU`` layer a ``Relu``, a ``GRU`` its fused ``GRU`` op).

The expanded output equals the fused one (up to float rounding; the tests check it against
NumPy), so the expansion can stand in for the layer's output in a forward pass
(:func:`expanding_hook`): then every op node has its value and its true gradient dL/d(op),
and the backward walk (:func:`.model_view.backward_steps` with ``ops=True``) steps through the
ops. Ops are numbered in the order they run: node ``op-<layer call>-<index>`` in the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...autograd import Tensor
from ...nn.layers import apply_activation, as_input
from ...nn.module import Module
from ..graph_view import op_label
from ..rules import rule_for
from .rows import model_input, n_rows
from .tensor_view import tensor_view

__all__ = [
    "Op",
    "expand",
    "output_of",
    "expanding_hook",
    "op_graph",
    "op_arrays",
    "layer_ops",
    "EXPANSIONS",
]


@dataclass
class Op:
    """One op node: ``parts`` is its output tensor, or one per time step (stacked on axis 1
    for display); ``inputs``: earlier op indices, or names ("x", a parameter's name)."""

    label: str
    forward: str
    parts: list[Tensor]
    inputs: list[Any] = field(default_factory=list)
    output: bool = False  # its last part is the call's output (else: the last op's)

    def value(self) -> np.ndarray:
        datas = [p.data for p in self.parts]
        return datas[0] if len(datas) == 1 else np.stack(datas, axis=1)

    def doc(self, index: int) -> dict:
        ctx = self.parts[-1]._ctx
        words, math = rule_for(ctx)
        return {
            "id": index,
            "op": op_label(ctx) if ctx is not None else "identity",
            "label": self.label,
            "forward": self.forward,
            "words": words,
            "derivative": math or words,
            "shape": _batch_shape(self.value().shape),
            "steps": len(self.parts),
            "inputs": self.inputs,
        }


def _batch_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["N", *(str(int(n)) for n in shape[1:])]) + ")"


# -- expansions: layer class -> the layer's computation as elementary ops -------------------
def _dense(layer: Any, x: Any) -> list[Op] | None:
    x = as_input(layer, x)
    z = x @ layer.weight
    ops = [Op("x W", "z = x W   x: (N, in), W: (in, out)", [z], ["x", "weight"])]
    if layer.bias is not None:
        z = z + layer.bias
        ops.append(Op("+ b", "z = x W + b   (b broadcast over the rows)", [z], [0, "bias"]))
    if layer.activation != "identity":
        y = apply_activation(z, layer.activation)
        ops.append(Op(layer.activation, f"y = {layer.activation}(z)", [y], [len(ops) - 1]))
    return ops


def _conv2d(layer: Any, x: Any) -> list[Op] | None:
    from ...ops.conv import conv2d

    x = as_input(layer, x)
    z = conv2d(x, layer.weight, None, layer.stride, layer.padding, layer.dilation,
               "identity", layer.name, groups=layer.groups)  # fmt: skip
    ops = [Op("W * x", "z[n, o] = sum_c W[o, c] * x[n, c]  (cross-correlation)", [z],
              ["x", "weight"])]  # fmt: skip
    if layer.bias is not None:
        z = z + layer.bias.reshape(1, -1, 1, 1)
        ops.append(Op("+ b", "z[n, o, i, j] += b[o]   (one bias per channel)", [z], [0, "bias"]))
    if layer.activation != "identity":
        y = apply_activation(z, layer.activation)
        ops.append(Op(layer.activation, f"y = {layer.activation}(z)", [y], [len(ops) - 1]))
    return ops


def _lstm(layer: Any, x: Any) -> list[Op] | None:
    if layer.bidirectional or layer.return_state:
        return None  # shown as the fused op
    x = as_input(layer, x)
    u, steps = layer.units, x.shape[1]
    w_ih, w_hh, b = layer.weight_ih, layer.weight_hh, layer.bias
    xw = x @ w_ih  # (N, T, 4U)
    ops = [Op("x W_ih", "x_t W_ih for every step t at once: (N, T, 4 units)", [xw],
              ["x", "weight_ih"])]  # fmt: skip
    per = {k: [] for k in ("z", "i", "f", "g", "o", "c", "h")}
    h = c = Tensor(np.zeros((x.shape[0], u), x.dtype))  # h_0 = c_0 = 0, as the fused op
    for t in range(steps):
        z = xw[:, t] + h @ w_hh
        z = z if b is None else z + b
        i, f = z[:, :u].sigmoid(), z[:, u : 2 * u].sigmoid()
        g, o = z[:, 2 * u : 3 * u].tanh(), z[:, 3 * u :].sigmoid()
        c = f * c + i * g
        h = o * c.tanh()
        for k, v in zip("zifgoch", (z, i, f, g, o, c, h)):
            per[k].append(v)
    ops += [
        Op("z_t", "z_t = x_t W_ih + h_{t-1} W_hh + b   (4 gate blocks i, f, g, o)", per["z"],
           [0, 7, "weight_hh", "bias"]),
        Op("i", "i_t = sigmoid(z_t[i])   input gate", per["i"], [1]),
        Op("f", "f_t = sigmoid(z_t[f])   forget gate", per["f"], [1]),
        Op("g", "g_t = tanh(z_t[g])   candidate", per["g"], [1]),
        Op("o", "o_t = sigmoid(z_t[o])   output gate", per["o"], [1]),
        Op("c_t", "c_t = f_t c_{t-1} + i_t g_t   cell", per["c"], [2, 3, 4, 6]),
        Op("h_t", "h_t = o_t tanh(c_t)   hidden state", per["h"], [5, 6],
           output=not layer.return_sequences),
    ]  # fmt: skip
    if layer.return_sequences:
        from ...ops import stack

        ops.append(Op("stack", "y = (h_1, ..., h_T) on axis 1", [stack(per["h"], 1)], [7]))
    return ops


EXPANSIONS: dict[str, Callable[[Any, Any], list[Op] | None]] = {
    "Dense": _dense,
    "Conv2D": _conv2d,
    "LSTM": _lstm,
}


def _recorded(layer: Module, args: tuple, out: Any) -> list[Op]:
    """The ops the layer's own call on ``args`` recorded to make ``out``, one node each (the
    fallback; ``out`` None: the call is run again, without hooks)."""
    from .model_view import _flat, _op_tensors

    out = layer.call(*args) if out is None else out
    if not isinstance(out, Tensor):
        return []
    ts = _op_tensors(out, {id(t) for t in _flat(args) if isinstance(t, Tensor)})
    index = {id(t): k for k, t in enumerate(ts)}
    names = {id(p): k for k, p in layer.named_parameters()}
    ops = []
    for t in ts:
        ins = []
        for p in t._ctx.parents:
            if isinstance(p, Tensor):
                ins.append(index.get(id(p), names.get(id(p), "x")))
        label = op_label(t._ctx)
        ops.append(Op(label, f"y = {label}(...)", [t], ins))
    return ops


def expand(layer: Module, args: tuple, out: Any = None) -> list[Op]:
    """The op nodes of one call of ``layer`` on ``args`` that made ``out`` (empty when it
    records no op: an identity in this mode); :func:`output_of` gives their output.

    An expansion stands in for the call only where it computes the call's ``out`` (same
    shape, equal within float32 rounding): a call it does not describe (an ``LSTM`` given a
    mask through keyword arguments, which a hook does not see) shows the ops it recorded."""
    fn = EXPANSIONS.get(type(layer).__name__)
    ops = fn(layer, *args) if fn is not None and len(args) == 1 else None
    if ops is not None and isinstance(out, Tensor):
        y = output_of(layer, ops)
        if y is None or y.shape != out.shape or not _close(y.data, out.data):
            ops = None
    return ops if ops is not None else _recorded(layer, args, out)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-4 * scale, equal_nan=True))


def output_of(layer: Module, ops: list[Op]) -> Tensor | None:
    """The tensor the op nodes ``ops`` give as the call's output (None for no ops)."""
    if not ops:
        return None
    return next((op for op in ops if op.output), ops[-1]).parts[-1]


def expanding_hook(
    only: str | None, seen: dict[str, list[Op]]
) -> Callable[[str, Module, tuple, Any], Any]:
    """A :func:`.model_view.hook_calls` function that replaces a call's output (every call,
    or the call ``only``) by its expansion's, keeping the op nodes in ``seen[call]``."""

    def hook(name: str, mod: Module, inputs: tuple, out: Any) -> Any:
        if (only is not None and name != only) or not isinstance(out, Tensor):
            return None
        ops = expand(mod, inputs, out)
        seen[name] = ops
        y = output_of(mod, ops)
        return y if y is not None and y is not out else None

    return hook


# -- what the page asks for -------------------------------------------------------------------
def op_graph(model: Module, sample: Any, rows: int = 2) -> dict[str, list[dict]]:
    """``{call: [op node]}``: each op's label, rule, output shape and inputs, from one forward
    pass (with autograd, no backward) on the first ``rows`` sample rows."""
    from .model_view import hook_calls

    seen: dict[str, list[Op]] = {}
    handles = hook_calls(model, expanding_hook(None, seen))
    was = model.training
    model.eval()
    try:
        model(model_input(_rows(sample, rows)))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return {name: [op.doc(k) for k, op in enumerate(ops)] for name, ops in seen.items()}


def _rows(x: Any, n: int) -> Any:
    """The first ``n`` rows of ``x``: an array, :class:`.rows.Rows`, or the inputs of a model
    of several inputs as a list in order or a dict by name."""
    if isinstance(x, (list, tuple)):
        return type(x)(_rows(a, n) for a in x)
    if isinstance(x, dict):
        return {k: _rows(a, n) for k, a in x.items()}
    return x[:n]


def op_arrays(
    model: Module, name: str, x: Any, y: Any = None, loss_fn: Callable | None = None
) -> tuple[Tensor, str, list[tuple[dict, np.ndarray, np.ndarray | None]]]:
    """``(loss, objective, [(op node, value, gradient)])`` for layer call ``name`` on
    ``(x, y)`` in eval mode: one forward pass with the call's output replaced by its
    expansion and one backward pass, so each gradient is the true dL/d(op output) of the whole
    network (None without a loss to differentiate). Parameters' ``.grad`` are left as they
    were. KeyError for an unknown call."""
    from .model_view import _run_loss, calls_of, hook_calls

    if name not in {n for n, _, _ in calls_of(model)}:
        raise KeyError(f"no layer call named {name!r}")
    params = list(model.parameters())
    saved = [p.grad for p in params]
    seen: dict[str, list[Op]] = {}
    grads: dict[int, np.ndarray] = {}
    expanding = expanding_hook(name, seen)

    def hook(call: str, mod: Module, inputs: tuple, out: Any) -> Any:
        new = expanding(call, mod, inputs, out)
        for op in seen.get(name, []) if call == name else []:
            for p in op.parts:
                if p.requires_grad and id(p) not in grads:
                    grads[id(p)] = None
                    p.register_hook(lambda g, k=id(p): grads.__setitem__(k, np.array(g)))
        return new

    was = model.training
    model.eval()
    handles = hook_calls(model, hook)
    try:
        loss, objective = _run_loss(model, x, y, loss_fn)
        if loss.requires_grad:
            loss.backward()
    finally:
        for h in handles:
            h.remove()
        model.train(was)
        for p, g in zip(params, saved):
            p.grad = g
    out = []
    for k, op in enumerate(seen.get(name, [])):
        grad = None
        if loss.requires_grad:  # a part the gradient never reached has dL/d(part) = 0
            parts = [grads.get(id(p)) for p in op.parts]
            parts = [np.zeros_like(t.data) if g is None else g for g, t in zip(parts, op.parts)]
            grad = parts[0] if len(parts) == 1 else np.stack(parts, axis=1)
        out.append((op.doc(k), op.value(), grad))
    return loss, objective, out


def layer_ops(
    model: Module, name: str, x: Any, y: Any = None, loss_fn: Callable | None = None
) -> dict:
    """:func:`op_arrays` for the page: ``{"name", "loss", "objective", "rows", "ops"}``,
    each op node with ``value`` and ``grad`` (:func:`.tensor_view.tensor_view`) and their
    norms ``value_norm``, ``grad_norm``."""
    loss, objective, ops = op_arrays(model, name, x, y, loss_fn)
    docs = []
    for doc, value, grad in ops:
        doc.update(
            value=tensor_view(value),
            grad=None if grad is None else tensor_view(grad),
            value_norm=_norm(value),
            grad_norm=None if grad is None else _norm(grad),
        )
        docs.append(doc)
    return {
        "name": name,
        "loss": float(loss.data),
        "objective": objective,
        "rows": n_rows(x[0] if isinstance(x, (list, tuple)) else x),
        "ops": docs,
    }


def _norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64).reshape(-1)))


def for_studio(st: Any, name: str, rows: int = 8) -> dict:
    """:func:`layer_ops` of call ``name`` on the studio's first ``rows`` sample rows, with its
    loss, run where it cannot race ``fit`` (:meth:`.Studio.on_model`)."""
    st.prepare()
    if name not in st._view["nodes"]:
        raise KeyError(f"no layer call named {name!r}")
    if st.runtime:
        raise ValueError(f"the ops inside a runtime step: {NO_GRAD_OPS}")
    x = _rows(st.sample_x(), rows)
    y = None if st.sample is None or st.sample[1] is None else st.sample[1][:rows]
    loss = st.loss_fn() if y is not None else None
    return st.on_model(lambda: layer_ops(st.model, name, x, y, loss))


NO_GRAD_OPS = "the runtime runs fused kernels (load the file with lepton_nn.load to see them)"
