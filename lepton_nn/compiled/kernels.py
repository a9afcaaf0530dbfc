"""Numba kernels the generated replay calls (float32), each computing what its NumPy twin in
:mod:`lepton_nn.compiled.prims` computes, in the same order of operations.

GEMMs call the BLAS functions of the OpenBLAS NumPy itself loads, choosing between
``sgemm``, ``sgemv``, ``sdot`` and a plain loop exactly as ``np.matmul`` does for 2-D
operands (so the sums come out bit for bit the same). Reductions follow NumPy's orders:
axis 0 row by row from the first row, a whole contiguous run by NumPy's pairwise sum (8
accumulators per block of up to 128, halves above). No ``fastmath``: no reassociation and no
fused multiply-add. exp, tanh and log come from the eager step's own loops (NumPy's ufunc
loops, the Cython kernels' C loops: the section at the bottom), with libm twins where those
are not found (which may differ from them in the last bit). Imported only by the Numba
replay (it imports Numba and looks the BLAS up); not cached on disk: the BLAS addresses
belong to this process.
"""

from __future__ import annotations

import ctypes
import math
import sys

import numpy as np
from numba import njit

from ..errors import UnsupportedOpError

IDENTITY, RELU, SIGMOID, TANH, GELU = range(5)
GELU_C, GELU_A = np.float32(0.7978845608028654), np.float32(0.044715)
LOGE2 = np.float32(0.693147180559945309417232121458176568)
ROW_MAJOR, COL_MAJOR, NO_TRANS, TRANS = 101, 102, 111, 112
F32, ZERO, ONE = np.float32, np.float32(0.0), np.float32(1.0)
NO_ARRAY = np.zeros(0, np.float32)  # stands for an absent bias / gradient (flag False)
JIT = {"error_model": "numpy", "fastmath": False}  # x / 0 is inf, as in NumPy


def _blas():
    """ctypes functions (sgemm, sgemv, sdot) of the OpenBLAS mapped into this process, NumPy's
    first (the same search as ``backend.threads``)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln}
    except OSError:
        paths = set()
    for path in sorted(paths, key=lambda p: ("numpy" not in p, p)):
        lib = ctypes.CDLL(path)
        for pre, suf in (("", ""), ("scipy_", "64_"), ("", "64_"), ("scipy_", "")):
            names = [f"{pre}cblas_s{n}{suf}" for n in ("gemm", "gemv", "dot")]
            found = [getattr(lib, n, None) for n in names]
            if all(f is not None for f in found):
                i, c_int, f, p = (ctypes.c_int64 if "64" in suf else ctypes.c_int), ctypes.c_int, \
                    ctypes.c_float, ctypes.c_void_p  # fmt: skip
                addr = [ctypes.cast(fn, ctypes.c_void_p).value for fn in found]
                gemm = ctypes.CFUNCTYPE(None, c_int, c_int, c_int, i, i, i, f, p, i, p, i, f, p, i)
                gemv = ctypes.CFUNCTYPE(None, c_int, c_int, i, i, f, p, i, p, i, f, p, i)
                dot = ctypes.CFUNCTYPE(f, i, p, i, p, i)
                return gemm(addr[0]), gemv(addr[1]), dot(addr[2])
    raise UnsupportedOpError(
        "the numba replay calls NumPy's OpenBLAS and did not find it here: use backend='numpy'"
    )


sgemm, sgemv, sdot = _blas()


def _own_gemm():
    """ctypes function of the backend's gemm kernel (kernels/gemm.pyx), None without it."""
    try:
        from ..kernels import _gemm
    except ImportError:
        return None
    i, p = ctypes.c_ssize_t, ctypes.c_void_p
    c_int = ctypes.c_int
    return ctypes.CFUNCTYPE(c_int, p, c_int, p, c_int, p, i, i, i, c_int)(_gemm.address())


own_gemm = _own_gemm()


@njit(**JIT)
def own_mm(a, b, o, ta, tb, threads):
    """o = A @ B (as mm) on the backend's gemm kernel, which the eager Linear ran for this
    product (``gemm_own``): the same sums whatever ``threads``."""
    m, n = o.shape
    k = a.shape[0] if ta else a.shape[1]
    if own_gemm(a.ctypes, ta, b.ctypes, tb, o.ctypes, m, n, k, threads) != 0:
        raise MemoryError("gemm: no memory for the packing scratch")


@njit(**JIT)
def mm(a, b, o, ta, tb):
    """o = A @ B, A = a.T if ta else a, B = b.T if tb else b (a, b, o C-contiguous), with
    the BLAS call (or loop) np.matmul picks for these shapes."""
    m, n = o.shape
    k = a.shape[0] if ta else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 1 or k == 0:  # NumPy's own loop: o = 0, then o += a b in order of k
        A, B = (a.T if ta else a), (b.T if tb else b)
        for i in range(m):
            for j in range(n):
                acc = ZERO
                for q in range(k):
                    acc += A[i, q] * B[q, j]
                o[i, j] = acc
    elif m == 1 and n == 1:
        o[0, 0] = ZERO + sdot(k, a.ctypes, 1, b.ctypes, 1)
    elif m == 1:  # vector @ matrix: gemv on B
        order = COL_MAJOR if tb else ROW_MAJOR
        sgemv(order, TRANS, k, n, ONE, b.ctypes, b.shape[1], a.ctypes, 1, ZERO, o.ctypes, 1)
    elif n == 1:  # matrix @ vector: gemv on A
        order = ROW_MAJOR if ta else COL_MAJOR
        sgemv(order, TRANS, k, m, ONE, a.ctypes, a.shape[1], b.ctypes, 1, ZERO, o.ctypes, 1)
    else:
        sgemm(ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS, m, n, k, ONE,
              a.ctypes, a.shape[1], b.ctypes, b.shape[1], ZERO, o.ctypes, n)  # fmt: skip


@njit(**JIT)
def tanh32(s):
    return F32(math.tanh(s))


@njit(**JIT)
def sigmoid32(s):  # the reference's stable form: e = exp(-|s|)
    e = F32(math.exp(-abs(s)))
    return ONE / (ONE + e) if s >= 0 else e / (ONE + e)


@njit(**JIT)
def act_fwd(s, act):
    if act == RELU:
        return ZERO if s < 0 else s
    if act == SIGMOID:
        return sigmoid32(s)
    if act == TANH:
        return tanh32(s)
    if act == GELU:
        return F32(0.5) * s * (ONE + tanh32(GELU_C * (s + GELU_A * s * s * s)))
    return s


@njit(**JIT)
def gelu_grad(s):
    t = tanh32(GELU_C * (s + GELU_A * s * s * s))
    sech2 = ONE - t * t
    second = F32(0.5) * s * sech2 * GELU_C * (ONE + F32(3) * GELU_A * s * s)
    return F32(0.5) * (ONE + t) + (ZERO if sech2 == 0 else second)


@njit(**JIT)
def bias_act(z, b, has_b, act, o):
    """o = f(z + b) by rows (o may be z)."""
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            s = z[i, j] + b[j] if has_b else z[i, j]
            o[i, j] = act_fwd(s, act)


@njit(**JIT)
def bias_act_back(g, y, z, b, has_b, act, gz, gb, has_gb):
    """gz = g f'(.) from y (or z + b for gelu); gb = 0, then += each row of gz in order.
    One simple loop per row and activation, so that LLVM vectorizes it."""
    if has_gb:
        gb[:] = 0
    for i in range(g.shape[0]):
        gr, yr, o = g[i], y[i], gz[i]
        if act == RELU:
            for j in range(o.size):
                o[j] = gr[j] * (ONE if yr[j] > 0 else ZERO)
        elif act == SIGMOID:
            for j in range(o.size):
                o[j] = gr[j] * yr[j] * (ONE - yr[j])
        elif act == TANH:
            for j in range(o.size):
                o[j] = gr[j] * (ONE - yr[j] * yr[j])
        elif act == GELU:
            zr = z[i]
            for j in range(o.size):
                o[j] = gr[j] * gelu_grad(zr[j] + b[j] if has_b else zr[j])
        else:
            o[:] = gr
        if has_gb:
            for j in range(o.size):
                gb[j] += o[j]


@njit(**JIT)
def colsum(g, o):
    """o = g.sum(axis=0): the first row, then each next row added; one column (N, 1) is a
    contiguous run, summed pairwise (NumPy's iterator sees it as 1-D)."""
    if g.shape[1] == 1:
        o[0] = ZERO + pairwise(g.reshape(-1), 0, g.shape[0])
        return
    o[:] = g[0]
    for i in range(1, g.shape[0]):
        for j in range(g.shape[1]):
            o[j] += g[i, j]


@njit(**JIT)
def pairwise(a, lo, n):
    """NumPy's pairwise sum of a[lo:lo + n] (a 1-D float32 array)."""
    if n < 8:
        res = ZERO
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= 128:
        r = np.empty(8, np.float32)
        for j in range(8):
            r[j] = a[lo + j]
        i = 8
        while i < n - (n % 8):
            for j in range(8):
                r[j] += a[lo + i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise(a, lo, n2) + pairwise(a, lo + n2, n - n2)


@njit(**JIT)
def reduce_all(a, o, mean):
    """o[0] = a.sum() or a.mean() (a contiguous: one pairwise run)."""
    f = a.reshape(-1)
    s = ZERO + pairwise(f, 0, f.size)
    o[0] = s / F32(f.size) if mean else s


@njit(**JIT)
def reduce_rows(a, o, mean):
    """o = a.sum(axis=1) or a.mean(axis=1), a 2-D."""
    for i in range(a.shape[0]):
        s = ZERO + pairwise(a[i], 0, a.shape[1])
        o[i] = s / F32(a.shape[1]) if mean else s


@njit(**JIT)
def spread_all(g, o, n):
    """o[...] = g[0] / n (n = 0: g[0]): a broadcast scalar."""
    o.reshape(-1)[:] = g[0] / F32(n) if n else g[0]


@njit(**JIT)
def spread_rows(g, o, n):
    """o[i, :] = g[i] / n (n = 0: g[i]), o 2-D."""
    for i in range(o.shape[0]):
        o[i, :] = g[i] / F32(n) if n else g[i]


@njit(**JIT)
def div_back(g, b):
    """g / b, 0 where that is NaN and g == 0 (zero_where_no_grad)."""
    r = g / b
    return ZERO if (r != r and g == 0) else r


@njit(**JIT)
def logaddexp0(z):
    """np.logaddexp(0, z) in float32 (npy_logaddexpf(0, z))."""
    if z == 0:
        return LOGE2
    t = ZERO - z
    if t > 0:
        return ZERO + F32(math.log1p(F32(math.exp(-t))))
    if t <= 0:
        return z + F32(math.log1p(F32(math.exp(t))))
    return t


@njit(**JIT)
def bce(z, y, sp, el, out, m, mean):
    """sp = logaddexp(0, z); el = sp - y z; per-sample mean over m; sum (/ n for mean)."""
    n = z.shape[0]
    zf, yf, spf, elf = z.reshape(-1), y.reshape(-1), sp.reshape(-1), el.reshape(-1)
    for i in range(zf.size):
        spf[i] = logaddexp0(zf[i])
        elf[i] = spf[i] - yf[i] * zf[i]
    bce_total(elf, n, m, mean, out)


@njit(**JIT)
def bce_total(elf, n, m, mean, out):
    """out[0] = the mean (or sum) over the n rows of each row's mean over its m terms elf."""
    if m > 1:
        per = np.empty(n, np.float32)
        rows = elf.reshape((n, m))
        for i in range(n):
            per[i] = (ZERO + pairwise(rows[i], 0, m)) / F32(m)
    else:
        per = elf
    s = ZERO + pairwise(per, 0, n)
    out[0] = s / F32(max(n, 1)) if mean else s


@njit(**JIT)
def bce_back(z, sp, y, g, gz, m, mean):
    """gz = (exp(z - sp) - y) * ((g / n) / m)."""
    n = z.shape[0]
    scale = (g[0] / F32(max(n, 1)) if mean else g[0]) / F32(m)
    zf, spf, yf, gf = z.reshape(-1), sp.reshape(-1), y.reshape(-1), gz.reshape(-1)
    for i in range(zf.size):
        gf[i] = (F32(math.exp(zf[i] - spf[i])) - yf[i]) * scale


@njit(**JIT)
def xent(z, labels, probs, per, out, mean):
    """probs = softmax(z) by rows; per = log(sum e) + max - z[label]; reduced. Returns -1,
    or the first row whose label is out of range (nothing is computed then)."""
    n, c = z.shape
    for i in range(n):
        if labels[i] < 0 or labels[i] >= c:
            return i
    for i in range(n):
        mx = z[i, 0]
        for j in range(1, c):
            mx = max(mx, z[i, j])
        s = ZERO
        for j in range(c):
            probs[i, j] = F32(math.exp(z[i, j] - mx))
            s += probs[i, j]
        for j in range(c):
            probs[i, j] = probs[i, j] / s
        per[i] = (F32(math.log(s)) + mx) - z[i, labels[i]]
    t = ZERO + pairwise(per, 0, n)
    out[0] = t / F32(max(n, 1)) if mean else t
    return -1


@njit(**JIT)
def xent_back(probs, labels, g, gl, gz, mean):
    n = probs.shape[0]
    v = g[0] / F32(max(n, 1)) if mean else g[0]
    for i in range(n):
        gl[i] = v
        for j in range(probs.shape[1]):
            gz[i, j] = probs[i, j] * v
        gz[i, labels[i]] = (probs[i, labels[i]] - ONE) * v


@njit(**JIT)
def adam(p, g, m, v, s):
    """The fused Adam/AdamW pass of kernels/csrc/dense.h; s = (step_size, b1, b2, 1 - b1,
    1 - b2, 1 / sqrt(bc2), eps, l2, decay) in double, each rounded once to float32."""
    step, b1, b2, c1, c2 = F32(s[0]), F32(s[1]), F32(s[2]), F32(s[3]), F32(s[4])
    isb, eps, l2, decay = F32(s[5]), F32(s[6]), F32(s[7]), F32(s[8])
    pf, gf, mf, vf = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
    for i in range(pf.size):
        pi = pf[i]
        gi = gf[i] + l2 * pi
        pi = pi * decay
        mi = b1 * mf[i] + c1 * gi
        vi = b2 * vf[i] + c2 * gi * gi
        denom = F32(math.sqrt(vi)) * isb + eps
        mf[i] = mi
        vf[i] = vi
        pf[i] = pi - step * mi / denom


@njit(**JIT)
def sgd(p, g, b, has_b, lr, mu, nesterov, wd):
    """SGD.step for one parameter (b: its momentum buffer, after the first step)."""
    pf, gf, bf = p.reshape(-1), g.reshape(-1), b.reshape(-1)
    for i in range(pf.size):
        gi = gf[i] + wd * pf[i] if wd != 0 else gf[i]
        if has_b:
            bi = bf[i] * mu
            bi = bi + gi
            bf[i] = bi
            gi = gi + mu * bi if nesterov else bi
        pf[i] = pf[i] - lr * gi


# -- the eager step's own loops for exp, tanh and log ---------------------------------------
# Numba's math.exp/tanh/log are libm's; the eager step's are NumPy's vectorized ufunc loops
# (sigmoid and tanh ops, BCE) and the Cython dense kernels' polynomial code (Dense
# activations, softmax cross-entropy). They differ in the last bit, so the replay calls the
# very same loops: NumPy's float32 inner loop of each ufunc and the kernels' C functions,
# by address, with no Python in between. Pointers travel as size_t (same ABI).
_SZ = ctypes.c_size_t
_UFUNC_LOOP = ctypes.CFUNCTYPE(None, _SZ, _SZ, _SZ, _SZ)  # (char **args, dims, steps, data)


class _UFuncStruct(ctypes.Structure):  # the head of PyUFuncObject (numpy/ufuncobject.h)
    _fields_ = [("ob_refcnt", ctypes.c_ssize_t), ("ob_type", ctypes.c_void_p),
                ("nin", ctypes.c_int), ("nout", ctypes.c_int), ("nargs", ctypes.c_int),
                ("identity", ctypes.c_int), ("functions", ctypes.POINTER(ctypes.c_void_p)),
                ("data", ctypes.POINTER(ctypes.c_void_p)), ("ntypes", ctypes.c_int),
                ("reserved1", ctypes.c_int), ("name", ctypes.c_char_p),
                ("types", ctypes.POINTER(ctypes.c_char))]  # fmt: skip


def ufunc_f32_loop(ufunc):
    """(loop, data) of the inner loop NumPy runs for ``ufunc`` on float32 operands: the first
    all-float32 entry of its loop table (the one type resolution picks), or None when the
    struct does not read back as this ufunc (another NumPy layout)."""
    if sys.implementation.name != "cpython":  # id() is an address on CPython only
        return None
    s = _UFuncStruct.from_address(id(ufunc))
    if (s.nin, s.nout, s.ntypes) != (ufunc.nin, ufunc.nout, ufunc.ntypes) or s.name != (
        ufunc.__name__.encode()
    ):
        return None
    f32 = np.dtype(np.float32).num
    for i in range(s.ntypes):
        if all(ord(s.types[i * s.nargs + k]) == f32 for k in range(s.nargs)):
            fn = s.functions[i]
            return (_UFUNC_LOOP(fn), s.data[i] or 0) if fn else None
    return None


def _checked_loop(ufunc, *consts):
    """The ufunc's float32 loop if, called here through ctypes (no Numba compilation), it
    gives the ufunc's own answer bit for bit on 2^16 + 3 values of wide range; else None.
    ``consts``: leading scalar operands (passed with stride 0, as NumPy passes them)."""
    try:
        found = ufunc_f32_loop(ufunc)
        if found is None:
            return None
        fn, data = found
        x = np.random.default_rng(0).standard_normal(65539).astype(np.float32)
        x *= np.float32(12)
        got = np.empty_like(x)
        ops = [np.full(1, c, np.float32) for c in consts] + [x, got]
        args = np.array([o.ctypes.data for o in ops], np.intp)
        steps = np.array([0] * len(consts) + [4, 4], np.intp)
        fn(args.ctypes.data, np.array([x.size], np.intp).ctypes.data, steps.ctypes.data, data)
        with np.errstate(all="ignore"):
            want = ufunc(*consts, x)
        return found if np.array_equal(got, want, equal_nan=True) else None
    except Exception:  # noqa: BLE001 - any surprise: the libm twins stay in use
        return None


def _unary_loop(found):
    fn, data = found

    @njit(**JIT)
    def run(a, o):
        """o = ufunc(a) through NumPy's own loop (a, o contiguous float32, one size)."""
        v = np.empty(5, np.intp)  # args (2 pointers), dimensions (1), steps (2): one block
        v[0], v[1], v[2], v[3], v[4] = a.ctypes.data, o.ctypes.data, a.size, 4, 4
        p = v.ctypes.data
        fn(p, p + 16, p + 24, data)

    return run


def _logaddexp0_loop(found):
    fn, data = found

    @njit(**JIT)
    def run(z, o):
        """o = np.logaddexp(0, z): the 0 broadcast with stride 0, as NumPy passes it."""
        v = np.zeros(8, np.intp)  # args (3), dimensions (1), steps (3), then the 0.0 itself
        p = v.ctypes.data
        v[0], v[1], v[2], v[3], v[5], v[6] = p + 56, z.ctypes.data, o.ctypes.data, z.size, 4, 4
        fn(p, p + 24, p + 32, data)  # v[4] = 0: the stride of the scalar

    return run


_FOUND = (_checked_loop(np.exp), _checked_loop(np.tanh), _checked_loop(np.logaddexp, 0))
NUMPY_LOOPS = all(f is not None for f in _FOUND)
if NUMPY_LOOPS:  # compiled at their first use (a replay that calls them)
    np_exp, np_tanh = _unary_loop(_FOUND[0]), _unary_loop(_FOUND[1])
    np_logaddexp0 = _logaddexp0_loop(_FOUND[2])


def _dense_loops():
    """ctypes functions of the Cython dense kernels' float32 C loops (None where not built)."""
    try:
        from ..kernels import _dense

        addr = _dense.c_kernel_addresses()
    except (ImportError, AttributeError):
        return None
    n, i = ctypes.c_ssize_t, ctypes.c_int
    fwd = ctypes.CFUNCTYPE(None, _SZ, _SZ, i, _SZ, n, n, n)
    back = ctypes.CFUNCTYPE(None, _SZ, _SZ, _SZ, _SZ, i, _SZ, _SZ, n, n, n)
    xent_f = ctypes.CFUNCTYPE(None, _SZ, _SZ, _SZ, _SZ, n, n)
    return (fwd(addr["bias_act_forward_f32"]), back(addr["bias_act_backward_f32"]),
            xent_f(addr["softmax_xent_forward_f32"]))  # fmt: skip


_DENSE = _dense_loops()
C_LOOPS = _DENSE is not None
if C_LOOPS:
    _c_fwd, _c_back, _c_xent = _DENSE

    @njit(**JIT)
    def c_bias_act(z, b, has_b, act, o):
        """bias_act through the Cython kernel's C loop (z, o (N, M); b (M,))."""
        bp = b.ctypes.data if has_b else 0
        _c_fwd(z.ctypes.data, bp, act, o.ctypes.data, z.shape[0], z.shape[1], 1)

    @njit(**JIT)
    def c_bias_act_back(g, y, z, b, has_b, act, gz, gb, has_gb):
        """bias_act_back through the Cython kernel's C loop."""
        bp = b.ctypes.data if has_b else 0
        gbp = gb.ctypes.data if has_gb else 0
        _c_back(g.ctypes.data, y.ctypes.data, z.ctypes.data, bp, act, gz.ctypes.data, gbp,
                g.shape[0], g.shape[1], 1)  # fmt: skip

    @njit(**JIT)
    def c_xent(z, labels, probs, per, out, mean):
        """xent through the Cython kernel's C loop; -1, or the first bad label's row."""
        n, c = z.shape
        for i in range(n):
            if labels[i] < 0 or labels[i] >= c:
                return i
        _c_xent(z.ctypes.data, labels.ctypes.data, probs.ctypes.data, per.ctypes.data, n, c)
        t = ZERO + pairwise(per, 0, n)
        out[0] = t / F32(max(n, 1)) if mean else t
        return -1


def _own_adam():
    """ctypes function of the Cython Adam kernel's float32 C entry (``_dense.adam_address``:
    adam_step's tasks on the shared pool), None where not built."""
    try:
        from ..kernels import _dense

        addr = _dense.adam_address()
    except (ImportError, AttributeError):
        return None
    i = ctypes.c_int
    return ctypes.CFUNCTYPE(i, _SZ, _SZ, _SZ, _SZ, ctypes.c_ssize_t, _SZ, i)(addr)


_ADAM = _own_adam()
C_ADAM = _ADAM is not None
if C_ADAM:

    @njit(**JIT)
    def c_adam(p, g, m, v, s, threads):
        """:func:`adam` through the eager step's own kernel (p, g, m, v float32, C order;
        s the 9 scalars in double): its tasks split over ``threads`` of the shared pool, as
        the eager Adam.step splits them, with the same bits at any thread count."""
        _ADAM(p.ctypes.data, g.ctypes.data, m.ctypes.data, v.ctypes.data, p.size,
              s.ctypes.data, threads)  # fmt: skip


if NUMPY_LOOPS:

    @njit(**JIT)
    def np_sigmoid(a, o):
        """e = np.exp(-np.abs(a)); o = where(a >= 0, 1 / (1 + e), e / (1 + e)) (o is not a)."""
        af, of = a.reshape(-1), o.reshape(-1)
        for i in range(af.size):
            of[i] = -abs(af[i])
        np_exp(of, of)
        for i in range(af.size):
            e = of[i]
            of[i] = ONE / (ONE + e) if af[i] >= 0 else e / (ONE + e)

    @njit(**JIT)
    def np_tanh_nd(a, o):
        np_tanh(a.reshape(-1), o.reshape(-1))

    @njit(**JIT)
    def np_bce(z, y, sp, el, out, m, mean):
        """bce with NumPy's logaddexp loop for sp; the rest as :func:`bce`."""
        n = z.shape[0]
        zf, yf, spf, elf = z.reshape(-1), y.reshape(-1), sp.reshape(-1), el.reshape(-1)
        np_logaddexp0(zf, spf)  # sp = np.logaddexp(0, z)
        for i in range(zf.size):
            elf[i] = spf[i] - yf[i] * zf[i]
        bce_total(elf, n, m, mean, out)

    @njit(**JIT)
    def np_bce_back(z, sp, y, g, gz, m, mean):
        """gz = np.exp(z - sp) with NumPy's exp loop; gz = (gz - y) * ((g / n) / m)."""
        n = z.shape[0]
        scale = (g[0] / F32(max(n, 1)) if mean else g[0]) / F32(m)
        zf, spf, yf, gf = z.reshape(-1), sp.reshape(-1), y.reshape(-1), gz.reshape(-1)
        for i in range(zf.size):
            gf[i] = zf[i] - spf[i]
        np_exp(gf, gf)
        for i in range(zf.size):
            gf[i] = (gf[i] - yf[i]) * scale
