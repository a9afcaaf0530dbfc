"""Chapter 6, reference solution: convolution as im2col, and one LSTM step with its backward."""

from __future__ import annotations

import numpy as np


def _out_size(h, k, stride, padding):
    return (h + 2 * padding - k) // stride + 1


def im2col(x, kh, kw, stride=1, padding=0):
    """Every window of every image as a column: cols (N, C kh kw, OH OW)."""
    n, c, h, w = x.shape
    oh, ow = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((n, c, kh, kw, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):  # the pixels that kernel tap (i, j) sees, in every window at once
            cols[:, :, i, j] = xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """The adjoint of im2col: each entry of cols is added back to the pixel it came from."""
    n, c, h, w = x_shape
    oh, ow = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    gp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), cols.dtype)
    v = cols.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):  # += : a pixel in several windows collects several gradients
            gp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += v[:, :, i, j]
    return gp[:, :, padding : padding + h, padding : padding + w]


def conv2d_forward(x, w, b, stride=1, padding=0):
    """y (N, O, OH, OW) = w reshaped to (O, C kh kw) times each image's cols, plus b (O,)."""
    o, _, kh, kw = w.shape
    oh = _out_size(x.shape[2], kh, stride, padding)
    ow = _out_size(x.shape[3], kw, stride, padding)
    cols = im2col(x, kh, kw, stride, padding)
    y = w.reshape(o, -1) @ cols + b[:, None]  # (O, K) @ (N, K, P) -> (N, O, P)
    return y.reshape(x.shape[0], o, oh, ow)


def conv2d_backward(G, x, w, stride=1, padding=0):
    """G = dL/dy (N, O, OH, OW) -> (dx, dw, db)."""
    n, o = G.shape[:2]
    kh, kw = w.shape[2:]
    cols = im2col(x, kh, kw, stride, padding)  # (N, K, P)
    g = G.reshape(n, o, -1)  # (N, O, P)
    dw = np.einsum("nop,nkp->ok", g, cols).reshape(w.shape)
    dcols = w.reshape(o, -1).T @ g  # (K, O) @ (N, O, P) -> (N, K, P)
    return col2im(dcols, x.shape, kh, kw, stride, padding), dw, G.sum(axis=(0, 2, 3))


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def lstm_step(x_t, h, c, W_ih, W_hh, b):
    """One LSTM step; returns (h', c', cache)."""
    u = h.shape[1]
    z = x_t @ W_ih + h @ W_hh + b
    i, f = _sigmoid(z[:, :u]), _sigmoid(z[:, u : 2 * u])
    g, o = np.tanh(z[:, 2 * u : 3 * u]), _sigmoid(z[:, 3 * u :])
    c_new = f * c + i * g
    tc = np.tanh(c_new)
    return o * tc, c_new, (x_t, h, c, W_ih, W_hh, i, f, g, o, tc)


def lstm_step_backward(dh, dc, cache):
    """From dL/dh' and dL/dc' to the gradients of x_t, h, c, W_ih, W_hh and b."""
    x_t, h, c, W_ih, W_hh, i, f, g, o, tc = cache
    dc = dc + dh * o * (1 - tc * tc)  # c' reaches the loss directly and through h'
    dz = np.concatenate(
        [
            dc * g * i * (1 - i),  # d/dz_i: sigmoid' = s (1 - s)
            dc * c * f * (1 - f),  # d/dz_f
            dc * i * (1 - g * g),  # d/dz_g: tanh' = 1 - t^2
            dh * tc * o * (1 - o),  # d/dz_o
        ],
        axis=1,
    )
    return {
        "x_t": dz @ W_ih.T,
        "h": dz @ W_hh.T,
        "c": dc * f,
        "W_ih": x_t.T @ dz,
        "W_hh": h.T @ dz,
        "b": dz.sum(axis=0),
    }
