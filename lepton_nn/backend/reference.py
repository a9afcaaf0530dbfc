"""The readable spec: a pure-NumPy twin of every kernel.

Each method here is the definition of what its compiled twins (``numba_backend.py``,
``cython_backend.py``) compute; they subclass :class:`ReferenceBackend` and override only
what they speed up. Kernels validate nothing: callers in ``ops/`` check shapes, dtypes and
contiguity first. Arrays are float32 or float64 (one dtype per call), C-contiguous.

Activation codes (``act``) index :data:`ACTIVATIONS`.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "gelu")
ACT_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}
IDENTITY, RELU, SIGMOID, TANH, GELU = range(5)

# gelu uses the tanh approximation: 0.5 z (1 + tanh(c (z + 0.044715 z^3))), c = sqrt(2/pi)
GELU_C = 0.7978845608028654
GELU_A = 0.044715
# gate blocks per recurrent cell (LSTM i, f, g, o; GRU z, r, n; SimpleRNN one)
_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


def _sigmoid(z):
    # stable for large |z|: exp only of non-positive numbers
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def _along_axis1(bias, z):
    """bias (M,) shaped to broadcast along axis 1 of z: (M,) for (N, M), (M, 1) for (N, M, P)."""
    return bias[:, None] if z.ndim == 3 else bias


_claim_lock = threading.Lock()


def _claimed(counter, step, n):
    """(i, n0, n1) for each chunk of ``step`` of n images this caller claims: i = counter[0],
    then counter[0] += 1 (under a lock; the compiled twins increment it atomically)."""
    while True:
        with _claim_lock:
            i = int(counter[0])
            counter[0] = i + 1
        if i * step >= n:
            return
        yield i, i * step, min(n, (i + 1) * step)


class QChain(NamedTuple):
    """A chain of int8 Dense layers (:meth:`ReferenceBackend.qdense_chain_prepare`)."""

    specs: tuple  # (w_packed, w_scale, w_col_sums, bias, act, x_scale, x_zero_point) per layer
    m: int  # rows
    k: int  # features in
    widths: tuple  # N per layer


class ReferenceBackend:
    """Pure NumPy. Always available; the one to read."""

    name = "reference"

    # -- dense epilogue ---------------------------------------------------------------
    def all_finite(self, x):
        """Whether no value of ``x`` is inf or NaN: ``bool(np.isfinite(x).all())``."""
        return bool(np.isfinite(x).all())

    def bias_act_forward(self, z, bias, act, out):
        """out = f(z + bias), the bias along axis 1.

        z: (N, M) (a Dense output) or (N, M, P) (a convolution's channels of P pixels);
        bias: (M,) or None; act: activation code; out: shaped as z, may be z itself.
        Returns out.
        """
        s = z + _along_axis1(bias, z) if bias is not None else z
        if act == IDENTITY:
            r = s
        elif act == RELU:
            r = np.maximum(s, 0)
        elif act == SIGMOID:
            r = _sigmoid(s)
        elif act == TANH:
            r = np.tanh(s)
        else:  # GELU
            r = 0.5 * s * (1.0 + np.tanh(GELU_C * (s + GELU_A * s * s * s)))
        out[...] = r
        return out

    # -- the training GEMM -----------------------------------------------------------------
    def gemm_own(self, dtype, m, n, k) -> bool:
        """Whether :meth:`gemm` runs a kernel of its own for this product (rather than
        ``np.matmul``): the compiled replay of ``lepton_nn.compile`` asks, to call the same."""
        return False

    def gemm(self, a, ta, b, tb, out=None):
        """out (m, n) = A' @ B', A' = a.T if ta else a, B' = b.T if tb else b (2-D): a Linear
        layer's X W, X^T G_z and G_z W^T. ``np.matmul``, with BLAS on one thread for products
        too small or thin to gain from its split (:class:`~lepton_nn.backend.threads.blas_single`).
        Returns out (a new C-contiguous array if None)."""
        from .threads import blas_single

        A, B = (a.T if ta else a), (b.T if tb else b)
        (m, k), n = A.shape, B.shape[1]
        with blas_single(2 * m * k * n, thin=min(m, k, n) < 32):
            return np.matmul(A, B) if out is None else np.matmul(A, B, out=out)

    def dense_chain_forward(self, x, ws, bs, acts, outs):
        """Dense layers one after the other: h = x; for each layer l,
        outs[l] = f_l(h @ ws[l] + bs[l]) and h = outs[l]. x (M, K_0); ws[l] (K_l, N_l);
        bs[l] (N_l,) or None; acts[l] an activation code; outs[l] (M, N_l). Returns outs[-1].
        (The runtime's batch-1 MLP: one call for the chain.)"""
        h = x
        for w, b, act, out in zip(ws, bs, acts, outs, strict=True):
            np.matmul(h, w, out)
            self.bias_act_forward(out, b, act, out)
            h = out
        return h

    def dense_pack(self, w):
        """W (K, N) float32 as its column panels (ceil(N/16), K, 16): panel p, row k holds
        W[k, 16p:16p+16], zeros past N; 64-byte aligned (a panel row is one cache line).
        The only form of W that ``dense_packed_forward`` reads (layout, no arithmetic)."""
        k, n = w.shape
        p = -(-n // 16)
        raw = np.zeros(p * k * 16 + 16, np.float32)
        skip = (-raw.ctypes.data % 64) // 4
        panels = raw[skip : skip + p * k * 16].reshape(p, k, 16)
        full = n // 16
        panels[:full] = w[:, : full * 16].reshape(k, full, 16).transpose(1, 0, 2)
        if n % 16:
            panels[full, :, : n % 16] = w[:, full * 16 :]
        return panels

    def dense_packed_forward(self, x, panels, bs, acts, outs, threads=1):
        """Dense layers one after the other on packed weights: h = x; for each layer l,
        outs[l] = f_l(h @ W_l + bs[l]), h = outs[l], W_l (K_l, N_l) given as
        ``panels[l] = dense_pack(W_l)``. x (M, K_0) float32; bs[l] (N_l,) or None; acts[l]
        an activation code; outs[l] (M, N_l). ``threads``: how many threads may share each
        layer (the results do not depend on it). Returns outs[-1]."""
        h = x
        for p, b, act, out in zip(panels, bs, acts, outs, strict=True):
            w = p.transpose(1, 0, 2).reshape(p.shape[1], 16 * p.shape[0])[:, : out.shape[1]]
            np.matmul(h, w, out)
            self.bias_act_forward(out, b, act, out)
            h = out
        return h

    def bias_act_backward(self, gy, y, z, bias, act, gz, gbias):
        """Back through y = f(z + b).

        gy, y, z: (N, M) or (N, M, P) upstream grad, forward output, pre-bias input; bias:
        (M,) or None, along axis 1. Writes gz = gy * f'(z + b) into gz (may be gy itself) and,
        when gbias is not None, gbias = gz summed over every axis but 1. relu/sigmoid/tanh use
        y; gelu recomputes from z + b. Returns (gz, gbias).
        """
        if act == IDENTITY:
            r = gy
        elif act == RELU:
            r = gy * (y > 0)
        elif act == SIGMOID:
            r = gy * y * (1 - y)
        elif act == TANH:
            r = gy * (1 - y * y)
        else:  # GELU
            s = z + _along_axis1(bias, z) if bias is not None else z
            t = np.tanh(GELU_C * (s + GELU_A * s**3))
            sech2 = 1 - t * t
            with np.errstate(over="ignore", invalid="ignore"):
                second = 0.5 * s * sech2 * GELU_C * (1 + 3 * GELU_A * s * s)
            # 0 where sech2 is (not 0 * inf = NaN once s * s overflows)
            d = 0.5 * (1 + t) + np.where(sech2 == 0, 0, second)
            r = gy * d
        gz[...] = r
        if gbias is not None:
            gbias[...] = gz.sum(axis=(0, 2) if gz.ndim == 3 else 0)
        return gz, gbias

    # -- softmax cross-entropy ----------------------------------------------------------
    def softmax_xent_forward(self, logits, labels, probs, loss):
        """Per-sample loss[i] = logsumexp(logits[i]) - logits[i, labels[i]].

        logits, probs: (N, C); labels: (N,) int64 in [0, C); loss: (N,).
        Writes the softmax into probs (stable: shifts by the row max). Returns loss.
        """
        m = logits.max(axis=1, keepdims=True) if logits.shape[1] else 0
        e = np.exp(logits - m)
        s = e.sum(axis=1, keepdims=True)
        probs[...] = e / s
        rows = np.arange(logits.shape[0])
        loss[...] = (np.log(s[:, 0]) + m[:, 0]) - logits[rows, labels]
        return loss

    def softmax_xent_backward(self, probs, labels, gloss, glogits):
        """glogits = (probs - onehot(labels)) * gloss[:, None]. Returns glogits."""
        g = probs.copy()
        g[np.arange(probs.shape[0]), labels] -= 1
        glogits[...] = g * gloss[:, None]
        return glogits

    # -- optimizers -----------------------------------------------------------------------
    def adam_step(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
        """One Adam/AdamW update, in place on p, m, v (PyTorch's documented rule).

        decoupled=False (Adam, L2):  g <- g + wd * p
        decoupled=True  (AdamW):     p <- p * (1 - lr * wd)
        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
        All arrays share one shape and dtype; scalars are Python floats, step is t >= 1.
        """
        if weight_decay != 0:
            if decoupled:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        bc1 = 1 - beta1**step
        bc2 = 1 - beta2**step
        denom = np.sqrt(v) / np.sqrt(bc2) + eps
        p -= (lr / bc1) * m / denom

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
        so the compiled twins match bit for bit. Returns q.
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

    def qdense_chain_prepare(self, specs, m, k):
        """int8 Dense layers for :meth:`qdense_chain_forward`: ``specs`` one (w_packed,
        w_scale, w_col_sums, bias, act, x_scale, x_zero_point) per layer, as qlinear takes
        them, with x_scale / x_zero_point None (dynamic: each row quantized with its own
        pair) or float32 / int32 (1,) (static: the calibrated pair); ``m`` rows of ``k``
        features in. Returns a :class:`QChain` (the compiled twin: an object with the same
        ``specs``, ``m``, ``k``, ``widths``, holding its scratch)."""
        specs = tuple(specs)
        return QChain(specs, m, k, tuple(s[1].shape[0] for s in specs))

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

    # -- sparse matmul (pruning) ---------------------------------------------------------------
    # A pruned W (K, N) is kept as CSR over its output columns (the CSR of W.T): column n has
    # rows indices[indptr[n]:indptr[n+1]] (ascending) holding values[indptr[n]:indptr[n+1]].

    def to_csr(self, w, threshold=0.0):
        """W (K, N) -> (indptr int32 (N+1,), indices int32 (nnz,), values float32 (nnz,)),
        keeping the entries with |w| > threshold (and NaNs: the product must show them)."""
        wt = np.asarray(w, np.float32).T  # (N, K)
        cols, rows = np.nonzero(~(np.abs(wt) <= threshold))
        indptr = np.zeros(wt.shape[0] + 1, np.int32)
        indptr[1:] = np.cumsum(np.bincount(cols, minlength=wt.shape[0]))
        return indptr, rows.astype(np.int32), wt[cols, rows]

    def sparse_linear(self, x, indptr, indices, values, bias, act, out, kernel=0, check=True):
        """out = act(x @ W + bias), W given as CSR over output columns.

        x float32 (B, K); bias float32 (N,) or None; act code; out float32 (B, N).
        Here W is rebuilt dense: W[indices[j], n] = values[j] for j in column n. Returns out.
        ``kernel`` (which compiled loop) and ``check`` (the compiled twin's O(nnz) check of the
        CSR structure, skipped with False) are accepted for the same signature and ignored.
        """
        N, K = out.shape[1], x.shape[1]
        w = np.zeros((K, N), x.dtype)
        w[indices, np.repeat(np.arange(N), np.diff(indptr))] = values
        return self.bias_act_forward(x @ w, bias, act, out)

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

    # -- recurrent cells ---------------------------------------------------------------------
    # The pointwise math of one time step, after its GEMMs (the caller runs np.matmul):
    #   xz = x_t W_ih + b  (B, G*U),   hz = h_prev W_hh  (B, G*U),   G gates of U units each.
    # mask: (B,) of the data's dtype, 1 where the step belongs to the sequence and 0 past its
    # end (that row's state is then carried over unchanged), or None for all ones.
    # Backward kernels run in reverse step order. The gradient reaching h_t is
    #   d = mask * gy + dh_rec + dh,   gy: the output's gradient (B, U) or None,
    #   dh_rec = dz_next W_hh^T (B, U): through the next step's GEMM,
    #   dh (B, U, in/out): the rest (masked rows pass d straight on; GRU's z * d term).

    def lstm_step_forward(self, xz, hz, c_prev, h_prev, mask, gates, c, h):
        """One LSTM step; gate blocks in the order i, f, g, o.

        z = xz + hz;  i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g)
        c = f * c_prev + i * g;  h = o * tanh(c);  rows with mask 0: c = c_prev, h = h_prev.
        xz, hz, gates: (B, 4U); c_prev, h_prev, c, h: (B, U). Writes gates = [i, f, g, o],
        c and h. Returns h.
        """
        u = c.shape[1]
        z = xz + hz
        i, f, o = _sigmoid(z[:, :u]), _sigmoid(z[:, u : 2 * u]), _sigmoid(z[:, 3 * u :])
        g = np.tanh(z[:, 2 * u : 3 * u])
        gates[...] = np.concatenate([i, f, g, o], axis=1)
        c_new = f * c_prev + i * g
        h_new = o * np.tanh(c_new)
        if mask is not None:
            keep = mask[:, None] > 0
            c_new = np.where(keep, c_new, c_prev)
            h_new = np.where(keep, h_new, h_prev)
        c[...] = c_new
        h[...] = h_new
        return h

    def lstm_step_backward(self, gy, dh_rec, dh, dc, gates, c, c_prev, mask, dz):
        """Back through one LSTM step (BPTT), from the saved gates and cells.

        d = mask * gy + dh_rec + dh;  tc = tanh(c);  dc <- dc + d * o * (1 - tc^2)
        dz = [dc g i (1 - i), dc c_prev f (1 - f), dc i (1 - g^2), d tc o (1 - o)]
        then dc <- dc * f (the gradient of c_prev) and dh <- 0.
        Rows with mask 0: dz = 0, dc unchanged, dh <- d.
        gy: (B, U) or None; dh_rec, dh, dc, c, c_prev: (B, U); gates, dz: (B, 4U).
        Writes dz, dh, dc. Returns dz.
        """
        u = c.shape[1]
        m = 1 if mask is None else mask[:, None]
        d = dh_rec + dh if gy is None else dh_rec + dh + m * gy
        i, f, g, o = (gates[:, k * u : (k + 1) * u] for k in range(4))
        tc = np.tanh(c)
        dct = dc + d * o * (1 - tc * tc)
        grads = [dct * g * i * (1 - i), dct * c_prev * f * (1 - f), dct * i * (1 - g * g)]
        dzz = np.concatenate([*grads, d * tc * o * (1 - o)], axis=1)
        if mask is None:
            dz[...] = dzz
            dc[...] = dct * f
            dh[...] = 0
        else:
            keep = mask[:, None] > 0
            dz[...] = np.where(keep, dzz, 0)
            dc[...] = np.where(keep, dct * f, dc)
            dh[...] = np.where(keep, 0, d)
        return dz

    def gru_step_forward(self, xz, hz, bhh, h_prev, mask, gates, h):
        """One GRU step, reset applied after the recurrent matmul (PyTorch; Keras's
        reset_after=True); gate blocks in the order z (update), r (reset), n (candidate).

        a = hz + bhh;  z = sigmoid(xz_z + a_z);  r = sigmoid(xz_r + a_r)
        n = tanh(xz_n + r * a_n);  h = (1 - z) * n + z * h_prev;  rows with mask 0: h = h_prev.
        xz, hz: (B, 3U); bhh: (3U,) or None; h_prev, h: (B, U); gates: (B, 4U).
        Writes gates = [z, r, n, a_n] and h. Returns h.
        """
        u = h.shape[1]
        a = hz + bhh if bhh is not None else hz
        z = _sigmoid(xz[:, :u] + a[:, :u])
        r = _sigmoid(xz[:, u : 2 * u] + a[:, u : 2 * u])
        n = np.tanh(xz[:, 2 * u :] + r * a[:, 2 * u :])
        gates[...] = np.concatenate([z, r, n, a[:, 2 * u :]], axis=1)
        h_new = (1 - z) * n + z * h_prev
        h[...] = h_new if mask is None else np.where(mask[:, None] > 0, h_new, h_prev)
        return h

    def gru_step_backward(self, gy, dh_rec, dh, gates, h_prev, mask, dxz, dhz):
        """Back through one GRU step.

        d = mask * gy + dh_rec + dh;  dn = d (1 - z) (1 - n^2);  dzz = d (h_prev - n) z (1 - z)
        dr = dn a_n r (1 - r);  dxz = [dzz, dr, dn];  dhz = [dzz, dr, dn * r];  dh <- d * z.
        Rows with mask 0: dxz = dhz = 0, dh <- d.
        gy: (B, U) or None; dh_rec, dh, h_prev: (B, U); gates: (B, 4U); dxz, dhz: (B, 3U).
        Writes dxz, dhz, dh. Returns dxz.
        """
        u = h_prev.shape[1]
        m = 1 if mask is None else mask[:, None]
        d = dh_rec + dh if gy is None else dh_rec + dh + m * gy
        z, r, n, an = (gates[:, k * u : (k + 1) * u] for k in range(4))
        dn = d * (1 - z) * (1 - n * n)
        dzz = d * (h_prev - n) * z * (1 - z)
        dr = dn * an * r * (1 - r)
        gx = np.concatenate([dzz, dr, dn], axis=1)
        gh = np.concatenate([dzz, dr, dn * r], axis=1)
        if mask is None:
            dxz[...], dhz[...], dh[...] = gx, gh, d * z
        else:
            keep = mask[:, None] > 0
            dxz[...] = np.where(keep, gx, 0)
            dhz[...] = np.where(keep, gh, 0)
            dh[...] = np.where(keep, d * z, d)
        return dxz

    def rnn_step_forward(self, xz, hz, h_prev, mask, h):
        """One Elman step: h = tanh(xz + hz); rows with mask 0: h = h_prev.
        xz, hz: (B, U); h_prev, h: (B, U). Writes h. Returns h."""
        h_new = np.tanh(xz + hz)
        h[...] = h_new if mask is None else np.where(mask[:, None] > 0, h_new, h_prev)
        return h

    def rnn_step_backward(self, gy, dh_rec, dh, h, mask, dz):
        """d = mask * gy + dh_rec + dh;  dz = d (1 - h^2), dh <- 0;  rows with mask 0: dz = 0,
        dh <- d. h: the step's output state (B, U); dz: (B, U). Writes dz, dh. Returns dz."""
        m = 1 if mask is None else mask[:, None]
        d = dh_rec + dh if gy is None else dh_rec + dh + m * gy
        if mask is None:
            dz[...] = d * (1 - h * h)
            dh[...] = 0
        else:
            keep = mask[:, None] > 0
            dz[...] = np.where(keep, d * (1 - h * h), 0)
            dh[...] = np.where(keep, 0, d)
        return dz

    def pack_recurrent(self, cell, w_ih, b, w_hh, b_hh):
        """The weights of one direction of an LSTM / GRU / SimpleRNN, packed for
        recurrent_rows_forward: (NB, K, G 8), NB = ceil(U / 8) blocks of 8 units.

        Rows K = [bias; W_ih (F, G U); W_hh (U, G U)], for GRU one more: [0, 0, b_hh_n], and
        its bias row holds b + b_hh for the z and r gates. Block j, row k holds the columns
        g U + 8j .. g U + 8j + 7 of each gate g in turn (zeros past U). b, b_hh may be None.
        """
        g = _GATES[cell]
        f, gu = w_ih.shape
        u, dt = gu // g, w_ih.dtype
        bias = np.zeros(gu, dt) if b is None else b.astype(dt, copy=True)
        rows = [bias[None], w_ih, w_hh]
        if cell == "GRU":
            bhh = np.zeros(gu, dt) if b_hh is None else b_hh.astype(dt)
            bias[: 2 * u] += bhh[: 2 * u]
            rows.append(np.concatenate([np.zeros(2 * u, dt), bhh[2 * u :]])[None])
        w = np.concatenate(rows).reshape(-1, g, u)  # (K, G, U)
        nb = -(-u // 8)
        padded = np.zeros((w.shape[0], g, nb * 8), dt)
        padded[:, :, :u] = w
        blocks = padded.reshape(w.shape[0], g, nb, 8).transpose(2, 0, 1, 3)  # (NB, K, G, 8)
        return np.ascontiguousarray(blocks).reshape(nb, w.shape[0], g * 8)

    @staticmethod
    def _unpack_recurrent(cell, w_packed, f, u):
        """Inverse of pack_recurrent: (bias (G U,), W_ih (F, G U), W_hh (U, G U), GRU's
        [0, 0, b_hh_n] row or None)."""
        nb, k, gw = w_packed.shape
        g = gw // 8
        w = w_packed.reshape(nb, k, g, 8).transpose(1, 2, 0, 3).reshape(k, g, nb * 8)
        w = w[:, :, :u].reshape(k, g * u)
        return w[0], w[1 : 1 + f], w[1 + f : 1 + f + u], w[-1] if cell == "GRU" else None

    def recurrent_rows_exact(self, dtype) -> bool:
        """Whether recurrent_rows_forward gives the same bits for any split of the batch rows
        (the runtime then splits them over threads): not here, np.matmul may round otherwise
        at another row count."""
        return False

    def recurrent_rows_threads(self, cell, x, w_packed, h, c, mask, bounds, reverse, threads,
                               gates=None):  # fmt: skip
        """recurrent_rows_forward(cell, x, w_packed, h, c, mask, bounds[i], bounds[i + 1],
        reverse, gates) for each range i of ``bounds`` (int64, 0 .. B), on up to ``threads``
        threads (here, in turn). Returns None."""
        for r0, r1 in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            self.recurrent_rows_forward(cell, x, w_packed, h, c, mask, r0, r1, reverse, gates)

    def recurrent_rows_forward(self, cell, x, w_packed, h, c, mask, r0, r1, reverse,
                               gates=None):  # fmt: skip
        """All T steps of one direction of a recurrent layer for batch rows r0 .. r1-1
        (rows are independent, so threads may run disjoint ranges).

        For s = 0 .. T-1 (T-1 .. 0 if reverse), r = int(reverse), p = s + r, q = s + 1 - r,
        rows i = r0 .. r1-1: xz = bias + x[s, i] @ W_ih, hz = h[p % H, i] @ W_hh, then the
        cell's step kernel with mask[s, i], writing state q: LSTM into c[q % C], h[q % H];
        GRU (b_hh_n added to hz's n part) and SimpleRNN into h[q % H].
        cell: "LSTM" | "GRU" | "SimpleRNN"; x: (T, B, F); w_packed from pack_recurrent;
        h: (H, B, U) state slots; c: (C, B, U) or None; mask: (T, B) or None. The inference
        runtime alternates 2 slots; training keeps all T + 1 and each step's gates
        (T, B, 4U) as the step kernels write them (LSTM and GRU; None: not kept). Returns None.
        """
        hn, r, u = h.shape[0], int(reverse), h.shape[2]
        cn = 2 if c is None else c.shape[0]
        bias, w_ih, w_hh, bhh = self._unpack_recurrent(cell, w_packed, x.shape[2], u)
        rows = slice(r0, r1)
        scratch = np.zeros((r1 - r0, 4 * u), h.dtype)
        for s in range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0]):
            p, q = s + r, s + 1 - r
            hp, hq = h[p % hn, rows], h[q % hn, rows]
            xz, hz = np.matmul(x[s, rows], w_ih) + bias, np.matmul(hp, w_hh)
            m = None if mask is None else mask[s, rows]
            gs = scratch if gates is None else gates[s, rows]
            if cell == "LSTM":
                self.lstm_step_forward(xz, hz, c[p % cn, rows], hp, m, gs, c[q % cn, rows], hq)
            elif cell == "GRU":
                self.gru_step_forward(xz, hz, bhh, hp, m, gs, hq)
            else:
                self.rnn_step_forward(xz, hz, hp, m, hq)

    # training: back through an LSTM sequence by ranges of rows (recurrent_train.py)

    def pack_lstm_back(self, w_hh):
        """W_hh (U, 4U) packed for lstm_rows_backward; see
        :func:`lepton_nn.backend.recurrent_train.pack_lstm_back`."""
        from .recurrent_train import pack_lstm_back

        return pack_lstm_back(w_hh)

    def lstm_back_threads(self, gy, gates, c, w_back, mask, dh, dc, dz, bounds, reverse,
                          threads):  # fmt: skip
        """lstm_rows_backward for each range of rows [bounds[i], bounds[i + 1]) on up to
        ``threads`` threads (here, in turn). Returns None."""
        for r0, r1 in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            self.lstm_rows_backward(gy, gates, c, w_back, mask, dh, dc, dz, r0, r1, reverse)

    def lstm_rows_backward(self, gy, gates, c, w_back, mask, dh, dc, dz, r0, r1, reverse):
        """Back through all steps of an LSTM for batch rows r0 .. r1-1, on this backend's
        step kernel; see :func:`lepton_nn.backend.recurrent_train.lstm_rows_backward`."""
        from .recurrent_train import lstm_rows_backward

        lstm_rows_backward(self, gy, gates, c, w_back, mask, dh, dc, dz, r0, r1, reverse)

    # int8 weights: the same loop with x and each step's h quantized per row (recurrent_q8.py)

    def pack_recurrent_q8(self, cell, q_ih, s_ih, b, q_hh, s_hh, b_hh):
        """One direction's int8 weights packed for recurrent_q8_forward: (wq int16, wf
        float32); see :func:`lepton_nn.backend.recurrent_q8.pack_recurrent_q8`."""
        from . import recurrent_q8 as _q8  # imported at the first int8 recurrent layer

        return _q8.pack_recurrent_q8(cell, q_ih, s_ih, b, q_hh, s_hh, b_hh)

    def recurrent_q8_threads(self, cell, xq, xs, xzp, packed, h, c, mask, bounds, reverse, threads):
        """recurrent_q8_forward for each range of rows [bounds[i], bounds[i + 1]) on up to
        ``threads`` threads (here, in turn). Returns None."""
        for r0, r1 in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            self.recurrent_q8_forward(cell, xq, xs, xzp, packed, h, c, mask, r0, r1, reverse)

    def recurrent_q8_forward(self, cell, xq, xs, xzp, packed, h, c, mask, r0, r1, reverse):
        """recurrent_rows_forward for int8 weights, on this backend's quantize_rows, qlinear
        and step kernels; see :func:`lepton_nn.backend.recurrent_q8.recurrent_q8_forward`."""
        from . import recurrent_q8 as _q8

        _q8.recurrent_q8_forward(self, cell, xq, xs, xzp, packed, h, c, mask, r0, r1, reverse)
