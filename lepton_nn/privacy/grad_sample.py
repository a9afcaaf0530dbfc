"""Per-example gradients by closed forms, one rule per layer kind, in one backward pass.

While a :class:`GradSampler` is attached, each layer with parameters runs through its rule's
``call``: the same math as the layer's own, with the gradient of the pre-activation z read on
the way back (a tensor hook on z; for Dense the fused op's own backward, which then forms no
full-batch weight gradient: DP-SGD would discard it). From the layer's
input x and dL/dz the rule gives, for example n (shapes without the batch axis):

* ``Dense``:  z = x W + b, x (N, T, I) (T = 1 for tabular rows): dW_n = sum_t x_nt^T g_nt,
  db_n = sum_t g_nt. Ghost clipping reads the norm without forming dW_n:
  ||dW_n||^2 = sum_{t,s} (x_nt . x_ns)(g_nt . g_ns)  (= ||x_n||^2 ||g_n||^2 when T = 1),
  and the clipped sum is one matmul, sum_n c_n dW_n = X^T (c * G).
* ``Conv2D``: the input unfolded into columns U_n (C/G kh kw, OH OW) per group:
  dW_n = G_n U_n^T, db_n = sum over positions of G_n. Ghost clipping: ||dW_n||^2 =
  <U_n^T U_n, G_n^T G_n> (two Gram matrices over the L output positions, when L^2 <= the
  size of dW_n), and the clipped sum is one product, sum_n c_n dW_n = (c G) U^T.
* ``Embedding``: dW_n = scatter-add of g_nt into the rows of example n's ids.
* ``LayerNorm``: with x_hat the row-normalized input: dgamma_n = sum_t g_nt * x_hat_nt,
  dbeta_n = sum_t g_nt.
* ``SimpleRNN``/``LSTM``/``GRU``: the op's own backward (BPTT) hands over its per-step
  pre-activation gradients dxz, dhz (T, N, G U) and the states h_{t-1} (a tap in
  :mod:`lepton_nn.ops.recurrent`): dW_ih_n = sum_t x_nt^T dxz_nt, dW_hh_n = sum_t
  h_n,t-1^T dhz_nt, db_n = sum_t dxz_nt (GRU: db_hh_n = sum_t dhz_nt).

``BatchNorm`` mixes the examples of a batch (no per-example gradient exists) and is refused;
so is any other layer with parameters but no rule here. Gradients are those of each
example's own loss: a mean loss's captured gradients are scaled back by the batch size.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..autograd import Tensor
from ..backend import get_backend
from ..backend.reference import ACT_CODE, IDENTITY
from ..backend.threads import blas_single
from ..errors import LeptonError, ShapeError
from ..nn.conv import Conv2D
from ..nn.layers import Dense, apply_activation, as_input
from ..nn.norm import BatchNorm, LayerNorm
from ..nn.recurrent import GRU, LSTM, Embedding, SimpleRNN
from ..ops.linalg import Linear
from ..ops.norm import layer_norm
from ..ops.recurrent import _Sequence, embedding
from ._rule import _add, _Rule
from .conv_rule import _ConvRule

__all__ = ["GradSampler", "per_example_grads", "SUPPORTED"]


class _RecordingLinear(Linear):
    """``Linear`` whose backward hands dL/dz (N, out) to the rule's record and forms no
    full-batch dL/dW, dL/db: DP-SGD discards those, and the clipped sum X^T (c * G) is the
    one weight GEMM of the step (see :meth:`_DenseRule.clipped_sum`)."""

    def backward(self, g):
        out = self.w.shape[1]
        g = g if g.ndim == 2 else g.reshape(-1, out)
        g = np.ascontiguousarray(g, dtype=self.y.dtype)  # the kernel reads flat C arrays
        if self.act == IDENTITY:
            gz = np.array(g)  # kept until the optimizer step: not the engine's array
        else:
            z = self.y if self.z is None else self.z
            gz = get_backend().bias_act_backward(
                g, self.y, z, self.b, self.act, np.empty_like(g), None
            )[0]
        rec = self.rec
        rec[1] = gz.reshape(*rec[0].shape[:-1], out)
        gx = None
        if self.needs_grad[0]:
            with blas_single(self.flops):
                gx = np.matmul(gz, self.w.T)
            if len(self.x_shape) != 2:
                gx = gx.reshape(self.x_shape)
        return (gx, None) if self.b is None else (gx, None, None)


class _DenseRule(_Rule):
    def call(self, x):
        layer = self.layer
        x = as_input(layer, x)
        if x.ndim < 1 or x.shape[-1] != layer.in_features:
            raise ShapeError(
                f"layer '{layer.name}' (Dense) expects input shape (batch, "
                f"{layer.in_features}), got {x.shape}"
            )
        ps = (layer.weight,) if layer.bias is None else (layer.weight, layer.bias)
        act = ACT_CODE.get(layer.activation)  # None: not fused (softmax, log_softmax)
        y = _RecordingLinear.apply(x, *ps, act=IDENTITY if act is None else act)
        if y._ctx is not None:  # a gradient is wanted: backward fills in dL/dz
            y._ctx.rec = [x.data, None]
            self.records.append(y._ctx.rec)
        return y if act is not None else apply_activation(y, layer.activation)

    def _3d(self, scale):
        out = []
        for x, g in self.recs(scale):
            n = x.shape[0]
            out.append((x.reshape(n, -1, x.shape[-1]), g.reshape(n, -1, g.shape[-1])))
        return out

    def per_example(self, scale):
        res: dict[str, np.ndarray] = {}
        for x, g in self._3d(scale):
            _add(res, "weight", np.einsum("nti,nto->nio", x, g))
            if self.layer.bias is not None:
                _add(res, "bias", g.sum(axis=1))
        return {k: v for k, v in res.items() if k in self.params()}

    def _rows(self):
        """(x (N, I), g (N, O)) when the layer ran once, on rows, with every parameter
        trained: the common tabular case, read with as few NumPy calls as possible."""
        recs = self.records
        if (
            self.ghost
            and len(recs) == 1
            and recs[0][1] is not None
            and recs[0][0].ndim == 2
            and len(self._params) == (1 + (self.layer.bias is not None))
        ):
            return recs[0]
        return None

    def norms_sq(self, scale):
        rows = self._rows()
        if rows is not None:  # ||x g^T||^2 + ||g||^2 = (||x||^2 + 1) ||g||^2
            x, g = rows
            w = _rowdot(x, x)
            if self.layer.bias is not None:
                w += 1
            w *= _rowdot(g, g)
            return w * (scale * scale) if scale != 1.0 else w
        recs = self._3d(scale)
        if (
            not self.ghost
            or len(recs) != 1
            or len(self.params()) != (1 + (self.layer.bias is not None))
        ):
            return super().norms_sq(scale)  # a shared or partly frozen layer: the sum first
        x, g = recs[0]
        t, i, o = x.shape[1], x.shape[2], g.shape[2]
        if t == 1:  # ghost norm of an outer product: ||x g^T||^2 = ||x||^2 ||g||^2
            gb = np.square(g[:, 0]).sum(axis=1)
            w = np.square(x[:, 0]).sum(axis=1) * gb
        elif t * t <= i * o:  # ghost norm through the two Gram matrices over time
            gram_g = np.einsum("nto,nso->nts", g, g)
            w = (np.einsum("nti,nsi->nts", x, x) * gram_g).sum(axis=(1, 2))
            gb = np.square(g.sum(axis=1)).sum(axis=1)
        else:  # the per-example gradient is smaller than the Gram matrices
            return super().norms_sq(scale)
        if self.layer.bias is not None:
            w = w + gb
        return w

    def clipped_sum(self, c, scale):
        if not self.ghost:
            return super().clipped_sum(c, scale)
        rows = self._rows()
        if rows is not None:  # one weighted backward: X^T (c * G), c^T G
            x, g = rows
            cs = (c * scale if scale != 1.0 else c).astype(g.dtype, copy=False)
            with blas_single(2 * x.size * g.shape[1]):  # as the layer's own backward
                out = {"weight": x.T @ (g * cs[:, None])}
            if self.layer.bias is not None:
                out["bias"] = cs @ g
            return out
        res: dict[str, np.ndarray] = {}
        for x, g in self._3d(scale):
            gc = g * c[:, None, None].astype(g.dtype)
            _add(res, "weight", x.reshape(-1, x.shape[-1]).T @ gc.reshape(-1, g.shape[-1]))
            if self.layer.bias is not None:
                _add(res, "bias", gc.sum(axis=(0, 1)))
        return {k: v for k, v in res.items() if k in self.params()}


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, K), (N, K) -> (N,): the dot product of each row pair (one gufunc call)."""
    return _vecdot(a, b) if _vecdot is not None else np.einsum("nk,nk->n", a, b)


_vecdot = getattr(np, "vecdot", None)  # NumPy >= 2.0


class _EmbeddingRule(_Rule):
    def call(self, ids):
        z = embedding(ids, self.layer.weight)
        self._record(np.asarray(ids.data if isinstance(ids, Tensor) else ids), z)
        return z

    def per_example(self, scale):
        res: dict[str, np.ndarray] = {}
        w = self.layer.weight
        for ids, g in self.recs(scale):
            n = ids.shape[0]
            out = np.zeros((n, *w.shape), g.dtype)
            rows = np.broadcast_to(np.arange(n).reshape(n, *([1] * (ids.ndim - 1))), ids.shape)
            np.add.at(out, (rows, ids.astype(np.intp)), g)
            _add(res, "weight", out)
        return {k: v for k, v in res.items() if k in self.params()}


class _LayerNormRule(_Rule):
    def call(self, x):
        layer = self.layer
        x = as_input(layer, x)
        if x.ndim < 1 or x.shape[-1] != layer.features:
            raise ShapeError(
                f"layer '{layer.name}' (LayerNorm) expects input shape (..., {layer.features}), "
                f"got {x.shape}"
            )
        z = layer_norm(x, layer.weight, layer.bias, layer.eps)
        self._record(x.data, z)
        return z

    def per_example(self, scale):
        res: dict[str, np.ndarray] = {}
        for x, g in self.recs(scale):
            n, d = x.shape[0], x.shape[-1]
            mu = x.mean(axis=-1, keepdims=True)
            xhat = (x - mu) / np.sqrt(x.var(axis=-1, keepdims=True) + self.layer.eps)
            _add(res, "weight", (g * xhat).reshape(n, -1, d).sum(axis=1))
            _add(res, "bias", g.reshape(n, -1, d).sum(axis=1))
        return {k: v for k, v in res.items() if k in self.params()}


class _RecurrentRule(_Rule):
    """Runs the layer's own call; the recurrent op's backward reports through ``tap``."""

    def call(self, *args, **kwargs):
        return type(self.layer).call(self.layer, *args, **kwargs)

    def tap(self, op, dxz, dhz, hp) -> None:
        layer = self.layer
        for d in layer.directions:
            if op.w_ih is getattr(layer, "weight_ih" + d).data:
                t, n = dxz.shape[:2]
                xt = op.xt.reshape(t, n, -1)
                grads = {
                    "weight_ih" + d: np.einsum("tnf,tng->nfg", xt, dxz),
                    "weight_hh" + d: np.einsum("tnu,tng->nug", hp, dhz),
                }
                if op.has_b:
                    grads["bias" + d] = dxz.sum(axis=0)
                if getattr(op, "b_hh", None) is not None:
                    grads["bias_hh" + d] = dhz.sum(axis=0)
                self.records.append([None, grads])

    def per_example(self, scale):
        res: dict[str, np.ndarray] = {}
        for _, grads in self.records:
            for k, v in grads.items():
                _add(res, k, v * scale)
        return {k: v for k, v in res.items() if k in self.params()}


RULES: dict[type, type[_Rule]] = {
    Dense: _DenseRule,
    Conv2D: _ConvRule,
    Embedding: _EmbeddingRule,
    LayerNorm: _LayerNormRule,
    SimpleRNN: _RecurrentRule,
    LSTM: _RecurrentRule,
    GRU: _RecurrentRule,
}
SUPPORTED = tuple(sorted(cls.__name__ for cls in RULES))


class GradSampler:
    """Per-example gradients of every trainable parameter of ``model`` (see the module doc).

    ``ghost=False`` forms every per-example gradient even where a rule could avoid it (for
    comparison). ``attach()`` routes each layer through its rule; after a forward and
    ``backward()``, ``per_example(scale)``, ``norms(scale)`` and ``clipped_sum(c, scale)`` read them
    (``scale``: the batch size when the loss was a mean, 1 for a sum); ``clear()`` drops them.
    """

    def __init__(self, model, ghost: bool = True):
        self.model = model
        self.rules: list[_Rule] = []
        for prefix, m in model._named_modules():
            if isinstance(m, BatchNorm):
                raise LeptonError(
                    f"layer '{m.name}' (BatchNorm) mixes the examples of a batch, so no "
                    "per-example gradient exists and differential privacy cannot be given; "
                    "use LayerNorm instead"
                )
            if not any(p.requires_grad for _, p in m._own_parameters()):
                continue
            rule = RULES.get(type(m))
            if rule is None:
                raise LeptonError(
                    f"layer '{m.name}' ({type(m).__name__}) has no per-example gradient rule; "
                    f"private training supports {', '.join(SUPPORTED)} (and layers without "
                    "parameters)"
                )
            self.rules.append(rule(m, prefix, ghost))
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        ids = [id(p) for r in self.rules for p in r.params().values()]
        self.shared = len(ids) != len(set(ids))  # a parameter used by two layers
        self._taps = [r.tap for r in self.rules if isinstance(r, _RecurrentRule)]

    def attach(self) -> GradSampler:
        for r in self.rules:
            r.attach()
        _Sequence.weight_grad_taps.extend(self._taps)
        return self

    def detach(self) -> None:
        for r in self.rules:
            r.detach()
        for t in self._taps:
            if t in _Sequence.weight_grad_taps:
                _Sequence.weight_grad_taps.remove(t)

    def batch_size(self) -> int:
        """Examples in the recorded batch (0 when nothing is recorded)."""
        for r in self.rules:
            for x, g in r.records:
                if g is not None:
                    return len(x) if x is not None else next(iter(g.values())).shape[0]
        return 0

    def clear(self) -> None:
        for r in self.rules:
            r.records.clear()

    def __enter__(self) -> GradSampler:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _named(self, rule: _Rule, local: dict) -> dict:
        return {rule.prefix + k: v for k, v in local.items()}

    def per_example(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        """Parameter name -> (N, *parameter shape); a parameter shared by layers sums."""
        out: dict[str, np.ndarray] = {}
        names = {id(p): n for n, p in self.params.items()}
        for r in self.rules:
            for k, v in r.per_example(scale).items():
                _add(out, names[id(r.params()[k])], v)
        return out

    def norms(self, scale: float = 1.0) -> np.ndarray:
        """(N,) norm of each example's whole gradient (all parameters together)."""
        if self.shared:
            g = self.per_example(scale)
            return np.sqrt(
                sum(np.square(a).reshape(a.shape[0], -1).sum(axis=1) for a in g.values())
            )
        parts = [r.norms_sq(1.0) for r in self.rules]  # linear in the scale: applied once
        parts = [p for p in parts if p is not None]
        if not parts:
            raise LeptonError("no per-example gradient was recorded: run forward and backward")
        return np.sqrt(sum(parts)) * scale

    def clipped_sum(self, c: np.ndarray, scale: float = 1.0) -> dict[int, np.ndarray]:
        """id(parameter) -> sum_n c_n grad_n (the weighted sum without per-example arrays
        where the rule knows how)."""
        out: dict[int, np.ndarray] = {}
        c = np.asarray(c) * scale
        for r in self.rules:
            ps = r.params()
            for k, v in r.clipped_sum(c, 1.0).items():
                _add(out, id(ps[k]), v)
        return out

    def _dense_rows(self) -> list | None:
        """[(layer, x, g)] when every rule is a Dense one that ran once on rows, else None."""
        out = []
        for r in self.rules:
            xg = r._rows() if type(r) is _DenseRule else None
            if xg is None:
                return None
            out.append((r.layer, *xg))
        return out

    def clip(
        self, max_norm: float, scale: float = 1.0, divisor: float = 1.0
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """(norms, sums): each example's gradient norm, and id(parameter) -> sum_n c_n
        grad_n / divisor with c_n = min(1, max_norm / (norm_n + 1e-6)): :meth:`norms` then
        :meth:`clipped_sum`, in one pass when every layer is a Dense run once on rows (the
        tabular MLP: the same arithmetic, a third fewer NumPy calls)."""
        rows = None if self.shared else self._dense_rows()
        if not rows:
            norms = self.norms(scale)
            c = np.minimum(1.0, max_norm / (norms + 1e-6))
            return norms, self.clipped_sum(c / divisor, scale)
        sq = None
        for layer, x, g in rows:  # (||x_n||^2 + 1) ||g_n||^2, as _DenseRule.norms_sq
            w = _rowdot(x, x)
            if layer.bias is not None:
                w += 1
            w *= _rowdot(g, g)
            sq = w if sq is None else np.add(sq, w, out=sq)
        norms = np.sqrt(sq)
        norms *= scale
        c = max_norm / (norms + 1e-6)
        np.minimum(c, 1.0, out=c)
        c *= scale / divisor
        sums: dict[int, np.ndarray] = {}
        for layer, x, g in rows:  # X^T (c G) and c^T G, as _DenseRule.clipped_sum
            cs = c.astype(g.dtype, copy=False)
            with blas_single(2 * x.size * g.shape[1]):
                sums[id(layer.weight)] = x.T @ (g * cs[:, None])
            if layer.bias is not None:
                sums[id(layer.bias)] = cs @ g
        return norms, sums


def loss_sum(loss_fn, out, y) -> tuple[Tensor, float]:
    """(loss, scale): the summed loss when ``loss_fn`` takes ``reduction`` (scale 1), else
    its value taken as a mean of per-example losses (scale = batch size)."""
    try:
        takes = "reduction" in inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):
        takes = False
    if takes:
        return loss_fn(out, y, reduction="sum"), 1.0
    return loss_fn(out, y), float(out.shape[0])


def per_example_grads(model, loss_fn, x, y) -> dict[str, np.ndarray]:
    """Parameter name -> (N, *shape): the gradient of each example's own loss
    ``loss_fn(model(x[n:n+1]), y[n:n+1])``, all from one forward and one backward.

    ``loss_fn(output, y)`` is a loss of :mod:`lepton_nn.losses` (or any loss that is the mean
    of per-example losses). The parameters' ``.grad`` are left as they were.
    """
    if not model.built:
        model.build((None, *np.shape(x.data if isinstance(x, Tensor) else x)[1:]))
    sampler = GradSampler(model)
    saved = {id(p): p.grad for p in sampler.params.values()}
    try:
        with sampler:
            out = model(x)
            loss, scale = loss_sum(loss_fn, out, y)
            loss.backward()
            return sampler.per_example(scale)
    finally:
        for p in sampler.params.values():
            p.grad = saved[id(p)]
