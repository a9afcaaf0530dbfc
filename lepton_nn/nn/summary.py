"""``model.summary()``: a text table of layers, output shapes and parameter counts."""

from __future__ import annotations


def _rows(model):
    children = list(model.named_children())
    if not children:
        return [(model.name, type(model).__name__, model.output_shape, model)]
    rows = []
    for _, child in children:
        rows.extend(_rows(child))
    return rows


def _count(m) -> int:
    if not m._built:
        return 0
    return int(sum(p.size for _, p in m._own_parameters()))


def summary_table(model) -> str:
    rows = [("Layer (type)", "Output shape", "Params")]
    for name, kind, shape, m in _rows(model):
        shown = "?" if shape is None else str(shape)
        params = _count(m) if m._built else "? (not built)"
        rows.append((f"{name} ({kind})", shown, str(params)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    line = "-" * (sum(widths) + 4)
    out = [f"Model: {model.name}", line]
    for i, r in enumerate(rows):
        out.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}")
        if i == 0:
            out.append(line)
    out.append(line)
    if model.built:
        out.append(f"Total params: {model.num_parameters():,}")
    else:
        out.append("Total params: unknown until the model is built (model.build(input_shape))")
    return "\n".join(out)
