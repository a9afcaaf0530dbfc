"""Every fused activation kernel against its NumPy twin on the values where approximations
break: NaN (both signs: the old SIMD tanh and sigmoid returned +-1 or 0/1 by the NaN's sign
bit), +-inf, +-0.0, huge, denormal, and the edges of the SIMD exp's clamp and of tanh's
small-argument series; each value at every lane position of full vectors and of loop tails
(31 columns: 3 AVX2 vectors + 7, 1 AVX-512 vector + 15; 3 columns: a tail alone).

Kernels: bias_act_forward on every backend (cython, numba, reference), the sparse Dense
(every ISA path, every loop), the sparse chain, and the int8 GEMM's epilogue (every ISA
path), each in its ISA's SIMD code and in its plain-C loops. The twin is NumPy's (np.tanh,
np.maximum, ...): a NaN in gives NaN out, gelu(-inf) is -inf * 0 = NaN, sigmoid(-inf) = 0.
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn.backend as backend
from lepton_nn.backend.reference import ACTIVATIONS, ReferenceBackend

REF = ReferenceBackend()
ACTS = list(range(len(ACTIVATIONS)))
F32 = np.finfo(np.float32)
VALUES = [
    np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, float(F32.max), -float(F32.max), 1e20, -1e20,
    100.0, -100.0, 88.5, -88.5, 87.5, -87.5, 44.0, -44.0, 9.0, -9.0, 0.126, -0.124,
    1e-40, -1e-40, float(F32.smallest_subnormal), 1e-30,
]  # fmt: skip
VALUE_IDS = [repr(v) for v in VALUES]
VALUE_IDS[1] = "-nan"  # copysign(nan, -1): the sign bit set
WIDTHS = (31, 3)


def _value(v, dtype):
    return np.copysign(dtype(np.nan), -1) if v is VALUES[1] else dtype(v)


def _placed(v, n, dtype, seed=0):
    """(n + 1, n): row i is random with ``v`` at column i; the last row is ``v`` throughout."""
    z = (np.random.default_rng(seed).standard_normal((n + 1, n)) * 2).astype(dtype)
    np.fill_diagonal(z, _value(v, dtype))
    z[n] = _value(v, dtype)
    return z


def _twin(method, *args):
    """REF.method(*args): NumPy's inf - inf and inf * 0 give NaN, as intended, unwarned."""
    with np.errstate(all="ignore"):
        return getattr(REF, method)(*args)


def _check(got, want, v, act, where):
    msg = f"{where}: {ACTIVATIONS[act]}({v!r})"
    tol = (
        {"rtol": 2e-5, "atol": 2e-6} if want.dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    )
    np.testing.assert_allclose(got, want, err_msg=msg, **tol)  # NaN and inf where the twin's
    if act in (0, 3):  # identity and tanh keep the sign of a zero, as np.tanh(-0.0) = -0.0
        zero = want == 0
        np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]), msg)


@pytest.mark.parametrize("v", VALUES, ids=VALUE_IDS)
@pytest.mark.parametrize("name", backend.available())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_act_forward(name, dtype, v):
    with backend.use_backend(name) as be, np.errstate(all="ignore"):  # the twin's own NaN
        for act in ACTS:
            for n in WIDTHS:
                z = _placed(v, n, dtype)
                got = be.bias_act_forward(z, None, act, np.full_like(z, 7.0))
                _check(
                    got,
                    _twin("bias_act_forward", z, None, act, np.empty_like(z)),
                    v,
                    act,
                    f"{name} {dtype.__name__} n={n}",
                )


sparse = pytest.importorskip("lepton_nn.kernels._sparse")


@pytest.fixture(params=sparse.supported_isas())
def sparse_isa(request):
    before = sparse.isa()
    assert sparse.set_isa(request.param) == request.param
    yield request.param
    sparse.set_isa(before)


@pytest.mark.parametrize("v", VALUES, ids=VALUE_IDS)
@pytest.mark.parametrize(
    "kernel, variant", [(1, 1), (1, 0), (2, 1)], ids=["rows", "gather", "batch"]
)
def test_sparse_linear(sparse_isa, kernel, variant, v):
    """out = act(x @ 0 + bias): the bias row carries the value to every column position of
    the kernels' epilogues (per row, with its tail; batch-innermost, per column)."""
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    sparse._set_rows_variant(variant)
    try:
        for n in WIDTHS:
            empty = (np.zeros(n + 1, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))
            for bias in _placed(v, n, np.float32):
                for act in ACTS:
                    got = sparse.sparse_linear(
                        x, *empty, bias, act, np.full((5, n), 7, np.float32), kernel
                    )
                    want = _twin(
                        "sparse_linear", x, *empty, bias, act, np.empty((5, n), np.float32)
                    )
                    _check(got, want, v, act, f"sparse {sparse_isa} kernel {kernel}/{variant}")
    finally:
        sparse._set_rows_variant(1)


@pytest.mark.parametrize("v", VALUES, ids=VALUE_IDS)
def test_sparse_chain(sparse_isa, v):
    """One layer of zeros per activation code: the chain's own epilogue (column blocks)."""
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    for n in WIDTHS:
        empty = (np.zeros(n + 1, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))
        for bias in _placed(v, n, np.float32):
            for act in ACTS:
                chain = sparse.sparse_chain_prepare([(*empty, bias, act)], 4)
                got = sparse.sparse_chain_forward(x, chain, (np.full((3, n), 7, np.float32),))
                want = _twin("sparse_linear", x, *empty, bias, act, np.empty((3, n), np.float32))
                _check(got, want, v, act, f"sparse chain {sparse_isa}")


qgemm = pytest.importorskip("lepton_nn.kernels._qgemm")


@pytest.fixture(params=qgemm.supported_isas())
def qgemm_isa(request):
    before = qgemm.isa()
    assert qgemm.set_isa(request.param) == request.param
    yield request.param
    qgemm._reset_isas()
    qgemm.set_isa(before)


@pytest.mark.parametrize("v", VALUES, ids=VALUE_IDS)
def test_qlinear_epilogue(qgemm_isa, v):
    """out = act(acc * scale + bias) with zero weights (acc = 0): the bias carries the value."""
    rng = np.random.default_rng(3)
    for m, n in ((1, 31), (7, 31), (2, 3)):  # one row: the GEMV-shaped call
        x_q = rng.integers(0, 256, (m, 16)).astype(np.uint8)
        wp, cs = qgemm.pack_weights(np.zeros((n, 16), np.int8))
        w_scale = np.full(n, 0.01, np.float32)
        for bias in _placed(v, n, np.float32):
            for act in ACTS:
                got = np.full((m, n), 7, np.float32)
                qgemm.qlinear(x_q, np.float32(0.02), 3, wp, w_scale, cs, bias, act, got)
                want = np.empty((m, n), np.float32)
                _twin("qlinear", x_q, np.float32(0.02), 3, wp, w_scale, cs, bias, act, want)
                _check(got, want, v, act, f"qlinear {qgemm_isa} {m}x{n}")
