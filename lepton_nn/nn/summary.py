"""``model.summary()``: a text table of layers, output shapes, parameter counts, FLOPs,
weight sparsity and quantization state.

- FLOPs: floating-point operations per sample, 2 per multiply-add (times the calls of a layer
  a graph model shares), for layers with weight
  matrices: Dense 2 * in * out (times the positions of a >2-D input), Conv 2 * (C kh kw) * O *
  (OH OW), recurrent layers 2 * (|W_ih| + |W_hh|) * T. Other layers (activations, pooling,
  norms) cost a few operations per value and show ``-``.
- Sparsity: the fraction of exact zeros among the weights (parameters of 2+ axes; biases and
  norm gains are not weights).
- Quant: the storage of the weights: their dtype (``float32``), or ``int8 dynamic`` /
  ``int8 static`` for the layers of a quantized model (pass ``quantized=``: a
  ``QuantizedModel`` or ``{layer path: state}``; a layer may also carry a ``quantization``
  attribute of its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _rows(model, prefix: str = ""):
    children = list(model.named_children())
    if not children:
        return [(model.name, type(model).__name__, model.output_shape, model, prefix[:-1])]
    rows = []
    for key, child in children:
        rows.extend(_rows(child, f"{prefix}{key}."))
    return rows


def _count(m) -> int:
    if not m._built:
        return 0
    return int(sum(p.size for _, p in m._own_parameters()))


def _weights(m) -> list[np.ndarray]:
    return [p.data for _, p in m._own_parameters() if p.ndim >= 2]


def layer_flops(m) -> int | None:
    """FLOPs per sample of one layer (see the module docstring); None when not counted."""
    if not m._built or "Embedding" in type(m).__name__:
        return None
    own = dict(m._own_parameters())
    recurrent = [p for k, p in own.items() if k.startswith(("weight_ih", "weight_hh"))]
    if recurrent:
        steps = m.input_shape[1] if m.input_shape and len(m.input_shape) > 2 else None
        return None if steps is None else 2 * sum(p.size for p in recurrent) * int(steps)
    w = own.get("weight")
    if w is None or w.ndim < 2:
        return None
    out = m.output_shape
    if w.ndim == 2:  # Dense (in, out): positions = the axes between batch and features
        positions = int(np.prod(out[1:-1], dtype=np.int64)) if out is not None else 1
    else:  # Conv (O, C, kh, kw): positions = OH OW
        if out is None:
            return None
        positions = int(np.prod(out[2:], dtype=np.int64))
    return 2 * w.size * positions


def layer_sparsity(m) -> float | None:
    """Fraction of zero weights of one layer; None when it has no weights."""
    ws = _weights(m) if m._built else []
    size = sum(w.size for w in ws)
    if not size:
        return None
    return 1.0 - sum(int(np.count_nonzero(w)) for w in ws) / size


def _quant_states(quantized: Any) -> dict[str, str]:
    if quantized is None:
        return {}
    if isinstance(quantized, Mapping):
        items = quantized.items()
    else:  # a QuantizedModel: {path: QuantizedLayer} in .layers
        items = getattr(quantized, "layers", {}).items()
    out = {}
    for path, q in items:
        out[path] = q if isinstance(q, str) else f"int8 {getattr(q, 'mode', '')}".rstrip()
    return out


def _quant(m, path: str, states: dict[str, str]) -> str:
    if path in states:
        return states[path]
    own = getattr(m, "quantization", None)
    if isinstance(own, str):
        return own
    ws = _weights(m) if m._built else []
    return ws[0].dtype.name if ws else "-"


def _shapes(s) -> list:
    return s if isinstance(s, list) else [s]


def summary_table(model, quantized: Any = None) -> str:
    states = _quant_states(quantized)
    head = ("Layer (type)", "Output shape", "Params", "FLOPs", "Sparsity", "Quant")
    rows = [head]
    flops_total = 0
    zeros = weights = 0
    nodes = getattr(model, "nodes", None)
    calls: dict[str, int] = {}  # a graph model's layers called more than once (shared)
    for _, layer, _ in nodes() if callable(nodes) else ():
        calls[layer] = calls.get(layer, 0) + 1
    for name, kind, shape, m, path in _rows(model):
        shown = "?" if shape is None else str(shape)
        params = _count(m) if m._built else "? (not built)"
        flops = layer_flops(m)
        if flops is not None and calls.get(m.name, 1) > 1:
            flops *= calls[m.name]  # once per call
        flops_total += flops or 0
        sp = layer_sparsity(m)
        if sp is not None:
            n = sum(w.size for w in _weights(m))
            weights += n
            zeros += round(sp * n)
        rows.append(
            (
                f"{name} ({kind})",
                shown,
                str(params),
                "-" if flops is None else f"{flops:,}",
                "-" if sp is None else f"{sp:.1%}",
                _quant(m, path, states),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    line = "-" * (sum(widths) + 2 * (len(head) - 1))
    out = [f"Model: {model.name}", line]
    for i, r in enumerate(rows):
        cells = [
            f"{c:>{w}}" if j in (2, 3, 4) else f"{c:<{w}}"
            for j, (c, w) in enumerate(zip(r, widths))
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append(line)
    out.append(line)
    if callable(nodes):  # a graph model: what each call reads
        ins = zip(model.input_names, _shapes(model.input_shape))
        out.append("Inputs: " + ", ".join(f"{n} {s}" for n, s in ins))
        out += [f"  {n} = {layer}({', '.join(ins)})" for n, layer, ins in nodes()]
        out.append(f"Outputs: {', '.join(model.output_names)}")
        out.append(line)
    if model.built:
        out.append(f"Total params: {model.num_parameters():,}")
        out.append(f"FLOPs per sample: {flops_total:,}")
        if weights:
            out.append(f"Weight sparsity: {zeros / weights:.1%} ({zeros:,} of {weights:,} zero)")
        if states:
            out.append(
                f"Quantized layers: {len(states)} ({', '.join(sorted(set(states.values())))})"
            )
    else:
        out.append("Total params: unknown until the model is built (model.build(input_shape))")
    return "\n".join(out)
