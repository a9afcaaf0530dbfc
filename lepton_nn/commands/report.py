"""How ``lepton-nn`` prints metrics: aligned text, or complete JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

# the order of the text report; whatever the model's evaluate() returns is shown
REPORT_KEYS = (
    "n",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "f1_macro",
    "roc_auc",
    "pr_auc",
    "ks",
    "log_loss",
    "brier",
    "ece",
    "r2",
    "mae",
    "rmse",
    "mse",
)


def fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def complete(report: dict, task: str) -> dict:
    """The model's report plus what the CLI adds: ``task``, RMSE for regression."""
    out = {"task": task, **report}
    if task == "regression" and out.get("mse") is not None:
        out["rmse"] = math.sqrt(out["mse"])
    return out


def lines(report: dict) -> list[str]:
    out = [f"  {key:<9} {fmt(report[key])}" for key in REPORT_KEYS if key in report]
    cm = report.get("confusion_matrix")
    if cm is not None:
        out.append("  confusion matrix (rows: true, columns: predicted):")
        out.extend("    " + " ".join(f"{c:>6}" for c in row) for row in cm)
    return out


def cv_lines(scores: dict[str, list[float]], task: str) -> list[str]:
    keys = ("r2", "mae", "mse") if task == "regression" else ("accuracy", "roc_auc", "ks", "f1")
    out = []
    for key in keys:
        if key in scores:
            v = np.asarray(scores[key])
            out.append(
                f"  {key:<9} {v.mean():.4f} +/- {v.std():.4f}   folds: "
                + " ".join(f"{x:.3f}" for x in v)
            )
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf
    return v


def to_json(report: dict) -> str:
    """Valid JSON (NaN and inf as null, NumPy scalars as numbers)."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, np.ndarray)):
            return [clean(x) for x in list(v)]
        return _plain(v)

    return json.dumps(clean(report), allow_nan=False)
