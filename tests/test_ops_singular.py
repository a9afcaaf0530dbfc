"""Backward rules at the points where a local derivative is infinite or 0 * inf appears.

``x ** 0`` at x = 0 once had a NaN gradient (0 * 0^-1). The same pattern (a product with a
factor infinite where the other is zero) was looked for in every backward rule of ``ops/``;
each case found is pinned here by a float64 gradcheck or an exact value.
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import Tensor
from lepton_nn.backend import available
from lepton_nn.ops import where

# the forward passes here overflow or divide by zero on purpose (in the masked-out branch)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def t64(values):
    return Tensor(np.asarray(values, np.float64), requires_grad=True)


def grad_of(fn, *xs):
    for x in xs:
        x.grad = None
    fn(*xs).sum().backward()
    return [x.grad for x in xs]


def test_pow_zero_exponent_at_zero_is_zero():
    x = t64([0.0, 0.0, 1.5, -2.0])
    (g,) = grad_of(lambda a: a**0, x)
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0, 0.0])
    assert ln.gradcheck(lambda a: a**0, t64([0.0, 1.0, -3.0]))


@pytest.mark.parametrize("p,expected", [(1, 1.0), (2, 0.0), (3, 0.0)])
def test_pow_integer_exponents_at_zero(p, expected):
    (g,) = grad_of(lambda a: a**p, t64([0.0]))
    assert g[0] == expected
    assert ln.gradcheck(lambda a: a**p, t64([0.0, 0.7, -1.3]))


def test_pow_tensor_exponent_zero_at_zero_base():
    a, b = t64([0.0, 0.0, 2.0]), t64([0.0, 2.0, 0.0])
    ga, gb = grad_of(lambda u, v: u**v, a, b)
    np.testing.assert_array_equal(ga, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(gb, [0.0, 0.0, np.log(2.0)])


def test_pow_negative_exponent_behind_a_mask():
    # where(x > 0, x ** -1, 0): at x = 0 the unused branch is inf with derivative -inf
    x = t64([0.0, 2.0])
    (g,) = grad_of(lambda a: where(a.data > 0, a**-1, 0.0), x)
    np.testing.assert_array_equal(g, [0.0, -0.25])


def test_pow_exponent_gradient_at_zero_base_negative_exponent_is_not_nan():
    # d(0 ** b)/db with b < 0: 0 ** b is inf and log(0) is taken as 0 (a <= 0 convention)
    a, b = Tensor(np.zeros(1)), t64([-1.0])
    (gb,) = grad_of(lambda v: where(np.array([False]), a**v, 0.0), b)
    assert gb[0] == 0.0


def test_sqrt_behind_a_mask_at_zero():
    x = t64([0.0, 1.0, 4.0])
    (g,) = grad_of(lambda a: where(a.data > 0, a.sqrt(), 0.0), x)
    np.testing.assert_array_equal(g, [0.0, 0.5, 0.25])


def test_log_behind_a_mask_at_zero():
    x = t64([0.0, 2.0])
    (g,) = grad_of(lambda a: where(a.data > 0, a.log(), 0.0), x)
    np.testing.assert_array_equal(g, [0.0, 0.5])


def test_exp_overflow_behind_a_mask():
    x = t64([1000.0, 0.0])
    (g,) = grad_of(lambda a: where(a.data < 100, a.exp(), 0.0), x)
    np.testing.assert_array_equal(g, [0.0, 1.0])


def test_div_denominator_gradient_does_not_underflow():
    # -a / b^2 with b^2 underflowing to 0: 0 / 0 (NaN) and x / 0 (inf) before
    a, b = t64([0.0, 1e-300]), t64([1e-200, 1e-200])
    ga, gb = grad_of(lambda u, v: u / v, a, b)
    np.testing.assert_allclose(ga, [1e200, 1e200])
    assert gb[0] == 0.0
    np.testing.assert_allclose(gb[1], -1e100, rtol=1e-12)
    assert ln.gradcheck(lambda u, v: u / v, t64([0.0, 1.0]), t64([1e-3, -2.0]))


def test_div_by_zero_behind_a_mask():
    a, b = t64([1.0, 3.0]), t64([0.0, 2.0])
    ga, gb = grad_of(lambda u, v: where(v.data != 0, u / v, 0.0), a, b)
    np.testing.assert_array_equal(ga, [0.0, 0.5])
    np.testing.assert_array_equal(gb, [0.0, -0.75])


@pytest.mark.parametrize("x,expected", [(1e200, 1.0), (-1e200, 0.0), (1e30, 1.0)])
def test_gelu_gradient_at_huge_inputs(x, expected):
    (g,) = grad_of(lambda a: a.gelu(), t64([x]))
    assert g[0] == expected


def test_gradients_unchanged_at_ordinary_points():
    rng = np.random.default_rng(3)
    pos = rng.uniform(0.5, 2.0, (3, 4))
    assert ln.gradcheck(lambda a, b: a**b, t64(pos), t64(rng.standard_normal((3, 4))))
    assert ln.gradcheck(lambda a: a.sqrt() + a.log() + a.exp(), t64(pos))
    assert ln.gradcheck(lambda a: a.gelu(), t64(rng.standard_normal(6) * 3))


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("dtype,huge", [(np.float32, 1e20), (np.float64, 1e200)])
def test_fused_dense_gelu_gradient_at_huge_inputs(name, dtype, huge):
    """The Dense epilogue's gelu' (reference, Numba and C kernels): 1 and 0 far out, not NaN."""
    from lepton_nn.backend import use_backend
    from lepton_nn.backend.reference import GELU

    z = np.array([[huge, -huge, 0.0, 1.0]], dtype)
    gy = np.ones_like(z)
    with use_backend(name) as be:
        gz, _ = be.bias_act_backward(gy, z, z, None, GELU, np.empty_like(z), None)
    assert gz[0, 0] == 1.0 and gz[0, 1] == 0.0 and gz[0, 2] == 0.5
    (g1,) = grad_of(lambda a: a.gelu(), t64([1.0]))
    np.testing.assert_allclose(gz[0, 3], g1[0], rtol=1e-6)


def test_soft_target_cross_entropy_with_a_masked_logit():
    """A class masked with a -inf logit and target 0 adds 0 (not 0 * -inf) to the loss."""
    z = t64([[0.0, -np.inf, 1.0], [2.0, 0.0, -np.inf]])
    target = np.array([[0.25, 0.0, 0.75], [1.0, 0.0, 0.0]])
    loss = ln.losses.cross_entropy(z, target)
    finite = ln.losses.cross_entropy(t64([[0.0, -1e300, 1.0], [2.0, 0.0, -1e300]]), target)
    assert np.isfinite(loss.data) and loss.data == pytest.approx(float(finite.data), rel=1e-12)
    loss.backward()
    assert np.isfinite(z.grad).all() and z.grad[0, 1] == 0.0 and z.grad[1, 2] == 0.0
