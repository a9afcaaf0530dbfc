"""The sample rows of a network of several inputs, held as one object the studio slices as
it slices an array: :class:`Rows` (``len``: the rows; ``rows[a:b]``: those rows of every
input). A graph :class:`~lepton_nn.nn.Model` is called on ``rows.arrays`` (by input name,
:func:`model_input`); the runtime view reads the arrays itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import LeptonError

__all__ = ["Rows", "rows_of", "model_input", "n_rows"]


class Rows:
    """The sample rows of a network of several inputs: ``arrays`` by input name (the same
    number of rows each); ``len`` is the rows, a slice takes those rows of every input."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        counts = {k: len(v) for k, v in arrays.items()}
        if len(set(counts.values())) > 1:
            raise LeptonError(f"the inputs' sample rows differ in number: {counts}")
        self.arrays = arrays

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, index: slice) -> Rows:
        if not isinstance(index, slice):
            raise TypeError("the rows of several inputs are taken by slices (rows[a:b])")
        return Rows({k: v[index] for k, v in self.arrays.items()})


def rows_of(model: Any, x: Any) -> Any:
    """``x`` for a graph model of several inputs (a dict by input name, any order, or a list
    in input order; checked by the model as its call checks them) as :class:`Rows`; anything
    else (one input, no rows, already Rows) as it is."""
    names = getattr(model, "input_names", None) or []
    if x is None or isinstance(x, Rows) or len(names) < 2:
        return x
    bound = model._bind_inputs((x,))  # LeptonError naming missing / unknown inputs
    return Rows({n: np.asarray(getattr(v, "data", v)) for n, v in bound.items()})


def model_input(x: Any) -> Any:
    """What the model is called on: the arrays by input name for :class:`Rows`, else ``x``."""
    return x.arrays if isinstance(x, Rows) else x


def n_rows(x: Any) -> int:
    """The number of sample rows in ``x`` (an array, a Tensor or :class:`Rows`)."""
    return len(x) if isinstance(x, Rows) else int(np.shape(getattr(x, "data", x))[0])
