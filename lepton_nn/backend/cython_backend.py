"""Kernels compiled ahead of time from ``kernels/*.pyx`` (C with SIMD where it pays).

Each extension module is optional: a kernel whose module did not build falls back, by
inheritance, to its NumPy twin in :mod:`lepton_nn.backend.reference`.
"""

from __future__ import annotations

import importlib

from .reference import ReferenceBackend


def _load(name):
    try:
        return importlib.import_module(f"lepton_nn.kernels._{name}")
    except ImportError:
        return None


_dense = _load("dense")


class CythonBackend(ReferenceBackend):
    """Ahead-of-time compiled kernels; no first-call stall."""

    name = "cython"

    # -- dense epilogue, softmax cross-entropy, optimizers (kernels/dense.pyx) -------------

    # -- int8 quantized matmul (kernels/qgemm.pyx) ------------------------------------------

    # -- sparse matmul (kernels/sparse.pyx) --------------------------------------------------

    # -- convolution and pooling (kernels/conv.pyx) -----------------------------------------

    # -- recurrent cells (kernels/recurrent.pyx) --------------------------------------------
