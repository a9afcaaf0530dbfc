"""The NumPy-only inference runtime and the safe ``.lnn`` model file.

``lepton_nn.runtime.load(path)`` reads a file written by :func:`lepton_nn.save` (a network,
a compressed network or a tabular pipeline) and returns an :class:`InferenceModel` with
``predict`` / ``predict_proba``, running forward-only plans of compiled kernel calls.

Importing this package, loading and predicting import NumPy, :mod:`lepton_nn.backend`,
:mod:`lepton_nn.errors`, ``lepton_nn.runtime.*`` and the compiled extension only: never
autograd, layers, training code or Numba.
"""

from __future__ import annotations

from .format import FORMAT_VERSION, inspect_lnn, read_lnn, write_lnn
from .model import InferenceModel, from_manifest, load
from .validate import Limits

__all__ = [
    "FORMAT_VERSION",
    "InferenceModel",
    "Limits",
    "from_manifest",
    "inspect_lnn",
    "load",
    "read_lnn",
    "write_lnn",
]
