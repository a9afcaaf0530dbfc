"""The readable spec: a pure-NumPy twin of every kernel.

Each method here is the definition of what its compiled twins (``numba_backend.py``,
``cython_backend.py``) compute; they subclass :class:`ReferenceBackend` and override only
what they speed up. Kernels validate nothing: callers in ``ops/`` check shapes, dtypes and
contiguity first. Arrays are float32 or float64 (one dtype per call), C-contiguous.

Activation codes (``act``) index :data:`ACTIVATIONS`.

The twins live by op family, one file each, joined into one class here:
``reference_dense.py`` (bias and activation, the training GEMM, Dense chains, softmax
cross-entropy, Adam, sparse Dense), ``reference_int8.py``, ``reference_conv.py``
(convolution and pooling, Winograd's F(2x2, 3x3) among them) and ``reference_recurrent.py``;
shared constants and helpers in ``reference_common.py``.
"""

from __future__ import annotations

from .reference_common import (
    ACT_CODE,
    ACTIVATIONS,
    GELU,
    GELU_A,
    GELU_C,
    IDENTITY,
    RELU,
    SIGMOID,
    TANH,
)
from .reference_conv import ConvTwins
from .reference_dense import DenseTwins
from .reference_int8 import Int8Twins, QChain
from .reference_recurrent import RecurrentTwins

__all__ = [
    "ACTIVATIONS",
    "ACT_CODE",
    "GELU",
    "GELU_A",
    "GELU_C",
    "IDENTITY",
    "QChain",
    "RELU",
    "ReferenceBackend",
    "SIGMOID",
    "TANH",
]


class ReferenceBackend(DenseTwins, Int8Twins, ConvTwins, RecurrentTwins):
    """Pure NumPy. Always available; the one to read."""

    name = "reference"
