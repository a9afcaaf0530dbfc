"""lepton_nn: a small, readable neural-net engine on NumPy with compiled kernels.

Public names load lazily (PEP 562), so ``import lepton_nn.runtime`` pulls in no autograd,
layers, optimizers, training code or Numba.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "Tensor": ("lepton_nn.ops", "Tensor"),
    "Function": ("lepton_nn.autograd", "Function"),
    "no_grad": ("lepton_nn.autograd", "no_grad"),
    "enable_grad": ("lepton_nn.autograd", "enable_grad"),
    "gradcheck": ("lepton_nn.autograd", "gradcheck"),
    "concat": ("lepton_nn.ops", "concat"),
    "stack": ("lepton_nn.ops", "stack"),
    "where": ("lepton_nn.ops", "where"),
    "maximum": ("lepton_nn.ops", "maximum"),
    "set_seed": ("lepton_nn.random", "set_seed"),
    "set_num_threads": ("lepton_nn.backend.threads", "set_num_threads"),
    "get_num_threads": ("lepton_nn.backend.threads", "get_num_threads"),
    "LeptonError": ("lepton_nn.errors", "LeptonError"),
    "ShapeError": ("lepton_nn.errors", "ShapeError"),
    "DataError": ("lepton_nn.errors", "DataError"),
    "ModelFormatError": ("lepton_nn.errors", "ModelFormatError"),
    "GradcheckError": ("lepton_nn.errors", "GradcheckError"),
    "NotBuiltError": ("lepton_nn.errors", "NotBuiltError"),
    "save": ("lepton_nn.io", "save"),
    "load": ("lepton_nn.io", "load"),
    "nn": ("lepton_nn.nn", None),
    "losses": ("lepton_nn.losses", None),
    "optim": ("lepton_nn.optim", None),
    "backend": ("lepton_nn.backend", None),
    "metrics": ("lepton_nn.metrics", None),
    "data": ("lepton_nn.data", None),
    "train": ("lepton_nn.train", None),
    "tuning": ("lepton_nn.tuning", None),
    "compress": ("lepton_nn.compress", None),
    "runtime": ("lepton_nn.runtime", None),
    "inspect": ("lepton_nn.inspect", None),
    "explain": ("lepton_nn.explain", None),
    "risk": ("lepton_nn.risk", None),
    "compile": ("lepton_nn.compiled", "compile"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lepton_nn' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import backend, losses, nn, optim  # noqa: F401
    from .autograd import Function, enable_grad, gradcheck, no_grad  # noqa: F401
    from .backend.threads import get_num_threads, set_num_threads  # noqa: F401
    from .errors import (  # noqa: F401
        DataError,
        GradcheckError,
        LeptonError,
        ModelFormatError,
        NotBuiltError,
        ShapeError,
    )
    from .ops import Tensor, concat, maximum, stack, where  # noqa: F401
    from .random import set_seed  # noqa: F401
