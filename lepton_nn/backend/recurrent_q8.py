"""An int8 recurrent layer's whole sequence for a range of batch rows: the packing of its
weights and the NumPy twin of ``kernels/csrc/recurrent_q8.h`` (bound as
``ReferenceBackend.pack_recurrent_q8`` / ``recurrent_q8_forward``).

The semantics are those of the runtime's int8 recurrent step, one step at a time::

    xq, xs, xzp = quantize_rows(x)            x (T B, F) once: per row, or the static pair
    for s = 0 .. T-1 (T-1 .. 0 if reverse), p, q = the state slots before / after s:
        hq, hs, hzp = quantize_rows(h[p])     every row's h, dynamic (its own scale / zp)
        xz = (xq[s] - xzp) q_ih^T (xs s_ih) + b     int32 sums, then float32
        hz = (hq - hzp) q_hh^T (hs s_hh)
        the cell's step kernel on xz, hz (GRU: a = hz + b_hh inside it)

so the twin is the composition of the backend's own ``quantize_rows``, ``qlinear`` and step
kernels: on the compiled backend it gives the compiled fused kernel's bits exactly (tests),
on the reference backend the NumPy ones. Rows are independent and every piece is exact or
elementwise, so any split of the rows gives the same bits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_recurrent_q8", "recurrent_q8_forward", "unpack_recurrent_q8"]

_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


def pack_recurrent_q8(cell, q_ih, s_ih, b, q_hh, s_hh, b_hh):
    """One direction's int8 weights -> (wq int16 (NB, KX + KH, G 16), wf float32 (NB, 4, G 8)).

    q_ih int8 (G U, F) and q_hh int8 (G U, U) (a Dense weight's (N, K): W^T), per-column
    scales s_ih, s_hh float32 (G U,); b, b_hh float32 (G U,) or None (zeros). NB = ceil(U / 8)
    blocks of 8 units, KX = ceil(F / 2), KH = ceil(U / 2) pairs of rows. With K = [q_ih^T
    padded to 2 KX rows; q_hh^T padded to 2 KH rows] (zeros):
    ``wq[j, p, 16 g + 2 l + e] = K[2 p + e, g U + 8 j + l]`` (the pairs vpmaddwd sums) and
    ``wf[j, r, 8 g + l] = [s_ih, s_hh, b, b_hh][r][g U + 8 j + l]``, zeros past U.
    """
    g = _GATES[cell]
    gu, f = q_ih.shape
    u = gu // g
    kx, kh = -(-f // 2), -(-u // 2)
    k = np.zeros((2 * (kx + kh), gu), np.int16)
    k[:f] = q_ih.T
    k[2 * kx : 2 * kx + u] = q_hh.T
    nb = -(-u // 8)
    cols = np.zeros((k.shape[0], g, nb * 8), np.int16)
    cols[:, :, :u] = k.reshape(-1, g, u)
    # (pairs, 2, G, NB, 8) -> (NB, pairs, G, 8, 2)
    wq = cols.reshape(kx + kh, 2, g, nb, 8).transpose(3, 0, 2, 4, 1)
    vecs = [s_ih, s_hh, *(np.zeros(gu, np.float32) if v is None else v for v in (b, b_hh))]
    fl = np.zeros((4, g, nb * 8), np.float32)
    fl[:, :, :u] = np.stack([np.asarray(v, np.float32) for v in vecs]).reshape(4, g, u)
    wf = fl.reshape(4, g, nb, 8).transpose(2, 0, 1, 3)
    return (np.ascontiguousarray(wq).reshape(nb, kx + kh, g * 16),
            np.ascontiguousarray(wf).reshape(nb, 4, g * 8))  # fmt: skip


def unpack_recurrent_q8(cell, packed, f, u):
    """Inverse of pack_recurrent_q8: (q_ih, s_ih, b, q_hh, s_hh, b_hh), b's zeros kept."""
    wq, wf = packed
    g, nb = _GATES[cell], wq.shape[0]
    kx = -(-f // 2)
    k = wq.reshape(nb, -1, g, 8, 2).transpose(1, 4, 2, 0, 3).reshape(-1, g, nb * 8)
    k = k[:, :, :u].reshape(-1, g * u)
    fl = wf.reshape(nb, 4, g, 8).transpose(1, 2, 0, 3).reshape(4, g, nb * 8)[:, :, :u]
    s_ih, s_hh, b, b_hh = (np.ascontiguousarray(v.reshape(g * u)) for v in fl)
    q_ih = np.ascontiguousarray(k[:f].T.astype(np.int8))
    q_hh = np.ascontiguousarray(k[2 * kx : 2 * kx + u].T.astype(np.int8))
    return q_ih, s_ih, b, q_hh, s_hh, b_hh


def recurrent_q8_forward(be, cell, xq, xs, xzp, packed, h, c, mask, r0, r1, reverse):
    """All T steps of one int8 direction for batch rows r0 .. r1-1, on backend ``be``'s
    quantize_rows, qlinear and step kernels (the module docstring's loop).

    xq uint8 (T, B, F) with xs float32, xzp int32 of shape (T B,) (per row) or (1,) (one
    pair): ``quantize_rows`` of x (T B, F); packed from pack_recurrent_q8; h float32
    (H, B, U) state slots, c float32 (2, B, U) (LSTM) or None, mask float32 (T, B) or None:
    as ``recurrent_rows_forward``. Writes the states of rows r0 .. r1-1. Returns None.
    """
    t, bsz, f = xq.shape
    hn, u, n, rr = h.shape[0], h.shape[2], r1 - r0, int(reverse)
    q_ih, s_ih, bias, q_hh, s_hh, b_hh = unpack_recurrent_q8(cell, packed, f, u)
    p_ih, c_ih = be.qpack_weights(q_ih)
    p_hh, c_hh = be.qpack_weights(q_hh)
    gu, rows = q_ih.shape[0], slice(r0, r1)
    xz, hz = np.zeros((n, gu), np.float32), np.zeros((n, gu), np.float32)
    hq, hs, hzp = np.zeros((n, u), np.uint8), np.zeros(n, np.float32), np.zeros(n, np.int32)
    gates = np.zeros((n, 4 * u), np.float32)
    for s in range(t - 1, -1, -1) if reverse else range(t):
        p, q = s + rr, s + 1 - rr
        at = slice(s * bsz + r0, s * bsz + r1)
        pair = (xs, xzp) if xs.shape[0] == 1 else (xs[at], xzp[at])
        be.qlinear(xq[s, rows], *pair, p_ih, s_ih, c_ih, bias, 0, xz)
        hp, hq_ = h[p % hn, rows], h[q % hn, rows]
        be.quantize_rows(hp, hq, hs, hzp)
        be.qlinear(hq, hs, hzp, p_hh, s_hh, c_hh, None, 0, hz)
        m = None if mask is None else mask[s, rows]
        if cell == "LSTM":
            be.lstm_step_forward(xz, hz, c[p % 2, rows], hp, m, gates, c[q % 2, rows], hq_)
        elif cell == "GRU":
            be.gru_step_forward(xz, hz, b_hh, hp, m, gates, hq_)
        else:
            be.rnn_step_forward(xz, hz, hp, m, hq_)
