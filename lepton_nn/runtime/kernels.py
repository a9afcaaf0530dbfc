"""The kernels the runtime binds into its plans, resolved once and never through Numba.

All come from :func:`lepton_nn.backend.get_backend` with ``allow_jit=False``: the Cython
backend when the extension is built (``kernels/dense.pyx``, ``qgemm.pyx``, ``sparse.pyx``),
else the NumPy reference twins (same signatures and results)::

    bias_act_forward(z, bias, act, out)                      out = f(z + bias)
    quantize_rows(x, q, scale, zero_point)                   x float32 -> uint8 per row/tensor
    qpack_weights(w_q) -> (w_packed, w_col_sums)             int8 (N, K) -> kernel layout
    qlinear(x_q, x_scale, x_zp, w_packed, w_scale, w_col_sums, bias, act, out[, nthreads])
    sparse_linear(x, indptr, indices, values, bias, act, out, kernel=0, check=True)

Static activation quantization (one scale for the tensor, fixed at calibration) has no
compiled kernel; :func:`quantize_static` does it in five in-place NumPy calls.
"""

from __future__ import annotations

import numpy as np

from lepton_nn.backend import ReferenceBackend, get_backend

__all__ = ["kernels", "quantize_static"]


def kernels() -> ReferenceBackend:
    """The ahead-of-time backend (Cython, else reference) whose methods plans bind."""
    return get_backend(allow_jit=False)


def quantize_static(
    x: np.ndarray, inv_scale: np.float32, zero_point: np.float32, tmp: np.ndarray, q: np.ndarray
) -> np.ndarray:
    """q = clip(rint(x * (1 / s)) + z, 0, 255) as uint8, float32 math, x (M, K) -> q (M, K).

    ``inv_scale`` = float32(1) / float32(s) and ``zero_point`` (a float32 integer in 0..255)
    are fixed at calibration; ``tmp`` is a float32 scratch array of x's shape.
    """
    np.multiply(x, inv_scale, tmp)
    np.rint(tmp, tmp)
    np.add(tmp, zero_point, tmp)
    np.clip(tmp, 0, 255, tmp)
    np.copyto(q, tmp, "unsafe")
    return q
