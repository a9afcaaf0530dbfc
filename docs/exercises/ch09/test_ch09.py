"""Chapter 9: your ops judged by ``lepton_nn.autograd.gradcheck`` (float64 central
differences) and compared, value and gradient, with the same functions composed of lepton_nn's
own ops."""

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn.autograd import gradcheck


def tensor(a, grad=True):
    return ln.Tensor(np.asarray(a, np.float64), requires_grad=grad)


def same_as(fn_ours, fn_lib, *arrays, seed=0):
    """fn_ours and fn_lib agree on the value and on every input's gradient."""
    ours, lib = [tensor(a) for a in arrays], [tensor(a) for a in arrays]
    y, y_lib = fn_ours(*ours), fn_lib(*lib)
    assert y.shape == y_lib.shape and np.allclose(y.data, y_lib.data)
    g = np.random.default_rng(seed).normal(size=y.shape)
    y.backward(g)
    y_lib.backward(g)
    for i, (a, b) in enumerate(zip(ours, lib)):
        assert a.grad.shape == b.grad.shape and np.allclose(a.grad, b.grad), i


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_swish(ex, beta):
    x = np.random.default_rng(1).normal(size=(4, 3)) * 3
    assert gradcheck(lambda t: ex.Swish.apply(t, beta=beta), tensor(x))
    same_as(lambda t: ex.Swish.apply(t, beta=beta), lambda t: t * (t * beta).sigmoid(), x)


def test_swish_default_beta_and_far_inputs(ex):
    x = np.array([-800.0, -1.0, 0.0, 1.0, 800.0])
    with np.errstate(over="raise"):
        y = ex.Swish.apply(tensor(x))
        y.sum().backward()
    assert np.allclose(y.data, [0.0, -1 / (1 + np.e), 0.0, 1 / (1 + np.exp(-1)), 800.0])


@pytest.mark.parametrize(
    ("axis", "keepdims"), [(None, False), (None, True), (1, False), (-1, True), ((0, 2), False)]
)
def test_logsumexp(ex, axis, keepdims):
    x = np.random.default_rng(2).normal(size=(2, 3, 4))

    def composed(t):
        return t.exp().sum(axis=axis, keepdims=keepdims).log()

    assert gradcheck(lambda t: ex.LogSumExp.apply(t, axis=axis, keepdims=keepdims), tensor(x))
    same_as(lambda t: ex.LogSumExp.apply(t, axis=axis, keepdims=keepdims), composed, x)


def test_logsumexp_is_stable(ex):
    x = np.random.default_rng(3).normal(size=(3, 5))
    with np.errstate(over="raise", invalid="raise"):
        far = ex.LogSumExp.apply(tensor(x + 1e4), axis=1)
        far.sum().backward()
    near = ex.LogSumExp.apply(tensor(x), axis=1)
    assert np.allclose(far.data - 1e4, near.data)


@pytest.mark.parametrize(("sa", "sb"), [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1))])
def test_hypot_broadcasts(ex, sa, sb):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=sa) + 2, rng.normal(size=sb) - 2  # away from (0, 0), its kink
    assert gradcheck(ex.Hypot.apply, tensor(a), tensor(b))
    same_as(ex.Hypot.apply, lambda s, t: (s * s + t * t).sqrt(), a, b)


def test_hypot_with_a_constant_input(ex):
    a = tensor([[3.0, 6.0]])
    y = ex.Hypot.apply(a, tensor([4.0, 8.0], grad=False))
    y.sum().backward()
    assert np.allclose(y.data, [[5.0, 10.0]]) and np.allclose(a.grad, [[0.6, 0.6]])
