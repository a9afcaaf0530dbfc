"""NumPy twins of the recurrent cells: LSTM, GRU and SimpleRNN steps forward and back, weight
packing, the fused row-range loop (fp32 and int8 weights).

One family of :class:`~lepton_nn.backend.reference.ReferenceBackend`, the readable spec of
every kernel (see ``reference.py``); compiled backends subclass that class and override what
they speed up.
"""

from __future__ import annotations

import numpy as np

from .reference_common import _GATES, _sigmoid


class RecurrentTwins:
    """The recurrent kernels of :class:`~lepton_nn.backend.reference.ReferenceBackend`."""

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
