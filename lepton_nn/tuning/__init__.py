"""Floor 7: model selection. ``cross_validate``, ``GridSearch``, ``RandomSearch``.

``build_fn(**params) -> Trainer`` builds one untrained configuration; parameters named like
``fit`` arguments (``epochs``, ``batch_size``...) go to ``fit``. Trials run in a local process
pool by default (``executor="serial"`` inline, or pass any ``concurrent.futures.Executor``,
e.g. a Dask one); ``build_fn`` must then be a module-level function. See
:mod:`lepton_nn.tuning.validation` for the details.

Names load lazily (PEP 562): a worker process can import ``lepton_nn.tuning._threads`` to cap
its BLAS threads before NumPy is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    "cross_validate": "validation",
    "split_params": "validation",
    "trial_seed": "validation",
    "FIT_PARAMS": "validation",
    "DEFAULT_SCORING": "validation",
    "GridSearch": "search",
    "RandomSearch": "search",
    "SuccessiveHalving": "halving",
    "ResultsTable": "search",
    "uniform": "search",
    "loguniform": "search",
    "randint": "search",
    "choice": "search",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lepton_nn.tuning' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from .halving import SuccessiveHalving  # noqa: F401
    from .search import (  # noqa: F401
        GridSearch,
        RandomSearch,
        ResultsTable,
        choice,
        loguniform,
        randint,
        uniform,
    )
    from .validation import (  # noqa: F401
        DEFAULT_SCORING,
        FIT_PARAMS,
        cross_validate,
        split_params,
        trial_seed,
    )
