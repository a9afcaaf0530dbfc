"""Compare analytic gradients with central differences, in float64."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import GradcheckError
from .tensor import Tensor


def gradcheck(
    fn: Callable[..., Tensor],
    *inputs,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> bool:
    """Check d sum(fn(*inputs) * w) / d input for every float input, w a fixed random weight.

    Inputs are copied to float64 (tensors that do not require grad are held constant; plain
    arrays and numbers are passed through). For each input element i:
    numeric = (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) must match the analytic gradient to
    ``atol + rtol * |numeric|``. Returns True, or raises ``GradcheckError`` naming the input,
    the index and both values.
    """
    xs = [
        Tensor(np.array(x.data, dtype=np.float64), requires_grad=x.requires_grad)
        if isinstance(x, Tensor)
        else x
        for x in inputs
    ]
    out = fn(*xs)
    w = np.random.default_rng(0).uniform(0.5, 1.5, size=out.shape)

    def scalar() -> float:
        return float(np.sum(fn(*xs).data * w))

    for x in xs:
        if isinstance(x, Tensor):
            x.grad = None
    if out.requires_grad:
        out.backward(w)

    for k, x in enumerate(xs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        flat = x.data.reshape(-1)  # a view: editing it perturbs the input in place
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + eps
            f_plus = scalar()
            flat[i] = orig - eps
            f_minus = scalar()
            flat[i] = orig
            numeric = (f_plus - f_minus) / (2 * eps)
            a = analytic.reshape(-1)[i]
            if not abs(a - numeric) <= atol + rtol * abs(numeric):
                idx = np.unravel_index(i, x.shape) if x.shape else ()
                raise GradcheckError(
                    f"gradient of input {k} at index {tuple(int(j) for j in idx)}: "
                    f"analytic {a:.8g} vs numeric {numeric:.8g}"
                )
    return True
