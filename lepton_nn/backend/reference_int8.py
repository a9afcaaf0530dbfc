"""NumPy twins of the int8 quantized layers: row quantization, weight packing, the int8 Dense
product and chain, the int32 GEMM, the int8 convolution's chunks.

One family of :class:`~lepton_nn.backend.reference.ReferenceBackend`, the readable spec of
every kernel (see ``reference.py``); compiled backends subclass that class and override what
they speed up.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .reference_common import _claimed


class QChain(NamedTuple):
    """A chain of int8 Dense layers (:meth:`ReferenceBackend.qdense_chain_prepare`)."""

    specs: tuple  # (w_packed, w_scale, w_col_sums, bias, act, x_scale, x_zero_point) per layer
    m: int  # rows
    k: int  # features in
    widths: tuple  # N per layer
    threads: int = 1  # the compiled twin splits each layer's columns over them


class Int8Twins:
    """The int8 kernels of :class:`~lepton_nn.backend.reference.ReferenceBackend`."""

    # -- int8 quantized matmul (compression) -------------------------------------------------
    # int8 Dense: quantize_rows (x float32 -> uint8 with a scale and zero point per row or per
    # tensor: computed from x (dynamic) or fixed at calibration (static, fixed=True)) then
    # qlinear. Weights are int8, symmetric per output channel, packed once by
    # qpack_weights into 4-byte groups: w_packed[nb, g, 4 c + j] = w_q[16 nb + c, 4 g + j],
    # shape (ceil(N/16), ceil(K/4), 64), zero padded (the layout vpdpbusd and AMX tiles read).

    def quantize_rows(self, x, q, scale, zero_point, fixed=False):
        """Asymmetric uint8 quantization of x float32 (M, K) into q uint8 (M, K).

        scale float32, zero_point int32: shape (M,) for one pair per row, (1,) per tensor.
        Dynamic (``fixed`` false; scale and zero_point are written): lo = min(0, min x),
        hi = max(0, max x), scale = (hi - lo) / 255 (1 when 0), zp = clip(rint(-lo / scale),
        0, 255). Static (``fixed`` true): scale (finite, > 0) and zero_point (0..255) are
        given and only read. Then q = clip(rint(x * (1 / scale)) + zp, 0, 255), round half to
        even, +-inf and values beyond the range saturate to 0 / 255, NaN gives 0; all float32
        so the compiled twins match bit for bit; a dynamic row holding a NaN gets scale NaN
        and zero point 0 (its products are NaN). Returns q.
        """
        per_row = scale.shape[0] == x.shape[0] and x.shape[0] != 1
        xs = x if per_row else x.reshape(1, -1)  # (spans, len)
        if fixed:
            s = np.asarray(scale, np.float32).reshape(-1)
            zp = np.asarray(zero_point).reshape(-1).astype(np.float32)
        else:
            lo = xs.min(axis=1, initial=0)
            hi = xs.max(axis=1, initial=0)
            s = (hi - lo) / np.float32(255)
            s[s == 0] = 1
            zp = np.clip(np.rint(-lo / s), 0, 255)
            zp[np.isnan(zp)] = 0  # a row holding NaN: scale NaN (its outputs NaN), zp 0
        inv = (np.float32(1) / s)[:, None]
        with np.errstate(over="ignore", invalid="ignore"):
            qv = np.clip(np.rint(xs * inv) + zp[:, None], 0, 255)
        qv[np.isnan(qv)] = 0
        q[...] = qv.reshape(q.shape).astype(np.uint8)
        if not fixed:
            scale[...] = s
            zero_point[...] = zp.astype(np.int32)
        return q

    def qpack_weights(self, w_q):
        """w_q int8 (N, K) -> (w_packed int8 (ceil(N/16), ceil(K/4), 64), w_col_sums int32 (N,)).

        w_col_sums[n] = sum_k w_q[n, k], for the zero-point correction of the compiled twins.
        """
        N, K = w_q.shape
        NB, G = -(-N // 16), -(-K // 4)
        padded = np.zeros((NB * 16, G * 4), np.int8)
        padded[:N, :K] = w_q
        packed = padded.reshape(NB, 16, G, 4).transpose(0, 2, 1, 3).reshape(NB, G, 64)
        return np.ascontiguousarray(packed), w_q.sum(axis=1, dtype=np.int32)

    @staticmethod
    def _qunpack(w_packed, N, K):
        """Inverse of qpack_weights: w_q int8 (N, K)."""
        NB, G = w_packed.shape[:2]
        return w_packed.reshape(NB, G, 16, 4).transpose(0, 2, 1, 3).reshape(NB * 16, G * 4)[:N, :K]

    def qlinear(
        self, x_q, x_scale, x_zero_point, w_packed, w_scale, w_col_sums, bias, act, out, nthreads=1
    ):
        """out = act(((x_q - zp) @ w_q.T) * (x_scale * w_scale) + bias).

        x_q uint8 or int8 (M, K); x_scale float or float32 (1,)/(M,); x_zero_point int or
        int32 (1,)/(M,); w_packed from qpack_weights; w_scale float32 (N,); bias float32 (N,)
        or None; act code; out float32 (M, N). The sum is exact (int64 here, int32 in the
        compiled twins, which need w_col_sums; nthreads is theirs too). Returns out.
        """
        N, K = out.shape[1], x_q.shape[1]
        w = self._qunpack(w_packed, N, K).astype(np.int64)  # (N, K)
        zp = np.asarray(x_zero_point, np.int64).reshape(-1, 1)  # (1 or M, 1)
        acc = (x_q.astype(np.int64) - zp) @ w.T  # (M, N), exact
        s = np.asarray(x_scale, np.float32).reshape(-1, 1) * w_scale  # (1 or M, N)
        return self.bias_act_forward(acc.astype(np.float32) * s, bias, act, out)

    def qdense_chain_prepare(self, specs, m, k, threads=1):
        """int8 Dense layers for :meth:`qdense_chain_forward`: ``specs`` one (w_packed,
        w_scale, w_col_sums, bias, act, x_scale, x_zero_point) per layer, as qlinear takes
        them, with x_scale / x_zero_point None (dynamic: each row quantized with its own
        pair) or float32 / int32 (1,) (static: the calibrated pair); ``m`` rows of ``k``
        features in; ``threads``: the compiled twin splits each layer's columns over that
        many threads (the same bits). Returns a :class:`QChain` (the compiled twin: an object
        with the same ``specs``, ``m``, ``k``, ``widths``, ``threads``, holding its scratch)."""
        specs = tuple(specs)
        return QChain(specs, m, k, tuple(s[1].shape[0] for s in specs), int(threads))

    def qdense_chain_forward(self, x, chain, outs):
        """int8 Dense layers one after the other: h = x; for each layer l,
        q, s, zp = quantize_rows(h) (or the layer's static pair), outs[l] = qlinear(q, s, zp,
        ...) (m, N_l), h = outs[l]. x float32 (m, k); outs one float32 (m, N_l) per layer.
        Returns outs[-1]. (The runtime's int8 Dense layers at a small batch: one call.)"""
        h = x
        for (wp, ws, cs, b, act, xs, xzp), out in zip(chain.specs, outs, strict=True):
            q = np.empty(h.shape, np.uint8)
            if xs is None:  # dynamic: one pair per row
                xs, xzp = np.empty(h.shape[0], np.float32), np.empty(h.shape[0], np.int32)
                self.quantize_rows(h, q, xs, xzp)
            else:
                self.quantize_rows(h, q, xs, xzp, True)
            self.qlinear(q, xs, xzp, wp, ws, cs, b, act, out)
            h = out
        return h

    def qgemm_s32(self, a, w_packed, out, w_col_sums=None, nthreads=1):
        """out = a @ w_q.T exactly: a uint8/int8 (M, K), out int32 (M, N). Returns out."""
        w = self._qunpack(w_packed, out.shape[1], a.shape[1]).astype(np.int64)
        out[...] = a.astype(np.int64) @ w.T
        return out

    def qconv2d_forward_chunks(self, x, w_packed, w_scale, w_col_sums, bias, act, geom, oh, ow,
                               pool, x_scale, x_zero_point, step, counter, xq, xt, rows, out,
                               y):  # fmt: skip
        """int8 Conv2D, image by image, over the chunks of ``step`` images this caller claims
        from ``counter`` (as the float chunk kernels below). For image n:

        scale, zp = quantize_rows(x[n] as one row): its own pair (x_scale None, dynamic) or
            the static x_scale, x_zero_point (float32 / int32 (1,));
        rows (P, K) = each window of q(x[n]) taken channels last, as (ky, kx, c), with zp
            where the window lies in the padding (zero quantizes to zp exactly);
        out (P, F) = qlinear(rows, scale, zp, w_packed, w_scale, w_col_sums, bias, act);
        y[n] = out.T (F, P), or with pool (a max pool's (kh, kw, sh, sw, ph, pw, POH, POW))
            maxpool2d_forward(out.T) (F, POH POW).

        x float32 (N, C, H, W); w_packed from qpack_weights(W.transpose(0, 2, 3, 1).reshape(F,
        K)): K = kh kw C, columns in the rows' order; geom (kh, kw, sh, sw, ph, pw, dh, dw).
        Scratch: xq, xt uint8 (C H W,), rows uint8 (P, K), out float32 (P, F). Returns y.
        """
        kh, kw, sh, sw, ph, pw, dh, dw = geom
        _, c, h, w = x.shape
        f = out.shape[1]
        for _, n0, n1 in _claimed(counter, step, x.shape[0]):
            for n in range(n0, n1):
                s = np.ones(1, np.float32) if x_scale is None else x_scale
                zp = np.zeros(1, np.int32) if x_zero_point is None else x_zero_point
                q = self.quantize_rows(x[n].reshape(1, -1), xq.reshape(1, -1), s, zp,
                                       fixed=x_scale is not None)  # fmt: skip
                xt.reshape(h, w, c)[...] = q.reshape(c, h, w).transpose(1, 2, 0)
                canvas = np.full((max(ph + h, (oh - 1) * sh + (kh - 1) * dh + 1),
                                  max(pw + w, (ow - 1) * sw + (kw - 1) * dw + 1), c),
                                 zp[0], np.uint8)  # fmt: skip
                canvas[ph : ph + h, pw : pw + w] = xt.reshape(h, w, c)
                v = rows.reshape(oh, ow, kh, kw, c)
                for i in range(kh):
                    for j in range(kw):
                        y0, x0 = i * dh, j * dw
                        v[:, :, i, j] = canvas[y0 : y0 + (oh - 1) * sh + 1 : sh,
                                               x0 : x0 + (ow - 1) * sw + 1 : sw]  # fmt: skip
                self.qlinear(rows, s, zp, w_packed, w_scale, w_col_sums, bias, act, out)
                if pool is None:
                    y[n] = out.T
                else:
                    yn = y[n].reshape(1, f, *pool[6:])
                    argmax = np.empty(yn.shape, np.int64)
                    planes = np.ascontiguousarray(out.T).reshape(1, f, oh, ow)
                    self.maxpool2d_forward(planes, *pool[:6], yn, argmax)
        return y
