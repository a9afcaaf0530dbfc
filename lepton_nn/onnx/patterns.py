"""Activations written as several elementwise nodes (GELU as its tanh or erf formula, SiLU
as x sigmoid(x), ...), recognized by what they compute rather than by their node sequence.

An *island* is a set of elementwise nodes reading the current tensor (and scalar constants)
whose results meet again in one output. It is evaluated in float64 on a grid of inputs and
compared with each activation lepton_nn has; a match within ``TOL`` becomes that activation
layer, anything else is refused with the function's nodes named.
"""

from __future__ import annotations

import math

import numpy as np

from lepton_nn.backend.activations import EXTRA_ACTIVATIONS
from lepton_nn.errors import ModelFormatError

from .importer import Layer, Walk

__all__ = ["ISLAND_OPS", "KNOWN", "elementwise_island"]

TOL = 1e-5
MAX_NODES = 32
_GRID = np.linspace(-6.0, 6.0, 241)
_UNARY = {
    "Tanh": np.tanh, "Sigmoid": lambda x: 1 / (1 + np.exp(-x)), "Relu": lambda x: np.maximum(x, 0),
    "Neg": np.negative, "Exp": np.exp, "Abs": np.abs, "Sqrt": np.sqrt, "Identity": lambda x: x,
    "Erf": np.vectorize(math.erf), "Softplus": lambda x: np.logaddexp(0, x),
}  # fmt: skip
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
           "Pow": np.power, "Max": np.maximum, "Min": np.minimum}  # fmt: skip
ISLAND_OPS = set(_UNARY) | set(_BINARY)  # ops an island may hold
_C = math.sqrt(2 / math.pi)
#: activation name -> f(x) in float64, as lepton_nn computes it
KNOWN = {
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(_C * (x + 0.044715 * x**3))),
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    **{
        n: EXTRA_ACTIVATIONS[n]
        for n in ("gelu_erf", "softplus", "mish", "hard_swish", "selu", "relu6")
    },
}
#: functions lepton_nn does not have (yet), to name them in the error
NAMED = {
    "SiLU / swish": lambda x: x / (1 + np.exp(-x)),
}


def elementwise_island(walk: Walk, live: list):
    """If the readers of ``walk.cur`` start an island, map it and return its nodes; else
    None. The nodes are taken in the graph's (topological) order until the tensors read
    later than the island reduce to one: its output."""
    graph_outs = {o.name for o in walk.model.graph.output}
    readers: dict[str, int] = {}
    for n in live:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    pending = {walk.cur: readers.get(walk.cur, 0)}  # island tensors with readers to come
    order: list = []
    stops: list[tuple[int, str]] = []  # (nodes so far, output) wherever the paths meet
    for n in live:
        if not any(i in pending for i in n.input):
            continue
        if (n.op_type not in _UNARY and n.op_type not in _BINARY) or len(order) >= MAX_NODES:
            break
        order.append(n)
        for i in n.input:
            if i in pending:
                pending[i] -= 1
                if not pending[i]:
                    del pending[i]
        out = n.output[0]
        pending[out] = readers.get(out, 0) + (out in graph_outs)
        if len(pending) == 1:
            stops.append((len(order), out))
    values = {walk.cur: _GRID}
    for k, n in enumerate(order):
        args = []
        for i in n.input:
            c = None if i in values else walk.folded.const(i)
            if i not in values and (c is None or c.size != 1):
                break
            args.append(values[i] if i in values else float(c.reshape(())))
        else:
            fn = _UNARY.get(n.op_type) or _BINARY[n.op_type]
            with np.errstate(all="ignore"):
                values[n.output[0]] = np.broadcast_to(fn(*args), _GRID.shape).astype(np.float64)
            continue
        stops = [s for s in stops if s[0] <= k]
        break
    if not stops:
        return None
    for size, out in reversed(stops):  # the longest function that is an activation we have
        y = values[out]
        for name, f in KNOWN.items():
            if np.max(np.abs(y - f(_GRID))) <= TOL:
                walk.add(Layer("Activation", {"activation": name}))
                walk.cur = out
                return order[:size]
    order = order[: stops[-1][0]]
    y = values[stops[-1][1]]
    what = next((k for k, f in NAMED.items() if np.max(np.abs(y - f(_GRID))) <= TOL), None)
    names = ", ".join(f"{n.name or n.output[0]} ({n.op_type})" for n in order[:6])
    raise ModelFormatError(
        f"the nodes {names} compute {'the ' + what if what else 'an elementwise function'} "
        "that lepton_nn has no layer for yet"
    )
