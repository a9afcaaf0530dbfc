"""Pruned Dense weights in the sparse kernel's CSR layout (:class:`CSRWeight`,
:func:`to_sparse`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..autograd import Tensor
from ..nn.module import Module
from ..runtime.compression import csr_arrays, csr_density, csr_to_dense
from .layout import _is_weight_layer, _parameters

__all__ = ["CSRWeight", "to_sparse"]


class CSRWeight(NamedTuple):
    """A pruned Dense weight W (K, N) in the sparse kernel's layout: CSR over its output
    columns (the CSR of W^T). Column n holds rows ``indices[indptr[n]:indptr[n+1]]``
    (ascending) with values ``data[indptr[n]:indptr[n+1]]``.

    data: (nnz,) float32; indices: (nnz,) int32; indptr: (N + 1,) int32; shape: (K, N).
    ``sparse_linear(x, w.indptr, w.indices, w.data, bias, act, out)`` computes f(x W + b).
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    def to_dense(self) -> np.ndarray:
        """W (K, N), float32."""
        return csr_to_dense(self.indptr, self.indices, self.data, self.shape)

    @property
    def density(self) -> float:
        """nnz / (K N)."""
        return csr_density(self.data, self.shape)


def _pack(w: np.ndarray) -> CSRWeight:
    indptr, indices, values = csr_arrays(w)  # ShapeError unless W is (in, out)
    return CSRWeight(values, indices, indptr, (int(w.shape[0]), int(w.shape[1])))


def to_sparse(
    model_or_weight: Module | np.ndarray | Tensor, min_sparsity: float = 0.0
) -> CSRWeight | dict[str, CSRWeight]:
    """Export pruned Dense weights for the sparse kernel (packed by the backend's ``to_csr``,
    through :func:`lepton_nn.runtime.compression.csr_arrays`, as the model file does).

    A weight array / Tensor W (in, out) gives one :class:`CSRWeight`; a model gives
    ``{parameter name: CSRWeight}`` for each Dense weight with sparsity >= ``min_sparsity``.
    Values are float32, the kernel's dtype.
    """
    if isinstance(model_or_weight, Module):
        out = {}
        for t in _parameters(model_or_weight):
            if t.attr == "weight" and t.param.ndim == 2 and _is_weight_layer(t.layer):
                w = t.param.data
                if 1.0 - np.count_nonzero(w) / w.size >= min_sparsity:
                    out[t.name] = _pack(w)
        return out
    w = model_or_weight.data if isinstance(model_or_weight, Tensor) else np.asarray(model_or_weight)
    return _pack(w)
