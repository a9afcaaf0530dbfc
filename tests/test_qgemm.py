"""int8 GEMM kernels (lepton_nn.kernels._qgemm) against their int64 / NumPy reference twins.

Every ISA path usable on this machine runs, plus the emulated AMX driver and the EVEX twin
of the AVX-VNNI driver where the CPU has AVX-512 VNNI (their blocking and epilogue logic,
not their tile / VEX instructions).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import PKG_PARENT

from lepton_nn.backend.reference import ReferenceBackend

q = pytest.importorskip("lepton_nn.kernels._qgemm")

REF = ReferenceBackend()
MS, KS, NS = (0, 1, 3, 64, 65), (1, 7, 64, 129), (1, 5, 33)
EMULATED = ("amx", "avxvnni")


def _paths():
    paths = list(q.supported_isas())
    if "avx512vnni" in paths:
        paths += [f"{name}-emulated" for name in EMULATED if name not in paths]
    return paths


@pytest.fixture(params=_paths())
def isa(request):
    """Make one path active for the test, then restore the import-time choice."""
    before = q.isa()
    name = request.param
    if name.endswith("-emulated"):
        assert q._use_emulation(name.removesuffix("-emulated"))
    else:
        assert q.set_isa(name) == name
    yield name
    q._reset_isas()
    q.set_isa(before)


def _rand_act(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _int64_ref(a, w):
    return a.astype(np.int64) @ w.astype(np.int64).T


def test_isa_reporting():
    paths = q.supported_isas()
    assert paths[-1] == "portable" and q.isa() in paths
    assert set(paths) <= set(q.ISAS)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qgemm_s32_exact_all_shapes(isa, dtype):
    rng = np.random.default_rng(1)
    for M in MS:
        for K in KS:
            for N in NS:
                a = _rand_act(rng, dtype, (M, K))
                w = _rand_act(rng, np.int8, (N, K))
                wp, cs = q.pack_weights(w)
                out = np.full((M, N), -7, np.int32)
                q.qgemm_s32(a, wp, out, cs)
                np.testing.assert_array_equal(out, _int64_ref(a, w), err_msg=f"{isa} {M}x{K}x{N}")


@pytest.mark.parametrize(
    "a_val,w_val,dtype",
    [
        (255, 127, np.uint8),
        (255, -128, np.uint8),
        (0, -128, np.uint8),
        (-128, -128, np.int8),
        (127, 127, np.int8),
        (-128, 127, np.int8),
    ],
)
def test_saturating_extremes(isa, a_val, w_val, dtype):
    """Pairs like 255 * 127 + 255 * 127 overflow int16 (vpmaddubsw would saturate)."""
    M, N, K = 5, 17, 4099  # 255 * 128 * 4099 is far beyond int16, well inside int32
    a = np.full((M, K), a_val, dtype)
    w = np.full((N, K), w_val, np.int8)
    wp, cs = q.pack_weights(w)
    out = np.zeros((M, N), np.int32)
    q.qgemm_s32(a, wp, out, cs)
    np.testing.assert_array_equal(out, _int64_ref(a, w))
    # and through the zero-point path: (a - zp) with the extreme zero point of the range
    zp = 0 if dtype == np.uint8 else 127
    res = np.zeros((M, N), np.float32)
    q.qlinear(a, np.float32(1), zp, wp, np.ones(N, np.float32), cs, None, 0, res)
    exact = ((a.astype(np.int64) - zp) @ w.astype(np.int64).T).astype(np.float32)
    np.testing.assert_array_equal(res, exact)


def test_k_tail_reads_no_neighbour_bytes(isa):
    """K % 4 != 0: the last group must not mix in bytes of the next row."""
    rng = np.random.default_rng(2)
    for K in (1, 2, 3, 5, 63, 65):
        a = _rand_act(rng, np.uint8, (9, K))
        w = _rand_act(rng, np.int8, (20, K))
        wp, _ = q.pack_weights(w)
        out = np.zeros((9, 20), np.int32)
        np.testing.assert_array_equal(q.qgemm_s32(a, wp, out), _int64_ref(a, w))


ACTS = range(5)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_epilogue_matches_reference(isa, act, per_row, dtype):
    rng = np.random.default_rng(3 + act)
    for M, K, N in ((1, 7, 5), (3, 64, 33), (65, 129, 33), (64, 1, 1)):
        x_q = _rand_act(rng, dtype, (M, K))
        w = _rand_act(rng, np.int8, (N, K))
        wp, cs = q.pack_weights(w)
        w_scale = (rng.uniform(0.5, 2, N) / (64 * np.sqrt(K))).astype(np.float32)
        bias = rng.standard_normal(N).astype(np.float32)
        lo, hi = (0, 256) if dtype == np.uint8 else (-128, 128)
        if per_row:
            xs = rng.uniform(0.005, 0.02, M).astype(np.float32)
            zp = rng.integers(lo, hi, M).astype(np.int32)
        else:
            xs, zp = np.float32(0.01), int(rng.integers(lo, hi))
        for b in (bias, None):
            out = np.full((M, N), np.nan, np.float32)
            want = np.empty((M, N), np.float32)
            q.qlinear(x_q, xs, zp, wp, w_scale, cs, b, act, out)
            REF.qlinear(x_q, xs, zp, wp, w_scale, cs, b, act, want)
            np.testing.assert_allclose(out, want, rtol=2e-6, atol=2e-6, err_msg=f"{isa} act={act}")


def test_qlinear_identity_is_exact_sum_times_scale(isa):
    rng = np.random.default_rng(4)
    x_q = _rand_act(rng, np.uint8, (7, 300))
    w = _rand_act(rng, np.int8, (40, 300))
    wp, cs = q.pack_weights(w)
    ws = np.full(40, 0.5, np.float32)  # powers of two: every product is exact
    out = np.zeros((7, 40), np.float32)
    q.qlinear(x_q, np.float32(0.25), 100, wp, ws, cs, None, 0, out)
    acc = (x_q.astype(np.int64) - 100) @ w.astype(np.int64).T
    np.testing.assert_array_equal(out, (acc * 0.125).astype(np.float32))


@pytest.mark.parametrize("per_row", [False, True])
def test_quantize_rows_bit_identical(isa, per_row):
    rng = np.random.default_rng(5)
    for M, K in ((1, 1), (3, 7), (5, 33), (64, 129), (2, 1000)):
        x = (rng.standard_normal((M, K)) * rng.uniform(0.1, 10)).astype(np.float32)
        x[0] = np.abs(x[0])  # a row that is all >= 0
        if M > 2:
            x[1] = 3.0  # a constant row
            x[2] = 0.0  # an all-zero row: scale 1, zero point 0
        n = M if per_row else 1
        got = (np.empty((M, K), np.uint8), np.empty(n, np.float32), np.empty(n, np.int32))
        want = (np.empty((M, K), np.uint8), np.empty(n, np.float32), np.empty(n, np.int32))
        q.quantize_rows(x, *got)
        REF.quantize_rows(x, *want)
        for g, r in zip(got, want):
            np.testing.assert_array_equal(g, r, err_msg=f"{isa} {M}x{K}")


def _static_numpy(x, scale, zp):
    """The runtime's former static quantization (five NumPy calls), NaN defined as 0."""
    with np.errstate(over="ignore"):
        tmp = np.multiply(x, np.float32(1) / np.float32(scale))
    np.rint(tmp, tmp)
    np.add(tmp, np.float32(zp), tmp)
    np.clip(tmp, 0, 255, tmp)
    tmp[np.isnan(tmp)] = 0
    return tmp.astype(np.uint8)


def _static_inputs(rng, M, K, scale):
    x = (rng.standard_normal((M, K)) * 200 * scale).astype(np.float32)
    flat = x.reshape(-1)
    n = flat.size
    # exact ties x * (1 / scale) = j + 0.5 (scale a power of 2 makes 1 / scale exact)
    flat[: n // 4] = (rng.integers(-300, 300, n // 4) + 0.5) * np.float32(scale)
    special = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e12, -1e12, 0.0, -0.0], np.float32)
    idx = rng.choice(n, min(n, 3 * special.size), replace=False)
    flat[idx] = np.resize(special, idx.size)
    return x


@pytest.mark.parametrize("per_row", [False, True])
def test_quantize_rows_fixed_bit_identical(isa, per_row):
    """Static quantization (fixed scale / zero point) matches the reference twin on every path:
    ties at .5 (half to even), values beyond the clip range and +-inf saturate, NaN -> 0."""
    rng = np.random.default_rng(11)
    for scale, zp in ((0.25, 128), (0.0625, 0), (0.1, 255), (3.7e-3, 17), (1.0, 0)):
        for M, K in ((1, 1), (1, 26), (3, 7), (5, 33), (64, 129), (2, 1000)):
            x = _static_inputs(rng, M, K, scale)
            n = M if per_row else 1
            s = np.full(n, scale, np.float32)
            z = np.full(n, zp, np.int32)
            if per_row and M > 1:
                s *= rng.uniform(0.5, 2, n).astype(np.float32)
                z[:] = rng.integers(0, 256, n)
            s.flags.writeable = z.flags.writeable = False  # read only in fixed mode
            got, want = np.empty((M, K), np.uint8), np.empty((M, K), np.uint8)
            assert q.quantize_rows(x, got, s, z, True) is got
            REF.quantize_rows(x, want, s, z, fixed=True)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} {M}x{K} s={scale}")
            if not per_row or M == 1:  # the former NumPy formula, bit for bit
                np.testing.assert_array_equal(got, _static_numpy(x, s[0], z[0]))


def test_quantize_rows_fixed_rules(isa):
    """The rounding rule spelled out: half to even, saturation, NaN -> 0."""
    x = np.array(
        [[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, 1e30, -1e30, np.inf, -np.inf, np.nan]],
        np.float32,
    )
    s, z = np.ones(1, np.float32), np.array([100], np.int32)
    want = [100, 102, 102, 100, 98, 98, 226, 228, 255, 0, 255, 0, 0]
    for xx, ww in ((x, want), (np.tile(x, (1, 7)), want * 7)):  # SIMD body and scalar tail
        got = np.empty(xx.shape, np.uint8)
        q.quantize_rows(xx, got, s, z, True)
        assert got.ravel().tolist() == ww
        REF.quantize_rows(xx, got, s, z, True)
        assert got.ravel().tolist() == ww


def test_quantize_rows_fixed_validation():
    x = np.zeros((2, 3), np.float32)
    xq = np.empty((2, 3), np.uint8)
    z = np.zeros(1, np.int32)
    for bad in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="finite scale > 0"):
            q.quantize_rows(x, xq, np.array([bad], np.float32), z, True)
    for bad in (-1, 256):
        with pytest.raises(ValueError, match="zero_point in"):
            q.quantize_rows(x, xq, np.ones(1, np.float32), np.array([bad], np.int32), True)
    with pytest.raises(ValueError, match="writeable"):  # dynamic mode writes them
        s = np.ones(1, np.float32)
        s.flags.writeable = False
        q.quantize_rows(x, xq, s, z)
    # M = 0: nothing to do, the fixed pair is left alone
    s, z = np.full(1, 0.5, np.float32), np.full(1, 7, np.int32)
    q.quantize_rows(np.zeros((0, 3), np.float32), np.empty((0, 3), np.uint8), s, z, True)
    assert s[0] == 0.5 and z[0] == 7


def test_quantize_rows_empty():
    x = np.zeros((0, 4), np.float32)
    qv, s, z = np.empty((0, 4), np.uint8), np.zeros(1, np.float32), np.ones(1, np.int32)
    q.quantize_rows(x, qv, s, z)
    assert s[0] == 1 and z[0] == 0


def test_dynamic_int8_dense_close_to_float():
    """quantize_rows + qlinear approximates act(x @ W.T + b) within the quantization error."""
    rng = np.random.default_rng(6)
    M, K, N = 32, 256, 48
    x = rng.standard_normal((M, K)).astype(np.float32)
    W = (rng.standard_normal((N, K)) / np.sqrt(K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    w_q, w_scale = q.quantize_weights(W)
    wp, cs = q.pack_weights(w_q)
    x_q, xs, zp = np.empty((M, K), np.uint8), np.empty(M, np.float32), np.empty(M, np.int32)
    q.quantize_rows(x, x_q, xs, zp)
    out = np.empty((M, N), np.float32)
    q.qlinear(x_q, xs, zp, wp, w_scale, cs, b, 1, out)
    want = np.maximum(x @ W.T + b, 0)
    assert np.abs(out - want).max() < 0.05 * np.abs(want).max()


def test_pack_roundtrip_and_reference_layout():
    rng = np.random.default_rng(7)
    for N, K in ((1, 1), (5, 7), (33, 129), (16, 64)):
        w = _rand_act(rng, np.int8, (N, K))
        wp, cs = q.pack_weights(w)
        rp, rcs = REF.qpack_weights(w)
        np.testing.assert_array_equal(wp, rp)
        np.testing.assert_array_equal(cs, rcs)
        assert wp.shape == ((N + 15) // 16, (K + 3) // 4, 64)
        np.testing.assert_array_equal(q.unpack_weights(wp, N, K), w)


def test_two_threads_same_result():
    rng = np.random.default_rng(8)
    for N in (16, 33, 100):
        a = _rand_act(rng, np.uint8, (70, 129))
        w = _rand_act(rng, np.int8, (N, 129))
        wp, cs = q.pack_weights(w)
        one, two = np.zeros((70, N), np.int32), np.zeros((70, N), np.int32)
        q.qgemm_s32(a, wp, one, nthreads=1)
        q.qgemm_s32(a, wp, two, nthreads=2)
        np.testing.assert_array_equal(one, two)
        np.testing.assert_array_equal(one, _int64_ref(a, w))


def test_two_threads_on_products_large_enough_to_split():
    """Above 2**25 multiply-adds the columns go to a helper thread kept between calls: the
    same result, also when several callers share the helper (a busy one: the caller runs
    alone) and in a forked child (which starts a helper of its own)."""
    import threading

    rng = np.random.default_rng(9)
    a = _rand_act(rng, np.uint8, (256, 1024))
    w = _rand_act(rng, np.int8, (150, 1024))  # 10 column blocks, the last one partial
    assert 256 * 1024 * 150 >= 2**25
    wp, _ = q.pack_weights(w)
    want = _int64_ref(a, w)
    outs = [np.zeros((256, 150), np.int32) for _ in range(6)]
    q.qgemm_s32(a, wp, outs[0], nthreads=2)
    np.testing.assert_array_equal(outs[0], want)
    runs = [
        threading.Thread(target=q.qgemm_s32, args=(a, wp, out), kwargs={"nthreads": 2})
        for out in outs[1:]
    ]
    for r in runs:
        r.start()
    for r in runs:
        r.join()
    for out in outs:
        np.testing.assert_array_equal(out, want)
    if hasattr(os, "fork"):
        pid = os.fork()
        if pid == 0:  # the child: a helper of its own, or a hang (the test times out)
            out = np.zeros((256, 150), np.int32)
            q.qgemm_s32(a, wp, out, nthreads=2)
            os._exit(0 if np.array_equal(out, want) else 1)
        import time

        deadline = time.monotonic() + 60
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert done[0] == pid and done[1] == 0, "the forked child hung or failed"


def test_bad_input_is_a_python_error():
    w = np.ones((5, 8), np.int8)
    wp, cs = q.pack_weights(w)
    x = np.ones((3, 8), np.uint8)
    out = np.zeros((3, 5), np.float32)
    ws = np.ones(5, np.float32)
    ok = (x, 1.0, 0, wp, ws, cs, None, 0, out)
    q.qlinear(*ok)
    bad = [
        (0, x.astype(np.float32), TypeError),  # dtype
        (0, np.ones((3, 16), np.uint8)[:, ::2], ValueError),  # not contiguous
        (0, np.ones((3, 9), np.uint8), ValueError),  # K mismatch with packing
        (3, wp[:, :1], ValueError),  # packed shape
        (4, np.ones(4, np.float32), ValueError),  # w_scale length
        (5, cs.astype(np.int64), TypeError),  # col sums dtype
        (6, np.ones(2, np.float32), ValueError),  # bias length
        (7, 9, ValueError),  # act code
        (8, np.zeros((3, 5), np.float64), TypeError),  # out dtype
        (8, np.zeros((2, 5), np.float32), ValueError),  # out rows
        (2, 300, ValueError),  # zero point out of the uint8 range
        (1, np.ones(2, np.float32), ValueError),  # x_scale length
    ]
    for pos, value, err in bad:
        args = list(ok)
        args[pos] = value
        with pytest.raises(err):
            q.qlinear(*args)
    with pytest.raises(ValueError):
        q.qgemm_s32(x.astype(np.int8), wp, np.zeros((3, 5), np.int32))  # int8 needs col sums
    with pytest.raises(ValueError):
        q.quantize_rows(
            np.ones((3, 8), np.float32),
            np.zeros((3, 8), np.uint8),
            np.zeros(2, np.float32),
            np.zeros(2, np.int32),
        )
    big = np.zeros((1, q.K_MAX + 1), np.uint8)
    wbig, _ = q.pack_weights(np.zeros((1, q.K_MAX + 1), np.int8))
    with pytest.raises(ValueError):
        q.qgemm_s32(big, wbig, np.zeros((1, 1), np.int32))
    with pytest.raises(ValueError):
        q.set_isa("sse9")


def _isa_in_subprocess(value):
    env = dict(os.environ, LEPTON_ISA=value)
    code = "from lepton_nn.kernels import _qgemm as q; print(q.isa())"
    root = str(PKG_PARENT)
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=root, check=True
    )
    return res.stdout.strip()


def test_lepton_isa_env_forces_a_lower_path_never_a_higher_one():
    best = q.supported_isas()[0]
    assert _isa_in_subprocess("portable") == "portable"
    assert _isa_in_subprocess("amx") == best  # never above what the CPU has
    if "avx2" in q.supported_isas():
        assert _isa_in_subprocess("avx2") == "avx2"
    if "avx512vnni" not in q.supported_isas():
        assert _isa_in_subprocess("avx512vnni") == best


def test_cython_backend_binds_the_kernels():
    from lepton_nn.backend.cython_backend import CythonBackend

    cb = CythonBackend()
    assert cb.qlinear is q.qlinear and cb.quantize_rows is q.quantize_rows
    rng = np.random.default_rng(9)
    x_q = _rand_act(rng, np.uint8, (4, 20))
    w = _rand_act(rng, np.int8, (6, 20))
    wp, cs = cb.qpack_weights(w)
    outs = []
    for backend in (cb, REF):
        out = np.empty((4, 6), np.float32)
        backend.qlinear(x_q, 0.1, 3, wp, np.full(6, 0.01, np.float32), cs, None, 3, out)
        outs.append(out)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ int8 convolution
# (kh, kw, sh, sw, ph, pw, dh, dw), (C, H, W), F, pool: None or (kh, kw, sh, sw, ph, pw)
QCONV_CASES = [
    ((3, 3, 1, 1, 1, 1, 1, 1), (1, 9, 8), 16, (2, 2, 2, 2, 0, 0)),  # the first conv of a CNN
    ((3, 3, 1, 1, 1, 1, 1, 1), (16, 7, 7), 33, None),  # C > 1, F not a multiple of 16
    ((3, 2, 2, 1, 0, 2, 1, 2), (3, 9, 10), 5, (3, 3, 2, 2, 1, 1)),  # padded pool windows
    ((1, 1, 1, 1, 0, 0, 1, 1), (6, 5, 4), 17, None),  # 1x1
    ((5, 3, 2, 3, 2, 0, 1, 1), (2, 11, 9), 8, (2, 3, 1, 2, 0, 1)),
    ((2, 2, 1, 1, 3, 3, 2, 3), (4, 3, 3), 20, None),  # windows wholly in the padding
    # on AVX-512, K <= 64 with stride 1 along x takes the direct path (cases 0, 2, 3, 5 too)
    ((3, 3, 1, 1, 1, 1, 1, 1), (2, 6, 70), 13, (2, 2, 2, 2, 0, 0)),  # row tails, 13 filters
    ((3, 3, 1, 1, 0, 0, 1, 1), (7, 6, 9), 20, (2, 2, 2, 2, 0, 0)),  # K = 63: direct
    ((1, 5, 1, 1, 0, 2, 1, 1), (13, 4, 6), 9, None),  # K = 65: the GEMM again
]


def _qconv_inputs(rng, geom, chw, f, pool, n=3):
    kh, kw, sh, sw, ph, pw, dh, dw = geom
    c, h, w = chw
    oh = (h + 2 * ph - (kh - 1) * dh - 1) // sh + 1
    ow = (w + 2 * pw - (kw - 1) * dw - 1) // sw + 1
    x = (rng.standard_normal((n, c, h, w)) * 2 + 0.5).astype(np.float32)
    w_q = _rand_act(rng, np.int8, (f, c, kh, kw))
    rows_order = np.ascontiguousarray(w_q.transpose(0, 2, 3, 1).reshape(f, -1))  # (ky, kx, c)
    packed, col_sums = REF.qpack_weights(rows_order)
    w_scale = rng.uniform(0.001, 0.01, f).astype(np.float32)
    full = None
    if pool is not None:
        pkh, pkw, psh, psw, pph, ppw = pool
        full = (*pool, (oh + 2 * pph - pkh) // psh + 1, (ow + 2 * ppw - pkw) // psw + 1)
    return x, w_q, packed, col_sums, w_scale, oh, ow, full


def _qconv(be, x, packed, col_sums, w_scale, bias, act, geom, oh, ow, pool, static, step=1):
    n, c, h, w = x.shape
    f, k = w_scale.shape[0], c * geom[0] * geom[1]
    y = np.full((n, f, oh * ow if pool is None else pool[6] * pool[7]), np.nan, np.float32)
    xs, xz = (np.array([0.02], np.float32), np.array([100], np.int32)) if static else (None, None)
    scratch = (np.zeros(c * h * w, np.uint8), np.zeros(c * h * w, np.uint8),
               np.full((oh * ow, k), 7, np.uint8), np.zeros((oh * ow, f), np.float32))  # fmt: skip
    return be.qconv2d_forward_chunks(x, packed, w_scale, col_sums, bias, act, geom, oh, ow, pool,
                                     xs, xz, step, np.zeros(1, np.int64), *scratch, y)  # fmt: skip


@pytest.mark.parametrize("case", range(len(QCONV_CASES)))
@pytest.mark.parametrize("static", [False, True])
def test_qconv_chunks_match_reference(isa, case, static):
    """Every ISA path against the NumPy twin: exact without bias (identity, relu), within
    float32 rounding of the fused multiply-add otherwise."""
    geom, chw, f, pool = QCONV_CASES[case]
    rng = np.random.default_rng(case)
    x, _, packed, cs, ws, oh, ow, pool = _qconv_inputs(rng, geom, chw, f, pool)
    bias = rng.standard_normal(f).astype(np.float32)
    for act in ACTS:
        for b in (None, bias):
            args = (x, packed, cs, ws, b, act, geom, oh, ow, pool, static)
            got, want = _qconv(q, *args, step=2), _qconv(REF, *args)
            if b is None and act in (0, 1):
                np.testing.assert_array_equal(got, want, err_msg=f"{isa} act={act}")
            else:
                np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6, err_msg=f"{isa} {act}")


@pytest.mark.parametrize("static", [False, True])
def test_qconv_chunks_equal_the_im2col_product(static):
    """An independent formulation: float im2col in its (c, ky, kx) order, each image's
    quantization applied to its columns, the int64 product with the unpermuted weights,
    dequantized in float64. Same integers, so the results agree to float32 rounding."""
    for case, (geom, chw, f, _) in enumerate(QCONV_CASES):
        rng = np.random.default_rng(10 + case)
        x, w_q, packed, cs, ws, oh, ow, _ = _qconv_inputs(rng, geom, chw, f, None)
        bias = rng.standard_normal(f).astype(np.float32)
        got = _qconv(q, x, packed, cs, ws, bias, 0, geom, oh, ow, None, static)
        n, c = x.shape[:2]
        k = c * geom[0] * geom[1]
        cols = REF.im2col(x, *geom, np.zeros((n, k, oh, ow), np.float32)).reshape(n, k, -1)
        for i in range(n):
            s, z = (np.float32(0.02), 100) if static else (None, None)
            if s is None:  # the image's own pair: lo = min(0, x), hi = max(0, x)
                lo, hi = min(0.0, x[i].min()), max(0.0, x[i].max())
                s = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255))
                z = int(np.clip(np.rint(-np.float32(lo) / s), 0, 255))
            qc = np.clip(np.rint(cols[i] * (np.float32(1) / s)) + z, 0, 255)
            acc = w_q.reshape(f, k).astype(np.int64) @ (qc.astype(np.int64) - z)  # (F, P)
            want = acc * (np.float64(s) * ws[:, None].astype(np.float64)) + bias[:, None]
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5, err_msg=f"case {case}")


def test_qconv_chunks_threads_share_a_counter():
    """Two threads, one counter, their own scratch: every image done once, as by one call."""
    import threading

    geom, chw, f, pool = QCONV_CASES[2]
    rng = np.random.default_rng(5)
    x, _, packed, cs, ws, oh, ow, pool = _qconv_inputs(rng, geom, chw, f, pool, n=41)
    want = _qconv(q, x, packed, cs, ws, None, 1, geom, oh, ow, pool, False)
    n, c, h, w = x.shape
    y = np.full_like(want, np.nan)
    counter = np.zeros(1, np.int64)

    def run():
        scratch = (np.zeros(c * h * w, np.uint8), np.zeros(c * h * w, np.uint8),
                   np.zeros((oh * ow, c * geom[0] * geom[1]), np.uint8),
                   np.zeros((oh * ow, f), np.float32))  # fmt: skip
        q.qconv2d_forward_chunks(x, packed, ws, cs, None, 1, geom, oh, ow, pool, None, None, 3,
                                 counter, *scratch, y)  # fmt: skip

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(y, want)
    assert counter[0] >= -(-n // 3)


def test_qconv_chunks_bad_input_is_a_python_error():
    geom, chw, f, _ = QCONV_CASES[1]
    rng = np.random.default_rng(6)
    x, _, packed, cs, ws, oh, ow, _ = _qconv_inputs(rng, geom, chw, f, None)
    c, h, w = chw
    p, k = oh * ow, c * 9
    ok = [x, packed, ws, cs, None, 1, geom, oh, ow, None, None, None, 1, np.zeros(1, np.int64),
          np.zeros(c * h * w, np.uint8), np.zeros(c * h * w, np.uint8), np.zeros((p, k), np.uint8),
          np.zeros((p, f), np.float32), np.zeros((3, f, p), np.float32)]  # fmt: skip
    q.qconv2d_forward_chunks(*ok)
    bad = [
        (0, x.astype(np.float64), TypeError),
        (1, packed[:, :1], ValueError),
        (6, (3, 3, 1, 1, 1, 1, 1), ValueError),  # geom of 7
        (6, (3, 3, 0, 1, 1, 1, 1, 1), ValueError),  # stride 0
        (7, 0, ValueError),
        (9, (2, 2, 2, 2, 0, 0, 3, 3), ValueError),  # pool output does not match y
        (10, np.array([0.5], np.float32), TypeError),  # a scale without a zero point
        (11, np.array([1], np.int32), ValueError),  # zero point without a scale
        (12, 0, ValueError),  # step
        (14, np.zeros(c * h * w - 1, np.uint8), ValueError),
        (16, np.zeros((p, k + 1), np.uint8), ValueError),
        (16, np.zeros((p - 1, k), np.uint8), ValueError),
        (17, np.zeros((p, f), np.float64), TypeError),
        (18, np.zeros((3, f, p + 1), np.float32), ValueError),
    ]
    for pos, value, err in bad:
        args = list(ok)
        args[pos] = value
        with pytest.raises(err):
            q.qconv2d_forward_chunks(*args)
    for scale, zp in ((0.0, 0), (np.inf, 0), (0.5, 256)):
        args = list(ok)
        args[10:12] = np.array([scale], np.float32), np.array([zp], np.int32)
        with pytest.raises(ValueError, match="static quantization"):
            q.qconv2d_forward_chunks(*args)
