"""NumPy twin of the Winograd F(2x2, 3x3) convolution + 2x2 max pool (``conv_winograd.h``).

One family of :class:`~lepton_nn.backend.reference.ReferenceBackend`. A 3x3, stride-1 conv
whose output goes through a 2x2 / stride-2 max pool is computed tile by tile, each pooling
window one tile of 2x2 outputs over a 4x4 input patch d (Lavin and Gray, 2015):

    out = A^T [ sum_c (G g_c G^T) * (B^T d_c B) ] A        (* element by element, 4x4)

16 multiplies per tile, channel and filter instead of 36. ``U = G g G^T`` is computed once
per weight (:meth:`WinogradTwins.conv2d_winograd_pack`, in float64). The transforms add and
subtract only (B, A) or halve (G), so the float32 result differs from the direct sums by a
few ulps of the terms' magnitudes; with an inf among the inputs the transforms give NaN
(inf - inf) where the direct sums give inf, so such images take the direct kernel.
"""

from __future__ import annotations

import numpy as np

from .reference_common import IDENTITY, RELU

#: G (4, 3): U = G g G^T for a 3x3 filter g
WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)


def winograd_fits(geom, pool, act) -> bool:
    """Whether a conv layer takes the Winograd tiling: 3x3, stride and dilation 1 (geom =
    (kh, kw, sh, sw, ph, pw, dh, dw)), a 2x2 / 2 unpadded pool, identity or ReLU."""
    kh, kw, sh, sw, _, _, dh, dw = geom
    return (
        pool is not None
        and tuple(pool[:6]) == (2, 2, 2, 2, 0, 0)
        and (kh, kw, sh, sw, dh, dw) == (3, 3, 1, 1, 1, 1)
        and act in (IDENTITY, RELU)
    )


class WinogradTwins:
    """The Winograd kernels of :class:`~lepton_nn.backend.reference.ReferenceBackend`."""

    def conv2d_winograd_pack(self, w2, c):
        """w2 (O, C 9) -> u (ceil(O / 4), 16, C, 4) float32: u[o // 4, 4 a + b, c, o % 4] =
        (G g G^T)[a, b] for g = w2[o].reshape(C, 3, 3)[c], computed in float64; zero for the
        filters past O."""
        o = w2.shape[0]
        g = w2.astype(np.float64).reshape(o, c, 3, 3)
        u = np.einsum("ai,ocij,bj->ocab", WINO_G, g, WINO_G).reshape(o, c, 16)
        blocks = -(-o // 4)
        out = np.zeros((blocks * 4, c, 16), np.float64)
        out[:o] = u
        out = out.reshape(blocks, 4, c, 16).transpose(0, 3, 2, 1)
        return np.ascontiguousarray(out, np.float32)

    def conv2d_winograd_forward(self, x, u, b, act, geom, pool, y):
        """y (N, O, POH POW) = f(maxpool2x2(conv3x3(x)) + b) through Winograd's tiles, in
        x's dtype: x (N, C, H, W); u from conv2d_winograd_pack; geom's (ph, pw) the padding;
        pool = (2, 2, 2, 2, 0, 0, POH, POW). f: identity or ReLU. Returns y."""
        n, c, h, w = x.shape
        ph, pw = geom[4], geom[5]
        poh, pow_ = pool[6], pool[7]
        o = y.shape[1]
        # the padded input: xp[r, k] = x[r - ph, k - pw], rows and columns the tiles read
        xp = np.zeros((n, c, 2 * poh + 2, 2 * pow_ + 2), x.dtype)
        r1, k1 = min(h, 2 * poh + 2 - ph), min(w, 2 * pow_ + 2 - pw)
        xp[:, :, ph : ph + r1, pw : pw + k1] = x[:, :, :r1, :k1]
        # d[n, c, py, px, i, j] = xp[2 py + i, 2 px + j]
        s = xp.strides
        d = np.lib.stride_tricks.as_strided(
            xp, (n, c, poh, pow_, 4, 4), (s[0], s[1], 2 * s[2], 2 * s[3], s[2], s[3])
        )
        d0, d1, d2, d3 = (d[..., j] for j in range(4))  # B^T over the columns, then rows
        wt = np.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3], axis=-1)  # (..., i, j)
        w0, w1, w2_, w3 = (wt[..., i, :] for i in range(4))
        v = np.stack([w0 - w2_, w1 + w2_, w2_ - w1, w1 - w3], axis=-2)  # (n, c, py, px, 4, 4)
        v = v.reshape(n, c, poh * pow_, 16).transpose(3, 0, 2, 1)  # (16, n, tiles, c)
        uu = u.astype(x.dtype).transpose(1, 2, 0, 3).reshape(16, c, -1)[:, :, :o]  # (16, c, O)
        m = np.matmul(v, uu[:, None])  # (16, n, tiles, O)
        m = m.reshape(4, 4, n, poh * pow_, o)
        s0 = m[:, 0] + m[:, 1] + m[:, 2]  # A^T over b, then a
        s1 = m[:, 1] - m[:, 2] - m[:, 3]
        y00, y10 = s0[0] + s0[1] + s0[2], s0[1] - s0[2] - s0[3]
        y01, y11 = s1[0] + s1[1] + s1[2], s1[1] - s1[2] - s1[3]
        top = np.where(y00 > y01, y00, y01)
        bottom = np.where(y10 > y11, y10, y11)
        z = np.where(top > bottom, top, bottom).transpose(0, 2, 1)  # (n, O, tiles)
        if b is not None:
            z = z + b.astype(x.dtype)[:, None]
        if act == RELU:
            z = np.where(z < 0, x.dtype.type(0), z)
        y[...] = z
        return y
