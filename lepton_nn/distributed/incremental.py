"""Incremental training over a Dask DataFrame, partition by partition (as dask-ml's
``Incremental`` does), so a model learns from data no single machine holds.

:func:`fit_incremental` makes one pass over the partitions to fit the preprocessing and
count the target's classes (:mod:`lepton_nn.data.stream_fit`: exact counts, means,
variances and categories), then ``epochs`` passes of ``TabularModel.partial_fit``, one
partition at a time, in a seeded shuffled order. The partitions are computed where the
data live (the workers) and brought here one at a time, the next one computing while the
model trains on the current one: this process holds the model and two partitions, never
the collection. The result equals a loop of ``partial_fit`` over the same pandas
partitions in the same order, whatever the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..data.stream_fit import fit_stream
from ..data.table import Table
from ..errors import DataError

__all__ = ["fit_incremental", "partitions"]


def _column_types(ddf: Any, model: Any, target: str) -> dict[str, str]:
    """Kinds from the collection's dtypes (numbers and booleans numeric, anything else
    categorical), so every partition is typed alike; ``model.column_types`` wins."""
    kinds = {}
    for c, dt in ddf.dtypes.items():
        if c != target:
            kinds[str(c)] = "numeric" if getattr(dt, "kind", "O") in "biuf" else "categorical"
    return {**kinds, **model.column_types}


def partitions(ddf: Any, order: Any, client: Any = None) -> Iterator[Any]:
    """The pandas partitions ``order`` of ``ddf``, the next computing while one is used."""
    order = [int(i) for i in order]
    if client is None:
        for i in order:
            yield ddf.partitions[i].compute()
        return
    pending = client.compute(ddf.partitions[order[0]]) if order else None
    for k in range(len(order)):
        current = pending
        if k + 1 < len(order):
            pending = client.compute(ddf.partitions[order[k + 1]])
        yield current.result()
        current.release()


def fit_incremental(
    model: Any,
    ddf: Any,
    target: str,
    epochs: int = 1,
    shuffle: bool = True,
    client: Any = None,
) -> Any:
    """Train ``model`` (a :class:`~lepton_nn.tabular.TabularModel`) on the Dask DataFrame
    ``ddf`` partition by partition; ``target`` names its label column. ``client``: a
    ``distributed.Client`` computing the partitions (default: Dask's current scheduler).
    Returns the model; ``model.history`` holds one ``loss`` per epoch (the mean over the
    partitions' training losses, weighted by rows)."""
    from ..tabular_stream import TargetSummary, setup

    if target not in ddf.columns:
        raise DataError(f"fit_incremental: no column {target!r}; columns are {list(ddf.columns)}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    types = _column_types(ddf, model, target)
    n = ddf.npartitions

    def tables(order: Any) -> Iterator[Table]:
        for k, df in zip(order, partitions(ddf, order, client), strict=True):
            if len(df) == 0:
                continue
            t = Table.from_pandas(df, target=target, column_types=types)
            t.source = f"partition {int(k)}"
            yield t

    from ..data import Preprocessor

    pre = Preprocessor(
        missing_indicator=model.missing_indicator, scaling=model.scaling, column_types=types,
        drop=model.drop, non_numeric=model.non_numeric,
    )  # fmt: skip
    summary = TargetSummary()
    fit_stream(pre, tables(range(n)), visit=summary.update)
    setup(model, pre, summary)
    rng = np.random.default_rng(model.seed)
    losses = []
    for _ in range(int(epochs)):
        order = rng.permutation(n) if shuffle else np.arange(n)
        total = rows = 0.0
        for t in tables(order):
            model.partial_fit(t)
            total += model._partial["trainer"].history.history["loss"][-1] * len(t)
            rows += len(t)
        losses.append(total / rows)
    model.history = {"loss": losses}
    return model
