"""Kernels jitted by Numba (``pip install lepton-nn[fast]``), cached on disk (``cache=True``).

Imported only when this backend is selected, so ``import lepton_nn`` never imports Numba.
Kernels not overridden here run their NumPy twin from :mod:`lepton_nn.backend.reference`.
"""

from __future__ import annotations

from .reference import ReferenceBackend


class NumbaBackend(ReferenceBackend):
    """Just-in-time compiled kernels."""

    name = "numba"

    # -- dense epilogue, softmax cross-entropy, optimizers (kernels/numba_dense.py) --------

    # -- convolution and pooling (kernels/numba_conv.py) ------------------------------------

    # -- recurrent cells (kernels/numba_recurrent.py) ---------------------------------------
