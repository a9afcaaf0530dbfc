"""The readable replay: each primitive op as the NumPy calls (and backend kernels) the eager
op runs, with ``out=`` buffers, so a replay is bit-identical to the eager step.

``TWINS[name](be, A, prim)`` returns a no-argument function that runs ``prim`` on the arrays
``A`` (one per slot, bound once): ``A[prim.ins[k]]`` are read, ``A[prim.outs[k]]`` written.
The comment on each line is the eager line it mirrors.
"""

from __future__ import annotations

import numpy as np

TWINS: dict = {}


def twin(name):
    def register(fn):
        TWINS[name] = fn
        return fn

    return register


@twin("matmul")
def _matmul(be, A, p):
    a, b = (A[s] for s in p.ins)
    if p.attrs.get("own"):  # a Linear's product on the backend's own kernel
        ta, tb, o, gemm = p.attrs["ta"], p.attrs["tb"], A[p.outs[0]], be.gemm
        return lambda: gemm(a, ta, b, tb, o)  # be.gemm(x2, False, w, False) ...
    a = a.T if p.attrs["ta"] else a
    b = b.T if p.attrs["tb"] else b
    o = A[p.outs[0]]
    return lambda: np.matmul(a, b, out=o)  # np.matmul(x2, w); x2.T @ gz; gz @ w.T


@twin("bias_act")
def _bias_act(be, A, p):
    z, b = A[p.ins[0]], (A[p.ins[1]] if len(p.ins) > 1 else None)
    o, act, kernel = A[p.outs[0]], p.attrs["act"], be.bias_act_forward
    return lambda: kernel(z, b, act, o)  # be.bias_act_forward(z, b, act, z)


@twin("bias_act_back")
def _bias_act_back(be, A, p):
    g, y, z = (A[s] for s in p.ins[:3])
    b = A[p.ins[3]] if len(p.ins) > 3 else None
    gz, gb = A[p.outs[0]], (A[p.outs[1]] if len(p.outs) > 1 else None)
    act, kernel = p.attrs["act"], be.bias_act_backward
    return lambda: kernel(g, y, z, b, act, gz, gb)


@twin("colsum")
def _colsum(be, A, p):
    g, o = A[p.ins[0]], A[p.outs[0]]
    return lambda: np.sum(g, axis=0, out=o)  # gb = g.sum(axis=0)


def _binary(name, ufunc):
    @twin(name)
    def make(be, A, p):
        a, b, o = A[p.ins[0]], A[p.ins[1]], A[p.outs[0]]
        return lambda: ufunc(a, b, out=o)

    return make


_binary("add", np.add)
_binary("sub", np.subtract)
_binary("mul", np.multiply)
_binary("div", np.divide)


@twin("neg")
def _neg(be, A, p):
    a, o = A[p.ins[0]], A[p.outs[0]]
    return lambda: np.negative(a, out=o)


@twin("div_back")
def _div_back(be, A, p):
    g, b, o = A[p.ins[0]], A[p.ins[1]], A[p.outs[0]]

    def run():  # ga = zero_where_no_grad(g / b, g)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            np.divide(g, b, out=o)
        bad = np.isnan(o)
        if bad.any():
            o[...] = np.where(bad & (g == 0), np.zeros((), o.dtype), o)

    return run


@twin("relu")
def _relu(be, A, p):
    a, o = A[p.ins[0]], A[p.outs[0]]
    return lambda: np.maximum(a, 0, out=o)


@twin("relu_back")
def _relu_back(be, A, p):
    g, y, o = A[p.ins[0]], A[p.ins[1]], A[p.outs[0]]
    return lambda: np.multiply(g, y > 0, out=o)  # g * (y > 0)


@twin("sigmoid")
def _sigmoid(be, A, p):
    a, o = A[p.ins[0]], A[p.outs[0]]

    def run():  # e = exp(-|a|); where(a >= 0, 1 / (1 + e), e / (1 + e))
        e = np.exp(-np.abs(a))
        o[...] = np.where(a >= 0, 1 / (1 + e), e / (1 + e))

    return run


@twin("sigmoid_back")
def _sigmoid_back(be, A, p):
    g, y, o = A[p.ins[0]], A[p.ins[1]], A[p.outs[0]]

    def run():
        o[...] = g * y * (1 - y)

    return run


@twin("tanh")
def _tanh(be, A, p):
    a, o = A[p.ins[0]], A[p.outs[0]]
    return lambda: np.tanh(a, out=o)


@twin("tanh_back")
def _tanh_back(be, A, p):
    g, y, o = A[p.ins[0]], A[p.ins[1]], A[p.outs[0]]

    def run():
        o[...] = g * (1 - y * y)

    return run


@twin("copy")
def _copy(be, A, p):
    a, o = A[p.ins[0]], A[p.outs[0]]
    return lambda: np.copyto(o, a.reshape(o.shape))


@twin("sum")
def _sum(be, A, p):
    a, o, axis = A[p.ins[0]], A[p.outs[0]], p.attrs["axis"]
    return lambda: np.sum(a, axis=axis, out=o)


@twin("mean")
def _mean(be, A, p):
    a, o, axis = A[p.ins[0]], A[p.outs[0]], p.attrs["axis"]
    return lambda: np.mean(a, axis=axis, out=o)


def _expanded(g, o, axis):
    return g.reshape((1,) * o.ndim) if axis is None else g[:, None]


@twin("fill")
def _fill(be, A, p):
    g, o = A[p.ins[0]], A[p.outs[0]]
    src = _expanded(g, o, p.attrs.get("axis")) if p.attrs else g
    return lambda: np.copyto(o, src)  # np.broadcast_to(g, shape)


@twin("mean_back")
def _mean_back(be, A, p):
    g, o, n = A[p.ins[0]], A[p.outs[0]], p.attrs["n"]
    src = _expanded(g, o, p.attrs["axis"])
    return lambda: np.copyto(o, src / n)  # broadcast_to(expand(g) / n, shape)


def _reduce(per, out, reduction):
    s = per.sum(dtype=per.dtype)  # loss_ops._reduce
    out[...] = s / max(per.shape[0], 1) if reduction == "mean" else s


@twin("bce")
def _bce(be, A, p):
    z, y = A[p.ins[0]], A[p.ins[1]]
    sp, el, out = (A[s] for s in p.outs)
    m, reduction, n = p.attrs["m"], p.attrs["reduction"], z.shape[0]

    def run():
        np.logaddexp(0, z, out=sp)  # sp = np.logaddexp(0, z)
        np.multiply(y, z, out=el)
        np.subtract(sp, el, out=el)  # el = sp - y * z
        per = el.reshape(n, m).mean(axis=1) if m > 1 else el.reshape(n)
        _reduce(per, out, reduction)

    return run


@twin("bce_back")
def _bce_back(be, A, p):
    z, sp, y, g = (A[s] for s in p.ins)
    gz, m, mean, n = A[p.outs[0]], p.attrs["m"], p.attrs["reduction"] == "mean", z.shape[0]

    def run():
        np.subtract(z, sp, out=gz)
        np.exp(gz, out=gz)  # gz = np.exp(z - sp)
        np.subtract(gz, y, out=gz)  # gz -= y
        np.multiply(gz, np.asarray((g / max(n, 1) if mean else g) / m, z.dtype), out=gz)

    return run


def _check_labels(labels, c):
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(
            f"cross_entropy: labels must be in [0, {c}), got {labels.min()}..{labels.max()}"
        )


@twin("xent")
def _xent(be, A, p):
    z, labels = A[p.ins[0]], A[p.ins[1]]
    probs, per, out = (A[s] for s in p.outs)
    kernel, reduction = be.softmax_xent_forward, p.attrs["reduction"]

    def run():
        _check_labels(labels, z.shape[1])
        kernel(z, labels, probs, per)
        _reduce(per, out, reduction)

    return run


@twin("xent_back")
def _xent_back(be, A, p):
    probs, labels, g = (A[s] for s in p.ins)
    gl, gz = (A[s] for s in p.outs)
    kernel, mean, n = be.softmax_xent_backward, p.attrs["reduction"] == "mean", gl.shape[0]

    def run():
        gl[...] = g / max(n, 1) if mean else g  # np.full(n, g / n, dtype)
        kernel(probs, labels, gl, gz)

    return run


@twin("tick")
def _tick(be, A, p):
    opt = p.attrs["opt"]

    def run():
        opt.steps += 1

    return run


@twin("sgd")
def _sgd(be, A, p):
    g0, param, opt = A[p.ins[0]], p.attrs["param"], p.attrs["opt"]
    mu, nesterov, wd = p.attrs["momentum"], p.attrs["nesterov"], p.attrs["weight_decay"]

    def run():  # SGD.step for one parameter
        data, g = param.data, g0
        if wd:
            g = g + wd * data
        if mu:
            first = id(param) not in opt.state
            b = opt._buffer(param, "momentum")
            if first:
                b[...] = g
            else:
                b *= mu
                b += g
            g = g + mu * b if nesterov else b
        data -= opt.lr * g

    return run


@twin("adam")
def _adam(be, A, p):
    g, param, opt = A[p.ins[0]], p.attrs["param"], p.attrs["opt"]
    (b1, b2), eps, wd, dec = (
        p.attrs["betas"],
        p.attrs["eps"],
        p.attrs["weight_decay"],
        p.attrs["decoupled"],
    )
    kernel = be.adam_step

    def run():  # Adam.step for one parameter
        st = opt.state[id(param)]
        st["t"] += 1
        kernel(param.data, g, st["m"], st["v"], opt.lr, b1, b2, eps, wd, st["t"], dec)

    return run


def numpy_replay(tape, be, arrays) -> list:
    """The twin's calls, in tape order, bound to ``arrays`` (one per slot)."""
    return [TWINS[p.name](be, arrays, p) for p in tape.ops]
