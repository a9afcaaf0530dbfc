"""Recurrent networks over whole sequences, and the embedding lookup that usually feeds them.

Each of ``LSTM``, ``GRU``, ``SimpleRNN`` is ONE ``Function`` for the whole sequence:

- forward: one GEMM for the input projections of all steps (X W_ih + b), then per step one
  GEMM (h_prev W_hh) and one backend kernel for the gate math, saving gates and states
  (LSTM: the whole recurrence is one backend call over ranges of batch rows, below);
- backward (BPTT): per step, in reverse, one kernel for the gate gradients and one GEMM
  (dz W_hh^T) for the gradient reaching the previous state (LSTM: one backend call); then
  one GEMM each for dW_ih, dW_hh and dX over all steps at once (LSTM, SimpleRNN: db, dW_ih
  and dW_hh as one GEMM).

Shapes: x (B, T, F) batch first; weights in Keras's layout, ``w_ih`` (F, G U), ``w_hh``
(U, G U), G = 4 (LSTM: i, f, g, o), 3 (GRU: z, r, n), 1 (SimpleRNN). Internally time-major:
states ``H[k]`` (T + 1, B, U). Going forward, step t reads state t and writes t + 1; with
``reverse=True`` (the backward half of a bidirectional layer) steps run from T - 1 down to
0, step t reading state t + 1 and writing t.

Variable lengths: ``mask`` (B, T) of booleans; where it is False the state is carried over
unchanged and the output is 0. For right-padded batches, running in reverse with the mask
is exactly "each sequence reversed within its own length".

Outputs are packed in one array (a Function returns one): (B, T + S, U) holding the T
outputs, then the S final states (LSTM: h, c; others: h). Use :func:`lstm`, :func:`gru`,
:func:`simple_rnn`, which split it. With ``sequences=False`` (a layer that returns only its
last state) the op packs the S final states alone, (B, S, U): no copy of the T outputs
forward, and backward no gradient of them to scatter, transpose and read (gy = None).
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_backend
from ..backend.threads import blas_single, row_ranges, thread_ranges, threads_for
from ..errors import ShapeError
from ._workspace import recycled, workspace

__all__ = [
    "LSTM",
    "GRU",
    "SimpleRNN",
    "Embedding",
    "lstm",
    "gru",
    "simple_rnn",
    "embedding",
    "lengths_to_mask",
]


class _Sequence(Function):
    """What the three recurrent ops share: input projection, state arrays, packing."""

    gates = 1  # G: gate blocks of U columns in w_ih / w_hh
    #: ``tap(op, dxz, dhz, hp)`` called in backward with the per-step gradients (T, B, G U)
    #: and the states each step started from (T, B, U): per-example gradients
    #: (:mod:`lepton_nn.privacy`) read them here. Empty (and free) otherwise.
    weight_grad_taps: list = []

    def _one_blas_thread(self, compiled=False):
        """BLAS on one thread for the per-step products h (B, U) @ W_hh (U, G U): OpenBLAS
        split them over its threads (from 0.5 MFLOP), a wake-up and a wait each step; on a
        busy machine W4's step ran 1.6 s at 2 threads against 35 ms at 1. ``compiled``: no
        BLAS product per step (the compiled sequence kernels), nothing to hold."""
        u, gu = self.w_hh.shape
        rows = self.xt.shape[0] // max(len(self.steps), 1)
        return blas_single(0 if compiled else 2 * rows * u * gu)

    def _prepare(self, x, w_ih, w_hh, b, mask, reverse, sequences):
        """Weights in x's dtype, x time-major (T B, F), the mask, the step order and
        whether the outputs of every step are packed."""
        dt, self.sequences = x.dtype, sequences
        self.w_ih, self.w_hh = np.asarray(w_ih, dt), np.asarray(w_hh, dt)
        bt, t, f = x.shape
        self.xt = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(t * bt, f)  # (T B, F)
        self.mask, self.reverse, self.has_b = mask, reverse, b is not None
        self.steps = range(t - 1, -1, -1) if reverse else range(t)

    def _setup(self, x, w_ih, w_hh, b, mask, reverse, sequences):
        """_prepare, then the input projections of all steps: X W_ih + b (T, B, G U)."""
        self._prepare(x, w_ih, w_hh, b, mask, reverse, sequences)
        dt, (bt, t, _) = x.dtype, x.shape
        xz = workspace("rnn_xz", (t * bt, self.w_ih.shape[1]), dt)  # forward-only scratch
        get_backend().gemm(self.xt, False, self.w_ih, False, xz)  # (T B, G U)
        if b is not None:
            xz += np.asarray(b, dt)
        return xz.reshape(t, bt, self.w_ih.shape[1])

    def _masks(self, t):
        """Per step, the (B,) mask row or None."""
        return [None] * t if self.mask is None else list(self.mask)

    def _pack(self, states):
        """(B, T + S, U): outputs (masked to 0), then each final state; without
        ``sequences`` (B, S, U), the final states alone."""
        h = states[0]
        t = h.shape[0] - 1
        final = 0 if self.reverse else t
        if not self.sequences:
            return np.stack([s[final] for s in states], axis=1)
        ys = h[:-1] if self.reverse else h[1:]  # (T, B, U)
        out = recycled((h.shape[1], t + len(states), h.shape[2]), h.dtype)
        out[:, :t] = ys.transpose(1, 0, 2)
        if self.mask is not None:
            out[:, :t] *= self.mask.T[:, :, None]
        for k, s in enumerate(states):
            out[:, t + k] = s[final]
        return out

    def _unpack_grad(self, g, n_states):
        """The packed gradient as (GY time-major (T, B, U), [d final state, ...]); GY is
        None without ``sequences``."""
        t = g.shape[1] - n_states  # 0 without sequences
        finals = [np.array(g[:, t + k], dtype=self.xt.dtype) for k in range(n_states)]
        if not self.sequences:
            return None, finals
        gy = workspace("rnn_gy", (t, g.shape[0], g.shape[2]), self.xt.dtype)
        gy[...] = g[:, :t].transpose(1, 0, 2)
        return gy, finals

    def _weight_grads(self, dxz, dhz, h):
        """dX, dW_ih, dW_hh, db from the per-step pre-activation gradients (T, B, G U)."""
        t, bt, gu = dxz.shape
        dxz2 = dxz.reshape(t * bt, gu)
        # the state each step started from, all steps stacked: (T B, U)
        hp = (h[1:] if self.reverse else h[:-1]).reshape(t * bt, h.shape[2])
        for tap in _Sequence.weight_grad_taps:
            tap(self, dxz, dhz, hp.reshape(t, bt, h.shape[2]))
        gx = gw_ih = gw_hh = gb = None
        gemm = get_backend().gemm  # F is often small: thin products stay on one BLAS thread
        if self.needs_grad[0]:
            gx = gemm(dxz2, False, self.w_ih, True).reshape(t, bt, -1).transpose(1, 0, 2)
        if dxz is dhz and self.has_b and all(self.needs_grad[1:4]):
            # [db; dW_ih; dW_hh] = [1, X, H_prev]^T dz: one product, one pass over dz
            # instead of three (the thin X^T dz alone ran at a third of the GEMM's speed);
            # dW_hh and db come out with the same bits as apart
            f, u = self.xt.shape[1], h.shape[2]
            a = workspace("rnn_a", (t * bt, 1 + f + u), dxz.dtype)
            a[:, 0] = 1
            a[:, 1 : 1 + f] = self.xt
            a[:, 1 + f :] = hp
            w = gemm(a, True, dxz2, False)
            return gx, w[1 : 1 + f], w[1 + f :], w[0]
        if self.needs_grad[1]:
            gw_ih = gemm(self.xt, True, dxz2, False)
        if self.needs_grad[2]:
            gw_hh = gemm(hp, True, dhz.reshape(t * bt, gu), False)
        if self.has_b and self.needs_grad[3]:
            gb = dxz2.sum(axis=0)
        return gx, gw_ih, gw_hh, gb


class LSTM(_Sequence):
    """Long short-term memory over a sequence; gate order i, f, g (cell), o.

    z_t = x_t W_ih + h_{t-1} W_hh + b;  i, f, o = sigmoid(.), g = tanh(.)
    c_t = f c_{t-1} + i g;  h_t = o tanh(c_t).
    Inputs x (B, T, F), w_ih (F, 4U), w_hh (U, 4U), b (4U,) [optional], h0, c0 (B, U).
    Output (B, T + 2, U): h_1..h_T (0 where masked), then the final h and c; with
    ``sequences=False`` (B, 2, U): the final h and c.

    Both directions of the recurrence are one backend call each over ranges of batch rows
    (rows are independent through the sequence; the compiled kernels split them over the
    native pool with the same bits at any thread count): ``recurrent_rows_threads`` keeping
    every state and each step's gates, then ``lstm_back_threads`` giving dz (T, B, 4U); the
    weight gradients are products over all steps at once (``_weight_grads``).
    """

    gates = 4

    def forward(
        self, x, w_ih, w_hh, b=None, h0=None, c0=None, mask=None, reverse=False, sequences=True
    ):
        be = get_backend()
        self._prepare(x, w_ih, w_hh, b, mask, reverse, sequences)
        (bt, t, f), u, dt = x.shape, self.w_hh.shape[0], x.dtype
        h = recycled((t + 1, bt, u), dt)  # every state: the backward reads them all
        c = recycled(h.shape, dt)
        g = recycled((t, bt, 4 * u), dt)  # each step's gates [i, f, g, o]
        first = t if reverse else 0
        h[first], c[first] = h0, c0
        wp = be.pack_recurrent("LSTM", self.w_ih, None if b is None else np.asarray(b, dt),
                               self.w_hh, None)  # fmt: skip
        # rows split over threads only where the bits do not depend on the split (the
        # compiled kernels); the twin's per-step products stay on one BLAS thread
        exact = be.recurrent_rows_exact(dt)
        self.threads = threads_for(2 * bt * t * 4 * u * (f + u), bt) if exact else 1
        # the forward's threads share a range each step by step (kernels/csrc/rows_share.h);
        # the backward's take a few ranges each as tasks
        shared = np.array(thread_ranges(bt, self.threads), np.int64)
        self.bounds = np.array(row_ranges(bt, self.threads), np.int64)
        with self._one_blas_thread(exact):
            be.recurrent_rows_threads("LSTM", self.xt.reshape(t, bt, f), wp, h, c, self.mask,
                                      shared, reverse, self.threads, gates=g)  # fmt: skip
        self.h, self.c, self.g = h, c, g
        return self._pack((h, c))

    def backward(self, grad):
        be = get_backend()
        gy, (dh, dc) = self._unpack_grad(grad, 2)
        dz = workspace("rnn_dz", self.g.shape, dh.dtype)  # every row of every step is written
        with self._one_blas_thread(be.recurrent_rows_exact(dz.dtype)):
            be.lstm_back_threads(gy, self.g, self.c, be.pack_lstm_back(self.w_hh), self.mask,
                                 dh, dc, dz, self.bounds, self.reverse, self.threads)  # fmt: skip
        gx, gw_ih, gw_hh, gb = self._weight_grads(dz, dz, self.h)
        return gx, gw_ih, gw_hh, gb, dh, dc  # dh, dc: now the gradients reaching h0, c0


class GRU(_Sequence):
    """Gated recurrent unit, reset after the recurrent matmul; gate order z, r, n.

    a_t = h_{t-1} W_hh + b_hh;  z = sigmoid(xz_z + a_z);  r = sigmoid(xz_r + a_r)
    n = tanh(xz_n + r a_n);  h_t = (1 - z) n + z h_{t-1}   (xz = x_t W_ih + b).
    Inputs x (B, T, F), w_ih (F, 3U), w_hh (U, 3U), b (3U,), b_hh (3U,), h0 (B, U).
    Output (B, T + 1, U): h_1..h_T (0 where masked), then the final h; with
    ``sequences=False`` (B, 1, U).
    """

    gates = 3

    def forward(
        self, x, w_ih, w_hh, b=None, b_hh=None, h0=None, mask=None, reverse=False, sequences=True
    ):
        step = get_backend().gru_step_forward
        xz = self._setup(x, w_ih, w_hh, b, mask, reverse, sequences)
        t, bt, u = xz.shape[0], x.shape[0], self.w_hh.shape[0]
        self.b_hh = None if b_hh is None else np.asarray(b_hh, x.dtype)
        h = recycled((t + 1, bt, u), x.dtype)
        g = recycled((t, bt, 4 * u), x.dtype)
        hz = np.empty((bt, 3 * u), x.dtype)
        h[t if reverse else 0] = h0
        hs, gs, xs, ms, w_hh, b_hh = (
            list(h),
            list(g),
            list(xz),
            self._masks(t),
            self.w_hh,
            self.b_hh,
        )
        r = int(reverse)
        with self._one_blas_thread():  # the per-step GEMMs: too small to split
            for s in self.steps:
                p, q = s + r, s + 1 - r
                np.matmul(hs[p], w_hh, out=hz)
                step(xs[s], hz, b_hh, hs[p], ms[s], gs[s], hs[q])
        self.h, self.g = h, g
        return self._pack((h,))

    def backward(self, grad):
        step = get_backend().gru_step_backward
        gy, (dh,) = self._unpack_grad(grad, 1)
        t, bt, u = *self.g.shape[:2], dh.shape[1]
        r = int(self.reverse)
        dxz = workspace("rnn_dz", (t, bt, 3 * u), dh.dtype)  # every row of every step is written
        dhz = workspace("rnn_dhz", (t, bt, 3 * u), dh.dtype)
        dh_rec = np.zeros_like(dh)
        w_hh_t = np.ascontiguousarray(self.w_hh.T)
        hs, gs, dxs, dhs = list(self.h), list(self.g), list(dxz), list(dhz)
        gys = [None] * t if gy is None else list(gy)
        ms, nxt = self._masks(t), None
        with self._one_blas_thread():  # the per-step GEMMs: too small to split
            for s in reversed(self.steps):
                if nxt is not None:
                    np.matmul(dhs[nxt], w_hh_t, out=dh_rec)
                step(gys[s], dh_rec, dh, gs[s], hs[s + r], ms[s], dxs[s], dhs[s])
                nxt = s
        with self._one_blas_thread():
            dh0 = dh + np.matmul(dhs[nxt], w_hh_t) if nxt is not None else dh
        gx, gw_ih, gw_hh, gb = self._weight_grads(dxz, dhz, self.h)
        gb_hh = dhz.reshape(t * bt, 3 * u).sum(axis=0) if self.b_hh is not None else None
        return gx, gw_ih, gw_hh, gb, gb_hh, dh0


class SimpleRNN(_Sequence):
    """Elman network: h_t = tanh(x_t W_ih + h_{t-1} W_hh + b).

    Inputs x (B, T, F), w_ih (F, U), w_hh (U, U), b (U,), h0 (B, U).
    Output (B, T + 1, U): h_1..h_T (0 where masked), then the final h; with
    ``sequences=False`` (B, 1, U).
    """

    def forward(self, x, w_ih, w_hh, b=None, h0=None, mask=None, reverse=False, sequences=True):
        step = get_backend().rnn_step_forward
        xz = self._setup(x, w_ih, w_hh, b, mask, reverse, sequences)
        t, bt, u = xz.shape[0], x.shape[0], self.w_hh.shape[0]
        h = recycled((t + 1, bt, u), x.dtype)
        hz = np.empty((bt, u), x.dtype)
        h[t if reverse else 0] = h0
        hs, xs, ms, w_hh = list(h), list(xz), self._masks(t), self.w_hh
        r = int(reverse)
        with self._one_blas_thread():  # the per-step GEMMs: too small to split
            for s in self.steps:
                p, q = s + r, s + 1 - r
                np.matmul(hs[p], w_hh, out=hz)
                step(xs[s], hz, hs[p], ms[s], hs[q])
        self.h = h
        return self._pack((h,))

    def backward(self, grad):
        step = get_backend().rnn_step_backward
        gy, (dh,) = self._unpack_grad(grad, 1)
        t, r = self.h.shape[0] - 1, int(self.reverse)
        dz = workspace("rnn_dz", (t, *dh.shape), dh.dtype)
        dh_rec = np.zeros_like(dh)
        w_hh_t = np.ascontiguousarray(self.w_hh.T)
        hs, dzs, ms, nxt = list(self.h), list(dz), self._masks(t), None
        gys = [None] * t if gy is None else list(gy)
        with self._one_blas_thread():  # the per-step GEMMs: too small to split
            for s in reversed(self.steps):
                if nxt is not None:
                    np.matmul(dzs[nxt], w_hh_t, out=dh_rec)
                step(gys[s], dh_rec, dh, hs[s + 1 - r], ms[s], dzs[s])
                nxt = s
        with self._one_blas_thread():
            dh0 = dh + np.matmul(dzs[nxt], w_hh_t) if nxt is not None else dh
        gx, gw_ih, gw_hh, gb = self._weight_grads(dz, dz, self.h)
        return gx, gw_ih, gw_hh, gb, dh0


class Embedding(Function):
    """y = W[ids]: rows of the table W (V, D) gathered for integer ids of any shape (...).

    Backward scatters: dW[v] = sum of the output gradients of the positions holding id v.
    """

    def forward(self, w, ids=None):
        self.ids, self.v = ids, w.shape[0]
        return w[ids]

    def backward(self, g):
        d = g.shape[-1]
        gw = np.zeros((self.v, d), g.dtype)
        np.add.at(gw, self.ids.reshape(-1), g.reshape(-1, d))
        return (gw,)


# -- the functional API: validation, then one Function ---------------------------------------


def lengths_to_mask(lengths, t: int) -> np.ndarray:
    """(B,) lengths -> (B, T) booleans, True at steps t < length."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise ShapeError(
            f"lengths must be a 1-D array of ints, got {lengths.dtype} {lengths.shape}"
        )
    if lengths.size and (lengths.min() < 0 or lengths.max() > t):
        raise ValueError(f"lengths must lie in [0, {t}], got {lengths.min()}..{lengths.max()}")
    return np.arange(t)[None, :] < lengths[:, None]


def _check(who, x, w_ih, w_hh, gates, vectors, states, mask):
    """Validate shapes; return the mask as a time-major float array (T, B), or None."""
    if x.ndim != 3:
        raise ShapeError(f"{who} expects input of shape (batch, time, features), got {x.shape}")
    bt, t, f = x.shape
    u = w_hh.shape[0] if w_hh.ndim == 2 else -1
    if w_ih.shape != (f, gates * u) or w_hh.shape != (u, gates * u):
        raise ShapeError(
            f"{who}: weights ({f}, {gates}*U) and (U, {gates}*U) expected for input {x.shape}, "
            f"got {w_ih.shape} and {w_hh.shape}"
        )
    for v in vectors:
        if v is not None and v.shape != (gates * u,):
            raise ShapeError(f"{who}: bias of shape ({gates * u},) expected, got {v.shape}")
    for s in states:
        if s is not None and s.shape != (bt, u):
            raise ShapeError(f"{who}: initial state of shape ({bt}, {u}) expected, got {s.shape}")
    if mask is None:
        return None
    mask = np.asarray(mask.data if isinstance(mask, Tensor) else mask)
    if mask.shape != (bt, t):
        raise ShapeError(f"{who}: mask of shape ({bt}, {t}) expected, got {mask.shape}")
    mask = mask.astype(bool)
    if mask.all():
        return None
    return np.ascontiguousarray(mask.T, dtype=x.dtype)


def _state(s, x, u) -> Tensor:
    return Tensor(np.zeros((x.shape[0], u), x.dtype)) if s is None else s


def lstm(x, w_ih, w_hh, b=None, h0=None, c0=None, mask=None, reverse=False, sequences=True):
    """LSTM over x (B, T, F) -> (outputs (B, T, U), final h (B, U), final c (B, U));
    outputs None with ``sequences=False`` (only the final states are made)."""
    m = _check("lstm", x, w_ih, w_hh, 4, [b], [h0, c0], mask)
    u = w_hh.shape[0]
    h0, c0 = _state(h0, x, u), _state(c0, x, u)
    b = b if b is not None else Tensor(np.zeros(4 * u, x.dtype))
    out = LSTM.apply(x, w_ih, w_hh, b, h0, c0, mask=m, reverse=reverse, sequences=sequences)
    t = x.shape[1] if sequences else 0
    return out[:, :t] if sequences else None, out[:, t], out[:, t + 1]


def gru(x, w_ih, w_hh, b=None, b_hh=None, h0=None, mask=None, reverse=False, sequences=True):
    """GRU over x (B, T, F) -> (outputs (B, T, U), final h (B, U)); outputs None with
    ``sequences=False``."""
    m = _check("gru", x, w_ih, w_hh, 3, [b, b_hh], [h0], mask)
    u = w_hh.shape[0]
    zeros = Tensor(np.zeros(3 * u, x.dtype))
    b, b_hh = (zeros if b is None else b), (zeros if b_hh is None else b_hh)
    out = GRU.apply(x, w_ih, w_hh, b, b_hh, _state(h0, x, u), mask=m, reverse=reverse,
                    sequences=sequences)  # fmt: skip
    t = x.shape[1] if sequences else 0
    return out[:, :t] if sequences else None, out[:, t]


def simple_rnn(x, w_ih, w_hh, b=None, h0=None, mask=None, reverse=False, sequences=True):
    """Elman RNN (tanh) over x (B, T, F) -> (outputs (B, T, U), final h (B, U)); outputs
    None with ``sequences=False``."""
    m = _check("simple_rnn", x, w_ih, w_hh, 1, [b], [h0], mask)
    u = w_hh.shape[0]
    b = b if b is not None else Tensor(np.zeros(u, x.dtype))
    out = SimpleRNN.apply(x, w_ih, w_hh, b, _state(h0, x, u), mask=m, reverse=reverse,
                          sequences=sequences)  # fmt: skip
    t = x.shape[1] if sequences else 0
    return out[:, :t] if sequences else None, out[:, t]


def embedding(ids, weight: Tensor) -> Tensor:
    """Rows of ``weight`` (V, D) for integer ``ids`` of any shape -> (*ids.shape, D)."""
    ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if ids.dtype.kind == "f":
        if not np.all(ids == np.round(ids)):
            raise ValueError("embedding: ids must be integers")
    elif ids.dtype.kind not in "iu":
        raise ValueError(f"embedding: integer ids expected, got dtype {ids.dtype}")
    ids = ids.astype(np.intp)
    v = weight.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= v):
        raise ValueError(f"embedding: ids must lie in [0, {v}), got {ids.min()}..{ids.max()}")
    return Embedding.apply(weight, ids=ids)
