"""Back through a whole LSTM sequence for a range of batch rows (training): the packing of the
transposed recurrent weights and the NumPy twin of ``kernels/csrc/recurrent_back.h`` (bound
as ``ReferenceBackend.pack_lstm_back`` / ``lstm_rows_backward``).

The forward saved, for every step, the gates [i, f, g, o] (T, B, 4U) and every cell state
c (T + 1, B, U) (``recurrent_rows_forward`` with ``gates`` and T + 1 state slots). Then::

    dh_rec = 0
    for s = T-1 .. 0 (0 .. T-1 if reverse), p, q = the state slots before / after s:
        lstm_step_backward(gy[s], dh_rec, dh, dc, gates[s], c[q], c[p], mask[s], dz[s])
        dh_rec = dz[s] W_hh^T
    dh += dh_rec                   (dh, dc: the gradients reaching the first state)

each row alone (rows are independent through the sequence), so the compiled kernel splits
the batch over threads and gives the same bits for any split. The weight gradients are not
summed here: the op takes them from dz as one product over all steps (``_weight_grads``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_lstm_back", "unpack_lstm_back", "lstm_rows_backward"]


def pack_lstm_back(w_hh: np.ndarray) -> np.ndarray:
    """W_hh (U, 4U) -> (NB, 4U, 8), NB = ceil(U / 8): block j, row k, lane l holds
    W_hh[8j + l, k] (zero past U): lane l of dh_rec's block j sums dz[k] W_hh[8j + l, k]."""
    u, gu = w_hh.shape
    nb = -(-u // 8)
    padded = np.zeros((nb * 8, gu), w_hh.dtype)
    padded[:u] = w_hh
    return np.ascontiguousarray(padded.reshape(nb, 8, gu).transpose(0, 2, 1))


def unpack_lstm_back(w_back: np.ndarray, u: int) -> np.ndarray:
    """Inverse of pack_lstm_back, transposed: W_hh^T (4U, U), C-contiguous."""
    nb, gu, _ = w_back.shape
    return np.ascontiguousarray(w_back.transpose(1, 0, 2).reshape(gu, nb * 8)[:, :u])


def lstm_rows_backward(be, gy, gates, c, w_back, mask, dh, dc, dz, r0, r1, reverse) -> None:
    """The loop above for batch rows r0 .. r1-1 on backend ``be``'s step kernel.

    gy: (T, B, U) or None; gates: (T, B, 4U); c: (T + 1, B, U); w_back from pack_lstm_back;
    mask: (T, B) or None; dh, dc: (B, U) in/out; dz: (T, B, 4U) out. Returns None.
    """
    t, u, r = gates.shape[0], dh.shape[1], int(reverse)
    w_hh_t = unpack_lstm_back(w_back, u)
    rows = slice(r0, r1)
    dhr, dcr = dh[rows], dc[rows]  # views: the step kernel writes through them
    dh_rec = np.zeros_like(dhr)
    nxt = None
    for s in range(t) if reverse else range(t - 1, -1, -1):
        if nxt is not None:  # the gradient reaching h through the next step's product
            np.matmul(dz[nxt, rows], w_hh_t, out=dh_rec)
        p, q = s + r, s + 1 - r
        g = None if gy is None else gy[s, rows]
        m = None if mask is None else mask[s, rows]
        be.lstm_step_backward(g, dh_rec, dhr, dcr, gates[s, rows], c[q, rows], c[p, rows], m,
                              dz[s, rows])  # fmt: skip
        nxt = s
    if nxt is not None:
        dhr += dz[nxt, rows] @ w_hh_t
