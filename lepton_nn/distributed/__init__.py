"""Floor 8: lepton_nn on Dask and Ray, and data larger than memory.

- :func:`dask_executor` / :func:`ray_executor`: executors for ``GridSearch``,
  ``RandomSearch`` and ``cross_validate`` (the data goes once per worker, results equal a
  serial run with the same seed).
- :func:`score`: a saved model scores a Parquet or CSV dataset (a file, a folder or a glob)
  file by file on a Dask cluster, or here, in batches of rows, into Parquet or CSV parts.
- :func:`iter_batches`: a Parquet or CSV file read in batches of rows (bounded memory).
- :func:`fit_incremental`: a ``TabularModel`` trained on a Dask DataFrame partition by
  partition (``partial_fit``), one partition in this process at a time.

Dask, distributed, Ray and pyarrow are optional extras (``pip install
'lepton-nn[distributed]'``, ``[data]``, ``[ray]``), imported only when used. Names load
lazily (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "DaskExecutor": "executors",
    "RayExecutor": "executors",
    "dask_executor": "executors",
    "ray_executor": "executors",
    "connect": "executors",
    "score": "scoring",
    "predict_frame": "scoring",
    "iter_batches": "sources",
    "list_files": "sources",
    "fit_incremental": "incremental",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lepton_nn.distributed' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
