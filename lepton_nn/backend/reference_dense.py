"""NumPy twins of the Dense layers: the fused bias and activation, the training GEMM, the
batch-1 chains and packed panels, softmax cross-entropy, Adam, and the sparse (pruned) Dense
product.

One family of :class:`~lepton_nn.backend.reference.ReferenceBackend`, the readable spec of
every kernel (see ``reference.py``); compiled backends subclass that class and override what
they speed up.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .reference_common import (
    GELU_A,
    GELU_C,
    IDENTITY,
    RELU,
    SIGMOID,
    TANH,
    _along_axis1,
    _sigmoid,
    zeros_aligned,
)


class SparseChain(NamedTuple):
    """Sparse Dense layers (:meth:`DenseTwins.sparse_chain_prepare`)."""

    specs: tuple  # (indptr, indices, values, bias, act) per layer, as sparse_linear takes them
    k: int  # features in
    widths: tuple  # N per layer
    threads: int = 1  # the compiled twin splits each layer's columns over them


class DenseTwins:
    """The dense kernels of :class:`~lepton_nn.backend.reference.ReferenceBackend`."""

    # -- dense epilogue ---------------------------------------------------------------
    def all_finite(self, x):
        """Whether no value of ``x`` is inf or NaN: ``bool(np.isfinite(x).all())``."""
        return bool(np.isfinite(x).all())

    def fresh_copy(self, a):
        """A new C-contiguous array with ``a``'s dtype, shape and values: ``a.copy()``."""
        return a.copy()

    def input_rows(self, x, typenum, shape):
        """A plan's input gate: ``x.shape[0]`` when ``x`` is a C-contiguous, aligned,
        native-endian ndarray of dtype number ``typenum`` (float32/float64) and shape
        ``(n, *shape)`` with no inf or NaN; -2 when it is such an array with inf or NaN; -1
        when it is not."""
        if (
            type(x) is not np.ndarray
            or x.dtype.num != typenum
            or x.dtype.name not in ("float32", "float64")
            or x.shape[1:] != tuple(shape)
            or x.ndim != len(shape) + 1
            or not x.flags.c_contiguous
            or not x.flags.aligned
            or not x.dtype.isnative  # '>f4' has float32's number too: convert it
        ):
            return -1
        return x.shape[0] if self.all_finite(x) else -2

    def bias_act_forward(self, z, bias, act, out):
        """out = f(z + bias), the bias along axis 1.

        z: (N, M) (a Dense output) or (N, M, P) (a convolution's channels of P pixels);
        bias: (M,) or None; act: activation code; out: shaped as z, may be z itself.
        Returns out.
        """
        s = z + _along_axis1(bias, z) if bias is not None else z
        if act == IDENTITY:
            r = s
        elif act == RELU:
            r = np.maximum(s, 0)
        elif act == SIGMOID:
            r = _sigmoid(s)
        elif act == TANH:
            r = np.tanh(s)
        else:  # GELU
            r = 0.5 * s * (1.0 + np.tanh(GELU_C * (s + GELU_A * s * s * s)))
        out[...] = r
        return out

    # -- the training GEMM -----------------------------------------------------------------
    def gemm_own(self, dtype, m, n, k) -> bool:
        """Whether :meth:`gemm` runs a kernel of its own for this product (rather than
        ``np.matmul``): the compiled replay of ``lepton_nn.compile`` asks, to call the same."""
        return False

    def gemm(self, a, ta, b, tb, out=None):
        """out (m, n) = A' @ B', A' = a.T if ta else a, B' = b.T if tb else b (2-D): a Linear
        layer's X W, X^T G_z and G_z W^T. ``np.matmul``, with BLAS on one thread for products
        too small or thin to gain from its split (:class:`~lepton_nn.backend.threads.blas_single`).
        Returns out (a new C-contiguous array if None)."""
        from .threads import blas_single

        A, B = (a.T if ta else a), (b.T if tb else b)
        (m, k), n = A.shape, B.shape[1]
        with blas_single(2 * m * k * n, thin=min(m, k, n) < 32):
            return np.matmul(A, B) if out is None else np.matmul(A, B, out=out)

    def dense_chain_forward(self, x, ws, bs, acts, outs):
        """Dense layers one after the other: h = x; for each layer l,
        outs[l] = f_l(h @ ws[l] + bs[l]) and h = outs[l]. x (M, K_0); ws[l] (K_l, N_l);
        bs[l] (N_l,) or None; acts[l] an activation code; outs[l] (M, N_l). Returns outs[-1].
        (The runtime's batch-1 MLP: one call for the chain.)"""
        h = x
        for w, b, act, out in zip(ws, bs, acts, outs, strict=True):
            np.matmul(h, w, out)
            self.bias_act_forward(out, b, act, out)
            h = out
        return h

    def dense_pack(self, w):
        """W (K, N) float32 as its column panels (ceil(N/16), K, 16): panel p, row k holds
        W[k, 16p:16p+16], zeros past N; 64-byte aligned (a panel row is one cache line).
        The only form of W that ``dense_packed_forward`` reads (layout, no arithmetic)."""
        k, n = w.shape
        p = -(-n // 16)
        panels = zeros_aligned(p * k * 16).reshape(p, k, 16)
        full = n // 16
        if full:  # panels[p, k] = W[k, 16p:16p+16]: a transpose of (K, full) 64-byte blocks,
            # copied a block at a time (a float at a time, 16 to an inner loop, was ~2x slower)
            block = np.dtype((np.void, 64))
            src = np.ascontiguousarray(w, np.float32)[:, : full * 16].view(block)
            panels[:full].view(block)[..., 0] = src.T
        if n % 16:
            panels[full, :, : n % 16] = w[:, full * 16 :]
        return panels

    def dense_packed_forward(self, x, panels, bs, acts, outs, threads=1):
        """Dense layers one after the other on packed weights: h = x; for each layer l,
        outs[l] = f_l(h @ W_l + bs[l]), h = outs[l], W_l (K_l, N_l) given as
        ``panels[l] = dense_pack(W_l)``. x (M, K_0) float32; bs[l] (N_l,) or None; acts[l]
        an activation code; outs[l] (M, N_l). ``threads``: how many threads may share each
        layer (the results do not depend on it). Returns outs[-1]."""
        h = x
        for p, b, act, out in zip(panels, bs, acts, outs, strict=True):
            w = p.transpose(1, 0, 2).reshape(p.shape[1], 16 * p.shape[0])[:, : out.shape[1]]
            np.matmul(h, w, out)
            self.bias_act_forward(out, b, act, out)
            h = out
        return h

    def bias_act_backward(self, gy, y, z, bias, act, gz, gbias):
        """Back through y = f(z + b).

        gy, y, z: (N, M) or (N, M, P) upstream grad, forward output, pre-bias input; bias:
        (M,) or None, along axis 1. Writes gz = gy * f'(z + b) into gz (may be gy itself) and,
        when gbias is not None, gbias = gz summed over every axis but 1. relu/sigmoid/tanh use
        y; gelu recomputes from z + b. Returns (gz, gbias).
        """
        if act == IDENTITY:
            r = gy
        elif act == RELU:
            r = gy * (y > 0)
        elif act == SIGMOID:
            r = gy * y * (1 - y)
        elif act == TANH:
            r = gy * (1 - y * y)
        else:  # GELU
            s = z + _along_axis1(bias, z) if bias is not None else z
            t = np.tanh(GELU_C * (s + GELU_A * s**3))
            sech2 = 1 - t * t
            with np.errstate(over="ignore", invalid="ignore"):
                second = 0.5 * s * sech2 * GELU_C * (1 + 3 * GELU_A * s * s)
            # 0 where sech2 is (not 0 * inf = NaN once s * s overflows)
            d = 0.5 * (1 + t) + np.where(sech2 == 0, 0, second)
            r = gy * d
        gz[...] = r
        if gbias is not None:
            gbias[...] = gz.sum(axis=(0, 2) if gz.ndim == 3 else 0)
        return gz, gbias

    # -- softmax cross-entropy ----------------------------------------------------------
    def softmax_xent_forward(self, logits, labels, probs, loss):
        """Per-sample loss[i] = logsumexp(logits[i]) - logits[i, labels[i]].

        logits, probs: (N, C); labels: (N,) int64 in [0, C); loss: (N,).
        Writes the softmax into probs (stable: shifts by the row max). Returns loss.
        """
        m = logits.max(axis=1, keepdims=True) if logits.shape[1] else 0
        e = np.exp(logits - m)
        s = e.sum(axis=1, keepdims=True)
        probs[...] = e / s
        rows = np.arange(logits.shape[0])
        loss[...] = (np.log(s[:, 0]) + m[:, 0]) - logits[rows, labels]
        return loss

    def softmax_xent_backward(self, probs, labels, gloss, glogits):
        """glogits = (probs - onehot(labels)) * gloss[:, None]. Returns glogits."""
        g = probs.copy()
        g[np.arange(probs.shape[0]), labels] -= 1
        glogits[...] = g * gloss[:, None]
        return glogits

    # -- optimizers -----------------------------------------------------------------------
    def adam_step(
        self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled, threads=1
    ):
        """One Adam/AdamW update, in place on p, m, v (PyTorch's documented rule).

        decoupled=False (Adam, L2):  g <- g + wd * p
        decoupled=True  (AdamW):     p <- p * (1 - lr * wd)
        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
        All arrays share one shape and dtype; scalars are Python floats, step is t >= 1.
        ``threads``: how many threads a compiled kernel may split the elements over (each
        element's update is independent: the same bits at any count); ignored here.
        """
        if weight_decay != 0:
            if decoupled:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        bc1 = 1 - beta1**step
        bc2 = 1 - beta2**step
        denom = np.sqrt(v) / np.sqrt(bc2) + eps
        p -= (lr / bc1) * m / denom

    # -- sparse matmul (pruning) ---------------------------------------------------------------
    # A pruned W (K, N) is kept as CSR over its output columns (the CSR of W.T): column n has
    # rows indices[indptr[n]:indptr[n+1]] (ascending) holding values[indptr[n]:indptr[n+1]].

    def to_csr(self, w, threshold=0.0):
        """W (K, N) -> (indptr int32 (N+1,), indices int32 (nnz,), values float32 (nnz,)),
        keeping the entries with |w| > threshold (and NaNs: the product must show them)."""
        wt = np.asarray(w, np.float32).T  # (N, K)
        cols, rows = np.nonzero(~(np.abs(wt) <= threshold))
        indptr = np.zeros(wt.shape[0] + 1, np.int32)
        indptr[1:] = np.cumsum(np.bincount(cols, minlength=wt.shape[0]))
        return indptr, rows.astype(np.int32), wt[cols, rows]

    def sparse_linear(self, x, indptr, indices, values, bias, act, out, kernel=0, check=True):
        """out = act(x @ W + bias), W given as CSR over output columns.

        x float32 (B, K); bias float32 (N,) or None; act code; out float32 (B, N).
        Here W is rebuilt dense: W[indices[j], n] = values[j] for j in column n. Returns out.
        ``kernel`` (which compiled loop) and ``check`` (the compiled twin's O(nnz) check of the
        CSR structure, skipped with False) are accepted for the same signature and ignored.
        """
        N, K = out.shape[1], x.shape[1]
        w = np.zeros((K, N), x.dtype)
        w[indices, np.repeat(np.arange(N), np.diff(indptr))] = values
        return self.bias_act_forward(x @ w, bias, act, out)

    def sparse_chain_prepare(self, specs, k, threads=1):
        """Sparse Dense layers for :meth:`sparse_chain_forward`: ``specs`` one (indptr,
        indices, values, bias, act) per layer, as sparse_linear takes them; ``k`` features in
        (layer l + 1 reads layer l's N); ``threads``: the compiled twin splits each layer's
        columns over that many pool threads (the same bits). Returns a :class:`SparseChain`
        (the compiled twin: an object with the same ``specs``, ``k``, ``widths``, ``threads``;
        it checks every CSR structure once, here)."""
        specs = tuple(tuple(s) for s in specs)
        return SparseChain(specs, int(k), tuple(len(s[0]) - 1 for s in specs), int(threads))

    def sparse_chain_forward(self, x, chain, outs):
        """Sparse Dense layers one after the other: h = x; outs[l] = act_l(h @ W_l + b_l)
        (B, N_l), h = outs[l]. x float32 (B, k). Returns outs[-1]. (The runtime's run of
        sparse layers: one call, on the native pool.)"""
        h = x
        for spec, out in zip(chain.specs, outs, strict=True):
            h = self.sparse_linear(h, *spec, out)
        return h
