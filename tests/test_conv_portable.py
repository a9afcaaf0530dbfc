"""The compiled im2col, col2im and max-pool loops: their AVX-512 / AVX2 paths (where the CPU
has them) give the plain C loops' bits, and both give the reference twin's results."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn.backend as backend
from lepton_nn.backend.reference import ReferenceBackend

REF = ReferenceBackend()
pytestmark = pytest.mark.skipif("cython" not in backend.available(), reason="no compiled kernels")


def _both(run):
    """run() with the SIMD paths, then with the plain loops (_conv.conv_portable)."""
    from lepton_nn.kernels import _conv

    fast = run()
    _conv.conv_portable(True)
    try:
        plain = run()
    finally:
        _conv.conv_portable(False)
    return fast, plain


# rows of 4, 7 (plain loop on every path), 8, 9, 14 (W3's conv1), 16 and 17 windows
@pytest.mark.parametrize("w", [8, 14, 16, 18, 28, 32, 34])
def test_max_pool_2x2_simd_gives_the_plain_bits(w):
    """ReLU-like data (ties at 0: the first cell wins), a NaN in one plane, odd heights."""
    from lepton_nn.kernels import _conv

    rng = np.random.default_rng(w)
    x = np.maximum(rng.standard_normal((2, 3, 7, w)), 0).astype(np.float32)
    x[1, 2, 3, 5] = np.nan
    oshape = (2, 3, 3, w // 2)

    def forward():
        y, a = np.full(oshape, 7, np.float32), np.full(oshape, -7, np.int64)
        _conv.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, y, a)
        return y, a

    (y, a), (y1, a1) = _both(forward)
    np.testing.assert_array_equal(y1, y)
    np.testing.assert_array_equal(a1, a)
    y0, a0 = np.empty(oshape, np.float32), np.empty(oshape, np.int64)
    REF.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, y0, a0)
    finite = np.isfinite(x[:, :, :6]).all(axis=(2, 3))  # np.max's NaN rule is the twin's own
    np.testing.assert_array_equal(y[finite], y0[finite])
    np.testing.assert_array_equal(a[finite], a0[finite])
    if w % 2 == 0:  # the windows tile the plane: the row-pair backward
        xs = (2, 3, 6, w)
        gy = rng.standard_normal(oshape).astype(np.float32)
        gx = lambda: np.full(xs, np.nan, np.float32)  # noqa: E731
        g, g1 = _both(lambda: _conv.maxpool2d_backward(gy, a0, 2, 2, 2, 2, 0, 0, gx()))
        np.testing.assert_array_equal(g1, g)
        np.testing.assert_array_equal(
            g, REF.maxpool2d_backward(gy, a0, 2, 2, 2, 2, 0, 0, np.empty(xs, np.float32))
        )


# (kh, kw, sh, sw, ph, pw, dh, dw), all "same" at stride 1 (ow == w: the AVX2 col2im's case)
SAME_GEOMS = [(3, 3, 1, 1, 1, 1, 1, 1), (3, 3, 1, 1, 2, 2, 2, 2), (5, 5, 1, 1, 2, 2, 1, 1)]


@pytest.mark.parametrize("w", [7, 8, 14, 17])
@pytest.mark.parametrize("geom", SAME_GEOMS)
def test_im2col_col2im_simd_give_the_plain_bits(w, geom):
    """Rows narrower than a vector, one vector, and a vector and a tail (the AVX2 col2im's
    and im2col's flat runs cross rows, the padding columns masked); -0 and inf in the data."""
    from lepton_nn.kernels import _conv

    rng = np.random.default_rng(w)
    k = geom[0] * geom[1]
    x = rng.standard_normal((2, 3, 6, w)).astype(np.float32)
    cols = rng.standard_normal((2, 3 * k, 6, w)).astype(np.float32)
    cols[0, :, 2, 3], cols[1, 4, 5, 0] = -0.0, np.inf
    x[0, 1, 2, :3], x[1, 2, 4, w - 1] = -0.0, np.inf
    c, c1 = _both(lambda: _conv.im2col(x, *geom, np.full(cols.shape, np.nan, np.float32)))
    np.testing.assert_array_equal(c1.view(np.int32), c.view(np.int32))  # bits: -0 and +0
    np.testing.assert_array_equal(c, REF.im2col(x, *geom, np.empty_like(cols)))
    g, g1 = _both(lambda: _conv.col2im(cols, *geom, np.full(x.shape, np.nan, np.float32)))
    np.testing.assert_array_equal(g1.view(np.int32), g.view(np.int32))  # bits, -0 too
    np.testing.assert_allclose(g, REF.col2im(cols, *geom, np.empty_like(x)), rtol=1e-6, atol=1e-6)
