"""Per-example gradients of ``Conv2D`` (:mod:`lepton_nn.privacy.grad_sample`), from the
input unfolded into columns U_n (C/G kh kw, L = OH OW) per group and the output gradients
G_n (F/G, L): dW_n = G_n U_n^T, db_n = G_n summed over positions. Ghost clipping:
||dW_n||^2 = <U_n^T U_n, G_n^T G_n> (two (L, L) Gram matrices, when L^2 <= the size of
dW_n), and the clipped sum is one product per group, sum_n c_n dW_n = (c G) U^T."""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..backend.threads import blas_held
from ..nn.conv import Conv2D, _check_images
from ..nn.layers import apply_activation, as_input
from ..ops.conv import conv2d, resolve_padding
from ._rule import _add, _Rule

__all__ = ["unfold"]


def unfold(x: np.ndarray, layer: Conv2D) -> np.ndarray:
    """(N, C, H, W) -> columns (N, C, kh, kw, OH, OW) of the layer's geometry:
    cols[n, c, i, j, p, q] = x_padded[n, c, p s_h + i d_h, q s_w + j d_w]."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    t, b, l, r = resolve_padding(layer.padding, x.shape[2:], (kh, kw), (sh, sw), (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((*x.shape[:2], kh, kw, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[
                :,
                :,
                i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                j * dw : j * dw + sw * (ow - 1) + 1 : sw,
            ]
    return cols


class _ConvRule(_Rule):
    def call(self, x):
        layer = self.layer
        x = as_input(layer, x)
        _check_images(layer, x.shape, layer.in_channels)
        w, b = layer.weight, layer.bias
        if x.requires_grad:  # z needs no gradient through the weights: the batch's dL/dW
            w = Tensor._wrap(w.data, False, None)  # would be discarded, so skip forming it
            b = None if b is None else Tensor._wrap(b.data, False, None)
        z = conv2d(
            x, w, b, layer.stride, layer.padding, layer.dilation, "identity", layer.name,
            groups=layer.groups,
        )  # fmt: skip
        self._record(x.data, z)
        return apply_activation(z, layer.activation)

    def attach(self):
        super().attach()
        self.layer.call_fused = lambda x, following: None  # the conv output must be seen

    def detach(self):
        self.layer.__dict__.pop("call_fused", None)
        self._unfolded = None
        super().detach()

    # The products below run with NumPy's BLAS held to one thread (blas_held), as the
    # library's own convolutions do: OpenBLAS workers contend with the op thread pool (on 2
    # busy cores a (64, 2304) x (2304, 576) product took 200 ms threaded, 16 ms held).

    def _grouped(self, scale):
        """Per record: columns U (N, G, K, L) and output gradients G (N, G, F/G, L), with
        K = C/G kh kw and L = OH OW the output positions; dW_n[g] = G_n[g] U_n[g]^T."""
        recs = self.recs(scale)
        cached = self.__dict__.get("_unfolded")  # norms, then the clipped sum: unfold once
        if cached is not None and len(cached[0]) == len(recs):
            if all(a is x and b is g for (a, b), (x, g) in zip(cached[0], recs)):
                return cached[1]
        layer, gr, out = self.layer, self.layer.groups, []
        for x, g in recs:
            n, positions = x.shape[0], g.shape[2] * g.shape[3]
            cols = unfold(x, layer).reshape(n, gr, -1, positions)
            out.append((cols, g.reshape(n, gr, -1, positions), g))
        self._unfolded = (recs, out)
        return out

    def per_example(self, scale):
        layer, res = self.layer, {}
        for cols, gg, g in self._grouped(scale):
            pe = np.einsum("ngfl,ngkl->ngfk", gg, cols)
            _add(res, "weight", pe.reshape(len(pe), *layer.weight.shape))
            if layer.bias is not None:
                _add(res, "bias", g.sum(axis=(2, 3)))
        return {k: v for k, v in res.items() if k in self.params()}

    def _whole(self) -> bool:
        """Ghost clipping applies: one call of the layer, every parameter trained."""
        recs = [r for r in self.records if r[1] is not None]
        return (
            self.ghost
            and len(recs) == 1
            and len(self._params) == (1 + (self.layer.bias is not None))
        )

    def norms_sq(self, scale):
        """||dW_n||^2 = sum_g <U_n[g]^T U_n[g], G_n[g]^T G_n[g]> through the two (L, L) Gram
        matrices of positions when L^2 <= F/G K, else the (F/G, K) product per example,
        one layer at a time; never the (N, *weight) array of every parameter."""
        if not self._whole():
            return super().norms_sq(scale)
        ((cols, gg, g),) = self._grouped(scale)
        n, positions, k, f = cols.shape[0], cols.shape[3], cols.shape[2], gg.shape[2]
        if positions * positions <= f * k:
            with blas_held():
                gram_u = np.matmul(cols.transpose(0, 1, 3, 2), cols)  # (N, G, L, L)
                gram_g = np.matmul(gg.transpose(0, 1, 3, 2), gg)
            w = (gram_u * gram_g).reshape(n, -1).sum(axis=1)
        else:
            with blas_held():
                pe = np.matmul(gg, cols.transpose(0, 1, 3, 2))  # (N, G, F/G, K)
            w = np.square(pe).reshape(n, -1).sum(axis=1)
        if self.layer.bias is not None:
            w += np.square(g.sum(axis=(2, 3))).sum(axis=1)
        return w

    def clipped_sum(self, c, scale):
        """sum_n c_n dW_n[g] = (c G)[g] U[g]^T over the batch and positions together: one
        product per group, no per-example array."""
        if not self._whole():
            return super().clipped_sum(c, scale)
        layer = self.layer
        ((cols, gg, g),) = self._grouped(scale)
        cs = c.astype(gg.dtype, copy=False)
        gc = gg * cs[:, None, None, None]
        n, groups, f, positions = gc.shape
        with blas_held():
            w = np.stack(  # per group: (F/G, N L) @ (N L, K)
                [np.tensordot(gc[:, i], cols[:, i], axes=([0, 2], [0, 2])) for i in range(groups)]
            )
        out = {"weight": w.reshape(layer.weight.shape)}
        if layer.bias is not None:
            out["bias"] = cs @ g.sum(axis=(2, 3))
        return out
