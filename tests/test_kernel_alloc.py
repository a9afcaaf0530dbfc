"""Compiled kernels whose scratch allocation fails raise MemoryError, never return an output
they did not write (csrc/alloc.h): each extension's test hook ``_fail_allocations(k)`` makes
its next k allocations fail (k < 0: all of them), so every out-of-memory path runs here
without exhausting memory. A path that falls back without scratch must give the same bits."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

from lepton_nn.backend.reference import ReferenceBackend

REF = ReferenceBackend()


@contextlib.contextmanager
def failing(mod, k=-1):
    """The next ``k`` scratch allocations of extension ``mod`` fail (all of them: k < 0)."""
    if not mod._fail_allocations(k):
        pytest.skip("the allocation hook is inert on this compiler")
    try:
        yield
    finally:
        mod._fail_allocations(0)


# ------------------------------------------------------------------ int8 GEMM (qgemm.h)
q = pytest.importorskip("lepton_nn.kernels._qgemm")


def _isas():
    paths = list(q.supported_isas())
    if "avx512vnni" in paths and "amx" not in paths:
        paths.append("amx-emulated")
    return paths


@pytest.fixture(params=_isas())
def isa(request):
    before = q.isa()
    name = request.param
    if name == "amx-emulated":
        assert q._use_emulation("amx")
    else:
        assert q.set_isa(name) == name
    yield name
    q._reset_isas()
    q.set_isa(before)


@pytest.fixture
def avx2():
    """The AVX2 path active (its tile kernel allocates and has no exact fallback)."""
    if "avx2" not in q.supported_isas():
        pytest.skip("no AVX2 here")
    before = q.isa()
    q.set_isa("avx2")
    yield
    q.set_isa(before)


def _qlinear_case(m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    packed, cs = q.pack_weights(w)
    ws = rng.uniform(0.001, 0.01, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    return x, packed, cs, ws, bias


def _qlinear(case, threads=1):
    x, packed, cs, ws, bias = case
    out = np.full((x.shape[0], ws.shape[0]), np.nan, np.float32)
    return q.qlinear(x, np.float32(0.02), 3, packed, ws, cs, bias, 1, out, threads)


# the paths that allocate scratch with no exact fallback: every other one must not fail
RAISES = {"avx2"}


@pytest.mark.parametrize(("m", "threads"), [(1, 1), (64, 1), (128, 2)])
def test_int8_gemm_without_scratch_raises_or_gives_the_same_bits(isa, m, threads):
    """m = 1: AVX2's GEMV (its scratch, then the tile kernel's); 64: the tile kernel; 128 x
    520 x 512 on 2 threads: the row and column tasks of the pool (qg_task). AMX falls back
    to the AVX-512 VNNI kernel: the same bits."""
    case = _qlinear_case(m, 520, 512)
    want = _qlinear(case, threads)
    assert not np.isnan(want).any()
    with failing(q):
        if isa in RAISES:
            with pytest.raises(MemoryError, match="qlinear"):
                _qlinear(case, threads)
            out = np.zeros((m, 512), np.int32)
            with pytest.raises(MemoryError, match="qgemm_s32"):
                q.qgemm_s32(case[0], case[1], out, case[2], threads)
        else:
            np.testing.assert_array_equal(_qlinear(case, threads), want)
    np.testing.assert_array_equal(_qlinear(case, threads), want)  # the hook disarmed


def test_avx2_gemv_without_its_scratch_falls_back_to_the_same_bits(avx2):
    """One row: the GEMV's scratch fails (the first allocation), the tile kernel gives the
    same bits; when the tile kernel's fails too (the second), MemoryError. Two rows go to
    the tile kernel at once: its first allocation failing is enough."""
    case = _qlinear_case(1, 300, 40, seed=1)
    want = _qlinear(case)
    with failing(q, 1):
        np.testing.assert_array_equal(_qlinear(case), want)
    with failing(q, 2), pytest.raises(MemoryError):
        _qlinear(case)
    case = _qlinear_case(2, 300, 40, seed=2)
    with failing(q, 1), pytest.raises(MemoryError):
        _qlinear(case)


def _qconv_case(geom, chw, f, n=5, seed=0):
    rng = np.random.default_rng(seed)
    kh, kw, sh, sw, ph, pw, dh, dw = geom
    c, h, w = chw
    oh = (h + 2 * ph - (kh - 1) * dh - 1) // sh + 1
    ow = (w + 2 * pw - (kw - 1) * dw - 1) // sw + 1
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    w_q = rng.integers(-128, 128, (f, kh * kw * c)).astype(np.int8)
    packed, cs = q.pack_weights(w_q)
    ws = rng.uniform(0.001, 0.01, f).astype(np.float32)
    head = (packed, ws, cs, None, 1, geom, oh, ow, None, None, None, 1)
    k = c * kh * kw

    def scratch():
        return (np.zeros(c * h * w, np.uint8), np.zeros(c * h * w, np.uint8),
                np.zeros((oh * ow, k), np.uint8), np.zeros((oh * ow, f), np.float32))  # fmt: skip

    def run(sets):
        y = np.full((n, f, oh * ow), np.nan, np.float32)
        return q.qconv2d_forward_threads(x, head, [scratch() for _ in range(sets)], (y,), sets)

    return run


@pytest.mark.parametrize(
    "geom,chw,f",
    [
        ((3, 3, 1, 1, 1, 1, 1, 1), (1, 8, 8), 8),  # K = 9: the direct path (its canvas)
        ((3, 3, 1, 1, 1, 1, 1, 1), (16, 6, 6), 20),  # K = 144: im2row + the int8 GEMM
    ],
)
@pytest.mark.parametrize("sets", [1, 2])
def test_int8_conv_without_scratch_raises(avx2, geom, chw, f, sets):
    """Before, the im2row path's GEMM returned without writing when its scratch failed: y
    kept whatever it held. Now both paths raise, on one task or two."""
    run = _qconv_case(geom, chw, f)
    want = run(sets)
    assert not np.isnan(want).any()
    with failing(q), pytest.raises(MemoryError, match="qconv2d_forward"):
        run(sets)
    np.testing.assert_array_equal(run(sets), want)


# ------------------------------------------------------------------ sparse (sparse.h)
def test_sparse_batch_kernel_without_scratch_raises():
    """The batch kernel's buffer (here above the per-thread cache's bound, so allocated on
    every call); the hook counts: two failing calls, then the third succeeds."""
    s = pytest.importorskip("lepton_nn.kernels._sparse")
    rng = np.random.default_rng(0)
    k, n = 70_000, 3  # K x 64 floats > the 16 MiB a thread keeps
    x = rng.standard_normal((4, k)).astype(np.float32)
    w = np.zeros((k, n), np.float32)
    w[rng.integers(0, k, 50), rng.integers(0, n, 50)] = 1.0
    indptr, indices, values = REF.to_csr(w)
    out = np.full((4, n), np.nan, np.float32)
    want = x.astype(np.float64) @ w.astype(np.float64)
    with failing(s, 2):
        for _ in range(2):
            with pytest.raises(MemoryError, match="sparse_linear"):
                s.sparse_linear(x, indptr, indices, values, None, 0, out, 2)
        s.sparse_linear(x, indptr, indices, values, None, 0, out, 2)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ training GEMM (gemm_train.h)
def test_training_gemm_without_scratch_raises():
    """A fresh thread holds no packing scratch: its first call allocates, and fails."""
    g = pytest.importorskip("lepton_nn.kernels._gemm")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 40), dtype=np.float32)
    b = rng.standard_normal((40, 70), dtype=np.float32)
    result = {}

    def call():
        out = np.full((30, 70), np.nan, np.float32)
        try:
            result["out"] = g.gemm(a, False, b, False, out, 1)
        except MemoryError as exc:
            result["error"] = exc

    with failing(g):
        t = threading.Thread(target=call)
        t.start()
        t.join()
    assert isinstance(result.get("error"), MemoryError) and "out" not in result
    t = threading.Thread(target=call)
    t.start()
    t.join()
    np.testing.assert_allclose(result["out"], a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ int8 recurrent (recurrent.pyx)
def test_int8_recurrent_without_scratch_raises():
    r = pytest.importorskip("lepton_nn.kernels._recurrent")
    if not r.q8_available():
        pytest.skip("recurrent_q8 needs AVX2 and FMA")
    rng = np.random.default_rng(0)
    t, b, f, u = 5, 6, 4, 9
    q_ih = rng.integers(-127, 128, (4 * u, f)).astype(np.int8)
    q_hh = rng.integers(-127, 128, (4 * u, u)).astype(np.int8)
    s_ih = np.full(4 * u, 0.004, np.float32)
    s_hh = np.full(4 * u, 0.002, np.float32)
    packed = REF.pack_recurrent_q8("LSTM", q_ih, s_ih, None, q_hh, s_hh, None)
    x = rng.standard_normal((t * b, f)).astype(np.float32)
    xq = np.zeros((t * b, f), np.uint8)
    xs, xzp = np.zeros(t * b, np.float32), np.zeros(t * b, np.int32)
    REF.quantize_rows(x, xq, xs, xzp)
    bounds = np.array([0, 3, b], np.int64)

    def run():
        h, c = np.zeros((2, b, u), np.float32), np.zeros((2, b, u), np.float32)
        r.recurrent_q8_threads("LSTM", xq.reshape(t, b, f), xs, xzp, packed, h, c, None, bounds,
                               False, 2)  # fmt: skip
        return h, c

    want = run()
    with failing(r), pytest.raises(MemoryError, match="recurrent_q8"):
        run()
    for got, w in zip(run(), want, strict=True):
        np.testing.assert_array_equal(got, w)
