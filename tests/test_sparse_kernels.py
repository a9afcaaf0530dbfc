"""Sparse Dense kernels (lepton_nn.kernels._sparse) against the dense result and their
reference twin, on every ISA path and both kernels (per-row and batch-innermost)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import PKG_PARENT

from lepton_nn.backend.reference import ReferenceBackend

s = pytest.importorskip("lepton_nn.kernels._sparse")

REF = ReferenceBackend()
# (kernel argument, rows variant): auto, per-row scalar / gather, batch-innermost
KERNELS = [(0, 1), (1, 1), (1, 0), (2, 1)]


@pytest.fixture(params=s.supported_isas())
def isa(request):
    before = s.isa()
    assert s.set_isa(request.param) == request.param
    yield request.param
    s.set_isa(before)


@pytest.fixture(params=KERNELS, ids=["auto", "rows", "rows-gather", "batch"])
def kernel(request):
    k, variant = request.param
    s._set_rows_variant(variant)
    yield k
    s._set_rows_variant(1)


def _dense_ref(x, w, b, act):
    """act(x @ w + b) in float64, written out."""
    z = x.astype(np.float64) @ w.astype(np.float64)
    if b is not None:
        z = z + b
    return [
        z,
        np.maximum(z, 0),
        1 / (1 + np.exp(-z)),
        np.tanh(z),
        0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))),
    ][act]


def _pruned(rng, K, N, density):
    w = rng.standard_normal((K, N)).astype(np.float32)
    return w * (rng.random((K, N)) < density)


@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_matches_dense_result(isa, kernel, density):
    rng = np.random.default_rng(int(density * 10))
    for B in (0, 1, 3, 17, 64, 65):
        for K, N in ((1, 1), (7, 5), (64, 33), (129, 40)):
            w = _pruned(rng, K, N, density)
            x = rng.standard_normal((B, K)).astype(np.float32)
            b = rng.standard_normal(N).astype(np.float32)
            indptr, indices, values = s.to_csr(w)
            out = np.full((B, N), np.nan, np.float32)
            s.sparse_linear(x, indptr, indices, values, b, 0, out, kernel)
            np.testing.assert_allclose(
                out,
                _dense_ref(x, w, b, 0),
                rtol=1e-5,
                atol=1e-5,
                err_msg=f"{isa} B={B} K={K} N={N}",
            )


@pytest.mark.parametrize("act", range(5))
def test_fused_bias_activation(isa, kernel, act):
    rng = np.random.default_rng(act)
    for B in (1, 5, 70):
        w = _pruned(rng, 50, 37, 0.3)
        x = rng.standard_normal((B, 50)).astype(np.float32)
        for b in (rng.standard_normal(37).astype(np.float32), None):
            out = np.empty((B, 37), np.float32)
            s.sparse_linear(x, *s.to_csr(w), b, act, out, kernel)
            np.testing.assert_allclose(out, _dense_ref(x, w, b, act), rtol=1e-5, atol=1e-5)


def test_empty_rows_and_columns(isa, kernel):
    rng = np.random.default_rng(7)
    w = _pruned(rng, 40, 30, 0.5)
    w[:, [0, 7, 29]] = 0  # output columns with no weight: y = act(bias)
    w[[0, 5, 39], :] = 0  # inputs that feed nothing
    x = rng.standard_normal((9, 40)).astype(np.float32)
    b = rng.standard_normal(30).astype(np.float32)
    indptr, indices, values = s.to_csr(w)
    assert indptr[1] == 0 and not np.isin(indices, [0, 5, 39]).any()
    out = np.empty((9, 30), np.float32)
    s.sparse_linear(x, indptr, indices, values, b, 2, out, kernel)
    np.testing.assert_allclose(out, _dense_ref(x, w, b, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 0], 1 / (1 + np.exp(-b[0])), rtol=1e-6)


def test_zero_and_full_density_and_empty_shapes():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    # 100 % sparsity: nnz = 0
    indptr, indices, values = s.to_csr(np.zeros((6, 3), np.float32))
    assert indices.size == 0 and (indptr == 0).all()
    out = np.empty((4, 3), np.float32)
    s.sparse_linear(x, indptr, indices, values, np.ones(3, np.float32), 0, out)
    np.testing.assert_array_equal(out, 1)
    # 0 % sparsity: every entry kept, equals the dense product
    w = rng.standard_normal((6, 3)).astype(np.float32)
    s.sparse_linear(x, *s.to_csr(w), None, 0, out)
    np.testing.assert_allclose(out, x @ w, rtol=1e-5, atol=1e-6)
    # N = 0 and K = 0
    s.sparse_linear(
        x, *s.to_csr(np.zeros((6, 0), np.float32)), None, 0, np.empty((4, 0), np.float32)
    )
    out = np.empty((4, 2), np.float32)
    s.sparse_linear(
        np.empty((4, 0), np.float32),
        *s.to_csr(np.zeros((0, 2), np.float32)),
        np.float32([1, 2]),
        0,
        out,
    )
    np.testing.assert_array_equal(out, [[1, 2]] * 4)


def test_to_csr_roundtrip_and_reference_twin():
    rng = np.random.default_rng(9)
    for K, N in ((1, 1), (7, 5), (64, 33)):
        w = _pruned(rng, K, N, 0.4)
        got, want = s.to_csr(w), REF.to_csr(w)
        for g, r in zip(got, want):
            np.testing.assert_array_equal(g, r)
            assert g.dtype == r.dtype
        np.testing.assert_array_equal(s.to_dense(*got, K), w)
    w = np.float32([[0.05, -0.2], [0.5, 0.01]])
    indptr, indices, values = s.to_csr(w, threshold=0.1)
    np.testing.assert_array_equal(indptr, [0, 1, 2])
    np.testing.assert_array_equal(indices, [1, 0])
    np.testing.assert_array_equal(values, np.float32([0.5, -0.2]))


def test_reference_twin_and_cython_backend_agree():
    from lepton_nn.backend.cython_backend import CythonBackend

    cb = CythonBackend()
    assert cb.sparse_linear is s.sparse_linear
    rng = np.random.default_rng(10)
    w = _pruned(rng, 30, 20, 0.2)
    x = rng.standard_normal((11, 30)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    csr = REF.to_csr(w)
    outs = [np.empty((11, 20), np.float32) for _ in range(2)]
    REF.sparse_linear(x, *csr, b, 4, outs[0])
    cb.sparse_linear(x, *csr, b, 4, outs[1])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_bad_input_is_a_python_error():
    w = np.eye(4, 3, dtype=np.float32)
    indptr, indices, values = s.to_csr(w)
    x = np.ones((2, 4), np.float32)
    out = np.empty((2, 3), np.float32)
    s.sparse_linear(x, indptr, indices, values, None, 0, out)
    cases = [
        ((x, indptr, indices + 4, values, None, 0, out), ValueError),  # index >= K
        ((x, indptr, indices - 1, values, None, 0, out), ValueError),  # negative index
        ((x, indptr[::-1].copy(), indices, values, None, 0, out), ValueError),  # decreasing
        ((x, indptr + 1, indices, values, None, 0, out), ValueError),  # does not start at 0
        ((x, indptr[:-1], indices, values, None, 0, out), ValueError),  # wrong length
        ((x, indptr, indices, values[:-1], None, 0, out), ValueError),  # values length
        ((x, indptr.astype(np.int64), indices, values, None, 0, out), TypeError),
        ((x.astype(np.float64), indptr, indices, values, None, 0, out), TypeError),
        ((np.ones((2, 8), np.float32)[:, ::2], indptr, indices, values, None, 0, out), ValueError),
        ((x, indptr, indices, values, np.ones(2, np.float32), 0, out), ValueError),  # bias
        ((x, indptr, indices, values, None, 5, out), ValueError),  # act
        ((x, indptr, indices, values, None, 0, np.empty((3, 3), np.float32)), ValueError),
    ]
    for args, err in cases:
        with pytest.raises(err):
            s.sparse_linear(*args)
    with pytest.raises(ValueError):
        s.sparse_linear(x, indptr, indices, values, None, 0, out, 3)


def test_check_false_skips_only_the_structure_scan():
    import inspect

    w = np.eye(4, 3, dtype=np.float32)
    indptr, indices, values = s.to_csr(w)
    x = np.ones((2, 4), np.float32)
    out = np.empty((2, 3), np.float32)
    bad = indptr.copy()
    bad[0] = 1  # an invalid structure that cannot read out of bounds
    with pytest.raises(ValueError, match="invalid CSR"):
        s.sparse_linear(x, bad, indices, values, None, 0, out)
    with pytest.raises(ValueError, match="invalid CSR"):
        s.sparse_linear(x, bad, indices, values, None, 0, out, check=True)
    s.sparse_linear(x, bad, indices, values, None, 0, out, 0, False)  # not scanned
    s.sparse_linear(x, indptr, indices, values, None, 0, out, check=False)
    np.testing.assert_array_equal(out, x @ w)
    with pytest.raises(TypeError):  # the cheap checks stay
        s.sparse_linear(x.astype(np.float64), indptr, indices, values, None, 0, out, 0, False)
    params = list(inspect.signature(REF.sparse_linear).parameters)
    assert params[-2:] == ["kernel", "check"]  # same signature as the compiled kernel
    ref_out = np.empty_like(out)
    REF.sparse_linear(x, indptr, indices, values, None, 0, ref_out, 0, False)
    np.testing.assert_array_equal(ref_out, out)


def test_to_csr_keeps_nans_like_the_dense_product():
    w = np.float32([[0, np.nan], [1, 0]])
    for be in (s, REF):
        indptr, indices, values = be.to_csr(w)
        np.testing.assert_array_equal(indptr, [0, 1, 2])
        np.testing.assert_array_equal(indices, [1, 0])
        np.testing.assert_array_equal(values, np.float32([1, np.nan]))


def test_lepton_isa_env_maps_onto_the_sparse_paths():
    root = str(PKG_PARENT)
    code = "from lepton_nn.kernels import _sparse as s; print(s.isa())"
    got = {}
    for value in ("portable", "avx2", "amx"):
        env = dict(os.environ, LEPTON_ISA=value)
        res = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            cwd=root,
            check=True,
        )
        got[value] = res.stdout.strip()
    assert got["portable"] == "portable"
    assert got["amx"] == s.supported_isas()[0]
    if "avx2" in s.supported_isas():
        assert got["avx2"] == "avx2"
