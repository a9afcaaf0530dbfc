"""The sparse Dense chain (lepton_nn.kernels._sparse.sparse_chain_forward, csrc/sparse_chain.h):
a run of pruned layers in one call on the native pool, against sparse_linear layer by layer
(the same bits, at 1, 2 and 3 threads, on every ISA path), the dense float64 product and its
NumPy twin (ReferenceBackend.sparse_chain_forward)."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_nn.backend.reference import ReferenceBackend

s = pytest.importorskip("lepton_nn.kernels._sparse")
pool = pytest.importorskip("lepton_nn.kernels._pool")

REF = ReferenceBackend()
BATCHES = (0, 1, 2, 3, 17, 64, 65, 130)


@pytest.fixture(params=s.supported_isas())
def isa(request):
    before = s.isa()
    assert s.set_isa(request.param) == request.param
    yield request.param
    s.set_isa(before)


def _layers(rng, sizes, density=0.2, zero=()):
    """(w, b, act) per layer of widths sizes[0] -> sizes[1] -> ...; layers in ``zero`` all
    zero; a few empty output columns and dead inputs in every layer."""
    out = []
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.standard_normal((k, n)).astype(np.float32) * (rng.random((k, n)) < density)
        w[:, :: max(2, n // 3)] = 0  # columns with no weight: y = act(bias)
        w[:: max(2, k // 4), :] = 0  # inputs that feed nothing
        if i in zero:
            w[:] = 0
        b = rng.standard_normal(n).astype(np.float32) if i % 2 == 0 else None
        out.append((w, b, (1, 3, 0, 2, 4)[i % 5]))
    return out


def _specs(layers):
    return [(*s.to_csr(w), b, act) for w, b, act in layers]


def _by_layer(x, specs):
    """sparse_linear layer after layer (kernel 0: the chain's kernels)."""
    outs, h = [], x
    for spec in specs:
        out = np.full((x.shape[0], spec[0].shape[0] - 1), np.nan, np.float32)
        s.sparse_linear(h, *spec, out)
        outs.append(out)
        h = out
    return outs


def _dense(x, layers):
    h = x.astype(np.float64)
    for w, b, act in layers:
        z = h @ w.astype(np.float64) + (0 if b is None else b)
        h = [z, np.maximum(z, 0), 1 / (1 + np.exp(-z)), np.tanh(z),
             0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))][act]  # fmt: skip
    return h


def _run(chain, x):
    outs = tuple(np.full((x.shape[0], n), np.nan, np.float32) for n in chain.widths)
    got = s.sparse_chain_forward(x, chain, outs)
    assert got is outs[-1]
    return outs


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chain_is_sparse_linear_layer_by_layer_bit_for_bit(isa, threads):
    rng = np.random.default_rng(threads)
    for sizes, zero in (((37, 50, 17, 3), ()), ((129, 300, 1), (1,)), ((5, 1, 40), ())):
        layers = _layers(rng, sizes, zero=zero)
        specs = _specs(layers)
        chain = s.sparse_chain_prepare(specs, sizes[0], threads)
        assert chain.widths == tuple(sizes[1:]) and chain.threads == threads
        for B in BATCHES:
            x = rng.standard_normal((B, sizes[0])).astype(np.float32)
            outs = _run(chain, x)
            for l, (got, want) in enumerate(zip(outs, _by_layer(x, specs), strict=True)):
                np.testing.assert_array_equal(got, want, err_msg=f"{isa} {sizes} B={B} l={l}")
            if B:
                np.testing.assert_allclose(outs[-1], _dense(x, layers), rtol=1e-4, atol=1e-5)


def test_the_rows_path_for_several_rows_and_the_batch_path_from_two():
    rng = np.random.default_rng(1)
    layers = _layers(rng, (70, 90, 33))
    specs = _specs(layers)
    before = s.batch_min()
    try:
        for bmin in (1, 8, 1000):  # batch path from 1 row, rows path up to 7 or 999 rows
            s.set_batch_min(bmin)
            for threads in (1, 2):
                chain = s.sparse_chain_prepare(specs, 70, threads)
                for B in (1, 5, 64, 200):
                    x = rng.standard_normal((B, 70)).astype(np.float32)
                    outs = _run(chain, x)
                    for got, want in zip(outs, _by_layer(x, specs), strict=True):
                        np.testing.assert_array_equal(got, want)
    finally:
        s.set_batch_min(before)


def test_nan_and_inf_inputs_spread_as_in_sparse_linear():
    """NaN and inf where sparse_linear has them, the same bits elsewhere. (A NaN's sign may
    differ: x86 passes on the first NaN operand, and the vector and scalar loops order the
    FMA's operands differently; a tanh or sigmoid then maps the two signs apart, so the acts
    here are identity and ReLU.)"""
    rng = np.random.default_rng(2)
    layers = [(w, b, act) for (w, b, _), act in zip(_layers(rng, (40, 64, 10), 0.5), (0, 1))]
    specs = _specs(layers)
    for B in (1, 3, 70):
        x = rng.standard_normal((B, 40)).astype(np.float32)
        x[0, 3], x[-1, 7] = np.nan, np.inf
        x[B // 2, 11] = -np.inf
        for threads in (1, 2, 3):
            outs = _run(s.sparse_chain_prepare(specs, 40, threads), x)
            for got, want in zip(outs, _by_layer(x, specs), strict=True):
                np.testing.assert_array_equal(got, want)  # NaN where sparse_linear has NaN
            bad = ~np.isfinite(outs[0])
            assert bad[0].any() and bad[-1].any() and bad[B // 2].any()


def test_wide_inputs_past_uint16_indices():
    """K <= 65536 reads its indices as uint16 at batch 1, wider layers as int32: both the
    same bits as sparse_linear (index 65535 and indices past it)."""
    rng = np.random.default_rng(3)
    for k in (65536, 70001):
        w = np.zeros((k, 20), np.float32)
        rows = rng.integers(0, k, 300)
        w[rows, rng.integers(0, 20, 300)] = rng.standard_normal(300).astype(np.float32)
        w[k - 1, :] = 1.5
        specs = [(*s.to_csr(w), None, 0), (*s.to_csr(rng.standard_normal((20, 3))), None, 0)]
        x = rng.standard_normal((2, k)).astype(np.float32)
        for threads in (1, 2):
            chain = s.sparse_chain_prepare(specs, k, threads)
            for B in (1, 2):
                outs = _run(chain, x[:B])
                for got, want in zip(outs, _by_layer(x[:B], specs), strict=True):
                    np.testing.assert_array_equal(got, want)


def test_splits_cut_columns_by_nonzeros_on_16_column_bounds():
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 50, 1000)
    counts[:100] = 400  # a heavy head: equal column counts would be unbalanced
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    np.testing.assert_array_equal(s.chain_splits(indptr, 1), [0, 1000])
    for threads in (2, 3, 8):
        b = s.chain_splits(indptr, threads)
        assert b.dtype == np.int32 and b[0] == 0 and b[-1] == 1000
        assert (np.diff(b) >= 0).all() and (b[:-1] % 16 == 0).all()
        assert len(b) - 1 == 4 * threads
        work = np.diff(indptr[b])
        assert work.max() <= indptr[-1] / (4 * threads) + 16 * 400  # within a 16-column group
    np.testing.assert_array_equal(s.chain_splits(np.zeros(6, np.int32), 2), [0, 5])


def test_threads_run_on_the_shared_pool():
    rng = np.random.default_rng(5)
    specs = _specs(_layers(rng, (200, 300, 100), density=0.5))
    x = rng.standard_normal((1, 200)).astype(np.float32)
    for threads, phases in ((1, 0), (2, 2)):
        chain = s.sparse_chain_prepare(specs, 200, threads)
        before = pool.stats()
        _run(chain, x)
        after = pool.stats()
        jobs = after["jobs"] + after["alone"] - before["jobs"] - before["alone"]
        assert jobs == (1 if threads > 1 else 0)  # one job for the chain, a phase a layer
        if after["jobs"] > before["jobs"]:
            assert after["phases"] - before["phases"] == phases


def test_reference_twin_and_cython_backend_agree():
    from lepton_nn.backend.cython_backend import CythonBackend

    cb = CythonBackend()
    assert cb.sparse_chain_forward is s.sparse_chain_forward
    rng = np.random.default_rng(6)
    layers = _layers(rng, (30, 20, 9))
    specs = _specs(layers)
    for B in (1, 11, 80):
        x = rng.standard_normal((B, 30)).astype(np.float32)
        got = _run(cb.sparse_chain_prepare(specs, 30, 2), x)
        rc = REF.sparse_chain_prepare(specs, 30, 2)
        assert (rc.k, rc.widths, rc.threads) == (30, (20, 9), 2)
        want = tuple(np.empty((B, n), np.float32) for n in rc.widths)
        assert REF.sparse_chain_forward(x, rc, want) is want[-1]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_bad_chains_and_calls_are_python_errors():
    w = np.eye(4, 3, dtype=np.float32)
    ip, ix, va = s.to_csr(w)
    good = (ip, ix, va, None, 0)
    cases = [
        ([(ip, ix + 4, va, None, 0)], ValueError, "layer 0: invalid CSR"),  # index >= K
        ([good, (ip, ix + 1, va, None, 0)], ValueError, "layer 1: invalid CSR"),  # 3 >= N_0
        ([(ip[::-1].copy(), ix, va, None, 0)], ValueError, "invalid CSR"),  # decreasing
        ([(ip[:-1], ix, va, None, 0)], ValueError, "invalid CSR"),  # wrong length
        ([(ip, ix, va[:-1], None, 0)], ValueError, "differ in length"),
        ([(ip, ix, va, np.ones(2, np.float32), 0)], ValueError, "bias"),
        ([(ip, ix, va, None, 5)], ValueError, "act"),
        ([(ip.astype(np.int64), ix, va, None, 0)], TypeError, "int32"),
        ([good] * 17, ValueError, "1 to 16 layers"),
        ([], ValueError, "1 to 16 layers"),
        ([good[:4]], ValueError, "a spec is"),
    ]
    for specs, err, match in cases:
        with pytest.raises(err, match=match):
            s.sparse_chain_prepare(specs, 4)
    chain = s.sparse_chain_prepare([good], 4, 2)
    x = np.ones((2, 4), np.float32)
    out = np.empty((2, 3), np.float32)
    s.sparse_chain_forward(x, chain, (out,))
    np.testing.assert_array_equal(out, x @ w)
    buf = np.zeros(64, np.float32)
    calls = [
        ((np.ones((2, 5), np.float32), chain, (out,)), ValueError, "features"),
        ((x.astype(np.float64), chain, (out,)), TypeError, "float32"),
        ((x, chain, [out]), ValueError, "tuple"),
        ((x, chain, (out, out)), ValueError, "tuple of 1"),
        ((x, chain, (np.empty((3, 3), np.float32),)), ValueError, "shape"),
        ((x, chain, (np.empty((2, 3), np.float32)[:, ::-1],)), ValueError, "contiguous"),
        ((buf[:8].reshape(2, 4), chain, (buf[4:10].reshape(2, 3),)), ValueError, "shares"),
        ((x, (ip, ix, va), (out,)), TypeError, "SparseChain"),
    ]
    for args, err, match in calls:
        with pytest.raises(err, match=match):
            s.sparse_chain_forward(*args)
