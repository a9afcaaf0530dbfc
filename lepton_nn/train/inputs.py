"""The inputs a :class:`~lepton_nn.train.Trainer` feeds its model: one array ``X`` (N, ...),
or, for a graph :class:`~lepton_nn.nn.Model` of several inputs, a dict ``{input name: array}``
(given as a dict, or as a list in the model's input order). Every input holds the same N rows:
row i of each is sample i, so batching, shuffling and splitting take the same rows of all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import LeptonError, ShapeError

Inputs = np.ndarray | dict[str, np.ndarray]


def several(model: Any, X: Any) -> bool:
    """Whether ``X`` is given per input: a dict, or a list/tuple for a model of several
    inputs (for a one-input model a list is the rows of its one array)."""
    names = getattr(model, "input_names", None) or []
    return isinstance(X, Mapping) or (len(names) > 1 and isinstance(X, (list, tuple)))


def as_inputs(model: Any, X: Any, one: Callable[[Any, str], np.ndarray]) -> Inputs:
    """``X`` as the trainer holds it; ``one(value, what)`` converts one array (``what`` names
    it in errors). Raises for a dict given to a model without named inputs, missing or
    unknown inputs, and inputs whose numbers of rows differ (naming both)."""
    if not several(model, X):
        names = getattr(model, "input_names", None) or []
        if len(names) > 1:
            raise LeptonError(
                f"the model takes {len(names)} inputs {names}: give X as a dict by input name "
                f"or a list in that order, got {type(X).__name__}"
            )
        return one(X, "X")
    names = list(getattr(model, "input_names", None) or [])
    if not names:
        raise LeptonError(
            f"X is a {type(X).__name__} of inputs, but {type(model).__name__} takes one "
            "array (several inputs need a graph lepton_nn.nn.Model)"
        )
    if isinstance(X, Mapping):
        missing = [n for n in names if n not in X]
        extra = sorted(str(k) for k in X if k not in names)
        if missing or extra:
            raise LeptonError(f"the model's inputs are {names}; X misses {missing}, "
                              f"has unknown {extra}")  # fmt: skip
        given = [X[n] for n in names]
    else:
        if len(X) != len(names):
            raise LeptonError(
                f"the model takes {len(names)} inputs {names}, X holds {len(X)} arrays"
            )
        given = list(X)
    out = {n: one(v, f"input {n!r}") for n, v in zip(names, given, strict=True)}
    first = names[0]
    for n in names[1:]:
        if len(out[n]) != len(out[first]):
            raise ShapeError(
                f"input {n!r} has {len(out[n])} rows but input {first!r} has {len(out[first])}; "
                "every input needs one row per sample"
            )
    return out


def n_rows(X: Inputs) -> int:
    """N, the number of samples."""
    return len(next(iter(X.values()))) if isinstance(X, dict) else len(X)


def rows(X: Inputs, index: slice) -> Inputs:
    """The same rows ``X[index]`` of every input."""
    return {n: a[index] for n, a in X.items()} if isinstance(X, dict) else X[index]


def arrays(X: Inputs) -> list[np.ndarray]:
    """Every input array, in the model's input order."""
    return list(X.values()) if isinstance(X, dict) else [X]
