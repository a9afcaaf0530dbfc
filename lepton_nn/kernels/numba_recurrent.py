"""Numba twins of the recurrent-cell kernels (spec: :mod:`lepton_nn.backend.reference`).

Called through :class:`lepton_nn.backend.numba_backend.NumbaBackend`, which turns an absent
``mask`` / ``gy`` / ``bhh`` into an empty array plus a ``has_*`` flag so that each kernel
compiles once per dtype. Constants are made in the arrays' dtype (``a.dtype.type(1)``), so
float32 data stays float32 math. Arrays are C-contiguous (B, k U) rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

JIT = {"cache": True, "error_model": "numpy"}

# stand-ins for a missing mask or bhh (1-D) / gy (2-D), never read when the flag is False
NO_ARRAY = {np.float32: np.zeros(0, np.float32), np.float64: np.zeros(0, np.float64)}
NO_ROWS = {np.float32: np.zeros((0, 0), np.float32), np.float64: np.zeros((0, 0), np.float64)}


@njit(**JIT)
def _sigmoid(z, one):
    """1 / (1 + exp(-z)), exp only of -|z|; ``one`` carries the dtype."""
    e = np.exp(-abs(z))
    return (one if z >= 0 else e) / (one + e)


@njit(**JIT)
def lstm_step_forward(xz, hz, c_prev, h_prev, mask, has_mask, gates, c, h):
    b, u = c.shape
    one = c.dtype.type(1)
    for row in range(b):
        # z = xz + hz; gates = [sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)]
        for j in range(4 * u):
            z = xz[row, j] + hz[row, j]
            gates[row, j] = np.tanh(z) if 2 * u <= j < 3 * u else _sigmoid(z, one)
        if has_mask and not mask[row] > 0:  # c, h = c_prev, h_prev where mask is 0
            c[row] = c_prev[row]
            h[row] = h_prev[row]
            continue
        for j in range(u):  # c = f c_prev + i g;  h = o tanh(c)
            cv = gates[row, u + j] * c_prev[row, j] + gates[row, j] * gates[row, 2 * u + j]
            c[row, j] = cv
            h[row, j] = gates[row, 3 * u + j] * np.tanh(cv)
    return h


@njit(**JIT)
def lstm_step_backward(gy, has_gy, dh_rec, dh, dc, gates, c, c_prev, mask, has_mask, dz):
    b, u = c.shape
    one = c.dtype.type(1)
    for row in range(b):
        m = mask[row] if has_mask else one
        if not m > 0:  # masked: dz = 0; dh <- dh_rec + dh; dc unchanged
            dz[row] = 0
            for j in range(u):
                dh[row, j] = dh_rec[row, j] + dh[row, j]
            continue
        for j in range(u):
            d = dh_rec[row, j] + dh[row, j]  # d = dh_rec + dh + m gy
            if has_gy:
                d += m * gy[row, j]
            i, f = gates[row, j], gates[row, u + j]
            g, o = gates[row, 2 * u + j], gates[row, 3 * u + j]
            tc = np.tanh(c[row, j])
            dct = dc[row, j] + d * o * (one - tc * tc)
            dz[row, j] = dct * g * i * (one - i)
            dz[row, u + j] = dct * c_prev[row, j] * f * (one - f)
            dz[row, 2 * u + j] = dct * i * (one - g * g)
            dz[row, 3 * u + j] = d * tc * o * (one - o)
            dc[row, j] = dct * f
            dh[row, j] = 0
    return dz


@njit(**JIT)
def gru_step_forward(xz, hz, bhh, has_bhh, h_prev, mask, has_mask, gates, h):
    b, u = h.shape
    one = h.dtype.type(1)
    for row in range(b):
        for j in range(2 * u):  # z, r = sigmoid(xz + hz + bhh)
            a = hz[row, j] + bhh[j] if has_bhh else hz[row, j]
            gates[row, j] = _sigmoid(xz[row, j] + a, one)
        for j in range(u):  # a_n = hz_n + bhh_n;  n = tanh(xz_n + r a_n)
            k = 2 * u + j
            an = hz[row, k] + bhh[k] if has_bhh else hz[row, k]
            gates[row, k] = np.tanh(xz[row, k] + gates[row, u + j] * an)
            gates[row, 3 * u + j] = an
        if has_mask and not mask[row] > 0:  # h = h_prev where mask is 0
            h[row] = h_prev[row]
            continue
        for j in range(u):  # h = (1 - z) n + z h_prev
            z = gates[row, j]
            h[row, j] = (one - z) * gates[row, 2 * u + j] + z * h_prev[row, j]
    return h


@njit(**JIT)
def gru_step_backward(gy, has_gy, dh_rec, dh, gates, h_prev, mask, has_mask, dxz, dhz):
    b, u = h_prev.shape
    one = h_prev.dtype.type(1)
    for row in range(b):
        m = mask[row] if has_mask else one
        if not m > 0:  # masked: dxz = dhz = 0; dh <- dh_rec + dh
            dxz[row] = 0
            dhz[row] = 0
            for j in range(u):
                dh[row, j] = dh_rec[row, j] + dh[row, j]
            continue
        for j in range(u):
            d = dh_rec[row, j] + dh[row, j]  # d = dh_rec + dh + m gy
            if has_gy:
                d += m * gy[row, j]
            z, r = gates[row, j], gates[row, u + j]
            n, an = gates[row, 2 * u + j], gates[row, 3 * u + j]
            dn = d * (one - z) * (one - n * n)
            dzz = d * (h_prev[row, j] - n) * z * (one - z)
            dr = dn * an * r * (one - r)
            dxz[row, j], dxz[row, u + j], dxz[row, 2 * u + j] = dzz, dr, dn
            dhz[row, j], dhz[row, u + j], dhz[row, 2 * u + j] = dzz, dr, dn * r
            dh[row, j] = d * z
    return dxz


@njit(**JIT)
def rnn_step_forward(xz, hz, h_prev, mask, has_mask, h):
    b, u = h.shape
    for row in range(b):
        if has_mask and not mask[row] > 0:
            h[row] = h_prev[row]
            continue
        for j in range(u):  # h = tanh(xz + hz)
            h[row, j] = np.tanh(xz[row, j] + hz[row, j])
    return h


@njit(**JIT)
def rnn_step_backward(gy, has_gy, dh_rec, dh, h, mask, has_mask, dz):
    b, u = h.shape
    one = h.dtype.type(1)
    for row in range(b):
        m = mask[row] if has_mask else one
        if not m > 0:
            dz[row] = 0
            for j in range(u):
                dh[row, j] = dh_rec[row, j] + dh[row, j]
            continue
        for j in range(u):
            d = dh_rec[row, j] + dh[row, j]
            if has_gy:
                d += m * gy[row, j]
            dz[row, j] = d * (one - h[row, j] * h[row, j])  # dz = d (1 - h^2)
            dh[row, j] = 0
    return dz
