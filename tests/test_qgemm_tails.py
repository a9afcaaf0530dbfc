"""Row tails of the int8 kernels' vector epilogues, bit for bit.

The AVX2 paths store a row's last columns (fewer than a vector) through buffers rather than
masked loads and stores (microcoded on AMD), and the direct convolution reads whole vectors
past a canvas row's end. Each output lane is computed on its own, so a column in a tail must
be bit-identical to the same column computed inside a full vector: the same layer with more
columns (extra weights / zero image columns) gives, on the shared columns, the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_qgemm import ACTS, _qconv, _rand_act, isa  # noqa: F401  (isa: the fixture)

q = pytest.importorskip("lepton_nn.kernels._qgemm")


@pytest.mark.parametrize("per_row", [False, True])
def test_qlinear_tail_columns_equal_full_vector_columns(isa, per_row):  # noqa: F811
    rng = np.random.default_rng(21)
    M, K, wide = 5, 70, 48
    x, xi = _rand_act(rng, np.uint8, (M, K)), _rand_act(rng, np.int8, (M, K))
    w = _rand_act(rng, np.int8, (wide, K))
    ws = rng.uniform(0.001, 0.01, wide).astype(np.float32)
    bias = rng.standard_normal(wide).astype(np.float32)
    xs = rng.uniform(0.005, 0.02, M).astype(np.float32) if per_row else np.float32(0.013)
    zp = rng.integers(0, 256, M).astype(np.int32) if per_row else 77
    wp_w, cs_w = q.pack_weights(w)
    for n in (1, 5, 8, 13, 19, 37, 47):  # a tail in the low or high half of a 16-column block
        wp, cs = q.pack_weights(np.ascontiguousarray(w[:n]))
        for act in ACTS:
            for b in (None, bias):
                got = q.qlinear(x, xs, zp, wp, ws[:n], cs, None if b is None else b[:n], act,
                                np.full((M, n), np.nan, np.float32))  # fmt: skip
                full = q.qlinear(x, xs, zp, wp_w, ws, cs_w, b, act,
                                 np.full((M, wide), np.nan, np.float32))  # fmt: skip
                np.testing.assert_array_equal(got, full[:, :n], err_msg=f"{isa} N={n} act={act}")
        # int32 out, int8 a: the column sums' correction read in the tail too
        s32 = q.qgemm_s32(xi, wp, np.full((M, n), -7, np.int32), cs)
        full = q.qgemm_s32(xi, wp_w, np.full((M, wide), -7, np.int32), cs_w)
        np.testing.assert_array_equal(s32, full[:, :n], err_msg=f"{isa} N={n}")
        np.testing.assert_array_equal(s32, xi.astype(np.int64) @ w[:n].astype(np.int64).T)


@pytest.mark.parametrize("pool", [False, True])
def test_qconv_tail_pixels_equal_full_vector_pixels(isa, pool):  # noqa: F811
    """A row of 13 outputs (a vector and a tail of 5; pooled, a tail of 6) against the same
    image widened by zero columns to 32 outputs, all in full vectors. Static quantization:
    zero quantizes to the zero point exactly, as the padding, so the shared outputs agree.
    K = 27 <= 64 takes the direct path on AVX2 and up, the GEMM (row tails of F = 13) else."""
    rng = np.random.default_rng(22)
    geom, (c, h, w), wide, f = (3, 3, 1, 1, 1, 1, 1, 1), (3, 6, 13), 32, 13
    x = np.zeros((2, c, h, wide), np.float32)
    x[..., :w] = rng.standard_normal((2, c, h, w)) * 2
    w_q = _rand_act(rng, np.int8, (f, c, 3, 3))
    packed, cs = q.pack_weights(np.ascontiguousarray(w_q.transpose(0, 2, 3, 1).reshape(f, -1)))
    ws = rng.uniform(0.001, 0.01, f).astype(np.float32)
    bias = rng.standard_normal(f).astype(np.float32)
    for act in ACTS:
        for b in (None, bias):
            ys = []
            for ow in (w, wide):
                pl = (2, 2, 2, 2, 0, 0, h // 2, ow // 2) if pool else None
                xi = np.ascontiguousarray(x[..., :ow])
                y = _qconv(q, xi, packed, cs, ws, b, act, geom, h, ow, pl, True)
                ys.append(y.reshape(2, f, -1, ow // 2 if pool else ow))
            cols = ys[0].shape[-1]
            np.testing.assert_array_equal(ys[0], ys[1][..., :cols], err_msg=f"{isa} act={act}")
