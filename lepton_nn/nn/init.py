"""Weight initializers, chosen by name.

Each is ``init(shape, fan_in, fan_out, rng, dtype) -> ndarray``:

- ``glorot_uniform``: U(-a, a), a = sqrt(6 / (fan_in + fan_out))   (Keras' default for Dense)
- ``glorot_normal``:  N(0, 2 / (fan_in + fan_out)) truncated at 2 std
- ``he_uniform``:     U(-a, a), a = sqrt(6 / fan_in)
- ``he_normal``:      N(0, 2 / fan_in) truncated at 2 std
- ``lecun_uniform``:  U(-a, a), a = sqrt(3 / fan_in)
- ``orthogonal``:     a (semi-)orthogonal matrix (recurrent kernels)
- ``zeros``, ``ones``
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

from ..errors import ModelFormatError

_budget: list[int] = []  # remaining elements while loading a file (see parameter_budget)


@contextlib.contextmanager
def parameter_budget(n_elements: int) -> Iterator[None]:
    """Refuse to initialize more than ``n_elements`` weights inside the block.

    Loading a model file builds its architecture before copying the stored arrays in; this
    cap (the number of stored elements) stops a hostile architecture from allocating more
    memory than the file itself carries.
    """
    _budget.append(int(n_elements))
    try:
        yield
    finally:
        _budget.pop()


def _checked(fn: Callable) -> Callable:
    def init(shape, fan_in, fan_out, rng, dtype):
        if _budget:
            n = int(np.prod(shape, dtype=np.float64))
            if n > _budget[-1]:
                raise ModelFormatError(
                    f"the architecture asks for a weight of shape {tuple(shape)}, more than the "
                    "file stores"
                )
            _budget[-1] -= n
        return fn(shape, fan_in, fan_out, rng, dtype)

    init.__name__ = fn.__name__
    init.__doc__ = fn.__doc__
    return init


def _truncated_normal(rng, std, shape):
    # redraw values beyond 2 std (as Keras does), then rescale so the std is as asked
    x = rng.standard_normal(shape)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2
    return x * (std / 0.87962566103423978)


def glorot_uniform(shape, fan_in, fan_out, rng, dtype):
    a = np.sqrt(6.0 / max(fan_in + fan_out, 1))
    return rng.uniform(-a, a, shape).astype(dtype)


def glorot_normal(shape, fan_in, fan_out, rng, dtype):
    return _truncated_normal(rng, np.sqrt(2.0 / max(fan_in + fan_out, 1)), shape).astype(dtype)


def he_uniform(shape, fan_in, fan_out, rng, dtype):
    a = np.sqrt(6.0 / max(fan_in, 1))
    return rng.uniform(-a, a, shape).astype(dtype)


def he_normal(shape, fan_in, fan_out, rng, dtype):
    return _truncated_normal(rng, np.sqrt(2.0 / max(fan_in, 1)), shape).astype(dtype)


def lecun_uniform(shape, fan_in, fan_out, rng, dtype):
    a = np.sqrt(3.0 / max(fan_in, 1))
    return rng.uniform(-a, a, shape).astype(dtype)


def orthogonal(shape, fan_in, fan_out, rng, dtype):
    rows, cols = shape[0], int(np.prod(shape[1:]))
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    q = q if rows >= cols else q.T
    return q[:rows, :cols].reshape(shape).astype(dtype)


def zeros(shape, fan_in, fan_out, rng, dtype):
    return np.zeros(shape, dtype)


def ones(shape, fan_in, fan_out, rng, dtype):
    return np.ones(shape, dtype)


INITIALIZERS: dict[str, Callable] = {
    f.__name__: f
    for f in (
        glorot_uniform,
        glorot_normal,
        he_uniform,
        he_normal,
        lecun_uniform,
        orthogonal,
        zeros,
        ones,
    )
}
INITIALIZERS["xavier_uniform"] = glorot_uniform
INITIALIZERS["xavier_normal"] = glorot_normal
INITIALIZERS["kaiming_uniform"] = he_uniform
INITIALIZERS["kaiming_normal"] = he_normal


def get_initializer(name: str | Callable) -> Callable:
    """An initializer by name (or a callable with the same signature, returned as is)."""
    if callable(name):
        return _checked(name)
    try:
        return _checked(INITIALIZERS[name])
    except KeyError:
        raise ValueError(
            f"unknown initializer {name!r}; choose one of {', '.join(sorted(INITIALIZERS))}"
        ) from None
