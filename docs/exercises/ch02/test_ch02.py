"""Chapter 2: your backward rules against lepton_nn's (``ops/_util.unbroadcast`` and the
reductions of ``ops/reduce.py``) over many shapes and axes, and against central differences."""

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn.ops._util import unbroadcast as lib_unbroadcast

CASES = [  # (input shape, axis, keepdims)
    ((4, 3), None, False),
    ((4, 3), 0, False),
    ((4, 3), 1, True),
    ((2, 3, 4), -1, False),
    ((2, 3, 4), (0, 2), False),
    ((2, 3, 4), (0, 2), True),
    ((5,), 0, True),
]


def test_unbroadcast_matches_lepton_nn(ex):
    g = np.random.default_rng(0).normal(size=(2, 4, 3))
    for shape in [(3,), (4, 1), (1, 3), (4, 3), (1, 1), (2, 1, 3), (2, 4, 3), (1, 4, 1), ()]:
        ours = np.asarray(ex.unbroadcast(g, shape))
        assert ours.shape == shape, shape
        assert np.allclose(ours, np.reshape(lib_unbroadcast(g, shape), shape)), shape


def test_unbroadcast_is_the_backward_of_add(ex):
    rng = np.random.default_rng(1)
    x = ln.Tensor(rng.normal(size=(3, 1, 4)), requires_grad=True)
    b = ln.Tensor(rng.normal(size=(5, 1)), requires_grad=True)
    g = rng.normal(size=(3, 5, 4))
    (x * b).backward(g)
    assert np.allclose(ex.unbroadcast(g * b.data, x.shape), x.grad)
    assert np.allclose(ex.unbroadcast(g * x.data, b.shape), b.grad)


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
def test_reductions_match_lepton_nn(ex, op):
    rng = np.random.default_rng(2)
    for shape, axis, keepdims in CASES:
        x = rng.normal(size=shape)
        t = ln.Tensor(x, requires_grad=True)
        out = getattr(t, op)(axis=axis, keepdims=keepdims)
        g = rng.normal(size=out.shape)
        out.backward(g)
        if op == "max":
            ours = ex.max_backward(g, x, axis, keepdims)
        else:
            ours = getattr(ex, f"{op}_backward")(g, shape, axis, keepdims)
        assert np.shape(ours) == shape, (op, shape, axis)
        assert np.allclose(ours, t.grad), (op, shape, axis, keepdims)


def test_mean_backward_matches_numeric(ex):
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(3, 4)), rng.normal(size=4)
    analytic = ex.mean_backward(w, x.shape, axis=0)
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += 1e-6
        down[i] -= 1e-6
        numeric[i] = ((up.mean(axis=0) - down.mean(axis=0)) @ w) / 2e-6
    assert np.allclose(analytic, numeric, atol=1e-8)


def test_max_ties_share_the_gradient(ex):
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    assert np.allclose(ex.max_backward(np.array([4.0, 1.0]), x, 1), [[0, 2, 2], [1, 0, 0]])
    assert np.allclose(ex.max_backward(np.float64(1.0), x), [[0, 0.5, 0.5], [0, 0, 0]])
