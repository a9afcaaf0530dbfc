"""Numba twins of the convolution and pooling kernels (spec: :mod:`lepton_nn.backend.reference`).

Called through :class:`lepton_nn.backend.numba_backend.NumbaBackend` with the reference
signatures. Images are NCHW and C-contiguous; every loop runs one (image, channel) plane at
a time, in the same order as the C loops of ``kernels/csrc/conv.h``. No ``parallel``: two
shared cores stall on thread wake-ups, and the GEMM next to these loops is the heavy part.
"""

from __future__ import annotations

import numpy as np
from numba import njit

JIT = {"cache": True, "error_model": "numpy"}


@njit(**JIT)
def _valid_range(off, s, n_in, n_out):
    """Output positions o in [lo, hi) whose input o * s + off lies in [0, n_in)."""
    lo = 0 if off >= 0 else (-off + s - 1) // s
    hi = 0 if n_in - 1 - off < 0 else (n_in - 1 - off) // s + 1
    hi = min(hi, n_out)
    return lo, max(hi, lo)


@njit(**JIT)
def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, cols):
    n, c, h, w = x.shape
    oh, ow = cols.shape[2], cols.shape[3]
    xs = x.reshape(n * c, h, w)
    cs = cols.reshape(n * c, kh * kw, oh, ow)
    for p in range(n * c):
        for i in range(kh):
            for j in range(kw):
                # cols[p, i kw + j] = xpad[p, i dh :: sh, j dw :: sw]
                xoff = j * dw - pw
                lo, hi = _valid_range(xoff, sw, w, ow)
                for oy in range(oh):
                    iy = oy * sh - ph + i * dh
                    d = cs[p, i * kw + j, oy]
                    if iy < 0 or iy >= h:  # a padding row
                        d[:] = 0
                        continue
                    d[:lo] = 0
                    for ox in range(lo, hi):
                        d[ox] = xs[p, iy, ox * sw + xoff]
                    d[hi:] = 0
    return cols


@njit(**JIT)
def col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, gx):
    n, c, h, w = gx.shape
    oh, ow = cols.shape[2], cols.shape[3]
    gs = gx.reshape(n * c, h, w)
    cs = cols.reshape(n * c, kh * kw, oh, ow)
    gs[:] = 0
    for p in range(n * c):
        for i in range(kh):
            for j in range(kw):
                # gxpad[p, i dh :: sh, j dw :: sw] += cols[p, i kw + j]
                xoff = j * dw - pw
                lo, hi = _valid_range(xoff, sw, w, ow)
                for oy in range(oh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= h:
                        continue
                    for ox in range(lo, hi):
                        gs[p, iy, ox * sw + xoff] += cs[p, i * kw + j, oy, ox]
    return gx


@njit(**JIT)
def maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, y, argmax):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    xs = x.reshape(n * c, h, w)
    ys = y.reshape(n * c, oh, ow)
    am = argmax.reshape(n * c, oh, ow)
    for p in range(n * c):
        for oy in range(oh):
            y0 = oy * sh - ph
            for ox in range(ow):
                x0 = ox * sw - pw
                # y = window.max(); argmax = row W + col of its first maximum
                best = -np.inf
                arg = -1
                for iy in range(max(y0, 0), min(y0 + kh, h)):
                    for ix in range(max(x0, 0), min(x0 + kw, w)):
                        v = xs[p, iy, ix]
                        if v > best or arg < 0:
                            best = v
                            arg = iy * w + ix
                ys[p, oy, ox] = best
                am[p, oy, ox] = arg
    return y


@njit(**JIT)
def maxpool2d_backward(gy, argmax, gx):
    n, c, h, w = gx.shape
    k = gy.shape[2] * gy.shape[3]
    gs = gx.reshape(n * c, h * w)
    g = gy.reshape(n * c, k)
    a = argmax.reshape(n * c, k)
    gs[:] = 0
    for p in range(n * c):
        for k in range(g.shape[1]):  # gx[p].flat[argmax[p]] += gy[p]
            gs[p, a[p, k]] += g[p, k]
    return gx


@njit(**JIT)
def avgpool2d_forward(x, kh, kw, sh, sw, ph, pw, count_pad, y):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    xs = x.reshape(n * c, h, w)
    ys = y.reshape(n * c, oh, ow)
    zero = x.dtype.type(0)
    for p in range(n * c):
        for oy in range(oh):
            y0 = oy * sh - ph
            ya, yb = max(y0, 0), min(y0 + kh, h)
            for ox in range(ow):
                x0 = ox * sw - pw
                xa, xb = max(x0, 0), min(x0 + kw, w)
                s = zero  # y = window.sum() / divisor
                for iy in range(ya, yb):
                    for ix in range(xa, xb):
                        s += xs[p, iy, ix]
                cnt = kh * kw if count_pad else (yb - ya) * (xb - xa)
                ys[p, oy, ox] = s / x.dtype.type(max(cnt, 1))
    return y


@njit(**JIT)
def avgpool2d_backward(gy, kh, kw, sh, sw, ph, pw, count_pad, gx):
    n, c, h, w = gx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    gs = gx.reshape(n * c, h, w)
    g = gy.reshape(n * c, oh, ow)
    gs[:] = 0
    for p in range(n * c):
        for oy in range(oh):
            y0 = oy * sh - ph
            ya, yb = max(y0, 0), min(y0 + kh, h)
            for ox in range(ow):
                x0 = ox * sw - pw
                xa, xb = max(x0, 0), min(x0 + kw, w)
                cnt = kh * kw if count_pad else (yb - ya) * (xb - xa)
                v = g[p, oy, ox] / gx.dtype.type(max(cnt, 1))  # gx[window] += gy / divisor
                for iy in range(ya, yb):
                    for ix in range(xa, xb):
                        gs[p, iy, ix] += v
    return gx
