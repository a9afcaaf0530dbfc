"""The compiled replay: one Numba function generated from a tape, called once per step.

The source is built here from the op table (one line or one small loop per primitive op,
calling :mod:`lepton_nn.compiled.kernels`), compiled with ``exec`` from this string only
(never from a file) and jitted. Temporaries live in one float32 arena (a slice each);
inputs, parameters, constants and optimizer state are arguments, passed at every call, so
the model's arrays are updated in place. 0-d slots are 1-element arrays inside the function.
Per call, Python only binds the inputs, advances the optimizers' counters and computes their
scalars (learning rate, bias corrections) in double, as the eager kernels do.

    def replay(arena, S, e0, e1, ...):
        b5 = arena[0:4096].reshape((64, 64))
        mm(b0, b2, b5, False, False)          # matmul
        bias_act(b5, b3, True, 1, b5)         # bias_act
        ...
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..autograd import Tensor
from ..backend.threads import blas_held, blas_single, get_num_threads
from ..errors import UnsupportedOpError
from . import kernels as K

# elementwise prims: an expression of the inputs' elements {0}, {1}
_EW = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "div": "{0} / {1}",
    "neg": "-{0}",
    "copy": "{0}",
    "relu": "({0} if ({0} >= 0 or {0} != {0}) else ZERO)",  # np.maximum(a, 0)
    "relu_back": "{0} * (ONE if {1} > 0 else ZERO)",
    "sigmoid": "sigmoid32({0})",
    "sigmoid_back": "{0} * {1} * (ONE - {1})",
    "tanh": "tanh32({0})",
    "tanh_back": "{0} * (ONE - {1} * {1})",
    "div_back": "div_back({0}, {1})",
}
_ALIGN = 16  # floats: each arena slice starts on a 64-byte line


def _shape(shape) -> str:
    return repr(tuple(shape) if shape else (1,))


class NumbaReplay:
    """Build once from a tape; ``replay(args)`` runs one step."""

    def __init__(self, tape):
        self.tape = tape
        for s, sl in enumerate(tape.slots):
            if sl.dtype.kind == "f" and sl.dtype != np.float32:
                raise UnsupportedOpError(
                    f"the numba replay runs float32 steps (slot {s} is {sl.dtype}); "
                    "use compile(..., backend='numpy') for float64"
                )
        self.ext: list = []  # argument arrays after arena and S, bound now / per call
        self.inputs: list = []  # (ext index, argument index)
        self.params: list = []  # (ext index, Parameter)
        self.pre: list = []  # per call, before the function: counters and scalars
        self.scalars: list = []
        self.groups: dict = {}
        names, body, offset = {}, [], 0
        for s, sl in enumerate(tape.slots):
            name = f"b{s}"
            if sl.kind == "temp":
                if sl.dtype != np.float32:
                    raise UnsupportedOpError(
                        f"a {sl.dtype} temporary: the numba replay needs float32"
                    )
                size = max(math.prod(sl.shape), 1)
                body.append(f"{name} = arena[{offset}:{offset + size}].reshape({_shape(sl.shape)})")
                offset += -(-size // _ALIGN) * _ALIGN
            elif sl.kind == "view":
                body.append(f"{name} = {names[sl.ref]}.reshape({_shape(sl.shape)})")
            else:
                j = self._bind(sl)
                if sl.kind == "input":
                    self.inputs.append((j, sl.ref))
                elif sl.kind == "param":
                    self.params.append((j, sl.ref))
                body.append(f"{name} = e{j}")
            names[s] = name
        self.arena = np.zeros(max(offset, 1), np.float32)
        for k, p in enumerate(tape.ops):
            body += [f"# {k}: {p.name}", *self._emit(p, [names[s] for s in p.ins],
                                                     [names[s] for s in p.outs])]  # fmt: skip
        args = ", ".join(["arena", "S"] + [f"e{j}" for j in range(len(self.ext))])
        self.source = f"def replay({args}):\n" + "".join(f"    {ln}\n" for ln in body)
        self.source += "    return -1\n"
        self.fn = _jitted(self.source)
        self.S = np.zeros(max(len(self.scalars), 1), np.float64)
        self.hold_blas = any(_blas_held_eagerly(tape, p) for p in tape.ops
                             if p.name == "matmul" and not p.attrs.get("own"))  # fmt: skip
        self.grads = [(p, self._view(s)) for p, s in tape.grads]
        self.results = _result_views(tape.result, self)

    def _bind(self, sl) -> int:
        if sl.kind == "param":
            arr = sl.ref.data
        elif sl.kind == "const":
            arr = sl.ref
        else:
            arr = np.empty(sl.shape, sl.dtype)  # replaced by the argument at each call
        self.ext.append(arr.reshape(1) if arr.ndim == 0 else arr)
        return len(self.ext) - 1

    def _ext(self, arr) -> str:
        self.ext.append(arr)
        return f"e{len(self.ext) - 1}"

    def _group(self, key, n, make):
        """The per-call scalar block ``key`` (n values in S), made at its first use."""
        grp = self.groups.get(key)
        if grp is None:
            grp = self.groups[key] = make(len(self.scalars))
            self.scalars += [0.0] * n
            self.pre.append(grp)
        return grp

    def _threads(self) -> int:
        """The ext index of a 1-element int64 array holding the thread count, set at every
        call (the backend's gemm kernel splits over it; its sums do not depend on it)."""
        if not hasattr(self, "_threads_ext"):
            self.ext.append(np.ones(1, np.int64))
            self._threads_ext = len(self.ext) - 1
        return self._threads_ext

    def _dummy(self) -> str:
        """A writable empty array for an absent output (a global one would be read-only)."""
        if not hasattr(self, "_dummy_name"):
            self._dummy_name = self._ext(np.zeros(0, np.float32))
        return self._dummy_name

    def _view(self, s):
        """A NumPy view of slot s's memory (for .grad and results)."""
        sl, t = self.tape.slots[s], self.tape
        if sl.kind == "view":
            return self._view(sl.ref).reshape(sl.shape)
        if sl.kind == "temp":
            off = self._offset(s)
            return self.arena[off : off + max(math.prod(sl.shape), 1)].reshape(sl.shape)
        return t.slots[s].ref.data if sl.kind == "param" else self.ext[self._ext_index(s)]

    def _offset(self, s) -> int:
        off = 0
        for k, sl in enumerate(self.tape.slots):
            if sl.kind == "temp":
                if k == s:
                    return off
                off += -(-max(math.prod(sl.shape), 1) // _ALIGN) * _ALIGN
        raise KeyError(s)

    def _ext_index(self, s) -> int:
        return [k for k, sl in enumerate(self.tape.slots) if sl.kind in ("input", "param", "const")
                ].index(s)  # fmt: skip

    # -- one primitive op -> source lines ----------------------------------------------------
    def _emit(self, p, i, o) -> list:
        a = p.attrs
        if K.NUMPY_LOOPS and p.name in ("sigmoid", "tanh"):  # NumPy's exp / tanh loops
            return [f"np_{'sigmoid' if p.name == 'sigmoid' else 'tanh_nd'}({i[0]}, {o[0]})"]
        if p.name in _EW:
            n = math.prod(self.tape.slots[p.outs[0]].shape)
            idx = ["[i]" if math.prod(self.tape.slots[s].shape) == n else "[0]" for s in p.ins]
            for s in p.ins:
                if math.prod(self.tape.slots[s].shape) not in (n, 1):
                    raise UnsupportedOpError(f"{p.name} broadcasting {self.tape.slots[s].shape}")
            flat = [f"{x}.reshape(-1)" for x in i]
            expr = _EW[p.name].format(*[f"{x}{k}" for x, k in zip(["_a", "_b"], idx)])
            return [f"_o = {o[0]}.reshape(-1)", *[f"{v} = {f}" for v, f in zip(["_a", "_b"], flat)],
                    "for i in range(_o.size):", f"    _o[i] = {expr}"]  # fmt: skip
        if p.name == "matmul" and a.get("own"):  # the backend's gemm kernel, its threads
            t = f"e{self._threads()}[0]"
            return [f"own_mm({i[0]}, {i[1]}, {o[0]}, {a['ta']}, {a['tb']}, {t})"]
        if p.name == "matmul":
            return [f"mm({i[0]}, {i[1]}, {o[0]}, {a['ta']}, {a['tb']})"]
        # exp-based activations and the softmax: the eager Cython kernels' own C loops
        c_loop = "c_" if K.C_LOOPS and a.get("act") in (K.SIGMOID, K.TANH, K.GELU) else ""
        if p.name == "bias_act":
            b = i[1] if len(i) > 1 else "NO_ARRAY"
            return [f"{c_loop}bias_act({i[0]}, {b}, {len(i) > 1}, {a['act']}, {o[0]})"]
        if p.name == "bias_act_back":
            b = i[3] if len(i) > 3 else "NO_ARRAY"
            gb = o[1] if len(o) > 1 else self._dummy()
            c_loop = c_loop if a["act"] == K.GELU else ""  # the others: exact arithmetic
            return [f"{c_loop}bias_act_back({i[0]}, {i[1]}, {i[2]}, {b}, {len(i) > 3}, "
                    f"{a['act']}, {o[0]}, {gb}, {len(o) > 1})"]  # fmt: skip
        if p.name == "colsum":
            return [f"colsum({i[0]}, {o[0]})"]
        if p.name in ("sum", "mean"):
            fn = "reduce_all" if a["axis"] is None else "reduce_rows"
            return [f"{fn}({i[0]}, {o[0]}, {p.name == 'mean'})"]
        if p.name in ("fill", "mean_back"):
            fn = "spread_all" if a.get("axis") is None else "spread_rows"
            return [f"{fn}({i[0]}, {o[0]}, {a.get('n', 0)})"]
        np_loop = "np_" if K.NUMPY_LOOPS else ""  # NumPy's logaddexp and exp loops
        if p.name == "bce":
            return [f"{np_loop}bce({i[0]}, {i[1]}, {o[0]}, {o[1]}, {o[2]}, {a['m']}, "
                    f"{a['reduction'] == 'mean'})"]  # fmt: skip
        if p.name == "bce_back":
            mean = a["reduction"] == "mean"
            return [f"{np_loop}bce_back({', '.join(i)}, {o[0]}, {a['m']}, {mean})"]
        if p.name == "xent":
            fn, mean = ("c_xent" if K.C_LOOPS else "xent"), a["reduction"] == "mean"
            return [f"r = {fn}({i[0]}, {i[1]}, {', '.join(o)}, {mean})",
                    "if r >= 0:", "    return r"]  # fmt: skip
        if p.name == "xent_back":
            return [f"xent_back({', '.join(i)}, {', '.join(o)}, {a['reduction'] == 'mean'})"]
        if p.name == "tick":
            self.pre.append(_Tick(a["opt"]))
            return []
        if p.name == "adam":  # one block of scalars per optimizer (its parameters share t)
            st = a["opt"].state[id(a["param"])]
            key = ("adam", id(a["opt"]), a["betas"], a["eps"], a["weight_decay"], st["t"])
            grp = self._group(key, 9, lambda k: _AdamScalars(a, k))
            grp.states.append(st)
            m, v = self._ext(st["m"]), self._ext(st["v"])
            s = f"S[{grp.k}:{grp.k + 9}]"
            if K.C_ADAM and st["m"].dtype == np.float32:  # the eager kernel, on the pool
                return [f"c_adam({o[0]}, {i[0]}, {m}, {v}, {s}, e{self._threads()}[0])"]
            return [f"adam({o[0]}, {i[0]}, {m}, {v}, {s})"]
        if p.name == "sgd":
            opt, mu = a["opt"], float(a["momentum"])
            k = self._group(("sgd", id(opt)), 1, lambda k: _SgdScalars(opt, k)).k
            buf = self._ext(opt._buffer(a["param"], "momentum")) if mu else self._dummy()
            return [f"sgd({o[0]}, {i[0]}, {buf}, {bool(mu)}, F32(S[{k}]), F32({mu!r}), "
                    f"{bool(a['nesterov'])}, F32({float(a['weight_decay'])!r}))"]  # fmt: skip
        raise UnsupportedOpError(f"no numba code for primitive {p.name!r}")

    # -- one step ------------------------------------------------------------------------------
    def __call__(self, args):
        ext = self.ext
        if hasattr(self, "_threads_ext"):
            ext[self._threads_ext][0] = get_num_threads()
        for j, k in self.inputs:
            a = args[k]
            a = a if isinstance(a, np.ndarray) else a.data
            ext[j] = a.reshape(1) if a.ndim == 0 else a
        for j, p in self.params:
            d = p.data
            if d is not ext[j] and d.base is not ext[j]:
                if d.shape != ext[j].shape or d.dtype != np.float32 or not d.flags.c_contiguous:
                    raise UnsupportedOpError(
                        f"a parameter's array was replaced by one of shape {d.shape}, "
                        f"{d.dtype} (captured {ext[j].shape}, float32): compile again"
                    )
                ext[j] = d.reshape(1) if d.ndim == 0 else d
        S = self.S
        for fn in self.pre:
            fn(S)
        if self.hold_blas:  # BLAS on one thread for the call, as for each product eagerly
            with blas_held():
                r = self.fn(self.arena, S, *ext)
        else:
            r = self.fn(self.arena, S, *ext)
        if r >= 0:
            for fn in self.pre:
                fn.undo()
            raise ValueError(f"cross_entropy: the label of row {r} is out of range")
        for p, g in self.grads:
            p.grad = g
        return _results(self.results)


def _blas_held_eagerly(tape, p) -> bool:
    """Whether the eager step ran this BLAS product (``mm``) with BLAS held to one thread
    (``ReferenceBackend.gemm``'s ``blas_single(flops, thin)``). The replay is one call, so it
    holds BLAS for the whole call when any of its products was held: a thin product above
    PARALLEL_MIN_FLOPS (X (256, 784) @ W (784, 16)) ran on every OpenBLAS thread at 1 thread
    when the rule looked at the largest product's flops alone."""
    (m, n), a = tape.slots[p.outs[0]].shape, tape.slots[p.ins[0]].shape
    k = a[0] if p.attrs["ta"] else a[1]
    return blas_single(2 * m * n * k, thin=min(m, n, k) < 32).on


_JITTED: dict = {}  # source -> dispatcher: tapes of one structure share one compilation


def _jitted(source: str):
    """The replay function for ``source`` (ours, built above), compiled once per process."""
    fn = _JITTED.get(source)
    if fn is None:
        ns = {n: getattr(K, n) for n in dir(K) if not n.startswith("__")}
        exec(compile(source, "<lepton_nn.compile replay>", "exec"), ns)  # our source only
        fn = _JITTED[source] = njit(**K.JIT)(ns["replay"])
    return fn


def _result_views(structure, rep):
    if structure is None:
        return None
    if isinstance(structure, tuple):
        return tuple(_result_views(s, rep) for s in structure)
    return rep._view(structure)


def _results(views):
    """New Tensors holding copies of the result buffers."""
    if views is None:
        return None
    if isinstance(views, tuple):
        return tuple(_results(v) for v in views)
    return Tensor._wrap(views.copy(), False, None)


class _Tick:
    def __init__(self, opt):
        self.opt = opt

    def __call__(self, S):
        self.opt.steps += 1

    def undo(self):
        self.opt.steps -= 1


class _SgdScalars:
    def __init__(self, opt, k):
        self.opt, self.k = opt, k

    def __call__(self, S):
        S[self.k] = self.opt.lr

    def undo(self):
        pass


class _AdamScalars:
    """The scalars adam_step folds in double (kernels/dense.pyx) for step t (each parameter's
    st['t'] advanced by one), written once for all of an optimizer's parameters."""

    def __init__(self, a, k):
        self.opt, self.k, self.states = a["opt"], k, []
        (self.b1, self.b2), self.eps = a["betas"], a["eps"]
        self.wd, self.dec = a["weight_decay"], a["decoupled"]

    def __call__(self, S):
        for st in self.states:
            st["t"] += 1
        t, lr, b1, b2, wd, k = self.states[0]["t"], self.opt.lr, self.b1, self.b2, self.wd, self.k
        S[k] = lr / (1.0 - b1**t)
        S[k + 1], S[k + 2], S[k + 3], S[k + 4] = b1, b2, 1.0 - b1, 1.0 - b2
        S[k + 5] = 1.0 / math.sqrt(1.0 - b2**t)
        S[k + 6] = self.eps
        S[k + 7] = 0.0 if self.dec else wd
        S[k + 8] = 1.0 - lr * wd if self.dec else 1.0

    def undo(self):
        for st in self.states:
            st["t"] -= 1
