"""NumPy twins of the convolution and pooling: im2col/col2im, the chunked (and pool-fused)
convolution passes, the direct stride-1 convolution, depthwise convolution, max and average
pooling.

One family of :class:`~lepton_nn.backend.reference.ReferenceBackend`, the readable spec of
every kernel (see ``reference.py``); compiled backends subclass that class and override what
they speed up.
"""

from __future__ import annotations

import numpy as np

from .reference_common import IDENTITY, RELU, _claimed

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


class ConvTwins:
    """The conv kernels of :class:`~lepton_nn.backend.reference.ReferenceBackend`."""

    # -- convolution and pooling -------------------------------------------------------------
    # Images are NCHW and C-contiguous. A (kh, kw) window moves by the stride (sh, sw); its
    # taps are (dh, dw) apart (dilation); (ph, pw) rows/columns of padding sit above/left of
    # the image. The output size (OH, OW) is read from the output array, so the padding
    # below/right is whatever the last windows need (asymmetric "same" padding included).

    @staticmethod
    def _canvas(x, ph, pw, hp, wp, fill):
        """x (N, C, H, W) placed at (ph, pw) on a canvas of ``fill``, >= (hp, wp) pixels."""
        n, c, h, w = x.shape
        xp = np.full((n, c, max(hp, ph + h), max(wp, pw + w)), fill, x.dtype)
        xp[:, :, ph : ph + h, pw : pw + w] = x
        return xp

    def im2col(self, x, kh, kw, sh, sw, ph, pw, dh, dw, cols):
        """Unfold every window of every image into a column.

        x: (N, C, H, W); cols: (N, C*kh*kw, OH, OW), written and returned:
        cols[n, (c*kh + i)*kw + j, y, x] = x[n, c, y*sh - ph + i*dh, x*sw - pw + j*dw],
        0 where that pixel lies in the padding. A convolution is then, per image,
        W.reshape(O, C*kh*kw) @ cols[n].reshape(C*kh*kw, OH*OW).
        """
        n, c = x.shape[:2]
        oh, ow = cols.shape[2:]
        xp = self._canvas(x, ph, pw, (oh - 1) * sh + (kh - 1) * dh + 1,
                          (ow - 1) * sw + (kw - 1) * dw + 1, 0)  # fmt: skip
        v = cols.reshape(n, c, kh, kw, oh, ow)
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dh, j * dw
                v[:, :, i, j] = xp[:, :, y0 : y0 + (oh - 1) * sh + 1 : sh,
                                   x0 : x0 + (ow - 1) * sw + 1 : sw]  # fmt: skip
        return cols

    def col2im(self, cols, kh, kw, sh, sw, ph, pw, dh, dw, gx):
        """The adjoint of im2col: gx = 0, then each entry of cols is added to the pixel it was
        read from (entries read from the padding are dropped).

        cols: (N, C*kh*kw, OH, OW); gx: (N, C, H, W), written and returned.
        """
        n, c, h, w = gx.shape
        oh, ow = cols.shape[2:]
        gp = self._canvas(np.zeros_like(gx), ph, pw, (oh - 1) * sh + (kh - 1) * dh + 1,
                          (ow - 1) * sw + (kw - 1) * dw + 1, 0)  # fmt: skip
        v = cols.reshape(n, c, kh, kw, oh, ow)
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dh, j * dw
                gp[:, :, y0 : y0 + (oh - 1) * sh + 1 : sh,
                   x0 : x0 + (ow - 1) * sw + 1 : sw] += v[:, :, i, j]  # fmt: skip
        gx[...] = gp[:, :, ph : ph + h, pw : pw + w]
        return gx

    # A convolution's passes over chunks of ``step`` images (the op's threads each call these
    # with the same arguments and their own scratch). Chunk i covers images [i step, (i + 1)
    # step) and is taken by whichever call claims index i from ``counter`` (an int64 array of
    # one element, zeroed by the caller), so results depend on the chunking, not on the thread.
    # geom = (kh, kw, sh, sw, ph, pw, dh, dw); x: (N, C, H, W); w2: (O, K = C kh kw);
    # b: (O,) or None; act: an activation code; per-image outputs are (O, P = OH OW).

    def conv2d_forward_chunks(self, x, w2, b, act, geom, oh, ow, step, counter, cols, z, y):
        """For each chunk [n0, n1) of images:  cols = im2col(x[n0:n1])  (nc, K, P);
        z[n] = w2 @ cols[n - n0];  y[n0:n1] = f(z[n0:n1] + b[:, None]).

        z, y: (N, O, P), y may be z (it is unless act is gelu); cols: this caller's scratch,
        (step, K, OH, OW). Returns y.
        """
        fuse = b is not None or act != IDENTITY
        for _, n0, n1 in _claimed(counter, step, x.shape[0]):
            c = self._chunk_columns(x, n0, n1, geom, oh, ow, cols)
            np.matmul(w2, c, out=z[n0:n1])
            if fuse:
                self.bias_act_forward(z[n0:n1], b, act, y[n0:n1])
        return y

    def conv2d_backward_chunks(self, x, w2, b, act, geom, oh, ow, step, counter, gy, y, z, gx,
                               gw_parts, gb_parts, cols, gz_ws, gcols, gzt):  # fmt: skip
        """For each chunk i = [n0, n1) of images, from gy = G_Y (N, O, P):
        G_Z = gy f'(z) (in gy itself when f is the identity, else in gz_ws (step, O, P));
        gb_parts[i] = G_Z summed over images and pixels  (chunks, O);
        gw_parts[i] = sum_n cols[n] @ G_Z[n]^T  (chunks, K, O), cols rebuilt from x;
        gx[n0:n1] = col2im(w2^T @ G_Z[n])  (N, C, H, W).
        gx, gw_parts, gb_parts: None when that gradient is not wanted. cols: (step, K, OH, OW),
        gcols: (step, K, P), this caller's scratch; gzt: (P, O) scratch, or None: when given,
        each G_Z[n] is transposed into it first and the GEMM reads it as it is (the op picks
        the form BLAS runs faster; the result is the same). Returns gx.
        """
        for i, n0, n1 in _claimed(counter, step, x.shape[0]):
            gz = gy[n0:n1]
            if act != IDENTITY or gb_parts is not None:
                out = gz if act == IDENTITY else gz_ws[: n1 - n0]
                gb = None if gb_parts is None else gb_parts[i]
                self.bias_act_backward(gz, y[n0:n1], z[n0:n1], b, act, out, gb)
                gz = out
            self._chunk_grads(x, w2, geom, oh, ow, i, n0, n1, gz, gx, gw_parts, cols, gcols, gzt)
        return gx

    def _chunk_grads(self, x, w2, geom, oh, ow, i, n0, n1, gz, gx, gw_parts, cols, gcols, gzt):
        """Chunk i's G_W part and G_X from its G_Z (n1 - n0, O, P)."""
        kh, kw, sh, sw, ph, pw, dh, dw = geom
        if gw_parts is not None:
            c = self._chunk_columns(x, n0, n1, geom, oh, ow, cols)
            if gzt is None:
                np.matmul(c, gz.transpose(0, 2, 1)).sum(axis=0, out=gw_parts[i])
            else:
                gw_parts[i] = 0
                for j in range(n1 - n0):
                    np.copyto(gzt, gz[j].T)
                    gw_parts[i] += c[j] @ gzt
        if gx is not None:
            gc = np.matmul(w2.T, gz, out=gcols[: n1 - n0])
            gc = gc.reshape(n1 - n0, -1, oh, ow)
            self.col2im(gc, kh, kw, sh, sw, ph, pw, dh, dw, gx[n0:n1])

    # The same passes with a max pool after the activation, fused: the convolution's output
    # exists only for one chunk at a time, in the caller's scratch zc (step, O, P). pool is
    # the max pool's (kh, kw, sh, sw, ph, pw, POH, POW); y, argmax (int64) and the gradient
    # gy are (N, O, POH POW).

    def conv2d_pool_forward_chunks(self, x, w2, b, act, geom, oh, ow, pool, step, counter,
                                   cols, zc, y, argmax):  # fmt: skip
        """For each chunk [n0, n1):  zc = f(w2 @ im2col(x[n0:n1]) + b)  (nc, O, P), then
        y[n0:n1], argmax[n0:n1] = maxpool2d_forward(zc), as in the unfused ops. Returns y."""
        for _, n0, n1 in _claimed(counter, step, x.shape[0]):
            z = zc[: n1 - n0]
            self.conv2d_forward_chunks(x[n0:n1], w2, b, act, geom, oh, ow, n1 - n0,
                                       np.zeros(1, np.int64), cols, z, z)  # fmt: skip
            out = (n1 - n0, w2.shape[0], *pool[6:])
            yc, ac = y[n0:n1].reshape(out), argmax[n0:n1].reshape(out)  # views
            self.maxpool2d_forward(z.reshape(n1 - n0, -1, oh, ow), *pool[:6], yc, ac)
        return y

    def conv2d_pool_backward_chunks(self, x, w2, b, act, geom, oh, ow, pool, step, counter,
                                    gy, y, argmax, gx, gw_parts, gb_parts, cols, gzp, gz,
                                    gcols, gzt):  # fmt: skip
        """For each chunk i = [n0, n1), from gy (N, O, POH POW), the pooled output's gradient:
        gzp = gy f'(y) at the pooled cells (y: the pooled output; f is identity, relu, sigmoid
        or tanh, whose derivative is a function of f's output) and gb_parts[i] = its sum;
        gz = maxpool2d_backward(gzp) into scratch (step, O, P); then gw_parts[i] and gx[n0:n1]
        as in conv2d_backward_chunks. gzp: scratch (step, O, POH POW). Returns gx."""
        for i, n0, n1 in _claimed(counter, step, x.shape[0]):
            nc, gp = n1 - n0, gy[n0:n1]
            if act != IDENTITY or gb_parts is not None:
                gb = None if gb_parts is None else gb_parts[i]
                gp = self.bias_act_backward(gp, y[n0:n1], y[n0:n1], b, act, gzp[:nc], gb)[0]
            out = (nc, w2.shape[0], *pool[6:])
            g4 = gz[:nc].reshape(nc, -1, oh, ow)
            self.maxpool2d_backward(gp.reshape(out), argmax[n0:n1].reshape(out), *pool[:6], g4)
            self._chunk_grads(x, w2, geom, oh, ow, i, n0, n1, gz[:nc], gx, gw_parts, cols, gcols,
                              gzt)  # fmt: skip
        return gx

    # Inference only: a stride-1 convolution image by image (claimed one at a time from
    # ``counter``), no im2col buffer kept and no argmax. wp: the filters as
    # conv2d_direct_pack gives them; s, z: the caller's scratch of the compiled twin
    # (conv_direct_scratch's sizes; unused here). y: (N, O, POH POW) with ``pool`` (a max
    # pool's (kh, kw, sh, sw, ph, pw, POH, POW)), else (N, O, OH OW). float32.

    def conv2d_direct_pack(self, w2, c, kh, kw):
        """w2 (O, C kh kw) -> wp (ceil(O / 4), kh, C kw, 4): wp[b, i, c kw + j, r] =
        w2[4 b + r, (c kh + i) kw + j], zero for 4 b + r >= O (the compiled twin runs four
        filters at a time, tap row i outermost)."""
        o = w2.shape[0]
        blocks = -(-o // 4)
        w = np.zeros((blocks * 4, c, kh, kw), w2.dtype)
        w[:o] = w2.reshape(o, c, kh, kw)
        w = w.reshape(blocks, 4, c, kh, kw).transpose(0, 3, 2, 4, 1)
        return np.ascontiguousarray(w.reshape(blocks, kh, c * kw, 4))

    def conv2d_direct_forward(self, x, wp, b, act, geom, oh, ow, pool, counter, s, z, y):
        """For each image n:  zn = w2 @ im2col(x[n])  (O, OH OW);
        y[n] = maxpool(f(zn + b[:, None])) with ``pool`` (no argmax), else f(zn + b).
        Returns y."""
        kh, kw = geom[:2]
        c, o = x.shape[1], y.shape[1]
        k = c * kh * kw
        w2 = wp.reshape(-1, kh, c, kw, 4).transpose(0, 4, 2, 1, 3).reshape(-1, k)[:o]
        cols = np.zeros((1, k, oh, ow), x.dtype)
        for _, n0, _ in _claimed(counter, 1, x.shape[0]):
            self.im2col(x[n0 : n0 + 1], *geom, cols)
            zn = (w2 @ cols.reshape(k, oh * ow))[None]
            self.bias_act_forward(zn, b, act, zn)
            if pool is None:
                y[n0] = zn[0]
            else:
                win = self._windows(zn.reshape(1, o, oh, ow), *pool, -np.inf)
                y[n0] = win.max(axis=-1).reshape(o, -1)
        return y

    def conv2d_direct_chain(self, x, layers, counter, s, z, m0, m1, y):
        """Direct convolutions one after the other, image by image: for each image n
        (claimed from counter) h = x[n], then for each layer (wp, b, act, geom, oh, ow, pool,
        C, H, W, O[, u]), h = conv2d_direct_forward of h (C, H, W) -> (O, OH OW or POH POW),
        or conv2d_winograd_forward with u (conv2d_winograd_pack's) where the layer fits
        (winograd_fits) and h is finite;
        y[n] = h (y: (N, O, out) of the last layer). s, z: the compiled twin's scratch for the
        largest layer; m0, m1: its buffers for one image's output of the layers between.
        Returns y."""
        one = np.zeros(1, np.int64)
        for _, n0, _ in _claimed(counter, 1, x.shape[0]):
            h = x[n0 : n0 + 1]
            for layer in layers:
                wp, b, act, geom, oh, ow, pool, c, hh, ww, o = layer[:11]
                u = layer[11] if len(layer) > 11 else None
                out = np.empty((1, o, oh * ow if pool is None else pool[6] * pool[7]), x.dtype)
                h = h.reshape(1, c, hh, ww)
                if u is not None and winograd_fits(geom, pool, act) and np.isfinite(h).all():
                    h = self.conv2d_winograd_forward(h, u, b, act, geom, pool, out)
                    continue
                one[0] = 0
                h = self.conv2d_direct_forward(h, wp, b, act, geom, oh, ow, pool, one, s, z,
                                               out)  # fmt: skip
            y[n0] = h[0]
        return y

    # Inference only: Winograd's F(2x2, 3x3) for a 3x3, stride-1 convolution followed by a
    # 2x2 / stride-2 max pool (kernels/csrc/conv_winograd.h; Lavin and Gray, 2015). Each
    # pooling window is one tile of 2x2 outputs over a 4x4 input patch d:
    #     out = A^T [ sum_c (G g_c G^T) * (B^T d_c B) ] A        (* element by element, 4x4)
    # 16 multiplies per tile, channel and filter instead of 36. U = G g G^T is computed once
    # per weight (conv2d_winograd_pack, float64). The transforms add and subtract (B, A) or
    # halve (G), so the float32 result differs from the direct sums by a few ulps of the
    # terms' size; an inf among the inputs would give NaN (inf - inf) where the direct sums
    # give inf, so such images take the direct kernel.

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

    def conv_direct_chain_threads(self, x, layers, scratch, y, threads):
        """conv2d_direct_chain(x, layers, counter, *scratch[t], y) as ``len(scratch)`` tasks
        sharing one fresh counter, on up to ``threads`` threads (x first: a plan passes its
        input straight, uncopied). Each image is written by the task that claimed it, so one
        task, as here, gives the same result. Returns y."""
        return self.conv2d_direct_chain(x, layers, np.zeros(1, np.int64), *scratch[0], y)

    def conv_chunks_threads(self, name, x, head, scratch, tail, threads):
        """The chunk kernel ``name`` (conv2d_forward_chunks, conv2d_pool_forward_chunks,
        conv2d_direct_forward or qconv2d_forward_chunks) run as ``len(scratch)`` tasks,
        ``name(x, *head, counter, *scratch[t], *tail)``, sharing one fresh counter (each
        task claims chunks until none are left) on up to ``threads`` threads. Each chunk
        writes its own images, so one task with scratch[0], as here, gives the same result.
        Returns None."""
        getattr(self, name)(x, *head, np.zeros(1, np.int64), *scratch[0], *tail)

    def _chunk_columns(self, x, n0, n1, geom, oh, ow, cols):
        """im2col(x[n0:n1]) as (n1 - n0, K, OH OW), in cols (x itself for a 1x1 stride-1
        unpadded convolution)."""
        kh, kw, sh, sw, ph, pw, dh, dw = geom
        nc, k = n1 - n0, x.shape[1] * kh * kw
        if geom == (1, 1, 1, 1, 0, 0, 1, 1) and (oh, ow) == x.shape[2:]:
            return x[n0:n1].reshape(nc, k, oh * ow)
        c = self.im2col(x[n0:n1], kh, kw, sh, sw, ph, pw, dh, dw, cols[:nc])
        return c.reshape(nc, k, oh * ow)

    # A depthwise convolution (groups = C, O = C m outputs): output channel o reads input
    # channel o // m only, with its own (kh, kw) filter w[o]. Summed tap by tap over whole
    # (N, O, OH, OW) planes: kh kw multiply-adds instead of C small GEMMs. Scratch from the
    # caller: xp (N, O, HP, WP), the padded input with each channel repeated for its m
    # outputs (HP = max(ph + H, (OH - 1) sh + (kh - 1) dh + 1), WP alike), and tmp, shaped
    # as the output.

    def depthwise_conv2d_forward(self, x, w, b, act, geom, xp, tmp, z, y):
        """z[n, o, i, j] = sum_{p,q} w[o, p, q] x[n, o // m, i sh - ph + p dh, j sw - pw + q dw]
        (0 in the padding), taps p, q in row-major order; y = f(z + b[o]).

        x: (N, C, H, W); w: (O, kh, kw), O = C m; b: (O,) or None; z, y: (N, O, OH, OW), y may
        be z. geom = (kh, kw, sh, sw, ph, pw, dh, dw). Returns y.
        """
        n, o = z.shape[:2]
        for k, (p, q, win) in enumerate(self._depthwise_taps(x, geom, xp, z.shape[2:])):
            np.multiply(win, w[:, p, q][:, None, None], out=z if k == 0 else tmp)
            if k:
                z += tmp
        self.bias_act_forward(z.reshape(n, o, -1), b, act, y.reshape(n, o, -1))
        return y

    def depthwise_conv2d_backward(self, x, w, b, act, geom, gy, y, z, xp, tmp, gz, gx, gw, gb):
        """Back through depthwise_conv2d_forward from gy (N, O, OH, OW): G_Z = gy f'(z + b)
        into gz (bias_act_backward; y and z as in the forward), gb = G_Z summed over (n, i, j),
        gw[o, p, q] = sum_{n,i,j} G_Z[n, o, i, j] x[n, o // m, window (p, q)], gx = each tap's
        G_Z w[o, p, q] added to the pixels it read (on the canvas xp, reused), summed over a
        channel's m outputs. gx (N, C, H, W), gw (O, kh, kw), gb (O,): written, or None when
        not wanted. Returns gx.
        """
        n, o, oh, ow = gy.shape
        flat = (n, o, oh * ow)
        self.bias_act_backward(gy.reshape(flat), y.reshape(flat), z.reshape(flat), b, act,
                               gz.reshape(flat), gb)  # fmt: skip
        kh, kw, sh, sw, ph, pw, dh, dw = geom
        if gw is not None:
            for p, q, win in self._depthwise_taps(x, geom, xp, (oh, ow)):
                gw[:, p, q] = np.einsum("noij,noij->o", gz, win)
        if gx is not None:  # the canvas now gathers the gradient, one plane per output
            xp[...] = 0
            for p in range(kh):
                for q in range(kw):
                    np.multiply(gz, w[:, p, q][:, None, None], out=tmp)
                    xp[:, :, p * dh : p * dh + (oh - 1) * sh + 1 : sh,
                       q * dw : q * dw + (ow - 1) * sw + 1 : sw] += tmp  # fmt: skip
            c, h, wd = gx.shape[1:]
            planes = xp.reshape(n, c, o // c, *xp.shape[2:])[:, :, :, ph : ph + h, pw : pw + wd]
            planes.sum(axis=2, out=gx)  # a channel's m outputs
        return gx

    @staticmethod
    def _depthwise_taps(x, geom, xp, out_hw):
        """Fill the canvas xp (N, O, HP, WP) from x and yield (p, q, window) for each tap:
        window (N, O, OH, OW) = xp read at (i sh + p dh, j sw + q dw)."""
        kh, kw, sh, sw, ph, pw, dh, dw = geom
        (n, c, h, w), (oh, ow) = x.shape, out_hw
        xp[:, :, :ph] = 0  # the padding (only: the interior is overwritten just below)
        xp[:, :, ph + h :] = 0
        xp[:, :, ph : ph + h, :pw] = 0
        xp[:, :, ph : ph + h, pw + w :] = 0
        rep = xp.reshape(n, c, xp.shape[1] // c, *xp.shape[2:])
        rep[:, :, :, ph : ph + h, pw : pw + w] = x[:, :, None]
        for p in range(kh):
            for q in range(kw):
                yield p, q, xp[:, :, p * dh : p * dh + (oh - 1) * sh + 1 : sh,
                               q * dw : q * dw + (ow - 1) * sw + 1 : sw]  # fmt: skip

    def _windows(self, x, kh, kw, sh, sw, ph, pw, oh, ow, fill):
        """(N, C, OH, OW, kh*kw) view of every pooling window (padding = ``fill``)."""
        n, c = x.shape[:2]
        xp = self._canvas(x, ph, pw, (oh - 1) * sh + kh, (ow - 1) * sw + kw, fill)
        win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
        return win[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw].reshape(
            n, c, oh, ow, kh * kw
        )

    def maxpool2d_forward(self, x, kh, kw, sh, sw, ph, pw, y, argmax):
        """y[n, c, oy, ox] = max of x[n, c] over the window at (oy*sh - ph, ox*sw - pw), the
        padding counting as -inf; argmax (int64, y's shape) = row * W + col of the window's
        first maximum in row-major order. x: (N, C, H, W); y: (N, C, OH, OW). Returns y.
        """
        w = x.shape[3]
        oh, ow = y.shape[2:]
        flat = self._windows(x, kh, kw, sh, sw, ph, pw, oh, ow, -np.inf)
        a = flat.argmax(axis=-1) if flat.size else np.zeros(y.shape, np.int64)
        y[...] = np.take_along_axis(flat, a[..., None], axis=-1)[..., 0]
        rows = (np.arange(oh) * sh - ph)[:, None] + a // kw
        cols = (np.arange(ow) * sw - pw)[None, :] + a % kw
        argmax[...] = rows * w + cols
        return y

    def maxpool2d_backward(self, gy, argmax, kh, kw, sh, sw, ph, pw, gx):
        """gx = 0, then gx[n, c].flat[argmax[n, c, oy, ox]] += gy[n, c, oy, ox]. Returns gx.

        (kh, kw, sh, sw, ph, pw): the forward's window. The result does not depend on it;
        a kernel may use it to write gx in one pass where the windows tile the image.
        """
        n, c, h, w = gx.shape
        k = gy.shape[2] * gy.shape[3]
        g = gx.reshape(n * c, h * w)
        g[...] = 0
        rows = np.arange(n * c)[:, None]
        np.add.at(g, (rows, argmax.reshape(n * c, k)), gy.reshape(n * c, k))
        return gx

    @staticmethod
    def _pool_divisor(h, w, oh, ow, kh, kw, sh, sw, ph, pw, count_pad, dtype):
        """(OH, OW) divisors of average pooling: kh*kw, or the window's cells inside the image."""
        if count_pad:
            return np.full((oh, ow), kh * kw, dtype)
        top = np.arange(oh) * sh - ph
        left = np.arange(ow) * sw - pw
        rows = np.minimum(top + kh, h) - np.maximum(top, 0)
        cols = np.minimum(left + kw, w) - np.maximum(left, 0)
        return np.maximum(rows[:, None] * cols[None, :], 1).astype(dtype)

    def avgpool2d_forward(self, x, kh, kw, sh, sw, ph, pw, count_pad, y):
        """y = (sum of x over the window, the padding counting as 0) / divisor, divisor being
        kh*kw when count_pad, else the number of window cells inside the image.
        x: (N, C, H, W); y: (N, C, OH, OW). Returns y.
        """
        h, w = x.shape[2:]
        oh, ow = y.shape[2:]
        s = self._windows(x, kh, kw, sh, sw, ph, pw, oh, ow, 0).sum(axis=-1)
        div = self._pool_divisor(h, w, oh, ow, kh, kw, sh, sw, ph, pw, count_pad, x.dtype)
        y[...] = s / div
        return y

    def avgpool2d_backward(self, gy, kh, kw, sh, sw, ph, pw, count_pad, gx):
        """gx = 0, then each window adds gy / divisor to every one of its cells inside the
        image. gy: (N, C, OH, OW); gx: (N, C, H, W), written and returned."""
        h, w = gx.shape[2:]
        oh, ow = gy.shape[2:]
        div = self._pool_divisor(h, w, oh, ow, kh, kw, sh, sw, ph, pw, count_pad, gy.dtype)
        gd = gy / div
        gp = self._canvas(np.zeros_like(gx), ph, pw, (oh - 1) * sh + kh, (ow - 1) * sw + kw, 0)
        for i in range(kh):
            for j in range(kw):
                gp[:, :, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw] += gd
        gx[...] = gp[:, :, ph : ph + h, pw : pw + w]
        return gx
