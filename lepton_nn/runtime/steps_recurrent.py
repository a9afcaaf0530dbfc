"""The plan step for recurrent layers (SimpleRNN, LSTM, GRU; bidirectional; int8 weights).

It mirrors the eval-mode forward of its layer in :mod:`lepton_nn.nn` on the same backend
kernels (``lstm_step_forward``, ``gru_step_forward``, ``rnn_step_forward``, or one compiled
call over all steps split into row ranges), to float rounding where the input product is
grouped otherwise (by chunks of steps). Sequences are (T, F) per sample.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from lepton_nn.backend.threads import (
    row_ranges,
    thread_ranges,
    threads_for,
)

from .compression import Int8Weight
from .graph import out_buffer
from .kernels import kernels
from .steps import Int8DenseStep, Op, _on_one_blas_thread

__all__ = ["RecurrentStep"]

#: a recurrent layer's float input product is computed this many bytes of output at a time
XZ_CHUNK_BYTES = 1 << 19


class RecurrentStep:
    """LSTM / GRU / SimpleRNN over (N, T, F). A direction with float weights is one call of
    the backend's ``recurrent_rows_forward`` per range of batch rows (its weights packed
    once by ``pack_recurrent``): each step's x W_ih + b + h[p] W_hh summed in registers and
    turned into the gates and states, no Python between steps; rows are independent, so
    the plan cuts the batch into a range a thread, which the threads share step by step
    (a thread that starts late takes over where the ranges are), with the bits of one
    thread. With the plan's mask (sequences of given lengths) a row past its end
    keeps its state, its outputs are 0, and the reverse direction starts at the row's own
    last step. The states use two slots unless the whole sequence of h is returned.

    A direction with both ``W_ih`` and ``W_hh`` int8 (:class:`Int8Weight`, h quantized per
    row) in a float32 plan is likewise one call of ``recurrent_q8_forward`` per range of
    rows (weights packed once by ``pack_recurrent_q8``), after x is quantized for all steps
    at once (per row, or with the file's static pair): each step quantizes every row's h,
    sums the int8 products exactly and computes the gates in registers, with the bits of the
    per-step path below. Otherwise (one matrix int8, a float64 plan) it is a list of
    per-step calls: the input product of ``XZ_CHUNK_BYTES`` of output at a time (int8: an
    :class:`Int8DenseStep`, x quantized per row or with the file's static pair; float:
    [x, 1] [[W_ih], [b]], the bias inside the GEMM), and each step's ``h @ W_hh`` (int8: h
    quantized per row at every step) then the backend's step kernel; the gates stay in
    float."""

    kind = "recurrent"
    GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}

    def __init__(self, label, cell, dirs, units, steps, sequences) -> None:
        self.label, self.cell, self.dirs, self.units = label, cell, dirs, units
        self.t, self.sequences = steps, sequences  # dirs: [(w_ih, w_hh, b, b_hh, reverse)]
        # int8 weights packed once: (input product with its bias, recurrent product) per dir
        self.int8 = [
            (
                Int8DenseStep(label, w_ih, b, 0) if isinstance(w_ih, Int8Weight) else None,
                Int8DenseStep(label, w_hh, None, 0) if isinstance(w_hh, Int8Weight) else None,
            )
            for w_ih, w_hh, b, _, _ in dirs
        ]
        # both matrices int8, h quantized per row: packed once for recurrent_q8_forward
        self.q8 = [
            kernels().pack_recurrent_q8(cell, w_ih.q, w_ih.scale, b, w_hh.q, w_hh.scale, b_hh)
            if isinstance(w_ih, Int8Weight)
            and isinstance(w_hh, Int8Weight)
            and w_hh.act_mode == "dynamic"
            else None
            for w_ih, w_hh, b, b_hh, _ in dirs
        ]

    def bind(self, src, owned, ctx):
        n, t, u, dt = ctx.n, self.t, self.units, ctx.dtype
        f = self.dirs[0][0].shape[0]
        k = kernels()
        ops: list[Op] = []
        # float weights: the whole sequence of a direction in one kernel call per range of
        # batch rows (input product, recurrent product and gates fused, rows split over the
        # plan's threads); int8 weights: the same in recurrent_q8_forward, or per-step calls
        fused = [q_ih is None and q_hh is None for q_ih, q_hh in self.int8]
        fused_q8 = [q is not None and dt == np.float32 for q in self.q8]
        int8_ih = [q is not None for q, _ in self.int8]
        xqs: dict = {}  # x quantized for the fused int8 directions: one per activation pair
        if any(int8_ih) or any(fused):  # x time-major (T N, F)
            xt = np.zeros((t, n, f), dt)
            ops.append((_time_major, (src, xt)))
        if not all(a or b for a, b in zip(int8_ih, fused, strict=True)):
            xa = np.ones((t, n, f + 1), dt)  # and with a column of ones: [x, 1] [[W_ih], [b]]
            ops.append((_time_major, (src, xa[:, :, :f])))
        width = u * len(self.dirs)
        out = out_buffer(ctx, (n, t, width) if self.sequences else (n, width), dt)
        mask = getattr(ctx, "mask", None)  # (T, N) for sequences with lengths, else None
        # the input product runs a few steps ahead of the steps that read it, not all at once:
        # its output is still in cache then (and the float one's bias costs no pass of its own)
        ahead = max(1, min(t, XZ_CHUNK_BYTES // (n * self.GATES[self.cell] * u * dt.itemsize)))
        for j, (w_ih, w_hh, b, b_hh, reverse) in enumerate(self.dirs):
            gu = w_ih.shape[1]
            q_ih, q_hh = self.int8[j]
            # states: h[i] for i in 0..T when the sequence is returned, else two buffers used
            # in turn (state i in slot i % 2), as c always is
            hn, cn = (t + 1 if self.sequences else 2), 2
            h, c = np.zeros((hn, n, u), dt), np.zeros((cn, n, u), dt)
            first = t if reverse else 0  # the zero initial state, reset on every run
            ops += [(h[first % hn].fill, (0,)), (c[first % cn].fill, (0,))]
            if fused_q8[j]:
                q_ih = self.int8[j][0]
                key = None if w_ih.act_mode != "static" else (w_ih.act_scale, w_ih.act_zero_point)
                if key not in xqs:
                    xqs[key] = _quantize_x(k, xt, q_ih, ops)
                head = (self.cell, *xqs[key], self.q8[j], h, c if self.cell == "LSTM" else None,
                        mask)  # fmt: skip
                threads = min(ctx.threads, threads_for(2 * n * t * gu * (f + u), n))
                if threads > 1:  # ranges of rows as tasks of the native pool
                    bounds = np.array(row_ranges(n, threads), np.int64)
                    ops.append((k.recurrent_q8_threads, (*head, bounds, reverse, threads)))
                else:
                    ops.append((k.recurrent_q8_forward, (*head, 0, n, reverse)))
            elif fused[j]:
                ws = [None if a is None else np.asarray(a, dt) for a in (w_ih, b, w_hh, b_hh)]
                head = (self.cell, xt, k.pack_recurrent(self.cell, *ws), h,
                        c if self.cell == "LSTM" else None, mask)  # fmt: skip
                flops = 2 * n * t * gu * (f + u)
                # rows split over threads only where the bits do not depend on the split
                threads = min(ctx.threads, threads_for(flops, n))
                threads = threads if k.recurrent_rows_exact(dt) else 1
                if threads > 1:  # a range a thread, shared step by step on the native pool
                    bounds = np.array(thread_ranges(n, threads), np.int64)
                    ops.append((k.recurrent_rows_threads, (*head, bounds, reverse, threads)))
                else:
                    ops.append((k.recurrent_rows_forward, (*head, 0, n, reverse)))
            else:
                ops += self._step_ops(ctx, xt if int8_ih[j] else xa, j, h, c, mask, ahead)
            cols = slice(j * u, (j + 1) * u)
            if self.sequences:
                ys = h[:-1] if reverse else h[1:]  # (T, N, U)
                if mask is not None:  # outputs past a sequence's end are 0
                    ops.append((np.multiply, (ys, mask[:, :, None], ys)))
                ops.append((_batch_major, (ys, out[:, :, cols])))
            else:
                ops.append((np.copyto, (out[:, cols], h[(0 if reverse else t) % hn])))
        return ops, out

    def _step_ops(self, ctx, x, j, h, c, mask, ahead) -> list[Op]:
        """Direction j with an int8 weight, one step at a time: the input product ``ahead``
        steps at a time (x: xt (T, N, F) for an int8 W_ih, else xa with a column of ones),
        then per step hz = h[p] @ W_hh (int8: h quantized per row) and the step kernel."""
        n, t, u, dt, k = ctx.n, self.t, self.units, ctx.dtype, kernels()
        w_ih, w_hh, b, b_hh, reverse = self.dirs[j]
        gu, (q_ih, q_hh) = w_ih.shape[1], self.int8[j]
        if q_ih is None:  # [x, 1] [[W_ih], [b]], into one buffer of `ahead` steps
            w_aug = np.concatenate([w_ih, np.zeros((1, gu), dt) if b is None else b[None]])
            ih: Any = (x, w_aug.astype(dt, copy=False), np.zeros((ahead, n, gu), dt))
        else:
            ih = (x, q_ih, ctx)
        hh: dict = {}  # state slot -> (ops, hz) of hz = int8(h[slot]) W_hh
        if q_hh is not None and (h.shape[0] == 2 and dt == np.float32):
            hh = {i: q_hh.bind(h[i], False, ctx) for i in range(2)}  # read in place
        elif q_hh is not None:  # each step's h[p] copied to hs (float32) first
            hs = np.zeros((n, u), np.float32)
            hh_ops, hz = q_hh.bind(hs, True, ctx)
        else:
            hz = np.zeros((n, gu), dt)
        gates = np.zeros((n, 4 * u), dt)  # written by each step, not read again: one buffer
        ops: list[Op] = []
        hn, cn, r = h.shape[0], c.shape[0], int(reverse)
        for s in range(t - 1, -1, -1) if reverse else range(t):
            p, q = s + r, s + 1 - r  # the state before and after step s
            hp, hq, cp, cq = h[p % hn], h[q % hn], c[p % cn], c[q % cn]
            c0 = s - s % ahead  # steps [c0, c1) hold s: their input product, on entry
            c1 = min(c0 + ahead, t)
            if s == (c1 - 1 if reverse else c0):
                ih_ops, xz = _input_product(ih, c0, c1)
                ops += [_on_one_blas_thread(o, 2 * (c1 - c0) * n * x.shape[2] * gu)
                        for o in ih_ops]  # fmt: skip
            xzs = xz[s - c0]
            if hh:
                hh_ops, hz = hh[p % hn]
                ops += hh_ops
            elif q_hh is not None:
                ops.append((np.copyto, (hs, hp, "same_kind")))
                ops += hh_ops
            else:
                ops.append(_on_one_blas_thread((np.matmul, (hp, w_hh, hz)), 2 * n * u * gu))
            m = None if mask is None else mask[s]  # rows past their end keep their state
            if self.cell == "LSTM":
                ops.append((k.lstm_step_forward, (xzs, hz, cp, hp, m, gates, cq, hq)))
            elif self.cell == "GRU":
                ops.append((k.gru_step_forward, (xzs, hz, b_hh, hp, m, gates, hq)))
            else:
                ops.append((k.rnn_step_forward, (xzs, hz, hp, m, hq)))
        return ops

    def describe(self) -> str:
        kind = "bidirectional " if len(self.dirs) == 2 else ""
        int8 = " (int8 weights)" if self.int8[0][0] or self.int8[0][1] else ""
        return f"{self.label}: {kind}{self.cell} over {self.t} steps, {self.units} units{int8}"


def _quantize_x(k, xt: np.ndarray, q_ih: Int8DenseStep, ops: list[Op]) -> tuple:
    """(xq uint8 (T, N, F), scale, zero point) for an int8 direction's recurrent_q8_forward,
    the op that fills them appended to ``ops``: x quantized per row of (T N, F) (dynamic),
    or with the file's static pair, as the per-step path's Int8DenseStep does."""
    t, n, f = xt.shape
    xq = np.zeros((t, n, f), np.uint8)
    flat = (xt.reshape(t * n, f), xq.reshape(t * n, f))
    if q_ih.wq.act_mode == "static":
        pair = (q_ih.static_scale, q_ih.static_zp)
        ops.append((k.quantize_rows, (*flat, *pair, True)))
    else:
        pair = (np.zeros(t * n, np.float32), np.zeros(t * n, np.int32))
        ops.append((k.quantize_rows, (*flat, *pair)))
    return (xq, *pair)


def _input_product(ih, c0: int, c1: int) -> tuple[list[Op], np.ndarray]:
    """Ops for xz = x W_ih + b over steps [c0, c1), and xz (c1 - c0, N, GU). ``ih``: float
    (xa (T, N, F + 1) with ones last, [[W_ih], [b]], a buffer of at least c1 - c0 steps) or
    int8 (xt (T, N, F), its Int8DenseStep, the plan's ctx: an int8 product with its own
    output)."""
    if isinstance(ih[1], Int8DenseStep):
        xt, step, ctx = ih
        rows = (c1 - c0) * xt.shape[1]
        ops, xz = step.bind(xt[c0:c1].reshape(rows, xt.shape[2]), False, _rows(ctx, rows))
        return ops, xz.reshape(c1 - c0, xt.shape[1], -1)
    xa, w_aug, buf = ih
    xz = buf[: c1 - c0]
    return [
        (np.matmul, (xa[c0:c1].reshape(-1, xa.shape[2]), w_aug, xz.reshape(-1, xz.shape[2])))
    ], xz


def _rows(ctx, n: int):
    """``ctx`` for a product over ``n`` rows (the steps x batch of a sequence)."""
    out = copy.copy(ctx)
    out.n = n
    return out


def _time_major(x: np.ndarray, xt: np.ndarray) -> None:
    np.copyto(xt, x.transpose(1, 0, 2))


def _batch_major(ys: np.ndarray, out: np.ndarray) -> None:
    np.copyto(out, ys.transpose(1, 0, 2))
