"""The kernels the runtime binds into its plans, resolved once and never through Numba.

All come from :func:`lepton_nn.backend.get_backend` with ``allow_jit=False``: the Cython
backend when the extension is built (``kernels/dense.pyx``, ``qgemm.pyx``, ``sparse.pyx``),
else the NumPy reference twins (same signatures and results)::

    bias_act_forward(z, bias, act, out)                      out = f(z + bias)
    quantize_rows(x, q, scale, zero_point, fixed=False)      x float32 -> uint8 per row/tensor
    qpack_weights(w_q) -> (w_packed, w_col_sums)             int8 (N, K) -> kernel layout
    qlinear(x_q, x_scale, x_zp, w_packed, w_scale, w_col_sums, bias, act, out[, nthreads])
    sparse_linear(x, indptr, indices, values, bias, act, out, kernel=0, check=True)
    sparse_chain_prepare(specs, k, threads=1) -> chain;  sparse_chain_forward(x, chain, outs)

Static activation quantization (one scale and zero point for the tensor, fixed at
calibration) is ``quantize_rows(x, q, scale, zero_point, True)`` with scale float32 (1,) and
zero_point int32 (1,): one compiled call.
"""

from __future__ import annotations

from lepton_nn.backend import ReferenceBackend, get_backend

__all__ = ["kernels"]


def kernels() -> ReferenceBackend:
    """The ahead-of-time backend (Cython, else reference) whose methods plans bind."""
    return get_backend(allow_jit=False)
