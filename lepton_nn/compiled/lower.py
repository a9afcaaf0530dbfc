"""The op table: each supported ``Function`` (forward and backward) and optimizer, lowered to
primitive ops (:mod:`lepton_nn.compiled.prims`) that compute exactly what the eager op
computes, in the same order.

A forward lowering ``(rec, ctx, ins, kwargs, out)`` writes slot ``out`` from the input slots
``ins`` (``rec.saved[id(ctx)]`` keeps what its backward needs); a backward lowering
``(rec, ctx, g) -> slots`` returns one gradient slot (or None) per input, like
``Function.backward``. Anything outside what a lowering handles raises
:class:`~lepton_nn.errors.UnsupportedOpError` naming the op and the option.
"""

from __future__ import annotations

from ..backend import get_backend
from ..backend.reference import GELU, IDENTITY
from ..errors import UnsupportedOpError
from ..ops import elementwise as E
from ..ops import linalg as L
from ..ops import loss as LS
from ..ops import reduce as R
from ..ops import shape as S
from ..optim import SGD, Adam, AdamW

FORWARD: dict = {}
BACKWARD: dict = {}
OPTIMIZERS: dict = {}


def _op(cls):
    def register(pair):
        FORWARD[cls], BACKWARD[cls] = pair
        return pair

    return register


def _refuse(op: str, what: str):
    raise UnsupportedOpError(f"op {op} with {what} has no compiled twin")


def _saved(rec, ctx) -> dict:
    return rec.saved[id(ctx)]


def _same_shape(rec, ctx, op: str, g, *ins) -> None:
    """Each input that wants a gradient has g's shape (a broadcast one would need a sum)."""
    for s, need in zip(ins, ctx.needs_grad):
        if need and rec.slots[s].shape != rec.slots[g].shape:
            _refuse(op, f"an input of shape {rec.slots[s].shape} broadcast to "
                    f"{rec.slots[g].shape} that needs a gradient")  # fmt: skip


# -- dense -----------------------------------------------------------------------------------
def _gemm(rec, a, b, out, ta, tb) -> None:
    """A Linear's product through the backend's ``gemm``; ``own``: it runs the backend's own
    kernel there (``gemm_own``), which the replays call too (np.matmul rounds otherwise)."""
    m, n = rec.slots[out].shape
    k = rec.slots[a].shape[0 if ta else 1]
    own = bool(get_backend().gemm_own(rec.slots[out].dtype, m, n, k))
    rec.emit("matmul", (a, b), (out,), ta=ta, tb=tb, own=own)


def _linear_fwd(rec, ctx, ins, kw, out):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if len(rec.slots[x].shape) != 2:
        _refuse("Linear", f"a {len(rec.slots[x].shape)}-D input (batch, features) expected")
    z = rec.like(out) if ctx.act == GELU else out
    _gemm(rec, x, w, z, False, False)
    if b is not None or ctx.act != IDENTITY:
        rec.emit("bias_act", (z,) if b is None else (z, b), (out,), act=ctx.act)
    _saved(rec, ctx)["z"] = z


def _linear_bwd(rec, ctx, g):
    sv = _saved(rec, ctx)
    x, w = sv["ins"][0], sv["ins"][1]
    b = sv["ins"][2] if len(sv["ins"]) > 2 else None
    need_b = b is not None and ctx.needs_grad[2]
    gb = rec.like(b) if need_b else None
    if ctx.act == IDENTITY:
        gz = g
        if need_b:
            rec.emit("colsum", (g,), (gb,))
    else:
        gz = rec.like(g)
        rec.emit("bias_act_back", (g, sv["out"], sv["z"]) + ((b,) if b is not None else ()),
                 (gz,) + ((gb,) if need_b else ()), act=ctx.act)  # fmt: skip
    gw = gx = None
    if ctx.needs_grad[1]:
        gw = rec.like(w)
        _gemm(rec, x, gz, gw, True, False)
    if ctx.needs_grad[0]:
        gx = rec.like(x)
        _gemm(rec, gz, w, gx, False, True)
    return (gx, gw) if b is None else (gx, gw, gb)


_op(L.Linear)((_linear_fwd, _linear_bwd))


def _matmul_fwd(rec, ctx, ins, kw, out):
    if any(len(rec.slots[s].shape) != 2 for s in ins):
        _refuse("MatMul", "operands that are not 2-D")
    rec.emit("matmul", ins, (out,), ta=False, tb=False)


def _matmul_bwd(rec, ctx, g):
    a, b = _saved(rec, ctx)["ins"]
    ga = gb = None
    if ctx.needs_grad[0]:
        ga = rec.like(a)
        rec.emit("matmul", (g, b), (ga,), ta=False, tb=True)
    if ctx.needs_grad[1]:
        gb = rec.like(b)
        rec.emit("matmul", (a, g), (gb,), ta=True, tb=False)
    return ga, gb


_op(L.MatMul)((_matmul_fwd, _matmul_bwd))


# -- elementwise (same shapes, or a 0-d operand in the forward) --------------------------------
def _binary(name):
    def fwd(rec, ctx, ins, kw, out):
        rec.emit(name, ins, (out,))

    return fwd


def _add_bwd(rec, ctx, g):
    sv = _saved(rec, ctx)
    _same_shape(rec, ctx, "Add", g, *sv["ins"])
    return g, g


def _sub_bwd(rec, ctx, g):
    sv = _saved(rec, ctx)
    _same_shape(rec, ctx, "Sub", g, *sv["ins"])
    gb = None
    if ctx.needs_grad[1]:
        gb = rec.like(g)
        rec.emit("neg", (g,), (gb,))
    return g, gb


def _mul_bwd(rec, ctx, g):
    a, b = _saved(rec, ctx)["ins"]
    _same_shape(rec, ctx, "Mul", g, a, b)  # the other operand may be a broadcast scalar
    ga = gb = None
    if ctx.needs_grad[0]:
        ga = rec.like(g)
        rec.emit("mul", (g, b), (ga,))
    if ctx.needs_grad[1]:
        gb = rec.like(g)
        rec.emit("mul", (g, a), (gb,))
    return ga, gb


def _div_bwd(rec, ctx, g):
    a, b = _saved(rec, ctx)["ins"]
    if ctx.needs_grad[1] or rec.slots[b].shape != ():
        _refuse("Div", "a divisor that needs a gradient or is not a scalar")
    _same_shape(rec, ctx, "Div", g, a, b)
    ga = rec.like(g)
    rec.emit("div_back", (g, b), (ga,))
    return ga, None


_op(E.Add)((_binary("add"), _add_bwd))
_op(E.Sub)((_binary("sub"), _sub_bwd))
_op(E.Mul)((_binary("mul"), _mul_bwd))
_op(E.Div)((_binary("div"), _div_bwd))


def _unary(name, back):
    def fwd(rec, ctx, ins, kw, out):
        rec.emit(name, ins, (out,))

    def bwd(rec, ctx, g):
        gx = rec.like(g)
        rec.emit(back, (g, _saved(rec, ctx)["out"]), (gx,))
        return (gx,)

    return fwd, bwd


_op(E.Relu)(_unary("relu", "relu_back"))
_op(E.Sigmoid)(_unary("sigmoid", "sigmoid_back"))
_op(E.Tanh)(_unary("tanh", "tanh_back"))


def _neg_bwd(rec, ctx, g):
    gx = rec.like(g)
    rec.emit("neg", (g,), (gx,))
    return (gx,)


_op(E.Neg)((lambda rec, ctx, ins, kw, out: rec.emit("neg", ins, (out,)), _neg_bwd))


# -- shape and reductions ------------------------------------------------------------------
def _reshape_fwd(rec, ctx, ins, kw, out):
    rec.emit("copy", ins, (out,))  # a reshape's values, in the new slot's shape


def _reshape_bwd(rec, ctx, g):
    (a,) = _saved(rec, ctx)["ins"]
    return (rec.view(g, rec.slots[a].shape),)


_op(S.Reshape)((_reshape_fwd, _reshape_bwd))


def _reduce_fwd(name):
    def fwd(rec, ctx, ins, kw, out):
        axis, nd = ctx.axis, len(rec.slots[ins[0]].shape)
        if ctx.keepdims or not (axis is None or (nd == 2 and axis in (1, -1))):
            _refuse(type(ctx).__name__, f"axis={axis}, keepdims={ctx.keepdims} (axis None, "
                    "or axis 1 of a 2-D input)")  # fmt: skip
        rec.emit(name, ins, (out,), axis=None if axis is None else 1)

    return fwd


def _sum_bwd(rec, ctx, g):
    (a,) = _saved(rec, ctx)["ins"]
    gx = rec.like(a)
    rec.emit("fill", (g,), (gx,), axis=ctx.axis if ctx.axis is None else 1)
    return (gx,)


def _mean_bwd(rec, ctx, g):
    (a,) = _saved(rec, ctx)["ins"]
    gx = rec.like(a)
    rec.emit("mean_back", (g,), (gx,), axis=ctx.axis if ctx.axis is None else 1, n=ctx.n)
    return (gx,)


_op(R.Sum)((_reduce_fwd("sum"), _sum_bwd))
_op(R.Mean)((_reduce_fwd("mean"), _mean_bwd))


# -- losses ----------------------------------------------------------------------------------
def _bce_fwd(rec, ctx, ins, kw, out):
    if ctx.pwy is not None or ctx.weight is not None or ctx.reduction == "none":
        _refuse("BCEWithLogits", "pos_weight, sample_weight or reduction='none'")
    (z,) = ins
    y = rec.array_slot(kw["y"])
    sp, el = rec.like(z), rec.like(z)
    rec.emit("bce", (z, y), (sp, el, out), m=ctx.m, reduction=ctx.reduction)
    _saved(rec, ctx).update(y=y, sp=sp)


def _bce_bwd(rec, ctx, g):
    sv = _saved(rec, ctx)
    z = sv["ins"][0]
    gz = rec.like(z)
    rec.emit("bce_back", (z, sv["sp"], sv["y"], g), (gz,), m=ctx.m, reduction=ctx.reduction)
    return (gz,)


_op(LS.BCEWithLogits)((_bce_fwd, _bce_bwd))


def _xent_fwd(rec, ctx, ins, kw, out):
    if ctx.weight is not None or ctx.reduction == "none":
        _refuse("SoftmaxCrossEntropy", "sample_weight or reduction='none'")
    (z,) = ins
    labels = rec.array_slot(kw["labels"])
    if rec.slots[labels].dtype.kind not in "iu":
        _refuse("SoftmaxCrossEntropy", "labels that are not integers (pass int64 labels)")
    probs, per = rec.like(z), rec.new(rec.slots[z].shape[:1], rec.slots[z].dtype)
    rec.emit("xent", (z, labels), (probs, per, out), reduction=ctx.reduction)
    _saved(rec, ctx).update(labels=labels, probs=probs)


def _xent_bwd(rec, ctx, g):
    sv = _saved(rec, ctx)
    probs = sv["probs"]
    gl, gz = rec.new(rec.slots[probs].shape[:1], rec.slots[probs].dtype), rec.like(probs)
    rec.emit("xent_back", (probs, sv["labels"], g), (gl, gz), reduction=ctx.reduction)
    return (gz,)


_op(LS.SoftmaxCrossEntropy)((_xent_fwd, _xent_bwd))


# -- optimizers: p, g (and state) updated in place; lr and step counts read at every call --
def _params_with_grads(rec, opt):
    for p in opt.params:
        if p.grad is not None:
            if p.grad.dtype != p.data.dtype or not p.data.flags.c_contiguous:
                _refuse(type(opt).__name__, "a non-contiguous parameter or a re-typed gradient")
            yield p, rec.tensor_slot(p), rec.grad_of[id(p)]


def _sgd(rec, opt):
    for p, ps, gs in _params_with_grads(rec, opt):
        rec.emit("sgd", (gs,), (ps,), opt=opt, param=p, momentum=opt.momentum,
                 nesterov=opt.nesterov, weight_decay=opt.weight_decay)  # fmt: skip


def _adam(rec, opt):
    for p, ps, gs in _params_with_grads(rec, opt):
        rec.emit("adam", (gs,), (ps,), opt=opt, param=p, betas=opt.betas, eps=opt.eps,
                 weight_decay=float(opt.weight_decay), decoupled=opt.decoupled)  # fmt: skip


OPTIMIZERS.update({SGD: _sgd, Adam: _adam, AdamW: _adam})
