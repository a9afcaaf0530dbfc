"""Shared by the sequence examples: read the long-format time-series CSVs of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_series(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A long-format CSV (series, split, step, c0.., label) as {split: (x (N, T, C), labels)}."""
    with open(path) as f:
        header = f.readline().strip().split(",")
    cols = {name: i for i, name in enumerate(header)}
    chans = [cols[n] for n in header if n.startswith("c") and n[1:].isdigit()]
    raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=str)
    series = raw[:, cols["series"]].astype(np.int64)
    steps = raw[:, cols["step"]].astype(np.int64)
    values = raw[:, chans].astype(np.float32)
    out = {}
    for split in np.unique(raw[:, cols["split"]]):
        rows = raw[:, cols["split"]] == split
        ids, first = np.unique(series[rows], return_index=True)
        x = np.zeros((len(ids), steps.max() + 1, len(chans)), np.float32)
        x[np.searchsorted(ids, series[rows]), steps[rows]] = values[rows]
        out[str(split)] = (x, raw[rows, cols["label"]][first])
    return out
