"""Matrix products: general ``MatMul`` and the fused dense op ``Linear``: Y = f(X W + b)."""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend import get_backend
from ..backend.reference import GELU, IDENTITY
from ._util import unbroadcast


class MatMul(Function):
    """Y = A @ B with NumPy's rules (1-D promotion, broadcast batch axes)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return np.matmul(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:  # (a 1-D @ 1-D product's g is 0-d)
            g2 = np.expand_dims(g2, -2) if g2.ndim else g2.reshape(1)
        if b.ndim == 1:
            g2 = np.expand_dims(g2, -1)
        ga = gb = None
        if self.needs_grad[0]:
            ga = np.matmul(g2, np.swapaxes(b2, -1, -2))
            ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        if self.needs_grad[1]:
            gb = np.matmul(np.swapaxes(a2, -1, -2), g2)
            gb = unbroadcast(gb, b2.shape).reshape(b.shape)
        return ga, gb


class Linear(Function):
    """Y = f(X W + b), fused: one GEMM (the backend's ``gemm``) plus one backend epilogue
    kernel each way.

    X: (..., in), W: (in, out), b: (out,) or absent, f: activation code (``act``).
    Backward: G_z = G_y * f'(z) (kernel, also G_b = sum G_z); G_W = X^T G_z; G_X = G_z W^T.
    """

    def forward(self, x, w, b=None, act=IDENTITY):
        be = get_backend()
        self.x_shape = x.shape
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])  # (N, in)
        self.flops = 2 * x2.shape[0] * x2.shape[1] * w.shape[1]
        z = be.gemm(x2, False, w, False)  # (N, out), fresh and C-contiguous
        if b is not None:  # the kernel reads b as a flat C array of z's dtype
            b = np.ascontiguousarray(b, dtype=z.dtype)
        self.x2, self.w, self.b, self.act = x2, w, b, act
        if act == GELU:  # gelu's derivative needs the pre-activation: keep z
            y = be.bias_act_forward(z, b, act, np.empty_like(z))
            self.z = z
        else:  # the others differentiate from y alone: overwrite z
            y = be.bias_act_forward(z, b, act, z) if (b is not None or act != IDENTITY) else z
            self.z = None
        self.y = y
        return y if x.ndim == 2 else y.reshape(*x.shape[:-1], w.shape[1])

    def backward(self, g):
        be = get_backend()
        g = g if g.ndim == 2 else g.reshape(-1, self.w.shape[1])
        g = np.ascontiguousarray(g, dtype=self.y.dtype)  # the kernel reads flat C arrays
        need_x = self.needs_grad[0]
        need_b = self.b is not None and self.needs_grad[2]
        gb = np.empty_like(self.b) if need_b else None
        if self.act == IDENTITY:
            gz = g
            if need_b:
                gb = g.sum(axis=0)
        else:
            z = self.y if self.z is None else self.z  # z is read only by gelu
            gz = be.bias_act_backward(g, self.y, z, self.b, self.act, np.empty_like(g), gb)[0]
        gw = be.gemm(self.x2, True, gz, False) if self.needs_grad[1] else None
        gx = be.gemm(gz, False, self.w, True) if need_x else None
        if gx is not None and len(self.x_shape) != 2:
            gx = gx.reshape(self.x_shape)
        if self.b is None:
            return gx, gw
        return gx, gw, gb
