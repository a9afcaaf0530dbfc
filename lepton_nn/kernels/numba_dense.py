"""Numba twins of the dense kernels (spec: :mod:`lepton_nn.backend.reference`).

Called through :class:`lepton_nn.backend.numba_backend.NumbaBackend`, which turns the
reference signatures into these: scalars arrive already in the arrays' dtype (``np.float32``
or ``np.float64``; a Python float would make Numba do float32 math in float64), and an absent
``bias``/``gbias`` arrives as an empty array plus a ``has_*`` flag, so each kernel compiles once
per dtype. Constants are made in the arrays' dtype (``x.dtype.type(...)`` in kernels,
``_like(x, ...)`` in scalar helpers) for the same reason; exp and tanh are polynomials that
vectorize rather than libm calls that do not. No ``parallel``: these loops are small and two
shared cores stall on thread wake-ups. Arrays are C-contiguous; (N, M) arrays are N rows of M.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

IDENTITY, RELU, SIGMOID, TANH, GELU = range(5)
GELU_C = 0.7978845608028654  # sqrt(2 / pi)
GELU_A = 0.044715
LOG2E = 1.4426950408889634

# stand-ins for a missing bias / gbias (never read when the flag is False)
NO_ARRAY = {np.float32: np.zeros(0, np.float32), np.float64: np.zeros(0, np.float64)}

# error_model="numpy": x / 0 gives inf like NumPy, and no zero check blocks vectorization
JIT = {"cache": True, "fastmath": False, "error_model": "numpy"}

# -- exp without libm ---------------------------------------------------------------------------
# Numba calls libm's expf/tanhf one element at a time; these polynomials vectorize instead.
# x <= 0 is split as x = n ln2 + r, |r| <= ln2/2 (Cody-Waite: ln2 = LN2_HI + LN2_LO, n * LN2_HI
# exact); expm1(r) is a Taylor polynomial and 2^n is built from bits, so that
# exp(x) = s (1 + q) and expm1(x) = (s - 1) + s q with q = expm1(r), s = 2^n.
# Adding 1.5 * 2^k (k = mantissa bits) rounds to an integer, and that integer is then the
# low bits of the sum: 2^n needs no float -> int conversion.
_MAGIC32, _MAGIC64 = np.float32(1.5 * 2**23), np.float64(1.5 * 2**52)
_MAGIC32_BITS, _MAGIC64_BITS = _MAGIC32.view(np.uint32), _MAGIC64.view(np.uint64)


@njit(**JIT)
def _exp_split_f32(x):
    """(expm1(r), 2^n, x below range) for float32 x <= 0; terms to r^7/7! (~1e-8 relative)."""
    f = np.float32
    below = x < f(-87.0)  # exp(-87) ~ 1.6e-38, the smallest normal range
    xc = f(-87.0) if below else x
    t = f(xc * f(LOG2E) + _MAGIC32)
    n = t - _MAGIC32
    r = (xc - n * f(0.693359375)) - n * f(-2.12194440e-4)
    p = f(1 / 5040)
    p = p * r + f(1 / 720)
    p = p * r + f(1 / 120)
    p = p * r + f(1 / 24)
    p = p * r + f(1 / 6)
    p = p * r + f(1 / 2)
    p = p * r + f(1)
    bits = np.uint32(np.uint32(t.view(np.uint32) - _MAGIC32_BITS + np.uint32(127)) << np.uint32(23))
    return p * r, bits.view(np.float32), below


@njit(**JIT)
def _exp_split_f64(x):
    """(expm1(r), 2^n, x below range) for float64 x <= 0; terms to r^13/13! (~1e-17)."""
    f = np.float64
    below = x < -708.0  # exp(-708) ~ 3.3e-308, still normal
    xc = -708.0 if below else x
    t = f(xc * LOG2E + _MAGIC64)
    n = t - _MAGIC64
    r = (xc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
    p = 1 / 6227020800
    p = p * r + 1 / 479001600
    p = p * r + 1 / 39916800
    p = p * r + 1 / 3628800
    p = p * r + 1 / 362880
    p = p * r + 1 / 40320
    p = p * r + 1 / 5040
    p = p * r + 1 / 720
    p = p * r + 1 / 120
    p = p * r + 1 / 24
    p = p * r + 1 / 6
    p = p * r + 1 / 2
    p = p * r + 1.0
    bits = np.uint64(
        np.uint64(t.view(np.uint64) - _MAGIC64_BITS + np.uint64(1023)) << np.uint64(52)
    )
    return p * r, bits.view(np.float64), below


def _exp_split(x):
    """(expm1(r), 2^n, below) with x = n ln2 + r: the float32 or float64 version by x's type."""
    return (_exp_split_f32 if isinstance(x, np.float32) else _exp_split_f64)(x)


@overload(_exp_split)
def _exp_split_typed(x):
    impl = _exp_split_f32 if x == types.float32 else _exp_split_f64
    return lambda x: impl(x)


def _like(x, value):
    """value as a float of x's type (a bare literal would make float32 math float64)."""
    return type(x)(value)


@overload(_like)
def _like_typed(x, value):
    cast = np.float32 if x == types.float32 else np.float64
    return lambda x, value: cast(value)


@njit(**JIT)
def _exp_nonpos(x):
    """exp(x) for x <= 0 (0 far below exp's range, NaN stays NaN)."""
    q, s, below = _exp_split(x)
    return _like(x, 0) if below else s + s * q


@njit(**JIT)
def _sigmoid(x):
    """Stable sigmoid: exp only of -|x|; 1 / (1 + e) for x >= 0, e / (1 + e) below."""
    one = _like(x, 1)
    e = _exp_nonpos(-abs(x))
    return (one if x >= 0 else e) / (one + e)


@njit(**JIT)
def _tanh(x):
    """tanh(x) = -sign(x) em / (2 + em), em = expm1(-2|x|) (accurate near 0, no overflow)."""
    one = _like(x, 1)
    q, s, below = _exp_split(_like(x, -2) * abs(x))
    em = -one if below else (s - one) + s * q
    t = -em / (_like(x, 2) + em)
    return -t if x < 0 else (t if x > 0 else x)  # tanh(+-0) = +-0, NaN stays


# In place (out is z, gz is gy, glogits is probs) each kernel runs loops that read the output
# array only: LLVM's run-time overlap check would otherwise send exact aliasing to scalar code.


@njit(**JIT)
def bias_act_forward(z, bias, has_bias, act, out):
    """out = f(z + bias); z, out: (N, M), out may be z; bias: (M,). Returns out."""
    n, m = z.shape
    dt = z.dtype.type
    zero, half, one = dt(0), dt(0.5), dt(1)
    c, a = dt(GELU_C), dt(GELU_A)
    inplace = out.ctypes.data == z.ctypes.data
    for i in range(n):
        # s = z + bias, kept in out's row
        if has_bias and inplace:
            for j in range(m):
                out[i, j] += bias[j]
        elif has_bias:
            for j in range(m):
                out[i, j] = z[i, j] + bias[j]
        elif not inplace:
            for j in range(m):
                out[i, j] = z[i, j]
        if act == RELU:  # np.maximum(s, 0)
            for j in range(m):
                s = out[i, j]
                out[i, j] = zero if s < zero else s
        elif act == SIGMOID:  # stable: exp only of -|s|
            for j in range(m):
                out[i, j] = _sigmoid(out[i, j])
        elif act == TANH:  # np.tanh(s)
            for j in range(m):
                out[i, j] = _tanh(out[i, j])
        elif act == GELU:  # 0.5 * s * (1 + tanh(c * (s + a * s * s * s)))
            for j in range(m):
                s = out[i, j]
                out[i, j] = half * s * (one + _tanh(c * (s + a * s * s * s)))
    return out


@njit(**JIT)
def bias_act_backward(gy, y, z, bias, has_bias, act, gz, gbias, has_gbias):
    """gz = gy * f'(z + bias) (gz may be gy); gbias = gz.sum(axis=0) when has_gbias."""
    n, m = gy.shape
    dt = gy.dtype.type
    zero, half, one = dt(0), dt(0.5), dt(1)
    c, a, a3 = dt(GELU_C), dt(GELU_A), dt(3 * GELU_A)
    inplace = gz.ctypes.data == gy.ctypes.data
    if has_gbias:
        for j in range(m):
            gbias[j] = zero
    for i in range(n):
        if not inplace:  # gz starts as gy, then is scaled by f' in place
            for j in range(m):
                gz[i, j] = gy[i, j]
        if act == RELU:  # gz = gy * (y > 0)
            for j in range(m):
                gz[i, j] = gz[i, j] * (one if y[i, j] > zero else zero)
        elif act == SIGMOID:  # gz = gy * y * (1 - y)
            for j in range(m):
                gz[i, j] = gz[i, j] * y[i, j] * (one - y[i, j])
        elif act == TANH:  # gz = gy * (1 - y * y)
            for j in range(m):
                gz[i, j] = gz[i, j] * (one - y[i, j] * y[i, j])
        elif act == GELU:  # from s = z + bias: 0.5 (1 + t) + 0.5 s (1 - t^2) c (1 + 3 a s^2)
            for j in range(m):
                s = z[i, j] + bias[j] if has_bias else z[i, j]
                t = _tanh(c * (s + a * (s * s * s)))
                sech2 = one - t * t
                d = half * (one + t)
                if sech2 != zero:  # (else the term is 0; not 0 * inf once s * s overflows)
                    d += half * s * sech2 * c * (one + a3 * s * s)
                gz[i, j] = gz[i, j] * d
        if has_gbias:  # gbias += gz[i]  (rows in order, as NumPy sums axis 0)
            for j in range(m):
                gbias[j] += gz[i, j]


LANES = 16  # independent partial results, so that max and sum over a row can vectorize


@njit(**JIT)
def _row_max(x, acc):
    """x.max() for len(x) >= 1, in LANES running maxima (acc: scratch of LANES)."""
    c = x.shape[0]
    for k in range(LANES):
        acc[k] = x[0]
    j = 0
    while j + LANES <= c:
        for k in range(LANES):
            a, d = acc[k], x[j + k]
            acc[k] = d if a < d else a
        j += LANES
    r = acc[0]
    for k in range(1, LANES):
        r = acc[k] if r < acc[k] else r
    for t in range(j, c):  # the tail
        r = x[t] if r < x[t] else r
    return r


@njit(**JIT)
def _row_sum(x, acc):
    """x.sum() in LANES partial sums, like NumPy's pairwise sum (acc: scratch of LANES)."""
    c = x.shape[0]
    for k in range(LANES):
        acc[k] = 0
    j = 0
    while j + LANES <= c:
        for k in range(LANES):
            acc[k] += x[j + k]
        j += LANES
    for t in range(j, c):  # the tail
        acc[0] += x[t]
    w = LANES // 2
    while w >= 1:
        for k in range(w):
            acc[k] += acc[k + w]
        w //= 2
    return acc[0]


@njit(**JIT)
def softmax_xent_forward(logits, labels, probs, loss):
    """probs = softmax(logits) per row; loss[i] = log(sum e) + max - logits[i, labels[i]]."""
    n, c = logits.shape
    acc = np.empty(LANES, logits.dtype)
    for i in range(n):
        x, p = logits[i], probs[i]
        mx = _row_max(x, acc)  # m = logits.max(axis=1)
        xl = x[labels[i]]  # logits[rows, labels]
        for j in range(c):  # e = np.exp(logits - m)
            p[j] = _exp_nonpos(x[j] - mx)
        s = _row_sum(p, acc)  # s = e.sum(axis=1)
        for j in range(c):  # probs = e / s
            p[j] = p[j] / s
        loss[i] = (np.log(s) + mx) - xl
    return loss


@njit(**JIT)
def softmax_xent_backward(probs, labels, gloss, glogits):
    """glogits = (probs - onehot(labels)) * gloss[:, None]; glogits may be probs."""
    n, c = probs.shape
    one = probs.dtype.type(1)
    inplace = glogits.ctypes.data == probs.ctypes.data
    for i in range(n):
        gl = gloss[i]
        lab = labels[i]
        pl = probs[i, lab]
        if inplace:  # g = probs * gloss, g holding probs
            for j in range(c):
                glogits[i, j] = glogits[i, j] * gl
        else:
            for j in range(c):
                glogits[i, j] = probs[i, j] * gl
        glogits[i, lab] = (pl - one) * gl  # g[label] = (p - 1) * gloss
    return glogits


@njit(**JIT)
def adam_step(
    p, g, m, v, step_size, beta1, beta2, one_m_b1, one_m_b2, inv_sqrt_bc2, eps, l2, decay
):
    """One Adam/AdamW pass over flat p, g, m, v (scalars folded by the caller, in p's dtype).

    g <- g + l2 p (Adam's L2, else l2 = 0);  p <- p decay (AdamW: 1 - lr wd, else 1);
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    p <- p - step_size m / (sqrt(v) inv_sqrt_bc2 + eps),  step_size = lr / (1 - b1^t),
    inv_sqrt_bc2 = 1 / sqrt(1 - b2^t) (a multiply: divides and sqrt bound this loop).
    """
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i] + l2 * pi  # g = g + weight_decay * p
        pi = pi * decay  # p *= 1 - lr * weight_decay
        mi = beta1 * m[i] + one_m_b1 * gi  # m = b1 m + (1 - b1) g
        vi = beta2 * v[i] + one_m_b2 * gi * gi  # v = b2 v + (1 - b2) g g
        denom = np.sqrt(vi) * inv_sqrt_bc2 + eps  # np.sqrt(v) / np.sqrt(bc2) + eps
        m[i] = mi
        v[i] = vi
        p[i] = pi - step_size * mi / denom  # p -= (lr / bc1) * m / denom
