"""Why the model said that, for the studio page: :mod:`lepton_nn.explain` on the sample rows.

- per row: integrated gradients from the all-zero baseline (``STEPS`` trapezoid intervals),
  A_j = (x_j - 0) * mean over the path of df/dx_j, which sum to f(x) - f(0) (completeness; the
  gap is returned as ``delta``), and gradient x input, x_j * df/dx_j, its first-order cousin;
- globally: permutation importance over the sample rows (needs labels): how much the default
  metric (ROC AUC for one output and 0/1 targets, else accuracy or R^2) drops when one
  column is shuffled, mean and standard deviation over ``REPEATS`` shuffles.

f is output column 0 for one output, else the row's predicted class. Tabular input only:
x of shape (N, F) for a network, or raw rows (a Table) for a
:class:`~lepton_nn.tabular.TabularModel`, explained per raw column (the attributions of a
column's one-hot and missing-indicator features summed; a whole raw column shuffled) with the
all-zero feature row as baseline (numeric columns at their training mean, no category set).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import explain as E
from ...autograd import no_grad
from .rows import Rows

__all__ = ["explain_rows", "STEPS", "REPEATS"]

STEPS = 32
REPEATS = 3


def explain_rows(
    model: Any, x: Any, y: Any, row: int, importances: bool, names: list[str] | None = None
) -> dict:
    """``{"row", "features", "values", "output", "method", "attributions", "grad_x_input",
    "delta", "importances"}`` for sample row ``row`` (IndexError when out of range,
    ValueError for input that is not (N, F))."""
    raw = hasattr(x, "take") and hasattr(model, "transform")  # a TabularModel on a Table
    if isinstance(x, Rows):
        raise ValueError("attributions are shown for a network of one tabular input (N, F)")
    if not raw:
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"attributions are shown for tabular input (N, F), got {x.shape}")
    if not 0 <= row < len(x):
        raise IndexError(f"row {row} is out of range: the sample has {len(x)} rows")
    names = list(names) if names else E.feature_names(model, x)
    one = x.take([row]) if raw else x[row : row + 1]
    ig, delta = E.integrated_gradients(model, one, steps=STEPS, return_delta=True)
    gxi = E.gradient_x_input(model, one)
    net = model.network if raw else model
    was = net.training
    net.eval()
    try:
        with no_grad():
            out = np.asarray(net(model.transform(one) if raw else one).data, np.float64)
    finally:
        net.train(was)
    values = [_value(one[c][0]) for c in names] if raw else [float(v) for v in one[0]]
    doc: dict[str, Any] = {
        "row": int(row),
        "rows": int(len(x)),
        "features": names,
        "values": values,
        "output": [float(v) for v in out.reshape(-1)],
        "method": f"integrated gradients from the zero row ({STEPS} steps)",
        "attributions": [float(v) for v in ig[0]],
        "grad_x_input": [float(v) for v in gxi[0]],
        "delta": float(delta[0]),
        "importances": None,
    }
    if importances and y is not None and len(x) >= 4:
        imp = E.permutation_importance(model, x, np.asarray(y), n_repeats=REPEATS)
        doc["importances"] = {
            "metric": imp["metric"],
            "baseline_score": float(imp["baseline_score"]),
            "mean": [float(v) for v in imp["importances_mean"]],
            "std": [float(v) for v in imp["importances_std"]],
        }
    return doc


def _value(v: Any) -> Any:
    """A raw cell for JSON: a finite float, a label as text, None when missing."""
    if v is None:
        return None
    if isinstance(v, (int, float, np.integer, np.floating)):
        f = float(v)
        return f if np.isfinite(f) else None
    return str(v)
