"""The int8 GEMM's register tiles and cache blocks, exact against the int64 twin.

The AVX2 path runs 6-row x 8-column tiles over blocks of 96 widened rows (1- and 2-row tiles
of 16 columns for the rows left over), the VNNI paths 4- or 6-row tiles: every remainder of
the row count modulo 6 and 4, a block boundary (M > 96), column tails inside either half of
a 16-column block and K % 4 != 0 run here, on every ISA path usable on this machine. The
extremes are the sums vpmaddubsw would saturate (a = 255 against two weights of one sign
adding up to more than 128; a - 128 = -128 against -128): exact in int32 here.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_qgemm import REF, _int64_ref, _rand_act, isa  # noqa: F401  (isa: the fixture)

q = pytest.importorskip("lepton_nn.kernels._qgemm")

ROWS = (1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 96, 97, 101, 195)
COLS = (1, 7, 8, 9, 12, 15, 16, 17, 29, 40)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_every_row_tile_and_column_tail(isa, dtype):  # noqa: F811
    rng = np.random.default_rng(31)
    for M in ROWS:
        for K, N in ((1, 17), (3, 9), (30, 40), (131, 29)):
            a = _rand_act(rng, dtype, (M, K))
            w = _rand_act(rng, np.int8, (N, K))
            wp, cs = q.pack_weights(w)
            out = np.full((M, N), -7, np.int32)
            q.qgemm_s32(a, wp, out, cs)
            np.testing.assert_array_equal(out, _int64_ref(a, w), err_msg=f"{isa} {M}x{K}x{N}")


def test_qlinear_tiles_match_the_reference_twin(isa):  # noqa: F811
    """The fused epilogue on every tile shape: the reference backend's qlinear (NumPy)."""
    rng = np.random.default_rng(32)
    for M in (1, 2, 5, 6, 7, 97):
        for N in COLS:
            K = 37
            x_q = _rand_act(rng, np.uint8, (M, K))
            w = _rand_act(rng, np.int8, (N, K))
            wp, cs = q.pack_weights(w)
            ws = (rng.uniform(0.5, 2, N) / 400).astype(np.float32)
            bias = rng.standard_normal(N).astype(np.float32)
            xs = rng.uniform(0.005, 0.02, M).astype(np.float32)
            zp = rng.integers(0, 256, M).astype(np.int32)
            out = np.full((M, N), np.nan, np.float32)
            want = np.empty((M, N), np.float32)
            q.qlinear(x_q, xs, zp, wp, ws, cs, bias, 1, out)
            REF.qlinear(x_q, xs, zp, wp, ws, cs, bias, 1, want)
            np.testing.assert_allclose(out, want, rtol=2e-6, atol=2e-6, err_msg=f"{isa} {M}x{N}")


@pytest.mark.parametrize("w_pair", [(127, 127), (-128, -128), (127, 2), (-128, -1), (64, 65)])
@pytest.mark.parametrize("a_val", [255, 0, 128])
def test_pairs_vpmaddubsw_would_saturate(isa, w_pair, a_val):  # noqa: F811
    """Every adjacent k pair of w is w_pair (|w0| + |w1| > 128, one sign: 255 w0 + 255 w1
    leaves int16), on all tile shapes, with uint8 a and its int8 twin (a ^ 0x80)."""
    for M in (1, 2, 6, 7, 97):
        K, N = 1030, 24  # 1030 % 4 = 2: the last group is a tail
        a = np.full((M, K), a_val, np.uint8)
        a[:, ::7] = 255 - a_val  # not all equal: rows and columns differ
        w = np.empty((N, K), np.int8)
        w[:, 0::2], w[:, 1::2] = w_pair
        w[::3] = -w[::3].astype(np.int16).clip(-127, 127)  # both signs across columns
        wp, cs = q.pack_weights(w)
        out = np.zeros((M, N), np.int32)
        q.qgemm_s32(a, wp, out, cs)
        np.testing.assert_array_equal(out, _int64_ref(a, w), err_msg=f"{isa} M={M}")
        ai = (a ^ 0x80).view(np.int8)
        q.qgemm_s32(ai, wp, out, cs)
        np.testing.assert_array_equal(out, _int64_ref(ai, w), err_msg=f"{isa} int8 M={M}")


def test_two_threads_split_every_tile_shape():
    """Two threads split the columns (the helper takes the upper blocks): each half runs
    every row tile, block boundary included, with the same result as one thread."""
    rng = np.random.default_rng(33)
    for M, N in ((193, 200), (100, 33)):
        a = _rand_act(rng, np.uint8, (M, 1024))
        w = _rand_act(rng, np.int8, (N, 1024))
        assert M * N * 1024 >= 2**25 or N == 33
        wp, _ = q.pack_weights(w)
        one, two = np.zeros((M, N), np.int32), np.zeros((M, N), np.int32)
        q.qgemm_s32(a, wp, one, nthreads=1)
        q.qgemm_s32(a, wp, two, nthreads=2)
        np.testing.assert_array_equal(one, _int64_ref(a, w))
        np.testing.assert_array_equal(two, one)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_threads_split_rows_and_columns(isa, dtype):  # noqa: F811
    """Above 2**25 multiply-adds a call is cut into (column range, row block) tasks: each row
    block with its own rows' scales and zero points (per row and per tensor), the same bits
    at 1, 2 and 3 threads, the exact sums with power-of-two scales (identity epilogue)."""
    rng = np.random.default_rng(34)
    K = 1024
    for M, N in ((32, 1100), (65, 600), (130, 300), (257, 150)):
        assert M * K * N >= 2**25
        a = _rand_act(rng, dtype, (M, K))
        w = _rand_act(rng, np.int8, (N, K))
        wp, cs = q.pack_weights(w)
        ws = np.full(N, 0.5, np.float32)
        lo, hi = (0, 256) if dtype == np.uint8 else (-128, 128)
        for xs, zp in (
            (np.exp2(-rng.integers(1, 4, M)).astype(np.float32), rng.integers(lo, hi, M)),
            (np.float32(0.25), int(rng.integers(lo, hi))),
        ):
            zp = zp.astype(np.int32) if isinstance(zp, np.ndarray) else zp
            exact = (a.astype(np.int64) - np.reshape(zp, (-1, 1))) @ w.astype(np.int64).T
            want = (exact * (np.reshape(xs, (-1, 1)) * 0.5)).astype(np.float32)
            for t in (1, 2, 3):
                out = np.full((M, N), np.nan, np.float32)
                q.qlinear(a, xs, zp, wp, ws, cs, None, 0, out, nthreads=t)
                np.testing.assert_array_equal(out, want, err_msg=f"{isa} {M}x{N} t={t}")
                raw = np.full((M, N), -7, np.int32)
                q.qgemm_s32(a, wp, raw, cs, nthreads=t)
                np.testing.assert_array_equal(raw, _int64_ref(a, w), err_msg=f"{isa} t={t}")


def test_task_grid_caps_the_task_size_at_large_m():
    """A large call is cut finer than 16 tasks a thread, so that no task is much above 2**23
    multiply-adds (the call ends with the last task a thread claimed); W6 at M = 64 and 256
    keeps its 16 tasks a thread; the grid covers every row and column block."""
    for M, K, N, t in ((1024, 1024, 1024, 2), (4096, 512, 2000, 3), (520, 520, 1100, 2)):
        rows, width, chunks, tasks = q._task_plan(M, K, N, t)
        nb = (N + 15) // 16
        assert rows % 6 == 0 and rows <= 96 and width % 2 == 0
        assert chunks * width >= nb > (chunks - 1) * width
        assert tasks == -(-M // rows) * chunks
        assert rows * K * 16 * width <= 1.25 * 2**23, (M, K, N, rows, width)
        assert tasks >= 16 * t
    for M in (64, 256):
        rows, width, chunks, tasks = q._task_plan(M, 1024, 1024, 2)
        assert tasks == 32 if M == 64 else 33


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_finer_task_grid_same_bits(isa, dtype):  # noqa: F811
    """A call cut by task size (more than 16 tasks a thread): exact int32 sums and the same
    float outputs at 1, 2 and 3 threads; odd N (a partial last chunk), K % 4 != 0."""
    rng = np.random.default_rng(38)
    M, K, N = 530, 522, 1090
    assert q._task_plan(M, K, N, 2)[3] > 32
    a = _rand_act(rng, dtype, (M, K))
    w = _rand_act(rng, np.int8, (N, K))
    wp, cs = q.pack_weights(w)
    want = _int64_ref(a, w)
    ws = rng.uniform(0.5, 2, N).astype(np.float32)
    lo, hi = (0, 256) if dtype == np.uint8 else (-128, 128)
    zp = int(rng.integers(lo, hi))
    first = None
    for t in (1, 2, 3):
        raw = np.full((M, N), -7, np.int32)
        q.qgemm_s32(a, wp, raw, cs, nthreads=t)
        np.testing.assert_array_equal(raw, want, err_msg=f"{isa} t={t}")
        out = np.full((M, N), np.nan, np.float32)
        q.qlinear(a, np.float32(0.03), zp, wp, ws, cs, None, 1, out, nthreads=t)
        if first is None:
            first = out
        np.testing.assert_array_equal(out, first, err_msg=f"{isa} t={t}")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_threads_keep_no_rows_from_the_last_call(isa, dtype):  # noqa: F811
    """A thread widens a row block once per call and keeps it for the column chunks it claims
    (AVX2): call after call with new activations of the same shape (the same row blocks), at
    2 and 3 threads, every result exact; K % 4 != 0 (tail), several row blocks, odd N."""
    rng = np.random.default_rng(37)
    for M, K, N in ((64, 1030, 1000), (200, 518, 330), (97, 1024, 350)):
        assert M * K * N >= 2**25
        w = _rand_act(rng, np.int8, (N, K))
        wp, cs = q.pack_weights(w)
        for t in (2, 3, 2, 3):
            a = _rand_act(rng, dtype, (M, K))
            raw = np.full((M, N), -7, np.int32)
            q.qgemm_s32(a, wp, raw, cs, nthreads=t)
            np.testing.assert_array_equal(raw, _int64_ref(a, w), err_msg=f"{isa} {M} t={t}")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_single_row_extremes_exact(isa, dtype):  # noqa: F811
    """One row (the AVX2 path's GEMV on signed activations): activations at both ends of
    their range against weights of +-127 and -128, mixed signs, K and N tails, the zero
    point at both ends; exact int32 sums, and the same through qlinear's identity epilogue."""
    rng = np.random.default_rng(35)
    info = np.iinfo(dtype)
    for K, N in ((4099, 17), (1, 1), (7, 40), (130, 33)):
        for a_val in (info.min, info.max):
            a = np.full((1, K), a_val, dtype)
            a[0, ::5] = info.max if a_val == info.min else info.min
            for w_val in (127, -127, -128):
                w = np.full((N, K), w_val, np.int8)
                w[::3, ::2] = -128 if w_val > 0 else 127
                wp, cs = q.pack_weights(w)
                for cols in (cs, None) if dtype == np.uint8 else (cs,):
                    out = np.full((1, N), -7, np.int32)
                    q.qgemm_s32(a, wp, out, cols)
                    np.testing.assert_array_equal(out, _int64_ref(a, w), err_msg=f"{isa} {K}")
                for zp in (info.min, info.max, 0):
                    res = np.zeros((1, N), np.float32)
                    q.qlinear(a, np.float32(1), zp, wp, np.ones(N, np.float32), cs, None, 0, res)
                    exact = (a.astype(np.int64) - zp) @ w.astype(np.int64).T
                    np.testing.assert_array_equal(res, exact.astype(np.float32), err_msg=isa)
    # random rows, per-row style arguments of shape (1,), against the int64 twin
    for K, N in ((1024, 1024), (63, 9)):
        a = _rand_act(rng, dtype, (1, K))
        w = _rand_act(rng, np.int8, (N, K))
        wp, cs = q.pack_weights(w)
        out = np.zeros((1, N), np.float32)
        zp = np.array([int(info.min) + 3], np.int32)
        q.qlinear(a, np.full(1, 0.5, np.float32), zp, wp, np.ones(N, np.float32), cs, None, 0, out)
        exact = (a.astype(np.int64) - zp[0]) @ w.astype(np.int64).T
        np.testing.assert_array_equal(out, (exact * 0.5).astype(np.float32), err_msg=isa)


def test_single_row_wide_layer_threads():
    """One row above 2**25 multiply-adds: column ranges on 1, 2, 3 threads, the same bits."""
    rng = np.random.default_rng(36)
    K, N = 2048, 16400
    a = _rand_act(rng, np.uint8, (1, K))
    w = _rand_act(rng, np.int8, (N, K))
    wp, cs = q.pack_weights(w)
    want = _int64_ref(a, w)
    for t in (1, 2, 3):
        out = np.zeros((1, N), np.int32)
        q.qgemm_s32(a, wp, out, cs, nthreads=t)
        np.testing.assert_array_equal(out, want, err_msg=f"t={t}")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_split_from_2_21_multiply_adds_same_bits(isa, dtype):  # noqa: F811
    """From PARALLEL_MIN_MACS = 2**21 (was 2**25) a call is a pool job: the W5 MLP's second
    layer at batch 64 (512 -> 256: 2 threads get 4 tasks each) and an odd shape (K % 4 != 0,
    a partial last column block), per-row scales and zero points, ReLU: the same bits at 1,
    2 and 3 threads, and exact int32 sums."""
    from lepton_nn.kernels import _pool

    rng = np.random.default_rng(39)
    lo, hi = (0, 256) if dtype == np.uint8 else (-128, 128)
    for M, K, N in ((64, 512, 256), (67, 518, 100)):
        assert q.PARALLEL_MIN_MACS <= M * K * N < 2**25 and q._threads_for(M, K, N, 2) == 2
        a = _rand_act(rng, dtype, (M, K))
        w = _rand_act(rng, np.int8, (N, K))
        wp, cs = q.pack_weights(w)
        ws = rng.uniform(0.5, 2, N).astype(np.float32) / 4096
        b = rng.standard_normal(N).astype(np.float32)
        xs = rng.uniform(0.01, 0.05, M).astype(np.float32)
        zp = rng.integers(lo, hi, M).astype(np.int32)
        first = None
        for t in (1, 2, 3):
            jobs = _pool.stats()["jobs"]
            out = np.full((M, N), np.nan, np.float32)
            q.qlinear(a, xs, zp, wp, ws, cs, b, 1, out, nthreads=t)
            assert (_pool.stats()["jobs"] > jobs) == (t > 1 and _pool.stats()["threaded"])
            first = out if first is None else first
            np.testing.assert_array_equal(out, first, err_msg=f"{isa} {M}x{K}x{N} t={t}")
            raw = np.full((M, N), -7, np.int32)
            q.qgemm_s32(a, wp, raw, cs, nthreads=t)
            np.testing.assert_array_equal(raw, _int64_ref(a, w), err_msg=f"{isa} t={t}")
