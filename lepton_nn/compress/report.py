"""How pruned a model is: per-parameter sparsity (:func:`sparsity_report`) and FLOPs per
sample (:func:`count_flops`)."""

from __future__ import annotations

import numpy as np

from ..errors import LeptonError
from ..nn.module import Module
from .layout import _is_weight_layer, _named_modules, _parameters

__all__ = ["SparsityReport", "count_flops", "sparsity_report"]


class SparsityReport(list):
    """Rows ``{layer, param, shape, size, nonzero, sparsity}``; ``str()`` is a text table."""

    def __str__(self) -> str:
        head = ("layer", "param", "shape", "nonzero", "sparsity")
        rows = [head] + [
            (r["layer"], r["param"], str(r["shape"]), f"{r['nonzero']:,}", f"{r['sparsity']:.1%}")
            for r in self
        ]
        size = sum(r["size"] for r in self)
        nz = sum(r["nonzero"] for r in self)
        total = 1 - nz / size if size else 0.0
        rows.append(("total", "", f"{size:,}", f"{nz:,}", f"{total:.1%}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        rule = "-" * len(max(lines, key=len))
        return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


def sparsity_report(model: Module) -> SparsityReport:
    """Per parameter: owning layer's name, dotted name, shape, size, nonzero count and
    sparsity = 1 - nonzero / size. ``print()`` it for a table with a total line."""
    rows = SparsityReport()
    for t in _parameters(model):
        nz = int(np.count_nonzero(t.param.data))
        size = int(t.param.size)
        rows.append(
            {
                "layer": t.layer.name,
                "param": t.name,
                "shape": tuple(t.param.shape),
                "size": size,
                "nonzero": nz,
                "sparsity": 1.0 - nz / size if size else 0.0,
            }
        )
    return rows


def count_flops(model: Module, nonzero: bool = False) -> int:
    """Floating-point operations per sample of the Dense and Conv layers (2 per multiply-add).

    Dense: 2 * in * out per position; Conv: 2 * (C_in kh kw) * C_out * (H_out W_out).
    ``nonzero=True`` counts only nonzero weights (what a sparse kernel does). Conv layers need
    their output shape, recorded when the model first runs.
    """
    total = 0
    for _, m in _named_modules(model):
        if not _is_weight_layer(m):
            continue
        w = m.weight.data
        positions = 1
        if m.output_shape is not None:
            spatial = m.output_shape[1:-1] if w.ndim == 2 else m.output_shape[2:]
            positions = int(np.prod(spatial, dtype=np.int64))
        elif w.ndim > 2:
            raise LeptonError(f"layer '{m.name}': run one batch first (output size unknown)")
        n = int(np.count_nonzero(w)) if nonzero else w.size
        total += 2 * n * positions
    return total
