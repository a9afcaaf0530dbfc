"""Kernels jitted by Numba (``pip install lepton-nn[fast]``), cached on disk (``cache=True``).

Imported only when this backend is selected, so ``import lepton_nn`` never imports Numba.
Kernels not overridden here run their NumPy twin from :mod:`lepton_nn.backend.reference`.
"""

from __future__ import annotations

import numpy as np

from ..kernels import numba_cache
from .reference import GELU, ReferenceBackend

with numba_cache():  # a per-user cache folder when site-packages is not ours to write
    from ..kernels import numba_conv, numba_dense, numba_recurrent  # noqa: F401


class NumbaBackend(ReferenceBackend):
    """Just-in-time compiled kernels."""

    name = "numba"

    # -- dense epilogue, softmax cross-entropy, optimizers (kernels/numba_dense.py) --------
    # Imported with this backend (so never before Numba is wanted); reached as self._nb_dense.
    from ..kernels import numba_dense as _nb_dense

    def bias_act_forward(self, z, bias, act, out):
        """Twin: ReferenceBackend.bias_act_forward (reference.py); kernel: numba_dense.py
        (rows; a (N, M, P) input takes its bias in NumPy first, then f in place)."""
        k = self._nb_dense
        if z.ndim == 3:
            if bias is not None:
                np.add(z, bias[:, None], out=out)
                z, bias = out, None
            out2 = out.reshape(out.shape[0] * out.shape[1], out.shape[2])
            k.bias_act_forward(z.reshape(out2.shape), k.NO_ARRAY[z.dtype.type], False, act, out2)
            return out
        has_bias = bias is not None
        b = bias if has_bias else k.NO_ARRAY[z.dtype.type]
        return k.bias_act_forward(z, b, has_bias, act, out)

    def bias_act_backward(self, gy, y, z, bias, act, gz, gbias):
        """Twin: ReferenceBackend.bias_act_backward (reference.py); kernel: numba_dense.py
        (rows; for a (N, M, P) input gbias is summed by NumPy)."""
        k = self._nb_dense
        none = k.NO_ARRAY[gy.dtype.type]
        if gy.ndim == 3:
            rows = (gy.shape[0] * gy.shape[1], gy.shape[2])
            s = z + bias[:, None] if bias is not None and act == GELU else z
            k.bias_act_backward(
                gy.reshape(rows), y.reshape(rows), s.reshape(rows), none, False, act,
                gz.reshape(rows), none, False,
            )  # fmt: skip
            if gbias is not None:
                gbias[...] = gz.sum(axis=(0, 2))
            return gz, gbias
        has_bias, has_gbias = bias is not None, gbias is not None
        b = bias if has_bias else none
        gb = gbias if has_gbias else none
        k.bias_act_backward(gy, y, z, b, has_bias, act, gz, gb, has_gbias)
        return gz, gbias

    def softmax_xent_forward(self, logits, labels, probs, loss):
        """Twin: ReferenceBackend.softmax_xent_forward (reference.py); kernel: numba_dense.py."""
        return self._nb_dense.softmax_xent_forward(logits, labels, probs, loss)

    def softmax_xent_backward(self, probs, labels, gloss, glogits):
        """Twin: ReferenceBackend.softmax_xent_backward (reference.py); kernel: numba_dense.py."""
        return self._nb_dense.softmax_xent_backward(probs, labels, gloss, glogits)

    def adam_step(
        self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled, threads=1
    ):
        """Twin: ReferenceBackend.adam_step (reference.py); kernel: numba_dense.py (one
        thread)."""
        # fold the step's scalars in double, then round each once to p's dtype
        dt = p.dtype.type
        step_size = dt(lr / (1 - beta1**step))
        inv_sqrt_bc2 = dt((1 - beta2**step) ** -0.5)
        l2 = dt(0.0 if decoupled else weight_decay)
        decay = dt(1 - lr * weight_decay if decoupled else 1.0)
        b1, b2, one_m_b1, one_m_b2 = dt(beta1), dt(beta2), dt(1 - beta1), dt(1 - beta2)
        p, g, m, v = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
        self._nb_dense.adam_step(
            p, g, m, v, step_size, b1, b2, one_m_b1, one_m_b2, inv_sqrt_bc2, dt(eps), l2, decay
        )

    # -- convolution and pooling (kernels/numba_conv.py) ------------------------------------
    # Same signatures as the reference; bound straight (reached as self._nb_conv.<name>).
    from ..kernels import numba_conv as _nb_conv

    def im2col(self, x, kh, kw, sh, sw, ph, pw, dh, dw, cols):
        """Twin: ReferenceBackend.im2col (reference.py); kernel: numba_conv.py."""
        return self._nb_conv.im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, cols)

    def col2im(self, cols, kh, kw, sh, sw, ph, pw, dh, dw, gx):
        """Twin: ReferenceBackend.col2im (reference.py); kernel: numba_conv.py."""
        return self._nb_conv.col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, gx)

    def maxpool2d_forward(self, x, kh, kw, sh, sw, ph, pw, y, argmax):
        """Twin: ReferenceBackend.maxpool2d_forward (reference.py); kernel: numba_conv.py."""
        return self._nb_conv.maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, y, argmax)

    def maxpool2d_backward(self, gy, argmax, kh, kw, sh, sw, ph, pw, gx):
        """Twin: ReferenceBackend.maxpool2d_backward (reference.py); kernel: numba_conv.py
        (zero and scatter, whatever the window)."""
        return self._nb_conv.maxpool2d_backward(gy, argmax, gx)

    def avgpool2d_forward(self, x, kh, kw, sh, sw, ph, pw, count_pad, y):
        """Twin: ReferenceBackend.avgpool2d_forward (reference.py); kernel: numba_conv.py."""
        return self._nb_conv.avgpool2d_forward(x, kh, kw, sh, sw, ph, pw, bool(count_pad), y)

    def avgpool2d_backward(self, gy, kh, kw, sh, sw, ph, pw, count_pad, gx):
        """Twin: ReferenceBackend.avgpool2d_backward (reference.py); kernel: numba_conv.py."""
        return self._nb_conv.avgpool2d_backward(gy, kh, kw, sh, sw, ph, pw, bool(count_pad), gx)

    # -- recurrent cells (kernels/numba_recurrent.py) ---------------------------------------
    # An absent mask / gy / bhh becomes an empty array and a False flag (one compile per dtype).
    from ..kernels import numba_recurrent as _nb_rec

    def _opt(self, a, like, rows=False):
        if a is not None:
            return a, True
        return (self._nb_rec.NO_ROWS if rows else self._nb_rec.NO_ARRAY)[like.dtype.type], False

    def lstm_step_forward(self, xz, hz, c_prev, h_prev, mask, gates, c, h):
        """Twin: ReferenceBackend.lstm_step_forward (reference.py); kernel: numba_recurrent.py."""
        m, hm = self._opt(mask, c)
        return self._nb_rec.lstm_step_forward(xz, hz, c_prev, h_prev, m, hm, gates, c, h)

    def lstm_step_backward(self, gy, dh_rec, dh, dc, gates, c, c_prev, mask, dz):
        """Twin: ReferenceBackend.lstm_step_backward (reference.py); kernel: numba_recurrent.py."""
        (g, hg), (m, hm) = self._opt(gy, c, True), self._opt(mask, c)
        return self._nb_rec.lstm_step_backward(g, hg, dh_rec, dh, dc, gates, c, c_prev, m, hm, dz)

    def gru_step_forward(self, xz, hz, bhh, h_prev, mask, gates, h):
        """Twin: ReferenceBackend.gru_step_forward (reference.py); kernel: numba_recurrent.py."""
        (b, hb), (m, hm) = self._opt(bhh, h), self._opt(mask, h)
        return self._nb_rec.gru_step_forward(xz, hz, b, hb, h_prev, m, hm, gates, h)

    def gru_step_backward(self, gy, dh_rec, dh, gates, h_prev, mask, dxz, dhz):
        """Twin: ReferenceBackend.gru_step_backward (reference.py); kernel: numba_recurrent.py."""
        (g, hg), (m, hm) = self._opt(gy, h_prev, True), self._opt(mask, h_prev)
        return self._nb_rec.gru_step_backward(g, hg, dh_rec, dh, gates, h_prev, m, hm, dxz, dhz)

    def rnn_step_forward(self, xz, hz, h_prev, mask, h):
        """Twin: ReferenceBackend.rnn_step_forward (reference.py); kernel: numba_recurrent.py."""
        m, hm = self._opt(mask, h)
        return self._nb_rec.rnn_step_forward(xz, hz, h_prev, m, hm, h)

    def rnn_step_backward(self, gy, dh_rec, dh, h, mask, dz):
        """Twin: ReferenceBackend.rnn_step_backward (reference.py); kernel: numba_recurrent.py."""
        (g, hg), (m, hm) = self._opt(gy, h, True), self._opt(mask, h)
        return self._nb_rec.rnn_step_backward(g, hg, dh_rec, dh, h, m, hm, dz)
