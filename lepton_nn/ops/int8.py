"""``matmul_int8``: the exact integer product the int8 layers are built on, as a plain function.

Not differentiable (integers have no gradient): it is the int8 GEMM of the active backend
(``qgemm_s32``: AVX512-VNNI / AVX-VNNI / AVX2 / AMX / portable C on the Cython backend, chosen
once at import) behind a validating wrapper, for users who quantize their own matrices.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_backend

MAX_K = 65793  # |sum| < 2**31 holds for any int8 values up to this depth (127 * 128 * K)


def matmul_int8(a, b) -> np.ndarray:
    """``a @ b`` exactly: ``a`` int8 (M, K), ``b`` int8 (K, N) -> int32 (M, N).

    Any layout is accepted (copied to C order when needed). ``b`` is packed once per call
    (``qpack_weights(b.T)``); to multiply many ``a`` by one ``b``, use the backend's
    ``qpack_weights`` and ``qgemm_s32`` directly. Raises ``TypeError`` for another dtype and
    ``ValueError`` for mismatched shapes or ``K > 65793`` (the int32 sum could overflow).
    """
    a, b = np.asarray(a), np.asarray(b)
    for name, x in (("a", a), ("b", b)):
        if x.dtype != np.int8:
            raise TypeError(f"matmul_int8: {name} must be int8, got {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"matmul_int8: {name} must be 2-D, got shape {x.shape}")
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2:
        raise ValueError(f"matmul_int8: a {a.shape} @ b {b.shape}: inner sizes differ")
    if k > MAX_K:
        raise ValueError(f"matmul_int8: K = {k} > {MAX_K} could overflow the int32 sum")
    out = np.empty((m, n), np.int32)
    if m == 0 or n == 0:
        return out
    if k == 0:
        out[...] = 0
        return out
    be = get_backend()
    w_packed, col_sums = be.qpack_weights(np.ascontiguousarray(b.T))
    return be.qgemm_s32(np.ascontiguousarray(a), w_packed, out, col_sums)
